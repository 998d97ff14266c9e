//! `syncgate audit list|show|verify|tail|copy|export`: the auditor's view of the log, from the
//! command line.
//!
//! Every command opens the log read-only through [`StoreReader`]: it never creates a missing file,
//! needs no write access, and runs safely beside a live proxy (WAL readers do not block the
//! writer). The database comes from `--db`, else `store.path` in `--config`, else the default.
//! Output goes to stdout in the chosen format; a closed pipe (`| head`) ends quietly.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use uuid::Uuid;

use super::render::{parse_since, parse_until};
use crate::audit::kept::{self, Kept};
use crate::audit::note::{Checkpoint, Verifier};
use crate::audit::{Decision, Effect, EventKind};
use crate::config::RawConfig;
use crate::store::{Cursor, Store, StoreLocation, StoreOptions, StoreReader};

mod export;
mod list;
mod operations;
mod proofs;
mod show;
mod tail;

/// `syncgate audit`: where the log is, and what to do with it.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// The audit log: a SQLite file or a `postgres://` URL (wins over --config).
    #[arg(long, value_name = "PATH|URL", global = true)]
    db: Option<String>,
    /// Configuration file whose `[store]` names the audit log.
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "SYNCGATE_CONFIG",
        global = true
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// List events, oldest first, or with --operations one row per operation, newest first;
    /// every option narrows the list.
    List(ListArgs),
    /// Every event of one operation: who, what, when, the states before and after, the changes.
    Show {
        /// The operation id (the x-syncgate-audit-id response header).
        operation_id: Uuid,
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
    },
    /// Recompute the hash chain; exit 0 when it holds, non-zero naming the first broken event.
    /// With --checkpoint, also check the log against checkpoints kept elsewhere: a cut tail, a
    /// rewritten history or two signed histories are each reported by name.
    Verify(VerifyArgs),
    /// Export operations as jsonl, csv, directory-audit (Entra) or ocsf, newest first, with the
    /// filters of the admin API's /api/v1/operations; to stdout unless --output.
    Export(Box<export::ExportArgs>),
    /// Follow the log: print events as they are appended, until Ctrl-C.
    Tail {
        /// Start after this seq (default: the current last event, so only new events print).
        #[arg(long, value_name = "SEQ")]
        after_seq: Option<i64>,
        #[arg(long, value_enum, default_value_t = TailFormat::Text)]
        format: TailFormat,
    },
    /// Rebuild the operations index (what the auditors' queries and exports read) from the
    /// events, then verify the log: for an index that `audit verify` found disagreeing with the
    /// chain. Appends wait while it runs, and are refused once their wait runs out: stop
    /// syncgate first, or run it when no change is expected.
    Reindex,
    /// Print the verifier key of the log's checkpoint signing key (`<name>+<key id>+<key>`, the
    /// form transparency tooling and witnesses take), creating the key on first use.
    Key {
        /// The key file (default: `<db path>.checkpoint-key` beside a SQLite log; mode 0600).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The key's name, which is the checkpoints' origin (default: `syncgate/` and the first 8
        /// bytes of SHA-256 of the public key, hex).
        #[arg(long, value_name = "NAME")]
        origin: Option<String>,
    },
    /// Verify the log, then sign a checkpoint of it (its size and tree root, C2SP format) with
    /// the log's checkpoint key, to keep somewhere the database's owner cannot write; `audit
    /// verify --checkpoint` checks the log against it later. Refused when the chain is broken.
    Checkpoint {
        /// Where to write it (created; an existing file is not replaced). Default: stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// The key file (default: `<db path>.checkpoint-key` beside a SQLite log).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The key's name, the checkpoint's origin (default as `audit key`).
        #[arg(long, value_name = "NAME")]
        origin: Option<String>,
    },
    /// Write one operation's evidence pack: its events, an inclusion proof for each and the
    /// latest signed checkpoint, in one JSON file that `audit verify-evidence` checks offline,
    /// with no database (docs/transparency.md).
    Evidence {
        /// The operation id (the x-syncgate-audit-id response header).
        operation_id: Uuid,
        /// Where to write it (created; an existing file is not replaced). Default: stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check an evidence pack offline: the checkpoint is signed by the log's key and every
    /// event is, byte for byte, the one the log signed at its place. Opens no database.
    VerifyEvidence {
        /// The pack (`audit evidence -o FILE`).
        file: PathBuf,
        /// The log's verifier key (what `syncgate audit key` prints).
        #[arg(long, value_name = "VKEY")]
        key: String,
    },
    /// Print the consistency proof from the log's tree at OLD events to its tree at NEW (each a
    /// size, or a signed checkpoint file, then checked against its signed root with --key): a
    /// log that kept its history produces one; a rewritten log cannot.
    ProveConsistency {
        /// The older tree: a size, or a checkpoint file.
        #[arg(value_parser = proofs::parse_end)]
        old: proofs::End,
        /// The newer tree: a size, or a checkpoint file.
        #[arg(value_parser = proofs::parse_end)]
        new: proofs::End,
        /// The verifier key checkpoint files must be signed with.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
    },
    /// Copy the log to another store, chain intact (e.g. SQLite to PostgreSQL). Run it again to
    /// resume an interrupted copy; the copy verifies to the same head hash.
    Copy {
        /// The log to copy: a SQLite file (`sqlite:FILE` or a path) or a `postgres://` URL
        /// (default: --db, else the configuration's store).
        #[arg(long, value_name = "PATH|URL")]
        from: Option<String>,
        /// Where to copy it: a new or partly copied log. A PostgreSQL password comes from
        /// PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass), never a flag.
        #[arg(long, value_name = "PATH|URL")]
        to: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// A signed checkpoint kept elsewhere (a C2SP signed note, or a file witness's file of
    /// them; docs/transparency.md): the log's tree at each one's size must still have its
    /// root. Repeat for several.
    #[arg(long = "checkpoint", value_name = "FILE", requires = "key")]
    checkpoints: Vec<PathBuf>,
    /// The verifier key the checkpoints must be signed with (what `syncgate audit key` prints).
    #[arg(long, value_name = "VKEY")]
    key: Option<String>,
    /// Trust what the key signed: the events up to the largest checkpoint that matches (kept
    /// elsewhere, or stored in the log and signed by --key) are hashed once, not parsed; only
    /// the events after it are checked in full. The filter columns of the signed events and the
    /// operations index are not checked (the full verification does).
    #[arg(long, requires = "key")]
    quick: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// One row per governed operation, its events folded (as `GET /api/v1/operations`), newest
    /// first, instead of one row per event.
    #[arg(long)]
    operations: bool,
    /// Only this partner tenant (GUID).
    #[arg(long, value_name = "GUID", value_parser = parse_guid)]
    partner: Option<String>,
    /// Only this actor: object id, UPN (any case) or application id.
    #[arg(long, value_name = "ID")]
    actor: Option<String>,
    /// From this time on: RFC 3339 (2025-06-01T08:00:00Z), a UTC date (2025-06-01), or a time
    /// ago (90s, 30m, 1h, 7d, 2w). With --operations: operations that started then.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    /// Before this time: RFC 3339, a UTC date (that whole day included), or a time ago (30m).
    #[arg(long, value_name = "TIME", value_parser = parse_until)]
    until: Option<DateTime<Utc>>,
    /// Only this kind: of event (received, completed, denied, recovered, drift, read), or with
    /// --operations of operation (sync_update, partner_delete, ...).
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Only this decision: allow or deny.
    #[arg(long, value_name = "DECISION", value_parser = parse_decision)]
    decision: Option<Decision>,
    /// With --operations: only operations this rule decided (their first failing rule).
    #[arg(long, value_name = "RULE ID", requires = "operations")]
    rule: Option<String>,
    /// With --operations: only this effect (applied, ignored, not_applied, ...).
    #[arg(long, value_name = "EFFECT", value_parser = parse_effect, requires = "operations")]
    effect: Option<Effect>,
    /// With --operations: only this upstream status of the final event (204, 403, ...).
    #[arg(long, value_name = "STATUS", requires = "operations")]
    status: Option<u16>,
    /// With --operations: only operations with (true) or without (false) drift.
    #[arg(long, value_name = "true|false", requires = "operations")]
    drift: Option<bool>,
    /// With --operations: the request's display name contains this text (any ASCII case).
    #[arg(long = "q", value_name = "TEXT", requires = "operations")]
    text: Option<String>,
    /// At most this many events (operations with --operations).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Only events after this seq (to continue a previous listing).
    #[arg(long, value_name = "SEQ", conflicts_with = "operations")]
    after: Option<i64>,
    /// With --operations: continue a previous listing from the cursor it printed.
    #[arg(long, value_name = "CURSOR", value_parser = parse_cursor, requires = "operations")]
    cursor: Option<Cursor>,
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
}

/// Output formats of `audit list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListFormat {
    /// Aligned columns for reading; on a terminal, long cells are cut (…) to fit its width.
    Table,
    /// One JSON array of events: indented on a terminal, one event per line through a pipe.
    Json,
    /// One JSON event per line.
    Jsonl,
    /// A header and one row per event; nested values as JSON text.
    Csv,
}

