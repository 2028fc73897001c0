//! A pod's restart on Kubernetes: an eviction through the API (`pods/<name>/eviction`),
//! which the API server grants only within the pod's PodDisruptionBudgets; a refusal (429)
//! is a failed attempt, audited, and retried by the restart's backoff like any other.
//! Called from the remediation thread, so the async client runs on a small runtime of its
//! own, one call at a time, each bounded by the client's timeouts.
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::{api::EvictParams, Api};

/// Why an eviction did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EvictError {
    #[error("refused by a PodDisruptionBudget (429): {0}")]
    Budget(String),
    /// The pod is not there (404): evicted or deleted already.
    #[error("already gone")]
    Gone,
    #[error("{0}")]
    Failed(String),
}

pub struct Evictor {
    kubeconfig: Option<PathBuf>,
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<kube::Client>,
}

impl Evictor {
    /// `kubeconfig`: `[cluster] kubeconfig` (none: in-cluster, else $KUBECONFIG). Nothing is
    /// opened until the first eviction.
    pub fn new(kubeconfig: Option<PathBuf>) -> Self {
        Self {
            kubeconfig,
            runtime: None,
            client: None,
        }
    }

    /// Evicts `namespace`/`pod`.
    pub fn evict(&mut self, namespace: &str, pod: &str) -> Result<(), EvictError> {
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| EvictError::Failed(format!("no runtime for the API client: {e}")))?;
            self.runtime = Some(rt);
        }
        let rt = self.runtime.as_ref().expect("just set");
        if self.client.is_none() {
            let client = rt
                .block_on(crate::kubeapi::client(self.kubeconfig.as_deref(), false))
                .map_err(|e| EvictError::Failed(format!("no Kubernetes API client: {e:#}")))?;
            self.client = Some(client);
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone().expect("just set"), namespace);
        match rt.block_on(pods.evict(pod, &EvictParams::default())) {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 429 => Err(EvictError::Budget(s.message)),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(EvictError::Gone),
            Err(e) => Err(EvictError::Failed(e.to_string())),
        }
    }
}
