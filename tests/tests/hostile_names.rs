//! Issue 10, finding 1: unprivileged processes with hostile names, exiting in cgroups with
//! hostile names, must not forge series, break either exposition format or blind
//! Prometheus; and a flood of distinct comms must not hide a later kill's reason.
use std::{
    ffi::{CString, OsStr},
    os::unix::ffi::OsStrExt,
    path::PathBuf,
    time::Duration,
};

use gimbal::host::cgroupfs::CgroupNames;
use gimbal_tests::{
    agent::Agent,
    alertmanager::Alertmanager,
    audit,
    prometheus::{promql_string, Prometheus},
    promtool_check_metrics as promtool, require_root, sample, unique, wait_for, wait_until,
    TempDir,
};

/// Debian's `nobody` and `nogroup`.
const NOBODY: libc::uid_t = 65534;
const NOGROUP: libc::gid_t = 65534;

const FORGER: &[u8] = b"~\"} 1\nevil 1\n#";
const BREAKER: &[u8] = b"a\"b\\c\n{x}";

/// A cgroup2 directory with a name given as bytes; removed on drop.
struct Cgroup {
    path: PathBuf,
    /// The label the agent gives it (relative path, invalid UTF-8 as U+FFFD).
    label: String,
}

impl Cgroup {
    fn new(name: &[u8]) -> Self {
        let root = CgroupNames::from_host()
            .expect("a cgroup2 mount")
            .root()
            .to_path_buf();
        let path = root.join(OsStr::from_bytes(name));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        let label = String::from_utf8_lossy(name).into_owned();
        Self { path, label }
    }

    fn procs(&self) -> CString {
        CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes()).unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        wait_until(
            &format!("removing {}", self.path.display()),
            Duration::from_secs(10),
            || std::fs::remove_dir(&self.path).is_ok(),
        );
    }
}

/// Forks a child that joins `procs`, drops to nobody, names itself `comm` and then exits
/// with `code`, or waits for a signal when `code` is None. Returns its pid.
fn spawn_as_nobody(procs: &CString, comm: &[u8], code: Option<i32>) -> libc::pid_t {
    let comm = CString::new(comm).unwrap();
    // SAFETY: the child makes only async-signal-safe calls (open, write, close, setgroups,
    // setgid, setuid, prctl, pause, _exit) on memory prepared before the fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid > 0 {
            return pid;
        }
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        let joined = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
        let dropped = libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(NOGROUP) == 0
            && libc::setuid(NOBODY) == 0;
        if !joined || !dropped || libc::prctl(libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0) != 0 {
            libc::_exit(111);
        }
        match code {
            Some(c) => libc::_exit(c),
            None => loop {
                libc::pause();
            },
        }
    }
}

fn wait_pid(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: our own child, reaped once.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

fn exited(procs: &CString, comm: &[u8], code: i32) {
    let status = wait_pid(spawn_as_nobody(procs, comm, Some(code)));
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code,
        "child {comm:?}: status {status:#x} (111: it could not join its cgroup or drop to nobody)"
    );
}

