//! fsfilter-legacy: the device-object backend (issue 6).
//!
//! This first version only defines the driver-entry glue so that sample drivers build for both
//! models; `DriverEntry` refuses to load with `STATUS_NOT_IMPLEMENTED` until the backend lands.

#![no_std]

pub use fsfilter;
pub use fsfilter_kernel;

use fsfilter::{Filter, Status};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

/// The `DriverEntry` of a legacy filter built from `F`.
///
/// # Safety
/// Called by the I/O manager (or the simulator's loader) as a driver's entry point.
pub unsafe fn driver_entry<F: Filter>(
    _driver: *const DRIVER_OBJECT,
    _registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    Status::NOT_IMPLEMENTED.0
}

/// Defines the driver's entry points for a filter type (see `fsfilter_minifilter::driver!`).
#[macro_export]
macro_rules! driver {
    ($filter:ty) => {
        /// The driver's entry point for the simulator (and what `DriverEntry` calls on Windows).
        ///
        /// # Safety
        /// Called once per image by the loader, at `PASSIVE_LEVEL`, with valid arguments.
        pub unsafe extern "system" fn driver_entry(
            driver: *const $crate::fsfilter_kernel::sys::Wdk::Foundation::DRIVER_OBJECT,
            registry_path: *const $crate::fsfilter_kernel::sys::Win32::Foundation::UNICODE_STRING,
        ) -> $crate::fsfilter_kernel::sys::Win32::Foundation::NTSTATUS {
            // SAFETY: forwarded from the loader's call.
            unsafe { $crate::driver_entry::<$filter>(driver, registry_path) }
        }

        /// The entry point as a value, for the simulator's loader.
        pub const ENTRY:
            unsafe extern "system" fn(
                *const $crate::fsfilter_kernel::sys::Wdk::Foundation::DRIVER_OBJECT,
                *const $crate::fsfilter_kernel::sys::Win32::Foundation::UNICODE_STRING,
            )
                -> $crate::fsfilter_kernel::sys::Win32::Foundation::NTSTATUS = driver_entry;

        /// `DriverEntry`, on the driver target.
        ///
        /// # Safety
        /// Called once by the I/O manager.
        #[cfg(target_os = "windows")]
        #[unsafe(no_mangle)]
        pub unsafe extern "system" fn DriverEntry(
            driver: *const $crate::fsfilter_kernel::sys::Wdk::Foundation::DRIVER_OBJECT,
            registry_path: *const $crate::fsfilter_kernel::sys::Win32::Foundation::UNICODE_STRING,
        ) -> $crate::fsfilter_kernel::sys::Win32::Foundation::NTSTATUS {
            // SAFETY: forwarded from the I/O manager's call.
            unsafe { driver_entry(driver, registry_path) }
        }
    };
}
