//! Shared test plumbing: start an emulator (and, later, a proxy) on port 0, and a small HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use syncgate::body::{self, Body};
use syncgate::server::ServeOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running emulator; stopped when dropped.
pub struct TestEmulator {
    pub addr: SocketAddr,
    pub base: String,
    stop: CancellationToken,
}

impl Drop for TestEmulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Start an emulator on 127.0.0.1:0 over plain HTTP.
pub async fn spawn_emulator() -> TestEmulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(syncgate::emulator::run(
        listener,
        ServeOptions::default(),
        stop.clone(),
    ));
    TestEmulator {
        addr,
        base: format!("http://{addr}"),
        stop,
    }
}

/// A token granting every permission these APIs need.
pub fn admin_token() -> String {
    syncgate::token::unsigned_jwt(&serde_json::json!({
        "oid": "11111111-1111-1111-1111-111111111111",
        "upn": "admin@contoso.example",
        "tid": "00000000-0000-0000-0000-0000000000aa",
        "scp": "Policy.ReadWrite.CrossTenantAccess",
        "idtyp": "user",
    }))
}

/// A token with these delegated scopes only.
pub fn token_with_scopes(scp: &str) -> String {
    syncgate::token::unsigned_jwt(&serde_json::json!({ "oid": "o", "scp": scp }))
}

/// A response, fully read.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The Graph error code of an error response.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not a Graph error: {:?}", self.json()))
            .to_owned()
    }
}

/// A plain-HTTP/1.1 test client.
#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Body>,
    pub token: Option<String>,
}

impl TestClient {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            token: Some(admin_token()),
        }
    }

    pub fn without_token() -> Self {
        Self {
            token: None,
            ..Self::new()
        }
    }

    pub fn with_token(token: String) -> Self {
        Self {
            token: Some(token),
            ..Self::new()
        }
    }

    /// Send a request; `body` is sent as JSON when given.
    pub async fn send(&self, method: Method, url: &str, body: Option<Value>) -> TestResponse {
        let mut headers = HeaderMap::new();
        let body = match body {
            Some(v) => {
                headers.insert("content-type", HeaderValue::from_static("application/json"));
                Bytes::from(serde_json::to_vec(&v).unwrap())
            }
            None => Bytes::new(),
        };
        self.send_raw(method, url, headers, body).await
    }

    /// Send a request with exactly these headers and body bytes (plus the client's token).
    pub async fn send_raw(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> TestResponse {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let mut req = req.body(body::full(body)).unwrap();
        req.headers_mut().extend(headers);
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> TestResponse {
        self.send(Method::GET, url, None).await
    }
}

impl TestClient {
    /// Like `send_raw`, but a request that fails (e.g. a connection closed without an answer) is
    /// returned as an error instead of failing the test.
    pub async fn try_send_raw(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<TestResponse, hyper_util::client::legacy::Error> {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let mut req = req.body(body::full(body)).unwrap();
        req.headers_mut().extend(headers);
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("request timed out")?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        Ok(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
