//! Mounts a file system pends (facts.md §1.4 step 3: mounts may complete asynchronously), through
//! the minifilter backend with the probe sample: the Filter Manager's frame waits for the pended
//! request in the control device's mount path (sim/src/fltmgr/frames.rs `mount`), attaches to the
//! new volume and sets up the instance with `NEWLY_MOUNTED_VOLUME`. The simulated file system pends
//! the mount of a volume built with `VolumeSpec::pend_mount` and completes it from a worker thread
//! later.

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
use fsfilter_sim::{CreateOptions, FsKind, IoMode, Machine, MountWhen, StartType};
use fsfilter_sim::{VolumeId, VolumeSpec};

/// How long the file systems take to complete a pended mount, in ms.
const MOUNT_MS: u64 = 7;

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
fn an_instance_is_set_up_on_a_volume_whose_mount_was_pended() {
    // §1.4 step 3: the file system pends the mount and completes it from a worker; the frame
    // waits for it, attaches, and the instance is set up as for any new mount (§2.5).
    for kind in [FsKind::Ntfs, FsKind::Fat, FsKind::Cdfs] {
        let mut m = machine();
        let name = if kind == FsKind::Cdfs { "D:" } else { "E:" };
        let v = m.add_volume(
            VolumeSpec::new(name, kind)
                .mount(MountWhen::Step)
                .file("a.txt", b"x")
                .pend_mount(MOUNT_MS),
        );
        install_probe(&mut m, "ProbeA", StartType::Boot, "370000", &[]);
        m.boot();
        assert!(setups(&m, "ProbeA").is_empty(), "{kind:?}: nothing mounted yet");
        let before = m.now_ms();
        assert_eq!(m.mount(v), Status::SUCCESS, "{kind:?}");
        assert!(m.now_ms() >= before + MOUNT_MS, "{kind:?}: the mount completed later");
        assert_eq!(
            setups(&m, "ProbeA"),
            [(
                Some(name.into()),
                F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME,
                Status::SUCCESS
            )],
            "{kind:?}"
        );
        let stack = instances_top_down(&m, v);
        assert_eq!(stack.first().map(String::as_str), Some("ProbeA"), "{kind:?}: {stack:?}");
        // The instance sees the volume's I/O.
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
fn a_pended_mount_at_boot_and_again_after_a_dismount() {
    // A boot volume whose mount pends, then a dismount and a remount on the next create (pended
    // again): each mount sets the instance up with NEWLY_MOUNTED_VOLUME, and the create that
    // triggered the remount goes through it.
    let mut m = machine();
    let v = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).pend_mount(MOUNT_MS));
    install_probe(&mut m, "ProbeA", StartType::Boot, "370000", &[]);
    install_probe(&mut m, "ProbeB", StartType::Boot, "360000", &[]);
    m.boot();
    let newly = F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME;
    assert_eq!(setups(&m, "ProbeA"), [(Some("C:".into()), newly, Status::SUCCESS)]);
    assert_eq!(setups(&m, "ProbeB"), [(Some("C:".into()), newly, Status::SUCCESS)]);
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert!(!pres(&m, "ProbeA", MajorFunction::Write).is_empty());
    assert!(!pres(&m, "ProbeB", MajorFunction::Write).is_empty());
    assert_eq!(m.dismount(v), Status::SUCCESS);
    m.settle();
    let creates = pres(&m, "ProbeA", MajorFunction::Create).len();
    let before = m.now_ms();
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert!(m.now_ms() >= before + MOUNT_MS, "the remount was pended too");
    let s = setups(&m, "ProbeA");
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[1], (Some("C:".into()), newly, Status::SUCCESS));
    let after = pres(&m, "ProbeA", MajorFunction::Create).len();
    assert_eq!(after, creates + 1, "the create that remounted went through the new instance");
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
