//! What each XID calls for, from NVIDIA's XID catalog ("Immediate Action"), as read in
//! gpud's generated copy (`catalog_generated.go`, 2025-10-29) and summarized in
//! shared/reference/gpu-and-load-balancing.md. Overridable per XID in `[gpu.xid_actions]`.
//!
//! Verified rows (read in the catalog copy): 79 reboot; 46, 62, 64, 95, 109, 110, 119, 120,
//! 136, 140, 143, 155, 156, 158 reset the GPU; 48, 74, 45, 144-150 workflows; 151 restart
//! the VM; 154 (the action is in the line itself) workflow; 54 check mechanicals; 78
//! update software; 159 check UVM. Unverified (the reference lists them as examples of
//! their bucket, "e.g."): 8, 11, 13, 31, 68, 69, 94 restart the application; 43, 63, 92,
//! 121, 137 none. Every other XID is `unknown`: counted, not alerted by default.
use std::collections::BTreeMap;

use crate::config::{parse_xid, GpuConfig, GpuRuleConfig, XidAction};

/// The built-in action of `xid`.
pub fn builtin(xid: u32) -> XidAction {
    use XidAction::*;
    match xid {
        79 => RebootNode,
        46 | 62 | 64 | 95 | 109 | 110 | 119 | 120 | 136 | 140 | 143 | 155 | 156 | 158 => ResetGpu,
        45 | 48 | 74 | 144..=150 | 154 => Workflow,
        151 => RestartVm,
        54 => CheckMechanicals,
        78 => UpdateSoftware,
        159 => CheckUvm,
        8 | 11 | 13 | 31 | 68 | 69 | 94 => RestartApplication,
        43 | 63 | 92 | 121 | 137 => None,
        _ => Unknown,
    }
}

/// When an XID alerts, and under which name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidRule {
    pub alert: String,
    pub severity: String,
    pub count: u32,
    pub window: std::time::Duration,
}

/// The catalog in force: the built-in actions with the config's overrides, and the rules.
#[derive(Debug, Clone)]
pub struct Catalog {
    actions: BTreeMap<u32, XidAction>,
    rules: BTreeMap<u32, GpuRuleConfig>,
    /// `[gpu] kill_cause_window`.
    pub kill_cause_window: std::time::Duration,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new(&GpuConfig::default())
    }
}

impl Catalog {
    pub fn new(config: &GpuConfig) -> Self {
        let actions = config
            .xid_actions
            .iter()
            .filter_map(|(k, a)| Some((parse_xid(k)?, *a)))
            .collect();
        let mut rules = BTreeMap::new();
        for rule in &config.rules {
            for xid in &rule.xids {
                rules.insert(*xid, rule.clone());
            }
        }
        Self {
            actions,
            rules,
            kill_cause_window: config.kill_cause_window.get(),
        }
    }

    pub fn action(&self, xid: u32) -> XidAction {
        self.actions
            .get(&xid)
            .copied()
            .unwrap_or_else(|| builtin(xid))
    }

    /// The alert for `xid`, if it alerts: a `[[gpu.rules]]` entry's, else the built-in
    /// one (1 record within 10 minutes) for every action but none and unknown.
    pub fn rule(&self, xid: u32) -> Option<XidRule> {
        let action = self.action(xid);
        let (alert, severity) = default_alert(xid, action);
        match self.rules.get(&xid) {
            Some(r) => Some(XidRule {
                alert: r.alert.clone().unwrap_or_else(|| alert.to_string()),
                severity: r.severity.clone().unwrap_or_else(|| severity.to_string()),
                count: r.count,
                window: r.window.get(),
            }),
            None if matches!(action, XidAction::None | XidAction::Unknown) => None,
            None => Some(XidRule {
                alert: alert.to_string(),
                severity: severity.to_string(),
                count: 1,
                window: std::time::Duration::from_secs(600),
            }),
        }
    }
}

/// The alertname and severity of an XID: its own for the faults that need one, else by
/// its action.
pub fn default_alert(xid: u32, action: XidAction) -> (&'static str, &'static str) {
    match (xid, action) {
        (79, _) => ("GpuFallenOffBus", "critical"),
        (48 | 95, _) => ("GpuUncorrectableEccError", "critical"),
        (94, _) => ("GpuUncorrectableEccError", "warning"),
        (64, _) => ("GpuRowRemapFailure", "critical"),
        (_, XidAction::ResetGpu) => ("GpuResetRequired", "critical"),
        (_, XidAction::RebootNode | XidAction::RestartVm) => ("GpuRebootRequired", "critical"),
        (_, XidAction::RestartApplication) => ("GpuApplicationXid", "warning"),
        _ => ("GpuXid", "warning"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_actions_and_overrides() {
        assert_eq!(builtin(79), XidAction::RebootNode);
        assert_eq!(builtin(64), XidAction::ResetGpu);
        assert_eq!(builtin(48), XidAction::Workflow);
        assert_eq!(builtin(94), XidAction::RestartApplication);
        assert_eq!(builtin(63), XidAction::None);
        assert_eq!(builtin(4242), XidAction::Unknown);
        let config = crate::config::Config::parse(
            "[gpu.xid_actions]\n\"13\" = \"none\"\n\"999\" = \"reset-gpu\"\n[[gpu.rules]]\nxids = [13, 31]\ncount = 3\nwindow = \"5m\"\n[[gpu.rules]]\nxids = [31]\nalert = \"MyXid\"\n",
            "t",
        )
        .unwrap();
        let c = Catalog::new(&config.gpu);
        assert_eq!(c.action(13), XidAction::None);
        assert_eq!(c.action(999), XidAction::ResetGpu);
        assert_eq!(c.action(31), XidAction::RestartApplication);
        // A rule makes even an action-none XID alert; the last rule listing an XID wins.
        let r13 = c.rule(13).unwrap();
        assert_eq!(
            (r13.count, r13.window.as_secs(), r13.alert.as_str()),
            (3, 300, "GpuXid")
        );
        let r31 = c.rule(31).unwrap();
        assert_eq!(
            (r31.count, r31.alert.as_str(), r31.severity.as_str()),
            (1, "MyXid", "warning")
        );
        assert_eq!(c.rule(999).unwrap().alert, "GpuResetRequired");
        assert_eq!(c.rule(63), None, "none: counted, not alerted");
        assert_eq!(c.rule(4242), None, "unknown: counted, not alerted");
        let r79 = c.rule(79).unwrap();
        assert_eq!(
            (r79.alert.as_str(), r79.severity.as_str(), r79.count),
            ("GpuFallenOffBus", "critical", 1)
        );
        assert_eq!(c.rule(48).unwrap().alert, "GpuUncorrectableEccError");
        assert_eq!(c.rule(64).unwrap().alert, "GpuRowRemapFailure");
        assert_eq!(c.rule(94).unwrap().severity, "warning");
    }
}
