//! A real HAProxy (Debian's `haproxy`) for the load-balancing tests and benchmark: started
//! on a config the caller writes (checked with `haproxy -c` first), read through its admin
//! socket (`show stat`), the ground truth of what it does with each server.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::Proc;

/// A running HAProxy; killed on drop.
pub struct Haproxy {
    _proc: Proc,
    /// Its admin socket: the config must declare `stats socket <dir>/admin.sock ... level admin`.
    pub socket: PathBuf,
}

impl Haproxy {
    /// Writes `config` to `<dir>/haproxy.cfg`, checks it (`haproxy -c`) and starts HAProxy
    /// in the foreground (`-db`).
    pub fn start(dir: &Path, config: &str) -> Self {
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check = Command::new("haproxy")
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .expect("run haproxy -c (cargo xtask setup installs haproxy)");
        assert!(
            check.status.success(),
            "haproxy refuses the config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let proc = Proc::spawn(
            Command::new("haproxy")
                .args(["-db", "-f"])
                .arg(&path)
                .stdout(Stdio::null()),
        );
        Self {
            _proc: proc,
            socket: dir.join("admin.sock"),
        }
    }

    /// One server's `show stat` row.
    pub fn server(&self, proxy: &str, name: &str) -> Option<BTreeMap<String, String>> {
        server(&self.socket, proxy, name)
    }

    /// The weight HAProxy uses for a server now.
    pub fn weight(&self, proxy: &str, name: &str) -> Option<u32> {
        self.server(proxy, name)?.get("weight")?.parse().ok()
    }

    /// Its status column (`UP`, `DOWN`, `DRAIN`, ...), empty if unknown.
    pub fn status(&self, proxy: &str, name: &str) -> String {
        self.server(proxy, name)
            .and_then(|r| r.get("status").cloned())
            .unwrap_or_default()
    }
}

/// `show stat` on HAProxy's admin socket: one map per row (proxy, server), by column name.
pub fn show_stat(socket: &Path) -> Vec<BTreeMap<String, String>> {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"show stat\n").is_err() {
        return Vec::new();
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let mut lines = text.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split(',').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            names
                .iter()
                .zip(l.split(','))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// One server's row of `show stat`.
pub fn server(socket: &Path, proxy: &str, name: &str) -> Option<BTreeMap<String, String>> {
    show_stat(socket).into_iter().find(|r| {
        r.get("pxname").map(String::as_str) == Some(proxy)
            && r.get("svname").map(String::as_str) == Some(name)
    })
}

/// Direction reversals in a series once repeats are removed: 1 for down-then-up, more
/// for a weight that flapped.
pub fn reversals(series: &[u32]) -> usize {
    let mut distinct = series.to_vec();
    distinct.dedup();
    let signs: Vec<bool> = distinct.windows(2).map(|w| w[1] > w[0]).collect();
    signs.windows(2).filter(|w| w[0] != w[1]).count()
}
