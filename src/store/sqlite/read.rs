//! The SQLite backend's read side: read-only connections for queries and verification, which
//! never wait on the writer and never create or change the file (see the parent module).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};

use super::super::{StoreError, StoreOptions};
use super::{
    SQLITE_CANTOPEN, SQLITE_READONLY, check_chain_format, classify, primary_code, read_options,
    sidecar,
};

/// Read-only connections for queries.
#[derive(Clone)]
pub(crate) struct SqliteReader {
    pool: SqlitePool,
}

fn pool_options(options: &StoreOptions) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(options.read_connections.max(1))
        .min_connections(0)
        .acquire_timeout(options.busy_timeout.max(Duration::from_secs(1)) * 2)
}

impl SqliteReader {
    /// Readers beside a writer that has just created and migrated the file.
    pub(crate) async fn open_for_writer(
        path: &Path,
        options: &StoreOptions,
    ) -> Result<SqliteReader, StoreError> {
        let pool = pool_options(options)
            .connect_with(read_options(path, options))
            .await
            .map_err(|e| classify(format!("cannot open {} for reading", path.display()), e))?;
        Ok(SqliteReader { pool })
    }

    /// Readers on an existing file, without creating or writing anything.
    pub(crate) async fn open_existing(
        path: &Path,
        options: &StoreOptions,
    ) -> Result<SqliteReader, StoreError> {
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => {
                return Err(StoreError::NotFound {
                    location: path.display().to_string(),
                });
            }
            Err(e) => {
                return Err(StoreError::Unavailable {
                    context: format!("cannot access {}", path.display()),
                    source: Some(Arc::new(e)),
                });
            }
        }
        let read_only = read_options(path, options);
        let pool = match pool_options(options).connect_with(read_only.clone()).await {
            Ok(pool) => pool,
            // A WAL database opened read-only needs its `-shm` file, which SQLite creates beside
            // it: impossible in a folder we may not write. With no `-wal` file there is nothing
            // uncommitted to miss, so reading the file as immutable is exact.
            Err(e)
                if matches!(primary_code(&e), Some(SQLITE_CANTOPEN | SQLITE_READONLY))
                    && !sidecar(path, "-wal").exists() =>
            {
                pool_options(options)
                    .connect_with(read_only.immutable(true))
                    .await
                    .map_err(|e| classify(format!("cannot open {}", path.display()), e))?
            }
            Err(e) => return Err(classify(format!("cannot open {}", path.display()), e)),
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| classify(format!("cannot open {}", path.display()), e))?;
        check_chain_format(&mut conn, path).await?;
        drop(conn);
        Ok(SqliteReader { pool })
    }

    /// Close every read connection; when this returns, none is open.
    pub(crate) async fn close(&self) {
        // sqlx's `close` can return while a connection that was just being given back sits in
        // the idle queue, still open (it is queued before its permit is released, and `close`
        // stops once it holds every permit). That connection would keep the `-wal` and `-shm`
        // files alive after the writer closes; closing again closes it (no connection can be
        // checked out of a closed pool, so the second pass finds them all).
        //
        // And a connection released just before is given back by a task of its own: if that
        // task finds the pool closed, it drops the connection without waiting for SQLite to
        // close it, so its worker thread may close it after the writer's, and a read-only
        // connection closing last leaves the `-wal` behind (seen under load). At shutdown no
        // read is running, so every connection not idle is one on its way back: let them land
        // first (bounded), then close them all properly.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.pool.num_idle() < self.pool.size() as usize
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for _ in 0..3 {
            self.pool.close().await;
            if self.pool.size() == 0 {
                break;
            }
        }
    }

    /// Run `query` and name its error (SQLite's own `busy_timeout` bounds every wait).
    async fn bounded<T>(
        &self,
        context: &str,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        query.await.map_err(|e| classify(context.to_owned(), e))
    }

    super::super::reads::read_methods!(Sqlite);

    /// The quick pass's page after seq `after`, as one aggregated row (`quick::page_query`).
    pub(crate) async fn raw_links(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<crate::store::quick::RawPage, StoreError> {
        use sqlx::Row;
        let context = "cannot read the audit log";
        let row = self
            .bounded(
                context,
                crate::store::quick::page_query(after, limit)
                    .build()
                    .fetch_one(&self.pool),
            )
            .await?;
        let read = |e| classify(context, e);
        let rows: i64 = row.try_get("rows").map_err(read)?;
        let page: Option<String> = row.try_get("page").map_err(read)?;
        Ok(crate::store::quick::RawPage {
            rows,
            text: page.unwrap_or_default(),
        })
    }

    /// A trivial read: whether the file can be read at all (readiness).
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1 FROM store_meta")
            .fetch_optional(&self.pool)
            .await
            .map(drop)
            .map_err(|e| classify("cannot read the audit log", e))
    }
}
