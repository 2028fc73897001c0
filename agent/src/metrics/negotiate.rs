//! Which exposition format a scrape's Accept header prefers. Prometheus with native
//! histograms enabled puts the protobuf format first
//! (`application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,
//! application/openmetrics-text;version=1.0.0;q=0.8,...`); without, OpenMetrics first.
use hyper::header::{HeaderMap, ACCEPT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Length-delimited MetricFamily messages, native histograms included.
    Protobuf,
    OpenMetrics,
    /// Text 0.0.4: what a client that names neither gets (curl, promtool).
    Text,
}

impl Format {
    /// Protobuf when it is named (with the MetricFamily proto and delimited encoding) with
    /// a weight above zero and at least every other named type's (`*/*` aside); else
    /// OpenMetrics when named at all (as before); else text.
    pub fn negotiate(headers: &HeaderMap) -> Format {
        let (mut protobuf, mut others, mut openmetrics) = (None::<f32>, 0f32, false);
        for value in headers.get_all(ACCEPT).iter() {
            let value = String::from_utf8_lossy(value.as_bytes());
            for range in value.split(',') {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or("").to_ascii_lowercase();
                let params: Vec<(String, &str)> = parts
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"')))
                    .collect();
                let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|p| p.1);
                let q = param("q").map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
                match media.as_str() {
                    "application/vnd.google.protobuf"
                        if param("proto") == Some("io.prometheus.client.MetricFamily")
                            && param("encoding") == Some("delimited") =>
                    {
                        protobuf = Some(protobuf.map_or(q, |p| p.max(q)));
                    }
                    "*/*" | "" => {}
                    other => {
                        openmetrics |= other == "application/openmetrics-text" && q > 0.0;
                        others = others.max(q);
                    }
                }
            }
        }
        match protobuf {
            Some(q) if q > 0.0 && q >= others => Format::Protobuf,
            _ if openmetrics => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn accept(v: &str) -> Format {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
        Format::negotiate(&h)
    }

    #[test]
    fn prometheus_gets_what_it_puts_first() {
        // Prometheus 2.42 with --enable-feature=native-histograms, byte for byte.
        assert_eq!(
            accept("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::Protobuf
        );
        // And without it.
        assert_eq!(
            accept("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics
        );
        assert_eq!(accept("*/*"), Format::Text);
        assert_eq!(accept("text/plain"), Format::Text);
    }

    #[test]
    fn protobuf_needs_its_parameters_and_the_highest_weight() {
        let pb = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
        assert_eq!(accept(pb), Format::Protobuf);
        assert_eq!(
            accept("Application/Vnd.Google.Protobuf; Proto=io.prometheus.client.MetricFamily; Encoding=delimited"),
            Format::Protobuf
        );
        // Another encoding (text, compact-text) is not what this agent writes.
        assert_eq!(
            accept("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"),
            Format::Text
        );
        assert_eq!(accept("application/vnd.google.protobuf"), Format::Text);
        assert_eq!(accept(&format!("{pb};q=0")), Format::Text);
        assert_eq!(
            accept(&format!("{pb};q=0.5,application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            accept(&format!("{pb};q=0.5,text/plain;q=0.9")),
            Format::Text
        );
        assert_eq!(
            accept(&format!("{pb};q=junk, text/plain;q=0.1")),
            Format::Text
        );
        assert_eq!(accept(&format!("text/plain;q=0.5, {pb}")), Format::Protobuf);
    }
}
