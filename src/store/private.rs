//! The log's files are private to syncgate's user (0600): the events name who changed what, and
//! the token key links fingerprints to tokens. A file found wider (created by an earlier version,
//! restored from a backup, or loosened by hand) is tightened when the store opens it, with a
//! warning, rather than refused: the proxy must start, and the fix is the same either way.

use std::io;
use std::path::Path;

/// Set `path` to 0600 when it exists and grants anything to group or others; `Ok` when it does
/// not exist. Returns whether it changed the mode.
#[cfg(unix)]
pub(crate) fn tighten(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tracing::warn!(
        file = %path.display(),
        was = format!("{mode:o}"),
        "an audit log file was readable by others; its mode is now 600"
    );
    Ok(true)
}

#[cfg(not(unix))]
pub(crate) fn tighten(_path: &Path) -> io::Result<bool> {
    Ok(false)
}
