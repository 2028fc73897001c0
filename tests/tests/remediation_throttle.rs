//! Noisy-neighbour protection end to end, with the real agent: a critical target goes down,
//! its TargetDown alert fires, and the agent (enforce) holds a CPU hog in a cgroup this test
//! made to a quarter of a CPU (measured from the kernel's schedstat), then gives it back when
//! the target is up again, writing an audit line before and after each change. Then the
//! agent is SIGKILLed while the throttle is active: the next agent, in dry-run, restores the
//! quota at start and, although the alert still fires, leaves the file alone.
//! A freeze rule stops a CPU hog in a cgroup2 group while the alert fires (cgroup.events
//! says frozen, schedstat says no CPU) and thaws it when the alert resolves.
use std::{process::Command, time::Duration};

use gimbal_tests::{
    agent::Agent, audit, cpu_share_in, require_root, sibling_binary, spawn_in, wait_until,
    CpuGroup, TempDir, TestCgroup,
};

const WAIT: Duration = Duration::from_secs(15);

fn config(state: &TempDir, critical: &TestCgroup, noisy: &CpuGroup, mode: &str) -> String {
    let file = state.0.join(format!("gimbal-{mode}.toml"));
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[targets]]\nname = \"critical\"\ncgroup = \"{}\"\n\n\
             [remediation]\nmode = \"{mode}\"\n\n[[throttle]]\nname = \"protect-critical\"\n\
             when = \"TargetDown\"\ntarget = \"critical\"\ncgroups = [\"{}\"]\ncpu = 0.25\n",
            state.0.display(),
            critical.name,
            noisy.relative()
        ),
    )
    .unwrap();
    file.display().to_string()
}

#[test]
fn a_firing_alert_throttles_the_noisy_cgroup_and_a_killed_agent_is_undone_on_restart() {
    if !require_root!() {
        return;
    }
    let workload = sibling_binary("gimbal-workload");
    let state = TempDir::new("throttle");
    let critical = TestCgroup::new("critical");
    let noisy = CpuGroup::new();
    let quota = noisy.quota_file();
    let original = std::fs::read_to_string(&quota).unwrap();
    let hog = spawn_in(
        Command::new(&workload).args(["spin", "1000000000000"]),
        &[noisy.dir().join("cgroup.procs")],
    );
    let service = critical.spawn_into(Command::new(&workload).arg("pause"));

    let agent = Agent::start_with(&["--config", &config(&state, &critical, &noisy, "enforce")]);
    wait_until("the critical target up", WAIT, || {
        agent.metric("gimbal_target_up{target=\"critical\"} ") == Some(1.0)
    });
    assert_eq!(std::fs::read_to_string(&quota).unwrap(), original);

    drop(service); // killed: TargetDown fires
    let throttled = "gimbal_remediations_total{action=\"throttle\",result=\"done\"} ";
    wait_until("the throttle", WAIT, || {
        agent.metric(throttled) == Some(1.0)
    });
    let applied = std::fs::read_to_string(&quota).unwrap();
    assert_ne!(applied, original, "{} unchanged", quota.display());
    std::thread::sleep(Duration::from_millis(300));
    cpu_share_in(
        hog.id(),
        Duration::from_secs(2),
        0.15..0.35,
        "the hog held to its 0.25 quota",
    );

    let service = critical.spawn_into(Command::new(&workload).arg("pause"));
    let given_back = "gimbal_remediations_total{action=\"unthrottle\",result=\"done\"} ";
    wait_until("the throttle given back", WAIT, || {
        agent.metric(given_back) == Some(1.0)
    });
    assert_eq!(std::fs::read_to_string(&quota).unwrap(), original);
    let lines = audit(&state);
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["phase"].as_str().unwrap().into(),
                l["action"].as_str().unwrap().into(),
                l["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    let s = |p: &str, a: &str, r: &str| (p.to_string(), a.to_string(), r.to_string());
    assert_eq!(
        summary,
        [
            s("intent", "throttle", "pending"),
            s("outcome", "throttle", "done"),
            s("intent", "unthrottle", "pending"),
            s("outcome", "unthrottle", "done"),
        ],
        "{lines:#?}"
    );
    assert!(lines
        .iter()
        .all(|l| l["cgroup"] == noisy.relative().as_str()));

    // Down again, throttled again, and the agent dies without giving the CPU back.
    drop(service);
    wait_until("the second throttle", WAIT, || {
        agent.metric(throttled) == Some(2.0)
    });
    let mut agent = agent;
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    assert_ne!(std::fs::read_to_string(&quota).unwrap(), original);

    // The next agent restores it at start; in dry-run it only decides, though the target
    // is still down and TargetDown still fires.
    let next = Agent::start_with(&["--config", &config(&state, &critical, &noisy, "dry-run")]);
    assert_eq!(
        std::fs::read_to_string(&quota).unwrap(),
        original,
        "restored by the next agent"
    );
    let lines = audit(&state);
    let restore = lines
        .iter()
        .rev()
        .find(|l| l["rule"] == "(left by the previous agent)" && l["phase"] == "outcome")
        .unwrap_or_else(|| panic!("no audited outcome of the restore at start:\n{lines:#?}"));
    assert_eq!(restore["result"], "done");
    let dry = "gimbal_remediations_total{action=\"throttle\",result=\"dry_run\"} ";
    wait_until("the dry-run decision", WAIT, || {
        next.metric(dry) == Some(1.0)
    });
    assert_eq!(
        std::fs::read_to_string(&quota).unwrap(),
        original,
        "dry-run changed the quota"
    );
    drop(next);
    drop(hog);
}

#[test]
fn a_firing_alert_freezes_the_matched_cgroup_and_thaws_it_when_resolved() {
    if !require_root!() {
        return;
    }
    let workload = sibling_binary("gimbal-workload");
    let state = TempDir::new("freeze");
    let critical = TestCgroup::new("critical");
    let batch = TestCgroup::new("batch");
    let hog = batch.spawn_into(Command::new(&workload).args(["spin", "1000000000000"]));
    let service = critical.spawn_into(Command::new(&workload).arg("pause"));
    let file = state.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[targets]]\nname = \"critical\"\ncgroup = \"{}\"\n\n\
             [remediation]\nmode = \"enforce\"\n\n[[throttle]]\nname = \"pause-batch\"\n\
             when = \"TargetDown\"\ntarget = \"critical\"\ncgroups = [\"{}\"]\nfreeze = true\n",
            state.0.display(),
            critical.name,
            batch.name
        ),
    )
    .unwrap();
    let frozen = || {
        std::fs::read_to_string(batch.path.join("cgroup.events"))
            .unwrap()
            .contains("frozen 1")
    };
    let agent = Agent::start_with(&["--config", file.to_str().unwrap()]);
    wait_until("the critical target up", WAIT, || {
        agent.metric("gimbal_target_up{target=\"critical\"} ") == Some(1.0)
    });
    assert!(!frozen());

    drop(service); // TargetDown fires
    wait_until("the batch cgroup frozen (cgroup.events)", WAIT, frozen);
    cpu_share_in(hog.id(), Duration::from_secs(1), 0.0..0.02, "a frozen hog");

    let _service = critical.spawn_into(Command::new(&workload).arg("pause"));
    wait_until("thawed", WAIT, || !frozen());
    cpu_share_in(
        hog.id(),
        Duration::from_secs(1),
        0.3..2.0,
        "the thawed hog runs again",
    );
    let lines = audit(&state);
    let summary: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().into(),
                l["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    let s = |a: &str, r: &str| (a.to_string(), r.to_string());
    assert_eq!(
        summary,
        [
            s("freeze", "pending"),
            s("freeze", "done"),
            s("thaw", "pending"),
            s("thaw", "done")
        ],
        "{lines:#?}"
    );
    drop(agent);
    drop(hog);
}

