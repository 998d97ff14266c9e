//! Exports of the audit trail in the formats auditors' tools already read, streamed page by page
//! so an export of any size costs the memory of one page (issue 10).
//!
//! - `jsonl` (`jsonl.rs`): one line per chained event of the selected operations: its stored
//!   canonical JSON with `hash` and `prev_hash` added (the fields of a
//!   [`Recorded`](crate::audit::Recorded)), so a SIEM can re-verify the chain from the export
//!   alone. Per event rather than per operation: the chain is made of events, and an
//!   operation's folded summary is what the three other formats carry.
//! - `csv` (`csv.rs`): one row per operation, for a spreadsheet.
//! - `directory-audit` (`directory_audit.rs`): Microsoft Entra's `directoryAudit` records, so
//!   the KQL and detection rules written for Entra's audit log read syncgate's.
//! - `ocsf` (`ocsf.rs`): OCSF 1.3 API Activity events, the vendor-neutral form SIEMs map.
//!
//! Every format selects with the same [`OperationFilter`] as `GET /api/v1/operations`, in the
//! same order (newest operation first, each operation's events in chain order), through the same
//! store query ([`StoreReader::folded_operations`]), so the listing, the API export and the CLI
//! export of one log agree record for record. An export never holds a read transaction: it pages
//! by cursor, so it never blocks the writer, and operations recorded after it started are not in
//! it (their first seq is above the first page's).

mod csv;
mod directory_audit;
mod facts;
mod jsonl;
mod ocsf;
mod shape;

pub(crate) use csv::write_csv_row;

use facts::Operation;

use crate::store::{
    Cursor, FoldedOperation, FoldedPage, OperationFilter, RawEvent, StoreError, StoreReader,
};

/// Operations per store page: an export holds at most two pages (one rendered, one read).
const PAGE_OPERATIONS: u32 = 500;

/// An export's format, as `format=` and `--format` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One JSON line per chained event (seq, prev_hash, hash and the event).
    Jsonl,
    /// One row per operation, RFC 4180, with a header row.
    Csv,
    /// Microsoft Entra `directoryAudit` records, as `{"value": [...]}`.
    DirectoryAudit,
    /// OCSF 1.3 API Activity (class 6003) events, one JSON line each.
    Ocsf,
}

impl Format {
    pub(crate) const ALL: [Format; 4] = [
        Format::Jsonl,
        Format::Csv,
        Format::DirectoryAudit,
        Format::Ocsf,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::DirectoryAudit => "directory-audit",
            Format::Ocsf => "ocsf",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The response's `Content-Type`. `directory-audit` is one JSON document (Graph's
    /// collection shape); the two line formats are NDJSON, which SIEM shippers read as a stream.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl | Format::Ocsf => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::DirectoryAudit => "application/json",
        }
    }

    /// The file name a browser or `curl -OJ` saves the export under.
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            Format::Jsonl => "syncgate-audit.jsonl",
            Format::Csv => "syncgate-audit.csv",
            Format::DirectoryAudit => "syncgate-audit.directory-audit.json",
            Format::Ocsf => "syncgate-audit.ocsf.jsonl",
        }
    }
}

/// Why an export stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode an exported record")]
    Encode(#[from] serde_json::Error),
}

/// Where an export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    NotStarted,
    /// Pages remain; the next starts after this cursor (`None`: from the top).
    Paging(Option<Cursor>),
    Done,
}

/// An export in progress: [`Export::next_chunk`] reads the next page of operations and renders
/// it. The API streams the chunks into a response, the CLI writes them to a file; both run this
/// one loop, so they write the same bytes.
///
/// While a page is rendered, the next one is already being read (a task of its own): the
/// database's work and the rendering overlap, so an export runs at the pace of the slower of
/// the two rather than of their sum. At most two pages are held, whatever the export's size.
pub(crate) struct Export {
    reader: StoreReader,
    filter: OperationFilter,
    format: Format,
    stage: Stage,
    /// The next page, being read; aborted if the export is dropped (the client went away).
    prefetch: Option<tokio::task::JoinHandle<Result<Page, StoreError>>>,
    /// Records written so far (needed by formats that separate records, e.g. a JSON array).
    records: u64,
    /// Operations and events exported so far (progress).
    pub(crate) operations: u64,
    pub(crate) events: u64,
}

