//! Kernel mutexes (`KeInitializeMutex`, `KeWaitForSingleObject` on a mutex, `KeReleaseMutex`)
//! against their reference pages, Learn's "Mutex Objects" and WRK `base/ntos/ke/mutntobj.c`,
//! from a raw test driver: the code runs in its `DriverEntry`, its system work items and its
//! create dispatch routine, so findings name it.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "test code drives kernel objects directly"
)]

use std::cell::RefCell;
use std::ffi::c_void;

use fsfilter::Status;
use fsfilter_sim::kmutex::normal_kernel_apcs_disabled;
use fsfilter_sim::{Machine, MachineConfig, Rule, ServiceSpec};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP, KMUTANT, WORK_QUEUE_ITEM};
use windows_sys::Wdk::System::SystemServices::{
    ExQueueWorkItem, IoCreateDevice, IofCompleteRequest, KeDelayExecutionThread, KeInitializeMutex,
    KeReleaseMutex, KeWaitForSingleObject,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

const DRIVER: &str = "Km";
const DEVICE: &str = r"\Device\KmTest";

thread_local! {
    /// What the driver's `DriverEntry` runs.
    static BODY: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    /// What the driver's code saw, in order.
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The mutex the create dispatch routine acquires.
    static CREATE_MUTEX: RefCell<usize> = const { RefCell::new(0) };
}

fn log(what: impl Into<String>) {
    LOG.with(|l| l.borrow_mut().push(what.into()));
}

fn take_log() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

unsafe extern "system" fn entry(
    _driver: *const DRIVER_OBJECT,
    _: *const UNICODE_STRING,
) -> NTSTATUS {
    if let Some(body) = BODY.with(|b| b.borrow_mut().take()) {
        body();
    }
    0
}

/// A machine whose driver `Km` runs `body` in its `DriverEntry`; answers its findings, without
/// the driver's name (asserted to be `Km`), and the machine.
fn run_in_driver(seed: u64, body: impl FnOnce() + 'static) -> (Machine, Vec<(Rule, String)>) {
    take_log();
    BODY.with(|b| *b.borrow_mut() = Some(Box::new(body)));
    let mut m = Machine::new(MachineConfig { seed });
    m.install(ServiceSpec::new(DRIVER, entry, "legacy"));
    assert_eq!(m.start(DRIVER), Status::SUCCESS);
    m.settle();
    let findings = findings(&m);
    (m, findings)
}

fn findings(m: &Machine) -> Vec<(Rule, String)> {
    m.findings()
        .into_iter()
        .map(|(rule, driver, message)| {
            assert_eq!(driver.as_deref(), Some(DRIVER), "{message}");
            (rule, message)
        })
        .collect()
}

fn rules(findings: &[(Rule, String)]) -> Vec<Rule> {
    findings.iter().map(|f| f.0).collect()
}

fn irql() -> u8 {
    fsfilter_kernel::irql::current().0
}

/// The running thread's `KTHREAD`, as a mutex's `OwnerThread` holds it.
fn this_thread() -> usize {
    fsfilter_sim::process::ethread(fsfilter_sim::kernel::with(|k| k.thread))
}

/// A fresh mutex, leaked (a driver's would be in its non-paged memory), initialized.
fn new_mutex() -> *mut KMUTANT {
    // SAFETY: zeroed storage is a valid KMUTANT before initialization.
    let m: &mut KMUTANT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    // SAFETY: our storage, used by nobody yet.
    unsafe { KeInitializeMutex(m, 0) };
    m
}

/// The mutex's (type byte, SignalState, OwnerThread, ApcDisable).
fn state(m: *mut KMUTANT) -> (u8, i32, usize, u8) {
    // SAFETY: a leaked mutex, alive for the test; the type byte leads the header.
    unsafe {
        (*m.cast::<u8>(), (*m).Header.SignalState, (*m).OwnerThread as usize, (*m).ApcDisable)
    }
}

/// `KeWaitForSingleObject` on the mutex, `timeout` in 100 ns units (None: forever).
fn acquire(m: *mut KMUTANT, timeout: Option<i64>) -> Status {
    let t = timeout.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: our initialized mutex; Executive, KernelMode, not alertable.
    Status(unsafe { KeWaitForSingleObject(m.cast(), 0, 0, false, t) })
}

fn release(m: *mut KMUTANT) -> i32 {
    // SAFETY: our initialized mutex.
    unsafe { KeReleaseMutex(m, false) }
}

/// Queues `routine(parameter)` on a system worker thread; the item is leaked.
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

/// Waits `ms` milliseconds: the ready work runs meanwhile.
fn delay(ms: i64) {
    let interval = -ms * 10_000;
    // SAFETY: a relative interval.
    unsafe { KeDelayExecutionThread(0, false, &interval) };
}

/// `KeInitializeMutex`: "initialized with an initial state of signaled" (WRK: type
/// `MutantObject`, `SignalState` 1, no owner, `ApcDisable` 1). "Mutex Objects": "Acquiring
/// ownership of a mutex prevents the delivery of normal kernel-mode asynchronous procedure
/// calls" (the owner stays at `PASSIVE_LEVEL`, unlike a fast mutex's `APC_LEVEL`), and "A thread
/// can acquire ownership of a mutex object that it already owns (recursive ownership)";
/// `KeReleaseMutex`: "If the mutex is acquired recursively, the holding thread must call
/// KeReleaseMutex as many times as it acquired the mutex to set it to the signaled state", and
/// answers the previous state. No finding.
#[test]
fn a_kernel_mutex_is_acquired_recursively_by_its_owner_with_normal_kernel_apcs_disabled() {
    let (_m, findings) = run_in_driver(1, || {
        let a = new_mutex();
        assert_eq!(state(a), (2, 1, 0, 1));
        assert!(!normal_kernel_apcs_disabled());
        assert_eq!(acquire(a, None), Status::SUCCESS);
        assert_eq!(state(a), (2, 0, this_thread(), 1));
        assert_eq!(irql(), 0, "the owner stays at PASSIVE_LEVEL");
        assert!(normal_kernel_apcs_disabled());
        assert_eq!(acquire(a, Some(0)), Status::SUCCESS, "recursive, even with no wait");
        assert_eq!(state(a), (2, -1, this_thread(), 1));
        assert_eq!(release(a), -1);
        assert_eq!(state(a), (2, 0, this_thread(), 1), "still owned once");
        assert!(normal_kernel_apcs_disabled());
        assert_eq!(release(a), 0);
        assert_eq!(state(a), (2, 1, 0, 1));
        assert!(!normal_kernel_apcs_disabled());
        assert_eq!(irql(), 0);
        log("done");
    });
    assert_eq!(take_log(), ["done"]);
    assert_eq!(findings, []);
}

unsafe extern "system" fn release_it(m: *mut c_void) {
    log(format!("worker release answers {}", release(m.cast())));
}

/// `KeReleaseMutex`: "A mutex object can be released only by the thread that currently holds
/// the mutex. If an attempt is made to release a mutex that the thread does not hold ... the
/// routine raises a STATUS_ABANDONED or STATUS_MUTEX_NOT_OWNED exception" (WRK
/// `KeReleaseMutant`: `ExRaiseStatus(STATUS_MUTANT_NOT_OWNED)`). A release by a work item while
/// the owner waits, and one of a free mutex: `MUTANT_NOT_OWNED` each, nothing released; the
/// owner's release then works.
#[test]
fn a_release_by_a_thread_that_does_not_own_the_mutex_is_mutant_not_owned() {
    let (_m, findings) = run_in_driver(2, || {
        let a = new_mutex();
        assert_eq!(acquire(a, None), Status::SUCCESS);
        queue(release_it, a.cast());
        delay(1);
        assert_eq!(state(a), (2, 0, this_thread(), 1), "still ours");
        assert!(normal_kernel_apcs_disabled());
        assert_eq!(release(a), 0);
        assert_eq!(release(a), 1, "free: nothing to release");
        assert_eq!(state(a), (2, 1, 0, 1));
        assert!(!normal_kernel_apcs_disabled());
    });
    assert_eq!(take_log(), ["worker release answers 0"]);
    assert_eq!(rules(&findings), [Rule::MutantNotOwned; 2], "{findings:?}");
    assert_eq!(Rule::MutantNotOwned.to_string(), "MUTANT_NOT_OWNED");
    assert!(findings[0].1.contains("a kernel mutex thread "), "{findings:?}");
    assert!(findings[1].1.contains("a kernel mutex that is free"), "{findings:?}");
}

unsafe extern "system" fn keep_it(m: *mut c_void) {
    assert_eq!(acquire(m.cast(), None), Status::SUCCESS);
    log(format!("worker owns it, APCs disabled: {}", normal_kernel_apcs_disabled()));
}

/// Bug check 0x39 `SYSTEM_EXIT_OWNED_MUTEX`: "the worker routine returned without releasing the
/// mutex object that it owned". A work item that returns owning a mutex: that finding, once;
/// the mutex stays owned by the worker's thread (nothing releases it), so the driver's own wait
/// for it then ends as a `DEADLOCK` finding.
#[test]
fn a_worker_routine_that_returns_owning_a_mutex_is_system_exit_owned_mutex() {
    let (_m, findings) = run_in_driver(3, || {
        let a = new_mutex();
        queue(keep_it, a.cast());
        delay(1);
        let (_, signal, owner, _) = state(a);
        assert_eq!(signal, 0);
        assert_ne!(owner, 0);
        assert_ne!(owner, this_thread(), "the worker's thread");
        assert!(!normal_kernel_apcs_disabled());
        assert_eq!(acquire(a, None), Status::SUCCESS, "lent after the deadlock");
        assert_eq!(release(a), 0);
        assert_eq!(state(a), (2, 0, owner, 1), "the worker's hold again");
    });
    assert_eq!(take_log(), ["worker owns it, APCs disabled: true"]);
    assert_eq!(rules(&findings), [Rule::SystemExitOwnedMutex, Rule::Deadlock], "{findings:?}");
    assert_eq!(Rule::SystemExitOwnedMutex.to_string(), "SYSTEM_EXIT_OWNED_MUTEX");
}

unsafe extern "system" fn create_keeps_the_mutex(
    _device: *const DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    let m = CREATE_MUTEX.with(|c| *c.borrow()) as *mut KMUTANT;
    assert_eq!(acquire(m, None), Status::SUCCESS);
    // SAFETY: the create IRP this dispatch routine owns.
    unsafe {
        (*irp).IoStatus.Anonymous.Status = 0;
        IofCompleteRequest(irp, 0);
    }
    0
}

unsafe extern "system" fn entry_with_device(
    driver: *const DRIVER_OBJECT,
    _: *const UNICODE_STRING,
) -> NTSTATUS {
    let name: Vec<u16> = DEVICE.encode_utf16().collect();
    let bytes = u16::try_from(name.len() * 2).unwrap();
    let us =
        UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: name.as_ptr().cast_mut() };
    let mut device = std::ptr::null_mut();
    // SAFETY: our driver object, a named device of type FILE_DEVICE_UNKNOWN.
    let s = unsafe { IoCreateDevice(driver, 0, &us, 0x22, 0, false, &mut device) };
    assert_eq!(s, 0);
    // SAFETY: our driver object, written in its DriverEntry.
    unsafe { (*driver.cast_mut()).MajorFunction[0] = Some(create_keeps_the_mutex) };
    CREATE_MUTEX.with(|c| *c.borrow_mut() = new_mutex() as usize);
    0
}

