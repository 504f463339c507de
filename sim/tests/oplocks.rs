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
    // CDFS refuses every disposition but FILE_OPEN(_IF) with STATUS_ACCESS_DENIED before it
    // looks at any oplock (CdCommonCreate; until December 7 a collision): nothing breaks.
    drop(m);
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs).file("\\a.txt", b"a"));
    m.boot();
    let read = CreateOptions::open().access(access::GENERIC_READ).share(share::READ);
    let h = m.open(d, "a.txt", read.overlapped()).unwrap();
    let req = fsctl(&mut m, h, code::REQUEST_BATCH_OPLOCK);
    assert_eq!(req.status, Status::PENDING);
    let o = read.disposition(disposition::CREATE).options(FILE_COMPLETE_IF_OPLOCKED);
    assert_eq!(m.create(d, "a.txt", o).status, Status::ACCESS_DENIED);
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

// Windows 7 oplocks (FSCTL_REQUEST_OPLOCK): docs/simulator.md, "Oplocks", "Windows 7 oplocks".

use fsfilter_sim::fs::oplock::{OUTPUT_LEN, input, input_flag, level};

/// `FSCTL_REQUEST_OPLOCK` on `handle` asking `lvl` with `flags`, with room for the output.
fn request(m: &mut Machine, handle: Handle, lvl: u32, flags: u32) -> IoResult {
    let b = input(lvl, flags);
    m.io(IoRequest::Fsctl { handle, code: code::REQUEST_OPLOCK, input: &b, output_length: 64 })
}

fn ask(m: &mut Machine, handle: Handle, lvl: u32) -> IoResult {
    request(m, handle, lvl, input_flag::REQUEST)
}

fn ack(m: &mut Machine, handle: Handle, lvl: u32) -> IoResult {
    request(m, handle, lvl, input_flag::ACK)
}

