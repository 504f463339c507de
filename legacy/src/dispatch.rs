//! IRP dispatch: the control device, file-system control devices (mounts), and volumes, where the
//! model's pre and post callbacks run around the IRP (docs/callback-model.md).
//!
//! Post callbacks come from completion routines set with `IoSetCompletionRoutineEx` (so the image
//! cannot unload under a running routine), or `IoSetCompletionRoutine` for a filter that can never
//! be unloaded. The routine runs the post callback at the IRQL of completion, as the Filter
//! Manager does: inside `IoCallDriver` when the lower driver completes synchronously, later when
//! it pends the IRP, deferring to a work item when the filter asks for a safe IRQL. Creates and
//! synchronized operations are the exceptions: their completion routine stops completion and the
//! dispatch routine runs the post callback in the requester's thread, at `PASSIVE_LEVEL`.

use core::ffi::c_void;
use core::marker::PhantomData;

use fsfilter::trace::TraceEvent;
use fsfilter::{
    DataScanMode, Filter, Instance, InstanceId, IoStatus, Irql, LazyHeader, MajorFunction,
    OperationBuffer, OperationKind, PendBackend, PostBackend, PostFlags, PostOperation,
    PostOutcome, PreOperation, PreOutcome, PreResume, SectionId, Status, fsctl,
};
use fsfilter_kernel::buffer::OnDemandBuffer;
use fsfilter_kernel::constants::flt_preop;
use fsfilter_kernel::irp::{
    IO_NO_INCREMENT, IoCallDriver, IoCompleteRequest, IoCopyCurrentIrpStackLocationToNext,
    IoMarkIrpPending, IoSetCompletionRoutine, IoSkipCurrentIrpStackLocation, set_irp_status,
    unmark_irp_pending,
};
use fsfilter_kernel::ntos::{IoCompletionRoutine, completion_routine_field};
use fsfilter_kernel::pool::PoolBox;
use fsfilter_kernel::{datascan, irql, trace};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IRP, KEVENT};
use windows_sys::Wdk::System::SystemServices::{
    DelayedWorkQueue, IoAllocateWorkItem, IoFreeWorkItem, IoQueueWorkItem,
    IoSetCompletionRoutineEx, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject,
};
use windows_sys::Win32::Foundation::NTSTATUS;
use windows_sys::Win32::System::Kernel::NotificationEvent;

use crate::attach;
use crate::raw;
use crate::services::OpServices;
use crate::state::{DeviceExt, DeviceKind, DriverState, WORK_TAG};
use crate::view;
use fsfilter_kernel::context::{decode, decode_with, encode_with};
use fsfilter_kernel::deferred::{Completion, PostReturned};
use fsfilter_kernel::pending::{Asked, Decision, PendedEntry, PreReturned, Resume};

/// `STATUS_MORE_PROCESSING_REQUIRED`.
const MORE_PROCESSING: NTSTATUS = Status::MORE_PROCESSING_REQUIRED.0;

/// The dispatch routine of every major function.
pub(crate) unsafe extern "system" fn dispatch<F: Filter>(
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else {
        // SAFETY: the I/O manager's live IRP.
        return unsafe { complete(irp, IoStatus::new(Status::INVALID_DEVICE_STATE)) };
    };
    // SAFETY: the I/O manager calls us with our own devices.
    let Some(ext) = (unsafe { state.ext(device) }) else {
        // SAFETY: as above.
        return unsafe { complete(irp, IoStatus::new(Status::INVALID_DEVICE_REQUEST)) };
    };
    // SAFETY: the I/O manager's live IRP.
    let sl = unsafe { raw::location(irp) };
    match ext.kind {
        DeviceKind::Control => {
            if let Some(channel) = fsfilter::message_channel::<F>() {
                // SAFETY: our control device (created for the channel's extension) and the I/O
                // manager's live IRP, completed there.
                return unsafe { crate::messages::dispatch::<F>(state, device, irp, channel) };
            }
            let major = MajorFunction::from_code(sl.MajorFunction);
            // The control device is the only object that can assume it is the sole recipient
            // (facts.md §1.2): it completes everything itself.
            let status = match major {
                MajorFunction::Create | MajorFunction::Cleanup | MajorFunction::Close => {
                    Status::SUCCESS
                }
                _ => Status::INVALID_DEVICE_REQUEST,
            };
            // SAFETY: a live IRP we own.
            unsafe { complete(irp, IoStatus::new(status)) }
        }
        DeviceKind::FileSystem => {
            if sl.MajorFunction == MajorFunction::FileSystemControl.code()
                && sl.MinorFunction == fsctl::MOUNT_VOLUME
            {
                // SAFETY: a live mount request at our file-system device.
                unsafe { attach::mount_volume::<F>(state, device, ext, irp) }
            } else {
                // SAFETY: a live IRP we pass on unchanged.
                unsafe { pass_through(ext, irp) }
            }
        }
        DeviceKind::Volume => {
            // SAFETY: a live IRP at one of our volume devices.
            unsafe {
                volume_dispatch::<F>(state, device, ext, irp, sl.MajorFunction, sl.MinorFunction)
            }
        }
    }
}

/// Completes an IRP with `io`; returns the status.
///
/// # Safety
/// `irp` must be live and owned by the caller.
pub(crate) unsafe fn complete(irp: *mut IRP, io: IoStatus) -> NTSTATUS {
    // SAFETY: the caller's live IRP.
    unsafe { set_irp_status(irp, io.status.0, io.information) };
    // SAFETY: as above; completed once.
    unsafe { IoCompleteRequest(irp, IO_NO_INCREMENT) };
    io.status.0
}

/// Passes an IRP down unchanged (no completion routine).
///
/// # Safety
/// `irp` must be live at one of our attached devices.
pub(crate) unsafe fn pass_through<F: Filter>(ext: &DeviceExt<F>, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the caller's live IRP; the lower device gets our location.
    unsafe { IoSkipCurrentIrpStackLocation(irp) };
    // SAFETY: the device we attached to.
    unsafe { IoCallDriver(ext.lower, irp) }
}

/// Passes an IRP this driver pended (marked pending and returned `STATUS_PENDING` for) to the
/// lower device: a copied location, so that the lower driver does not get ours with
/// `SL_PENDING_RETURNED` set (the WDK's `IoSkipCurrentIrpStackLocation` documentation).
///
/// # Safety
/// `irp` must be a live IRP at our device, pended by us, with our location current.
unsafe fn pass_through_pended<F: Filter>(ext: &DeviceExt<F>, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the caller's live IRP; the lower device gets a fresh copy of our location.
    unsafe { IoCopyCurrentIrpStackLocationToNext(irp) };
    // SAFETY: the device we attached to.
    unsafe { IoCallDriver(ext.lower, irp) }
}

