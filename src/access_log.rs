//! The access log (`[log] access = true`): one JSON object per line for every request the proxy
//! answers, governed or not, written by a thread of its own so a slow disk never slows a request.
//!
//! Off by default: the audit log already records every governed call, and a line per pass-through
//! request is the largest cost a proxy can add to the calls it does not govern (issue 13). When on,
//! the request path only builds an [`Entry`] (no formatting, no I/O) and hands it to a bounded
//! queue without waiting; the writer wakes every [`FLUSH_EVERY`], formats what queued up and
//! writes it in one go. When the queue is full (the disk cannot keep up) the entry is dropped and
//! counted (`syncgate_access_log_dropped_total`), never waited for.
//!
//! Never a credential: no header is logged but `User-Agent` and the correlation ids, and the
//! values of query parameters whose names look like secrets (`token`, `secret`, `password`,
//! `code`, `key`, `sig`, `assertion`) are replaced by `REDACTED`.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode, Version};
use prometheus_client::metrics::counter::Counter;
use serde_json::{Map, Value, json};

use crate::metrics::RouteClass;

/// How often the writer writes out what queued up.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Entries that may wait for the writer (at 50 ms a round, over a million requests per second).
const QUEUE: usize = 65_536;

/// The longest `User-Agent` kept (the rest is cut).
const MAX_USER_AGENT: usize = 256;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Stdout,
    /// Appended to this file (created when missing, mode 0600 on Unix).
    File(PathBuf),
}

/// One answered request, as the request path hands it over.
pub(crate) struct Entry {
    pub(crate) at: SystemTime,
    pub(crate) remote: IpAddr,
    pub(crate) tls: bool,
    pub(crate) version: Version,
    pub(crate) method: Method,
    /// The path and query as requested (the query is redacted when the line is written).
    pub(crate) target: String,
    pub(crate) status: StatusCode,
    pub(crate) class: RouteClass,
    /// From the request's arrival to its response head.
    pub(crate) latency: Duration,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) client_request_id: Option<HeaderValue>,
    /// The response's `request-id` (Graph's own for forwarded answers).
    pub(crate) request_id: Option<HeaderValue>,
    /// The response's `Content-Length`, when it has one (a streamed body has none).
    pub(crate) response_length: Option<u64>,
}

/// The request path's end of the access log.
#[derive(Clone)]
pub(crate) struct AccessLog {
    queue: SyncSender<Entry>,
    dropped: Counter,
}

impl AccessLog {
    /// Open `destination` and start its writer thread; `dropped` counts the lines the queue had
    /// no room for.
    pub(crate) fn start(destination: &Destination, dropped: Counter) -> std::io::Result<Self> {
        Self::with_queue(destination, dropped, QUEUE)
    }

