//! NT constants the simulated I/O manager and file systems use, with the widths the structures
//! have (`UCHAR` majors, `ULONG` options). Values are the WDK headers' (facts.md §7 where listed).

#![allow(missing_docs, reason = "WDK names; each is the header's constant of the same name")]

/// `IRP_MJ_*`.
pub mod mj {
    pub const CREATE: u8 = 0x00;
    pub const CLOSE: u8 = 0x02;
    pub const READ: u8 = 0x03;
    pub const WRITE: u8 = 0x04;
    pub const QUERY_INFORMATION: u8 = 0x05;
    pub const SET_INFORMATION: u8 = 0x06;
    pub const QUERY_EA: u8 = 0x07;
    pub const SET_EA: u8 = 0x08;
    pub const FLUSH_BUFFERS: u8 = 0x09;
    pub const QUERY_VOLUME_INFORMATION: u8 = 0x0a;
    pub const SET_VOLUME_INFORMATION: u8 = 0x0b;
    pub const DIRECTORY_CONTROL: u8 = 0x0c;
    pub const FILE_SYSTEM_CONTROL: u8 = 0x0d;
    pub const DEVICE_CONTROL: u8 = 0x0e;
    pub const INTERNAL_DEVICE_CONTROL: u8 = 0x0f;
    pub const SHUTDOWN: u8 = 0x10;
    pub const LOCK_CONTROL: u8 = 0x11;
    pub const CLEANUP: u8 = 0x12;
    pub const QUERY_SECURITY: u8 = 0x14;
    pub const SET_SECURITY: u8 = 0x15;
    pub const QUERY_QUOTA: u8 = 0x19;
    pub const SET_QUOTA: u8 = 0x1a;
    pub const PNP: u8 = 0x1b;
}

/// `IRP_MN_*` for `IRP_MJ_FILE_SYSTEM_CONTROL` (facts.md §7).
pub mod mn_fsctl {
    pub const USER_FS_REQUEST: u8 = 0x00;
    pub const MOUNT_VOLUME: u8 = 0x01;
    pub const VERIFY_VOLUME: u8 = 0x02;
    pub const LOAD_FILE_SYSTEM: u8 = 0x03;
    pub const KERNEL_CALL: u8 = 0x04;
}

/// `IRP_MN_*` for `IRP_MJ_DIRECTORY_CONTROL`.
pub mod mn_dir {
    pub const QUERY_DIRECTORY: u8 = 0x01;
    pub const NOTIFY_CHANGE_DIRECTORY: u8 = 0x02;
}

/// `IRP_MN_*` for `IRP_MJ_LOCK_CONTROL`.
pub mod mn_lock {
    pub const LOCK: u8 = 0x01;
    pub const UNLOCK_SINGLE: u8 = 0x02;
    pub const UNLOCK_ALL: u8 = 0x03;
    pub const UNLOCK_ALL_BY_KEY: u8 = 0x04;
}

/// `IRP_MN_*` for `IRP_MJ_PNP` (the removal of a device; wdm.h).
pub mod mn_pnp {
    pub const QUERY_REMOVE_DEVICE: u8 = 0x01;
    pub const REMOVE_DEVICE: u8 = 0x02;
    pub const CANCEL_REMOVE_DEVICE: u8 = 0x03;
    pub const SURPRISE_REMOVAL: u8 = 0x17;
}

/// Stack-location `Flags`.
pub mod sl {
    /// `SL_ALLOW_RAW_MOUNT` (mount requests).
    pub const ALLOW_RAW_MOUNT: u8 = 0x01;
    /// `SL_RESTART_SCAN` (directory queries).
    pub const RESTART_SCAN: u8 = 0x01;
    /// `SL_RETURN_SINGLE_ENTRY`.
    pub const RETURN_SINGLE_ENTRY: u8 = 0x02;
    /// `SL_INDEX_SPECIFIED`.
    pub const INDEX_SPECIFIED: u8 = 0x04;
    /// `SL_FAIL_IMMEDIATELY` (lock requests).
    pub const FAIL_IMMEDIATELY: u8 = 0x01;
    /// `SL_EXCLUSIVE_LOCK`.
    pub const EXCLUSIVE_LOCK: u8 = 0x02;
    /// `SL_READ_ACCESS_GRANTED` (file-system and device controls).
    pub const READ_ACCESS_GRANTED: u8 = 0x01;
    /// `SL_WRITE_ACCESS_GRANTED` (file-system and device controls).
    pub const WRITE_ACCESS_GRANTED: u8 = 0x04;
}

