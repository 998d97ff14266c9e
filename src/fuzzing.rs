//! Property checks for fuzzing syncgate's request readers (issue 7, item 7).
//!
//! Each public function takes arbitrary bytes and panics, with a message starting
//! `finding[<class>]:`, when a property that protects the audit promise fails. They live in the
//! library, not in `fuzz/`, so that the very same checks run three ways: under libFuzzer
//! (`fuzz/fuzz_targets/*.rs` are one-liners calling them), over the committed corpora and a short
//! deterministic mutation run in `cargo test` (`tests/fuzz_smoke.rs`), and in the unit tests
//! below, which pin what each oracle flags. `docs/fuzzing.md` describes the targets and figures.
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

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::classify::{
    self, ApiVersion, Batch, BodyRule, Classification, Governed, OperationKind, TenantId,
};
use crate::emulator::api::{self, Op};
use crate::emulator::path::{self, Resource, Version};

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

// ---------------------------------------------------------------------------------------------
// Target 1: the canonicaliser and classifier.

/// `METHOD\0TARGET\0Header: value\0…`: [`classify::classify`] never panics; a governed write or
/// recorded read re-classifies identically from its canonical path; and nothing the [`loose`]
/// reading takes for a write to a governed subtree or to `$batch` is forwarded.
pub fn canonicaliser(data: &[u8]) {
    report(check_canonicaliser(data));
}

/// [`canonicaliser`], returning the finding instead of panicking.
pub fn check_canonicaliser(data: &[u8]) -> Result<(), Finding> {
    let Some(input) = UrlInput::parse(data) else {
        return Ok(());
    };
    let (path, query) = split_target(&input.target);
    let verdict = classify::classify(&input.method, path, query, &input.headers);
    check_idempotent(&input.method, path, query, &input.headers, &verdict)?;
    // Request targets reach `classify` as `uri.path()`, which always starts with `/`; other
    // strings only come from `$batch` after normalisation, which the batch target covers.
    if !path.starts_with('/') || !matches!(verdict, Classification::Forward) {
        return Ok(());
    }
    if let Some(what) = loose::write_target(input.method.as_str(), path, loose::Version::Required) {
        return Err(finding(
            format!(
                "loose-forwarded/{}",
                trick(input.method.as_str(), path, &what)
            ),
            format!(
                "{} {:?} (query {query:?}) reads loosely as {what}, but classify() forwards it \
                 unchecked{}",
                input.method,
                path,
                reachable(&input.target)
            ),
        ));
    }
    Ok(())
}

/// A governed or recorded request's canonical path names the same operation again.
fn check_idempotent(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    verdict: &Classification,
) -> Result<(), Finding> {
    let (Classification::Governed(governed) | Classification::SyncRead(governed)) = verdict else {
        return Ok(());
    };
    if governed.method != *method {
        return Err(finding(
            "governed-method-changed",
            format!("{method} {path:?} was governed as {}", governed.method),
        ));
    }
    let canonical = governed.path.to_string();
    let again = classify::classify(method, &canonical, query, headers);
    if &again != verdict {
        return Err(finding(
            "canonical-not-idempotent",
            format!(
                "{method} {path:?} → {verdict:?}, but its canonical path {canonical:?} → {again:?}"
            ),
        ));
    }
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// Target 2: the strict body reader.

/// The Content-Types the body and batch targets choose from; the first three are JSON.
const BODY_CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("Application/JSON;charset=\"UTF8\""),
    None,
    Some("text/plain"),
    Some("application/json; charset=utf-16"),
];

/// One selector byte (rule = `s % 4`, version = `s / 4 % 2`, Content-Type = `s / 8 % 6`; so
/// `'0'`…`'7'` are every rule × version with `application/json`), then the body.
/// [`classify::parse_body`] never panics; whatever it accepts is one JSON object that serde_json
/// reads to the same value with no duplicate member names, that re-parses identically from its
/// serialisation, and that [`classify::check_body`] accepts unchanged.
pub fn body_reader(data: &[u8]) {
    report(check_body_reader(data));
}

