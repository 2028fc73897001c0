//! Kernel struct offsets of the running kernel, for the programs' globals, from BTF
//! (/sys/kernel/btf/vmlinux); the tracepoints' format files tell which arguments a
//! tracepoint passes on this kernel.
use std::path::Path;

use gimbal_common::{ExitTpArgs, FlowOffsets, SockOffsets, TaskOffsets, OFFSET_UNKNOWN};

use super::ProbeError;
use crate::host::{btf::Btf, tracefs};

pub fn task(btf: &Btf) -> Result<TaskOffsets, ProbeError> {
    let off = |s: &str, m: &str| btf.member_offset(s, m);
    Ok(TaskOffsets {
        exit_code: off("task_struct", "exit_code")?,
        tgid: off("task_struct", "tgid")?,
        real_parent: off("task_struct", "real_parent")?,
        group_leader: off("task_struct", "group_leader")?,
        start_time: off("task_struct", "start_time")?,
        signal: off("task_struct", "signal")?,
        signal_live: off("signal_struct", "live")?,
        comm: off("task_struct", "comm")?,
        pid: off("task_struct", "pid")?,
        _pad: 0,
    })
}

/// The socket-to-cgroup path; every field unknown where this kernel lacks one, which only
/// costs the `cgroup` label of retransmits.
pub fn sock(btf: &Btf) -> SockOffsets {
    let found = || -> Result<SockOffsets, crate::host::btf::BtfError> {
        Ok(SockOffsets {
            sk_cgroup: btf.member_offset("sock", "sk_cgrp_data.cgroup")?,
            cgroup_kn: btf.member_offset("cgroup", "kn")?,
            kn_id: btf.member_offset("kernfs_node", "id")?,
            _pad: 0,
        })
    };
    found().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "retransmits will not be attributed to cgroups on this kernel");
        SockOffsets {
            sk_cgroup: OFFSET_UNKNOWN,
            cgroup_kn: OFFSET_UNKNOWN,
            kn_id: OFFSET_UNKNOWN,
            _pad: 0,
        }
    })
}

/// The flow fields of a socket, in its `sock_common` (`struct sock.__sk_common`).
pub fn flow(btf: &Btf) -> Result<FlowOffsets, ProbeError> {
    let off = |m: &str| btf.member_offset("sock", &format!("__sk_common.{m}"));
    Ok(FlowOffsets {
        family: off("skc_family")?,
        num: off("skc_num")?,
        dport: off("skc_dport")?,
        rcv_saddr: off("skc_rcv_saddr")?,
        daddr: off("skc_daddr")?,
        v6_rcv_saddr: off("skc_v6_rcv_saddr")?,
        v6_daddr: off("skc_v6_daddr")?,
        _pad: 0,
    })
}

/// Whether `tcp_retransmit_skb` exists on this kernel: a clear error up front instead of
/// the raw tracepoint's ENOENT.
pub fn tcp_tracepoint(tracefs_root: &Path) -> Result<(), ProbeError> {
    tracefs::read_format(tracefs_root, "tcp", "tcp_retransmit_skb")?;
    Ok(())
}

/// The arguments the exit tracepoints pass here; their format files changed with them.
pub fn exit_tracepoints(tracefs_root: &Path) -> Result<ExitTpArgs, ProbeError> {
    let exit = tracefs::read_format(tracefs_root, "sched", "sched_process_exit")?;
    let oom = tracefs::read_format(tracefs_root, "oom", "mark_victim")?;
    Ok(ExitTpArgs {
        // Absent before 6.16; the program then reads signal->live instead.
        group_dead: u32::from(exit.contains_key("group_dead")),
        // `uid` came with the task argument (before: `mark_victim(int pid)`).
        victim_is_task: u32::from(oom.contains_key("uid")),
    })
}
