//! Helpers of the directory-change notification tests through both backends
//! (`legacy/tests/notify.rs`, `minifilter/tests/notify.rs`).

use fsfilter::{MajorFunction, Status};
use fsfilter_sim::{Callback, EventKind, Handle, IoRequest, Machine, RequestRef};

/// Waits for a file name change in the directory of `dir`: the request stays pending.
pub(crate) fn notify(m: &mut Machine, dir: Handle) -> Option<RequestRef> {
    let r = m.io(IoRequest::NotifyChangeDirectory {
        handle: dir,
        filter: 0x1, // FILE_NOTIFY_CHANGE_FILE_NAME
        watch_tree: false,
        length: 4096,
    });
    assert_eq!(r.status, Status::PENDING, "{r:?}");
    r.io
}

/// How request `io` completed, once it has.
pub(crate) fn completed(m: &Machine, io: Option<RequestRef>) -> Option<Status> {
    m.events().iter().find_map(|e| match &e.kind {
        EventKind::IoComplete { io: i, status, .. } if Some(*i) == io => Some(*status),
        _ => None,
    })
}

/// `driver`'s post callbacks for directory control: drained or not, in order.
pub(crate) fn directory_posts(m: &Machine, driver: &str) -> Vec<bool> {
    m.callbacks_of(driver)
        .into_iter()
        .filter_map(|(_, c)| match c {
            Callback::Post { major: MajorFunction::DirectoryControl, draining, .. } => {
                Some(draining)
            }
            _ => None,
        })
        .collect()
}
