//! Stream contexts (rule 28, decision 0013): Filter Manager stream contexts of the instance.
//!
//! A filter that declares [`Filter::STREAM_CONTEXT_WORDS`] gets a `FLT_STREAM_CONTEXT` entry in
//! its context registration ([`crate::tables`]) whose size is one header word and the words, and
//! whose cleanup callback is [`stream_context_cleanup`]. A context block is `[attached,
//! words...]`, all `AtomicU64`: `attached` is set once `FltSetStreamContext` attached the block to
//! a stream, so that the cleanup tells the filter about attached contexts only, not about a block
//! that lost a race (`STATUS_FLT_CONTEXT_ALREADY_DEFINED`) or could not be attached. A
//! [`StreamContextId`] is the block's address, referenced while the filter's [`StreamContext`]
//! lives.
//!
//! Every path here starts with `fsfilter::stream_context_words::<F>()`, a constant: for a filter
//! that declares none the code, the imports and the context registration are left out.
//!
//! Handle contexts (rule 29, decision 0014) are the same over `FLT_STREAMHANDLE_CONTEXT`
//! (`FltGetStreamHandleContext`, `FltSetStreamHandleContext`), for a filter that declares
//! [`Filter::HANDLE_CONTEXT_WORDS`]: their own registration entry, block size and cleanup
//! callback ([`handle_context_cleanup`], which calls `Filter::handle_context_freed`), and their
//! own backend ([`Handles`]). The Filter Manager frees a stream-handle context when its file
//! object is torn down after the close, or when the instance is.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use fsfilter::{
    ContextRequest, Error, Filter, IoStatus, Irql, Status, StreamContext, StreamContextBackend,
    StreamContextId,
};
use fsfilter_kernel::constants::{fltfl_callback_data, fo_flags};
use fsfilter_kernel::irql;
use windows_sys::Wdk::Foundation::{FILE_OBJECT, NonPagedPoolNx};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_STREAM_CONTEXT,
    FLT_STREAMHANDLE_CONTEXT, FltAllocateContext, FltDeleteContext, FltGetStreamContext,
    FltGetStreamHandleContext, FltReleaseContext, FltSetStreamContext, FltSetStreamHandleContext,
    PFLT_CONTEXT, PFLT_FILTER, PFLT_INSTANCE,
};

use crate::state::DriverState;

/// `IRP_MJ_CREATE`.
const CREATE: u8 = 0x00;
/// `IRP_MJ_CLOSE`.
const CLOSE: u8 = 0x02;

/// The size of `F`'s stream-context blocks: the `attached` word and the filter's words.
pub(crate) const fn block_size<F: Filter>() -> usize {
    (1 + fsfilter::stream_context_words::<F>()) * core::mem::size_of::<AtomicU64>()
}

/// The size of `F`'s handle-context blocks: the `attached` word and the filter's words.
pub(crate) const fn handle_block_size<F: Filter>() -> usize {
    (1 + fsfilter::handle_context_words::<F>()) * core::mem::size_of::<AtomicU64>()
}

/// The stream-context backend of filter `F`: a zero-sized static, so `&'static` is free.
pub(crate) struct Streams<F>(PhantomData<fn() -> F>);

fn backend<F: Filter>() -> &'static dyn StreamContextBackend {
    const { &Streams::<F>(PhantomData) }
}

/// The handle-context backend of filter `F` (rule 29).
pub(crate) struct Handles<F>(PhantomData<fn() -> F>);

fn handle_backend<F: Filter>() -> &'static dyn StreamContextBackend {
    const { &Handles::<F>(PhantomData) }
}

/// The `attached` word of the block at `context`.
///
/// # Safety
/// `context` is a live stream-context block of `F` (referenced, or in its cleanup callback).
unsafe fn attached<'a>(context: PFLT_CONTEXT) -> &'a AtomicU64 {
    // SAFETY: a block of `block_size` bytes, pool-aligned, starts with the `attached` word.
    unsafe { &*context.cast::<AtomicU64>() }
}

/// The filter's words in the block at `context`.
///
/// # Safety
/// As for [`attached`].
unsafe fn words<'a, F: Filter>(context: PFLT_CONTEXT) -> &'a [AtomicU64] {
    // SAFETY: the caller's contract.
    unsafe { words_n(context, fsfilter::stream_context_words::<F>()) }
}

