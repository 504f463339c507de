//! The `extern "system"` trampolines the Filter Manager calls: each finds the driver's state,
//! builds the model's view, calls the filter, reports a trace event, and maps the answer back.
//! No filter code contains `unsafe`; all of it is here (style.md, convention 1).

use core::ffi::c_void;
use core::marker::PhantomData;

use fsfilter::trace::TraceEvent;
use fsfilter::{
    DataScanMode, Error, FilesystemType, Filter, Instance, InstanceId, InstanceSetup,
    InstanceSetupFlags, IoStatus, IrpFlags, LazyHeader, MajorFunction, OperationBuffer,
    OperationKind, PendBackend, PostBackend, PostFlags, PostOperation, PostOutcome, PreOperation,
    PreOutcome, PreResume, SectionId, Status, TeardownFlags, UnloadFlags, VolumeDeviceType,
    VolumeInfo,
};
use fsfilter_kernel::buffer::OnDemandBuffer;
use fsfilter_kernel::constants::{flt_postop, flt_preop};
use fsfilter_kernel::trace;
use windows_sys::Wdk::Foundation::NonPagedPoolNx;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_INSTANCE_CONTEXT, FLT_RELATED_OBJECTS, FLT_SET_CONTEXT_KEEP_IF_EXISTS,
    FltAllocateContext, FltCompletePendedPostOperation, FltCompletePendedPreOperation,
    FltDoCompletionProcessingWhenSafe, FltRegisterForDataScan, FltReleaseContext,
    FltSetInstanceContext, PFLT_CONTEXT, PFLT_INSTANCE,
};
use windows_sys::Win32::Foundation::NTSTATUS;

use crate::services::{OpServices, defer_worker, try_defer_worker};
use crate::state::{DriverState, InstanceState};
use crate::view;
use fsfilter_kernel::context::{decode, encode};
use fsfilter_kernel::deferred::{Completion, PostReturned};
use fsfilter_kernel::pending::{Asked, Decision, PendedEntry, PreReturned, Resume};

// ---------------------------------------------------------------------------------------------
// Instance state

/// An instance's state, from the instance table: the instance's context, which the Filter Manager
/// keeps alive while the instance's callbacks can run (no reference taken).
pub(crate) struct InstanceRef<'a, F: Filter> {
    state: &'a InstanceState<F>,
    instance: PFLT_INSTANCE,
}

impl<'a, F: Filter> InstanceRef<'a, F> {
    pub(crate) fn view(&self) -> Instance<'_, F::InstanceContext> {
        Instance {
            context: &self.state.context,
            volume: self.state.volume,
            data_scan: self.state.data_scan,
            id: InstanceId(self.instance as usize),
        }
    }

    /// The state.
    pub(crate) fn state(&self) -> &InstanceState<F> {
        self.state
    }
}

/// The instance's state, from the instance table, which post callbacks can read at
/// `DISPATCH_LEVEL`. Every instance of this filter is in it: instance setup (declared or not)
/// records the state there, and refuses the instance when the table cannot hold it; it leaves
/// only in the context's cleanup, after the last callback. None for an instance that is not
/// (the callback is then skipped). Before December 6 a `FltGetInstanceContext` fallback stood
/// here, for instances the table could not hold, which setup refuses: no test or stress case
/// reached it.
///
/// # Safety
/// `instance` must be an instance of this filter, valid during the running callback.
pub(crate) unsafe fn instance_state<'a, F: Filter>(
    driver: &DriverState<F>,
    instance: PFLT_INSTANCE,
) -> Option<InstanceRef<'a, F>> {
    let context = driver.instances.get(instance as usize)?;
    // SAFETY: the instance's context, kept alive by the Filter Manager while the table holds it
    // (the InstanceTable invariant); the backend wrote an InstanceState<F> into it.
    let state = unsafe { &*(context as *const InstanceState<F>) };
    Some(InstanceRef { state, instance })
}

