//! Reading a governed or `$batch` request body: whole, but never more than the configured cap, never
//! waiting long on a client that stopped sending, and never holding more body bytes at once, across
//! all requests, than the body memory budget.
//!
//! Governed bodies are small JSON documents; reading them whole is what lets syncgate parse them
//! strictly and record exactly the bytes it forwards. That also makes them the one place where a
//! client decides how much memory syncgate holds, so every byte kept here is paid for first: the
//! reader reserves room in a process-wide budget ([`BodyLimits`]) *before* growing its buffer, and
//! the room is given back only when the last copy of the returned bytes is dropped (the request is
//! done). N hostile requests therefore share one budget instead of multiplying memory; one that
//! finds the budget full waits a bounded time, then gets 503 `SyncgateBusy` with `Retry-After`.
//! A `Content-Length` above the cap is refused (413) before a byte is read. Pass-through bodies
//! never come here: they stream and hold no more than hyper's buffers.
//!
//! The budget reaches [`bounded`] through a task-local set for each request by [`scoped`], so every
//! caller (the governed path, the `$batch` reader) is covered without threading it through their
//! signatures; `scoped` also adds `Retry-After` to the answer when the budget was what refused it.

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::body::Body;

/// The budget is counted in KiB so a `u32` permit count covers any sensible size.
const UNIT: usize = 1024;

/// The first allocation for a body of unknown length; later ones double, up to the cap.
const FIRST_ALLOCATION: usize = 16 * 1024;

/// What `Retry-After` tells a client refused for lack of budget: bodies are read in well under a
/// second once they arrive, so room comes back quickly.
const BUSY_RETRY_AFTER_SECONDS: &str = "1";

/// The process-wide limits every governed and `$batch` body read shares.
#[derive(Debug)]
pub(crate) struct BodyLimits {
    /// KiB of body memory not held by any request.
    budget: Arc<Semaphore>,
    /// The whole budget in bytes (a body larger than this can never be read).
    budget_bytes: usize,
    /// How long a read waits for room before it is refused with 503.
    wait: Duration,
    /// A body that delivers nothing for this long is refused with 408.
    stall: Duration,
}

impl BodyLimits {
    pub(crate) fn new(budget_bytes: usize, wait: Duration, stall: Duration) -> Self {
        let units = (budget_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(units)),
            budget_bytes: units * UNIT,
            wait,
            stall,
        }
    }

    /// Bytes of the budget not held by any request (for tests and diagnostics).
    #[cfg(test)]
    fn available_bytes(&self) -> usize {
        self.budget.available_permits() * UNIT
    }
}

/// The defaults of `[limits]`, for a governor built without configuration.
impl Default for BodyLimits {
    fn default() -> Self {
        Self::new(64 << 20, Duration::from_secs(2), Duration::from_secs(10))
    }
}

/// One request's view of the limits, and whether the budget refused it.
struct RequestScope {
    limits: Arc<BodyLimits>,
    busy: Cell<bool>,
}

tokio::task_local! {
    static REQUEST: RequestScope;
}

/// Run one request's handling with `limits` in force for every [`bounded`] read inside it; an
/// answer the budget caused carries `Retry-After`.
pub(crate) async fn scoped<F>(limits: Arc<BodyLimits>, handling: F) -> Response<Body>
where
    F: Future<Output = Response<Body>>,
{
    let scope = RequestScope {
        limits,
        busy: Cell::new(false),
    };
    REQUEST
        .scope(scope, async {
            let mut response = handling.await;
            if REQUEST.with(|r| r.busy.get()) {
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from_static(BUSY_RETRY_AFTER_SECONDS),
                );
            }
            response
        })
        .await
}

/// Limits for a read outside any [`scoped`] request: never expected, but a read must still be
/// bounded, so it shares one default budget rather than none.
fn fallback_limits() -> Arc<BodyLimits> {
    static FALLBACK: OnceLock<Arc<BodyLimits>> = OnceLock::new();
    FALLBACK.get_or_init(Arc::default).clone()
}

/// Read at most `max` bytes: more is a 413 refusal, a broken stream a 400, a stalled one a 408, and
/// no room in the body memory budget a 503.
pub(crate) async fn bounded<B>(body: B, max: usize) -> Result<Bytes, Unread>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let limits = REQUEST.try_with(|r| r.limits.clone()).unwrap_or_else(|_| {
        warn!("a body was read outside a request scope; using the default budget");
        fallback_limits()
    });
    let result = read(body, max, &limits).await;
    if matches!(result, Err(ReadError::Busy)) {
        let _ = REQUEST.try_with(|r| r.busy.set(true));
    }
    result.map_err(|e| e.unread(max, &limits))
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// More than the cap, declared or sent.
    TooLarge,
    /// More than the whole budget: it could never be held.
    OverBudget,
    /// Nothing arrived for the stall timeout.
    Stalled,
    /// No room in the budget within the wait.
    Busy,
    /// The client's stream failed (reset, malformed chunking).
    Broken(String),
}

