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
    IoAttachDeviceToDeviceStack, IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDeleteDevice,
    IoDetachDevice, IoGetDeviceObjectPointer, IoSetCompletionRoutineEx, ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static BOTTOM: RefCell<usize> = const { RefCell::new(0) };
    static TOP: RefCell<(usize, usize)> = const { RefCell::new((0, 0)) };
    static MODE: RefCell<&'static str> = const { RefCell::new("sync") };
    /// What "Stacker" saw in its DriverEntry.
    static STACKED: RefCell<Stacked> = const { RefCell::new(Stacked::new()) };
}

/// What "Stacker" saw in its DriverEntry.
#[derive(Clone, Copy)]
struct Stacked {
    /// Its first device, attached to Bottom with IoAttachDeviceToDeviceStack.
    first: usize,
    /// What that attach returned.
    returned: usize,
    /// Its first device's flags right after the attach (DriverEntry has not returned).
    first_flags: u32,
    /// What IoAttachDeviceToDeviceStack returned for a second device, the first being the top
    /// of the stack and still initializing.
    second_returned: usize,
    /// What IoAttachDeviceToDeviceStackSafe returned for it.
    second_safe: NTSTATUS,
}

impl Stacked {
    const fn new() -> Stacked {
        Stacked { first: 0, returned: 0, first_flags: 0, second_returned: 1, second_safe: 0 }
    }
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
        "pend" | "pend-top-forgets" => {
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
    // "pend-top-forgets": the routine does not propagate PendingReturned (facts.md §1.8).
    let forgets = MODE.with(|m| *m.borrow()) == "pend-top-forgets";
    // SAFETY: a live IRP during its completion.
    if unsafe { (*irp).PendingReturned } && !forgets {
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

unsafe extern "system" fn stacker_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    const FILE_DEVICE_UNKNOWN: u32 = 0x22;
    let bottom = BOTTOM.with(|b| *b.borrow()) as *mut DEVICE_OBJECT;
    let (mut first, mut second) = (null_mut(), null_mut());
    // SAFETY: our driver object; unnamed devices of a type other than the stack's.
    unsafe {
        assert_eq!(
            IoCreateDevice(driver, 0, std::ptr::null(), FILE_DEVICE_UNKNOWN, 0, false, &mut first),
            0
        );
        assert_eq!(
            IoCreateDevice(driver, 0, std::ptr::null(), FILE_DEVICE_UNKNOWN, 0, false, &mut second),
            0
        );
    }
    // Bottom is not the top of its stack (Top is attached to it).
    // SAFETY: two live devices.
    let returned = unsafe { IoAttachDeviceToDeviceStack(first, bottom) };
    // SAFETY: our device.
    let first_flags = unsafe { (*first).Flags };
    // SAFETY: two live devices; the top of the stack (`first`) is still initializing.
    let second_returned = unsafe { IoAttachDeviceToDeviceStack(second, bottom) };
    let mut lower = null_mut();
    // SAFETY: as above, with an out parameter.
    let second_safe = unsafe { IoAttachDeviceToDeviceStackSafe(second, bottom, &mut lower) };
    // SAFETY: our device, never attached.
    unsafe { IoDeleteDevice(second) };
    STACKED.with(|s| {
        *s.borrow_mut() = Stacked {
            first: first as usize,
            returned: returned as usize,
            first_flags,
            second_returned: second_returned as usize,
            second_safe,
        }
    });
    0
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
fn attach_lands_on_the_top_copies_sizes_but_not_type_or_flags() {
    // facts.md §1.3: IoAttachDeviceToDeviceStack attaches to the current top of the target's
    // stack and returns that top; it sets StackSize = top + 1 and copies AlignmentRequirement
    // and SectorSize, but not DeviceType, Flags or Characteristics; it fails (non-Safe: NULL,
    // Safe: STATUS_NO_SUCH_DEVICE) while the top is still DO_DEVICE_INITIALIZING.
    let mut m = machine();
    let top = m.kernel(|k| {
        let bottom =
            k.objects.device_id(BOTTOM.with(|b| *b.borrow()) as *const DEVICE_OBJECT).unwrap();
        let top = k.objects.top(bottom);
        let t = k.objects.dobj(top);
        t.AlignmentRequirement = 0x1ff;
        t.SectorSize = 2048;
        // DO_DIRECT_IO; FILE_DEVICE_SECURE_OPEN.
        t.Flags |= 0x10;
        t.Characteristics |= 0x100;
        k.objects.device(top).ptr as usize
    });
    m.install(ServiceSpec::new("Stacker", stacker_entry, "legacy"));
    assert_eq!(m.start("Stacker"), Status::SUCCESS);
    let s = STACKED.with(|s| *s.borrow());
    assert_eq!(s.returned, top, "the top is returned, not the target");
    assert_ne!(s.first_flags & 0x80, 0, "still initializing inside DriverEntry");
    assert_eq!(s.second_returned, 0, "non-Safe: NULL on failure");
    assert_eq!(Status(s.second_safe), Status::NO_SUCH_DEVICE);
    // SAFETY: live devices of the machine.
    let (first, top) =
        unsafe { (&*(s.first as *const DEVICE_OBJECT), &*(top as *const DEVICE_OBJECT)) };
    assert_eq!(top.AttachedDevice as usize, s.first);
    assert_eq!(first.StackSize, top.StackSize + 1);
    assert_eq!((first.AlignmentRequirement, first.SectorSize), (0x1ff, 2048));
    assert_eq!(first.DeviceType, 0x22, "the type is the filter's to copy");
    assert_eq!(first.Flags & 0x10, 0, "DO_DIRECT_IO is the filter's to copy");
    assert_eq!(first.Characteristics & 0x100, 0, "FILE_DEVICE_SECURE_OPEN is the filter's to copy");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
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
fn verifier_catches_a_completion_routine_that_does_not_propagate_pending() {
    // facts.md §1.8: unless it signals an event, a completion routine must propagate
    // PendingReturned with IoMarkIrpPending. Top returns IoCallDriver's STATUS_PENDING (Bottom
    // pends and completes from a DPC) but its completion routine does not mark the IRP: the
    // finding names Top, not Bottom, which marked its own location.
    let m = machine();
    MODE.with(|x| *x.borrow_mut() = "pend-top-forgets");
    assert_eq!(send_read(&m), Status::SUCCESS);
    MODE.with(|x| *x.borrow_mut() = "sync");
    assert_eq!(
        take_log(),
        ["top dispatch", "bottom dispatch", "bottom completes from a DPC", "top completion ctx=42"]
    );
    let rules: Vec<(Rule, Option<String>)> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(Rule::PendingWithoutMark, Some("Top".into()))]);
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

// "Ctl": a legacy filter's control device, named as filters name theirs
// (`\FileSystem\Filters\<service>`); opens, cleanups and closes succeed, and DriverUnload
// deletes the device.
const CTL_NAME: &str = r"\FileSystem\Filters\CtlSvc";

thread_local! {
    static CTL: RefCell<usize> = const { RefCell::new(0) };
}

unsafe extern "system" fn ctl_dispatch(_d: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the live IRP in our dispatch routine.
    let major = unsafe { (*IoGetCurrentIrpStackLocation(irp)).MajorFunction };
    log(format!("ctl irp {major}"));
    // SAFETY: as above; completed once.
    unsafe {
        (*irp).IoStatus.Anonymous.Status = 0;
        IoCompleteRequest(irp, 0);
    }
    0
}

unsafe extern "system" fn ctl_unload(_driver: *const DRIVER_OBJECT) {
    log("ctl unload");
    let dev = CTL.with(|c| *c.borrow()) as *mut DEVICE_OBJECT;
    if !dev.is_null() {
        // SAFETY: our control device, attached to nothing.
        unsafe { IoDeleteDevice(dev) };
    }
}

unsafe extern "system" fn ctl_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object.
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(ctl_dispatch);
    }
    d.DriverUnload = Some(ctl_unload);
    let units: Vec<u16> = CTL_NAME.encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    let mut dev = null_mut();
    // SAFETY: our driver; a named control device (FILE_DEVICE_DISK_FILE_SYSTEM).
    let s = unsafe { IoCreateDevice(driver, 0, &name, 8, 0, false, &mut dev) };
    CTL.with(|c| *c.borrow_mut() = dev as usize);
    s
}

#[test]
fn an_open_control_device_keeps_a_stop_pending_until_it_is_closed() {
    // facts.md §1.9: the I/O manager calls DriverUnload only once the driver's devices have no
    // handles or references left. A file object open on the filter's named control device (what
    // IoGetDeviceObjectPointer leaves its caller, as a service's user-mode handle would) keeps
    // `sc stop` pending; closing it lets the unload happen, once.
    let mut m = Machine::new(MachineConfig { seed: 1 });
    take_log();
    m.install(ServiceSpec::new("CtlSvc", ctl_entry, "legacy"));
    assert_eq!(m.start("CtlSvc"), Status::SUCCESS);
    let units: Vec<u16> = CTL_NAME.encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    let (mut fo, mut dev) = (null_mut(), null_mut());
    // SAFETY: a valid name and out pointers.
    let s = unsafe { IoGetDeviceObjectPointer(&name, 0x8000_0000, &mut fo, &mut dev) };
    assert_eq!(Status(s), Status::SUCCESS);
    assert_eq!(dev as usize, CTL.with(|c| *c.borrow()));
    assert_eq!(take_log(), ["ctl irp 0", "ctl irp 18"], "the open's create and cleanup");
    assert_eq!(m.stop("CtlSvc"), StopResult::Pending);
    m.settle();
    assert!(!take_log().contains(&"ctl unload".to_owned()), "DriverUnload ran with a reference");
    // Asked again while pending: still pending, and still no DriverUnload.
    assert_eq!(m.stop("CtlSvc"), StopResult::Pending);
    m.settle();
    assert!(take_log().is_empty());
    // The last reference goes: the close reaches the device, then DriverUnload runs.
    // SAFETY: the reference IoGetDeviceObjectPointer returned.
    unsafe { ObfDereferenceObject(fo.cast()) };
    m.settle();
    assert_eq!(take_log(), ["ctl irp 2", "ctl unload"]);
    assert_eq!(m.stop("CtlSvc"), StopResult::NotRunning, "the driver is gone");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_device_deleted_with_a_file_object_open_on_it_keeps_a_pending_stop_until_the_close() {
    // WRK `IoDeleteDevice`: a device whose ReferenceCount is not zero is only marked
    // delete-pending; it stays on its driver's device list until the last reference goes
    // (`IopDecrementDeviceObjectRef` -> `IopCompleteUnloadOrDelete`, which unlinks it and then
    // checks the pending unload). So a stop-pending driver that deletes its control device while
    // a file object is open on it gets its DriverUnload only after that file object's close,
    // which still reaches the driver.
    let mut m = Machine::new(MachineConfig { seed: 1 });
    take_log();
    m.install(ServiceSpec::new("CtlSvc", ctl_entry, "legacy"));
    assert_eq!(m.start("CtlSvc"), Status::SUCCESS);
    let units: Vec<u16> = CTL_NAME.encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    let (mut fo, mut dev) = (null_mut(), null_mut());
    // SAFETY: a valid name and out pointers.
    let s = unsafe { IoGetDeviceObjectPointer(&name, 0x8000_0000, &mut fo, &mut dev) };
    assert_eq!(Status(s), Status::SUCCESS);
    take_log();
    assert_eq!(m.stop("CtlSvc"), StopResult::Pending);
    // The driver deletes its device while the file object is still open on it.
    // SAFETY: the driver's control device, attached to nothing.
    unsafe { IoDeleteDevice(dev) };
    CTL.with(|c| *c.borrow_mut() = 0);
    m.settle();
    assert!(!take_log().contains(&"ctl unload".to_owned()), "DriverUnload ran with a reference");
    // SAFETY: the reference IoGetDeviceObjectPointer returned.
    unsafe { ObfDereferenceObject(fo.cast()) };
    m.settle();
    let log = take_log();
    assert_eq!(log.first().map(String::as_str), Some("ctl irp 2"), "the close reaches the driver");
    assert!(log.contains(&"ctl unload".to_owned()), "{log:?}");
    assert_eq!(m.stop("CtlSvc"), StopResult::NotRunning, "the driver is gone");
    // The I/O manager's close of the delete-pending device is no call to a deleted device.
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

// "Low", a driver with one unnamed device and a DriverUnload, and "Lazy", a filter attached above
// it whose FastIoDetachDevice only notes the request: it detaches later, as a filter that hands
// the detach to a worker does.
thread_local! {
    static LOW: RefCell<usize> = const { RefCell::new(0) };
    static LAZY: RefCell<usize> = const { RefCell::new(0) };
}

unsafe extern "system" fn low_unload(_driver: *const DRIVER_OBJECT) {
    log("low unload");
}

unsafe extern "system" fn low_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object.
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(bottom_dispatch);
    }
    d.DriverUnload = Some(low_unload);
    let mut dev = null_mut();
    // SAFETY: valid arguments; an unnamed disk device.
    let s = unsafe { IoCreateDevice(driver, 0, std::ptr::null(), 7, 0, false, &mut dev) };
    LOW.with(|b| *b.borrow_mut() = dev as usize);
    s
}

unsafe extern "system" fn lazy_fast_detach(
    _source: *const DEVICE_OBJECT,
    _target: *const DEVICE_OBJECT,
) {
    log("lazy fast detach");
}

static LAZY_FAST_IO: windows_sys::Wdk::Foundation::FAST_IO_DISPATCH = {
    // SAFETY: all-zero is a valid FAST_IO_DISPATCH (no routines).
    let mut t: windows_sys::Wdk::Foundation::FAST_IO_DISPATCH = unsafe { std::mem::zeroed() };
    t.SizeOfFastIoDispatch = size_of::<windows_sys::Wdk::Foundation::FAST_IO_DISPATCH>() as u32;
    t.FastIoDetachDevice = Some(lazy_fast_detach);
    t
};

unsafe extern "system" fn lazy_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object.
    let d = unsafe { &mut *driver.cast_mut() };
    d.FastIoDispatch = (&raw const LAZY_FAST_IO).cast_mut();
    let mut dev = null_mut();
    // SAFETY: valid arguments.
    let s = unsafe { IoCreateDevice(driver, 0, std::ptr::null(), 7, 0, false, &mut dev) };
    assert_eq!(s, 0);
    let target = LOW.with(|b| *b.borrow()) as *mut DEVICE_OBJECT;
    let mut lower = null_mut();
    // SAFETY: two live devices.
    let s = unsafe { IoAttachDeviceToDeviceStackSafe(dev, target, &mut lower) };
    LAZY.with(|t| *t.borrow_mut() = dev as usize);
    s
}