impl Export {
    pub(crate) fn new(reader: StoreReader, filter: OperationFilter, format: Format) -> Self {
        Export {
            reader,
            filter,
            format,
            stage: Stage::NotStarted,
            prefetch: None,
            records: 0,
            operations: 0,
            events: 0,
        }
    }

    /// The next bytes of the export, `None` once it has ended. A chunk may be empty (an export
    /// that selects nothing).
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ExportError> {
        let mut out = Vec::new();
        let cursor = match self.stage {
            Stage::Done => return Ok(None),
            Stage::NotStarted => {
                self.begin(&mut out);
                None
            }
            Stage::Paging(cursor) => cursor,
        };
        let page = match self.prefetch.take() {
            Some(reading) => reading.await.map_err(|e| {
                StoreError::unavailable(format!("the export's page reader stopped: {e}"))
            })??,
            None => read_page(self.reader.clone(), self.filter.clone(), cursor).await?,
        };
        if let Some(next) = page.next {
            let reading = read_page(self.reader.clone(), self.filter.clone(), Some(next));
            self.prefetch = Some(tokio::spawn(reading));
        }
        for operation in &page.operations {
            self.operation(operation, &mut out)?;
        }
        match page.next {
            Some(next) => self.stage = Stage::Paging(Some(next)),
            None => {
                self.end(&mut out);
                self.stage = Stage::Done;
            }
        }
        Ok(Some(out))
    }

    fn begin(&mut self, out: &mut Vec<u8>) {
        match self.format {
            Format::Csv => csv::header(out),
            Format::DirectoryAudit => out.extend_from_slice(b"{\"value\":["),
            Format::Jsonl | Format::Ocsf => {}
        }
    }

    fn operation(
        &mut self,
        stored: &FoldedOperation<RawEvent>,
        out: &mut Vec<u8>,
    ) -> Result<(), ExportError> {
        self.operations += 1;
        self.events += stored.events.len() as u64;
        match self.format {
            // Copied as stored, never parsed (see `read_page`): a record per event.
            Format::Jsonl => {
                jsonl::write(stored, out)?;
                self.records += stored.events.len() as u64;
                return Ok(());
            }
            Format::Csv => csv::write(&Operation::read(stored)?, out)?,
            Format::DirectoryAudit => {
                let op = Operation::read(stored)?;
                out.extend_from_slice(if self.records == 0 { b"\n" } else { b",\n" });
                directory_audit::write(&op, out)?;
            }
            Format::Ocsf => ocsf::write(&Operation::read(stored)?, out)?,
        }
        self.records += 1;
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.format == Format::DirectoryAudit {
            out.extend_from_slice(b"\n]}\n");
        }
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        if let Some(reading) = self.prefetch.take() {
            reading.abort();
        }
    }
}

/// A page of an export: the operations with their events as stored.
type Page = FoldedPage<RawEvent>;

/// One page of the export's operations, with their events as stored (owned, so it can be
/// read by a task of its own). jsonl copies each event's stored text, never parsed: parsing
/// and writing it again was most of an export's cost, and the stored text is what was hashed.
/// The other formats read the few fields they write (`facts.rs`) while rendering.
async fn read_page(
    reader: StoreReader,
    filter: OperationFilter,
    cursor: Option<Cursor>,
) -> Result<Page, StoreError> {
    reader
        .folded_operations(&filter, cursor.as_ref(), PAGE_OPERATIONS)
        .await
}

#[cfg(test)]
mod tests;
