//! The VM test bed's image: Debian's own 6.1 kernel and a debootstrap'd bookworm with
//! systemd, packed whole as an initramfs (no disk image, no kernel modules needed to boot).
//! Built once per machine (about two minutes) and cached outside the work tree, so clean
//! clones reuse it.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::util::{self, output};

const CACHE: &str = "/var/cache/gimbal-vm";
/// Bump when the recipe below changes, so machines rebuild their cached image.
const RECIPE: u32 = 3;
/// systemd as PID 1 with D-Bus, and what the probe tests use inside the guest.
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "procps",
    "curl",
    "iproute2",
    "nftables",
    "ethtool",
    "bpftrace",
    // A real Alertmanager for the hung-D-Bus check (run by the check, not its own unit,
    // whose clustering needs a private address the guest lacks).
    "prometheus-alertmanager",
];
/// Modules the TCP test loads (veth, nf_tables and its expressions) and their deps; the
/// rest of the kernel's 390 MB of modules stays out of the image.
const MODULE_DIRS: &[&str] = &[
    "kernel/net",
    "kernel/lib",
    "kernel/crypto",
    "kernel/arch/x86/crypto",
    "kernel/drivers/net/veth.ko",
];

pub struct Image {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub release: String,
}

pub fn ensure() -> anyhow::Result<Image> {
    let package = newest_kernel_package()?;
    let dir = Path::new(CACHE).join(format!("r{RECIPE}-{package}"));
    let image = Image {
        kernel: dir.join("vmlinuz"),
        initramfs: dir.join("rootfs.cpio.gz"),
        release: package
            .trim_start_matches("linux-image-")
            .trim_end_matches("-unsigned")
            .to_string(),
    };
    if dir.join("complete").is_file() {
        println!("vm: cached image {}", dir.display());
        return Ok(image);
    }
    util::step(&format!(
        "VM image: {package} and a bookworm root file system (once per machine, about 2 minutes)"
    ));
    let work = dir.with_extension("partial");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let kernel_tree = work.join("kernel");
    util::with_retries("vm: downloading the kernel", || {
        fetch_kernel(&package, &work, &kernel_tree)
    })?;
    let rootfs = work.join("rootfs");
    util::with_retries("vm: debootstrap", || {
        // A failed try leaves a half-made tree that debootstrap would trip over.
        if rootfs.exists() {
            std::fs::remove_dir_all(&rootfs)?;
        }
        debootstrap(&rootfs)
    })?;
    add_modules(&kernel_tree, &rootfs, &image.release)?;
    slim(&rootfs)?;
    std::fs::copy(
        kernel_tree.join(format!("boot/vmlinuz-{}", image.release)),
        work.join("vmlinuz"),
    )?;
    println!("vm: packing the root file system");
    pack_cpio(&rootfs, &work.join("rootfs.cpio.gz"))?;
    std::fs::remove_dir_all(&rootfs)?;
    std::fs::remove_dir_all(&kernel_tree)?;
    std::fs::write(work.join("complete"), format!("{package}\n"))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&work, &dir)?;
    remove_stale(&dir);
    Ok(image)
}

/// The newest Debian 6.1 kernel in the archive (the archive keeps only recent ABIs).
fn newest_kernel_package() -> anyhow::Result<String> {
    let search = || {
        output(
            "apt-cache",
            &[
                "search",
                "--names-only",
                r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
            ],
        )
        .unwrap_or_default()
    };
    let mut found = search();
    if found.trim().is_empty() {
        util::with_retries("vm: apt-get update", || {
            let mut update = Command::new("apt-get");
            update.args(["update", "-q"]);
            util::run(update)
        })?;
        found = search();
    }
    let mut names: Vec<(u32, String)> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| {
            let abi = n.strip_prefix("linux-image-6.1.0-")?.split('-').next()?;
            Some((abi.parse().ok()?, n.to_string()))
        })
        .collect();
    names.sort();
    match names.pop() {
        Some((_, name)) => Ok(name),
        None => {
            bail!("no linux-image-6.1.0-*-amd64-unsigned in the Debian archive (apt-cache search)")
        }
    }
}

