//! The PnP manager's removal of a volume (`Machine::remove_volume`, docs/simulator.md "Removal
//! of a volume (PnP)") as the probe, filter ProbeA, sees it in each model: shared by
//! `legacy/tests/removal.rs` and `minifilter/tests/removal.rs`, which include this file with
//! `#[path]` and give an [`Install`] that installs the probe (every operation, pre and post) as
//! a boot-start filter of their model. Every assertion here holds in both models.
//!
//! What the probe sees of each volume is reduced to a trace ([`trace`]): its `IRP_MJ_PNP` pre
//! callbacks with their minor, its posts with their status, and its instance query-teardown and
//! teardown callbacks with their reason.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use fsfilter::{MajorFunction, Status};
use fsfilter_sim::{
    Callback, CreateOptions, FsKind, Handle, Machine, MachineConfig, VolumeId, VolumeSpec,
};

/// Installs the probe as boot-start filter `ProbeA` in the backend's model.
pub(crate) type Install = fn(&mut Machine);

/// The probe's service name.
pub(crate) const PROBE: &str = "ProbeA";

/// `IRP_MN_QUERY_REMOVE_DEVICE`.
pub(crate) const QUERY_REMOVE: u8 = 0x01;
/// `IRP_MN_REMOVE_DEVICE`.
pub(crate) const REMOVE: u8 = 0x02;
/// `IRP_MN_CANCEL_REMOVE_DEVICE`.
pub(crate) const CANCEL_REMOVE: u8 = 0x03;
/// `IRP_MN_SURPRISE_REMOVAL`.
pub(crate) const SURPRISE: u8 = 0x17;

/// A booted machine with the probe and two boot volumes: F: (FAT, `a.txt`) and E: (NTFS,
/// `b.txt`).
pub(crate) fn machine(install: Install, filter_manager: bool) -> (Machine, VolumeId, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 7 });
    if filter_manager {
        let _ = m.install_filter_manager();
    }
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat).file("a.txt", b"fat"));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Ntfs).file("b.txt", b"ntfs"));
    install(&mut m);
    m.boot();
    (m, f, e)
}

/// What the probe saw on `volume` since `from` (an index into its callbacks): PnP pres with
/// their minor, PnP posts with their status, query-teardown and teardown with their reason.
pub(crate) fn trace(m: &Machine, volume: &str, from: usize) -> Vec<String> {
    m.callbacks_of(PROBE)
        .into_iter()
        .skip(from)
        .filter(|(v, _)| v.as_deref() == Some(volume))
        .filter_map(|(_, c)| match c {
            Callback::Pre { major: MajorFunction::Pnp, minor, .. } => {
                Some(format!("pre pnp {minor:#04x}"))
            }
            Callback::Post { major: MajorFunction::Pnp, status, .. } => {
                Some(format!("post pnp {status:?}"))
            }
            Callback::InstanceQueryTeardown { .. } => Some("query teardown".to_owned()),
            Callback::TeardownStart { reason } => Some(format!("teardown start {reason:?}")),
            Callback::TeardownComplete { reason } => Some(format!("teardown complete {reason:?}")),
            _ => None,
        })
        .collect()
}

/// How many callbacks the probe has seen so far (a mark for [`trace`]).
pub(crate) fn mark(m: &Machine) -> usize {
    m.callbacks_of(PROBE).len()
}

fn pre(minor: u8) -> String {
    format!("pre pnp {minor:#04x}")
}

fn post(status: Status) -> String {
    format!("post pnp {status:?}")
}

fn teardown() -> [String; 2] {
    let reason = fsfilter::TeardownFlags::VOLUME_DISMOUNT;
    [format!("teardown start {reason:?}"), format!("teardown complete {reason:?}")]
}

fn open(m: &mut Machine, v: VolumeId, path: &str) -> Handle {
    m.open(v, path, CreateOptions::open().access(0x8000_0000)).expect("the file opens")
}

