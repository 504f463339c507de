//! FsRtl per-stream contexts (docs/simulator.md, "Per-stream contexts (FsRtl)"): the
//! `FSRTL_PER_STREAM_CONTEXT` structures filters link into the `FilterContexts` list of a
//! stream's `FSRTL_ADVANCED_FCB_HEADER` (`FsRtlInsertPerStreamContext`,
//! `FsRtlLookupPerStreamContextInternal`, `FsRtlRemovePerStreamContext`), and their teardown
//! when the file system frees the stream's FCB (`FsRtlTeardownPerStreamContexts`, WRK
//! `fsrtl/filtrctx.c`).
//!
//! The list is the real one, in the FCB block: drivers may read it (the
//! `FsRtlLookupPerStreamContext` macro tests `IsListEmpty` itself). Beside it the kernel records
//! each context it linked: the stream and the image that inserted it (whose `FreeCallback` it
//! is), for the verifier's rules.

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Storage::FileSystem::{FSRTL_ADVANCED_FCB_HEADER, FSRTL_PER_STREAM_CONTEXT};
use windows_sys::Win32::System::Kernel::LIST_ENTRY;

use crate::events::Rule;
use crate::ids::ImageId;
use crate::kernel::{FastMap, Kernel};
use crate::mem::Block;

/// `FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS`.
pub const FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS: u8 = 0x02;

/// A context linked by `FsRtlInsertPerStreamContext`.
#[derive(Clone, Copy, Debug)]
pub struct Linked {
    /// The stream's `FSRTL_ADVANCED_FCB_HEADER` (its FCB block, `FsContext`).
    pub stream: usize,
    /// The image that inserted it, whose `FreeCallback` it holds (None: kernel code).
    pub image: Option<ImageId>,
    /// Insertion order, for reports in a stable order (addresses change from run to run).
    pub seq: u64,
}

/// The per-stream contexts linked on the simulated file systems' streams.
#[derive(Default)]
pub struct PerStreamContexts {
    /// The contexts linked now, by address.
    pub linked: FastMap<usize, Linked>,
    next_seq: u64,
    /// The Filter Manager's own per-stream context of each stream it keeps stream contexts on
    /// ([`FltStreamList`]), by stream.
    flt_lists: FastMap<usize, Block>,
}

/// The Filter Manager's per-stream context: on Windows it keeps its stream contexts in a
/// structure of its own linked into the same `FilterContexts` list, so the file system's
/// teardown reaches them through its `FreeCallback`.
#[repr(C)]
struct FltStreamList {
    ctx: FSRTL_PER_STREAM_CONTEXT,
    stream: usize,
}

/// What [`Kernel::per_stream_take_first`] unlinked: the context, its image and its routine.
pub(crate) struct Unlinked {
    /// The context's address.
    pub ptr: usize,
    /// The image whose `FreeCallback` it is (None: unrecorded, or kernel code).
    pub image: Option<ImageId>,
    /// Its `FreeCallback`.
    pub free: Option<fsfilter_kernel::ntos::FreeFunction>,
}

/// The `FilterContexts` list head of a header.
fn head(header: usize) -> *mut LIST_ENTRY {
    let h = header as *mut FSRTL_ADVANCED_FCB_HEADER;
    // SAFETY: only the field's address is taken; callers checked that `header` is an FCB block.
    unsafe { &raw mut (*h).FilterContexts }
}

/// The entries of a list, head first (at most `bound` of them: a list a driver corrupted by
/// hand ends there instead of looping).
fn entries(head: *mut LIST_ENTRY, bound: usize) -> Vec<usize> {
    let mut out = Vec::new();
    // SAFETY: the list head of a live FCB block; its entries are the contexts linked on it,
    // whose memory the verifier keeps linked only while it is live (pool frees unlink them).
    let mut e = unsafe { (*head).Flink };
    while !e.is_null() && e != head && out.len() < bound {
        out.push(e as usize);
        // SAFETY: as above.
        e = unsafe { (*e).Flink };
    }
    out
}

