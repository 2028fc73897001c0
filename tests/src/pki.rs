//! Test certificates from the openssl CLI (cargo xtask setup installs it): a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate and an expired one, each
//! signed by the CA, written as `<name>.crt` and `<name>.key` into a directory.
use std::{path::Path, process::Command};

/// Writes ca.crt/ca.key, server.*, client.* and expired.* into `dir`.
pub fn pki(dir: &Path) {
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    let mut script = format!(
        "openssl req -x509 {key} -keyout ca.key -out ca.crt -days 2 -subj /CN=gimbal-test-ca\n\
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext\n"
    );
    for (name, days) in [("server", 2), ("client", 2), ("expired", -1)] {
        script.push_str(&format!(
            "openssl req {key} -keyout {name}.key -out {name}.csr -subj /CN={name}\n\
             openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days {days} -extfile ext -out {name}.crt\n"
        ));
    }
    let out = Command::new("sh")
        .args(["-ec", &script])
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(out.status.success(), "openssl: {out:?}");
}
