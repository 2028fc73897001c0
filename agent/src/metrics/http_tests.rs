//! The real server on a loopback port: `/metrics` gzipped when asked, identity otherwise,
//! the same exposition either way; HEAD gets the head alone.
use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::Duration,
};

use super::{web::Refusals, AgentInfo, Exposition};
use crate::{alert::DeliveryStats, service::Health, snapshot};

/// Serves a filled snapshot on a thread of its own; returns the port.
fn server() -> u16 {
    serve_filled(Arc::new(super::web::WebConfig::none()), Arc::default())
}

/// Serves a filled snapshot under `web` on a thread of its own, counting refusals in
/// `refused`; returns the port.
pub(super) fn serve_filled(web: Arc<super::web::WebConfig>, refused: Arc<Refusals>) -> u16 {
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
                refused: refused.clone(),
            };
            let exposition = Exposition::shared(
                published.clone(),
                info,
                Arc::new(DeliveryStats::default()),
                &crate::config::ClassicBuckets::default(),
            );
            let health = Arc::new(Health::new(Duration::from_secs(1)));
            let routes = super::Routes::new(exposition, health, published);
            super::serve(listener, routes, web, refused).await;
        });
    });
    port
}

/// (head, body bytes) of one request on a new connection.
fn request(port: u16, method: &str, path: &str, headers: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    send(&mut s, method, path, headers)
}

/// One request on `s`, read to the end of its answer (the connection stays open).
fn send(s: &mut TcpStream, method: &str, path: &str, headers: &str) -> (String, Vec<u8>) {
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8];
    while !raw.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("a head");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let length: usize = match method {
        "HEAD" => 0,
        _ => header(&head, "Content-Length")
            .expect("a Content-Length")
            .parse()
            .unwrap(),
    };
    let mut body = vec![0; length];
    s.read_exact(&mut body).expect("the body");
    (head, body)
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
        "Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited\r\n",
    ] {
        let (head, identity) = request(port, "GET", "/metrics", accept);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "Content-Encoding"), None, "{head}");
        assert_eq!(
            header(&head, "Vary"),
            Some("Accept, Accept-Encoding"),
            "{head}"
        );
        let asked = format!("{accept}Accept-Encoding: gzip\r\n");
        let (head, packed) = request(port, "GET", "/metrics", &asked);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "Content-Encoding"), Some("gzip"), "{head}");
        assert_eq!(
            header(&head, "Vary"),
            Some("Accept, Accept-Encoding"),
            "{head}"
        );
        assert_eq!(
            header(&head, "Content-Length"),
            Some(packed.len().to_string().as_str())
        );
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .expect("a gzip body");
        // The same snapshot, unchanged between the two scrapes: the same bytes.
        assert!(unpacked == identity, "the gzip body decodes to another body");
        // Protobuf is denser already: it shrinks less.
        let factor = if accept.contains("protobuf") { 2 } else { 3 };
        assert!(
            packed.len() * factor < identity.len(),
            "{} of {}",
            packed.len(),
            identity.len()
        );
        // Text names the bucket series; protobuf names the family once.
        let name: &[u8] = match accept.contains("protobuf") {
            true => b"\x1egimbal_syscall_latency_seconds",
            false => b"gimbal_syscall_latency_seconds_bucket",
        };
        assert!(identity.windows(name.len()).any(|w| w == name));
        let content_type = header(&head, "Content-Type").unwrap();
        assert_eq!(
            content_type.starts_with("application/vnd.google.protobuf"),
            accept.contains("protobuf"),
            "{content_type}"
        );
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

#[test]
fn a_connection_is_kept_alive_across_requests() {
    let port = server();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for (method, path) in [("GET", "/metrics"), ("HEAD", "/healthz"), ("GET", "/nope")] {
        let (head, _) = send(&mut s, method, path, "Accept-Encoding: gzip\r\n");
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        assert_eq!(header(&head, "Connection"), None, "{head}");
    }
    // `Connection: close` is honoured: the answer, then end of stream.
    let (head, _) = send(&mut s, "GET", "/healthz", "Connection: close\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty());
}

/// Raw bytes in, the whole answer out (the server closes after an error).
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_oversized_and_unknown_requests_get_their_status() {
    let port = server();
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert!(raw(port, long.as_bytes()).starts_with("HTTP/1.1 431"));
    assert!(raw(port, b"\x00\x01junk\r\n\r\n").starts_with("HTTP/1.1 400"));
    let big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
    assert!(raw(port, big).starts_with("HTTP/1.1 413"));
    let (head, body) = request(port, "GET", "/nope", "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(String::from_utf8(body).unwrap().contains("/metrics"));
    let (head, _) = request(port, "DELETE", "/healthz", "");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
}

#[test]
fn a_slow_head_is_cut_off_and_healthz_answers_meanwhile() {
    let port = server();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let t0 = std::time::Instant::now();
    let (head, _) = request(port, "GET", "/healthz", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out);
    let waited = t0.elapsed();
    assert!(
        waited >= super::conn::HEAD_TIMEOUT - Duration::from_millis(100)
            && waited < super::conn::HEAD_TIMEOUT + Duration::from_secs(3),
        "closed after {waited:?}"
    );
}