/// Allocates an instance context holding `state` and sets it on `instance`. Returns the context,
/// referenced (the caller releases it).
///
/// # Safety
/// `instance` must be valid.
unsafe fn attach_state<F: Filter>(
    driver: &DriverState<F>,
    instance: PFLT_INSTANCE,
    state: InstanceState<F>,
) -> Result<PFLT_CONTEXT, Error> {
    let mut context: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a registered filter, a registered context type of exactly this size.
    let status = unsafe {
        FltAllocateContext(
            driver.handle,
            FLT_INSTANCE_CONTEXT as u16,
            core::mem::size_of::<InstanceState<F>>(),
            NonPagedPoolNx,
            &mut context,
        )
    };
    if let Some(e) = Error::new(Status(status)) {
        return Err(e);
    }
    // SAFETY: the context block is at least size_of::<InstanceState<F>>() bytes, aligned for it
    // (pool alignment), and uninitialized.
    unsafe { context.cast::<InstanceState<F>>().write(state) };
    let mut old: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a valid instance and a context of this filter.
    let status = unsafe {
        FltSetInstanceContext(instance, FLT_SET_CONTEXT_KEEP_IF_EXISTS, context, &mut old)
    };
    if status < 0 {
        // Another thread set one first (or the instance is going away): drop ours (the cleanup
        // callback drops the state) and use theirs.
        // SAFETY: our context, released once.
        unsafe { FltReleaseContext(context) };
        if old.is_null() {
            return Err(Error::new(Status(status)).unwrap_or(Error::UNSUCCESSFUL));
        }
        // SAFETY: the other context, referenced for us by FltSetInstanceContext.
        return unsafe { record(driver, instance, old) };
    }
    // SAFETY: ours, referenced and set on the instance.
    unsafe { record(driver, instance, context) }
}

/// Records the referenced instance context `context` in the instance table, where callbacks above
/// `APC_LEVEL` find it. Without the memory for the table to grow, the instance is refused: its
/// callbacks at `DISPATCH_LEVEL` could not see their state, and a post callback would be lost.
///
/// # Safety
/// `context` must be a referenced instance context of this filter, set on `instance`.
unsafe fn record<F: Filter>(
    driver: &DriverState<F>,
    instance: PFLT_INSTANCE,
    context: PFLT_CONTEXT,
) -> Result<PFLT_CONTEXT, Error> {
    if driver.instances.insert(instance as usize, context as usize) {
        return Ok(context);
    }
    // SAFETY: the caller's reference, released once; the context stays set on the instance,
    // whose failed setup frees it, and its cleanup callback drops the state.
    unsafe { FltReleaseContext(context) };
    Err(Error::INSUFFICIENT_RESOURCES)
}

/// `ContextCleanupCallback` for instance contexts: drops the instance state.
pub(crate) unsafe extern "system" fn instance_context_cleanup<F: Filter>(
    context: PFLT_CONTEXT,
    _kind: u16,
) {
    // No callback of the instance runs any more: forget it before its state goes.
    // SAFETY: this image's state.
    if let Some(driver) = unsafe { DriverState::<F>::current() } {
        driver.instances.remove_context(context as usize);
    }
    // SAFETY: the Filter Manager calls this once per instance context, after the last reference is
    // gone; the backend wrote an InstanceState<F> into it.
    unsafe { core::ptr::drop_in_place(context.cast::<InstanceState<F>>()) };
}

// ---------------------------------------------------------------------------------------------
// Instance setup and teardown

/// `InstanceSetupCallback`.
pub(crate) unsafe extern "system" fn instance_setup<F: Filter>(
    objects: *const FLT_RELATED_OBJECTS,
    flags: u32,
    volume_device_type: u32,
    volume_filesystem_type: i32,
) -> NTSTATUS {
    // SAFETY: the image global of this image holds its DriverState<F>.
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else {
        return Status::FLT_DO_NOT_ATTACH.0;
    };
    // SAFETY: the Filter Manager passes valid related objects.
    let Some(objects) = (unsafe { objects.as_ref() }) else { return Status::FLT_DO_NOT_ATTACH.0 };
    let instance = objects.Instance;
    let volume = VolumeInfo {
        device_type: VolumeDeviceType::from_raw(volume_device_type),
        filesystem: FilesystemType::from_raw(volume_filesystem_type as u32),
    };
    let flags = InstanceSetupFlags::from_bits_retain(flags);
    let data_scan = if fsfilter::scans_data::<F>() && driver.registered.scans_data() {
        // SAFETY: a valid instance being set up (facts.md §6: register before creating sections).
        match Status(unsafe { FltRegisterForDataScan(instance) }) {
            s if s.is_success() => DataScanMode::FilterManager,
            Status::NOT_SUPPORTED => DataScanMode::FsRtlFallback,
            // Any other refusal: no scanning here; the filter decides whether to attach anyway
            // (it sees `DataScanMode::NotRequested`).
            _ => DataScanMode::NotRequested,
        }
    } else {
        DataScanMode::NotRequested
    };
    // Without a declared instance-setup callback every volume is attached (facts.md §2.5), with
    // the state `Filter::default_instance` builds, and none when it builds none (refused, as the
    // legacy backend attaches no device). The backend registers this routine all the same, so
    // that the state is made here, at PASSIVE_LEVEL, where a post callback at DISPATCH_LEVEL
    // finds it in the instance table, and so that a data-scanning filter registers for data scan
    // (facts.md §6) either way.
    let declared = driver.registered.instance_setup();
    let answer = if declared {
        let services = OpServices::<F>::for_instance(driver, instance, data_scan);
        let setup = InstanceSetup {
            flags,
            volume,
            data_scan,
            id: InstanceId(instance as usize),
            services: &services,
        };
        driver.filter.instance_setup(&setup)
    } else {
        driver.filter.default_instance().ok_or(Error::FLT_DO_NOT_ATTACH)
    };
    let status = match answer {
        Ok(context) => {
            let state = InstanceState::<F> { context, volume, data_scan };
            // SAFETY: a valid instance being set up.
            match unsafe { attach_state(driver, instance, state) } {
                Ok(context) => {
                    // SAFETY: releases the reference attach_state returned.
                    unsafe { FltReleaseContext(context) };
                    Status::SUCCESS
                }
                Err(e) => e.status(),
            }
        }
        Err(e) => e.status(),
    };
    if declared {
        report_setup(objects, flags, volume, data_scan, status);
    }
    status.0
}

