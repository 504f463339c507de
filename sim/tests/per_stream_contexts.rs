//! FsRtl per-stream contexts (docs/simulator.md, "Per-stream contexts (FsRtl)"): the exports
//! `FsRtlInsertPerStreamContext`, `FsRtlLookupPerStreamContextInternal`,
//! `FsRtlRemovePerStreamContext` and `FsRtlTeardownPerStreamContexts` (WRK `fsrtl/filtrctx.c`),
//! called by "Ctx", a raw legacy driver written here against windows-sys: the test runs its code
//! in its image (`kernel::call_into`), on the streams of files it opens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(missing_docs, reason = "test driver")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod fltcommon;

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::null;

use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, FsKind, Handle, Machine, Rule, ServiceSpec, StopResult, VolumeId, VolumeSpec,
};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, FILE_OBJECT};
use windows_sys::Wdk::Storage::FileSystem::{
    FSRTL_ADVANCED_FCB_HEADER, FSRTL_PER_STREAM_CONTEXT, FsRtlInsertPerStreamContext,
    FsRtlLookupPerStreamContextInternal, FsRtlRemovePerStreamContext,
    FsRtlTeardownPerStreamContexts,
};
use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

/// `POOL_FLAG_NON_PAGED`.
const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// Ctx's pool tag.
const TAG: u32 = u32::from_le_bytes(*b"PsCx");
/// `FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS`.
const SUPPORTS_FILTER_CONTEXTS: u8 = 0x02;

thread_local! {
    /// The contexts Ctx's `FreeCallback` was called with, in order.
    static FREED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// The image and IRQL each call of Ctx's `FreeCallback` ran in.
    static FREED_IN: RefCell<Vec<(Option<String>, u8)>> = const { RefCell::new(Vec::new()) };
    /// The stream whose list Ctx's `FreeCallback` counts (0: none), and the entries it found left.
    static WATCH: RefCell<usize> = const { RefCell::new(0) };
    static LEFT_IN_FREE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// What Ctx's `DriverUnload` removes and frees (header, owner, instance).
    static UNLOAD_REMOVES: RefCell<Vec<(usize, usize, usize)>> = const { RefCell::new(Vec::new()) };
    /// Whether Mini sets a stream context in its post-create.
    static MINI_SETS: RefCell<bool> = const { RefCell::new(false) };
    /// What Ctx's `FreeCallback` removes from the stream before it frees its own context
    /// (header, owner, instance), and what that removal answered.
    static REMOVE_IN_FREE: RefCell<Option<(usize, usize, usize)>> = const { RefCell::new(None) };
    static REMOVED_IN_FREE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Ctx's `DriverUnload`: nothing of its own to undo (each test removes what it inserted).
unsafe extern "system" fn ctx_unload(_driver: *const DRIVER_OBJECT) {
    for (h, o, i) in UNLOAD_REMOVES.with(|u| std::mem::take(&mut *u.borrow_mut())) {
        // SAFETY: a stream the test keeps open, and Ctx's ids.
        let r = unsafe { FsRtlRemovePerStreamContext(h as *const _, o as *const _, i as *const _) };
        assert!(!r.is_null(), "Ctx's context is still there");
        // SAFETY: Ctx's pool block, unlinked.
        unsafe { ExFreePoolWithTag(r.cast(), TAG) };
    }
}

unsafe extern "system" fn ctx_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the loader's driver object, ours during DriverEntry.
    unsafe { (*driver.cast_mut()).DriverUnload = Some(ctx_unload) };
    Status::SUCCESS.0
}

/// Ctx's `FreeCallback` (`PFREE_FUNCTION`, whose parameter windows-sys drops): records the call,
/// removes what `REMOVE_IN_FREE` says (freeing it too), and frees its context.
unsafe extern "system" fn ctx_free(buffer: *mut c_void) {
    FREED.with(|f| f.borrow_mut().push(buffer as usize));
    let running = fsfilter_sim::kernel::with(|k| (k.current_image_name(), k.irql()));
    FREED_IN.with(|f| f.borrow_mut().push(running));
    let watched = WATCH.with(|w| *w.borrow());
    if watched != 0 {
        LEFT_IN_FREE.with(|l| l.borrow_mut().push(list(watched).len()));
    }
    if let Some((h, o, i)) = REMOVE_IN_FREE.with(|r| r.borrow_mut().take()) {
        // SAFETY: the header of the stream being torn down, valid during the teardown.
        let r = unsafe { FsRtlRemovePerStreamContext(h as *const _, o as *const _, i as *const _) };
        REMOVED_IN_FREE.with(|x| x.borrow_mut().push(r as usize));
        if !r.is_null() {
            // SAFETY: Ctx's pool block, unlinked, ours again.
            unsafe { ExFreePoolWithTag(r.cast(), TAG) };
        }
    }
    // SAFETY: Ctx's pool block, unlinked by the teardown.
    unsafe { ExFreePoolWithTag(buffer, TAG) };
}

