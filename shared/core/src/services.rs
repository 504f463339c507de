//! What a backend provides to filter logic: the IRQL, trace notes, pended operations,
//! data-scan sections and file names. Filter logic never touches the kernel directly; it asks
//! through these.

use core::fmt;
use core::marker::PhantomData;

use crate::contexts::{ContextRequest, StreamContext};
use crate::operation::{FileName, IoStatus};
use crate::status::{Error, Status};

/// An interrupt request level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Irql(pub u8);

impl Irql {
    /// `PASSIVE_LEVEL`.
    pub const PASSIVE: Irql = Irql(0);
    /// `APC_LEVEL`.
    pub const APC: Irql = Irql(1);
    /// `DISPATCH_LEVEL`.
    pub const DISPATCH: Irql = Irql(2);

    /// The WDK spelling, for the named levels.
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("PASSIVE_LEVEL"),
            1 => Some("APC_LEVEL"),
            2 => Some("DISPATCH_LEVEL"),
            _ => None,
        }
    }
}

/// A process id, as Windows numbers them (`PsGetCurrentProcessId`, `FltGetRequestorProcessId`:
/// multiples of 4; the System process is 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId(pub u32);

impl ProcessId {
    /// The System process, the requester of paging I/O and of system worker threads' I/O.
    pub const SYSTEM: ProcessId = ProcessId(4);
}

/// Identifies a data-scan section within its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SectionId(pub usize);

/// How sections for data scanning are created on an instance's volume (facts.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataScanMode {
    /// The filter did not ask for data scanning.
    NotRequested,
    /// `FltRegisterForDataScan` succeeded: sections come from `FltCreateSectionForDataScan`, and
    /// the Filter Manager synchronizes conflicting I/O and sends section-conflict notifications.
    FilterManager,
    /// `FltRegisterForDataScan` answered `STATUS_NOT_SUPPORTED` (named pipes and mailslots), or
    /// there is no Filter Manager (the legacy model): sections come from
    /// `FsRtlCreateSectionForDataScan`, and the framework detects conflicting I/O itself and sends
    /// the same section-conflict notification.
    FsRtlFallback,
}

impl DataScanMode {
    /// A short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            DataScanMode::NotRequested => "none",
            DataScanMode::FilterManager => "FltCreateSectionForDataScan",
            DataScanMode::FsRtlFallback => "FsRtlCreateSectionForDataScan",
        }
    }
}

/// The backend side of a data-scan section: maps, reports conflicts, closes.
pub trait SectionBackend: Sync {
    /// The mapped view of a section, valid until `close`. `None` for an unknown id.
    fn view(&self, id: SectionId) -> Option<&[u8]>;
    /// True once a conflicting operation asked for the section to be closed.
    fn conflicted(&self, id: SectionId) -> bool;
    /// Unmaps the view and closes the section. Unknown ids are ignored.
    fn close(&self, id: SectionId);
}

/// An open data-scan section over a file's contents, mapped read-only.
///
/// Dropping it unmaps the view and closes the section (`FltCloseSectionForDataScan` or `ZwClose`).
/// A filter may keep it beyond the callback that created it (in its instance state, say); a
/// section-conflict notification then names it by [`ScanSection::id`].
pub struct ScanSection {
    id: SectionId,
    backend: &'static dyn SectionBackend,
    file_size: u64,
}

impl ScanSection {
    /// Built by a backend once the section is created and mapped.
    pub fn new(id: SectionId, backend: &'static dyn SectionBackend, file_size: u64) -> ScanSection {
        ScanSection { id, backend, file_size }
    }

    /// The section's identity, as section-conflict notifications name it.
    pub const fn id(&self) -> SectionId {
        self.id
    }

    /// The file's size when the section was created.
    pub const fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The file's bytes: the mapped view up to [`ScanSection::file_size`] (a view is whole
    /// pages, zero-filled past the end of the file). Empty if the backend no longer knows the
    /// section.
    pub fn data(&self) -> &[u8] {
        let view = self.backend.view(self.id).unwrap_or(&[]);
        let size = usize::try_from(self.file_size).unwrap_or(usize::MAX);
        view.get(..size).unwrap_or(view)
    }

