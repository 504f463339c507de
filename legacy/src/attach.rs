//! Attachment, as facts.md §1.2–§1.5 describe it: to each file system's control device from the
//! `IoRegisterFsRegistrationChange` routine (the recognizer skipped), to RAW by name, to new
//! volumes from the mount request's completion, to volumes already mounted through
//! `IoEnumerateDeviceObjectList`; instance setup emulated before every volume attachment.

use core::sync::atomic::Ordering;

use fsfilter::trace::TraceEvent;
use fsfilter::{
    DataScanMode, FilesystemType, Filter, InstanceId, InstanceSetup, InstanceSetupFlags, Status,
    TeardownFlags, VolumeDeviceType, VolumeInfo, device_type,
};
use fsfilter_kernel::constants::{characteristics, do_flags};
use fsfilter_kernel::irp::{
    IO_NO_INCREMENT, IoCallDriver, IoCompleteRequest, IoCopyCurrentIrpStackLocationToNext,
};
use fsfilter_kernel::pool::PoolPointers;
use fsfilter_kernel::{trace, unicode, wide};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, IRP, KEVENT};
use windows_sys::Wdk::Storage::FileSystem::{
    IoEnumerateDeviceObjectList, IoGetDiskDeviceObject, IoGetLowerDeviceObject,
};
use windows_sys::Wdk::System::SystemServices::{
    DelayedWorkQueue, IoAllocateWorkItem, IoAttachDeviceToDeviceStackSafe, IoCreateDevice,
    IoDeleteDevice, IoDetachDevice, IoFreeWorkItem, IoGetAttachedDeviceReference,
    IoGetDeviceObjectPointer, IoQueueWorkItem, KeDelayExecutionThread, KeInitializeEvent,
    KeInitializeMutex, KeReleaseMutex, KeSetEvent, KeWaitForSingleObject, ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::NTSTATUS;
use windows_sys::Win32::System::Kernel::{NotificationEvent, SynchronizationEvent};

use crate::dispatch;
use crate::raw;
use crate::services::OpServices;
use crate::state::{DeviceExt, DeviceKind, DriverState, WORK_TAG};

/// How many times an attach to a still-initializing volume is retried (sfilter's count, facts.md
/// §1.5), and the delay between tries.
const ATTACH_RETRIES: u32 = 8;
const ATTACH_RETRY_DELAY_MS: i64 = 500;

/// The `IoRegisterFsRegistrationChange` routine: a file system registered (or unregistered) its
/// control device.
pub(crate) unsafe extern "system" fn fs_notification<F: Filter>(
    cdo: *const DEVICE_OBJECT,
    active: bool,
) {
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
    // A notification during unload attaches nothing (the attach paths check under the attach
    // lock) and detaches once (`detach`).
    if active {
        // SAFETY: the I/O manager passes a live control device.
        unsafe { attach_to_file_system(state, cdo) };
    } else {
        // SAFETY: as above.
        unsafe { detach_from_chain(state, cdo) };
    }
}

/// True for the file-system recognizer's devices, which sfilter leaves alone and waits for the
/// real file system instead (facts.md §1.2).
///
/// # Safety
/// `device` must be live.
unsafe fn is_recognizer(device: *const DEVICE_OBJECT) -> bool {
    // SAFETY: the caller guarantees a live device.
    let name = unsafe { raw::driver_name(device) };
    named(name, "\\FileSystem\\Fs_Rec")
}

/// True when the UTF-16 `name` is the ASCII `ascii`, ignoring case (the constant is kept as
/// ASCII: half the bytes of a wide one).
fn named(name: &[u16], ascii: &str) -> bool {
    name.len() == ascii.len()
        && name.iter().zip(ascii.bytes()).all(|(a, b)| fold(*a) == fold(u16::from(b)))
}

fn fold(c: u16) -> u16 {
    if (u16::from(b'a')..=u16::from(b'z')).contains(&c) { c - 32 } else { c }
}

/// The file-system type of a volume device, from its driver's name.
///
/// # Safety
/// `device` must be live.
pub(crate) unsafe fn filesystem_of(device: *const DEVICE_OBJECT) -> FilesystemType {
    // SAFETY: the caller guarantees a live device.
    let name = unsafe { raw::driver_name(device) };
    let last = name.rsplit(|&c| c == u16::from(b'\\')).next().unwrap_or(&[]);
    let is = |s: &str| named(last, s);
    if is("NTFS") {
        FilesystemType::Ntfs
    } else if is("FASTFAT") || is("FAT") {
        FilesystemType::Fat
    } else if is("EXFAT") {
        FilesystemType::Exfat
    } else if is("REFS") {
        FilesystemType::Refs
    } else if is("CDFS") {
        FilesystemType::Cdfs
    } else if is("UDFS") {
        FilesystemType::Udfs
    } else if is("MUP") {
        FilesystemType::Mup
    } else if is("NPFS") {
        FilesystemType::Npfs
    } else if is("MSFS") {
        FilesystemType::Msfs
    } else if is("RAW") {
        FilesystemType::Raw
    } else {
        FilesystemType::Unknown
    }
}

/// True when one of our devices is in `device`'s attachment chain.
///
/// # Safety
/// `device` must be live.
pub(crate) unsafe fn attached_to_chain<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
) -> Option<*mut DEVICE_OBJECT> {
    // SAFETY: a live device; the result is referenced.
    let mut cur = unsafe { IoGetAttachedDeviceReference(device) };
    while !cur.is_null() {
        // SAFETY: a live, referenced device.
        if unsafe { state.owns(cur) } {
            // SAFETY: drop the reference taken on `cur`.
            unsafe { ObfDereferenceObject(cur.cast()) };
            return Some(cur);
        }
        // SAFETY: a live, referenced device; the result is referenced or null.
        let lower = unsafe { IoGetLowerDeviceObject(cur) };
        // SAFETY: drop the reference taken on `cur`.
        unsafe { ObfDereferenceObject(cur.cast()) };
        if cur.cast_const() == device {
            if !lower.is_null() {
                // SAFETY: drop the reference IoGetLowerDeviceObject took.
                unsafe { ObfDereferenceObject(lower.cast()) };
            }
            break;
        }
        cur = lower;
    }
    None
}