/// [`body_reader`], returning the finding instead of panicking.
pub fn check_body_reader(data: &[u8]) -> Result<(), Finding> {
    let Some((&selector, body)) = data.split_first() else {
        return Ok(());
    };
    let rule = [
        BodyRule::Empty,
        BodyRule::Sync,
        BodyRule::Partner,
        BodyRule::Template,
    ][usize::from(selector % 4)];
    let version = if selector / 4 % 2 == 0 {
        ApiVersion::V1_0
    } else {
        ApiVersion::Beta
    };
    let content_index = usize::from(selector / 8) % BODY_CONTENT_TYPES.len();
    let content_type = BODY_CONTENT_TYPES[content_index];
    let about = || format!("{rule:?} {version} {content_type:?} {:?}", lossy(body));
    let value = match classify::parse_body(rule, version, content_type, body) {
        Err(_) => return Ok(()),
        Ok(None) if rule == BodyRule::Empty => {
            if body
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            {
                return Ok(());
            }
            return Err(finding(
                "body-empty-rule-accepted-content",
                format!("{}: accepted as no body", about()),
            ));
        }
        Ok(None) => {
            return Err(finding(
                "body-missing-accepted",
                format!("{}: accepted as no body", about()),
            ));
        }
        Ok(Some(value)) => value,
    };
    if rule == BodyRule::Empty || content_index > 2 || !value.is_object() {
        return Err(finding(
            "body-accepted-wrongly",
            format!("{}: accepted as {value}", about()),
        ));
    }
    check_json_agrees(body, &value).map_err(|why| finding("body-json-disagrees", why))?;
    let serialised = serde_json::to_vec(&value).unwrap_or_default();
    match classify::parse_body(rule, version, content_type, &serialised) {
        Ok(Some(again)) if again == value => {}
        other => {
            // serde_json's default float parser is not correctly rounded: a float may re-parse
            // one unit in the last place away from the value it was serialised from.
            let class = if has_float(&value) {
                "body-not-reparsable/float"
            } else {
                "body-not-reparsable"
            };
            return Err(finding(
                class,
                format!(
                    "{}: accepted as {value}, but its serialisation re-parses as {other:?}",
                    about()
                ),
            ));
        }
    }
    match classify::check_body(rule, version, content_type, Some(&value)) {
        Ok(Some(checked)) if checked == value => Ok(()),
        other => Err(finding(
            "body-check-disagrees",
            format!(
                "{}: parse_body accepted {value}, check_body answered {other:?}",
                about()
            ),
        )),
    }
}

/// Whether a JSON value holds a number that is neither an i64 nor a u64.
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => !(n.is_i64() || n.is_u64()),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(members) => members.values().any(has_float),
        _ => false,
    }
}

/// serde_json reads `bytes` as valid JSON, to `value`, and no object in it repeats a member name.
fn check_json_agrees(bytes: &[u8], value: &Value) -> Result<(), String> {
    let independent: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("accepted {:?}, which serde_json refuses: {e}", lossy(bytes)))?;
    if &independent != value {
        return Err(format!(
            "accepted {:?} as {value}, serde_json reads {independent}",
            lossy(bytes)
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match NoDuplicates.deserialize(&mut deserializer) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "accepted {:?}, which repeats a member name",
            lossy(bytes)
        )),
        Err(e) => Err(format!(
            "accepted {:?}, which serde_json cannot walk: {e}",
            lossy(bytes)
        )),
    }
}

/// A serde visitor answering "does no object anywhere repeat a member name?".
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut unique = true;
        while let Some(item) = seq.next_element_seed(NoDuplicates)? {
            unique &= item;
        }
        Ok(unique)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = HashSet::new();
        let mut unique = true;
        while let Some(name) = map.next_key::<String>()? {
            unique &= seen.insert(name);
            unique &= map.next_value_seed(NoDuplicates)?;
        }
        Ok(unique)
    }
}

/// Bytes as text for a message (lossy, bounded).
fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(2_000).collect()
}

// ---------------------------------------------------------------------------------------------
// Target 3: the `$batch` parser.

/// The Content-Types the batch target chooses from: `s / 2 % 4` of the selector byte.
const BATCH_CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    None,
    Some("multipart/mixed; boundary=b"),
];