/// The `REQUEST_OPLOCK_OUTPUT_BUFFER`s the breaks wrote, as the `oplock_output` events say them.
fn outputs(m: &Machine) -> Vec<String> {
    m.events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::System { what: "oplock_output", detail, .. } => Some(detail.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn win7_rwh_breaks_to_rh_on_another_open_which_waits_for_the_acknowledgement() {
    for fs in [FsKind::Ntfs, FsKind::Refs, FsKind::Fat, FsKind::Exfat] {
        let (mut m, c) = machine(fs);
        let h1 = m.open(c, "a.txt", overlapped()).unwrap();
        let req = ask(&mut m, h1, level::RWH);
        assert_eq!(req.status, Status::PENDING, "{fs:?}: granted");
        let acked: Rc<RefCell<Option<IoResult>>> = Rc::default();
        let a = acked.clone();
        m.schedule(10, move |m| *a.borrow_mut() = Some(ack(m, h1, level::RH)));
        let before = m.now_ms();
        let r = m.create(c, "a.txt", CreateOptions::open());
        assert_eq!(r.status, Status::SUCCESS, "{fs:?}");
        assert!(m.now_ms() >= before + 10, "{fs:?}: the open waited for the acknowledgement");
        // The request completed at the break, its output buffer saying RWH -> RH.
        assert_eq!(completed(&m, req.io), Some((Status::SUCCESS, OUTPUT_LEN)), "{fs:?}");
        assert_eq!(outputs(&m), ["RWH -> RH, acknowledgement required"], "{fs:?}");
        // The acknowledgement keeping RH is that oplock's request, pending until its break.
        let acked = acked.borrow_mut().take().unwrap();
        assert_eq!(acked.status, Status::PENDING, "{fs:?}");
        // A write of the new handle breaks the RH oplock to none: acknowledgement required,
        // nothing waits for it.
        let w = m.write(r.handle.unwrap(), Some(0), b"x", IoMode::Cached);
        assert_eq!(w.status, Status::SUCCESS);
        assert_eq!(completed(&m, acked.io), Some((Status::SUCCESS, OUTPUT_LEN)));
        assert_eq!(outputs(&m)[1], "RH -> none, acknowledgement required");
        assert_eq!(ack(&mut m, h1, 0).status, Status::SUCCESS, "{fs:?}: acknowledged to none");
        assert_eq!(ack(&mut m, h1, 0).status, STATUS_INVALID_OPLOCK_PROTOCOL, "nothing left");
    }
}

#[test]
fn win7_exclusive_levels_need_the_only_handle_an_overlapped_one_and_no_other_oplock() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let sync = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    for lvl in [level::R, level::RH, level::RW, level::RWH] {
        let r = ask(&mut m, sync, lvl);
        assert_eq!(r.status, Status::OPLOCK_NOT_GRANTED, "synchronous: {lvl}");
    }
    let _ = m.close_handle(sync);
    // Two handles: RW and RWH refused, R and RH granted to both (shareable).
    let h1 = m.open(c, "a.txt", overlapped()).unwrap();
    let h2 = m.open(c, "a.txt", overlapped()).unwrap();
    for lvl in [level::RW, level::RWH] {
        assert_eq!(ask(&mut m, h1, lvl).status, Status::OPLOCK_NOT_GRANTED, "{lvl}");
    }
    let r1 = ask(&mut m, h1, level::RH);
    let r2 = ask(&mut m, h2, level::R);
    assert_eq!((r1.status, r2.status), (Status::PENDING, Status::PENDING));
    // R and Level 2 coexist; RH and Level 2 do not ("Types of opportunistic locks").
    let l2 = fsctl(&mut m, h2, code::REQUEST_OPLOCK_LEVEL_2);
    assert_eq!(l2.status, Status::OPLOCK_NOT_GRANTED, "Level 2 beside RH");
    // A legacy exclusive request beside them is refused too.
    let l1 = fsctl(&mut m, h1, code::REQUEST_OPLOCK_LEVEL_1);
    assert_eq!(l1.status, Status::OPLOCK_NOT_GRANTED);
    drop(m);
    let (mut m, c) = machine(FsKind::Ntfs);
    let h1 = m.open(c, "a.txt", overlapped()).unwrap();
    let h2 = m.open(c, "a.txt", overlapped()).unwrap();
    assert_eq!(fsctl(&mut m, h1, code::REQUEST_OPLOCK_LEVEL_2).status, Status::PENDING);
    assert_eq!(ask(&mut m, h2, level::R).status, Status::PENDING, "R beside Level 2");
    assert_eq!(ask(&mut m, h2, level::RH).status, Status::OPLOCK_NOT_GRANTED, "RH beside it");
    // A byte-range lock refuses the shareable levels (the open count FastFat passes).
    let lock = IoRequest::Lock {
        handle: h1,
        offset: 0,
        length: 1,
        exclusive: true,
        fail_immediately: true,
    };
    assert_eq!(m.io(lock).status, Status::SUCCESS);
    let h3 = m.open(c, "a.txt", overlapped()).unwrap();
    assert_eq!(ask(&mut m, h3, level::R).status, Status::OPLOCK_NOT_GRANTED, "locked");
}

#[test]
fn win7_bad_buffers_and_levels_are_refused_and_directories_get_no_oplock() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let h = m.open(c, "a.txt", overlapped()).unwrap();
    let send = |m: &mut Machine, b: &[u8], out: usize| {
        m.io(IoRequest::Fsctl {
            handle: h,
            code: code::REQUEST_OPLOCK,
            input: b,
            output_length: out,
        })
    };
    let good = input(level::R, input_flag::REQUEST);
    assert_eq!(send(&mut m, &good[..8], 64).status, Status::BUFFER_TOO_SMALL, "short input");
    assert_eq!(send(&mut m, &good, OUTPUT_LEN - 1).status, Status::BUFFER_TOO_SMALL, "output");
    let mut version = good;
    version[0] = 2;
    let mut length = good;
    length[2] = 16;
    let bad_level = input(level::HANDLE, input_flag::REQUEST);
    let write_only = input(level::WRITE | level::HANDLE, input_flag::REQUEST);
    let both = input(level::R, input_flag::REQUEST | input_flag::ACK);
    let neither = input(level::R, 0);
    for (what, b) in [
        ("version", version),
        ("length", length),
        ("level", bad_level),
        ("level", write_only),
        ("REQUEST and ACK", both),
        ("no flag", neither),
    ] {
        assert_eq!(send(&mut m, &b, 64).status, Status::INVALID_PARAMETER, "{what}");
    }
    let d = m.open(c, "dir", CreateOptions::directory().overlapped()).unwrap();
    let r = ask(&mut m, d, level::R);
    assert_eq!(r.status, Status::INVALID_PARAMETER, "files only");
    // An acknowledgement with no break to acknowledge.
    assert_eq!(ack(&mut m, h, level::R).status, STATUS_INVALID_OPLOCK_PROTOCOL);
}

