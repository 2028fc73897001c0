//! The classic Prometheus text format (0.0.4), derived from the OpenMetrics text.
//!
//! prometheus-client writes OpenMetrics only. Clients that do not ask for it (curl,
//! promtool, older scrapers) get 0.0.4, where a counter's HELP and TYPE name the `_total`
//! sample itself and there are no UNIT or EOF lines.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn from_openmetrics(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut counters = std::collections::HashSet::new();
    // TYPE follows HELP in OpenMetrics; find counters first so HELP can be renamed too.
    for line in om.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
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
}