/// The instance view of a volume device.
pub(crate) fn instance_view<F: Filter>(
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
) -> Option<Instance<'_, F::InstanceContext>> {
    let inst = ext.instance.as_ref()?;
    Some(Instance {
        context: &inst.context,
        volume: inst.volume,
        data_scan: inst.data_scan,
        id: InstanceId(device as usize),
    })
}

/// The model's path for an IRP at a volume device, with its major and minor codes as its stack
/// location holds them (decoded from the registration entry only when the filter takes the
/// operation).
///
/// # Safety
/// `irp` must be live at our volume device `device`.
unsafe fn volume_dispatch<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    code: u8,
    minor: u8,
) -> NTSTATUS {
    let Some(instance) = instance_view(device, ext) else {
        // SAFETY: forwarded.
        return unsafe { pass_through(ext, irp) };
    };
    let torn_down = ext.is_torn_down();
    // Conflicting I/O closes open data-scan sections first (the caller-side conflict handling
    // FsRtlCreateSectionForDataScan needs, facts.md §6), whether or not the filter registered
    // the operation.
    if fsfilter::scans_data::<F>()
        && !torn_down
        && instance.data_scan == DataScanMode::FsRtlFallback
        && (code == MajorFunction::Write.code() || code == MajorFunction::SetInformation.code())
    {
        // SAFETY: the live IRP at our location.
        let header = unsafe { view::header(irp) };
        if datascan::conflicts_with_sections(&header) {
            notify_conflicts(state, device, ext, header.stream);
        }
    }
    let registered = state.registration.get_irp(code);
    let Some(op) = registered.filter(|o| (o.pre || o.post) && !torn_down) else {
        // SAFETY: the live IRP at our volume device, not yet passed on.
        unsafe { close_handle_context::<F>(device, irp, code) };
        // SAFETY: forwarded.
        return unsafe { pass_through(ext, irp) };
    };
    let major = op.major;
    // SAFETY: the live IRP at our location, for this call.
    let header_source = unsafe { view::IrpHeader::new(irp) };
    // Built only if filter logic or a skip flag asks.
    let header = LazyHeader::on_demand(&header_source, major, irp as usize);
    if op.has_skip_flags() && op.skips(header.get()) {
        // SAFETY: the live IRP at our volume device, not yet passed on.
        unsafe { close_handle_context::<F>(device, irp, code) };
        // SAFETY: forwarded.
        return unsafe { pass_through(ext, irp) };
    }
    let outcome = if op.pre {
        // SAFETY: the IRP of a `major` operation stays live while `pre` exists (this call);
        // `view::Buffers` answers its buffer.
        let source = unsafe { OnDemandBuffer::<view::Buffers>::pre(irp as usize, major) };
        let services = OpServices::<F>::new(state, device, irp as usize, instance.data_scan);
        let buffer = OperationBuffer::on_demand(&source);
        let mut pre = PreOperation::new(&header, buffer, &services, Some(pender::<F>()));
        state.filter.pre_operation(&instance, &mut pre)
    } else {
        // Post without pre: the context is zero-sized (checked at load).
        // SAFETY: a null handle decodes to the zero-sized context.
        match unsafe { decode::<F::CompletionContext>(core::ptr::null()) } {
            Some(c) => PreOutcome::WithPost(c),
            None => PreOutcome::NoPost,
        }
    };
    // SAFETY: the live IRP at our volume device, not yet passed on.
    unsafe { close_handle_context::<F>(device, irp, code) };
    let has_post = op.post;
    let cleanup_or_close = matches!(major, MajorFunction::Cleanup | MajorFunction::Close);
    let id = irp as usize;
    // A post-only registration has no pre callback to report (the Filter Manager calls none).
    // Asked once; the event is built out of line, only when recorded (none on Windows without
    // `dbgprint-trace`).
    let tracing = op.pre && trace::wanted();
    let report = |outcome: &'static str, status: Option<Status>| {
        if tracing {
            report_pre(instance.id, id, major, minor, OperationKind::Irp, outcome, status);
        }
    };
    if !matches!(outcome, PreOutcome::Pending(_)) {
        // A token taken but not answered with `Pending` holds nothing (as the Filter Manager
        // backend's): its entry goes, so that it cannot resume an IRP that is not held.
        // SAFETY: this backend encodes the contexts of its resumes with a post from
        // `F::CompletionContext` (`Asked::new`).
        unsafe { state.pended.forget::<F::CompletionContext>(id) };
    }
    match outcome {
        PreOutcome::WithPost(c) | PreOutcome::Synchronize(c) if !has_post => {
            drop(c);
            report("FLT_PREOP_SUCCESS_NO_CALLBACK", None);
            // SAFETY: forwarded.
            unsafe { pass_through(ext, irp) }
        }
        // SAFETY: the live IRP at our location.
        PreOutcome::Synchronize(c) if unsafe { view::may_synchronize(irp) } => {
            report("FLT_PREOP_SYNCHRONIZE", None);
            // SAFETY: the live IRP at our device.
            unsafe { forward_synchronized(state, device, ext, irp, c, major) }
        }
        // `Synchronize` here is illegal for the operation (rule 11, facts.md §4): a post callback
        // as for `WithPost`.
        PreOutcome::WithPost(c) | PreOutcome::Synchronize(c) => {
            report("FLT_PREOP_SUCCESS_WITH_CALLBACK", None);
            // SAFETY: the live IRP at our device.
            unsafe { forward_with_post(state, device, ext, irp, c, major) }
        }
        PreOutcome::NoPost | PreOutcome::DisallowFastIo | PreOutcome::DisallowFsFilterIo => {
            report("FLT_PREOP_SUCCESS_NO_CALLBACK", None);
            // SAFETY: forwarded.
            unsafe { pass_through(ext, irp) }
        }
        PreOutcome::Complete(io) => {
            let io = io.for_completion(cleanup_or_close);
            report("FLT_PREOP_COMPLETE", Some(io.status));
            // SAFETY: the live IRP we complete.
            unsafe { complete(irp, io) }
        }
        PreOutcome::Pending(_receipt) => {
            // Counted and marked pending before the table lets the token or a worker resume the
            // IRP, which another processor may do the moment it can (facts.md §1.8, rule 15).
            state.begin(ext);
            // SAFETY: the live IRP at our location, still ours.
            unsafe { IoMarkIrpPending(irp) };
            match state.pended.pre_returned(id) {
                PreReturned::Pended { deferred } => {
                    report("FLT_PREOP_PENDING", None);
                    if deferred {
                        // SAFETY: our device; the IRP we just pended, its deferral ours.
                        unsafe { defer_resume::<F>(device, irp as usize) };
                    }
                    Status::PENDING.0
                }
                // Resumed before the pre callback returned, or never pended: nobody else can
                // reach the IRP, so it is not pended after all.
                returned => {
                    // SAFETY: marked above, and seen by nobody since.
                    unsafe { unmark_irp_pending(irp) };
                    let status = match returned {
                        PreReturned::Early(d) => {
                            report(PreOutcome::<()>::wdk_name_of(d.code), None);
                            // SAFETY: the live IRP, ours.
                            unsafe { resume_now(state, device, ext, irp, d, false) }
                        }
                        _ => {
                            report("FLT_PREOP_SUCCESS_NO_CALLBACK", None);
                            // SAFETY: forwarded.
                            unsafe { pass_through(ext, irp) }
                        }
                    };
                    // Ended once the IRP went on, its last use of the device (the end may
                    // retire it).
                    state.end(ext);
                    status
                }
            }
        }
    }
}

