//! Small accessors over kernel structures, so that each unsafe step elsewhere is one operation
//! with its own justification.

use fsfilter::Filter;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IO_STACK_LOCATION, IRP};

use crate::state::DeviceExt;

/// The current stack location of an IRP.
///
/// # Safety
/// `irp` must be a live IRP whose current location is valid for `'a`.
pub(crate) unsafe fn location<'a>(irp: *mut IRP) -> &'a IO_STACK_LOCATION {
    // SAFETY: the caller guarantees a live IRP.
    let p = unsafe { fsfilter_kernel::irp::IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: the current location of a live IRP is valid.
    unsafe { &*p }
}

/// A device object.
///
/// # Safety
/// `device` must be a live device object for `'a`.
pub(crate) unsafe fn device<'a>(device: *const DEVICE_OBJECT) -> &'a DEVICE_OBJECT {
    // SAFETY: the caller guarantees a live device.
    unsafe { &*device }
}

/// The name of a device's driver (`\FileSystem\Ntfs`).
///
/// # Safety
/// `device` must be a live device object for `'a`.
pub(crate) unsafe fn driver_name<'a>(dev: *const DEVICE_OBJECT) -> &'a [u16] {
    // SAFETY: the caller guarantees a live device.
    let driver = unsafe { device(dev) }.DriverObject;
    // SAFETY: a live device's driver object lives longer than the device.
    let driver = unsafe { &*driver };
    // SAFETY: a driver object's name describes its buffer.
    unsafe { fsfilter_kernel::unicode::units(&driver.DriverName) }
}

/// The extension slot of one of our devices (not necessarily initialized yet).
///
/// # Safety
/// `dev` must be a live device of this driver, created with room for a `DeviceExt<F>`.
pub(crate) unsafe fn ext_slot<F: Filter>(dev: *const DEVICE_OBJECT) -> *mut DeviceExt<F> {
    // SAFETY: the caller guarantees a live device.
    unsafe { device(dev) }.DeviceExtension.cast::<DeviceExt<F>>()
}
