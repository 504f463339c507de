//! Asynchronous (overlapped) user I/O (docs/simulator.md, "Asynchronous I/O"): a handle opened
//! without `FILE_SYNCHRONOUS_IO_NONALERT` has a file object without `FO_SYNCHRONOUS_IO`; its
//! reads and writes need an offset, are never tried as fast I/O, carry no
//! `IRP_SYNCHRONOUS_API`, move no file position, and come back `STATUS_PENDING` when the file
//! system pends them (a non-cached transfer, done from the storage's DPC), the caller not
//! waiting. `IoIsOperationSynchronous` says so to the drivers.

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

use common::{Seen, spy};
use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, EventKind, FsKind, Handle, IoMode, IoRequest, IoStatusBlock, Machine,
    RequestRef, Rule, VolumeId, VolumeSpec,
};

const IRP_MJ_READ: u8 = 0x03;
const IRP_MJ_WRITE: u8 = 0x04;
const IRP_SYNCHRONOUS_API: u32 = 0x4;
const FILE_POSITION_INFORMATION: u32 = 14;
const FILE_RENAME_INFORMATION: u32 = 10;

fn volume(m: &mut Machine) -> VolumeId {
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\data.bin", &[7; 2048]));
    m.boot();
    c
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

/// The reads or writes the spy saw go down, in order.
fn transfers(major: u8) -> Vec<Seen> {
    spy(|s| s.seen.iter().filter(|x| x.major == major && !x.fast_io).cloned().collect())
}

/// Fast-I/O reads the spy was offered.
fn fast_reads() -> usize {
    spy(|s| s.seen.iter().filter(|x| x.major == IRP_MJ_READ && x.fast_io).count())
}

fn position(m: &mut Machine, h: Handle) -> i64 {
    let r = m.query_information(h, FILE_POSITION_INFORMATION, 8);
    assert_eq!(r.status, Status::SUCCESS);
    i64::from_le_bytes(r.data[..8].try_into().unwrap())
}

#[test]
fn an_overlapped_noncached_read_returns_pending_and_completes_from_the_storage_dpc() {
    let mut m = common::machine_with_spy(61);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let r = m.read(h, Some(512), 512, IoMode::NonCached);
    // The caller does not wait: the request is still with the storage when the call returns.
    assert_eq!(r.status, Status::PENDING);
    assert_eq!(completed(&m, r.io), None);
    let seen = transfers(IRP_MJ_READ);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].irp_flags & IRP_SYNCHRONOUS_API, 0, "{:#x}", seen[0].irp_flags);
    assert!(!seen[0].synchronous, "IoIsOperationSynchronous is FALSE for it");
    m.settle();
    assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, 512)));
    // No position moved: an asynchronous file object has none the I/O manager keeps (and the
    // query goes to the file system, which answers what the file object holds).
    assert_eq!(position(&mut m, h), 0);
    m.close_handle(h);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_same_read_on_a_synchronous_handle_is_waited_for_and_synchronous() {
    let mut m = common::machine_with_spy(62);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let r = m.read(h, Some(512), 512, IoMode::NonCached);
    assert_eq!((r.status, r.information, r.data.len()), (Status::SUCCESS, 512, 512));
    let seen = transfers(IRP_MJ_READ);
    // WRK's NtReadFile and NtWriteFile never set IRP_SYNCHRONOUS_API: the file object's
    // FO_SYNCHRONOUS_IO makes the transfer synchronous (until December 7 the simulator set the
    // flag too).
    assert_eq!(seen[0].irp_flags & IRP_SYNCHRONOUS_API, 0, "{:#x}", seen[0].irp_flags);
    assert!(seen[0].synchronous);
    assert_eq!(position(&mut m, h), 1024);
    let w = m.write(h, Some(0), &[7; 512], IoMode::Cached);
    assert_eq!(w.status, Status::SUCCESS);
    let seen = transfers(IRP_MJ_WRITE);
    assert_eq!(seen[0].irp_flags & IRP_SYNCHRONOUS_API, 0, "{:#x}", seen[0].irp_flags);
    assert!(seen[0].synchronous);
}

#[test]
fn an_overlapped_read_or_write_without_an_offset_is_refused_before_any_irp() {
    let mut m = common::machine_with_spy(63);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let r = m.read(h, None, 16, IoMode::Cached);
    assert_eq!((r.status, r.io), (Status::INVALID_PARAMETER, None));
    let w = m.write(h, None, b"abc", IoMode::Cached);
    assert_eq!((w.status, w.io), (Status::INVALID_PARAMETER, None));
    assert!(transfers(IRP_MJ_READ).is_empty() && transfers(IRP_MJ_WRITE).is_empty());
    assert_eq!(fast_reads(), 0);
}

#[test]
fn overlapped_cached_reads_are_never_fast_io_and_complete_inline() {
    let mut m = common::machine_with_spy(64);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    // The first initiates caching; the second would be fast I/O on a synchronous handle.
    for offset in [0, 4] {
        let r = m.read(h, Some(offset), 4, IoMode::Cached);
        assert_eq!(
            (r.status, r.data.as_slice(), r.fast_io),
            (Status::SUCCESS, &[7u8; 4][..], false)
        );
    }
    assert_eq!(fast_reads(), 0);
    let seen = transfers(IRP_MJ_READ);
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| !s.synchronous));
    // A synchronous handle on the same (now cached) file is offered fast I/O from its second
    // cached read.
    let s = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    for _ in 0..2 {
        assert_eq!(m.read(s, Some(0), 4, IoMode::Cached).status, Status::SUCCESS);
    }
    assert_eq!(fast_reads(), 1);
}

#[test]
fn an_overlapped_noncached_write_completes_later_and_lands() {
    let mut m = common::machine_with_spy(65);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let w = m.write(h, Some(0), &[9; 512], IoMode::NonCached);
    assert_eq!(w.status, Status::PENDING);
    assert_eq!(completed(&m, w.io), None, "not completed yet");
    m.settle();
    assert_eq!(completed(&m, w.io), Some((Status::SUCCESS, 512)));
    let data = m.file_contents(c, "data.bin").unwrap();
    assert_eq!((&data[..512], data[512]), (&[9u8; 512][..], 7));
    assert_eq!(position(&mut m, h), 0);
}

#[test]
fn a_pending_read_no_driver_made_cancelable_is_not_cancelled() {
    let mut m = common::machine_with_spy(66);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING);
    // CancelIoEx finds the request and calls IoCancelIrp, which finds no cancel routine: the
    // Cancel bit is set, and the transfer completes as it would have.
    assert_eq!(m.io(IoRequest::Cancel { handle: h }).status, Status::SUCCESS);
    m.settle();
    assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, 512)));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_file_object_of_an_overlapped_open_is_not_synchronous() {
    const FILE_MODE_INFORMATION: u32 = 16;
    const FILE_SYNCHRONOUS_IO_NONALERT: u32 = 0x20;
    let mut m = common::machine(67);
    let c = volume(&mut m);
    let mode = |m: &mut Machine, h| {
        let r = m.query_information(h, FILE_MODE_INFORMATION, 4);
        u32::from_le_bytes(r.data[..4].try_into().unwrap())
    };
    let a = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let s = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    assert_eq!(mode(&mut m, a) & FILE_SYNCHRONOUS_IO_NONALERT, 0);
    assert_eq!(mode(&mut m, s) & FILE_SYNCHRONOUS_IO_NONALERT, FILE_SYNCHRONOUS_IO_NONALERT);
}

