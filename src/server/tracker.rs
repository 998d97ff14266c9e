//! Which connections a listener has open, from where, and which of them are idle: what the accept
//! loop needs to keep the count under its caps without turning away clients that are being served.
//!
//! A connection is *idle* when no request is in flight on it (a response body still streaming
//! counts as in flight). A socket that never sent a byte, or is still in its TLS handshake, is
//! idle. When a new connection would exceed a cap, the connection idle the longest (within the
//! same client address for the per-client cap) is *shed*: removed from the count at once and told
//! to close. Only when nothing is idle is the new connection refused. So a flood of silent sockets
//! recycles its own slots, and never the slot of a connection with a request in flight.
//!
//! A shed connection's socket stays open until its task gets to close it, and under load that can
//! lag behind the accept loop, which would then spend descriptors beyond the budget the caps were
//! derived from (and fail with EMFILE). So shed connections still closing are counted apart
//! ([`Tracker::closing`]), and the accept loop waits for them ([`Tracker::settle`]) before it
//! accepts again.
//!
//! Shedding races with a request starting on the same connection; [`Conn::start_request`] and the
//! shed agree through one atomic (`in_flight`), so a connection is shed only while it is idle, and
//! a request never starts on a shed connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `in_flight` of a shed connection: no request may start on it any more.
const SHED: usize = usize::MAX;

/// The open connections of one listener.
pub(crate) struct Tracker {
    max_total: usize,
    max_per_client: usize,
    /// Activity times are stored as milliseconds since this instant (one atomic per connection).
    epoch: Instant,
    state: Mutex<State>,
    /// Shed connections whose task has not closed the socket yet.
    closing: AtomicUsize,
    /// Signalled each time a shed connection's socket is closed.
    closed: Notify,
    /// Kept at the number of connections counted, for `/metrics` (unregistered by default).
    gauge: Gauge,
}

#[derive(Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
    per_client: HashMap<IpAddr, usize>,
}

/// One connection as the tracker and its task both see it.
pub(crate) struct Conn {
    id: u64,
    client: IpAddr,
    epoch: Instant,
    /// Requests being answered, or [`SHED`].
    in_flight: AtomicUsize,
    /// When the last request started or finished (or the connection was accepted), in ms since
    /// `epoch`.
    last_active: AtomicU64,
    /// Cancelled when the connection is shed: its task closes it at once.
    shed: CancellationToken,
    /// Work a request handed off to outlive it (a `CONNECT` tunnel; see `server::Handoff`),
    /// made on first use so connections that never hand off anything pay nothing for it.
    handed_off: OnceLock<TaskTracker>,
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address already holds its share, all of them busy.
    ClientCap,
    /// The listener is full, every connection busy.
    TotalCap,
}

impl Tracker {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            epoch: Instant::now(),
            state: Mutex::default(),
            closing: AtomicUsize::new(0),
            closed: Notify::new(),
            gauge: Gauge::default(),
        }
    }

    /// Keep `gauge` at the number of open connections.
    pub(crate) fn reporting_to(mut self, gauge: Gauge) -> Self {
        self.gauge = gauge;
        self
    }

    /// Shed connections whose sockets are not closed yet.
    pub(crate) fn closing(&self) -> usize {
        self.closing.load(Ordering::Acquire)
    }

    /// Wait until every shed connection has closed its socket, for at most `limit` (a task that
    /// takes longer must not stop the listener).
    pub(crate) async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read, so a close in between is not missed.
            closed.as_mut().enable();
            if self.closing() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return;
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state holds counts only; a panic elsewhere cannot leave it half-updated.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connections currently counted.
    pub(crate) fn open(&self) -> usize {
        self.state().open.len()
    }

    /// Count a new connection from `client`, shedding an idle one first if a cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refused> {
        let client = canonical(client);
        let mut state = self.state();
        if state.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            if !state.shed_idlest(|c| c.client == client) {
                return Err(Refused::ClientCap);
            }
            self.closing.fetch_add(1, Ordering::AcqRel);
        }
        if state.open.len() >= self.max_total {
            if !state.shed_idlest(|_| true) {
                return Err(Refused::TotalCap);
            }
            self.closing.fetch_add(1, Ordering::AcqRel);
        }
        let id = state.next_id;
        state.next_id += 1;
        let conn = Arc::new(Conn {
            id,
            client,
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            shed: CancellationToken::new(),
            handed_off: OnceLock::new(),
        });
        conn.touch();
        state.open.insert(id, conn.clone());
        *state.per_client.entry(client).or_default() += 1;
        self.gauge.set(count(&state));
        Ok(Admitted {
            conn,
            tracker: self.clone(),
        })
    }

    fn release(&self, conn: &Conn) {
        let mut state = self.state();
        state.remove(conn.id);
        self.gauge.set(count(&state));
        drop(state);
        if conn.is_shed() {
            self.closing.fetch_sub(1, Ordering::AcqRel);
            self.closed.notify_waiters();
        }
    }
}

