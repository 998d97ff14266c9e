//! The three kinds of witness sink: a file, an HTTP witness (C2SP tlog-witness), syslog.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Delivered, Target, WitnessSpec};
use crate::audit::note::{CosignatureVerifier, NoteError, note_text};
use crate::store::StoreReader;
use crate::store::tree::StoredCheckpoint;

/// The most of a witness's answer read (co-signature lines are a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// A witness, ready to deliver to.
pub(crate) enum Sink {
    File(std::path::PathBuf),
    Http {
        url: http::Uri,
        client: Box<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
        /// The witness's co-signing key, when configured.
        key: Option<CosignatureVerifier>,
    },
    SyslogUnix(std::path::PathBuf),
    SyslogUdp(std::net::SocketAddr),
}

impl Sink {
    pub(crate) fn new(spec: &WitnessSpec) -> Sink {
        match &spec.target {
            Target::File(path) => Sink::File(path.clone()),
            Target::SyslogUnix(path) => Sink::SyslogUnix(path.clone()),
            Target::SyslogUdp(addr) => Sink::SyslogUdp(*addr),
            Target::Url(url) => {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(spec.timeout));
                // The same roots as the upstream client's defaults (webpki-roots, ring).
                let tls = crate::tls::client_config(None)
                    .unwrap_or_else(|_| unreachable!("the built-in roots always load"));
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                Sink::Http {
                    url: url.clone(),
                    client: Box::new(Client::builder(TokioExecutor::new()).build(https)),
                    key: spec.key.clone(),
                }
            }
        }
    }

    /// Deliver `checkpoint` to a witness that holds the checkpoint of `old` events (0: none).
    pub(crate) async fn deliver(
        &self,
        reader: &StoreReader,
        old: u64,
        checkpoint: &StoredCheckpoint,
    ) -> Result<Delivered, String> {
        match self {
            Sink::File(path) => append_to_file(path, &checkpoint.note)
                .await
                .map(|()| Delivered::of(checkpoint)),
            Sink::SyslogUnix(path) => {
                let message = syslog_message(checkpoint);
                let socket = tokio::net::UnixDatagram::unbound().map_err(|e| e.to_string())?;
                socket
                    .send_to(message.as_bytes(), path)
                    .await
                    .map_err(|e| format!("cannot send to {}: {e}", path.display()))?;
                Ok(Delivered::of(checkpoint))
            }
            Sink::SyslogUdp(addr) => {
                let message = syslog_message(checkpoint);
                let bind = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = tokio::net::UdpSocket::bind(bind)
                    .await
                    .map_err(|e| e.to_string())?;
                socket
                    .send_to(message.as_bytes(), addr)
                    .await
                    .map_err(|e| format!("cannot send to {addr}: {e}"))?;
                Ok(Delivered::of(checkpoint))
            }
            Sink::Http { url, client, key } => {
                let http = HttpWitness {
                    client,
                    url,
                    key: key.as_ref(),
                    reader,
                };
                let first = http.add_checkpoint(old, checkpoint).await?;
                match first {
                    Answer::Taken(cosignature) => Ok(Delivered {
                        size: checkpoint.size,
                        cosignature,
                        problem: None,
                    }),
                    // The witness holds another size: prove from that one, once.
                    Answer::Holds(size) if size < checkpoint.size && size != old => {
                        match http.add_checkpoint(size, checkpoint).await? {
                            Answer::Taken(cosignature) => Ok(Delivered {
                                size: checkpoint.size,
                                cosignature,
                                problem: None,
                            }),
                            Answer::Holds(size) => Err(format!(
                                "the witness holds {size} events, and refused a proof from there"
                            )),
                        }
                    }
                    // It holds this one or a later one already (another replica delivered it,
                    // or an earlier answer of ours was refused): nothing more to send, but no
                    // co-signature came, which a witness with a key should have given.
                    Answer::Holds(size) if size >= checkpoint.size => Ok(Delivered {
                        size,
                        cosignature: None,
                        problem: key.as_ref().map(|key| {
                            format!(
                                "the witness holds {size} events; no co-signature by {} of \
                                 checkpoint {} was received",
                                key.name(),
                                checkpoint.size
                            )
                        }),
                    }),
                    Answer::Holds(size) => Err(format!(
                        "the witness holds {size} events and refused the proof from them"
                    )),
                }
            }
        }
    }
}

