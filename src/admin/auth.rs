//! Who may use the admin API: principals from `[[admin.principals]]`, their API keys and roles.
//!
//! An API key is 32 random bytes, shown once as `sgk_` + base64url. The configuration keeps only
//! `sha256:<salt hex>:<hash hex>`, the SHA-256 of a 16-byte random salt followed by the key's
//! bytes. A fast hash is enough: the key is 256 bits of randomness, so there is no dictionary to
//! search (a slow hash like argon2 protects guessable passwords, which these are not); the salt
//! keeps two principals given the same key by mistake from sharing a hash. Hashes are compared in
//! constant time ([`subtle`]), and every principal is checked, so the time taken says nothing
//! about which hash a guess came close to.
//!
//! A principal may instead (or also) authenticate by client certificate on a TLS admin listener
//! ([`super::cert`]). A request whose verified certificate names a principal is that principal; if
//! it also carries an API key, the key must be that same principal's (two principals at once are
//! refused, 401). A verified certificate that names no principal does not authenticate: the
//! request needs a key then.
//!
//! Routes call [`Principals::require`] (or [`Principals::require_any_role`]) and either get the
//! principal or a finished 401/403 response in Graph's error shape. With no principals configured
//! the API is closed (403), never open.

// `require` returns the finished 401/403 response as its error (128 bytes): a route returns it
// as is, once per refused request, so boxing it would only add a step (as in `emulator`).
#![allow(
    clippy::result_large_err,
    reason = "the error is the refusal response itself, built once per refused request"
)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::cert::{CertRule, VerifiedClientCert};
use crate::body::Body;
use crate::graph_error::{GraphError, RequestIds};

/// What clients put after `Bearer ` starts with this, so a key is recognisable in a leak scan.
pub(crate) const KEY_PREFIX: &str = "sgk_";
const KEY_LEN: usize = 32;
const SALT_LEN: usize = 16;
const HASH_SCHEME: &str = "sha256";
/// The challenge every 401 carries (RFC 6750 §3).
const REALM: &str = "Bearer realm=\"syncgate-admin\"";

/// A role a principal holds. `Admin` may do everything the others may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Role {
    /// Read, export and verify the audit log.
    Auditor,
    /// Vote on changes waiting for approval (`/api/v1/approvals`), and read them.
    Approver,
    /// Everything.
    Admin,
}

impl Role {
    pub(crate) const ALL: [Role; 3] = [Role::Auditor, Role::Approver, Role::Admin];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// The key's hash as the configuration keeps it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyHash {
    salt: [u8; SALT_LEN],
    hash: [u8; 32],
}

/// Why a `key_hash` value cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0} (expected \"sha256:<32 hex digits of salt>:<64 hex digits of hash>\")")]
pub(crate) struct BadKeyHash(&'static str);

impl KeyHash {
    /// Hash `key` with a fresh random salt.
    pub(crate) fn new(key: &ApiKey) -> Result<Self, RandomFailed> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        Ok(Self::with_salt(salt, key))
    }

    fn with_salt(salt: [u8; SALT_LEN], key: &ApiKey) -> Self {
        let hash = Sha256::new()
            .chain_update(salt)
            .chain_update(key.0)
            .finalize()
            .into();
        Self { salt, hash }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, BadKeyHash> {
        let mut parts = text.split(':');
        let (Some(scheme), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadKeyHash("not three parts separated by ':'"));
        };
        if scheme != HASH_SCHEME {
            return Err(BadKeyHash("the scheme is not \"sha256\""));
        }
        let mut parsed = KeyHash {
            salt: [0; SALT_LEN],
            hash: [0; 32],
        };
        hex::decode_to_slice(salt, &mut parsed.salt)
            .map_err(|_| BadKeyHash("the salt is not 32 hex digits"))?;
        hex::decode_to_slice(hash, &mut parsed.hash)
            .map_err(|_| BadKeyHash("the hash is not 64 hex digits"))?;
        Ok(parsed)
    }

    /// Whether `key` is the key this hash was made from, in time independent of where they differ.
    pub(crate) fn matches(&self, key: &ApiKey) -> bool {
        let candidate = Self::with_salt(self.salt, key);
        constant_time_eq(&candidate.hash, &self.hash)
    }
}

impl std::fmt::Display for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{HASH_SCHEME}:{}:{}",
            hex::encode(self.salt),
            hex::encode(self.hash)
        )
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

/// Equal-length byte strings compared without an early exit (unequal lengths differ at once:
/// the lengths here are public, fixed sizes).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The system's random source failed (the only way making a key or salt can fail).
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed")]
pub(crate) struct RandomFailed;

/// Random bytes from the same source rustls uses for TLS (the OS generator, through ring).
fn fill_random(buf: &mut [u8]) -> Result<(), RandomFailed> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| RandomFailed)
}

