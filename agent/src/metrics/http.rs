//! A deliberately small HTTP/1.1 server for three GET endpoints: /metrics, /healthz
//! (liveness: the main loop turns) and /readyz (readiness: probes attached, first sample in).
//! One request per connection, bounded request size and time, so a slow or hostile client
//! cannot hold the agent's memory or its only thread.
use std::{sync::Arc, time::Duration};

use prometheus_client::registry::Registry;

use super::text_format;
use crate::service::Health;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves forever. Accept errors (out of file descriptors, say) are logged and retried,
/// so a passing shortage cannot silence the endpoint for good.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, health: Arc<Health>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (registry, health) = (registry.clone(), health.clone());
        tokio::spawn(async move {
            if let Err(e) =
                tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &registry, &health))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            {
                tracing::debug!(%peer, error = %e, "HTTP request failed");
            }
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    registry: &Registry,
    health: &Health,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            )
            .await;
        }
    }
    let request_line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(request_line).unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let mut body = String::new();
            if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
                let msg = "encoding failed\n";
                return respond(&mut stream, "500 Internal Server Error", "text/plain", msg).await;
            }
            if accepts_openmetrics(&buf) {
                respond(&mut stream, "200 OK", OPENMETRICS, &body).await
            } else {
                let text = text_format::from_openmetrics(&body);
                respond(&mut stream, "200 OK", text_format::CONTENT_TYPE, &text).await
            }
        }
        ("GET", "/healthz") if health.alive() => {
            respond(&mut stream, "200 OK", "text/plain", "ok\n").await
        }
        ("GET", "/healthz") => {
            let body = format!("main loop stalled for {:.0?}\n", health.stalled_for());
            respond(&mut stream, "503 Service Unavailable", "text/plain", &body).await
        }
        ("GET", "/readyz") if health.ready() => {
            respond(&mut stream, "200 OK", "text/plain", "ready\n").await
        }
        ("GET", "/readyz") => {
            let body = "not ready: loading probes or taking the first sample\n";
            respond(&mut stream, "503 Service Unavailable", "text/plain", body).await
        }
        ("GET", _) => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "not found: try /metrics, /healthz or /readyz\n",
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n",
            )
            .await
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

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
