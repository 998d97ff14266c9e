//! Two readings of a request path: *loose* ("could this reach a governed resource under some
//! reading?") and *strict* (each segment decoded exactly once, every trick reported), and the
//! canonical form built from the strict reading.
//!
//! Why two: the dangerous bugs in a governing proxy are parser differentials, where syncgate
//! reads a path one way and Graph (IIS/ASP.NET/OData) another. The loose reading is deliberately
//! generous (it decodes, folds and normalises more than any stack plausibly does) and is only
//! used to decide whether a path is *relevant*. The strict reading is deliberately narrow and is
//! the only one used to name a resource. A path that is relevant but not strictly canonical is
//! refused; a path the loose reading rules out is forwarded untouched, so ordinary Graph traffic
//! with odd encodings keeps working.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::graph::{ApiVersion, CanonicalPath, TenantId};

mod loose;
mod url;

pub(crate) use loose::{Reach, is_loose_version, reach, reaches_nothing};
pub(crate) use url::{UrlProblem, check_path, check_query, read_url};

/// Collections keyed by a partner tenant id: the only places a key may appear.
const KEYED_COLLECTIONS: [&str; 3] = [
    "partners",
    "crosstenantpartners",
    "crosstenantsyncpolicypartners",
];

/// Namespace qualifiers Graph's OData stack may accept in a path segment: the namespace and its
/// CSDL alias.
const NAMESPACE_PREFIXES: [&str; 2] = ["microsoft.graph.", "graph."];

/// A way the raw path departs from the canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trick {
    /// `//` (an empty segment); one trailing slash is allowed and dropped.
    EmptySegment(usize),
    /// `.` or `..`, possibly percent-encoded.
    DotSegment(usize),
    /// `%2F` or `%5C` inside a segment, or a raw `\`.
    EncodedSlash(usize),
    /// A segment that still contains percent-escapes after one decoding (`%2570`).
    DoubleEncoded(usize),
    /// A segment whose decoded bytes are not UTF-8.
    InvalidUtf8(usize),
    /// An IIS-style `%uXXXX` escape, which some Microsoft stacks decode.
    UnicodeEscape(usize),
}

impl fmt::Display for Trick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trick::EmptySegment(i) => write!(f, "segment {i} is empty"),
            Trick::DotSegment(i) => write!(f, "segment {i} is a '.' or '..' segment"),
            Trick::EncodedSlash(i) => write!(f, "segment {i} contains an encoded or back slash"),
            Trick::DoubleEncoded(i) => write!(f, "segment {i} is percent-encoded more than once"),
            Trick::InvalidUtf8(i) => write!(f, "segment {i} does not decode to UTF-8"),
            Trick::UnicodeEscape(i) => write!(f, "segment {i} contains a %u escape"),
        }
    }
}

/// The strict reading: split on `/` (one leading slash, one trailing slash dropped), decode each
/// segment once, and report the first trick. Segments are numbered from 1, the version being 1.
pub(crate) fn split(raw_path: &str) -> Result<Vec<String>, Trick> {
    let trimmed = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .enumerate()
        .map(|(i, raw)| decode_segment(i + 1, raw))
        .collect()
}

fn decode_segment(index: usize, raw: &str) -> Result<String, Trick> {
    if raw.contains('\\') {
        return Err(Trick::EncodedSlash(index));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Trick::InvalidUtf8(index))?;
    if decoded.contains(['/', '\\']) {
        return Err(Trick::EncodedSlash(index));
    }
    if decoded.is_empty() {
        return Err(Trick::EmptySegment(index));
    }
    if decoded == "." || decoded == ".." {
        return Err(Trick::DotSegment(index));
    }
    if has_percent_escape(&decoded) {
        return Err(Trick::DoubleEncoded(index));
    }
    if has_unicode_escape(raw) || has_unicode_escape(&decoded) {
        return Err(Trick::UnicodeEscape(index));
    }
    Ok(decoded.into_owned())
}

/// Whether `text` holds a `%uXXXX` escape (IIS's non-standard Unicode encoding).
fn has_unicode_escape(text: &str) -> bool {
    text.as_bytes().windows(6).any(|w| {
        w[0] == b'%' && (w[1] == b'u' || w[1] == b'U') && w[2..].iter().all(u8::is_ascii_hexdigit)
    })
}

/// Whether decoding `text` again would change it.
fn has_percent_escape(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// Why strictly decoded segments have no canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CanonError {
    /// A key of a partner collection is not a GUID (refused whatever the method).
    BadKey(String),
    /// The path does not have the shape of a Graph path (no version, stray parentheses...):
    /// a write is refused as unknown, a read is forwarded.
    NotCanonical(String),
}

