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
    error::{DeliveryError, TlsError, UrlError},
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

    async fn post(&self, body: &[u8]) -> Result<(), DeliveryError> {
        let tcp = TcpStream::connect(&self.host_port)
            .await
            .map_err(DeliveryError::Connect)?;
        let auth = match &self.authorization {
            // Read from a secret file at each (re)load: a line break would inject headers.
            Some(a) if a.chars().any(|c| c.is_ascii_control()) => {
                return Err(DeliveryError::Authorization)
            }
            Some(a) => format!("Authorization: {a}\r\n"),
            None => String::new(),
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host_port,
            body.len()
        );
        let response = if self.https {
            let tls = self.tls.as_ref().ok_or(DeliveryError::NoTls)?;
            let host = self
                .host_port
                .rsplit_once(':')
                .map_or(self.host_port.as_str(), |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name =
                ServerName::try_from(host.to_string()).map_err(|e| DeliveryError::ServerName {
                    host: host.into(),
                    reason: e.to_string(),
                })?;
            let stream = tls.connect(name, tcp).await.map_err(DeliveryError::Tls)?;
            exchange(stream, head.as_bytes(), body).await?
        } else {
            exchange(tcp, head.as_bytes(), body).await?
        };
        match status(&response)? {
            200 => Ok(()),
            code => Err(DeliveryError::Status {
                code,
                status: status_line(&response),
            }),
        }
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
/// The most of a reply that is read. Alertmanager's is a status line, a few headers and an
/// empty body (a short JSON error at worst): a peer sending more is not Alertmanager, and
/// must not grow the agent's memory.
pub const REPLY_CAP: usize = 64 * 1024;

/// Writes one request and reads the response until the server closes the connection, at
/// most `REPLY_CAP` bytes (the caller bounds the time). A longer reply is an error even
/// after a 200 status line: delivery is at-least-once, so a reply that cannot be read
/// whole is not taken as an acceptance (a resend costs a duplicate Alertmanager drops;
/// a wrong "sent" would lose the alert).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, DeliveryError> {
    s.write_all(head).await.map_err(DeliveryError::Send)?;
    s.write_all(body).await.map_err(DeliveryError::Send)?;
    s.flush().await.map_err(DeliveryError::Send)?;
    let mut response = Vec::with_capacity(1024);
    // One byte past the cap tells a reply of exactly REPLY_CAP from a longer one.
    let mut bounded = (&mut s).take(REPLY_CAP as u64 + 1);
    let read = bounded.read_to_end(&mut response).await;
    match read {
        Ok(_) if response.len() > REPLY_CAP => Err(DeliveryError::TooLong {
            status: status_line(&response),
        }),
        Ok(_) => Ok(response),
        // A TLS peer that closes without close_notify still sent a complete response.
        Err(e) if !response.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok(response)
        }
        Err(e) => Err(DeliveryError::Receive(e)),
    }
}

/// The status code of an HTTP/1.x reply, read strictly: `HTTP/1.1 200 OK` + CRLF, then
/// headers ending in an empty line.
fn status(reply: &[u8]) -> Result<u16, DeliveryError> {
    let bad = || DeliveryError::NotHttp(status_line(reply));
    let end = reply
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(bad)?;
    let line = &reply[..end];
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(bad)?;
    let (code, reason) = rest.split_at(rest.len().min(3));
    let reason_ok = reason.is_empty()
        || (reason[0] == b' ' && reason.iter().all(|&b| b == b'\t' || !b.is_ascii_control()));
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' || !reason_ok {
        return Err(bad());
    }
    if !reply[end..].windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(DeliveryError::Truncated(status_line(reply)));
    }
    // Three ASCII digits.
    Ok(code.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
}

/// The first line of a reply, escaped and shortened, for messages.
fn status_line(reply: &[u8]) -> String {
    let first = reply.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = &first[..first.len().min(80)];
    match String::from_utf8_lossy(first).trim_end_matches('\r') {
        "" => "(no response)".into(),
        line => format!("`{}`", line.escape_debug()),
    }
}

/// A TLS client that trusts the CA certificates in a PEM file.
pub fn tls_connector(ca_file: &Path) -> Result<TlsConnector, TlsError> {
    let path = || ca_file.display().to_string();
    let pem = std::fs::read(ca_file).map_err(|source| TlsError::Read {
        path: path(),
        source,
    })?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|source| TlsError::NotPem {
            path: path(),
            source,
        })?;
        roots.add(cert).map_err(|source| TlsError::Certificate {
            path: path(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty(path()));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
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
            (e.host_port.as_str(), e.path.as_str()),
            ("127.0.0.1:9093", "/api/v2/alerts")
        );
        let e = Endpoint::parse("http://am.local:80/alertmanager/").unwrap();
        assert_eq!(e.path, "/alertmanager/api/v2/alerts");
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
            (e.host_port.as_str(), e.path.as_str()),
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

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(
            status(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").ok(),
            Some(200)
        );
        assert_eq!(
            status(b"HTTP/1.0 400 Bad Request\r\n\r\n{}").ok(),
            Some(400)
        );
        assert_eq!(status(b"HTTP/1.1 200\r\n\r\n").ok(), Some(200));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nX: y\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 099 OK\r\n\r\n",
            b"HTTP/1.1 200OK\r\n\r\n",
            b"HTTP/1.1 200 O\x00K\r\n\r\n",
            b"xHTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 +20 OK\r\n\r\n",
        ] {
            assert!(status(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// A peer on a real socket: replies up to the cap are read, a longer one (an endless
    /// body after 200) is cut at the cap and is a failure.
    #[tokio::test]
    async fn replies_are_read_up_to_the_cap_and_no_further() {
        async fn reply_of(body_len: usize) -> Result<Vec<u8>, DeliveryError> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                // The whole request first: unread data would turn the close into a reset.
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let mut byte = [0];
                    s.read_exact(&mut byte).await.unwrap();
                    request.push(byte[0]);
                }
                let head = b"HTTP/1.1 200 OK\r\n\r\n";
                let _ = s.write_all(head).await;
                let _ = s.write_all(&vec![b'x'; body_len - head.len()]).await;
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let r = exchange(tcp, b"POST / HTTP/1.1\r\n\r\n", b"").await;
            server.abort();
            r
        }
        assert_eq!(reply_of(REPLY_CAP).await.unwrap().len(), REPLY_CAP);
        let err = reply_of(REPLY_CAP + 1).await.unwrap_err().to_string();
        assert!(
            err.contains("reply longer than 64 KiB (`HTTP/1.1 200 OK`)"),
            "{err}"
        );
        assert!(reply_of(50 << 20).await.is_err());
    }
}
