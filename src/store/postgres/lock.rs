//! Cross-replica per-partner locks: PostgreSQL session advisory locks, one pooled session per
//! lock held.
//!
//! A session lock is released when its session ends, so a replica that dies (killed, its host
//! gone) releases its partners' locks with it: PostgreSQL ends the session when the socket closes,
//! and the TCP keepalives set below end it when the host vanishes without closing anything. The
//! flip side is that a session which *may* still hold a lock must never go back to the pool, where
//! the next borrower would hold a lock nobody knows about: a connection goes back only after
//! `pg_advisory_unlock` said it released the lock, or after `pg_advisory_lock` failed with an
//! answer from the server (the lock was not taken). Every other path — a failed unlock, an
//! acquire cancelled while its query was in flight, a network error — closes the connection, and
//! PostgreSQL releases whatever it held.
//!
//! Keys live in the single 64-bit advisory key space, derived from the lock key string under a
//! namespace of their own, so they never meet another advisory lock syncgate takes (the writer's
//! chain-head lock, [`CHAIN_HEAD_KEY`]).

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use tracing::warn;

use super::classify;
use crate::store::StoreError;

/// What the key strings are hashed under, so partner locks have a key space of their own.
const NAMESPACE: &[u8] = b"syncgate per-partner lock v1\0";

/// The writer's chain-head lock: a partner lock never uses this key.
use super::CHAIN_LOCK as CHAIN_HEAD_KEY;

/// How long past the wait limit the client waits for the server's own timeout to answer before
/// giving up on the connection (a server that does not answer at all: a network partition).
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// Idle seconds, probe interval and probe count of the server's TCP keepalives on lock sessions:
/// a replica whose host vanishes without closing its sockets loses its locks within about 25s
/// instead of the kernel's default two hours.
const KEEPALIVES: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
];

/// Gives out cross-replica locks; cheap to clone (the clones share one pool).
#[derive(Clone)]
pub(crate) struct AdvisoryLocks {
    /// Sessions for held locks and waiters only: its size caps the partners this replica can
    /// lock at once (further ones wait for a session, within `wait`).
    pool: PgPool,
    /// Longest wait for a lock (or a session to wait in); past it the change gets 503.
    wait: Duration,
}

impl std::fmt::Debug for AdvisoryLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryLocks")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl AdvisoryLocks {
    /// A pool of at most `max_connections` sessions to the database `options` names: one per
    /// partner this replica changes at once, plus one for recovery. Connects lazily, so building
    /// it never fails and never waits for the server; must run inside a Tokio runtime.
    pub(crate) fn new(options: PgConnectOptions, max_connections: u32, wait: Duration) -> Self {
        // `lock_timeout` bounds the wait for the lock (0 would mean "no limit", hence at least
        // 1ms); `statement_timeout`, a little longer so the lock's own timeout answers first,
        // bounds the unlock.
        let lock_timeout = format!("{}ms", wait.as_millis().max(1));
        let statement_timeout = format!("{}ms", (wait + ANSWER_MARGIN / 2).as_millis());
        let options = options
            .options([
                ("lock_timeout", lock_timeout),
                ("statement_timeout", statement_timeout),
            ])
            .options(KEEPALIVES);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(wait)
            .connect_lazy_with(options);
        AdvisoryLocks { pool, wait }
    }

    /// Wait (at most the wait limit) until no other session, in this replica or another, holds
    /// `key`, and hold it until the guard is dropped. [`StoreError::Unavailable`] when the wait
    /// runs out or PostgreSQL cannot be reached; then nothing is held.
    pub(crate) async fn lock(&self, key: &str) -> Result<AdvisoryGuard, StoreError> {
        let id = advisory_key(key);
        // Normally the server's `lock_timeout` answers first; this bounds a silent server.
        match tokio::time::timeout(self.wait + ANSWER_MARGIN, self.acquire(id)).await {
            Ok(taken) => taken.map_err(|e| e.context(key)),
            // The acquire future was dropped mid-query: its session closed (see `Session`).
            Err(_) => Err(StoreError::unavailable(format!(
                "PostgreSQL did not answer within {:?} while taking the lock on {key:?}",
                self.wait + ANSWER_MARGIN
            ))),
        }
    }

    async fn acquire(&self, id: i64) -> Result<AdvisoryGuard, LockError> {
        let conn = self.pool.acquire().await.map_err(LockError::Session)?;
        let mut session = Session(Some(conn));
        let taken = sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(id)
            .execute(session.conn())
            .await;
        match taken {
            Ok(_) => Ok(AdvisoryGuard {
                key: id,
                session: Some(session),
                wait: self.wait,
            }),
            Err(error) => {
                // The server answered with an error: the lock was not taken and the session is
                // in step, so it may serve again. Anything else closes it (`Session`'s drop).
                if matches!(error, sqlx::Error::Database(_)) {
                    session.into_pool();
                }
                Err(LockError::Lock(error))
            }
        }
    }

    /// Close every idle session and refuse new locks (held guards still release theirs).
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// A held advisory lock. Dropping it releases the lock in a spawned task; [`Self::release`]
/// releases it in place.
pub(crate) struct AdvisoryGuard {
    key: i64,
    /// `None` once released.
    session: Option<Session>,
    wait: Duration,
}

