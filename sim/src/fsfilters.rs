//! FsFilter callbacks: `FsRtlRegisterFileSystemFilterCallbacks`, and the acquires and releases
//! the memory manager asks of a file's stack: for section synchronization when it creates a
//! section, for the modified-page writer and for a flush around their paging writes
//! (docs/simulator.md, "FsFilter callbacks").
//!
//! An operation walks the stack of the file object's device from the top down, calling the
//! pre-operation routine of every device whose driver registered one, then the post-operation
//! routines from the bottom up ([`perform`]). A pre routine that fails an acquire that may fail
//! stops the walk: nothing below it is called, the posts of the devices above it are called with
//! its status, and what the acquire was for is not done. `STATUS_FSFILTER_OP_COMPLETED_SUCCESSFULLY`
//! stops the walk as a success (WRK `FsFilterPerformCallbacks`, facts in docs/simulator.md).

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, ERESOURCE, FILE_OBJECT};
use windows_sys::Wdk::Storage::FileSystem::{
    FS_FILTER_CALLBACK_DATA, FS_FILTER_CALLBACKS, PFS_FILTER_CALLBACK,
    PFS_FILTER_COMPLETION_CALLBACK,
};

use crate::events::Rule;
use crate::ids::ImageId;
use crate::kernel;

/// `FS_FILTER_ACQUIRE_FOR_SECTION_SYNCHRONIZATION`.
pub const ACQUIRE_FOR_SECTION_SYNCHRONIZATION: u8 = 0xFF;
/// `FS_FILTER_RELEASE_FOR_SECTION_SYNCHRONIZATION`.
pub const RELEASE_FOR_SECTION_SYNCHRONIZATION: u8 = 0xFE;
/// `FS_FILTER_ACQUIRE_FOR_MOD_WRITE`.
pub const ACQUIRE_FOR_MOD_WRITE: u8 = 0xFD;
/// `FS_FILTER_RELEASE_FOR_MOD_WRITE`.
pub const RELEASE_FOR_MOD_WRITE: u8 = 0xFC;
/// `FS_FILTER_ACQUIRE_FOR_CC_FLUSH`.
pub const ACQUIRE_FOR_CC_FLUSH: u8 = 0xFB;
/// `FS_FILTER_RELEASE_FOR_CC_FLUSH`.
pub const RELEASE_FOR_CC_FLUSH: u8 = 0xFA;
/// `SyncTypeOther`.
pub const SYNC_TYPE_OTHER: i32 = 0;
/// `SyncTypeCreateSection`.
pub const SYNC_TYPE_CREATE_SECTION: i32 = 1;

/// An FsFilter operation the simulator raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsFilterOp {
    /// `FS_FILTER_ACQUIRE_FOR_SECTION_SYNCHRONIZATION`, with `SyncType` and `PageProtection`.
    AcquireForSection {
        /// `FS_FILTER_SECTION_SYNC_TYPE`.
        sync_type: i32,
        /// The section's page protection.
        protection: u32,
    },
    /// `FS_FILTER_RELEASE_FOR_SECTION_SYNCHRONIZATION`.
    ReleaseForSection,
    /// `FS_FILTER_ACQUIRE_FOR_MOD_WRITE` (`FsRtlAcquireFileForModWriteEx`), with the ending
    /// offset of the modified-page writer's write.
    AcquireForModWrite {
        /// `EndingOffset`: where the write ends.
        ending_offset: i64,
    },
    /// `FS_FILTER_RELEASE_FOR_MOD_WRITE` (`FsRtlReleaseFileForModWrite`).
    ReleaseForModWrite,
    /// `FS_FILTER_ACQUIRE_FOR_CC_FLUSH` (`FsRtlAcquireFileForCcFlushEx`).
    AcquireForCcFlush,
    /// `FS_FILTER_RELEASE_FOR_CC_FLUSH` (`FsRtlReleaseFileForCcFlush`).
    ReleaseForCcFlush,
}

