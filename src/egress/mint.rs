//! Certificates for intercepted Graph hosts, minted on the fly and signed by the enterprise CA
//! (`egress.ca_cert`, `egress.ca_key`) that managed machines already trust.
//!
//! - One leaf per host, for that host name alone (SAN), `serverAuth`, an ECDSA P-256 key of its
//!   own, valid from an hour ago (clock skew) for [`LIFETIME`].
//! - Kept and reused until half its life has passed, then minted again: a leaf that leaks is
//!   good for a day at most, and a busy proxy signs a few a day.
//! - Only Graph hosts are ever minted for (the configured list), so the cache is bounded by
//!   the configuration, not by what clients ask for.
//! - The chain served is the leaf then the CA certificate as configured.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long a minted leaf is valid.
pub(crate) const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why the enterprise CA cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} is not a CA certificate syncgate can sign with: {why}")]
    BadCertificate { path: String, why: String },
    #[error("{path} is not a private key syncgate can sign with: {why}")]
    BadKey { path: String, why: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: String, key: String },
    #[error("cannot make a certificate for {host}: {why}")]
    Mint { host: String, why: String },
}

/// The enterprise CA, and the leaves it signed.
pub(crate) struct Minter {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    minted: Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter").finish_non_exhaustive()
    }
}

impl Minter {
    /// Load the CA certificate and its key (PEM files).
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Minter, CaError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        read(cert)?;
        let key_pem = read(key)?;
        let cert_name = cert.display().to_string();
        let ca_der = crate::tls::load_certs(cert)
            .map_err(|e| CaError::BadCertificate {
                path: cert_name.clone(),
                why: e.to_string(),
            })?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::NoCertificate {
                path: cert_name.clone(),
            })?;
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| CaError::BadKey {
            path: key.display().to_string(),
            why: e.to_string(),
        })?;
        if !public_key_matches(&ca_der, &key_pair) {
            return Err(CaError::Mismatch {
                cert: cert_name,
                key: key.display().to_string(),
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&ca_der, key_pair).map_err(|e| CaError::BadCertificate {
                path: cert_name.clone(),
                why: e.to_string(),
            })?;
        if !issuer.key_usages().is_empty()
            && !issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign)
        {
            return Err(CaError::BadCertificate {
                path: cert_name,
                why: "its key usage does not allow signing certificates".into(),
            });
        }
        Ok(Minter {
            issuer,
            ca_der,
            minted: Mutex::new(HashMap::new()),
        })
    }

    /// A TLS server configuration presenting a leaf for `host` (lower-case), minted now or
    /// kept from earlier; ALPN offers `h2` and `http/1.1`.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let mut minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, config)) = minted.get(host) {
            if at.elapsed() < LIFETIME / 2 {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(self.mint(host)?);
        minted.insert(host.to_owned(), (Instant::now(), config.clone()));
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<rustls::ServerConfig, CaError> {
        let fail = |why: String| CaError::Mint {
            host: host.to_owned(),
            why,
        };
        // The one SAN: the host's DNS name (hosts are validated names, never addresses).
        let mut params =
            CertificateParams::new(vec![host.to_owned()]).map_err(|e| fail(e.to_string()))?;
        if !matches!(params.subject_alt_names.as_slice(), [SanType::DnsName(_)]) {
            return Err(fail("not a DNS name".into()));
        }
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = chrono::Utc::now().timestamp();
        let at = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| fail(e.to_string()))
        };
        params.not_before = at(now - 3600)?;
        params.not_after = at(now + LIFETIME.as_secs() as i64)?;
        let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| fail(e.to_string()))?;
        let chain = vec![leaf.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| fail(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Whether `key`'s public key is the one `cert` certifies.
fn public_key_matches(cert: &CertificateDer<'_>, key: &KeyPair) -> bool {
    use rcgen::PublicKeyData;
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, parsed)) => {
            parsed
                .tbs_certificate
                .subject_pki
                .subject_public_key
                .data
                .as_ref()
                == key.der_bytes()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, IsCa};

    /// A CA written as PEM files into `dir`: (certificate, key).
    pub(crate) fn test_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Contoso egress test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("ca.crt"), dir.join("ca.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Whether a rustls client trusting only `ca` completes a handshake for `host` with
    /// `config` (in memory); the error it gives otherwise.
    pub(crate) fn verifies(
        ca: &Path,
        host: &str,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::tls::load_certs(ca).unwrap() {
            roots.add(c).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut server = rustls::ServerConnection::new(config).unwrap();
        // Shuttle the handshake in memory.
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
            server.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
            server.process_new_packets().map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).map_err(|e| e.to_string())?;
            client.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
            client.process_new_packets().map_err(|e| e.to_string())?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        Err("the handshake did not finish".into())
    }

    #[test]
    fn a_minted_leaf_is_trusted_for_its_host_alone_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, key) = test_ca(dir.path());
        let minter = Minter::load(&ca, &key).unwrap();
        let config = minter.server_config("graph.microsoft.com").unwrap();
        verifies(&ca, "graph.microsoft.com", config.clone()).unwrap();
        let other = verifies(&ca, "graph.microsoft.us", config.clone()).unwrap_err();
        assert!(other.contains("not valid for name"), "{other}");
        assert!(Arc::ptr_eq(
            &config,
            &minter.server_config("graph.microsoft.com").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &config,
            &minter.server_config("graph.microsoft.us").unwrap()
        ));
    }

    #[test]
    fn a_key_that_is_not_the_cas_or_a_certificate_that_is_not_a_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = test_ca(dir.path());
        let other = dir.path().join("other.key");
        std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        assert!(matches!(
            Minter::load(&ca, &other),
            Err(CaError::Mismatch { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            Minter::load(&empty, &other),
            Err(CaError::NoCertificate { .. } | CaError::BadCertificate { .. })
        ));
        assert!(matches!(
            Minter::load(&ca, &dir.path().join("missing.key")),
            Err(CaError::Read { .. })
        ));
    }
}
