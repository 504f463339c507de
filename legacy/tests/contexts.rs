//! Stream contexts through the legacy backend (docs/callback-model.md, rule 28): the shared
//! checks of both models (`sim/testing/contexts.rs`, with the legacy `driver!`), then the legacy
//! model's own cases, where the backend, not a Filter Manager, owns the contexts' lifetime
//! against the file system's `FsRtlTeardownPerStreamContexts` (legacy/src/contexts.rs).
//!
//! `Keeper` declares two words; its post-create attaches a context to every file it opens under
//! `\k\` but `lazy.txt` (word 0: a marker from the name, word 1: the opens), its post-read asks
//! for the stream's context both ways, and it records what it sees, in order, with its teardown
//! and `stream_context_freed` callbacks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

#[path = "../../sim/testing/contexts.rs"]
mod contexts;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use fsfilter::{
    ContextRequest, Filter, Instance, InstanceSetup, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Status, TeardownFlags,
};
use fsfilter_sim::{
    CreateOptions, FaultKind, FsKind, Handle, IoMode, Machine, ServiceSpec, StopResult,
};
use fsfilter_sim::{VolumeId, VolumeSpec};
use windows_sys::Wdk::Storage::FileSystem::{
    FSRTL_ADVANCED_FCB_HEADER, FSRTL_PER_STREAM_CONTEXT, FsRtlRemovePerStreamContext,
};

mod counter {
    fsfilter_legacy::driver!(super::contexts::Counter);
}

mod undeclared {
    fsfilter_legacy::driver!(super::contexts::Undeclared);
}

fn install(m: &mut Machine, spec: ServiceSpec) {
    install_legacy(m, spec);
}

contexts::shared_tests!(
    install,
    counter::ENTRY,
    undeclared::ENTRY,
    // The backend allocates its block from pool (ExAllocatePool2).
    FaultKind::Pool,
);

const NAME: &str = "Keeper";

thread_local! {
    /// What the filter saw, in order (the machine runs on the test's thread).
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// The IRQL of each `stream_context_freed`, in order.
    static FREED_AT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn take_freed_at() -> Vec<u8> {
    FREED_AT.with(|f| std::mem::take(&mut *f.borrow_mut()))
}

fn log(what: String) {
    LOG.with(|l| l.borrow_mut().push(what));
}

fn take_log() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// The marker of a file under `\k\`: its name's first letter.
fn marker(name: &str) -> Option<u64> {
    let file = name.strip_prefix(r"\k\")?;
    file.bytes().next().map(u64::from)
}

fn words(w: &[AtomicU64]) -> Vec<u64> {
    w.iter().map(|w| w.load(Ordering::Relaxed)).collect()
}

/// See the module's documentation.
struct Keeper;

impl Filter for Keeper {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).post())
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .teardown_callbacks(true, true)
        .unload_callback(true)
        .validated();
    const STREAM_CONTEXT_WORDS: usize = 2;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Keeper)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn instance_teardown_start(&self, _: &Instance<'_, ()>, reason: TeardownFlags) {
        log(format!("teardown start {reason:?}"));
    }

    fn instance_teardown_complete(&self, _: &Instance<'_, ()>, reason: TeardownFlags) {
        log(format!("teardown complete {reason:?}"));
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        (): (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let name = op.file_name().map(|n| n.to_string()).unwrap_or_default();
        let Some(mark) = marker(&name) else { return PostOutcome::Finished };
        let services = op.services();
        match op.major() {
            MajorFunction::Create if op.opened() && !name.ends_with("lazy.txt") => {
                let c = services.stream_context(ContextRequest::GetOrCreate).unwrap();
                if c.created() {
                    c.word(0).unwrap().store(mark, Ordering::Relaxed);
                }
                c.word(1).unwrap().fetch_add(1, Ordering::Relaxed);
                log(format!("open {name} {:?}", words(c.words())));
            }
            MajorFunction::Read => {
                for request in [ContextRequest::Get, ContextRequest::GetOrCreate] {
                    let answer = services.stream_context(request);
                    let seen = answer.map(|c| words(c.words())).map_err(|e| e.status());
                    log(format!("read {name} {request:?} {seen:?}"));
                }
            }
            _ => {}
        }
        PostOutcome::Finished
    }

    fn stream_context_freed(&self, words: &[AtomicU64]) {
        log(format!("freed {:?}", self::words(words)));
        FREED_AT.with(|f| f.borrow_mut().push(fsfilter_sim::kernel::current_irql()));
    }
}

