//! The Merkle tree's storage (migration 0005): its perfect nodes, written by the writer in the
//! events' own transaction, and the checkpoints the writer signs.
//!
//! # Why perfect nodes, keyed by their in-order number
//!
//! A perfect node (2^level leaves, aligned) never changes once complete, so the table is
//! append-only in practice, and every hash a proof needs is one of them or the fold of a few
//! (`audit/merkle.rs`). An append of one leaf completes one node per level it merges: two rows
//! per event on average. Numbering node `(level, index)` by its place in an in-order walk,
//! `(2·index + 1)·2^level − 1`, gives each a single integer key (SQLite's rowid), unique across
//! levels.
//!
//! # What keeps it honest
//!
//! - Same transaction: the nodes of an append commit with its events or not at all, so
//!   `merkle_state.size` equals the chain head in every snapshot once the tree has caught up.
//! - The writer keeps the tree's right edge ([`Frontier`]) between groups and reloads it from
//!   the table (at most one node per level) when the head is not where it left it: another
//!   process or replica appended meanwhile.
//! - Catch-up: a log written before the tree existed is hashed in at the writer's open, a page
//!   per transaction under the write lock, like the operations index.
//! - It is not evidence: anyone who can write the database can write these rows. Signed
//!   checkpoints are, and `syncgate audit verify` recomputes the tree from the events and
//!   compares the stored one and every stored checkpoint with it.

use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::audit::merkle::{Frontier, Hash, Node, leaf_hash};
use crate::store::StoreError;

/// Rows of `merkle_nodes` per INSERT: two parameters each, far below both databases' limits.
pub(crate) const INSERT_CHUNK: usize = 400;

/// Events hashed into the tree per catch-up transaction.
pub(crate) const CATCH_UP_PAGE: i64 = 5000;

/// How many leaves the stored tree holds.
pub(crate) const SIZE: &str = "SELECT size FROM merkle_state WHERE id = 1";

/// How many leaves the stored tree holds and the chain head, from one snapshot (a reader's
/// check that the tree is current).
pub(crate) const STATE: &str = "SELECT m.size, \
    COALESCE((SELECT MAX(seq) FROM audit_events), 0) AS head \
    FROM merkle_state m WHERE m.id = 1";

/// Whether migration 0005 ran on this log.
pub(crate) const HAS_TREE: &str =
    "SELECT COUNT(*) AS migrated FROM _sqlx_migrations WHERE version = 5 AND success";

/// The size and root of every stored checkpoint, smallest first (verify checks each).
pub(crate) const CHECKPOINT_ROOTS: &str = "SELECT size, root FROM checkpoints ORDER BY size";

/// Empty the stored tree (`syncgate audit reindex` rebuilds it from the events).
pub(crate) const CLEAR: [&str; 2] = [
    "DELETE FROM merkle_nodes",
    "UPDATE merkle_state SET size = 0",
];

/// The key of node `(level, index)` in `merkle_nodes`: its in-order number.
pub(crate) fn node_id(node: Node) -> i64 {
    let id = ((node.index << 1) | 1) << node.level;
    // A tree of i64::MAX leaves is far beyond any log; the cast cannot wrap below that.
    (id - 1) as i64
}

/// A stored hash, which must be 32 bytes.
pub(crate) fn hash_from(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(format!("{} is not a 32-byte hash", what())))
}

/// Add the leaves of `events` (stored canonical texts, in seq order) to `frontier`; the nodes
/// this completes, to store.
pub(crate) fn grow<'e>(
    frontier: &mut Frontier,
    events: impl IntoIterator<Item = &'e str>,
) -> Vec<(Node, Hash)> {
    let mut nodes = Vec::new();
    for event in events {
        nodes.extend(frontier.push(leaf_hash(event.as_bytes())));
    }
    nodes
}

/// `SELECT id, hash` of the nodes `ids`.
pub(crate) fn select_nodes<'a, DB>(ids: &[i64]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT id, hash FROM merkle_nodes WHERE id IN ");
    super::queries::push_list(&mut q, ids);
    q
}

/// `SELECT id, hash` of the nodes whose ids are in `low..=high` (one range scan).
pub(crate) fn nodes_between<'a, DB>(low: i64, high: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT id, hash FROM merkle_nodes WHERE id >= ");
    q.push_bind(low).push(" AND id <= ").push_bind(high);
    q
}

