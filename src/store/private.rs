//! The log's files are private to syncgate's user (0600): the events name who changed what, and
//! the token key links fingerprints to tokens. A file found wider (created by an earlier version,
//! restored from a backup, or loosened by hand) is tightened when the store opens it, with a
//! warning, rather than refused: the proxy must start, and the fix is the same either way.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// The length of the secrets kept in key files (the token key, the checkpoint signing key).
pub(crate) const SECRET_LEN: usize = 32;

/// The secret in the key file at `path` (hex, one line), creating the file with fresh random
/// bytes (mode 0600) when there is none. `Ok(None)`: the file holds something else, which is
/// refused, never replaced (a key that changed silently would break what it signed or linked).
pub(crate) fn load_or_create_secret(path: &Path) -> io::Result<Option<[u8; SECRET_LEN]>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            tighten(path)?;
            return Ok(parse_secret(&text));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = random_secret()?;
    // Write a private temporary file, then link it into place: the key file appears complete
    // or not at all, and if another process won the race its key is the one everybody uses.
    let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = write_private(&tmp, &hex::encode(secret)).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(Some(secret)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Ok(parse_secret(&fs::read_to_string(path)?))
        }
        Err(e) => Err(e),
    }
}

fn parse_secret(text: &str) -> Option<[u8; SECRET_LEN]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(unix)]
fn random_secret() -> io::Result<[u8; SECRET_LEN]> {
    let mut secret = [0u8; SECRET_LEN];
    fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

#[cfg(not(unix))]
fn random_secret() -> io::Result<[u8; SECRET_LEN]> {
    // Two v4 UUIDs: 244 random bits from the OS generator (uuid uses getrandom).
    let mut secret = [0u8; SECRET_LEN];
    secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    Ok(secret)
}

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
