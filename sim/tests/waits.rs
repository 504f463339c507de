//! Waits and the scheduler against their reference pages (Microsoft Learn: `KeWaitForSingleObject`,
//! `KeDelayExecutionThread`, `KeInitializeEvent`, `KeSetEvent`, `ObDereferenceObject`).

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "test code drives kernel objects directly"
)]

use std::ffi::c_void;

use fsfilter::Status;
use fsfilter_kernel::ntos::{KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock};
use fsfilter_sim::{
    CreateOptions, FsKind, Machine, MachineConfig, Rule, ServiceSpec, StopResult, VolumeSpec,
};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, KDPC, KEVENT, WORK_QUEUE_ITEM};
use windows_sys::Wdk::System::SystemServices::{
    ExAllocatePool2, ExFreePoolWithTag, ExQueueWorkItem, KTIMER, KeBugCheckEx,
    KeDelayExecutionThread, KeInitializeDpc, KeInitializeEvent, KeInitializeSpinLock,
    KeInitializeTimer, KeQuerySystemTimePrecise, KeResetEvent, KeSetEvent, KeSetTimer,
    KeStallExecutionProcessor, KeWaitForSingleObject, ObfDereferenceObject, ObfReferenceObject,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

fn now() -> u64 {
    fsfilter_sim::kernel::with(|k| k.sched.now)
}

fn system_time() -> i64 {
    let mut t = 0i64;
    // SAFETY: our out parameter.
    unsafe { KeQuerySystemTimePrecise(&mut t) };
    t
}

/// Queues `routine(parameter)` on a system worker thread (`ExQueueWorkItem`); the item is
/// leaked, as a driver's would live in its own memory.
fn queue(routine: unsafe extern "system" fn(*mut c_void), parameter: *mut c_void) {
    // SAFETY: the routine's real type is `VOID (*)(PVOID)`; the metadata dropped the parameter.
    let routine = unsafe {
        std::mem::transmute::<unsafe extern "system" fn(*mut c_void), unsafe extern "system" fn()>(
            routine,
        )
    };
    // SAFETY: plain data.
    let item: &mut WORK_QUEUE_ITEM = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    item.WorkerRoutine = Some(routine);
    item.Parameter = parameter;
    // SAFETY: our initialized item.
    unsafe { ExQueueWorkItem(item, 1) };
}

/// A positive timeout is an absolute system time (`KeWaitForSingleObject`: "a positive value
/// specifies an absolute time, relative to January 1, 1601"; `KeDelayExecutionThread`: "If the
/// Interval parameter value is positive, the expiration time is an absolute time"), the clock
/// `KeQuerySystemTimePrecise` reads, not time since boot.
#[test]
fn a_positive_timeout_is_an_absolute_system_time() {
    let m = Machine::new(MachineConfig { seed: 1 });
    // SAFETY: zeroed storage is a valid event before initialization.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our boxed event.
    unsafe { KeInitializeEvent(&mut *event, 0, false) };
    let start = now();
    let due = system_time() + 20_000;
    // SAFETY: our initialized event, never signalled; a timeout value.
    let s = unsafe { KeWaitForSingleObject((&raw const *event).cast(), 0, 0, false, &due) };
    assert_eq!(Status(s), Status::TIMEOUT);
    assert_eq!(now() - start, 20_000, "the wait ends at the absolute time asked for");
    let due = system_time() + 50_000;
    // SAFETY: a plain delay.
    let s = unsafe { KeDelayExecutionThread(0, false, &due) };
    assert_eq!(Status(s), Status::SUCCESS);
    assert_eq!(now() - start, 70_000, "the delay ends at the absolute time asked for");
    // An absolute time already past: no waiting.
    let past = system_time() - 10_000;
    // SAFETY: as above.
    let s = unsafe { KeWaitForSingleObject((&raw const *event).cast(), 0, 0, false, &past) };
    assert_eq!(Status(s), Status::TIMEOUT);
    assert_eq!(now() - start, 70_000);
    assert_eq!(m.findings(), []);
}
unsafe extern "system" fn set_twice(event: *mut c_void) {
    // SAFETY: the test's live event.
    unsafe {
        KeSetEvent(event.cast(), 0, false);
        KeSetEvent(event.cast(), 0, false);
    }
}

unsafe extern "system" fn set_then_reset(event: *mut c_void) {
    // SAFETY: the test's live event.
    unsafe {
        KeSetEvent(event.cast(), 0, false);
        KeResetEvent(event.cast());
    }
}

/// `KeInitializeEvent`: "When a synchronization event is set to the Signaled state, a single
/// thread of execution that was waiting on the event is released, and the event is
/// automatically reset". So a synchronization event set twice while one thread waits releases
/// that thread at the first set and stays signalled after the second: the thread's next wait
/// is satisfied at once. (The simulator let the event collect both sets and reset it when the
/// waiter resumed, losing the second.)
#[test]
fn a_synchronization_event_set_twice_for_one_waiter_stays_signalled() {
    let m = Machine::new(MachineConfig { seed: 2 });
    // SAFETY: zeroed storage is a valid event before initialization.
    let event: &mut KEVENT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    // SAFETY: our event; SynchronizationEvent.
    unsafe { KeInitializeEvent(event, 1, false) };
    let ev: *mut KEVENT = event;
    queue(set_twice, ev.cast());
    // SAFETY: our initialized event.
    let s = unsafe { KeWaitForSingleObject(ev.cast_const().cast(), 0, 0, false, std::ptr::null()) };
    assert_eq!(Status(s), Status::SUCCESS);
    let zero = 0i64;
    // SAFETY: as above.
    let s = unsafe { KeWaitForSingleObject(ev.cast_const().cast(), 0, 0, false, &zero) };
    assert_eq!(Status(s), Status::SUCCESS, "the second set left the event signalled");
    // SAFETY: as above.
    let s = unsafe { KeWaitForSingleObject(ev.cast_const().cast(), 0, 0, false, &zero) };
    assert_eq!(Status(s), Status::TIMEOUT, "and that wait reset it");
    assert_eq!(m.findings(), []);
}

/// `KeSetEvent` on a notification event satisfies the waits in progress on it at once
/// (`KeInitializeEvent`: "all threads ... that were waiting on the event are released"): a reset
/// right after the set does not take the release back, so the waiter returns
/// `STATUS_SUCCESS` rather than waiting for good.
#[test]
fn a_notification_event_set_then_reset_releases_its_waiter() {
    let m = Machine::new(MachineConfig { seed: 3 });
    // SAFETY: zeroed storage is a valid event before initialization.
    let event: &mut KEVENT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    // SAFETY: our event; NotificationEvent.
    unsafe { KeInitializeEvent(event, 0, false) };
    let ev: *mut KEVENT = event;
    queue(set_then_reset, ev.cast());
    // SAFETY: our initialized event.
    let s = unsafe { KeWaitForSingleObject(ev.cast_const().cast(), 0, 0, false, std::ptr::null()) };
    assert_eq!(Status(s), Status::SUCCESS, "{:?}", m.findings());
    assert_eq!(m.findings(), []);
}

unsafe extern "system" fn take_lock(lock: *mut c_void) {
    // SAFETY: the test's live spin lock.
    unsafe {
        let old = KeAcquireSpinLockRaiseToDpc(lock.cast());
        KeReleaseSpinLock(lock.cast(), old);
    }
}

/// `ObDereferenceObject` may be called at `DISPATCH_LEVEL`, a spin lock held. The simulator runs
/// the ready work before the export returns (so that an unload it set off is over, see
/// docs/simulator.md), but work that runs while the caller holds a spin lock is work Windows
/// would run on another processor, spinning until the lock is free: here it found the lock held
/// and the verifier reported a `DEADLOCK` that cannot happen.
#[test]
fn a_dereference_under_a_spin_lock_runs_no_other_work() {
    let mut m = Machine::new(MachineConfig { seed: 4 });
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let lock: &mut usize = Box::leak(Box::new(0));
    let lock: *mut usize = lock;
    // SAFETY: our lock storage.
    unsafe { KeInitializeSpinLock(lock) };
    let device = m.kernel(|k| k.objects.devices[0].ptr);
    // SAFETY: a live device object of the machine; our lock.
    unsafe {
        ObfReferenceObject(device.cast());
        queue(take_lock, lock.cast());
        let old = KeAcquireSpinLockRaiseToDpc(lock);
        ObfDereferenceObject(device.cast());
        KeReleaseSpinLock(lock, old);
    }
    assert_eq!(m.findings(), []);
    m.settle();
    assert_eq!(m.findings(), []);
}

unsafe extern "system" fn take_lock_and_set(context: *mut c_void) {
    // SAFETY: the test's pair of a live spin lock and a live event.
    unsafe {
        let (lock, event) = *context.cast::<(*mut usize, *mut KEVENT)>();
        let old = KeAcquireSpinLockRaiseToDpc(lock);
        KeReleaseSpinLock(lock, old);
        KeSetEvent(event, 0, false);
    }
}

/// A zero timeout tests the object and returns: the thread keeps its processor, so no other work
/// runs inside the wait. At `DISPATCH_LEVEL` under a spin lock, a work item that takes the lock
/// ran there and found it held: a `DEADLOCK` that cannot happen on Windows.
#[test]
fn a_zero_timeout_wait_under_a_spin_lock_runs_no_other_work() {
    let m = Machine::new(MachineConfig { seed: 14 });
    let lock: *mut usize = Box::leak(Box::new(0));
    // SAFETY: zeroed storage is a valid event before initialization.
    let event: *mut KEVENT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let pair: *mut (*mut usize, *mut KEVENT) = Box::leak(Box::new((lock, event)));
    let zero = 0i64;
    // SAFETY: our lock, event and pair, alive for good.
    unsafe {
        KeInitializeSpinLock(lock);
        KeInitializeEvent(event, 0, false);
        queue(take_lock_and_set, pair.cast());
        let old = KeAcquireSpinLockRaiseToDpc(lock);
        let s = KeWaitForSingleObject(event.cast_const().cast(), 0, 0, false, &zero);
        assert_eq!(Status(s), Status::TIMEOUT);
        KeReleaseSpinLock(lock, old);
    }
    assert_eq!(m.findings(), []);
    // An absolute timeout already past does not wait either.
    // SAFETY: our event.
    let s = unsafe { KeWaitForSingleObject(event.cast_const().cast(), 0, 0, false, &1i64) };
    assert_eq!(Status(s), Status::TIMEOUT);
    // A wait that may wait lets the work item run.
    // SAFETY: our event.
    let s = unsafe { KeWaitForSingleObject(event.cast_const().cast(), 0, 0, false, &-10_000) };
    assert_eq!(Status(s), Status::SUCCESS);
    assert_eq!(m.findings(), []);
}

/// Choice: a polling loop of zero-timeout waits that only other work can end (on Windows, work
/// on another processor) ends: after `POLLS_BEFORE_WORK` unsatisfied polls in a row with no work
/// run between them, such a wait lets ready work run.
#[test]
fn a_zero_timeout_polling_loop_ends_once_it_has_polled_long_enough() {
    let m = Machine::new(MachineConfig { seed: 15 });
    let lock: *mut usize = Box::leak(Box::new(0));
    // SAFETY: zeroed storage is a valid event before initialization.
    let event: *mut KEVENT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let pair: *mut (*mut usize, *mut KEVENT) = Box::leak(Box::new((lock, event)));
    let zero = 0i64;
    let mut polls = 0u32;
    // SAFETY: our lock, event and pair, alive for good.
    unsafe {
        KeInitializeSpinLock(lock);
        KeInitializeEvent(event, 0, false);
        queue(take_lock_and_set, pair.cast());
        fsfilter_sim::kernel::with(|k| k.set_irql(2));
        while KeWaitForSingleObject(event.cast_const().cast(), 0, 0, false, &zero)
            == Status::TIMEOUT.0
        {
            polls += 1;
            assert!(polls <= fsfilter_sim::sched::POLLS_BEFORE_WORK, "the loop does not end");
        }
        fsfilter_sim::kernel::with(|k| k.set_irql(0));
    }
    assert_eq!(polls, fsfilter_sim::sched::POLLS_BEFORE_WORK - 1);
    assert_eq!(m.findings(), []);
}

/// The last reference to a file object dropped at `DISPATCH_LEVEL` (`ObDereferenceObject`
/// allows it; a completion routine does it) cannot send `IRP_MJ_CLOSE` from there: closes reach
/// a file system at `APC_LEVEL` at most (facts.md §1.8). The object manager hands the deletion to
/// a worker thread (what `ObDereferenceObjectDeferDelete` documents), so the close comes at
/// `PASSIVE_LEVEL`, after the call.
#[test]
fn the_last_file_object_reference_dropped_at_dispatch_level_closes_from_a_worker() {
    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"x"));
    m.boot();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let fo = m.kernel(|k| k.user_handle(h).unwrap().fo);
    // SAFETY: the live file object behind our handle.
    unsafe { ObfReferenceObject(fo as *const c_void) };
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert!(m.kernel(|k| k.is_file_object(fo)), "our reference keeps it");
    fsfilter_sim::kernel::with(|k| k.set_irql(2));
    // SAFETY: our reference.
    unsafe { ObfDereferenceObject(fo as *const c_void) };
    fsfilter_sim::kernel::with(|k| k.set_irql(0));
    assert_eq!(m.findings(), [], "no close at DISPATCH_LEVEL");
    m.settle();
    assert!(!m.kernel(|k| k.is_file_object(fo)), "closed and freed by the worker");
    assert_eq!(m.findings(), []);
}

