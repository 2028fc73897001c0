//! The remediation audit trail: a write-ahead JSON-lines log in the state directory. The
//! intent is written before the host is touched and the outcome after, so an agent killed
//! in between leaves an intent without outcome to investigate, never a silent change.
//! Only the outcome is fsynced: a written intent survives the agent (it is in the page
//! cache), and what a power loss could lose with it, a restarted process or a cgroup
//! limit, does not survive a power loss either. That keeps a disk flush (5-20 ms here)
//! out of the time to recover.
use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

/// Past this size the log is rotated to `audit.jsonl.1` (one old file kept).
const MAX_BYTES: u64 = 8 << 20;

/// The one writer of the log: shared by every action (and the supervisor's thread), so
/// rotation and appends never interleave.
pub struct AuditLog {
    path: PathBuf,
    writing: std::sync::Mutex<()>,
}

/// One line of the log.
pub struct Entry<'a> {
    pub phase: &'a str,
    pub action: &'a str,
    pub rule: &'a str,
    pub cgroup: &'a str,
    pub mode: &'a str,
    pub detail: &'a str,
    pub result: &'a str,
}

impl AuditLog {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("remediation/audit.jsonl"),
            writing: std::sync::Mutex::default(),
        }
    }

    pub fn record(&self, e: &Entry, now: SystemTime) {
        let line = serde_json::json!({
            "time": crate::alert::rfc3339(now),
            "phase": e.phase,
            "action": e.action,
            "rule": e.rule,
            "cgroup": e.cgroup,
            "mode": e.mode,
            "detail": e.detail,
            "result": e.result,
        });
        if let Err(err) = self.append(&format!("{line}\n"), e.phase != "intent") {
            tracing::error!(path = %self.path.display(), error = %err, "cannot write the remediation audit log");
        }
    }

    fn append(&self, line: &str, sync: bool) -> std::io::Result<()> {
        let _writing = crate::sync::lock(&self.writing);
        // symlink_metadata: a planted link is not followed to decide the rotation.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.len() > MAX_BYTES) {
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
        }
        crate::host::durable::append(&self.path, line.as_bytes(), sync)
    }
}
