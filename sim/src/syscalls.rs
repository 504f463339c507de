//! The system services of a user-mode caller (`NtCreateFile`, `NtReadFile`, ...) as the I/O
//! manager implements them: file objects, IRPs with the buffers each method uses, fast I/O first
//! for cached synchronous reads and writes once the file object's caching is initiated (facts.md
//! §1.7, docs/simulator.md), the request sent to the top of the volume's stack, the wait, and the
//! results copied back. Every request is a
//! [`crate::requests::Request`] so events carry its `io` id.

use std::ffi::c_void;

use fsfilter::{MajorFunction, Status};
use fsfilter_kernel::params::{self, io_mut};
use windows_sys::Wdk::Foundation::{
    ACCESS_STATE, DEVICE_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT, IO_SECURITY_CONTEXT,
    IO_STACK_LOCATION, IRP, KEVENT, MDL, PEPROCESS,
};
use windows_sys::Win32::Foundation::UNICODE_STRING;
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use crate::events::{RequestRef, Rule};
use crate::files::{DeviceHandle, DeviceUserHandle, Handle, Released};
use crate::ids::{RequestId, ThreadId, VolumeId};
use crate::irp::Finish;
use crate::kernel::{self, Kernel};
use crate::mem::Block;
use crate::nt::{
    access, create_options, disposition, fo, irp_flags, method, mj, mn_dir, mn_fsctl, mn_lock,
    share, sl,
};
use crate::requests::OverlappedResult;
use crate::security::Caller;
use crate::volumes::MediaKind;

/// How a read or write reaches the file system (scenario.md `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoMode {
    /// Through the cache: fast I/O first once the file object's caching is initiated, then an
    /// IRP without `IRP_NOCACHE`.
    #[default]
    Cached,
    /// `IRP_NOCACHE` with an MDL, as for a file opened with `FILE_NO_INTERMEDIATE_BUFFERING`.
    NonCached,
    /// Paging I/O, as the memory manager issues it: `IRP_PAGING_IO | IRP_NOCACHE`, an MDL.
    Paging,
}

impl IoMode {
    /// Parses the scenario spelling.
    pub fn from_name(s: &str) -> Option<IoMode> {
        match s.to_ascii_lowercase().as_str() {
            "cached" => Some(IoMode::Cached),
            "noncached" => Some(IoMode::NonCached),
            "paging" => Some(IoMode::Paging),
            _ => None,
        }
    }
}

/// Who writes a file's modified pages back (a paging write, [`IoRequest::PageWrite`]), and so
/// which FsFilter operations bracket the write (docs/simulator.md, "FsFilter callbacks").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PageWriter {
    /// The cache manager's lazy writer: it acquires the file through the file system's own
    /// cache-manager callbacks, which no filter sees, and writes synchronously
    /// (`IRP_SYNCHRONOUS_PAGING_IO`), in a system thread (the System process is its requestor).
    /// The same request as a write in [`IoMode::Paging`].
    #[default]
    LazyWriter,
    /// The modified-page writer (WRK's `MiMappedPageWriter`), in its own system thread: the file
    /// acquired with `FsRtlAcquireFileForModWriteEx` (`IRP_MJ_ACQUIRE_FOR_MOD_WRITE`, with the
    /// write's ending offset), an asynchronous paging write (`IoAsynchronousPageWrite`: no
    /// `IRP_SYNCHRONOUS_PAGING_IO`), the file released when the write completes
    /// (`FsRtlReleaseFileForModWrite` in `MiWriteComplete`).
    ModifiedPageWriter,
    /// A flush of a mapped view (`FlushViewOfFile`, WRK's `MmFlushVirtualMemory`), in the
    /// caller's thread: the file acquired with `FsRtlAcquireFileForCcFlushEx`
    /// (`IRP_MJ_ACQUIRE_FOR_CC_FLUSH`), a synchronous paging write (`IoSynchronousPageWrite`),
    /// the file released (`FsRtlReleaseFileForCcFlush`).
    Flush,
}

impl PageWriter {
    /// Parses the scenario spelling.
    pub fn from_name(s: &str) -> Option<PageWriter> {
        match s.to_ascii_lowercase().as_str() {
            "lazy-writer" => Some(PageWriter::LazyWriter),
            "modified-page-writer" => Some(PageWriter::ModifiedPageWriter),
            "flush" => Some(PageWriter::Flush),
            _ => None,
        }
    }
}

/// What an open asks for (`NtCreateFile`'s parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Desired access (generic rights are mapped).
    pub access: u32,
    /// Share access.
    pub share: u32,
    /// `FILE_SUPERSEDE` ... `FILE_OVERWRITE_IF`.
    pub disposition: u32,
    /// Create options (`FILE_DIRECTORY_FILE`, ...). `FILE_SYNCHRONOUS_IO_NONALERT` is implied
    /// unless `overlapped` or these hold a synchronous flag (`FILE_SYNCHRONOUS_IO_ALERT` makes
    /// the file object alertable; both flags are refused, as `IoCreateFile` refuses them).
    pub options: u32,
    /// File attributes.
    pub attributes: u32,
    /// Opened for asynchronous (overlapped) I/O: without `FILE_SYNCHRONOUS_IO_NONALERT`, so the
    /// file object has no `FO_SYNCHRONOUS_IO` (`CreateFile`'s `FILE_FLAG_OVERLAPPED`). Its reads
    /// and writes need an offset, are never tried as fast I/O, and return `STATUS_PENDING` when
    /// a driver pends them, the caller not waiting (docs/simulator.md, "Asynchronous I/O").
    pub overlapped: bool,
}

impl Default for CreateOptions {
    /// Read, write and delete access, sharing everything, `FILE_OPEN_IF`, any kind of file.
    fn default() -> Self {
        CreateOptions {
            access: access::GENERIC_READ | access::GENERIC_WRITE | access::DELETE,
            share: share::READ | share::WRITE | share::DELETE,
            disposition: disposition::OPEN_IF,
            options: 0,
            attributes: 0,
            overlapped: false,
        }
    }
}

impl CreateOptions {
    /// Opens an existing file or directory (`FILE_OPEN`).
    pub fn open() -> Self {
        CreateOptions { disposition: disposition::OPEN, ..Self::default() }
    }

    /// Creates a new file (`FILE_CREATE`, non-directory).
    pub fn create() -> Self {
        CreateOptions {
            disposition: disposition::CREATE,
            options: create_options::NON_DIRECTORY_FILE,
            ..Self::default()
        }
    }

    /// Opens or creates a directory (`FILE_OPEN_IF`, `FILE_DIRECTORY_FILE`).
    pub fn directory() -> Self {
        CreateOptions {
            disposition: disposition::OPEN_IF,
            options: create_options::DIRECTORY_FILE,
            ..Self::default()
        }
    }

    /// With this disposition.
    pub fn disposition(mut self, d: u32) -> Self {
        self.disposition = d;
        self
    }

    /// With these access rights.
    pub fn access(mut self, a: u32) -> Self {
        self.access = a;
        self
    }

    /// With this share access.
    pub fn share(mut self, s: u32) -> Self {
        self.share = s;
        self
    }

    /// With these create options.
    pub fn options(mut self, o: u32) -> Self {
        self.options = o;
        self
    }

    /// For asynchronous (overlapped) I/O.
    pub fn overlapped(mut self) -> Self {
        self.overlapped = true;
        self
    }

    /// The create options the IRP carries: the caller's, and `FILE_SYNCHRONOUS_IO_NONALERT`
    /// unless the open is overlapped or the caller chose a synchronous mode itself
    /// (`FILE_SYNCHRONOUS_IO_ALERT`, or both flags, which `IoCreateFile` refuses).
    fn full_options(&self) -> u32 {
        let chosen = self.options
            & (create_options::SYNCHRONOUS_IO_ALERT | create_options::SYNCHRONOUS_IO_NONALERT);
        let synchronous = if self.overlapped || chosen != 0 {
            0
        } else {
            create_options::SYNCHRONOUS_IO_NONALERT
        };
        self.options | synchronous
    }
}

/// An I/O status block as the I/O manager writes the caller's (`IO_STATUS_BLOCK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoStatusBlock {
    /// `Status`.
    pub status: Status,
    /// `Information`.
    pub information: usize,
}

/// The result of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoResult {
    /// What the system service returned: for a request that went down as an IRP, the status
    /// the top driver's dispatch routine returned unless it is `STATUS_PENDING`, then the
    /// final status for a caller who waits and `STATUS_PENDING` for one who does not or for a
    /// request nothing completed (WRK `IopSynchronousServiceTail`). The I/O manager's own
    /// requests (a create, a cleanup, a close) give the request's final `IoStatus.Status`. For a
    /// correct driver, whose dispatch routine returns the status it completed the IRP with, it
    /// is the final status (docs/simulator.md, "User-mode I/O", "The status a service
    /// returns").
    pub status: Status,
    /// The request's `IoStatus.Information` (0 while it is outstanding).
    pub information: usize,
    /// Data returned (read bytes, information buffers, FSCTL output).
    pub data: Vec<u8>,
    /// The request's id in the event log.
    pub io: Option<RequestRef>,
    /// Served by fast I/O (no IRP).
    pub fast_io: bool,
    /// The handle a successful create returns.
    pub handle: Option<Handle>,
    /// The caller's I/O status block when the call returned, if the I/O manager wrote it: not
    /// for a request refused before any request, nor for one that failed with an error without
    /// being pended, nor, when it failed with an error, for a pended request on a synchronous
    /// file object (WRK `IopCompleteRequest`); not yet for a request still outstanding, whose
    /// completion (`IoComplete`) writes it later.
    pub iosb: Option<IoStatusBlock>,
    /// For a create (and the open of `NtQueryFullAttributesFile`'s long way) that a driver
    /// reparsed: the reparses the I/O manager followed and the volume the last create went to
    /// (docs/simulator.md, "Reparse"). None when no create's `STATUS_REPARSE` was followed.
    pub reparsed: Option<Reparsed>,
}

/// The reparses a create followed ([`IoResult::reparsed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reparsed {
    /// Creates that ended `STATUS_REPARSE` with `IO_REPARSE` or at a mount point or a symbolic
    /// link, and whose new name the I/O manager parsed (each a request of its own in the event
    /// log).
    pub count: u32,
    /// The volume the last create went to.
    pub volume: VolumeId,
}

impl IoResult {
    fn failed(status: Status) -> IoResult {
        IoResult::without_request(status)
    }

    /// The result of a call that sent no request: its status alone.
    pub fn without_request(status: Status) -> IoResult {
        IoResult {
            status,
            information: 0,
            data: Vec::new(),
            io: None,
            fast_io: false,
            handle: None,
            iosb: None,
            reparsed: None,
        }
    }
}

/// One request of the user-mode API (scenario.md `io` ops).
#[derive(Clone, Debug)]
pub enum IoRequest<'a> {
    /// `NtCreateFile`.
    Create {
        /// The volume.
        volume: VolumeId,
        /// The path on the volume (`""` opens the volume, `\` its root directory).
        path: &'a str,
        /// What the open asks for.
        options: CreateOptions,
    },
    /// `NtQueryFullAttributesFile`: a file's `FILE_NETWORK_OPEN_INFORMATION` by name, without a
    /// handle. The I/O manager offers the query to the top device's `FastIoQueryOpen` first
    /// (`IRP_MJ_NETWORK_QUERY_OPEN` to minifilters); when that answers FALSE it opens the file
    /// for `FILE_READ_ATTRIBUTES`, queries it and closes it, each an IRP.
    QueryAttributes {
        /// The volume.
        volume: VolumeId,
        /// The path on the volume.
        path: &'a str,
    },
    /// `NtReadFile`.
    Read {
        /// The handle.
        handle: Handle,
        /// The offset (None: the file position).
        offset: Option<u64>,
        /// Bytes.
        length: usize,
        /// Cached, non-cached or paging.
        mode: IoMode,
    },
    /// `NtWriteFile`.
    Write {
        /// The handle.
        handle: Handle,
        /// The offset (None: the file position).
        offset: Option<u64>,
        /// The data.
        data: &'a [u8],
        /// Cached, non-cached or paging.
        mode: IoMode,
    },
    /// `NtQueryInformationFile`.
    QueryInformation {
        /// The handle.
        handle: Handle,
        /// `FILE_INFORMATION_CLASS`.
        class: u32,
        /// The buffer's length.
        length: usize,
    },
    /// `NtSetInformationFile`.
    SetInformation {
        /// The handle.
        handle: Handle,
        /// `FILE_INFORMATION_CLASS`.
        class: u32,
        /// The structure.
        data: &'a [u8],
    },
    /// `NtQueryDirectoryFile`.
    DirectoryControl {
        /// The handle.
        handle: Handle,
        /// `FILE_INFORMATION_CLASS`.
        class: u32,
        /// The pattern of the first query (None: `*`).
        pattern: Option<&'a str>,
        /// `SL_RESTART_SCAN`.
        restart: bool,
        /// `SL_RETURN_SINGLE_ENTRY`.
        single: bool,
        /// The buffer's length.
        length: usize,
    },
    /// `NtNotifyChangeDirectoryFile`: waits for a change in the handle's directory
    /// (`IRP_MN_NOTIFY_CHANGE_DIRECTORY`). Comes back `STATUS_PENDING` until a change completes
    /// it (docs/simulator.md, "Directory change notifications").
    NotifyChangeDirectory {
        /// The handle.
        handle: Handle,
        /// `FILE_NOTIFY_CHANGE_*`.
        filter: u32,
        /// `WatchTree` (`SL_WATCH_TREE`).
        watch_tree: bool,
        /// The buffer's length.
        length: usize,
    },
    /// `NtCancelIoFileEx(handle, NULL)` (`CancelIoEx`): cancels the caller's requests still
    /// outstanding on the handle, newest first, without waiting for them; `STATUS_NOT_FOUND`
    /// when there is none. No IRP is sent: a cancelled request completes with the status its
    /// holder's cancel routine gives it, `STATUS_CANCELLED` for the file systems' (docs/simulator.md,
    /// "IRP cancellation").
    Cancel {
        /// The handle.
        handle: Handle,
    },
    /// The handle closes: `IRP_MJ_CLEANUP`.
    Cleanup {
        /// The handle.
        handle: Handle,
    },
    /// The caller's last reference goes: `IRP_MJ_CLOSE` (after cleanup if the handle was open).
    Close {
        /// The handle.
        handle: Handle,
    },
    /// `NtFlushBuffersFile`.
    Flush {
        /// The handle.
        handle: Handle,
    },
    /// `NtFsControlFile`.
    Fsctl {
        /// The handle.
        handle: Handle,
        /// `FSCTL_*`.
        code: u32,
        /// Input.
        input: &'a [u8],
        /// Output length.
        output_length: usize,
    },
    /// `NtDeviceIoControlFile`.
    DeviceControl {
        /// The handle.
        handle: Handle,
        /// `IOCTL_*`.
        code: u32,
        /// Input.
        input: &'a [u8],
        /// Output length.
        output_length: usize,
    },
    /// `NtLockFile`.
    Lock {
        /// The handle.
        handle: Handle,
        /// Start.
        offset: u64,
        /// Length.
        length: u64,
        /// Exclusive (else shared).
        exclusive: bool,
        /// `FailImmediately`.
        fail_immediately: bool,
    },
    /// `NtUnlockFile`.
    Unlock {
        /// The handle.
        handle: Handle,
        /// Start.
        offset: u64,
        /// Length.
        length: u64,
    },
    /// `IRP_MJ_SHUTDOWN` to the volume's stack.
    Shutdown {
        /// The volume.
        volume: VolumeId,
    },
    /// `NtCreateSection` on the handle's file: a data section (`SEC_COMMIT`, the file's size)
    /// with `protection` (a `PAGE_*` value), whose handle the caller closes at once, as a program
    /// that maps a file and unmaps it. The memory manager first acquires the file for section
    /// synchronization, which drivers see as an FsFilter callback
    /// (`IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION` to minifilters), and releases it after;
    /// a filter that fails the acquire fails the call with its status (docs/simulator.md,
    /// "FsFilter callbacks"). No IRP is sent.
    CreateSection {
        /// The handle.
        handle: Handle,
        /// `SectionPageProtection`.
        protection: u32,
    },
    /// The memory manager writes pages of the handle's file back to it: `data` at `offset`, as a
    /// program that wrote them through a mapped view left them (the simulator keeps no pages:
    /// the request carries them). A paging write (`IRP_PAGING_IO | IRP_NOCACHE`, kernel mode,
    /// whatever the handle's access), bracketed by the FsFilter operations of its `writer`: a
    /// driver that fails the acquire fails the request with its status, and nothing is
    /// written; a file that cannot be mapped (a volume open, a directory) has no pages for the
    /// modified-page writer or a flush: `STATUS_INVALID_FILE_FOR_SECTION` (docs/simulator.md,
    /// "FsFilter callbacks").
    PageWrite {
        /// The handle whose file the pages are of.
        handle: Handle,
        /// The offset of the first page.
        offset: u64,
        /// The pages' data.
        data: &'a [u8],
        /// Who writes them.
        writer: PageWriter,
    },
    /// `NtQueryVolumeInformationFile`.
    QueryVolumeInformation {
        /// The handle.
        handle: Handle,
        /// `FS_INFORMATION_CLASS`.
        class: u32,
        /// The buffer's length.
        length: usize,
    },
}

/// Runs a system service as the user-mode caller: the thread of the acting process
/// (docs/simulator.md, "Processes"), `PASSIVE_LEVEL`, no image.
pub(crate) fn as_user<R>(f: impl FnOnce() -> R) -> R {
    let thread = kernel::with(|k| k.processes.acting);
    as_user_in(thread, f)
}

/// [`as_user`] in user thread `thread` (a request that waited, in its caller's thread).
pub(crate) fn as_user_in<R>(thread: ThreadId, f: impl FnOnce() -> R) -> R {
    let (saved, entered) = kernel::with(|k| {
        let saved = (k.irql(), k.thread);
        k.set_irql(crate::kernel::PASSIVE_LEVEL);
        k.thread = thread;
        (saved, k.enter(None))
    });
    let r = kernel::run_entered(entered, f);
    kernel::with(|k| {
        k.leave();
        crate::kmutex::returned(k, crate::kmutex::Exit::SystemService, "a system service");
        k.set_irql(saved.0);
        k.thread = saved.1;
    });
    crate::sched::run_ready();
    r
}

/// Runs one request: under the lock of its file object when it is a service on a synchronous
/// one (`crate::folock`), queued when that lock is held.
pub fn io(req: IoRequest<'_>) -> IoResult {
    as_user(|| match locked_file(&req) {
        None => serve(req),
        Some((handle, u, major)) => {
            if !crate::folock::try_acquire(u.fo) {
                // WRK's services check their parameters and the handle's access before they
                // take the lock: a call they refuse is answered at once and never waits (with
                // the lock free, the service makes the same checks first).
                if let Some(status) = refused_before_lock(&req, &u) {
                    return IoResult::failed(status);
                }
                // `NtLockFile` and `NtUnlockFile` try fast I/O before they take the lock (WRK
                // lock.c): a request it serves does not wait; one it declines waits as an IRP.
                if let Some(args) = lock_args(&req) {
                    match lock_fast(u.fo as *mut FILE_OBJECT, u.volume, args) {
                        Ok(served) => return served,
                        Err(Some(rid)) => {
                            let irp = waiting_as(false, handle, u, move |own| {
                                Box::new(move || match handle_of(own) {
                                    Ok((file, volume, _)) => {
                                        lock_irp(file, volume, args, Some(rid))
                                    }
                                    Err(s) => IoResult::failed(s),
                                })
                            });
                            return crate::folock::queue_started(u.fo, rid, irp);
                        }
                        Err(None) => {}
                    }
                }
                return crate::folock::queue(u.fo, u.volume, major, waiting(req, handle, u));
            }
            let r = serve(req);
            crate::folock::done(u.fo, &r);
            r
        }
    })
}

/// A request that waits for its file object's lock, as a service of its own: it keeps the file
/// object referenced while it waits, as the services do from `ObReferenceObjectByHandle` on, and
/// runs through a handle of its own, so that a close of the caller's handle meanwhile (which the
/// lock does not hold up once a cleanup is queued) leaves it whole. A cleanup is the handle's own:
/// the handle has none to send any more.
fn waiting(
    req: IoRequest<'_>,
    handle: Handle,
    u: crate::files::UserHandle,
) -> crate::folock::Service {
    let cleanup = matches!(req, IoRequest::Cleanup { .. });
    waiting_as(cleanup, handle, u, |own| owned(req, own))
}

/// [`waiting`] for the service `make` gives for the handle of its own (`cleanup`: the handle's
/// cleanup).
fn waiting_as(
    cleanup: bool,
    handle: Handle,
    u: crate::files::UserHandle,
    make: impl FnOnce(Handle) -> crate::folock::Service,
) -> crate::folock::Service {
    let own = kernel::with(|k| {
        k.file_reference(u.fo);
        if cleanup && let Some(Some(caller)) = k.files.handles.get_mut(handle.0 as usize) {
            caller.open = false;
        }
        k.add_handle(u.fo, u.volume, u.access)
    });
    let service = make(own);
    Box::new(move || {
        let r = service();
        kernel::with(|k| {
            if let Some(slot) = k.files.handles.get_mut(own.0 as usize) {
                *slot = None;
            }
        });
        dereference_file(u.fo);
        r
    })
}