/// An API key's 32 bytes. Never logged; `Debug` hides it.
pub(crate) struct ApiKey([u8; KEY_LEN]);

impl ApiKey {
    pub(crate) fn generate() -> Result<Self, RandomFailed> {
        let mut key = [0u8; KEY_LEN];
        fill_random(&mut key)?;
        Ok(Self(key))
    }

    /// `sgk_<base64url>`; `None` for anything else (a Graph token sent to the wrong port, say).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(KEY_PREFIX)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// The form shown to the user once, and sent by clients.
    pub(crate) fn reveal(&self) -> String {
        format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// One configured principal.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) name: String,
    /// Sorted, without repeats.
    pub(crate) roles: Vec<Role>,
    /// The person's Entra object id (lower-case GUID), so an approval can be told from a request.
    pub(crate) oid: Option<String>,
    /// The groups approval policies know the principal by (sorted, without repeats).
    pub(crate) groups: Vec<String>,
    /// The API key's hash, when the principal has a key.
    pub(crate) key_hash: Option<KeyHash>,
    /// The client certificate that stands for the principal, when one does.
    pub(crate) cert: CertRule,
}

impl Principal {
    /// Whether this principal may act as `role` (`admin` may act as any).
    pub(crate) fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::Admin)
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "roles": self.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "oid": self.oid,
        })
    }
}

/// Every principal the configuration names, and the checks routes ask for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Principals {
    list: Vec<Principal>,
}

/// Why a request was not let through: becomes the 401 or 403 response.
#[derive(Debug)]
enum Refusal {
    /// No usable `Authorization: Bearer sgk_...` header.
    Missing,
    /// A key that matches no principal.
    BadKey,
    /// A verified client certificate (named by its subject) that names no principal, and no key.
    UnknownCertificate(String),
    /// A client certificate that more than one principal's rule accepts.
    AmbiguousCertificate(String),
    /// A certificate of one principal and a key of another: which one acts is not guessed.
    TwoPrincipals,
    /// A known principal without the role needed.
    Forbidden(String),
}

impl Principals {
    pub(crate) fn new(list: Vec<Principal>) -> Self {
        Self { list }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every principal, in configuration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Principal> {
        self.list.iter()
    }

    /// The first principal's object id as validation normalised it (lower-case).
    pub(crate) fn first_oid(&self) -> Option<String> {
        self.list.first().and_then(|p| p.oid.clone())
    }

    /// The principal behind `req`, when it holds `role`; else the 401/403 response to send.
    pub(crate) fn require<B>(
        &self,
        req: &Request<B>,
        role: Role,
    ) -> Result<Principal, Response<Body>> {
        self.check(req, |p| {
            if p.has(role) {
                Ok(())
            } else {
                Err(format!(
                    "principal \"{}\" lacks the role \"{}\"",
                    p.name,
                    role.as_str()
                ))
            }
        })
    }

    /// The principal behind `req`, when it holds one of `roles` (the approval requests, read by
    /// approvers and auditors alike): authenticated once, refused once.
    pub(crate) fn require_one_of<B>(
        &self,
        req: &Request<B>,
        roles: &[Role],
    ) -> Result<Principal, Response<Body>> {
        self.check(req, |p| {
            if roles.iter().any(|role| p.has(*role)) {
                Ok(())
            } else {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                Err(format!(
                    "principal \"{}\" has none of the roles \"{}\"",
                    p.name,
                    names.join("\", \"")
                ))
            }
        })
    }

    /// The principal behind `req`, when it holds any role at all (e.g. `whoami`).
    pub(crate) fn require_any_role<B>(
        &self,
        req: &Request<B>,
    ) -> Result<Principal, Response<Body>> {
        self.check(req, |p| {
            if p.roles.is_empty() {
                Err(format!("principal \"{}\" has no roles", p.name))
            } else {
                Ok(())
            }
        })
    }

    fn check<B>(
        &self,
        req: &Request<B>,
        allowed: impl Fn(&Principal) -> Result<(), String>,
    ) -> Result<Principal, Response<Body>> {
        let refusal = match self.authenticate(req) {
            Ok(p) => match allowed(p) {
                Ok(()) => return Ok(p.clone()),
                Err(why) => Refusal::Forbidden(why),
            },
            Err(refusal) => refusal,
        };
        tracing::info!(route = %req.uri().path(), reason = ?refusal, "admin request refused");
        Err(refusal_response(
            refusal,
            &RequestIds::from_headers(req.headers()),
        ))
    }

    /// Which principal the request's credentials (key, client certificate or both) belong to.
    fn authenticate<B>(&self, req: &Request<B>) -> Result<&Principal, Refusal> {
        if self.list.is_empty() {
            return Err(Refusal::Forbidden(
                "the admin API has no principals configured ([[admin.principals]]); it stays closed"
                    .into(),
            ));
        }
        // A bad key is refused even beside a good certificate: a credential sent is checked.
        let by_key = self.by_key(req)?;
        let Some(cert) = req.extensions().get::<VerifiedClientCert>() else {
            return by_key.ok_or(Refusal::Missing);
        };
        let mut named = self.list.iter().filter(|p| {
            cert.0
                .as_ref()
                .is_some_and(|identity| p.cert.matches(identity))
        });
        match (named.next(), named.next(), by_key) {
            (Some(_), Some(_), _) => Err(Refusal::AmbiguousCertificate(cert.describe())),
            (Some(p), None, None) => Ok(p),
            (Some(p), None, Some(k)) if p.name == k.name => Ok(p),
            (Some(_), None, Some(_)) => Err(Refusal::TwoPrincipals),
            (None, _, Some(k)) => Ok(k),
            (None, _, None) => Err(Refusal::UnknownCertificate(cert.describe())),
        }
    }

    /// The principal whose key the request carries; `None` without an `Authorization` header.
    /// Every hash is computed, so how long this takes does not depend on which principal (if any)
    /// matched.
    fn by_key<B>(&self, req: &Request<B>) -> Result<Option<&Principal>, Refusal> {
        let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Ok(None),
            (Some(value), None) => value,
            (Some(_), Some(_)) => return Err(Refusal::Missing),
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            return Err(Refusal::Missing);
        };
        let key = ApiKey::parse(token).ok_or(Refusal::BadKey)?;
        let mut found = None;
        for p in &self.list {
            let matched = p.key_hash.as_ref().is_some_and(|h| h.matches(&key));
            if matched && found.is_none() {
                found = Some(p);
            }
        }
        found.map(Some).ok_or(Refusal::BadKey)
    }
}

