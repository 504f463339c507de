//! Oplocks of the disk file systems (docs/simulator.md, "Oplocks"): the legacy oplocks a handle
//! requests by FSCTL, granted by pending the request, which completes at the break
//! (`FILE_OPLOCK_BROKEN_TO_LEVEL_2` / `_TO_NONE`), the breaks raised by other file objects'
//! creates, reads, writes, locks and information sets, the acknowledgements, and the owner's
//! cleanup, as WRK's `FsRtlOplockFsctrl` / `FsRtlCheckOplock` and the Learn pages have them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::cell::RefCell;
use std::rc::Rc;

use fsfilter::Status;
use fsfilter_sim::fs::oplock::{
    ACK_TIMEOUT_MS, FILE_COMPLETE_IF_OPLOCKED, FILE_OPBATCH_BREAK_UNDERWAY,
    FILE_OPLOCK_BROKEN_TO_LEVEL_2, FILE_OPLOCK_BROKEN_TO_NONE, STATUS_INVALID_OPLOCK_PROTOCOL,
    STATUS_OPLOCK_BREAK_IN_PROGRESS, code,
};
use fsfilter_sim::nt::{access, disposition, share};
use fsfilter_sim::{
    CreateOptions, EventKind, FsKind, Handle, IoMode, IoRequest, IoResult, Machine, MachineConfig,
    RequestRef, VolumeId, VolumeSpec,
};

fn machine(fs: FsKind) -> (Machine, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let c = m.add_volume(
        VolumeSpec::new("C:", fs).file("\\a.txt", &[1; 1024]).file("\\dir\\b.txt", b"b"),
    );
    m.boot();
    (m, c)
}

fn fsctl(m: &mut Machine, handle: Handle, code: u32) -> IoResult {
    m.io(IoRequest::Fsctl { handle, code, input: &[], output_length: 0 })
}

/// The final status and information of request `io`, if it completed.
fn completed(m: &Machine, io: Option<RequestRef>) -> Option<(Status, usize)> {
    m.events().iter().find_map(|e| match &e.kind {
        EventKind::IoComplete { io: i, status, information, .. } if Some(*i) == io => {
            Some((*status, *information))
        }
        _ => None,
    })
}

fn overlapped() -> CreateOptions {
    CreateOptions::open().overlapped()
}

/// An overlapped handle on `a.txt` holding a granted oplock of `code`: the request, pending.
fn granted(m: &mut Machine, c: VolumeId, code: u32) -> (Handle, IoResult) {
    let h = m.open(c, "a.txt", overlapped()).unwrap();
    let r = fsctl(m, h, code);
    assert_eq!(r.status, Status::PENDING, "{code:#x}");
    assert_eq!(completed(m, r.io), None, "granted: pending until the break");
    (h, r)
}

fn saw(m: &Machine, what: &str) -> bool {
    m.events().iter().any(|e| matches!(&e.kind, EventKind::System { what: w, .. } if *w == what))
}

#[test]
fn a_level_1_oplock_breaks_to_level_2_on_another_open_which_waits_for_the_acknowledgement() {
    for fs in [FsKind::Ntfs, FsKind::Fat] {
        let (mut m, c) = machine(fs);
        let (h1, req) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
        let ack: Rc<RefCell<Option<(IoResult, u64)>>> = Rc::default();
        let a = ack.clone();
        m.schedule(10, move |m| {
            // The owner saw its request complete (the break) before acknowledging.
            let r = fsctl(m, h1, code::OPLOCK_BREAK_ACKNOWLEDGE);
            *a.borrow_mut() = Some((r, m.now_ms()));
        });
        let before = m.now_ms();
        let r = m.create(c, "a.txt", CreateOptions::open());
        assert_eq!(r.status, Status::SUCCESS, "{fs:?}: the open goes on after the acknowledgement");
        assert!(m.now_ms() >= before + 10, "{fs:?}: it waited for the acknowledgement");
        let broken = completed(&m, req.io);
        assert_eq!(broken, Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)), "{fs:?}");
        // The acknowledgement that keeps a Level 2 oplock is itself pended: it is that oplock's
        // request, completed at its break.
        let (ack_r, _) = ack.borrow_mut().take().unwrap();
        assert_eq!(ack_r.status, Status::PENDING, "{fs:?}");
        assert_eq!(completed(&m, ack_r.io), None);
        // A write of the new handle breaks the Level 2 oplock to none, without waiting.
        let w = m.write(r.handle.unwrap(), Some(0), b"x", IoMode::Cached);
        assert_eq!(w.status, Status::SUCCESS);
        let level2 = completed(&m, ack_r.io);
        assert_eq!(level2, Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE)), "{fs:?}");
        assert!(saw(&m, "oplock_break"));
    }
}

