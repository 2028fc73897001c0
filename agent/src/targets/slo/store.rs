//! Target histories on disk, so a 30-day availability survives agent restarts and upgrades:
//! one JSON file per target, replaced crash-safely.
//!
//! File names percent-encode every byte but `[A-Za-z0-9_-]` (and so `%` itself), which is
//! injective: `col/x` is `col%2Fx.json`, `col_x` is `col_x.json`. Older agents mapped
//! every other character to `_` (so both were `col_x.json`); such a file is still taken
//! over (renamed to the new name) by the one target it can belong to, when no other
//! configured target could claim it.
use std::path::{Path, PathBuf};

use super::TargetState;
use crate::host::durable;

fn file(dir: &Path, target: &str) -> PathBuf {
    dir.join(format!("{}.json", durable::file_name(target)))
}

/// The name agents before the injective mapping used.
fn legacy_file(dir: &Path, target: &str) -> PathBuf {
    let name: String = target
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '_',
            },
        )
        .collect();
    dir.join(format!("{name}.json"))
}

/// The old-style file `target` may take over: only one that no other configured target
/// (`known`) could own under either mapping.
fn unambiguous_legacy(dir: &Path, target: &str, known: &[&str]) -> Option<PathBuf> {
    let old = legacy_file(dir, target);
    if old == file(dir, target) {
        return None; // the same file: nothing to migrate
    }
    let claimed = known
        .iter()
        .filter(|t| **t != target)
        .any(|t| legacy_file(dir, t) == old || file(dir, t) == old);
    if claimed {
        tracing::warn!(target, old = %old.display(), "an old state file may belong to another target too; not taken over");
        return None;
    }
    Some(old)
}

/// The stored history of `target`, or an empty one if there is none (or it was corrupt,
/// in which case it is set aside and logged). `known`: every configured target's name,
/// for telling whether an old-style file is `target`'s alone.
pub fn load(dir: &Path, target: &str, known: &[&str]) -> TargetState {
    let path = file(dir, target);
    if std::fs::symlink_metadata(&path).is_err() {
        if let Some(old) = unambiguous_legacy(dir, target, known) {
            if std::fs::symlink_metadata(&old).is_ok() {
                // A rename: the history is never in two files, nor in none.
                match std::fs::rename(&old, &path) {
                    Ok(()) => {
                        tracing::info!(target, from = %old.display(), to = %path.display(), "state file renamed to its new name")
                    }
                    Err(e) => {
                        tracing::error!(target, from = %old.display(), error = %e, "cannot rename the old state file")
                    }
                }
            }
        }
    }
    durable::read_json(&path).unwrap_or_default()
}

pub fn save(dir: &Path, target: &str, state: &TargetState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    durable::write_atomic(&file(dir, target), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::BTreeMap, time::Duration};

    #[test]
    fn round_trips() {
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
        assert_eq!(load(&dir, "trainer/a", &[]), s);
        assert_eq!(load(&dir, "absent", &[]), TargetState::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_injective_and_old_files_are_taken_over_only_when_unambiguous() {
        let d = Path::new("/s");
        assert_eq!(file(d, "col/x"), d.join("col%2Fx.json"));
        assert_eq!(file(d, "col_x"), d.join("col_x.json"));
        assert_eq!(file(d, "a%2Fb"), d.join("a%252Fb.json"), "% is escaped too");
        assert_eq!(file(d, "é"), d.join("%C3%A9.json"));
        assert_ne!(file(d, "col/x"), file(d, "col.x"));

        let dir = std::env::temp_dir().join(format!("gimbal-store-old-{}", std::process::id()));
        let mut s = TargetState::default();
        s.observe(
            1_000,
            &BTreeMap::from([("a".to_string(), false)]),
            Duration::from_secs(10),
        );
        // Written by an older agent for "col/x": alone, it is col/x's.
        durable::write_atomic(&dir.join("col_x.json"), &serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(load(&dir, "col/x", &["col/x", "other"]), s);
        assert!(dir.join("col%2Fx.json").exists() && !dir.join("col_x.json").exists());
        // With col_x configured too, it could be either's: col_x keeps it, col/x starts empty.
        std::fs::remove_file(dir.join("col%2Fx.json")).unwrap();
        durable::write_atomic(&dir.join("col_x.json"), &serde_json::to_vec(&s).unwrap()).unwrap();
        let known = ["col/x", "col_x"];
        assert_eq!(load(&dir, "col/x", &known), TargetState::default());
        assert_eq!(load(&dir, "col_x", &known), s);
        // And each saves to its own file.
        save(&dir, "col/x", &TargetState::default()).unwrap();
        assert_eq!(load(&dir, "col_x", &known), s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