impl std::fmt::Debug for AdvisoryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryGuard")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl AdvisoryGuard {
    /// Release the lock: returns once another session can take it (the unlock answered, or the
    /// session was closed), at most about the wait limit later.
    pub(crate) async fn release(mut self) {
        if let Some(session) = self.session.take() {
            unlock(session, self.key, self.wait).await;
        }
    }
}

impl Drop for AdvisoryGuard {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (key, wait) = (self.key, self.wait);
                runtime.spawn(unlock(session, key, wait));
            }
            // No runtime to unlock in: closing the session releases the lock.
            Err(_) => drop(session),
        }
    }
}

/// Unlock `key` on `session`; the session goes back to the pool only when PostgreSQL confirms it
/// released the lock, and is closed otherwise.
async fn unlock(mut session: Session, key: i64, wait: Duration) {
    let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .fetch_one(session.conn());
    match tokio::time::timeout(wait + ANSWER_MARGIN, unlocked).await {
        Ok(Ok(true)) => session.into_pool(),
        Ok(Ok(false)) => {
            warn!("a partner lock was not held when released; closing its PostgreSQL session");
        }
        Ok(Err(error)) => {
            warn!(%error, "could not release a partner lock; closing its PostgreSQL session, which releases it");
        }
        Err(_) => {
            warn!(
                "PostgreSQL did not answer a partner lock's release; closing its session, which releases it"
            );
        }
    }
}

/// A pooled connection that may hold an advisory lock. Dropped, it is closed rather than returned
/// to the pool; [`Session::into_pool`] returns it, for the paths that know it holds no lock.
struct Session(Option<PoolConnection<Postgres>>);

impl Session {
    fn conn(&mut self) -> &mut PgConnection {
        self.0
            .as_deref_mut()
            .expect("a session has its connection until it is consumed")
    }

    fn into_pool(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(mut conn) = self.0.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Sends Terminate and closes the socket in a spawned task; PostgreSQL ends the
            // session (and releases its locks) when it reads it.
            conn.close_on_drop();
            drop(conn);
        } else {
            // No runtime to close it gracefully in: dropping the bare connection closes its
            // socket, which ends the session too.
            drop(conn.detach());
        }
    }
}

/// The 64-bit advisory key for the lock key string `key`: the first 8 bytes of
/// sha256(namespace ‖ key), never the chain-head key.
fn advisory_key(key: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(NAMESPACE)
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    avoid_reserved(i64::from_be_bytes(first))
}

/// `key`, moved off the keys other syncgate locks use (a 2^-64 chance, made impossible).
fn avoid_reserved(key: i64) -> i64 {
    if key == CHAIN_HEAD_KEY { key ^ 1 } else { key }
}

/// Why a lock could not be taken, before it is named for the caller.
enum LockError {
    /// No session to wait in (pool exhausted past the wait limit, cannot connect).
    Session(sqlx::Error),
    /// `pg_advisory_lock` failed (`lock_timeout`, a dropped connection, ...).
    Lock(sqlx::Error),
}

