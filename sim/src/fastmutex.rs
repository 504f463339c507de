//! Fast mutexes (docs/simulator.md, "Fast mutexes"): `ExAcquireFastMutex`,
//! `ExTryToAcquireFastMutex` and `ExReleaseFastMutex` over the driver's own `FAST_MUTEX`, whose
//! fields hold the state as on x64 Windows (WRK `base/ntos/inc/ex.h`): `Count` bit 0
//! (`FM_LOCK_BIT`) set while the mutex is free, the waiters counted above it in steps of
//! `FM_LOCK_WAITER_INC`; `Owner` the owning thread's `KTHREAD` (its `ETHREAD` address, the
//! `KTHREAD` being its head), NULL when free; `OldIrql` the IRQL the owner acquired it at;
//! `Contention` the acquisitions that had to wait. `ExInitializeFastMutex` is an inline of
//! wdm.h, so the driver writes the initial state itself (fsfilter-kernel's
//! `sync::initialize_fast_mutex`).
//!
//! A thread that finds the mutex owned by another waits as for an event: the scheduler runs other
//! ready work until the mutex is free. The simulator's threads nest on one host stack, so the
//! owner, below the waiter, can never release it meanwhile: the wait ends as a `DEADLOCK`
//! finding ("What the threads cannot do"), a true one when the owner waits for the waiter's
//! progress, a false one when it would only have gone on on Windows. The simulator then lends the
//! waiter the mutex (a *lent hold*, as it does for a recursive acquisition, which deadlocks on
//! Windows): the previous hold is kept aside and given back when the waiter releases, so the
//! mistake makes one finding and the run goes on.

use std::ffi::c_void;

use windows_sys::Wdk::Foundation::FAST_MUTEX;

use crate::events::Rule;
use crate::ids::ThreadId;
use crate::kernel::{self, APC_LEVEL, FastMap, Kernel, PASSIVE_LEVEL};
use crate::sched::WaitEnd;

/// `FM_LOCK_BIT`: set while the mutex is free.
pub const FM_LOCK_BIT: i32 = 0x1;
/// `FM_LOCK_WAITER_INC`: one waiter in `Count`.
pub const FM_LOCK_WAITER_INC: i32 = 0x4;

/// A hold kept aside while the simulator lends the mutex to a thread that would deadlock on
/// Windows: the owner and the IRQL it acquired the mutex at.
#[derive(Clone, Copy, Debug)]
struct Hold {
    owner: usize,
    old_irql: u32,
}

/// The fast mutexes' state beside their own fields: the holds kept aside by lent holds, by the
/// mutex's address, innermost last.
#[derive(Default)]
pub struct FastMutexes {
    aside: FastMap<usize, Vec<Hold>>,
}

/// Which routine asks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// `ExAcquireFastMutex`: waits.
    Wait,
    /// `ExTryToAcquireFastMutex`: never waits.
    Try,
}

impl Acquire {
    fn name(self) -> &'static str {
        match self {
            Acquire::Wait => "ExAcquireFastMutex",
            Acquire::Try => "ExTryToAcquireFastMutex",
        }
    }
}

/// The running thread's `KTHREAD` address, as `Owner` holds it.
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

/// The mutex's fields.
///
/// # Safety
/// `m` must point to a live `FAST_MUTEX` of the caller's, not otherwise borrowed meanwhile.
unsafe fn fields<'a>(m: *mut FAST_MUTEX) -> &'a mut FAST_MUTEX {
    // SAFETY: the caller's guarantee.
    unsafe { &mut *m }
}

/// A NULL mutex: Windows dereferences it; a `BUGCHECK` finding, and the call does nothing.
fn null(k: &mut Kernel, m: *mut FAST_MUTEX, what: &str) -> bool {
    if m.is_null() {
        k.report_current(Rule::Bugcheck, format!("{what} on a NULL fast mutex"));
        return true;
    }
    false
}

/// Gives the free mutex to the thread `me`, which called at `old`.
fn take(f: &mut FAST_MUTEX, me: usize, old: u8) {
    f.Count &= !FM_LOCK_BIT;
    f.Owner = me as *mut c_void;
    f.OldIrql = u32::from(old);
}

/// Lends the held mutex `m` to the thread `me`, which called at `old` and would deadlock on
/// Windows: the hold it has is kept aside until `me` releases it.
fn lend(k: &mut Kernel, m: *mut FAST_MUTEX, me: usize, old: u8) {
    // SAFETY: the caller's live mutex (the export's argument); the kernel's borrow is the only
    // one meanwhile.
    let f = unsafe { fields(m) };
    let hold = Hold { owner: f.Owner as usize, old_irql: f.OldIrql };
    k.fast_mutexes.aside.entry(m as usize).or_default().push(hold);
    f.Owner = me as *mut c_void;
    f.OldIrql = u32::from(old);
}

/// What the first step of an acquisition, which never waits, found.
enum Found {
    /// Done: whether the caller owns the mutex now.
    Done(bool),
    /// Owned by another thread, `owner`: the caller, which called at `old`, waits.
    Owned { owner: usize, old: u8 },
}