thread_local! {
    static LATE_RAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "system" fn late_routine(_parameter: *mut c_void) {
    LATE_RAN.set(true);
}

unsafe extern "system" fn late_unload(_driver: *const DRIVER_OBJECT) {
    // The mistake: a system work item whose routine is this driver's code, queued as it goes
    // (`IoQueueWorkItem` exists for this: its device reference keeps the driver loaded).
    queue(late_routine, std::ptr::null_mut());
}

unsafe extern "system" fn late_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object during DriverEntry.
    unsafe { (*driver.cast_mut()).DriverUnload = Some(late_unload) };
    0
}

/// An `ExQueueWorkItem` routine of a driver that unloaded before it ran is code of an unloaded
/// image (Windows crashes there; `IoQueueWorkItem`'s reference page gives this as the reason to
/// use it instead). The verifier names it, as for a timer's DPC; the routine does not run. (It
/// was skipped silently.)
#[test]
fn a_system_work_item_of_an_unloaded_driver_is_reported_not_run() {
    LATE_RAN.set(false);
    let mut m = Machine::new(MachineConfig { seed: 6 });
    m.install(ServiceSpec::new("Late", late_entry, "legacy"));
    assert_eq!(m.start("Late"), Status::SUCCESS);
    assert!(matches!(m.stop("Late"), StopResult::Unloaded));
    m.settle();
    assert!(!LATE_RAN.get(), "the routine did not run");
    let rules: Vec<(Rule, Option<String>)> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(Rule::UnloadedDriverCodeRan, Some("Late".to_owned()))]);
}

