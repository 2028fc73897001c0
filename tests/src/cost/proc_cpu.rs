//! CPU time of processes from /proc: what the server itself spent (utime + stime, as `top`
//! and `ps` count it) and what a tracer spent (schedstat, ns on CPU).
use std::time::Duration;

/// utime + stime of a process (all its threads) from /proc/<pid>/stat; None once it is gone.
pub fn stat_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
}

/// The summed utime + stime of `pids` (processes gone count as zero).
pub fn stat_cpu_all(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|&p| stat_cpu(p)).sum()
}

/// Time on CPU of all the process's threads, from schedstat (ns, exact).
pub fn sched_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// `pid` and its direct children (nginx's master and workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let ppid = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            });
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_child_shows_its_cpu_in_stat_and_schedstat_alike() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(600));
        let (stat, sched) = (stat_cpu(pid).unwrap(), sched_cpu(pid));
        assert!(with_children(std::process::id()).contains(&pid));
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            stat > Duration::from_millis(100),
            "a spinning shell used {stat:?}"
        );
        // Ticks and schedstat account the same running time, to a few 10 ms ticks.
        let diff = stat.abs_diff(sched);
        assert!(
            diff < Duration::from_millis(50),
            "stat {stat:?} schedstat {sched:?}"
        );
        assert!(stat_cpu(pid).is_none(), "a reaped process has no stat");
    }
}