#[test]
fn a_negative_offset_other_than_write_to_end_of_file_is_refused_before_any_irp() {
    // Only on a synchronous file object does the I/O manager replace
    // FILE_USE_FILE_POINTER_POSITION with the position (sim/tests/io.rs); on an asynchronous one
    // it stays negative, and NtReadFile / NtWriteFile refuse a negative offset before building
    // an IRP, FILE_WRITE_TO_END_OF_FILE for a write excepted (the Windows Research Kernel).
    const FILE_USE_FILE_POINTER_POSITION: u64 = 0xFFFF_FFFF_FFFF_FFFE;
    const FILE_WRITE_TO_END_OF_FILE: u64 = u64::MAX;
    let mut m = common::machine_with_spy(68);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    for mode in [IoMode::Cached, IoMode::NonCached] {
        let r = m.read(h, Some(FILE_USE_FILE_POINTER_POSITION), 512, mode);
        assert_eq!((r.status, r.io), (Status::INVALID_PARAMETER, None), "{mode:?}");
        let w = m.write(h, Some(FILE_USE_FILE_POINTER_POSITION), &[1; 512], mode);
        assert_eq!((w.status, w.io), (Status::INVALID_PARAMETER, None), "{mode:?}");
    }
    let r = m.read(h, Some(FILE_WRITE_TO_END_OF_FILE), 4, IoMode::Cached);
    assert_eq!((r.status, r.io), (Status::INVALID_PARAMETER, None), "only a write may say it");
    // Any other negative offset, on a synchronous handle too.
    let s = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let r = m.read(s, Some(-4096_i64 as u64), 4, IoMode::Cached);
    assert_eq!((r.status, r.io), (Status::INVALID_PARAMETER, None));
    assert!(transfers(IRP_MJ_READ).is_empty() && transfers(IRP_MJ_WRITE).is_empty());
    // A write to the end of the file goes down, and appends.
    let w = m.write(h, Some(FILE_WRITE_TO_END_OF_FILE), b"end", IoMode::Cached);
    assert_eq!(w.status, Status::SUCCESS);
    assert_eq!(m.file_contents(c, "data.bin").unwrap().len(), 2051);
}