/// One selector byte (version = `s % 2`: `'0'` is v1.0, `'1'` beta; Content-Type = `s / 2 % 4`),
/// then the batch body. [`classify::parse_batch`] never panics, and for a batch it accepts:
/// serde_json agrees the body is JSON without duplicate names; the execution order honours
/// `dependsOn`; every sub-request's `normalized_url` classifies alone exactly as stored; and no
/// sub-request that the [`loose`] reading or the emulator takes for a governed write (or a
/// nested `$batch`) is classified as forwardable.
pub fn batch_parser(data: &[u8]) {
    report(check_batch_parser(data));
}

/// [`batch_parser`], returning the finding instead of panicking.
pub fn check_batch_parser(data: &[u8]) -> Result<(), Finding> {
    let Some((&selector, body)) = data.split_first() else {
        return Ok(());
    };
    let version = if selector % 2 == 0 {
        ApiVersion::V1_0
    } else {
        ApiVersion::Beta
    };
    let content_type = BATCH_CONTENT_TYPES[usize::from(selector / 2) % BATCH_CONTENT_TYPES.len()];
    let Ok(batch) = classify::parse_batch(version, content_type, body) else {
        return Ok(());
    };
    let envelope: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    check_json_agrees(body, &envelope).map_err(|why| finding("batch-json-disagrees", why))?;
    if content_type.is_none_or(|c| !c.starts_with("application/json")) {
        return Err(finding(
            "batch-content-type-accepted",
            format!("a batch with Content-Type {content_type:?} was accepted"),
        ));
    }
    let entries = envelope
        .get("requests")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if batch.requests.is_empty()
        || batch.requests.len() > classify::MAX_BATCH_REQUESTS
        || batch.requests.len() != entries.len()
    {
        return Err(finding(
            "batch-count",
            format!(
                "accepted {} sub-requests from {} entries: {:?}",
                batch.requests.len(),
                entries.len(),
                lossy(body)
            ),
        ));
    }
    check_order(&batch)?;
    for (request, entry) in batch.requests.iter().zip(entries) {
        let sent_method = entry.get("method").and_then(Value::as_str).unwrap_or("");
        check_sub_request(version, request, sent_method)?;
    }
    let governed = batch.requests.iter().any(|r| {
        !matches!(
            r.classification,
            Classification::Forward | Classification::SyncRead(_)
        )
    });
    if governed != batch.is_governed() {
        return Err(finding(
            "batch-is-governed-wrong",
            format!(
                "is_governed() is {} for {:?}",
                batch.is_governed(),
                lossy(body)
            ),
        ));
    }
    Ok(())
}

/// `order` is a permutation of the requests in which each request comes after what it depends on.
fn check_order(batch: &Batch) -> Result<(), Finding> {
    let mut done = vec![false; batch.requests.len()];
    for &index in &batch.order {
        let request = batch
            .requests
            .get(index)
            .ok_or_else(|| finding("batch-order", format!("order names request {index}")))?;
        let ready = request
            .depends_on
            .iter()
            .all(|dep| batch.position(dep).is_some_and(|d| done[d]));
        if done[index] || !ready {
            return Err(finding(
                "batch-order",
                format!(
                    "order {:?} runs '{}' too early or twice",
                    batch.order, request.id
                ),
            ));
        }
        done[index] = true;
    }
    if done.iter().all(|d| *d) {
        Ok(())
    } else {
        Err(finding(
            "batch-order",
            format!("order {:?} misses requests", batch.order),
        ))
    }
}

