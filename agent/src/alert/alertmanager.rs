//! Delivery to Alertmanager's API v2 (`POST /api/v2/alerts`), to every configured instance:
//! an Alertmanager HA cluster deduplicates, so each must get every notification (never
//! load-balance). Each instance has its own pooled HTTP client (client.rs). What an
//! instance does not accept waits in its on-disk spool and is retried every second, in order.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::{body::Bytes, header::HeaderValue, Uri};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ClientConfig;

use super::{
    client::Http,
    error::{DeliveryError, UrlError},
    spool::{self, Spool},
    Notification,
};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Endpoint {
    /// As configured, used as the `endpoint` label.
    pub url: String,
    uri: Uri,
    /// `Authorization` header value (Bearer or Basic), if configured.
    authorization: Option<String>,
    https: bool,
    tls: Option<Arc<ClientConfig>>,
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
    /// (Alertmanager's --web.route-prefix). Everything that would end up in the request
    /// line or the Host header is checked here: a CR or LF in a URL would inject headers.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if let Some(found) = url.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(UrlError::Character {
                url: url.escape_debug().to_string(),
                found,
            });
        }
        let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(UrlError::Scheme(url.into())),
        };
        if let Some(found) = rest.chars().find(|c| "?#@\\".contains(*c)) {
            return Err(UrlError::Part {
                url: url.into(),
                found,
            });
        }
        let (host_port, prefix) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        check_host_port(url, host_port)?;
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(UrlError::Traversal(url.into()));
        }
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            "/api/v2/alerts".into()
        } else {
            format!("/{prefix}/api/v2/alerts")
        };
        let scheme = if https { "https" } else { "http" };
        let uri = format!("{scheme}://{host_port}{path}")
            .parse()
            .map_err(|_| UrlError::Host {
                url: url.into(),
                host: host_port.into(),
            })?;
        Ok(Self {
            authorization: None,
            https,
            tls: None,
            uri,
            url: url.to_string(),
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

    /// The TLS settings of an https endpoint (trust roots, client certificate).
    pub fn with_tls(mut self, tls: Option<Arc<ClientConfig>>) -> Self {
        self.tls = tls;
        self
    }

    async fn post(&self, http: &Http, body: &str) -> Result<(), DeliveryError> {
        if self.https && self.tls.is_none() {
            return Err(DeliveryError::NoTls);
        }
        let authorization = match &self.authorization {
            // Read from a secret file at each (re)load: a line break would inject headers.
            Some(a) if a.chars().any(|c| c.is_ascii_control()) => {
                return Err(DeliveryError::Authorization)
            }
            Some(a) => {
                let mut v = HeaderValue::from_str(a).map_err(|_| DeliveryError::Authorization)?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let body = Bytes::copy_from_slice(body.as_bytes());
        http.post(&self.uri, authorization.as_ref(), body).await
    }
}

/// Checks `host:port` (or `[v6]:port`): a name or address, and a port of 1 to 65535.
fn check_host_port(url: &str, host_port: &str) -> Result<(), UrlError> {
    let hint = || UrlError::NoHostPort(url.into());
    let (host, port) = host_port.rsplit_once(':').ok_or_else(hint)?;
    if host.is_empty() {
        return Err(hint());
    }
    if !port.parse::<u16>().is_ok_and(|p| p > 0) || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::Port {
            url: url.into(),
            port: port.into(),
        });
    }
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
    };
    if valid {
        Ok(())
    } else {
        Err(UrlError::Host {
            url: url.into(),
            host: host.into(),
        })
    }
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
        let mut m = crate::sync::lock(&self.endpoints);
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
        let urls: Vec<&str> = endpoints.iter().map(|e| e.url.as_str()).collect();
        for url in &urls {
            spool::adopt_legacy(spool_dir, url, &urls);
        }
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
    // One client per lane, so its kept connection goes to this Alertmanager only.
    let http = Http::new(e.tls.clone());
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { return };
                // Straight out when nothing is waiting; behind the queue otherwise, to keep order.
                if spool.is_empty() && post(&e, &http, &batch, &stats).await {
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
            if !post(&e, &http, &front, &stats).await {
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
async fn post(e: &Endpoint, http: &Http, batch: &str, stats: &DeliveryStats) -> bool {
    let alerts = serde_json::from_str::<serde_json::Value>(batch)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0) as u64;
    let t0 = Instant::now();
    let result = tokio::time::timeout(TIMEOUT, e.post(http, batch))
        .await
        .unwrap_or(Err(DeliveryError::TimedOut));
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
            (e.uri.authority().unwrap().as_str(), e.uri.path()),
            ("127.0.0.1:9093", "/api/v2/alerts")
        );
        let e = Endpoint::parse("http://am.local:80/alertmanager/").unwrap();
        assert_eq!(e.uri.path(), "/alertmanager/api/v2/alerts");
        assert!(Endpoint::parse("https://am:9093").unwrap().is_https());
        assert!(Endpoint::parse("am:9093")
            .unwrap_err()
            .to_string()
            .contains("not an http:// or https:// URL"));
        assert!(Endpoint::parse("http://am")
            .unwrap_err()
            .to_string()
            .contains("needs a host and a port"));
        let e = Endpoint::parse("http://[::1]:9093/am").unwrap();
        assert_eq!(
            (e.uri.authority().unwrap().as_str(), e.uri.path()),
            ("[::1]:9093", "/am/api/v2/alerts")
        );
    }

    #[test]
    fn urls_that_would_inject_or_mislead_are_refused() {
        for (url, why) in [
            ("http://am:9093\r\nX-Evil: 1", "control"),
            ("http://am:9093/\nx", "control"),
            ("http://am:9093/a b", "no spaces"),
            ("http://am:9093/\u{e9}", "non-ASCII"),
            ("http://user:pw@am:9093", "user info"),
            ("http://am:9093/?x=1", "no query"),
            ("http://am:0", "port `0`"),
            ("http://am:99999", "port `99999`"),
            ("http://am:+80", "port `+80`"),
            ("http://:9093", "needs a host"),
            ("http://a_m:9093", "host `a_m`"),
            ("http://[::g]:9093", "host `[::g]`"),
            ("http://am:9093/../x", "`..` segment"),
        ] {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url:?}: {err}");
        }
    }
}
