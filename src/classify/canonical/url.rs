//! The strict URL reader: the one place that decides whether a URL (a `$batch` sub-request's
//! `url`) or a request target is spelled so that every reader (Graph, a lenient web stack, a
//! WHATWG URL parser, syncgate) takes the same path and query from it.
//!
//! Why it exists: the loose reading ([`super::reach`]) answers "could this reach a governed
//! resource?" for the spellings syncgate thought of. A URL parser can be more inventive: WHATWG
//! strips TAB/CR/LF anywhere and trims leading C0 controls and spaces, reads `x:/v1.0/...` and
//! `https:v1.0/...` as absolute URLs, treats `\` as `/`, and IIS decodes `%u` escapes. Rather
//! than model every reader, this module refuses what readers disagree on:
//!
//! - **path** (as sent, and after decoding escapes once): only printable ASCII that `http::Uri`
//!   itself accepts in a path; no whitespace, control character, backslash, `?`, `#`,
//!   non-ASCII byte (≥ 0x80), and no `%` that is not followed by two hex digits;
//! - **query** (as sent): printable ASCII except `\` and `#`, with well-formed escapes; the
//!   decoded query must be UTF-8 without control characters, invisible format characters or
//!   whitespace other than U+0020. A space (raw U+0020 in a batch URL, as Graph's own batching
//!   documentation writes `$filter=city eq null`, or `%20`) is allowed in the query: OData's
//!   `$filter` and `$search` need it, and the only things syncgate reads from a query
//!   (method-override names, `$expand`, key aliases) are read with whitespace trimmed;
//! - **absolute forms**: a `:` before the first `/` is a scheme, and the only schemes are
//!   `https://` and `http://` (ASCII case-insensitive, as every parser agrees) followed by a
//!   host syncgate knows as Graph's ([`GRAPH_HOSTS`]) or as local ([`LOCAL_HOSTS`]), with an
//!   optional numeric port. `x:/…`, `https:v1.0/…`, `https:/v1.0/…`, `//host/…`, user info
//!   (`graph.microsoft.com@evil`) and any other host are refused. The configured upstream's own
//!   authority is not threaded in: batch URLs are relative in Graph's documentation and absolute
//!   ones are refused by Graph itself, so the documented hosts are accepted only to see through
//!   SDK bugs;
//! - **fragments** (`#`) are refused in batch URLs: they have no meaning in a sub-request, and a
//!   reader that does not know them would read what follows as path.

use std::fmt;

/// Hosts syncgate knows as Microsoft Graph's (docs/graph.md §7: global and national clouds).
pub(crate) const GRAPH_HOSTS: [&str; 4] = [
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// Local spellings of syncgate's own address (tests and SDKs pointed at a local proxy).
pub(crate) const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Longest piece of client input a problem quotes back (refusals are recorded; keep them small).
const QUOTE_LIMIT: usize = 64;

/// The part of a URL a problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Path,
    Query,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Path => "path",
            Part::Query => "query",
        })
    }
}

/// Why the strict reader refuses a URL or request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UrlProblem {
    /// A character as sent that readers disagree on (whitespace, control, non-ASCII, `\`, ...).
    Raw(Part, char),
    /// A percent-escape that decodes to such a character (the decoded byte or character).
    Encoded(Part, String),
    /// A `%` not followed by two hex digits (`%u0070`, `%zz`, a trailing `%`).
    BadEscape(Part),
    /// Escapes in the query that do not decode to UTF-8.
    NotUtf8,
    /// A `#` fragment.
    Fragment,
    /// A scheme other than `https://` or `http://` (the text before the first `:`).
    Scheme(String),
    /// An absolute URL whose authority is not a host syncgate knows as Graph's.
    Host(String),
    /// `//host/...`: a path to one reader, a host to another.
    SchemeRelative,
}

impl fmt::Display for UrlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlProblem::Raw(part, c) => write!(
                f,
                "the {part} contains the character {} as sent",
                describe(*c)
            ),
            UrlProblem::Encoded(part, what) => {
                write!(f, "the {part} contains a percent-escape of {what}")
            }
            UrlProblem::BadEscape(part) => write!(
                f,
                "the {part} contains a '%' that is not followed by two hex digits"
            ),
            UrlProblem::NotUtf8 => f.write_str("the query's escapes do not decode to UTF-8"),
            UrlProblem::Fragment => f.write_str("the URL has a '#' fragment"),
            UrlProblem::Scheme(scheme) => write!(
                f,
                "the URL starts with the scheme '{}' and not with 'https://' followed by a \
                 Graph host",
                quote(scheme)
            ),
            UrlProblem::Host(host) => write!(
                f,
                "the URL names the host '{}', which is not a Microsoft Graph host",
                quote(host)
            ),
            UrlProblem::SchemeRelative => {
                f.write_str("the URL starts with '//' (a host to some readers, a path to others)")
            }
        }
    }
}