/// `ExAcquireFastMutex` (`Acquire::Wait`) and `ExTryToAcquireFastMutex` (`Acquire::Try`): the
/// answer is whether the caller owns the mutex now.
///
/// # Safety
/// `m` must be NULL or point to the caller's `FAST_MUTEX`, alive while it is used.
pub(crate) unsafe fn acquire(m: *mut FAST_MUTEX, how: Acquire) -> bool {
    let what = how.name();
    let found = kernel::with(|k| {
        if null(k, m, what) {
            return Found::Done(false);
        }
        let old = k.irql();
        // Their pages: callers run at IRQL <= APC_LEVEL, and the routine raises to APC_LEVEL.
        let high = !k.check_irql(APC_LEVEL, what);
        k.set_irql(old.max(APC_LEVEL));
        let me = current_thread(k);
        // SAFETY: the caller's live mutex; the kernel's borrow is the only one meanwhile.
        let f = unsafe { fields(m) };
        if f.Count & FM_LOCK_BIT != 0 {
            take(f, me, old);
            return Found::Done(true);
        }
        if how == Acquire::Try {
            // Owned, by this thread too: FALSE, at the caller's IRQL.
            k.set_irql(old);
            return Found::Done(false);
        }
        let owner = f.Owner as usize;
        if owner == me {
            k.report_current(
                Rule::Deadlock,
                "ExAcquireFastMutex of a fast mutex this thread owns already (a fast mutex \
                 cannot be acquired recursively: on Windows the thread waits for itself; the \
                 simulator lends it the mutex until its release)",
            );
            lend(k, m, me, old);
            return Found::Done(true);
        }
        if high {
            // No wait above APC_LEVEL, where Windows cannot wait: the IRQL finding is the
            // report, and the mutex is lent.
            lend(k, m, me, old);
            return Found::Done(true);
        }
        // KiAcquireFastMutex: one more contention, one more waiter.
        f.Contention = f.Contention.wrapping_add(1);
        f.Count = f.Count.wrapping_add(FM_LOCK_WAITER_INC);
        Found::Owned { owner, old }
    });
    let (owner, old) = match found {
        Found::Done(owned) => return owned,
        Found::Owned { owner, old } => (owner, old),
    };
    // SAFETY: the caller's live mutex, read between the tasks the wait runs.
    let free = || unsafe { (*m).Count } & FM_LOCK_BIT != 0;
    let end = crate::sched::wait_until(free, None);
    kernel::with(|k| {
        let me = current_thread(k);
        // SAFETY: as above.
        let f = unsafe { fields(m) };
        f.Count = f.Count.wrapping_sub(FM_LOCK_WAITER_INC);
        match end {
            WaitEnd::Satisfied => take(f, me, old),
            WaitEnd::Deadlock => {
                let holder = if owner == 0 {
                    "that is not free and has no owner (never initialized? \
                     ExInitializeFastMutex sets Count to FM_LOCK_BIT)"
                        .to_owned()
                } else {
                    format!(
                        "that {} owns (on Windows a deadlock when the owner waits for this \
                         thread's progress; the simulator's threads nest on one stack, so also \
                         when the owner would only have gone on)",
                        thread_name(owner)
                    )
                };
                k.report_current(
                    Rule::Deadlock,
                    format!(
                        "ExAcquireFastMutex waits for a fast mutex {holder}, and nothing can \
                         release it; the simulator lends it the mutex until its release"
                    ),
                );
                lend(k, m, me, old);
            }
            WaitEnd::TimedOut | WaitEnd::Crashed => lend(k, m, me, old),
        }
    });
    true
}

/// `ExReleaseFastMutex`.
///
/// # Safety
/// `m` must be NULL or point to the caller's `FAST_MUTEX`, alive while it is used.
pub(crate) unsafe fn release(m: *mut FAST_MUTEX) {
    kernel::with(|k| {
        let what = "ExReleaseFastMutex";
        if null(k, m, what) {
            return;
        }
        let me = current_thread(k);
        // SAFETY: the caller's live mutex; the kernel's borrow is the only one meanwhile.
        let f = unsafe { fields(m) };
        let owner = f.Owner as usize;
        if f.Count & FM_LOCK_BIT != 0 || owner != me {
            let whose = if f.Count & FM_LOCK_BIT != 0 {
                "a fast mutex that is free".to_owned()
            } else {
                format!("a fast mutex {} owns", thread_name(owner))
            };
            k.report_current(
                Rule::FastMutexMisuse,
                format!(
                    "{what} of {whose}, by a thread that does not own it (its page: release \
                     it from the thread that acquired it); nothing is released"
                ),
            );
            return;
        }
        // Its page: callers run at APC_LEVEL, where the acquisition left them.
        let irql = k.irql();
        if irql > APC_LEVEL {
            k.check_irql(APC_LEVEL, what);
        } else if irql < APC_LEVEL {
            k.report_current(
                Rule::FastMutexMisuse,
                format!(
                    "{what} at IRQL {irql}: its callers run at APC_LEVEL (the IRQL was lowered \
                     after the acquisition, or fast mutexes were released in another order than \
                     the reverse of their acquisition); the mutex is released"
                ),
            );
        }
        let restore = u8::try_from(f.OldIrql).unwrap_or(PASSIVE_LEVEL);
        let key = m as usize;
        let hold = k.fast_mutexes.aside.get_mut(&key).and_then(Vec::pop);
        if k.fast_mutexes.aside.get(&key).is_some_and(Vec::is_empty) {
            k.fast_mutexes.aside.remove(&key);
        }
        match hold {
            Some(hold) => {
                f.Owner = hold.owner as *mut c_void;
                f.OldIrql = hold.old_irql;
            }
            None => {
                f.Owner = std::ptr::null_mut();
                f.Count |= FM_LOCK_BIT;
            }
        }
        k.set_irql(restore);
    });
}
