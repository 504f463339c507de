//! Kernel mutexes (docs/simulator.md, "Kernel mutexes"): `KeInitializeMutex`, acquisition by
//! `KeWaitForSingleObject`, `KeReleaseMutex`, over the driver's own `KMUTEX` (windows-sys's
//! `KMUTANT`: wdm.h's `KMUTEX` is the same structure), whose fields hold the state as WRK
//! `base/ntos/ke/mutntobj.c` and the wait's `KiWaitSatisfyMutant` keep it: the dispatcher
//! header's type `MutantObject` (2); `SignalState` 1 while free, one less for each acquisition
//! of its owner (0 owned once, -1 twice, ...); `OwnerThread` the owner's `KTHREAD` (its `ETHREAD`
//! address, as for fast mutexes), NULL when free; `ApcDisable` 1 (what distinguishes a mutex
//! from a mutant, `KeInitializeMutex`).
//!
//! Beside the fields the simulator keeps, for each thread, the count of its disabled normal
//! kernel APCs (the `KernelApcDisable` that a mutex's first acquisition decrements and its last
//! release increments back, the thread's `KeEnterCriticalRegion` state) and the mutexes it owns
//! (the thread's `MutantListHead`). Only mutexes change that count here (the simulator exports
//! no `KeEnterCriticalRegion`), and it models no APC delivery: the count is what the checks on a
//! thread's return read, and what tests ask ([`normal_kernel_apcs_disabled`]).
//!
//! A thread that finds the mutex owned by another waits as for an event; as for fast mutexes
//! (`crate::fastmutex`), the owner nests below the waiter on the one host stack and cannot
//! release it meanwhile, so the wait ends as a `DEADLOCK` finding and the simulator lends the
//! waiter the mutex (the previous hold kept aside, given back at the waiter's last release).

use windows_sys::Wdk::Foundation::KMUTANT;
use windows_sys::Win32::Foundation::NTSTATUS;

use fsfilter::Status;

use crate::events::Rule;
use crate::ids::ThreadId;
use crate::kernel::{self, FastMap, Kernel};
use crate::sched::WaitEnd;

/// `MutantObject`, the dispatcher header's type of a mutant (and mutex).
pub const MUTANT_OBJECT: u8 = 2;

/// A hold kept aside while the simulator lends the mutex to a thread that would deadlock on
/// Windows: the owner and the signal state.
#[derive(Clone, Copy, Debug)]
struct Hold {
    owner: usize,
    state: i32,
}

/// A mutex a thread owns: its address and the driver whose code acquired it first.
#[derive(Clone, Debug)]
struct Owned {
    mutex: usize,
    driver: Option<String>,
}

/// The kernel mutexes' state beside their own fields.
#[derive(Default)]
pub struct KernelMutexes {
    /// Each thread's count of disabled normal kernel APCs (a positive count: Windows keeps it
    /// negative in `KernelApcDisable`).
    apc_disable: FastMap<ThreadId, u32>,
    /// The mutexes each thread owns, in acquisition order.
    owned: FastMap<ThreadId, Vec<Owned>>,
    /// The holds kept aside by lent holds, by the mutex's address, innermost last.
    aside: FastMap<usize, Vec<Hold>>,
}

impl KernelMutexes {
    /// Whether `thread` has normal kernel APCs disabled.
    pub fn apcs_disabled(&self, thread: ThreadId) -> bool {
        self.apc_disable.get(&thread).is_some_and(|n| *n > 0)
    }

    /// The count of `thread`'s disabled normal kernel APCs.
    pub fn apc_disable_count(&self, thread: ThreadId) -> u32 {
        self.apc_disable.get(&thread).copied().unwrap_or(0)
    }
}

/// Whether the running thread has normal kernel APCs disabled (it owns a kernel mutex), for
/// tests: on Windows, `KeAreApcsDisabled` answers it (or a guarded region).
pub fn normal_kernel_apcs_disabled() -> bool {
    kernel::with(|k| k.kernel_mutexes.apcs_disabled(k.thread))
}

/// Whether `object` is a mutant (or mutex) by its dispatcher header's type.
///
/// # Safety
/// `object` must point to a live dispatcher object.
pub(crate) unsafe fn is_mutex(object: *const u8) -> bool {
    // SAFETY: the type byte leads every dispatcher header.
    unsafe { *object == MUTANT_OBJECT }
}

/// The mutex's fields.
///
/// # Safety
/// `m` must point to a live `KMUTANT` of the caller's, not otherwise borrowed meanwhile.
unsafe fn fields<'a>(m: *mut KMUTANT) -> &'a mut KMUTANT {
    // SAFETY: the caller's guarantee.
    unsafe { &mut *m }
}

/// The running thread's `KTHREAD` address, as `OwnerThread` holds it.
fn current_thread(k: &Kernel) -> usize {
    crate::process::ethread(k.thread)
}

/// How a finding names the thread whose `KTHREAD` is `owner`.
fn thread_name(owner: usize) -> String {
    match crate::process::from_ethread(owner) {
        Some(ThreadId(t)) => format!("thread {t}"),
        None if owner == 0 => "no thread".to_owned(),
        None => format!("a KTHREAD at 0x{owner:x} the simulator does not know"),
    }
}