/// Creates one of our unnamed devices of `device_type`, its extension initialized.
///
/// # Safety
/// Called at `PASSIVE_LEVEL` from this driver's code.
unsafe fn create_device<F: Filter>(
    state: &DriverState<F>,
    dtype: u32,
    kind: DeviceKind,
) -> Result<*mut DEVICE_OBJECT, Status> {
    let mut device: *mut DEVICE_OBJECT = core::ptr::null_mut();
    // SAFETY: our driver object; an unnamed device (naming a filter device is a security hole,
    // facts.md §1.2) of the target's type with room for our extension.
    let status = unsafe {
        IoCreateDevice(
            state.driver,
            core::mem::size_of::<DeviceExt<F>>() as u32,
            core::ptr::null(),
            dtype,
            0,
            false,
            &mut device,
        )
    };
    if status < 0 || device.is_null() {
        return Err(Status(status));
    }
    // SAFETY: the device we just created.
    let slot = unsafe { raw::ext_slot::<F>(device) };
    // SAFETY: its zeroed extension, sized for a DeviceExt<F>, written once.
    unsafe { slot.write(DeviceExt::new(kind, device)) };
    Ok(device)
}

/// Drops a device's extension and deletes it.
///
/// # Safety
/// `device` must be one of our devices, detached, and not used again.
pub(crate) unsafe fn delete_device<F: Filter>(device: *mut DEVICE_OBJECT) {
    // SAFETY: our device.
    let slot = unsafe { raw::ext_slot::<F>(device) };
    // SAFETY: the extension `create_device` wrote, dropped once.
    unsafe { core::ptr::drop_in_place(slot) };
    // SAFETY: our device, deleted once.
    unsafe { IoDeleteDevice(device) };
}

/// Deletes our device that was never attached, unless unload has begun
/// ([`delete_outside_unload`]): unload's last loop deletes it then.
///
/// # Safety
/// `device` must be one of our devices, never attached, and not used again.
unsafe fn delete_unattached<F: Filter>(state: &DriverState<F>, device: *mut DEVICE_OBJECT) {
    if delete_outside_unload(state) {
        // SAFETY: the caller's device, deleted once.
        unsafe { delete_device::<F>(device) };
    }
    deleted_outside_unload(state);
}

/// Copies the flags a filter device must share with the device it attaches to: `DO_BUFFERED_IO`,
/// `DO_DIRECT_IO`, `DO_SUPPORTS_TRANSACTIONS` and `FILE_DEVICE_SECURE_OPEN`, before attaching
/// (IRPs may arrive the instant the attach succeeds, facts.md §1.2).
///
/// # Safety
/// Both devices must be live; `ours` not yet attached.
unsafe fn copy_flags(ours: *mut DEVICE_OBJECT, target: *const DEVICE_OBJECT) {
    // SAFETY: live (the caller's guarantee) and not yet visible to anyone.
    let o = unsafe { &mut *ours };
    // SAFETY: live.
    let t = unsafe { raw::device(target) };
    o.Flags |=
        t.Flags & (do_flags::BUFFERED_IO | do_flags::DIRECT_IO | do_flags::SUPPORTS_TRANSACTIONS);
    o.Characteristics |= t.Characteristics & characteristics::DEVICE_SECURE_OPEN;
}