/// INSERT of `nodes` (at most [`INSERT_CHUNK`]).
pub(crate) fn insert_nodes<'a, DB>(nodes: &[(Node, Hash)]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    Vec<u8>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("INSERT INTO merkle_nodes (id, hash) ");
    q.push_values(nodes, |mut row, (node, hash)| {
        row.push_bind(node_id(*node)).push_bind(hash.to_vec());
    });
    q
}

/// Set how many leaves the stored tree holds.
pub(crate) fn set_size<'a, DB>(size: u64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE merkle_state SET size = ");
    q.push_bind(size as i64).push(" WHERE id = 1");
    q
}

/// The seq and stored text of up to `limit` events after seq `after`.
pub(crate) fn leaves_after<'a, DB>(after: u64, limit: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT seq, event FROM audit_events WHERE seq > ");
    q.push_bind(after as i64)
        .push(" ORDER BY seq LIMIT ")
        .push_bind(limit);
    q
}

/// A checkpoint as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredCheckpoint {
    pub(crate) size: u64,
    pub(crate) root: Hash,
    /// RFC 3339, seconds, UTC: the `time` line of the note's body.
    pub(crate) time: String,
    /// The signed note, exactly as signed.
    pub(crate) note: String,
}

/// INSERT of `checkpoint`, unless one of that size is already stored (another replica signed
/// the same tree: the same root, since the leaves are the same).
pub(crate) fn insert_checkpoint<'a, DB>(checkpoint: &StoredCheckpoint) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    Vec<u8>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("INSERT INTO checkpoints (size, root, time, note) VALUES (");
    q.push_bind(checkpoint.size as i64)
        .push(", ")
        .push_bind(checkpoint.root.to_vec())
        .push(", ")
        .push_bind(checkpoint.time.clone())
        .push(", ")
        .push_bind(checkpoint.note.clone())
        .push(") ON CONFLICT (size) DO NOTHING");
    q
}

/// The start of a SELECT of stored checkpoints by size, for the comparison to follow.
pub(crate) const SELECT_CHECKPOINTS: &str =
    "SELECT size, root, time, note FROM checkpoints WHERE size";

/// The stored checkpoints, largest first, at most `limit`, at or below `at_most` leaves.
pub(crate) fn checkpoints<'a, DB>(at_most: u64, limit: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!("{SELECT_CHECKPOINTS} <= "));
    q.push_bind(at_most.min(i64::MAX as u64) as i64)
        .push(" ORDER BY size DESC LIMIT ")
        .push_bind(limit);
    q
}

/// Where the next page of a walk through the stored checkpoints, largest first
/// ([`checkpoints`]), starts after `page`: below its smallest size; `None` when there is no
/// more (an empty page, or one that reached size 1).
pub(crate) fn next_below(page: &[StoredCheckpoint]) -> Option<u64> {
    page.last()
        .and_then(|smallest| smallest.size.checked_sub(1))
        .filter(|below| *below > 0)
}

