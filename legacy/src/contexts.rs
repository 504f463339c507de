//! Stream contexts in the legacy model (docs/callback-model.md, rule 28): an
//! `FSRTL_PER_STREAM_CONTEXT` on the stream's `FSRTL_ADVANCED_FCB_HEADER`, at the head of a block
//! of the backend's own, for a filter that declares `Filter::STREAM_CONTEXT_WORDS`. Nothing here
//! is reached, and so nothing of it is linked, in a filter that declares none: every caller tests
//! `fsfilter::stream_context_words::<F>()` first.
//!
//! A block is the FsRtl header (owner: our device attached to the volume, so one owner per
//! instance; instance: the block itself, so that a removal removes exactly it; `FreeCallback`:
//! [`free_callback`]), a reference count, a link in the driver's list of attached blocks, the FCB
//! header it is inserted on, then the words, zeroed. One reference is the attachment's; each
//! `StreamContext` guard holds one more. The block is freed, after `stream_context_freed`, when
//! the last goes.
//!
//! The driver's context lock (a fast mutex: `ExAcquireFastMutex` raises to `APC_LEVEL`, so no
//! normal kernel APC, a thread suspension among them, stops its owner while it holds it and every
//! thread that touches stream contexts, the file system's teardown included, waits behind it)
//! guards the list and every block's `attached` flag, and serializes:
//! - a lookup and the reference it takes with an insert (FsRtl keeps duplicates: a
//!   `GetOrCreate` looks up and inserts under the lock, so that one context per instance and
//!   stream wins);
//! - the backend's own removals (a delete, an instance's teardown) with the file system's
//!   `FsRtlTeardownPerStreamContexts`: that routine unlinks a context under the header's fast
//!   mutex, releases it, then calls the `FreeCallback`, which takes this lock. So a block that
//!   is still attached under this lock is either on its stream's list, or unlinked by a teardown
//!   whose call of [`free_callback`] has not got this lock yet: either way the FCB it names is
//!   alive (the file system frees it only after the teardown returns), and
//!   `FsRtlRemovePerStreamContext` on it answers the block (ours to detach) or NULL (the
//!   callback's to detach).
//!
//! Lock order: the file system's resources (which its teardown, and paging I/O's callers, may
//! hold), then this lock, then the header's fast mutex (inside the FsRtl routines). Nothing here
//! calls the file system or takes its resources under this lock, and nothing waits under it (the
//! sweep sleeps with it released): what runs under it runs at `APC_LEVEL`, the FsRtl routines,
//! `ExAllocatePool2` and `ExFreePoolWithTag` of non-paged pool, and the filter's
//! `stream_context_freed` when a `FreeCallback` drops the last reference (rule 28: at IRQL ≤
//! `APC_LEVEL`).
//!
//! Handle contexts (rule 29, decision 0014), for a filter that declares
//! `Filter::HANDLE_CONTEXT_WORDS`: an `FSRTL_PER_FILEOBJECT_CONTEXT` on the operation's file object
//! (`FsRtlInsertPerFileObjectContext`, `FsRtlLookupPerFileObjectContext`,
//! `FsRtlRemovePerFileObjectContext`) at the head of a [`Block`] of the [`Handle`] kind, in a
//! second list under the same lock. FsRtl has no free callback for them: a filter must remove what
//! it attached to a file object when the close comes (WRK `filtrctx.c`), so the backend removes its
//! own at every `IRP_MJ_CLOSE` at our volume device ([`handle_closed`], after the filter's
//! pre-close, the last operation on the handle, and before the close goes down), and the instance's
//! teardown removes the rest: off their file objects as it starts, before the device detaches
//! ([`unlink_handles`]: after `IoDetachDevice` a close no longer comes through us), and freed as it
//! completes ([`sweep_handles`]). A block on its file object under the lock has a live file object:
//! its close, which the I/O manager sends through us before it deletes the object while we are
//! attached, removes it under the lock first.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use fsfilter::{
    ContextRequest, Error, Filter, StreamContext, StreamContextBackend, StreamContextId,
};
use fsfilter_kernel::constants::{POOL_FLAG_NON_PAGED, fo_flags};
use fsfilter_kernel::ntos::free_function_field;
use fsfilter_kernel::pool::pool_tag;
use fsfilter_kernel::sync::initialize_fast_mutex;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FAST_MUTEX, FILE_OBJECT};
use windows_sys::Wdk::Storage::FileSystem::{
    FSRTL_ADVANCED_FCB_HEADER, FSRTL_FLAG2_IS_PAGING_FILE, FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS,
    FSRTL_PER_FILEOBJECT_CONTEXT, FSRTL_PER_STREAM_CONTEXT, FsRtlInsertPerFileObjectContext,
    FsRtlInsertPerStreamContext, FsRtlLookupPerFileObjectContext,
    FsRtlLookupPerStreamContextInternal, FsRtlRemovePerFileObjectContext,
    FsRtlRemovePerStreamContext,
};
use windows_sys::Wdk::System::SystemServices::{
    ExAcquireFastMutex, ExAllocatePool2, ExFreePoolWithTag, ExReleaseFastMutex,
};

