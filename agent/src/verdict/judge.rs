//! All verdicts, each tick: every target's raw verdict through its own anti-flap machine,
//! the node-wide cap on targets draining at once, the node's verdict over all of them,
//! every change logged with its reason and counted. Owned by the loop; holds only the
//! machines' state.
use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use super::{node, raw, score, Inputs, Machine, NodeLoad, State, Verdict, Verdicts};
use crate::{
    config::{Config, Signals, VerdictConfig},
    model::gpu::GpuModel,
    targets::watch::TargetStatus,
};

pub struct Judge {
    config: VerdictConfig,
    signals: BTreeMap<String, Signals>,
    machines: BTreeMap<String, Machine>,
    node: Option<Verdict>,
    changes: BTreeMap<String, u64>,
    /// The name the node's load score is exported under.
    node_name: Arc<str>,
    /// The host's CPU pressure at the last tick (events between ticks do not read it).
    host_pressure: Option<f64>,
}

impl Judge {
    pub fn new(config: &Config) -> Self {
        let mut judge = Self {
            config: config.verdict.clone(),
            signals: BTreeMap::new(),
            machines: BTreeMap::new(),
            node: None,
            changes: BTreeMap::new(),
            node_name: Arc::from(crate::host::node::name()),
            host_pressure: None,
        };
        judge.reload(config);
        judge
    }

    /// New settings; targets still configured keep their verdicts and counts.
    pub fn reload(&mut self, config: &Config) {
        let v = &config.verdict;
        self.config = v.clone();
        self.signals = config
            .targets
            .iter()
            .map(|t| (t.name.clone(), v.signals(t.verdict.as_ref())))
            .collect();
        self.machines
            .retain(|name, _| self.signals.contains_key(name));
        self.changes
            .retain(|name, _| name.is_empty() || self.signals.contains_key(name));
        for (name, s) in &self.signals {
            self.machines
                .entry(name.clone())
                .and_modify(|m| m.rebound(v.rise, v.fall, s.floor, v.max_step))
                .or_insert_with(|| Machine::new(v.rise, v.fall, s.floor, v.max_step));
        }
    }

    /// This tick's verdicts. `pressure` reads a cgroup's CPU pressure (some avg10, percent);
    /// `host_pressure` is the host's, used for a target whose cgroups have none.
    pub fn step(
        &mut self,
        targets: &[TargetStatus],
        gpu: &GpuModel,
        pressure: impl Fn(&str) -> Option<f64>,
        host_pressure: Option<f64>,
        now: SystemTime,
    ) -> Verdicts {
        self.judge(targets, gpu, pressure, host_pressure, now, true)
    }

    /// Between ticks (an exit event, a GPU record): only what is observed at once is taken,
    /// a target now `down` and the node's GPU drain; the rise and fall counts stay per tick,
    /// so a burst of events cannot hurry a recovery.
    pub fn event(&mut self, targets: &[TargetStatus], gpu: &GpuModel, now: SystemTime) -> Verdicts {
        self.judge(targets, gpu, |_| None, None, now, false)
    }

