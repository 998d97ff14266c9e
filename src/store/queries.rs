//! The store's SQL, written once for every backend.
//!
//! SQLite and PostgreSQL hold the same tables with the same column types (see the migrations),
//! and the queries here use nothing but standard SQL. What differs is only how a parameter is
//! spelled (`?` or `$1`), which sqlx's [`QueryBuilder`] fills in for each database, and how a
//! row's columns are decoded, which the generic functions below leave to the backend's own types.
//! A backend module then only runs these queries on its connections and sorts its errors.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::chain::{self, Broken, Columns, StoredRow, Verifier};
use super::{Filter, StoreError, VerifyReport, recorded};
use crate::audit::Recorded;

/// `(?, ?, ...)` binding each of `values`: the list of an `IN`.
pub(crate) fn push_list<'a, DB, T>(q: &mut QueryBuilder<'a, DB>, values: &[T])
where
    DB: Database,
    T: Clone + 'a + Encode<'a, DB> + Type<DB>,
{
    q.push("(");
    let mut list = q.separated(", ");
    for value in values {
        list.push_bind(value.clone());
    }
    list.push_unseparated(")");
}

/// Rows per page when verifying or copying.
pub(crate) const PAGE: i64 = 1000;

/// Every column of `audit_events`, in the order the INSERT and the full-row SELECT use.
const ALL_COLUMNS: &str = "seq, event_id, operation_id, kind, time, partner_tenant_id, \
                           operation, actor_oid, actor_upn, actor_appid, decision, \
                           upstream_status, state_path, event, prev_hash, hash";

/// `SELECT` of the columns [`recorded_from_row`] reads: events matching `filter`, in `seq` order.
pub(crate) fn list<'a, DB>(filter: &Filter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q =
        QueryBuilder::new("SELECT seq, prev_hash, hash, event FROM audit_events WHERE 1 = 1");
    who_and_when(
        &mut q,
        "",
        Who {
            partner: filter.partner.as_ref(),
            actor: filter.actor.as_ref(),
            since: filter.since.as_ref(),
            until: filter.until.as_ref(),
        },
    );
    if let Some(kind) = filter.kind {
        q.push(" AND kind = ").push_bind(kind.as_str().to_owned());
    }
    if let Some(decision) = filter.decision {
        q.push(" AND decision = ")
            .push_bind(decision.as_str().to_owned());
    }
    if let Some(operation_id) = filter.operation_id {
        q.push(" AND operation_id = ")
            .push_bind(operation_id.uuid().hyphenated().to_string());
    }
    if let Some(after) = filter.after_seq {
        q.push(" AND seq > ").push_bind(after);
    }
    q.push(" ORDER BY seq");
    if let Some(limit) = filter.limit {
        q.push(" LIMIT ").push_bind(i64::from(limit));
    }
    q
}

/// The conditions every listing of the log shares: partner, actor, time range.
pub(crate) struct Who<'f> {
    pub(crate) partner: Option<&'f String>,
    /// Matches the actor's `oid`, `upn` or `appid`, ignoring ASCII case.
    pub(crate) actor: Option<&'f String>,
    pub(crate) since: Option<&'f DateTime<Utc>>,
    pub(crate) until: Option<&'f DateTime<Utc>>,
}

/// Append `who`'s conditions to `q`, on the columns of the table aliased `alias` (`""` for the
/// bare table, `"e."` for an alias).
pub(crate) fn who_and_when<'a, DB>(q: &mut QueryBuilder<'a, DB>, alias: &str, who: Who<'_>)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    if let Some(partner) = who.partner {
        q.push(format!(" AND {alias}partner_tenant_id = "))
            .push_bind(partner.clone());
    }
    if let Some(actor) = who.actor {
        q.push(format!(" AND (lower({alias}actor_oid) = lower("))
            .push_bind(actor.clone())
            .push(format!(") OR lower({alias}actor_upn) = lower("))
            .push_bind(actor.clone())
            .push(format!(") OR lower({alias}actor_appid) = lower("))
            .push_bind(actor.clone())
            .push("))");
    }
    if let Some(since) = who.since {
        q.push(format!(" AND {alias}time >= "))
            .push_bind(chain::time_column(since));
    }
    if let Some(until) = who.until {
        q.push(format!(" AND {alias}time < "))
            .push_bind(chain::time_column(until));
    }
}

