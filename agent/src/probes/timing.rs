//! Which syscalls the kernel times: the plan (pure, from the config) and its application
//! to the kernel (TIMED_SYSCALLS, TIMED_CGROUPS, and whether `sys_enter` and `sched_switch`
//! run at all). Every syscall is counted at its exit whatever the plan says; timing one
//! costs a clock read at each end and a program on every context switch, so the two
//! programs that time are attached only while anything is timed.
use std::collections::BTreeSet;

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{tp_btf::BtfTracePointLinkId, BtfTracePoint},
};
use gimbal_common::{names, programs, Timing, TIMED_SYSCALLS_ENTRIES};

use super::{
    load::program_error,
    syscall_hook::{attach_enters, detach_enters, EnterLinks, SyscallHook},
    ProbeError, Probes,
};
use crate::{config::Config, names::syscall_number};

/// How each syscall number is handled, indexed by number, and one in how many timed
/// syscalls is sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimingPlan(Vec<Timing>, u32);

impl TimingPlan {
    /// `[probes.syscall_latency] timed_syscalls` in every cgroup, and each target's
    /// latency SLI syscalls in the targets' cgroups (one set for all targets: a target's
    /// cgroups may get histograms of another's SLI syscalls, never fewer than its own).
    pub fn from_config(config: &Config) -> Self {
        let mut plan = vec![Timing::Counted; TIMED_SYSCALLS_ENTRIES as usize];
        for t in &config.targets {
            for nr in t.latency_syscalls.iter().filter_map(|s| syscall_number(s)) {
                if let Some(slot) = plan.get_mut(nr as usize) {
                    *slot = Timing::TargetCgroups;
                }
            }
        }
        let timed = &config.probes.syscall_latency;
        if timed.times_all() {
            plan.fill(Timing::AllCgroups);
        }
        for nr in timed
            .timed_syscalls
            .iter()
            .filter_map(|s| syscall_number(s))
        {
            if let Some(slot) = plan.get_mut(nr as usize) {
                *slot = Timing::AllCgroups;
            }
        }
        Self(plan, timed.sample_one_in.max(1))
    }

    /// Whether anything is timed anywhere.
    pub fn times_any(&self) -> bool {
        self.0.iter().any(|&t| t != Timing::Counted)
    }

    /// How many syscall numbers are timed in every cgroup and in targets' cgroups only.
    pub fn counts(&self) -> (usize, usize) {
        let n = |k| self.0.iter().filter(|&&t| t == k).count();
        (n(Timing::AllCgroups), n(Timing::TargetCgroups))
    }
}

/// The kernel side of the plan, held by `Probes`.
pub(super) struct Timer {
    syscalls: Array<MapData, u32>,
    sample_one_in: Array<MapData, u32>,
    cgroups: HashMap<MapData, u64, u8>,
    /// What the kernel maps hold now.
    plan: Option<TimingPlan>,
    cgroup_ids: BTreeSet<u64>,
    /// Where the syscall programs run.
    hook: SyscallHook,
    /// Set while the enter and `sched_switch` are attached.
    links: Option<(BtfTracePointLinkId, EnterLinks)>,
    cgroups_full_logged: bool,
}

impl Timer {
    pub(super) fn new(ebpf: &mut aya::Ebpf, hook: SyscallHook) -> Result<Self, ProbeError> {
        Ok(Self {
            hook,
            syscalls: super::reader::take_map(ebpf, names::TIMED_SYSCALLS)?,
            sample_one_in: super::reader::take_map(ebpf, names::SAMPLE_ONE_IN)?,
            cgroups: super::reader::take_map(ebpf, names::TIMED_CGROUPS)?,
            plan: None,
            cgroup_ids: BTreeSet::new(),
            links: None,
            cgroups_full_logged: false,
        })
    }
}

impl Probes {
    /// Applies a plan: the per-syscall table first, then `sys_enter` and `sched_switch`
    /// attached if anything is timed (or detached if nothing is). A no-op when the syscall
    /// probe is not attached.
    pub fn set_timing(&mut self, plan: &TimingPlan) -> Result<(), ProbeError> {
        let Some(timer) = self.timer.as_mut() else {
            return Ok(());
        };
        if timer.plan.as_ref() == Some(plan) {
            return Ok(());
        }
        for (nr, &t) in plan.0.iter().enumerate() {
            let changed = timer.plan.as_ref().is_none_or(|old| old.0[nr] != t);
            if changed {
                timer
                    .syscalls
                    .set(nr as u32, t as u32, 0)
                    .map_err(|e| ProbeError::Map {
                        name: names::TIMED_SYSCALLS,
                        error: Box::new(e),
                    })?;
            }
        }
        if timer.plan.as_ref().is_none_or(|old| old.1 != plan.1) {
            timer
                .sample_one_in
                .set(0, plan.1, 0)
                .map_err(|e| ProbeError::Map {
                    name: names::SAMPLE_ONE_IN,
                    error: Box::new(e),
                })?;
        }
        timer.plan = Some(plan.clone());
        let (everywhere, in_targets) = plan.counts();
        tracing::info!(
            timed_everywhere = everywhere,
            timed_in_targets = in_targets,
            sample_one_in = plan.1,
            "syscalls timed (every syscall is counted)"
        );
        match (plan.times_any(), timer.links.is_some()) {
            (true, false) => self.attach_timing(),
            (false, true) => self.detach_timing(),
            _ => Ok(()),
        }
    }