/// Writer-side tree code for a backend, as `index_writes!` is for the operations index: the
/// same SQL, run on that backend's connection type with its `classify`.
macro_rules! tree_writes {
    ($db:ty, $conn:ty) => {
        /// How many leaves the stored tree holds.
        async fn stored_tree_size(conn: &mut $conn) -> Result<u64, $crate::store::StoreError> {
            let size: i64 = sqlx::query_scalar($crate::store::tree::SIZE)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| classify("cannot read the Merkle tree's size", e))?;
            u64::try_from(size).map_err(|_| {
                $crate::store::StoreError::corrupt("the Merkle tree's size is negative")
            })
        }

        /// The right edge of the stored tree of `size` leaves.
        async fn stored_frontier(
            conn: &mut $conn,
            size: u64,
        ) -> Result<$crate::audit::merkle::Frontier, $crate::store::StoreError> {
            use sqlx::Row;
            use $crate::store::tree;
            let nodes = $crate::audit::merkle::perfect_nodes(0..size);
            if nodes.is_empty() {
                return Ok($crate::audit::merkle::Frontier::new());
            }
            let ids: Vec<i64> = nodes.iter().map(|n| tree::node_id(*n)).collect();
            let rows = tree::select_nodes::<$db>(&ids)
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| classify("cannot read the Merkle tree", e))?;
            let mut found = std::collections::HashMap::with_capacity(rows.len());
            for row in &rows {
                let read = |e| classify("cannot read the Merkle tree", e);
                let id: i64 = row.try_get("id").map_err(read)?;
                let hash: Vec<u8> = row.try_get("hash").map_err(read)?;
                found.insert(id, tree::hash_from(&hash, || format!("Merkle node {id}"))?);
            }
            $crate::audit::merkle::Frontier::restore(size, |node| {
                let id = tree::node_id(node);
                found.get(&id).copied().ok_or_else(|| {
                    $crate::store::StoreError::corrupt(format!(
                        "the Merkle tree of {size} leaves lacks node {id}"
                    ))
                })
            })
        }

        /// Store the nodes `grown` completed and the tree's new size, in the caller's
        /// transaction.
        async fn store_growth(
            conn: &mut $conn,
            grown: &[($crate::audit::merkle::Node, $crate::audit::merkle::Hash)],
            size: u64,
        ) -> Result<(), $crate::store::StoreError> {
            use $crate::store::tree;
            let write = |e| classify("cannot add to the Merkle tree", e);
            for chunk in grown.chunks(tree::INSERT_CHUNK) {
                tree::insert_nodes::<$db>(chunk)
                    .build()
                    .execute(&mut *conn)
                    .await
                    .map_err(write)?;
            }
            tree::set_size::<$db>(size)
                .build()
                .execute(&mut *conn)
                .await
                .map_err(write)?;
            Ok(())
        }

        /// Add `rows` (just inserted after the head `head`) to the tree, in the caller's
        /// transaction. `cached` is the edge the writer kept from its last commit; it is used
        /// when the head has not moved since, and reloaded otherwise. The tree's new edge, or
        /// `None` when the stored tree is behind the log (catching up is the open's job) and
        /// was left alone.
        async fn grow_tree(
            conn: &mut $conn,
            cached: Option<&$crate::audit::merkle::Frontier>,
            head: i64,
            rows: &[$crate::store::chain::StoredRow],
        ) -> Result<Option<$crate::audit::merkle::Frontier>, $crate::store::StoreError> {
            let head = u64::try_from(head).unwrap_or(0);
            let mut frontier = match cached {
                Some(edge) if edge.size() == head => edge.clone(),
                _ => {
                    let size = stored_tree_size(conn).await?;
                    if size != head {
                        return Ok(None);
                    }
                    stored_frontier(conn, size).await?
                }
            };
            let grown =
                $crate::store::tree::grow(&mut frontier, rows.iter().map(|r| r.event.as_str()));
            store_growth(conn, &grown, frontier.size()).await?;
            Ok(Some(frontier))
        }

        /// Hash the next page of events the stored tree lacks into it; its new size, `None`
        /// when it was already current. The caller holds the write lock and commits.
        async fn catch_up_tree_page(
            conn: &mut $conn,
        ) -> Result<Option<u64>, $crate::store::StoreError> {
            use sqlx::Row;
            use $crate::store::tree;
            let size = stored_tree_size(conn).await?;
            let rows = tree::leaves_after::<$db>(size, tree::CATCH_UP_PAGE)
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| classify("cannot read the audit log", e))?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut frontier = stored_frontier(conn, size).await?;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let read = |e| classify("cannot read the audit log", e);
                let seq: i64 = row.try_get("seq").map_err(read)?;
                if u64::try_from(seq).ok() != Some(size + events.len() as u64 + 1) {
                    return Err($crate::store::StoreError::corrupt(format!(
                        "event seq {seq} is not where the Merkle tree's next leaf must be"
                    )));
                }
                events.push(row.try_get::<String, _>("event").map_err(read)?);
            }
            let grown = tree::grow(&mut frontier, events.iter().map(String::as_str));
            store_growth(conn, &grown, frontier.size()).await?;
            Ok(Some(frontier.size()))
        }

        /// Hash into the tree whatever events it lacks (a log written before it existed), a
        /// page per transaction under the write lock; the size it then has, when it moved.
        async fn catch_up_tree(conn: &mut $conn) -> Result<Option<u64>, $crate::store::StoreError> {
            let mut reached = None;
            loop {
                let mut tx = begin_locked_transaction(conn).await?;
                let Some(size) = catch_up_tree_page(&mut tx).await? else {
                    tx.rollback()
                        .await
                        .map_err(|e| classify("cannot end a read of the Merkle tree", e))?;
                    return Ok(reached);
                };
                tx.commit()
                    .await
                    .map_err(|e| classify("cannot commit to the Merkle tree", e))?;
                reached = Some(size);
            }
        }

        /// Empty the stored tree and hash the whole log into it again (`syncgate audit
        /// reindex`), in one transaction under the write lock, as `rebuild_index` does; the
        /// size it then has.
        pub(crate) async fn rebuild_tree(
            conn: &mut $conn,
        ) -> Result<u64, $crate::store::StoreError> {
            let mut tx = begin_locked_transaction(conn).await?;
            for statement in $crate::store::tree::CLEAR {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify("cannot empty the Merkle tree", e))?;
            }
            let mut size = 0;
            while let Some(reached) = catch_up_tree_page(&mut tx).await? {
                size = reached;
            }
            tx.commit()
                .await
                .map_err(|e| classify("cannot commit the rebuilt Merkle tree", e))?;
            Ok(size)
        }

        /// Store a signed checkpoint (kept if one of that size is there already).
        async fn insert_checkpoint(
            conn: &mut $conn,
            checkpoint: &$crate::store::tree::StoredCheckpoint,
        ) -> Result<(), $crate::store::StoreError> {
            $crate::store::tree::insert_checkpoint::<$db>(checkpoint)
                .build()
                .execute(&mut *conn)
                .await
                .map_err(|e| classify("cannot store the signed checkpoint", e))?;
            Ok(())
        }

        /// The size of the largest stored checkpoint (0 when there is none).
        async fn last_checkpoint_size(conn: &mut $conn) -> Result<u64, $crate::store::StoreError> {
            let size: Option<i64> = sqlx::query_scalar("SELECT MAX(size) FROM checkpoints")
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| classify("cannot read the signed checkpoints", e))?;
            Ok(size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
        }
    };
}