impl ReadError {
    /// The error the client is answered with, naming the limit it met.
    fn unread(self, max: usize, limits: &BodyLimits) -> Unread {
        match self {
            ReadError::TooLarge => Unread::TooLarge { max },
            ReadError::OverBudget => Unread::OverBudget {
                budget: limits.budget_bytes,
            },
            ReadError::Stalled => Unread::Stalled {
                stall: limits.stall,
            },
            ReadError::Busy => Unread::Busy,
            ReadError::Broken(error) => Unread::Broken(error),
        }
    }
}

/// Why a request body was not read, as the client is told ([`crate::proxy::ProxyError::Body`]
/// gives each its status and code).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unread {
    #[error(
        "The request body exceeds syncgate's limit of {max} bytes for this request \
         (audit.max_body for governed changes, audit.max_batch_body for $batch)."
    )]
    TooLarge { max: usize },
    #[error(
        "The request body exceeds syncgate's memory budget of {budget} bytes for request bodies."
    )]
    OverBudget { budget: usize },
    #[error(
        "The request body made no progress for {} ms; syncgate stopped waiting for it.",
        .stall.as_millis()
    )]
    Stalled { stall: Duration },
    #[error(
        "syncgate is holding as many request bodies as its memory budget allows. Retry shortly."
    )]
    Busy,
    #[error("The request body could not be read: {0}")]
    Broken(String),
}

