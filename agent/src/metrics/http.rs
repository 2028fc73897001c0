//! The HTTP endpoint, on hyper (HTTP/1.1, keep-alive): /metrics, /healthz (liveness: the
//! main loop turns), /readyz (readiness: probes attached, first sample in) and /health,
//! /health/<target> (the load-balancing verdict, verdict/health.rs); routes.rs says what
//! each answers.
//!
//! A slow or hostile client cannot hold the agent's memory or descriptors: open connections
//! are capped (`MAX_CONNECTIONS`, slots.rs: at the cap the oldest connection idle past a
//! grace is evicted), a request head is at most `MAX_HEAD` bytes (431 past it) and must
//! arrive in time, and so must the answer go out (conn.rs). TLS, client certificates,
//! basic auth and extra headers come from the web config (web/).
use std::sync::Arc;

use hyper::{
    body::Incoming,
    header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE},
    service::service_fn,
    Request, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{
    conn::{self, Phase, Reply, Watched},
    routes::{self, Routes},
    slots::Slots,
    web::{Refusals, WebConfig},
};

/// The largest request head (request line and headers) read.
const MAX_HEAD: usize = 8 * 1024;
/// At most this many connections open at once: well under any fd limit the agent runs
/// with (it raises its soft limit at start, see service::fd_limit), leaving the rest for
/// its own reads and writes.
pub const MAX_CONNECTIONS: usize = 64;
/// Scrapes encoded at once, each on a blocking thread: a scrape of a large exposition never
/// holds up the loop's thread (exit events, watchdog pings), and a flood of scrapes costs
/// at most this many cores.
pub const ENCODERS: usize = 2;

/// Serves forever. Accept errors (out of file descriptors, say) are logged and retried,
/// so a passing shortage cannot silence the endpoint for good. A connection is TLS or not
/// as the web config in force when it came in says; auth and headers follow the config
/// in force at each request.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    web: Arc<WebConfig>,
    refused: Arc<Refusals>,
) {
    let slots = Slots::new(MAX_CONNECTIONS);
    let routes = Arc::new(routes);
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
        let (stream, peer, mut slot) = slots.accept(&listener, "metrics").await;
        let (routes, http, refused, web) =
            (routes.clone(), http.clone(), refused.clone(), web.clone());
        tokio::spawn(async move {
            let phase = Phase::new();
            let io = Watched::new(stream, phase.clone());
            let Some(tls) = web.current().tls.clone() else {
                let served = connection(&http, io, &phase, routes, web, refused);
                return ended(peer, conn::drive(served, &phase, slot).await);
            };
            // The handshake is the head's first part: same deadline, still evictable.
            let handshake = tokio::time::timeout(conn::HEAD_TIMEOUT, tls.accept(io));
            let stream = tokio::select! {
                done = handshake => done,
                _ = &mut slot.evicted => return,
            };
            match stream {
                Ok(Ok(stream)) => {
                    let served = connection(&http, stream, &phase, routes, web, refused);
                    ended(peer, conn::drive(served, &phase, slot).await)
                }
                Ok(Err(e)) => {
                    Refusals::count(match no_client_cert(&e) {
                        true => &refused.no_client_cert,
                        false => &refused.tls_handshake,
                    });
                    tracing::debug!(%peer, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    Refusals::count(&refused.tls_handshake);
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// hyper serving one connection: every request checked against the users of the web
/// config in force then (401 otherwise; a user removed is refused on a kept-alive
/// connection too), every answer with its headers.
fn connection<I>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    phase: &Arc<Phase>,
    routes: Arc<Routes>,
    web: Arc<WebConfig>,
    refused: Arc<Refusals>,
) -> impl std::future::Future<Output = hyper::Result<()>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let phase = phase.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let (routes, phase, web, refused) =
            (routes.clone(), phase.clone(), web.clone(), refused.clone());
        async move {
            phase.answering();
            let web = web.current();
            let authorized =
                web.users.is_empty() || web.users.allows(req.headers().get(AUTHORIZATION)).await;
            let mut answer = match authorized {
                true => routes.answer(&req).await,
                false => {
                    Refusals::count(&refused.unauthorized);
                    let mut r = routes::text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                    r.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"gimbal\""),
                    );
                    r
                }
            };
            for (name, value) in &web.headers {
                answer.headers_mut().insert(name.clone(), value.clone());
            }
            Ok::<_, std::convert::Infallible>(answer.map(|b| Reply::new(b, phase)))
        }
    });
    http.serve_connection(TokioIo::new(io), service)
}

fn ended(peer: std::net::SocketAddr, result: Result<(), conn::Ended>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}

/// Whether a handshake failed for want of a client certificate.
fn no_client_cert(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
        .is_some_and(|e| matches!(e, tokio_rustls::rustls::Error::NoCertificatesPresented))
}