/// Attaches our `device` to the top of `target`'s stack, retrying while the top is initializing,
/// with the work item of its retirement ([`retire`]) allocated first: an attach that cannot have
/// one fails with `STATUS_INSUFFICIENT_RESOURCES`. The device it attached to is written to the
/// `lower` field of `device`'s extension: the I/O manager fills it under its lock, before any
/// request can reach `device` (`IoAttachDeviceToDeviceStackSafe`, facts.md §1.3; a request may
/// come the instant the attach succeeds, before this returns). The device is counted among the
/// driver's live devices before it can be seen, since it can be detached, and retired, as soon
/// as it is attached.
///
/// # Safety
/// Both live; `device` ours and unattached, with no reference to its extension in use.
unsafe fn attach<F: Filter>(
    state: &DriverState<F>,
    device: *mut DEVICE_OBJECT,
    target: *const DEVICE_OBJECT,
    retry: bool,
) -> Result<(), Status> {
    // SAFETY: our device.
    let item = unsafe { IoAllocateWorkItem(device) };
    if item == 0 {
        return Err(Status::INSUFFICIENT_RESOURCES);
    }
    // SAFETY: our device.
    let slot = unsafe { raw::ext_slot::<F>(device) };
    // SAFETY: its initialized extension, with no reference to it in use.
    unsafe { (*slot).retire_item = item };
    // SAFETY: as above; the I/O manager writes this field, under its lock.
    let lower = unsafe { &raw mut (*slot).lower };
    let tries = if retry { ATTACH_RETRIES } else { 1 };
    let mut status = Status::NO_SUCH_DEVICE;
    state.device_attached();
    for attempt in 0..tries {
        if attempt > 0 {
            let interval = -ATTACH_RETRY_DELAY_MS * 10_000;
            // SAFETY: PASSIVE_LEVEL attach path; a relative wait.
            let _ = unsafe { KeDelayExecutionThread(0, false, &interval) };
        }
        // SAFETY: two live devices; our extension's field.
        status = Status(unsafe { IoAttachDeviceToDeviceStackSafe(device, target, lower) });
        if status.is_success() {
            // SAFETY: our device, now attached; let others attach above it (facts.md §1.2).
            unsafe { (*device).Flags &= !do_flags::DEVICE_INITIALIZING };
            return Ok(());
        }
    }
    state.device_retired();
    // SAFETY: the work item allocated above, never queued, freed once.
    unsafe { IoFreeWorkItem(item) };
    Err(status)
}

/// Attaches to a file system's control device, then to its mounted volumes.
///
/// # Safety
/// `cdo` must be a live control device.
unsafe fn attach_to_file_system<F: Filter>(state: &DriverState<F>, cdo: *const DEVICE_OBJECT) {
    // SAFETY: live.
    let dtype = unsafe { (*cdo).DeviceType };
    if !matches!(
        dtype,
        device_type::DISK_FILE_SYSTEM
            | device_type::CD_ROM_FILE_SYSTEM
            | device_type::NETWORK_FILE_SYSTEM
    ) {
        return;
    }
    // SAFETY: live.
    if unsafe { is_recognizer(cdo) } {
        return;
    }
    // SAFETY: live.
    if unsafe { attached_to_chain(state, cdo) }.is_some() {
        return;
    }
    if dtype == device_type::NETWORK_FILE_SYSTEM {
        // A redirector has no mounts and no volume devices: file I/O on its shares arrives at
        // this device, which the Filter Manager treats as a volume. So does the model: an
        // instance here, new when the file system registered after our load.
        let flags = if state.started.load(Ordering::Acquire) {
            InstanceSetupFlags::AUTOMATIC_ATTACHMENT | InstanceSetupFlags::NEWLY_MOUNTED_VOLUME
        } else {
            InstanceSetupFlags::AUTOMATIC_ATTACHMENT
        };
        // SAFETY: the live control device, which is its own volume; no real device.
        let _ = unsafe { attach_to_volume(state, cdo, core::ptr::null(), flags, None) };
        return;
    }
    lock(state);
    // SAFETY: the caller's live control device, the attach lock held.
    let attached = unsafe { attach_to_control_device(state, cdo, dtype) };
    unlock(state);
    if attached {
        // SAFETY: live control device.
        unsafe { attach_to_mounted_volumes(state, cdo) };
    }
}

/// Attaches a new device of ours to a file system's control device, unless unload began; says
/// whether it did.
///
/// # Safety
/// `cdo` must be a live control device of type `dtype`, the attach lock held.
unsafe fn attach_to_control_device<F: Filter>(
    state: &DriverState<F>,
    cdo: *const DEVICE_OBJECT,
    dtype: u32,
) -> bool {
    // As in `attach_locked`.
    if state.unloading.load(Ordering::Acquire) {
        return false;
    }
    // SAFETY: PASSIVE_LEVEL, our driver.
    let Ok(device) = (unsafe { create_device::<F>(state, dtype, DeviceKind::FileSystem) }) else {
        return false;
    };
    // SAFETY: both live.
    unsafe { copy_flags(device, cdo) };
    // SAFETY: both live, ours unattached, with no reference to its extension in use.
    if unsafe { attach(state, device, cdo, false) }.is_err() {
        // SAFETY: never attached.
        unsafe { delete_unattached(state, device) };
        return false;
    }
    true
}