fn check_sub_request(
    version: ApiVersion,
    request: &classify::BatchRequest,
    sent_method: &str,
) -> Result<(), Finding> {
    let about = || {
        format!(
            "sub-request '{}' {sent_method:?} {:?} (normalised {:?}) → {:?}",
            request.id, request.url, request.normalized_url, request.classification
        )
    };
    // Classified alone, the normalised sub-request is what the batch says it is.
    let (path, query) = split_target(&request.normalized_url);
    let headers = sub_request_headers(request);
    let alone = classify::classify(&request.method, path, query, &headers);
    if alone != request.classification {
        return Err(finding(
            "batch-reclassify-differs",
            format!("{}, but classified alone → {alone:?}", about()),
        ));
    }
    if let Classification::Governed(_) | Classification::SyncRead(_) = &request.classification {
        check_idempotent(
            &request.method,
            path,
            query,
            &headers,
            &request.classification,
        )?;
    }
    // The body check of a governed sub-request must not panic, and yields an object.
    if let Ok(Some(body)) = request.checked_body()
        && !body.is_object()
    {
        return Err(finding(
            "batch-body-not-object",
            format!("{}: checked body {body}", about()),
        ));
    }
    let forwarded = matches!(
        request.classification,
        Classification::Forward | Classification::SyncRead(_)
    );
    if !forwarded {
        return Ok(());
    }
    if let Some(what) = loose::write_target(sent_method, &request.url, loose::Version::Optional) {
        return Err(finding(
            format!(
                "loose-forwarded/{}",
                trick(sent_method, &request.url, &what)
            ),
            format!(
                "{} reads loosely as {what}, but the batch forwards it unchecked",
                about()
            ),
        ));
    }
    if let Some(expected) = emulated_sub_request(version, sent_method, &request.url)
        && !matches!(expected, Emulated::Batch(_))
    {
        let class = match expected {
            Emulated::BelowPartner(..) => "batch-emulator-write-forwarded/partner-subnav",
            _ => "batch-emulator-write-forwarded",
        };
        return Err(finding(
            class,
            format!(
                "{}: the emulator would run it as {expected:?}, but the batch forwards it \
                 unchecked",
                about()
            ),
        ));
    }
    Ok(())
}

/// A sub-request's headers as [`classify::classify`] reads them (the batch parser refused the
/// batch if any were not valid header names and values).
fn sub_request_headers(request: &classify::BatchRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let parsed = value.as_str().and_then(|v| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        });
        if let Some((name, value)) = parsed {
            headers.append(name, value);
        }
    }
    headers
}

/// What the emulator would do with a `$batch` entry, read the way `emulator/batch.rs` reads one:
/// absolute URLs (`://`) fail the batch, the method is upper-cased, one leading `/` is dropped
/// and the batch's version prefixed.
fn emulated_sub_request(version: ApiVersion, method: &str, url: &str) -> Option<Emulated> {
    if url.contains("://") {
        return None;
    }
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).ok()?;
    let relative = url.strip_prefix('/').unwrap_or(url);
    let (path, _) = split_target(relative);
    emulated(&method, &format!("/{version}/{path}"))
}

// ---------------------------------------------------------------------------------------------
// Target 4: the classifier against the emulator.

/// How often each pair of readings occurred, over every [`differential`] input so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DifferentialCounts {
    /// Inputs with a method and a `/`-rooted target.
    pub inputs: u64,
    /// The emulator runs a governed write and syncgate governs it as the same operation.
    pub both_govern: u64,
    /// The emulator runs a governed write (or a write below a partner) and syncgate refuses it:
    /// safe, but a request Graph would have served is refused.
    pub refused_emulator_write: u64,
    /// The emulator runs `$batch` and syncgate parses it as a batch.
    pub both_batch: u64,
    /// syncgate governs or refuses a request the emulator does not run as a governed write
    /// (refusing is safe; these are counted, not flagged).
    pub syncgate_only: u64,
    /// Neither sees a governed write.
    pub neither: u64,
}

static COUNTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// The counts accumulated by [`differential`] in this process.
pub fn differential_counts() -> DifferentialCounts {
    let get = |i: usize| COUNTS[i].load(Ordering::Relaxed);
    DifferentialCounts {
        inputs: get(0),
        both_govern: get(1),
        refused_emulator_write: get(2),
        both_batch: get(3),
        syncgate_only: get(4),
        neither: get(5),
    }
}

fn count(index: usize) {
    COUNTS[index].fetch_add(1, Ordering::Relaxed);
}

/// `METHOD\0TARGET`: when the emulator (standing in for Graph) would run the request as a write
/// to a partner, a sync policy, the template or a deleted item, or as `$batch`, syncgate must
/// govern it as the same operation on the same partner and version, or refuse it. A write the
/// emulator does not model but routes below a partner (`partners/{k}/m365Capabilities`) must not
/// be forwarded either. The reverse (syncgate refuses what the emulator would not change) is
/// safe and only counted ([`differential_counts`]).
pub fn differential(data: &[u8]) {
    report(check_differential(data));
}