/// A list entry as a reference.
fn entry<'a>(e: *mut LIST_ENTRY) -> &'a mut LIST_ENTRY {
    // SAFETY: callers pass a live list head or an entry of a live list (see `entries`), which
    // nothing else touches while the kernel is borrowed.
    unsafe { &mut *e }
}

/// `InsertHeadList`.
fn insert_head(head: *mut LIST_ENTRY, e: *mut LIST_ENTRY) {
    let first = entry(head).Flink;
    let new = entry(e);
    new.Flink = first;
    new.Blink = head;
    entry(first).Blink = e;
    entry(head).Flink = e;
}

/// `RemoveEntryList` (the entry's own links are left as they were, as Windows leaves them).
fn remove_entry(e: *mut LIST_ENTRY) {
    let (next, prev) = (entry(e).Flink, entry(e).Blink);
    entry(prev).Flink = next;
    entry(next).Blink = prev;
}

impl Kernel {
    /// True when `header` is the header of an FCB of the simulated file systems, live or being
    /// torn down (a `FreeCallback` may still remove contexts from it).
    pub(crate) fn is_fcb_header(&self, header: usize) -> bool {
        header != 0 && (self.fs.fcbs.contains_key(&header) || self.fs.is_retiring(header))
    }

    /// True when `header` is an FCB header with `FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS`. A
    /// header that is no FCB of the simulated file systems counts as one without the flag.
    pub(crate) fn supports_filter_contexts(&self, header: usize) -> bool {
        if !self.is_fcb_header(header) {
            return false;
        }
        let h = header as *const FSRTL_ADVANCED_FCB_HEADER;
        // SAFETY: a live FCB block starts with its header.
        unsafe { (*h).Base.Flags2 & FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS != 0 }
    }

    /// `FsRtlInsertPerStreamContext` (WRK): `STATUS_INVALID_DEVICE_REQUEST` without filter
    /// contexts; otherwise the context goes at the head of the list, with no search for
    /// duplicates.
    pub(crate) fn per_stream_insert(&mut self, header: usize, ctx: usize) -> Status {
        if !self.supports_filter_contexts(header) {
            return Status::INVALID_DEVICE_REQUEST;
        }
        if ctx == 0 {
            self.report_current(
                Rule::Bugcheck,
                "FsRtlInsertPerStreamContext with a NULL context, which Windows dereferences",
            );
            return Status::INVALID_PARAMETER;
        }
        if let Some(l) = self.perstream.linked.get(&ctx) {
            // Windows links it again, corrupting the list it is on; the simulator leaves both
            // lists as they are.
            let same = if l.stream == header { "this stream" } else { "another stream" };
            self.report_current(
                Rule::PerStreamContextMisuse,
                format!(
                    "FsRtlInsertPerStreamContext of a context already linked on {same} (the \
                     list would be corrupted); left as it was"
                ),
            );
            return Status::SUCCESS;
        }
        // SAFETY: the caller's context, initialized (FsRtlInitPerStreamContext).
        let c = unsafe { &*(ctx as *const FSRTL_PER_STREAM_CONTEXT) };
        let missing: Vec<&str> =
            [("OwnerId", c.OwnerId.is_null()), ("FreeCallback", c.FreeCallback.is_none())]
                .into_iter()
                .filter_map(|(n, null)| null.then_some(n))
                .collect();
        if !missing.is_empty() {
            self.report_current(
                Rule::PerStreamContextMisuse,
                format!(
                    "FsRtlInsertPerStreamContext of a context with a NULL {} \
                     (FSRTL_PER_STREAM_CONTEXT: both must be set); linked all the same",
                    missing.join(" and a NULL ")
                ),
            );
        }
        insert_head(head(header), ctx as *mut LIST_ENTRY);
        let image = self.current_image();
        let seq = self.perstream.next_seq;
        self.perstream.next_seq += 1;
        self.perstream.linked.insert(ctx, Linked { stream: header, image, seq });
        Status::SUCCESS
    }

