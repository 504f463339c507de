//! A stop held by another legacy filter above the backend's device on one volume (facts.md §1.9):
//! the I/O manager calls the pending `DriverUnload` from the call that frees the backend's last
//! device, and that call waits for it (docs/simulator.md, "Pending unload"). Here that call is
//! the backend's own deletion of its volume device at a dismount, which detaches the filter
//! above (its `FastIoDetachDevice`). Until a fix of December 6 (third session) the backend's
//! unload waited for that deletion, inside it (`DEADLOCK`; stress seed 0x5eed0b03, whose lab
//! timeline no longer reaches this since every Filter Manager frame is on RAW's control
//! devices too: `stress/tests/regressions.rs`). The filter above is a hand-written one
//! (`sim/tests/fltcommon`), attached to C:'s volume stack only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;
#[path = "../../sim/tests/fltcommon/mod.rs"]
mod fltcommon;

use common::*;
use fsfilter::Status;
use fsfilter_sim::{Callback, FsKind, StartType, StopResult, VolumeSpec};

#[test]
fn a_stop_held_on_one_volume_ends_inside_the_deletion_of_the_backends_device_there() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    fltcommon::make_unloadable(0, fltcommon::LegacyDelete::WorkItem, r"\Device\HarddiskVolume1");
    fltcommon::install_legacy(&mut m, 0, "Above", "FSFilter Encryption", StartType::Demand);
    m.boot();
    assert_eq!(m.start("Above"), Status::SUCCESS);
    assert_eq!(m.volume_stack_drivers(c), ["Above", "ProbeA", "Ntfs"]);
    // Its devices on RAW's and NTFS's control devices are free: they go now; the one under
    // Above on C: holds the stop.
    assert_eq!(m.stop("ProbeA"), StopResult::Pending);
    let unloads = |m: &fsfilter_sim::Machine| {
        callbacks(m, "ProbeA")
            .into_iter()
            .filter(|(_, c)| matches!(c, Callback::UnloadCallback { .. }))
            .count()
    };
    assert_eq!(unloads(&m), 0);
    // The dismount deletes NTFS's volume device; the backend deletes its device above it
    // (FastIoDetachDevice, from its work item), which detaches Above: the last device is free,
    // and the pending unload runs inside that deletion.
    assert_eq!(m.dismount(c), Status::SUCCESS);
    m.settle();
    assert_eq!(unloads(&m), 1, "the pending unload ran");
    assert_eq!(m.stop("ProbeA"), StopResult::NotRunning, "unloaded");
    assert!(m.volume_stack_drivers(c).is_empty(), "{:?}", m.volume_stack_drivers(c));
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
