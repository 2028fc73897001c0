//! The layering as a test (ARCHITECTURE.md draws the same order): a module may name, by a
//! `crate::` path, only modules of a lower layer, so an import circle is caught at review
//! rather than found by reading. Reads the sources as text; nothing here runs in the agent.
use std::{collections::BTreeMap, path::Path};

/// Bottom to top. Modules of one layer do not import each other either.
const LAYERS: &[&[&str]] = &[
    // The one poisoned-mutex policy, under everything that locks.
    &["sync"],
    // Leaves: formats, the host's pseudo-filesystems and state files, the service
    // manager's protocol, a cgroup's workload identity (pod, container), the Kubernetes
    // API client.
    &["units", "names", "host", "service", "identity", "kubeapi"],
    // The config (sections only), the pure model, alert delivery.
    &["config", "model", "alert"],
    // The stages that read the kernel: the probes, and the GPU source beside them (the
    // kernel log's XIDs, NVML).
    &["probes", "gpu"],
    // Watched targets: globs, membership, SLO histories, status.
    &["targets"],
    // Actions on the host (confined to the cgroups the targets' globs expand to), the
    // load-balancing verdict beside them (from the targets' status and the GPU's faults),
    // what is written to the Kubernetes API about the node (told the node's verdict), and
    // the training jobs (the targets' processes' launch identities, their hangs).
    &["remediate", "verdict", "cluster", "jobs"],
    // What readers see: the model with targets, alert states and the remediation ledger.
    &["snapshot"],
    // The metric table over it: names, types, HELP, labels, and how rows are read.
    &["catalog"],
    // Its readers.
    &["rules", "metrics"],
    // The config checks that need rules/ and alert/.
    &["check"],
    // The wiring.
    &["run"],
];

/// Every upward or sideways `crate::` reference in `files` ((top module, source) pairs),
/// and every module missing from `layers`, as sentences.
fn violations(files: &[(String, String)], layers: &[&[&str]], modules: &[String]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (*m, i)))
        .collect();
    let mut out = Vec::new();
    for m in modules {
        if !layer_of.contains_key(m.as_str()) {
            out.push(format!(
                "module `{m}` has no layer: add it to LAYERS and ARCHITECTURE.md"
            ));
        }
    }
    for (from, source) in files {
        let Some(&own) = layer_of.get(from.as_str()) else {
            continue;
        };
        for to in crate_refs(source) {
            if to == *from || !modules.contains(&to) {
                continue; // itself, or an item of lib.rs (EBPF_OBJECT)
            }
            match layer_of.get(to.as_str()) {
                Some(&l) if l < own => {}
                Some(_) => out.push(format!(
                    "`{from}` imports `{to}`, which is not in a lower layer"
                )),
                None => {} // reported above
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The first segment of every `crate::` path in Rust source: `crate::a::b` gives `a`,
/// `crate::{a::b, c}` gives `a` and `c`. Comments and string literals are skipped.
fn crate_refs(source: &str) -> Vec<String> {
    let code = code_only(source);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c == '$' || c == '_' || c.is_alphanumeric()) {
            continue; // $crate:: in a macro, or an identifier ending in `crate`
        }
        let after = after.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    _ => {}
                }
                if c == ',' && depth == 0 {
                    out.extend(first_ident(&item));
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            out.extend(first_ident(&item));
        } else {
            out.extend(first_ident(after));
        }
    }
    out
}

fn first_ident(s: &str) -> Option<String> {
    let ident: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

/// `source` with comments and the contents of string and char literals blanked.
fn code_only(source: &str) -> String {
    let s: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let next = s.get(i + 1).copied();
        match s[i] {
            '/' if next == Some('/') => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                while i + 1 < s.len() && !(s[i] == '*' && s[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
                continue;
            }
            'r' if matches!(next, Some('"' | '#'))
                && !s[..i]
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_') =>
            {
                // A raw string: r"..." or r#"..."#.
                let hashes = s[i + 1..].iter().take_while(|c| **c == '#').count();
                if s.get(i + 1 + hashes) == Some(&'"') {
                    let end: String = std::iter::once('"')
                        .chain(std::iter::repeat_n('#', hashes))
                        .collect();
                    let body: String = s[i + 2 + hashes..].iter().collect();
                    let len = body.find(&end).map_or(body.len(), |e| e + end.len());
                    i += 2 + hashes + body[..len].chars().count();
                    out.push_str("\"\"");
                    continue;
                }
            }
            '"' => {
                i += 1;
                while i < s.len() && s[i] != '"' {
                    i += if s[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
                continue;
            }
            // A char literal ('"', '\'', '{'); a lifetime has no closing quote.
            '\'' if next == Some('\\') => {
                i += 2;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
                continue;
            }
            '\'' if s.get(i + 2) == Some(&'\'') => {
                i += 3;
                continue;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The agent crate's modules (from lib.rs) and its files by top module.
fn the_crate() -> (Vec<String>, Vec<(String, String)>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let modules: Vec<String> = code_only(&lib)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable src") {
            let path = entry.expect("readable src").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let top = rel.components().next().expect("a component");
            let top = top.as_os_str().to_string_lossy();
            let top = top.strip_suffix(".rs").unwrap_or(&top).to_string();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("readable source");
                files.push((top, text));
            }
        }
    }
    (modules, files)
}

#[test]
fn no_module_imports_one_above_it() {
    let (modules, files) = the_crate();
    assert!(modules.len() > 10, "lib.rs lists the modules: {modules:?}");
    let found = violations(&files, LAYERS, &modules);
    assert!(
        found.is_empty(),
        "layering (ARCHITECTURE.md):\n{}",
        found.join("\n")
    );
}

#[test]
fn an_upward_or_sideways_import_is_rejected() {
    let layers: &[&[&str]] = &[&["units"], &["model", "config"], &["rules"]];
    let modules: Vec<String> = ["units", "model", "config", "rules", "stray"]
        .map(String::from)
        .into();
    let file = |m: &str, s: &str| (m.to_string(), s.to_string());
    let files = [
        file(
            "rules",
            "use crate::{\n    model::{Labels, Model},\n    units::HumanDuration,\n};",
        ),
        // Upward, inside a nested group's neighbour, and a path in an expression.
        file("model", "use crate::units;\nfn f() { crate::rules::series::is_known(\"x\"); }"),
        // Sideways (same layer).
        file("config", "pub use crate::{units::ByteSize, model};"),
        // Not imports: a comment, a string, a macro's $crate, an item of lib.rs.
        file(
            "units",
            "// crate::rules\nconst S: &str = \"crate::model\";\nmacro_rules! m { () => { $crate::rules }; }\nconst O: &[u8] = crate::EBPF_OBJECT;",
        ),
    ];
    assert_eq!(
        violations(&files, layers, &modules),
        [
            "`config` imports `model`, which is not in a lower layer",
            "`model` imports `rules`, which is not in a lower layer",
            "module `stray` has no layer: add it to LAYERS and ARCHITECTURE.md",
        ]
    );
}
