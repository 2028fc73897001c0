//! Temporary cgroup limits (CPU quota, `memory.high`, freezing) that are always undone. Each change is
//! recorded in a journal in the state directory *before* the cgroup file is written, so an
//! agent killed while a limit is active finds it at its next start and restores the value
//! it replaced. The cgroup of a systemd unit is changed through systemd
//! (`SetUnitProperties`, runtime only; `FreezeUnit`), so systemd's idea of the unit stays
//! true and systemd does not rewrite the files behind the agent's back; other cgroups by
//! writing their files.
use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::systemd::Systemd;
use crate::host::durable;

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
    /// Set when made through systemd: the unit, and `file` is the property
    /// (`CPUQuotaPerSecUSec`, `MemoryHigh`, `Freeze`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The journal of limits in force: `<state_dir>/remediation/limits.json`.
pub struct LimitJournal {
    path: PathBuf,
    changes: Vec<Change>,
    /// Journaled changes refused at open (a cgroup outside the mounts, a file that is
    /// not a limit), with why: never written.
    refused: Vec<(Change, String)>,
    /// Connected when first needed; None inside when systemd is not PID 1.
    systemd: Option<Option<Systemd>>,
}

impl LimitJournal {
    /// Opens the journal, confined to this host's cgroup mounts (see [`Self::open_under`]).
    pub fn open(state_dir: &Path) -> Self {
        let cgroup2 = std::fs::read_to_string(crate::host::mountinfo::HOST)
            .ok()
            .and_then(|m| crate::host::cgroupfs::find_cgroup2_mount(&m));
        let v1_cpu = Path::new("/sys/fs/cgroup/cpu");
        let mut roots: Vec<&Path> = cgroup2.iter().map(PathBuf::as_path).collect();
        if v1_cpu.join("cpu.cfs_quota_us").is_file() {
            roots.push(v1_cpu);
        }
        Self::open_under(state_dir, &roots)
    }

    /// Opens the journal; changes left by an agent that did not revert them are pending.
    /// `roots` are the cgroup mounts limits are written under: a journaled change that
    /// names anything else is refused and logged, since the journal is a file on disk
    /// and restoring it writes as root.
    pub fn open_under(state_dir: &Path, roots: &[&Path]) -> Self {
        let path = state_dir.join("remediation/limits.json");
        let stored: Vec<Change> = durable::read_json(&path).unwrap_or_default();
        let (mut changes, mut refused) = (Vec::new(), Vec::new());
        for change in stored {
            match validate(&change, roots) {
                Ok(()) => changes.push(change),
                Err(why) => {
                    tracing::error!(journal = %path.display(), cgroup = %change.cgroup.display(), file = %change.file, why, "refusing a journaled limit");
                    refused.push((change, why));
                }
            }
        }
        Self {
            path,
            changes,
            refused,
            systemd: None,
        }
    }

    /// Journaled changes refused at open, with why.
    pub fn refused(&self) -> &[(Change, String)] {
        &self.refused
    }

    /// The systemd unit that owns this cgroup (path relative to its hierarchy's root),
    /// when systemd is PID 1 and one does.
    pub fn unit_for(&mut self, relative: &str) -> Option<String> {
        let systemd = self.systemd()?;
        match systemd.unit_for_cgroup(relative) {
            Ok(unit) => unit,
            Err(e) => {
                tracing::warn!(cgroup = relative, error = %format!("{e:#}"), "cannot ask systemd whose cgroup this is; writing its files");
                None
            }
        }
    }

    fn systemd(&mut self) -> Option<&Systemd> {
        self.systemd
            .get_or_insert_with(|| {
                Systemd::connect().unwrap_or_else(|e| {
                    tracing::warn!(error = %format!("{e:#}"), "systemd is PID 1 but its bus does not answer; cgroup files are written directly");
                    None
                })
            })
            .as_ref()
    }

    /// Limits written and not yet undone.
    pub fn pending(&self) -> &[Change] {
        &self.changes
    }

