//! The Kubernetes API client, built one way for every writer (the node condition and taint
//! in `cluster/`, evictions in `remediate/`): from a kubeconfig file when one is set,
//! else in-cluster (the pod's service account), else $KUBECONFIG; every call bounded.
use std::{path::Path, time::Duration};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// `retry_throttled`: let the client retry 429/503/504 itself (kube's default). Evictions
/// turn it off: a 429 there is a PodDisruptionBudget's answer, audited and retried by the
/// restart's own backoff.
pub async fn client(
    kubeconfig: Option<&Path>,
    retry_throttled: bool,
) -> anyhow::Result<kube::Client> {
    let mut c = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    c.connect_timeout = Some(Duration::from_secs(5));
    c.read_timeout = Some(Duration::from_secs(10));
    c.write_timeout = Some(Duration::from_secs(10));
    c.default_retry = retry_throttled;
    Ok(kube::Client::try_from(c)?)
}
