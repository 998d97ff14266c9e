//! Copying a log to another store (`syncgate audit copy`), chain intact: SQLite to PostgreSQL
//! when a one-machine install grows replicas, or back, or to a fresh file for an auditor.
//!
//! Rows are copied exactly as stored (seq, canonical JSON, prev_hash, hash), never re-sealed, so
//! the copy verifies to the same head hash. Every source row is checked against the chain rule
//! before it is written (a broken source is refused, not spread), and the destination checks
//! that each row continues its own head, page by page in one transaction each. A copy that
//! stops half-way is resumed by running it again: rows the destination already holds are checked
//! to be the source's and skipped. The checkpoints signed for the source are copied after the
//! rows (they sign the same events); the destination's writer builds its own Merkle tree.

use super::chain::{Head, StoredRow, Verifier};
use super::tree::StoredCheckpoint;
use super::{StoreError, StoreLocation, StoreOptions, StoreReader, postgres, sqlite};

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyReport {
    /// Rows written by this run.
    pub(crate) copied: u64,
    /// Rows the destination already held (an earlier, interrupted copy).
    pub(crate) already_there: u64,
    /// The head hash of source and destination alike (`None`: both empty).
    pub(crate) head: Option<String>,
}

/// A destination opened for appending rows as given.
enum Destination {
    Sqlite(sqlite::SqliteWriter),
    Postgres(postgres::PgWriter),
}

impl Destination {
    async fn open(to: &StoreLocation, options: &StoreOptions) -> Result<Self, StoreError> {
        Ok(match to {
            StoreLocation::Sqlite(path) => {
                Destination::Sqlite(sqlite::SqliteWriter::open(path, options).await?)
            }
            StoreLocation::Postgres(url) => {
                postgres::migrate(url, options).await?;
                Destination::Postgres(postgres::PgWriter::open(url, options).await?)
            }
        })
    }

    async fn append_rows(&mut self, rows: &[StoredRow]) -> Result<(), StoreError> {
        match self {
            Destination::Sqlite(w) => w.append_rows(rows).await,
            Destination::Postgres(w) => w.append_rows(rows).await,
        }
    }

    async fn store_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        match self {
            Destination::Sqlite(w) => w.store_checkpoint(checkpoint).await,
            Destination::Postgres(w) => w.store_checkpoint(checkpoint).await,
        }
    }

    async fn close(self) {
        match self {
            Destination::Sqlite(w) => w.close().await,
            Destination::Postgres(w) => w.close().await,
        }
    }
}

/// Copy every row of `from` that `to` lacks; see the module documentation.
pub(crate) async fn copy(
    from: &StoreReader,
    to: &StoreLocation,
    options: &StoreOptions,
) -> Result<CopyReport, StoreError> {
    if from.location() == to {
        return Err(StoreError::rejected(
            "source and destination are the same log",
        ));
    }
    let mut destination = Destination::open(to, options).await?;
    let result = copy_rows(from, to, options, &mut destination).await;
    destination.close().await;
    result
}

async fn copy_rows(
    from: &StoreReader,
    to: &StoreLocation,
    options: &StoreOptions,
    destination: &mut Destination,
) -> Result<CopyReport, StoreError> {
    let target = StoreReader::open(to, options).await?;
    let already = target.head().await;
    target.close().await;
    let already = already?.unwrap_or_else(Head::empty);
    let mut verifier = Verifier::default();
    let mut report = CopyReport {
        copied: 0,
        already_there: 0,
        head: None,
    };
    let mut after = i64::MIN;
    loop {
        let page = from.page(after).await?;
        if page.is_empty() {
            break;
        }
        let mut fresh = Vec::with_capacity(page.len());
        for row in page {
            let row = row.and_then(|row| verifier.check(&row).map(|()| row));
            let row = row.map_err(|broken| {
                StoreError::corrupt(format!(
                    "the source log is broken at seq {} ({}); run `syncgate audit verify` on it",
                    broken.seq, broken.reason
                ))
            })?;
            after = row.seq;
            if row.seq > already.seq {
                fresh.push(row);
            } else {
                report.already_there += 1;
                if row.seq == already.seq && row.hash != already.hash {
                    return Err(StoreError::rejected(format!(
                        "the destination already holds a different log (its seq {} differs \
                         from the source's)",
                        row.seq
                    )));
                }
            }
        }
        if !fresh.is_empty() {
            destination.append_rows(&fresh).await?;
            report.copied += fresh.len() as u64;
        }
    }
    if already.seq > 0 && report.already_there < already.seq as u64 {
        return Err(StoreError::rejected(format!(
            "the destination holds {} events, more than the source",
            already.seq
        )));
    }
    report.head = verifier.head().map(str::to_owned);
    copy_checkpoints(from, destination).await?;
    Ok(report)
}

/// Copy the source's signed checkpoints: they sign the same events, so they hold for the copy
/// (one the destination already has, of the same size, is kept).
async fn copy_checkpoints(
    from: &StoreReader,
    destination: &mut Destination,
) -> Result<(), StoreError> {
    if !from.has_tree().await? {
        return Ok(());
    }
    let mut at_most = Some(u64::MAX);
    while let Some(below) = at_most {
        let page = from.checkpoints(below, 1000).await?;
        for checkpoint in &page {
            destination.store_checkpoint(checkpoint).await?;
        }
        at_most = super::tree::next_below(&page);
    }
    Ok(())
}
