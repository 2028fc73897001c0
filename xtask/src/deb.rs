//! `cargo xtask deb`: the Debian package, built by cargo-deb from agent/Cargo.toml's
//! [package.metadata.deb] and the files in packaging/deb.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::util;

/// Builds the release agent and packs it into target/debian/.
pub fn build() -> anyhow::Result<PathBuf> {
    build_as(None, &util::root().join("target/debian"))
}

/// `version` overrides the Debian version (the upgrade test builds a second, newer
/// package). cargo-deb empties target/debian/ on every run, so a package kept for later
/// goes elsewhere and is built first.
pub fn build_as(version: Option<&str>, out: &Path) -> anyhow::Result<PathBuf> {
    util::cargo(&["build", "--release", "-p", "gimbal"])?;
    util::step("Debian package (cargo deb)");
    std::fs::create_dir_all(out)?;
    let mut cmd = Command::new("cargo");
    cmd.env("PATH", util::path_with_cargo_bin())
        .current_dir(util::root())
        .args(["deb", "-p", "gimbal", "--no-build", "--output"])
        .arg(out);
    if let Some(v) = version {
        cmd.args(["--deb-version", v]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo deb failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    println!("xtask: built {}", path.display());
    Ok(path)
}
