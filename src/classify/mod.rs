//! The classifier: for every request, decide whether syncgate governs it, and how.
//!
//! This is the first step of the lifecycle (DESIGN.md): `classify → read → decide → record →
//! forward → complete`. It is pure (no I/O, no clock) so that every decision can be pinned by a
//! unit test, and it is the one place that must not be bypassable: a request that can change a
//! partner's cross-tenant user synchronization policy and is classified [`Classification::Forward`]
//! goes upstream unaudited and unchecked.
//!
//! How it decides (graph-reference.md §7, §8; DESIGN.md "Canonical paths", "Forward only what
//! was checked"):
//!
//! 1. Two views of the path are computed (`canonical.rs`). The *loose* view decodes as much as
//!    any web stack might (percent-decoding until stable, `%u` escapes, invalid UTF-8 read as
//!    `/` or as Latin-1, NFKC, whitespace/control/invisible characters deleted, `\` as `/`, dot
//!    segments resolved or dropped, Unicode case folding, `microsoft.graph.` prefixes,
//!    parentheses, `;` parameters, `?`/`#` and trailing dots cut) and only answers "could this
//!    reach `/policies`, a governed subtree or `$batch`?". The *strict* view decodes each
//!    segment exactly once and reports every trick (double encoding, encoded `/`, `.`/`..`,
//!    empty segments).
//! 2. **The URL reader** (`canonical/url.rs`, one reader for request targets and `$batch`
//!    sub-request URLs). The rule chosen:
//!    - a request target whose loose view could reach `/policies` or `$batch` must be clean,
//!      or is refused (`SyncgateNonCanonicalUrl`, whatever the method): no whitespace, control,
//!      non-ASCII or backslash in the path, as sent or percent-encoded (`%20`, `%09`, `%0A`,
//!      `%0D`, `%A0`, `%C2%A0`, any byte ≥ 0x80), no encoded `?` or `#`, no malformed `%`;
//!      in the query no raw or encoded control, invisible or non-space whitespace character
//!      and escapes that decode to UTF-8;
//!    - a target the loose view rules out is not read strictly: ordinary Graph traffic with
//!      odd but valid encodings (`/v1.0/users/caf%C3%A9@x.com`, OneDrive paths with `%20`)
//!      keeps flowing untouched;
//!    - every `$batch` sub-request URL must be clean by the same rules, whatever it addresses
//!      (syncgate re-sends the batch from what it read, so it must read all of it), and may be
//!      absolute only as `https://` or `http://` followed by a Graph host or a local one; any
//!      other `scheme:` prefix (`x:/…`, `https:v1.0/…`, `https:/…`), `//host` and fragments are
//!      refused. A raw space in a batch URL's *query* is allowed (Graph's own batching
//!      documentation writes `$filter=city eq null`) and re-encoded as `%20`.
//! 3. A trick on a path the loose view says could be governed is refused, whatever the method.
//!    Anything the loose view rules out is forwarded untouched.
//! 4. On any path that could reach `/policies` or `$batch`: method-override headers (or query
//!    parameters) are refused (syncgate classifies on the method it sees); two
//!    `Authorization`, `Content-Type` or `Content-Encoding` headers are refused
//!    (`SyncgateDuplicateHeader`: which one would the upstream use?); a `Content-Encoding`
//!    other than `identity` is refused with 415 (`SyncgateUnsupportedContentEncoding`:
//!    syncgate checks the bytes it receives, an upstream that decompressed them would act on
//!    others). URL-override headers (`X-Original-URL`, `X-Rewrite-URL`) to or from such paths
//!    are refused too.
//! 5. `$batch` is recognised whatever the method's spelling: exactly `POST` is a
//!    [`Classification::Batch`]; any other method (`post`, `Post`, `GET`, extension methods)
//!    is refused, never forwarded unparsed.
//! 6. Governed-subtree paths are canonicalised (lower case, GUID keys, `partners('k')` →
//!    `partners/k`) and matched against the route table (`routes.rs`, the single source).
//!    Reads are forwarded; writes the table governs become [`Classification::Governed`]; every
//!    other write is refused (default deny: only `crossTenantAccessPolicy/default` writes are
//!    forwarded). Top-level methods are otherwise taken as sent: GET and HEAD are reads,
//!    anything else is a write.
//!
//! Bodies are checked by `body.rs` (strict JSON against the Graph schema), `$batch` envelopes by
//! `batch.rs` (which also requires exact upper-case sub-request methods and refuses nested
//! batches seen through the loose view). `docs/governed-routes.md` lists what is governed,
//! forwarded and refused, and why. The emulator has its own, independent URL and body parsers
//! on purpose: the proxy and the emulator must not share one, so a bug in either is caught by
//! the other.

