//! `GET /api/v1/operations`: one row per governed operation, filtered, newest first, paged by an
//! opaque cursor that stays correct while new events arrive (see `store::operations`).
//!
//! The query string is read strictly: an unknown parameter, one given twice, or a value that does
//! not parse is a 400 in Graph's error shape naming it, never silently ignored (an auditor's
//! filter that was dropped would return more than they asked for and look like an answer).

use http::StatusCode;
use serde_json::{Value, json};

use crate::audit::{Decision, Effect, Operation};
use crate::cli::render::{parse_since, parse_until};
use crate::store::{Cursor, MAX_LIMIT, OperationFilter, Store};

/// Rows per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;

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

fn bad(parameter: &str, why: impl std::fmt::Display) -> (StatusCode, String, String) {
    (
        StatusCode::BAD_REQUEST,
        "BadRequest".to_owned(),
        format!("query parameter {parameter:?}: {why}"),
    )
}

/// Read the query string; the error is the status, code and message to answer with. Also reads
/// `syncgate audit list --operations`' options (turned into this query), so both agree.
pub(crate) fn parse(query: Option<&str>) -> Result<Query, (StatusCode, String, String)> {
    let mut parsed = Query {
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let (key, value) = (key.into_owned(), value.into_owned());
        if !seen.insert(key.clone()) {
            return Err(bad(&key, "given more than once"));
        }
        set(&mut parsed, &key, &value)?;
        if key != "cursor" {
            parsed.rest.push((key, value));
        }
    }
    Ok(parsed)
}

fn set(q: &mut Query, key: &str, value: &str) -> Result<(), (StatusCode, String, String)> {
    let f = &mut q.filter;
    let nonempty = |v: &str| {
        if v.is_empty() {
            Err(bad(key, "is empty"))
        } else {
            Ok(v.to_owned())
        }
    };
    match key {
        "partner" => {
            let guid = uuid::Uuid::try_parse(value).map_err(|_| bad(key, "is not a GUID"))?;
            f.partner = Some(guid.hyphenated().to_string());
        }
        "actor" => f.actor = Some(nonempty(value)?),
        "kind" => f.operation = Some(Operation::from(nonempty(value)?.as_str())),
        "decision" => {
            f.decision =
                Some(Decision::parse(value).ok_or_else(|| bad(key, "is not allow or deny"))?);
        }
        "rule" => f.rule = Some(nonempty(value)?),
        "effect" => {
            let effect: Effect = serde_json::from_value(Value::String(value.to_owned()))
                .map_err(|_| bad(key, "is not an effect (applied, ignored, ...)"))?;
            f.effect = Some(effect);
        }
        "status" => f.status = Some(value.parse().map_err(|_| bad(key, "is not a status"))?),
        "drift" => {
            f.drift = Some(match value {
                "true" => true,
                "false" => false,
                _ => return Err(bad(key, "is not true or false")),
            });
        }
        "since" => f.since = Some(parse_since(value).map_err(|e| bad(key, e))?),
        "until" => f.until = Some(parse_until(value).map_err(|e| bad(key, e))?),
        "q" => f.text = Some(nonempty(value)?),
        "limit" => {
            let limit: u32 = value.parse().map_err(|_| bad(key, "is not a number"))?;
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(bad(key, format!("must be 1 to {MAX_LIMIT}")));
            }
            q.limit = limit;
        }
        "cursor" => {
            q.cursor = Some(Cursor::parse(value).ok_or_else(|| bad(key, "is not a cursor"))?);
        }
        _ => return Err(bad(key, "is not a parameter of this route")),
    }
    Ok(())
}

/// Answer `GET /api/v1/operations?query`.
pub(crate) async fn list(
    store: &Store,
    query: Option<&str>,
) -> Result<Answer, (StatusCode, String, String)> {
    let q = parse(query)?;
    let page = store
        .operations(&q.filter, q.cursor.as_ref(), q.limit)
        .await
        .map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "SyncgateAuditUnavailable".to_owned(),
                format!("cannot read the audit log: {e}"),
            )
        })?;
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
            "drift=yes",
            "limit=0",
            "limit=1001",
            "limit=ten",
            "decision=maybe",
            "effect=teleported",
            "cursor=zzz",
            "actor=",
            "colour=red",
            "q=a&q=b",
            "since=yesterday-ish",
        ] {
            let error = parse(Some(refused)).unwrap_err();
            assert_eq!(error.0, StatusCode::BAD_REQUEST, "{refused}");
        }
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