#[test]
fn win7_a_write_breaks_r_at_once_and_rh_with_an_acknowledgement_nobody_waits_for() {
    for op in ["write", "lock", "set_eof", "overwrite"] {
        let (mut m, c) = machine(FsKind::Ntfs);
        let h1 = m.open(c, "a.txt", overlapped()).unwrap();
        let h2 = m.open(c, "a.txt", overlapped()).unwrap();
        let h3 = m.open(c, "a.txt", overlapped()).unwrap();
        let r = ask(&mut m, h1, level::R);
        let rh = ask(&mut m, h2, level::RH);
        assert_eq!((r.status, rh.status), (Status::PENDING, Status::PENDING));
        let before = m.now_ms();
        let s = match op {
            "write" => m.write(h3, Some(0), b"y", IoMode::Cached).status,
            "lock" => {
                let lock = IoRequest::Lock {
                    handle: h3,
                    offset: 0,
                    length: 1,
                    exclusive: true,
                    fail_immediately: true,
                };
                m.io(lock).status
            }
            "set_eof" => m.set_information(h3, 20, &8u64.to_le_bytes()).status,
            _ => {
                m.create(c, "a.txt", CreateOptions::open().disposition(disposition::OVERWRITE))
                    .status
            }
        };
        assert_eq!(s, Status::SUCCESS, "{op}");
        assert_eq!(m.now_ms(), before, "{op}: nothing waited");
        assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, OUTPUT_LEN)), "{op}");
        assert_eq!(completed(&m, rh.io), Some((Status::SUCCESS, OUTPUT_LEN)), "{op}");
        let out = outputs(&m);
        assert_eq!(out, ["R -> none", "RH -> none, acknowledgement required"], "{op}");
        // The R holder has nothing to acknowledge; the RH holder does.
        assert_eq!(ack(&mut m, h1, 0).status, STATUS_INVALID_OPLOCK_PROTOCOL, "{op}");
        assert_eq!(ack(&mut m, h2, 0).status, Status::SUCCESS, "{op}");
    }
}

#[test]
fn win7_an_rh_holder_loses_handle_caching_to_a_create_its_share_mode_refuses() {
    let (mut m, c) = machine(FsKind::Ntfs);
    // The holder shares reads only: a writer's open is a sharing violation.
    let h1 = m.open(c, "a.txt", overlapped().share(share::READ)).unwrap();
    let rh = ask(&mut m, h1, level::RH);
    assert_eq!(rh.status, Status::PENDING);
    // A reader sharing everything opens without breaking anything.
    let reader = CreateOptions::open().access(access::GENERIC_READ);
    assert_eq!(m.create(c, "a.txt", reader).status, Status::SUCCESS);
    assert_eq!(completed(&m, rh.io), None, "RH kept");
    // A writer: the RH oplock breaks to R first (the break says the writer's modes), and the
    // writer waits; the holder closes its handle (an acknowledgement) and the writer opens.
    m.schedule(15, move |m| {
        let _ = m.close_handle(h1);
    });
    let writer = CreateOptions::open().access(access::GENERIC_WRITE);
    let before = m.now_ms();
    let w = m.create(c, "a.txt", writer);
    assert_eq!(w.status, Status::SUCCESS, "the holder's handle went first");
    assert!(m.now_ms() >= before + 15, "waited for the holder");
    assert_eq!(completed(&m, rh.io), Some((Status::SUCCESS, OUTPUT_LEN)));
    let out = outputs(&m);
    assert_eq!(out.len(), 1);
    assert!(
        // GENERIC_WRITE as the create asks it (mapped: FILE_GENERIC_WRITE), all sharing.
        out[0] == "RH -> R, acknowledgement required, modes 0x120116/0x7",
        "{out:?}"
    );
    // With FILE_COMPLETE_IF_OPLOCKED the break starts and the share check refuses at once; the
    // holder acknowledges keeping R.
    drop(m);
    let (mut m, c) = machine(FsKind::Ntfs);
    let h1 = m.open(c, "a.txt", overlapped().share(share::READ)).unwrap();
    let rh = ask(&mut m, h1, level::RH);
    let writer =
        CreateOptions::open().access(access::GENERIC_WRITE).options(FILE_COMPLETE_IF_OPLOCKED);
    assert_eq!(m.create(c, "a.txt", writer).status, Status::SHARING_VIOLATION);
    assert_eq!(completed(&m, rh.io), Some((Status::SUCCESS, OUTPUT_LEN)));
    let r = ack(&mut m, h1, level::R);
    assert_eq!(r.status, Status::PENDING, "R kept: the acknowledgement is its request");
}

