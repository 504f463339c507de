//! Filter Manager, deliverable 6 — verifier rules in the spirit of Filter Verifier (facts.md §4,
//! §5, §9): unknown callback statuses, a completion context with SUCCESS_NO_CALLBACK, PENDING on
//! fast I/O, COMPLETE with STATUS_PENDING, statuses an operation cannot take, callbacks after
//! unload; each breach is a verifier event naming its rule. (Context and section leaks:
//! fltmgr_datascan.rs; forbidden registrations: fltmgr_registration.rs.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod fltcommon;

use std::cell::RefCell;
use std::rc::Rc;

use fltcommon::{Config, Seen, install, machine, mj, rules, seen};
use fsfilter::Status;
use fsfilter_sim::{CreateOptions, EventKind, FsKind, IoMode, Machine, Rule, VolumeId, VolumeSpec};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;

fn setup() -> (Machine, VolumeId) {
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", &[b'a'; 512]));
    m.install_filter_manager();
    m.boot();
    (m, c)
}

fn start(m: &mut Machine, slot: usize, c: Config) {
    let name = c.name.clone();
    install(m, slot, c);
    assert_eq!(m.start(&name), Status::SUCCESS);
}

fn findings_of(m: &Machine, driver: &str) -> Vec<Rule> {
    m.findings()
        .into_iter()
        .filter(|(_, d, _)| d.as_deref() == Some(driver))
        .map(|(r, _, _)| r)
        .collect()
}

#[test]
fn unknown_callback_statuses_are_reported_facts_4() {
    // facts.md §4: Filter Verifier reports unknown callback statuses ("returned an unknown
    // pre-operation callback status"); the simulator then goes on as SUCCESS_NO_CALLBACK /
    // FINISHED_PROCESSING.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Odd", "300000").op(mj::CREATE, true, false).with_pre(|_| (42, 0)),
    );
    start(&mut m, 1, Config::new("OddPost", "200000").op(mj::CREATE, false, true).with_post(|_| 9));
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(findings_of(&m, "Odd"), [Rule::UnknownCallbackStatus]);
    assert_eq!(findings_of(&m, "OddPost"), [Rule::UnknownCallbackStatus]);
    assert!(m.findings().iter().any(|(_, _, msg)| msg.contains("unknown status 42")));
}

#[test]
fn a_completion_context_needs_a_post_callback_facts_4() {
    // facts.md §4: FLT_PREOP_SUCCESS_NO_CALLBACK, PENDING and COMPLETE take no completion
    // context; SUCCESS_WITH_CALLBACK needs a registered post callback.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Ctx", "300000").op(mj::CREATE, true, false).with_pre(|_| (1, 0x1234)),
    );
    start(
        &mut m,
        1,
        Config::new("NoPost", "200000").op(mj::CREATE, true, false).with_pre(|_| (0, 0)),
    );
    m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(findings_of(&m, "Ctx"), [Rule::ContextWithoutPost]);
    assert_eq!(findings_of(&m, "NoPost"), [Rule::PostCallbackMissing]);
    assert_eq!(Rule::ContextWithoutPost.name(), "COMPLETION_CONTEXT_WITHOUT_POST_CALLBACK");
}

#[test]
fn a_completion_context_with_any_other_status_is_reported() {
    // PFLT_PRE_OPERATION_CALLBACK: the completion context is for FLT_PREOP_SUCCESS_WITH_CALLBACK
    // and FLT_PREOP_SYNCHRONIZE; "Otherwise, it must be NULL": DISALLOW_FASTIO (on fast I/O, where
    // it is allowed) and an unknown status alike.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("FastCtx", "300000").op(mj::READ, true, false).with_pre(|p| {
            // FLTFL_CALLBACK_DATA_FAST_IO_OPERATION: disallow the fast read, with a context.
            if p.data().Flags & 0x2 != 0 { (3, 0x1234) } else { (1, 0) }
        }),
    );
    start(
        &mut m,
        1,
        Config::new("OddCtx", "200000").op(mj::CREATE, true, false).with_pre(|_| (42, 0x5678)),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    // The first cached read is an IRP (caching not initiated yet), the second and third are fast
    // I/O, each disallowed with a context.
    for _ in 0..3 {
        let _ = m.read(h, Some(0), 4, IoMode::Cached);
    }
    assert_eq!(findings_of(&m, "FastCtx"), [Rule::ContextWithoutPost, Rule::ContextWithoutPost]);
    assert_eq!(findings_of(&m, "OddCtx"), [Rule::ContextWithoutPost, Rule::UnknownCallbackStatus]);
}