    /// True once conflicting I/O asked for the section to be closed: a scan in progress should
    /// stop (the avscan sample aborts its scan).
    pub fn conflicted(&self) -> bool {
        self.backend.conflicted(self.id)
    }
}

impl Drop for ScanSection {
    fn drop(&mut self) {
        self.backend.close(self.id);
    }
}

impl fmt::Debug for ScanSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanSection")
            .field("id", &self.id)
            .field("file_size", &self.file_size)
            .finish()
    }
}

/// Which name of a file [`Services::file_name`] asks for (rule 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// The name the file was opened with, after the volume's device name
    /// (`FLT_FILE_NAME_OPENED`): `\Device\HarddiskVolume1\dir\REPORT.txt`.
    Opened,
    /// Each component as the file system spells it (`FLT_FILE_NAME_NORMALIZED`):
    /// `\Device\HarddiskVolume1\Dir\Report.TXT`. Only once the file is open: not in pre-create.
    Normalized,
}

impl NameKind {
    /// A short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            NameKind::Opened => "opened",
            NameKind::Normalized => "normalized",
        }
    }
}

/// Identifies a name within its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameId(pub usize);

/// Where each part of a name lies, as (start, length) in UTF-16 units of the whole name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameRanges {
    /// The volume's device name (`\Device\HarddiskVolume1`).
    pub volume: (usize, usize),
    /// A network name's `\server\share`; empty on a local volume.
    pub share: (usize, usize),
    /// The parent directory, without its trailing separator (`\` for a file in the root).
    pub parent_dir: (usize, usize),
    /// The final component, its stream included.
    pub final_component: (usize, usize),
    /// After the final component's last dot, before its stream; empty without a dot.
    pub extension: (usize, usize),
    /// The stream, from the final component's first colon (`:stream1:$DATA`).
    pub stream: (usize, usize),
}

/// A parsed name: the whole and its parts (`FLT_FILE_NAME_INFORMATION` after
/// `FltParseFileNameInformation`), each empty when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameParts<'a> {
    /// The whole name.
    pub name: FileName<'a>,
    /// The volume's device name.
    pub volume: FileName<'a>,
    /// A network name's `\server\share`.
    pub share: FileName<'a>,
    /// The parent directory.
    pub parent_dir: FileName<'a>,
    /// The final component.
    pub final_component: FileName<'a>,
    /// The extension, without its dot.
    pub extension: FileName<'a>,
    /// The stream.
    pub stream: FileName<'a>,
}

impl<'a> NameParts<'a> {
    /// No name at all.
    pub const EMPTY: NameParts<'static> = NameParts {
        name: FileName::new(&[]),
        volume: FileName::new(&[]),
        share: FileName::new(&[]),
        parent_dir: FileName::new(&[]),
        final_component: FileName::new(&[]),
        extension: FileName::new(&[]),
        stream: FileName::new(&[]),
    };

    /// The parts of `units` at `ranges` (a range outside the name is empty).
    pub fn from_ranges(units: &'a [u16], ranges: &NameRanges) -> NameParts<'a> {
        let part = |(start, len): (usize, usize)| {
            FileName::new(units.get(start..start.saturating_add(len)).unwrap_or(&[]))
        };
        NameParts {
            name: FileName::new(units),
            volume: part(ranges.volume),
            share: part(ranges.share),
            parent_dir: part(ranges.parent_dir),
            final_component: part(ranges.final_component),
            extension: part(ranges.extension),
            stream: part(ranges.stream),
        }
    }
}

