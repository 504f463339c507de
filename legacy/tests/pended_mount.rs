//! Mounts a file system pends (facts.md §1.4 step 3: mounts may complete asynchronously), through
//! the legacy backend with the probe sample: the backend's mount dispatch waits for the pended
//! request (legacy/src/attach.rs `mount_volume`), then attaches to the new volume and sees its
//! I/O. The simulated file system pends the mount of a volume built with
//! `VolumeSpec::pend_mount` and completes it from a worker thread later.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

use common::*;
use fsfilter::{InstanceSetupFlags as F, MajorFunction, Status};
use fsfilter_sim::{CreateOptions, EventKind, FsKind, IoMode, Machine, MountWhen, StartType};
use fsfilter_sim::{VolumeId, VolumeSpec};

/// How long the file systems take to complete a pended mount, in ms.
const MOUNT_MS: u64 = 7;

/// The `Mounted` events: (volume, file system, status).
fn mounted(m: &Machine) -> Vec<(String, String, Status)> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Mounted { volume, filesystem, status } => Some((volume, filesystem, status)),
            _ => None,
        })
        .collect()
}

/// Creates, writes, reads back and closes a file on `v`; returns what was read.
fn use_volume(m: &mut Machine, v: VolumeId) -> Vec<u8> {
    // FILE_OVERWRITE_IF: the file may be there from an earlier call.
    let create = CreateOptions::create().disposition(5);
    let h = m.create(v, "new.txt", create).handle.expect("create");
    assert_eq!(m.write(h, Some(0), b"pended", IoMode::Cached).status, Status::SUCCESS);
    // Non-cached: sector-sized, an IRP down to the file system.
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    r.data.into_iter().take(6).collect()
}

#[test]
fn a_filter_attaches_to_a_volume_whose_mount_was_pended() {
    // §1.4 step 3: the file system pends the mount and completes it from a worker; the backend's
    // dispatch waits for it, then attaches to the new volume device (step 4).
    for kind in [FsKind::Ntfs, FsKind::Fat, FsKind::Cdfs] {
        let mut m = machine();
        let name = if kind == FsKind::Cdfs { "D:" } else { "E:" };
        let v = m.add_volume(
            VolumeSpec::new(name, kind)
                .mount(MountWhen::Step)
                .file("a.txt", b"x")
                .pend_mount(MOUNT_MS),
        );
        install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
        m.boot();
        let fs = m.volume_stack_drivers(v);
        assert!(fs.is_empty(), "{kind:?}: not mounted yet: {fs:?}");
        let before = m.now_ms();
        assert_eq!(m.mount(v), Status::SUCCESS, "{kind:?}");
        assert!(m.now_ms() >= before + MOUNT_MS, "{kind:?}: the mount completed later");
        let stack = m.volume_stack_drivers(v);
        assert_eq!(stack.len(), 2, "{kind:?}: {stack:?}");
        assert_eq!(stack[0], "ProbeA", "{kind:?}: {stack:?}");
        assert_eq!(mounted(&m).last().map(|e| e.2), Some(Status::SUCCESS), "{kind:?}");
        assert_eq!(
            setups(&m, "ProbeA"),
            [(
                Some(name.into()),
                F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME,
                Status::SUCCESS
            )],
            "{kind:?}"
        );
        // The filter sees the volume's I/O.
        let h = m.open(v, "a.txt", CreateOptions::open().access(0x8000_0000)).expect("open");
        let r = m.read(h, Some(0), 1, IoMode::Cached);
        assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"x"[..]), "{kind:?}");
        assert_eq!(m.close_handle(h), Status::SUCCESS);
        assert_eq!(pres(&m, "ProbeA", MajorFunction::Create).len(), 1, "{kind:?}");
        assert!(!pres(&m, "ProbeA", MajorFunction::Read).is_empty(), "{kind:?}");
        assert!(findings(&m).is_empty(), "{kind:?}: {:?}", findings(&m));
    }
}

#[test]
fn a_create_waits_for_the_pended_mount_it_started_and_the_filter_sees_it() {
    // A create on an unmounted volume mounts it first (§1.4): the pended mount completes, the
    // filter attaches, and the create that triggered it goes through the filter.
    let mut m = machine();
    let v = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).pend_mount(MOUNT_MS));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.volume_stack_drivers(v), ["ProbeA", "Ntfs"]);
    assert_eq!(
        setups(&m, "ProbeA"),
        [(Some("C:".into()), F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME, Status::SUCCESS)]
    );
    assert!(m.now_ms() >= MOUNT_MS, "the boot mount completed later");
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert!(!pres(&m, "ProbeA", MajorFunction::Write).is_empty());
    // Dismounted, the volume mounts again on the next create, pended again.
    assert_eq!(m.dismount(v), Status::SUCCESS);
    m.settle();
    let creates = pres(&m, "ProbeA", MajorFunction::Create).len();
    let before = m.now_ms();
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert!(m.now_ms() >= before + MOUNT_MS, "the remount was pended too");
    let after = pres(&m, "ProbeA", MajorFunction::Create).len();
    assert_eq!(after, creates + 1, "the create that remounted went through the new device");
    assert_eq!(m.volume_stack_drivers(v), ["ProbeA", "Ntfs"]);
    let s = setups(&m, "ProbeA");
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[1].1, F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn two_filters_attach_in_order_after_a_pended_mount() {
    // §1.4 (derived): the lowest filter's dispatch resumes first after the file system
    // completes, attaches first; the order on the volume mirrors the order on the control
    // device, pended or not.
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
