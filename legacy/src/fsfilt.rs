//! FsFilter callbacks (docs/semantics.md, operations-delivered): `DriverEntry` registers the
//! routines of the six FsFilter operations (`IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION` and the
//! others) with
//! `FsRtlRegisterFileSystemFilterCallbacks` (the way a legacy filter sees the memory manager
//! acquire a file to create a section, or the page writers around their paging writes, facts.md
//! §1.2 step 4, §1.7), and they run the operation through the model on each of the backend's
//! volume devices in the file's stack, as the Filter Manager presents it: the pre callback in the
//! pre routine, the post callback in the post routine, with the operation's status, both in
//! FsRtl's caller's thread.
//!
//! FsRtl calls a driver's post routine whenever its pre routine let the operation go on (or
//! completed it successfully), so the completion context says what to do: [`pass`] nothing, any
//! other value the filter's encoded context, with a hold on the device taken for it
//! (`DriverState::begin`), given up after the post callback.

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;

use fsfilter::{
    Filter, HeaderSource, IoStatus, LazyHeader, MajorFunction, ModWriteParameters, OperationHeader,
    OperationKind, Parameters, SectionSyncParameters, Status, section_sync,
};
use fsfilter_kernel::context::{decode, encode};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::{
    FS_FILTER_CALLBACK_DATA, FS_FILTER_CALLBACKS, FsRtlRegisterFileSystemFilterCallbacks,
    PFS_FILTER_CALLBACK, PFS_FILTER_COMPLETION_CALLBACK,
};
use windows_sys::Win32::Foundation::NTSTATUS;

use crate::dispatch::instance_view;
use crate::fastio::{Pre, post_half, pre_half};
use crate::services::OpServices;
use crate::state::{DeviceExt, DriverState};
use crate::view;

const ACQUIRE: MajorFunction = MajorFunction::AcquireForSectionSynchronization;

/// The completion context of an operation that owes the filter no post callback: an address no
/// pool block has (an encoded context is a pool block, or NULL when zero-sized).
fn pass() -> *mut c_void {
    NonNull::<u8>::dangling().as_ptr().cast()
}

/// Registers the routines of the six FsFilter operations; answers the status of
/// `FsRtlRegisterFileSystemFilterCallbacks`. Always: a filter that registers none of them gets
/// routines that pass every operation on at once (the pre half finds no registration), which
/// costs FsRtl a call per device and the driver fewer bytes than deciding here. The simulator
/// raises the section-synchronization pair, a flush's and the modified-page writer's; not the
/// `SyncTypeOther` acquire (docs/simulator.md, "FsFilter callbacks").
///
/// # Safety
/// `driver` is the driver object `DriverEntry` was called with, at `PASSIVE_LEVEL`.
pub(crate) unsafe fn register<F: Filter>(driver: *const DRIVER_OBJECT) -> NTSTATUS {
    let pair = Pair { pre: Some(pre::<F>), post: Some(post::<F>) };
    let routines = Routines { size: size_of::<Routines>() as u32, reserved: 0, pairs: [pair; 6] };
    let table = core::ptr::from_ref(&routines).cast::<FS_FILTER_CALLBACKS>();
    // SAFETY: our driver object; the routine copies the first `SizeOfFsFilterCallbacks` bytes of
    // the table, all of which `Routines` has (WRK; the reference page: a nonzero size).
    unsafe { FsRtlRegisterFileSystemFilterCallbacks(driver, table) }
}

/// One operation's routines.
#[derive(Clone, Copy)]
#[repr(C)]
struct Pair {
    pre: PFS_FILTER_CALLBACK,
    post: PFS_FILTER_COMPLETION_CALLBACK,
}

