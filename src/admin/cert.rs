//! Client certificates as admin credentials: which principal a verified certificate names.
//!
//! The certificate comes only from the admin listener's TLS handshake ([`ConnInfo::client_cert`],
//! which rustls fills only after its verifier accepted the chain against `admin.tls.client_ca`);
//! [`super::Admin`] attaches it to the request as a [`VerifiedClientCert`], which a client cannot
//! forge. A principal names its certificate by `cert_subject` (the full subject, RFC 4514, see
//! [`super::dn`]) and/or `cert_san` (one subject-alternative-name entry with its type:
//! `email:`, `dns:` or `uri:`); with both, the certificate must match both. Nothing is a substring
//! or wildcard match: a SAN matches when the certificate holds that exact entry of that type
//! (DNS names and an e-mail's domain ignore ASCII case, as their standards say).
//!
//! [`ConnInfo::client_cert`]: crate::server::ConnInfo

use std::fmt;

use x509_parser::extensions::GeneralName;

pub(crate) use super::dn::DistinguishedName;

/// The kinds of subject alternative name a principal can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SanKind {
    Email,
    Dns,
    Uri,
}

impl SanKind {
    const ALL: [SanKind; 3] = [SanKind::Email, SanKind::Dns, SanKind::Uri];

    fn prefix(self) -> &'static str {
        match self {
            SanKind::Email => "email",
            SanKind::Dns => "dns",
            SanKind::Uri => "uri",
        }
    }
}

/// One subject alternative name with its type.
#[derive(Debug, Clone, Eq)]
pub(crate) struct SanEntry {
    kind: SanKind,
    value: String,
}

impl PartialEq for SanEntry {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && match self.kind {
                SanKind::Uri => self.value == other.value,
                SanKind::Dns => self.value.eq_ignore_ascii_case(&other.value),
                SanKind::Email => {
                    match (self.value.rsplit_once('@'), other.value.rsplit_once('@')) {
                        (Some((l1, d1)), Some((l2, d2))) => l1 == l2 && d1.eq_ignore_ascii_case(d2),
                        _ => self.value == other.value,
                    }
                }
            }
    }
}

/// Why a `cert_san` value cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} (expected a type and a value: \"email:ann@contoso.com\", \"dns:ann.contoso.com\" or \
     \"uri:spiffe://contoso.com/ann\")"
)]
pub(crate) struct BadSan(&'static str);

impl SanEntry {
    /// `email:…`, `dns:…` or `uri:…` (the type ignores case, so OpenSSL's `DNS:` works).
    pub(crate) fn parse(text: &str) -> Result<Self, BadSan> {
        let (prefix, value) = text.split_once(':').ok_or(BadSan("no type"))?;
        let kind = SanKind::ALL
            .into_iter()
            .find(|k| k.prefix().eq_ignore_ascii_case(prefix))
            .ok_or(BadSan("unknown type"))?;
        if value.is_empty() || value.trim() != value {
            return Err(BadSan("an empty value or one with spaces around it"));
        }
        Ok(Self {
            kind,
            value: value.to_owned(),
        })
    }

    /// A key equal for entries that match each other, to find duplicates among principals.
    pub(crate) fn key(&self) -> String {
        let value = match self.kind {
            SanKind::Uri => self.value.clone(),
            SanKind::Dns => self.value.to_ascii_lowercase(),
            SanKind::Email => match self.value.rsplit_once('@') {
                Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
                None => self.value.clone(),
            },
        };
        format!("{}:{value}", self.kind.prefix())
    }
}

impl fmt::Display for SanEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.prefix(), self.value)
    }
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) subject: DistinguishedName,
    sans: Vec<SanEntry>,
}

impl ClientIdentity {
    /// `None` when the DER cannot be parsed (rustls verified it, so this is not expected).
    pub(crate) fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                let (kind, value) = match name {
                    GeneralName::RFC822Name(v) => (SanKind::Email, v),
                    GeneralName::DNSName(v) => (SanKind::Dns, v),
                    GeneralName::URI(v) => (SanKind::Uri, v),
                    _ => continue,
                };
                sans.push(SanEntry {
                    kind,
                    value: (*value).to_owned(),
                });
            }
        }
        Some(Self {
            subject: DistinguishedName::from_x509(cert.subject()),
            sans,
        })
    }
}

