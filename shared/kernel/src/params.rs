//! The parameter members of `IO_STACK_LOCATION.Parameters` and `FLT_PARAMETERS` as the drivers
//! read them.
//!
//! windows-sys 0.61 drops the WDK's `POINTER_ALIGNMENT` (`DECLSPEC_ALIGN(8)` on 64-bit) from
//! every member of these unions and packs some of them to 4 (win32metadata#1828,
//! wdkmetadata#60 and #88, windows-rs#4404): on x64 its `Read.ByteOffset` is at 8 instead of 16,
//! `FileSystemControl.FsControlCode` at 8 instead of 16, `FLT_PARAMETERS.Read.MdlAddress` at 24
//! instead of 32 (where `ReadBuffer` really is), and so on. [`x64`] has the documented layouts
//! (wdm.h and fltkernel.h as Microsoft Learn prints them); the tests pin their offsets.
//!
//! On Windows the accessors answer the [`x64`] layouts. The simulator builds its stack locations
//! and callback data with windows-sys's types, so on any other target they answer those, with the
//! same field names and types: the backends' code is the same on both (docs/simulator.md, "Shape",
//! kernel structures).

#![allow(non_snake_case, reason = "WDK field names, as windows-sys spells them")]

use windows_sys::Wdk::Foundation::IO_STACK_LOCATION_0;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_PARAMETERS;

/// The documented x64 layouts. `_alignN` fields are the padding `POINTER_ALIGNMENT` inserts.
#[allow(missing_docs, reason = "the WDK's fields, documented by the WDK")]
pub mod x64 {
    use core::ffi::c_void;

    use windows_sys::Wdk::Foundation::{IO_SECURITY_CONTEXT, MDL};
    use windows_sys::Wdk::Storage::FileSystem::{FILE_INFORMATION_CLASS, FS_INFORMATION_CLASS};
    use windows_sys::Win32::Foundation::UNICODE_STRING;

