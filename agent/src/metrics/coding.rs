//! The content coding of a `/metrics` answer: gzip when the request's Accept-Encoding allows
//! it (Prometheus always asks; the exposition is repetitive text and shrinks ~15x), identity
//! otherwise. Compressed on the scrape's blocking thread, beside the encode.
use std::io::Write;

use flate2::{write::GzEncoder, Compression};
use hyper::header::{HeaderMap, ACCEPT_ENCODING};

/// Whether the request's Accept-Encoding allows gzip (RFC 9110 12.5.3): `gzip` or
/// `x-gzip` with a non-zero weight, else `*` with one. No header: identity.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
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
    use hyper::header::HeaderValue;

    fn head(accept_encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("x"));
        h.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_str(accept_encoding).unwrap(),
        );
        h
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
        let mut no_header = head("gzip");
        no_header.remove(ACCEPT_ENCODING);
        assert!(!accepts_gzip(&no_header));
        // Not the header's name in a value.
        no_header.insert("x", HeaderValue::from_static("accept-encoding: gzip"));
        assert!(!accepts_gzip(&no_header));
        // Named in two header lines: each counts.
        let mut two = head("br");
        two.append(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(accepts_gzip(&two));
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