/// The `count` words after the `attached` word of the block at `context`.
///
/// # Safety
/// `context` is a live block (referenced, or in its cleanup callback) of `count` words.
unsafe fn words_n<'a>(context: PFLT_CONTEXT, count: usize) -> &'a [AtomicU64] {
    // SAFETY: the block holds the `attached` word, then the filter's words.
    let first = unsafe { context.cast::<AtomicU64>().add(1) };
    // SAFETY: `count` words from `first`, all initialized (zeroed when allocated), alive as long
    // as the caller's reference.
    unsafe { core::slice::from_raw_parts(first, count) }
}

impl<F: Filter> StreamContextBackend for Streams<F> {
    fn words(&self, id: StreamContextId) -> &[AtomicU64] {
        if fsfilter::stream_context_words::<F>() == 0 || id.0 == 0 {
            return &[];
        }
        // SAFETY: a block this backend handed out with a reference, which the caller's
        // `StreamContext` holds while it borrows the words.
        unsafe { words::<F>(id.0 as PFLT_CONTEXT) }
    }

    fn release(&self, id: StreamContextId) {
        if fsfilter::stream_context_words::<F>() == 0 || id.0 == 0 {
            return;
        }
        // SAFETY: the reference the `StreamContext` held, released once, at the IRQL of the
        // callback that got it (≤ APC_LEVEL: the guard cannot leave it).
        unsafe { FltReleaseContext(id.0 as PFLT_CONTEXT) };
    }

    fn delete(&self, id: StreamContextId) {
        if fsfilter::stream_context_words::<F>() == 0 || id.0 == 0 {
            return;
        }
        let context = id.0 as PFLT_CONTEXT;
        // SAFETY: a referenced stream context of this filter, at ≤ APC_LEVEL (as above): unlinked
        // from its stream (nothing if it already is); the reference stays ours (its reference
        // page), released just below.
        unsafe { FltDeleteContext(context) };
        // SAFETY: the `StreamContext`'s reference, released once.
        unsafe { FltReleaseContext(context) };
    }
}

impl<F: Filter> StreamContextBackend for Handles<F> {
    fn words(&self, id: StreamContextId) -> &[AtomicU64] {
        if fsfilter::handle_context_words::<F>() == 0 || id.0 == 0 {
            return &[];
        }
        // SAFETY: a handle-context block this backend handed out with a reference, which the
        // caller's guard holds while it borrows the words.
        unsafe { words_n(id.0 as PFLT_CONTEXT, fsfilter::handle_context_words::<F>()) }
    }

    fn release(&self, id: StreamContextId) {
        if fsfilter::handle_context_words::<F>() == 0 || id.0 == 0 {
            return;
        }
        // SAFETY: the guard's reference, released once, at ≤ APC_LEVEL (as for streams).
        unsafe { FltReleaseContext(id.0 as PFLT_CONTEXT) };
    }

    fn delete(&self, id: StreamContextId) {
        if fsfilter::handle_context_words::<F>() == 0 || id.0 == 0 {
            return;
        }
        let context = id.0 as PFLT_CONTEXT;
        // SAFETY: a referenced stream-handle context of this filter, at ≤ APC_LEVEL: unlinked
        // from its file object (nothing if it already is), then the guard's reference released.
        unsafe { FltDeleteContext(context) };
        // SAFETY: the guard's reference, released once.
        unsafe { FltReleaseContext(context) };
    }
}

/// `ContextCleanupCallback` of `F`'s stream-handle contexts (rule 29): as
/// [`stream_context_cleanup`], telling the filter through `Filter::handle_context_freed`.
pub(crate) unsafe extern "system" fn handle_context_cleanup<F: Filter>(
    context: PFLT_CONTEXT,
    _kind: u16,
) {
    if fsfilter::handle_context_words::<F>() == 0 || context.is_null() {
        return;
    }
    // SAFETY: the block being cleaned up, still allocated during the callback.
    if unsafe { attached(context) }.load(Ordering::Acquire) == 0 {
        return;
    }
    // SAFETY: this image's state, alive until `FltUnregisterFilter` returns (as for streams).
    if let Some(driver) = unsafe { DriverState::<F>::current() } {
        // SAFETY: as above.
        let words = unsafe { words_n(context, fsfilter::handle_context_words::<F>()) };
        driver.filter.handle_context_freed(words);
    }
}