mod batch;
mod body;
mod canonical;
mod routes;

#[cfg(test)]
mod alias_tests;

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, Method, StatusCode};

use crate::graph_error::GraphError;

pub use batch::{BATCH_METHODS, Batch, BatchRequest, MAX_BATCH_REQUESTS, parse_batch};
pub use body::{check_body, check_body_tenant, parse_body, partner_from_body};
pub(crate) use body::{check_content_type, json_type};

/// The `error.code` values of syncgate's own refusals (Graph's codes are used where Graph would
/// refuse the same thing: `Request_BadRequest` for unknown properties, `BadRequest` for bad JSON).
pub mod codes {
    /// A write under a governed subtree that the route table does not know.
    pub const UNKNOWN_GOVERNED_PATH: &str = "SyncgateUnknownGovernedPath";
    /// A write to `/policies/crossTenantIdentitySyncPolicy` (graph-reference §2.6).
    pub const LEGACY_PATH_REFUSED: &str = "SyncgateLegacyPathRefused";
    /// `X-HTTP-Method-Override` and friends on a `/policies` path or `$batch`.
    pub const METHOD_OVERRIDE_REFUSED: &str = "SyncgateMethodOverrideRefused";
    /// `X-Original-URL` / `X-Rewrite-URL` naming, or sent to, a `/policies` path or `$batch`.
    pub const URL_OVERRIDE_REFUSED: &str = "SyncgateUrlOverrideRefused";
    /// A path that could reach a governed subtree but is not canonical (double encoding,
    /// encoded `/`, dot or empty segments, invalid UTF-8).
    pub const NON_CANONICAL_PATH: &str = "SyncgateNonCanonicalPath";
    /// A URL or request target spelled so that readers could disagree on it: whitespace,
    /// control or non-ASCII characters (as sent or percent-encoded), backslashes, malformed
    /// escapes, fragments, or an absolute form other than `https://` + a Graph host
    /// (`canonical/url.rs`).
    pub const NON_CANONICAL_URL: &str = "SyncgateNonCanonicalUrl";
    /// Two `Authorization`, `Content-Type` or `Content-Encoding` headers on a request that
    /// could reach `/policies` or `$batch` (which one would the upstream use?).
    pub const DUPLICATE_HEADER: &str = "SyncgateDuplicateHeader";
    /// A `Content-Encoding` other than `identity` on a request that could reach `/policies` or
    /// `$batch`: syncgate reads the bytes it checks; an upstream that decompresses would not.
    pub const UNSUPPORTED_CONTENT_ENCODING: &str = "SyncgateUnsupportedContentEncoding";
    /// A partner key on a governed subtree that is not a GUID.
    pub const INVALID_KEY: &str = "SyncgateInvalidKey";
    /// A `$batch` envelope syncgate cannot read exactly as Graph would, or refuses by rule.
    pub const BAD_BATCH: &str = "SyncgateBadBatch";
    /// A body on a governed request that takes none (DELETE, restore, reset).
    pub const UNEXPECTED_BODY: &str = "SyncgateUnexpectedBody";
    /// Graph's code for an unknown or mis-cased property (graph-reference §5.2).
    pub const INVALID_PROPERTY: &str = "Request_BadRequest";
    /// Graph's code for an unreadable body (bad JSON, missing Content-Type).
    pub const BAD_REQUEST: &str = "BadRequest";
}

