//! The only stage that touches aya: loads the kernel programs, attaches them, and reads their
//! maps into plain `Sample`s and exit events.
mod count_slots;
mod exits;
mod idle;
mod load;
mod offsets;
mod program_stats;
mod reader;
mod syscall_hook;
mod timing;

pub use exits::{ExitReader, ExitRecord};
pub use load::{LoadOptions, Probe, ProbeStatus, Probes};
pub use program_stats::ProgramStats;
pub use reader::MapReader;
pub use syscall_hook::SyscallHook;
pub use timing::TimingPlan;

/// Errors of the probe stage, each naming the map, program or file involved.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading the eBPF object: {}", chain(.0.as_ref()))]
    Load(Box<aya::EbpfError>),
    #[error("map {name}: {}", chain(error.as_ref()))]
    Map {
        name: &'static str,
        error: Box<aya::maps::MapError>,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program {name}: {}", chain(error.as_ref()))]
    Program {
        name: &'static str,
        error: Box<aya::programs::ProgramError>,
    },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("kernel type information: {0}")]
    Btf(crate::host::btf::BtfError),
    #[error("tracefs: {0}")]
    Tracefs(crate::host::tracefs::TracefsError),
    #[error("cgroups: {0}")]
    Cgroup(crate::host::cgroupfs::CgroupError),
    #[error("reading CPU count: {0}")]
    Cpus(std::io::Error),
}

/// An aya error with its causes ("`perf_event_open` failed: Operation not permitted"):
/// the errno is what tells an operator which privilege or sandbox rule is missing.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

impl From<crate::host::btf::BtfError> for ProbeError {
    fn from(e: crate::host::btf::BtfError) -> Self {
        Self::Btf(e)
    }
}

impl From<crate::host::tracefs::TracefsError> for ProbeError {
    fn from(e: crate::host::tracefs::TracefsError) -> Self {
        Self::Tracefs(e)
    }
}

impl From<crate::host::cgroupfs::CgroupError> for ProbeError {
    fn from(e: crate::host::cgroupfs::CgroupError) -> Self {
        Self::Cgroup(e)
    }
}
