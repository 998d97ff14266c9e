//! The PostgreSQL backend's read side: a small pool of its own for queries and verification,
//! which never waits on the writer and never creates or migrates anything.

use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::super::{StoreError, StoreOptions};
use super::{check_log_within, classify, connect_options};

/// Read connections for queries.
#[derive(Clone)]
pub(crate) struct PgReader {
    pub(super) pool: PgPool,
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
        check_log_within(&mut conn, url, options.statement_timeout.saturating_mul(2)).await?;
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
    pub(super) async fn bounded<T>(
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

    super::super::reads::read_methods!(Postgres);

    /// Whether the server answers, the log is there and it can be written (readiness): a
    /// read-only server (a standby after a failover, or one set read-only) would answer every
    /// governed change with 503, so it is not ready either.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let query =
            sqlx::query_scalar("SELECT current_setting('transaction_read_only') FROM store_meta");
        let read_only: String = self
            .bounded("cannot read the audit log", query.fetch_one(&self.pool))
            .await?;
        if read_only == "on" {
            return Err(StoreError::unavailable(
                "the database is read-only (a standby, or set read-only): nothing can be recorded",
            ));
        }
        Ok(())
    }
}
