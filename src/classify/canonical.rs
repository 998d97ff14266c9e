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
use unicode_normalization::UnicodeNormalization;

use crate::graph::{ApiVersion, CanonicalPath, TenantId};

mod url;

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

/// How many decoding rounds the loose reading applies; more than any stack would.
const LOOSE_DECODE_ROUNDS: usize = 8;

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

/// What a path could reach under the loose reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reach {
    /// `/{v}/policies[/...]`: method overrides are refused here.
    pub(crate) policies: bool,
    /// The governed subtrees: `/{v}/policies` itself, and anything under it with a segment
    /// containing `crosstenant` or `deleteditems`.
    pub(crate) governed: bool,
    /// `/{v}/$batch`.
    pub(crate) batch: bool,
}

impl Reach {
    fn merge(&mut self, other: Reach) {
        self.policies |= other.policies;
        self.governed |= other.governed;
        self.batch |= other.batch;
    }
}

/// The loose reading. With `anywhere` (used when the strict reading found a trick) a version
/// segment followed by `policies` or `$batch` counts wherever it appears, not only first: a path
/// that already plays encoding games gets no benefit of the doubt.
pub(crate) fn reach(raw_path: &str, anywhere: bool) -> Reach {
    let mut reach = Reach::default();
    // With and without `%u` escapes: decoding one can swallow the letters of a governed name
    // that a stack without them would see (`crossTen%u007crossTenant…`). With and without
    // Unicode compatibility normalisation and the deletion of whitespace, controls and invisible
    // characters: a stack that applies NFKC reads `％24batch` or `ｐolicies` as ASCII, and WHATWG
    // URL parsing deletes TAB, CR and LF anywhere (`pol<TAB>icies`).
    let mut readings: Vec<String> = Vec::with_capacity(4);
    for unicode in [false, true] {
        for normalise in [false, true] {
            let decoded = decode_fully(raw_path, unicode, normalise).replace('\\', "/");
            // Most paths read the same every way: judge each distinct reading once.
            if !readings.contains(&decoded) {
                readings.push(decoded);
            }
        }
    }
    for decoded in &readings {
        let segments: Vec<Loose> = decoded.split('/').map(Loose::new).collect();
        reach.merge(reach_of(&segments, anywhere));
    }
    reach
}

/// [`reach`] of one decoding, under both dot-segment readings.
fn reach_of(segments: &[Loose], anywhere: bool) -> Reach {
    let mut reach = Reach::default();
    // A third reading drops nameless segments as well (found by fuzzing:
    // `/v1.0/('k')/policies/crossTenantAccessPolicy/...` inside a batch). It is added, not
    // substituted: a nameless segment's text can itself hold a governed name (`(deletedItems`).
    let named: Vec<Loose> = segments
        .iter()
        .filter(|s| !s.is_nameless())
        .cloned()
        .collect();
    for reading in [
        resolve_dots(segments),
        drop_dots(segments),
        drop_dots(&named),
    ] {
        let starts: Vec<usize> = if anywhere {
            (0..reading.len()).collect()
        } else {
            vec![0]
        };
        for start in starts {
            reach.merge(reach_from(&reading[start..]));
        }
    }
    reach
}

/// Whether a raw segment reads, loosely, as an API version (`v1.0`, `%42ETA`, `V1.0.`).
pub(crate) fn is_loose_version(raw_segment: &str) -> bool {
    [false, true].into_iter().any(|unicode| {
        let name = Loose::new(&decode_fully(raw_segment, unicode, false)).name;
        name == "v1.0" || name == "beta"
    })
}

/// One segment under the loose reading.
#[derive(Debug, Clone)]
struct Loose {
    /// The name as the most lenient stack might read it: cut at `(`, `;`, `?`, `#` (the end of
    /// the path to a stack that decodes before splitting) or a control character, trimmed of
    /// whitespace and trailing dots (Windows-style), case-folded the way .NET's
    /// `OrdinalIgnoreCase` compares (`ı` and `ſ` upper-case to ASCII), namespace stripped.
    name: String,
    /// The whole segment, case-folded: searched for governed names wherever they appear.
    text: String,
}

