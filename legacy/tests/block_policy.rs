//! The legacy-filter block policy (facts.md §1.1): under `IoBlockLegacyFsFilters = 1`,
//! `IoRegisterFsRegistrationChange` returns `STATUS_NOT_SUPPORTED`; the backend's DriverEntry
//! then gives back what it made (its control device, its state) and fails the load with that
//! status, rather than stay loaded attached to nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use fsfilter::Status;
use fsfilter_sim::fsreg::{BLOCK_POLICY_KEY, BLOCK_POLICY_VALUE};
use fsfilter_sim::{CreateOptions, FsKind, Machine, RegValue, StartType, VolumeSpec};

fn set_policy(m: &Machine, value: u32) {
    m.kernel(|k| {
        let key = k.registry.create(BLOCK_POLICY_KEY);
        k.registry.set(key, BLOCK_POLICY_VALUE, RegValue::Dword(value));
    });
}

/// The devices of `service`'s driver objects that are not deleted.
fn live_devices(m: &Machine, service: &str) -> usize {
    m.kernel(|k| {
        k.objects
            .devices
            .iter()
            .filter(|d| !d.deleted && k.objects.driver(d.driver).service == service)
            .count()
    })
}

#[test]
fn a_blocked_legacy_filter_fails_to_load_and_leaves_no_device() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"hello"));
    install_probe(&mut m, "Probe", StartType::Demand, &[]);
    m.boot();
    set_policy(&m, 1);
    assert_eq!(m.start("Probe"), Status::NOT_SUPPORTED);
    assert_eq!(live_devices(&m, "Probe"), 0, "the control device was deleted");
    assert!(findings(&m).is_empty(), "nothing leaked: {:?}", findings(&m));
    // The volume works without it, and nothing of the probe sees the I/O.
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    m.close_handle(h);
    assert!(callbacks(&m, "Probe").is_empty());
    // Without the policy the same service loads and attaches (the simulator reads the value at
    // each registration; docs/simulator.md).
    set_policy(&m, 0);
    assert_eq!(m.start("Probe"), Status::SUCCESS);
    assert!(live_devices(&m, "Probe") > 1, "a control device and attachments");
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