/// Splits a name whose first `volume_len` units are the volume's device name and the next
/// `share_len` a network share's, as `FltParseFileNameInformation` does (its reference page's
/// examples; docs/simulator.md, "File names", for the cases they leave open).
pub fn parse_name(units: &[u16], volume_len: usize, share_len: usize) -> NameRanges {
    const SEP: u16 = b'\\' as u16;
    let total = units.len();
    let volume_len = volume_len.min(total);
    let share_len = share_len.min(total - volume_len);
    let start = volume_len + share_len;
    let mut r = NameRanges {
        volume: (0, volume_len),
        share: (volume_len, share_len),
        ..NameRanges::default()
    };
    let rest = units.get(start..).unwrap_or(&[]);
    if rest.iter().all(|c| *c == SEP) {
        return r;
    }
    // Without a separator (a short name: the page's `TestRe~1.txt`) there is no parent
    // directory, and the final component is all of it.
    let fstart = match rest.iter().rposition(|c| *c == SEP) {
        Some(last) => {
            r.parent_dir = (start, last.max(1));
            start + last + 1
        }
        None => start,
    };
    let fin = units.get(fstart..).unwrap_or(&[]);
    if fin.is_empty() {
        return r;
    }
    r.final_component = (fstart, fin.len());
    let colon = fin.iter().position(|c| *c == u16::from(b':'));
    if let Some(i) = colon {
        r.stream = (fstart + i, fin.len() - i);
    }
    let base = fin.get(..colon.unwrap_or(fin.len())).unwrap_or(&[]);
    if let Some(i) = base.iter().rposition(|c| *c == u16::from(b'.')) {
        if i + 1 < base.len() {
            r.extension = (fstart + i + 1, base.len() - i - 1);
        }
    }
    r
}

/// The backend side of a file name: its parts while referenced, and the release.
pub trait NameBackend: Sync {
    /// The parts of name `id`, valid until `release`. `None` for an unknown id.
    fn parts(&self, id: NameId) -> Option<NameParts<'_>>;
    /// Releases name `id` (`FltReleaseFileNameInformation`; the legacy backend frees its own).
    fn release(&self, id: NameId);
}

/// A file's name, parsed, from [`Services::file_name`] (rule 22). Dropping it releases it, at
/// IRQL <= `APC_LEVEL`. Its parts borrow from it.
pub struct FileNameInformation {
    id: NameId,
    backend: &'static dyn NameBackend,
    kind: NameKind,
}

impl FileNameInformation {
    /// Built by a backend once the name is found and parsed.
    pub fn new(
        id: NameId,
        backend: &'static dyn NameBackend,
        kind: NameKind,
    ) -> FileNameInformation {
        FileNameInformation { id, backend, kind }
    }

    /// Which name it is.
    pub const fn kind(&self) -> NameKind {
        self.kind
    }

    /// The whole name and its parts (all empty if the backend no longer knows the name).
    pub fn parts(&self) -> NameParts<'_> {
        self.backend.parts(self.id).unwrap_or(NameParts::EMPTY)
    }

    /// The whole name (`\Device\HarddiskVolume1\Dir\Report.TXT`).
    pub fn name(&self) -> FileName<'_> {
        self.parts().name
    }

    /// The final component's extension, without its dot (`TXT`).
    pub fn extension(&self) -> FileName<'_> {
        self.parts().extension
    }

    /// The final component (`Report.TXT`).
    pub fn final_component(&self) -> FileName<'_> {
        self.parts().final_component
    }

    /// The parent directory (`\Dir`).
    pub fn parent_dir(&self) -> FileName<'_> {
        self.parts().parent_dir
    }

    /// The volume's device name (`\Device\HarddiskVolume1`).
    pub fn volume(&self) -> FileName<'_> {
        self.parts().volume
    }
}

impl Drop for FileNameInformation {
    fn drop(&mut self) {
        self.backend.release(self.id);
    }
}

impl fmt::Debug for FileNameInformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileNameInformation")
            .field("kind", &self.kind)
            .field("name", &self.name())
            .finish()
    }
}

/// Services a backend offers to the callback it is running.
///
/// # Context
/// Called from the callback that received the `Services`, at that callback's IRQL.
pub trait Services {
    /// The IRQL now.
    fn irql(&self) -> Irql;

    /// Adds a note to the trace (the probe sample records its decisions this way). On Windows it
    /// is a `DbgPrintEx` line when tracing is on; in the simulator a `note` event.
    fn note(&self, message: &str);

