//! The first thing a client sends inside a tunnel, read before any byte is passed on: a TLS
//! ClientHello, and the server name it asks for (SNI).
//!
//! A tunnel goes to the host the client named in `CONNECT`, but a TLS server behind a shared
//! front (a CDN, a cloud load balancer) answers for whichever name the ClientHello asks for. A
//! client could tunnel to an allowed host and ask there for `graph.microsoft.com`, going around
//! interception. So the ClientHello is parsed here, strictly, and the tunnel only goes on when it
//! names the tunnel's own host ([`super::tunnel`]). Everything this parser cannot read with
//! certainty ends the tunnel: not TLS, a ClientHello split oddly or too long, no name or several,
//! a repeated extension, or an encrypted ClientHello (ECH, whose real name is hidden).
//!
//! Records (RFC 8446 §5.1) may split the handshake message; they are reassembled, up to
//! [`MAX_HELLO`] bytes, since splitting the hello into small records is the classic way around a
//! parser that only reads the first.

/// The longest ClientHello accepted (handshake message body). Real ones are under 2 KiB, with
/// post-quantum key shares; 16 KiB is TLS's largest record.
pub(crate) const MAX_HELLO: usize = 16 * 1024;

/// How many bytes of records at most are read to find the whole ClientHello: its bytes plus a
/// header of 5 for each record it may be split into (at most 64 records).
pub(crate) const MAX_READ: usize = MAX_HELLO + 4 + 64 * 5;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const NAME_TYPE_HOST: u8 = 0;

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hello {
    /// A whole ClientHello asking for this server name (lower-cased, no trailing dot).
    Named(String),
    /// Not a whole ClientHello yet: read more (the bytes so far are a valid beginning).
    Incomplete,
    /// Not something a tunnel passes on, and why.
    Refused(&'static str),
}

/// Read the ClientHello at the start of `bytes` (everything the client sent so far).
pub(crate) fn parse(bytes: &[u8]) -> Hello {
    let message = match reassemble(bytes) {
        Ok(message) => message,
        Err(hello) => return hello,
    };
    match server_name(&message) {
        Ok(name) => Hello::Named(name),
        Err(why) => Hello::Refused(why),
    }
}

/// The handshake message carried by the leading records, once whole.
fn reassemble(bytes: &[u8]) -> Result<Vec<u8>, Hello> {
    let mut message = Vec::new();
    let mut rest = bytes;
    let mut records = 0;
    loop {
        if rest.is_empty() {
            return Err(Hello::Incomplete);
        }
        if rest[0] != RECORD_HANDSHAKE {
            return Err(Hello::Refused(if records == 0 {
                "the tunnel does not begin with a TLS handshake"
            } else {
                "the ClientHello's records are interleaved with other records"
            }));
        }
        if rest.len() < 5 {
            return Err(Hello::Incomplete);
        }
        // Record version: 0x0301 in a first ClientHello (some send 0x0300 or 0x0303).
        if rest[1] != 3 || rest[2] > 4 {
            return Err(Hello::Refused("the TLS record version is not TLS's"));
        }
        let length = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if length == 0 {
            return Err(Hello::Refused("an empty TLS handshake record"));
        }
        records += 1;
        if records > 64 {
            return Err(Hello::Refused(
                "the ClientHello is split into too many records",
            ));
        }
        if rest.len() < 5 + length {
            // Not yet whole; what has come of it must still be a valid start.
            return match check_start(&message, &rest[5..]) {
                Ok(()) => Err(Hello::Incomplete),
                Err(why) => Err(Hello::Refused(why)),
            };
        }
        message.extend_from_slice(&rest[5..5 + length]);
        rest = &rest[5 + length..];
        if message.len() >= 4 {
            if message[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(Hello::Refused(
                    "the first handshake message is not a ClientHello",
                ));
            }
            let body = usize::from(message[1]) << 16
                | usize::from(message[2]) << 8
                | usize::from(message[3]);
            if body > MAX_HELLO {
                return Err(Hello::Refused("the ClientHello is longer than 16 KiB"));
            }
            match (4 + body).cmp(&message.len()) {
                std::cmp::Ordering::Equal => return Ok(message),
                std::cmp::Ordering::Less => {
                    return Err(Hello::Refused(
                        "another handshake message shares the ClientHello's records",
                    ));
                }
                std::cmp::Ordering::Greater => {}
            }
        }
    }
}

/// Whether a partial message is a plausible start (so a client cannot keep the proxy waiting on
/// bytes that are already known to be refused).
fn check_start(message: &[u8], partial: &[u8]) -> Result<(), &'static str> {
    let first = message.first().or(partial.first());
    match first {
        Some(&HANDSHAKE_CLIENT_HELLO) | None => Ok(()),
        Some(_) => Err("the first handshake message is not a ClientHello"),
    }
}