/// NULL where a spin lock or the clock's out parameter belongs: Windows dereferences it and
/// bugchecks. The simulator names it (a `BUGCHECK` finding) instead of crashing the host
/// process, as for NULL dispatcher objects; the IRQL still moves as the calls say.
#[test]
fn null_spin_locks_and_time_out_parameters_are_a_bugcheck_finding() {
    let m = Machine::new(MachineConfig { seed: 8 });
    // SAFETY: deliberately wrong: NULL pointers; the simulator checks before any access.
    unsafe {
        KeInitializeSpinLock(std::ptr::null_mut());
        let old = KeAcquireSpinLockRaiseToDpc(std::ptr::null_mut());
        assert_eq!((old, fsfilter_kernel::irql::current().0), (0, 2));
        KeReleaseSpinLock(std::ptr::null_mut(), old);
        assert_eq!(fsfilter_kernel::irql::current().0, 0);
        KeQuerySystemTimePrecise(std::ptr::null_mut());
    }
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert_eq!(rules, [Rule::Bugcheck; 4], "{:?}", m.findings());
}

/// Freeing pool that holds an armed timer (or the DPC an armed timer queues) is Windows' bug
/// check TIMER_OR_DPC_INVALID (0xC7, "a driver failing to cancel a timer or DPC before freeing
/// the memory where it resides"). The simulator names it and disarms the timer: its expiry used to write the timer's
/// signal state into the freed block, which the next allocation of that size got back.
#[test]
fn freeing_pool_that_holds_an_armed_timer_is_a_bugcheck_finding() {
    const TAG: u32 = u32::from_le_bytes(*b"Tmr ");
    let mut m = Machine::new(MachineConfig { seed: 9 });
    for with_dpc in [false, true] {
        // SAFETY: plain allocation calls.
        let block = unsafe { ExAllocatePool2(0x40, 4096, TAG) };
        assert!(!block.is_null());
        let timer: *mut KTIMER = block.cast();
        let dpc: *mut KDPC = block.cast::<u8>().wrapping_add(1024).cast();
        let routine = fsfilter_kernel::ntos::deferred_routine_field(set_dpc_ran);
        // SAFETY: our block, large enough for both objects; then freed, deliberately armed.
        unsafe {
            KeInitializeTimer(timer);
            if with_dpc {
                KeInitializeDpc(dpc, routine, std::ptr::null());
                // The timer is elsewhere; only its DPC object is in the block.
                KeSetTimer(Box::leak(Box::new(std::mem::zeroed())), -10_000, dpc);
            } else {
                KeSetTimer(timer, -10_000, std::ptr::null());
            }
            ExFreePoolWithTag(block, TAG);
        }
        // The same layout comes back zeroed from the host's allocator cache.
        // SAFETY: a plain allocation call.
        let again = unsafe { ExAllocatePool2(0x40, 4096, TAG) };
        DPC_RAN.set(false);
        m.settle();
        assert!(!DPC_RAN.get(), "no DPC ran from freed memory");
        // SAFETY: the live block, 4096 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(again.cast::<u8>(), 4096) };
        assert!(bytes.iter().all(|&b| b == 0), "nothing wrote into the freed memory");
        // SAFETY: our block.
        unsafe { ExFreePoolWithTag(again, TAG) };
    }
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert_eq!(rules, [Rule::Bugcheck, Rule::Bugcheck], "{:?}", m.findings());
}

