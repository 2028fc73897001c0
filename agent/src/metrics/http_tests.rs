//! The real server on a loopback port: `/metrics` gzipped when asked, identity otherwise,
//! the same exposition either way; HEAD gets the head alone.
use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::Duration,
};

use super::{AgentInfo, Exposition};
use crate::{alert::DeliveryStats, service::Health, snapshot};

/// Serves a filled snapshot on a thread of its own; returns the port.
fn server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let published = snapshot::Published::new(snapshot::filled());
            let info = AgentInfo {
                version: "1",
                kernel: "6.1.0".into(),
                probes: vec![],
            };
            let registry = Arc::new(Exposition::registry(
                published.clone(),
                info,
                Arc::new(DeliveryStats::default()),
            ));
            let health = Arc::new(Health::new(Duration::from_secs(1)));
            super::serve(listener, registry, health, published).await;
        });
    });
    port
}

/// (head, body bytes) of one request.
fn request(port: u16, method: &str, path: &str, headers: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    (
        String::from_utf8(raw[..end].to_vec()).unwrap(),
        raw[end..].to_vec(),
    )
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines()
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[test]
fn metrics_are_gzipped_when_asked_and_decode_to_the_identity_body() {
    let port = server();
    for accept in [
        "",
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    ] {
        let (head, identity) = request(port, "GET", "/metrics", accept);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "Content-Encoding"), None, "{head}");
        assert_eq!(header(&head, "Vary"), Some("Accept-Encoding"), "{head}");
        let asked = format!("{accept}Accept-Encoding: gzip\r\n");
        let (head, packed) = request(port, "GET", "/metrics", &asked);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "Content-Encoding"), Some("gzip"), "{head}");
        assert_eq!(header(&head, "Vary"), Some("Accept-Encoding"), "{head}");
        assert_eq!(
            header(&head, "Content-Length"),
            Some(packed.len().to_string().as_str())
        );
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .expect("a gzip body");
        // The same snapshot, unchanged between the two scrapes: the same bytes.
        assert_eq!(
            String::from_utf8(unpacked).unwrap(),
            String::from_utf8(identity.clone()).unwrap()
        );
        assert!(
            packed.len() * 3 < identity.len(),
            "{} of {}",
            packed.len(),
            identity.len()
        );
        assert!(String::from_utf8(identity)
            .unwrap()
            .contains("gimbal_syscall_latency_seconds_bucket"));
    }
    // Refused gzip: identity.
    let (head, body) = request(port, "GET", "/metrics", "Accept-Encoding: gzip;q=0\r\n");
    assert_eq!(header(&head, "Content-Encoding"), None, "{head}");
    assert!(body.starts_with(b"# HELP"));
}

#[test]
fn head_gets_the_head_of_get_and_no_body() {
    let port = server();
    let (get_head, get_body) = request(port, "GET", "/metrics", "Accept-Encoding: gzip\r\n");
    let (head, body) = request(port, "HEAD", "/metrics", "Accept-Encoding: gzip\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty(), "{} body bytes to a HEAD", body.len());
    assert_eq!(header(&head, "Content-Encoding"), Some("gzip"));
    assert_eq!(
        header(&head, "Content-Length"),
        Some(get_body.len().to_string().as_str()),
        "{get_head}"
    );
    let (head, body) = request(port, "HEAD", "/healthz", "");
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(body.is_empty());
    let (head, _) = request(port, "POST", "/metrics", "");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(header(&head, "Allow"), Some("GET, HEAD"), "{head}");
}
