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
//! # Invariants
//! All-zero bytes are an empty table (it is a [`PendedTable`], whose invariant that is), so the
//! table can live in zeroed pool memory without being built on the stack first.

use crate::pending::{Decision, PendedTable, PreReturned, Resume};

/// How many post callbacks one driver can hold deferred at once; a deferral beyond that is
/// refused (`PostOperation::defer` answers `None`).
pub const MAX_DEFERRED: usize = crate::pending::MAX_PENDED;

/// The table: the protocol of a pended pre callback, whose token may also resume it before the
/// callback returned, on a [`PendedTable`] of its own (a deferred post is an entry; the callback
/// returning is `pre_returned`; completing the token is a `resume` with no decision to carry).
/// Each handle is in at most one post callback at a time: an operation held at one of the
/// driver's locations reaches none of its other callbacks until it is resumed.
pub struct DeferredPosts(PendedTable);

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
        DeferredPosts(PendedTable::new())
    }

    /// Records that the post callback of `handle`, running now, defers completion. False when
    /// the table is full, already holds `handle`, or `handle` is 0.
    pub fn defer(&self, handle: usize) -> bool {
        self.0.add(handle, 0)
    }

    /// The token of `handle` completed (`DeferredPost::complete`, or dropped).
    pub fn complete(&self, handle: usize) -> Completion {
        match self.0.resume(handle, Decision::default()) {
            Resume::Unknown => Completion::Unknown,
            Resume::Recorded => Completion::Recorded,
            Resume::Now(_) => Completion::Resume,
        }
    }

    /// The post callback of `handle` returned; `deferring` when it answered `MoreProcessing`.
    /// Inlined down to the table's lock-free check, which is all that runs for a post callback
    /// when nothing is deferred.
    #[inline]
    pub fn post_returned(&self, handle: usize, deferring: bool) -> PostReturned {
        if !deferring {
            // A deferral the callback did not keep (if any): its token holds nothing from now on.
            let _ = self.0.take(handle);
            return PostReturned::NotDeferred;
        }
        match self.0.pre_returned(handle) {
            PreReturned::Early(_) => PostReturned::CompletedEarly,
            PreReturned::Pended { .. } => PostReturned::Held,
            PreReturned::Unknown => PostReturned::NotDeferred,
        }
    }

    /// How many post callbacks are deferred (held or still in their callback).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is deferred.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
