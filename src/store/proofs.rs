//! Proofs from the stored Merkle tree (`tree.rs`): inclusion and consistency proofs, tree
//! roots at any size the tree holds, the signed checkpoints, and evidence packs.
//!
//! Every proof is a few ranges of leaves (`audit/merkle.rs`), each the fold of at most one
//! stored node per level, so a proof at a million events reads at most 40 nodes in one query,
//! whatever the log's size. The stored nodes are not evidence; a proof built from an altered
//! node fails verification against the signed root, which is the point of signing it.

use std::ops::Range;

use super::tree::StoredCheckpoint;
use super::{ReadBackend, StoreError, StoreReader, TreeMismatch, VerifyReport};
use crate::audit::evidence::{EvidenceEvent, EvidencePack, FORMAT};
use crate::audit::kept::{self, Kept};
use crate::audit::merkle::{self, Hash};
use crate::audit::note::Checkpoint;
use crate::graph::OperationId;

/// How the reader answers a question the stored tree cannot (yet) answer.
fn beyond(size: u64, held: u64) -> StoreError {
    StoreError::NotInTree { size, held }
}

impl StoreReader {
    /// Whether the log has the Merkle tree and checkpoint tables (migration 0005).
    pub(crate) async fn has_tree(&self) -> Result<bool, StoreError> {
        on_backend!(self, r => r.has_tree().await)
    }

    /// How many events the stored tree holds. Below the head while it catches up (a log
    /// written before the tree existed, hashed in at the writer's next open).
    pub(crate) async fn tree_size(&self) -> Result<u64, StoreError> {
        Ok(on_backend!(self, r => r.tree_state().await)?.0)
    }

    /// The hash of each of `ranges` of the tree of `size` events, from its stored nodes read in
    /// one query. A node that is missing is a tree the log does not reach ([`beyond`]) when
    /// `size` is more than the stored tree holds, else a damaged tree. Asking the stored size
    /// only then keeps a proof to one round trip.
    async fn range_hashes(
        &self,
        ranges: &[Range<u64>],
        size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        let nodes: Vec<merkle::Node> = ranges
            .iter()
            .flat_map(|r| merkle::perfect_nodes(r.clone()))
            .collect();
        // The tree's last leaf too: a proof may need no node of it (an inclusion proof never
        // holds its own leaf), but a tree that lacks it does not reach `size`.
        let last_leaf = merkle::Node {
            level: 0,
            index: size.saturating_sub(1),
        };
        let mut ids: Vec<i64> = nodes.iter().map(|n| super::tree::node_id(*n)).collect();
        ids.push(super::tree::node_id(last_leaf));
        ids.sort_unstable();
        ids.dedup();
        let found = on_backend!(self, r => r.tree_nodes(&ids).await)?;
        if let Some(missing) = std::iter::once(&last_leaf)
            .chain(&nodes)
            .find(|n| !found.contains_key(&super::tree::node_id(**n)))
        {
            let held = self.tree_size().await?;
            if size > held {
                return Err(beyond(size, held));
            }
            return Err(StoreError::corrupt(format!(
                "the stored Merkle tree of {held} events lacks node {} (level {}, index {})",
                super::tree::node_id(*missing),
                missing.level,
                missing.index
            )));
        }
        let lookup = |node: merkle::Node| {
            found
                .get(&super::tree::node_id(node))
                .copied()
                .ok_or_else(|| StoreError::corrupt("a Merkle node vanished"))
        };
        ranges
            .iter()
            .map(|range| {
                merkle::range_hash(range.clone(), lookup)?
                    .ok_or_else(|| StoreError::corrupt("an empty range in a proof"))
            })
            .collect()
    }

    /// The tree's root at `size` events (the empty tree's for 0).
    pub(crate) async fn tree_root(&self, size: u64) -> Result<Hash, StoreError> {
        if size == 0 {
            return Ok(merkle::empty_root());
        }
        let whole = 0..size;
        Ok(self
            .range_hashes(std::slice::from_ref(&whole), size)
            .await?[0])
    }

    /// The inclusion proof of the event `seq` in the tree of `size` events.
    pub(crate) async fn inclusion_proof(
        &self,
        seq: u64,
        size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        let ranges = seq
            .checked_sub(1)
            .and_then(|index| merkle::inclusion_ranges(index, size))
            .ok_or(StoreError::NotInTree {
                size: seq,
                held: size,
            })?;
        self.range_hashes(&ranges, size).await
    }

