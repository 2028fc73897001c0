//! Kernel struct and tracepoint field offsets of the running kernel, for the programs'
//! globals: from BTF (/sys/kernel/btf/vmlinux) and the tracepoints' format files.
use std::path::Path;

use gimbal_common::{ExitTpOffsets, SockOffsets, TaskOffsets, TcpTpOffsets, OFFSET_UNKNOWN};

use super::ProbeError;
use crate::{btf::Btf, tracefs};

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
    })
}

/// The socket-to-cgroup path; every field unknown where this kernel lacks one, which only
/// costs the `cgroup` label of retransmits.
pub fn sock(btf: &Btf) -> SockOffsets {
    let found = || -> Result<SockOffsets, crate::btf::BtfError> {
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

pub fn tcp_tracepoint(tracefs_root: &Path) -> Result<TcpTpOffsets, ProbeError> {
    const TP: &str = "tcp/tcp_retransmit_skb";
    let f = tracefs::read_format(tracefs_root, "tcp", "tcp_retransmit_skb")?;
    let off = |name| tracefs::offset(&f, TP, name);
    Ok(TcpTpOffsets {
        skaddr: off("skaddr")?,
        sport: off("sport")?,
        dport: off("dport")?,
        family: off("family")?,
        saddr: off("saddr")?,
        daddr: off("daddr")?,
        saddr_v6: off("saddr_v6")?,
        daddr_v6: off("daddr_v6")?,
    })
}

pub fn exit_tracepoints(tracefs_root: &Path) -> Result<ExitTpOffsets, ProbeError> {
    let exit = tracefs::read_format(tracefs_root, "sched", "sched_process_exit")?;
    let oom = tracefs::read_format(tracefs_root, "oom", "mark_victim")?;
    Ok(ExitTpOffsets {
        // Absent before 6.16; the program then reads signal->live instead.
        group_dead: exit.get("group_dead").map_or(OFFSET_UNKNOWN, |f| f.offset),
        oom_pid: tracefs::offset(&oom, "oom/mark_victim", "pid")?,
    })
}
