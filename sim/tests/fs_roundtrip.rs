//! Smoke: an NTFS volume mounts at boot and a file round-trips.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use fsfilter::Status;
use fsfilter_sim::{CreateOptions, FsKind, IoMode, Machine, MachineConfig, VolumeSpec};

#[test]
fn smoke() {
    let mut m = Machine::new(MachineConfig { seed: 1 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\dir\\a.txt", b"hello"));
    m.boot();
    for e in m.events() {
        println!("{:?}", e.kind);
    }
    let h = m.open(c, "dir\\a.txt", CreateOptions::open()).unwrap();
    let r = m.read(h, Some(0), 100, IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS, "{r:?}");
    assert_eq!(r.data, b"hello");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