/// `IRP_*` flags (facts.md §7).
pub mod irp_flags {
    pub const NOCACHE: u32 = 0x1;
    pub const PAGING_IO: u32 = 0x2;
    pub const MOUNT_COMPLETION: u32 = 0x2;
    pub const SYNCHRONOUS_API: u32 = 0x4;
    pub const BUFFERED_IO: u32 = 0x10;
    pub const DEALLOCATE_BUFFER: u32 = 0x20;
    pub const INPUT_OPERATION: u32 = 0x40;
    pub const SYNCHRONOUS_PAGING_IO: u32 = 0x40;
    pub const CREATE_OPERATION: u32 = 0x80;
    pub const READ_OPERATION: u32 = 0x100;
    pub const WRITE_OPERATION: u32 = 0x200;
    pub const CLOSE_OPERATION: u32 = 0x400;
    pub const DEFER_IO_COMPLETION: u32 = 0x800;
}

/// `FO_*` file-object flags.
pub mod fo {
    pub const FILE_OPEN: u32 = 0x1;
    pub const SYNCHRONOUS_IO: u32 = 0x2;
    pub const NO_INTERMEDIATE_BUFFERING: u32 = 0x8;
    pub const CACHE_SUPPORTED: u32 = 0x40;
    pub const NAMED_PIPE: u32 = 0x80;
    pub const MAILSLOT: u32 = 0x200;
    pub const FILE_MODIFIED: u32 = 0x1000;
    pub const FILE_SIZE_CHANGED: u32 = 0x2000;
    pub const CLEANUP_COMPLETE: u32 = 0x4000;
    pub const HANDLE_CREATED: u32 = 0x40000;
    pub const FILE_OPEN_CANCELLED: u32 = 0x20_0000;
    pub const VOLUME_OPEN: u32 = 0x40_0000;
    pub const ALERTABLE_IO: u32 = 0x4;
    pub const WRITE_THROUGH: u32 = 0x10;
    pub const SEQUENTIAL_ONLY: u32 = 0x20;
    pub const DELETE_ON_CLOSE: u32 = 0x1_0000;
    pub const RANDOM_ACCESS: u32 = 0x10_0000;
}

/// `DO_*` device-object flags.
pub mod do_flags {
    pub const VERIFY_VOLUME: u32 = 0x2;
    pub const BUFFERED_IO: u32 = 0x4;
    pub const DIRECT_IO: u32 = 0x10;
    pub const DEVICE_INITIALIZING: u32 = 0x80;
    pub const LONG_TERM_REQUESTS: u32 = 0x200;
    pub const LOW_PRIORITY_FILESYSTEM: u32 = 0x1_0000;
}

/// Device characteristics.
pub mod characteristics {
    pub const REMOVABLE_MEDIA: u32 = 0x1;
    pub const READ_ONLY_DEVICE: u32 = 0x2;
    pub const REMOTE_DEVICE: u32 = 0x10;
    pub const DEVICE_IS_MOUNTED: u32 = 0x20;
}

/// `VPB_*` flags.
pub mod vpb {
    pub const MOUNTED: u16 = 0x1;
    pub const LOCKED: u16 = 0x2;
    pub const RAW_MOUNT: u16 = 0x10;
}

/// `MDL_*` flags.
pub mod mdl {
    pub const MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
    pub const PAGES_LOCKED: i16 = 0x0002;
    pub const SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;
}

/// Create dispositions (`Options >> 24`).
pub mod disposition {
    pub const SUPERSEDE: u32 = 0;
    pub const OPEN: u32 = 1;
    pub const CREATE: u32 = 2;
    pub const OPEN_IF: u32 = 3;
    pub const OVERWRITE: u32 = 4;
    pub const OVERWRITE_IF: u32 = 5;
}

/// Create results (`IoStatus.Information` of a create).
pub mod create_result {
    pub const SUPERSEDED: usize = 0;
    pub const OPENED: usize = 1;
    pub const CREATED: usize = 2;
    pub const OVERWRITTEN: usize = 3;
}

/// Create options (`Options & 0xFFFFFF`).
pub mod create_options {
    pub const DIRECTORY_FILE: u32 = 0x1;
    pub const WRITE_THROUGH: u32 = 0x2;
    pub const SEQUENTIAL_ONLY: u32 = 0x4;
    pub const NO_INTERMEDIATE_BUFFERING: u32 = 0x8;
    pub const SYNCHRONOUS_IO_ALERT: u32 = 0x10;
    pub const SYNCHRONOUS_IO_NONALERT: u32 = 0x20;
    pub const NON_DIRECTORY_FILE: u32 = 0x40;
    pub const RANDOM_ACCESS: u32 = 0x800;
    pub const DELETE_ON_CLOSE: u32 = 0x1000;
}

