//! The I/O manager core with hand-written drivers: device creation and attachment (facts.md
//! §1.3), IRPs through a two-driver stack with a completion routine (§1.8), pending propagation,
//! the verifier's rules, DriverUnload preconditions (§1.9).

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

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::null_mut;

use fsfilter::Status;
use fsfilter_kernel::irp::{
    IoCallDriver, IoCompleteRequest, IoCopyCurrentIrpStackLocationToNext,
    IoGetCurrentIrpStackLocation, IoMarkIrpPending, IoSkipCurrentIrpStackLocation,
};
use fsfilter_sim::{Machine, MachineConfig, Rule, ServiceSpec, StopResult};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP};
use windows_sys::Wdk::System::SystemServices::{
    IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDeleteDevice, IoDetachDevice,
    IoSetCompletionRoutineEx,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static BOTTOM: RefCell<usize> = const { RefCell::new(0) };
    static TOP: RefCell<(usize, usize)> = const { RefCell::new((0, 0)) };
    static MODE: RefCell<&'static str> = const { RefCell::new("sync") };
}

fn log(s: impl Into<String>) {
    LOG.with(|l| l.borrow_mut().push(s.into()));
}

fn take_log() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

// A "bottom" driver: completes every IRP, synchronously or by pending and completing from a DPC.
unsafe extern "system" fn bottom_dispatch(_d: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    log("bottom dispatch");
    let mode = MODE.with(|m| *m.borrow());
    // SAFETY: a live IRP from the I/O manager.
    unsafe { (*irp).IoStatus.Anonymous.Status = 0 };
    match mode {
        "pend" => {
            // SAFETY: as above.
            unsafe { IoMarkIrpPending(irp) };
            let irp_addr = irp as usize;
            fsfilter_sim::sched::queue_dpc(
                "complete later",
                None,
                10,
                Box::new(move || {
                    log("bottom completes from a DPC");
                    // SAFETY: the IRP stays alive until completed.
                    unsafe { IoCompleteRequest(irp_addr as *mut IRP, 0) };
                }),
            );
            Status::PENDING.0
        }
        "pend-without-mark" => Status::PENDING.0,
        "complete-twice" => {
            // SAFETY: as above.
            unsafe { IoCompleteRequest(irp, 0) };
            // SAFETY: deliberately wrong: the IRP is completed (and freed) already.
            unsafe { IoCompleteRequest(irp, 0) };
            0
        }
        _ => {
            // SAFETY: as above.
            unsafe { IoCompleteRequest(irp, 0) };
            0
        }
    }
}

unsafe extern "system" fn bottom_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object.
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(bottom_dispatch);
    }
    let mut dev = null_mut();
    // SAFETY: valid arguments; an unnamed disk device.
    let s = unsafe { IoCreateDevice(driver, 0, std::ptr::null(), 7, 0, false, &mut dev) };
    BOTTOM.with(|b| *b.borrow_mut() = dev as usize);
    s
}

unsafe extern "system" fn top_completion(
    _d: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    ctx: *mut c_void,
) -> NTSTATUS {
    log(format!("top completion ctx={}", ctx as usize));
    // SAFETY: a live IRP during its completion.
    if unsafe { (*irp).PendingReturned } {
        // SAFETY: as above.
        unsafe { IoMarkIrpPending(irp) };
    }
    0
}

unsafe extern "system" fn top_dispatch(d: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    log("top dispatch");
    let lower = TOP.with(|t| t.borrow().1) as *mut DEVICE_OBJECT;
    if MODE.with(|m| *m.borrow()) == "skip" {
        // SAFETY: a live IRP.
        unsafe { IoSkipCurrentIrpStackLocation(irp) };
    } else {
        // SAFETY: a live IRP with a next location.
        unsafe { IoCopyCurrentIrpStackLocationToNext(irp) };
        // SAFETY: our device, a live IRP, our routine.
        let s = unsafe {
            IoSetCompletionRoutineEx(
                d,
                irp,
                fsfilter_kernel::ntos::completion_routine_field(top_completion),
                42 as *const c_void,
                true,
                true,
                true,
            )
        };
        assert_eq!(s, 0);
    }
    // SAFETY: the lower device of our stack.
    unsafe { IoCallDriver(lower, irp) }
}

