//! What `check-config` reports for the checks config asks of other modules, at the line
//! and column where the text writes the value (config/tests.rs has the rest).
use super::config_text;

fn errors(text: &str) -> Vec<(usize, usize, String)> {
    config_text(text, "t.toml")
        .unwrap_err()
        .errors
        .into_iter()
        .map(|e| (e.line, e.column, e.message))
        .collect()
}

/// A file under the temp dir, unique to this test process, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("gimbal-check-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn at(errs: &[(usize, usize, String)], needle: &str) -> (usize, usize) {
    let found: Vec<_> = errs.iter().filter(|e| e.2.contains(needle)).collect();
    assert_eq!(found.len(), 1, "one error with {needle:?}: {errs:#?}");
    (found[0].0, found[0].1)
}

#[test]
fn target_and_alertmanager_errors_point_at_their_lines() {
    let text = "[[targets]]\nname = \"a\"\ncgroup = \"x\"\n[[targets]]\nname = \"a\"\ncgroup = \"/\"\n[alerting]\nalertmanagers = [\"https://am:9093\"]\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs[0].0, 5, "the duplicate is the second `a` {errs:?}");
    assert!(errs[0].2.contains("unique"), "{errs:?}");
    assert_eq!(errs[1].0, 6, "{errs:?}");
    assert_eq!(errs[2].0, 8, "{errs:?}");
    assert!(errs[2].2.contains("set [alerting] tls_ca_file"), "{errs:?}");
}

#[test]
fn rules_are_parsed_and_bad_expressions_point_at_their_line() {
    let ok = config_text("[[rules]]\nalert = \"Oom\"\nexpr = 'increase(gimbal_process_exits_total{reason=\"oom_killed\"}[10m]) > 0'\nfor = \"1m\"\nlabels = { team = \"ml\" }\nannotations = { summary = \"OOM\" }\n", "t").unwrap();
    assert_eq!(ok.rules[0].hold.get().as_secs(), 60);
    assert_eq!(ok.rules[0].severity, "warning");
    let errs = errors("[[rules]]\nalert = \"A\"\nexpr = \"node_load1 > 3\"\n[[rules]]\nalert = \"B\"\nexpr = \"gimbal_target_up\"\nfor = \"soon\"\n");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, 3, "{errs:?}");
    assert!(
        errs[0].2.contains("unknown metric `node_load1`"),
        "{errs:?}"
    );
    assert_eq!(errs[1].0, 7, "{errs:?}");
    assert!(errs[1].2.contains("not a duration"), "{errs:?}");
}

#[test]
fn alertmanager_urls_that_would_inject_headers_are_refused_at_their_position() {
    let text = "[alerting]\nalertmanagers = [\n  \"http://127.0.0.1:9093\",\n  \"http://127.0.0.1:9093\\r\\nX-Evil: 1\",\n  \"ftp://am:21\",\n  \"http://am:70000\",\n]\nbasic_auth_username = \"a:b\"\nbasic_auth_password_file = \"/nonexistent/gimbal-password\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert_eq!(at(&errs, "no spaces, control"), (4, 3));
    assert_eq!(at(&errs, "not an http://"), (5, 3));
    assert_eq!(at(&errs, "port `70000`"), (6, 3));
    assert_eq!(at(&errs, "without `:`"), (8, 1));
    assert_eq!(
        at(&errs, "cannot read /nonexistent/gimbal-password"),
        (9, 1)
    );
}

#[test]
fn secret_and_ca_files_are_checked_as_run_reads_them() {
    let token = TempFile::new("token", b"abc\r\nX-Evil: 1\n");
    let ca = TempFile::new("ca.pem", b"not a certificate\n");
    let text = format!(
        "[alerting]\nbearer_token_file = \"{}\"\ntls_ca_file = \"{}\"\n",
        token.0.display(),
        ca.0.display()
    );
    let errs = errors(&text);
    assert_eq!(at(&errs, "line break or control character"), (2, 1));
    assert_eq!(at(&errs, "holds no certificate"), (3, 1));
    let dir = std::env::temp_dir();
    let errs = errors(&format!(
        "[alerting]\nbearer_token_file = \"{}\"\n",
        dir.display()
    ));
    assert_eq!(at(&errs, "is not a regular file"), (2, 1));
    std::fs::write(&token.0, "abc\n").unwrap();
    let ok = format!(
        "[alerting]\nbearer_token_file = \"{}\"\n",
        token.0.display()
    );
    assert!(
        config_text(&ok, "t").is_ok(),
        "a token with its final newline is fine"
    );
}

