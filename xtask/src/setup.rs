//! `cargo xtask setup`: everything a fresh Debian machine with only the Rust toolchains
//! needs to build the kernel programs and run the tests. Each step checks first and says
//! what it does, so a second run is fast and quiet.
use std::process::Command;

use anyhow::bail;

use crate::util::{self, output};

/// Debian packages: LLVM 22 for bpf-linker (must match nightly rustc's LLVM), and the real
/// peers the tests compare against.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links with rustc's LLVM (22)"),
    (
        "libpolly-22-dev",
        "needed to link bpf-linker against LLVM 22",
    ),
    ("bpftool", "inspects BTF and loaded programs in tests"),
    (
        "bpftrace",
        "ground truth for tests and the benchmark's peer",
    ),
    ("prometheus", "promtool checks the exposition"),
    (
        "prometheus-alertmanager",
        "the real Alertmanager the alerting tests deliver to",
    ),
    ("iproute2", "network namespaces for the TCP tests"),
    ("nftables", "packet loss for the TCP retransmit test"),
    ("ethtool", "turns segmentation offloads off in the TCP test"),
    ("openssl", "makes the test CA for the Alertmanager TLS test"),
    (
        "haproxy",
        "the real load balancer the verdict test feeds (agent-check, httpchk)",
    ),
    ("lintian", "checks the Debian package"),
    (
        "systemd",
        "systemd-analyze checks the unit's hardening (no systemd needs to run)",
    ),
    (
        "qemu-system-x86",
        "boots the VM test bed (Debian's 6.1 kernel, systemd as PID 1)",
    ),
    ("debootstrap", "builds the VM test bed's root file system"),
    ("cpio", "packs the VM's root file system as its initramfs"),
    (
        "kmod",
        "depmod indexes the VM kernel's modules (not on every minimal host)",
    ),
];
const CARGO_DEB_VERSION: &str = "3.8.0";
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    cargo_deb()?;
    crate::kube_tools::ensure()
}

fn installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt() -> anyhow::Result<()> {
    ensure_packages(APT_PACKAGES)
}

/// Installs those of `packages` (name, why) that are missing, saying why; needs root then.
pub fn ensure_packages(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<_> = packages.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (p, why) in &missing {
        println!("setup: installing {p}: {why}");
    }
    if !util::is_root() {
        bail!(
            "setup needs root to install Debian packages: sudo apt-get install {}",
            missing
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    util::with_retries("setup: apt-get", || {
        let mut update = Command::new("apt-get");
        update.args(["update", "-q"]);
        util::run(update)?;
        let mut install = Command::new("apt-get");
        install
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing.iter().map(|(p, _)| *p));
        util::run(install)
    })
}

fn rust_src() -> anyhow::Result<()> {
    let have = output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    )
    .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")));
    if have {
        return Ok(());
    }
    println!(
        "setup: adding rust-src to nightly (the kernel programs build core with -Z build-std)"
    );
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    util::run(cmd)
}

fn bpf_linker() -> anyhow::Result<()> {
    if output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let mut cmd = Command::new("cargo");
    // llvm-config of LLVM 22 must come first on PATH for llvm-sys to find it.
    cmd.env(
        "PATH",
        format!("/usr/lib/llvm-22/bin:{}", util::path_with_cargo_bin()),
    )
    .args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    util::run(cmd)
}

fn cargo_deb() -> anyhow::Result<()> {
    let have = output("cargo", &["install", "--list"])
        .is_some_and(|l| l.contains(&format!("cargo-deb v{CARGO_DEB_VERSION}:")));
    if have {
        return Ok(());
    }
    println!(
        "setup: building cargo-deb {CARGO_DEB_VERSION}, which packs the .deb (about two minutes)"
    );
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "--locked",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
    ]);
    util::run(cmd)
}