impl FsFilterOp {
    fn code(self) -> u8 {
        match self {
            FsFilterOp::AcquireForSection { .. } => ACQUIRE_FOR_SECTION_SYNCHRONIZATION,
            FsFilterOp::ReleaseForSection => RELEASE_FOR_SECTION_SYNCHRONIZATION,
            FsFilterOp::AcquireForModWrite { .. } => ACQUIRE_FOR_MOD_WRITE,
            FsFilterOp::ReleaseForModWrite => RELEASE_FOR_MOD_WRITE,
            FsFilterOp::AcquireForCcFlush => ACQUIRE_FOR_CC_FLUSH,
            FsFilterOp::ReleaseForCcFlush => RELEASE_FOR_CC_FLUSH,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FsFilterOp::AcquireForSection { .. } => "FS_FILTER_ACQUIRE_FOR_SECTION_SYNCHRONIZATION",
            FsFilterOp::ReleaseForSection => "FS_FILTER_RELEASE_FOR_SECTION_SYNCHRONIZATION",
            FsFilterOp::AcquireForModWrite { .. } => "FS_FILTER_ACQUIRE_FOR_MOD_WRITE",
            FsFilterOp::ReleaseForModWrite => "FS_FILTER_RELEASE_FOR_MOD_WRITE",
            FsFilterOp::AcquireForCcFlush => "FS_FILTER_ACQUIRE_FOR_CC_FLUSH",
            FsFilterOp::ReleaseForCcFlush => "FS_FILTER_RELEASE_FOR_CC_FLUSH",
        }
    }

    /// Whether a filter may fail the operation (WRK's `AllowFilterToFail`): a
    /// `SyncTypeCreateSection` acquire, the modified-page writer's acquire and the flush's
    /// acquire; never a release nor a `SyncTypeOther` acquire.
    fn may_fail(self) -> bool {
        match self {
            FsFilterOp::AcquireForSection { sync_type, .. } => {
                sync_type == SYNC_TYPE_CREATE_SECTION
            }
            FsFilterOp::AcquireForModWrite { .. } | FsFilterOp::AcquireForCcFlush => true,
            FsFilterOp::ReleaseForSection
            | FsFilterOp::ReleaseForModWrite
            | FsFilterOp::ReleaseForCcFlush => false,
        }
    }

    /// The pre and post routines of `callbacks` for the operation, when its size covers them
    /// (WRK's `VALID_FS_FILTER_CALLBACK_HANDLER`).
    fn routines(
        self,
        callbacks: &FS_FILTER_CALLBACKS,
    ) -> (PFS_FILTER_CALLBACK, PFS_FILTER_COMPLETION_CALLBACK) {
        use std::mem::offset_of;
        let c = callbacks;
        let (pre, post, p, q) = match self {
            FsFilterOp::AcquireForSection { .. } => (
                offset_of!(FS_FILTER_CALLBACKS, PreAcquireForSectionSynchronization),
                offset_of!(FS_FILTER_CALLBACKS, PostAcquireForSectionSynchronization),
                c.PreAcquireForSectionSynchronization,
                c.PostAcquireForSectionSynchronization,
            ),
            FsFilterOp::ReleaseForSection => (
                offset_of!(FS_FILTER_CALLBACKS, PreReleaseForSectionSynchronization),
                offset_of!(FS_FILTER_CALLBACKS, PostReleaseForSectionSynchronization),
                c.PreReleaseForSectionSynchronization,
                c.PostReleaseForSectionSynchronization,
            ),
            FsFilterOp::AcquireForModWrite { .. } => (
                offset_of!(FS_FILTER_CALLBACKS, PreAcquireForModifiedPageWriter),
                offset_of!(FS_FILTER_CALLBACKS, PostAcquireForModifiedPageWriter),
                c.PreAcquireForModifiedPageWriter,
                c.PostAcquireForModifiedPageWriter,
            ),
            FsFilterOp::ReleaseForModWrite => (
                offset_of!(FS_FILTER_CALLBACKS, PreReleaseForModifiedPageWriter),
                offset_of!(FS_FILTER_CALLBACKS, PostReleaseForModifiedPageWriter),
                c.PreReleaseForModifiedPageWriter,
                c.PostReleaseForModifiedPageWriter,
            ),
            FsFilterOp::AcquireForCcFlush => (
                offset_of!(FS_FILTER_CALLBACKS, PreAcquireForCcFlush),
                offset_of!(FS_FILTER_CALLBACKS, PostAcquireForCcFlush),
                c.PreAcquireForCcFlush,
                c.PostAcquireForCcFlush,
            ),
            FsFilterOp::ReleaseForCcFlush => (
                offset_of!(FS_FILTER_CALLBACKS, PreReleaseForCcFlush),
                offset_of!(FS_FILTER_CALLBACKS, PostReleaseForCcFlush),
                c.PreReleaseForCcFlush,
                c.PostReleaseForCcFlush,
            ),
        };
        let size = c.SizeOfFsFilterCallbacks as usize;
        let covers = |offset: usize| size >= offset + size_of::<usize>();
        (p.filter(|_| covers(pre)), q.filter(|_| covers(post)))
    }
}

