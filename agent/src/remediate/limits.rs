//! Temporary cgroup limits (CPU quota, `memory.high`, freezing) that are always undone. Each change is
//! recorded in a journal in the state directory *before* the cgroup file is written, so an
//! agent killed while a limit is active finds it at its next start and restores the value
//! it replaced.
use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::durable;

/// The CFS period the agent writes with a quota (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// At most this many CPUs' worth of time (0.2 = a fifth of one CPU).
    Cpu(f64),
    /// `memory.high` (cgroup v2): the kernel reclaims and slows the group above it,
    /// without an OOM kill.
    MemoryHigh(u64),
    /// `cgroup.freeze` (cgroup v2): every task of the group stops until thawed.
    Freeze,
}

/// One file write, with what it replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub cgroup: PathBuf,
    pub file: String,
    pub previous: String,
    pub applied: String,
}

/// The journal of limits in force: `<state_dir>/remediation/limits.json`.
pub struct LimitJournal {
    path: PathBuf,
    changes: Vec<Change>,
}

impl LimitJournal {
    /// Opens the journal; changes left by an agent that did not revert them are pending.
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join("remediation/limits.json");
        let changes = durable::read_json(&path).unwrap_or_default();
        Self { path, changes }
    }

    /// Limits written and not yet undone.
    pub fn pending(&self) -> &[Change] {
        &self.changes
    }

    /// Writes `limit` to `cgroup` (a cgroup directory of either hierarchy), journaled first.
    pub fn apply(&mut self, cgroup: &Path, limit: Limit) -> io::Result<Change> {
        let (file, applied) = target(cgroup, limit)?;
        let previous = read_value(&cgroup.join(&file))?;
        let change = Change {
            cgroup: cgroup.to_path_buf(),
            file,
            previous,
            applied,
        };
        // A second limit on the same file keeps the first one's original value.
        let original = self
            .changes
            .iter()
            .find(|c| c.cgroup == change.cgroup && c.file == change.file)
            .map(|c| c.previous.clone());
        self.changes
            .retain(|c| !(c.cgroup == change.cgroup && c.file == change.file));
        let mut entry = change.clone();
        entry.previous = original.unwrap_or(entry.previous);
        self.changes.push(entry.clone());
        self.save()?;
        std::fs::write(change.cgroup.join(&change.file), &change.applied)?;
        tracing::info!(cgroup = %change.cgroup.display(), file = %change.file, from = %entry.previous, to = %change.applied, "limit applied");
        Ok(entry)
    }

    /// Restores every journaled value of `cgroup`.
    pub fn revert(&mut self, cgroup: &Path) -> io::Result<()> {
        let (mine, rest): (Vec<_>, Vec<_>) =
            self.changes.drain(..).partition(|c| c.cgroup == cgroup);
        self.changes = rest;
        let mut result = Ok(());
        for change in mine {
            if let Err(e) = restore(&change) {
                // Kept, so the next start tries again.
                self.changes.push(change);
                result = Err(e);
            }
        }
        self.save()?;
        result
    }

    /// Restores everything pending (at start, after a crash, and at stop). Returns the
    /// changes that could not be restored, with why.
    pub fn revert_all(&mut self) -> Vec<(Change, io::Error)> {
        if self.changes.is_empty() {
            // Nothing to do, and nothing written: the state dir is created when needed.
            return Vec::new();
        }
        let mut failed = Vec::new();
        for change in std::mem::take(&mut self.changes) {
            if let Err(e) = restore(&change) {
                failed.push((change.clone(), e));
                self.changes.push(change);
            }
        }
        if let Err(e) = self.save() {
            tracing::error!(path = %self.path.display(), error = %e, "cannot save the limit journal");
        }
        failed
    }

    fn save(&self) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.changes).map_err(io::Error::other)?;
        durable::write_atomic(&self.path, &json)
    }
}

fn restore(change: &Change) -> io::Result<()> {
    if !change.cgroup.is_dir() {
        // The group is gone, and its limit with it.
        return Ok(());
    }
    std::fs::write(change.cgroup.join(&change.file), &change.previous)?;
    tracing::info!(cgroup = %change.cgroup.display(), file = %change.file, to = %change.previous, "limit reverted");
    Ok(())
}

/// The file and value for `limit` in this cgroup's hierarchy.
fn target(cgroup: &Path, limit: Limit) -> io::Result<(String, String)> {
    let unsupported = |what: &str| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: no {what} (controller not enabled here?)",
                cgroup.display()
            ),
        )
    };
    match limit {
        Limit::Cpu(cpus) => {
            let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1_000);
            if cgroup.join("cpu.max").is_file() {
                Ok(("cpu.max".into(), format!("{quota} {CPU_PERIOD_US}")))
            } else if cgroup.join("cpu.cfs_quota_us").is_file() {
                // v1 keeps the period in its own file; the default 100 ms is assumed.
                Ok(("cpu.cfs_quota_us".into(), quota.to_string()))
            } else {
                Err(unsupported("cpu.max or cpu.cfs_quota_us"))
            }
        }
        Limit::Freeze => {
            if cgroup.join("cgroup.freeze").is_file() {
                Ok(("cgroup.freeze".into(), "1".into()))
            } else {
                Err(unsupported("cgroup.freeze (cgroup v2 only)"))
            }
        }
        Limit::MemoryHigh(bytes) => {
            if cgroup.join("memory.high").is_file() {
                Ok(("memory.high".into(), bytes.to_string()))
            } else {
                Err(unsupported("memory.high (cgroup v2 only)"))
            }
        }
    }
}

fn read_value(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory that looks like a cgroup v2 group (plain files): the journal logic only.
    fn fake_group(dir: &Path) -> PathBuf {
        let g = dir.join("group");
        std::fs::create_dir_all(&g).unwrap();
        std::fs::write(g.join("cpu.max"), "max 100000\n").unwrap();
        g
    }

    #[test]
    fn a_second_limit_keeps_the_first_ones_original_value() {
        let dir = std::env::temp_dir().join(format!("gimbal-limits-{}", std::process::id()));
        let g = fake_group(&dir);
        let mut j = LimitJournal::open(&dir);
        j.apply(&g, Limit::Cpu(0.5)).unwrap();
        j.apply(&g, Limit::Cpu(0.2)).unwrap();
        assert_eq!(
            std::fs::read_to_string(g.join("cpu.max")).unwrap(),
            "20000 100000"
        );
        assert_eq!(j.pending().len(), 1);
        // What a restarted agent sees, and restores.
        let mut again = LimitJournal::open(&dir);
        assert_eq!(again.pending()[0].previous, "max 100000");
        assert!(again.revert_all().is_empty());
        assert_eq!(
            std::fs::read_to_string(g.join("cpu.max")).unwrap(),
            "max 100000"
        );
        assert!(LimitJournal::open(&dir).pending().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
