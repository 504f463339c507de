//! `FLT_IO_PARAMETER_BLOCK` from an IRP's stack location, field by field (the two unions do not
//! share a layout), with the buffers the Filter Manager adds (`ReadBuffer`, `MdlAddress`,
//! `InfoBuffer`, ...); and back into the next stack location when a filter made the callback
//! data dirty (`FltSetCallbackDataDirty`).

use windows_sys::Wdk::Foundation::{IO_STACK_LOCATION, IRP};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK, FLT_PARAMETERS, FLT_RELATED_OBJECTS,
};

use fsfilter_kernel::params::{self, flt, flt_mut, io, io_mut};

use crate::nt::{irp_flags, mj, mn_dir, mn_fsctl, sl};

/// `FLTFL_CALLBACK_DATA_SYSTEM_BUFFER`.
pub const SYSTEM_BUFFER: u32 = 0x8;

/// One operation's callback data: `FLT_CALLBACK_DATA`, the parameter block it points to, and
/// the related objects passed with each callback, in one block at a stable address.
#[repr(C)]
pub struct CbdBlock {
    /// The callback data.
    pub data: FLT_CALLBACK_DATA,
    /// Its parameter block.
    pub iopb: FLT_IO_PARAMETER_BLOCK,
    /// The related objects of the callback running.
    pub objects: FLT_RELATED_OBJECTS,
}

/// `METHOD_*` of an I/O control code.
fn method(code: u32) -> u32 {
    code & 3
}

/// The caller's buffer of an EA, quota or security request: the system buffer when the I/O
/// manager buffered it (`SYSTEM_BUFFER` added to `flags`), else `UserBuffer` (as for reads).
fn caller_buffer(irp: &IRP, flags: &mut u32) -> *mut core::ffi::c_void {
    if irp.Flags & irp_flags::BUFFERED_IO != 0 {
        *flags |= SYSTEM_BUFFER;
        // SAFETY: the union's pointer member is the one buffered requests use.
        unsafe { irp.AssociatedIrp.SystemBuffer }
    } else {
        irp.UserBuffer
    }
}