/// `ContextCleanupCallback` of `F`'s stream contexts: the last reference to a block is gone.
/// An attached one is reported to the filter with its final words (rule 28), once: the Filter
/// Manager calls this once per context, at ≤ `APC_LEVEL`.
pub(crate) unsafe extern "system" fn stream_context_cleanup<F: Filter>(
    context: PFLT_CONTEXT,
    _kind: u16,
) {
    if fsfilter::stream_context_words::<F>() == 0 || context.is_null() {
        return;
    }
    // SAFETY: the block being cleaned up, still allocated during the callback.
    if unsafe { attached(context) }.load(Ordering::Acquire) == 0 {
        return;
    }
    // SAFETY: this image's state; contexts are cleaned up before `FltUnregisterFilter` returns,
    // so before the state is freed.
    if let Some(driver) = unsafe { DriverState::<F>::current() } {
        // SAFETY: as above.
        driver.filter.stream_context_freed(unsafe { words::<F>(context) });
    }
}

/// `Services::stream_context` for the operation `data` of `instance` (rule 28).
///
/// # Safety
/// `data` is null (no operation) or the running callback's valid data; `instance` is the
/// running callback's instance.
pub(crate) unsafe fn stream_context<F: Filter>(
    driver: &DriverState<F>,
    instance: PFLT_INSTANCE,
    data: *mut FLT_CALLBACK_DATA,
    request: ContextRequest,
) -> Result<StreamContext, Error> {
    let handle = request.is_handle();
    let declared = if handle {
        fsfilter::handle_context_words::<F>()
    } else {
        fsfilter::stream_context_words::<F>()
    };
    if declared == 0 {
        // No context code in a filter that does not declare contexts (decisions 0013, 0014).
        return Err(Error::NOT_SUPPORTED);
    }
    if irql::current() > Irql::APC {
        return Err(Error::INVALID_DEVICE_STATE);
    }
    // SAFETY: the caller's contract.
    let file =
        unsafe { open_stream(data, handle && request.creates()) }.ok_or(Error::NOT_SUPPORTED)?;
    let mut context: PFLT_CONTEXT = core::ptr::null_mut();
    let status = Status(if handle {
        // SAFETY: the running callback's instance and the file object of its open stream, at
        // ≤ APC_LEVEL, with a valid out pointer.
        unsafe { FltGetStreamHandleContext(instance, file, &mut context) }
    } else {
        // SAFETY: as above.
        unsafe { FltGetStreamContext(instance, file, &mut context) }
    });
    let (context, created) = match status {
        s if s.is_success() && !context.is_null() => (context, false),
        Status::NOT_FOUND if request.creates() => {
            // SAFETY: as above.
            unsafe { attach_of::<F>(driver.handle, instance, file, handle) }?
        }
        s => return Err(Error::new(s).unwrap_or(Error::UNSUCCESSFUL)),
    };
    let backend = if handle { handle_backend::<F>() } else { backend::<F>() };
    Ok(StreamContext::new(StreamContextId(context as usize), backend, created))
}

/// The file object of the operation's open stream: `None` outside an operation, in pre-create,
/// in the post of a create that opened nothing (failed, or `STATUS_REPARSE`: rule 27), in
/// post-close, for a volume open (rule 28), and in pre-close for a request that would create a
/// handle's context (`creates_handle_context`, rule 29). The Filter Manager answers for streams
/// whose file system keeps no filter contexts (`STATUS_NOT_SUPPORTED`).
///
/// # Safety
/// `data` is null or the running callback's valid data.
unsafe fn open_stream(
    data: *mut FLT_CALLBACK_DATA,
    creates_handle_context: bool,
) -> Option<*mut FILE_OBJECT> {
    // SAFETY: the caller's contract.
    let data = unsafe { data.as_ref() }?;
    // SAFETY: a valid callback data points to its parameter block.
    let iopb = unsafe { data.Iopb.as_ref() }?;
    let post = data.Flags & fltfl_callback_data::POST_OPERATION != 0;
    match (iopb.MajorFunction, post) {
        (CREATE, false) | (CLOSE, true) => return None,
        // Pre-close is the handle's last operation: its context is found there, not created
        // (rule 29, as in the legacy model).
        (CLOSE, false) if creates_handle_context => return None,
        (CREATE, true) => {
            // SAFETY: the status member.
            let status = Status(unsafe { data.IoStatus.Anonymous.Status });
            if !IoStatus::new(status).opened() {
                return None;
            }
        }
        _ => {}
    }
    let file = iopb.TargetFileObject;
    // SAFETY: null or the running operation's valid file object.
    let f = unsafe { file.as_ref() }?;
    (f.Flags & fo_flags::VOLUME_OPEN == 0).then_some(file)
}

