//! The verifier's rules, one test each (named after the rule): a deliberately broken driver,
//! written here as raw `extern "system"` functions against windows-sys and the simulator's
//! exports, does exactly the forbidden thing; the test checks that the finding fires, names the
//! driver at fault, and that the machine goes on where Windows would not bugcheck (or is crashed
//! where the simulator models the bugcheck). Each test also runs the same driver with the mistake
//! corrected (`broken == false`) and checks that it produces no finding.
//!
//! The drivers: "Bottom", a native driver with one named device that completes everything (and
//! deletes its device on `IRP_MN_REMOVE_DEVICE`, as a PnP driver does); "Bad", a legacy driver
//! that opens Bottom's device with `IoGetDeviceObjectPointer` and forwards what it receives there
//! (a redirector: its own device is not attached, so it sizes its `StackSize` itself), and makes
//! the mistake its mode names; "Late", a legacy filter that attaches to Bottom's stack in
//! `DriverEntry`. Minifilter rules use the `fltcommon` test minifilters.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(missing_docs, reason = "test drivers")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod fltcommon;

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr::null_mut;

use fsfilter::Status;
use fsfilter_kernel::irp::{
    IoCallDriver, IoCompleteRequest, IoCopyCurrentIrpStackLocationToNext,
    IoGetCurrentIrpStackLocation, IoMarkIrpPending, IoSetCompletionRoutine,
};
use fsfilter_kernel::ntos::{KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock, ZwClose, ZwOpenKey};
use fsfilter_sim::irp::Finish;
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, Machine, MachineConfig, Rule, ServiceSpec, StopResult,
    VolumeSpec,
};
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, DRIVER_OBJECT, FILE_OBJECT, IRP, KEVENT, OBJECT_ATTRIBUTES,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltAllocateGenericWorkItem, FltFreeGenericWorkItem,
};
use windows_sys::Wdk::Storage::FileSystem::{
    IoRegisterFsRegistrationChange, IoUnregisterFsRegistrationChange,
};
use windows_sys::Wdk::System::SystemServices::{
    DelayedWorkQueue, ExAllocatePool2, ExFreePoolWithTag, IoAllocateIrp, IoAllocateMdl,
    IoAllocateWorkItem, IoAttachDeviceToDeviceStackSafe, IoCancelFileOpen, IoCancelIrp,
    IoCreateDevice, IoDeleteDevice, IoDetachDevice, IoFreeIrp, IoFreeMdl, IoFreeWorkItem,
    IoGetAttachedDeviceReference, IoGetDeviceObjectPointer, IoQueueWorkItem,
    IoReleaseCancelSpinLock, KeBugCheckEx, KeInitializeEvent, KeInitializeSpinLock, KeSetEvent,
    KeWaitForSingleObject, ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS, UNICODE_STRING};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

/// `DO_DEVICE_INITIALIZING`.
const DO_DEVICE_INITIALIZING: u32 = 0x80;
/// `FILE_DEVICE_UNKNOWN`.
const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// `POOL_FLAG_NON_PAGED`.
const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `IRP_MJ_READ`.
const IRP_MJ_READ: u8 = 0x03;
/// `IRP_MJ_PNP` / `IRP_MN_REMOVE_DEVICE`.
const IRP_MJ_PNP: u8 = 0x1b;
const IRP_MN_REMOVE_DEVICE: u8 = 0x02;
/// Bad's pool tag, and another one.
const TAG: u32 = u32::from_le_bytes(*b"VrfB");
const OTHER_TAG: u32 = u32::from_le_bytes(*b"Oops");
/// `MANUALLY_INITIATED_CRASH`.
const MANUALLY_INITIATED_CRASH: u32 = 0xE2;

/// What Bad keeps (its device extension, in a C driver).
#[derive(Clone, Copy)]
struct BadState {
    device: usize,
    lower: usize,
    file: usize,
    pool: usize,
}

thread_local! {
    /// The mistake the scenario is about.
    static MODE: Cell<&'static str> = const { Cell::new("") };
    /// Whether Bad makes it (false: the same driver, corrected).
    static BROKEN: Cell<bool> = const { Cell::new(true) };
    static BOTTOM: Cell<usize> = const { Cell::new(0) };
    static BAD: Cell<BadState> =
        const { Cell::new(BadState { device: 0, lower: 0, file: 0, pool: 0 }) };
    /// Late's attach status.
    static LATE_ATTACH: Cell<NTSTATUS> = const { Cell::new(1) };
    /// `attach_window`: Late's device and work item (Late attaches from the work item), and the
    /// device Bad attaches to Bottom's stack.
    static LATE_DEVICE: Cell<usize> = const { Cell::new(0) };
    static LATE_ITEM: Cell<usize> = const { Cell::new(0) };
    static WINDOW_DEVICE: Cell<usize> = const { Cell::new(0) };
    /// Runs of Bad's `count_work` routine.
    static WORK_RUNS: Cell<u32> = const { Cell::new(0) };
    /// Calls of Bad's file-system notification routine.
    static NOTIFIED: Cell<u32> = const { Cell::new(0) };
    /// The IRP Bad holds cancelable (`cancelable_left_at_unload`), and calls of its routine.
    static HELD: Cell<usize> = const { Cell::new(0) };
    static CANCELS: Cell<u32> = const { Cell::new(0) };
    /// The image global as Bad's dispatch routine read it, and as code outside any image read it.
    static GLOBAL_INSIDE: Cell<usize> = const { Cell::new(0) };
    static GLOBAL_OUTSIDE: Cell<usize> = const { Cell::new(1) };
}

/// What Bad's image global points to.
static BAD_GLOBAL: u8 = 0;

fn mode_is(m: &str) -> bool {
    MODE.get() == m
}

fn broken() -> bool {
    BROKEN.get()
}

/// A counted string over `w` (kept alive by the caller).
fn unicode(w: &mut [u16]) -> UNICODE_STRING {
    let bytes = (w.len() * 2) as u16;
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: w.as_mut_ptr() }
}

fn bottom_name() -> Vec<u16> {
    "\\Device\\VerifierBottom".encode_utf16().collect()
}

/// Completes `irp` with `status`.
///
/// # Safety
/// `irp` must be a live IRP the caller owns.
unsafe fn complete(irp: *mut IRP, status: Status) {
    // SAFETY: the caller's live IRP.
    unsafe {
        (*irp).IoStatus.Anonymous.Status = status.0;
        (*irp).IoStatus.Information = 0;
        IoCompleteRequest(irp, 0);
    }
}

// ---- Bottom -------------------------------------------------------------------------------------

unsafe extern "system" fn bottom_dispatch(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the live IRP of our dispatch routine.
    let sl = unsafe { &*IoGetCurrentIrpStackLocation(irp) };
    let remove = sl.MajorFunction == IRP_MJ_PNP && sl.MinorFunction == IRP_MN_REMOVE_DEVICE;
    // SAFETY: as above.
    unsafe { complete(irp, Status::SUCCESS) };
    if remove {
        // SAFETY: our own device, removed (its references keep the object alive).
        unsafe { IoDeleteDevice(device) };
    }
    Status::SUCCESS.0
}

unsafe extern "system" fn bottom_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object during DriverEntry.
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(bottom_dispatch);
    }
    let mut name = bottom_name();
    let name = unicode(&mut name);
    let mut dev = null_mut();
    // SAFETY: valid arguments; the name lives across the call.
    let s = unsafe { IoCreateDevice(driver, 0, &name, FILE_DEVICE_UNKNOWN, 0, false, &mut dev) };
    BOTTOM.set(dev as usize);
    s
}

// ---- Bad ----------------------------------------------------------------------------------------

/// Bad's helper that reads its image global (`fsfilter_kernel::image`).
fn bad_global() -> usize {
    fsfilter_kernel::image::get() as usize
}

unsafe extern "system" fn bad_notify(_cdo: *const DEVICE_OBJECT, _active: bool) {
    NOTIFIED.set(NOTIFIED.get() + 1);
}

/// Passes `irp` down to the device Bad opened.
///
/// # Safety
/// `irp` must be the live IRP of Bad's dispatch routine.
unsafe fn forward(irp: *mut IRP) -> NTSTATUS {
    let lower = BAD.get().lower as *mut DEVICE_OBJECT;
    // SAFETY: the caller's live IRP.
    if unsafe { (*irp).CurrentLocation } > 1 {
        // SAFETY: the IRP has a location below ours.
        unsafe { IoCopyCurrentIrpStackLocationToNext(irp) };
    }
    // Without a location below (StackSize not raised), a C driver's copy would scribble over the
    // IRP's header before IoCallDriver bugchecks; this one skips the copy so that the test stays
    // memory-safe, and IoCallDriver catches the missing location.
    // SAFETY: the device Bad holds a reference on; the caller's IRP.
    unsafe { IoCallDriver(lower, irp) }
}

