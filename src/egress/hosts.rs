//! Which hosts egress mode intercepts, tunnels or refuses, decided from a `CONNECT` target.

use std::net::IpAddr;

/// The Graph hosts of the four clouds (graph-reference: national cloud deployments).
pub(crate) const GRAPH_HOSTS: [&str; 4] = [
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// The token endpoints of the same clouds: clients need them to get the tokens they send to
/// Graph, so they are tunnelled unless the configuration says otherwise.
pub(crate) const TOKEN_HOSTS: [&str; 4] = [
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
];

/// Where a `CONNECT` asks to go, read strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Lower-cased, without a trailing dot; an IPv6 literal without its brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The host is an IP address, not a name.
    pub(crate) literal: Option<IpAddr>,
}

impl Target {
    /// The target of a `CONNECT` request line: `host:port` (RFC 9110 §9.3.6), a DNS name, an
    /// IPv4 address or a bracketed IPv6 address, and a port; nothing else (no user info, no
    /// path, no percent-encoding, no empty or zero port).
    pub(crate) fn parse(authority: &str) -> Result<Target, &'static str> {
        if authority.contains(['@', '/', '?', '#', '%', '\\']) {
            return Err("the CONNECT target is not host:port");
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or("the CONNECT target is not host:port")?;
            let _: std::net::Ipv6Addr = host.parse().map_err(|_| "a bad IPv6 address")?;
            (host, port)
        } else {
            let (host, port) = authority
                .rsplit_once(':')
                .ok_or("the CONNECT target has no port")?;
            if host.contains(':') {
                return Err("an IPv6 CONNECT target must be in brackets");
            }
            (host, port)
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return Err("the CONNECT target's port is not a number");
        }
        let port: u16 = port.parse().map_err(|_| "the port is out of range")?;
        if port == 0 {
            return Err("the CONNECT target's port is 0");
        }
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Target {
                host: ip.to_string(),
                port,
                literal: Some(ip),
            });
        }
        if !is_host_name(&host) {
            return Err("the CONNECT target's host is not a DNS name or an IP address");
        }
        // A name made only of digits and dots is an IPv4 address in some other spelling
        // (`127.1`, `0177.0.0.1`), which resolvers read as an address: refused as ambiguous.
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err("the CONNECT target's host looks like an IPv4 address but is not one");
        }
        Ok(Target {
            host,
            port,
            literal: None,
        })
    }
}

/// A DNS host name: labels of letters, digits and hyphens, 1–63 each, not starting or ending
/// with a hyphen, 253 at most in all.
pub(crate) fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A host pattern of `egress.tunnel`: an exact name, or `*.` and a suffix that matches names
/// with one or more labels before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPattern {
    /// Lower-cased; for a wildcard, the suffix with its leading dot (`.example.com`).
    text: String,
    wildcard: bool,
}

impl HostPattern {
    pub(crate) fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(suffix) => (suffix, true),
            None => (lower.as_str(), false),
        };
        if !is_host_name(name) || !name.contains('.') && wildcard {
            return Err(format!(
                "{text:?} is not a host name or `*.` followed by one (with a dot)"
            ));
        }
        Ok(HostPattern {
            text: if wildcard {
                format!(".{name}")
            } else {
                name.to_owned()
            },
            wildcard,
        })
    }

    /// Whether `host` (lower-cased, as [`Target`] has it) matches.
    pub(crate) fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.text.len() && host.ends_with(&self.text)
        } else {
            host == self.text
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*{}", self.text)
        } else {
            f.write_str(&self.text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_host_and_port_and_nothing_else() {
        let t = Target::parse("Graph.Microsoft.COM.:443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.literal),
            ("graph.microsoft.com", 443, None)
        );
        let t = Target::parse("[::1]:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert!(t.literal.is_some());
        let t = Target::parse("10.0.0.1:443").unwrap();
        assert_eq!(t.literal, Some("10.0.0.1".parse().unwrap()));
        for bad in [
            "graph.microsoft.com",
            "graph.microsoft.com:",
            "graph.microsoft.com:0",
            "graph.microsoft.com:65536",
            "graph.microsoft.com:+443",
            "graph.microsoft.com: 443",
            "user@graph.microsoft.com:443",
            "graph.microsoft.com/x:443",
            "graph%2emicrosoft.com:443",
            "graph_microsoft.com:443",
            "-graph.microsoft.com:443",
            "graph..microsoft.com:443",
            ":443",
            "[::1:443",
            "[nope]:443",
            "::1:443",
            "127.1:443",
            "0177.0.0.1:443",
            "2130706433:443",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn patterns_match_exact_names_or_strict_suffixes() {
        let exact = HostPattern::parse("Login.MicrosoftOnline.com").unwrap();
        assert!(exact.matches("login.microsoftonline.com"));
        assert!(!exact.matches("xlogin.microsoftonline.com"));
        assert!(!exact.matches("a.login.microsoftonline.com"));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("aexample.com"));
        assert_eq!(wild.to_string(), "*.example.com");
        for bad in [
            "*",
            "*.com",
            "*example.com",
            "a.*.com",
            "",
            "a b.com",
            "*.*.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