/// Access rights.
pub mod access {
    pub const FILE_READ_DATA: u32 = 0x1;
    pub const FILE_LIST_DIRECTORY: u32 = 0x1;
    pub const FILE_WRITE_DATA: u32 = 0x2;
    pub const FILE_ADD_FILE: u32 = 0x2;
    pub const FILE_APPEND_DATA: u32 = 0x4;
    pub const FILE_READ_EA: u32 = 0x8;
    pub const FILE_WRITE_EA: u32 = 0x10;
    pub const FILE_EXECUTE: u32 = 0x20;
    pub const FILE_READ_ATTRIBUTES: u32 = 0x80;
    pub const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
    pub const DELETE: u32 = 0x1_0000;
    pub const READ_CONTROL: u32 = 0x2_0000;
    pub const WRITE_DAC: u32 = 0x4_0000;
    pub const WRITE_OWNER: u32 = 0x8_0000;
    pub const SYNCHRONIZE: u32 = 0x10_0000;
    pub const MAXIMUM_ALLOWED: u32 = 0x200_0000;
    pub const GENERIC_ALL: u32 = 0x1000_0000;
    pub const GENERIC_EXECUTE: u32 = 0x2000_0000;
    pub const GENERIC_WRITE: u32 = 0x4000_0000;
    pub const GENERIC_READ: u32 = 0x8000_0000;
    /// `FILE_ALL_ACCESS`.
    pub const FILE_ALL_ACCESS: u32 = 0x1F_01FF;
    /// `FILE_GENERIC_READ`.
    pub const FILE_GENERIC_READ: u32 =
        READ_CONTROL | FILE_READ_DATA | FILE_READ_ATTRIBUTES | FILE_READ_EA | SYNCHRONIZE;
    /// `FILE_GENERIC_WRITE`.
    pub const FILE_GENERIC_WRITE: u32 = READ_CONTROL
        | FILE_WRITE_DATA
        | FILE_WRITE_ATTRIBUTES
        | FILE_WRITE_EA
        | FILE_APPEND_DATA
        | SYNCHRONIZE;
    /// `FILE_GENERIC_EXECUTE`.
    pub const FILE_GENERIC_EXECUTE: u32 =
        READ_CONTROL | FILE_READ_ATTRIBUTES | FILE_EXECUTE | SYNCHRONIZE;

    /// Maps the generic rights to the file object's specific rights (`IoGetFileObjectGenericMapping`).
    pub const fn map_generic(mut a: u32) -> u32 {
        if a & GENERIC_READ != 0 {
            a |= FILE_GENERIC_READ;
        }
        if a & GENERIC_WRITE != 0 {
            a |= FILE_GENERIC_WRITE;
        }
        if a & GENERIC_EXECUTE != 0 {
            a |= FILE_GENERIC_EXECUTE;
        }
        if a & (GENERIC_ALL | MAXIMUM_ALLOWED) != 0 {
            a |= FILE_ALL_ACCESS;
        }
        a & !(GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE | GENERIC_ALL | MAXIMUM_ALLOWED)
    }
}

/// Share access.
pub mod share {
    pub const READ: u32 = 0x1;
    pub const WRITE: u32 = 0x2;
    pub const DELETE: u32 = 0x4;
}

/// File attributes.
pub mod attr {
    pub const READONLY: u32 = 0x1;
    pub const HIDDEN: u32 = 0x2;
    pub const SYSTEM: u32 = 0x4;
    pub const DIRECTORY: u32 = 0x10;
    pub const ARCHIVE: u32 = 0x20;
    pub const NORMAL: u32 = 0x80;
    pub const TEMPORARY: u32 = 0x100;
    pub const OFFLINE: u32 = 0x1000;
    pub const NOT_CONTENT_INDEXED: u32 = 0x2000;
    /// What setting basic information may change (MS-FSA 2.1.5.15.2 `ValidSetAttributes`).
    pub const SETTABLE: u32 =
        READONLY | HIDDEN | SYSTEM | ARCHIVE | TEMPORARY | OFFLINE | NOT_CONTENT_INDEXED;
}

