//! Distinguished names in RFC 4514 form, so a principal's `cert_subject` is compared with a client
//! certificate's subject exactly, never by substring.
//!
//! Both sides become one canonical value: the RDNs in RFC 4514 order (the last RDN of the
//! certificate's sequence first), each attribute's type as its OID, the attributes of a
//! multi-valued RDN sorted. Two names are equal when those values are equal: attribute types
//! ignore case (`cn` is `CN`), values are compared exactly, after unescaping. The configured text
//! is parsed strictly (no spaces around `,` or `+`, special characters escaped), so a subject
//! written the way some tools print it (`CN = ann, O = Contoso`) is refused with a reason at
//! start-up instead of silently matching nothing.

use std::fmt;

use x509_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::x509::X509Name;

/// The names RFC 4514 §3 gives attribute types, plus two that certificates often carry. Any other
/// type is written as its dotted OID.
const NAMES: [(&str, &str); 11] = [
    ("CN", "2.5.4.3"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("C", "2.5.4.6"),
    ("STREET", "2.5.4.9"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    // Not in RFC 4514's table: accepted when parsing, written as OIDs.
    ("SERIALNUMBER", "2.5.4.5"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
];
/// How many of [`NAMES`] are written by name (RFC 4514's own).
const WRITTEN_BY_NAME: usize = 9;

/// One attribute's value: text, or the DER of a value that is not a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Text(String),
    Der(Vec<u8>),
}

/// An attribute type (dotted OID) and its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Attribute {
    oid: String,
    value: Value,
}

/// A subject in canonical form; `Display` writes RFC 4514 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DistinguishedName(Vec<Vec<Attribute>>);

/// Why a `cert_subject` is not RFC 4514 text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} (expected RFC 4514 text like \"CN=ann,O=Contoso\")")]
pub(crate) struct BadName(String);

impl DistinguishedName {
    /// A certificate's subject.
    pub(crate) fn from_x509(name: &X509Name<'_>) -> Self {
        let mut rdns: Vec<Vec<Attribute>> = name
            .iter()
            .map(|rdn| {
                let mut set: Vec<Attribute> = rdn
                    .iter()
                    .map(|a| Attribute {
                        oid: a.attr_type().to_id_string(),
                        value: value_of(a.attr_value()),
                    })
                    .collect();
                set.sort();
                set
            })
            .collect();
        rdns.reverse();
        Self(rdns)
    }

    /// RFC 4514 text as a principal's `cert_subject` holds it.
    pub(crate) fn parse(text: &str) -> Result<Self, BadName> {
        if text.is_empty() {
            return Err(BadName("empty".into()));
        }
        let mut chars = text.chars().peekable();
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        loop {
            let oid = attribute_type(&mut chars)?;
            let value = attribute_value(&mut chars)?;
            rdn.push(Attribute { oid, value });
            match chars.next() {
                None => break,
                Some('+') => {}
                Some(',') => {
                    rdn.sort();
                    rdns.push(std::mem::take(&mut rdn));
                }
                Some(other) => return Err(BadName(format!("unexpected {other:?}"))),
            }
            if chars.peek().is_none() {
                return Err(BadName("ends with a separator".into()));
            }
        }
        rdn.sort();
        rdns.push(rdn);
        Ok(Self(rdns))
    }
}

/// A string value as text; anything else (or a string type not decoded here) as its DER, which
/// RFC 4514 writes `#` followed by hex.
fn value_of(any: &Any<'_>) -> Value {
    let text = match any.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(any.data).ok().map(str::to_owned)
        }
        Tag::BmpString if any.data.len() % 2 == 0 => char::decode_utf16(
            any.data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        _ => None,
    };
    match text {
        Some(text) => Value::Text(text),
        None => Value::Der(any.to_der_vec().unwrap_or_else(|_| any.data.to_vec())),
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// `CN` / `cn` / `2.5.4.3`, then `=`: the type's dotted OID.
fn attribute_type(chars: &mut Chars<'_>) -> Result<String, BadName> {
    let mut name = String::new();
    loop {
        match chars.next() {
            Some('=') => break,
            Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '.' => name.push(c),
            Some(c) => {
                return Err(BadName(format!(
                    "{c:?} in an attribute type (no spaces around ',', '+' or '=')"
                )));
            }
            None => return Err(BadName(format!("{name:?} is not followed by '='"))),
        }
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        let arcs_ok = name
            .split('.')
            .all(|arc| !arc.is_empty() && arc.chars().all(|c| c.is_ascii_digit()));
        return if arcs_ok && name.contains('.') {
            Ok(name)
        } else {
            Err(BadName(format!("{name:?} is not a dotted OID")))
        };
    }
    NAMES
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(&name))
        .map(|(_, oid)| (*oid).to_owned())
        .ok_or_else(|| {
            BadName(format!(
                "unknown attribute type {name:?} (write it as a dotted OID)"
            ))
        })
}

/// A value up to the next unescaped `,` or `+` (left in `chars`).
fn attribute_value(chars: &mut Chars<'_>) -> Result<Value, BadName> {
    if chars.peek() == Some(&'#') {
        chars.next();
        let mut digits = String::new();
        while let Some(c) = chars.next_if(|c| *c != ',' && *c != '+') {
            digits.push(c);
        }
        return hex::decode(&digits)
            .map(Value::Der)
            .map_err(|_| BadName(format!("#{digits} is not hex")));
    }
    let mut bytes = Vec::new();
    // Whether the last character was escaped, so a trailing `\ ` is kept.
    let mut last_escaped = false;
    while let Some(c) = chars.next_if(|c| *c != ',' && *c != '+') {
        last_escaped = false;
        match c {
            '\\' => {
                last_escaped = true;
                match chars.next() {
                    Some(s) if "\"+,;<>\\ #=".contains(s) => bytes.push(s as u8),
                    Some(h) => {
                        let lo = chars.next().unwrap_or(' ');
                        let byte = u8::from_str_radix(&format!("{h}{lo}"), 16).map_err(|_| {
                            BadName(format!("\\{h}{lo} is not an escape RFC 4514 allows"))
                        })?;
                        bytes.push(byte);
                    }
                    None => return Err(BadName("ends with '\\'".into())),
                }
            }
            ' ' if bytes.is_empty() => {
                return Err(BadName(
                    "a value starts with a space (no spaces after ',' or '+'; escape a \
                     leading space as '\\ ')"
                        .into(),
                ));
            }
            '"' | ';' | '<' | '>' => {
                return Err(BadName(format!("{c:?} must be escaped as '\\{c}'")));
            }
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if bytes.last() == Some(&b' ') && !last_escaped {
        return Err(BadName(
            "a value ends with a space (no spaces before ',' or '+'; escape a trailing space \
             as '\\ ')"
                .into(),
        ));
    }
    if bytes.is_empty() {
        return Err(BadName("an attribute has an empty value".into()));
    }
    String::from_utf8(bytes)
        .map(Value::Text)
        .map_err(|_| BadName("an escaped value is not UTF-8".into()))
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, attribute) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                let name = NAMES[..WRITTEN_BY_NAME]
                    .iter()
                    .find(|(_, oid)| *oid == attribute.oid)
                    .map_or(attribute.oid.as_str(), |(short, _)| short);
                write!(f, "{name}=")?;
                match &attribute.value {
                    Value::Der(der) => write!(f, "#{}", hex::encode(der))?,
                    Value::Text(text) => write_escaped(f, text)?,
                }
            }
        }
        Ok(())
    }
}

