//! `GET /api/v1/operations`: one row per governed operation, filtered, newest first, paged by an
//! opaque cursor that stays correct while new events arrive (see `store::operations`).
//!
//! The query string is read strictly: an unknown parameter, one given twice, or a value that does
//! not parse is a 400 in Graph's error shape naming it, never silently ignored (an auditor's
//! filter that was dropped would return more than they asked for and look like an answer).
//! The filter parameters are read by [`filter_parameter`], shared with `GET /api/v1/export` and
//! `syncgate audit export`, so every way of selecting operations means the same thing.

use http::StatusCode;
use serde_json::{Value, json};

use crate::audit::{Decision, Effect, Operation};
use crate::cli::render::{parse_since, parse_until};
use crate::graph::TenantId;
use crate::store::{Cursor, MAX_LIMIT, OperationFilter, Store};

/// Rows per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;

/// The query parameters this route reads (named in the 400 for any other, and compared with
/// `openapi.json` by a unit test).
pub(crate) const PARAMETERS: &[&str] = &[
    "partner", "actor", "kind", "decision", "rule", "effect", "status", "drift", "since", "until",
    "q", "limit", "cursor",
];

/// The route's answer: a status and its JSON body.
pub(crate) type Answer = (StatusCode, Value);

/// What the query string asked for.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Query {
    pub(crate) filter: OperationFilter,
    pub(crate) cursor: Option<Cursor>,
    pub(crate) limit: u32,
    /// The query without `cursor`, to build the next page's link from.
    rest: Vec<(String, String)>,
}

/// Why a query was refused: the status, Graph error code and message to answer with.
pub(crate) type Refusal = (StatusCode, String, String);

pub(crate) fn bad(parameter: &str, why: impl std::fmt::Display) -> Refusal {
    (
        StatusCode::BAD_REQUEST,
        "BadRequest".to_owned(),
        format!("query parameter {parameter:?}: {why}"),
    )
}

