//! The generous URL reading the oracles use: what *some* lax stack could take a URL to mean.
//!
//! Written from scratch for the oracles, deliberately not sharing anything with
//! `classify/canonical.rs`, so that it does not share its blind spots.

use std::fmt;

use percent_encoding::percent_decode;

/// How many decoding rounds are tried (a stack decoding more often than this is not
/// plausible, and the loop must stay bounded for the fuzzer).
const DECODE_ROUNDS: usize = 6;

/// Names under `/policies` below which every write is governed or refused.
const GOVERNED: [&str; 3] = [
    "crosstenantaccesspolicy",
    "deleteditems",
    "crosstenantidentitysyncpolicy",
];

/// Whether a URL must start with an API version (a request target) or may omit it (a
/// `$batch` sub-request, where the batch's version is implied and any number of accidental
/// version segments are tolerated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `/v1.0/…` or `/beta/…`.
    Required,
    /// `…`, `/v1.0/…`, `v1.0/beta/…`.
    Optional,
}

/// A write target that must never be forwarded unchecked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteTarget {
    /// A write under `/policies/<name>`.
    Governed(String),
    /// A `$batch` (its sub-requests are unread if forwarded).
    Batch,
}

impl WriteTarget {
    /// Whether the target is a navigation below a partner that the route table forwards
    /// (`…/partners/{k}/m365capabilities`, `…/serviceproviderconstraints`).
    pub fn is_partner_subnav(&self) -> bool {
        let WriteTarget::Governed(path) = self else {
            return false;
        };
        let segments: Vec<&str> = path.split('/').collect();
        matches!(
            segments.as_slice(),
            ["crosstenantaccesspolicy", "partners", _, nav, ..]
                if *nav == "m365capabilities" || *nav == "serviceproviderconstraints"
        )
    }
}

/// Whether `url` starts with a URL scheme (`https:`, `x:`), after white space.
pub fn has_scheme(url: &str) -> bool {
    let url = url.trim_matches(is_blank);
    url.find(':').is_some_and(|colon| is_scheme(&url[..colon]))
}

fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl fmt::Display for WriteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteTarget::Governed(path) => write!(f, "a write to /policies/{path}"),
            WriteTarget::Batch => f.write_str("a $batch"),
        }
    }
}

/// Whether `method` is a read on *every* reading: exactly `GET` or `HEAD`. Anything else
/// (`get`, `"GET "`, `GET\u{a0}`) may be a write to some stack.
pub fn is_read(method: &str) -> bool {
    method == "GET" || method == "HEAD"
}

/// What a request with `method` to `url` could write, under any of the loose readings.
pub fn write_target(method: &str, url: &str, version: Version) -> Option<WriteTarget> {
    if is_read(method) {
        return None;
    }
    readings(url)
        .into_iter()
        .find_map(|segments| target_of(&segments, version))
}

/// Every segment list a lax stack could read `url` as.
pub fn readings(url: &str) -> Vec<Vec<String>> {
    // WHATWG URL parsing removes TAB, CR and LF anywhere, and trims C0 controls and spaces;
    // .NET's Trim() also removes Unicode white space.
    let cleaned: String = url
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let cleaned = cleaned.trim_matches(is_blank).replace('\\', "/");
    let mut paths = Vec::new();
    for path in without_scheme(&cleaned) {
        let mut decoded = path.clone();
        paths.push(path);
        for _ in 0..DECODE_ROUNDS {
            let next = decode_once(&decoded).replace('\\', "/");
            if next == decoded {
                break;
            }
            decoded = next;
            paths.push(decoded.clone());
        }
    }
    let mut out = Vec::new();
    for path in paths {
        let names: Vec<Name> = path.split('/').map(Name::read).collect();
        for reading in [resolved(&names), dropped(&names)] {
            if !out.contains(&reading) {
                out.push(reading);
            }
        }
    }
    out
}

fn is_blank(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '\u{feff}' | '\u{200b}')
}

/// The path of `url` with any scheme (`https:`, `x:`) and authority (`//host`) removed; a
/// `//host/…` with no scheme is read both as an authority and as a path.
fn without_scheme(url: &str) -> Vec<String> {
    let after_scheme = url
        .find(':')
        .filter(|&colon| is_scheme(&url[..colon]))
        .map(|colon| &url[colon + 1..]);
    let rest = after_scheme.unwrap_or(url);
    let mut out = Vec::new();
    if let Some(authority) = rest.strip_prefix("//") {
        out.push(
            authority
                .find('/')
                .map_or("", |i| &authority[i..])
                .to_owned(),
        );
    }
    out.push(rest.to_owned());
    out
}

/// One round of percent-decoding and `%uXXXX`-decoding, invalid UTF-8 replaced.
fn decode_once(text: &str) -> String {
    let mut unicode = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let escaped = (c == '%')
            .then(|| text.get(at + 1..at + 6))
            .flatten()
            .filter(|e| e.starts_with(['u', 'U']))
            .and_then(|e| u32::from_str_radix(&e[1..], 16).ok())
            .and_then(char::from_u32);
        match escaped {
            Some(decoded) => {
                unicode.push(decoded);
                for _ in 0..5 {
                    chars.next();
                }
            }
            None => unicode.push(c),
        }
    }
    String::from_utf8_lossy(&percent_decode(unicode.as_bytes()).collect::<Vec<u8>>()).into_owned()
}

/// One segment as a lax stack could name it.
#[derive(Debug, Clone)]
struct Name(String);

impl Name {
    fn read(segment: &str) -> Self {
        let folded: String = segment
            .chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .collect();
        let cut = folded.find(['(', ';']).unwrap_or(folded.len());
        let mut name = folded[..cut].trim_matches(is_blank);
        if name != "." && name != ".." {
            name = name.trim_end_matches(|c: char| c == '.' || is_blank(c));
        }
        let mut name = name.to_owned();
        while let Some(bare) = ["microsoft.graph.", "graph."]
            .iter()
            .find_map(|p| name.strip_prefix(p))
        {
            name = bare.to_owned();
        }
        Self(name)
    }
}

/// Dot segments resolved (RFC 3986), empty ones dropped.
fn resolved(names: &[Name]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for Name(name) in names {
        match name.as_str() {
            ".." => {
                out.pop();
            }
            "" | "." => {}
            _ => out.push(name.clone()),
        }
    }
    out
}

/// Dot and empty segments ignored.
fn dropped(names: &[Name]) -> Vec<String> {
    names
        .iter()
        .map(|Name(n)| n.clone())
        .filter(|n| !matches!(n.as_str(), "" | "." | ".."))
        .collect()
}

fn is_version(name: &str) -> bool {
    name == "v1.0" || name == "beta"
}

fn target_of(segments: &[String], version: Version) -> Option<WriteTarget> {
    let rest = match version {
        Version::Required => match segments.split_first() {
            Some((first, rest)) if is_version(first) => rest,
            _ => return None,
        },
        Version::Optional => {
            let skip = segments.iter().take_while(|s| is_version(s)).count();
            &segments[skip..]
        }
    };
    let (root, rest) = rest.split_first()?;
    if root == "$batch" {
        return Some(WriteTarget::Batch);
    }
    if root != "policies" {
        return None;
    }
    let rest: Vec<&str> = rest
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s == "policyroot")
        .collect();
    let (name, below) = rest.split_first()?;
    let governed = GOVERNED.contains(name)
        && !(*name == "crosstenantaccesspolicy" && below.first() == Some(&"default"));
    governed.then(|| WriteTarget::Governed(rest.join("/")))
}
