//! Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with nightly and
//! bpf-linker, so that the agent can embed them. `cargo xtask setup` installs both.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf");
    let package = aya_build::Package {
        name: "gimbal-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building agent-ebpf (run `cargo xtask setup` if nightly or bpf-linker is missing)",
    )
}