/// The handle's last operation: at an `IRP_MJ_CLOSE`, its handle context goes once the filter's
/// pre-close (if any) is over and before the close goes on (rule 29), while the file object is
/// certainly alive and before anything of this driver could be unloaded under the request:
/// nothing of the driver runs for a close passed through after it goes down. Compiled only into
/// filters that declare handle contexts (the constant first).
///
/// # Safety
/// `irp` must be live at our volume device `device`, not yet passed on, completed or pended.
#[inline(always)]
unsafe fn close_handle_context<F: Filter>(device: *const DEVICE_OBJECT, irp: *mut IRP, code: u8) {
    if fsfilter::handle_context_words::<F>() == 0 || code != MajorFunction::Close.code() {
        return;
    }
    // SAFETY: the caller's live IRP at our location.
    let file = unsafe { raw::location(irp) }.FileObject;
    // SAFETY: the close's file object, alive until the I/O manager deletes it after this close;
    // at the close's IRQL (≤ APC_LEVEL).
    unsafe { crate::contexts::handle_closed::<F>(device, file) };
}

/// Sets `routine` as our completion routine on the IRP's next location, invoked on success, error
/// and cancel. A filter that can be unloaded uses `IoSetCompletionRoutineEx`: the device reference
/// it holds until the routine has returned keeps the image loaded through the routine's last
/// instructions, which the in-flight count that unload drains cannot cover. A filter that can
/// never be unloaded (no unload callback, so `DriverUnload` is NULL) needs no such reference and
/// uses `IoSetCompletionRoutine`, which allocates nothing per IRP and cannot fail.
///
/// # Safety
/// `irp` must be live at our device `device`, its next location set up for the lower driver;
/// `routine` must stay valid with `context` until it runs.
unsafe fn set_completion<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
    routine: IoCompletionRoutine,
    context: *mut c_void,
) -> NTSTATUS {
    if !state.unloadable() {
        // SAFETY: the caller's live IRP with a next location; the image stays loaded.
        unsafe { IoSetCompletionRoutine(irp, routine, context, true, true, true) };
        return Status::SUCCESS.0;
    }
    // SAFETY: our device, the live IRP, our routine (kept loaded by the device reference
    // IoSetCompletionRoutineEx takes).
    unsafe {
        IoSetCompletionRoutineEx(
            device,
            irp,
            completion_routine_field(routine),
            context,
            true,
            true,
            true,
        )
    }
}

/// Where our completion routine tells the dispatch routine that sent an IRP down that the IRP,
/// completed synchronously (inside `IoCallDriver`), was marked pending on its way through the
/// post callback: held by it, or handed to a worker, or resumed by a token inside it. The
/// dispatch routine then returns `STATUS_PENDING`, whatever the lower driver returned. It lives
/// on the dispatch routine's stack and reaches the routine through its context
/// (`fsfilter_kernel::context::encode_with`); the routine touches it only for an IRP whose
/// `PendingReturned` is clear, which it completes before `IoCallDriver` returns, so while the
/// frame is alive and in the same thread.
#[derive(Default)]
struct SyncFrame {
    pended: core::cell::Cell<bool>,
}

/// Sends the IRP (of operation `major`) down with a completion routine, which runs the post
/// callback at the IRQL of completion, as the Filter Manager does: inside `IoCallDriver` when the
/// lower driver completes synchronously, later otherwise. A create's post callback runs in this
/// thread at `PASSIVE_LEVEL` instead, as the Filter Manager synchronizes creates (facts.md §4):
/// waited for here if the drivers below pend it ([`forward_synchronized`]), be it sent from the
/// dispatch routine or from the resumption of a create the filter pended (at `PASSIVE_LEVEL`: a
/// resumption from above it goes through a work item).
///
/// # Safety
/// `irp` must be live at our volume device `device`, its current location ours.
pub(crate) unsafe fn forward_with_post<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    context: F::CompletionContext,
    major: MajorFunction,
) -> NTSTATUS {
    if major == MajorFunction::Create {
        // SAFETY: forwarded.
        return unsafe { forward_synchronized(state, device, ext, irp, context, major) };
    }
    let frame = SyncFrame::default();
    let raw = match encode_with(context, (&raw const frame).cast()) {
        Ok(raw) => raw,
        Err(c) => {
            // No room for the context: fail closed (docs/callback-model.md, rule 7).
            drop(c);
            return if matches!(major, MajorFunction::Cleanup | MajorFunction::Close) {
                // SAFETY: forwarded.
                unsafe { pass_through(ext, irp) }
            } else {
                // SAFETY: the live IRP we complete.
                unsafe { complete(irp, IoStatus::new(Status::INSUFFICIENT_RESOURCES)) }
            };
        }
    };
    state.begin(ext);
    // SAFETY: the live IRP; the next location is the lower driver's.
    unsafe { IoCopyCurrentIrpStackLocationToNext(irp) };
    // SAFETY: our device, the live IRP with its next location set up, our routine.
    let set = unsafe { set_completion(state, device, irp, post_completion::<F>, raw) };
    if set < 0 {
        // SAFETY: our own encoded context, not handed to anyone.
        drop(unsafe { decode_with::<F::CompletionContext>(raw) });
        // SAFETY: the live IRP, its location copied.
        let status = unsafe { without_routine(ext, irp, major) };
        // Its last use of the device done (the end may retire it).
        state.end(ext);
        return status;
    }
    // SAFETY: the device we attached to.
    let status = unsafe { IoCallDriver(ext.lower, irp) };
    // Completed synchronously, the IRP is gone on or held by now: only the frame says which.
    if frame.pended.get() { Status::PENDING.0 } else { status }
}

/// Our completion routine could not be set (`IoSetCompletionRoutineEx` found no memory): the
/// operation fails closed (docs/callback-model.md, rule 7), but cleanup and close, which must not
/// fail, go down without a post callback.
///
/// # Safety
/// `irp` must be live at our device, its location copied to the next one.
unsafe fn without_routine<F: Filter>(
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    major: MajorFunction,
) -> NTSTATUS {
    if matches!(major, MajorFunction::Cleanup | MajorFunction::Close) {
        // SAFETY: the location was copied; send it down without a routine.
        unsafe { IoCallDriver(ext.lower, irp) }
    } else {
        // SAFETY: the live IRP we complete.
        unsafe { complete(irp, IoStatus::new(Status::INSUFFICIENT_RESOURCES)) }
    }
}