impl LockError {
    fn context(self, key: &str) -> StoreError {
        match self {
            LockError::Session(e) => classify(
                format!("no PostgreSQL session to take the lock on {key:?} in"),
                e,
            ),
            LockError::Lock(e) => classify(format!("cannot take the lock on {key:?}"), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Instant;

    use sqlx::{Connection, Row};

    use super::*;
    use crate::store::StoreLocation;
    use crate::store::test_log::{Backend, TestLog};

    /// A database of its own for one test (advisory locks are per database, so tests running
    /// at once never see each other's locks), dropped with it.
    struct TestDatabase(TestLog);

    impl TestDatabase {
        async fn create() -> Self {
            TestDatabase(TestLog::new(Backend::Postgres).await)
        }

        fn options(&self) -> PgConnectOptions {
            let StoreLocation::Postgres(url) = &self.0.location else {
                unreachable!("a PostgreSQL test log")
            };
            PgConnectOptions::from_str(url).unwrap()
        }

        /// A replica's locks: a pool of its own, as each replica has.
        fn replica(&self, wait: Duration) -> AdvisoryLocks {
            AdvisoryLocks::new(self.options(), 4, wait)
        }

        async fn observer(&self) -> PgConnection {
            PgConnection::connect_with(&self.options()).await.unwrap()
        }
    }

    /// The advisory locks in this database: (backend pid, granted).
    async fn advisory(observer: &mut PgConnection) -> Vec<(i32, bool)> {
        sqlx::query(
            "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(observer)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get("pid"), row.get("granted")))
        .collect()
    }

    /// Poll the database's advisory locks until `done` holds (10s at most).
    async fn until(
        observer: &mut PgConnection,
        what: &str,
        done: impl Fn(&[(i32, bool)]) -> bool,
    ) -> Vec<(i32, bool)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let locks = advisory(observer).await;
            if done(&locks) {
                return locks;
            }
            assert!(Instant::now() < deadline, "{what}: still {locks:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn waiting(locks: &[(i32, bool)]) -> usize {
        locks.iter().filter(|(_, granted)| !granted).count()
    }

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_key_is_exclusive_across_replicas_and_other_keys_are_free() {
        let db = TestDatabase::create().await;
        let mut observer = db.observer().await;
        let (one, two) = (db.replica(LONG), db.replica(LONG));
        let held = one.lock("partner-a").await.unwrap();
        // Another key is free on the other replica at once.
        let other = tokio::time::timeout(Duration::from_secs(5), two.lock("partner-b"))
            .await
            .expect("another key does not wait")
            .unwrap();
        let waiter = tokio::spawn({
            let two = two.clone();
            async move { two.lock("partner-a").await }
        });
        until(&mut observer, "the second replica waits", |l| {
            waiting(l) == 1
        })
        .await;
        assert!(!waiter.is_finished());
        drop(held);
        let taken = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets the lock once it is dropped")
            .unwrap();
        assert!(taken.is_ok());
        drop((taken, other));
        until(&mut observer, "every lock released", <[_]>::is_empty).await;
    }

    #[tokio::test]
    async fn a_released_lock_returns_its_session_to_the_pool() {
        let db = TestDatabase::create().await;
        let mut observer = db.observer().await;
        let locks = db.replica(LONG);
        let first = locks.lock("partner").await.unwrap();
        first.release().await;
        assert!(advisory(&mut observer).await.is_empty());
        idle_session(&locks).await;
        // Dropping (not releasing) unlocks in the background, and keeps the session too.
        drop(locks.lock("partner").await.unwrap());
        until(&mut observer, "the dropped lock released", <[_]>::is_empty).await;
        idle_session(&locks).await;
    }

    /// Wait until `locks`' pool holds exactly one session, idle (sqlx returns sessions to the
    /// pool in a spawned task).
    async fn idle_session(locks: &AdvisoryLocks) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while (locks.pool.size(), locks.pool.num_idle()) != (1, 1) {
            assert!(
                Instant::now() < deadline,
                "the session never came back: {} sessions, {} idle",
                locks.pool.size(),
                locks.pool.num_idle()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_dead_holder_releases_its_lock_to_the_waiter() {
        let db = TestDatabase::create().await;
        let mut observer = db.observer().await;
        let (one, two) = (db.replica(LONG), db.replica(LONG));
        let held = one.lock("partner").await.unwrap();
        let holder = until(&mut observer, "the lock is held", |l| l.len() == 1).await[0].0;
        let waiter = tokio::spawn(async move { two.lock("partner").await });
        until(&mut observer, "the second replica waits", |l| {
            waiting(l) == 1
        })
        .await;
        // The holding replica "dies": PostgreSQL ends its session.
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(holder)
            .fetch_one(&mut observer)
            .await
            .unwrap();
        assert!(killed);
        let taken = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets the dead holder's lock")
            .unwrap()
            .unwrap();
        let now = until(&mut observer, "only the waiter holds it", |l| l.len() == 1).await;
        assert!(now[0].0 != holder && now[0].1);
        // The dead holder's guard cannot unlock; it closes its session without disturbing anyone.
        held.release().await;
        assert_eq!(advisory(&mut observer).await.len(), 1);
        drop(taken);
    }

    #[tokio::test]
    async fn a_wait_past_the_limit_is_unavailable_and_holds_nothing() {
        let db = TestDatabase::create().await;
        let mut observer = db.observer().await;
        let one = db.replica(LONG);
        let two = db.replica(Duration::from_millis(300));
        let _held = one.lock("partner").await.unwrap();
        let started = Instant::now();
        let error = two.lock("partner").await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(error.is_unavailable(), "{error:?}");
        // The server's lock_timeout answered (not the client's margin), so the session stays.
        let source = std::error::Error::source(&error).unwrap().to_string();
        assert!(source.contains("lock timeout"), "{source}");
        assert_eq!(advisory(&mut observer).await.len(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_acquire_leaves_no_lock_held() {
        let db = TestDatabase::create().await;
        let mut observer = db.observer().await;
        let (one, two, three) = (db.replica(LONG), db.replica(LONG), db.replica(LONG));
        let held = one.lock("partner").await.unwrap();
        let cancelled = tokio::spawn({
            let two = two.clone();
            async move { two.lock("partner").await }
        });
        until(&mut observer, "the second replica waits", |l| {
            waiting(l) == 1
        })
        .await;
        // The caller goes away while `pg_advisory_lock` is in flight.
        cancelled.abort();
        assert!(cancelled.await.unwrap_err().is_cancelled());
        held.release().await;
        // Were the cancelled session back in the pool, it would have taken the lock as soon as it
        // was free and kept it there: the third replica would wait in vain.
        let third = tokio::time::timeout(LONG, three.lock("partner"))
            .await
            .expect("the lock is free")
            .unwrap();
        let now = until(&mut observer, "only the third replica holds it", |l| {
            l.len() == 1
        })
        .await;
        assert!(now[0].1);
        third.release().await;
        // The replica whose acquire was cancelled can lock again.
        two.lock("partner").await.unwrap().release().await;
        assert!(advisory(&mut observer).await.is_empty());
        two.close().await;
        assert!(two.lock("partner").await.unwrap_err().is_unavailable());
    }

    #[test]
    fn keys_are_stable_distinct_and_never_the_chain_head_key() {
        assert_eq!(advisory_key("partner-a"), advisory_key("partner-a"));
        assert_ne!(advisory_key("partner-a"), advisory_key("partner-b"));
        assert_ne!(advisory_key(""), CHAIN_HEAD_KEY);
        assert_eq!(avoid_reserved(CHAIN_HEAD_KEY), CHAIN_HEAD_KEY ^ 1);
        assert_eq!(avoid_reserved(42), 42);
        // Pinned: replicas of different versions must agree on every key.
        assert_eq!(advisory_key("partner-a"), 8_508_544_964_919_669_468);
    }

    #[test]
    fn failures_a_retry_may_fix_are_unavailable() {
        for error in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            assert!(classify("x", error).is_unavailable());
        }
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(classify("x", sqlx::Error::Io(io)).is_unavailable());
        assert!(!classify("x", sqlx::Error::RowNotFound).is_unavailable());
    }
}
