//! A directory-change notification (`IRP_MN_NOTIFY_CHANGE_DIRECTORY`) through the minifilter
//! backend: the post callback runs when the directory changes, in the thread of the request that
//! made the change; outstanding at a stop of the filter, the Filter Manager drains it (the post
//! callback runs at once with `FLTFL_POST_OPERATION_DRAINING`) and the stop finishes, where the
//! legacy backend's unload waits for it (legacy/tests/notify.rs; docs/semantics.md, draining).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;
#[path = "../../sim/testing/notify.rs"]
mod notify;

use common::{install_probe, machine};
use fsfilter::Status;
use fsfilter_sim::{CreateOptions, FsKind, StartType, StopResult, VolumeSpec};
use notify::{completed, directory_posts, notify};

#[test]
fn a_notification_outstanding_at_a_stop_is_drained_and_the_stop_finishes() {
    let mut m = machine();
    install_probe(&mut m, "Probe", StartType::Boot, "370100", &[]);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\docs\\a.txt", b"a"));
    m.boot();
    let dir = m.open(c, "docs", CreateOptions::directory()).unwrap();

    let first = notify(&mut m, dir);
    assert!(directory_posts(&m, "Probe").is_empty());
    let h = m.open(c, "docs\\b.txt", CreateOptions::create()).unwrap();
    m.close_handle(h);
    assert_eq!(completed(&m, first), Some(Status::SUCCESS));
    assert_eq!(directory_posts(&m, "Probe"), [false]);

    let second = notify(&mut m, dir);
    assert!(matches!(m.stop("Probe"), StopResult::Unloaded));
    assert_eq!(directory_posts(&m, "Probe"), [false, true], "drained at the stop");
    assert_eq!(completed(&m, second), None, "the file system still holds it");
    let h = m.open(c, "docs\\c.txt", CreateOptions::create()).unwrap();
    m.close_handle(h);
    assert_eq!(completed(&m, second), Some(Status::SUCCESS));
    assert_eq!(directory_posts(&m, "Probe"), [false, true], "no post after the drain");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    m.close_handle(dir);
}
