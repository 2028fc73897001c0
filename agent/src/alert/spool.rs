//! A bounded on-disk queue of notification batches for one Alertmanager, so that nothing is
//! lost while it is unreachable, also across an agent restart. Full: the oldest batch goes
//! (and is counted). Every change rewrites the file crash-safely (host/durable.rs).
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    max: usize,
    batches: VecDeque<String>,
    dropped: u64,
}

impl Spool {
    /// Opens (or starts) the spool at `path`; unreadable lines are skipped with a warning.
    pub fn open(path: PathBuf, max: usize) -> Self {
        let text = match crate::host::durable::read(&path, crate::host::durable::MAX_STATE_BYTES) {
            Ok(bytes) => String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned(),
            Err(e) => {
                let mut aside = path.as_os_str().to_os_string();
                aside.push(".corrupt");
                tracing::error!(path = %path.display(), error = %e, aside = ?aside, "cannot read the alert spool; set aside, starting it empty");
                let _ = std::fs::rename(&path, aside);
                String::new()
            }
        };
        let batches: VecDeque<String> = text
            .lines()
            .filter(|l| {
                let ok = serde_json::from_str::<serde_json::Value>(l).is_ok();
                if !ok {
                    tracing::warn!(path = %path.display(), "skipping a corrupt spooled alert batch");
                }
                ok
            })
            .map(str::to_string)
            .collect();
        if !batches.is_empty() {
            tracing::info!(path = %path.display(), batches = batches.len(), "undelivered alerts found in the spool");
        }
        Self {
            path,
            max,
            batches,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Batches dropped (oldest first) because the spool was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn front(&self) -> Option<&str> {
        self.batches.front().map(String::as_str)
    }

    pub fn push(&mut self, batch_json: String) -> std::io::Result<()> {
        if self.batches.len() >= self.max {
            self.batches.pop_front();
            self.dropped += 1;
        }
        self.batches.push_back(batch_json);
        self.persist()
    }

    pub fn pop_front(&mut self) -> std::io::Result<()> {
        self.batches.pop_front();
        self.persist()
    }

    fn persist(&self) -> std::io::Result<()> {
        if self.batches.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let mut text = String::new();
        for b in &self.batches {
            text.push_str(b);
            text.push('\n');
        }
        crate::host::durable::write_atomic(&self.path, text.as_bytes())
    }
}

/// The spool file of an endpoint: its URL made into a file name.
/// The spool file of the Alertmanager at `url`: a name no other URL shares.
pub fn path_for(dir: &Path, url: &str) -> PathBuf {
    dir.join(format!("{}.jsonl", crate::host::durable::file_name(url)))
}

/// The name agents before the injective one used: every other character as `_`, so
/// `http://am-1:9093` and `http://am_1:9093` shared one spool.
fn legacy_path(dir: &Path, url: &str) -> PathBuf {
    let name: String = url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    dir.join(format!("{name}.jsonl"))
}

/// Moves a spool an older agent left under its lossy name to `url`'s own name, so its
/// undelivered batches go out; only when no other configured URL (`urls`) could own it.
pub fn adopt_legacy(dir: &Path, url: &str, urls: &[&str]) {
    let (old, new) = (legacy_path(dir, url), path_for(dir, url));
    if std::fs::symlink_metadata(&new).is_ok() || std::fs::symlink_metadata(&old).is_err() {
        return;
    }
    if urls.iter().any(|u| *u != url && legacy_path(dir, u) == old) {
        tracing::warn!(spool = ?old, "an old alert spool may belong to several Alertmanagers; left as it is");
        return;
    }
    match std::fs::rename(&old, &new) {
        Ok(()) => tracing::info!(from = ?old, to = ?new, "alert spool renamed to its new name"),
        Err(e) => tracing::error!(from = ?old, error = %e, "cannot rename an old alert spool"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "gimbal-spool-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn survives_reopen_drops_oldest_when_full_and_removes_the_file_when_empty() {
        let d = dir();
        let path = path_for(&d, "http://127.0.0.1:9093");
        let mut s = Spool::open(path.clone(), 2);
        for i in 0..3 {
            s.push(format!("[{{\"n\":{i}}}]")).unwrap();
        }
        assert_eq!((s.len(), s.dropped()), (2, 1));
        let mut reopened = Spool::open(path.clone(), 2);
        assert_eq!(
            reopened.front(),
            Some("[{\"n\":1}]"),
            "oldest dropped, order kept across reopen"
        );
        reopened.pop_front().unwrap();
        reopened.pop_front().unwrap();
        assert!(reopened.is_empty() && !path.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn every_url_has_a_spool_of_its_own_and_old_spools_are_taken_over_when_unambiguous() {
        let d = dir();
        let (a, b) = ("http://am-1:9093", "http://am_1:9093");
        assert_ne!(path_for(&d, a), path_for(&d, b), "the old names were equal");
        assert_eq!(legacy_path(&d, a), legacy_path(&d, b));

        // Both configured: the old spool could be either's, so it stays.
        std::fs::write(legacy_path(&d, a), "[1]\n").unwrap();
        adopt_legacy(&d, a, &[a, b]);
        assert!(legacy_path(&d, a).exists() && !path_for(&d, a).exists());
        // Only one configured: it is that one's, batches and all.
        adopt_legacy(&d, a, &[a]);
        assert!(!legacy_path(&d, a).exists());
        assert_eq!(Spool::open(path_for(&d, a), 10).front(), Some("[1]"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_lines_are_skipped() {
        let d = dir();
        let path = d.join("x.jsonl");
        std::fs::write(&path, "[1]\nnot json\n[2]\n").unwrap();
        let s = Spool::open(path, 10);
        assert_eq!(s.len(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