impl State {
    fn remove(&mut self, id: u64) {
        let Some(conn) = self.open.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_client.get_mut(&conn.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&conn.client);
            }
        }
    }

    /// Shed the connection idle the longest among those `eligible`; false when none is idle.
    fn shed_idlest(&mut self, eligible: impl Fn(&Conn) -> bool) -> bool {
        let mut idle: Vec<&Arc<Conn>> = self
            .open
            .values()
            .filter(|c| eligible(c) && c.in_flight.load(Ordering::Acquire) == 0)
            .collect();
        idle.sort_by_key(|c| (c.last_active.load(Ordering::Relaxed), c.id));
        // A candidate may start a request between the scan and the shed; the exchange fails then
        // and the next one is tried.
        let shed = idle.into_iter().find(|c| {
            c.in_flight
                .compare_exchange(0, SHED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        let Some(conn) = shed.cloned() else {
            return false;
        };
        conn.shed.cancel();
        self.remove(conn.id);
        true
    }
}

impl Conn {
    fn is_shed(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == SHED
    }
}

impl Conn {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_active.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Count a request in flight until the guard is dropped; `None` when the connection was shed.
    pub(crate) fn start_request(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != SHED).then(|| n + 1)
            })
            .ok()?;
        self.touch();
        Some(InFlight { conn: self.clone() })
    }

    /// The tracker of work handed off on this connection, made on first use.
    pub(crate) fn handed_off(&self) -> &TaskTracker {
        self.handed_off.get_or_init(TaskTracker::new)
    }

    /// The tracker of work handed off on this connection, if any ever was.
    pub(crate) fn any_handed_off(&self) -> Option<&TaskTracker> {
        self.handed_off.get()
    }

    /// How long the connection has had no request in flight; `None` while one is.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) != 0 {
            return None;
        }
        let since = self.last_active.load(Ordering::Relaxed);
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Resolves when the connection has been shed.
    pub(crate) fn shed(&self) -> &CancellationToken {
        &self.shed
    }
}

/// A counted connection; dropping it (the connection's task ending) uncounts it.
pub(crate) struct Admitted {
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
}

impl Admitted {
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.tracker.release(&self.conn);
    }
}

/// A request in flight on a connection.
pub(crate) struct InFlight {
    conn: Arc<Conn>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.touch();
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connection count as a gauge value (a count never nears `i64::MAX`).
fn count(state: &State) -> i64 {
    i64::try_from(state.open.len()).unwrap_or(i64::MAX)
}

/// IPv4 clients reaching a dual-stack listener appear as `::ffff:a.b.c.d`; count them as the
/// IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// Set a connection's last activity `ago_ms` before now (tests cannot wait for real time).
    fn idle_since(conn: &Conn, ago_ms: u64) {
        conn.last_active
            .store(conn.now_ms().saturating_sub(ago_ms), Ordering::Relaxed);
    }

    fn tracker(total: usize, per_client: usize) -> Arc<Tracker> {
        // An epoch in the past, so "idle since 60 s ago" is a time the clock can show.
        let epoch = Instant::now()
            .checked_sub(Duration::from_secs(100))
            .expect("the monotonic clock has run for 100 s");
        Arc::new(Tracker {
            epoch,
            ..Tracker::new(total, per_client)
        })
    }