/// `KeInitializeMutex`: signalled (free), no owner, not abandoned, `ApcDisable` 1. The level is
/// ignored (WRK; "Reserved. Drivers set this to zero").
///
/// # Safety
/// `m` must point to writable storage for a `KMUTANT` that stays valid while it is used.
pub(crate) unsafe fn initialize(m: *mut KMUTANT) {
    // SAFETY: the caller's storage.
    let f = unsafe { fields(m) };
    let header = m.cast::<u8>();
    // SAFETY: the header's leading byte, the type.
    unsafe { *header = MUTANT_OBJECT };
    // SAFETY: the header's third byte, within the structure.
    let size = unsafe { header.add(2) };
    // SAFETY: as above: the size in LONGs.
    unsafe { *size = u8::try_from(size_of::<KMUTANT>() / 4).unwrap_or(u8::MAX) };
    f.Header.SignalState = 1;
    let list = std::ptr::addr_of_mut!(f.Header.WaitListHead);
    f.Header.WaitListHead.Flink = list;
    f.Header.WaitListHead.Blink = list;
    f.OwnerThread = std::ptr::null_mut();
    f.Anonymous.MutantFlags = 0;
    f.ApcDisable = 1;
}

/// Gives the mutex `m` to the running thread once more (`KiWaitSatisfyMutant`): the first
/// acquisition makes it the owner and disables its normal kernel APCs.
fn satisfy(k: &mut Kernel, m: *mut KMUTANT) {
    // SAFETY: the caller's live mutex; the kernel's borrow is the only one meanwhile.
    let f = unsafe { fields(m) };
    f.Header.SignalState -= 1;
    if f.Header.SignalState == 0 {
        own(k, f, m);
    }
}

/// Makes the running thread the owner of `m` (whose fields are `f`).
fn own(k: &mut Kernel, f: &mut KMUTANT, m: *mut KMUTANT) {
    let me = k.thread;
    f.OwnerThread = current_thread(k) as *mut isize;
    let driver = k.current_image_name();
    let mx = &mut k.kernel_mutexes;
    *mx.apc_disable.entry(me).or_default() += u32::from(f.ApcDisable);
    mx.owned.entry(me).or_default().push(Owned { mutex: m as usize, driver });
}

/// Ends the running thread's ownership of `m` (whose fields are `f`): its normal kernel APCs
/// enabled again (`KeLeaveCriticalRegionThread` in `KeReleaseMutant`).
fn disown(k: &mut Kernel, f: &KMUTANT, m: *mut KMUTANT) {
    let me = k.thread;
    let mx = &mut k.kernel_mutexes;
    if let Some(n) = mx.apc_disable.get_mut(&me) {
        *n = n.saturating_sub(u32::from(f.ApcDisable));
    }
    if let Some(list) = mx.owned.get_mut(&me) {
        if let Some(i) = list.iter().rposition(|o| o.mutex == m as usize) {
            list.remove(i);
        }
        if list.is_empty() {
            mx.owned.remove(&me);
        }
    }
}

/// Lends the owned mutex `m` to the running thread, which would deadlock on Windows: the hold it
/// has is kept aside until the running thread's last release.
fn lend(k: &mut Kernel, m: *mut KMUTANT) {
    // SAFETY: the caller's live mutex; the kernel's borrow is the only one meanwhile.
    let f = unsafe { fields(m) };
    let hold = Hold { owner: f.OwnerThread as usize, state: f.Header.SignalState };
    k.kernel_mutexes.aside.entry(m as usize).or_default().push(hold);
    f.Header.SignalState = 0;
    own(k, f, m);
}

/// `KeWaitForSingleObject` on a mutex: a free one, or one the caller owns, is acquired at once
/// (recursively: "A thread can acquire ownership of a mutex object that it already owns",
/// Learn, "Mutex Objects"); one another thread owns is waited for as an event is.
///
/// # Safety
/// `m` must point to the caller's initialized mutex, alive during the wait.
pub(crate) unsafe fn wait(m: *mut KMUTANT, timeout: Option<i64>) -> NTSTATUS {
    if !crate::sched::wait_allowed(timeout) {
        return Status::TIMEOUT.0;
    }
    let owner = kernel::with(|k| {
        let me = current_thread(k);
        // SAFETY: the caller's live mutex.
        let f = unsafe { fields(m) };
        if f.Header.SignalState > 0 || f.OwnerThread as usize == me {
            satisfy(k, m);
            return None;
        }
        Some(f.OwnerThread as usize)
    });
    let Some(owner) = owner else { return Status::SUCCESS.0 };
    let deadline = crate::sched::deadline(timeout);
    if deadline.is_some_and(|d| d <= kernel::with(|k| k.sched.now)) {
        // A zero timeout (or a past absolute one) tests the mutex and never waits.
        return Status::TIMEOUT.0;
    }
    // SAFETY: the caller's live mutex, read between the tasks the wait runs.
    let free = || unsafe { (*m).Header.SignalState } > 0;
    let end = crate::sched::wait_until(free, deadline);
    kernel::with(|k| match end {
        WaitEnd::Satisfied => {
            satisfy(k, m);
            Status::SUCCESS.0
        }
        WaitEnd::TimedOut | WaitEnd::Crashed => Status::TIMEOUT.0,
        WaitEnd::Deadlock => {
            k.report_current(
                Rule::Deadlock,
                format!(
                    "KeWaitForSingleObject waits for a kernel mutex that {} owns, and nothing \
                     can release it (on Windows a deadlock when the owner waits for this \
                     thread's progress; the simulator's threads nest on one stack, so also when \
                     the owner would only have gone on); the simulator lends it the mutex until \
                     its release",
                    thread_name(owner)
                ),
            );
            lend(k, m);
            Status::SUCCESS.0
        }
    })
}

