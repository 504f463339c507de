//! Waits and the scheduler against their reference pages (Microsoft Learn: `KeWaitForSingleObject`,
//! `KeDelayExecutionThread`, `KeInitializeEvent`, `KeSetEvent`, `ObDereferenceObject`).

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "test code drives kernel objects directly"
)]

use std::ffi::c_void;

use fsfilter::Status;
use fsfilter_sim::{Machine, MachineConfig, Rule};
use windows_sys::Wdk::Foundation::{KEVENT, WORK_QUEUE_ITEM};
use windows_sys::Wdk::System::SystemServices::{
    ExQueueWorkItem, KeDelayExecutionThread, KeInitializeEvent, KeQuerySystemTimePrecise,
    KeResetEvent, KeSetEvent, KeWaitForSingleObject,
};

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
