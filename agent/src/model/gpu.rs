//! GPU faults: XIDs as monotonic counters per GPU and per cgroup (never a last value, so
//! two XIDs between scrapes are two), the kernel log records lost, which GPU sources are
//! attached, and the recent XIDs the rules count within their windows. Pure: the time of
//! each record comes with it.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{Family, Fold};

/// Recent XIDs kept for the rules' windows: a flood beyond this forgets the oldest (the
/// counters stay exact).
pub const RECENT_MAX: usize = 4096;
/// The longest window a rule may count over.
pub const RECENT_AGE: Duration = Duration::from_secs(24 * 3600);

/// One XID record, attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidSeen {
    /// The PCI bus id as the driver printed it ("0000:3b:00").
    pub gpu: Arc<str>,
    pub xid: u32,
    /// The catalog's action ("reset-gpu").
    pub action: &'static str,
    /// The cgroup of the record's pid ("/" for the root), "unknown" when the record names
    /// no process or it was gone before it could be read.
    pub cgroup: Arc<str>,
    pub pid: Option<u32>,
    pub name: Option<String>,
    pub detail: String,
    pub at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct GpuModel {
    /// [gpu, xid, action]
    pub xid_errors: Family<3, u64>,
    /// [cgroup, xid, action]
    pub xid_by_cgroup: Family<3, u64>,
    /// Kernel log records lost before they were read (EPIPE gaps).
    pub kmsg_dropped: u64,
    /// Kernel log records that did not parse as records at all.
    pub kmsg_malformed: u64,
    /// Source ("kmsg", "nvml") -> attached.
    pub attached: BTreeMap<&'static str, bool>,
    /// Recent XIDs, oldest first, at most RECENT_MAX and RECENT_AGE old.
    pub recent: VecDeque<XidSeen>,
    /// What NVML last read of each GPU (empty without NVML).
    pub devices: Vec<super::gpu_devices::Device>,
    /// NVML's XID and ECC events.
    pub nvml_events: super::gpu_devices::NvmlEvents,
}

impl GpuModel {
    pub fn new(limits: impl Into<super::Limits>) -> Self {
        let limits = &limits.into();
        // `xid` is a number below 10,000 and `action` one of ten: kept exact when a flood
        // of bus ids or cgroups folds, with a budget of their own.
        let fold = Fold {
            keep: [false, true, true],
            unbounded: true,
        };
        Self {
            xid_errors: Family::new(limits, 1, fold),
            xid_by_cgroup: Family::new(limits, 1, fold),
            kmsg_dropped: 0,
            kmsg_malformed: 0,
            attached: BTreeMap::new(),
            recent: VecDeque::new(),
            devices: Vec::new(),
            nvml_events: Default::default(),
        }
    }

    /// Counts one XID record.
    pub fn apply_xid(&mut self, x: XidSeen) {
        let xid: Arc<str> = Arc::from(x.xid.to_string());
        let action: Arc<str> = Arc::from(x.action);
        *self
            .xid_errors
            .entry([x.gpu.clone(), xid.clone(), action.clone()]) += 1;
        *self.xid_by_cgroup.entry([x.cgroup.clone(), xid, action]) += 1;
        let at = x.at;
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        // Kept in time order (a record read late with an earlier time goes where it fits).
        let pos = self.recent.partition_point(|r| r.at <= at);
        self.recent.insert(pos, x);
    }

    /// Forgets recent records older than any window.
    pub fn prune(&mut self, now: SystemTime) {
        while self
            .recent
            .front()
            .is_some_and(|r| now.duration_since(r.at).unwrap_or_default() > RECENT_AGE)
        {
            self.recent.pop_front();
        }
    }