/// [`differential`], returning the finding instead of panicking.
pub fn check_differential(data: &[u8]) -> Result<(), Finding> {
    let Some(input) = UrlInput::parse(data) else {
        return Ok(());
    };
    let (path, query) = split_target(&input.target);
    if !path.starts_with('/') {
        return Ok(());
    }
    count(0);
    let expected = emulated(&input.method, path);
    let verdict = classify::classify(&input.method, path, query, &HeaderMap::new());
    compare(expected.as_ref(), &verdict).map_err(|class| {
        finding(
            class,
            format!(
                "{} {:?}: the emulator runs {expected:?}, syncgate classifies {verdict:?}{}",
                input.method,
                input.target,
                reachable(&input.target)
            ),
        )
    })
}

/// The emulator's reading of a request, when it changes something syncgate governs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emulated {
    /// A governed operation on a partner (`None` for a partner created from its body, and for
    /// the template).
    Write(OperationKind, Option<String>, ApiVersion),
    /// `POST /{v}/$batch`.
    Batch(ApiVersion),
    /// A write to a navigation the emulator does not model, below the partner given
    /// (`…/partners/{k}/m365Capabilities`): Graph would change the partner's configuration.
    BelowPartner(String, ApiVersion),
}

/// What the emulator's parser and router make of `method` and `raw_path`: `None` for reads and
/// for anything it refuses.
pub fn emulated(method: &Method, raw_path: &str) -> Option<Emulated> {
    let segments = path::segments(raw_path).ok()?;
    let version = path::version(segments.first().map(String::as_str)).ok()?;
    let api_version = match version {
        Version::V1 => ApiVersion::V1_0,
        Version::Beta => ApiVersion::Beta,
    };
    let rest = segments.get(1..).unwrap_or_default();
    let resource = path::resource(version, rest).ok()?;
    if resource == Resource::NotEmulated {
        let write = matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
        let partner =
            (1..rest.len())
                .rev()
                .find_map(|n| match path::resource(version, &rest[..n]) {
                    Ok(Resource::Partner(id)) => Some(id.as_str().to_owned()),
                    _ => None,
                });
        return partner
            .filter(|_| write)
            .map(|id| Emulated::BelowPartner(id, api_version));
    }
    let op = api::operation(resource, method).ok()?;
    let write = |kind, id: Option<path::TenantId>| {
        Some(Emulated::Write(
            kind,
            id.map(|id| id.as_str().to_owned()),
            api_version,
        ))
    };
    match op {
        Op::Batch => Some(Emulated::Batch(api_version)),
        Op::CreatePartner => write(OperationKind::PartnerCreate, None),
        Op::UpdatePartner(id) => write(OperationKind::PartnerUpdate, Some(id)),
        Op::DeletePartner(id) => write(OperationKind::PartnerDelete, Some(id)),
        Op::CreateSync(id) => write(OperationKind::SyncCreate, Some(id)),
        Op::UpdateSync(id) => write(OperationKind::SyncUpdate, Some(id)),
        Op::DeleteSync(id) => write(OperationKind::SyncDelete, Some(id)),
        Op::UpdateTemplate => write(OperationKind::TemplateUpdate, None),
        Op::ResetTemplate => write(OperationKind::TemplateReset, None),
        Op::RestorePartner(id) => write(OperationKind::PartnerRestore, Some(id)),
        Op::PurgePartner(id) => write(OperationKind::DeletedPartnerPurge, Some(id)),
        Op::RestoreDeletedPartnerSync(id) | Op::RestoreSyncPolicy(id) => {
            write(OperationKind::SyncRestore, Some(id))
        }
        Op::PurgeSyncPolicy(id) => write(OperationKind::DeletedSyncPurge, Some(id)),
        Op::GetAccessPolicy
        | Op::ListPartners
        | Op::GetPartner(_)
        | Op::GetSync(_)
        | Op::GetTemplate
        | Op::ListDeletedPartners
        | Op::GetDeletedPartner(_)
        | Op::GetDeletedPartnerSync(_)
        | Op::ListDeletedSyncPolicies
        | Op::GetDeletedSyncPolicy(_) => None,
    }
}