/// Two throttle rules, each bound to its own critical target, under `max_concurrent = 1`:
/// the second alert's throttle waits (audited and counted as deferred, its cgroup's quota
/// untouched) until the first is given back, then goes ahead because its alert still fires.
#[test]
fn the_node_wide_cap_defers_a_second_throttle_until_the_first_is_given_back() {
    if !require_root!() {
        return;
    }
    let workload = sibling_binary("gimbal-workload");
    let state = TempDir::new("throttle-cap");
    let critical = [TestCgroup::new("critical-a"), TestCgroup::new("critical-b")];
    let noisy = [CpuGroup::new(), CpuGroup::new()];
    let quota = |i: usize| std::fs::read_to_string(noisy[i].quota_file()).unwrap();
    let original = [quota(0), quota(1)];
    let mut config = format!(
        "[agent]\nstate_dir = \"{}\"\n[remediation]\nmode = \"enforce\"\nmax_concurrent = 1\n",
        state.0.display()
    );
    for (i, ab) in ["a", "b"].iter().enumerate() {
        config += &format!(
            "[[targets]]\nname = \"critical-{ab}\"\ncgroup = \"{}\"\n\
             [[throttle]]\nname = \"protect-{ab}\"\nwhen = \"TargetDown\"\ntarget = \"critical-{ab}\"\n\
             cgroups = [\"{}\"]\ncpu = 0.25\n",
            critical[i].name,
            noisy[i].relative()
        );
    }
    let file = state.0.join("gimbal.toml");
    std::fs::write(&file, config).unwrap();
    let services = || {
        critical
            .each_ref()
            .map(|c| c.spawn_into(Command::new(&workload).arg("pause")))
    };
    let [service_a, service_b] = services();
    let agent = Agent::start_with(&["--config", &file.display().to_string()]);
    let up = |ab: &str| {
        agent.metric(&format!("gimbal_target_up{{target=\"critical-{ab}\"}} ")) == Some(1.0)
    };
    wait_until("both critical targets up", WAIT, || up("a") && up("b"));
    let count = |result: &str| {
        let line = format!("gimbal_remediations_total{{action=\"throttle\",result=\"{result}\"}} ");
        agent.metric(&line).unwrap_or(0.0)
    };

    drop(service_a);
    wait_until("the first throttle", WAIT, || count("done") == 1.0);
    assert_ne!(quota(0), original[0]);
    drop(service_b);
    wait_until("the second throttle deferred", WAIT, || {
        count("deferred") == 1.0
    });
    assert_eq!(quota(1), original[1], "throttled over the cap");
    assert_eq!(count("done"), 1.0);

    let service_a = critical[0].spawn_into(Command::new(&workload).arg("pause"));
    wait_until(
        "the second throttle once the first is given back",
        WAIT,
        || count("done") == 2.0,
    );
    assert_eq!(quota(0), original[0], "the first given back");
    assert_ne!(quota(1), original[1]);
    assert_eq!(count("deferred"), 1.0, "a deferral is reported once");

    let lines = audit(&state);
    let deferred: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["result"] == "deferred").collect();
    assert_eq!(deferred.len(), 1, "{lines:#?}");
    assert_eq!(deferred[0]["rule"], "protect-b");
    assert!(
        deferred[0]["detail"]
            .as_str()
            .unwrap()
            .contains("max_concurrent"),
        "{lines:#?}"
    );
    assert_eq!(agent.stop(), 0);
    assert_eq!(quota(1), original[1], "given back when the agent stops");
    drop(service_a);
}