/// `FS_FILTER_CALLBACKS` up to the modified-page writer's routines: the structure Windows 7's
/// headers declare on x64 (0x68 bytes), without the newer `PreQueryOpen` and `PostQueryOpen`,
/// which the backend does not register. Its size says where it ends, and FsRtl calls no routine
/// the size does not cover (WRK's `VALID_FS_FILTER_CALLBACK_HANDLER`). Built on `DriverEntry`'s
/// stack: a static table costs `.rdata`, where probe-legacy.sys has no room
/// (docs/performance-history.md).
#[repr(C)]
struct Routines {
    size: u32,
    reserved: u32,
    pairs: [Pair; 6],
}

// The same fields at the same offsets as the structure's.
const _: () = assert!(
    offset_of!(FS_FILTER_CALLBACKS, PreAcquireForSectionSynchronization)
        == offset_of!(Routines, pairs)
        && offset_of!(FS_FILTER_CALLBACKS, PreAcquireForCcFlush)
            == offset_of!(Routines, pairs) + 2 * size_of::<Pair>()
        && offset_of!(FS_FILTER_CALLBACKS, PostReleaseForModifiedPageWriter)
            == offset_of!(Routines, pairs) + 5 * size_of::<Pair>() + size_of::<usize>()
        && size_of::<Routines>() == 0x68
);

/// The operation's major function and parameters, from FsRtl's callback data.
fn operation(d: &FS_FILTER_CALLBACK_DATA) -> (MajorFunction, Parameters) {
    let major = MajorFunction::from_code(d.Operation);
    let parameters = match major {
        ACQUIRE => {
            // SAFETY: the member of a section-synchronization acquire.
            let a = unsafe { d.Parameters.AcquireForSectionSynchronization };
            let (sync_type, page_protection) = (a.SyncType as u32, a.PageProtection);
            Parameters::AcquireForSectionSynchronization(SectionSyncParameters {
                sync_type,
                page_protection,
            })
        }
        MajorFunction::AcquireForModWrite => {
            // SAFETY: the member of a modified-page writer's acquire.
            let end = unsafe { d.Parameters.AcquireForModifiedPageWriter.EndingOffset };
            // SAFETY: FsRtl's ending offset, valid during the call (or NULL).
            let ending_offset = unsafe { end.as_ref() }.copied().unwrap_or(0);
            Parameters::AcquireForModWrite(ModWriteParameters { ending_offset })
        }
        _ => Parameters::None,
    };
    (major, parameters)
}

/// The header of an FsFilter operation, built from FsRtl's callback data when first asked for.
struct FsFilterHeader<'d>(&'d FS_FILTER_CALLBACK_DATA);

impl<'a> HeaderSource<'a> for FsFilterHeader<'_> {
    fn header(&self) -> OperationHeader<'a> {
        let (major, parameters) = operation(self.0);
        let (file, kind) = (self.0.FileObject, OperationKind::FsFilter);
        // SAFETY: the callback data's file object, valid for the call.
        unsafe { view::irpless_header(major, kind, file, parameters, file as usize) }
    }
}

/// Whether the operation may fail: not a release, nor a `SyncTypeOther` acquire (the reference
/// page of `FsRtlRegisterFileSystemFilterCallbacks`; `MajorFunction::cannot_fail`). A filter's
/// failure of one that cannot completes it with success instead (rule 5), as the minifilter
/// backend does.
fn may_fail(d: &FS_FILTER_CALLBACK_DATA) -> bool {
    if d.Operation == ACQUIRE.code() {
        // SAFETY: the member of a section-synchronization acquire.
        let sync = unsafe { d.Parameters.AcquireForSectionSynchronization.SyncType };
        return sync == section_sync::SYNC_TYPE_CREATE_SECTION as i32;
    }
    // The acquires' codes are odd (-1, -3, -5), the releases' even (-2, -4, -6; facts.md §3).
    d.Operation & 1 == 1
}

/// The pre routine of every operation.
unsafe extern "system" fn pre<F: Filter>(
    data: *const FS_FILTER_CALLBACK_DATA,
    completion: *mut *mut c_void,
) -> NTSTATUS {
    // SAFETY: FsRtl's callback data, valid for the call.
    let (status, context) = match unsafe { data.as_ref() } {
        // SAFETY: as above.
        Some(d) => unsafe { run_pre::<F>(d) },
        None => (Status::SUCCESS, pass()),
    };
    // SAFETY: FsRtl's out parameter (non-null: a post routine is registered).
    if let Some(out) = unsafe { completion.as_mut() } {
        *out = context;
    }
    status.0
}