/// Bug check 0x1 `APC_INDEX_MISMATCH`: the exit of a system call finds the thread's
/// `KernelApcDisable` mismatched (its page: parameter 4 "0 - System call"; "a mismatched
/// sequence of calls to disable and re-enable APCs"). A create dispatch routine that acquires a
/// mutex and completes the create, in the opening thread, returns to user mode with it: that
/// finding, against the driver, once: the simulator forgets the thread's holds (on Windows the
/// machine stopped), and the mutex, still owned by that thread, is acquired recursively by the
/// next open, which makes no new hold to report.
#[test]
fn a_system_service_that_returns_to_user_mode_owning_a_mutex_is_apc_index_mismatch() {
    let mut m = Machine::new(MachineConfig { seed: 4 });
    m.install(ServiceSpec::new(DRIVER, entry_with_device, "legacy"));
    assert_eq!(m.start(DRIVER), Status::SUCCESS);
    assert!(m.open_device(DEVICE, None).is_ok());
    assert!(!fsfilter_sim::kernel::with(|k| k.kernel_mutexes.apcs_disabled(k.processes.acting)));
    assert!(m.open_device(DEVICE, None).is_ok());
    let findings = findings(&m);
    assert_eq!(rules(&findings), [Rule::ApcIndexMismatch], "{findings:?}");
    assert_eq!(Rule::ApcIndexMismatch.to_string(), "APC_INDEX_MISMATCH");
    assert!(findings[0].1.contains("returns to user mode owning 1 kernel mutex"), "{findings:?}");
}

