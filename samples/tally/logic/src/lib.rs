//! tally: per-stream I/O accounting kept in stream contexts (rule 28 of docs/callback-model.md,
//! decision 0013), the idea of Microsoft's ctx minifilter sample (`filesys/miniFilter/ctx` in
//! microsoft/Windows-driver-samples: a context attached to each stream when it is opened, found
//! again by every later operation, freed by the system) applied to counting, written once for
//! both models.
//!
//! Each stream an instance sees opened gets a context of [`word::COUNT`] atomic words
//! ([`Filter::STREAM_CONTEXT_WORDS`]): post-create attaches it
//! ([`ContextRequest::GetOrCreate`], only for a create that opened something,
//! `PostOperation::opened`) and counts the open; every later read, write and cleanup of the stream,
//! through any of its handles, finds it ([`ContextRequest::Get`]) and counts itself: reads and
//! writes with their bytes, how many came by fast I/O and how many non-cached, the paging I/O
//! below them, the fast-I/O tries the file system declined, the handles still open. At the cleanup
//! of the last handle the filter knows of, it notes the stream's tally ([`notes`]). When the
//! context is freed (the file system tore the stream down after its last close, the instance tore
//! down, or the filter deleted it), [`Filter::stream_context_freed`] adds its final words to the
//! filter-wide [`Totals`], so contexts freed at unload are counted as well, each exactly once.
//!
//! Where each count is taken, and why:
//! - **Reads and writes** (not paging) are counted in their post callback, once completed: a
//!   fast-I/O try the file system declines gets its post with `STATUS_FLT_DISALLOW_FAST_IO`
//!   before the IRP that replaces it comes (rule 12), and is counted apart
//!   ([`StreamTally::fast_io_declined`]), not as a read. The bytes are the completion's
//!   `Information` when it succeeded. A post callback may run at `DISPATCH_LEVEL` (an overlapped
//!   non-cached transfer completed from a DPC, rule 14), where no context can be had
//!   (`FltGetStreamContext` is for IRQL ≤ `APC_LEVEL`): the filter then finishes it when safe
//!   ([`PostOutcome::WhenSafe`]), at `PASSIVE_LEVEL`.
//! - **Paging I/O** is counted in its pre callback, with the length asked: its completion may come
//!   at `DISPATCH_LEVEL` too (the modified-page writer's asynchronous paging write), and paging
//!   I/O cannot be finished when safe. Paging transfers are the cache's and the memory
//!   manager's traffic under the cached reads and writes, so they are kept apart from those.
//! - **Opens** in post-create; **cleanups** in pre-cleanup, which also keeps a count of the
//!   handles open (opens minus cleanups, never below zero).
//!
//! A stream opened before the instance attached has no context: its operations find none
//! (`STATUS_NOT_FOUND`) and are counted as [`Totals::untracked`]; a later open of it attaches one,
//! which then knows only the handles opened since, so its "last handle" is the last of those.
//!
//! A create that supersedes or overwrites the stream (`FILE_SUPERSEDED`, `FILE_OVERWRITTEN`)
//! restarts its tally: the filter notes the old tally, deletes the old context
//! ([`StreamContext::delete`]: it is freed, and counted in the totals, when its last reference
//! goes) and attaches a new one, which carries the open handles over and counts one more
//! [`StreamTally::generation`]. A truncation (`FileEndOfFileInformation`) does not: the framework
//! shows a filter no set-information buffer, so the new size is unknown to it.
//!
//! Mapping to ctx (its `operations.c`): its post-create, which finds or creates the stream
//! context (`CtxFindOrCreateStreamContext`, creating) and counts the create →
//! [`ContextRequest::GetOrCreate`] in post-create, counting [`word::OPENS`]; its pre-cleanup,
//! which finds it without creating and counts the cleanup → [`ContextRequest::Get`] in
//! pre-cleanup, counting [`word::CLEANUPS`]; its context registration and cleanup callback →
//! [`Filter::STREAM_CONTEXT_WORDS`] (the backends register it) and
//! [`Filter::stream_context_freed`]. Unlike ctx it keeps only stream contexts (no instance, file
//! or stream-handle contexts), no names (so no lock: every word is an atomic), counts reads and
//! writes, and notes its counts.

#![no_std]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use fsfilter::{
    ContextRequest, Error, Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation,
    OperationHeader, Parameters, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome,
    Registration, Result, ServiceParameters, Services, Status, StreamContext,
};

pub use fsfilter::ParameterDoc;

/// The tally sample reads no parameters: it counts every stream of every volume it attaches to,
/// and its notes are its output.
pub const PARAMETERS: &[ParameterDoc] = &[];

