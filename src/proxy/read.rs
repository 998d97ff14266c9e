//! Reading a governed request's body: whole, but never more than the configured cap.
//!
//! Governed bodies are small JSON documents; reading them whole is what lets syncgate parse them
//! strictly and record exactly the bytes it forwards. Pass-through bodies never come here.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::classify::Refusal;

/// Read at most `max` bytes; more is a 413 refusal, a broken stream a 400.
pub(crate) async fn bounded(body: Incoming, max: usize) -> Result<Bytes, Refusal> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SyncgateBodyTooLarge",
            format!(
                "The request body exceeds syncgate's limit of {max} bytes for governed requests."
            ),
        )),
        Err(error) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("The request body could not be read: {error}"),
        )),
    }
}