    /// `Parameters.Create` of a stack location.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoCreate {
        pub SecurityContext: *mut IO_SECURITY_CONTEXT,
        pub Options: u32,
        _align0: u32,
        pub FileAttributes: u16,
        pub ShareAccess: u16,
        _align1: u32,
        pub EaLength: u32,
    }

    /// `Parameters.Read` and `Parameters.Write` of a stack location.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoReadWrite {
        pub Length: u32,
        _align0: u32,
        pub Key: u32,
        pub Flags: u32,
        pub ByteOffset: i64,
    }

    /// `Parameters.QueryFile` and `Parameters.SetFile` (their common prefix).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoFileInformation {
        pub Length: u32,
        _align0: u32,
        pub FileInformationClass: FILE_INFORMATION_CLASS,
    }

    /// `Parameters.QueryVolume` and `Parameters.SetVolume`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoVolumeInformation {
        pub Length: u32,
        _align0: u32,
        pub FsInformationClass: FS_INFORMATION_CLASS,
    }

    /// `Parameters.QueryDirectory`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoQueryDirectory {
        pub Length: u32,
        pub FileName: *mut UNICODE_STRING,
        pub FileInformationClass: FILE_INFORMATION_CLASS,
        _align0: u32,
        pub FileIndex: u32,
    }

    /// `Parameters.NotifyDirectory`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoNotifyDirectory {
        pub Length: u32,
        _align0: u32,
        pub CompletionFilter: u32,
    }

    /// `Parameters.FileSystemControl`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoFileSystemControl {
        pub OutputBufferLength: u32,
        _align0: u32,
        pub InputBufferLength: u32,
        _align1: u32,
        pub FsControlCode: u32,
        pub Type3InputBuffer: *mut c_void,
    }

    /// `Parameters.DeviceIoControl`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoDeviceIoControl {
        pub OutputBufferLength: u32,
        _align0: u32,
        pub InputBufferLength: u32,
        _align1: u32,
        pub IoControlCode: u32,
        pub Type3InputBuffer: *mut c_void,
    }

    /// `Parameters.LockControl` of a stack location and `FLT_PARAMETERS.LockControl` (whose
    /// further members are not read).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct LockControl {
        pub Length: *mut i64,
        pub Key: u32,
        pub ByteOffset: i64,
    }

    /// `FLT_PARAMETERS.Create`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltCreate {
        pub SecurityContext: *mut IO_SECURITY_CONTEXT,
        pub Options: u32,
        _align0: u32,
        pub FileAttributes: u16,
        pub ShareAccess: u16,
        _align1: u32,
        pub EaLength: u32,
        pub EaBuffer: *mut c_void,
        pub AllocationSize: i64,
    }

    /// `FLT_PARAMETERS.Read`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltRead {
        pub Length: u32,
        _align0: u32,
        pub Key: u32,
        pub ByteOffset: i64,
        pub ReadBuffer: *mut c_void,
        pub MdlAddress: *mut MDL,
    }

    /// `FLT_PARAMETERS.Write`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltWrite {
        pub Length: u32,
        _align0: u32,
        pub Key: u32,
        pub ByteOffset: i64,
        pub WriteBuffer: *mut c_void,
        pub MdlAddress: *mut MDL,
    }

    /// `FLT_PARAMETERS.QueryFileInformation` and `.SetFileInformation` (their common prefix).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltFileInformation {
        pub Length: u32,
        _align0: u32,
        pub FileInformationClass: FILE_INFORMATION_CLASS,
        pub InfoBuffer: *mut c_void,
    }

    /// `FLT_PARAMETERS.QueryVolumeInformation` and `.SetVolumeInformation`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltVolumeInformation {
        pub Length: u32,
        _align0: u32,
        pub FsInformationClass: FS_INFORMATION_CLASS,
        pub VolumeBuffer: *mut c_void,
    }

    /// `FLT_PARAMETERS.DirectoryControl.QueryDirectory`.
    pub type FltQueryDirectory = IoQueryDirectory;

    /// `FLT_PARAMETERS.DirectoryControl.NotifyDirectory`.
    pub type FltNotifyDirectory = IoNotifyDirectory;

    /// `FLT_PARAMETERS.FileSystemControl.Common`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltFileSystemControl {
        pub OutputBufferLength: u32,
        _align0: u32,
        pub InputBufferLength: u32,
        _align1: u32,
        pub FsControlCode: u32,
    }

    /// `FLT_PARAMETERS.DeviceIoControl.Common`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltDeviceIoControl {
        pub OutputBufferLength: u32,
        _align0: u32,
        pub InputBufferLength: u32,
        _align1: u32,
        pub IoControlCode: u32,
    }
}

#[cfg(target_os = "windows")]
pub use x64::{
    FltCreate, FltDeviceIoControl, FltFileInformation, FltFileSystemControl, FltNotifyDirectory,
    FltQueryDirectory, FltRead, FltVolumeInformation, FltWrite, IoCreate, IoDeviceIoControl,
    IoFileInformation, IoFileSystemControl, IoNotifyDirectory, IoQueryDirectory, IoReadWrite,
    IoVolumeInformation, LockControl as IoLockControl, LockControl as FltLockControl,
};

#[cfg(not(target_os = "windows"))]
pub use host::*;

/// The simulator's layouts: windows-sys's own member types.
#[cfg(not(target_os = "windows"))]
#[allow(missing_docs, reason = "the WDK's types, documented by the WDK")]
mod host {
    use windows_sys::Wdk::Foundation as io;
    use windows_sys::Wdk::Storage::FileSystem::Minifilters as flt;

