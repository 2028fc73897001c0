//! Basic auth against the web config's bcrypt hashes. bcrypt is slow on purpose (tens of
//! ms at cost 10), so a pair that passed is remembered (a few, for this loaded config
//! only), checks run one at a time off the loop's thread, and an unknown user costs the
//! same check as a known one (no user enumeration by timing).
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use hyper::header::HeaderValue;
use tokio::sync::Semaphore;

/// Pairs remembered per loaded config.
const REMEMBERED: usize = 16;

pub struct Users {
    hashes: BTreeMap<String, String>,
    passed: Mutex<Vec<(String, String)>>,
    one_at_a_time: Arc<Semaphore>,
}

impl Users {
    /// Nobody to check: no auth.
    pub fn none() -> Self {
        Self {
            hashes: BTreeMap::new(),
            passed: Mutex::default(),
            one_at_a_time: Arc::new(Semaphore::new(1)),
        }
    }

    /// Checks each hash is bcrypt; an error names the user.
    pub fn new(hashes: BTreeMap<String, String>) -> Result<Self, String> {
        for (user, hash) in &hashes {
            if user.is_empty() || user.contains(':') {
                return Err(format!(
                    "basic_auth_users: `{}` is no user name (empty or with `:`)",
                    user.escape_debug()
                ));
            }
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                format!(
                    "basic_auth_users.{}: not a bcrypt hash: {e}",
                    user.escape_debug()
                )
            })?;
        }
        Ok(Self {
            hashes,
            passed: Mutex::default(),
            one_at_a_time: Arc::new(Semaphore::new(1)),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `authorization` (the header) names a user and its password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let pair = (user, password);
        if crate::sync::lock(&self.passed).contains(&pair) {
            return true;
        }
        // An unknown user is checked against a known user's hash, and refused either way.
        let (known, hash) = match self.hashes.get(&pair.0) {
            Some(h) => (true, h.clone()),
            None => match self.hashes.values().next() {
                Some(h) => (false, h.clone()),
                None => return false,
            },
        };
        let Ok(_turn) = self.one_at_a_time.clone().acquire_owned().await else {
            return false;
        };
        let password = pair.1.clone();
        let matched = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        if known && matched {
            let mut passed = crate::sync::lock(&self.passed);
            if passed.len() >= REMEMBERED {
                passed.remove(0);
            }
            passed.push(pair);
        }
        known && matched
    }
}

/// (user, password) of a `Basic` Authorization value.
fn credentials(value: &HeaderValue) -> Option<(String, String)> {
    let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (user, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some((user, password))
}
