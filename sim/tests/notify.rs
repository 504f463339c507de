//! Directory change notifications (`IRP_MN_NOTIFY_CHANGE_DIRECTORY`, docs/simulator.md
//! "Directory change notifications"): a request waits until a change its filter selects happens
//! in the directory, and completes inside the request that made the change, before it; changes
//! no request waits for are kept in the handle's buffer, and dropped for
//! `STATUS_NOTIFY_ENUM_DIR` when they outgrow it; the handle's cleanup ends the watch with
//! `STATUS_NOTIFY_CLEANUP`, a dismount too, the directory's deletion with `STATUS_DELETE_PENDING`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the shared test drivers (common/) poke kernel structures directly, as C drivers do"
)]

mod common;

use common::machine;
use fsfilter::Status;
use fsfilter_sim::nt::file_info as fi;
use fsfilter_sim::{
    CreateOptions, EventKind, FsKind, Handle, IoMode, IoRequest, IoResult, Machine, RequestRef,
    VolumeId, VolumeSpec,
};

const FILE_NAME: u32 = 0x1;
const DIR_NAME: u32 = 0x2;
const SIZE: u32 = 0x8;
const LAST_WRITE: u32 = 0x10;

fn volume(kind: FsKind) -> (Machine, VolumeId) {
    let mut m = machine(21);
    let c = m.add_volume(
        VolumeSpec::new("C:", kind)
            .file("\\watched\\a.txt", b"aaaa")
            .file("\\watched\\deeper\\b.txt", b"b")
            .file("\\other\\", b""),
    );
    m.boot();
    (m, c)
}

fn notify(m: &mut Machine, h: Handle, filter: u32, watch_tree: bool, length: usize) -> IoResult {
    m.io(IoRequest::NotifyChangeDirectory { handle: h, filter, watch_tree, length })
}

/// Creates a file (or, with a trailing `\\`, a directory) and closes it.
fn add(m: &mut Machine, c: VolumeId, path: &str) {
    let options =
        if path.ends_with('\\') { CreateOptions::directory() } else { CreateOptions::create() };
    let h = m.open(c, path.trim_end_matches('\\'), options).unwrap();
    m.close_handle(h);
}

/// The completion of request `io`: its status and byte count, and its position in the log.
fn completion(m: &Machine, io: Option<RequestRef>) -> Option<(Status, usize, usize)> {
    m.events().iter().enumerate().find_map(|(at, e)| match &e.kind {
        EventKind::IoComplete { io: i, status, information, .. } if Some(*i) == io => {
            Some((*status, *information, at))
        }
        _ => None,
    })
}

