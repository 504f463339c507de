//! raw-legacy.sys: the baseline legacy passthrough filter of issue 9, written directly against
//! windows-sys in the pattern of the WDK's sfilter, with no fsfilter backend.
//!
//! - `DriverEntry` creates the filter's control device (`\FileSystem\Filters\RawLegacy`, or
//!   `\FileSystem\RawLegacyCDO` where that directory does not exist), points every major function
//!   at one dispatch routine, installs a pass-through fast-I/O table and registers with
//!   `IoRegisterFsRegistrationChange`.
//! - The notification routine attaches a device to each file system's control device (the
//!   recognizer excepted) and to the volumes that file system has mounted already
//!   (`IoEnumerateDeviceObjectList`); when a file system goes away it detaches from it.
//! - Mount requests seen at a control device go down with a completion routine that signals an
//!   event; after the wait the filter re-reads the real device's VPB and attaches to the new
//!   volume device.
//! - At a volume, **every IRP** goes down with a completion routine (`IoSetCompletionRoutine`)
//!   that propagates the pending flag: the cost a legacy filter pays to see every result, which
//!   the fsfilter legacy backend pays for its post callbacks.
//! - Fast I/O passes through to the lower driver's table; `FastIoDetachDevice` detaches and
//!   deletes the device when the volume below goes away.
//! - `DriverUnload` unregisters, detaches every device, waits five seconds for requests already
//!   past it (as sfilter does: its completion routine must not run after the image is gone) and
//!   deletes its devices.
//!
//! It allocates nothing and keeps two globals: the driver object (the notification routine gets
//! no context) and the control device. From `fsfilter-kernel` it takes only the CRT symbols the
//! compiler expects, the panic handler (no panic path is left, so LTO removes it) and the WDK's
//! inline IRP macros (`IoGetCurrentIrpStackLocation`, `IoCopyCurrentIrpStackLocationToNext`,
//! `IoSkipCurrentIrpStackLocation`, `IoSetCompletionRoutine`, `IoMarkIrpPending`, `IoCallDriver`,
//! `IoCompleteRequest`), which a C driver gets from wdm.h; nothing of the backends.
//!
//! In the simulator the globals are one per process, not one per image: run one instance of this
//! driver at a time (one image is one driver on Windows too).

#![no_std]

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr::{null, null_mut};
use core::sync::atomic::{AtomicPtr, Ordering};

