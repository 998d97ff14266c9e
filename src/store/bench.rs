//! The read paths `benches/audit_queries.rs` times, behind a small public surface.
//!
//! The benchmark must time the very code the admin API and the CLI run (the strict query parser,
//! the operations fold, the per-operation and paged event reads, the log copy), but those stay
//! `pub(crate)`: making them public would turn internals into an API. This module is the one
//! door, hidden from the docs, with plain types (strings, counts) so nothing else leaks.

use uuid::Uuid;

use super::{Filter, StoreError, StoreLocation, StoreOptions, StoreReader};
use crate::audit::Recorded;

/// A read-only handle on a log, as the CLI and the admin API hold one.
pub struct Reader {
    inner: StoreReader,
}

/// One page of `GET /api/v1/operations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationsPage {
    /// Operations on the page.
    pub rows: usize,
    /// The ids of the operations on the page, newest first.
    pub ids: Vec<Uuid>,
    /// The next page's `cursor` parameter, when there is one.
    pub next: Option<String>,
}

impl Reader {
    /// Open the log at `location` read-only, with the default options.
    pub async fn open(location: &StoreLocation) -> Result<Reader, StoreError> {
        let inner = StoreReader::open(location, &StoreOptions::default()).await?;
        Ok(Reader { inner })
    }

    /// The page `GET /api/v1/operations?{query}` answers (the same parser, the same query); the
    /// error is the 400's message or the store's failure.
    pub async fn operations(&self, query: &str) -> Result<OperationsPage, String> {
        let q = crate::admin::operations::parse(Some(query)).map_err(|(_, _, why)| why)?;
        let page = self
            .inner
            .operations(&q.filter, q.cursor.as_ref(), q.limit)
            .await
            .map_err(|e| e.to_string())?;
        Ok(OperationsPage {
            rows: page.operations.len(),
            ids: page
                .operations
                .iter()
                .map(|s| s.operation_id.uuid())
                .collect(),
            next: page.next.map(|c| c.encode()),
        })
    }

    /// Every event of one operation in seq order: what `GET /api/v1/operations/{id}` reads.
    pub async fn operation_events(&self, id: Uuid) -> Result<Vec<Recorded>, StoreError> {
        self.inner.operation(id).await
    }

    /// Up to `limit` events after `after_seq`, deserialized, in seq order (a stream's page).
    pub async fn events_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Recorded>, StoreError> {
        let filter = Filter {
            after_seq: Some(after_seq),
            limit: Some(limit),
            ..Filter::default()
        };
        self.inner.list(&filter).await
    }

    /// Run the export `GET /api/v1/export?format={format}&{filters}` streams (the same loop;
    /// `filters` as the operations route reads them, `""` for every operation), handing each
    /// chunk to `each`; events exported.
    pub async fn export(
        &self,
        format: &str,
        filters: &str,
        mut each: impl FnMut(&[u8]),
    ) -> Result<u64, String> {
        use crate::export::{Export, Format};
        let format = Format::parse(format).ok_or_else(|| format!("no format {format}"))?;
        let q = crate::admin::operations::parse(Some(filters)).map_err(|(_, _, why)| why)?;
        let mut export = Export::new(self.inner.clone(), q.filter, format);
        while let Some(chunk) = export.next_chunk().await.map_err(|e| e.to_string())? {
            each(&chunk);
        }
        Ok(export.events)
    }

    /// `syncgate audit verify`'s check: whether the chain and the operations index verified,
    /// and the events checked.
    pub async fn verify(&self) -> Result<(bool, u64), StoreError> {
        let report = self.inner.verify().await?;
        Ok((report.ok(), report.events))
    }

    /// `syncgate audit verify --quick --key VKEY`: whether the log holds against what the key
    /// signed, the events checked, and how many of them signed checkpoints cover.
    pub async fn verify_quick(&self, vkey: &str) -> Result<(bool, u64, u64), String> {
        let key = crate::audit::note::Verifier::parse(vkey).map_err(|e| e.to_string())?;
        let verified = self
            .inner
            .verify_signed(&key, Vec::new())
            .await
            .map_err(|e| e.to_string())?;
        Ok((verified.ok(), verified.pass.events, verified.covered))
    }

    /// The size of the latest checkpoint the log stores (0: none).
    pub async fn latest_checkpoint(&self) -> Result<u64, StoreError> {
        Ok(self.inner.latest_checkpoint().await?.map_or(0, |c| c.size))
    }

    /// The inclusion proof of event `seq` in the tree of `size` events, as the admin API gives
    /// it (`GET /api/v1/proofs/inclusion`).
    pub async fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        self.inner.inclusion_proof(seq, size).await
    }

    /// Copy this log to `to` as `syncgate audit copy` does; returns the rows written.
    pub async fn copy_to(&self, to: &StoreLocation) -> Result<u64, StoreError> {
        let report = super::copy(&self.inner, to, &StoreOptions::default()).await?;
        Ok(report.copied)
    }

    pub async fn close(&self) {
        self.inner.close().await;
    }
}