/// The client certificate the admin listener's TLS layer verified for this request's connection.
/// Put in the request's extensions by [`super::Admin`] only; `None` inside: the certificate could
/// not be parsed.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedClientCert(pub(crate) Option<ClientIdentity>);

impl VerifiedClientCert {
    /// How refusals and logs name the certificate (its subject).
    pub(crate) fn describe(&self) -> String {
        match &self.0 {
            Some(identity) => identity.subject.to_string(),
            None => "(unreadable)".into(),
        }
    }
}

/// A principal's certificate conditions; at least one is set when the principal uses one.
#[derive(Debug, Clone, Default)]
pub(crate) struct CertRule {
    pub(crate) subject: Option<DistinguishedName>,
    pub(crate) san: Option<SanEntry>,
}

impl CertRule {
    pub(crate) fn is_set(&self) -> bool {
        self.subject.is_some() || self.san.is_some()
    }

    /// Whether `identity` meets every condition set (and at least one is set).
    pub(crate) fn matches(&self, identity: &ClientIdentity) -> bool {
        self.is_set()
            && self.subject.as_ref().is_none_or(|s| *s == identity.subject)
            && self
                .san
                .as_ref()
                .is_none_or(|san| identity.sans.iter().any(|have| have == san))
    }

    /// Equal for rules that accept the same certificates, to refuse two principals sharing one.
    pub(crate) fn key(&self) -> Option<String> {
        self.is_set().then(|| {
            format!(
                "{}|{}",
                self.subject
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                self.san.as_ref().map(SanEntry::key).unwrap_or_default()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(dn: &[(DnType, &str)], sans: Vec<SanType>) -> ClientIdentity {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // rcgen starts with a placeholder CN, which would fix the CN's position.
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.subject_alt_names = sans;
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        ClientIdentity::from_der(cert.der()).unwrap()
    }

    fn rule(subject: Option<&str>, san: Option<&str>) -> CertRule {
        CertRule {
            subject: subject.map(|s| DistinguishedName::parse(s).unwrap()),
            san: san.map(|s| SanEntry::parse(s).unwrap()),
        }
    }

    #[test]
    fn a_subject_matches_only_in_full_and_in_rfc_4514_order() {
        let ann = cert(
            &[
                (DnType::CountryName, "GB"),
                (DnType::OrganizationName, "Contoso, Ltd"),
                (DnType::CommonName, "ann"),
            ],
            vec![],
        );
        assert_eq!(ann.subject.to_string(), r"CN=ann,O=Contoso\, Ltd,C=GB");
        assert!(rule(Some(r"CN=ann,O=Contoso\, Ltd,C=GB"), None).matches(&ann));
        assert!(rule(Some(r"cn=ann,o=Contoso\2C Ltd,c=GB"), None).matches(&ann));
        for other in [
            r"CN=ann,O=Contoso\, Ltd",
            r"C=GB,O=Contoso\, Ltd,CN=ann",
            r"CN=Ann,O=Contoso\, Ltd,C=GB",
            r"CN=an,O=Contoso\, Ltd,C=GB",
            "CN=ann",
        ] {
            assert!(!rule(Some(other), None).matches(&ann), "{other}");
        }
    }

    #[test]
    fn a_san_matches_one_entry_of_its_own_type_exactly() {
        let ann = cert(
            &[(DnType::CommonName, "ann")],
            vec![
                SanType::Rfc822Name("ann@Contoso.com".try_into().unwrap()),
                SanType::DnsName("ann.contoso.com".try_into().unwrap()),
                SanType::URI("spiffe://contoso.com/ann".try_into().unwrap()),
            ],
        );
        for good in [
            "email:ann@contoso.com",
            "EMAIL:ann@CONTOSO.COM",
            "DNS:Ann.Contoso.com",
            "uri:spiffe://contoso.com/ann",
        ] {
            assert!(rule(None, Some(good)).matches(&ann), "{good}");
        }
        for bad in [
            "email:Ann@contoso.com",
            "email:ann@contoso",
            "dns:ann@contoso.com",
            "dns:contoso.com",
            "uri:spiffe://contoso.com/Ann",
            "uri:spiffe://contoso.com",
            "email:ann.contoso.com",
        ] {
            assert!(!rule(None, Some(bad)).matches(&ann), "{bad}");
        }
        // With both conditions, both must hold.
        assert!(rule(Some("CN=ann"), Some("dns:ann.contoso.com")).matches(&ann));
        assert!(!rule(Some("CN=bob"), Some("dns:ann.contoso.com")).matches(&ann));
        assert!(!CertRule::default().matches(&ann));
    }

    #[test]
    fn san_text_needs_a_known_type_and_a_value() {
        for bad in [
            "ann@contoso.com",
            "ip:10.0.0.1",
            "dns:",
            "dns: x",
            "upn:a@b",
        ] {
            assert!(SanEntry::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            rule(None, Some("DNS:A.example")).key(),
            rule(None, Some("dns:a.EXAMPLE")).key()
        );
        assert_ne!(
            rule(Some("CN=a"), None).key(),
            rule(Some("CN=a"), Some("dns:a")).key()
        );
    }

    /// The table of credentials and outcomes `Principals::authenticate` promises.
    #[test]
    fn a_certificate_and_a_key_authenticate_together_only_as_one_principal() {
        use crate::admin::auth::{ApiKey, KeyHash, Principal, Principals, Role};
        let (ann_key, bob_key) = (ApiKey::generate().unwrap(), ApiKey::generate().unwrap());
        let make = |name: &str, key: &ApiKey, subject: &str| Principal {
            name: name.into(),
            roles: vec![Role::Auditor],
            oid: None,
            groups: Vec::new(),
            key_hash: Some(KeyHash::new(key).unwrap()),
            cert: rule(Some(subject), None),
        };
        let principals = Principals::new(vec![
            make("ann", &ann_key, "CN=ann"),
            make("bob", &bob_key, "CN=bob"),
            Principal {
                cert: rule(None, Some("dns:shared.example")),
                ..make("any-shared", &ApiKey::generate().unwrap(), "CN=x")
            },
        ]);
        let who = |cn: Option<&str>, key: Option<&ApiKey>| {
            let mut req = http::Request::get("/api/v1/whoami");
            if let Some(key) = key {
                req = req.header("authorization", format!("Bearer {}", key.reveal()));
            }
            let mut req = req.body(()).unwrap();
            if let Some(cn) = cn {
                let identity = cert(&[(DnType::CommonName, cn)], vec![]);
                req.extensions_mut()
                    .insert(VerifiedClientCert(Some(identity)));
            }
            match principals.require_any_role(&req) {
                Ok(p) => p.name,
                Err(resp) => resp.status().as_str().to_owned(),
            }
        };
        assert_eq!(who(Some("ann"), None), "ann");
        assert_eq!(who(Some("ann"), Some(&ann_key)), "ann");
        assert_eq!(who(Some("ann"), Some(&bob_key)), "401");
        assert_eq!(who(Some("carol"), None), "401");
        assert_eq!(who(Some("carol"), Some(&bob_key)), "bob");
        assert_eq!(who(Some("ann"), Some(&ApiKey::generate().unwrap())), "401");
        assert_eq!(who(None, Some(&bob_key)), "bob");
        assert_eq!(who(None, None), "401");
        // An unreadable certificate names nobody; one that two principals accept is refused.
        let shared = cert(
            &[(DnType::CommonName, "ann")],
            vec![SanType::DnsName("shared.example".try_into().unwrap())],
        );
        for identity in [None, Some(shared)] {
            let mut req = http::Request::get("/").body(()).unwrap();
            req.extensions_mut().insert(VerifiedClientCert(identity));
            let refused = principals.require_any_role(&req).unwrap_err();
            assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
        }
    }
}
