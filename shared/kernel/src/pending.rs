//! The table of operations a driver holds pended, shared by both backends: a token's handle is
//! only acted on when the table knows it, so a stale or forged handle does nothing.
//!
//! # Invariants
//! All-zero bytes are an empty table (handle 0 marks a free slot, and no decision is set), so the
//! table can live in zeroed pool memory without being built on the stack first.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::SpinLock;

/// How many operations one driver can hold pended at once; a pend beyond that is refused.
pub const MAX_PENDED: usize = 64;

/// A decision about a pended operation: a backend status code and an encoded context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Decision {
    /// The backend's `FLT_PREOP_*` code.
    pub code: i32,
    /// The encoded completion context.
    pub context: usize,
}

/// A pended operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PendedEntry {
    /// The backend's handle (the IRP or callback data address); 0 for a free slot.
    pub handle: usize,
    /// The pre callback has returned (so the operation is really pended).
    pub returned: bool,
    has_early: bool,
    early: Decision,
    has_deferred: bool,
    deferred: Decision,
    delay_ms: u32,
    /// Backend data (the legacy backend keeps the device here).
    pub extra: usize,
}

impl PendedEntry {
    /// Still inside the pre callback.
    pub const fn in_pre(&self) -> bool {
        !self.returned
    }

    /// A decision made while still in the pre callback.
    pub const fn early(&self) -> Option<Decision> {
        if self.has_early { Some(self.early) } else { None }
    }

    /// Records a decision made while still in the pre callback.
    pub fn set_early(&mut self, d: Decision) {
        self.has_early = true;
        self.early = d;
    }

    /// A deferred decision and its delay in milliseconds.
    pub const fn deferred(&self) -> Option<(Decision, u32)> {
        if self.has_deferred { Some((self.deferred, self.delay_ms)) } else { None }
    }

    /// Records a deferred decision.
    pub fn set_deferred(&mut self, d: Decision, delay_ms: u32) {
        self.has_deferred = true;
        self.deferred = d;
        self.delay_ms = delay_ms;
    }
}

/// The table.
pub struct PendedTable {
    entries: SpinLock<[PendedEntry; MAX_PENDED]>,
    /// How many entries are in use, changed under the lock. Every operation looks its handle up
    /// (a pend token taken and not used must be dropped), so a table with nothing pended answers
    /// without taking the lock or scanning: most operations of most filters pend nothing.
    live: AtomicUsize,
}

impl PendedTable {
    /// An empty table.
    pub const fn new() -> PendedTable {
        const FREE: PendedEntry = PendedEntry {
            handle: 0,
            returned: false,
            has_early: false,
            early: Decision { code: 0, context: 0 },
            has_deferred: false,
            deferred: Decision { code: 0, context: 0 },
            delay_ms: 0,
            extra: 0,
        };
        PendedTable { entries: SpinLock::new([FREE; MAX_PENDED]), live: AtomicUsize::new(0) }
    }

    /// Records `handle` as pended (still in its pre callback). False when full, present, or 0.
    pub fn add(&self, handle: usize, extra: usize) -> bool {
        if handle == 0 {
            return false;
        }
        let mut t = self.entries.lock();
        if t.iter().any(|e| e.handle == handle) {
            return false;
        }
        match t.iter_mut().find(|e| e.handle == 0) {
            Some(slot) => {
                *slot = PendedEntry { handle, extra, ..PendedEntry::default() };
                self.live.fetch_add(1, Ordering::AcqRel);
                true
            }
            None => false,
        }
    }

    /// True when no entry can hold `handle` (0, or nothing pended): no lock, no scan. A handle
    /// this thread added is seen (its own write); other threads' entries are other handles.
    fn surely_absent(&self, handle: usize) -> bool {
        handle == 0 || self.live.load(Ordering::Acquire) == 0
    }