mod driver {
    fsfilter_legacy::driver!(super::Keeper);
}

/// `C:` (NTFS) with `\k\a.txt`, `\k\b.txt` and `\k\lazy.txt`, and `Keeper` on it.
fn keeper_machine(pender: Option<&str>) -> (Machine, VolumeId) {
    let mut m = machine();
    let mut spec = VolumeSpec::new("C:", FsKind::Ntfs);
    for f in ["a", "b", "lazy"] {
        spec = spec.file(&format!(r"k\{f}.txt"), &[5; 4096]);
    }
    let c = m.add_volume(spec);
    if let Some(rules) = pender {
        install_pender(&mut m, rules);
    }
    install_legacy(&mut m, ServiceSpec::new(NAME, driver::ENTRY, "legacy"));
    m.boot();
    (m, c)
}

fn open(m: &mut Machine, c: VolumeId, path: &str) -> Handle {
    m.open(c, path, CreateOptions::open()).unwrap()
}

/// The contexts FsRtl has linked on the simulated streams: (context, stream).
fn linked(m: &Machine) -> Vec<(usize, usize)> {
    m.kernel(|k| k.perstream.linked.iter().map(|(&p, l)| (p, l.stream)).collect())
}

/// The unload's teardown, as the filter logs it.
const START: &str = "teardown start TeardownFlags(MANDATORY_FILTER_UNLOAD)";
const COMPLETE: &str = "teardown complete TeardownFlags(MANDATORY_FILTER_UNLOAD)";

const A: u64 = b'a' as u64;
const B: u64 = b'b' as u64;