/// The synchronous file object whose lock a request takes (WRK: every service on a handle of a
/// `FO_SYNCHRONOUS_IO` file object; not `NtCancelIoFile`, nor the memory manager's paging I/O
/// and sections), its volume, and the request's major function. The close is [`close`]'s.
fn locked_file(req: &IoRequest<'_>) -> Option<(Handle, crate::files::UserHandle, MajorFunction)> {
    use MajorFunction as M;
    let (handle, major) = match *req {
        IoRequest::Read { handle, mode, .. } if mode != IoMode::Paging => (handle, M::Read),
        IoRequest::Write { handle, mode, .. } if mode != IoMode::Paging => (handle, M::Write),
        IoRequest::QueryInformation { handle, .. } => (handle, M::QueryInformation),
        IoRequest::SetInformation { handle, .. } => (handle, M::SetInformation),
        IoRequest::QueryVolumeInformation { handle, .. } => (handle, M::QueryVolumeInformation),
        IoRequest::DirectoryControl { handle, .. }
        | IoRequest::NotifyChangeDirectory { handle, .. } => (handle, M::DirectoryControl),
        IoRequest::Cleanup { handle } => (handle, M::Cleanup),
        IoRequest::Flush { handle } => (handle, M::FlushBuffers),
        IoRequest::Fsctl { handle, .. } => (handle, M::FileSystemControl),
        IoRequest::DeviceControl { handle, .. } => (handle, M::DeviceControl),
        IoRequest::Lock { handle, .. } | IoRequest::Unlock { handle, .. } => {
            (handle, M::LockControl)
        }
        _ => return None,
    };
    let u = kernel::with(|k| k.user_handle(handle)).filter(|u| u.open)?;
    synchronous_file(u.fo as *mut FILE_OBJECT).then_some((handle, u, major))
}

/// What a service on a synchronous file object refuses before it takes the file object's lock,
/// as WRK orders its checks: `NtReadFile` / `NtWriteFile` the handle's access and, without
/// intermediate buffering, the length and offset alignment ([`transfer_refused`]);
/// `NtQueryInformationFile`, `NtSetInformationFile` and `NtQueryVolumeInformationFile` the class,
/// the length and the class's access ([`info_refused`]); `NtQueryDirectoryFile` the class and
/// length, and with `NtNotifyChangeDirectoryFile` (which checks its filter first)
/// `FILE_LIST_DIRECTORY`; `NtFlushBuffersFile` write or append access ([`flush_refused`]);
/// `IopXxxControlFile` the access the code asks for; `NtLockFile` / `NtUnlockFile` read or
/// write access. What they check after the lock (a negative offset, a position or a mode set,
/// a rename's name) waits with the service. `IopCloseFile`'s cleanup checks nothing.
fn refused_before_lock(req: &IoRequest<'_>, u: &crate::files::UserHandle) -> Option<Status> {
    let file = u.fo as *mut FILE_OBJECT;
    let granted = u.access;
    match *req {
        IoRequest::Read { offset, length, mode, .. } => {
            transfer_refused(file, granted, offset, length, mode, false)
        }
        IoRequest::Write { offset, data, mode, .. } => {
            transfer_refused(file, granted, offset, data.len(), mode, true)
        }
        IoRequest::QueryInformation { class, length, .. } => {
            info_refused(mj::QUERY_INFORMATION, class, length, granted)
        }
        IoRequest::SetInformation { class, data, .. } => {
            info_refused(mj::SET_INFORMATION, class, data.len(), granted)
        }
        IoRequest::QueryVolumeInformation { class, length, .. } => {
            info_refused(mj::QUERY_VOLUME_INFORMATION, class, length, granted)
        }
        IoRequest::DirectoryControl { class, length, .. } => {
            directory_class_refused(class, length).or_else(|| list_refused(granted))
        }
        IoRequest::NotifyChangeDirectory { filter, .. } => {
            notify_filter_refused(filter).or_else(|| list_refused(granted))
        }
        IoRequest::Flush { .. } => flush_refused(file, granted),
        IoRequest::Fsctl { code, .. } | IoRequest::DeviceControl { code, .. } => {
            control_refused(code, granted)
        }
        IoRequest::Lock { .. } | IoRequest::Unlock { .. } => lock_refused(granted),
        _ => None,
    }
}

/// A request that waits for its file object's lock, with its own copy of the caller's data.
fn owned(req: IoRequest<'_>, h: Handle) -> crate::folock::Service {
    match req {
        IoRequest::Write { handle: _, offset, data, mode } => {
            let data = data.to_vec();
            Box::new(move || write(h, offset, &data, mode))
        }
        IoRequest::SetInformation { handle: _, class, data } => {
            let data = data.to_vec();
            Box::new(move || buffered_info(h, mj::SET_INFORMATION, class, &data, 0, &[]))
        }
        IoRequest::DirectoryControl { handle: _, class, pattern, restart, single, length } => {
            let pattern = pattern.map(str::to_owned);
            Box::new(move || directory(h, class, pattern.as_deref(), restart, single, length))
        }
        IoRequest::Fsctl { handle: _, code, input, output_length } => {
            let input = input.to_vec();
            Box::new(move || control(h, mj::FILE_SYSTEM_CONTROL, code, &input, output_length))
        }
        IoRequest::DeviceControl { handle: _, code, input, output_length } => {
            let input = input.to_vec();
            Box::new(move || control(h, mj::DEVICE_CONTROL, code, &input, output_length))
        }
        IoRequest::Read { handle: _, offset, length, mode } => {
            Box::new(move || serve(IoRequest::Read { handle: h, offset, length, mode }))
        }
        IoRequest::QueryInformation { handle: _, class, length } => {
            Box::new(move || serve(IoRequest::QueryInformation { handle: h, class, length }))
        }
        IoRequest::QueryVolumeInformation { handle: _, class, length } => {
            Box::new(move || serve(IoRequest::QueryVolumeInformation { handle: h, class, length }))
        }
        IoRequest::NotifyChangeDirectory { handle: _, filter, watch_tree, length } => {
            Box::new(move || notify_change_directory(h, filter, watch_tree, length))
        }
        IoRequest::Cleanup { .. } => Box::new(move || cleanup(h)),
        IoRequest::Flush { .. } => Box::new(move || simple(h, mj::FLUSH_BUFFERS)),
        IoRequest::Lock { .. } | IoRequest::Unlock { .. } => match lock_args(&req) {
            Some(args) => Box::new(move || lock(h, args)),
            None => Box::new(|| IoResult::failed(Status::INVALID_PARAMETER)),
        },
        // Never queued ([`locked_file`]).
        _ => Box::new(|| IoResult::failed(Status::INVALID_PARAMETER)),
    }
}

/// Serves one request.
fn serve(req: IoRequest<'_>) -> IoResult {
    match req {
        IoRequest::Create { volume, path, options } => create(volume, path, options),
        IoRequest::QueryAttributes { volume, path } => query_attributes(volume, path),
        IoRequest::Read { handle, offset, length, mode } => read(handle, offset, length, mode),
        IoRequest::CreateSection { handle, protection } => create_section(handle, protection),
        IoRequest::Write { handle, offset, data, mode } => write(handle, offset, data, mode),
        IoRequest::PageWrite { handle, offset, data, writer } => {
            page_write(handle, offset, data, writer)
        }
        IoRequest::QueryInformation { handle, class, length } => {
            let fast = [crate::nt::file_info::BASIC, crate::nt::file_info::STANDARD];
            buffered_info(handle, mj::QUERY_INFORMATION, class, &[], length, &fast)
        }
        IoRequest::SetInformation { handle, class, data } => {
            buffered_info(handle, mj::SET_INFORMATION, class, data, 0, &[])
        }
        IoRequest::QueryVolumeInformation { handle, class, length } => {
            buffered_info(handle, mj::QUERY_VOLUME_INFORMATION, class, &[], length, &[])
        }
        IoRequest::DirectoryControl { handle, class, pattern, restart, single, length } => {
            directory(handle, class, pattern, restart, single, length)
        }
        IoRequest::NotifyChangeDirectory { handle, filter, watch_tree, length } => {
            notify_change_directory(handle, filter, watch_tree, length)
        }
        IoRequest::Cancel { handle } => match handle_of(handle) {
            Ok((file, _, _)) => {
                // WRK's `NtCancelIoFile` writes the caller's status block when it succeeds.
                let status = crate::cancel::cancel_file_requests(file);
                let iosb = status.is_success().then_some(IoStatusBlock { status, information: 0 });
                IoResult { iosb, ..IoResult::without_request(status) }
            }
            Err(s) => IoResult::failed(s),
        },
        IoRequest::Cleanup { handle } => cleanup(handle),
        IoRequest::Close { handle } => close(handle),
        IoRequest::Flush { handle } => simple(handle, mj::FLUSH_BUFFERS),
        IoRequest::Fsctl { handle, code, input, output_length } => {
            control(handle, mj::FILE_SYSTEM_CONTROL, code, input, output_length)
        }
        IoRequest::DeviceControl { handle, code, input, output_length } => {
            control(handle, mj::DEVICE_CONTROL, code, input, output_length)
        }
        IoRequest::Lock { handle, .. } | IoRequest::Unlock { handle, .. } => {
            match lock_args(&req) {
                Some(args) => lock(handle, args),
                None => IoResult::failed(Status::INVALID_PARAMETER),
            }
        }
        IoRequest::Shutdown { volume } => shutdown(volume),
    }
}

/// A request being built: its id, IRP, target and buffers (kept until it completes).
struct Built {
    rid: RequestId,
    irp: *mut IRP,
    target: *mut DEVICE_OBJECT,
    keep: Vec<Block>,
}

/// Starts a request and allocates its IRP for `target` (the top of the stack), filling the
/// header as the I/O manager does. Inlined into its three callers: outlined (LLVM's choice once
/// `IofCallDriver` grew), a create and its close took about 180 instructions more
/// (docs/performance-history.md, "Simulator throughput").
#[inline(always)]
fn build(
    k: &mut Kernel,
    volume: VolumeId,
    major: u8,
    target: *mut DEVICE_OBJECT,
    fo: *mut FILE_OBJECT,
    flags: u32,
    user_mode: bool,
) -> Built {
    let rid = k.start_request(volume, MajorFunction::from_code(major), false);
    build_for(k, rid, major, target, fo, flags, user_mode)
}

/// [`build`] for a request already started (a fast-I/O attempt that answered FALSE).
fn build_for(
    k: &mut Kernel,
    rid: RequestId,
    major: u8,
    target: *mut DEVICE_OBJECT,
    fo: *mut FILE_OBJECT,
    flags: u32,
    user_mode: bool,
) -> Built {
    let stack = k.objects.device_id(target).map_or(1, |d| k.objects.dobj(d).StackSize);
    let irp = k.allocate_irp(stack, Finish::Request(rid), None);
    // SAFETY: a fresh IRP the I/O manager owns until it calls the driver.
    let i = unsafe { crate::irpx::header(irp) };
    i.Flags = flags;
    i.RequestorMode = i8::from(user_mode);
    i.IoStatus.Anonymous.Status = Status::PENDING.0;
    i.Tail.Overlay.OriginalFileObject = fo;
    // SAFETY: the first stack location of the fresh IRP.
    let next = unsafe { crate::irpx::next(irp) };
    next.MajorFunction = major;
    next.FileObject = fo;
    Built { rid, irp, target, keep: Vec::new() }
}

/// The first stack location of a built request.
fn first(b: &Built) -> &'static mut IO_STACK_LOCATION {
    // SAFETY: the request's IRP, not yet sent.
    unsafe { crate::irpx::next(b.irp) }
}

/// A request sent: its request's final `IoStatus` and what its system service makes of it.
struct Sent {
    /// The request's final `IoStatus.Status` (`STATUS_PENDING` while it is outstanding, or when
    /// its caller did not wait for it).
    status: Status,
    /// Its `IoStatus.Information` (0 while outstanding).
    information: usize,
    /// The request.
    rid: RequestId,
    /// Its buffers (kept until it completes).
    keep: Vec<Block>,
    /// What a system service returns (WRK `IopSynchronousServiceTail`, and the same code inline
    /// in `NtQueryInformationFile` / `NtSetInformationFile`): the status the top driver's
    /// dispatch routine returned (`IoCallDriver`) unless it is `STATUS_PENDING`; then, for a
    /// caller who waits, the final status (`FileObject->FinalStatus`, or the service's own
    /// status block for a synchronous API on an asynchronous file object), else
    /// `STATUS_PENDING`.
    returned: Status,
    /// The caller's I/O status block as the call leaves it ([`IoResult::iosb`]).
    iosb: Option<IoStatusBlock>,
}

/// Sends a built request and waits for it.
fn send(b: Built) -> Sent {
    send_and(b, true)
}

/// Sends a built request on an asynchronous file object: the caller does not wait. A request
/// the drivers completed before their dispatch routines returned comes back with its status;
/// one they pended comes back `STATUS_PENDING` and completes later (its buffers and file object
/// held until then).
fn send_no_wait(b: Built) -> Sent {
    send_and(b, false)
}

/// Sends a built request of a service that is asynchronous on an asynchronous file object
/// (`NtReadFile`, `NtWriteFile`, `IopXxxControlFile`, `NtLockFile`, `NtQueryDirectoryFile`,
/// `NtNotifyChangeDirectoryFile`): waited for on a synchronous file object (`FO_SYNCHRONOUS_IO`),
/// [`send_no_wait`] on any other, as WRK's `IopSynchronousServiceTail` does.
fn send_on(file: *mut FILE_OBJECT, b: Built) -> Sent {
    send_and(b, synchronous_file(file))
}

/// Whether a file object was opened for synchronous I/O (`FO_SYNCHRONOUS_IO`).
fn synchronous_file(file: *mut FILE_OBJECT) -> bool {
    // SAFETY: a live file object of an open handle.
    let flags = unsafe { (*file).Flags };
    flags & fo::SYNCHRONOUS_IO != 0
}

/// The `IRP_SYNCHRONOUS_API` of a service that is a synchronous API on an asynchronous file
/// object (`NtQueryInformationFile`, `NtSetInformationFile`, `NtQueryVolumeInformationFile`,
/// `NtUnlockFile`, `NtFlushBuffersFile`: they wait on an event of their own), and not on a
/// synchronous one, which says so with `FO_SYNCHRONOUS_IO` (WRK).
fn synchronous_api(file: *mut FILE_OBJECT) -> u32 {
    if synchronous_file(file) { 0 } else { irp_flags::SYNCHRONOUS_API }
}

/// Sends a built request, waits for it if `wait`, and says what its system service returns and
/// what the caller's I/O status block holds then (WRK `IopSynchronousServiceTail`,
/// `IopSynchronousApiServiceTail`, `IopCompleteRequest`).
fn send_and(b: Built, wait: bool) -> Sent {
    let Built { rid, irp, target, keep } = b;
    // SAFETY: the request's IRP, not yet sent.
    let header = unsafe { crate::irpx::header(irp) };
    // SAFETY: the overlay member `build_for` set (the original file object).
    let file = unsafe { header.Tail.Overlay.OriginalFileObject };
    // SAFETY: the live file object of the request.
    let synchronous_fo = !file.is_null() && unsafe { (*file).Flags } & fo::SYNCHRONOUS_IO != 0;
    let synchronous = synchronous_fo || header.Flags & irp_flags::SYNCHRONOUS_API != 0;
    let returned = crate::irp::call_driver(target, irp);
    let pended = returned == crate::irpx::STATUS_PENDING;
    if wait {
        let done = || kernel::with(|k| k.requests.result(rid).is_some());
        let _ = crate::sched::wait_until(done, None);
    }
    let block = |status: Status, information| Some(IoStatusBlock { status, information });
    match kernel::with(|k| k.requests.result(rid)) {
        // Completed without STATUS_PENDING from the dispatch routine: the service returns what
        // the routine returned, and `IopCompleteRequest` writes the caller's status block from
        // the IRP's `IoStatus` unless its status is an error (the request was not pended).
        Some((status, information)) if !pended => {
            let iosb = if status.is_error() { None } else { block(status, information) };
            Sent { status, information, rid, keep, returned: Status(returned), iosb }
        }
        // Pended, and the caller waited for it: the final status. The status block is written
        // unless the status is an error on a synchronous file object (`IopCompleteRequest`
        // leaves it alone and sets only `FinalStatus`; a synchronous API on an asynchronous
        // file object gets the IRP's status in its own block and copies it to the caller's).
        Some((status, information)) if wait => {
            let iosb =
                if status.is_error() && synchronous_fo { None } else { block(status, information) };
            Sent { status, information, rid, keep, returned: status, iosb }
        }
        // The caller who does not wait gets what the dispatch routine returned (WRK
        // `IopSynchronousServiceTail`): STATUS_PENDING, even when the request completed before
        // the routine returned (its buffers are no longer needed); the completion wrote its
        // status block, error or not, a pended request on an asynchronous file object. Its
        // caller finds the same once it looks ([`OverlappedResult`]).
        Some((status, information)) => {
            let returned = Status::PENDING;
            let iosb = block(status, information);
            let found = OverlappedResult { status, information, iosb, data: Vec::new() };
            kernel::with(|k| k.requests.set_overlapped(rid, found));
            Sent { status: Status::PENDING, information: 0, rid, keep: Vec::new(), returned, iosb }
        }
        None => {
            // Still pending (a driver holds it): its buffers must outlive it, and its file
            // object too; what its caller finds is recorded when it completes.
            kernel::with(|k| {
                k.hold_file_while_pending(irp);
                k.keep_for_request(rid, Box::new(keep));
                let view = crate::irp::CallerView { synchronous, read: None };
                k.keep_for_request(rid, Box::new(view));
            });
            Sent {
                status: Status::PENDING,
                information: 0,
                rid,
                keep: Vec::new(),
                returned: Status::PENDING,
                iosb: None,
            }
        }
    }
}

/// Gives the caller of request `rid`, which its service returned `STATUS_PENDING` for, what
/// `read` takes from its buffers once the request completes ([`OverlappedResult::data`]).
fn overlapped_read(rid: RequestId, read: impl FnOnce(Status, usize) -> Vec<u8> + 'static) {
    kernel::with(|k| k.overlapped_read(rid, Box::new(read)));
}

/// The result of a system service whose request was [`Sent`], with `data` for its caller.
fn sent_result(s: &Sent, data: Vec<u8>) -> IoResult {
    IoResult { status: s.returned, iosb: s.iosb, ..result(s.status, s.information, s.rid, data) }
}

/// The result of request `rid` that ended with `status` and `information`: the caller's status
/// block holds them unless the status is an error (`IopCompleteRequest` for a request that was
/// not pended) or `STATUS_PENDING` (not written yet).
fn result(status: Status, information: usize, rid: RequestId, data: Vec<u8>) -> IoResult {
    let written = status != Status::PENDING && !status.is_error();
    IoResult {
        status,
        information,
        data,
        io: Some(RequestRef(rid.0)),
        fast_io: false,
        handle: None,
        iosb: written.then_some(IoStatusBlock { status, information }),
        reparsed: None,
    }
}

/// The result of a request fast I/O served: the I/O manager copies the routine's status block
/// to the caller's whatever its status (WRK `NtReadFile`, `NtLockFile`, `NtQueryInformationFile`
/// and the others' fast paths).
fn fast_result(status: Status, information: usize, rid: RequestId, data: Vec<u8>) -> IoResult {
    IoResult {
        fast_io: true,
        iosb: Some(IoStatusBlock { status, information }),
        ..result(status, information, rid, data)
    }
}

/// The `IO_SECURITY_CONTEXT` of a create (with its `ACCESS_STATE`) for `desired` access, generic
/// rights mapped and `SYNCHRONIZE` added as the I/O manager grants them, and the blocks holding
/// both, which must outlive the request. The caller is an administrator (the default caller).
pub(crate) fn security_context(
    desired: u32,
    full_create_options: u32,
) -> (*mut IO_SECURITY_CONTEXT, [Block; 2]) {
    security_context_as(desired, full_create_options, Caller::Administrator)
}

/// [`security_context`] for a user-mode `caller`.
fn security_context_as(
    desired: u32,
    full_create_options: u32,
    caller: Caller,
) -> (*mut IO_SECURITY_CONTEXT, [Block; 2]) {
    let granted = access::map_generic(desired) | access::SYNCHRONIZE;
    security_context_for(granted, full_create_options, caller.token())
}

