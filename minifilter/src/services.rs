//! What the backend offers filter code during a callback ([`fsfilter::Services`]): the IRQL, trace
//! notes, and data-scan sections; plus the workers that resume deferred pended operations.

use core::ffi::c_void;
use core::marker::PhantomData;

use fsfilter::trace::TraceEvent;
use fsfilter::{
    DataScanMode, Error, Filter, InstanceId, Irql, ScanSection, SectionBackend, SectionId,
    Services, Status,
};
use fsfilter_kernel::pool::PoolBox;
use fsfilter_kernel::sync::SpinLock;
use fsfilter_kernel::{irql, ntos, trace};
use windows_sys::Wdk::Foundation::NonPagedPoolNx;
use windows_sys::Wdk::Storage::FileSystem::FsRtlCreateSectionForDataScan;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_SECTION_CONTEXT, FltAllocateContext, FltAllocateGenericWorkItem,
    FltCloseSectionForDataScan, FltCreateSectionForDataScan, FltFreeGenericWorkItem,
    FltQueueGenericWorkItem, FltReleaseContext, PFLT_CONTEXT, PFLT_GENERIC_WORKITEM, PFLT_INSTANCE,
};
use windows_sys::Wdk::System::Memory::ViewUnmap;
use windows_sys::Wdk::System::SystemServices::{
    DelayedWorkQueue, KeDelayExecutionThread, ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::HANDLE;

use crate::callbacks::complete_pended;
use crate::state::{DriverState, SECTION_CONTEXT_TAG, SectionState};

/// `SECTION_MAP_READ`.
const SECTION_MAP_READ: u32 = 0x0004;
/// `PAGE_READONLY`.
const PAGE_READONLY: u32 = 0x02;
/// `SEC_COMMIT`.
const SEC_COMMIT: u32 = 0x0800_0000;
/// `NtCurrentProcess()`.
const CURRENT_PROCESS: HANDLE = -1isize as HANDLE;
/// How many data-scan sections one driver can hold open at once.
pub(crate) const MAX_SECTIONS: usize = 32;

/// An open data-scan section in the driver's table.
#[derive(Clone, Copy)]
pub(crate) struct OpenSection {
    /// The section context (Filter Manager mode) or the pool record (fallback).
    pub(crate) record: *mut SectionState,
    /// The instance.
    pub(crate) instance: PFLT_INSTANCE,
    /// The stream (`FileObject->FsContext`), to match conflicting I/O in fallback mode.
    pub(crate) stream: usize,
}

// SAFETY: the record pointers are only dereferenced under the table's lock or by the section's
// owner, and point to non-paged memory valid until the section is closed.
unsafe impl Send for OpenSection {}

/// The open sections of every driver using this backend with filter type `F` live in the driver
/// state; this static only routes [`ScanSection`] calls back to it.
pub(crate) struct Sections<F>(PhantomData<fn() -> F>);

pub(crate) fn sections<F: Filter>() -> &'static dyn SectionBackend {
    const { &Sections::<F>(PhantomData) }
}

/// The section table of a driver.
pub(crate) type SectionTable = SpinLock<[Option<OpenSection>; MAX_SECTIONS]>;

impl<F: Filter> SectionBackend for Sections<F> {
    fn view(&self, id: SectionId) -> Option<&[u8]> {
        // SAFETY: called from filter code of this image.
        let driver = unsafe { DriverState::<F>::current() }?;
        let record =
            driver.sections.lock().iter().flatten().find(|s| s.record as usize == id.0)?.record;
        // SAFETY: a record in the table is live until `close` removes it, and only the owning
        // ScanSection (which borrows itself for the slice) can close it.
        let record = unsafe { &*record };
        if record.base.is_null() {
            return Some(&[]);
        }
        // SAFETY: the mapped view covers `size` bytes and stays mapped until `close`.
        Some(unsafe { core::slice::from_raw_parts(record.base.cast::<u8>(), record.size) })
    }

    fn conflicted(&self, id: SectionId) -> bool {
        // SAFETY: called from filter code of this image.
        let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return true };
        let table = driver.sections.lock();
        match table.iter().flatten().find(|s| s.record as usize == id.0) {
            // SAFETY: a live record (see `view`), read under the lock.
            Some(s) => unsafe { (*s.record).conflicted },
            None => true,
        }
    }

    fn close(&self, id: SectionId) {
        // SAFETY: called from filter code of this image.
        let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return };
        let taken = {
            let mut table = driver.sections.lock();
            table
                .iter_mut()
                .find(|s| matches!(s, Some(x) if x.record as usize == id.0))
                .and_then(Option::take)
        };
        if let Some(open) = taken {
            // SAFETY: the record was in the table and is now ours alone to tear down.
            unsafe { teardown_section(open.record) };
        }
    }
}