    /// Sets `limit` on `cgroup` (a cgroup directory of either hierarchy), journaled first:
    /// through systemd when `unit` owns it, else by writing the cgroup's file.
    pub fn apply(&mut self, cgroup: &Path, limit: Limit, unit: Option<&str>) -> io::Result<Change> {
        let (file, previous, applied) = match unit {
            Some(unit) => self.unit_values(unit, limit)?,
            None => {
                let (file, applied) = target(cgroup, limit)?;
                let previous = read_value(&cgroup.join(&file))?;
                (file, previous, applied)
            }
        };
        let change = Change {
            cgroup: cgroup.to_path_buf(),
            file,
            previous,
            applied,
            unit: unit.map(String::from),
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
        self.write(&change, &change.applied)?;
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
            if let Err(e) = self.restore(&change) {
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
            if let Err(e) = self.restore(&change) {
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

impl LimitJournal {
    /// (property, current value, value to set) of `limit` for a systemd unit.
    fn unit_values(&mut self, unit: &str, limit: Limit) -> io::Result<(String, String, String)> {
        let systemd = self
            .systemd()
            .ok_or_else(|| io::Error::other("systemd is gone"))?;
        let read = |r: anyhow::Result<u64>| r.map_err(|e| io::Error::other(format!("{e:#}")));
        Ok(match limit {
            Limit::Cpu(cpus) => (
                "CPUQuotaPerSecUSec".into(),
                read(systemd.cpu_quota_per_sec_usec(unit))?.to_string(),
                ((cpus * 1e6) as u64).max(10_000).to_string(),
            ),
            Limit::MemoryHigh(bytes) => (
                "MemoryHigh".into(),
                read(systemd.memory_high(unit))?.to_string(),
                bytes.to_string(),
            ),
            Limit::Freeze => ("Freeze".into(), "0".into(), "1".into()),
        })
    }

    /// Sets a journaled value: the unit property, or the cgroup file.
    fn write(&mut self, change: &Change, value: &str) -> io::Result<()> {
        let Some(unit) = change.unit.clone() else {
            return write_file(&change.cgroup.join(&change.file), value);
        };
        let systemd = self
            .systemd()
            .ok_or_else(|| io::Error::other("systemd is gone"))?;
        let number = || value.parse::<u64>().map_err(io::Error::other);
        let done = match change.file.as_str() {
            "CPUQuotaPerSecUSec" => systemd.set_cpu_quota_per_sec_usec(&unit, number()?),
            "MemoryHigh" => systemd.set_memory_high(&unit, number()?),
            "Freeze" if value == "1" => systemd.freeze_unit(&unit),
            "Freeze" => systemd.thaw_unit(&unit),
            other => return Err(io::Error::other(format!("unknown unit property {other}"))),
        };
        done.map_err(|e| io::Error::other(format!("{e:#}")))
    }

    fn restore(&mut self, change: &Change) -> io::Result<()> {
        // A unit's property outlives its cgroup (the unit may start again) and is set
        // back; a plain group that is gone, or a unit's freeze, went with the cgroup.
        let outlives = change.unit.is_some() && change.file != "Freeze";
        if !outlives && !change.cgroup.is_dir() {
            return Ok(());
        }
        self.write(change, &change.previous)?;
        tracing::info!(cgroup = %change.cgroup.display(), file = %change.file, to = %change.previous, "limit reverted");
        Ok(())
    }
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

/// The files and unit properties a limit may be.
const LIMIT_FILES: [&str; 4] = [
    "cpu.max",
    "cpu.cfs_quota_us",
    "cgroup.freeze",
    "memory.high",
];
const UNIT_PROPERTIES: [&str; 3] = ["CPUQuotaPerSecUSec", "MemoryHigh", "Freeze"];

/// Why a journaled change may not be restored: its file must be a limit file (or unit
/// property) and its cgroup a cgroup under one of `roots`, reached without `..` or links.
/// A cgroup that is gone is accepted (restoring it is a no-op, or goes through systemd).
fn validate(change: &Change, roots: &[&Path]) -> Result<(), String> {
    let names: &[&str] = match change.unit {
        Some(_) => &UNIT_PROPERTIES,
        None => &LIMIT_FILES,
    };
    if !names.contains(&change.file.as_str()) {
        return Err(format!("{:?} is not a limit this agent sets", change.file));
    }
    let Some(root) = roots.iter().find(|r| change.cgroup.starts_with(r)) else {
        return Err(format!(
            "{} is not under a cgroup mount ({roots:?})",
            change.cgroup.display()
        ));
    };
    match crate::targets::confine_absolute(root, &change.cgroup) {
        Ok(_) => Ok(()),
        Err(crate::targets::PathError::NotCgroup { .. })
            if std::fs::symlink_metadata(&change.cgroup).is_err() =>
        {
            // Gone: but still only a plain path below the mount.
            let rel = change.cgroup.strip_prefix(root).unwrap_or(&change.cgroup);
            crate::targets::segments(&rel.to_string_lossy())
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Writes a cgroup file that must exist, never through a link.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(value.as_bytes())
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
        std::fs::write(g.join("cgroup.procs"), "").unwrap();
        g
    }

    #[test]
    fn a_second_limit_keeps_the_first_ones_original_value() {
        let dir = std::env::temp_dir().join(format!("gimbal-limits-{}", std::process::id()));
        let g = fake_group(&dir);
        let mut j = LimitJournal::open_under(&dir, &[&dir]);
        j.apply(&g, Limit::Cpu(0.5), None).unwrap();
        j.apply(&g, Limit::Cpu(0.2), None).unwrap();
        assert_eq!(
            std::fs::read_to_string(g.join("cpu.max")).unwrap(),
            "20000 100000"
        );
        assert_eq!(j.pending().len(), 1);
        // What a restarted agent sees, and restores.
        let mut again = LimitJournal::open_under(&dir, &[&dir]);
        assert_eq!(again.pending()[0].previous, "max 100000");
        assert!(again.revert_all().is_empty());
        assert_eq!(
            std::fs::read_to_string(g.join("cpu.max")).unwrap(),
            "max 100000"
        );
        assert!(LimitJournal::open_under(&dir, &[&dir]).pending().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journaled_limit_outside_the_cgroup_mount_is_refused_and_never_written() {
        let dir = std::env::temp_dir().join(format!("gimbal-limits-bad-{}", std::process::id()));
        let mount = dir.join("mount");
        let g = fake_group(&mount);
        let outside = fake_group(&dir.join("elsewhere"));
        std::os::unix::fs::symlink(&outside, mount.join("link")).unwrap();
        let change = |cgroup: PathBuf, file: &str| Change {
            cgroup,
            file: file.into(),
            previous: "owned".into(),
            applied: "1".into(),
            unit: None,
        };
        let journal = vec![
            change(outside.clone(), "cpu.max"),
            change(mount.join("group/../../elsewhere/group"), "cpu.max"),
            change(mount.join("link"), "cpu.max"),
            change(g.clone(), "../../elsewhere/group/cpu.max"),
            change(g.clone(), "cpu.max"),
        ];
        durable::write_atomic(
            &dir.join("remediation/limits.json"),
            &serde_json::to_vec(&journal).unwrap(),
        )
        .unwrap();
        let mut j = LimitJournal::open_under(&dir, &[&mount]);
        assert_eq!(j.refused().len(), 4, "{:?}", j.refused());
        assert_eq!(j.pending(), &journal[4..]);
        assert!(j.revert_all().is_empty());
        assert_eq!(
            std::fs::read_to_string(outside.join("cpu.max")).unwrap(),
            "max 100000\n",
            "never written"
        );
        assert_eq!(std::fs::read_to_string(g.join("cpu.max")).unwrap(), "owned");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
