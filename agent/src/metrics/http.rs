//! The HTTP endpoint, on hyper (HTTP/1.1, keep-alive): /metrics, /healthz (liveness: the
//! main loop turns), /readyz (readiness: probes attached, first sample in) and /health,
//! /health/<target> (the load-balancing verdict, verdict/health.rs); routes.rs says what
//! each answers.
//!
//! A slow or hostile client cannot hold the agent's memory or descriptors: open connections
//! are capped (`MAX_CONNECTIONS`, slots.rs: at the cap the oldest connection idle past a
//! grace is evicted), a request head is at most `MAX_HEAD` bytes (431 past it) and must
//! arrive in time, and so must the answer go out (conn.rs).
use std::{sync::Arc, time::Duration};

use hyper::{body::Incoming, service::service_fn, Request};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::{
    conn::{self, Phase, Reply, Watched},
    routes::Routes,
    slots::Slots,
};
use crate::{service::Health, snapshot::Published};

/// The largest request head (request line and headers) read.
const MAX_HEAD: usize = 8 * 1024;
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
    let routes = Arc::new(Routes {
        registry,
        health,
        snapshot,
        encoders: Arc::new(tokio::sync::Semaphore::new(ENCODERS)),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        // Header names as most servers write them (and some clients match them).
        .title_case_headers(true)
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_HEAD.max(8192)) // hyper's least
        // conn.rs times heads itself: hyper's timer would also close idle keep-alives.
        .header_read_timeout(None);
    let http = Arc::new(http);
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
        let (routes, http) = (routes.clone(), http.clone());
        tokio::spawn(async move {
            let phase = Phase::new();
            let io = TokioIo::new(Watched::new(stream, phase.clone()));
            let service = {
                let phase = phase.clone();
                service_fn(move |req: Request<Incoming>| {
                    let (routes, phase) = (routes.clone(), phase.clone());
                    async move {
                        phase.answering();
                        let answer = routes.answer(&req).await;
                        Ok::<_, std::convert::Infallible>(answer.map(|b| Reply::new(b, phase)))
                    }
                })
            };
            let served = http.serve_connection(io, service);
            if let Err(e) = conn::drive(served, &phase, slot).await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}
