//! Filter Manager, deliverable 2 — frames (facts.md §2.1, §2.2, §2.4): the Filter Manager is a
//! legacy filter whose devices are frames; frame 0 at load, a new frame above a legacy filter
//! for a minifilter above that filter's range, no frame between two legacy filters, mirrored
//! volume stacks on later mounts, and a reloaded minifilter back in its frame.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    reason = "tests"
)]

mod fltcommon;

use fltcommon::{Config, install, install_legacy, machine, mj, order, order_clear};
use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, FltEvent, FsKind, MountWhen, SnapInstance, StackEntry, StartType, StopResult,
    VolumeId, VolumeSpec,
};

fn frame(n: u32, instances: &[(&str, &str)]) -> StackEntry {
    StackEntry::Frame {
        frame: n,
        instances: instances
            .iter()
            .map(|(d, a)| SnapInstance {
                driver: (*d).to_owned(),
                instance: format!("{d} Instance"),
                altitude: (*a).to_owned(),
            })
            .collect(),
    }
}

fn legacy(name: &str) -> StackEntry {
    StackEntry::Legacy { driver: name.to_owned() }
}

fn fs(name: &str) -> StackEntry {
    StackEntry::FileSystem { driver: name.to_owned() }
}

#[test]
fn without_legacy_filters_there_is_only_frame_0_facts_2_2() {
    // facts.md §2.2: with no legacy filters there is exactly one frame, Frame 0; §2.1: FltMgr is
    // a legacy filter in "FSFilter Infrastructure", attached right above the file system.
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    assert_eq!(m.device_stack(c), [frame(0, &[]), fs("Ntfs")]);
    install(&mut m, 0, Config::new("Low", "140000"));
    install(&mut m, 1, Config::new("High", "370000"));
    assert_eq!(m.start("Low"), Status::SUCCESS);
    assert_eq!(m.start("High"), Status::SUCCESS);
    assert_eq!(m.device_stack(c), [frame(0, &[("High", "370000"), ("Low", "140000")]), fs("Ntfs")]);
    assert_eq!(m.frames().len(), 1);
}

/// FltMgr, a boot-start legacy Encryption filter, C: mounted at boot: C:'s stack is
/// Ntfs, frame 0, the legacy filter.
fn with_encryption_filter() -> (fsfilter_sim::Machine, fsfilter_sim::VolumeId) {
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"data"));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "OldEnc", "FSFilter Encryption", StartType::Boot);
    m.boot();
    (m, c)
}

#[test]
fn a_minifilter_above_a_legacy_filter_gets_a_new_frame_above_it_facts_2_2() {
    // facts.md §2.2 (Alex Carp's mechanics): Frame 0 sits below the legacy filters; a minifilter
    // whose altitude is above a legacy filter's range makes FltMgr create Frame 1 above the
    // legacy filter; a minifilter below the legacy filter's range stays in Frame 0.
    let (mut m, c) = with_encryption_filter();
    assert_eq!(m.device_stack(c), [legacy("OldEnc"), frame(0, &[]), fs("Ntfs")]);
    install(&mut m, 0, Config::new("Below", "100000").op(mj::CREATE, true, true));
    assert_eq!(m.start("Below"), Status::SUCCESS);
    assert_eq!(m.frames().len(), 1, "a minifilter below the legacy range does not need a frame");
    install(&mut m, 1, Config::new("Av", "321300").op(mj::CREATE, true, true));
    assert_eq!(m.start("Av"), Status::SUCCESS);
    assert_eq!(
        m.device_stack(c),
        [
            frame(1, &[("Av", "321300")]),
            legacy("OldEnc"),
            frame(0, &[("Below", "100000")]),
            fs("Ntfs")
        ]
    );
    let created = fltcommon::flt(&m, "flt_frame_created");
    assert_eq!(created.len(), 1);
    assert!(
        matches!(&created[0].2, FltEvent::FrameCreated { frame: 1, above: Some(a), .. } if a == "OldEnc")
    );
    // Frame 0 grew up to the legacy filter (its "altitude" is its group's top − 0.01, §8).
    let frames = m.frames();
    assert_eq!((frames[0].low.as_str(), frames[0].high.as_str()), ("100000", "149998.99"));
    assert_eq!(frames[1].filters, [("Av".to_owned(), "321300".to_owned())]);
    // §2.4 (derived): each frame runs its instances, then the IRP goes down the stack.
    order_clear();
    assert_eq!(m.create(c, "a.txt", CreateOptions::open()).status, Status::SUCCESS);
    assert_eq!(order(), ["Av:pre:0", "OldEnc:irp:0", "Below:pre:0", "Below:post:0", "Av:post:0"]);
}

