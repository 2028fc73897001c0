//! `cargo xtask gpu-check`: builds the agent and `gimbal-gpu-check` (release) and runs the
//! check (tests/src/bin/gpu_check.rs), which starts the agent and compares its GPU
//! readings with `nvidia-smi -q -x`. On a GPU node nothing needs building: copy the two
//! binaries from target/release/ and run `./gimbal-gpu-check` as root.
use crate::util;

pub fn run() -> anyhow::Result<()> {
    util::require_root("the check starts the agent, which loads eBPF programs")?;
    util::step("building the agent and gimbal-gpu-check (release)");
    util::build_release_binaries()?;
    util::step("gpu-check: the agent's GPU readings against nvidia-smi");
    util::run(std::process::Command::new(
        util::root().join("target/release/gimbal-gpu-check"),
    ))
}
