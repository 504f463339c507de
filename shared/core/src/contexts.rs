//! Stream contexts (rule 28): per-stream state a filter keeps for each file stream an instance
//! sees, found again from any operation on that stream.
//!
//! A filter declares how many 64-bit words each of its stream contexts holds,
//! [`crate::Filter::STREAM_CONTEXT_WORDS`], beside its registration; a filter that declares none
//! carries none of this code. In the minifilter model a context is a Filter Manager stream context
//! (`FltAllocateContext`, `FltSetStreamContext`, `FltGetStreamContext`, `FltReleaseContext`,
//! `FltDeleteContext`); in the legacy model an `FSRTL_PER_STREAM_CONTEXT` on the stream's
//! `FSRTL_ADVANCED_FCB_HEADER` (`FsRtlInsertPerStreamContext`, `FsRtlLookupPerStreamContext`,
//! `FsRtlRemovePerStreamContext`, and the file system's `FsRtlTeardownPerStreamContexts`, which
//! calls the backend's `FreeCallback`). The words are atomics: every operation on the stream, in
//! any thread, sees the same context.
//!
//! Handle contexts (rule 29, decision 0014) are the same guard over a per-handle context:
//! [`crate::Filter::HANDLE_CONTEXT_WORDS`] words, asked with [`ContextRequest::HandleGet`] and
//! [`ContextRequest::HandleGetOrCreate`], a Filter Manager stream-handle context
//! (`FLT_STREAMHANDLE_CONTEXT`) or a legacy `FSRTL_PER_FILEOBJECT_CONTEXT`, freed after the
//! handle's close ([`crate::Filter::handle_context_freed`]).

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::AtomicU64;

/// The most words a stream context may hold (256 bytes).
pub const MAX_STREAM_CONTEXT_WORDS: usize = 32;

/// What [`crate::Services::stream_context`] does when the stream has no context of the instance
/// yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContextRequest {
    /// Find the context only: `STATUS_NOT_FOUND` when there is none (`FltGetStreamContext`,
    /// `FsRtlLookupPerStreamContext`).
    Get,
    /// Find the context, or attach a new one with every word zero. When two threads race to
    /// attach, one context wins and both get it (`FltSetStreamContext` with
    /// `FLT_SET_CONTEXT_KEEP_IF_EXISTS`; the legacy backend serializes its lookup and insert).
    GetOrCreate,
    /// As [`ContextRequest::Get`], for the context of the operation's handle (its file object)
    /// rather than of its stream (rule 29): `FltGetStreamHandleContext`,
    /// `FsRtlLookupPerFileObjectContext`.
    HandleGet,
    /// As [`ContextRequest::GetOrCreate`], for the handle's context (rule 29):
    /// `FltSetStreamHandleContext` with `FLT_SET_CONTEXT_KEEP_IF_EXISTS`;
    /// `FsRtlInsertPerFileObjectContext` under the legacy backend's lock.
    HandleGetOrCreate,
}

impl ContextRequest {
    /// True for the requests of a handle's context ([`ContextRequest::HandleGet`],
    /// [`ContextRequest::HandleGetOrCreate`]).
    pub const fn is_handle(self) -> bool {
        matches!(self, ContextRequest::HandleGet | ContextRequest::HandleGetOrCreate)
    }

    /// True for the requests that attach a context when there is none.
    pub const fn creates(self) -> bool {
        matches!(self, ContextRequest::GetOrCreate | ContextRequest::HandleGetOrCreate)
    }
}

/// Identifies a stream context within its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamContextId(pub usize);

/// The backend side of a stream context: its words while referenced, the release of a
/// reference, and deletion.
pub trait StreamContextBackend: Sync {
    /// The words of context `id`, valid while the reference lasts. Empty for an unknown id.
    fn words(&self, id: StreamContextId) -> &[AtomicU64];
    /// Releases one reference (`FltReleaseContext`; the legacy backend's own count). The last
    /// reference of a context that is no longer attached frees it, after
    /// [`crate::Filter::stream_context_freed`].
    fn release(&self, id: StreamContextId);
    /// Detaches the context from its stream (`FltDeleteContext`; `FsRtlRemovePerStreamContext`),
    /// then releases this reference. Nothing if it is already detached.
    fn delete(&self, id: StreamContextId);
}