#[test]
fn a_device_deleted_with_a_device_still_attached_above_keeps_a_pending_stop_until_the_detach() {
    // `IopCompleteUnloadOrDelete` (WRK, and the same in current ntoskrnl listings): for a
    // delete-pending device it calls the attached device's FastIoDetachDevice, then, if a device
    // is still attached above (or a reference is left), returns with the device still on its
    // driver's list; the pending unload then waits. The filter's later IoDetachDevice of the
    // deleted device completes the deletion and lets the unload go on.
    let mut m = Machine::new(MachineConfig { seed: 1 });
    take_log();
    m.install(ServiceSpec::new("Low", low_entry, "native"));
    m.install(ServiceSpec::new("Lazy", lazy_entry, "legacy"));
    assert_eq!(m.start("Low"), Status::SUCCESS);
    assert_eq!(m.start("Lazy"), Status::SUCCESS);
    assert_eq!(m.stop("Low"), StopResult::Pending, "Lazy is attached above");
    let low = LOW.with(|b| *b.borrow()) as *mut DEVICE_OBJECT;
    // Low deletes its device: Lazy is asked to detach and does not yet.
    // SAFETY: Low's device, attached to nothing.
    unsafe { IoDeleteDevice(low) };
    m.settle();
    assert_eq!(take_log(), ["lazy fast detach"], "no DriverUnload while Lazy is still attached");
    // Lazy detaches (from its worker, say), then deletes its own device.
    // SAFETY: the device Lazy is attached to, deleted but still held by the attachment.
    unsafe { IoDetachDevice(low) };
    m.settle();
    assert_eq!(take_log(), ["low unload"]);
    assert_eq!(m.stop("Low"), StopResult::NotRunning, "the driver is gone");
    let lazy = LAZY.with(|t| *t.borrow()) as *mut DEVICE_OBJECT;
    // SAFETY: Lazy's device, detached.
    unsafe { IoDeleteDevice(lazy) };
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

// "Slow": a DriverEntry that waits 100 ms before it returns; its DriverUnload logs.
unsafe extern "system" fn slow_unload(_driver: *const DRIVER_OBJECT) {
    log("slow unload");
}

unsafe extern "system" fn slow_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object.
    let d = unsafe { &mut *driver.cast_mut() };
    d.DriverUnload = Some(slow_unload);
    let interval: i64 = -100 * 10_000;
    // SAFETY: a relative interval.
    unsafe {
        windows_sys::Wdk::System::SystemServices::KeDelayExecutionThread(0, false, &interval)
    };
    log("slow entry returns");
    0
}

