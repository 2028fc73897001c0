//! The kernel log reader: a thread of its own, blocking on /dev/kmsg (never on the tokio
//! loop), that picks the NVRM Xid records, attributes each to the cgroup of its pid, and
//! reports them in batches.
//!
//! Never twice: the last sequence number read is saved (with the boot id, since sequence
//! numbers restart at boot) in `<state_dir>/gpu/kmsg.json` before a batch holding XIDs is
//! reported, so a crash loses at most that batch and never counts it again. A first start
//! (no saved position) skips the backlog; a restart in the same boot reads the buffer from
//! its oldest record and skips what was read; a start in a new boot reads all of it.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{xid, GpuEvent, Reports, XidRecord, KMSG};
use crate::{
    config::GpuConfig,
    host::{
        durable,
        kmsg::{boot_id, Cursor, Kmsg, Read, Verdict, FACILITY_KERNEL},
        procfs,
    },
};

/// Records read into one batch at most before it is reported.
pub const MAX_BATCH: usize = 256;

/// The saved position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    boot_id: String,
    seq: u64,
}

/// What the reader was given.
#[derive(Debug, Clone)]
pub struct Options {
    pub path: PathBuf,
    pub user_records: bool,
    pub state_file: PathBuf,
    pub proc_root: PathBuf,
}

impl Options {
    pub fn new(config: &GpuConfig, state_dir: &Path) -> Self {
        Self {
            path: config.kmsg_path.clone(),
            user_records: config.kmsg_user_records,
            state_file: state_dir.join("gpu").join("kmsg.json"),
            proc_root: PathBuf::from(procfs::ROOT),
        }
    }
}

/// Starts the reader thread; it reports `Attached` (true, or false with the reason
/// logged once) first. Returns whether the thread started.
pub fn start(options: Options, reports: Reports) -> bool {
    let thread_reports = reports.clone();
    let spawned = std::thread::Builder::new()
        .name("gpu-kmsg".into())
        .spawn(move || run(&options, &thread_reports));
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "GPU source kmsg not attached: cannot start its thread");
            let _ = reports.try_send(vec![attached(false)]);
            false
        }
    }
}

fn attached(attached: bool) -> GpuEvent {
    GpuEvent::Attached {
        source: KMSG,
        attached,
    }
}

fn run(o: &Options, reports: &Reports) {
    let mut kmsg = match Kmsg::open(&o.path) {
        Ok(k) => k,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (reading the kernel log needs CAP_SYSLOG where kernel.dmesg_restrict = 1)"
            } else {
                ""
            };
            tracing::error!(path = %o.path.display(), error = %e, "GPU source kmsg not attached: cannot open the kernel log{hint}");
            let _ = reports.blocking_send(vec![attached(false)]);
            return;
        }
    };
    let boot = boot_id(&o.proc_root).unwrap_or_default();
    let saved: Option<Saved> = durable::read_json(&o.state_file);
    let cursor = match saved {
        Some(s) if s.boot_id == boot && !boot.is_empty() => Cursor::resume_after(s.seq),
        // Another boot: every record held is this boot's, none read yet.
        Some(_) => Cursor::fresh(),
        None => {
            if let Err(e) = kmsg.seek_end() {
                tracing::error!(path = %o.path.display(), error = %e, "GPU source kmsg not attached: cannot skip the backlog");
                let _ = reports.blocking_send(vec![attached(false)]);
                return;
            }
            Cursor::fresh()
        }
    };
    tracing::info!(path = %o.path.display(), resume_after = ?cursor.last(), "GPU source kmsg attached");
    if reports.blocking_send(vec![attached(true)]).is_err() {
        return;
    }
    let mut reader = Reader {
        kmsg,
        cursor,
        user_records: o.user_records,
        proc_root: o.proc_root.clone(),
        backlog_done: false,
        newest: None,
        reported_drops: 0,
    };
    loop {
        let batch = match reader.batch() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(path = %o.path.display(), error = %e, "GPU source kmsg stopped: reading the kernel log failed");
                let _ = reports.blocking_send(vec![attached(false)]);
                return;
            }
        };
        if batch.has_xids || batch.forgot_saved {
            if let Some(seq) = reader.cursor.last() {
                let state = Saved {
                    boot_id: boot.clone(),
                    seq,
                };
                let saved = serde_json::to_vec(&state)
                    .map_err(std::io::Error::other)
                    .and_then(|b| durable::write_atomic(&o.state_file, &b));
                if let Err(e) = saved {
                    tracing::error!(path = %o.state_file.display(), error = %e, "cannot save the kernel log position; a restart may count these XIDs again");
                }
            }
        }
        if !batch.events.is_empty() && reports.blocking_send(batch.events).is_err() {
            return; // the agent is stopping
        }
    }
}

