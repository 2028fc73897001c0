//! Crash-safe file replacement for the agent's state (target histories, alert states,
//! alert spools): after a crash the file holds either the old or the new contents, whole.
use std::{io::Write as _, path::Path};

/// Writes `bytes` to a temp file beside `path`, fsyncs it, renames it over `path`, and
/// fsyncs the directory so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a JSON state file; a missing file is `None`, an unreadable one is moved aside as
/// `<name>.corrupt` (and logged) so it is never silently overwritten.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut aside = path.as_os_str().to_os_string();
            aside.push(".corrupt");
            tracing::error!(path = %path.display(), error = %e, aside = ?aside, "unreadable state file; starting afresh");
            let _ = std::fs::rename(path, aside);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_sets_corrupt_files_aside() {
        let dir = std::env::temp_dir().join(format!("gimbal-durable-{}", std::process::id()));
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
}
