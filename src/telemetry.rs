//! Logging: `tracing` to stderr, human-readable by default or one JSON object per line.
//! The level comes from `RUST_LOG`; without it each command picks its own default (`info` for the
//! long-running server, quieter for the demo, whose stdout is the narration). Requests that are not
//! plain pass-through (governed, `$batch`, refused) log method, path, status and latency at `info`;
//! pass-through requests log nothing unless they fail (a line each would be the largest cost the
//! proxy adds to them; `[log] access` writes them to the access log instead, off the request
//! path: see `access_log.rs`). Never headers, tokens or bodies.
//!
//! Colours (ANSI escapes) are written only when stderr is a terminal and `NO_COLOR` is unset or
//! empty (<https://no-color.org>): a log file or a pipe gets plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Install the global subscriber. `default_level` applies when `RUST_LOG` is not set.
pub(crate) fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_directives(default_level)));
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The filter when `RUST_LOG` is not set: `level`, but rustls only at `error`. rustls warns about
/// what a client sent (an IP address as SNI, an alert), once per connection: any client could
/// fill the log with those lines.
fn default_directives(level: &str) -> String {
    format!("{level},rustls=error")
}

/// Colour only a terminal, and only when `NO_COLOR` is absent or empty.
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::use_colour;
    use std::ffi::OsStr;

    #[test]
    fn rustls_is_quiet_below_error_unless_rust_log_says_otherwise() {
        let filter = super::default_directives("info");
        assert_eq!(filter, "info,rustls=error");
        assert!(tracing_subscriber::EnvFilter::try_new(&filter).is_ok());
    }

    #[test]
    fn colour_goes_only_to_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }
}
