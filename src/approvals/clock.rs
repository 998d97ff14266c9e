//! The time approval deadlines are read against.
//!
//! The later of the wall clock and "the wall clock at first use plus the monotonic time since":
//! setting the system clock back does not extend a request's windows, and under tokio's paused
//! time (the expiry tests) advancing the runtime's clock advances deadlines too, with no sleep.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};

static ANCHOR: OnceLock<(DateTime<Utc>, std::time::Instant)> = OnceLock::new();

pub(crate) fn now() -> DateTime<Utc> {
    let wall = Utc::now();
    let (at, instant) = *ANCHOR.get_or_init(|| (wall, tokio_now()));
    let elapsed = tokio_now().saturating_duration_since(instant);
    let monotonic = chrono::Duration::from_std(elapsed)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(wall);
    wall.max(monotonic)
}

/// tokio's clock (paused in tests) as a std instant; the std clock outside a runtime.
fn tokio_now() -> std::time::Instant {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::time::Instant::now().into_std(),
        Err(_) => std::time::Instant::now(),
    }
}