    pub type IoCreate = io::IO_STACK_LOCATION_0_0;
    pub type IoReadWrite = io::IO_STACK_LOCATION_0_3;
    pub type IoFileInformation = io::IO_STACK_LOCATION_0_8;
    pub type IoVolumeInformation = io::IO_STACK_LOCATION_0_12;
    pub type IoQueryDirectory = io::IO_STACK_LOCATION_0_5;
    pub type IoNotifyDirectory = io::IO_STACK_LOCATION_0_6;
    pub type IoFileSystemControl = io::IO_STACK_LOCATION_0_14;
    pub type IoDeviceIoControl = io::IO_STACK_LOCATION_0_16;
    pub type IoLockControl = io::IO_STACK_LOCATION_0_15;
    pub type FltCreate = flt::FLT_PARAMETERS_0;
    pub type FltRead = flt::FLT_PARAMETERS_3;
    pub type FltWrite = flt::FLT_PARAMETERS_4;
    pub type FltFileInformation = flt::FLT_PARAMETERS_5;
    pub type FltVolumeInformation = flt::FLT_PARAMETERS_9;
    pub type FltQueryDirectory = flt::FLT_PARAMETERS_11_0;
    pub type FltNotifyDirectory = flt::FLT_PARAMETERS_11_1;
    pub type FltFileSystemControl = flt::FLT_PARAMETERS_12_1;
    pub type FltDeviceIoControl = flt::FLT_PARAMETERS_13_0;
    pub type FltLockControl = flt::FLT_PARAMETERS_14;
}

/// Views `from` (a parameters union) as `T`, one of its members: every member starts at offset 0.
///
/// # Safety
/// `T` must be the member the operation's major (and minor) function selects.
#[inline(always)]
unsafe fn member<U, T>(from: &U) -> &T {
    const {
        assert!(core::mem::size_of::<T>() <= core::mem::size_of::<U>());
        assert!(core::mem::align_of::<T>() <= core::mem::align_of::<U>());
    };
    // SAFETY: `T` fits in `U` and is no more aligned (checked above); the caller guarantees the
    // bytes are that member's, plain integers and pointers for which any value is valid.
    unsafe { &*core::ptr::from_ref(from).cast::<T>() }
}

/// A member of `IO_STACK_LOCATION.Parameters`: `io::<IoReadWrite>(&sl.Parameters)`.
///
/// # Safety
/// `T` must be one of this module's `Io*` types, the one the operation selects.
#[inline(always)]
pub unsafe fn io<T>(parameters: &IO_STACK_LOCATION_0) -> &T {
    // SAFETY: forwarded.
    unsafe { member(parameters) }
}

/// A member of `FLT_PARAMETERS`: `flt::<FltRead>(&iopb.Parameters)`.
///
/// # Safety
/// `T` must be one of this module's `Flt*` types, the one the operation selects.
#[inline(always)]
pub unsafe fn flt<T>(parameters: &FLT_PARAMETERS) -> &T {
    // SAFETY: forwarded.
    unsafe { member(parameters) }
}

#[cfg(test)]
mod tests {
    use super::x64::*;
    use core::mem::{offset_of, size_of};
    use windows_sys::Wdk::Foundation::IO_STACK_LOCATION_0;
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_PARAMETERS;

