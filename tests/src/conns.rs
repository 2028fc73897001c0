//! Client connections of the kinds a scraper, a prober or a hostile client makes, plain or
//! over TLS (rustls, the library the agent itself uses, as a client here), each ending with
//! the client closing it, so a test can count what the agent keeps afterwards.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::Duration,
};

pub use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::{
    self, pki_types::ServerName, ClientConnection, RootCertStore, StreamOwned,
};

/// A client configuration trusting only the CA certificate at `ca` (pki.rs writes one).
pub fn tls_client(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(ca).expect("CA certificate");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    // A stalled agent fails the test instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A TLS session over a new connection to `addr`, its handshake done.
pub fn tls_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> std::io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, connect(addr)?);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Sends `GET path` (HTTP/1.1, kept alive) and reads its whole answer by Content-Length:
/// the status.
pub fn get_kept_alive<S: Read + Write>(
    s: &mut BufReader<S>,
    path: &str,
    extra: &str,
) -> Result<u16, String> {
    // One write: a request in pieces would wait on Nagle and delayed ACKs.
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n");
    s.get_mut()
        .write_all(head.as_bytes())
        .and_then(|()| s.get_mut().flush())
        .map_err(|e| format!("send {path}: {e}"))?;
    let (mut status, mut length) = (None, None);
    let mut line = String::new();
    loop {
        line.clear();
        let n = s
            .read_line(&mut line)
            .map_err(|e| format!("receive {path}: {e}"))?;
        if n == 0 {
            return Err(format!("{path}: closed mid-answer"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if status.is_none() {
            status = l.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok());
        } else if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let status = status.ok_or_else(|| format!("{path}: no status line"))?;
    let length = length.ok_or_else(|| format!("{path}: no Content-Length"))?;
    let mut body = vec![0; length];
    s.read_exact(&mut body)
        .map_err(|e| format!("receive {path}'s body: {e}"))?;
    Ok(status)
}

/// One connection of a kind, its client closing it when done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Three requests kept alive on one connection (/healthz, /readyz, then `last`).
    KeptAlive { last: &'static str },
    /// Half a request head, then the client goes.
    AbandonedHead,
    /// Opened and closed without a byte.
    Idle,
    /// A head over the agent's 8 KiB cap: 431, and the agent closes.
    OversizedHead,
    /// Over TLS: a full handshake, two requests kept alive.
    TlsKeptAlive,
    /// Over TLS: the ClientHello sent, the client gone before the server's answer.
    TlsAbandonedHandshake,
    /// Plain HTTP to the TLS port: the agent refuses the handshake and closes.
    PlainToTls,
}

/// An opened connection, between its connect and its client's close.
pub enum Open {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Kind {
    /// Connects to `addr` (the handshake done for `TlsKeptAlive`).
    pub fn open(self, addr: SocketAddr, tls: &Arc<ClientConfig>) -> Result<Open, String> {
        match self {
            Kind::TlsKeptAlive => tls_connect(addr, tls)
                .map(|s| Open::Tls(Box::new(s)))
                .map_err(|e| format!("{self:?}: {e}")),
            _ => connect(addr)
                .map(Open::Plain)
                .map_err(|e| format!("{self:?}: connect: {e}")),
        }
    }

    /// Does this kind's part on `open`, then closes it (drops it).
    pub fn finish(self, open: Open, tls: &Arc<ClientConfig>) -> Result<(), String> {
        match (self, open) {
            (Kind::KeptAlive { last }, Open::Plain(s)) => {
                let mut s = BufReader::new(s);
                let codes = [
                    get_kept_alive(&mut s, "/healthz", "")?,
                    get_kept_alive(&mut s, "/readyz", "")?,
                    get_kept_alive(&mut s, last, "Accept-Encoding: gzip\r\n")?,
                ];
                expect_codes(self, &codes)
            }
            (Kind::TlsKeptAlive, Open::Tls(s)) => {
                let mut s = BufReader::new(*s);
                let codes = [
                    get_kept_alive(&mut s, "/healthz", "")?,
                    get_kept_alive(&mut s, "/readyz", "")?,
                ];
                expect_codes(self, &codes)
            }
            (Kind::AbandonedHead, Open::Plain(mut s)) => s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Ag")
                .map_err(|e| format!("{self:?}: {e}")),
            (Kind::Idle, Open::Plain(_)) => Ok(()),
            (Kind::OversizedHead, Open::Plain(mut s)) => {
                let head = format!(
                    "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
                    "a".repeat(9 * 1024)
                );
                // The agent may answer and close before all of the head is in: a failed
                // write is its refusal too.
                let _ = s.write_all(head.as_bytes());
                let status = read_status(&mut s);
                match status {
                    Some(431) | None => Ok(()),
                    other => Err(format!("{self:?}: answered {other:?}, not 431")),
                }
            }
            (Kind::TlsAbandonedHandshake, Open::Plain(mut s)) => {
                let name = ServerName::IpAddress(s.peer_addr().unwrap().ip().into());
                let mut conn =
                    ClientConnection::new(tls.clone(), name).map_err(|e| e.to_string())?;
                conn.write_tls(&mut s)
                    .map(drop)
                    .map_err(|e| format!("{self:?}: ClientHello: {e}"))
            }
            (Kind::PlainToTls, Open::Plain(mut s)) => {
                s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
                    .map_err(|e| format!("{self:?}: {e}"))?;
                match read_status(&mut s) {
                    Some(code) => Err(format!("{self:?}: answered {code} in plain text")),
                    None => Ok(()),
                }
            }
            (kind, _) => Err(format!("{kind:?} opened the wrong way")),
        }
    }
}

fn expect_codes(kind: Kind, codes: &[u16]) -> Result<(), String> {
    // /readyz may say 503 while the agent's first sample is not in; a route it does not
    // have says 404; anything else is wrong.
    match codes.iter().all(|c| [200, 404, 503].contains(c)) && codes[0] == 200 {
        true => Ok(()),
        false => Err(format!("{kind:?}: answered {codes:?}")),
    }
}

/// Reads until the agent closes: the status of a plain-text answer in it, if any.
fn read_status(s: &mut TcpStream) -> Option<u16> {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.strip_prefix("HTTP/1.")?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}