    /// The first context of the list that matches (WRK `FsRtlLookupPerStreamContextInternal`):
    /// with an `instance`, the first whose `OwnerId` and `InstanceId` are both equal; with an
    /// `owner` only, the first whose `OwnerId` is; with neither, the first. 0 when none, or
    /// without filter contexts.
    pub(crate) fn per_stream_find(&self, header: usize, owner: usize, instance: usize) -> usize {
        if !self.supports_filter_contexts(header) {
            return 0;
        }
        let all = entries(head(header), self.perstream.linked.len() + 1);
        let matches = |&e: &usize| {
            // SAFETY: an entry of the list (see `entries`): a linked FSRTL_PER_STREAM_CONTEXT.
            let c = unsafe { &*(e as *const FSRTL_PER_STREAM_CONTEXT) };
            let (o, i) = (c.OwnerId as usize, c.InstanceId as usize);
            if instance != 0 { o == owner && i == instance } else { owner == 0 || o == owner }
        };
        all.into_iter().find(matches).unwrap_or(0)
    }

    /// Unlinks a context found on `header`'s list (`FsRtlRemovePerStreamContext`, the teardown).
    pub(crate) fn per_stream_unlink(&mut self, ctx: usize) -> Option<Linked> {
        remove_entry(ctx as *mut LIST_ENTRY);
        self.perstream.linked.remove(&ctx)
    }

    /// `FsRtlRemovePerStreamContext`: the context found is unlinked; one another driver inserted
    /// is reported (its `FreeCallback` will never be called for it).
    pub(crate) fn per_stream_remove(
        &mut self,
        header: usize,
        owner: usize,
        instance: usize,
    ) -> usize {
        let found = self.per_stream_find(header, owner, instance);
        if found == 0 {
            return 0;
        }
        let inserter = self.per_stream_unlink(found).and_then(|l| l.image);
        let caller = self.current_image();
        if let (Some(theirs), Some(_)) = (inserter, caller) {
            if inserter != caller {
                let name = self.image_name(theirs);
                self.report_current(
                    Rule::PerStreamContextMisuse,
                    format!(
                        "FsRtlRemovePerStreamContext took a context {name} inserted (OwnerId \
                         {owner:#x}, InstanceId {instance:#x}): its FreeCallback will never be \
                         called for it"
                    ),
                );
            }
        }
        found
    }

    /// `FsRtlLookupPerStreamContext` and `FsRtlRemovePerStreamContext` with an `InstanceId` and no
    /// `OwnerId`, which "must be non-NULL if a non-NULL value is supplied for InstanceId" (the
    /// macro's page): reported; the search goes on as Windows' does (both ids compared).
    pub(crate) fn per_stream_check_ids(&mut self, routine: &str, owner: usize, instance: usize) {
        if owner == 0 && instance != 0 {
            self.report_current(
                Rule::PerStreamContextMisuse,
                format!(
                    "{routine} with an InstanceId and a NULL OwnerId (OwnerId must be set then)"
                ),
            );
        }
    }

    /// Pool at `start` of `size` bytes is being freed: a context still linked in it is reported
    /// and unlinked, so that the teardown does not walk freed memory (Windows crashes when the
    /// stream goes, "Deleting a Per-Stream Context").
    pub(crate) fn per_stream_pool_freed(&mut self, start: usize, size: usize) {
        let inside = |a: usize| a >= start && a - start < size.max(1);
        let mut caught: Vec<(u64, usize)> = self
            .perstream
            .linked
            .iter()
            .filter(|(p, _)| inside(**p))
            .map(|(p, l)| (l.seq, *p))
            .collect();
        if caught.is_empty() {
            return;
        }
        caught.sort_unstable();
        for (_, p) in &caught {
            self.per_stream_unlink(*p);
        }
        self.report_current(
            Rule::PerStreamContextFreedWhileLinked,
            format!(
                "pool freed while it holds {} FSRTL_PER_STREAM_CONTEXT(s) still linked on a stream \
                 (remove it with FsRtlRemovePerStreamContext first; Windows crashes when the \
                 stream is closed); unlinked",
                caught.len()
            ),
        );
    }

    /// The per-stream contexts an image inserted that are still linked, as the image goes.
    pub(crate) fn per_stream_linked_by(&self, image: ImageId) -> usize {
        self.perstream.linked.values().filter(|l| l.image == Some(image)).count()
    }

