//! Values read when `/metrics` is scraped rather than counted as they happen: how long this
//! syncgate has run and how many audit events wait for the writer.
//!
//! Counts that need the database (the approval gate's pending requests and waiting notices) are
//! not read here, where a scrape cannot wait on a query: the notices' delivery task reads them
//! every few seconds and sets their gauges (`approvals/notify.rs`).

use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::store::Store;

/// Reads its values on each scrape.
pub(super) struct Scraped {
    /// The audit log whose writer queue is shown; `None` for a registry without one.
    store: Option<Store>,
    /// When this syncgate started.
    started: Instant,
}

impl Scraped {
    pub(super) fn new(store: Option<Store>, started: Instant) -> Self {
        Self { store, started }
    }
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraped")
            .field("store", &self.store.is_some())
            .field("started", &self.started)
            .finish()
    }
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let uptime = ConstGauge::new(self.started.elapsed().as_secs_f64());
        uptime.encode(encoder.encode_descriptor(
            "uptime",
            "Time since this syncgate started",
            Some(&Unit::Seconds),
            uptime.metric_type(),
        )?)?;
        if let Some(store) = &self.store {
            let queued = ConstGauge::new(i64::try_from(store.stats().queued).unwrap_or(i64::MAX));
            queued.encode(encoder.encode_descriptor(
                "store_queued",
                "Audit events waiting for the writer now",
                None,
                queued.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
