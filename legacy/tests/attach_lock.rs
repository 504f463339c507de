//! The legacy backend's attach lock is a kernel mutex (`KeInitializeMutex`, acquired with
//! `KeWaitForSingleObject`, released with `KeReleaseMutex`): instance setup, which runs under
//! it, runs at `PASSIVE_LEVEL` (facts.md §2.5) with normal kernel APCs disabled, so the thread
//! that holds the lock cannot be suspended (a normal kernel APC) while it does (Learn, "Mutex
//! Objects": "Acquiring ownership of a mutex prevents the delivery of normal kernel-mode
//! asynchronous procedure calls"). A synchronization event used as a mutex, until December 8,
//! left them enabled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::cell::RefCell;

use common::*;
use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, PreOperation, PreOutcome,
    Registration, Result, ServiceParameters, Status,
};
use fsfilter_sim::{FsKind, ServiceSpec, StartType, VolumeSpec};

thread_local! {
    /// What each instance setup saw: the volume's file system, the IRQL, and whether normal
    /// kernel APCs were disabled.
    static SETUPS: RefCell<Vec<(fsfilter::FilesystemType, u8, bool)>> =
        const { RefCell::new(Vec::new()) };
}

/// Records what its instance setup saw, and attaches.
struct Recorder;

impl Filter for Recorder {
    const REGISTRATION: Registration =
        Registration::new().operation(Operation::new(MajorFunction::Read).pre()).validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Recorder)
    }

    fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<()> {
        let seen = (
            setup.volume.filesystem,
            fsfilter_sim::kernel::current_irql(),
            fsfilter_sim::kmutex::normal_kernel_apcs_disabled(),
        );
        SETUPS.with(|s| s.borrow_mut().push(seen));
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::NoPost
    }
}

mod driver {
    fsfilter_legacy::driver!(super::Recorder);
}

/// Instance setup at mount time (the mount's completion, facts.md §1.4) and for volumes already
/// mounted when the filter starts (`IoEnumerateDeviceObjectList`, §1.5): each at
/// `PASSIVE_LEVEL`, with normal kernel APCs disabled by the attach lock; and none left disabled
/// once attachment is over (the lock released in the thread that took it: no finding).
#[test]
fn instance_setup_runs_at_passive_level_with_normal_kernel_apcs_disabled_under_the_attach_lock() {
    use fsfilter::FilesystemType::{Fat, Ntfs};
    SETUPS.with(|s| s.borrow_mut().clear());
    let mut m = machine();
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_legacy_as(
        &mut m,
        ServiceSpec::new("Recorder", driver::ENTRY, "legacy"),
        StartType::Boot,
    );
    m.boot();
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Fat));
    assert_eq!(m.mount(d), Status::SUCCESS);
    assert_eq!(SETUPS.with(|s| s.borrow().clone()), [(Ntfs, 0, true), (Fat, 0, true)]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    drop(m);

    // Started after the volumes mounted: attached to them from DriverEntry's thread.
    SETUPS.with(|s| s.borrow_mut().clear());
    let mut m = machine();
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_legacy_as(
        &mut m,
        ServiceSpec::new("Recorder", driver::ENTRY, "legacy"),
        StartType::Demand,
    );
    m.boot();
    assert_eq!(m.start("Recorder"), Status::SUCCESS);
    assert_eq!(SETUPS.with(|s| s.borrow().clone()), [(Ntfs, 0, true)]);
    assert!(!fsfilter_sim::kmutex::normal_kernel_apcs_disabled());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