/// Enumerates a file system's devices and attaches to each mounted volume (facts.md §1.5).
///
/// # Safety
/// `cdo` must be a live control device.
unsafe fn attach_to_mounted_volumes<F: Filter>(state: &DriverState<F>, cdo: *const DEVICE_OBJECT) {
    // SAFETY: live.
    let c = unsafe { raw::device(cdo) };
    let (driver, dtype) = (c.DriverObject, c.DeviceType);
    let mut count = 0u32;
    // SAFETY: sizing call.
    let _ = unsafe { IoEnumerateDeviceObjectList(driver, core::ptr::null_mut(), 0, &mut count) };
    // Sized by the count, again if devices came between the calls (a few tries: mounts are rare).
    // A list too small still holds as many devices as fit, each referenced
    // (STATUS_BUFFER_TOO_SMALL with the new count): those are attached to and released before the
    // next try, which skips the stacks attached to already.
    let mut tries = 0;
    loop {
        if count == 0 || tries == 4 {
            return;
        }
        tries += 1;
        let Ok(mut list) = PoolPointers::<DEVICE_OBJECT>::try_zeroed(count as usize, WORK_TAG)
        else {
            return;
        };
        // SAFETY: our list of `list.len()` entries; every device returned is referenced.
        let status = unsafe {
            IoEnumerateDeviceObjectList(
                driver,
                list.as_mut_ptr(),
                list.byte_len() as u32,
                &mut count,
            )
        };
        // Entries not filled stay NULL (the list is zeroed).
        for &dev in list.iter() {
            if dev.is_null() {
                continue;
            }
            // SAFETY: a referenced device of the file system.
            let d = unsafe { raw::device(dev) };
            let (t, flags) = (d.DeviceType, d.Flags);
            // sfilter's skips: the control device itself, other types, named devices (other
            // control devices), volumes with no storage device, stacks we are on already.
            let candidate =
                dev.cast_const() != cdo && t == dtype && flags & do_flags::DEVICE_HAS_NAME == 0;
            if candidate {
                let mut disk: *mut DEVICE_OBJECT = core::ptr::null_mut();
                // SAFETY: a referenced device; the disk device comes back referenced.
                let has_disk = unsafe { IoGetDiskDeviceObject(dev, &mut disk) } >= 0;
                if has_disk {
                    // SAFETY: live volume device.
                    if unsafe { attached_to_chain(state, dev) }.is_none() {
                        // SAFETY: a live volume device and its storage device.
                        unsafe {
                            attach_to_volume(
                                state,
                                dev,
                                disk,
                                InstanceSetupFlags::AUTOMATIC_ATTACHMENT,
                                None,
                            )
                        };
                    }
                    // SAFETY: drop the reference IoGetDiskDeviceObject took.
                    unsafe { ObfDereferenceObject(disk.cast()) };
                }
            }
            // SAFETY: drop the reference the enumeration took.
            unsafe { ObfDereferenceObject(dev.cast()) };
        }
        if status != Status::BUFFER_TOO_SMALL.0 {
            return;
        }
    }
}

/// Emulates instance setup for a volume and attaches to it when accepted. `precreated` is a
/// device made before a mount request went down.
///
/// # Safety
/// `vdo` and `real` must be live; `precreated` ours and unattached.
pub(crate) unsafe fn attach_to_volume<F: Filter>(
    state: &DriverState<F>,
    vdo: *const DEVICE_OBJECT,
    real: *const DEVICE_OBJECT,
    flags: InstanceSetupFlags,
    precreated: Option<*mut DEVICE_OBJECT>,
) -> bool {
    lock(state);
    // SAFETY: the caller's live devices.
    let attached = unsafe { attach_locked(state, vdo, real, flags, precreated) };
    unlock(state);
    attached
}