unsafe extern "system" fn bad_dispatch(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    let bad = BAD.get();
    if device as usize != bad.device {
        // A device Bad created later (the attach scenario): nothing is sent to it here.
        // SAFETY: the live IRP of our dispatch routine.
        unsafe { complete(irp, Status::SUCCESS) };
        return Status::SUCCESS.0;
    }
    GLOBAL_INSIDE.set(bad_global());
    match MODE.get() {
        "completed_with_status_pending" => {
            // Returns STATUS_PENDING (so marks the IRP), but completes it with the status it is
            // about to return.
            let status = if broken() { Status::PENDING } else { Status::SUCCESS };
            // SAFETY: the live IRP of our dispatch routine.
            unsafe {
                IoMarkIrpPending(irp);
                complete(irp, status);
            }
            return Status::PENDING.0;
        }
        "unknown_dispatch_result" => {
            // SAFETY: as above.
            unsafe { complete(irp, Status::SUCCESS) };
            // STATUS_MORE_PROCESSING_REQUIRED is a completion routine's answer, not a dispatch
            // routine's.
            let status = if broken() { Status::MORE_PROCESSING_REQUIRED } else { Status::SUCCESS };
            return status.0;
        }
        "cancelable_left_at_unload" => {
            // Holds the read cancelable (a queue of its own) and returns STATUS_PENDING.
            // SAFETY: the live IRP of our dispatch routine, kept pending with our routine.
            unsafe {
                IoMarkIrpPending(irp);
                (*irp).CancelRoutine = Some(bad_cancel);
            }
            HELD.set(irp as usize);
            return Status::PENDING.0;
        }
        "returned_without_completion" => {
            if !broken() {
                // SAFETY: as above.
                unsafe { complete(irp, Status::SUCCESS) };
            }
            // Broken: a status other than STATUS_PENDING, the IRP neither completed nor passed
            // on.
            return Status::SUCCESS.0;
        }
        "marked_pending_but_not_returned" => {
            if broken() {
                // SAFETY: as above.
                unsafe { IoMarkIrpPending(irp) };
            }
            // SAFETY: as above.
            unsafe { complete(irp, Status::SUCCESS) };
            return Status::SUCCESS.0;
        }
        "bad_pool_free" => {
            // SAFETY: a plain allocation.
            let p = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, 64, TAG) };
            assert!(!p.is_null());
            // SAFETY: our block.
            unsafe { ExFreePoolWithTag(p, TAG) };
            if broken() {
                // SAFETY: deliberately wrong: the block is freed already (the simulator looks the
                // pointer up and never touches it).
                unsafe { ExFreePoolWithTag(p, TAG) };
            }
        }
        "mdl_freed_twice" => {
            // SAFETY: an MDL for one byte of our global, freed once (twice when broken).
            unsafe {
                let mdl =
                    IoAllocateMdl((&raw const BAD_GLOBAL).cast(), 1, false, false, null_mut());
                assert!(!mdl.is_null());
                IoFreeMdl(mdl);
                if broken() {
                    IoFreeMdl(mdl);
                }
            }
        }
        "pool_tag_mismatch" => {
            // SAFETY: a plain allocation.
            let p = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, 64, TAG) };
            assert!(!p.is_null());
            // SAFETY: our block; the tag is deliberately wrong when broken.
            unsafe { ExFreePoolWithTag(p, if broken() { OTHER_TAG } else { TAG }) };
        }
        "irql_too_high" => {
            let mut lock = 0usize;
            let mut extra = null_mut();
            // SAFETY: our lock storage.
            unsafe { KeInitializeSpinLock(&mut lock) };
            // SAFETY: our lock; IoCreateDevice (PASSIVE_LEVEL only) called under it when broken.
            unsafe {
                let driver = (*device).DriverObject;
                if broken() {
                    let old = KeAcquireSpinLockRaiseToDpc(&mut lock);
                    IoCreateDevice(
                        driver,
                        0,
                        std::ptr::null(),
                        FILE_DEVICE_UNKNOWN,
                        0,
                        false,
                        &mut extra,
                    );
                    KeReleaseSpinLock(&mut lock, old);
                } else {
                    IoCreateDevice(
                        driver,
                        0,
                        std::ptr::null(),
                        FILE_DEVICE_UNKNOWN,
                        0,
                        false,
                        &mut extra,
                    );
                }
            }
            assert!(!extra.is_null());
            // SAFETY: the device just created.
            unsafe { IoDeleteDevice(extra) };
        }
        "work_item_irql" => {
            // A work item whose routine takes a spin lock and (broken) returns holding it.
            // SAFETY: our live device.
            let item = unsafe { IoAllocateWorkItem(device) };
            assert_ne!(item, 0);
            // SAFETY: the work item just allocated, and a routine that frees it.
            unsafe {
                IoQueueWorkItem(
                    item,
                    fsfilter_kernel::ntos::work_item_routine_field(raise_work),
                    DelayedWorkQueue,
                    item as *const c_void,
                );
            }
        }
        "work_item_queued_twice" | "queued_work_item_freed" => {
            // SAFETY: our live device.
            let item = unsafe { IoAllocateWorkItem(device) };
            assert_ne!(item, 0);
            let twice = mode_is("work_item_queued_twice") && broken();
            let free_now = mode_is("queued_work_item_freed") && broken();
            // The routine frees the item unless this routine does (the context says which).
            let queue = |context: usize| {
                // SAFETY: the work item allocated above, and a routine that frees it when asked.
                unsafe {
                    IoQueueWorkItem(
                        item,
                        fsfilter_kernel::ntos::work_item_routine_field(count_work),
                        DelayedWorkQueue,
                        context as *const c_void,
                    );
                }
            };
            queue(if free_now { 0 } else { item as usize });
            if twice {
                // Deliberately wrong: the item is queued and has not run yet.
                queue(item as usize);
            }
            if free_now {
                // SAFETY: deliberately wrong: the item is queued and has not run yet.
                unsafe { IoFreeWorkItem(item) };
            }
        }
        "spin_lock_misuse" => {
            let mut lock = 0usize;
            // SAFETY: our lock: acquired once, released once (twice when broken).
            unsafe {
                KeInitializeSpinLock(&mut lock);
                let old = KeAcquireSpinLockRaiseToDpc(&mut lock);
                KeReleaseSpinLock(&mut lock, old);
                if broken() {
                    KeReleaseSpinLock(&mut lock, old);
                }
            }
        }
        "dispatch_returns_raised" => {
            let mut lock = 0usize;
            // SAFETY: our lock, acquired once and released once unless broken (the lock is on
            // this stack frame: a broken run only leaves the IRQL raised).
            unsafe {
                KeInitializeSpinLock(&mut lock);
                let old = KeAcquireSpinLockRaiseToDpc(&mut lock);
                if !broken() {
                    KeReleaseSpinLock(&mut lock, old);
                }
                complete(irp, Status::SUCCESS);
            }
            return Status::SUCCESS.0;
        }
        "completion_returns_raised" => {
            // SAFETY: the live IRP with a location below ours (Bad's StackSize is one more).
            unsafe {
                IoCopyCurrentIrpStackLocationToNext(irp);
                IoSetCompletionRoutine(irp, raises_in_completion, null_mut(), true, true, true);
                return IoCallDriver(bad.lower as *mut DEVICE_OBJECT, irp);
            }
        }
        "object_over_dereferenced" => {
            // SAFETY: our device; one reference taken, released once (twice when broken).
            unsafe {
                let top = IoGetAttachedDeviceReference(device);
                ObfDereferenceObject(top.cast());
                if broken() {
                    ObfDereferenceObject(top.cast());
                }
            }
        }
        "cancel_file_open_misuse" if broken() => {
            // "Closes" the device it opened with IoCancelFileOpen: that is for a create's post
            // processing, before a handle exists (ObDereferenceObject is the way).
            // SAFETY: the device and file object Bad opened.
            unsafe {
                IoCancelFileOpen(bad.lower as *const DEVICE_OBJECT, bad.file as *const FILE_OBJECT)
            };
        }
        "bugcheck" if broken() => {
            // SAFETY: stops the machine (on Windows it does not return).
            unsafe { KeBugCheckEx(MANUALLY_INITIATED_CRASH, 1, 2, 3, 4) };
            return Status::UNSUCCESSFUL.0;
        }
        "halted_and_left" => {
            // Pends the read and halts its completion (STATUS_MORE_PROCESSING_REQUIRED) to finish
            // it later; broken, it never does, and unloads.
            // SAFETY: the live IRP with a location below ours (Bad's StackSize is one more).
            unsafe {
                IoMarkIrpPending(irp);
                IoCopyCurrentIrpStackLocationToNext(irp);
                IoSetCompletionRoutine(irp, halts, null_mut(), true, true, true);
                let _ = IoCallDriver(bad.lower as *mut DEVICE_OBJECT, irp);
            }
            return Status::PENDING.0;
        }
        "completed_in_routine" => {
            // A completion routine that completes the IRP itself: legal only when it then halts
            // the walk with STATUS_MORE_PROCESSING_REQUIRED.
            // SAFETY: the live IRP with a location below ours (Bad's StackSize is one more).
            unsafe {
                IoCopyCurrentIrpStackLocationToNext(irp);
                IoSetCompletionRoutine(irp, completes_itself, null_mut(), true, true, true);
                return IoCallDriver(bad.lower as *mut DEVICE_OBJECT, irp);
            }
        }
        "attach_window" => {
            // Queues Late's attach; the first time, also attaches a new device of its own to
            // Bottom's stack, so that Late's attach (run as ready work inside Bad's attach call,
            // another processor's on Windows) meets it still initializing; then clears the flag
            // (broken: never).
            // SAFETY: Late's live work item, and the routine that goes with it.
            unsafe {
                IoQueueWorkItem(
                    LATE_ITEM.get() as isize,
                    fsfilter_kernel::ntos::work_item_routine_field(late_attach_work),
                    DelayedWorkQueue,
                    std::ptr::null(),
                );
            }
            if WINDOW_DEVICE.get() == 0 {
                // SAFETY: our device and the one Bad forwards to, both live.
                let dev = unsafe { attach_new_device(device, bad.lower) };
                WINDOW_DEVICE.set(dev as usize);
                // Late's work ran inside the attach, in the window.
                assert_eq!(LATE_ATTACH.get(), Status::NO_SUCH_DEVICE.0);
                if !broken() {
                    // SAFETY: our new device.
                    unsafe { (*dev).Flags &= !DO_DEVICE_INITIALIZING };
                }
            }
        }
        "status_differs" => {
            // Fails the read, and (broken) tells its caller it succeeded.
            // SAFETY: the live IRP of our dispatch routine.
            unsafe { complete(irp, Status::ACCESS_DENIED) };
            let status = if broken() { Status::SUCCESS } else { Status::ACCESS_DENIED };
            return status.0;
        }
        "routine_changes_status" => {
            // A pass-through whose completion routine turns the lower driver's success into a
            // failure. Broken: its dispatch routine returns what IoCallDriver returned, the lower
            // driver's success. Corrected: it marks the IRP pending and returns STATUS_PENDING,
            // so that the caller takes the IRP's final status.
            // SAFETY: the live IRP with a location below ours (Bad's StackSize is one more).
            unsafe {
                if !broken() {
                    IoMarkIrpPending(irp);
                }
                IoCopyCurrentIrpStackLocationToNext(irp);
                IoSetCompletionRoutine(irp, denies, null_mut(), true, true, true);
                let status = IoCallDriver(bad.lower as *mut DEVICE_OBJECT, irp);
                return if broken() { status } else { Status::PENDING.0 };
            }
        }
        "halt_and_complete_again" => {
            // Forwards synchronously (its routine signals and halts the walk), then fails the read
            // and completes it again. Corrected, it returns that final status; broken, the status
            // IoCallDriver returned.
            // SAFETY: a kernel event on our stack, waited for before it goes; the live IRP with a
            // location below ours, reclaimed by the routine and completed once more.
            unsafe {
                let mut event: KEVENT = std::mem::zeroed();
                KeInitializeEvent(&mut event, 0, false);
                IoCopyCurrentIrpStackLocationToNext(irp);
                IoSetCompletionRoutine(irp, signals, (&raw mut event).cast(), true, true, true);
                let mut lower = IoCallDriver(bad.lower as *mut DEVICE_OBJECT, irp);
                if lower == Status::PENDING.0 {
                    KeWaitForSingleObject((&raw const event).cast(), 0, 0, false, null_mut());
                    lower = (*irp).IoStatus.Anonymous.Status;
                }
                assert_eq!(lower, Status::SUCCESS.0, "Bottom succeeds");
                complete(irp, Status::ACCESS_DENIED);
                return if broken() { lower } else { Status::ACCESS_DENIED.0 };
            }
        }
        "attach_to_initializing_device" => {
            // Attaches a new device to Bottom's stack outside DriverEntry: clearing
            // DO_DEVICE_INITIALIZING is then the driver's job.
            // SAFETY: our device and the one Bad forwards to, both live.
            let dev = unsafe { attach_new_device(device, bad.lower) };
            if !broken() {
                // SAFETY: our new device.
                unsafe { (*dev).Flags &= !DO_DEVICE_INITIALIZING };
            }
        }
        _ => {}
    }
    // SAFETY: the live IRP of our dispatch routine.
    unsafe { forward(irp) }
}