/// Creates a section on `fo` as the memory manager does (WRK's `MmCreateSection`, and
/// `FsRtlCreateSectionForDataScan` after it): the file acquired for section synchronization
/// (`SyncTypeCreateSection` with `protection`), `create` run if no driver failed the acquire
/// (whose error is then the answer), the file released. Runs outside the kernel's borrow.
pub fn with_section_sync<T>(
    fo: *mut FILE_OBJECT,
    protection: u32,
    create: impl FnOnce() -> Result<T, Status>,
) -> Result<T, Status> {
    let acquire = FsFilterOp::AcquireForSection { sync_type: SYNC_TYPE_CREATE_SECTION, protection };
    let acquired = perform(fo, acquire);
    if !acquired.is_success() {
        return Err(acquired);
    }
    let made = create();
    perform(fo, FsFilterOp::ReleaseForSection);
    made
}

/// One device of the stack whose driver has a routine for the operation.
#[derive(Clone)]
struct Callee {
    device: *mut DEVICE_OBJECT,
    /// The bottom of the stack: the file system's own device, whose post routine is never
    /// called (it does the operation).
    base: bool,
    image: ImageId,
    /// The image's name, for findings.
    driver: String,
    pre: PFS_FILTER_CALLBACK,
    post: PFS_FILTER_COMPLETION_CALLBACK,
}

/// Runs an FsFilter operation on the stack of `fo`'s device (WRK `FsFilterPerformCallbacks`):
/// the pre routines from the top down, then the file system's acquire or release (not modelled:
/// the simulator's file systems have no resource to take), then the post routines from the
/// bottom up, of every device whose pre routine let the operation go on. Answers the
/// operation's status: the error a pre routine failed it with, or `STATUS_SUCCESS`.
///
/// Only a `SyncTypeCreateSection` acquire, the modified-page writer's and the flush's acquires
/// may fail (WRK's `AllowFilterToFail`; releases cannot, the reference page of
/// `FsRtlRegisterFileSystemFilterCallbacks`): another failure is reported
/// (`CALLBACK_STATUS_INVALID_FOR_OPERATION`) and taken for success, as a free build does.
pub fn perform(fo: *mut FILE_OBJECT, op: FsFilterOp) -> Status {
    let callees = kernel::with(|k| {
        // Not a file object: nothing to walk (the caller's own checks refuse it).
        if !k.is_file_object(fo as usize) {
            return Vec::new();
        }
        let top = k.related_device(fo);
        let Some(top) = k.objects.device_id(top) else { return Vec::new() };
        k.objects
            .stack_from_top(top)
            .into_iter()
            .filter_map(|d| {
                let info = k.objects.device(d);
                let driver = k.objects.driver(info.driver);
                let (pre, post) = op.routines(driver.fs_filter.as_ref()?);
                (pre.is_some() || post.is_some()).then(|| Callee {
                    device: info.ptr,
                    base: info.attached_to.is_none(),
                    image: driver.image,
                    // Findings name the driver as every other one does: by its image.
                    driver: k.image_name(driver.image),
                    pre,
                    post,
                })
            })
            .collect::<Vec<_>>()
    });
    if callees.is_empty() {
        return Status::SUCCESS;
    }
    // What the drivers do is attributed to the user request the operation serves: the section's
    // own (`NtCreateSection`), or the one whose callback creates a data-scan section.
    let saved = kernel::with(|k| {
        let ambient = k
            .current_request
            .or_else(|| k.fltmgr.ops.running.as_ref().and_then(|r| r.request))
            .or_else(|| k.io_call.as_ref().and_then(|c| c.request));
        std::mem::replace(&mut k.current_request, ambient)
    });
    let status = walk(fo, op, callees);
    kernel::with(|k| k.current_request = saved);
    status
}