/// # Safety
/// As [`attach_to_volume`], with the attach lock held.
unsafe fn attach_locked<F: Filter>(
    state: &DriverState<F>,
    vdo: *const DEVICE_OBJECT,
    real: *const DEVICE_OBJECT,
    flags: InstanceSetupFlags,
    precreated: Option<*mut DEVICE_OBJECT>,
) -> bool {
    // Unload takes the lock after it began, so an attach after that finds it began, and gives
    // up: unload does not see devices attached after it walked its list.
    // SAFETY: live.
    if state.unloading.load(Ordering::Acquire) || unsafe { attached_to_chain(state, vdo) }.is_some()
    {
        if let Some(d) = precreated {
            // SAFETY: ours, never attached.
            unsafe { delete_unattached(state, d) };
        }
        return false;
    }
    // SAFETY: live.
    let dtype = unsafe { (*vdo).DeviceType };
    let device = match precreated {
        Some(d) => d,
        // SAFETY: PASSIVE_LEVEL, our driver.
        None => match unsafe { create_device::<F>(state, dtype, DeviceKind::Volume) } {
            Ok(d) => d,
            Err(_) => return false,
        },
    };
    // SAFETY: our device.
    let slot = unsafe { raw::ext_slot::<F>(device) };
    // SAFETY: its initialized extension; nothing can reach the device before the attach below,
    // after which this reference is not used.
    let ext = unsafe { &mut *slot };
    ext.kind = DeviceKind::Volume;
    ext.real_device = real.cast_mut();
    let volume = VolumeInfo {
        device_type: VolumeDeviceType::from_raw(dtype),
        // SAFETY: live.
        filesystem: unsafe { filesystem_of(vdo) },
    };
    let data_scan = if fsfilter::scans_data::<F>() && state.registration.scans_data() {
        DataScanMode::FsRtlFallback
    } else {
        DataScanMode::NotRequested
    };
    let id = InstanceId(device as usize);
    let context = if state.registration.callbacks().instance_setup {
        let services = OpServices::<F>::new(state, device, 0, data_scan);
        let setup = InstanceSetup { flags, volume, data_scan, id, services: &services };
        let answer = state.filter.instance_setup(&setup);
        let status = match &answer {
            Ok(_) => Status::SUCCESS,
            Err(e) => e.status(),
        };
        trace::emit(&TraceEvent::InstanceSetup {
            instance: id,
            volume_object: vdo as usize,
            flags,
            volume,
            data_scan,
            status,
        });
        answer.ok()
    } else {
        state.filter.default_instance()
    };
    let Some(context) = context else {
        // SAFETY: ours, never attached.
        unsafe { delete_unattached(state, device) };
        return false;
    };
    ext.instance = Some(crate::state::InstanceState { context, volume, data_scan });
    // SAFETY: both live.
    unsafe { copy_flags(device, vdo) };
    // The extension is complete: from the attach on, requests may read it (`ext` is not used
    // again).
    // SAFETY: both live, ours unattached; no reference to its extension is in use from here.
    if unsafe { attach(state, device, vdo, true) }.is_err() {
        // The filter accepted a volume it will never see after all (its device stayed
        // initializing past the last try, say): the instance it was told of is torn down, as
        // the Filter Manager's internal error (facts.md §2.5), before the device goes. Both
        // callbacks are called here rather than through `detach` and `teardown_complete`: the
        // device was never attached, no operation can be in flight on it, and this way the
        // path costs no code in a driver whose teardown callbacks do nothing (probe-legacy.sys
        // has no `.text` to spare; docs/performance.md, sizes).
        // SAFETY: ours, never attached: nothing else uses it.
        let ext = unsafe { state.ext(device) };
        if let Some(instance) = ext.and_then(|ext| dispatch::instance_view(device, ext)) {
            let reason = TeardownFlags::INTERNAL_ERROR;
            let callbacks = state.registration.callbacks();
            if callbacks.instance_teardown_start {
                state.filter.instance_teardown_start(&instance, reason);
                trace::emit(&TraceEvent::TeardownStart { instance: instance.id, reason });
            }
            if callbacks.instance_teardown_complete {
                state.filter.instance_teardown_complete(&instance, reason);
                trace::emit(&TraceEvent::TeardownComplete { instance: instance.id, reason });
            }
        }
        // SAFETY: ours, never attached.
        unsafe { delete_unattached(state, device) };
        return false;
    }
    true
}

/// The mount path (facts.md §1.4, sfilter's pattern): save the real device before sending the
/// request down, wait for the file system's answer, re-read the VPB, attach to the new volume.
///
/// # Safety
/// `irp` must be a live mount request at our file-system device.
pub(crate) unsafe fn mount_volume<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    ext: &DeviceExt<F>,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the live mount request.
    let sl = unsafe { raw::location(irp) };
    // SAFETY: the mount member; the VPB is valid now (it may be swapped by the file system).
    let vpb = unsafe { sl.Parameters.MountVolume.Vpb };
    // SAFETY: a live VPB.
    let real = unsafe { vpb.as_ref() }.map_or(core::ptr::null_mut(), |v| v.RealDevice);
    // SAFETY: live.
    let dtype = unsafe { (*device).DeviceType };
    let precreated = if real.is_null() {
        None
    } else {
        // SAFETY: PASSIVE_LEVEL, our driver: pre-create the volume device.
        unsafe { create_device::<F>(state, dtype, DeviceKind::Volume) }.ok()
    };
    let Some(precreated) = precreated else {
        // SAFETY: forwarded unchanged.
        return unsafe { dispatch::pass_through(ext, irp) };
    };
    // SAFETY: all-zero is a valid KEVENT before initialization.
    let mut event: KEVENT = unsafe { core::mem::zeroed() };
    // SAFETY: our stack event.
    unsafe { KeInitializeEvent(&mut event, NotificationEvent, false) };
    // SAFETY: the live request.
    unsafe { IoCopyCurrentIrpStackLocationToNext(irp) };
    // SAFETY: the event outlives the wait below.
    unsafe { dispatch::set_mount_completion(irp, &mut event) };
    // SAFETY: the device we attached to.
    if unsafe { IoCallDriver(ext.lower, irp) } == Status::PENDING.0 {
        // SAFETY: our event, signalled by the completion routine of a mount the file system
        // pended (one completed inside IoCallDriver is back already).
        let _ = unsafe {
            KeWaitForSingleObject((&raw const event).cast(), 0, 0, false, core::ptr::null())
        };
    }
    // SAFETY: the request is halted at our location and ours again.
    let status = unsafe { crate::view::io_status(irp) }.status;
    // Re-read the VPB through the real device: the file system may have swapped in another one.
    // Its volume device is there once the file system mounted; `VPB_MOUNTED` is not yet: the
    // I/O manager sets it when the request is back from us (FastFat and NTFS never set it).
    // SAFETY: the real device we saved is live.
    let vpb = unsafe { (*real).Vpb };
    // SAFETY: a live VPB.
    let vdo = unsafe { vpb.as_ref() }.map_or(core::ptr::null_mut(), |v| v.DeviceObject);
    if status.is_success() && !vdo.is_null() {
        let flags =
            InstanceSetupFlags::AUTOMATIC_ATTACHMENT | InstanceSetupFlags::NEWLY_MOUNTED_VOLUME;
        // SAFETY: the new volume device and its storage device; our precreated device.
        unsafe { attach_to_volume(state, vdo, real, flags, Some(precreated)) };
    } else {
        // SAFETY: ours, never attached.
        unsafe { delete_unattached(state, precreated) };
    }
    // SAFETY: finish the request we held, once.
    unsafe { IoCompleteRequest(irp, IO_NO_INCREMENT) };
    status.0
}

