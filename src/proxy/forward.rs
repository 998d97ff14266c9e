//! Forwarding: rewrite a client's request for the upstream and the upstream's response for the
//! client.
//!
//! Two kinds of request go upstream, and they are treated differently on purpose:
//!
//! - **Pass-through** (not governed, not a `$batch`): streamed both ways untouched. Only
//!   hop-by-hop headers (RFC 9110 §7.6.1), `Host`, `Expect` and URL-override headers are removed;
//!   end-to-end headers, including `Authorization` and `client-request-id`, pass exactly as sent.
//!   syncgate decided nothing about these requests, so it has nothing to keep consistent.
//! - **Rebuilt** (a governed write, a `$batch` envelope, an unbatched sub-request): syncgate
//!   parsed the request to decide on it, so it sends the *parsed* form, re-serialised, and only
//!   the headers in [`FORWARDED`] (docs/design.md "Forward only what was checked"). Every other header
//!   is dropped, because any header syncgate did not read is one a lenient upstream might read
//!   differently: `Content-Encoding` (the upstream would decode bytes syncgate never saw),
//!   a second `Content-Type` or `Content-Length`, `X-HTTP-Method-Override` and friends (another
//!   method than the one classified), `X-Original-URL` (another path), `Transfer-Encoding`
//!   tricks, `Accept-Encoding` (syncgate reads the responses to rebuilt requests, so they must
//!   come back as plain JSON). `Content-Type` and `Content-Length` are syncgate's own, for the
//!   bytes it serialised; `Authorization` is forwarded exactly once, the first one, which is the
//!   one the actor, the token hash and the before/after reads used.
//!
//! The upstream request always goes out as HTTP/1.1 in the request line: the pooled client
//! upgrades to HTTP/2 by ALPN on its own, and an HTTP/2 version on the request would fail against
//! an HTTP/1-only upstream.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::config::UpstreamTarget;
use crate::server::ConnInfo;

/// Headers meaningful only for one connection, never forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The client headers a rebuilt request carries upstream, in Graph's documented spelling (used
/// as written when syncgate serialises a `$batch` sub-request's headers). Each one is either
/// content negotiation, request correlation, or an OData/consistency option Graph documents for
/// the request itself; none of them changes which resource is addressed, which method runs, or
/// how the body's bytes are read. `Authorization` is handled apart (exactly one).
pub(crate) const FORWARDED: &[&str] = &[
    "Accept",
    "Accept-Language",
    "client-request-id",
    "return-client-request-id",
    "User-Agent",
    "SdkVersion",
    "ConsistencyLevel",
    "Prefer",
    "If-Match",
    "If-None-Match",
];

/// The headers of a rebuilt request (see the module docs): the first `Authorization`, the
/// [`FORWARDED`] headers (every line of each), `X-Forwarded-For`/`-Proto`, and, when `body` is
/// given, `Content-Type` and the `Content-Length` of exactly those bytes.
pub(crate) fn rebuilt_headers(
    client: &HeaderMap,
    conn: Option<&ConnInfo>,
    body: Option<(HeaderValue, usize)>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(auth) = client.get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    for name in FORWARDED {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in client.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    // The chain a front proxy wrote is kept (as on pass-through), then this hop is added.
    for value in client.get_all("x-forwarded-for") {
        headers.append("x-forwarded-for", value.clone());
    }
    if let Some(conn) = conn {
        append_forwarded_for(&mut headers, conn);
        headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        );
    }
    if let Some((content_type, length)) = body {
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers
}

/// A request for the upstream, in one of the three forms syncgate sends; [`Outbound::build`] is
/// the one place an upstream request is made.
pub(crate) enum Outbound<'a> {
    /// Pass-through: the client's request, streamed (see the module docs).
    Stream(Request<Incoming>),
    /// A request syncgate rebuilt from what it parsed: `path_and_query` on the upstream, the
    /// client's allowed headers (see [`rebuilt_headers`]), and the body syncgate serialised.
    Rebuilt {
        method: Method,
        path_and_query: &'a str,
        client: &'a HeaderMap,
        body: RebuiltBody,
    },
    /// A GET of a resource's state with the caller's `Authorization`, uncompressed (the JSON is
    /// compared and recorded, not relayed).
    StateRead {
        path_and_query: &'a str,
        authorization: Option<&'a HeaderValue>,
    },
}