/// A safe removal of a FAT volume with a file open: the query-remove is refused
/// `STATUS_ACCESS_DENIED` (FastFat `FatLockVolumeInternal`) and the PnP manager cancels it:
/// the probe sees the query's pre and post (the refusal) and the cancel's pre and post, no
/// teardown; the file still reads. After its close, the removal goes through: the query's pre
/// and post (success), then the instance's teardown (`VOLUME_DISMOUNT`, never a query-teardown:
/// the volume went, FAT dismounting at the query-remove); the remove that follows reaches the
/// storage stack only, so the probe does not see it. The media is gone afterwards.
pub(crate) fn check_fat_removal(install: Install, filter_manager: bool) {
    let (mut m, f, _) = machine(install, filter_manager);
    let h = open(&mut m, f, "a.txt");
    let at = mark(&m);
    assert_eq!(m.remove_volume(f, false), Status::ACCESS_DENIED);
    m.settle();
    let expected =
        [pre(QUERY_REMOVE), post(Status::ACCESS_DENIED), pre(CANCEL_REMOVE), post(Status::SUCCESS)];
    assert_eq!(trace(&m, "F:", at), expected);
    // Nothing changed: the file reads, a new open works.
    let r = m.read(h, Some(0), 3, fsfilter_sim::IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"fat"[..]));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    let h = open(&mut m, f, "a.txt");
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    let at = mark(&m);
    assert_eq!(m.remove_volume(f, false), Status::SUCCESS);
    m.settle();
    let [start, complete] = teardown();
    assert_eq!(trace(&m, "F:", at), [pre(QUERY_REMOVE), post(Status::SUCCESS), start, complete]);
    // The device is gone: an open finds no media.
    let r = m.create(f, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::NO_MEDIA_IN_DEVICE);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A safe removal of an NTFS volume with nothing open: NTFS locks the volume at the
/// query-remove and dismounts at the remove (Learn: NTFS does not dismount on a query-remove):
/// the probe sees both minors, pre and post, then its instance's teardown (`VOLUME_DISMOUNT`,
/// no query-teardown).
pub(crate) fn check_ntfs_removal(install: Install, filter_manager: bool) {
    let (mut m, _, e) = machine(install, filter_manager);
    let h = open(&mut m, e, "b.txt");
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    let at = mark(&m);
    assert_eq!(m.remove_volume(e, false), Status::SUCCESS);
    m.settle();
    let [start, complete] = teardown();
    let expected = [
        pre(QUERY_REMOVE),
        post(Status::SUCCESS),
        pre(REMOVE),
        post(Status::SUCCESS),
        start,
        complete,
    ];
    assert_eq!(trace(&m, "E:", at), expected);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A surprise removal with a file open: the probe sees `IRP_MN_SURPRISE_REMOVAL`'s pre and post;
/// the file system dismounts, so the open file fails `STATUS_VOLUME_DISMOUNTED`; its close is the
/// volume device's last, and the instance is torn down then (`VOLUME_DISMOUNT`, no
/// query-teardown).
pub(crate) fn check_surprise_removal(install: Install, filter_manager: bool) {
    let (mut m, f, _) = machine(install, filter_manager);
    let h = open(&mut m, f, "a.txt");
    let at = mark(&m);
    assert_eq!(m.remove_volume(f, true), Status::SUCCESS);
    m.settle();
    assert_eq!(trace(&m, "F:", at), [pre(SURPRISE), post(Status::SUCCESS)]);
    let r = m.read(h, Some(0), 3, fsfilter_sim::IoMode::Cached);
    assert_eq!(r.status, Status::VOLUME_DISMOUNTED);
    let at = mark(&m);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    assert_eq!(trace(&m, "F:", at), teardown());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The tests, for a backend's test file: `shared_tests!(install, filter_manager)`.
macro_rules! shared_tests {
    ($install:expr, $filter_manager:expr $(,)?) => {
        #[test]
        fn a_fat_volume_with_a_file_open_refuses_the_query_remove_then_goes_in_both_models() {
            $crate::removal::check_fat_removal($install, $filter_manager);
        }

        #[test]
        fn an_ntfs_volume_is_locked_at_the_query_and_dismounted_at_the_remove_in_both_models() {
            $crate::removal::check_ntfs_removal($install, $filter_manager);
        }

        #[test]
        fn a_surprise_removal_dismounts_and_the_last_close_tears_down_in_both_models() {
            $crate::removal::check_surprise_removal($install, $filter_manager);
        }
    };
}
pub(crate) use shared_tests;