/// The Graph API version a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// `/v1.0`
    V1_0,
    /// `/beta` (the only version with `deletedItems`, §1)
    Beta,
}

impl ApiVersion {
    /// The version segment as Graph documents it: `v1.0` or `beta`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1_0 => "v1.0",
            ApiVersion::Beta => "beta",
        }
    }

    /// A version segment in any ASCII case (`V1.0`, `BETA`); nothing else is a version.
    pub fn parse(segment: &str) -> Option<Self> {
        if segment.eq_ignore_ascii_case("v1.0") {
            Some(ApiVersion::V1_0)
        } else if segment.eq_ignore_ascii_case("beta") {
            Some(ApiVersion::Beta)
        } else {
            None
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not a hyphenated GUID, offered as a partner tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a tenant id: a tenant id is a GUID in the 36-character hyphenated form")]
pub struct InvalidTenantId(pub String);

/// A partner tenant id: the key of partners and sync policies. Always a lower-case hyphenated
/// GUID, so two spellings of one tenant compare, lock and audit as one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// Accepts the 36-character hyphenated form in any case. Braces, the 32-digit form and
    /// domain names are refused: how Graph reads them is unknown (graph-reference §4.4), and a
    /// key syncgate reads differently from Graph is a bypass.
    pub fn parse(text: &str) -> Result<Self, InvalidTenantId> {
        let bytes = text.as_bytes();
        let well_formed = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if well_formed {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(InvalidTenantId(text.to_owned()))
        }
    }

    /// The lower-case hyphenated GUID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = InvalidTenantId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A path in canonical form: every segment lower-case, keys as their own lower-case GUID
/// segment, `microsoft.graph.` prefixes stripped. The audit log stores its [`Display`](fmt::Display) form, and
/// approvals are bound to it, so one resource has exactly one canonical path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalPath {
    /// The API version (the first segment of the request path).
    pub version: ApiVersion,
    /// The segments after the version, e.g. `["policies", "crosstenantaccesspolicy", ...]`.
    pub segments: Vec<String>,
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.version)?;
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// What kind of governed operation a request is. The [`as_str`](Self::as_str) names are stored
/// in the audit log (`operation`), so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// `PUT …/partners/{k}/identitySynchronization` (Graph's "create", §2.2 S2).
    SyncCreate,
    /// `PATCH …/partners/{k}/identitySynchronization` (§2.2 S3).
    SyncUpdate,
    /// `DELETE …/partners/{k}/identitySynchronization` (§2.2 S4; a soft delete in beta).
    SyncDelete,
    /// `POST …/partners` (§2.3 P2); the partner is in the body.
    PartnerCreate,
    /// `PATCH …/partners/{k}` (§2.3 P4).
    PartnerUpdate,
    /// `DELETE …/partners/{k}` (§2.3 P5).
    PartnerDelete,
    /// beta `POST …/deletedItems/crossTenantPartners/{k}/restore` (§2.4 D5).
    PartnerRestore,
    /// beta `POST …/deletedItems/crossTenantSyncPolicyPartners/{k}/restore` (D6) and
    /// `POST …/deletedItems/crossTenantPartners/{k}/identitySynchronization/restore` (D9).
    SyncRestore,
    /// beta `DELETE …/deletedItems/crossTenantPartners/{k}` (D7, permanent).
    DeletedPartnerPurge,
    /// beta `DELETE …/deletedItems/crossTenantSyncPolicyPartners/{k}` (D8, permanent).
    DeletedSyncPurge,
    /// beta `PUT|PATCH|DELETE …/deletedItems/crossTenantPartners/{k}/identitySynchronization`
    /// (D9: SDK-generated, undocumented).
    DeletedPartnerSyncWrite,
    /// `PATCH …/templates/multiTenantOrganizationIdentitySynchronization` (§2.5).
    TemplateUpdate,
    /// `POST …/multiTenantOrganizationIdentitySynchronization/resetToDefaultSettings` (§2.5).
    TemplateReset,
    /// Any write under `/policies/crossTenantIdentitySyncPolicy` (§2.6): always refused.
    LegacySyncPolicyWrite,
    /// A read that returns sync policy content (forwarded; recorded when reads are audited).
    SyncRead,
}

