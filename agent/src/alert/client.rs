//! The HTTP side of one Alertmanager: hyper-util's client, which keeps the connection open
//! between notifications (a keep-alive pool of one), over rustls (ring) for https://. A
//! reply is hostile until read: its head and body are capped, whatever it says its
//! Content-Length is; the caller bounds the time.
use std::{path::Path, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{
    body::Bytes,
    header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE},
    Request, StatusCode, Uri,
};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use tokio_rustls::rustls::{
    pki_types::{CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore,
};

use super::error::{DeliveryError, TlsError};

/// The most of a reply body that is read. Alertmanager's is empty (a short JSON error at
/// worst): a peer sending more is not Alertmanager, and must not grow the agent's memory.
pub const REPLY_CAP: usize = 64 * 1024;
/// The most of a reply head (status line and headers) that is buffered; hyper's floor.
const HEAD_CAP: usize = 8 * 1024;
/// How long an unused connection stays open: past the 1 s retry and typical resend
/// intervals, below the idle timeouts of common proxies (60 s).
const IDLE: Duration = Duration::from_secs(30);

/// One Alertmanager's pooled client (cheap to clone: the pool is shared).
#[derive(Clone)]
pub(super) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Http {
    /// `tls` for an https:// endpoint; an http:// one gets a TLS side that trusts nothing
    /// (never used: the client follows no redirects).
    pub(super) fn new(tls: Option<Arc<ClientConfig>>) -> Self {
        let tls = tls.map_or_else(
            || no_roots().expect("ring offers the default protocol versions"),
            |t| (*t).clone(),
        );
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1)
            .http1_max_buf_size(HEAD_CAP)
            .build(connector);
        Self { client }
    }

    /// POSTs `body` as JSON; Ok on a 200 whose reply was read whole. A longer reply is an
    /// error even after a 200: delivery is at-least-once, so a reply that cannot be read
    /// whole is not taken as an acceptance (a resend costs a duplicate Alertmanager drops;
    /// a wrong "sent" would lose the alert). Its connection is then dropped, not pooled.
    pub(super) async fn post(
        &self,
        uri: &Uri,
        authorization: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<(), DeliveryError> {
        let mut request = Request::post(uri.clone()).header(CONTENT_TYPE, "application/json");
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a.clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Request(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| {
            let chain = chain(&e);
            if e.is_connect() {
                DeliveryError::Connect(chain)
            } else {
                DeliveryError::Request(chain)
            }
        })?;
        let status = response.status();
        let line = format!(
            "{:?} {} {}",
            response.version(),
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        );
        let line = format!("`{}`", line.trim_end());
        match Limited::new(response.into_body(), REPLY_CAP)
            .collect()
            .await
        {
            Ok(_) => {}
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(DeliveryError::TooLong { status: line })
            }
            Err(e) => return Err(DeliveryError::Receive(chain(e.as_ref()))),
        }
        match status {
            StatusCode::OK => Ok(()),
            _ => Err(DeliveryError::Status {
                code: status.as_u16(),
                status: line,
            }),
        }
    }
}

/// An error and its causes, `: `-joined (hyper's own message alone says little).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn builder() -> Result<
    tokio_rustls::rustls::ConfigBuilder<ClientConfig, tokio_rustls::rustls::WantsVerifier>,
    TlsError,
> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)
}

fn no_roots_builder() -> Result<
    tokio_rustls::rustls::ConfigBuilder<
        ClientConfig,
        tokio_rustls::rustls::client::WantsClientCert,
    >,
    TlsError,
> {
    Ok(builder()?.with_root_certificates(RootCertStore::empty()))
}

fn no_roots() -> Result<ClientConfig, TlsError> {
    Ok(no_roots_builder()?.with_no_client_auth())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A TLS client that trusts the CA certificates in the PEM file `ca` and, with `client`
/// (certificate chain and key PEM files), proves itself with that certificate (mTLS).
pub fn tls_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let path = || ca.display().to_string();
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read(ca)?.as_slice()) {
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
    let builder = builder()?.with_root_certificates(roots);
    match client {
        None => Ok(Arc::new(builder.with_no_client_auth())),
        Some((cert, key)) => {
            let (chain, private) = identity(cert, key)?;
            let config = builder
                .with_client_auth_cert(chain, private)
                .map_err(|source| mismatch(cert, key, source))?;
            Ok(Arc::new(config))
        }
    }
}

/// Whether a client certificate and key load as `tls_config` loads them, the key
/// belonging to the certificate.
pub fn check_client_certificate(cert: &Path, key: &Path) -> Result<(), TlsError> {
    let (chain, private) = identity(cert, key)?;
    no_roots_builder()?
        .with_client_auth_cert(chain, private)
        .map(drop)
        .map_err(|source| mismatch(cert, key, source))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificate chain and private key of PEM files.
fn identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::NotPem {
            path: cert.display().to_string(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::Empty(cert.display().to_string()));
    }
    let private = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|source| TlsError::NotPem {
            path: key.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key.display().to_string()))?;
    Ok((chain, private))
}

fn mismatch(cert: &Path, key: &Path, source: tokio_rustls::rustls::Error) -> TlsError {
    TlsError::ClientCertificate {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        source,
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
