//! A time limit for a long command whose children might hang (the integration tests start
//! agents, Alertmanagers, workloads): past it, what hangs is shown and the whole tree is
//! killed, so a stuck test fails the run with a reason instead of outlasting CI.
use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

pub fn run_within(mut cmd: Command, limit: Duration) -> anyhow::Result<()> {
    let shown = crate::util::shown(&cmd);
    let mut child = cmd
        .current_dir(crate::util::root())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{shown} failed: {status}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let tree = descendants(child.id(), &parents());
    // Pinned now: a pid that ends while the table prints cannot be reused under us.
    let pinned: Vec<OwnedFd> = tree.iter().filter_map(|pid| pidfd_open(*pid)).collect();
    println!("\nxtask: still running after {limit:?}; what it started, and where each waits:");
    let pids: Vec<String> = std::iter::once(child.id())
        .chain(tree.iter().copied())
        .map(|p| p.to_string())
        .collect();
    let _ = Command::new("ps")
        .args([
            "-o",
            "pid,ppid,stat,wchan:32,etimes,args",
            "-p",
            &pids.join(","),
        ])
        .status();
    // Parents first, so fewer start another child in the meantime.
    let _ = child.kill();
    for fd in &pinned {
        // SAFETY: a pidfd we opened; the kernel checks it still names that process.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    let _ = child.wait();
    bail!("{shown} did not finish within {limit:?} (killed; the process table is above)")
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Every process's parent, from /proc/<pid>/stat.
fn parents() -> BTreeMap<u32, u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            Some((pid, parent_in_stat(&stat)?))
        })
        .collect()
}

/// The ppid field of a /proc/<pid>/stat line: the second after the command name, which
/// is in parentheses and may itself hold spaces and parentheses.
fn parent_in_stat(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The processes below `root`, breadth first (each parent before its children).
fn descendants(root: u32, parents: &BTreeMap<u32, u32>) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![root];
    while !next.is_empty() {
        let level: Vec<u32> = parents
            .iter()
            .filter(|(_, ppid)| next.contains(ppid))
            .map(|(pid, _)| *pid)
            .collect();
        found.extend(&level);
        next = level;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) 1) S 17 4242 4242 0 -1 4194560 0 0";
        assert_eq!(parent_in_stat(stat), Some(17));
    }

    #[test]
    fn descendants_are_every_level_below_the_root_parents_first() {
        let parents = BTreeMap::from([(10, 1), (11, 10), (12, 11), (13, 10), (20, 1)]);
        assert_eq!(descendants(10, &parents), [11, 13, 12]);
    }

    #[test]
    fn a_hung_command_is_killed_with_its_children_at_the_limit() {
        // A shell that starts a sleeping child, says its pid and waits for it.
        let pid_file = std::env::temp_dir().join(format!("xtask-watchdog-{}", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "sleep 600 & echo $! > {}; wait",
            pid_file.display()
        ));
        let started = Instant::now();
        let err = run_within(cmd, Duration::from_secs(2)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(
            format!("{err}").contains("did not finish within 2s"),
            "{err}"
        );
        let sleeper = std::fs::read_to_string(&pid_file).unwrap();
        let _ = std::fs::remove_file(&pid_file);
        // Gone, or a zombie waiting for whoever adopted it: not running either way.
        std::thread::sleep(Duration::from_millis(200));
        let state = std::fs::read_to_string(format!("/proc/{}/stat", sleeper.trim()))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()));
        assert!(
            state.as_deref().is_none_or(|s| s == "Z"),
            "the grandchild still runs: {state:?}"
        );
    }
}
