//! Building the model's operation views from the Filter Manager's `FLT_CALLBACK_DATA`.

use fsfilter::{
    CallbackDataFlags, ControlParameters, CreateParameters, DirectoryParameters, FileName,
    HeaderSource, InformationParameters, IoStatus, IrpFlags, LockParameters, MajorFunction,
    ModWriteParameters, OperationHeader, OperationKind, Parameters, ReadWriteParameters,
    RequestorMode, SectionSyncParameters, Status, directory, fsctl,
};
use fsfilter_kernel::constants::{fltfl_callback_data, fo_flags};
use fsfilter_kernel::params::{self, flt};
use fsfilter_kernel::{irql, mdl, unicode};
use windows_sys::Wdk::Foundation::{FILE_OBJECT, MDL};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK, FLT_PARAMETERS,
};

/// The callback data and its parameter block, when both are there.
///
/// # Safety
/// `data` must be a valid callback data the Filter Manager passed to the running callback, valid
/// for `'a`.
pub(crate) unsafe fn parts<'a>(
    data: *const FLT_CALLBACK_DATA,
) -> Option<(&'a FLT_CALLBACK_DATA, &'a FLT_IO_PARAMETER_BLOCK)> {
    // SAFETY: the caller guarantees `data` is valid for 'a.
    let data = unsafe { data.as_ref() }?;
    // SAFETY: a valid callback data points to its valid parameter block.
    let iopb = unsafe { data.Iopb.as_ref() }?;
    Some((data, iopb))
}

/// How the operation `data` describes arrived.
pub(crate) fn kind(data: &FLT_CALLBACK_DATA) -> OperationKind {
    if data.Flags & fltfl_callback_data::FAST_IO_OPERATION != 0 {
        OperationKind::FastIo
    } else if data.Flags & fltfl_callback_data::FS_FILTER_OPERATION != 0 {
        OperationKind::FsFilter
    } else {
        OperationKind::Irp
    }
}

/// The running callback's data as a [`HeaderSource`]: the views build the header from it when
/// filter logic first asks.
pub(crate) struct CallbackHeader<'a> {
    data: &'a FLT_CALLBACK_DATA,
    iopb: &'a FLT_IO_PARAMETER_BLOCK,
}

impl<'a> CallbackHeader<'a> {
    /// # Safety
    /// `data` and `iopb` must be the running callback's, as [`parts`] returns them, and stay so
    /// while the value lives.
    pub(crate) unsafe fn new(
        data: &'a FLT_CALLBACK_DATA,
        iopb: &'a FLT_IO_PARAMETER_BLOCK,
    ) -> CallbackHeader<'a> {
        CallbackHeader { data, iopb }
    }
}

impl<'a> HeaderSource<'a> for CallbackHeader<'a> {
    fn header(&self) -> OperationHeader<'a> {
        // SAFETY: `CallbackHeader::new`'s contract: the running callback's data.
        unsafe { header(self.data, self.iopb) }
    }
}

/// The header of the operation `data` describes (from [`parts`]).
///
/// # Safety
/// `data` and `iopb` must be the running callback's, as [`parts`] returns them.
unsafe fn header<'a>(
    data: &'a FLT_CALLBACK_DATA,
    iopb: &'a FLT_IO_PARAMETER_BLOCK,
) -> OperationHeader<'a> {
    let kind = kind(data);
    let major = MajorFunction::from_code(iopb.MajorFunction);
    // SAFETY: the target file object, when present, is valid during the callback.
    let file = unsafe { iopb.TargetFileObject.as_ref() };
    OperationHeader {
        major,
        minor: iopb.MinorFunction,
        kind,
        irp_flags: match kind {
            OperationKind::Irp => IrpFlags::from_bits_retain(iopb.IrpFlags),
            _ => IrpFlags::empty(),
        },
        data_flags: CallbackDataFlags::from_bits_retain(data.Flags),
        requestor_mode: if data.RequestorMode == 0 {
            RequestorMode::Kernel
        } else {
            RequestorMode::User
        },
        // SAFETY: a valid file object's name describes its buffer.
        file_name: file.map(|f| FileName::new(unsafe { file_name(f) })),
        volume_open: file.is_some_and(|f| f.Flags & fo_flags::VOLUME_OPEN != 0),
        file: file.map_or(0, |f| core::ptr::from_ref(f) as usize),
        stream: file.map_or(0, |f| f.FsContext as usize),
        // SAFETY: `iopb` is valid; the union member read is chosen by `major`.
        parameters: unsafe { parameters(iopb, major) },
        irql: irql::current(),
        // SAFETY: the running callback's data.
        synchronous: unsafe {
            windows_sys::Wdk::Storage::FileSystem::Minifilters::FltIsOperationSynchronous(data)
        },
        id: core::ptr::from_ref(data) as usize,
    }
}

