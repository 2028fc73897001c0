//! TCP retransmits: `tcp:tcp_retransmit_skb`, counted per flow and owning cgroup.
//!
//! A classic tracepoint (the raw one would need `struct sock` layouts for the addresses);
//! retransmits are rare enough that its cost does not matter. Field offsets come from the
//! tracepoint's format file, read by the loader. The retransmit usually runs in softirq or
//! timer context, so the owner is read from the socket (`sk->sk_cgrp_data.cgroup->kn->id`),
//! never from the current task.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{map, tracepoint},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};
use gimbal_common::{
    Drop, FlowKey, SockOffsets, TcpTpOffsets, AF_INET, OFFSET_UNKNOWN, TCP_RETRANS_ENTRIES,
};

use crate::shared::{cgroup_wanted, per_cpu_slot};

#[map(name = "TCP_RETRANS")]
static TCP_RETRANS: PerCpuHashMap<FlowKey, u64> =
    PerCpuHashMap::with_max_entries(TCP_RETRANS_ENTRIES, 0);

#[no_mangle]
static TCP_TP_OFFSETS: TcpTpOffsets = TcpTpOffsets {
    skaddr: OFFSET_UNKNOWN,
    sport: OFFSET_UNKNOWN,
    dport: OFFSET_UNKNOWN,
    family: OFFSET_UNKNOWN,
    saddr: OFFSET_UNKNOWN,
    daddr: OFFSET_UNKNOWN,
    saddr_v6: OFFSET_UNKNOWN,
    daddr_v6: OFFSET_UNKNOWN,
};

#[no_mangle]
static SOCK_OFFSETS: SockOffsets = SockOffsets {
    sk_cgroup: OFFSET_UNKNOWN,
    cgroup_kn: OFFSET_UNKNOWN,
    kn_id: OFFSET_UNKNOWN,
    _pad: 0,
};

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    match try_retransmit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_retransmit(ctx: &TracePointContext) -> Result<(), i64> {
    // Volatile: the loader rewrites these globals after compilation.
    let tp = unsafe { core::ptr::read_volatile(&TCP_TP_OFFSETS) };
    let sk: u64 = unsafe { ctx.read_at(tp.skaddr as usize)? };
    let cgroup_id = sock_cgroup_id(sk);
    if !cgroup_wanted(cgroup_id) {
        return Ok(());
    }
    let family: u16 = unsafe { ctx.read_at(tp.family as usize)? };
    let mut key = FlowKey {
        cgroup_id,
        family,
        sport: unsafe { ctx.read_at(tp.sport as usize)? },
        dport: unsafe { ctx.read_at(tp.dport as usize)? },
        _pad: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        let s: [u8; 4] = unsafe { ctx.read_at(tp.saddr as usize)? };
        let d: [u8; 4] = unsafe { ctx.read_at(tp.daddr as usize)? };
        key.saddr[..4].copy_from_slice(&s);
        key.daddr[..4].copy_from_slice(&d);
    } else {
        key.saddr = unsafe { ctx.read_at(tp.saddr_v6 as usize)? };
        key.daddr = unsafe { ctx.read_at(tp.daddr_v6 as usize)? };
    }
    if let Some(n) = per_cpu_slot(&TCP_RETRANS, &key, &0, Drop::TcpFlowsFull) {
        // Per-CPU value (BPF has no 64-bit fetch-add from Rust): only this CPU writes it.
        unsafe { *n += 1 };
    }
    Ok(())
}

/// cgroup2 id of the socket's owner, or 0 where this kernel's BTF lacked a field.
fn sock_cgroup_id(sk: u64) -> u64 {
    let o = unsafe { core::ptr::read_volatile(&SOCK_OFFSETS) };
    if sk == 0 || o.sk_cgroup == OFFSET_UNKNOWN || o.cgroup_kn == OFFSET_UNKNOWN {
        return 0;
    }
    let read = |addr: u64| unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0);
    let cgroup = read(sk + o.sk_cgroup as u64);
    if cgroup == 0 {
        return 0;
    }
    let kn = read(cgroup + o.cgroup_kn as u64);
    if kn == 0 {
        return 0;
    }
    read(kn + o.kn_id as u64)
}
