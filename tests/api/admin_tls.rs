//! Issue 10: the admin listener over TLS (`[admin.tls]`), and principals that authenticate by a
//! client certificate the handshake verified (`cert_subject`, `cert_san`).

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use rcgen::{DnType, SanType};
use syncgate::config::{ClientAuthMode, RawConfig, RawListenerTls, RawPrincipal};

use crate::admin_auth::{assert_graph_error, make_key, principal};
use crate::harness::{
    TestProxy, proxy_config, request, spawn_proxy_with, syncgate_bin, tls_client_with,
};
use crate::helpers::TestResponse;
use crate::pki::TestPki;

/// The upstream is never contacted: the admin listener answers on its own.
const UNUSED_UPSTREAM: &str = "http://127.0.0.1:9";

/// A certificate's files: (certificate, key).
type Identity = (PathBuf, PathBuf);

/// A proxy whose admin listener serves TLS from `pki`, and the credentials its principals hold:
/// `ann` (auditor; an API key and the certificate `CN=ann,O=Contoso`), `bob` (approver only; the
/// certificate with SAN `email:bob@contoso.com`, no key) and `kim` (auditor; a key only). `carol`
/// holds a certificate from the same CA that names no principal.
struct World {
    pki: TestPki,
    proxy: TestProxy,
    ann_key: String,
    kim_key: String,
    ann: Identity,
    bob: Identity,
    carol: Identity,
}

/// `client_auth`: `None` for TLS without client certificates (key principals only).
async fn world(client_auth: Option<ClientAuthMode>) -> World {
    let pki = TestPki::generate();
    let (ann_key, ann_hash) = make_key();
    let (kim_key, kim_hash) = make_key();
    // In the certificate O comes first; RFC 4514 text lists the last RDN first.
    let ann = pki.issue_client(
        "ann",
        &[
            (DnType::OrganizationName, "Contoso"),
            (DnType::CommonName, "ann"),
        ],
        vec![],
    );
    let bob = pki.issue_client(
        "bob",
        &[(DnType::CommonName, "Bob Example")],
        vec![SanType::Rfc822Name("bob@contoso.com".try_into().unwrap())],
    );
    let carol = pki.issue_client("carol", &[(DnType::CommonName, "carol")], vec![]);
    let mut raw = proxy_config(UNUSED_UPSTREAM);
    let mut principals = vec![principal("kim", &["auditor"], None, kim_hash)];
    if client_auth.is_some() {
        principals.push(RawPrincipal {
            cert_subject: Some("CN=ann,O=Contoso".into()),
            ..principal("ann", &["auditor"], None, ann_hash)
        });
        principals.push(RawPrincipal {
            name: "bob".into(),
            roles: vec!["approver".into()],
            cert_san: Some("email:bob@contoso.com".into()),
            ..RawPrincipal::default()
        });
    } else {
        principals.push(principal("ann", &["auditor"], None, ann_hash));
    }
    raw.admin.principals = principals;
    raw.admin.tls = Some(admin_tls(&pki, client_auth));
    let proxy = spawn_proxy_with(raw).await;
    World {
        pki,
        proxy,
        ann_key,
        kim_key,
        ann,
        bob,
        carol,
    }
}

fn admin_tls(pki: &TestPki, client_auth: Option<ClientAuthMode>) -> RawListenerTls {
    RawListenerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: client_auth.map(|_| pki.ca_cert.clone()),
        client_auth: client_auth.unwrap_or_default(),
    }
}

/// GET `url` over TLS trusting `ca`, with a client certificate and an API key when given; `Err`
/// when the connection fails (a refused handshake).
async fn get_tls(
    ca: &Path,
    url: &str,
    cert: Option<&Identity>,
    key: Option<&str>,
) -> Result<(TestResponse, Version), String> {
    let client = tls_client_with(ca, cert.map(|(c, k)| (c.as_path(), k.as_path())));
    let mut req = Request::get(url);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req.body(syncgate::body::full(Bytes::new())).unwrap();
    let (resp, version) = request(&client, req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let resp = TestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    };
    Ok((resp, version))
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.proxy.admin_addr.port())
    }

    /// GET `path` over TLS trusting `ca` (see [`get_tls`]).
    async fn get_via(
        &self,
        ca: &Path,
        path: &str,
        cert: Option<&Identity>,
        key: Option<&str>,
    ) -> Result<(TestResponse, Version), String> {
        get_tls(ca, &self.url(path), cert, key).await
    }

    async fn get(&self, path: &str, cert: Option<&Identity>, key: Option<&str>) -> TestResponse {
        let ca = self.pki.ca_cert.clone();
        match self.get_via(&ca, path, cert, key).await {
            Ok((resp, _)) => resp,
            Err(e) => panic!("GET {path} failed: {e}"),
        }
    }
}

