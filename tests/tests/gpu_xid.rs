//! GPU XIDs through the real kernel log, no GPU needed: the test writes records in the
//! NVIDIA driver's own format (`NVRM: Xid (PCI:...): N, pid=..., name=..., ...`) to
//! /dev/kmsg as root, naming a real process it placed in a cgroup of its own, and checks
//! what the real agent counts per GPU and per cgroup, that a restart counts nothing twice
//! and what was logged while it was down once, and the alerts a real Alertmanager gets.
//!
//! Records written from user space carry a facility other than the kernel's, which the
//! agent ignores by default (no process can forge an XID); the agent under test is told
//! to count them (`kmsg_user_records = true`). Each run uses a PCI domain made of its own
//! pid and a marker text, so nothing else on the machine is confused.
use std::time::Duration;

use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, kmsg::log, promtool_check_metrics, require_root,
    sample, unique, wait_status, wait_until, workload, TempDir, TestCgroup,
};

/// The agent's config: its own state, the test's Alertmanager, user-space records
/// counted, and `extra` (top-level tables: targets, remediation) after them.
fn config(state: &TempDir, am: &Alertmanager, extra: &str) -> std::path::PathBuf {
    let path = state.0.join("gimbal.toml");
    let text = format!(
        "[agent]\nstate_dir = \"{}\"\n[alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\nresend_interval = \"1s\"\n[gpu]\nkmsg_user_records = true\n{extra}",
        state.0.display(),
        am.port
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn xids(agent: &Agent, bus: &str, xid: u32, action: &str) -> Option<f64> {
    sample(
        &agent.metrics(),
        &format!("gimbal_gpu_xid_errors_total{{gpu=\"{bus}\",xid=\"{xid}\",action=\"{action}\"}} "),
    )
}

fn by_cgroup(agent: &Agent, cgroup: &str, xid: u32, action: &str) -> Option<f64> {
    sample(
        &agent.metrics(),
        &format!(
            "gimbal_gpu_xid_errors_by_cgroup_total{{cgroup=\"{cgroup}\",xid=\"{xid}\",action=\"{action}\"}} "
        ),
    )
}

#[test]
fn xids_count_per_gpu_and_cgroup_alert_and_a_restart_counts_nothing_twice() {
    if !require_root!() {
        return;
    }
    let marker = unique("xid");
    // A PCI domain of this run's own: the counters it checks are its alone.
    let bus = format!("{:04x}:3b:00", std::process::id() & 0xffff);
    let cgroup = TestCgroup::new("gpu-job");
    let victim = cgroup.spawn_into(workload().arg("pause"));
    let pid = victim.id();
    let am = Alertmanager::start();
    let state = TempDir::new("gpu-state");
    let config = config(&state, &am, "");

    // Logged before the agent's first start: the backlog, skipped.
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 31, pid={pid}, name=gimbal-workload, before the start {marker}"
    ));
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    wait_until("kmsg attached, nvml not", Duration::from_secs(20), || {
        let m = agent.metrics();
        sample(&m, "gimbal_gpu_source_attached{source=\"kmsg\"} ") == Some(1.0)
            && sample(&m, "gimbal_gpu_source_attached{source=\"nvml\"} ") == Some(0.0)
    });

    // A GPU fallen off the bus (no process to blame), and an application XID twice, from
    // the victim, with hostile lines around them.
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus. {marker}"
    ));
    log(&format!(
        "NVRM: Xid (PCI:{bus}\"}}): 79, pid=1, name=x, {marker}"
    ));
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 99999, pid=1, name=x, {marker}"
    ));
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 13, pid=-1, name=x, {marker}"
    ));
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 13, pid={pid}, name=\"q\\\"\x01, {}",
        "x".repeat(900)
    ));
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 13, pid={pid}, name=gimbal-workload, Graphics Exception {marker}"
    ));
    wait_until("XIDs counted", Duration::from_secs(20), || {
        xids(&agent, &bus, 13, "restart-application") == Some(2.0)
            && xids(&agent, &bus, 79, "reboot-node") == Some(1.0)
    });
    let body = agent.metrics();
    assert_eq!(
        xids(&agent, &bus, 31, "restart-application"),
        None,
        "the backlog before the first start is skipped"
    );
    assert_eq!(
        by_cgroup(&agent, &cgroup.name, 13, "restart-application"),
        Some(2.0),
        "attributed to the victim's cgroup"
    );
    assert_eq!(by_cgroup(&agent, "unknown", 79, "reboot-node"), Some(1.0));
    assert!(
        !body.contains(&format!("{bus}\\\"")),
        "a malformed bus id is no GPU"
    );
    assert!(!body.contains("xid=\"99999\""));
    let (ok, said) = promtool_check_metrics(&body);
    assert!(ok, "promtool check metrics: {said}");

    // The built-in rules: the GPU fallen off the bus, and the application XID on the cgroup
    // it hit, each with the GPU's bus id, the XID and its action.
    wait_until(
        "both alerts in Alertmanager",
        Duration::from_secs(20),
        || {
            am.has_active(&[
                ("alertname", "GpuFallenOffBus"),
                ("severity", "critical"),
                ("gpu", &bus),
                ("xid", "79"),
                ("action", "reboot-node"),
                ("cgroup", "unknown"),
            ]) && am.has_active(&[
                ("alertname", "GpuApplicationXid"),
                ("gpu", &bus),
                ("xid", "13"),
                ("action", "restart-application"),
                ("cgroup", &cgroup.name),
            ])
        },
    );

    // A restart: what was read is never counted again; what was logged while the agent
    // was down is counted once.
    assert_eq!(agent.stop(), 0, "a clean stop");
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 64, pid={pid}, name=gimbal-workload, while the agent was down {marker}"
    ));
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 43, pid={pid}, name=gimbal-workload, after the restart {marker}"
    ));
    // Records are read in order: once the last is counted, every earlier one was read.
    wait_until(
        "the record after the restart",
        Duration::from_secs(20),
        || xids(&agent, &bus, 43, "none") == Some(1.0),
    );
    assert_eq!(
        xids(&agent, &bus, 64, "reset-gpu"),
        Some(1.0),
        "logged while down: counted once"
    );
    assert_eq!(by_cgroup(&agent, &cgroup.name, 64, "reset-gpu"), Some(1.0));
    for (xid, action) in [
        (79, "reboot-node"),
        (13, "restart-application"),
        (31, "restart-application"),
    ] {
        assert_eq!(
            xids(&agent, &bus, xid, action),
            None,
            "XID {xid} read before the restart: not again"
        );
    }
    wait_until(
        "GpuRowRemapFailure in Alertmanager",
        Duration::from_secs(20),
        || {
            am.has_active(&[
                ("alertname", "GpuRowRemapFailure"),
                ("gpu", &bus),
                ("xid", "64"),
                ("action", "reset-gpu"),
                ("cgroup", &cgroup.name),
            ])
        },
    );
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.0.join("gpu/kmsg.json")).expect("the saved position"),
    )
    .unwrap();
    assert!(
        saved["seq"].as_u64().is_some() && saved["boot_id"].as_str().is_some(),
        "{saved}"
    );
    assert_eq!(agent.stop(), 0);
}

