//! Where the post callback of an IRP the lower driver completes synchronously runs in the legacy
//! model: inside the lower driver's completion, before its dispatch routine returns, as the
//! Filter Manager runs a minifilter's from its completion routine (docs/decisions/0005,
//! docs/semantics.md post-irql).
//!
//! What shows it: a file system deletes a dismounted volume's device from a worker it posts once
//! the volume's last close has completed and its dispatch routine is on its way out
//! (docs/simulator.md, "Dismount"). A post-close callback that waits, letting the machine run ready
//! work, finds no such worker yet, so the instance is torn down after the callback returned. Until
//! December 5 the legacy backend ran this post callback in its dispatch routine, after the file
//! system's had returned, and the teardown started inside it. (A minifilter never sees this close:
//! the Filter Manager tears its instances down at the dismount.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::cell::RefCell;

use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, PostFlags, PostOperation,
    PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters, Status,
    TeardownFlags,
};
use fsfilter_sim::{CreateOptions, FsKind, Machine, MachineConfig, ServiceSpec, VolumeSpec};

/// The service name of the filter under test.
const NAME: &str = "CloseWatcher";

thread_local! {
    /// What the filter saw, in order (the machine runs on the test's thread).
    static LOG: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

fn log(what: &'static str) {
    LOG.with(|l| l.borrow_mut().push(what));
}

/// A post-close callback that waits 1 ms, and the teardown callbacks.
struct CloseWatcher;

impl Filter for CloseWatcher {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Close).post())
        .instance_setup_callback(true)
        .teardown_callbacks(true, true)
        .unload_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(CloseWatcher)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn instance_teardown_start(&self, _: &Instance<'_, ()>, _: TeardownFlags) {
        log("teardown start");
    }

    fn instance_teardown_complete(&self, _: &Instance<'_, ()>, _: TeardownFlags) {
        log("teardown complete");
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
        log("post close begins");
        // At PASSIVE_LEVEL (the file system completes closes in its dispatch routine): the wait
        // lets ready work run meanwhile, as another processor would.
        assert_eq!(op.services().wait(1), Ok(()));
        log("post close ends");
        PostOutcome::Finished
    }
}

mod driver {
    fsfilter_legacy::driver!(super::CloseWatcher);
}

/// The last file of a dismounted FAT volume closes: the post-close callback ran, wait and all,
/// before the file system's worker deleted the volume device and the instance was torn down.
#[test]
fn a_post_callback_of_a_synchronous_irp_runs_inside_the_lower_drivers_completion() {
    let mut m = Machine::new(MachineConfig { seed: 13 });
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat));
    common::install_legacy(&mut m, ServiceSpec::new(NAME, driver::ENTRY, "legacy"));
    m.boot();
    let h = m.create(f, "open.txt", CreateOptions::create()).handle.unwrap();
    assert_eq!(m.dismount(f), Status::SUCCESS);
    m.settle();
    LOG.with(|l| l.borrow_mut().clear());
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    assert_eq!(
        LOG.with(|l| l.borrow().clone()),
        ["post close begins", "post close ends", "teardown start", "teardown complete"]
    );
    assert!(m.volume_stack_drivers(f).is_empty(), "{:?}", m.volume_stack_drivers(f));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