/// A cursor over a ClientHello that fails on any length that overruns.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.bytes.len() < n {
            return Err("a length in the ClientHello overruns it");
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// The one host name a whole ClientHello (handshake header included) asks for.
fn server_name(message: &[u8]) -> Result<String, &'static str> {
    let mut r = Reader {
        bytes: &message[4..],
    };
    let version = r.u16()?;
    if version < 0x0301 {
        return Err("the ClientHello offers a protocol older than TLS 1.0");
    }
    r.take(32)?; // random
    let session = r.vec8()?;
    if session.len() > 32 {
        return Err("the ClientHello's session id is longer than 32 bytes");
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("the ClientHello's cipher suites are malformed");
    }
    if r.vec8()?.is_empty() {
        return Err("the ClientHello offers no compression method");
    }
    if r.bytes.is_empty() {
        return Err("the ClientHello has no extensions, so no server name");
    }
    let mut extensions = Reader { bytes: r.vec16()? };
    if !r.bytes.is_empty() {
        return Err("bytes follow the ClientHello's extensions");
    }
    let mut seen = Vec::new();
    let mut name = None;
    while !extensions.bytes.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if seen.contains(&kind) {
            return Err("the ClientHello repeats an extension");
        }
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => name = Some(host_name(data)?),
            EXT_ENCRYPTED_CLIENT_HELLO => {
                return Err(
                    "the ClientHello is encrypted (ECH): its server name cannot be checked",
                );
            }
            _ => {}
        }
    }
    name.ok_or("the ClientHello names no server (no SNI)")
}