#[test]
fn a_stop_while_driver_entry_runs_is_refused() {
    // ControlService's page: a control cannot be sent to a service whose state is
    // SERVICE_START_PENDING (ERROR_SERVICE_CANNOT_ACCEPT_CTRL): DriverUnload never runs under
    // DriverEntry.
    let mut m = Machine::new(MachineConfig { seed: 1 });
    take_log();
    m.install(ServiceSpec::new("Slow", slow_entry, "legacy"));
    let stopped = std::rc::Rc::new(std::cell::Cell::new(None));
    let s = stopped.clone();
    m.schedule(10, move |m| s.set(Some(m.stop("Slow"))));
    assert_eq!(m.start("Slow"), Status::SUCCESS);
    m.settle();
    assert_eq!(stopped.get(), Some(StopResult::StartPending));
    assert_eq!(take_log(), ["slow entry returns"], "no DriverUnload under DriverEntry");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // Once started, the stop goes through.
    assert_eq!(m.stop("Slow"), StopResult::Unloaded);
    assert_eq!(take_log(), ["slow unload"]);
}

// "Tidy": DriverUnload deletes its device, keeping a reference on it, and hands its last cleanup
// to a work item queued on it (whose reference keeps the image until the routine returned); the
// routine frees the driver's pool block, its own item and the reference.
thread_local! {
    static TIDY: RefCell<(usize, usize)> = const { RefCell::new((0, 0)) };
}