/// Choice: `KeInitializeTimer` on an armed timer is a `BUGCHECK` finding. Windows rewrites the
/// header of a timer still linked in its timer table, so a later `KeSetTimer` links it twice (list
/// corruption); the simulator used to disarm it silently. Reinitializing a timer that expired or
/// was never armed is fine.
#[test]
fn initializing_an_armed_timer_is_a_bugcheck_finding() {
    let mut m = Machine::new(MachineConfig { seed: 16 });
    // SAFETY: zeroed timers and DPCs are valid before initialization.
    let timer: *mut KTIMER = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    // SAFETY: as above.
    let dpc: *mut KDPC = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let routine = fsfilter_kernel::ntos::deferred_routine_field(set_dpc_ran);
    // SAFETY: our timer and DPC, alive for good.
    unsafe {
        KeInitializeTimer(timer);
        KeInitializeDpc(dpc, routine, std::ptr::null());
        KeSetTimer(timer, -10_000, dpc);
    }
    m.settle();
    // SAFETY: our timer, expired.
    unsafe { KeInitializeTimer(timer) };
    assert_eq!(m.findings(), [], "an expired timer may be initialized again");
    // SAFETY: our timer and DPC; then initialized while armed, deliberately.
    unsafe {
        KeSetTimer(timer, -10_000, dpc);
        KeInitializeTimer(timer);
    }
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert_eq!(rules, [Rule::Bugcheck], "{:?}", m.findings());
    DPC_RAN.set(false);
    m.settle();
    assert!(!DPC_RAN.get(), "the simulator disarmed it");
}

