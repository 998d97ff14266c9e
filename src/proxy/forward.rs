//! Forwarding: rewrite a client's request for the upstream and the upstream's response for the
//! client, streaming both bodies untouched.
//!
//! Only hop-by-hop headers (RFC 9110 §7.6.1) and `Host` are removed; end-to-end headers, including
//! `Authorization` and `client-request-id`, pass exactly as sent. The upstream request always goes
//! out as HTTP/1.1 in the request line: the pooled client upgrades to HTTP/2 by ALPN on its own,
//! and an HTTP/2 version on the request would fail against an HTTP/1-only upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
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

/// Remove hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The request the upstream receives: absolute URI on the upstream, the client's body streamed,
/// headers rewritten by [`upstream_headers`].
pub fn to_upstream(
    req: Request<Incoming>,
    target: &UpstreamTarget,
    conn: &ConnInfo,
) -> Result<Request<Body>, http::Error> {
    let (mut parts, incoming) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = upstream_uri(target, path_and_query)?;
    parts.version = Version::HTTP_11;
    upstream_headers(&mut parts.headers, conn);
    Ok(Request::from_parts(parts, body::stream(incoming)))
}

/// `path_and_query` on the upstream.
pub fn upstream_uri(
    target: &UpstreamTarget,
    path_and_query: impl TryInto<PathAndQuery, Error: Into<http::Error>>,
) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(path_and_query)
        .build()
}

/// Headers some front ends (IIS, ASP.NET) read as "the real URL": never forwarded, so no upstream
/// can route a request somewhere other than the path syncgate classified.
const URL_OVERRIDES: &[&str] = &["x-original-url", "x-rewrite-url"];

/// Rewrite a client's headers for the upstream: hop-by-hop headers, `Host` and URL-override
/// headers removed, `Expect` dropped (the client connection already answered it),
/// `X-Forwarded-For`/`-Proto` set.
pub fn upstream_headers(headers: &mut HeaderMap, conn: &ConnInfo) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::EXPECT);
    for name in URL_OVERRIDES {
        headers.remove(*name);
    }
    append_forwarded_for(headers, conn);
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
}

fn append_forwarded_for(headers: &mut HeaderMap, conn: &ConnInfo) {
    // Several X-Forwarded-For lines are one comma-separated list (RFC 9110 §5.3); keep them all.
    let mut chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    chain.push(conn.remote.ip().to_string());
    if let Ok(v) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert("x-forwarded-for", v);
    }
}

/// The response the client receives: the upstream's status, end-to-end headers and streaming body.
pub fn to_client(resp: Response<Incoming>) -> Response<Body> {
    strip_response(resp).map(body::stream)
}

/// An upstream response with its hop-by-hop headers removed, for the client's connection.
pub fn strip_response<B>(resp: Response<B>) -> Response<B> {
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

    #[test]
    fn forwarded_for_is_appended_to_a_previous_chain() {
        let conn = ConnInfo {
            remote: "10.0.0.7:5555".parse().unwrap(),
            tls: false,
            client_cert: None,
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
