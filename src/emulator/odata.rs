//! What makes a response look like Graph's: headers (§5.3), `@odata.context`, and the query
//! options `$select` / `$expand`.
//!
//! Handlers produce an [`Outcome`]: a [`Reply`] or a [`Failure`] (a [`GraphError`] plus headers
//! such as `Retry-After`). The same outcome becomes either a top-level HTTP response or one entry
//! of a `$batch` response, so both paths share every handler.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value};

use super::path::Version;
use super::schema::{IDENTITY_SYNCHRONIZATION, StructuredType};
use crate::body::{self, Body};
use crate::graph_error::{GraphError, RequestIds};

/// Graph's content type for OData JSON payloads.
pub(crate) const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// What `x-ms-ags-diagnostic` carries on real responses, with the emulator's own names.
const DIAGNOSTIC: &str = r#"{"ServerInfo":{"DataCenter":"Local Emulator","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"SYNCGATE-EMULATOR"}}"#;

/// Graph's service root in `@odata.context`. Fixed rather than taken from `Host`: the emulator
/// stands in for graph.microsoft.com, and clients only read the fragment.
const SERVICE_ROOT: &str = "https://graph.microsoft.com";

/// A successful response, before Graph's common headers are added.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// An OData JSON payload.
    pub(crate) fn json(status: StatusCode, value: &Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
        headers.insert(
            HeaderName::from_static("odata-version"),
            HeaderValue::from_static("4.0"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Self {
            status,
            headers,
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    pub(crate) fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// An error response: Graph's error document plus any headers it needs.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: GraphError,
    pub(crate) headers: HeaderMap,
}

impl From<GraphError> for Failure {
    fn from(error: GraphError) -> Self {
        Self {
            error,
            headers: HeaderMap::new(),
        }
    }
}

pub(crate) type Outcome = Result<Reply, Failure>;

/// The status an outcome answers with.
pub(crate) fn status_of(outcome: &Outcome) -> StatusCode {
    match outcome {
        Ok(reply) => reply.status,
        Err(failure) => failure.error.status,
    }
}

/// A top-level HTTP response with every header Graph sends (§5.3). hyper adds `Date`.
pub(crate) fn into_response(outcome: Outcome, ids: &RequestIds) -> Response<Body> {
    let mut response = match outcome {
        Ok(reply) => {
            let mut response = Response::new(body::full(reply.body));
            *response.status_mut() = reply.status;
            *response.headers_mut() = reply.headers;
            response
        }
        Err(failure) => {
            let mut response = failure.error.into_response(ids);
            response.headers_mut().extend(failure.headers);
            response
        }
    };
    let headers = response.headers_mut();
    ids.apply(headers);
    headers.insert(
        HeaderName::from_static("x-ms-ags-diagnostic"),
        HeaderValue::from_static(DIAGNOSTIC),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    headers.insert(
        HeaderName::from_static("x-ms-resource-unit"),
        HeaderValue::from_static("1"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    response
}

/// `https://graph.microsoft.com/{version}/$metadata#{fragment}`.
pub(crate) fn context(version: Version, fragment: &str) -> Value {
    Value::String(format!("{SERVICE_ROOT}/{version}/$metadata#{fragment}"))
}

/// `{"@odata.context": …, …doc}`.
pub(crate) fn with_context(context: Value, doc: Map<String, Value>) -> Value {
    let mut out = Map::with_capacity(doc.len() + 1);
    out.insert("@odata.context".into(), context);
    out.extend(doc);
    Value::Object(out)
}

/// The system query options a request carried, as written (validated against a type later).
#[derive(Debug, Default)]
pub(crate) struct QueryOptions {
    select: Option<String>,
    expand: Option<String>,
}

/// Every OData system query option's name, for telling "unsupported" from "custom".
const SYSTEM_OPTIONS: &[&str] = &[
    "select",
    "expand",
    "filter",
    "orderby",
    "top",
    "skip",
    "count",
    "search",
    "format",
    "skiptoken",
    "deltatoken",
    "apply",
    "compute",
    "levels",
    "index",
    "schemaversion",
];

impl QueryOptions {
    /// Read the query string. Names are case-insensitive; in beta the `$` is optional (§7), in
    /// v1.0 a name without `$` is a custom option and ignored, as OData does. Only `$select` and
    /// `$expand` are emulated: any other system option is refused rather than silently ignored,
    /// so a test never believes a filter was applied.
    pub(crate) fn parse(version: Version, query: Option<&str>) -> Result<Self, GraphError> {
        let mut options = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let bare = match name.strip_prefix('$') {
                Some(bare) => bare,
                None if version == Version::Beta => &name,
                None => continue,
            };
            let slot = if bare.eq_ignore_ascii_case("select") {
                &mut options.select
            } else if bare.eq_ignore_ascii_case("expand") {
                &mut options.expand
            } else if name.starts_with('$')
                || SYSTEM_OPTIONS.iter().any(|o| o.eq_ignore_ascii_case(bare))
            {
                return Err(bad_request(format!(
                    "The query parameter '{name}' is not supported by the Graph emulator; only $select and $expand are."
                )));
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(bad_request(format!(
                    "Query option '{bare}' was specified more than once, but it must be specified at most once."
                )));
            }
            *slot = Some(value.into_owned());
        }
        Ok(options)
    }
}

/// `$select`/`$expand` resolved against the type being read.
#[derive(Debug, Default)]
pub(crate) struct Projection {
    /// Canonical property names in request order; `None` selects everything.
    select: Option<Vec<&'static str>>,
    /// Whether `identitySynchronization` is expanded (the only navigation emulated).
    pub(crate) expand_sync: bool,
}

impl Projection {
    /// Resolve options for `ty` in `version`; `expandable` says whether `ty` has the
    /// `identitySynchronization` navigation (partners do).
    pub(crate) fn resolve(
        options: &QueryOptions,
        ty: &'static StructuredType,
        version: Version,
        expandable: bool,
    ) -> Result<Self, GraphError> {
        let mut projection = Self::default();
        if let Some(expand) = &options.expand {
            for item in expand.split(',').map(str::trim) {
                let known = item == "*" || item.eq_ignore_ascii_case(IDENTITY_SYNCHRONIZATION);
                if item.contains('(') {
                    return Err(bad_request(format!(
                        "Nested query options in $expand ('{item}') are not supported by the Graph emulator."
                    )));
                }
                if !(known && expandable) {
                    return Err(bad_request(format!(
                        "Could not find a navigation property named '{item}' on type '{}'.",
                        ty.name
                    )));
                }
                projection.expand_sync = true;
            }
        }
        if let Some(select) = &options.select {
            let mut names: Vec<&'static str> = Vec::new();
            for item in select.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if item == "*" {
                    return Ok(Self {
                        select: None,
                        ..projection
                    });
                }
                // OData matches $select names case-insensitively in Graph; output keeps the
                // declared case.
                let name = ty
                    .properties
                    .iter()
                    .filter(|p| p.in_version(version))
                    .map(|p| p.name)
                    .chain(expandable.then_some(IDENTITY_SYNCHRONIZATION))
                    .find(|n| n.eq_ignore_ascii_case(item))
                    .ok_or_else(|| {
                        bad_request(format!(
                            "Could not find a property named '{item}' on type '{}'.",
                            ty.name
                        ))
                    })?;
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            if !names.is_empty() {
                projection.select = Some(names);
            }
        }
        Ok(projection)
    }

    /// Keep only the selected properties, in document order.
    pub(crate) fn apply(&self, doc: Map<String, Value>) -> Map<String, Value> {
        match &self.select {
            None => doc,
            Some(names) => doc
                .into_iter()
                .filter(|(k, _)| names.contains(&k.as_str()))
                .collect(),
        }
    }

    /// The projection part of `@odata.context`: `(tenantId,displayName)`, or nothing. Expanded
    /// navigations without a nested `$select` are not listed (OData 4.0 context URL rules).
    pub(crate) fn context_suffix(&self) -> String {
        match &self.select {
            None => String::new(),
            Some(names) => format!("({})", names.join(",")),
        }
    }
}

fn bad_request(message: String) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::schema::{PARTNER, SYNC_POLICY};

    #[test]
    fn dollar_is_optional_only_in_beta() {
        let beta = QueryOptions::parse(Version::Beta, Some("select=tenantId")).unwrap();
        assert_eq!(beta.select.as_deref(), Some("tenantId"));
        let v1 = QueryOptions::parse(Version::V1, Some("select=tenantId&custom=1")).unwrap();
        assert!(v1.select.is_none());
    }

    #[test]
    fn unsupported_and_repeated_options_are_refused() {
        for q in ["$filter=x", "$TOP=1", "$count=true", "$select=a&$select=b"] {
            let err = QueryOptions::parse(Version::V1, Some(q)).unwrap_err();
            assert_eq!(err.code, "BadRequest", "{q}");
        }
        assert!(QueryOptions::parse(Version::Beta, Some("filter=x")).is_err());
        assert!(QueryOptions::parse(Version::V1, Some("filter=x")).is_ok());
    }

    #[test]
    fn select_resolves_names_case_insensitively_and_rejects_unknown_ones() {
        let q = QueryOptions::parse(Version::V1, Some("$SELECT=TENANTID,displayName")).unwrap();
        let p = Projection::resolve(&q, &SYNC_POLICY, Version::V1, false).unwrap();
        assert_eq!(p.context_suffix(), "(tenantId,displayName)");
        let q = QueryOptions::parse(Version::V1, Some("$select=groupSyncInbound")).unwrap();
        assert!(Projection::resolve(&q, &SYNC_POLICY, Version::V1, false).is_err());
        assert!(Projection::resolve(&q, &SYNC_POLICY, Version::Beta, false).is_ok());
    }

    #[test]
    fn only_identity_synchronization_expands_and_only_on_partners() {
        let q = QueryOptions::parse(Version::V1, Some("$expand=IdentitySynchronization")).unwrap();
        assert!(
            Projection::resolve(&q, &PARTNER, Version::V1, true)
                .unwrap()
                .expand_sync
        );
        assert!(Projection::resolve(&q, &SYNC_POLICY, Version::V1, false).is_err());
        for bad in [
            "$expand=m365Capabilities",
            "$expand=identitySynchronization($select=tenantId)",
        ] {
            let q = QueryOptions::parse(Version::V1, Some(bad)).unwrap();
            assert!(
                Projection::resolve(&q, &PARTNER, Version::V1, true).is_err(),
                "{bad}"
            );
        }
    }
}