/// Fills `p` from the stack location `s` of `irp` for major function `major`; returns the
/// callback-data flags the buffers imply (`SYSTEM_BUFFER`). Both sides are read and written with
/// the documented x64 layouts (`fsfilter_kernel::params`), except the members windows-sys lays
/// out as Windows does (pointer-first or naturally aligned: `SetEa`, `SetSecurity`,
/// `QueryQuota`, `SetQuota`, mount and verify, `Others`).
pub fn from_location(p: &mut FLT_PARAMETERS, irp: &IRP, s: &IO_STACK_LOCATION) -> u32 {
    // SAFETY: the union's pointer member is the one buffered requests use.
    let system = unsafe { irp.AssociatedIrp.SystemBuffer };
    let buffered = irp.Flags & irp_flags::BUFFERED_IO != 0;
    let mut flags = 0;
    let q = &s.Parameters;
    match s.MajorFunction {
        mj::CREATE => {
            // SAFETY: the union member the major (and minor) function selects.
            let c = *unsafe { io::<params::IoCreate>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltCreate>(p) };
            t.SecurityContext = c.SecurityContext;
            t.Options = c.Options;
            t.FileAttributes = c.FileAttributes;
            t.ShareAccess = c.ShareAccess;
            t.EaLength = c.EaLength;
            t.EaBuffer = system;
            t.AllocationSize = 0;
        }
        mj::READ | mj::WRITE => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { io::<params::IoReadWrite>(q) };
            // SAFETY: the union member the major (and minor) function selects (a write's has
            // the same layout).
            let t = unsafe { flt_mut::<params::FltRead>(p) };
            t.Length = r.Length;
            t.Key = r.Key;
            t.ByteOffset = r.ByteOffset;
            t.ReadBuffer = if buffered { system } else { irp.UserBuffer };
            t.MdlAddress = irp.MdlAddress;
            if buffered {
                flags |= SYSTEM_BUFFER;
            }
        }
        mj::QUERY_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { io::<params::IoFileInformation>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltFileInformation>(p) };
            t.Length = r.Length;
            t.FileInformationClass = r.FileInformationClass;
            t.InfoBuffer = system;
            flags |= SYSTEM_BUFFER;
        }
        mj::SET_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { io::<params::IoSetFile>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltSetFile>(p) };
            t.Length = r.Length;
            t.FileInformationClass = r.FileInformationClass;
            t.ParentOfTarget = r.FileObject;
            // SAFETY: the widest member of the union, copied whole.
            t.Anonymous.DeleteHandle = unsafe { r.Anonymous.DeleteHandle };
            t.InfoBuffer = system;
            flags |= SYSTEM_BUFFER;
        }
        mj::QUERY_VOLUME_INFORMATION | mj::SET_VOLUME_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { io::<params::IoVolumeInformation>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltVolumeInformation>(p) };
            t.Length = r.Length;
            t.FsInformationClass = r.FsInformationClass;
            t.VolumeBuffer = system;
            flags |= SYSTEM_BUFFER;
        }
        mj::QUERY_EA => {
            // SAFETY: the union member the major (and minor) function selects.
            let e = *unsafe { io::<params::IoQueryEa>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltQueryEa>(p) };
            t.Length = e.Length;
            t.EaList = e.EaList;
            t.EaListLength = e.EaListLength;
            t.EaIndex = e.EaIndex;
            t.EaBuffer = caller_buffer(irp, &mut flags);
            t.MdlAddress = irp.MdlAddress;
        }
        mj::SET_EA => {
            // SAFETY: the union member the major (and minor) function selects.
            p.SetEa.Length = unsafe { q.SetEa }.Length;
            p.SetEa.EaBuffer = caller_buffer(irp, &mut flags);
            p.SetEa.MdlAddress = irp.MdlAddress;
        }
        mj::QUERY_SECURITY => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { io::<params::IoQuerySecurity>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltQuerySecurity>(p) };
            t.SecurityInformation = r.SecurityInformation;
            t.Length = r.Length;
            t.SecurityBuffer = caller_buffer(irp, &mut flags);
            t.MdlAddress = irp.MdlAddress;
        }
        mj::SET_SECURITY => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { q.SetSecurity };
            p.SetSecurity.SecurityInformation = r.SecurityInformation;
            p.SetSecurity.SecurityDescriptor = r.SecurityDescriptor;
        }
        mj::QUERY_QUOTA => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { q.QueryQuota };
            p.QueryQuota.Length = r.Length;
            p.QueryQuota.StartSid = r.StartSid;
            p.QueryQuota.SidList = r.SidList;
            p.QueryQuota.SidListLength = r.SidListLength;
            p.QueryQuota.QuotaBuffer = caller_buffer(irp, &mut flags);
            p.QueryQuota.MdlAddress = irp.MdlAddress;
        }
        mj::SET_QUOTA => {
            // SAFETY: the union member the major (and minor) function selects.
            p.SetQuota.Length = unsafe { q.SetQuota }.Length;
            p.SetQuota.QuotaBuffer = caller_buffer(irp, &mut flags);
            p.SetQuota.MdlAddress = irp.MdlAddress;
        }
        mj::DIRECTORY_CONTROL if s.MinorFunction == mn_dir::QUERY_DIRECTORY => {
            // SAFETY: the union member the major (and minor) function selects.
            let d = *unsafe { io::<params::IoQueryDirectory>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltQueryDirectory>(p) };
            t.Length = d.Length;
            t.FileName = d.FileName;
            t.FileInformationClass = d.FileInformationClass;
            t.FileIndex = d.FileIndex;
            t.DirectoryBuffer = irp.UserBuffer;
            t.MdlAddress = irp.MdlAddress;
        }
        mj::DIRECTORY_CONTROL => {
            // SAFETY: the union member the major (and minor) function selects.
            let d = *unsafe { io::<params::IoNotifyDirectory>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltNotifyDirectory>(p) };
            t.Length = d.Length;
            t.CompletionFilter = d.CompletionFilter;
            t.DirectoryBuffer = irp.UserBuffer;
            t.MdlAddress = irp.MdlAddress;
        }
        mj::FILE_SYSTEM_CONTROL
            if matches!(s.MinorFunction, mn_fsctl::MOUNT_VOLUME | mn_fsctl::VERIFY_VOLUME) =>
        {
            // SAFETY: the union member the major (and minor) function selects.
            let m = unsafe { q.MountVolume };
            p.FileSystemControl.VerifyVolume.Vpb = m.Vpb;
            p.FileSystemControl.VerifyVolume.DeviceObject = m.DeviceObject;
        }
        mj::FILE_SYSTEM_CONTROL | mj::DEVICE_CONTROL | mj::INTERNAL_DEVICE_CONTROL => {
            // FSCTL and IOCTL parameters share their layout in both unions.
            // SAFETY: the union member the major (and minor) function selects.
            let c = *unsafe { io::<params::IoDeviceIoControl>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltControlBuffers>(p) };
            t.OutputBufferLength = c.OutputBufferLength;
            t.InputBufferLength = c.InputBufferLength;
            t.IoControlCode = c.IoControlCode;
            match method(c.IoControlCode) {
                // `Buffered.SystemBuffer`.
                0 => {
                    t.Buffer = system;
                    flags |= SYSTEM_BUFFER;
                }
                // `Neither`.
                3 => {
                    t.Buffer = c.Type3InputBuffer;
                    t.OutputBuffer = irp.UserBuffer;
                    t.OutputMdlAddress = irp.MdlAddress;
                }
                // `Direct`.
                _ => {
                    t.Buffer = system;
                    t.OutputBuffer = irp.UserBuffer;
                    t.OutputMdlAddress = irp.MdlAddress;
                }
            }
        }
        mj::LOCK_CONTROL => {
            // SAFETY: the union member the major (and minor) function selects.
            let l = *unsafe { io::<params::IoLockControl>(q) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { flt_mut::<params::FltLockControl>(p) };
            t.Length = l.Length;
            t.Key = l.Key;
            t.ByteOffset = l.ByteOffset;
            t.ProcessId = 0;
            t.FailImmediately = s.Flags & sl::FAIL_IMMEDIATELY != 0;
            t.ExclusiveLock = s.Flags & sl::EXCLUSIVE_LOCK != 0;
        }
        _ => {
            // SAFETY: the union member the major (and minor) function selects.
            let o = unsafe { q.Others };
            p.Others.Argument1 = o.Argument1;
            p.Others.Argument2 = o.Argument2;
            p.Others.Argument3 = o.Argument3;
            p.Others.Argument4 = o.Argument4;
        }
    }
    flags
}

