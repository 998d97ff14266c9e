//! `[limits]`: what one client may hold of syncgate's time, descriptors and memory.
//!
//! Every value here bounds something an unauthenticated client controls: how long a socket may stay
//! silent, how many sockets it may hold, how many body bytes syncgate keeps in memory for it. The
//! connection caps are derived from the process's open-file limit when not configured, because
//! running out of descriptors stops *every* client (accept fails), which is exactly what a flood of
//! silent sockets aims for.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid, parse_duration, parse_size};

/// Descriptors kept back from the connection caps: the admin listener's connections (capped at
/// [`crate::app::ADMIN_MAX_CONNECTIONS`]), the audit log's database, `-wal` and `-shm` files, the
/// listeners, stdio and the runtime's own (epoll, eventfd), with room to spare.
pub(crate) const FD_RESERVE: u64 = 64;

/// The largest default total connection cap, whatever the file limit: each idle connection costs
/// buffers (tens of KiB with TLS), so a huge file limit should not invite a huge idle population.
pub(crate) const DEFAULT_MAX_CONNECTIONS_CEILING: usize = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_first_byte_timeout")]
    pub(crate) first_byte_timeout: String,
    #[serde(default = "default_tls_handshake_timeout")]
    pub(crate) tls_handshake_timeout: String,
    #[serde(default = "default_idle_timeout")]
    pub(crate) idle_timeout: String,
    #[serde(default = "default_h2_keepalive_interval")]
    pub(crate) h2_keepalive_interval: String,
    #[serde(default = "default_h2_keepalive_timeout")]
    pub(crate) h2_keepalive_timeout: String,
    #[serde(default = "default_body_stall_timeout")]
    pub(crate) body_stall_timeout: String,
    #[serde(default = "default_body_memory")]
    pub(crate) body_memory: String,
    #[serde(default = "default_body_memory_wait")]
    pub(crate) body_memory_wait: String,
    /// Derived from the open-file limit when absent.
    pub(crate) max_connections: Option<usize>,
    /// A quarter of `max_connections` when absent.
    pub(crate) max_connections_per_client: Option<usize>,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            first_byte_timeout: default_first_byte_timeout(),
            tls_handshake_timeout: default_tls_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
            h2_keepalive_interval: default_h2_keepalive_interval(),
            h2_keepalive_timeout: default_h2_keepalive_timeout(),
            body_stall_timeout: default_body_stall_timeout(),
            body_memory: default_body_memory(),
            body_memory_wait: default_body_memory_wait(),
            max_connections: None,
            max_connections_per_client: None,
        }
    }
}

fn default_first_byte_timeout() -> String {
    "10s".into()
}
fn default_tls_handshake_timeout() -> String {
    "10s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_h2_keepalive_interval() -> String {
    "30s".into()
}
fn default_h2_keepalive_timeout() -> String {
    "20s".into()
}
fn default_body_stall_timeout() -> String {
    "10s".into()
}
fn default_body_memory() -> String {
    "64MiB".into()
}
fn default_body_memory_wait() -> String {
    "2s".into()
}

/// Validated `[limits]`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// A new connection that sends nothing for this long is closed.
    pub(crate) first_byte_timeout: Duration,
    /// A TLS handshake that has not finished after this long is abandoned.
    pub(crate) tls_handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive and
    /// HTTP/2 alike).
    pub(crate) idle_timeout: Duration,
    /// How often an HTTP/2 peer is pinged.
    pub(crate) h2_keepalive_interval: Duration,
    /// An HTTP/2 peer that does not answer a ping within this long is disconnected.
    pub(crate) h2_keepalive_timeout: Duration,
    /// A governed or `$batch` body that makes no progress for this long is refused with 408.
    pub(crate) body_stall_timeout: Duration,
    /// Bytes of governed and `$batch` bodies held in memory at once, across all requests.
    pub(crate) body_memory: usize,
    /// How long a body read waits for room in `body_memory` before it is refused with 503.
    pub(crate) body_memory_wait: Duration,
    /// Client connections open at once on the proxy listener.
    pub(crate) max_connections: usize,
    /// Client connections open at once from one client address.
    pub(crate) max_connections_per_client: usize,
    /// The soft open-file limit the caps were checked against.
    pub(crate) open_file_limit: u64,
}