/// A referenced stream context, from [`crate::Services::stream_context`] (rule 28).
///
/// Dropping it releases the reference. It lives within the callback that got it: it is neither
/// `Send` nor `Sync`, so it cannot go into a completion context, the instance state or a static,
/// and its last release is always at the IRQL of a callback that could get it (at most
/// `APC_LEVEL`). A filter keeps what must outlive the callback in the words themselves.
pub struct StreamContext {
    id: StreamContextId,
    backend: &'static dyn StreamContextBackend,
    created: bool,
    _not_send: PhantomData<*const ()>,
}

impl StreamContext {
    /// Built by a backend with one reference taken for the caller; `created` when this request
    /// attached it.
    pub fn new(
        id: StreamContextId,
        backend: &'static dyn StreamContextBackend,
        created: bool,
    ) -> StreamContext {
        StreamContext { id, backend, created, _not_send: PhantomData }
    }

    /// The context's identity within its backend.
    pub const fn id(&self) -> StreamContextId {
        self.id
    }

    /// True when this request attached the context ([`ContextRequest::GetOrCreate`] found none):
    /// its words are all zero, and this caller is the one to initialize them.
    pub const fn created(&self) -> bool {
        self.created
    }

    /// The context's words, [`crate::Filter::STREAM_CONTEXT_WORDS`] of them.
    pub fn words(&self) -> &[AtomicU64] {
        self.backend.words(self.id)
    }

    /// Word `index`, or `None` past the end.
    pub fn word(&self, index: usize) -> Option<&AtomicU64> {
        self.words().get(index)
    }

    /// Detaches the context from its stream: a later [`ContextRequest::Get`] finds none, a later
    /// [`ContextRequest::GetOrCreate`] attaches a new one. Other references keep the words alive
    /// until they are dropped; the last one frees the context.
    pub fn delete(self) {
        let this = core::mem::ManuallyDrop::new(self);
        this.backend.delete(this.id);
    }
}

impl Drop for StreamContext {
    fn drop(&mut self) {
        self.backend.release(self.id);
    }
}

impl fmt::Debug for StreamContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamContext")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("words", &self.words())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::sync::atomic::Ordering;
    use std::sync::Mutex;
    use std::vec::Vec;

    /// Records what the guard asks of its backend.
    struct Recorder {
        words: [AtomicU64; 2],
        calls: Mutex<Vec<(&'static str, usize)>>,
    }

    impl StreamContextBackend for Recorder {
        fn words(&self, id: StreamContextId) -> &[AtomicU64] {
            if id.0 == 7 { &self.words } else { &[] }
        }
        fn release(&self, id: StreamContextId) {
            self.calls.lock().unwrap().push(("release", id.0));
        }
        fn delete(&self, id: StreamContextId) {
            self.calls.lock().unwrap().push(("delete", id.0));
        }
    }

    fn recorder() -> &'static Recorder {
        std::boxed::Box::leak(std::boxed::Box::new(Recorder {
            words: [AtomicU64::new(0), AtomicU64::new(0)],
            calls: Mutex::new(Vec::new()),
        }))
    }

    #[test]
    fn a_context_is_released_once_when_dropped() {
        let r = recorder();
        let c = StreamContext::new(StreamContextId(7), r, true);
        assert!(c.created());
        c.word(1).unwrap().store(5, Ordering::Relaxed);
        assert!(c.word(2).is_none());
        drop(c);
        assert_eq!(r.words[1].load(Ordering::Relaxed), 5);
        assert_eq!(*r.calls.lock().unwrap(), [("release", 7)]);
    }

    #[test]
    fn a_deleted_context_is_deleted_and_not_released_again() {
        let r = recorder();
        let c = StreamContext::new(StreamContextId(7), r, false);
        assert!(!c.created());
        c.delete();
        assert_eq!(*r.calls.lock().unwrap(), [("delete", 7)]);
    }

    #[test]
    fn an_unknown_context_has_no_words() {
        let r = recorder();
        let c = StreamContext::new(StreamContextId(3), r, false);
        assert!(c.words().is_empty());
        assert!(c.word(0).is_none());
    }
}
