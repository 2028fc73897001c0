//! Shared set-up for the integration tests: root check, test cgroups, the workload binary,
//! and the agent binary. Everything a test creates is uniquely named and removed on drop.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use gimbal::{
    host::cgroupfs::CgroupNames,
    probes::{LoadOptions, Probes},
};

pub mod agent;
pub mod alertmanager;
pub mod conns;
pub mod cost;
pub mod haproxy;
pub mod kmsg;
pub mod kube_api;
pub mod kubelet;
pub mod loadgen;
pub mod pki;
pub mod prometheus;
pub mod supervised;

/// Polls `ok` every 20 ms until it gives a value; fails the test naming `what` after
/// `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut ok: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ok() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent's real programs loaded into the kernel with `options`; fails the test naming
/// any probe that did not attach.
pub fn load_attached(options: &LoadOptions) -> Probes {
    let probes = Probes::load(options).expect("load probes");
    assert!(
        probes.status.iter().all(|s| s.error.is_none()),
        "{:?}",
        probes.status
    );
    probes
}

/// The agent's remediation audit log under `state`, a JSON value per line (none yet: empty).
pub fn audit(state: &TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.0.join("remediation/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

/// `promtool check metrics` on `body`: (success, what it said).
pub fn promtool_check_metrics(body: &str) -> (bool, String) {
    let mut p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    std::io::Write::write_all(&mut p.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `wait_for` a condition.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    wait_for(what, timeout, || ok().then_some(()))
}

/// The value of the first sample in an exposition whose line starts with `line_prefix`
/// (name and labels, then a space).
pub fn sample(exposition: &str, line_prefix: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// (p50, p99, max) of benchmark samples, in ms (nearest rank).
pub fn quantiles_ms(v: &mut [Duration]) -> (f64, f64, f64) {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(q(0.5)), ms(q(0.99)), ms(v[v.len() - 1]))
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `require_root(name)` with the calling test's own name: `if !require_root!() { return; }`.
#[macro_export]
macro_rules! require_root {
    () => {{
        fn here() {}
        // "<crate>::<test fn>::here": the test's name is the segment before `here`.
        let path = ::std::any::type_name_of_val(&here);
        let test = path.strip_suffix("::here").unwrap_or(path);
        $crate::require_root(test.rsplit("::").next().unwrap_or(test))
    }};
}

/// True when running as root; otherwise prints why the calling test skips.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIP {test}: needs root to load eBPF programs and create cgroups (cargo xtask test runs it as root in CI)");
    }
    root
}

/// A binary of this workspace in target/<profile>/, found from the running executable
/// (a test in target/<profile>/deps/ or a binary in target/<profile>/).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    let candidates = [
        dir.join(name),
        dir.parent().map(|p| p.join(name)).unwrap_or_default(),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing next to {}: build it first (cargo xtask test does)",
                exe.display()
            )
        })
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
    pub fn spawn_into(&self, cmd: &mut Command) -> Proc {
        spawn_in(cmd, &[self.path.join("cgroup.procs")])
    }
}

/// Spawns `cmd` after moving it, between fork and exec, into every cgroup whose
/// `cgroup.procs` file is listed.
pub fn spawn_in(cmd: &mut Command, procs_files: &[PathBuf]) -> Proc {
    let files: Vec<std::ffi::CString> = procs_files
        .iter()
        .map(|p| std::ffi::CString::new(p.clone().into_os_string().into_encoded_bytes()).unwrap())
        .collect();
    // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for f in &files {
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Proc(Some(cmd.spawn().expect("spawn workload")))
}

/// A child process that is killed if the test ends (or fails) while it still runs.
pub struct Proc(Option<Child>);

impl Proc {
    /// Spawns `cmd`, guarded.
    pub fn spawn(cmd: &mut Command) -> Self {
        Proc(Some(
            cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        ))
    }