/// A throttle rule whose cgroup is on `[remediation] protected` is refused when its alert
/// fires: audited and counted as refused, and the cgroup's quota stays as it was. Holding
/// nothing, it takes no slot of the node-wide cap: a second rule under `max_concurrent = 1`
/// still throttles its own cgroup.
#[test]
fn a_protected_cgroup_is_refused_counted_and_left_alone() {
    if !require_root!() {
        return;
    }
    let workload = sibling_binary("gimbal-workload");
    let state = TempDir::new("throttle-protected");
    let critical = TestCgroup::new("critical");
    let noisy = CpuGroup::new();
    let other = CpuGroup::new();
    let quota = || std::fs::read_to_string(noisy.quota_file()).unwrap();
    let original = quota();
    let other_quota = || std::fs::read_to_string(other.quota_file()).unwrap();
    let other_original = other_quota();
    let relative = noisy.relative();
    let last = relative.rsplit('/').next().unwrap();
    let file = state.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[remediation]\nmode = \"enforce\"\nprotected = [\"{last}\"]\n\
             max_concurrent = 1\n\
             [[targets]]\nname = \"critical\"\ncgroup = \"{}\"\n\
             [[throttle]]\nname = \"protect-critical\"\nwhen = \"TargetDown\"\ntarget = \"critical\"\n\
             cgroups = [\"{relative}\"]\ncpu = 0.25\n\
             [[throttle]]\nname = \"also\"\nwhen = \"TargetDown\"\ntarget = \"critical\"\n\
             cgroups = [\"{}\"]\ncpu = 0.25\n",
            state.0.display(),
            critical.name,
            other.relative()
        ),
    )
    .unwrap();
    let service = critical.spawn_into(Command::new(&workload).arg("pause"));
    let agent = Agent::start_with(&["--config", &file.display().to_string()]);
    wait_until("the critical target up", WAIT, || {
        agent.metric("gimbal_target_up{target=\"critical\"} ") == Some(1.0)
    });
    drop(service);
    let refused = "gimbal_remediations_total{action=\"throttle\",result=\"refused\"} ";
    wait_until("the throttle refused", WAIT, || {
        agent.metric(refused) == Some(1.0)
    });
    assert_eq!(quota(), original, "a protected cgroup was throttled");
    let done = "gimbal_remediations_total{action=\"throttle\",result=\"done\"} ";
    wait_until("the second rule's throttle", WAIT, || {
        agent.metric(done) == Some(1.0)
    });
    let deferred = "gimbal_remediations_total{action=\"throttle\",result=\"deferred\"} ";
    assert_eq!(
        agent.metric(deferred),
        None,
        "the refused rule took the only slot"
    );
    assert_ne!(other_quota(), other_original);
    let lines = audit(&state);
    let outcome = lines
        .iter()
        .find(|l| l["phase"] == "outcome" && l["rule"] == "protect-critical")
        .unwrap_or_else(|| panic!("no outcome audited:\n{lines:#?}"));
    assert_eq!(outcome["result"], "refused", "{lines:#?}");
    assert_eq!(outcome["cgroup"], relative.as_str());
    assert!(
        outcome["detail"].as_str().unwrap().contains("is protected"),
        "{lines:#?}"
    );
    assert_eq!(agent.stop(), 0);
    assert_eq!(quota(), original);
    assert_eq!(
        other_quota(),
        other_original,
        "given back when the agent stops"
    );
}
