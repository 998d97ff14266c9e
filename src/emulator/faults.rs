//! Injected failures: throttling, outages, slow answers and dropped connections on demand.
//!
//! A test posts a fault to `/_emulator/faults`; the next `count` Graph requests it matches answer
//! with it instead of (or, for a pure delay, before) their normal handling. Two modes model the
//! cases an auditing proxy must see through: `applyThenFail` runs the request normally and then
//! answers with the fault's error anyway (a 5xx whose change landed), and `ignoreWrite` answers
//! `204 No Content` without running it (a write Graph accepted and silently ignored).
//! `delayResponseMs` runs the request and then holds its answer, so a test can stop a caller (or a
//! proxy) after a change landed and before it heard so. A request matches when
//! its method equals `method` and its raw path-and-query starts with `path` (both compared
//! case-insensitively; an absent field matches anything). Faults match top-level
//! requests only — never `/_emulator/*`, and never `$batch` sub-requests, which share their
//! envelope's connection and cannot be dropped or delayed on their own.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::odata::Failure;
use crate::graph_error::GraphError;

/// The longest delay a fault may ask for, so a typo cannot hang a test run for hours.
const MAX_DELAY_MS: u64 = 600_000;

/// A fault as a test posts it (camelCase, unknown fields refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FaultSpec {
    method: Option<String>,
    path: Option<String>,
    count: Option<u32>,
    status: Option<u16>,
    retry_after: Option<u64>,
    delay_ms: Option<u64>,
    drop: Option<bool>,
    apply_then_fail: Option<bool>,
    ignore_write: Option<bool>,
    delay_response_ms: Option<u64>,
}

/// A pending fault; `count` is how many more requests it will hit.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Fault {
    pub(crate) id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retry_after: Option<u64>,
    pub(crate) delay_ms: u64,
    pub(crate) drop: bool,
    /// Run the request normally, then answer with `status` anyway.
    pub(crate) apply_then_fail: bool,
    /// Answer 204 without running the request.
    pub(crate) ignore_write: bool,
    /// Run the request, then hold its answer this long (the change has landed; the caller waits).
    pub(crate) delay_response_ms: u64,
}

impl Fault {
    fn matches(&self, method: &Method, target: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()));
        let path_ok = self.path.as_deref().is_none_or(|prefix| {
            target
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        });
        method_ok && path_ok
    }

    /// The error response this fault answers with, if it has a status.
    pub(crate) fn failure(&self) -> Option<Failure> {
        let status = StatusCode::from_u16(self.status?).ok()?;
        let (code, message) = match status.as_u16() {
            429 => (
                "TooManyRequests",
                "Too many requests from Identifier:emulator under category:throttle.aad.ags.emulator. Please try again later.",
            ),
            503 => (
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please try again later.",
            ),
            500 => ("generalException", "General exception while processing."),
            502 => ("badGateway", "The gateway received an invalid response."),
            504 => (
                "gatewayTimeout",
                "The gateway timed out waiting for the service.",
            ),
            401 => (
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ),
            403 => (
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
            404 => ("Request_ResourceNotFound", "Resource does not exist."),
            409 => (
                "Directory_ConcurrencyViolation",
                "A concurrency violation occurred while writing to the directory. Please retry.",
            ),
            400 => ("BadRequest", "Bad request."),
            _ => (
                "UnknownError",
                "An error was injected by the Graph emulator.",
            ),
        };
        let mut headers = HeaderMap::new();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        Some(Failure {
            error: GraphError::new(status, code, message),
            headers,
        })
    }
}

/// Why a posted fault was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FaultError {
    #[error("count must be at least 1")]
    ZeroCount,
    #[error("status must be between 400 and 599")]
    Status,
    #[error("delayMs and delayResponseMs must be at most {MAX_DELAY_MS}")]
    Delay,
    #[error("method is not an HTTP method")]
    Method,
    #[error("a fault needs at least one of status, delayMs, delayResponseMs, drop or ignoreWrite")]
    Inert,
    #[error("applyThenFail needs a status")]
    ApplyWithoutStatus,
    #[error("ignoreWrite cannot be combined with status or drop")]
    IgnoreConflict,
}

/// The pending faults, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    next_id: u64,
    pending: Vec<Fault>,
}

