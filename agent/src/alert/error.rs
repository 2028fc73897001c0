//! What can go wrong talking to Alertmanager, as types: a configured URL that is refused, a
//! CA file that cannot be used, a delivery attempt that failed. The messages are what the
//! log, check-config and the spool's retry say; callers match on the kind.

/// An Alertmanager URL refused at config load: everything that would reach the request line
/// or the Host header is checked, since a CR or LF there would inject headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{url}` holds {found:?}: a URL has no spaces, control or non-ASCII characters")]
    Character { url: String, found: char },
    #[error("`{0}` is not an http:// or https:// URL")]
    Scheme(String),
    #[error("`{url}` holds `{found}`: no query, fragment or user info (use [alerting] basic_auth_username)")]
    Part { url: String, found: char },
    #[error("`{0}`: needs a host and a port, like http://127.0.0.1:9093")]
    NoHostPort(String),
    #[error("`{url}`: port `{port}` is not a number from 1 to 65535")]
    Port { url: String, port: String },
    #[error("`{url}`: host `{host}` is not a host name or an address")]
    Host { url: String, host: String },
    #[error("`{0}`: the path prefix has a `.` or `..` segment")]
    Traversal(String),
}

/// A `tls_ca_file`, or a `tls_cert_file` and `tls_key_file`, that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not PEM certificates: {source}")]
    NotPem {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Certificate {
        path: String,
        source: tokio_rustls::rustls::Error,
    },
    #[error("{0} holds no certificate")]
    Empty(String),
    #[error("{0} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)")]
    NoKey(String),
    #[error("{cert} with the key in {key}: {source}")]
    ClientCertificate {
        cert: String,
        key: String,
        source: tokio_rustls::rustls::Error,
    },
    #[error("TLS settings: {0}")]
    Protocols(tokio_rustls::rustls::Error),
}

/// One delivery attempt that did not end in a 200: the batch stays in the spool.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("the Authorization value (bearer token or user) holds a control character; not sent")]
    Authorization,
    #[error("https endpoint without TLS settings")]
    NoTls,
    #[error("request: {0}")]
    Request(String),
    #[error("receive: {0}")]
    Receive(String),
    #[error("reply longer than {} KiB ({status}): not an Alertmanager reply; not read further", super::client::REPLY_CAP / 1024)]
    TooLong { status: String },
    #[error("HTTP {code}: {status}")]
    Status { code: u16, status: String },
    #[error("timed out")]
    TimedOut,
}
