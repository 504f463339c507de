//! Determinism: a virtual clock, a seeded scheduler for work items, DPCs and asynchronous
//! completions, and waits that run the scheduler until their object is signalled. There are no OS
//! threads: a "thread" is an identity the running code sees, and waiting means letting other ready
//! work run.

use std::collections::VecDeque;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::KEVENT;
use windows_sys::Win32::Foundation::NTSTATUS;

use crate::events::Rule;
use crate::ids::{ImageId, ThreadId};
use crate::kernel::{self, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::mem::obj;

/// SplitMix64: small, fast, and the same on every host.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Work the scheduler runs: a work item, a DPC, an asynchronous completion.
pub struct Task {
    /// For traces.
    pub name: &'static str,
    /// The image whose code runs (None: kernel code).
    pub image: Option<ImageId>,
    /// `PASSIVE_LEVEL` for work items, `DISPATCH_LEVEL` for DPCs.
    pub irql: u8,
    /// The thread it runs in.
    pub thread: ThreadId,
    /// The work.
    pub run: Box<dyn FnOnce()>,
}

/// The scheduler's state.
pub struct Scheduler {
    /// Virtual time in 100 ns units since boot.
    pub now: u64,
    /// The seeded generator.
    pub rng: Rng,
    ready: VecDeque<Task>,
    timers: Vec<(u64, u64, Task)>,
    seq: u64,
    next_worker: u32,
    /// Tasks run so far.
    pub ran: u64,
    /// `IO_WORKITEM`s by address.
    pub work_items: crate::kernel::FastMap<usize, crate::exports::io::WorkItem>,
    /// Armed `KTIMER`s by address: the generation of their pending expiry, and the address of
    /// the `KDPC` it queues (0: none).
    pub armed_timers: crate::kernel::FastMap<usize, (u64, usize)>,
    /// The last timer generation handed out.
    pub timer_generation: u64,
    /// Zero-timeout (or already expired) waits found unsatisfied since work last ran: a wait
    /// that cannot wait runs no work, until so many in a row show a polling loop that waits for
    /// work only another processor would run ([`POLLS_BEFORE_WORK`]).
    pub polls: u32,
}

/// Unsatisfied zero-timeout waits in a row, with no work run between them, after which such a
/// wait lets ready work run, as another processor would, so that a polling loop ends.
pub const POLLS_BEFORE_WORK: u32 = 1000;

/// The first system worker thread's id; user threads are numbered from 1.
pub const FIRST_WORKER: u32 = 1000;

impl Scheduler {
    /// A scheduler seeded with `seed`.
    pub fn new(seed: u64) -> Scheduler {
        Scheduler {
            now: 0,
            rng: Rng::new(seed),
            ready: VecDeque::new(),
            timers: Vec::new(),
            seq: 0,
            next_worker: FIRST_WORKER,
            ran: 0,
            work_items: Default::default(),
            armed_timers: Default::default(),
            timer_generation: 0,
            polls: 0,
        }
    }

    /// Queues ready work.
    pub fn push(&mut self, task: Task) {
        self.ready.push_back(task);
    }

    /// Queues work to become ready at `due` (virtual time); answers its number, for
    /// [`Scheduler::cancel_at`].
    pub fn push_at(&mut self, due: u64, task: Task) -> u64 {
        self.seq += 1;
        self.timers.push((due, self.seq, task));
        self.seq
    }

    /// Takes back timed work `seq` [`Scheduler::push_at`] queued, if it has not run: it never
    /// runs, and the clock does not move to its time for it.
    pub fn cancel_at(&mut self, seq: u64) {
        self.timers.retain(|(_, s, _)| *s != seq);
    }

    /// A fresh system worker thread identity.
    pub fn worker(&mut self) -> ThreadId {
        self.next_worker += 1;
        ThreadId(self.next_worker)
    }

    /// True when any work is queued (ready or timed).
    pub fn has_work(&self) -> bool {
        !self.ready.is_empty() || !self.timers.is_empty()
    }

    /// Takes the next ready task: a seeded choice among the ready ones.
    fn pop_ready(&mut self) -> Option<Task> {
        match self.ready.len() {
            0 => None,
            1 => self.ready.pop_front(),
            n => {
                let i = self.rng.below(n);
                self.ready.remove(i)
            }
        }
    }

    /// The earliest timer's due time.
    fn next_due(&self) -> Option<u64> {
        self.timers.iter().map(|(d, _, _)| *d).min()
    }

    /// Advances the clock to `to` (it never goes back) and makes every timer due by `to` ready,
    /// in due order. By `to`, not by the clock: when the clock is past several due times already
    /// (`KeStallExecutionProcessor` moves it without running anything), the waits make one due
    /// time's timers ready at a time, the earliest first, so that a later timer never expires
    /// before an earlier one (until December 6 they became ready together, and the seeded
    /// choice among ready work ran them in any order). Timers due at the same time are still
    /// that seeded choice.
    fn advance(&mut self, to: u64) {
        self.now = self.now.max(to);
        let mut due: Vec<(u64, u64, Task)> = Vec::new();
        let mut i = 0;
        while i < self.timers.len() {
            if self.timers[i].0 <= to {
                due.push(self.timers.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(d, s, _)| (*d, *s));
        self.ready.extend(due.into_iter().map(|(_, _, t)| t));
    }
}

/// Runs one task with its IRQL, thread and image.
fn run_task(task: Task) {
    let saved = kernel::with(|k| {
        k.sched.ran += 1;
        k.sched.polls = 0;
        let saved = (k.irql(), k.thread);
        k.set_irql(task.irql);
        k.thread = task.thread;
        saved
    });
    kernel::call_into(task.image, task.run);
    kernel::with(|k| {
        returned_at(k, task.irql, task.image, task.name);
        k.set_irql(saved.0);
        k.thread = saved.1;
    });
}

/// Reports work (`name`, the code of `image`) that returned at another IRQL than `irql`, the one
/// it was called at, and puts that IRQL back; and work whose thread still owns kernel mutexes
/// (`crate::kmutex::returned`).
pub(crate) fn returned_at(k: &mut kernel::Kernel, irql: u8, image: Option<ImageId>, name: &str) {
    if k.irql() != irql {
        let driver = image.map(|i| k.image_name(i));
        k.report(Rule::SpinLockMisuse, driver, format!("{name} returned at a different IRQL"));
        k.set_irql(irql);
    }
    crate::kmutex::returned(k, crate::kmutex::Exit::Work, name);
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// The condition became true.
    Satisfied,
    /// The timeout passed first.
    TimedOut,
    /// Nothing could ever make it true.
    Deadlock,
    /// The machine crashed (a bugcheck): nothing runs any more, and that is no deadlock of
    /// its own (until December 6 it was reported as one).
    Crashed,
}

/// Runs ready work (and advances the clock to timers) until `done()` holds, `deadline` (virtual
/// time) passes, or nothing is left that could make it hold.
pub fn wait_until(mut done: impl FnMut() -> bool, deadline: Option<u64>) -> WaitEnd {
    loop {
        if done() {
            return WaitEnd::Satisfied;
        }
        let next = kernel::with(|k| {
            if k.crashed.is_some() {
                return Err(WaitEnd::Crashed);
            }
            if let Some(t) = k.sched.pop_ready() {
                return Ok(Some(t));
            }
            match (k.sched.next_due(), deadline) {
                (Some(due), Some(dl)) if dl < due => {
                    k.sched.advance(dl);
                    Err(WaitEnd::TimedOut)
                }
                (Some(due), _) => {
                    k.sched.advance(due);
                    Ok(None)
                }
                (None, Some(dl)) => {
                    k.sched.advance(dl);
                    Err(WaitEnd::TimedOut)
                }
                (None, None) => Err(WaitEnd::Deadlock),
            }
        });
        match next {
            Ok(Some(task)) => run_task(task),
            Ok(None) => {}
            Err(end) => return if done() { WaitEnd::Satisfied } else { end },
        }
    }
}

/// Runs every queued task, timers included, until none is left.
pub fn run_all() {
    let _ = wait_until(|| false, None);
}

/// Runs queued work that is ready now, without advancing the clock.
pub fn run_ready() {
    loop {
        let task = kernel::with(|k| k.sched.pop_ready());
        match task {
            Some(t) => run_task(t),
            None => return,
        }
    }
}

/// `DISPATCHER_HEADER.SignalState` of a dispatcher object.
///
/// # Safety
/// `object` must point to a live dispatcher object (`KEVENT`, `KTIMER`, ...).
unsafe fn signal_state<'a>(object: *mut KEVENT) -> &'a mut i32 {
    // SAFETY: the caller guarantees a live dispatcher object.
    unsafe { &mut obj(object).Header.SignalState }
}

/// The event's type byte (0 notification, 1 synchronization).
fn event_type(object: *mut KEVENT) -> u8 {
    // SAFETY: the type byte leads every dispatcher header.
    unsafe { *object.cast::<u8>() }
}

/// `KeInitializeEvent`.
///
/// # Safety
/// `event` must point to writable storage for a `KEVENT` that stays valid while it is used.
pub unsafe fn initialize_event(event: *mut KEVENT, kind: i32, state: bool) {
    // SAFETY: the caller's event storage.
    let header = unsafe { obj(event) };
    // SAFETY: writing the type byte of the header's leading union.
    unsafe { *event.cast::<u8>() = if kind == 0 { 0 } else { 1 } };
    header.Header.SignalState = i32::from(state);
    let list = std::ptr::addr_of_mut!(header.Header.WaitListHead);
    header.Header.WaitListHead.Flink = list;
    header.Header.WaitListHead.Blink = list;
}

std::thread_local! {
    /// The waits on dispatcher objects in progress, innermost last: the object's address, and
    /// whether a `KeSetEvent` released the wait. The simulator's threads nest on one host stack,
    /// so waits end in the reverse order they began.
    static WAITS: std::cell::RefCell<Vec<(usize, bool)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A wait's entry in [`WAITS`], removed (with any left above it) when the wait ends, also by
/// unwinding.
struct WaitSlot(usize);

impl WaitSlot {
    /// Enters a wait on the object at `address`.
    fn enter(address: usize) -> WaitSlot {
        WAITS.with(|w| {
            let mut w = w.borrow_mut();
            w.push((address, false));
            WaitSlot(w.len() - 1)
        })
    }

    /// Whether a `KeSetEvent` released the wait.
    fn released(&self) -> bool {
        WAITS.with(|w| w.borrow().get(self.0).is_some_and(|(_, r)| *r))
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let _ = WAITS.try_with(|w| w.borrow_mut().truncate(self.0));
    }
}

/// `KeSetEvent`: signals and returns the previous state. As on Windows the set releases the waits
/// in progress at once (`KeInitializeEvent`): every wait on a notification event, and one wait on
/// a synchronization event, which then stays not signalled (choice: the innermost wait, the one
/// that can go on first on the simulator's one stack; Windows does not promise an order). Until
/// December 6 the set only signalled the event, which the waiter saw once it resumed: a
/// synchronization event set twice for one waiter lost the second set, and a notification event
/// reset right after its set never released its waiter.
///
/// # Safety
/// `event` must point to a live, initialized event.
pub unsafe fn set_event(event: *mut KEVENT) -> i32 {
    let synchronization = event_type(event) == 1;
    let address = event as usize;
    let released = WAITS.with(|w| {
        let mut w = w.borrow_mut();
        let mut on = w.iter_mut().rev().filter(|(a, released)| *a == address && !*released);
        if synchronization {
            on.next().map(|(_, released)| *released = true).is_some()
        } else {
            on.for_each(|(_, released)| *released = true);
            false
        }
    });
    // SAFETY: a live event.
    let state = unsafe { signal_state(event) };
    let previous = *state;
    if !released {
        *state = 1;
    }
    previous
}

/// `KeResetEvent`.
///
/// # Safety
/// `event` must point to a live, initialized event.
pub unsafe fn reset_event(event: *mut KEVENT) -> i32 {
    // SAFETY: a live event.
    let state = unsafe { signal_state(event) };
    let previous = *state;
    *state = 0;
    previous
}

/// `KeReadStateEvent`.
///
/// # Safety
/// `event` must point to a live, initialized event.
pub unsafe fn read_event(event: *mut KEVENT) -> i32 {
    // SAFETY: a live event.
    *unsafe { signal_state(event) }
}

/// Converts a kernel timeout (100 ns units; negative relative, NULL infinite, otherwise an
/// absolute system time, counted from 1601 as `KeQuerySystemTimePrecise` reads it, virtual time 0
/// being [`crate::fs::media::EPOCH_2026`]) into a deadline in virtual time. Until December 6 an
/// absolute time was taken as virtual time since boot: system time + 1 s waited four centuries.
pub fn deadline(timeout: Option<i64>) -> Option<u64> {
    let now = kernel::with(|k| k.sched.now);
    timeout.map(|t| {
        if t < 0 {
            now.saturating_add(t.unsigned_abs())
        } else {
            u64::try_from(t.saturating_sub(crate::fs::media::EPOCH_2026)).unwrap_or(0)
        }
    })
}

/// `KeWaitForSingleObject` on an event: runs the scheduler until it is signalled.
///
/// # Safety
/// `event` must point to a live, initialized event that stays valid during the wait.
/// Whether `KeWaitForSingleObject` with `timeout` may wait at the running IRQL; a break is
/// reported, and the wait answers `STATUS_TIMEOUT`.
pub(crate) fn wait_allowed(timeout: Option<i64>) -> bool {
    kernel::with(|k| {
        let zero = timeout == Some(0);
        // The reference page: IRQL <= DISPATCH_LEVEL, and <= APC_LEVEL unless the timeout is
        // zero (until December 6 a zero-timeout wait above DISPATCH_LEVEL was let through).
        if k.irql() > DISPATCH_LEVEL {
            k.report_current(Rule::IrqlTooHigh, "KeWaitForSingleObject above DISPATCH_LEVEL");
            return false;
        }
        if k.irql() >= DISPATCH_LEVEL && !zero {
            k.report_current(
                Rule::IrqlTooHigh,
                "KeWaitForSingleObject with a non-zero timeout at DISPATCH_LEVEL",
            );
            return false;
        }
        true
    })
}

/// `KeWaitForSingleObject` on an event: runs the scheduler until it is signalled.
///
/// # Safety
/// `event` must point to a live, initialized event that stays valid during the wait.
pub unsafe fn wait_for_event(event: *mut KEVENT, timeout: Option<i64>) -> NTSTATUS {
    if !wait_allowed(timeout) {
        return Status::TIMEOUT.0;
    }
    // SAFETY: the waiter's event stays valid while it waits.
    let signalled = || unsafe { *signal_state(event) } != 0;
    let deadline = deadline(timeout);
    // A zero timeout, or an absolute one already past, tests the object and never waits: no
    // other work runs in it (on Windows the thread does not give up its processor; at
    // DISPATCH_LEVEL under a spin lock, running a work item or a DPC here would run it inside
    // the lock). Only a polling loop that would never end otherwise lets ready work run.
    let immediate = deadline.is_some_and(|d| d <= kernel::with(|k| k.sched.now));
    if immediate && !signalled() {
        let poll_only = kernel::with(|k| {
            k.sched.polls = k.sched.polls.saturating_add(1);
            k.sched.polls < POLLS_BEFORE_WORK
        });
        if poll_only {
            return Status::TIMEOUT.0;
        }
    }
    let slot = WaitSlot::enter(event as usize);
    let end = wait_until(|| slot.released() || signalled(), deadline);
    let by_set = slot.released();
    drop(slot);
    match end {
        WaitEnd::Satisfied => {
            // A set that released this wait left a synchronization event not signalled; one
            // found signalled is reset by the wait it satisfies.
            if event_type(event) == 1 && !by_set {
                // SAFETY: the caller's live event.
                unsafe { reset_event(event) };
            }
            Status::SUCCESS.0
        }
        WaitEnd::TimedOut | WaitEnd::Crashed => Status::TIMEOUT.0,
        WaitEnd::Deadlock => {
            kernel::with(|k| {
                k.report_current(
                    Rule::Deadlock,
                    "a wait that nothing can satisfy (the simulator returns STATUS_TIMEOUT)",
                )
            });
            Status::TIMEOUT.0
        }
    }
}

/// `KeDelayExecutionThread`: lets time pass, running whatever becomes ready meanwhile.
pub fn delay(interval: i64) -> NTSTATUS {
    let allowed =
        kernel::with(|k| k.check_irql(crate::kernel::APC_LEVEL, "KeDelayExecutionThread"));
    if allowed {
        let _ = wait_until(|| false, deadline(Some(interval)));
    }
    Status::SUCCESS.0
}

/// Queues `run` on a system worker thread at `PASSIVE_LEVEL`, as `image`'s code.
pub fn queue_work(name: &'static str, image: Option<ImageId>, run: Box<dyn FnOnce()>) {
    kernel::with(|k| {
        let thread = k.sched.worker();
        k.sched.push(Task { name, image, irql: PASSIVE_LEVEL, thread, run });
    });
}

/// Queues `run` on a system worker thread at `PASSIVE_LEVEL`, as `image`'s code, once `delay`
/// (100 ns units) has passed; answers the timed work's number ([`Scheduler::cancel_at`]).
pub fn queue_work_after(
    name: &'static str,
    image: Option<ImageId>,
    delay: u64,
    run: Box<dyn FnOnce()>,
) -> u64 {
    kernel::with(|k| {
        let due = k.sched.now + delay;
        let thread = k.sched.worker();
        k.sched.push_at(due, Task { name, image, irql: PASSIVE_LEVEL, thread, run })
    })
}

/// Queues `run` as a special kernel APC to `thread`: kernel code at `APC_LEVEL` in that thread.
pub(crate) fn queue_kernel_apc(name: &'static str, thread: ThreadId, run: Box<dyn FnOnce()>) {
    kernel::with(|k| {
        k.sched.push(Task { name, image: None, irql: crate::kernel::APC_LEVEL, thread, run });
    });
}

/// Queues `run` as a DPC (at `DISPATCH_LEVEL`, arbitrary thread) after `delay` (100 ns units).
pub fn queue_dpc(name: &'static str, image: Option<ImageId>, delay: u64, run: Box<dyn FnOnce()>) {
    kernel::with(|k| {
        let due = k.sched.now + delay;
        let thread = k.thread;
        k.sched.push_at(due, Task { name, image, irql: DISPATCH_LEVEL, thread, run });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_spreads() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut c = Rng::new(8);
        assert_ne!(xs[0], c.next_u64());
        let mut counts = [0u32; 4];
        let mut r = Rng::new(1);
        for _ in 0..4000 {
            counts[r.below(4)] += 1;
        }
        assert!(counts.iter().all(|&n| (800..1200).contains(&n)), "{counts:?}");
    }
}