/// The host name of a `server_name` extension, which must hold exactly one.
fn host_name(data: &[u8]) -> Result<String, &'static str> {
    let mut r = Reader { bytes: data };
    let mut list = Reader { bytes: r.vec16()? };
    if !r.bytes.is_empty() {
        return Err("bytes follow the server name list");
    }
    let name_type = list.u8()?;
    if name_type != NAME_TYPE_HOST {
        return Err("the server name is not a host name");
    }
    let name = list.vec16()?;
    if !list.bytes.is_empty() {
        return Err("the ClientHello names more than one server");
    }
    let name = std::str::from_utf8(name).map_err(|_| "the server name is not ASCII")?;
    let name = name.strip_suffix('.').unwrap_or(name);
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if name.is_empty() || name.len() > 253 || !name.chars().all(plain) {
        return Err("the server name is not a DNS host name");
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello body (no handshake header) with these extensions.
    pub(crate) fn hello_body(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        body
    }

    pub(crate) fn sni(names: &[&str]) -> Vec<u8> {
        let mut list = Vec::new();
        for name in names {
            list.push(0);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name.as_bytes());
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        data
    }

    /// The handshake message (header and body) split into records of at most `chunk` bytes.
    pub(crate) fn records(body: &[u8], chunk: usize) -> Vec<u8> {
        let mut message = vec![HANDSHAKE_CLIENT_HELLO];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(body);
        let mut out = Vec::new();
        for piece in message.chunks(chunk) {
            out.extend_from_slice(&[RECORD_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            out.extend_from_slice(piece);
        }
        out
    }

    fn named(name: &str) -> Hello {
        Hello::Named(name.into())
    }

    #[test]
    fn a_client_hello_gives_its_one_server_name_lower_cased() {
        let body = hello_body(&[(10, vec![0, 2, 0, 29]), (0, sni(&["Login.Example.COM."]))]);
        assert_eq!(parse(&records(&body, 16384)), named("login.example.com"));
    }

    #[test]
    fn a_hello_split_into_small_records_is_put_back_together() {
        let body = hello_body(&[(0, sni(&["graph.microsoft.com"]))]);
        for chunk in [1, 2, 3, 5, 17] {
            let bytes = records(&body, chunk.max(body.len().div_ceil(60)));
            assert_eq!(parse(&bytes), named("graph.microsoft.com"), "chunk {chunk}");
        }
        // Too many records is refused rather than read forever.
        assert!(matches!(parse(&records(&body, 1)), Hello::Refused(_)));
    }

    #[test]
    fn every_prefix_of_a_good_hello_asks_for_more() {
        let bytes = records(&hello_body(&[(0, sni(&["a.example"]))]), 20);
        for end in 0..bytes.len() {
            assert_eq!(parse(&bytes[..end]), Hello::Incomplete, "{end} bytes");
        }
        assert_eq!(parse(&bytes), named("a.example"));
    }

    #[test]
    fn what_cannot_be_read_with_certainty_is_refused() {
        let refused = |bytes: &[u8]| matches!(parse(bytes), Hello::Refused(_));
        let good = hello_body(&[(0, sni(&["a.example"]))]);
        // Not TLS at all: plain HTTP in the tunnel.
        assert!(refused(
            b"GET / HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n"
        ));
        // No SNI; two names; a repeated extension; ECH.
        assert!(refused(&records(&hello_body(&[(10, vec![0, 0])]), 16384)));
        assert!(refused(&records(
            &hello_body(&[(0, sni(&["a.example", "graph.microsoft.com"]))]),
            16384
        )));
        assert!(refused(&records(
            &hello_body(&[(0, sni(&["a.example"])), (0, sni(&["graph.microsoft.com"]))]),
            16384
        )));
        assert!(refused(&records(
            &hello_body(&[(0, sni(&["a.example"])), (0xfe0d, vec![0; 8])]),
            16384
        )));
        // Names that are not host names.
        for bad in [
            "",
            "a b",
            "a\u{0}b",
            "graph.microsoft.com/x",
            "\u{e9}.example",
        ] {
            assert!(
                refused(&records(&hello_body(&[(0, sni(&[bad]))]), 16384)),
                "{bad:?}"
            );
        }
        // A record of another type between the hello's pieces.
        let mut split = records(&good, 10);
        split.splice(15..15, [23, 3, 3, 0, 1, 0]);
        assert!(refused(&split));
        // Another handshake message after the hello in the same record.
        let mut message = vec![HANDSHAKE_CLIENT_HELLO];
        message.extend_from_slice(&(good.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&good);
        message.extend_from_slice(&[20, 0, 0, 0]);
        let mut record = vec![RECORD_HANDSHAKE, 3, 1];
        record.extend_from_slice(&(message.len() as u16).to_be_bytes());
        record.extend_from_slice(&message);
        assert!(refused(&record));
        // A length that overruns, cut at every place inside the body.
        for cut in 1..good.len() {
            let mut body = good[..cut].to_vec();
            // Claim the full length but give less: the record is whole, the hello is not.
            body.resize(good.len(), 0xff);
            let outcome = parse(&records(&body, 16384));
            assert_ne!(outcome, named("a.example"), "cut at {cut}");
        }
    }

    #[test]
    fn a_hello_longer_than_the_bound_is_refused_from_its_header() {
        let mut header = vec![RECORD_HANDSHAKE, 3, 1, 0, 4, HANDSHAKE_CLIENT_HELLO];
        header.extend_from_slice(&((MAX_HELLO + 1) as u32).to_be_bytes()[1..]);
        assert!(matches!(parse(&header), Hello::Refused(_)));
    }

    #[test]
    fn a_real_client_hello_from_rustls_names_its_server() {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("graph.microsoft.com").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        assert_eq!(parse(&bytes), named("graph.microsoft.com"));
        for end in 0..bytes.len() {
            assert_eq!(parse(&bytes[..end]), Hello::Incomplete, "{end} bytes");
        }
    }
}