use crate::state::{DriverState, Image};

/// Pool tag of stream-context blocks: `FsfK`, the minifilter backend's stream-context tag (not
/// `FsfC`, the completion contexts' tag in fsfilter-kernel, so that pool tracking tells them
/// apart).
const CONTEXT_TAG: u32 = pool_tag(b"FsfK");
/// Pool tag of handle-context blocks: `FsfH`, the minifilter backend's stream-handle tag.
const HANDLE_TAG: u32 = pool_tag(b"FsfH");

/// `FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS`, in `FSRTL_COMMON_FCB_HEADER.Flags2`.
const SUPPORTS_FILTER_CONTEXTS: u8 = FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS as u8;
/// `FSRTL_FLAG2_IS_PAGING_FILE`: NTFS and FAT keep no filter contexts on paging files.
const IS_PAGING_FILE: u8 = FSRTL_FLAG2_IS_PAGING_FILE as u8;

/// How long a sweep waits before it looks again for a block whose teardown's `FreeCallback` has
/// not run yet.
const SWEEP_RETRY_MS: u32 = 1;

/// The driver's contexts: the lock and the two lists of attached blocks. All zero in the image
/// block (`state::Image`), the lock initialized by [`init`] only for a filter that declares
/// contexts.
pub(crate) struct Contexts {
    /// The context lock: a fast mutex.
    lock: UnsafeCell<FAST_MUTEX>,
    /// The first attached stream block, or null; under the lock.
    head: UnsafeCell<*mut Block<Stream>>,
    /// The first attached handle block, or null; under the lock.
    handles: UnsafeCell<*mut Block<Handle>>,
}

/// The head of a context's pool block; the words follow it. The same for both kinds but for what
/// FsRtl links and what it is linked on.
#[repr(C)]
struct Block<K: Kind> {
    /// What FsRtl links on the stream's header or the file object (owner: our volume device;
    /// instance: the block). First: a stream block's `FreeCallback` argument is the block.
    fsrtl: K::Fsrtl,
    /// The attachment's reference while attached, and one per `StreamContext` guard.
    refs: AtomicU32,
    /// In the driver's list, holding the attachment's reference; under the lock.
    attached: bool,
    /// Handle blocks: linked on their file object (FsRtl); under the lock. Taken off before the
    /// device detaches as the instance's teardown starts ([`unlink_handles`]). Always false in a
    /// stream block: a stream's teardown unlinks those itself, so a removal asks FsRtl instead.
    on_file: bool,
    /// The list's links; under the lock.
    prev: *mut Block<K>,
    next: *mut Block<K>,
    /// The stream's FCB header or the file object the block was inserted on.
    on: *mut K::On,
}

