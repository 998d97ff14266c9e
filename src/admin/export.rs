//! `GET /api/v1/export?format=jsonl|csv|directory-audit|ocsf&<filters>`: the trail in a format an
//! auditor's tool reads (see `crate::export`), streamed, for auditors.
//!
//! The filters are exactly `GET /api/v1/operations`'s, read by the same strict parser; `format`
//! is required (an export in a format the caller did not choose is not an answer).
//!
//! Streaming: a producer task renders one page of operations at a time into a queue of
//! [`QUEUED_CHUNKS`] chunks that the response body drains. The whole export is never in memory:
//! a client that reads slowly makes the producer wait; one that stops reading for
//! [`SEND_TIMEOUT`] or goes away ends it. The first page is read before the status is sent, so a
//! store that cannot be read at the start is a clean 503. After that the status (200) is gone:
//! a failure mid-stream ends the body with an error, which cuts the connection (HTTP/1.1: no
//! final chunk; HTTP/2: RST_STREAM) so the client sees a truncated transfer, never a short file
//! that looks complete. The same holds for every format, including `jsonl`, rather than a
//! trailing error line a shipper would take for a record.
//!
//! At most [`MAX_CONCURRENT`] exports run at once per admin listener; another gets 429.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use tokio::sync::Semaphore;

use super::operations::{Refusal, bad, filter_parameter, pairs, unavailable};
use super::record::Failure;
use crate::body::{self, Body};
use crate::export::{Export, Format};
use crate::store::{OperationFilter, Store};

/// Exports running at once, per admin listener: each holds a read connection while it reads a
/// page and a page of rendered output.
pub(crate) const MAX_CONCURRENT: usize = 4;

/// `Retry-After` of the 429 when [`MAX_CONCURRENT`] exports run: an export usually lasts seconds.
const RETRY_AFTER_SECONDS: u64 = 5;

/// Rendered pages waiting for the client: the most memory a slow client makes an export hold.
const QUEUED_CHUNKS: usize = 2;

/// How long a client may leave a chunk unread before its export is ended.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Who may run an export now.
pub(crate) fn permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_CONCURRENT))
}

/// Read the query: the format and the filter.
fn parse(query: Option<&str>) -> Result<(Format, OperationFilter), Refusal> {
    let mut format = None;
    let mut filter = OperationFilter::default();
    for (key, value) in pairs(query)? {
        if key == "format" {
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
            format = Some(
                Format::parse(&value)
                    .ok_or_else(|| bad("format", format!("is not one of {}", names.join(", "))))?,
            );
        } else if !filter_parameter(&mut filter, &key, &value)? {
            return Err(bad(&key, "is not a parameter of this route"));
        }
    }
    let format = format.ok_or_else(|| bad("format", "is required"))?;
    Ok((format, filter))
}

/// Answer `GET /api/v1/export?query`: a streamed 200, or a refusal before anything is sent.
pub(crate) async fn respond(
    store: &Store,
    query: Option<&str>,
    permits: &Arc<Semaphore>,
) -> Result<Response<Body>, Failure> {
    let (format, filter) = parse(query)?;
    let permit = permits.clone().try_acquire_owned().map_err(|_| {
        Failure::busy(
            format!("{MAX_CONCURRENT} exports are running; try again when one has finished"),
            RETRY_AFTER_SECONDS,
        )
    })?;
    let mut export = Export::new(store.reader().clone(), filter, format);
    let first = export.next_chunk().await.map_err(unavailable)?;
    let (tx, body) = body::channel(QUEUED_CHUNKS);
    tokio::spawn(async move {
        let _permit = permit;
        let mut next = Ok(first);
        loop {
            let chunk = match next {
                Ok(Some(chunk)) => Ok(Bytes::from(chunk)),
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(error = %error, format = format.as_str(), "export cut short");
                    Err(crate::body::BoxError::from(Box::new(error)))
                }
            };
            let failed = chunk.is_err();
            let skip = chunk.as_ref().is_ok_and(Bytes::is_empty);
            if !skip {
                match tokio::time::timeout(SEND_TIMEOUT, tx.send(chunk)).await {
                    Ok(Ok(())) => {}
                    // The client went away (the body was dropped): nothing more to do.
                    Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::info!(
                            format = format.as_str(),
                            "export ended: client stopped reading"
                        );
                        break;
                    }
                }
            }
            if failed {
                break;
            }
            next = export.next_chunk().await;
        }
    });
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    if let Ok(disposition) =
        header::HeaderValue::from_str(&format!("attachment; filename=\"{}\"", format.file_name()))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn the_export_query_takes_a_format_and_the_operations_filters_only() {
        let (format, filter) = parse(Some(
            "format=directory-audit&partner=9C5D131D-B1C3-4FC4-9E3F-C6557947D551&drift=false",
        ))
        .unwrap();
        assert_eq!(format, Format::DirectoryAudit);
        assert_eq!(
            filter.partner.as_deref(),
            Some("9c5d131d-b1c3-4fc4-9e3f-c6557947d551")
        );
        assert_eq!(filter.drift, Some(false));
        for refused in [
            "",
            "partner=9c5d131d-b1c3-4fc4-9e3f-c6557947d551",
            "format=xml",
            "format=csv&format=csv",
            "format=csv&limit=10",
            "format=csv&cursor=s10",
            "format=csv&status=ok",
        ] {
            let error = parse(Some(refused)).unwrap_err();
            assert_eq!(error.0, StatusCode::BAD_REQUEST, "{refused}");
        }
        assert!(
            parse(Some("format=csv&limit=1"))
                .unwrap_err()
                .2
                .contains("\"limit\""),
            "the refusal names the parameter"
        );
    }
}
