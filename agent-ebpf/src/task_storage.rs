//! A BTF-defined task-local storage map (BPF_MAP_TYPE_TASK_STORAGE), which aya-ebpf 0.2 does
//! not offer. Its lookups follow a pointer from the task itself: no hashing, no locks, and
//! the kernel frees a thread's slot when the thread dies, so it cannot fill up.
//!
//! The layout is the libbpf BTF map convention (`__uint(type, ..)` as pointers to arrays whose
//! length carries the value), the same one aya-ebpf's own `btf_maps` use.
use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::task_struct,
    helpers::generated::{bpf_get_current_task_btf, bpf_task_storage_get},
};

pub type TaskStruct = task_struct;

const BPF_MAP_TYPE_TASK_STORAGE: usize = 29;
const BPF_F_NO_PREALLOC: usize = 1;
const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC],
}

// SAFETY: the fields are placeholders the loader reads from BTF; never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    /// The current thread's slot if it has one.
    #[inline(always)]
    pub fn current_if_any(&self) -> Option<*mut T> {
        self.current(0)
    }

    /// `task`'s slot, created zeroed on first use. `task` must be a BTF task pointer the
    /// verifier trusts (a tp_btf argument).
    #[inline(always)]
    pub fn task_or_create(&self, task: *mut TaskStruct) -> Option<*mut T> {
        self.get(task, BPF_LOCAL_STORAGE_GET_F_CREATE)
    }

    #[inline(always)]
    fn current(&self, flags: u64) -> Option<*mut T> {
        // SAFETY: a helper without arguments; it returns a task pointer the verifier trusts.
        self.get(unsafe { bpf_get_current_task_btf() }, flags)
    }

    #[inline(always)]
    fn get(&self, task: *mut TaskStruct, flags: u64) -> Option<*mut T> {
        // SAFETY: the map pointer is this map; the verifier checks the task pointer.
        let p = unsafe {
            bpf_task_storage_get(
                ptr::from_ref(self).cast_mut().cast::<c_void>(),
                task,
                ptr::null_mut(),
                flags,
            )
        };
        (!p.is_null()).then_some(p.cast::<T>())
    }
}