impl Loose {
    fn new(segment: &str) -> Self {
        let text = fold(segment);
        let cut = segment
            .find(|c: char| matches!(c, '(' | ';' | '?' | '#') || c.is_control())
            .unwrap_or(segment.len());
        let name = segment[..cut].trim();
        if name == "." || name == ".." {
            return Self {
                name: name.to_owned(),
                text,
            };
        }
        let mut name = fold(name.trim_end_matches(|c: char| c == '.' || c.is_whitespace()));
        while let Some(stripped) = NAMESPACE_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
            name = stripped.to_owned();
        }
        Self { name, text }
    }

    /// Empty (or whitespace only): `//`, which a lenient stack collapses.
    fn is_empty(&self) -> bool {
        self.text.trim().is_empty()
    }

    /// No name before its parentheses or parameters (`('k')`, `;x=1`): a stack that reads keys and
    /// parameters as belonging to the segment before them leaves nothing of this one.
    fn is_nameless(&self) -> bool {
        self.name.is_empty()
    }

    fn is_dot(&self) -> bool {
        self.name == "." || self.name == ".."
    }
}

/// Case folding as .NET's ordinal-ignore-case compares: upper-case, then lower-case.
fn fold(text: &str) -> String {
    text.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

fn reach_from(segments: &[Loose]) -> Reach {
    let mut reach = Reach::default();
    let [version, root, rest @ ..] = segments else {
        return reach;
    };
    if version.name != "v1.0" && version.name != "beta" {
        return reach;
    }
    match root.name.as_str() {
        "$batch" => reach.batch = true,
        "policies" => {
            reach.policies = true;
            // `policyroot` is a cast to the root's own type (`/policies/microsoft.graph.policyRoot/...`).
            let rest: Vec<&Loose> = rest.iter().filter(|s| s.name != "policyroot").collect();
            // Searched in the whole segment, not only its name: a name only a lenient stack would
            // map to a governed segment costs ordinary traffic nothing when refused for writes.
            reach.governed = rest.is_empty()
                || rest
                    .iter()
                    .any(|s| s.text.contains("crosstenant") || s.text.contains("deleteditems"));
        }
        _ => {}
    }
    reach
}

/// Percent-decode (and, with `unicode`, `%uXXXX`-decode) until nothing changes (bounded),
/// reading bytes as leniently as the oldest stacks did: see [`lenient_utf8`]. With `normalise`,
/// each round also reads invalid UTF-8 bytes as Latin-1 (`%A0` is a no-break space to such a
/// stack), applies NFKC and deletes whitespace, control and invisible characters (NFKC can
/// produce new escapes: `％２４` is `%24`).
fn decode_fully(raw: &str, unicode: bool, normalise: bool) -> String {
    let mut text = raw.to_owned();
    for _ in 0..LOOSE_DECODE_ROUNDS {
        let escaped = if unicode {
            decode_unicode_escapes(&text)
        } else {
            text.clone()
        };
        let bytes: Vec<u8> = percent_encoding::percent_decode(escaped.as_bytes()).collect();
        let mut next = lenient_utf8(&bytes, normalise);
        if normalise {
            next = next
                .nfkc()
                .filter(|&c| !(c.is_whitespace() || c.is_control() || url::is_invisible(c)))
                .collect();
        }
        if next == text {
            break;
        }
        text = next;
    }
    text
}

/// `%uXXXX` → the character (IIS's non-standard escape); anything else unchanged.
fn decode_unicode_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['%']) {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        let decoded = candidate
            .get(1..6)
            .filter(|e| e.starts_with(['u', 'U']))
            .and_then(|e| u32::from_str_radix(&e[1..], 16).ok())
            .and_then(char::from_u32);
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &candidate[6..];
            }
            None => {
                out.push('%');
                rest = &candidate[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// UTF-8 decoding as a lenient stack might do it: overlong encodings of ASCII (`C0 AE` for `.`,
/// `C0 AF` for `/`) become that ASCII character, and any other invalid byte becomes `/`, the
/// most dangerous reading (so it can only make a path look *more* relevant), or with `latin1`
/// the Latin-1 character of that byte.
fn lenient_utf8(bytes: &[u8], latin1: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                break;
            }
            Err(error) => {
                let (valid, invalid) = rest.split_at(error.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let fallback = match invalid.first() {
                    Some(&b) if latin1 => char::from(b),
                    _ => '/',
                };
                let (c, used) = overlong_ascii(invalid).unwrap_or((fallback, 1));
                out.push(c);
                rest = &invalid[used..];
            }
        }
    }
    out
}

