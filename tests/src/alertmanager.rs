//! A real Alertmanager (Debian's prometheus-alertmanager) on a loopback port, with its own
//! config and storage in a temporary directory; stopped on drop.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{agent::http_get, free_port, TempDir};

pub struct Alertmanager {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

const CONFIG: &str =
    "route:\n  receiver: blackhole\n  group_wait: 0s\nreceivers:\n  - name: blackhole\n";

impl Alertmanager {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On a given port (for a test that first shows the agent coping without it).
    pub fn start_on(port: u16) -> Self {
        let dir = TempDir::new("alertmanager");
        std::fs::write(dir.0.join("alertmanager.yml"), CONFIG).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.0.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No cluster: the tests run instances side by side, not as peers.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package; cargo xtask setup installs it)");
        let am = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/-/ready").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Alertmanager not ready on port {port} after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// Active alerts (not resolved, not silenced) as Alertmanager reports them.
    pub fn active_alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(
            self.port,
            "/api/v2/alerts?active=true&silenced=false&inhibited=false",
        )
        .expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("Alertmanager's JSON");
        v.as_array().cloned().unwrap_or_default()
    }

    /// Whether an active alert with these labels is there.
    pub fn has_active(&self, labels: &[(&str, &str)]) -> bool {
        self.active_alerts().iter().any(|a| {
            labels.iter().all(|(k, v)| a["labels"][*k] == *v) && a["status"]["state"] == "active"
        })
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