fn refusal_response(refusal: Refusal, ids: &RequestIds) -> Response<Body> {
    let (status, code, message, challenge) = match refusal {
        Refusal::Missing => (
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "the admin API needs an API key: Authorization: Bearer sgk_...".to_owned(),
            REALM.to_owned(),
        ),
        Refusal::BadKey => (
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "the API key is not valid for any principal".to_owned(),
            format!("{REALM}, error=\"invalid_token\""),
        ),
        Refusal::UnknownCertificate(subject) => (
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!(
                "the client certificate {subject:?} stands for no principal; send an API key \
                 (Authorization: Bearer sgk_...)"
            ),
            format!("{REALM}, error=\"invalid_token\""),
        ),
        Refusal::AmbiguousCertificate(subject) => (
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!("the client certificate {subject:?} matches more than one principal"),
            format!("{REALM}, error=\"invalid_token\""),
        ),
        Refusal::TwoPrincipals => (
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "the client certificate and the API key belong to different principals; send the \
             credentials of one"
                .to_owned(),
            format!("{REALM}, error=\"invalid_token\""),
        ),
        Refusal::Forbidden(why) => (
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            why,
            String::new(),
        ),
    };
    let mut resp = GraphError::new(status, code, message).into_response(ids);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        if !challenge.is_empty() {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str, roles: &[Role], key: &ApiKey) -> Principal {
        Principal {
            name: name.into(),
            roles: roles.to_vec(),
            oid: None,
            groups: Vec::new(),
            key_hash: Some(KeyHash::new(key).unwrap()),
            cert: CertRule::default(),
        }
    }

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut b = Request::get("/api/v1/whoami");
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn a_hash_round_trips_through_its_text_form_and_matches_its_key() {
        let key = ApiKey::generate().unwrap();
        let hash = KeyHash::new(&key).unwrap();
        let text = hash.to_string();
        let parts: Vec<&str> = text.split(':').collect();
        assert_eq!(parts[0], "sha256");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 64);
        let parsed = KeyHash::parse(&text).unwrap();
        assert!(parsed == hash);
        assert!(parsed.matches(&key));
        let shown = key.reveal();
        assert!(
            shown.starts_with("sgk_") && shown.len() == 4 + 43,
            "{shown}"
        );
        assert!(parsed.matches(&ApiKey::parse(&shown).unwrap()));
    }

    #[test]
    fn the_hash_is_sha256_of_salt_then_key() {
        let key = ApiKey([7; KEY_LEN]);
        let hash = KeyHash::with_salt([1; SALT_LEN], &key);
        let mut input = vec![1u8; SALT_LEN];
        input.extend([7u8; KEY_LEN]);
        let expected = hex::encode(Sha256::digest(&input));
        assert_eq!(
            hash.to_string(),
            format!("sha256:{}:{expected}", "01".repeat(SALT_LEN))
        );
    }

    #[test]
    fn a_wrong_key_does_not_match() {
        let hash = KeyHash::new(&ApiKey::generate().unwrap()).unwrap();
        assert!(!hash.matches(&ApiKey::generate().unwrap()));
        let mut flipped = ApiKey([0; KEY_LEN]);
        let hash = KeyHash::with_salt([0; SALT_LEN], &flipped);
        flipped.0[31] ^= 1;
        assert!(!hash.matches(&flipped));
    }

    #[test]
    fn the_right_key_under_another_salt_does_not_match() {
        let key = ApiKey::generate().unwrap();
        let hash = KeyHash::new(&key).unwrap();
        let mut text = hash.to_string();
        // Change one salt digit: the stored hash no longer belongs to this salt.
        let i = "sha256:".len();
        let digit = if &text[i..=i] == "0" { "1" } else { "0" };
        text.replace_range(i..=i, digit);
        assert!(!KeyHash::parse(&text).unwrap().matches(&key));
        // Two hashes of one key differ: each has its own salt.
        assert_ne!(KeyHash::new(&key).unwrap().to_string(), hash.to_string());
    }

    #[test]
    fn malformed_hashes_and_keys_are_refused() {
        let good = KeyHash::new(&ApiKey([0; KEY_LEN])).unwrap().to_string();
        let (_, rest) = good.split_once(':').unwrap();
        for bad in [
            "",
            "sha256",
            &format!("argon2:{rest}"),
            &format!("{good}:00"),
            &good[..good.len() - 2],
            &format!("sha256:zz{}", &rest[2..]),
        ] {
            assert!(KeyHash::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(ApiKey::parse("sgk_").is_none());
        assert!(ApiKey::parse(&format!("sgk_{}", URL_SAFE_NO_PAD.encode([0u8; 31]))).is_none());
        assert!(ApiKey::parse(&URL_SAFE_NO_PAD.encode([0u8; 32])).is_none());
        assert!(ApiKey::parse(&format!("sgk_{}=", URL_SAFE_NO_PAD.encode([0u8; 32]))).is_none());
    }

    #[test]
    fn constant_time_eq_tells_equal_from_unequal() {
        assert!(constant_time_eq(b"abcd", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abce"));
        assert!(!constant_time_eq(b"abcd", b"bbcd"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn require_sorts_principals_into_401_403_and_through() {
        let (a, b, c) = (
            ApiKey::generate().unwrap(),
            ApiKey::generate().unwrap(),
            ApiKey::generate().unwrap(),
        );
        let principals = Principals::new(vec![
            principal("ann", &[Role::Auditor], &a),
            principal("bob", &[Role::Admin], &b),
            principal("cy", &[], &c),
        ]);
        let bearer = |k: &ApiKey| format!("Bearer {}", k.reveal());
        let status = |r: Result<Principal, Response<Body>>| match r {
            Ok(p) => Err(p.name),
            Err(resp) => Ok(resp.status().as_u16()),
        };
        let ann = request(Some(&bearer(&a)));
        assert_eq!(principals.require(&ann, Role::Auditor).unwrap().name, "ann");
        assert_eq!(status(principals.require(&ann, Role::Approver)), Ok(403));
        let bob = request(Some(&bearer(&b)));
        assert_eq!(
            principals.require(&bob, Role::Approver).unwrap().name,
            "bob"
        );
        let readers = [Role::Approver, Role::Auditor];
        assert_eq!(
            principals.require_one_of(&ann, &readers).unwrap().name,
            "ann"
        );
        assert_eq!(
            status(principals.require_one_of(&ann, &[Role::Approver])),
            Ok(403)
        );
        let cy = request(Some(&bearer(&c)));
        assert_eq!(status(principals.require_one_of(&cy, &readers)), Ok(403));
        assert_eq!(status(principals.require_any_role(&cy)), Ok(403));
        assert_eq!(principals.require_any_role(&ann).unwrap().name, "ann");
        let lower = request(Some(&format!("bearer {}", a.reveal())));
        assert_eq!(principals.require_any_role(&lower).unwrap().name, "ann");
        for unauthenticated in [
            request(None),
            request(Some("Basic Zm9vOmJhcg==")),
            request(Some("Bearer eyJhbGciOi.x.y")),
            request(Some(&bearer(&ApiKey::generate().unwrap()))),
        ] {
            let resp = principals.require_any_role(&unauthenticated).unwrap_err();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            let challenge = resp.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with(REALM), "{challenge}");
        }
    }

    #[test]
    fn with_no_principals_everything_is_forbidden() {
        let key = ApiKey::generate().unwrap();
        let req = request(Some(&format!("Bearer {}", key.reveal())));
        let resp = Principals::default().require_any_role(&req).unwrap_err();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