/// Creates a device of `device`'s driver outside `DriverEntry` (so still initializing) and
/// attaches it to the top of `lower`'s stack.
///
/// # Safety
/// `device` and `lower` must be live devices.
unsafe fn attach_new_device(device: *const DEVICE_OBJECT, lower: usize) -> *mut DEVICE_OBJECT {
    let mut dev = null_mut();
    let mut below = null_mut();
    // SAFETY: the caller's live devices.
    unsafe {
        let s = IoCreateDevice(
            (*device).DriverObject,
            0,
            std::ptr::null(),
            FILE_DEVICE_UNKNOWN,
            0,
            false,
            &mut dev,
        );
        assert_eq!(s, 0);
        let s = IoAttachDeviceToDeviceStackSafe(dev, lower as *const _, &mut below);
        assert_eq!(s, 0);
    }
    dev
}

/// Bad's completion routine in `completed_in_routine`: completes the IRP again from inside, and
/// answers STATUS_SUCCESS (broken) or STATUS_MORE_PROCESSING_REQUIRED (corrected).
/// Bad's completion routine in `halted_and_left`: halts the walk; corrected, it first queues
/// nothing and lets the walk go on.
unsafe extern "system" fn halts(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    _context: *mut c_void,
) -> NTSTATUS {
    if broken() { Status::MORE_PROCESSING_REQUIRED.0 } else { Status::SUCCESS.0 }
}

unsafe extern "system" fn completes_itself(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    _context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the IRP being completed; propagating the pending mark as a routine must.
    unsafe {
        if (*irp).PendingReturned {
            IoMarkIrpPending(irp);
        }
        IoCompleteRequest(irp, 0);
    }
    if broken() { Status::SUCCESS.0 } else { Status::MORE_PROCESSING_REQUIRED.0 }
}

/// Bad's completion routine in `routine_changes_status`: fails the IRP the lower driver
/// completed (propagating the pending mark, as a routine that does not halt must).
unsafe extern "system" fn denies(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    _context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the IRP being completed.
    unsafe {
        if (*irp).PendingReturned {
            IoMarkIrpPending(irp);
        }
        (*irp).IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0;
    }
    Status::SUCCESS.0
}

/// Bad's completion routine in `halt_and_complete_again`: signals the dispatch routine's event and
/// halts the walk, giving the IRP back to the dispatch routine.
unsafe extern "system" fn signals(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    event: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the event the dispatch routine waits on, alive until it returns.
    unsafe { KeSetEvent(event.cast(), 0, false) };
    Status::MORE_PROCESSING_REQUIRED.0
}

/// Bad's completion routine in `completion_returns_raised`: takes a spin lock and (broken)
/// returns holding it.
unsafe extern "system" fn raises_in_completion(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    _context: *mut c_void,
) -> NTSTATUS {
    let mut lock = 0usize;
    // SAFETY: the IRP being completed; our lock, acquired once and released once unless broken.
    unsafe {
        if (*irp).PendingReturned {
            IoMarkIrpPending(irp);
        }
        KeInitializeSpinLock(&mut lock);
        let old = KeAcquireSpinLockRaiseToDpc(&mut lock);
        if !broken() {
            KeReleaseSpinLock(&mut lock, old);
        }
    }
    Status::SUCCESS.0
}

/// Bad's cancel routine for the read it holds.
unsafe extern "system" fn bad_cancel(_device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    CANCELS.set(CANCELS.get() + 1);
    HELD.set(0);
    // SAFETY: the IRP being cancelled, with the lock IoCancelIrp took and the IRQL it saved.
    unsafe {
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        complete(irp, Status::CANCELLED);
    }
}

