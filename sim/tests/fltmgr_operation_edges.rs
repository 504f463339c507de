//! Filter Manager operations at their edges (facts.md §2.4, §4): held posts above a pre that
//! completed a synchronized operation, posted safe callbacks, and other odd filter behaviour.

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

use std::ffi::c_void;

use fltcommon::{
    Config, Seen, hold_post_to_worker, mj, ntfs_machine, order, order_clear, posts, pres, start,
};
use fsfilter::Status;
use fsfilter_sim::CreateOptions;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;

#[test]
fn a_held_post_above_a_completed_create_keeps_the_post_create_in_the_originating_thread() {
    // facts.md §4: post-create runs at PASSIVE_LEVEL in the originating thread. A lower filter
    // completes the create in its pre (FLT_PREOP_COMPLETE); a middle filter holds its
    // post-create and releases it from a worker: the top filter's post-create still runs in the
    // thread that opened the file, as when the create went down to the file system.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(&mut m, 0, Config::new("Sync", "300000").op(mj::CREATE, true, true));
    start(
        &mut m,
        1,
        Config::new("Holder", "200000").op(mj::CREATE, false, true).with_post(hold_post_to_worker),
    );
    start(
        &mut m,
        2,
        Config::new("Deny", "100000").op(mj::CREATE, true, false).with_pre(|p| {
            p.set_status(Status::ACCESS_DENIED, 0);
            (4, 0)
        }),
    );
    order_clear();
    let r = m.open(c, "a.txt", CreateOptions::open());
    assert_eq!(r.err(), Some(Status::ACCESS_DENIED));
    assert_eq!(order(), ["Sync:pre:0", "Deny:pre:0", "Holder:post:0", "finish", "Sync:post:0"]);
    let Seen::Pre { thread: pre_thread, .. } = pres(0)[0].clone() else { panic!() };
    let Seen::Post { thread: post_thread, irql, .. } = posts(0)[0].clone() else { panic!() };
    assert_eq!((post_thread, irql), (pre_thread, 0), "the post-create runs where the create began");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

thread_local! {
    /// The callback data of writes a test filter pended.
    static PENDED: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
    /// What each FltDoCompletionProcessingWhenSafe call answered: (return value, status, flags).
    static WHEN_SAFE: std::cell::RefCell<Vec<(bool, i32, u32)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "system" fn safe_post(
    _d: *mut FLT_CALLBACK_DATA,
    _o: *const FLT_RELATED_OBJECTS,
    _c: *const c_void,
    _f: u32,
) -> i32 {
    0
}

/// A pre callback that pends IRP-based writes and keeps their callback data in [`PENDED`].
fn pend_and_keep(p: &fltcommon::PreCall) -> (i32, usize) {
    if p.data().Flags & 0x1 == 0 {
        return (1, 0);
    }
    PENDED.with(|d| d.borrow_mut().push(p.data as usize));
    (2, 0)
}

#[test]
fn when_safe_from_a_draining_post_is_reported_facts_4() {
    // facts.md §4: FltDoCompletionProcessingWhenSafe must never be called from a post callback
    // with FLTFL_POST_OPERATION_DRAINING (docs/simulator.md: reported as
    // CALLBACK_STATUS_INVALID_FOR_OPERATION, FALSE). The draining post gets a copy of the
    // callback data, which must not make the misuse go unnoticed.
    PENDED.with(|d| d.borrow_mut().clear());
    WHEN_SAFE.with(|w| w.borrow_mut().clear());
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(
        &mut m,
        0,
        Config::new("Drained", "300000").op(mj::WRITE, true, true).with_post(|p| {
            let mut status = -1;
            let ok = unsafe {
                FltDoCompletionProcessingWhenSafe(
                    p.data,
                    p.objects,
                    p.context,
                    p.flags,
                    Some(safe_post),
                    &mut status,
                )
            };
            WHEN_SAFE.with(|w| w.borrow_mut().push((ok, status, p.flags)));
            0
        }),
    );
    start(
        &mut m,
        1,
        Config::new("Pender", "100000").op(mj::WRITE, true, false).with_pre(pend_and_keep),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let r = m.write(h, Some(0), &[b'H'; 512], fsfilter_sim::IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING);
    assert_eq!(m.filter_detach("Drained", c, None), Status::SUCCESS);
    assert_eq!(WHEN_SAFE.with(|w| w.borrow().clone()), [(false, 0, 1)], "drained: FALSE");
    let findings = m.findings();
    assert!(
        findings
            .iter()
            .any(|(rule, driver, message)| *rule == fsfilter_sim::Rule::StatusInvalidForOperation
                && driver.as_deref() == Some("Drained")
                && message.contains("DRAINING")),
        "{findings:?}"
    );
    for data in PENDED.with(|d| std::mem::take(&mut *d.borrow_mut())) {
        unsafe {
            FltCompletePendedPreOperation(data as *const FLT_CALLBACK_DATA, 1, std::ptr::null())
        };
    }
    m.settle();
    assert_eq!(m.completions_of(r.io.unwrap()), [Status::SUCCESS]);
}

#[test]
fn the_filter_manager_frees_the_mdl_a_minifilter_swapped_in() {
    // FltRetainSwappedBufferMdlAddress's page: when a minifilter swaps in a new buffer (and its
    // MDL) in a pre callback, the Filter Manager frees that MDL once the post callback returned,
    // unless the minifilter retains it there (FltGetSwappedBufferMdlAddress names it);
    // SwapBuffers: "The freeing of the MDL (if there is one) is handled by FltMgr". A swapping
    // minifilter that leaves its MDL to the Filter Manager leaks nothing when it is stopped; one
    // that retains it and never frees it leaks it.
    use fsfilter_kernel::params::{self, flt, flt_mut};
    use windows_sys::Wdk::System::SystemServices::IoAllocateMdl;
    for retain in [false, true] {
        let (mut m, c) = ntfs_machine(&[("a.txt", &[9u8; 512])]);
        let swapped: std::rc::Rc<std::cell::Cell<usize>> = Default::default();
        let (s1, s2) = (swapped.clone(), swapped.clone());
        start(
            &mut m,
            0,
            Config::new("Swap", "300000")
                .op(mj::READ, true, true)
                .with_pre(move |p| {
                    if p.data().Flags & 0x1 == 0 {
                        return (1, 0);
                    }
                    let r = unsafe { flt_mut::<params::FltRead>(&mut p.iopb().Parameters) };
                    let buf = Box::leak(vec![0u8; r.Length as usize].into_boxed_slice());
                    let ptr = buf.as_mut_ptr();
                    let mdl = unsafe {
                        IoAllocateMdl(ptr.cast(), r.Length, false, false, std::ptr::null_mut())
                    };
                    assert!(!mdl.is_null());
                    s1.set(mdl as usize);
                    r.ReadBuffer = ptr.cast();
                    r.MdlAddress = mdl;
                    unsafe { FltSetCallbackDataDirty(p.data) };
                    (0, ptr as usize)
                })
                .with_post(move |p| {
                    let r = *unsafe { flt::<params::FltRead>(&(*p.data().Iopb).Parameters) };
                    let n = p.data().IoStatus.Information;
                    // The caller's buffer: the post sees the parameters its pre received.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            p.context.cast::<u8>(),
                            r.ReadBuffer.cast(),
                            n,
                        )
                    };
                    let mine = unsafe { FltGetSwappedBufferMdlAddress(p.data) };
                    assert_eq!(mine as usize, s2.get());
                    if retain {
                        unsafe { FltRetainSwappedBufferMdlAddress(p.data) };
                    }
                    0
                }),
        );
        let h = m.open(c, "a.txt", CreateOptions::open().options(0x8)).unwrap();
        let r = m.read(h, Some(0), 512, fsfilter_sim::IoMode::NonCached);
        assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &[9u8; 512][..]));
        assert_ne!(swapped.get(), 0);
        m.close_handle(h);
        assert_eq!(m.stop("Swap").status(), Status::SUCCESS);
        let rules: Vec<_> = m.findings().into_iter().map(|f| f.0).collect();
        if retain {
            assert_eq!(rules, [fsfilter_sim::Rule::PoolLeaked], "retained, never freed");
        } else {
            assert_eq!(rules, [], "freed by the Filter Manager");
        }
    }
}

