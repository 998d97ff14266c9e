//! The classifier: for every request, decide whether syncgate governs it, and how.
//!
//! This is the first step of the lifecycle (docs/design.md): `classify → read → decide → record →
//! forward → complete`. It is pure (no I/O, no clock) so that every decision can be pinned by a
//! unit test, and it is the one place that must not be bypassable: a request that can change a
//! partner's cross-tenant user synchronization policy and is classified [`Classification::Forward`]
//! goes upstream unaudited and unchecked.
//!
//! How it decides (docs/graph.md §7, §8; docs/design.md "Canonical paths", "Forward only what
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
//!    `partners/k`) and matched against the route table (`crate::graph::routes`, the single source).
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

use http::{HeaderMap, Method, StatusCode};

use crate::graph::{METHOD_OVERRIDE_HEADERS, URL_OVERRIDE_HEADERS};
// Graph's vocabulary, re-exported where code not yet switched to `crate::graph` finds it.
pub(crate) use crate::graph::routes::is_read;
pub use crate::graph::{
    ApiVersion, BodyRule, CanonicalPath, InvalidTenantId, OperationKind, TenantId,
};

pub(crate) use batch::{Batch, BatchRequest, MAX_BATCH_REQUESTS, parse_batch};
pub(crate) use body::{check_body, check_body_tenant, parse_body, partner_from_body};
pub(crate) use body::{check_content_type, json_type};

/// The `error.code` values of syncgate's own refusals (Graph's codes are used where Graph would
/// refuse the same thing: `Request_BadRequest` for unknown properties, `BadRequest` for bad JSON).
pub(crate) mod codes {
    /// A write under a governed subtree that the route table does not know.
    pub(crate) const UNKNOWN_GOVERNED_PATH: &str = "SyncgateUnknownGovernedPath";
    /// A write to `/policies/crossTenantIdentitySyncPolicy` (docs/graph.md §2.6).
    pub(crate) const LEGACY_PATH_REFUSED: &str = "SyncgateLegacyPathRefused";
    /// `X-HTTP-Method-Override` and friends on a `/policies` path or `$batch`.
    pub(crate) const METHOD_OVERRIDE_REFUSED: &str = "SyncgateMethodOverrideRefused";
    /// `X-Original-URL` / `X-Rewrite-URL` naming, or sent to, a `/policies` path or `$batch`.
    pub(crate) const URL_OVERRIDE_REFUSED: &str = "SyncgateUrlOverrideRefused";
    /// A path that could reach a governed subtree but is not canonical (double encoding,
    /// encoded `/`, dot or empty segments, invalid UTF-8).
    pub(crate) const NON_CANONICAL_PATH: &str = "SyncgateNonCanonicalPath";
    /// A URL or request target spelled so that readers could disagree on it: whitespace,
    /// control or non-ASCII characters (as sent or percent-encoded), backslashes, malformed
    /// escapes, fragments, or an absolute form other than `https://` + a Graph host
    /// (`canonical/url.rs`).
    pub(crate) const NON_CANONICAL_URL: &str = "SyncgateNonCanonicalUrl";
    /// Two `Authorization`, `Content-Type` or `Content-Encoding` headers on a request that
    /// could reach `/policies` or `$batch` (which one would the upstream use?).
    pub(crate) const DUPLICATE_HEADER: &str = "SyncgateDuplicateHeader";
    /// A `Content-Encoding` other than `identity` on a request that could reach `/policies` or
    /// `$batch`: syncgate reads the bytes it checks; an upstream that decompresses would not.
    pub(crate) const UNSUPPORTED_CONTENT_ENCODING: &str = "SyncgateUnsupportedContentEncoding";
    /// A partner key on a governed subtree that is not a GUID.
    pub(crate) const INVALID_KEY: &str = "SyncgateInvalidKey";
    /// A `$batch` envelope syncgate cannot read exactly as Graph would, or refuses by rule.
    pub(crate) const BAD_BATCH: &str = "SyncgateBadBatch";
    /// A body on a governed request that takes none (DELETE, restore, reset).
    pub(crate) const UNEXPECTED_BODY: &str = "SyncgateUnexpectedBody";
    /// Graph's code for an unknown or mis-cased property (docs/graph.md §5.2).
    pub(crate) const INVALID_PROPERTY: &str = "Request_BadRequest";
    /// Graph's code for an unreadable body (bad JSON, missing Content-Type).
    pub(crate) const BAD_REQUEST: &str = "BadRequest";
}

/// A request syncgate governs (or, for [`OperationKind::SyncRead`], records): everything the
/// pipeline needs to lock, read the before-state, decide, record and forward it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Governed {
    /// What kind of change (or read) this is.
    pub(crate) kind: OperationKind,
    /// The effective method: the request's own (method overrides are refused, never honoured).
    pub(crate) method: Method,
    /// The request's canonical path.
    pub(crate) path: CanonicalPath,
    /// The partner the operation is about. `None` for the template, and for
    /// [`OperationKind::PartnerCreate`] until the body is read ([`partner_from_body`]).
    pub(crate) partner: Option<TenantId>,
    /// What body the request may carry.
    pub(crate) body: BodyRule,
}

