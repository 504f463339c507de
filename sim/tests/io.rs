//! User-mode I/O through the file systems (facts.md §1.6, §1.7): a full round trip on NTFS with
//! contents checked; fast I/O and its IRP fallback; cached, non-cached and paging IRP flags and
//! buffers; errors (missing file, directory as file, sharing, locks); information classes and
//! directory enumeration; the namespace file systems.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod common;

use common::{PassQueryOpen, machine, machine_with_spy, spy};
use fsfilter::Status;
use fsfilter_sim::nt::{create_options as co, disposition, file_info as fi, fs_info, fsctl, ioctl};
use fsfilter_sim::{
    CreateOptions, EventKind, FsKind, Handle, IoMode, IoRequest, Machine, Rule, VolumeId,
    VolumeSpec,
};

fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The names of a FileNamesInformation listing.
fn names(buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let next = u32_at(buf, at) as usize;
        let len = u32_at(buf, at + 8) as usize;
        out.push(utf16(&buf[at + 12..at + 12 + len]));
        if next == 0 {
            return out;
        }
        at += next;
    }
}

fn ntfs() -> (Machine, VolumeId) {
    let mut m = machine(11);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("\\docs\\readme.txt", b"read me")
            .file("\\docs\\b.bin", &[1, 2, 3])
            .file("\\empty.txt", b"")
            .file("\\sub\\", b""),
    );
    m.boot();
    (m, c)
}

#[test]
fn a_round_trip_on_ntfs() {
    // facts.md §1.6: create, write, read, query, directory, cleanup, close reach the volume.
    let (mut m, c) = ntfs();
    let r = m.create(c, "\\docs\\new.txt", CreateOptions::create());
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(r.information, 2, "FILE_CREATED");
    let h = r.handle.unwrap();
    let w = m.write(h, None, b"hello world", IoMode::Cached);
    assert_eq!((w.status, w.information), (Status::SUCCESS, 11));
    let w = m.write(h, Some(6), b"WORLD!", IoMode::Cached);
    assert_eq!(w.status, Status::SUCCESS);
    let r = m.read(h, Some(0), 100, IoMode::Cached);
    assert_eq!(r.data, b"hello WORLD!");
    // End of file.
    assert_eq!(m.read(h, Some(12), 10, IoMode::Cached).status, Status::END_OF_FILE);
    // Standard information: size, not a directory.
    let q = m.query_information(h, fi::STANDARD, 24);
    assert_eq!(q.status, Status::SUCCESS);
    assert_eq!(i64_at(&q.data, 8), 12);
    assert_eq!(q.data[21], 0);
    // The name, volume-relative.
    let q = m.query_information(h, fi::NAME, 256);
    assert_eq!(utf16(&q.data[4..4 + u32_at(&q.data, 0) as usize]), "\\docs\\new.txt");
    // Position follows the last transfer.
    let q = m.query_information(h, fi::POSITION, 8);
    assert_eq!(i64_at(&q.data, 0), 12);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(m.file_contents(c, "\\docs\\new.txt").unwrap(), b"hello WORLD!");
    // A directory listing with a pattern.
    let d = m.open(c, "docs", CreateOptions::open().options(co::DIRECTORY_FILE)).unwrap();
    let l = m.query_directory(d, fi::NAMES, Some("*.txt"), true, 4096);
    assert_eq!(l.status, Status::SUCCESS);
    assert_eq!(names(&l.data), ["new.txt", "readme.txt"]);
    assert_eq!(m.query_directory(d, fi::NAMES, None, false, 4096).status, Status::NO_MORE_FILES);
    let all = m.query_directory(d, fi::BOTH_DIRECTORY, None, true, 4096);
    assert_eq!(all.status, Status::SUCCESS);
    // Not the handle's first query: nothing found is STATUS_NO_MORE_FILES, even on a restart
    // with a new pattern (MS-FSA 2.1.5.6.3; fs_semantics.rs).
    let none = m.query_directory(d, fi::NAMES, Some("*.doc"), true, 4096);
    assert_eq!(none.status, Status::NO_MORE_FILES);
    // FileDirectoryInformation: ".", "..", then the files in name order, with their sizes.
    let l = m.query_directory(d, fi::DIRECTORY, None, true, 4096);
    let mut at = 0;
    let mut entries = Vec::new();
    loop {
        let len = u32_at(&l.data, at + 60) as usize;
        entries.push((utf16(&l.data[at + 64..at + 64 + len]), i64_at(&l.data, at + 40)));
        let next = u32_at(&l.data, at) as usize;
        if next == 0 {
            break;
        }
        assert_eq!(next % 8, 0, "entries are 8-byte aligned");
        at += next;
    }
    assert_eq!(
        entries,
        [
            (".".into(), 0),
            ("..".into(), 0),
            ("b.bin".into(), 3),
            ("new.txt".into(), 12),
            ("readme.txt".into(), 7)
        ]
    );
    // Single entries, one query at a time.
    let one = m.io(IoRequest::DirectoryControl {
        handle: d,
        class: fi::NAMES,
        pattern: Some("r*"),
        restart: true,
        single: true,
        length: 4096,
    });
    assert_eq!(names(&one.data), ["readme.txt"]);
    m.close_handle(d);
    // Basic information: attributes and times; setting READONLY refuses later write opens.
    let h = m.open(c, "docs\\b.bin", CreateOptions::open()).unwrap();
    let b = m.query_information(h, fi::BASIC, 40);
    assert_eq!(u32_at(&b.data, 32), 0x20, "FILE_ATTRIBUTE_ARCHIVE");
    assert!(i64_at(&b.data, 0) > 0, "creation time");
    let mut basic = b.data.clone();
    basic[32..36].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(m.set_information(h, fi::BASIC, &basic).status, Status::SUCCESS);
    m.close_handle(h);
    assert_eq!(m.create(c, "docs\\b.bin", CreateOptions::open()).status, Status::ACCESS_DENIED);
    assert!(m.open(c, "docs\\b.bin", CreateOptions::open().access(0x8000_0000)).is_ok());
    // Every request is an io event pair, in order.
    let events = m.events();
    let starts = events.iter().filter(|e| matches!(e.kind, EventKind::IoStart { .. })).count();
    let ends = events.iter().filter(|e| matches!(e.kind, EventKind::IoComplete { .. })).count();
    assert_eq!(starts, ends);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn cleanup_and_close_are_separate_and_close_waits_for_the_last_reference() {
    let (mut m, c) = ntfs();
    let h = m.open(c, "docs\\readme.txt", CreateOptions::open()).unwrap();
    let r = m.io(IoRequest::Cleanup { handle: h });
    assert_eq!(r.status, Status::SUCCESS);
    // After cleanup the handle no longer works.
    assert_eq!(m.read(h, Some(0), 1, IoMode::Cached).status, Status::INVALID_HANDLE);
    let r = m.io(IoRequest::Close { handle: h });
    assert_eq!(r.status, Status::SUCCESS);
    let majors: Vec<_> = m
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::IoStart { major, .. } => Some(major.code()),
            _ => None,
        })
        .collect();
    assert_eq!(majors, [0x00, 0x12, 0x02], "create, cleanup, close");
    let findings = m.findings();
    assert_eq!(findings.len(), 1, "the read on a closed handle is reported: {findings:?}");
}

#[test]
fn fast_io_serves_cached_reads_once_caching_started_and_irps_otherwise() {
    // facts.md §1.7: the I/O manager tries fast I/O first for synchronous cached I/O; FALSE
    // means an IRP. It tries only once caching is initiated on the file object (its
    // `PrivateCacheMap`, docs/simulator.md): the first cached read is an IRP, never offered to
    // fast I/O, and it initiates caching.
    let mut m = machine_with_spy(12);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    let h = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    spy(|s| s.seen.clear());
    let r1 = m.read(h, Some(0), 4, IoMode::Cached);
    assert!(!r1.fast_io);
    assert_eq!(r1.data, b"0123");
    let seen = spy(|s| std::mem::take(&mut s.seen));
    assert!(seen.iter().all(|s| !s.fast_io), "no fast I/O before caching: {seen:?}");
    assert!(seen.iter().any(|s| s.major == 3), "an IRP: {seen:?}");
    assert!(
        !m.events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::System { what: "fast_io_declined", .. })),
        "nothing was declined: fast I/O was not tried"
    );
    // Another file object of the same file has no cache map of its own yet: an IRP again.
    let h2 = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    spy(|s| s.seen.clear());
    assert!(!m.read(h2, Some(0), 4, IoMode::Cached).fast_io);
    assert!(spy(|s| std::mem::take(&mut s.seen)).iter().all(|s| !s.fast_io));
    assert!(m.read(h2, Some(4), 4, IoMode::Cached).fast_io);
    assert_eq!(m.close_handle(h2), Status::SUCCESS);
    spy(|s| s.seen.clear());
    let r2 = m.read(h, Some(4), 4, IoMode::Cached);
    assert!(r2.fast_io);
    assert_eq!(r2.data, b"4567");
    let seen = spy(|s| std::mem::take(&mut s.seen));
    assert!(seen.iter().all(|s| s.fast_io), "no IRP: {seen:?}");
    // A filter that refuses fast I/O makes the I/O manager build an IRP.
    spy(|s| s.refuse_fast_io = true);
    let r3 = m.read(h, Some(8), 4, IoMode::Cached);
    assert!(!r3.fast_io);
    assert_eq!(r3.data, b"89");
    let seen = spy(|s| std::mem::take(&mut s.seen));
    assert!(seen.iter().any(|s| s.major == 3 && !s.fast_io));
    assert!(
        m.events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::System { what: "fast_io_declined", .. }))
    );
    // Fast writes inside the file; writes that extend it take the IRP path.
    spy(|s| s.refuse_fast_io = false);
    let w = m.write(h, Some(0), b"ab", IoMode::Cached);
    assert!(w.fast_io);
    let w = m.write(h, Some(10), b"XY", IoMode::Cached);
    assert!(!w.fast_io);
    assert_eq!(m.file_contents(c, "f.txt").unwrap(), b"ab23456789XY");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The stack locations the simulator builds have the documented x64 layout of