    fn judge(
        &mut self,
        targets: &[TargetStatus],
        gpu: &GpuModel,
        pressure: impl Fn(&str) -> Option<f64>,
        host_pressure: Option<f64>,
        now: SystemTime,
        tick: bool,
    ) -> Verdicts {
        if tick {
            self.host_pressure = host_pressure;
        }
        let node = node::verdict(gpu, self.config.gpu_window.get(), now);
        if self.node.as_ref() != Some(&node) {
            let first = self.node.is_none();
            if !first || node.state != State::Up {
                log_change("", self.node.as_ref(), &node);
            }
            if !first {
                *self.changes.entry(String::new()).or_default() += 1;
            }
            self.node = Some(node.clone());
        }
        let mut draining = self.machines.values().filter(|m| m.draining()).count();
        let mut out = BTreeMap::new();
        for t in targets {
            let name = &t.config.name;
            let (Some(signals), Some(machine)) =
                (self.signals.get(name), self.machines.get_mut(name))
            else {
                continue;
            };
            let cpu = t
                .cgroups
                .iter()
                .filter_map(|c| pressure(c))
                .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))))
                .or(host_pressure);
            let mut want = raw(&Inputs {
                target: t,
                cpu_pressure: cpu,
                signals,
            });
            if want.state == State::Drain
                && !machine.draining()
                && draining >= self.config.max_draining
            {
                want = Verdict::new(
                    State::Degraded,
                    signals.floor,
                    format!(
                        "{} (drain held back: {draining} target(s) already draining, max_draining = {})",
                        want.reason, self.config.max_draining
                    ),
                );
            }
            let before = machine.current().cloned();
            let was_draining = machine.draining();
            let observed = want.state == State::Down && before.is_some();
            let next = if tick || observed {
                machine.step(want)
            } else {
                None
            };
            if let Some(next) = next {
                if before.is_some() {
                    *self.changes.entry(name.clone()).or_default() += 1;
                }
                if before.is_some() || next.state != State::Up {
                    log_change(name, before.as_ref(), &next);
                }
            }
            match (was_draining, machine.draining()) {
                (false, true) => draining += 1,
                (true, false) => draining = draining.saturating_sub(1),
                _ => {}
            }
            let mine = machine.current().cloned().unwrap_or_else(Verdict::up);
            let published = if node.state > mine.state {
                Verdict::new(node.state, 0, format!("node: {}", node.reason))
            } else {
                mine
            };
            out.insert(name.clone(), published);
            self.changes.entry(name.clone()).or_default();
        }
        self.changes.entry(String::new()).or_default();
        let load = NodeLoad {
            node: self.node_name.clone(),
            score: score::node_load(&node, &out, self.host_pressure),
        };
        Verdicts {
            node: Some(node),
            targets: out,
            changes: self.changes.clone(),
            load: Some(load),
        }
    }
}