unsafe extern "system" fn top_unload(_driver: *const DRIVER_OBJECT) {
    log("top unload");
    let (me, lower) = TOP.with(|t| *t.borrow());
    // SAFETY: our attachment and our device.
    unsafe { IoDetachDevice(lower as *mut DEVICE_OBJECT) };
    // SAFETY: our device.
    unsafe { IoDeleteDevice(me as *mut DEVICE_OBJECT) };
}

unsafe extern "system" fn top_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object.
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(top_dispatch);
    }
    d.DriverUnload = Some(top_unload);
    let mut dev = null_mut();
    // SAFETY: valid arguments.
    let s = unsafe { IoCreateDevice(driver, 16, std::ptr::null(), 7, 0, false, &mut dev) };
    assert_eq!(s, 0);
    let target = BOTTOM.with(|b| *b.borrow()) as *mut DEVICE_OBJECT;
    let mut lower = null_mut();
    // SAFETY: two live devices.
    let s = unsafe { IoAttachDeviceToDeviceStackSafe(dev, target, &mut lower) };
    TOP.with(|t| *t.borrow_mut() = (dev as usize, lower as usize));
    s
}

fn machine() -> Machine {
    let mut m = Machine::new(MachineConfig { seed: 1 });
    m.install(ServiceSpec::new("Bottom", bottom_entry, "native"));
    m.install(ServiceSpec::new("Top", top_entry, "legacy"));
    assert_eq!(m.start("Bottom"), Status::SUCCESS);
    assert_eq!(m.start("Top"), Status::SUCCESS);
    take_log();
    m
}

/// Sends a read to the top of the bottom device's stack as the I/O manager would, and waits.
fn send_read(m: &Machine) -> Status {
    let (top, irp) = m.kernel(|k| {
        let bottom =
            k.objects.device_id(BOTTOM.with(|b| *b.borrow()) as *const DEVICE_OBJECT).unwrap();
        let top = k.objects.top(bottom);
        let size = k.objects.dobj(top).StackSize;
        let irp = k.allocate_irp(size, fsfilter_sim::irp::Finish::Synchronous, None);
        (k.objects.device(top).ptr, irp)
    });
    // SAFETY: all-zero is a valid IO_STATUS_BLOCK.
    let mut iosb: windows_sys::Win32::System::IO::IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    iosb.Anonymous.Status = -1;
    // SAFETY: a fresh IRP: fill the first location and the status block as IoBuildXxx would.
    unsafe {
        let next = IoGetCurrentIrpStackLocation(irp).wrapping_sub(1);
        (*next).MajorFunction = 3;
        (*irp).IoStatus.Anonymous.Status = Status::PENDING.0;
        (*irp).Anonymous.UserIosb = &mut iosb;
    }
    // SAFETY: a live device and IRP.
    let _ = unsafe { IoCallDriver(top, irp) };
    fsfilter_sim::sched::run_all();
    // SAFETY: written by the I/O manager at completion.
    Status(unsafe { iosb.Anonymous.Status })
}

#[test]
fn attach_updates_stack_size_and_links_both_ways() {
    // facts.md §1.3: the source lands on the current top; StackSize = top + 1.
    let m = machine();
    m.kernel(|k| {
        let bottom =
            k.objects.device_id(BOTTOM.with(|b| *b.borrow()) as *const DEVICE_OBJECT).unwrap();
        let top = k.objects.top(bottom);
        assert_ne!(top, bottom);
        assert_eq!(k.objects.dobj(top).StackSize, k.objects.dobj(bottom).StackSize + 1);
        assert_eq!(k.objects.device(top).attached_to, Some(bottom));
        assert_eq!(k.objects.dobj(bottom).AttachedDevice, k.objects.device(top).ptr);
        // DO_DEVICE_INITIALIZING was cleared for devices created in DriverEntry.
        assert_eq!(k.objects.dobj(top).Flags & 0x80, 0);
    });
}