/// The `IO_SECURITY_CONTEXT` of a create, with its `ACCESS_STATE`, for exactly `granted` (generic
/// rights already mapped), and the blocks holding both. The subject context is the one
/// `SeCaptureSubjectContext` takes in a thread that does not impersonate: no `ClientToken`,
/// `PrimaryToken` the process's `token` (docs/simulator.md, "Callers' tokens").
fn security_context_for(
    granted: u32,
    full_create_options: u32,
    token: *mut c_void,
) -> (*mut IO_SECURITY_CONTEXT, [Block; 2]) {
    let state_block = Block::zeroed(size_of::<ACCESS_STATE>());
    // SAFETY: a zeroed block sized for an ACCESS_STATE.
    let state = unsafe { crate::mem::obj(state_block.ptr().cast::<ACCESS_STATE>()) };
    state.OriginalDesiredAccess = granted;
    state.RemainingDesiredAccess = granted;
    state.SubjectSecurityContext.PrimaryToken = token;
    let sc_block = Block::zeroed(size_of::<IO_SECURITY_CONTEXT>());
    let sc_ptr = sc_block.ptr().cast::<IO_SECURITY_CONTEXT>();
    // SAFETY: a zeroed block sized for an IO_SECURITY_CONTEXT.
    let sc = unsafe { crate::mem::obj(sc_ptr) };
    sc.AccessState = state;
    sc.DesiredAccess = granted;
    sc.FullCreateOptions = full_create_options;
    (sc_ptr, [state_block, sc_block])
}

/// A zeroed buffer of `len` bytes (at least one, so the address is real).
fn buffer(len: usize) -> Block {
    Block::zeroed(len.max(1))
}

/// Reads `n` bytes of a block.
fn read_block(b: &Block, n: usize) -> Vec<u8> {
    let n = n.min(b.size());
    // SAFETY: the block holds `size()` >= n bytes.
    unsafe { std::slice::from_raw_parts(b.ptr(), n) }.to_vec()
}

/// The name an open gives the file object: `\dir\file` for a path on the volume, `\` for the
/// root directory (a path of separators only), empty for the volume itself (an empty path), as
/// `\??\C:\` opens the root directory and `\??\C:` the volume.
fn normalize(path: &str) -> String {
    let p: String = path.replace('/', "\\");
    let trimmed = p.trim_matches('\\');
    if !trimmed.is_empty() {
        format!("\\{trimmed}")
    } else if p.is_empty() {
        String::new()
    } else {
        "\\".to_owned()
    }
}

/// What an open names: the volume's media kind and whether it opens the volume itself. A disk
/// or CD volume the open finds unmounted is mounted first (facts.md §1.4).
fn open_target(volume: VolumeId, rel: &str) -> Result<(MediaKind, bool), Status> {
    let (kind, mounted) = kernel::with(|k| {
        let kind = k.volume(volume).fs.media();
        (kind, crate::mount::is_mounted(k, volume))
    });
    let volume_open = rel.is_empty() && matches!(kind, MediaKind::Disk | MediaKind::CdRom);
    if matches!(kind, MediaKind::Disk | MediaKind::CdRom) && !mounted {
        let s = crate::mount::mount_volume(volume, volume_open);
        if !s.is_success() {
            return Err(s);
        }
    }
    // A locked volume is refused in the parse, before any request (ReactOS
    // `IopCheckVpbMounted`).
    if kernel::with(|k| crate::mount::is_locked(k, volume)) {
        return Err(Status::ACCESS_DENIED);
    }
    Ok((kind, volume_open))
}

/// The I/O manager's own checks of a create's parameters (`IoCreateFile`, as ReactOS and the
/// Windows Research Kernel make them before any IRP): share bits past `FILE_SHARE_VALID_FLAGS`,
/// option bits past `FILE_VALID_OPTION_FLAGS`, a disposition past `FILE_OVERWRITE_IF`,
/// `FILE_DELETE_ON_CLOSE` without `DELETE` desired, `FILE_DIRECTORY_FILE` (without
/// `FILE_NON_DIRECTORY_FILE`) with a disposition other than `FILE_CREATE`, `FILE_OPEN` or
/// `FILE_OPEN_IF` or with an option a directory open does not take, `FILE_COMPLETE_IF_OPLOCKED`
/// with `FILE_RESERVE_OPFILTER`, both synchronous flags, and `FILE_NO_INTERMEDIATE_BUFFERING`
/// with `FILE_APPEND_DATA` desired, are `STATUS_INVALID_PARAMETER`. The access bits are the
/// caller's, before generic rights are mapped, as `IoCreateFile` tests them.
fn create_parameters_valid(options: &CreateOptions) -> bool {
    // FILE_DIRECTORY_FILE, FILE_WRITE_THROUGH, the two synchronous flags,
    // FILE_COMPLETE_IF_OPLOCKED, FILE_DELETE_ON_CLOSE, FILE_OPEN_BY_FILE_ID,
    // FILE_OPEN_FOR_BACKUP_INTENT, FILE_OPEN_REPARSE_POINT, FILE_OPEN_FOR_FREE_SPACE_QUERY.
    const DIRECTORY_OPTIONS: u32 = 0x0080_0000 | 0x0020_0000 | 0x7000 | 0x0100 | 0x33;
    const COMPLETE_IF_OPLOCKED: u32 = 0x100;
    const RESERVE_OPFILTER: u32 = 0x0010_0000;
    let (o, d, a) = (options.options, options.disposition, options.access);
    let directory =
        o & create_options::DIRECTORY_FILE != 0 && o & create_options::NON_DIRECTORY_FILE == 0;
    let openable = matches!(d, disposition::CREATE | disposition::OPEN | disposition::OPEN_IF);
    let has = |bits: u32| o & bits == bits;
    options.share & !(share::READ | share::WRITE | share::DELETE) == 0
        && o & !0x00FF_FFFF == 0
        && d <= disposition::OVERWRITE_IF
        && !(has(create_options::DELETE_ON_CLOSE) && a & access::DELETE == 0)
        && (!directory || (openable && o & !DIRECTORY_OPTIONS == 0))
        && !has(COMPLETE_IF_OPLOCKED | RESERVE_OPFILTER)
        && !has(create_options::SYNCHRONOUS_IO_ALERT | create_options::SYNCHRONOUS_IO_NONALERT)
        && !(has(create_options::NO_INTERMEDIATE_BUFFERING) && a & access::FILE_APPEND_DATA != 0)
}

/// An open's parse (`ObOpenObjectByName` with `IopParseDevice` as the devices' parse routine):
/// where the next create goes, and what the reparses so far used (docs/simulator.md,
/// "Reparse").
struct Parse {
    /// The volume and the name on it of the next create.
    at: crate::reparse::Target,
    /// `ObpLookupObjectName`'s reparse attempts.
    attempts: crate::reparse::Attempts,
    /// The last create request sent, and its volume.
    last: Option<(RequestId, VolumeId)>,
}

impl Parse {
    /// The parse of a caller's open of `rel` on `volume`, relative to the file object `related`
    /// (0: from the volume's root).
    fn new(volume: VolumeId, rel: String, related: usize) -> Parse {
        let at = crate::reparse::Target { volume, rel, related };
        Parse { at, attempts: crate::reparse::Attempts::default(), last: None }
    }

    /// Where the next create goes: the volume's media kind and whether it opens the volume
    /// itself. An open from the root mounts the volume first ([`open_target`]); a relative one
    /// goes where its related file object is (WRK `IopParseDevice`: the related file object's
    /// device and VPB) and opens the volume itself when it names nothing relative to a volume
    /// open.
    fn target(&self) -> Result<(MediaKind, bool), Status> {
        let at = &self.at;
        if at.related == 0 {
            return open_target(at.volume, &at.rel);
        }
        let kind = kernel::with(|k| k.volume(at.volume).fs.media());
        // SAFETY: the related handle's file object, alive while the caller's call runs.
        let flags = unsafe { (*(at.related as *const FILE_OBJECT)).Flags };
        Ok((kind, at.rel.is_empty() && flags & fo::VOLUME_OPEN != 0))
    }

    /// The file object of the next create ([`open_file_object`]).
    fn file_object(
        &self,
        k: &mut Kernel,
        kind: MediaKind,
        volume_open: bool,
        options: CreateOptions,
    ) -> Result<*mut FILE_OBJECT, Status> {
        let at = &self.at;
        let related = at.related as *mut FILE_OBJECT;
        open_file_object(k, at.volume, kind, &at.rel, volume_open, options, related)
    }

    /// What the caller learns of the reparses followed.
    fn trail(&self) -> Option<Reparsed> {
        let count = self.attempts.followed;
        let volume = self.last.map_or(self.at.volume, |(_, v)| v);
        (count > 0).then_some(Reparsed { count, volume })
    }

    /// The open ends with `status` before a request or after a reparse: no handle, no status
    /// block; the last create request, if there was one.
    fn ended(&self, status: Status) -> IoResult {
        IoResult {
            io: self.last.map(|(r, _)| RequestRef(r.0)),
            reparsed: self.trail(),
            ..IoResult::failed(status)
        }
    }

    /// Create request `rid` of `file` ended `STATUS_REPARSE` with `information`: the file object
    /// is freed and the name parsed ([`crate::reparse::after_reparse`]). None: the next create
    /// goes where [`Parse::at`] says; otherwise the open's end.
    fn reparsed(
        &mut self,
        file: *mut FILE_OBJECT,
        rid: RequestId,
        information: usize,
        kind: MediaKind,
    ) -> Option<IoResult> {
        // A file object without a name: the parse opened the device itself (`Override`), or
        // named nothing relative to a volume open.
        let related = self.at.related as *const FILE_OBJECT;
        // SAFETY: the related handle's file object when set, alive while the caller's call runs.
        let related_flags = unsafe { related.as_ref() }.map(|r| r.Flags);
        let device_open = self.at.rel.is_empty()
            && related_flags.map_or(kind != MediaKind::Network, |f| f & fo::VOLUME_OPEN != 0);
        let next = kernel::with(|k| {
            crate::reparse::after_reparse(
                k,
                file,
                &self.at,
                rid,
                information,
                device_open,
                &mut self.attempts,
            )
        });
        match next {
            crate::reparse::Next::Open(t) => {
                self.at = t;
                None
            }
            crate::reparse::Next::Ended(s) => Some(self.ended(s)),
        }
    }
}

/// `NtCreateFile`. A create that ends `STATUS_REPARSE` is parsed again and sent again, as a new
/// request with a new file object, where its new name leads ([`Parse`]).
fn create(volume: VolumeId, path: &str, options: CreateOptions) -> IoResult {
    if !create_parameters_valid(&options) {
        // Refused by the I/O manager: no file object, no IRP, no filter sees it.
        return IoResult::failed(Status::INVALID_PARAMETER);
    }
    create_parsed(Parse::new(volume, normalize(path), 0), options)
}

/// `NtCreateFile` of `path` relative to the file object of the open handle `related`
/// (`ObjectAttributes.RootDirectory`, WRK `IopParseFile`): the create's file object names it as
/// its `RelatedFileObject` and `path` as given (with `/` as `\`), and goes to the stack the
/// related file object's requests go to. What the file systems make of the name: "What the file
/// systems do" (MUP takes absolute names only). A reparse: docs/simulator.md, "Reparse".
pub fn create_relative(related: Handle, path: &str, options: CreateOptions) -> IoResult {
    as_user(|| {
        if !create_parameters_valid(&options) {
            return IoResult::failed(Status::INVALID_PARAMETER);
        }
        let (file, volume, _) = match handle_of(related) {
            Ok(h) => h,
            Err(s) => return IoResult::failed(s),
        };
        let rel = path.replace('/', "\\");
        create_parsed(Parse::new(volume, rel, file as usize), options)
    })
}

/// The creates of an open, from the first to the one that does not end `STATUS_REPARSE`.
fn create_parsed(mut parse: Parse, options: CreateOptions) -> IoResult {
    loop {
        let volume = parse.at.volume;
        let (kind, volume_open) = match parse.target() {
            Ok(t) => t,
            Err(s) => return parse.ended(s),
        };
        let prepared = kernel::with(|k| {
            let file = parse.file_object(k, kind, volume_open, options)?;
            Ok::<_, Status>((build_create_irp(k, volume, file, options, None), file))
        });
        let (b, file) = match prepared {
            Ok(p) => p,
            Err(s) => return parse.ended(s),
        };
        let Sent { status, information, rid, keep: _keep, .. } = send(b);
        parse.last = Some((rid, volume));
        if status == Status::REPARSE {
            match parse.reparsed(file, rid, information, kind) {
                Some(end) => return end,
                None => continue,
            }
        }
        let handle = kernel::with(|k| opened(k, file, volume, options, status));
        let reparsed = parse.trail();
        return IoResult { handle, reparsed, ..result(status, information, rid, Vec::new()) };
    }
}

/// After an open's create IRP: a handle to the file object when it succeeded; the file object
/// freed (without a close) when it failed.
fn opened(
    k: &mut Kernel,
    file: *mut FILE_OBJECT,
    volume: VolumeId,
    options: CreateOptions,
    status: Status,
) -> Option<Handle> {
    if status.is_success() {
        k.file_opened(file, 1);
        // SAFETY: the live file object.
        unsafe { (*file).Flags |= fo::HANDLE_CREATED };
        let granted = access::map_generic(options.access) | access::SYNCHRONIZE;
        Some(k.add_handle(file as usize, volume, granted))
    } else {
        if status != Status::PENDING {
            k.free_file_object(file as usize);
        }
        None
    }
}

/// A driver's `FastIoQueryOpen`.
type QueryOpenRoutine = unsafe extern "system" fn(
    *mut IRP,
    *mut windows_sys::Wdk::Storage::FileSystem::FILE_NETWORK_OPEN_INFORMATION,
    *const DEVICE_OBJECT,
) -> bool;

/// `NtQueryFullAttributesFile` (`IopParseDevice` with a query-only open packet, the Windows
/// Research Kernel): the create IRP is built as for an open, for `FILE_READ_ATTRIBUTES` with
/// every share mode. If the top device's driver has a `FastIoQueryOpen` (its table large enough
/// to hold it), the I/O manager sets the IRP at that device's location, naming the device, and
/// calls it: TRUE answers with the status the routine left in the IRP's status block (and the
/// information it wrote), and the IRP is freed without being completed. FALSE (or no routine)
/// takes the long way: the same IRP goes down as the open (the same request), then
/// `FileNetworkOpenInformation` is queried (the top driver's `FastIoQueryNetworkOpenInfo` first,
/// then the IRP) and the file closed (cleanup and close). The simulator's file object is a real
/// one (Windows uses a stack-based object), and the long way gives it a handle, which the query
/// and the close, requests of their own, then use. A create that ends `STATUS_REPARSE` is parsed
/// again as `NtCreateFile`'s ([`Parse`]), and each pass tries `FastIoQueryOpen` again; a
/// `FastIoQueryOpen` answering `STATUS_REPARSE` is not followed ([`fast_reparse`]).
fn query_attributes(volume: VolumeId, path: &str) -> IoResult {
    use crate::nt::file_info as fi;
    // The open packet's options are FILE_OPEN_REPARSE_POINT (WRK `NtQueryFullAttributesFile`):
    // a link that is the name's last component answers with its own attributes
    // (`FILE_ATTRIBUTE_REPARSE_POINT`), as GetFileAttributesW's reference page says of a symbolic
    // link; one that is an intermediate component is followed.
    let options = CreateOptions {
        access: access::FILE_READ_ATTRIBUTES,
        share: share::READ | share::WRITE | share::DELETE,
        disposition: disposition::OPEN,
        options: crate::fs::reparse::FILE_OPEN_REPARSE_POINT,
        attributes: 0,
        overlapped: false,
    };
    // Each pass of the parse (a reparse parses again, with the same open packet) offers the
    // query to the top device's FastIoQueryOpen first (WRK `IopParseDevice`).
    let mut parse = Parse::new(volume, normalize(path), 0);
    loop {
        let volume = parse.at.volume;
        let (kind, volume_open) = match parse.target() {
            Ok(t) => t,
            Err(s) => return parse.ended(s),
        };
        let field = std::mem::offset_of!(FAST_IO_DISPATCH, FastIoQueryOpen);
        let prepared = kernel::with(|k| {
            let file = parse.file_object(k, kind, volume_open, options)?;
            let target = k.related_device(file);
            let routine = top_table(k, target, field)
                .and_then(|(t, image)| t.FastIoQueryOpen.map(|f| (f as QueryOpenRoutine, image)));
            let Some((routine, image)) = routine else {
                // No FastIoQueryOpen: the open goes down at once.
                return Ok((build_create_irp(k, volume, file, options, None), file, None));
            };
            let rid = k.start_request(volume, MajorFunction::NetworkQueryOpen, true);
            let b = build_create_irp(k, volume, file, options, Some(rid));
            // IoSetNextIrpStackLocation: the first location becomes the top device's, naming it.
            // SAFETY: the fresh IRP the I/O manager owns, with its first location below.
            unsafe { fsfilter_kernel::irp::IoSetNextIrpStackLocation(b.irp) };
            // SAFETY: now its current location.
            unsafe { crate::irpx::current(b.irp) }.DeviceObject = target;
            k.current_request = Some(rid);
            // The routine sees a stack-based file object on Windows: no driver may reference it.
            k.set_stack_based(file as usize, true);
            Ok((b, file, Some((routine, rid, k.enter(Some(image))))))
        });
        let (b, file, attempt) = match prepared {
            Ok(p) => p,
            Err(s) => return parse.ended(s),
        };
        if let Some((routine, rid, entered)) = attempt {
            let info = buffer(56);
            let (irp, target) = (b.irp, b.target);
            // SAFETY: the driver's routine with the create IRP at its device's location, the
            // caller's 56-byte buffer and the device, as the I/O manager calls it.
            let done =
                kernel::run_entered(entered, || unsafe { routine(irp, info.ptr().cast(), target) });
            let answered = kernel::with(|k| {
                k.leave();
                k.current_request = None;
                k.set_stack_based(file as usize, false);
                if !done {
                    // The longer route, with the same IRP, back at the location the I/O manager
                    // set up for IoCallDriver, and the same request.
                    // SAFETY: the I/O manager's IRP, not yet sent.
                    unsafe { fsfilter_kernel::irp::IoSkipCurrentIrpStackLocation(irp) };
                    fast_io_declined(k, volume, rid);
                    return None;
                }
                // SAFETY: the IRP, still the I/O manager's (the routine does not complete it).
                let io = unsafe { crate::irpx::header(irp) }.IoStatus;
                // SAFETY: the status member.
                let status = Status(unsafe { io.Anonymous.Status });
                if status == Status::REPARSE {
                    fast_reparse(k, irp, target, rid);
                }
                k.free_irp(irp);
                k.free_file_object(file as usize);
                k.request_completed(rid, status, io.Information);
                Some(status)
            });
            if let Some(status) = answered {
                // This pass's volume answered: the last create went there.
                parse.last = Some((rid, volume));
                // A reparse is not followed: the caller gets STATUS_REPARSE, and no attributes.
                let read = status.is_success() && status != Status::REPARSE;
                let data = if read { read_block(&info, 56) } else { Vec::new() };
                // NtQueryFullAttributesFile has no I/O status block.
                let reparsed = parse.trail();
                return IoResult { iosb: None, reparsed, ..fast_result(status, 56, rid, data) };
            }
        }
        // The long way: the open (the attempt's request, when there was one), the query
        // (FastIoQueryNetworkOpenInfo first, then the IRP), then cleanup and close.
        let Sent { status, information, rid, keep: _keep, .. } = send(b);
        parse.last = Some((rid, volume));
        if status == Status::REPARSE {
            match parse.reparsed(file, rid, information, kind) {
                Some(end) => return end,
                None => continue,
            }
        }
        let reparsed = parse.trail();
        let Some(handle) = kernel::with(|k| opened(k, file, volume, options, status)) else {
            return IoResult {
                iosb: None,
                reparsed,
                ..result(status, information, rid, Vec::new())
            };
        };
        let network_open = [fi::NETWORK_OPEN];
        let queried =
            buffered_info(handle, mj::QUERY_INFORMATION, fi::NETWORK_OPEN, &[], 56, &network_open);
        let _ = cleanup(handle);
        let _ = close(handle);
        // Not served by fast I/O as a whole: the open was an IRP.
        return IoResult { fast_io: false, iosb: None, reparsed, ..queried };
    }
}

/// A `FastIoQueryOpen` answered TRUE with `STATUS_REPARSE` for query open `rid`: WRK's
/// `IopParseDevice` frees the reparse buffer and returns the status to the caller without
/// following it (reparse works on IRP-based creates only): `REPARSE_ON_FAST_IO` against the top
/// device's driver, unless the Filter Manager reported its minifilter already.
fn fast_reparse(k: &mut Kernel, irp: *mut IRP, target: *mut DEVICE_OBJECT, rid: RequestId) {
    // SAFETY: the I/O manager's IRP, not completed.
    let i = unsafe { crate::irpx::header(irp) };
    // SAFETY: the I/O manager's member of the tail: a reparse buffer, if a driver left one.
    let aux = unsafe { i.Tail.Overlay }.AuxiliaryBuffer;
    crate::reparse::free_buffer(k, aux.cast());
    if k.reparse.fast_reported_take(rid) {
        return;
    }
    let driver = k.objects.image_of(target).map(|i| k.image_name(i));
    k.report(
        Rule::ReparseOnFastIo,
        driver,
        "FastIoQueryOpen answered TRUE with STATUS_REPARSE: reparse works on IRP-based creates \
         only, so the I/O manager does not follow it and NtQueryFullAttributesFile returns \
         STATUS_REPARSE (answer FALSE, or FLT_PREOP_DISALLOW_FSFILTER_IO, for a name the filter \
         redirects)",
    );
}