    /// The std handle, for `wait_with_output` (no longer guarded).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("present until dropped")
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // try_wait reports an error for a child already reaped (by wait_status), so only a
        // still-running child of ours is killed, never a reused pid.
        if let Some(c) = self.0.as_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A memory-limited cgroup for OOM tests: a cgroup2 child with memory.max where the
/// hierarchy has the memory controller, else a child of this process's own cgroup v1
/// memory cgroup (never the root, never a cgroup this test did not create).
pub struct MemoryLimit {
    dir: PathBuf,
    pub procs: PathBuf,
    /// Set when the limit lives in the cgroup2 test cgroup itself (nothing to remove).
    inside_cgroup2: bool,
}

impl MemoryLimit {
    pub fn new(cgroup2: &TestCgroup, limit_bytes: u64) -> Self {
        let max = cgroup2.path.join("memory.max");
        if max.exists() {
            std::fs::write(&max, limit_bytes.to_string()).expect("write memory.max");
            let _ = std::fs::write(cgroup2.path.join("memory.swap.max"), "0");
            return Self {
                dir: cgroup2.path.clone(),
                procs: cgroup2.path.join("cgroup.procs"),
                inside_cgroup2: true,
            };
        }
        let rel = own_v1_cgroup("memory")
            .expect("no memory controller: neither cgroup2 memory.max nor a v1 memory cgroup");
        let dir = Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join(unique("oom"));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        std::fs::write(dir.join("memory.limit_in_bytes"), limit_bytes.to_string())
            .expect("memory.limit_in_bytes");
        // Without swap limits the hog could swap instead of being killed.
        let _ = std::fs::write(
            dir.join("memory.memsw.limit_in_bytes"),
            limit_bytes.to_string(),
        );
        Self {
            procs: dir.join("cgroup.procs"),
            dir,
            inside_cgroup2: false,
        }
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if !self.inside_cgroup2 {
            remove_cgroup_dir(&self.dir);
        }
    }
}

fn remove_cgroup_dir(path: &Path) {
    for _ in 0..50 {
        if std::fs::remove_dir(path).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("warning: could not remove test cgroup {}", path.display());
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_dir(&self.path);
    }
}

/// A temporary directory this test created; removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let p = std::env::temp_dir().join(unique(what));
        std::fs::create_dir(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// waitpid status of a child (the raw value, as the kernel reports it).
pub fn wait_status(child: &mut Child) -> i32 {
    // Bounded: a child that never ends must fail its test, not hang the whole run.
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        assert_eq!(r, 0, "waitpid failed: {}", std::io::Error::last_os_error());
        assert!(
            Instant::now() < deadline,
            "pid {pid} still runs after 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGTERM to our child, SIGKILL if it still runs 30 s later; reaped either way. For the
/// drops of long-running helpers (Alertmanager, Prometheus): a stuck one must not hang CI.
pub fn terminate(child: &mut Child) {
    // Only a child not yet reaped: its pid cannot have been reused.
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(None) = child.try_wait() {
        if Instant::now() > deadline {
            eprintln!("pid {} ignored SIGTERM for 30 s: SIGKILL", child.id());
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cpu cgroup this test owns: v1 (a child of this process's own cpu cgroup) where the
/// cpu controller is mounted on its own, else the cgroup2 test group.
pub enum CpuGroup {
    V1(PathBuf),
    V2(TestCgroup),
}

impl Default for CpuGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuGroup {
    pub fn new() -> Self {
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").is_file() {
            let own = own_v1_cgroup("cpu").expect("a v1 cpu line in /proc/self/cgroup");
            let dir = v1.join(own).join(unique("throttle"));
            std::fs::create_dir(&dir).expect("create a v1 cpu cgroup");
            return Self::V1(dir);
        }
        let group = TestCgroup::new("throttle");
        assert!(
            group.path.join("cpu.max").is_file(),
            "neither a v1 cpu hierarchy nor the cpu controller on cgroup2 here"
        );
        Self::V2(group)
    }

    /// The path as the agent matches it: relative to the hierarchy's mount.
    pub fn relative(&self) -> String {
        match self {
            Self::V1(dir) => dir
                .strip_prefix("/sys/fs/cgroup/cpu")
                .unwrap()
                .display()
                .to_string(),
            Self::V2(g) => g.name.clone(),
        }
    }

    /// The file that holds its CPU quota.
    pub fn quota_file(&self) -> PathBuf {
        match self {
            Self::V1(dir) => dir.join("cpu.cfs_quota_us"),
            Self::V2(g) => g.path.join("cpu.max"),
        }
    }

    pub fn dir(&self) -> &Path {
        match self {
            Self::V1(dir) => dir,
            Self::V2(g) => &g.path,
        }
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        if let Self::V1(dir) = self {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// CPUs' worth of time the process used over `window` (schedstat: ns on CPU, exact).
pub fn cpu_share(pid: u32, window: Duration) -> f64 {
    let on_cpu = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (t0, c0) = (Instant::now(), on_cpu());
    std::thread::sleep(window);
    (on_cpu() - c0) as f64 / t0.elapsed().as_nanos() as f64
}

/// `cpu_share` window after window until one falls in `range` (at most five). Another
/// tenant, the agent or the test itself can take a window's CPU from the process on a shared
/// machine, so a window below the range is measured again; none can give it more than its
/// quota, so a window above the range fails at once. Panics naming `what` and every share.
pub fn cpu_share_in(pid: u32, window: Duration, range: std::ops::Range<f64>, what: &str) -> f64 {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let share = cpu_share(pid, window);
        seen.push(format!("{share:.3}"));
        if range.contains(&share) {
            return share;
        }
        assert!(
            share < range.end,
            "{what}: CPU share {share:.3} over the {range:?} allowed (windows: {})",
            seen.join(", ")
        );
    }
    panic!(
        "{what}: CPU share under {range:?} in five {window:?} windows: {}",
        seen.join(", ")
    );
}

/// This process's cgroup in the v1 hierarchy of `controller`, relative to its mount.
fn own_v1_cgroup(controller: &str) -> Option<String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.trim_start_matches('/').to_string())
    })
}

/// A process group the agent watches as a target and whose CPU can be capped: the cgroup2
/// group the probes see and, where the cpu controller is v1, a v1 cpu group beside it
/// (its processes join both); on a pure cgroup2 host the one group is both.
pub struct CpuTarget {
    pub cpu: CpuGroup,
    pub v2: Option<TestCgroup>,
}

impl CpuTarget {
    pub fn new(what: &str) -> Self {
        let cpu = CpuGroup::new();
        let v2 = matches!(cpu, CpuGroup::V1(_)).then(|| TestCgroup::new(what));
        Self { cpu, v2 }
    }

    /// The cgroup the agent's target names (`cgroup = "..."`), relative to the cgroup2 mount.
    pub fn target(&self) -> String {
        match (&self.v2, &self.cpu) {
            (Some(g), _) => g.name.clone(),
            (None, cpu) => cpu.relative(),
        }
    }

    /// The `cgroup.procs` files a process of this group joins.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cpu.dir().join("cgroup.procs")];
        files.extend(self.v2.as_ref().map(|g| g.path.join("cgroup.procs")));
        files
    }

    /// Spawns `cmd` into the group (both hierarchies) between fork and exec.
    pub fn spawn(&self, cmd: &mut Command) -> Proc {
        spawn_in(cmd, &self.procs_files())
    }

    /// Caps the group at `cpus` CPUs (a 100 ms CFS period), or lifts the cap (None).
    pub fn set_quota(&self, cpus: Option<f64>) {
        let period = 100_000u64;
        let text = match (&self.cpu, cpus) {
            (CpuGroup::V1(_), Some(c)) => format!("{}", (c * period as f64) as u64),
            (CpuGroup::V1(_), None) => "-1".to_string(),
            (CpuGroup::V2(_), Some(c)) => format!("{} {period}", (c * period as f64) as u64),
            (CpuGroup::V2(_), None) => format!("max {period}"),
        };
        let file = self.cpu.quota_file();
        std::fs::write(&file, &text)
            .unwrap_or_else(|e| panic!("write {text:?} to {}: {e}", file.display()));
    }
}
