//! RAW volumes through the minifilter backend with the probe sample.
//!
//! facts.md §1.1: `IoRegisterFsRegistrationChange` never reports RAW's control devices; a legacy
//! filter that wants RAW attaches to `\Device\RawDisk` and `\Device\RawCdRom` by name (§1.2
//! step 6). The Filter Manager is a legacy filter, and it offers RAW volumes to instance setup as
//! `FLT_FSTYPE_RAW` (facts.md §7's `FLT_FILESYSTEM_TYPE`): each frame attaches to RAW's control
//! devices by name when it is created (sim/src/fltmgr/frames.rs `attach_raw`, docs/simulator.md,
//! Filter Manager "Volumes").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use fsfilter::{FilesystemType, InstanceSetupFlags as F, MajorFunction, Status};
use fsfilter_sim::{
    Callback, CreateOptions, FsKind, Machine, MountWhen, StartType, VolumeId, VolumeSpec,
};

/// The file system each instance setup of `driver` was told, with its volume and answer.
fn setup_filesystems(m: &Machine, driver: &str) -> Vec<(Option<String>, FilesystemType, Status)> {
    callbacks(m, driver)
        .into_iter()
        .filter_map(|(v, c)| match c {
            Callback::InstanceSetup { volume, status, .. } => Some((v, volume.filesystem, status)),
            _ => None,
        })
        .collect()
}

/// A machine with the Filter Manager, the probe as `ProbeA` (`start`, 370000, `params`) and a
/// volume X: with blank media (only RAW mounts it); booted, and the media arrived (no file
/// system recognized it).
fn blank_machine(
    start: StartType,
    params: &[(&str, fsfilter_sim::RegValue)],
) -> (Machine, VolumeId) {
    let mut m = machine();
    let x = m.add_volume(VolumeSpec::new("X:", FsKind::Ntfs).mount(MountWhen::Step));
    m.kernel(|k| k.volume_mut(x).blank = true);
    install_probe(&mut m, "ProbeA", start, "370000", params);
    m.boot();
    assert_eq!(m.mount(x), Status::UNRECOGNIZED_VOLUME);
    (m, x)
}

#[test]
fn the_filter_manager_attaches_to_raw_by_name_and_offers_its_volumes_as_raw() {
    let (mut m, x) = blank_machine(StartType::Boot, &[]);
    // The Filter Manager's frame 0 is on RAW's control devices from its own DriverEntry.
    assert_eq!(m.device_stack_drivers(r"\Device\RawDisk"), ["FltMgr", "RAW"]);
    assert_eq!(m.device_stack_drivers(r"\Device\RawCdRom"), ["FltMgr", "RAW"]);
    // Blank media: no file system recognized it; a volume open mounts it with RAW, and the
    // frame's mount path attaches to the new volume and sets the instance up there.
    let h = m.create(x, "", CreateOptions::open()).handle.unwrap();
    assert_eq!(instances_top_down(&m, x), ["ProbeA", "RAW"]);
    assert_eq!(
        setups(&m, "ProbeA"),
        [(Some("X:".into()), F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME, Status::SUCCESS)]
    );
    assert_eq!(
        setup_filesystems(&m, "ProbeA"),
        [(Some("X:".into()), FilesystemType::Raw, Status::SUCCESS)]
    );
    // The volume open itself is the first operation the instance sees.
    assert_eq!(pres(&m, "ProbeA", MajorFunction::Create).len(), 1);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_filter_that_refuses_raw_gets_no_instance_there() {
    let (mut m, x) = blank_machine(StartType::Boot, &[("FileSystems", sz("ntfs"))]);
    let h = m.create(x, "", CreateOptions::open()).handle.unwrap();
    assert_eq!(
        setup_filesystems(&m, "ProbeA"),
        [(Some("X:".into()), FilesystemType::Raw, Status::FLT_DO_NOT_ATTACH)]
    );
    assert_eq!(instances_top_down(&m, x), ["RAW"]);
    assert!(pres(&m, "ProbeA", MajorFunction::Create).is_empty());
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_filter_started_after_the_raw_mount_is_set_up_on_the_raw_volume() {
    let (mut m, x) = blank_machine(StartType::Demand, &[]);
    let h = m.create(x, "", CreateOptions::open()).handle.unwrap();
    assert!(setups(&m, "ProbeA").is_empty());
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    assert_eq!(
        setup_filesystems(&m, "ProbeA"),
        [(Some("X:".into()), FilesystemType::Raw, Status::SUCCESS)]
    );
    assert_eq!(setups(&m, "ProbeA")[0].1, F::AUTOMATIC_ATTACHMENT);
    assert_eq!(instances_top_down(&m, x), ["ProbeA", "RAW"]);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_filter_manager_loaded_after_the_raw_mount_attaches_to_the_raw_volume() {
    // The Filter Manager loaded late (a demand-start minifilter started on a booted machine)
    // finds the volumes mounted already (§1.5), the one RAW mounted too: frame 0 attaches to it
    // and the filter's instance is set up there, told FLT_FSTYPE_RAW.
    let mut m = Machine::new(fsfilter_sim::MachineConfig { seed: 7 });
    let x = m.add_volume(VolumeSpec::new("X:", FsKind::Ntfs).mount(MountWhen::Step));
    m.kernel(|k| k.volume_mut(x).blank = true);
    m.boot();
    assert_eq!(m.mount(x), Status::UNRECOGNIZED_VOLUME);
    let h = m.create(x, "", CreateOptions::open()).handle.unwrap();
    install_probe(&mut m, "ProbeA", StartType::Demand, "370000", &[]);
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    assert_eq!(m.device_stack_drivers(r"\Device\RawDisk"), ["FltMgr", "RAW"]);
    assert_eq!(
        setup_filesystems(&m, "ProbeA"),
        [(Some("X:".into()), FilesystemType::Raw, Status::SUCCESS)]
    );
    assert_eq!(instances_top_down(&m, x), ["ProbeA", "RAW"]);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