/// The `received` events whose operation has no terminal event, oldest first.
pub(crate) fn unfinished<'a, DB>() -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
{
    QueryBuilder::new(
        "SELECT r.seq, r.prev_hash, r.hash, r.event FROM audit_events r \
         WHERE r.kind = 'received' AND NOT EXISTS ( \
           SELECT 1 FROM audit_events t WHERE t.operation_id = r.operation_id \
           AND t.kind IN ('completed', 'recovered', 'denied')) \
         ORDER BY r.seq",
    )
}

/// The latest `completed` or `recovered` event recorded under `state_path`.
pub(crate) fn last_after<'a, DB>(state_path: &str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT seq, prev_hash, hash, event FROM audit_events WHERE state_path = ",
    );
    q.push_bind(state_path.to_owned())
        .push(" AND kind IN ('completed', 'recovered') ORDER BY seq DESC LIMIT 1");
    q
}

/// The chain head: the last event's `seq` and `hash` (no row when the log is empty).
pub(crate) const HEAD: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

/// Up to [`PAGE`] whole rows with `seq` above `after`, in order (verification and copying page
/// by `seq` rather than holding one long cursor, so no read transaction stays open for the whole
/// log, and events appended meanwhile are seen too).
pub(crate) fn page<'a, DB>(after: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {ALL_COLUMNS} FROM audit_events WHERE seq > "
    ));
    q.push_bind(after)
        .push(" ORDER BY seq LIMIT ")
        .push_bind(PAGE);
    q
}

/// The only INSERT into `audit_events`: one row, exactly as given.
pub(crate) fn insert<'a, DB>(row: &StoredRow) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    Option<i64>: Encode<'a, DB> + Type<DB>,
{
    let c = &row.columns;
    let mut q = QueryBuilder::new(format!("INSERT INTO audit_events ({ALL_COLUMNS}) VALUES ("));
    let mut values = q.separated(", ");
    values
        .push_bind(row.seq)
        .push_bind(c.event_id.clone())
        .push_bind(c.operation_id.clone())
        .push_bind(c.kind.clone())
        .push_bind(c.time.clone())
        .push_bind(c.partner_tenant_id.clone())
        .push_bind(c.operation.clone())
        .push_bind(c.actor_oid.clone())
        .push_bind(c.actor_upn.clone())
        .push_bind(c.actor_appid.clone())
        .push_bind(c.decision.clone())
        .push_bind(c.upstream_status)
        .push_bind(c.state_path.clone())
        .push_bind(row.event.clone())
        .push_bind(row.prev_hash.clone())
        .push_bind(row.hash.clone());
    values.push_unseparated(")");
    q
}

/// A [`Recorded`] from a row of `seq, prev_hash, hash, event`.
pub(crate) fn recorded_from_row<R>(
    row: &R,
    classify: fn(String, sqlx::Error) -> StoreError,
) -> Result<Recorded, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = |name: &str| -> Result<String, StoreError> {
        row.try_get(name)
            .map_err(|e| classify(format!("cannot read column {name}"), e))
    };
    let seq: i64 = row
        .try_get("seq")
        .map_err(|e| classify("cannot read column seq".into(), e))?;
    recorded(seq, get("prev_hash")?, get("hash")?, &get("event")?)
}

/// A whole row exactly as stored; a column of the wrong type is itself a break, not an error.
pub(crate) fn stored_row<R>(row: &R) -> Result<StoredRow, Broken>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let seq: i64 = row.try_get("seq").unwrap_or(-1);
    let event_id: Option<String> = row.try_get("event_id").ok();
    let broken = |column: &str| Broken {
        seq,
        event_id: event_id.clone().unwrap_or_default(),
        reason: format!("column {column} has a value of the wrong type"),
    };
    let text = |column: &'static str| -> Result<String, Broken> {
        row.try_get::<String, _>(column).map_err(|_| broken(column))
    };
    let optional = |column: &'static str| -> Result<Option<String>, Broken> {
        row.try_get::<Option<String>, _>(column)
            .map_err(|_| broken(column))
    };
    Ok(StoredRow {
        seq,
        columns: Columns {
            event_id: text("event_id")?,
            operation_id: text("operation_id")?,
            kind: text("kind")?,
            time: text("time")?,
            partner_tenant_id: optional("partner_tenant_id")?,
            operation: optional("operation")?,
            actor_oid: optional("actor_oid")?,
            actor_upn: optional("actor_upn")?,
            actor_appid: optional("actor_appid")?,
            decision: optional("decision")?,
            upstream_status: row
                .try_get::<Option<i64>, _>("upstream_status")
                .map_err(|_| broken("upstream_status"))?,
            state_path: optional("state_path")?,
        },
        event: text("event")?,
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
    })
}