#[test]
fn pending_on_fast_io_is_reported_and_refused_facts_4() {
    // facts.md §4: FLT_PREOP_PENDING is for IRP-based operations only; on fast I/O the simulator
    // reports PENDING_ON_FAST_IO and refuses the fast I/O (the I/O manager builds an IRP).
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("FastPend", "300000")
            .op(mj::READ, true, false)
            .with_pre(|p| if p.data().Flags & 0x2 != 0 { (2, 0) } else { (1, 0) }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    // The first cached read is an IRP, which initiates caching; the second is offered to fast I/O.
    let first = m.read(h, Some(0), 4, IoMode::Cached);
    assert!(!first.fast_io);
    assert!(findings_of(&m, "FastPend").is_empty());
    let r = m.read(h, Some(0), 4, IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    assert!(!r.fast_io);
    assert_eq!(findings_of(&m, "FastPend"), [Rule::PendingOnFastIo]);
}

#[test]
fn complete_with_status_pending_is_reported_facts_4() {
    // facts.md §4: FLT_PREOP_COMPLETE must not use STATUS_PENDING (nor
    // STATUS_FLT_DISALLOW_FAST_IO); cleanup and close cannot fail.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Bad", "300000")
            .op(mj::CREATE, true, false)
            .op(mj::CLEANUP, true, false)
            .with_pre(|p| {
                if p.major() == mj::CREATE {
                    p.set_status(Status::PENDING, 0);
                } else {
                    p.set_status(Status::ACCESS_DENIED, 0);
                }
                (4, 0)
            }),
    );
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::INVALID_DEVICE_STATE, "completed with a status it may take");
    assert_eq!(findings_of(&m, "Bad"), [Rule::CompleteWithPending]);
    fltcommon::reconfigure(0, |cfg| {
        cfg.pre = Some(Rc::new(|p| {
            if p.major() == mj::CREATE {
                return (1, 0);
            }
            p.set_status(Status::ACCESS_DENIED, 0);
            (4, 0)
        }))
    });
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    m.close_handle(h);
    assert_eq!(findings_of(&m, "Bad"), [Rule::CompleteWithPending, Rule::InvalidCompletionStatus]);
}

#[test]
fn statuses_an_operation_cannot_take_are_reported_facts_4() {
    // facts.md §4: DISALLOW_FASTIO is fast-I/O only; MORE_PROCESSING_REQUIRED is IRP-based only.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Wrong", "300000")
            .op(mj::CREATE, true, false)
            .op(mj::READ, false, true)
            .with_pre(|_| (3, 0))
            .with_post(|p| if p.data().Flags & 0x2 != 0 { 1 } else { 0 }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    // The create's DISALLOW_FASTIO; the first read is an IRP (its post finishes), the second
    // fast I/O, whose post answers MORE_PROCESSING_REQUIRED.
    m.read(h, Some(0), 4, IoMode::Cached);
    m.read(h, Some(0), 4, IoMode::Cached);
    assert_eq!(
        findings_of(&m, "Wrong"),
        [Rule::StatusInvalidForOperation, Rule::StatusInvalidForOperation]
    );
}

thread_local! {
    static HELD: RefCell<usize> = const { RefCell::new(0) };
}

#[test]
fn an_unload_that_never_completes_hangs_and_later_callbacks_are_reported_facts_9() {
    // facts.md §9: unload hangs while pended I/O is outstanding (FltUnregisterFilter waits on
    // rundown): the simulator reports DEADLOCK and lets the unload finish; a callback of the
    // unloaded filter that would run later is CALLBACK_AFTER_UNLOAD and is not called.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Stuck", "300000").op(mj::WRITE, true, true).with_pre(|p| {
            if p.data().Flags & 1 != 0 {
                HELD.with(|h| *h.borrow_mut() = p.data as usize);
                return (2, 0);
            }
            (1, 0)
        }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let w = m.write(h, Some(0), &[b'w'; 512], IoMode::NonCached);
    assert_eq!(w.status, Status::PENDING);
    assert_eq!(m.fltmc_unload("Stuck"), Status::SUCCESS);
    assert!(findings_of(&m, "Stuck").contains(&Rule::Deadlock));
    // Someone resumes the held write with a post owed to the unloaded filter.
    let data = HELD.with(|h| *h.borrow());
    unsafe { FltCompletePendedPreOperation(data as *const _, 0, std::ptr::null()) };
    m.settle();
    assert!(rules(&m).contains(&Rule::CallbackAfterUnload));
    assert!(
        !seen(0).iter().any(|s| matches!(s, Seen::Post { .. })),
        "the unloaded filter's post never ran"
    );
    let io = w.io.unwrap();
    assert_eq!(
        m.kernel(|k| k.requests.result(fsfilter_sim::ids::RequestId(io.0))).map(|r| r.0),
        Some(Status::SUCCESS)
    );
    let names: Vec<&str> = m
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Verifier { rule, .. } => Some(rule.name()),
            _ => None,
        })
        .collect();
    assert!(names.contains(&"CALLBACK_AFTER_UNLOAD") && names.contains(&"DEADLOCK"), "{names:?}");
}