    #[tokio::test]
    async fn shed_connections_count_as_closing_until_their_socket_is_dropped() {
        let t = tracker(2, 1);
        let first = t.admit(ip(1)).unwrap();
        idle_since(first.conn(), 1000);
        // Over its share: the client's idle connection is shed, but its socket is still open.
        let second = t.admit(ip(1)).unwrap();
        assert!(first.conn().shed().is_cancelled());
        assert_eq!((t.open(), t.closing()), (1, 1));
        // `settle` waits for it, bounded.
        let started = std::time::Instant::now();
        t.settle(Duration::from_millis(50)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "settle returned early"
        );
        let waiting = {
            let t = t.clone();
            tokio::spawn(async move { t.settle(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert_eq!(t.closing(), 0);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("settle returns once the shed socket is closed")
            .unwrap();
        // A connection that closes without having been shed was never counted as closing.
        drop(second);
        assert_eq!((t.open(), t.closing()), (0, 0));
        t.settle(Duration::from_secs(30)).await;
    }

    #[test]
    fn at_the_total_cap_the_connection_idle_the_longest_is_shed() {
        let t = tracker(3, 3);
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        let c = t.admit(ip(3)).unwrap();
        idle_since(a.conn(), 1000);
        idle_since(b.conn(), 5000);
        idle_since(c.conn(), 3000);
        let _d = t.admit(ip(4)).unwrap();
        assert!(b.conn().shed().is_cancelled(), "b was idle the longest");
        assert!(!a.conn().shed().is_cancelled() && !c.conn().shed().is_cancelled());
        assert_eq!(t.open(), 3);
        drop(b);
        assert_eq!(t.open(), 3, "a shed connection is uncounted only once");
    }

    #[test]
    fn a_connection_with_a_request_in_flight_is_never_shed() {
        let t = tracker(2, 2);
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        idle_since(a.conn(), 9000);
        let busy_a = a.conn().start_request().unwrap();
        let busy_b = b.conn().start_request().unwrap();
        assert_eq!(t.admit(ip(3)).err(), Some(Refused::TotalCap));
        assert!(!a.conn().shed().is_cancelled());
        drop(busy_b);
        let _c = t.admit(ip(3)).unwrap();
        assert!(
            b.conn().shed().is_cancelled(),
            "b became idle, a is still busy"
        );
        assert!(
            b.conn().start_request().is_none(),
            "no request starts on a shed connection"
        );
        drop(busy_a);
    }

    #[test]
    fn a_client_over_its_share_sheds_its_own_idle_connections_not_others() {
        let t = tracker(10, 2);
        let other = t.admit(ip(1)).unwrap();
        idle_since(other.conn(), 60_000);
        let f1 = t.admit(ip(2)).unwrap();
        let f2 = t.admit(ip(2)).unwrap();
        idle_since(f1.conn(), 100);
        idle_since(f2.conn(), 200);
        let _f3 = t.admit(ip(2)).unwrap();
        assert!(f2.conn().shed().is_cancelled());
        assert!(!f1.conn().shed().is_cancelled());
        assert!(
            !other.conn().shed().is_cancelled(),
            "another client's connection is not touched, though idle longer"
        );
        let _busy = f1.conn().start_request().unwrap();
        // f1 busy and f3 idle: f3 goes.
        let _f4 = t.admit(ip(2)).unwrap();
        assert!(_f3.conn().shed().is_cancelled());
        let _busy4 = _f4.conn().start_request().unwrap();
        assert_eq!(t.admit(ip(2)).err(), Some(Refused::ClientCap));
        assert!(t.admit(ip(3)).is_ok(), "other clients are still admitted");
    }

    #[test]
    fn idle_time_counts_from_the_last_request_end() {
        let t = tracker(1, 1);
        let a = t.admit(ip(1)).unwrap();
        idle_since(a.conn(), 5000);
        assert!(a.conn().idle_for().unwrap() >= Duration::from_millis(5000));
        let request = a.conn().start_request().unwrap();
        assert_eq!(a.conn().idle_for(), None);
        drop(request);
        assert!(a.conn().idle_for().unwrap() < Duration::from_millis(1000));
    }

    #[test]
    fn ipv4_mapped_addresses_share_the_ipv4_clients_count() {
        let t = tracker(10, 1);
        let _a = t.admit(ip(1)).unwrap();
        let _busy = _a.conn().start_request().unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(t.admit(mapped).err(), Some(Refused::ClientCap));
    }

    #[test]
    fn the_gauge_follows_the_open_count_through_admits_sheds_and_closes() {
        let gauge = Gauge::default();
        let t = Arc::new(Tracker::new(2, 2).reporting_to(gauge.clone()));
        let first = t.admit(ip(1)).unwrap();
        let second = t.admit(ip(2)).unwrap();
        assert_eq!(gauge.get(), 2);
        // At the cap: the idle first one is shed and the newcomer counted in its place.
        let third = t.admit(ip(3)).unwrap();
        assert_eq!(gauge.get(), 2);
        drop(second);
        assert_eq!(gauge.get(), 1);
        drop((first, third));
        assert_eq!(gauge.get(), 0);
    }
}
