//! Kernel constants the model and the backends use, with the widths the structures have (the
//! metadata's widths differ between constants and fields: `IRP_MJ_CREATE` is `u32` while
//! `MajorFunction` is `u8`, toolchain.md).

/// `IRP_MJ_OPERATION_END`: the end of a minifilter's operation table, as a major code (`u8`);
/// windows-sys 0.61 has it as a `u16` (a test below compares the two).
pub const IRP_MJ_OPERATION_END: u8 = fsfilter::IRP_MJ_OPERATION_END;
/// `IRP_MJ_MAXIMUM_FUNCTION`.
pub const IRP_MJ_MAXIMUM_FUNCTION: u8 = fsfilter::IRP_MJ_MAXIMUM_FUNCTION;

/// `SL_PENDING_RETURNED`: set by `IoMarkIrpPending` in the current stack location's `Control`.
pub const SL_PENDING_RETURNED: u8 = 0x01;
/// `SL_ERROR_RETURNED`.
pub const SL_ERROR_RETURNED: u8 = 0x02;
/// `SL_INVOKE_ON_CANCEL`.
pub const SL_INVOKE_ON_CANCEL: u8 = 0x20;
/// `SL_INVOKE_ON_SUCCESS`.
pub const SL_INVOKE_ON_SUCCESS: u8 = 0x40;
/// `SL_INVOKE_ON_ERROR`.
pub const SL_INVOKE_ON_ERROR: u8 = 0x80;

/// `SL_ALLOW_RAW_MOUNT` (stack-location `Flags` of a mount request).
pub const SL_ALLOW_RAW_MOUNT: u8 = 0x01;

/// `POOL_FLAG_NON_PAGED` for `ExAllocatePool2`.
pub const POOL_FLAG_NON_PAGED: u64 = 0x0000_0000_0000_0040;
/// `POOL_FLAG_UNINITIALIZED`.
pub const POOL_FLAG_UNINITIALIZED: u64 = 0x0000_0000_0000_0002;
/// `FLT_PORT_ALL_ACCESS` (fltkernel.h): `FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL`, the access
/// the default security descriptor of a communication port grants (missing from windows-sys).
pub const FLT_PORT_ALL_ACCESS: u32 = 0x0001 | 0x001F_0000;

/// `DPFLTR_IHVDRIVER_ID`: the component id for third-party drivers' `DbgPrintEx`.
pub const DPFLTR_IHVDRIVER_ID: u32 = 77;
/// `DPFLTR_ERROR_LEVEL`.
pub const DPFLTR_ERROR_LEVEL: u32 = 0;
/// `DPFLTR_WARNING_LEVEL`.
pub const DPFLTR_WARNING_LEVEL: u32 = 1;
/// `DPFLTR_TRACE_LEVEL`.
pub const DPFLTR_TRACE_LEVEL: u32 = 2;
/// `DPFLTR_INFO_LEVEL`.
pub const DPFLTR_INFO_LEVEL: u32 = 3;

/// `DO_*` device-object flags (facts.md §7).
pub mod do_flags {
    /// `DO_VERIFY_VOLUME`.
    pub const VERIFY_VOLUME: u32 = 0x2;
    /// `DO_BUFFERED_IO`.
    pub const BUFFERED_IO: u32 = 0x4;
    /// `DO_EXCLUSIVE`.
    pub const EXCLUSIVE: u32 = 0x8;
    /// `DO_DIRECT_IO`.
    pub const DIRECT_IO: u32 = 0x10;
    /// `DO_DEVICE_HAS_NAME`.
    pub const DEVICE_HAS_NAME: u32 = 0x40;
    /// `DO_DEVICE_INITIALIZING`.
    pub const DEVICE_INITIALIZING: u32 = 0x80;
    /// `DO_LOW_PRIORITY_FILESYSTEM`.
    pub const LOW_PRIORITY_FILESYSTEM: u32 = 0x1_0000;
    /// `DO_SUPPORTS_TRANSACTIONS`.
    pub const SUPPORTS_TRANSACTIONS: u32 = 0x4_0000;
    /// `DO_FORCE_NEITHER_IO`.
    pub const FORCE_NEITHER_IO: u32 = 0x8_0000;
    /// `DO_VOLUME_DEVICE_OBJECT`.
    pub const VOLUME_DEVICE_OBJECT: u32 = 0x10_0000;
    /// `DO_DAX_VOLUME`.
    pub const DAX_VOLUME: u32 = 0x1000_0000;
}