thread_local! {
    /// The callback data each posted safe callback ran with.
    static SAFE_RAN: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "system" fn safe_post_recording(
    d: *mut FLT_CALLBACK_DATA,
    _o: *const FLT_RELATED_OBJECTS,
    _c: *const c_void,
    _f: u32,
) -> i32 {
    SAFE_RAN.with(|s| s.borrow_mut().push(d as usize));
    0
}

#[test]
fn a_post_that_finishes_an_operation_it_posted_when_safe_is_reported_facts_4() {
    // facts.md §4: FltDoCompletionProcessingWhenSafe that posts the work (TRUE) gives
    // FLT_POSTOP_MORE_PROCESSING_REQUIRED, which the post callback must return: the worker's
    // safe callback finishes the operation. A post callback that returns
    // FLT_POSTOP_FINISHED_PROCESSING instead lets the operation complete under the queued
    // callback (on Windows it then runs on freed callback data). Reported, and the operation is
    // held for the safe callback, which completes it once.
    SAFE_RAN.with(|s| s.borrow_mut().clear());
    let (mut m, c) = ntfs_machine(&[("a.txt", &[7u8; 512])]);
    m.kernel(|k| k.fs.complete_at_dpc = true);
    start(
        &mut m,
        0,
        Config::new("Careless", "300000").op(mj::READ, true, true).with_post(|p| {
            let mut status = -1;
            let ok = unsafe {
                FltDoCompletionProcessingWhenSafe(
                    p.data,
                    p.objects,
                    p.context,
                    p.flags,
                    Some(safe_post_recording),
                    &mut status,
                )
            };
            assert!(ok && status == 1, "posted: ({ok}, {status})");
            0
        }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open().options(0x8)).unwrap();
    let r = m.read(h, Some(0), 512, fsfilter_sim::IoMode::NonCached);
    m.settle();
    assert_eq!(SAFE_RAN.with(|s| s.borrow().len()), 1, "the safe callback ran");
    assert_eq!(m.completions_of(r.io.unwrap()), [Status::SUCCESS], "completed once");
    let findings = m.findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].0, fsfilter_sim::Rule::StatusInvalidForOperation, "{findings:?}");
    assert_eq!(findings[0].1.as_deref(), Some("Careless"));
}

