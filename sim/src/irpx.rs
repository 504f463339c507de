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

/// Whether an operation is synchronous from the I/O manager's point of view, as
/// `IoIsOperationSynchronous` and `FltIsOperationSynchronous` decide it from their reference
/// pages: asynchronous paging I/O (`IRP_PAGING_IO` without `IRP_SYNCHRONOUS_PAGING_IO`) is
/// asynchronous whatever else holds; synchronous paging I/O (`IRP_SYNCHRONOUS_PAGING_IO`, with
/// or without `IRP_PAGING_IO`, as ReactOS tests it) is synchronous; otherwise the
/// operation is synchronous when its file object was opened for synchronous I/O
/// (`FO_SYNCHRONOUS_IO`), when the IRP carries `IRP_SYNCHRONOUS_API`, or when it is an I/O or
/// file-system control request whose code is `METHOD_BUFFERED` (both pages' note).
/// `file_flags` is the file object's `Flags` (None without one); `control_code` the IOCTL or
/// FSCTL code of a control request (`IRP_MN_USER_FS_REQUEST` or `IRP_MN_KERNEL_CALL` for an
/// FSCTL), None otherwise.
pub fn synchronous(irp_flags: u32, file_flags: Option<u32>, control_code: Option<u32>) -> bool {
    use crate::nt::{fo, irp_flags as f, method};
    if irp_flags & f::PAGING_IO != 0 {
        return irp_flags & f::SYNCHRONOUS_PAGING_IO != 0;
    }
    file_flags.is_some_and(|ff| ff & fo::SYNCHRONOUS_IO != 0)
        || irp_flags & f::SYNCHRONOUS_API != 0
        // Synchronous paging I/O is the flag itself, as ReactOS's `IoIsOperationSynchronous` tests
        // it (until December 7 it counted only with `IRP_PAGING_IO`).
        || irp_flags & f::SYNCHRONOUS_PAGING_IO != 0
        || control_code.is_some_and(|c| c & 3 == method::BUFFERED)
}

/// The IOCTL or FSCTL code [`synchronous`] takes for an operation: an `IRP_MJ_DEVICE_CONTROL`'s
/// or `IRP_MJ_INTERNAL_DEVICE_CONTROL`'s, and an `IRP_MJ_FILE_SYSTEM_CONTROL`'s when its minor
/// function is `IRP_MN_USER_FS_REQUEST` or `IRP_MN_KERNEL_CALL` (the other minors have no code).
/// `code` is the 32-bit value at the code's place in the parameters.
pub fn control_code(major: u8, minor: u8, code: u32) -> Option<u32> {
    use crate::nt::{mj, mn_fsctl};
    match major {
        mj::DEVICE_CONTROL | mj::INTERNAL_DEVICE_CONTROL => Some(code),
        mj::FILE_SYSTEM_CONTROL
            if minor == mn_fsctl::USER_FS_REQUEST || minor == mn_fsctl::KERNEL_CALL =>
        {
            Some(code)
        }
        _ => None,
    }
}

/// `IoIsOperationSynchronous` of an IRP at its current stack location ([`synchronous`]).
///
/// # Safety
/// `irp` must be a live IRP with a current stack location.
pub unsafe fn is_operation_synchronous(irp: *mut IRP) -> bool {
    // SAFETY: the caller's live IRP.
    let flags = unsafe { header(irp) }.Flags;
    // SAFETY: its current location.
    let sl = unsafe { current(irp) };
    // SAFETY: the file object of a live IRP's location, when set, is live.
    let file_flags = unsafe { sl.FileObject.as_ref() }.map(|f| f.Flags);
    // SAFETY: the FSCTL member read as a plain number (the union is larger; an IOCTL's code is
    // at the same place); used only for the control majors.
    let code = unsafe {
        fsfilter_kernel::params::io::<fsfilter_kernel::params::IoFileSystemControl>(&sl.Parameters)
    }
    .FsControlCode;
    synchronous(flags, file_flags, control_code(sl.MajorFunction, sl.MinorFunction, code))
}

#[cfg(test)]
mod tests {
    use super::{control_code, synchronous};
    use crate::nt::{fo, irp_flags as f, mj, mn_fsctl};

    #[test]
    fn synchronous_follows_the_reference_pages_list() {
        let sync_fo = Some(fo::SYNCHRONOUS_IO);
        // Asynchronous paging I/O is asynchronous even on a synchronous file object with
        // IRP_SYNCHRONOUS_API; synchronous paging I/O is synchronous on any.
        assert!(!synchronous(f::PAGING_IO | f::SYNCHRONOUS_API, sync_fo, None));
        assert!(synchronous(f::PAGING_IO | f::SYNCHRONOUS_PAGING_IO, Some(0), None));
        // Otherwise the file object or the flag.
        assert!(synchronous(0, sync_fo, None));
        assert!(synchronous(f::SYNCHRONOUS_API, Some(0), None));
        assert!(!synchronous(f::READ_OPERATION, Some(0), None));
        assert!(!synchronous(0, None, None));
        // IRP_SYNCHRONOUS_PAGING_IO requests synchronous paging I/O even without IRP_PAGING_IO
        // (ReactOS's IoIsOperationSynchronous tests the flag alone; only asynchronous paging I/O,
        // IRP_PAGING_IO without it, overrides).
        assert!(synchronous(f::SYNCHRONOUS_PAGING_IO, Some(0), None));
        assert!(synchronous(f::SYNCHRONOUS_PAGING_IO, None, None));
        // A METHOD_BUFFERED control code is synchronous on an asynchronous file object; the
        // other methods are not.
        assert!(synchronous(0, Some(0), Some(0x0009_0028)));
        assert!(!synchronous(0, Some(0), Some(0x0009_0003)));
    }

    #[test]
    fn only_control_requests_have_a_code() {
        assert_eq!(control_code(mj::DEVICE_CONTROL, 0, 7), Some(7));
        assert_eq!(control_code(mj::INTERNAL_DEVICE_CONTROL, 0, 7), Some(7));
        assert_eq!(control_code(mj::FILE_SYSTEM_CONTROL, mn_fsctl::USER_FS_REQUEST, 7), Some(7));
        assert_eq!(control_code(mj::FILE_SYSTEM_CONTROL, mn_fsctl::KERNEL_CALL, 7), Some(7));
        // A mount's parameters hold pointers where the code would be.
        assert_eq!(control_code(mj::FILE_SYSTEM_CONTROL, mn_fsctl::MOUNT_VOLUME, 7), None);
        assert_eq!(control_code(mj::READ, 0, 7), None);
    }
}