fn assert_principal(resp: &TestResponse, name: &str) {
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    assert_eq!(resp.json()["name"], name);
}

fn assert_401(resp: &TestResponse, what: &str) {
    assert_eq!(
        resp.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {:?}",
        resp.body
    );
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"syncgate-admin\""),
        "{what}: {challenge:?}"
    );
    assert_graph_error(resp, "InvalidAuthenticationToken", what);
}

/// A 401 whose message says `words`.
fn assert_401_saying(resp: &TestResponse, what: &str, words: &str) {
    assert_401(resp, what);
    let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(words), "{what}: {message}");
}

/// The server ended the handshake with a TLS alert the client reports as `alert`.
fn assert_handshake_refused(result: Result<(TestResponse, Version), String>, alert: &str) {
    match result {
        Ok((resp, _)) => panic!("answered {}: {:?}", resp.status, resp.body),
        Err(e) => assert!(e.contains(alert), "{e}"),
    }
}

#[tokio::test]
async fn the_admin_api_answers_over_https_with_an_api_key_and_h2_by_alpn() {
    let w = world(None).await;
    let ca = w.pki.ca_cert.clone();
    let (resp, version) = w
        .get_via(&ca, "/api/v1/whoami", None, Some(&w.ann_key))
        .await
        .unwrap();
    assert_principal(&resp, "ann");
    assert_eq!(version, Version::HTTP_2);
    assert_401(&w.get("/api/v1/whoami", None, None).await, "no key");
    // The listener speaks only TLS now: plain HTTP gets no answer.
    let plain = crate::helpers::TestClient::with_token(w.ann_key.clone())
        .try_send_raw(
            http::Method::GET,
            &format!("http://127.0.0.1:{}/healthz", w.proxy.admin_addr.port()),
            http::HeaderMap::new(),
            Bytes::new(),
        )
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
}

#[tokio::test]
async fn principals_on_a_non_loopback_admin_listener_start_when_it_serves_tls() {
    let pki = TestPki::generate();
    let (key, hash) = make_key();
    let mut raw: RawConfig = proxy_config(UNUSED_UPSTREAM);
    raw.admin.listen = "0.0.0.0:0".into();
    raw.admin.principals = vec![principal("ann", &["auditor"], None, hash)];
    raw.admin.tls = Some(admin_tls(&pki, None));
    let proxy = spawn_proxy_with(raw).await;
    let url = format!(
        "https://127.0.0.1:{}/api/v1/whoami",
        proxy.admin_addr.port()
    );
    let (resp, _) = get_tls(&pki.ca_cert, &url, None, Some(&key)).await.unwrap();
    assert_principal(&resp, "ann");
}

