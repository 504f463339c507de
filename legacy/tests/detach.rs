//! `FastIoDetachDevice` while an operation is still in flight through the filter's device
//! (facts.md §1.7, docs/callback-model.md rule 20).
//!
//! A file system deletes a dismounted volume's device once the volume's last file closes; the
//! simulator's do it from a worker posted when that close completes in the file system
//! (docs/simulator.md "Dismount"). The worker can run before the close has finished in the
//! filter above: here the filter's post-close callback defers (`MoreProcessing`) and keeps its
//! token, so the close is still held when the machine runs that worker. The I/O manager then
//! calls `FastIoDetachDevice` with the close in flight: the backend must detach at once but
//! complete the teardown, and drop the instance, only once that close went on, which happens
//! later, when another caller's open on another volume lets the filter complete the token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::cell::{Cell, RefCell};

use common::*;
use fsfilter::{
    DeferredPost, Filter, Instance, InstanceSetup, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Status, TeardownFlags,
};
use fsfilter_sim::{Callback, CreateOptions, FsKind, ServiceSpec, StopResult, VolumeSpec};

const NAME: &str = "CloseWaiter";

thread_local! {
    /// What the filter saw, in order (the machine runs on the test's thread).
    static LOG: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    /// The token of the deferred post-close callback.
    static TOKEN: RefCell<Option<DeferredPost>> = const { RefCell::new(None) };
    /// Whether the next post-close callback defers.
    static DEFER_NEXT: Cell<bool> = const { Cell::new(false) };
}

fn log(what: &'static str) {
    LOG.with(|l| l.borrow_mut().push(what));
}

fn take_log() -> Vec<&'static str> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// The instance state: says when the backend drops it (with the device extension).
struct Volume;

impl Drop for Volume {
    fn drop(&mut self) {
        log("instance dropped");
    }
}

/// A post-close callback that defers and keeps its token when asked to, and both teardown
/// callbacks.
struct CloseWaiter;

impl Filter for CloseWaiter {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .operation(Operation::new(MajorFunction::Close).post())
        .instance_setup_callback(true)
        .teardown_callbacks(true, true)
        .unload_callback(true)
        .validated();
    type InstanceContext = Volume;
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(CloseWaiter)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<Volume> {
        Ok(Volume)
    }

    fn instance_teardown_start(&self, _: &Instance<'_, Volume>, _: TeardownFlags) {
        log("teardown start");
    }

    fn instance_teardown_complete(&self, _: &Instance<'_, Volume>, _: TeardownFlags) {
        log("teardown complete");
    }

    fn pre_operation(
        &self,
        _: &Instance<'_, Volume>,
        op: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        if op.major() == MajorFunction::Create {
            if let Some(token) = TOKEN.with(|t| t.borrow_mut().take()) {
                log("close released");
                token.complete();
            }
            return PreOutcome::NoPost;
        }
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, Volume>,
        op: &mut PostOperation<'_>,
        (): (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        if !DEFER_NEXT.with(|d| d.replace(false)) {
            return PostOutcome::Finished;
        }
        log("post close deferred");
        let (token, receipt) = op.defer().expect("a close's post callback can defer");
        TOKEN.with(|t| *t.borrow_mut() = Some(token));
        PostOutcome::MoreProcessing(receipt)
    }
}

mod driver {
    fsfilter_legacy::driver!(super::CloseWaiter);
}

#[test]
fn a_volume_device_deleted_under_an_operation_in_flight_is_torn_down_after_it() {
    let mut m = machine();
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat));
    install_legacy(&mut m, ServiceSpec::new(NAME, driver::ENTRY, "legacy"));
    m.boot();
    assert_eq!(m.volume_stack_drivers(f), [NAME, "fastfat"]);
    let h = m.create(f, "open.txt", CreateOptions::create()).handle.unwrap();
    // Dismounted with a file open: the volume device stays until that file's close.
    assert_eq!(m.dismount(f), Status::SUCCESS);
    m.settle();
    let _ = take_log();
    DEFER_NEXT.with(|d| d.set(true));
    // Another caller opens a file on another volume 5 ms later, while the close is held.
    let g = m.add_volume(VolumeSpec::new("G:", FsKind::Fat));
    m.schedule(5, move |m| {
        let h = m.create(g, "other.txt", CreateOptions::create()).handle.unwrap();
        assert_eq!(m.close_handle(h), Status::SUCCESS);
    });
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    // FastIoDetachDevice came with the close held by the filter (teardown start, and the detach,
    // at once), but teardown complete and the instance's end waited for that close to go on, 5 ms
    // later (rule 20).
    assert_eq!(
        take_log(),
        [
            "post close deferred",
            "teardown start",
            "close released",
            "teardown complete",
            "instance dropped"
        ]
    );
    let calls: Vec<Callback> = callbacks(&m, NAME)
        .into_iter()
        .filter(|(volume, _)| volume.as_deref() == Some("F:"))
        .map(|(_, c)| c)
        .filter(|c| {
            matches!(
                c,
                Callback::Post { major: MajorFunction::Close, .. }
                    | Callback::TeardownStart { .. }
                    | Callback::TeardownComplete { .. }
            )
        })
        .collect();
    let last = calls.len() - 3;
    assert!(
        matches!(
            calls[last..],
            [
                Callback::Post { major: MajorFunction::Close, status: Status::SUCCESS, .. },
                Callback::TeardownStart { reason: TeardownFlags::VOLUME_DISMOUNT },
                Callback::TeardownComplete { reason: TeardownFlags::VOLUME_DISMOUNT },
            ]
        ),
        "{calls:?}"
    );
    assert!(m.volume_stack_drivers(f).is_empty(), "{:?}", m.volume_stack_drivers(f));
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    // Mounted again: a new instance; and the driver leaves nothing behind when it stops.
    let h = m.create(f, "x.txt", CreateOptions::create()).handle.unwrap();
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(m.volume_stack_drivers(f), [NAME, "fastfat"]);
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