/// [`perform`]'s walk of the devices that have a routine for the operation.
fn walk(fo: *mut FILE_OBJECT, op: FsFilterOp, callees: Vec<Callee>) -> Status {
    let may_fail = op.may_fail();
    // One callback data for the walk, at a stable address; each callee sees its own device.
    // SAFETY: all-zero is a valid FS_FILTER_CALLBACK_DATA (null pointers, zero values).
    let mut data: Box<FS_FILTER_CALLBACK_DATA> = Box::new(unsafe { std::mem::zeroed() });
    data.SizeOfFsFilterCallbackData = size_of::<FS_FILTER_CALLBACK_DATA>() as u32;
    data.Operation = op.code();
    data.FileObject = fo;
    // The modified-page writer's ending offset and the resource the file system would name for
    // the release (the simulator's file systems have none: it stays NULL), at stable addresses.
    let mut ending = Box::new(0i64);
    let mut resource: Box<*mut ERESOURCE> = Box::new(std::ptr::null_mut());
    match op {
        FsFilterOp::AcquireForSection { sync_type, protection } => {
            // SAFETY: the member of a section-synchronization acquire, written whole.
            let a = unsafe { &mut data.Parameters.AcquireForSectionSynchronization };
            a.SyncType = sync_type;
            a.PageProtection = protection;
        }
        FsFilterOp::AcquireForModWrite { ending_offset } => {
            *ending = ending_offset;
            // SAFETY: the member of a modified-page writer's acquire, written whole.
            let a = unsafe { &mut data.Parameters.AcquireForModifiedPageWriter };
            a.EndingOffset = &raw mut *ending;
            a.ResourceToRelease = &raw mut *resource;
        }
        // A release names the resource the acquire returned: none.
        FsFilterOp::ReleaseForModWrite
        | FsFilterOp::ReleaseForSection
        | FsFilterOp::AcquireForCcFlush
        | FsFilterOp::ReleaseForCcFlush => {}
    }
    let mut called: Vec<(Callee, *mut c_void)> = Vec::with_capacity(callees.len());
    let mut status = Status::SUCCESS;
    for c in callees {
        let Some(pre) = c.pre else {
            called.push((c, std::ptr::null_mut()));
            continue;
        };
        data.DeviceObject = c.device;
        let mut context: *mut c_void = std::ptr::null_mut();
        // A driver without a post routine gets no context to fill (WRK).
        let out: *mut *mut c_void =
            if c.post.is_some() { &raw mut context } else { std::ptr::null_mut() };
        let p: *const FS_FILTER_CALLBACK_DATA = &*data;
        // SAFETY: the driver's registered pre-operation routine with the walk's callback data
        // and a completion-context out parameter, called as that driver's code.
        let s = Status(kernel::call_into(Some(c.image), || unsafe { pre(p, out) }));
        if s == Status::FSFILTER_OP_COMPLETED_SUCCESSFULLY {
            called.push((c, context));
            break;
        }
        if s.is_success() && s != Status::PENDING {
            called.push((c, context));
            continue;
        }
        if s == Status::PENDING || !may_fail {
            let why = if s == Status::PENDING {
                "STATUS_PENDING (FsFilter callbacks are synchronous)".to_owned()
            } else {
                format!(
                    "{s}, which it cannot fail with (only a SyncTypeCreateSection, flush or \
                     modified-page writer acquire may fail)"
                )
            };
            kernel::with(|k| {
                k.report(
                    Rule::StatusInvalidForOperation,
                    Some(c.driver.clone()),
                    format!(
                        "{}: a pre-operation FsFilter callback returned {why}; taken for \
                         STATUS_SUCCESS",
                        op.name()
                    ),
                )
            });
            called.push((c, context));
            continue;
        }
        // Failed: nothing below sees the operation, and the failing driver's post is not called.
        status = s;
        break;
    }
    for (c, context) in called.into_iter().rev() {
        let Some(post) = c.post.filter(|_| !c.base) else { continue };
        data.DeviceObject = c.device;
        let p: *const FS_FILTER_CALLBACK_DATA = &*data;
        // SAFETY: the driver's registered post-operation routine with the walk's callback data,
        // the operation's status and the context its pre routine returned.
        kernel::call_into(Some(c.image), || unsafe { post(p, status.0, context) });
    }
    status
}
