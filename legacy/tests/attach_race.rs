//! A request that reaches a filter's volume device the instant `IoAttachDeviceToDeviceStackSafe`
//! attached it (facts.md §1.2, §1.3): another processor can send one before the attach call has
//! even returned. The simulator runs ready work at that moment (docs/simulator.md); here the
//! filter's own instance setup queues a create on the volume, which so runs right after the
//! attach. The backend must have its lower device by then: it passes the device extension's
//! field as the attach's out parameter, which the I/O manager fills under its lock. Before a fix
//! of December 4 it set the field after the call returned, and the create was sent to a null
//! device.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::cell::{Cell, RefCell};

use common::*;
use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, PreOperation, PreOutcome,
    Registration, Result, ServiceParameters, Status,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoRequest, ServiceSpec, StartType, VolumeId, VolumeSpec,
};

const NAME: &str = "EagerCaller";

thread_local! {
    /// The volume the queued create opens.
    static VOLUME: Cell<Option<VolumeId>> = const { Cell::new(None) };
    /// The queued create's status, once it ran.
    static CREATED: RefCell<Option<Status>> = const { RefCell::new(None) };
}

/// Passes creates through; its instance setup queues a create on the volume being attached.
struct EagerCaller;

impl Filter for EagerCaller {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .instance_setup_callback(true)
        .unload_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(EagerCaller)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        if let Some(volume) = VOLUME.with(Cell::take) {
            // Ready work: the simulator runs it when the attach succeeds, as another
            // processor's request.
            fsfilter_sim::sched::queue_work(
                "eager-create",
                None,
                Box::new(move || {
                    let path = "eager.txt";
                    let r = fsfilter_sim::syscalls::io(IoRequest::Create {
                        volume,
                        path,
                        options: CreateOptions::create(),
                    });
                    CREATED.with(|c| *c.borrow_mut() = Some(r.status));
                }),
            );
        }
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::NoPost
    }
}

mod driver {
    fsfilter_legacy::driver!(super::EagerCaller);
}

#[test]
fn a_request_sent_the_instant_the_attach_succeeds_finds_the_lower_device() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_legacy_as(&mut m, ServiceSpec::new(NAME, driver::ENTRY, "legacy"), StartType::Demand);
    m.boot();
    VOLUME.with(|v| v.set(Some(c)));
    assert_eq!(m.start(NAME), Status::SUCCESS);
    assert_eq!(m.volume_stack_drivers(c), [NAME, "Ntfs"]);
    // The create ran during the attach, through the new device, and reached the file system.
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    assert_eq!(CREATED.with(|c| c.borrow_mut().take()), Some(Status::SUCCESS));
    assert_eq!(pres(&m, NAME, MajorFunction::Create).len(), 1);
}