    /// wdm.h, `IO_STACK_LOCATION.Parameters`, with `POINTER_ALIGNMENT` = 8 (x64).
    #[test]
    fn stack_location_members_have_the_documented_x64_offsets() {
        assert_eq!(size_of::<IO_STACK_LOCATION_0>(), 32);
        let create = [
            offset_of!(IoCreate, SecurityContext),
            offset_of!(IoCreate, Options),
            offset_of!(IoCreate, FileAttributes),
            offset_of!(IoCreate, ShareAccess),
            offset_of!(IoCreate, EaLength),
        ];
        assert_eq!(create, [0, 8, 16, 18, 24]);
        let rw = [
            offset_of!(IoReadWrite, Length),
            offset_of!(IoReadWrite, Key),
            offset_of!(IoReadWrite, Flags),
            offset_of!(IoReadWrite, ByteOffset),
        ];
        assert_eq!(rw, [0, 8, 12, 16]);
        assert_eq!(offset_of!(IoFileInformation, FileInformationClass), 8);
        assert_eq!(offset_of!(IoVolumeInformation, FsInformationClass), 8);
        let dir = [
            offset_of!(IoQueryDirectory, FileName),
            offset_of!(IoQueryDirectory, FileInformationClass),
            offset_of!(IoQueryDirectory, FileIndex),
        ];
        assert_eq!(dir, [8, 16, 24]);
        assert_eq!(offset_of!(IoNotifyDirectory, CompletionFilter), 8);
        let fsctl = [
            offset_of!(IoFileSystemControl, InputBufferLength),
            offset_of!(IoFileSystemControl, FsControlCode),
            offset_of!(IoFileSystemControl, Type3InputBuffer),
        ];
        assert_eq!(fsctl, [8, 16, 24]);
        let ioctl = [
            offset_of!(IoDeviceIoControl, InputBufferLength),
            offset_of!(IoDeviceIoControl, IoControlCode),
            offset_of!(IoDeviceIoControl, Type3InputBuffer),
        ];
        assert_eq!(ioctl, [8, 16, 24]);
        assert_eq!([offset_of!(LockControl, Key), offset_of!(LockControl, ByteOffset)], [8, 16]);
        for size in [
            size_of::<IoCreate>(),
            size_of::<IoReadWrite>(),
            size_of::<IoQueryDirectory>(),
            size_of::<IoFileSystemControl>(),
            size_of::<IoDeviceIoControl>(),
        ] {
            assert!(size <= 32);
        }
    }

    /// fltkernel.h, `FLT_PARAMETERS`, with `POINTER_ALIGNMENT` = 8 (x64).
    #[test]
    fn callback_data_members_have_the_documented_x64_offsets() {
        assert_eq!(size_of::<FLT_PARAMETERS>(), 48);
        let create = [
            offset_of!(FltCreate, Options),
            offset_of!(FltCreate, FileAttributes),
            offset_of!(FltCreate, ShareAccess),
            offset_of!(FltCreate, EaLength),
            offset_of!(FltCreate, EaBuffer),
            offset_of!(FltCreate, AllocationSize),
        ];
        assert_eq!(create, [8, 16, 18, 24, 32, 40]);
        assert_eq!(size_of::<FltCreate>(), 48);
        let read = [
            offset_of!(FltRead, Key),
            offset_of!(FltRead, ByteOffset),
            offset_of!(FltRead, ReadBuffer),
            offset_of!(FltRead, MdlAddress),
        ];
        assert_eq!(read, [8, 16, 24, 32]);
        let write = [
            offset_of!(FltWrite, Key),
            offset_of!(FltWrite, ByteOffset),
            offset_of!(FltWrite, WriteBuffer),
            offset_of!(FltWrite, MdlAddress),
        ];
        assert_eq!(write, [8, 16, 24, 32]);
        let info = [
            offset_of!(FltFileInformation, FileInformationClass),
            offset_of!(FltFileInformation, InfoBuffer),
        ];
        assert_eq!(info, [8, 16]);
        let volume = [
            offset_of!(FltVolumeInformation, FsInformationClass),
            offset_of!(FltVolumeInformation, VolumeBuffer),
        ];
        assert_eq!(volume, [8, 16]);
        let fsctl = [
            offset_of!(FltFileSystemControl, InputBufferLength),
            offset_of!(FltFileSystemControl, FsControlCode),
        ];
        assert_eq!(fsctl, [8, 16]);
        let ioctl = [
            offset_of!(FltDeviceIoControl, InputBufferLength),
            offset_of!(FltDeviceIoControl, IoControlCode),
        ];
        assert_eq!(ioctl, [8, 16]);
    }