/// Append `note` and a blank line to `path` (created private), on disk when this returns.
async fn append_to_file(path: &Path, note: &str) -> Result<(), String> {
    let path = path.to_owned();
    let mut text = note.to_owned();
    text.push('\n');
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    })
    .await
    .map_err(|e| format!("the file writer failed: {e}"))?
}

/// An RFC 5424 message (facility 13, log audit; severity 6, informational) naming the
/// checkpoint, with its note base64'd: syslog carries one line, and a note has several.
pub(crate) fn syslog_message(checkpoint: &StoredCheckpoint) -> String {
    format!(
        "<110>1 {} - syncgate - checkpoint - size={} root={} note={}",
        checkpoint.time,
        checkpoint.size,
        BASE64.encode(checkpoint.root),
        BASE64.encode(checkpoint.note.as_bytes())
    )
}

/// C2SP tlog-witness's `add-checkpoint` body: `old N`, the consistency proof from N, a blank
/// line, the signed note.
pub(crate) fn add_checkpoint_body(
    old: u64,
    proof: &[crate::audit::merkle::Hash],
    note: &str,
) -> String {
    let mut body = format!("old {old}\n");
    for hash in proof {
        body.push_str(&BASE64.encode(hash));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

enum Answer {
    /// 200: taken, with the witness's co-signature lines if it sent any.
    Taken(Option<String>),
    /// 409: the witness holds a checkpoint of this size instead.
    Holds(u64),
}

/// One delivery to an HTTP witness: what it needs at hand.
struct HttpWitness<'a> {
    client: &'a Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: &'a http::Uri,
    key: Option<&'a CosignatureVerifier>,
    reader: &'a StoreReader,
}

impl HttpWitness<'_> {
    async fn add_checkpoint(
        &self,
        old: u64,
        checkpoint: &StoredCheckpoint,
    ) -> Result<Answer, String> {
        let (client, url) = (self.client, self.url);
        let proof = if old == 0 || old >= checkpoint.size {
            Vec::new()
        } else {
            self.reader
                .consistency_proof(old, checkpoint.size)
                .await
                .map_err(|e| {
                    format!(
                        "cannot prove {old} events consistent with {}: {e}",
                        checkpoint.size
                    )
                })?
        };
        let body = add_checkpoint_body(old, &proof, &checkpoint.note);
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status();
        let text = match Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
        {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(e) => {
                return Err(format!(
                    "HTTP {status}, and its body could not be read: {e}"
                ));
            }
        };
        match status {
            StatusCode::OK => match self.key {
                Some(key) => cosigned_by(key, checkpoint, &text).map(Answer::Taken),
                None => {
                    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("— ")).collect();
                    Ok(Answer::Taken(
                        (!lines.is_empty()).then(|| lines.join("\n") + "\n"),
                    ))
                }
            },
            StatusCode::CONFLICT => text
                .trim()
                .parse::<u64>()
                .map(Answer::Holds)
                .map_err(|_| format!("HTTP 409: {}", first_line(&text))),
            _ => Err(format!("HTTP {status}: {}", first_line(&text))),
        }
    }
}

/// The line of `answer` that co-signs `checkpoint` by `key`, checked; an answer without one is
/// a failed delivery (the witness is misconfigured, or not the one configured), retried.
fn cosigned_by(
    key: &CosignatureVerifier,
    checkpoint: &StoredCheckpoint,
    answer: &str,
) -> Result<Option<String>, String> {
    let text = note_text(&checkpoint.note)
        .ok_or_else(|| format!("checkpoint {} is not a signed note", checkpoint.size))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    key.find(text, answer, now)
        .map(|(_, line)| Some(format!("{line}\n")))
        .map_err(|e| {
            let why = match e {
                NoteError::Unsigned(name) => format!("its answer holds no co-signature by {name}"),
                NoteError::BadSignature(name) => {
                    format!("its co-signature by {name} does not verify")
                }
                other => other.to_string(),
            };
            format!("the witness took checkpoint {} but {why}", checkpoint.size)
        })
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
