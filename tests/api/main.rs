//! syncgate's integration tests: one binary, each test with its own emulator, proxy and files.

mod harness;
mod helpers;
mod lenient;
mod pki;

/// Issue 13: the access log (`[log] access = true`).
mod access_log;
/// Issue 10: the admin API's principals, API keys, roles, 401/403.
mod admin_auth;
/// Issue 10: the raw events route with long-polling, and `audit tail`.
mod admin_events;
/// Issue 10: the log routes' shared setup, their 401/403, and the record of every read.
mod admin_log;
/// `GET /metrics`: counters as traffic flows, access, the exposition format.
mod admin_metrics;
/// Issue 10: `/api/openapi.json`, 405 with `Allow`, the strict filters schemathesis asked for.
mod admin_openapi;
/// Issue 10: one operation, whole, and verify.
mod admin_operation;
mod admin_operations;
/// Issue 10: the admin listener over TLS; client-certificate principals.
mod admin_tls;
/// Issue 12: the change-approval gate on both backends: requests, votes, retries, expiry.
mod approvals;
/// `syncgate audit list|show|verify` over a log written with the library store.
mod audit_log;
/// Issue 7: classification attacks against a deliberately lenient upstream.
mod bypass;
/// Issue 11: `audit verify` against checkpoints kept elsewhere.
mod checkpoints;
/// The `syncgate` binary's commands.
mod cli;
/// Issue 14: egress mode's CONNECT: proxy authentication, refusals, checked tunnels.
mod egress;
/// The Graph emulator, spoken to directly.
mod emulator;
/// The Graph emulator's `$batch`.
mod emulator_batch;
/// The Graph emulator's `/_emulator/*` test-support endpoints and injected faults.
mod emulator_control;
/// Issue 11: the writer's checkpoints, proofs and evidence packs, by API and CLI.
mod evidence;
/// Issue 10: `GET /api/v1/export` and `syncgate audit export`.
mod export;
/// Issue 8: a new user's first hour (demo narration, logs, shutdown, shipped configuration).
mod first_hour;
/// Governed changes: classification, recording, refusals, $batch.
mod governed;
/// Hostile clients: timeouts, connection caps, the body memory budget.
mod hostile;
// Every exit of the governed lifecycle leaves one terminal event.
mod lifecycle;
/// The PostgreSQL backend: schema and `syncgate migrate` against the real server.
mod postgres;
/// The pass-through proxy.
mod proxy;
/// Parsed requests (governed writes, `$batch`) reach the upstream rebuilt, never as sent.
mod rebuilt;
/// What refusals cost the audit log and leave in it; private log files; clean shutdown.
mod refusal_records;
/// Issue 9: several `syncgate serve` replicas on one PostgreSQL log, end to end.
mod replicas;
/// Local rules: built-ins, modes, Rego, reload.
mod rules;
/// `syncgate rules test` suites and `syncgate rules backtest` over recorded logs.
mod rules_tools;
