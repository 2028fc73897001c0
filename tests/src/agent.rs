//! The real agent binary, started on a free loopback port and scraped over HTTP.
use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{free_port, sibling_binary, wait_status, TempDir};

pub struct Agent {
    pub child: Child,
    pub port: u16,
    /// The state directory of an agent started on the default config.
    _state: Option<TempDir>,
}

impl Agent {
    /// With the embedded default config.
    /// The default config, except for a state directory of its own (never the host's
    /// /var/lib/gimbal).
    pub fn start() -> Self {
        Self::start_config("")
    }

    /// `start`, with `extra` TOML after the `[agent]` table's `state_dir`: more `[agent]`
    /// keys first if any, then other tables.
    pub fn start_config(extra: &str) -> Self {
        let state = TempDir::new("agent-state");
        let config = state.0.join("gimbal.toml");
        std::fs::write(
            &config,
            format!("[agent]\nstate_dir = \"{}\"\n{extra}", state.0.display()),
        )
        .unwrap();
        let mut agent = Self::start_with(&["--config", config.to_str().unwrap()]);
        agent._state = Some(state);
        agent
    }

    /// With extra `gimbal run` arguments, e.g. `--config FILE`.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_limited(args, None)
    }

    /// `start_with`, with `env` set for the agent (e.g. NODE_NAME, as the DaemonSet sets it).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(args, None, env)
    }

    /// `start_with`, the agent's open-file limit (soft and hard) set to `nofile` if given.
    pub fn start_limited(args: &[&str], nofile: Option<u64>) -> Self {
        Self::spawn(args, nofile, &[])
    }

    fn spawn(args: &[&str], nofile: Option<u64>, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(sibling_binary("gimbal"));
        command
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::inherit());
        if let Some(n) = nofile {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("start gimbal");
        let mut agent = Agent {
            child,
            port,
            _state: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.try_get("/healthz", None).map(|r| r.0) != Some(200) {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("gimbal exited before serving /healthz: {status} (its log is above)");
            }
            assert!(
                Instant::now() < deadline,
                "gimbal did not serve /healthz within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    /// (status, content type, body)
    pub fn try_get(&self, path: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
        let header = accept.map(|a| format!("Accept: {a}"));
        let (status, head, body) = request(self.port, path, header.as_deref())?;
        let ctype = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: "))?
            .to_string();
        Some((status, ctype, body))
    }

    pub fn metrics(&self) -> String {
        let (status, ctype, body) = self.try_get("/metrics", None).expect("scrape");
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        body
    }

    /// One sample of a scrape now, by its line prefix: `name{labels} `.
    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        crate::sample(&self.metrics(), line_prefix)
    }

    /// SIGTERM, then the exit status: the agent must stop cleanly.
    pub fn stop(mut self) -> i32 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_status(&mut self.child)
    }
}

impl Agent {
    /// The agent's resident memory, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("agent status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The agent's open file descriptors, from /proc (0 once it is gone).
    pub fn open_files(&self) -> usize {
        open_files(self.child.id())
    }
}

/// Open file descriptors of process `pid`, from /proc (0 if it is gone).
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One GET /healthz on a fresh plain connection, with a 1 s deadline: its status, or why
/// not.
pub fn healthz(addr: std::net::SocketAddr) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("receive: {e}"))?;
    reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {reply:?}"))
}

/// One HTTP/1.0 GET to a loopback port: (status, body). 1.0, so that the answer is never
/// chunked.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_as(port, path, None)
}

/// `http_get` with an `Authorization` header value.
pub fn http_get_as(port: u16, path: &str, authorization: Option<&str>) -> Option<(u16, String)> {
    let header = authorization.map(|a| format!("Authorization: {a}"));
    request(port, path, header.as_deref()).map(|(status, _, body)| (status, body))
}

/// One HTTP/1.0 GET (never chunked) with an optional extra header: (status, head, body).
fn request(port: u16, path: &str, header: Option<&str>) -> Option<(u16, String, String)> {
    let (status, head, body) = request_raw(port, "GET", path, header.into_iter())?;
    Some((status, head, String::from_utf8(body).ok()?))
}

/// One HTTP/1.0 request with extra header lines (no CRLF): (status, head, body bytes),
/// for bodies that are not text (gzip) and methods other than GET.
pub fn request_raw<'h>(
    port: u16,
    method: &str,
    path: &str,
    headers: impl Iterator<Item = &'h str>,
) -> Option<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    // A stalled agent fails the test instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(20))).ok()?;
    let extra: String = headers.map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{extra}\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8(raw[..end].to_vec()).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head, raw[end + 4..].to_vec()))
}

impl Drop for Agent {
    /// A test that fails half-way must not leave its agent running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
