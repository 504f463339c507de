//! A directory-change notification (`IRP_MN_NOTIFY_CHANGE_DIRECTORY`) through the minifilter
//! backend: the post callback runs when the directory changes, in the thread of the request that
//! made the change; outstanding at a stop of the filter, the Filter Manager drains it (the post
//! callback runs at once with `FLTFL_POST_OPERATION_DRAINING`) and the stop finishes, where the
//! legacy backend's unload waits for it (legacy/tests/notify.rs; docs/semantics.md, draining).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{install_probe, machine};
use fsfilter::{MajorFunction, Status};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, IoRequest, Machine, RequestRef, StartType,
    StopResult, VolumeSpec,
};

fn notify(m: &mut Machine, dir: fsfilter_sim::Handle) -> Option<RequestRef> {
    let r = m.io(IoRequest::NotifyChangeDirectory {
        handle: dir,
        filter: 0x1, // FILE_NOTIFY_CHANGE_FILE_NAME
        watch_tree: false,
        length: 4096,
    });
    assert_eq!(r.status, Status::PENDING, "{r:?}");
    r.io
}

fn completed(m: &Machine, io: Option<RequestRef>) -> Option<Status> {
    m.events().iter().find_map(|e| match &e.kind {
        EventKind::IoComplete { io: i, status, .. } if Some(*i) == io => Some(*status),
        _ => None,
    })
}

/// The probe's post callbacks for directory control: drained or not, in order.
fn directory_posts(m: &Machine) -> Vec<bool> {
    m.callbacks_of("Probe")
        .into_iter()
        .filter_map(|(_, c)| match c {
            Callback::Post { major: MajorFunction::DirectoryControl, draining, .. } => {
                Some(draining)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_notification_outstanding_at_a_stop_is_drained_and_the_stop_finishes() {
    let mut m = machine();
    install_probe(&mut m, "Probe", StartType::Boot, "370100", &[]);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\docs\\a.txt", b"a"));
    m.boot();
    let dir = m.open(c, "docs", CreateOptions::directory()).unwrap();

    let first = notify(&mut m, dir);
    assert!(directory_posts(&m).is_empty());
    let h = m.open(c, "docs\\b.txt", CreateOptions::create()).unwrap();
    m.close_handle(h);
    assert_eq!(completed(&m, first), Some(Status::SUCCESS));
    assert_eq!(directory_posts(&m), [false]);

    let second = notify(&mut m, dir);
    assert!(matches!(m.stop("Probe"), StopResult::Unloaded));
    assert_eq!(directory_posts(&m), [false, true], "drained at the stop");
    assert_eq!(completed(&m, second), None, "the file system still holds it");
    let h = m.open(c, "docs\\c.txt", CreateOptions::create()).unwrap();
    m.close_handle(h);
    assert_eq!(completed(&m, second), Some(Status::SUCCESS));
    assert_eq!(directory_posts(&m), [false, true], "no post after the drain");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    m.close_handle(dir);
}