/// A body being read: its bytes and the budget they are paid from. Dropping it (or the last
/// `Bytes` made from it) gives the budget back.
struct Held {
    buf: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Held {
    fn units(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Make room for `needed` bytes, paying for the allocation before making it. The buffer grows
    /// by doubling (amortised copies) but never past `ceiling` (the declared length or the cap),
    /// so a body with a `Content-Length` ends in an allocation of exactly that size.
    async fn grow(
        &mut self,
        needed: usize,
        ceiling: usize,
        limits: &BodyLimits,
    ) -> Result<(), ReadError> {
        if needed <= self.buf.capacity() {
            return Ok(());
        }
        if needed > limits.budget_bytes {
            return Err(ReadError::OverBudget);
        }
        let target = (self.buf.capacity() * 2)
            .max(FIRST_ALLOCATION)
            .min(ceiling)
            .min(limits.budget_bytes)
            .max(needed);
        let units = target.div_ceil(UNIT);
        let more = units.saturating_sub(self.units());
        if more > 0 {
            let count = u32::try_from(more).map_err(|_| ReadError::OverBudget)?;
            let acquire = limits.budget.clone().acquire_many_owned(count);
            let permit = match tokio::time::timeout(limits.wait, acquire).await {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed; treat it as no room all the same.
                Ok(Err(_)) | Err(_) => return Err(ReadError::Busy),
            };
            match &mut self.permit {
                Some(held) => held.merge(permit),
                None => self.permit = Some(permit),
            }
        }
        self.buf.reserve_exact(target - self.buf.len());
        Ok(())
    }

    /// The bytes, still paying for what they occupy until the last copy is dropped.
    fn into_bytes(mut self) -> Bytes {
        if self.buf.is_empty() {
            return Bytes::new();
        }
        if self.buf.capacity() > self.buf.len() {
            self.buf.shrink_to_fit();
            let excess = self
                .units()
                .saturating_sub(self.buf.capacity().div_ceil(UNIT));
            if let Some(permit) = &mut self.permit {
                drop(permit.split(excess));
            }
        }
        Bytes::from_owner(self)
    }
}

async fn read<B>(body: B, max: usize, limits: &BodyLimits) -> Result<Bytes, ReadError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let hint = body.size_hint();
    if usize::try_from(hint.lower()).map_or(true, |declared| declared > max) {
        return Err(ReadError::TooLarge);
    }
    let ceiling = hint
        .exact()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(max);
    let mut body = std::pin::pin!(body);
    let mut held = Held {
        buf: Vec::new(),
        permit: None,
    };
    loop {
        let frame = match tokio::time::timeout(limits.stall, body.frame()).await {
            Err(_) => return Err(ReadError::Stalled),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(ReadError::Broken(error.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing a governed request uses.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let needed = held.buf.len() + data.len();
        if needed > max {
            return Err(ReadError::TooLarge);
        }
        held.grow(needed, ceiling, limits).await?;
        held.buf.extend_from_slice(&data);
    }
    Ok(held.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::Frame;
    use http_body_util::Full;
    use tokio::sync::mpsc;

    use super::*;

    /// A chunked body (no declared length) fed by the test.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks() -> (mpsc::Sender<Bytes>, Chunks) {
        let (tx, rx) = mpsc::channel(64);
        (tx, Chunks(rx))
    }

    fn limits(budget: usize) -> BodyLimits {
        BodyLimits::new(
            budget,
            Duration::from_millis(50),
            Duration::from_millis(200),
        )
    }

    #[tokio::test]
    async fn a_declared_length_above_the_cap_is_refused_before_reading() {
        let limits = limits(1 << 20);
        let body = Full::new(Bytes::from(vec![b'x'; 2000]));
        assert_eq!(read(body, 1000, &limits).await, Err(ReadError::TooLarge));
        assert_eq!(limits.available_bytes(), 1 << 20);
    }

    #[tokio::test]
    async fn the_budget_is_held_until_the_last_copy_of_the_body_is_dropped() {
        let limits = limits(256 * 1024);
        let body = Full::new(Bytes::from(vec![b'x'; 100 * 1024]));
        let bytes = read(body, 1 << 20, &limits).await.unwrap();
        assert_eq!(bytes.len(), 100 * 1024);
        assert_eq!(
            limits.available_bytes(),
            156 * 1024,
            "a declared length is allocated, and paid for, exactly"
        );
        let copy = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(limits.available_bytes(), 156 * 1024);
        drop(copy);
        assert_eq!(limits.available_bytes(), 256 * 1024);
    }

    #[tokio::test]
    async fn a_chunked_body_pays_for_its_buffer_as_it_grows_and_returns_the_slack() {
        let limits = limits(1 << 20);
        let (tx, body) = chunks();
        for _ in 0..10 {
            tx.send(Bytes::from(vec![b'x'; 10 * 1024])).await.unwrap();
        }
        drop(tx);
        let bytes = read(body, 1 << 20, &limits).await.unwrap();
        assert_eq!(bytes.len(), 100 * 1024);
        // Doubling reached 128 KiB; after shrinking only the 100 KiB in use stay paid for.
        assert_eq!(limits.available_bytes(), (1 << 20) - 100 * 1024);
        drop(bytes);
        assert_eq!(limits.available_bytes(), 1 << 20);
    }

    #[tokio::test]
    async fn a_full_budget_makes_the_next_read_wait_then_refuse_as_busy() {
        let limits = limits(64 * 1024);
        let (first_tx, first) = chunks();
        first_tx
            .send(Bytes::from(vec![b'x'; 60 * 1024]))
            .await
            .unwrap();
        let first_read = read(first, 64 * 1024, &limits);
        let (second_tx, second) = chunks();
        second_tx.send(Bytes::from_static(b"{}")).await.unwrap();
        drop(second_tx);
        let second_read = read(second, 64 * 1024, &limits);
        // The first holds 60 KiB and waits for more; the second cannot get its first 16 KiB.
        let (first, second) = tokio::join!(first_read, async {
            tokio::task::yield_now().await;
            second_read.await
        });
        assert_eq!(second, Err(ReadError::Busy));
        assert_eq!(first, Err(ReadError::Stalled), "the first never finished");
        drop(first_tx);
        assert_eq!(limits.available_bytes(), 64 * 1024, "both gave it back");
    }

    #[tokio::test]
    async fn a_body_larger_than_the_whole_budget_is_refused_without_waiting() {
        let limits = limits(32 * 1024);
        let (tx, body) = chunks();
        tx.send(Bytes::from(vec![b'x'; 40 * 1024])).await.unwrap();
        drop(tx);
        assert_eq!(
            read(body, 1 << 20, &limits).await,
            Err(ReadError::OverBudget)
        );
        assert_eq!(limits.available_bytes(), 32 * 1024);
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_cap_is_refused_and_frees_what_it_held() {
        let limits = limits(1 << 20);
        let (tx, body) = chunks();
        for _ in 0..3 {
            tx.send(Bytes::from(vec![b'x'; 10 * 1024])).await.unwrap();
        }
        drop(tx);
        assert_eq!(
            read(body, 25 * 1024, &limits).await,
            Err(ReadError::TooLarge)
        );
        assert_eq!(limits.available_bytes(), 1 << 20);
    }

    #[tokio::test]
    async fn a_refusal_for_lack_of_budget_tells_the_client_when_to_retry() {
        let limits = Arc::new(limits(16 * 1024));
        let hog = limits.budget.clone().acquire_many_owned(16).await.unwrap();
        let response = scoped(limits.clone(), async {
            let (tx, body) = chunks();
            tx.send(Bytes::from_static(b"{}")).await.unwrap();
            drop(tx);
            let error = crate::proxy::ProxyError::Body(bounded(body, 1024).await.unwrap_err());
            assert_eq!(error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error.code(), "SyncgateBusy");
            error.into_response(&crate::graph_error::RequestIds {
                request_id: "r".into(),
                client_request_id: "c".into(),
            })
        })
        .await;
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
        drop(hog);
        let response = scoped(limits, async {
            let error = bounded(Full::new(Bytes::from(vec![0; 2048])), 1024)
                .await
                .unwrap_err();
            assert_eq!(
                crate::proxy::ProxyError::Body(error).status(),
                http::StatusCode::PAYLOAD_TOO_LARGE
            );
            Response::new(crate::body::empty())
        })
        .await;
        assert!(response.headers().get(http::header::RETRY_AFTER).is_none());
    }
}
