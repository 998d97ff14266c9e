//! Forward: the governed write goes upstream, rebuilt from what was parsed, decided and recorded
//! (the documented path, the allowed headers, the parsed body re-serialised), never as the
//! client's bytes: an upstream cannot read a duplicate member, odd whitespace or a second
//! Content-Type differently from syncgate. Its answer is read whole (governed answers are empty
//! or small JSON) so it can be recorded and relayed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Limited};

use super::Operation;
use crate::classify::Governed;
use crate::proxy::ProxyError;
use crate::proxy::forward::{Outbound, RebuiltBody};
use crate::proxy::upstream::Upstream;
use crate::server::ConnInfo;

/// Largest upstream response to a governed write that is relayed.
const MAX_WRITE_RESPONSE: usize = 4 * 1024 * 1024;

/// What the upstream answered to the write, and how long it took.
pub(crate) struct Answer {
    pub(crate) response: Result<Response<Bytes>, ProxyError>,
    pub(crate) upstream_time: Duration,
}

pub(super) async fn write(
    upstream: &Upstream,
    conn: &ConnInfo,
    op: &Operation,
    governed: &Governed,
) -> Answer {
    let sent = Instant::now();
    let response = send(upstream, conn, op, governed).await;
    Answer {
        response,
        upstream_time: sent.elapsed(),
    }
}

async fn send(
    upstream: &Upstream,
    conn: &ConnInfo,
    op: &Operation,
    governed: &Governed,
) -> Result<Response<Bytes>, ProxyError> {
    let body = match &op.body {
        Some(json) => RebuiltBody::json(json)?,
        None => RebuiltBody::None,
    };
    let request = Outbound::Rebuilt {
        method: governed.method.clone(),
        path_and_query: &crate::graph::documented_path(&governed.path),
        client: &op.headers,
        body,
    }
    .build(upstream.target(), Some(conn))?;
    let (parts, incoming) = upstream.send(request).await?.into_parts();
    match Limited::new(incoming, MAX_WRITE_RESPONSE).collect().await {
        Ok(collected) => Ok(Response::from_parts(parts, collected.to_bytes())),
        Err(e) => Err(ProxyError::UpstreamBody(e.to_string())),
    }
}
