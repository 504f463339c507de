//! What the backend offers filter code during a callback: the IRQL, trace notes, and data-scan
//! sections (always `FsRtlCreateSectionForDataScan`: there is no Filter Manager).

use core::marker::PhantomData;

use fsfilter::trace::TraceEvent;
use fsfilter::{
    ClientId, ContextRequest, DataScanMode, Error, FileNameInformation, Filter, InstanceId, Irql,
    MessageSent, NameKind, ProcessId, ScanSection, SectionId, Services, Status, StreamContext,
};
use fsfilter_kernel::datascan::{
    self, OpenSection, SectionSource, SectionState, SectionTable, TableSections,
};
use fsfilter_kernel::{irql, trace};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, IRP};
use windows_sys::Wdk::Storage::FileSystem::IoGetRequestorProcessId;
use windows_sys::Wdk::System::SystemServices::{IoCancelFileOpen, PsGetCurrentProcessId};

use crate::names::Stage;
use crate::state::DriverState;

/// The legacy backend's section source.
pub(crate) struct Sections<F>(PhantomData<fn() -> F>);

impl<F: Filter> SectionSource for Sections<F> {
    fn table<'a>() -> Option<&'a SectionTable> {
        // SAFETY: called from filter code of this image.
        unsafe { DriverState::<F>::current() }.map(|d| &d.sections)
    }

    unsafe fn teardown(record: *mut SectionState) {
        // SAFETY: forwarded: legacy records are all FsRtl ones.
        unsafe { datascan::teardown(record) }
    }
}

/// Services for one callback.
pub(crate) struct OpServices<'a, F: Filter> {
    state: &'a DriverState<F>,
    device: *const DEVICE_OBJECT,
    /// The IRP (or 0 outside an IRP-based operation), or a fast-I/O operation's file object.
    operation: usize,
    /// A fast-I/O operation's file object; null for an IRP, whose file object [`Self::file`]
    /// reads from its stack location when a service needs it (few do: not on every callback).
    fast_io_file: *mut FILE_OBJECT,
    data_scan: DataScanMode,
    /// Where the callback runs (a create's post callback may cancel the open).
    stage: Stage,
}

impl<'a, F: Filter> OpServices<'a, F> {
    /// Services for an IRP-based operation `irp` (0 for none) at `device`.
    pub(crate) fn new(
        state: &'a DriverState<F>,
        device: *const DEVICE_OBJECT,
        irp: usize,
        data_scan: DataScanMode,
    ) -> Self {
        let fast_io_file = core::ptr::null_mut();
        OpServices { state, device, operation: irp, fast_io_file, data_scan, stage: Stage::Pre }
    }

    /// The operation's file object: a fast-I/O operation's, or the one at the IRP's current
    /// location (ours, before the IRP goes down and again once it completed); null for none.
    fn file(&self) -> *mut FILE_OBJECT {
        if !self.fast_io_file.is_null() || self.operation == 0 {
            return self.fast_io_file;
        }
        // SAFETY: the running operation's live IRP (services live as long as its callback); its
        // current location is ours.
        unsafe { crate::raw::location(self.operation as *mut IRP) }.FileObject
    }

    /// Services for the post callback of a create (which may cancel the open).
    pub(crate) fn for_post(
        state: &'a DriverState<F>,
        device: *const DEVICE_OBJECT,
        irp: usize,
        data_scan: DataScanMode,
        create: bool,
    ) -> Self {
        let stage = if create { Stage::PostCreate } else { Stage::Post };
        OpServices { stage, ..OpServices::new(state, device, irp, data_scan) }
    }

    /// Services for a fast-I/O operation on `file`.
    pub(crate) fn fast_io(
        state: &'a DriverState<F>,
        device: *const DEVICE_OBJECT,
        file: *const FILE_OBJECT,
        data_scan: DataScanMode,
    ) -> Self {
        OpServices {
            state,
            device,
            operation: file as usize,
            fast_io_file: file.cast_mut(),
            data_scan,
            stage: Stage::FastIo,
        }
    }

    /// Services for an FsFilter callback on `file`.
    pub(crate) fn fs_filter(
        state: &'a DriverState<F>,
        device: *const DEVICE_OBJECT,
        file: *const FILE_OBJECT,
        data_scan: DataScanMode,
    ) -> Self {
        OpServices { stage: Stage::FsFilter, ..OpServices::fast_io(state, device, file, data_scan) }
    }