#[test]
fn win7_an_unacknowledged_rh_break_ends_at_the_bound_and_a_cleanup_or_cancel_ends_a_request() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let h1 = m.open(c, "a.txt", overlapped().share(share::READ)).unwrap();
    let rh = ask(&mut m, h1, level::RH);
    assert_eq!(rh.status, Status::PENDING);
    let before = m.now_ms();
    let w = m.create(c, "a.txt", CreateOptions::open().access(access::GENERIC_WRITE));
    assert_eq!(w.status, Status::SHARING_VIOLATION, "the holder's handle is still open");
    assert!(m.now_ms() >= before + ACK_TIMEOUT_MS, "waited for the bound");
    assert!(saw(&m, "oplock_break_timed_out"));
    assert_eq!(ack(&mut m, h1, level::R).status, STATUS_INVALID_OPLOCK_PROTOCOL, "too late");
    // The owner's cleanup completes an unbroken request, broken to none; a cancel ends it.
    let h2 = m.open(c, "dir\\b.txt", overlapped()).unwrap();
    let r = ask(&mut m, h2, level::R);
    assert_eq!(r.status, Status::PENDING);
    let _ = m.close_handle(h2);
    assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, OUTPUT_LEN)));
    assert_eq!(outputs(&m).len(), 1, "a cleanup is no break");
    let r = ask(&mut m, h1, level::RH);
    assert_eq!(r.status, Status::PENDING);
    assert_eq!(m.io(IoRequest::Cancel { handle: h1 }).status, Status::SUCCESS);
    assert_eq!(completed(&m, r.io).map(|c| c.0), Some(Status::CANCELLED));
    assert_eq!(ask(&mut m, h1, level::RH).status, Status::PENDING, "asked again");
}

#[test]
fn win7_rw_breaks_to_r_its_acknowledgement_keeps_r_and_a_handle_changes_its_level_in_place() {
    let (mut m, c) = machine(FsKind::Ntfs);
    let h1 = m.open(c, "a.txt", overlapped()).unwrap();
    // R, then RWH on the same handle: the R request completes with the new level, no
    // acknowledgement (the level changes in place, FSCTL_REQUEST_OPLOCK's remarks).
    let r = ask(&mut m, h1, level::R);
    let rw = ask(&mut m, h1, level::RW);
    assert_eq!((r.status, rw.status), (Status::PENDING, Status::PENDING));
    assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, OUTPUT_LEN)));
    assert_eq!(outputs(&m), Vec::<String>::new(), "no break");
    let o = m.create(c, "a.txt", CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED));
    assert_eq!(o.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    assert_eq!(completed(&m, rw.io), Some((Status::SUCCESS, OUTPUT_LEN)));
    assert_eq!(outputs(&m), ["RW -> R, acknowledgement required"]);
    // The legacy acknowledgements do not acknowledge a Windows 7 break; a level it does not
    // break to is refused.
    let legacy = fsctl(&mut m, h1, code::OPLOCK_BREAK_ACKNOWLEDGE);
    assert_eq!(legacy.status, STATUS_INVALID_OPLOCK_PROTOCOL);
    assert_eq!(ack(&mut m, h1, level::RH).status, STATUS_INVALID_OPLOCK_PROTOCOL);
    let kept = ack(&mut m, h1, level::R);
    assert_eq!(kept.status, Status::PENDING, "R granted in the acknowledgement");
    // A byte-range lock of the other handle breaks R to none at once.
    let lock = IoRequest::Lock {
        handle: o.handle.unwrap(),
        offset: 0,
        length: 1,
        exclusive: true,
        fail_immediately: true,
    };
    assert_eq!(m.io(lock).status, Status::SUCCESS);
    assert_eq!(completed(&m, kept.io), Some((Status::SUCCESS, OUTPUT_LEN)));
    assert_eq!(outputs(&m)[1], "R -> none");
}