#[tokio::test]
async fn a_client_certificate_authenticates_its_principal_and_roles_decide() {
    let w = world(Some(ClientAuthMode::Optional)).await;
    assert_principal(&w.get("/api/v1/whoami", Some(&w.ann), None).await, "ann");
    let listed = w.get("/api/v1/operations", Some(&w.ann), None).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    // bob is named by his e-mail SAN and is an approver, not an auditor.
    assert_principal(&w.get("/api/v1/whoami", Some(&w.bob), None).await, "bob");
    let refused = w.get("/api/v1/operations", Some(&w.bob), None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_graph_error(&refused, "Authorization_RequestDenied", "bob lists");
    // Health stays open to any client, with or without a certificate.
    assert_eq!(w.get("/healthz", None, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_verified_certificate_that_names_no_principal_gets_401_unless_a_key_decides() {
    let w = world(Some(ClientAuthMode::Optional)).await;
    let resp = w.get("/api/v1/whoami", Some(&w.carol), None).await;
    assert_401_saying(&resp, "carol's certificate", "CN=carol");
    // A key next to an unmapped certificate authenticates as the key's principal.
    assert_principal(
        &w.get("/api/v1/whoami", Some(&w.carol), Some(&w.kim_key))
            .await,
        "kim",
    );
}

#[tokio::test]
async fn a_certificate_and_a_key_of_different_principals_get_401() {
    let w = world(Some(ClientAuthMode::Optional)).await;
    let resp = w
        .get("/api/v1/whoami", Some(&w.ann), Some(&w.kim_key))
        .await;
    assert_401_saying(
        &resp,
        "ann's certificate with kim's key",
        "different principals",
    );
    // The same principal's certificate and key agree.
    assert_principal(
        &w.get("/api/v1/whoami", Some(&w.ann), Some(&w.ann_key))
            .await,
        "ann",
    );
    // A bad key is refused even beside a good certificate.
    let (other, _) = make_key();
    assert_401(
        &w.get("/api/v1/whoami", Some(&w.ann), Some(&other)).await,
        "ann's certificate with an unknown key",
    );
}

#[tokio::test]
async fn required_client_auth_refuses_a_handshake_without_a_certificate() {
    let w = world(Some(ClientAuthMode::Required)).await;
    let ca = w.pki.ca_cert.clone();
    let refused = w
        .get_via(&ca, "/api/v1/whoami", None, Some(&w.ann_key))
        .await;
    assert_handshake_refused(refused, "CertificateRequired");
    let health = w.get_via(&ca, "/healthz", None, None).await;
    assert_handshake_refused(health, "CertificateRequired");
    assert_principal(&w.get("/api/v1/whoami", Some(&w.ann), None).await, "ann");
}

#[tokio::test]
async fn optional_client_auth_lets_a_key_in_without_a_certificate() {
    let w = world(Some(ClientAuthMode::Optional)).await;
    assert_principal(
        &w.get("/api/v1/whoami", None, Some(&w.kim_key)).await,
        "kim",
    );
    assert_principal(
        &w.get("/api/v1/whoami", None, Some(&w.ann_key)).await,
        "ann",
    );
    assert_401(&w.get("/api/v1/whoami", None, None).await, "nothing");
}

#[tokio::test]
async fn a_certificate_signed_by_another_ca_is_refused_at_the_handshake() {
    let w = world(Some(ClientAuthMode::Optional)).await;
    // Same subject as ann's, different issuer: the subject alone must never be enough.
    let other = TestPki::generate();
    let forged = other.issue_client(
        "ann",
        &[
            (DnType::OrganizationName, "Contoso"),
            (DnType::CommonName, "ann"),
        ],
        vec![],
    );
    let ca = w.pki.ca_cert.clone();
    for key in [None, Some(w.ann_key.as_str())] {
        let refused = w.get_via(&ca, "/api/v1/whoami", Some(&forged), key).await;
        // The other CA has the same name, so the chain fails on its signature.
        assert_handshake_refused(refused, "fatal alert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_authenticates_with_a_client_certificate_over_h2() {
    let w = world(Some(ClientAuthMode::Required)).await;
    let curl = |identity: &Identity| {
        let args = [
            "--silent".to_owned(),
            "--show-error".to_owned(),
            "--http2".to_owned(),
            "--cacert".to_owned(),
            w.pki.ca_cert.display().to_string(),
            "--cert".to_owned(),
            identity.0.display().to_string(),
            "--key".to_owned(),
            identity.1.display().to_string(),
            "--write-out".to_owned(),
            "\n%{http_code} %{http_version}".to_owned(),
            w.url("/api/v1/whoami"),
        ];
        tokio::task::spawn_blocking(move || {
            // CI and this project's machines have curl: a missing curl fails the test, loudly.
            let out = Command::new("curl")
                .args(&args)
                .output()
                .expect("curl is required by this test (apt-get install curl)");
            assert!(
                out.status.success(),
                "curl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let out = curl(&w.ann).await.unwrap();
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "200 2", "{out}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["name"], "ann");
    let out = curl(&w.carol).await.unwrap();
    assert!(out.ends_with("\n401 2"), "{out}");
}

#[test]
fn check_config_refuses_a_certificate_principal_without_a_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncgate.toml");
    std::fs::write(
        &config,
        "[[admin.principals]]\nname = \"ann\"\nroles = [\"auditor\"]\n\
         cert_subject = \"CN=ann,O=Contoso\"\n",
    )
    .unwrap();
    let out = Command::new(syncgate_bin())
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("admin.tls.client_ca") && stderr.contains("\"ann\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_reads_admin_tls_from_the_file_and_says_https() {
    let pki = TestPki::generate();
    let (key, hash) = make_key();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncgate.toml");
    let toml_path = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    std::fs::write(
        &config,
        format!(
            "[admin.tls]\ncert = {}\nkey = {}\n[[admin.principals]]\nname = \"ann\"\n\
             roles = [\"auditor\"]\nkey_hash = \"{hash}\"\n",
            toml_path(&pki.server_cert),
            toml_path(&pki.server_key),
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let child = crate::harness::spawn_child_proxy(UNUSED_UPSTREAM, &["--config", &config]);
    assert!(
        child.admin_url.starts_with("https://127.0.0.1:"),
        "{}",
        child.admin_url
    );
    let url = format!("{}/api/v1/whoami", child.admin_url);
    let (resp, _) = get_tls(&pki.ca_cert, &url, None, Some(&key)).await.unwrap();
    assert_principal(&resp, "ann");
}