/// The changes the file system reported for request `io` (`directory_changes`).
fn changes(m: &Machine, io: Option<RequestRef>) -> Vec<String> {
    let prefix = format!("io {}: ", io.map_or(u32::MAX, |r| r.0));
    m.events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::System { what: "directory_changes", detail, .. } => {
                detail.strip_prefix(&prefix).map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_waiting_notification_completes_inside_the_create_that_adds_a_file() {
    for kind in [FsKind::Ntfs, FsKind::Fat] {
        let (mut m, c) = volume(kind);
        let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
        let n = notify(&mut m, dir, FILE_NAME, false, 4096);
        assert_eq!(n.status, Status::PENDING, "{kind:?}");
        assert_eq!(completion(&m, n.io), None);
        let created = m.create(c, "watched\\new.txt", CreateOptions::create());
        assert_eq!(created.status, Status::SUCCESS);
        // One record: 12 bytes of header and 7 UTF-16 units (the last record is not padded).
        let (status, bytes, at) = completion(&m, n.io).expect("completed by the create");
        assert_eq!((status, bytes), (Status::SUCCESS, 26), "{kind:?}");
        assert_eq!(changes(&m, n.io), ["added new.txt"]);
        // Inside the create, before it completes (FsRtl completes it within the report).
        let (_, _, create_at) = completion(&m, created.io).unwrap();
        assert!(at < create_at, "{kind:?}");
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}

#[test]
fn the_filter_the_tree_flag_and_the_reporting_points_decide_what_is_seen() {
    let (mut m, c) = volume(FsKind::Ntfs);
    let names = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let n = notify(&mut m, names, FILE_NAME, false, 4096);
    // A directory created, and a file created below a subdirectory: neither is a file name
    // change in the watched directory itself.
    add(&mut m, c, "watched\\sub\\");
    add(&mut m, c, "watched\\deeper\\c.txt");
    assert_eq!(completion(&m, n.io), None);

    // A subtree watch of directory names sees the subdirectory, named relative to the watch.
    let tree = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let t = notify(&mut m, tree, DIR_NAME, true, 4096);
    add(&mut m, c, "watched\\deeper\\inner\\");
    assert_eq!(completion(&m, t.io).map(|c| c.0), Some(Status::SUCCESS));
    assert_eq!(changes(&m, t.io), ["added deeper\\inner"]);

    // Writes are reported at the writer's cleanup, with the size when it changed.
    let writes = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let w = notify(&mut m, writes, LAST_WRITE | SIZE, false, 4096);
    let a = m.open(c, "watched\\a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.write(a, Some(0), b"AAAA", IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(completion(&m, w.io), None, "not before the cleanup");
    m.close_handle(a);
    assert_eq!(changes(&m, w.io), ["modified a.txt"]);
    // The file-name watch still waits: nothing so far changed a name in the directory.
    assert_eq!(completion(&m, n.io), None);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_size_change_is_reported_only_to_a_watch_that_selects_it() {
    let (mut m, c) = volume(FsKind::Ntfs);
    let size = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let s = notify(&mut m, size, SIZE, false, 4096);
    // Same size: a last-write change only.
    let a = m.open(c, "watched\\a.txt", CreateOptions::open()).unwrap();
    m.write(a, Some(0), b"ZZZZ", IoMode::Cached);
    m.close_handle(a);
    assert_eq!(completion(&m, s.io), None);
    // Extended: a size change.
    let a = m.open(c, "watched\\a.txt", CreateOptions::open()).unwrap();
    m.write(a, Some(4), b"more", IoMode::Cached);
    m.close_handle(a);
    assert_eq!(changes(&m, s.io), ["modified a.txt"]);
}

#[test]
fn changes_kept_while_no_request_waits_come_back_at_once_or_overflow() {
    let (mut m, c) = volume(FsKind::Ntfs);
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    // The first request sets the buffer up: 64 bytes, room for two short names.
    let first = notify(&mut m, dir, FILE_NAME, false, 64);
    add(&mut m, c, "watched\\1.txt");
    assert_eq!(completion(&m, first.io).map(|c| c.0), Some(Status::SUCCESS));
    // Two changes with no request waiting: kept, and returned by the next request at once.
    add(&mut m, c, "watched\\2.txt");
    add(&mut m, c, "watched\\3.txt");
    let kept = notify(&mut m, dir, FILE_NAME, false, 64);
    // 22 bytes each, the first padded to 24.
    assert_eq!((kept.status, kept.information), (Status::SUCCESS, 46), "{kept:?}");
    assert_eq!(changes(&m, kept.io), ["added 2.txt, added 3.txt"], "answered in the call");
    assert_eq!(u32::from_le_bytes(kept.data[0..4].try_into().unwrap()), 24, "NextEntryOffset");
    // Three changes outgrow the 64-byte buffer: dropped, and the caller must enumerate again.
    for name in ["4.txt", "5.txt", "6.txt"] {
        add(&mut m, c, &format!("watched\\{name}"));
    }
    let over = notify(&mut m, dir, FILE_NAME, false, 64);
    assert_eq!((over.status, over.information), (Status::NOTIFY_ENUM_DIR, 0));
    // A request whose own buffer cannot hold the change: the same answer.
    let small = notify(&mut m, dir, FILE_NAME, false, 8);
    assert_eq!(small.status, Status::PENDING);
    add(&mut m, c, "watched\\7.txt");
    assert_eq!(completion(&m, small.io).map(|c| c.0), Some(Status::NOTIFY_ENUM_DIR));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn renames_are_old_and_new_names_within_a_directory_and_removals_across() {
    let (mut m, c) = volume(FsKind::Ntfs);
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let n = notify(&mut m, dir, FILE_NAME, false, 4096);
    let rename = |m: &mut Machine, h: Handle, target: &str| {
        let units: Vec<u16> = target.encode_utf16().collect();
        let mut info = vec![0u8; 20];
        info[16..20].copy_from_slice(&((units.len() * 2) as u32).to_le_bytes());
        info.extend(units.iter().flat_map(|u| u.to_le_bytes()));
        m.set_information(h, fi::RENAME, &info).status
    };
    let a = m.open(c, "watched\\a.txt", CreateOptions::open().access(0x0001_0000)).unwrap();
    assert_eq!(rename(&mut m, a, "\\watched\\z.txt"), Status::SUCCESS);
    assert_eq!(changes(&m, n.io), ["renamed from a.txt, renamed to z.txt"]);
    let again = notify(&mut m, dir, FILE_NAME, false, 4096);
    assert_eq!(rename(&mut m, a, "\\other\\z.txt"), Status::SUCCESS);
    assert_eq!(changes(&m, again.io), ["removed z.txt"]);
    m.close_handle(a);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn cleanup_dismount_and_deletion_end_the_watch() {
    let (mut m, c) = volume(FsKind::Ntfs);
    // The handle's cleanup: STATUS_NOTIFY_CLEANUP, before the cleanup itself completes. The
    // handles here are overlapped: on a synchronous one the cleanup, or the set information
    // below, would wait for the notification (the file object's lock, sim/tests/async_io.rs).
    let dir = m.open(c, "watched", CreateOptions::directory().overlapped()).unwrap();
    let n = notify(&mut m, dir, FILE_NAME, false, 4096);
    assert_eq!(n.status, Status::PENDING);
    let cleanup = m.io(IoRequest::Cleanup { handle: dir });
    let (status, _, at) = completion(&m, n.io).expect("ended by the cleanup");
    assert_eq!(status, Status::NOTIFY_CLEANUP);
    assert!(at < completion(&m, cleanup.io).unwrap().2);
    m.io(IoRequest::Close { handle: dir });

    // The watched directory deleted: STATUS_DELETE_PENDING, for later requests too.
    let options = CreateOptions::directory().access(0x0001_0001).overlapped();
    let gone = m.open(c, "other", options).unwrap();
    let g = notify(&mut m, gone, FILE_NAME, false, 4096);
    assert_eq!(m.set_information(gone, fi::DISPOSITION, &[1]).status, Status::SUCCESS);
    assert_eq!(completion(&m, g.io).map(|c| c.0), Some(Status::DELETE_PENDING));
    assert_eq!(notify(&mut m, gone, FILE_NAME, false, 4096).status, Status::DELETE_PENDING);
    m.close_handle(gone);

    // A dismount: every watch of the volume ends with STATUS_NOTIFY_CLEANUP.
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let d = notify(&mut m, dir, FILE_NAME, false, 4096);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    assert_eq!(completion(&m, d.io).map(|c| c.0), Some(Status::NOTIFY_CLEANUP));
    m.close_handle(dir);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn requests_the_file_system_refuses() {
    let (mut m, c) = volume(FsKind::Ntfs);
    // A file, the volume, an empty or invalid filter: STATUS_INVALID_PARAMETER.
    let file = m.open(c, "watched\\a.txt", CreateOptions::open()).unwrap();
    assert_eq!(notify(&mut m, file, FILE_NAME, false, 64).status, Status::INVALID_PARAMETER);
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    // The completion filter is the I/O manager's to check for a user-mode caller: nothing is
    // sent (NtNotifyChangeDirectoryFile).
    for filter in [0, 0x1000] {
        let r = notify(&mut m, dir, filter, false, 64);
        assert_eq!((r.status, r.io), (Status::INVALID_PARAMETER, None), "{filter:#x}");
    }
    // A handle that may not list the directory: refused by the I/O manager, nothing sent.
    let blind = m.open(c, "watched", CreateOptions::directory().access(0x0010_0000)).unwrap();
    let refused = notify(&mut m, blind, FILE_NAME, false, 64);
    assert_eq!((refused.status, refused.io), (Status::ACCESS_DENIED, None));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    drop(m);
    // A named pipe's file system serves no notification.
    let mut p = machine(22);
    let pipes = p.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    p.boot();
    let pipe = p.open(pipes, "pipe", CreateOptions::default()).unwrap();
    let r = notify(&mut p, pipe, FILE_NAME, false, 64);
    assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST);
    assert!(p.findings().is_empty(), "{:?}", p.findings());
}

#[test]
fn a_waiting_request_holds_as_much_as_its_own_buffer_not_the_first_requests() {
    // FsRtlNotifyFullReportChange: with a request waiting and nothing kept, a change is bounded
    // by that request's length; the first request's length bounds only what is kept.
    let (mut m, c) = volume(FsKind::Ntfs);
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let first = notify(&mut m, dir, FILE_NAME, false, 32);
    add(&mut m, c, "watched\\1.txt");
    assert_eq!(completion(&m, first.io).map(|c| c.0), Some(Status::SUCCESS));
    let big = notify(&mut m, dir, FILE_NAME, false, 4096);
    assert_eq!(big.status, Status::PENDING);
    // 12 bytes of header and 40 units: more than the 32 bytes of the first request.
    let long = format!("watched\\{}.txt", "x".repeat(36));
    add(&mut m, c, &long);
    assert_eq!(completion(&m, big.io).map(|c| (c.0, c.1)), Some((Status::SUCCESS, 92)));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_byte_count_does_not_include_the_last_records_padding() {
    // FsRtl: each record starts 4-byte aligned (NextEntryOffset), but the data length ends with
    // the last record's name: 12 + 14 bytes for `new.txt`, which a 26-byte buffer holds.
    let (mut m, c) = volume(FsKind::Ntfs);
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let n = notify(&mut m, dir, FILE_NAME, false, 26);
    add(&mut m, c, "watched\\new.txt");
    assert_eq!(completion(&m, n.io).map(|c| (c.0, c.1)), Some((Status::SUCCESS, 26)));
    assert_eq!(changes(&m, n.io), ["added new.txt"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_request_that_reaches_the_file_system_after_the_handles_cleanup_ends_at_once() {
    // FsRtlNotifyFullChangeDirectory: a file object through cleanup (FO_CLEANUP_COMPLETE) gets
    // STATUS_NOTIFY_CLEANUP at once, even when its handle never set a watch up. Here a filter
    // holds the request and sends it down once the handle's cleanup has gone down.
    let mut m = common::machine_with_spy(23);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\watched\\a.txt", b"a"));
    m.boot();
    common::spy(|s| s.hold_notify = true);
    // Overlapped: on a synchronous handle the cleanup would wait for the held request.
    let dir = m.open(c, "watched", CreateOptions::directory().overlapped()).unwrap();
    let late = notify(&mut m, dir, FILE_NAME, false, 4096);
    assert_eq!(late.status, Status::PENDING);
    assert_eq!(common::spy(|s| s.held.len()), 1);
    m.io(IoRequest::Cleanup { handle: dir });
    assert_eq!(completion(&m, late.io).map(|c| c.0), Some(Status::NOTIFY_CLEANUP));
    m.io(IoRequest::Close { handle: dir });
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn an_overwrite_is_a_modification_reported_inside_the_create() {
    // FastFat's FatSupersedeOrOverwriteFile reports FILE_ACTION_MODIFIED with LAST_WRITE,
    // ATTRIBUTES and SIZE at once, inside the create.
    for disposition in [4u32, 0] {
        let (mut m, c) = volume(FsKind::Fat);
        let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
        let n = notify(&mut m, dir, LAST_WRITE, false, 4096);
        let opened = m.create(c, "watched\\a.txt", CreateOptions::open().disposition(disposition));
        assert_eq!(opened.status, Status::SUCCESS, "{disposition}");
        let (status, _, at) = completion(&m, n.io).expect("completed by the overwrite");
        assert_eq!(status, Status::SUCCESS);
        assert_eq!(changes(&m, n.io), ["modified a.txt"]);
        assert!(at < completion(&m, opened.io).unwrap().2);
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}

#[test]
fn each_change_but_an_old_name_completes_the_waiting_request_by_itself() {
    // FsRtlNotifyFullReportChange completes the waiting request at every report but a
    // RENAMED_OLD_NAME: a move inside a subtree watch answers the waiting request with the
    // removal, and keeps the addition for the next one.
    let (mut m, c) = volume(FsKind::Ntfs);
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let n = notify(&mut m, dir, FILE_NAME, true, 4096);
    let a = m.open(c, "watched\\a.txt", CreateOptions::open().access(0x0001_0000)).unwrap();
    let target: Vec<u16> = "\\watched\\deeper\\a.txt".encode_utf16().collect();
    let mut info = vec![0u8; 20];
    info[16..20].copy_from_slice(&((target.len() * 2) as u32).to_le_bytes());
    info.extend(target.iter().flat_map(|u| u.to_le_bytes()));
    assert_eq!(m.set_information(a, fi::RENAME, &info).status, Status::SUCCESS);
    assert_eq!(changes(&m, n.io), ["removed a.txt"]);
    let next = notify(&mut m, dir, FILE_NAME, true, 4096);
    assert_eq!(next.status, Status::SUCCESS);
    assert_eq!(changes(&m, next.io), ["added deeper\\a.txt"]);
    m.close_handle(a);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn one_change_answers_the_oldest_request_of_each_handle_watching() {
    let (mut m, c) = volume(FsKind::Fat);
    // Overlapped: on a synchronous handle the second request would wait for the first.
    let one = m.open(c, "watched", CreateOptions::directory().overlapped()).unwrap();
    let two = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let first = notify(&mut m, one, FILE_NAME, false, 4096);
    let second = notify(&mut m, one, FILE_NAME, false, 4096);
    let other = notify(&mut m, two, FILE_NAME, false, 4096);
    add(&mut m, c, "watched\\n.txt");
    assert_eq!(changes(&m, first.io), ["added n.txt"]);
    assert_eq!(changes(&m, other.io), ["added n.txt"]);
    assert_eq!(completion(&m, second.io), None, "waits its turn");
    m.close_handle(one);
    assert_eq!(completion(&m, second.io).map(|c| c.0), Some(Status::NOTIFY_CLEANUP));
    m.close_handle(two);
    assert_eq!(completion(&m, other.io).map(|c| c.0), Some(Status::SUCCESS));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A watch set up with a buffer of 0 bytes keeps no change (docs/simulator.md, a choice): the
/// waiting request cannot hold one (`STATUS_NOTIFY_ENUM_DIR`), and a change made while none
/// waits overflows at once, so the next request answers the same at once.
#[test]
fn a_zero_length_watch_keeps_nothing_and_asks_for_enumeration() {
    let (mut m, c) = volume(FsKind::Ntfs);
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let waiting = notify(&mut m, dir, FILE_NAME, false, 0);
    assert_eq!(waiting.status, Status::PENDING);
    add(&mut m, c, "watched\\1.txt");
    assert_eq!(completion(&m, waiting.io).map(|c| (c.0, c.1)), Some((Status::NOTIFY_ENUM_DIR, 0)));
    add(&mut m, c, "watched\\2.txt");
    let next = notify(&mut m, dir, FILE_NAME, false, 0);
    assert_eq!((next.status, next.information), (Status::NOTIFY_ENUM_DIR, 0));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
