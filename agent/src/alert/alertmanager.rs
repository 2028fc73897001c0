//! Delivery to Alertmanager's API v2 (`POST /api/v2/alerts`), to every configured instance:
//! an Alertmanager HA cluster deduplicates, so each must get every notification (never
//! load-balance). HTTP/1.1 on tokio, over TLS (rustls) for https:// endpoints. What an instance does not accept
//! waits in its on-disk spool and is retried every second, in order.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use tokio_rustls::{rustls::pki_types::ServerName, TlsConnector};

use super::{
    spool::{self, Spool},
    Notification,
};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Endpoint {
    /// As configured, used as the `endpoint` label.
    pub url: String,
    host_port: String,
    path: String,
    /// `Authorization` header value (Bearer or Basic), if configured.
    authorization: Option<String>,
    https: bool,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the Authorization value.
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("https", &self.https)
            .finish()
    }
}

impl Endpoint {
    /// `http://host:port` or `https://host:port`, with an optional path prefix
    /// (Alertmanager's --web.route-prefix).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
        };
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
            authorization: None,
            https,
            tls: None,
            url: url.to_string(),
            host_port: host_port.to_string(),
            path,
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Sends this `Authorization` header value with every request.
    pub fn with_authorization(mut self, value: Option<String>) -> Self {
        self.authorization = value;
        self
    }

    /// The TLS client for an https endpoint (its trust roots come from the config).
    pub fn with_tls(mut self, tls: Option<TlsConnector>) -> Self {
        self.tls = tls;
        self
    }

    async fn post(&self, body: &[u8]) -> Result<(), String> {
        let tcp = TcpStream::connect(&self.host_port)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let auth = self
            .authorization
            .as_ref()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host_port,
            body.len()
        );
        let response = if self.https {
            let tls = self
                .tls
                .as_ref()
                .ok_or("https endpoint without TLS settings")?;
            let host = self
                .host_port
                .rsplit_once(':')
                .map_or(self.host_port.as_str(), |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| format!("server name `{host}`: {e}"))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(stream, head.as_bytes(), body).await?
        } else {
            exchange(tcp, head.as_bytes(), body).await?
        };
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

/// Writes one request and reads the whole response (the server closes the connection).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, String> {
    s.write_all(head).await.map_err(|e| format!("send: {e}"))?;
    s.write_all(body).await.map_err(|e| format!("send: {e}"))?;
    s.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    // A TLS peer that closes without close_notify still sent a complete response.
    match s.read_to_end(&mut response).await {
        Ok(_) => Ok(response),
        Err(e) if !response.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok(response)
        }
        Err(e) => Err(format!("receive: {e}")),
    }
}

/// A TLS client that trusts the CA certificates in a PEM file.
pub fn tls_connector(ca_file: &Path) -> Result<TlsConnector, String> {
    let pem =
        std::fs::read(ca_file).map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: not PEM certificates: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", ca_file.display()));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Per-endpoint delivery counters, read by the exposition.
#[derive(Debug, Default, Clone)]
pub struct EndpointStats {
    /// Alerts in batches Alertmanager accepted.
    pub sent: u64,
    /// Alerts in delivery attempts that failed (each retry counts again).
    pub failed: u64,
    /// Alerts dropped because the spool was full.
    pub dropped: u64,
    /// Batches waiting in the spool.
    pub queued: u64,
    pub last_latency: Duration,
}

#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub endpoints: Mutex<BTreeMap<String, EndpointStats>>,
    /// Batches refused because the delivery queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
}

impl DeliveryStats {
    fn update(&self, url: &str, f: impl FnOnce(&mut EndpointStats)) {
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(url.to_string()).or_default());
    }
}

/// How often a spool with undelivered batches is retried.
const RETRY: Duration = Duration::from_secs(1);
/// Batches kept per endpoint while it is unreachable.
const SPOOL_BATCHES: usize = 1000;

/// One task per Alertmanager, each with its own on-disk spool, fed by one fan-out task:
/// a slow or dead instance never holds up the others.
pub struct Deliverer;

