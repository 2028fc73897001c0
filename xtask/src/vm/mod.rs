//! `cargo xtask vm-test`: the VM test bed. Debian's 6.1 kernel boots under qemu with
//! systemd 252 as PID 1 on a pure cgroup2 hierarchy; inside it tests/vm/guest.sh installs
//! the .deb, checks the service end to end (readiness, metrics, a killed unit's exit
//! reason, the watchdog, upgrade, remove, purge) and runs the probe integration tests on
//! this second kernel.
mod boot;
mod image;

use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context as _};

use crate::{deb, util};

/// The integration tests that also run inside the guest (the probes on a second kernel).
const GUEST_TESTS: &[&str] = &[
    "syscall_latency",
    "process_exits",
    "tcp_retransmits",
    "service",
];

pub fn test(timeout: Duration) -> anyhow::Result<()> {
    let (outcome, log) = run_guest("test", timeout)?;
    if outcome.failed.is_empty() && outcome.finished {
        return Ok(());
    }
    let error = failure(&outcome, &log);
    if !(outcome.locked_up && outcome.failed.is_empty()) {
        return Err(error);
    }
    // The emulator's livelock (boot.rs), with every check so far passed: shown above with
    // its traces, and given one more boot. A second lockup, or any failed check, fails.
    println!("vm: {error:#}; booting the guest once more");
    let (outcome, log) = run_guest("test", timeout)?;
    if outcome.failed.is_empty() && outcome.finished {
        return Ok(());
    }
    Err(failure(&outcome, &log))
}

/// `cargo xtask bench`'s VM section: a systemd unit's time to recover through gimbal's
/// RestartUnit next to systemd's own Restart=, as Markdown rows.
pub fn bench(timeout: Duration) -> anyhow::Result<String> {
    let (outcome, log) = run_guest("bench", timeout)?;
    if !outcome.failed.is_empty() || !outcome.finished {
        return Err(failure(&outcome, &log));
    }
    Ok(outcome.report.join("\n") + "\n")
}

/// Builds and boots the guest; `mode` ("test" or "bench") picks what guest.sh runs.
fn run_guest(mode: &str, timeout: Duration) -> anyhow::Result<(boot::Outcome, std::path::PathBuf)> {
    util::require_root("the VM image is built with debootstrap")?;
    let version = env!("CARGO_PKG_VERSION");
    // The upgrade test installs the second over the first. Built in this order because
    // cargo-deb empties target/debian/ on every run.
    let second = deb::build_as(
        Some(&format!("{version}-2")),
        &util::root().join("target/vm/upgrade"),
    )?;
    let first = deb::build()?;
    util::build_release_binaries()?;
    let tests = test_binaries()?;
    let image = image::ensure()?;

    util::step(&format!(
        "VM test bed: booting {} (software emulation)",
        image.release
    ));
    let vm = util::root().join("target/vm");
    let overlay = vm.join("overlay");
    if overlay.exists() {
        std::fs::remove_dir_all(&overlay)?;
    }
    let guest = overlay.join("vmtest");
    std::fs::create_dir_all(guest.join("debs"))?;
    std::fs::create_dir_all(guest.join("bin/deps"))?;
    for deb in [&first, &second] {
        std::fs::copy(deb, guest.join("debs").join(deb.file_name().unwrap()))?;
    }
    let release = util::root().join("target/release");
    for bin in ["gimbal", "gimbal-workload"] {
        copy_executable(&release.join(bin), &guest.join("bin").join(bin))?;
    }
    if mode == "bench" {
        // Built by `cargo xtask bench` with the floors' programs (syscall_hooks_cost).
        let floor = "gimbal-bench-floor";
        copy_executable(&release.join(floor), &guest.join("bin").join(floor))?;
    }
    for (name, exe) in &tests {
        copy_executable(exe, &guest.join("bin/deps").join(name))?;
    }
    copy_executable(
        &util::root().join("tests/vm/guest.sh"),
        &guest.join("guest.sh"),
    )?;
    std::fs::write(guest.join("mode"), mode)?;
    let units = overlay.join("etc/systemd/system");
    std::fs::create_dir_all(units.join("multi-user.target.wants"))?;
    std::fs::copy(
        util::root().join("tests/vm/gimbal-vmtest.service"),
        units.join("gimbal-vmtest.service"),
    )?;
    std::os::unix::fs::symlink(
        "../gimbal-vmtest.service",
        units.join("multi-user.target.wants/gimbal-vmtest.service"),
    )?;
    // Masked: the packaged Alertmanager would start at boot and fail (its clustering needs a
    // private address); the check that needs one runs its own.
    std::os::unix::fs::symlink("/dev/null", units.join("prometheus-alertmanager.service"))?;
    let overlay_cpio = vm.join("overlay.cpio.gz");
    image::pack_cpio(&overlay, &overlay_cpio)?;
    // The kernel unpacks concatenated archives in order: the test files land on top of
    // the cached root file system.
    let initrd = vm.join("initrd.cpio.gz");
    concat(&[&image.initramfs, &overlay_cpio], &initrd)?;

    let log = vm.join("console.log");
    let outcome = boot::boot(&image, &initrd, &log, timeout)?;
    println!("vm: console log in {}", log.display());
    println!(
        "vm: {} passed, {} failed",
        outcome.passed.len(),
        outcome.failed.len()
    );
    Ok((outcome, log))
}

