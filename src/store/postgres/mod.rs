//! The PostgreSQL backend, for replicas that share one log (issue 9, in progress): so far its
//! schema and `syncgate migrate`. The schema (`migrations/postgres/`) mirrors SQLite's column for
//! column, so a log verifies to the same head hash on either, and refuses UPDATE, DELETE and
//! TRUNCATE of the log with triggers, as SQLite refuses UPDATE and DELETE.
//!
//! Credentials never come from a flag: a URL with a password in it is refused; the password comes
//! from `PGPASSWORD` or the standard password file (`PGPASSFILE`, `~/.pgpass`), which sqlx reads
//! like libpq does.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};

use super::StoreError;

mod lock;
pub(crate) use lock::{AdvisoryGuard, AdvisoryLocks};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub(crate) fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Connection options for `url`, refusing a password written into it.
pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    if holds_password(url) {
        return Err(StoreError::corrupt(
            "the PostgreSQL URL holds a password; give it in PGPASSWORD or a password file \
             (PGPASSFILE, ~/.pgpass) instead, so it never appears in a process list or a config",
        ));
    }
    PgConnectOptions::from_str(url)
        .map(|options| options.application_name("syncgate"))
        .map_err(|e| StoreError::corrupt(format!("{url:?} is not a PostgreSQL URL: {e}")))
}

/// Whether the URL's user-info part (`user:password@`) carries a password.
fn holds_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(user_info, _)| user_info.contains(':'))
}

/// Apply the migrations `url`'s database lacks (none when it is up to date), then check that it
/// holds a syncgate audit log in the chain format this code writes.
pub(crate) async fn migrate(url: &str) -> Result<(), StoreError> {
    let mut conn: PgConnection = connect_options(url)?
        .connect()
        .await
        .map_err(|e| unavailable("cannot connect to PostgreSQL", e))?;
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| unavailable("cannot apply the PostgreSQL migrations", e))?;
    let row = sqlx::query("SELECT application, chain_format FROM store_meta WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| unavailable("cannot read store_meta", e))?;
    let application: String = row.try_get("application").unwrap_or_default();
    let chain_format: i32 = row.try_get("chain_format").unwrap_or_default();
    let _ = conn.close().await;
    if application != "syncgate audit log" || i64::from(chain_format) != super::CHAIN_FORMAT {
        return Err(StoreError::corrupt(format!(
            "the database is not a syncgate audit log in chain format {} (found {application:?}, \
             format {chain_format})",
            super::CHAIN_FORMAT
        )));
    }
    Ok(())
}

fn unavailable(context: &str, error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable {
        context: context.to_owned(),
        source: Some(std::sync::Arc::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_and_the_rest_is_read() {
        assert!(holds_password(
            "postgres://syncgate:secret@db.example/audit"
        ));
        assert!(holds_password("postgresql://u:@db/audit"));
        assert!(!holds_password("postgres://syncgate@db.example/audit"));
        assert!(!holds_password("postgres://db.example/audit?user=a"));
        assert!(!holds_password("postgres://db.example/audit?options=a:b@c"));
        assert!(connect_options("postgres://syncgate:secret@127.0.0.1/audit").is_err());
        assert!(connect_options("postgres://syncgate@127.0.0.1:5432/audit").is_ok());
    }

    #[test]
    fn only_postgres_urls_select_postgres() {
        assert!(is_postgres_url("postgres://h/db"));
        assert!(is_postgres_url("postgresql://h/db"));
        assert!(!is_postgres_url("sqlite://x.db"));
        assert!(!is_postgres_url("/var/lib/syncgate/syncgate.db"));
    }
}