impl Governed {
    /// The path and query to GET upstream for the before/after state of this operation, in
    /// Graph's own spelling and with the request's API version (see
    /// [`crate::graph::state_path`]). `None` when the partner is not known yet, for the legacy
    /// policy and for reads.
    pub(crate) fn state_path(&self) -> Option<String> {
        crate::graph::state_path(self.kind, self.path.version, self.partner.as_ref())
    }

    /// The key of the per-partner lock: the partner id, or `"template"` for the MTO template
    /// (one template per tenant, so template changes serialise among themselves). `None` while
    /// the partner is unknown (`PartnerCreate` before its body is read).
    pub(crate) fn lock_key(&self) -> Option<String> {
        lock_key(self.kind, self.partner.as_ref().map(TenantId::as_str))
    }

    /// This operation with its partner set: for `PartnerCreate`, once [`partner_from_body`]
    /// has read the key from the body.
    #[cfg(test)]
    pub(crate) fn with_partner(mut self, partner: TenantId) -> Self {
        self.partner = Some(partner);
        self
    }
}

/// The key that serialises changes to one resource: the partner tenant, or `template` for the
/// MTO template. The pipeline and start-up recovery both lock by it.
pub(crate) fn lock_key(kind: OperationKind, partner: Option<&str>) -> Option<String> {
    if kind.is_template() {
        return Some("template".to_owned());
    }
    partner.map(str::to_owned)
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Classification {
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
pub(crate) struct Refusal {
    /// The HTTP status to answer (400, or 403 for the legacy path).
    pub(crate) status: StatusCode,
    /// The Graph `error.code` (see [`codes`]).
    pub(crate) code: &'static str,
    /// The Graph `error.message`: precise enough for the caller to fix the request.
    pub(crate) message: String,
    /// The governed operation the request would have been, when syncgate could tell.
    /// Boxed: refusals are the cold path, and `Result<_, Refusal>` stays small.
    pub(crate) governed: Option<Box<Governed>>,
    /// The request's canonical path, when it could be canonicalised.
    pub(crate) canonical: Option<String>,
}

impl Refusal {
    /// A refusal about nothing in particular (the path could not be understood).
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            governed: None,
            canonical: None,
        }
    }

    /// A 400 Bad Request refusal.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The same refusal, about `governed` (its canonical path is recorded too).
    pub(crate) fn about(mut self, governed: Governed) -> Self {
        self.canonical = Some(governed.path.to_string());
        self.governed = Some(Box::new(governed));
        self
    }

    /// The Graph error response for this refusal.
    #[cfg(test)]
    pub(crate) fn into_graph_error(self) -> crate::graph_error::GraphError {
        crate::graph_error::GraphError::new(self.status, self.code, self.message)
    }
}

/// Classify one request.
///
/// `raw_path` is the request target's path exactly as received (still percent-encoded, e.g.
/// `req.uri().path()`); `query` is the raw query string without `?`; `headers` the request's
/// headers (method-override, URL-override, `Authorization`, `Content-Type` and
/// `Content-Encoding` are read).
pub(crate) fn classify(
    method: &Method,
    raw_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Classification {
    if !raw_path.starts_with('/') {
        // `*` (OPTIONS) and other non-path targets address no resource.
        return Classification::Forward;
    }
    if canonical::reaches_nothing(raw_path) {
        // Neither reading is needed: under both, such a path is forwarded unless a URL-override
        // header points at /policies or $batch (what the readings below would conclude).
        return url_override(headers, canonical::Reach::default())
            .map_or(Classification::Forward, Classification::Refuse);
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

/// A refusal for a URL-override header that is sent to, or names, a `/policies` path or `$batch`
/// (read loosely, whatever its encoding): the classification must be about the URL Graph acts on.
fn url_override(headers: &HeaderMap, reach: canonical::Reach) -> Option<Refusal> {
    // One pass over the names the request has: looking each listed name up would parse and hash
    // it on every request, and almost none carries one.
    if !headers
        .keys()
        .any(|name| URL_OVERRIDE_HEADERS.contains(&name.as_str()))
    {
        return None;
    }
    URL_OVERRIDE_HEADERS.iter().find_map(|name| {
        let value = headers.get(*name)?;
        let target = String::from_utf8_lossy(value.as_bytes());
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let named = canonical::reach(&format!("/{}", path.trim_start_matches('/')), true);
        let relevant = reach.policies || reach.batch || named.policies || named.batch;
        relevant.then(|| {
            Refusal::bad_request(
                codes::URL_OVERRIDE_REFUSED,
                format!(
                    "The '{name}' header is refused on and towards /policies and $batch paths: \
                     send the request to its real URL."
                ),
            )
        })
    })
}

/// The name of the first method-override header or query parameter present, if any.
fn method_override(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    for name in METHOD_OVERRIDE_HEADERS {
        if headers.contains_key(name) {
            return Some(name.to_owned());
        }
    }
    canonical::query_pairs(query.unwrap_or_default())
        .map(|(name, _)| name)
        .find(|name| {
            let folded = name.trim().to_ascii_lowercase();
            METHOD_OVERRIDE_HEADERS.contains(&folded.as_str()) || folded == "_method"
        })
}

#[cfg(test)]
mod tests;