/// Device characteristics (facts.md §7).
pub mod characteristics {
    /// `FILE_REMOVABLE_MEDIA`.
    pub const REMOVABLE_MEDIA: u32 = 0x1;
    /// `FILE_READ_ONLY_DEVICE`.
    pub const READ_ONLY_DEVICE: u32 = 0x2;
    /// `FILE_REMOTE_DEVICE`.
    pub const REMOTE_DEVICE: u32 = 0x10;
    /// `FILE_DEVICE_IS_MOUNTED`.
    pub const DEVICE_IS_MOUNTED: u32 = 0x20;
    /// `FILE_DEVICE_SECURE_OPEN`.
    pub const DEVICE_SECURE_OPEN: u32 = 0x100;
}

/// `VPB_*` flags (facts.md §7).
pub mod vpb_flags {
    /// `VPB_MOUNTED`.
    pub const MOUNTED: u16 = 0x1;
    /// `VPB_LOCKED`.
    pub const LOCKED: u16 = 0x2;
    /// `VPB_PERSISTENT`.
    pub const PERSISTENT: u16 = 0x4;
    /// `VPB_REMOVE_PENDING`.
    pub const REMOVE_PENDING: u16 = 0x8;
    /// `VPB_RAW_MOUNT`.
    pub const RAW_MOUNT: u16 = 0x10;
    /// `VPB_DIRECT_WRITES_ALLOWED`.
    pub const DIRECT_WRITES_ALLOWED: u16 = 0x20;
}

/// `IRP_*` flags (facts.md §7).
pub mod irp_flags {
    /// `IRP_NOCACHE`.
    pub const NOCACHE: u32 = 0x1;
    /// `IRP_PAGING_IO`.
    pub const PAGING_IO: u32 = 0x2;
    /// `IRP_MOUNT_COMPLETION` (same bit as `IRP_PAGING_IO`).
    pub const MOUNT_COMPLETION: u32 = 0x2;
    /// `IRP_SYNCHRONOUS_API`.
    pub const SYNCHRONOUS_API: u32 = 0x4;
    /// `IRP_ASSOCIATED_IRP`.
    pub const ASSOCIATED_IRP: u32 = 0x8;
    /// `IRP_BUFFERED_IO`.
    pub const BUFFERED_IO: u32 = 0x10;
    /// `IRP_DEALLOCATE_BUFFER`.
    pub const DEALLOCATE_BUFFER: u32 = 0x20;
    /// `IRP_INPUT_OPERATION`.
    pub const INPUT_OPERATION: u32 = 0x40;
    /// `IRP_SYNCHRONOUS_PAGING_IO` (same bit as `IRP_INPUT_OPERATION`).
    pub const SYNCHRONOUS_PAGING_IO: u32 = 0x40;
    /// `IRP_CREATE_OPERATION`.
    pub const CREATE_OPERATION: u32 = 0x80;
    /// `IRP_READ_OPERATION`.
    pub const READ_OPERATION: u32 = 0x100;
    /// `IRP_WRITE_OPERATION`.
    pub const WRITE_OPERATION: u32 = 0x200;
    /// `IRP_CLOSE_OPERATION`.
    pub const CLOSE_OPERATION: u32 = 0x400;
}

/// `FILE_OBJECT` flags the model reads.
pub mod fo_flags {
    /// `FO_SYNCHRONOUS_IO`.
    pub const SYNCHRONOUS_IO: u32 = 0x2;
    /// `FO_NO_INTERMEDIATE_BUFFERING`.
    pub const NO_INTERMEDIATE_BUFFERING: u32 = 0x8;
    /// `FO_VOLUME_OPEN`.
    pub const VOLUME_OPEN: u32 = 0x40_0000;
    /// `FO_CLEANUP_COMPLETE`.
    pub const CLEANUP_COMPLETE: u32 = 0x4000;
}

