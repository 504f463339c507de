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

use fltcommon::{Config, Seen, install, machine, mj, rules, seen, start};
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

#[test]
fn synchronize_where_it_is_illegal_is_reported_facts_4() {
    // facts.md §4: FLT_PREOP_SYNCHRONIZE is illegal for oplock FSCTLs,
    // IRP_MN_NOTIFY_CHANGE_DIRECTORY and IRP_MN_LOCK: each is a
    // CALLBACK_STATUS_INVALID_FOR_OPERATION finding against the filter; the same status for the
    // neighbouring requests (unlock, directory query, another FSCTL) is not.
    use fsfilter_sim::{RawBuffer, RawIrp, RawOp};
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Syncer", "300000")
            .op(mj::LOCK_CONTROL, true, true)
            .op(mj::FILE_SYSTEM_CONTROL, true, true)
            .op(0x0c, true, true)
            .with_pre(|_| (5, 0)),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let raw = |op, minor, sl_flags| RawIrp {
        handle: h,
        op,
        minor,
        irp_flags: 0,
        sl_flags,
        user_mode: false,
        buffer: RawBuffer::Null,
        data: &[],
    };
    let lock = RawOp::LockControl { offset: 0, length: Some(16), key: 0 };
    let directory = RawOp::DirectoryControl { length: 0, class: 1, pattern: None, index: 0 };
    let fsctl = |code| RawOp::FileSystemControl { code, input_length: 0, output_length: 0 };
    // (what, request): IRP_MN_LOCK with SL_FAIL_IMMEDIATELY | SL_EXCLUSIVE_LOCK, then
    // IRP_MN_UNLOCK_SINGLE; IRP_MN_NOTIFY_CHANGE_DIRECTORY, then IRP_MN_QUERY_DIRECTORY;
    // FSCTL_REQUEST_OPLOCK_LEVEL_2, then an FSCTL no file system knows.
    let requests = [
        raw(lock, 1, 0x3),
        raw(lock, 2, 0),
        raw(directory, 2, 0),
        raw(directory, 1, 0),
        raw(fsctl(0x0009_0004), 0, 0),
        raw(fsctl(0x0009_0FFF), 0, 0),
    ];
    for r in requests {
        let _ = m.send_irp(r);
    }
    let messages: Vec<String> = m
        .findings()
        .into_iter()
        .map(|(rule, driver, message)| {
            assert_eq!(
                (rule, driver.as_deref()),
                (Rule::StatusInvalidForOperation, Some("Syncer"))
            );
            message
        })
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("FLT_PREOP_SYNCHRONIZE for IRP_MN_LOCK"), "{messages:?}");
    assert!(
        messages[1].contains("FLT_PREOP_SYNCHRONIZE for IRP_MN_NOTIFY_CHANGE_DIRECTORY"),
        "{messages:?}"
    );
    assert!(messages[2].contains("FLT_PREOP_SYNCHRONIZE for an oplock FSCTL"), "{messages:?}");
    // Every one got its post callback all the same.
    assert_eq!(seen(0).iter().filter(|s| matches!(s, Seen::Post { .. })).count(), 6);
}