fn fetch_kernel(package: &str, work: &Path, tree: &Path) -> anyhow::Result<()> {
    println!("vm: downloading {package}");
    let mut download = Command::new("apt-get");
    download.current_dir(work).args(["download", "-q", package]);
    let out = download.output().context("apt-get download")?;
    if !out.status.success() {
        bail!(
            "apt-get download {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deb = std::fs::read_dir(work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("the kernel .deb is missing after apt-get download")?;
    let mut extract = Command::new("dpkg-deb");
    extract.arg("-x").arg(&deb).arg(tree);
    util::run(extract)?;
    std::fs::remove_file(deb)?;
    Ok(())
}

/// The mirror this machine's apt uses (so the image comes from where packages come from).
fn debian_mirror() -> anyhow::Result<String> {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_deb822 = deb822
        .lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .flat_map(|u| u.split_whitespace())
        .find(|u| u.ends_with("/debian") || u.ends_with("/debian/"));
    let from_classic = classic
        .lines()
        .filter(|l| l.starts_with("deb "))
        .filter_map(|l| l.split_whitespace().find(|w| w.contains("://")))
        .find(|u| u.trim_end_matches('/').ends_with("/debian"));
    from_deb822
        .or(from_classic)
        .map(String::from)
        .context("no Debian mirror in /etc/apt/sources.list(.d): the VM image needs one")
}

fn debootstrap(rootfs: &Path) -> anyhow::Result<()> {
    let mirror = debian_mirror()?;
    println!("vm: debootstrap bookworm with {}", PACKAGES.join(","));
    let mut cmd = Command::new("debootstrap");
    cmd.args([
        "--variant=minbase",
        &format!("--include={}", PACKAGES.join(",")),
    ])
    .arg("bookworm")
    .arg(rootfs)
    .arg(&mirror);
    let out = cmd.output().context("debootstrap")?;
    if !out.status.success() {
        bail!(
            "debootstrap failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn add_modules(kernel_tree: &Path, rootfs: &Path, release: &str) -> anyhow::Result<()> {
    let from = kernel_tree.join("lib/modules").join(release);
    let to = rootfs.join("lib/modules").join(release);
    for part in MODULE_DIRS {
        let dest = to.join(part);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(from.join(part)).arg(&dest);
        util::run(cp)?;
    }
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        std::fs::copy(from.join(file), to.join(file))?;
    }
    let mut depmod = Command::new("depmod");
    depmod.arg("-b").arg(rootfs).arg(release);
    util::run(depmod)
}

/// Drops what a test guest never reads, so the initramfs unpacks faster, and masks the
/// serial login prompt, which would hang up the console the tests report on.
fn slim(rootfs: &Path) -> anyhow::Result<()> {
    for dir in [
        "var/cache/apt/archives",
        "usr/share/doc",
        "usr/share/locale",
        "usr/share/man",
    ] {
        let path = rootfs.join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
            std::fs::create_dir_all(&path)?;
        }
    }
    std::fs::write(rootfs.join("etc/hostname"), "gimbal-vm\n")?;
    let masked = rootfs.join("etc/systemd/system/serial-getty@ttyS0.service");
    let _ = std::fs::remove_file(&masked);
    std::os::unix::fs::symlink("/dev/null", masked)?;
    Ok(())
}

/// `find . | cpio -o -H newc | gzip -1`, the format the kernel unpacks as initramfs.
pub fn pack_cpio(tree: &Path, out: &Path) -> anyhow::Result<()> {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(r#"cd "$1" && find . -print0 | cpio --null --create --format=newc --quiet | gzip -1 > "$2""#)
        .arg("pack")
        .arg(tree)
        .arg(out);
    util::run(sh)
}

/// Images of older recipes or kernels (180 MB each) are of no further use.
fn remove_stale(current: &Path) {
    let Ok(entries) = std::fs::read_dir(CACHE) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != current && path.is_dir() {
            println!("vm: removing the stale image {}", path.display());
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