pub(crate) use tree_writes;

/// Say what catching the tree up did (not fatal, like the index's: checkpoints and proofs wait
/// for a tree that holds the whole log).
pub(crate) fn catch_up_logged(result: Result<Option<u64>, StoreError>) {
    match result {
        Ok(None) => {}
        Ok(Some(size)) => {
            tracing::info!(size, "Merkle tree: hashed in the events it did not hold")
        }
        Err(error) => tracing::warn!(
            %error,
            "Merkle tree: cannot hash in the log's earlier events; no checkpoint is signed and \
             no proof is given until it can"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_the_in_order_numbers_and_never_collide() {
        let node = |level, index| Node { level, index };
        assert_eq!(node_id(node(0, 0)), 0);
        assert_eq!(node_id(node(1, 0)), 1);
        assert_eq!(node_id(node(0, 1)), 2);
        assert_eq!(node_id(node(2, 0)), 3);
        assert_eq!(node_id(node(0, 2)), 4);
        assert_eq!(node_id(node(1, 1)), 5);
        let mut seen = std::collections::HashSet::new();
        for level in 0..=12 {
            for index in 0..(4096 >> level) {
                assert!(seen.insert(node_id(node(level, index))), "{level}/{index}");
            }
        }
        // Every id below 8191 is used exactly once by the nodes of a 4096-leaf tree.
        assert_eq!(seen.len(), 8191);
        assert!(seen.iter().all(|id| (0..8191).contains(id)));
    }

    #[test]
    fn a_walk_through_the_checkpoints_goes_below_each_page_until_size_one() {
        let page = |sizes: &[u64]| -> Vec<StoredCheckpoint> {
            sizes
                .iter()
                .map(|size| StoredCheckpoint {
                    size: *size,
                    root: [0; 32],
                    time: String::new(),
                    note: String::new(),
                })
                .collect()
        };
        assert_eq!(next_below(&page(&[3000, 2000])), Some(1999));
        assert_eq!(next_below(&page(&[5, 2])), Some(1));
        assert_eq!(next_below(&page(&[5, 1])), None);
        assert_eq!(next_below(&page(&[])), None);
    }

    #[test]
    fn growing_stores_every_perfect_node_once_and_restores_the_same_edge() {
        let events: Vec<String> = (0..37).map(|i| format!("{{\"seq\":{}}}", i + 1)).collect();
        let mut frontier = Frontier::new();
        let mut stored = std::collections::HashMap::new();
        for chunk in events.chunks(5) {
            for (node, hash) in grow(&mut frontier, chunk.iter().map(String::as_str)) {
                assert!(stored.insert(node_id(node), hash).is_none());
            }
            let size = frontier.size();
            let restored =
                Frontier::restore(size, |n| stored.get(&node_id(n)).copied().ok_or(())).unwrap();
            assert_eq!(restored, frontier);
        }
        assert_eq!(frontier.size(), 37);
        // 37 leaves, 18 + 9 + 4 + 2 + 1 inner nodes.
        assert_eq!(stored.len(), 37 + 18 + 9 + 4 + 2 + 1);
    }
}
