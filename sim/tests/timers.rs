//! Kernel timers and DPCs (`KeInitializeTimer`, `KeSetTimer`, `KeCancelTimer`,
//! `KeInitializeDpc`): a timer's DPC runs once, at DISPATCH_LEVEL, when its due time comes; a
//! cancelled or re-armed timer's earlier expiry does not run.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "test code drives kernel objects directly"
)]

use std::cell::RefCell;
use std::ffi::c_void;

use fsfilter::Status;
use fsfilter_sim::{Machine, MachineConfig, Rule, ServiceSpec, StopResult};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, KDPC, KEVENT};
use windows_sys::Wdk::System::SystemServices::{
    KTIMER, KeCancelTimer, KeInitializeDpc, KeInitializeEvent, KeInitializeTimer, KeSetEvent,
    KeSetTimer, KeWaitForSingleObject,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

thread_local! {
    static FIRED: RefCell<Vec<(usize, u64, u8)>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "system" fn dpc_routine(
    _dpc: *const KDPC,
    context: *const c_void,
    _a: *const c_void,
    _b: *const c_void,
) {
    let irql = fsfilter_kernel::irql::current().0;
    let now = fsfilter_sim::kernel::with(|k| k.sched.now);
    FIRED.with(|f| f.borrow_mut().push((context as usize, now, irql)));
}

#[test]
fn timers_fire_their_dpc_once_at_dispatch_level_unless_cancelled() {
    let mut m = Machine::new(MachineConfig { seed: 3 });
    // SAFETY: zeroed timers and DPCs are valid before initialization.
    let mut timers: Box<[KTIMER; 3]> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: as above.
    let mut dpcs: Box<[KDPC; 3]> = Box::new(unsafe { std::mem::zeroed() });
    let routine = fsfilter_kernel::ntos::deferred_routine_field(dpc_routine);
    for i in 0..3 {
        // SAFETY: our boxed objects, alive for the whole test.
        unsafe {
            KeInitializeDpc(&mut dpcs[i], routine, (i + 1) as *const c_void);
            KeInitializeTimer(&mut timers[i]);
        }
    }
    // SAFETY: as above. Due times are relative (negative), in 100 ns units.
    unsafe {
        assert!(!KeSetTimer(&mut timers[0], -50_000, &dpcs[0]), "not armed before");
        assert!(!KeSetTimer(&mut timers[1], -20_000, &dpcs[1]));
        assert!(!KeSetTimer(&mut timers[2], -10_000, &dpcs[2]));
        // Re-arming replaces the earlier expiry.
        assert!(KeSetTimer(&mut timers[2], -70_000, &dpcs[2]), "armed already");
        assert!(KeCancelTimer(&mut timers[1]));
        assert!(!KeCancelTimer(&mut timers[1]), "no longer armed");
    }
    m.settle();
    let fired = FIRED.with(|f| f.borrow().clone());
    assert_eq!(fired, [(1, 50_000, 2), (3, 70_000, 2)]);
}

/// A timer is a dispatcher object: `KeSetTimer` sets it not-signaled and its expiry signals it,
/// so a thread can wait on the timer itself (`KeWaitForSingleObject` documents timers among the
/// objects it waits on).
#[test]
fn a_thread_waiting_on_a_timer_wakes_when_it_expires() {
    let m = Machine::new(MachineConfig { seed: 5 });
    // SAFETY: a zeroed timer is valid before initialization.
    let mut timer: Box<KTIMER> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our boxed timer, alive for the whole test; no DPC.
    let status = unsafe {
        KeInitializeTimer(&mut *timer);
        assert!(!KeSetTimer(&mut *timer, -30_000, std::ptr::null()));
        KeWaitForSingleObject((&raw const *timer).cast(), 0, 0, false, std::ptr::null())
    };
    assert_eq!(Status(status), Status::SUCCESS, "{:?}", m.findings());
    assert_eq!(fsfilter_sim::kernel::with(|k| k.sched.now), 30_000, "woken at the due time");
    assert_eq!(m.findings(), []);
    // Re-arming sets it not-signaled again: a zero-timeout wait times out.
    let zero = 0i64;
    // SAFETY: as above.
    let status = unsafe {
        KeSetTimer(&mut *timer, -10_000, std::ptr::null());
        KeWaitForSingleObject((&raw const *timer).cast(), 0, 0, false, &zero)
    };
    assert_eq!(Status(status), Status::TIMEOUT);
}

/// `KeSetEvent` (its reference page): with `Wait` FALSE the caller runs at IRQL <=
/// DISPATCH_LEVEL; with `Wait` TRUE at IRQL <= APC_LEVEL. The verifier names the break.
#[test]
fn ke_set_event_irql_rules_are_checked() {
    let m = Machine::new(MachineConfig { seed: 5 });
    // SAFETY: a zeroed event is valid before initialization.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our boxed event.
    unsafe { KeInitializeEvent(&mut *event, 0, false) };
    let ev: *mut KEVENT = &mut *event;
    let set = |irql: u8, wait: bool| {
        fsfilter_sim::kernel::with(|k| k.set_irql(irql));
        // SAFETY: our initialized event.
        unsafe { KeSetEvent(ev, 0, wait) };
        fsfilter_sim::kernel::with(|k| k.set_irql(0));
    };
    set(2, false);
    set(1, true);
    assert_eq!(m.findings(), [], "within the rules");
    set(2, true);
    set(3, false);
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh, Rule::IrqlTooHigh], "{:?}", m.findings());
}