#[test]
fn complete_if_oplocked_opens_at_once_with_break_in_progress_and_the_ack_ends_the_break() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, req) = granted(&mut m, c, code::REQUEST_BATCH_OPLOCK);
    let options = CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED);
    let before = m.now_ms();
    let r = m.create(c, "a.txt", options);
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    assert!(r.handle.is_some(), "a success status: the handle is open");
    assert_eq!(m.now_ms(), before, "no wait");
    assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)));
    // FSCTL_OPLOCK_BREAK_ACK_NO_2: broken to none, completed at once.
    let ack = fsctl(&mut m, h1, code::OPLOCK_BREAK_ACK_NO_2);
    assert_eq!(ack.status, Status::SUCCESS);
    // No break left to acknowledge.
    let again = fsctl(&mut m, h1, code::OPLOCK_BREAK_ACKNOWLEDGE);
    assert_eq!(again.status, STATUS_INVALID_OPLOCK_PROTOCOL);
}

#[test]
fn requests_are_refused_on_a_synchronous_handle_with_other_handles_or_on_a_directory() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let sync = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    for code in
        [code::REQUEST_OPLOCK_LEVEL_1, code::REQUEST_BATCH_OPLOCK, code::REQUEST_OPLOCK_LEVEL_2]
    {
        let r = fsctl(&mut m, sync, code);
        assert_eq!(r.status, Status::OPLOCK_NOT_GRANTED, "synchronous: {code:#x}");
    }
    // Two handles: no exclusive oplock, but Level 2 oplocks for both.
    let h = m.open(c, "a.txt", overlapped()).unwrap();
    let r = fsctl(&mut m, h, code::REQUEST_OPLOCK_LEVEL_1);
    assert_eq!(r.status, Status::OPLOCK_NOT_GRANTED);
    let r = fsctl(&mut m, h, code::REQUEST_OPLOCK_LEVEL_2);
    assert_eq!(r.status, Status::PENDING);
    let d = m.open(c, "dir", CreateOptions::directory().overlapped()).unwrap();
    for code in [code::REQUEST_OPLOCK_LEVEL_1, code::OPLOCK_BREAK_ACKNOWLEDGE] {
        let r = fsctl(&mut m, d, code);
        assert_eq!(r.status, Status::INVALID_PARAMETER, "files only: {code:#x}");
    }
    // An acknowledgement with no exclusive oplock.
    let r = fsctl(&mut m, sync, code::OPLOCK_BREAK_ACKNOWLEDGE);
    assert_eq!(r.status, STATUS_INVALID_OPLOCK_PROTOCOL);
}

#[test]
fn an_exclusive_oplock_is_refused_while_another_is_held_and_after_cleanup() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, _) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let r = fsctl(&mut m, h1, code::REQUEST_BATCH_OPLOCK);
    assert_eq!(r.status, Status::OPLOCK_NOT_GRANTED);
    let r = fsctl(&mut m, h1, code::REQUEST_OPLOCK_LEVEL_2);
    assert_eq!(r.status, Status::OPLOCK_NOT_GRANTED);
}

#[test]
fn an_open_for_attributes_only_breaks_nothing_and_an_overwrite_breaks_to_none() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (_h1, req) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let attrs = CreateOptions::open().access(access::FILE_READ_ATTRIBUTES);
    assert_eq!(m.create(c, "a.txt", attrs).status, Status::SUCCESS);
    assert_eq!(completed(&m, req.io), None, "not broken");
    let overwrite = CreateOptions::open()
        .disposition(disposition::OVERWRITE)
        .options(FILE_COMPLETE_IF_OPLOCKED);
    assert_eq!(m.create(c, "a.txt", overwrite).status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE)));
}

#[test]
fn a_filter_oplock_lets_readers_sharing_reads_open_and_read_and_breaks_to_none_for_a_writer() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (_h1, req) = granted(&mut m, c, code::REQUEST_FILTER_OPLOCK);
    let all = share::READ | share::WRITE | share::DELETE;
    let reader = CreateOptions::open().access(access::GENERIC_READ).share(all);
    let h2 = m.open(c, "a.txt", reader).unwrap();
    assert_eq!(m.read(h2, Some(0), 16, IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(completed(&m, req.io), None, "a Filter oplock is not broken by readers");
    let writer = CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED);
    assert_eq!(m.create(c, "a.txt", writer).status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    // A Filter oplock never breaks to Level 2.
    assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE)));
}

