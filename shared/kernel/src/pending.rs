//! The table of operations a driver holds pended, shared by both backends: a token's handle is
//! only acted on when the table knows it, so a stale or forged handle does nothing.
//!
//! # Invariants
//! All-zero bytes are an empty table (handle 0 marks a free slot, and no decision is set), so the
//! table can live in zeroed pool memory without being built on the stack first.

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
        PendedTable { entries: SpinLock::new([FREE; MAX_PENDED]) }
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
                true
            }
            None => false,
        }
    }

    /// A copy of the entry of `handle`.
    pub fn get(&self, handle: usize) -> Option<PendedEntry> {
        if handle == 0 {
            return None;
        }
        self.entries.lock().iter().find(|e| e.handle == handle).copied()
    }

    /// Applies `f` to the entry of `handle`; `None` when the table does not hold it.
    pub fn update<R>(&self, handle: usize, f: impl FnOnce(&mut PendedEntry) -> R) -> Option<R> {
        if handle == 0 {
            return None;
        }
        let mut t = self.entries.lock();
        t.iter_mut().find(|e| e.handle == handle).map(f)
    }

    /// Removes and returns the entry of `handle`.
    pub fn take(&self, handle: usize) -> Option<PendedEntry> {
        self.update(handle, core::mem::take)
    }

    /// The pre callback of `handle` returned `FLT_PREOP_PENDING`.
    pub fn pre_returned(&self, handle: usize) -> PreReturned {
        let mut t = self.entries.lock();
        let Some(e) = t.iter_mut().find(|e| e.handle == handle && handle != 0) else {
            return PreReturned::Unknown;
        };
        if let Some(d) = e.early() {
            *e = PendedEntry::default();
            return PreReturned::Early(d);
        }
        e.returned = true;
        PreReturned::Pended { deferred: e.has_deferred }
    }

    /// A resume decision for `handle`: recorded for later when its pre callback is still running,
    /// otherwise the entry is taken out for the caller to act on.
    pub fn resume(&self, handle: usize, decision: Decision) -> Resume {
        let mut t = self.entries.lock();
        let Some(e) = t.iter_mut().find(|e| e.handle == handle && handle != 0) else {
            return Resume::Unknown;
        };
        if e.in_pre() {
            e.set_early(decision);
            return Resume::Recorded;
        }
        Resume::Now(core::mem::take(e))
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
        self.entries.lock().iter().filter(|e| e.handle != 0).count()
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
    fn the_table_fills_up() {
        let t = PendedTable::new();
        for h in 1..=MAX_PENDED {
            assert!(t.add(h, 0));
        }
        assert!(!t.add(MAX_PENDED + 1, 0));
        assert_eq!(t.len(), MAX_PENDED);
    }
}