#[test]
fn synchronize_on_fast_io_is_success_with_callback_facts_4() {
    // facts.md §4: FLT_PREOP_SYNCHRONIZE for an operation that is not IRP-based is treated as
    // FLT_PREOP_SUCCESS_WITH_CALLBACK: the fast I/O goes on (no IRP), the post gets the
    // completion context in the pre's thread, and a fast-I/O IRP_MN_LOCK is no finding.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("FastSync", "300000")
            .op(mj::READ, true, true)
            .op(mj::LOCK_CONTROL, true, true)
            .with_pre(|_| (5, 0x55)),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    // The first cached read is an IRP (it initiates caching), the second fast I/O.
    assert!(!m.read(h, Some(0), 4, IoMode::Cached).fast_io);
    fltcommon::seen_clear(0);
    let r = m.read(h, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, true, &b"aaaa"[..]));
    let lock = fsfilter_sim::IoRequest::Lock {
        handle: h,
        offset: 0,
        length: 16,
        exclusive: true,
        fail_immediately: true,
    };
    let r = m.io(lock);
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, true));
    let calls: Vec<(bool, u8, u32, usize)> = seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Pre { major, data_flags, thread, .. } => {
                Some((false, major, thread, data_flags as usize & 0x2))
            }
            Seen::Post { major, thread, context, data_flags, .. } => {
                assert_eq!(data_flags & 0x2, 0x2, "FLTFL_CALLBACK_DATA_FAST_IO_OPERATION");
                Some((true, major, thread, context))
            }
            _ => None,
        })
        .collect();
    let t = calls[0].2;
    assert_eq!(
        calls,
        [
            (false, mj::READ, t, 0x2),
            (true, mj::READ, t, 0x55),
            (false, mj::LOCK_CONTROL, t, 0x2),
            (true, mj::LOCK_CONTROL, t, 0x55),
        ]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

static GENERIC_RAN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

unsafe extern "system" fn count_generic(
    _item: PFLT_GENERIC_WORKITEM,
    _f: *const std::ffi::c_void,
    _ctx: *const std::ffi::c_void,
) {
    GENERIC_RAN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn a_generic_work_item_freed_while_queued_is_a_bugcheck() {
    // FltFreeGenericWorkItem returns the item's memory to nonpaged pool (its reference page);
    // the item is the queue's link while it waits, so freeing it then frees an active worker
    // item (WORKER_INVALID, 0xE4, parameter 0x1), as IoFreeWorkItem of a queued item does.
    // Freeing it from its own routine (the usual way) or before queueing is fine. Its reference
    // page: IRQL <= DISPATCH_LEVEL, as for FltAllocateGenericWorkItem.
    let mut m = machine(5);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Gwi", "370000"));
    assert_eq!(m.start("Gwi"), Status::SUCCESS);
    let f = fltcommon::filter_handle(0) as *const std::ffi::c_void;
    let item = unsafe { FltAllocateGenericWorkItem() };
    assert_ne!(item, 0);
    assert_eq!(unsafe { FltQueueGenericWorkItem(item, f, Some(count_generic), 1, f) }, 0);
    m.settle();
    assert_eq!(GENERIC_RAN.load(std::sync::atomic::Ordering::SeqCst), 1);
    unsafe { FltFreeGenericWorkItem(item) };
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
    // Freed while still queued.
    let item = unsafe { FltAllocateGenericWorkItem() };
    assert_eq!(unsafe { FltQueueGenericWorkItem(item, f, Some(count_generic), 1, f) }, 0);
    unsafe { FltFreeGenericWorkItem(item) };
    assert_eq!(rules(&m), [Rule::Bugcheck]);
    m.settle();
    // Above DISPATCH_LEVEL.
    let was = fsfilter_sim::kernel::with(|k| {
        let was = k.irql();
        k.set_irql(3);
        was
    });
    let item = unsafe { FltAllocateGenericWorkItem() };
    unsafe { FltFreeGenericWorkItem(item) };
    fsfilter_sim::kernel::with(|k| k.set_irql(was));
    assert_eq!(rules(&m), [Rule::Bugcheck, Rule::IrqlTooHigh, Rule::IrqlTooHigh]);
}

#[test]
fn a_synchronized_oplock_request_holds_its_requester_until_the_break_facts_4() {
    // facts.md §4: FLT_PREOP_SYNCHRONIZE is illegal for oplock FSCTLs. The Filter Manager
    // reports it and synchronizes all the same, as Windows would: the file system pends the
    // granted request until its oplock breaks (docs/simulator.md, "Oplocks"), so the requester,
    // which opened its handle for asynchronous I/O and would have had STATUS_PENDING, is held
    // in the filter until another caller's open breaks the oplock.
    use fsfilter_sim::IoRequest;
    use fsfilter_sim::fs::oplock::{FILE_COMPLETE_IF_OPLOCKED, FILE_OPLOCK_BROKEN_TO_LEVEL_2};
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Syncer", "300000")
            .op(mj::FILE_SYSTEM_CONTROL, true, true)
            .with_pre(|_| (5, 0)),
    );
    let h = m.open(c, "a.txt", CreateOptions::open().overlapped()).unwrap();
    m.schedule(10, move |m| {
        let options = CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED);
        let _ = m.create(c, "a.txt", options);
    });
    let before = m.now_ms();
    let r = m.io(IoRequest::Fsctl { handle: h, code: 0x0009_0000, input: &[], output_length: 0 });
    assert_eq!((r.status, r.information), (Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2));
    assert!(m.now_ms() >= before + 10, "held until the other caller's open broke the oplock");
    let findings = m.findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].0, Rule::StatusInvalidForOperation);
    assert!(findings[0].2.contains("an oplock FSCTL"), "{findings:?}");
}