/// `U+0009`, or the character itself when it is visible ASCII.
fn describe(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// At most [`QUOTE_LIMIT`] characters of client input.
fn quote(text: &str) -> String {
    text.chars().take(QUOTE_LIMIT).collect()
}

/// Whether `b` may appear as sent in a path: what `http::Uri` accepts (so the path can be
/// re-sent), minus `\`, `?` and `#`.
fn raw_path_byte(b: u8) -> bool {
    matches!(b, b'!' | b'"' | b'$'..=b';' | b'=' | b'@'..=b'[' | b']'..=b'_' | b'a'..=b'~')
}

/// Whether `b` may appear as sent in a query: what `http::Uri` accepts in a query, minus `\`
/// (`#` ends the query for every reader, and is refused separately).
fn raw_query_byte(b: u8) -> bool {
    matches!(b, b'!' | b'$'..=b';' | b'=' | b'?'..=b'[' | b']'..=b'~')
}

/// Whether a byte decoded from a path escape is refused: whitespace and controls, `\` (a
/// separator to Windows stacks), `?` and `#` (the end of the path to a stack that decodes
/// before splitting), and any byte of a non-ASCII character.
fn refused_path_escape(b: u8) -> bool {
    b <= b' ' || b == 0x7F || b == b'\\' || b == b'?' || b == b'#' || b >= 0x80
}

/// Characters invisible in text that some normalisers delete (soft hyphen, zero-width and
/// bidirectional marks, word joiner, byte-order mark): a name with one inside reads as the name
/// without it to such a stack.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
    )
}

/// The bytes of `text` with each `%XX` decoded once, refusing malformed escapes. Returns the
/// decoded escape bytes only through `on_escape`, so callers can judge them apart from the raw
/// characters (already checked).
fn for_each_escape(
    text: &str,
    part: Part,
    mut on_escape: impl FnMut(u8) -> Result<(), UrlProblem>,
) -> Result<(), UrlProblem> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(UrlProblem::BadEscape(part))?;
            let value = std::str::from_utf8(hex)
                .ok()
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(UrlProblem::BadEscape(part))?;
            on_escape(value)?;
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// The first character as sent that `allowed` refuses, as a problem of `part`.
fn check_raw(raw: &str, part: Part, allowed: fn(u8) -> bool) -> Result<(), UrlProblem> {
    match raw.chars().find(|c| !c.is_ascii() || !allowed(*c as u8)) {
        None => Ok(()),
        Some('#') => Err(UrlProblem::Fragment),
        Some(c) => Err(UrlProblem::Raw(part, c)),
    }
}

/// Check a path (still percent-encoded) against the path rules of the module doc.
pub(crate) fn check_path(raw: &str) -> Result<(), UrlProblem> {
    check_raw(raw, Part::Path, raw_path_byte)?;
    for_each_escape(raw, Part::Path, |b| {
        if refused_path_escape(b) {
            Err(UrlProblem::Encoded(
                Part::Path,
                format!("the byte 0x{b:02X}"),
            ))
        } else {
            Ok(())
        }
    })
}

/// Check a query (without `?`, still percent-encoded) against the query rules of the module doc.
pub(crate) fn check_query(raw: &str) -> Result<(), UrlProblem> {
    check_raw(raw, Part::Query, raw_query_byte)?;
    for_each_escape(raw, Part::Query, |_| Ok(()))?;
    if !raw.contains('%') {
        return Ok(());
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let text = std::str::from_utf8(&decoded).map_err(|_| UrlProblem::NotUtf8)?;
    match text
        .chars()
        .find(|&c| c.is_control() || is_invisible(c) || (c.is_whitespace() && c != ' '))
    {
        Some(c) => Err(UrlProblem::Encoded(Part::Query, describe(c))),
        None => Ok(()),
    }
}

/// A `$batch` sub-request URL, read strictly: its path (still encoded; absolute-URL scheme and
/// host removed, `""` when the URL is only a host) and its query (raw spaces and the other
/// characters `http::Uri` refuses in a query percent-encoded, so it can be re-sent as is).
pub(crate) fn read_url(url: &str) -> Result<(&str, Option<String>), UrlProblem> {
    if url.contains('#') {
        return Err(UrlProblem::Fragment);
    }
    let (before, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(encode_query(query))),
        None => (url, None),
    };
    if let Some(query) = &query {
        check_query(query)?;
    }
    // Characters first: a leading space or TAB must not hide a scheme from the checks below.
    check_raw(before, Part::Path, raw_path_byte)?;
    let path = match before.find(':') {
        Some(colon) if !before[..colon].contains('/') => strip_origin(before, colon)?,
        _ if before.starts_with("//") => return Err(UrlProblem::SchemeRelative),
        _ => before,
    };
    check_path(path)?;
    Ok((path, query))
}

/// The query with the characters a JSON client may leave raw (space, `"`, `<`, `>`) encoded.
/// Every reader decodes `%20` and ` ` to the same text; what syncgate classifies is the
/// encoded form, so that is also what it sends.
fn encode_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for c in query.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '"' => out.push_str("%22"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            c => out.push(c),
        }
    }
    out
}

/// `https://graph.microsoft.com/v1.0/x` → `/v1.0/x`; any other absolute form is refused.
fn strip_origin(before: &str, colon: usize) -> Result<&str, UrlProblem> {
    let scheme = &before[..colon];
    let after = &before[colon + 1..];
    let secure_or_plain =
        scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http");
    let Some(rest) = after.strip_prefix("//").filter(|_| secure_or_plain) else {
        return Err(UrlProblem::Scheme(scheme.to_owned()));
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    if !known_authority(authority) {
        return Err(UrlProblem::Host(authority.to_owned()));
    }
    Ok(path)
}

/// A Graph or local host, in any ASCII case, with an optional numeric port.
fn known_authority(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((host, port))
            if (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => authority,
    };
    GRAPH_HOSTS
        .iter()
        .chain(LOCAL_HOSTS.iter())
        .any(|known| known.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests;