#[test]
fn unload_removes_every_context_it_inserted_before_it_returns() {
    let (mut m, c) = keeper_machine(None);
    let ha = open(&mut m, c, r"k\a.txt");
    let ha2 = open(&mut m, c, r"k\a.txt");
    let hb = open(&mut m, c, r"k\b.txt");
    assert_eq!(
        take_log(),
        [r"open \k\a.txt [97, 1]", r"open \k\a.txt [97, 2]", r"open \k\b.txt [98, 1]"]
    );
    assert_eq!(linked(&m).len(), 2, "one context per stream");
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    // Both contexts freed, once each, with their words, while the instance tore down: after its
    // start, before its completion.
    let l = take_log();
    assert_eq!(l.first().map(String::as_str), Some(START));
    assert_eq!(l.last().map(String::as_str), Some(COMPLETE));
    let mut freed: Vec<&String> = l.iter().filter(|e| e.starts_with("freed")).collect();
    freed.sort();
    assert_eq!(freed, [&format!("freed [{A}, 2]"), &format!("freed [{B}, 1]")], "{l:?}");
    // Nothing of the driver is left on the streams, whose file objects are still open.
    assert_eq!(linked(&m), []);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    // The streams go afterwards: no FreeCallback of the unloaded driver is called.
    assert_eq!(m.read(ha, Some(0), 4, IoMode::Cached).data, [5; 4]);
    for h in [ha, ha2, hb] {
        assert_eq!(m.close_handle(h), Status::SUCCESS);
    }
    m.settle();
    assert_eq!(take_log(), Vec::<String>::new());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_context_block_is_tagged_as_a_stream_context_not_as_a_completion_context() {
    // Pool tags tell a driver's allocations apart (!poolused, Driver Verifier's pool tracking):
    // the backend's completion contexts are `FsfC` (fsfilter-kernel's context.rs), so its stream
    // context blocks are `FsfK`, as the minifilter backend's FLT_CONTEXT_REGISTRATION tags them.
    let (mut m, c) = keeper_machine(None);
    let h = open(&mut m, c, r"k\a.txt");
    let [(context, _)] = linked(&m)[..] else { panic!("{:?}", linked(&m)) };
    // The FSRTL_PER_STREAM_CONTEXT is the head of the backend's block.
    let tag = m.kernel(|k| k.pool.blocks.get(&context).map(|b| b.tag));
    assert_eq!(tag.map(|t| t.to_le_bytes()), Some(*b"FsfK"));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn an_unload_waits_for_the_free_callback_of_a_context_the_teardown_unlinked() {
    // On a multiprocessor the file system's FsRtlTeardownPerStreamContexts can unlink a context
    // (under the header's mutex) and be about to call its FreeCallback when the backend's unload
    // removes the instance's contexts: FsRtlRemovePerStreamContext no longer finds that one, and
    // its FreeCallback is still to come. The simulator runs the teardown's two steps back to
    // back, so the test takes them apart by hand: it unlinks the context as the teardown does,
    // and calls its FreeCallback in the driver's image 5 ms into the unload.
    let (mut m, c) = keeper_machine(None);
    let h = open(&mut m, c, r"k\a.txt");
    take_log();
    let [(context, stream)] = linked(&m)[..] else { panic!("{:?}", linked(&m)) };
    let image = m.kernel(|k| k.perstream.linked[&context].image).expect("inserted by the driver");
    // SAFETY: the live FCB header of an open stream; what the teardown does first.
    let unlinked = unsafe {
        FsRtlRemovePerStreamContext(
            stream as *const FSRTL_ADVANCED_FCB_HEADER,
            core::ptr::null(),
            core::ptr::null(),
        )
    };
    assert_eq!(unlinked as usize, context);
    // SAFETY: the context the driver inserted, not freed: unlinked, it is the teardown's.
    let field = unsafe { (*(context as *const FSRTL_PER_STREAM_CONTEXT)).FreeCallback };
    let free = fsfilter_legacy::fsfilter_kernel::ntos::free_function_from_field(field).unwrap();
    m.schedule(5, move |m| {
        let loaded = m.kernel(|k| k.image_loaded(image));
        log(format!("FreeCallback, driver loaded: {loaded}"));
        if loaded {
            // SAFETY: the unlinked context's routine, called once with it, in its image.
            fsfilter_sim::kernel::call_into(Some(image), || unsafe { free(context as *mut _) });
        }
    });
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    m.settle();
    assert_eq!(
        take_log(),
        [START, "FreeCallback, driver loaded: true", &format!("freed [{A}, 1]"), COMPLETE,]
    );
    assert!(m.now_ms() >= 5, "the unload waited for the FreeCallback");
    assert_eq!(linked(&m), []);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    assert_eq!(take_log(), Vec::<String>::new());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_post_callback_after_the_teardown_started_finds_contexts_but_attaches_none() {
    // The pender below holds the reads 50 ms; the stop comes at 10 ms, starts the teardown and
    // waits for them. Their post callbacks: the stream with a context finds it (both ways), the
    // one without gets none (STATUS_FLT_DELETING_OBJECT).
    let (mut m, c) = keeper_machine(Some("pend:50 read"));
    let ha = open(&mut m, c, r"k\a.txt");
    let hl = open(&mut m, c, r"k\lazy.txt");
    take_log();
    let stopped = std::rc::Rc::new(std::cell::Cell::new(None));
    let result = stopped.clone();
    m.schedule(10, move |m| result.set(Some(m.stop(NAME))));
    m.schedule(1, move |m| {
        assert_eq!(m.read(hl, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    });
    assert_eq!(m.read(ha, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    m.settle();
    assert_eq!(stopped.get(), Some(StopResult::Unloaded));
    let l = take_log();
    let deleting = Err::<Vec<u64>, _>(Status::FLT_DELETING_OBJECT);
    let not_found = Err::<Vec<u64>, _>(Status::NOT_FOUND);
    assert_eq!(
        l,
        [
            START.to_owned(),
            format!(r"read \k\a.txt Get {:?}", Ok::<_, Status>(vec![A, 1])),
            format!(r"read \k\a.txt GetOrCreate {:?}", Ok::<_, Status>(vec![A, 1])),
            format!(r"read \k\lazy.txt Get {not_found:?}"),
            format!(r"read \k\lazy.txt GetOrCreate {deleting:?}"),
            format!("freed [{A}, 1]"),
            COMPLETE.to_owned(),
        ]
    );
    assert_eq!(linked(&m), []);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    for h in [ha, hl] {
        assert_eq!(m.close_handle(h), Status::SUCCESS);
    }
    m.settle();
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_dismount_with_a_stream_open_frees_its_context_at_the_last_close_before_the_teardown() {
    // Dismounted with a file open, the volume's device stays until that file's last close. The
    // close tears the stream down (the file system's FsRtlTeardownPerStreamContexts calls the
    // backend's FreeCallback), then the file system deletes the volume device: the instance's
    // teardown starts (FastIoDetachDevice) and completes with no context left to remove.
    let mut m = machine();
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat).file(r"k\a.txt", &[5; 512]));
    install_legacy(&mut m, ServiceSpec::new(NAME, driver::ENTRY, "legacy"));
    m.boot();
    let h = open(&mut m, f, r"k\a.txt");
    assert_eq!(take_log(), [r"open \k\a.txt [97, 1]"]);
    assert_eq!(m.dismount(f), Status::SUCCESS);
    m.settle();
    assert_eq!(take_log(), Vec::<String>::new(), "nothing goes while the file is open");
    assert_eq!(linked(&m).len(), 1);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    assert_eq!(
        take_log(),
        [
            format!("freed [{A}, 1]"),
            "teardown start TeardownFlags(VOLUME_DISMOUNT)".to_owned(),
            "teardown complete TeardownFlags(VOLUME_DISMOUNT)".to_owned(),
        ]
    );
    assert_eq!(linked(&m), []);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert_eq!(take_log(), Vec::<String>::new());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn the_last_close_of_a_stream_frees_its_context_through_the_free_callback() {
    // The file system's teardown of the stream, while the filter stays: FreeCallback, freed once
    // with the final words, nothing left on the stream or in the backend's list (the unload that
    // follows has nothing to remove).
    let (mut m, c) = keeper_machine(None);
    let h1 = open(&mut m, c, r"k\b.txt");
    let h2 = open(&mut m, c, r"k\b.txt");
    assert_eq!(m.close_handle(h1), Status::SUCCESS);
    m.settle();
    assert_eq!(take_log(), [r"open \k\b.txt [98, 1]", r"open \k\b.txt [98, 2]"]);
    assert_eq!(m.close_handle(h2), Status::SUCCESS);
    m.settle();
    assert_eq!(take_log(), [format!("freed [{B}, 2]")]);
    assert_eq!(linked(&m), []);
    // Opened again: a new context.
    let h = open(&mut m, c, r"k\b.txt");
    assert_eq!(take_log(), [r"open \k\b.txt [98, 1]"]);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    assert_eq!(take_log(), [format!("freed [{B}, 1]")]);
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert_eq!(take_log(), [START, COMPLETE]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_free_callback_frees_at_apc_level_under_the_context_lock_and_the_unload_at_passive_level() {
    // The context lock is a fast mutex (ExAcquireFastMutex raises to APC_LEVEL). The file
    // system's teardown at the last close calls the FreeCallback, which drops the attachment's
    // reference, the last, under the lock: stream_context_freed runs at APC_LEVEL (rule 28: at
    // IRQL <= APC_LEVEL). The unload's sweep removes the other context under the lock and
    // releases it after: PASSIVE_LEVEL.
    let (mut m, c) = keeper_machine(None);
    let ha = open(&mut m, c, r"k\a.txt");
    let _hb = open(&mut m, c, r"k\b.txt");
    take_log();
    take_freed_at();
    assert_eq!(m.close_handle(ha), Status::SUCCESS);
    m.settle();
    assert_eq!(take_log(), [format!("freed [{A}, 1]")]);
    assert_eq!(take_freed_at(), [1], "APC_LEVEL, under the fast mutex");
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert_eq!(take_log(), [START.to_owned(), format!("freed [{B}, 1]"), COMPLETE.to_owned()]);
    assert_eq!(take_freed_at(), [0], "PASSIVE_LEVEL, after the lock");
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
