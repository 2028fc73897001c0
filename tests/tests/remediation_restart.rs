//! `[[restart]]` on this host, where systemd is not PID 1: the agent decides the restart
//! when TargetDown fires for a unit target, and reports why it cannot carry it out instead
//! of failing silently. (The restart itself, through D-Bus, is tested in the VM test bed,
//! where systemd is PID 1: tests/vm/guest.sh.)
use std::time::Duration;

use gimbal_tests::{agent::Agent, audit, require_root, unique, wait_until, TempDir};

#[test]
fn a_restart_that_cannot_be_carried_out_is_audited_and_counted_as_failed_with_why() {
    if !require_root!() {
        return;
    }
    let state = TempDir::new("restart");
    let unit = format!("{}.service", unique("unit"));
    let file = state.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[remediation]\nmode = \"enforce\"\n\
             [[targets]]\nname = \"web\"\nunit = \"{unit}\"\n[[restart]]\ntarget = \"web\"\n",
            state.0.display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", file.to_str().unwrap()]);
    let failed = "gimbal_remediations_total{action=\"restart\",result=\"failed\"} ";
    wait_until("a failed restart counted", Duration::from_secs(15), || {
        agent.metric(failed).is_some()
    });
    let lines = audit(&state);
    let outcome = lines
        .iter()
        .find(|l| l["phase"] == "outcome" && l["action"] == "restart")
        .unwrap_or_else(|| panic!("no restart outcome in\n{lines:#?}"));
    assert_eq!(outcome["result"], "failed");
    assert_eq!(outcome["cgroup"], unit.as_str());
    let why = outcome["detail"].as_str().unwrap();
    // No systemd as PID 1 here; on a host with one, systemd itself refuses the unknown unit.
    assert!(
        why.contains("systemd is not PID 1") || why.contains("not found"),
        "{why}"
    );
}