#[test]
fn an_overlapped_pipe_reads_without_an_offset_and_consumes_what_it_read() {
    // The I/O manager asks an asynchronous file object for an offset unless it is a pipe's or a
    // mailslot's (FO_NAMED_PIPE, FO_MAILSLOT, which NPFS and MSFS set at create: WRK and ReactOS
    // `NtReadFile` / `NtWriteFile`); and a pipe's data is its own stream, whatever the handle's
    // mode: an overlapped reader does not read the same bytes again.
    let mut m = common::machine(69);
    let p = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    let ms = m.add_volume(VolumeSpec::new(r"\Device\Mailslot", FsKind::Msfs));
    m.boot();
    let server = m.open(p, "pipe", CreateOptions::default()).unwrap();
    let client = m.open(p, "pipe", CreateOptions::open().overlapped()).unwrap();
    for part in [b"abc", b"def"] {
        assert_eq!(m.write(server, None, part, IoMode::Cached).status, Status::SUCCESS);
    }
    let r = m.read(client, None, 3, IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"abc"[..]));
    let r = m.read(client, Some(0), 3, IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"def"[..]));
    let w = m.write(client, None, b"ghi", IoMode::Cached);
    assert_eq!(w.status, Status::SUCCESS, "a pipe write needs no offset either");
    let slot = m.open(ms, "slot", CreateOptions::default().overlapped()).unwrap();
    assert_eq!(m.write(slot, None, b"mail", IoMode::Cached).status, Status::SUCCESS);
    // A file's asynchronous handle still needs one.
    let c = m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs).file("f", b"x"));
    m.mount(c);
    let f = m.open(c, "f", CreateOptions::open().overlapped()).unwrap();
    assert_eq!(m.read(f, None, 1, IoMode::Cached).status, Status::INVALID_PARAMETER);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_share_reads_and_writes_at_the_offset_given_on_any_handle() {
    // Only pipes and mailslots are streams (docs/simulator.md, "Pipes and mailslots"): a file on
    // a share is read and written where the caller says, as a local one is; an overlapped
    // handle, whose position never moves, read every time from the start.
    let mut m = common::machine(70);
    let s = m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup).file("r.txt", b"remote"));
    m.boot();
    let sync = m.open(s, "r.txt", CreateOptions::open()).unwrap();
    let r = m.read(sync, Some(3), 3, IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"ote"[..]));
    let a = m.open(s, "r.txt", CreateOptions::open().overlapped()).unwrap();
    for (offset, bytes) in [(2, &b"mo"[..]), (4, b"te")] {
        let r = m.read(a, Some(offset), 2, IoMode::Cached);
        assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, bytes));
    }
    assert_eq!(m.write(a, Some(0), b"R", IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(m.file_contents(s, "r.txt").unwrap(), b"Remote");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn closing_the_handle_of_a_pending_read_cleans_up_now_and_closes_after_it_completes() {
    // The request holds its file object (docs/simulator.md, "Asynchronous I/O"): the handle's
    // cleanup goes at once, the close only once the read completed and let the object go.
    let mut m = common::machine_with_spy(71);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    let order = |m: &Machine| -> Vec<&'static str> {
        m.events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::IoComplete { io, .. } if Some(*io) == r.io => Some("read"),
                EventKind::IoStart { major, .. } => match major {
                    fsfilter::MajorFunction::Cleanup => Some("cleanup"),
                    fsfilter::MajorFunction::Close => Some("close"),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    assert_eq!(order(&m), ["cleanup"]);
    m.settle();
    assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, 512)));
    assert_eq!(order(&m), ["cleanup", "read", "close"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn an_overlapped_create_carries_no_synchronous_option() {
    // CreateFile's FILE_FLAG_OVERLAPPED: the create's Options leave FILE_SYNCHRONOUS_IO_NONALERT
    // out (docs/simulator.md, "Asynchronous I/O"), which a synchronous open carries.
    const IRP_MJ_CREATE: u8 = 0x00;
    const FILE_SYNCHRONOUS_IO_NONALERT: u32 = 0x20;
    let mut m = common::machine_with_spy(72);
    let c = volume(&mut m);
    m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let options: Vec<u32> = transfers(IRP_MJ_CREATE)
        .iter()
        .map(|s| u32::from_le_bytes(s.parameters[8..12].try_into().unwrap()))
        .collect();
    assert_eq!(options.len(), 2);
    assert_eq!(options[0] & FILE_SYNCHRONOUS_IO_NONALERT, 0, "{:#x}", options[0]);
    assert_eq!(options[1] & FILE_SYNCHRONOUS_IO_NONALERT, FILE_SYNCHRONOUS_IO_NONALERT);
    assert_eq!(options[0] >> 24, options[1] >> 24, "the same disposition");
}

#[test]
fn an_overlapped_noncached_read_the_file_system_refuses_fails_at_once() {
    // The file system answers what needs no transfer in its dispatch routine, as FastFat's
    // FatCommonRead does (the end of the file, a misaligned offset, a conflicting lock): the
    // caller gets the status at once, not STATUS_PENDING, and no DPC is involved.
    let mut m = common::machine_with_spy(73);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let r = m.read(h, Some(4096), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::END_OF_FILE, "past the end of the 2048-byte file");
    assert_eq!(completed(&m, r.io), Some((Status::END_OF_FILE, 0)));
    let r = m.read(h, Some(100), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::INVALID_PARAMETER, "not sector-aligned");
    let w = m.write(h, Some(100), &[1; 512], IoMode::NonCached);
    assert_eq!(w.status, Status::INVALID_PARAMETER, "not sector-aligned");
    let r = m.read(h, Some(0), 0, IoMode::NonCached);
    assert_eq!((r.status, r.information), (Status::SUCCESS, 0), "nothing to read");
    // A transfer still pends.
    assert_eq!(m.read(h, Some(512), 512, IoMode::NonCached).status, Status::PENDING);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_caller_of_an_overlapped_read_gets_what_the_dispatch_routine_returned() {
    // NtReadFile on an asynchronous file object returns IoCallDriver's status (the WRK's
    // IopSynchronousServiceTail): STATUS_PENDING from a driver that pended the read, even if
    // the read completed before that driver's dispatch routine returned.
    let mut m = common::machine_with_spy(74);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    common::spy(|s| s.linger_after_pending = true);
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, 512)), "done inside the spy's wait");
    assert_eq!(r.status, Status::PENDING, "what the top dispatch routine returned");
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_transfer_issued_to_the_storage_is_not_undone_by_a_dismount_before_its_dpc() {
    // The file system does its part in the dispatch routine; the storage's DPC only completes
    // what was issued (until an audit of the eighth session the DPC ran the file system's
    // checks again, and a dismount in between failed a read already at the disk).
    let mut m = common::machine_with_spy(69);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING);
    let _ = m.dismount(c);
    m.settle();
    assert_eq!(completed(&m, r.io), Some((Status::SUCCESS, 512)));
}

/// WRK's `NtQueryInformationFile`, `NtSetInformationFile` and `NtQueryVolumeInformationFile`:
/// `IRP_DEFER_IO_COMPLETION` always,
/// `IRP_SYNCHRONOUS_API` only on a file object opened for asynchronous I/O, where the service
/// is a synchronous API and waits on an event of its own (until December 7 every one carried
/// the flag, and none `IRP_DEFER_IO_COMPLETION`).
#[test]
fn information_requests_are_synchronous_api_only_on_an_asynchronous_handle() {
    const IRP_MJ_QUERY_INFORMATION: u8 = 0x05;
    const IRP_MJ_SET_INFORMATION: u8 = 0x06;
    const IRP_MJ_QUERY_VOLUME: u8 = 0x0A;
    const IRP_DEFER_IO_COMPLETION: u32 = 0x800;
    const FILE_NAME_INFORMATION: u32 = 9;
    let mut m = common::machine_with_spy(64);
    let c = volume(&mut m);
    for overlapped in [false, true] {
        let options = CreateOptions::open();
        let options = if overlapped { options.overlapped() } else { options };
        let h = m.open(c, "data.bin", options).unwrap();
        spy(|s| s.seen.clear());
        // A class no fast-I/O routine serves: the query is an IRP whatever the handle.
        let q = m.query_information(h, FILE_NAME_INFORMATION, 520);
        assert_eq!(q.status, Status::SUCCESS);
        let eof = 2048u64.to_le_bytes();
        assert_eq!(m.set_information(h, 20, &eof).status, Status::SUCCESS);
        // FileFsVolumeInformation.
        assert_eq!(m.query_volume_information(h, 1, 128).status, Status::SUCCESS);
        let api = if overlapped { IRP_SYNCHRONOUS_API } else { 0 };
        for major in [IRP_MJ_QUERY_INFORMATION, IRP_MJ_SET_INFORMATION, IRP_MJ_QUERY_VOLUME] {
            let seen = transfers(major);
            let irp = seen.first().expect("an IRP");
            assert_eq!(irp.irp_flags & IRP_SYNCHRONOUS_API, api, "{overlapped} {major}");
            assert_ne!(irp.irp_flags & IRP_DEFER_IO_COMPLETION, 0, "{overlapped} {major}");
            assert!(irp.synchronous, "a synchronous API, or a synchronous file object");
        }
        m.close_handle(h);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The other system services build their IRPs as WRK does, on a synchronous and on an
/// asynchronous file object: `IopXxxControlFile` (`NtFsControlFile`, `NtDeviceIoControlFile`),
/// `NtLockFile`, `NtQueryDirectoryFile` and `NtNotifyChangeDirectoryFile` never set
/// `IRP_SYNCHRONOUS_API` (the file-system control and the directory query carry
/// `IRP_DEFER_IO_COMPLETION`), and are asynchronous on an asynchronous file object;
/// `NtUnlockFile` and `NtFlushBuffersFile` are synchronous APIs there, which wait on an event of
/// their own and set `IRP_SYNCHRONOUS_API`. Until December 7 every one carried
/// `IRP_SYNCHRONOUS_API` whatever the file object, so `IoIsOperationSynchronous` answered TRUE
/// for all of them on an overlapped handle.
#[test]
fn the_other_services_build_their_irps_as_wrk_does_on_either_kind_of_handle() {
    const IRP_MJ_DIRECTORY_CONTROL: u8 = 0x0C;
    const IRP_MJ_FILE_SYSTEM_CONTROL: u8 = 0x0D;
    const IRP_MJ_DEVICE_CONTROL: u8 = 0x0E;
    const IRP_MJ_FLUSH_BUFFERS: u8 = 0x09;
    const IRP_MJ_LOCK_CONTROL: u8 = 0x11;
    const IRP_MN_QUERY_DIRECTORY: u8 = 0x01;
    const IRP_MN_NOTIFY_CHANGE_DIRECTORY: u8 = 0x02;
    const IRP_MN_LOCK: u8 = 0x01;
    const IRP_MN_UNLOCK_SINGLE: u8 = 0x02;
    const IRP_DEFER_IO_COMPLETION: u32 = 0x800;
    const FSCTL_IS_VOLUME_MOUNTED: u32 = 0x0009_0028;
    // METHOD_NEITHER, FILE_ANY_ACCESS: IoIsOperationSynchronous does not make it synchronous.
    const IOCTL_NEITHER: u32 = 0x0022_0003;
    const FILE_DIRECTORY_INFORMATION: u32 = 1;
    const FILE_NOTIFY_CHANGE_FILE_NAME: u32 = 1;
    let mut m = common::machine_with_spy(65);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("\\data.bin", &[7; 2048])
            .file("\\dir\\a.txt", b"a"),
    );
    m.boot();
    spy(|s| s.refuse_fast_io = true);
    for overlapped in [false, true] {
        let with = |o: CreateOptions| if overlapped { o.overlapped() } else { o };
        let h = m.open(c, "data.bin", with(CreateOptions::open())).unwrap();
        let d = m.open(c, "dir", with(CreateOptions::directory())).unwrap();
        spy(|s| s.seen.clear());
        let fsctl = IoRequest::Fsctl {
            handle: h,
            code: FSCTL_IS_VOLUME_MOUNTED,
            input: &[],
            output_length: 0,
        };
        let _ = m.io(fsctl);
        let ioctl = IoRequest::DeviceControl {
            handle: h,
            code: IOCTL_NEITHER,
            input: &[],
            output_length: 0,
        };
        let _ = m.io(ioctl);
        let lock = IoRequest::Lock {
            handle: h,
            offset: 0,
            length: 4,
            exclusive: true,
            fail_immediately: true,
        };
        assert_eq!(m.io(lock).status, Status::SUCCESS, "{overlapped}");
        let unlock = IoRequest::Unlock { handle: h, offset: 0, length: 4 };
        assert_eq!(m.io(unlock).status, Status::SUCCESS, "{overlapped}");
        assert_eq!(m.io(IoRequest::Flush { handle: h }).status, Status::SUCCESS, "{overlapped}");
        let query = IoRequest::DirectoryControl {
            handle: d,
            class: FILE_DIRECTORY_INFORMATION,
            pattern: None,
            restart: true,
            single: false,
            length: 4096,
        };
        assert_eq!(m.io(query).status, Status::SUCCESS, "{overlapped}");
        let notify = IoRequest::NotifyChangeDirectory {
            handle: d,
            filter: FILE_NOTIFY_CHANGE_FILE_NAME,
            watch_tree: false,
            length: 4096,
        };
        let n = m.io(notify);
        assert_eq!(n.status, Status::PENDING, "{overlapped}");
        let api = if overlapped { IRP_SYNCHRONOUS_API } else { 0 };
        // (major, minor, IRP flags besides the buffering ones, IoIsOperationSynchronous on an
        // asynchronous file object).
        let expected = [
            (IRP_MJ_FILE_SYSTEM_CONTROL, 0, IRP_DEFER_IO_COMPLETION, true),
            (IRP_MJ_DEVICE_CONTROL, 0, 0, false),
            (IRP_MJ_LOCK_CONTROL, IRP_MN_LOCK, 0, false),
            (IRP_MJ_LOCK_CONTROL, IRP_MN_UNLOCK_SINGLE, api, true),
            (IRP_MJ_FLUSH_BUFFERS, 0, api, true),
            (IRP_MJ_DIRECTORY_CONTROL, IRP_MN_QUERY_DIRECTORY, IRP_DEFER_IO_COMPLETION, false),
            (IRP_MJ_DIRECTORY_CONTROL, IRP_MN_NOTIFY_CHANGE_DIRECTORY, 0, false),
        ];
        let seen = spy(|s| s.seen.clone());
        for (major, minor, flags, synchronous) in expected {
            let irp = seen
                .iter()
                .find(|x| x.major == major && (minor == 0 || x.minor == minor) && !x.fast_io)
                .unwrap_or_else(|| panic!("{overlapped} {major:#x} {minor}"));
            let mask = IRP_SYNCHRONOUS_API | IRP_DEFER_IO_COMPLETION;
            assert_eq!(irp.irp_flags & mask, flags, "{overlapped} {major:#x} {minor}");
            let synchronous = synchronous || !overlapped;
            assert_eq!(irp.synchronous, synchronous, "{overlapped} {major:#x} {minor}");
        }
        // A synchronous handle's close would wait for the notification (the file object's
        // lock): it is cancelled first.
        let end = if overlapped {
            Status::NOTIFY_CLEANUP
        } else {
            assert_eq!(m.io(IoRequest::Cancel { handle: d }).status, Status::SUCCESS);
            Status::CANCELLED
        };
        m.close_handle(d);
        m.close_handle(h);
        m.settle();
        assert_eq!(completed(&m, n.io).map(|(s, _)| s), Some(end));
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The asynchronous services on an overlapped handle hold their buffers until the request
/// completes (`send_no_wait`): a lock that waits for a range another handle holds answers
/// `STATUS_PENDING` and is granted when the range is unlocked; a change notification answers
/// `STATUS_PENDING` and completes, with the change's entry, when a file is created there.
#[test]
fn overlapped_locks_and_notifications_complete_after_the_call_returned() {
    const FILE_NOTIFY_CHANGE_FILE_NAME: u32 = 1;
    let mut m = common::machine_with_spy(66);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("\\data.bin", &[7; 2048])
            .file("\\dir\\a.txt", b"a"),
    );
    m.boot();
    let lock = |handle, fail_immediately| IoRequest::Lock {
        handle,
        offset: 0,
        length: 4,
        exclusive: true,
        fail_immediately,
    };
    let holder = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.io(lock(holder, true)).status, Status::SUCCESS);
    let h = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let waiting = m.io(lock(h, false));
    assert_eq!(waiting.status, Status::PENDING);
    m.settle();
    assert_eq!(completed(&m, waiting.io), None);
    let unlock = IoRequest::Unlock { handle: holder, offset: 0, length: 4 };
    assert_eq!(m.io(unlock).status, Status::SUCCESS);
    m.settle();
    assert_eq!(completed(&m, waiting.io), Some((Status::SUCCESS, 0)));

    let d = m.open(c, "dir", CreateOptions::directory().overlapped()).unwrap();
    let notify = IoRequest::NotifyChangeDirectory {
        handle: d,
        filter: FILE_NOTIFY_CHANGE_FILE_NAME,
        watch_tree: false,
        length: 4096,
    };
    let n = m.io(notify);
    assert_eq!(n.status, Status::PENDING);
    let f = m.open(c, "dir\\b.txt", CreateOptions::create()).unwrap();
    m.settle();
    let (status, information) = completed(&m, n.io).expect("completed");
    assert_eq!(status, Status::SUCCESS);
    assert!(information > 0, "the change's entry");
    for x in [f, d, h, holder] {
        m.close_handle(x);
    }
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_mdl_of_a_completed_request_is_freed_once_by_its_completion() {
    // The I/O manager frees an IRP's MDLs when it completes the IRP (stage two). The services
    // freed the MDL of a non-cached transfer or a direct control again once the request had
    // completed: a block freed twice, which takes whatever reused it meanwhile (here MDLs the
    // spy allocates once the request it passed down has returned).
    let mut m = common::machine_with_spy(69);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    spy(|s| s.mdls_after_call = 4);
    let r = m.read(h, Some(0), 0x4_0000, IoMode::NonCached);
    assert_eq!((r.status, r.information), (Status::SUCCESS, 2048));
    // A direct (METHOD_IN_DIRECT) file-system control with an output: an MDL for it.
    let fsctl =
        IoRequest::Fsctl { handle: h, code: 0x0009_0001, input: &[], output_length: 0x4_0000 };
    let r = m.io(fsctl);
    assert_ne!(r.status, Status::PENDING);
    spy(|s| s.mdls_after_call = 0);
    let mdls = spy(|s| s.mdls.clone());
    assert_eq!(mdls.len(), 8);
    let live = m.kernel(|k| mdls.iter().filter(|&&p| k.mdls.contains_key(&p)).count());
    assert_eq!(live, 8, "an MDL the spy allocated was freed by someone else");
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

const IRP_MJ_DIRECTORY_CONTROL: u8 = 0x0C;
const IRP_MJ_CLEANUP: u8 = 0x12;
const IRP_MJ_CLOSE: u8 = 0x02;
const FILE_NOTIFY_CHANGE_FILE_NAME: u32 = 1;

/// The majors the spy saw go down as IRPs, in order, of `majors`.
fn irps_of(majors: &[u8]) -> Vec<u8> {
    spy(|s| {
        s.seen.iter().filter(|x| !x.fast_io && majors.contains(&x.major)).map(|x| x.major).collect()
    })
}

/// The `Busy` and `Waiters` of the file object of handle `h`.
fn busy_and_waiters(m: &Machine, h: Handle) -> (u32, u32) {
    m.kernel(|k| {
        let fo = k.user_handle(h).unwrap().fo as *const windows_sys::Wdk::Foundation::FILE_OBJECT;
        // SAFETY: the live file object of an open handle.
        unsafe { ((*fo).Busy, (*fo).Waiters) }
    })
}

fn notify(handle: Handle) -> IoRequest<'static> {
    IoRequest::NotifyChangeDirectory {
        handle,
        filter: FILE_NOTIFY_CHANGE_FILE_NAME,
        watch_tree: false,
        length: 4096,
    }
}

/// WRK serializes the services on a synchronous file object (`IopAcquireFileObjectLock`, held
/// until the request completes): a request on the handle while one the caller stopped waiting
/// for is outstanding waits for it. The caller gets `STATUS_PENDING`; the request goes down when
/// the lock is released, in the order the requests came, and completes then.
#[test]
fn a_request_on_a_synchronous_handle_waits_for_the_one_outstanding_on_it() {
    let mut m = common::machine_with_spy(70);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\dir\\a.txt", b"a"));
    m.boot();
    let d = m.open(c, "dir", CreateOptions::directory()).unwrap();
    spy(|s| s.seen.clear());
    let first = m.io(notify(d));
    let second = m.io(notify(d));
    let query = IoRequest::DirectoryControl {
        handle: d,
        class: 1,
        pattern: None,
        restart: true,
        single: false,
        length: 4096,
    };
    let query = m.io(query);
    // A query the I/O manager refuses before any request (a set-only class queried) does not
    // wait: WRK's `NtQueryInformationFile` checks the class before it takes the lock (until
    // December 7 it waited, and its id completed with the refusal).
    let refused = m.query_information(d, FILE_RENAME_INFORMATION, 64);
    assert_eq!(
        (first.status, second.status, query.status, refused.status),
        (Status::PENDING, Status::PENDING, Status::PENDING, Status::INVALID_INFO_CLASS)
    );
    assert!(second.io.is_some() && query.io.is_some() && refused.io.is_none());
    // Only the first went down; the others wait for the file object, which says so.
    assert_eq!(irps_of(&[IRP_MJ_DIRECTORY_CONTROL]), [IRP_MJ_DIRECTORY_CONTROL]);
    assert_eq!(busy_and_waiters(&m, d), (1, 2));
    // A change completes the first: the second goes down and waits for a change, holding the
    // lock in turn; the query still waits.
    m.create(c, "dir\\b.txt", CreateOptions::create());
    assert_eq!(completed(&m, first.io).map(|(s, _)| s), Some(Status::SUCCESS));
    assert_eq!(irps_of(&[IRP_MJ_DIRECTORY_CONTROL]), [IRP_MJ_DIRECTORY_CONTROL; 2]);
    assert_eq!(completed(&m, second.io), None);
    m.create(c, "dir\\c.txt", CreateOptions::create());
    assert_eq!(completed(&m, second.io).map(|(s, _)| s), Some(Status::SUCCESS));
    assert_eq!(irps_of(&[IRP_MJ_DIRECTORY_CONTROL]), [IRP_MJ_DIRECTORY_CONTROL; 3]);
    assert_eq!(completed(&m, query.io).map(|(s, _)| s), Some(Status::SUCCESS));
    // Nothing is outstanding: the next request goes down at once.
    assert_eq!(busy_and_waiters(&m, d), (0, 0));
    assert_eq!(m.query_information(d, FILE_POSITION_INFORMATION, 8).status, Status::SUCCESS);
    assert_eq!(m.close_handle(d), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// WRK's services make their parameter and access checks before they take the lock of a
/// synchronous file object (`IopAcquireFileObjectLock`): `NtWriteFile` the handle's write or
/// append access, `NtQueryInformationFile` / `NtSetInformationFile` /
/// `NtQueryVolumeInformationFile` the class, the length and the class's access,
/// `NtQueryDirectoryFile` the class and length, `NtNotifyChangeDirectoryFile` its filter,
/// `NtFlushBuffersFile` write or append access, `IopXxxControlFile` the code's access. A call
/// they refuse on a handle whose lock a request holds answers its error at once, with no request
/// id, and nothing waits; a check made after the lock (a negative position set) waits with its
/// service, which completes its id with the refusal when the lock is released.
#[test]
fn a_call_refused_before_the_lock_does_not_wait_for_it() {
    const FILE_LIST_DIRECTORY: u32 = 0x1;
    const FSCTL_WRITE_ACCESS: u32 = 0x0009_8000;
    const IOCTL_WRITE_ACCESS: u32 = 0x0022_8000;
    let mut m = common::machine_with_spy(77);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\dir\\a.txt", b"a"));
    m.boot();
    let options = CreateOptions::directory().access(FILE_LIST_DIRECTORY);
    let d = m.open(c, "dir", options).unwrap();
    let holder = m.io(notify(d));
    assert_eq!(holder.status, Status::PENDING);
    assert_eq!(busy_and_waiters(&m, d), (1, 0));
    spy(|s| s.seen.clear());
    let rename = [0u8; 32];
    let refused = [
        (
            IoRequest::Write { handle: d, offset: None, data: b"x", mode: IoMode::Cached },
            Status::ACCESS_DENIED,
        ),
        (IoRequest::Flush { handle: d }, Status::ACCESS_DENIED),
        (
            IoRequest::QueryInformation { handle: d, class: FILE_RENAME_INFORMATION, length: 64 },
            Status::INVALID_INFO_CLASS,
        ),
        (
            IoRequest::QueryInformation { handle: d, class: 4, length: 4 },
            Status::INFO_LENGTH_MISMATCH,
        ),
        (IoRequest::SetInformation { handle: d, class: 10, data: &rename }, Status::ACCESS_DENIED),
        (
            IoRequest::QueryVolumeInformation { handle: d, class: 2, length: 64 },
            Status::INVALID_INFO_CLASS,
        ),
        (
            IoRequest::DirectoryControl {
                handle: d,
                class: 0x99,
                pattern: None,
                restart: true,
                single: false,
                length: 4096,
            },
            Status::INVALID_INFO_CLASS,
        ),
        (
            IoRequest::DirectoryControl {
                handle: d,
                class: 1,
                pattern: None,
                restart: true,
                single: false,
                length: 8,
            },
            Status::INFO_LENGTH_MISMATCH,
        ),
        (
            IoRequest::NotifyChangeDirectory {
                handle: d,
                filter: 0,
                watch_tree: false,
                length: 64,
            },
            Status::INVALID_PARAMETER,
        ),
        (
            IoRequest::Fsctl { handle: d, code: FSCTL_WRITE_ACCESS, input: &[], output_length: 0 },
            Status::ACCESS_DENIED,
        ),
        (
            IoRequest::DeviceControl {
                handle: d,
                code: IOCTL_WRITE_ACCESS,
                input: &[],
                output_length: 0,
            },
            Status::ACCESS_DENIED,
        ),
    ];
    for (request, status) in refused {
        let r = m.io(request.clone());
        assert_eq!((r.status, r.io), (status, None), "{request:?}");
        assert_eq!(busy_and_waiters(&m, d), (1, 0), "{request:?} waits");
    }
    // A negative position is refused after the lock (`NtSetInformationFile`): the set waits.
    let position = m.set_information(d, FILE_POSITION_INFORMATION, &(-1i64).to_le_bytes());
    assert_eq!(position.status, Status::PENDING);
    assert!(position.io.is_some());
    assert_eq!(busy_and_waiters(&m, d), (1, 1));
    assert!(spy(|s| s.seen.is_empty()), "nothing went down");
    m.create(c, "dir\\b.txt", CreateOptions::create());
    assert_eq!(completed(&m, holder.io).map(|(s, _)| s), Some(Status::SUCCESS));
    assert_eq!(completed(&m, position.io), Some((Status::INVALID_PARAMETER, 0)));
    assert_eq!(busy_and_waiters(&m, d), (0, 0));
    assert_eq!(m.close_handle(d), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtReadFile` and `NtWriteFile` check the handle's access and, on a file object opened without
/// intermediate buffering, the length's and the offset's alignment before they take the lock: on
/// handles whose lock a waiting byte-range lock holds, such calls answer at once; a negative
/// offset, refused after the lock, waits.
#[test]
fn a_transfer_refused_before_the_lock_does_not_wait_for_it() {
    const READ_DATA: u32 = 0x1;
    const WRITE_DATA: u32 = 0x2;
    const NO_INTERMEDIATE_BUFFERING: u32 = 0x8;
    const IOCTL_READ_ACCESS: u32 = 0x0022_4000;
    let mut m = common::machine_with_spy(78);
    let c = volume(&mut m);
    let owner = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let unbuffered =
        CreateOptions::open().access(READ_DATA | WRITE_DATA).options(NO_INTERMEDIATE_BUFFERING);
    let h = m.open(c, "data.bin", unbuffered).unwrap();
    let w = m.open(c, "data.bin", CreateOptions::open().access(WRITE_DATA)).unwrap();
    let lock = |handle, fail_immediately| IoRequest::Lock {
        handle,
        offset: 0,
        length: 4,
        exclusive: true,
        fail_immediately,
    };
    assert_eq!(m.io(lock(owner, true)).status, Status::SUCCESS);
    let holders = [m.io(lock(h, false)), m.io(lock(w, false))];
    assert!(holders.iter().all(|r| r.status == Status::PENDING));
    spy(|s| s.seen.clear());
    let refused = [
        (
            IoRequest::Read { handle: h, offset: Some(0), length: 100, mode: IoMode::NonCached },
            Status::INVALID_PARAMETER,
        ),
        (
            IoRequest::Write {
                handle: h,
                offset: Some(7),
                data: &[1; 512],
                mode: IoMode::NonCached,
            },
            Status::INVALID_PARAMETER,
        ),
        (
            IoRequest::Read { handle: w, offset: Some(0), length: 4, mode: IoMode::Cached },
            Status::ACCESS_DENIED,
        ),
        (
            IoRequest::DeviceControl {
                handle: w,
                code: IOCTL_READ_ACCESS,
                input: &[],
                output_length: 0,
            },
            Status::ACCESS_DENIED,
        ),
    ];
    for (request, status) in refused {
        let r = m.io(request.clone());
        assert_eq!((r.status, r.io), (status, None), "{request:?}");
    }
    assert_eq!((busy_and_waiters(&m, h), busy_and_waiters(&m, w)), ((1, 0), (1, 0)));
    let negative = (-512i64) as u64;
    let read = m.read(h, Some(negative), 512, IoMode::NonCached);
    assert_eq!(read.status, Status::PENDING);
    assert_eq!(busy_and_waiters(&m, h), (1, 1));
    assert!(spy(|s| s.seen.is_empty()), "nothing went down");
    let unlock = IoRequest::Unlock { handle: owner, offset: 0, length: 4 };
    assert_eq!(m.io(unlock).status, Status::SUCCESS);
    assert_eq!(completed(&m, holders[0].io).map(|(s, _)| s), Some(Status::SUCCESS));
    assert_eq!(completed(&m, read.io), Some((Status::INVALID_PARAMETER, 0)));
    for x in [owner, h, w] {
        m.close_handle(x);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// WRK's `NtLockFile` and `NtUnlockFile` call the top driver's `FastIoLock` /
/// `FastIoUnlockSingle` before they take the lock of a synchronous file object (lock.c): on a
/// handle whose lock a waiting lock request holds, a lock and an unlock the file system serves
/// through fast I/O answer at once; a lock it declines (one that would have to wait) waits for
/// the file object as an IRP, under the request its fast-I/O attempt started, and goes down when
/// the lock is released.
#[test]
fn a_lock_served_by_fast_io_does_not_wait_for_the_file_object_lock() {
    let mut m = common::machine(81);
    let c = volume(&mut m);
    let owner = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let lock = |handle, offset, fail_immediately| IoRequest::Lock {
        handle,
        offset,
        length: 4,
        exclusive: true,
        fail_immediately,
    };
    assert_eq!(m.io(lock(owner, 0, true)).status, Status::SUCCESS);
    let holder = m.io(lock(h, 0, false));
    assert_eq!(holder.status, Status::PENDING);
    assert_eq!(busy_and_waiters(&m, h), (1, 0));
    let fast = m.io(lock(h, 100, true));
    assert_eq!((fast.status, fast.fast_io), (Status::SUCCESS, true));
    let unlock = m.io(IoRequest::Unlock { handle: h, offset: 100, length: 4 });
    assert_eq!((unlock.status, unlock.fast_io), (Status::SUCCESS, true));
    assert_eq!(busy_and_waiters(&m, h), (1, 0));
    // A second conflicting lock: declined by fast I/O, it waits for the file object.
    let declined = m.io(lock(h, 2, false));
    assert_eq!(declined.status, Status::PENDING);
    assert_eq!(busy_and_waiters(&m, h), (1, 1));
    let unlock = IoRequest::Unlock { handle: owner, offset: 0, length: 4 };
    assert_eq!(m.io(unlock).status, Status::SUCCESS);
    assert_eq!(completed(&m, holder.io).map(|(s, _)| s), Some(Status::SUCCESS));
    // The holder now holds the range: the waiting lock went down and waits for it in turn.
    assert_eq!(completed(&m, declined.io), None);
    // Its unlock of that range is served through fast I/O at once, though the file object's
    // lock is held, and grants the waiting lock.
    let r = m.io(IoRequest::Unlock { handle: h, offset: 0, length: 4 });
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, true));
    assert_eq!(completed(&m, declined.io).map(|(s, _)| s), Some(Status::SUCCESS));
    assert_eq!(busy_and_waiters(&m, h), (0, 0));
    for x in [owner, h] {
        m.close_handle(x);
    }
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `IopCloseFile` takes the lock of a synchronous file object before it sends the cleanup: the
/// close of a handle with a request outstanding on it waits for that request (on Windows,
/// `CloseHandle` blocks). The handle is gone at once; the caller gets `STATUS_PENDING`; the
/// cleanup and close go down when the request completes.
#[test]
fn the_close_of_a_synchronous_handle_waits_for_the_request_outstanding_on_it() {
    let mut m = common::machine_with_spy(72);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\dir\\a.txt", b"a"));
    m.boot();
    let d = m.open(c, "dir", CreateOptions::directory()).unwrap();
    spy(|s| s.seen.clear());
    let waiting = m.io(notify(d));
    assert_eq!(waiting.status, Status::PENDING);
    assert_eq!(m.close_handle(d), Status::PENDING);
    m.settle();
    assert!(irps_of(&[IRP_MJ_CLEANUP, IRP_MJ_CLOSE]).is_empty());
    assert_eq!(completed(&m, waiting.io), None);
    // The handle is closed: nothing can use it any more.
    assert_eq!(m.query_information(d, FILE_POSITION_INFORMATION, 8).status, Status::INVALID_HANDLE);
    m.create(c, "dir\\b.txt", CreateOptions::create());
    assert_eq!(completed(&m, waiting.io).map(|(s, _)| s), Some(Status::SUCCESS));
    let majors = irps_of(&[IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_CLEANUP, IRP_MJ_CLOSE]);
    assert_eq!(majors, [IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_CLEANUP, IRP_MJ_CLOSE]);
    // The query on the closed handle is the one finding.
    let findings = m.findings();
    assert!(findings.iter().all(|f| f.0 == Rule::InvalidHandle), "{findings:?}");
}

/// A request queued behind the lock keeps its file object and runs as it was made, whatever
/// the caller does with the handle meanwhile: here a notification, then the handle's cleanup,
/// then its close (which, the cleanup being queued, does not wait). When the first notification
/// completes, the second goes down and waits for a change in turn; the cleanup goes down once
/// that change came, and the close last.
#[test]
fn requests_queued_behind_the_lock_survive_the_close_of_their_handle() {
    let mut m = common::machine_with_spy(76);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\dir\\a.txt", b"a"));
    m.boot();
    let d = m.open(c, "dir", CreateOptions::directory()).unwrap();
    spy(|s| s.seen.clear());
    let first = m.io(notify(d));
    let second = m.io(notify(d));
    let cleanup = m.io(IoRequest::Cleanup { handle: d });
    assert_eq!(cleanup.status, Status::PENDING);
    assert_eq!(m.io(IoRequest::Close { handle: d }).status, Status::SUCCESS);
    assert_eq!(irps_of(&[IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_CLEANUP, IRP_MJ_CLOSE]).len(), 1);
    m.create(c, "dir\\b.txt", CreateOptions::create());
    assert_eq!(completed(&m, first.io).map(|(s, _)| s), Some(Status::SUCCESS));
    // The second went down and waits for a change, holding the lock: the cleanup waits still.
    assert_eq!((completed(&m, second.io), completed(&m, cleanup.io)), (None, None));
    m.create(c, "dir\\c.txt", CreateOptions::create());
    assert_eq!(completed(&m, second.io).map(|(s, _)| s), Some(Status::SUCCESS));
    assert_eq!(completed(&m, cleanup.io).map(|(s, _)| s), Some(Status::SUCCESS));
    let majors = irps_of(&[IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_CLEANUP, IRP_MJ_CLOSE]);
    let expected =
        [IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_CLEANUP, IRP_MJ_CLOSE];
    assert_eq!(majors, expected);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtCancelIoFile` does not take the lock: a cancel ends the request holding it, which releases
/// it, and the next request on the handle goes down.
#[test]
fn a_cancel_does_not_wait_for_the_lock_and_ends_the_request_holding_it() {
    let mut m = common::machine_with_spy(73);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\dir\\a.txt", b"a"));
    m.boot();
    let d = m.open(c, "dir", CreateOptions::directory()).unwrap();
    spy(|s| s.seen.clear());
    let first = m.io(notify(d));
    let second = m.io(notify(d));
    assert_eq!(irps_of(&[IRP_MJ_DIRECTORY_CONTROL]).len(), 1);
    assert_eq!(m.io(IoRequest::Cancel { handle: d }).status, Status::SUCCESS);
    assert_eq!(completed(&m, first.io).map(|(s, _)| s), Some(Status::CANCELLED));
    // The second went down once the first released the lock, and waits in turn.
    assert_eq!(irps_of(&[IRP_MJ_DIRECTORY_CONTROL]).len(), 2);
    assert_eq!(completed(&m, second.io), None);
    assert_eq!(m.io(IoRequest::Cancel { handle: d }).status, Status::SUCCESS);
    assert_eq!(completed(&m, second.io).map(|(s, _)| s), Some(Status::CANCELLED));
    assert_eq!(m.io(IoRequest::Cancel { handle: d }).status, Status::NOT_FOUND);
    assert_eq!(m.close_handle(d), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtReadFile` takes the lock before it tries fast I/O: a cached read on a synchronous handle
/// whose lock a waiting byte-range lock holds is neither tried as fast I/O nor sent until the
/// lock request completes; then it is tried as fast I/O, and reads at the file position then.
#[test]
fn a_read_waits_for_the_lock_before_it_tries_fast_io() {
    let mut m = common::machine_with_spy(74);
    let c = volume(&mut m);
    let owner = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let h = m.open(c, "\\data.bin", CreateOptions::open()).unwrap();
    let lock = |handle, fail_immediately| IoRequest::Lock {
        handle,
        offset: 0,
        length: 4,
        exclusive: true,
        fail_immediately,
    };
    // Caching is initiated on the handle, so that its next cached read is tried as fast I/O.
    assert_eq!(m.read(h, Some(1024), 4, IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(m.io(lock(owner, true)).status, Status::SUCCESS);
    let waiting = m.io(lock(h, false));
    assert_eq!(waiting.status, Status::PENDING);
    spy(|s| s.seen.clear());
    let read = m.read(h, Some(1024), 4, IoMode::Cached);
    assert_eq!((read.status, read.data.len()), (Status::PENDING, 0));
    assert!(spy(|s| s.seen.iter().all(|x| x.major != IRP_MJ_READ)));
    let unlock = IoRequest::Unlock { handle: owner, offset: 0, length: 4 };
    assert_eq!(m.io(unlock).status, Status::SUCCESS);
    assert_eq!(completed(&m, waiting.io).map(|(s, _)| s), Some(Status::SUCCESS));
    assert_eq!(completed(&m, read.io), Some((Status::SUCCESS, 4)));
    assert_eq!(fast_reads(), 1);
    for x in [owner, h] {
        m.close_handle(x);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A request that waits for a lock never released (the request holding it never completes)
/// never goes down: the machine settles, and nothing hangs, panics or is reported; the handle's
/// close waits as well, so its file object is never cleaned up.
#[test]
fn requests_behind_a_lock_never_released_never_go_down() {
    let mut m = common::machine_with_spy(75);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\dir\\a.txt", b"a"));
    m.boot();
    let d = m.open(c, "dir", CreateOptions::directory()).unwrap();
    spy(|s| s.seen.clear());
    let first = m.io(notify(d));
    let second = m.io(notify(d));
    assert_eq!(m.close_handle(d), Status::PENDING);
    m.settle();
    for r in [&first, &second] {
        assert_eq!(completed(&m, r.io), None);
    }
    assert_eq!(irps_of(&[IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_CLEANUP]), [IRP_MJ_DIRECTORY_CONTROL]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    drop(m);
}

/// What the spy's file-system control answers: the request's final status and information, and
/// what its dispatch routine returns (None: the final status).
type Answer = ((Status, usize), Option<Status>);

/// Sends a buffered FSCTL on handle `h` that the spy completes and answers as `answer`.
fn answered_fsctl(m: &mut Machine, h: Handle, answer: Answer) -> fsfilter_sim::IoResult {
    const FSCTL_BUFFERED: u32 = 0x0009_0040;
    spy(|s| (s.complete_fsctls, s.fsctl_returns) = (Some(answer.0), answer.1));
    let r =
        m.io(IoRequest::Fsctl { handle: h, code: FSCTL_BUFFERED, input: &[], output_length: 8 });
    spy(|s| (s.complete_fsctls, s.fsctl_returns) = (None, None));
    assert_eq!(completed(m, r.io), Some(answer.0), "the request's final status");
    r
}

/// WRK's `IopSynchronousServiceTail` returns the status the top driver's dispatch routine
/// returned when it is not `STATUS_PENDING`, and `IopCompleteRequest` writes the caller's I/O
/// status block from the IRP's `IoStatus` unless its status is an error (the request was not
/// pended): a driver that completes a control with an error but returns `STATUS_SUCCESS` gives
/// its caller success and an untouched status block; one that completes it with success (and
/// its output) but returns an error gives the error, the block written with success, and the
/// output. A correct driver gives the same status both ways; each of the two answers is a
/// `DISPATCH_STATUS_DIFFERS_FROM_IRP_STATUS` finding (Driver Verifier's WDM DRIVER ERROR 0x224).
#[test]
fn a_service_returns_the_dispatch_status_and_the_status_block_holds_the_irps() {
    let mut m = common::machine_with_spy(79);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let failed = Status::INVALID_DEVICE_REQUEST;
    let r = answered_fsctl(&mut m, h, ((failed, 0), Some(Status::SUCCESS)));
    assert_eq!((r.status, r.iosb, r.data.len()), (Status::SUCCESS, None, 0));
    let r = answered_fsctl(&mut m, h, ((Status::SUCCESS, 8), Some(Status::UNSUCCESSFUL)));
    let block = IoStatusBlock { status: Status::SUCCESS, information: 8 };
    assert_eq!((r.status, r.iosb, r.data), (Status::UNSUCCESSFUL, Some(block), vec![0xAB; 8]));
    let r = answered_fsctl(&mut m, h, ((Status::BUFFER_OVERFLOW, 8), None));
    let block = IoStatusBlock { status: Status::BUFFER_OVERFLOW, information: 8 };
    assert_eq!((r.status, r.iosb), (Status::BUFFER_OVERFLOW, Some(block)));
    m.close_handle(h);
    let found: Vec<_> = m.findings().into_iter().map(|(rule, d, _)| (rule, d)).collect();
    let differs = (Rule::DispatchStatusDiffersFromIrpStatus, Some("Spy".to_owned()));
    assert_eq!(found, [differs.clone(), differs], "{:?}", m.findings());
}

/// `IopCompleteRequest` writes the caller's I/O status block for an error only when the request
/// was pended and is not synchronous (neither `IRP_SYNCHRONOUS_API` nor `FO_SYNCHRONOUS_IO`): an
/// error answered at once leaves it alone, and so does a pended error on a synchronous file
/// object (the service returns `FinalStatus`); a pended error on an asynchronous one is written
/// (the service returned `STATUS_PENDING`). Fast I/O writes the routine's block; a call refused
/// before any request writes nothing.
#[test]
fn an_error_leaves_the_status_block_alone_unless_pended_on_an_asynchronous_handle() {
    let mut m = common::machine_with_spy(80);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let failed = Status::INVALID_DEVICE_REQUEST;
    let r = answered_fsctl(&mut m, h, ((failed, 0), None));
    assert_eq!((r.status, r.iosb), (failed, None));
    let r = answered_fsctl(&mut m, h, ((failed, 0), Some(Status::PENDING)));
    assert_eq!((r.status, r.iosb), (failed, None));
    let overlapped = m.open(c, "data.bin", CreateOptions::open().overlapped()).unwrap();
    let r = answered_fsctl(&mut m, overlapped, ((failed, 0), Some(Status::PENDING)));
    let block = IoStatusBlock { status: failed, information: 0 };
    assert_eq!((r.status, r.iosb), (Status::PENDING, Some(block)));
    let r = answered_fsctl(&mut m, overlapped, ((Status::SUCCESS, 8), Some(Status::PENDING)));
    let block = IoStatusBlock { status: Status::SUCCESS, information: 8 };
    assert_eq!((r.status, r.iosb), (Status::PENDING, Some(block)));
    assert_eq!(m.read(h, Some(0), 4, IoMode::Cached).status, Status::SUCCESS);
    let r = m.read(h, Some(4), 4, IoMode::Cached);
    let block = IoStatusBlock { status: Status::SUCCESS, information: 4 };
    assert_eq!((r.fast_io, r.iosb), (true, Some(block)));
    let r = m.query_information(h, FILE_RENAME_INFORMATION, 64);
    assert_eq!((r.status, r.iosb), (Status::INVALID_INFO_CLASS, None));
    for x in [h, overlapped] {
        m.close_handle(x);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Completion copies a buffered request's system buffer to the caller's buffer unless the status
/// is an error or `STATUS_VERIFY_REQUIRED` (WRK `IopCompleteRequest`: "no copy is performed if
/// the status indicates that a verify operation is required"); a warning such as
/// `STATUS_BUFFER_OVERFLOW` is copied.
#[test]
fn no_output_is_copied_back_for_a_request_that_needs_a_verify() {
    const FSCTL_BUFFERED: u32 = 0x0009_0040;
    let verify_required = Status::from_bits(0x8000_0016);
    let mut m = common::machine_with_spy(71);
    let c = volume(&mut m);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let fsctl = IoRequest::Fsctl { handle: h, code: FSCTL_BUFFERED, input: &[], output_length: 8 };
    spy(|s| s.complete_fsctls = Some((Status::BUFFER_OVERFLOW, 8)));
    let r = m.io(fsctl.clone());
    assert_eq!((r.status, r.data.clone()), (Status::BUFFER_OVERFLOW, vec![0xAB; 8]));
    spy(|s| s.complete_fsctls = Some((verify_required, 8)));
    let r = m.io(fsctl);
    assert_eq!(r.status, verify_required);
    assert!(r.data.is_empty(), "{:?}", r.data);
    spy(|s| s.complete_fsctls = None);
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