/// Allocates a zeroed context and attaches it to `file`'s stream, unless another thread attached
/// one first: then that one (referenced for us by `FltSetStreamContext`), not created.
///
/// # Safety
/// `filter` is this driver's filter, `instance` the running callback's, `file` the file object of
/// its open stream; ≤ `APC_LEVEL`.
#[cfg(test)]
unsafe fn attach<F: Filter>(
    filter: PFLT_FILTER,
    instance: PFLT_INSTANCE,
    file: *mut FILE_OBJECT,
) -> Result<(PFLT_CONTEXT, bool), Error> {
    // SAFETY: the caller's contract.
    unsafe { attach_of::<F>(filter, instance, file, false) }
}

/// [`attach`] of a stream context, or with `handle` of a stream-handle context.
///
/// # Safety
/// As [`attach`].
unsafe fn attach_of<F: Filter>(
    filter: PFLT_FILTER,
    instance: PFLT_INSTANCE,
    file: *mut FILE_OBJECT,
    handle: bool,
) -> Result<(PFLT_CONTEXT, bool), Error> {
    let (size, ty) = if handle {
        (handle_block_size::<F>(), FLT_STREAMHANDLE_CONTEXT as u16)
    } else {
        (block_size::<F>(), FLT_STREAM_CONTEXT as u16)
    };
    let mut new: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: the registered filter; the type and size are registered
    // (`tables::stream_context_table`); a valid out pointer.
    let status = Status(unsafe { FltAllocateContext(filter, ty, size, NonPagedPoolNx, &mut new) });
    if let Some(e) = Error::new(status) {
        return Err(e);
    }
    if new.is_null() {
        return Err(Error::INSUFFICIENT_RESOURCES);
    }
    // The Filter Manager does not zero a context: the `attached` word and the filter's words.
    // SAFETY: the fresh block of `size` bytes, ours alone until it is set.
    unsafe { core::ptr::write_bytes(new.cast::<u8>(), 0, size) };
    let mut old: PFLT_CONTEXT = core::ptr::null_mut();
    let keep = FLT_SET_CONTEXT_KEEP_IF_EXISTS;
    let status = Status(if handle {
        // SAFETY: the callback's instance, its open stream's file object, a context of this
        // filter of the stream-handle type, a valid out pointer; ≤ APC_LEVEL.
        unsafe { FltSetStreamHandleContext(instance, file, keep, new, &mut old) }
    } else {
        // SAFETY: the callback's instance, its open stream's file object, a context of this
        // filter of the stream type, a valid out pointer; ≤ APC_LEVEL.
        unsafe { FltSetStreamContext(instance, file, keep, new, &mut old) }
    });
    if status.is_success() {
        // Ours until the caller's reference goes: only then can the cleanup read this.
        // SAFETY: the live block we hold a reference to.
        unsafe { attached(new) }.store(1, Ordering::Release);
        return Ok((new, true));
    }
    // Never attached: its cleanup tells the filter nothing.
    // SAFETY: the allocation's reference, released once.
    unsafe { FltReleaseContext(new) };
    if status == Status::FLT_CONTEXT_ALREADY_DEFINED && !old.is_null() {
        // Another thread attached one between our get and our set: it wins, for both.
        return Ok((old, false));
    }
    if !old.is_null() {
        // SAFETY: a reference the Filter Manager gave us; released once.
        unsafe { FltReleaseContext(old) };
    }
    Err(Error::new(status).unwrap_or(Error::UNSUCCESSFUL))
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;
    use std::sync::Mutex;
    use std::vec::Vec;

    use fsfilter::{
        Instance, InstanceSetup, MajorFunction, Operation, PreOperation, PreOutcome, Registration,
        ServiceParameters,
    };
    use fsfilter_sim::{
        CreateOptions, FsKind, InstanceLayout, InstanceSpec, InstancesSpec, IoMode, Machine,
        MachineConfig, ServiceSpec, StartType, StopResult, VolumeSpec,
    };

    use super::*;

    /// What the racer saw: (first attach created, second attach created, same context), and the
    /// words of each context freed.
    static RACES: Mutex<Vec<(bool, bool, bool)>> = Mutex::new(Vec::new());
    static FREED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    /// In its pre-read, attaches twice without looking first: the second attach finds the first
    /// one set, as a thread that lost the race between its `FltGetStreamContext` and its
    /// `FltSetStreamContext` does.
    struct Racer;

    impl Filter for Racer {
        const REGISTRATION: Registration =
            Registration::new().operation(Operation::new(MajorFunction::Read).pre()).validated();
        const STREAM_CONTEXT_WORDS: usize = 1;
        type InstanceContext = ();
        type CompletionContext = ();

        fn load(_: &dyn ServiceParameters) -> fsfilter::Result<Self> {
            Ok(Racer)
        }

        fn instance_setup(&self, _: &InstanceSetup<'_>) -> fsfilter::Result<()> {
            Ok(())
        }

        fn pre_operation(
            &self,
            i: &Instance<'_, ()>,
            op: &mut PreOperation<'_, ()>,
        ) -> PreOutcome<()> {
            // SAFETY: this image's state, during its callback.
            let driver = unsafe { DriverState::<Racer>::current() }.unwrap();
            let instance = i.id.0 as PFLT_INSTANCE;
            let file = op.header().file as *mut FILE_OBJECT;
            // SAFETY: the callback's instance and open stream, at PASSIVE_LEVEL.
            let (a, first) = unsafe { attach::<Racer>(driver.handle, instance, file) }.unwrap();
            // SAFETY: as above.
            let (b, second) = unsafe { attach::<Racer>(driver.handle, instance, file) }.unwrap();
            // SAFETY: the attached block, referenced.
            let w = unsafe { words::<Racer>(a) };
            w[0].store(42, Ordering::Relaxed);
            RACES.lock().unwrap().push((first, second, a == b));
            for c in [a, b] {
                drop(StreamContext::new(StreamContextId(c as usize), backend::<Racer>(), false));
            }
            PreOutcome::NoPost
        }

        fn stream_context_freed(&self, words: &[AtomicU64]) {
            FREED.lock().unwrap().extend(words.iter().map(|w| w.load(Ordering::Relaxed)));
        }
    }

    crate::driver!(Racer);

    #[test]
    fn a_set_that_loses_the_race_takes_the_winner_and_frees_its_own_block_silently() {
        let mut m = Machine::new(MachineConfig { seed: 28 });
        let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", &[1; 512]));
        let _ = m.install_filter_manager();
        let mut spec = ServiceSpec::new("Racer", ENTRY, "minifilter");
        spec.start = StartType::Boot;
        spec.group = Some("FSFilter Activity Monitor".to_string());
        spec.depends_on = std::vec!["FltMgr".to_string()];
        spec.instances = Some(InstancesSpec {
            default_instance: "Racer Instance".to_string(),
            instances: std::vec![InstanceSpec {
                name: "Racer Instance".to_string(),
                altitude: "370000".to_string(),
                flags: 0,
            }],
            layout: InstanceLayout::Both,
        });
        m.install(spec);
        m.boot();
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        assert!(m.read(h, Some(0), 512, IoMode::NonCached).status.is_success());
        assert_eq!(*RACES.lock().unwrap(), [(true, false, true)]);
        assert!(FREED.lock().unwrap().is_empty(), "the losing block is not reported");
        assert_eq!(m.close_handle(h), Status::SUCCESS);
        m.settle();
        assert_eq!(*FREED.lock().unwrap(), [42], "the winner, once, at the last close");
        assert_eq!(m.stop("Racer"), StopResult::Unloaded);
        // No context leaked (the losing block released), none released twice.
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}
