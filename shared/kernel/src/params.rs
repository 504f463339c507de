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
//! The accessors answer the [`x64`] layouts on every target: the drivers read them on Windows,
//! and the simulator writes and reads them (through [`io_mut`] and [`flt_mut`]) when it builds
//! stack locations and callback data, so the backends' code and layouts are the same on both
//! (docs/simulator.md, "Shape", kernel structures). windows-sys's own members are used only
//! where their offsets are the documented ones (pointer-first members such as `MountVolume`).

#![allow(non_snake_case, reason = "WDK field names, as windows-sys spells them")]

use windows_sys::Wdk::Foundation::IO_STACK_LOCATION_0;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_PARAMETERS;

/// The documented x64 layouts. `_alignN` fields are the padding `POINTER_ALIGNMENT` inserts.
#[allow(missing_docs, reason = "the WDK's fields, documented by the WDK")]
pub mod x64 {
    use core::ffi::c_void;

    use windows_sys::Wdk::Foundation::{
        FILE_OBJECT, IO_SECURITY_CONTEXT, IO_STACK_LOCATION_0_9_0, MDL, PEPROCESS,
    };
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_PARAMETERS_6_0;
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

    /// `Parameters.SetFile`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoSetFile {
        pub Length: u32,
        _align0: u32,
        pub FileInformationClass: FILE_INFORMATION_CLASS,
        pub FileObject: *mut FILE_OBJECT,
        pub Anonymous: IO_STACK_LOCATION_0_9_0,
    }

    /// `Parameters.QueryEa`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoQueryEa {
        pub Length: u32,
        pub EaList: *mut c_void,
        pub EaListLength: u32,
        _align0: u32,
        pub EaIndex: u32,
    }

    /// `Parameters.QuerySecurity`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoQuerySecurity {
        pub SecurityInformation: u32,
        _align0: u32,
        pub Length: u32,
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

    /// `Parameters.LockControl` of a stack location.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct IoLockControl {
        pub Length: *mut i64,
        pub Key: u32,
        pub ByteOffset: i64,
    }

    /// `FLT_PARAMETERS.LockControl`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltLockControl {
        pub Length: *mut i64,
        pub Key: u32,
        pub ByteOffset: i64,
        pub ProcessId: PEPROCESS,
        pub FailImmediately: bool,
        pub ExclusiveLock: bool,
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

    /// `FLT_PARAMETERS.SetFileInformation`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltSetFile {
        pub Length: u32,
        _align0: u32,
        pub FileInformationClass: FILE_INFORMATION_CLASS,
        pub ParentOfTarget: *mut FILE_OBJECT,
        pub Anonymous: FLT_PARAMETERS_6_0,
        pub InfoBuffer: *mut c_void,
    }

    /// `FLT_PARAMETERS.QueryEa`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltQueryEa {
        pub Length: u32,
        pub EaList: *mut c_void,
        pub EaListLength: u32,
        _align0: u32,
        pub EaIndex: u32,
        pub EaBuffer: *mut c_void,
        pub MdlAddress: *mut MDL,
    }

    /// `FLT_PARAMETERS.QuerySecurity`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltQuerySecurity {
        pub SecurityInformation: u32,
        _align0: u32,
        pub Length: u32,
        pub SecurityBuffer: *mut c_void,
        pub MdlAddress: *mut MDL,
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
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltQueryDirectory {
        pub Length: u32,
        pub FileName: *mut UNICODE_STRING,
        pub FileInformationClass: FILE_INFORMATION_CLASS,
        _align0: u32,
        pub FileIndex: u32,
        pub DirectoryBuffer: *mut c_void,
        pub MdlAddress: *mut MDL,
    }

    /// `FLT_PARAMETERS.DirectoryControl.NotifyDirectory`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltNotifyDirectory {
        pub Length: u32,
        _align0: u32,
        pub CompletionFilter: u32,
        _align1: u32,
        pub Spare1: u32,
        _align2: u32,
        pub Spare2: u32,
        pub DirectoryBuffer: *mut c_void,
        pub MdlAddress: *mut MDL,
    }

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

    /// `FLT_PARAMETERS.DeviceIoControl` and `.FileSystemControl` with their buffers (the
    /// members share this layout): `Buffer` is `Buffered.SystemBuffer`,
    /// `Direct.InputSystemBuffer` or `Neither.InputBuffer` by the code's method; `OutputBuffer`
    /// and `OutputMdlAddress` are `Direct`'s and `Neither`'s.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltControlBuffers {
        pub OutputBufferLength: u32,
        _align0: u32,
        pub InputBufferLength: u32,
        _align1: u32,
        pub IoControlCode: u32,
        pub Buffer: *mut c_void,
        pub OutputBuffer: *mut c_void,
        pub OutputMdlAddress: *mut MDL,
    }

    /// `FLT_PARAMETERS.FastIoCheckIfPossible`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FltFastIoCheckIfPossible {
        pub FileOffset: i64,
        pub Length: u32,
        _align0: u32,
        pub LockKey: u32,
        _align1: u32,
        pub CheckForReadOperation: bool,
    }
}

pub use x64::*;

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