/// What went wrong, with the last console lines shown and the whole console kept.
fn failure(outcome: &boot::Outcome, log: &Path) -> anyhow::Error {
    // Keep the whole console next to the run for the post-mortem.
    let kept = log.with_file_name(format!("console-failed-{}.log", unix_time()));
    if let Err(e) = std::fs::copy(log, &kept) {
        return anyhow::anyhow!("the VM run failed, and its console log could not be kept: {e}");
    }
    // Lossy: a console carries the odd control byte.
    let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    let tail: Vec<&str> = text.lines().rev().take(60).collect();
    println!("vm: last console lines:");
    for line in tail.iter().rev() {
        println!("    {line}");
    }
    if let Some(report) = first_kernel_report(&text) {
        println!("vm: the guest kernel's first report (call traces of every CPU):");
        for line in report {
            println!("    {line}");
        }
    }
    for f in &outcome.failed {
        println!("vm: FAILED {f}");
    }
    if outcome.locked_up {
        return anyhow::anyhow!(
            "the guest kernel locked up (a CPU stuck for {}s or more); whole console kept at {}",
            boot::LOCKUP_GIVE_UP_SECS,
            kept.display()
        );
    }
    if !outcome.finished {
        return anyhow::anyhow!(
            "the guest did not finish its tests{}; whole console kept at {}",
            if outcome.timed_out { " in time" } else { "" },
            kept.display()
        );
    }
    anyhow::anyhow!(
        "{} VM checks failed; whole console kept at {}",
        outcome.failed.len(),
        kept.display()
    )
}

/// The first oops, lockup or hung-task report of the guest kernel and what follows it
/// (its call traces), or None when the kernel reported nothing.
fn first_kernel_report(console: &str) -> Option<Vec<&str>> {
    let lines: Vec<&str> = console.lines().collect();
    let start = lines.iter().position(|l| {
        [
            "BUG:",
            "Oops",
            "blocked for more than",
            "WARNING:",
            "Kernel panic",
        ]
        .iter()
        .any(|m| l.contains(m))
    })?;
    Some(lines[start..].iter().take(150).copied().collect())
}

/// Builds the integration tests and returns (name, executable) for those the guest runs.
fn test_binaries() -> anyhow::Result<Vec<(String, std::path::PathBuf)>> {
    let out = Command::new("cargo")
        .env("PATH", util::path_with_cargo_bin())
        .current_dir(util::root())
        .args([
            "test",
            "--release",
            "-p",
            "gimbal-tests",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!(
            "building the integration tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(exe)) = (
            is_test && GUEST_TESTS.contains(&name),
            msg["executable"].as_str(),
        ) {
            found.push((name.to_string(), exe.into()));
        }
    }
    if found.len() != GUEST_TESTS.len() {
        bail!("expected the test binaries {GUEST_TESTS:?}, cargo built {found:?}");
    }
    Ok(found)
}

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).with_context(|| format!("copy {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn concat(parts: &[&Path], out: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(out)?;
    for part in parts {
        std::io::copy(&mut std::fs::File::open(part)?, &mut file)?;
    }
    Ok(())
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