    /// The structures around the unions, which windows-sys lays out as the x64 kernel does
    /// (fltkernel.h, wdm.h and the kernel's public symbols): each checked so that the parameter
    /// members are the only layout the backends correct.
    #[test]
    fn surrounding_structures_have_the_x64_layout() {
        use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT, MDL};
        use windows_sys::Wdk::Storage::FileSystem::Minifilters as m;
        let cbd = [
            offset_of!(m::FLT_CALLBACK_DATA, Iopb),
            offset_of!(m::FLT_CALLBACK_DATA, IoStatus),
            offset_of!(m::FLT_CALLBACK_DATA, RequestorMode),
            size_of::<m::FLT_CALLBACK_DATA>(),
        ];
        assert_eq!(cbd, [0x10, 0x18, 0x50, 0x58]);
        let iopb = [
            offset_of!(m::FLT_IO_PARAMETER_BLOCK, MajorFunction),
            offset_of!(m::FLT_IO_PARAMETER_BLOCK, TargetFileObject),
            offset_of!(m::FLT_IO_PARAMETER_BLOCK, Parameters),
        ];
        assert_eq!(iopb, [4, 8, 0x18]);
        let sizes = [
            size_of::<m::FLT_REGISTRATION>(),
            size_of::<m::FLT_OPERATION_REGISTRATION>(),
            size_of::<m::FLT_CONTEXT_REGISTRATION>(),
            size_of::<m::FLT_RELATED_OBJECTS>(),
            size_of::<FAST_IO_DISPATCH>(),
        ];
        assert_eq!(sizes, [0x70, 0x20, 0x38, 0x30, 8 + 27 * 8]);
        let driver =
            [offset_of!(DRIVER_OBJECT, FastIoDispatch), offset_of!(DRIVER_OBJECT, MajorFunction)];
        assert_eq!(driver, [0x50, 0x70]);
        let file = [
            offset_of!(FILE_OBJECT, FsContext),
            offset_of!(FILE_OBJECT, Flags),
            offset_of!(FILE_OBJECT, FileName),
        ];
        assert_eq!(file, [0x18, 0x50, 0x58]);
        assert_eq!([offset_of!(MDL, MdlFlags), offset_of!(MDL, MappedSystemVa)], [0xA, 0x18]);
    }

    /// Why this module exists: windows-sys 0.61's members disagree with the documented layout.
    /// When this fails, windows-sys has been fixed: the accessors can answer its types on every
    /// target and the simulator's layout becomes the real one.
    #[test]
    fn windows_sys_still_misplaces_the_pointer_aligned_members() {
        use windows_sys::Wdk::Foundation as io;
        use windows_sys::Wdk::Storage::FileSystem::Minifilters as flt;
        assert_eq!(offset_of!(io::IO_STACK_LOCATION_0_3, ByteOffset), 8);
        assert_eq!(offset_of!(io::IO_STACK_LOCATION_0_14, FsControlCode), 8);
        assert_eq!(offset_of!(io::IO_STACK_LOCATION_0_0, FileAttributes), 12);
        assert_eq!(offset_of!(flt::FLT_PARAMETERS_3, MdlAddress), 24);
        assert_eq!(offset_of!(flt::FLT_PARAMETERS_0, AllocationSize), 28);
    }

    /// The accessor answers the member's bytes at offset 0 of the union.
    #[test]
    fn accessors_view_the_union_in_place() {
        // SAFETY: all-zero is a valid value of the union (integers and pointers).
        let mut p: IO_STACK_LOCATION_0 = unsafe { core::mem::zeroed() };
        // SAFETY: writing plain integers into the union's bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(
                (&raw mut p).cast::<u8>(),
                size_of::<IO_STACK_LOCATION_0>(),
            )
        };
        bytes[16..24].copy_from_slice(&0x1234_5678_9abc_i64.to_le_bytes());
        bytes[0..4].copy_from_slice(&512u32.to_le_bytes());
        // SAFETY: the read/write member of a union holding integers.
        let rw = unsafe { super::member::<_, IoReadWrite>(&p) };
        assert_eq!((rw.Length, rw.ByteOffset), (512, 0x1234_5678_9abc));
    }
}
