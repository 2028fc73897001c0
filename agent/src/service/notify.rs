//! The sd_notify protocol (sd_notify(3)), without libsystemd: one datagram per state change
//! to the socket systemd names in $NOTIFY_SOCKET. Outside systemd every call is a no-op.
use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    time::{Duration, Instant},
};

pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    /// Half of systemd's WatchdogSec, when the watchdog is on for this process.
    watchdog_every: Option<Duration>,
    last_ping: Option<Instant>,
}

enum Target {
    Path(PathBuf),
    /// Linux abstract socket ("@name" in $NOTIFY_SOCKET).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads $NOTIFY_SOCKET and $WATCHDOG_USEC / $WATCHDOG_PID as systemd sets them.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            use std::os::unix::ffi::OsStrExt;
            let bytes = s.as_bytes();
            let target = match bytes.strip_prefix(b"@") {
                Some(name) => Target::Abstract(name.to_vec()),
                None if bytes.starts_with(b"/") => Target::Path(PathBuf::from(&s)),
                None => {
                    tracing::warn!(
                        "NOTIFY_SOCKET is neither a path nor @abstract; not notifying systemd"
                    );
                    return None;
                }
            };
            // Non-blocking: a service manager that stops reading must not stall the
            // agent's only thread (a full queue drops a ping; READY and STOPPING retry).
            match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                Ok(sock) => Some((sock, target)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the sd_notify socket");
                    None
                }
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .map(|p| p.trim() == std::process::id().to_string())
            .unwrap_or(true);
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && socket.is_some())
            .map(|u| Duration::from_micros(u) / 2);
        Self {
            socket,
            watchdog_every,
            last_ping: None,
        }
    }

    /// How often the main loop must call `watchdog`, if systemd watches this process.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    pub fn ready(&mut self, status: &str) {
        let message = format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id());
        self.send_retrying(&message);
    }

    pub fn stopping(&mut self) {
        self.send_retrying("STOPPING=1\nSTATUS=stopping");
    }

    /// State changes systemd must not miss: up to a second of retries on a full queue.
    fn send_retrying(&mut self, message: &str) {
        for _ in 0..100 {
            match self.try_send(message) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                result => return log_failure(result, message),
            }
        }
        tracing::warn!(
            message,
            "sd_notify: the service manager is not reading; gave up"
        );
    }

    pub fn status(&mut self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    /// Pings the watchdog, at most once per half period.
    pub fn watchdog(&mut self) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        if self.last_ping.is_some_and(|t| t.elapsed() < every / 2) {
            return;
        }
        self.last_ping = Some(Instant::now());
        self.send("WATCHDOG=1");
    }

    fn send(&mut self, message: &str) {
        let result = self.try_send(message);
        log_failure(result, message);
    }

    fn try_send(&self, message: &str) -> std::io::Result<()> {
        let Some((sock, target)) = &self.socket else {
            return Ok(());
        };
        match target {
            Target::Path(p) => sock.send_to(message.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
            }
        }
        .map(drop)
    }
}

fn log_failure(result: std::io::Result<()>, message: &str) {
    if let Err(e) = result {
        tracing::warn!(error = %e, message, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The datagrams systemd would receive, read from a socket this test binds.
    #[test]
    fn ready_and_watchdog_reach_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("gimbal-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), Target::Path(path.clone()))),
            watchdog_every: Some(Duration::from_secs(10)),
            last_ping: None,
        };
        let mut buf = [0u8; 256];
        n.ready("serving");
        let len = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(
            got.starts_with("READY=1\nSTATUS=serving\nMAINPID="),
            "{got}"
        );
        n.watchdog();
        n.watchdog(); // within the half period: not sent again
        n.stopping();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=stopping");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
