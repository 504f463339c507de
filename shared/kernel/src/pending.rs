//! The table of operations a driver holds pended, shared by both backends: a token's handle is
//! only acted on when the table knows it, so a stale or forged handle does nothing.
//!
//! # Invariants
//! All-zero bytes are an empty table (handle 0 marks a free slot, and no decision is set), so the
//! table can live in zeroed pool memory without being built on the stack first.

use core::sync::atomic::{AtomicUsize, Ordering};

use fsfilter::{IoStatus, MajorFunction, PreResume, Status};

use crate::constants::flt_preop;
use crate::sync::SpinLock;

/// How many operations one driver can hold pended at once; a pend beyond that is refused.
pub const MAX_PENDED: usize = 64;

/// A decision about a pended operation: a backend status code, an encoded context, and for a
/// completion its status. The completion status travels here, not in the operation: whoever
/// takes the decision out of the table owns the operation and writes it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Decision {
    /// The backend's `FLT_PREOP_*` code.
    pub code: i32,
    /// `FLT_PREOP_COMPLETE`: the completion's `IoStatus.Status`.
    pub status: i32,
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK`: the encoded completion context;
    /// `FLT_PREOP_COMPLETE`: the completion's `IoStatus.Information`.
    pub context: usize,
}

impl Decision {
    /// Goes on without a post callback.
    pub const NO_POST: Decision =
        Decision { code: flt_preop::SUCCESS_NO_CALLBACK, status: 0, context: 0 };

    /// Completes the operation with `io`.
    pub const fn complete(io: IoStatus) -> Decision {
        Decision { code: flt_preop::COMPLETE, status: io.status.0, context: io.information }
    }

    /// The completion status of a `FLT_PREOP_COMPLETE` decision; `None` for the others.
    pub const fn completion(&self) -> Option<IoStatus> {
        if self.code == flt_preop::COMPLETE {
            Some(IoStatus { status: Status(self.status), information: self.context })
        } else {
            None
        }
    }

    /// The encoded completion context of a `FLT_PREOP_SUCCESS_WITH_CALLBACK` decision, or null.
    pub const fn completion_context(&self) -> *mut core::ffi::c_void {
        if self.code == flt_preop::SUCCESS_WITH_CALLBACK {
            self.context as *mut core::ffi::c_void
        } else {
            core::ptr::null_mut()
        }
    }
}

/// What a filter asked of a pended operation through its token, before the table says whether
/// it still holds that operation and which one it is. The context of a resume with a post is
/// encoded first ([`Asked::new`]; that may allocate, which the table's spin lock does not allow);
/// the decision is made under the lock from the entry's major function ([`Asked::decide`]).
/// Nothing here reads or writes the operation: until the table hands its entry over it may be
/// gone (its pre callback answered something other than pending, and it went on and completed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// Continue with a post callback: the encoded context, `None` when there was no room for it.
    Post(Option<usize>),
    /// Continue without a post callback.
    NoPost,
    /// Complete with this status.
    Complete(IoStatus),
}

impl Asked {
    /// Prepares `how`: encodes the context of a resume with a post (dropping it when there is no
    /// room, which [`Asked::decide`] then answers under rule 7).
    pub fn new<C>(how: PreResume<C>) -> Asked {
        match how {
            PreResume::WithPost(c) => {
                Asked::Post(crate::context::encode(c).ok().map(|p| p as usize))
            }
            PreResume::NoPost => Asked::NoPost,
            PreResume::Complete(io) => Asked::Complete(io),
        }
    }

    /// The decision for an operation of `major`, whose filter registered a post callback for it
    /// when `has_post` (docs/callback-model.md): without one a resume with a post gets none (rule
    /// 6); without room for its context the operation fails closed, but a cleanup or close goes on
    /// without a post (rule 7); a completion gets no reserved status, and a cleanup or close no
    /// failure (rules 5 and 13).
    pub const fn decide(&self, major: MajorFunction, has_post: bool) -> Decision {
        let cleanup_or_close = matches!(major, MajorFunction::Cleanup | MajorFunction::Close);
        match *self {
            Asked::Complete(io) => Decision::complete(io.for_completion(cleanup_or_close)),
            Asked::Post(Some(p)) if has_post => {
                Decision { code: flt_preop::SUCCESS_WITH_CALLBACK, status: 0, context: p }
            }
            Asked::Post(None) if has_post && !cleanup_or_close => {
                Decision::complete(IoStatus::new(Status::INSUFFICIENT_RESOURCES))
            }
            // No post callback registered, a cleanup or close without room for the context, or
            // a resume without a post.
            Asked::Post(_) | Asked::NoPost => Decision::NO_POST,
        }
    }

    /// Drops the context encoded for a resume with a post unless `taken` (the decision the table
    /// took from this, `None` when it took none) carries it on.
    ///
    /// # Safety
    /// A context in `self` must have been encoded from a `C` by [`Asked::new`], and not released
    /// before.
    pub unsafe fn release<C>(&self, taken: Option<Decision>) {
        let Asked::Post(Some(p)) = *self else { return };
        let carried = taken.is_some_and(|d| d.code == flt_preop::SUCCESS_WITH_CALLBACK);
        if !carried {
            // SAFETY: the caller's contract; nothing else holds the context.
            drop(unsafe { crate::context::decode::<C>(p as *const core::ffi::c_void) });
        }
    }
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
    /// The operation's `IRP_MJ_*` code, recorded when it was pended: a resume decides by it
    /// without reading an operation that may be gone.
    pub major: u8,
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
            early: Decision { code: 0, status: 0, context: 0 },
            has_deferred: false,
            deferred: Decision { code: 0, status: 0, context: 0 },
            delay_ms: 0,
            extra: 0,
            major: 0,
        };
        PendedTable { entries: SpinLock::new([FREE; MAX_PENDED]), live: AtomicUsize::new(0) }
    }

    /// Records `handle`, an operation of `major`, as pended (still in its pre callback). False
    /// when full, present, or 0.
    pub fn add(&self, handle: usize, extra: usize, major: u8) -> bool {
        if handle == 0 {
            return false;
        }
        let mut t = self.entries.lock();
        if t.iter().any(|e| e.handle == handle) {
            return false;
        }
        match t.iter_mut().find(|e| e.handle == 0) {
            Some(slot) => {
                *slot = PendedEntry { handle, extra, major, ..PendedEntry::default() };
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

    /// Removes the entry of `handle` when a deferred resume is set on it, for its worker to carry
    /// out: the entry and the decision.
    pub fn take_deferred(&self, handle: usize) -> Option<(PendedEntry, Decision)> {
        self.update(handle, |e| {
            let (d, _) = e.deferred()?;
            Some((core::mem::take(e), d))
        })
        .flatten()
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

    /// A resume of `handle`, its decision made by `decide` from the entry under the lock:
    /// recorded for later when its pre callback is still running, otherwise the entry is taken
    /// out for the caller to act on.
    pub fn resume(&self, handle: usize, decide: impl FnOnce(&PendedEntry) -> Decision) -> Resume {
        if self.surely_absent(handle) {
            return Resume::Unknown;
        }
        let mut t = self.entries.lock();
        let Some(e) = t.iter_mut().find(|e| e.handle == handle) else {
            return Resume::Unknown;
        };
        let decision = decide(e);
        if e.in_pre() {
            e.set_early(decision);
            return Resume::Recorded(decision);
        }
        let taken = core::mem::take(e);
        self.freed();
        Resume::Now(taken, decision)
    }

    /// A deferred resume of `handle`, decided as by [`PendedTable::resume`]: a copy of the entry
    /// (whose `returned` says the caller queues the worker now; otherwise the pre path will) and
    /// the decision; `None` for a handle the table does not hold.
    pub fn resume_after(
        &self,
        handle: usize,
        delay_ms: u32,
        decide: impl FnOnce(&PendedEntry) -> Decision,
    ) -> Option<(PendedEntry, Decision)> {
        self.update(handle, |e| {
            let decision = decide(e);
            e.set_deferred(decision, delay_ms);
            (*e, decision)
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
    /// This decision is recorded for the pre path, which has not returned yet.
    Recorded(Decision),
    /// Act now on the entry (taken out of the table) with this decision.
    Now(PendedEntry, Decision),
}

impl Resume {
    /// The decision the table took (recorded or to act on now); `None` when it took none.
    pub const fn taken(&self) -> Option<Decision> {
        match *self {
            Resume::Unknown => None,
            Resume::Recorded(d) | Resume::Now(_, d) => Some(d),
        }
    }
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
        assert!(!t.add(0, 0, 0), "handle 0 marks free slots");
        assert_eq!(t.get(0), None);
    }

    #[test]
    fn a_resume_during_pre_is_applied_when_pre_returns() {
        let t = PendedTable::new();
        assert!(t.add(0x10, 7, 3));
        assert!(!t.add(0x10, 7, 3), "already pended");
        let d = Decision { code: 4, status: 0, context: 9 };
        assert_eq!(t.resume(0x10, |_| d), Resume::Recorded(d));
        assert_eq!(t.pre_returned(0x10), PreReturned::Early(d));
        assert!(t.is_empty());
        assert_eq!(t.resume(0x10, |_| d), Resume::Unknown, "a second resume does nothing");
    }

    #[test]
    fn a_resume_after_pre_takes_the_entry() {
        let t = PendedTable::new();
        assert!(t.add(0x20, 3, 3));
        assert_eq!(t.pre_returned(0x20), PreReturned::Pended { deferred: false });
        match t.resume(0x20, |_| Decision { code: 1, status: 0, context: 0 }) {
            Resume::Now(e, _) => assert_eq!((e.handle, e.extra), (0x20, 3)),
            other => panic!("{other:?}"),
        }
        assert!(t.is_empty());
    }

    #[test]
    fn deferred_resumes_report_who_queues_the_worker() {
        let t = PendedTable::new();
        assert!(t.add(0x30, 0, 3));
        let d = Decision { code: 0, status: 0, context: 5 };
        let returned = |r: Option<(PendedEntry, Decision)>| r.map(|(e, d)| (e.returned, d));
        assert_eq!(
            returned(t.resume_after(0x30, 25, |_| d)),
            Some((false, d)),
            "pre has not returned: it queues"
        );
        assert_eq!(t.pre_returned(0x30), PreReturned::Pended { deferred: true });
        assert_eq!(t.get(0x30).and_then(|e| e.deferred()), Some((d, 25)));
        assert!(t.add(0x40, 0, 3));
        assert_eq!(t.pre_returned(0x40), PreReturned::Pended { deferred: false });
        assert_eq!(
            returned(t.resume_after(0x40, 0, |_| d)),
            Some((true, d)),
            "pre returned: the caller queues"
        );
        assert_eq!(t.resume_after(0x99, 0, |_| d), None);
    }

    #[test]
    fn the_count_follows_every_way_an_entry_goes() {
        let t = PendedTable::new();
        let d = Decision { code: 1, status: 0, context: 0 };
        for h in [1, 2, 3, 4] {
            assert!(t.add(h, 0, 3));
        }
        assert_eq!(t.len(), 4);
        assert!(t.take(1).is_some());
        assert_eq!(t.len(), 3);
        assert_eq!(t.resume(2, |_| d), Resume::Recorded(d));
        assert_eq!(t.pre_returned(2), PreReturned::Early(d));
        assert_eq!(t.len(), 2);
        assert_eq!(t.pre_returned(3), PreReturned::Pended { deferred: false });
        assert!(matches!(t.resume(3, |_| d), Resume::Now(..)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.take(99), None, "an unknown handle changes nothing");
        assert_eq!(t.len(), 1);
        assert!(t.take(4).is_some());
        assert!(t.is_empty());
        // Empty: every lookup answers without an entry, and adding works again.
        assert_eq!(t.get(4), None);
        assert_eq!(t.resume(4, |_| d), Resume::Unknown);
        assert_eq!(t.pre_returned(4), PreReturned::Unknown);
        assert!(t.add(4, 0, 3));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_table_fills_up() {
        let t = PendedTable::new();
        for h in 1..=MAX_PENDED {
            assert!(t.add(h, 0, 3));
        }
        assert!(!t.add(MAX_PENDED + 1, 0, 3));
        assert_eq!(t.len(), MAX_PENDED);
    }

    #[test]
    fn a_resume_is_decided_from_the_major_recorded_at_the_pend() {
        use fsfilter::{IoStatus, MajorFunction, Status};
        let t = PendedTable::new();
        let cleanup = MajorFunction::Cleanup.code();
        assert!(t.add(0x50, 0, cleanup));
        let denied = Asked::Complete(IoStatus::new(Status::ACCESS_DENIED));
        // The decision is made under the lock from the entry, before the pre callback returned.
        let d = match t.resume(0x50, |e| denied.decide(MajorFunction::from_code(e.major), true)) {
            Resume::Recorded(d) => d,
            other => panic!("{other:?}"),
        };
        // A cleanup cannot fail (rule 5): the completion carries success, in the decision.
        assert_eq!(d.completion(), Some(IoStatus::new(Status::SUCCESS)));
        assert_eq!(t.pre_returned(0x50), PreReturned::Early(d));
        // The same answer for a read keeps its status, and its information.
        let read = MajorFunction::Read;
        let io = IoStatus { status: Status::ACCESS_DENIED, information: 7 };
        let d = Asked::Complete(io).decide(read, true);
        assert_eq!((d.code, d.completion()), (flt_preop::COMPLETE, Some(io)));
        assert!(d.completion_context().is_null());
    }

    #[test]
    fn a_resume_with_a_post_follows_rules_6_and_7() {
        use fsfilter::{IoStatus, MajorFunction, Status};
        let with = Asked::Post(Some(0x1234));
        let d = with.decide(MajorFunction::Read, true);
        assert_eq!(
            (d.code, d.completion_context() as usize),
            (flt_preop::SUCCESS_WITH_CALLBACK, 0x1234)
        );
        assert_eq!(d.completion(), None);
        assert_eq!(with.decide(MajorFunction::Read, false), Decision::NO_POST, "rule 6");
        let no_room = Asked::Post(None);
        assert_eq!(
            no_room.decide(MajorFunction::Read, true).completion(),
            Some(IoStatus::new(Status::INSUFFICIENT_RESOURCES)),
            "rule 7: fails closed"
        );
        for major in [MajorFunction::Cleanup, MajorFunction::Close] {
            assert_eq!(no_room.decide(major, true), Decision::NO_POST, "rule 7: {major:?} goes on");
        }
        assert_eq!(Asked::NoPost.decide(MajorFunction::Write, true), Decision::NO_POST);
    }

    #[test]
    fn a_resumed_completion_never_uses_a_reserved_status() {
        // Rule 13, for resumptions of both backends: `Complete` with STATUS_PENDING or
        // STATUS_FLT_DISALLOW_FAST_IO completes with STATUS_INVALID_DEVICE_STATE (for a cleanup
        // or close, which cannot fail, with success, rule 5).
        use fsfilter::{IoStatus, MajorFunction, Status};
        for reserved in [Status::PENDING, Status::FLT_DISALLOW_FAST_IO] {
            let asked = Asked::Complete(IoStatus::new(reserved));
            let d = asked.decide(MajorFunction::Read, true);
            assert_eq!(
                (d.code, d.completion()),
                (flt_preop::COMPLETE, Some(IoStatus::new(Status::INVALID_DEVICE_STATE))),
                "{reserved:?}"
            );
            let d = asked.decide(MajorFunction::Close, false);
            assert_eq!(d.completion(), Some(IoStatus::new(Status::SUCCESS)), "{reserved:?}");
        }
    }
}