    /// The teardown's next step (WRK `FsRtlTeardownPerStreamContexts`): unlinks the head of the
    /// list, whose `FreeCallback` the caller then calls without the lock.
    pub(crate) fn per_stream_take_first(&mut self, header: usize) -> Option<Unlinked> {
        if !self.is_fcb_header(header) {
            return None;
        }
        let first = entries(head(header), 1).first().copied()?;
        let rec = self.per_stream_unlink(first);
        let c = first as *const FSRTL_PER_STREAM_CONTEXT;
        // SAFETY: the entry just unlinked, still the driver's live memory.
        let free = fsfilter_kernel::ntos::free_function_from_field(unsafe { (*c).FreeCallback });
        Some(Unlinked { ptr: first, image: rec.and_then(|r| r.image), free })
    }
}

impl Kernel {
    /// Links the Filter Manager's per-stream context on `stream`, once, when it first sets a
    /// stream context there: at the head, as any insertion. Its `OwnerId` is the Filter
    /// Manager's driver object, its `InstanceId` NULL (choices: Windows' values are its own).
    pub(crate) fn flt_stream_list(&mut self, stream: usize) {
        if self.perstream.flt_lists.contains_key(&stream) || !self.supports_filter_contexts(stream)
        {
            return;
        }
        let block = Block::zeroed(size_of::<FltStreamList>());
        let owner = self.fltmgr.driver.map_or(0, |d| self.objects.driver(d).ptr as usize);
        // SAFETY: a fresh block sized for a FltStreamList, which all-zero bytes are.
        let list = unsafe { &mut *block.ptr().cast::<FltStreamList>() };
        list.ctx.OwnerId = owner as *mut c_void;
        list.ctx.FreeCallback = fsfilter_kernel::ntos::free_function_field(flt_stream_list_free);
        list.stream = stream;
        let ptr = block.ptr() as usize;
        insert_head(head(stream), ptr as *mut LIST_ENTRY);
        let seq = self.perstream.next_seq;
        self.perstream.next_seq += 1;
        let image = self.fltmgr.image;
        self.perstream.linked.insert(ptr, Linked { stream, image, seq });
        self.perstream.flt_lists.insert(stream, block);
    }
}

impl Kernel {
    /// The FCB at `stream` goes back to the pool: a Filter Manager per-stream context still
    /// recorded for it (one a driver removed from the list, a misuse, so that no teardown freed
    /// it) goes too, so that a later FCB at the same address gets one of its own.
    pub(crate) fn flt_stream_list_gone(&mut self, stream: usize) {
        if !self.perstream.flt_lists.is_empty() {
            self.perstream.flt_lists.remove(&stream);
        }
    }
}

/// The `FreeCallback` of the Filter Manager's per-stream context: its stream contexts on the
/// stream are released (their cleanups run from a worker, docs/simulator.md "Contexts").
unsafe extern "system" fn flt_stream_list_free(buffer: *mut c_void) {
    // SAFETY: the teardown passes the context it unlinked, one of ours.
    let stream = unsafe { (*buffer.cast::<FltStreamList>()).stream };
    let block = crate::kernel::with(|k| {
        k.flt_stream_gone(stream);
        let ours = k.perstream.flt_lists.get(&stream).is_some_and(|b| b.ptr().cast() == buffer);
        if ours { k.perstream.flt_lists.remove(&stream) } else { None }
    });
    drop(block);
}

/// Calls a context's `FreeCallback` in its image, outside any borrow of the kernel: not when
/// the image unloaded (`UNLOADED_DRIVER_CODE_RAN`; Windows would run freed code).
pub(crate) fn call_free_callback(u: Unlinked) {
    let Some(free) = u.free else { return };
    let what = "FsRtlTeardownPerStreamContexts would call the FreeCallback of a per-stream \
                context whose image unloaded";
    if !crate::kernel::with(|k| k.code_may_run(u.image, what)) {
        return;
    }
    // SAFETY: the routine the context's owner stored, with the context, once: the context is
    // unlinked and the owner's to free.
    crate::kernel::call_into(u.image, || unsafe { free(u.ptr as *mut c_void) });
}