/// The body of a rebuilt request.
pub(crate) enum RebuiltBody {
    /// None at all (no Content-Type, no Content-Length).
    None,
    /// Bytes syncgate serialised, with their Content-Type.
    Bytes(HeaderValue, Bytes),
}

impl RebuiltBody {
    /// `json` serialised compactly, as `application/json`.
    pub(crate) fn json(json: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Ok(RebuiltBody::Bytes(
            HeaderValue::from_static("application/json"),
            Bytes::from(serde_json::to_vec(json)?),
        ))
    }
}

impl Outbound<'_> {
    /// The request the upstream `target` receives, from a client on `conn` (`None` for syncgate's
    /// own reads, e.g. at start-up recovery). Always HTTP/1.1 in the request line (module docs).
    pub(crate) fn build(
        self,
        target: &UpstreamTarget,
        conn: Option<&ConnInfo>,
    ) -> Result<Request<Body>, http::Error> {
        let mut req = match self {
            Outbound::Stream(req) => {
                let (mut parts, incoming) = req.into_parts();
                let path_and_query = parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                parts.uri = upstream_uri(target, path_and_query)?;
                if let Some(conn) = conn {
                    upstream_headers(&mut parts.headers, conn);
                }
                Request::from_parts(parts, body::from_client(incoming))
            }
            Outbound::Rebuilt {
                method,
                path_and_query,
                client,
                body,
            } => {
                let (content, body) = match body {
                    RebuiltBody::Bytes(content_type, bytes) => {
                        (Some((content_type, bytes.len())), body::full(bytes))
                    }
                    RebuiltBody::None => (None, body::empty()),
                };
                let mut req = Request::builder()
                    .method(method)
                    .uri(upstream_uri(target, path_and_query)?)
                    .body(body)?;
                *req.headers_mut() = rebuilt_headers(client, conn, content);
                req
            }
            Outbound::StateRead {
                path_and_query,
                authorization,
            } => {
                let mut req = Request::builder()
                    .uri(upstream_uri(target, path_and_query)?)
                    .body(body::empty())?;
                let headers = req.headers_mut();
                headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
                headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("identity"),
                );
                if let Some(auth) = authorization {
                    headers.insert(header::AUTHORIZATION, auth.clone());
                }
                req
            }
        };
        *req.version_mut() = Version::HTTP_11;
        Ok(req)
    }
}

/// Remove hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, |name| HOP_BY_HOP.contains(&name));
}

/// Remove every header whose (lower-case) name `unwanted` picks, and every header a
/// `Connection` header names.
///
/// One pass over the names the message has, then a removal only for those it picked: most
/// messages carry none of them, and removing each listed name blindly cost a parse and a hash
/// per name per message on the pass-through path (~3 % of its CPU, issue 13).
fn remove_where(headers: &mut HeaderMap, unwanted: impl Fn(&str) -> bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let picked: Vec<HeaderName> = headers
        .keys()
        .filter(|name| unwanted(name.as_str()))
        .cloned()
        .collect();
    for name in picked {
        headers.remove(name);
    }
}

/// `path_and_query` on the upstream.
pub(crate) fn upstream_uri(
    target: &UpstreamTarget,
    path_and_query: impl TryInto<PathAndQuery, Error: Into<http::Error>>,
) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(path_and_query)
        .build()
}

// Headers some front ends (IIS, ASP.NET) read as "the real URL": never forwarded, so no upstream
// can route a request somewhere other than the path syncgate classified.
use crate::graph::URL_OVERRIDE_HEADERS as URL_OVERRIDES;

/// Rewrite a client's headers for the upstream: hop-by-hop headers, `Host` and URL-override
/// headers removed, `Expect` dropped (the client connection already answered it),
/// `X-Forwarded-For`/`-Proto` set.
pub(crate) fn upstream_headers(headers: &mut HeaderMap, conn: &ConnInfo) {
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(&name)
            || name == header::HOST
            || name == header::EXPECT
            || URL_OVERRIDES.contains(&name)
    });
    append_forwarded_for(headers, conn);
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
}

fn append_forwarded_for(headers: &mut HeaderMap, conn: &ConnInfo) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        // The common case: this hop starts the chain.
        let ip = conn.remote.ip().to_string();
        if let Ok(v) = HeaderValue::try_from(ip) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        return;
    }
    // Several X-Forwarded-For lines are one comma-separated list (RFC 9110 §5.3); keep them all.
    let mut chain: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    chain.push(conn.remote.ip().to_string());
    if let Ok(v) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The response the client receives: the upstream's status, end-to-end headers and streaming body.
