//! What the backend offers filter code during a callback ([`fsfilter::Services`]): the IRQL, trace
//! notes, and data-scan sections; plus the workers that resume deferred pended operations.

use core::ffi::c_void;
use core::marker::PhantomData;

use fsfilter::trace::TraceEvent;
use fsfilter::{
    DataScanMode, Error, FileNameInformation, Filter, InstanceId, IoStatus, Irql, MajorFunction,
    NameKind, ScanSection, SectionId, Services, Status,
};
use fsfilter_kernel::context::decode;
use fsfilter_kernel::datascan::{self, OpenSection, SectionOrigin, SectionState};
use fsfilter_kernel::pending::Asked;
use fsfilter_kernel::pool::PoolBox;
use fsfilter_kernel::{irql, trace};
use windows_sys::Wdk::Foundation::NonPagedPoolNx;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_SECTION_CONTEXT, FltAllocateContext, FltAllocateGenericWorkItem,
    FltCancelFileOpen, FltCloseSectionForDataScan, FltCreateSectionForDataScan,
    FltFreeGenericWorkItem, FltGetRequestorProcessId, FltQueueGenericWorkItem, FltReleaseContext,
    FltSetCallbackDataDirty, PFLT_CONTEXT, PFLT_GENERIC_WORKITEM, PFLT_INSTANCE,
};
use windows_sys::Wdk::System::SystemServices::DelayedWorkQueue;
use windows_sys::Win32::Foundation::HANDLE;

use crate::callbacks::complete_pended;
use crate::state::DriverState;

/// The minifilter's section source: the running driver's table; records of either origin.
pub(crate) struct Sections<F>(PhantomData<fn() -> F>);

impl<F: Filter> datascan::SectionSource for Sections<F> {
    fn table<'a>() -> Option<&'a datascan::SectionTable> {
        // SAFETY: called from filter code of this image.
        unsafe { DriverState::<F>::current() }.map(|d| &d.sections)
    }

    unsafe fn teardown(record: *mut SectionState) {
        // SAFETY: forwarded.
        unsafe { teardown_section(record) }
    }
}

/// Unmaps, closes and frees a record of either origin.
///
/// # Safety
/// `record` must be a live record no table holds; `PASSIVE_LEVEL`.
unsafe fn teardown_section(record: *mut SectionState) {
    // SAFETY: the caller guarantees a live record, ours alone.
    let state = unsafe { &mut *record };
    match state.origin {
        // SAFETY: forwarded.
        SectionOrigin::FsRtl => unsafe { datascan::teardown(record) },
        SectionOrigin::FilterManager => {
            datascan::unmap(state);
            if let Some(closing) = state.begin_close() {
                // SAFETY: a section context of this filter whose section is closed once.
                unsafe { close_flt_section(record.cast(), closing) };
            }
            // SAFETY: the context FltAllocateContext gave us, released once.
            unsafe { FltReleaseContext(record.cast()) };
        }
    }
}

/// Closes a section the Filter Manager created: `FltCloseSectionForDataScan`, then the handle
/// and the object reference, which stay the caller's (facts.md §6).
///
/// # Safety
/// `context` is a section context of this filter; `closing` came from its record, once;
/// `PASSIVE_LEVEL`.
pub(crate) unsafe fn close_flt_section(context: PFLT_CONTEXT, closing: datascan::Closing) {
    // SAFETY: a section context with a section FltCreateSectionForDataScan created.
    let _ = unsafe { FltCloseSectionForDataScan(context) };
    // SAFETY: the caller's contract.
    unsafe { closing.finish() };
}

/// Services for one callback.
pub(crate) struct OpServices<'a, F: Filter> {
    driver: &'a DriverState<F>,
    instance: PFLT_INSTANCE,
    data: *mut FLT_CALLBACK_DATA,
    data_scan: DataScanMode,
}

impl<'a, F: Filter> OpServices<'a, F> {
    pub(crate) fn for_instance(
        driver: &'a DriverState<F>,
        instance: PFLT_INSTANCE,
        data_scan: DataScanMode,
    ) -> Self {
        OpServices { driver, instance, data: core::ptr::null_mut(), data_scan }
    }

