//! A deliberately small HTTP/1.1 server for a few GET (and HEAD) endpoints: /metrics, /healthz
//! (liveness: the main loop turns), /readyz (readiness: probes attached, first sample in)
//! and /health, /health/<target> (the load-balancing verdict, verdict/health.rs).
//! One request per connection, bounded request size and time, so a slow or hostile client
//! cannot hold the agent's memory or its only thread. `/metrics` is gzipped when the
//! request allows it (coding.rs); HEAD gets GET's head without the body.
//!
//! Open connections are capped (`MAX_CONNECTIONS`, slots.rs: at the cap the oldest
//! connection idle past a grace is evicted), so `/healthz` still answers a flood of idle
//! connections.
use std::{sync::Arc, time::Duration};

use prometheus_client::registry::Registry;

use super::{
    coding,
    slots::{Slot, Slots},
    text_format,
};
use crate::{service::Health, snapshot::Published, verdict};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// At most this many connections open at once: well under any fd limit the agent runs
/// with (it raises its soft limit at start, see service::fd_limit), leaving the rest for
/// its own reads and writes.
pub const MAX_CONNECTIONS: usize = 64;
/// Scrapes encoded at once, each on a blocking thread: a scrape of a large exposition never
/// holds up the loop's thread (exit events, watchdog pings), and a flood of scrapes costs
/// at most this many cores.
const ENCODERS: usize = 2;

/// Serves forever. Accept errors (out of file descriptors, say) are logged and retried,
/// so a passing shortage cannot silence the endpoint for good.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: Arc<Health>,
    snapshot: Published,
) {
    let slots = Slots::new(MAX_CONNECTIONS);
    let encoders = Arc::new(tokio::sync::Semaphore::new(ENCODERS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slots.admit() else {
            // Every slot is busy or just opened: closing this one costs nobody a request.
            tracing::debug!(%peer, "metrics connection closed: {MAX_CONNECTIONS} connections open");
            continue;
        };
        let (registry, health, encoders) = (registry.clone(), health.clone(), encoders.clone());
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let served = handle(stream, registry, encoders, &health, &snapshot, slot);
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, served)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            {
                tracing::debug!(%peer, error = %e, "HTTP request failed");
            }
        });
    }
}

/// Reads one request head (the slot's eviction ends the wait when the connection is
/// closed to make room), then answers it.
async fn handle(
    mut stream: TcpStream,
    registry: Arc<Registry>,
    encoders: Arc<tokio::sync::Semaphore>,
    health: &Health,
    snapshot: &Published,
    mut slot: Slot,
) -> std::io::Result<()> {
    let buf = tokio::select! {
        head = read_head(&mut stream) => head?,
        _ = &mut slot.evicted => return Err(std::io::Error::other("closed for a newer connection")),
    };
    slot.got_request();
    let Some(buf) = buf else {
        return respond(
            &mut Answer::get(&mut stream),
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n",
        )
        .await;
    };
    let request_line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(request_line).unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let stream = &mut Answer {
        stream: &mut stream,
        head_only: method == "HEAD",
    };
    // HEAD is answered as GET is, less the body.
    let method = if method == "HEAD" { "GET" } else { method };
    match (method, path) {
        ("GET", "/metrics") => {
            let openmetrics = accepts_openmetrics(&buf);
            let gzip = coding::accepts_gzip(&buf);
            let permit = encoders
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            let encoded = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let (content_type, body) = encode(&registry, openmetrics)?;
                Some(match gzip {
                    true => (content_type, GZIP, coding::gzip(body.as_bytes()).ok()?),
                    false => (content_type, IDENTITY, body.into_bytes()),
                })
            })
            .await;
            match encoded {
                Ok(Some((content_type, coding, body))) => {
                    respond_with(stream, "200 OK", content_type, coding, &body).await
                }
                _ => {
                    let msg = "encoding failed\n";
                    respond(stream, "500 Internal Server Error", "text/plain", msg).await
                }
            }
        }
        ("GET", "/healthz") if health.alive() => {
            respond(stream, "200 OK", "text/plain", "ok\n").await
        }
        ("GET", "/healthz") => {
            let body = format!("main loop stalled for {:.0?}\n", health.stalled_for());
            respond(stream, "503 Service Unavailable", "text/plain", &body).await
        }
        ("GET", "/readyz") if health.ready() => {
            respond(stream, "200 OK", "text/plain", "ready\n").await
        }
        ("GET", "/readyz") => {
            let body = "not ready: loading probes or taking the first sample\n";
            respond(stream, "503 Service Unavailable", "text/plain", body).await
        }
        ("GET", "/health") => verdict(stream, None, snapshot).await,
        ("GET", p) if p.starts_with("/health/") => {
            verdict(stream, p.strip_prefix("/health/"), snapshot).await
        }
        ("GET", _) => {
            respond(
                stream,
                "404 Not Found",
                "text/plain",
                "not found: try /metrics, /healthz, /readyz, /health or /health/<target>\n",
            )
            .await
        }
        _ => {
            respond(
                stream,
                "405 Method Not Allowed",
                "text/plain",
                "only GET and HEAD\n",
            )
            .await
        }
    }
}

/// The request head (up to the blank line), or None past MAX_REQUEST.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// Whether the request's Accept header asks for OpenMetrics (Prometheus does).
fn accepts_openmetrics(request: &[u8]) -> bool {
    String::from_utf8_lossy(request)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .any(|(k, v)| {
            k.eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
}

/// The verdict of the node (`name` None) or of a target (its name still percent-encoded).
async fn verdict(
    stream: &mut Answer<'_>,
    name: Option<&str>,
    snapshot: &Published,
) -> std::io::Result<()> {
    let answer = verdict::health::answer(name, &snapshot.read().verdicts);
    let extra = if answer.degraded {
        "x-envoy-degraded: true\r\n"
    } else {
        ""
    };
    respond_with(
        stream,
        answer.status,
        "application/json",
        extra,
        answer.body.as_bytes(),
    )
    .await
}

/// `/metrics`' coding headers: the answer depends on Accept-Encoding, so a cache must key
/// on it either way.
const GZIP: &str = "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n";
const IDENTITY: &str = "Vary: Accept-Encoding\r\n";

/// Where an answer goes, and whether it is to a HEAD (the head alone).
struct Answer<'s> {
    stream: &'s mut TcpStream,
    head_only: bool,
}

impl<'s> Answer<'s> {
    fn get(stream: &'s mut TcpStream) -> Self {
        Self {
            stream,
            head_only: false,
        }
    }
}

async fn respond(
    stream: &mut Answer<'_>,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let extra = match status.starts_with("405") {
        true => "Allow: GET, HEAD\r\n",
        false => "",
    };
    respond_with(stream, status, content_type, extra, body.as_bytes()).await
}

/// `extra`: header lines, each ending in CRLF. Content-Length is the body's, also to a
/// HEAD, which gets no body.
async fn respond_with(
    answer: &mut Answer<'_>,
    status: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    answer.stream.write_all(head.as_bytes()).await?;
    if !answer.head_only {
        answer.stream.write_all(body).await?;
    }
    answer.stream.shutdown().await
}

/// The exposition in the format asked for: (content type, body); None if encoding failed.
fn encode(registry: &Registry, openmetrics: bool) -> Option<(&'static str, String)> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry).ok()?;
    Some(match openmetrics {
        true => (OPENMETRICS, body),
        false => (
            text_format::CONTENT_TYPE,
            text_format::from_openmetrics(&body),
        ),
    })
}
