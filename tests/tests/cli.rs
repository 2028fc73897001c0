//! The `gimbal` command line without root: config checking and its error positions.
use std::process::Command;

use gimbal_tests::{sibling_binary, TempDir};

fn gimbal(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sibling_binary("gimbal"))
        .args(args)
        .output()
        .expect("run gimbal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_config_reports_every_error_with_file_line_and_column() {
    let dir = TempDir::new("config");
    let file = dir.0.join("gimbal.toml");
    std::fs::write(&file, "[agent]\nlisten = \"127.0.0.1\"\n\n[probes.process_exit]\nring_buffer_kb = 6\ncolour = \"red\"\n").unwrap();
    let f = file.display().to_string();
    let (code, _, err) = gimbal(&["check-config", &f]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{f}:2:10: invalid socket address syntax")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:6:1: unknown field `colour`")),
        "{err}"
    );
}

#[test]
fn the_embedded_default_config_checks_clean() {
    let dir = TempDir::new("config");
    let file = dir.0.join("default.toml");
    let (code, default, _) = gimbal(&["default-config"]);
    assert_eq!(code, 0);
    std::fs::write(&file, default).unwrap();
    let (code, out, err) = gimbal(&["check-config", &file.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with(": ok\n"), "{out}");
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, _, err) = gimbal(&["check-config", "/nonexistent/gimbal.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("/nonexistent/gimbal.toml: cannot read:"),
        "{err}"
    );
}

#[test]
fn the_documented_examples_check_clean() {
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples");
    for example in [
        "gimbal-node.toml",
        "remediation-bare-metal.toml",
        "remediation-gpu-node.toml",
    ] {
        let (code, out, err) = gimbal(&["check-config", &format!("{docs}/{example}")]);
        assert_eq!(code, 0, "{example}: {out}{err}");
    }
    let am = Command::new("amtool")
        .args(["check-config", &format!("{docs}/alertmanager.yml")])
        .output()
        .expect("amtool (Debian package prometheus-alertmanager; cargo xtask setup installs it)");
    assert!(
        am.status.success(),
        "{}{}",
        String::from_utf8_lossy(&am.stdout),
        String::from_utf8_lossy(&am.stderr)
    );
}

/// What `run` would refuse (or what would fail at every reload), refused first by
/// check-config, each at the field's own line and column.
#[test]
fn check_config_refuses_what_run_would_at_the_fields_position() {
    let dir = TempDir::new("config");
    let file = dir.0.join("gimbal.toml");
    let text = "\
[agent]
interval = \"50ms\"
[probes.process_exit]
ring_buffer_kb = 2147483648
[[targets]]
name = \"web-api\"
cgroup = \"system.slice/web.service\"
[[targets]]
name = \"api\"
cgroup = \"x/../system.slice\"
[alerting]
alertmanagers = [\"http://127.0.0.1:9093\", \"http://127.0.0.1:9093\\r\\nX-Evil: 1\"]
resend_interval = \"2h\"
bearer_token_file = \"/nonexistent/gimbal-token\"
[[signal]]
name = \"s\"
when = \"TargetDown\"
signal = \"SIGKILL\"
cgroups = [\"x/..\"]
[remediation]
backoff_max = \"4294967295h\"
";
    std::fs::write(&file, text).unwrap();
    let f = file.display().to_string();
    let (code, _, err) = gimbal(&["check-config", &f]);
    assert_eq!(code, 2, "{err}");
    for expected in [
        "2:1: `agent.interval` must be at least 100ms",
        "4:1: `probes.process_exit.ring_buffer_kb` must be at most 65536",
        "10:1: `targets.cgroup` of `api`: `x/../system.slice` has a `.` or `..` segment",
        "12:43: `alerting.alertmanagers` `http://127.0.0.1:9093\\r\\nX-Evil: 1` holds '\\r'",
        "13:1: `alerting.resend_interval` must be at most 1h",
        "14:1: `alerting.bearer_token_file` cannot read /nonexistent/gimbal-token",
        "19:12: `signal.cgroups` [[signal]] `s`: `x/..` has a `.` or `..` segment",
        "21:15: `4294967295h` is too long",
    ] {
        assert!(
            err.contains(&format!("{f}:{expected}")),
            "{expected}\n{err}"
        );
    }
    assert_eq!(err.lines().count(), 8, "{err}");
}
