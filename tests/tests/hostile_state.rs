//! Issue 10, finding 5: the state directory's contents are not trusted. A link planted at
//! a temporary's name is not written through; a crafted limit journal naming a file
//! outside the cgroup mount is not restored, even in dry-run; a FIFO or a link to
//! /dev/zero as a state file neither hangs start-up nor exhausts memory; state files are
//! 0600 and their directories 0700 whatever the umask. Finding 6: a read-only state_dir
//! with no alert-spool/ does not keep the agent from starting and alerting, and it says
//! state cannot be saved.
use std::{
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        net::UnixDatagram,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::{http_get, Agent},
    alertmanager::Alertmanager,
    audit, free_port, require_root, sibling_binary, terminate, wait_until, Proc, TempDir,
    TestCgroup,
};

const WAIT: Duration = Duration::from_secs(15);

fn config(state: &TempDir, target: &TestCgroup, extra: &str) -> String {
    let file = state.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[targets]]\nname = \"critical\"\ncgroup = \"{}\"\n{extra}",
            state.0.display(),
            target.name
        ),
    )
    .unwrap();
    file.display().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

#[test]
fn a_link_at_a_temporary_name_is_not_written_through_and_state_is_private() {
    if !require_root!() {
        return;
    }
    let state = TempDir::new("state-link");
    let critical = TestCgroup::new("critical");
    let _service =
        critical.spawn_into(Command::new(sibling_binary("gimbal-workload")).arg("pause"));
    let elsewhere = TempDir::new("state-victim");
    let victim = elsewhere.0.join("precious");
    std::fs::write(&victim, "not the agent's").unwrap();
    let targets = state.0.join("targets");
    std::fs::create_dir(&targets).unwrap();
    std::fs::set_permissions(&targets, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&victim, targets.join("critical.json.tmp")).unwrap();
    // A umask that would leave files world-readable.
    // SAFETY: umask only sets this process's mask (inherited by the agent).
    let old_umask = unsafe { libc::umask(0o022) };

    let agent = Agent::start_with(&["--config", &config(&state, &critical, "")]);
    wait_until("the critical target up", WAIT, || {
        agent.metric("gimbal_target_up{target=\"critical\"} ") == Some(1.0)
    });
    assert_eq!(agent.stop(), 0, "the agent stops cleanly (and saves)");
    // SAFETY: umask only sets this process's file mode mask.
    unsafe { libc::umask(old_umask) };

    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "not the agent's",
        "written through the link at targets/critical.json.tmp"
    );
    let saved = targets.join("critical.json");
    assert!(
        std::fs::symlink_metadata(&saved).unwrap().is_file(),
        "the history was saved, as a regular file"
    );
    assert_eq!(mode(&saved), 0o600, "{}", saved.display());
}

#[test]
fn a_crafted_limit_journal_naming_a_file_outside_the_cgroup_mount_is_not_restored() {
    if !require_root!() {
        return;
    }
    let state = TempDir::new("state-journal");
    let critical = TestCgroup::new("critical");
    let elsewhere = TempDir::new("state-outside");
    let target = elsewhere.0.join("cpu.max");
    std::fs::write(&target, "original").unwrap();
    let mount = critical.path.parent().unwrap();
    // Straight outside, and "inside" through .. segments.
    let through = format!(
        "{}/{}",
        critical.path.display(),
        "../".repeat(mount.components().count())
            + elsewhere.0.strip_prefix("/").unwrap().to_str().unwrap()
    );
    let journal = serde_json::json!([
        {"cgroup": elsewhere.0, "file": "cpu.max", "previous": "chosen text", "applied": "1"},
        {"cgroup": through, "file": "cpu.max", "previous": "chosen text", "applied": "1"},
        {"cgroup": critical.path, "file": "../../../../../../../../..".to_string() + target.to_str().unwrap(),
         "previous": "chosen text", "applied": "1"},
    ]);
    std::fs::create_dir(state.0.join("remediation")).unwrap();
    std::fs::write(
        state.0.join("remediation/limits.json"),
        serde_json::to_vec(&journal).unwrap(),
    )
    .unwrap();

    let extra = "\n[remediation]\nmode = \"dry-run\"\n";
    let agent = Agent::start_with(&["--config", &config(&state, &critical, extra)]);
    // The journal is restored before /healthz answers.
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "original",
        "a journaled limit outside the cgroup mount was written"
    );
    let refused: Vec<_> = audit(&state)
        .into_iter()
        .filter(|l| l["result"] == "refused")
        .collect();
    assert_eq!(refused.len(), 3, "each crafted entry audited as refused");
    drop(agent);
}

