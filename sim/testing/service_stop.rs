//! A filter that registers `FLTFL_REGISTRATION_DO_NOT_SUPPORT_SERVICE_STOP` and an unload
//! callback, through a backend: shared by `legacy/tests/service_stop.rs` and
//! `minifilter/tests/service_stop.rs` (each includes this file with `#[path]` and builds
//! [`Unstoppable`] with its backend's `driver!`).
//!
//! With the flag, service-stop requests fail and the unload callback is not called for them
//! (facts.md §5, §2.6). A service stop is the only unload of the legacy model, so a legacy filter
//! with the flag cannot be unloaded at all; the legacy backend ignored the flag, and `sc stop`
//! unloaded it, before a fix of December 6.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::Cell;

use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, PreOperation, PreOutcome,
    Registration, RegistrationFlags, Result, ServiceParameters, UnloadFlags,
};
use fsfilter_sim::{
    CreateOptions, FsKind, Machine, MachineConfig, ServiceSpec, StopResult, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Unstoppable";

thread_local! {
    /// How many times the unload callback ran.
    static UNLOADS: Cell<u32> = const { Cell::new(0) };
    /// How many pre-create callbacks ran.
    static CREATES: Cell<u32> = const { Cell::new(0) };
}

/// Registers creates, an unload callback and `DO_NOT_SUPPORT_SERVICE_STOP`.
pub(crate) struct Unstoppable;

impl Filter for Unstoppable {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .flags(RegistrationFlags::DO_NOT_SUPPORT_SERVICE_STOP)
        .unload_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Unstoppable)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        CREATES.with(|c| c.set(c.get() + 1));
        PreOutcome::NoPost
    }

    fn unload(&self, _: UnloadFlags) -> Result<()> {
        UNLOADS.with(|u| u.set(u.get() + 1));
        Ok(())
    }
}

/// Opens a file on `c` and answers how many pre-create callbacks the filter saw for it.
fn creates_seen(m: &mut Machine, c: fsfilter_sim::VolumeId) -> u32 {
    let before = CREATES.with(Cell::get);
    let h = m.open(c, "a.txt", CreateOptions::open()).expect("the file opens");
    m.close_handle(h);
    CREATES.with(Cell::get) - before
}

/// Boots a machine with [`Unstoppable`] installed by `install`, stops its service, and checks
/// that the stop fails without calling the unload callback and that the filter stays in place.
pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    UNLOADS.with(|u| u.set(0));
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"x"));
    install(&mut m, ServiceSpec::new(NAME, entry, "test"));
    m.boot();
    assert_eq!(creates_seen(&mut m, c), 1, "attached at boot");
    assert_eq!(m.stop(NAME), StopResult::NotStoppable);
    assert_eq!(UNLOADS.with(Cell::get), 0, "a refused service stop calls no unload callback");
    assert_eq!(creates_seen(&mut m, c), 1, "still attached after the refused stop");
    assert_eq!(m.stop(NAME), StopResult::NotStoppable, "still running");
    assert!(m.findings_text().is_empty(), "{:?}", m.findings_text());
}