#[test]
fn win7_oplocks_on_cd_file_systems_but_not_raw() {
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs).file("\\a.txt", b"a"));
    let u = m.add_volume(VolumeSpec::new("U:", FsKind::Udfs).file("\\a.txt", b"a"));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Ntfs).blank());
    m.boot();
    let read = CreateOptions::open().access(access::GENERIC_READ).share(share::READ);
    for v in [d, u] {
        let h = m.open(v, "a.txt", read.overlapped()).unwrap();
        assert_eq!(ask(&mut m, h, level::RWH).status, Status::PENDING);
    }
    let v = m.open(e, "", CreateOptions::open().overlapped()).unwrap();
    assert_eq!(ask(&mut m, v, level::R).status, Status::INVALID_DEVICE_REQUEST);
}

#[test]
fn win7_an_rwh_holder_loses_handle_caching_to_rw_for_a_refused_opener_or_a_rename() {
    // Learn, "Checking the oplock state of an IRP_MJ_CREATE operation": RWH is checked with the
    // other oplocks, after the share check, and breaks to RW when the opener would get a sharing
    // violation (its modes said), to RH otherwise; the opener waits for the acknowledgement.
    // "... IRP_MJ_SET_INFORMATION operation": a rename (or link, short name, delete) breaks RWH
    // to RW and waits. Until December 7 RWH was checked before the share check as Batch is,
    // broken to RH, then its RH to R, and a rename broke it to none.
    let (mut m, c) = machine(FsKind::Ntfs);
    let h1 = m.open(c, "a.txt", overlapped().share(0)).unwrap();
    let req = ask(&mut m, h1, level::RWH);
    assert_eq!(req.status, Status::PENDING);
    let acked: Rc<RefCell<Option<IoResult>>> = Rc::default();
    let a = acked.clone();
    m.schedule(5, move |m| *a.borrow_mut() = Some(ack(m, h1, level::RW)));
    let before = m.now_ms();
    let r = m.create(c, "a.txt", CreateOptions::open().access(access::GENERIC_READ));
    assert_eq!(r.status, Status::SHARING_VIOLATION, "the owner kept its handle");
    assert!(m.now_ms() >= before + 5, "waited for the acknowledgement");
    assert_eq!(outputs(&m), ["RWH -> RW, acknowledgement required, modes 0x120089/0x7"]);
    let acked = acked.borrow_mut().take().unwrap();
    assert_eq!(acked.status, Status::PENDING, "RW kept: the acknowledgement is its request");
    // The owner closes while the opener waits: the opener opens.
    let h0 = m.open(c, "dir\\b.txt", overlapped().share(0)).unwrap();
    assert_eq!(ask(&mut m, h0, level::RWH).status, Status::PENDING);
    m.schedule(5, move |m| {
        let _ = m.close_handle(h0);
    });
    let r = m.create(c, "dir\\b.txt", CreateOptions::open().access(access::GENERIC_READ));
    assert_eq!(r.status, Status::SUCCESS, "opened once the owner's handle went");
    // A rename of another handle (whose open broke RWH to RH: an unbroken RWH has no other
    // handle) waits for that acknowledgement, then breaks the RH kept to R and waits again.
    drop(m);
    let (mut m, c) = machine(FsKind::Ntfs);
    let h1 = m.open(c, "a.txt", overlapped()).unwrap();
    assert_eq!(ask(&mut m, h1, level::RWH).status, Status::PENDING);
    let r = m.create(c, "a.txt", overlapped().options(FILE_COMPLETE_IF_OPLOCKED));
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    let h2 = r.handle.unwrap();
    let acks: Rc<RefCell<Vec<IoResult>>> = Rc::default();
    let (a, b) = (acks.clone(), acks.clone());
    m.schedule(10, move |m| a.borrow_mut().push(ack(m, h1, level::RH)));
    m.schedule(20, move |m| b.borrow_mut().push(ack(m, h1, level::R)));
    let before = m.now_ms();
    let rename = rename_info("\\b.txt");
    let s = m.io(IoRequest::SetInformation { handle: h2, class: 10, data: &rename });
    assert_eq!(s.status, Status::SUCCESS);
    assert!(m.now_ms() >= before + 20, "the rename waited for both acknowledgements");
    let statuses: Vec<Status> = acks.borrow().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Status::PENDING, Status::PENDING], "RH kept, then R kept");
    assert_eq!(
        outputs(&m),
        ["RWH -> RH, acknowledgement required", "RH -> R, acknowledgement required"]
    );
}

