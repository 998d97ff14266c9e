//! The PostgreSQL backend, for replicas that share one log.
//!
//! The schema (`migrations/postgres/`) mirrors SQLite's column for column, so a log verifies to
//! the same head hash on either and can be copied between them; triggers refuse UPDATE, DELETE
//! and TRUNCATE of the log, as SQLite's refuse UPDATE and DELETE. All of the store's
//! PostgreSQL-specific SQL and settings live in this module:
//!
//! - Each replica has one writer connection (`writer.rs`). A group is one transaction that first
//!   takes a transaction-scoped advisory lock on the chain ([`CHAIN_LOCK`]), then reads the head
//!   and appends: replicas take turns at the head, so `seq` has no gap and the chain no fork
//!   whatever the interleaving, and the lock ends with the transaction (or the session, when a
//!   replica dies mid-group).
//! - Reads use a small pool of their own (`read.rs`) and never wait on the writer.
//! - Every statement is bounded by `statement_timeout`, and a transaction left idle by a stuck
//!   replica by `idle_in_transaction_session_timeout`, both set when the connection opens: a
//!   PostgreSQL that hangs turns into [`StoreError::Unavailable`] (503), never into a hung proxy.
//! - Credentials never come from a flag or a config value: a URL with a password in it is
//!   refused; the password comes from `store.password_file`, `PGPASSWORD` or the standard
//!   password file (`PGPASSFILE`, `~/.pgpass`), which sqlx reads like libpq does. TLS is asked
//!   for in the URL, as libpq spells it (`sslmode=require|verify-ca|verify-full`,
//!   `sslrootcert=FILE`), and done by rustls.

#[cfg(test)]
mod failures;
mod lock;
mod quick;
mod read;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError};
use sqlx::{ConnectOptions, Connection, Row};

use super::{StoreError, StoreOptions};

pub(crate) use lock::{AdvisoryGuard, AdvisoryLocks};
pub(crate) use read::PgReader;
pub(crate) use writer::PgWriter;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The advisory lock key the writers of every replica take, per transaction, to append: "syncgate"
/// in ASCII. Other advisory keys syncgate uses are hashes kept away from this value.
pub(crate) const CHAIN_LOCK: i64 = 0x7379_6e63_6761_7465;

/// Connection options for `url`, refusing a password written into it, with the password from
/// `options.password_file` when one is set, and every statement bounded.
pub(crate) fn connect_options(
    url: &str,
    options: &StoreOptions,
) -> Result<PgConnectOptions, StoreError> {
    if holds_password(url) {
        return Err(StoreError::corrupt(
            "the PostgreSQL URL holds a password; give it in store.password_file, PGPASSWORD or a \
             password file (PGPASSFILE, ~/.pgpass) instead, so it never appears in a process \
             list or a config",
        ));
    }
    let mut connect = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::corrupt(format!("{url:?} is not a PostgreSQL URL: {e}")))?
        .application_name("syncgate");
    if let Some(file) = &options.password_file {
        connect = connect.password(&read_password(file)?);
    }
    let statement = options.statement_timeout.as_millis().max(1);
    // A transaction idle this long belongs to a replica that stopped mid-group; ending it frees
    // the chain for the others.
    let idle = statement.saturating_mul(2);
    Ok(connect.options([
        ("statement_timeout", statement.to_string()),
        ("idle_in_transaction_session_timeout", idle.to_string()),
    ]))
}

/// The password in `file`: its first line, without the line end.
fn read_password(file: &Path) -> Result<String, StoreError> {
    if let Err(e) = super::private::tighten(file) {
        tracing::warn!(file = %file.display(), error = %e, "cannot check the password file's mode");
    }
    let text = std::fs::read_to_string(file).map_err(|e| StoreError::Unavailable {
        context: format!("cannot read the password file {}", file.display()),
        source: Some(Arc::new(e)),
    })?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(StoreError::corrupt(format!(
            "the password file {} is empty",
            file.display()
        )));
    }
    Ok(password.to_owned())
}

/// Whether the URL's user-info part (`user:password@`) carries a password.
fn holds_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(user_info, _)| user_info.contains(':'))
}

/// Open one connection, bounded by the statement timeout (a server that accepts TCP and then
/// says nothing must not hang the caller).
async fn connect(
    options: &PgConnectOptions,
    timeout: Duration,
    what: &str,
) -> Result<PgConnection, StoreError> {
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify(
            format!("cannot connect to PostgreSQL for {what}"),
            e,
        )),
        Err(_) => Err(StoreError::unavailable(format!(
            "PostgreSQL did not accept a connection for {what} within {timeout:?}"
        ))),
    }
}