fn report_setup(
    objects: &FLT_RELATED_OBJECTS,
    flags: InstanceSetupFlags,
    volume: VolumeInfo,
    data_scan: DataScanMode,
    status: Status,
) {
    trace::emit(&TraceEvent::InstanceSetup {
        instance: InstanceId(objects.Instance as usize),
        volume_object: objects.Volume as usize,
        flags,
        volume,
        data_scan,
        status,
    });
}

/// `InstanceQueryTeardownCallback`.
pub(crate) unsafe extern "system" fn instance_query_teardown<F: Filter>(
    objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
) -> NTSTATUS {
    // SAFETY: as in instance_setup.
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return Status::SUCCESS.0 };
    // SAFETY: valid related objects.
    let Some(objects) = (unsafe { objects.as_ref() }) else { return Status::SUCCESS.0 };
    // SAFETY: an instance of this filter.
    let status = match unsafe { instance_state(driver, objects.Instance) } {
        Some(inst) => match driver.filter.instance_query_teardown(&inst.view()) {
            Ok(()) => Status::SUCCESS,
            Err(e) => e.status(),
        },
        None => Status::SUCCESS,
    };
    trace::emit(&TraceEvent::InstanceQueryTeardown {
        instance: InstanceId(objects.Instance as usize),
        status,
    });
    status.0
}

/// `InstanceTeardownStartCallback`.
pub(crate) unsafe extern "system" fn instance_teardown_start<F: Filter>(
    objects: *const FLT_RELATED_OBJECTS,
    reason: u32,
) {
    // SAFETY: forwarded.
    unsafe { teardown::<F>(objects, reason, false) }
}

/// `InstanceTeardownCompleteCallback`.
pub(crate) unsafe extern "system" fn instance_teardown_complete<F: Filter>(
    objects: *const FLT_RELATED_OBJECTS,
    reason: u32,
) {
    // SAFETY: forwarded.
    unsafe { teardown::<F>(objects, reason, true) }
}

/// # Safety
/// Called by the Filter Manager with valid related objects.
unsafe fn teardown<F: Filter>(objects: *const FLT_RELATED_OBJECTS, reason: u32, complete: bool) {
    // SAFETY: as in instance_setup.
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return };
    // SAFETY: valid related objects.
    let Some(objects) = (unsafe { objects.as_ref() }) else { return };
    let reason = TeardownFlags::from_bits_retain(reason);
    let id = InstanceId(objects.Instance as usize);
    // SAFETY: an instance of this filter.
    if let Some(inst) = unsafe { instance_state(driver, objects.Instance) } {
        if complete {
            driver.filter.instance_teardown_complete(&inst.view(), reason);
        } else {
            driver.filter.instance_teardown_start(&inst.view(), reason);
        }
    }
    trace::emit(&if complete {
        TraceEvent::TeardownComplete { instance: id, reason }
    } else {
        TraceEvent::TeardownStart { instance: id, reason }
    });
}

// ---------------------------------------------------------------------------------------------
// Operations

/// The pend backend of filter `F`: a zero-sized static, so `&'static` is free.
pub(crate) struct Pender<F>(PhantomData<fn() -> F>);
/// The post-deferral backend of filter `F`.
pub(crate) struct Deferrer<F>(PhantomData<fn() -> F>);

fn pender<F: Filter>() -> &'static dyn PendBackend<F::CompletionContext> {
    const { &Pender::<F>(PhantomData) }
}

