//! One governed change per partner at a time: a lock per partner (or the template), held from the
//! before-read to the after-read, so the recorded before and after belong to this change alone.
//!
//! Two layers. The in-process mutex serialises this replica's changes, so only one waiter per key
//! talks to the database. When replicas share a PostgreSQL log the store also hands out advisory
//! locks ([`AdvisoryLocks`]), taken after the local one, which serialise replicas; PostgreSQL
//! releases a dead replica's locks with its session. With SQLite one process owns the log and the
//! local mutex is the whole lock.
//!
//! Local locks live only while someone holds or waits for them (the map keeps weak references),
//! so the map does not grow with every tenant ever seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::OwnedMutexGuard;

use crate::store::{AdvisoryGuard, AdvisoryLocks, StoreError};

#[derive(Default)]
pub(crate) struct Locks {
    held: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// The cross-replica layer; `None` when this process owns the log alone.
    advisory: Option<AdvisoryLocks>,
}

/// Held while a change runs; the next change for the same key (in any replica) waits for its drop.
pub(crate) struct LockGuard {
    /// `None` only once dropped.
    local: Option<OwnedMutexGuard<()>>,
    advisory: Option<AdvisoryGuard>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(advisory) = self.advisory.take() else {
            return;
        };
        // The local lock is kept until the advisory one is released, so the next change in this
        // replica asks PostgreSQL for a free lock instead of queueing a second session behind it.
        let local = self.local.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                advisory.release().await;
                drop(local);
            });
        }
    }
}

impl Locks {
    /// Locks that also take `advisory`'s cross-replica lock when there is one.
    pub(crate) fn new(advisory: Option<AdvisoryLocks>) -> Self {
        Locks {
            held: Mutex::default(),
            advisory,
        }
    }

    /// Wait for `key`: first in this process, then across replicas. An advisory lock that cannot
    /// be had (PostgreSQL down, the wait limit passed) is [`StoreError::Unavailable`], and nothing
    /// is held.
    pub(crate) async fn lock(&self, key: &str) -> Result<LockGuard, StoreError> {
        let local = self.local(key).lock_owned().await;
        let advisory = match &self.advisory {
            Some(advisory) => Some(advisory.lock(key).await?),
            None => None,
        };
        Ok(LockGuard {
            local: Some(local),
            advisory,
        })
    }

    fn local(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get(key).and_then(Weak::upgrade) {
            Some(lock) => lock,
            None => {
                held.retain(|_, weak| weak.strong_count() > 0);
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                held.insert(key.to_owned(), Arc::downgrade(&lock));
                lock
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_same_key_is_exclusive_and_other_keys_are_not() {
        let locks = Arc::new(Locks::default());
        let first = locks.lock("a").await.unwrap();
        // Another key is free.
        let _b = locks.lock("b").await.unwrap();
        // The same key waits until the first guard is dropped.
        let l = locks.clone();
        let waiter = tokio::spawn(async move { l.lock("a").await.map(drop) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_database_is_unavailable_and_leaves_the_key_free() {
        let options: sqlx::postgres::PgConnectOptions =
            "postgres://postgres@127.0.0.1:1/none".parse().unwrap();
        let advisory = AdvisoryLocks::new(options, 2, Duration::from_millis(300));
        let locks = Locks::new(Some(advisory));
        // Twice: had the first failure kept the local lock, the second would wait for ever.
        for _ in 0..2 {
            let error = tokio::time::timeout(Duration::from_secs(5), locks.lock("a"))
                .await
                .expect("a failed lock does not hang")
                .map(drop)
                .unwrap_err();
            assert!(error.is_unavailable(), "{error:?}");
        }
    }

    #[tokio::test]
    async fn released_locks_are_forgotten() {
        let locks = Locks::default();
        for i in 0..100 {
            drop(locks.lock(&format!("k{i}")).await.unwrap());
        }
        let _g = locks.lock("last").await.unwrap();
        assert_eq!(locks.held.lock().unwrap().len(), 1);
    }
}
