//! Boots the image under qemu (software emulation: KVM guests hang on this machine kind)
//! and follows the guest's serial console: every line goes to the log, `VMTEST:` lines are
//! shown as progress, and the run ends when the guest powers off or the time is up.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::image::Image;

#[derive(Default)]
pub struct Outcome {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    /// `VMTEST: BENCH` lines: the benchmark's report.
    pub report: Vec<String>,
    /// The guest script reached its end (`VMTEST: DONE`).
    pub finished: bool,
    pub timed_out: bool,
    /// The guest kernel reported a CPU stuck for longer than `LOCKUP_GIVE_UP`.
    pub locked_up: bool,
}

/// A soft lockup this long is a hung guest, not a slow emulated CPU: stop there instead of
/// waiting out the whole timeout.
pub const LOCKUP_GIVE_UP_SECS: u64 = 120;

/// Seconds from the kernel's `watchdog: BUG: soft lockup - CPU#1 stuck for 182s!`.
fn stuck_for_secs(line: &str) -> Option<u64> {
    let rest = line.split("soft lockup - CPU#").nth(1)?;
    let secs = rest.split("stuck for ").nth(1)?;
    secs.split('s').next()?.parse().ok()
}

pub fn boot(
    image: &Image,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-cpu", "max", "-smp", "2", "-m", "4096"])
        // Both vCPUs on one host thread. With a thread per vCPU (qemu's default), the guest
        // locked up twice in CI, each time as the agent was killed and restarted: both CPUs
        // spinning on the int3 that the kernel's code patching puts into
        // syscall_trace_enter while it flips the syscall tracepoints' static keys
        // (text_poke_bp, then an IPI to sync every core). One thread sees every code
        // change in order.
        .args(["-accel", "tcg,thread=single"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-nic", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            // loglevel=5: a lockup's register dump and call trace (KERN_DEFAULT) reach the
            // console; every CPU's backtrace, not just the stuck one's.
            "console=ttyS0 rdinit=/sbin/init panic=-1 quiet loglevel=5 \
             softlockup_all_cpu_backtrace=1 systemd.show_status=false",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64 (cargo xtask setup installs qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || forward(stdout, tx));
    std::thread::spawn(move || forward(stderr, tx2));

    let mut file = std::fs::File::create(log)?;
    let mut outcome = Outcome::default();
    let mut deadline = Instant::now() + timeout;
    let mut stopped = false;
    let started = Instant::now();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                writeln!(file, "{line}")?;
                if stuck_for_secs(&line).is_some_and(|s| s >= LOCKUP_GIVE_UP_SECS) {
                    println!("vm: the guest kernel reports a soft lockup: {line}");
                    outcome.locked_up = true;
                    let _ = child.kill();
                    stopped = true;
                    break;
                }
                if let Some(event) = line.split("VMTEST: ").nth(1) {
                    println!("vm [{:>4}s] {event}", started.elapsed().as_secs());
                    if let Some(name) = event.strip_prefix("PASS ") {
                        outcome.passed.push(name.to_string());
                    } else if let Some(what) = event.strip_prefix("FAIL ") {
                        outcome.failed.push(what.to_string());
                    } else if let Some(row) = event.strip_prefix("BENCH ") {
                        outcome.report.push(row.to_string());
                    } else if event.trim_end() == "BENCH" {
                        // A blank line: ends one Markdown table before the next.
                        outcome.report.push(String::new());
                    } else if event.starts_with("DONE") {
                        outcome.finished = true;
                        // The results are in: a power-off that stalls must not hold the run.
                        deadline = deadline.min(Instant::now() + Duration::from_secs(60));
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both pipes closed: qemu is gone.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= deadline {
            if outcome.finished {
                println!("vm: the guest finished but did not power off in 60 s: stopping qemu");
            } else {
                outcome.timed_out = true;
                println!("vm: no power-off after {timeout:?}: stopping qemu");
            }
            let _ = child.kill();
            stopped = true;
            break;
        }
    }
    let status = child.wait()?;
    // A qemu stopped here exits by SIGKILL: that was said above, not a failure of its own.
    if !status.success() && !stopped {
        println!("vm: qemu exited with {status}");
    }
    Ok(outcome)
}

fn forward(pipe: impl std::io::Read, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
        if tx.send(line).is_err() {
            return;
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::stuck_for_secs;

    #[test]
    fn reads_how_long_a_cpu_is_stuck() {
        let line = "[  369.101926] watchdog: BUG: soft lockup - CPU#0 stuck for 182s! [systemd:1]";
        assert_eq!(stuck_for_secs(line), Some(182));
        assert_eq!(stuck_for_secs("[ 1.0] systemd[1]: stuck for 3s"), None);
    }
}