#[test]
fn a_batch_oplock_breaks_before_the_share_check_and_close_pending_waits_for_the_cleanup() {
    let (mut m, c) = machine(FsKind::Ntfs);
    // The owner shares nothing: a second open is a sharing violation once the owner is gone...
    let h1 = m.open(c, "a.txt", overlapped().share(0)).unwrap();
    let req = fsctl(&mut m, h1, code::REQUEST_BATCH_OPLOCK);
    assert_eq!(req.status, Status::PENDING);
    // ... but the break comes first, and the opener waits: the owner acknowledges that it
    // closes, then closes.
    m.schedule(5, move |m| {
        assert_eq!(fsctl(m, h1, code::OPBATCH_ACK_CLOSE_PENDING).status, Status::SUCCESS);
    });
    m.schedule(20, move |m| {
        let _ = m.close_handle(h1);
    });
    let before = m.now_ms();
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "the owner's handle went before the open went on");
    assert!(m.now_ms() >= before + 20, "close pending: waited for the cleanup, not the ack");
    assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)));
    // With FILE_COMPLETE_IF_OPLOCKED the break starts and the share check refuses at once.
    drop(m);
    let (mut m, c) = machine(FsKind::Ntfs);
    let h1 = m.open(c, "a.txt", overlapped().share(0)).unwrap();
    let req = fsctl(&mut m, h1, code::REQUEST_BATCH_OPLOCK);
    let r = m.create(c, "a.txt", CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED));
    // FastFat's FILE_OPBATCH_BREAK_UNDERWAY says why.
    assert_eq!((r.status, r.information), (Status::SHARING_VIOLATION, FILE_OPBATCH_BREAK_UNDERWAY));
    assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)));
}

#[test]
fn level_2_oplocks_of_several_handles_all_break_to_none_on_a_write_or_lock_without_waiting() {
    for op in ["write", "lock", "set_eof"] {
        let (mut m, c) = machine(FsKind::Fat);
        let h1 = m.open(c, "a.txt", overlapped()).unwrap();
        let h2 = m.open(c, "a.txt", overlapped()).unwrap();
        let r1 = fsctl(&mut m, h1, code::REQUEST_OPLOCK_LEVEL_2);
        let r2 = fsctl(&mut m, h2, code::REQUEST_OPLOCK_LEVEL_2);
        assert_eq!((r1.status, r2.status), (Status::PENDING, Status::PENDING));
        let s = match op {
            "write" => m.write(h2, Some(0), b"y", IoMode::Cached).status,
            "lock" => {
                let lock = IoRequest::Lock {
                    handle: h2,
                    offset: 0,
                    length: 1,
                    exclusive: true,
                    fail_immediately: true,
                };
                m.io(lock).status
            }
            _ => m.set_information(h2, 20, &8u64.to_le_bytes()).status,
        };
        assert_eq!(s, Status::SUCCESS, "{op}");
        for r in [&r1, &r2] {
            let broken = completed(&m, r.io);
            assert_eq!(broken, Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE)), "{op}");
        }
    }
}

#[test]
fn a_write_during_a_break_to_level_2_waits_and_the_acknowledgement_says_broken_to_none() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, _req) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let r = m.create(c, "a.txt", CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED));
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    let h2 = r.handle.unwrap();
    let ack: Rc<RefCell<Option<IoResult>>> = Rc::default();
    let a = ack.clone();
    m.schedule(10, move |m| *a.borrow_mut() = Some(fsctl(m, h1, code::OPLOCK_BREAK_ACKNOWLEDGE)));
    let before = m.now_ms();
    let w = m.write(h2, Some(0), b"z", IoMode::Cached);
    assert_eq!(w.status, Status::SUCCESS);
    assert!(m.now_ms() >= before + 10, "the write waited for the acknowledgement");
    let ack = ack.borrow_mut().take().unwrap();
    assert_eq!((ack.status, ack.information), (Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE));
}

#[test]
fn the_owners_cleanup_ends_the_oplock_and_a_cancel_ends_the_request() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, req) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let _ = m.close_handle(h1);
    assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE)));
    let (h1, req) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    assert_eq!(m.io(IoRequest::Cancel { handle: h1 }).status, Status::SUCCESS);
    assert_eq!(completed(&m, req.io).map(|c| c.0), Some(Status::CANCELLED));
    // The oplock went with it: the handle may ask again.
    let again = fsctl(&mut m, h1, code::REQUEST_OPLOCK_LEVEL_1);
    assert_eq!(again.status, Status::PENDING);
}