/// The file object of an open of `rel` on `volume` (`IopParseDevice`): it names the device the
/// open goes to (the volume's storage device, or a namespace device) and the name relative to it;
/// for an open relative to the file object `related` (not null), that file object's device and
/// VPB, `rel` as given and `related` as its `RelatedFileObject`.
fn open_file_object(
    k: &mut Kernel,
    volume: VolumeId,
    kind: MediaKind,
    rel: &str,
    volume_open: bool,
    options: CreateOptions,
    related: *mut FILE_OBJECT,
) -> Result<*mut FILE_OBJECT, Status> {
    let vol = k.volume(volume);
    // SAFETY: the related handle's file object when set, alive while the caller's call runs.
    let (device, vpb, name) = match unsafe { related.as_ref() } {
        Some(r) => (r.DeviceObject, r.Vpb, rel.to_string()),
        None => match kind {
            MediaKind::Disk | MediaKind::CdRom => {
                let storage = vol.storage.ok_or(Status::NO_SUCH_DEVICE)?;
                (k.objects.device(storage).ptr, k.objects.dobj(storage).Vpb, rel.to_string())
            }
            MediaKind::Network => {
                let d = k.namespace_device(crate::fs::FsType::Mup).ok_or(Status::NO_SUCH_DEVICE)?;
                let share = vol.share.clone().unwrap_or_default();
                (k.objects.device(d).ptr, std::ptr::null_mut(), format!("\\{share}{rel}"))
            }
            MediaKind::None => {
                let d = k
                    .namespace_device(crate::fs::FsType::of(vol.fs))
                    .ok_or(Status::NO_SUCH_DEVICE)?;
                (k.objects.device(d).ptr, std::ptr::null_mut(), rel.to_string())
            }
        },
    };
    let mut flags = synchronous_flags(options.full_options());
    if volume_open {
        flags |= fo::VOLUME_OPEN;
    }
    // The create options the I/O manager records in the file object for the file system
    // (IopParseDevice, ReactOS's as the Windows Research Kernel's).
    for (option, flag) in [
        (create_options::NO_INTERMEDIATE_BUFFERING, fo::NO_INTERMEDIATE_BUFFERING),
        (create_options::WRITE_THROUGH, fo::WRITE_THROUGH),
        (create_options::SEQUENTIAL_ONLY, fo::SEQUENTIAL_ONLY),
        (create_options::RANDOM_ACCESS, fo::RANDOM_ACCESS),
    ] {
        if options.options & option != 0 {
            flags |= flag;
        }
    }
    let file = k.new_file_object(device, vpb, &name, flags, Some(volume));
    // SAFETY: the new file object.
    unsafe { (*file).RelatedFileObject = related };
    Ok(file)
}

/// The file-object flags a create's options ask for, as `IopParseDevice` sets them:
/// `FO_SYNCHRONOUS_IO` for `FILE_SYNCHRONOUS_IO_ALERT` or `_NONALERT`, and `FO_ALERTABLE_IO` too
/// for `FILE_SYNCHRONOUS_IO_ALERT` alone; none for an asynchronous open.
pub(crate) fn synchronous_flags(create_options: u32) -> u32 {
    use create_options::{SYNCHRONOUS_IO_ALERT as ALERT, SYNCHRONOUS_IO_NONALERT as NONALERT};
    match create_options & (ALERT | NONALERT) {
        0 => 0,
        ALERT => fo::SYNCHRONOUS_IO | fo::ALERTABLE_IO,
        _ => fo::SYNCHRONOUS_IO,
    }
}

/// The create IRP of an open for `file` (from [`open_file_object`]), for the top of the stack of
/// the device the file object names, with the create's parameters and security context.
/// `request`: a request already started (a fast-I/O attempt's), else a new create request.
fn build_create_irp(
    k: &mut Kernel,
    volume: VolumeId,
    file: *mut FILE_OBJECT,
    options: CreateOptions,
    request: Option<RequestId>,
) -> Built {
    let target = k.related_device(file);
    let flags =
        irp_flags::CREATE_OPERATION | irp_flags::SYNCHRONOUS_API | irp_flags::DEFER_IO_COMPLETION;
    let mut b = match request {
        Some(rid) => build_for(k, rid, mj::CREATE, target, file, flags, true),
        None => build(k, volume, mj::CREATE, target, file, flags, true),
    };
    let (sc, blocks) = security_context(options.access, options.full_options());
    // SAFETY: the member of a create.
    let c = unsafe { io_mut::<params::IoCreate>(&mut first(&b).Parameters) };
    c.SecurityContext = sc;
    c.Options = (options.disposition << 24) | (options.full_options() & 0x00FF_FFFF);
    c.FileAttributes = options.attributes as u16;
    c.ShareAccess = options.share as u16;
    b.keep.extend(blocks);
    b
}

/// The file object, volume and granted access of an open handle.
fn handle_of(h: Handle) -> Result<(*mut FILE_OBJECT, VolumeId, u32), Status> {
    kernel::with(|k| match k.user_handle(h) {
        Some(u) if u.open => Ok((u.fo as *mut FILE_OBJECT, u.volume, u.access)),
        _ => {
            k.report(
                crate::events::Rule::InvalidHandle,
                None,
                format!("user handle {} is not open", h.0),
            );
            Err(Status::INVALID_HANDLE)
        }
    })
}

/// A driver's fast-I/O read or write routine.
#[derive(Clone, Copy)]
enum FastIo {
    Read(
        unsafe extern "system" fn(
            *const FILE_OBJECT,
            *const i64,
            u32,
            bool,
            u32,
            *mut c_void,
            *mut IO_STATUS_BLOCK,
            *const DEVICE_OBJECT,
        ) -> bool,
    ),
    Write(
        unsafe extern "system" fn(
            *const FILE_OBJECT,
            *const i64,
            u32,
            bool,
            u32,
            *const c_void,
            *mut IO_STATUS_BLOCK,
            *const DEVICE_OBJECT,
        ) -> bool,
    ),
}

/// The fast-I/O table of the top device's driver, if it is large enough to hold the entry at
/// `field` (facts.md §1.7), with the driver's image.
fn top_table(
    k: &Kernel,
    target: *mut DEVICE_OBJECT,
    field: usize,
) -> Option<(&FAST_IO_DISPATCH, crate::ids::ImageId)> {
    let d = k.objects.device_id(target)?;
    let driver = k.objects.driver(k.objects.device(d).driver);
    // SAFETY: a live driver object.
    let table = unsafe { (*driver.ptr).FastIoDispatch };
    // SAFETY: the driver's table, when set (its static data; read while the caller looks).
    let t = unsafe { table.as_ref() }?;
    ((t.SizeOfFastIoDispatch as usize) >= field + size_of::<usize>()).then_some((t, driver.image))
}

/// The fast-I/O routine of the top device's driver, if its table is large enough to hold the
/// field and the field is set (facts.md §1.7), with the driver's image.
fn fast_io_routine(
    k: &Kernel,
    target: *mut DEVICE_OBJECT,
    write: bool,
) -> Option<(FastIo, crate::ids::ImageId)> {
    let field = if write {
        std::mem::offset_of!(FAST_IO_DISPATCH, FastIoWrite)
    } else {
        std::mem::offset_of!(FAST_IO_DISPATCH, FastIoRead)
    };
    let (t, image) = top_table(k, target, field)?;
    let f = if write { t.FastIoWrite.map(FastIo::Write) } else { t.FastIoRead.map(FastIo::Read) };
    f.map(|f| (f, image))
}

/// A cached transfer on a cached file object whose top driver has no fast-I/O routine for it:
/// Windows' `NtReadFile`/`NtWriteFile` call through the table without a check once the file is
/// cached (facts.md §1.7: a driver attached to a volume must supply the routines, returning
/// FALSE when it does not serve them), so a missing table or routine is a bugcheck there. The
/// simulator reports it against that driver and goes on with an IRP.
fn missing_fast_io(k: &mut Kernel, target: *mut DEVICE_OBJECT, write: bool) {
    let driver = k
        .objects
        .device_id(target)
        .map(|d| k.objects.driver(k.objects.device(d).driver).service.clone());
    let routine = if write { "FastIoWrite" } else { "FastIoRead" };
    let message = format!(
        "a cached {} on a cached file: the I/O manager calls the top device's {routine}, which \
         {} does not supply (no FAST_IO_DISPATCH, a NULL {routine}, or a table too small for it)",
        if write { "write" } else { "read" },
        driver.as_deref().unwrap_or("its driver"),
    );
    k.report(crate::events::Rule::Bugcheck, driver, message);
}

/// `NtReadFile`.
fn read(h: Handle, offset: Option<u64>, length: usize, mode: IoMode) -> IoResult {
    transfer(h, offset, length, &[], mode, false)
}

/// `NtCreateSection` with a file handle ([`IoRequest::CreateSection`]), as WRK's
/// `MmCreateSection` orders it: the protection (`STATUS_INVALID_PAGE_PROTECTION` for a value
/// that is not one `PAGE_*` protection), the handle's access (WRK's `MmMakeFileAccess`:
/// `FILE_READ_DATA`, with `FILE_WRITE_DATA` for a writable protection and `FILE_EXECUTE` for an
/// executable one, `PAGE_EXECUTE` alone needing only `FILE_EXECUTE`; `STATUS_ACCESS_DENIED`), the acquire for section synchronization (a filter's failure is the
/// call's), the file (`STATUS_INVALID_FILE_FOR_SECTION` for a directory or a volume,
/// `STATUS_MAPPED_FILE_SIZE_ZERO` for an empty file), the release.
fn create_section(h: Handle, protection: u32) -> IoResult {
    use fsfilter::section_sync as page;
    let (read, write) = (access::FILE_READ_DATA, access::FILE_WRITE_DATA);
    let execute = access::FILE_EXECUTE;
    // WRK's MmMakeFileAccess: PAGE_EXECUTE alone asks for no FILE_READ_DATA.
    let needed = match protection {
        page::PAGE_READONLY | page::PAGE_WRITECOPY => read,
        page::PAGE_READWRITE => read | write,
        page::PAGE_EXECUTE => execute,
        page::PAGE_EXECUTE_READ | page::PAGE_EXECUTE_WRITECOPY => read | execute,
        page::PAGE_EXECUTE_READWRITE => read | write | execute,
        _ => return IoResult::without_request(Status::INVALID_PAGE_PROTECTION),
    };
    let (file, volume, granted) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    if granted & needed != needed {
        return IoResult::without_request(Status::ACCESS_DENIED);
    }
    // The system service is a request of its own in the log (no IRP): what the drivers do for
    // it is attributed to it.
    let rid = kernel::with(|k| {
        let rid = k.start_request(volume, MajorFunction::AcquireForSectionSynchronization, false);
        k.current_request = Some(rid);
        rid
    });
    let made = crate::fsfilters::with_section_sync(file, protection, || {
        kernel::with(|k| k.create_user_section(file))
    });
    let status = match made {
        Ok((handle, object, _)) => {
            // The caller closes its section handle; the section goes with it, and with the
            // section the file object's reference it held.
            let fo = kernel::with(|k| {
                let _ = k.take_handle(handle);
                let _ = k.section_handle_closed(object as usize);
                k.section_dereference(object as usize).flatten()
            });
            crate::sections::release_file(fo);
            Status::SUCCESS
        }
        Err(s) => s,
    };
    kernel::with(|k| {
        k.current_request = None;
        k.request_completed(rid, status, 0);
    });
    result(status, 0, rid, Vec::new())
}

/// `NtWriteFile`; a write in [`IoMode::Paging`] is the lazy writer's, made in its system thread.
fn write(h: Handle, offset: Option<u64>, data: &[u8], mode: IoMode) -> IoResult {
    if mode != IoMode::Paging {
        return transfer(h, offset, data.len(), data, mode, true);
    }
    // The lazy writer writes from the cache manager's worker (WRK lazyrite.c: CcWorkerThread,
    // queued to the CriticalWorkQueue with ExQueueWorkItem), a System process thread: its IRP's
    // thread and requestor (docs/simulator.md, "Processes").
    let thread = crate::process::LAZY_WRITER_THREAD;
    let saved = kernel::with(|k| std::mem::replace(&mut k.thread, thread));
    let r = transfer(h, offset, data.len(), data, mode, true);
    kernel::with(|k| k.thread = saved);
    r
}

/// The thread of the modified-page writer, a system thread.
const MODIFIED_PAGE_WRITER_THREAD: ThreadId = ThreadId(crate::sched::FIRST_WORKER - 1);

/// [`IoRequest::PageWrite`]: a lazy writer's write is a paging write of the user API; the
/// others are bracketed by their FsFilter operations, all one request in the log (its IRP's).
fn page_write(h: Handle, offset: u64, data: &[u8], writer: PageWriter) -> IoResult {
    use crate::fsfilters::FsFilterOp;
    let (acquire, release, flags) = match writer {
        PageWriter::LazyWriter => {
            return write(h, Some(offset), data, IoMode::Paging);
        }
        // IoAsynchronousPageWrite.
        PageWriter::ModifiedPageWriter => (
            FsFilterOp::AcquireForModWrite {
                ending_offset: offset.saturating_add(data.len() as u64) as i64,
            },
            FsFilterOp::ReleaseForModWrite,
            irp_flags::PAGING_IO | irp_flags::NOCACHE,
        ),
        // IoSynchronousPageWrite.
        PageWriter::Flush => (
            FsFilterOp::AcquireForCcFlush,
            FsFilterOp::ReleaseForCcFlush,
            irp_flags::PAGING_IO | irp_flags::NOCACHE | irp_flags::SYNCHRONOUS_PAGING_IO,
        ),
    };
    let (file, volume, _) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    // Only a file that can be mapped has pages to write: not a volume open nor a directory.
    if !kernel::with(|k| k.could_be_mapped(file)) {
        return IoResult::without_request(Status::INVALID_FILE_FOR_SECTION);
    }
    // The modified-page writer runs in its own thread; a flush in the caller's.
    let saved_thread = kernel::with(|k| {
        let saved = k.thread;
        if writer == PageWriter::ModifiedPageWriter {
            k.thread = MODIFIED_PAGE_WRITER_THREAD;
        }
        saved
    });
    // The request starts with the acquire, which is attributed to it.
    let rid = kernel::with(|k| {
        let rid = k.start_request(volume, MajorFunction::Write, false);
        k.current_request = Some(rid);
        rid
    });
    let acquired = crate::fsfilters::perform(file, acquire);
    if !acquired.is_success() {
        // A driver failed the acquire: no IRP, and the request ends with its failure.
        kernel::with(|k| {
            k.current_request = None;
            k.request_completed(rid, acquired, 0);
            k.thread = saved_thread;
        });
        return result(acquired, 0, rid, Vec::new());
    }
    let mut buf = UserBuffer::new(data.len(), data, true);
    let ptr = buf.ptr();
    let b = kernel::with(|k| {
        k.current_request = None;
        let target = k.related_device(file);
        let b = build_for(k, rid, mj::WRITE, target, file, flags, false);
        set_transfer(k, &b, ptr, data.len(), offset as i64, true);
        b
    });
    // The writer waits for its write: the modified-page writer releases the file in the write's
    // completion, the flush after its synchronous write.
    let Sent { status, information: n, keep: _keep, .. } = send(b);
    if status == Status::PENDING {
        // Not completed yet: the pages stay with the IRP. The modified-page writer releases the
        // file when the write completes, if it ever does (`release_mod_write_later`); a flush's
        // caller stopped waiting, and its file stays acquired.
        kernel::with(|k| {
            k.keep_for_request(rid, Box::new(buf));
            if writer == PageWriter::ModifiedPageWriter {
                let release = crate::irp::ReleaseOnCompletion { file: file as usize };
                k.keep_for_request(rid, Box::new(release));
            }
            k.thread = saved_thread;
        });
        return result(status, 0, rid, Vec::new());
    }
    // The modified-page writer releases the file in the write's completion, a special kernel
    // APC in its thread (WRK `IopCompletePageWrite`, `MiWriteComplete`): at APC_LEVEL.
    // The write's MDL went with its IRP at completion.
    let irql = kernel::with(|k| {
        k.current_request = Some(rid);
        let irql = k.irql();
        if writer == PageWriter::ModifiedPageWriter {
            k.set_irql(crate::kernel::APC_LEVEL);
        }
        irql
    });
    crate::fsfilters::perform(file, release);
    kernel::with(|k| {
        k.set_irql(irql);
        k.current_request = None;
        k.thread = saved_thread;
    });
    drop(buf);
    result(status, n, rid, Vec::new())
}

/// The modified-page writer's write `rid` on `file` completed after its request returned: the
/// write's completion APC releases the file in the writer's thread, at `APC_LEVEL` (WRK
/// `IopCompletePageWrite`, `MiWriteComplete`), attributed to the request.
pub(crate) fn release_mod_write_later(file: usize, rid: crate::ids::RequestId) {
    let thread = MODIFIED_PAGE_WRITER_THREAD;
    let name = "the modified-page writer's write completion";
    crate::sched::queue_kernel_apc(
        name,
        thread,
        Box::new(move || {
            let saved = kernel::with(|k| k.current_request.replace(rid));
            let release = crate::fsfilters::FsFilterOp::ReleaseForModWrite;
            crate::fsfilters::perform(file as *mut FILE_OBJECT, release);
            kernel::with(|k| k.current_request = saved);
        }),
    );
}