/// Detaches and deletes our device from `device`'s chain (a file system unregistered). A
/// redirector's device holds an instance: its unregistration is a volume dismount for it
/// (facts.md §2.5), torn down as `FastIoDetachDevice` does.
///
/// # Safety
/// `device` must be live.
unsafe fn detach_from_chain<F: Filter>(state: &DriverState<F>, device: *const DEVICE_OBJECT) {
    // SAFETY: live.
    let Some(ours) = (unsafe { attached_to_chain(state, device) }) else { return };
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(ours) }) else { return };
    // SAFETY: our live device and the device it is attached to.
    unsafe { detach(state, ours, ext.lower, TeardownFlags::VOLUME_DISMOUNT) };
}

/// Completes an instance's teardown, with the reason it started with (the Filter Manager passes
/// one reason to both callbacks). Its start is in [`detach`]; in between, the legacy model has no
/// draining: teardown waits for outstanding operations to finish instead (docs/semantics.md).
///
/// # Safety
/// `device` must be our live device (a teardown only for a volume device with an instance).
pub(crate) unsafe fn teardown_complete<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
) {
    if fsfilter::stream_context_words::<F>() > 0 {
        // Every stream context of the instance goes first (rule 28).
        // SAFETY: our device, retired: its teardown started and nothing of it is in flight; the
        // retirement's worker or unload, at PASSIVE_LEVEL.
        unsafe { crate::contexts::sweep::<F>(device) };
    }
    if fsfilter::handle_context_words::<F>() > 0 {
        // And every handle context (rule 29).
        // SAFETY: as above.
        unsafe { crate::contexts::sweep_handles::<F>(device) };
    }
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(device) }) else { return };
    let Some(instance) = dispatch::instance_view(device, ext) else { return };
    let reason = TeardownFlags::from_bits_retain(ext.torn_down.load(Ordering::Acquire));
    if state.registration.callbacks().instance_teardown_complete {
        state.filter.instance_teardown_complete(&instance, reason);
        trace::emit(&TraceEvent::TeardownComplete { instance: instance.id, reason });
    }
}

/// Detaches our device `source` from `target`, once, whoever asks first: `FastIoDetachDevice`
/// (the device below is being deleted: a dismounted volume), the unregistration of its file
/// system, or unload (`reason`). Starts the instance's teardown and detaches at once
/// (facts.md §1.7), then gives up the attachment's hold: the teardown completes and our device
/// is deleted, from its work item, once no operation of it is in flight (rule 20). (A
/// file system may delete its volume device while our close of the volume's last file is still
/// in our dispatch routine.) A second caller does nothing: the first detaches.
///
/// # Safety
/// `source` must be our live device attached to `target`.
pub(crate) unsafe fn detach<F: Filter>(
    state: &DriverState<F>,
    source: *const DEVICE_OBJECT,
    target: *const DEVICE_OBJECT,
    reason: TeardownFlags,
) {
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(source) }) else { return };
    // Every reason is a nonzero flag.
    let claim =
        ext.torn_down.compare_exchange(0, reason.bits(), Ordering::AcqRel, Ordering::Acquire);
    if claim.is_err() {
        return;
    }
    // The instance's teardown starts (volume devices with an instance only).
    if let Some(instance) = dispatch::instance_view(source, ext) {
        if state.registration.callbacks().instance_teardown_start {
            state.filter.instance_teardown_start(&instance, reason);
            trace::emit(&TraceEvent::TeardownStart { instance: instance.id, reason });
        }
    }
    if fsfilter::handle_context_words::<F>() > 0 {
        // Handle contexts leave their file objects while every close still comes through us.
        // SAFETY: our device, its teardown started, still attached; detach runs at
        // PASSIVE_LEVEL (FastIoDetachDevice, the file-system notification, unload).
        unsafe { crate::contexts::unlink_handles::<F>(source) };
    }
    // SAFETY: the device we are attached to.
    unsafe { IoDetachDevice(target.cast_mut()) };
    state.end(ext);
}

