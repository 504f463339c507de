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
    /// Whether a teardown start other than a dismount's releases the held close.
    static RELEASE_AT_UNLOAD: Cell<bool> = const { Cell::new(false) };
}

/// Completes the held close, if any.
fn release() {
    if let Some(token) = TOKEN.with(|t| t.borrow_mut().take()) {
        log("close released");
        token.complete();
    }
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
/// callbacks; the token is completed by the next create, or, when asked, by a teardown start that
/// is not a dismount's.
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

    fn instance_teardown_start(&self, _: &Instance<'_, Volume>, reason: TeardownFlags) {
        log("teardown start");
        if reason != TeardownFlags::VOLUME_DISMOUNT && RELEASE_AT_UNLOAD.with(Cell::get) {
            release();
        }
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
            release();
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

/// A device whose last operation ends while `DriverUnload` walks the driver's device list is not
/// deleted under the walk: its retirement is handed to unload's last loop, which completes the
/// teardown with the reason it started with (docs/reliability.md, "Unload and the devices it
/// walks").
///
/// F: is dismounted with a file open; its close completes in the file system, which deletes the
/// volume device and so calls `FastIoDetachDevice` while the filter still holds the close's post
/// callback: teardown starts (a dismount) and the device is detached, its last operation in
/// flight. Then the service stops. Unload's walk reaches G:'s device first (the newest), and
/// G:'s teardown-start callback releases F:'s close: F:'s device loses its last hold during the
/// walk. It must stay until unload's last loop, which completes G:'s teardown (an unload) and
/// then F:'s (a dismount), each once. With the retirement allowed to delete under the walk, F:'s
/// teardown completes inside G:'s start callback instead, and this fails.
#[test]
fn a_device_retired_during_the_unload_walk_is_deleted_by_unload_with_its_own_reason() {
    let mut m = machine();
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat));
    let g = m.add_volume(VolumeSpec::new("G:", FsKind::Fat));
    install_legacy(&mut m, ServiceSpec::new(NAME, driver::ENTRY, "legacy"));
    m.boot();
    assert_eq!(m.volume_stack_drivers(f), [NAME, "fastfat"]);
    assert_eq!(m.volume_stack_drivers(g), [NAME, "fastfat"]);
    let h = m.create(f, "open.txt", CreateOptions::create()).handle.unwrap();
    // Dismounted with a file open: the volume device stays until that file's close, which the
    // filter holds after the file system has done it (the close is left pending meanwhile).
    assert_eq!(m.dismount(f), Status::SUCCESS);
    m.settle();
    DEFER_NEXT.with(|d| d.set(true));
    RELEASE_AT_UNLOAD.with(|r| r.set(true));
    assert_eq!(m.close_handle(h), Status::PENDING);
    m.settle();
    let seen = callbacks(&m, NAME).len();
    // FastIoDetachDevice came: F:'s teardown started, for the dismount, and waits for the close.
    assert!(m.volume_stack_drivers(f).is_empty(), "{:?}", m.volume_stack_drivers(f));
    assert_eq!(take_log(), ["post close deferred", "teardown start"]);

    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert_eq!(
        take_log(),
        [
            "teardown start",
            "close released",
            "teardown complete",
            "instance dropped",
            "teardown complete",
            "instance dropped"
        ]
    );
    let after: Vec<(String, Callback)> = callbacks(&m, NAME)
        .into_iter()
        .skip(seen)
        .filter(|(_, c)| {
            matches!(c, Callback::TeardownStart { .. } | Callback::TeardownComplete { .. })
        })
        .map(|(v, c)| (v.unwrap_or_default(), c))
        .collect();
    let (unload, dismount) =
        (TeardownFlags::MANDATORY_FILTER_UNLOAD, TeardownFlags::VOLUME_DISMOUNT);
    assert_eq!(
        after,
        [
            ("G:".to_owned(), Callback::TeardownStart { reason: unload }),
            ("G:".to_owned(), Callback::TeardownComplete { reason: unload }),
            ("F:".to_owned(), Callback::TeardownComplete { reason: dismount }),
        ]
    );
    // Nothing reported (the loader reports any pool block, device or reference the unloaded
    // driver left).
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    assert_eq!(m.volume_stack_drivers(g), ["fastfat"]);
}
