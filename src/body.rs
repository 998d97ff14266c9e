//! The one body type used for every response syncgate sends and every request it forwards.
//!
//! Forwarded bodies (hyper's `Incoming`) and locally made ones (`Full`, `Empty`) are boxed into the
//! same type so a handler can return either without generics leaking through the whole crate.

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
