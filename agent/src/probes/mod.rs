//! The only stage that touches aya: loads the kernel programs, attaches them, and reads their
//! maps into plain `Sample`s and exit events.
mod exits;
mod load;
mod offsets;
mod reader;

pub use exits::{ExitReader, ExitRecord};
pub use load::{LoadOptions, Probe, ProbeStatus, Probes};
pub use reader::MapReader;

/// Errors of the probe stage, each naming the map, program or file involved.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("kernel type information: {0}")]
    Btf(#[from] crate::btf::BtfError),
    #[error("tracefs: {0}")]
    Tracefs(#[from] crate::tracefs::TracefsError),
    #[error("cgroups: {0}")]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("reading CPU count: {0}")]
    Cpus(#[source] std::io::Error),
}