/// Unmaps, closes and frees a section record.
///
/// # Safety
/// `record` must be a live record removed from its table.
unsafe fn teardown_section(record: *mut SectionState) {
    // SAFETY: the caller guarantees the record is live and ours.
    let state = unsafe { &mut *record };
    if !state.base.is_null() {
        // SAFETY: a view this backend mapped into the current process.
        let _ = unsafe { ntos::ZwUnmapViewOfSection(CURRENT_PROCESS, state.base) };
        state.base = core::ptr::null_mut();
    }
    // SAFETY: as above.
    unsafe { close_record_handle(state, record.cast()) };
    if state.fallback {
        // SAFETY: the record was allocated as a PoolBox<SectionState> with this tag.
        drop(unsafe { PoolBox::from_raw(record, SECTION_CONTEXT_TAG) });
    } else {
        // SAFETY: the section context this backend allocated, released once.
        unsafe { FltReleaseContext(record.cast()) };
    }
}

/// Closes the section handle of a record (not the view).
///
/// # Safety
/// `state` must be the live record at `context`.
unsafe fn close_record_handle(state: &mut SectionState, context: PFLT_CONTEXT) {
    if state.closed {
        return;
    }
    state.closed = true;
    if state.fallback {
        // SAFETY: the handle and referenced object FsRtlCreateSectionForDataScan returned, closed
        // once (the caller handles conflicts, facts.md §6).
        let _ = unsafe { ntos::ZwClose(state.handle) };
        if !state.object.is_null() {
            // SAFETY: as above.
            unsafe { ObfDereferenceObject(state.object) };
        }
    } else {
        // SAFETY: a section context with a section created by FltCreateSectionForDataScan.
        let _ = unsafe { FltCloseSectionForDataScan(context) };
    }
}

/// Marks a section conflicted (from the section-conflict notification).
///
/// # Safety
/// `context` must be a section context of this filter.
pub(crate) unsafe fn mark_conflicted(context: PFLT_CONTEXT) {
    // SAFETY: the caller guarantees a live section context holding a SectionState.
    unsafe { (*context.cast::<SectionState>()).conflicted = true };
}