/// A (dirty) EA, quota or security buffer and MDL into the IRP (a buffered request keeps its
/// system buffer, as reads do).
fn set_caller_buffer(
    irp: &mut IRP,
    buffer: *mut core::ffi::c_void,
    mdl: *mut windows_sys::Wdk::Foundation::MDL,
) {
    if irp.Flags & irp_flags::BUFFERED_IO == 0 {
        irp.UserBuffer = buffer;
    }
    irp.MdlAddress = mdl;
}

/// Writes a (dirty) parameter block into the next stack location `s` of `irp`: major, minor,
/// flags, file object, parameters; a changed read/write buffer or MDL goes into the IRP.
pub fn to_location(iopb: &FLT_IO_PARAMETER_BLOCK, irp: &mut IRP, s: &mut IO_STACK_LOCATION) {
    s.MajorFunction = iopb.MajorFunction;
    s.MinorFunction = iopb.MinorFunction;
    s.Flags = iopb.OperationFlags;
    s.FileObject = iopb.TargetFileObject;
    irp.Flags = iopb.IrpFlags;
    let p = &iopb.Parameters;
    let q = &mut s.Parameters;
    match iopb.MajorFunction {
        mj::CREATE => {
            // SAFETY: the union member the major (and minor) function selects.
            let c = *unsafe { flt::<params::FltCreate>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoCreate>(q) };
            t.SecurityContext = c.SecurityContext;
            t.Options = c.Options;
            t.FileAttributes = c.FileAttributes;
            t.ShareAccess = c.ShareAccess;
            t.EaLength = c.EaLength;
        }
        mj::READ | mj::WRITE => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { flt::<params::FltRead>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoReadWrite>(q) };
            t.Length = r.Length;
            t.Key = r.Key;
            t.ByteOffset = r.ByteOffset;
            if irp.Flags & irp_flags::BUFFERED_IO == 0 {
                irp.UserBuffer = r.ReadBuffer;
            }
            irp.MdlAddress = r.MdlAddress;
        }
        mj::QUERY_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { flt::<params::FltFileInformation>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoFileInformation>(q) };
            t.Length = r.Length;
            t.FileInformationClass = r.FileInformationClass;
        }
        mj::SET_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { flt::<params::FltSetFile>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoSetFile>(q) };
            t.Length = r.Length;
            t.FileInformationClass = r.FileInformationClass;
            t.FileObject = r.ParentOfTarget;
            // SAFETY: the widest member of the union, copied whole.
            t.Anonymous.DeleteHandle = unsafe { r.Anonymous.DeleteHandle };
        }
        mj::QUERY_VOLUME_INFORMATION | mj::SET_VOLUME_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { flt::<params::FltVolumeInformation>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoVolumeInformation>(q) };
            t.Length = r.Length;
            t.FsInformationClass = r.FsInformationClass;
        }
        mj::QUERY_EA => {
            // SAFETY: the union member the major (and minor) function selects.
            let e = *unsafe { flt::<params::FltQueryEa>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoQueryEa>(q) };
            t.Length = e.Length;
            t.EaList = e.EaList;
            t.EaListLength = e.EaListLength;
            t.EaIndex = e.EaIndex;
            set_caller_buffer(irp, e.EaBuffer, e.MdlAddress);
        }
        mj::SET_EA => {
            // SAFETY: the union member the major (and minor) function selects.
            let e = unsafe { p.SetEa };
            q.SetEa.Length = e.Length;
            set_caller_buffer(irp, e.EaBuffer, e.MdlAddress);
        }
        mj::QUERY_SECURITY => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = *unsafe { flt::<params::FltQuerySecurity>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoQuerySecurity>(q) };
            t.SecurityInformation = r.SecurityInformation;
            t.Length = r.Length;
            set_caller_buffer(irp, r.SecurityBuffer, r.MdlAddress);
        }
        mj::SET_SECURITY => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { p.SetSecurity };
            q.SetSecurity.SecurityInformation = r.SecurityInformation;
            q.SetSecurity.SecurityDescriptor = r.SecurityDescriptor;
        }
        mj::QUERY_QUOTA => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { p.QueryQuota };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.QueryQuota };
            t.Length = r.Length;
            t.StartSid = r.StartSid;
            t.SidList = r.SidList;
            t.SidListLength = r.SidListLength;
            set_caller_buffer(irp, r.QuotaBuffer, r.MdlAddress);
        }
        mj::SET_QUOTA => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { p.SetQuota };
            q.SetQuota.Length = r.Length;
            set_caller_buffer(irp, r.QuotaBuffer, r.MdlAddress);
        }
        mj::DIRECTORY_CONTROL if iopb.MinorFunction == mn_dir::QUERY_DIRECTORY => {
            // SAFETY: the union member the major (and minor) function selects.
            let d = *unsafe { flt::<params::FltQueryDirectory>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoQueryDirectory>(q) };
            t.Length = d.Length;
            t.FileName = d.FileName;
            t.FileInformationClass = d.FileInformationClass;
            t.FileIndex = d.FileIndex;
            irp.UserBuffer = d.DirectoryBuffer;
            irp.MdlAddress = d.MdlAddress;
        }
        mj::DIRECTORY_CONTROL => {
            // SAFETY: the union member the major (and minor) function selects.
            let d = *unsafe { flt::<params::FltNotifyDirectory>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoNotifyDirectory>(q) };
            t.Length = d.Length;
            t.CompletionFilter = d.CompletionFilter;
            irp.UserBuffer = d.DirectoryBuffer;
            irp.MdlAddress = d.MdlAddress;
        }
        mj::FILE_SYSTEM_CONTROL
            if matches!(iopb.MinorFunction, mn_fsctl::MOUNT_VOLUME | mn_fsctl::VERIFY_VOLUME) =>
        {
            // SAFETY: the union member the major (and minor) function selects.
            let m = unsafe { p.FileSystemControl.VerifyVolume };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.MountVolume };
            t.Vpb = m.Vpb;
            t.DeviceObject = m.DeviceObject;
        }
        mj::FILE_SYSTEM_CONTROL | mj::DEVICE_CONTROL | mj::INTERNAL_DEVICE_CONTROL => {
            // SAFETY: the union member the major (and minor) function selects.
            let c = *unsafe { flt::<params::FltDeviceIoControl>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoDeviceIoControl>(q) };
            t.OutputBufferLength = c.OutputBufferLength;
            t.InputBufferLength = c.InputBufferLength;
            t.IoControlCode = c.IoControlCode;
        }
        mj::LOCK_CONTROL => {
            // SAFETY: the union member the major (and minor) function selects.
            let l = *unsafe { flt::<params::FltLockControl>(p) };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { io_mut::<params::IoLockControl>(q) };
            t.Length = l.Length;
            t.Key = l.Key;
            t.ByteOffset = l.ByteOffset;
        }
        mj::CLEANUP | mj::CLOSE | mj::FLUSH_BUFFERS | mj::SHUTDOWN => {}
        _ => {
            // SAFETY: the union member the major (and minor) function selects.
            let o = unsafe { p.Others };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.Others };
            t.Argument1 = o.Argument1;
            t.Argument2 = o.Argument2;
            t.Argument3 = o.Argument3;
            t.Argument4 = o.Argument4;
        }
    }
}

