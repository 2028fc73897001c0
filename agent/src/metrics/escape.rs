//! Escaping for the exposition formats. prometheus-client writes label values and HELP text
//! as given (client_rust#151), so a comm or cgroup name with a quote or a line feed could
//! end a label early or start a forged series. Both OpenMetrics and the classic text
//! format 0.0.4 escape label values as `\\`, `\"` and `\n`; OpenMetrics HELP the same way.
use std::fmt::{self, Write};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value written escaped. The only label value type the exposition uses.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        write_escaped(encoder, self.0)
    }
}

/// Writes `s` with backslash, double quote and line feed escaped, the rest as is.
pub fn write_escaped(w: &mut impl Write, s: &str) -> fmt::Result {
    let mut rest = s;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        w.write_str(&rest[..i])?;
        w.write_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[i + 1..];
    }
    w.write_str(rest)
}

/// `s` escaped as an OpenMetrics HELP text (the same three escapes as label values).
pub fn help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    write_escaped(&mut out, s).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_backslash_quote_and_line_feed_only() {
        assert_eq!(help("plain"), "plain");
        assert_eq!(help("a\"b\\c\n{x}"), "a\\\"b\\\\c\\n{x}");
        assert_eq!(help("~\"} 1\nevil 1\n#"), "~\\\"} 1\\nevil 1\\n#");
        assert_eq!(help("\r\t\u{fffd}é"), "\r\t\u{fffd}é");
        assert_eq!(help("\\\\"), "\\\\\\\\");
    }
}
