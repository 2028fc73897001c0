//! Small helpers for running commands with visible progress.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

pub fn step(what: &str) {
    println!("\n==> {what}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(why: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("this needs root: {why} (try `sudo -E cargo xtask ...`)");
    }
    Ok(())
}

/// Runs a command in the workspace root, streaming its output; fails with its exit status.
pub fn run(mut cmd: Command) -> anyhow::Result<()> {
    let shown = shown(&cmd);
    let status = cmd
        .current_dir(root())
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(cargo_command(args))
}

/// The cargo that runs xtask, with `args` and bpf-linker on PATH.
pub fn cargo_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).env("PATH", path_with_cargo_bin());
    cmd
}

/// A command as one would type it: the program and its arguments.
pub fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `attempt` up to three times, 15 s and then 45 s apart: for steps that fetch from the
/// package archive, where a dropped connection should cost a retry, not the whole run.
pub fn with_retries<T>(
    what: &str,
    attempt: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    retry_after(what, [15, 45].map(std::time::Duration::from_secs), attempt)
}

fn retry_after<T>(
    what: &str,
    waits: [std::time::Duration; 2],
    mut attempt: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    for (n, wait) in waits.into_iter().enumerate() {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => {
                println!("{what} failed (try {} of 3): {e:#}", n + 1);
                println!("{what}: trying again in {} s", wait.as_secs());
                std::thread::sleep(wait);
            }
        }
    }
    attempt().with_context(|| format!("{what} failed 3 times"))
}

/// Replaces this process with `cmd` (the agent keeps the terminal and its signals).
pub fn exec(mut cmd: Command) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let err = cmd.current_dir(root()).exec();
    Err(err).context("cannot start the agent")
}

/// PATH with ~/.cargo/bin (where bpf-linker is installed) in front.
pub fn path_with_cargo_bin() -> String {
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    format!("{home}/bin:{}", std::env::var("PATH").unwrap_or_default())
}

/// Output of a command, or None if it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .env("PATH", path_with_cargo_bin())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Release build of the agent and the test binaries (workload, bench floors).
pub fn build_release_binaries() -> anyhow::Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "gimbal",
        "-p",
        "gimbal-tests",
        "--bins",
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_that_fails_twice_succeeds_on_the_third_try_and_a_third_failure_is_final() {
        let no_wait = [std::time::Duration::ZERO; 2];
        let mut tries = 0;
        let got = retry_after("flaky", no_wait, || {
            tries += 1;
            if tries < 3 {
                bail!("dropped connection {tries}")
            }
            Ok(tries)
        });
        assert_eq!(got.unwrap(), 3);

        let mut tries = 0;
        let err = retry_after("down", no_wait, || -> anyhow::Result<()> {
            tries += 1;
            bail!("archive unreachable")
        })
        .unwrap_err();
        assert_eq!(tries, 3);
        let shown = format!("{err:#}");
        assert!(shown.contains("down failed 3 times"), "{shown}");
        assert!(shown.contains("archive unreachable"), "{shown}");
    }
}