    /// # Safety
    /// `instance` and `data` must be the running callback's instance and callback data, valid
    /// for as long as the services are used (the services' methods read and change them).
    pub(crate) unsafe fn for_operation(
        driver: &'a DriverState<F>,
        instance: PFLT_INSTANCE,
        data: *mut FLT_CALLBACK_DATA,
        data_scan: DataScanMode,
    ) -> Self {
        OpServices { driver, instance, data, data_scan }
    }

    /// False in the post of a create that opened nothing (failed, or `STATUS_REPARSE`: rule
    /// 27); true elsewhere.
    fn create_opened(&self) -> bool {
        // SAFETY: `data` is null or the running callback's valid data.
        let Some(data) = (unsafe { self.data.as_ref() }) else { return true };
        // SAFETY: a valid callback data points to its parameter block.
        let create = unsafe { data.Iopb.as_ref() }.is_some_and(|i| i.MajorFunction == 0);
        let post = data.Flags & fsfilter_kernel::constants::fltfl_callback_data::POST_OPERATION;
        // SAFETY: the status member.
        let status = Status(unsafe { data.IoStatus.Anonymous.Status });
        !create || post == 0 || IoStatus::new(status).opened()
    }

    fn file_object(&self) -> *mut windows_sys::Wdk::Foundation::FILE_OBJECT {
        // SAFETY: `data` is null or the running callback's valid data.
        let Some(data) = (unsafe { self.data.as_ref() }) else { return core::ptr::null_mut() };
        // SAFETY: a valid callback data points to its parameter block.
        unsafe { data.Iopb.as_ref() }.map_or(core::ptr::null_mut(), |i| i.TargetFileObject)
    }

    fn create(&self) -> Result<ScanSection, Error> {
        if !fsfilter::scans_data::<F>() {
            // Never reached (no instance of such a filter has a scan mode); it keeps the code out.
            return Err(Error::INVALID_PARAMETER);
        }
        if irql::current() != Irql::PASSIVE {
            return Err(Error::INVALID_DEVICE_STATE);
        }
        let file = self.file_object();
        if file.is_null() {
            return Err(Error::INVALID_PARAMETER);
        }
        // SAFETY: the running operation's valid file object.
        let stream = unsafe { (*file).FsContext } as usize;
        // No file open (rule 16): pre-create, or the post of a create that failed, ended
        // STATUS_REPARSE (rule 27) or was cancelled. The memory manager would dereference the
        // file object's NULL (or stale) SectionObjectPointer there: a bug check on Windows.
        if stream == 0 || !self.create_opened() {
            return Err(Error::INVALID_PARAMETER);
        }
        let owner = self.instance as usize;
        let (record, file_size) = match self.data_scan {
            DataScanMode::NotRequested => return Err(Error::INVALID_PARAMETER),
            DataScanMode::FsRtlFallback => {
                // SAFETY: a valid file object at PASSIVE_LEVEL.
                let (record, size) = unsafe { datascan::create_fsrtl_section(file) }?;
                if !self.driver.sections.insert(OpenSection { record, owner, stream }) {
                    // SAFETY: not in any table: ours.
                    unsafe { datascan::teardown(record) };
                    return Err(Error::INSUFFICIENT_RESOURCES);
                }
                (record, size)
            }
            DataScanMode::FilterManager => self.create_flt(file, owner, stream)?,
        };
        Ok(ScanSection::new(
            SectionId(record as usize),
            datascan::TableSections::<Sections<F>>::get(),
            file_size,
        ))
    }