impl OperationKind {
    /// Every kind, for exhaustive tests and for parsing stored names.
    pub const ALL: [OperationKind; 15] = [
        OperationKind::SyncCreate,
        OperationKind::SyncUpdate,
        OperationKind::SyncDelete,
        OperationKind::PartnerCreate,
        OperationKind::PartnerUpdate,
        OperationKind::PartnerDelete,
        OperationKind::PartnerRestore,
        OperationKind::SyncRestore,
        OperationKind::DeletedPartnerPurge,
        OperationKind::DeletedSyncPurge,
        OperationKind::DeletedPartnerSyncWrite,
        OperationKind::TemplateUpdate,
        OperationKind::TemplateReset,
        OperationKind::LegacySyncPolicyWrite,
        OperationKind::SyncRead,
    ];

    /// The stable snake_case name stored in the audit log's `operation` column.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::SyncCreate => "sync_create",
            OperationKind::SyncUpdate => "sync_update",
            OperationKind::SyncDelete => "sync_delete",
            OperationKind::PartnerCreate => "partner_create",
            OperationKind::PartnerUpdate => "partner_update",
            OperationKind::PartnerDelete => "partner_delete",
            OperationKind::PartnerRestore => "partner_restore",
            OperationKind::SyncRestore => "sync_restore",
            OperationKind::DeletedPartnerPurge => "deleted_partner_purge",
            OperationKind::DeletedSyncPurge => "deleted_sync_purge",
            OperationKind::DeletedPartnerSyncWrite => "deleted_partner_sync_write",
            OperationKind::TemplateUpdate => "template_update",
            OperationKind::TemplateReset => "template_reset",
            OperationKind::LegacySyncPolicyWrite => "legacy_sync_policy_write",
            OperationKind::SyncRead => "sync_read",
        }
    }

    /// The kind stored under `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the kind is about the MTO template rather than one partner.
    pub fn is_template(self) -> bool {
        matches!(
            self,
            OperationKind::TemplateUpdate | OperationKind::TemplateReset
        )
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What body a governed request may carry, checked by [`parse_body`] / [`check_body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyRule {
    /// No body, or JSON whitespace only (DELETE, restore, reset).
    Empty,
    /// A `crossTenantIdentitySyncPolicyPartner` object (§4.1, beta §4.2).
    Sync,
    /// A `crossTenantAccessPolicyConfigurationPartner` object (§4.3).
    Partner,
    /// A `multiTenantOrganizationIdentitySyncPolicyTemplate` object (§2.5).
    Template,
}

/// A request syncgate governs (or, for [`OperationKind::SyncRead`], records): everything the
/// pipeline needs to lock, read the before-state, decide, record and forward it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governed {
    /// What kind of change (or read) this is.
    pub kind: OperationKind,
    /// The effective method: the request's own (method overrides are refused, never honoured).
    pub method: Method,
    /// The request's canonical path.
    pub path: CanonicalPath,
    /// The partner the operation is about. `None` for the template, and for
    /// [`OperationKind::PartnerCreate`] until the body is read ([`partner_from_body`]).
    pub partner: Option<TenantId>,
    /// What body the request may carry.
    pub body: BodyRule,
}

/// Graph's spelling of the governed resources, for the state paths the pipeline GETs upstream.
const PARTNERS: &str = "policies/crossTenantAccessPolicy/partners";
const DELETED_PARTNERS: &str = "policies/deletedItems/crossTenantPartners";
const DELETED_SYNC_POLICIES: &str = "policies/deletedItems/crossTenantSyncPolicyPartners";
const TEMPLATE: &str =
    "policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization";

impl Governed {
    /// The path and query to GET upstream for the before/after state of this operation, in
    /// Graph's own spelling and with the request's API version:
    ///
    /// - sync writes → `/{v}/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization`;
    /// - partner writes → `/{v}/policies/crossTenantAccessPolicy/partners/{k}?$expand=identitySynchronization`
    ///   (the partner's sync policy is part of what a partner change can affect);
    /// - [`PartnerRestore`](OperationKind::PartnerRestore) → the live partner, expanded (what
    ///   the restore brings back); [`SyncRestore`](OperationKind::SyncRestore) → the live sync policy;
    /// - purges → the deleted item; [`DeletedPartnerSyncWrite`](OperationKind::DeletedPartnerSyncWrite)
    ///   → the deleted partner's `identitySynchronization`;
    /// - template operations → the template.
    ///
    /// `None` when the partner is not known yet (`PartnerCreate` before its body is read), for
    /// [`LegacySyncPolicyWrite`](OperationKind::LegacySyncPolicyWrite) (always refused, never
    /// read) and for [`SyncRead`](OperationKind::SyncRead) (nothing changes).
    pub fn state_path(&self) -> Option<String> {
        let v = self.path.version;
        let partner = self.partner.as_ref();
        let path = match self.kind {
            OperationKind::SyncCreate | OperationKind::SyncUpdate | OperationKind::SyncDelete => {
                format!("/{v}/{PARTNERS}/{}/identitySynchronization", partner?)
            }
            OperationKind::PartnerCreate
            | OperationKind::PartnerUpdate
            | OperationKind::PartnerDelete
            | OperationKind::PartnerRestore => {
                format!(
                    "/{v}/{PARTNERS}/{}?$expand=identitySynchronization",
                    partner?
                )
            }
            OperationKind::SyncRestore => {
                format!("/{v}/{PARTNERS}/{}/identitySynchronization", partner?)
            }
            OperationKind::DeletedPartnerPurge => format!("/{v}/{DELETED_PARTNERS}/{}", partner?),
            OperationKind::DeletedSyncPurge => {
                format!("/{v}/{DELETED_SYNC_POLICIES}/{}", partner?)
            }
            OperationKind::DeletedPartnerSyncWrite => {
                format!(
                    "/{v}/{DELETED_PARTNERS}/{}/identitySynchronization",
                    partner?
                )
            }
            OperationKind::TemplateUpdate | OperationKind::TemplateReset => {
                format!("/{v}/{TEMPLATE}")
            }
            OperationKind::LegacySyncPolicyWrite | OperationKind::SyncRead => return None,
        };
        Some(path)
    }

    /// The partner's own document (`/{v}/policies/crossTenantAccessPolicy/partners/{k}`), read
    /// for the rules that need its consent settings; `None` without a partner.
    pub fn partner_path(&self) -> Option<String> {
        let partner = self.partner.as_ref()?;
        Some(format!("/{}/{PARTNERS}/{partner}", self.path.version))
    }

    /// The canonical path with Graph's documented casing (`crossTenantAccessPolicy`, ...), which
    /// is what every SDK sends and what the governed write goes upstream on; keys stay lower-case
    /// GUIDs.
    pub fn documented_path(&self) -> String {
        const DOCUMENTED: &[&str] = &[
            "policies",
            "crossTenantAccessPolicy",
            "partners",
            "identitySynchronization",
            "deletedItems",
            "crossTenantPartners",
            "crossTenantSyncPolicyPartners",
            "restore",
            "templates",
            "multiTenantOrganizationIdentitySynchronization",
            "resetToDefaultSettings",
            "crossTenantIdentitySyncPolicy",
            "default",
        ];
        let mut out = format!("/{}", self.path.version.as_str());
        for segment in &self.path.segments {
            out.push('/');
            let documented = DOCUMENTED
                .iter()
                .find(|d| d.eq_ignore_ascii_case(segment))
                .copied()
                .unwrap_or(segment.as_str());
            out.push_str(documented);
        }
        out
    }

    /// The key of the per-partner lock: the partner id, or `"template"` for the MTO template
    /// (one template per tenant, so template changes serialise among themselves). `None` while
    /// the partner is unknown (`PartnerCreate` before its body is read).
    pub fn lock_key(&self) -> Option<String> {
        lock_key(self.kind, self.partner.as_ref().map(TenantId::as_str))
    }

    /// This operation with its partner set: for `PartnerCreate`, once [`partner_from_body`]
    /// has read the key from the body.
    pub fn with_partner(mut self, partner: TenantId) -> Self {
        self.partner = Some(partner);
        self
    }
}

/// The key that serialises changes to one resource: the partner tenant, or `template` for the
/// MTO template. The pipeline and start-up recovery both lock by it.
pub fn lock_key(kind: OperationKind, partner: Option<&str>) -> Option<String> {
    if kind.is_template() {
        return Some("template".to_owned());
    }
    partner.map(str::to_owned)
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// Not governed: stream it through untouched.
    Forward,
    /// A read returning sync policy content (`…/identitySynchronization`,
    /// `partners?$expand=identitySynchronization`, deleted sync policies): forwarded, and
    /// recorded when read auditing is on.
    SyncRead(Governed),
    /// A write that goes through the governing pipeline.
    Governed(Governed),
    /// `POST /{v}/$batch`: the body must be parsed ([`parse_batch`]) before deciding.
    Batch(ApiVersion),
    /// Refused without forwarding.
    Refuse(Refusal),
}

/// A refusal made by the classifier or a body/batch check: a Graph-shaped 4xx, plus what the
/// request was about for the `denied` audit event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct Refusal {
    /// The HTTP status to answer (400, or 403 for the legacy path).
    pub status: StatusCode,
    /// The Graph `error.code` (see [`codes`]).
    pub code: &'static str,
    /// The Graph `error.message`: precise enough for the caller to fix the request.
    pub message: String,
    /// The governed operation the request would have been, when syncgate could tell.
    /// Boxed: refusals are the cold path, and `Result<_, Refusal>` stays small.
    pub governed: Option<Box<Governed>>,
    /// The request's canonical path, when it could be canonicalised.
    pub canonical: Option<String>,
}

impl Refusal {
    /// A refusal about nothing in particular (the path could not be understood).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            governed: None,
            canonical: None,
        }
    }

    /// A 400 Bad Request refusal.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The same refusal, about `governed` (its canonical path is recorded too).
    pub fn about(mut self, governed: Governed) -> Self {
        self.canonical = Some(governed.path.to_string());
        self.governed = Some(Box::new(governed));
        self
    }

    /// The Graph error response for this refusal.
    pub fn into_graph_error(self) -> GraphError {
        GraphError::new(self.status, self.code, self.message)
    }
}

/// Header names that ask a server (IIS URL Rewrite, some frameworks) to route the request to
/// another URL than its request line names.
const URL_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Header names (and, defensively, query parameter names) that ask a server to act as if the
/// request had another method. ASP.NET stacks have honoured them from headers, form fields and
/// query strings, so syncgate refuses them anywhere near a governed resource.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Classify one request.
///
/// `raw_path` is the request target's path exactly as received (still percent-encoded, e.g.
/// `req.uri().path()`); `query` is the raw query string without `?`; `headers` the request's
/// headers (method-override, URL-override, `Authorization`, `Content-Type` and
/// `Content-Encoding` are read).
pub fn classify(
    method: &Method,
    raw_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Classification {
    if !raw_path.starts_with('/') {
        // `*` (OPTIONS) and other non-path targets address no resource.
        return Classification::Forward;
    }
    let strict = canonical::split(raw_path);
    let reach = canonical::reach(raw_path, strict.is_err());
    if let Some(refusal) = url_override(headers, reach) {
        return Classification::Refuse(refusal);
    }
    if !(reach.policies || reach.batch) {
        return classify_path(method, strict, reach, query);
    }
    // From here the path could reach /policies or $batch: the strict URL reader applies, and
    // headers an upstream could read differently from syncgate are refused.
    if let Err(problem) =
        canonical::check_path(raw_path).and_then(|()| query.map_or(Ok(()), canonical::check_query))
    {
        return Classification::Refuse(non_canonical_url(&problem));
    }
    let problem = header_problem(headers).or_else(|| {
        method_override(headers, query).map(|name| {
            Refusal::bad_request(
                codes::METHOD_OVERRIDE_REFUSED,
                format!(
                    "Method override ('{name}') is refused on /policies and $batch paths: send \
                     the request with its real HTTP method."
                ),
            )
        })
    });
    let Some(refusal) = problem else {
        return classify_path(method, strict, reach, query);
    };
    // Say what the request would have been, for the `denied` event.
    let about = match classify_path(method, strict, reach, query) {
        Classification::Governed(g) | Classification::SyncRead(g) => Some(g),
        Classification::Refuse(r) => r.governed.map(|g| *g),
        _ => None,
    };
    Classification::Refuse(match about {
        Some(g) => refusal.about(g),
        None => refusal,
    })
}

/// The refusal for a URL the strict reader refuses.
pub(crate) fn non_canonical_url(problem: &canonical::UrlProblem) -> Refusal {
    Refusal::bad_request(
        codes::NON_CANONICAL_URL,
        format!(
            "The URL is not canonical: {problem}. syncgate refuses URLs that another reader \
             could take for a different path when they could reach /policies or $batch, and \
             every such URL inside a $batch; percent-encode the character or send the \
             relative path."
        ),
    )
}

/// Headers whose duplicates syncgate refuses near /policies and $batch: which copy an upstream
/// uses (first, last, joined) is not something syncgate can know, and each decides something
/// (the actor and token, how the body is read).
pub(crate) const SINGLE_HEADERS: [http::header::HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
];

/// A refusal for duplicated [`SINGLE_HEADERS`] or a `Content-Encoding` other than `identity`.
fn header_problem(headers: &HeaderMap) -> Option<Refusal> {
    if let Some(name) = SINGLE_HEADERS
        .iter()
        .find(|name| headers.get_all(*name).iter().count() > 1)
    {
        return Some(Refusal::bad_request(
            codes::DUPLICATE_HEADER,
            format!(
                "The request has more than one '{name}' header; syncgate refuses duplicated \
                 Authorization, Content-Type and Content-Encoding headers on /policies and \
                 $batch paths."
            ),
        ));
    }
    let encoding = headers.get(http::header::CONTENT_ENCODING)?;
    (!is_identity(encoding.as_bytes())).then(|| unsupported_encoding(""))
}

/// Whether a `Content-Encoding` value is `identity` (any case, surrounding blanks allowed).
pub(crate) fn is_identity(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"identity")
}

/// The 415 refusal for a `Content-Encoding` other than `identity`; `at` names a batch
/// sub-request, or is empty.
pub(crate) fn unsupported_encoding(at: &str) -> Refusal {
    let at = if at.is_empty() {
        String::new()
    } else {
        format!(" ({at})")
    };
    Refusal::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        codes::UNSUPPORTED_CONTENT_ENCODING,
        format!(
            "A Content-Encoding other than 'identity'{at} is refused on /policies and $batch \
             paths: syncgate checks the bytes it receives and an upstream that decoded them \
             would act on different ones. Send the body uncompressed."
        ),
    )
}

/// The classification of a request whose method is its own.
fn classify_path(
    method: &Method,
    strict: Result<Vec<String>, canonical::Trick>,
    reach: canonical::Reach,
    query: Option<&str>,
) -> Classification {
    let segments = match strict {
        Ok(segments) => segments,
        Err(trick) if reach.governed || reach.batch => {
            return Classification::Refuse(Refusal::bad_request(
                codes::NON_CANONICAL_PATH,
                format!(
                    "The path is not canonical ({trick}). syncgate refuses non-canonical paths \
                     that could reach cross-tenant sync policies or $batch; send the canonical \
                     form."
                ),
            ));
        }
        Err(_) => return Classification::Forward,
    };
    if reach.batch {
        return classify_batch_path(method, &segments);
    }
    if !reach.governed {
        return Classification::Forward;
    }
    let path = match canonical::canonicalize(&segments, query) {
        Ok(path) => path,
        Err(canonical::CanonError::BadKey(message)) => {
            return Classification::Refuse(Refusal::bad_request(codes::INVALID_KEY, message));
        }
        Err(canonical::CanonError::NotCanonical(reason)) => {
            return if is_read(method) {
                Classification::Forward
            } else {
                Classification::Refuse(Refusal::bad_request(
                    codes::UNKNOWN_GOVERNED_PATH,
                    format!(
                        "Unknown governed path: {reason}. syncgate refuses writes it cannot match \
                         to a known cross-tenant sync route."
                    ),
                ))
            };
        }
    };
    routes::route(method, path, query)
}

/// `POST /{v}/$batch` (the method exactly `POST`; the path in any case or encoding) is a batch.
/// Every other method on it is refused, lower-case `post` and extension methods included: an
/// upstream that reads methods case-insensitively would run it as a batch syncgate never parsed.
/// A path that only *resembles* `$batch` (parameters, spaces, parentheses) is refused for every
/// method: syncgate cannot know whether an upstream would run it as a batch.
fn classify_batch_path(method: &Method, segments: &[String]) -> Classification {
    let exact = match segments {
        [version, batch] if batch.eq_ignore_ascii_case("$batch") => ApiVersion::parse(version),
        _ => None,
    };
    match exact {
        Some(version) if method == Method::POST => Classification::Batch(version),
        Some(_) => Classification::Refuse(Refusal::bad_request(
            codes::BAD_BATCH,
            format!(
                "$batch takes the method POST, spelled exactly so; syncgate refuses '{}' on \
                 $batch rather than forward a batch it has not read.",
                method.as_str().escape_debug()
            ),
        )),
        None => Classification::Refuse(Refusal::bad_request(
            codes::NON_CANONICAL_PATH,
            "The path resembles $batch but is not '/v1.0/$batch' or '/beta/$batch'; syncgate \
             refuses batches it cannot read exactly as Graph would.",
        )),
    }
}

/// GET and HEAD are reads; every other method (including unknown ones and lower-case spellings,
/// which some servers accept as their upper-case equivalents) is a write.
pub(crate) fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// A refusal for a URL-override header that is sent to, or names, a `/policies` path or `$batch`
/// (read loosely, whatever its encoding): the classification must be about the URL Graph acts on.
fn url_override(headers: &HeaderMap, reach: canonical::Reach) -> Option<Refusal> {
    URL_OVERRIDES.iter().find_map(|name| {
        let value = headers.get(*name)?;
        let target = String::from_utf8_lossy(value.as_bytes());
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let named = canonical::reach(&format!("/{}", path.trim_start_matches('/')), true);
        let relevant = reach.policies || reach.batch || named.policies || named.batch;
        relevant.then(|| {
            Refusal::bad_request(
                codes::URL_OVERRIDE_REFUSED,
                format!(
                    "The '{name}' header is refused on and towards /policies and $batch paths:                      send the request to its real URL."
                ),
            )
        })
    })
}

/// The name of the first method-override header or query parameter present, if any.
fn method_override(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    for name in METHOD_OVERRIDES {
        if headers.contains_key(name) {
            return Some(name.to_owned());
        }
    }
    canonical::query_pairs(query.unwrap_or_default())
        .map(|(name, _)| name)
        .find(|name| {
            let folded = name.trim().to_ascii_lowercase();
            METHOD_OVERRIDES.contains(&folded.as_str()) || folded == "_method"
        })
}

#[cfg(test)]
mod tests;
