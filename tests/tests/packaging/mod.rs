//! Shared by the packaging tests (kubernetes.rs, dashboards.rs): the tools `cargo xtask
//! setup` puts in target/tools/, YAML read through that venv's PyYAML, the metric contract
//! of docs/metrics.md, and the metric names a PromQL expression uses.
#![allow(dead_code, reason = "each test file uses its own subset")]

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn chart() -> PathBuf {
    workspace().join("packaging/helm/gimbal")
}

/// A tool in target/tools/; missing means setup has not run, which is a failure, not a skip.
pub fn tool(relative: &str) -> PathBuf {
    let path = workspace().join("target/tools").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask setup` (it fetches helm, kubectl and the \
         kubernetes-validate venv into target/tools/)",
        path.display()
    );
    path
}

/// Runs a program to completion, feeding `stdin`; returns (success, stdout, stderr).
pub fn run(program: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    // A program that exits without reading its input is not an error here.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("wait for the program");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template gimbal <chart> --namespace gimbal ARGS`, which must succeed.
pub fn helm_template(args: &[&str]) -> String {
    let chart = chart();
    let mut all = vec![
        "template",
        "gimbal",
        chart.to_str().unwrap(),
        "--namespace",
        "gimbal",
    ];
    all.extend_from_slice(args);
    let (ok, out, err) = run(&tool("helm"), &all, "");
    assert!(ok, "helm {}:\n{err}", all.join(" "));
    out
}

/// The values that turn on every optional object of the chart.
pub const ALL_OPTIONAL: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true,\
     tolerateAllTaints=true,mountBpffs=true,webConfig.enabled=true",
];

/// Parses YAML documents (empty ones dropped) and validates each against the Kubernetes
/// OpenAPI schemas of `versions` in strict mode (unknown fields are errors). Objects of
/// `skip_api_version` (CRDs the schemas do not know) are parsed but not validated.
/// Returns the documents and the validation errors.
pub fn load_and_validate(
    yaml: &str,
    versions: &[&str],
    skip_api_version: &str,
) -> (Vec<Value>, Vec<String>) {
    const SCRIPT: &str = r#"
import json, sys, yaml, kubernetes_validate
skip, versions = sys.argv[1], sys.argv[2:]
docs, errors = [], []
for doc in yaml.safe_load_all(sys.stdin):
    if doc is None:
        continue
    docs.append(doc)
    if doc.get("apiVersion") == skip:
        continue
    for v in versions:
        try:
            kubernetes_validate.validate(doc, v, strict=True)
        except Exception as e:
            where = "/".join(str(p) for p in getattr(e, "absolute_path", []))
            errors.append("%s %s against %s at %s: %s" % (doc.get("kind"),
                doc.get("metadata", {}).get("name"), v, where, getattr(e, "message", e)))
print(json.dumps({"docs": docs, "errors": errors}))
"#;
    let mut args = vec!["-c", SCRIPT, skip_api_version];
    args.extend_from_slice(versions);
    let (ok, out, err) = run(&tool("venv/bin/python"), &args, yaml);
    assert!(ok, "parsing and validating YAML failed:\n{err}");
    let v: Value = serde_json::from_str(&out).expect("the script prints JSON");
    let docs = v["docs"].as_array().unwrap().clone();
    let errors = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    (docs, errors)
}

/// YAML documents as JSON values, without validation.
pub fn load_yaml(yaml: &str) -> Vec<Value> {
    load_and_validate(yaml, &[], "").0
}

/// The one object of `kind` among `docs`.
pub fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

/// Metric name -> type, from the table in docs/metrics.md.
pub fn contract() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(workspace().join("docs/metrics.md")).unwrap();
    let metrics: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | name | type | labels | unit | meaning |
            (cells.len() >= 6 && cells[1].starts_with("gimbal_"))
                .then(|| (cells[1].to_string(), cells[2].to_string()))
        })
        .collect();
    assert!(metrics.len() > 10, "docs/metrics.md has no metric table");
    metrics
}

/// The contract metric a selected series name belongs to: itself, or the histogram whose
/// _bucket/_sum/_count series it is. None if the contract has no such metric.
pub fn contract_metric(contract: &BTreeMap<String, String>, name: &str) -> Option<String> {
    if contract.contains_key(name) {
        return Some(name.to_string());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (contract.get(base)? == "histogram").then(|| base.to_string())
    })
}

/// The metric names a PromQL expression selects: identifiers outside strings, label
/// matchers and ranges that are not functions, aggregations, keywords, or the label lists
/// of by/without/on/ignoring/group_left/group_right.
pub fn metric_names(expr: &str) -> Vec<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const NOT_METRICS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let c: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // After a grouping keyword, the next parenthesis holds label names.
    let mut labels_next = false;
    while i < c.len() {
        match c[i] {
            '"' | '\'' | '`' => i = skip_string(&c, i),
            '{' | '[' => {
                let close = if c[i] == '{' { '}' } else { ']' };
                i += 1;
                while i < c.len() && c[i] != close {
                    i = if matches!(c[i], '"' | '\'' | '`') {
                        skip_string(&c, i)
                    } else {
                        i + 1
                    };
                }
                i += 1;
            }
            '(' if labels_next => {
                while i < c.len() && c[i] != ')' {
                    i += 1;
                }
                labels_next = false;
                i += 1;
            }
            ch if ch.is_ascii_digit()
                || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers and durations: 0.99, 1e-3, 5m, 0x1f.
                i += 1;
                while i < c.len()
                    && (c[i].is_ascii_alphanumeric()
                        || c[i] == '.'
                        || (matches!(c[i], '+' | '-') && matches!(c[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
            }
            ch if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' => {
                let start = i;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || matches!(c[i], '_' | ':')) {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                let mut j = i;
                while j < c.len() && c[j].is_whitespace() {
                    j += 1;
                }
                let call = c.get(j) == Some(&'(');
                let lower = word.to_ascii_lowercase();
                if GROUPING.contains(&lower.as_str()) {
                    labels_next = call;
                } else if !call && !NOT_METRICS.contains(&lower.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index just past the string literal starting at `i`.
fn skip_string(c: &[char], i: usize) -> usize {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() && c[j] != quote {
        // Backquoted strings have no escapes.
        j += if c[j] == '\\' && quote != '`' { 2 } else { 1 };
    }
    j + 1
}

/// `promtool check rules` on recording rules made of `exprs`: a syntax check of each.
/// Returns promtool's complaint, if any.
pub fn promql_syntax_errors(exprs: &[(String, String)]) -> Option<String> {
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| serde_json::json!({"record": format!("check:expr_{i}"), "expr": e}))
        .collect();
    // JSON is YAML, so promtool reads this as a rules file.
    let file = serde_json::json!({"groups": [{"name": "syntax", "rules": rules}]});
    let dir = gimbal_tests::TempDir::new("promql");
    let path = dir.0.join("exprs.rules.yml");
    std::fs::write(&path, file.to_string()).unwrap();
    let (ok, out, err) = run(
        Path::new("promtool"),
        &["check", "rules", path.to_str().unwrap()],
        "",
    );
    (!ok).then(|| {
        let index: Vec<String> = exprs
            .iter()
            .enumerate()
            .map(|(i, (what, e))| format!("  expr_{i} ({what}): {e}"))
            .collect();
        format!("{out}{err}\n{}", index.join("\n"))
    })
}
