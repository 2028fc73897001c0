//! A strict parser of the exposition text, for tests: it accepts only what the two formats
//! allow (OpenMetrics 1.0 and text 0.0.4 as far as the agent uses them) and fails on
//! anything else, so a label value that leaks out of its quotes shows up as an error or as
//! an extra series or label, never silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text004,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed {
    /// (metric name, HELP text unescaped)
    pub help: Vec<(String, String)>,
    pub samples: Vec<Sample>,
}

pub fn parse(text: &str, format: Format) -> Result<Parsed, String> {
    let body = match format {
        Format::OpenMetrics => text
            .strip_suffix("# EOF\n")
            .ok_or("OpenMetrics must end with `# EOF`")?,
        Format::Text004 => text,
    };
    if !body.is_empty() && !body.ends_with('\n') {
        return Err("the last line has no line feed".into());
    }
    let mut parsed = Parsed::default();
    for (i, line) in body.split_terminator('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            descriptor(rest, format, &mut parsed).map_err(at)?;
        } else {
            parsed.samples.push(sample(line).map_err(at)?);
        }
    }
    Ok(parsed)
}

fn descriptor(rest: &str, format: Format, parsed: &mut Parsed) -> Result<(), String> {
    let (keyword, rest) = rest.split_once(' ').ok_or("a descriptor without a name")?;
    let (name, tail) = rest.split_once(' ').ok_or("a descriptor without a value")?;
    let (n, after) = metric_name(name);
    if n.is_empty() || !after.is_empty() {
        return Err(format!("bad metric name {name:?}"));
    }
    match (keyword, format) {
        ("HELP", _) => parsed
            .help
            .push((name.into(), unescape(tail, format, false)?)),
        ("TYPE", _) if ["counter", "gauge", "histogram"].contains(&tail) => {}
        ("UNIT", Format::OpenMetrics) if tail == "seconds" => {}
        _ => return Err(format!("unexpected descriptor {keyword} {tail:?}")),
    }
    Ok(())
}

fn metric_name(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s.split_at(end)
}

fn sample(line: &str) -> Result<Sample, String> {
    let (name, mut rest) = metric_name(line);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name".into());
    }
    let mut labels: Vec<(String, String)> = vec![];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .ok_or("unterminated label set")?;
            let (key, r) = rest.split_at(end);
            let r = r
                .strip_prefix("=\"")
                .ok_or_else(|| format!("label {key:?} without =\""))?;
            let (value, r) = quoted(r)?;
            if key.is_empty() || labels.iter().any(|(k, _)| k == key) {
                return Err(format!("empty or repeated label name {key:?}"));
            }
            labels.push((key.into(), value));
            rest = match r.as_bytes().first() {
                Some(b',') => &r[1..],
                Some(b'}') => {
                    rest = &r[1..];
                    break;
                }
                _ => return Err("expected , or } after a label".into()),
            };
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.into(),
        labels,
        value,
    })
}

/// A label value up to its closing quote: (unescaped, the rest after the quote).
fn quoted(s: &str) -> Result<(String, &str), String> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => {
                return Ok((unescape(&s[..i], Format::OpenMetrics, true)?, &s[i + 1..]))
            }
            _ => escaped = false,
        }
    }
    Err("unterminated label value".into())
}

/// Label values (both formats) and OpenMetrics HELP know `\\`, `\"`, `\n`; 0.0.4 HELP
/// only `\\` and `\n`. A raw double quote is allowed in 0.0.4 HELP alone.
fn unescape(s: &str, format: Format, label_value: bool) -> Result<String, String> {
    let quote_escaped = label_value || format == Format::OpenMetrics;
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') if quote_escaped => out.push('"'),
                other => return Err(format!("invalid escape \\{other:?}")),
            },
            '"' if quote_escaped => return Err("unescaped double quote".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_the_formats_reject() {
        let ok = "# HELP a x \\\"y\\\"\n# TYPE a counter\na_total{l=\"q\\\"\\n\\\\\"} 1\n# EOF\n";
        let p = parse(ok, Format::OpenMetrics).unwrap();
        assert_eq!(p.help, [("a".into(), "x \"y\"".into())]);
        assert_eq!(p.samples[0].labels, [("l".into(), "q\"\n\\".into())]);
        for bad in [
            "a{l=\"x\"} 1\n",                // no EOF
            "a{l=\"x\"y\"} 1\n# EOF\n",      // raw quote
            "a{l=\"x\\q\"} 1\n# EOF\n",      // unknown escape
            "a{l=\"x\",l=\"y\"} 1\n# EOF\n", // repeated label
            "a{l=\"x\"} 1 2\n# EOF\n",       // trailing text
            "# HELP a x\"y\n# EOF\n",        // raw quote in OpenMetrics HELP
            "evil\n# EOF\n",                 // no value
        ] {
            assert!(parse(bad, Format::OpenMetrics).is_err(), "{bad:?}");
        }
        assert!(parse("# HELP a x\\\"y\n", Format::Text004).is_err());
        assert!(parse("# HELP a x\"y\n", Format::Text004).is_ok());
    }
}