/// Begins the deletion of one of our devices outside unload, and says whether it may go on: not
/// once unload has begun. Unload walks the driver's device list without references
/// (`entry::driver_unload`): from then on only its last loop deletes devices, and it waits first
/// for the deletions that began before (`DriverState::retiring`). The count is raised before the
/// flag is read, as unload stores the flag before it reads the count: one of the two sees the
/// other. Each call is followed by one [`deleted_outside_unload`], whatever it answered.
pub(crate) fn delete_outside_unload<F: Filter>(state: &DriverState<F>) -> bool {
    state.retiring.fetch_add(1, Ordering::SeqCst);
    !state.unloading.load(Ordering::SeqCst)
}

/// Ends what [`delete_outside_unload`] began; the last one lets a waiting unload go on.
#[inline(never)]
pub(crate) fn deleted_outside_unload<F: Filter>(state: &DriverState<F>) {
    if state.retiring.fetch_sub(1, Ordering::SeqCst) == 1 && state.unloading.load(Ordering::SeqCst)
    {
        // SAFETY: the driver state's event, initialized in DriverEntry, in non-paged pool.
        unsafe { KeSetEvent(state.quiet.get(), 0, false) };
    }
}

/// Retires our device, whose last hold went (`DriverState::end`): it is detached and no
/// operation of it is in flight. Its retirement goes on in the device's work item
/// ([`retire_worker`]), allocated before the device attached so that this cannot fail.
///
/// Always from the work item: the last hold can go in a completion routine at `DISPATCH_LEVEL`
/// (a lower driver that completed from a DPC), where neither teardown complete (`PASSIVE_LEVEL`,
/// facts.md §2.5) nor `IoDeleteDevice` (`APC_LEVEL` at most) may run; and deleting a device with
/// another still attached above it may run our `DriverUnload` before `IoDeleteDevice` returns
/// (below), after which only a work item's device reference, which the I/O manager drops once
/// the routine has returned, keeps the image loaded under the returning code.
///
/// # Safety
/// `device` must be our device whose last hold the caller just dropped.
pub(crate) unsafe fn retire<F: Filter>(device: *mut DEVICE_OBJECT) {
    // SAFETY: our device, not deleted yet.
    let slot = unsafe { raw::ext_slot::<F>(device) };
    // SAFETY: its extension; its work item was set before it attached.
    let item = unsafe { (*slot).retire_item };
    // SAFETY: the device's own work item, queued once.
    unsafe {
        IoQueueWorkItem(
            item,
            fsfilter_kernel::ntos::work_item_routine_field(retire_worker::<F>),
            DelayedWorkQueue,
            core::ptr::null_mut(),
        )
    };
}

/// `DeviceExt::torn_down` of a device its retirement deletes without the counts (see
/// [`retire_worker`]): no teardown reason has every bit set.
pub(crate) const DELETING: u32 = u32::MAX;

/// The work item of [`retire`], at `PASSIVE_LEVEL`: the device's teardown completes and it is
/// deleted; once unload has begun, unload's last loop does both instead
/// ([`delete_outside_unload`]). Either way the device then leaves the driver's count of live
/// devices, which an unload waits for.
///
/// A device with another still attached above it (a Filter Manager frame, a legacy filter loaded
/// later) leaves the counts before it is deleted. Deleting it calls that device's
/// `FastIoDetachDevice`, and when it was the driver's last busy device while a stop is pending,
/// the I/O manager calls our `DriverUnload` in another worker and waits for it inside this
/// `IoDeleteDevice` (docs/simulator.md, "Pending unload"): unload must wait for nothing of ours
/// then, and the device has left the driver's device list by the time it runs. Unload cannot
/// have begun before, since a device with another above it holds a stop pending, so the counts
/// need not cover this deletion. Unless the device above detaches by itself between the read of
/// `AttachedDevice` and the deletion (its own driver unloading at that instant) while our stop
/// is pending: our unload then runs in that thread and can meet this device still listed. The
/// device is marked ([`DELETING`]) before it leaves the counts, and unload's last loop leaves a
/// marked device to this worker. What stays open is narrower: unload's walks read the device
/// without a reference, and this worker could delete it and return, and the I/O manager free
/// it, between two of those reads; only `IoEnumerateDeviceObjectList` would close that
/// (docs/reliability.md).
unsafe extern "system" fn retire_worker<F: Filter>(
    device: *mut DEVICE_OBJECT,
    _context: *mut core::ffi::c_void,
) {
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
    // SAFETY: our retired device, whose work item runs this.
    let slot = unsafe { raw::ext_slot::<F>(device) };
    // SAFETY: its extension, live until the device is deleted below.
    let item = unsafe { (*slot).retire_item };
    // SAFETY: the work item running this (the I/O manager keeps the device referenced until it
    // returns), freed once.
    unsafe { IoFreeWorkItem(item) };
    let own = delete_outside_unload(state);
    if own {
        // SAFETY: our device, retired: nothing else uses it.
        unsafe { teardown_complete(state, device) };
    }
    // Read after the filter's callback, as late as it can be before the deletion.
    // SAFETY: our live device.
    let above = unsafe { (*device).AttachedDevice };
    if above.is_null() {
        if own {
            // SAFETY: ours, detached, deleted once.
            unsafe { delete_device::<F>(device) };
        }
        deleted_outside_unload(state);
        state.device_retired();
    } else {
        if own {
            // Marked as this worker's to delete, before it leaves the counts (whose decrement
            // publishes the mark to an unload that waited for it): an unload that meets the
            // device still listed leaves it alone (the window above).
            // SAFETY: its extension, live until the device is deleted below.
            unsafe { (*slot).torn_down.store(DELETING, Ordering::Relaxed) };
        }
        deleted_outside_unload(state);
        state.device_retired();
        if own {
            // SAFETY: ours, detached, deleted once; nothing of the driver's state is used after.
            unsafe { delete_device::<F>(device) };
        }
    }
}

