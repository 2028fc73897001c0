//! The rustls server config a web config's `tls_server_config` asks for: the certificate
//! and key, the TLS versions, and client certificates verified against `client_ca_file`.
use std::{path::Path, sync::Arc};

use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};

use super::file::{ClientAuth, TlsFile, TlsVersion};

/// The server config, or why not (each reason names the key it is about).
pub fn server_config(tls: &TlsFile, dir: &Path) -> Result<Arc<ServerConfig>, String> {
    for (key, set) in [
        ("cipher_suites", tls.cipher_suites.is_some()),
        ("curve_preferences", tls.curve_preferences.is_some()),
        ("client_allowed_sans", tls.client_allowed_sans.is_some()),
    ] {
        if set {
            return Err(format!(
                "tls_server_config.{key} is not supported (rustls' own safe defaults apply); remove it"
            ));
        }
    }
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Err("tls_server_config needs cert_file and key_file".into());
    };
    let chain = certs(&dir.join(cert_file), "cert_file")?;
    let key_path = dir.join(key_file);
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut read(&key_path, "key_file")?.as_slice())
            .map_err(|e| format!("tls_server_config.key_file {}: {e}", key_path.display()))?
            .ok_or_else(|| {
                format!(
                    "tls_server_config.key_file {}: no PEM private key",
                    key_path.display()
                )
            })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(tls)?)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth = tls.client_auth_type.unwrap_or(ClientAuth::NoClientCert);
    let builder = match (auth, &tls.client_ca_file) {
        (ClientAuth::NoClientCert, None) => builder.with_no_client_auth(),
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err("tls_server_config.client_ca_file is set but client_auth_type is not (RequireAndVerifyClientCert or VerifyClientCertIfGiven)".into())
        }
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => {
            return Err(format!("tls_server_config.client_auth_type {auth:?} (a certificate nobody verifies) is not supported: use RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file"))
        }
        (_, None) => {
            return Err(format!(
                "tls_server_config.client_auth_type {auth:?} needs client_ca_file"
            ))
        }
        (_, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(&dir.join(ca), "client_ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = match auth {
                ClientAuth::VerifyClientCertIfGiven => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            )
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_server_config: certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// TLS 1.2 and 1.3 within min/max (default: from 1.2, as the exporter-toolkit). rustls has
/// no 1.0 or 1.1, so a lower minimum means 1.2.
fn versions(tls: &TlsFile) -> Result<&'static [&'static rustls::SupportedProtocolVersion], String> {
    let min = tls.min_version.unwrap_or(TlsVersion::TLS12);
    let max = tls.max_version.unwrap_or(TlsVersion::TLS13);
    match (min <= TlsVersion::TLS12, max) {
        (_, TlsVersion::TLS10 | TlsVersion::TLS11) => {
            Err("tls_server_config.max_version below TLS12 is not supported".into())
        }
        _ if min > max => Err("tls_server_config.min_version is above max_version".into()),
        (true, TlsVersion::TLS13) => Ok(rustls::ALL_VERSIONS),
        (true, TlsVersion::TLS12) => Ok(TLS12_ONLY),
        (false, _) => Ok(TLS13_ONLY),
    }
}

static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls_server_config.{key} {}: {e}", path.display()))
}

fn certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, key)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_server_config.{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.{key} {}: no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}
