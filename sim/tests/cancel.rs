//! IRP cancellation (docs/simulator.md, "IRP cancellation"): `NtCancelIoFileEx` (`CancelIoEx`)
//! cancels a handle's outstanding requests through `IoCancelIrp`, which calls the cancel routine
//! of whoever holds each one, at `DISPATCH_LEVEL` with the cancel spin lock held. The file
//! systems' waiting requests (a directory change notification, a byte-range lock) are
//! cancelable and complete with `STATUS_CANCELLED`; a driver's cancel routine that keeps the lock,
//! and an IRP completed with its cancel routine still set, are verifier findings.

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

use common::{CancelSeen, SpyCancel};
use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, EventKind, FsKind, Handle, IoRequest, IoResult, Machine, RequestRef, Rule,
    VolumeId, VolumeSpec,
};

const FILE_NAME: u32 = 0x1;
const DISPATCH_LEVEL: u8 = 2;

fn notify(m: &mut Machine, h: Handle) -> IoResult {
    m.io(IoRequest::NotifyChangeDirectory {
        handle: h,
        filter: FILE_NAME,
        watch_tree: false,
        length: 4096,
    })
}

/// Opens `watched` and leaves a change notification waiting on it: the handle and the request.
fn waiting(m: &mut Machine, c: VolumeId) -> (Handle, IoResult) {
    let dir = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let n = notify(m, dir);
    (dir, n)
}

fn cancel(m: &mut Machine, h: Handle) -> Status {
    m.io(IoRequest::Cancel { handle: h }).status
}

/// The final status of request `io`, if it completed.
fn completed(m: &Machine, io: Option<RequestRef>) -> Option<Status> {
    m.events().iter().find_map(|e| match &e.kind {
        EventKind::IoComplete { io: i, status, .. } if Some(*i) == io => Some(*status),
        _ => None,
    })
}

fn volume(m: &mut Machine) -> VolumeId {
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("\\watched\\a.txt", b"aaaa")
            .file("\\other\\b.txt", b"b"),
    );
    m.boot();
    c
}

#[test]
fn a_waiting_notification_is_cancelled_and_later_changes_answer_nothing() {
    let mut m = common::machine(31);
    let c = volume(&mut m);
    // Overlapped: on a synchronous handle the second would wait for the first (the file
    // object's lock, sim/tests/async_io.rs).
    let dir = m.open(c, "watched", CreateOptions::directory().overlapped()).unwrap();
    let first = notify(&mut m, dir);
    let second = notify(&mut m, dir);
    assert_eq!((first.status, second.status), (Status::PENDING, Status::PENDING));
    // Both waiting requests of the handle, newest first (the thread's IRP list is walked from
    // its head, where each request was queued); the call does not wait for them, but the file
    // system's cancel routine completes each inside it.
    assert_eq!(cancel(&mut m, dir), Status::SUCCESS);
    assert_eq!(completed(&m, first.io), Some(Status::CANCELLED));
    assert_eq!(completed(&m, second.io), Some(Status::CANCELLED));
    let order: Vec<u32> = m
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::IoComplete { io, status: Status::CANCELLED, .. } => Some(io.0),
            _ => None,
        })
        .collect();
    assert_eq!(order, [second.io.unwrap().0, first.io.unwrap().0]);
    // Nothing is left to cancel.
    assert_eq!(cancel(&mut m, dir), Status::NOT_FOUND);
    // The watch stays: a change made now is kept for the next request, which takes it at once.
    let h = m.open(c, "watched\\new.txt", CreateOptions::create()).unwrap();
    m.close_handle(h);
    let third = notify(&mut m, dir);
    assert_eq!(third.status, Status::SUCCESS);
    m.close_handle(dir);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn cancelling_a_handle_with_nothing_outstanding_finds_nothing_and_other_handles_keep_theirs() {
    let mut m = common::machine(32);
    let c = volume(&mut m);
    let watched = m.open(c, "watched", CreateOptions::directory()).unwrap();
    let other = m.open(c, "other", CreateOptions::directory()).unwrap();
    let n = notify(&mut m, watched);
    assert_eq!(cancel(&mut m, other), Status::NOT_FOUND);
    assert_eq!(completed(&m, n.io), None, "another handle's request is not touched");
    // A closed handle is refused.
    m.close_handle(other);
    assert_eq!(cancel(&mut m, other), Status::INVALID_HANDLE);
    assert_eq!(cancel(&mut m, watched), Status::SUCCESS);
    assert_eq!(completed(&m, n.io), Some(Status::CANCELLED));
}