    /// Creates a data-scan section over the operation's file and maps it read-only.
    ///
    /// Needs `PASSIVE_LEVEL`, a registration with data scanning, and a file; answers
    /// `STATUS_INVALID_DEVICE_STATE` at a higher IRQL, `STATUS_INVALID_PARAMETER` without data
    /// scanning, and the documented errors of the section calls otherwise (facts.md §6).
    fn create_scan_section(&self) -> Result<ScanSection, Error>;

    /// The data-scan mode of the operation's instance.
    fn data_scan_mode(&self) -> DataScanMode;

    /// Undoes a successful create from its post callback and fails it with `status`
    /// (`FltCancelFileOpen`; `IoCancelFileOpen` in the legacy model): the file system sees the
    /// cleanup and close of the file object, the requester sees `status`.
    ///
    /// Only in the post callback of a successful `IRP_MJ_CREATE` (`NT_SUCCESS`: a create that
    /// ended with a warning status failed), at `PASSIVE_LEVEL`, with a
    /// failing `status`; otherwise `STATUS_INVALID_PARAMETER` (or `STATUS_INVALID_DEVICE_STATE` at
    /// a higher IRQL) and nothing changes.
    fn cancel_file_open(&self, status: Status) -> Result<(), Error>;

    /// Blocks the calling thread for `ms` milliseconds (`KeDelayExecutionThread`); other threads
    /// run meanwhile, so I/O can race with the caller (a scan engine's latency, say). Only at
    /// `PASSIVE_LEVEL`: `STATUS_INVALID_DEVICE_STATE` otherwise.
    fn wait(&self, ms: u32) -> Result<(), Error>;

    /// The operation's file's name, parsed (`FltGetFileNameInformation` and
    /// `FltParseFileNameInformation`; the legacy backend builds the same itself), rule 22.
    ///
    /// Only for a filter that declares [`crate::Filter::NAME_QUERIES`] (`STATUS_NOT_SUPPORTED`
    /// otherwise), at
    /// `PASSIVE_LEVEL` (`STATUS_INVALID_DEVICE_STATE`), in an operation with a file object
    /// (`STATUS_INVALID_PARAMETER`). `STATUS_FLT_INVALID_NAME_REQUEST` in paging I/O, FsFilter
    /// callbacks, post-close, the post of a failed create, and for a normalized name in
    /// pre-create. The default answers `STATUS_NOT_SUPPORTED`.
    fn file_name(&self, kind: NameKind) -> Result<FileNameInformation, Error> {
        let _ = kind;
        Err(Error::NOT_SUPPORTED)
    }

    /// The process that requested the operation (rule 26): `FltGetRequestorProcessId` in the
    /// minifilter model; in the legacy one `IoGetRequestorProcessId` for an IRP (its requesting
    /// thread's process, also in a post callback that runs in a completion routine) and the
    /// current process for fast I/O and FsFilter callbacks, which run in the requester's thread.
    /// `None` when the operation has no requesting thread (the answer 0 of those routines), for
    /// services outside an operation (instance setup and teardown), and for a filter that does
    /// not declare [`crate::Filter::PROCESS_QUERIES`]. The default answers `None`.
    fn requestor_process(&self) -> Option<ProcessId> {
        None
    }

    /// The process that connected `client` to the filter's channel ([`crate::Filter::MESSAGES`]),
    /// recorded by the backend at the connection (rule 26): how a filter lets its own service's
    /// I/O through, as Microsoft's scanner sample does. `None` for a client that is not
    /// connected, for a filter without a channel and for a filter that does not declare
    /// [`crate::Filter::PROCESS_QUERIES`] (only then do the backends record the process of each
    /// connection). The default answers `None`.
    fn client_process(&self, client: crate::ClientId) -> Option<ProcessId> {
        let _ = client;
        None
    }