    fn name(&self, kind: NameKind) -> Result<FileNameInformation, Error> {
        // SAFETY: our device.
        let Some(ext) = (unsafe { self.state.ext(self.device) }) else {
            return Err(Error::INVALID_PARAMETER);
        };
        let irp = if self.fast_io_file.is_null() {
            self.operation as *mut IRP
        } else {
            core::ptr::null_mut()
        };
        let query =
            crate::names::Query { file: self.file(), irp, stage: self.stage, lower: ext.lower };
        crate::names::get(&query, kind)
    }

    fn create(&self) -> Result<ScanSection, Error> {
        if !fsfilter::scans_data::<F>() {
            // Never reached (no instance of such a filter has a scan mode); it keeps the code out.
            return Err(Error::INVALID_PARAMETER);
        }
        if irql::current() != Irql::PASSIVE {
            return Err(Error::INVALID_DEVICE_STATE);
        }
        let file = self.file();
        if self.data_scan == DataScanMode::NotRequested || file.is_null() {
            return Err(Error::INVALID_PARAMETER);
        }
        // SAFETY: the running operation's valid file object.
        let stream = unsafe { (*file).FsContext } as usize;
        // No file open (rule 16): pre-create, or the post of a create that failed, ended
        // STATUS_REPARSE (rule 27) or was cancelled. The memory manager would dereference the
        // file object's NULL (or stale) SectionObjectPointer there: a bug check on Windows.
        let opened = self.stage != Stage::PostCreate
            // SAFETY: in post-create, the completed create IRP at our location.
            || unsafe { crate::view::io_status(self.operation as *mut IRP) }.opened();
        if stream == 0 || !opened {
            return Err(Error::INVALID_PARAMETER);
        }
        // SAFETY: a valid file object at PASSIVE_LEVEL.
        let (record, size) = unsafe { datascan::create_fsrtl_section(file) }?;
        if !self.state.sections.insert(OpenSection { record, owner: self.device as usize, stream })
        {
            // SAFETY: not in any table: ours.
            unsafe { datascan::teardown(record) };
            return Err(Error::INSUFFICIENT_RESOURCES);
        }
        Ok(ScanSection::new(SectionId(record as usize), TableSections::<Sections<F>>::get(), size))
    }

    /// The stream context of the operation's open stream (rule 28), for a filter that declares
    /// contexts: refused above `APC_LEVEL` and where no stream is open (outside an operation, in
    /// pre-create, in the post of a create that opened nothing, in post-close); fast I/O, paging
    /// I/O and FsFilter callbacks may ask.
    fn context(&self, request: ContextRequest) -> Result<StreamContext, Error> {
        if irql::current() > Irql::APC {
            return Err(Error::INVALID_DEVICE_STATE);
        }
        let file = self.file();
        if file.is_null() {
            return Err(Error::NOT_SUPPORTED);
        }
        if self.fast_io_file.is_null() {
            let irp = self.operation as *mut IRP;
            // SAFETY: the running operation's live IRP, at our location.
            let major = unsafe { crate::view::codes(irp) }.0;
            let open = match self.stage {
                Stage::Pre => major != fsfilter::MajorFunction::Create,
                // SAFETY: the completed create at our location; a failed or reparsed one opened
                // nothing (rule 27).
                Stage::PostCreate => unsafe { crate::view::io_status(irp) }.opened(),
                _ => major != fsfilter::MajorFunction::Close,
            };
            if !open {
                return Err(Error::NOT_SUPPORTED);
            }
            // Pre-close is the handle's last operation: its context is found there, not created
            // (rule 29; a pre-close that pends would leave one on the file object after the
            // removal that runs as the dispatch returns). Compiled only into filters that
            // declare handle contexts.
            if fsfilter::handle_context_words::<F>() != 0
                && request.is_handle()
                && request.creates()
                && major == fsfilter::MajorFunction::Close
            {
                return Err(Error::NOT_SUPPORTED);
            }
        }
        if request.is_handle() {
            if fsfilter::handle_context_words::<F>() == 0 {
                return Err(Error::NOT_SUPPORTED);
            }
            // SAFETY: as below.
            return unsafe { crate::contexts::get_handle(self.state, self.device, file, request) };
        }
        if fsfilter::stream_context_words::<F>() == 0 {
            return Err(Error::NOT_SUPPORTED);
        }
        // SAFETY: the operation's file object, opened by the file system and not closed (checked
        // above), at IRQL <= APC_LEVEL; our device.
        unsafe { crate::contexts::get(self.state, self.device, file, request) }
    }
}