#[test]
fn a_waiting_lock_is_cancelled_and_never_granted_after() {
    let mut m = common::machine(33);
    let c = volume(&mut m);
    let a = m.open(c, "watched\\a.txt", CreateOptions::open()).unwrap();
    let b = m.open(c, "watched\\a.txt", CreateOptions::open()).unwrap();
    let lock = |handle, fail_immediately| IoRequest::Lock {
        handle,
        offset: 0,
        length: 4,
        exclusive: true,
        fail_immediately,
    };
    assert_eq!(m.io(lock(a, true)).status, Status::SUCCESS);
    let waiting = m.io(lock(b, false));
    assert_eq!(waiting.status, Status::PENDING);
    assert_eq!(cancel(&mut m, b), Status::SUCCESS);
    assert_eq!(completed(&m, waiting.io), Some(Status::CANCELLED));
    // The range unlocked: the cancelled request is not granted, and b holds nothing.
    let unlock = m.io(IoRequest::Unlock { handle: a, offset: 0, length: 4 });
    assert_eq!(unlock.status, Status::SUCCESS);
    let again = m.io(lock(a, true));
    assert_eq!(again.status, Status::SUCCESS, "the range is free: b was never granted it");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_request_cancelled_before_it_was_cancelable_is_answered_when_it_reaches_the_file_system() {
    // A filter holds the notification without a cancel routine: IoCancelIrp can only set the
    // cancel bit. When the filter sends it down, the file system sees the bit as it makes the
    // request cancelable, and completes it with STATUS_CANCELLED at once.
    let mut m = common::machine_with_spy(34);
    let c = volume(&mut m);
    common::spy(|s| s.hold_notify = true);
    let (dir, n) = waiting(&mut m, c);
    assert_eq!(n.status, Status::PENDING);
    assert_eq!(cancel(&mut m, dir), Status::SUCCESS);
    assert_eq!(completed(&m, n.io), None, "not cancelable while the filter holds it");
    // The spy sends what it holds down after the next cleanup: another handle's.
    let other = m.open(c, "other", CreateOptions::directory()).unwrap();
    m.io(IoRequest::Cleanup { handle: other });
    assert_eq!(completed(&m, n.io), Some(Status::CANCELLED));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_drivers_cancel_routine_runs_at_dispatch_level_holding_the_lock_for_the_holders_device() {
    let mut m = common::machine_with_spy(35);
    let c = volume(&mut m);
    common::spy(|s| s.cancelable = Some(SpyCancel::Release));
    let (dir, n) = waiting(&mut m, c);
    assert_eq!(n.status, Status::PENDING);
    let held = common::spy(|s| s.held.clone());
    assert_eq!(held.len(), 1);
    assert_eq!(cancel(&mut m, dir), Status::SUCCESS);
    let seen: Vec<CancelSeen> = common::spy(|s| s.cancels.clone());
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.irp, held[0].1);
    assert_eq!((s.irql, s.cancel_irql), (DISPATCH_LEVEL, 0), "called at DISPATCH_LEVEL");
    assert!(s.cancel, "the cancel bit is set before the call");
    assert!(!s.routine_left, "the I/O manager takes the routine out before the call");
    // The device of the IRP's current location: the spy's own volume device.
    // SAFETY: a live device object of the spy.
    let driver =
        unsafe { (*(s.device as *mut windows_sys::Wdk::Foundation::DEVICE_OBJECT)).DriverObject };
    assert_eq!(driver as usize, common::spy(|s| s.driver));
    assert_eq!(completed(&m, n.io), Some(Status::CANCELLED));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_cancel_routine_that_keeps_the_cancel_spin_lock_is_reported() {
    let mut m = common::machine_with_spy(36);
    let c = volume(&mut m);
    common::spy(|s| s.cancelable = Some(SpyCancel::KeepLock));
    let (dir, n) = waiting(&mut m, c);
    assert_eq!(cancel(&mut m, dir), Status::SUCCESS);
    assert_eq!(completed(&m, n.io), Some(Status::CANCELLED));
    let found: Vec<(Rule, Option<String>)> =
        m.findings().into_iter().map(|(r, d, _)| (r, d)).collect();
    assert_eq!(found, [(Rule::ReturnedHoldingCancelLock, Some("Spy".to_owned()))]);
    assert_eq!(Rule::ReturnedHoldingCancelLock.name(), "DRIVER_RETURNED_HOLDING_CANCEL_LOCK");
    // The simulator released it: the next cancellation does not deadlock.
    let other = m.open(c, "other", CreateOptions::directory()).unwrap();
    common::spy(|s| s.cancelable = Some(SpyCancel::Release));
    let o = notify(&mut m, other);
    assert_eq!(cancel(&mut m, other), Status::SUCCESS);
    assert_eq!(completed(&m, o.io), Some(Status::CANCELLED));
    assert_eq!(m.findings().len(), 1, "{:?}", m.findings());
}

#[test]
fn completing_an_irp_whose_cancel_routine_is_still_set_is_reported() {
    let mut m = common::machine_with_spy(37);
    let c = volume(&mut m);
    common::spy(|s| {
        s.cancelable = Some(SpyCancel::Release);
        s.complete_held_at_cleanup = true;
    });
    let (dir, n) = waiting(&mut m, c);
    assert_eq!(n.status, Status::PENDING);
    // The spy completes what it holds at the next cleanup, without IoSetCancelRoutine(NULL).
    let other = m.open(c, "other", CreateOptions::directory()).unwrap();
    m.io(IoRequest::Cleanup { handle: other });
    assert_eq!(completed(&m, n.io), Some(Status::SUCCESS));
    let found: Vec<(Rule, Option<String>)> =
        m.findings().into_iter().map(|(r, d, _)| (r, d)).collect();
    assert_eq!(found, [(Rule::CancelStateInCompletedIrp, Some("Spy".to_owned()))]);
    assert_eq!(Rule::CancelStateInCompletedIrp.name(), "CANCEL_STATE_IN_COMPLETED_IRP");
    // Nothing is left to cancel, and the routine is not called on the completed IRP.
    assert_eq!(cancel(&mut m, dir), Status::NOT_FOUND);
    assert!(common::spy(|s| s.cancels.is_empty()));
}

#[test]
fn an_outstanding_request_keeps_its_file_object_until_it_completes() {
    // The I/O manager's reference: a handle closed while a request on it is outstanding sends
    // no IRP_MJ_CLOSE until the request completes. Here a filter swallows the handle's cleanup,
    // so the file system never ends the notification; before, the close went down at once and
    // the file system dropped the watch with the request in it, which never completed.
    let mut m = common::machine_with_spy(38);
    let c = volume(&mut m);
    let (dir, n) = waiting(&mut m, c);
    assert_eq!(n.status, Status::PENDING);
    let fo = common::spy(|s| s.seen.last().map(|x| x.fo)).unwrap();
    let closes = |m: &Machine| {
        let _ = m;
        common::spy(|s| s.seen.iter().filter(|x| x.major == 0x02 && x.fo == fo).count())
    };
    common::spy(|s| s.swallow_cleanup = true);
    m.close_handle(dir);
    assert_eq!(completed(&m, n.io), None, "the file system never saw the cleanup");
    assert_eq!(closes(&m), 0, "no close under an outstanding request");
    // A change completes the request; its file object's close follows.
    let h = m.open(c, "watched\\new.txt", CreateOptions::create()).unwrap();
    assert_eq!(completed(&m, n.io), Some(Status::SUCCESS));
    common::spy(|s| s.swallow_cleanup = false);
    m.close_handle(h);
    assert_eq!(closes(&m), 1, "the close came once the request completed");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn an_irp_sent_down_with_its_cancel_routine_still_set_is_reported_against_the_sender() {
    // Driver Verifier's I/O verification (DRIVER_VERIFIER_IOMANAGER_VIOLATION, WDM DRIVER ERROR
    // 0x203): IoCallDriver with a cancel routine set. The driver below owns the IRP now, and
    // cancelling it would call the sender's routine for an IRP the sender no longer holds.
    let mut m = common::machine_with_spy(38);
    let c = volume(&mut m);
    common::spy(|s| s.forward_cancelable_reads = true);
    let h = m.open(c, "watched\\a.txt", CreateOptions::open()).unwrap();
    let r = m.read(h, Some(0), 4, fsfilter_sim::IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    let found: Vec<(Rule, Option<String>)> =
        m.findings().into_iter().map(|(r, d, _)| (r, d)).collect();
    assert_eq!(found, [(Rule::CancelRoutineAtCallDriver, Some("Spy".to_owned()))]);
    assert_eq!(Rule::CancelRoutineAtCallDriver.name(), "CALL_DRIVER_WITH_CANCEL_ROUTINE");
    // The simulator took the routine out as the IRP went down: the file system that completes
    // the read is not blamed for it (CANCEL_STATE_IN_COMPLETED_IRP), and nothing calls it.
    common::spy(|s| s.forward_cancelable_reads = false);
    m.close_handle(h);
    assert_eq!(m.findings().len(), 1, "{:?}", m.findings());
    assert!(common::spy(|s| s.cancels.is_empty()));
}

#[test]
fn a_cancel_routine_that_returns_at_another_irql_than_cancel_irql_is_reported() {
    let mut m = common::machine_with_spy(39);
    let c = volume(&mut m);
    common::spy(|s| s.cancelable = Some(SpyCancel::ReleaseToDispatch));
    let (dir, n) = waiting(&mut m, c);
    assert_eq!(cancel(&mut m, dir), Status::SUCCESS);
    assert_eq!(completed(&m, n.io), Some(Status::CANCELLED));
    let found: Vec<(Rule, Option<String>)> =
        m.findings().into_iter().map(|(r, d, _)| (r, d)).collect();
    assert_eq!(found, [(Rule::SpinLockMisuse, Some("Spy".to_owned()))]);
    // The simulator restored the IRQL: the caller goes on at PASSIVE_LEVEL.
    assert_eq!(fsfilter_kernel::irql::current().0, 0);
}

#[test]
fn the_cancel_spin_lock_taken_twice_or_released_unheld_is_reported() {
    use windows_sys::Wdk::System::SystemServices::{
        IoAcquireCancelSpinLock, IoReleaseCancelSpinLock,
    };
    let mut m = common::machine(40);
    volume(&mut m);
    let (mut first, mut second) = (0xFF, 0xFF);
    // SAFETY: the simulator's exports, with valid out-pointers.
    unsafe { IoAcquireCancelSpinLock(&mut first) };
    assert_eq!((first, fsfilter_kernel::irql::current().0), (0, DISPATCH_LEVEL));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // SAFETY: as above (one processor: this would spin forever on Windows).
    unsafe { IoAcquireCancelSpinLock(&mut second) };
    // SAFETY: as above.
    unsafe { IoReleaseCancelSpinLock(first) };
    assert_eq!(fsfilter_kernel::irql::current().0, 0);
    // SAFETY: as above: released twice.
    unsafe { IoReleaseCancelSpinLock(first) };
    let found: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(found, [Rule::Deadlock, Rule::SpinLockMisuse]);
}

#[test]
fn io_cancel_irp_from_a_driver_answers_whether_the_irp_was_cancelable() {
    use windows_sys::Wdk::System::SystemServices::IoCancelIrp;
    let mut m = common::machine_with_spy(41);
    let c = volume(&mut m);
    // Held without a cancel routine: FALSE, and the cancel bit is left for the holder.
    common::spy(|s| s.hold_notify = true);
    let (_dir, n) = waiting(&mut m, c);
    let held = common::spy(|s| s.held[0].1) as *mut windows_sys::Wdk::Foundation::IRP;
    // SAFETY: a live IRP the spy holds.
    assert!(!unsafe { IoCancelIrp(held) });
    // SAFETY: as above.
    assert!(unsafe { (*held).Cancel });
    assert_eq!(completed(&m, n.io), None);
    // Held cancelable: TRUE, the routine completes it.
    common::spy(|s| {
        s.hold_notify = false;
        s.cancelable = Some(SpyCancel::Release);
    });
    let other = m.open(c, "other", CreateOptions::directory()).unwrap();
    let o = notify(&mut m, other);
    let held2 = common::spy(|s| s.held.last().unwrap().1) as *mut windows_sys::Wdk::Foundation::IRP;
    // SAFETY: a live IRP the spy holds cancelable.
    assert!(unsafe { IoCancelIrp(held2) });
    assert_eq!(completed(&m, o.io), Some(Status::CANCELLED));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // Completed and freed: not an IRP any more, which Windows would not survive.
    // SAFETY: the simulator looks the address up before any access.
    assert!(!unsafe { IoCancelIrp(held2) });
    let found: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(found, [Rule::Bugcheck]);
}