impl RawLimits {
    /// `largest_body` is the largest body a request may have read whole (`audit.max_body`,
    /// `audit.max_batch_body`): the budget must hold at least one of them.
    pub(super) fn validate(
        &self,
        largest_body: (&'static str, usize),
    ) -> Result<Limits, ConfigError> {
        let (body_key, max_body) = largest_body;
        let positive = |key: &'static str, value: &str| {
            let d = parse_duration(key, value)?;
            if d.is_zero() {
                return Err(invalid(key, "must be longer than 0"));
            }
            Ok(d)
        };
        let body_memory = parse_size("limits.body_memory", &self.body_memory)?;
        if body_memory < max_body {
            return Err(invalid(
                "limits.body_memory",
                format!(
                    "{body_memory} bytes is less than {body_key} ({max_body} bytes): a body of the \
                     allowed size could never be read"
                ),
            ));
        }
        let open_file_limit = open_file_limit();
        let (max_connections, max_connections_per_client) = connection_caps(
            open_file_limit,
            self.max_connections,
            self.max_connections_per_client,
        )?;
        Ok(Limits {
            first_byte_timeout: positive("limits.first_byte_timeout", &self.first_byte_timeout)?,
            tls_handshake_timeout: positive(
                "limits.tls_handshake_timeout",
                &self.tls_handshake_timeout,
            )?,
            idle_timeout: positive("limits.idle_timeout", &self.idle_timeout)?,
            h2_keepalive_interval: positive(
                "limits.h2_keepalive_interval",
                &self.h2_keepalive_interval,
            )?,
            h2_keepalive_timeout: positive(
                "limits.h2_keepalive_timeout",
                &self.h2_keepalive_timeout,
            )?,
            body_stall_timeout: positive("limits.body_stall_timeout", &self.body_stall_timeout)?,
            body_memory,
            body_memory_wait: parse_duration("limits.body_memory_wait", &self.body_memory_wait)?,
            max_connections,
            max_connections_per_client,
            open_file_limit,
        })
    }
}

/// The process's soft limit on open files (`RLIMIT_NOFILE`); `u64::MAX` when unlimited or unknown
/// (then the caps fall back to their ceiling).
pub(crate) fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the whole call.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if status != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    limit.rlim_cur
}

/// The total and per-client connection caps for a process allowed `nofile` open files.
///
/// Every proxied request may need an upstream connection as well as its client connection, so at
/// most half of what is left after [`FD_RESERVE`] goes to client connections. A configured cap
/// above that is refused rather than trimmed: the operator asked for something the process cannot
/// honour, and would otherwise find out when accept() starts failing for everyone.
pub(super) fn connection_caps(
    nofile: u64,
    total: Option<usize>,
    per_client: Option<usize>,
) -> Result<(usize, usize), ConfigError> {
    let room = usize::try_from(nofile.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX);
    let total = match total {
        Some(0) => return Err(invalid("limits.max_connections", "must be at least 1")),
        Some(n) if n > room => {
            return Err(invalid(
                "limits.max_connections",
                format!(
                    "{n} is more than the open-file limit allows: with {nofile} files, {FD_RESERVE} \
                     kept for syncgate itself and one upstream connection per client connection, \
                     at most {room} client connections fit. Raise the limit (ulimit -n, systemd \
                     LimitNOFILE) or lower limits.max_connections"
                ),
            ));
        }
        Some(n) => n,
        None if room == 0 => {
            return Err(invalid(
                "limits.max_connections",
                format!(
                    "the open-file limit ({nofile}) leaves no room for client connections after \
                     the {FD_RESERVE} syncgate keeps for itself; raise it (ulimit -n, systemd \
                     LimitNOFILE)"
                ),
            ));
        }
        None => room.min(DEFAULT_MAX_CONNECTIONS_CEILING),
    };
    let per_client = match per_client {
        Some(0) => {
            return Err(invalid(
                "limits.max_connections_per_client",
                "must be at least 1",
            ));
        }
        Some(n) if n > total => {
            return Err(invalid(
                "limits.max_connections_per_client",
                format!("{n} is more than limits.max_connections ({total})"),
            ));
        }
        Some(n) => n,
        None => (total / 4).max(1),
    };
    Ok((total, per_client))
}
