//! TCP retransmits: the raw `tcp_retransmit_skb` tracepoint, counted per flow and owning
//! cgroup.
//!
//! A raw tracepoint, not the classic one: attaching a classic tracepoint goes through
//! perf_event_open, which kernels with perf_event_paranoid=3 (Debian's default) refuse
//! without CAP_SYS_ADMIN. The flow is read from the socket at `sock_common` offsets the
//! loader found in BTF. The retransmit usually runs in softirq or timer context, so the
//! owner is read from the socket (`sk->sk_cgrp_data.cgroup->kn->id`), never from the
//! current task.
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::PerCpuHashMap,
    programs::RawTracePointContext,
    Global,
};
use gimbal_common::{
    Drop, FlowKey, FlowOffsets, SockOffsets, AF_INET, OFFSET_UNKNOWN, TCP_RETRANS_ENTRIES,
};

use crate::{
    kernel_read::{read_at, ReadFailed},
    shared::{cgroup_wanted, count_drop, per_cpu_slot},
};

#[map(name = "TCP_RETRANS")]
static TCP_RETRANS: PerCpuHashMap<FlowKey, u64> =
    PerCpuHashMap::with_max_entries(TCP_RETRANS_ENTRIES, 0);

#[no_mangle]
static FLOW_OFFSETS: Global<FlowOffsets> = Global::new(FlowOffsets {
    family: OFFSET_UNKNOWN,
    num: OFFSET_UNKNOWN,
    dport: OFFSET_UNKNOWN,
    rcv_saddr: OFFSET_UNKNOWN,
    daddr: OFFSET_UNKNOWN,
    v6_rcv_saddr: OFFSET_UNKNOWN,
    v6_daddr: OFFSET_UNKNOWN,
    _pad: 0,
});

#[no_mangle]
static SOCK_OFFSETS: Global<SockOffsets> = Global::new(SockOffsets {
    sk_cgroup: OFFSET_UNKNOWN,
    cgroup_kn: OFFSET_UNKNOWN,
    kn_id: OFFSET_UNKNOWN,
    _pad: 0,
});

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, ...)`.
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: RawTracePointContext) -> i32 {
    if let Err(ReadFailed) = try_retransmit(&ctx) {
        count_drop(Drop::TcpFlowReadFailed);
    }
    0
}

fn try_retransmit(ctx: &RawTracePointContext) -> Result<(), ReadFailed> {
    let sk: u64 = ctx.arg(0);
    // The retransmit still counts without its owner: under the `unknown` cgroup (id 0).
    let cgroup_id = sock_cgroup_id(sk).unwrap_or_else(|ReadFailed| {
        count_drop(Drop::TcpCgroupReadFailed);
        0
    });
    if !cgroup_wanted(cgroup_id) {
        return Ok(());
    }
    let f = FLOW_OFFSETS.load();
    let family: u16 = read_at(sk, f.family)?;
    let dport: u16 = read_at(sk, f.dport)?;
    let mut key = FlowKey {
        cgroup_id,
        family,
        sport: read_at(sk, f.num)?,
        dport: u16::from_be(dport),
        _pad: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        let s: [u8; 4] = read_at(sk, f.rcv_saddr)?;
        let d: [u8; 4] = read_at(sk, f.daddr)?;
        key.saddr[..4].copy_from_slice(&s);
        key.daddr[..4].copy_from_slice(&d);
    } else {
        key.saddr = read_at(sk, f.v6_rcv_saddr)?;
        key.daddr = read_at(sk, f.v6_daddr)?;
    }
    // A stack zero, not `&0`: a promoted constant may share .rodata bytes with a global
    // the loader rewrites (it did: EXIT_TP_ARGS, making new flows start at 2^32 + 1).
    let zero = 0u64;
    if let Some(n) = per_cpu_slot(&TCP_RETRANS, &key, &zero, Drop::TcpFlowsFull) {
        // SAFETY: a valid per-CPU map value (BPF has no 64-bit fetch-add from Rust): only
        // this CPU writes it.
        unsafe { *n += 1 };
    }
    Ok(())
}

/// cgroup2 id of the socket's owner: 0 where there is no socket, this kernel's BTF lacked
/// a field, or the socket has no cgroup; an error only when a read failed.
fn sock_cgroup_id(sk: u64) -> Result<u64, ReadFailed> {
    let o = SOCK_OFFSETS.load();
    if sk == 0 || o.sk_cgroup == OFFSET_UNKNOWN || o.cgroup_kn == OFFSET_UNKNOWN {
        return Ok(0);
    }
    let cgroup: u64 = read_at(sk, o.sk_cgroup)?;
    if cgroup == 0 {
        return Ok(0);
    }
    let kn: u64 = read_at(cgroup, o.cgroup_kn)?;
    if kn == 0 {
        return Ok(0);
    }
    read_at(kn, o.kn_id)
}
