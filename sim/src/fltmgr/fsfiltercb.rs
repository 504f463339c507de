//! The Filter Manager's FsFilter callbacks (docs/simulator.md, "FsFilter callbacks"): it
//! registers them for its driver with `FsRtlRegisterFileSystemFilterCallbacks`, as a legacy filter
//! would, and on one of its volume frame devices turns an FsFilter acquire or release (for
//! section synchronization, a flush or the modified-page writer) into the operation of the same
//! code (`IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION`, `IRP_MJ_ACQUIRE_FOR_MOD_WRITE`, ...), with
//! `FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION` and FsRtl's parameters, run through the frame's
//! instances: the pre callbacks in its own pre routine, the post callbacks in its own post
//! routine, with the operation's status, in the same thread.
//!
//! A minifilter that completes the operation in its pre callback (`FLT_PREOP_COMPLETE`) ends it
//! there: the post callbacks of the instances above run at once, and the Filter Manager answers
//! the status, a failure failing the acquire (and what it was for), a success being
//! `STATUS_FSFILTER_OP_COMPLETED_SUCCESSFULLY` (a choice: the file system's acquire is skipped).

use std::ffi::c_void;

use fsfilter::{MajorFunction, OperationKind, Status};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_PARAMETERS;
use windows_sys::Wdk::Storage::FileSystem::{FS_FILTER_CALLBACK_DATA, FS_FILTER_CALLBACKS};
use windows_sys::Win32::Foundation::NTSTATUS;

use super::dispatch::PreEnd;
use super::fastio::{At, build_irpless_op};
use super::{DevKind, FvId};
use crate::kernel;

/// The table the Filter Manager registers: the routines of the six operations FsRtl raises
/// (section synchronization, the cache manager's flush, the modified-page writer); not the
/// newer query open, which the simulator does not raise.
const CALLBACKS: FS_FILTER_CALLBACKS = FS_FILTER_CALLBACKS {
    SizeOfFsFilterCallbacks: size_of::<FS_FILTER_CALLBACKS>() as u32,
    Reserved: 0,
    PreAcquireForSectionSynchronization: Some(flt_pre_fs_filter),
    PostAcquireForSectionSynchronization: Some(flt_post_fs_filter),
    PreReleaseForSectionSynchronization: Some(flt_pre_fs_filter),
    PostReleaseForSectionSynchronization: Some(flt_post_fs_filter),
    PreAcquireForCcFlush: Some(flt_pre_fs_filter),
    PostAcquireForCcFlush: Some(flt_post_fs_filter),
    PreReleaseForCcFlush: Some(flt_pre_fs_filter),
    PostReleaseForCcFlush: Some(flt_post_fs_filter),
    PreAcquireForModifiedPageWriter: Some(flt_pre_fs_filter),
    PostAcquireForModifiedPageWriter: Some(flt_post_fs_filter),
    PreReleaseForModifiedPageWriter: Some(flt_pre_fs_filter),
    PostReleaseForModifiedPageWriter: Some(flt_post_fs_filter),
    PreQueryOpen: None,
    PostQueryOpen: None,
};

/// Registers the Filter Manager's FsFilter callbacks for its driver (its `DriverEntry`).
///
/// # Safety
/// `driver` is the Filter Manager's driver object.
pub unsafe fn register(driver: *const DRIVER_OBJECT) -> Status {
    let callbacks = CALLBACKS;
    // SAFETY: our driver object and a table the routine copies.
    Status(unsafe {
        crate::exports::fsrtl::FsRtlRegisterFileSystemFilterCallbacks(driver, &callbacks)
    })
}

/// The operation's key, carried as the completion context (keys start at zero, so one more).
fn context_of(key: u64) -> *mut c_void {
    (key as usize).wrapping_add(1) as *mut c_void
}