/// Every parameter of the query string, in order, refusing one given twice (every admin route
/// reads its query through this).
pub(crate) fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, Refusal> {
    let mut seen = std::collections::HashSet::new();
    let mut pairs = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let (key, value) = (key.into_owned(), value.into_owned());
        if !seen.insert(key.clone()) {
            return Err(bad(&key, "given more than once"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// A page size: a number from 1 to `max`.
pub(crate) fn limit(key: &str, value: &str, max: u32) -> Result<u32, Refusal> {
    let limit: u32 = value.parse().map_err(|_| bad(key, "is not a number"))?;
    if !(1..=max).contains(&limit) {
        return Err(bad(key, format!("must be 1 to {max}")));
    }
    Ok(limit)
}

/// The answer when the log cannot be read now.
pub(crate) fn unavailable(error: impl std::fmt::Display) -> Refusal {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "SyncgateAuditUnavailable".to_owned(),
        format!("cannot read the audit log: {error}"),
    )
}

/// Read the query string; the error is the status, code and message to answer with. Also reads
/// `syncgate audit list --operations`' options (turned into this query), so both agree.
pub(crate) fn parse(query: Option<&str>) -> Result<Query, Refusal> {
    let mut parsed = Query {
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    for (key, value) in pairs(query)? {
        set(&mut parsed, &key, &value)?;
        if key != "cursor" {
            parsed.rest.push((key, value));
        }
    }
    Ok(parsed)
}

fn set(q: &mut Query, key: &str, value: &str) -> Result<(), Refusal> {
    match key {
        "limit" => q.limit = limit(key, value, MAX_LIMIT)?,
        "cursor" => {
            q.cursor = Some(Cursor::parse(value).ok_or_else(|| bad(key, "is not a cursor"))?);
        }
        _ => {
            if !filter_parameter(&mut q.filter, key, value)? {
                let known = PARAMETERS.join(", ");
                return Err(bad(
                    key,
                    format!("is not a parameter of this route ({known})"),
                ));
            }
        }
    }
    Ok(())
}

/// Set the filter field `key` names from `value`: `Ok(false)` when `key` is not a filter
/// parameter (the caller decides whether it knows it), a refusal naming it when the value does
/// not parse.
pub(crate) fn filter_parameter(
    f: &mut OperationFilter,
    key: &str,
    value: &str,
) -> Result<bool, Refusal> {
    // PostgreSQL's text cannot hold NUL (a filter with one failed there as a 503), so no recorded
    // value has one: refused on both backends alike.
    let text = |v: &str| match v {
        "" => Err(bad(key, "is empty")),
        _ if v.contains('\0') => Err(bad(key, "contains a NUL character")),
        _ => Ok(v.to_owned()),
    };
    match key {
        "partner" => {
            // The form the log records (and Graph's paths use); a braced or 32-digit GUID would
            // be read here yet mean nothing to anyone reading the log.
            let tenant = TenantId::parse(value)
                .map_err(|_| bad(key, "is not a GUID (8-4-4-4-12 hex digits)"))?;
            f.partner = Some(tenant.as_str().to_owned());
        }
        "actor" => f.actor = Some(text(value)?),
        "kind" => {
            // A misspelt kind would match nothing and look like an answer ("no such changes").
            let kind = Operation::from(value);
            if matches!(kind, Operation::Other(_)) {
                return Err(bad(key, "is not an operation kind (sync_update, ...)"));
            }
            f.operation = Some(kind);
        }
        "decision" => {
            f.decision =
                Some(Decision::parse(value).ok_or_else(|| bad(key, "is not allow or deny"))?);
        }
        "rule" => f.rule = Some(text(value)?),
        "effect" => {
            let effect = Effect::parse(value)
                .ok_or_else(|| bad(key, "is not an effect (applied, ignored, ...)"))?;
            f.effect = Some(effect);
        }
        "status" => {
            let status: u16 = value.parse().map_err(|_| bad(key, "is not a number"))?;
            if !(100..=599).contains(&status) {
                return Err(bad(key, "is not an HTTP status (100 to 599)"));
            }
            f.status = Some(status);
        }
        "drift" => {
            f.drift = Some(match value {
                "true" => true,
                "false" => false,
                _ => return Err(bad(key, "is not true or false")),
            });
        }
        "since" => f.since = Some(parse_since(value).map_err(|e| bad(key, e))?),
        "until" => f.until = Some(parse_until(value).map_err(|e| bad(key, e))?),
        "q" => f.text = Some(text(value)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// For a route that takes no parameters: the first one given is refused, like an unknown one.
pub(super) fn no_parameters(query: Option<&str>) -> Result<(), (StatusCode, String, String)> {
    match form_urlencoded::parse(query.unwrap_or_default().as_bytes()).next() {
        Some((key, _)) => Err(bad(&key, "is not a parameter of this route")),
        None => Ok(()),
    }
}

/// Answer `GET /api/v1/operations?query`.
pub(crate) async fn list(store: &Store, query: Option<&str>) -> Result<Answer, Refusal> {
    let q = parse(query)?;
    let page = store
        .operations(&q.filter, q.cursor.as_ref(), q.limit)
        .await
        .map_err(unavailable)?;
    let mut body = json!({ "value": page.operations });
    if let Some(next) = page.next {
        let mut link = form_urlencoded::Serializer::new(String::new());
        link.extend_pairs(q.rest.iter());
        link.append_pair("cursor", &next.encode());
        body["@odata.nextLink"] = Value::String(format!("/api/v1/operations?{}", link.finish()));
    }
    Ok((StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_read_strictly() {
        let q = parse(Some(
            "partner=9C5D131D-B1C3-4FC4-9E3F-C6557947D551&drift=true&limit=5",
        ))
        .unwrap();
        assert_eq!(
            q.filter.partner.as_deref(),
            Some("9c5d131d-b1c3-4fc4-9e3f-c6557947d551")
        );
        assert_eq!((q.filter.drift, q.limit), (Some(true), 5));
        assert_eq!(parse(None).unwrap().limit, DEFAULT_LIMIT);
        for refused in [
            "partner=x",
            "partner={9c5d131d-b1c3-4fc4-9e3f-c6557947d551}",
            "partner=9c5d131db1c34fc49e3fc6557947d551",
            "kind=sync_upsert",
            "kind=",
            "status=99",
            "status=600",
            "drift=yes",
            "limit=0",
            "limit=1001",
            "limit=ten",
            "decision=maybe",
            "effect=teleported",
            "cursor=zzz",
            "actor=",
            "actor=a%00b",
            "rule=%00",
            "q=%00",
            "colour=red",
            "q=a&q=b",
            "since=yesterday-ish",
        ] {
            let error = parse(Some(refused)).unwrap_err();
            assert_eq!(error.0, StatusCode::BAD_REQUEST, "{refused}");
        }
    }

    #[test]
    fn every_listed_parameter_is_read_and_no_other() {
        for name in PARAMETERS {
            let error = parse(Some(&format!("{name}="))).unwrap_err();
            assert!(
                !error.2.contains("is not a parameter"),
                "{name}: {}",
                error.2
            );
        }
        let error = parse(Some("colour=red")).unwrap_err();
        assert!(error.2.contains("(partner, actor, kind"), "{}", error.2);
    }

    #[test]
    fn every_known_kind_filters_and_status_is_an_http_status() {
        for kind in ["sync_update", "unknown", "refusal_summary", "sync_read"] {
            let q = parse(Some(&format!("kind={kind}"))).unwrap();
            assert_eq!(q.filter.operation.unwrap().as_str(), kind);
        }
        assert_eq!(parse(Some("status=599")).unwrap().filter.status, Some(599));
        assert_eq!(parse(Some("status=100")).unwrap().filter.status, Some(100));
    }

    #[test]
    fn the_next_link_keeps_the_filters_and_replaces_the_cursor() {
        let q = parse(Some("actor=alice%40contoso.com&cursor=s10")).unwrap();
        assert_eq!(
            q.rest,
            [("actor".to_owned(), "alice@contoso.com".to_owned())]
        );
        assert!(q.cursor.is_some());
    }
}
