//! `[gpu]` and `[[gpu.rules]]`: where GPU faults are read from, what each XID calls for,
//! and when an XID alerts.
use std::collections::BTreeMap;

use serde::Deserialize;

use super::HumanDuration;

/// `[gpu]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// Read NVIDIA XID records from the kernel log (/dev/kmsg; CAP_SYSLOG where
    /// kernel.dmesg_restrict = 1).
    pub kmsg: bool,
    /// The kernel log device (a test may point it elsewhere).
    pub kmsg_path: std::path::PathBuf,
    /// Count records written to /dev/kmsg from user space too. Off: only records the
    /// kernel itself logged (facility 0) count, so no process that can write /dev/kmsg
    /// can forge an XID. For tests that inject records.
    pub kmsg_user_records: bool,
    /// Try NVML (libnvidia-ml.so.1) at start; absent on nodes without the driver.
    pub nvml: bool,
    /// How often NVML reads every GPU (on a thread of its own).
    pub nvml_interval: HumanDuration,
    /// What an XID calls for, overriding the built-in catalog: `"13" = "restart-application"`.
    pub xid_actions: BTreeMap<String, XidAction>,
    /// `[[gpu.rules]]`: when XIDs alert (count within a window), overriding the built-in
    /// default (1 within 10m) for the XIDs listed.
    pub rules: Vec<GpuRuleConfig>,
    /// A target's kill alert names as its cause the latest XID that hit the killed
    /// process (or, for an XID naming no process, its cgroup) this long before the kill.
    pub kill_cause_window: HumanDuration,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            kmsg: true,
            kmsg_path: "/dev/kmsg".into(),
            kmsg_user_records: false,
            nvml: true,
            nvml_interval: HumanDuration::from_secs(10),
            xid_actions: BTreeMap::new(),
            rules: Vec::new(),
            kill_cause_window: HumanDuration::from_secs(60),
        }
    }
}

/// What NVIDIA's XID catalog says to do about an XID ("Immediate Action").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XidAction {
    /// Nothing: informational.
    None,
    /// Restart the application that hit it.
    RestartApplication,
    /// Reset the GPU (drain it first).
    ResetGpu,
    /// Reboot the node.
    RebootNode,
    /// Restart the virtual machine.
    RestartVm,
    /// Check cables, power, seating.
    CheckMechanicals,
    /// Update the driver or firmware.
    UpdateSoftware,
    /// Check the unified-memory (UVM) driver.
    CheckUvm,
    /// A workflow of its own in NVIDIA's catalog (DBE, NVLink errors...).
    Workflow,
    /// Not in the built-in catalog.
    Unknown,
}

impl XidAction {
    /// The label value (as written in config).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::RestartApplication => "restart-application",
            Self::ResetGpu => "reset-gpu",
            Self::RebootNode => "reboot-node",
            Self::RestartVm => "restart-vm",
            Self::CheckMechanicals => "check-mechanicals",
            Self::UpdateSoftware => "update-software",
            Self::CheckUvm => "check-uvm",
            Self::Workflow => "workflow",
            Self::Unknown => "unknown",
        }
    }
}

/// `[[gpu.rules]]`: an XID alert's threshold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRuleConfig {
    /// The XIDs this rule sets (a later rule listing the same XID wins).
    pub xids: Vec<u32>,
    /// Records of one XID on one GPU for one cgroup within `window` that fire the alert.
    #[serde(default = "defaults::count")]
    pub count: u32,
    #[serde(default = "defaults::window")]
    pub window: HumanDuration,
    /// The alertname; default: from the XID and its action (docs/alerting.md).
    #[serde(default)]
    pub alert: Option<String>,
    /// Default: critical for reset/reboot XIDs, 79, 48, 64 and 95; warning otherwise.
    #[serde(default)]
    pub severity: Option<String>,
}

pub(super) mod defaults {
    use super::HumanDuration;

    pub fn count() -> u32 {
        1
    }
    pub fn window() -> HumanDuration {
        HumanDuration::from_secs(600)
    }
}

/// The most records a rule may wait for (the rules keep at most 4096 recent records).
pub const MAX_RULE_COUNT: u32 = 1000;
/// The longest XID window.
pub const MAX_RULE_WINDOW_SECS: u64 = 24 * 3600;
/// XIDs are small numbers (the catalog ends below 200); anything larger is no XID.
pub const MAX_XID: u32 = 9999;

/// Checks made after deserializing, each error at its key.
pub(super) fn validate(
    gpu: &GpuConfig,
    spans: &super::spans::Spans,
    errors: &mut super::errors::ConfigErrors,
) {
    for key in gpu.xid_actions.keys() {
        if parse_xid(key).is_none() {
            let msg = format!("key `{key}` must be an XID, a number from 1 to {MAX_XID}");
            errors.push_path(spans, &format!("gpu.xid_actions.{key}"), msg);
        }
    }
    let i = gpu.nvml_interval.get();
    if i < std::time::Duration::from_secs(1) || i > std::time::Duration::from_secs(3600) {
        errors.push_path(spans, "gpu.nvml_interval", "must be from 1s to 1h".into());
    }
    let w = gpu.kill_cause_window.get();
    if w < std::time::Duration::from_secs(1)
        || w > std::time::Duration::from_secs(MAX_RULE_WINDOW_SECS)
    {
        errors.push_path(
            spans,
            "gpu.kill_cause_window",
            "must be from 1s to 24h (recent XIDs are kept that long)".into(),
        );
    }
    for (n, rule) in gpu.rules.iter().enumerate() {
        let at = format!("gpu.rules[{n}]");
        if rule.xids.is_empty() {
            errors.push_path(
                spans,
                &format!("{at}.xids"),
                "must list at least one XID".into(),
            );
        }
        for (i, xid) in rule.xids.iter().enumerate() {
            if !(1..=MAX_XID).contains(xid) {
                let msg = format!("`{xid}` is no XID: a number from 1 to {MAX_XID}");
                errors.push_path(spans, &format!("{at}.xids[{i}]"), msg);
            }
        }
        if !(1..=MAX_RULE_COUNT).contains(&rule.count) {
            let msg = format!(
                "must be from 1 to {MAX_RULE_COUNT} (the rules keep 4096 recent records), not {}",
                rule.count
            );
            errors.push_path(spans, &format!("{at}.count"), msg);
        }
        let w = rule.window.get();
        if w < std::time::Duration::from_secs(1)
            || w > std::time::Duration::from_secs(MAX_RULE_WINDOW_SECS)
        {
            errors.push_path(
                spans,
                &format!("{at}.window"),
                "must be from 1s to 24h (recent records are kept that long)".into(),
            );
        }
        if rule.alert.as_deref().is_some_and(|a| !alertname(a)) {
            let msg = "must be a Prometheus metric-style name ([a-zA-Z_][a-zA-Z0-9_]*)".into();
            errors.push_path(spans, &format!("{at}.alert"), msg);
        }
        if rule.severity.as_deref().is_some_and(str::is_empty) {
            errors.push_path(spans, &format!("{at}.severity"), "must not be empty".into());
        }
    }
}

/// An XID written as a map key ("79").
pub fn parse_xid(key: &str) -> Option<u32> {
    if key.is_empty() || key.len() > 4 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok().filter(|x| (1..=MAX_XID).contains(x))
}

fn alertname(a: &str) -> bool {
    let mut chars = a.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
