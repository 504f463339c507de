//! Where a post-create callback runs, through a backend: shared by `legacy/tests/create_post.rs`
//! and `minifilter/tests/create_post.rs` (each includes this file with `#[path]` and builds
//! [`CreateWatcher`] with its backend's `driver!`).
//!
//! The Filter Manager synchronizes creates: the post-create callback runs at `PASSIVE_LEVEL` in
//! the thread that opened the file (facts.md §4), where the caller's security context and the
//! file object's fresh state are at hand, even when a driver below pends the create and completes
//! it from another thread. The legacy backend gives the same guarantee by waiting for the create's
//! completion in its dispatch routine, as sfilter does (docs/callback-model.md, rule 14).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation, PostFlags, PostOperation,
    PostOutcome, PreOperation, PreOutcome, PreResume, Registration, Result, ServiceParameters,
};
use fsfilter_sim::{CreateOptions, FsKind, Machine, MachineConfig, ServiceSpec, VolumeSpec};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "CreateWatcher";

thread_local! {
    /// (callback, simulated thread, IRQL) of each create callback.
    static SEEN: RefCell<Vec<(&'static str, u32, Irql)>> = const { RefCell::new(Vec::new()) };
    /// The filter pends its own creates, resuming them 5 ms later from a worker.
    static PEND_OWN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The filter pends its own creates and leaves the resumption to the test (in [`HELD`]).
    static HOLD_OWN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The create the filter pended for the test to resume, and the filter's image.
    static HELD: RefCell<Option<(fsfilter::PendedOperation<()>, Option<fsfilter_sim::ids::ImageId>)>> =
        const { RefCell::new(None) };
}

fn record(what: &'static str, irql: Irql) {
    let thread = fsfilter_sim::kernel::with(|k| k.thread.0);
    SEEN.with(|s| s.borrow_mut().push((what, thread, irql)));
}

/// Registers creates, pre and post, and records where each callback runs.
pub(crate) struct CreateWatcher;

impl Filter for CreateWatcher {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(CreateWatcher)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        record("pre", op.services().irql());
        if HOLD_OWN.with(std::cell::Cell::get) {
            if let Some((token, receipt)) = op.pend() {
                let image = fsfilter_sim::kernel::with(|k| k.current_image());
                HELD.with(|h| *h.borrow_mut() = Some((token, image)));
                return PreOutcome::Pending(receipt);
            }
        }
        if PEND_OWN.with(std::cell::Cell::get) {
            if let Some((token, receipt)) = op.pend() {
                token.resume_after(5, PreResume::WithPost(()));
                return PreOutcome::Pending(receipt);
            }
        }
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        record("post", op.services().irql());
        PostOutcome::Finished
    }
}

/// Opens a file through the filter installed by `install`, with `below` (if any) installed first,
/// under it: what the create callbacks saw, and how long the open took (ms).
pub(crate) fn run(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    below: Option<fn(&mut Machine)>,
    pend_own: bool,
) -> (Vec<(&'static str, u32, Irql)>, u64) {
    SEEN.with(|s| s.borrow_mut().clear());
    PEND_OWN.with(|p| p.set(pend_own));
    let mut m = Machine::new(MachineConfig { seed: 13 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[1u8; 512]));
    if let Some(below) = below {
        below(&mut m);
    }
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    SEEN.with(|s| s.borrow_mut().clear());
    let before = m.now_ms();
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    let took = m.now_ms() - before;
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    (SEEN.with(|s| s.borrow().clone()), took)
}

/// The assertions both backends share; `pender` installs a filter that pends creates (for a few
/// milliseconds, then resumes them from a worker thread). `own_pend_in_origin` says where the
/// post-create callback of a create the filter pends itself runs: in the opener's thread with the
/// Filter Manager; in the thread that resumed it with the legacy backend, whose dispatch routine
/// has returned `STATUS_PENDING` by then (docs/semantics.md, post-irql).
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    pender: fn(&mut Machine),
    own_pend_in_origin: bool,
) {
    let (seen, took) = run(install, entry, None, true);
    assert!(took >= 5, "the filter's own pend held the create: {seen:?}");
    let [("pre", pre_thread, Irql::PASSIVE), ("post", post_thread, Irql::PASSIVE)] = seen[..]
    else {
        panic!("one pre and one post create callback at PASSIVE_LEVEL: {seen:?}");
    };
    assert_eq!(post_thread == pre_thread, own_pend_in_origin, "{seen:?}");
    for below in [None, Some(pender)] {
        let (seen, took) = run(install, entry, below, false);
        assert_eq!(took > 0, below.is_some(), "pended below or not: {seen:?}");
        let [("pre", pre_thread, Irql::PASSIVE), ("post", post_thread, post_irql)] = seen[..]
        else {
            panic!("one pre and one post create callback: {seen:?}");
        };
        assert_eq!(
            (post_thread, post_irql),
            (pre_thread, Irql::PASSIVE),
            "the post-create callback runs in the opener's thread at PASSIVE_LEVEL \
             (pended below: {}): {seen:?}",
            below.is_some()
        );
    }
}

/// A create the filter pends itself, through the filter installed by `install` above the probe
/// installed by `pender` (which pends creates for 5 ms and completes them from its own worker
/// thread), resumed 5 ms later by a scheduled action of the test: the post-create callback runs
/// at `PASSIVE_LEVEL` in the opener's thread (`in_origin`: the Filter Manager, which waits for
/// the resumption in its dispatch routine) or in the thread that resumed it (the legacy backend,
/// which waits there for the drivers below). Before a fix of December 6 the legacy backend ran it
/// in their completion, in the probe's worker thread, at whatever IRQL they completed at.
pub(crate) fn check_own_pend_over_a_pend_below(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    pender: fn(&mut Machine),
    in_origin: bool,
) {
    SEEN.with(|s| s.borrow_mut().clear());
    PEND_OWN.with(|p| p.set(false));
    HOLD_OWN.with(|p| p.set(true));
    let mut m = Machine::new(MachineConfig { seed: 13 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[1u8; 512]));
    pender(&mut m);
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    SEEN.with(|s| s.borrow_mut().clear());
    let resumer = std::rc::Rc::new(std::cell::Cell::new(0));
    let r = resumer.clone();
    m.schedule(5, move |_| {
        r.set(fsfilter_sim::kernel::with(|k| k.thread.0));
        let (token, image) =
            HELD.with(|h| h.borrow_mut().take()).expect("the filter pended the create");
        // The filter's own code resumes it (a thread of its driver, say).
        fsfilter_sim::kernel::call_into(image, || token.resume(PreResume::WithPost(())));
    });
    let before = m.now_ms();
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    let took = m.now_ms() - before;
    HOLD_OWN.with(|p| p.set(false));
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let seen = SEEN.with(|s| s.borrow().clone());
    assert!(took >= 10, "both pends held the create: {seen:?}");
    let [("pre", pre_thread, Irql::PASSIVE), ("post", post_thread, Irql::PASSIVE)] = seen[..]
    else {
        panic!("one pre and one post create callback at PASSIVE_LEVEL: {seen:?}");
    };
    let expected = if in_origin { pre_thread } else { resumer.get() };
    assert_ne!(pre_thread, resumer.get(), "resumed from another thread: {seen:?}");
    assert_eq!(post_thread, expected, "in_origin {in_origin}: {seen:?}");
}
