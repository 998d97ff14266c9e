//! `syncgate audit export`: the same exports as `GET /api/v1/export` (see `crate::export`), read
//! from the database directly, to stdout or a file. The filters are the API's, read by the API's
//! own parser, so a command line and a query string with the same filters export the same
//! records. A progress line goes to stderr when stderr is a terminal, never into a pipe or a log.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::admin::operations::filter_parameter;
use crate::cli::render::ignore_closed_pipe;
use crate::export::{Export, Format};
use crate::store::{OperationFilter, StoreReader};

/// `syncgate audit export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[arg(long, value_enum)]
    format: Format,
    /// Write the export to this file (created or replaced) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    filters: FilterArgs,
}

/// The filters of `GET /api/v1/operations`, under the same names and read by the same parser.
#[derive(Debug, Default, Args)]
pub(crate) struct FilterArgs {
    /// Only this partner tenant (GUID).
    #[arg(long, value_name = "GUID")]
    partner: Option<String>,
    /// Only this actor: object id, UPN (any case) or application id.
    #[arg(long, value_name = "ID")]
    actor: Option<String>,
    /// Only this operation kind (sync_update, partner_create, ...).
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Only operations decided so: allow or deny.
    #[arg(long, value_name = "DECISION")]
    decision: Option<String>,
    /// Only operations this rule (its id) decided.
    #[arg(long, value_name = "RULE")]
    rule: Option<String>,
    /// Only this effect: applied, ignored, not_applied, applied_despite_error, diverged, unknown.
    #[arg(long, value_name = "EFFECT")]
    effect: Option<String>,
    /// Only operations whose upstream answered this status.
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
    /// Only operations that found drift (true) or did not (false).
    #[arg(long, value_name = "true|false")]
    drift: Option<String>,
    /// From this time on: RFC 3339, a UTC date, or a time ago (90s, 30m, 1h, 7d, 2w).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Before this time: RFC 3339, a UTC date (that whole day included), or a time ago.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only operations whose display name contains this text (any ASCII case).
    #[arg(long = "q", visible_alias = "text", value_name = "TEXT")]
    q: Option<String>,
}

impl FilterArgs {
    /// The filter, as the API would read the same values.
    pub(crate) fn filter(&self) -> anyhow::Result<OperationFilter> {
        let mut filter = OperationFilter::default();
        let given = [
            ("partner", &self.partner),
            ("actor", &self.actor),
            ("kind", &self.kind),
            ("decision", &self.decision),
            ("rule", &self.rule),
            ("effect", &self.effect),
            ("status", &self.status),
            ("drift", &self.drift),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ];
        for (key, value) in given {
            let Some(value) = value else { continue };
            filter_parameter(&mut filter, key, value).map_err(|(_, _, message)| {
                let why = message.split_once(": ").map_or(message.as_str(), |m| m.1);
                anyhow!("--{key} {value:?} {why}")
            })?;
        }
        Ok(filter)
    }
}

/// A progress line on stderr, or nothing when stderr is not a terminal.
fn progress() -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} exporting: {msg} ({elapsed}, {per_sec})")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub(super) async fn run(reader: &StoreReader, args: ExportArgs) -> anyhow::Result<()> {
    let filter = args.filters.filter()?;
    let (mut out, target): (Box<dyn Write>, String) = match &args.output {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            (Box::new(BufWriter::new(file)), path.display().to_string())
        }
        None => (
            Box::new(BufWriter::new(io::stdout().lock())),
            "stdout".into(),
        ),
    };
    let bar = progress();
    let mut export = Export::new(reader.clone(), filter, args.format);
    loop {
        let chunk = export.next_chunk().await.with_context(|| {
            format!(
                "the export stopped after {} operations ({} is incomplete)",
                export.operations, target
            )
        });
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        bar.set_position(export.events);
        bar.set_message(format!(
            "{} operations, {} events",
            export.operations, export.events
        ));
        if !ignore_closed_pipe(out.write_all(&chunk))? {
            bar.finish_and_clear();
            return Ok(());
        }
    }
    ignore_closed_pipe(out.flush())?;
    bar.finish_and_clear();
    if args.output.is_some() {
        eprintln!(
            "syncgate: exported {} operations ({} events) as {} to {target}.",
            export.operations,
            export.events,
            args.format.as_str()
        );
    }
    Ok(())
}
