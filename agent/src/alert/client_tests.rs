//! The client against loopback servers on real sockets: hostile replies are bounded and
//! refused, and notifications to one Alertmanager share one connection.
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

use super::*;

/// Connections accepted and requests answered by a fake server.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    answered: AtomicUsize,
}

/// A loopback server that reads each request whole (unread data would turn a close into
/// a reset) and answers it with `reply`; closes after one reply unless `keep_alive`.
async fn fake(reply: Vec<u8>, keep_alive: bool) -> (Uri, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/api/v2/alerts", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let (c, reply) = (c.clone(), reply.clone());
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    s.read_exact(&mut body).await.unwrap();
                    c.answered.fetch_add(1, Ordering::SeqCst);
                    // A client that stops reading (past the cap) ends the write.
                    if s.write_all(&reply).await.is_err() || !keep_alive {
                        return;
                    }
                }
            });
        }
    });
    (uri, counts)
}

async fn post_to(reply: Vec<u8>) -> Result<(), DeliveryError> {
    let (uri, _) = fake(reply, false).await;
    let http = Http::new(None);
    http.post(&uri, None, Bytes::from_static(b"[]")).await
}

fn ok_with_body(len: usize) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    r.resize(r.len() + len, b'x');
    r
}

#[tokio::test]
async fn replies_are_read_up_to_the_cap_and_no_further() {
    post_to(ok_with_body(REPLY_CAP)).await.unwrap();
    let err = post_to(ok_with_body(REPLY_CAP + 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reply longer than 64 KiB (`HTTP/1.1 200 OK`)"),
        "{err}"
    );
    assert!(post_to(ok_with_body(50 << 20)).await.is_err());
    // A Content-Length is no promise: a body longer than the cap is cut at the cap.
    let mut lying = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n".to_vec();
    lying.resize(lying.len() + (1 << 20), b'x');
    let err = post_to(lying).await.unwrap_err().to_string();
    assert!(err.contains("reply longer than 64 KiB"), "{err}");
}

#[tokio::test]
async fn replies_that_are_not_http_or_not_200_are_failures() {
    let e = post_to(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    assert!(e.is_ok(), "{e:?}");
    let e = post_to(b"HTTP/1.0 400 Bad Request\r\n\r\n{}".to_vec()).await;
    assert!(
        matches!(e, Err(DeliveryError::Status { code: 400, .. })),
        "{e:?}"
    );
    let huge_head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "y".repeat(HEAD_CAP * 2));
    for bad in [
        &b""[..],
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nX: y\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 099 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x00K\r\n\r\n",
        b"xHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 +20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        huge_head.as_bytes(),
    ] {
        let r = post_to(bad.to_vec()).await;
        assert!(r.is_err(), "{:?}: {r:?}", String::from_utf8_lossy(bad));
    }
}

/// Through the deliverer, as the agent sends: N notifications to one Alertmanager go over
/// one kept connection (the fake keeps it open as Alertmanager does).
#[tokio::test]
async fn notifications_to_one_alertmanager_share_one_connection() {
    const N: usize = 5;
    let (uri, counts) = fake(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        true,
    )
    .await;
    let url = format!("http://{}", uri.authority().unwrap());
    let dir = std::env::temp_dir().join(format!("gimbal-am-reuse-{}", std::process::id()));
    let stats = Arc::new(super::super::DeliveryStats::default());
    let endpoint = super::super::Endpoint::parse(&url).unwrap();
    let tx = super::super::Deliverer::spawn(vec![endpoint], &dir, stats.clone()).unwrap();
    for i in 0..N {
        let n = super::super::Notification {
            labels: [("alertname".to_string(), format!("Reuse{i}"))].into(),
            annotations: Default::default(),
            starts_at: "2026-01-01T00:00:00Z".into(),
            ends_at: "0001-01-01T00:00:00Z".into(),
            generator_url: "http://127.0.0.1/metrics".into(),
        };
        tx.send(vec![n]).await.unwrap();
        // One at a time: each sent on its own, not in a burst.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while counts.answered.load(Ordering::SeqCst) <= i {
            assert!(tokio::time::Instant::now() < deadline, "notification {i}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Counted once the reply is read, just after the fake counts its answer.
    let sent = || crate::sync::lock(&stats.endpoints)[&url].sent;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent() < N as u64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(sent(), N as u64);
    assert_eq!(counts.answered.load(Ordering::SeqCst), N);
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        1,
        "one kept connection"
    );
}