#[test]
fn a_legacy_filter_without_a_known_group_counts_as_above_every_altitude_facts_2_2() {
    // docs/simulator.md (Frames, Placement; the algorithm is unconfirmed, facts.md §10.11): a
    // legacy filter whose load-order group the Filter Manager does not know has no altitude and
    // counts as above every one, so even the highest minifilter gets no frame above it and
    // stays in frame 0, below it.
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "NoGroup", "", StartType::Boot);
    m.boot();
    assert_eq!(m.device_stack(c), [legacy("NoGroup"), frame(0, &[]), fs("Ntfs")]);
    install(&mut m, 0, Config::new("Top", "409000"));
    assert_eq!(m.start("Top"), Status::SUCCESS);
    assert_eq!(m.frames().len(), 1, "no frame above a legacy filter of unknown altitude");
    assert_eq!(m.device_stack(c), [legacy("NoGroup"), frame(0, &[("Top", "409000")]), fs("Ntfs")]);
}

#[test]
fn a_later_mount_mirrors_the_control_device_stack_facts_1_4_and_2_2() {
    // facts.md §1.4 (derived): a volume's stack mirrors the control device's, because each
    // filter attaches as the mount completes back up; each frame registered its own notification
    // routine, so the control device of a file system loaded later has F0, the legacy filter, F1.
    let (mut m, _) = with_encryption_filter();
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Fat).mount(MountWhen::Step));
    install(&mut m, 0, Config::new("Av", "321300"));
    install(&mut m, 1, Config::new("Below", "100000"));
    assert_eq!(m.start("Av"), Status::SUCCESS);
    assert_eq!(m.start("Below"), Status::SUCCESS);
    assert_eq!(m.mount(e), Status::SUCCESS);
    assert_eq!(
        m.device_stack(e),
        [
            frame(1, &[("Av", "321300")]),
            legacy("OldEnc"),
            frame(0, &[("Below", "100000")]),
            fs("fastfat")
        ]
    );
}

#[test]
fn no_frame_between_two_legacy_filters_lands_below_facts_2_2() {
    // facts.md §2.2: FltMgr cannot place a minifilter between two legacy filters unless a frame
    // already sits between them: a minifilter meant to be above the lower legacy filter lands
    // below it (the simulator's choice of the two wrong places, docs/simulator.md).
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "OldEnc", "FSFilter Encryption", StartType::Boot);
    install_legacy(&mut m, 1, "OldAv", "FSFilter Anti-Virus", StartType::Boot);
    m.boot();
    install(&mut m, 0, Config::new("Middle", "200000"));
    install(&mut m, 1, Config::new("Top", "380000"));
    assert_eq!(m.start("Middle"), Status::SUCCESS);
    assert_eq!(m.start("Top"), Status::SUCCESS);
    assert_eq!(
        m.device_stack(c),
        [
            frame(1, &[("Top", "380000")]),
            legacy("OldAv"),
            legacy("OldEnc"),
            frame(0, &[("Middle", "200000")]),
            fs("Ntfs"),
        ]
    );
}

#[test]
fn an_existing_frame_between_legacy_filters_takes_the_minifilter_facts_2_2() {
    // facts.md §2.2: later minifilters are placed relative to Frame 1 once it exists: one
    // between the two legacy filters' ranges goes to the frame that sits between them.
    // OldEnc at boot; Comp (above its range) makes Frame 1 above it; OldAv loads after that
    // and sits above Frame 1; E: mounts last, so its stack shows them all.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Fat).mount(MountWhen::Step));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "OldEnc", "FSFilter Encryption", StartType::Boot);
    install_legacy(&mut m, 1, "OldAv", "FSFilter Anti-Virus", StartType::Demand);
    m.boot();
    install(&mut m, 0, Config::new("Comp", "169000"));
    assert_eq!(m.start("Comp"), Status::SUCCESS);
    assert_eq!(m.start("OldAv"), Status::SUCCESS);
    assert_eq!(m.mount(e), Status::SUCCESS);
    install(&mut m, 1, Config::new("Hsm", "180000"));
    assert_eq!(m.start("Hsm"), Status::SUCCESS);
    assert_eq!(m.frames().len(), 2);
    assert_eq!(
        m.device_stack(e),
        [
            legacy("OldAv"),
            frame(1, &[("Hsm", "180000"), ("Comp", "169000")]),
            legacy("OldEnc"),
            frame(0, &[]),
            fs("fastfat"),
        ]
    );
}