/// What tells the two kinds of context apart. The rest is shared: lookup or creation under the
/// lock ([`get_or_create`]), allocation and linking ([`create`]), the list ([`detach`]),
/// references ([`release`]), the teardown's [`sweep_kind`] and the guards' [`Backend`].
trait Kind: Sized + 'static {
    /// What FsRtl links: `FSRTL_PER_STREAM_CONTEXT` or `FSRTL_PER_FILEOBJECT_CONTEXT`.
    type Fsrtl;
    /// What a block is inserted on: the stream's FCB header or the file object.
    type On;
    /// The blocks' pool tag.
    const TAG: u32;

    /// How many words filter `F` declares for this kind.
    fn words<F: Filter>() -> usize;

    /// The driver's list of this kind's attached blocks.
    fn list(c: &Contexts) -> *mut *mut Block<Self>;

    /// A block's owner id: our volume device.
    fn owner(block: &Block<Self>) -> *mut c_void;

    /// Writes the FsRtl head of a fresh block (and `on_file`) for our device `owner`.
    fn init<F: Filter>(block: &mut Block<Self>, owner: *mut c_void, instance: *mut c_void);

    /// The first block of our device `owner` linked on `on`, or null.
    ///
    /// # Safety
    /// `on` must be live and keep filter contexts; the context lock held.
    unsafe fn lookup(on: *mut Self::On, owner: *const DEVICE_OBJECT) -> *mut Block<Self>;

    /// Inserts a fresh block on `on` (the error when FsRtl refuses it).
    ///
    /// # Safety
    /// As [`Kind::lookup`]; the block in non-paged pool until it is removed.
    unsafe fn insert(on: *mut Self::On, block: *mut Block<Self>) -> Result<(), Error>;

    /// Takes an attached block off what it is linked on, unless that is done already; false
    /// when the block is left to someone else to detach.
    ///
    /// # Safety
    /// `block` must be attached; the context lock held.
    unsafe fn take_off(block: *mut Block<Self>) -> bool;

    /// Calls the filter's freed callback of this kind with the words of a block that goes.
    fn freed<F: Filter>(filter: &F, words: &[AtomicU64]);
}

/// Stream contexts (rule 28): on the stream's FCB header, with a `FreeCallback`.
struct Stream;

impl Kind for Stream {
    type Fsrtl = FSRTL_PER_STREAM_CONTEXT;
    type On = FSRTL_ADVANCED_FCB_HEADER;
    const TAG: u32 = CONTEXT_TAG;

    fn words<F: Filter>() -> usize {
        fsfilter::stream_context_words::<F>()
    }

    fn list(c: &Contexts) -> *mut *mut Block<Self> {
        c.head.get()
    }

    fn owner(block: &Block<Self>) -> *mut c_void {
        block.fsrtl.OwnerId
    }

    fn init<F: Filter>(block: &mut Block<Self>, owner: *mut c_void, instance: *mut c_void) {
        block.fsrtl.OwnerId = owner;
        block.fsrtl.InstanceId = instance;
        block.fsrtl.FreeCallback = free_function_field(free_callback::<F>);
    }

    /// `FsRtlLookupPerStreamContext` for our device: the list tested first, as the macro does.
    unsafe fn lookup(header: *mut Self::On, owner: *const DEVICE_OBJECT) -> *mut Block<Self> {
        // SAFETY: the caller's live header; the list head is only compared.
        let list = unsafe { &raw mut (*header).FilterContexts };
        // SAFETY: as above: the head's forward link, read as the macro reads it.
        if unsafe { (*list).Flink } == list {
            return core::ptr::null_mut();
        }
        // SAFETY: a live header keeping filter contexts, at IRQL ≤ APC_LEVEL; the first context
        // of our owner id, which is one of our blocks.
        unsafe { FsRtlLookupPerStreamContextInternal(header, owner.cast(), core::ptr::null()) }
            .cast()
    }

    unsafe fn insert(header: *mut Self::On, block: *mut Block<Self>) -> Result<(), Error> {
        // SAFETY: the caller's live header, at IRQL ≤ APC_LEVEL; the block stays in non-paged
        // pool until it is removed from the stream (or the stream is torn down).
        let status = unsafe { FsRtlInsertPerStreamContext(header, block.cast()) };
        // STATUS_INVALID_DEVICE_REQUEST: no filter contexts after all.
        if status < 0 { Err(Error::NOT_SUPPORTED) } else { Ok(()) }
    }

    /// Removes the block from its stream, unless the stream's teardown unlinked it already (its
    /// `FreeCallback` then detaches it).
    unsafe fn take_off(block: *mut Block<Self>) -> bool {
        // SAFETY: attached under the lock: alive, and its header too (module docs).
        let b = unsafe { &*block };
        // SAFETY: a live header, at IRQL ≤ APC_LEVEL; the exact block (owner and instance).
        let removed = unsafe { FsRtlRemovePerStreamContext(b.on, b.fsrtl.OwnerId, block.cast()) };
        removed.cast::<Block<Self>>() == block
    }