fn deferrer<F: Filter>() -> &'static dyn PostBackend {
    const { &Deferrer::<F>(PhantomData) }
}

/// The decision for a pended operation of this filter, made under the pended table's lock from
/// what the entry recorded at the pend (`Asked::decide`).
fn decide<F: Filter>(driver: &DriverState<F>, asked: &Asked, entry: &PendedEntry) -> Decision {
    let major = MajorFunction::from_code(entry.major);
    asked.decide(major, driver.registered.has_post(major))
}

impl<F: Filter> PendBackend<F::CompletionContext> for Pender<F> {
    fn pend(&self, handle: usize) -> bool {
        // SAFETY: called from filter code of this image.
        let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return false };
        // SAFETY: the handle is the callback data of the running pre callback, valid during it.
        let iopb = unsafe { (*(handle as *const FLT_CALLBACK_DATA)).Iopb };
        // SAFETY: its parameter block, or null.
        let Some(major) = (unsafe { iopb.as_ref() }).map(|i| i.MajorFunction) else { return false };
        driver.pended.add(handle, 0, major)
    }

    // A resume never reads or writes the callback data before the table hands it over: until
    // then the operation may have gone on and finished (its pre callback answered something other
    // than pending). The decision, completion status included, is made from the entry.
    fn resume(&self, handle: usize, how: PreResume<F::CompletionContext>) {
        if fsfilter_kernel::irql::current() > fsfilter::Irql::APC {
            // Sending the operation on calls the drivers below: FltCompletePendedPreOperation
            // takes it at APC_LEVEL at most, so from a DPC the resumption is a worker's, as a
            // delayed one is (the legacy backend does the same).
            self.resume_after(handle, 0, how);
            return;
        }
        // SAFETY: called from filter code of this image.
        let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return };
        let asked = Asked::new(how);
        let resume = driver.pended.resume(handle, |e| decide(driver, &asked, e));
        // SAFETY: this backend's resume contexts are `F::CompletionContext`s, released once.
        unsafe { asked.release::<F::CompletionContext>(resume.taken()) };
        // Recorded: the pre callback is still running and answers with the decision.
        if let Resume::Now(_, decision) = resume {
            // SAFETY: a callback data this filter pended, taken from the table: the Filter
            // Manager keeps it valid until it is completed here, once.
            unsafe { complete_pended(handle, decision) }
        }
    }

    fn resume_after(&self, handle: usize, delay_ms: u32, how: PreResume<F::CompletionContext>) {
        // SAFETY: called from filter code of this image.
        let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return };
        let asked = Asked::new(how);
        let deferred = driver.pended.resume_after(handle, delay_ms, |e| decide(driver, &asked, e));
        // SAFETY: as in `resume`.
        unsafe { asked.release::<F::CompletionContext>(deferred.map(|(_, d)| d)) };
        // Not returned yet: the pre path hands the deferral to the worker.
        if deferred.is_some_and(|(e, _)| e.returned) {
            defer_worker::<F>(driver, handle);
        }
    }
}

/// Completes a pended pre-operation with `decision`.
///
/// # Safety
/// `handle` must be a callback data this filter pended and has not completed, taken from the
/// pended table with `decision`.
pub(crate) unsafe fn complete_pended(handle: usize, decision: Decision) {
    let data = handle as *mut FLT_CALLBACK_DATA;
    if let Some(io) = decision.completion() {
        // SAFETY: the caller guarantees `data` is a live pended operation of ours.
        unsafe { view::set_io_status(data, io) };
    }
    // SAFETY: as above: a live callback data.
    let iopb = unsafe { (*data).Iopb };
    // SAFETY: its parameter block, or null.
    let instance = unsafe { iopb.as_ref() }.map_or(0, |i| i.TargetInstance as usize);
    trace::emit(&TraceEvent::Resumed {
        instance: InstanceId(instance),
        operation: handle,
        outcome: PreOutcome::<()>::wdk_name_of(decision.code),
    });
    // SAFETY: as above; completed once.
    unsafe { FltCompletePendedPreOperation(data, decision.code, decision.completion_context()) };
}

impl<F: Filter> PostBackend for Deferrer<F> {
    fn defer(&self, handle: usize) -> bool {
        // SAFETY: called from filter code of this image.
        let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return false };
        driver.deferred_posts.defer(handle)
    }

    fn complete(&self, handle: usize) {
        // SAFETY: called from filter code of this image.
        let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return };
        // Before the post callback returned the operation is not pended yet (the Filter Manager
        // would refuse it): only recorded, and the callback's answer becomes
        // FLT_POSTOP_FINISHED_PROCESSING (`post_operation`).
        if driver.deferred_posts.complete(handle) == Completion::Resume {
            // SAFETY: a callback data whose post callback this filter deferred and returned
            // FLT_POSTOP_MORE_PROCESSING_REQUIRED for (held in the table), completed once.
            unsafe { FltCompletePendedPostOperation(handle as *const FLT_CALLBACK_DATA) };
        }
    }
}

