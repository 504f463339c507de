//! What the caller of a request finds once the request completed, when its call returned
//! `STATUS_PENDING` (`Machine::overlapped_result`, as `GetOverlappedResult` reads it): the final
//! status, the caller's I/O status block as `IopCompleteRequest` wrote it, and the data in the
//! caller's buffer (docs/simulator.md, "Asynchronous I/O").

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use fsfilter::Status;
use fsfilter_sim::fs::oplock::{
    OUTPUT_LEN, STATUS_OPLOCK_BREAK_IN_PROGRESS, code, input, input_flag, level,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, IoRequest, IoStatusBlock, Machine, MachineConfig,
    OverlappedResult, VolumeId, VolumeSpec,
};

const FILE_NOTIFY_CHANGE_FILE_NAME: u32 = 1;
const FILE_ACTION_ADDED: u32 = 1;

fn machine() -> (Machine, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 11 });
    let data: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("\\data.bin", &data).file("\\dir\\a.txt", b"a"),
    );
    m.boot();
    (m, c)
}

fn block(status: Status, information: usize) -> Option<IoStatusBlock> {
    Some(IoStatusBlock { status, information })
}

/// An overlapped non-cached read completes from the storage's DPC after the call returned: its
/// caller finds the data in its buffer then, and nothing before.
#[test]
fn an_overlapped_read_leaves_its_data_in_the_callers_buffer_at_completion() {
    let (mut m, c) = machine();
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let r = m.read(h, Some(512), 512, IoMode::NonCached);
    assert_eq!((r.status, r.data.len(), r.iosb), (Status::PENDING, 0, None));
    let io = r.io.unwrap();
    assert_eq!(m.overlapped_result(io), None, "outstanding");
    m.settle();
    let expected: Vec<u8> = (512..1024u32).map(|i| (i % 251) as u8).collect();
    let found = m.overlapped_result(io).unwrap();
    assert_eq!(
        found,
        OverlappedResult {
            status: Status::SUCCESS,
            information: 512,
            iosb: block(Status::SUCCESS, 512),
            data: expected,
        }
    );
    // A read its call returned itself (a synchronous handle) leaves nothing to look up.
    let s = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let r = m.read(s, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(m.overlapped_result(r.io.unwrap()), None);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A change notification's entry is in the caller's buffer when the change completes it; a
/// cancelled one's status block holds the error on an overlapped handle (IopCompleteRequest
/// writes an error of a pended asynchronous request), not on a synchronous one.
#[test]
fn a_notifications_entry_and_a_cancels_status_block_are_the_callers_at_completion() {
    let (mut m, c) = machine();
    let d = m.open(c, "dir", CreateOptions::directory().overlapped()).unwrap();
    let notify = |handle| IoRequest::NotifyChangeDirectory {
        handle,
        filter: FILE_NOTIFY_CHANGE_FILE_NAME,
        watch_tree: false,
        length: 4096,
    };
    let n = m.io(notify(d));
    assert_eq!(n.status, Status::PENDING);
    m.create(c, "dir\\new.txt", CreateOptions::create()).handle.unwrap();
    let found = m.overlapped_result(n.io.unwrap()).unwrap();
    assert_eq!(found.status, Status::SUCCESS);
    assert_eq!(found.iosb, block(Status::SUCCESS, found.information));
    // FILE_NOTIFY_INFORMATION: NextEntryOffset, Action, FileNameLength, FileName.
    let d4 = |o: usize| u32::from_le_bytes(found.data[o..o + 4].try_into().unwrap());
    assert_eq!(found.data.len(), found.information);
    assert_eq!(d4(4), FILE_ACTION_ADDED);
    let name: Vec<u16> = found.data[12..12 + d4(8) as usize]
        .chunks(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(String::from_utf16(&name).unwrap(), "new.txt");
    // Cancelled: on the overlapped handle the caller's block holds STATUS_CANCELLED.
    let n = m.io(notify(d));
    assert_eq!(n.status, Status::PENDING);
    assert_eq!(m.io(IoRequest::Cancel { handle: d }).status, Status::SUCCESS);
    let found = m.overlapped_result(n.io.unwrap()).unwrap();
    assert_eq!((found.status, found.iosb), (Status::CANCELLED, block(Status::CANCELLED, 0)));
    assert!(found.data.is_empty());
    // On a synchronous handle the caller stopped waiting; the error leaves its block alone.
    let s = m.open(c, "dir", CreateOptions::directory()).unwrap();
    let n = m.io(notify(s));
    assert_eq!(n.status, Status::PENDING);
    assert_eq!(m.io(IoRequest::Cancel { handle: s }).status, Status::SUCCESS);
    let found = m.overlapped_result(n.io.unwrap()).unwrap();
    assert_eq!((found.status, found.iosb), (Status::CANCELLED, None));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A granted Windows 7 oplock request completes at its break with a
/// REQUEST_OPLOCK_OUTPUT_BUFFER in the caller's output buffer: the original and the new level
/// and the flags (here RWH broken to RH by another open, acknowledgement required).
#[test]
fn an_oplock_requests_output_buffer_is_the_callers_at_the_break() {
    const ACK_REQUIRED: u32 = 1;
    let (mut m, c) = machine();
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let b = input(level::RWH, input_flag::REQUEST);
    let req =
        IoRequest::Fsctl { handle: h, code: code::REQUEST_OPLOCK, input: &b, output_length: 64 };
    let r = m.io(req);
    assert_eq!(r.status, Status::PENDING);
    let io = r.io.unwrap();
    let opts = CreateOptions::open().overlapped().options(0x0000_0100); // FILE_COMPLETE_IF_OPLOCKED
    assert_eq!(m.create(c, "data.bin", opts).status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    let found = m.overlapped_result(io).unwrap();
    assert_eq!((found.status, found.information), (Status::SUCCESS, OUTPUT_LEN));
    assert_eq!(found.data.len(), OUTPUT_LEN);
    let d4 = |o: usize| u32::from_le_bytes(found.data[o..o + 4].try_into().unwrap());
    assert_eq!(u16::from_le_bytes([found.data[0], found.data[1]]), 1, "StructureVersion");
    assert_eq!(u16::from_le_bytes([found.data[2], found.data[3]]) as usize, OUTPUT_LEN);
    assert_eq!((d4(4), d4(8)), (level::RWH, level::RH), "OriginalOplockLevel, NewOplockLevel");
    assert_eq!(d4(12) & ACK_REQUIRED, ACK_REQUIRED, "Flags");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A service on a synchronous handle that waited for the file object's lock (its caller got
/// `STATUS_PENDING`) leaves its caller what a caller who waited would have got, once it ran.
#[test]
fn a_read_that_waited_for_the_file_object_lock_is_the_callers_once_it_ran() {
    let (mut m, c) = machine();
    let d = m.open(c, "dir", CreateOptions::directory()).unwrap();
    let notify = IoRequest::NotifyChangeDirectory {
        handle: d,
        filter: FILE_NOTIFY_CHANGE_FILE_NAME,
        watch_tree: false,
        length: 4096,
    };
    assert_eq!(m.io(notify).status, Status::PENDING, "the notification holds the lock");
    let q = m.query_information(d, 14, 8); // FilePositionInformation: waits for the lock
    assert_eq!(q.status, Status::PENDING);
    let io = q.io.unwrap();
    assert_eq!(m.overlapped_result(io), None);
    assert_eq!(m.io(IoRequest::Cancel { handle: d }).status, Status::SUCCESS);
    m.settle();
    let found = m.overlapped_result(io).unwrap();
    assert_eq!((found.status, found.information), (Status::SUCCESS, 8));
    assert_eq!(found.iosb, block(Status::SUCCESS, 8));
    assert_eq!(found.data, 0i64.to_le_bytes());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