/// The completion routine of operations with a post callback: runs the post callback, at the
/// IRQL of completion.
unsafe extern "system" fn post_completion<F: Filter>(
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: a live IRP during its completion.
    let pending = unsafe { (*irp).PendingReturned };
    if pending {
        // Propagate the pending mark (facts.md §1.8) first, on every path: before the post
        // callback can hand the IRP to anyone who would resume its completion (it must be on our
        // location by then), and on the paths below that run no callback (a device unload
        // deleted while the IRP was below it, a notification that outlived the wait for it).
        // SAFETY: the completing IRP at our location.
        unsafe { IoMarkIrpPending(irp) };
    }
    // SAFETY: this image's state (the device reference keeps the image loaded).
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return Status::SUCCESS.0 };
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(device) }) else { return Status::SUCCESS.0 };
    // SAFETY: the context `forward_with_post` encoded, decoded once.
    let Some((context, frame)) = (unsafe { decode_with::<F::CompletionContext>(context) }) else {
        state.end(ext);
        return Status::SUCCESS.0;
    };
    if pending {
        // SAFETY: the completing IRP at our location, marked pending above.
        return match unsafe { run_post_with(state, device, ext, irp, context, Site::Completion) } {
            PostDone::Continue | PostDone::ContinuePended => Status::SUCCESS.0,
            PostDone::Deferred => MORE_PROCESSING,
        };
    }
    // Completed inside `IoCallDriver`: the dispatch routine that sent the IRP is waiting for it
    // to return, and its frame is alive.
    // SAFETY: the completing IRP at our location, not marked pending.
    let done = unsafe { run_post_with(state, device, ext, irp, context, Site::Synchronous) };
    if let PostDone::ContinuePended | PostDone::Deferred = done {
        // SAFETY: the frame of the dispatch routine in `IoCallDriver` below us on this thread
        // (the lower driver completed without marking the IRP pending, so before returning).
        unsafe { (*frame.cast::<SyncFrame>()).pended.set(true) };
    }
    if let PostDone::Deferred = done { MORE_PROCESSING } else { Status::SUCCESS.0 }
}

/// Where a post callback runs, which says who marks the IRP pending before the callback hands it
/// to someone else (a token completed from another thread, a worker): the IRP must be marked
/// before anyone can resume its completion, and must not be touched after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    /// The IRP is not marked pending at our location, and the dispatch routine that sent it down
    /// has not returned: in our completion routine of an IRP the lower driver completed inside
    /// `IoCallDriver`, or in the dispatch routine of a create or a synchronized operation, which
    /// holds the IRP halted at our location (after waiting for it if the lower driver pended it).
    /// That dispatch routine returns `STATUS_PENDING` when the post holds the IRP, so the IRP is
    /// marked first.
    Synchronous,
    /// In our completion routine of an IRP the lower driver pended (marked on entry), or in a
    /// worker the IRP was handed to (marked before).
    Completion,
}

/// How a post callback left the operation.
pub(crate) enum PostDone {
    /// Completion continues now.
    Continue,
    /// Completion continues now, and the IRP was marked pending on the way, at a
    /// [`Site::Synchronous`] post (a deferred post whose token completed before the callback
    /// returned): the dispatch routine returns `STATUS_PENDING`.
    ContinuePended,
    /// Completion resumes later, with `IoCompleteRequest` from a worker or a deferred post; the
    /// IRP is marked pending already.
    Deferred,
}

impl PostDone {
    /// Finishes an IRP halted at our location after its post callback ran in the dispatch
    /// routine's thread ([`Site::Synchronous`]), and returns what the dispatch routine returns: the
    /// IRP's status once completion resumed, or `STATUS_PENDING` when the IRP was marked pending
    /// (it resumes later, from a worker or a deferred post's token, and may be gone already).
    ///
    /// # Safety
    /// `irp` must be halted at our location (its completion stopped by our routine) and, unless
    /// `self` is `Deferred`, still ours.
    unsafe fn finish_halted(self, irp: *mut IRP) -> NTSTATUS {
        match self {
            PostDone::Continue => {
                // SAFETY: the halted IRP (the caller's contract).
                let status = unsafe { view::io_status(irp) }.status.0;
                // SAFETY: resume completion from our location, once.
                unsafe { IoCompleteRequest(irp, IO_NO_INCREMENT) };
                status
            }
            PostDone::ContinuePended => {
                // SAFETY: resume completion from our location, once; marked pending already.
                unsafe { IoCompleteRequest(irp, IO_NO_INCREMENT) };
                Status::PENDING.0
            }
            // Marked before it was handed off; not ours to touch any more.
            PostDone::Deferred => Status::PENDING.0,
        }
    }
}

/// Runs the post callback of an operation at our location.
///
/// # Safety
/// `irp` must be live, completed through the lower drivers and now at our location, marked
/// pending already unless `site` is [`Site::Synchronous`].
unsafe fn run_post_with<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    context: F::CompletionContext,
    site: Site,
) -> PostDone {
    let Some(instance) = instance_view(device, ext) else {
        state.end(ext);
        return PostDone::Continue;
    };
    // SAFETY: the IRP at our location.
    let (major, _) = unsafe { view::codes(irp) };
    // SAFETY: as above, for this call.
    let header_source = unsafe { view::IrpHeader::new(irp) };
    // Built only if filter logic asks.
    let header = LazyHeader::on_demand(&header_source, major, irp as usize);
    // SAFETY: as above.
    let result = unsafe { view::io_status(irp) };
    // SAFETY: the IRP stays live while `op` exists (this call); `view::Buffers` answers its
    // buffer.
    let source = unsafe { post_source(irp, major, result) };
    let buffer = OperationBuffer::on_demand(&source);
    let create = major == MajorFunction::Create;
    let services =
        OpServices::<F>::for_post(state, device, irp as usize, instance.data_scan, create);
    let mut op = PostOperation::new(&header, result, buffer, &services, Some(deferrer::<F>()));
    let outcome = state.filter.post_operation(&instance, &mut op, context, PostFlags::empty());
    let report = |when_safe: bool, outcome: &'static str| {
        report_post(&instance, irp, major, result, when_safe, outcome);
    };
    match outcome {
        // SAFETY: the IRP at our location, marked as `site` says.
        PostOutcome::MoreProcessing(_receipt) => unsafe {
            hold(state, ext, irp, site, report, false)
        },
        PostOutcome::Finished => finished(state, ext, irp, report, false),
        // Paging I/O cannot be deferred: treated as finished (rule 9), as the Filter Manager's
        // FltDoCompletionProcessingWhenSafe refuses it.
        // SAFETY: the IRP at our location.
        PostOutcome::WhenSafe(c) if unsafe { view::is_paging(irp) } => {
            drop(c);
            finished(state, ext, irp, report, false)
        }
        PostOutcome::WhenSafe(c) => {
            forget_deferral(state, irp);
            if irql::current() < Irql::DISPATCH {
                report(false, "FLT_POSTOP_MORE_PROCESSING_REQUIRED");
                // Safe already: run the rest inline.
                // SAFETY: the IRP at our location.
                unsafe { run_when_safe(state, device, ext, irp, c, site) }
            } else {
                // SAFETY: the IRP at our location, whose completion we hold.
                unsafe { queue_when_safe(state, device, ext, irp, c, site, report) }
            }
        }
    }
}