    /// Replaces the name of the create's file object with `name`, a full object-manager path
    /// (`\Device\HarddiskVolume2\dir\file` or `\??\D:\dir\file`), through
    /// `IoReplaceFileObjectName` in both models, so that the pre-create callback can then complete
    /// the create with [`crate::IoStatus::reparse`]: the I/O manager frees the file object and
    /// opens `name` instead, from the root of the namespace (rule 27; Microsoft's SimRep sample).
    ///
    /// Only for a filter that declares [`crate::Filter::REPARSES`] (`STATUS_NOT_SUPPORTED`
    /// otherwise), at `PASSIVE_LEVEL` (`STATUS_INVALID_DEVICE_STATE`), in the pre callback of an
    /// `IRP_MJ_CREATE` whose file object has a name (not a volume open), with a name of 1 to
    /// 32,767 UTF-16 units (`STATUS_INVALID_PARAMETER` otherwise, and nothing changes);
    /// `STATUS_INSUFFICIENT_RESOURCES` when the new name's buffer cannot be allocated. The
    /// default answers `STATUS_NOT_SUPPORTED`.
    fn replace_file_name(&self, name: &[u16]) -> Result<(), Error> {
        let _ = name;
        Err(Error::NOT_SUPPORTED)
    }

    /// The instance's context of the operation's stream, referenced until the returned guard is
    /// dropped (rule 28): found, or with [`ContextRequest::GetOrCreate`] attached with every word
    /// zero when there is none ([`StreamContext::created`] then says so).
    ///
    /// Only for a filter that declares [`crate::Filter::STREAM_CONTEXT_WORDS`]
    /// (`STATUS_NOT_SUPPORTED` otherwise), at IRQL ≤ `APC_LEVEL` (`STATUS_INVALID_DEVICE_STATE`),
    /// in an operation on an open stream: `STATUS_NOT_SUPPORTED` outside an operation, in
    /// pre-create, in the post of a create that opened nothing (failed or reparsed), in
    /// post-close, for a volume open, and where the file system keeps no filter contexts for the
    /// stream (no `FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS` in its header, or a paging file).
    /// [`ContextRequest::Get`] without a context: `STATUS_NOT_FOUND`.
    /// Once the instance's teardown has started, a context still attached is found, but
    /// [`ContextRequest::GetOrCreate`] attaches none: `STATUS_FLT_DELETING_OBJECT`; when the
    /// context cannot be allocated:
    /// `STATUS_INSUFFICIENT_RESOURCES`. The default answers `STATUS_NOT_SUPPORTED`.
    ///
    /// [`ContextRequest::HandleGet`] and [`ContextRequest::HandleGetOrCreate`] ask the same of
    /// the context of the operation's handle (its file object; rule 29), for a filter that
    /// declares [`crate::Filter::HANDLE_CONTEXT_WORDS`], with the same refusals: two handles on
    /// one stream have two contexts, each freed after its own handle's close.
    fn stream_context(&self, request: ContextRequest) -> Result<StreamContext, Error> {
        let _ = request;
        Err(Error::NOT_SUPPORTED)
    }

    /// Sends `message` to the connected client `client` of the filter's channel
    /// ([`crate::Filter::MESSAGES`]) and waits until the client received it and, when `reply`
    /// is given, until it replied into `reply` (`FltSendMessage`; the legacy backend completes
    /// one of the client's pending [`crate::IOCTL_FSFILTER_GET_MESSAGE`] requests and waits for
    /// its [`crate::IOCTL_FSFILTER_REPLY_MESSAGE`]), rule 25. `timeout_ms`: how long the whole
    /// exchange may take; `None` waits without limit (a client that never reads blocks the
    /// caller until it disconnects).
    ///
    /// Only at `PASSIVE_LEVEL` or `APC_LEVEL` (`STATUS_INVALID_DEVICE_STATE`), for a filter
    /// with a channel (`STATUS_NOT_SUPPORTED`), a message of 1 to `max_message` bytes, a reply
    /// buffer of at most `max_message` bytes and a timeout of at least 1 ms
    /// (`STATUS_INVALID_PARAMETER`); `STATUS_PORT_DISCONNECTED` when `client` is not connected
    /// or disconnects while the caller waits. The default answers `STATUS_NOT_SUPPORTED`.
    fn send_message(
        &self,
        client: crate::ClientId,
        message: &[u8],
        reply: Option<&mut [u8]>,
        timeout_ms: Option<u32>,
    ) -> Result<crate::MessageSent, Error> {
        let _ = (client, message, reply, timeout_ms);
        Err(Error::NOT_SUPPORTED)
    }
}