/// The words of a stream context, by index. Each is a 64-bit atomic that every operation on the
/// stream, in any thread, updates in place.
pub mod word {
    /// The context's number: 1 for the first context the filter attached, 2 for the next, ...
    /// (set by the request that attached it, [`fsfilter::StreamContext::created`]).
    pub const SERIAL: usize = 0;
    /// How many tallies of the stream this one follows: a create that superseded or overwrote the
    /// stream restarted it.
    pub const GENERATION: usize = 1;
    /// Creates that opened the stream.
    pub const OPENS: usize = 2;
    /// Handles open on the stream that the filter knows of: opens minus cleanups, never below 0.
    pub const HANDLES: usize = 3;
    /// Cleanups (the last handle of a file object closed).
    pub const CLEANUPS: usize = 4;
    /// Reads completed, paging I/O aside, fast-I/O tries the file system declined aside.
    pub const READS: usize = 5;
    /// Bytes those reads returned.
    pub const READ_BYTES: usize = 6;
    /// Of the reads, those that came by fast I/O.
    pub const FAST_IO_READS: usize = 7;
    /// Of the reads, the non-cached ones (`IRP_NOCACHE`).
    pub const NONCACHED_READS: usize = 8;
    /// Writes completed, paging I/O aside, fast-I/O tries the file system declined aside.
    pub const WRITES: usize = 9;
    /// Bytes those writes wrote.
    pub const WRITE_BYTES: usize = 10;
    /// Of the writes, those that came by fast I/O.
    pub const FAST_IO_WRITES: usize = 11;
    /// Of the writes, the non-cached ones (`IRP_NOCACHE`).
    pub const NONCACHED_WRITES: usize = 12;
    /// Paging reads (`IRP_PAGING_IO`) asked of the stream.
    pub const PAGING_READS: usize = 13;
    /// Bytes those paging reads asked for.
    pub const PAGING_READ_BYTES: usize = 14;
    /// Paging writes asked of the stream.
    pub const PAGING_WRITES: usize = 15;
    /// Bytes those paging writes asked to write.
    pub const PAGING_WRITE_BYTES: usize = 16;
    /// Fast-I/O reads and writes the drivers below declined (`STATUS_FLT_DISALLOW_FAST_IO` in the
    /// post callback): the I/O manager sent an IRP instead, counted when it completed.
    pub const FAST_IO_DECLINED: usize = 17;
    /// How many words a context holds: [`crate::Tally`]'s `Filter::STREAM_CONTEXT_WORDS`.
    pub const COUNT: usize = 18;
}

/// `FILE_SUPERSEDED` (wdm.h): the `Information` of a create that superseded an existing file.
pub const FILE_SUPERSEDED: usize = 0;

/// The words of one stream context, read at once (each word on its own: a snapshot of counters
/// that other threads may be moving).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamTally {
    /// [`word::SERIAL`].
    pub serial: u64,
    /// [`word::GENERATION`].
    pub generation: u64,
    /// [`word::OPENS`].
    pub opens: u64,
    /// [`word::HANDLES`].
    pub handles: u64,
    /// [`word::CLEANUPS`].
    pub cleanups: u64,
    /// [`word::READS`].
    pub reads: u64,
    /// [`word::READ_BYTES`].
    pub read_bytes: u64,
    /// [`word::FAST_IO_READS`].
    pub fast_io_reads: u64,
    /// [`word::NONCACHED_READS`].
    pub noncached_reads: u64,
    /// [`word::WRITES`].
    pub writes: u64,
    /// [`word::WRITE_BYTES`].
    pub write_bytes: u64,
    /// [`word::FAST_IO_WRITES`].
    pub fast_io_writes: u64,
    /// [`word::NONCACHED_WRITES`].
    pub noncached_writes: u64,
    /// [`word::PAGING_READS`].
    pub paging_reads: u64,
    /// [`word::PAGING_READ_BYTES`].
    pub paging_read_bytes: u64,
    /// [`word::PAGING_WRITES`].
    pub paging_writes: u64,
    /// [`word::PAGING_WRITE_BYTES`].
    pub paging_write_bytes: u64,
    /// [`word::FAST_IO_DECLINED`].
    pub fast_io_declined: u64,
}

impl StreamTally {
    /// The tally in `words` (a context's words, or the totals'); a missing word reads 0.
    pub fn from_words(words: &[AtomicU64]) -> StreamTally {
        let w = |i: usize| words.get(i).map_or(0, |w| w.load(Ordering::Relaxed));
        StreamTally {
            serial: w(word::SERIAL),
            generation: w(word::GENERATION),
            opens: w(word::OPENS),
            handles: w(word::HANDLES),
            cleanups: w(word::CLEANUPS),
            reads: w(word::READS),
            read_bytes: w(word::READ_BYTES),
            fast_io_reads: w(word::FAST_IO_READS),
            noncached_reads: w(word::NONCACHED_READS),
            writes: w(word::WRITES),
            write_bytes: w(word::WRITE_BYTES),
            fast_io_writes: w(word::FAST_IO_WRITES),
            noncached_writes: w(word::NONCACHED_WRITES),
            paging_reads: w(word::PAGING_READS),
            paging_read_bytes: w(word::PAGING_READ_BYTES),
            paging_writes: w(word::PAGING_WRITES),
            paging_write_bytes: w(word::PAGING_WRITE_BYTES),
            fast_io_declined: w(word::FAST_IO_DECLINED),
        }
    }

    /// The reads that were cached IRPs: neither fast I/O nor non-cached.
    pub const fn cached_irp_reads(&self) -> u64 {
        self.reads.saturating_sub(self.fast_io_reads).saturating_sub(self.noncached_reads)
    }

    /// The writes that were cached IRPs: neither fast I/O nor non-cached.
    pub const fn cached_irp_writes(&self) -> u64 {
        self.writes.saturating_sub(self.fast_io_writes).saturating_sub(self.noncached_writes)
    }
}

/// What the filter counted over all its streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Stream contexts the filter attached.
    pub created: u64,
    /// Stream contexts freed ([`Filter::stream_context_freed`]): at the stream's teardown, when
    /// the filter deleted one, at its instance's teardown. Equal to `created` once the filter is
    /// unloaded.
    pub freed: u64,
    /// Tallies restarted by a create that superseded or overwrote their stream.
    pub restarted: u64,
    /// Reads, writes and cleanups of streams without a context (`STATUS_NOT_FOUND`: opened before
    /// the instance attached, or between a restart's delete and its new context).
    pub untracked: u64,
    /// Opens the filter could not tally: the context could not be had (the file system keeps no
    /// filter contexts for the stream, the instance is being torn down, no pool).
    pub not_tallied: u64,
    /// The sum of the freed contexts' final words: their opens, reads, bytes, ...; `handles` is
    /// what was still open when they were freed (at an instance's teardown); `serial` and
    /// `generation` are 0.
    pub streams: StreamTally,
}

