//! `upstream.url`: where requests go, a national cloud by name or a URL with scheme and host only.

use http::uri::{Authority, Scheme};

use super::{ConfigError, invalid};

/// Where requests are forwarded: scheme and authority only (the client's path is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamTarget {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
}

impl std::fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Graph's national clouds by name (docs/graph.md §7).
pub(crate) const CLOUDS: &[(&str, &str)] = &[
    ("global", "https://graph.microsoft.com"),
    ("usgov", "https://graph.microsoft.us"),
    ("dod", "https://dod-graph.microsoft.us"),
    ("china", "https://microsoftgraph.chinacloudapi.cn"),
];

impl UpstreamTarget {
    /// A cloud name from [`CLOUDS`] or an `http(s)://host[:port]` URL with no path.
    pub(crate) fn parse(value: &str) -> Result<Self, ConfigError> {
        const KEY: &str = "upstream.url";
        let url = CLOUDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map(|(_, url)| *url)
            .unwrap_or(value);
        let uri: http::Uri = url
            .parse()
            .map_err(|e| invalid(KEY, format!("{value:?} is not a cloud name or URL: {e}")))?;
        let names = CLOUDS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ");
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(invalid(
                KEY,
                format!("{value:?} is neither a cloud name ({names}) nor an absolute URL"),
            ));
        };
        if scheme != &Scheme::HTTP && scheme != &Scheme::HTTPS {
            return Err(invalid(
                KEY,
                format!("scheme must be http or https, not {scheme}"),
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid(
                KEY,
                "give scheme and host only; the client's path (/v1.0/..., /beta/...) is kept",
            ));
        }
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
        })
    }
}
