//! The content coding of a `/metrics` answer: gzip when the request's Accept-Encoding allows
//! it (Prometheus always asks; the exposition is repetitive text and shrinks ~15x), identity
//! otherwise. Compressed on the scrape's blocking thread, beside the encode.
use std::io::Write;

use flate2::{write::GzEncoder, Compression};

/// Whether the request head's Accept-Encoding allows gzip (RFC 9110 12.5.3): `gzip` or
/// `x-gzip` with a non-zero weight, else `*` with one. No header: identity.
pub fn accepts_gzip(request: &[u8]) -> bool {
    let head = String::from_utf8_lossy(request);
    let mut gzip = None;
    let mut any = None;
    for value in head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("accept-encoding"))
        .map(|(_, v)| v)
    {
        for item in value.split(',') {
            let mut params = item.split(';');
            let coding = params.next().unwrap_or("").trim();
            let weight = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, q)| q.trim().parse::<f32>().unwrap_or(0.0));
            let slot =
                if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                    &mut gzip
                } else if coding == "*" {
                    &mut any
                } else {
                    continue;
                };
            // A coding named twice: the first weight counts, as most servers read it.
            slot.get_or_insert(weight > 0.0);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// `body` gzipped at a fast level: a busy scrape is a few MB, and level 1 already takes
/// the repeated label sets; higher levels cost several times the CPU for a few percent.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(accept_encoding: &str) -> Vec<u8> {
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {accept_encoding}\r\n\r\n")
            .into_bytes()
    }

    #[test]
    fn gzip_when_allowed_identity_otherwise() {
        // What Prometheus sends.
        assert!(accepts_gzip(&head("gzip")));
        assert!(accepts_gzip(&head("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&head("x-gzip")));
        assert!(accepts_gzip(&head("*")));
        assert!(accepts_gzip(&head("br, *;q=0.1")));
        assert!(!accepts_gzip(&head("gzip;q=0")));
        assert!(!accepts_gzip(&head("gzip;q=0.000, *")));
        assert!(!accepts_gzip(&head("identity")));
        assert!(!accepts_gzip(&head("gzipper")));
        assert!(!accepts_gzip(&head("gzip;q=junk")));
        assert!(!accepts_gzip(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
        // Not the header's name in a value.
        assert!(!accepts_gzip(
            b"GET /metrics HTTP/1.1\r\nX: accept-encoding: gzip\r\n\r\n"
        ));
    }

    #[test]
    fn gzip_round_trips() {
        let body = "gimbal_x_total{cgroup=\"a\"} 1\n".repeat(1000);
        let packed = gzip(body.as_bytes()).unwrap();
        assert!(packed.len() * 20 < body.len(), "{} bytes", packed.len());
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
