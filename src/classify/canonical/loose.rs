//! The loose reading of a request path: "could this reach `/policies`, a governed subtree or
//! `$batch` under some reading?". Deliberately generous (it decodes, folds and normalises more
//! than any stack plausibly does) and used only to decide whether a path is relevant, never to
//! name a resource; see the parent module for why there are two readings.

use unicode_normalization::UnicodeNormalization;

use super::{NAMESPACE_PREFIXES, url};

/// How many decoding rounds the loose reading applies; more than any stack would.
const LOOSE_DECODE_ROUNDS: usize = 8;

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
    if reaches_nothing(raw_path) {
        return Reach::default();
    }
    full_reach(raw_path, anywhere)
}

/// Whether [`reach`] of `raw_path` is nothing, told without reading it: the path reads as
/// written (see [`reads_as_written`]) and holds neither `policies` nor `$batch` in any case.
/// Exact, not a guess: every reading that reaches something has a segment whose name is one of
/// the two, and on such a path a name is a lower-cased piece of the path's own text (nothing is
/// decoded, and dot segments only remove segments). Most Graph traffic is such, and pays for
/// no reading at all (issue 13).
pub(crate) fn reaches_nothing(raw_path: &str) -> bool {
    let holds = |needle: &[u8]| {
        raw_path
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
    };
    reads_as_written(raw_path) && !holds(b"policies") && !holds(b"$batch")
}

/// [`reach`] by reading every way.
fn full_reach(raw_path: &str, anywhere: bool) -> Reach {
    let mut reach = Reach::default();
    // With and without `%u` escapes: decoding one can swallow the letters of a governed name
    // that a stack without them would see (`crossTen%u007crossTenant…`). With and without
    // Unicode compatibility normalisation and the deletion of whitespace, controls and invisible
    // characters: a stack that applies NFKC reads `％24batch` or `ｐolicies` as ASCII, and WHATWG
    // URL parsing deletes TAB, CR and LF anywhere (`pol<TAB>icies`).
    let readings: Vec<String> = if reads_as_written(raw_path) {
        // Every reading is the path itself (no escape to decode, nothing NFKC changes, nothing
        // to delete): judged once, without the four decodings.
        vec![raw_path.to_owned()]
    } else {
        let mut readings = Vec::with_capacity(4);
        for unicode in [false, true] {
            for normalise in [false, true] {
                let decoded = decode_fully(raw_path, unicode, normalise).replace('\\', "/");
                // Most paths read the same every way: judge each distinct reading once.
                if !readings.contains(&decoded) {
                    readings.push(decoded);
                }
            }
        }
        readings
    };
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

/// Case folding as .NET's ordinal-ignore-case compares: upper-case, then lower-case. On ASCII
/// that is ASCII lower-casing (checked on every character by a test), without the Unicode tables.
fn fold(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
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

/// Whether every loose reading of `raw_path` is `raw_path` itself: printable ASCII without `%`
/// (no escape of either kind) or `\\` (read as `/`). NFKC leaves ASCII as it is, and printable
/// ASCII holds no whitespace, control or invisible character. Most Graph paths are such; the
/// pass-through path skips [`decode_fully`]'s four passes for them (issue 13).
fn reads_as_written(raw_path: &str) -> bool {
    raw_path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'\\')
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

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    #[test]
    fn a_path_that_reaches_nothing_is_told_exactly() {
        // Every path of up to four pieces from these, in both readings: whenever the shortcut
        // says "nothing", the full reading agrees; and it does say so for ordinary paths.
        let pieces = [
            "/",
            "v1.0",
            "BETA",
            "policies",
            "POLICIES",
            "PoLiCiEs",
            "$batch",
            "$BATCH",
            ".",
            "..",
            "(",
            ";x=1",
            "microsoft.graph.",
            "users",
            "crossTenantAccessPolicy",
            "polic",
            "ies",
            "$bat",
            "ch",
            " ",
            "v1.0/",
            "/policies",
            "/$batch",
        ];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            paths = paths
                .iter()
                .flat_map(|p| pieces.iter().map(move |piece| format!("{p}{piece}")))
                .collect();
            for path in &paths {
                let path = format!("/{path}");
                if reaches_nothing(&path) {
                    for anywhere in [false, true] {
                        assert_eq!(full_reach(&path, anywhere), Reach::default(), "{path:?}");
                    }
                }
            }
        }
        assert!(reaches_nothing(
            "/v1.0/users/00000000-0000-4000-8000-000000000000"
        ));
        assert!(reaches_nothing("/beta/me/messages?$top=5"));
        for reaching in [
            "/v1.0/policies",
            "/v1.0/$BATCH",
            "/v1.0/polic%69es",
            "/v1.0\\policies",
        ] {
            assert!(!reaches_nothing(reaching), "{reaching}");
        }
        assert!(
            !reaches_nothing("/v1.0/ｐolicies"),
            "not ASCII: read every way"
        );
    }

    /// The shortcut in [`reach`] is sound only if each of the four readings it skips is the path
    /// itself. Checked on every printable ASCII character alone and in pairs, and on paths made
    /// of them (including the governed names, so a mistake would change a verdict).
    #[test]
    fn a_path_that_reads_as_written_decodes_to_itself_every_way() {
        let printable: Vec<char> = (0x21u8..=0x7e).map(char::from).collect();
        let mut paths: Vec<String> = Vec::new();
        for &a in &printable {
            paths.push(format!("/v1.0/{a}"));
            for &b in &printable {
                paths.push(format!("/{a}{b}/policies"));
            }
        }
        paths.extend(
            [
                "/v1.0/policies/crossTenantAccessPolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitySynchronization",
                "/beta/$batch",
                "/v1.0/policies/crossTenantAccessPolicy/partners('x')/identitySynchronization",
                "/v1.0/./policies/../policies//crossTenantAccessPolicy",
                "/v1.0/users?$select=id",
            ]
            .map(str::to_owned),
        );
        let mut checked = 0;
        for path in &paths {
            if !reads_as_written(path) {
                continue;
            }
            for unicode in [false, true] {
                for normalise in [false, true] {
                    assert_eq!(
                        decode_fully(path, unicode, normalise).replace('\\', "/"),
                        *path,
                        "unicode={unicode} normalise={normalise}"
                    );
                }
            }
            checked += 1;
        }
        assert!(checked > 8000, "only {checked} paths checked");
        // fold's ASCII shortcut agrees with the full folding on every ASCII character.
        for byte in 0u8..=0x7f {
            let c = char::from(byte);
            let full: String = c.to_uppercase().flat_map(char::to_lowercase).collect();
            assert_eq!(fold(&c.to_string()), full, "{c:?}");
        }
        for tricky in [
            "/v1.0/%70olicies",
            "/v1.0\\policies",
            "/v1.0/ｐolicies",
            "/a b",
            "/a\tb",
        ] {
            assert!(!reads_as_written(tricky), "{tricky}");
        }
    }
}
