//! Where an audit log lives: a SQLite file or a PostgreSQL database.

use std::fmt;
use std::path::PathBuf;

/// Where the audit log lives, as `--db` and `store.url` / `store.path` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its URL (`postgres://user@host:port/db?sslmode=...`). The URL
    /// never holds a password: connecting refuses one (see `postgres::connect_options`).
    Postgres(String),
}

impl StoreLocation {
    /// Read `db` the way `--db` takes it: `postgres://` or `postgresql://` is a PostgreSQL URL;
    /// `sqlite://FILE` or `sqlite:FILE` names a SQLite file; anything else is a file path.
    pub fn parse(db: &str) -> StoreLocation {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return StoreLocation::Postgres(db.to_owned());
        }
        let path = db
            .strip_prefix("sqlite://")
            .or_else(|| db.strip_prefix("sqlite:"))
            .unwrap_or(db);
        StoreLocation::Sqlite(PathBuf::from(path))
    }

    /// Whether this is a PostgreSQL database.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => f.write_str(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_select_their_backend() {
        let sqlite = |p: &str| StoreLocation::Sqlite(PathBuf::from(p));
        assert_eq!(
            StoreLocation::parse("/var/lib/x.db"),
            sqlite("/var/lib/x.db")
        );
        assert_eq!(StoreLocation::parse("x.db"), sqlite("x.db"));
        assert_eq!(
            StoreLocation::parse("sqlite:///abs/x.db"),
            sqlite("/abs/x.db")
        );
        assert_eq!(StoreLocation::parse("sqlite://rel.db"), sqlite("rel.db"));
        assert_eq!(StoreLocation::parse("sqlite:rel.db"), sqlite("rel.db"));
        for url in [
            "postgres://h/db",
            "postgresql://u@h:5432/db?sslmode=require",
        ] {
            assert_eq!(
                StoreLocation::parse(url),
                StoreLocation::Postgres(url.to_owned())
            );
        }
        // A file that merely starts like a scheme is still a file.
        assert_eq!(StoreLocation::parse("postgres.db"), sqlite("postgres.db"));
    }
}