/// `KeReleaseMutex`: one acquisition fewer; at the last, the mutex is free and the thread's
/// normal kernel APCs are enabled again. A release by a thread that does not own it raises
/// `STATUS_MUTANT_NOT_OWNED` on Windows (WRK `KeReleaseMutant`; its Learn page: "the routine
/// raises a STATUS_ABANDONED or STATUS_MUTEX_NOT_OWNED exception"), which a driver without an
/// exception handler does not survive: a `MUTANT_NOT_OWNED` finding, and nothing is released.
/// Answers the previous signal state.
///
/// # Safety
/// `m` must be NULL or point to the caller's initialized mutex.
pub(crate) unsafe fn release(m: *mut KMUTANT) -> i32 {
    kernel::with(|k| {
        let me = current_thread(k);
        // SAFETY: the caller's live mutex; the kernel's borrow is the only one meanwhile.
        let f = unsafe { fields(m) };
        let old = f.Header.SignalState;
        let owner = f.OwnerThread as usize;
        if owner != me {
            let whose = if owner == 0 {
                "a kernel mutex that is free".to_owned()
            } else {
                format!("a kernel mutex {} owns", thread_name(owner))
            };
            k.report_current(
                Rule::MutantNotOwned,
                format!(
                    "KeReleaseMutex of {whose}, by a thread that does not own it: Windows raises \
                     STATUS_MUTANT_NOT_OWNED (KeReleaseMutex's page: only the thread that holds \
                     the mutex can release it); nothing is released"
                ),
            );
            return old;
        }
        f.Header.SignalState += 1;
        if f.Header.SignalState == 1 {
            disown(k, f, m);
            let key = m as usize;
            let hold = k.kernel_mutexes.aside.get_mut(&key).and_then(Vec::pop);
            if k.kernel_mutexes.aside.get(&key).is_some_and(Vec::is_empty) {
                k.kernel_mutexes.aside.remove(&key);
            }
            match hold {
                Some(hold) => {
                    f.OwnerThread = hold.owner as *mut isize;
                    f.Header.SignalState = hold.state;
                }
                None => f.OwnerThread = std::ptr::null_mut(),
            }
        }
        old
    })
}

/// Where a thread returns to the simulator from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// A system service, to the user-mode caller.
    SystemService,
    /// A worker routine (or other queued work), to the worker thread's loop.
    Work,
}

/// Checks the running thread as it returns to the simulator (`what` names the routine): a
/// thread that still owns kernel mutexes is a bug check on Windows. To user mode,
/// `APC_INDEX_MISMATCH` (0x1): the check on exit from a system call finds normal kernel APCs
/// still disabled (its Learn page, parameter 4 "0 - System call"; the mismatched
/// `KernelApcDisable`). From a worker routine, `SYSTEM_EXIT_OWNED_MUTEX` (0x39): "the worker
/// routine returned without releasing the mutex object that it owned". The simulator reports
/// it against the driver that acquired the mutex and forgets the thread's holds, so the run
/// goes on: the mutexes stay owned by that thread, as on Windows nothing releases them.
pub(crate) fn returned(k: &mut Kernel, exit: Exit, what: &str) {
    let me = k.thread;
    let Some(owned) = k.kernel_mutexes.owned.remove(&me) else { return };
    let count = k.kernel_mutexes.apc_disable.remove(&me).unwrap_or(0);
    let driver = owned.iter().find_map(|o| o.driver.clone());
    let n = owned.len();
    let (rule, message) = match exit {
        Exit::SystemService => (
            Rule::ApcIndexMismatch,
            format!(
                "{what}: the thread returns to user mode owning {n} kernel mutex(es), its normal \
                 kernel APCs still disabled ({count} disable(s) not undone): the system-call \
                 exit bug-checks APC_INDEX_MISMATCH; the simulator forgets the holds"
            ),
        ),
        Exit::Work => (
            Rule::SystemExitOwnedMutex,
            format!(
                "{what} returned owning {n} kernel mutex(es) (nothing releases them; its normal \
                 kernel APCs were still disabled, {count} disable(s)); the simulator forgets \
                 the holds"
            ),
        ),
    };
    k.report(rule, driver, message);
}
