//! A directory-change notification (`IRP_MN_NOTIFY_CHANGE_DIRECTORY`) through the legacy backend:
//! the file system holds the IRP until the directory changes, and the backend's completion
//! routine runs the post callback in the thread of the request that made the change. A stop of
//! the filter while one is outstanding waits for it: the backend's unload waits for every
//! operation it sent down with a post callback, and nothing completes this one (on Windows,
//! `sc stop` hangs until the directory changes; the Filter Manager drains it instead,
//! minifilter/tests/notify.rs; docs/semantics.md, draining). When the change comes after all,
//! the IRP completes through the routine of a device unload deleted: before December 6 that
//! path returned without propagating the pending mark (facts.md §1.8), and the verifier blamed
//! the filter for a dispatch routine that returned `STATUS_PENDING` unmarked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;
#[path = "../../sim/testing/notify.rs"]
mod notify;

use common::{install_probe, machine};
use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, FsKind, Machine, Rule, StartType, StopResult, VolumeId, VolumeSpec,
};
use notify::{completed, directory_posts, notify};

fn add(m: &mut Machine, c: VolumeId, path: &str) {
    let h = m.open(c, path, CreateOptions::create()).unwrap();
    m.close_handle(h);
}

#[test]
fn a_notification_outstanding_at_a_stop_holds_the_unload_and_keeps_its_pending_mark() {
    let mut m = machine();
    install_probe(&mut m, "Probe", StartType::Boot, &[]);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\docs\\a.txt", b"a"));
    m.boot();
    let dir = m.open(c, "docs", CreateOptions::directory()).unwrap();

    // Loaded: the change completes the notification, and its post callback runs then.
    let first = notify(&mut m, dir);
    assert!(directory_posts(&m, "Probe").is_empty());
    add(&mut m, c, "docs\\b.txt");
    assert_eq!(completed(&m, first), Some(Status::SUCCESS));
    assert_eq!(directory_posts(&m, "Probe"), [false]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());

    // Outstanding at the stop: the unload's wait for it is one nothing can satisfy.
    let second = notify(&mut m, dir);
    let _: StopResult = m.stop("Probe");
    let rules: Vec<Rule> = m.findings().into_iter().map(|(rule, _, _)| rule).collect();
    assert_eq!(rules, [Rule::Deadlock]);

    // The change comes: the IRP completes with its pending mark carried up, and no post runs
    // (the instance is torn down). Past the deadlock the simulator went on where Windows would
    // still wait, so the device's retirement never came and its work item is left when the
    // image goes (POOL_LEAKED_AT_UNLOAD): a consequence of the deadlock, not a defect of its
    // own. What must not be there is a pending mark lost on the way up.
    add(&mut m, c, "docs\\c.txt");
    assert_eq!(completed(&m, second), Some(Status::SUCCESS));
    assert_eq!(directory_posts(&m, "Probe"), [false]);
    let rules: Vec<Rule> = m.findings().into_iter().map(|(rule, _, _)| rule).collect();
    assert_eq!(rules.first(), Some(&Rule::Deadlock), "{:?}", m.findings());
    assert!(!rules.contains(&Rule::PendingWithoutMark), "{:?}", m.findings());
    assert!(!rules.contains(&Rule::IrpHaltedAtUnload), "{:?}", m.findings());
    m.close_handle(dir);
}