/// Indices into `Tally::counters`.
mod counter {
    pub(crate) const CREATED: usize = 0;
    pub(crate) const FREED: usize = 1;
    pub(crate) const RESTARTED: usize = 2;
    pub(crate) const UNTRACKED: usize = 3;
    pub(crate) const NOT_TALLIED: usize = 4;
    pub(crate) const COUNT: usize = 5;
}

/// The trace notes' openings; each is followed by the stream's serial number (or the totals'
/// counts) and the tally.
pub mod notes {
    /// The cleanup of the last handle the filter knew of: the stream's tally so far.
    pub const LAST_HANDLE: &str = "tally: last handle of stream ";
    /// A create superseded or overwrote the stream: its tally until then, which restarts.
    pub const RESTARTED: &str = "tally: overwritten, restarting stream ";
    /// The totals of the contexts freed so far, after a last handle's note.
    pub const TOTALS: &str = "tally: freed ";
}

/// The registration: post-create, pre and post read and write, pre-cleanup.
pub const REGISTRATION: Registration = Registration::new()
    .operation(Operation::new(MajorFunction::Create).post())
    .operation(Operation::new(MajorFunction::Read).pre().post())
    .operation(Operation::new(MajorFunction::Write).pre().post())
    .operation(Operation::new(MajorFunction::Cleanup).pre())
    .validated();

/// The tally filter: the filter-wide counters; each stream's own are in its context.
#[derive(Debug)]
pub struct Tally {
    counters: [AtomicU64; counter::COUNT],
    /// The sums of the freed contexts' words.
    freed: [AtomicU64; word::COUNT],
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

/// Adds `n` to `words[i]`, when there is such a word.
fn add(words: &[AtomicU64], i: usize, n: u64) {
    if let Some(w) = words.get(i) {
        w.fetch_add(n, Ordering::Relaxed);
    }
}

/// The context's word `i` now (0 when there is none).
fn load(words: &[AtomicU64], i: usize) -> u64 {
    words.get(i).map_or(0, |w| w.load(Ordering::Relaxed))
}

/// Sets the context's word `i` (nothing when there is none).
fn store(words: &[AtomicU64], i: usize, v: u64) {
    if let Some(w) = words.get(i) {
        w.store(v, Ordering::Relaxed);
    }
}

/// Whether the create `h` that completed with `information` superseded or overwrote an existing
/// stream (its data is gone, whatever was counted of it).
pub fn replaced(h: &OperationHeader<'_>, information: usize) -> bool {
    let supersede = match h.parameters {
        Parameters::Create(c) => c.disposition() == fsfilter::create::FILE_SUPERSEDE,
        _ => false,
    };
    information == fsfilter::create::FILE_OVERWRITTEN
        || (supersede && information == FILE_SUPERSEDED)
}

impl Tally {
    /// A filter that has counted nothing.
    pub const fn new() -> Tally {
        Tally {
            counters: [const { AtomicU64::new(0) }; counter::COUNT],
            freed: [const { AtomicU64::new(0) }; word::COUNT],
        }
    }

    /// The filter-wide counts now.
    pub fn totals(&self) -> Totals {
        let c = |i: usize| load(&self.counters, i);
        let mut streams = StreamTally::from_words(&self.freed);
        streams.serial = 0;
        streams.generation = 0;
        Totals {
            created: c(counter::CREATED),
            freed: c(counter::FREED),
            restarted: c(counter::RESTARTED),
            untracked: c(counter::UNTRACKED),
            not_tallied: c(counter::NOT_TALLIED),
            streams,
        }
    }

    fn count(&self, i: usize) {
        add(&self.counters, i, 1);
    }

    /// The stream's context, when it has one: `None` counts the operation as untracked when the
    /// stream has none (`STATUS_NOT_FOUND`); other refusals (a volume open, a paging file, an
    /// IRQL too high) are not the stream's to count.
    fn find(&self, services: &dyn Services) -> Option<StreamContext> {
        match services.stream_context(ContextRequest::Get) {
            Ok(c) => Some(c),
            Err(e) => {
                if e == Error::NOT_FOUND {
                    self.count(counter::UNTRACKED);
                }
                None
            }
        }
    }

    /// Attaches a context to the stream the create opened (or finds the one it has) and counts
    /// the open; restarts the tally of a stream the create superseded or overwrote.
    fn opened(&self, op: &PostOperation<'_>) {
        let services = op.services();
        let Ok(context) = services.stream_context(ContextRequest::GetOrCreate) else {
            self.count(counter::NOT_TALLIED);
            return;
        };
        let context = if context.created() {
            self.created(&context, 0, 0);
            context
        } else if replaced(op.header(), op.result().information) {
            match self.restart(services, context) {
                Some(c) => c,
                None => return,
            }
        } else {
            context
        };
        let words = context.words();
        add(words, word::OPENS, 1);
        add(words, word::HANDLES, 1);
    }