fn transfer(
    h: Handle,
    offset: Option<u64>,
    length: usize,
    data: &[u8],
    mode: IoMode,
    write: bool,
) -> IoResult {
    let (file, volume, granted) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    if let Some(status) = transfer_refused(file, granted, offset, length, mode, write) {
        return IoResult::failed(status);
    }
    // A file object opened without intermediate buffering gets IRP_NOCACHE on every user
    // read and write (WRK `NtReadFile` / `NtWriteFile`): never cached, never fast I/O.
    // SAFETY: a live file object of an open handle.
    let unbuffered = unsafe { (*file).Flags } & fo::NO_INTERMEDIATE_BUFFERING != 0;
    let mode = if mode == IoMode::Cached && unbuffered { IoMode::NonCached } else { mode };
    let synchronous = synchronous_file(file);
    // A file object opened for asynchronous I/O has no position the I/O manager keeps: a read
    // or write on it without an offset is refused before any IRP (WRK and ReactOS
    // `NtReadFile` / `NtWriteFile`), unless it is a pipe's or a mailslot's, whose file systems
    // keep their own. Paging I/O is the memory manager's, which names its offset.
    // SAFETY: as above.
    let stream = unsafe { (*file).Flags } & (fo::NAMED_PIPE | fo::MAILSLOT) != 0;
    if !synchronous && !stream && mode != IoMode::Paging && offset.is_none() {
        return IoResult::failed(Status::INVALID_PARAMETER);
    }
    let mut buf = UserBuffer::new(length, data, write);
    let ptr = buf.ptr();
    // The I/O manager passes the file position for synchronous file objects.
    // SAFETY: a live file object of an open handle.
    let position = unsafe { (*file).CurrentByteOffset };
    let mut byte_offset =
        offset.map_or(if mode == IoMode::Paging { 0 } else { position }, |o| o as i64);
    // On a synchronous file object FILE_USE_FILE_POINTER_POSITION is the same as no offset: the
    // I/O manager passes the position down (WRK and ReactOS `NtReadFile` / `NtWriteFile`).
    if mode != IoMode::Paging
        && synchronous
        && byte_offset == crate::nt::FILE_USE_FILE_POINTER_POSITION
    {
        byte_offset = position;
    }
    // A handle that may append but not write (FILE_APPEND_DATA without FILE_WRITE_DATA) writes
    // at the end of the file whatever the offset: the I/O manager asks for
    // FILE_WRITE_TO_END_OF_FILE.
    let writing = access::FILE_WRITE_DATA | access::FILE_APPEND_DATA;
    if write && mode != IoMode::Paging && granted & writing == access::FILE_APPEND_DATA {
        byte_offset = crate::nt::FILE_WRITE_TO_END_OF_FILE;
    }
    // A negative offset is refused before any IRP, a write's FILE_WRITE_TO_END_OF_FILE excepted
    // (WRK `NtReadFile` / `NtWriteFile`): FILE_USE_FILE_POINTER_POSITION on an asynchronous file
    // object, which has no position to replace it with, is one.
    let to_end = write && byte_offset == crate::nt::FILE_WRITE_TO_END_OF_FILE;
    if mode != IoMode::Paging && byte_offset < 0 && !to_end {
        return IoResult::failed(Status::INVALID_PARAMETER);
    }
    let major = if write { mj::WRITE } else { mj::READ };
    // The I/O manager tries fast I/O only on a synchronous file object whose caching is
    // initiated (a `PrivateCacheMap`): the first cached transfer of a file object is always an
    // IRP, which initiates caching (docs/simulator.md, "User-mode I/O"), and an asynchronous
    // file object's transfers always are (WRK and ReactOS `NtReadFile` / `NtWriteFile`).
    let cached = mode == IoMode::Cached
        && synchronous
        // SAFETY: a live file object of an open handle.
        && !unsafe { (*file).PrivateCacheMap }.is_null();
    let target = std::cell::Cell::new(std::ptr::null_mut());
    let lookup = |k: &mut Kernel| {
        target.set(k.related_device(file));
        if !cached {
            return None;
        }
        let fast = fast_io_routine(k, target.get(), write);
        if fast.is_none() {
            missing_fast_io(k, target.get(), write);
        }
        fast
    };
    let call = |routine, iosb: &mut IO_STATUS_BLOCK| {
        let (offset, length, target) = (byte_offset, length as u32, target.get());
        match routine {
            // SAFETY: the driver's fast-I/O routine with the arguments the I/O manager passes.
            FastIo::Read(r) => unsafe {
                r(file, &offset, length, true, 0, ptr.cast(), iosb, target)
            },
            // SAFETY: as above.
            FastIo::Write(w) => unsafe {
                w(file, &offset, length, true, 0, ptr.cast(), iosb, target)
            },
        }
    };
    let mut rid = None;
    match try_fast(volume, MajorFunction::from_code(major), lookup, call) {
        Some(Fast::Done(r, status, n)) => {
            let n = n.min(length);
            return fast_result(status, n, r, buf.into_data(n));
        }
        Some(Fast::Declined(r)) => rid = Some(r),
        None => {}
    }
    let target = target.get();
    let b = kernel::with(|k| {
        // WRK's `NtReadFile` / `NtWriteFile`: `IRP_READ_OPERATION` or `IRP_WRITE_OPERATION` with
        // `IRP_DEFER_IO_COMPLETION`, `IRP_NOCACHE` for a non-cached transfer, never
        // `IRP_SYNCHRONOUS_API`: a synchronous file object says so with `FO_SYNCHRONOUS_IO`
        // (until December 7 the simulator set it on a synchronous file object's transfers).
        let flags = match (mode, write) {
            (IoMode::Cached, false) => irp_flags::READ_OPERATION | irp_flags::DEFER_IO_COMPLETION,
            (IoMode::Cached, true) => irp_flags::WRITE_OPERATION | irp_flags::DEFER_IO_COMPLETION,
            (IoMode::NonCached, false) => {
                irp_flags::NOCACHE | irp_flags::READ_OPERATION | irp_flags::DEFER_IO_COMPLETION
            }
            (IoMode::NonCached, true) => {
                irp_flags::NOCACHE | irp_flags::WRITE_OPERATION | irp_flags::DEFER_IO_COMPLETION
            }
            (IoMode::Paging, false) => {
                irp_flags::PAGING_IO
                    | irp_flags::NOCACHE
                    | irp_flags::SYNCHRONOUS_PAGING_IO
                    | irp_flags::INPUT_OPERATION
            }
            (IoMode::Paging, true) => {
                irp_flags::PAGING_IO | irp_flags::NOCACHE | irp_flags::SYNCHRONOUS_PAGING_IO
            }
        };
        let b = match rid {
            // The fast-I/O attempt's request continues as an IRP.
            Some(r) => build_for(k, r, major, target, file, flags, true),
            None => build(k, volume, major, target, file, flags, mode != IoMode::Paging),
        };
        set_transfer(k, &b, ptr, length, byte_offset, mode != IoMode::Cached);
        b
    });
    let asynchronous = !synchronous && mode != IoMode::Paging;
    let sent = if asynchronous { send_no_wait(b) } else { send(b) };
    let (status, n, rid) = (sent.status, sent.information, sent.rid);
    if status == Status::PENDING {
        // The buffer outlives the request; what it holds then is the caller's to read.
        overlapped_read(rid, move |_, n| buf.into_data(n.min(length)));
        return sent_result(&sent, Vec::new());
    }
    // Completed: stage two freed the IRP's MDL with the IRP (until December 7 it was freed
    // again here, taking whatever had reused its block).
    sent_result(&sent, buf.into_data(n.min(length)))
}

/// What `NtReadFile` / `NtWriteFile` refuse before anything else, and before the file object's
/// lock (WRK): a handle without `FILE_READ_DATA` (a read) or without `FILE_WRITE_DATA` and
/// `FILE_APPEND_DATA` (a write), `STATUS_ACCESS_DENIED`; on a file object opened without
/// intermediate buffering, a length, or an offset the caller gives, that is not a multiple of
/// the sector size of the device the request goes to, `STATUS_INVALID_PARAMETER`. Paging I/O
/// (the memory manager's) is neither checked.
fn transfer_refused(
    file: *mut FILE_OBJECT,
    granted: u32,
    offset: Option<u64>,
    length: usize,
    mode: IoMode,
    write: bool,
) -> Option<Status> {
    if mode == IoMode::Paging {
        return None;
    }
    let needed = if write {
        access::FILE_WRITE_DATA | access::FILE_APPEND_DATA
    } else {
        access::FILE_READ_DATA
    };
    if granted & needed == 0 {
        return Some(Status::ACCESS_DENIED);
    }
    // SAFETY: a live file object of an open handle.
    let flags = unsafe { (*file).Flags };
    if flags & fo::NO_INTERMEDIATE_BUFFERING != 0 {
        let sector = kernel::with(|k| {
            let d = k.objects.device_id(k.related_device(file));
            d.map_or(0, |d| k.objects.dobj(d).SectorSize)
        });
        // The offset's low part against the sector mask, as WRK tests it: `NtReadFile` any
        // offset given (FILE_USE_FILE_POINTER_POSITION included), `NtWriteFile` any but
        // FILE_WRITE_TO_END_OF_FILE and, on a synchronous file object,
        // FILE_USE_FILE_POINTER_POSITION (until December 7 every negative offset passed).
        let special = |o: i64| {
            write
                && (o == crate::nt::FILE_WRITE_TO_END_OF_FILE
                    || (o == crate::nt::FILE_USE_FILE_POINTER_POSITION
                        && flags & fo::SYNCHRONOUS_IO != 0))
        };
        let offset_unaligned = offset.is_some_and(|o| {
            !special(o as i64) && (o as u32) & u32::from(sector).wrapping_sub(1) != 0
        });
        let sector = u64::from(sector);
        if sector != 0 && (length as u64 % sector != 0 || offset_unaligned) {
            return Some(Status::INVALID_PARAMETER);
        }
    }
    None
}

/// Fills a built read or write: the caller's buffer (`UserBuffer`, and a locked MDL for it
/// when `mdl`: non-cached and paging transfers), its length and its offset.
fn set_transfer(k: &mut Kernel, b: &Built, ptr: *mut u8, length: usize, offset: i64, mdl: bool) {
    // SAFETY: the request's IRP, not yet sent.
    let i = unsafe { crate::irpx::header(b.irp) };
    i.UserBuffer = ptr.cast();
    if mdl {
        i.MdlAddress = k.allocate_locked_mdl(ptr.cast(), length);
    }
    // SAFETY: the member of a read or write (they share it).
    let r = unsafe { io_mut::<params::IoReadWrite>(&mut first(b).Parameters) };
    r.Length = length as u32;
    r.ByteOffset = offset;
}

/// The caller's buffer of a read or write.
enum UserBuffer {
    /// A write's: its data, then zeros.
    Write(Block),
    /// A read's: zeroed, and handed back as the request's data once it completes (the bytes
    /// are not copied out of it).
    Read(Vec<u8>),
}

impl UserBuffer {
    /// A buffer of `length` bytes (at least one, so the address is real): `data` for a write,
    /// zeros for a read.
    fn new(length: usize, data: &[u8], write: bool) -> UserBuffer {
        if write {
            UserBuffer::Write(Block::with_contents(length.max(1), data))
        } else {
            UserBuffer::Read(vec![0; length.max(1)])
        }
    }

    /// Its address.
    fn ptr(&mut self) -> *mut u8 {
        match self {
            UserBuffer::Write(b) => b.ptr(),
            UserBuffer::Read(v) => v.as_mut_ptr(),
        }
    }

    /// What the caller gets back: the first `n` bytes of a read's buffer, nothing for a write.
    fn into_data(self, n: usize) -> Vec<u8> {
        match self {
            UserBuffer::Write(_) => Vec::new(),
            UserBuffer::Read(mut v) => {
                if n < v.len() {
                    v.truncate(n);
                    v.shrink_to_fit();
                }
                v
            }
        }
    }
}

/// How the I/O manager's fast-I/O attempt for a request ended.
enum Fast {
    /// The routine served it (TRUE): the request, its status and information.
    Done(RequestId, Status, usize),
    /// It answered FALSE: the request goes on as an IRP.
    Declined(RequestId),
}

/// The I/O manager's fast-I/O attempt for a request of `major` on `volume`. `lookup` finds the
/// top driver's routine and image (None: no attempt, no request started); the request starts
/// (`IoStart { fast_io: true }`), `call` runs the routine in the driver's image with a status
/// block, and the outcome is recorded: the request's completion, or `fast_io_declined`.
fn try_fast<R>(
    volume: VolumeId,
    major: MajorFunction,
    lookup: impl FnOnce(&mut Kernel) -> Option<(R, crate::ids::ImageId)>,
    call: impl FnOnce(R, &mut IO_STATUS_BLOCK) -> bool,
) -> Option<Fast> {
    // One borrow for the routine, the request's start and the routine's image entered.
    let (routine, r, entered) = kernel::with(|k| {
        let (routine, image) = lookup(k)?;
        let r = k.start_request(volume, major, true);
        k.current_request = Some(r);
        Some((routine, r, k.enter(Some(image))))
    })?;
    // SAFETY: all-zero is a valid IO_STATUS_BLOCK.
    let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    let done = kernel::run_entered(entered, || call(routine, &mut iosb));
    // SAFETY: the status member the routine wrote (read only when it returned TRUE).
    let status = Status(unsafe { iosb.Anonymous.Status });
    let n = iosb.Information;
    kernel::with(|k| {
        k.leave();
        k.current_request = None;
        if done {
            k.request_completed(r, status, n);
        } else {
            fast_io_declined(k, volume, r);
        }
    });
    Some(if done { Fast::Done(r, status, n) } else { Fast::Declined(r) })
}

/// The minimum buffer the I/O manager accepts for an information class (its length table).
fn min_length(major: u8, class: u32) -> usize {
    use crate::nt::{file_info as fi, fs_info};
    if major == mj::QUERY_VOLUME_INFORMATION {
        return match class {
            fs_info::VOLUME => 24,
            fs_info::SIZE => 24,
            fs_info::DEVICE => 8,
            fs_info::ATTRIBUTE => 16,
            fs_info::FULL_SIZE => 32,
            _ => 0,
        };
    }
    match class {
        fi::BASIC => 40,
        fi::STANDARD => 24,
        fi::INTERNAL
        | fi::POSITION
        | fi::NAME
        | fi::ATTRIBUTE_TAG
        | fi::END_OF_FILE
        | fi::ALLOCATION => 8,
        fi::EA | fi::ACCESS | fi::MODE | fi::ALIGNMENT => 4,
        fi::ALL => 104,
        // sizeof(FILE_STREAM_INFORMATION) on x64 (its one-WCHAR name rounded up to 8).
        fi::STREAM => 32,
        fi::NETWORK_OPEN => 56,
        fi::DISPOSITION => 1,
        fi::RENAME => 24,
        _ => 0,
    }
}

/// Whether the I/O manager lets a user-mode caller ask for `class` with `major` at all: its
/// length tables (`IopQueryOperationLength`, `IopSetOperationLength`, `IopQueryFsOperationLength`
/// in the Windows Research Kernel and ReactOS) hold no entry for a set-only class queried (rename,
/// link, disposition, allocation, end of file, the directory classes), a query-only class set
/// (standard, internal, EA, access, name, alignment, all, network-open, attribute tag, the
/// directory classes) or a volume label queried, and the service answers
/// `STATUS_INVALID_INFO_CLASS` before it looks at the handle. Classes past those tables are left
/// to the file system.
fn class_allowed(major: u8, class: u32) -> bool {
    use crate::nt::{file_info as fi, fs_info};
    if major == mj::QUERY_VOLUME_INFORMATION {
        return class != 0 && class != fs_info::LABEL;
    }
    let directory = [fi::DIRECTORY, fi::FULL_DIRECTORY, fi::BOTH_DIRECTORY, fi::NAMES];
    if class == 0 || directory.contains(&class) || [fi::ID_BOTH_DIRECTORY, 38].contains(&class) {
        return false;
    }
    match major {
        mj::QUERY_INFORMATION => !matches!(
            class,
            fi::RENAME | 11 | fi::DISPOSITION | 15 | fi::ALLOCATION | fi::END_OF_FILE
        ),
        _ => !matches!(
            class,
            fi::STANDARD
                | fi::INTERNAL
                | fi::EA
                | fi::ACCESS
                | fi::NAME
                | fi::ALIGNMENT
                | fi::ALL
                | 21
                | fi::STREAM
                | fi::NETWORK_OPEN
                | fi::ATTRIBUTE_TAG
        ),
    }
}

/// The access a handle needs for an information class (the I/O manager's
/// `IopQueryOperationAccess` and `IopSetOperationAccess` tables, for the classes the simulator
/// knows): reading attributes for the basic, all, network-open and attribute-tag queries;
/// writing attributes to set basic information, `DELETE` to rename or delete, writing data to
/// set the allocation or the end of file; nothing for the others (the extended disposition,
/// which the sources at hand do not give, is left to the file system's own check).
fn required_access(major: u8, class: u32) -> u32 {
    use crate::nt::file_info as fi;
    match (major, class) {
        (mj::QUERY_INFORMATION, fi::BASIC | fi::ALL | fi::NETWORK_OPEN | fi::ATTRIBUTE_TAG) => {
            access::FILE_READ_ATTRIBUTES
        }
        (mj::SET_INFORMATION, fi::BASIC) => access::FILE_WRITE_ATTRIBUTES,
        (mj::SET_INFORMATION, fi::RENAME | fi::DISPOSITION) => access::DELETE,
        (mj::SET_INFORMATION, fi::ALLOCATION | fi::END_OF_FILE) => access::FILE_WRITE_DATA,
        _ => 0,
    }
}

/// What `NtQueryInformationFile`, `NtSetInformationFile` and `NtQueryVolumeInformationFile`
/// refuse before they send anything, and before the file object's lock (WRK): a class their
/// tables leave out (`STATUS_INVALID_INFO_CLASS`), a buffer of `len` bytes shorter than the
/// class's (`STATUS_INFO_LENGTH_MISMATCH`), a handle without the access the class needs
/// (`STATUS_ACCESS_DENIED`), in that order.
fn info_refused(major: u8, class: u32, len: usize, granted: u32) -> Option<Status> {
    if !class_allowed(major, class) {
        return Some(Status::INVALID_INFO_CLASS);
    }
    if len < min_length(major, class) {
        return Some(Status::INFO_LENGTH_MISMATCH);
    }
    let needed = required_access(major, class);
    (granted & needed != needed).then_some(Status::ACCESS_DENIED)
}

/// Query/set information and query volume information: buffered I/O (`SystemBuffer`).
fn buffered_info(
    h: Handle,
    major: u8,
    class: u32,
    input: &[u8],
    out_len: usize,
    fast_classes: &[u32],
) -> IoResult {
    if !class_allowed(major, class) {
        // Refused before the handle is looked at: nothing is sent.
        return IoResult::failed(Status::INVALID_INFO_CLASS);
    }
    let (file, volume, granted) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    let len = if major == mj::SET_INFORMATION { input.len() } else { out_len };
    if let Some(status) = info_refused(major, class, len, granted) {
        return IoResult::failed(status);
    }
    if let Some(r) = answered_by_io_manager(file, volume, granted, major, class, input) {
        return r;
    }
    let sysbuf = buffer(len);
    if !input.is_empty() {
        // SAFETY: the block holds `len` == input.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(input.as_ptr(), sysbuf.ptr(), input.len()) };
    }
    // NtQueryInformationFile on a synchronous file object tries the top driver's
    // FastIoQueryBasicInfo / FastIoQueryStandardInfo first (the Windows Research Kernel), for
    // the classes in `fast_classes`; an attribute query's long way its FastIoQueryNetworkOpenInfo.
    let synchronous = synchronous_file(file);
    let mut rid = None;
    if major == mj::QUERY_INFORMATION && synchronous && fast_classes.contains(&class) {
        let target = std::cell::Cell::new(std::ptr::null_mut());
        let lookup = |k: &mut Kernel| {
            target.set(k.related_device(file));
            fast_query_routine(k, target.get(), class)
        };
        let call = |routine, iosb: &mut IO_STATUS_BLOCK| match routine {
            // SAFETY: the driver's routine with the caller's buffer (the class's fixed size,
            // checked above) and the arguments the I/O manager passes.
            FastQuery::Basic(f) => unsafe {
                f(file, true, sysbuf.ptr().cast(), iosb, target.get())
            },
            // SAFETY: as above.
            FastQuery::Standard(f) => unsafe {
                f(file, true, sysbuf.ptr().cast(), iosb, target.get())
            },
            // SAFETY: as above.
            FastQuery::NetworkOpen(f) => unsafe {
                f(file, true, sysbuf.ptr().cast(), iosb, target.get())
            },
        };
        match try_fast(volume, MajorFunction::QueryInformation, lookup, call) {
            Some(Fast::Done(r, status, n)) => {
                let n = n.min(len);
                let data = if status.is_error() { Vec::new() } else { read_block(&sysbuf, n) };
                return fast_result(status, n, r, data);
            }
            Some(Fast::Declined(r)) => rid = Some(r),
            None => {}
        }
    }
    let b = kernel::with(|k| {
        let target = k.related_device(file);
        let input_op = if major == mj::SET_INFORMATION { 0 } else { irp_flags::INPUT_OPERATION };
        let flags = irp_flags::BUFFERED_IO | irp_flags::DEALLOCATE_BUFFER | input_op;
        // WRK's `NtQueryInformationFile`, `NtSetInformationFile` and
        // `NtQueryVolumeInformationFile`: `IRP_DEFER_IO_COMPLETION`, and `IRP_SYNCHRONOUS_API`
        // only for a file object opened for asynchronous I/O (a synchronous API on it: the
        // service waits on an event of its own); a synchronous file object says so with
        // `FO_SYNCHRONOUS_IO` (until December 7 every one carried the flag, and none
        // `IRP_DEFER_IO_COMPLETION`).
        let flags = flags | irp_flags::DEFER_IO_COMPLETION | synchronous_api(file);
        let b = match rid {
            // The fast-I/O attempt's request continues as an IRP.
            Some(r) => build_for(k, r, major, target, file, flags, true),
            None => build(k, volume, major, target, file, flags, true),
        };
        // SAFETY: the request's IRP, not yet sent.
        unsafe { crate::irpx::header(b.irp) }.AssociatedIrp.SystemBuffer = sysbuf.ptr().cast();
        let s = first(&b);
        match major {
            mj::QUERY_INFORMATION => {
                // SAFETY: the member of an information query.
                let q = unsafe { io_mut::<params::IoFileInformation>(&mut s.Parameters) };
                q.Length = len as u32;
                q.FileInformationClass = class as _;
            }
            mj::SET_INFORMATION => {
                // SAFETY: the member of an information set.
                let q = unsafe { io_mut::<params::IoSetFile>(&mut s.Parameters) };
                q.Length = len as u32;
                q.FileInformationClass = class as _;
                if class == crate::nt::file_info::RENAME {
                    q.Anonymous.Anonymous.ReplaceIfExists = input.first().is_some_and(|b| *b != 0);
                }
            }
            _ => {
                // SAFETY: the member of a volume information query.
                let q = unsafe { io_mut::<params::IoVolumeInformation>(&mut s.Parameters) };
                q.Length = len as u32;
                q.FsInformationClass = class as _;
            }
        }
        b
    });
    let sent = send(b);
    let (status, n, rid) = (sent.status, sent.information, sent.rid);
    // Completion copies the system buffer back unless the status is an error or asks for a
    // verify (WRK `IopCompleteRequest`).
    let output = move |status, n| {
        if major == mj::SET_INFORMATION || !crate::irp::copies_system_buffer(status) {
            Vec::new()
        } else {
            read_block(&sysbuf, n)
        }
    };
    if status == Status::PENDING {
        overlapped_read(rid, output);
        return sent_result(&sent, Vec::new());
    }
    sent_result(&sent, output(status, n))
}

/// A driver's fast-I/O query routine: `FastIoQueryBasicInfo` or `FastIoQueryStandardInfo`.
#[derive(Clone, Copy)]
enum FastQuery {
    Basic(
        unsafe extern "system" fn(
            *const FILE_OBJECT,
            bool,
            *mut windows_sys::Wdk::Storage::FileSystem::FILE_BASIC_INFORMATION,
            *mut IO_STATUS_BLOCK,
            *const DEVICE_OBJECT,
        ) -> bool,
    ),
    Standard(
        unsafe extern "system" fn(
            *const FILE_OBJECT,
            bool,
            *mut windows_sys::Wdk::Storage::FileSystem::FILE_STANDARD_INFORMATION,
            *mut IO_STATUS_BLOCK,
            *const DEVICE_OBJECT,
        ) -> bool,
    ),
    NetworkOpen(
        unsafe extern "system" fn(
            *const FILE_OBJECT,
            bool,
            *mut windows_sys::Wdk::Storage::FileSystem::FILE_NETWORK_OPEN_INFORMATION,
            *mut IO_STATUS_BLOCK,
            *const DEVICE_OBJECT,
        ) -> bool,
    ),
}

