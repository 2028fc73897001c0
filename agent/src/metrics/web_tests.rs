//! The web config through the real server on a loopback port, with certificates the
//! openssl CLI makes and a rustls client: TLS, client certificates (missing, expired),
//! basic auth (wrong password), plain HTTP to the TLS port, each refusal counted, and the
//! file re-read as it changes (a bad one keeps the previous config).
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    },
    TlsConnector,
};

use super::web::{Refusals, Web, WebConfig};

/// A temporary directory with a CA, a server certificate for 127.0.0.1, a client
/// certificate and an expired one, all signed by the CA.
struct Pki(PathBuf);

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gimbal-web-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(&dir)
                .output()
                .expect("sh");
            assert!(out.status.success(), "{script}: {out:?}");
        };
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        sh(&format!(
            "openssl req -x509 {key} -keyout ca.key -out ca.crt -days 2 -subj /CN=gimbal-test-ca"
        ));
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        for (name, days) in [("server", 2), ("client", 2), ("expired", -1)] {
            sh(&format!(
                "openssl req {key} -keyout {name}.key -out {name}.csr -subj /CN={name} && \
                 openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                 -days {days} -extfile ext -out {name}.crt"
            ));
        }
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves a filled snapshot under the web config at `file`; (port, refusals).
fn server(file: &Path) -> (u16, Arc<Refusals>) {
    let web = Arc::new(WebConfig::from_file(file).expect("a good web config"));
    let refused = Arc::new(Refusals::default());
    let port = super::http_tests::serve_filled(web, refused.clone());
    (port, refused)
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut std::fs::read(path).unwrap().as_slice())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn pem_key(path: &Path) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut std::fs::read(path).unwrap().as_slice())
        .unwrap()
        .unwrap()
}

/// GET /metrics over TLS (with `client`'s certificate if given) and an optional
/// Authorization value: the status, or the error that stopped it.
fn get(port: u16, pki: &Pki, client: Option<&str>, auth: Option<&str>) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(pem_certs(&pki.path("ca.crt")));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(name) => builder
            .with_client_auth_cert(
                pem_certs(&pki.path(&format!("{name}.crt"))),
                pem_key(&pki.path(&format!("{name}.key"))),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: x\r\n{auth}\r\n");
        let io = async {
            tls.write_all(request.as_bytes()).await?;
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(20), io)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("exchange: {e}"))?;
        String::from_utf8_lossy(&answer)
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {:?}", String::from_utf8_lossy(&answer)))
    })
}

fn write(path: &Path, text: &str) {
    // A new inode each time, as editors and ConfigMap updates do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// "user:password" as a Basic Authorization value.
fn basic(pair: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[test]
fn tls_basic_auth_and_client_certificates_refuse_and_count() {
    let pki = Pki::new("auth");
    let file = pki.path("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    write(
        &file,
        &format!("{tls}basic_auth_users:\n  prometheus: {hash}\n"),
    );
    let (port, refused) = server(&file);
    assert_eq!(
        get(port, &pki, None, Some(&basic("prometheus:s3cret"))),
        Ok(200)
    );
    assert_eq!(
        get(port, &pki, None, Some(&basic("prometheus:wrong"))),
        Ok(401)
    );
    assert_eq!(
        get(port, &pki, None, Some(&basic("nobody:s3cret"))),
        Ok(401)
    );
    assert_eq!(get(port, &pki, None, None), Ok(401));
    assert_eq!(refused.unauthorized.load(Ordering::Relaxed), 3);
    let counted = |n: &std::sync::atomic::AtomicU64, want: u64| {
        // The server counts right after it refuses: give it a moment.
        let t0 = std::time::Instant::now();
        while n.load(Ordering::Relaxed) != want && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(n.load(Ordering::Relaxed), want);
    };

    // Plain HTTP to the TLS port: no HTTP answer, a handshake refused.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::io::Write::write_all(&mut plain, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // Re-read on change: client certificates now, basic auth gone.
    write(
        &file,
        &format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"),
    );
    assert_eq!(get(port, &pki, Some("client"), None), Ok(200));
    let missing = get(port, &pki, None, None);
    assert!(missing.is_err(), "{missing:?}");
    let expired = get(port, &pki, Some("expired"), None);
    assert!(expired.is_err(), "{expired:?}");
    counted(&refused.no_client_cert, 1);
    // The plain request and the expired certificate.
    counted(&refused.tls_handshake, 2);

    // A broken file keeps the previous config.
    write(&file, "tls_server_config:\n  cert_file: [oops\n");
    assert_eq!(get(port, &pki, Some("client"), None), Ok(200));
    assert!(get(port, &pki, None, None).is_err());
}

#[test]
fn a_bad_file_is_refused_with_where_and_why() {
    let pki = Pki::new("bad");
    let file = pki.path("web.yml");
    for (text, want) in [
        ("basic_auth_users:\n  u: [1, 2]\n", "web.yml:2:"),
        ("tls_server_config:\n  cert_fil: x\n", "web.yml:2:"),
        ("basic_auth_users:\n  u: plain\n", "basic_auth_users.u: not a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n",
            "client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
            "cert_file",
        ),
        (
            "http_server_config:\n  headers:\n    Set-Cookie: x\n",
            "headers.Set-Cookie: not one of",
        ),
    ] {
        write(&file, text);
        let e = Web::load(&file).err().unwrap_or_else(|| panic!("{text} loaded"));
        assert!(e.contains(want), "{text}: {e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
    }
    // A node_exporter file as the exporter-toolkit documents it.
    let hash = bcrypt::hash("pw", 4).unwrap();
    write(
        &file,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\nhttp_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  alice: {hash}\n"
        ),
    );
    Web::load(&file).expect("the exporter-toolkit's example loads");
}