impl Faults {
    pub(crate) fn add(&mut self, spec: FaultSpec) -> Result<Fault, FaultError> {
        let count = spec.count.unwrap_or(1);
        if count == 0 {
            return Err(FaultError::ZeroCount);
        }
        if spec.status.is_some_and(|s| !(400..=599).contains(&s)) {
            return Err(FaultError::Status);
        }
        let delay_ms = spec.delay_ms.unwrap_or(0);
        let delay_response_ms = spec.delay_response_ms.unwrap_or(0);
        if delay_ms > MAX_DELAY_MS || delay_response_ms > MAX_DELAY_MS {
            return Err(FaultError::Delay);
        }
        if let Some(m) = &spec.method
            && Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err()
        {
            return Err(FaultError::Method);
        }
        let drop = spec.drop.unwrap_or(false);
        let apply_then_fail = spec.apply_then_fail.unwrap_or(false);
        let ignore_write = spec.ignore_write.unwrap_or(false);
        if spec.status.is_none()
            && delay_ms == 0
            && delay_response_ms == 0
            && !drop
            && !ignore_write
        {
            return Err(FaultError::Inert);
        }
        if apply_then_fail && spec.status.is_none() {
            return Err(FaultError::ApplyWithoutStatus);
        }
        if ignore_write && (spec.status.is_some() || drop) {
            return Err(FaultError::IgnoreConflict);
        }
        self.next_id += 1;
        let fault = Fault {
            id: self.next_id,
            method: spec.method,
            path: spec.path,
            count,
            status: spec.status,
            retry_after: spec.retry_after,
            delay_ms,
            drop,
            apply_then_fail,
            ignore_write,
            delay_response_ms,
        };
        self.pending.push(fault.clone());
        Ok(fault)
    }

    /// The oldest fault matching this request, counted as used.
    pub(crate) fn take(&mut self, method: &Method, target: &str) -> Option<Fault> {
        let index = self
            .pending
            .iter()
            .position(|f| f.matches(method, target))?;
        let fault = &mut self.pending[index];
        fault.count -= 1;
        let hit = fault.clone();
        if fault.count == 0 {
            self.pending.remove(index);
        }
        Some(hit)
    }

    pub(crate) fn list(&self) -> &[Fault] {
        &self.pending
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FaultSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn faults_match_method_and_path_prefix_case_insensitively_until_used_up() {
        let mut faults = Faults::default();
        faults
            .add(spec(
                r#"{"method":"put","path":"/V1.0/policies","count":2,"status":429}"#,
            ))
            .unwrap();
        assert!(faults.take(&Method::GET, "/v1.0/policies/x").is_none());
        assert!(faults.take(&Method::PUT, "/beta/policies/x").is_none());
        assert!(faults.take(&Method::PUT, "/v1.0/policies/x").is_some());
        assert_eq!(faults.list()[0].count, 1);
        assert!(faults.take(&Method::PUT, "/v1.0/POLICIES?x=1").is_some());
        assert!(faults.list().is_empty());
    }

    #[test]
    fn nonsense_faults_are_refused() {
        let mut faults = Faults::default();
        assert!(faults.add(spec(r#"{"status":200}"#)).is_err());
        assert!(faults.add(spec(r#"{"count":0,"status":500}"#)).is_err());
        assert!(faults.add(spec(r#"{"path":"/v1.0"}"#)).is_err());
        assert!(serde_json::from_str::<FaultSpec>(r#"{"Status":500}"#).is_err());
    }

    #[test]
    fn apply_then_fail_needs_a_status_and_ignore_write_stands_alone() {
        let mut faults = Faults::default();
        assert!(faults.add(spec(r#"{"applyThenFail":true}"#)).is_err());
        assert!(
            faults
                .add(spec(r#"{"ignoreWrite":true,"status":500}"#))
                .is_err()
        );
        assert!(
            faults
                .add(spec(r#"{"applyThenFail":true,"status":500}"#))
                .is_ok()
        );
        assert!(faults.add(spec(r#"{"ignoreWrite":true}"#)).is_ok());
    }

    #[test]
    fn throttling_faults_carry_retry_after() {
        let mut faults = Faults::default();
        let fault = faults
            .add(spec(r#"{"status":429,"retryAfter":5}"#))
            .unwrap();
        let failure = fault.failure().unwrap();
        assert_eq!(failure.error.code, "TooManyRequests");
        assert_eq!(failure.headers[header::RETRY_AFTER], "5");
    }
}