/// The pre callback through the model: the status for FsRtl and the completion context.
///
/// # Safety
/// `d` is FsRtl's callback data for one of our devices' pre routine.
unsafe fn run_pre<F: Filter>(d: &FS_FILTER_CALLBACK_DATA) -> (Status, *mut c_void) {
    let done = (Status::SUCCESS, pass());
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return done };
    let device = d.DeviceObject;
    // SAFETY: a device of the file's stack, live during the call.
    let Some(ext) = (unsafe { state.ext(device) }) else { return done };
    let Some(instance) = instance_view(device, ext) else { return done };
    let major = MajorFunction::from_code(d.Operation);
    let file = d.FileObject;
    let id = file as usize;
    let source = FsFilterHeader(d);
    // Built only if filter logic or a skip flag asks.
    let header = LazyHeader::on_demand(&source, major, id);
    let services = OpServices::<F>::fs_filter(state, device, file, instance.data_scan);
    let kind = OperationKind::FsFilter;
    let context = match pre_half(state, ext, &instance, &header, &services, kind) {
        Pre::Complete(io) => {
            // A success completes the operation here: the file system's part is skipped.
            let status = if io.status.is_success() {
                Status::FSFILTER_OP_COMPLETED_SUCCESSFULLY
            } else {
                io.status
            };
            return (status, pass());
        }
        Pre::Post(c) => c,
        Pre::Pass | Pre::Disallow => return done,
    };
    match encode(context) {
        Ok(raw) => {
            state.begin(ext);
            (Status::SUCCESS, raw)
        }
        Err(context) => {
            // No room for the context: fail closed (docs/callback-model.md, rule 7) where the
            // operation may fail; elsewhere the post callback cannot run.
            drop(context);
            let status = if may_fail(d) { Status::INSUFFICIENT_RESOURCES } else { Status::SUCCESS };
            (status, pass())
        }
    }
}

/// The post routine of every operation.
unsafe extern "system" fn post<F: Filter>(
    data: *const FS_FILTER_CALLBACK_DATA,
    status: NTSTATUS,
    completion: *const c_void,
) {
    if completion == pass().cast_const() {
        return;
    }
    // SAFETY: FsRtl's callback data, valid for the call.
    let Some(d) = (unsafe { data.as_ref() }) else { return };
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
    // SAFETY: our device, held since the pre routine (`begin`).
    let Some(ext) = (unsafe { state.ext(d.DeviceObject) }) else { return };
    // SAFETY: the context `run_pre` encoded, decoded once.
    let context = unsafe { decode::<F::CompletionContext>(completion) };
    if let Some(context) = context {
        // SAFETY: FsRtl's data for our device.
        unsafe { run_post::<F>(state, ext, d, Status(status), context) };
    }
    state.end(ext);
}

/// The post callback through the model, with the operation's status.
///
/// # Safety
/// `d` is FsRtl's callback data for our device `ext`, held by the operation.
unsafe fn run_post<F: Filter>(
    state: &DriverState<F>,
    ext: &DeviceExt<F>,
    d: &FS_FILTER_CALLBACK_DATA,
    status: Status,
    context: F::CompletionContext,
) {
    let device = d.DeviceObject;
    let Some(instance) = instance_view(device, ext) else { return };
    let major = MajorFunction::from_code(d.Operation);
    let file = d.FileObject;
    let source = FsFilterHeader(d);
    let header = LazyHeader::on_demand(&source, major, file as usize);
    let services = OpServices::<F>::fs_filter(state, device, file, instance.data_scan);
    let result = IoStatus::new(status);
    post_half(state, &instance, &header, &services, result, context, OperationKind::FsFilter);
}