unsafe extern "system" fn bad_unload(driver: *const DRIVER_OBJECT) {
    let bad = BAD.get();
    let held = HELD.replace(0) as *mut IRP;
    if mode_is("cancelable_left_at_unload") && !broken() && !held.is_null() {
        // Corrected: what the queue holds is taken out of the cancelable state and completed.
        // SAFETY: the IRP Bad held, its routine taken out before completion.
        unsafe {
            (*held).CancelRoutine = None;
            complete(held, Status::CANCELLED);
        }
    }
    if !(mode_is("fs_notification_leaked_at_unload") && broken()) {
        // SAFETY: our registration.
        unsafe { IoUnregisterFsRegistrationChange(driver, Some(bad_notify)) };
    }
    if !(mode_is("pool_leaked_at_unload") && broken()) {
        // SAFETY: our block.
        unsafe { ExFreePoolWithTag(bad.pool as *mut c_void, TAG) };
    }
    if mode_is("io_objects_leaked_at_unload") {
        // An IRP, an MDL, an I/O work item and a generic work item, freed only when corrected.
        // SAFETY: valid arguments; our live device.
        let (irp, mdl, item, generic) = unsafe {
            (
                IoAllocateIrp(1, false),
                IoAllocateMdl((&raw const BAD_GLOBAL).cast(), 1, false, false, null_mut()),
                IoAllocateWorkItem(bad.device as *const DEVICE_OBJECT),
                FltAllocateGenericWorkItem(),
            )
        };
        assert!(!irp.is_null() && !mdl.is_null() && item != 0 && generic != 0);
        if !broken() {
            // SAFETY: each allocated above, never used, freed once.
            unsafe {
                IoFreeIrp(irp);
                IoFreeMdl(mdl);
                IoFreeWorkItem(item);
                FltFreeGenericWorkItem(generic);
            }
        }
    }
    // SAFETY: the reference IoGetDeviceObjectPointer gave us.
    unsafe { ObfDereferenceObject(bad.file as *const c_void) };
    if !(mode_is("device_objects_leaked_at_unload") && broken()) {
        // SAFETY: our device.
        unsafe { IoDeleteDevice(bad.device as *const DEVICE_OBJECT) };
    }
    fsfilter_kernel::image::set(null_mut());
}

unsafe extern "system" fn bad_entry(
    driver: *const DRIVER_OBJECT,
    path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object during DriverEntry.
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(bad_dispatch);
    }
    d.DriverUnload = Some(bad_unload);
    fsfilter_kernel::image::set((&raw const BAD_GLOBAL).cast_mut().cast());

    let mut name = bottom_name();
    let name = unicode(&mut name);
    let (mut file, mut lower) = (null_mut(), null_mut());
    // SAFETY: valid arguments; the name lives across the call.
    let s = unsafe { IoGetDeviceObjectPointer(&name, 0x1f01ff, &mut file, &mut lower) };
    assert_eq!(s, 0, "IoGetDeviceObjectPointer");

    let mut dev = null_mut();
    // SAFETY: valid arguments.
    let s = unsafe {
        IoCreateDevice(driver, 0, std::ptr::null(), FILE_DEVICE_UNKNOWN, 0, false, &mut dev)
    };
    assert_eq!(s, 0);
    if !(mode_is("no_more_irp_stack_locations") && broken()) {
        // Requests Bad receives go on to `lower`: one more location than it needs.
        // SAFETY: both devices are live.
        unsafe { (*dev).StackSize = (*lower).StackSize + 1 };
    }

    // SAFETY: a plain allocation, kept until unload.
    let pool = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, 32, TAG) };
    assert!(!pool.is_null());
    // SAFETY: our driver and routine.
    let s = unsafe { IoRegisterFsRegistrationChange(driver, Some(bad_notify)) };
    assert_eq!(s, 0);

    if mode_is("invalid_handle") {
        // SAFETY: all-zero is valid for OBJECT_ATTRIBUTES before it is filled.
        let mut attrs: OBJECT_ATTRIBUTES = unsafe { std::mem::zeroed() };
        attrs.Length = size_of::<OBJECT_ATTRIBUTES>() as u32;
        attrs.ObjectName = path;
        attrs.Attributes = 0x240; // OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE
        let mut key: HANDLE = null_mut();
        // SAFETY: our attributes (the registry path lives during DriverEntry).
        let s = unsafe { ZwOpenKey(&mut key, 0x20019, &attrs) };
        assert_eq!(s, 0, "the service key opens");
        // SAFETY: our handle.
        assert_eq!(unsafe { ZwClose(key) }, 0);
        if broken() {
            // SAFETY: deliberately wrong: the handle is closed already.
            let s = unsafe { ZwClose(key) };
            assert_eq!(Status(s), Status::INVALID_HANDLE);
        }
    }

    BAD.set(BadState {
        device: dev as usize,
        lower: lower as usize,
        file: file as usize,
        pool: pool as usize,
    });
    Status::SUCCESS.0
}

/// Bad's work routine in the work-item scenarios: counts its runs, and frees its item when the
/// context is the item.
unsafe extern "system" fn count_work(_device: *mut DEVICE_OBJECT, item: *mut c_void) {
    WORK_RUNS.set(WORK_RUNS.get() + 1);
    if !item.is_null() {
        // SAFETY: the routine's own work item, freed once.
        unsafe { IoFreeWorkItem(item as isize) };
    }
}

/// Bad's work routine in `work_item_irql`: frees its item, takes a spin lock, and releases it
/// (broken: returns at `DISPATCH_LEVEL`).
unsafe extern "system" fn raise_work(_device: *mut DEVICE_OBJECT, item: *mut c_void) {
    // SAFETY: the routine's own work item, freed once.
    unsafe { IoFreeWorkItem(item as isize) };
    let mut lock = 0usize;
    // SAFETY: our lock, acquired once and released once unless broken.
    unsafe {
        KeInitializeSpinLock(&mut lock);
        let old = KeAcquireSpinLockRaiseToDpc(&mut lock);
        if !broken() {
            KeReleaseSpinLock(&mut lock, old);
        }
    }
}

// ---- Late ---------------------------------------------------------------------------------------

unsafe extern "system" fn late_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    let mut dev = null_mut();
    // SAFETY: valid arguments.
    let s = unsafe {
        IoCreateDevice(driver, 0, std::ptr::null(), FILE_DEVICE_UNKNOWN, 0, false, &mut dev)
    };
    assert_eq!(s, 0);
    if mode_is("attach_window") {
        // Attaches later, from a work item Bad queues.
        LATE_DEVICE.set(dev as usize);
        // SAFETY: our live device.
        LATE_ITEM.set(unsafe { IoAllocateWorkItem(dev) } as usize);
        assert_ne!(LATE_ITEM.get(), 0);
        return Status::SUCCESS.0;
    }
    if mode_is("delete_twice") {
        // SAFETY: our device, never attached, deleted once.
        unsafe { IoDeleteDevice(dev) };
        if broken() {
            // SAFETY: deliberately wrong: the device is deleted already (the simulator looks the
            // pointer up and never frees device objects).
            unsafe { IoDeleteDevice(dev) };
        }
        return Status::SUCCESS.0;
    }
    let mut lower = null_mut();
    // SAFETY: our device and Bottom's, both live.
    let s = unsafe { IoAttachDeviceToDeviceStackSafe(dev, BOTTOM.get() as *const _, &mut lower) };
    LATE_ATTACH.set(s);
    if s == 0 && mode_is("attach_twice") {
        // SAFETY: our device, attached: others may attach above it now.
        unsafe { (*dev).Flags &= !DO_DEVICE_INITIALIZING };
        let again = if broken() {
            let mut top = null_mut();
            // SAFETY: deliberately wrong: our device is attached already, and is the top of the
            // stack it would be attached to again.
            unsafe { IoAttachDeviceToDeviceStackSafe(dev, BOTTOM.get() as *const _, &mut top) }
        } else {
            0
        };
        LATE_ATTACH.set(again);
        return Status::SUCCESS.0;
    }
    if s != 0 {
        // SAFETY: our device, not attached.
        unsafe { IoDeleteDevice(dev) };
    } else if mode_is("detach_raised") {
        // IoDetachDevice's reference page: IRQL PASSIVE_LEVEL (the simulator allows APC_LEVEL).
        let irql = if broken() { 2 } else { 1 };
        fsfilter_sim::kernel::with(|k| k.set_irql(irql));
        // SAFETY: the device we attached to.
        unsafe { IoDetachDevice(lower) };
        fsfilter_sim::kernel::with(|k| k.set_irql(0));
        // SAFETY: our device, detached.
        unsafe { IoDeleteDevice(dev) };
    } else if mode_is("delete_while_attached") {
        if !broken() {
            // SAFETY: the device we attached to.
            unsafe { IoDetachDevice(lower) };
        }
        // SAFETY: our device (broken: deliberately still attached to `lower`).
        unsafe { IoDeleteDevice(dev) };
    } else if mode_is("detach_not_attached") {
        // Detach from the device attached to, and delete ours.
        // SAFETY: the device we attached to.
        unsafe { IoDetachDevice(lower) };
        if broken() {
            // SAFETY: deliberately wrong: nothing is attached above `lower` any more.
            unsafe { IoDetachDevice(lower) };
        }
        // SAFETY: our device, detached.
        unsafe { IoDeleteDevice(dev) };
    }
    Status::SUCCESS.0
}