use fsfilter_kernel::irp::{
    IoCallDriver, IoCompleteRequest, IoCopyCurrentIrpStackLocationToNext,
    IoGetCurrentIrpStackLocation, IoMarkIrpPending, IoSetCompletionRoutine,
    IoSkipCurrentIrpStackLocation,
};
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, DRIVER_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT, IRP, KEVENT, MDL, PEPROCESS,
};
use windows_sys::Wdk::Storage::FileSystem::{
    COMPRESSED_DATA_INFO, FILE_BASIC_INFORMATION, FILE_NETWORK_OPEN_INFORMATION,
    FILE_STANDARD_INFORMATION, IoEnumerateDeviceObjectList, IoGetDiskDeviceObject,
    IoGetLowerDeviceObject, IoRegisterFsRegistrationChange, IoUnregisterFsRegistrationChange,
};
use windows_sys::Wdk::System::SystemServices::{
    IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDeleteDevice, IoDetachDevice,
    IoGetAttachedDeviceReference, KeDelayExecutionThread, KeInitializeEvent, KeSetEvent,
    KeWaitForSingleObject, ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_INVALID_DEVICE_REQUEST, STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_OBJECT_PATH_NOT_FOUND, STATUS_PENDING, STATUS_SUCCESS, UNICODE_STRING,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;
use windows_sys::Win32::System::Kernel::NotificationEvent;

/// `IRP_MJ_CREATE`, `IRP_MJ_CLOSE`, `IRP_MJ_FILE_SYSTEM_CONTROL`, `IRP_MJ_CLEANUP`.
const IRP_MJ_CREATE: u8 = 0x00;
const IRP_MJ_CLOSE: u8 = 0x02;
const IRP_MJ_FILE_SYSTEM_CONTROL: u8 = 0x0d;
const IRP_MJ_CLEANUP: u8 = 0x12;
/// `IRP_MN_MOUNT_VOLUME`.
const IRP_MN_MOUNT_VOLUME: u8 = 0x01;
/// `FILE_DEVICE_DISK_FILE_SYSTEM`, the type of the control device.
const FILE_DEVICE_DISK_FILE_SYSTEM: u32 = 0x08;
/// `DO_BUFFERED_IO`, `DO_DIRECT_IO`, `DO_DEVICE_INITIALIZING`.
const DO_BUFFERED_IO: u32 = 0x04;
const DO_DIRECT_IO: u32 = 0x10;
const DO_DEVICE_INITIALIZING: u32 = 0x80;
/// `FILE_DEVICE_SECURE_OPEN`.
const FILE_DEVICE_SECURE_OPEN: u32 = 0x100;
/// `KernelMode`, `Executive`.
const KERNEL_MODE: i8 = 0;
const EXECUTIVE: i32 = 0;
/// How long `DriverUnload` waits for requests already past the filter: five seconds, relative.
const UNLOAD_DELAY_100NS: i64 = -5 * 10_000_000;
/// How many devices of a file system the notification routine looks at for mounted volumes.
const MAX_VOLUMES: usize = 32;

/// What a device of ours is attached to (its extension's `kind`).
const KIND_CONTROL: u32 = 0;
const KIND_FILE_SYSTEM: u32 = 1;
const KIND_VOLUME: u32 = 2;

/// The extension of every device of ours.
#[repr(C)]
struct Extension {
    /// The device we are attached to (null for the control device).
    lower: *mut DEVICE_OBJECT,
    /// `KIND_CONTROL`, `KIND_FILE_SYSTEM` or `KIND_VOLUME`.
    kind: u32,
}

/// Our driver object, for the notification routine (which gets no context).
static DRIVER: AtomicPtr<DRIVER_OBJECT> = AtomicPtr::new(null_mut());
/// Our control device.
static CONTROL: AtomicPtr<DEVICE_OBJECT> = AtomicPtr::new(null_mut());

/// An ASCII string as UTF-16, for names in static data.
const fn utf16<const N: usize>(ascii: &[u8; N]) -> [u16; N] {
    let mut out = [0u16; N];
    let mut from: &[u8] = ascii;
    let mut to: &mut [u16] = &mut out;
    while let ([b, rest_from @ ..], [u, rest_to @ ..]) = (from, to) {
        *u = *b as u16;
        from = rest_from;
        to = rest_to;
    }
    out
}

static CONTROL_NAME: [u16; 29] = utf16(b"\\FileSystem\\Filters\\RawLegacy");
static CONTROL_NAME_PRE_XP: [u16; 24] = utf16(b"\\FileSystem\\RawLegacyCDO");
static RECOGNIZER: [u16; 18] = utf16(b"\\FileSystem\\Fs_Rec");

/// A counted string over static UTF-16.
fn unicode(units: &'static [u16]) -> UNICODE_STRING {
    let bytes = (units.len() * 2) as u16;
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: units.as_ptr().cast_mut() }
}

/// The extension of one of our devices.
///
/// # Safety
/// `device` must be a live device created by this driver.
unsafe fn extension<'a>(device: *const DEVICE_OBJECT) -> Option<&'a mut Extension> {
    // SAFETY: the caller guarantees a live device.
    let raw = unsafe { (*device).DeviceExtension };
    // SAFETY: our devices are created with an `Extension`-sized, suitably aligned extension.
    unsafe { raw.cast::<Extension>().as_mut() }
}

/// True when `device` belongs to this driver.
///
/// # Safety
/// `device` must be live.
unsafe fn is_ours(device: *const DEVICE_OBJECT) -> bool {
    // SAFETY: the caller guarantees a live device.
    let driver = unsafe { (*device).DriverObject };
    !driver.is_null() && driver == DRIVER.load(Ordering::Acquire)
}

// ---------------------------------------------------------------------------------------------
// Entry and unload

