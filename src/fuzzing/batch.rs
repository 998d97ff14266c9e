//! Target 3: the `$batch` parser, each sub-request checked against the [`loose`] reading and
//! the emulator's own reading of a batch entry.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::Value;

use super::body::check_json_agrees;
use super::canonical::check_idempotent;
use super::versus_emulator::{Emulated, emulated};
use super::{Finding, finding, loose, lossy, report, split_target, trick};
use crate::classify::{self, ApiVersion, Batch, Classification};

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
