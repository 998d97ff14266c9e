//! Property checks for fuzzing syncgate's request readers (issue 7, item 7).
//!
//! Each public function takes arbitrary bytes and panics, with a message starting
//! `finding[<class>]:`, when a property that protects the audit promise fails. They live in the
//! library, not in `fuzz/`, so that the very same checks run three ways: under libFuzzer
//! (`fuzz/fuzz_targets/*.rs` are one-liners calling them), over the committed corpora and a short
//! deterministic mutation run in `cargo test` (`tests/fuzz_smoke.rs`), and in the unit tests
//! (`tests.rs`), which pin what each oracle flags. `docs/fuzzing.md` describes the targets and figures.
//!
//! The oracles are deliberately *not* syncgate's own readers: a check that reused
//! `classify/canonical.rs` would share its blind spots. Two independent readings are used:
//!
//! - [`loose`]: a generous reading of a URL, written here from scratch, of what a lax web stack
//!   could take it to mean (WHATWG-style TAB/CR/LF removal and trimming, any scheme and
//!   authority dropped, percent- and `%u`-decoding until stable, Unicode case folding, segment
//!   parameters and trailing dots cut, dot segments resolved or dropped). Anything it reads as a
//!   write to `/policies/{crossTenantAccessPolicy,deletedItems,crossTenantIdentitySyncPolicy}`
//!   (outside `crossTenantAccessPolicy/default`) or as a `$batch` must not be forwarded unchecked.
//! - the emulator's URL parser and router (`emulator/path.rs`, `emulator/api.rs`), written
//!   independently to stand in for Graph: anything it would run as a write to a governed
//!   resource must be governed as that same operation on that same partner, or refused.
//!
//! Inputs are NUL-separated text for the URL targets (`METHOD\0/path?query\0Name: value\0…`) and
//! one selector byte followed by a body for the body and batch targets, so corpus files stay
//! readable and libFuzzer's mutations stay meaningful.
//!
//! One file per target family: `canonical` (target 1, the canonicaliser and classifier), `body`
//! (target 2, the strict body reader, and the independent JSON oracle the batch target shares),
//! `batch` (target 3, the `$batch` parser), `versus_emulator` (target 4, the classifier against
//! the emulator) and [`loose`] (the generous URL reading). This file keeps what they share (the
//! finding, the URL-input format) and the `syncgate::fuzzing::…` paths `fuzz/` and `tests/` call.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

mod batch;
mod body;
mod canonical;
pub mod loose;
#[cfg(test)]
mod tests;
mod versus_emulator;

pub use batch::{batch_parser, check_batch_parser};
pub use body::{body_reader, check_body_reader};
pub use canonical::{canonicaliser, check_canonicaliser};
#[cfg(test)]
pub(crate) use versus_emulator::compare;
pub use versus_emulator::{
    DifferentialCounts, Emulated, check_differential, differential, differential_counts, emulated,
};

/// A property that failed: what kind of failure and the input that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A short, stable name for the class of failure (`partner-subnav-forwarded`,
    /// `loose-forwarded/scheme`, ...), so that crashes can be grouped when triaging a fuzz run
    /// and known-open classes told apart from new ones (`fuzz/findings/open-classes`).
    pub class: String,
    /// The input and both readings of it.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "finding[{}]: {}", self.class, self.detail)
    }
}

fn finding(class: impl Into<String>, detail: String) -> Finding {
    Finding {
        class: class.into(),
        detail,
    }
}

/// The trick a URL or method uses, for the class of a loose-reading finding: the first of a
/// partner sub-navigation, white space or control characters in the URL (raw, then
/// percent-encoded), a scheme, a method that
/// is not an upper-case token, or a `$batch` with another method than POST; `unexplained` when
/// none applies (a new kind of bypass).
fn trick(method: &str, url: &str, target: &loose::WriteTarget) -> &'static str {
    let odd = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '\u{feff}' | '\u{200b}');
    if target.is_partner_subnav() {
        "partner-subnav"
    } else if url.chars().any(odd) {
        "whitespace-or-control"
    } else if percent_encoding::percent_decode_str(url)
        .decode_utf8_lossy()
        .chars()
        .any(odd)
    {
        "encoded-whitespace-or-control"
    } else if loose::has_scheme(url) {
        "scheme"
    } else if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        "method"
    } else if *target == loose::WriteTarget::Batch && method != "POST" {
        "batch-method"
    } else {
        "unexplained"
    }
}

/// Panic with the finding, as libFuzzer and the smoke test expect a failed property to do.
fn report(result: Result<(), Finding>) {
    if let Err(found) = result {
        panic!("{found}");
    }
}

/// A note for a finding: whether hyper would accept the target on a request line (so the
/// finding is reachable without `$batch`).
fn reachable(target: &str) -> &'static str {
    if http::uri::PathAndQuery::from_str(target).is_ok() {
        " (the target is a valid request-line target)"
    } else {
        " (not a valid request-line target: reachable only where classify() is handed such \
         strings, i.e. $batch sub-requests)"
    }
}

/// The fields of a URL-target input.
struct UrlInput {
    method: Method,
    target: String,
    headers: HeaderMap,
}

impl UrlInput {
    /// `METHOD\0TARGET\0Name: value\0…`; `None` when the method is not an HTTP token (hyper
    /// refuses such requests before syncgate sees them).
    fn parse(data: &[u8]) -> Option<Self> {
        let mut fields = data.split(|b| *b == 0);
        let method = Method::from_bytes(fields.next()?).ok()?;
        let target = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
        let mut headers = HeaderMap::new();
        for line in fields {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                headers.append(name, value);
            }
        }
        Some(Self {
            method,
            target,
            headers,
        })
    }
}

/// `path?query` → (`path`, `Some(query)`).
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// Bytes as text for a message (lossy, bounded).
fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(2_000).collect()
}
