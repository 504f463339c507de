//! Building the model's operation views from an IRP and its stack location (the legacy model has
//! no callback data: the backend reads the IRP itself).

use fsfilter::{
    CallbackDataFlags, ControlParameters, CreateParameters, DirectoryParameters, FileName,
    HeaderSource, InformationParameters, IoStatus, IrpFlags, LockParameters, MajorFunction,
    OperationHeader, OperationKind, Parameters, ReadWriteParameters, RequestorMode, Status,
    directory, fsctl,
};
use fsfilter_kernel::constants::{fo_flags, irp_flags};
use fsfilter_kernel::params::{self, io};
use fsfilter_kernel::{irql, mdl, unicode};
use windows_sys::Wdk::Foundation::{FILE_OBJECT, IO_STACK_LOCATION, IRP};

/// A live IRP at our location as a [`HeaderSource`]: the views build the header from it when
/// filter logic first asks.
pub(crate) struct IrpHeader(*mut IRP);

impl IrpHeader {
    /// # Safety
    /// `irp` must be a live IRP whose current location is the caller's while the value lives.
    pub(crate) unsafe fn new(irp: *mut IRP) -> IrpHeader {
        IrpHeader(irp)
    }
}

impl<'a> HeaderSource<'a> for IrpHeader {
    fn header(&self) -> OperationHeader<'a> {
        // SAFETY: `IrpHeader::new`'s contract: a live IRP at our location.
        unsafe { header(self.0) }
    }
}

/// The major function and minor code of the IRP's current location.
///
/// # Safety
/// `irp` must be a live IRP.
#[inline]
pub(crate) unsafe fn codes(irp: *mut IRP) -> (MajorFunction, u8) {
    // SAFETY: the caller guarantees a live IRP.
    let sl = unsafe { crate::raw::location(irp) };
    (MajorFunction::from_code(sl.MajorFunction), sl.MinorFunction)
}

/// Whether the IRP's operation may be synchronized (`fsfilter::may_synchronize`: not a lock
/// request, a directory-change notification or an oplock FSCTL).
///
/// # Safety
/// `irp` must be a live IRP whose current location is the caller's.
#[inline(never)]
pub(crate) unsafe fn may_synchronize(irp: *mut IRP) -> bool {
    // SAFETY: the caller's live IRP.
    let sl = unsafe { crate::raw::location(irp) };
    // SAFETY: the FSCTL member of the parameters, read as a plain number whatever the operation
    // (the union is at least that large); used only for an FSCTL.
    let code = unsafe { params::io::<params::IoFileSystemControl>(&sl.Parameters) }.FsControlCode;
    fsfilter::may_synchronize(sl.MajorFunction, sl.MinorFunction, code)
}

/// The header of the operation an IRP's current stack location describes.
///
/// # Safety
/// `irp` must be a live IRP whose current location is the caller's, valid for `'a`.
pub(crate) unsafe fn header<'a>(irp: *mut IRP) -> OperationHeader<'a> {
    // SAFETY: the caller guarantees a live IRP.
    let sl = unsafe { crate::raw::location(irp) };
    // SAFETY: as above.
    let i = unsafe { &*irp };
    let major = MajorFunction::from_code(sl.MajorFunction);
    // SAFETY: the stack location of a live IRP; members chosen by `major`.
    let parameters = unsafe { parameters(i, sl, major) };
    let (kind, id) = (OperationKind::Irp, irp as usize);
    // The file's part, as for an operation without an IRP (one copy of it).
    // SAFETY: the file object of a stack location, when set, is valid during the operation.
    let common = unsafe { irpless_header(major, kind, sl.FileObject, parameters, id) };
    OperationHeader {
        minor: sl.MinorFunction,
        irp_flags: IrpFlags::from_bits_retain(i.Flags),
        data_flags: CallbackDataFlags::IRP_OPERATION,
        requestor_mode: if i.RequestorMode == 0 {
            RequestorMode::Kernel
        } else {
            RequestorMode::User
        },
        // SAFETY: the caller's live IRP, at its current stack location.
        synchronous: unsafe {
            windows_sys::Wdk::Storage::FileSystem::IoIsOperationSynchronous(irp)
        },
        ..common
    }
}

