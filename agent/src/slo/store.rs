//! Target histories on disk, so a 30-day availability survives agent restarts and upgrades:
//! one JSON file per target, replaced crash-safely.
use std::path::{Path, PathBuf};

use super::TargetState;
use crate::durable;

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

/// The stored history of `target`, or an empty one if there is none (or it was corrupt,
/// in which case it is set aside and logged).
pub fn load(dir: &Path, target: &str) -> TargetState {
    durable::read_json(&file(dir, target)).unwrap_or_default()
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
        assert_eq!(load(&dir, "trainer/a"), s);
        assert_eq!(load(&dir, "absent"), TargetState::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
