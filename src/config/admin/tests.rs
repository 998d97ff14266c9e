//! `[admin.tls]` and certificate principals: what validation accepts and how it names what it
//! refuses.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, KeyPair};

use crate::config::{ConfigError, RawConfig, RawListenerTls, RawPrincipal};

/// A self-signed certificate and key, written into `dir` (also usable as a CA bundle).
fn cert_files(dir: &Path) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("admin.crt"), dir.join("admin.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn config(principal: RawPrincipal, tls: Option<RawListenerTls>) -> RawConfig {
    let mut raw = RawConfig::default();
    raw.proxy.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.admin.principals.push(principal);
    raw.admin.tls = tls;
    raw
}

fn cert_principal(subject: Option<&str>, san: Option<&str>) -> RawPrincipal {
    RawPrincipal {
        name: "ann".into(),
        roles: vec!["auditor".into()],
        cert_subject: subject.map(str::to_owned),
        cert_san: san.map(str::to_owned),
        ..RawPrincipal::default()
    }
}

fn tls(dir: &Path, client_ca: bool) -> RawListenerTls {
    let (cert, key) = cert_files(dir);
    RawListenerTls {
        client_ca: client_ca.then(|| cert.clone()),
        cert,
        key,
        client_auth: Default::default(),
    }
}

fn refused(raw: &RawConfig) -> (&'static str, String) {
    match raw.validate() {
        Err(ConfigError::Invalid { key, message }) => (key, message),
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn a_certificate_principal_loads_with_a_client_ca_and_is_refused_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(
        cert_principal(Some("CN=ann,O=Contoso"), Some("email:ann@contoso.com")),
        Some(tls(dir.path(), true)),
    );
    let settings = good.validate().unwrap();
    assert!(settings.admin_tls.is_some());
    for tls in [None, Some(tls(dir.path(), false))] {
        let (key, message) = refused(&config(cert_principal(Some("CN=ann"), None), tls));
        assert_eq!(key, "admin.tls.client_ca");
        assert!(
            message.contains("admin.principals[0] (\"ann\")"),
            "{message}"
        );
    }
}

#[test]
fn each_principal_needs_a_credential_and_well_formed_certificate_rules() {
    let dir = tempfile::tempdir().unwrap();
    let with_tls = |p| config(p, Some(tls(dir.path(), true)));
    let (key, message) = refused(&with_tls(cert_principal(None, None)));
    assert_eq!(key, "admin.principals");
    assert!(message.contains("no credential"), "{message}");
    let (key, message) = refused(&with_tls(cert_principal(Some("CN=ann, O=x"), None)));
    assert_eq!(key, "admin.principals.cert_subject");
    assert!(message.contains("RFC 4514"), "{message}");
    let (key, message) = refused(&with_tls(cert_principal(None, Some("ann@contoso.com"))));
    assert_eq!(key, "admin.principals.cert_san");
    assert!(message.contains("email:"), "{message}");
    // Two principals one certificate stands for.
    let mut twice = with_tls(cert_principal(None, Some("dns:a.example")));
    twice.admin.principals.push(RawPrincipal {
        name: "bob".into(),
        ..cert_principal(None, Some("DNS:A.example"))
    });
    assert_eq!(refused(&twice).0, "admin.principals.cert_subject");
}

#[test]
fn admin_tls_is_checked_like_the_proxys() {
    let dir = tempfile::tempdir().unwrap();
    let key_principal = |raw: &mut RawConfig| {
        raw.admin.principals[0].key_hash =
            Some(format!("sha256:{}:{}", "0".repeat(32), "0".repeat(64)));
    };
    let mut required = config(
        cert_principal(Some("CN=ann"), None),
        Some(tls(dir.path(), false)),
    );
    required.admin.principals.clear();
    if let Some(t) = &mut required.admin.tls {
        t.client_auth = crate::config::ClientAuthMode::Required;
    }
    assert_eq!(refused(&required).0, "admin.tls.client_auth");
    let mut missing = config(cert_principal(None, None), Some(tls(dir.path(), false)));
    key_principal(&mut missing);
    if let Some(t) = &mut missing.admin.tls {
        t.cert = dir.path().join("nowhere.crt");
    }
    match missing.validate() {
        Err(ConfigError::Tls { key, .. }) => assert_eq!(key, "admin.tls"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    let text = "[admin.tls]\ncert = \"c\"\nkey = \"k\"\nclient_cert = \"x\"\n";
    let err = toml::from_str::<RawConfig>(text).unwrap_err().to_string();
    assert!(err.contains("unknown field `client_cert`"), "{err}");
    let text = "[admin.tls]\ncert = \"c\"\nkey = \"k\"\nclient_auth = \"always\"\n";
    let err = toml::from_str::<RawConfig>(text).unwrap_err().to_string();
    assert!(
        err.contains("always") && err.contains("client_auth"),
        "{err}"
    );
}

#[test]
fn principals_on_a_non_loopback_admin_listener_need_tls_and_start_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = config(cert_principal(None, None), None);
    raw.admin.principals[0].key_hash =
        Some(format!("sha256:{}:{}", "0".repeat(32), "0".repeat(64)));
    raw.admin.listen = "0.0.0.0:0".into();
    let (key, message) = refused(&raw);
    assert_eq!(key, "admin.listen");
    assert!(message.contains("configure [admin.tls]"), "{message}");
    raw.admin.tls = Some(tls(dir.path(), false));
    assert!(raw.validate().unwrap().admin_tls.is_some());
}
