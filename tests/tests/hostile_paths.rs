//! Issue 10, finding 4: cgroup paths that leave where they seem to point. A `..` segment
//! is never resolved (a dry-run `[[signal]]` on `x/..` must not "would send" to the root
//! cgroup; an enforce `[[throttle]]` on `x/../<the agent's own cgroup>` must not touch the
//! agent's quota), and a target path that leaves the cgroup filesystem (a plain directory
//! mounted inside the tree) does not make a target "up" from a file anyone could write.
//!
//! `..` is also refused by `check-config` (a separate change). Where that check is in,
//! `run` refuses these configs before the runtime sees them, and the tests assert that;
//! the runtime refusal stays covered by `targets::confine`'s unit tests and by the mount
//! test here, whose path has no `..` for any config check to see.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::{http_get, Agent},
    audit, free_port, require_root, sibling_binary, spawn_in, terminate, unique, wait_for,
    wait_until, CpuGroup, TempDir, TestCgroup,
};

const WAIT: Duration = Duration::from_secs(15);

/// `check-config`'s verdict: Err(its message) when it refuses the file.
fn check_config(file: &Path) -> Result<(), String> {
    let out = Command::new(sibling_binary("gimbal"))
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .expect("run gimbal check-config");
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The config refused for its traversal, at load: what a config check that landed does.
fn refused_at_load(file: &Path) -> bool {
    match check_config(file) {
        Ok(()) => false,
        Err(msg) => {
            assert!(
                msg.contains(".."),
                "refused, but not for the traversal: {msg}"
            );
            true
        }
    }
}

/// The outcomes the audit log holds for `action`, once there is one.
fn outcomes(state: &TempDir, action: &str) -> Vec<serde_json::Value> {
    wait_for(&format!("an audited {action} outcome"), WAIT, || {
        let found: Vec<_> = audit(state)
            .into_iter()
            .filter(|l| l["action"] == action && l["phase"] == "outcome")
            .collect();
        (!found.is_empty()).then_some(found)
    })
}

#[test]
fn a_signal_glob_with_dotdot_is_refused_not_resolved_to_the_root_cgroup() {
    if !require_root!() {
        return;
    }
    let workload = sibling_binary("gimbal-workload");
    let state = TempDir::new("paths-signal");
    let critical = TestCgroup::new("critical");
    let x = TestCgroup::new("x");
    let service = critical.spawn_into(Command::new(&workload).arg("pause"));
    let file = state.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[targets]]\nname = \"critical\"\ncgroup = \"{}\"\n\n\
             [remediation]\nmode = \"dry-run\"\n\n[[signal]]\nname = \"kill-all\"\n\
             when = \"TargetDown\"\ntarget = \"critical\"\ncgroups = [\"{}/..\"]\nsignal = \"SIGKILL\"\n",
            state.0.display(),
            critical.name,
            x.name
        ),
    )
    .unwrap();
    if refused_at_load(&file) {
        return;
    }
    let agent = Agent::start_with(&["--config", file.to_str().unwrap()]);
    wait_until("the critical target up", WAIT, || {
        agent.metric("gimbal_target_up{target=\"critical\"} ") == Some(1.0)
    });
    drop(service); // TargetDown fires, and with it the signal rule
    let found = outcomes(&state, "signal");
    assert!(
        found.iter().all(|l| l["result"] == "refused"),
        "x/.. was acted on (the root cgroup): {found:#?}"
    );
    assert!(
        found[0]["detail"].as_str().unwrap().contains("\"..\""),
        "the refusal names the traversal: {found:#?}"
    );
    drop(agent);
}

#[test]
fn a_throttle_glob_through_dotdot_never_touches_the_agents_own_cgroup() {
    if !require_root!() {
        return;
    }
    let workload = sibling_binary("gimbal-workload");
    let state = TempDir::new("paths-throttle");
    let critical = TestCgroup::new("critical");
    // The agent runs in a CPU cgroup of this test's (never the machine's own); `x` is its
    // sibling, so x/../<agent's> is the agent's own cgroup.
    let own = CpuGroup::new();
    let x = CpuGroup::new();
    let own_name = own.dir().file_name().unwrap().to_str().unwrap().to_string();
    let quota_before = std::fs::read_to_string(own.quota_file()).unwrap();
    let service = critical.spawn_into(Command::new(&workload).arg("pause"));
    let file = state.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[targets]]\nname = \"critical\"\ncgroup = \"{}\"\n\n\
             [remediation]\nmode = \"enforce\"\n\n[[throttle]]\nname = \"hold\"\n\
             when = \"TargetDown\"\ntarget = \"critical\"\ncgroups = [\"{}/../{own_name}\"]\ncpu = 0.25\n",
            state.0.display(),
            critical.name,
            x.relative()
        ),
    )
    .unwrap();
    if refused_at_load(&file) {
        return;
    }
    let port = free_port();
    let mut agent = spawn_in(
        Command::new(sibling_binary("gimbal"))
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--config", file.to_str().unwrap()])
            .stderr(Stdio::inherit()),
        &[own.dir().join("cgroup.procs")],
    );
    let up = "gimbal_target_up{target=\"critical\"} 1";
    wait_until("the critical target up", WAIT, || {
        http_get(port, "/metrics").is_some_and(|(_, body)| body.contains(up))
    });
    drop(service);
    let found = outcomes(&state, "throttle");
    let quota_after = std::fs::read_to_string(own.quota_file()).unwrap();
    terminate(&mut agent);
    assert_eq!(
        quota_after, quota_before,
        "the agent's own CPU quota was changed through x/.."
    );
    assert!(found.iter().all(|l| l["result"] == "refused"), "{found:#?}");
}

/// A plain directory bind-mounted over a cgroup directory; unmounted (and the cgroup
/// directory removed) on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(source: &Path, target: &Path) -> Self {
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let (src, dst) = (c(source), c(target));
        // SAFETY: plain C strings; a bind mount this test removes on drop.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "bind mount: {}", std::io::Error::last_os_error());
        Self(target.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let dst = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: unmounting the mount this test made.
        unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_target_path_that_leaves_the_cgroup_filesystem_is_not_up_from_a_plain_file() {
    if !require_root!() {
        return;
    }
    let state = TempDir::new("paths-outside");
    let outer = TestCgroup::new("outer");
    let inner = outer.path.join(unique("inner"));
    std::fs::create_dir(&inner).unwrap();
    // A directory anyone with write access to it controls, claiming a live process.
    let plain = TempDir::new("plain-cgroup");
    std::fs::write(
        plain.0.join("cgroup.procs"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let _mount = Mounted::new(&plain.0, &inner);
    let rel = inner.strip_prefix(outer.path.parent().unwrap()).unwrap();
    let file = state.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[targets]]\nname = \"outside\"\ncgroup = \"{}\"\n",
            state.0.display(),
            rel.display()
        ),
    )
    .unwrap();
    check_config(&file).expect("no traversal for a config check to see");
    let started = Instant::now();
    let agent = Agent::start_with(&["--config", file.to_str().unwrap()]);
    let up = wait_for("the target's up sample", WAIT, || {
        agent.metric("gimbal_target_up{target=\"outside\"} ")
    });
    assert_eq!(
        up,
        0.0,
        "a plain file outside the cgroup filesystem made the target up ({:?} after start)",
        started.elapsed()
    );
    drop(agent);
}