struct Batch {
    events: Vec<GpuEvent>,
    has_xids: bool,
    /// The saved position was found to be from elsewhere and forgotten.
    forgot_saved: bool,
}

struct Reader {
    kmsg: Kmsg,
    cursor: Cursor,
    user_records: bool,
    proc_root: PathBuf,
    backlog_done: bool,
    /// The newest sequence number seen while reading the backlog.
    newest: Option<u64>,
    reported_drops: u64,
}

impl Reader {
    /// Reads at least one record (blocking) and then what is ready, up to MAX_BATCH.
    fn batch(&mut self) -> std::io::Result<Batch> {
        let mut b = Batch {
            events: Vec::new(),
            has_xids: false,
            forgot_saved: false,
        };
        let mut malformed = 0;
        for n in 0..MAX_BATCH {
            let ready = self.kmsg.ready(0)?;
            if !ready && !self.backlog_done {
                self.backlog_done = true;
                if self.cursor.backlog_read(self.newest) {
                    tracing::warn!(newest = ?self.newest, "the saved kernel log position is past every record held: not this boot's; reading on from here");
                    b.forgot_saved = true;
                }
            }
            if !ready && n > 0 {
                break;
            }
            match self.kmsg.read()? {
                Read::Record(r) => {
                    if !self.backlog_done {
                        self.newest = self.newest.max(Some(r.seq));
                    }
                    if self.cursor.take(r.seq) == Verdict::Seen {
                        continue;
                    }
                    if r.facility != FACILITY_KERNEL && !self.user_records {
                        continue;
                    }
                    if let Some(x) = xid::parse(&r.text) {
                        b.has_xids = true;
                        b.events.push(GpuEvent::Xid(self.attribute(x, r.ts_usec)));
                    }
                }
                Read::Overrun => {} // the gap is counted by the cursor at the next record
                Read::Malformed(e) => {
                    malformed += 1;
                    tracing::debug!(error = %e, "a kernel log record that does not parse");
                }
            }
        }
        let dropped = self.cursor.dropped - self.reported_drops;
        if dropped > 0 {
            self.reported_drops = self.cursor.dropped;
            tracing::warn!(
                dropped,
                "kernel log records were overwritten before they were read"
            );
            b.events.push(GpuEvent::Dropped(dropped));
        }
        if malformed > 0 {
            b.events.push(GpuEvent::Malformed(malformed));
        }
        Ok(b)
    }

    fn attribute(&self, x: xid::Xid, ts_usec: u64) -> XidRecord {
        let cgroup = x
            .pid
            .and_then(|pid| procfs::cgroup_v2_path(&self.proc_root, pid).ok().flatten())
            .map(|p| {
                let rel = p.trim_start_matches('/');
                Arc::from(if rel.is_empty() { "/" } else { rel })
            })
            .unwrap_or_else(|| Arc::from("unknown"));
        XidRecord {
            xid: x,
            cgroup,
            at: logged_at(ts_usec),
        }
    }
}

/// The wall-clock time of a record logged `ts_usec` after boot: now, less how long ago
/// that was on the monotonic clock (which the kernel log's clock follows); never later
/// than now.
fn logged_at(ts_usec: u64) -> SystemTime {
    let now = SystemTime::now();
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec that lives on this stack frame.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return now;
    }
    let mono_us = (t.tv_sec as u64).saturating_mul(1_000_000) + (t.tv_nsec as u64) / 1000;
    let ago = Duration::from_micros(mono_us.saturating_sub(ts_usec));
    now.checked_sub(ago).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_logged_just_now_is_dated_now_and_a_future_one_never_later() {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec that lives on this stack frame.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
        assert_eq!(r, 0);
        let now_us = t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000;
        let at = logged_at(now_us);
        let age = SystemTime::now().duration_since(at).unwrap();
        assert!(age < Duration::from_secs(2), "{age:?}");
        let past = logged_at(now_us.saturating_sub(60_000_000));
        let age = SystemTime::now().duration_since(past).unwrap();
        assert!(
            age >= Duration::from_secs(59) && age < Duration::from_secs(62),
            "{age:?}"
        );
        assert!(logged_at(u64::MAX) <= SystemTime::now());
    }
}