const TIDY_TAG: u32 = u32::from_le_bytes(*b"Tidy");

unsafe extern "system" fn tidy_work(device: *mut DEVICE_OBJECT, item: *mut c_void) {
    let block = TIDY.with(|t| t.borrow().1);
    // SAFETY: the block DriverEntry allocated with this tag, freed once.
    unsafe {
        windows_sys::Wdk::System::SystemServices::ExFreePoolWithTag(block as *mut c_void, TIDY_TAG)
    };
    // SAFETY: the work item running this, freed once.
    unsafe { windows_sys::Wdk::System::SystemServices::IoFreeWorkItem(item as isize) };
    // SAFETY: the reference DriverUnload took (the item's own goes after this returns).
    unsafe { ObfDereferenceObject(device.cast()) };
    log("tidy work");
}

unsafe extern "system" fn tidy_unload(_driver: *const DRIVER_OBJECT) {
    let dev = TIDY.with(|t| t.borrow().0) as *mut DEVICE_OBJECT;
    // SAFETY: our live device.
    let item = unsafe { windows_sys::Wdk::System::SystemServices::IoAllocateWorkItem(dev) };
    assert_ne!(item, 0);
    // SAFETY: our live device, referenced for the work item queued below.
    unsafe { windows_sys::Wdk::System::SystemServices::ObfReferenceObject(dev.cast()) };
    // SAFETY: our device, attached to nothing; our reference keeps the object.
    unsafe { IoDeleteDevice(dev) };
    // SAFETY: the item just allocated, on the referenced device, with a routine that frees it.
    unsafe {
        windows_sys::Wdk::System::SystemServices::IoQueueWorkItem(
            item,
            fsfilter_kernel::ntos::work_item_routine_field(tidy_work),
            windows_sys::Wdk::System::SystemServices::DelayedWorkQueue,
            item as *const c_void,
        )
    };
    log("tidy unload");
}

