//! The one place the agent's state files (target histories, alert states, alert spools,
//! the limit journal, the audit log) are opened. Replacement is crash-safe: after a crash
//! the file holds either the old or the new contents, whole. Nothing here trusts the state
//! directory's contents: links are never followed, only regular files are read (a FIFO
//! would block, a device has no end), reads are bounded, temporaries are created
//! exclusively under a unique name, and files and directories are 0600/0700 whatever the
//! umask.
use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

/// The largest state file read back (30 days of minute buckets is about 2 MiB; a full
/// alert spool a few MiB).
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// `name` (a target's name, an Alertmanager URL) as one file name: every byte but
/// `[A-Za-z0-9_-]` percent-encoded, `%` too, so two names never share a file (`col/x` is
/// `col%2Fx`, `col_x` stays `col_x`) and no name can climb out of its directory.
pub fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) as 0700 directories.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    // The umask may have taken bits away from the owner too.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Opens `path` for reading without following a link in its last component, and refuses
/// anything but a regular file. O_NONBLOCK keeps a FIFO from blocking the open.
fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other(format!(
                "{} is a symbolic link; state files never are",
                path.display()
            )),
            _ => e,
        })?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file ({kind:?})",
            path.display()
        )));
    }
    Ok(f)
}

/// Reads a state file whole: `None` when it does not exist; an error when it is a link,
/// not a regular file, or larger than `max` bytes.
pub fn read(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let f = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to a new temp file beside `path`, fsyncs it, renames it over `path`, and
/// fsyncs the directory so the rename itself survives a power cut. The temp file is
/// created exclusively (O_EXCL, so nothing planted there is written through) under a name
/// unique to this process and write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir(dir)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// Appends `bytes` to the state file at `path` (created 0600), refusing a link or a file
/// that is not regular; `sync` makes it durable before returning.
pub fn append(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o777 != FILE_MODE {
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    f.write_all(bytes)?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}

/// Reads a JSON state file; a missing file is `None`, an unreadable one (corrupt, a link,
/// not a regular file, too large) is moved aside as `<name>.corrupt` (and logged) so it
/// is never silently overwritten. The rename moves a link itself, never its target.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let error = match read(path, MAX_STATE_BYTES) {
        Ok(None) => return None,
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(v) => return Some(v),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    let mut aside = path.as_os_str().to_os_string();
    aside.push(".corrupt");
    tracing::error!(path = %path.display(), error, aside = ?aside, "unreadable state file; starting afresh");
    let _ = std::fs::rename(path, aside);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("gimbal-durable-{name}-{}", std::process::id()))
    }

    #[test]
    fn replaces_whole_and_sets_corrupt_files_aside() {
        let dir = dir("whole");
        let path = dir.join("x.json");
        write_atomic(&path, b"[1,2]").unwrap();
        write_atomic(&path, b"[3]").unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path), Some(vec![3]));
        std::fs::write(&path, b"{oops").unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path), None);
        assert!(dir.join("x.json.corrupt").exists());
        assert_eq!(read_json::<Vec<u32>>(&dir.join("missing.json")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_fifos_devices_and_huge_files_are_refused_and_modes_are_private() {
        let dir = dir("hostile");
        create_dir(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"[7]").unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(read(&link, MAX_STATE_BYTES).is_err(), "a link is not read");
        assert!(append(&link, b"x", false).is_err(), "nor appended through");
        let zero = dir.join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read(&zero, MAX_STATE_BYTES).is_err());
        let fifo = dir.join("fifo.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            read(&fifo, MAX_STATE_BYTES).is_err(),
            "and a FIFO does not block"
        );
        assert_eq!(read_json::<Vec<u32>>(&fifo), None);
        assert!(dir.join("fifo.json.corrupt").exists(), "set aside");
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; 100]).unwrap();
        assert!(read(&big, 99).is_err());
        assert!(read(&big, 100).unwrap().is_some());
        // Written through the link's name: the link is replaced, the victim untouched.
        write_atomic(&link, b"[1]").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"[7]");
        assert_eq!(std::fs::metadata(&link).unwrap().mode() & 0o777, 0o600);
        let sub = dir.join("a/b");
        write_atomic(&sub.join("s.json"), b"{}").unwrap();
        assert_eq!(std::fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
