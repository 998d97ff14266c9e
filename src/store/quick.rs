//! Quick verification against signed checkpoints (`syncgate audit verify --quick --key VKEY`).
//!
//! A signed checkpoint commits to the exact bytes of every event up to its size (they are the
//! tree's leaves). So the events up to the largest checkpoint that still matches need no more
//! than one pass of hashing: each row's stored text is hashed as a leaf (and as a chain link,
//! which checks the `hash` and `prev_hash` columns too), with nothing parsed. Only the events
//! after it, which no signature covers yet, get the full check (canonical form, filter
//! columns, a valid event). What the quick pass leaves out, and says so: the filter columns of
//! the signed events and the operations index, both derived copies that the full verification
//! checks.
//!
//! The pass reads the next page while it hashes the last one (on a blocking thread), so the
//! database and the hashing overlap.

use std::collections::{BTreeMap, BTreeSet};

use super::chain::{Broken, Head, Verifier, link_hash};
use super::{ReadBackend, StoreError, StoreReader};
use crate::audit::merkle::{Frontier, Hash, leaf_hash};

/// Rows per page of the quick pass.
pub(crate) const QUICK_PAGE: i64 = 2000;

/// One row as the quick pass reads it.
pub(crate) struct RawLink {
    pub(crate) seq: i64,
    pub(crate) event: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

/// What the quick pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuickReport {
    /// Events whose link and leaf were checked (all of them when `first_broken` is `None`).
    pub(crate) events: u64,
    pub(crate) first_broken: Option<Broken>,
    /// The tree's root and the chain's head at each size asked for that the log reaches.
    pub(crate) roots_at: BTreeMap<u64, Hash>,
    pub(crate) heads_at: BTreeMap<u64, String>,
    /// The last link checked.
    pub(crate) head: Head,
}

/// The quick pass's state: the chain's head and the tree so far.
#[derive(Debug, Clone)]
pub(crate) struct QuickCheck {
    head: Head,
    tree: Frontier,
    sizes: BTreeSet<u64>,
    roots: BTreeMap<u64, Hash>,
    heads: BTreeMap<u64, String>,
}

impl QuickCheck {
    pub(crate) fn new(sizes: &[u64]) -> QuickCheck {
        QuickCheck {
            head: Head::empty(),
            tree: Frontier::new(),
            sizes: sizes.iter().copied().collect(),
            roots: BTreeMap::new(),
            heads: BTreeMap::new(),
        }
    }

    /// Check a page of rows; the first broken one.
    pub(crate) fn page(&mut self, rows: &[RawLink]) -> Result<(), Broken> {
        for row in rows {
            self.check(row)?;
        }
        Ok(())
    }

    fn check(&mut self, row: &RawLink) -> Result<(), Broken> {
        let broken = |reason: String| Broken {
            seq: row.seq,
            event_id: String::new(),
            reason,
        };
        let expected = self.head.seq + 1;
        if row.seq != expected {
            return Err(broken(format!(
                "seq {} where seq {expected} was expected",
                row.seq
            )));
        }
        if row.prev_hash != self.head.hash {
            return Err(broken(format!(
                "prev_hash {} is not the previous event's hash {}",
                row.prev_hash, self.head.hash
            )));
        }
        let recomputed = link_hash(&row.prev_hash, &row.event);
        if row.hash != recomputed {
            return Err(broken(format!(
                "hash {} does not match the stored event (recomputed {recomputed})",
                row.hash
            )));
        }
        self.tree.push(leaf_hash(row.event.as_bytes()));
        self.head = Head {
            seq: row.seq,
            hash: row.hash.clone(),
        };
        let size = self.tree.size();
        if self.sizes.contains(&size) {
            self.roots.insert(size, self.tree.root());
            self.heads.insert(size, row.hash.clone());
        }
        Ok(())
    }

    fn report(self, first_broken: Option<Broken>) -> QuickReport {
        QuickReport {
            events: self.tree.size(),
            first_broken,
            roots_at: self.roots,
            heads_at: self.heads,
            head: self.head,
        }
    }
}

impl StoreReader {
    /// The quick pass over the whole log, noting the tree's root and the chain's head at each
    /// of `sizes`.
    pub(crate) async fn verify_quickly(&self, sizes: &[u64]) -> Result<QuickReport, StoreError> {
        let mut check = QuickCheck::new(sizes);
        let mut rows = on_backend!(self, r => r.raw_links(0, QUICK_PAGE).await)?;
        while let Some(last) = rows.last().map(|r| r.seq) {
            let hashing = tokio::task::spawn_blocking(move || {
                let result = check.page(&rows);
                (check, result)
            });
            let (next, hashed) = tokio::join!(
                async { on_backend!(self, r => r.raw_links(last, QUICK_PAGE).await) },
                hashing
            );
            let (returned, result) = hashed.map_err(|e| StoreError::Internal {
                context: format!("the hashing thread failed: {e}"),
                source: None,
            })?;
            check = returned;
            if let Err(broken) = result {
                return Ok(check.report(Some(broken)));
            }
            rows = next?;
        }
        Ok(check.report(None))
    }