/// Views `from` (a parameters union) as `T`, one of its members, for writing.
///
/// # Safety
/// `T` must be the member the operation's major (and minor) function selects.
#[inline(always)]
unsafe fn member_mut<U, T>(from: &mut U) -> &mut T {
    const {
        assert!(core::mem::size_of::<T>() <= core::mem::size_of::<U>());
        assert!(core::mem::align_of::<T>() <= core::mem::align_of::<U>());
    };
    // SAFETY: `T` fits in `U` and is no more aligned (checked above); the caller guarantees the
    // bytes are that member's, plain integers, booleans and pointers written as such.
    unsafe { &mut *core::ptr::from_mut(from).cast::<T>() }
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

/// A member of `IO_STACK_LOCATION.Parameters` to write: `io_mut::<IoReadWrite>(&mut
/// sl.Parameters).ByteOffset = 0`.
///
/// # Safety
/// `T` must be one of this module's `Io*` types, the one the operation selects.
#[inline(always)]
pub unsafe fn io_mut<T>(parameters: &mut IO_STACK_LOCATION_0) -> &mut T {
    // SAFETY: forwarded.
    unsafe { member_mut(parameters) }
}

/// A member of `FLT_PARAMETERS` to write: `flt_mut::<FltRead>(&mut iopb.Parameters)`.
///
/// # Safety
/// `T` must be one of this module's `Flt*` types, the one the operation selects.
#[inline(always)]
pub unsafe fn flt_mut<T>(parameters: &mut FLT_PARAMETERS) -> &mut T {
    // SAFETY: forwarded.
    unsafe { member_mut(parameters) }
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
        assert_eq!(
            [offset_of!(IoLockControl, Key), offset_of!(IoLockControl, ByteOffset)],
            [8, 16]
        );
        let set = [
            offset_of!(IoSetFile, FileInformationClass),
            offset_of!(IoSetFile, FileObject),
            offset_of!(IoSetFile, Anonymous),
        ];
        assert_eq!(set, [8, 16, 24]);
        let ea = [
            offset_of!(IoQueryEa, EaList),
            offset_of!(IoQueryEa, EaListLength),
            offset_of!(IoQueryEa, EaIndex),
        ];
        assert_eq!(ea, [8, 16, 24]);
        assert_eq!(offset_of!(IoQuerySecurity, Length), 8);
        for size in [
            size_of::<IoCreate>(),
            size_of::<IoReadWrite>(),
            size_of::<IoQueryDirectory>(),
            size_of::<IoFileSystemControl>(),
            size_of::<IoDeviceIoControl>(),
            size_of::<IoSetFile>(),
            size_of::<IoQueryEa>(),
            size_of::<IoLockControl>(),
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
        let set = [
            offset_of!(FltSetFile, FileInformationClass),
            offset_of!(FltSetFile, ParentOfTarget),
            offset_of!(FltSetFile, Anonymous),
            offset_of!(FltSetFile, InfoBuffer),
        ];
        assert_eq!(set, [8, 16, 24, 32]);
        let ea = [
            offset_of!(FltQueryEa, EaList),
            offset_of!(FltQueryEa, EaListLength),
            offset_of!(FltQueryEa, EaIndex),
            offset_of!(FltQueryEa, EaBuffer),
            offset_of!(FltQueryEa, MdlAddress),
        ];
        assert_eq!(ea, [8, 16, 24, 32, 40]);
        let security = [
            offset_of!(FltQuerySecurity, Length),
            offset_of!(FltQuerySecurity, SecurityBuffer),
            offset_of!(FltQuerySecurity, MdlAddress),
        ];
        assert_eq!(security, [8, 16, 24]);
        let query = [
            offset_of!(FltQueryDirectory, FileName),
            offset_of!(FltQueryDirectory, FileInformationClass),
            offset_of!(FltQueryDirectory, FileIndex),
            offset_of!(FltQueryDirectory, DirectoryBuffer),
            offset_of!(FltQueryDirectory, MdlAddress),
        ];
        assert_eq!(query, [8, 16, 24, 32, 40]);
        let notify = [
            offset_of!(FltNotifyDirectory, CompletionFilter),
            offset_of!(FltNotifyDirectory, Spare1),
            offset_of!(FltNotifyDirectory, Spare2),
            offset_of!(FltNotifyDirectory, DirectoryBuffer),
            offset_of!(FltNotifyDirectory, MdlAddress),
        ];
        assert_eq!(notify, [8, 16, 24, 32, 40]);
        let control = [
            offset_of!(FltControlBuffers, InputBufferLength),
            offset_of!(FltControlBuffers, IoControlCode),
            offset_of!(FltControlBuffers, Buffer),
            offset_of!(FltControlBuffers, OutputBuffer),
            offset_of!(FltControlBuffers, OutputMdlAddress),
        ];
        assert_eq!(control, [8, 16, 24, 32, 40]);
        let lock = [
            offset_of!(FltLockControl, Key),
            offset_of!(FltLockControl, ByteOffset),
            offset_of!(FltLockControl, ProcessId),
            offset_of!(FltLockControl, FailImmediately),
            offset_of!(FltLockControl, ExclusiveLock),
        ];
        assert_eq!(lock, [8, 16, 24, 32, 33]);
        let check = [
            offset_of!(FltFastIoCheckIfPossible, Length),
            offset_of!(FltFastIoCheckIfPossible, LockKey),
            offset_of!(FltFastIoCheckIfPossible, CheckForReadOperation),
        ];
        assert_eq!(check, [8, 16, 24]);
        for size in [
            size_of::<FltSetFile>(),
            size_of::<FltQueryEa>(),
            size_of::<FltQueryDirectory>(),
            size_of::<FltNotifyDirectory>(),
            size_of::<FltControlBuffers>(),
            size_of::<FltLockControl>(),
        ] {
            assert!(size <= 48);
        }
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
    /// When this fails, windows-sys has been fixed and its members could replace [`x64`]'s.
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
