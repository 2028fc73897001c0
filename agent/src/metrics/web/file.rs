//! The web config file, in the Prometheus exporter-toolkit's format (node_exporter's
//! `--web.config.file`), so that a node_exporter user's file works as it is:
//! `tls_server_config`, `basic_auth_users` (bcrypt hashes), `http_server_config.headers`.
//! What rustls cannot do as Go's TLS does (cipher suites, curves, TLS 1.0/1.1) is refused
//! by name rather than ignored.
use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebFile {
    pub tls_server_config: Option<TlsFile>,
    pub basic_auth_users: BTreeMap<String, String>,
    pub http_server_config: HttpFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFile {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_auth_type: Option<ClientAuth>,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    /// Go's server preference; rustls always chooses by its own order, so accepted as is.
    pub prefer_server_cipher_suites: Option<bool>,
    pub cipher_suites: Option<Vec<String>>,
    pub curve_preferences: Option<Vec<String>>,
    pub client_allowed_sans: Option<Vec<String>>,
}

/// Go's `tls.ClientAuthType` names, as the exporter-toolkit takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpFile {
    pub headers: BTreeMap<String, String>,
    /// Go's HTTP/2 switch; the endpoint speaks HTTP/1.1 only, so accepted as is.
    pub http2: Option<bool>,
}

/// Parses the file's text; an error names line and column.
pub fn parse(text: &str) -> Result<WebFile, String> {
    serde_saphyr::from_str(text).map_err(|e| match e.location() {
        Some(at) => format!(
            "{}:{}: {}",
            at.line(),
            at.column(),
            first_line(&e.to_string())
        ),
        None => first_line(&e.to_string()),
    })
}

/// serde-saphyr's message may quote the source over several lines; one line is logged.
fn first_line(msg: &str) -> String {
    msg.lines().next().unwrap_or("").to_string()
}