/// Late's work item in `attach_window`: attaches Late's device to Bottom's stack.
unsafe extern "system" fn late_attach_work(_device: *mut DEVICE_OBJECT, _context: *mut c_void) {
    let mut lower = null_mut();
    // SAFETY: Late's device and Bottom's, both live.
    let s = unsafe {
        IoAttachDeviceToDeviceStackSafe(
            LATE_DEVICE.get() as *const _,
            BOTTOM.get() as *const _,
            &mut lower,
        )
    };
    LATE_ATTACH.set(s);
}

// ---- Harness ------------------------------------------------------------------------------------

/// A machine with Bottom and Bad running, Bad set to make (or, `broken == false`, not make) the
/// mistake `mode`; Late installed, not started.
fn machine(mode: &'static str, broken: bool) -> Machine {
    MODE.set(mode);
    BROKEN.set(broken);
    NOTIFIED.set(0);
    LATE_ATTACH.set(1);
    WINDOW_DEVICE.set(0);
    WORK_RUNS.set(0);
    let mut m = Machine::new(MachineConfig { seed: 1 });
    m.install(ServiceSpec::new("Bottom", bottom_entry, "native"));
    m.install(ServiceSpec::new("Bad", bad_entry, "legacy"));
    m.install(ServiceSpec::new("Late", late_entry, "legacy"));
    assert_eq!(m.start("Bottom"), Status::SUCCESS);
    assert_eq!(m.start("Bad"), Status::SUCCESS);
    m
}

/// Sends a request with `major`/`minor` to the top of `device`'s stack as the I/O manager does
/// for a synchronous request, runs the machine, and returns the final status (-1 when the request
/// never completed).
fn send(m: &Machine, device: usize, major: u8, minor: u8) -> Status {
    send_both(m, device, major, minor).1
}

/// [`send`], with what `IoCallDriver` returned to the sender (what a system service returns
/// unless it is STATUS_PENDING, WRK `IopSynchronousServiceTail`) before the final status (what
/// the I/O manager writes to the status block).
fn send_both(m: &Machine, device: usize, major: u8, minor: u8) -> (Status, Status) {
    let (top, irp) = m.kernel(|k| {
        let id = k.objects.device_id(device as *const DEVICE_OBJECT).unwrap();
        let top = k.objects.top(id);
        let size = k.objects.dobj(top).StackSize;
        (k.objects.device(top).ptr, k.allocate_irp(size, Finish::Synchronous, None))
    });
    // Leaked: a request that never completes keeps pointing at it.
    // SAFETY: all-zero is a valid IO_STATUS_BLOCK.
    let iosb: &'static mut IO_STATUS_BLOCK = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    iosb.Anonymous.Status = -1;
    // SAFETY: a fresh IRP: its first location and status block, as IoBuildXxx fills them.
    unsafe {
        let first = IoGetCurrentIrpStackLocation(irp).wrapping_sub(1);
        (*first).MajorFunction = major;
        (*first).MinorFunction = minor;
        (*irp).IoStatus.Anonymous.Status = Status::PENDING.0;
        (*irp).Anonymous.UserIosb = &mut *iosb;
    }
    // SAFETY: a live device and IRP.
    let returned = unsafe { IoCallDriver(top, irp) };
    fsfilter_sim::sched::run_all();
    // SAFETY: written by the I/O manager at completion.
    (Status(returned), Status(unsafe { iosb.Anonymous.Status }))
}

fn bad_device() -> usize {
    BAD.get().device
}

/// A read through Bad (to Bottom).
fn read_through_bad(m: &Machine) -> Status {
    send(m, bad_device(), IRP_MJ_READ, 0)
}

/// The findings as (rule, driver).
fn findings(m: &Machine) -> Vec<(Rule, Option<String>)> {
    m.findings().into_iter().map(|(r, d, _)| (r, d)).collect()
}

/// Broken: exactly one finding, `rule`, against `driver`. Corrected: none.
fn check(m: &Machine, broken: bool, rule: Rule, driver: Option<&str>) {
    let found = findings(m);
    if broken {
        assert_eq!(found, [(rule, driver.map(str::to_owned))], "{:?}", m.findings());
    } else {
        assert!(found.is_empty(), "the corrected driver: {:?}", m.findings());
    }
}

/// The machine goes on: a correct request through Bad completes, nothing crashed.
fn survives(m: &Machine) {
    MODE.set("");
    assert_eq!(read_through_bad(m), Status::SUCCESS);
    assert_eq!(m.crashed(), None);
}

