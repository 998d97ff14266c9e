//! The command line: parse, set up logging, run one command. `anyhow` lives here only.
//!
//! The tools sit in their own modules (`audit`: list, show, verify the log; `rules`: test
//! and backtest rules; `admin`: API keys for the admin API) and print through one `render` module, so they never borrow each
//! other's helpers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Overrides, RawConfig};
use crate::server::ServeOptions;
use crate::telemetry::{self, LogFormat};
use crate::{app, emulator, tls};

mod admin;
mod approvals;
pub(crate) mod audit;
mod ca;
mod demo;
pub(crate) mod render;
pub(crate) mod rules;

/// syncgate: an audit-logging, policy-enforcing reverse proxy for Microsoft Graph's cross-tenant
/// user synchronization policies.
#[derive(Debug, Parser)]
#[command(name = "syncgate", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Log line format on stderr (level from RUST_LOG, default info; warn for `demo`).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the proxy and its admin listener until SIGINT/SIGTERM.
    ///
    /// Graph clients point their base URL at the proxy listener instead of
    /// https://graph.microsoft.com. On SIGINT/SIGTERM syncgate stops accepting, lets in-flight
    /// requests finish (proxy.shutdown_grace) and exits.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Proxy listen address (overrides proxy.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Upstream: a cloud name (global, usgov, dod, china) or URL (overrides upstream.url).
        #[arg(long, value_name = "URL")]
        upstream: Option<String>,
        /// The audit log: a SQLite file or a `postgres://` URL (overrides store.path / store.url).
        #[arg(long, value_name = "PATH|URL")]
        db: Option<String>,
        /// Admin listen address (overrides admin.listen).
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<String>,
    },
    /// Run the built-in Microsoft Graph emulator alone, for testing your own automation.
    ///
    /// It serves the cross-tenant partner and identitySynchronization APIs under /v1.0 and /beta,
    /// $batch, Graph's errors and headers, plus /_emulator/{state,faults,requests,reset} for tests.
    /// Tokens are read but never verified. With --tls-cert and --tls-key it serves TLS.
    Emulate {
        /// Listen address; port 0 picks a free port (printed on stdout).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// PEM certificate chain to serve TLS with (needs --tls-key).
        #[arg(long, value_name = "PATH", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, value_name = "PATH", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Run the whole stack on this machine with no setup: the emulator as the upstream, the proxy
    /// in front of it, on free local ports; prints what to try, serves until Ctrl-C.
    ///
    /// Logs only warnings, so the narration reads uninterrupted; RUST_LOG=info shows every request.
    Demo {
        /// Proxy listen address (default: a free local port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Validate a configuration file (including its TLS files); exit 0 when it is usable.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Create the audit log, or bring its schema up to date, and exit.
    ///
    /// `--db` is a SQLite file or a PostgreSQL URL (`postgres://user@host/db`; the password comes
    /// from store.password_file in --config, PGPASSWORD or a password file, never from the URL);
    /// without it, the configuration's `[store]`. Safe to run again: migrations already applied
    /// are skipped.
    Migrate {
        /// The audit log: a SQLite file path or a `postgres://` URL (default: the
        /// configuration's `[store]`).
        #[arg(long, value_name = "PATH|URL")]
        db: Option<String>,
        /// Its `[store]` settings (password_file, statement_timeout) apply too.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Query, verify and export the audit log: list, show one operation, verify the hash chain,
    /// copy it, export it (jsonl, csv, Entra directory-audit, OCSF).
    ///
    /// Opens the log read-only (never creates it): safe while the proxy is running.
    Audit(audit::AuditArgs),
    /// Tools for rule authors: run rule test suites, backtest new rules against the audit log.
    ///
    /// `rules test FILE...` exits 0 only when every case passes. `rules backtest --config NEW.toml`
    /// replays the recorded changes through NEW's rules and reports what they would decide
    /// differently; it opens the log read-only.
    Rules(rules::RulesArgs),
    /// Manage who may use the admin API: `admin new-key --name NAME --roles auditor,...` prints a
    /// new API key once and the `[[admin.principals]]` lines (its salted hash) to paste.
    Admin(admin::AdminArgs),
    /// The change-approval gate, through a running syncgate's admin API: `list`, `show ID`,
    /// `approve ID`, `reject ID` (with `--comment`).
    ///
    /// The API key is read from --key-file or the SYNCGATE_ADMIN_KEY environment variable, never
    /// from a flag; --admin-url (or SYNCGATE_ADMIN_URL) names the admin listener.
    Approvals(approvals::ApprovalsArgs),
    /// Egress mode's enterprise CA: `ca init --out DIR` makes one for trials (limited by name
    /// constraints to the Graph hosts) and prints how to trust it on clients.
    Ca(ca::CaArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// Configuration file (TOML); see config/syncgate.toml. Defaults apply without one.
    #[arg(long, short, value_name = "FILE", env = "SYNCGATE_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<RawConfig> {
        Ok(match &self.config {
            Some(path) => RawConfig::load(path)?,
            None => RawConfig::default(),
        })
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = match cli.command {
        Command::Demo { .. } => demo::DEFAULT_LOG_LEVEL,
        _ => "info",
    };
    telemetry::init(cli.log_format, log_level);
    tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "syncgate: {}",
                render::sentence(&format!("cannot start the async runtime: {e}"))
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncgate: {}", render::sentence(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            config,
            listen,
            upstream,
            db,
            admin_listen,
        } => {
            let config_path = config.config.clone();
            let mut raw = config.load()?;
            raw.apply(Overrides {
                listen,
                upstream,
                db,
                admin_listen,
            });
            let settings = raw.validate().context("invalid configuration")?;
            let upstream = settings.upstream.to_string();
            let shutdown = CancellationToken::new();
            // Signal handlers first: once syncgate says it listens, a signal must find them.
            let stopping = stop_on_signal(shutdown.clone());
            let running = app::start(settings, shutdown).await?;
            let reloading = reload_on_hangup(
                config_path,
                running.rules.clone(),
                running.approvals.clone(),
            );
            println!(
                "syncgate: proxy listening on {} (upstream {upstream})",
                running.url()
            );
            println!("syncgate: admin listening on {}", running.admin_url());
            if let Some(egress) = running.egress_addr {
                println!("syncgate: egress (forward proxy) listening on http://{egress}");
            }
            tracing::info!(version = %running.rules.current().version(), "rules in force");
            tokio::spawn(stopping);
            tokio::spawn(reloading);
            running.stopped().await;
            Ok(())
        }
        Command::Emulate {
            listen,
            tls_cert,
            tls_key,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(tls::server_config(&cert, &key, None)?),
                _ => None,
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            let shutdown = CancellationToken::new();
            let stopping = stop_on_signal(shutdown.clone());
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "syncgate: emulator listening on {scheme}://{}",
                listener.local_addr()?
            );
            tokio::spawn(stopping);
            let options = ServeOptions {
                tls,
                ..ServeOptions::default()
            };
            emulator::run(listener, options, shutdown).await;
            Ok(())
        }
        Command::Demo { listen } => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            demo::run(&listen, shutdown).await
        }
        Command::Audit(args) => audit::run(args).await,
        Command::Rules(args) => rules::run(args).await,
        Command::Admin(args) => admin::run(args),
        Command::Ca(args) => ca::run(args),
        Command::Approvals(args) => approvals::run(args).await,
        Command::CheckConfig { config } => check_config(&config),
        Command::Migrate { db, config } => migrate(db.as_deref(), &config).await,
    }
}