    /// The consistency proof from the tree of `old` events to the tree of `new`.
    pub(crate) async fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        let ranges = merkle::consistency_ranges(old, new).ok_or_else(|| StoreError::Invalid {
            context: format!("a consistency proof needs 0 < old ≤ new (old {old}, new {new})"),
        })?;
        if ranges.is_empty() {
            // old = new: the empty proof, of a tree the log must still reach.
            let held = self.tree_size().await?;
            if new > held {
                return Err(beyond(new, held));
            }
        }
        self.range_hashes(&ranges, new).await
    }

    /// Up to `limit` stored checkpoints of at most `at_most` events, largest first.
    pub(crate) async fn checkpoints(
        &self,
        at_most: u64,
        limit: i64,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        on_backend!(self, r => r.checkpoints(super::tree::checkpoints(at_most, limit)).await)
    }

    /// Up to `limit` stored checkpoints above `size` events, smallest first (what a witness
    /// at `size` lacks).
    pub(crate) async fn checkpoints_after(
        &self,
        size: u64,
        limit: i64,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        on_backend!(self, r => r.checkpoints(super::witness::checkpoints_after(size, limit)).await)
    }

    /// How far each witness was delivered.
    pub(crate) async fn witness_states(
        &self,
    ) -> Result<Vec<super::witness::WitnessState>, StoreError> {
        on_backend!(self, r => r.witness_states().await)
    }

    /// The witnesses' co-signatures of the checkpoints `sizes`.
    pub(crate) async fn cosignatures(
        &self,
        sizes: &[u64],
    ) -> Result<Vec<super::witness::Cosignature>, StoreError> {
        let sizes: Vec<i64> = sizes
            .iter()
            .map(|s| (*s).min(i64::MAX as u64) as i64)
            .collect();
        on_backend!(self, r => r.cosignatures(&sizes).await)
    }

    /// The largest stored checkpoint.
    pub(crate) async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoints(u64::MAX, 1).await?.into_iter().next())
    }

    /// Verify the chain (noting the tree's root at `sizes` and wherever the log's own Merkle
    /// data needs it), then check that data against the events: each checkpoint stored in the
    /// log must be of a size the log still reaches and have the events' root there; the stored
    /// tree must have it too.
    pub(super) async fn verify_with_tree(&self, sizes: &[u64]) -> Result<VerifyReport, StoreError> {
        let has_tree = self.has_tree().await?;
        let (stored, tree_size) = if has_tree {
            (
                on_backend!(self, r => r.checkpoint_roots().await)?,
                Some(self.tree_size().await?),
            )
        } else {
            (Vec::new(), None)
        };
        let mut wanted = sizes.to_vec();
        wanted.extend(stored.iter().map(|(size, _)| *size));
        wanted.extend(tree_size);
        let mut report = on_backend!(self, r => r.verify(&wanted, tree_size.unwrap_or(0)).await)?;
        if report.first_broken.is_some() {
            return Ok(report);
        }
        report.checkpoints_checked = stored.len() as u64;
        // The signed checkpoints are evidence; the stored nodes' mismatch comes second.
        if let Some(mismatch) = stored_checkpoints_mismatch(&stored, &report) {
            report.tree = Some(mismatch);
        }
        // Only the caller's sizes are the caller's business.
        report.roots_at.retain(|size, _| sizes.contains(size));
        Ok(report)
    }

    /// The evidence pack of one operation: its events, each with its inclusion proof in the
    /// tree of the latest signed checkpoint. `Ok(None)` for an operation the log does not
    /// hold; [`StoreError::NotInTree`] while its newest event is beyond the latest checkpoint
    /// (the writer signs one within its interval).
    pub(crate) async fn evidence(
        &self,
        operation_id: OperationId,
    ) -> Result<Option<EvidencePack>, StoreError> {
        let id = operation_id.uuid().hyphenated().to_string();
        let ids = std::slice::from_ref(&id);
        let events = on_backend!(self, r => r.operation_raw_events(ids).await)?;
        let Some(last) = events.last().map(|(_, e)| e.seq) else {
            return Ok(None);
        };
        let checkpoint = self.latest_checkpoint().await?;
        let checkpoint = match checkpoint {
            Some(c) if c.size >= last as u64 => c,
            other => {
                return Err(StoreError::NotYetSigned {
                    seq: last as u64,
                    signed: other.map_or(0, |c| c.size),
                });
            }
        };
        let mut packed = Vec::with_capacity(events.len());
        for (_, event) in events {
            let seq = event.seq as u64;
            let proof = self.inclusion_proof(seq, checkpoint.size).await?;
            packed.push(EvidenceEvent::new(seq, event.event, &proof));
        }
        Ok(Some(EvidencePack {
            format: FORMAT.to_owned(),
            operation_id: id,
            checkpoint: checkpoint.note,
            events: packed,
        }))
    }
}

/// The first checkpoint stored in the log that the verified events contradict: the log no
/// longer reaches its size (its tail was cut), or has another root there (rewritten after it
/// was signed). `stored` is smallest first.
fn stored_checkpoints_mismatch(
    stored: &[(u64, Hash)],
    report: &VerifyReport,
) -> Option<TreeMismatch> {
    let kept: Vec<Kept> = stored
        .iter()
        .map(|(size, root)| Kept {
            name: format!("stored in the log at {size} events"),
            checkpoint: Checkpoint {
                origin: String::new(),
                size: *size,
                root: *root,
                extensions: Vec::new(),
            },
        })
        .collect();
    kept::assess(&kept, report.events, &report.roots_at)
        .into_iter()
        .find(|finding| !finding.is_match())
        .map(|finding| TreeMismatch {
            kind: finding.kind(),
            size: finding.size(),
            reason: finding.to_string(),
        })
}