/// The canonical form of strictly decoded segments: version parsed, names lower-cased and
/// stripped of their namespace, keys of the partner collections (slash, parenthesised, named
/// or parameter-alias form) turned into their own lower-case GUID segment.
pub(crate) fn canonicalize(
    segments: &[String],
    query: Option<&str>,
) -> Result<CanonicalPath, CanonError> {
    let Some((first, rest)) = segments.split_first() else {
        return Err(CanonError::NotCanonical("the path is empty".into()));
    };
    let version = ApiVersion::parse(first).ok_or_else(|| {
        CanonError::NotCanonical(format!("'{first}' is not an API version (v1.0 or beta)"))
    })?;
    let mut out: Vec<String> = Vec::with_capacity(rest.len() + 1);
    let mut key_expected_after: Option<String> = None;
    for segment in rest {
        if let Some(collection) = key_expected_after.take() {
            out.push(key_segment(&collection, segment)?);
            continue;
        }
        let (name, args) = split_parens(segment)?;
        let name = strip_namespace(&name.to_ascii_lowercase());
        match args {
            Some(args) if KEYED_COLLECTIONS.contains(&name.as_str()) => {
                let key = parenthesised_key(&name, args, query)?;
                out.push(name);
                out.push(key.as_str().to_owned());
            }
            Some(_) => {
                return Err(CanonError::NotCanonical(format!(
                    "parentheses after '{name}', which is not a keyed collection"
                )));
            }
            None => {
                if KEYED_COLLECTIONS.contains(&name.as_str()) {
                    key_expected_after = Some(name.clone());
                }
                out.push(name);
            }
        }
    }
    Ok(CanonicalPath {
        version,
        segments: out,
    })
}

/// The segment after a keyed collection: a GUID key, or a system segment (`$count`, `$ref`)
/// or a namespace-qualified operation (`microsoft.graph.delta()`), which are not keys.
fn key_segment(collection: &str, segment: &str) -> Result<String, CanonError> {
    if segment.starts_with('$') {
        return Ok(segment.to_ascii_lowercase());
    }
    if has_namespace(segment) {
        let operation = strip_namespace(&segment.to_ascii_lowercase());
        if operation.contains(['(', ')']) {
            return Err(CanonError::NotCanonical(format!(
                "the function call '{segment}' on '{collection}'"
            )));
        }
        return Ok(operation);
    }
    TenantId::parse(segment)
        .map(|k| k.as_str().to_owned())
        .map_err(|_| bad_key(collection, segment))
}

fn bad_key(collection: &str, key: &str) -> CanonError {
    CanonError::BadKey(format!(
        "The key '{key}' of '{collection}' is not a tenant id: keys of governed resources must be \
         GUIDs in the 36-character hyphenated form."
    ))
}

/// `name(args)` → (`name`, `Some(args)`); a segment without `(` → (`segment`, `None`).
fn split_parens(segment: &str) -> Result<(&str, Option<&str>), CanonError> {
    let Some(open) = segment.find('(') else {
        if segment.contains(')') {
            return Err(CanonError::NotCanonical(format!(
                "unbalanced parenthesis in '{segment}'"
            )));
        }
        return Ok((segment, None));
    };
    let name = &segment[..open];
    let inner = segment[open + 1..]
        .strip_suffix(')')
        .filter(|inner| !inner.contains(['(', ')']))
        .ok_or_else(|| CanonError::NotCanonical(format!("malformed parentheses in '{segment}'")))?;
    Ok((name, Some(inner)))
}

/// The key inside `partners(...)`: `'k'`, `k`, `tenantId='k'`, `@a` or `tenantId=@a` (the alias
/// defined once in the query as `@a='k'`).
fn parenthesised_key(
    collection: &str,
    args: &str,
    query: Option<&str>,
) -> Result<TenantId, CanonError> {
    let value = match args.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("tenantid") => value.trim(),
        Some(_) => return Err(bad_key(collection, args)),
        None => args.trim(),
    };
    let value = if value.starts_with('@') {
        alias_value(value, query).ok_or_else(|| {
            CanonError::BadKey(format!(
                "The key alias '{value}' of '{collection}' must be defined exactly once in the \
                 query string."
            ))
        })?
    } else {
        value.to_owned()
    };
    let value = value.trim();
    let unquoted = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    TenantId::parse(unquoted).map_err(|_| bad_key(collection, value))
}

/// The value of the parameter alias `alias` (e.g. `@a`) in the query, when defined exactly once.
fn alias_value(alias: &str, query: Option<&str>) -> Option<String> {
    // Matched case-insensitively: if Graph reads `@A` as `@a`, two spellings would be two
    // definitions, and syncgate must not pick a different one from Graph.
    let mut values = query_pairs(query?)
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case(alias))
        .map(|(_, value)| value);
    let value = values.next()?;
    values.next().is_none().then_some(value)
}

/// The query string's `name=value` pairs, each percent-decoded (lossily; `+` left as is).
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (
            percent_decode_str(name).decode_utf8_lossy().into_owned(),
            percent_decode_str(value).decode_utf8_lossy().into_owned(),
        )
    })
}

/// Whether the query asks to expand `identitySynchronization` (or everything): `$expand`, or
/// `expand` without the `$` (allowed in beta), in any case.
pub(crate) fn expands_sync(query: Option<&str>) -> bool {
    query_pairs(query.unwrap_or_default()).any(|(name, value)| {
        let name = name.trim().to_ascii_lowercase();
        let value = value.to_ascii_lowercase();
        name.trim_start_matches('$') == "expand"
            && (value.contains("identitysynchronization") || value.contains('*'))
    })
}

fn has_namespace(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    NAMESPACE_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// `microsoft.graph.restore` → `restore` (one qualifier only: `microsoft.graph.graph.restore`
/// keeps one and matches nothing).
fn strip_namespace(lower: &str) -> String {
    NAMESPACE_PREFIXES
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .unwrap_or(lower)
        .to_owned()
}

#[cfg(test)]
mod tests;