/// The MDL of the buffer in a parameter block, for the operations whose buffer a minifilter may
/// swap (those [`to_location`] sends down with their MDL); null for the others.
pub fn buffer_mdl(iopb: &FLT_IO_PARAMETER_BLOCK) -> *mut windows_sys::Wdk::Foundation::MDL {
    let p = &iopb.Parameters;
    match iopb.MajorFunction {
        // SAFETY: the union member the major (and minor) function selects.
        mj::READ | mj::WRITE => unsafe { flt::<params::FltRead>(p) }.MdlAddress,
        // SAFETY: as above.
        mj::QUERY_EA => unsafe { flt::<params::FltQueryEa>(p) }.MdlAddress,
        // SAFETY: as above.
        mj::SET_EA => unsafe { p.SetEa }.MdlAddress,
        // SAFETY: as above.
        mj::QUERY_SECURITY => unsafe { flt::<params::FltQuerySecurity>(p) }.MdlAddress,
        // SAFETY: as above.
        mj::QUERY_QUOTA => unsafe { p.QueryQuota }.MdlAddress,
        // SAFETY: as above.
        mj::SET_QUOTA => unsafe { p.SetQuota }.MdlAddress,
        mj::DIRECTORY_CONTROL if iopb.MinorFunction == mn_dir::QUERY_DIRECTORY => {
            // SAFETY: as above.
            unsafe { flt::<params::FltQueryDirectory>(p) }.MdlAddress
        }
        // SAFETY: as above.
        mj::DIRECTORY_CONTROL => unsafe { flt::<params::FltNotifyDirectory>(p) }.MdlAddress,
        _ => std::ptr::null_mut(),
    }
}