/// The header of an operation without an IRP: fast I/O, or an FsFilter callback (`kind`); for an
/// IRP (`OperationKind::Irp`), its file's part, which [`header`] completes.
///
/// Out of line: one copy for the IRP views, the fast-I/O model and the FsFilter routines.
///
/// # Safety
/// `file` must be null or a valid file object for `'a`.
#[inline(never)]
pub(crate) unsafe fn irpless_header<'a>(
    major: MajorFunction,
    kind: OperationKind,
    file: *const FILE_OBJECT,
    parameters: Parameters,
    id: usize,
) -> OperationHeader<'a> {
    // SAFETY: the caller guarantees a valid file object or null.
    let file = unsafe { file.as_ref() };
    OperationHeader {
        major,
        minor: 0,
        kind,
        irp_flags: IrpFlags::empty(),
        data_flags: if matches!(kind, OperationKind::FsFilter) {
            CallbackDataFlags::FS_FILTER_OPERATION
        } else {
            CallbackDataFlags::FAST_IO_OPERATION
        },
        requestor_mode: RequestorMode::User,
        // SAFETY: a valid file object's name describes its buffer.
        file_name: file.map(|f| FileName::new(unsafe { file_name(f) })),
        volume_open: file.is_some_and(|f| f.Flags & fo_flags::VOLUME_OPEN != 0),
        file: file.map_or(0, |f| core::ptr::from_ref(f) as usize),
        stream: file.map_or(0, |f| f.FsContext as usize),
        parameters,
        irql: irql::current(),
        // Fast I/O and FsFilter callbacks are synchronous (FltIsOperationSynchronous's first
        // rule).
        synchronous: true,
        id,
    }
}

/// # Safety
/// `file` must be a valid file object for `'a`.
unsafe fn file_name<'a>(file: &FILE_OBJECT) -> &'a [u16] {
    // SAFETY: the caller guarantees validity; FileName describes its buffer.
    unsafe { unicode::units(&file.FileName) }
}

/// # Safety
/// `sl` must be the current location of the live IRP `irp`, for an operation `major`.
unsafe fn parameters(irp: &IRP, sl: &IO_STACK_LOCATION, major: MajorFunction) -> Parameters {
    let p = &sl.Parameters;
    match major {
        MajorFunction::Create => {
            // SAFETY: the create member.
            let c = unsafe { io::<params::IoCreate>(p) };
            // SAFETY: a create's security context is valid during the create (or NULL).
            let access = unsafe { c.SecurityContext.as_ref() }.map_or(0, |s| s.DesiredAccess);
            // SAFETY: `AllocationSize` is the overlay member of a create IRP.
            let allocation = unsafe { irp.Overlay.AllocationSize };
            Parameters::Create(CreateParameters {
                desired_access: access,
                options: c.Options,
                share_access: c.ShareAccess,
                file_attributes: c.FileAttributes,
                allocation_size: allocation,
            })
        }
        MajorFunction::Read => {
            // SAFETY: the read member.
            let r = unsafe { io::<params::IoReadWrite>(p) };
            Parameters::Read(ReadWriteParameters {
                offset: r.ByteOffset,
                length: r.Length,
                key: r.Key,
            })
        }
        MajorFunction::Write => {
            // SAFETY: the write member.
            let w = unsafe { io::<params::IoReadWrite>(p) };
            Parameters::Write(ReadWriteParameters {
                offset: w.ByteOffset,
                length: w.Length,
                key: w.Key,
            })
        }
        MajorFunction::QueryInformation => {
            // SAFETY: the query-file member.
            let q = unsafe { io::<params::IoFileInformation>(p) };
            Parameters::QueryInformation(InformationParameters {
                class: q.FileInformationClass as u32,
                length: q.Length,
            })
        }
        MajorFunction::SetInformation => {
            // SAFETY: the set-file member (its prefix is the query-file member's).
            let q = unsafe { io::<params::IoFileInformation>(p) };
            Parameters::SetInformation(InformationParameters {
                class: q.FileInformationClass as u32,
                length: q.Length,
            })
        }
        MajorFunction::QueryVolumeInformation | MajorFunction::SetVolumeInformation => {
            // SAFETY: query and set volume share their layout.
            let q = unsafe { io::<params::IoVolumeInformation>(p) };
            let info =
                InformationParameters { class: q.FsInformationClass as u32, length: q.Length };
            if major == MajorFunction::QueryVolumeInformation {
                Parameters::QueryVolumeInformation(info)
            } else {
                Parameters::SetVolumeInformation(info)
            }
        }
        MajorFunction::DirectoryControl => {
            if sl.MinorFunction == directory::NOTIFY_CHANGE_DIRECTORY {
                // SAFETY: the notify member.
                let n = unsafe { io::<params::IoNotifyDirectory>(p) };
                Parameters::DirectoryControl(DirectoryParameters {
                    class: n.CompletionFilter,
                    length: n.Length,
                })
            } else {
                // SAFETY: the query-directory member.
                let q = unsafe { io::<params::IoQueryDirectory>(p) };
                Parameters::DirectoryControl(DirectoryParameters {
                    class: q.FileInformationClass as u32,
                    length: q.Length,
                })
            }
        }
        MajorFunction::FileSystemControl => {
            if sl.MinorFunction == fsctl::USER_FS_REQUEST || sl.MinorFunction == fsctl::KERNEL_CALL
            {
                // SAFETY: the FSCTL member.
                let c = unsafe { io::<params::IoFileSystemControl>(p) };
                Parameters::FileSystemControl(ControlParameters {
                    code: c.FsControlCode,
                    input_length: c.InputBufferLength,
                    output_length: c.OutputBufferLength,
                })
            } else {
                Parameters::FileSystemControl(ControlParameters::default())
            }
        }
        MajorFunction::DeviceControl | MajorFunction::InternalDeviceControl => {
            // SAFETY: the IOCTL member.
            let c = unsafe { io::<params::IoDeviceIoControl>(p) };
            Parameters::DeviceControl(ControlParameters {
                code: c.IoControlCode,
                input_length: c.InputBufferLength,
                output_length: c.OutputBufferLength,
            })
        }
        MajorFunction::LockControl => {
            // SAFETY: the lock member.
            let l = unsafe { io::<params::IoLockControl>(p) };
            // SAFETY: a lock request's length pointer is valid during the request (NULL for
            // unlock-all).
            let length = unsafe { l.Length.as_ref() }.copied().unwrap_or(0);
            Parameters::LockControl(LockParameters { offset: l.ByteOffset, length, key: l.Key })
        }
        _ => Parameters::None,
    }
}

