//! raw-minifilter.sys: the baseline passthrough minifilter of issue 9, written directly against
//! windows-sys the way a C minifilter is written, with no fsfilter backend.
//!
//! It registers the operations the passthrough sample registers (every operation except
//! `IRP_MJ_POWER`, `IRP_MJ_SYSTEM_CONTROL`, `IRP_MJ_DEVICE_CHANGE` and `IRP_MJ_QUERY_OPEN`;
//! `IRP_MJ_SHUTDOWN` without a post callback), in a static `FLT_OPERATION_REGISTRATION` table referenced by a static
//! `FLT_REGISTRATION`. Its pre callback answers `FLT_PREOP_SUCCESS_WITH_CALLBACK` (shutdown:
//! `FLT_PREOP_SUCCESS_NO_CALLBACK`, having no post), its post callback
//! `FLT_POSTOP_FINISHED_PROCESSING`; instance setup attaches everywhere, query teardown allows,
//! and the unload callback unregisters the filter. It allocates nothing and keeps one global, the
//! filter handle, for the unload callback.
//!
//! The benchmarks (`bench/`) measure the fsfilter passthrough minifilter against it, and
//! `cargo xtask drivers` prints every minifilter's .sys size beside its size.
//!
//! From `fsfilter-kernel` it takes only what every Rust driver built without the WDK needs and
//! that has nothing to do with the framework: the CRT symbols the compiler expects
//! (`memcpy`, `__chkstk`, ...) and the panic handler (no panic path is left, so LTO removes it).
//! It does not use the backends' registration tables, trampolines, image global or trace hooks.
//!
//! In the simulator the global is one per process, not one per image: run one instance of this
//! driver at a time (one image is one driver on Windows too).

#![no_std]

use core::ffi::c_void;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicIsize, Ordering};

// The CRT symbols and the panic handler on Windows; nothing else of the crate is used.
use fsfilter_kernel as _;
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_OPERATION_REGISTRATION, FLT_POSTOP_CALLBACK_STATUS,
    FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_REGISTRATION, FLT_REGISTRATION_VERSION,
    FLT_RELATED_OBJECTS, FltRegisterFilter, FltStartFiltering, FltUnregisterFilter, PFLT_FILTER,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};
use windows_sys::Win32::Storage::InstallableFileSystems::FLT_FILESYSTEM_TYPE;

/// The filter handle `FltRegisterFilter` returned, for the unload callback (0: not registered).
static FILTER: AtomicIsize = AtomicIsize::new(0);

/// An operation with both callbacks.
const fn with_post(major: u8) -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION {
        MajorFunction: major,
        Flags: 0,
        PreOperation: Some(pre_operation),
        PostOperation: Some(post_operation),
        Reserved1: null_mut(),
    }
}

