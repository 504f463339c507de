//! The volume and the views shared by `legacy/tests/late_volume.rs` and
//! `minifilter/tests/late_volume.rs` (each includes this file with `#[path]`): an NTFS volume E:
//! whose device NTFS leaves `DO_DEVICE_INITIALIZING` for a while after the mount
//! (`VolumeSpec::initialize_late`), and what the probe, as filter ProbeA, saw of it.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use fsfilter::{MajorFunction, Status};
use fsfilter_sim::{Callback, CreateOptions, FsKind, IoMode, Machine, MountWhen, VolumeSpec};

/// E:, mounted by a step, holding `a.txt` ("late"), its device initialized `late_ms` after the
/// mount.
pub(crate) fn late_volume(late_ms: u64) -> VolumeSpec {
    VolumeSpec::new("E:", FsKind::Ntfs)
        .mount(MountWhen::Step)
        .file("a.txt", b"late")
        .initialize_late(late_ms)
}

/// Opens E:\a.txt, reads it (one IRP: the file object's first cached read) and closes it.
pub(crate) fn read_back(m: &mut Machine, v: fsfilter_sim::VolumeId) -> Vec<u8> {
    let h = m.open(v, "a.txt", CreateOptions::open().access(0x8000_0000)).expect("open");
    let r = m.read(h, Some(0), 4, IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    r.data
}

/// ProbeA's callbacks on volume E:.
pub(crate) fn on_e(m: &Machine) -> Vec<Callback> {
    m.callbacks_of("ProbeA")
        .into_iter()
        .filter(|(v, _)| v.as_deref() == Some("E:"))
        .map(|(_, c)| c)
        .collect()
}

/// ProbeA's pre callbacks for `major` on volume E:.
pub(crate) fn pres_on_e(m: &Machine, major: MajorFunction) -> usize {
    on_e(m).iter().filter(|c| matches!(c, Callback::Pre { major: mj, .. } if *mj == major)).count()
}