/// `PFLT_PRE_OPERATION_CALLBACK` for every registered pre callback.
pub(crate) unsafe extern "system" fn pre_operation<F: Filter>(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
) -> i32 {
    // SAFETY: the image global of this image holds its DriverState<F>.
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else {
        return flt_preop::SUCCESS_NO_CALLBACK;
    };
    // SAFETY: the Filter Manager passes valid related objects.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return flt_preop::SUCCESS_NO_CALLBACK;
    };
    // SAFETY: an instance of this filter.
    let Some(inst) = (unsafe { instance_state(driver, objects.Instance) }) else {
        return flt_preop::SUCCESS_NO_CALLBACK;
    };
    // SAFETY: `data` is the valid callback data of this call.
    let Some((data_ref, iopb)) = (unsafe { view::parts(data) }) else {
        return flt_preop::SUCCESS_NO_CALLBACK;
    };
    let major = MajorFunction::from_code(iopb.MajorFunction);
    let kind = view::kind(data_ref);
    // SAFETY: as above, for this call.
    let source = unsafe { view::CallbackHeader::new(data_ref, iopb) };
    // Built only if filter logic asks (or data scanning needs it just below).
    let header = LazyHeader::on_demand(&source, major, data as usize);
    if fsfilter::scans_data::<F>()
        && inst.state().data_scan == DataScanMode::FsRtlFallback
        && fsfilter_kernel::datascan::conflicts_with_sections(header.get())
    {
        // SAFETY: the running operation's file object, if any.
        let stream = unsafe { objects.FileObject.as_ref() }.map_or(0, |f| f.FsContext as usize);
        for (record, closing) in
            driver.sections.conflict(objects.Instance as usize, stream).into_iter().flatten()
        {
            let section = SectionId(record);
            driver.filter.section_conflict(&inst.view(), section);
            trace::emit(&TraceEvent::SectionConflict {
                instance: InstanceId(objects.Instance as usize),
                section,
            });
            // SAFETY: handed out once by the table; pre callbacks of writes and set-information
            // run at PASSIVE_LEVEL. The section closes so the conflicting I/O proceeds.
            unsafe { closing.finish() };
        }
    }
    if let Some(own) =
        fsfilter::scans_data::<F>().then(|| driver.registered.guarded(major)).flatten()
    {
        // Called for every write and set-information of a filter that scans data (the table has
        // no skip flags for them, `tables::operation_table`): the filter's own registration of
        // the operation applies from here, as the Filter Manager would have applied it.
        match own {
            Some(op) if op.has_skip_flags() && op.skips(header.get()) => {
                return flt_preop::SUCCESS_NO_CALLBACK;
            }
            Some(op) if op.pre => {}
            // Post only: the post callback gets the zero-sized context (checked at load).
            Some(op) if op.post => return flt_preop::SUCCESS_WITH_CALLBACK,
            _ => return flt_preop::SUCCESS_NO_CALLBACK,
        }
    }
    // SAFETY: the callback data of a `major` operation stays valid while `op` lives (this call),
    // and `view::Buffers` answers its write buffer.
    let buffer_source = unsafe { OnDemandBuffer::<view::Buffers>::pre(data as usize, major) };
    // SAFETY: the running pre callback's instance and data, used only during this call.
    let services = unsafe {
        OpServices::<F>::for_operation(driver, objects.Instance, data, inst.state().data_scan)
    };
    let can_pend = kind == OperationKind::Irp;
    let buffer = OperationBuffer::on_demand(&buffer_source);
    let mut op = PreOperation::new(&header, buffer, &services, can_pend.then(pender::<F>));
    let outcome = driver.filter.pre_operation(&inst.view(), &mut op);
    // Rule 11: `Synchronize` is illegal for some operations (facts.md §4); they get a post
    // callback as for `WithPost`.
    let outcome = match outcome {
        PreOutcome::Synchronize(c) if !header.get().may_synchronize() => PreOutcome::WithPost(c),
        outcome => outcome,
    };
    // SAFETY: the running pre callback's data.
    let (status, context, reported) =
        unsafe { map_pre_outcome(driver, major, kind, data, outcome) };
    trace::emit_with(|| TraceEvent::Pre {
        instance: InstanceId(objects.Instance as usize),
        operation: data as usize,
        major,
        minor: iopb.MinorFunction,
        kind,
        outcome: reported.0,
        status: reported.1,
    });
    if !completion_context.is_null() {
        // SAFETY: the Filter Manager's out parameter for the completion context.
        unsafe { *completion_context = context };
    }
    status
}

