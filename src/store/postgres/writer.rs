//! The PostgreSQL write connection, owned by the writer task (see `store/writer.rs`).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Postgres, Row, Transaction};

use super::super::chain::{Head, Prepared, Sealed, StoredRow};
use super::super::{StoreError, StoreOptions, queries};
use super::{CHAIN_LOCK, check_log, classify, connect, connect_options};

/// One replica's write connection.
pub(crate) struct PgWriter {
    options: PgConnectOptions,
    url: String,
    timeout: Duration,
    /// `None` after a failure that may have left the connection mid-transaction or dead; the
    /// next group opens a fresh one (a new session: whatever the old one held is gone with it).
    conn: Option<PgConnection>,
}

impl PgWriter {
    /// Connect and check that the database holds an audit log (migrations ran first).
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<PgWriter, StoreError> {
        let connect_options = connect_options(url, options)?;
        let mut conn = connect(&connect_options, options.statement_timeout, "writing").await?;
        check_log(&mut conn, url).await?;
        Ok(PgWriter {
            options: connect_options,
            url: url.to_owned(),
            timeout: options.statement_timeout,
            conn: Some(conn),
        })
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, StoreError> {
        if self.conn.is_none() {
            let mut conn = connect(&self.options, self.timeout, "writing").await?;
            check_log(&mut conn, &self.url).await?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::unavailable("no write connection"))
    }

    /// Append `events` after the head in one transaction, holding the chain lock.
    pub(crate) async fn append_group(
        &mut self,
        events: &[&Prepared],
    ) -> Result<Vec<Sealed>, StoreError> {
        let mut sealed = Vec::with_capacity(events.len());
        let rows = self
            .transaction(async |conn| {
                let mut head = lock_head(conn).await?;
                for event in events {
                    let s = event.seal(&mut head);
                    let row = queries::sealed_row(&event.columns, &s);
                    insert_row(conn, &row).await?;
                    sealed.push(s);
                }
                Ok(())
            })
            .await;
        rows.map(|()| sealed)
    }

    /// Append rows exactly as given (a log copied from elsewhere), after checking that each
    /// continues the head: the copy is chained as the original was, or nothing is written.
    pub(crate) async fn append_rows(&mut self, rows: &[StoredRow]) -> Result<(), StoreError> {
        self.transaction(async |conn| {
            let mut head = lock_head(conn).await?;
            for row in rows {
                head.advance(row).map_err(StoreError::rejected)?;
                insert_row(conn, row).await?;
            }
            Ok(())
        })
        .await
    }

    /// Run `body` in one transaction; all or nothing. After a failed COMMIT or ROLLBACK the
    /// connection's state is unknown (the server may be gone), so it is dropped: the next group
    /// starts a new session.
    ///
    /// A session the server ended while it sat idle (a restart, a failover, an operator's
    /// `pg_terminate_backend`) shows only when used. A failed BEGIN sent nothing of this group,
    /// so on a session kept from earlier it gets one retry on a new session rather than failing
    /// the group (a 503 for every caller in it).
    ///
    /// The whole group is bounded on this side too, at twice the statement timeout (the chain
    /// lock alone may take one): `statement_timeout` is the server's, and cannot fire for a
    /// statement that never reached a server gone silent (a network partition, a primary that
    /// vanished). The session is then in an unknown state, so it is dropped; the server frees
    /// what it held by `idle_in_transaction_session_timeout` or when it sees the session end.
    async fn transaction<F>(&mut self, body: F) -> Result<(), StoreError>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<(), StoreError>,
    {
        let bound = self.timeout.saturating_mul(2);
        let answer = tokio::time::timeout(bound, self.transaction_with_retry(body)).await;
        answer.unwrap_or_else(|_| {
            self.conn = None;
            Err(StoreError::unavailable(format!(
                "PostgreSQL did not answer within {bound:?}"
            )))
        })
    }

    async fn transaction_with_retry<F>(&mut self, body: F) -> Result<(), StoreError>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<(), StoreError>,
    {
        let begin_failed = |e| classify("cannot begin a transaction on the audit log", e);
        let reused = self.conn.is_some();
        match self.try_transaction(body).await {
            Ok(result) => result,
            Err((e, body)) if reused => {
                tracing::info!(error = %e, "audit store: the PostgreSQL session was lost; reconnecting");
                self.try_transaction(body)
                    .await
                    .unwrap_or_else(|(e, _)| Err(begin_failed(e)))
            }
            Err((e, _)) => Err(begin_failed(e)),
        }
    }

    /// One attempt of [`Self::transaction`]; when BEGIN fails, its error and `body`, unrun.
    async fn try_transaction<F>(
        &mut self,
        body: F,
    ) -> Result<Result<(), StoreError>, (sqlx::Error, F)>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<(), StoreError>,
    {
        let conn = match self.connection().await {
            Ok(conn) => conn,
            Err(e) => return Ok(Err(e)),
        };
        let outcome = match conn.begin().await {
            Ok(tx) => Ok(run_transaction(tx, body).await),
            Err(e) => Err((e, body)),
        };
        match outcome {
            Ok((result, healthy)) => {
                if !healthy {
                    self.conn = None;
                }
                Ok(result)
            }
            Err(failed) => {
                self.conn = None;
                Err(failed)
            }
        }
    }

    pub(crate) async fn close(self) {
        if let Some(conn) = self.conn {
            let _ = conn.close().await;
        }
    }
}

/// Run `body` in the transaction `tx` and commit; also says whether the connection is still in
/// a known state (false after a failed COMMIT or ROLLBACK).
async fn run_transaction<F>(
    mut tx: Transaction<'_, Postgres>,
    body: F,
) -> (Result<(), StoreError>, bool)
where
    F: AsyncFnOnce(&mut PgConnection) -> Result<(), StoreError>,
{
    match body(&mut tx).await {
        Ok(()) => match tx.commit().await {
            Ok(()) => (Ok(()), true),
            Err(e) => (Err(classify("cannot commit to the audit log", e)), false),
        },
        Err(e) => {
            let rolled_back = tx.rollback().await.is_ok();
            (Err(e), rolled_back)
        }
    }
}

/// Take the chain lock for this transaction, then read the head: no other replica can append
/// until this transaction ends, and the head read after the lock sees everything committed
/// before it (each statement reads a fresh snapshot under READ COMMITTED).
async fn lock_head(conn: &mut PgConnection) -> Result<Head, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("cannot lock the audit log's chain for appending", e))?;
    let row = sqlx::query(queries::HEAD)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| classify("cannot read the chain head", e))?;
    let read = |e| classify("cannot read the chain head", e);
    Ok(match row {
        None => Head::empty(),
        Some(row) => Head {
            seq: row.try_get("seq").map_err(read)?,
            hash: row.try_get("hash").map_err(read)?,
        },
    })
}

async fn insert_row(conn: &mut PgConnection, row: &StoredRow) -> Result<(), StoreError> {
    queries::insert::<Postgres>(row)
        .build()
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(format!("cannot insert event {}", row.columns.event_id), e))?;
    Ok(())
}