pub(crate) fn to_client(resp: Response<Incoming>) -> Response<Body> {
    strip_response(resp).map(body::stream)
}

/// An upstream response with its hop-by-hop headers removed, for the client's connection.
pub(crate) fn strip_response<B>(resp: Response<B>) -> Response<B> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The client's connection decides its own version; hyper writes the right one.
    parts.version = Version::default();
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("client-request-id", HeaderValue::from_static("c"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["authorization", "client-request-id"]);
    }

    fn conn() -> ConnInfo {
        ConnInfo {
            remote: "10.0.0.7:5555".parse().unwrap(),
            tls: true,
            client_cert: None,
            handoff: Default::default(),
            proxy_user: None,
        }
    }

    #[test]
    fn a_rebuilt_request_carries_only_allowed_headers_and_one_authorization() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer first"),
            ("authorization", "Bearer second"),
            ("accept", "application/json"),
            ("prefer", "return=minimal"),
            ("prefer", "odata.maxpagesize=5"),
            ("consistencylevel", "eventual"),
            ("client-request-id", "c1"),
            ("if-match", "*"),
            ("content-type", "text/plain"),
            ("content-type", "application/json"),
            ("content-length", "999"),
            ("content-encoding", "gzip"),
            ("accept-encoding", "gzip"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/v1.0/elsewhere"),
            ("x-evil", "1"),
            ("cookie", "a=b"),
            ("host", "attacker.example"),
            ("x-forwarded-for", "192.0.2.1"),
        ] {
            client.append(name, HeaderValue::from_static(value));
        }
        let headers = rebuilt_headers(
            &client,
            Some(&conn()),
            Some((HeaderValue::from_static("application/json"), 17)),
        );
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "client-request-id",
                "consistencylevel",
                "content-length",
                "content-type",
                "if-match",
                "prefer",
                "x-forwarded-for",
                "x-forwarded-proto",
            ]
        );
        let all = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("authorization"), ["Bearer first"]);
        assert_eq!(all("content-type"), ["application/json"]);
        assert_eq!(all("content-length"), ["17"]);
        assert_eq!(all("prefer"), ["return=minimal", "odata.maxpagesize=5"]);
        assert_eq!(all("x-forwarded-for"), ["192.0.2.1, 10.0.0.7"]);
        assert_eq!(all("x-forwarded-proto"), ["https"]);

        let bodiless = rebuilt_headers(&client, Some(&conn()), None);
        assert!(!bodiless.contains_key("content-type"));
        assert!(!bodiless.contains_key("content-length"));
    }

    #[test]
    fn a_pass_through_request_loses_exactly_the_connection_and_routing_headers() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("host", "attacker.example"),
            ("expect", "100-continue"),
            ("x-original-url", "/v1.0/policies"),
            ("x-rewrite-url", "/v1.0/$batch"),
            ("connection", "close, x-hop"),
            ("connection", "x-other-hop"),
            ("x-hop", "1"),
            ("x-other-hop", "2"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("authorization", "Bearer t"),
            ("authorization", "Bearer u"),
            ("client-request-id", "c"),
            ("content-type", "application/json"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        upstream_headers(&mut h, &conn());
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "authorization",
                "client-request-id",
                "content-type",
                "x-forwarded-for",
                "x-forwarded-proto"
            ]
        );
        // End-to-end headers pass exactly as sent, duplicates included.
        assert_eq!(h.get_all("authorization").iter().count(), 2);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");

        // Nothing to remove: nothing removed.
        let mut plain = HeaderMap::new();
        plain.insert("accept", HeaderValue::from_static("application/json"));
        upstream_headers(&mut plain, &conn());
        assert_eq!(plain.len(), 3);
    }

    #[test]
    fn forwarded_for_is_appended_to_a_previous_chain() {
        let conn = ConnInfo {
            remote: "10.0.0.7:5555".parse().unwrap(),
            tls: false,
            client_cert: None,
            handoff: Default::default(),
            proxy_user: None,
        };
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &conn);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        append_forwarded_for(&mut h, &conn);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.0.0.7");

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.2, 203.0.113.3"),
        );
        append_forwarded_for(&mut h, &conn);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["x-forwarded-for"],
            "192.0.2.1, 198.51.100.2, 203.0.113.3, 10.0.0.7"
        );
    }
}