/// Where this backend's reads and writes keep their data ([`fsfilter_kernel::buffer::Locate`]):
/// the IRP's MDL, mapped to system space only when filter logic asks for the bytes, or
/// its system buffer.
pub(crate) struct Buffers;

impl fsfilter_kernel::buffer::Locate for Buffers {
    unsafe fn length(irp: usize, write: bool) -> usize {
        // SAFETY: the caller guarantees a live IRP; its current location is the operation's.
        let p = unsafe { &crate::raw::location(irp as *mut IRP).Parameters };
        let length = if write {
            // SAFETY: the caller guarantees a write, whose member is `Write`.
            unsafe { io::<params::IoReadWrite>(p) }.Length
        } else {
            // SAFETY: the caller guarantees a read, whose member is `Read`.
            unsafe { io::<params::IoReadWrite>(p) }.Length
        };
        length as usize
    }

    unsafe fn locate(irp: usize, _write: bool) -> *mut u8 {
        // SAFETY: the caller guarantees a live IRP.
        let Some(i) = (unsafe { (irp as *const IRP).as_ref() }) else {
            return core::ptr::null_mut();
        };
        if !i.MdlAddress.is_null() {
            // SAFETY: the IRP's MDL is valid and locked while the IRP is in flight.
            unsafe { mdl::system_address(i.MdlAddress) }.cast()
        } else if i.Flags & irp_flags::BUFFERED_IO != 0 {
            // SAFETY: `SystemBuffer` is the member of buffered I/O.
            unsafe { i.AssociatedIrp.SystemBuffer }.cast()
        } else {
            core::ptr::null_mut()
        }
    }
}

/// True for paging I/O (`IRP_PAGING_IO`).
///
/// # Safety
/// `irp` must be live.
pub(crate) unsafe fn is_paging(irp: *mut IRP) -> bool {
    // SAFETY: the caller guarantees a live IRP.
    unsafe { irp.as_ref() }
        .is_some_and(|i| IrpFlags::from_bits_retain(i.Flags).contains(IrpFlags::PAGING_IO))
}

/// An IRP's `IoStatus`.
///
/// # Safety
/// `irp` must be live.
pub(crate) unsafe fn io_status(irp: *mut IRP) -> IoStatus {
    // SAFETY: the caller guarantees a live IRP.
    let Some(i) = (unsafe { irp.as_ref() }) else { return IoStatus::new(Status::UNSUCCESSFUL) };
    // SAFETY: `Status` is the member in use.
    let status = unsafe { i.IoStatus.Anonymous.Status };
    IoStatus { status: Status(status), information: i.IoStatus.Information }
}