/// A post callback deferred and then answered something other than `MoreProcessing`: its token
/// no longer holds anything (a completion of it does nothing).
fn forget_deferral<F: Filter>(state: &DriverState<F>, irp: *mut IRP) {
    let _ = state.deferred_posts.post_returned(irp as usize, false);
}

/// The post callback (or its second half, `when_safe`) finished with the operation: completion
/// continues now.
fn finished<F: Filter>(
    state: &DriverState<F>,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    report: impl Fn(bool, &'static str),
    when_safe: bool,
) -> PostDone {
    forget_deferral(state, irp);
    report(when_safe, "FLT_POSTOP_FINISHED_PROCESSING");
    state.end(ext);
    PostDone::Continue
}

/// The post callback answered `MoreProcessing`: the IRP stays held until its token completes,
/// unless the token completed already, before the callback returned; then completion continues
/// now. At a [`Site::Synchronous`] post the IRP is marked pending first, while no token can
/// complete it yet (the table only records an early completion), so that it is marked before
/// anyone can resume it; once held it is not touched again.
///
/// # Safety
/// `irp` must be at our location, held by our completion routine, marked pending unless `site`
/// is [`Site::Synchronous`].
unsafe fn hold<F: Filter>(
    state: &DriverState<F>,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    site: Site,
    report: impl Fn(bool, &'static str),
    when_safe: bool,
) -> PostDone {
    if site == Site::Synchronous {
        // SAFETY: the IRP at our location, ours until the table says it is held.
        unsafe { IoMarkIrpPending(irp) };
    }
    match state.deferred_posts.post_returned(irp as usize, true) {
        PostReturned::Held => {
            // The trace names the IRP by its address only: the token may already have resumed it.
            report(when_safe, "FLT_POSTOP_MORE_PROCESSING_REQUIRED");
            PostDone::Deferred
        }
        // The token completed inside the callback (or the receipt was another operation's):
        // nothing holds the IRP, so completion continues as if the callback had finished.
        PostReturned::CompletedEarly | PostReturned::NotDeferred => {
            report(when_safe, "FLT_POSTOP_FINISHED_PROCESSING");
            state.end(ext);
            if site == Site::Synchronous { PostDone::ContinuePended } else { PostDone::Continue }
        }
    }
}

/// Reports a pre callback's outcome, for the dispatch routine and the fast-I/O model, whose
/// callers asked [`trace::wanted`] first: built out of line, so that the hot path pays a flag
/// test when nothing is recorded. It takes the event's fields rather than the event: building
/// the event in the caller's branch, with `trace::emit` made cold instead, was measured at 56
/// more simulator instructions per cached read (the fast-I/O model's frame grew) and slowed the
/// traced 4-filter workloads, so the field list is repeated here on purpose.
#[cold]
#[inline(never)]
pub(crate) fn report_pre(
    instance: InstanceId,
    operation: usize,
    major: MajorFunction,
    minor: u8,
    kind: OperationKind,
    outcome: &'static str,
    status: Option<Status>,
) {
    trace::emit(&TraceEvent::Pre { instance, operation, major, minor, kind, outcome, status });
}

/// Reports a post callback's outcome when the trace hook records it: the test inline, the event
/// built out of line.
#[inline(always)]
fn report_post<I>(
    instance: &Instance<'_, I>,
    irp: *mut IRP,
    major: MajorFunction,
    result: IoStatus,
    when_safe: bool,
    outcome: &'static str,
) {
    if trace::wanted() {
        emit_post(instance.id, irp as usize, major, result.status, when_safe, outcome);
    }
}

/// Reports a post callback's outcome (the caller asked [`trace::wanted`]), for the dispatch
/// routine and the fast-I/O model: built out of line, as [`report_pre`].
#[cold]
#[inline(never)]
pub(crate) fn emit_post(
    instance: InstanceId,
    operation: usize,
    major: MajorFunction,
    status: Status,
    when_safe: bool,
    outcome: &'static str,
) {
    trace::emit(&TraceEvent::Post {
        instance,
        operation,
        major,
        draining: false,
        when_safe,
        outcome,
        status,
    });
}

/// Runs `post_operation_when_safe` at ≤ `APC_LEVEL`.
///
/// # Safety
/// As [`run_post_with`].
unsafe fn run_when_safe<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    context: F::CompletionContext,
    site: Site,
) -> PostDone {
    let Some(instance) = instance_view(device, ext) else {
        state.end(ext);
        return PostDone::Continue;
    };
    // SAFETY: the IRP at our location.
    let (major, _) = unsafe { view::codes(irp) };
    // SAFETY: as above, for this call.
    let header_source = unsafe { view::IrpHeader::new(irp) };
    // Built only if filter logic asks.
    let header = LazyHeader::on_demand(&header_source, major, irp as usize);
    // SAFETY: as above.
    let result = unsafe { view::io_status(irp) };
    // SAFETY: the IRP stays live while `op` exists (this call); `view::Buffers` answers its
    // buffer.
    let source = unsafe { post_source(irp, major, result) };
    let buffer = OperationBuffer::on_demand(&source);
    let create = major == MajorFunction::Create;
    let services =
        OpServices::<F>::for_post(state, device, irp as usize, instance.data_scan, create);
    let mut op = PostOperation::new(&header, result, buffer, &services, Some(deferrer::<F>()));
    let report = |when_safe: bool, outcome: &'static str| {
        report_post(&instance, irp, major, result, when_safe, outcome);
    };
    match state.filter.post_operation_when_safe(&instance, &mut op, context) {
        // SAFETY: the IRP at our location, marked as `site` says.
        PostOutcome::MoreProcessing(_receipt) => unsafe {
            hold(state, ext, irp, site, report, true)
        },
        PostOutcome::WhenSafe(c) => {
            drop(c);
            finished(state, ext, irp, report, true)
        }
        PostOutcome::Finished => finished(state, ext, irp, report, true),
    }
}

/// A post callback's second half, waiting for a worker.
struct SafeWork<C> {
    irp: *mut IRP,
    device: *const DEVICE_OBJECT,
    item: isize,
    context: C,
}