/// Closes the section of a conflicted record so the conflicting I/O can proceed; the view stays
/// mapped until the filter drops its [`ScanSection`].
///
/// # Safety
/// `context` must be a live section record of this filter.
pub(crate) unsafe fn close_section_handle(context: PFLT_CONTEXT) {
    // SAFETY: the caller guarantees a live record.
    let state = unsafe { &mut *context.cast::<SectionState>() };
    // SAFETY: as above.
    unsafe { close_record_handle(state, context) };
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

    pub(crate) fn for_operation(
        driver: &'a DriverState<F>,
        instance: PFLT_INSTANCE,
        data: *mut FLT_CALLBACK_DATA,
        data_scan: DataScanMode,
    ) -> Self {
        OpServices { driver, instance, data, data_scan }
    }

    fn file_object(&self) -> *mut windows_sys::Wdk::Foundation::FILE_OBJECT {
        // SAFETY: `data` is null or the running callback's valid data.
        let Some(data) = (unsafe { self.data.as_ref() }) else { return core::ptr::null_mut() };
        // SAFETY: a valid callback data points to its parameter block.
        unsafe { data.Iopb.as_ref() }.map_or(core::ptr::null_mut(), |i| i.TargetFileObject)
    }

    fn report_scan(&self, status: Status) {
        trace::emit(&TraceEvent::DataScan {
            instance: InstanceId(self.instance as usize),
            operation: self.data as usize,
            mode: self.data_scan,
            status,
        });
    }

    fn create(&self) -> Result<ScanSection, Error> {
        if irql::current() != Irql::PASSIVE {
            return Err(Error::new(Status::INVALID_DEVICE_STATE).unwrap_or(Error::UNSUCCESSFUL));
        }
        let file = self.file_object();
        if file.is_null() {
            return Err(Error::INVALID_PARAMETER);
        }
        // SAFETY: a valid file object of the running operation.
        let stream = unsafe { (*file).FsContext } as usize;
        let fallback = match self.data_scan {
            DataScanMode::FilterManager => false,
            DataScanMode::FsRtlFallback => true,
            DataScanMode::NotRequested => return Err(Error::INVALID_PARAMETER),
        };
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut object: *mut c_void = core::ptr::null_mut();
        let mut size: i64 = 0;
        let record: *mut SectionState = if fallback {
            let state = SectionState {
                base: core::ptr::null_mut(),
                size: 0,
                handle: core::ptr::null_mut(),
                object: core::ptr::null_mut(),
                conflicted: false,
                closed: false,
                fallback: true,
            };
            let record = PoolBox::try_new(state, SECTION_CONTEXT_TAG)?.into_raw();
            // SAFETY: a valid file object at PASSIVE_LEVEL; out pointers are valid.
            let status = Status(unsafe {
                FsRtlCreateSectionForDataScan(
                    &mut handle,
                    &mut object,
                    &mut size,
                    file,
                    SECTION_MAP_READ,
                    core::ptr::null(),
                    core::ptr::null(),
                    PAGE_READONLY,
                    SEC_COMMIT,
                    0,
                )
            });
            if let Some(e) = Error::new(status) {
                // SAFETY: the record we just allocated.
                drop(unsafe { PoolBox::from_raw(record, SECTION_CONTEXT_TAG) });
                return Err(e);
            }
            record
        } else {
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
            // SAFETY: a fresh context block sized and aligned for SectionState.
            unsafe {
                record.write(SectionState {
                    base: core::ptr::null_mut(),
                    size: 0,
                    handle: core::ptr::null_mut(),
                    object: core::ptr::null_mut(),
                    conflicted: false,
                    closed: false,
                    fallback: false,
                })
            };
            // The record goes in the table first: a conflict notification may arrive before
            // FltCreateSectionForDataScan returns (facts.md §6).
            if !self.insert(record, stream) {
                // SAFETY: our context, released once.
                unsafe { FltReleaseContext(context) };
                return Err(Error::INSUFFICIENT_RESOURCES);
            }
            // SAFETY: an instance registered for data scan, a valid file object, a section
            // context of this filter, valid out pointers, at PASSIVE_LEVEL.
            let status = Status(unsafe {
                FltCreateSectionForDataScan(
                    self.instance,
                    file,
                    context,
                    SECTION_MAP_READ,
                    core::ptr::null(),
                    core::ptr::null(),
                    PAGE_READONLY,
                    SEC_COMMIT,
                    0,
                    &mut handle,
                    &mut object,
                    &mut size,
                )
            });
            if let Some(e) = Error::new(status) {
                self.remove(record);
                // SAFETY: the record has no section; mark it closed so teardown only releases.
                unsafe { (*record).closed = true };
                // SAFETY: removed from the table, ours to tear down.
                unsafe { teardown_section(record) };
                return Err(e);
            }
            record
        };
        // SAFETY: `record` is live and ours until inserted.
        unsafe {
            (*record).handle = handle;
        }
        // SAFETY: as above.
        unsafe { (*record).object = object };
        if fallback && !self.insert(record, stream) {
            // SAFETY: not in the table; ours.
            unsafe { teardown_section(record) };
            return Err(Error::INSUFFICIENT_RESOURCES);
        }
        let mut base: *mut c_void = core::ptr::null_mut();
        let mut view_size: usize = 0;
        // SAFETY: a section handle we own, mapped read-only into the current process.
        let status = Status(unsafe {
            ntos::ZwMapViewOfSection(
                handle,
                CURRENT_PROCESS,
                &mut base,
                0,
                0,
                core::ptr::null_mut(),
                &mut view_size,
                ViewUnmap,
                0,
                PAGE_READONLY,
            )
        });
        if let Some(e) = Error::new(status) {
            self.remove(record);
            // SAFETY: removed from the table; ours.
            unsafe { teardown_section(record) };
            return Err(e);
        }
        let file_size = u64::try_from(size).unwrap_or(0);
        // SAFETY: live record; the view covers the file's data (the view may be page-rounded).
        unsafe {
            (*record).base = base;
        }
        // SAFETY: as above.
        unsafe { (*record).size = view_size.min(usize::try_from(file_size).unwrap_or(usize::MAX)) };
        Ok(ScanSection::new(SectionId(record as usize), sections::<F>(), file_size))
    }

    fn insert(&self, record: *mut SectionState, stream: usize) -> bool {
        let mut table = self.driver.sections.lock();
        match table.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(OpenSection { record, instance: self.instance, stream });
                true
            }
            None => false,
        }
    }

    fn remove(&self, record: *mut SectionState) {
        let mut table = self.driver.sections.lock();
        if let Some(slot) = table.iter_mut().find(|s| matches!(s, Some(x) if x.record == record)) {
            *slot = None;
        }
    }
}

