//! The cost sections of `cargo xtask bench` (redis, nginx, pipe): what the agent costs a
//! real service, next to no agent and to bpftrace doing the same work. Each runs its bench
//! binary (tests/src/bin/bench_{redis,nginx,pipe}.rs, rounds and report in
//! tests/src/cost), after installing the Debian packages it needs.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use crate::{setup, util};

/// The Debian packages each section needs (bench only: the tests never run these). The
/// servers' own units are never started: the bench runs each server itself.
fn packages(section: &str) -> &'static [(&'static str, &'static str)] {
    match section {
        "redis" => &[
            (
                "redis-server",
                "the real Redis the redis cost section loads",
            ),
            ("redis-tools", "redis-benchmark, the redis section's load"),
        ],
        "nginx" => &[
            ("nginx", "the real web server the nginx cost section loads"),
            ("wrk", "the nginx section's HTTP load generator"),
        ],
        "pipe" => &[(
            "linux-perf",
            "`perf bench sched pipe`, the pipe section's ping-pong",
        )],
        _ => &[],
    }
}

fn title(section: &str) -> &'static str {
    match section {
        "redis" => "what the agent costs redis-server under redis-benchmark",
        "nginx" => "what the agent costs nginx under wrk",
        _ => "what the agent costs a pipe ping-pong (perf bench sched pipe)",
    }
}

/// Runs `gimbal-bench-<section> ROUNDS AMOUNT FULL_CONFIG`; returns its Markdown.
pub fn section(bin: &Path, section: &str, rounds: u32, amount: &str) -> anyhow::Result<String> {
    util::step(title(section));
    setup::ensure_packages(packages(section))?;
    let program = format!("gimbal-bench-{section}");
    let full = util::root().join("tests/bench/gimbal-full.toml");
    let out = Command::new(bin.join(&program))
        .args([rounds.to_string(), amount.to_string()])
        .arg(&full)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} failed: {}", out.status);
    }
    Ok(format!("\n{}", String::from_utf8_lossy(&out.stdout)))
}
