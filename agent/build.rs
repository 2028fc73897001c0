//! Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with nightly and
//! bpf-linker, so that the agent can embed them. `cargo xtask setup` installs both.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf");
    // aya-build watches agent-ebpf only; the programs also compile agent-common (the
    // bucket function, the map types), and a change there must rebuild them too.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-common")
    );
    // The benchmark floors go into the object only when asked for (`cargo xtask bench`).
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_BENCH_PROGRAMS").is_some() {
        &["bench"]
    } else {
        &[]
    };
    let package = aya_build::Package {
        name: "gimbal-ebpf",
        root_dir: root,
        features,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building agent-ebpf (run `cargo xtask setup` if nightly or bpf-linker is missing)",
    )
}