/// # Safety
/// `file` must be a valid file object for `'a`.
unsafe fn file_name<'a>(file: &FILE_OBJECT) -> &'a [u16] {
    // SAFETY: the caller guarantees `file` is valid; its FileName describes its buffer.
    unsafe { unicode::units(&file.FileName) }
}

/// # Safety
/// `iopb` must be valid for an operation whose major function is `major`.
unsafe fn parameters(iopb: &FLT_IO_PARAMETER_BLOCK, major: MajorFunction) -> Parameters {
    let p: &FLT_PARAMETERS = &iopb.Parameters;
    match major {
        MajorFunction::Create => {
            // SAFETY: `Create` is the member for IRP_MJ_CREATE.
            let c = unsafe { flt::<params::FltCreate>(p) };
            Parameters::Create(CreateParameters {
                desired_access: create_access(c),
                options: c.Options,
                share_access: c.ShareAccess,
                file_attributes: c.FileAttributes,
                allocation_size: c.AllocationSize,
            })
        }
        MajorFunction::Read => {
            // SAFETY: `Read` is the member for IRP_MJ_READ.
            let r = unsafe { flt::<params::FltRead>(p) };
            Parameters::Read(ReadWriteParameters {
                offset: r.ByteOffset,
                length: r.Length,
                key: r.Key,
            })
        }
        MajorFunction::Write => {
            // SAFETY: `Write` is the member for IRP_MJ_WRITE.
            let w = unsafe { flt::<params::FltWrite>(p) };
            Parameters::Write(ReadWriteParameters {
                offset: w.ByteOffset,
                length: w.Length,
                key: w.Key,
            })
        }
        MajorFunction::QueryInformation => {
            // SAFETY: the member for IRP_MJ_QUERY_INFORMATION.
            let q = unsafe { flt::<params::FltFileInformation>(p) };
            Parameters::QueryInformation(InformationParameters {
                class: q.FileInformationClass as u32,
                length: q.Length,
            })
        }
        MajorFunction::SetInformation => {
            // SAFETY: the member for IRP_MJ_SET_INFORMATION (its prefix is the query member's).
            let q = unsafe { flt::<params::FltFileInformation>(p) };
            Parameters::SetInformation(InformationParameters {
                class: q.FileInformationClass as u32,
                length: q.Length,
            })
        }
        MajorFunction::QueryVolumeInformation => {
            // SAFETY: the member for IRP_MJ_QUERY_VOLUME_INFORMATION.
            let q = unsafe { flt::<params::FltVolumeInformation>(p) };
            Parameters::QueryVolumeInformation(InformationParameters {
                class: q.FsInformationClass as u32,
                length: q.Length,
            })
        }
        MajorFunction::SetVolumeInformation => {
            // SAFETY: the member for IRP_MJ_SET_VOLUME_INFORMATION.
            let q = unsafe { flt::<params::FltVolumeInformation>(p) };
            Parameters::SetVolumeInformation(InformationParameters {
                class: q.FsInformationClass as u32,
                length: q.Length,
            })
        }
        MajorFunction::DirectoryControl => {
            if iopb.MinorFunction == directory::NOTIFY_CHANGE_DIRECTORY {
                // SAFETY: the member for IRP_MN_NOTIFY_CHANGE_DIRECTORY.
                let n = unsafe { flt::<params::FltNotifyDirectory>(p) };
                Parameters::DirectoryControl(DirectoryParameters {
                    class: n.CompletionFilter,
                    length: n.Length,
                })
            } else {
                // SAFETY: the member for IRP_MN_QUERY_DIRECTORY.
                let q = unsafe { flt::<params::FltQueryDirectory>(p) };
                Parameters::DirectoryControl(DirectoryParameters {
                    class: q.FileInformationClass as u32,
                    length: q.Length,
                })
            }
        }
        MajorFunction::FileSystemControl => {
            let minor = iopb.MinorFunction;
            if minor == fsctl::USER_FS_REQUEST || minor == fsctl::KERNEL_CALL {
                // SAFETY: `Common` is the member for user and kernel FSCTL requests.
                let c = unsafe { flt::<params::FltFileSystemControl>(p) };
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
            // SAFETY: `Common` is the member for IOCTLs.
            let c = unsafe { flt::<params::FltDeviceIoControl>(p) };
            Parameters::DeviceControl(ControlParameters {
                code: c.IoControlCode,
                input_length: c.InputBufferLength,
                output_length: c.OutputBufferLength,
            })
        }
        MajorFunction::LockControl => {
            // SAFETY: the member for IRP_MJ_LOCK_CONTROL.
            let l = unsafe { flt::<params::FltLockControl>(p) };
            // SAFETY: the Length pointer of a lock request is valid during the callback (NULL for
            // unlock-all requests).
            let length = unsafe { l.Length.as_ref() }.copied().unwrap_or(0);
            Parameters::LockControl(LockParameters { offset: l.ByteOffset, length, key: l.Key })
        }
        MajorFunction::AcquireForSectionSynchronization => {
            // SAFETY: the member for IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION.
            let a = unsafe { p.AcquireForSectionSynchronization };
            Parameters::AcquireForSectionSynchronization(SectionSyncParameters {
                sync_type: a.SyncType as u32,
                page_protection: a.PageProtection,
            })
        }
        MajorFunction::AcquireForModWrite => {
            // SAFETY: the member for IRP_MJ_ACQUIRE_FOR_MOD_WRITE.
            let a = unsafe { p.AcquireForModifiedPageWriter };
            // SAFETY: FsRtl's ending offset, valid during the callback (or NULL).
            let ending_offset = unsafe { a.EndingOffset.as_ref() }.copied().unwrap_or(0);
            Parameters::AcquireForModWrite(ModWriteParameters { ending_offset })
        }
        _ => Parameters::None,
    }
}

/// The desired access of a create, from its security context.
fn create_access(c: &params::FltCreate) -> u32 {
    // SAFETY: a create's security context is valid during the create's callbacks (or NULL).
    unsafe { c.SecurityContext.as_ref() }.map_or(0, |s| s.DesiredAccess)
}

/// Where this backend's reads and writes keep their data ([`fsfilter_kernel::buffer::Locate`]):
/// the callback data's MDL, mapped to system space only when filter logic asks for the bytes, or
/// its system buffer.
pub(crate) struct Buffers;

impl fsfilter_kernel::buffer::Locate for Buffers {
    unsafe fn length(data: usize, write: bool) -> usize {
        // SAFETY: the caller guarantees a valid callback data of a read or a write.
        let Some(data) = (unsafe { (data as *const FLT_CALLBACK_DATA).as_ref() }) else { return 0 };
        // SAFETY: a valid callback data points to its valid parameter block.
        let Some(iopb) = (unsafe { data.Iopb.as_ref() }) else { return 0 };
        let length = if write {
            // SAFETY: the caller guarantees a write, whose member is `Write`.
            unsafe { flt::<params::FltWrite>(&iopb.Parameters) }.Length
        } else {
            // SAFETY: the caller guarantees a read, whose member is `Read`.
            unsafe { flt::<params::FltRead>(&iopb.Parameters) }.Length
        };
        length as usize
    }

    unsafe fn locate(data: usize, write: bool) -> *mut u8 {
        // SAFETY: the caller guarantees a valid callback data.
        let Some(data) = (unsafe { (data as *const FLT_CALLBACK_DATA).as_ref() }) else {
            return core::ptr::null_mut();
        };
        // SAFETY: a valid callback data points to its valid parameter block.
        let Some(iopb) = (unsafe { data.Iopb.as_ref() }) else { return core::ptr::null_mut() };
        let (buffer, mdl): (*mut core::ffi::c_void, *mut MDL) = if write {
            // SAFETY: the caller guarantees a write, whose member is `Write`.
            let w = unsafe { flt::<params::FltWrite>(&iopb.Parameters) };
            (w.WriteBuffer, w.MdlAddress)
        } else {
            // SAFETY: the caller guarantees a read, whose member is `Read`.
            let r = unsafe { flt::<params::FltRead>(&iopb.Parameters) };
            (r.ReadBuffer, r.MdlAddress)
        };
        if !mdl.is_null() {
            // SAFETY: the operation's MDL is valid and locked while the operation is in flight.
            unsafe { mdl::system_address(mdl) }.cast()
        } else if data.Flags & fltfl_callback_data::SYSTEM_BUFFER != 0 {
            buffer.cast()
        } else {
            core::ptr::null_mut()
        }
    }
}

/// `IoStatus` of a callback data.
///
/// # Safety
/// `data` must be valid.
pub(crate) unsafe fn io_status(data: *const FLT_CALLBACK_DATA) -> IoStatus {
    // SAFETY: the caller guarantees validity.
    let Some(data) = (unsafe { data.as_ref() }) else { return IoStatus::new(Status::UNSUCCESSFUL) };
    // SAFETY: `Status` is the member in use.
    let status = unsafe { data.IoStatus.Anonymous.Status };
    IoStatus { status: Status(status), information: data.IoStatus.Information }
}

/// Sets `IoStatus` of a callback data.
///
/// # Safety
/// `data` must be valid and the caller entitled to set its status (pre-callback completing it).
pub(crate) unsafe fn set_io_status(data: *mut FLT_CALLBACK_DATA, status: IoStatus) {
    // SAFETY: the caller guarantees validity and ownership.
    let Some(data) = (unsafe { data.as_mut() }) else { return };
    data.IoStatus.Anonymous.Status = status.status.0;
    data.IoStatus.Information = status.information;
}