/// The top device's fast-I/O query routine for `class` (basic, standard or network-open
/// information), when its driver's table holds one; a NULL entry builds the IRP (the service
/// checks it).
fn fast_query_routine(
    k: &Kernel,
    target: *mut DEVICE_OBJECT,
    class: u32,
) -> Option<(FastQuery, crate::ids::ImageId)> {
    use crate::nt::file_info as fi;
    let field = match class {
        fi::BASIC => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoQueryBasicInfo),
        fi::STANDARD => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoQueryStandardInfo),
        _ => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoQueryNetworkOpenInfo),
    };
    let (t, image) = top_table(k, target, field)?;
    let routine = match class {
        fi::BASIC => FastQuery::Basic(t.FastIoQueryBasicInfo?),
        fi::STANDARD => FastQuery::Standard(t.FastIoQueryStandardInfo?),
        _ => FastQuery::NetworkOpen(t.FastIoQueryNetworkOpenInfo?),
    };
    Some((routine, image))
}

/// `FileModeInformation` from a file object's flags, as the I/O manager computes it.
fn mode_of(flags: u32) -> u32 {
    let mut mode = 0;
    for (fo_flag, mode_bit) in [
        (fo::WRITE_THROUGH, 0x2),
        (fo::SEQUENTIAL_ONLY, 0x4),
        (fo::NO_INTERMEDIATE_BUFFERING, 0x8),
        (fo::DELETE_ON_CLOSE, 0x1000),
    ] {
        if flags & fo_flag != 0 {
            mode |= mode_bit;
        }
    }
    if flags & fo::SYNCHRONOUS_IO != 0 {
        // FILE_SYNCHRONOUS_IO_ALERT or FILE_SYNCHRONOUS_IO_NONALERT.
        mode |= if flags & fo::ALERTABLE_IO != 0 { 0x10 } else { 0x20 };
    }
    mode
}

/// The information requests the I/O manager answers itself, without a driver (the Windows
/// Research Kernel's `NtQueryInformationFile` and `NtSetInformationFile`): a query of the
/// access (the handle's granted access), the mode (from the file object's flags) and the
/// alignment (the device's requirement), and of the position on a synchronous file object; a
/// set of the mode (the file object's flags), and of the position on a synchronous file object.
/// The request starts and completes without an IRP: no driver sees it. None for everything
/// else.
fn answered_by_io_manager(
    file: *mut FILE_OBJECT,
    volume: VolumeId,
    granted: u32,
    major: u8,
    class: u32,
    input: &[u8],
) -> Option<IoResult> {
    use crate::nt::file_info as fi;
    // SAFETY: a live file object of an open handle.
    let f = unsafe { &mut *file };
    let synchronous = f.Flags & fo::SYNCHRONOUS_IO != 0;
    let device =
        |k: &Kernel| k.objects.device_id(k.related_device(file)).map(|d| k.objects.dobj(d));
    let (status, data) = match (major, class) {
        (mj::QUERY_INFORMATION, fi::POSITION) if synchronous => {
            (Status::SUCCESS, f.CurrentByteOffset.to_le_bytes().to_vec())
        }
        (mj::QUERY_INFORMATION, fi::ACCESS) => (Status::SUCCESS, granted.to_le_bytes().to_vec()),
        (mj::QUERY_INFORMATION, fi::MODE) => {
            (Status::SUCCESS, mode_of(f.Flags).to_le_bytes().to_vec())
        }
        (mj::QUERY_INFORMATION, fi::ALIGNMENT) => {
            let alignment = kernel::with(|k| device(k).map_or(0, |d| d.AlignmentRequirement));
            (Status::SUCCESS, alignment.to_le_bytes().to_vec())
        }
        (mj::SET_INFORMATION, fi::POSITION) if synchronous => {
            let position = input.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes);
            let sector = kernel::with(|k| device(k).map_or(0, |d| u64::from(d.SectorSize)));
            let unaligned = |p: i64| {
                f.Flags & fo::NO_INTERMEDIATE_BUFFERING != 0
                    && sector != 0
                    && (p as u64) % sector != 0
            };
            match position {
                Some(p) if p >= 0 && !unaligned(p) => {
                    f.CurrentByteOffset = p;
                    (Status::SUCCESS, Vec::new())
                }
                _ => (Status::INVALID_PARAMETER, Vec::new()),
            }
        }
        (mj::SET_INFORMATION, fi::MODE) => {
            // FILE_WRITE_THROUGH, FILE_SEQUENTIAL_ONLY, FILE_SYNCHRONOUS_IO_ALERT and _NONALERT
            // are all that can be set; a synchronous file object needs exactly one of the last
            // two, any other none.
            let mode = input.get(..4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
            let (alert, nonalert) = (mode & 0x10 != 0, mode & 0x20 != 0);
            if mode & !0x36 != 0 || (alert || nonalert) != synchronous || (alert && nonalert) {
                (Status::INVALID_PARAMETER, Vec::new())
            } else {
                let set = |flags: &mut u32, flag: u32, on: bool| {
                    if on { *flags |= flag } else { *flags &= !flag }
                };
                if f.Flags & fo::NO_INTERMEDIATE_BUFFERING == 0 {
                    set(&mut f.Flags, fo::WRITE_THROUGH, mode & 0x2 != 0);
                }
                set(&mut f.Flags, fo::SEQUENTIAL_ONLY, mode & 0x4 != 0);
                if synchronous {
                    set(&mut f.Flags, fo::ALERTABLE_IO, alert);
                }
                (Status::SUCCESS, Vec::new())
            }
        }
        _ => return None,
    };
    let n = data.len();
    let major = MajorFunction::from_code(major);
    let r = kernel::with(|k| {
        let r = k.start_request(volume, major, false);
        k.request_completed(r, status, n);
        r
    });
    Some(result(status, n, r, data))
}

/// `NtNotifyChangeDirectoryFile`. The buffer outlives the call: the request usually completes
/// later, from the request that makes the change.
fn notify_change_directory(h: Handle, filter: u32, watch_tree: bool, length: usize) -> IoResult {
    // A user-mode caller's completion filter is checked before the handle is looked at, and
    // nothing is sent when it selects nothing or holds unknown bits (NtNotifyChangeDirectoryFile).
    if let Some(status) = notify_filter_refused(filter) {
        return IoResult::failed(status);
    }
    directory_request(h, length, 0, |s| {
        s.MinorFunction = mn_dir::NOTIFY_CHANGE_DIRECTORY;
        s.Flags = if watch_tree { crate::fs::notify::SL_WATCH_TREE } else { 0 };
        // SAFETY: the member of a change notification.
        let d = unsafe { io_mut::<params::IoNotifyDirectory>(&mut s.Parameters) };
        d.Length = length as u32;
        d.CompletionFilter = filter;
    })
}

/// A change notification's completion filter that selects nothing or holds unknown bits:
/// `STATUS_INVALID_PARAMETER` (`NtNotifyChangeDirectoryFile`).
fn notify_filter_refused(filter: u32) -> Option<Status> {
    (!crate::fs::notify::valid_filter(filter)).then_some(Status::INVALID_PARAMETER)
}

/// A handle that may not list its directory: `STATUS_ACCESS_DENIED` for a directory query or
/// change notification (`FILE_LIST_DIRECTORY`).
fn list_refused(granted: u32) -> Option<Status> {
    (granted & access::FILE_LIST_DIRECTORY == 0).then_some(Status::ACCESS_DENIED)
}

/// An `IRP_MJ_DIRECTORY_CONTROL` request on handle `h` with an output buffer of `length` bytes,
/// its stack location filled by `fill` (minor function, flags, parameters), with IRP `flags`
/// (never `IRP_SYNCHRONOUS_API`: WRK's `NtQueryDirectoryFile` and `NtNotifyChangeDirectoryFile`
/// are asynchronous on an asynchronous file object, whose caller does not wait; until December 7
/// both carried it on any file object and were waited for). The I/O manager refuses a handle
/// that may not list the directory, and sends nothing. The buffer outlives a request that stays
/// pending. Neither I/O (`UserBuffer`,
/// as the file systems' volume devices have no buffering flag): no `IRP_INPUT_OPERATION`, which
/// Windows' `BuildQueryDirectoryIrp` and `NtNotifyChangeDirectoryFileEx` set with
/// `IRP_BUFFERED_IO` for a `DO_BUFFERED_IO` device only.
fn directory_request(
    h: Handle,
    length: usize,
    flags: u32,
    fill: impl FnOnce(&mut IO_STACK_LOCATION),
) -> IoResult {
    let (file, volume, granted) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    if let Some(status) = list_refused(granted) {
        return IoResult::failed(status);
    }
    let out = buffer(length);
    let b = kernel::with(|k| {
        let target = k.related_device(file);
        let b = build(k, volume, mj::DIRECTORY_CONTROL, target, file, flags, true);
        // SAFETY: the request's IRP, not yet sent.
        unsafe { crate::irpx::header(b.irp) }.UserBuffer = out.ptr().cast();
        fill(first(&b));
        b
    });
    let sent = send_on(file, b);
    let (status, n, rid) = (sent.status, sent.information, sent.rid);
    let output = move |status: Status, n| {
        if status.is_error() { Vec::new() } else { read_block(&out, n) }
    };
    if status == Status::PENDING {
        overlapped_read(rid, output);
        return sent_result(&sent, Vec::new());
    }
    sent_result(&sent, output(status, n))
}

/// The smallest buffer `NtQueryDirectoryFile` takes from a user-mode caller for a directory
/// class (the size of the class's entry with a one-character name, rounded up to 8), or `None`
/// for a class that is not a directory class: directory, full, both, names, object ID, quota,
/// reparse point, ID-both, ID-full, ID-global-tx, ID-extended and ID-extended-both (Windows'
/// `BuildQueryDirectoryIrp`; ReactOS checks the lengths of the first six only).
fn directory_class_min_length(class: u32) -> Option<usize> {
    Some(match class {
        1 | 2 | 29 => 72,
        3 | 50 | 60 => 96,
        12 | 33 => 16,
        32 => 56,
        37 => 112,
        38 => 88,
        63 => 120,
        _ => return None,
    })
}

/// A directory query's class that is not a directory class (`STATUS_INVALID_INFO_CLASS`), or a
/// buffer of `length` bytes smaller than its entry (`STATUS_INFO_LENGTH_MISMATCH`).
fn directory_class_refused(class: u32, length: usize) -> Option<Status> {
    match directory_class_min_length(class) {
        None => Some(Status::INVALID_INFO_CLASS),
        Some(min) if length < min => Some(Status::INFO_LENGTH_MISMATCH),
        Some(_) => None,
    }
}

/// `NtQueryDirectoryFile`: neither I/O (`UserBuffer`). For its user-mode caller the I/O manager
/// first refuses a class that is not a directory class (`STATUS_INVALID_INFO_CLASS`) and a buffer
/// smaller than the class's entry (`STATUS_INFO_LENGTH_MISMATCH`), before it looks at the handle.
fn directory(
    h: Handle,
    class: u32,
    pattern: Option<&str>,
    restart: bool,
    single: bool,
    length: usize,
) -> IoResult {
    if let Some(status) = directory_class_refused(class, length) {
        return IoResult::failed(status);
    }
    let units: Vec<u16> = pattern.unwrap_or_default().encode_utf16().collect();
    let name: Box<UNICODE_STRING> = Box::new(crate::mem::unicode(&units));
    let r = directory_request(h, length, irp_flags::DEFER_IO_COMPLETION, |s| {
        s.MinorFunction = mn_dir::QUERY_DIRECTORY;
        s.Flags = if restart { sl::RESTART_SCAN } else { 0 }
            | if single { sl::RETURN_SINGLE_ENTRY } else { 0 };
        // SAFETY: the member of a directory query.
        let d = unsafe { io_mut::<params::IoQueryDirectory>(&mut s.Parameters) };
        d.Length = length as u32;
        d.FileInformationClass = class as _;
        d.FileName = if pattern.is_some() {
            std::ptr::addr_of!(*name).cast_mut()
        } else {
            std::ptr::null_mut()
        };
    });
    if let (Status::PENDING, Some(io)) = (r.status, r.io) {
        // The pattern outlives a request that stays pending, as its buffer does.
        kernel::with(|k| {
            k.keep_for_request(RequestId(io.0), Box::new(name));
            k.keep_for_request(RequestId(io.0), Box::new(units));
        });
    }
    r
}

/// WRK's `NtFlushBuffersFile`: a handle without write or append access, or without write
/// access on a named pipe, where the append bit is `FILE_CREATE_PIPE_INSTANCE`, is refused
/// (`STATUS_ACCESS_DENIED`; until December 7 append counted on a pipe too).
fn flush_refused(file: *mut FILE_OBJECT, granted: u32) -> Option<Status> {
    // SAFETY: the handle's live file object.
    let pipe = unsafe { (*file).Flags } & fo::NAMED_PIPE != 0;
    let append = if pipe { 0 } else { access::FILE_APPEND_DATA };
    (granted & (access::FILE_WRITE_DATA | append) == 0).then_some(Status::ACCESS_DENIED)
}

/// A request with no parameters (flush).
fn simple(h: Handle, major: u8) -> IoResult {
    let (file, volume, granted) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    let refused = if major == mj::FLUSH_BUFFERS { flush_refused(file, granted) } else { None };
    if let Some(status) = refused {
        return IoResult::failed(status);
    }
    // WRK's `NtFlushBuffersFile`: a synchronous API on an asynchronous file object (until
    // December 7 it carried `IRP_SYNCHRONOUS_API` on a synchronous one too).
    let flags = synchronous_api(file);
    let b = kernel::with(|k| {
        let target = k.related_device(file);
        build(k, volume, major, target, file, flags, true)
    });
    sent_result(&send(b), Vec::new())
}

/// The access a control code asks for (bits 14 and 15: `FILE_READ_ACCESS` is `FILE_READ_DATA`,
/// `FILE_WRITE_ACCESS` is `FILE_WRITE_DATA`) must be granted to a user-mode caller's handle, or
/// nothing is sent (`STATUS_ACCESS_DENIED`; WRK `IopXxxControlFile`, ReactOS).
fn control_refused(code: u32, granted: u32) -> Option<Status> {
    let needed = (code >> 14) & 3;
    (granted & needed != needed).then_some(Status::ACCESS_DENIED)
}

/// The buffers of a control request (`IopXxxControlFile`) and what the I/O manager sets for
/// them, shared by [`control`] (a handle on a volume) and [`device_control`] (a device's).
struct ControlBuffers {
    /// `IRP_MJ_FILE_SYSTEM_CONTROL` or `IRP_MJ_DEVICE_CONTROL`.
    major: u8,
    /// The control code.
    code: u32,
    /// Its method.
    method: u32,
    /// The input's length.
    input_len: usize,
    /// The output buffer's length.
    out_len: usize,
    /// The system buffer (the input copied in).
    sysbuf: Block,
    /// The caller's output buffer.
    out: Block,
    /// A system buffer is used.
    system: bool,
}

impl ControlBuffers {
    /// The buffers for `input` and an output of `out_len` bytes.
    fn new(major: u8, code: u32, input: &[u8], out_len: usize) -> ControlBuffers {
        let m = code & 3;
        let sys_len = if m == method::BUFFERED { input.len().max(out_len) } else { input.len() };
        let sysbuf = buffer(sys_len);
        if !input.is_empty() {
            // SAFETY: the block holds at least input.len() bytes.
            unsafe { std::ptr::copy_nonoverlapping(input.as_ptr(), sysbuf.ptr(), input.len()) };
        }
        // A system buffer only when there is something to carry: for a buffered code an input
        // or an output, for a direct one an input (the WRK's `IopXxxControlFile`).
        let system = match m {
            method::BUFFERED => !input.is_empty() || out_len > 0,
            method::NEITHER => false,
            _ => !input.is_empty(),
        };
        ControlBuffers {
            major,
            code,
            method: m,
            input_len: input.len(),
            out_len,
            sysbuf,
            out: buffer(out_len),
            system,
        }
    }

    /// The IRP's flags: WRK's `IopXxxControlFile` never sets `IRP_SYNCHRONOUS_API` (a control
    /// is asynchronous on an asynchronous file object), `IRP_DEFER_IO_COMPLETION` for a
    /// file-system control only (until December 7 both carried `IRP_SYNCHRONOUS_API`, neither
    /// the deferral, and the caller waited whatever the file object).
    fn flags(&self) -> u32 {
        let mut flags =
            if self.major == mj::FILE_SYSTEM_CONTROL { irp_flags::DEFER_IO_COMPLETION } else { 0 };
        if self.system {
            flags |= irp_flags::BUFFERED_IO | irp_flags::DEALLOCATE_BUFFER;
            if self.out_len > 0 && self.method == method::BUFFERED {
                flags |= irp_flags::INPUT_OPERATION;
            }
        }
        flags
    }