/// Attaches to RAW's control devices by name (RAW is never reported to registration routines,
/// facts.md §1.1).
///
/// # Safety
/// Called from `DriverEntry` at `PASSIVE_LEVEL`.
pub(crate) unsafe fn attach_to_raw<F: Filter>(state: &DriverState<F>) {
    for name in [wide!("\\Device\\RawDisk"), wide!("\\Device\\RawCdRom")] {
        let us = unicode::unicode_string(name);
        let mut file: *mut FILE_OBJECT = core::ptr::null_mut();
        let mut device: *mut DEVICE_OBJECT = core::ptr::null_mut();
        // SAFETY: a valid name; the file object comes back referenced.
        let status = unsafe {
            IoGetDeviceObjectPointer(
                &us,
                0x0001_0000 /* FILE_READ_ATTRIBUTES */ >> 9,
                &mut file,
                &mut device,
            )
        };
        if status < 0 {
            continue;
        }
        // That is the top of the stack, another filter's device when one is attached to RAW
        // already: RAW's own control device is at the bottom (its driver's devices are the RAW
        // volumes to enumerate).
        let mut raw = device;
        loop {
            // SAFETY: a live device of the stack; the result is referenced or null.
            let lower = unsafe { IoGetLowerDeviceObject(raw) };
            if lower.is_null() {
                break;
            }
            if raw != device {
                // SAFETY: drop the reference the previous step took.
                unsafe { ObfDereferenceObject(raw.cast()) };
            }
            raw = lower;
        }
        // SAFETY: the RAW control device, live while its file object is referenced.
        unsafe { attach_to_file_system(state, raw) };
        if raw != device {
            // SAFETY: drop the reference the last step took.
            unsafe { ObfDereferenceObject(raw.cast()) };
        }
        // SAFETY: drop the file object reference.
        unsafe { ObfDereferenceObject(file.cast()) };
    }
}

/// Takes the attach lock, the driver state's kernel mutex, at `PASSIVE_LEVEL`: the thread stays
/// at `PASSIVE_LEVEL` with normal kernel APCs disabled until `unlock` (Learn, "Mutex Objects"),
/// so it cannot be suspended while it holds the lock.
#[inline(never)]
pub(crate) fn lock<F: Filter>(state: &DriverState<F>) {
    let mutex = state.attach_lock.get();
    // SAFETY: the driver state's initialized mutex, in non-paged pool.
    let _ = unsafe { KeWaitForSingleObject(mutex.cast(), 0, 0, false, core::ptr::null()) };
}

/// Releases the attach lock, in the thread that took it.
#[inline(never)]
pub(crate) fn unlock<F: Filter>(state: &DriverState<F>) {
    let mutex = state.attach_lock.get();
    // SAFETY: the driver state's initialized mutex, owned by this thread (`lock`).
    unsafe { KeReleaseMutex(mutex, false) };
}

/// Initializes the attach lock, a kernel mutex (free), and the driver state's events,
/// synchronization events both, not signalled: `drained`, set once for a waiting unload, and
/// `quiet`.
pub(crate) fn init_events<F: Filter>(state: &mut DriverState<F>) {
    // SAFETY: the state's mutex storage, in non-paged pool; the level is reserved (zero).
    unsafe { KeInitializeMutex(state.attach_lock.get_mut(), 0) };
    // SAFETY: as above.
    unsafe { KeInitializeEvent(state.drained.get_mut(), SynchronizationEvent, false) };
    // SAFETY: as above.
    unsafe { KeInitializeEvent(state.quiet.get_mut(), SynchronizationEvent, false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_folding_is_ascii() {
        assert_eq!(fold(u16::from(b'a')), u16::from(b'A'));
        assert_eq!(fold(u16::from(b'Z')), u16::from(b'Z'));
        assert_eq!(fold(u16::from(b'\\')), u16::from(b'\\'));
    }
}