#[test]
fn win7_a_lock_breaks_rwh_to_none_without_waiting_for_the_acknowledgement_but_waits_for_rw() {
    // Learn, "Checking the oplock state of an IRP_MJ_LOCK_CONTROL operation": a byte-range lock
    // of another handle breaks Read-Handle and Read-Write-Handle oplocks to none with an
    // acknowledgement required, and goes on without waiting for it; Level 1, Batch and
    // Read-Write wait. Here the opener's FILE_COMPLETE_IF_OPLOCKED leaves the break to RH (or R)
    // under way, which the lock turns into a break to none.
    for (lvl, waits) in [(level::RWH, false), (level::RW, true)] {
        let (mut m, c) = machine(FsKind::Ntfs);
        let h1 = m.open(c, "a.txt", overlapped()).unwrap();
        assert_eq!(ask(&mut m, h1, lvl).status, Status::PENDING);
        let o = m.create(c, "a.txt", CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED));
        assert_eq!(o.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
        let acked: Rc<RefCell<Option<IoResult>>> = Rc::default();
        let a = acked.clone();
        m.schedule(10, move |m| *a.borrow_mut() = Some(ack(m, h1, lvl & !level::WRITE)));
        let before = m.now_ms();
        let lock = IoRequest::Lock {
            handle: o.handle.unwrap(),
            offset: 0,
            length: 1,
            exclusive: true,
            fail_immediately: true,
        };
        assert_eq!(m.io(lock).status, Status::SUCCESS, "{lvl}");
        if waits {
            assert!(m.now_ms() >= before + 10, "RW: the lock waited for the acknowledgement");
        } else {
            assert_eq!(m.now_ms(), before, "RWH: the lock did not wait");
            m.settle();
        }
        // Either way the acknowledgement, asking the level the first break offered, keeps
        // nothing: the oplock was broken to none meanwhile.
        let acked = acked.borrow_mut().take().unwrap();
        assert_eq!(acked.status, Status::SUCCESS, "{lvl}: broken to none");
        assert!(!saw(&m, "oplock_break_timed_out"), "{lvl}");
    }
}

#[test]
fn win7_a_create_waiting_for_two_rh_breaks_ends_at_one_bound() {
    // An opener the share access refuses waits for every RH oplock of other handles to lose its
    // handle caching: one broken already (by a lock, its acknowledgement unasked for) and one it
    // breaks itself. Nobody acknowledges either: the bound ends both (until December 7 only the
    // second break's timer was armed, the first break stayed, and the opener waited forever).
    let (mut m, c) = machine(FsKind::Ntfs);
    let h1 = m.open(c, "a.txt", overlapped().share(share::READ)).unwrap();
    let rh1 = ask(&mut m, h1, level::RH);
    assert_eq!(rh1.status, Status::PENDING);
    let all = share::READ | share::WRITE | share::DELETE;
    let reader = CreateOptions::open().access(access::GENERIC_READ).share(all);
    let h3 = m.open(c, "a.txt", reader).unwrap();
    let lock = IoRequest::Lock {
        handle: h3,
        offset: 0,
        length: 1,
        exclusive: true,
        fail_immediately: true,
    };
    assert_eq!(m.io(lock).status, Status::SUCCESS);
    assert_eq!(outputs(&m), ["RH -> none, acknowledgement required"]);
    // Unlocked: a shareable level needs a file without byte-range locks.
    let unlock = IoRequest::Unlock { handle: h3, offset: 0, length: 1 };
    assert_eq!(m.io(unlock).status, Status::SUCCESS);
    let h2 = m.open(c, "a.txt", reader.overlapped()).unwrap();
    let rh2 = ask(&mut m, h2, level::RH);
    assert_eq!(rh2.status, Status::PENDING);
    let before = m.now_ms();
    let w = m.create(c, "a.txt", CreateOptions::open().access(access::GENERIC_WRITE).share(all));
    assert_eq!(w.status, Status::SHARING_VIOLATION, "h1's handle still refuses the writer");
    assert_eq!(m.now_ms(), before + ACK_TIMEOUT_MS, "one bound for both breaks");
    assert_eq!(outputs(&m)[1], "RH -> R, acknowledgement required, modes 0x120116/0x7");
    assert!(saw(&m, "oplock_break_timed_out"));
}