#[test]
fn an_unacknowledged_break_is_taken_as_acknowledged_to_none_after_the_timeout() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, req) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let before = m.now_ms();
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS);
    assert!(m.now_ms() >= before + ACK_TIMEOUT_MS, "waited for the bound");
    assert!(saw(&m, "oplock_break_timed_out"));
    assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)));
    let late = fsctl(&mut m, h1, code::OPLOCK_BREAK_ACKNOWLEDGE);
    assert_eq!(late.status, STATUS_INVALID_OPLOCK_PROTOCOL);
}

#[test]
fn break_notify_waits_for_the_break_to_end() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, _) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let other = m.open(c, "a.txt", overlapped().access(access::FILE_READ_ATTRIBUTES)).unwrap();
    // No break under way: at once.
    assert_eq!(fsctl(&mut m, other, code::OPLOCK_BREAK_NOTIFY).status, Status::SUCCESS);
    let r = m.create(c, "a.txt", CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED));
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    let n = fsctl(&mut m, other, code::OPLOCK_BREAK_NOTIFY);
    assert_eq!(n.status, Status::PENDING);
    assert_eq!(fsctl(&mut m, h1, code::OPLOCK_BREAK_ACK_NO_2).status, Status::SUCCESS);
    assert_eq!(completed(&m, n.io), Some((Status::SUCCESS, 0)));
}

#[test]
fn cd_file_systems_grant_oplocks_raw_volumes_do_not() {
    // CDFS and UDFS have their own oplock requests (CdOplockRequest, UdfOplockRequest): a read
    // handle's Level 1 oplock breaks to Level 2 at another reader's open.
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs).file("\\a.txt", b"a"));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Ntfs).blank());
    m.boot();
    let read = CreateOptions::open().access(access::GENERIC_READ).share(share::READ);
    let h = m.open(d, "a.txt", read.overlapped()).unwrap();
    let r = fsctl(&mut m, h, code::REQUEST_OPLOCK_LEVEL_1);
    assert_eq!(r.status, Status::PENDING);
    let other = m.create(d, "a.txt", read.options(FILE_COMPLETE_IF_OPLOCKED));
    assert_eq!(other.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)));
    // RAW serves no oplock (a volume open is all it opens).
    let v = m.open(e, "", CreateOptions::open().overlapped()).unwrap();
    let r = fsctl(&mut m, v, code::REQUEST_OPLOCK_LEVEL_1);
    assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST);
}

#[test]
fn an_overlapped_write_waiting_for_a_break_answers_pending_and_can_be_cancelled() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, _) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let options = overlapped().options(FILE_COMPLETE_IF_OPLOCKED);
    let r = m.create(c, "a.txt", options);
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    let h2 = r.handle.unwrap();
    // Asynchronous: the caller does not wait for the acknowledgement.
    let w = m.write(h2, Some(0), b"w", IoMode::Cached);
    assert_eq!(w.status, Status::PENDING);
    assert_eq!(completed(&m, w.io), None);
    assert_eq!(m.io(IoRequest::Cancel { handle: h2 }).status, Status::SUCCESS);
    assert_eq!(completed(&m, w.io).map(|c| c.0), Some(Status::CANCELLED));
    // The break is still the owner's to acknowledge; a second write waits again and goes on
    // after the acknowledgement.
    let w = m.write(h2, Some(0), b"w", IoMode::Cached);
    assert_eq!(w.status, Status::PENDING);
    let ack = fsctl(&mut m, h1, code::OPLOCK_BREAK_ACKNOWLEDGE);
    assert_eq!((ack.status, ack.information), (Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE));
    m.settle();
    assert_eq!(completed(&m, w.io), Some((Status::SUCCESS, 1)));
    // The timeout armed for the cancelled wait finds the break over: nothing more happens.
    assert!(!saw(&m, "oplock_break_timed_out"));
}

