//! The agent's side of SYSCALL_COUNT_SLOTS: a cache in front of the SYSCALL_COUNTS hash
//! for the busiest (cgroup, syscall) pairs, so that their syscalls are counted by an
//! array access instead of a hash lookup.
//!
//! The array is shared memory (mmap), `COUNT_SLOTS_PER_CPU` slots per CPU. The agent
//! claims slot `s` for a pair on every CPU at once when the pair counted at least
//! `PROMOTE_AT` syscalls in the hash since the last read and `s` (one of the pair's two)
//! is free; the kernel then counts the pair there. A pair's count is always its hash value
//! plus its slots' counts: nothing moves between the two, so no count goes backwards, and
//! a claimed pair keeps its (frozen) hash key, so it is found by the hash walk as before.
//! A slot is freed only with its pair's hash key (idle, or its cgroup gone).
//!
//! Ordering: a claim zeroes the count and writes the cgroup before the syscall number, and
//! a slot is free (never matched) until both match, so the kernel never counts a pair into
//! a slot meant for another; freeing writes the number first.
use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{fence, Ordering},
};

use aya::maps::MapData;
use gimbal_common::{count_slot, CountSlot, SyscallKey, COUNT_SLOTS_PER_CPU, FREE_SLOT_NR};

/// Syscalls per read (one tick) at which a pair gets a slot: below this the hash lookup
/// it saves costs nothing worth a slot another pair could use.
pub const PROMOTE_AT: u64 = 1_000;

pub struct CountSlots {
    /// The whole array, `cpus * COUNT_SLOTS_PER_CPU` slots.
    base: NonNull<CountSlot>,
    len: usize,
    cpus: usize,
    /// Claimed slots and their pairs.
    claimed: HashMap<SyscallKey, u32>,
    taken: Vec<bool>,
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is owned by this value and only reached through it.
unsafe impl Send for CountSlots {}

impl CountSlots {
    /// Maps `map` (SYSCALL_COUNT_SLOTS, sized `cpus * COUNT_SLOTS_PER_CPU` by the loader)
    /// and marks every slot free.
    pub fn new(map: MapData, cpus: usize) -> std::io::Result<Self> {
        let len = cpus * COUNT_SLOTS_PER_CPU as usize;
        let bytes = len * size_of::<CountSlot>();
        // SAFETY: a shared mapping of the map's own descriptor, as long as the array
        // (the kernel refuses a longer one); unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<CountSlot>()).expect("mmap returned null");
        let slots = Self {
            base,
            len,
            cpus,
            claimed: HashMap::new(),
            taken: vec![false; COUNT_SLOTS_PER_CPU as usize],
            _map: map,
        };
        for s in 0..COUNT_SLOTS_PER_CPU {
            slots.free(s);
        }
        Ok(slots)
    }

    fn slot(&self, cpu: usize, s: u32) -> *mut CountSlot {
        let i = cpu * COUNT_SLOTS_PER_CPU as usize + s as usize;
        assert!(i < self.len);
        // SAFETY: within the mapping (checked above).
        unsafe { self.base.as_ptr().add(i) }
    }

    /// The pair's count in its slots, summed over CPUs; 0 if it has none.
    pub fn count(&self, key: &SyscallKey) -> u64 {
        let Some(&s) = self.claimed.get(key) else {
            return 0;
        };
        (0..self.cpus)
            // SAFETY: an aligned u64 of the mapping; the kernel adds to it concurrently,
            // so it is read whole (volatile), never cached.
            .map(|cpu| unsafe { std::ptr::addr_of!((*self.slot(cpu, s)).count).read_volatile() })
            .fold(0, u64::wrapping_add)
    }

    /// Claims a free slot of the pair's two; false when both are taken (it stays in the
    /// hash) or it has one already.
    pub fn claim(&mut self, key: SyscallKey) -> bool {
        if self.claimed.contains_key(&key) {
            return false;
        }
        let first = count_slot(key.cgroup_id, key.nr);
        let Some(s) = [first, first ^ 1]
            .into_iter()
            .find(|&s| !self.taken[s as usize])
        else {
            return false;
        };
        for cpu in 0..self.cpus {
            let p = self.slot(cpu, s);
            // SAFETY: fields of a slot of the mapping that no kernel program matches (its
            // number is FREE_SLOT_NR); the number goes last, after a fence.
            unsafe {
                std::ptr::addr_of_mut!((*p).count).write_volatile(0);
                std::ptr::addr_of_mut!((*p).cgroup_id).write_volatile(key.cgroup_id);
                fence(Ordering::Release);
                std::ptr::addr_of_mut!((*p).nr).write_volatile(key.nr);
            }
        }
        self.taken[s as usize] = true;
        self.claimed.insert(key, s);
        true
    }

    /// Frees the pair's slot (its hash key is being deleted); its count goes with it.
    pub fn release(&mut self, key: &SyscallKey) {
        if let Some(s) = self.claimed.remove(key) {
            self.free(s);
            self.taken[s as usize] = false;
        }
    }

    fn free(&self, s: u32) {
        for cpu in 0..self.cpus {
            let p = self.slot(cpu, s);
            // SAFETY: fields of a slot of the mapping; the number first, so the kernel
            // stops matching before anything else changes.
            unsafe {
                std::ptr::addr_of_mut!((*p).nr).write_volatile(FREE_SLOT_NR);
                fence(Ordering::Release);
                std::ptr::addr_of_mut!((*p).cgroup_id).write_volatile(0);
                std::ptr::addr_of_mut!((*p).count).write_volatile(0);
            }
        }
    }

    /// Slots claimed, for gimbal_syscall_count_slots_used.
    pub fn used(&self) -> usize {
        self.claimed.len()
    }
}

impl Drop for CountSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, with its length; nothing points into it now.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len * size_of::<CountSlot>()) };
    }
}
