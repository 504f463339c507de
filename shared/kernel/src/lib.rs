//! fsfilter-kernel: the one wrapper around windows-sys for kernel mode.
//!
//! - [`sys`] re-exports windows-sys; [`ntos`] corrects what its metadata gets wrong for kernel mode
//!   (exports attributed to ntdll.dll, callback typedefs that lost their parameters) and declares
//!   what it lacks.
//! - [`irp`] supplies the WDK's inline IRP macros as functions; [`irql`] reads the IRQL;
//!   [`params`] reads the parameter unions whose x64 layout windows-sys gets wrong.
//! - [`crt`] defines the symbols the compiler expects on the Windows target; [`runtime`] the panic
//!   handler that bugchecks with [`runtime::FSFILTER_BUGCHECK`].
//! - [`log`], [`trace`] and [`image`] are the hooks that behave differently on Windows and in the
//!   simulator: `DbgPrintEx` and a per-image global on Windows, the simulator's exports elsewhere.
//! - [`pool`], [`sync`], [`unicode`] and [`registry`] are small safe building blocks for the
//!   backends; [`loadbuf`] allocates and frees the filter's load buffers; [`usercopy`] copies
//!   to and from raw user buffers under an SEH scope.
//!
//! On `x86_64-pc-windows-msvc` every kernel function resolves to `ntoskrnl.exe`, `fltmgr.sys` or
//! `hal.dll`. On any other target the same declarations are ordinary external symbols that
//! `fsfilter-sim` defines: the link seam of design.md.

#![no_std]

pub use windows_sys as sys;

pub mod buffer;
pub mod constants;
pub mod context;
pub mod crt;
pub mod datascan;
pub mod deferred;
pub mod image;
pub mod irp;
pub mod irql;
pub mod loadbuf;
pub mod log;
pub mod mdl;
pub mod ntos;
pub mod params;
pub mod pending;
pub mod pool;
pub mod registry;
pub mod runtime;
pub mod sync;
pub mod timer;
pub mod trace;
pub mod unicode;
pub mod usercopy;

pub use fsfilter;

/// Defines a driver's entry points around a backend's generic entry function; each backend's
/// `driver!` macro expands to this with its own `driver_entry::<F>`:
///
/// - `pub unsafe extern "system" fn driver_entry`, the entry point for the simulator's loader;
/// - `pub const ENTRY`, the same as a value;
/// - on `x86_64-pc-windows-msvc`, `DriverEntry`, the symbol the linker's `/ENTRY` names.
#[macro_export]
macro_rules! define_driver_entry {
    ($entry:path) => {
        /// The driver's entry point for the simulator (and what `DriverEntry` calls on Windows).
        ///
        /// # Safety
        /// Called once per image by the loader, at `PASSIVE_LEVEL`, with valid arguments.
        pub unsafe extern "system" fn driver_entry(
            driver: *const $crate::sys::Wdk::Foundation::DRIVER_OBJECT,
            registry_path: *const $crate::sys::Win32::Foundation::UNICODE_STRING,
        ) -> $crate::sys::Win32::Foundation::NTSTATUS {
            // SAFETY: forwarded from the loader's call.
            unsafe { $entry(driver, registry_path) }
        }

        /// The entry point as a value, for the simulator's loader.
        pub const ENTRY: unsafe extern "system" fn(
            *const $crate::sys::Wdk::Foundation::DRIVER_OBJECT,
            *const $crate::sys::Win32::Foundation::UNICODE_STRING,
        ) -> $crate::sys::Win32::Foundation::NTSTATUS = driver_entry;

        /// `DriverEntry`, on the driver target.
        ///
        /// # Safety
        /// Called once by the I/O manager.
        #[cfg(target_os = "windows")]
        #[unsafe(no_mangle)]
        pub unsafe extern "system" fn DriverEntry(
            driver: *const $crate::sys::Wdk::Foundation::DRIVER_OBJECT,
            registry_path: *const $crate::sys::Win32::Foundation::UNICODE_STRING,
        ) -> $crate::sys::Win32::Foundation::NTSTATUS {
            // SAFETY: forwarded from the I/O manager's call.
            unsafe { driver_entry(driver, registry_path) }
        }
    };
}
