//! The web config (issue 15) against a real Prometheus (Debian's): it scrapes the agent
//! through TLS, through client certificates (mTLS) and through basic auth; plain HTTP to
//! the TLS port, a missing client certificate, an expired one and a wrong password are
//! refused, and each refusal is counted in the agent's own series, read back through
//! Prometheus. The agent starts on plain HTTP and each phase rewrites the file: every
//! change is taken without a restart. Certificates come from the openssl CLI.
use std::{path::Path, process::Command, time::Duration};

use gimbal_tests::{
    agent::Agent, pki::pki, prometheus::Prometheus, require_root, wait_for, TempDir,
};

/// Replaces the file whole (a new inode), as a Secret update or an editor does.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A scrape job named `name` of the agent at `port`, with `extra` YAML lines (indented
/// for the job).
fn job(name: &str, port: u16, extra: &str) -> String {
    format!(
        "  - job_name: {name}\n{extra}    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
}

/// `up` of each job once Prometheus has scraped them all.
fn ups(prom: &Prometheus, jobs: &[&str]) -> Vec<f64> {
    wait_for("every job scraped", Duration::from_secs(60), || {
        jobs.iter()
            .map(|j| prom.query_one(&format!("up{{job=\"{j}\"}}")))
            .collect::<Option<Vec<_>>>()
    })
}

/// The agent's refusal counter for `reason`, as scraped by `job`.
fn refused(prom: &Prometheus, job: &str, reason: &str, at_least: f64) -> f64 {
    wait_for(
        &format!("{reason} refusals counted"),
        Duration::from_secs(30),
        || {
            prom.query_one(&format!(
                "gimbal_http_requests_refused_total{{job=\"{job}\",reason=\"{reason}\"}}"
            ))
            .filter(|&n| n >= at_least)
        },
    )
}

#[test]
fn prometheus_scrapes_through_tls_mtls_and_basic_auth_and_refusals_are_counted() {
    if !require_root!() {
        return;
    }
    let dir = TempDir::new("web-config");
    pki(&dir.0);
    let at = |f: &str| dir.0.join(f).display().to_string();
    let web = dir.0.join("web.yml");
    // Plain at start (the test's helper waits for /healthz over HTTP).
    write(
        &web,
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
    );
    let agent = Agent::start_config(&format!("web_config = \"{}\"\n", web.display()));
    let port = agent.port;
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let ca = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n",
        at("ca.crt")
    );
    let client = |name: &str| {
        format!(
            "{ca}      cert_file: {}\n      key_file: {}\n",
            at(&format!("{name}.crt")),
            at(&format!("{name}.key"))
        )
    };

    // 1. TLS: https scrapes, plain HTTP to the TLS port is refused.
    write(&web, tls);
    let prom = Prometheus::start_config(&format!(
        "scrape_configs:\n{}{}",
        job("tls", port, &ca),
        job("plain", port, "")
    ));
    assert_eq!(ups(&prom, &["tls", "plain"]), [1.0, 0.0]);
    let plain = refused(&prom, "tls", "tls_handshake", 1.0);
    eprintln!("TLS: scraped; plain HTTP refused, tls_handshake = {plain}");
    drop(prom);

    // 2. Client certificates: with one, scraped; without, or expired, refused.
    write(
        &web,
        &format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"),
    );
    let prom = Prometheus::start_config(&format!(
        "scrape_configs:\n{}{}{}",
        job("mtls", port, &client("client")),
        job("nocert", port, &ca),
        job("expired", port, &client("expired"))
    ));
    assert_eq!(ups(&prom, &["mtls", "nocert", "expired"]), [1.0, 0.0, 0.0]);
    let missing = refused(&prom, "mtls", "no_client_cert", 1.0);
    // Only the expired certificate fails handshakes now (phase 1's Prometheus is gone):
    // the count keeps rising with its scrapes.
    let before = refused(&prom, "mtls", "tls_handshake", plain);
    let handshakes = refused(&prom, "mtls", "tls_handshake", before + 2.0);
    eprintln!("mTLS: scraped; no_client_cert = {missing}, tls_handshake = {handshakes}");
    drop(prom);

    // 3. Basic auth over TLS: the right password scrapes, a wrong one gets 401.
    let hash = bcrypt_hash("s3cret");
    write(
        &web,
        &format!("{tls}basic_auth_users:\n  prometheus: {hash}\n"),
    );
    let password = dir.0.join("password");
    std::fs::write(&password, "s3cret").unwrap();
    let wrong = dir.0.join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    let auth = |file: &Path| {
        format!(
            "{ca}    basic_auth:\n      username: prometheus\n      password_file: {}\n",
            file.display()
        )
    };
    let prom = Prometheus::start_config(&format!(
        "scrape_configs:\n{}{}",
        job("basic", port, &auth(&password)),
        job("wrongpw", port, &auth(&wrong))
    ));
    assert_eq!(ups(&prom, &["basic", "wrongpw"]), [1.0, 0.0]);
    let unauthorized = refused(&prom, "basic", "unauthorized", 1.0);
    eprintln!("basic auth: scraped; unauthorized = {unauthorized}");
    let pid = agent.child.id();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the agent that started on plain HTTP served every phase"
    );
}

/// A bcrypt hash made by libxcrypt (Python's crypt module over the system's libcrypt), not
/// by the crate the agent checks it with.
fn bcrypt_hash(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            password,
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "python3 crypt: {out:?}");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    hash
}