unsafe extern "system" fn tidy_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object.
    let d = unsafe { &mut *driver.cast_mut() };
    d.DriverUnload = Some(tidy_unload);
    let mut dev = null_mut();
    // SAFETY: valid arguments.
    let s = unsafe { IoCreateDevice(driver, 0, std::ptr::null(), 7, 0, false, &mut dev) };
    assert_eq!(s, 0);
    // SAFETY: a nonpaged allocation (POOL_FLAG_NON_PAGED) of 64 bytes.
    let block =
        unsafe { windows_sys::Wdk::System::SystemServices::ExAllocatePool2(0x40, 64, TIDY_TAG) };
    assert!(!block.is_null());
    TIDY.with(|t| *t.borrow_mut() = (dev as usize, block as usize));
    0
}

#[test]
fn pool_a_work_item_frees_after_driver_unload_returned_is_no_leak() {
    // Driver Verifier's Pool Tracking checks "at the time that the driver is unloaded" that its
    // allocations were freed: when the image goes, which the work item's device reference delays
    // until its routine returned. A block that routine frees is no leak, as the item itself is
    // none (docs/simulator.md: I/O objects are counted when the image goes).
    let mut m = Machine::new(MachineConfig { seed: 1 });
    take_log();
    m.install(ServiceSpec::new("Tidy", tidy_entry, "legacy"));
    assert_eq!(m.start("Tidy"), Status::SUCCESS);
    let _ = m.stop("Tidy");
    m.settle();
    assert_eq!(take_log(), ["tidy unload", "tidy work"]);
    assert_eq!(m.stop("Tidy"), StopResult::NotRunning, "the driver is gone");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
