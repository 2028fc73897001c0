//! Maps and globals used by more than one probe family.
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
    Global,
};
use gimbal_common::{Drop, DROP_KINDS};

/// Things the kernel side could not record, by `Drop` reason; exported as
/// gimbal_events_dropped_total so that no loss is silent.
#[map(name = "DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_KINDS, 0);

/// When non-zero, exits and retransmits of other cgroups are ignored. Set only by the
/// integration tests, so that they count their own events exactly on a busy host.
#[no_mangle]
static FILTER_CGROUP_ID: Global<u64> = Global::new(0);

/// Map update flag: insert only if the key is absent (another CPU may have just added it).
const BPF_NOEXIST: u64 = 1;

/// This CPU's value of `key`, inserted as `zero` if absent; None (counted as `full`) when
/// the map has no room. Per-CPU: the caller may then add to it without atomics.
#[inline(always)]
pub fn per_cpu_slot<K, V>(
    map: &PerCpuHashMap<K, V>,
    key: &K,
    zero: &V,
    full: Drop,
) -> Option<*mut V> {
    if let Some(v) = map.get_ptr_mut(key) {
        return Some(v);
    }
    // NOEXIST: another CPU may have created the key meanwhile; values are per CPU, so
    // either way the lookup below finds this CPU's zeroed value.
    let _ = map.insert(key, zero, BPF_NOEXIST);
    let v = map.get_ptr_mut(key);
    if v.is_none() {
        count_drop(full);
    }
    v
}

#[inline(always)]
pub fn count_drop(reason: Drop) {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: a valid map value of this CPU; no other CPU writes it, so a plain add is
        // race-free.
        unsafe { *slot += 1 };
    }
}

/// Whether an event of `cgroup_id` should be recorded.
#[inline(always)]
pub fn cgroup_wanted(cgroup_id: u64) -> bool {
    let filter = FILTER_CGROUP_ID.load();
    filter == 0 || filter == cgroup_id
}