/// The operation table, as passThrough's `Callbacks`: every IRP major function but
/// `IRP_MJ_POWER` (0x16), `IRP_MJ_SYSTEM_CONTROL` (0x17) and `IRP_MJ_DEVICE_CHANGE` (0x18), then
/// the Filter Manager's pseudo-operations for FsFilter callbacks and fast I/O
/// (`IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION` = (UCHAR)-1 down to `IRP_MJ_VOLUME_DISMOUNT` =
/// (UCHAR)-20, less the codes Windows leaves unused and `IRP_MJ_QUERY_OPEN` ((UCHAR)-7, newer than
/// the sample's table); `IRP_MJ_SHUTDOWN` has no post callback.
const OPERATIONS: [FLT_OPERATION_REGISTRATION; 40] = [
    with_post(0x00), // IRP_MJ_CREATE
    with_post(0x01), // IRP_MJ_CREATE_NAMED_PIPE
    with_post(0x02), // IRP_MJ_CLOSE
    with_post(0x03), // IRP_MJ_READ
    with_post(0x04), // IRP_MJ_WRITE
    with_post(0x05), // IRP_MJ_QUERY_INFORMATION
    with_post(0x06), // IRP_MJ_SET_INFORMATION
    with_post(0x07), // IRP_MJ_QUERY_EA
    with_post(0x08), // IRP_MJ_SET_EA
    with_post(0x09), // IRP_MJ_FLUSH_BUFFERS
    with_post(0x0a), // IRP_MJ_QUERY_VOLUME_INFORMATION
    with_post(0x0b), // IRP_MJ_SET_VOLUME_INFORMATION
    with_post(0x0c), // IRP_MJ_DIRECTORY_CONTROL
    with_post(0x0d), // IRP_MJ_FILE_SYSTEM_CONTROL
    with_post(0x0e), // IRP_MJ_DEVICE_CONTROL
    with_post(0x0f), // IRP_MJ_INTERNAL_DEVICE_CONTROL
    FLT_OPERATION_REGISTRATION {
        MajorFunction: 0x10, // IRP_MJ_SHUTDOWN
        Flags: 0,
        PreOperation: Some(pre_operation_no_post),
        PostOperation: None,
        Reserved1: null_mut(),
    },
    with_post(0x11), // IRP_MJ_LOCK_CONTROL
    with_post(0x12), // IRP_MJ_CLEANUP
    with_post(0x13), // IRP_MJ_CREATE_MAILSLOT
    with_post(0x14), // IRP_MJ_QUERY_SECURITY
    with_post(0x15), // IRP_MJ_SET_SECURITY
    with_post(0x19), // IRP_MJ_QUERY_QUOTA
    with_post(0x1a), // IRP_MJ_SET_QUOTA
    with_post(0x1b), // IRP_MJ_PNP
    with_post(0xff), // IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION
    with_post(0xfe), // IRP_MJ_RELEASE_FOR_SECTION_SYNCHRONIZATION
    with_post(0xfd), // IRP_MJ_ACQUIRE_FOR_MOD_WRITE
    with_post(0xfc), // IRP_MJ_RELEASE_FOR_MOD_WRITE
    with_post(0xfb), // IRP_MJ_ACQUIRE_FOR_CC_FLUSH
    with_post(0xfa), // IRP_MJ_RELEASE_FOR_CC_FLUSH
    with_post(0xf3), // IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE
    with_post(0xf2), // IRP_MJ_NETWORK_QUERY_OPEN
    with_post(0xf1), // IRP_MJ_MDL_READ
    with_post(0xf0), // IRP_MJ_MDL_READ_COMPLETE
    with_post(0xef), // IRP_MJ_PREPARE_MDL_WRITE
    with_post(0xee), // IRP_MJ_MDL_WRITE_COMPLETE
    with_post(0xed), // IRP_MJ_VOLUME_MOUNT
    with_post(0xec), // IRP_MJ_VOLUME_DISMOUNT
    FLT_OPERATION_REGISTRATION {
        MajorFunction: 0x80, // IRP_MJ_OPERATION_END (windows-sys does not define it)
        Flags: 0,
        PreOperation: None,
        PostOperation: None,
        Reserved1: null_mut(),
    },
];

/// The registration, evaluated at compile time; [`registration`] hands out its static copy.
const REGISTRATION: FLT_REGISTRATION = FLT_REGISTRATION {
    Size: size_of::<FLT_REGISTRATION>() as u16,
    Version: FLT_REGISTRATION_VERSION as u16,
    Flags: 0,
    ContextRegistration: core::ptr::null(),
    OperationRegistration: const { &OPERATIONS }.as_ptr(),
    FilterUnloadCallback: Some(filter_unload),
    InstanceSetupCallback: Some(instance_setup),
    InstanceQueryTeardownCallback: Some(instance_query_teardown),
    InstanceTeardownStartCallback: Some(instance_teardown),
    InstanceTeardownCompleteCallback: Some(instance_teardown),
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
};

/// The registration as static data (a promoted constant: it lives in the image's read-only data
/// for as long as the driver is loaded).
fn registration() -> &'static FLT_REGISTRATION {
    const { &REGISTRATION }
}