    fn freed<F: Filter>(filter: &F, words: &[AtomicU64]) {
        filter.stream_context_freed(words);
    }
}

/// Handle contexts (rule 29): on the file object, without a free callback.
struct Handle;

impl Kind for Handle {
    type Fsrtl = FSRTL_PER_FILEOBJECT_CONTEXT;
    type On = FILE_OBJECT;
    const TAG: u32 = HANDLE_TAG;

    fn words<F: Filter>() -> usize {
        fsfilter::handle_context_words::<F>()
    }

    fn list(c: &Contexts) -> *mut *mut Block<Self> {
        c.handles.get()
    }

    fn owner(block: &Block<Self>) -> *mut c_void {
        block.fsrtl.OwnerId
    }

    fn init<F: Filter>(block: &mut Block<Self>, owner: *mut c_void, instance: *mut c_void) {
        block.fsrtl.OwnerId = owner;
        block.fsrtl.InstanceId = instance;
        block.on_file = true;
    }

    unsafe fn lookup(file: *mut Self::On, owner: *const DEVICE_OBJECT) -> *mut Block<Self> {
        // SAFETY: the caller's live file object, at APC_LEVEL; the first context of our owner
        // id, one of our blocks, attached (it is on the file object) and so alive.
        unsafe { FsRtlLookupPerFileObjectContext(file, owner.cast(), core::ptr::null()) }.cast()
    }

    unsafe fn insert(file: *mut Self::On, block: *mut Block<Self>) -> Result<(), Error> {
        // SAFETY: the caller's live file object, at APC_LEVEL; the block stays in non-paged pool
        // until it is removed.
        let status = unsafe { FsRtlInsertPerFileObjectContext(file, block.cast()) };
        if status >= 0 {
            Ok(())
        } else if status == fsfilter::Status::INSUFFICIENT_RESOURCES.0 {
            Err(Error::INSUFFICIENT_RESOURCES)
        } else {
            Err(Error::NOT_SUPPORTED)
        }
    }

    /// Removes the block from its file object unless [`unlink_handles`] did: never left to
    /// anyone else.
    unsafe fn take_off(block: *mut Block<Self>) -> bool {
        // SAFETY: attached under the lock: alive; on its file object, the file object too
        // (module docs).
        let b = unsafe { &mut *block };
        if b.on_file {
            // SAFETY: as above; the exact block (owner and instance).
            let _ = unsafe { FsRtlRemovePerFileObjectContext(b.on, b.fsrtl.OwnerId, block.cast()) };
            b.on_file = false;
        }
        true
    }

    fn freed<F: Filter>(filter: &F, words: &[AtomicU64]) {
        filter.handle_context_freed(words);
    }
}

/// Initializes the context lock (free), for a filter that declares contexts.
pub(crate) fn init(contexts: &mut Contexts) {
    // SAFETY: the image block's fast mutex storage, in non-paged pool, 8-byte aligned (the
    // block is), used by nobody yet.
    unsafe { initialize_fast_mutex(contexts.lock.get_mut()) };
}

/// The driver's contexts, beside its state in the image block (`state::Image`).
fn contexts<'a, F: Filter>() -> Option<&'a Contexts> {
    let image = fsfilter_kernel::image::get().cast::<Image<F>>();
    if image.is_null() {
        return None;
    }
    // SAFETY: this image's block, alive until unload discards it after the last sweep; only its
    // `contexts` field is borrowed.
    Some(unsafe { &(*image).contexts })
}

/// Takes the context lock, at IRQL ≤ `APC_LEVEL`; the caller goes on at `APC_LEVEL` until
/// [`unlock`].
#[inline(never)]
fn lock(c: &Contexts) {
    // SAFETY: the image block's initialized fast mutex, in non-paged pool, at IRQL ≤ APC_LEVEL
    // (every caller checked or runs there), never held by this thread already (no caller takes
    // it twice).
    unsafe { ExAcquireFastMutex(c.lock.get()) };
}

