//! fsfilter-minifilter: the Filter Manager backend.
//!
//! Runs any [`fsfilter::Filter`] as a minifilter: the const registration becomes static
//! `FLT_OPERATION_REGISTRATION` and `FLT_REGISTRATION` tables (version 0x0203), the callbacks are
//! `extern "system"` trampolines that build the model's views and map its outcomes to
//! `FLT_PREOP_*` / `FLT_POSTOP_*`, and the driver's state lives in pool memory reached through the
//! image global, instance contexts and section contexts, so several drivers built from the same
//! code can run side by side in one simulator.
//!
//! A sample's driver crate is one line: `fsfilter_minifilter::driver!(passthrough::Passthrough);`.

#![no_std]

mod callbacks;
mod contexts;
pub mod entry;
mod messages;
mod names;
mod services;
mod state;
pub mod tables;
mod view;

pub use entry::driver_entry;
pub use fsfilter;

// Host tests run the backend against the simulator's kernel exports.
pub use fsfilter_kernel;
#[cfg(test)]
use fsfilter_sim as _;

/// What this backend reports about itself, for the lab and `docs/semantics.md`.
pub mod capabilities;

/// Defines the driver's entry points for a filter type:
///
/// - on `x86_64-pc-windows-msvc`, `DriverEntry`, the symbol the linker's `/ENTRY` names;
/// - everywhere, `pub const ENTRY`, the same entry point for the simulator's loader.
///
/// ```text
/// fsfilter_minifilter::driver!(passthrough::Passthrough);
/// ```
#[macro_export]
macro_rules! driver {
    ($filter:ty) => {
        $crate::fsfilter_kernel::define_driver_entry!($crate::driver_entry::<$filter>);
    };
}