/// `PFLT_PRE_OPERATION_CALLBACK` of every operation with a post callback.
///
/// # Context
/// Any IRQL up to `APC_LEVEL` (paging I/O may come at `APC_LEVEL`); does not block.
unsafe extern "system" fn pre_operation(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    if !completion_context.is_null() {
        // SAFETY: the Filter Manager's out parameter for this call's completion context.
        unsafe { *completion_context = null_mut() };
    }
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// `PFLT_PRE_OPERATION_CALLBACK` of `IRP_MJ_SHUTDOWN`, which has no post callback.
///
/// # Context
/// `PASSIVE_LEVEL`.
unsafe extern "system" fn pre_operation_no_post(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

/// `PFLT_POST_OPERATION_CALLBACK`.
///
/// # Context
/// Any IRQL up to `DISPATCH_LEVEL`; does not block.
unsafe extern "system" fn post_operation(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const c_void,
    _flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    FLT_POSTOP_FINISHED_PROCESSING
}

/// `PFLT_INSTANCE_SETUP_CALLBACK`: attach to every volume.
///
/// # Context
/// `PASSIVE_LEVEL`.
unsafe extern "system" fn instance_setup(
    _objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
    _volume_device_type: u32,
    _volume_filesystem_type: FLT_FILESYSTEM_TYPE,
) -> NTSTATUS {
    STATUS_SUCCESS
}

/// `PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK`: manual detach is allowed.
///
/// # Context
/// `PASSIVE_LEVEL`.
unsafe extern "system" fn instance_query_teardown(
    _objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
) -> NTSTATUS {
    STATUS_SUCCESS
}

/// `PFLT_INSTANCE_TEARDOWN_CALLBACK`, start and complete: nothing to clean up.
///
/// # Context
/// `PASSIVE_LEVEL`.
unsafe extern "system" fn instance_teardown(_objects: *const FLT_RELATED_OBJECTS, _reason: u32) {}

/// `PFLT_FILTER_UNLOAD_CALLBACK`: unregisters the filter (which tears every instance down).
///
/// # Context
/// `PASSIVE_LEVEL`.
unsafe extern "system" fn filter_unload(_flags: u32) -> NTSTATUS {
    let filter: PFLT_FILTER = FILTER.swap(0, Ordering::AcqRel);
    if filter != 0 {
        // SAFETY: the handle FltRegisterFilter returned, unregistered once (swapped out above).
        unsafe { FltUnregisterFilter(filter) };
    }
    STATUS_SUCCESS
}

/// The driver's entry point: registers the filter and starts filtering.
///
/// # Safety
/// Called once per load by the I/O manager (or the simulator's loader) at `PASSIVE_LEVEL` with a
/// valid driver object.
pub unsafe extern "system" fn driver_entry(
    driver: *const DRIVER_OBJECT,
    _registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: our driver object and a registration in static data.
    let status = unsafe { FltRegisterFilter(driver, registration(), &mut filter) };
    if status < 0 {
        return status;
    }
    FILTER.store(filter, Ordering::Release);
    // SAFETY: the filter registered above.
    let status = unsafe { FltStartFiltering(filter) };
    if status < 0 {
        FILTER.store(0, Ordering::Release);
        // SAFETY: registered above and not started: unregister before failing the load.
        unsafe { FltUnregisterFilter(filter) };
    }
    status
}

/// The entry point as a value, for the simulator's loader (`fsfilter_sim::ServiceSpec`).
pub const ENTRY: unsafe extern "system" fn(
    *const DRIVER_OBJECT,
    *const UNICODE_STRING,
) -> NTSTATUS = driver_entry;

/// `DriverEntry`, the symbol the linker's `/ENTRY` names.
///
/// # Safety
/// Called once by the I/O manager.
#[cfg(target_os = "windows")]
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(
    driver: *const DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: forwarded from the I/O manager's call.
    unsafe { driver_entry(driver, registry_path) }
}