    /// `FltCreateSectionForDataScan` with a section context holding the record.
    fn create_flt(
        &self,
        file: *mut windows_sys::Wdk::Foundation::FILE_OBJECT,
        owner: usize,
        stream: usize,
    ) -> Result<(*mut SectionState, u64), Error> {
        let mut context: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: a registered filter with section contexts registered.
        let status = Status(unsafe {
            FltAllocateContext(
                self.driver.handle,
                FLT_SECTION_CONTEXT as u16,
                core::mem::size_of::<SectionState>(),
                NonPagedPoolNx,
                &mut context,
            )
        });
        if let Some(e) = Error::new(status) {
            return Err(e);
        }
        let record = context.cast::<SectionState>();
        // SAFETY: a fresh context block sized and aligned for a SectionState.
        unsafe { record.write(SectionState::empty(SectionOrigin::FilterManager)) };
        // In the table before creating: a conflict notification may arrive before
        // FltCreateSectionForDataScan returns (facts.md §6).
        if !self.driver.sections.insert(OpenSection { record, owner, stream }) {
            // SAFETY: our context, released once.
            unsafe { FltReleaseContext(context) };
            return Err(Error::INSUFFICIENT_RESOURCES);
        }
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut object: *mut c_void = core::ptr::null_mut();
        let mut size: i64 = 0;
        // SAFETY: an instance registered for data scan, a valid file object, a section context of
        // this filter, valid out pointers and attributes (a kernel handle), PASSIVE_LEVEL.
        let status = Status(unsafe {
            FltCreateSectionForDataScan(
                self.instance,
                file,
                context,
                datascan::SECTION_MAP_READ,
                &datascan::section_attributes(),
                core::ptr::null(),
                datascan::PAGE_READONLY,
                datascan::SEC_COMMIT,
                0,
                &mut handle,
                &mut object,
                &mut size,
            )
        });
        if let Some(e) = Error::new(status) {
            let _ = self.driver.sections.take(record as usize);
            // SAFETY: no section was created; the context is ours to release.
            unsafe { FltReleaseContext(context) };
            return Err(e);
        }
        // Mapped outside the table's lock (ZwMapViewOfSection needs PASSIVE_LEVEL).
        // SAFETY: the section handle FltCreateSectionForDataScan returned; PASSIVE_LEVEL.
        let view = unsafe { datascan::map_view(handle) };
        let stored = self.driver.sections.with(record as usize, |state| {
            state.handle = handle;
            state.object = object;
            if state.closed {
                // A conflict came before the create returned and closed the section.
                return false;
            }
            if let Ok((base, size)) = view {
                state.base = base;
                state.size = size;
            }
            true
        });
        match (stored, view) {
            (Some(true), Ok(_)) => Ok((record, u64::try_from(size).unwrap_or(0))),
            (Some(true), Err(e)) => {
                if let Some(open) = self.driver.sections.take(record as usize) {
                    // SAFETY: taken from the table: ours.
                    unsafe { teardown_section(open.record) };
                }
                Err(e)
            }
            (_, view) => {
                // Closed by a conflict during the create: the Filter Manager section is closed
                // already; the handle, the object and the view are ours to give back. The record
                // stays, conflicted and unmapped, so the filter sees an aborted scan.
                if let Ok((base, _)) = view {
                    // SAFETY: the view just mapped, unmapped once.
                    unsafe { datascan::unmap_view(base) };
                }
                let closing =
                    datascan::Closing { origin: SectionOrigin::FilterManager, handle, object };
                // SAFETY: the handle and object the create returned, closed once, PASSIVE_LEVEL.
                unsafe { closing.finish() };
                if stored.is_none() {
                    return Err(
                        Error::new(Status::FILE_LOCK_CONFLICT).unwrap_or(Error::UNSUCCESSFUL)
                    );
                }
                let _ = self.driver.sections.with(record as usize, |state| {
                    state.handle = core::ptr::null_mut();
                    state.object = core::ptr::null_mut();
                });
                Ok((record, u64::try_from(size).unwrap_or(0)))
            }
        }
    }
}