/// An overlong 2- or 3-byte encoding of an ASCII character at the start of `bytes`.
fn overlong_ascii(bytes: &[u8]) -> Option<(char, usize)> {
    let continuation = |b: &u8| b & 0xC0 == 0x80;
    match bytes {
        [lead @ (0xC0 | 0xC1), b1, ..] if continuation(b1) => {
            let code = (u32::from(lead & 0x1F) << 6) | u32::from(b1 & 0x3F);
            char::from_u32(code).map(|c| (c, 2))
        }
        [0xE0, b1, b2, ..] if continuation(b1) && continuation(b2) && *b1 < 0xA0 => {
            let code = (u32::from(b1 & 0x3F) << 6) | u32::from(b2 & 0x3F);
            char::from_u32(code).map(|c| (c, 3))
        }
        _ => None,
    }
}

/// Dot segments resolved as RFC 3986 does, empty segments dropped.
fn resolve_dots(segments: &[Loose]) -> Vec<Loose> {
    let mut out: Vec<Loose> = Vec::new();
    for segment in segments {
        if segment.name == ".." {
            out.pop();
        } else if !segment.is_empty() && !segment.is_dot() {
            out.push(segment.clone());
        }
    }
    out
}

/// Dot and empty segments dropped without resolving (a stack that ignores them).
fn drop_dots(segments: &[Loose]) -> Vec<Loose> {
    segments
        .iter()
        .filter(|s| !s.is_empty() && !s.is_dot())
        .cloned()
        .collect()
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
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        split(path).expect("canonical split")
    }

    #[test]
    fn split_decodes_each_segment_once_and_drops_one_trailing_slash() {
        assert_eq!(segs("/v1.0/pol%69cies/"), ["v1.0", "policies"]);
        assert_eq!(segs("/"), Vec::<String>::new());
        assert_eq!(segs("/%24batch"), ["$batch"]);
    }

    #[test]
    fn split_reports_every_kind_of_trick_with_its_segment_number() {
        let cases = [
            ("/v1.0//policies", Trick::EmptySegment(2)),
            ("/v1.0/policies//", Trick::EmptySegment(3)),
            ("/v1.0/./policies", Trick::DotSegment(2)),
            ("/v1.0/%2e%2E/policies", Trick::DotSegment(2)),
            ("/v1.0/a%2Fb", Trick::EncodedSlash(2)),
            ("/v1.0/a%5cb", Trick::EncodedSlash(2)),
            ("/v1.0/a\\b", Trick::EncodedSlash(2)),
            ("/v1.0/%2570olicies", Trick::DoubleEncoded(2)),
            ("/v1.0/%ff", Trick::InvalidUtf8(2)),
            ("/v1.0/%u0070olicies", Trick::UnicodeEscape(2)),
            ("/v1.0/%25U0070olicies", Trick::UnicodeEscape(2)),
        ];
        for (path, trick) in cases {
            assert_eq!(split(path), Err(trick), "{path}");
        }
    }

    #[test]
    fn a_lone_percent_sign_is_not_double_encoding() {
        assert_eq!(segs("/v1.0/100%25"), ["v1.0", "100%"]);
        assert_eq!(segs("/v1.0/%25zz"), ["v1.0", "%zz"]);
    }

    #[test]
    fn reach_sees_policies_and_batch_through_any_encoding() {
        let governed = [
            "/v1.0/policies/crossTenantAccessPolicy",
            "/BETA/POLICIES/deletedItems",
            "/v1.0/policies",
            "/v1.0/%2570olicies/crossTenantAccessPolicy",
            "/v1.0/policies/x/../crossTenantAccessPolicy",
            "/v1.0/policies/crossTenantAccessPolicy/../authorizationPolicy",
            "/x/../v1.0/policies/crosstenantaccesspolicy",
            "//v1.0//policies//crossTenantAccessPolicy",
            "/v1.0/pol%C4%B1cies/crossTenantAccessPolicy",
            "/v1.0/policies/microsoft.graph.policyRoot/crossTenantAccessPolicy",
            "/v1.0/policies/microsoft.graph.policyRoot",
            "/v1.0/policies./crossTenantAccessPolicy;x=1",
            "/v1.0/%20policies%20/crossTenantAccessPolicy()",
            "/v1.0\\policies\\crossTenantAccessPolicy",
            "/v1.0/policies/graph.crossTenantIdentitySyncPolicy",
            "/v1.0/%u0070olicies/crossTenantAccessPolicy",
            "/v1.0/users/%C0%AE%C0%AE/policies/crossTenantAccessPolicy",
            "/v1.0/users/%E0%80%AE./policies/crossTenantAccessPolicy",
            "/v1.0/policies%C0%AFcrossTenantAccessPolicy",
            "/v1.0/policies%FFcrossTenantAccessPolicy",
        ];
        for path in governed {
            let r = reach(path, false);
            assert!(r.governed && r.policies, "{path}: {r:?}");
        }
        let forwarded = [
            "/v1.0/users",
            "/v1.0/policies/authorizationPolicy",
            "/v1.0/me/drive/root:/policies/crossTenant.txt:/content",
            "/policies/crossTenantAccessPolicy",
            "/v2.0/policies/crossTenantAccessPolicy",
            "/v1.0/users/v1.0/policies/crossTenantAccessPolicy",
        ];
        for path in forwarded {
            assert!(!reach(path, false).governed, "{path}");
        }
        assert!(reach("/v1.0/users/v1.0/policies/crossTenantAccessPolicy", true).governed);
        // A segment that is only a key or parameters vanishes for a lenient reader.
        for path in [
            "/v1.0/('9c5d131d-b1c3-4fc4-9e3f-c6557947d551')/policies/crossTenantAccessPolicy",
            "/v1.0/;x=1/policies/crossTenantAccessPolicy",
            "/v1.0/()/$batch",
        ] {
            let r = reach(path, false);
            assert!(r.governed || r.batch, "{path}: {r:?}");
        }
        assert!(reach("/v1.0/%2524batch", false).batch);
        assert!(reach("/v1.0/$BATCH", false).batch);
        assert!(!reach("/v1.0/users/$batch", false).batch);
    }

    #[test]
    fn canonical_form_lower_cases_names_and_keys_and_strips_the_namespace() {
        let path = canonicalize(
            &segs("/V1.0/Policies/CrossTenantAccessPolicy/Partners/9C5D131D-B1C3-4FC4-9E3F-C6557947D551/microsoft.graph.IdentitySynchronization"),
            None,
        )
        .unwrap();
        assert_eq!(
            path.to_string(),
            "/v1.0/policies/crosstenantaccesspolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitysynchronization"
        );
    }

    #[test]
    fn every_key_form_becomes_its_own_segment() {
        let k = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
        let up = k.to_ascii_uppercase();
        let cases = [
            (
                format!("/beta/policies/deletedItems/crossTenantPartners('{up}')"),
                None,
            ),
            (
                format!("/beta/policies/deletedItems/crossTenantPartners({k})"),
                None,
            ),
            (
                format!("/beta/policies/deletedItems/crossTenantPartners(tenantId='{k}')"),
                None,
            ),
            (
                format!("/beta/policies/deletedItems/crossTenantPartners(TENANTID = '{k}')"),
                None,
            ),
            (
                "/beta/policies/deletedItems/crossTenantPartners(@a)".to_owned(),
                Some(format!("@a='{k}'")),
            ),
            (
                "/beta/policies/deletedItems/crossTenantPartners(tenantId=@p)".to_owned(),
                Some(format!("x=1&@p={up}")),
            ),
            (
                format!("/beta/policies/deletedItems/crossTenantPartners/{up}"),
                None,
            ),
        ];
        for (path, query) in cases {
            let canonical = canonicalize(&segs(&path), query.as_deref()).unwrap();
            assert_eq!(
                canonical.to_string(),
                format!("/beta/policies/deleteditems/crosstenantpartners/{k}"),
                "{path}"
            );
        }
    }

    #[test]
    fn malformed_or_missing_keys_are_bad_keys() {
        let bad = [
            (
                "/v1.0/policies/crossTenantAccessPolicy/partners/contoso.com",
                None,
            ),
            (
                "/v1.0/policies/crossTenantAccessPolicy/partners/{9c5d131d-b1c3-4fc4-9e3f-c6557947d551}",
                None,
            ),
            (
                "/v1.0/policies/crossTenantAccessPolicy/partners/9c5d131db1c34fc49e3fc6557947d551",
                None,
            ),
            ("/v1.0/policies/crossTenantAccessPolicy/partners('x')", None),
            ("/v1.0/policies/crossTenantAccessPolicy/partners()", None),
            (
                "/v1.0/policies/crossTenantAccessPolicy/partners(id='9c5d131d-b1c3-4fc4-9e3f-c6557947d551')",
                None,
            ),
            ("/v1.0/policies/crossTenantAccessPolicy/partners(@a)", None),
            (
                "/v1.0/policies/crossTenantAccessPolicy/partners(@a)",
                Some("@b='9c5d131d-b1c3-4fc4-9e3f-c6557947d551'"),
            ),
            (
                "/v1.0/policies/crossTenantAccessPolicy/partners(@a)",
                Some(
                    "@a='9c5d131d-b1c3-4fc4-9e3f-c6557947d551'&@a='00000000-0000-0000-0000-000000000000'",
                ),
            ),
            (
                "/v1.0/policies/crossTenantAccessPolicy/partners(@a)",
                Some(
                    "@A='00000000-0000-0000-0000-000000000000'&@a='9c5d131d-b1c3-4fc4-9e3f-c6557947d551'",
                ),
            ),
        ];
        for (path, query) in bad {
            assert!(
                matches!(canonicalize(&segs(path), query), Err(CanonError::BadKey(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn system_segments_and_operations_at_the_key_position_are_not_keys() {
        let path = canonicalize(
            &segs("/v1.0/policies/crossTenantAccessPolicy/partners/$count"),
            None,
        )
        .unwrap();
        assert_eq!(path.segments.last().unwrap(), "$count");
        let path = canonicalize(
            &segs("/v1.0/policies/crossTenantAccessPolicy/partners/microsoft.graph.delta()"),
            None,
        );
        assert!(matches!(path, Err(CanonError::NotCanonical(_))));
    }

    #[test]
    fn expand_is_recognised_with_or_without_dollar_and_in_any_case() {
        assert!(expands_sync(Some("$expand=identitySynchronization")));
        assert!(expands_sync(Some(
            "expand=IdentitySynchronization&$select=tenantId"
        )));
        assert!(expands_sync(Some("%24expand=%2A")));
        assert!(!expands_sync(Some("$select=identitySynchronization")));
        assert!(!expands_sync(None));
    }
}
