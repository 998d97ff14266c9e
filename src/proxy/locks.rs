//! One governed change per partner at a time: a lock per partner (or the template), held from the
//! before-read to the after-read, so the recorded before and after belong to this change alone.
//!
//! Locks live only while someone holds or waits for them (the map keeps weak references), so the
//! map does not grow with every tenant ever seen. With several replicas sharing PostgreSQL these
//! become advisory locks in the store (a later issue); in one process this is enough.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub(crate) struct Locks {
    held: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held while a change runs; the next change for the same key waits for its drop.
pub(crate) type LockGuard = OwnedMutexGuard<()>;

impl Locks {
    pub(crate) async fn lock(&self, key: &str) -> LockGuard {
        let lock = {
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
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_same_key_is_exclusive_and_other_keys_are_not() {
        let locks = Arc::new(Locks::default());
        let first = locks.lock("a").await;
        // Another key is free.
        let _b = locks.lock("b").await;
        // The same key waits until the first guard is dropped.
        let l = locks.clone();
        let waiter = tokio::spawn(async move { l.lock("a").await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn released_locks_are_forgotten() {
        let locks = Locks::default();
        for i in 0..100 {
            drop(locks.lock(&format!("k{i}")).await);
        }
        let _g = locks.lock("last").await;
        assert_eq!(locks.held.lock().unwrap().len(), 1);
    }
}