#[test]
fn an_alertmanager_listed_twice_is_refused_at_the_second() {
    let text = "[alerting]\nalertmanagers = [\n  \"http://127.0.0.1:9093\",\n  \"http://127.0.0.1:9094\",\n  \"http://127.0.0.1:9093\",\n]\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(at(&errs, "listed twice"), (5, 3));
}

/// Two self-signed certificates with their keys, made by the openssl CLI (cargo xtask
/// setup installs it) in a directory removed on drop.
struct Pki(std::path::PathBuf);

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("gimbal-check-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["a", "b"] {
            let out = std::process::Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
                .args(["-subj", &format!("/CN={name}")])
                .args([
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                ])
                .current_dir(&dir)
                .output()
                .expect("openssl");
            assert!(out.status.success(), "openssl: {out:?}");
        }
        Self(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn client_certificates_are_checked_as_delivery_loads_them_at_their_field() {
    let pki = Pki::new();
    let (ca, a_crt, a_key, b_key) = (
        pki.file("a.crt"),
        pki.file("a.crt"),
        pki.file("a.key"),
        pki.file("b.key"),
    );
    let good = format!(
        "[alerting]\ntls_ca_file = \"{ca}\"\ntls_cert_file = \"{a_crt}\"\ntls_key_file = \"{a_key}\"\nalertmanagers = [\"https://127.0.0.1:9093\"]\n"
    );
    let config = config_text(&good, "t").unwrap();
    let e = &config.alerting.endpoints()[0];
    assert_eq!(
        e.tls_cert_file.as_deref(),
        Some(std::path::Path::new(&a_crt))
    );

    // [alerting]'s own: a key of another certificate, a key file that is no key.
    let text = format!(
        "[alerting]\ntls_ca_file = \"{ca}\"\ntls_cert_file = \"{a_crt}\"\ntls_key_file = \"{b_key}\"\n"
    );
    let errs = errors(&text);
    assert_eq!(at(&errs, "`alerting.tls_cert_file`"), (3, 1), "{errs:#?}");
    assert!(
        errs[0].2.contains(&format!("with the key in {b_key}")),
        "{errs:#?}"
    );
    let text = format!(
        "[alerting]\ntls_ca_file = \"{ca}\"\ntls_cert_file = \"{a_crt}\"\ntls_key_file = \"{a_crt}\"\n"
    );
    let errs = errors(&text);
    assert_eq!(at(&errs, "`alerting.tls_key_file`"), (4, 1), "{errs:#?}");
    assert!(errs[0].2.contains("holds no private key"), "{errs:#?}");

    // An entry's own: missing file, a lone key, settings on a plain http URL.
    let text = format!(
        "[alerting]\nalertmanagers = [\n  {{ url = \"https://127.0.0.1:9093\", tls_ca_file = \"{ca}\",\n    tls_cert_file = \"/nonexistent/gimbal-client.crt\", tls_key_file = \"{a_key}\" }},\n  {{ url = \"https://127.0.0.1:9094\", tls_ca_file = \"{ca}\", tls_key_file = \"{a_key}\" }},\n  {{ url = \"http://127.0.0.1:9095\", tls_ca_file = \"{ca}\" }},\n]\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(
        at(
            &errs,
            "`alerting.alertmanagers.tls_cert_file` cannot read /nonexistent/gimbal-client.crt"
        ),
        (4, 5)
    );
    assert_eq!(at(&errs, "needs tls_key_file too"), (5, 3));
    assert_eq!(at(&errs, "plain http"), (6, 3));
}
