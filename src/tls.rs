//! TLS material: PEM loading, the listeners' server configuration and the upstream client's.
//!
//! Everything uses the ring provider explicitly (never the process default), so a build that
//! also links aws-lc through some dependency still behaves the same.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that could not be used, with the path that was tried.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}")]
    Certs {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCerts { path: PathBuf },
    #[error("cannot read a private key from {path}")]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("a certificate in {path} cannot be used as a trust anchor")]
    Anchor {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("invalid TLS configuration")]
    Config(#[from] rustls::Error),
    #[error("invalid client-certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider every configuration here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make ring the process-wide default too, for libraries that ask rustls for the default.
pub fn install_default_provider() {
    // Err means a default is already installed, which is what we wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// All certificates in a PEM file (a chain, or a CA bundle).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })
}

fn roots_from(path: &Path, roots: &mut RootCertStore) -> Result<(), TlsError> {
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::Anchor {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Whether a listener asks for client certificates, and whether it insists.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// CA bundle that client certificates must chain to.
    pub(crate) ca: PathBuf,
    /// Refuse the handshake when the client presents no certificate.
    pub(crate) required: bool,
}

/// A server configuration advertising `h2` and `http/1.1` by ALPN.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_auth: Option<&ClientAuth>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let mut roots = RootCertStore::empty();
            roots_from(&auth.ca, &mut roots)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if auth.required {
                verifier.build()?
            } else {
                verifier.allow_unauthenticated().build()?
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The upstream client's configuration: the Mozilla roots (webpki-roots), plus an optional extra
/// CA bundle for corporate TLS inspection or a test CA.
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        roots_from(path, &mut roots)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