#[test]
fn win7_a_rename_or_delete_of_another_handle_breaks_rh_to_r_and_waits_for_the_acknowledgement() {
    // Learn, "Checking the oplock state of an IRP_MJ_SET_INFORMATION operation": a rename, link
    // or short-name set, and a FileDispositionInformation with DeleteFile TRUE, of another
    // handle break a Read-Handle oplock to Read, and the operation waits for the
    // acknowledgement; Read is not broken by them.
    for op in ["rename", "delete"] {
        let (mut m, c) = machine(FsKind::Ntfs);
        let all = share::READ | share::WRITE | share::DELETE;
        let h1 = m.open(c, "a.txt", overlapped().share(all)).unwrap();
        let rh = ask(&mut m, h1, level::RH);
        assert_eq!(rh.status, Status::PENDING);
        let h2 = m.open(c, "a.txt", CreateOptions::open().access(access::DELETE).share(all));
        let h2 = h2.unwrap();
        assert_eq!(completed(&m, rh.io), None, "{op}: the open breaks nothing");
        let acked: Rc<RefCell<Option<IoResult>>> = Rc::default();
        let a = acked.clone();
        m.schedule(10, move |m| *a.borrow_mut() = Some(ack(m, h1, level::R)));
        let before = m.now_ms();
        let s = match op {
            "rename" => {
                let rename = rename_info("\\b.txt");
                m.io(IoRequest::SetInformation { handle: h2, class: 10, data: &rename })
            }
            _ => m.io(IoRequest::SetInformation { handle: h2, class: 13, data: &[1] }),
        };
        assert_eq!(s.status, Status::SUCCESS, "{op}");
        assert!(m.now_ms() >= before + 10, "{op}: waited for the acknowledgement");
        assert_eq!(completed(&m, rh.io), Some((Status::SUCCESS, OUTPUT_LEN)), "{op}");
        assert_eq!(outputs(&m), ["RH -> R, acknowledgement required"], "{op}");
        let acked = acked.borrow_mut().take().unwrap();
        assert_eq!(acked.status, Status::PENDING, "{op}: R kept, its request pending");
    }
}

#[test]
fn win7_an_rh_break_acknowledged_after_its_waiter_was_cancelled_leaves_no_timeout() {
    // A rename waits for an RH break; cancelled (CancelIoEx from another thread), it stops
    // waiting; the holder then acknowledges. The bound's timer goes with the break, as an
    // exclusive break's does: settling runs nothing at 35 s (until December 7 the shared breaks'
    // timer stayed when no operation waited any more, and moved the clock 35 s on).
    let (mut m, c) = machine(FsKind::Ntfs);
    let all = share::READ | share::WRITE | share::DELETE;
    let h1 = m.open(c, "a.txt", overlapped().share(all)).unwrap();
    assert_eq!(ask(&mut m, h1, level::RH).status, Status::PENDING);
    let h2 = m.open(c, "a.txt", overlapped().access(access::DELETE).share(all)).unwrap();
    m.schedule(5, move |m| {
        assert_eq!(m.io(IoRequest::Cancel { handle: h2 }).status, Status::SUCCESS);
    });
    let acked: Rc<RefCell<Option<IoResult>>> = Rc::default();
    let a = acked.clone();
    m.schedule(10, move |m| *a.borrow_mut() = Some(ack(m, h1, level::R)));
    let rename = rename_info("\\b.txt");
    let r = m.io(IoRequest::SetInformation { handle: h2, class: 10, data: &rename });
    assert_eq!(r.status, Status::CANCELLED, "cancelled while it waited");
    m.settle();
    let acked = acked.borrow_mut().take().unwrap();
    assert_eq!(acked.status, Status::PENDING, "R kept");
    assert!(m.now_ms() < ACK_TIMEOUT_MS, "no timer left to run: {} ms", m.now_ms());
    assert!(!saw(&m, "oplock_break_timed_out"));
}
