//! Shared set-up for the integration tests: root check, test cgroups, the workload binary,
//! and the agent binary. Everything a test creates is uniquely named and removed on drop.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
};

use gimbal::cgroups::CgroupNames;

/// True when running as root; otherwise prints why the calling test skips.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIP {test}: needs root to load eBPF programs and create cgroups (cargo xtask test runs it as root in CI)");
    }
    root
}

/// A binary built next to the test executable (target/<profile>/NAME).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo xtask test does)",
        path.display()
    );
    path
}

pub fn workload() -> Command {
    Command::new(sibling_binary("gimbal-workload"))
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique name for something this test process creates.
pub fn unique(what: &str) -> String {
    format!(
        "gimbal-test-{}-{what}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A cgroup2 directory this test created; removed (after its processes exit) on drop.
pub struct TestCgroup {
    pub path: PathBuf,
    /// Path relative to the cgroup2 mount, as gimbal labels it.
    pub name: String,
    pub id: u64,
}

impl TestCgroup {
    pub fn new(what: &str) -> Self {
        let names = CgroupNames::from_host().expect("a cgroup2 mount");
        let name = unique(what);
        let path = names.root().join(&name);
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let id = names.id_of(&name).expect("id of the new cgroup");
        Self { path, name, id }
    }

    /// Makes `cmd` join this cgroup between fork and exec, so every syscall of the
    /// program itself is counted under it.
    pub fn spawn_into(&self, cmd: &mut Command) -> Child {
        let procs = std::ffi::CString::new(
            self.path
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd.spawn().expect("spawn workload")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!(
            "warning: could not remove test cgroup {}",
            self.path.display()
        );
    }
}

/// waitpid status of a child (the raw value, as the kernel reports it).
pub fn wait_status(child: &mut Child) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(child.id() as i32, &mut status, 0) };
    assert_eq!(
        r,
        child.id() as i32,
        "waitpid failed: {}",
        std::io::Error::last_os_error()
    );
    status
}