impl<F: Filter> Services for OpServices<'_, F> {
    fn irql(&self) -> Irql {
        irql::current()
    }

    fn note(&self, message: &str) {
        trace::note(
            Some(InstanceId(self.device as usize)),
            (self.operation != 0).then_some(self.operation),
            message,
        );
    }

    fn create_scan_section(&self) -> Result<ScanSection, Error> {
        let result = self.create();
        trace::emit(&TraceEvent::DataScan {
            instance: InstanceId(self.device as usize),
            operation: self.operation,
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
        self.name(kind)
    }

    fn send_message(
        &self,
        client: ClientId,
        message: &[u8],
        reply: Option<&mut [u8]>,
        timeout_ms: Option<u32>,
    ) -> Result<MessageSent, Error> {
        let Some(channel) = fsfilter::sending_channel::<F>() else {
            // No sending code in a filter that does not declare it (rule 25).
            return Err(Error::NOT_SUPPORTED);
        };
        crate::send::send(self.state, channel, client, message, reply, timeout_ms)
    }

    fn requestor_process(&self) -> Option<ProcessId> {
        if !fsfilter::queries_processes::<F>() {
            // No process code in a filter that does not declare it (rule 26).
            return None;
        }
        let id = if matches!(self.stage, Stage::FastIo | Stage::FsFilter) {
            // Fast I/O and FsFilter callbacks run in the requesting thread.
            // SAFETY: no precondition, at any IRQL.
            (unsafe { PsGetCurrentProcessId() }) as usize as u32
        } else if self.operation == 0 {
            return None;
        } else {
            // SAFETY: the running operation's live IRP; IoGetRequestorProcessId reads its
            // thread (also from a completion routine, in an arbitrary thread) at IRQL <=
            // DISPATCH_LEVEL and answers 0 without one.
            unsafe { IoGetRequestorProcessId(self.operation as *const IRP) }
        };
        (id != 0).then_some(ProcessId(id))
    }

    fn client_process(&self, client: ClientId) -> Option<ProcessId> {
        if !fsfilter::queries_processes::<F>() || fsfilter::message_channel::<F>().is_none() {
            return None;
        }
        // SAFETY: the driver's control device, created with the channel's extension.
        let control = unsafe { crate::send::control_of(self.state) }?;
        crate::send::client_process(control, client)
    }

    fn replace_file_name(&self, name: &[u16]) -> Result<(), Error> {
        if !fsfilter::reparses::<F>() {
            // No reparse code in a filter that does not declare it (rule 27, decision 0012).
            return Err(Error::NOT_SUPPORTED);
        }
        if irql::current() != Irql::PASSIVE {
            return Err(Error::INVALID_DEVICE_STATE);
        }
        if self.stage != Stage::Pre || self.operation == 0 {
            return Err(Error::INVALID_PARAMETER);
        }
        let irp = self.operation as *mut IRP;
        // SAFETY: the running operation's live IRP, at our location.
        if unsafe { crate::view::codes(irp) }.0 != fsfilter::MajorFunction::Create {
            return Err(Error::INVALID_PARAMETER);
        }
        // SAFETY: the running create's file object, from our location, at PASSIVE_LEVEL. The
        // filter then completes the IRP with STATUS_REPARSE (`IoStatus::reparse`).
        unsafe { fsfilter_kernel::unicode::replace_file_object_name(self.file(), name) }
    }

    fn stream_context(&self, request: ContextRequest) -> Result<StreamContext, Error> {
        if fsfilter::context_words::<F>() == 0 {
            // No context code in a filter that declares no contexts (rules 28 and 29).
            return Err(Error::NOT_SUPPORTED);
        }
        self.context(request)
    }

    fn cancel_file_open(&self, status: Status) -> Result<(), Error> {
        if irql::current() != Irql::PASSIVE {
            return Err(Error::INVALID_DEVICE_STATE);
        }
        let file = self.file();
        if self.stage != Stage::PostCreate
            || self.operation == 0
            || file.is_null()
            || status.is_success()
        {
            return Err(Error::INVALID_PARAMETER);
        }
        let irp = self.operation as *mut IRP;
        // SAFETY: the running create's live IRP, at our location after completion. A warning
        // is no success: the I/O manager fails such a create (as `FltCancelFileOpen` refuses it);
        // nor is STATUS_REPARSE, whose file object the file system never opened (rule 27).
        if !unsafe { crate::view::io_status(irp) }.opened() {
            return Err(Error::INVALID_PARAMETER);
        }
        // SAFETY: our device.
        let Some(ext) = (unsafe { self.state.ext(self.device) }) else {
            return Err(Error::INVALID_PARAMETER);
        };
        // SAFETY: the device below us and the file object its file system just opened; the
        // I/O manager sends the cleanup and close down from that device.
        unsafe { IoCancelFileOpen(ext.lower, file) };
        // SAFETY: the create IRP whose completion we hold.
        unsafe { fsfilter_kernel::irp::set_irp_status(irp, status.0, 0) };
        Ok(())
    }
}