/// A machine with C: (NTFS: `a.txt`, `b.txt`) and Ctx running.
fn machine() -> (Machine, VolumeId) {
    FREED.with(|f| f.borrow_mut().clear());
    FREED_IN.with(|f| f.borrow_mut().clear());
    WATCH.with(|w| *w.borrow_mut() = 0);
    LEFT_IN_FREE.with(|l| l.borrow_mut().clear());
    MINI_SETS.with(|x| *x.borrow_mut() = false);
    UNLOAD_REMOVES.with(|u| u.borrow_mut().clear());
    REMOVE_IN_FREE.with(|r| r.borrow_mut().take());
    REMOVED_IN_FREE.with(|r| r.borrow_mut().clear());
    let mut m = fltcommon::machine(1);
    let c =
        m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"a").file("b.txt", b"b"));
    m.install(ServiceSpec::new("Ctx", ctx_entry, "legacy"));
    m.boot();
    assert_eq!(m.start("Ctx"), Status::SUCCESS);
    (m, c)
}

/// Runs `f` as Ctx's code.
fn as_ctx<R>(m: &Machine, f: impl FnOnce() -> R) -> R {
    as_driver(m, "Ctx", f)
}

/// Runs `f` as the code of the driver `name` (Ctx, or Other, a second copy of it).
fn as_driver<R>(m: &Machine, name: &str, f: impl FnOnce() -> R) -> R {
    let image = m.kernel(|k| k.service_index(name).and_then(|i| k.loader.services[i].image));
    assert!(image.is_some(), "{name} is loaded");
    fsfilter_sim::kernel::call_into(image, f)
}

/// Runs `f` as Ctx's code at `irql`.
fn as_ctx_at<R>(m: &Machine, irql: u8, f: impl FnOnce() -> R) -> R {
    as_ctx(m, || {
        let before = fsfilter_sim::kernel::with(|k| {
            let before = k.irql();
            k.set_irql(irql);
            before
        });
        let r = f();
        fsfilter_sim::kernel::with(|k| k.set_irql(before));
        r
    })
}

/// The stream (`FsContext`, the FCB's `FSRTL_ADVANCED_FCB_HEADER`) a handle is open on.
fn stream(m: &Machine, h: Handle) -> usize {
    m.kernel(|k| {
        let fo = k.user_handle(h).unwrap().fo as *const FILE_OBJECT;
        // SAFETY: the handle's live file object.
        unsafe { (*fo).FsContext as usize }
    })
}

/// A context in Ctx's pool, initialized as `FsRtlInitPerStreamContext` does.
fn new_ctx(m: &Machine, owner: usize, instance: usize) -> usize {
    new_ctx_of(m, "Ctx", owner, instance)
}

/// A context in the pool of the driver `name`.
fn new_ctx_of(m: &Machine, name: &str, owner: usize, instance: usize) -> usize {
    as_driver(m, name, || {
        // SAFETY: a plain pool allocation for Ctx.
        let p = unsafe {
            ExAllocatePool2(POOL_FLAG_NON_PAGED, size_of::<FSRTL_PER_STREAM_CONTEXT>(), TAG)
        };
        assert!(!p.is_null());
        let c = p.cast::<FSRTL_PER_STREAM_CONTEXT>();
        // SAFETY: the block just allocated, large enough.
        unsafe {
            (*c).OwnerId = owner as *mut c_void;
            (*c).InstanceId = instance as *mut c_void;
            (*c).FreeCallback = fsfilter_kernel::ntos::free_function_field(ctx_free);
        }
        p as usize
    })
}

fn insert(m: &Machine, header: usize, ctx: usize) -> Status {
    // SAFETY: a stream's header (or NULL) and one of Ctx's contexts.
    Status(as_ctx(m, || unsafe {
        FsRtlInsertPerStreamContext(header as *const _, ctx as *const _)
    }))
}

fn lookup(m: &Machine, header: usize, owner: usize, instance: usize) -> usize {
    // SAFETY: as above.
    as_ctx(m, || unsafe {
        FsRtlLookupPerStreamContextInternal(
            header as *const _,
            owner as *const _,
            instance as *const _,
        )
    }) as usize
}

fn remove(m: &Machine, header: usize, owner: usize, instance: usize) -> usize {
    // SAFETY: as above.
    as_ctx(m, || unsafe {
        FsRtlRemovePerStreamContext(header as *const _, owner as *const _, instance as *const _)
    }) as usize
}

/// Frees a context Ctx removed.
fn free(m: &Machine, ctx: usize) {
    // SAFETY: Ctx's pool block, unlinked.
    as_ctx(m, || unsafe { ExFreePoolWithTag(ctx as *mut c_void, TAG) });
}