/// Maps a pre outcome to `FLT_PREOP_*` and a completion context, enforcing the model's rules
/// (docs/callback-model.md) so that no outcome breaks a Filter Manager rule. Returns the status,
/// the context, and what to report (the WDK name and completion status actually used).
///
/// # Safety
/// `data` must be the callback data of the running pre callback (a completion's status is
/// written into it).
unsafe fn map_pre_outcome<F: Filter>(
    driver: &DriverState<F>,
    major: MajorFunction,
    kind: OperationKind,
    data: *mut FLT_CALLBACK_DATA,
    outcome: PreOutcome<F::CompletionContext>,
) -> (i32, *mut c_void, (&'static str, Option<Status>)) {
    let has_post = driver.registered.has_post(major);
    // Cleanup, close or an FsFilter release: cannot fail (rule 5).
    let cleanup_or_close = major.cannot_fail();
    let id = data as usize;
    let no_post = (
        flt_preop::SUCCESS_NO_CALLBACK,
        core::ptr::null_mut(),
        ("FLT_PREOP_SUCCESS_NO_CALLBACK", None),
    );
    let complete = |io: IoStatus| {
        // SAFETY: `data` is the callback data of the running pre callback, which may complete it.
        unsafe { view::set_io_status(data, io) };
        (flt_preop::COMPLETE, core::ptr::null_mut(), ("FLT_PREOP_COMPLETE", Some(io.status)))
    };
    let with_context = |c: F::CompletionContext, status: i32, name: &'static str| {
        if !has_post {
            // Rule 6: a post callback needs a registered post callback.
            drop(c);
            return no_post;
        }
        match encode(c) {
            Ok(p) => (status, p, (name, None)),
            // Rule 7: no room for the context: fail closed, except for cleanup and close.
            Err(c) => {
                drop(c);
                if cleanup_or_close {
                    no_post
                } else {
                    complete(IoStatus::new(Status::INSUFFICIENT_RESOURCES))
                }
            }
        }
    };
    // A decision a resume made before the pre callback returned: this thread still owns the
    // callback data and writes a completion's status into it.
    let answer = |d: Decision| {
        let io = d.completion();
        if let Some(io) = io {
            // SAFETY: `data` is the callback data of the running pre callback.
            unsafe { view::set_io_status(data, io) };
        }
        (
            d.code,
            d.completion_context(),
            (PreOutcome::<()>::wdk_name_of(d.code), io.map(|i| i.status)),
        )
    };
    let result = match outcome {
        PreOutcome::WithPost(c) => {
            with_context(c, flt_preop::SUCCESS_WITH_CALLBACK, "FLT_PREOP_SUCCESS_WITH_CALLBACK")
        }
        PreOutcome::Synchronize(c) => {
            with_context(c, flt_preop::SYNCHRONIZE, "FLT_PREOP_SYNCHRONIZE")
        }
        PreOutcome::NoPost => no_post,
        // Rules 5 and 13: cleanup and close cannot fail; no reserved completion statuses.
        PreOutcome::Complete(io) => complete(io.for_completion(cleanup_or_close)),
        PreOutcome::DisallowFastIo => {
            let allowed = kind == OperationKind::FastIo
                && !matches!(
                    major,
                    MajorFunction::Shutdown
                        | MajorFunction::VolumeMount
                        | MajorFunction::VolumeDismount
                );
            if allowed {
                (
                    flt_preop::DISALLOW_FASTIO,
                    core::ptr::null_mut(),
                    ("FLT_PREOP_DISALLOW_FASTIO", None),
                )
            } else {
                no_post
            }
        }
        PreOutcome::DisallowFsFilterIo => {
            if major == MajorFunction::QueryOpen {
                (
                    flt_preop::DISALLOW_FSFILTER_IO,
                    core::ptr::null_mut(),
                    ("FLT_PREOP_DISALLOW_FSFILTER_IO", None),
                )
            } else {
                no_post
            }
        }
        PreOutcome::Pending(_receipt) => match driver.pended.pre_returned(id) {
            // Resumed before the pre callback returned: answer with that decision now.
            PreReturned::Early(d) => answer(d),
            PreReturned::Pended { deferred } => {
                // A delayed resume set during the pre callback is handed to a timer or work item
                // now. When nothing can be allocated for it, the operation is not pended at all:
                // FltCompletePendedPreOperation may not be called before the pre callback has
                // returned FLT_PREOP_PENDING, so the decision is answered here instead (the
                // delay is dropped).
                let unarmed = deferred && !try_defer_worker::<F>(driver, id);
                let taken = if unarmed { driver.pended.take(id) } else { None };
                match taken.and_then(|e| e.deferred()) {
                    Some((d, _)) => answer(d),
                    None => {
                        (flt_preop::PENDING, core::ptr::null_mut(), ("FLT_PREOP_PENDING", None))
                    }
                }
            }
            PreReturned::Unknown => no_post,
        },
    };
    if result.0 != flt_preop::PENDING {
        // A token taken for an operation that was not pended resumes nothing.
        // SAFETY: this backend encodes the contexts of its resumes with a post from
        // `F::CompletionContext` (`Asked::new`).
        unsafe { driver.pended.forget::<F::CompletionContext>(id) };
    }
    result
}

