//! `[store]`: where the audit log is (a SQLite file or a PostgreSQL database) and how to open it.

use std::path::PathBuf;

use super::raw::{RawStore, default_store_path};
use super::{ConfigError, invalid, parse_duration};
use crate::store::{StoreLocation, StoreOptions};

/// The PostgreSQL token key file when `store.token_key` is not set: beside the default SQLite
/// file's place, in the user's data folder.
pub(crate) fn default_token_key() -> PathBuf {
    default_store_path().with_file_name("syncgate.token-key")
}

impl RawStore {
    /// Where the log is: `store.url` when set, else the file `store.path`. Setting both (to
    /// different places) is refused: which one would win is not something to guess.
    pub(crate) fn location(&self) -> Result<StoreLocation, ConfigError> {
        let Some(url) = &self.url else {
            return Ok(StoreLocation::Sqlite(self.path.clone()));
        };
        let location = StoreLocation::parse(url);
        let same_file = matches!(&location, StoreLocation::Sqlite(p) if *p == self.path);
        if self.path != default_store_path() && !same_file {
            return Err(invalid(
                "store.url",
                "set store.url or store.path, not both (store.url may be sqlite://FILE)",
            ));
        }
        if let StoreLocation::Sqlite(path) = &location {
            if path.as_os_str().is_empty() {
                return Err(invalid("store.url", "sqlite:// names no file"));
            }
        }
        Ok(location)
    }

    /// Point the store at `location` (the `--db` flag), replacing what the file said.
    pub(crate) fn set_location(&mut self, location: &StoreLocation) {
        match location {
            StoreLocation::Sqlite(path) => {
                self.path = path.clone();
                self.url = None;
            }
            StoreLocation::Postgres(url) => {
                self.path = default_store_path();
                self.url = Some(url.clone());
            }
        }
    }

    /// How to open the log.
    pub(crate) fn options(&self) -> Result<StoreOptions, ConfigError> {
        let postgres = self.location()?.is_postgres();
        if !postgres && self.password_file.is_some() {
            return Err(invalid(
                "store.password_file",
                "is for PostgreSQL (store.url = \"postgres://...\"); a SQLite file has no password",
            ));
        }
        let statement_timeout = parse_duration("store.statement_timeout", &self.statement_timeout)?;
        if statement_timeout.is_zero() {
            return Err(invalid("store.statement_timeout", "must be longer than 0"));
        }
        let token_key = match (&self.token_key, postgres) {
            (Some(file), _) => Some(file.clone()),
            (None, true) => Some(default_token_key()),
            (None, false) => None,
        };
        let lock_wait = parse_duration("store.lock_timeout", &self.lock_timeout)?;
        if lock_wait.is_zero() || self.lock_connections == 0 {
            return Err(invalid(
                "store.lock_timeout",
                "store.lock_timeout and store.lock_connections must be above 0",
            ));
        }
        Ok(StoreOptions {
            busy_timeout: parse_duration("store.busy_timeout", &self.busy_timeout)?,
            lock_wait,
            lock_connections: self.lock_connections,
            statement_timeout,
            migrate: self.migrate,
            token_key,
            password_file: self.password_file.clone(),
            ..StoreOptions::default()
        })
    }
}
