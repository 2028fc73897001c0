//! `cargo xtask bench --only nginx`: what the agent costs a real web server. Debian's nginx
//! (one worker, its own prefix, config and temp paths in a temporary directory, a free
//! loopback port, access log written to /dev/null so each request still writes it) pinned
//! to CPU 0 serving a 4 KiB file; wrk pinned to CPU 1 (one thread, 20 connections) for
//! SECONDS per run; in interleaved rounds with no agent, gimbal at its defaults, gimbal with
//! every syscall timed and bpftrace (tests/src/cost). Prints a Markdown report.
//!
//! gimbal-bench-nginx ROUNDS SECONDS [FULL_CONFIG]
use std::{net::TcpStream, process::Command, time::Duration};

use gimbal_tests::{
    cost::{self, proc_cpu, FullMode, Load, Section, Workload},
    free_port, terminate, wait_until, Proc, TempDir,
};

const CONNECTIONS: u32 = 20;

struct Nginx {
    master: Proc,
    port: u16,
    seconds: u32,
    dir: TempDir,
}

impl Nginx {
    fn start(seconds: u32) -> Self {
        let dir = TempDir::new("bench-nginx");
        let port = free_port();
        let d = dir.0.display();
        std::fs::create_dir(dir.0.join("html")).unwrap();
        let page: String = (0..4096).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        std::fs::write(dir.0.join("html/index.html"), page).unwrap();
        let config = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log /dev/null;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {d}/html; }}\n}}\n"
        );
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        // -p and -e keep nginx off /var/log/nginx and /usr/share/nginx, even at start.
        let master = Proc::spawn(
            Command::new("taskset")
                .args(["-c", "0", "nginx", "-p"])
                .arg(&dir.0)
                .arg("-e")
                .arg(dir.0.join("error.log"))
                .arg("-c")
                .arg(&path),
        );
        let pid = master.id();
        wait_until(
            "nginx listens with its worker",
            Duration::from_secs(20),
            || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && proc_cpu::with_children(pid).len() > 1
            },
        );
        Self {
            master,
            port,
            seconds,
            dir,
        }
    }
}

impl Workload for Nginx {
    fn run(&mut self) -> Load {
        let pids = proc_cpu::with_children(self.master.id());
        let before = proc_cpu::stat_cpu_all(&pids);
        let out = Command::new("taskset")
            .args(["-c", "1", "wrk", "-t1", "-c", &CONNECTIONS.to_string()])
            .arg(format!("-d{}s", self.seconds))
            .arg(format!("http://127.0.0.1:{}/index.html", self.port))
            .output()
            .expect("wrk (Debian wrk; cargo xtask bench installs it)");
        let cpu = proc_cpu::stat_cpu_all(&pids) - before;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "wrk failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every answer a 200, every connection kept: otherwise the rate is not nginx serving.
        assert!(
            !text.contains("Non-2xx") && !text.contains("Socket errors"),
            "wrk saw errors: {text}\nnginx's error log: {}",
            std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
        );
        let (requests, throughput) = parse_wrk(&text)
            .unwrap_or_else(|| panic!("wrk's output has no request count and rate: {text}"));
        Load {
            requests,
            throughput,
            server_cpu: cpu,
        }
    }
}

/// (requests, requests/s) from wrk's "N requests in 5.02s" and "Requests/sec: R" lines.
fn parse_wrk(text: &str) -> Option<(u64, f64)> {
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    Some((requests, rate))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let seconds: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let full = FullMode::read(std::path::Path::new(
        &args.next().unwrap_or(cost::tracer::FULL_CONFIG.into()),
    ));
    let mut nginx = Nginx::start(seconds);
    let section = Section {
        what: format!(
            "nginx: Debian's nginx (one worker, access log to /dev/null) pinned to CPU 0 serving a \
             4 KiB file over loopback, wrk pinned to CPU 1 (1 thread, {CONNECTIONS} keep-alive \
             connections) for {seconds} s per run; the server's CPU is the master's and the \
             worker's utime + stime (/proc/<pid>/stat)."
        ),
        command: format!(
            "cargo xtask bench --only nginx --rounds {rounds} --wrk-seconds {seconds}"
        ),
        unit: "request",
        rounds,
        full,
    };
    let report = cost::run(&section, &mut nginx);
    // SIGTERM to the master: a fast shutdown that stops its worker too.
    terminate(&mut nginx.master);
    println!("{report}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_output_gives_the_count_and_the_rate() {
        let out = "Running 5s test @ http://127.0.0.1:18080/index.html\n  1 threads and 20 connections\n  49705 requests in 5.02s, 273.80MB read\nRequests/sec:   9894.23\nTransfer/sec:     54.50MB\n";
        assert_eq!(super::parse_wrk(out), Some((49705, 9894.23)));
        assert_eq!(super::parse_wrk("Running 5s test\n"), None);
    }
}
