//! `syncgate audit tail`: follow the log, printing events as they are appended, until Ctrl-C.
//!
//! It reads the database directly (like `audit list`), so it works beside a live proxy, on a
//! replica's shared PostgreSQL log as well as on a SQLite file, and needs no admin API key. It
//! polls: a page of at most [`PAGE`] events at a time, and a pause of [`POLL`] when there was
//! nothing new, so following costs the database one small indexed query per pause.

use std::io::{self, BufWriter, Write};
use std::time::Duration;

use anyhow::Context;

use super::TailFormat;
use super::list::table_row;
use crate::audit::Recorded;
use crate::cli::render::ignore_closed_pipe;
use crate::store::{Filter, StoreReader};

/// Events per query.
const PAGE: u32 = 500;
/// The pause after a look that found nothing new.
const POLL: Duration = Duration::from_millis(500);

/// Print events after `after_seq` (default: the current head, so only new events) until Ctrl-C
/// or a closed pipe.
pub(super) async fn run(
    reader: &StoreReader,
    after_seq: Option<i64>,
    format: TailFormat,
) -> anyhow::Result<()> {
    let mut after = match after_seq {
        Some(seq) => seq,
        None => reader
            .head()
            .await
            .with_context(|| format!("cannot read {}", reader.location()))?
            .map_or(0, |head| head.seq),
    };
    let mut out = BufWriter::new(io::stdout());
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let filter = Filter {
            after_seq: Some(after),
            limit: Some(PAGE),
            ..Filter::default()
        };
        let events = reader
            .list(&filter)
            .await
            .with_context(|| format!("cannot read {}", reader.location()))?;
        if let Some(last) = events.last() {
            after = last.seq;
            if !ignore_closed_pipe(write(&mut out, format, &events))? {
                return Ok(());
            }
        }
        if events.len() < PAGE as usize {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

fn write(out: &mut impl Write, format: TailFormat, events: &[Recorded]) -> io::Result<()> {
    for event in events {
        match format {
            TailFormat::Json => serde_json::to_writer(&mut *out, event)?,
            TailFormat::Text => out.write_all(table_row(event).join("  ").as_bytes())?,
        }
        out.write_all(b"\n")?;
    }
    out.flush()
}