/// `PFLT_POST_OPERATION_CALLBACK` for every registered post callback.
pub(crate) unsafe extern "system" fn post_operation<F: Filter>(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const c_void,
    flags: u32,
) -> i32 {
    // SAFETY: the context was encoded by this filter's pre callback for this operation; the
    // Filter Manager passes it to exactly one post callback.
    let context = unsafe { decode::<F::CompletionContext>(completion_context) };
    // SAFETY: forwarded.
    unsafe { post_common::<F>(data, objects, context, flags, false) }
}

/// The safe-IRQL half of a post callback (`FltDoCompletionProcessingWhenSafe`).
unsafe extern "system" fn post_when_safe<F: Filter>(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const c_void,
    flags: u32,
) -> i32 {
    // SAFETY: encoded by post_common for this call, passed through once.
    let context = unsafe { decode::<F::CompletionContext>(completion_context) };
    // SAFETY: forwarded.
    unsafe { post_common::<F>(data, objects, context, flags, true) }
}

/// # Safety
/// Called from a post callback with its valid arguments.
unsafe fn post_common<F: Filter>(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: Option<F::CompletionContext>,
    flags: u32,
    when_safe: bool,
) -> i32 {
    let finished = flt_postop::FINISHED_PROCESSING;
    // SAFETY: this image's state.
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return finished };
    let Some(context) = context else { return finished };
    // SAFETY: valid related objects.
    let Some(objs) = (unsafe { objects.as_ref() }) else { return finished };
    // SAFETY: an instance of this filter.
    let Some(inst) = (unsafe { instance_state(driver, objs.Instance) }) else { return finished };
    // SAFETY: the running callback's data.
    let Some((data_ref, iopb)) = (unsafe { view::parts(data) }) else { return finished };
    let major = MajorFunction::from_code(iopb.MajorFunction);
    let kind = view::kind(data_ref);
    // SAFETY: as above, for this call.
    let source = unsafe { view::CallbackHeader::new(data_ref, iopb) };
    // Built only if filter logic asks.
    let header = LazyHeader::on_demand(&source, major, data as usize);
    let post_flags = PostFlags::from_bits_retain(flags);
    let draining = post_flags.contains(PostFlags::DRAINING);
    // SAFETY: the running callback's data.
    let result = unsafe { view::io_status(data) };
    // SAFETY: the callback data of a `major` operation stays valid while `op` lives (this call),
    // and `view::Buffers` answers its read buffer.
    let buffer_source = unsafe {
        OnDemandBuffer::<view::Buffers>::post(
            data as usize,
            major,
            result.information,
            !draining && result.status.is_success(),
        )
    };
    let buffer = OperationBuffer::on_demand(&buffer_source);
    // SAFETY: the running post callback's instance and data, used only during this call.
    let services = unsafe {
        OpServices::<F>::for_operation(driver, objs.Instance, data, inst.state().data_scan)
    };
    let irp = kind == OperationKind::Irp;
    let paging = IrpFlags::from_bits_retain(iopb.IrpFlags).contains(IrpFlags::PAGING_IO);
    let can_defer = irp && !draining;
    let mut op =
        PostOperation::new(&header, result, buffer, &services, can_defer.then(deferrer::<F>));
    let outcome = if when_safe {
        driver.filter.post_operation_when_safe(&inst.view(), &mut op, context)
    } else {
        driver.filter.post_operation(&inst.view(), &mut op, context, post_flags)
    };
    if !matches!(outcome, PostOutcome::MoreProcessing(_)) {
        // A deferral the callback did not keep: its token holds nothing from now on.
        let _ = driver.deferred_posts.post_returned(data as usize, false);
    }
    let (status, name) = match outcome {
        PostOutcome::Finished => (finished, "FLT_POSTOP_FINISHED_PROCESSING"),
        // Rule 9: a draining post callback only cleans up.
        PostOutcome::WhenSafe(c) if draining || when_safe || !irp || paging => {
            drop(c);
            (finished, "FLT_POSTOP_FINISHED_PROCESSING")
        }
        PostOutcome::WhenSafe(c) => match encode(c) {
            Ok(raw) => {
                let mut status = finished;
                // SAFETY: an IRP-based, non-paging operation in its post callback; the safe
                // callback decodes `raw` once if it runs.
                let posted = unsafe {
                    FltDoCompletionProcessingWhenSafe(
                        data,
                        objects,
                        raw,
                        0,
                        Some(post_when_safe::<F>),
                        &mut status,
                    )
                };
                if !posted {
                    // SAFETY: the safe callback did not run, so the context is still ours.
                    drop(unsafe { decode::<F::CompletionContext>(raw) });
                }
                (
                    status,
                    if status == flt_postop::MORE_PROCESSING_REQUIRED {
                        "FLT_POSTOP_MORE_PROCESSING_REQUIRED"
                    } else {
                        "FLT_POSTOP_FINISHED_PROCESSING"
                    },
                )
            }
            Err(c) => {
                drop(c);
                (finished, "FLT_POSTOP_FINISHED_PROCESSING")
            }
        },
        PostOutcome::MoreProcessing(_receipt) => {
            match driver.deferred_posts.post_returned(data as usize, true) {
                // From here the token may complete it at any time, from any thread: the Filter
                // Manager must have the answer before it can, which is the window every minifilter
                // that queues its work before answering has.
                PostReturned::Held => {
                    (flt_postop::MORE_PROCESSING_REQUIRED, "FLT_POSTOP_MORE_PROCESSING_REQUIRED")
                }
                // The token completed before the callback returned (or the receipt was another
                // operation's): nothing holds the operation.
                PostReturned::CompletedEarly | PostReturned::NotDeferred => {
                    (finished, "FLT_POSTOP_FINISHED_PROCESSING")
                }
            }
        }
    };

    trace::emit_with(|| TraceEvent::Post {
        instance: InstanceId(objs.Instance as usize),
        operation: data as usize,
        major,
        draining,
        when_safe,
        outcome: name,
        status: result.status,
    });
    status
}