thread_local! {
    static DPC_RAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "system" fn set_dpc_ran(
    _dpc: *const KDPC,
    _context: *const c_void,
    _a: *const c_void,
    _b: *const c_void,
) {
    DPC_RAN.set(true);
}

unsafe extern "system" fn nothing(_parameter: *mut c_void) {}

/// `ExQueueWorkItem`'s reference page: IRQL <= DISPATCH_LEVEL. Above, an `IRQL_TOO_HIGH`
/// finding; the item is still queued. (It was not checked.)
#[test]
fn ex_queue_work_item_above_dispatch_level_is_reported() {
    let mut m = Machine::new(MachineConfig { seed: 10 });
    fsfilter_sim::kernel::with(|k| k.set_irql(2));
    queue(nothing, std::ptr::null_mut());
    fsfilter_sim::kernel::with(|k| k.set_irql(0));
    assert_eq!(m.findings(), [], "within the rules at DISPATCH_LEVEL");
    fsfilter_sim::kernel::with(|k| k.set_irql(3));
    queue(nothing, std::ptr::null_mut());
    fsfilter_sim::kernel::with(|k| k.set_irql(0));
    m.settle();
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh], "{:?}", m.findings());
}

thread_local! {
    static HELD_DRIVER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static HELD_RAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "system" fn held_routine(_parameter: *mut c_void) {
    HELD_RAN.set(true);
}

unsafe extern "system" fn held_unload(_driver: *const DRIVER_OBJECT) {
    queue(held_routine, std::ptr::null_mut());
}

unsafe extern "system" fn held_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object during DriverEntry.
    unsafe {
        (*driver.cast_mut()).DriverUnload = Some(held_unload);
        ObfReferenceObject(driver.cast());
    }
    HELD_DRIVER.set(driver as usize);
    0
}

