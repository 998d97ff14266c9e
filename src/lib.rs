//! syncgate: an audit-logging, policy-enforcing reverse proxy for Microsoft Graph's cross-tenant
//! user synchronization policies. See `docs/design.md` for the request lifecycle.
//!
//! A map of the crate:
//! - [`cli`]: the command line, with its `audit` commands and its `rules` commands (rule tests,
//!   backtest) and `demo`, which runs the whole stack.
//!   These are the CLI edge, the only places `anyhow` is used.
//! - [`config`]: the TOML file, parsed then validated into [`config::Settings`]; `units` reads
//!   its durations and sizes (shared with [`rules`], so neither imports the other).
//! - [`app`]: opens the audit log, recovers interrupted changes, binds the proxy and admin
//!   listeners and runs them until shutdown.
//! - [`server`]: the shared accept loop (HTTP/1.1 + HTTP/2, TLS, graceful drain).
//! - `graph`: Graph's vocabulary (tenant and operation ids, API versions, canonical and
//!   documented paths, state paths, the route table forward and reverse, limits), written once.
//! - [`classify`]: is a request governed, and how? (reads targets and bodies; routes by `graph`)
//! - [`proxy`]: what happens to each request: pass-through streams both ways (`proxy/forward.rs`);
//!   a governed change runs the lifecycle's phases (read → lock → before → decide → record →
//!   forward → after → complete, one module each under `proxy/lifecycle/`), every exit ending in
//!   one terminal event; `$batch` is rebuilt or unbatched (`proxy/batch.rs`). `docs/tour.md`
//!   follows one governed request through them.
//! - [`audit`]: the audit event; [`store`]: the append-only, hash-chained log it is kept in.
//! - `export`: the log as JSON lines, CSV, Entra `directoryAudit` or OCSF, streamed page by page
//!   (for `GET /api/v1/export` and `syncgate audit export`).
//! - `admin`: `/healthz`, `/readyz` and the authenticated admin API (`admin/auth.rs`: principals,
//!   API keys, roles) on their own listener, described by `admin/openapi.json`.
//! - [`emulator`]: a local Microsoft Graph for tests, the demo and users' own automation tests.
//! - `graph_error`: Graph's error shape for every locally made error.
//! - `metrics`: one instance's counters and histograms, rendered by the admin listener's
//!   `/metrics` (never a process-wide recorder).
//! - [`token`]: bearer tokens and their (unverified) claims.
//! - [`tls`]: PEM loading and rustls configurations (ring provider).
//! - [`body`]: the one body type.

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod app;
pub mod approvals;
pub mod audit;
pub mod body;
pub mod classify;
pub mod cli;
pub mod config;
pub(crate) mod egress;
pub mod emulator;
pub(crate) mod export;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod graph;
pub(crate) mod graph_error;
pub(crate) mod metrics;
pub mod proxy;
pub mod rules;
pub mod server;
pub mod store;
pub(crate) mod telemetry;
pub mod tls;
pub mod token;
mod units;
