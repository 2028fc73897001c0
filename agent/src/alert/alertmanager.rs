//! Delivery to Alertmanager's API v2 (`POST /api/v2/alerts`), to every configured instance:
//! an Alertmanager HA cluster deduplicates, so each must get every notification (never
//! load-balance). Plain HTTP/1.1 on tokio; no TLS yet.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use super::Notification;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As configured, used as the `endpoint` label.
    pub url: String,
    host_port: String,
    path: String,
}

impl Endpoint {
    /// `http://host:port` with an optional path prefix (Alertmanager's --web.route-prefix).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                format!("`{url}`: https is not supported yet; use http:// on a trusted network")
            } else {
                format!("`{url}` is not an http:// URL")
            }
        })?;
        let (host_port, prefix) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        if host_port.is_empty() || !host_port.contains(':') {
            return Err(format!(
                "`{url}` needs a host and a port, like http://127.0.0.1:9093"
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            "/api/v2/alerts".into()
        } else {
            format!("/{prefix}/api/v2/alerts")
        };
        Ok(Self {
            url: url.to_string(),
            host_port: host_port.to_string(),
            path,
        })
    }

    async fn post(&self, body: &[u8]) -> Result<(), String> {
        let mut s = TcpStream::connect(&self.host_port)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host_port,
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        s.write_all(body).await.map_err(|e| format!("send: {e}"))?;
        let mut response = Vec::new();
        s.read_to_end(&mut response)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        let status = String::from_utf8_lossy(&response);
        let code = status.split(' ').nth(1).unwrap_or("");
        if code == "200" {
            Ok(())
        } else {
            Err(format!(
                "HTTP {}",
                status.lines().next().unwrap_or("(no response)")
            ))
        }
    }
}

/// Per-endpoint delivery counters, read by the exposition.
#[derive(Debug, Default, Clone)]
pub struct EndpointStats {
    pub sent: u64,
    pub failed: u64,
    pub last_latency: Duration,
}

#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub endpoints: Mutex<BTreeMap<String, EndpointStats>>,
    /// Batches refused because the delivery queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
}

/// Sends each batch to every endpoint, concurrently, as it arrives.
pub struct Deliverer {
    endpoints: Vec<Endpoint>,
    stats: Arc<DeliveryStats>,
}

impl Deliverer {
    pub fn new(endpoints: Vec<Endpoint>, stats: Arc<DeliveryStats>) -> Self {
        {
            let mut m = stats.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            for e in &endpoints {
                m.entry(e.url.clone()).or_default();
            }
        }
        Self { endpoints, stats }
    }

    pub async fn run(self, mut batches: mpsc::Receiver<Vec<Notification>>) {
        while let Some(batch) = batches.recv().await {
            let body = match serde_json::to_vec(&batch) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode alerts");
                    continue;
                }
            };
            let body: Arc<[u8]> = body.into();
            let mut sends = tokio::task::JoinSet::new();
            for e in self.endpoints.iter().cloned() {
                let body = body.clone();
                sends.spawn(async move {
                    let t0 = Instant::now();
                    let result = tokio::time::timeout(TIMEOUT, e.post(&body))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                    (e, result, t0.elapsed())
                });
            }
            while let Some(Ok((e, result, took))) = sends.join_next().await {
                let mut m = self
                    .stats
                    .endpoints
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let s = m.entry(e.url.clone()).or_default();
                match result {
                    Ok(()) => {
                        s.sent += batch.len() as u64;
                        s.last_latency = took;
                        tracing::debug!(endpoint = %e.url, alerts = batch.len(), ?took, "alerts delivered");
                    }
                    Err(err) => {
                        s.failed += batch.len() as u64;
                        tracing::warn!(endpoint = %e.url, error = %err, alerts = batch.len(), "alert delivery failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_and_explains_what_it_cannot_use() {
        let e = Endpoint::parse("http://127.0.0.1:9093").unwrap();
        assert_eq!(
            (e.host_port.as_str(), e.path.as_str()),
            ("127.0.0.1:9093", "/api/v2/alerts")
        );
        let e = Endpoint::parse("http://am.local:80/alertmanager/").unwrap();
        assert_eq!(e.path, "/alertmanager/api/v2/alerts");
        assert!(Endpoint::parse("https://am:9093")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(Endpoint::parse("am:9093")
            .unwrap_err()
            .contains("not an http:// URL"));
        assert!(Endpoint::parse("http://am")
            .unwrap_err()
            .contains("needs a host and a port"));
    }
}