/// Releases the context lock, from the thread that took it, at `APC_LEVEL` (where [`lock`] left
/// it): back to the IRQL it was taken at.
#[inline(never)]
fn unlock(c: &Contexts) {
    // SAFETY: the image block's fast mutex, held by this thread.
    unsafe { ExReleaseFastMutex(c.lock.get()) };
}

/// The stream's FCB header when its file system keeps filter contexts on it
/// (`FsRtlSupportsPerStreamContexts`: `FsContext` set and `FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS`,
/// and not a paging file) and the file object is not a volume open.
///
/// # Safety
/// `file` must be a live file object the file system opened and has not closed.
unsafe fn stream_header(file: *mut FILE_OBJECT) -> Option<*mut FSRTL_ADVANCED_FCB_HEADER> {
    // SAFETY: the caller's live file object.
    let f = unsafe { &*file };
    let header = f.FsContext.cast::<FSRTL_ADVANCED_FCB_HEADER>();
    if header.is_null() || f.Flags & fo_flags::VOLUME_OPEN != 0 {
        return None;
    }
    // SAFETY: an opened file object's FsContext starts with the file system's common FCB header
    // (every Windows file system's, "File System Support for Contexts"); Flags2 is in it.
    let flags2 = unsafe { (*header).Base.Flags2 };
    (flags2 & (SUPPORTS_FILTER_CONTEXTS | IS_PAGING_FILE) == SUPPORTS_FILTER_CONTEXTS)
        .then_some(header)
}

/// The words of `block`.
///
/// # Safety
/// `block` must be a live block of filter `F`.
unsafe fn words_of<'a, K: Kind, F: Filter>(block: *mut Block<K>) -> &'a [AtomicU64] {
    // SAFETY: the block was allocated with room for the words right after its head (whose size
    // is a multiple of 8).
    let first = unsafe { block.add(1) }.cast::<AtomicU64>();
    // SAFETY: as above: the words, zeroed at the allocation, live while the block is referenced.
    unsafe { core::slice::from_raw_parts(first, K::words::<F>()) }
}

/// Answers `Services::stream_context` for the open file object `file` of an operation at our
/// volume device `device` (the caller checked the IRQL and the stage).
///
/// # Safety
/// `file` must be a live file object the file system opened and has not closed; `device` our
/// live volume device; at IRQL ≤ `APC_LEVEL`.
pub(crate) unsafe fn get<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    file: *mut FILE_OBJECT,
    request: ContextRequest,
) -> Result<StreamContext, Error> {
    // SAFETY: the caller's file object.
    let Some(header) = (unsafe { stream_header(file) }) else {
        return Err(Error::NOT_SUPPORTED);
    };
    // SAFETY: the caller's device; the live header of the open stream.
    unsafe { get_or_create::<Stream, F>(state, device, header, request) }
}

/// Answers `Services::stream_context` with a handle request for the open file object `file` of
/// an operation at our volume device `device`: refused as a stream context is (the caller checked
/// the IRQL and the stage; here the file system's support of filter contexts, paging files and
/// volume opens), so that both models refuse the same handles.
///
/// # Safety
/// As [`get`].
pub(crate) unsafe fn get_handle<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    file: *mut FILE_OBJECT,
    request: ContextRequest,
) -> Result<StreamContext, Error> {
    // SAFETY: the caller's file object.
    if unsafe { stream_header(file) }.is_none() {
        return Err(Error::NOT_SUPPORTED);
    }
    // SAFETY: the caller's device and live file object.
    unsafe { get_or_create::<Handle, F>(state, device, file, request) }
}

/// Looks up our context of kind `K` on `on` under the lock and references it; else, for a request
/// that creates and an instance whose teardown has not started, creates one.
///
/// # Safety
/// `device` our live volume device; `on` the live header or file object of an open file object
/// (keeping filter contexts); at IRQL ≤ `APC_LEVEL`.
unsafe fn get_or_create<K: Kind, F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    on: *mut K::On,
    request: ContextRequest,
) -> Result<StreamContext, Error> {
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(device) }) else { return Err(Error::NOT_SUPPORTED) };
    let Some(c) = contexts::<F>() else { return Err(Error::NOT_SUPPORTED) };
    lock(c);
    // SAFETY: the caller's live object, the lock held.
    let found = unsafe { K::lookup(on, device) };
    let result = if !found.is_null() {
        // Found under the lock: attached, so alive (module docs).
        // SAFETY: one of our blocks, alive.
        unsafe { (*found).refs.fetch_add(1, Ordering::Relaxed) };
        Ok((found, false))
    } else if !request.creates() {
        Err(Error::NOT_FOUND)
    } else if ext.is_torn_down() {
        // Read under the lock: the teardown's sweep, which takes it after the teardown started,
        // finds every block inserted before.
        Err(Error::FLT_DELETING_OBJECT)
    } else {
        // SAFETY: as above.
        unsafe { create::<K, F>(c, device, on) }.map(|b| (b, true))
    };
    unlock(c);
    let (block, created) = result?;
    Ok(StreamContext::new(StreamContextId(block as usize), backend::<K, F>(), created))
}