    /// Numbers a context this filter just attached, and starts it at `generation` with `handles`
    /// open.
    fn created(&self, context: &StreamContext, generation: u64, handles: u64) {
        let serial = self
            .counters
            .get(counter::CREATED)
            .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed).wrapping_add(1));
        let words = context.words();
        store(words, word::SERIAL, serial);
        store(words, word::GENERATION, generation);
        store(words, word::HANDLES, handles);
    }

    /// Notes and deletes the tally of a stream a create superseded or overwrote, and attaches a
    /// new one that carries its open handles over. `None` when no new context could be had (the
    /// open is then not tallied).
    fn restart(&self, services: &dyn Services, old: StreamContext) -> Option<StreamContext> {
        let before = StreamTally::from_words(old.words());
        Tally::note_stream(services, notes::RESTARTED, &before);
        self.count(counter::RESTARTED);
        old.delete();
        let Ok(new) = services.stream_context(ContextRequest::GetOrCreate) else {
            self.count(counter::NOT_TALLIED);
            return None;
        };
        // Another opener may have attached one between the delete and this request: its own.
        if new.created() {
            self.created(&new, before.generation.wrapping_add(1), before.handles);
        }
        Some(new)
    }

    /// Counts a paging read or write in its pre callback, by the length asked.
    fn paging(&self, h: &OperationHeader<'_>, services: &dyn Services) {
        let Some(context) = self.find(services) else { return };
        let words = context.words();
        match h.parameters {
            Parameters::Read(p) => {
                add(words, word::PAGING_READS, 1);
                add(words, word::PAGING_READ_BYTES, u64::from(p.length));
            }
            Parameters::Write(p) => {
                add(words, word::PAGING_WRITES, 1);
                add(words, word::PAGING_WRITE_BYTES, u64::from(p.length));
            }
            _ => {}
        }
    }

    /// Counts a completed read or write (not paging) in its post callback, at IRQL ≤ `APC_LEVEL`.
    fn transferred(&self, op: &PostOperation<'_>) {
        let Some(context) = self.find(op.services()) else { return };
        let words = context.words();
        let h = op.header();
        let result = op.result();
        if result.status == Status::FLT_DISALLOW_FAST_IO {
            add(words, word::FAST_IO_DECLINED, 1);
            return;
        }
        let bytes = if result.status.is_success() { result.information as u64 } else { 0 };
        let (count, bytes_word, fast, noncached) = if op.major() == MajorFunction::Read {
            (word::READS, word::READ_BYTES, word::FAST_IO_READS, word::NONCACHED_READS)
        } else {
            (word::WRITES, word::WRITE_BYTES, word::FAST_IO_WRITES, word::NONCACHED_WRITES)
        };
        add(words, count, 1);
        add(words, bytes_word, bytes);
        if h.is_fast_io() {
            add(words, fast, 1);
        } else if h.is_noncached() {
            add(words, noncached, 1);
        }
    }

    /// Counts a cleanup; at the cleanup of the last handle the filter knows of, notes the
    /// stream's tally, then the totals of the contexts freed so far.
    fn cleanup(&self, services: &dyn Services) {
        let Some(context) = self.find(services) else { return };
        let words = context.words();
        add(words, word::CLEANUPS, 1);
        let Some(handles) = words.get(word::HANDLES) else { return };
        let before =
            handles.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| h.checked_sub(1));
        if before != Ok(1) {
            return;
        }
        Tally::note_stream(services, notes::LAST_HANDLE, &StreamTally::from_words(words));
        drop(context);
        let totals = self.totals();
        if totals.freed > 0 {
            let mut note = Note::new();
            note.push(notes::TOTALS);
            note.number(totals.freed);
            note.push(" of ");
            note.number(totals.created);
            note.push(" contexts, ");
            note.number(totals.untracked);
            note.push(" untracked: ");
            describe(&mut note, &totals.streams);
            services.note(note.as_str());
        }
    }

    /// Notes `tally` after `opening` and its serial number.
    fn note_stream(services: &dyn Services, opening: &str, tally: &StreamTally) {
        let mut note = Note::new();
        note.push(opening);
        note.number(tally.serial);
        note.push(": ");
        describe(&mut note, tally);
        services.note(note.as_str());
    }
}

/// Writes the counts of `t` into `note`:
/// `opens 2; reads 3 (fast 1, noncached 1) 1200 B; writes 1 (fast 0, noncached 0) 26 B;
/// paging reads 0 (0 B), writes 0 (0 B); fast I/O declined 0`.
fn describe(note: &mut Note, t: &StreamTally) {
    note.push("opens ");
    note.number(t.opens);
    for (name, n, fast, noncached, bytes) in [
        ("; reads ", t.reads, t.fast_io_reads, t.noncached_reads, t.read_bytes),
        ("; writes ", t.writes, t.fast_io_writes, t.noncached_writes, t.write_bytes),
    ] {
        note.push(name);
        note.number(n);
        note.push(" (fast ");
        note.number(fast);
        note.push(", noncached ");
        note.number(noncached);
        note.push(") ");
        note.number(bytes);
        note.push(" B");
    }
    note.push("; paging reads ");
    note.number(t.paging_reads);
    note.push(" (");
    note.number(t.paging_read_bytes);
    note.push(" B), writes ");
    note.number(t.paging_writes);
    note.push(" (");
    note.number(t.paging_write_bytes);
    note.push(" B); fast I/O declined ");
    note.number(t.fast_io_declined);
}

/// A note's text, on the stack: 224 ASCII bytes (a Windows debug line is cut at 256 with its
/// prefix); what does not fit is dropped.
struct Note {
    bytes: [u8; 224],
    len: usize,
}