/// Callback-data flags as `FLT_CALLBACK_DATA.Flags` holds them.
pub mod fltfl_callback_data {
    /// `FLTFL_CALLBACK_DATA_IRP_OPERATION`.
    pub const IRP_OPERATION: u32 = 0x1;
    /// `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`.
    pub const FAST_IO_OPERATION: u32 = 0x2;
    /// `FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION`.
    pub const FS_FILTER_OPERATION: u32 = 0x4;
    /// `FLTFL_CALLBACK_DATA_SYSTEM_BUFFER`.
    pub const SYSTEM_BUFFER: u32 = 0x8;
    /// `FLTFL_CALLBACK_DATA_DRAINING_IO`.
    pub const DRAINING_IO: u32 = 0x4_0000;
    /// `FLTFL_CALLBACK_DATA_POST_OPERATION`.
    pub const POST_OPERATION: u32 = 0x8_0000;
}

/// `FLT_PREOP_CALLBACK_STATUS` values (facts.md §4).
pub mod flt_preop {
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK`.
    pub const SUCCESS_WITH_CALLBACK: i32 = 0;
    /// `FLT_PREOP_SUCCESS_NO_CALLBACK`.
    pub const SUCCESS_NO_CALLBACK: i32 = 1;
    /// `FLT_PREOP_PENDING`.
    pub const PENDING: i32 = 2;
    /// `FLT_PREOP_DISALLOW_FASTIO`.
    pub const DISALLOW_FASTIO: i32 = 3;
    /// `FLT_PREOP_COMPLETE`.
    pub const COMPLETE: i32 = 4;
    /// `FLT_PREOP_SYNCHRONIZE`.
    pub const SYNCHRONIZE: i32 = 5;
    /// `FLT_PREOP_DISALLOW_FSFILTER_IO`.
    pub const DISALLOW_FSFILTER_IO: i32 = 6;
}

/// `FLT_POSTOP_CALLBACK_STATUS` values (facts.md §4).
pub mod flt_postop {
    /// `FLT_POSTOP_FINISHED_PROCESSING`.
    pub const FINISHED_PROCESSING: i32 = 0;
    /// `FLT_POSTOP_MORE_PROCESSING_REQUIRED`.
    pub const MORE_PROCESSING_REQUIRED: i32 = 1;
    /// `FLT_POSTOP_DISALLOW_FSFILTER_IO`.
    pub const DISALLOW_FSFILTER_IO: i32 = 2;
}

/// `FLT_REGISTRATION_VERSION_0203`: Windows 8, with the section-conflict callback (facts.md §2.6).
pub const FLT_REGISTRATION_VERSION_0203: u16 = 0x0203;

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Wdk::Storage::FileSystem as fs;
    use windows_sys::Wdk::Storage::FileSystem::Minifilters as flt;
    use windows_sys::Wdk::System::SystemServices as ss;

    /// Every value written by hand here against windows-sys's metadata (scraped from the WDK
    /// headers), so a typo in either shows. The WDK values themselves are those of wdm.h, ntifs.h
    /// and fltkernel.h (facts.md §3, §4, §7).
    #[test]
    fn hand_written_values_match_the_wdk_metadata() {
        let sl = [SL_PENDING_RETURNED, SL_ERROR_RETURNED, SL_INVOKE_ON_CANCEL];
        let ws = [ss::SL_PENDING_RETURNED, ss::SL_ERROR_RETURNED, ss::SL_INVOKE_ON_CANCEL];
        assert_eq!(sl.map(u32::from), ws);
        assert_eq!(u32::from(SL_INVOKE_ON_SUCCESS), ss::SL_INVOKE_ON_SUCCESS);
        assert_eq!(u32::from(SL_INVOKE_ON_ERROR), ss::SL_INVOKE_ON_ERROR);
        assert_eq!(u32::from(SL_ALLOW_RAW_MOUNT), ss::SL_ALLOW_RAW_MOUNT);
        assert_eq!(u16::from(IRP_MJ_OPERATION_END), flt::IRP_MJ_OPERATION_END);
        assert_eq!(u32::from(IRP_MJ_MAXIMUM_FUNCTION), ss::IRP_MJ_MAXIMUM_FUNCTION);
        assert_eq!(u32::from(FLT_REGISTRATION_VERSION_0203), flt::FLT_REGISTRATION_VERSION_0203);
        let dos = [
            (do_flags::VERIFY_VOLUME, fs::DO_VERIFY_VOLUME),
            (do_flags::BUFFERED_IO, fs::DO_BUFFERED_IO),
            (do_flags::EXCLUSIVE, fs::DO_EXCLUSIVE),
            (do_flags::DIRECT_IO, fs::DO_DIRECT_IO),
            (do_flags::DEVICE_HAS_NAME, fs::DO_DEVICE_HAS_NAME),
            (do_flags::DEVICE_INITIALIZING, fs::DO_DEVICE_INITIALIZING),
            (do_flags::LOW_PRIORITY_FILESYSTEM, fs::DO_LOW_PRIORITY_FILESYSTEM),
            (do_flags::SUPPORTS_TRANSACTIONS, fs::DO_SUPPORTS_TRANSACTIONS),
            (do_flags::FORCE_NEITHER_IO, fs::DO_FORCE_NEITHER_IO),
            (do_flags::VOLUME_DEVICE_OBJECT, fs::DO_VOLUME_DEVICE_OBJECT),
            (do_flags::DAX_VOLUME, fs::DO_DAX_VOLUME),
            (characteristics::REMOVABLE_MEDIA, ss::FILE_REMOVABLE_MEDIA),
            (characteristics::READ_ONLY_DEVICE, ss::FILE_READ_ONLY_DEVICE),
            (characteristics::REMOTE_DEVICE, ss::FILE_REMOTE_DEVICE),
            (characteristics::DEVICE_IS_MOUNTED, ss::FILE_DEVICE_IS_MOUNTED),
            (characteristics::DEVICE_SECURE_OPEN, ss::FILE_DEVICE_SECURE_OPEN),
            (irp_flags::NOCACHE, ss::IRP_NOCACHE),
            (irp_flags::PAGING_IO, ss::IRP_PAGING_IO),
            (irp_flags::MOUNT_COMPLETION, ss::IRP_MOUNT_COMPLETION),
            (irp_flags::SYNCHRONOUS_API, ss::IRP_SYNCHRONOUS_API),
            (irp_flags::ASSOCIATED_IRP, ss::IRP_ASSOCIATED_IRP),
            (irp_flags::BUFFERED_IO, ss::IRP_BUFFERED_IO),
            (irp_flags::DEALLOCATE_BUFFER, ss::IRP_DEALLOCATE_BUFFER),
            (irp_flags::INPUT_OPERATION, ss::IRP_INPUT_OPERATION),
            (irp_flags::SYNCHRONOUS_PAGING_IO, ss::IRP_SYNCHRONOUS_PAGING_IO),
            (irp_flags::CREATE_OPERATION, ss::IRP_CREATE_OPERATION),
            (irp_flags::READ_OPERATION, ss::IRP_READ_OPERATION),
            (irp_flags::WRITE_OPERATION, ss::IRP_WRITE_OPERATION),
            (irp_flags::CLOSE_OPERATION, ss::IRP_CLOSE_OPERATION),
            (fltfl_callback_data::IRP_OPERATION, flt::FLTFL_CALLBACK_DATA_IRP_OPERATION),
            (fltfl_callback_data::FAST_IO_OPERATION, flt::FLTFL_CALLBACK_DATA_FAST_IO_OPERATION),
            (
                fltfl_callback_data::FS_FILTER_OPERATION,
                flt::FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION,
            ),
            (fltfl_callback_data::SYSTEM_BUFFER, flt::FLTFL_CALLBACK_DATA_SYSTEM_BUFFER),
            (fltfl_callback_data::DRAINING_IO, flt::FLTFL_CALLBACK_DATA_DRAINING_IO),
            (fltfl_callback_data::POST_OPERATION, flt::FLTFL_CALLBACK_DATA_POST_OPERATION),
        ];
        for (mine, wdk) in dos {
            assert_eq!(mine, wdk, "{mine:#x}");
        }
        let fo = [
            (fo_flags::SYNCHRONOUS_IO, ss::FO_SYNCHRONOUS_IO),
            (fo_flags::NO_INTERMEDIATE_BUFFERING, ss::FO_NO_INTERMEDIATE_BUFFERING),
            (fo_flags::VOLUME_OPEN, ss::FO_VOLUME_OPEN),
            (fo_flags::CLEANUP_COMPLETE, ss::FO_CLEANUP_COMPLETE),
        ];
        for (mine, wdk) in fo {
            assert_eq!(mine, wdk, "{mine:#x}");
        }
        let vpb = [
            (vpb_flags::MOUNTED, ss::VPB_MOUNTED),
            (vpb_flags::LOCKED, ss::VPB_LOCKED),
            (vpb_flags::PERSISTENT, ss::VPB_PERSISTENT),
            (vpb_flags::REMOVE_PENDING, ss::VPB_REMOVE_PENDING),
            (vpb_flags::RAW_MOUNT, ss::VPB_RAW_MOUNT),
            (vpb_flags::DIRECT_WRITES_ALLOWED, ss::VPB_DIRECT_WRITES_ALLOWED),
        ];
        for (mine, wdk) in vpb {
            assert_eq!(u32::from(mine), wdk, "{mine:#x}");
        }
        let pre = [
            flt_preop::SUCCESS_WITH_CALLBACK,
            flt_preop::SUCCESS_NO_CALLBACK,
            flt_preop::PENDING,
            flt_preop::DISALLOW_FASTIO,
            flt_preop::COMPLETE,
            flt_preop::SYNCHRONIZE,
            flt_preop::DISALLOW_FSFILTER_IO,
        ];
        let wdk_pre = [
            flt::FLT_PREOP_SUCCESS_WITH_CALLBACK,
            flt::FLT_PREOP_SUCCESS_NO_CALLBACK,
            flt::FLT_PREOP_PENDING,
            flt::FLT_PREOP_DISALLOW_FASTIO,
            flt::FLT_PREOP_COMPLETE,
            flt::FLT_PREOP_SYNCHRONIZE,
            flt::FLT_PREOP_DISALLOW_FSFILTER_IO,
        ];
        assert_eq!(pre, wdk_pre);
        let post = [
            flt_postop::FINISHED_PROCESSING,
            flt_postop::MORE_PROCESSING_REQUIRED,
            flt_postop::DISALLOW_FSFILTER_IO,
        ];
        let wdk_post = [
            flt::FLT_POSTOP_FINISHED_PROCESSING,
            flt::FLT_POSTOP_MORE_PROCESSING_REQUIRED,
            flt::FLT_POSTOP_DISALLOW_FSFILTER_IO,
        ];
        assert_eq!(post, wdk_post);
    }

    /// The values windows-sys does not carry, as the WDK headers define them: wdm.h's
    /// `POOL_FLAG_UNINITIALIZED` 0x2 and `POOL_FLAG_NON_PAGED` 0x40 (`POOL_FLAGS`, Microsoft
    /// Learn), dpfilter.h's `DPFLTR_IHVDRIVER_ID` 77 and levels 0 to 3.
    #[test]
    fn values_missing_from_windows_sys() {
        assert_eq!((POOL_FLAG_UNINITIALIZED, POOL_FLAG_NON_PAGED), (0x2, 0x40));
        assert_eq!(DPFLTR_IHVDRIVER_ID, 77);
        let levels = [DPFLTR_ERROR_LEVEL, DPFLTR_WARNING_LEVEL, DPFLTR_TRACE_LEVEL];
        assert_eq!((levels, DPFLTR_INFO_LEVEL), ([0, 1, 2], 3));
    }
}