/// Allocates a block, inserts it on `on` and links it in the driver's list: attached, with the
/// attachment's reference and the caller's.
///
/// # Safety
/// As [`get_or_create`], with the context lock held.
#[expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the fields of a block nobody else sees yet are written in one step"
)]
unsafe fn create<K: Kind, F: Filter>(
    c: &Contexts,
    device: *const DEVICE_OBJECT,
    on: *mut K::On,
) -> Result<*mut Block<K>, Error> {
    let size = size_of::<Block<K>>() + K::words::<F>() * size_of::<u64>();
    // SAFETY: a non-zero size and a tag; the block comes back zeroed (words included) or null.
    let block = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, size, K::TAG) }.cast::<Block<K>>();
    if block.is_null() {
        return Err(Error::INSUFFICIENT_RESOURCES);
    }
    // SAFETY: the fresh block, ours alone: its head is written before FsRtl or the list sees it.
    unsafe {
        let b = &mut *block;
        K::init::<F>(b, device.cast_mut().cast(), block.cast());
        b.refs = AtomicU32::new(2);
        b.attached = true;
        b.on = on;
    }
    // SAFETY: the caller's live object, the block in non-paged pool.
    if let Err(e) = unsafe { K::insert(on, block) } {
        // SAFETY: our block, seen by nobody, freed once.
        unsafe { ExFreePoolWithTag(block.cast(), K::TAG) };
        return Err(e);
    }
    let head = K::list(c);
    // SAFETY: the list, under the lock; the new block goes first.
    unsafe {
        let first = *head;
        (*block).next = first;
        if !first.is_null() {
            (*first).prev = block;
        }
        *head = block;
    }
    Ok(block)
}