#[test]
fn a_reloaded_minifilter_returns_to_its_frame_facts_2_2() {
    // facts.md §2.2: a minifilter unloaded and reloaded comes back at the same altitude in the
    // same frame — even when a legacy filter loaded since would now put a newcomer elsewhere.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "LateEnc", "FSFilter Encryption", StartType::Demand);
    m.boot();
    install(&mut m, 0, Config::new("Mini", "300000"));
    assert_eq!(m.start("Mini"), Status::SUCCESS);
    assert_eq!(m.start("LateEnc"), Status::SUCCESS);
    assert_eq!(m.fltmc_unload("Mini"), Status::SUCCESS);
    assert_eq!(m.fltmc_load("Mini"), Status::SUCCESS);
    install(&mut m, 1, Config::new("Newcomer", "300010"));
    assert_eq!(m.start("Newcomer"), Status::SUCCESS);
    let reg: Vec<(String, u32)> = fltcommon::flt(&m, "flt_filter_registered")
        .into_iter()
        .map(|(d, _, e)| match e {
            FltEvent::FilterRegistered { frame, .. } => (d.unwrap(), frame),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(reg, [("Mini".into(), 0), ("Mini".into(), 0), ("Newcomer".into(), 1)]);
}

/// C: with the Filter Manager, an unloadable legacy filter "OldEnc" below a frame of a minifilter
/// loaded later, and OldEnc's stop pending because that frame is attached above it.
fn pending_under_a_frame(delete: fltcommon::LegacyDelete) -> (fsfilter_sim::Machine, VolumeId) {
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    fltcommon::make_unloadable(0, delete, "\\Device\\HarddiskVolume1");
    install_legacy(&mut m, 0, "OldEnc", "FSFilter Encryption", StartType::Demand);
    m.boot();
    assert_eq!(m.start("OldEnc"), Status::SUCCESS);
    install(&mut m, 1, Config::new("Av", "321300").op(mj::CREATE, true, true));
    assert_eq!(m.start("Av"), Status::SUCCESS);
    assert_eq!(m.device_stack(c)[1], legacy("OldEnc"), "{:?}", m.device_stack(c));
    assert_eq!(m.stop("OldEnc"), StopResult::Pending, "the frame above holds the stop");
    assert_eq!(m.stop("Av"), StopResult::Unloaded);
    (m, c)
}

#[test]
fn a_pending_stop_runs_the_unload_inside_the_deletion_that_frees_the_last_device() {
    // The I/O manager calls a stop-pending driver's DriverUnload as soon as its last device is
    // free, and the thread whose IoDeleteDevice freed it waits for that unload
    // (docs/simulator.md, "Pending unload"). OldEnc deletes its device in FastIoDetachDevice
    // (sfilter's way) when the dismount detaches frame 0 below it; deleting it detaches the
    // frame above: the unload runs inside that IoDeleteDevice, the image goes, and the detach
    // routine then returns into it. Deleting from a work item instead, whose device reference
    // the I/O manager holds until the routine returns, keeps the image under the returning code.
    for (delete, place, expected) in [
        (
            fltcommon::LegacyDelete::Inline,
            "detach",
            vec![fsfilter_sim::Rule::UnloadedDriverCodeRan],
        ),
        (fltcommon::LegacyDelete::WorkItem, "worker", vec![]),
    ] {
        let (mut m, c) = pending_under_a_frame(delete);
        assert_eq!(fltcommon::unloaded_in(0), None);
        assert_eq!(m.dismount(c), Status::SUCCESS);
        m.settle();
        assert_eq!(fltcommon::unloaded_in(0), Some(place), "{delete:?}");
        assert_eq!(fltcommon::rules(&m), expected, "{delete:?}: {:?}", m.findings());
        assert_eq!(m.stop("OldEnc"), StopResult::NotRunning, "{delete:?}: unloaded");
        assert!(m.device_stack(c).is_empty(), "{delete:?}: {:?}", m.device_stack(c));
    }
}

#[test]
fn a_legacy_filter_below_a_frame_loaded_later_cannot_finish_its_stop() {
    // facts.md §1.9 (DriverUnload only once every device of the driver is at the top of its
    // stack) with §2.2: frame 1, made above a legacy filter for a minifilter above its range,
    // attaches to the file systems' control devices as well, above the filter's own attachments
    // there. Frames are never deleted, so the filter's stop stays pending for good, even once
    // its volumes are gone and the minifilter is unloaded (docs/semantics.md, unload row).
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    fltcommon::make_unloadable(0, fltcommon::LegacyDelete::Inline, "");
    install_legacy(&mut m, 0, "OldEnc", "FSFilter Encryption", StartType::Boot);
    m.boot();
    install(&mut m, 1, Config::new("Av", "321300").op(mj::CREATE, true, true));
    assert_eq!(m.start("Av"), Status::SUCCESS);
    let above_control_device = m.kernel(|k| {
        k.objects.devices.iter().any(|d| {
            !d.deleted
                && k.objects.driver(d.driver).service == "OldEnc"
                && d.volume.is_none()
                && k.objects.above(k.objects.device_id(d.ptr).unwrap()).is_some_and(|a| {
                    k.objects.driver(k.objects.device(a).driver).service == "FltMgr"
                })
        })
    });
    assert!(above_control_device, "frame 1 sits above OldEnc's control-device attachment");
    assert_eq!(m.stop("OldEnc"), StopResult::Pending);
    assert_eq!(m.stop("Av"), StopResult::Unloaded);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    m.settle();
    assert!(m.device_stack(c).is_empty(), "{:?}", m.device_stack(c));
    assert_eq!(fltcommon::unloaded_in(0), None, "DriverUnload never ran");
    assert_eq!(m.stop("OldEnc"), StopResult::Pending, "still pending");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_dismounted_volume_under_two_frames_is_torn_down_once_per_frame_and_remounts_in_both() {
    // facts.md §2.5: a volume dismount tears each instance down once (VOLUME_DISMOUNT, 0x8);
    // §1.7: the volume device's deletion reaches each frame device through FastIoDetachDevice,
    // frame 0's directly, frame 1's through the legacy filter between them; §1.4: the next
    // mount attaches both frames again through their control-device devices and sets their
    // instances up (AUTOMATIC | NEWLY_MOUNTED_VOLUME).
    let (mut m, c) = with_encryption_filter();
    install(&mut m, 0, Config::new("Below", "100000").op(mj::CREATE, true, true));
    install(&mut m, 1, Config::new("Av", "321300").op(mj::CREATE, true, true));
    assert_eq!(m.start("Below"), Status::SUCCESS);
    assert_eq!(m.start("Av"), Status::SUCCESS);
    fltcommon::seen_clear(0);
    fltcommon::seen_clear(1);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    m.settle();
    for slot in [0, 1] {
        let seen = fltcommon::seen(slot);
        let reasons: Vec<u32> = seen
            .iter()
            .filter_map(|s| match s {
                fltcommon::Seen::TeardownStart { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, [0x8], "slot {slot}: {seen:?}");
    }
    assert_eq!(m.create(c, "a.txt", CreateOptions::open()).status, Status::SUCCESS);
    assert_eq!(
        m.device_stack(c),
        [
            frame(1, &[("Av", "321300")]),
            legacy("OldEnc"),
            frame(0, &[("Below", "100000")]),
            fs("Ntfs")
        ]
    );
    for slot in [0, 1] {
        let setups: Vec<u32> = fltcommon::seen(slot)
            .iter()
            .filter_map(|s| match s {
                fltcommon::Seen::Setup { flags, .. } => Some(*flags),
                _ => None,
            })
            .collect();
        assert_eq!(setups, [0x5], "slot {slot}");
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
