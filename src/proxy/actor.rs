//! Who asked: the actor recorded with every governed operation.
//!
//! Claims are decoded from the bearer token without verifying it (Graph tokens cannot be
//! verified by third parties; the upstream's status says whether Graph accepted it). The token is
//! kept only as a keyed hash, so events by the same token can be linked without storing it.

use http::HeaderMap;
use serde_json::Value;

use crate::audit::Actor;
use crate::server::ConnInfo;
use crate::store::TokenHasher;
use crate::token;

pub(crate) fn actor(headers: &HeaderMap, conn: &ConnInfo, hasher: &TokenHasher) -> Actor {
    let bearer = token::bearer(headers).ok();
    let claims = bearer
        .and_then(|t| token::claims(t).ok())
        .unwrap_or_default();
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    Actor {
        oid: text("oid"),
        upn: text("upn").or_else(|| text("unique_name")),
        appid: text("appid").or_else(|| text("azp")),
        app_displayname: text("app_displayname"),
        tid: text("tid"),
        idtyp: text("idtyp"),
        roles: claims
            .get("roles")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        scp: text("scp")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        caller_address: Some(conn.remote.to_string()),
        client_cert_subject: conn.client_cert.as_ref().and_then(|der| subject(der)),
        proxy_user: conn.proxy_user.clone(),
        token_hmac: bearer.map(|t| hasher.hash(t)),
    }
}

/// The certificate's subject as RFC 4514 text (`CN=automation-client,O=Contoso`: the last RDN
/// first, no spaces, specials escaped), exactly as an admin principal's `cert_subject` is
/// written, so a subject read in the log can be pasted into the configuration and compared.
fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(crate::admin::dn::DistinguishedName::from_x509(cert.subject()).to_string())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair};

    /// x509-parser's own `Display` wrote the RDNs in certificate order with spaces
    /// (`C=GB, O=Contoso\, Ltd, CN=ann`), a form `cert_subject` refuses.
    #[test]
    fn a_client_certificate_subject_is_recorded_as_rfc_4514_text() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in [
            (DnType::CountryName, "GB"),
            (DnType::OrganizationName, "Contoso, Ltd"),
            (DnType::CommonName, "ann"),
        ] {
            params.distinguished_name.push(t, v);
        }
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let subject = super::subject(cert.der()).unwrap();
        assert_eq!(subject, r"CN=ann,O=Contoso\, Ltd,C=GB");
        assert!(crate::admin::dn::DistinguishedName::parse(&subject).is_ok());
    }
}