#[test]
fn completion_routines_run_from_the_lowest_location_up() {
    let m = machine();
    assert_eq!(send_read(&m), Status::SUCCESS);
    assert_eq!(take_log(), ["top dispatch", "bottom dispatch", "top completion ctx=42"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn pending_completes_later_from_a_dpc_and_propagates() {
    let m = machine();
    MODE.with(|x| *x.borrow_mut() = "pend");
    assert_eq!(send_read(&m), Status::SUCCESS);
    MODE.with(|x| *x.borrow_mut() = "sync");
    assert_eq!(
        take_log(),
        ["top dispatch", "bottom dispatch", "bottom completes from a DPC", "top completion ctx=42"]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_skipping_filter_returns_the_lower_status_and_needs_no_mark() {
    let m = machine();
    MODE.with(|x| *x.borrow_mut() = "skip");
    assert_eq!(send_read(&m), Status::SUCCESS);
    MODE.with(|x| *x.borrow_mut() = "sync");
    assert_eq!(take_log(), ["top dispatch", "bottom dispatch"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn verifier_catches_pending_without_mark() {
    let m = machine();
    MODE.with(|x| *x.borrow_mut() = "pend-without-mark");
    let (top, irp) = m.kernel(|k| {
        let bottom =
            k.objects.device_id(BOTTOM.with(|b| *b.borrow()) as *const DEVICE_OBJECT).unwrap();
        let top = k.objects.top(bottom);
        let irp = k.allocate_irp(4, fsfilter_sim::irp::Finish::DriverOwned, None);
        (k.objects.device(top).ptr, irp)
    });
    // SAFETY: a live device and IRP.
    unsafe { IoCallDriver(top, irp) };
    MODE.with(|x| *x.borrow_mut() = "sync");
    let rules: Vec<(Rule, Option<String>)> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert!(rules.contains(&(Rule::PendingWithoutMark, Some("Bottom".into()))), "{rules:?}");
}

#[test]
fn verifier_catches_double_completion() {
    let m = machine();
    MODE.with(|x| *x.borrow_mut() = "complete-twice");
    let (top, irp) = m.kernel(|k| {
        let bottom =
            k.objects.device_id(BOTTOM.with(|b| *b.borrow()) as *const DEVICE_OBJECT).unwrap();
        let top = k.objects.top(bottom);
        let irp = k.allocate_irp(4, fsfilter_sim::irp::Finish::DriverOwned, None);
        (k.objects.device(top).ptr, irp)
    });
    // SAFETY: a live device and IRP.
    unsafe { IoCallDriver(top, irp) };
    MODE.with(|x| *x.borrow_mut() = "sync");
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert!(rules.contains(&Rule::IrpCompletedTwice), "{rules:?}");
}

#[test]
fn unload_waits_for_the_top_of_the_stack_and_runs_once() {
    // facts.md §1.9: DriverUnload runs once the driver's devices are at the top with no handles.
    let mut m = machine();
    assert_eq!(m.stop("Top"), StopResult::Unloaded);
    assert_eq!(take_log(), ["top unload"]);
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert!(rules.is_empty(), "a clean unload leaves nothing: {rules:?}");
    // The bottom driver has no DriverUnload: it cannot be stopped.
    assert_eq!(m.stop("Bottom"), StopResult::NotStoppable);
}

#[test]
fn a_completion_routine_set_with_ex_keeps_the_driver_image_until_it_ran() {
    let mut m = machine();
    MODE.with(|x| *x.borrow_mut() = "pend");
    let (top, irp) = m.kernel(|k| {
        let bottom =
            k.objects.device_id(BOTTOM.with(|b| *b.borrow()) as *const DEVICE_OBJECT).unwrap();
        let top = k.objects.top(bottom);
        let size = k.objects.dobj(top).StackSize;
        let irp = k.allocate_irp(size, fsfilter_sim::irp::Finish::DriverOwned, None);
        (k.objects.device(top).ptr, irp)
    });
    // SAFETY: a live device and IRP.
    unsafe { IoCallDriver(top, irp) };
    // The IRP is pending in the bottom driver; stop the top driver now.
    let r = m.stop("Top");
    // DriverUnload ran (the top device was at the top, no handles), but its device is still
    // referenced by the pending completion routine, so the image stays mapped.
    assert_eq!(r, StopResult::Pending);
    fsfilter_sim::sched::run_all();
    MODE.with(|x| *x.borrow_mut() = "sync");
    let log = take_log();
    assert!(log.contains(&"top completion ctx=42".to_owned()), "{log:?}");
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert!(!rules.contains(&Rule::UnloadedDriverCodeRan), "{rules:?}");
    // Once the routine ran, the last reference went and the driver is gone.
    assert_eq!(m.stop("Top"), StopResult::NotRunning);
}