/// Apply the migrations the database lacks (none when it is up to date). sqlx holds an advisory
/// lock while it migrates, so replicas starting together apply each migration once.
pub(crate) async fn migrate(url: &str, options: &StoreOptions) -> Result<(), StoreError> {
    let connect_options = connect_options(url, options)?;
    let mut conn = connect(&connect_options, options.statement_timeout, "migrating").await?;
    // Each statement is bounded by the server; the whole run also by this side (a server gone
    // silent), generously, since a later migration may rewrite a large table.
    let bound = options
        .statement_timeout
        .saturating_mul(12)
        .max(Duration::from_secs(60));
    let Ok(run) = tokio::time::timeout(bound, MIGRATOR.run(&mut conn)).await else {
        return Err(StoreError::unavailable(format!(
            "the PostgreSQL migrations did not finish within {bound:?}"
        )));
    };
    let result = run.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => {
            match classify("cannot apply the PostgreSQL migrations", e) {
                unavailable @ StoreError::Unavailable { .. } => unavailable,
                other => StoreError::Migration {
                    location: url.to_owned(),
                    source: Arc::new(other),
                },
            }
        }
        e => StoreError::Migration {
            location: url.to_owned(),
            source: Arc::new(e),
        },
    });
    let _ = conn.close().await;
    result
}

/// [`check_log`], bounded on this side: a server that accepted the connection and then went
/// silent must not hang the start (or the writer's reconnect).
async fn check_log_within(
    conn: &mut PgConnection,
    url: &str,
    timeout: Duration,
) -> Result<(), StoreError> {
    tokio::time::timeout(timeout, check_log(conn, url))
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::unavailable(format!(
                "PostgreSQL did not answer within {timeout:?}"
            )))
        })
}

/// Refuse a database that does not hold a syncgate audit log in the chain format this code
/// writes ([`StoreError::NotFound`] when it holds no log at all: never migrated).
async fn check_log(conn: &mut PgConnection, url: &str) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT application, chain_format FROM store_meta WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| match sqlstate(&e).as_deref() {
            Some(UNDEFINED_TABLE) => StoreError::NotFound {
                location: url.to_owned(),
            },
            _ => classify(format!("cannot read {url}"), e),
        })?;
    let (application, chain_format) = match row {
        Some(row) => (
            row.try_get::<String, _>("application").unwrap_or_default(),
            row.try_get::<i32, _>("chain_format").unwrap_or_default(),
        ),
        None => (String::new(), 0),
    };
    if application != "syncgate audit log" || i64::from(chain_format) != super::CHAIN_FORMAT {
        return Err(StoreError::corrupt(format!(
            "{url} is not a syncgate audit log in chain format {} (found {application:?}, \
             format {chain_format})",
            super::CHAIN_FORMAT
        )));
    }
    Ok(())
}

const UNDEFINED_TABLE: &str = "42P01";

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .map(|pg| pg.code().to_owned()),
        _ => None,
    }
}

/// Sort a sqlx error into the store's categories, keeping it as the source.
///
/// Unavailable is everything a retry (later, or on another server after a failover) may cure:
/// lost or refused connections (class 08), a server shutting down or starting (57P0x), a
/// statement cancelled by the timeout (57014), too many connections, a full disk, out of memory
/// (class 53), a read-only server such as a standby promoted too late (25006), lock and
/// serialisation conflicts (55P03, 40xxx), system I/O errors (class 58), and a database not
/// accepting connections (55000 when it is opened: `ALLOW_CONNECTIONS false`, being dropped or
/// restored; the only place this code meets that state).
pub(crate) fn classify(context: impl Into<String>, e: sqlx::Error) -> StoreError {
    let context = context.into();
    let source = |e| Some(Arc::new(e) as super::Source);
    let Some(state) = sqlstate(&e) else {
        return match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => StoreError::Unavailable {
                context,
                source: source(e),
            },
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt {
                context,
                source: source(e),
            },
            _ => StoreError::Internal {
                context,
                source: source(e),
            },
        };
    };
    let class = &state[..state.len().min(2)];
    match (class, state.as_str()) {
        ("08" | "53" | "58" | "40", _)
        | (_, "57P01" | "57P02" | "57P03" | "57014" | "25006" | "55P03" | "55006" | "55000") => {
            StoreError::Unavailable {
                context,
                source: source(e),
            }
        }
        ("23" | "22", _) => StoreError::Rejected {
            context,
            source: source(e),
        },
        ("XX", "XX001" | "XX002") => StoreError::Corrupt {
            context,
            source: source(e),
        },
        _ => StoreError::Internal {
            context,
            source: source(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_and_the_rest_is_read() {
        let options = StoreOptions::default();
        assert!(holds_password(
            "postgres://syncgate:secret@db.example/audit"
        ));
        assert!(holds_password("postgresql://u:@db/audit"));
        assert!(!holds_password("postgres://syncgate@db.example/audit"));
        assert!(!holds_password("postgres://db.example/audit?user=a"));
        assert!(!holds_password("postgres://db.example/audit?options=a:b@c"));
        assert!(connect_options("postgres://syncgate:secret@127.0.0.1/audit", &options).is_err());
        assert!(connect_options("postgres://syncgate@127.0.0.1:5432/audit", &options).is_ok());
    }

    #[test]
    fn the_password_file_gives_the_first_line_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        assert_eq!(read_password(&file).unwrap(), "s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_password(&file).is_err());
        assert!(read_password(&dir.path().join("missing")).is_err());
    }
}