    /// Counts an entry freed under the lock.
    fn freed(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// A copy of the entry of `handle`.
    pub fn get(&self, handle: usize) -> Option<PendedEntry> {
        if self.surely_absent(handle) {
            return None;
        }
        self.entries.lock().iter().find(|e| e.handle == handle).copied()
    }

    /// Applies `f` to the entry of `handle`; `None` when the table does not hold it.
    pub fn update<R>(&self, handle: usize, f: impl FnOnce(&mut PendedEntry) -> R) -> Option<R> {
        if self.surely_absent(handle) {
            return None;
        }
        let mut t = self.entries.lock();
        let e = t.iter_mut().find(|e| e.handle == handle)?;
        let r = f(e);
        if e.handle == 0 {
            self.freed();
        }
        Some(r)
    }

    /// Removes and returns the entry of `handle`. Inlined down to the lock-free check, which is
    /// all that runs for an operation that was never pended (every pre callback asks).
    #[inline]
    pub fn take(&self, handle: usize) -> Option<PendedEntry> {
        if self.surely_absent(handle) {
            return None;
        }
        self.take_listed(handle)
    }

    /// Forgets `handle` once its pre callback answered something other than pending: a token
    /// it took holds nothing from now on. A resume with a post that the token made while the
    /// callback was still running (or asked for later) carried an encoded completion context,
    /// which nothing else will decode: it is dropped here (docs/callback-model.md, rule 8).
    /// Inlined down to the lock-free check, as [`PendedTable::take`].
    ///
    /// # Safety
    /// Every decision recorded for `handle` with `FLT_PREOP_SUCCESS_WITH_CALLBACK` must carry a
    /// context [`crate::context::encode`] made from a `C`.
    #[inline]
    pub unsafe fn forget<C>(&self, handle: usize) {
        let Some(e) = self.take(handle) else { return };
        for d in [e.early(), e.deferred().map(|(d, _)| d)].into_iter().flatten() {
            if d.code == crate::constants::flt_preop::SUCCESS_WITH_CALLBACK {
                // SAFETY: the caller's contract; the entry is gone, so nothing else decodes it.
                drop(unsafe { crate::context::decode::<C>(d.context as *const core::ffi::c_void) });
            }
        }
    }

    /// [`PendedTable::take`] past the lock-free check.
    #[inline(never)]
    fn take_listed(&self, handle: usize) -> Option<PendedEntry> {
        self.update(handle, core::mem::take)
    }

    /// The pre callback of `handle` returned `FLT_PREOP_PENDING`.
    pub fn pre_returned(&self, handle: usize) -> PreReturned {
        if self.surely_absent(handle) {
            return PreReturned::Unknown;
        }
        let mut t = self.entries.lock();
        let Some(e) = t.iter_mut().find(|e| e.handle == handle) else {
            return PreReturned::Unknown;
        };
        if let Some(d) = e.early() {
            *e = PendedEntry::default();
            self.freed();
            return PreReturned::Early(d);
        }
        e.returned = true;
        PreReturned::Pended { deferred: e.has_deferred }
    }

    /// A resume decision for `handle`: recorded for later when its pre callback is still running,
    /// otherwise the entry is taken out for the caller to act on.
    pub fn resume(&self, handle: usize, decision: Decision) -> Resume {
        if self.surely_absent(handle) {
            return Resume::Unknown;
        }
        let mut t = self.entries.lock();
        let Some(e) = t.iter_mut().find(|e| e.handle == handle) else {
            return Resume::Unknown;
        };
        if e.in_pre() {
            e.set_early(decision);
            return Resume::Recorded;
        }
        let taken = core::mem::take(e);
        self.freed();
        Resume::Now(taken)
    }

    /// A deferred resume decision for `handle`; `Some(true)` when the worker should be queued now
    /// (the pre callback has returned), `Some(false)` when the pre path will queue it.
    pub fn resume_after(&self, handle: usize, decision: Decision, delay_ms: u32) -> Option<bool> {
        self.update(handle, |e| {
            e.set_deferred(decision, delay_ms);
            e.returned
        })
    }

    /// How many operations are pended.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// True when nothing is pended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the pre path does after its callback answered `FLT_PREOP_PENDING`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreReturned {
    /// No such pended operation (it was never pended).
    Unknown,
    /// It was resumed before the callback returned: act on this decision now.
    Early(Decision),
    /// It is pended; `deferred` says a delayed resume is already set and its worker must be
    /// queued.
    Pended {
        /// A deferred resume is set.
        deferred: bool,
    },
}

/// What a resume call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Unknown or finished handle: nothing.
    Unknown,
    /// Recorded for the pre path, which has not returned yet.
    Recorded,
    /// Act now on the entry (taken out of the table).
    Now(PendedEntry),
}