/// Output formats of `audit tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TailFormat {
    /// One line per event: seq, time, kind, operation, partner, actor, decision, status,
    /// effect, operation id.
    Text,
    /// One JSON event per line (the stored event with seq, prev_hash and hash).
    Json,
}

/// Output formats of `audit show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ShowFormat {
    /// Readable at a glance.
    Text,
    /// The operation's events as a JSON array: indented on a terminal, one event per line
    /// through a pipe.
    Json,
}

fn parse_guid(s: &str) -> Result<String, String> {
    Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("{s:?} is not a GUID."))
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    EventKind::parse(s).ok_or_else(|| {
        let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {s:?} (one of: {}).", kinds.join(", "))
    })
}

fn parse_decision(s: &str) -> Result<Decision, String> {
    Decision::parse(s).ok_or_else(|| format!("unknown decision {s:?} (allow or deny)."))
}

fn parse_effect(s: &str) -> Result<Effect, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown effect {s:?} (applied, ignored, not_applied, ...)."))
}

fn parse_cursor(s: &str) -> Result<Cursor, String> {
    Cursor::parse(s).ok_or_else(|| format!("{s:?} is not a cursor printed by audit list."))
}

/// Run one `syncgate audit` command.
pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let mut raw = match &args.config {
        Some(config) => RawConfig::load(config)?,
        None => RawConfig::default(),
    };
    let from = match &args.command {
        AuditCommand::Copy {
            from: Some(from), ..
        } => Some(from),
        _ => args.db.as_ref(),
    };
    if let Some(db) = from {
        raw.store.set_location(&StoreLocation::parse(db));
    }
    let (location, options) = (raw.store.location()?, raw.store_options()?);
    let key_file = |key: &Option<PathBuf>| -> anyhow::Result<PathBuf> {
        match (key, &location) {
            (Some(path), _) => Ok(path.clone()),
            (None, StoreLocation::Sqlite(db)) if !db.is_file() => {
                Err(anyhow!("there is no audit log at {}", db.display()))
            }
            // `checkpoints.key`, else beside a SQLite log, else the data folder's.
            (None, _) => Ok(raw.checkpoints.key_file(&location)),
        }
    };
    if let AuditCommand::Key { key, origin } = &args.command {
        let path = key_file(key)?;
        let origin = origin.as_deref().or(raw.checkpoints.origin.as_deref());
        let signer = crate::store::signing_key::load_or_create(&path, origin)?;
        println!("{}", signer.verifier_key());
        return Ok(());
    }
    if let AuditCommand::VerifyEvidence { file, key } = &args.command {
        return proofs::run_verify_evidence(file, key);
    }
    if let AuditCommand::Reindex = args.command {
        let through = Store::reindex(&location, options.clone())
            .await
            .with_context(|| format!("cannot rebuild the operations index of {location}"))?;
        println!("syncgate: rebuilt the operations index through seq {through}; verifying.");
    }
    let reader = StoreReader::open(&location, &options).await?;
    let result = match args.command {
        AuditCommand::List(list) if list.operations => operations::run(&reader, list).await,
        AuditCommand::List(list) => list::run(&reader, list).await,
        AuditCommand::Show {
            operation_id,
            format,
        } => show::run(&reader, operation_id, format).await,
        AuditCommand::Verify(verify) => match kept_checkpoints(&verify) {
            // clap has --quick require --key.
            Ok((Some(key), kept)) if verify.quick => {
                proofs::run_verify_quick(&reader, &key, kept).await
            }
            Ok((_, kept)) => run_verify(&reader, &kept).await,
            Err(e) => Err(e),
        },
        AuditCommand::Reindex => run_verify(&reader, &[]).await,
        // Answered above, without the log.
        AuditCommand::Key { .. } => Ok(()),
        AuditCommand::Checkpoint {
            output,
            key,
            origin,
        } => match key_file(&key) {
            Ok(path) => {
                let origin = origin.as_deref().or(raw.checkpoints.origin.as_deref());
                run_checkpoint(&reader, &path, origin, output.as_deref()).await
            }
            Err(e) => Err(e),
        },
        AuditCommand::Export(args) => export::run(&reader, *args).await,
        AuditCommand::Evidence {
            operation_id,
            output,
        } => proofs::run_evidence(&reader, operation_id, output.as_deref()).await,
        // Answered above, without the log.
        AuditCommand::VerifyEvidence { .. } => Ok(()),
        AuditCommand::ProveConsistency { old, new, key } => {
            proofs::run_prove_consistency(&reader, &old, &new, key.as_deref()).await
        }
        AuditCommand::Tail { after_seq, format } => tail::run(&reader, after_seq, format).await,
        AuditCommand::Copy { to, .. } => run_copy(&reader, &StoreLocation::parse(&to)).await,
    };
    reader.close().await;
    result
}

