//! The table of post callbacks a driver deferred (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`), shared
//! by both backends.
//!
//! A filter's [`fsfilter::DeferredPost`] token can be completed from anywhere, including before
//! the post callback that deferred it has returned: from the callback itself (completing or
//! dropping the token right away), or from another thread that got the token. Until the callback
//! has returned, the operation is not held yet: the Filter Manager refuses
//! `FltCompletePendedPostOperation` for it, and a legacy filter that resumed completion from its
//! own completion routine, or before its dispatch routine marked the IRP pending, would complete
//! it under its own feet. So the table records such an early completion, and the backend acts on
//! it when the callback returns ([`DeferredPosts::post_returned`]); a completion after that is
//! the backend's to carry out ([`DeferredPosts::complete`]). A token whose handle the table does
//! not know (stale, completed twice, never deferred) does nothing.
//!
//! The protocol is the one [`crate::pending::PendedTable`] follows for pre callbacks (an entry;
//! the callback returning; a release before or after it). This table is a separate, smaller one
//! (entries of two words and two flags, with none of a pended decision's fields): built on a
//! `PendedTable`, probe-legacy.sys grew past its 32 KiB limit and passthrough-legacy.sys by 512
//! bytes.
//!
//! # Invariants
//! All-zero bytes are an empty table (handle 0 marks a free slot), so the table can live in zeroed
//! pool memory without being built on the stack first.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::SpinLock;

/// How many post callbacks one driver can hold deferred at once; a deferral beyond that is
/// refused (`PostOperation::defer` answers `None`).
pub const MAX_DEFERRED: usize = 64;

#[derive(Clone, Copy, Default)]
struct Entry {
    /// The backend's handle (the IRP or callback data address); 0 for a free slot.
    handle: usize,
    /// The post callback returned `MoreProcessing`: the operation is held.
    held: bool,
    /// The token completed before the post callback returned.
    completed_early: bool,
}

/// The table.
pub struct DeferredPosts {
    entries: SpinLock<[Entry; MAX_DEFERRED]>,
    /// Entries in use, changed under the lock: a table with nothing deferred answers every post
    /// callback's question without the lock (most filters never defer).
    live: AtomicUsize,
}

/// What [`DeferredPosts::complete`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Unknown handle (stale, completed already, or never deferred): nothing to do.
    Unknown,
    /// The post callback has not returned yet: recorded, for
    /// [`DeferredPosts::post_returned`] to act on.
    Recorded,
    /// The operation is held: the caller resumes its completion now (the entry is gone).
    Resume,
}

/// What the backend does once the post callback returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostReturned {
    /// Nothing was deferred for this handle (or the callback did not keep the deferral).
    NotDeferred,
    /// The operation is held until its token completes ([`Completion::Resume`]).
    Held,
    /// The token completed before the callback returned: completion continues now, as if the
    /// callback had finished.
    CompletedEarly,
}

impl DeferredPosts {
    /// An empty table.
    pub const fn new() -> DeferredPosts {
        const FREE: Entry = Entry { handle: 0, held: false, completed_early: false };
        DeferredPosts { entries: SpinLock::new([FREE; MAX_DEFERRED]), live: AtomicUsize::new(0) }
    }

    /// Records that the post callback of `handle`, running now, defers completion. False when
    /// the table is full, already holds `handle`, or `handle` is 0.
    pub fn defer(&self, handle: usize) -> bool {
        if handle == 0 {
            return false;
        }
        let mut t = self.entries.lock();
        if t.iter().any(|e| e.handle == handle) {
            return false;
        }
        match t.iter_mut().find(|e| e.handle == 0) {
            Some(slot) => {
                *slot = Entry { handle, held: false, completed_early: false };
                self.live.fetch_add(1, Ordering::AcqRel);
                true
            }
            None => false,
        }
    }

    /// The token of `handle` completed (`DeferredPost::complete`, or dropped).
    pub fn complete(&self, handle: usize) -> Completion {
        if self.surely_absent(handle) {
            return Completion::Unknown;
        }
        let mut t = self.entries.lock();
        let Some(e) = t.iter_mut().find(|e| e.handle == handle) else {
            return Completion::Unknown;
        };
        if !e.held {
            e.completed_early = true;
            return Completion::Recorded;
        }
        *e = Entry::default();
        self.live.fetch_sub(1, Ordering::AcqRel);
        Completion::Resume
    }

    /// The post callback of `handle` returned; `deferring` when it answered `MoreProcessing`.
    /// Inlined down to the lock-free check, which is all that runs for a post callback that
    /// deferred nothing.
    #[inline]
    pub fn post_returned(&self, handle: usize, deferring: bool) -> PostReturned {
        if self.surely_absent(handle) {
            return PostReturned::NotDeferred;
        }
        self.post_returned_listed(handle, deferring)
    }