/// Takes an attached block out of the driver's list (the attachment's reference then belongs to
/// the caller, who releases it).
///
/// # Safety
/// `block` must be attached; the context lock held.
#[expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the links of a doubly-linked list, under its lock, change together"
)]
unsafe fn detach<K: Kind>(c: &Contexts, block: *mut Block<K>) {
    // SAFETY: an attached block and its neighbours, under the lock.
    unsafe {
        let (prev, next) = ((*block).prev, (*block).next);
        if prev.is_null() {
            *K::list(c) = next;
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        (*block).attached = false;
        (*block).prev = core::ptr::null_mut();
        (*block).next = core::ptr::null_mut();
    }
}

/// Takes an attached block off what it is linked on ([`Kind::take_off`]) and detaches it, unless
/// it is left to someone else (a stream's teardown's `FreeCallback`); says whether it detached it.
///
/// # Safety
/// `block` must be attached; the context lock held.
unsafe fn remove<K: Kind>(c: &Contexts, block: *mut Block<K>) -> bool {
    // SAFETY: the caller's attached block, the lock held.
    if !unsafe { K::take_off(block) } {
        return false;
    }
    // SAFETY: as above.
    unsafe { detach(c, block) };
    true
}

/// Drops one reference of `block`; the last frees it, after the filter's freed callback of its
/// kind.
///
/// # Safety
/// `block` must be a live block of this image's filter `F` and the caller must own the
/// reference it drops.
unsafe fn release<K: Kind, F: Filter>(block: *mut Block<K>) {
    // SAFETY: alive while the caller's reference lasts.
    if unsafe { (*block).refs.fetch_sub(1, Ordering::AcqRel) } != 1 {
        return;
    }
    // SAFETY: this image's state (alive while it has blocks: unload sweeps them first).
    if let Some(state) = unsafe { DriverState::<F>::current() } {
        // SAFETY: the last reference: nobody else reads the words now.
        K::freed(&state.filter, unsafe { words_of::<K, F>(block) });
    }
    // SAFETY: detached and unreferenced: ours alone, freed once.
    unsafe { ExFreePoolWithTag(block.cast(), K::TAG) };
}

/// The `FreeCallback` of every stream block, called by `FsRtlTeardownPerStreamContexts` once it
/// unlinked the block from the stream that goes away (at IRQL ≤ `APC_LEVEL`). It detaches the
/// block and drops the attachment's reference under the lock, so that a sweep that finds the
/// block gone from the list finds it freed too (or left to a guard whose callback the unload
/// drains): when that reference is the last, `stream_context_freed` runs under the lock, at
/// `APC_LEVEL`.
unsafe extern "system" fn free_callback<F: Filter>(buffer: *mut c_void) {
    let Some(c) = contexts::<F>() else { return };
    let block = buffer.cast::<Block<Stream>>();
    lock(c);
    // SAFETY: the block FsRtl unlinked: attached (our removal failed for it, or never came), so
    // alive; the lock held.
    if unsafe { (*block).attached } {
        // SAFETY: attached, the lock held.
        unsafe { detach(c, block) };
        // SAFETY: the attachment's reference, ours now.
        unsafe { release::<Stream, F>(block) };
    }
    unlock(c);
}

/// Removes every stream block our volume device `device` attached, as its instance's teardown
/// completes (detach, dismount, unload), so that no `FreeCallback` of ours is called after the
/// driver unloads. A block that a stream's teardown unlinked already is left to its
/// `FreeCallback`, which is on its way and takes the lock: the sweep looks again until it is
/// gone.
///
/// # Safety
/// `device` must be our volume device whose teardown started, at `PASSIVE_LEVEL`, once no
/// operation of it is in flight.
pub(crate) unsafe fn sweep<F: Filter>(device: *const DEVICE_OBJECT) {
    // SAFETY: the caller's.
    unsafe { sweep_kind::<Stream, F>(device) };
}

/// Removes every handle block our volume device `device` attached, as its instance's teardown
/// completes (detach, dismount, unload); [`unlink_handles`] took them off their file objects
/// when it started, and none is left to anyone else, so one pass does.
///
/// # Safety
/// As [`sweep`].
pub(crate) unsafe fn sweep_handles<F: Filter>(device: *const DEVICE_OBJECT) {
    // SAFETY: the caller's.
    unsafe { sweep_kind::<Handle, F>(device) };
}

/// Removes every block of kind `K` our volume device `device` attached, looking again after a
/// pause while some are left to someone else ([`remove`]).
///
/// # Safety
/// As [`sweep`].
unsafe fn sweep_kind<K: Kind, F: Filter>(device: *const DEVICE_OBJECT) {
    let Some(c) = contexts::<F>() else { return };
    loop {
        let mut removed: *mut Block<K> = core::ptr::null_mut();
        let mut left = false;
        lock(c);
        // SAFETY: the list, under the lock.
        let mut cur = unsafe { *K::list(c) };
        while !cur.is_null() {
            // SAFETY: an attached block, under the lock.
            let b = unsafe { &*cur };
            let (next, owner) = (b.next, K::owner(b));
            if owner.cast_const().cast() == device {
                // SAFETY: attached, the lock held.
                if unsafe { remove(c, cur) } {
                    // Chained through its free link, released after the lock.
                    // SAFETY: detached: its links are ours.
                    unsafe { (*cur).next = removed };
                    removed = cur;
                } else {
                    left = true;
                }
            }
            cur = next;
        }
        unlock(c);
        while !removed.is_null() {
            // SAFETY: a block detached above, whose attachment's reference is ours.
            let next = unsafe { (*removed).next };
            // SAFETY: as above.
            unsafe { release::<K, F>(removed) };
            removed = next;
        }
        if !left {
            return;
        }
        let _ = fsfilter_kernel::timer::sleep(SWEEP_RETRY_MS);
    }
}

/// An `IRP_MJ_CLOSE` of `file` at our volume device `device` is about to go on (the filter's
/// pre-close, the handle's last operation, is over): our handle context of the file
/// object, if any, is removed and its attachment's reference released (WRK
/// `FsRtlRemovePerFileObjectContext`: at `IRP_MJ_CLOSE`, before the I/O manager deletes the
/// file object).
///
/// # Safety
/// `file` must be the file object of a close our dispatch holds (alive until the I/O manager
/// deletes it after the close), at IRQL ≤ `APC_LEVEL`.
pub(crate) unsafe fn handle_closed<F: Filter>(
    device: *const DEVICE_OBJECT,
    file: *mut FILE_OBJECT,
) {
    if file.is_null() {
        return;
    }
    let Some(c) = contexts::<F>() else { return };
    lock(c);
    // SAFETY: the live file object, the lock held.
    let found = unsafe { Handle::lookup(file, device) };
    // SAFETY: attached (on the file object, under the lock): ours to detach.
    let detached = !found.is_null() && unsafe { (*found).attached } && unsafe { remove(c, found) };
    unlock(c);
    if detached {
        // SAFETY: the attachment's reference, ours now.
        unsafe { release::<Handle, F>(found) };
    }
}

/// Takes every handle block our volume device `device` attached off its file object as the
/// instance's teardown starts, before the device detaches: from then on the closes of those
/// file objects may no longer come through it (a handle closed while unload waits for an
/// operation in flight), and the I/O manager would delete a file object with our context still
/// linked. The blocks stay in the list, attached, until [`sweep_handles`] frees them as the
/// teardown completes; creations are refused from the teardown's start ([`get_handle`]), so
/// none is linked after this.
///
/// # Safety
/// `device` must be our volume device whose teardown just started (its `torn_down` stored), at
/// IRQL ≤ `APC_LEVEL`, still attached.
pub(crate) unsafe fn unlink_handles<F: Filter>(device: *const DEVICE_OBJECT) {
    let Some(c) = contexts::<F>() else { return };
    lock(c);
    // SAFETY: the list, under the lock.
    let mut cur = unsafe { *c.handles.get() };
    while !cur.is_null() {
        // SAFETY: an attached block, under the lock.
        let b = unsafe { &*cur };
        let (next, owner) = (b.next, b.fsrtl.OwnerId);
        if owner.cast_const().cast() == device {
            // SAFETY: attached, the lock held; on its file object, the file object is alive: its
            // close has not come through our device (that would have removed the block), and we
            // are still attached.
            let _ = unsafe { Handle::take_off(cur) };
        }
        cur = next;
    }
    unlock(c);
}

/// The guards' backend of contexts of kind `K` of filter `F`: their words, releases and deletes.
struct Backend<K, F>(PhantomData<fn() -> (K, F)>);

fn backend<K: Kind, F: Filter>() -> &'static dyn StreamContextBackend {
    const { &Backend::<K, F>(PhantomData) }
}