#[test]
fn a_fifo_and_a_link_to_dev_zero_as_state_files_neither_hang_nor_exhaust_the_agent() {
    if !require_root!() {
        return;
    }
    let state = TempDir::new("state-fifo");
    let critical = TestCgroup::new("critical");
    let targets = state.0.join("targets");
    std::fs::create_dir(&targets).unwrap();
    let fifo = std::ffi::CString::new(
        targets
            .join("critical.json")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a plain C string; the FIFO is in this test's own directory.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", state.0.join("alerts.json")).unwrap();
    std::fs::create_dir(state.0.join("remediation")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", state.0.join("remediation/limits.json")).unwrap();

    let started = Instant::now();
    let agent = Agent::start_with(&["--config", &config(&state, &critical, "")]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "/healthz after {took:?}");
    assert!(
        agent.rss_kib() < 256 * 1024,
        "{} KiB resident",
        agent.rss_kib()
    );
    // Set aside, not lost: the next save writes a real file under the name.
    assert!(targets.join("critical.json.corrupt").exists());
    drop(agent);
}

/// A directory made read-only (for root too) by a read-only bind mount over itself;
/// unmounted on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(dir: &Path) -> Self {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: plain C strings; a mount this test removes on drop.
        unsafe {
            let none = std::ptr::null();
            assert_eq!(
                libc::mount(
                    c.as_ptr(),
                    c.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null()
                ),
                0,
                "bind mount: {}",
                std::io::Error::last_os_error()
            );
            let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
            let r = libc::mount(none, c.as_ptr(), none, ro, std::ptr::null());
            let err = std::io::Error::last_os_error();
            let guard = Self(dir.to_path_buf());
            assert_eq!(r, 0, "read-only remount: {err}");
            guard
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: unmounting the mount this test made.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_read_only_state_dir_without_an_alert_spool_starts_alerts_and_says_state_cannot_be_saved() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let critical = TestCgroup::new("critical");
    let service = critical.spawn_into(Command::new(sibling_binary("gimbal-workload")).arg("pause"));
    let outside = TempDir::new("state-ro-config");
    let state = TempDir::new("state-ro");
    let file = outside.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[targets]]\nname = \"critical\"\ncgroup = \"{}\"\n\n\
             [alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\nresend_interval = \"1s\"\n",
            state.0.display(),
            critical.name,
            am.port
        ),
    )
    .unwrap();
    let _ro = ReadOnly::new(&state.0);
    assert!(
        std::fs::create_dir(state.0.join("alert-spool")).is_err(),
        "the state dir is writable"
    );
    let socket_path = outside.0.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let port = free_port();
    let mut agent = Proc::spawn(
        Command::new(sibling_binary("gimbal"))
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--config", file.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &socket_path)
            .stderr(Stdio::inherit()),
    );
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("READY from the agent");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATE CANNOT BE SAVED"),
        "the readiness text does not say so: {ready:?}"
    );
    wait_until("the critical target up", WAIT, || {
        http_get(port, "/metrics")
            .is_some_and(|(_, body)| body.contains("gimbal_target_up{target=\"critical\"} 1"))
    });
    drop(service);
    wait_until("TargetDown in Alertmanager", WAIT, || {
        am.has_active(&[("alertname", "TargetDown")])
    });
    terminate(&mut agent);
}