impl<F: Filter> Services for OpServices<'_, F> {
    fn irql(&self) -> Irql {
        irql::current()
    }

    fn note(&self, message: &str) {
        trace::note(
            Some(InstanceId(self.instance as usize)),
            (!self.data.is_null()).then_some(self.data as usize),
            message,
        );
    }

    fn create_scan_section(&self) -> Result<ScanSection, Error> {
        let result = self.create();
        trace::emit(&TraceEvent::DataScan {
            instance: InstanceId(self.instance as usize),
            operation: self.data as usize,
            mode: self.data_scan,
            status: match &result {
                Ok(_) => Status::SUCCESS,
                Err(e) => e.status(),
            },
        });
        result
    }

    fn data_scan_mode(&self) -> DataScanMode {
        self.data_scan
    }

    fn wait(&self, ms: u32) -> Result<(), Error> {
        fsfilter_kernel::timer::sleep(ms)
    }

    fn file_name(&self, kind: NameKind) -> Result<FileNameInformation, Error> {
        if !fsfilter::queries_names::<F>() {
            // No name code in a filter that does not declare name queries (rule 22).
            return Err(Error::NOT_SUPPORTED);
        }
        // SAFETY: `data` is null or the running callback's valid data.
        unsafe { crate::names::get(self.data, kind) }
    }

    fn send_message(
        &self,
        client: fsfilter::ClientId,
        message: &[u8],
        reply: Option<&mut [u8]>,
        timeout_ms: Option<u32>,
    ) -> Result<fsfilter::MessageSent, Error> {
        let Some(channel) = fsfilter::sending_channel::<F>() else {
            // No sending code in a filter that does not declare it (rule 25).
            return Err(Error::NOT_SUPPORTED);
        };
        crate::messages::send(self.driver, channel, client, message, reply, timeout_ms)
    }

    fn requestor_process(&self) -> Option<fsfilter::ProcessId> {
        if !fsfilter::queries_processes::<F>() || self.data.is_null() {
            // No process code in a filter that does not declare it (rule 26); no operation.
            return None;
        }
        // SAFETY: the running callback's valid data; FltGetRequestorProcessId reads its thread
        // at IRQL <= DISPATCH_LEVEL (every callback runs there) and answers 0 without one.
        let id = unsafe { FltGetRequestorProcessId(self.data) };
        (id != 0).then_some(fsfilter::ProcessId(id))
    }

    fn client_process(&self, client: fsfilter::ClientId) -> Option<fsfilter::ProcessId> {
        if !fsfilter::queries_processes::<F>() || fsfilter::message_channel::<F>().is_none() {
            return None;
        }
        crate::messages::client_process(self.driver, client)
    }

    fn replace_file_name(&self, name: &[u16]) -> Result<(), Error> {
        if !fsfilter::reparses::<F>() {
            // No reparse code in a filter that does not declare it (rule 27, decision 0012).
            return Err(Error::NOT_SUPPORTED);
        }
        if irql::current() != Irql::PASSIVE {
            return Err(Error::INVALID_DEVICE_STATE);
        }
        // SAFETY: `data` is null or the running callback's valid data.
        let Some(data) = (unsafe { self.data.as_ref() }) else {
            return Err(Error::INVALID_PARAMETER);
        };
        // SAFETY: a valid callback data points to its parameter block.
        let Some(iopb) = (unsafe { data.Iopb.as_ref() }) else {
            return Err(Error::INVALID_PARAMETER);
        };
        // A pre-create only (an IRP: creates have no fast I/O; no FsFilter callback has major 0).
        let pre_create = iopb.MajorFunction == 0
            && data.Flags & fsfilter_kernel::constants::fltfl_callback_data::POST_OPERATION == 0;
        if !pre_create {
            return Err(Error::INVALID_PARAMETER);
        }
        // SAFETY: the running pre-create's file object (or null), at PASSIVE_LEVEL. The filter
        // then completes the create with STATUS_REPARSE: only IoStatus changes in the callback
        // data, which needs no FltSetCallbackDataDirty (its reference page), as SimRep does.
        unsafe { fsfilter_kernel::unicode::replace_file_object_name(iopb.TargetFileObject, name) }
    }

    fn stream_context(
        &self,
        request: fsfilter::ContextRequest,
    ) -> Result<fsfilter::StreamContext, Error> {
        if fsfilter::context_words::<F>() == 0 {
            // No context code in a filter that declares no contexts (rules 28 and 29, decisions
            // 0013 and 0014).
            return Err(Error::NOT_SUPPORTED);
        }
        // SAFETY: `data` is null or the running callback's valid data, `instance` its instance.
        unsafe { crate::contexts::stream_context(self.driver, self.instance, self.data, request) }
    }

    fn cancel_file_open(&self, status: Status) -> Result<(), Error> {
        if irql::current() != Irql::PASSIVE {
            return Err(Error::INVALID_DEVICE_STATE);
        }
        // SAFETY: `data` is null or the running callback's valid data.
        let Some(data) = (unsafe { self.data.as_mut() }) else {
            return Err(Error::INVALID_PARAMETER);
        };
        // SAFETY: a valid callback data points to its parameter block.
        let Some(iopb) = (unsafe { data.Iopb.as_ref() }) else {
            return Err(Error::INVALID_PARAMETER);
        };
        let post_create = iopb.MajorFunction == 0
            && data.Flags & fsfilter_kernel::constants::fltfl_callback_data::POST_OPERATION != 0;
        // SAFETY: the status member.
        let result = IoStatus::new(Status(unsafe { data.IoStatus.Anonymous.Status }));
        // Not after a failure, nor after STATUS_REPARSE: that file object was never opened
        // (rule 27), and FltCancelFileOpen would close what the file system never opened.
        if !post_create
            || !result.opened()
            || status.is_success()
            || iopb.TargetFileObject.is_null()
        {
            return Err(Error::INVALID_PARAMETER);
        }
        // SAFETY: the instance and file object of a successful create in its post callback.
        unsafe { FltCancelFileOpen(self.instance, iopb.TargetFileObject) };
        data.IoStatus.Anonymous.Status = status.0;
        data.IoStatus.Information = 0;
        // SAFETY: the running callback's data, changed above.
        unsafe { FltSetCallbackDataDirty(self.data) };
        Ok(())
    }
}

