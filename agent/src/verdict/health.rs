//! The HTTP health answer for a verdict, for everything that checks health over HTTP
//! (Envoy active health checks, Consul HTTP checks, cloud target groups, keepalived,
//! HAProxy's `option httpchk`, Kubernetes readiness probes): 200, 200 with
//! `x-envoy-degraded` when degraded, 503 when draining or down; a small JSON body with
//! the state, the weight and the reason. The server is metrics/http.rs.
use super::{State, Verdict, Verdicts};

/// A path segment longer than this is refused before it is decoded.
pub const MAX_NAME: usize = 512;

/// (status line, extra header lines, JSON body).
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: &'static str,
    pub degraded: bool,
    pub body: String,
}

/// The answer to `GET /health` (`name` None) or `GET /health/<name>` (still encoded).
pub fn answer(name: Option<&str>, verdicts: &Verdicts) -> Answer {
    let decoded = match name {
        None => String::new(),
        Some(raw) => match percent_decode(raw) {
            Some(n) if !n.is_empty() => n,
            _ => return Answer {
                status: "400 Bad Request",
                degraded: false,
                body: "{\"error\":\"the target name is not a valid percent-encoded UTF-8 name\"}\n"
                    .into(),
            },
        },
    };
    let Some(v) = verdicts.lookup(&decoded) else {
        return Answer {
            status: "404 Not Found",
            degraded: false,
            // The name is written back only as JSON (escaped).
            body: format!(
                "{{\"error\":\"unknown target\",\"target\":{}}}\n",
                serde_json::Value::from(decoded)
            ),
        };
    };
    let status = match v.state {
        State::Up | State::Degraded => "200 OK",
        State::Drain | State::Down => "503 Service Unavailable",
    };
    Answer {
        status,
        degraded: v.state == State::Degraded,
        body: body(&v),
    }
}

fn body(v: &Verdict) -> String {
    let json = serde_json::json!({
        "state": v.state.name(),
        "weight": v.weight,
        "reason": v.reason,
    });
    format!("{json}\n")
}

/// Strict percent-decoding of one path segment: `%XX` with two hex digits only, the
/// result valid UTF-8 without control characters; `/`, `?`, `#` and a bare `%` refused.
pub fn percent_decode(s: &str) -> Option<String> {
    if s.len() > MAX_NAME {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'/' | b'?' | b'#' => return None,
            b if b.is_ascii_graphic() => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts() -> Verdicts {
        let mut v = Verdicts::default();
        v.targets.insert("web".into(), Verdict::up());
        v.targets.insert(
            "a b".into(),
            Verdict::new(State::Degraded, 40, "CPU pressure 35.0% (some avg10)"),
        );
        v.targets
            .insert("db".into(), Verdict::new(State::Down, 0, "no live process"));
        v.targets
            .insert("gpu".into(), Verdict::new(State::Drain, 0, "node: GPU"));
        v
    }

    #[test]
    fn status_header_and_body_per_state() {
        let v = verdicts();
        let a = answer(Some("web"), &v);
        assert_eq!((a.status, a.degraded), ("200 OK", false));
        assert_eq!(
            a.body,
            "{\"reason\":\"ok\",\"state\":\"up\",\"weight\":100}\n"
        );
        let a = answer(Some("a%20b"), &v);
        assert_eq!((a.status, a.degraded), ("200 OK", true));
        assert!(a.body.contains("\"weight\":40"), "{}", a.body);
        assert_eq!(answer(Some("db"), &v).status, "503 Service Unavailable");
        assert_eq!(answer(Some("gpu"), &v).status, "503 Service Unavailable");
        assert_eq!(answer(None, &v).status, "200 OK", "the node");
    }

    #[test]
    fn hostile_names_are_refused_or_escaped() {
        let v = verdicts();
        for bad in [
            "%", "%2", "%zz", "a%2Fb/c", "%00", "%0a", "%ff", "%C3", "a\u{1b}b", "", "x?y",
        ] {
            assert_eq!(answer(Some(bad), &v).status, "400 Bad Request", "{bad:?}");
        }
        assert!(answer(Some(&"a".repeat(600)), &v).status.starts_with("400"));
        let a = answer(Some("%3Cscript%3E%22"), &v);
        assert_eq!(a.status, "404 Not Found");
        assert_eq!(
            a.body,
            "{\"error\":\"unknown target\",\"target\":\"<script>\\\"\"}\n"
        );
        assert_eq!(percent_decode("caf%C3%A9"), Some("café".into()));
    }
}
