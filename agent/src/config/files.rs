//! The files `[alerting]` names (token, password, CA, client certificate and key), checked the way `run` and every
//! reload read them, so that check-config refuses what would fail later.
use std::path::Path;

/// Secret and CA files are small; a bigger one is the wrong file (or /dev/zero).
const MAX_FILE: u64 = 1 << 20;

/// The contents of a regular file of at most 1 MiB (links are followed: Kubernetes mounts
/// secrets as links).
fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A bearer token file: one line of printable text (it becomes a header value).
pub(super) fn check_token(path: &Path) -> Result<(), String> {
    let bytes = read_regular(path)?;
    let token = String::from_utf8_lossy(&bytes);
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if token.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{} holds a line break or control character inside the token (it would inject HTTP headers)",
            path.display()
        ));
    }
    Ok(())
}

/// A password file: readable (it is sent base64-encoded, so any bytes are safe).
pub(super) fn check_password(path: &Path) -> Result<(), String> {
    read_regular(path).map(drop)
}

/// A client certificate or key file: readable (what it holds is `checks`' to say).
pub(super) fn check_readable(path: &Path) -> Result<(), String> {
    read_regular(path).map(drop)
}

/// A CA file: PEM certificates a TLS client can trust (whether they are is `checks`' to say).
pub(super) fn check_ca(path: &Path, checks: &dyn super::CrossChecks) -> Result<(), String> {
    read_regular(path)?;
    checks.tls_ca(path)
}
