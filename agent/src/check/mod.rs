//! The config checks that need modules above config: rule expressions against the series
//! rules may read, Alertmanager URLs and TLS roots as alert/ reads them. `run` (and every
//! reload) and `check-config` read the config through here, so both refuse the same.
use std::path::Path;

use crate::config::{Config, ConfigErrors, CrossChecks};

struct Checks;

impl CrossChecks for Checks {
    fn rule_expr(&self, expr: &str) -> Result<(), String> {
        crate::rules::expr::parse(expr, &crate::rules::series::is_known).map(drop)
    }

    fn alertmanager_is_https(&self, url: &str) -> Result<bool, String> {
        crate::alert::Endpoint::parse(url)
            .map(|e| e.is_https())
            .map_err(|e| e.to_string())
    }

    fn tls_ca(&self, path: &Path) -> Result<(), String> {
        crate::alert::tls_config(path, None)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn tls_client(&self, cert: &Path, key: &Path) -> Result<(), (&'static str, String)> {
        use crate::alert::TlsError;
        crate::alert::check_client_certificate(cert, key).map_err(|e| {
            let key_file = key.display().to_string();
            let field = match &e {
                TlsError::NoKey(p) | TlsError::Read { path: p, .. } if *p == key_file => {
                    "tls_key_file"
                }
                TlsError::NotPem { path, .. } if *path == key_file => "tls_key_file",
                _ => "tls_cert_file",
            };
            (field, e.to_string())
        })
    }

    fn web_config(&self, path: &Path) -> Result<(), String> {
        crate::metrics::web::Web::load(path).map(drop)
    }
}

/// Reads and validates a config file, every check included.
pub fn config_file(path: &Path) -> Result<Config, ConfigErrors> {
    Config::from_file_with(path, &Checks)
}

/// Parses and validates config text, every check included; `origin` names it in errors.
pub fn config_text(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    Config::parse_with(text, origin, &Checks)
}

#[cfg(test)]
mod tests;
