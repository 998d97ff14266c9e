//! The one body type used for every response syncgate sends and every request it forwards.
//!
//! Forwarded bodies (hyper's `Incoming`) and locally made ones (`Full`, `Empty`) are boxed into the
//! same type so a handler can return either without generics leaking through the whole crate.
//! A client's request body streamed upstream is marked ([`from_client`]), so when a forward fails
//! syncgate can tell the client's broken body (400) from a failed upstream (502).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Errors a body can yield while streaming: hyper's own, or a local producer's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body, boxed.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding these bytes, sent in one frame.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with no bytes.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Box any streaming body (e.g. hyper's `Incoming`) without reading it.
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// Reading a client's request body failed (a malformed chunk, a connection cut mid-body): the
/// caller's fault, not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read")]
pub(crate) struct ClientBodyError(#[source] pub BoxError);

/// Box a client's request body for forwarding, its read errors wrapped in [`ClientBodyError`]
/// so they stay recognisable in the error chain of the upstream request they broke.
pub(crate) fn from_client<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(|error| -> BoxError { Box::new(ClientBodyError(error.into())) })
        .boxed()
}

/// A body fed chunk by chunk by a producer task, through a queue of at most `capacity` chunks:
/// a response too large to hold (an export) streams with bounded memory, and a client that
/// stops reading stops the producer (its `send` waits, and fails once the body is dropped).
/// An `Err` sent ends the body abnormally: the connection is cut, never closed cleanly.
pub(crate) fn channel(
    capacity: usize,
) -> (tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    (tx, ChannelBody { rx }.boxed())
}

/// The receiving end of [`channel`].
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }
}