impl<F: Filter> Services for OpServices<'_, F> {
    fn irql(&self) -> Irql {
        irql::current()
    }

    fn note(&self, message: &str) {
        trace::emit(&TraceEvent::Note {
            instance: Some(InstanceId(self.instance as usize)),
            operation: (!self.data.is_null()).then_some(self.data as usize),
            text: message,
        });
    }

    fn create_scan_section(&self) -> Result<ScanSection, Error> {
        let result = self.create();
        self.report_scan(match &result {
            Ok(_) => Status::SUCCESS,
            Err(e) => e.status(),
        });
        result
    }

    fn data_scan_mode(&self) -> DataScanMode {
        self.data_scan
    }
}

/// Fallback-mode conflict detection (the caller handles conflicts when sections come from
/// `FsRtlCreateSectionForDataScan`, facts.md §6): the open fallback sections of `instance` on the
/// stream `stream`, which an operation that changes the file's data or size conflicts with.
pub(crate) fn fallback_conflicts<F: Filter>(
    driver: &DriverState<F>,
    instance: PFLT_INSTANCE,
    stream: usize,
) -> [Option<*mut SectionState>; MAX_SECTIONS] {
    let mut out = [None; MAX_SECTIONS];
    let table = driver.sections.lock();
    for (slot, open) in out.iter_mut().zip(table.iter()) {
        if let Some(o) = open {
            // SAFETY: a live record read under the table lock.
            let fallback = unsafe { (*o.record).fallback };
            if fallback && o.instance == instance && o.stream == stream && stream != 0 {
                *slot = Some(o.record);
            }
        }
    }
    out
}

/// Queues the worker that resumes pended operation `handle` after its delay. If no work item can
/// be allocated the operation is resumed at once.
pub(crate) fn defer_worker<F: Filter>(driver: &DriverState<F>, handle: usize) {
    // SAFETY: allocates a generic work item; null on failure.
    let item = unsafe { FltAllocateGenericWorkItem() };
    if item != 0 {
        // SAFETY: a fresh work item, this filter's handle, a routine of this image, and the
        // pended callback data as context (valid until completed).
        let status = unsafe {
            FltQueueGenericWorkItem(
                item,
                driver.handle as *const c_void,
                Some(resume_worker::<F>),
                DelayedWorkQueue,
                handle as *const c_void,
            )
        };
        if status >= 0 {
            return;
        }
        // SAFETY: the item was not queued; free it once.
        unsafe { FltFreeGenericWorkItem(item) };
    }
    // SAFETY: `handle` is pended by this filter.
    unsafe { resume_deferred::<F>(driver, handle, false) };
}

unsafe extern "system" fn resume_worker<F: Filter>(
    item: PFLT_GENERIC_WORKITEM,
    _filter: *const c_void,
    context: *const c_void,
) {
    // SAFETY: this image's state.
    if let Some(driver) = unsafe { DriverState::<F>::current() } {
        // SAFETY: the context is a callback data this filter pended.
        unsafe { resume_deferred::<F>(driver, context as usize, true) };
    }
    // SAFETY: the work item this routine was queued with, freed once.
    unsafe { FltFreeGenericWorkItem(item) };
}

/// # Safety
/// `handle` must be pended by this filter.
unsafe fn resume_deferred<F: Filter>(driver: &DriverState<F>, handle: usize, wait: bool) {
    let decision = driver.with_pended(handle, |slot| slot.and_then(|e| e.deferred)).flatten();
    let Some((status, context, delay_ms)) = decision else { return };
    if wait && delay_ms > 0 {
        // Relative time in 100 ns units.
        let interval = -i64::from(delay_ms) * 10_000;
        // SAFETY: a system worker thread at PASSIVE_LEVEL may wait.
        let _ = unsafe { KeDelayExecutionThread(0, false, &interval) };
    }
    let taken = driver.with_pended(handle, |slot| slot.take()).flatten();
    if taken.is_some() {
        // SAFETY: pended by this filter and taken from the table: completed once. A COMPLETE
        // status was stored in the callback data by `resume_after`.
        unsafe { complete_pended(handle, status, context, None) };
    }
}
