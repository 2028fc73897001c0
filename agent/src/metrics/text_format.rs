//! The classic Prometheus text format (0.0.4), derived from the OpenMetrics text.
//!
//! prometheus-client writes OpenMetrics only. Clients that do not ask for it (curl,
//! promtool, older scrapers) get 0.0.4, where a counter's HELP and TYPE name the `_total`
//! sample itself and there are no UNIT or EOF lines. Label values are escaped the same way
//! in both formats, so sample lines pass through unchanged; HELP text is not: 0.0.4 knows
//! only `\\` and `\n` there and rejects `\"`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn from_openmetrics(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut counters = std::collections::HashSet::new();
    // Escaped label values hold no line feed, so every line is one record. Only a line
    // feed ends a line (`lines` would also eat a carriage return before it).
    let lines = || om.split_terminator('\n');
    // TYPE follows HELP in OpenMetrics; find counters first so HELP can be renamed too.
    for line in lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    for line in lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some((name, help)) = line.strip_prefix("# HELP ").and_then(|r| r.split_once(' ')) {
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            out.push_str(&format!("# HELP {name}{suffix} {}\n", help_0_0_4(help)));
            continue;
        }
        let renamed = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_once(' '))
            .filter(|(name, _)| counters.contains(*name))
            .map(|(name, tail)| format!("# TYPE {name}_total {tail}"));
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// An OpenMetrics HELP text (`\\`, `\"`, `\n` escaped) as 0.0.4 wants it (`\\`, `\n`).
fn help_0_0_4(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some(next) => {
                out.push('\\');
                out.push(next);
            }
            // Never written by our escaping; kept valid all the same.
            None => out.push_str("\\\\"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_counter_metadata_and_drops_openmetrics_only_lines() {
        let om = "# HELP x_seconds Lat\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\nx_seconds_count 1\n# HELP y Things\n# TYPE y counter\ny_total{a=\"b\"} 3\n# EOF\n";
        assert_eq!(
            from_openmetrics(om),
            "# HELP x_seconds Lat\n# TYPE x_seconds histogram\nx_seconds_count 1\n# HELP y_total Things\n# TYPE y_total counter\ny_total{a=\"b\"} 3\n"
        );
    }

    #[test]
    fn help_loses_the_quote_escape_and_keeps_the_others() {
        let om = "# HELP y A \\\"q\\\" \\\\ \\n\n# TYPE y counter\ny_total{a=\"\\\"} 1\\n\\\\\"} 3\n# EOF\n";
        assert_eq!(
            from_openmetrics(om),
            "# HELP y_total A \"q\" \\\\ \\n\n# TYPE y_total counter\ny_total{a=\"\\\"} 1\\n\\\\\"} 3\n"
        );
    }
}
