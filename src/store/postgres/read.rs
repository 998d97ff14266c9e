//! The PostgreSQL backend's read side: a small pool of its own for queries and verification,
//! which never waits on the writer and never creates or migrates anything.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row};

use super::super::chain::Head;
use super::super::{Filter, StoreError, StoreOptions, VerifyReport, queries};
use super::{check_log, classify, connect_options};
use crate::audit::{Recorded, Snapshot};

/// Read connections for queries.
#[derive(Clone)]
pub(crate) struct PgReader {
    pool: PgPool,
    /// Bounds each query on this side (see [`PgReader::bounded`]).
    timeout: Duration,
}

impl PgReader {
    /// Readers on an existing log ([`StoreError::NotFound`] when the database holds none).
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<PgReader, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .min_connections(0)
            .acquire_timeout(options.statement_timeout)
            .connect_lazy_with(connect_options(url, options)?);
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| classify(format!("cannot connect to {url}"), e))?;
        check_log(&mut conn, url).await?;
        drop(conn);
        Ok(PgReader {
            pool,
            // Waiting for a connection may take one statement timeout, the query another.
            timeout: options.statement_timeout.saturating_mul(2),
        })
    }

    /// Run `query`, bounded on this side: the server's `statement_timeout` cannot fire for a
    /// query that never reached a server gone silent, and a read on a governed change's path
    /// (the last recorded state) or behind `/readyz` must not hang.
    async fn bounded<T>(
        &self,
        context: &str,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, query).await {
            Ok(result) => result.map_err(|e| classify(context.to_owned(), e)),
            Err(_) => Err(StoreError::unavailable(format!(
                "{context}: PostgreSQL did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    async fn fetch_recorded(
        &self,
        mut query: QueryBuilder<'_, Postgres>,
        context: &str,
    ) -> Result<Vec<Recorded>, StoreError> {
        let rows = self
            .bounded(context, query.build().fetch_all(&self.pool))
            .await?;
        rows.iter()
            .map(|row| queries::recorded_from_row(row, classify_owned))
            .collect()
    }

    pub(crate) async fn list(&self, filter: &Filter) -> Result<Vec<Recorded>, StoreError> {
        self.fetch_recorded(queries::list(filter), "cannot list audit events")
            .await
    }

    pub(crate) async fn unfinished_operations(&self) -> Result<Vec<Recorded>, StoreError> {
        self.fetch_recorded(queries::unfinished(), "cannot list unfinished operations")
            .await
    }

    pub(crate) async fn last_after(
        &self,
        state_path: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let last = self
            .fetch_recorded(
                queries::last_after(state_path),
                "cannot read the last recorded state",
            )
            .await?;
        Ok(last.into_iter().next().and_then(|r| r.event.after))
    }

    /// The chain head: the last event's seq and hash (`None` for an empty log).
    pub(crate) async fn head(&self) -> Result<Option<Head>, StoreError> {
        let row = self
            .bounded(
                "cannot read the chain head",
                sqlx::query(queries::HEAD).fetch_optional(&self.pool),
            )
            .await?;
        let read = |e| classify("cannot read the chain head", e);
        row.map(|row| {
            Ok(Head {
                seq: row.try_get("seq").map_err(read)?,
                hash: row.try_get("hash").map_err(read)?,
            })
        })
        .transpose()
    }

    /// Up to [`queries::PAGE`] whole rows after `after`, for verifying and copying.
    pub(crate) async fn page(&self, after: i64) -> Result<queries::Page, StoreError> {
        let mut query = queries::page::<Postgres>(after);
        let rows = self
            .bounded(
                "cannot read the audit log",
                query.build().fetch_all(&self.pool),
            )
            .await?;
        Ok(rows.iter().map(queries::stored_row).collect())
    }

    pub(crate) async fn verify(&self) -> Result<VerifyReport, StoreError> {
        queries::verify(async |after| self.page(after).await).await
    }

    /// Whether the server answers and the log is there (readiness).
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(
            "cannot read the audit log",
            sqlx::query("SELECT 1 FROM store_meta").fetch_optional(&self.pool),
        )
        .await
        .map(drop)
    }
}

fn classify_owned(context: String, e: sqlx::Error) -> StoreError {
    classify(context, e)
}
