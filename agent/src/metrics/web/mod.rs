//! The web config (`[agent] web_config`): TLS, client certificates, basic auth and extra
//! headers for the HTTP endpoint, in the exporter-toolkit's file format (file.rs). The file
//! is looked at (stat: device, inode, size, mtime) as each connection and each request
//! comes in and read again when it changed; a file that no longer loads keeps the last good config and is
//! logged (with line and column for YAML errors) once per change.
mod auth;
mod file;
mod tls;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::SystemTime,
};

use hyper::header::{HeaderName, HeaderValue};
use tokio_rustls::TlsAcceptor;

/// One loaded web config.
pub struct Web {
    pub tls: Option<TlsAcceptor>,
    pub users: auth::Users,
    /// `http_server_config.headers`, added to every answer.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The headers the exporter-toolkit lets a web config set.
const HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

impl Web {
    /// No TLS, no auth: the endpoint as it is without a web config.
    pub fn open() -> Self {
        Self {
            tls: None,
            users: auth::Users::none(),
            headers: vec![],
        }
    }

    /// Reads and checks the file at `path`; an error starts with `path` (and line:column
    /// where the YAML says where).
    pub fn load(path: &Path) -> Result<Self, String> {
        let at = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{at}: {e}"))?;
        let parsed = file::parse(&text).map_err(|e| format!("{at}:{e}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match &parsed.tls_server_config {
            Some(t) => Some(TlsAcceptor::from(
                tls::server_config(t, dir).map_err(|e| format!("{at}: {e}"))?,
            )),
            None => None,
        };
        let users = auth::Users::new(parsed.basic_auth_users).map_err(|e| format!("{at}: {e}"))?;
        let mut headers = Vec::new();
        for (name, value) in parsed.http_server_config.headers {
            let Some(known) = HEADERS.iter().find(|h| h.eq_ignore_ascii_case(&name)) else {
                return Err(format!(
                    "{at}: http_server_config.headers.{}: not one of {}",
                    name.escape_debug(),
                    HEADERS.join(", ")
                ));
            };
            let value = HeaderValue::from_str(&value).map_err(|_| {
                format!("{at}: http_server_config.headers.{known}: not a valid header value")
            })?;
            let name =
                HeaderName::from_bytes(known.as_bytes()).map_err(|e| format!("{at}: {e}"))?;
            headers.push((name, value));
        }
        Ok(Self {
            tls,
            users,
            headers,
        })
    }
}

/// Why requests were refused, counted for `gimbal_http_requests_refused_total{reason}`.
#[derive(Debug, Default)]
pub struct Refusals {
    pub unauthorized: AtomicU64,
    pub no_client_cert: AtomicU64,
    pub tls_handshake: AtomicU64,
}

impl Refusals {
    /// (reason, count), in a fixed order.
    pub fn rows(&self) -> [(&'static str, u64); 3] {
        [
            ("unauthorized", &self.unauthorized),
            ("no_client_cert", &self.no_client_cert),
            ("tls_handshake", &self.tls_handshake),
        ]
        .map(|(reason, n)| (reason, n.load(Ordering::Relaxed)))
    }

    pub fn count(n: &AtomicU64) {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// The file's identity: a change of any part means read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

/// The web config in force, re-read when its file changes.
pub struct WebConfig {
    path: Option<PathBuf>,
    current: Mutex<(Option<Stamp>, Arc<Web>)>,
}

impl WebConfig {
    /// Without a file: plain HTTP, no auth.
    pub fn none() -> Self {
        Self {
            path: None,
            current: Mutex::new((None, Arc::new(Web::open()))),
        }
    }

    /// From `path`, which must load now.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let stamp = stamp(path);
        let web = Web::load(path)?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            current: Mutex::new((stamp, Arc::new(web))),
        })
    }

    /// The config for a new connection: read again first if the file changed.
    pub fn current(&self) -> Arc<Web> {
        let Some(path) = &self.path else {
            return crate::sync::lock(&self.current).1.clone();
        };
        let now = stamp(path);
        let mut current = crate::sync::lock(&self.current);
        if now != current.0 {
            // Remembered either way: a bad file is logged once, not per connection.
            current.0 = now;
            match Web::load(path) {
                Ok(web) => {
                    tracing::info!(file = %path.display(), "web config reloaded");
                    current.1 = Arc::new(web);
                }
                Err(e) => tracing::error!("web config not reloaded, the previous one stays: {e}"),
            }
        }
        current.1.clone()
    }
}
