//! Unloading the legacy backend (facts.md §1.9): the I/O manager calls DriverUnload once the
//! driver's devices are at the top of their stacks and unreferenced; the backend detaches, waits
//! for in-flight operations to drain, tears the instances down and deletes its devices, so that
//! no code of the driver runs after DriverUnload returns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

use common::*;
use fsfilter::{Status, TeardownFlags, UnloadFlags};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, IoMode, StartType, StopResult, VolumeSpec,
};

#[test]
fn unload_while_a_request_is_pended_waits_for_it() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[9u8; 1024]));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[("Rules", sz("pend:100 read"))]);
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let stopped = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = stopped.clone();
    m.schedule(10, move |m| seen.set(Some(m.stop("ProbeA"))));
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS, "the pended read finished");
    assert_eq!(stopped.get(), Some(StopResult::Unloaded));
    // Order: the read was pended, the unload began (unload callback, teardown start), the read
    // resumed and completed with its post callback, then the instance was torn down and the
    // driver unloaded.
    let k = kinds(&m);
    let pos =
        |what: &str| k.iter().position(|x| x == what).unwrap_or_else(|| panic!("{what} in {k:?}"));
    let rpos = |what: &str| k.iter().rposition(|x| x == what).unwrap();
    assert!(pos("ProbeA:unload_callback") < pos("ProbeA:resumed"), "{k:?}");
    assert!(pos("ProbeA:resumed") < rpos("ProbeA:post"), "{k:?}");
    assert!(rpos("ProbeA:post") < pos("ProbeA:teardown_complete"), "{k:?}");
    assert!(pos("ProbeA:teardown_complete") < pos("ProbeA:unload"), "{k:?}");
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    // Nothing of the driver ran after it unloaded, and it left nothing behind.
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    // The volume still works without it.
    assert_eq!(m.read(h, Some(0), 4, IoMode::Cached).data, [9u8; 4]);
    m.close_handle(h);
}

#[test]
fn a_service_stop_is_mandatory_and_a_refusal_is_only_reported() {
    // The legacy model has no non-mandatory unload: `sc stop` calls DriverUnload, which cannot
    // fail; the filter's unload callback is told MANDATORY and its answer is ignored
    // (docs/semantics.md).
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[("Unload", sz("refuse"))]);
    m.boot();
    assert_eq!(m.stop("ProbeA"), StopResult::Unloaded);
    let cbs = callbacks(&m, "ProbeA");
    assert!(cbs.iter().any(|(_, c)| *c
        == Callback::UnloadCallback { flags: UnloadFlags::MANDATORY, status: Status::SUCCESS }));
    assert!(cbs.iter().any(|(v, c)| v.as_deref() == Some("C:")
        && *c == Callback::TeardownComplete { reason: TeardownFlags::MANDATORY_FILTER_UNLOAD }));
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn without_an_unload_callback_the_driver_cannot_be_stopped() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[("Unload", sz("none"))]);
    m.boot();
    assert_eq!(m.stop("ProbeA"), StopResult::NotStoppable);
    assert_eq!(m.volume_stack_drivers(c), ["ProbeA", "Ntfs"]);
    let unload = m.events().into_iter().find_map(|e| match e.kind {
        EventKind::Unload { driver, status, .. } if driver == "ProbeA" => Some(status),
        _ => None,
    });
    assert_eq!(unload, Some(StopResult::NotStoppable.status()));
}

#[test]
fn a_stop_waits_while_another_driver_is_attached_above() {
    // facts.md §1.9: DriverUnload only once every device of the driver is at the top of its
    // stack: with ProbeB above ProbeA, stopping ProbeA stays pending until ProbeB goes.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    install_probe(&mut m, "ProbeB", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.volume_stack_drivers(c), ["ProbeB", "ProbeA", "Ntfs"]);
    assert_eq!(m.stop("ProbeA"), StopResult::Pending);
    assert_eq!(m.volume_stack_drivers(c), ["ProbeB", "ProbeA", "Ntfs"]);
    assert_eq!(m.stop("ProbeB"), StopResult::Unloaded);
    m.settle();
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_stop_tears_down_detaches_and_deletes_every_device_however_many() {
    // One device per volume and per file system: the backend once listed at most 128 of them at
    // unload, so the rest stayed attached (and their instances never torn down) after the
    // driver's state was freed.
    let mut m = machine();
    let volumes: Vec<_> = (0..140)
        .map(|i| {
            m.add_volume(VolumeSpec::new(&format!(r"\Device\HarddiskVolume{i}"), FsKind::Ntfs))
        })
        .collect();
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    assert!(volumes.iter().all(|&v| m.volume_stack_drivers(v) == ["ProbeA", "Ntfs"]));
    assert_eq!(m.stop("ProbeA"), StopResult::Unloaded);
    for &v in &volumes {
        assert_eq!(m.volume_stack_drivers(v), ["Ntfs"], "{v:?}");
    }
    let torn_down = callbacks(&m, "ProbeA")
        .iter()
        .filter(|(_, c)| {
            *c == Callback::TeardownComplete { reason: TeardownFlags::MANDATORY_FILTER_UNLOAD }
        })
        .count();
    assert_eq!(torn_down, volumes.len());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