/// The differential verdict: `Err(class)` when syncgate lets through, or governs as something
/// else, what the emulator would run as a governed write or a batch. Counts every pair.
pub(crate) fn compare(
    expected: Option<&Emulated>,
    verdict: &Classification,
) -> Result<(), &'static str> {
    let forwarded = matches!(
        verdict,
        Classification::Forward | Classification::SyncRead(_)
    );
    let Some(expected) = expected else {
        count(if forwarded { 5 } else { 4 });
        return Ok(());
    };
    if matches!(verdict, Classification::Refuse(_)) {
        count(2);
        return Ok(());
    }
    match (expected, verdict) {
        (Emulated::Batch(v), Classification::Batch(w)) if v == w => {
            count(3);
            Ok(())
        }
        (Emulated::Batch(_), _) if forwarded => Err("batch-forwarded"),
        (Emulated::Write(kind, partner, v), Classification::Governed(g))
            if same_operation(g, *kind, partner.as_deref(), *v) =>
        {
            count(1);
            Ok(())
        }
        (Emulated::BelowPartner(partner, v), Classification::Governed(g))
            if g.path.version == *v
                && g.partner.as_ref().map(TenantId::as_str) == Some(partner) =>
        {
            count(1);
            Ok(())
        }
        (Emulated::BelowPartner(..), _) if forwarded => Err("partner-subnav-forwarded"),
        (Emulated::Write(..), _) if forwarded => Err("differential-write-forwarded"),
        _ => Err("differential-mismatch"),
    }
}

fn same_operation(
    governed: &Governed,
    kind: OperationKind,
    partner: Option<&str>,
    version: ApiVersion,
) -> bool {
    governed.kind == kind
        && governed.path.version == version
        && governed.partner.as_ref().map(TenantId::as_str) == partner
}

// ---------------------------------------------------------------------------------------------

/// The generous URL reading the oracles use: what *some* lax stack could take a URL to mean.
pub mod loose {
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
        String::from_utf8_lossy(&percent_decode(unicode.as_bytes()).collect::<Vec<u8>>())
            .into_owned()
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
}

#[cfg(test)]
mod tests {
    use super::loose::{Version, WriteTarget, write_target};
    use super::*;

    const K: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

    fn governed(method: &str, url: &str, version: Version) -> bool {
        matches!(
            write_target(method, url, version),
            Some(WriteTarget::Governed(_))
        )
    }

    #[test]
    fn the_loose_reading_sees_governed_writes_through_the_issues_tricks() {
        let required = [
            format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
            "/v1.0/policies/cross\ttenantAccessPolicy/partners/x".to_owned(),
            "/v1.0/poli\r\ncies/crossTenantAccessPolicy".to_owned(),
            "/V1.0./%2570olicies/crossTenantAccessPolicy(x)/partners".to_owned(),
            "/x/../v1.0/policies/microsoft.graph.policyRoot/deletedItems".to_owned(),
            "//host/v1.0/policies/crossTenantIdentitySyncPolicy".to_owned(),
            "/v1.0/%u0070olicies/crossTenantAccessPolicy%20/partners".to_owned(),
            format!("/beta/policies/crossTenantAccessPolicy/partners/{K}/m365Capabilities"),
        ];
        for url in &required {
            assert!(governed("PATCH", url, Version::Required), "{url}");
        }
        let optional = [
            "x:/v1.0/policies/crossTenantAccessPolicy/partners/x",
            "https:v1.0/policies/crossTenantAccessPolicy/partners/x",
            "https:/v1.0/policies/crossTenantAccessPolicy/partners/x",
            " /policies/crossTenantAccessPolicy/partners/x",
            "policies/crossTenantAccessPolicy/partners/x",
            "v1.0/beta/policies/deletedItems/crossTenantPartners/x/restore",
        ];
        for url in optional {
            assert!(governed("POST", url, Version::Optional), "{url}");
        }
    }

    #[test]
    fn the_loose_reading_leaves_ordinary_and_deliberately_forwarded_requests_alone() {
        let cases = [
            ("PATCH", "/v1.0/users/x"),
            ("PATCH", "/v1.0/policies/authorizationPolicy"),
            ("PATCH", "/v1.0/policies/crossTenantAccessPolicy/default"),
            ("PATCH", "/v1.0/users/v1.0/policies/crossTenantAccessPolicy"),
            ("PATCH", "/policies/crossTenantAccessPolicy"),
            ("GET", "/v1.0/policies/crossTenantAccessPolicy/partners"),
            ("HEAD", "/v1.0/$batch"),
        ];
        for (method, url) in cases {
            assert_eq!(
                write_target(method, url, Version::Required),
                None,
                "{method} {url}"
            );
        }
    }