/// The first entry of a header's `FilterContexts` list, as a driver reads it (the
/// `FsRtlLookupPerStreamContext` macro tests `IsListEmpty` itself): 0 when the list is empty.
fn first_entry(header: usize) -> usize {
    let h = header as *const FSRTL_ADVANCED_FCB_HEADER;
    // SAFETY: a live FCB header.
    let (head, first) =
        unsafe { (&raw const (*h).FilterContexts as usize, (*h).FilterContexts.Flink as usize) };
    if first == head { 0 } else { first }
}

/// The entries of a header's `FilterContexts` list, head first, as a driver walks it.
fn list(header: usize) -> Vec<usize> {
    let h = header as *const FSRTL_ADVANCED_FCB_HEADER;
    let head = unsafe { &raw const (*h).FilterContexts } as usize;
    let mut out = Vec::new();
    let mut e = first_entry(header);
    while e != 0 && e != head {
        out.push(e);
        e = unsafe { (*(e as *const windows_sys::Win32::System::Kernel::LIST_ENTRY)).Flink }
            as usize;
    }
    out
}

fn freed() -> Vec<usize> {
    FREED.with(|f| f.borrow().clone())
}

fn rules(m: &Machine) -> Vec<Rule> {
    m.findings().into_iter().map(|f| f.0).collect()
}

const OWNER_1: usize = 0x1000;
const OWNER_2: usize = 0x2000;
const INST_1: usize = 0x10;
const INST_2: usize = 0x20;