/// RFC 4514 §2.4's escaping: the special characters, a leading `#` or space, a trailing space,
/// and NUL.
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => write!(f, "\\{c}")?,
            '#' if i == 0 => f.write_str("\\#")?,
            ' ' if i == 0 || i == last => f.write_str("\\ ")?,
            '\0' => f.write_str("\\00")?,
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        DistinguishedName::parse(text).unwrap().to_string()
    }

    #[test]
    fn types_ignore_case_and_multi_valued_rdns_ignore_order() {
        assert_eq!(canonical("cn=ann,o=Contoso"), "CN=ann,O=Contoso");
        assert_eq!(canonical("2.5.4.3=ann"), "CN=ann");
        assert_eq!(canonical("OU=b+CN=ann,O=x"), canonical("CN=ann+OU=b,O=x"));
        assert_eq!(
            canonical("emailAddress=a@b.c,CN=x"),
            "1.2.840.113549.1.9.1=a@b.c,CN=x"
        );
        // Values are compared exactly: case matters there.
        assert_ne!(
            DistinguishedName::parse("CN=Ann"),
            DistinguishedName::parse("CN=ann")
        );
    }

    #[test]
    fn escapes_round_trip() {
        for text in [
            r"CN=Smith\, Ann,O=Contoso",
            r"CN=\#1\ ,O=a\+b\;c\<d\>e\\f\=g",
            r"CN=\ leading",
            "CN=Łukasz Ünal",
            "CN=x,1.2.3.4=#0403616263",
        ] {
            let parsed = DistinguishedName::parse(text).unwrap();
            let written = parsed.to_string();
            assert_eq!(
                DistinguishedName::parse(&written).unwrap(),
                parsed,
                "{text} -> {written}"
            );
        }
        assert_eq!(canonical(r"CN=Smith\2C Ann"), r"CN=Smith\, Ann");
        assert_eq!(canonical(r"CN=\C5\81"), "CN=Ł");
    }

    #[test]
    fn text_that_is_not_rfc_4514_is_refused_with_a_reason() {
        for (text, why) in [
            ("", "empty"),
            ("CN=ann, O=Contoso", "no spaces around"),
            ("CN=ann,O= Contoso", "starts with a space"),
            ("CN = ann", "in an attribute type"),
            ("CN=ann ", "ends with a space"),
            ("CN=ann,", "ends with a separator"),
            ("CN=", "empty value"),
            ("CN", "not followed by '='"),
            ("FOO=bar", "unknown attribute type"),
            ("1.2.=x", "not a dotted OID"),
            ("CN=a\"b", "must be escaped"),
            (r"CN=a\zz", "not an escape"),
            (r"CN=\FF", "not UTF-8"),
            ("CN=#zz", "not hex"),
            ("CN=ann\\", "ends with"),
        ] {
            let error = DistinguishedName::parse(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
        }
    }
}