/// Copy the log, then verify the copy: its head must be the source's.
async fn run_copy(reader: &StoreReader, to: &StoreLocation) -> anyhow::Result<()> {
    let options = StoreOptions::default();
    let report = crate::store::copy(reader, to, &options)
        .await
        .with_context(|| format!("cannot copy {} to {to}", reader.location()))?;
    let copy = StoreReader::open(to, &options).await?;
    let verified = copy.verify().await;
    copy.close().await;
    let verified = verified.with_context(|| format!("cannot verify the copy {to}"))?;
    if !verified.ok() || verified.head != report.head {
        return Err(anyhow!(
            "the copy {to} does not verify to the source's head ({:?} against {:?})",
            verified.head,
            report.head
        ));
    }
    println!(
        "syncgate: copied {} events from {} to {to} ({} were already there); the copy verifies, \
         head {}.",
        report.copied,
        reader.location(),
        report.already_there,
        report.head.as_deref().unwrap_or("(empty log)")
    );
    Ok(())
}

/// Recompute the hash chain: a verdict on stdout, or an error naming the first broken event.
/// Sign a checkpoint of the log as it verifies now.
async fn run_checkpoint(
    reader: &StoreReader,
    key: &std::path::Path,
    origin: Option<&str>,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let signer = crate::store::signing_key::load_or_create(key, origin)?;
    let report = reader
        .verify()
        .await
        .with_context(|| format!("cannot verify {}", reader.location()))?;
    if let Some(broken) = &report.first_broken {
        return Err(anyhow!(
            "the audit log is BROKEN at seq {} ({}): no checkpoint is signed for it",
            broken.seq,
            broken.reason
        ));
    }
    // A log that contradicts its own signed checkpoints (cut or rewritten after one was
    // signed) must not get a fresh signature over the contradiction.
    if let Some(tree) = &report.tree {
        return Err(anyhow!(
            "the audit log disagrees with its own Merkle data ({}): no checkpoint is signed for it",
            tree.reason
        ));
    }
    let checkpoint = Checkpoint {
        origin: signer.name().to_owned(),
        size: report.events,
        root: report.tree_root,
        extensions: vec![format!(
            "time {}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )],
    };
    let note = signer.sign(&checkpoint.text())?;
    match output {
        None => print!("{note}"),
        Some(path) => {
            proofs::write_new(path, note.as_bytes())?;
            eprintln!(
                "syncgate: signed a checkpoint of {} events (root {}) into {}.",
                report.events,
                hex::encode(report.tree_root),
                path.display()
            );
        }
    }
    Ok(())
}

/// `--key`, and the checkpoints named by `--checkpoint`, each signed by it for its origin.
fn kept_checkpoints(args: &VerifyArgs) -> anyhow::Result<(Option<Verifier>, Vec<Kept>)> {
    let Some(vkey) = &args.key else {
        return Ok((None, Vec::new()));
    };
    let verifier = proofs::verifier(vkey)?;
    let mut kept = Vec::new();
    for path in &args.checkpoints {
        kept.extend(proofs::read_checkpoints(path, &verifier)?);
    }
    Ok((Some(verifier), kept))
}

async fn run_verify(reader: &StoreReader, kept: &[Kept]) -> anyhow::Result<()> {
    let sizes: Vec<u64> = kept.iter().map(|k| k.checkpoint.size).collect();
    let report = reader
        .verify_at(&sizes)
        .await
        .with_context(|| format!("cannot verify {}", reader.location()))?;
    let findings = if report.first_broken.is_none() {
        kept::assess(kept, report.events, &report.roots_at)
    } else {
        Vec::new()
    };
    let problems = kept::problems(&findings);
    if !problems.is_empty() {
        return Err(anyhow!(
            "the chain verified ({} events), but not against the kept checkpoints: {}",
            report.events,
            problems.join("; ")
        ));
    }
    if let (None, Some(tree)) = (&report.first_broken, &report.tree) {
        return Err(anyhow!(
            "the chain verified ({} events, head {}), but not against the log's own Merkle data: \
             {}",
            report.events,
            report.head.as_deref().unwrap_or("(empty log)"),
            tree.reason
        ));
    }
    if let (None, Some(index)) = (&report.first_broken, &report.operations_index) {
        return Err(anyhow!(
            "the chain verified ({} events, head {}), but the operations index, which the \
             auditors' queries and exports read, disagrees with it{}: {}. It is derived, not \
             evidence: `syncgate audit reindex` rebuilds it (docs/operations-index.md)",
            report.events,
            report.head.as_deref().unwrap_or("(empty log)"),
            index
                .operation_id
                .as_deref()
                .map(|id| format!(" at operation {id} (first seq {})", index.first_seq))
                .unwrap_or_default(),
            index.reason
        ));
    }
    match report.first_broken {
        None => {
            println!(
                "syncgate: audit log OK: {} events, head {}.\nsyncgate: the RFC 6962 tree root \
                 of those {} events is {}.\nsyncgate: the {} signed checkpoints stored in the \
                 log agree with its events.",
                report.events,
                report.head.as_deref().unwrap_or("(empty log)"),
                report.events,
                hex::encode(report.tree_root),
                report.checkpoints_checked
            );
            for finding in &findings {
                println!("syncgate: {finding}.");
            }
            Ok(())
        }
        Some(broken) => Err(anyhow!(
            "audit log BROKEN at seq {} (event {}): {}; {} events before it verified",
            broken.seq,
            if broken.event_id.is_empty() {
                "?"
            } else {
                &broken.event_id
            },
            broken.reason,
            report.events
        )),
    }
}
