//! `cargo xtask bench`'s floors: attaches a raw-tracepoint pair from the agent's own object
//! (`empty`, the default, or `clock`), or only the empty program on `sys_exit` (`exit`: what
//! any per-syscall count pays before it does anything), or an empty fexit on the 64-bit
//! syscall dispatcher (`fexit`: the same floor without a syscall tracepoint), and holds it
//! until SIGTERM or SIGINT. Prints "attached" once it is in place.
use aya::{
    programs::{FExit, RawTracePoint},
    Btf, EbpfLoader,
};
use gimbal_common::programs::{
    CLOCK_SYS_ENTER, CLOCK_SYS_EXIT, FLOOR_SYS_ENTER, FLOOR_SYS_EXIT, FLOOR_X64_SYS_EXIT,
};

fn main() {
    let mut ebpf = EbpfLoader::new()
        .allow_unsupported_maps()
        .load(gimbal::EBPF_OBJECT)
        .expect("load the agent's eBPF object (needs root)");
    let programs: &[(&str, &str)] = match std::env::args().nth(1).as_deref() {
        None | Some("empty") => &[(FLOOR_SYS_EXIT, "sys_exit"), (FLOOR_SYS_ENTER, "sys_enter")],
        Some("clock") => &[(CLOCK_SYS_EXIT, "sys_exit"), (CLOCK_SYS_ENTER, "sys_enter")],
        Some("exit") => &[(FLOOR_SYS_EXIT, "sys_exit")],
        Some("fexit") => &[],
        Some(other) => panic!("unknown floor {other:?}: use empty, clock, exit or fexit"),
    };
    if programs.is_empty() {
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let p: &mut FExit = ebpf
            .program_mut(FLOOR_X64_SYS_EXIT)
            .expect(FLOOR_X64_SYS_EXIT)
            .try_into()
            .expect("fexit");
        p.load("x64_sys_call", &btf)
            .expect("load fexit on x64_sys_call (refused on kernels that lock down fentry)");
        p.attach().expect("attach fexit on x64_sys_call");
    }
    for &(name, tp) in programs {
        let p: &mut RawTracePoint = ebpf
            .program_mut(name)
            .expect(name)
            .try_into()
            .expect("raw tracepoint");
        p.load().expect("load");
        p.attach(tp).expect("attach");
    }
    println!("attached");
    // SAFETY: plain signal mask manipulation and a blocking sigwait on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
    drop(ebpf);
}
