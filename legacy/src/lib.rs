//! fsfilter-legacy: the device-object backend.
//!
//! Runs any [`fsfilter::Filter`] as a legacy file-system filter: a small private filter manager
//! with one client. It attaches to file-system control devices from its
//! file-system registration routine (`IoRegisterFsRegistrationChangeMountAware`, synchronized with
//! mounts), to new volumes from the mount request's completion,
//! and to already-mounted volumes through `IoEnumerateDeviceObjectList` (facts.md §1.2–§1.5); it
//! emulates instance setup with the Filter Manager's flags, the skip flags, and pre/post pairing
//! through completion routines set with `IoSetCompletionRoutineEx`; it supplies a pass-through
//! fast-I/O table with `FastIoDetachDevice`; and it counts in-flight operations so that unload
//! drains them instead of hoping (facts.md §1.9).
//!
//! A sample's driver crate is one line: `fsfilter_legacy::driver!(passthrough::Passthrough);`.

#![no_std]

mod attach;
pub mod capabilities;
mod contexts;
mod dispatch;
mod entry;
mod fastio;
mod fsfilt;
mod messages;
mod names;
mod raw;
mod send;
mod services;
mod state;
mod view;

pub use entry::driver_entry;
pub use fsfilter;
pub use fsfilter_kernel;

// Host tests run the backend against the simulator's kernel exports.
#[cfg(test)]
use fsfilter_sim as _;

/// Defines the driver's entry points for a filter type (see `fsfilter_minifilter::driver!`).
#[macro_export]
macro_rules! driver {
    ($filter:ty) => {
        $crate::fsfilter_kernel::define_driver_entry!($crate::driver_entry::<$filter>);
    };
}