thread_local! {
    /// The timer and DPC the `Leaky` driver arms (leaked: they outlive its image, as its
    /// global would).
    static LEAKY: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

unsafe extern "system" fn leaky_unload(_driver: *const DRIVER_OBJECT) {}

unsafe extern "system" fn leaky_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: zeroed timer and DPC storage, leaked for the test.
    let timer: &mut KTIMER = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    // SAFETY: as above.
    let dpc: &mut KDPC = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let routine = fsfilter_kernel::ntos::deferred_routine_field(dpc_routine);
    // SAFETY: our driver object and leaked timer and DPC.
    unsafe {
        (*driver.cast_mut()).DriverUnload = Some(leaky_unload);
        KeInitializeDpc(dpc, routine, 9 as *const c_void);
        KeInitializeTimer(timer);
        KeSetTimer(timer, -100_000, dpc);
    }
    LEAKY.set((std::ptr::from_mut(timer) as usize, std::ptr::from_mut(dpc) as usize));
    0
}

/// A driver that unloads with a timer still armed: when the timer expires, its DPC is code of
/// the unloaded driver (Windows crashes there, or Driver Verifier stops at the unload). The
/// verifier names it and the routine does not run.
#[test]
fn a_timer_dpc_of_an_unloaded_driver_is_reported_not_run() {
    FIRED.with(|f| f.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 7 });
    m.install(ServiceSpec::new("Leaky", leaky_entry, "legacy"));
    assert_eq!(m.start("Leaky"), Status::SUCCESS);
    assert!(matches!(m.stop("Leaky"), StopResult::Unloaded));
    m.settle();
    assert_eq!(FIRED.with(|f| f.borrow().clone()), [], "the DPC did not run");
    let rules: Vec<(Rule, Option<String>)> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(Rule::UnloadedDriverCodeRan, Some("Leaky".to_owned()))]);
}

/// A NULL event or wait object: Windows dereferences it and bugchecks. The simulator names it
/// (a `BUGCHECK` finding) instead of crashing the host process.
#[test]
fn null_dispatcher_objects_are_a_bugcheck_finding() {
    let m = Machine::new(MachineConfig { seed: 5 });
    let null: *mut KEVENT = std::ptr::null_mut();
    // SAFETY: deliberately wrong: NULL objects; the simulator checks before any access.
    let status = unsafe {
        KeSetEvent(null, 0, false);
        KeWaitForSingleObject(null.cast_const().cast(), 0, 0, false, std::ptr::null())
    };
    assert_eq!(Status(status), Status::INVALID_PARAMETER);
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert_eq!(rules, [Rule::Bugcheck, Rule::Bugcheck], "{:?}", m.findings());
}

/// `KeResetEvent`, `KeClearEvent`, `KeCancelTimer`, `ObfReferenceObject`,
/// `ObfDereferenceObject`, `IoAllocateWorkItem` and `IoQueueWorkItem` (their reference pages):
/// callers run at IRQL <= DISPATCH_LEVEL. The verifier names each break, and only a break.
#[test]
fn minor_routines_irql_rules_are_checked() {
    let m = Machine::new(MachineConfig { seed: 5 });
    // SAFETY: zeroed event and timer storage is valid before initialization.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: as above.
    let mut timer: Box<KTIMER> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our boxed event and timer.
    unsafe { KeInitializeEvent(&mut *event, 0, false) };
    // SAFETY: as above.
    unsafe { KeInitializeTimer(&mut *timer) };
    let (ev, tm): (*mut KEVENT, *mut KTIMER) = (&mut *event, &mut *timer);
    let calls = |irql: u8| {
        fsfilter_sim::kernel::with(|k| k.set_irql(irql));
        // SAFETY: our initialized event and timer; a null object and a null device, which the
        // simulator refuses without touching them.
        unsafe {
            windows_sys::Wdk::System::SystemServices::KeResetEvent(ev);
            windows_sys::Wdk::System::SystemServices::KeClearEvent(ev);
            KeCancelTimer(tm);
            let item =
                windows_sys::Wdk::System::SystemServices::IoAllocateWorkItem(std::ptr::null());
            assert_eq!(item, 0);
            windows_sys::Wdk::System::SystemServices::ObfReferenceObject(std::ptr::null());
            windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(std::ptr::null());
            // No item and no routine: refused after the IRQL check.
            windows_sys::Wdk::System::SystemServices::IoQueueWorkItem(0, None, 0, std::ptr::null());
        }
        fsfilter_sim::kernel::with(|k| k.set_irql(0));
    };
    calls(2);
    assert_eq!(m.findings(), [], "at DISPATCH_LEVEL, within the rules");
    calls(3);
    let found: Vec<(Rule, String)> = m.findings().into_iter().map(|f| (f.0, f.2)).collect();
    let names: Vec<&str> = [
        "KeResetEvent",
        "KeClearEvent",
        "KeCancelTimer",
        "IoAllocateWorkItem",
        "ObfReferenceObject",
        "ObfDereferenceObject",
        "IoQueueWorkItem",
    ]
    .into_iter()
    .filter(|n| found.iter().any(|(r, text)| *r == Rule::IrqlTooHigh && text.starts_with(n)))
    .collect();
    assert_eq!(names.len(), 7, "{found:?}");
    assert_eq!(found.len(), 7, "{found:?}");
}