fn log_change(name: &str, before: Option<&Verdict>, after: &Verdict) {
    let scope = if name.is_empty() { "node" } else { name };
    let from = before.map_or("none", |b| b.state.name());
    let level_warn = after.state >= State::Drain;
    if level_warn {
        tracing::warn!(target = scope, from, to = after.state.name(), weight = after.weight, reason = %after.reason, "verdict changed");
    } else {
        tracing::info!(target = scope, from, to = after.state.name(), weight = after.weight, reason = %after.reason, "verdict changed");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test").expect("a valid config")
    }

    fn status(config: &Config, name: &str, up: bool, burn: Option<f64>) -> TargetStatus {
        let c = config.targets.iter().find(|t| t.name == name).unwrap();
        TargetStatus {
            config: c.clone(),
            up,
            availability: vec![],
            reliability: vec![],
            failures_total: 0,
            failures_recent: 0,
            mttr: None,
            latency: vec![("5m", Some((1.0, 1.0)))],
            burn: [(None, burn), (None, None)],
            last_exit: None,
            recent_kill: None,
            read_failures_total: 0,
            cgroups: vec![format!("{name}.service")],
            stall: None,
        }
    }

    const THREE: &str = "[verdict]\nfall = 1\ndrain_burn = 10.0\nmax_draining = 1\n[[targets]]\nname = \"a\"\ncgroup = \"a.service\"\n[[targets]]\nname = \"b\"\ncgroup = \"b.service\"\n[[targets]]\nname = \"c\"\ncgroup = \"c.service\"\n";

    #[test]
    fn at_most_max_draining_targets_drain_at_once() {
        let c = config(THREE);
        let mut j = Judge::new(&c);
        let gpu = GpuModel::new(10);
        let now = SystemTime::now();
        let ok = |n| status(&c, n, true, None);
        j.step(&[ok("a"), ok("b"), ok("c")], &gpu, |_| None, None, now);
        let burning = |n| status(&c, n, true, Some(20.0));
        let v = j.step(
            &[burning("a"), burning("b"), ok("c")],
            &gpu,
            |_| None,
            None,
            now,
        );
        assert_eq!(v.targets["a"].state, State::Drain);
        assert_eq!(
            v.targets["b"].state,
            State::Degraded,
            "{:?}",
            v.targets["b"]
        );
        assert!(
            v.targets["b"].reason.contains("drain held back"),
            "{}",
            v.targets["b"].reason
        );
        assert_eq!(
            v.targets["b"].weight, 75,
            "on its way to the floor, a bounded step a tick"
        );
        // A dead target is down whatever the cap.
        let v = j.step(
            &[burning("a"), status(&c, "b", false, None), ok("c")],
            &gpu,
            |_| None,
            None,
            now,
        );
        assert_eq!(v.targets["b"].state, State::Down);
        assert_eq!(v.changes["a"], 1);
        assert_eq!(v.changes["b"], 2);
        assert_eq!(v.changes["c"], 0);
    }

    #[test]
    fn cpu_pressure_of_the_targets_cgroups_lowers_its_weight_and_a_node_drain_covers_all() {
        let c = config("[verdict]\nfall = 1\nmax_step = 100\n[[targets]]\nname = \"a\"\ncgroup = \"a.service\"\n[targets.verdict]\ncpu_pressure_low = 20.0\ncpu_pressure_high = 70.0\nfloor = 20\n");
        let mut j = Judge::new(&c);
        let mut gpu = GpuModel::new(10);
        let now = SystemTime::now();
        let a = status(&c, "a", true, None);
        j.step(std::slice::from_ref(&a), &gpu, |_| None, None, now);
        let pressure = |cg: &str| (cg == "a.service").then_some(45.0);
        let v = j.step(std::slice::from_ref(&a), &gpu, pressure, None, now);
        // Halfway from 20 % to 70 %: halfway from 100 % to the floor of 20 %.
        assert_eq!(
            (v.targets["a"].state, v.targets["a"].weight),
            (State::Degraded, 60)
        );
        let v = j.step(std::slice::from_ref(&a), &gpu, |_| Some(95.0), None, now);
        assert_eq!(v.targets["a"].weight, 20, "never under the floor");
        gpu.apply_xid(crate::model::gpu::XidSeen {
            gpu: "0000:01:00".into(),
            xid: 79,
            action: "reboot-node",
            cgroup: "unknown".into(),
            pid: None,
            name: None,
            detail: String::new(),
            at: now,
        });
        let v = j.step(
            std::slice::from_ref(&a),
            &gpu,
            |_| None,
            None,
            now + Duration::from_secs(1),
        );
        assert_eq!(v.node.as_ref().unwrap().state, State::Drain);
        assert_eq!(v.targets["a"].state, State::Drain);
        assert!(
            v.targets["a"].reason.starts_with("node: GPU"),
            "{}",
            v.targets["a"].reason
        );
        assert_eq!(v.changes[""], 1);
    }

    #[test]
    fn an_event_between_ticks_takes_a_death_at_once_and_nothing_else() {
        let c = config("[verdict]\nfall = 1\nrise = 2\nmax_step = 100\n[[targets]]\nname = \"a\"\ncgroup = \"a.service\"\n");
        let mut j = Judge::new(&c);
        let gpu = GpuModel::new(10);
        let now = SystemTime::now();
        let up = status(&c, "a", true, None);
        j.step(std::slice::from_ref(&up), &gpu, |_| None, None, now);
        let down = status(&c, "a", false, None);
        let v = j.event(std::slice::from_ref(&down), &gpu, now);
        assert_eq!(v.targets["a"].state, State::Down);
        // Back up: events do not count toward rise, ticks do.
        for _ in 0..5 {
            let v = j.event(std::slice::from_ref(&up), &gpu, now);
            assert_eq!(v.targets["a"].state, State::Down);
        }
        j.step(std::slice::from_ref(&up), &gpu, |_| None, None, now);
        let v = j.step(std::slice::from_ref(&up), &gpu, |_| None, None, now);
        assert_eq!(
            (v.targets["a"].state, v.targets["a"].weight),
            (State::Degraded, 10),
            "the slow start"
        );
    }

    #[test]
    fn host_pressure_stands_in_for_a_cgroup_without_its_own() {
        let c = config("[verdict]\nfall = 1\nmax_step = 100\n[[targets]]\nname = \"a\"\ncgroup = \"a.service\"\n");
        let mut j = Judge::new(&c);
        let gpu = GpuModel::new(10);
        let a = status(&c, "a", true, None);
        let now = SystemTime::now();
        j.step(std::slice::from_ref(&a), &gpu, |_| None, None, now);
        let v = j.step(std::slice::from_ref(&a), &gpu, |_| None, Some(60.0), now);
        assert_eq!(v.targets["a"].weight, 10);
        let v = j.step(
            std::slice::from_ref(&a),
            &gpu,
            |_| Some(0.0),
            Some(60.0),
            now,
        );
        assert_eq!(v.targets["a"].state, State::Degraded, "rise: not yet back");
    }
}
