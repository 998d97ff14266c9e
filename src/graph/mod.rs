//! Graph's vocabulary: the names syncgate and Microsoft Graph must agree on, written once.
//!
//! Every part of syncgate speaks about the same few things: a partner tenant, an API version,
//! a canonical path, the kind of operation a request is, where that operation's state is read,
//! how Graph spells a path, which headers ask a server to act on another URL or method, and how
//! many requests a `$batch` may hold. Before issue 8 each of these was spelled where it was
//! needed (four spellings of the state paths, two copies of the batch cap and of the override
//! headers); a second spelling that drifts from the first is a request syncgate reads
//! differently from Graph. So they live here, and the classifier, the pipeline, the rule tools,
//! the audit event and the emulator's tests all take them from here.
//!
//! - [`ids`]: [`TenantId`] (a partner, always a lower-case GUID) and [`OperationId`] (the UUIDv7
//!   an operation's events share, sent to the client as `x-syncgate-audit-id`).
//! - [`path`]: [`ApiVersion`], [`CanonicalPath`], Graph's documented spelling of a path, and the
//!   paths the pipeline reads state from.
//! - [`operation`]: [`OperationKind`], the governed operations, and [`BodyRule`], what body each
//!   takes.
//! - [`routes`]: the route table, forward (path and method → operation) and reverse (operation
//!   → canonical path); `docs/governed-routes.md` explains it for operators.
//! - this module: Graph's limits and the override header names.
//!
//! What is *not* here, on purpose: reading a request target or a body (the classifier's
//! `canonical` and `body` modules), and the emulator's own URL and body parsers, which stay
//! independent of the proxy's so a bug in either is caught by the other.

mod ids;
mod operation;
mod path;
pub(crate) mod routes;

pub use ids::{InvalidTenantId, OperationId, TenantId};
pub use operation::{BodyRule, OperationKind};
pub use path::{ApiVersion, CanonicalPath};
pub(crate) use path::{documented_path, partner_path, state_path};

/// Graph's documented limit on requests per `$batch` (JSON batching; see docs/graph.md).
pub(crate) const MAX_BATCH_REQUESTS: usize = 20;

/// Header names that ask a server (IIS URL Rewrite, some frameworks) to route the request to
/// another URL than its request line names. The classifier refuses them near governed paths;
/// the forwarder never sends them upstream.
pub(crate) const URL_OVERRIDE_HEADERS: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Header names (and, defensively, query parameter names) that ask a server to act as if the
/// request had another method. ASP.NET stacks have honoured them from headers, form fields and
/// query strings, so syncgate refuses them anywhere near a governed resource.
pub(crate) const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
