//! A real Prometheus server (Debian's prometheus) on a loopback port, scraping one target
//! every second, with its storage in a temporary directory; stopped on drop.
use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{agent::http_get, free_port, TempDir};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Prometheus {
    /// Scrapes `target` (host:port) as job "gimbal".
    pub fn start(target: &str) -> Self {
        Self::start_with_rules(target, None)
    }

    /// `start`, evaluating the rule file `rules` (recording and alerting rules) each second.
    pub fn start_with_rules(target: &str, rules: Option<&std::path::Path>) -> Self {
        let rule_files = rules.map_or(String::new(), |r| {
            format!("rule_files:\n  - '{}'\n", r.display())
        });
        Self::start_config(&format!(
            "{rule_files}scrape_configs:\n  - job_name: gimbal\n    static_configs:\n      - targets: ['{target}']\n"
        ))
    }

    /// Scrapes as `config` says (its `scrape_configs`, and `rule_files` if any), each
    /// second.
    pub fn start_config(config: &str) -> Self {
        Self::start_config_args(config, &[])
    }

    /// `start_config` with extra command-line flags (e.g.
    /// `--enable-feature=native-histograms`).
    pub fn start_config_args(config: &str, args: &[&str]) -> Self {
        let dir = TempDir::new("prometheus");
        let config = format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{config}");
        std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package; cargo xtask setup installs it)");
        let p = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/-/ready").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready on port {port} after 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// The value of an instant PromQL query that returns one sample, if it does.
    pub fn query_one(&self, promql: &str) -> Option<f64> {
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", encode(promql)),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(status, 200, "query {promql}: {body}");
        let result = v["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Prometheus {
    /// Every sample of an instant PromQL query: (labels, value), or `None` before
    /// Prometheus answers.
    pub fn query(&self, promql: &str) -> Option<Vec<(BTreeMap<String, String>, f64)>> {
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", encode(promql)),
        )?;
        assert_eq!(status, 200, "query {promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        result
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect::<Option<_>>()?;
                Some((labels, r["value"][1].as_str()?.parse().ok()?))
            })
            .collect()
    }
}

/// `value` as a PromQL string literal, quotes included.
pub fn promql_string(value: &str) -> String {
    let mut out = String::from('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        crate::terminate(&mut self.child);
    }
}