impl Default for PendedTable {
    fn default() -> Self {
        PendedTable::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_empty() {
        let t = PendedTable::new();
        assert!(t.is_empty());
        assert!(!t.add(0, 0), "handle 0 marks free slots");
        assert_eq!(t.get(0), None);
    }

    #[test]
    fn a_resume_during_pre_is_applied_when_pre_returns() {
        let t = PendedTable::new();
        assert!(t.add(0x10, 7));
        assert!(!t.add(0x10, 7), "already pended");
        let d = Decision { code: 4, context: 9 };
        assert_eq!(t.resume(0x10, d), Resume::Recorded);
        assert_eq!(t.pre_returned(0x10), PreReturned::Early(d));
        assert!(t.is_empty());
        assert_eq!(t.resume(0x10, d), Resume::Unknown, "a second resume does nothing");
    }

    #[test]
    fn a_resume_after_pre_takes_the_entry() {
        let t = PendedTable::new();
        assert!(t.add(0x20, 3));
        assert_eq!(t.pre_returned(0x20), PreReturned::Pended { deferred: false });
        match t.resume(0x20, Decision { code: 1, context: 0 }) {
            Resume::Now(e) => assert_eq!((e.handle, e.extra), (0x20, 3)),
            other => panic!("{other:?}"),
        }
        assert!(t.is_empty());
    }

    #[test]
    fn deferred_resumes_report_who_queues_the_worker() {
        let t = PendedTable::new();
        assert!(t.add(0x30, 0));
        let d = Decision { code: 0, context: 5 };
        assert_eq!(t.resume_after(0x30, d, 25), Some(false), "pre has not returned: it queues");
        assert_eq!(t.pre_returned(0x30), PreReturned::Pended { deferred: true });
        assert_eq!(t.get(0x30).and_then(|e| e.deferred()), Some((d, 25)));
        assert!(t.add(0x40, 0));
        assert_eq!(t.pre_returned(0x40), PreReturned::Pended { deferred: false });
        assert_eq!(t.resume_after(0x40, d, 0), Some(true), "pre returned: the caller queues");
        assert_eq!(t.resume_after(0x99, d, 0), None);
    }

    #[test]
    fn the_count_follows_every_way_an_entry_goes() {
        let t = PendedTable::new();
        let d = Decision { code: 1, context: 0 };
        for h in [1, 2, 3, 4] {
            assert!(t.add(h, 0));
        }
        assert_eq!(t.len(), 4);
        assert!(t.take(1).is_some());
        assert_eq!(t.len(), 3);
        assert_eq!(t.resume(2, d), Resume::Recorded);
        assert_eq!(t.pre_returned(2), PreReturned::Early(d));
        assert_eq!(t.len(), 2);
        assert_eq!(t.pre_returned(3), PreReturned::Pended { deferred: false });
        assert!(matches!(t.resume(3, d), Resume::Now(_)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.take(99), None, "an unknown handle changes nothing");
        assert_eq!(t.len(), 1);
        assert!(t.take(4).is_some());
        assert!(t.is_empty());
        // Empty: every lookup answers without an entry, and adding works again.
        assert_eq!(t.get(4), None);
        assert_eq!(t.resume(4, d), Resume::Unknown);
        assert_eq!(t.pre_returned(4), PreReturned::Unknown);
        assert!(t.add(4, 0));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_table_fills_up() {
        let t = PendedTable::new();
        for h in 1..=MAX_PENDED {
            assert!(t.add(h, 0));
        }
        assert!(!t.add(MAX_PENDED + 1, 0));
        assert_eq!(t.len(), MAX_PENDED);
    }
}