unsafe extern "system" fn other_work(_: *mut c_void) {
    log("other work");
}

unsafe extern "system" fn wait_for_it(m: *mut c_void) {
    let m = m.cast::<KMUTANT>();
    queue(other_work, std::ptr::null_mut());
    assert_eq!(acquire(m, Some(0)), Status::TIMEOUT, "owned: a zero timeout does not wait");
    log("worker asks");
    assert_eq!(acquire(m, None), Status::SUCCESS);
    assert_eq!(state(m).2, this_thread(), "lent to the worker");
    log(format!(
        "worker holds it at IRQL {}, APCs disabled: {}",
        irql(),
        normal_kernel_apcs_disabled()
    ));
    assert_eq!(release(m), 0);
    log(format!("worker released it, APCs disabled: {}", normal_kernel_apcs_disabled()));
}

/// A thread that asks for a mutex another owns waits as for an event (other ready work runs);
/// the simulator's threads nest on one stack, so the owner, below, never releases meanwhile: a
/// `DEADLOCK` finding naming the owner (docs/simulator.md, "What the threads cannot do"), and
/// the waiter is lent the mutex; its release gives the owner's hold back.
#[test]
fn a_thread_that_waits_for_a_mutex_another_owns_ends_as_a_deadlock_finding() {
    let (_m, findings) = run_in_driver(5, || {
        let a = new_mutex();
        assert_eq!(acquire(a, None), Status::SUCCESS);
        queue(wait_for_it, a.cast());
        delay(1);
        assert_eq!(state(a), (2, 0, this_thread(), 1), "ours again");
        assert!(normal_kernel_apcs_disabled());
        assert_eq!(release(a), 0);
        assert!(!normal_kernel_apcs_disabled());
        log("holder released it");
    });
    assert_eq!(
        take_log(),
        [
            "worker asks",
            "other work",
            "worker holds it at IRQL 0, APCs disabled: true",
            "worker released it, APCs disabled: false",
            "holder released it"
        ]
    );
    assert_eq!(rules(&findings), [Rule::Deadlock], "{findings:?}");
    assert!(findings[0].1.contains("kernel mutex that thread "), "{findings:?}");
}
