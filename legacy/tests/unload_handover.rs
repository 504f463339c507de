//! A device whose last operation ends while `DriverUnload` walks the driver's device list is not
//! deleted under the walk: its retirement is handed to unload's last loop, which completes the
//! teardown with the reason it started with (docs/reliability.md, "Unload and the devices it
//! walks").
//!
//! F: is dismounted with a file open; its close completes in the file system, which deletes the
//! volume device and so calls `FastIoDetachDevice` while the filter still holds the close's post
//! callback: teardown starts (a dismount) and the device is detached, its last operation in
//! flight. Then the service stops. Unload's walk reaches G:'s device first (the newest), and
//! G:'s teardown-start callback releases F:'s close: F:'s device loses its last hold during the
//! walk. It must stay until unload's last loop, which completes G:'s teardown (an unload) and
//! then F:'s (a dismount), each once, and leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;

use common::*;
use fsfilter::{
    DeferredPost, Filter, Instance, InstanceSetup, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Status, TeardownFlags, VolumeDeviceType,
};
use fsfilter_sim::{Callback, CreateOptions, FsKind, ServiceSpec, StopResult, VolumeSpec};

const NAME: &str = "Handover";

thread_local! {
    /// The token of the held post-close callback (never dropped by the thread's end, after the
    /// machine, should an assertion fail while it is held).
    static TOKEN: RefCell<Option<ManuallyDrop<DeferredPost>>> = const { RefCell::new(None) };
    /// Whether the next post-close callback holds its operation.
    static HOLD_NEXT: Cell<bool> = const { Cell::new(false) };
    /// Instances dropped so far.
    static DROPPED: Cell<u32> = const { Cell::new(0) };
}

/// The instance state: counts its drops (with the device extension).
struct Volume;

impl Drop for Volume {
    fn drop(&mut self) {
        DROPPED.with(|d| d.set(d.get() + 1));
    }
}

/// Holds a close's post callback when asked to, and releases it from the next teardown start
/// that is not the dismount's.
struct Handover;

impl Filter for Handover {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Close).post())
        .instance_setup_callback(true)
        .teardown_callbacks(true, true)
        .unload_callback(true)
        .validated();
    type InstanceContext = Volume;
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Handover)
    }

    fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<Volume> {
        if setup.volume.device_type == VolumeDeviceType::DiskFileSystem {
            Ok(Volume)
        } else {
            Err(fsfilter::Error::FLT_DO_NOT_ATTACH)
        }
    }

    fn instance_teardown_start(&self, _: &Instance<'_, Volume>, reason: TeardownFlags) {
        if reason != TeardownFlags::VOLUME_DISMOUNT {
            if let Some(token) = TOKEN.with(|t| t.borrow_mut().take()) {
                ManuallyDrop::into_inner(token).complete();
            }
        }
    }

    fn pre_operation(
        &self,
        _: &Instance<'_, Volume>,
        _: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, Volume>,
        op: &mut PostOperation<'_>,
        (): (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        if !HOLD_NEXT.with(|h| h.replace(false)) {
            return PostOutcome::Finished;
        }
        let (token, receipt) = op.defer().expect("a close's post callback can defer");
        TOKEN.with(|t| *t.borrow_mut() = Some(ManuallyDrop::new(token)));
        PostOutcome::MoreProcessing(receipt)
    }
}

mod driver {
    fsfilter_legacy::driver!(super::Handover);
}

/// The teardown callbacks the filter saw, with their volumes, from `from` on.
fn teardowns(m: &fsfilter_sim::Machine, from: usize) -> Vec<(String, Callback)> {
    callbacks(m, NAME)
        .into_iter()
        .skip(from)
        .filter(|(_, c)| {
            matches!(c, Callback::TeardownStart { .. } | Callback::TeardownComplete { .. })
        })
        .map(|(v, c)| (v.unwrap_or_default(), c))
        .collect()
}

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
    // filter holds after the file system has done it.
    assert_eq!(m.dismount(f), Status::SUCCESS);
    m.settle();
    HOLD_NEXT.with(|h| h.set(true));
    // The close goes on in the I/O manager's hands (pended, as the filter holds it).
    assert_eq!(m.close_handle(h), Status::PENDING);
    m.settle();
    assert!(TOKEN.with(|t| t.borrow().is_some()), "the close is held");
    let seen = callbacks(&m, NAME).len();
    // FastIoDetachDevice came: F:'s teardown started, for the dismount, and waits for the close.
    assert!(m.volume_stack_drivers(f).is_empty(), "{:?}", m.volume_stack_drivers(f));
    assert_eq!(DROPPED.with(Cell::get), 0);

    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert!(TOKEN.with(|t| t.borrow().is_none()), "G:'s teardown start released the close");
    let after: Vec<(String, Callback)> = teardowns(&m, seen);
    let unload = TeardownFlags::MANDATORY_FILTER_UNLOAD;
    let dismount = TeardownFlags::VOLUME_DISMOUNT;
    assert!(
        matches!(
            after.iter().map(|(v, c)| (v.as_str(), c)).collect::<Vec<_>>()[..],
            [
                ("G:", Callback::TeardownStart { reason: r1 }),
                ("G:", Callback::TeardownComplete { reason: r2 }),
                ("F:", Callback::TeardownComplete { reason: r3 }),
            ] if *r1 == unload && *r2 == unload && *r3 == dismount
        ),
        "{after:?}"
    );
    // Both instances went, once each; nothing was reported (the loader reports any pool block,
    // device or reference the unloaded driver left).
    assert_eq!(DROPPED.with(Cell::get), 2);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    assert_eq!(m.volume_stack_drivers(g), ["fastfat"]);
}