/// A `FILE_RENAME_INFORMATION` (x64 layout) for `target`.
fn rename_info(target: &str) -> Vec<u8> {
    let name: Vec<u8> = target.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut info = vec![0u8; 20];
    info[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
    info.extend_from_slice(&name);
    info
}

#[test]
fn during_a_break_to_level_2_a_read_waits_and_a_rename_of_a_batch_file_breaks_to_none() {
    // A read of another file object breaks to Level 2: during that break it waits for the
    // acknowledgement, which then leaves no oplock (FSCTL_OPLOCK_BREAK_ACK_NO_2).
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, _) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let r = m.create(c, "a.txt", overlapped().options(FILE_COMPLETE_IF_OPLOCKED));
    let h2 = r.handle.unwrap();
    let read = m.read(h2, Some(0), 4, IoMode::Cached);
    assert_eq!(read.status, Status::PENDING, "waits for the acknowledgement");
    assert_eq!(fsctl(&mut m, h1, code::OPLOCK_BREAK_ACK_NO_2).status, Status::SUCCESS);
    m.settle();
    assert_eq!(completed(&m, read.io), Some((Status::SUCCESS, 4)));
    drop(m);
    // A rename breaks a Batch oplock to none: during its break to Level 2 it makes that a break
    // to none, so the acknowledgement (from another caller while the rename waits) answers
    // FILE_OPLOCK_BROKEN_TO_NONE and grants nothing.
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, _) = granted(&mut m, c, code::REQUEST_BATCH_OPLOCK);
    let r = m.create(c, "a.txt", overlapped().options(FILE_COMPLETE_IF_OPLOCKED));
    let h2 = r.handle.unwrap();
    let ack: Rc<RefCell<Option<IoResult>>> = Rc::default();
    let a = ack.clone();
    m.schedule(10, move |m| *a.borrow_mut() = Some(fsctl(m, h1, code::OPLOCK_BREAK_ACKNOWLEDGE)));
    let before = m.now_ms();
    let rename = rename_info("\\b.txt");
    let s = m.io(IoRequest::SetInformation { handle: h2, class: 10, data: &rename });
    assert_eq!(s.status, Status::SUCCESS, "a synchronous API: its caller waited");
    assert!(m.now_ms() >= before + 10);
    let ack = ack.borrow_mut().take().unwrap();
    // Completed, not pended: no Level 2 oplock was granted.
    assert_eq!((ack.status, ack.information), (Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE));
}

#[test]
fn a_break_notify_waits_no_longer_than_the_bound_when_nothing_else_waits() {
    // A FILE_COMPLETE_IF_OPLOCKED open starts the break and does not wait; a notification asked
    // on a synchronous handle then waits for that break. Nobody acknowledges it: the bound takes
    // it as acknowledged to none (docs/simulator.md, "Oplocks"), and the notification completes
    // instead of leaving its synchronous caller with STATUS_PENDING.
    let (mut m, c) = machine(FsKind::Ntfs);
    let (_h1, _) = granted(&mut m, c, code::REQUEST_OPLOCK_LEVEL_1);
    let attrs = CreateOptions::open().access(access::FILE_READ_ATTRIBUTES);
    let other = m.open(c, "a.txt", attrs).unwrap();
    let r = m.create(c, "a.txt", CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED));
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    let before = m.now_ms();
    let n = fsctl(&mut m, other, code::OPLOCK_BREAK_NOTIFY);
    assert_eq!(n.status, Status::SUCCESS);
    assert!(m.now_ms() >= before + ACK_TIMEOUT_MS, "waited for the bound");
    assert!(saw(&m, "oplock_break_timed_out"));
}

#[test]
fn an_attributes_only_overwrite_or_supersede_breaks_to_none_by_its_implied_access() {
    // FastFat's FatOpenExistingFcb adds the access an overwrite (FILE_WRITE_DATA, FILE_WRITE_EA,
    // FILE_WRITE_ATTRIBUTES) or a supersede (DELETE) implies to the desired access in place
    // before its FsRtlCheckOplock after the share check ("so that the Oplock check proceeds
    // against any added access"): such an open asking only FILE_READ_ATTRIBUTES is no
    // attributes-only open and breaks the oplock to none before it truncates the file. A Batch
    // oplock's early check sees the access as asked; the later check breaks it.
    for fs in [FsKind::Fat, FsKind::Ntfs] {
        for (kind, d) in [
            (code::REQUEST_OPLOCK_LEVEL_1, disposition::OVERWRITE),
            (code::REQUEST_BATCH_OPLOCK, disposition::OVERWRITE_IF),
            (code::REQUEST_FILTER_OPLOCK, disposition::SUPERSEDE),
        ] {
            let (mut m, c) = machine(fs);
            let all = share::READ | share::WRITE | share::DELETE;
            let h1 = m.open(c, "a.txt", overlapped().share(all)).unwrap();
            let req = fsctl(&mut m, h1, kind);
            assert_eq!(req.status, Status::PENDING);
            let o = CreateOptions::open()
                .access(access::FILE_READ_ATTRIBUTES)
                .share(all)
                .disposition(d)
                .options(FILE_COMPLETE_IF_OPLOCKED);
            let r = m.create(c, "a.txt", o);
            assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS, "{fs:?} {kind:#x} {d}");
            let broken = completed(&m, req.io);
            assert_eq!(
                broken,
                Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE)),
                "{fs:?} {kind:#x}"
            );
        }
    }
}

