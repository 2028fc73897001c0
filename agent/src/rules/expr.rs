//! User rule conditions, a small PromQL-like subset:
//!
//! ```text
//! metric{label="value",other!="x"} > 10
//! rate(gimbal_tcp_retransmits_total{family="ipv4"}[5m]) >= 2.5
//! increase(gimbal_process_exits_total{reason="oom_killed"}[1h]) > 0
//! ```
//! Each series matching the selector is compared on its own; each that holds is one alert,
//! labelled with the series' labels.
use std::time::Duration;

use crate::units::HumanDuration;

#[derive(Debug, Clone, PartialEq)]
pub enum Func {
    /// The value itself.
    Value,
    /// Per-second increase over the window.
    Rate(Duration),
    /// Increase over the window.
    Increase(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// (label, value, equal?): `label="value"` or `label!="value"`.
pub type Matcher = (String, String, bool);

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub func: Func,
    pub metric: String,
    pub matchers: Vec<Matcher>,
    pub op: Op,
    pub threshold: f64,
}

/// Parses a condition; `known` says which metric names exist.
pub fn parse(text: &str, known: &dyn Fn(&str) -> bool) -> Result<Expr, String> {
    let t = text.trim();
    let (lhs, op, rhs) =
        split_op(t).ok_or_else(|| format!("`{t}`: expected a comparison such as `metric > 10`"))?;
    let threshold: f64 = rhs
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not a number", rhs.trim()))?;
    let lhs = lhs.trim();
    let (func, inner) = if let Some(rest) = lhs.strip_prefix("rate(") {
        (Some("rate"), rest)
    } else if let Some(rest) = lhs.strip_prefix("increase(") {
        (Some("increase"), rest)
    } else {
        (None, lhs)
    };
    let (selector, window) = match func {
        Some(f) => {
            let body = inner
                .strip_suffix(')')
                .ok_or_else(|| format!("`{lhs}`: missing `)`"))?;
            let (sel, win) = body
                .rsplit_once('[')
                .ok_or_else(|| format!("`{lhs}`: {f}() needs a window, like [5m]"))?;
            let win = win
                .strip_suffix(']')
                .ok_or_else(|| format!("`{lhs}`: missing `]`"))?;
            let d: HumanDuration = win.parse()?;
            (sel.trim(), Some(d.get()))
        }
        None => (inner, None),
    };
    let (metric, matchers) = selector_parts(selector)?;
    if !known(&metric) {
        return Err(format!(
            "unknown metric `{metric}` (docs/metrics.md lists them)"
        ));
    }
    let func = match (func, window) {
        (Some("rate"), Some(w)) => Func::Rate(w),
        (Some(_), Some(w)) => Func::Increase(w),
        _ => Func::Value,
    };
    Ok(Expr {
        func,
        metric,
        matchers,
        op,
        threshold,
    })
}

fn split_op(t: &str) -> Option<(&str, Op, &str)> {
    // Outside quotes and braces only; two-character operators first.
    let bytes = t.as_bytes();
    let (mut quoted, mut depth) = (false, 0i32);
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b'{' | b'[' | b'(' if !quoted => depth += 1,
            b'}' | b']' | b')' if !quoted => depth -= 1,
            b'>' | b'<' | b'=' | b'!' if !quoted && depth == 0 => {
                let two = t.get(i..i + 2).unwrap_or("");
                let (op, len) = match two {
                    ">=" => (Op::Ge, 2),
                    "<=" => (Op::Le, 2),
                    "==" => (Op::Eq, 2),
                    "!=" => (Op::Ne, 2),
                    _ => match bytes[i] {
                        b'>' => (Op::Gt, 1),
                        b'<' => (Op::Lt, 1),
                        _ => return None,
                    },
                };
                return Some((&t[..i], op, &t[i + len..]));
            }
            _ => {}
        }
    }
    None
}

fn selector_parts(sel: &str) -> Result<(String, Vec<Matcher>), String> {
    let (name, rest) = match sel.split_once('{') {
        Some((n, r)) => (
            n.trim(),
            Some(
                r.strip_suffix('}')
                    .ok_or_else(|| format!("`{sel}`: missing `}}`"))?,
            ),
        ),
        None => (sel.trim(), None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("`{name}` is not a metric name"));
    }
    let mut matchers = Vec::new();
    for m in rest
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        let (label, value, eq) = if let Some((l, v)) = m.split_once("!=") {
            (l, v, false)
        } else if let Some((l, v)) = m.split_once('=') {
            (l, v, true)
        } else {
            return Err(format!(
                "`{m}`: expected label=\"value\" or label!=\"value\""
            ));
        };
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("`{m}`: quote the value"))?;
        matchers.push((label.trim().to_string(), value.to_string(), eq));
    }
    Ok((name.to_string(), matchers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(m: &str) -> bool {
        m.starts_with("gimbal_")
    }

    #[test]
    fn parses_values_rates_and_increases() {
        let e = parse(
            r#"gimbal_syscall_errors_total{errno="EIO",syscall!="read"} > 10"#,
            &known,
        )
        .unwrap();
        assert_eq!(e.metric, "gimbal_syscall_errors_total");
        assert_eq!(
            e.matchers,
            vec![
                ("errno".into(), "EIO".into(), true),
                ("syscall".into(), "read".into(), false)
            ]
        );
        assert_eq!((e.func, e.op, e.threshold), (Func::Value, Op::Gt, 10.0));
        let e = parse("rate(gimbal_tcp_retransmits_total[5m]) >= 2.5", &known).unwrap();
        assert_eq!(
            (e.func, e.op),
            (Func::Rate(Duration::from_secs(300)), Op::Ge)
        );
        let e = parse(
            r#"increase(gimbal_process_exits_total{reason="oom_killed"}[1h]) != 0"#,
            &known,
        )
        .unwrap();
        assert_eq!(e.func, Func::Increase(Duration::from_secs(3600)));
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(parse("gimbal_x", &known)
            .unwrap_err()
            .contains("expected a comparison"));
        assert!(parse("node_load1 > 3", &known)
            .unwrap_err()
            .contains("unknown metric `node_load1`"));
        assert!(parse("gimbal_x > lots", &known)
            .unwrap_err()
            .contains("`lots` is not a number"));
        assert!(parse("rate(gimbal_x) > 1", &known)
            .unwrap_err()
            .contains("needs a window"));
        assert!(parse("rate(gimbal_x[5]) > 1", &known)
            .unwrap_err()
            .contains("no unit"));
        assert!(parse("gimbal_x{a=b} > 1", &known)
            .unwrap_err()
            .contains("quote the value"));
    }
}