/// A label value as the exposition formats write it, for matching lines of a scrape.
fn escaped(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn exits_line(cgroup: &str, comm: &str, reason: &str, code: &str) -> String {
    format!(
        "gimbal_process_exits_total{{cgroup=\"{}\",comm=\"{}\",reason=\"{reason}\",code=\"{code}\"}} ",
        escaped(cgroup),
        escaped(comm)
    )
}

#[test]
fn hostile_names_are_escaped_and_a_flood_of_comms_hides_no_kill() {
    if !require_root!() {
        return;
    }
    let agent = Agent::start();
    let quoted = Cgroup::new(unique("x q\"b\\s y").as_bytes());
    let mut invalid = unique("bad").into_bytes();
    invalid.extend_from_slice(b"-\xff\xfe");
    let invalid = Cgroup::new(&invalid);
    assert!(invalid.label.ends_with("-\u{fffd}\u{fffd}"));

    exited(&quoted.procs(), FORGER, 3);
    exited(&invalid.procs(), BREAKER, 4);
    let forger = String::from_utf8_lossy(FORGER).into_owned();
    let breaker = String::from_utf8_lossy(BREAKER).into_owned();
    let lines = [
        exits_line(&quoted.label, &forger, "exited", "3"),
        exits_line(&invalid.label, &breaker, "exited", "4"),
    ];
    let text = wait_for(
        "both hostile exits in the 0.0.4 scrape, escaped",
        Duration::from_secs(15),
        || {
            let body = agent.metrics();
            lines
                .iter()
                .all(|l| sample(&body, l) == Some(1.0))
                .then_some(body)
        },
    );

    // No forged series, in either format: every sample line is one of ours.
    let (status, ctype, om) = agent
        .try_get(
            "/metrics",
            Some("application/openmetrics-text; version=1.0.0"),
        )
        .expect("OpenMetrics scrape");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    for body in [&text, &om] {
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("gimbal_"), "a forged line: {line:?}");
        }
    }

    let (ok, said) = promtool(&text);
    assert!(ok, "promtool check metrics on text 0.0.4: {said}");
    // promtool reads only 0.0.4: on OpenMetrics it must parse, and may complain only that
    // a counter's `_total` sample has no HELP of its own (OpenMetrics names the family).
    let (_, said) = promtool(&om);
    for complaint in said.lines() {
        assert!(
            complaint.ends_with("_total no help text"),
            "promtool check metrics on OpenMetrics: {said}"
        );
    }

    // A real Prometheus scrapes it (OpenMetrics) and returns the names exactly.
    let instance = format!("127.0.0.1:{}", agent.port);
    let prometheus = Prometheus::start(&instance);
    wait_until(
        "Prometheus scrapes the agent: up == 1",
        Duration::from_secs(60),
        || prometheus.query_one("up{job=\"gimbal\"}") == Some(1.0),
    );
    for (cgroup, comm, code) in [(&quoted, &forger, "3"), (&invalid, &breaker, "4")] {
        let promql = format!("gimbal_process_exits_total{{comm={}}}", promql_string(comm));
        let got = wait_for(&promql, Duration::from_secs(30), || {
            prometheus.query(&promql).filter(|r| !r.is_empty())
        });
        assert_eq!(got.len(), 1, "{promql}: {got:?}");
        let (labels, value) = &got[0];
        assert_eq!(*value, 1.0);
        let want = [
            ("__name__", "gimbal_process_exits_total"),
            ("cgroup", cgroup.label.as_str()),
            ("code", code),
            ("comm", comm.as_str()),
            ("instance", instance.as_str()),
            ("job", "gimbal"),
            ("reason", "exited"),
        ];
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, want, "{promql}");
    }
    assert_eq!(
        prometheus.query("{__name__=~\"evil.*\"}"),
        Some(vec![]),
        "a forged series reached Prometheus"
    );

    // 520 distinct comms fill the 500 label sets of gimbal_process_exits_total ...
    let procs = quoted.procs();
    for i in 0..520 {
        exited(&procs, format!("flood-{i}").as_bytes(), 0);
    }
    let folded = "gimbal_series_folded_total{metric=\"gimbal_process_exits_total\"} ";
    wait_until(
        "the exit label budget is full",
        Duration::from_secs(15),
        || agent.metric(folded).is_some_and(|n| n >= 20.0),
    );
    // ... and a SIGKILL after that is still counted as one, under `other`.
    let killed = exits_line("other", "other", "signaled", "SIGKILL");
    let before = agent.metric(&killed).unwrap_or(0.0);
    let victim = spawn_as_nobody(&procs, b"victim", None);
    // SAFETY: signalling our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let status = wait_pid(victim);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    wait_until(
        "the SIGKILL counted under reason=signaled, code=SIGKILL",
        Duration::from_secs(15),
        || agent.metric(&killed).is_some_and(|n| n >= before + 1.0),
    );
    let (ok, said) = promtool(&agent.metrics());
    assert!(ok, "promtool check metrics after the flood: {said}");
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn hostile_names_reach_alertmanager_intact_and_the_audit_log_one_record_per_line() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let quoted = Cgroup::new(unique("x q\"b\\s y").as_bytes());
    let state = TempDir::new("hostile-alerts");
    let config = state.0.join("gimbal.toml");
    // Dry-run (the default): the signal is decided and audited, not sent.
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {}\n[[targets]]\nname = \"svc\"\ncgroup = {cgroup}\n\
             [alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\nresend_interval = \"5s\"\n\
             [[signal]]\nname = \"checkpoint\"\nwhen = \"TargetProcessKilled\"\ntarget = \"svc\"\n\
             cgroups = [{cgroup}]\nsignal = \"SIGUSR1\"\n",
            toml_string(&state.0.display().to_string()),
            am.port,
            cgroup = toml_string(&quoted.label),
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let procs = quoted.procs();
    let survivor = Killed(spawn_as_nobody(&procs, b"survivor", None));
    wait_until(
        "the hostile cgroup's target up",
        Duration::from_secs(10),
        || agent.metric("gimbal_target_up{target=\"svc\"} ") == Some(1.0),
    );
    let victim = spawn_as_nobody(&procs, FORGER, None);
    // It names itself after joining the cgroup and dropping to nobody: kill it only then.
    wait_until("the victim named", Duration::from_secs(5), || {
        std::fs::read(format!("/proc/{victim}/comm")).is_ok_and(|c| c.starts_with(FORGER))
    });
    // SAFETY: signalling our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    wait_pid(victim);

    let forger = String::from_utf8_lossy(FORGER).into_owned();
    let alert = wait_for(
        "TargetProcessKilled in Alertmanager",
        Duration::from_secs(15),
        || {
            am.active_alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "TargetProcessKilled" && a["labels"]["target"] == "svc"
            })
        },
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains(&format!(
            "The last exit: {forger} (pid {victim}) signaled SIGKILL."
        )),
        "the comm reaches Alertmanager byte for byte: {summary:?}"
    );

    let records = wait_for(
        "the dry-run signal audited",
        Duration::from_secs(15),
        || {
            // audit() fails the test on any line that is not one whole JSON record.
            let records = audit(&state);
            records
                .iter()
                .any(|r| r["phase"] == "outcome" && r["action"] == "signal")
                .then_some(records)
        },
    );
    let raw = std::fs::read_to_string(state.0.join("remediation/audit.jsonl")).unwrap();
    assert_eq!(raw.lines().count(), records.len(), "one record per line");
    assert!(
        records.iter().any(|r| r["cgroup"] == quoted.label.as_str()),
        "the hostile cgroup name is recorded exactly: {records:?}"
    );
    drop((survivor, agent));
}

/// A child killed and reaped on drop, so a failing test leaves its cgroup removable.
struct Killed(libc::pid_t);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
        wait_pid(self.0);
    }
}
