//! A real Alertmanager (Debian's prometheus-alertmanager) on a loopback port, with its own
//! config and storage in a temporary directory; stopped on drop.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{agent::http_get_as, free_port, TempDir};

pub struct Alertmanager {
    child: Child,
    pub port: u16,
    /// `Authorization` value the harness queries with.
    auth: Option<String>,
    /// CA file when serving TLS.
    tls_ca: Option<PathBuf>,
    /// The certificate and key the harness presents when the instance requires one.
    tls_client: Option<(PathBuf, PathBuf)>,
    _pki: Option<TempDir>,
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
        let am = Self::start_with(port, None, None);
        am.wait_ready();
        am
    }

    /// Serving HTTPS with a certificate for 127.0.0.1 from a CA made for the test; returns
    /// the CA file the agent must trust.
    pub fn start_with_tls() -> (Self, PathBuf) {
        let (am, pki) = Self::start_tls(false);
        (am, pki.join("ca.crt"))
    }

    /// Serving HTTPS and requiring a client certificate signed by the test CA
    /// (`RequireAndVerifyClientCert`); returns the directory of `crate::pki::pki`'s files
    /// (ca.crt, client.crt/.key, expired.crt/.key...).
    pub fn start_with_mtls() -> (Self, PathBuf) {
        Self::start_tls(true)
    }

    fn start_tls(require_client: bool) -> (Self, PathBuf) {
        let pki = TempDir::new("pki");
        crate::pki::pki(&pki.0);
        let mut am = Self::start_with(free_port(), None, Some((&pki.0, require_client)));
        am.tls_ca = Some(pki.0.join("ca.crt"));
        if require_client {
            am.tls_client = Some((pki.0.join("client.crt"), pki.0.join("client.key")));
        }
        am.wait_ready();
        let dir = pki.0.clone();
        am._pki = Some(pki);
        (am, dir)
    }

    /// Requiring HTTP basic auth: `user` with the password whose bcrypt hash is given; the
    /// harness itself then queries with `password`.
    pub fn start_with_basic_auth(user: &str, bcrypt: &str, password: &str) -> Self {
        let am = Self::start_with(free_port(), Some((user, bcrypt, password)), None);
        am.wait_ready();
        am
    }

    fn start_with(
        port: u16,
        basic_auth: Option<(&str, &str, &str)>,
        tls_dir: Option<(&Path, bool)>,
    ) -> Self {
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
        if let Some((pki, require_client)) = tls_dir {
            let web = dir.0.join("web.yml");
            let mut conf = format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                pki.join("server.crt").display(),
                pki.join("server.key").display()
            );
            if require_client {
                conf.push_str(&format!(
                    "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
                    pki.join("ca.crt").display()
                ));
            }
            std::fs::write(&web, conf).unwrap();
            cmd.arg(format!("--web.config.file={}", web.display()));
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
        Self {
            child,
            port,
            auth,
            tls_ca: None,
            tls_client: None,
            _pki: None,
            _dir: dir,
        }
    }

    fn wait_ready(&self) {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/-/ready").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Alertmanager not ready on port {port} after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET with the harness's credentials, if any; over HTTPS through Python's ssl module
    /// (an independent TLS client) when the instance serves TLS.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let Some(ca) = &self.tls_ca else {
            return http_get_as(self.port, path, self.auth.as_deref());
        };
        let script = "import ssl,sys,urllib.request\n\
ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
if len(sys.argv) > 3: ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
r = urllib.request.urlopen(sys.argv[2], context=ctx, timeout=5)\n\
print(r.status); sys.stdout.write(r.read().decode())\n";
        let url = format!("https://127.0.0.1:{}{path}", self.port);
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script]).arg(ca).arg(url);
        if let Some((cert, key)) = &self.tls_client {
            cmd.arg(cert).arg(key);
        }
        let out = cmd.output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let (status, body) = text.split_once('\n')?;
        Some((status.trim().parse().ok()?, body.to_string()))
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
        crate::terminate(&mut self.child);
    }
}
