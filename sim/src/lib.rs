//! fsfilter-sim: a deterministic simulated NT kernel.
//!
//! It defines the kernel exports that fsfilter's backends import (`IoCreateDevice`,
//! `IofCallDriver`, `FltRegisterFilter`, ...) as `#[no_mangle] extern "system"` functions over the
//! real windows-sys structures, so the backends' own code, unsafe IRP handling included, runs
//! unchanged on any host. It is an ABI-level model of the behaviour in facts.md, not a mock: device
//! stacks, IRPs with stack locations and completion routines, file systems, a registry, a loader,
//! and a Filter Manager that is itself a legacy filter.
//!
//! One [`Machine`] per thread. A host binary must mention the crate (`use fsfilter_sim as _;`) or
//! the linker drops it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "host-side simulator: a broken invariant is a simulator bug and should stop the test"
)]

pub mod cancel;
pub mod events;
pub mod exports;
pub mod fastmutex;
pub mod faults;
pub mod files;
pub mod fltmgr;
pub mod folock;
pub mod fs;
pub mod fsfilters;
pub mod fsreg;
pub mod ids;
pub mod inspect;
pub mod irp;
pub mod irpx;
pub mod kernel;
pub mod kmutex;
pub mod loader;
pub mod machine;
pub mod mem;
pub mod mount;
pub mod msgclient;
pub mod name;
pub mod nt;
pub mod objects;
pub mod perfo;
pub mod perstream;
pub mod pnp;
pub mod pool;
pub mod process;
pub mod rawirp;
pub mod registry;
pub mod reparse;
pub mod requests;
pub mod sched;
pub mod sections;
pub mod security;
pub mod storage;
pub mod syscalls;
pub mod volumes;

pub use events::{Callback, Event, EventKind, FltEvent, RequestRef, Rule};
pub use faults::{Fault, FaultKind};
pub use files::{DeviceHandle, Handle};
pub use fltmgr::ports::PortHandle;
pub use fltmgr::snapshot::{FrameSnapshot, SnapInstance, StackEntry};
pub use ids::VolumeId;
pub use inspect::DeviceEntry;
pub use loader::{
    DriverEntry, InstanceLayout, InstanceSpec, InstancesSpec, ServiceSpec, StartType, StopResult,
};
pub use machine::{Machine, MachineConfig, full_ea};
pub use msgclient::{MessageServer, Received};
pub use name::Name;
pub use process::ProcessId;
pub use rawirp::{RAW_BUFFER_LIMIT, RawBuffer, RawIrp, RawOp};
pub use registry::RegValue;
pub use requests::OverlappedResult;
pub use security::Caller;
pub use syscalls::{
    CreateOptions, IoMode, IoRequest, IoResult, IoStatusBlock, PageWriter, Reparsed,
};
pub use volumes::{FsKind, MountWhen, VolumeError, VolumeSpec};
