//! Client certificates towards a real Alertmanager (Debian's) that requires and verifies
//! them (`RequireAndVerifyClientCert`, issue 15). Without a certificate, and with an
//! expired one, delivery fails, is counted and the alert waits in the spool; a reload
//! with the right certificate delivers it. What arrived is read back from Alertmanager's
//! API through TLS with a client certificate (Python's ssl module, not the agent's
//! stack). Certificates come from the openssl CLI.
use std::{path::Path, process::Command, time::Duration};

use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, require_root, sample, wait_until, TempDir, TestCgroup,
};

/// The agent's config: one target (an empty cgroup, so TargetDown fires at the first
/// tick) and one Alertmanager entry with `tls` settings.
fn config(dir: &TempDir, cgroup: &str, url: &str, tls: &str) -> String {
    format!(
        "[agent]\nstate_dir = \"{}\"\n[[targets]]\nname = \"mtls\"\ncgroup = \"{cgroup}\"\n[alerting]\nresend_interval = \"1s\"\nalertmanagers = [{{ url = \"{url}\", {tls} }}]\n",
        dir.0.display()
    )
}

/// Whether a GET to `port` through TLS, trusting `ca` and offering no certificate, is
/// answered: the instance must refuse it, or the test proves nothing.
fn answered_without_certificate(port: u16, ca: &Path) -> bool {
    let script = "import ssl,sys,urllib.request\n\
ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
urllib.request.urlopen(sys.argv[2], context=ctx, timeout=5)\n";
    Command::new("python3")
        .args(["-c", script])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{port}/api/v2/status"))
        .output()
        .expect("python3")
        .status
        .success()
}

fn reload(agent: &Agent, accepted: f64) {
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    wait_until("reload accepted", Duration::from_secs(10), || {
        sample(
            &agent.metrics(),
            "gimbal_config_reloads_total{result=\"accepted\"} ",
        ) == Some(accepted)
    });
}

#[test]
fn alerts_reach_an_alertmanager_that_requires_client_certificates_once_one_is_configured() {
    if !require_root!() {
        return;
    }
    let (am, pki) = Alertmanager::start_with_mtls();
    assert!(
        !answered_without_certificate(am.port, &pki.join("ca.crt")),
        "Alertmanager must refuse a TLS client without a certificate"
    );
    let url = format!("https://127.0.0.1:{}", am.port);
    let cgroup = TestCgroup::new("mtls");
    let dir = TempDir::new("mtls-config");
    let path = dir.0.join("gimbal.toml");
    let ca = format!("tls_ca_file = \"{}\"", pki.join("ca.crt").display());
    let with_cert = |name: &str| {
        format!(
            "{ca}, tls_cert_file = \"{}\", tls_key_file = \"{}\"",
            pki.join(format!("{name}.crt")).display(),
            pki.join(format!("{name}.key")).display()
        )
    };
    std::fs::write(&path, config(&dir, &cgroup.name, &url, &ca)).unwrap();
    let agent = Agent::start_with(&["--config", path.to_str().unwrap()]);

    let failed =
        format!("gimbal_alertmanager_notifications_total{{endpoint=\"{url}\",result=\"failed\"}} ");
    let sent =
        format!("gimbal_alertmanager_notifications_total{{endpoint=\"{url}\",result=\"sent\"}} ");
    let queued = format!("gimbal_alertmanager_queue_length{{endpoint=\"{url}\"}} ");
    let value = |agent: &Agent, line: &str| sample(&agent.metrics(), line).unwrap_or(0.0);
    let target_down = || {
        am.has_active(&[
            ("alertname", "TargetDown"),
            ("target", "mtls"),
            ("severity", "critical"),
        ])
    };

    // No certificate: refused in the handshake, counted, spooled.
    wait_until(
        "failed attempts and a spooled batch",
        Duration::from_secs(20),
        || value(&agent, &failed) >= 2.0 && value(&agent, &queued) >= 1.0,
    );
    assert_eq!(
        value(&agent, &sent),
        0.0,
        "nothing sent without a certificate"
    );
    assert!(am.active_alerts().is_empty(), "{:?}", am.active_alerts());

    // An expired certificate signed by the right CA: still refused.
    std::fs::write(
        &path,
        config(&dir, &cgroup.name, &url, &with_cert("expired")),
    )
    .unwrap();
    reload(&agent, 1.0);
    let before = value(&agent, &failed);
    wait_until(
        "failed with the expired one",
        Duration::from_secs(20),
        || value(&agent, &failed) >= before + 2.0,
    );
    assert_eq!(
        value(&agent, &sent),
        0.0,
        "nothing sent with an expired certificate"
    );
    assert!(am.active_alerts().is_empty(), "{:?}", am.active_alerts());

    // The valid one: the spooled alert arrives, and the spool empties.
    std::fs::write(
        &path,
        config(&dir, &cgroup.name, &url, &with_cert("client")),
    )
    .unwrap();
    reload(&agent, 2.0);
    wait_until("TargetDown over mTLS", Duration::from_secs(20), target_down);
    wait_until("spool drained", Duration::from_secs(10), || {
        value(&agent, &queued) == 0.0 && value(&agent, &sent) >= 1.0
    });
    assert_eq!(agent.stop(), 0);
}
