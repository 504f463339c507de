//! Fast mutexes (`ExAcquireFastMutex`, `ExTryToAcquireFastMutex`, `ExReleaseFastMutex`, and
//! fsfilter-kernel's `initialize_fast_mutex` for wdm.h's inline `ExInitializeFastMutex`) against
//! their reference pages and WRK `base/ntos/inc/ex.h`, from a raw test driver: the code runs in
//! its `DriverEntry` and in its system work items, so findings name it.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "test code drives kernel objects directly"
)]

use std::cell::RefCell;
use std::ffi::c_void;

use fsfilter::Status;
use fsfilter_kernel::ntos::{KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock};
use fsfilter_kernel::sync::initialize_fast_mutex;
use fsfilter_sim::{Machine, MachineConfig, Rule, ServiceSpec};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, FAST_MUTEX, WORK_QUEUE_ITEM};
use windows_sys::Wdk::System::SystemServices::{
    ExAcquireFastMutex, ExQueueWorkItem, ExReleaseFastMutex, ExTryToAcquireFastMutex,
    KeDelayExecutionThread,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

const DRIVER: &str = "Fm";

thread_local! {
    /// What the driver's `DriverEntry` runs.
    static BODY: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    /// What the driver's code saw, in order.
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
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

/// A machine whose driver `Fm` runs `body` in its `DriverEntry`; answers its findings, without
/// the message, and the log.
fn run_in_driver(seed: u64, body: impl FnOnce() + 'static) -> (Machine, Vec<(Rule, String)>) {
    take_log();
    BODY.with(|b| *b.borrow_mut() = Some(Box::new(body)));
    let mut m = Machine::new(MachineConfig { seed });
    m.install(ServiceSpec::new(DRIVER, entry, "legacy"));
    assert_eq!(m.start(DRIVER), Status::SUCCESS);
    m.settle();
    let findings = m
        .findings()
        .into_iter()
        .map(|(rule, driver, message)| {
            assert_eq!(driver.as_deref(), Some(DRIVER), "{message}");
            (rule, message)
        })
        .collect();
    (m, findings)
}

fn rules(findings: &[(Rule, String)]) -> Vec<Rule> {
    findings.iter().map(|f| f.0).collect()
}

fn irql() -> u8 {
    fsfilter_kernel::irql::current().0
}

/// The running thread's `KTHREAD`, as a fast mutex's `Owner` holds it.
fn this_thread() -> usize {
    fsfilter_sim::process::ethread(fsfilter_sim::kernel::with(|k| k.thread))
}

/// A fresh fast mutex, leaked (a driver's would be in its non-paged memory), initialized as
/// `ExInitializeFastMutex` does.
fn new_mutex() -> *mut FAST_MUTEX {
    // SAFETY: zeroed storage is a valid FAST_MUTEX before initialization.
    let m: &mut FAST_MUTEX = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    // SAFETY: our storage, used by nobody yet.
    unsafe { initialize_fast_mutex(m) };
    m
}

/// The mutex's (Count, Owner, Contention, OldIrql).
fn state(m: *mut FAST_MUTEX) -> (i32, usize, u32, u32) {
    // SAFETY: a leaked mutex, alive for the test.
    let f = unsafe { &*m };
    (f.Count, f.Owner as usize, f.Contention, f.OldIrql)
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

/// Waits `ms` milliseconds (`KeDelayExecutionThread`, allowed up to `APC_LEVEL`): the ready work
/// runs meanwhile.
fn delay(ms: i64) {
    let interval = -ms * 10_000;
    // SAFETY: a relative interval.
    unsafe { KeDelayExecutionThread(0, false, &interval) };
}

/// `ExAcquireFastMutex`: "sets the IRQL to APC_LEVEL ... saves the caller's previous IRQL in the
/// mutex"; `ExReleaseFastMutex` "sets the IRQL to the value that the caller was running at
/// before"; `ExTryToAcquireFastMutex` acquires a free mutex the same way and answers FALSE,
/// leaving the IRQL, when it is owned. The fields as WRK's x64 code keeps them: `Count` bit 0
/// (`FM_LOCK_BIT`) set while free, `Owner` the owning `KTHREAD`, `OldIrql`.
#[test]
fn a_fast_mutex_raises_to_apc_level_and_its_release_restores_the_irql_it_saved() {
    let (_m, findings) = run_in_driver(1, || {
        let (a, b) = (new_mutex(), new_mutex());
        // ExInitializeFastMutex: free, no owner, no contention; its gate a synchronization
        // event (type 1), not signalled.
        assert_eq!(state(a), (1, 0, 0, 0));
        // SAFETY: the mutex's gate, read only.
        let gate = unsafe { &(*a).Event };
        // SAFETY: the type byte leads the dispatcher header.
        assert_eq!(unsafe { *(&raw const *gate).cast::<u8>() }, 1);
        assert_eq!(gate.Header.SignalState, 0);
        assert_eq!(irql(), 0);
        // SAFETY: our initialized mutexes, acquired and released by this thread.
        unsafe {
            ExAcquireFastMutex(a);
            assert_eq!(irql(), 1);
            assert_eq!(state(a), (0, this_thread(), 0, 0));
            assert!(!ExTryToAcquireFastMutex(a), "owned, by this thread too");
            assert_eq!(irql(), 1);
            // A second mutex, acquired at APC_LEVEL, saves APC_LEVEL.
            ExAcquireFastMutex(b);
            assert_eq!(state(b), (0, this_thread(), 0, 1));
            ExReleaseFastMutex(b);
            assert_eq!(irql(), 1, "b restores the IRQL it was acquired at");
            assert_eq!(state(b), (1, 0, 0, 1));
            ExReleaseFastMutex(a);
            assert_eq!(irql(), 0);
            assert_eq!(state(a), (1, 0, 0, 0));
            assert!(ExTryToAcquireFastMutex(a), "free");
            assert_eq!(irql(), 1);
            assert_eq!(state(a), (0, this_thread(), 0, 0));
            ExReleaseFastMutex(a);
            assert_eq!(irql(), 0);
        }
        log("done");
    });
    assert_eq!(take_log(), ["done"]);
    assert_eq!(findings, []);
}

/// Their pages: callers of `ExAcquireFastMutex` and `ExTryToAcquireFastMutex` run at IRQL <=
/// `APC_LEVEL`, callers of `ExReleaseFastMutex` at `APC_LEVEL`. Above it (here under a spin
/// lock, at `DISPATCH_LEVEL`): `IRQL_TOO_HIGH`, each; the calls go on (a contended acquisition
/// there would not wait, see the recursive case), and the IRQL stays at `DISPATCH_LEVEL`.
#[test]
fn fast_mutex_routines_above_apc_level_are_reported() {
    let (_m, findings) = run_in_driver(2, || {
        let (a, b) = (new_mutex(), new_mutex());
        let lock: *mut usize = Box::leak(Box::new(0usize));
        // SAFETY: our lock and mutexes.
        unsafe {
            let old = KeAcquireSpinLockRaiseToDpc(lock);
            ExAcquireFastMutex(a);
            assert_eq!(irql(), 2);
            assert!(ExTryToAcquireFastMutex(b));
            ExReleaseFastMutex(b);
            ExReleaseFastMutex(a);
            assert_eq!(irql(), 2, "the IRQL the mutexes saved");
            KeReleaseSpinLock(lock, old);
            assert_eq!(irql(), 0);
            // The corrected pattern: the spin lock inside the mutex.
            ExAcquireFastMutex(a);
            let old = KeAcquireSpinLockRaiseToDpc(lock);
            KeReleaseSpinLock(lock, old);
            ExReleaseFastMutex(a);
        }
        assert_eq!(irql(), 0);
    });
    assert_eq!(rules(&findings), [Rule::IrqlTooHigh; 4], "{findings:?}");
    let names: Vec<&str> =
        findings.iter().map(|f| f.1.split(' ').next().unwrap()).collect::<Vec<_>>();
    assert_eq!(
        names,
        [
            "ExAcquireFastMutex",
            "ExTryToAcquireFastMutex",
            "ExReleaseFastMutex",
            "ExReleaseFastMutex"
        ]
    );
}

/// "Drivers cannot acquire a fast or guarded mutex recursively. If a driver tries to acquire a
/// fast or guarded mutex that it has already acquired, the driver will deadlock" (Alternatives
/// to Mutex Objects). A `DEADLOCK` finding; the simulator lends the thread the mutex, so its two
/// releases end the two holds (IRQL as each acquisition saved it) with no other finding.
#[test]
fn a_recursive_acquisition_is_a_deadlock_finding_and_each_release_ends_one_hold() {
    let (_m, findings) = run_in_driver(3, || {
        let a = new_mutex();
        // SAFETY: our mutex.
        unsafe {
            ExAcquireFastMutex(a);
            ExAcquireFastMutex(a);
            assert_eq!(state(a), (0, this_thread(), 0, 1), "the inner hold saved APC_LEVEL");
            ExReleaseFastMutex(a);
            assert_eq!(irql(), 1);
            assert_eq!(state(a), (0, this_thread(), 0, 0), "the outer hold again");
            ExReleaseFastMutex(a);
            assert_eq!(irql(), 0);
            assert_eq!(state(a), (1, 0, 0, 0));
        }
    });
    assert_eq!(rules(&findings), [Rule::Deadlock], "{findings:?}");
    assert!(findings[0].1.contains("recursively"), "{findings:?}");
}

unsafe extern "system" fn release_it(m: *mut c_void) {
    log(format!("worker releases at IRQL {}", irql()));
    // SAFETY: the test's leaked mutex.
    unsafe { ExReleaseFastMutex(m.cast()) };
    log(format!("worker goes on at IRQL {}", irql()));
}

/// `ExReleaseFastMutex`: "Drivers should release a fast mutex from the same thread that
/// acquired it". A release by another thread (a work item, while the owner waits), or of a free
/// mutex: `FAST_MUTEX_MISUSE`, and nothing is released (Windows' free build would release the
/// owner's mutex and set the IRQL the owner saved); the owner's own release then works.
#[test]
fn a_release_by_a_thread_that_does_not_own_the_mutex_is_reported_and_releases_nothing() {
    let (_m, findings) = run_in_driver(4, || {
        let a = new_mutex();
        // SAFETY: our mutex.
        unsafe {
            ExAcquireFastMutex(a);
            queue(release_it, a.cast());
            delay(1);
            assert_eq!(state(a), (0, this_thread(), 0, 0), "still ours");
            assert_eq!(irql(), 1);
            ExReleaseFastMutex(a);
            assert_eq!(irql(), 0);
            // A free mutex.
            ExReleaseFastMutex(a);
            assert_eq!(irql(), 0);
            assert_eq!(state(a), (1, 0, 0, 0));
        }
    });
    assert_eq!(take_log(), ["worker releases at IRQL 0", "worker goes on at IRQL 0"]);
    assert_eq!(rules(&findings), [Rule::FastMutexMisuse; 2], "{findings:?}");
    assert!(findings[0].1.contains("a fast mutex thread "), "{findings:?}");
    assert!(findings[1].1.contains("a fast mutex that is free"), "{findings:?}");
}

unsafe extern "system" fn out_of_order(_: *mut c_void) {
    let (a, b) = (new_mutex(), new_mutex());
    // SAFETY: our mutexes.
    unsafe {
        ExAcquireFastMutex(a);
        ExAcquireFastMutex(b);
        // a first: its saved PASSIVE_LEVEL comes back while b is held.
        ExReleaseFastMutex(a);
        log(format!("a released, IRQL {}", irql()));
        ExReleaseFastMutex(b);
        log(format!("b released, IRQL {}", irql()));
    }
}

/// `ExReleaseFastMutex`: its callers run at `APC_LEVEL`, and "Fast mutexes should be released
/// in the opposite order from the order they were acquired". Released out of order, the first
/// release restores the IRQL saved before both, and the second runs at `PASSIVE_LEVEL`:
/// `FAST_MUTEX_MISUSE` (it still releases, and sets the IRQL it saved, `APC_LEVEL`); so also a
/// release after the caller lowered the IRQL itself. The work item then returns at `APC_LEVEL`:
/// the existing `SPIN_LOCK_MISUSE` for work that returns at another IRQL than it was called at.
#[test]
fn a_release_below_apc_level_is_reported() {
    let (_m, findings) = run_in_driver(5, || {
        queue(out_of_order, std::ptr::null_mut());
        delay(1);
        let (a, lock) = (new_mutex(), Box::leak(Box::new(0usize)) as *mut usize);
        // SAFETY: our mutex and lock.
        unsafe {
            ExAcquireFastMutex(a);
            let _ = KeAcquireSpinLockRaiseToDpc(lock);
            // The mistake: lowered to PASSIVE_LEVEL with the mutex held.
            KeReleaseSpinLock(lock, 0);
            ExReleaseFastMutex(a);
        }
        log(format!("after the lowered release, IRQL {}", irql()));
    });
    assert_eq!(
        take_log(),
        ["a released, IRQL 0", "b released, IRQL 1", "after the lowered release, IRQL 0"]
    );
    assert_eq!(
        rules(&findings),
        [Rule::FastMutexMisuse, Rule::SpinLockMisuse, Rule::FastMutexMisuse],
        "{findings:?}"
    );
    assert!(findings[0].1.starts_with("ExReleaseFastMutex at IRQL 0"), "{findings:?}");
}

unsafe extern "system" fn other_work(_: *mut c_void) {
    log("other work");
}

unsafe extern "system" fn acquire_it(m: *mut c_void) {
    let m = m.cast::<FAST_MUTEX>();
    // Ready before the wait: it runs during it.
    queue(other_work, std::ptr::null_mut());
    log("worker asks");
    // SAFETY: the test's leaked mutex.
    unsafe { ExAcquireFastMutex(m) };
    assert_eq!(state(m).1, this_thread(), "lent to the worker");
    log(format!("worker holds it at IRQL {}", irql()));
    // SAFETY: as above.
    unsafe { ExReleaseFastMutex(m) };
    log(format!("worker released it, IRQL {}", irql()));
}

/// `ExAcquireFastMutex` "puts the caller into a wait state if the given fast mutex cannot be
/// acquired immediately". The holder waits (1 ms, allowed at `APC_LEVEL`); a work item asks for
/// the mutex meanwhile and waits as for an event: other ready work runs. The simulator's threads
/// nest on one stack, so the holder, below, never releases during that wait: a `DEADLOCK`
/// finding naming the owner (a false one here: on Windows the worker would get the mutex after
/// the millisecond; docs/simulator.md, "What the threads cannot do"). The worker is lent the
/// mutex, its release gives the hold back, and the holder's own release works.
#[test]
fn a_thread_that_asks_for_a_fast_mutex_another_holds_waits_and_ends_as_a_deadlock_finding() {
    let (_m, findings) = run_in_driver(6, || {
        let a = new_mutex();
        // SAFETY: our mutex.
        unsafe { ExAcquireFastMutex(a) };
        queue(acquire_it, a.cast());
        delay(1);
        assert_eq!(state(a), (0, this_thread(), 1, 0), "ours again; one contention");
        // SAFETY: as above.
        unsafe { ExReleaseFastMutex(a) };
        assert_eq!(state(a), (1, 0, 1, 0));
        assert_eq!(irql(), 0);
        log("holder released it");
    });
    assert_eq!(
        take_log(),
        [
            "worker asks",
            "other work",
            "worker holds it at IRQL 1",
            "worker released it, IRQL 0",
            "holder released it"
        ]
    );
    assert_eq!(rules(&findings), [Rule::Deadlock], "{findings:?}");
    assert!(findings[0].1.contains("that thread "), "{findings:?}");
}

/// A `FAST_MUTEX` never initialized (zeroed: `Count` 0, no owner) looks owned: the wait never
/// ends on Windows. A `DEADLOCK` finding that says so.
#[test]
fn acquiring_a_fast_mutex_never_initialized_is_a_deadlock_finding() {
    let (_m, findings) = run_in_driver(7, || {
        // SAFETY: zeroed storage, never initialized (the mistake).
        let a: *mut FAST_MUTEX = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: as above.
        unsafe {
            ExAcquireFastMutex(a);
            ExReleaseFastMutex(a);
        }
        assert_eq!(irql(), 0);
    });
    assert_eq!(rules(&findings), [Rule::Deadlock], "{findings:?}");
    assert!(findings[0].1.contains("never initialized"), "{findings:?}");
}

/// NULL where the fast mutex belongs: Windows dereferences it. A `BUGCHECK` finding for each
/// routine, and the call does nothing (the IRQL does not move).
#[test]
fn null_fast_mutexes_are_a_bugcheck_finding() {
    let (_m, findings) = run_in_driver(8, || {
        let null = std::ptr::null_mut();
        // SAFETY: NULL, the mistake under test.
        unsafe {
            ExAcquireFastMutex(null);
            assert!(!ExTryToAcquireFastMutex(null));
            ExReleaseFastMutex(null);
        }
        assert_eq!(irql(), 0);
    });
    assert_eq!(rules(&findings), [Rule::Bugcheck; 3], "{findings:?}");
}