impl Deliverer {
    /// Starts the delivery tasks; spools live in `spool_dir` (created if missing).
    pub fn spawn(
        endpoints: Vec<Endpoint>,
        spool_dir: &Path,
        stats: Arc<DeliveryStats>,
    ) -> std::io::Result<mpsc::Sender<Vec<Notification>>> {
        std::fs::create_dir_all(spool_dir)?;
        let mut lanes = Vec::new();
        for e in endpoints {
            let (tx, rx) = mpsc::channel::<Arc<str>>(256);
            let spool = Spool::open(spool::path_for(spool_dir, &e.url), SPOOL_BATCHES);
            stats.update(&e.url, |s| s.queued = spool.len() as u64);
            tokio::spawn(endpoint_task(e.clone(), rx, spool, stats.clone()));
            lanes.push((e.url, tx));
        }
        let (tx, mut rx) = mpsc::channel::<Vec<Notification>>(64);
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let json: Arc<str> = match serde_json::to_string(&batch) {
                    Ok(j) => j.into(),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode alerts");
                        continue;
                    }
                };
                for (url, lane) in &lanes {
                    if lane.try_send(json.clone()).is_err() {
                        stats.update(url, |s| s.dropped += batch.len() as u64);
                    }
                }
            }
        });
        Ok(tx)
    }
}

async fn endpoint_task(
    e: Endpoint,
    mut rx: mpsc::Receiver<Arc<str>>,
    mut spool: Spool,
    stats: Arc<DeliveryStats>,
) {
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { return };
                // Straight out when nothing is waiting; behind the queue otherwise, to keep order.
                if spool.is_empty() && post(&e, &batch, &stats).await {
                    continue;
                }
                if let Err(err) = spool.push(batch.to_string()) {
                    tracing::error!(endpoint = %e.url, error = %err, "cannot write the alert spool; the batch is kept in memory only");
                }
            }
            _ = retry.tick() => {}
        }
        while let Some(front) = spool.front() {
            let front: Arc<str> = front.into();
            if !post(&e, &front, &stats).await {
                break;
            }
            if let Err(err) = spool.pop_front() {
                tracing::error!(endpoint = %e.url, error = %err, "cannot rewrite the alert spool");
            }
        }
        stats.update(&e.url, |s| {
            s.queued = spool.len() as u64;
            s.dropped = s.dropped.max(spool.dropped());
        });
    }
}

/// One delivery attempt, counted; true if Alertmanager accepted it.
async fn post(e: &Endpoint, batch: &str, stats: &DeliveryStats) -> bool {
    let alerts = serde_json::from_str::<serde_json::Value>(batch)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0) as u64;
    let t0 = Instant::now();
    let result = tokio::time::timeout(TIMEOUT, e.post(batch.as_bytes()))
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
    let took = t0.elapsed();
    match result {
        Ok(()) => {
            stats.update(&e.url, |s| {
                s.sent += alerts;
                s.last_latency = took;
            });
            tracing::debug!(endpoint = %e.url, alerts, ?took, "alerts delivered");
            true
        }
        Err(err) => {
            stats.update(&e.url, |s| s.failed += alerts);
            tracing::warn!(endpoint = %e.url, error = %err, alerts, "alert delivery failed; kept in the spool");
            false
        }
    }
}

/// `Authorization: Basic` value: base64 of "user:password" (RFC 7617).
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc7617_base64() {
        // The RFC's own example.
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", "b"), "Basic YTpi");
        assert_eq!(basic_auth("ab", "c"), "Basic YWI6Yw==");
    }

    #[test]
    fn parses_endpoints_and_explains_what_it_cannot_use() {
        let e = Endpoint::parse("http://127.0.0.1:9093").unwrap();
        assert_eq!(
            (e.host_port.as_str(), e.path.as_str()),
            ("127.0.0.1:9093", "/api/v2/alerts")
        );
        let e = Endpoint::parse("http://am.local:80/alertmanager/").unwrap();
        assert_eq!(e.path, "/alertmanager/api/v2/alerts");
        assert!(Endpoint::parse("https://am:9093").unwrap().is_https());
        assert!(Endpoint::parse("am:9093")
            .unwrap_err()
            .contains("not an http:// or https:// URL"));
        assert!(Endpoint::parse("http://am")
            .unwrap_err()
            .contains("needs a host and a port"));
    }
}