/// Broken and corrected, in `mode`: a read through Bad succeeds, the broken driver gets exactly
/// one `rule` finding and the corrected one none, `then` checks the rest, and the machine goes on.
fn read_breaks(mode: &'static str, rule: Rule, then: impl Fn(&Machine, bool)) {
    for broken in [true, false] {
        let m = machine(mode, broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        check(&m, broken, rule, Some("Bad"));
        then(&m, broken);
        survives(&m);
    }
}

// ---- I/O manager rules ----------------------------------------------------------------------

#[test]
fn completed_with_status_pending() {
    for broken in [true, false] {
        let m = machine("completed_with_status_pending", broken);
        let s = read_through_bad(&m);
        // The simulator refuses the completion: the request stays outstanding.
        assert_eq!(s, if broken { Status(-1) } else { Status::SUCCESS });
        check(&m, broken, Rule::CompletedWithStatusPending, Some("Bad"));
        assert_eq!(Rule::CompletedWithStatusPending.name(), "COMPLETED_WITH_STATUS_PENDING");
        survives(&m);
    }
}

#[test]
fn irp_returned_without_completion() {
    // A dispatch routine returning a status other than STATUS_PENDING owes the IRP's completion
    // (facts.md §1.8); Driver Verifier's I/O verification fails the driver with
    // DCERROR_IRP_RETURNED_WITHOUT_COMPLETION. Until December 6 the simulator left the request
    // outstanding for good and said nothing.
    for broken in [true, false] {
        let m = machine("returned_without_completion", broken);
        let s = read_through_bad(&m);
        assert_eq!(s, if broken { Status(-1) } else { Status::SUCCESS });
        check(&m, broken, Rule::IrpReturnedWithoutCompletion, Some("Bad"));
        assert_eq!(Rule::IrpReturnedWithoutCompletion.name(), "IRP_RETURNED_WITHOUT_COMPLETION");
        survives(&m);
    }
}

#[test]
fn halted_irp_left_at_unload() {
    // A completion routine that halts the walk (STATUS_MORE_PROCESSING_REQUIRED) owes the IRP a
    // later IoCompleteRequest (facts.md §1.8); a driver that unloads without it leaves its
    // requester waiting for good. Until December 6 the simulator said nothing.
    for broken in [true, false] {
        let mut m = machine("halted_and_left", broken);
        let s = read_through_bad(&m);
        assert_eq!(s, if broken { Status(-1) } else { Status::SUCCESS });
        MODE.set("");
        assert_eq!(m.stop("Bad"), StopResult::Unloaded);
        check(&m, broken, Rule::IrpHaltedAtUnload, Some("Bad"));
        if broken {
            let text = &m.findings()[0].2;
            assert!(text.contains("1 IRP(s) halted"), "{text}");
        }
        assert_eq!(Rule::IrpHaltedAtUnload.name(), "IRP_HALTED_AT_UNLOAD");
        assert_eq!(m.crashed(), None);
    }
}

#[test]
fn cancel_routine_of_an_unloaded_driver() {
    // A driver that unloads while it holds an IRP cancelable leaves its cancel routine in the
    // IRP: cancelling the IRP then would run code that is gone (docs/simulator.md, "IRP
    // cancellation": UNLOADED_DRIVER_CODE_RAN, and the routine is not called).
    for broken in [true, false] {
        CANCELS.set(0);
        let mut m = machine("cancelable_left_at_unload", broken);
        assert_eq!(read_through_bad(&m), Status(-1), "held");
        let held = HELD.get();
        assert_ne!(held, 0);
        assert_eq!(m.stop("Bad"), StopResult::Unloaded);
        if broken {
            // SAFETY: the IRP Bad left behind (the simulator looks it up first).
            let cancelable = unsafe { IoCancelIrp(held as *mut IRP) };
            assert!(cancelable, "it had a routine");
        }
        assert_eq!(CANCELS.get(), 0, "the routine of an unloaded driver is not called");
        check(&m, broken, Rule::UnloadedDriverCodeRan, Some("Bad"));
        assert_eq!(m.crashed(), None);
    }
}

#[test]
fn unknown_dispatch_result() {
    read_breaks("unknown_dispatch_result", Rule::UnknownDispatchResult, |_, _| {});
}

#[test]
fn io_mark_irp_pending_without_status_pending() {
    read_breaks("marked_pending_but_not_returned", Rule::MarkedPendingButNotReturned, |_, _| {});
    assert_eq!(
        Rule::MarkedPendingButNotReturned.name(),
        "IO_MARK_IRP_PENDING_WITHOUT_STATUS_PENDING"
    );
}

#[test]
fn call_to_deleted_device() {
    for broken in [true, false] {
        let m = machine("call_to_deleted_device", broken);
        if broken {
            // Bottom's device is removed; Bad still holds its pointer (and a reference) and
            // keeps sending there.
            assert_eq!(send(&m, BOTTOM.get(), IRP_MJ_PNP, IRP_MN_REMOVE_DEVICE), Status::SUCCESS);
        }
        // The object is still referenced, so the request still reaches Bottom's code.
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        check(&m, broken, Rule::CallToDeletedDevice, Some("Bad"));
        assert!(m.findings().iter().all(|(_, _, msg)| msg.contains("Bottom")));
        assert_eq!(m.crashed(), None);
    }
}

#[test]
fn no_more_irp_stack_locations() {
    for broken in [true, false] {
        let m = machine("no_more_irp_stack_locations", broken);
        let s = read_through_bad(&m);
        check(&m, broken, Rule::NoMoreStackLocations, Some("Bad"));
        if broken {
            // Windows bugchecks (NO_MORE_IRP_STACK_LOCATIONS, 0x35), and so does the simulator.
            assert_eq!(m.crashed().as_deref(), Some("NO_MORE_IRP_STACK_LOCATIONS"));
            assert_ne!(s, Status::SUCCESS);
        } else {
            assert_eq!(s, Status::SUCCESS);
            survives(&m);
        }
    }
}

#[test]
fn attach_to_initializing_device() {
    for broken in [true, false] {
        let mut m = machine("attach_to_initializing_device", broken);
        // Bad attaches a device to Bottom's stack outside DriverEntry (and, broken, leaves it
        // initializing); then Late attaches to the same stack.
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        assert_eq!(m.start("Late"), Status::SUCCESS);
        // The attach fails, and the finding is against the driver that left the flag set (its
        // code had returned), not the one that could not attach.
        check(&m, broken, Rule::AttachToInitializingDevice, Some("Bad"));
        let expected = if broken { Status::NO_SUCH_DEVICE } else { Status::SUCCESS };
        assert_eq!(Status(LATE_ATTACH.get()), expected);
        if broken {
            let message = &m.findings()[0].2;
            assert!(message.contains("Late could not attach above it"), "{message}");
        }
        survives(&m);
    }
}

/// The window between a driver's attach and its clearing of `DO_DEVICE_INITIALIZING` is normal:
/// an attach that meets it (here another driver's, run as ready work inside the first driver's
/// attach call) fails with `STATUS_NO_SUCH_DEVICE` and no finding. Once the first driver's code
/// returned with the flag still set, the next attach is refused with the finding against it.
#[test]
fn attach_in_the_initializing_window_is_no_finding() {
    for broken in [true, false] {
        let mut m = machine("attach_window", broken);
        assert_eq!(m.start("Late"), Status::SUCCESS);
        assert_eq!(LATE_ATTACH.get(), 1, "Late has not tried yet");
        // Bad attaches; Late's attempt inside that call fails (Bad asserts it), no finding.
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        assert!(findings(&m).is_empty(), "{:?}", m.findings());
        // Late tries again after Bad's dispatch routine returned.
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        check(&m, broken, Rule::AttachToInitializingDevice, Some("Bad"));
        let expected = if broken { Status::NO_SUCH_DEVICE } else { Status::SUCCESS };
        assert_eq!(Status(LATE_ATTACH.get()), expected);
        if broken {
            // A third attempt is refused again, without a second finding for the same device.
            assert_eq!(read_through_bad(&m), Status::SUCCESS);
            assert_eq!(Status(LATE_ATTACH.get()), Status::NO_SUCH_DEVICE);
            assert_eq!(findings(&m).len(), 1, "{:?}", m.findings());
        }
    }
}

#[test]
fn bugcheck() {
    for broken in [true, false] {
        let m = machine("bugcheck", broken);
        let s = read_through_bad(&m);
        check(&m, broken, Rule::Bugcheck, Some("Bad"));
        if broken {
            let crash = m.crashed().unwrap();
            assert!(crash.starts_with("KeBugCheckEx(0x000000E2, 0x1, 0x2, 0x3, 0x4)"), "{crash}");
            assert_ne!(s, Status::SUCCESS);
            // Nothing runs afterwards.
            MODE.set("");
            assert_ne!(read_through_bad(&m), Status::SUCCESS);
        } else {
            assert_eq!(s, Status::SUCCESS);
            survives(&m);
        }
    }
}

// ---- Unload rules -------------------------------------------------------------------------------

#[test]
fn device_objects_leaked_at_unload() {
    for broken in [true, false] {
        let mut m = machine("device_objects_leaked_at_unload", broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        let r = m.stop("Bad");
        check(&m, broken, Rule::DeviceObjectsLeaked, Some("Bad"));
        // The leaked device keeps the driver (and its image) around.
        assert_eq!(r, if broken { StopResult::Pending } else { StopResult::Unloaded });
        assert_eq!(m.crashed(), None);
    }
}

#[test]
fn pool_leaked_at_unload() {
    for broken in [true, false] {
        let mut m = machine("pool_leaked_at_unload", broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        assert_eq!(m.stop("Bad"), StopResult::Unloaded);
        check(&m, broken, Rule::PoolLeaked, Some("Bad"));
        if broken {
            assert!(m.findings()[0].2.contains("1 pool block(s), 32 bytes, tags VrfB"));
        }
        assert_eq!(m.crashed(), None);
    }
}

#[test]
fn io_objects_leaked_at_unload() {
    // IoAllocateIrp, IoAllocateMdl, IoAllocateWorkItem and FltAllocateGenericWorkItem allocate
    // from nonpaged pool for the driver, which must free each (IoFreeIrp, IoFreeMdl,
    // IoFreeWorkItem, FltFreeGenericWorkItem): until December 6 an unload that left them was
    // silent, as the blocks were not pool blocks of the image.
    for broken in [true, false] {
        let mut m = machine("io_objects_leaked_at_unload", broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        assert_eq!(m.stop("Bad"), StopResult::Unloaded);
        check(&m, broken, Rule::PoolLeaked, Some("Bad"));
        if broken {
            let text = &m.findings()[0].2;
            assert!(
                text.contains("1 IRP(s)")
                    && text.contains("1 MDL(s)")
                    && text.contains("2 work item(s)"),
                "{text}"
            );
        }
        assert_eq!(m.crashed(), None);
    }
}

#[test]
fn mdl_freed_twice() {
    // IoFreeMdl of an MDL freed already: a double free of its pool (BAD_POOL_FREE, as for
    // ExFreePool). Until December 6 the simulator ignored it.
    read_breaks("mdl_freed_twice", Rule::BadPoolFree, |_, _| {});
}

#[test]
fn fs_notification_leaked_at_unload() {
    for broken in [true, false] {
        let mut m = machine("fs_notification_leaked_at_unload", broken);
        m.boot();
        assert_eq!(m.stop("Bad"), StopResult::Unloaded);
        check(&m, broken, Rule::FsNotificationLeaked, Some("Bad"));
        // A file system registering later: the leaked routine of the unloaded driver is not
        // called (on Windows it would run unloaded code); the simulator reports that instead.
        let before = findings(&m).len();
        m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
        assert_eq!(NOTIFIED.get(), 0);
        let later: Vec<_> = findings(&m).into_iter().skip(before).collect();
        if broken {
            // One per control device that registers (the volume's file system, RAW, ...).
            assert!(!later.is_empty());
            assert!(
                later.iter().all(|f| *f == (Rule::UnloadedDriverCodeRan, Some("Bad".into()))),
                "{later:?}"
            );
        } else {
            assert!(later.is_empty(), "{later:?}");
        }
        assert_eq!(m.crashed(), None);
    }
}

// ---- Pool, locks, IRQL, objects, handles ------------------------------------------------------

#[test]
fn bad_pool_free() {
    // Windows bugchecks (BAD_POOL_CALLER); the simulator reports and goes on.
    read_breaks("bad_pool_free", Rule::BadPoolFree, |_, _| {});
}

#[test]
fn pool_tag_mismatch() {
    read_breaks("pool_tag_mismatch", Rule::PoolTagMismatch, |m, broken| {
        if broken {
            assert!(m.findings()[0].2.contains("'VrfB' freed with tag 'Oops'"));
        }
        // Windows bugchecks (BAD_POOL_CALLER); the simulator frees the block and goes on.
    });
}

#[test]
fn irql_too_high() {
    read_breaks("irql_too_high", Rule::IrqlTooHigh, |m, broken| {
        if broken {
            assert!(m.findings()[0].2.contains("IoCreateDevice called at IRQL 2"));
        }
    });
}

#[test]
fn spin_lock_misuse() {
    for broken in [true, false] {
        let m = machine("spin_lock_misuse", broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        check(&m, broken, Rule::SpinLockMisuse, Some("Bad"));
        survives(&m);
        assert_eq!(m.kernel(|k| k.irql()), 0, "back at PASSIVE_LEVEL");
    }
}

#[test]
fn dispatch_routine_returning_at_another_irql() {
    // DRIVER_VERIFIER_IOMANAGER_VIOLATION (0xC9), parameter 0x05: the IRQL changed during a call
    // to a dispatch routine. Reported against the routine's driver; the caller goes on at its
    // own IRQL.
    read_breaks("dispatch_returns_raised", Rule::SpinLockMisuse, |m, _| {
        assert_eq!(m.kernel(|k| k.irql()), 0, "back at PASSIVE_LEVEL");
    });
}

#[test]
fn completion_routine_returning_at_another_irql() {
    // The I/O manager goes on with the next completion routine, and stage two, at the IRQL it
    // called this one at: a routine that returns raised (a spin lock kept) is reported against
    // its driver, as a dispatch routine is.
    read_breaks("completion_returns_raised", Rule::SpinLockMisuse, |m, _| {
        assert_eq!(m.kernel(|k| k.irql()), 0, "back at PASSIVE_LEVEL");
    });
}

#[test]
fn work_item_queued_twice() {
    // WORKER_INVALID (0xE4), parameter 1: an active work item was queued. The second queueing
    // is refused: the routine runs once.
    read_breaks("work_item_queued_twice", Rule::Bugcheck, |_, _| assert_eq!(WORK_RUNS.get(), 1));
}

#[test]
fn queued_work_item_freed() {
    // IoFreeWorkItem's reference page: only free a work item that is not queued; WORKER_INVALID
    // (0xE4), parameter 2: a queued I/O work item was freed. The routine still runs.
    read_breaks("queued_work_item_freed", Rule::Bugcheck, |_, _| assert_eq!(WORK_RUNS.get(), 1));
}

#[test]
fn a_work_item_returning_at_another_irql_is_reported_against_its_driver() {
    // A work routine runs at PASSIVE_LEVEL and must return there. The I/O manager's worker,
    // which drops the device reference after the routine, reports it against the routine's
    // driver and goes on at PASSIVE_LEVEL.
    for broken in [true, false] {
        let m = machine("work_item_irql", broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        check(&m, broken, Rule::SpinLockMisuse, Some("Bad"));
        if broken {
            assert!(m.findings()[0].2.contains("IoQueueWorkItem"), "{:?}", m.findings());
        }
        survives(&m);
        assert_eq!(m.kernel(|k| k.irql()), 0, "back at PASSIVE_LEVEL");
    }
}

#[test]
fn irp_completed_inside_its_completion_routine() {
    // facts.md §1.8: STATUS_MORE_PROCESSING_REQUIRED halts completion, and a later
    // IoCompleteRequest resumes it. A routine that completes the IRP itself and answers
    // STATUS_SUCCESS lets the I/O manager go on over an IRP already completed.
    read_breaks("completed_in_routine", Rule::IrpCompletedTwice, |_, _| {});
}

#[test]
fn dispatch_status_differs_from_irp_status() {
    // Driver Verifier's I/O verification, WDM DRIVER ERROR 0x224 (bug check 0xC9's page): "An
    // IRP dispatch handler has returned a status that is inconsistent with the IRP's
    // IoStatus.Status field". The sender gets two answers: IoCallDriver's (what a system service
    // returns) and the IRP's (what the status block gets). Until December 7 this was silent.
    for broken in [true, false] {
        let m = machine("status_differs", broken);
        let (returned, iosb) = send_both(&m, bad_device(), IRP_MJ_READ, 0);
        assert_eq!(iosb, Status::ACCESS_DENIED);
        assert_eq!(returned, if broken { Status::SUCCESS } else { Status::ACCESS_DENIED });
        check(&m, broken, Rule::DispatchStatusDiffersFromIrpStatus, Some("Bad"));
        if broken {
            let text = &m.findings()[0].2;
            assert!(
                text.contains("STATUS_SUCCESS") && text.contains("STATUS_ACCESS_DENIED"),
                "{text}"
            );
        }
        assert_eq!(
            Rule::DispatchStatusDiffersFromIrpStatus.name(),
            "DISPATCH_STATUS_DIFFERS_FROM_IRP_STATUS"
        );
        survives(&m);
    }
}

#[test]
fn a_completion_routine_that_changes_the_status_under_a_returned_lower_status() {
    // A pass-through whose completion routine fails the IRP Bottom completed with success, and
    // whose dispatch routine returns what IoCallDriver returned (Bottom's STATUS_SUCCESS): Bad is
    // at fault, not Bottom, whose return matched the IRP's status when completion passed its
    // stack location. Corrected, Bad marks the IRP pending and returns STATUS_PENDING, and the
    // sender takes the final status: no finding.
    for broken in [true, false] {
        let m = machine("routine_changes_status", broken);
        let (returned, iosb) = send_both(&m, bad_device(), IRP_MJ_READ, 0);
        assert_eq!(iosb, Status::ACCESS_DENIED);
        assert_eq!(returned, if broken { Status::SUCCESS } else { Status::PENDING });
        check(&m, broken, Rule::DispatchStatusDiffersFromIrpStatus, Some("Bad"));
        survives(&m);
    }
}

#[test]
fn a_halted_completion_completed_again_returns_the_final_status() {
    // A dispatch routine that reclaims the IRP (its routine answers
    // STATUS_MORE_PROCESSING_REQUIRED), fails it and completes it again owes its caller that
    // final status; Bottom's STATUS_SUCCESS, which IoCallDriver returned, matched the IRP when
    // completion first passed Bottom's location, so the halted walk is no finding of its own.
    for broken in [true, false] {
        let m = machine("halt_and_complete_again", broken);
        let (returned, iosb) = send_both(&m, bad_device(), IRP_MJ_READ, 0);
        assert_eq!(iosb, Status::ACCESS_DENIED);
        assert_eq!(returned, if broken { Status::SUCCESS } else { Status::ACCESS_DENIED });
        check(&m, broken, Rule::DispatchStatusDiffersFromIrpStatus, Some("Bad"));
        survives(&m);
    }
}

#[test]
fn detach_from_device_not_attached() {
    // A second IoDetachDevice of the same lower device: Windows writes through the NULL
    // AttachedDevice; Driver Verifier: "detach from a device object which is not attached to
    // anything".
    for broken in [true, false] {
        let mut m = machine("detach_not_attached", broken);
        assert_eq!(m.start("Late"), Status::SUCCESS);
        assert_eq!(LATE_ATTACH.get(), 0, "Late attached, then detached");
        check(&m, broken, Rule::DetachNotAttached, Some("Late"));
        assert_eq!(Rule::DetachNotAttached.name(), "DETACH_FROM_DEVICE_NOT_ATTACHED");
        // Bad, which Late had attached above, is still on top and serves requests.
        survives(&m);
    }
}

#[test]
fn delete_while_attached() {
    // IoDeleteDevice of a device still attached to the one below it (no IoDetachDevice first):
    // Driver Verifier's I/O verification fails the driver with DCERROR_DELETE_WHILE_ATTACHED ("A
    // device is deleting itself while there is another device beneath it in the driver stack").
    // Until December 6 the simulator deleted it silently, leaving the device below pointing to a
    // deleted device as its AttachedDevice.
    for broken in [true, false] {
        let mut m = machine("delete_while_attached", broken);
        assert_eq!(m.start("Late"), Status::SUCCESS);
        assert_eq!(LATE_ATTACH.get(), 0, "Late attached");
        check(&m, broken, Rule::DeleteWhileAttached, Some("Late"));
        assert_eq!(Rule::DeleteWhileAttached.name(), "DELETE_WHILE_ATTACHED");
        if !broken {
            survives(&m);
        }
    }
}

#[test]
fn io_detach_device_above_passive_level() {
    // IoDetachDevice's reference page gives IRQL PASSIVE_LEVEL; the simulator reports it above
    // APC_LEVEL (FastIoDetachDevice runs inside IoDeleteDevice), and the detach still happens.
    for broken in [true, false] {
        let mut m = machine("detach_raised", broken);
        assert_eq!(m.start("Late"), Status::SUCCESS);
        assert_eq!(LATE_ATTACH.get(), 0, "Late attached, then detached");
        check(&m, broken, Rule::IrqlTooHigh, Some("Late"));
        survives(&m);
    }
}

#[test]
fn io_delete_device_twice() {
    // IoDeleteDevice's reference page: a driver may call it only once for a device object. The
    // first call drops the object's creation reference (and frees it when nothing else holds
    // it); a second one dereferences it again, or a freed object.
    for broken in [true, false] {
        let mut m = machine("delete_twice", broken);
        assert_eq!(m.start("Late"), Status::SUCCESS);
        check(&m, broken, Rule::ObjectOverDereferenced, Some("Late"));
        survives(&m);
    }
}

#[test]
fn attach_of_a_device_attached_already() {
    // facts.md §1.3: the source is linked above the current top of the target's stack. A device
    // attached already that attaches again is linked above itself when it is that top (Windows
    // then loops forever in IoGetAttachedDevice), or into two stacks. The attach is refused.
    for broken in [true, false] {
        let mut m = machine("attach_twice", broken);
        assert_eq!(m.start("Late"), Status::SUCCESS);
        check(&m, broken, Rule::Bugcheck, Some("Late"));
        let expected = if broken { Status::INVALID_PARAMETER } else { Status::SUCCESS };
        assert_eq!(Status(LATE_ATTACH.get()), expected);
        // Late's device is on top of Bottom's stack, once.
        let stack = m.kernel(|k| {
            let id = k.objects.device_id(BOTTOM.get() as *const DEVICE_OBJECT).unwrap();
            k.objects.stack_from_top(id).len()
        });
        assert_eq!(stack, 2, "Bottom and Late");
    }
}

#[test]
fn object_over_dereferenced() {
    for broken in [true, false] {
        let mut m = machine("object_over_dereferenced", broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        check(&m, broken, Rule::ObjectOverDereferenced, Some("Bad"));
        survives(&m);
        // The count did not go below zero: the driver still unloads normally.
        MODE.set("");
        assert_eq!(m.stop("Bad"), StopResult::Unloaded);
    }
}

#[test]
fn invalid_handle() {
    for broken in [true, false] {
        // The mistake is in DriverEntry: ZwClose twice on one key handle.
        let m = machine("invalid_handle", broken);
        check(&m, broken, Rule::InvalidHandle, Some("Bad"));
        // Windows bugchecks for an invalid kernel handle (INVALID_KERNEL_HANDLE); the simulator
        // fails the call with STATUS_INVALID_HANDLE and goes on.
        survives(&m);
    }
}

#[test]
fn cancel_file_open_misuse() {
    for broken in [true, false] {
        let mut m = machine("cancel_file_open_misuse", broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        check(&m, broken, Rule::CancelFileOpenMisuse, Some("Bad"));
        // The file object was left alone: requests through it go on, and the unload's
        // ObDereferenceObject closes it.
        survives(&m);
        assert_eq!(m.stop("Bad"), StopResult::Unloaded);
        assert!(findings(&m).len() <= 1, "{:?}", m.findings());
    }
}

#[test]
fn image_global_outside_image() {
    for broken in [true, false] {
        let mut m = machine("image_global_outside_image", broken);
        assert_eq!(read_through_bad(&m), Status::SUCCESS);
        // Inside Bad's code the global is Bad's.
        assert_eq!(GLOBAL_INSIDE.get(), (&raw const BAD_GLOBAL) as usize);
        if broken {
            // Bad's helper called from code that is no driver's (a user-mode caller's thread):
            // there is no image whose global it could be.
            m.schedule(0, |_| GLOBAL_OUTSIDE.set(bad_global()));
            m.settle();
            assert_ne!(GLOBAL_OUTSIDE.get(), (&raw const BAD_GLOBAL) as usize);
        }
        // No image was running: the finding names no driver.
        check(&m, broken, Rule::ImageGlobalOutsideImage, None);
        survives(&m);
        assert_eq!(GLOBAL_INSIDE.get(), (&raw const BAD_GLOBAL) as usize, "Bad's global untouched");
    }
}

// ---- Filter Manager rules (fltcommon's test minifilters) -----------------------------------------

fn flt_setup() -> (Machine, fsfilter_sim::VolumeId) {
    let mut m = fltcommon::machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", &[b'a'; 512]));
    m.install_filter_manager();
    m.boot();
    (m, c)
}

#[test]
fn invalid_flt_object() {
    use fltcommon::{Config, mj};
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCompletePendedPreOperation;
    for broken in [true, false] {
        let (mut m, c) = flt_setup();
        let cfg = Config::new("BadFlt", "300000").op(mj::READ, true, false).with_pre(move |p| {
            if broken {
                // Completes the operation it is called for through the pended-operation API,
                // though it never returned FLT_PREOP_PENDING for it.
                // SAFETY: the callback data of this pre-operation callback.
                unsafe { FltCompletePendedPreOperation(p.data, 1, std::ptr::null()) };
            }
            (1, 0) // FLT_PREOP_SUCCESS_NO_CALLBACK
        });
        fltcommon::install(&mut m, 0, cfg);
        assert_eq!(m.start("BadFlt"), Status::SUCCESS);
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let r = m.read(h, Some(0), 512, IoMode::NonCached);
        assert_eq!(r.status, Status::SUCCESS);
        check(&m, broken, Rule::InvalidFltObject, Some("BadFlt"));
        assert_eq!(m.close_handle(h), Status::SUCCESS);
        assert_eq!(m.crashed(), None);
    }
}

#[test]
fn cancel_file_open_misuse_from_a_minifilter() {
    use fltcommon::{Config, mj};
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
        FltCancelFileOpen, FltSetCallbackDataDirty,
    };
    for broken in [true, false] {
        let (mut m, c) = flt_setup();
        let cfg = Config::new("BadFlt", "300000")
            .op(mj::CREATE, false, true)
            .op(mj::READ, true, false)
            .with_pre(move |p| {
                if broken {
                    // Cancels the open of a file that has a handle: outside a create.
                    // SAFETY: the instance and file object of this callback.
                    unsafe { FltCancelFileOpen(p.instance(), p.iopb().TargetFileObject) };
                }
                (1, 0)
            })
            .with_post(move |p| {
                if !broken && p.status().is_success() {
                    // Where it belongs: a create's post processing, before the handle exists;
                    // the create then fails.
                    // SAFETY: the instance and file object of this callback.
                    unsafe { FltCancelFileOpen(p.instance(), (*p.data().Iopb).TargetFileObject) };
                    p.data().IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0;
                    // SAFETY: the callback data of this post-operation callback.
                    unsafe { FltSetCallbackDataDirty(p.data) };
                }
                0
            });
        fltcommon::install(&mut m, 0, cfg);
        assert_eq!(m.start("BadFlt"), Status::SUCCESS);
        let r = m.create(c, "a.txt", CreateOptions::open());
        if broken {
            let h = r.handle.unwrap();
            let read = m.read(h, Some(0), 512, IoMode::NonCached);
            // The file object was left alone: the read goes on.
            assert_eq!(read.status, Status::SUCCESS);
            assert_eq!(m.close_handle(h), Status::SUCCESS);
        } else {
            assert_eq!(r.status, Status::ACCESS_DENIED);
        }
        check(&m, broken, Rule::CancelFileOpenMisuse, Some("BadFlt"));
        assert_eq!(m.crashed(), None);
    }
}