fn service_state(m: &Machine, name: &str) -> fsfilter_sim::loader::ServiceState {
    m.kernel(|k| k.loader.services[k.service_index(name).unwrap()].state)
}

/// docs/simulator.md (pending unload): after `DriverUnload` the I/O manager makes the driver
/// object temporary and dereferences it, and "the image goes with the driver object's last
/// reference". A reference the driver took on its own driver object (`ObReferenceObject`) is
/// such a reference: it keeps the image, so a system work item queued by the unload still finds
/// its code, and the image goes when that reference is dropped. (Driver-object references were
/// not counted: the image went at once.)
#[test]
fn a_reference_on_the_driver_object_keeps_the_image_after_driver_unload() {
    HELD_RAN.set(false);
    let mut m = Machine::new(MachineConfig { seed: 11 });
    m.install(ServiceSpec::new("Held", held_entry, "legacy"));
    assert_eq!(m.start("Held"), Status::SUCCESS);
    let _ = m.stop("Held");
    m.settle();
    assert!(HELD_RAN.get(), "the routine ran: the image was still there");
    assert_eq!(m.findings(), []);
    assert_ne!(service_state(&m, "Held"), fsfilter_sim::loader::ServiceState::Stopped);
    // SAFETY: the reference the driver took (dropped from outside its code).
    unsafe { ObfDereferenceObject(HELD_DRIVER.get() as *const c_void) };
    assert_eq!(service_state(&m, "Held"), fsfilter_sim::loader::ServiceState::Stopped);
    assert_eq!(m.findings(), []);
}