    /// The latest XID that hit `pid` (or, for a record that names no process, `cgroup`)
    /// within `window` before `at`: the cause an exit is joined to ("2 s after XID 79").
    pub fn xid_before(
        &self,
        pid: u32,
        cgroup: &str,
        at: SystemTime,
        window: Duration,
    ) -> Option<&XidSeen> {
        let since = at.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        self.recent
            .iter()
            .rev()
            .skip_while(|r| r.at > at)
            .take_while(|r| r.at >= since)
            .find(|r| match r.pid {
                Some(p) => p == pid,
                None => &*r.cgroup == cgroup,
            })
    }

    pub fn set_attached(&mut self, source: &'static str, attached: bool) {
        self.attached.insert(source, attached);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(gpu: &str, xid: u32, cgroup: &str, at_s: u64) -> XidSeen {
        XidSeen {
            gpu: Arc::from(gpu),
            xid,
            action: "reset-gpu",
            cgroup: Arc::from(cgroup),
            pid: None,
            name: None,
            detail: String::new(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(at_s),
        }
    }

    #[test]
    fn every_record_counts_per_gpu_and_per_cgroup() {
        let mut m = GpuModel::new(10);
        m.apply_xid(seen("0000:3b:00", 79, "a", 10));
        m.apply_xid(seen("0000:3b:00", 79, "b", 11));
        m.apply_xid(seen("0000:3b:00", 64, "a", 12));
        let k = |a: &str, b: &str| [Arc::from(a), Arc::from(b), Arc::from("reset-gpu")];
        assert_eq!(m.xid_errors.series[&k("0000:3b:00", "79")], 2);
        assert_eq!(m.xid_errors.series[&k("0000:3b:00", "64")], 1);
        assert_eq!(m.xid_by_cgroup.series[&k("a", "79")], 1);
        assert_eq!(m.xid_by_cgroup.series[&k("b", "79")], 1);
        assert_eq!(m.recent.len(), 3);
    }

    #[test]
    fn an_exit_joins_the_latest_xid_of_its_pid_within_the_window() {
        let mut m = GpuModel::new(10);
        let mut on_pid = |xid, pid, at_s| {
            let mut s = seen("0000:3b:00", xid, "job", at_s);
            s.pid = pid;
            m.apply_xid(s);
        };
        on_pid(13, Some(7), 100);
        on_pid(79, Some(7), 105);
        on_pid(48, Some(8), 106);
        on_pid(94, None, 90);
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let w = Duration::from_secs(10);
        assert_eq!(m.xid_before(7, "job", t(107), w).map(|x| x.xid), Some(79));
        assert_eq!(m.xid_before(7, "job", t(104), w).map(|x| x.xid), Some(13));
        assert_eq!(m.xid_before(7, "job", t(116), w), None, "past the window");
        assert_eq!(m.xid_before(9, "job", t(107), w), None, "another pid's XID");
        assert_eq!(
            m.xid_before(9, "job", t(95), w).map(|x| x.xid),
            Some(94),
            "a record without a pid hits its cgroup"
        );
        assert_eq!(m.xid_before(9, "other", t(95), w), None);
    }

    #[test]
    fn a_flood_of_bus_ids_folds_keeping_the_xid_and_recent_stays_bounded() {
        let mut m = GpuModel::new(2);
        for i in 0..(RECENT_MAX as u64 + 10) {
            m.apply_xid(seen(&format!("{i:04x}:00:00"), 79, "c", i));
        }
        assert_eq!(m.xid_errors.series.len(), 3, "two admitted and one folded");
        let other = [Arc::from("other"), Arc::from("79"), Arc::from("reset-gpu")];
        assert_eq!(m.xid_errors.series[&other], RECENT_MAX as u64 + 8);
        assert_eq!(
            m.xid_errors.folded(),
            RECENT_MAX as u64 + 8,
            "every refused bus id"
        );
        assert_eq!(m.recent.len(), RECENT_MAX);
        assert_eq!(
            m.recent.front().unwrap().at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(10)
        );
        m.prune(SystemTime::UNIX_EPOCH + RECENT_AGE + Duration::from_secs(100));
        assert!(m.recent.front().unwrap().at >= SystemTime::UNIX_EPOCH + Duration::from_secs(100));
    }
}