// ---------------------------------------------------------------------------------------------
// Unload and section conflicts

/// `FilterUnloadCallback`.
pub(crate) unsafe extern "system" fn filter_unload<F: Filter>(flags: u32) -> NTSTATUS {
    let flags = UnloadFlags::from_bits_retain(flags);
    // SAFETY: this image's state.
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return Status::SUCCESS.0 };
    let answer = driver.filter.unload(flags);
    let status = match answer {
        Err(e) if !flags.contains(UnloadFlags::MANDATORY) => e.status(),
        _ => Status::SUCCESS,
    };
    trace::emit(&TraceEvent::Unload {
        flags,
        status: answer.err().map_or(Status::SUCCESS, Error::status),
    });
    if !status.is_success() {
        return status.0;
    }
    // SAFETY: this image's registered filter, and its state, which nothing uses once
    // FltUnregisterFilter has torn every instance down and waited for rundown.
    unsafe { crate::entry::unregister_and_free::<F>() };
    Status::SUCCESS.0
}

/// `SectionNotificationCallback`: conflicting I/O needs a data-scan section closed.
pub(crate) unsafe extern "system" fn section_conflict<F: Filter>(
    instance: PFLT_INSTANCE,
    section_context: PFLT_CONTEXT,
    _data: *const FLT_CALLBACK_DATA,
) -> NTSTATUS {
    // SAFETY: this image's state.
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return Status::SUCCESS.0 };
    // SAFETY: an instance of this filter.
    if let Some(inst) = unsafe { instance_state(driver, instance) } {
        // Marked conflicted, and what to close taken, under the table's lock; a section the
        // filter already closed (no longer in the table) needs nothing.
        let closing = driver.sections.with(section_context as usize, |s| {
            s.conflicted = true;
            s.begin_close()
        });
        let section = SectionId(section_context as usize);
        driver.filter.section_conflict(&inst.view(), section);
        trace::emit(&TraceEvent::SectionConflict {
            instance: InstanceId(instance as usize),
            section,
        });
        if let Some(Some(closing)) = closing {
            // SAFETY: our section context, closed once; the notification comes at
            // PASSIVE_LEVEL. The conflicting I/O can then proceed.
            unsafe { crate::services::close_flt_section(section_context, closing) };
        }
    }
    Status::SUCCESS.0
}