/// The annotations of the active alert with these labels, once Alertmanager has one.
fn annotations(am: &Alertmanager, labels: &[(&str, &str)]) -> Option<serde_json::Value> {
    am.active_alerts()
        .into_iter()
        .find(|a| labels.iter().all(|(k, v)| a["labels"][*k] == *v))
        .map(|a| a["annotations"].clone())
}

/// A target's kill alert names the XID that hit the killed process before it: a
/// bystander in the same cgroup killed first gets no cause (the XID named another pid),
/// the victim killed after its XID gets "XID 79 on GPU <bus> (reboot-node), N s before".
#[test]
fn a_kill_of_the_xids_victim_names_the_xid_as_its_cause() {
    if !require_root!() {
        return;
    }
    let marker = unique("xid-kill");
    let bus = format!("{:04x}:5e:00", std::process::id() & 0xffff);
    let cgroup = TestCgroup::new("gpu-train");
    let mut victim = cgroup.spawn_into(workload().arg("pause"));
    let mut bystander = cgroup.spawn_into(workload().arg("pause"));
    let keeper = cgroup.spawn_into(workload().arg("pause"));
    let pid = victim.id();
    let am = Alertmanager::start();
    let state = TempDir::new("gpu-kill");
    let target = format!("train-{}", std::process::id());
    let config = config(
        &state,
        &am,
        &format!(
            "[[targets]]\nname = \"{target}\"\ncgroup = \"{}\"\n",
            cgroup.name
        ),
    );
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    wait_until("kmsg attached, target up", Duration::from_secs(20), || {
        let m = agent.metrics();
        sample(&m, "gimbal_gpu_source_attached{source=\"kmsg\"} ") == Some(1.0)
            && sample(&m, &format!("gimbal_target_up{{target=\"{target}\"}} ")) == Some(1.0)
    });
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 79, pid={pid}, name=gimbal-workload, GPU has fallen off the bus. {marker}"
    ));
    wait_until("the XID counted", Duration::from_secs(20), || {
        xids(&agent, &bus, 79, "reboot-node") == Some(1.0)
    });
    let kill_alert = [
        ("alertname", "TargetProcessKilled"),
        ("target", target.as_str()),
    ];

    // The bystander: killed after the XID, but the XID named the victim.
    bystander.kill().unwrap();
    let _ = wait_status(&mut bystander);
    let a = gimbal_tests::wait_for(
        "the bystander's kill alert",
        Duration::from_secs(20),
        || annotations(&am, &kill_alert),
    );
    assert!(
        a.get("cause").is_none(),
        "the bystander's kill has no GPU cause: {a}"
    );

    // The victim: its kill names the XID.
    victim.kill().unwrap();
    let _ = wait_status(&mut victim);
    let a = gimbal_tests::wait_for(
        "the victim's kill alert with its cause",
        Duration::from_secs(20),
        || annotations(&am, &kill_alert).filter(|a| a.get("cause").is_some()),
    );
    let cause = a["cause"].as_str().unwrap();
    let prefix = format!("XID 79 on GPU {bus} (reboot-node), ");
    assert!(
        cause.starts_with(&prefix) && cause.ends_with(" s before"),
        "{cause:?}"
    );
    let secs: f64 = cause[prefix.len()..cause.len() - " s before".len()]
        .parse()
        .unwrap_or_else(|e| panic!("{cause:?}: {e}"));
    assert!(secs < 60.0, "{cause:?}: within the default window");
    let summary = a["summary"].as_str().unwrap();
    assert!(
        summary.contains("SIGKILL") && summary.contains(&format!("after {cause}")),
        "{summary:?}"
    );
    drop(keeper);
    assert_eq!(agent.stop(), 0);
}