/// The driver's entry point.
///
/// # Safety
/// Called once per load by the I/O manager (or the simulator's loader) at `PASSIVE_LEVEL` with a
/// valid driver object.
pub unsafe extern "system" fn driver_entry(
    driver: *const DRIVER_OBJECT,
    _registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    DRIVER.store(driver.cast_mut(), Ordering::Release);
    let mut control: *mut DEVICE_OBJECT = null_mut();
    let mut status = STATUS_OBJECT_PATH_NOT_FOUND;
    for name in [&CONTROL_NAME[..], &CONTROL_NAME_PRE_XP[..]] {
        let name = unicode(name);
        // SAFETY: our driver object, a valid name, an out pointer.
        status = unsafe {
            IoCreateDevice(
                driver,
                size_of::<Extension>() as u32,
                &name,
                FILE_DEVICE_DISK_FILE_SYSTEM,
                FILE_DEVICE_SECURE_OPEN,
                false,
                &mut control,
            )
        };
        if status != STATUS_OBJECT_PATH_NOT_FOUND {
            break;
        }
    }
    if status < 0 {
        DRIVER.store(null_mut(), Ordering::Release);
        return status;
    }
    // SAFETY: the device just created, with its zeroed extension.
    if let Some(ext) = unsafe { extension(control) } {
        ext.kind = KIND_CONTROL;
        ext.lower = null_mut();
    }
    CONTROL.store(control, Ordering::Release);

    // SAFETY: our driver object during DriverEntry, before any device of ours is attached.
    let d = unsafe { &mut *driver.cast_mut() };
    for slot in d.MajorFunction.iter_mut() {
        *slot = Some(dispatch);
    }
    d.FastIoDispatch = (&raw const FAST_IO).cast_mut();
    d.DriverUnload = Some(driver_unload);

    // File systems registered already are reported before this returns.
    // SAFETY: our driver object and routine.
    let status = unsafe { IoRegisterFsRegistrationChange(driver, Some(fs_notification)) };
    if status < 0 {
        d.DriverUnload = None;
        CONTROL.store(null_mut(), Ordering::Release);
        // SAFETY: our control device, attached to nothing.
        unsafe { IoDeleteDevice(control) };
        DRIVER.store(null_mut(), Ordering::Release);
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

/// `DriverUnload`.
///
/// # Context
/// `PASSIVE_LEVEL`, system thread.
unsafe extern "system" fn driver_unload(driver: *const DRIVER_OBJECT) {
    // SAFETY: our driver object and the routine registered in DriverEntry.
    unsafe { IoUnregisterFsRegistrationChange(driver, Some(fs_notification)) };
    // SAFETY: our live driver object.
    let mut device = unsafe { (*driver).DeviceObject };
    while !device.is_null() {
        // SAFETY: a device of ours, from the driver's list.
        if let Some(ext) = unsafe { extension(device) } {
            if !ext.lower.is_null() {
                // SAFETY: the device we attached to.
                unsafe { IoDetachDevice(ext.lower) };
                ext.lower = null_mut();
            }
        }
        // SAFETY: as above.
        device = unsafe { (*device).NextDevice };
    }
    // Requests that went down before the detach still have our completion routine set.
    let delay = UNLOAD_DELAY_100NS;
    // SAFETY: a relative interval on our stack.
    let _ = unsafe { KeDelayExecutionThread(KERNEL_MODE, false, &delay) };
    // SAFETY: our live driver object.
    let mut device = unsafe { (*driver).DeviceObject };
    while !device.is_null() {
        // SAFETY: a device of ours, read before it is deleted.
        let next = unsafe { (*device).NextDevice };
        // SAFETY: our device, detached, deleted once.
        unsafe { IoDeleteDevice(device) };
        device = next;
    }
    CONTROL.store(null_mut(), Ordering::Release);
    DRIVER.store(null_mut(), Ordering::Release);
}

// ---------------------------------------------------------------------------------------------
// Attachment

/// `DRIVER_FS_NOTIFICATION`: a file system registered or unregistered its control device.
///
/// # Context
/// `PASSIVE_LEVEL`.
unsafe extern "system" fn fs_notification(cdo: *const DEVICE_OBJECT, active: bool) {
    if cdo.is_null() {
        return;
    }
    if active {
        // SAFETY: the I/O manager passes a live control device.
        unsafe { attach_to_file_system(cdo) };
    } else {
        // SAFETY: as above.
        unsafe { detach_from_file_system(cdo) };
    }
}

/// Attaches to a file system's control device and to the volumes it has mounted.
///
/// # Safety
/// `cdo` must be live; `PASSIVE_LEVEL`.
unsafe fn attach_to_file_system(cdo: *const DEVICE_OBJECT) {
    // The recognizer's devices are left alone: the real file system registers later.
    // SAFETY: a live device.
    let driver = unsafe { (*cdo).DriverObject };
    // SAFETY: a live device's driver object.
    let name = unsafe { &(*driver).DriverName };
    // SAFETY: the driver's name, `Length` bytes at `Buffer`.
    if unsafe { same_name(name, &RECOGNIZER) } {
        return;
    }
    // SAFETY: a live control device.
    if unsafe { !attach(cdo.cast_mut(), KIND_FILE_SYSTEM) } {
        return;
    }
    // SAFETY: as above.
    unsafe { attach_to_mounted_volumes(cdo) };
}

/// True when `name` equals `expected`, ignoring ASCII case.
///
/// # Safety
/// `name` must describe `Length` readable bytes.
unsafe fn same_name(name: &UNICODE_STRING, expected: &[u16]) -> bool {
    let len = usize::from(name.Length) / 2;
    if len != expected.len() || name.Buffer.is_null() {
        return false;
    }
    // SAFETY: the caller guarantees `Length` bytes at `Buffer`.
    let units = unsafe { core::slice::from_raw_parts(name.Buffer, len) };
    let upper = |c: u16| if (0x61..=0x7a).contains(&c) { c - 0x20 } else { c };
    units.iter().zip(expected).all(|(&a, &b)| upper(a) == upper(b))
}

/// The volumes of a file system mounted before we attached to its control device.
///
/// # Safety
/// `cdo` must be live; `PASSIVE_LEVEL`.
unsafe fn attach_to_mounted_volumes(cdo: *const DEVICE_OBJECT) {
    let mut list: [*mut DEVICE_OBJECT; MAX_VOLUMES] = [null_mut(); MAX_VOLUMES];
    let mut count = 0u32;
    // SAFETY: the caller guarantees a live device.
    let cdo = unsafe { &*cdo };
    // SAFETY: the file system's driver object, a buffer of `size_of_val(&list)` bytes; every
    // device returned is referenced.
    let status = unsafe {
        IoEnumerateDeviceObjectList(
            cdo.DriverObject,
            list.as_mut_ptr(),
            size_of::<[*mut DEVICE_OBJECT; MAX_VOLUMES]>() as u32,
            &mut count,
        )
    };
    if status < 0 {
        // Including STATUS_BUFFER_TOO_SMALL: a minimal filter skips such a file system's volumes.
        return;
    }
    for &device in list.iter().take(count as usize) {
        // SAFETY: a referenced device from the list.
        let candidate = !core::ptr::eq(device, cdo)
            && unsafe { (*device).DeviceType } == cdo.DeviceType
            // SAFETY: as above.
            && unsafe { !attached_to(device) };
        if candidate {
            let mut disk: *mut DEVICE_OBJECT = null_mut();
            // SAFETY: a live device; a volume device yields its storage device, referenced.
            if unsafe { IoGetDiskDeviceObject(device, &mut disk) } >= 0 {
                // SAFETY: the reference IoGetDiskDeviceObject took.
                unsafe { ObfDereferenceObject(disk.cast()) };
                // SAFETY: a live, mounted volume device.
                let _ = unsafe { attach(device, KIND_VOLUME) };
            }
        }
        // SAFETY: the reference IoEnumerateDeviceObjectList took.
        unsafe { ObfDereferenceObject(device.cast()) };
    }
}

/// True when a device of ours is in `device`'s attachment chain.
///
/// # Safety
/// `device` must be live.
unsafe fn attached_to(device: *const DEVICE_OBJECT) -> bool {
    // SAFETY: a live device; the top of its chain comes referenced.
    let mut current = unsafe { IoGetAttachedDeviceReference(device) };
    while !current.is_null() {
        // SAFETY: a referenced device.
        let found = unsafe { is_ours(current) };
        let bottom = current.cast_const() == device;
        let lower = if found || bottom {
            null_mut()
        } else {
            // SAFETY: a referenced device; the one below comes referenced (or null).
            unsafe { IoGetLowerDeviceObject(current) }
        };
        // SAFETY: the reference taken on `current`.
        unsafe { ObfDereferenceObject(current.cast()) };
        if found {
            return true;
        }
        current = lower;
    }
    false
}

/// Creates a device of ours and attaches it on top of `target`'s chain.
///
/// # Safety
/// `target` must be live; `PASSIVE_LEVEL`.
unsafe fn attach(target: *mut DEVICE_OBJECT, kind: u32) -> bool {
    // SAFETY: the caller guarantees a live device.
    let below = unsafe { &*target };
    let mut device: *mut DEVICE_OBJECT = null_mut();
    // SAFETY: our driver object; an unnamed device of the target's type.
    let status = unsafe {
        IoCreateDevice(
            DRIVER.load(Ordering::Acquire),
            size_of::<Extension>() as u32,
            null(),
            below.DeviceType,
            0,
            false,
            &mut device,
        )
    };
    if status < 0 || device.is_null() {
        return false;
    }
    // SAFETY: the device just created.
    let Some(ext) = (unsafe { extension(device) }) else {
        // SAFETY: ours, never attached.
        unsafe { IoDeleteDevice(device) };
        return false;
    };
    ext.kind = kind;
    // Requests may arrive as soon as the attach succeeds: the flags first.
    // SAFETY: the device just created, not visible to anyone yet.
    let ours = unsafe { &mut *device };
    ours.Flags |= below.Flags & (DO_BUFFERED_IO | DO_DIRECT_IO);
    ours.Characteristics |= below.Characteristics & FILE_DEVICE_SECURE_OPEN;
    // SAFETY: both live; the device below is written to the extension before the attach is
    // visible.
    let status = unsafe { IoAttachDeviceToDeviceStackSafe(device, target, &mut ext.lower) };
    if status < 0 {
        // SAFETY: ours, not attached.
        unsafe { IoDeleteDevice(device) };
        return false;
    }
    // SAFETY: our device.
    unsafe { (*device).Flags &= !DO_DEVICE_INITIALIZING };
    true
}

/// Detaches from a file system that unregistered its control device.
///
/// # Safety
/// `cdo` must be live; `PASSIVE_LEVEL`.
unsafe fn detach_from_file_system(cdo: *const DEVICE_OBJECT) {
    // SAFETY: a live device.
    let mut current = unsafe { (*cdo).AttachedDevice };
    while !current.is_null() {
        // SAFETY: a live device of the chain.
        if unsafe { is_ours(current) } {
            // SAFETY: our device.
            if let Some(ext) = unsafe { extension(current) } {
                if !ext.lower.is_null() {
                    // SAFETY: the device we attached to.
                    unsafe { IoDetachDevice(ext.lower) };
                    ext.lower = null_mut();
                }
            }
            // SAFETY: ours, detached.
            unsafe { IoDeleteDevice(current) };
            return;
        }
        // SAFETY: as above.
        current = unsafe { (*current).AttachedDevice };
    }
}

// ---------------------------------------------------------------------------------------------
// IRPs

/// The dispatch routine of every major function.
///
/// # Context
/// The requester's thread, `PASSIVE_LEVEL` or `APC_LEVEL` (paging I/O).
unsafe extern "system" fn dispatch(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager calls us with one of our devices.
    let ext = unsafe { extension(device) };
    let (lower, kind) = match ext {
        Some(e) if !e.lower.is_null() => (e.lower, e.kind),
        // The control device, or a device already detached.
        // SAFETY: the IRP is ours to complete.
        _ => return unsafe { complete_at_control_device(irp) },
    };
    if kind == KIND_VOLUME {
        // SAFETY: the live IRP with a location below ours, our routine (loaded while attached).
        unsafe {
            IoCopyCurrentIrpStackLocationToNext(irp);
        }
        // SAFETY: as above.
        unsafe { IoSetCompletionRoutine(irp, volume_completion, null_mut(), true, true, true) };
        // SAFETY: the device below ours and the IRP set up for it.
        return unsafe { IoCallDriver(lower, irp) };
    }
    // SAFETY: the live IRP.
    let location = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current location, ours.
    let location = unsafe { &*location };
    let (major, minor) = (location.MajorFunction, location.MinorFunction);
    if major == IRP_MJ_FILE_SYSTEM_CONTROL && minor == IRP_MN_MOUNT_VOLUME {
        // SAFETY: a mount request at a file system's control device.
        return unsafe { mount(lower, irp) };
    }
    // SAFETY: the live IRP; the device below ours.
    unsafe { IoSkipCurrentIrpStackLocation(irp) };
    // SAFETY: as above.
    unsafe { IoCallDriver(lower, irp) }
}

/// Requests to the control device: opening and closing it succeed, nothing else is supported.
///
/// # Safety
/// `irp` must be the live IRP of the running dispatch routine.
unsafe fn complete_at_control_device(irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the live IRP.
    let location = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current location, ours.
    let major = unsafe { (*location).MajorFunction };
    let status = match major {
        IRP_MJ_CREATE | IRP_MJ_CLEANUP | IRP_MJ_CLOSE => STATUS_SUCCESS,
        _ => STATUS_INVALID_DEVICE_REQUEST,
    };
    // SAFETY: the IRP is ours until completed.
    let io = unsafe { &mut (*irp).IoStatus };
    io.Anonymous.Status = status;
    io.Information = 0;
    // SAFETY: completed once.
    unsafe { IoCompleteRequest(irp, 0) };
    status
}

/// The completion routine of every IRP at a volume: propagates the pending flag.
///
/// # Context
/// Any IRQL up to `DISPATCH_LEVEL`.
unsafe extern "system" fn volume_completion(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    _context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the IRP being completed.
    if unsafe { (*irp).PendingReturned } {
        // SAFETY: as above; our location is current during our completion routine.
        unsafe { IoMarkIrpPending(irp) };
    }
    STATUS_SUCCESS
}

/// A mount request: sent down with a completion routine that signals the wait; then, if the
/// mount succeeded, attach to the new volume device.
///
/// # Safety
/// `irp` must be the live mount request at our location; `lower` the device below ours.
unsafe fn mount(lower: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the live IRP.
    let location = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current location, ours.
    let location = unsafe { &*location };
    // SAFETY: the member of a mount request.
    let vpb = unsafe { location.Parameters.MountVolume.Vpb };
    // The real device, saved before the request goes down: the file system may swap the VPB.
    // SAFETY: the VPB the I/O manager passed.
    let real = unsafe { vpb.as_ref() }.map_or(null_mut(), |v| v.RealDevice);
    let mut event = KEVENT::default();
    // SAFETY: our event, alive until the wait ends.
    unsafe { KeInitializeEvent(&mut event, NotificationEvent, false) };
    // SAFETY: the live IRP with a location below ours.
    unsafe { IoCopyCurrentIrpStackLocationToNext(irp) };
    let context = (&raw mut event).cast::<c_void>();
    // SAFETY: as above; the routine and the event stay valid until the completion signals.
    unsafe { IoSetCompletionRoutine(irp, mount_completion, context, true, true, true) };
    // SAFETY: the device below ours and the IRP set up for it.
    if unsafe { IoCallDriver(lower, irp) } == STATUS_PENDING {
        // SAFETY: our initialized event.
        let _ = unsafe {
            KeWaitForSingleObject((&raw const event).cast(), EXECUTIVE, KERNEL_MODE, false, null())
        };
    }
    // SAFETY: the IRP is ours again: the completion routine stopped its completion.
    let io = unsafe { &(*irp).IoStatus };
    // SAFETY: `Status` is the member a completed IRP carries.
    let status = unsafe { io.Anonymous.Status };
    if status >= 0 && !real.is_null() {
        // SAFETY: the real device, live; its VPB re-read after the mount.
        let vpb = unsafe { (*real).Vpb };
        // SAFETY: a live VPB, or null.
        let volume = unsafe { vpb.as_ref() }.map_or(null_mut(), |v| v.DeviceObject);
        // SAFETY: the mounted volume device, live.
        if !volume.is_null() && unsafe { !attached_to(volume) } {
            // SAFETY: as above; PASSIVE_LEVEL in the requester's thread.
            let _ = unsafe { attach(volume, KIND_VOLUME) };
        }
    }
    // SAFETY: completing the request the completion routine held.
    unsafe { IoCompleteRequest(irp, 0) };
    status
}

/// The mount request's completion routine: wakes the waiting dispatch routine and keeps the IRP.
///
/// # Context
/// Any IRQL up to `DISPATCH_LEVEL`.
unsafe extern "system" fn mount_completion(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the event of the waiting dispatch routine.
    unsafe { KeSetEvent(context.cast(), 0, false) };
    STATUS_MORE_PROCESSING_REQUIRED
}

// ---------------------------------------------------------------------------------------------
// Fast I/O

/// The lower driver's fast-I/O table and the device below `device`.
///
/// # Safety
/// `device` must be one of our live devices.
unsafe fn lower_table<'a>(
    device: *const DEVICE_OBJECT,
) -> Option<(&'a FAST_IO_DISPATCH, *mut DEVICE_OBJECT)> {
    // SAFETY: the caller guarantees one of our devices.
    let lower = unsafe { extension(device) }?.lower;
    if lower.is_null() {
        return None;
    }
    // SAFETY: the device below ours stays alive while we are attached; its driver object too.
    let driver = unsafe { (*lower).DriverObject };
    // SAFETY: a live driver object.
    let table = unsafe { (*driver).FastIoDispatch };
    // SAFETY: a driver's fast-I/O table is static data of that driver.
    let table = unsafe { table.as_ref() }?;
    Some((table, lower))
}

/// The lower table's entry `$field`, if its declared size covers it.
macro_rules! entry {
    ($table:expr, $field:ident) => {
        if offset_of!(FAST_IO_DISPATCH, $field) + size_of::<usize>()
            <= $table.SizeOfFastIoDispatch as usize
        {
            $table.$field
        } else {
            None
        }
    };
}

/// A fast-I/O routine that calls the lower driver's, or answers FALSE (the I/O manager then
/// builds an IRP).
macro_rules! pass_through {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "system" fn $name($($arg: $ty,)* device: *const DEVICE_OBJECT) -> bool {
            // SAFETY: the I/O manager calls us with one of our devices.
            let Some((table, lower)) = (unsafe { lower_table(device) }) else { return false };
            match entry!(table, $field) {
                // SAFETY: the lower driver's routine, the caller's arguments, its device.
                Some(f) => unsafe { f($($arg,)* lower) },
                None => false,
            }
        }
    };
}