/// `IO_STACK_LOCATION.Parameters` (wdm.h, `POINTER_ALIGNMENT` = 8), which the backends read on
/// every target: windows-sys 0.61 puts a read's `ByteOffset` and an FSCTL's `FsControlCode` at
/// 8, a create's `FileAttributes` at 12, an information query's class at 4 (docs/simulator.md,
/// "Shape", kernel structures). A raw driver reads the bytes.
#[test]
fn stack_locations_carry_the_documented_x64_parameter_layout() {
    let u16_at = |b: &[u8; 32], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8; 32], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let i64_at = |b: &[u8; 32], o: usize| i64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mut m = machine_with_spy(14);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.bin", &[7u8; 4096]));
    m.boot();
    spy(|s| s.refuse_fast_io = true);
    let last = |major: u8| {
        spy(|s| s.seen.iter().rfind(|x| x.major == major && !x.fast_io).cloned()).unwrap()
    };
    let options = CreateOptions { attributes: 0x80, ..CreateOptions::open().share(7) };
    let h = m.open(c, "f.bin", options).unwrap();
    let create = last(0x00).parameters;
    // SecurityContext at 0, Options at 8 (disposition in the high byte), FileAttributes at 16,
    // ShareAccess at 18, EaLength at 24.
    assert_ne!(i64_at(&create, 0), 0);
    assert_eq!(u32_at(&create, 8) >> 24, disposition::OPEN);
    assert_eq!((u16_at(&create, 16), u16_at(&create, 18)), (0x80, 7));
    assert_eq!(u32_at(&create, 24), 0);
    let r = m.read(h, Some(0x600), 0x200, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    let read = last(0x03).parameters;
    // Length at 0, Key at 8, Flags at 12, ByteOffset at 16.
    assert_eq!((u32_at(&read, 0), u32_at(&read, 8), u32_at(&read, 12)), (0x200, 0, 0));
    assert_eq!(i64_at(&read, 16), 0x600);
    let w = m.write(h, Some(0x400), &[1u8; 0x200], IoMode::NonCached);
    assert_eq!(w.status, Status::SUCCESS);
    let write = last(0x04).parameters;
    assert_eq!((u32_at(&write, 0), i64_at(&write, 16)), (0x200, 0x400));
    assert_eq!(m.query_information(h, fi::STANDARD, 24).status, Status::SUCCESS);
    let query = last(0x05).parameters;
    // Length at 0, FileInformationClass at 8.
    assert_eq!((u32_at(&query, 0), u32_at(&query, 8)), (24, fi::STANDARD));
    let input = [0u8; 16];
    let code = fsctl::IS_VOLUME_MOUNTED;
    let _ = m.io(IoRequest::Fsctl { handle: h, code, input: &input, output_length: 32 });
    let control = last(0x0d).parameters;
    // OutputBufferLength at 0, InputBufferLength at 8, FsControlCode at 16.
    assert_eq!((u32_at(&control, 0), u32_at(&control, 8)), (32, 16));
    assert_eq!(u32_at(&control, 16), code);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn cached_noncached_and_paging_requests_carry_their_flags_and_buffers() {
    // facts.md §7: IRP_NOCACHE 0x1, IRP_PAGING_IO 0x2, IRP_SYNCHRONOUS_PAGING_IO 0x40.
    let mut m = machine_with_spy(13);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.bin", &[7u8; 1024]));
    m.boot();
    let h = m.open(c, "f.bin", CreateOptions::open()).unwrap();
    spy(|s| s.refuse_fast_io = true);
    let last_read = |m: &mut Machine, mode: IoMode| {
        spy(|s| s.seen.clear());
        let r = m.read(h, Some(0), 512, mode);
        assert_eq!((r.status, r.data.len()), (Status::SUCCESS, 512), "{mode:?}");
        spy(|s| s.seen.iter().rfind(|x| x.major == 3 && !x.fast_io).cloned().unwrap())
    };
    let cached = last_read(&mut m, IoMode::Cached);
    assert_eq!(cached.irp_flags & 0x3, 0);
    assert!(!cached.mdl && cached.user_buffer, "neither I/O: UserBuffer");
    let noncached = last_read(&mut m, IoMode::NonCached);
    assert_eq!(noncached.irp_flags & 0x3, 0x1);
    assert!(noncached.mdl);
    let paging = last_read(&mut m, IoMode::Paging);
    assert_eq!(paging.irp_flags & 0x43, 0x43);
    assert!(paging.mdl);
    // Non-cached transfers must be sector aligned on a disk file system.
    assert_eq!(m.read(h, Some(1), 512, IoMode::NonCached).status, Status::INVALID_PARAMETER);
    // Paging writes never extend the file.
    let w = m.write(h, Some(1000), &[1u8; 100], IoMode::Paging);
    assert_eq!((w.status, w.information), (Status::SUCCESS, 24));
    assert_eq!(m.file_contents(c, "f.bin").unwrap().len(), 1024);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn create_errors_and_dispositions() {
    let (mut m, c) = ntfs();
    let open = CreateOptions::open();
    assert_eq!(m.create(c, "nope.txt", open).status, Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(m.create(c, "nodir\\x.txt", open).status, Status::OBJECT_PATH_NOT_FOUND);
    assert_eq!(m.create(c, "empty.txt\\x", open).status, Status::OBJECT_PATH_NOT_FOUND);
    assert_eq!(
        m.create(c, "docs", open.options(co::NON_DIRECTORY_FILE)).status,
        Status::FILE_IS_A_DIRECTORY
    );
    assert_eq!(
        m.create(c, "empty.txt", open.options(co::DIRECTORY_FILE)).status,
        Status::NOT_A_DIRECTORY
    );
    assert_eq!(
        m.create(c, "docs\\readme.txt", CreateOptions::create()).status,
        Status::OBJECT_NAME_COLLISION
    );
    assert_eq!(
        m.create(c, "bad|name", CreateOptions::default()).status,
        Status::OBJECT_NAME_INVALID
    );
    // Overwrite truncates; supersede reports superseded.
    let r = m.create(
        c,
        "docs\\readme.txt",
        CreateOptions::default().disposition(disposition::OVERWRITE),
    );
    assert_eq!((r.status, r.information), (Status::SUCCESS, 3));
    assert_eq!(m.file_contents(c, "docs\\readme.txt").unwrap(), b"");
    let r2 =
        m.create(c, "docs\\b.bin", CreateOptions::default().disposition(disposition::SUPERSEDE));
    assert_eq!(r2.information, 0);
    // A directory made with FILE_DIRECTORY_FILE.
    let r = m.create(c, "newdir", CreateOptions::directory().disposition(disposition::CREATE));
    assert_eq!(r.status, Status::SUCCESS);
    // Sharing: a writer without FILE_SHARE_WRITE shuts out other writers.
    let a = m.open(c, "sub\\s.txt", CreateOptions::default().share(1)).unwrap();
    assert_eq!(
        m.create(c, "sub\\s.txt", CreateOptions::default()).status,
        Status::SHARING_VIOLATION
    );
    m.close_handle(a);
    assert!(m.open(c, "sub\\s.txt", CreateOptions::default()).is_ok());
    // Directories cannot be read.
    let d = m.open(c, "docs", CreateOptions::open()).unwrap();
    assert_eq!(m.read(d, Some(0), 1, IoMode::Cached).status, Status::INVALID_DEVICE_REQUEST);
    let _ = r.handle.map(|h| m.close_handle(h));
    let _ = r2.handle.map(|h| m.close_handle(h));
}

/// `NtQueryInformationFile` and `NtSetInformationFile` on a synchronous file object (the
/// Windows Research Kernel): the I/O manager answers the position, access, mode and alignment
/// itself and sets the position itself, so no driver sees those requests; basic and standard
/// information are offered to the top driver's `FastIoQueryBasicInfo` /
/// `FastIoQueryStandardInfo` first, which the disk file systems serve; a driver without the
/// routine gets the IRP (not tried, nothing declined).
#[test]
fn information_the_io_manager_answers_or_offers_to_fast_io() {
    let mut m = machine(19);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    let h = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    let s = m.query_information(h, fi::STANDARD, 24);
    assert_eq!((s.status, s.fast_io, s.information), (Status::SUCCESS, true, 24));
    assert_eq!(u64::from_le_bytes(s.data[8..16].try_into().unwrap()), 10, "EndOfFile");
    let b = m.query_information(h, fi::BASIC, 40);
    assert_eq!((b.status, b.fast_io, b.information), (Status::SUCCESS, true, 40));
    // A volume open: the file system's fast routine declines, the IRP answers.
    let v = m.open(c, "", CreateOptions::open()).unwrap();
    let q = m.query_information(v, fi::STANDARD, 24);
    assert_eq!((q.status, q.fast_io), (Status::INVALID_PARAMETER, false));
    m.close_handle(v);
    m.close_handle(h);
    drop(m);

    let mut m = machine_with_spy(20);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    let access = 0x0012_0089; // FILE_GENERIC_READ
    let h = m.open(c, "f.txt", CreateOptions::open().access(access)).unwrap();
    assert_eq!(m.read(h, None, 4, IoMode::Cached).data, b"0123");
    spy(|s| s.seen.clear());
    let u32_of = |r: &fsfilter_sim::IoResult| u32::from_le_bytes(r.data[..4].try_into().unwrap());
    let position = m.query_information(h, fi::POSITION, 8);
    assert_eq!(
        (position.status, position.data.as_slice()),
        (Status::SUCCESS, &4i64.to_le_bytes()[..])
    );
    let a = m.query_information(h, fi::ACCESS, 4);
    assert_eq!(u32_of(&a) & access, access, "{:#x}", u32_of(&a));
    let mode = m.query_information(h, fi::MODE, 4);
    assert_eq!(u32_of(&mode), 0x20, "FILE_SYNCHRONOUS_IO_NONALERT");
    let alignment = m.query_information(h, fi::ALIGNMENT, 4);
    assert_eq!((alignment.status, alignment.information), (Status::SUCCESS, 4));
    let set = m.set_information(h, fi::POSITION, &2i64.to_le_bytes());
    assert_eq!(set.status, Status::SUCCESS);
    let refused = m.set_information(h, fi::POSITION, &(-1i64).to_le_bytes());
    assert_eq!(refused.status, Status::INVALID_PARAMETER);
    assert_eq!(m.read(h, None, 2, IoMode::Cached).data, b"23", "read from the position set");
    // The mode: FILE_SEQUENTIAL_ONLY and FILE_SYNCHRONOUS_IO_NONALERT set, then read back; a
    // synchronous file object must keep one of the synchronous flags.
    let sequential = 0x4u32 | 0x20;
    assert_eq!(m.set_information(h, fi::MODE, &sequential.to_le_bytes()).status, Status::SUCCESS);
    assert_eq!(u32_of(&m.query_information(h, fi::MODE, 4)), sequential);
    let bad = m.set_information(h, fi::MODE, &0x4u32.to_le_bytes());
    assert_eq!(bad.status, Status::INVALID_PARAMETER);
    let seen = spy(|s| std::mem::take(&mut s.seen));
    assert!(
        seen.iter().all(|s| s.major == 3),
        "no query or set reached a driver, only the read: {seen:?}"
    );
    // Each request has its id and completion all the same.
    assert!(
        [&position, &a, &mode, &alignment, &set, &refused, &bad].iter().all(|r| r.io.is_some())
    );
    // A handle without FILE_READ_ATTRIBUTES may not query basic information, nor one without
    // FILE_WRITE_DATA set the end of file: the I/O manager refuses, nothing is sent.
    // Nor a directory listing without FILE_LIST_DIRECTORY, nor a control code whose access
    // bits ask for read access (IOCTL_DISK_GET_LENGTH_INFO) without FILE_READ_DATA.
    let attributes = m.open(c, "f.txt", CreateOptions::open().access(0x80)).unwrap();
    let root = m.open(c, "\\", CreateOptions::open().options(0x1).access(0x80)).unwrap();
    spy(|s| s.seen.clear());
    let d = m.query_directory(root, fi::NAMES, None, true, 512);
    assert_eq!((d.status, d.io), (Status::ACCESS_DENIED, None));
    let code = fsfilter_sim::nt::ioctl::DISK_GET_LENGTH_INFO;
    let request =
        IoRequest::DeviceControl { handle: attributes, code, input: &[], output_length: 8 };
    let i = m.io(request);
    assert_eq!((i.status, i.io), (Status::ACCESS_DENIED, None));
    assert!(spy(|s| s.seen.is_empty()), "nothing sent");
    m.close_handle(root);
    m.close_handle(attributes);
    let data_only = m.open(c, "f.txt", CreateOptions::open().access(0x1)).unwrap();
    spy(|s| s.seen.clear());
    let q = m.query_information(data_only, fi::BASIC, 40);
    assert_eq!((q.status, q.io), (Status::ACCESS_DENIED, None));
    let e = m.set_information(data_only, fi::END_OF_FILE, &4u64.to_le_bytes());
    assert_eq!((e.status, e.io), (Status::ACCESS_DENIED, None));
    assert!(spy(|s| s.seen.iter().all(|s| s.major != 5 && s.major != 6)), "nothing sent");
    m.close_handle(data_only);
    // The spy, on top, has no fast query routines: standard information is an IRP it sees.
    let s = m.query_information(h, fi::STANDARD, 24);
    assert_eq!((s.status, s.fast_io), (Status::SUCCESS, false));
    assert!(spy(|s| s.seen.iter().any(|s| s.major == 5 && !s.fast_io)));
    let declined = m
        .events()
        .iter()
        .any(|e| matches!(e.kind, EventKind::System { what: "fast_io_declined", .. }));
    assert!(!declined, "not tried, not declined");
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtLockFile` and `NtUnlockFile` call the top driver's `FastIoLock` / `FastIoUnlockSingle`
/// first (WRK, ReactOS), with no condition on caching; a disk file system serves them from the
/// file's lock (`FsRtlFastLock`) unless the lock would have to wait, which only the IRP can. A
/// namespace file system serves none, and neither does a driver without the routine.
#[test]
fn byte_range_locks_are_offered_to_fast_io_first() {
    let mut m = machine(17);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"locked bytes"));
    let p = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    m.boot();
    let a = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let b = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let lock = |handle, offset, exclusive, fail_immediately| IoRequest::Lock {
        handle,
        offset,
        length: 4,
        exclusive,
        fail_immediately,
    };
    let declined = |m: &Machine| {
        m.events()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::System { what: "fast_io_declined", .. }))
            .count()
    };
    // Granted at once, and refused at once: both served by fast I/O.
    let l = m.io(lock(a, 0, true, true));
    assert_eq!((l.status, l.fast_io), (Status::SUCCESS, true));
    let refused = m.io(lock(b, 2, false, true));
    assert_eq!((refused.status, refused.fast_io), (Status::LOCK_NOT_GRANTED, true));
    assert_eq!(declined(&m), 0);
    // One that must wait: declined by fast I/O, then the same request's IRP, which waits.
    let waiting = m.io(lock(b, 2, false, false));
    assert_eq!((waiting.status, waiting.fast_io, declined(&m)), (Status::PENDING, false, 1));
    // The fast unlock grants the waiting IRP.
    let u = m.io(IoRequest::Unlock { handle: a, offset: 0, length: 4 });
    assert_eq!((u.status, u.fast_io), (Status::SUCCESS, true));
    let granted = m.events().iter().any(|e| {
        matches!(&e.kind, EventKind::IoComplete { io, status, .. } if Some(*io) == waiting.io && *status == Status::SUCCESS)
    });
    assert!(granted);
    // An unlock of a range the caller has not locked: served, with the file system's answer.
    let u = m.io(IoRequest::Unlock { handle: a, offset: 0, length: 4 });
    assert_eq!((u.status, u.fast_io), (Status::RANGE_NOT_LOCKED, true));
    // A handle without read or write data access may not lock or unlock: nothing is sent.
    let attributes = m.open(c, "a.txt", CreateOptions::open().access(0x80)).unwrap();
    let denied = m.io(lock(attributes, 0, true, true));
    assert_eq!((denied.status, denied.io), (Status::ACCESS_DENIED, None));
    let denied = m.io(IoRequest::Unlock { handle: attributes, offset: 0, length: 4 });
    assert_eq!((denied.status, denied.io), (Status::ACCESS_DENIED, None));
    // A named pipe: NPFS serves no lock through fast I/O, the IRP answers.
    let server = m.open(p, "pipe", CreateOptions::default()).unwrap();
    let l = m.io(lock(server, 0, true, true));
    assert!(!l.fast_io, "{l:?}");
    assert_eq!(declined(&m), 2);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// MS-FSA 2.1.5.8 and 2.1.5.9: a lock or unlock whose range runs past the last 64-bit offset
/// (`FileOffset + Length - 1 < FileOffset`, `Length != 0`) fails with
/// `STATUS_INVALID_LOCK_RANGE`, through fast I/O and through the IRP alike. Offsets are
/// unsigned: the last byte, `u64::MAX`, can be locked, and such a lock is not one at offset 0.
#[test]
fn a_lock_range_past_the_last_64_bit_offset_is_invalid_ms_fsa_2_1_5_8() {
    let invalid_lock_range = Status::from_bits(0xC000_01A1);
    let (mut m, c) = ntfs();
    let a = m.open(c, "docs\\readme.txt", CreateOptions::open()).unwrap();
    let b = m.open(c, "docs\\readme.txt", CreateOptions::open()).unwrap();
    let lock = |handle, offset, length, fail_immediately| IoRequest::Lock {
        handle,
        offset,
        length,
        exclusive: true,
        fail_immediately,
    };
    // Overflowing ranges: refused, whether fast I/O serves the request or the IRP does.
    for fail_immediately in [true, false] {
        let l = m.io(lock(a, u64::MAX, 64 << 20, fail_immediately));
        assert_eq!(l.status, invalid_lock_range, "{l:?}");
        let l = m.io(lock(a, 1 << 63, 1 << 63 | 1, fail_immediately));
        assert_eq!(l.status, invalid_lock_range, "{l:?}");
    }
    let u = m.io(IoRequest::Unlock { handle: a, offset: u64::MAX, length: 2 });
    assert_eq!(u.status, invalid_lock_range, "{u:?}");
    // The last byte is a valid range, a zero length is valid anywhere, and a range may end
    // just before the last byte.
    assert_eq!(m.io(lock(a, u64::MAX, 1, true)).status, Status::SUCCESS);
    assert_eq!(m.io(lock(a, u64::MAX, 0, true)).status, Status::SUCCESS);
    assert_eq!(m.io(lock(a, 1 << 63, (1 << 63) - 1, true)).status, Status::SUCCESS);
    // Those locks are where they were asked for: none of them covers offset 0.
    assert_eq!(m.io(lock(b, 0, 4, true)).status, Status::SUCCESS);
    assert_eq!(m.io(lock(b, u64::MAX, 1, true)).status, Status::LOCK_NOT_GRANTED);
    let u = m.io(IoRequest::Unlock { handle: a, offset: u64::MAX, length: 1 });
    assert_eq!(u.status, Status::SUCCESS);
    assert_eq!(m.io(lock(b, u64::MAX, 1, true)).status, Status::SUCCESS);
    let u = m.io(IoRequest::Unlock { handle: a, offset: u64::MAX, length: 1 });
    assert_eq!(u.status, Status::RANGE_NOT_LOCKED);
    m.close_handle(a);
    m.close_handle(b);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn byte_range_locks_conflict_with_other_handles_io() {
    let (mut m, c) = ntfs();
    let a = m.open(c, "docs\\readme.txt", CreateOptions::open()).unwrap();
    let b = m.open(c, "docs\\readme.txt", CreateOptions::open()).unwrap();
    let l = m.io(IoRequest::Lock {
        handle: a,
        offset: 0,
        length: 4,
        exclusive: true,
        fail_immediately: true,
    });
    assert_eq!(l.status, Status::SUCCESS);
    // The owner reads and writes; the other handle conflicts.
    assert_eq!(m.read(a, Some(0), 4, IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(m.read(b, Some(0), 4, IoMode::Cached).status, Status::FILE_LOCK_CONFLICT);
    assert_eq!(m.write(b, Some(2), b"zz", IoMode::Cached).status, Status::FILE_LOCK_CONFLICT);
    assert_eq!(m.read(b, Some(4), 3, IoMode::Cached).status, Status::SUCCESS, "outside the range");
    // Paging I/O ignores locks.
    assert_eq!(m.read(b, Some(0), 4, IoMode::Paging).status, Status::SUCCESS);
    let l2 = m.io(IoRequest::Lock {
        handle: b,
        offset: 2,
        length: 4,
        exclusive: false,
        fail_immediately: true,
    });
    assert_eq!(l2.status, Status::LOCK_NOT_GRANTED);
    // A waiting lock is granted when the range is unlocked.
    let waiting = m.io(IoRequest::Lock {
        handle: b,
        offset: 2,
        length: 4,
        exclusive: false,
        fail_immediately: false,
    });
    assert_eq!(waiting.status, Status::PENDING);
    let u = m.io(IoRequest::Unlock { handle: a, offset: 0, length: 4 });
    assert_eq!(u.status, Status::SUCCESS);
    let granted = m.events().iter().any(|e| {
        matches!(&e.kind, EventKind::IoComplete { io, status, .. } if Some(*io) == waiting.io && *status == Status::SUCCESS)
    });
    assert!(granted);
    // A shared lock blocks writes, even the owner's.
    assert_eq!(m.write(b, Some(3), b"q", IoMode::Cached).status, Status::FILE_LOCK_CONFLICT);
    // Cleanup releases the handle's locks.
    m.close_handle(b);
    assert_eq!(m.write(a, Some(3), b"q", IoMode::Cached).status, Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn set_information_delete_rename_and_end_of_file() {
    let (mut m, c) = ntfs();
    // Delete on close.
    let h = m.open(c, "gone.txt", CreateOptions::default().options(co::DELETE_ON_CLOSE)).unwrap();
    assert!(m.file_contents(c, "gone.txt").is_some());
    m.close_handle(h);
    assert!(m.file_contents(c, "gone.txt").is_none());
    // Disposition, and opens of a file pending delete.
    let h = m.open(c, "docs\\b.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.set_information(h, fi::DISPOSITION, &[1]).status, Status::SUCCESS);
    assert_eq!(m.create(c, "docs\\b.bin", CreateOptions::open()).status, Status::DELETE_PENDING);
    m.close_handle(h);
    assert!(m.file_contents(c, "docs\\b.bin").is_none());
    // A non-empty directory cannot be deleted.
    let d = m.open(c, "docs", CreateOptions::open()).unwrap();
    assert_eq!(m.set_information(d, fi::DISPOSITION, &[1]).status, Status::DIRECTORY_NOT_EMPTY);
    m.close_handle(d);
    // Rename within the volume.
    let h = m.open(c, "docs\\readme.txt", CreateOptions::open()).unwrap();
    let name: Vec<u8> = "\\sub\\moved.txt".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut info = vec![0u8; 20];
    info[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
    info.extend_from_slice(&name);
    assert_eq!(m.set_information(h, fi::RENAME, &info).status, Status::SUCCESS);
    let q = m.query_information(h, fi::NAME, 256);
    assert_eq!(utf16(&q.data[4..]), "\\sub\\moved.txt");
    m.close_handle(h);
    assert_eq!(m.file_contents(c, "sub\\moved.txt").unwrap(), b"read me");
    // End of file.
    let h = m.open(c, "sub\\moved.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.set_information(h, fi::END_OF_FILE, &4i64.to_le_bytes()).status, Status::SUCCESS);
    assert_eq!(m.file_contents(c, "sub\\moved.txt").unwrap(), b"read");
    assert_eq!(m.query_information(h, fi::STANDARD, 4).status, Status::INFO_LENGTH_MISMATCH);
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn volume_information_fsctls_and_device_controls() {
    let (mut m, c) = ntfs();
    let h = m.open(c, "docs\\readme.txt", CreateOptions::open()).unwrap();
    let a = m.query_volume_information(h, fs_info::ATTRIBUTE, 64);
    assert_eq!(a.status, Status::SUCCESS);
    assert_eq!(utf16(&a.data[12..12 + u32_at(&a.data, 8) as usize]), "NTFS");
    let d = m.query_volume_information(h, fs_info::DEVICE, 8);
    assert_eq!(u32_at(&d.data, 0), 0x07, "FILE_DEVICE_DISK");
    let s = m.query_volume_information(h, fs_info::SIZE, 24);
    assert_eq!(s.status, Status::SUCCESS);
    // Volume FSCTLs want a volume handle; unknown codes are invalid requests.
    let r = m.io(IoRequest::Fsctl {
        handle: h,
        code: fsctl::LOCK_VOLUME,
        input: &[],
        output_length: 0,
    });
    assert_eq!(r.status, Status::INVALID_PARAMETER);
    let r = m.io(IoRequest::Fsctl { handle: h, code: 0x0009_0FFF, input: &[], output_length: 0 });
    assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST);
    // Device controls go to the storage device.
    let r = m.io(IoRequest::DeviceControl {
        handle: h,
        code: ioctl::DISK_GET_LENGTH_INFO,
        input: &[],
        output_length: 8,
    });
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(i64_at(&r.data, 0), 64 * 1024 * 1024 * 1024);
    let r = m.io(IoRequest::DeviceControl {
        handle: h,
        code: 0x0007_7777,
        input: &[],
        output_length: 0,
    });
    assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST);
    // Locking the volume needs it to be the only open.
    let v = m.open(c, "", CreateOptions::open()).unwrap();
    let r = m.io(IoRequest::Fsctl {
        handle: v,
        code: fsctl::LOCK_VOLUME,
        input: &[],
        output_length: 0,
    });
    assert_eq!(r.status, Status::ACCESS_DENIED);
    m.close_handle(h);
    let r = m.io(IoRequest::Fsctl {
        handle: v,
        code: fsctl::LOCK_VOLUME,
        input: &[],
        output_length: 0,
    });
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(
        m.create(c, "docs\\readme.txt", CreateOptions::open()).status,
        Status::ACCESS_DENIED
    );
    let r = m.io(IoRequest::Fsctl {
        handle: v,
        code: fsctl::UNLOCK_VOLUME,
        input: &[],
        output_length: 0,
    });
    assert_eq!(r.status, Status::SUCCESS);
    let f = m.io(IoRequest::Flush { handle: v });
    assert_eq!(f.status, Status::SUCCESS);
    let s = m.io(IoRequest::Shutdown { volume: c });
    assert_eq!(s.status, Status::SUCCESS);
    m.close_handle(v);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn read_only_media_refuses_writes() {
    let mut m = machine(14);
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs).file("disc.txt", b"cd"));
    m.boot();
    assert_eq!(m.create(d, "disc.txt", CreateOptions::open()).status, Status::ACCESS_DENIED);
    assert_eq!(
        m.create(d, "new.txt", CreateOptions::create().access(0x8000_0000)).status,
        Status::ACCESS_DENIED
    );
    let h = m.open(d, "disc.txt", CreateOptions::open().access(0x8000_0000)).unwrap();
    assert_eq!(m.write(h, Some(0), b"x", IoMode::Cached).status, Status::ACCESS_DENIED);
    let a = m.query_volume_information(h, fs_info::ATTRIBUTE, 64);
    assert_eq!(utf16(&a.data[12..]), "CDFS");
}

#[test]
fn shares_pipes_and_mailslots() {
    let mut m = machine(15);
    let s =
        m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup).file("dir\\r.txt", b"remote"));
    let p = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    let ms = m.add_volume(VolumeSpec::new(r"\Device\Mailslot", FsKind::Msfs));
    m.boot();
    let h = m.open(s, "dir\\r.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, None, 100, IoMode::Cached).data, b"remote");
    let q = m.query_information(h, fi::NAME, 256);
    assert_eq!(utf16(&q.data[4..]), "\\server\\share\\dir\\r.txt");
    let d = m.query_volume_information(h, fs_info::DEVICE, 8);
    assert_eq!(u32_at(&d.data, 0), 0x14, "FILE_DEVICE_NETWORK_FILE_SYSTEM");
    assert_eq!(u32_at(&d.data, 4) & 0x10, 0x10, "FILE_REMOTE_DEVICE");
    // A pipe is a stream: writes append, each reader reads from its own position.
    let server = m.open(p, "mypipe", CreateOptions::default()).unwrap();
    let client = m.open(p, "mypipe", CreateOptions::open()).unwrap();
    m.write(server, Some(0), b"one ", IoMode::Cached);
    m.write(server, Some(0), b"two", IoMode::Cached);
    assert_eq!(m.read(client, None, 4, IoMode::Cached).data, b"one ");
    assert_eq!(m.read(client, None, 10, IoMode::Cached).data, b"two");
    assert_eq!(m.read(client, None, 10, IoMode::Cached).status, Status::END_OF_FILE);
    let slot = m.open(ms, "slot", CreateOptions::default()).unwrap();
    m.write(slot, None, b"mail", IoMode::Cached);
    let a = m.query_volume_information(slot, fs_info::ATTRIBUTE, 64);
    assert_eq!(utf16(&a.data[12..]), "MSFS");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let _: Handle = h;
}

#[test]
fn pipe_io_is_always_offered_to_fast_io_first() {
    // NPFS marks its file objects as cached (PrivateCacheMap = 1), so the I/O manager offers each
    // pipe read and write to the fast-I/O routine, which declines here (not modelled). MSFS does
    // not cache: a mailslot is never offered fast I/O. A share's first cached read initiates
    // caching like a local file's; later ones are offered (and declined: the redirector's fast
    // I/O is not modelled).
    let mut m = machine(16);
    let s = m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup).file("r.txt", b"remote"));
    let p = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    let ms = m.add_volume(VolumeSpec::new(r"\Device\Mailslot", FsKind::Msfs));
    m.boot();
    let declined = |m: &Machine| {
        m.events()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::System { what: "fast_io_declined", .. }))
            .count()
    };
    let server = m.open(p, "pipe", CreateOptions::default()).unwrap();
    let client = m.open(p, "pipe", CreateOptions::open()).unwrap();
    for n in 1..=2 {
        let w = m.write(server, None, b"abc", IoMode::Cached);
        assert_eq!((w.status, w.fast_io), (Status::SUCCESS, false));
        assert_eq!(declined(&m), 2 * n - 1, "write {n} offered to fast I/O, then an IRP");
        let r = m.read(client, None, 3, IoMode::Cached);
        assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, false, &b"abc"[..]));
        assert_eq!(declined(&m), 2 * n, "read {n} offered to fast I/O, then an IRP");
    }
    let slot = m.open(ms, "slot", CreateOptions::default()).unwrap();
    let share = m.open(s, "r.txt", CreateOptions::open()).unwrap();
    for part in [&b"rem"[..], b"ote"] {
        assert!(m.write(slot, None, b"mail", IoMode::Cached).status.is_success());
        assert_eq!(m.read(share, None, 3, IoMode::Cached).data, part);
    }
    assert_eq!(declined(&m), 5, "the share's second read only: none on the mailslot");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let (mut m, c) = ntfs();
        let h = m.open(c, "docs\\readme.txt", CreateOptions::open()).unwrap();
        m.read(h, Some(0), 4, IoMode::Cached);
        m.read(h, Some(0), 4, IoMode::Cached);
        m.close_handle(h);
        m.dismount(c);
        let events = m.events();
        drop(m);
        events
    };
    assert_eq!(run(), run());
}

/// `NtQueryFullAttributesFile` (the Windows Research Kernel's `IopParseDevice` for a query-only
/// open): the top driver's `FastIoQueryOpen` first, with the create IRP at its location; when
/// there is none, or it answers FALSE, the long way: open, `FileNetworkOpenInformation`, cleanup,
/// close, each an IRP.
#[test]
fn attribute_queries_try_fast_io_query_open_then_open_query_and_close() {
    let attributes = |r: &fsfilter_sim::IoResult| {
        let size = u64::from_le_bytes(r.data[40..48].try_into().unwrap());
        let attributes = u32::from_le_bytes(r.data[48..52].try_into().unwrap());
        (size, attributes)
    };
    let mut m = machine(21);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789").file("d\\g.txt", b""),
    );
    m.boot();
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: "f.txt" });
    assert_eq!((q.status, q.fast_io, q.data.len()), (Status::SUCCESS, true, 56));
    assert_eq!(attributes(&q).0, 10, "EndOfFile");
    let d = m.io(IoRequest::QueryAttributes { volume: c, path: "d" });
    assert_eq!((d.status, d.fast_io), (Status::SUCCESS, true));
    assert_eq!(attributes(&d).1 & 0x10, 0x10, "FILE_ATTRIBUTE_DIRECTORY");
    // A missing name: NTFS declines, the open reports the error.
    let missing = m.io(IoRequest::QueryAttributes { volume: c, path: "nothing" });
    assert_eq!((missing.status, missing.fast_io), (Status::OBJECT_NAME_NOT_FOUND, false));
    assert!(
        m.events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::System { what: "fast_io_declined", .. })),
        "the fast attempt was declined"
    );
    // One request: the attempt's IRP went on as the open, which reported the error.
    let io = missing.io.unwrap();
    let of_request: Vec<String> = m
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::IoStart { io: i, major, fast_io, .. } if *i == io => {
                Some(format!("start {major:?} fast={fast_io}"))
            }
            EventKind::IoComplete { io: i, status, .. } if *i == io => {
                Some(format!("complete {status:?}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        of_request,
        [
            "start IRP_MJ_NETWORK_QUERY_OPEN fast=true",
            "complete STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)"
        ]
    );
    drop(m);

    // A driver on top whose FastIoQueryOpen answers FALSE: the long way, which it sees as four
    // IRPs after the attempt.
    let mut m = machine_with_spy(22);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    spy(|s| s.seen.clear());
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: "f.txt" });
    assert_eq!((q.status, q.fast_io, q.data.len()), (Status::SUCCESS, false, 56));
    assert_eq!(attributes(&q).0, 10, "EndOfFile");
    let seen = spy(|s| std::mem::take(&mut s.seen));
    let majors: Vec<u8> = seen.iter().map(|s| s.major).collect();
    assert_eq!(majors, [0xF2, 0x00, 0x05, 0x12, 0x02], "create, query, cleanup, close: {seen:?}");
    // Passed down at the same location, naming the device below: NTFS answers.
    spy(|s| s.query_open = Some(PassQueryOpen::SameLocation));
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: "f.txt" });
    assert_eq!((q.status, q.fast_io, attributes(&q).0), (Status::SUCCESS, true, 10));
    assert_eq!(m.findings(), []);
    // Passed down with IoSkipCurrentIrpStackLocation: the location is above the IRP's stack
    // when NTFS reads it, a bugcheck on Windows, reported against the spy.
    spy(|s| s.query_open = Some(PassQueryOpen::Skipped));
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: "f.txt" });
    assert_eq!((q.status, q.fast_io), (Status::SUCCESS, false), "the long way after FALSE");
    let findings = m.findings();
    assert!(
        findings.iter().any(|(rule, driver, message)| *rule == Rule::Bugcheck
            && driver.as_deref() == Some("Spy")
            && message.contains("outside the IRP's stack")),
        "{findings:?}"
    );
}

/// A cached transfer on a file with byte-range locks: the file system's fast path
/// (`FsRtlCopyRead`, the Windows Research Kernel) finds fast I/O questionable and asks the
/// `FastIoCheckIfPossible` of the top of the stack, which a filter there sees inside the fast
/// read and passes down to the file system's own check; a conflicting range makes the read an
/// IRP, which the lock refuses.
#[test]
fn fast_io_on_a_locked_file_asks_the_top_of_the_stack_first() {
    let mut m = machine_with_spy(24);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"0123456789abcdef"));
    m.boot();
    let a = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let b = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    // Caching initiated by the first cached read of each file object (an IRP).
    assert!(!m.read(b, Some(0), 4, IoMode::Cached).fast_io);
    let majors =
        || spy(|s| std::mem::take(&mut s.seen)).iter().map(|s| s.major).collect::<Vec<_>>();
    let _ = majors();
    // No locks: no check.
    assert!(m.read(b, Some(0), 4, IoMode::Cached).fast_io);
    assert_eq!(majors(), [3]);
    let l = m.io(IoRequest::Lock {
        handle: a,
        offset: 8,
        length: 4,
        exclusive: true,
        fail_immediately: true,
    });
    assert_eq!(l.status, Status::SUCCESS);
    let _ = majors();
    // Locked elsewhere: the check says yes, inside the fast read.
    let r = m.read(b, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, true, &b"0123"[..]));
    assert_eq!(majors(), [3, 0xF3]);
    // The locked range: the check says no, and the IRP meets the lock.
    let r = m.read(b, Some(8), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io), (Status::FILE_LOCK_CONFLICT, false));
    assert_eq!(majors(), [3, 0xF3, 3]);
    // The holder of the lock reads through it.
    let r = m.read(a, Some(8), 4, IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(m.findings(), []);
}

/// `ZwReadFile` / `ZwWriteFile`: on a file object opened for synchronous I/O, a `ByteOffset` of
/// `FILE_USE_FILE_POINTER_POSITION` (low part -2, high part -1) is the same as none: the I/O
/// manager passes the file's current position down (the Windows Research Kernel's and ReactOS's
/// `NtReadFile` replace it with `CurrentByteOffset`), so a filter never sees the special value.
#[test]
fn the_use_file_pointer_position_offset_reaches_filters_as_the_current_position() {
    const FILE_USE_FILE_POINTER_POSITION: u64 = 0xFFFF_FFFF_FFFF_FFFE;
    let i64_at = |b: &[u8; 32], o: usize| i64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mut m = machine_with_spy(31);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    spy(|s| s.refuse_fast_io = true);
    let h = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 3, IoMode::Cached).data, b"012");
    spy(|s| s.seen.clear());
    let r = m.read(h, Some(FILE_USE_FILE_POINTER_POSITION), 3, IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"345"[..]));
    let read = spy(|s| s.seen.iter().rfind(|x| x.major == 0x03 && !x.fast_io).cloned()).unwrap();
    assert_eq!(i64_at(&read.parameters, 16), 3, "the read's ByteOffset is the file position");
    spy(|s| s.seen.clear());
    let w = m.write(h, Some(FILE_USE_FILE_POINTER_POSITION), b"ab", IoMode::Cached);
    assert_eq!(w.status, Status::SUCCESS);
    let write = spy(|s| s.seen.iter().rfind(|x| x.major == 0x04 && !x.fast_io).cloned()).unwrap();
    assert_eq!(i64_at(&write.parameters, 16), 6, "the write's ByteOffset is the file position");
    assert_eq!(m.file_contents(c, "f.txt").unwrap(), b"012345ab89");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtQueryInformationFile` and `NtSetInformationFile` refuse, for a user-mode caller, a class
/// their length tables have no entry for (`IopQueryOperationLength` / `IopSetOperationLength`
/// zero: a set-only class queried, a query-only class set) with `STATUS_INVALID_INFO_CLASS`,
/// before any IRP (the Windows Research Kernel and ReactOS).
#[test]
fn an_information_class_the_io_manager_does_not_allow_is_refused_without_an_irp() {
    const STATUS_INVALID_INFO_CLASS: Status = Status(0xC000_0003_u32 as i32);
    let mut m = machine_with_spy(32);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    let h = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    for class in [fi::DISPOSITION, fi::END_OF_FILE, fi::ALLOCATION, fi::RENAME, fi::NAMES] {
        spy(|s| s.seen.clear());
        let r = m.query_information(h, class, 64);
        assert_eq!(r.status, STATUS_INVALID_INFO_CLASS, "query of class {class}");
        assert!(spy(|s| s.seen.is_empty()), "no IRP for the query of class {class}");
    }
    for class in [fi::STANDARD, fi::NAME, fi::ALL, fi::NETWORK_OPEN, fi::INTERNAL] {
        spy(|s| s.seen.clear());
        let r = m.set_information(h, class, &[0u8; 128]);
        assert_eq!(r.status, STATUS_INVALID_INFO_CLASS, "set of class {class}");
        assert!(spy(|s| s.seen.is_empty()), "no IRP for the set of class {class}");
    }
    // The classes the tables allow still go down.
    assert_eq!(m.query_information(h, fi::STANDARD, 24).status, Status::SUCCESS);
    assert_eq!(m.set_information(h, fi::END_OF_FILE, &4i64.to_le_bytes()).status, Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtQueryDirectoryFile` (Windows' `BuildQueryDirectoryIrp`) refuses a user-mode caller's class
/// that is not a directory class with `STATUS_INVALID_INFO_CLASS`, and a buffer smaller than the
/// class's entry with `STATUS_INFO_LENGTH_MISMATCH`, before it looks at the handle: no IRP.
#[test]
fn a_directory_query_of_a_class_that_lists_no_directory_is_refused_without_an_irp() {
    let mut m = machine_with_spy(36);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("d\\f.txt", b"0123456789"));
    m.boot();
    let d = m.open(c, "d", CreateOptions::open().options(co::DIRECTORY_FILE)).unwrap();
    for class in [fi::BASIC, fi::STANDARD, fi::NAME, fi::ALL, 0, 99] {
        spy(|s| s.seen.clear());
        let r = m.query_directory(d, class, None, true, 4096);
        assert_eq!(r.status, Status::INVALID_INFO_CLASS, "class {class}");
        assert!(spy(|s| s.seen.is_empty()), "no IRP for class {class}");
    }
    // A directory class with a buffer that cannot hold one entry.
    for (class, length) in [(fi::DIRECTORY, 71), (fi::BOTH_DIRECTORY, 95), (fi::NAMES, 15)] {
        spy(|s| s.seen.clear());
        let r = m.query_directory(d, class, None, true, length);
        assert_eq!(r.status, Status::INFO_LENGTH_MISMATCH, "class {class}, {length} bytes");
        assert!(spy(|s| s.seen.is_empty()), "no IRP for class {class}");
    }
    // The smallest buffer goes down.
    spy(|s| s.seen.clear());
    let r = m.query_directory(d, fi::DIRECTORY, None, true, 72);
    assert_ne!(r.status, Status::INFO_LENGTH_MISMATCH);
    assert!(spy(|s| s.seen.iter().any(|x| x.major == 0x0c)), "the IRP went down");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Directory requests are neither I/O on the file systems' volume devices (no `DO_BUFFERED_IO`,
/// no `DO_DIRECT_IO`): Windows' `BuildQueryDirectoryIrp` and `NtNotifyChangeDirectoryFileEx` give
/// them the caller's buffer as `UserBuffer` and set `IRP_INPUT_OPERATION` only with
/// `IRP_BUFFERED_IO`; the query is `IRP_DEFER_IO_COMPLETION`.
#[test]
fn directory_requests_are_neither_io_without_an_input_operation_flag() {
    const BUFFERED_IO: u32 = 0x10;
    const INPUT_OPERATION: u32 = 0x40;
    const DEFER_IO_COMPLETION: u32 = 0x800;
    let mut m = machine_with_spy(37);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("d\\f.txt", b"0123456789"));
    m.boot();
    let d = m.open(c, "d", CreateOptions::open().options(co::DIRECTORY_FILE)).unwrap();
    spy(|s| s.seen.clear());
    assert_eq!(m.query_directory(d, fi::NAMES, None, true, 4096).status, Status::SUCCESS);
    let query = spy(|s| s.seen.iter().find(|x| x.major == 0x0c).cloned()).unwrap();
    assert!(query.user_buffer && !query.system_buffer && !query.mdl, "{query:?}");
    assert_eq!(query.irp_flags & (BUFFERED_IO | INPUT_OPERATION), 0, "{query:?}");
    assert_eq!(query.irp_flags & DEFER_IO_COMPLETION, DEFER_IO_COMPLETION, "{query:?}");
    spy(|s| s.seen.clear());
    let notify = m.io(IoRequest::NotifyChangeDirectory {
        handle: d,
        filter: 0x1,
        watch_tree: false,
        length: 512,
    });
    assert_eq!(notify.status, Status::PENDING);
    let seen = spy(|s| s.seen.iter().find(|x| x.major == 0x0c).cloned()).unwrap();
    assert_eq!(seen.minor, 0x02);
    assert!(seen.user_buffer && !seen.system_buffer && !seen.mdl, "{seen:?}");
    assert_eq!(seen.irp_flags & (BUFFERED_IO | INPUT_OPERATION | DEFER_IO_COMPLETION), 0);
    m.close_handle(d);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `IoCreateFile` refuses `FILE_SYNCHRONOUS_IO_ALERT` with `FILE_SYNCHRONOUS_IO_NONALERT`
/// (`STATUS_INVALID_PARAMETER`, no IRP). The simulator implies `FILE_SYNCHRONOUS_IO_NONALERT`
/// only when the caller passed neither flag, so a caller's `FILE_SYNCHRONOUS_IO_ALERT` alone
/// opens an alertable synchronous file object, and the create IRP carries that flag only.
#[test]
fn the_synchronous_create_flags_are_exclusive_and_alert_alone_is_kept() {
    const ALERT: u32 = 0x10;
    const NONALERT: u32 = 0x20;
    let mut m = machine_with_spy(38);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    spy(|s| s.seen.clear());
    let both = m.create(c, "f.txt", CreateOptions::open().options(ALERT | NONALERT));
    assert_eq!(both.status, Status::INVALID_PARAMETER);
    assert!(both.handle.is_none() && spy(|s| s.seen.is_empty()), "no create IRP");
    let options_of_create = || {
        let create = spy(|s| s.seen.iter().find(|x| x.major == 0).cloned()).unwrap();
        u32::from_le_bytes(create.parameters[8..12].try_into().unwrap()) & 0x00FF_FFFF
    };
    for (asked, expected) in [(ALERT, ALERT), (NONALERT, NONALERT), (0, NONALERT)] {
        spy(|s| s.seen.clear());
        let h = m.open(c, "f.txt", CreateOptions::open().options(asked)).unwrap();
        assert_eq!(options_of_create() & (ALERT | NONALERT), expected, "asked {asked:#x}");
        let mode = m.query_information(h, fi::MODE, 4);
        assert_eq!(mode.status, Status::SUCCESS);
        assert_eq!(u32::from_le_bytes(mode.data[..4].try_into().unwrap()) & 0x30, expected);
        assert_eq!(m.close_handle(h), Status::SUCCESS);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtReadFile` / `NtWriteFile` set `IRP_NOCACHE` on every IRP for a file object opened with
/// `FILE_NO_INTERMEDIATE_BUFFERING` (`FO_NO_INTERMEDIATE_BUFFERING`; the Windows Research
/// Kernel), so such a file never has its caching initiated and is never offered to fast I/O.
#[test]
fn a_file_opened_without_intermediate_buffering_gets_noncached_irps() {
    let mut m = machine_with_spy(33);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.bin", &[5u8; 2048]));
    m.boot();
    let options = CreateOptions::open().options(co::NO_INTERMEDIATE_BUFFERING);
    let h = m.open(c, "f.bin", options).unwrap();
    for _ in 0..2 {
        spy(|s| s.seen.clear());
        let r = m.read(h, Some(0), 512, IoMode::Cached);
        assert_eq!((r.status, r.fast_io), (Status::SUCCESS, false));
        let seen = spy(|s| std::mem::take(&mut s.seen));
        assert!(seen.iter().all(|s| !s.fast_io), "never offered to fast I/O: {seen:?}");
        let read = seen.iter().rfind(|x| x.major == 0x03).unwrap();
        assert_eq!(read.irp_flags & 0x1, 0x1, "IRP_NOCACHE: {read:?}");
    }
    spy(|s| s.seen.clear());
    let w = m.write(h, Some(512), &[1u8; 512], IoMode::Cached);
    assert_eq!((w.status, w.fast_io), (Status::SUCCESS, false));
    let write = spy(|s| s.seen.iter().rfind(|x| x.major == 0x04).cloned()).unwrap();
    assert_eq!(write.irp_flags & 0x1, 0x1, "IRP_NOCACHE: {write:?}");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `IoCreateFile` checks a user-mode caller's parameters before any file object or IRP (the
/// Windows Research Kernel; the `ZwCreateFile` reference page for the options compatible with
/// `FILE_DIRECTORY_FILE`): share bits past `FILE_SHARE_VALID_FLAGS`, option bits past
/// `FILE_VALID_OPTION_FLAGS`, `FILE_DELETE_ON_CLOSE` without `DELETE`, `FILE_DIRECTORY_FILE`
/// with a non-directory option (sequential, random access, no intermediate buffering), and
/// `FILE_NO_INTERMEDIATE_BUFFERING` with `FILE_APPEND_DATA` are `STATUS_INVALID_PARAMETER`, and no
/// filter sees a create.
#[test]
fn the_io_manager_refuses_invalid_create_parameters_before_any_irp() {
    use fsfilter_sim::nt::access;
    let mut m = machine_with_spy(34);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789").file("\\d\\", b""),
    );
    m.boot();
    let rw = access::FILE_READ_DATA | access::FILE_WRITE_DATA | access::SYNCHRONIZE;
    let cases = [
        ("f.txt", CreateOptions::open().share(0x8)),
        ("f.txt", CreateOptions::open().options(0x0100_0000)),
        ("f.txt", CreateOptions::open().access(rw).options(co::DELETE_ON_CLOSE)),
        ("d", CreateOptions::directory().options(co::DIRECTORY_FILE | co::SEQUENTIAL_ONLY)),
        ("d", CreateOptions::directory().options(co::DIRECTORY_FILE | co::RANDOM_ACCESS)),
        (
            "d",
            CreateOptions::directory()
                .access(access::FILE_LIST_DIRECTORY)
                .options(co::DIRECTORY_FILE | co::NO_INTERMEDIATE_BUFFERING),
        ),
        (
            "f.txt",
            CreateOptions::open()
                .access(access::FILE_READ_DATA | access::FILE_APPEND_DATA)
                .options(co::NO_INTERMEDIATE_BUFFERING),
        ),
    ];
    for (path, options) in cases {
        spy(|s| s.seen.clear());
        let r = m.create(c, path, options);
        assert_eq!(r.status, Status::INVALID_PARAMETER, "{path} {options:?}");
        assert!(r.handle.is_none());
        assert!(spy(|s| s.seen.is_empty()), "no create IRP for {path} {options:?}");
    }
    // What the checks allow still opens.
    let ok = [
        ("d", CreateOptions::directory().options(co::DIRECTORY_FILE | co::WRITE_THROUGH)),
        ("f.txt", CreateOptions::open().options(co::NO_INTERMEDIATE_BUFFERING)),
        ("f.txt", CreateOptions::open().options(co::DELETE_ON_CLOSE)),
    ];
    for (path, options) in ok {
        let h = m.open(c, path, options.share(7)).unwrap();
        assert_eq!(m.close_handle(h), Status::SUCCESS);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtFsControlFile` / `NtDeviceIoControlFile` (`IopXxxControlFile` in the Windows Research
/// Kernel): `METHOD_BUFFERED` with no input and no output has no system buffer and no buffering
/// flags, and with an output its `UserBuffer` is the caller's output buffer (the completion
/// copies back to it); `METHOD_IN_DIRECT` / `OUT_DIRECT` have a system buffer only for an input
/// and an MDL only for an output.
#[test]
fn control_requests_carry_only_the_buffers_their_method_and_lengths_call_for() {
    const BUFFERED_IO: u32 = 0x10;
    const DEALLOCATE_BUFFER: u32 = 0x20;
    const INPUT_OPERATION: u32 = 0x40;
    // CTL_CODE(FILE_DEVICE_DISK, 0x999, METHOD_OUT_DIRECT, FILE_ANY_ACCESS): an unknown code.
    const OUT_DIRECT: u32 = 0x0007_2666;
    let mut m = machine_with_spy(35);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    let h = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    let mut send = |fsctl: bool, code: u32, input: &[u8], output_length: usize| {
        spy(|s| s.seen.clear());
        let _ = if fsctl {
            m.io(IoRequest::Fsctl { handle: h, code, input, output_length })
        } else {
            m.io(IoRequest::DeviceControl { handle: h, code, input, output_length })
        };
        let major = if fsctl { 0x0d } else { 0x0e };
        spy(|s| s.seen.iter().find(|x| x.major == major).cloned()).unwrap()
    };
    let none = send(true, fsctl::IS_VOLUME_MOUNTED, &[], 0);
    assert!(!none.system_buffer && !none.user_buffer && !none.mdl, "{none:?}");
    assert_eq!(none.irp_flags & (BUFFERED_IO | DEALLOCATE_BUFFER | INPUT_OPERATION), 0);
    let out = send(true, fsctl::IS_VOLUME_MOUNTED, &[], 16);
    assert!(out.system_buffer && out.user_buffer, "{out:?}");
    let all = BUFFERED_IO | DEALLOCATE_BUFFER | INPUT_OPERATION;
    assert_eq!(out.irp_flags & all, all);
    let direct = send(false, OUT_DIRECT, &[], 0);
    assert!(!direct.system_buffer && !direct.mdl, "{direct:?}");
    assert_eq!(direct.irp_flags & (BUFFERED_IO | DEALLOCATE_BUFFER), 0);
    let direct = send(false, OUT_DIRECT, &[1, 2, 3, 4], 32);
    assert!(direct.system_buffer && direct.mdl, "{direct:?}");
    assert_eq!(
        direct.irp_flags & (BUFFERED_IO | DEALLOCATE_BUFFER),
        BUFFERED_IO | DEALLOCATE_BUFFER
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// WRK's `IopXxxControlFile` passes the handle's data access down in the stack location's flags:
/// `SL_READ_ACCESS_GRANTED` with `FILE_READ_DATA`, `SL_WRITE_ACCESS_GRANTED` with
/// `FILE_WRITE_DATA`, for a file-system or a device control alike (so that a driver can check
/// the access of a code defined as `FILE_ANY_ACCESS`). Until December 7 neither was set.
#[test]
fn control_requests_say_which_data_access_the_handle_has() {
    const SL_READ_ACCESS_GRANTED: u8 = 0x01;
    const SL_WRITE_ACCESS_GRANTED: u8 = 0x04;
    const GENERIC_READ: u32 = 0x8000_0000;
    const GENERIC_WRITE: u32 = 0x4000_0000;
    let mut m = machine_with_spy(36);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    let both = SL_READ_ACCESS_GRANTED | SL_WRITE_ACCESS_GRANTED;
    let cases = [
        (GENERIC_READ | GENERIC_WRITE, both),
        (GENERIC_READ, SL_READ_ACCESS_GRANTED),
        (GENERIC_WRITE, SL_WRITE_ACCESS_GRANTED),
    ];
    for (access, expected) in cases {
        let h = m.open(c, "f.txt", CreateOptions::open().access(access)).unwrap();
        for fsctl in [true, false] {
            spy(|s| s.seen.clear());
            let code = fsctl::IS_VOLUME_MOUNTED;
            let _ = if fsctl {
                m.io(IoRequest::Fsctl { handle: h, code, input: &[], output_length: 0 })
            } else {
                m.io(IoRequest::DeviceControl { handle: h, code, input: &[], output_length: 0 })
            };
            let major = if fsctl { 0x0d } else { 0x0e };
            let seen = spy(|s| s.seen.iter().find(|x| x.major == major).cloned()).unwrap();
            assert_eq!(seen.sl_flags & both, expected, "{access:#x} {fsctl}");
        }
        m.close_handle(h);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtReadFile` / `NtWriteFile` check a transfer on a file object opened without intermediate
/// buffering against the sector size of the device its requests go to before building anything:
/// a length, or an offset the caller gave, that is not a multiple of it is
/// `STATUS_INVALID_PARAMETER` and no filter sees the request (the Windows Research Kernel; the
/// file system's own check stays for kernel-mode callers).
#[test]
fn an_unaligned_transfer_on_an_unbuffered_file_is_refused_before_any_irp() {
    let mut m = machine_with_spy(36);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.bin", &[5u8; 2048]));
    m.boot();
    let options = CreateOptions::open().options(co::NO_INTERMEDIATE_BUFFERING);
    let h = m.open(c, "f.bin", options).unwrap();
    let requests = [
        IoRequest::Read { handle: h, offset: Some(0), length: 100, mode: IoMode::Cached },
        IoRequest::Read { handle: h, offset: Some(100), length: 512, mode: IoMode::Cached },
        IoRequest::Write { handle: h, offset: Some(0), data: &[1u8; 100], mode: IoMode::Cached },
        IoRequest::Write { handle: h, offset: Some(7), data: &[1u8; 512], mode: IoMode::NonCached },
    ];
    for request in requests {
        spy(|s| s.seen.clear());
        let r = m.io(request.clone());
        assert_eq!(r.status, Status::INVALID_PARAMETER, "{request:?}");
        assert!(spy(|s| s.seen.is_empty()), "no IRP for {request:?}");
    }
    let r = m.read(h, Some(512), 512, IoMode::Cached);
    assert_eq!((r.status, r.information), (Status::SUCCESS, 512));
    assert_eq!(m.file_contents(c, "f.bin").unwrap(), vec![5u8; 2048]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// WRK's `NtReadFile` tests the low part of any offset its caller gives against the sector
/// mask on a file opened without intermediate buffering, before it takes the file object's lock:
/// `FILE_USE_FILE_POINTER_POSITION` (low part 0xFFFFFFFE) is refused there. `NtWriteFile` lets
/// `FILE_WRITE_TO_END_OF_FILE` through, and `FILE_USE_FILE_POINTER_POSITION` on a synchronous
/// file object.
#[test]
fn an_unbuffered_read_refuses_the_file_pointer_offset_a_write_takes() {
    const USE_FILE_POINTER: u64 = 0xFFFF_FFFF_FFFF_FFFE;
    const TO_END_OF_FILE: u64 = u64::MAX;
    let mut m = machine_with_spy(38);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.bin", &[5u8; 1024]));
    m.boot();
    let options = CreateOptions::open().options(co::NO_INTERMEDIATE_BUFFERING);
    let h = m.open(c, "f.bin", options).unwrap();
    spy(|s| s.seen.clear());
    let r = m.read(h, Some(USE_FILE_POINTER), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::INVALID_PARAMETER);
    assert!(spy(|s| s.seen.is_empty()), "no IRP");
    let write = |offset| IoRequest::Write {
        handle: h,
        offset: Some(offset),
        data: &[9u8; 512],
        mode: IoMode::NonCached,
    };
    assert_eq!(m.io(write(USE_FILE_POINTER)).status, Status::SUCCESS);
    assert_eq!(m.io(write(TO_END_OF_FILE)).status, Status::SUCCESS);
    let mut expected = vec![9u8; 512];
    expected.extend([5u8; 512]);
    expected.extend([9u8; 512]);
    assert_eq!(m.file_contents(c, "f.bin").unwrap(), expected);
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `NtUnlockFile` builds `IRP_MN_UNLOCK_SINGLE` with no stack-location flags: `SL_FAIL_IMMEDIATELY`
/// and `SL_EXCLUSIVE_LOCK` are `NtLockFile`'s, set from its `FailImmediately` and `ExclusiveLock`
/// arguments (the Windows Research Kernel), and an unlock has neither.
#[test]
fn an_unlock_request_carries_no_lock_flags() {
    const SL_FAIL_IMMEDIATELY: u8 = 0x1;
    const SL_EXCLUSIVE_LOCK: u8 = 0x2;
    let mut m = machine_with_spy(37);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    let h = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    let lock = IoRequest::Lock {
        handle: h,
        offset: 0,
        length: 4,
        exclusive: true,
        fail_immediately: true,
    };
    assert_eq!(m.io(lock).status, Status::SUCCESS);
    spy(|s| s.seen.clear());
    assert_eq!(m.io(IoRequest::Unlock { handle: h, offset: 0, length: 4 }).status, Status::SUCCESS);
    let unlock = spy(|s| s.seen.iter().find(|x| x.major == 0x11 && !x.fast_io).cloned()).unwrap();
    assert_eq!(unlock.minor, 0x2, "IRP_MN_UNLOCK_SINGLE");
    assert_eq!(unlock.sl_flags & (SL_FAIL_IMMEDIATELY | SL_EXCLUSIVE_LOCK), 0, "{unlock:?}");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The cleanup the I/O manager sends when a user-mode caller closes its handle is its own
/// request, `RequestorMode` kernel (the Windows Research Kernel's `IopCloseFile`), as the close
/// after it is (`IopDeleteFile`); the caller's reads and writes are user-mode requests.
#[test]
fn the_cleanup_of_a_closed_handle_is_a_kernel_mode_request() {
    let mut m = machine_with_spy(38);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    m.boot();
    spy(|s| s.refuse_fast_io = true);
    let h = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    spy(|s| s.seen.clear());
    assert_eq!(m.read(h, Some(0), 4, IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    let seen = spy(|s| std::mem::take(&mut s.seen));
    let mode = |major: u8| seen.iter().find(|x| x.major == major && !x.fast_io).unwrap();
    assert_eq!(mode(0x03).requestor_mode, 1, "the read is the caller's");
    assert_eq!(mode(0x12).requestor_mode, 0, "IRP_MJ_CLEANUP: {:?}", mode(0x12));
    assert_eq!(mode(0x02).requestor_mode, 0, "IRP_MJ_CLOSE");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_flush_needs_write_or_append_access_but_only_write_on_a_named_pipe() {
    // WRK's `NtFlushBuffersFile`: FILE_WRITE_DATA or FILE_APPEND_DATA, except on a named pipe,
    // where the append bit is FILE_CREATE_PIPE_INSTANCE and does not count.
    const WRITE_DATA: u32 = 0x2;
    const APPEND_DATA: u32 = 0x4;
    const READ_DATA: u32 = 0x1;
    let mut m = machine(70);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("log.txt", b"log"));
    let p = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    m.boot();
    let flush = |m: &mut Machine, h| m.io(IoRequest::Flush { handle: h }).status;
    let append = m.open(c, "log.txt", CreateOptions::open().access(APPEND_DATA)).unwrap();
    assert_eq!(flush(&mut m, append), Status::SUCCESS, "append access flushes a file");
    let read = m.open(c, "log.txt", CreateOptions::open().access(READ_DATA)).unwrap();
    assert_eq!(flush(&mut m, read), Status::ACCESS_DENIED);
    let server = m.open(p, "pipe", CreateOptions::default()).unwrap();
    let instance = m.open(p, "pipe", CreateOptions::open().access(APPEND_DATA)).unwrap();
    assert_eq!(flush(&mut m, instance), Status::ACCESS_DENIED, "not on a pipe");
    let writer = m.open(p, "pipe", CreateOptions::open().access(WRITE_DATA)).unwrap();
    assert_eq!(flush(&mut m, writer), Status::SUCCESS);
    for h in [append, read, server, instance, writer] {
        m.close_handle(h);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