/// Remediation for an XID whose action is "restart the application": a `[[signal]]` rule
/// bound to GpuApplicationXid with `cgroup_from_alert` sends SIGTERM to the processes of
/// the cgroup the XID hit (the victim dies of it, as the test's own waitpid says; its
/// manager would start it again), and to nothing else. XIDs that call for a GPU reset
/// or a reboot (64 on a bystander, 79 on the GPU) alert, and the agent does nothing on
/// the node or to the bystander: one audited action in all.
#[test]
fn an_application_xid_signals_its_victims_cgroup_and_a_reset_or_reboot_xid_does_nothing() {
    if !require_root!() {
        return;
    }
    let marker = unique("xid-signal");
    let bus = format!("{:04x}:86:00", std::process::id() & 0xffff);
    let app = TestCgroup::new("gpu-app");
    let other = TestCgroup::new("gpu-other");
    let mut victim = app.spawn_into(workload().arg("pause"));
    let mut bystander = other.spawn_into(workload().arg("pause"));
    let (pid, other_pid) = (victim.id(), bystander.id());
    let am = Alertmanager::start();
    let state = TempDir::new("gpu-signal");
    let config = config(
        &state,
        &am,
        &format!(
            "[remediation]\nmode = \"enforce\"\n[[signal]]\nname = \"xid-restart\"\n\
             when = \"GpuApplicationXid\"\ncgroups = [\"gimbal-test-{}-*\"]\n\
             signal = \"SIGTERM\"\ncgroup_from_alert = true\n",
            std::process::id()
        ),
    );
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    wait_until("kmsg attached", Duration::from_secs(20), || {
        sample(
            &agent.metrics(),
            "gimbal_gpu_source_attached{source=\"kmsg\"} ",
        ) == Some(1.0)
    });

    log(&format!(
        "NVRM: Xid (PCI:{bus}): 13, pid={pid}, name=gimbal-workload, Graphics Exception {marker}"
    ));
    let status = wait_status(&mut victim);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM,
        "the victim ended with status {status:#x}, not by SIGTERM"
    );

    log(&format!(
        "NVRM: Xid (PCI:{bus}): 64, pid={other_pid}, name=gimbal-workload, row remap failed {marker}"
    ));
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus. {marker}"
    ));
    wait_until(
        "the reset and reboot alerts in Alertmanager",
        Duration::from_secs(20),
        || {
            am.has_active(&[
                ("alertname", "GpuRowRemapFailure"),
                ("cgroup", &other.name),
                ("action", "reset-gpu"),
            ]) && am.has_active(&[("alertname", "GpuFallenOffBus"), ("cgroup", "unknown")])
        },
    );
    // The rules ran and posted the firing set; give the remediation thread a few ticks.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was hit by a reset/reboot XID"
    );
    let lines = gimbal_tests::audit(&state);
    let outcomes: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["phase"] == "outcome").collect();
    assert_eq!(outcomes.len(), 1, "{lines:#?}");
    assert_eq!(outcomes[0]["action"], "signal");
    assert_eq!(outcomes[0]["cgroup"], app.name.as_str());
    assert_eq!(outcomes[0]["result"], "done");
    assert_eq!(outcomes[0]["detail"], "SIGTERM to 1 processes");
    assert_eq!(agent.stop(), 0);
}