    /// One timed syscall in how many the kernel samples now (1 when nothing is timed).
    pub fn sample_one_in(&self) -> u32 {
        self.timer
            .as_ref()
            .and_then(|t| t.plan.as_ref())
            .map_or(1, |p| p.1)
    }

    /// The cgroups (ids) whose target-only syscalls are timed: the targets' current
    /// cgroups, updated on every tick. Only the difference is written.
    pub fn set_timed_cgroups(&mut self, ids: BTreeSet<u64>) {
        let Some(timer) = self.timer.as_mut() else {
            return;
        };
        if timer.cgroup_ids == ids {
            return;
        }
        for gone in timer.cgroup_ids.difference(&ids) {
            let _ = timer.cgroups.remove(gone);
        }
        let mut kept = BTreeSet::new();
        for &id in &ids {
            if timer.cgroup_ids.contains(&id) || timer.cgroups.insert(id, 0, 0).is_ok() {
                kept.insert(id);
            } else if !timer.cgroups_full_logged {
                timer.cgroups_full_logged = true;
                tracing::warn!(
                    capacity = gimbal_common::TIMED_CGROUPS_ENTRIES,
                    "more target cgroups than the kernel's timing table holds; the rest are counted, not timed"
                );
            }
        }
        timer.cgroup_ids = kept;
    }

    /// Where the syscall programs run; None when the syscall probe is not attached.
    pub fn syscall_hook(&self) -> Option<&SyscallHook> {
        self.timer.as_ref().map(|t| &t.hook)
    }

    fn attach_timing(&mut self) -> Result<(), ProbeError> {
        let Some(timer) = self.timer.as_mut() else {
            return Ok(());
        };
        // The switch hook first: an enter must never be recorded without the hook that
        // keeps it across CPUs.
        let switch_link = switch_hook(&mut self.ebpf)?
            .attach()
            .map_err(|e| program_error(programs::SCHED_SWITCH, e))?;
        match attach_enters(&mut self.ebpf, &timer.hook) {
            Ok(enter_links) => timer.links = Some((switch_link, enter_links)),
            Err(e) => {
                let _ = switch_hook(&mut self.ebpf)?.detach(switch_link);
                return Err(e);
            }
        }
        tracing::info!(
            hook = timer.hook.name(),
            "syscall enter and sched_switch attached: syscalls are timed"
        );
        Ok(())
    }

    fn detach_timing(&mut self) -> Result<(), ProbeError> {
        let Some((switch_link, enter_link)) = self.timer.as_mut().and_then(|t| t.links.take())
        else {
            return Ok(());
        };
        // The enter first, the reverse of attaching. A start left in a slot is taken by
        // its exit or overwritten: it is never counted twice.
        detach_enters(&mut self.ebpf, enter_link)?;
        switch_hook(&mut self.ebpf)?
            .detach(switch_link)
            .map_err(|e| program_error(programs::SCHED_SWITCH, e))?;
        tracing::info!(
            "syscall enter and sched_switch detached: nothing is timed, syscalls are only counted"
        );
        Ok(())
    }
}

fn switch_hook(ebpf: &mut aya::Ebpf) -> Result<&mut BtfTracePoint, ProbeError> {
    ebpf.program_mut(programs::SCHED_SWITCH)
        .ok_or(ProbeError::MissingProgram(programs::SCHED_SWITCH))?
        .try_into()
        .map_err(|e| program_error(programs::SCHED_SWITCH, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml: &str) -> TimingPlan {
        TimingPlan::from_config(&Config::parse(toml, "test").expect("valid"))
    }

    fn at(p: &TimingPlan, name: &str) -> Timing {
        p.0[syscall_number(name).unwrap() as usize]
    }

    #[test]
    fn by_default_nothing_is_timed() {
        let p = plan("");
        assert!(!p.times_any());
        assert_eq!(at(&p, "read"), Timing::Counted);
    }

    #[test]
    fn targets_time_their_latency_syscalls_in_their_cgroups_only() {
        let p = plan(
            "[[targets]]\nname = \"a\"\ncgroup = \"a.slice\"\nlatency_syscalls = [\"read\"]\n",
        );
        assert!(p.times_any());
        assert_eq!(at(&p, "read"), Timing::TargetCgroups);
        assert_eq!(at(&p, "write"), Timing::Counted);
        assert_eq!(p.counts(), (0, 1));
    }

    #[test]
    fn timed_syscalls_are_timed_everywhere_and_win_over_targets() {
        let p = plan(
            "[probes.syscall_latency]\ntimed_syscalls = [\"read\", \"futex\"]\n\
             [[targets]]\nname = \"a\"\ncgroup = \"a.slice\"\nlatency_syscalls = [\"read\", \"write\"]\n",
        );
        assert_eq!(at(&p, "read"), Timing::AllCgroups);
        assert_eq!(at(&p, "futex"), Timing::AllCgroups);
        assert_eq!(at(&p, "write"), Timing::TargetCgroups);
        assert_eq!(at(&p, "getppid"), Timing::Counted);
    }

    #[test]
    fn a_star_times_every_syscall_everywhere() {
        let p = plan("[probes.syscall_latency]\ntimed_syscalls = [\"*\"]\n");
        assert_eq!(p.counts(), (TIMED_SYSCALLS_ENTRIES as usize, 0));
    }
}