    fn with_queue(
        destination: &Destination,
        dropped: Counter,
        capacity: usize,
    ) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match destination {
            Destination::Stdout => Box::new(std::io::stdout()),
            Destination::File(path) => {
                let mut options = OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                Box::new(options.open(path)?)
            }
        };
        let (queue, entries) = std::sync::mpsc::sync_channel(capacity);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_out(entries, BufWriter::with_capacity(256 * 1024, out)))?;
        Ok(Self { queue, dropped })
    }

    /// Queue `entry` for the writer, or count it dropped when the queue is full. Never waits.
    pub(crate) fn record(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// The writer thread: every [`FLUSH_EVERY`], write out everything queued; ends (after writing
/// what is left) when the request path's end is dropped.
fn write_out(entries: Receiver<Entry>, mut out: BufWriter<Box<dyn Write + Send>>) {
    let mut failed = false;
    loop {
        // Sleeping rather than blocking on the queue: a request never wakes this thread.
        std::thread::sleep(FLUSH_EVERY);
        let mut open = true;
        loop {
            match entries.try_recv() {
                Ok(entry) => {
                    let mut line = entry.to_json().to_string();
                    line.push('\n');
                    if let Err(error) = out.write_all(line.as_bytes()) {
                        complain(&mut failed, &error);
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if let Err(error) = out.flush() {
            complain(&mut failed, &error);
        }
        if !open {
            return;
        }
    }
}

/// Say once that the access log cannot be written (a full disk would otherwise flood the log).
fn complain(failed: &mut bool, error: &std::io::Error) {
    if !*failed {
        tracing::error!(%error, "cannot write the access log; lines are lost until it recovers");
        *failed = true;
    }
}

impl Entry {
    /// The line's JSON object (keys in a fixed order).
    pub(crate) fn to_json(&self) -> Value {
        let mut line = Map::new();
        let at: chrono::DateTime<chrono::Utc> = self.at.into();
        line.insert(
            "time".into(),
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert("remote".into(), json!(self.remote.to_string()));
        line.insert(
            "protocol".into(),
            json!(match self.version {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            }),
        );
        line.insert("tls".into(), json!(self.tls));
        line.insert("method".into(), json!(self.method.as_str()));
        line.insert("target".into(), json!(redact(&self.target)));
        line.insert("status".into(), json!(self.status.as_u16()));
        line.insert("route".into(), json!(self.class.as_str()));
        line.insert(
            "latency_us".into(),
            json!(u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX)),
        );
        if let Some(length) = self.response_length {
            line.insert("response_bytes".into(), json!(length));
        }
        let text = |value: &Option<HeaderValue>, max: usize| {
            value.as_ref().map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                json!(text.chars().take(max).collect::<String>())
            })
        };
        for (key, value, max) in [
            ("request_id", &self.request_id, 128),
            ("client_request_id", &self.client_request_id, 128),
            ("user_agent", &self.user_agent, MAX_USER_AGENT),
        ] {
            if let Some(value) = text(value, max) {
                line.insert(key.into(), value);
            }
        }
        Value::Object(line)
    }
}

/// Query parameter names (lower case) whose values are never written.
const SECRET_NAMES: &[&str] = &[
    "token",
    "secret",
    "password",
    "code",
    "key",
    "sig",
    "assertion",
];

/// `target` with the values of secret-looking query parameters replaced by `REDACTED`. The path
/// and the other parameters stay as the client wrote them (still percent-encoded).
fn redact(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (pair, None),
        };
        // The name as a lenient server would read it: percent-decoded, any case.
        let decoded = percent_encoding::percent_decode_str(name)
            .decode_utf8_lossy()
            .to_ascii_lowercase();
        let secret = SECRET_NAMES.iter().any(|s| decoded.contains(s));
        out.push_str(name);
        match value {
            Some(_) if secret => out.push_str("=REDACTED"),
            Some(value) => {
                out.push('=');
                out.push_str(value);
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_query_values_are_redacted_and_the_rest_kept() {
        assert_eq!(redact("/v1.0/me"), "/v1.0/me");
        assert_eq!(
            redact("/v1.0/users?$select=id&$top=5"),
            "/v1.0/users?$select=id&$top=5"
        );
        assert_eq!(
            redact("/x?access_token=eyJ0&a=1&client_secret=s&sig=abc&Code=c&flag"),
            "/x?access_token=REDACTED&a=1&client_secret=REDACTED&sig=REDACTED&Code=REDACTED&flag"
        );
        // Encoded or oddly cased names are read as a lenient server reads them.
        assert_eq!(
            redact("/x?%74oken=t&ToKeN=u"),
            "/x?%74oken=REDACTED&ToKeN=REDACTED"
        );
        assert_eq!(redact("/x?token"), "/x?token");
    }

    #[test]
    fn a_line_holds_the_request_and_no_credential() {
        let entry = Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            remote: "10.1.2.3".parse().unwrap(),
            tls: true,
            version: Version::HTTP_2,
            method: Method::PATCH,
            target: "/v1.0/users?$filter=x&password=hunter2".into(),
            status: StatusCode::OK,
            class: RouteClass::PassThrough,
            latency: Duration::from_micros(1234),
            user_agent: Some(HeaderValue::from_str(&"u".repeat(400)).unwrap()),
            client_request_id: Some(HeaderValue::from_static("c-1")),
            request_id: None,
            response_length: Some(17),
        };
        let line = entry.to_json();
        assert_eq!(line["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(line["remote"], "10.1.2.3");
        assert_eq!(line["protocol"], "HTTP/2");
        assert_eq!(line["method"], "PATCH");
        assert_eq!(line["target"], "/v1.0/users?$filter=x&password=REDACTED");
        assert_eq!(line["status"], 200);
        assert_eq!(line["route"], "pass_through");
        assert_eq!(line["latency_us"], 1234);
        assert_eq!(line["response_bytes"], 17);
        assert_eq!(line["client_request_id"], "c-1");
        assert!(line.get("request_id").is_none());
        assert_eq!(line["user_agent"].as_str().unwrap().len(), MAX_USER_AGENT);
        assert!(!line.to_string().contains("hunter2"));
    }

    #[test]
    fn entries_reach_the_file_and_a_full_queue_drops_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let dropped = Counter::default();
        const SMALL: usize = 10;
        let log = AccessLog::with_queue(&Destination::File(path.clone()), dropped.clone(), SMALL)
            .unwrap();
        let entry = |n: usize| Entry {
            at: SystemTime::now(),
            remote: "127.0.0.1".parse().unwrap(),
            tls: false,
            version: Version::HTTP_11,
            method: Method::GET,
            target: format!("/v1.0/users/{n}"),
            status: StatusCode::OK,
            class: RouteClass::PassThrough,
            latency: Duration::from_micros(10),
            user_agent: None,
            client_request_id: None,
            request_id: None,
            response_length: None,
        };
        // Far more than the queue holds, within one flush interval: the surplus is dropped (a
        // recording that waited for room would have dropped nothing).
        const SENT: u64 = 1000;
        for n in 0..SENT as usize {
            log.record(entry(n));
        }
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines = text.lines().count() as u64;
            if lines + dropped.get() == SENT || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(FLUSH_EVERY);
        };
        let written = lines.lines().count() as u64;
        assert_eq!(written + dropped.get(), SENT);
        assert!(dropped.get() > 0, "nothing was dropped");
        let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first["target"], "/v1.0/users/0");
    }
}