impl Note {
    const fn new() -> Note {
        Note { bytes: [0; 224], len: 0 }
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let Some(slot) = self.bytes.get_mut(self.len) else { return };
            *slot = if b.is_ascii() { b } else { b'?' };
            self.len += 1;
        }
    }

    fn push(&mut self, s: &str) {
        self.push_bytes(s.as_bytes());
    }

    fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            if let Some(d) = digits.get_mut(start) {
                *d = b'0' + (n % 10) as u8;
            }
            n /= 10;
            if n == 0 || start == 0 {
                break;
            }
        }
        self.push_bytes(digits.get(start..).unwrap_or(&[]));
    }

    fn as_str(&self) -> &str {
        // ASCII only (`push_bytes`).
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl Filter for Tally {
    const REGISTRATION: Registration = REGISTRATION;
    const STREAM_CONTEXT_WORDS: usize = word::COUNT;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_parameters: &dyn ServiceParameters) -> Result<Tally> {
        Ok(Tally::new())
    }

    fn instance_setup(&self, _setup: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        match op.major() {
            MajorFunction::Read | MajorFunction::Write if op.header().is_paging() => {
                self.paging(op.header(), op.services());
                PreOutcome::NoPost
            }
            MajorFunction::Read | MajorFunction::Write => PreOutcome::WithPost(()),
            MajorFunction::Cleanup => {
                self.cleanup(op.services());
                PreOutcome::NoPost
            }
            _ => PreOutcome::NoPost,
        }
    }

    fn post_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _context: (),
        flags: PostFlags,
    ) -> PostOutcome<()> {
        // Draining: the operation may not have completed, and the instance is going away.
        if flags.contains(PostFlags::DRAINING) {
            return PostOutcome::Finished;
        }
        match op.major() {
            MajorFunction::Create if op.opened() => self.opened(op),
            MajorFunction::Read | MajorFunction::Write => {
                // No context above APC_LEVEL: an IRP's count waits for a safe IRQL (fast I/O
                // never completes there: it runs in the caller's thread).
                if op.services().irql() > Irql::APC && !op.header().is_fast_io() {
                    return PostOutcome::WhenSafe(());
                }
                self.transferred(op);
            }
            _ => {}
        }
        PostOutcome::Finished
    }

    fn post_operation_when_safe(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _context: (),
    ) -> PostOutcome<()> {
        self.transferred(op);
        PostOutcome::Finished
    }

    fn stream_context_freed(&self, words: &[AtomicU64]) {
        // Every word is summed; the sums of serials and generations mean nothing, and `totals`
        // leaves them out.
        for (total, w) in self.freed.iter().zip(words) {
            total.fetch_add(w.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.count(counter::FREED);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

    extern crate std;

    use super::*;
    use core::cell::RefCell;
    use fsfilter::testing::{self, FakeServices, StreamContexts};
    use fsfilter::{
        CreateParameters, IoStatus, IrpFlags, ParameterList, ReadWriteParameters, create,
    };
    use std::boxed::Box;
    use std::string::String;
    use std::vec::Vec;

    /// The contexts' words, as tallies.
    trait Tallies {
        /// The words of the context attached to `stream`, as a tally.
        fn tally(&self, stream: usize) -> Option<StreamTally>;
    }

    impl Tallies for StreamContexts {
        fn tally(&self, stream: usize) -> Option<StreamTally> {
            self.words_of(stream).map(StreamTally::from_words)
        }
    }

    /// A filter, its contexts, and the notes of every operation so far.
    struct World {
        tally: &'static Tally,
        contexts: &'static StreamContexts,
        notes: RefCell<Vec<String>>,
    }

    fn world() -> World {
        let tally: &'static Tally = Box::leak(Box::new(Tally::new()));
        World { tally, contexts: StreamContexts::for_filter(tally), notes: RefCell::default() }
    }

    /// How a read or write arrives.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Fast,
        Cached,
        NonCached,
        Paging,
    }

    const A: usize = 0xA000;
    const B: usize = 0xB000;

    fn header(
        major: MajorFunction,
        stream: usize,
        kind: Kind,
        parameters: Parameters,
    ) -> OperationHeader<'static> {
        let (base, irp_flags) = match kind {
            Kind::Fast => (testing::fast_io(major), IrpFlags::empty()),
            Kind::Cached => (testing::irp(major), IrpFlags::SYNCHRONOUS_API),
            Kind::NonCached => (testing::irp(major), IrpFlags::SYNCHRONOUS_API | IrpFlags::NOCACHE),
            Kind::Paging => (testing::irp(major), IrpFlags::PAGING_IO | IrpFlags::NOCACHE),
        };
        OperationHeader { irp_flags, file: stream + 1, stream, parameters, ..base }
    }

    impl World {
        /// The services of one operation on `stream` at `irql`; `refuse` is what
        /// `stream_context` answers instead, when set.
        fn services(&self, stream: usize, irql: Irql, refuse: Option<Error>) -> FakeServices<'_> {
            FakeServices::new()
                .at_irql(irql)
                .strict_irql()
                .stream_contexts(self.contexts, stream)
                .refusing_stream_contexts(refuse)
        }

        fn keep_notes(&self, f: &FakeServices<'_>) {
            self.notes.borrow_mut().extend(f.take_notes());
        }

        fn post(
            &self,
            h: OperationHeader<'static>,
            result: IoStatus,
            f: &FakeServices<'_>,
            flags: PostFlags,
        ) -> &'static str {
            let instance = testing::instance();
            let outcome = testing::post(self.tally, &instance, (h, result), f, (), flags);
            match outcome {
                PostOutcome::WhenSafe(()) => {
                    // The backend's worker, at PASSIVE_LEVEL.
                    let f = f.again_at(Irql::PASSIVE);
                    let again = testing::post_when_safe(self.tally, &instance, (h, result), &f, ());
                    assert_eq!(again.wdk_name(), "FLT_POSTOP_FINISHED_PROCESSING");
                    self.keep_notes(&f);
                    "WhenSafe"
                }
                other => other.wdk_name(),
            }
        }

        /// A create of `stream` with `disposition` that completed with `result` (post only).
        fn create(&self, stream: usize, disposition: u32, result: IoStatus) {
            self.create_refused(stream, disposition, result, None);
        }

        fn open(&self, stream: usize) {
            self.create(stream, create::FILE_OPEN, opened(create::FILE_OPENED));
        }

        fn create_refused(
            &self,
            stream: usize,
            disposition: u32,
            result: IoStatus,
            refuse: Option<Error>,
        ) {
            let parameters = Parameters::Create(CreateParameters {
                options: disposition << 24,
                ..CreateParameters::default()
            });
            let h = header(MajorFunction::Create, stream, Kind::Cached, parameters);
            let f = self.services(stream, Irql::PASSIVE, refuse);
            assert_eq!(
                self.post(h, result, &f, PostFlags::empty()),
                "FLT_POSTOP_FINISHED_PROCESSING"
            );
            self.keep_notes(&f);
        }

        /// A read or write of `length` asked on `stream`, completed with `result` at
        /// `post_irql`: the pre outcome and the post outcome (None when no post was asked).
        fn transfer(
            &self,
            major: MajorFunction,
            stream: usize,
            kind: Kind,
            length: u32,
            result: IoStatus,
            post_irql: Irql,
        ) -> (&'static str, Option<&'static str>) {
            let p = ReadWriteParameters { offset: 0, length, key: 0 };
            let parameters = if major == MajorFunction::Read {
                Parameters::Read(p)
            } else {
                Parameters::Write(p)
            };
            let h = header(major, stream, kind, parameters);
            let f = self.services(stream, Irql::PASSIVE, None);
            let pre = testing::pre(self.tally, &testing::instance(), h, &f);
            let name = pre.wdk_name();
            self.keep_notes(&f);
            let post = match pre {
                PreOutcome::WithPost(()) => {
                    let f = self.services(stream, post_irql, None);
                    let outcome = self.post(h, result, &f, PostFlags::empty());
                    self.keep_notes(&f);
                    Some(outcome)
                }
                _ => None,
            };
            (name, post)
        }

        fn read(&self, stream: usize, kind: Kind, bytes: usize) {
            self.transfer(MajorFunction::Read, stream, kind, 4096, done(bytes), Irql::PASSIVE);
        }

        fn write(&self, stream: usize, kind: Kind, bytes: usize) {
            let length = bytes as u32;
            self.transfer(MajorFunction::Write, stream, kind, length, done(bytes), Irql::PASSIVE);
        }

        fn cleanup(&self, stream: usize) {
            let h = header(MajorFunction::Cleanup, stream, Kind::Cached, Parameters::None);
            let f = self.services(stream, Irql::PASSIVE, None);
            assert_eq!(
                testing::pre(self.tally, &testing::instance(), h, &f).wdk_name(),
                "FLT_PREOP_SUCCESS_NO_CALLBACK"
            );
            self.keep_notes(&f);
        }

        fn take_notes(&self) -> Vec<String> {
            self.notes.take()
        }
    }

    fn opened(information: usize) -> IoStatus {
        IoStatus { status: Status::SUCCESS, information }
    }

    fn done(bytes: usize) -> IoStatus {
        IoStatus { status: Status::SUCCESS, information: bytes }
    }

    #[test]
    fn each_stream_counts_its_opens_reads_and_writes_by_kind() {
        let w = world();
        w.open(A);
        w.open(A);
        w.open(B);
        w.read(A, Kind::Fast, 100);
        w.read(A, Kind::Cached, 200);
        w.read(A, Kind::NonCached, 512);
        w.write(A, Kind::Fast, 26);
        w.write(A, Kind::NonCached, 512);
        w.write(A, Kind::Cached, 7);
        w.read(A, Kind::Paging, 4096);
        w.write(A, Kind::Paging, 4096);
        w.read(B, Kind::Cached, 9);
        let a = w.contexts.tally(A).unwrap();
        assert_eq!(
            a,
            StreamTally {
                serial: 1,
                generation: 0,
                opens: 2,
                handles: 2,
                cleanups: 0,
                reads: 3,
                read_bytes: 812,
                fast_io_reads: 1,
                noncached_reads: 1,
                writes: 3,
                write_bytes: 545,
                fast_io_writes: 1,
                noncached_writes: 1,
                paging_reads: 1,
                paging_read_bytes: 4096,
                paging_writes: 1,
                paging_write_bytes: 4096,
                fast_io_declined: 0,
            }
        );
        assert_eq!((a.cached_irp_reads(), a.cached_irp_writes()), (1, 1));
        let b = w.contexts.tally(B).unwrap();
        assert_eq!((b.serial, b.opens, b.reads, b.read_bytes), (2, 1, 1, 9));
        assert_eq!(w.tally.totals(), Totals { created: 2, ..Totals::default() });
        assert!(w.take_notes().is_empty());
        assert_eq!(w.contexts.live_references(), 0, "every reference released");
    }

    #[test]
    fn paging_io_is_counted_in_its_pre_callback_by_the_length_asked() {
        let w = world();
        w.open(A);
        let paging = |major| w.transfer(major, A, Kind::Paging, 8192, done(100), Irql::DISPATCH);
        // No post callback: its completion may come at DISPATCH_LEVEL, and cannot be deferred.
        assert_eq!(paging(MajorFunction::Read), ("FLT_PREOP_SUCCESS_NO_CALLBACK", None));
        assert_eq!(paging(MajorFunction::Write), ("FLT_PREOP_SUCCESS_NO_CALLBACK", None));
        let a = w.contexts.tally(A).unwrap();
        assert_eq!((a.paging_reads, a.paging_read_bytes), (1, 8192));
        assert_eq!((a.paging_writes, a.paging_write_bytes), (1, 8192));
        assert_eq!((a.reads, a.writes), (0, 0), "paging I/O is kept apart");
    }

    #[test]
    fn a_declined_fast_io_try_is_not_a_read_its_irp_is() {
        let w = world();
        w.open(A);
        let declined = IoStatus::new(Status::FLT_DISALLOW_FAST_IO);
        let r = w.transfer(MajorFunction::Read, A, Kind::Fast, 50, declined, Irql::PASSIVE);
        assert_eq!(r, ("FLT_PREOP_SUCCESS_WITH_CALLBACK", Some("FLT_POSTOP_FINISHED_PROCESSING")));
        w.read(A, Kind::Cached, 50);
        let wr = w.transfer(MajorFunction::Write, A, Kind::Fast, 5, declined, Irql::PASSIVE);
        assert_eq!(wr.1, Some("FLT_POSTOP_FINISHED_PROCESSING"));
        w.write(A, Kind::Cached, 5);
        let a = w.contexts.tally(A).unwrap();
        assert_eq!((a.reads, a.fast_io_reads, a.read_bytes), (1, 0, 50));
        assert_eq!((a.writes, a.fast_io_writes, a.write_bytes), (1, 0, 5));
        assert_eq!(a.fast_io_declined, 2);
    }

    #[test]
    fn a_failed_transfer_counts_without_bytes() {
        let w = world();
        w.open(A);
        let eof = IoStatus { status: Status::END_OF_FILE, information: 7 };
        w.transfer(MajorFunction::Read, A, Kind::Cached, 10, eof, Irql::PASSIVE);
        let a = w.contexts.tally(A).unwrap();
        assert_eq!((a.reads, a.read_bytes), (1, 0));
    }

    #[test]
    fn a_post_at_dispatch_level_is_counted_when_safe() {
        let w = world();
        w.open(A);
        let r = w.transfer(MajorFunction::Read, A, Kind::NonCached, 512, done(512), Irql::DISPATCH);
        assert_eq!(r, ("FLT_PREOP_SUCCESS_WITH_CALLBACK", Some("WhenSafe")));
        let a = w.contexts.tally(A).unwrap();
        assert_eq!((a.reads, a.noncached_reads, a.read_bytes), (1, 1, 512));
        assert_eq!(w.tally.totals().untracked, 0, "never asked at DISPATCH_LEVEL");
    }

    #[test]
    fn a_draining_post_counts_nothing() {
        let w = world();
        w.open(A);
        let p = ReadWriteParameters { offset: 0, length: 10, key: 0 };
        let h = header(MajorFunction::Read, A, Kind::Cached, Parameters::Read(p));
        let f = w.services(A, Irql::PASSIVE, None);
        assert_eq!(w.post(h, done(10), &f, PostFlags::DRAINING), "FLT_POSTOP_FINISHED_PROCESSING");
        assert_eq!(w.contexts.tally(A).unwrap().reads, 0);
    }

    #[test]
    fn a_create_that_opened_nothing_attaches_nothing() {
        let w = world();
        w.create(A, create::FILE_OPEN, IoStatus::new(Status::OBJECT_NAME_NOT_FOUND));
        w.create(A, create::FILE_OPEN, IoStatus::reparse());
        assert!(w.contexts.tally(A).is_none());
        assert_eq!(w.tally.totals(), Totals::default());
        // A stream whose file system keeps no filter contexts, a teardown under way: not tallied.
        for e in [Error::NOT_SUPPORTED, Error::FLT_DELETING_OBJECT] {
            w.create_refused(A, create::FILE_OPEN, opened(create::FILE_OPENED), Some(e));
        }
        assert_eq!(w.tally.totals(), Totals { not_tallied: 2, ..Totals::default() });
    }

    #[test]
    fn a_stream_opened_before_the_instance_attached_is_untracked() {
        let w = world();
        w.read(A, Kind::Cached, 10);
        w.write(A, Kind::Paging, 4096);
        w.cleanup(A);
        assert!(w.contexts.tally(A).is_none(), "Get never attaches");
        assert_eq!(w.tally.totals(), Totals { untracked: 3, ..Totals::default() });
        // A stream without filter contexts (a volume open, a paging file) is not one to count.
        let h = header(MajorFunction::Cleanup, A, Kind::Cached, Parameters::None);
        let f = w.services(A, Irql::PASSIVE, Some(Error::NOT_SUPPORTED));
        testing::pre(w.tally, &testing::instance(), h, &f);
        assert_eq!(w.tally.totals().untracked, 3);
        // A later open attaches one; it knows one handle, whose cleanup is its last.
        w.open(A);
        w.cleanup(A);
        assert_eq!(w.take_notes().len(), 1);
        w.cleanup(A);
        assert!(w.take_notes().is_empty(), "below zero is no handle");
        let a = w.contexts.tally(A).unwrap();
        assert_eq!((a.handles, a.cleanups), (0, 2));
    }

    #[test]
    fn the_last_handles_cleanup_notes_the_tally() {
        let w = world();
        w.open(A);
        w.open(A);
        w.read(A, Kind::Fast, 100);
        w.read(A, Kind::NonCached, 512);
        w.write(A, Kind::Cached, 26);
        w.write(A, Kind::Paging, 4096);
        w.cleanup(A);
        assert!(w.take_notes().is_empty(), "one handle left");
        w.cleanup(A);
        assert_eq!(
            w.take_notes(),
            ["tally: last handle of stream 1: opens 2; reads 2 (fast 1, noncached 1) 612 B; \
                 writes 1 (fast 0, noncached 0) 26 B; paging reads 0 (0 B), writes 1 (4096 B); \
                 fast I/O declined 0"]
        );
        // Nothing freed yet: no totals. The stream goes; the next last handle shows them.
        w.contexts.tear_down(Some(A));
        w.open(B);
        w.read(B, Kind::Cached, 3);
        w.cleanup(B);
        let notes = w.take_notes();
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with("tally: last handle of stream 2: opens 1; reads 1"));
        assert_eq!(
            notes[1],
            "tally: freed 1 of 2 contexts, 0 untracked: opens 2; reads 2 (fast 1, noncached 1) \
             612 B; writes 1 (fast 0, noncached 0) 26 B; paging reads 0 (0 B), writes 1 (4096 B); \
             fast I/O declined 0"
        );
    }

    #[test]
    fn an_overwrite_restarts_the_tally_and_carries_the_handles_over() {
        let w = world();
        w.open(A);
        w.write(A, Kind::Cached, 10);
        w.create(A, create::FILE_OVERWRITE_IF, opened(create::FILE_OVERWRITTEN));
        assert_eq!(
            w.take_notes(),
            ["tally: overwritten, restarting stream 1: opens 1; reads 0 (fast 0, noncached 0) \
                 0 B; writes 1 (fast 0, noncached 0) 10 B; paging reads 0 (0 B), writes 0 (0 B); \
                 fast I/O declined 0"]
        );
        // The old context was deleted and, unreferenced, freed into the totals.
        let t = w.tally.totals();
        assert_eq!((t.created, t.freed, t.restarted), (2, 1, 1));
        assert_eq!((t.streams.opens, t.streams.writes, t.streams.handles), (1, 1, 1));
        let a = w.contexts.tally(A).unwrap();
        assert_eq!((a.serial, a.generation, a.opens, a.handles, a.writes), (2, 1, 1, 2, 0));
        // A supersede too; an open, or a supersede that created the file, does not.
        w.create(A, create::FILE_SUPERSEDE, opened(FILE_SUPERSEDED));
        let a = w.contexts.tally(A).unwrap();
        assert_eq!((a.serial, a.generation, a.opens, a.handles), (3, 2, 1, 3));
        w.create(A, create::FILE_OPEN_IF, opened(create::FILE_OPENED));
        w.create(A, create::FILE_SUPERSEDE, opened(create::FILE_CREATED));
        let a = w.contexts.tally(A).unwrap();
        assert_eq!((a.serial, a.opens, a.handles), (3, 3, 5));
        assert_eq!(w.tally.totals().restarted, 2);
        // The supersede's note, then five cleanups: one note at the last, with the totals.
        for _ in 0..5 {
            w.cleanup(A);
        }
        let notes = w.take_notes();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("tally: overwritten, restarting stream 2: opens 1;"));
        assert!(notes[1].starts_with("tally: last handle of stream 3: opens 3;"));
        assert!(notes[2].starts_with("tally: freed 2 of 3 contexts"));
    }

    #[test]
    fn replaced_means_superseded_or_overwritten() {
        let h = |disposition: u32| {
            let parameters = Parameters::Create(CreateParameters {
                options: disposition << 24,
                ..CreateParameters::default()
            });
            header(MajorFunction::Create, A, Kind::Cached, parameters)
        };
        assert!(replaced(&h(create::FILE_OVERWRITE), create::FILE_OVERWRITTEN));
        assert!(replaced(&h(create::FILE_OVERWRITE_IF), create::FILE_OVERWRITTEN));
        assert!(replaced(&h(create::FILE_SUPERSEDE), FILE_SUPERSEDED));
        assert!(!replaced(&h(create::FILE_SUPERSEDE), create::FILE_CREATED));
        assert!(!replaced(&h(create::FILE_OPEN), create::FILE_OPENED));
        assert!(!replaced(&h(create::FILE_OPEN_IF), 0), "0 is FILE_SUPERSEDED for a supersede");
        assert!(!replaced(&h(create::FILE_OVERWRITE_IF), create::FILE_CREATED));
    }

    #[test]
    fn every_context_is_counted_in_the_totals_once_whenever_it_is_freed() {
        let w = world();
        w.open(A);
        w.open(B);
        w.read(A, Kind::Cached, 5);
        w.read(B, Kind::Cached, 7);
        w.write(B, Kind::Cached, 3);
        w.cleanup(A);
        // A's stream is torn down (its last close); B's handle is still open at the teardown
        // of the instance (an unload).
        w.contexts.tear_down(Some(A));
        let t = w.tally.totals();
        assert_eq!((t.created, t.freed, t.streams.reads, t.streams.read_bytes), (2, 1, 1, 5));
        w.contexts.tear_down(None);
        w.contexts.tear_down(None);
        let t = w.tally.totals();
        assert_eq!((t.created, t.freed), (2, 2));
        assert_eq!(t.streams.opens, 2);
        assert_eq!((t.streams.reads, t.streams.read_bytes), (2, 12));
        assert_eq!((t.streams.writes, t.streams.write_bytes), (1, 3));
        assert_eq!((t.streams.cleanups, t.streams.handles), (1, 1), "B's handle was open");
        assert_eq!((t.streams.serial, t.streams.generation), (0, 0));
        // A context still referenced when it is detached is freed by its last release.
        let w = world();
        w.open(A);
        let held = w.contexts.request(A, ContextRequest::Get).unwrap();
        w.contexts.tear_down(None);
        assert_eq!(w.tally.totals().freed, 0);
        drop(held);
        assert_eq!(w.tally.totals().freed, 1);
    }

    #[test]
    fn notes_hold_the_largest_counts() {
        let words: Vec<AtomicU64> = (0..word::COUNT).map(|_| AtomicU64::new(u64::MAX)).collect();
        let t = StreamTally::from_words(&words);
        let mut note = Note::new();
        note.push(notes::RESTARTED);
        note.number(t.serial);
        note.push(": ");
        describe(&mut note, &t);
        let text = note.as_str();
        assert!(text.starts_with("tally: overwritten, restarting stream 18446744073709551615: "));
        assert_eq!(text.len(), 224, "cut at the buffer's end");
        let mut n = Note::new();
        n.number(0);
        n.push(" é");
        assert_eq!(n.as_str(), "0 ??");
        // A missing word reads 0.
        assert_eq!(StreamTally::from_words(&[]), StreamTally::default());
    }

    #[test]
    fn declarations() {
        const { assert!(fsfilter::stream_context_words::<Tally>() == word::COUNT) };
        const { assert!(word::COUNT <= fsfilter::MAX_STREAM_CONTEXT_WORDS) };
        assert!(PARAMETERS.is_empty());
        let values = [];
        let loaded = <Tally as Filter>::load(&ParameterList { service: "Tally", values: &values });
        assert_eq!(loaded.unwrap().totals(), Totals::default());
        let r = REGISTRATION;
        let get = |m| r.get(m).map(|o| (o.pre, o.post));
        assert_eq!(get(MajorFunction::Create), Some((false, true)));
        assert_eq!(get(MajorFunction::Read), Some((true, true)));
        assert_eq!(get(MajorFunction::Write), Some((true, true)));
        assert_eq!(get(MajorFunction::Cleanup), Some((true, false)));
        assert_eq!(r.operations().len(), 4);
    }
}