pass_through!(fast_io_check_if_possible, FastIoCheckIfPossible, (file: *const FILE_OBJECT, offset: *const i64, length: u32, wait: bool, key: u32, check_read: bool, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_read, FastIoRead, (file: *const FILE_OBJECT, offset: *const i64, length: u32, wait: bool, key: u32, buffer: *mut c_void, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_write, FastIoWrite, (file: *const FILE_OBJECT, offset: *const i64, length: u32, wait: bool, key: u32, buffer: *const c_void, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_query_basic_info, FastIoQueryBasicInfo, (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_BASIC_INFORMATION, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_query_standard_info, FastIoQueryStandardInfo, (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_STANDARD_INFORMATION, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_lock, FastIoLock, (file: *const FILE_OBJECT, offset: *const i64, length: *const i64, process: PEPROCESS, key: u32, fail_immediately: bool, exclusive: bool, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_unlock_single, FastIoUnlockSingle, (file: *const FILE_OBJECT, offset: *const i64, length: *const i64, process: PEPROCESS, key: u32, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_unlock_all, FastIoUnlockAll, (file: *const FILE_OBJECT, process: PEPROCESS, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_unlock_all_by_key, FastIoUnlockAllByKey, (file: *const FILE_OBJECT, process: *const c_void, key: u32, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_device_control, FastIoDeviceControl, (file: *const FILE_OBJECT, wait: bool, input: *const c_void, input_length: u32, output: *mut c_void, output_length: u32, code: u32, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_query_network_open_info, FastIoQueryNetworkOpenInfo, (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_NETWORK_OPEN_INFORMATION, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_mdl_read, MdlRead, (file: *const FILE_OBJECT, offset: *const i64, length: u32, key: u32, chain: *mut *mut MDL, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_mdl_read_complete, MdlReadComplete, (file: *const FILE_OBJECT, chain: *const MDL));
pass_through!(fast_io_prepare_mdl_write, PrepareMdlWrite, (file: *const FILE_OBJECT, offset: *const i64, length: u32, key: u32, chain: *mut *mut MDL, iosb: *mut IO_STATUS_BLOCK));
pass_through!(fast_io_mdl_write_complete, MdlWriteComplete, (file: *const FILE_OBJECT, offset: *const i64, chain: *const MDL));
pass_through!(fast_io_read_compressed, FastIoReadCompressed, (file: *const FILE_OBJECT, offset: *const i64, length: u32, key: u32, buffer: *mut c_void, chain: *mut *mut MDL, iosb: *mut IO_STATUS_BLOCK, info: *mut COMPRESSED_DATA_INFO, info_length: u32));
pass_through!(fast_io_write_compressed, FastIoWriteCompressed, (file: *const FILE_OBJECT, offset: *const i64, length: u32, key: u32, buffer: *const c_void, chain: *mut *mut MDL, iosb: *mut IO_STATUS_BLOCK, info: *const COMPRESSED_DATA_INFO, info_length: u32));
pass_through!(fast_io_mdl_read_complete_compressed, MdlReadCompleteCompressed, (file: *const FILE_OBJECT, chain: *const MDL));
pass_through!(fast_io_mdl_write_complete_compressed, MdlWriteCompleteCompressed, (file: *const FILE_OBJECT, offset: *const i64, chain: *const MDL));

/// `FastIoQueryOpen`: the IRP's current location names our device; the lower driver sees its
/// own device there during the call.
///
/// # Context
/// `PASSIVE_LEVEL`, the requester's thread.
unsafe extern "system" fn fast_io_query_open(
    irp: *mut IRP,
    info: *mut FILE_NETWORK_OPEN_INFORMATION,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the I/O manager calls us with one of our devices.
    let Some((table, lower)) = (unsafe { lower_table(device) }) else { return false };
    let Some(f) = entry!(table, FastIoQueryOpen) else { return false };
    // SAFETY: the caller's live IRP.
    let location = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current location, ours for the duration of this call.
    unsafe { (*location).DeviceObject = lower };
    // SAFETY: the lower driver's routine, the caller's arguments, its device.
    let handled = unsafe { f(irp, info, lower) };
    // SAFETY: as above.
    unsafe { (*location).DeviceObject = device.cast_mut() };
    handled
}

/// `FastIoDetachDevice`: the device we are attached to is being deleted.
///
/// # Context
/// `PASSIVE_LEVEL`.
unsafe extern "system" fn fast_io_detach_device(
    source: *const DEVICE_OBJECT,
    target: *const DEVICE_OBJECT,
) {
    // SAFETY: the I/O manager passes our device and the one below it.
    if let Some(ext) = unsafe { extension(source) } {
        ext.lower = null_mut();
    }
    // SAFETY: as above: detach, then delete ours.
    unsafe { IoDetachDevice(target.cast_mut()) };
    // SAFETY: ours, detached.
    unsafe { IoDeleteDevice(source) };
}

/// The fast-I/O table. The acquire/release entries stay NULL: the I/O manager bypasses filters'
/// entries for them and uses FsFilter callbacks instead.
static FAST_IO: FAST_IO_DISPATCH = FAST_IO_DISPATCH {
    SizeOfFastIoDispatch: size_of::<FAST_IO_DISPATCH>() as u32,
    FastIoCheckIfPossible: Some(fast_io_check_if_possible),
    FastIoRead: Some(fast_io_read),
    FastIoWrite: Some(fast_io_write),
    FastIoQueryBasicInfo: Some(fast_io_query_basic_info),
    FastIoQueryStandardInfo: Some(fast_io_query_standard_info),
    FastIoLock: Some(fast_io_lock),
    FastIoUnlockSingle: Some(fast_io_unlock_single),
    FastIoUnlockAll: Some(fast_io_unlock_all),
    FastIoUnlockAllByKey: Some(fast_io_unlock_all_by_key),
    FastIoDeviceControl: Some(fast_io_device_control),
    AcquireFileForNtCreateSection: None,
    ReleaseFileForNtCreateSection: None,
    FastIoDetachDevice: Some(fast_io_detach_device),
    FastIoQueryNetworkOpenInfo: Some(fast_io_query_network_open_info),
    AcquireForModWrite: None,
    MdlRead: Some(fast_io_mdl_read),
    MdlReadComplete: Some(fast_io_mdl_read_complete),
    PrepareMdlWrite: Some(fast_io_prepare_mdl_write),
    MdlWriteComplete: Some(fast_io_mdl_write_complete),
    FastIoReadCompressed: Some(fast_io_read_compressed),
    FastIoWriteCompressed: Some(fast_io_write_compressed),
    MdlReadCompleteCompressed: Some(fast_io_mdl_read_complete_compressed),
    MdlWriteCompleteCompressed: Some(fast_io_mdl_write_complete_compressed),
    FastIoQueryOpen: Some(fast_io_query_open),
    ReleaseForModWrite: None,
    AcquireForCcFlush: None,
    ReleaseForCcFlush: None,
};