    /// [`DeferredPosts::post_returned`] past the lock-free check.
    #[inline(never)]
    fn post_returned_listed(&self, handle: usize, deferring: bool) -> PostReturned {
        let mut t = self.entries.lock();
        let Some(e) = t.iter_mut().find(|e| e.handle == handle && !e.held) else {
            return PostReturned::NotDeferred;
        };
        if deferring && !e.completed_early {
            e.held = true;
            return PostReturned::Held;
        }
        // Completed early, or the callback deferred and then answered something else (its token
        // is stale from now on).
        let early = e.completed_early;
        *e = Entry::default();
        self.live.fetch_sub(1, Ordering::AcqRel);
        if deferring && early { PostReturned::CompletedEarly } else { PostReturned::NotDeferred }
    }

    /// True when no entry can hold `handle` (0, or nothing deferred): no lock, no scan. A handle
    /// this thread added is seen (its own write).
    fn surely_absent(&self, handle: usize) -> bool {
        handle == 0 || self.live.load(Ordering::Acquire) == 0
    }

    /// How many post callbacks are deferred (held or still in their callback).
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// True when nothing is deferred.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for DeferredPosts {
    fn default() -> Self {
        DeferredPosts::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_empty_and_never_a_handle() {
        let t = DeferredPosts::new();
        assert!(t.is_empty());
        assert!(!t.defer(0));
        assert_eq!(t.complete(0), Completion::Unknown);
        assert_eq!(t.post_returned(0, true), PostReturned::NotDeferred);
    }

    #[test]
    fn a_token_completed_after_the_callback_returned_resumes_the_held_operation() {
        let t = DeferredPosts::new();
        assert!(t.defer(0x10));
        assert!(!t.defer(0x10), "deferred already");
        assert_eq!(t.post_returned(0x10, true), PostReturned::Held);
        assert_eq!(t.len(), 1);
        assert_eq!(t.complete(0x10), Completion::Resume);
        assert!(t.is_empty());
        assert_eq!(t.complete(0x10), Completion::Unknown, "a second completion does nothing");
    }

    #[test]
    fn a_token_completed_inside_the_callback_lets_completion_continue_when_it_returns() {
        let t = DeferredPosts::new();
        assert!(t.defer(0x20));
        assert_eq!(t.complete(0x20), Completion::Recorded, "not held yet: only recorded");
        assert_eq!(t.complete(0x20), Completion::Recorded, "still recorded, once");
        assert_eq!(t.post_returned(0x20, true), PostReturned::CompletedEarly);
        assert!(t.is_empty());
        assert_eq!(t.complete(0x20), Completion::Unknown);
    }

    #[test]
    fn a_deferral_the_callback_did_not_keep_is_forgotten() {
        let t = DeferredPosts::new();
        assert!(t.defer(0x30));
        // The callback deferred, kept the token, and answered Finished anyway.
        assert_eq!(t.post_returned(0x30, false), PostReturned::NotDeferred);
        assert!(t.is_empty());
        assert_eq!(t.complete(0x30), Completion::Unknown, "its token is stale");
        // Completed early and then not deferring: nothing is held either.
        assert!(t.defer(0x31));
        assert_eq!(t.complete(0x31), Completion::Recorded);
        assert_eq!(t.post_returned(0x31, false), PostReturned::NotDeferred);
        assert!(t.is_empty());
    }

    #[test]
    fn a_held_operation_is_not_returned_again() {
        let t = DeferredPosts::new();
        assert!(t.defer(0x40));
        assert_eq!(t.post_returned(0x40, true), PostReturned::Held);
        // Another post callback for the same handle (a reused address) is not this deferral.
        assert_eq!(t.post_returned(0x40, true), PostReturned::NotDeferred);
        assert_eq!(t.len(), 1);
        assert_eq!(t.complete(0x40), Completion::Resume);
    }

    #[test]
    fn the_table_fills_up_and_frees() {
        let t = DeferredPosts::new();
        for h in 1..=MAX_DEFERRED {
            assert!(t.defer(h));
        }
        assert!(!t.defer(MAX_DEFERRED + 1), "full");
        for h in 1..=MAX_DEFERRED {
            assert_eq!(t.post_returned(h, true), PostReturned::Held);
            assert_eq!(t.complete(h), Completion::Resume);
        }
        assert!(t.is_empty());
        assert!(t.defer(MAX_DEFERRED + 1));
    }
}