    #[test]
    fn methods_other_than_exact_get_and_head_count_as_writes() {
        let url = "/v1.0/$batch";
        for method in ["post", "GET ", " GET", "GET\u{a0}", "get", "HEAD\t"] {
            assert_eq!(
                write_target(method, url, Version::Required),
                Some(WriteTarget::Batch),
                "{method:?}"
            );
        }
    }

    #[test]
    fn the_emulator_reading_names_operation_partner_and_version() {
        let up = K.to_ascii_uppercase();
        let expected = emulated(
            &Method::PATCH,
            &format!(
                "/BETA/policies/crossTenantAccessPolicy/partners('{up}')/identitySynchronization"
            ),
        );
        assert_eq!(
            expected,
            Some(Emulated::Write(
                OperationKind::SyncUpdate,
                Some(K.to_owned()),
                ApiVersion::Beta
            ))
        );
        let below = emulated(
            &Method::PATCH,
            &format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}/m365Capabilities"),
        );
        assert_eq!(
            below,
            Some(Emulated::BelowPartner(K.to_owned(), ApiVersion::V1_0))
        );
        assert_eq!(
            emulated(&Method::POST, "/v1.0/$batch"),
            Some(Emulated::Batch(ApiVersion::V1_0))
        );
        // The emulator's methods are case-sensitive, and reads change nothing.
        let partner = format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}");
        assert_eq!(
            emulated(&Method::from_bytes(b"patch").unwrap(), &partner),
            None
        );
        assert_eq!(emulated(&Method::GET, &partner), None);
    }

    #[test]
    fn compare_flags_forwarded_and_misattributed_writes_and_accepts_refusals() {
        let write = Emulated::Write(
            OperationKind::SyncUpdate,
            Some(K.to_owned()),
            ApiVersion::V1_0,
        );
        assert_eq!(
            compare(Some(&write), &Classification::Forward),
            Err("differential-write-forwarded")
        );
        let refusal = classify::Refusal::bad_request("x", "y");
        assert_eq!(
            compare(Some(&write), &Classification::Refuse(refusal)),
            Ok(())
        );
        let other = "00000000-0000-0000-0000-000000000000";
        let verdict = classify::classify(
            &Method::PATCH,
            &format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners/{other}/identitySynchronization"
            ),
            None,
            &HeaderMap::new(),
        );
        assert!(matches!(verdict, Classification::Governed(_)));
        assert_eq!(
            compare(Some(&write), &verdict),
            Err("differential-mismatch")
        );
        let below = Emulated::BelowPartner(K.to_owned(), ApiVersion::V1_0);
        assert_eq!(
            compare(Some(&below), &Classification::Forward),
            Err("partner-subnav-forwarded")
        );
        assert_eq!(compare(None, &Classification::Forward), Ok(()));
    }

    #[test]
    fn the_body_oracle_refuses_duplicates_and_agrees_on_values() {
        let value = serde_json::json!({"a": 1});
        assert!(check_json_agrees(br#"{"a":1}"#, &value).is_ok());
        assert!(check_json_agrees(br#"{"a":1,"a":1}"#, &value).is_err());
        assert!(
            check_json_agrees(
                br#"{"a":{"b":1,"\u0062":1}}"#,
                &serde_json::json!({"a":{"b":1}})
            )
            .is_err()
        );
        assert!(check_json_agrees(br#"{"a":2}"#, &value).is_err());
        assert!(check_json_agrees(b"{\"a\":1} x", &value).is_err());
    }

    #[test]
    fn valid_examples_pass_every_target() {
        let sync = format!(
            "PATCH\0/v1.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"
        );
        assert_eq!(check_canonicaliser(sync.as_bytes()), Ok(()));
        assert_eq!(check_differential(sync.as_bytes()), Ok(()));
        assert_eq!(
            check_body_reader(br#"1{"userSyncInbound":{"isSyncAllowed":true}}"#),
            Ok(())
        );
        let batch = format!(
            r#"0{{"requests":[{{"id":"1","method":"PATCH","url":"/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization","headers":{{"Content-Type":"application/json"}},"body":{{"userSyncInbound":{{"isSyncAllowed":false}}}}}}]}}"#
        );
        assert_eq!(check_batch_parser(batch.as_bytes()), Ok(()));
    }
}
