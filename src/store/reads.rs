//! The read side's queries, run the same way on every backend.
//!
//! Both readers hold a sqlx pool of their backend's connections and a `classify` function for
//! its errors; everything else about reading is the same, so it is written once here, as the
//! body of each reader's `impl` block. A macro rather than generic code: sqlx's query builder
//! cannot be run generically over the database (its argument type is not known to shrink to the
//! builder's borrow), and the macro costs nothing at run time.

/// Read methods for a reader type with `pool: sqlx::Pool<$db>`, a method `bounded(context,
/// query)` that runs a query within the backend's time bound and names its error, and a
/// `classify(context, error)` function in scope.
macro_rules! read_methods {
    ($db:ty) => {
        async fn rows(
            &self,
            mut query: sqlx::QueryBuilder<'_, $db>,
            context: &str,
        ) -> Result<Vec<<$db as sqlx::Database>::Row>, $crate::store::StoreError> {
            self.bounded(context, query.build().fetch_all(&self.pool))
                .await
        }

        async fn recorded(
            &self,
            query: sqlx::QueryBuilder<'_, $db>,
            context: &str,
        ) -> Result<Vec<$crate::audit::Recorded>, $crate::store::StoreError> {
            let rows = self.rows(query, context).await?;
            rows.iter()
                .map(|row| $crate::store::queries::recorded_from_row(row, |c, e| classify(c, e)))
                .collect()
        }

        pub(crate) async fn list(
            &self,
            filter: &$crate::store::Filter,
        ) -> Result<Vec<$crate::audit::Recorded>, $crate::store::StoreError> {
            let query = $crate::store::queries::list(filter);
            self.recorded(query, "cannot list audit events").await
        }

        pub(crate) async fn unfinished_operations(
            &self,
        ) -> Result<Vec<$crate::audit::Recorded>, $crate::store::StoreError> {
            let query = $crate::store::queries::unfinished();
            self.recorded(query, "cannot list unfinished operations")
                .await
        }

        pub(crate) async fn last_after(
            &self,
            state_path: &str,
        ) -> Result<Option<$crate::audit::Snapshot>, $crate::store::StoreError> {
            let query = $crate::store::queries::last_after(state_path);
            let last = self
                .recorded(query, "cannot read the last recorded state")
                .await?;
            Ok(last.into_iter().next().and_then(|r| r.event.after))
        }

        /// A page of operation summaries from the operations index (see `operations/sql.rs`),
        /// refused while the index is behind the log (see `operations/index.rs`).
        pub(crate) async fn operation_page(
            &self,
            filter: &$crate::store::operations::OperationFilter,
            before: i64,
            limit: i64,
        ) -> Result<Vec<$crate::store::OperationSummary>, $crate::store::StoreError> {
            use sqlx::Row;
            use $crate::store::operations::index;
            let context = "cannot read the operations index (a log no version of syncgate with \
                           one has opened for writing has none yet: start syncgate on it, or \
                           run `syncgate migrate`)";
            let state = self
                .rows(sqlx::QueryBuilder::new(index::FRESHNESS), context)
                .await?;
            let read = |e| classify(context, e);
            let (through, head): (i64, i64) = match state.first() {
                Some(row) => (
                    row.try_get("through_seq").map_err(read)?,
                    row.try_get("head").map_err(read)?,
                ),
                None => return Err($crate::store::StoreError::corrupt(context)),
            };
            if through < head {
                return Err($crate::store::StoreError::unavailable(format!(
                    "the operations index holds the log through seq {through} of {head}; \
                     syncgate folds the rest when it opens the log for writing (start it, or \
                     run `syncgate migrate`)"
                )));
            }
            let query = $crate::store::operations::page(filter, before, limit);
            let rows = self.rows(query, "cannot list operations").await?;
            rows.iter()
                .map(|row| index::summary_from_row(row, |c, e| classify(c, e)))
                .collect()
        }

        /// Every event of the given operations as stored, unparsed, with its operation id, in
        /// seq order.
        pub(crate) async fn operation_raw_events(
            &self,
            operation_ids: &[String],
        ) -> Result<Vec<(String, $crate::store::operations::RawEvent)>, $crate::store::StoreError>
        {
            if operation_ids.is_empty() {
                return Ok(Vec::new());
            }
            self.raw_rows($crate::store::operations::events_of(operation_ids))
                .await
        }

        /// Every event with a seq in `low..=high` as stored, with its operation id.
        pub(crate) async fn raw_events_between(
            &self,
            low: i64,
            high: i64,
        ) -> Result<Vec<(String, $crate::store::operations::RawEvent)>, $crate::store::StoreError>
        {
            self.raw_rows($crate::store::operations::events_between(low, high))
                .await
        }

        async fn raw_rows(
            &self,
            query: sqlx::QueryBuilder<'_, $db>,
        ) -> Result<Vec<(String, $crate::store::operations::RawEvent)>, $crate::store::StoreError>
        {
            use sqlx::Row;
            let context = "cannot read the operations' events";
            let rows = self.rows(query, context).await?;
            let read = |e| classify(context, e);
            rows.iter()
                .map(|row| {
                    let event = $crate::store::operations::RawEvent {
                        seq: row.try_get("seq").map_err(read)?,
                        prev_hash: row.try_get("prev_hash").map_err(read)?,
                        hash: row.try_get("hash").map_err(read)?,
                        event: row.try_get("event").map_err(read)?,
                    };
                    Ok((row.try_get("operation_id").map_err(read)?, event))
                })
                .collect()
        }

        /// The chain head: the last event's seq and hash (`None` for an empty log).
        pub(crate) async fn head(
            &self,
        ) -> Result<Option<$crate::store::chain::Head>, $crate::store::StoreError> {
            use sqlx::Row;
            let context = "cannot read the chain head";
            let query = sqlx::QueryBuilder::new($crate::store::queries::HEAD);
            let rows = self.rows(query, context).await?;
            let read = |e| classify(context, e);
            rows.first()
                .map(|row| {
                    Ok($crate::store::chain::Head {
                        seq: row.try_get("seq").map_err(read)?,
                        hash: row.try_get("hash").map_err(read)?,
                    })
                })
                .transpose()
        }

        /// Up to a page of whole rows after `after`, exactly as stored (verifying, copying).
        pub(crate) async fn page(
            &self,
            after: i64,
        ) -> Result<$crate::store::queries::Page, $crate::store::StoreError> {
            let query = $crate::store::queries::page(after);
            let rows = self.rows(query, "cannot read the audit log").await?;
            Ok(rows
                .iter()
                .map($crate::store::queries::stored_row)
                .collect())
        }

        /// How many leaves the stored Merkle tree holds, and the chain head's seq (0 for an
        /// empty log), from one snapshot.
        pub(crate) async fn tree_state(&self) -> Result<(u64, i64), $crate::store::StoreError> {
            use sqlx::Row;
            let context = "cannot read the Merkle tree (a log no version of syncgate with one \
                           has opened for writing has none yet: start syncgate on it, or run \
                           `syncgate migrate`)";
            let query = sqlx::QueryBuilder::new($crate::store::tree::STATE);
            let rows = self.rows(query, context).await?;
            let read = |e| classify(context, e);
            let row = rows.first().ok_or_else(|| $crate::store::StoreError::corrupt(context))?;
            let size: i64 = row.try_get("size").map_err(read)?;
            let head: i64 = row.try_get("head").map_err(read)?;
            Ok((u64::try_from(size).unwrap_or(0), head))
        }

        /// The stored hashes of the Merkle nodes `ids` that exist, by id.
        pub(crate) async fn tree_nodes(
            &self,
            ids: &[i64],
        ) -> Result<std::collections::HashMap<i64, $crate::audit::merkle::Hash>, $crate::store::StoreError>
        {
            let mut found = std::collections::HashMap::with_capacity(ids.len());
            for chunk in ids.chunks($crate::store::tree::INSERT_CHUNK) {
                self.nodes_into($crate::store::tree::select_nodes(chunk), &mut found).await?;
            }
            Ok(found)
        }

        /// Add the `(id, hash)` rows of `merkle_nodes` that `query` selects to `found`.
        async fn nodes_into(
            &self,
            query: sqlx::QueryBuilder<'_, $db>,
            found: &mut std::collections::HashMap<i64, $crate::audit::merkle::Hash>,
        ) -> Result<(), $crate::store::StoreError> {
            use sqlx::Row;
            let context = "cannot read the Merkle tree";
            for row in self.rows(query, context).await? {
                let read = |e| classify(context, e);
                let id: i64 = row.try_get("id").map_err(read)?;
                let hash: Vec<u8> = row.try_get("hash").map_err(read)?;
                found.insert(id, $crate::store::tree::hash_from(&hash, || format!("Merkle node {id}"))?);
            }
            Ok(())
        }

        /// Whether the log has the Merkle tables (migration 0005): a log no syncgate with them
        /// has opened for writing (an older copy, read as it is) has none to check.
        pub(crate) async fn has_tree(&self) -> Result<bool, $crate::store::StoreError> {
            use sqlx::Row;
            let context = "cannot read the log's migrations";
            let rows = self
                .rows(sqlx::QueryBuilder::new($crate::store::tree::HAS_TREE), context)
                .await?;
            let count: i64 = match rows.first() {
                Some(row) => row.try_get("migrated").map_err(|e| classify(context, e))?,
                None => 0,
            };
            Ok(count > 0)
        }

        /// The size and root of every checkpoint stored in the log, smallest first.
        pub(crate) async fn checkpoint_roots(
            &self,
        ) -> Result<Vec<(u64, $crate::audit::merkle::Hash)>, $crate::store::StoreError> {
            use sqlx::Row;
            let context = "cannot read the signed checkpoints";
            let rows = self
                .rows(sqlx::QueryBuilder::new($crate::store::tree::CHECKPOINT_ROOTS), context)
                .await?;
            rows.iter()
                .map(|row| {
                    let read = |e| classify(context, e);
                    let size: i64 = row.try_get("size").map_err(read)?;
                    let root: Vec<u8> = row.try_get("root").map_err(read)?;
                    let root = $crate::store::tree::hash_from(&root, || {
                        format!("the root of checkpoint {size}")
                    })?;
                    Ok((u64::try_from(size).unwrap_or(0), root))
                })
                .collect()
        }

        /// Approval requests `query` selects, with their votes.
        pub(crate) async fn approvals_where(
            &self,
            query: sqlx::QueryBuilder<'_, $db>,
        ) -> Result<Vec<$crate::approvals::Approval>, $crate::store::StoreError> {
            use $crate::store::approvals as sql;
            let context = "cannot read approval requests";
            let rows = self.rows(query, context).await?;
            let mut approvals = rows
                .iter()
                .map(|row| sql::approval_from_row(row, |c, e| classify(c, e)))
                .collect::<Result<Vec<_>, _>>()?;
            if approvals.is_empty() {
                return Ok(approvals);
            }
            let ids: Vec<String> = approvals.iter().map(|a| a.id.clone()).collect();
            let rows = self
                .rows(sql::votes_of(&ids), "cannot read approval votes")
                .await?;
            for row in &rows {
                let (id, vote) = sql::vote_from_row(row, |c, e| classify(c, e))?;
                if let Some(a) = approvals.iter_mut().find(|a| a.id == id) {
                    a.votes.push(vote);
                }
            }
            Ok(approvals)
        }

        /// Webhook notices due at `now`.
        pub(crate) async fn due_notices(
            &self,
            now: &chrono::DateTime<chrono::Utc>,
            limit: i64,
        ) -> Result<Vec<$crate::store::approvals::StoredNotice>, $crate::store::StoreError> {
            use $crate::store::approvals as sql;
            let rows = self
                .rows(sql::due_notices(now, limit), "cannot read the webhook outbox")
                .await?;
            rows.iter()
                .map(|row| sql::notice_from_row(row, |c, e| classify(c, e)))
                .collect()
        }

        /// Requests pending, and undelivered notices with the earliest next attempt.
        pub(crate) async fn approval_gauges(
            &self,
        ) -> Result<(i64, i64, Option<String>), $crate::store::StoreError> {
            use sqlx::Row;
            use $crate::store::approvals as sql;
            let context = "cannot count approval requests";
            let read = |e| classify(context, e);
            let pending = self
                .rows(sqlx::QueryBuilder::new(sql::COUNT_PENDING), context)
                .await?;
            let pending: i64 = match pending.first() {
                Some(row) => row.try_get("n").map_err(read)?,
                None => 0,
            };
            let outbox = self
                .rows(sqlx::QueryBuilder::new(sql::OUTBOX_STATE), context)
                .await?;
            let (waiting, next) = match outbox.first() {
                Some(row) => (
                    row.try_get::<i64, _>("n").map_err(read)?,
                    row.try_get::<Option<String>, _>("next").map_err(read)?,
                ),
                None => (0, None),
            };
            Ok((pending, waiting, next))
        }

        /// How far each witness was delivered.
        pub(crate) async fn witness_states(
            &self,
        ) -> Result<Vec<$crate::store::witness::WitnessState>, $crate::store::StoreError> {
            use sqlx::Row;
            let context = "cannot read the witnesses' state";
            let rows = self
                .rows(sqlx::QueryBuilder::new($crate::store::witness::STATES), context)
                .await?;
            rows.iter()
                .map(|row| {
                    let read = |e| classify(context, e);
                    let delivered: i64 = row.try_get("delivered").map_err(read)?;
                    let attempts: i64 = row.try_get("attempts").map_err(read)?;
                    Ok($crate::store::witness::WitnessState {
                        witness: row.try_get("witness").map_err(read)?,
                        delivered: u64::try_from(delivered).unwrap_or(0),
                        attempts: u64::try_from(attempts).unwrap_or(0),
                        last_error: row.try_get("last_error").map_err(read)?,
                        last_attempt: row.try_get("last_attempt").map_err(read)?,
                    })
                })
                .collect()
        }

        /// The witnesses' co-signatures of the checkpoints `sizes`.
        pub(crate) async fn cosignatures(
            &self,
            sizes: &[i64],
        ) -> Result<Vec<$crate::store::witness::Cosignature>, $crate::store::StoreError> {
            use sqlx::Row;
            if sizes.is_empty() {
                return Ok(Vec::new());
            }
            let context = "cannot read the witnesses' co-signatures";
            let rows = self
                .rows($crate::store::witness::cosignatures_of(sizes), context)
                .await?;
            rows.iter()
                .map(|row| {
                    let read = |e| classify(context, e);
                    let size: i64 = row.try_get("size").map_err(read)?;
                    Ok($crate::store::witness::Cosignature {
                        size: u64::try_from(size).unwrap_or(0),
                        witness: row.try_get("witness").map_err(read)?,
                        time: row.try_get("time").map_err(read)?,
                        signature: row.try_get("signature").map_err(read)?,
                    })
                })
                .collect()
        }

        /// The stored checkpoints `query` selects (`tree::checkpoints`,
        /// `witness::checkpoints_after`).
        pub(crate) async fn checkpoints(
            &self,
            query: sqlx::QueryBuilder<'_, $db>,
        ) -> Result<Vec<$crate::store::tree::StoredCheckpoint>, $crate::store::StoreError> {
            use sqlx::Row;
            let context = "cannot read the signed checkpoints";
            let rows = self.rows(query, context).await?;
            rows.iter()
                .map(|row| {
                    let read = |e| classify(context, e);
                    let size: i64 = row.try_get("size").map_err(read)?;
                    let root: Vec<u8> = row.try_get("root").map_err(read)?;
                    Ok($crate::store::tree::StoredCheckpoint {
                        size: u64::try_from(size).map_err(|_| {
                            $crate::store::StoreError::corrupt("a checkpoint's size is negative")
                        })?,
                        root: $crate::store::tree::hash_from(&root, || {
                            format!("the root of checkpoint {size}")
                        })?,
                        time: row.try_get("time").map_err(read)?,
                        note: row.try_get("note").map_err(read)?,
                    })
                })
                .collect()
        }

        /// Up to `limit` admin reads recorded after `after`, oldest first.
        pub(crate) async fn admin_reads(
            &self,
            after: i64,
            limit: u32,
        ) -> Result<Vec<$crate::store::ReadRecord>, $crate::store::StoreError> {
            let query = $crate::store::admin_reads::list(after, limit);
            let rows = self.rows(query, "cannot list the admin reads").await?;
            rows.iter()
                .map(|row| $crate::store::admin_reads::from_row(row, |c, e| classify(c, e)))
                .collect()
        }

        /// Verify the chain, noting the tree's root at `sizes`, and compare every node of the
        /// stored Merkle tree's first `tree_size` events with the one the events make.
        pub(crate) async fn verify(
            &self,
            sizes: &[u64],
            tree_size: u64,
        ) -> Result<$crate::store::VerifyReport, $crate::store::StoreError> {
            let mut check = $crate::store::queries::ChainCheck::with_roots_at(sizes, tree_size);
            let mut tree = None;
            loop {
                let rows = self.page(check.after()).await?;
                let finished = check.page(rows);
                let nodes = check.take_nodes();
                if tree.is_none() && !nodes.is_empty() {
                    tree = self.compare_nodes(&nodes).await?;
                }
                if let Some(mut report) = finished {
                    if report.first_broken.is_none() {
                        report.operations_index = self.verify_index().await?;
                        report.tree = tree;
                    }
                    return Ok(report);
                }
            }
        }

        /// The first of `nodes` (computed from the events) that the stored tree lacks or holds
        /// with another hash.
        async fn compare_nodes(
            &self,
            nodes: &[($crate::audit::merkle::Node, $crate::audit::merkle::Hash)],
        ) -> Result<Option<$crate::store::TreeMismatch>, $crate::store::StoreError> {
            use $crate::store::tree;
            // A page's nodes up to level `NEAR` lie in one short run of ids (a node's in-order
            // number is about twice its last leaf's index): read that run in one range scan,
            // and the few higher ones by id.
            const NEAR: u32 = 9;
            let near: Vec<i64> = nodes
                .iter()
                .filter(|(n, _)| n.level <= NEAR)
                .map(|(n, _)| tree::node_id(*n))
                .collect();
            let far: Vec<i64> = nodes
                .iter()
                .filter(|(n, _)| n.level > NEAR)
                .map(|(n, _)| tree::node_id(*n))
                .collect();
            let mut stored = self.tree_nodes(&far).await?;
            if let (Some(low), Some(high)) = (near.iter().min(), near.iter().max()) {
                self.nodes_into(tree::nodes_between(*low, *high), &mut stored).await?;
            }
            Ok(nodes.iter().find_map(|(node, hash)| {
                let found = stored.get(&$crate::store::tree::node_id(*node));
                (found != Some(hash)).then(|| {
                    let leaves = node.leaves();
                    $crate::store::TreeMismatch {
                        kind: "tree",
                        size: leaves.end,
                        reason: format!(
                            "the stored Merkle tree's node over events {} to {} {}; it is \
                             derived, not evidence: `syncgate audit reindex` rebuilds it",
                            leaves.start + 1,
                            leaves.end,
                            if found.is_none() { "is missing" } else { "is not the events' hash" }
                        ),
                    }
                })
            }))
        }

        /// Check the operations index against the (verified) events: the first disagreement.
        async fn verify_index(
            &self,
        ) -> Result<Option<$crate::store::IndexMismatch>, $crate::store::StoreError> {
            use sqlx::Row;
            use $crate::store::operations::index;
            use $crate::store::operations::index_check::{self, IndexCheck};
            let context = "cannot verify the operations index";
            let read = |e| classify(context, e);
            let number = |rows: &[<$db as sqlx::Database>::Row], column: &str| {
                let row = rows.first().ok_or_else(|| $crate::store::StoreError::corrupt(context))?;
                row.try_get::<i64, _>(column).map_err(read)
            };
            // A log no syncgate with the index has opened for writing (a copy of an older log,
            // read as it is) has no index to check: nothing reads one, the operations queries
            // refuse such a log, and its chain alone is the evidence.
            let migrated = self.rows(sqlx::QueryBuilder::new(index_check::HAS_INDEX), context).await?;
            if number(&migrated, "migrated")? == 0 {
                return Ok(None);
            }
            let state = self.rows(sqlx::QueryBuilder::new(index::FRESHNESS), context).await?;
            let (through, head) = (number(&state, "through_seq")?, number(&state, "head")?);
            if let Some(mismatch) = IndexCheck::freshness(through, head) {
                return Ok(Some(mismatch));
            }
            let mut check = IndexCheck::default();
            loop {
                let rows = self.rows(index_check::rows_after(check.after()), context).await?;
                let summaries = rows
                    .iter()
                    .map(|row| index::summary_from_row(row, |c, e| classify(c, e)))
                    .collect::<Result<Vec<_>, _>>()?;
                let (Some(first), Some(last)) = (summaries.first(), summaries.last()) else {
                    break;
                };
                let ids: Vec<String> = summaries
                    .iter()
                    .map(|s| s.operation_id.uuid().hyphenated().to_string())
                    .collect();
                let events = self
                    .recorded($crate::store::operations::events_of(&ids), context)
                    .await?;
                let actor_rows = self
                    .rows(index_check::actors_between(first.first_seq, last.first_seq), context)
                    .await?;
                let actors = actor_rows
                    .iter()
                    .map(|row| Ok((row.try_get("actor").map_err(read)?, row.try_get("first_seq").map_err(read)?)))
                    .collect::<Result<Vec<(String, i64)>, $crate::store::StoreError>>()?;
                if let Some(mismatch) = check.page(&summaries, events, actors) {
                    return Ok(Some(mismatch));
                }
            }
            let counts = self.rows(sqlx::QueryBuilder::new(index_check::COUNTS), context).await?;
            Ok(check.totals(number(&counts, "operations")?, number(&counts, "actors")?))
        }
    };
}

pub(crate) use read_methods;
