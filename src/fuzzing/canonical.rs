//! Target 1: the canonicaliser and classifier, checked against the [`loose`] reading (see the
//! module above for why the oracle is not syncgate's own reader).

use http::{HeaderMap, Method};

use super::{Finding, UrlInput, finding, loose, reachable, report, split_target, trick};
use crate::classify::{self, Classification};

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
pub(super) fn check_idempotent(
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