/// How a pended pre-operation continues (the status passed to `FltCompletePendedPreOperation`).
pub enum PreResume<C> {
    /// Continue down the stack and call the post callback with this context
    /// (`FLT_PREOP_SUCCESS_WITH_CALLBACK`).
    WithPost(C),
    /// Continue down the stack without a post callback (`FLT_PREOP_SUCCESS_NO_CALLBACK`).
    NoPost,
    /// Complete the operation here (`FLT_PREOP_COMPLETE`).
    Complete(IoStatus),
}

impl<C> fmt::Debug for PreResume<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreResume::WithPost(_) => f.write_str("WithPost(..)"),
            PreResume::NoPost => f.write_str("NoPost"),
            PreResume::Complete(s) => write!(f, "Complete({:?})", s.status),
        }
    }
}

/// The backend half of a pended operation.
pub trait PendBackend<C>: Sync {
    /// Marks the current operation `handle` as pended. False when it cannot be pended (fast I/O
    /// and FsFilter operations, facts.md §4) or already is.
    fn pend(&self, handle: usize) -> bool;
    /// Resumes the pended operation `handle`. Unknown or already-resumed handles are ignored.
    fn resume(&self, handle: usize, how: PreResume<C>);
    /// Resumes the pended operation `handle` from a worker after `delay_ms` milliseconds.
    fn resume_after(&self, handle: usize, delay_ms: u32, how: PreResume<C>);
}

/// A pre-operation the filter pended (`FLT_PREOP_PENDING`). It must be resumed exactly once, from
/// any thread, at IRQL ≤ `DISPATCH_LEVEL`.
///
/// Dropping it without resuming completes the operation with `STATUS_CANCELLED`, so a lost token
/// cannot hang the requester or an unload (on Windows a forgotten pended operation hangs both,
/// facts.md §2.5).
pub struct PendedOperation<C: 'static> {
    handle: usize,
    backend: &'static dyn PendBackend<C>,
    resumed: bool,
}

impl<C: 'static> PendedOperation<C> {
    /// Built by a backend.
    pub fn new(handle: usize, backend: &'static dyn PendBackend<C>) -> PendedOperation<C> {
        PendedOperation { handle, backend, resumed: false }
    }

    /// The backend's identity for the operation.
    pub const fn handle(&self) -> usize {
        self.handle
    }

    /// Resumes the operation now.
    pub fn resume(mut self, how: PreResume<C>) {
        self.resumed = true;
        self.backend.resume(self.handle, how);
    }

    /// Resumes the operation from a system worker after `delay_ms` milliseconds: the pattern of a
    /// filter that pends an operation while something else (a scan, a user-mode service) decides.
    pub fn resume_after(mut self, delay_ms: u32, how: PreResume<C>) {
        self.resumed = true;
        self.backend.resume_after(self.handle, delay_ms, how);
    }
}

impl<C: 'static> Drop for PendedOperation<C> {
    fn drop(&mut self) {
        if !self.resumed {
            self.backend.resume(self.handle, PreResume::Complete(IoStatus::new(Status::CANCELLED)));
        }
    }
}

impl<C: 'static> fmt::Debug for PendedOperation<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendedOperation").field("handle", &self.handle).finish()
    }
}

/// Proof that a pre-operation was pended: only a backend's pend call makes one, so a filter cannot
/// answer [`crate::PreOutcome::Pending`] without holding the [`PendedOperation`] that resumes it.
#[derive(Debug)]
pub struct PendReceipt {
    _private: PhantomData<*const ()>,
}

impl PendReceipt {
    fn issue() -> PendReceipt {
        PendReceipt { _private: PhantomData }
    }
}

/// Pends operation `handle` through `backend`: the token that resumes it and the receipt that
/// proves it. `None` when the backend refuses (fast I/O, FsFilter operations, already pended).
pub fn pend<C: 'static>(
    handle: usize,
    backend: &'static dyn PendBackend<C>,
) -> Option<(PendedOperation<C>, PendReceipt)> {
    if backend.pend(handle) {
        Some((PendedOperation::new(handle, backend), PendReceipt::issue()))
    } else {
        None
    }
}

