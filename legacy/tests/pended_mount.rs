//! Mounts a file system pends, through the legacy backend with the probe sample
//! (`sim/testing/pended_mount.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/pended_mount.rs"]
mod pended_mount;

use common::*;
use fsfilter::MajorFunction;
use fsfilter_sim::{FsKind, StartType, VolumeSpec};
use pended_mount::{Backend, MOUNT_MS, use_volume};

const LEGACY: Backend = Backend {
    machine,
    install: |m, name| install_probe(m, name, StartType::Boot, &[]),
    stack: |m, v| m.volume_stack_drivers(v),
};

#[test]
fn a_filter_attaches_to_a_volume_whose_mount_was_pended() {
    pended_mount::check_mount_step(&LEGACY);
}

#[test]
fn a_pended_mount_at_boot_and_again_after_a_dismount() {
    pended_mount::check_boot_and_remount(&LEGACY);
}

#[test]
fn two_filters_attach_in_order_after_a_pended_mount() {
    // §1.4 (derived): the lowest filter's dispatch resumes first after the file system completes,
    // and attaches first: the order on the volume mirrors the order on the control device,
    // pended or not.
    let mut m = machine();
    let v = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).pend_mount(MOUNT_MS));
    install_probe(&mut m, "ProbeB", StartType::Boot, &[]);
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    let cdo = m.device_stack_drivers(r"\Ntfs");
    assert_eq!(m.volume_stack_drivers(v), cdo);
    assert_eq!(cdo.len(), 3, "{cdo:?}");
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert!(!pres(&m, "ProbeA", MajorFunction::Read).is_empty());
    assert!(!pres(&m, "ProbeB", MajorFunction::Read).is_empty());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

/// E:, mounted by a step, its mount pended 50 ms by NTFS.
fn pended_e() -> VolumeSpec {
    VolumeSpec::new("E:", FsKind::Ntfs).mount(fsfilter_sim::MountWhen::Step).pend_mount(50)
}

/// Mounts `v` and starts ProbeA 10 ms into the pended mount; both succeed.
fn start_probe_a_during_the_mount(m: &mut fsfilter_sim::Machine, v: fsfilter_sim::VolumeId) {
    let started = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = started.clone();
    m.schedule(10, move |m| seen.set(Some(m.start("ProbeA"))));
    assert_eq!(m.mount(v), fsfilter::Status::SUCCESS);
    m.settle();
    assert_eq!(started.get(), Some(fsfilter::Status::SUCCESS), "ProbeA started during the mount");
}

#[test]
fn a_filter_started_while_a_mount_is_pended_attaches_to_that_volume() {
    // facts.md §1.1: the backend registers with IoRegisterFsRegistrationChangeMountAware and
    // SynchronizeWithMounts, so its registration waits for the mount in progress before it
    // enumerates the file system's volumes. Registered without it (before December 6), a filter
    // started while E:'s mount was pended attached to NTFS's control device after the mount
    // request had passed it, and enumerated the volumes before E: was there: it never attached
    // to E:.
    let mut m = machine();
    let v = m.add_volume(pended_e());
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    m.boot();
    start_probe_a_during_the_mount(&mut m, v);
    assert_eq!(m.volume_stack_drivers(v), ["ProbeA", "Ntfs"]);
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert!(!pres(&m, "ProbeA", MajorFunction::Write).is_empty());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_registration_the_simulator_cannot_synchronize_is_flagged() {
    // ProbeB's mount dispatch holds E:'s pended mount in a suspended thread when ProbeA starts.
    // On Windows ProbeA's synchronized registration would wait for that mount and then find E:;
    // the simulator cannot wait for a thread below the registering one on its host stack, so it
    // goes on and says so (docs/simulator.md, "File-system registration"): ProbeA starts, and
    // attaches to E: at its next mount.
    let mut m = machine();
    let v = m.add_volume(pended_e());
    install_probe(&mut m, "ProbeB", StartType::Boot, &[]);
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    m.boot();
    start_probe_a_during_the_mount(&mut m, v);
    let flagged = m.events().iter().any(|e| {
        matches!(&e.kind, fsfilter_sim::EventKind::System { what, .. }
            if *what == "registration_not_synchronized")
    });
    assert!(flagged, "the simulator says the registration was not synchronized");
    assert_eq!(m.dismount(v), fsfilter::Status::SUCCESS);
    m.settle();
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert_eq!(m.volume_stack_drivers(v), ["ProbeA", "ProbeB", "Ntfs"]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