/// Resumes pended operation `handle` after its delay: a timer whose DPC queues a generic work item
/// (no thread waits out the delay), or the work item at once without a delay. If nothing can be
/// allocated the operation is resumed right away (it must already be pended: its pre callback
/// returned `FLT_PREOP_PENDING`; the pre path uses [`try_defer_worker`]).
pub(crate) fn defer_worker<F: Filter>(driver: &DriverState<F>, handle: usize) {
    if !try_defer_worker(driver, handle) {
        // SAFETY: `handle` is pended by this filter.
        unsafe { resume_deferred::<F>(driver, handle) };
    }
}

/// Hands the delayed resume of `handle` to a timer or a work item; false when nothing could be
/// allocated, leaving the operation for the caller to resume.
pub(crate) fn try_defer_worker<F: Filter>(driver: &DriverState<F>, handle: usize) -> bool {
    let delay_ms = driver.pended.get(handle).and_then(|e| e.deferred()).map_or(0, |(_, ms)| ms);
    // SAFETY: allocates a generic work item; zero on failure.
    let item = unsafe { FltAllocateGenericWorkItem() };
    if item != 0 {
        let filter = driver.handle;
        let record =
            ResumeWork { handle, item, filter, delay: fsfilter_kernel::timer::Delay::ZERO };
        if let Ok(work) = PoolBox::try_new(record, RESUME_TAG) {
            let work = work.into_raw();
            if delay_ms == 0 {
                // SAFETY: the record, handed to the work item.
                if unsafe { queue_resume_worker::<F>(work) } {
                    return true;
                }
                // SAFETY: not queued: the record is still ours, freed once.
                drop(unsafe { PoolBox::<ResumeWork>::from_raw(work, RESUME_TAG) });
            } else {
                // SAFETY: the live record we own.
                let delay = unsafe { &raw mut (*work).delay };
                // SAFETY: the record's timer, in non-paged pool until the DPC has run (the DPC
                // passes the record on to the worker, which frees it).
                unsafe {
                    fsfilter_kernel::timer::start(delay, delay_ms, resume_dpc::<F>, work.cast())
                };
                return true;
            }
        }
        // SAFETY: never queued; freed once.
        unsafe { FltFreeGenericWorkItem(item) };
    }
    false
}

/// Pool tag of resume records: `FsfR`.
const RESUME_TAG: u32 = u32::from_le_bytes(*b"FsfR");

/// What a delayed resume carries from the pend to the worker.
struct ResumeWork {
    handle: usize,
    item: PFLT_GENERIC_WORKITEM,
    filter: isize,
    delay: fsfilter_kernel::timer::Delay,
}