    /// Fills the IRP and its first stack location (`mdl`: the output's MDL for a direct
    /// method), for a caller granted `granted` on the handle.
    fn fill(&self, i: &mut IRP, s: &mut IO_STACK_LOCATION, mdl: *mut MDL, granted: u32) {
        if self.system {
            i.AssociatedIrp.SystemBuffer = self.sysbuf.ptr().cast();
        }
        match self.method {
            // The output buffer the completion copies the system buffer back to.
            method::BUFFERED if self.system => i.UserBuffer = self.out.ptr().cast(),
            method::BUFFERED => {}
            method::NEITHER => i.UserBuffer = self.out.ptr().cast(),
            _ => {
                i.MdlAddress = mdl;
                i.UserBuffer = self.out.ptr().cast();
            }
        }
        // The handle's data access, for a driver to check a `FILE_ANY_ACCESS` code against
        // (WRK's `IopXxxControlFile`; until December 7 neither flag was set).
        s.Flags = if granted & access::FILE_READ_DATA != 0 { sl::READ_ACCESS_GRANTED } else { 0 }
            | if granted & access::FILE_WRITE_DATA != 0 { sl::WRITE_ACCESS_GRANTED } else { 0 };
        let (input_len, out_len) = (self.input_len as u32, self.out_len as u32);
        let type3 = if self.method == method::NEITHER {
            self.sysbuf.ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        if self.major == mj::FILE_SYSTEM_CONTROL {
            s.MinorFunction = mn_fsctl::USER_FS_REQUEST;
            // SAFETY: the member of a file-system control.
            let c = unsafe { io_mut::<params::IoFileSystemControl>(&mut s.Parameters) };
            c.FsControlCode = self.code;
            c.InputBufferLength = input_len;
            c.OutputBufferLength = out_len;
            if self.method == method::NEITHER {
                c.Type3InputBuffer = type3;
            }
        } else {
            // SAFETY: the member of a device control.
            let c = unsafe { io_mut::<params::IoDeviceIoControl>(&mut s.Parameters) };
            c.IoControlCode = self.code;
            c.InputBufferLength = input_len;
            c.OutputBufferLength = out_len;
            if self.method == method::NEITHER {
                c.Type3InputBuffer = type3;
            }
        }
    }

    /// The output the caller finds once the request ended with `status` and `n`: a buffered
    /// request's is what completion copied back from the system buffer, nothing when the status
    /// asks for a verify either (WRK `IopCompleteRequest`).
    fn output(&self, status: Status, n: usize) -> Vec<u8> {
        let copied = self.method != method::BUFFERED || crate::irp::copies_system_buffer(status);
        if status.is_error() || !copied {
            Vec::new()
        } else if self.method == method::BUFFERED {
            read_block(&self.sysbuf, n.min(self.out_len))
        } else {
            read_block(&self.out, n.min(self.out_len))
        }
    }
}

/// `NtFsControlFile` / `NtDeviceIoControlFile`, with the buffers of the code's method.
fn control(h: Handle, major: u8, code: u32, input: &[u8], out_len: usize) -> IoResult {
    let (file, volume, granted) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    if let Some(status) = control_refused(code, granted) {
        return IoResult::failed(status);
    }
    let c = ControlBuffers::new(major, code, input, out_len);
    let b = kernel::with(|k| {
        let target = k.related_device(file);
        let b = build(k, volume, major, target, file, c.flags(), true);
        let direct = matches!(c.method, method::IN_DIRECT | method::OUT_DIRECT);
        let mdl = if direct && out_len > 0 {
            k.allocate_mdl(c.out.ptr().cast(), out_len)
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: the request's IRP.
        c.fill(unsafe { crate::irpx::header(b.irp) }, first(&b), mdl, granted);
        b
    });
    let sent = send_on(file, b);
    let (status, n, rid) = (sent.status, sent.information, sent.rid);
    // Completed, its MDL went with the IRP (stage two), as for a transfer.
    if status == Status::PENDING {
        overlapped_read(rid, move |status, n| c.output(status, n));
        return sent_result(&sent, Vec::new());
    }
    sent_result(&sent, c.output(status, n))
}

/// A driver's fast-I/O lock routine: `FastIoLock` for `NtLockFile`, `FastIoUnlockSingle` for
/// `NtUnlockFile`.
#[derive(Clone, Copy)]
enum FastLock {
    Lock(
        unsafe extern "system" fn(
            *const FILE_OBJECT,
            *const i64,
            *const i64,
            PEPROCESS,
            u32,
            bool,
            bool,
            *mut IO_STATUS_BLOCK,
            *const DEVICE_OBJECT,
        ) -> bool,
    ),
    UnlockSingle(
        unsafe extern "system" fn(
            *const FILE_OBJECT,
            *const i64,
            *const i64,
            PEPROCESS,
            u32,
            *mut IO_STATUS_BLOCK,
            *const DEVICE_OBJECT,
        ) -> bool,
    ),
}

/// The top device's fast-I/O lock routine for `minor` (`IRP_MN_LOCK` or `IRP_MN_UNLOCK_SINGLE`),
/// when its driver's table holds one, with the driver's image. Unlike a cached transfer's, a
/// missing lock routine is no mistake: `NtLockFile` and `NtUnlockFile` check the entry and build
/// the IRP without one.
fn fast_lock_routine(
    k: &Kernel,
    target: *mut DEVICE_OBJECT,
    minor: u8,
) -> Option<(FastLock, crate::ids::ImageId)> {
    if minor == mn_lock::LOCK {
        let (t, image) = top_table(k, target, std::mem::offset_of!(FAST_IO_DISPATCH, FastIoLock))?;
        Some((FastLock::Lock(t.FastIoLock?), image))
    } else {
        let field = std::mem::offset_of!(FAST_IO_DISPATCH, FastIoUnlockSingle);
        let (t, image) = top_table(k, target, field)?;
        Some((FastLock::UnlockSingle(t.FastIoUnlockSingle?), image))
    }
}

/// A user-mode caller's handle must have read or write data access to lock or unlock (WRK and
/// ReactOS `NtLockFile` / `NtUnlockFile`), or nothing is sent (`STATUS_ACCESS_DENIED`).
fn lock_refused(granted: u32) -> Option<Status> {
    let data = access::FILE_READ_DATA | access::FILE_WRITE_DATA;
    (granted & data == 0).then_some(Status::ACCESS_DENIED)
}

/// `NtLockFile` / `NtUnlockFile`: the top device's fast-I/O lock routine first (`FastIoLock`,
/// `FastIoUnlockSingle`; WRK and ReactOS), then, when there is none or it answers FALSE,
/// `IRP_MJ_LOCK_CONTROL` for the same request.
fn lock(h: Handle, args: LockArgs) -> IoResult {
    let (file, volume, granted) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    if let Some(status) = lock_refused(granted) {
        return IoResult::failed(status);
    }
    match lock_fast(file, volume, args) {
        Ok(served) => served,
        Err(declined) => lock_irp(file, volume, args, declined),
    }
}

/// The arguments of `NtLockFile` (`IRP_MN_LOCK`) or `NtUnlockFile` (`IRP_MN_UNLOCK_SINGLE`).
#[derive(Clone, Copy, Debug)]
struct LockArgs {
    minor: u8,
    offset: u64,
    length: u64,
    exclusive: bool,
    fail_immediately: bool,
}

/// The arguments of a lock or unlock request.
fn lock_args(req: &IoRequest<'_>) -> Option<LockArgs> {
    match *req {
        IoRequest::Lock { offset, length, exclusive, fail_immediately, .. } => {
            Some(LockArgs { minor: mn_lock::LOCK, offset, length, exclusive, fail_immediately })
        }
        IoRequest::Unlock { offset, length, .. } => Some(LockArgs {
            minor: mn_lock::UNLOCK_SINGLE,
            offset,
            length,
            exclusive: false,
            fail_immediately: false,
        }),
        _ => None,
    }
}

/// The fast-I/O part of `NtLockFile` / `NtUnlockFile`, which WRK's services make before they
/// take the lock of a synchronous file object (lock.c): the result when the routine served the
/// request, else the request it started when it answered FALSE (None: no routine).
fn lock_fast(
    file: *mut FILE_OBJECT,
    volume: VolumeId,
    a: LockArgs,
) -> Result<IoResult, Option<RequestId>> {
    if a.minor == mn_lock::LOCK {
        // NtLockFile marks the file object (`LockOperation`): the close of one of several
        // handles then unlocks the caller's ranges (WRK `IopCloseFile`; here each file object
        // has one handle, whose cleanup releases them).
        // SAFETY: a live file object of an open handle.
        unsafe { (*file).LockOperation = true };
    }
    let target = std::cell::Cell::new(std::ptr::null_mut());
    let lookup = |k: &mut Kernel| {
        target.set(k.related_device(file));
        fast_lock_routine(k, target.get(), a.minor)
    };
    // The caller's process (WRK lock.c: `PsGetCurrentProcess()`; docs/simulator.md,
    // "Processes").
    let process: PEPROCESS = kernel::with(|k| crate::process::eprocess(k.current_process())) as _;
    let call = |routine, iosb: &mut IO_STATUS_BLOCK| {
        let (off, len, target) = (a.offset as i64, a.length as i64, target.get());
        let (fail, exclusive) = (a.fail_immediately, a.exclusive);
        match routine {
            // SAFETY: the driver's fast-I/O routine with the arguments the I/O manager passes.
            FastLock::Lock(f) => unsafe {
                f(file, &off, &len, process, 0, fail, exclusive, iosb, target)
            },
            // SAFETY: as above.
            FastLock::UnlockSingle(f) => unsafe { f(file, &off, &len, process, 0, iosb, target) },
        }
    };
    match try_fast(volume, MajorFunction::LockControl, lookup, call) {
        Some(Fast::Done(r, status, _)) => Ok(fast_result(status, 0, r, Vec::new())),
        Some(Fast::Declined(r)) => Err(Some(r)),
        None => Err(None),
    }
}

/// The IRP part of `NtLockFile` / `NtUnlockFile`: `IRP_MJ_LOCK_CONTROL`, as the request
/// `declined` a fast-I/O attempt started, or a request of its own.
fn lock_irp(
    file: *mut FILE_OBJECT,
    volume: VolumeId,
    a: LockArgs,
    declined: Option<RequestId>,
) -> IoResult {
    let len_block = buffer(8);
    // SAFETY: the block holds 8 bytes.
    unsafe { len_block.ptr().cast::<i64>().write_unaligned(a.length as i64) };
    // WRK's `NtLockFile` sets no IRP flag and is asynchronous on an asynchronous file object;
    // `NtUnlockFile` is a synchronous API there (`IRP_SYNCHRONOUS_API`, and it waits). Until
    // December 7 both carried `IRP_SYNCHRONOUS_API` on any file object and were waited for.
    let flags = if a.minor == mn_lock::LOCK { 0 } else { synchronous_api(file) };
    let b = kernel::with(|k| {
        let target = k.related_device(file);
        let b = match declined {
            // The fast-I/O attempt's request continues as an IRP.
            Some(r) => build_for(k, r, mj::LOCK_CONTROL, target, file, flags, true),
            None => build(k, volume, mj::LOCK_CONTROL, target, file, flags, true),
        };
        let s = first(&b);
        s.MinorFunction = a.minor;
        s.Flags = if a.fail_immediately { sl::FAIL_IMMEDIATELY } else { 0 }
            | if a.exclusive { sl::EXCLUSIVE_LOCK } else { 0 };
        // SAFETY: the member of a lock control.
        let l = unsafe { io_mut::<params::IoLockControl>(&mut s.Parameters) };
        l.Length = len_block.ptr().cast();
        l.ByteOffset = a.offset as i64;
        l.Key = 0;
        b
    });
    let sent = if a.minor == mn_lock::LOCK { send_on(file, b) } else { send(b) };
    if sent.status == Status::PENDING {
        kernel::with(|k| k.keep_for_request(sent.rid, Box::new(len_block)));
    }
    sent_result(&sent, Vec::new())
}

/// Logs a fast-I/O routine's FALSE: the request continues as an IRP.
fn fast_io_declined(k: &mut Kernel, volume: VolumeId, r: RequestId) {
    let volume = k.volume_display_name(volume);
    k.log(crate::events::EventKind::System {
        what: "fast_io_declined",
        driver: None,
        volume: Some(volume),
        detail: format!("io {}: fast I/O returned FALSE; the I/O manager builds an IRP", r.0),
    });
}

/// `IRP_MJ_SHUTDOWN` to the top of the volume's stack.
fn shutdown(volume: VolumeId) -> IoResult {
    let b = kernel::with(|k| {
        let vdo = k.volume(volume).vdo?;
        let top = k.objects.device(k.objects.top(vdo)).ptr;
        Some(build(
            k,
            volume,
            mj::SHUTDOWN,
            top,
            std::ptr::null_mut(),
            irp_flags::SYNCHRONOUS_API,
            false,
        ))
    });
    let Some(b) = b else { return IoResult::failed(Status::VOLUME_DISMOUNTED) };
    let sent = send(b);
    let (status, n, rid) = (sent.status, sent.information, sent.rid);
    result(status, n, rid, Vec::new())
}

/// The handle closes: `IRP_MJ_CLEANUP` (once).
fn cleanup(h: Handle) -> IoResult {
    let (file, volume, _) = match handle_of(h) {
        Ok(x) => x,
        Err(s) => return IoResult::failed(s),
    };
    kernel::with(|k| {
        if let Some(Some(u)) = k.files.handles.get_mut(h.0 as usize) {
            u.open = false;
        }
        if let Some(info) = k.files.map.get_mut(&(file as usize)) {
            info.handles = info.handles.saturating_sub(1);
        }
    });
    send_cleanup(file, Some(volume))
}

/// Sends `IRP_MJ_CLEANUP` for a file object: the I/O manager's own request when the last
/// handle goes (`IopCloseFile`), `RequestorMode` kernel whoever closed the handle.
fn send_cleanup(file: *mut FILE_OBJECT, volume: Option<VolumeId>) -> IoResult {
    let flags = irp_flags::CLOSE_OPERATION | irp_flags::SYNCHRONOUS_API;
    match volume {
        Some(v) => {
            let b = kernel::with(|k| {
                let target = k.related_device(file);
                build(k, v, mj::CLEANUP, target, file, flags, false)
            });
            let Sent { status, information: n, rid, keep: _keep, .. } = send(b);
            result(status, n, rid, Vec::new())
        }
        None => {
            let (s, n) = send_kernel_irp(file, mj::CLEANUP, flags, |_| {});
            IoResult { information: n, ..IoResult::failed(s) }
        }
    }
}

/// The caller's reference goes (after cleanup if the handle is still open): `IRP_MJ_CLOSE` when
/// it was the last one.
fn close(h: Handle) -> IoResult {
    let entry = kernel::with(|k| k.user_handle(h));
    let Some(u) = entry else {
        kernel::with(|k| {
            k.report(
                crate::events::Rule::InvalidHandle,
                None,
                format!("user handle {} does not exist", h.0),
            )
        });
        return IoResult::failed(Status::INVALID_HANDLE);
    };
    // The handle leaves the table first (`ObpCloseHandle`), then `IopCloseFile` sends the
    // cleanup of the last handle, under the lock of a synchronous file object.
    kernel::with(|k| {
        if let Some(slot) = k.files.handles.get_mut(h.0 as usize) {
            *slot = None;
        }
    });
    if !u.open || !synchronous_file(u.fo as *mut FILE_OBJECT) {
        return close_file(u);
    }
    if !crate::folock::try_acquire(u.fo) {
        let close = Box::new(move || close_file(u));
        return crate::folock::queue(u.fo, u.volume, MajorFunction::Cleanup, close);
    }
    let r = close_file(u);
    crate::folock::done(u.fo, &r);
    r
}

/// The rest of a close whose handle left the table: the cleanup if the handle was open, and the
/// close when the last reference went.
fn close_file(u: crate::files::UserHandle) -> IoResult {
    let mut cleanup_result = None;
    if u.open {
        kernel::with(|k| {
            if let Some(info) = k.files.map.get_mut(&u.fo) {
                info.handles = info.handles.saturating_sub(1);
            }
        });
        cleanup_result = Some(send_cleanup(u.fo as *mut FILE_OBJECT, Some(u.volume)));
    }
    let released = kernel::with(|k| k.file_dereference(u.fo));
    if released == Released::Close {
        return send_close(u.fo as *mut FILE_OBJECT);
    }
    // Someone else (a section, a driver) still references the file object: the close comes
    // when they let go.
    IoResult {
        status: Status::SUCCESS,
        ..cleanup_result.unwrap_or_else(|| IoResult::failed(Status::SUCCESS))
    }
}

/// Sends `IRP_MJ_CLOSE` for a file object whose last reference went, then frees it.
pub fn send_close(file: *mut FILE_OBJECT) -> IoResult {
    let volume = kernel::with(|k| k.files.map.get(&(file as usize)).and_then(|i| i.volume));
    let flags = irp_flags::CLOSE_OPERATION | irp_flags::SYNCHRONOUS_API;
    let r = match volume {
        Some(v) => {
            let b = kernel::with(|k| {
                let target = k.related_device(file);
                build(k, v, mj::CLOSE, target, file, flags, false)
            });
            let Sent { status, information: n, rid, keep: _keep, .. } = send(b);
            result(status, n, rid, Vec::new())
        }
        None => {
            let (s, n) = send_kernel_irp(file, mj::CLOSE, flags, |_| {});
            IoResult { information: n, ..IoResult::failed(s) }
        }
    };
    kernel::with(|k| k.free_file_object(file as usize));
    crate::sched::run_ready();
    r
}

/// `ObDereferenceObject` on a file object from outside the kernel's borrow.
pub fn dereference_file(fo: usize) {
    if kernel::with(|k| k.file_dereference(fo)) == Released::Close {
        let _ = send_close(fo as *mut FILE_OBJECT);
    }
}

/// Sends a request for a file object that belongs to no volume (a control device's) as a
/// synchronous kernel request: the event and status block of `IoBuildSynchronousFsdRequest`'s
/// kind of IRP. `setup` fills the first stack location.
fn send_kernel_irp(
    file: *mut FILE_OBJECT,
    major: u8,
    flags: u32,
    setup: impl FnOnce(&mut IO_STACK_LOCATION),
) -> (Status, usize) {
    let target = kernel::with(|k| k.related_device(file));
    send_kernel_irp_to(target, file, major, flags, None, |_, s| setup(s))
}

/// As [`send_kernel_irp`], to an explicit device rather than the top of the file's stack, for
/// the I/O manager (`image` None) or a driver's own synchronous request (the Filter Manager's
/// name query, `FltCancelFileOpen`): `fill` sets the rest of the IRP and of its first location
/// after its major function and file object. `STATUS_PENDING` when the wait ended otherwise:
/// the IRP may then still complete into its event and status block, which are left to it (and
/// so must be the buffers `fill` gave it).
pub(crate) fn send_kernel_irp_to(
    target: *mut DEVICE_OBJECT,
    file: *mut FILE_OBJECT,
    major: u8,
    flags: u32,
    image: Option<crate::ids::ImageId>,
    fill: impl FnOnce(&mut IRP, &mut IO_STACK_LOCATION),
) -> (Status, usize) {
    // SAFETY: all-zero is a valid KEVENT and IO_STATUS_BLOCK before use.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: as above.
    let mut iosb: Box<IO_STATUS_BLOCK> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our event storage.
    unsafe { crate::sched::initialize_event(&mut *event, 0, false) };
    let irp = kernel::with(|k| {
        let stack = k.objects.device_id(target).map_or(1, |d| k.objects.dobj(d).StackSize);
        k.allocate_irp(stack, Finish::Synchronous, image)
    });
    // SAFETY: a fresh IRP, its sender's until it calls the driver.
    let i = unsafe { crate::irpx::header(irp) };
    i.Flags = flags;
    i.UserEvent = &mut *event;
    i.Anonymous.UserIosb = &mut *iosb;
    i.IoStatus.Anonymous.Status = Status::PENDING.0;
    i.Tail.Overlay.OriginalFileObject = file;
    // SAFETY: the fresh IRP's first location.
    let s = unsafe { crate::irpx::next(irp) };
    s.MajorFunction = major;
    s.FileObject = file;
    fill(i, s);
    let r = crate::irp::call_driver(target, irp);
    if r == Status::PENDING.0 {
        // SAFETY: our event, alive during the wait.
        let w = unsafe { crate::sched::wait_for_event(&mut *event, None) };
        if w != Status::SUCCESS.0 {
            std::mem::forget(event);
            std::mem::forget(iosb);
            return (Status::PENDING, 0);
        }
    }
    // SAFETY: the status member written at completion.
    (Status(unsafe { iosb.Anonymous.Status }), iosb.Information)
}

/// `IoCancelFileOpen`: a filter closes, below itself, a file its create's lower drivers opened
/// successfully: `IRP_MJ_CLEANUP` then `IRP_MJ_CLOSE` go to `device` (the top of the stack below
/// the caller) and the file object is marked `FO_FILE_OPEN_CANCELLED`. The caller then fails the
/// create; the I/O manager sends nothing more for that file object (docs/simulator.md).
pub(crate) fn cancel_file_open(device: *mut DEVICE_OBJECT, file: *mut FILE_OBJECT) {
    if !kernel::with(|k| k.cancel_file_open_allowed(file, "IoCancelFileOpen")) {
        return;
    }
    let flags = irp_flags::CLOSE_OPERATION | irp_flags::SYNCHRONOUS_API;
    let _ = send_kernel_irp_to(device, file, mj::CLEANUP, flags, None, |_, _| {});
    let _ = send_kernel_irp_to(device, file, mj::CLOSE, flags, None, |_, _| {});
}

impl Kernel {
    /// The checks of `IoCancelFileOpen` and `FltCancelFileOpen` (`routine`, for the message):
    /// `PASSIVE_LEVEL`, a live file object, no handle created for it yet (a create's post
    /// processing), not cancelled before. Marks the file object `FO_FILE_OPEN_CANCELLED` when the
    /// call may go on; otherwise reports `CANCEL_FILE_OPEN_MISUSE` (or the IRQL) and leaves the
    /// object alone.
    pub(crate) fn cancel_file_open_allowed(
        &mut self,
        file: *mut FILE_OBJECT,
        routine: &str,
    ) -> bool {
        if !self.check_irql(crate::kernel::PASSIVE_LEVEL, routine) {
            return false;
        }
        if file.is_null() || !self.files.map.contains_key(&(file as usize)) {
            self.report_current(Rule::CancelFileOpenMisuse, format!("{routine} on no file object"));
            return false;
        }
        // SAFETY: a live file object of the kernel's table.
        let flags = unsafe { (*file).Flags };
        if flags & fo::HANDLE_CREATED != 0 {
            self.report_current(
                Rule::CancelFileOpenMisuse,
                format!(
                    "{routine} after a handle was created for the file object (FO_HANDLE_CREATED)"
                ),
            );
            return false;
        }
        if flags & fo::FILE_OPEN_CANCELLED != 0 {
            self.report_current(
                Rule::CancelFileOpenMisuse,
                format!("{routine} twice on one file object"),
            );
            return false;
        }
        if self.create_status_of(file) == Some(Status::REPARSE) {
            // The reference pages: STATUS_REPARSE says the file was not opened, so there is
            // nothing to cancel (and nothing below to send a cleanup or a close to).
            self.report_current(
                Rule::CancelFileOpenMisuse,
                format!(
                    "{routine} on a create that ended STATUS_REPARSE: the file was not opened \
                     (docs/simulator.md, \"Reparse\")"
                ),
            );
            return false;
        }
        // SAFETY: as above.
        unsafe { (*file).Flags |= fo::FILE_OPEN_CANCELLED };
        true
    }
}

impl Kernel {
    /// The status of the create in progress for `file`, as the caller of `IoCancelFileOpen` or
    /// `FltCancelFileOpen` sees it: a Filter Manager create operation's callback data in its post
    /// phase, else the create IRP's `IoStatus` (a legacy filter's completion routine, or its
    /// dispatch routine once the IRP came back). None when no create of `file` is found.
    fn create_status_of(&self, file: *mut FILE_OBJECT) -> Option<Status> {
        let fo = file as usize;
        let flt = self.fltmgr.ops.map.values().find(|op| {
            op.fo == fo
                && op.kind == fsfilter::OperationKind::Irp
                && op.iopb().MajorFunction == mj::CREATE
                && op.cbd().Flags & crate::fltmgr::ops::cbd::POST_OPERATION != 0
        });
        if let Some(op) = flt {
            // SAFETY: the status member of the operation's callback data.
            return Some(Status(unsafe { op.cbd().IoStatus.Anonymous.Status }));
        }
        self.irps.map.iter().find_map(|(&irp, info)| {
            if info.state == crate::irp::IrpState::Freed {
                return None;
            }
            // SAFETY: a live IRP of the table.
            let i = unsafe { &*(irp as *const IRP) };
            // SAFETY: the I/O manager's member of the tail for the IRPs it builds.
            let original = unsafe { i.Tail.Overlay }.OriginalFileObject as usize;
            // SAFETY: the status member.
            let status = Status(unsafe { i.IoStatus.Anonymous.Status });
            (original == fo && i.Flags & irp_flags::CREATE_OPERATION != 0).then_some(status)
        })
    }
}

/// Who opens a named device, and how.
enum DeviceOpen<'a> {
    /// `IoGetDeviceObjectPointer`'s `ZwOpenFile(DesiredAccess, ShareAccess 0,
    /// FILE_NON_DIRECTORY_FILE)`, as the Windows Research Kernel's and ReactOS's call it: the
    /// caller's access only (no `SYNCHRONIZE`, no synchronous option), in kernel mode.
    Kernel {
        /// `DesiredAccess`.
        desired: u32,
    },
    /// A user-mode `CreateFile(GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ |
    /// FILE_SHARE_WRITE, OPEN_EXISTING)` without `FILE_FLAG_OVERLAPPED` (`NtCreateFile` with
    /// `FILE_SYNCHRONOUS_IO_NONALERT | FILE_NON_DIRECTORY_FILE`), with the extended attributes
    /// `ea` (a `FILE_FULL_EA_INFORMATION` list) when given.
    User {
        /// The EA buffer (`NtCreateFile`'s `EaBuffer`).
        ea: Option<&'a [u8]>,
        /// Who calls (its token in the create's security context).
        caller: Caller,
        /// `FILE_FLAG_OVERLAPPED`: no `FILE_SYNCHRONOUS_IO_NONALERT`, an asynchronous file
        /// object whose requests its caller does not wait for.
        overlapped: bool,
    },
}

/// `IoGetDeviceObjectPointer`: opens a named device (mounting it if it is an unmounted storage
/// device), closes the handle (cleanup), and returns the referenced file object and the top of
/// the stack its requests go to.
pub fn open_device_by_name(
    name: &str,
    desired: u32,
) -> Result<(*mut FILE_OBJECT, *mut DEVICE_OBJECT), Status> {
    let file = open_named_device(name, &DeviceOpen::Kernel { desired })?;
    // ZwClose of the handle ObReferenceObjectByHandle was taken from: the cleanup.
    let volume = kernel::with(|k| k.files.map.get(&(file as usize)).and_then(|i| i.volume));
    let _ = send_cleanup(file, volume);
    let top = kernel::with(|k| k.related_device(file));
    Ok((file, top))
}

/// Opens the device named `name` (its object manager name, `\Device\X`), as `open` says: the
/// create IRP went down and succeeded, and the file object holds one reference and one handle.
fn open_named_device(name: &str, open: &DeviceOpen<'_>) -> Result<*mut FILE_OBJECT, Status> {
    let user = matches!(open, DeviceOpen::User { .. });
    let found = kernel::with(|k| {
        let id = *k.objects.names.get(&name.to_uppercase())?;
        let info = k.objects.device(id);
        // The I/O manager's parse refuses a device marked unload-pending by its driver's stop
        // request, or which is still initializing (facts.md §1.3; `IopCheckDeviceAndDriver` in
        // the WRK).
        let mut refused = info.unload_pending && k.unload_pending(info.driver);
        let (ptr, volume, role) = (info.ptr, info.volume, info.role);
        if k.objects.dobj(id).Flags & crate::objects::DO_DEVICE_INITIALIZING != 0 {
            k.report_left_initializing(id, None);
            refused = true;
        }
        Some((id, ptr, volume, role, refused))
    });
    let Some((id, ptr, volume, role, pending)) = found else {
        return Err(Status::OBJECT_NAME_NOT_FOUND);
    };
    if pending {
        return Err(Status::NO_SUCH_DEVICE);
    }
    // A storage device's name opens its volume (mounting it first); any other device is
    // opened itself.
    let volume = if role == crate::objects::DeviceRole::Storage { volume } else { None };
    if let Some(v) = volume {
        if !kernel::with(|k| crate::mount::is_mounted(k, v)) {
            let s = crate::mount::mount_volume(v, true);
            if !s.is_success() {
                return Err(s);
            }
        }
        // A locked volume is refused in the parse (ReactOS `IopCheckVpbMounted`).
        if kernel::with(|k| crate::mount::is_locked(k, v)) {
            return Err(Status::ACCESS_DENIED);
        }
    }
    let (desired, options, share_access) = match open {
        DeviceOpen::Kernel { desired } => (*desired, create_options::NON_DIRECTORY_FILE, 0),
        DeviceOpen::User { overlapped, .. } => (
            access::GENERIC_READ | access::GENERIC_WRITE,
            if *overlapped { 0 } else { create_options::SYNCHRONOUS_IO_NONALERT }
                | create_options::NON_DIRECTORY_FILE,
            share::READ | share::WRITE,
        ),
    };
    let file = kernel::with(|k| {
        let vpb = if volume.is_some() { k.objects.dobj(id).Vpb } else { std::ptr::null_mut() };
        let mut flags = synchronous_flags(options);
        if volume.is_some() {
            flags |= fo::VOLUME_OPEN;
        }
        k.new_file_object(ptr, vpb, "", flags, volume)
    });
    // The access state the object manager's parse has: the kernel caller's access as asked
    // for; a user's mapped, with SYNCHRONIZE, as NtCreateFile grants it.
    let (sc, sc_blocks) = match open {
        DeviceOpen::Kernel { .. } => security_context_for(
            access::map_generic(desired),
            options,
            crate::security::system_token(),
        ),
        DeviceOpen::User { caller, .. } => security_context_as(desired, options, *caller),
    };
    // `IopParseDevice` passes the caller's EA buffer (copied and checked by `NtCreateFile`) in
    // the create IRP's system buffer, its length in `Parameters.Create.EaLength`.
    let ea = match open {
        DeviceOpen::User { ea: Some(ea), .. } if !ea.is_empty() => Some(ea.to_vec()),
        _ => None,
    };
    let fill = |i: &mut IRP, s: &mut IO_STACK_LOCATION| {
        i.RequestorMode = i8::from(user);
        // SAFETY: the member of a create.
        let c = unsafe { io_mut::<params::IoCreate>(&mut s.Parameters) };
        c.SecurityContext = sc;
        c.Options = (disposition::OPEN << 24) | options;
        c.ShareAccess = share_access as u16;
        if let Some(ea) = &ea {
            i.AssociatedIrp.SystemBuffer = ea.as_ptr().cast_mut().cast();
            c.EaLength = ea.len() as u32;
        }
    };
    let mut flags = irp_flags::CREATE_OPERATION | irp_flags::SYNCHRONOUS_API;
    if user {
        flags |= irp_flags::DEFER_IO_COMPLETION;
    }
    let status = match volume {
        Some(v) => {
            let built = kernel::with(|k| {
                let target = k.related_device(file);
                build(k, v, mj::CREATE, target, file, flags, user)
            });
            // SAFETY: the request's IRP, not yet sent.
            fill(unsafe { crate::irpx::header(built.irp) }, first(&built));
            send(built).status
        }
        None => {
            let target = kernel::with(|k| k.related_device(file));
            send_kernel_irp_to(target, file, mj::CREATE, flags, None, fill).0
        }
    };
    if status == Status::PENDING {
        std::mem::forget(sc_blocks);
        std::mem::forget(ea);
        return Err(Status::IO_TIMEOUT);
    }
    if !status.is_success() {
        kernel::with(|k| k.free_file_object(file as usize));
        return Err(status);
    }
    // IoGetDeviceObjectPointer's handle is closed at once; a user's stays.
    kernel::with(|k| k.file_opened(file, u32::from(user)));
    // A handle was created (IoCancelFileOpen on this file object is a misuse).
    // SAFETY: the live file object.
    unsafe { (*file).Flags |= fo::HANDLE_CREATED };
    Ok(file)
}

/// The object manager name a user-mode name stands for: a name in `\??` (`\DosDevices`, the
/// same directory for the simulator) is a symbolic link (`IoCreateSymbolicLink`) to the
/// device's name; any other name is the device's own.
fn user_device_name(name: &str) -> Result<String, Status> {
    match crate::objects::dos_link_name(name) {
        Some(link) => {
            kernel::with(|k| k.objects.symbolic_link(&link)).ok_or(Status::OBJECT_NAME_NOT_FOUND)
        }
        None => Ok(name.to_owned()),
    }
}

/// `CreateFile` from user mode on a device by name (`\??\X`, `\DosDevices\X` or the device's
/// own name), with `ea` as the `EaBuffer` of its `NtCreateFile`: the device's driver gets a
/// create IRP in user mode with the EA buffer in its system buffer and `caller`'s token in its
/// security context. The handle, or the status the open failed with.
pub fn open_user_device(
    name: &str,
    ea: Option<&[u8]>,
    caller: Caller,
    overlapped: bool,
) -> Result<DeviceHandle, Status> {
    as_user(|| {
        let target = user_device_name(name)?;
        let file = open_named_device(&target, &DeviceOpen::User { ea, caller, overlapped })?;
        let granted =
            access::map_generic(access::GENERIC_READ | access::GENERIC_WRITE) | access::SYNCHRONIZE;
        Ok(kernel::with(|k| {
            let h = DeviceHandle(k.files.device_handles.len() as u32);
            k.files
                .device_handles
                .push(Some(DeviceUserHandle { fo: file as usize, access: granted }));
            h
        }))
    })
}

/// A device handle that is open; `INVALID_HANDLE` reported otherwise.
fn device_handle(h: DeviceHandle) -> Result<DeviceUserHandle, Status> {
    kernel::with(|k| match k.files.device_handles.get(h.0 as usize).copied().flatten() {
        Some(u) => Ok(u),
        None => {
            k.report(
                crate::events::Rule::InvalidHandle,
                None,
                format!("device handle {} is not open", h.0),
            );
            Err(Status::INVALID_HANDLE)
        }
    })
}

/// `DeviceIoControl` on a device handle (`NtDeviceIoControlFile`): the code's access is
/// checked, the buffers are those of its method as for [`control`], and the caller waits for
/// the request (the handle is synchronous). The device's requests are the I/O manager's own
/// kind (an event and a status block of its own: no volume, no request in the event log).
pub fn device_control(h: DeviceHandle, code: u32, input: &[u8], out_len: usize) -> IoResult {
    as_user(|| {
        let u = match device_handle(h) {
            Ok(u) => u,
            Err(s) => return IoResult::failed(s),
        };
        if let Some(status) = control_refused(code, u.access) {
            return IoResult::failed(status);
        }
        let file = u.fo as *mut FILE_OBJECT;
        if let Some(served) = fast_device_control(file, code, input, out_len) {
            return served;
        }
        let c = ControlBuffers::new(mj::DEVICE_CONTROL, code, input, out_len);
        let (target, mdl) = kernel::with(|k| {
            let direct = matches!(c.method, method::IN_DIRECT | method::OUT_DIRECT);
            let mdl = if direct && out_len > 0 {
                k.allocate_mdl(c.out.ptr().cast(), out_len)
            } else {
                std::ptr::null_mut()
            };
            (k.related_device(file), mdl)
        });
        let fill = |i: &mut IRP, s: &mut IO_STACK_LOCATION| {
            i.RequestorMode = 1;
            c.fill(i, s, mdl, u.access);
        };
        let (status, n) =
            send_kernel_irp_to(target, file, mj::DEVICE_CONTROL, c.flags(), None, fill);
        if status == Status::PENDING {
            // The wait ended otherwise: the IRP may still complete into its buffers.
            std::mem::forget(c);
            return IoResult::without_request(Status::PENDING);
        }
        let data = c.output(status, n);
        let iosb = (!status.is_error()).then_some(IoStatusBlock { status, information: n });
        IoResult { information: n, data, iosb, ..IoResult::without_request(status) }
    })
}

/// What the caller of an overlapped device request finds at its completion.
pub type ControlDone = Box<dyn FnOnce(IoResult)>;

/// `DeviceIoControl` with an `OVERLAPPED` on a device handle (`NtDeviceIoControlFile` with an
/// APC or event): the checks and buffers of [`device_control`], then the IRP goes down and the
/// caller does not wait for it on a handle opened overlapped (`FILE_FLAG_OVERLAPPED`, an
/// asynchronous file object); on a synchronous handle the I/O manager waits as for
/// [`device_control`] ("lpOverlapped is ignored", the control-code pages). The answer is what the
/// service returns: the dispatch routine's status (`STATUS_PENDING` for a request a driver
/// holds; on a synchronous handle the final status once it completed), or a failure before any
/// request (`then` then never runs). `then` runs as a user
/// action (a completion-port thread, or the thread the event wakes) once the request completed,
/// at once or later, with its final status, information and output; not for a request the
/// driver failed without pending it (an error status, `PendingReturned` clear), for which
/// `IopCompleteRequest` queues nothing: the failure is only the call's answer. The request keeps the
/// handle's file object referenced until it completes; `cancel_io` cancels it.
pub fn device_control_then(
    h: DeviceHandle,
    code: u32,
    input: &[u8],
    out_len: usize,
    then: ControlDone,
) -> Status {
    as_user(|| {
        let u = match device_handle(h) {
            Ok(u) => u,
            Err(s) => return s,
        };
        if let Some(status) = control_refused(code, u.access) {
            return status;
        }
        let file = u.fo as *mut FILE_OBJECT;
        if let Some(served) = fast_device_control(file, code, input, out_len) {
            let status = served.status;
            kernel::with(|k| queue_user_completion(k, Box::new(move || then(served))));
            return status;
        }
        let c = ControlBuffers::new(mj::DEVICE_CONTROL, code, input, out_len);
        let pended = std::rc::Rc::new(std::cell::Cell::new(false));
        let seen = pended.clone();
        let finished = std::rc::Rc::new(std::cell::Cell::new(None::<Status>));
        let ended = finished.clone();
        let (target, irp, key) = kernel::with(|k| {
            let direct = matches!(c.method, method::IN_DIRECT | method::OUT_DIRECT);
            let mdl = if direct && out_len > 0 {
                k.allocate_mdl(c.out.ptr().cast(), out_len)
            } else {
                std::ptr::null_mut()
            };
            let target = k.related_device(file);
            k.files.last_overlapped += 1;
            let key = k.files.last_overlapped;
            let stack = k.objects.device_id(target).map_or(1, |d| k.objects.dobj(d).StackSize);
            let irp = k.allocate_irp(stack, Finish::Overlapped(key), None);
            // SAFETY: a fresh IRP the I/O manager owns until it calls the driver.
            let i = unsafe { crate::irpx::header(irp) };
            i.Flags = c.flags();
            i.RequestorMode = 1;
            i.IoStatus.Anonymous.Status = Status::PENDING.0;
            i.Tail.Overlay.OriginalFileObject = file;
            // SAFETY: the fresh IRP's first location.
            let s = unsafe { crate::irpx::next(irp) };
            s.MajorFunction = mj::DEVICE_CONTROL;
            s.FileObject = file;
            c.fill(i, s, mdl, u.access);
            // Each request references its file object until it completes.
            k.hold_file_while_pending(irp);
            (target, irp, key)
        });
        let done: crate::files::OverlappedDone = Box::new(move |status, n, pended| {
            ended.set(Some(status));
            let data = c.output(status, n);
            // `IopCompleteRequest` writes the status block, sets the event and queues the
            // completion packet of a pended request whatever its status, and of one completed
            // at once unless it failed (WRK io/iomgr/iosubs.c: `!NT_ERROR(status) ||
            // PendingReturned`): a failure at once is only the call's status.
            let written = pended || seen.get() || !status.is_error();
            if !written {
                return;
            }
            let iosb = Some(IoStatusBlock { status, information: n });
            let r = IoResult { information: n, data, iosb, ..IoResult::without_request(status) };
            kernel::with(|k| queue_user_completion(k, Box::new(move || then(r))));
        });
        kernel::with(|k| k.files.overlapped_calls.insert(key, done));
        let returned = Status(crate::irp::call_driver(target, irp));
        pended.set(returned == Status::PENDING);
        if returned == Status::PENDING && synchronous_file(file) {
            // `IopSynchronousServiceTail`: the caller waits, and gets the final status.
            let _ = crate::sched::wait_until(|| finished.get().is_some(), None);
            return finished.get().unwrap_or(Status::PENDING);
        }
        returned
    })
}

/// The completion of overlapped device request `key` (`Finish::Overlapped`): the caller's
/// output is read and its completion queued as a user action.
pub(crate) fn overlapped_done(key: u64, status: Status, information: usize, pended: bool) {
    if let Some(done) = kernel::with(|k| k.files.overlapped_calls.remove(&key)) {
        done(status, information, pended);
    }
}

/// Queues `run` as a user-mode caller's completion: at `PASSIVE_LEVEL`, in a thread of its own,
/// outside any driver image.
fn queue_user_completion(k: &mut Kernel, run: Box<dyn FnOnce()>) {
    let thread = k.sched.worker();
    k.sched.push(crate::sched::Task {
        name: "overlapped I/O completion",
        image: None,
        irql: crate::kernel::PASSIVE_LEVEL,
        thread,
        run,
    });
}

/// `CancelIoEx(handle, NULL)` on a device handle (`NtCancelIoFileEx`): `IoCancelIrp` on each of
/// its overlapped requests still outstanding, newest first, without waiting for them;
/// `STATUS_NOT_FOUND` when there is none.
pub fn cancel_device_io(h: DeviceHandle) -> Status {
    as_user(|| match device_handle(h) {
        Ok(u) => crate::cancel::cancel_file_requests(u.fo as *mut FILE_OBJECT),
        Err(s) => s,
    })
}

/// The fast-I/O attempt of `NtDeviceIoControlFile` on a device handle: the top device's
/// driver's `FastIoDeviceControl`, when its table holds one, is called first with the caller's
/// own buffers (the input as given, the output buffer itself, NULL for none) and `Wait` TRUE,
/// in the caller's thread; TRUE ends the call with the status block the routine filled (no IRP
/// is sent), FALSE or no routine lets the IRP follow (`None`). ReactOS iofunc.c,
/// `IopDeviceFsIoControl`, for device controls only (never for file-system controls).
fn fast_device_control(
    file: *mut FILE_OBJECT,
    code: u32,
    input: &[u8],
    out_len: usize,
) -> Option<IoResult> {
    let field = std::mem::offset_of!(FAST_IO_DISPATCH, FastIoDeviceControl);
    let (routine, target, entered) = kernel::with(|k| {
        let target = k.related_device(file);
        let (t, image) = top_table(k, target, field)?;
        let routine = t.FastIoDeviceControl?;
        Some((routine, target, k.enter(Some(image))))
    })?;
    // The caller's buffers: copies the simulator owns for the call.
    let user_in = (!input.is_empty()).then(|| {
        let b = buffer(input.len());
        // SAFETY: the block holds input.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(input.as_ptr(), b.ptr(), input.len()) };
        b
    });
    let user_out = (out_len > 0).then(|| buffer(out_len));
    let in_ptr = user_in.as_ref().map_or(std::ptr::null(), |b| b.ptr().cast_const().cast());
    let out_ptr = user_out.as_ref().map_or(std::ptr::null_mut(), |b| b.ptr().cast());
    // SAFETY: all-zero is a valid IO_STATUS_BLOCK.
    let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    let (in_len, o_len) = (input.len() as u32, out_len as u32);
    let done = kernel::run_entered(entered, || {
        // SAFETY: the driver's routine with the arguments the I/O manager passes.
        unsafe { routine(file, true, in_ptr, in_len, out_ptr, o_len, code, &mut iosb, target) }
    });
    kernel::with(|k| k.leave());
    if !done {
        return None;
    }
    // SAFETY: the status member the routine wrote (it returned TRUE).
    let status = Status(unsafe { iosb.Anonymous.Status });
    let n = iosb.Information;
    let data = match &user_out {
        Some(b) if !status.is_error() => read_block(b, n.min(out_len)),
        _ => Vec::new(),
    };
    let iosb = (!status.is_error()).then_some(IoStatusBlock { status, information: n });
    Some(IoResult { information: n, data, iosb, ..IoResult::without_request(status) })
}

/// `CloseHandle` on a device handle: the cleanup, then the close when the handle's reference
/// was the last.
pub fn close_user_device(h: DeviceHandle) -> Status {
    as_user(|| {
        let u = match device_handle(h) {
            Ok(u) => u,
            Err(s) => return s,
        };
        kernel::with(|k| {
            if let Some(slot) = k.files.device_handles.get_mut(h.0 as usize) {
                *slot = None;
            }
            if let Some(info) = k.files.map.get_mut(&u.fo) {
                info.handles = info.handles.saturating_sub(1);
            }
        });
        close_kernel_file_handle(u.fo);
        Status::SUCCESS
    })
}

/// `ZwClose` of a kernel file handle: cleanup, then the handle's reference.
pub fn close_kernel_file_handle(fo: usize) {
    let volume = kernel::with(|k| k.files.map.get(&fo).and_then(|i| i.volume));
    let _ = send_cleanup(fo as *mut FILE_OBJECT, volume);
    dereference_file(fo);
}
