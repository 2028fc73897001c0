//! The node's name, as alerts (`instance`) and the descheduler's load score (`node`) give
//! it: $NODE_NAME where set (the DaemonSet sets it from spec.nodeName, since a pod's
//! hostname is the pod's name), else the kernel's hostname.

/// The node's name ("" when neither is there).
pub fn name() -> String {
    pick(
        std::env::var("NODE_NAME").ok(),
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
    )
}

fn pick(env: Option<String>, hostname: Option<String>) -> String {
    env.filter(|n| !n.trim().is_empty())
        .or(hostname)
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn node_name_prefers_the_environment_over_the_hostname() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(pick(s("gpu-node-7"), s("gimbal-x2k9\n")), "gpu-node-7");
        assert_eq!(pick(s("  "), s("bare-metal-1\n")), "bare-metal-1");
        assert_eq!(pick(None, s("bare-metal-1\n")), "bare-metal-1");
        assert_eq!(pick(None, None), "");
    }
}