/// Queues the work item of a resume record; false when that fails (the record and the item are
/// then still the caller's).
///
/// # Safety
/// `work` is a live record from `defer_worker`, handed over to the worker when queued.
unsafe fn queue_resume_worker<F: Filter>(work: *mut ResumeWork) -> bool {
    // SAFETY: the caller's live record.
    let record = unsafe { &*work };
    let (item, filter) = (record.item, record.filter);
    // SAFETY: a fresh work item, this filter's handle, a routine of this image, and the record
    // as context (the worker frees it).
    let status = unsafe {
        FltQueueGenericWorkItem(
            item,
            filter as *const c_void,
            Some(resume_worker::<F>),
            DelayedWorkQueue,
            work.cast_const().cast(),
        )
    };
    status >= 0
}

/// The DPC of a delayed resume: at `DISPATCH_LEVEL`; the operation goes on from a work item.
unsafe extern "system" fn resume_dpc<F: Filter>(
    _dpc: *const windows_sys::Wdk::Foundation::KDPC,
    context: *const c_void,
    _argument1: *const c_void,
    _argument2: *const c_void,
) {
    let work = context.cast_mut().cast::<ResumeWork>();
    // SAFETY: the record `defer_worker` armed the timer with.
    if !unsafe { queue_resume_worker::<F>(work) } {
        // Not queued: the operation is pended (the pre callback returned long ago); it is
        // finished here, at DISPATCH_LEVEL, as `resume_deferred` allows.
        // SAFETY: we still own the record and the item; the worker frees both.
        let item = unsafe { (*work).item };
        // SAFETY: as above.
        unsafe { resume_worker::<F>(item, core::ptr::null(), context) };
    }
}

unsafe extern "system" fn resume_worker<F: Filter>(
    item: PFLT_GENERIC_WORKITEM,
    _filter: *const c_void,
    context: *const c_void,
) {
    // SAFETY: the record `defer_worker` handed to this worker.
    let work = unsafe { PoolBox::<ResumeWork>::from_raw(context.cast_mut().cast(), RESUME_TAG) };
    let handle = work.map(|w| w.into_inner().handle);
    // Freed before the operation is resumed: from `resume_dpc` (no worker could be queued, the
    // filter unregistering) the resumption may be the last thing `FltUnregisterFilter` waits
    // for, and nothing of the image should run after it but the return.
    // SAFETY: the work item this routine was queued with (or `resume_dpc`'s), freed once.
    unsafe { FltFreeGenericWorkItem(item) };
    // SAFETY: this image's state.
    if let (Some(driver), Some(handle)) = (unsafe { DriverState::<F>::current() }, handle) {
        // SAFETY: the handle is a callback data this filter pended.
        unsafe { resume_deferred::<F>(driver, handle) };
    }
}

/// Carries out the deferred decision of pended operation `handle`. Above `APC_LEVEL` (no worker
/// could be had, from a DPC or a post callback there) only a completion can be: sending the
/// operation on calls the drivers below, so `FltCompletePendedPreOperation` takes any other
/// answer at `APC_LEVEL` at most. The operation then fails closed, its context dropped (rule 7;
/// a cleanup or close completes with success, rule 5), as the legacy backend's does.
///
/// # Safety
/// `handle` must be pended by this filter.
unsafe fn resume_deferred<F: Filter>(driver: &DriverState<F>, handle: usize) {
    let Some((entry, mut decision)) = driver.pended.take_deferred(handle) else { return };
    if decision.completion().is_none() && irql::current() > Irql::APC {
        // SAFETY: a context this backend encoded for `F` (`Asked::new`), or null; decoded once.
        drop(unsafe { decode::<F::CompletionContext>(decision.completion_context()) });
        let failed = Asked::Complete(IoStatus::new(Status::INSUFFICIENT_RESOURCES));
        decision = failed.decide(MajorFunction::from_code(entry.major), false);
    }
    // SAFETY: pended by this filter and taken from the table with its decision: completed once.
    unsafe { complete_pended(handle, decision) };
}