/// Queues `post_operation_when_safe` to a system worker (`FltDoCompletionProcessingWhenSafe`'s
/// posting case). Without a work item or the memory to hand it the context, the second half
/// cannot run at a safe IRQL, so it does not run: the context is dropped and the operation
/// finishes, as when `FltDoCompletionProcessingWhenSafe` cannot post (docs/callback-model.md,
/// rule 14).
///
/// # Safety
/// As [`run_post`].
unsafe fn queue_when_safe<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    context: F::CompletionContext,
    site: Site,
    report: impl Fn(bool, &'static str),
) -> PostDone {
    // SAFETY: our live device.
    let item = unsafe { IoAllocateWorkItem(device) };
    let work = if item == 0 {
        Err(context)
    } else {
        PoolBox::try_new_or_return(SafeWork { irp, device, item, context }, WORK_TAG)
            .map(PoolBox::into_raw)
            .map_err(|w| {
                // SAFETY: the item was never queued.
                unsafe { IoFreeWorkItem(item) };
                w.context
            })
    };
    let work = match work {
        Ok(work) => work,
        Err(context) => {
            drop(context);
            return finished(state, ext, irp, report, false);
        }
    };
    report(false, "FLT_POSTOP_MORE_PROCESSING_REQUIRED");
    if site == Site::Synchronous {
        // Marked before the worker, which may run at once on another processor, can complete it.
        // SAFETY: the IRP at our location, still ours.
        unsafe { IoMarkIrpPending(irp) };
    }
    // SAFETY: a fresh work item of our device; the worker owns `work`.
    unsafe {
        IoQueueWorkItem(
            item,
            fsfilter_kernel::ntos::work_item_routine_field(safe_worker::<F>),
            DelayedWorkQueue,
            work.cast(),
        )
    };
    PostDone::Deferred
}

unsafe extern "system" fn safe_worker<F: Filter>(
    _device: *mut DEVICE_OBJECT,
    context: *mut c_void,
) {
    // SAFETY: the SafeWork record `queue_when_safe` allocated and handed to this worker.
    let Some(work) =
        (unsafe { PoolBox::<SafeWork<F::CompletionContext>>::from_raw(context.cast(), WORK_TAG) })
    else {
        return;
    };
    let SafeWork { irp, device, item, context } = work.into_inner();
    // SAFETY: the work item this routine was queued with, freed once (the I/O manager keeps the
    // device referenced until the routine returns).
    unsafe { IoFreeWorkItem(item) };
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(device) }) else { return };
    let done =
        // SAFETY: the IRP whose completion we hold, at our location, marked pending.
        unsafe { run_when_safe(state, device, ext, irp, context, Site::Completion) };
    if let PostDone::Continue | PostDone::ContinuePended = done {
        // SAFETY: resume the completion we stopped, once.
        unsafe { IoCompleteRequest(irp, IO_NO_INCREMENT) };
    }
}

/// `FLT_PREOP_SYNCHRONIZE`: send down, wait for completion, run the post callback in this thread.
///
/// # Safety
/// `irp` must be live at our volume device.
unsafe fn forward_synchronized<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    context: F::CompletionContext,
    major: MajorFunction,
) -> NTSTATUS {
    // SAFETY: all-zero is a valid KEVENT before initialization.
    let mut event: KEVENT = unsafe { core::mem::zeroed() };
    // SAFETY: our stack event, initialized before use.
    unsafe { KeInitializeEvent(&mut event, NotificationEvent, false) };
    state.begin(ext);
    // SAFETY: the live IRP.
    unsafe { IoCopyCurrentIrpStackLocationToNext(irp) };
    // SAFETY: our device, the IRP, our routine; the event outlives the wait below.
    let set =
        unsafe { set_completion(state, device, irp, signal_if_pended, (&raw mut event).cast()) };
    if set < 0 {
        drop(context);
        // SAFETY: the live IRP, its location copied.
        let status = unsafe { without_routine(ext, irp, major) };
        // As in `forward_with_post`.
        state.end(ext);
        return status;
    }
    // SAFETY: the device we attached to.
    if unsafe { IoCallDriver(ext.lower, irp) } == Status::PENDING.0 {
        // SAFETY: our event, which the routine signals for an IRP the lower driver pended.
        let _ = unsafe {
            KeWaitForSingleObject((&raw const event).cast(), 0, 0, false, core::ptr::null())
        };
    }
    // The post callback runs in the pre callback's thread at <= APC_LEVEL (facts.md §4).
    // SAFETY: the IRP is halted at our location, ours again.
    let done = unsafe { run_post_with(state, device, ext, irp, context, Site::Synchronous) };
    // SAFETY: the IRP is halted at our location, ours.
    unsafe { done.finish_halted(irp) }
}

/// Keeps the IRP for the dispatch routine that sent it, and wakes that routine when the lower
/// driver pended the IRP (it waits only then: completed inside `IoCallDriver`, the IRP is back
/// before the routine could wait).
pub(crate) unsafe extern "system" fn signal_if_pended(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: a live IRP during its completion.
    if unsafe { (*irp).PendingReturned } {
        // SAFETY: the waiter's event, alive until it is signalled and the wait returns.
        unsafe { KeSetEvent(context.cast(), 0, false) };
    }
    MORE_PROCESSING
}

/// Sets the mount's completion routine, which lets the file system's answer come back to the
/// mount path ([`signal_if_pended`]: the mount path waits only for a mount the file system
/// pended).
///
/// # Safety
/// `irp` must be live with a next location; `event` must outlive the wait.
pub(crate) unsafe fn set_mount_completion(irp: *mut IRP, event: *mut KEVENT) {
    // SAFETY: forwarded; the dispatch routine waits in place, so the image cannot unload.
    unsafe { IoSetCompletionRoutine(irp, signal_if_pended, event.cast(), true, true, true) };
}

/// Tells the filter about FsRtl sections an operation conflicts with, and closes them (the
/// caller-side conflict handling of facts.md §6).
pub(crate) fn notify_conflicts<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    stream: usize,
) {
    let Some(instance) = instance_view(device, ext) else { return };
    for (record, closing) in state.sections.conflict(device as usize, stream).into_iter().flatten()
    {
        let section = SectionId(record);
        state.filter.section_conflict(&instance, section);
        trace::emit(&TraceEvent::SectionConflict { instance: instance.id, section });
        // SAFETY: handed out once by the table; dispatch runs at PASSIVE_LEVEL.
        unsafe { closing.finish() };
    }
}

// ---------------------------------------------------------------------------------------------
// Pended operations and deferred posts

/// The pend backend of filter `F`.
pub(crate) struct Pender<F>(PhantomData<fn() -> F>);
/// The post-deferral backend of filter `F`.
pub(crate) struct Deferrer<F>(PhantomData<fn() -> F>);

fn pender<F: Filter>() -> &'static dyn PendBackend<F::CompletionContext> {
    const { &Pender::<F>(PhantomData) }
}

fn deferrer<F: Filter>() -> &'static dyn PostBackend {
    const { &Deferrer::<F>(PhantomData) }
}

