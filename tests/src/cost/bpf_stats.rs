//! The kernel's BPF run-time statistics (run_cnt, run_time_ns per program) of the agent's
//! own programs, for the per-program breakdown.
//!
//! The statistics are switched on with `BPF_ENABLE_STATS`, the same kernel switch as the
//! `kernel.bpf_stats_enabled` sysctl, but held by a file descriptor: the kernel turns them
//! off again when it closes, on drop, on a panic, and even if the bench is SIGKILLed. The
//! sysctl is never written, so the node's setting cannot be left changed.
use std::{collections::BTreeSet, os::fd::OwnedFd, process::Command};

/// The statistics stay on while this lives.
pub struct StatsOn {
    _fd: OwnedFd,
    sysctl: String,
}

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl StatsOn {
    pub fn enable() -> Self {
        let sysctl = std::fs::read_to_string(SYSCTL).unwrap_or_default();
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .expect("BPF_ENABLE_STATS (kernel 5.8+, root)");
        Self { _fd: fd, sysctl }
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let now = std::fs::read_to_string(SYSCTL).unwrap_or_default();
        if now != self.sysctl {
            eprintln!(
                "warning: {SYSCTL} changed from {:?} to {now:?} while the bench ran (not by it)",
                self.sysctl.trim()
            );
        }
    }
}

/// One program's counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgStats {
    pub id: u64,
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// The ids of the BPF programs `pid` holds open (its program and link descriptors' fdinfo
/// name them): the agent's programs, not another agent's of the same name.
pub fn prog_ids_of(pid: u32) -> BTreeSet<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// `bpftool prog show -j`, the programs in `ids`.
pub fn snapshot(ids: &BTreeSet<u64>) -> Vec<ProgStats> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool prog show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8_lossy(&out.stdout), ids)
}

fn parse(json: &str, ids: &BTreeSet<u64>) -> Vec<ProgStats> {
    let all: Vec<serde_json::Value> = serde_json::from_str(json).expect("bpftool's JSON");
    all.iter()
        .filter_map(|p| {
            let id = p.get("id")?.as_u64()?;
            ids.contains(&id).then(|| ProgStats {
                id,
                name: p.get("name").and_then(|n| n.as_str()).unwrap_or("?").into(),
                // Absent while a program has not run with the statistics on.
                run_cnt: p.get("run_cnt").and_then(|v| v.as_u64()).unwrap_or(0),
                run_time_ns: p.get("run_time_ns").and_then(|v| v.as_u64()).unwrap_or(0),
            })
        })
        .collect()
}

/// Per program, what it ran between two snapshots: (name, runs, ns).
pub fn delta(before: &[ProgStats], after: &[ProgStats]) -> Vec<(String, u64, u64)> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            (
                a.name.clone(),
                a.run_cnt - b.map_or(0, |b| b.run_cnt),
                a.run_time_ns - b.map_or(0, |b| b.run_time_ns),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftool_json_is_filtered_to_the_ids_and_a_missing_count_is_zero() {
        let json = r#"[{"id":8,"type":"tracing","name":"sched_switch","run_time_ns":900,"run_cnt":10},
            {"id":9,"name":"sys_exit"},{"id":40,"name":"sys_enter","run_cnt":1,"run_time_ns":5}]"#;
        let got = parse(json, &BTreeSet::from([8, 9]));
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].run_cnt, got[0].run_time_ns), (10, 900));
        assert_eq!((got[1].name.as_str(), got[1].run_cnt), ("sys_exit", 0));
        let later = parse(
            r#"[{"id":8,"name":"sched_switch","run_time_ns":1900,"run_cnt":30},{"id":9,"name":"sys_exit","run_cnt":2,"run_time_ns":7}]"#,
            &BTreeSet::from([8, 9]),
        );
        assert_eq!(
            delta(&got, &later),
            vec![("sched_switch".into(), 20, 1000), ("sys_exit".into(), 2, 7)]
        );
    }
}