/// One page of rows, as [`stored_row`] reads them (a row of the wrong shape is a break).
pub(crate) type Page = Vec<Result<StoredRow, Broken>>;

/// Recomputes the whole chain page by page, and reports the first break. A stepper fed by its
/// caller's loop rather than a function taking an async closure: the future of a loop over a
/// reader's `page` is `Send` and free of closure lifetimes, so it can run in a request handler.
pub(crate) struct ChainCheck {
    verifier: Verifier,
    /// The RFC 6962 tree over the events verified so far (their stored canonical text).
    tree: crate::audit::merkle::Frontier,
    /// Tree sizes whose root the caller wants (those of kept checkpoints), and the roots found.
    sizes: std::collections::BTreeSet<u64>,
    roots: std::collections::BTreeMap<u64, crate::audit::merkle::Hash>,
    /// The stored tree's size: the perfect nodes completed up to it are handed over
    /// ([`ChainCheck::take_nodes`]) to be compared with the stored ones.
    nodes_through: u64,
    nodes: Vec<(crate::audit::merkle::Node, crate::audit::merkle::Hash)>,
    /// Starts below every possible seq: a row slipped in with seq 0 or below must be seen.
    last_seq: i64,
}

impl ChainCheck {
    /// A check of the whole chain that also notes the tree's root when it reaches each of
    /// `sizes` (none: just the chain and the final root), and hands over the tree's nodes up
    /// to `nodes_through` events (0: none).
    pub(crate) fn with_roots_at(sizes: &[u64], nodes_through: u64) -> ChainCheck {
        let sizes: std::collections::BTreeSet<u64> = sizes.iter().copied().collect();
        let mut roots = std::collections::BTreeMap::new();
        if sizes.contains(&0) {
            roots.insert(0, crate::audit::merkle::empty_root());
        }
        ChainCheck {
            verifier: Verifier::default(),
            tree: crate::audit::merkle::Frontier::new(),
            sizes,
            roots,
            nodes_through,
            nodes: Vec::new(),
            last_seq: i64::MIN,
        }
    }

    /// Where the next page starts.
    pub(crate) fn after(&self) -> i64 {
        self.last_seq
    }

    /// Check the next page; the report once the log is done (an empty page) or broken.
    pub(crate) fn page(&mut self, rows: Page) -> Option<VerifyReport> {
        if rows.is_empty() {
            return Some(self.report(None));
        }
        for row in rows {
            let checked = row.and_then(|stored| {
                self.last_seq = stored.seq;
                self.verifier.check(&stored)?;
                let done = self
                    .tree
                    .push(crate::audit::merkle::leaf_hash(stored.event.as_bytes()));
                if self.tree.size() <= self.nodes_through {
                    self.nodes.extend(done);
                }
                if self.sizes.contains(&self.tree.size()) {
                    self.roots.insert(self.tree.size(), self.tree.root());
                }
                Ok(())
            });
            if let Err(broken) = checked {
                return Some(self.report(Some(broken)));
            }
        }
        None
    }

    /// The perfect nodes the last page completed within the stored tree's size.
    pub(crate) fn take_nodes(
        &mut self,
    ) -> Vec<(crate::audit::merkle::Node, crate::audit::merkle::Hash)> {
        std::mem::take(&mut self.nodes)
    }

    fn report(&self, first_broken: Option<Broken>) -> VerifyReport {
        VerifyReport {
            events: self.verifier.events(),
            head: self.verifier.head().map(str::to_owned),
            first_broken,
            operations_index: None,
            tree: None,
            checkpoints_checked: 0,
            tree_root: self.tree.root(),
            roots_at: self.roots.clone(),
        }
    }
}
