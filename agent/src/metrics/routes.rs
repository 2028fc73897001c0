//! What each path answers: /metrics (encoded on a blocking thread, gzipped when asked, in
//! the format the Accept header prefers: protobuf with native histograms, OpenMetrics or
//! text 0.0.4), /healthz, /readyz, /health and /health/<target>. GET and HEAD only; HEAD
//! gets GET's head (hyper leaves the body out).
use std::sync::Arc;

use hyper::{
    body::{Body, Bytes},
    header::{self, HeaderMap, HeaderValue},
    Method, Request, Response, StatusCode,
};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::{coding, negotiate::Format, protobuf, text_format, Exposition};
use crate::{service::Health, snapshot::Published, verdict};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request body is never read; one larger than this is refused (413) rather than drained.
pub const MAX_BODY: u64 = 8 * 1024;

/// What every answer reads.
pub struct Routes {
    /// Text encodings (prometheus-client) of the exposition.
    pub registry: Arc<Registry>,
    /// The same exposition, for the protobuf encoding.
    pub exposition: Arc<Exposition>,
    pub health: Arc<Health>,
    pub snapshot: Published,
    /// Scrapes encoded at once (see http.rs).
    pub encoders: Arc<Semaphore>,
}

impl Routes {
    pub fn new(exposition: Arc<Exposition>, health: Arc<Health>, snapshot: Published) -> Self {
        Self {
            registry: Arc::new(Exposition::registry_of(exposition.clone())),
            exposition,
            health,
            snapshot,
            encoders: Arc::new(Semaphore::new(super::http::ENCODERS)),
        }
    }
}

impl Routes {
    pub async fn answer<B: Body>(&self, req: &Request<B>) -> Response<Bytes> {
        let body_len = req.body().size_hint().upper();
        if body_len.is_none_or(|n| n > MAX_BODY) {
            // Unread, the body cannot be skipped to a next request: close after answering.
            let mut r = text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match req.uri().path() {
            "/metrics" => self.metrics(req.headers()).await,
            "/healthz" if self.health.alive() => text(StatusCode::OK, "ok\n"),
            "/healthz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("main loop stalled for {:.0?}\n", self.health.stalled_for()),
            ),
            "/readyz" if self.health.ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: loading probes or taking the first sample\n",
            ),
            "/health" => self.verdict(None),
            p if p.starts_with("/health/") => self.verdict(p.strip_prefix("/health/")),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz, /health or /health/<target>\n",
            ),
        }
    }

    /// The exposition, encoded (and gzipped) on a blocking thread: a large one never holds
    /// up the loop's thread.
    async fn metrics(&self, headers: &HeaderMap) -> Response<Bytes> {
        let format = Format::negotiate(headers);
        let gzip = coding::accepts_gzip(headers);
        let Ok(permit) = self.encoders.clone().acquire_owned().await else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
        };
        let (registry, exposition) = (self.registry.clone(), self.exposition.clone());
        let encoded = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (content_type, body) = encode(&registry, &exposition, format)?;
            Some(match gzip {
                true => (content_type, true, coding::gzip(&body).ok()?),
                false => (content_type, false, body),
            })
        })
        .await;
        let Ok(Some((content_type, gzipped, body))) = encoded else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
        };
        let mut r = answer(StatusCode::OK, content_type, body.into());
        // The answer depends on Accept and Accept-Encoding, so a cache must key on both.
        let h = r.headers_mut();
        if gzipped {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept, Accept-Encoding"),
        );
        r
    }

    /// The verdict of the node (`name` None) or of a target (its name still percent-encoded).
    fn verdict(&self, name: Option<&str>) -> Response<Bytes> {
        let a = verdict::health::answer(name, &self.snapshot.read().verdicts);
        let status = a
            .status
            .get(..3)
            .and_then(|code| StatusCode::from_bytes(code.as_bytes()).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = answer(status, "application/json", a.body.into());
        if a.degraded {
            r.headers_mut()
                .insert("x-envoy-degraded", HeaderValue::from_static("true"));
        }
        r
    }
}

pub fn text(status: StatusCode, body: &str) -> Response<Bytes> {
    answer(
        status,
        "text/plain",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

/// Content-Length is set here, so that a HEAD gets GET's.
fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    *r.body_mut() = body;
    r
}

/// The exposition in the format asked for: (content type, body); None if encoding failed.
fn encode(
    registry: &Registry,
    exposition: &Exposition,
    format: Format,
) -> Option<(&'static str, Vec<u8>)> {
    if format == Format::Protobuf {
        return Some((protobuf::CONTENT_TYPE, exposition.encode_protobuf()));
    }
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry).ok()?;
    Some(match format {
        Format::OpenMetrics => (OPENMETRICS, body.into_bytes()),
        _ => (
            text_format::CONTENT_TYPE,
            text_format::from_openmetrics(&body).into_bytes(),
        ),
    })
}