/// The pre routine of every operation: the pre callbacks of the frame's instances.
unsafe extern "system" fn flt_pre_fs_filter(
    data: *const FS_FILTER_CALLBACK_DATA,
    completion: *mut *mut c_void,
) -> NTSTATUS {
    // SAFETY: FsRtl's callback data, valid for the call.
    let Some(d) = (unsafe { data.as_ref() }) else { return Status::SUCCESS.0 };
    // SAFETY: FsRtl's out parameter (non-null: we register a post routine).
    if let Some(out) = unsafe { completion.as_mut() } {
        *out = std::ptr::null_mut();
    }
    let Some(ext) = super::ext_of(d.DeviceObject) else { return Status::SUCCESS.0 };
    if ext.kind != DevKind::Volume as u8 {
        return Status::SUCCESS.0;
    }
    let at = At { device: d.DeviceObject, frame: ext.frame, v: FvId(ext.volume), lower: ext.lower };
    let major = d.Operation;
    let kind = OperationKind::FsFilter;
    let built = kernel::with(|k| {
        build_irpless_op(k, at, d.FileObject, false, kind, |iopb| {
            iopb.MajorFunction = major;
            copy_parameters(d, &mut iopb.Parameters);
        })
    });
    let Some(key) = built else { return Status::SUCCESS.0 };
    match super::dispatch::fast_pre(key) {
        PreEnd::Complete => {
            // Completed by an instance: the instances above get their posts now, and FsRtl
            // hears the status (this routine's post then has nothing to do).
            let last = super::dispatch::fast_post(key);
            // SAFETY: the status member.
            let s = last.map_or(Status::SUCCESS, |l| Status(unsafe { l.Anonymous.Status }));
            // A release cannot fail: whatever a minifilter completed it with (reported against
            // it already), FsRtl hears a success, and has no Filter Manager to report.
            let release = MajorFunction::from_code(major).cannot_fail();
            if s.is_success() || release {
                Status::FSFILTER_OP_COMPLETED_SUCCESSFULLY.0
            } else {
                s.0
            }
        }
        // Every pre ran (a pend or a fast-I/O refusal is reported and ignored by the walk).
        PreEnd::Down | PreEnd::Disallow | PreEnd::Pended => {
            // SAFETY: as above.
            if let Some(out) = unsafe { completion.as_mut() } {
                *out = context_of(key);
            }
            Status::SUCCESS.0
        }
    }
}

/// The operation's parameters, from FsRtl's callback data to the Filter Manager's.
fn copy_parameters(d: &FS_FILTER_CALLBACK_DATA, to: &mut FLT_PARAMETERS) {
    let major = MajorFunction::from_code(d.Operation);
    match major {
        MajorFunction::AcquireForSectionSynchronization => {
            // SAFETY: the member of a section-synchronization acquire.
            let from = unsafe { d.Parameters.AcquireForSectionSynchronization };
            // SAFETY: the member of IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION.
            let a = unsafe { &mut to.AcquireForSectionSynchronization };
            a.SyncType = from.SyncType;
            a.PageProtection = from.PageProtection;
            a.OutputInformation = from.OutputInformation;
        }
        MajorFunction::AcquireForModWrite => {
            // SAFETY: the member of a modified-page writer's acquire.
            let from = unsafe { d.Parameters.AcquireForModifiedPageWriter };
            // SAFETY: the member of IRP_MJ_ACQUIRE_FOR_MOD_WRITE.
            let a = unsafe { &mut to.AcquireForModifiedPageWriter };
            a.EndingOffset = from.EndingOffset;
            a.ResourceToRelease = from.ResourceToRelease;
        }
        MajorFunction::ReleaseForModWrite => {
            // SAFETY: the member of a modified-page writer's release.
            let from = unsafe { d.Parameters.ReleaseForModifiedPageWriter };
            to.ReleaseForModifiedPageWriter.ResourceToRelease = from.ResourceToRelease;
        }
        // The others have no parameters.
        _ => {}
    }
}

/// The post routine of every operation: the post callbacks, with the operation's status.
unsafe extern "system" fn flt_post_fs_filter(
    _data: *const FS_FILTER_CALLBACK_DATA,
    status: NTSTATUS,
    completion: *const c_void,
) {
    if completion.is_null() {
        return;
    }
    let key = (completion as usize).wrapping_sub(1) as u64;
    // SAFETY: all-zero is a valid status block.
    let mut iosb: windows_sys::Win32::System::IO::IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    iosb.Anonymous.Status = status;
    super::dispatch::fast_result(key, iosb);
    let _ = super::dispatch::fast_post(key);
}