#[test]
fn a_batch_oplock_is_broken_by_an_exclusive_create_before_its_name_collision() {
    // FastFat's FatOpenExistingFcb checks a Batch (or Filter) oplock first, before its
    // FILE_CREATE collision and access checks: an exclusive create of the file breaks the
    // Batch oplock (to Level 2) and only then fails with STATUS_OBJECT_NAME_COLLISION. A Level 1
    // oplock is checked after them: the same create leaves it alone.
    for (kind, broken) in [
        (code::REQUEST_BATCH_OPLOCK, Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2))),
        (code::REQUEST_FILTER_OPLOCK, Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE))),
        (code::REQUEST_OPLOCK_LEVEL_1, None),
    ] {
        let (mut m, c) = machine(FsKind::Fat);
        let (_h1, req) = granted(&mut m, c, kind);
        let o = CreateOptions::open()
            .disposition(disposition::CREATE)
            .options(FILE_COMPLETE_IF_OPLOCKED);
        let r = m.create(c, "a.txt", o);
        assert_eq!(r.status, Status::OBJECT_NAME_COLLISION, "{kind:#x}");
        assert_eq!(completed(&m, req.io), broken, "{kind:#x}");
    }
    // So is a write open of a read-only file (FatCheckFileAccess comes after the Batch check).
    let (mut m, c) = machine(FsKind::Fat);
    let (h1, req) = granted(&mut m, c, code::REQUEST_BATCH_OPLOCK);
    let mut basic = vec![0u8; 40];
    basic[32..36].copy_from_slice(&1u32.to_le_bytes()); // FILE_ATTRIBUTE_READONLY
    assert_eq!(m.set_information(h1, 4, &basic).status, Status::SUCCESS);
    assert_eq!(completed(&m, req.io), None, "the owner's own set breaks nothing");
    let o = CreateOptions::open().access(access::GENERIC_WRITE).options(FILE_COMPLETE_IF_OPLOCKED);
    assert_eq!(m.create(c, "a.txt", o).status, Status::ACCESS_DENIED);
    assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)));
    // CDFS refuses a creating disposition before it looks at any oplock: nothing breaks.
    drop(m);
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs).file("\\a.txt", b"a"));
    m.boot();
    let read = CreateOptions::open().access(access::GENERIC_READ).share(share::READ);
    let h = m.open(d, "a.txt", read.overlapped()).unwrap();
    let req = fsctl(&mut m, h, code::REQUEST_BATCH_OPLOCK);
    assert_eq!(req.status, Status::PENDING);
    let o = read.disposition(disposition::CREATE).options(FILE_COMPLETE_IF_OPLOCKED);
    assert_eq!(m.create(d, "a.txt", o).status, Status::OBJECT_NAME_COLLISION);
    assert_eq!(completed(&m, req.io), None);
}

#[test]
fn a_break_acknowledged_in_time_leaves_no_timeout_to_move_the_clock() {
    // The bound's timer goes with the break it was armed for: once the acknowledgement ends the
    // break, settling the machine runs nothing at 35 s, and the clock stays where it was (until
    // December 7 the leftover timer ran, did nothing, and moved the clock 35 s on).
    let (mut m, c) = machine(FsKind::Ntfs);
    let (h1, _req) = granted(&mut m, c, code::REQUEST_BATCH_OPLOCK);
    m.schedule(10, move |m| {
        let _ = fsctl(m, h1, code::OPLOCK_BREAK_ACK_NO_2);
    });
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "the open goes on after the acknowledgement");
    let after_open = m.now_ms();
    assert!((10..ACK_TIMEOUT_MS).contains(&after_open), "{after_open} ms");
    m.settle();
    assert_eq!(m.now_ms(), after_open, "no timer left to run");
    assert!(!saw(&m, "oplock_break_timed_out"));
}