/// The backend half of a post-operation whose completion the filter deferred.
pub trait PostBackend: Sync {
    /// Marks the current post-operation `handle` as deferred. False when it cannot be (not an
    /// IRP, or draining).
    fn defer(&self, handle: usize) -> bool;
    /// Continues completion of `handle` (`FltCompletePendedPostOperation`). Unknown handles are
    /// ignored.
    fn complete(&self, handle: usize);
}

/// A post-operation whose completion the filter deferred (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`).
/// Completing it, or dropping it, lets completion continue.
pub struct DeferredPost {
    handle: usize,
    backend: &'static dyn PostBackend,
    completed: bool,
}

impl DeferredPost {
    /// Continues completion of the operation.
    pub fn complete(mut self) {
        self.completed = true;
        self.backend.complete(self.handle);
    }
}

impl Drop for DeferredPost {
    fn drop(&mut self) {
        if !self.completed {
            self.backend.complete(self.handle);
        }
    }
}

impl fmt::Debug for DeferredPost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredPost").field("handle", &self.handle).finish()
    }
}

/// Proof that a post-operation was deferred; see [`DeferredPost`].
#[derive(Debug)]
pub struct PostReceipt {
    _private: PhantomData<*const ()>,
}

/// Defers post-operation `handle` through `backend`.
pub fn defer_post(
    handle: usize,
    backend: &'static dyn PostBackend,
) -> Option<(DeferredPost, PostReceipt)> {
    if backend.defer(handle) {
        Some((
            DeferredPost { handle, backend, completed: false },
            PostReceipt { _private: PhantomData },
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::cell::RefCell;
    use std::vec::Vec;

    struct Recorder(std::sync::Mutex<Vec<(usize, &'static str)>>);

    impl PendBackend<u32> for Recorder {
        fn pend(&self, handle: usize) -> bool {
            handle != 0
        }
        fn resume_after(&self, handle: usize, _delay_ms: u32, how: PreResume<u32>) {
            self.resume(handle, how);
        }
        fn resume(&self, handle: usize, how: PreResume<u32>) {
            let what = match how {
                PreResume::WithPost(7) => "with-post-7",
                PreResume::WithPost(_) => "with-post",
                PreResume::NoPost => "no-post",
                PreResume::Complete(s) if s.status == Status::CANCELLED => "cancelled",
                PreResume::Complete(_) => "complete",
            };
            self.0.lock().unwrap().push((handle, what));
        }
    }

    #[test]
    fn a_pended_operation_resumes_once_and_a_lost_one_is_cancelled() {
        static REC: Recorder = Recorder(std::sync::Mutex::new(Vec::new()));
        PendedOperation::new(1, &REC).resume(PreResume::WithPost(7));
        drop(PendedOperation::<u32>::new(2, &REC));
        PendedOperation::new(3, &REC).resume(PreResume::NoPost);
        assert_eq!(*REC.0.lock().unwrap(), [(1, "with-post-7"), (2, "cancelled"), (3, "no-post")]);
        assert!(pend(0, &REC).is_none(), "a refused pend gives no token");
        let (token, _receipt) = pend(4, &REC).unwrap();
        token.resume_after(10, PreResume::Complete(IoStatus::new(Status::ACCESS_DENIED)));
        assert_eq!(REC.0.lock().unwrap().last(), Some(&(4, "complete")));
    }

    struct Sections {
        closed: std::sync::Mutex<Vec<usize>>,
        data: [u8; 4],
        conflict: std::sync::Mutex<RefCell<bool>>,
    }

    impl SectionBackend for Sections {
        fn view(&self, id: SectionId) -> Option<&[u8]> {
            (id.0 == 5).then_some(&self.data[..])
        }
        fn conflicted(&self, _id: SectionId) -> bool {
            *self.conflict.lock().unwrap().borrow()
        }
        fn close(&self, id: SectionId) {
            self.closed.lock().unwrap().push(id.0);
        }
    }

    struct Names(std::sync::Mutex<Vec<usize>>, [u16; 32]);

    impl NameBackend for Names {
        fn parts(&self, id: NameId) -> Option<NameParts<'_>> {
            let units = self.1.get(..28).unwrap_or(&[]);
            (id.0 == 1).then(|| NameParts::from_ranges(units, &parse_name(units, 4, 0)))
        }
        fn release(&self, id: NameId) {
            self.0.lock().unwrap().push(id.0);
        }
    }

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn parts_of(name: &str, volume: usize, share: usize) -> [std::string::String; 6] {
        let u = units(name);
        let p = NameParts::from_ranges(&u, &parse_name(&u, volume, share));
        [p.volume, p.share, p.parent_dir, p.final_component, p.extension, p.stream]
            .map(|f| std::format!("{f}"))
    }

    #[test]
    fn names_split_as_flt_parse_file_name_information_does() {
        // Its reference page's examples.
        let v = r"\Device\HarddiskVolume1";
        let n = std::format!(r"{v}\Docume~1\MyUser\My Documents\TestRe~1.txt:stream1:$DATA");
        assert_eq!(
            parts_of(&n, v.len(), 0),
            [
                v,
                "",
                r"\Docume~1\MyUser\My Documents",
                "TestRe~1.txt:stream1:$DATA",
                "txt",
                ":stream1:$DATA"
            ]
        );
        let v = r"\Device\LanManRedirector";
        let n =
            std::format!(r"{v}\MyServer\MyShare\Documents and Settings\Test Results.txt:stream1");
        assert_eq!(
            parts_of(&n, v.len(), r"\MyServer\MyShare".len()),
            [
                v,
                r"\MyServer\MyShare",
                r"\Documents and Settings",
                "Test Results.txt:stream1",
                "txt",
                ":stream1"
            ]
        );
        // Ours, as the simulator's Filter Manager: a file in the root, the root, a last dot.
        let v = r"\Device\HarddiskVolume2";
        assert_eq!(
            parts_of(&std::format!(r"{v}\Makefile"), v.len(), 0),
            [v, "", r"\", "Makefile", "", ""]
        );
        assert_eq!(parts_of(&std::format!(r"{v}\"), v.len(), 0), [v, "", "", "", "", ""]);
        assert_eq!(
            parts_of(&std::format!(r"{v}\a.b\c."), v.len(), 0),
            [v, "", r"\a.b", "c.", "", ""]
        );
        // The page's short name: no volume, no parent, a final component and its extension.
        assert_eq!(parts_of("TestRe~1.txt", 0, 0), ["", "", "", "TestRe~1.txt", "txt", ""]);
        // Lengths beyond the name are clamped, never a panic.
        assert_eq!(parts_of("ab", 9, 9), ["ab", "", "", "", "", ""]);
    }

    #[test]
    fn a_name_is_released_when_dropped() {
        static N: Names = Names(std::sync::Mutex::new(Vec::new()), [b'\\' as u16; 32]);
        let name = FileNameInformation::new(NameId(1), &N, NameKind::Normalized);
        assert_eq!(name.kind(), NameKind::Normalized);
        assert_eq!(name.volume().units().len(), 4);
        let unknown = FileNameInformation::new(NameId(2), &N, NameKind::Opened);
        assert!(unknown.name().is_empty());
        drop(name);
        drop(unknown);
        assert_eq!(*N.0.lock().unwrap(), [1, 2]);
    }

    #[test]
    fn a_section_closes_when_dropped() {
        static S: Sections = Sections {
            closed: std::sync::Mutex::new(Vec::new()),
            data: *b"EICA",
            conflict: std::sync::Mutex::new(RefCell::new(false)),
        };
        let section = ScanSection::new(SectionId(5), &S, 4);
        assert_eq!(section.data(), b"EICA");
        assert!(!section.conflicted());
        *S.conflict.lock().unwrap().borrow_mut() = true;
        assert!(section.conflicted());
        let unknown = ScanSection::new(SectionId(6), &S, 0);
        assert_eq!(unknown.data(), b"");
        // A view is whole pages: the bytes past the end of the file are not the file's.
        let short = ScanSection::new(SectionId(5), &S, 3);
        assert_eq!(short.data(), b"EIC");
        drop(section);
        drop(unknown);
        drop(short);
        assert_eq!(*S.closed.lock().unwrap(), [5, 6, 5]);
    }
}