    /// The full check (as `verify`) of the events after `from`, a link already verified:
    /// how many verified, and the first broken one.
    pub(crate) async fn verify_after(
        &self,
        from: Head,
    ) -> Result<(u64, Option<Broken>), StoreError> {
        let mut verifier = Verifier::after(from.clone());
        let mut after = from.seq;
        loop {
            let rows = self.page(after).await?;
            if rows.is_empty() {
                return Ok((verifier.events(), None));
            }
            for row in rows {
                let checked = row.and_then(|row| {
                    after = row.seq;
                    verifier.check(&row)
                });
                if let Err(broken) = checked {
                    return Ok((verifier.events(), Some(broken)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chain::GENESIS;

    fn chain(texts: &[&str]) -> Vec<RawLink> {
        let mut prev = GENESIS.to_owned();
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let hash = link_hash(&prev, text);
                RawLink {
                    seq: i as i64 + 1,
                    event: (*text).to_owned(),
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                }
            })
            .collect()
    }

    #[test]
    fn the_quick_pass_notes_roots_and_heads_and_names_a_broken_link() {
        let texts = ["{\"seq\":1}", "{\"seq\":2}", "{\"seq\":3}"];
        let rows = chain(&texts);
        let mut check = QuickCheck::new(&[2, 3, 9]);
        check.page(&rows).unwrap();
        let report = check.report(None);
        assert_eq!(report.events, 3);
        let mut tree = Frontier::new();
        tree.push(leaf_hash(texts[0].as_bytes()));
        tree.push(leaf_hash(texts[1].as_bytes()));
        assert_eq!(report.roots_at[&2], tree.root());
        assert_eq!(report.heads_at[&2], rows[1].hash);
        assert!(!report.roots_at.contains_key(&9));

        let mut edited = chain(&texts);
        edited[1].event = "{\"seq\":22}".into();
        let mut check = QuickCheck::new(&[]);
        let broken = check.page(&edited).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert!(
            broken.reason.contains("does not match the stored event"),
            "{}",
            broken.reason
        );
        let mut gap = chain(&texts);
        gap.remove(1);
        let broken = QuickCheck::new(&[]).page(&gap).unwrap_err();
        assert_eq!(broken.seq, 3);
    }
}

/// What a quick verification against signed checkpoints found (`StoreReader::verify_signed`).
#[derive(Debug, Clone)]
pub(crate) struct SignedVerification {
    pub(crate) pass: QuickReport,
    /// Every checkpoint judged (those kept elsewhere, then those stored in the log), in order.
    pub(crate) findings: Vec<crate::audit::kept::Finding>,
    /// How many checkpoints the log stores, and the sizes of those not signed by the key.
    pub(crate) stored: usize,
    pub(crate) forged: Vec<u64>,
    /// The events the signatures cover: the largest size a checkpoint matches (0: none).
    pub(crate) covered: u64,
    /// The events after `covered`, checked in full: how many verified, the first broken.
    pub(crate) tail: (u64, Option<Broken>),
}

impl SignedVerification {
    /// Whether the log holds: every link and leaf, every checkpoint, the unsigned tail.
    pub(crate) fn ok(&self) -> bool {
        self.pass.first_broken.is_none()
            && self.forged.is_empty()
            && self
                .findings
                .iter()
                .all(crate::audit::kept::Finding::is_match)
            && self.tail.1.is_none()
    }
}

impl StoreReader {
    /// Verify the log against `kept` (checkpoints kept elsewhere) and the checkpoints stored in
    /// it that `key` signed: one hashing pass over every event, then the full check of the
    /// events no matching checkpoint covers. A stored checkpoint `key` did not sign is named
    /// (`forged`), not trusted.
    pub(crate) async fn verify_signed(
        &self,
        key: &crate::audit::note::Verifier,
        mut kept: Vec<crate::audit::kept::Kept>,
    ) -> Result<SignedVerification, StoreError> {
        use crate::audit::kept::{Kept, assess};
        use crate::audit::note::Checkpoint;
        let mut stored = Vec::new();
        if self.has_tree().await? {
            let mut at_most = u64::MAX;
            loop {
                let page = self.checkpoints(at_most, 1000).await?;
                let Some(smallest) = page.last().map(|c| c.size) else {
                    break;
                };
                stored.extend(page);
                match smallest.checked_sub(1) {
                    Some(below) if below > 0 => at_most = below,
                    _ => break,
                }
            }
        }
        let mut forged = Vec::new();
        let count = stored.len();
        for checkpoint in stored.into_iter().rev() {
            let signed = key
                .open(&checkpoint.note)
                .ok()
                .and_then(|body| Checkpoint::parse(body).ok())
                .filter(|c| {
                    c.origin == key.name() && c.size == checkpoint.size && c.root == checkpoint.root
                });
            match signed {
                Some(signed) => kept.push(Kept {
                    name: format!("stored in the log at {} events", signed.size),
                    checkpoint: signed,
                }),
                None => forged.push(checkpoint.size),
            }
        }
        let sizes: Vec<u64> = kept.iter().map(|k| k.checkpoint.size).collect();
        let pass = self.verify_quickly(&sizes).await?;
        let mut verification = SignedVerification {
            findings: Vec::new(),
            stored: count,
            forged,
            covered: 0,
            tail: (0, None),
            pass,
        };
        if verification.pass.first_broken.is_some() {
            return Ok(verification);
        }
        let pass = &verification.pass;
        verification.findings = assess(&kept, pass.events, &pass.roots_at);
        if !verification.ok() {
            return Ok(verification);
        }
        let covered = verification
            .findings
            .iter()
            .filter_map(|f| match f {
                crate::audit::kept::Finding::Matches { size, .. } => Some(*size),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let from = match pass.heads_at.get(&covered) {
            Some(hash) => Head {
                seq: covered as i64,
                hash: hash.clone(),
            },
            None => Head::empty(),
        };
        verification.covered = from.seq as u64;
        verification.tail = self.verify_after(from).await?;
        Ok(verification)
    }
}