#[test]
fn when_safe_without_related_objects_is_reported_not_a_host_crash() {
    // A post callback that passes NULL FltObjects to FltDoCompletionProcessingWhenSafe (Windows
    // dereferences it): the simulator reports it and answers FALSE instead of dereferencing it.
    let (mut m, c) = ntfs_machine(&[("a.txt", &[7u8; 512])]);
    let answers: std::rc::Rc<std::cell::RefCell<Vec<(bool, i32)>>> = Default::default();
    let a = answers.clone();
    start(
        &mut m,
        0,
        Config::new("NoObjects", "300000").op(mj::READ, true, true).with_post(move |p| {
            if p.data().Flags & 0x1 == 0 {
                return 0;
            }
            let mut status = -1;
            let ok = unsafe {
                FltDoCompletionProcessingWhenSafe(
                    p.data,
                    std::ptr::null(),
                    p.context,
                    p.flags,
                    Some(safe_post),
                    &mut status,
                )
            };
            a.borrow_mut().push((ok, status));
            0
        }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open().options(0x8)).unwrap();
    let r = m.read(h, Some(0), 512, fsfilter_sim::IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(answers.borrow().as_slice(), [(false, 0)]);
    let rules: Vec<_> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(fsfilter_sim::Rule::InvalidFltObject, Some("NoObjects".to_owned()))]);
}

unsafe extern "system" fn resume_without_callback(
    item: PFLT_GENERIC_WORKITEM,
    _f: *const c_void,
    ctx: *const c_void,
) {
    fltcommon::order_push("resumed".into());
    unsafe { FltCompletePendedPreOperation(ctx.cast(), 1, std::ptr::null()) };
    unsafe { FltFreeGenericWorkItem(item) };
}

#[test]
fn a_synchronized_post_stays_in_its_pre_thread_when_a_pre_below_completes_after_a_pend() {
    // facts.md §4: after FLT_PREOP_SYNCHRONIZE the post runs in the pre callback's thread. A top
    // filter pends a write and resumes it from a worker; in that worker a filter synchronizes
    // it, a lower filter completes it (FLT_PREOP_COMPLETE), and a filter between them holds its
    // post and releases it from another worker: the synchronizing filter's post still runs in
    // the thread its pre ran in.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(
        &mut m,
        0,
        Config::new("Pender", "400000").op(mj::WRITE, true, false).with_pre(|p| {
            if p.data().Flags & 0x1 == 0 {
                return (1, 0);
            }
            fltcommon::queue_work(p.slot, resume_without_callback, p.data);
            (2, 0)
        }),
    );
    start(
        &mut m,
        1,
        Config::new("Sync", "300000")
            .op(mj::WRITE, true, true)
            .with_pre(|p| if p.data().Flags & 0x1 == 0 { (1, 0) } else { (5, 0) }),
    );
    start(
        &mut m,
        2,
        Config::new("Holder", "200000")
            .op(mj::WRITE, false, true)
            .with_post(|p| if p.data().Flags & 0x1 == 0 { 0 } else { hold_post_to_worker(p) }),
    );
    start(
        &mut m,
        3,
        Config::new("Done", "100000").op(mj::WRITE, true, false).with_pre(|p| {
            if p.data().Flags & 0x1 == 0 {
                return (1, 0);
            }
            p.set_status(Status::SUCCESS, 512);
            (4, 0)
        }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    order_clear();
    let r = m.write(h, Some(0), &[b'H'; 512], fsfilter_sim::IoMode::NonCached);
    m.settle();
    assert_eq!(m.completions_of(r.io.unwrap()), [Status::SUCCESS], "completed once");
    assert_eq!(
        order(),
        [
            "Pender:pre:4",
            "resumed",
            "Sync:pre:4",
            "Done:pre:4",
            "Holder:post:4",
            "finish",
            "Sync:post:4"
        ]
    );
    let Seen::Pre { thread: pre_thread, .. } = pres(1).last().cloned().unwrap() else { panic!() };
    let Seen::Post { thread: post_thread, irql, .. } = posts(1)[0].clone() else { panic!() };
    assert_eq!(
        (post_thread, irql),
        (pre_thread, 0),
        "the synchronized post runs where its pre ran"
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