/// `FILE_INFORMATION_CLASS` values.
pub mod file_info {
    pub const DIRECTORY: u32 = 1;
    pub const FULL_DIRECTORY: u32 = 2;
    pub const BOTH_DIRECTORY: u32 = 3;
    pub const BASIC: u32 = 4;
    pub const STANDARD: u32 = 5;
    pub const INTERNAL: u32 = 6;
    pub const EA: u32 = 7;
    pub const ACCESS: u32 = 8;
    pub const NAME: u32 = 9;
    pub const RENAME: u32 = 10;
    pub const NAMES: u32 = 12;
    pub const DISPOSITION: u32 = 13;
    pub const POSITION: u32 = 14;
    pub const MODE: u32 = 16;
    pub const ALIGNMENT: u32 = 17;
    pub const ALL: u32 = 18;
    pub const ALLOCATION: u32 = 19;
    pub const END_OF_FILE: u32 = 20;
    pub const STREAM: u32 = 22;
    pub const NETWORK_OPEN: u32 = 34;
    pub const ATTRIBUTE_TAG: u32 = 35;
    pub const ID_BOTH_DIRECTORY: u32 = 37;
    pub const DISPOSITION_EX: u32 = 64;
}

/// `FS_INFORMATION_CLASS` values.
pub mod fs_info {
    pub const VOLUME: u32 = 1;
    pub const LABEL: u32 = 2;
    pub const SIZE: u32 = 3;
    pub const DEVICE: u32 = 4;
    pub const ATTRIBUTE: u32 = 5;
    pub const FULL_SIZE: u32 = 7;
}

/// `FILE_FS_ATTRIBUTE_INFORMATION.FileSystemAttributes` bits.
pub mod fs_attr {
    pub const CASE_SENSITIVE_SEARCH: u32 = 0x1;
    pub const CASE_PRESERVED_NAMES: u32 = 0x2;
    pub const UNICODE_ON_DISK: u32 = 0x4;
    pub const PERSISTENT_ACLS: u32 = 0x8;
    pub const FILE_COMPRESSION: u32 = 0x10;
    pub const SUPPORTS_SPARSE_FILES: u32 = 0x40;
    pub const SUPPORTS_REPARSE_POINTS: u32 = 0x80;
    pub const SUPPORTS_OBJECT_IDS: u32 = 0x1_0000;
    pub const SUPPORTS_ENCRYPTION: u32 = 0x2_0000;
    pub const NAMED_STREAMS: u32 = 0x4_0000;
    pub const READ_ONLY_VOLUME: u32 = 0x8_0000;
    pub const SUPPORTS_TRANSACTIONS: u32 = 0x20_0000;
    pub const SUPPORTS_HARD_LINKS: u32 = 0x40_0000;
    pub const SUPPORTS_INTEGRITY_STREAMS: u32 = 0x400_0000;
    pub const SUPPORTS_BLOCK_REFCOUNTING: u32 = 0x800_0000;
}

/// `FSCTL_*` codes (`CTL_CODE(FILE_DEVICE_FILE_SYSTEM, function, method, access)`).
pub mod fsctl {
    pub const LOCK_VOLUME: u32 = 0x0009_0018;
    pub const UNLOCK_VOLUME: u32 = 0x0009_001C;
    pub const DISMOUNT_VOLUME: u32 = 0x0009_0020;
    pub const IS_VOLUME_MOUNTED: u32 = 0x0009_0028;
}

/// `IOCTL_*` codes the storage driver answers.
pub mod ioctl {
    pub const DISK_IS_WRITABLE: u32 = 0x0007_0024;
    pub const DISK_GET_LENGTH_INFO: u32 = 0x0007_405C;
    pub const STORAGE_GET_DEVICE_NUMBER: u32 = 0x002D_1080;
    pub const MOUNTDEV_QUERY_DEVICE_NAME: u32 = 0x004D_0008;
}

/// The transfer method of an I/O control code (its low two bits).
pub mod method {
    pub const BUFFERED: u32 = 0;
    pub const IN_DIRECT: u32 = 1;
    pub const OUT_DIRECT: u32 = 2;
    pub const NEITHER: u32 = 3;
}

/// `FILE_USE_FILE_POINTER_POSITION` as a `LARGE_INTEGER` (low part 0xFFFFFFFE, high part -1).
pub const FILE_USE_FILE_POINTER_POSITION: i64 = -2;
/// `FILE_WRITE_TO_END_OF_FILE` (low part 0xFFFFFFFF, high part -1).
pub const FILE_WRITE_TO_END_OF_FILE: i64 = -1;

/// `IO_TYPE_FILE`.
pub const IO_TYPE_FILE: i16 = 5;

/// `NtCurrentProcess()`.
pub const CURRENT_PROCESS: isize = -1;
/// The page size of the simulated processor.
pub const PAGE_SIZE: usize = 4096;