impl<K: Kind, F: Filter> StreamContextBackend for Backend<K, F> {
    fn words(&self, id: StreamContextId) -> &[AtomicU64] {
        let block = id.0 as *mut Block<K>;
        if block.is_null() {
            return &[];
        }
        // SAFETY: a guard's block (ids come only from `get_or_create`), referenced while the
        // guard lives.
        unsafe { words_of::<K, F>(block) }
    }

    fn release(&self, id: StreamContextId) {
        // SAFETY: a guard's block and its reference.
        unsafe { release::<K, F>(id.0 as *mut Block<K>) };
    }

    /// Also from a pre-close callback (rule 28, "Deleting in pre-close"): the removal runs
    /// before the close goes down, while the closing file object keeps the stream's control
    /// block, so not during that stream's teardown, which `FsRtlRemovePerStreamContext`'s page
    /// warns a close dispatch routine against; a post-close gets no guard.
    fn delete(&self, id: StreamContextId) {
        let block = id.0 as *mut Block<K>;
        let Some(c) = contexts::<F>() else { return };
        lock(c);
        // SAFETY: the guard's block, alive; its flag under the lock.
        let detached = unsafe { (*block).attached } && unsafe { remove(c, block) };
        unlock(c);
        if detached {
            // SAFETY: the attachment's reference, ours now.
            unsafe { release::<K, F>(block) };
        }
        // SAFETY: the guard's reference.
        unsafe { release::<K, F>(block) };
    }
}
