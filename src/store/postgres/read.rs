//! The PostgreSQL backend's read side: a small pool of its own for queries and verification,
//! which never waits on the writer and never creates or migrates anything.

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
        Ok(PgReader { pool })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    async fn fetch_recorded(
        &self,
        mut query: QueryBuilder<'_, Postgres>,
        context: &str,
    ) -> Result<Vec<Recorded>, StoreError> {
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify(context.to_owned(), e))?;
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
        let row = sqlx::query(queries::HEAD)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| classify("cannot read the chain head", e))?;
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
        let rows = queries::page::<Postgres>(after)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify("cannot read the audit log", e))?;
        Ok(rows.iter().map(queries::stored_row).collect())
    }

    pub(crate) async fn verify(&self) -> Result<VerifyReport, StoreError> {
        queries::verify(async |after| self.page(after).await).await
    }

    /// Whether the server answers, the log is there and it can be written (readiness): a
    /// read-only server (a standby after a failover, or one set read-only) would answer every
    /// governed change with 503, so it is not ready either.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let read_only: String =
            sqlx::query_scalar("SELECT current_setting('transaction_read_only') FROM store_meta")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| classify("cannot read the audit log", e))?;
        if read_only == "on" {
            return Err(StoreError::unavailable(
                "the database is read-only (a standby, or set read-only): nothing can be recorded",
            ));
        }
        Ok(())
    }
}

fn classify_owned(context: String, e: sqlx::Error) -> StoreError {
    classify(context, e)
}
