//! A real Alertmanager (Debian's prometheus-alertmanager) on a loopback port, with its own
//! config and storage in a temporary directory; stopped on drop.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{agent::http_get_as, free_port, TempDir};

pub struct Alertmanager {
    child: Child,
    pub port: u16,
    /// `Authorization` value the harness queries with.
    auth: Option<String>,
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
        Self::start_with(port, None)
    }

    /// Requiring HTTP basic auth: `user` with the password whose bcrypt hash is given; the
    /// harness itself then queries with `password`.
    pub fn start_with_basic_auth(user: &str, bcrypt: &str, password: &str) -> Self {
        Self::start_with(free_port(), Some((user, bcrypt, password)))
    }

    fn start_with(port: u16, basic_auth: Option<(&str, &str, &str)>) -> Self {
        let dir = TempDir::new("alertmanager");
        std::fs::write(dir.0.join("alertmanager.yml"), CONFIG).unwrap();
        let mut cmd = Command::new("prometheus-alertmanager");
        let mut auth = None;
        if let Some((user, hash, password)) = basic_auth {
            let web = dir.0.join("web.yml");
            std::fs::write(&web, format!("basic_auth_users:\n  {user}: {hash}\n")).unwrap();
            cmd.arg(format!("--web.config.file={}", web.display()));
            auth = Some(gimbal::alert::basic_auth(user, password));
        }
        let child = cmd
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
            auth,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while am.get("/-/ready").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Alertmanager not ready on port {port} after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// GET with the harness's credentials, if any.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get_as(self.port, path, self.auth.as_deref())
    }

    /// Active alerts (not resolved, not silenced) as Alertmanager reports them.
    pub fn active_alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = self
            .get("/api/v2/alerts?active=true&silenced=false&inhibited=false")
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
