//! IRP access for the simulator's own drivers (file systems, the storage driver, the recognizer):
//! the few unsafe reads and writes of the structures, in one place, so the drivers work on plain
//! values.

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, IO_STACK_LOCATION, IRP, MDL};
use windows_sys::Win32::Foundation::NTSTATUS;

use crate::mem::obj;

/// `STATUS_PENDING` as a dispatch routine returns it.
pub const STATUS_PENDING: NTSTATUS = Status::PENDING.0;

/// The current stack location of an IRP the caller's driver owns.
///
/// # Safety
/// `irp` must be a live IRP in the caller's dispatch routine.
pub unsafe fn current<'a>(irp: *mut IRP) -> &'a mut IO_STACK_LOCATION {
    // SAFETY: the caller owns the live IRP.
    let sl = unsafe { fsfilter_kernel::irp::IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: the current location of a live IRP.
    unsafe { obj(sl) }
}

/// The next lower stack location.
///
/// # Safety
/// As [`current`], and a lower location must exist.
pub unsafe fn next<'a>(irp: *mut IRP) -> &'a mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees a live IRP with a lower location.
    let sl = unsafe { fsfilter_kernel::irp::IoGetNextIrpStackLocation(irp) };
    // SAFETY: a location of the live IRP.
    unsafe { obj(sl) }
}

/// The IRP header.
///
/// # Safety
/// `irp` must be a live IRP the caller owns.
pub unsafe fn header<'a>(irp: *mut IRP) -> &'a mut IRP {
    // SAFETY: the caller's live IRP.
    unsafe { obj(irp) }
}

/// Sets the status block and completes the IRP; returns the status for the dispatch routine.
///
/// # Safety
/// `irp` must be a live IRP the caller owns and has not completed.
pub unsafe fn complete(irp: *mut IRP, status: Status, information: usize) -> NTSTATUS {
    // SAFETY: the caller's live IRP.
    unsafe { fsfilter_kernel::irp::set_irp_status(irp, status.0, information) };
    crate::irp::complete_request(irp);
    status.0
}

/// `Irp->AssociatedIrp.SystemBuffer`.
///
/// # Safety
/// `irp` must be a live IRP.
pub unsafe fn system_buffer(irp: *mut IRP) -> *mut u8 {
    // SAFETY: the caller's live IRP.
    let i = unsafe { &*irp };
    // SAFETY: the union's pointer member is the one buffered requests use.
    unsafe { i.AssociatedIrp.SystemBuffer }.cast()
}

/// The buffer of a read, write or directory query: the MDL's system address when the IRP has an
/// MDL, else `UserBuffer`.
///
/// # Safety
/// `irp` must be a live IRP.
pub unsafe fn data_buffer(irp: *mut IRP) -> *mut u8 {
    // SAFETY: the caller's live IRP.
    let i = unsafe { &*irp };
    if i.MdlAddress.is_null() {
        return i.UserBuffer.cast();
    }
    // SAFETY: an MDL the I/O manager (or a filter) attached to the IRP.
    unsafe { fsfilter_kernel::mdl::system_address(i.MdlAddress) }.cast()
}

/// A mutable byte slice over a driver-supplied buffer.
///
/// # Safety
/// `ptr` must be null (then `len` is treated as 0) or valid for `len` writable bytes for `'a`.
pub unsafe fn bytes_mut<'a>(ptr: *mut u8, len: usize) -> &'a mut [u8] {
    if ptr.is_null() || len == 0 {
        return &mut [];
    }
    // SAFETY: the caller's guarantee.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// A byte slice over a driver-supplied buffer.
///
/// # Safety
/// `ptr` must be null (then `len` is treated as 0) or valid for `len` readable bytes for `'a`.
pub unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller's guarantee.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// The UTF-16 units of a `UNICODE_STRING`.
///
/// # Safety
/// `s` must be null or a valid `UNICODE_STRING` whose buffer holds `Length` bytes.
pub unsafe fn units<'a>(s: *const windows_sys::Win32::Foundation::UNICODE_STRING) -> &'a [u16] {
    // SAFETY: the caller guarantees null or valid.
    let Some(s) = (unsafe { s.as_ref() }) else { return &[] };
    if s.Buffer.is_null() || s.Length == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees Length bytes at Buffer.
    unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length / 2)) }
}

/// A file object's fields.
///
/// # Safety
/// `fo` must be a live file object.
pub unsafe fn file<'a>(fo: *mut FILE_OBJECT) -> &'a mut FILE_OBJECT {
    // SAFETY: the caller's live file object.
    unsafe { obj(fo) }
}

/// A device object's fields.
///
/// # Safety
/// `d` must be a live device object.
pub unsafe fn device<'a>(d: *const DEVICE_OBJECT) -> &'a mut DEVICE_OBJECT {
    // SAFETY: the caller's live device object.
    unsafe { obj(d) }
}

/// Writes `src` into a caller buffer of `len` bytes, as much as fits; returns the count.
///
/// # Safety
/// `dst` must be null or valid for `len` writable bytes.
pub unsafe fn copy_out(dst: *mut u8, len: usize, src: &[u8]) -> usize {
    let n = src.len().min(len);
    if n > 0 && !dst.is_null() {
        // SAFETY: the caller guarantees `len` >= n writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, n) };
    }
    n
}

/// An MDL's mapped address (for the storage driver's reads).
///
/// # Safety
/// `mdl` must be a valid MDL.
pub unsafe fn mdl_va(mdl: *mut MDL) -> *mut c_void {
    // SAFETY: the caller's valid MDL.
    unsafe { fsfilter_kernel::mdl::system_address(mdl) }
}