#[test]
fn insert_lookup_and_remove_follow_the_wrk_matching_rules() {
    // WRK fsrtl/filtrctx.c: FsRtlInsertPerStreamContext links at the head of the stream's
    // FilterContexts list and looks for no duplicate; FsRtlLookupPerStreamContextInternal and
    // FsRtlRemovePerStreamContext answer the first match from the head: OwnerId and InstanceId
    // when an InstanceId is given, OwnerId alone when only it is, the first context when neither
    // is; Remove unlinks only that one. The list is the real one in the FCB header.
    let (mut m, c) = machine();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let other = m.open(c, "b.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h);
    let (a, b, d) =
        (new_ctx(&m, OWNER_1, INST_1), new_ctx(&m, OWNER_1, INST_2), new_ctx(&m, OWNER_2, 0));
    assert_eq!(first_entry(s), 0, "a new stream has no filter context");
    for x in [a, b, d] {
        assert_eq!(insert(&m, s, x), Status::SUCCESS);
    }
    assert_eq!(first_entry(s), d, "inserted at the head");
    assert_eq!(lookup(&m, s, 0, 0), d, "neither id: the first context");
    assert_eq!(lookup(&m, s, OWNER_1, 0), b, "the owner's first from the head");
    assert_eq!(lookup(&m, s, OWNER_1, INST_1), a);
    assert_eq!(lookup(&m, s, OWNER_1, INST_2), b);
    assert_eq!(lookup(&m, s, OWNER_2, INST_1), 0, "both ids must match");
    assert_eq!(lookup(&m, s, 0x3000, 0), 0);
    assert_eq!(lookup(&m, stream(&m, other), OWNER_1, 0), 0, "another stream has its own list");
    let again = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(stream(&m, again), s, "every open of the file shares the stream");
    assert_eq!(lookup(&m, stream(&m, again), OWNER_1, INST_1), a);
    // No search for duplicates: a second context of the same owner and instance goes first.
    let e = new_ctx(&m, OWNER_2, 0);
    assert_eq!(insert(&m, s, e), Status::SUCCESS);
    assert_eq!(lookup(&m, s, OWNER_2, 0), e);
    // Remove: the first match only.
    assert_eq!(remove(&m, s, OWNER_1, 0), b);
    assert_eq!(lookup(&m, s, OWNER_1, 0), a, "the next of the owner is found now");
    assert_eq!(remove(&m, s, OWNER_1, INST_2), 0, "removed already");
    assert_eq!(remove(&m, s, 0, 0), e, "neither id: the first context");
    assert_eq!(remove(&m, s, OWNER_2, 0), d);
    assert_eq!(remove(&m, s, OWNER_1, INST_1), a);
    assert_eq!(first_entry(s), 0, "the list is empty again");
    assert_eq!(lookup(&m, s, 0, 0), 0);
    for x in [a, b, d, e] {
        free(&m, x);
    }
    for x in [h, other, again] {
        m.close_handle(x);
    }
    assert!(FREED.with(|f| f.borrow().is_empty()), "removed contexts are the caller's to free");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_stream_without_filter_contexts_refuses_them() {
    // WRK: FsRtlInsertPerStreamContext answers STATUS_INVALID_DEVICE_REQUEST for a NULL header
    // or one without FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS, FsRtlRemovePerStreamContext NULL;
    // FsRtlLookupPerStreamContextInternal, which the FsRtlLookupPerStreamContext macro calls only
    // after testing the flag, answers NULL here, and a NULL header is a BUGCHECK finding (Windows
    // dereferences it). No simulated file system clears the flag: the test clears it on a stream
    // by hand, as a file system without filter-context support would leave it.
    let (mut m, c) = machine();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h);
    let x = new_ctx(&m, OWNER_1, 0);
    let flags2 = |s: usize| {
        let h = s as *mut FSRTL_ADVANCED_FCB_HEADER;
        // SAFETY: a live FCB header.
        unsafe { &mut (*h).Base.Flags2 }
    };
    assert_eq!(*flags2(s) & SUPPORTS_FILTER_CONTEXTS, SUPPORTS_FILTER_CONTEXTS);
    *flags2(s) &= !SUPPORTS_FILTER_CONTEXTS;
    assert_eq!(insert(&m, s, x), Status::INVALID_DEVICE_REQUEST);
    assert_eq!(first_entry(s), 0, "nothing linked");
    assert_eq!(lookup(&m, s, OWNER_1, 0), 0);
    assert_eq!(remove(&m, s, OWNER_1, 0), 0);
    *flags2(s) |= SUPPORTS_FILTER_CONTEXTS;
    assert_eq!(insert(&m, 0, x), Status::INVALID_DEVICE_REQUEST, "a NULL header");
    assert_eq!(remove(&m, 0, OWNER_1, 0), 0);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(lookup(&m, 0, OWNER_1, 0), 0);
    assert_eq!(rules(&m), [Rule::Bugcheck]);
    assert!(
        m.findings()[0].2.contains("FsRtlLookupPerStreamContextInternal"),
        "{:?}",
        m.findings()
    );
    assert_eq!(m.findings()[0].1.as_deref(), Some("Ctx"));
    free(&m, x);
    m.close_handle(h);
}

#[test]
fn every_simulated_stream_keeps_filter_contexts() {
    // "File System Support for Contexts": all Microsoft file systems use the advanced FCB header;
    // NTFS and FAT refuse contexts only on paging files, which the simulator does not model.
    // Every FCB of the simulated file systems has FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS: files,
    // directories and volume opens on disk file systems, shares, named pipes and mailslots
    // (docs/simulator.md, "Per-stream contexts (FsRtl)").
    let (mut m, c) = machine();
    let fat = m.add_volume(VolumeSpec::new("D:", FsKind::Fat).file("f.txt", b"f"));
    let share = m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup).file("r.txt", b"r"));
    let pipes = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    let slots = m.add_volume(VolumeSpec::new(r"\Device\Mailslot", FsKind::Msfs));
    for v in [fat, share, pipes, slots] {
        m.mount(v);
    }
    let opens = [
        (c, "a.txt", CreateOptions::open()),
        (c, "", CreateOptions::open()),
        (c, "\\", CreateOptions::open()),
        (fat, "f.txt", CreateOptions::open()),
        (fat, "", CreateOptions::open()),
        (share, "r.txt", CreateOptions::open()),
        (pipes, "pipe", CreateOptions::default()),
        (slots, "slot", CreateOptions::default()),
    ];
    for (v, path, options) in opens {
        let h = m.open(v, path, options).unwrap_or_else(|s| panic!("{path}: {s}"));
        let s = stream(&m, h);
        let x = new_ctx(&m, OWNER_1, 0);
        assert_eq!(insert(&m, s, x), Status::SUCCESS, "{path}");
        assert_eq!(lookup(&m, s, OWNER_1, 0), x, "{path}");
        assert_eq!(remove(&m, s, OWNER_1, 0), x, "{path}");
        free(&m, x);
        m.close_handle(h);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn teardown_by_hand_calls_each_free_callback_in_its_image_head_first() {
    // FsRtlTeardownPerStreamContexts (WRK): unlinks the head, releases the lock, calls its
    // FreeCallback with the context, until the list is empty: a FreeCallback may remove another
    // context meanwhile (which it then owns). A driver may call it; here Ctx does, on a stream
    // it keeps open, so the file system's own teardown later finds an empty list.
    let (mut m, c) = machine();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h);
    let (a, b, d) =
        (new_ctx(&m, OWNER_1, INST_1), new_ctx(&m, OWNER_1, INST_2), new_ctx(&m, OWNER_2, 0));
    for x in [a, b, d] {
        assert_eq!(insert(&m, s, x), Status::SUCCESS);
    }
    // d is freed first (the head); its FreeCallback removes a, so b comes next.
    REMOVE_IN_FREE.with(|r| *r.borrow_mut() = Some((s, OWNER_1, INST_1)));
    // SAFETY: the stream's header.
    as_ctx(&m, || unsafe { FsRtlTeardownPerStreamContexts(s as *const _) });
    assert_eq!(FREED.with(|f| f.borrow().clone()), [d, b]);
    assert_eq!(REMOVED_IN_FREE.with(|r| r.borrow().clone()), [a]);
    let ctx = (Some("Ctx".to_owned()), 0);
    assert_eq!(
        FREED_IN.with(|f| f.borrow().clone()),
        [ctx.clone(), ctx],
        "Ctx's image, PASSIVE_LEVEL"
    );
    assert_eq!(first_entry(s), 0);
    m.close_handle(h);
    assert_eq!(FREED.with(|f| f.borrow().len()), 2, "nothing left for the file system's teardown");
    assert_eq!(m.stop("Ctx"), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_last_close_tears_the_stream_down_and_each_free_callback_runs_once_in_its_image() {
    // The file system calls FsRtlTeardownPerStreamContexts as it frees the stream's control
    // block after the last close of its last file object (FastFat's FatDeleteFcb; the
    // FreeCallback's page: the stream's file objects are gone): every FreeCallback, once, head
    // first, in the image of the driver that inserted it (not the file system's), at
    // PASSIVE_LEVEL. Before December 7 the simulator's file systems freed the FCB without it.
    let (mut m, c) = machine();
    let h1 = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let h2 = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h1);
    let (a, b) = (new_ctx(&m, OWNER_1, 0), new_ctx(&m, OWNER_2, 0));
    for x in [a, b] {
        assert_eq!(insert(&m, s, x), Status::SUCCESS);
    }
    m.close_handle(h1);
    assert!(freed().is_empty(), "another file object still refers to the stream");
    m.close_handle(h2);
    assert_eq!(freed(), [b, a], "each once, head first");
    let ctx = (Some("Ctx".to_owned()), 0);
    assert_eq!(FREED_IN.with(|f| f.borrow().clone()), [ctx.clone(), ctx]);
    let again = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(lookup(&m, stream(&m, again), 0, 0), 0, "a new stream starts with no context");
    m.close_handle(again);
    assert_eq!(freed().len(), 2);
    assert_eq!(m.stop("Ctx"), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_free_callback_may_remove_another_context_of_the_stream() {
    // WRK FsRtlTeardownPerStreamContexts releases the list's fast mutex before each
    // FreeCallback: one may call FsRtlRemovePerStreamContext on the same stream (a filter's own
    // removal racing the teardown, "Deleting a Per-Stream Context"); what it removes is its own
    // to free and is not called back.
    let (mut m, c) = machine();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h);
    let (a, b) = (new_ctx(&m, OWNER_1, INST_1), new_ctx(&m, OWNER_2, 0));
    for x in [a, b] {
        assert_eq!(insert(&m, s, x), Status::SUCCESS);
    }
    REMOVE_IN_FREE.with(|r| *r.borrow_mut() = Some((s, OWNER_1, INST_1)));
    m.close_handle(h);
    assert_eq!(freed(), [b]);
    assert_eq!(REMOVED_IN_FREE.with(|r| r.borrow().clone()), [a]);
    assert_eq!(m.stop("Ctx"), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_volume_opens_contexts_go_when_the_volume_device_is_torn_down() {
    // A volume open's FsContext is the volume's control block, whose header FastFat tears down
    // in FatDeleteVcb: its contexts outlive the handle and go when the dismounted volume's
    // device is deleted after its last file closed.
    let (mut m, c) = machine();
    let h = m.open(c, "", CreateOptions::open()).unwrap();
    let s = stream(&m, h);
    let x = new_ctx(&m, OWNER_1, 0);
    assert_eq!(insert(&m, s, x), Status::SUCCESS);
    m.close_handle(h);
    assert!(freed().is_empty(), "the volume's control block lives while it is mounted");
    let keep = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.dismount(c), Status::SUCCESS);
    assert!(freed().is_empty(), "a file is still open on the dismounted volume");
    m.close_handle(keep);
    m.settle();
    assert_eq!(freed(), [x]);
    assert_eq!(m.stop("Ctx"), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Mini's post-create: sets a stream context when `MINI_SETS` says so.
fn mini_post(p: &fltcommon::PostCall) -> i32 {
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
        FltAllocateContext, FltReleaseContext, FltSetStreamContext, PFLT_CONTEXT,
    };
    if !p.status().is_success() || !MINI_SETS.with(|x| *x.borrow()) {
        return 0;
    }
    let f = fltcommon::filter_handle(p.slot);
    let fo = unsafe { (*p.data().Iopb).TargetFileObject };
    let mut sc: PFLT_CONTEXT = std::ptr::null_mut();
    let pool = windows_sys::Wdk::Foundation::NonPagedPoolNx;
    assert_eq!(unsafe { FltAllocateContext(f, 0x8, 24, pool, &mut sc) }, 0);
    assert_eq!(unsafe { FltSetStreamContext(p.instance(), fo, 1, sc, std::ptr::null_mut()) }, 0);
    unsafe { FltReleaseContext(sc) };
    0
}

/// Mini, a minifilter whose post-create sets a stream context when `MINI_SETS` is true.
fn start_mini(m: &mut Machine) {
    m.install_filter_manager();
    let mut cfg = fltcommon::Config::new("Mini", "370000")
        .op(fltcommon::mj::CREATE, false, true)
        .with_post(mini_post);
    cfg.contexts = vec![(0x8, 24)];
    fltcommon::start(m, 0, cfg);
}

/// The cleanups of Mini's stream contexts so far.
fn mini_cleanups() -> usize {
    let seen = fltcommon::seen(0);
    seen.iter().filter(|e| matches!(e, fltcommon::Seen::Cleanup { ty: 0x8, .. })).count()
}

#[test]
fn the_filter_managers_stream_contexts_hang_off_the_same_list() {
    // On Windows the Filter Manager keeps a stream's contexts in a per-stream context of its own
    // on the same FilterContexts list, so the file system's one teardown reaches both (head
    // first): a legacy filter's lookup with neither id can find it. Modelled since December 7:
    // the Filter Manager links it when it first sets a stream context on the stream.
    let (mut m, c) = machine();
    start_mini(&mut m);
    // a.txt: Mini's context first, then Ctx's, which is freed first and sees Mini's still there.
    MINI_SETS.with(|x| *x.borrow_mut() = true);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h);
    let flt_list = list(s);
    assert_eq!(flt_list.len(), 1, "the Filter Manager's per-stream context");
    let x = new_ctx(&m, OWNER_1, 0);
    assert_eq!(insert(&m, s, x), Status::SUCCESS);
    assert_eq!(list(s), [x, flt_list[0]]);
    assert_eq!(lookup(&m, s, 0, 0), x);
    assert_eq!(lookup(&m, s, OWNER_1, 0), x);
    WATCH.with(|w| *w.borrow_mut() = s);
    m.close_handle(h);
    m.settle();
    assert_eq!(freed(), [x]);
    assert_eq!(LEFT_IN_FREE.with(|l| l.borrow().clone()), [1], "Mini's still linked then");
    assert_eq!(mini_cleanups(), 1, "Mini's stream context went with the stream");
    // b.txt: Ctx's context first, then Mini's (its second open): Mini's goes first.
    MINI_SETS.with(|x| *x.borrow_mut() = false);
    let h1 = m.open(c, "b.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h1);
    let y = new_ctx(&m, OWNER_1, 0);
    assert_eq!(insert(&m, s, y), Status::SUCCESS);
    MINI_SETS.with(|x| *x.borrow_mut() = true);
    let h2 = m.open(c, "b.txt", CreateOptions::open()).unwrap();
    assert_eq!(list(s).len(), 2);
    assert_eq!(list(s)[1], y, "the Filter Manager's went to the head");
    LEFT_IN_FREE.with(|l| l.borrow_mut().clear());
    WATCH.with(|w| *w.borrow_mut() = s);
    m.close_handle(h1);
    m.close_handle(h2);
    m.settle();
    assert_eq!(freed(), [x, y]);
    assert_eq!(LEFT_IN_FREE.with(|l| l.borrow().clone()), [0], "Mini's went first");
    assert_eq!(mini_cleanups(), 2);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_stream_whose_filter_manager_context_a_driver_removed_does_not_deprive_the_next_one() {
    // A driver that takes the Filter Manager's per-stream context off a stream (a misuse) leaves
    // the stream's Filter Manager contexts to the FCB's own teardown; the FCB block then goes
    // back to the pool and the next stream may get the same address. That stream's first stream
    // context links a Filter Manager context of its own again. Until December 7 the Filter
    // Manager still counted the removed one as the address's, and linked none.
    let (mut m, c) = machine();
    start_mini(&mut m);
    MINI_SETS.with(|x| *x.borrow_mut() = true);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h);
    let [flt] = list(s)[..] else { panic!("{:?}", list(s)) };
    assert_eq!(remove(&m, s, 0, 0), flt);
    assert_eq!(rules(&m), [Rule::PerStreamContextMisuse]);
    m.close_handle(h);
    m.settle();
    assert_eq!(mini_cleanups(), 1, "Mini's stream context went with the FCB all the same");
    // FCB blocks are reused after a quarantine of freed blocks (sim/src/mem.rs `BlockPool`).
    let mut opens = 0;
    let h = loop {
        let h = m.open(c, "b.txt", CreateOptions::open()).unwrap();
        opens += 1;
        if stream(&m, h) == s || opens == 1000 {
            break h;
        }
        m.close_handle(h);
    };
    assert_eq!(stream(&m, h), s, "the FCB block is reused");
    assert_eq!(list(s).len(), 1, "the Filter Manager's per-stream context of the new stream");
    m.close_handle(h);
    m.settle();
    assert_eq!(mini_cleanups(), 1 + opens);
    assert_eq!(rules(&m), [Rule::PerStreamContextMisuse]);
}

fn findings_of(m: &Machine, rule: Rule) -> Vec<(Option<String>, String)> {
    m.findings().into_iter().filter(|f| f.0 == rule).map(|f| (f.1, f.2)).collect()
}

#[test]
fn a_driver_that_unloads_with_a_context_linked_is_reported() {
    // PER_STREAM_CONTEXT_LINKED_AT_UNLOAD: a legacy filter must remove its contexts before it
    // unloads, or the file system's teardown calls a FreeCallback in the unloaded image (a crash
    // on Windows; here UNLOADED_DRIVER_CODE_RAN and the routine is not called). The correct
    // driver removes and frees them in its DriverUnload: no finding.
    for broken in [true, false] {
        let (mut m, c) = machine();
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let s = stream(&m, h);
        let x = new_ctx(&m, OWNER_1, 0);
        assert_eq!(insert(&m, s, x), Status::SUCCESS);
        if !broken {
            UNLOAD_REMOVES.with(|u| u.borrow_mut().push((s, OWNER_1, 0)));
        }
        assert_eq!(m.stop("Ctx"), StopResult::Unloaded);
        m.close_handle(h);
        assert!(freed().is_empty(), "broken {broken}: the FreeCallback never runs");
        if !broken {
            assert!(m.findings().is_empty(), "{:?}", m.findings());
            continue;
        }
        assert_eq!(
            rules(&m),
            [Rule::PoolLeaked, Rule::PerStreamContextLinkedAtUnload, Rule::UnloadedDriverCodeRan]
        );
        let (who, text) = &findings_of(&m, Rule::PerStreamContextLinkedAtUnload)[0];
        assert_eq!(who.as_deref(), Some("Ctx"));
        assert!(text.contains("1 FSRTL_PER_STREAM_CONTEXT(s)"), "{text}");
        let (who, text) = &findings_of(&m, Rule::UnloadedDriverCodeRan)[0];
        assert_eq!(who.as_deref(), Some("Ctx"));
        assert!(text.contains("FsRtlTeardownPerStreamContexts"), "{text}");
    }
}

#[test]
fn freeing_a_context_still_linked_is_reported_and_unlinks_it() {
    // PER_STREAM_CONTEXT_FREED_WHILE_LINKED ("Deleting a Per-Stream Context": remove it first,
    // "otherwise the system crashes when the file stream is closed"): the simulator unlinks it,
    // so the teardown neither walks freed memory nor calls its FreeCallback. Removing first is
    // no finding.
    for broken in [true, false] {
        let (mut m, c) = machine();
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let s = stream(&m, h);
        let (x, keep) = (new_ctx(&m, OWNER_1, 0), new_ctx(&m, OWNER_2, 0));
        assert_eq!(insert(&m, s, x), Status::SUCCESS);
        assert_eq!(insert(&m, s, keep), Status::SUCCESS);
        if !broken {
            assert_eq!(remove(&m, s, OWNER_1, 0), x);
        }
        free(&m, x);
        assert_eq!(list(s), [keep], "broken {broken}");
        m.close_handle(h);
        assert_eq!(freed(), [keep]);
        if broken {
            assert_eq!(rules(&m), [Rule::PerStreamContextFreedWhileLinked]);
            let (who, text) = &m.findings().into_iter().map(|f| (f.1, f.2)).next().unwrap();
            assert_eq!(who.as_deref(), Some("Ctx"));
            assert!(text.contains("1 FSRTL_PER_STREAM_CONTEXT(s)"), "{text}");
        } else {
            assert!(m.findings().is_empty(), "{:?}", m.findings());
        }
    }
}

#[test]
fn an_insert_without_owner_or_free_callback_or_of_a_linked_context_is_a_misuse() {
    // PER_STREAM_CONTEXT_MISUSE. FSRTL_PER_STREAM_CONTEXT's page: OwnerId and FreeCallback must
    // be set (the teardown calls the routine unchecked); both are linked all the same, as on
    // Windows, and a NULL FreeCallback is not called. A context already linked (on this stream
    // or another) is left where it is (Windows would corrupt the lists). A lookup with an
    // InstanceId and no OwnerId: the macro's page requires the owner then.
    let (mut m, c) = machine();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let other = m.open(c, "b.txt", CreateOptions::open()).unwrap();
    let (s, t) = (stream(&m, h), stream(&m, other));
    let no_owner = new_ctx(&m, 0, INST_1);
    let no_free = new_ctx(&m, OWNER_2, 0);
    // SAFETY: Ctx's context.
    unsafe { (*(no_free as *mut FSRTL_PER_STREAM_CONTEXT)).FreeCallback = None };
    let x = new_ctx(&m, OWNER_1, 0);
    for y in [no_owner, no_free, x] {
        assert_eq!(insert(&m, s, y), Status::SUCCESS);
    }
    assert_eq!(list(s), [x, no_free, no_owner], "linked all the same");
    assert_eq!(insert(&m, s, x), Status::SUCCESS);
    assert_eq!(insert(&m, t, x), Status::SUCCESS);
    assert_eq!(list(s), [x, no_free, no_owner], "left as it was");
    assert!(list(t).is_empty());
    assert_eq!(lookup(&m, s, 0, INST_1), no_owner, "both ids compared, as Windows does");
    let texts: Vec<String> =
        findings_of(&m, Rule::PerStreamContextMisuse).into_iter().map(|f| f.1).collect();
    assert_eq!(rules(&m), [Rule::PerStreamContextMisuse; 5], "{texts:?}");
    for (text, what) in texts.iter().zip([
        "NULL OwnerId",
        "NULL FreeCallback",
        "already linked on this stream",
        "already linked on another stream",
        "InstanceId and a NULL OwnerId",
    ]) {
        assert!(text.contains(what), "{text} / {what}");
    }
    assert!(m.findings().iter().all(|f| f.1.as_deref() == Some("Ctx")));
    m.close_handle(h);
    assert_eq!(freed(), [x, no_owner], "the NULL FreeCallback is not called");
    free(&m, no_free);
    m.close_handle(other);
    assert_eq!(m.stop("Ctx"), StopResult::Unloaded);
    assert_eq!(rules(&m).len(), 5, "nothing more: {:?}", m.findings());
}

#[test]
fn removing_a_context_another_driver_inserted_is_a_misuse() {
    // PER_STREAM_CONTEXT_MISUSE: FsRtlRemovePerStreamContext with neither id takes the first
    // context, whoever inserted it; the owner's FreeCallback is then never called for it. A
    // removal of one's own (by OwnerId) is no finding.
    let (mut m, c) = machine();
    m.install(ServiceSpec::new("Other", ctx_entry, "legacy"));
    assert_eq!(m.start("Other"), Status::SUCCESS);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let s = stream(&m, h);
    let mine = new_ctx(&m, OWNER_1, 0);
    assert_eq!(insert(&m, s, mine), Status::SUCCESS);
    let theirs = new_ctx_of(&m, "Other", OWNER_2, 0);
    // SAFETY: Other's context on a live stream.
    let st = as_driver(&m, "Other", || unsafe {
        FsRtlInsertPerStreamContext(s as *const _, theirs as *const _)
    });
    assert_eq!(Status(st), Status::SUCCESS);
    assert_eq!(remove(&m, s, OWNER_1, 0), mine);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(remove(&m, s, 0, 0), theirs);
    assert_eq!(rules(&m), [Rule::PerStreamContextMisuse]);
    let (who, text) = &findings_of(&m, Rule::PerStreamContextMisuse)[0];
    assert_eq!(who.as_deref(), Some("Ctx"));
    assert!(text.contains("Other inserted"), "{text}");
    free(&m, mine);
    // SAFETY: Other's pool block, unlinked.
    as_driver(&m, "Other", || unsafe { ExFreePoolWithTag(theirs as *mut c_void, TAG) });
    m.close_handle(h);
    assert!(freed().is_empty());
    assert_eq!(rules(&m).len(), 1);
}

#[test]
fn the_routines_above_apc_level_are_reported() {
    // The four routines' pages: IRQL <= APC_LEVEL (they take the header's fast mutex):
    // IRQL_TOO_HIGH above it, the call done all the same. At APC_LEVEL nothing is reported and
    // a FreeCallback runs at the teardown caller's IRQL.
    for (irql, broken) in [(2, true), (1, false)] {
        let (mut m, c) = machine();
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let s = stream(&m, h);
        let (x, y) = (new_ctx(&m, OWNER_1, 0), new_ctx(&m, OWNER_2, 0));
        as_ctx_at(&m, irql, || unsafe {
            assert_eq!(FsRtlInsertPerStreamContext(s as *const _, x as *const _), 0);
            assert_eq!(FsRtlInsertPerStreamContext(s as *const _, y as *const _), 0);
            let found =
                FsRtlLookupPerStreamContextInternal(s as *const _, OWNER_1 as *const _, null());
            assert_eq!(found as usize, x);
            let r = FsRtlRemovePerStreamContext(s as *const _, OWNER_1 as *const _, null());
            assert_eq!(r as usize, x);
            FsRtlTeardownPerStreamContexts(s as *const _);
        });
        assert_eq!(freed(), [y]);
        assert_eq!(FREED_IN.with(|f| f.borrow()[0].1), irql);
        free(&m, x);
        m.close_handle(h);
        if broken {
            assert_eq!(rules(&m), [Rule::IrqlTooHigh; 5], "{:?}", m.findings());
            let texts: Vec<String> = m.findings().into_iter().map(|f| f.2).collect();
            for name in [
                "FsRtlInsertPerStreamContext",
                "FsRtlLookupPerStreamContextInternal",
                "FsRtlRemovePerStreamContext",
                "FsRtlTeardownPerStreamContexts",
            ] {
                assert!(texts.iter().any(|t| t.contains(name)), "{name}: {texts:?}");
            }
        } else {
            assert!(m.findings().is_empty(), "{:?}", m.findings());
        }
    }
}