/// After a bugcheck the machine is stopped (`KeBugCheckEx` returns in the simulator, and every
/// later kernel call fails): a wait then ends at once, without a `DEADLOCK` finding of its own
/// on top of the `BUGCHECK` (it reported one).
#[test]
fn a_wait_after_a_bugcheck_is_no_deadlock() {
    let m = Machine::new(MachineConfig { seed: 12 });
    // SAFETY: zeroed storage is a valid event before initialization.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our boxed event; a bugcheck call.
    unsafe {
        KeInitializeEvent(&mut *event, 0, false);
        KeBugCheckEx(0xDEAD, 0, 0, 0, 0);
    }
    // SAFETY: our initialized event.
    let s =
        unsafe { KeWaitForSingleObject((&raw const *event).cast(), 0, 0, false, std::ptr::null()) };
    assert_ne!(Status(s), Status::SUCCESS);
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert_eq!(rules, [Rule::Bugcheck], "{:?}", m.findings());
}

thread_local! {
    static EXPIRED: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "system" fn note_expiry(
    _dpc: *const KDPC,
    context: *const c_void,
    _a: *const c_void,
    _b: *const c_void,
) {
    EXPIRED.with(|e| e.borrow_mut().push(context as usize));
}

/// Timers expire in the order of their due times, also when the clock went past several of them
/// at once (`KeStallExecutionProcessor` busy-waits without letting anything run): the earlier
/// timer's DPC runs first. (They became ready together, and the scheduler's seeded choice among
/// ready work ran them in any order.)
#[test]
fn timers_the_clock_passed_together_expire_in_due_order() {
    for seed in 0..24 {
        EXPIRED.with(|e| e.borrow_mut().clear());
        let mut m = Machine::new(MachineConfig { seed });
        // SAFETY: zeroed timers and DPCs are valid before initialization.
        let timers: &mut [KTIMER; 3] = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: as above.
        let dpcs: &mut [KDPC; 3] = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
        let routine = fsfilter_kernel::ntos::deferred_routine_field(note_expiry);
        for i in 0..3 {
            // SAFETY: our leaked objects; due in 10, 20 and 30 us (100 ns units, relative).
            unsafe {
                KeInitializeDpc(&mut dpcs[i], routine, (i + 1) as *const c_void);
                KeInitializeTimer(&mut timers[i]);
                KeSetTimer(&mut timers[i], -100 * (i as i64 + 1), &dpcs[i]);
            }
        }
        // SAFETY: a busy wait of 50 us: the clock passes all three due times.
        unsafe { KeStallExecutionProcessor(50) };
        m.settle();
        let order = EXPIRED.with(|e| e.borrow().clone());
        assert_eq!(order, [1, 2, 3], "seed {seed}");
    }
}

/// `KeWaitForSingleObject`'s reference page: callers run at IRQL <= DISPATCH_LEVEL, and at
/// <= APC_LEVEL unless the timeout is zero. A zero-timeout wait above DISPATCH_LEVEL is an
/// `IRQL_TOO_HIGH` finding too (it was let through).
#[test]
fn a_zero_timeout_wait_above_dispatch_level_is_reported() {
    let m = Machine::new(MachineConfig { seed: 13 });
    // SAFETY: zeroed storage is a valid event before initialization.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our boxed event.
    unsafe { KeInitializeEvent(&mut *event, 0, true) };
    let zero = 0i64;
    let wait = |irql: u8| {
        fsfilter_sim::kernel::with(|k| k.set_irql(irql));
        // SAFETY: our initialized event, signalled.
        let s = unsafe { KeWaitForSingleObject((&raw const *event).cast(), 0, 0, false, &zero) };
        fsfilter_sim::kernel::with(|k| k.set_irql(0));
        Status(s)
    };
    assert_eq!(wait(2), Status::SUCCESS);
    assert_eq!(m.findings(), [], "a zero timeout at DISPATCH_LEVEL is allowed");
    let _ = wait(3);
    let rules: Vec<Rule> = m.findings().into_iter().map(|f| f.0).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh], "{:?}", m.findings());
}