/// The decision for a pended IRP of this driver, made under the pended table's lock from what the
/// entry recorded at the pend (`Asked::decide`).
fn decide<F: Filter>(state: &DriverState<F>, asked: &Asked, entry: &PendedEntry) -> Decision {
    let major = MajorFunction::from_code(entry.major);
    asked.decide(major, state.registration.get(major).is_some_and(|o| o.post))
}

/// Carries out a resume decision for an IRP at our device.
///
/// # Safety
/// `irp` must be live at our device with our location current, ours; `decision` taken from the
/// pended table for it (its context encoded by `Asked::new`, decoded here once).
unsafe fn resume_now<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
    decision: Decision,
    was_pended: bool,
) -> NTSTATUS {
    let code = decision.code;
    if was_pended {
        trace::emit(&TraceEvent::Resumed {
            instance: InstanceId(device as usize),
            operation: irp as usize,
            outcome: PreOutcome::<()>::wdk_name_of(code),
        });
    }
    // SAFETY: the live IRP at our location.
    let major = MajorFunction::from_code(unsafe { raw::location(irp) }.MajorFunction);
    let status = match code {
        flt_preop::SUCCESS_WITH_CALLBACK => {
            // SAFETY: the decision's context was encoded for this filter's completion context.
            match unsafe { decode::<F::CompletionContext>(decision.completion_context()) } {
                // SAFETY: forwarded.
                Some(c) => unsafe { forward_with_post(state, device, ext, irp, c, major) },
                // SAFETY: forwarded.
                None => unsafe { forward_resumed(ext, irp, was_pended) },
            }
        }
        flt_preop::COMPLETE => {
            let io = IoStatus { status: Status(decision.status), information: decision.context };
            // SAFETY: the IRP we complete, once.
            unsafe { complete(irp, io) }
        }
        // SAFETY: forwarded.
        _ => unsafe { forward_resumed(ext, irp, was_pended) },
    };
    if was_pended {
        // Ended once the IRP went on, its last use of the device: a device detached while the
        // IRP was pended is retired by this end, not under the forwarding (`attach::retire`).
        state.end(ext);
    }
    status
}

/// Passes a resumed IRP down without a post callback: a pended one through a copied location.
///
/// # Safety
/// `irp` must be live at our device with our location current.
unsafe fn forward_resumed<F: Filter>(ext: &DeviceExt<F>, irp: *mut IRP, pended: bool) -> NTSTATUS {
    if pended {
        // SAFETY: the caller's pended IRP.
        unsafe { pass_through_pended(ext, irp) }
    } else {
        // SAFETY: the caller's IRP, never marked pending.
        unsafe { pass_through(ext, irp) }
    }
}

impl<F: Filter> PendBackend<F::CompletionContext> for Pender<F> {
    fn pend(&self, handle: usize) -> bool {
        // SAFETY: called from filter code of this image.
        match unsafe { DriverState::<F>::current() } {
            Some(state) => {
                // SAFETY: the handle is the IRP of the running pre callback, at our device.
                let device = unsafe { raw::location(handle as *mut IRP) }.DeviceObject;
                // SAFETY: as above.
                let major = unsafe { raw::location(handle as *mut IRP) }.MajorFunction;
                state.pended.add(handle, device as usize, major)
            }
            None => false,
        }
    }

    fn resume(&self, handle: usize, how: PreResume<F::CompletionContext>) {
        if irql::current() > Irql::APC {
            // The IRP goes on to the drivers below, whose dispatch routines run at APC_LEVEL or
            // below: from a DPC the resumption is a worker's, as a delayed one is.
            self.resume_after(handle, 0, how);
            return;
        }
        // SAFETY: called from filter code of this image.
        let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
        // The IRP is not read or written before the table hands it over: until then it may have
        // gone on and completed (its pre callback answered something other than pending).
        let asked = Asked::new(how);
        let resume = state.pended.resume(handle, |e| decide(state, &asked, e));
        // SAFETY: this backend's resume contexts are `F::CompletionContext`s, released once.
        unsafe { asked.release::<F::CompletionContext>(resume.taken()) };
        // Recorded: the pre callback is still running and answers with the decision.
        if let Resume::Now(entry, decision) = resume {
            let device = entry.extra as *const DEVICE_OBJECT;
            // SAFETY: our device, which the pended IRP keeps in use.
            let Some(ext) = (unsafe { state.ext(device) }) else { return };
            // SAFETY: the pended IRP at our device, taken from the table: resumed once.
            let _ = unsafe { resume_now(state, device, ext, handle as *mut IRP, decision, true) };
        }
    }

    fn resume_after(&self, handle: usize, delay_ms: u32, how: PreResume<F::CompletionContext>) {
        // SAFETY: called from filter code of this image.
        let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
        let asked = Asked::new(how);
        let deferred = state.pended.resume_after(handle, delay_ms, |e| decide(state, &asked, e));
        // SAFETY: as in `resume`.
        unsafe { asked.release::<F::CompletionContext>(deferred.map(|(_, d)| d)) };
        // Not returned yet: the pre path hands the deferral to the worker.
        if let Some((entry, _)) = deferred.filter(|(e, _)| e.returned) {
            // SAFETY: the device the IRP was pended at (kept in the entry); the deferral is ours.
            unsafe { defer_resume::<F>(entry.extra as *const DEVICE_OBJECT, handle) };
        }
    }
}

/// True for cleanup and close IRPs, which cannot fail.
///
/// # Safety
/// `irp` must be live at our location.
unsafe fn is_cleanup_or_close(irp: *mut IRP) -> bool {
    // SAFETY: the caller's live IRP.
    let major = MajorFunction::from_code(unsafe { raw::location(irp) }.MajorFunction);
    matches!(major, MajorFunction::Cleanup | MajorFunction::Close)
}