/// `migrate`: apply the migrations the log lacks, on either backend.
async fn migrate(db: Option<&str>, config: &ConfigArgs) -> anyhow::Result<()> {
    let mut store = config.load()?.store;
    if let Some(db) = db {
        store.set_location(&crate::store::StoreLocation::parse(db));
    }
    let location = store.location()?;
    crate::store::Store::migrate(&location, store.options()?).await?;
    println!("syncgate: the audit log {location} is up to date.");
    Ok(())
}

/// `check-config`: validate the file (TLS files included) and say what it sets up.
fn check_config(config: &ConfigArgs) -> anyhow::Result<()> {
    let settings = config.load()?.validate()?;
    println!(
        "syncgate: configuration OK: proxy {} ({}), upstream {}, admin {} ({}), audit log {}.",
        settings.listen,
        if settings.tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        },
        settings.upstream,
        settings.admin_listen,
        if settings.admin_tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        },
        settings.store
    );
    if settings.rules.is_empty() {
        println!("syncgate: no local rules: every well-formed governed change is allowed.");
    } else {
        println!("syncgate: rules OK, version {}.", settings.rules.version());
    }
    Ok(())
}

/// On SIGHUP, reload the rules from the configuration file and put them in force atomically; a
/// file that does not validate keeps the rules in force, and the log says why. The handler is
/// installed when this is called (SIGHUP's default action would end the process).
fn reload_on_hangup(
    config: Option<PathBuf>,
    rules: crate::proxy::RulesHandle,
    approvals: std::sync::Arc<crate::approvals::ApprovalSettings>,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        reload_on(hangup, config, rules, approvals).await;
        #[cfg(not(unix))]
        let _ = (config, rules, approvals);
    }
}

#[cfg(unix)]
async fn reload_on(
    hangup: std::io::Result<tokio::signal::unix::Signal>,
    config: Option<PathBuf>,
    rules: crate::proxy::RulesHandle,
    approvals: std::sync::Arc<crate::approvals::ApprovalSettings>,
) {
    {
        let Ok(mut hangup) = hangup else {
            tracing::warn!("cannot listen for SIGHUP; rules reload is unavailable");
            return;
        };
        while hangup.recv().await.is_some() {
            let Some(path) = &config else {
                tracing::warn!("SIGHUP: syncgate was started without --config; nothing to reload");
                continue;
            };
            // The approval policies in force are the ones started with: a reloaded rule must
            // name one of them.
            match RawConfig::load(path).and_then(|raw| raw.load_rules_for(&approvals)) {
                Ok(set) => {
                    tracing::info!(version = %set.version(), "rules reloaded");
                    rules.replace(std::sync::Arc::new(set));
                }
                Err(error) => tracing::error!(
                    error = %format!("{:#}", anyhow::Error::new(error)),
                    version = %rules.current().version(),
                    "rules reload failed; keeping the rules in force"
                ),
            }
        }
    }
}

/// Cancel `shutdown` on the first SIGINT or SIGTERM; exit at once on a second.
///
/// The handlers are installed when this is called, not when the returned task first runs: a
/// caller that has said it is listening must already stop gracefully on a signal (a supervisor
/// or a test may send one at once), rather than die of the default action.
fn stop_on_signal(shutdown: CancellationToken) -> impl std::future::Future<Output = ()> {
    let mut signals = Signals::install();
    async move {
        signals.next().await;
        tracing::info!(
            "shutting down: finishing in-flight requests (a second signal exits at once)"
        );
        shutdown.cancel();
        signals.next().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    }
}

/// SIGINT and SIGTERM, listened to from the moment they are installed.
#[cfg(unix)]
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.interrupt) => {}
            _ = recv(&mut self.terminate) => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Self {
        Signals
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
