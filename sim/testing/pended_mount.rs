//! Mounts a file system pends (facts.md §1.4 step 3: mounts may complete asynchronously), through
//! a backend with the probe sample: shared by `legacy/tests/pended_mount.rs` and
//! `minifilter/tests/pended_mount.rs` (each includes this file with `#[path]` and says how it
//! makes a machine, installs the probe and reads a volume's stack, in a [`Backend`]).
//!
//! The simulated file system pends the mount of a volume built with `VolumeSpec::pend_mount` and
//! completes it from a worker thread later. The legacy backend's mount dispatch waits for the
//! pended request (legacy/src/attach.rs `mount_volume`), and the Filter Manager's frame in its
//! control device's mount path (sim/src/fltmgr/frames.rs `mount`); either then attaches to the new
//! volume and sets the instance up with `NEWLY_MOUNTED_VOLUME` (facts.md §2.5), and the filter
//! sees the volume's I/O.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use fsfilter::{InstanceSetupFlags as F, MajorFunction, Status};
use fsfilter_sim::{
    Callback, CreateOptions, FsKind, IoMode, Machine, MountWhen, VolumeId, VolumeSpec,
};

/// How long the file systems take to complete a pended mount, in ms.
pub(crate) const MOUNT_MS: u64 = 7;

/// How a backend's tests run the probe.
pub(crate) struct Backend {
    /// A machine with what the backend needs (the Filter Manager for minifilters).
    pub machine: fn() -> Machine,
    /// Installs the probe as boot-start filter `name`; of two, the one installed first sits
    /// lower.
    pub install: fn(&mut Machine, &str),
    /// The filters of a volume's stack, top first (devices or instances), the file system last.
    pub stack: fn(&Machine, VolumeId) -> Vec<String>,
}

/// `driver`'s instance setups: (volume, flags, status).
fn setups(m: &Machine, driver: &str) -> Vec<(Option<String>, F, Status)> {
    m.callbacks_of(driver)
        .into_iter()
        .filter_map(|(v, c)| match c {
            Callback::InstanceSetup { flags, status, .. } => Some((v, flags, status)),
            _ => None,
        })
        .collect()
}

/// How many pre callbacks `driver` had for `major`.
fn pres(m: &Machine, driver: &str, major: MajorFunction) -> usize {
    m.callbacks_of(driver)
        .into_iter()
        .filter(|(_, c)| matches!(c, Callback::Pre { major: mj, .. } if *mj == major))
        .count()
}

/// Creates, writes, reads back (non-cached: an IRP down to the file system) and closes a file
/// on `v`; returns what was read.
pub(crate) fn use_volume(m: &mut Machine, v: VolumeId) -> Vec<u8> {
    // FILE_OVERWRITE_IF: the file may be there from an earlier call.
    let create = CreateOptions::create().disposition(5);
    let h = m.create(v, "new.txt", create).handle.expect("create");
    assert_eq!(m.write(h, Some(0), b"pended", IoMode::Cached).status, Status::SUCCESS);
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    r.data.into_iter().take(6).collect()
}

/// A mount step for an NTFS, FAT and CDFS volume whose file system pends it: the mount ends
/// later, the probe sits on top of the new volume with an instance set up as newly mounted, and
/// sees the volume's I/O; no finding.
pub(crate) fn check_mount_step(b: &Backend) {
    let newly = F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME;
    for kind in [FsKind::Ntfs, FsKind::Fat, FsKind::Cdfs] {
        let mut m = (b.machine)();
        let name = if kind == FsKind::Cdfs { "D:" } else { "E:" };
        let v = m.add_volume(
            VolumeSpec::new(name, kind)
                .mount(MountWhen::Step)
                .file("a.txt", b"x")
                .pend_mount(MOUNT_MS),
        );
        (b.install)(&mut m, "ProbeA");
        m.boot();
        assert!(setups(&m, "ProbeA").is_empty(), "{kind:?}: nothing mounted yet");
        let before = m.now_ms();
        assert_eq!(m.mount(v), Status::SUCCESS, "{kind:?}");
        assert!(m.now_ms() >= before + MOUNT_MS, "{kind:?}: the mount completed later");
        assert_eq!(setups(&m, "ProbeA"), [(Some(name.into()), newly, Status::SUCCESS)], "{kind:?}");
        let stack = (b.stack)(&m, v);
        assert_eq!(
            (stack.len(), stack.first().map(String::as_str)),
            (2, Some("ProbeA")),
            "{kind:?}"
        );
        let h = m.open(v, "a.txt", CreateOptions::open().access(0x8000_0000)).expect("open");
        let r = m.read(h, Some(0), 1, IoMode::Cached);
        assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"x"[..]), "{kind:?}");
        assert_eq!(m.close_handle(h), Status::SUCCESS);
        assert_eq!(pres(&m, "ProbeA", MajorFunction::Create), 1, "{kind:?}");
        assert!(pres(&m, "ProbeA", MajorFunction::Read) > 0, "{kind:?}");
        assert!(m.findings().is_empty(), "{kind:?}: {:?}", m.findings());
    }
}

/// A boot volume whose mount pends, under two probes; then a dismount and a remount on the next
/// create, pended again: each mount sets both instances up as newly mounted, and the create that
/// triggered the remount goes through the filters; no finding.
pub(crate) fn check_boot_and_remount(b: &Backend) {
    let newly = F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME;
    let mut m = (b.machine)();
    let v = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).pend_mount(MOUNT_MS));
    (b.install)(&mut m, "ProbeB");
    (b.install)(&mut m, "ProbeA");
    m.boot();
    assert!(m.now_ms() >= MOUNT_MS, "the boot mount completed later");
    let stack = (b.stack)(&m, v);
    assert_eq!(stack.get(..2), Some(&["ProbeA".to_owned(), "ProbeB".to_owned()][..]), "{stack:?}");
    for p in ["ProbeA", "ProbeB"] {
        assert_eq!(setups(&m, p), [(Some("C:".into()), newly, Status::SUCCESS)], "{p}");
    }
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert!(pres(&m, "ProbeA", MajorFunction::Write) > 0);
    assert!(pres(&m, "ProbeB", MajorFunction::Write) > 0);
    assert_eq!(m.dismount(v), Status::SUCCESS);
    m.settle();
    let creates = pres(&m, "ProbeA", MajorFunction::Create);
    let before = m.now_ms();
    assert_eq!(use_volume(&mut m, v), b"pended");
    assert!(m.now_ms() >= before + MOUNT_MS, "the remount was pended too");
    let s = setups(&m, "ProbeA");
    assert_eq!(s.get(1), Some(&(Some("C:".into()), newly, Status::SUCCESS)), "{s:?}");
    assert_eq!(s.len(), 2, "{s:?}");
    let after = pres(&m, "ProbeA", MajorFunction::Create);
    assert_eq!(after, creates + 1, "the create that remounted went through the filter");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