/// Resumes a pended IRP after its delay: a timer whose DPC queues a work item (no thread waits
/// out the delay), or the work item at once without a delay. If nothing can be allocated the IRP
/// is resumed right away.
///
/// # Safety
/// Called from code of this image; `device` must be our live volume device and `handle` an IRP
/// pended at it whose resumption the table has just deferred (ours to carry out).
unsafe fn defer_resume<F: Filter>(device: *const DEVICE_OBJECT, handle: usize) {
    // SAFETY: this image's state.
    let delay_ms = unsafe { DriverState::<F>::current() }
        .and_then(|s| s.pended.get(handle))
        .and_then(|e| e.deferred())
        .map_or(0, |(_, ms)| ms);
    // SAFETY: our live device.
    let item = unsafe { IoAllocateWorkItem(device) };
    if item != 0 {
        let record = ResumeWork { handle, item, delay: fsfilter_kernel::timer::Delay::ZERO };
        if let Ok(work) = PoolBox::try_new(record, WORK_TAG) {
            let work = work.into_raw();
            if delay_ms == 0 {
                // SAFETY: the record, handed to the work item.
                unsafe { queue_resume_worker::<F>(work) };
            } else {
                // SAFETY: the live record we own.
                let delay = unsafe { &raw mut (*work).delay };
                // SAFETY: the record's timer, in non-paged pool until the DPC has run (the DPC
                // passes the record on to the worker, which frees it).
                unsafe {
                    fsfilter_kernel::timer::start(delay, delay_ms, resume_dpc::<F>, work.cast())
                };
            }
            return;
        }
        // SAFETY: never queued.
        unsafe { IoFreeWorkItem(item) };
    }
    if irql::current() > Irql::APC {
        // No worker, and the drivers below cannot be called from here: the request fails
        // (docs/callback-model.md, rule 7) rather than reach a dispatch routine at DISPATCH_LEVEL.
        // SAFETY: a pended IRP of this driver.
        unsafe { fail_deferred::<F>(handle) };
        return;
    }
    // SAFETY: a pended IRP of this driver.
    unsafe { resume_deferred::<F>(handle) };
}

/// Completes a pended IRP whose deferred resumption cannot be carried out, with
/// `STATUS_INSUFFICIENT_RESOURCES` (what a cleanup or close may not fail with becomes success,
/// rule 5), dropping the completion context the decision carried.
///
/// # Safety
/// `handle` must be an IRP this driver pended.
unsafe fn fail_deferred<F: Filter>(handle: usize) {
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
    let Some(entry) = state.pended.take(handle) else { return };
    if let Some((decision, _)) = entry.deferred() {
        if decision.code == flt_preop::SUCCESS_WITH_CALLBACK {
            // SAFETY: encoded for this filter's completion context by `encode_resume`, decoded
            // once here instead of by the resumption.
            drop(unsafe { decode::<F::CompletionContext>(decision.context as *const c_void) });
        }
    }
    let irp = handle as *mut IRP;
    // SAFETY: the pended IRP, taken from the table: ours until completed.
    let io = IoStatus::new(Status::INSUFFICIENT_RESOURCES)
        .for_completion(unsafe { is_cleanup_or_close(irp) });
    let device = entry.extra as *const DEVICE_OBJECT;
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(device) }) else { return };
    // SAFETY: the pended IRP, completed once.
    let _ = unsafe { resume_now(state, device, ext, irp, Decision::complete(io), true) };
}

/// What a delayed resume carries from the pend to the worker.
struct ResumeWork {
    handle: usize,
    item: isize,
    delay: fsfilter_kernel::timer::Delay,
}

/// Queues the work item of a resume record.
///
/// # Safety
/// `work` is a live record from `defer_resume`, handed over to the worker.
unsafe fn queue_resume_worker<F: Filter>(work: *mut ResumeWork) {
    // SAFETY: the caller's record.
    let item = unsafe { (*work).item };
    // SAFETY: the record's work item, allocated for our device; the worker owns the record.
    unsafe {
        IoQueueWorkItem(
            item,
            fsfilter_kernel::ntos::work_item_routine_field(resume_worker::<F>),
            DelayedWorkQueue,
            work.cast(),
        )
    };
}

/// The DPC of a delayed resume: at `DISPATCH_LEVEL`, so the IRP goes on from a work item.
unsafe extern "system" fn resume_dpc<F: Filter>(
    _dpc: *const windows_sys::Wdk::Foundation::KDPC,
    context: *const c_void,
    _argument1: *const c_void,
    _argument2: *const c_void,
) {
    // SAFETY: the record `defer_resume` armed the timer with.
    unsafe { queue_resume_worker::<F>(context.cast_mut().cast()) };
}

unsafe extern "system" fn resume_worker<F: Filter>(
    _device: *mut DEVICE_OBJECT,
    context: *mut c_void,
) {
    // SAFETY: the record `defer_resume` handed to this worker.
    let Some(work) = (unsafe { PoolBox::<ResumeWork>::from_raw(context.cast(), WORK_TAG) }) else {
        return;
    };
    let ResumeWork { handle, item, .. } = work.into_inner();
    // SAFETY: the queued item, freed once.
    unsafe { IoFreeWorkItem(item) };
    // SAFETY: a pended IRP of this driver.
    unsafe { resume_deferred::<F>(handle) };
}

/// # Safety
/// `handle` must be a pended IRP of this driver.
unsafe fn resume_deferred<F: Filter>(handle: usize) {
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
    let Some((entry, decision)) = state.pended.take_deferred(handle) else { return };
    let device = entry.extra as *const DEVICE_OBJECT;
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(device) }) else { return };
    // SAFETY: the pended IRP, taken from the table: resumed once.
    let _ = unsafe { resume_now(state, device, ext, handle as *mut IRP, decision, true) };
}

impl<F: Filter> PostBackend for Deferrer<F> {
    fn defer(&self, handle: usize) -> bool {
        // SAFETY: called from filter code of this image.
        let Some(state) = (unsafe { DriverState::<F>::current() }) else { return false };
        state.deferred_posts.defer(handle)
    }

    fn complete(&self, handle: usize) {
        // SAFETY: called from filter code of this image.
        let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
        // Before the post callback returned, only recorded: `hold` continues completion then.
        if state.deferred_posts.complete(handle) != Completion::Resume {
            return;
        }
        let irp = handle as *mut IRP;
        // SAFETY: an IRP whose completion this driver holds at its location.
        let device = unsafe { raw::location(irp) }.DeviceObject;
        // SAFETY: our device.
        let ext = unsafe { state.ext(device) };
        // SAFETY: resume the completion we held, once.
        unsafe { IoCompleteRequest(irp, IO_NO_INCREMENT) };
        // Ended once the completion went on, whose location was the device's (the end may retire
        // it).
        if let Some(ext) = ext {
            state.end(ext);
        }
    }
}

/// The on-demand buffer of a post callback: the data a successful read returned.
///
/// # Safety
/// `irp` must stay live while the view built on the source exists.
unsafe fn post_source(
    irp: *mut IRP,
    major: MajorFunction,
    result: IoStatus,
) -> OnDemandBuffer<view::Buffers> {
    // SAFETY: the caller's contract (a live IRP of a `major` operation); `view::Buffers`
    // answers the IRP's buffer.
    unsafe {
        OnDemandBuffer::<view::Buffers>::post(
            irp as usize,
            major,
            result.information,
            result.status.is_success(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_follow_the_model_rules() {
        assert_eq!(
            IoStatus::new(Status::PENDING).for_completion(false).status,
            Status::INVALID_DEVICE_STATE
        );
        assert_eq!(
            IoStatus::new(Status::ACCESS_DENIED).for_completion(true).status,
            Status::SUCCESS
        );
        assert_eq!(
            IoStatus::new(Status::ACCESS_DENIED).for_completion(false).status,
            Status::ACCESS_DENIED
        );
    }
}
