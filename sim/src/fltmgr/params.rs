//! `FLT_IO_PARAMETER_BLOCK` from an IRP's stack location, field by field (the two unions do not
//! share a layout), with the buffers the Filter Manager adds (`ReadBuffer`, `MdlAddress`,
//! `InfoBuffer`, ...); and back into the next stack location when a filter made the callback
//! data dirty (`FltSetCallbackDataDirty`).

use windows_sys::Wdk::Foundation::{IO_STACK_LOCATION, IRP};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK, FLT_PARAMETERS, FLT_RELATED_OBJECTS,
};

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
/// callback-data flags the buffers imply (`SYSTEM_BUFFER`).
pub fn from_location(p: &mut FLT_PARAMETERS, irp: &IRP, s: &IO_STACK_LOCATION) -> u32 {
    // SAFETY: the union's pointer member is the one buffered requests use.
    let system = unsafe { irp.AssociatedIrp.SystemBuffer };
    let buffered = irp.Flags & irp_flags::BUFFERED_IO != 0;
    let mut flags = 0;
    let q = &s.Parameters;
    match s.MajorFunction {
        mj::CREATE => {
            // SAFETY: the union member the major (and minor) function selects.
            let c = unsafe { q.Create };
            p.Create.SecurityContext = c.SecurityContext;
            p.Create.Options = c.Options;
            p.Create.FileAttributes = c.FileAttributes;
            p.Create.ShareAccess = c.ShareAccess;
            p.Create.EaLength = c.EaLength;
            p.Create.EaBuffer = system;
            p.Create.AllocationSize = 0;
        }
        mj::READ | mj::WRITE => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { q.Read };
            p.Read.Length = r.Length;
            p.Read.Key = r.Key;
            p.Read.ByteOffset = r.ByteOffset;
            p.Read.ReadBuffer = if buffered { system } else { irp.UserBuffer };
            p.Read.MdlAddress = irp.MdlAddress;
            if buffered {
                flags |= SYSTEM_BUFFER;
            }
        }
        mj::QUERY_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { q.QueryFile };
            p.QueryFileInformation.Length = r.Length;
            p.QueryFileInformation.FileInformationClass = r.FileInformationClass;
            p.QueryFileInformation.InfoBuffer = system;
            flags |= SYSTEM_BUFFER;
        }
        mj::SET_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { q.SetFile };
            p.SetFileInformation.Length = r.Length;
            p.SetFileInformation.FileInformationClass = r.FileInformationClass;
            p.SetFileInformation.ParentOfTarget = r.FileObject;
            // SAFETY: the union member the major (and minor) function selects.
            p.SetFileInformation.Anonymous.DeleteHandle = unsafe { r.Anonymous.DeleteHandle };
            p.SetFileInformation.InfoBuffer = system;
            flags |= SYSTEM_BUFFER;
        }
        mj::QUERY_VOLUME_INFORMATION | mj::SET_VOLUME_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { q.QueryVolume };
            p.QueryVolumeInformation.Length = r.Length;
            p.QueryVolumeInformation.FsInformationClass = r.FsInformationClass;
            p.QueryVolumeInformation.VolumeBuffer = system;
            flags |= SYSTEM_BUFFER;
        }
        mj::QUERY_EA => {
            // SAFETY: the union member the major (and minor) function selects.
            let e = unsafe { q.QueryEa };
            p.QueryEa.Length = e.Length;
            p.QueryEa.EaList = e.EaList;
            p.QueryEa.EaListLength = e.EaListLength;
            p.QueryEa.EaIndex = e.EaIndex;
            p.QueryEa.EaBuffer = caller_buffer(irp, &mut flags);
            p.QueryEa.MdlAddress = irp.MdlAddress;
        }
        mj::SET_EA => {
            // SAFETY: the union member the major (and minor) function selects.
            p.SetEa.Length = unsafe { q.SetEa }.Length;
            p.SetEa.EaBuffer = caller_buffer(irp, &mut flags);
            p.SetEa.MdlAddress = irp.MdlAddress;
        }
        mj::QUERY_SECURITY => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { q.QuerySecurity };
            p.QuerySecurity.SecurityInformation = r.SecurityInformation;
            p.QuerySecurity.Length = r.Length;
            p.QuerySecurity.SecurityBuffer = caller_buffer(irp, &mut flags);
            p.QuerySecurity.MdlAddress = irp.MdlAddress;
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
            let d = unsafe { q.QueryDirectory };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut p.DirectoryControl.QueryDirectory };
            t.Length = d.Length;
            t.FileName = d.FileName;
            t.FileInformationClass = d.FileInformationClass;
            t.FileIndex = d.FileIndex;
            t.DirectoryBuffer = irp.UserBuffer;
            t.MdlAddress = irp.MdlAddress;
        }
        mj::DIRECTORY_CONTROL => {
            // SAFETY: the union member the major (and minor) function selects.
            let d = unsafe { q.NotifyDirectory };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut p.DirectoryControl.NotifyDirectory };
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
            let c = unsafe { q.DeviceIoControl };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut p.DeviceIoControl };
            t.Common.OutputBufferLength = c.OutputBufferLength;
            t.Common.InputBufferLength = c.InputBufferLength;
            t.Common.IoControlCode = c.IoControlCode;
            match method(c.IoControlCode) {
                0 => {
                    t.Buffered.SystemBuffer = system;
                    flags |= SYSTEM_BUFFER;
                }
                3 => {
                    t.Neither.InputBuffer = c.Type3InputBuffer;
                    t.Neither.OutputBuffer = irp.UserBuffer;
                    t.Neither.OutputMdlAddress = irp.MdlAddress;
                }
                _ => {
                    t.Direct.InputSystemBuffer = system;
                    t.Direct.OutputBuffer = irp.UserBuffer;
                    t.Direct.OutputMdlAddress = irp.MdlAddress;
                }
            }
        }
        mj::LOCK_CONTROL => {
            // SAFETY: the union member the major (and minor) function selects.
            let l = unsafe { q.LockControl };
            p.LockControl.Length = l.Length;
            p.LockControl.Key = l.Key;
            p.LockControl.ByteOffset = l.ByteOffset;
            p.LockControl.ProcessId = 0;
            p.LockControl.FailImmediately = s.Flags & sl::FAIL_IMMEDIATELY != 0;
            p.LockControl.ExclusiveLock = s.Flags & sl::EXCLUSIVE_LOCK != 0;
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
            let c = unsafe { p.Create };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.Create };
            t.SecurityContext = c.SecurityContext;
            t.Options = c.Options;
            t.FileAttributes = c.FileAttributes;
            t.ShareAccess = c.ShareAccess;
            t.EaLength = c.EaLength;
        }
        mj::READ | mj::WRITE => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { p.Read };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.Read };
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
            let r = unsafe { p.QueryFileInformation };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.QueryFile };
            t.Length = r.Length;
            t.FileInformationClass = r.FileInformationClass;
        }
        mj::SET_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { p.SetFileInformation };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.SetFile };
            t.Length = r.Length;
            t.FileInformationClass = r.FileInformationClass;
            t.FileObject = r.ParentOfTarget;
        }
        mj::QUERY_VOLUME_INFORMATION | mj::SET_VOLUME_INFORMATION => {
            // SAFETY: the union member the major (and minor) function selects.
            let r = unsafe { p.QueryVolumeInformation };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.QueryVolume };
            t.Length = r.Length;
            t.FsInformationClass = r.FsInformationClass;
        }
        mj::QUERY_EA => {
            // SAFETY: the union member the major (and minor) function selects.
            let e = unsafe { p.QueryEa };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.QueryEa };
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
            let r = unsafe { p.QuerySecurity };
            q.QuerySecurity.SecurityInformation = r.SecurityInformation;
            q.QuerySecurity.Length = r.Length;
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
            let d = unsafe { p.DirectoryControl.QueryDirectory };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.QueryDirectory };
            t.Length = d.Length;
            t.FileName = d.FileName;
            t.FileInformationClass = d.FileInformationClass;
            t.FileIndex = d.FileIndex;
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
            let c = unsafe { p.DeviceIoControl.Common };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.DeviceIoControl };
            t.OutputBufferLength = c.OutputBufferLength;
            t.InputBufferLength = c.InputBufferLength;
            t.IoControlCode = c.IoControlCode;
        }
        mj::LOCK_CONTROL => {
            // SAFETY: the union member the major (and minor) function selects.
            let l = unsafe { p.LockControl };
            // SAFETY: the union member the major (and minor) function selects.
            let t = unsafe { &mut q.LockControl };
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
