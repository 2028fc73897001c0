//! Target histories on disk, so a 30-day availability survives agent restarts and upgrades.
//! One JSON file per target, replaced crash-safely (temp file, fsync, rename, fsync dir).
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use super::TargetState;

fn file(dir: &Path, target: &str) -> PathBuf {
    let name: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.json"))
}

/// The stored history of `target`, or an empty one (logged) if there is none or it is
/// unreadable; a corrupt file is kept aside as `.corrupt`, never silently overwritten.
pub fn load(dir: &Path, target: &str) -> TargetState {
    let path = file(dir, target);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(h) => h,
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                tracing::error!(path = %path.display(), error = %e, aside = %aside.display(), "unreadable target history; starting a new one");
                let _ = std::fs::rename(&path, aside);
                TargetState::default()
            }
        },
        Err(_) => TargetState::default(),
    }
}

pub fn save(dir: &Path, target: &str, state: &TargetState) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = file(dir, target);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(state).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::BTreeMap, time::Duration};

    #[test]
    fn round_trips_and_sets_corrupt_files_aside() {
        let dir = std::env::temp_dir().join(format!("gimbal-store-{}", std::process::id()));
        let mut s = TargetState::default();
        s.observe(
            1_000,
            &BTreeMap::from([("a".to_string(), true)]),
            Duration::from_secs(10),
        );
        s.observe(
            5_000,
            &BTreeMap::from([("a".to_string(), false)]),
            Duration::from_secs(10),
        );
        save(&dir, "trainer/a", &s).unwrap();
        assert_eq!(load(&dir, "trainer/a"), s);
        std::fs::write(file(&dir, "bad"), b"{not json").unwrap();
        assert_eq!(load(&dir, "bad"), TargetState::default());
        assert!(file(&dir, "bad").with_extension("json.corrupt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
