//! A bounded HTTP load generator for the load-balancing benchmark: a fixed number of
//! workers, each sending one HTTP/1.0 request at a time at most once per `interval` (a
//! request slower than that holds its worker: a closed loop, never a pile-up), recording
//! each request's latency and the server that answered, named by a response header the
//! load balancer adds. Bounded: at most `MAX_RECORDS` records per worker, each response
//! read up to 64 KiB, the server's name kept only if short and plain.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

const MAX_RECORDS: usize = 500_000;
const MAX_RESPONSE: u64 = 64 * 1024;

/// One request.
#[derive(Clone, Debug)]
pub struct Record {
    pub start: Instant,
    pub latency: Duration,
    /// The server named by the header; None when the request failed (no 200, a timeout).
    pub server: Option<String>,
}

/// Workers sending until `stop`.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Record>>>,
}

impl Load {
    /// `concurrency` workers against `127.0.0.1:port`, each at most one request per
    /// `interval`; `header` (lower case) names the server that answered.
    pub fn start(port: u16, concurrency: usize, interval: Duration, header: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let prefix = format!("{}:", header.to_ascii_lowercase());
        let workers = (0..concurrency)
            .map(|i| {
                let stop = stop.clone();
                let prefix = prefix.clone();
                // Staggered, so the workers do not all fire together.
                let offset = interval.mul_f64(i as f64 / concurrency.max(1) as f64);
                std::thread::spawn(move || worker(addr, interval, offset, &prefix, &stop))
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops the workers (each finishes its request in flight) and returns every record,
    /// in start order.
    pub fn stop(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Record> = self
            .workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|r| r.start);
        all
    }
}

fn worker(
    addr: SocketAddr,
    interval: Duration,
    offset: Duration,
    prefix: &str,
    stop: &AtomicBool,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut next = Instant::now() + offset;
    while !stop.load(Ordering::Relaxed) && records.len() < MAX_RECORDS {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        // Late (a slow request): go at once, and keep the pace from here, not catch up.
        next = next.max(Instant::now() - interval) + interval;
        let start = Instant::now();
        let server = request(addr, prefix);
        records.push(Record {
            start,
            latency: start.elapsed(),
            server,
        });
    }
    records
}

/// One GET; the server's name from the header, if the answer is a 200 carrying one.
fn request(addr: SocketAddr, prefix: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.lines();
    if lines.next()?.split(' ').nth(1)? != "200" {
        return None;
    }
    lines.find_map(|l| {
        let (name, value) = l.split_at_checked(prefix.len())?;
        if !name.eq_ignore_ascii_case(prefix) {
            return None;
        }
        let value = value.trim();
        (value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| value.to_string())
    })
}

/// Nearest-rank quantile of latencies, in ms (0 for none).
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server answering `reply` to one request.
    fn serve(reply: &'static [u8]) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        });
        port
    }

    fn ask(reply: &'static [u8]) -> Option<String> {
        let port = serve(reply);
        request(SocketAddr::from(([127, 0, 0, 1], port)), "x-served-by:")
    }

    #[test]
    fn the_server_comes_from_the_header_of_a_200_only() {
        assert_eq!(
            ask(b"HTTP/1.0 200 OK\r\nX-Served-By: b\r\n\r\nok\n").as_deref(),
            Some("b")
        );
        assert_eq!(ask(b"HTTP/1.0 503 Busy\r\nx-served-by: b\r\n\r\n"), None);
        assert_eq!(ask(b"HTTP/1.0 200 OK\r\n\r\nok\n"), None);
        // Hostile values are not kept.
        assert_eq!(
            ask(b"HTTP/1.0 200 OK\r\nx-served-by: a\x1b[2J\r\n\r\n"),
            None
        );
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&v, 0.5), 50.0);
        assert_eq!(quantile_ms(&v, 0.99), 99.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }
}
