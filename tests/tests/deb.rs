//! The Debian package as built by `cargo xtask deb`, checked without installing it here:
//! lintian, its contents, the unit's hardening score and the man page. Installing,
//! upgrading, removing and purging it under a real systemd is the VM test bed's job
//! (`cargo xtask vm-test`).
use std::{path::PathBuf, process::Command};

use gimbal_tests::{sibling_binary, TempDir};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deb() -> PathBuf {
    let path = workspace().join(format!(
        "target/debian/gimbal_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask deb` (cargo xtask test does)",
        path.display()
    );
    path
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (cargo xtask setup installs it)"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn lintian_is_clean_including_pedantic_and_info_tags() {
    let deb = deb();
    let (ok, out) = run(
        "lintian",
        &["--pedantic", "--display-info", deb.to_str().unwrap()],
    );
    let tags: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("running with root privileges"))
        .collect();
    assert!(ok && tags.is_empty(), "lintian:\n{}", tags.join("\n"));
}

#[test]
fn package_ships_binary_unit_conffile_man_page_and_docs() {
    let deb = deb();
    let root = TempDir::new("deb-contents");
    let (ok, out) = run(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), root.0.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    for file in [
        "usr/bin/gimbal",
        "usr/lib/systemd/system/gimbal.service",
        "etc/gimbal/gimbal.toml",
        "usr/share/man/man8/gimbal.8.gz",
        "usr/share/doc/gimbal/copyright",
        "usr/share/doc/gimbal/changelog.Debian.gz",
        "usr/share/doc/gimbal/metrics.md",
    ] {
        assert!(root.0.join(file).is_file(), "{file} missing from the .deb");
    }
    let (ok, conffiles) = run("dpkg-deb", &["--info", deb.to_str().unwrap(), "conffiles"]);
    assert!(ok, "{conffiles}");
    assert_eq!(conffiles.trim(), "/etc/gimbal/gimbal.toml");

    // The shipped config is the agent's embedded default, and it checks clean.
    let conffile = root.0.join("etc/gimbal/gimbal.toml");
    let (ok, embedded) = run(
        sibling_binary("gimbal").to_str().unwrap(),
        &["default-config"],
    );
    assert!(ok);
    assert_eq!(std::fs::read_to_string(&conffile).unwrap(), embedded);
    let packaged = root.0.join("usr/bin/gimbal");
    let (ok, out) = run(
        packaged.to_str().unwrap(),
        &["check-config", conffile.to_str().unwrap()],
    );
    assert!(ok, "the packaged binary rejects the packaged config: {out}");
}

#[test]
fn unit_hardening_scores_ok_or_better() {
    let unit = workspace().join("packaging/deb/gimbal.service");
    let (_, out) = run(
        "systemd-analyze",
        &["security", "--offline=true", unit.to_str().unwrap()],
    );
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in:\n{out}"));
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score from {line:?}"));
    // systemd calls < 5.0 "OK" and < 2.0 "SAFE"; docs/install-deb.md reports 2.9.
    assert!(score < 3.0, "hardening regressed: {line}");
}

#[test]
fn man_page_renders_without_warnings_and_covers_every_command_and_flag() {
    let page = workspace().join("packaging/deb/gimbal.8");
    let rendered = Command::new("man")
        .args(["--warnings", "-l", "-Tutf8", "-Z"])
        .arg(&page)
        .output()
        .expect("man (Debian's man-db)");
    let warnings = String::from_utf8_lossy(&rendered.stderr);
    assert!(
        rendered.status.success() && warnings.is_empty(),
        "man reports: {warnings}"
    );
    let text = std::fs::read_to_string(&page).unwrap();
    let gimbal = sibling_binary("gimbal");
    let mut expected = Vec::new();
    for args in [vec!["--help"], vec!["run", "--help"]] {
        let (_, help) = run(gimbal.to_str().unwrap(), &args);
        for word in help.split_whitespace() {
            let word = word.trim_end_matches(',');
            if word.starts_with("--") && word.len() > 2 {
                expected.push(word.to_string());
            }
        }
        let commands = help
            .split("Commands:")
            .nth(1)
            .and_then(|c| c.split("Options:").next())
            .unwrap_or("");
        expected.extend(
            commands
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| *c != "help")
                .map(String::from),
        );
    }
    assert!(expected.iter().any(|e| e == "check-config"), "{expected:?}");
    for item in expected {
        // roff escapes every '-' as '\-'.
        let roff = item.replace('-', "\\-");
        assert!(text.contains(&roff), "the man page does not mention {item}");
    }
}
