//! Durations and sizes as the configuration writes them (`"250ms"`, `"30s"`, `"1MiB"`).
//!
//! A leaf module so that both the configuration ([`crate::config`]) and the rules
//! ([`crate::rules`], `rules.rego_time_limit`) read them the same way without importing each other.

use std::time::Duration;

/// A value that does not parse, with the key it was given for.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub(crate) struct InvalidValue {
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

fn invalid(key: &'static str, message: String) -> InvalidValue {
    InvalidValue { key, message }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"`.
pub(crate) fn duration(key: &'static str, value: &str) -> Result<Duration, InvalidValue> {
    let v = value.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| invalid(key, format!("{value:?} needs a unit: ms, s, m or h")))?;
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| invalid(key, format!("{value:?} is not a duration like \"30s\"")))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(invalid(
                key,
                format!("{value:?}: unit must be ms, s, m or h"),
            ));
        }
    };
    Ok(d)
}

/// `"1048576"`, `"512KiB"`, `"1MiB"`.
pub(crate) fn size(key: &'static str, value: &str) -> Result<usize, InvalidValue> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| invalid(key, format!("{value:?} is not a size like \"1MiB\"")))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => {
            return Err(invalid(
                key,
                format!("{value:?}: unit must be B, KiB or MiB"),
            ));
        }
    };
    match n.checked_mul(factor) {
        Some(0) | None => Err(invalid(
            key,
            format!("{value:?} must be between 1 byte and usize::MAX"),
        )),
        Some(size) => Ok(size),
    }
}
