//! Named data streams (docs/simulator.md, "Named data streams"): `file:stream`,
//! `file:stream:$DATA` and `file::$DATA` on NTFS and ReFS, each named stream a stream of its own
//! (its own FsContext, share access, size and bytes); their deletion, the file's deletion and
//! overwrite; the file systems without named streams refusing the syntax.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the shared test drivers poke kernel structures directly, as C drivers do"
)]

mod common;

use common::machine;
use fsfilter::Status;
use fsfilter_sim::nt::{access, create_options as co, create_result as cr, disposition};
use fsfilter_sim::nt::{file_info as fi, share};
use fsfilter_sim::{CreateOptions, FsKind, Handle, IoMode, Machine, VolumeId, VolumeSpec};

fn volume(kind: FsKind) -> (Machine, VolumeId) {
    let mut m = machine(7);
    let c = m.add_volume(
        VolumeSpec::new("C:", kind)
            .file("\\f.txt", b"default")
            .file("\\sub\\", b"")
            .file("\\other.txt", b"other"),
    );
    m.boot();
    (m, c)
}

fn write(m: &mut Machine, c: VolumeId, path: &str, data: &[u8]) {
    let h = m.open(c, path, CreateOptions::default()).unwrap();
    assert_eq!(m.write(h, Some(0), data, IoMode::Cached).status, Status::SUCCESS, "{path}");
    m.close_handle(h);
}

fn read(m: &mut Machine, c: VolumeId, path: &str) -> Result<Vec<u8>, Status> {
    let h = m.open(c, path, CreateOptions::open().access(access::GENERIC_READ))?;
    let r = m.read(h, Some(0), 256, IoMode::Cached);
    m.close_handle(h);
    match r.status {
        Status::SUCCESS => Ok(r.data),
        Status::END_OF_FILE => Ok(Vec::new()),
        s => Err(s),
    }
}

fn query(m: &mut Machine, h: Handle, class: u32, length: usize) -> Vec<u8> {
    let r = m.query_information(h, class, length);
    assert_eq!(r.status, Status::SUCCESS);
    r.data
}

fn name_of(m: &mut Machine, h: Handle) -> String {
    let d = query(m, h, fi::NAME, 512);
    let len = u32::from_le_bytes(d[..4].try_into().unwrap()) as usize;
    let units: Vec<u16> =
        d[4..4 + len].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

/// The `FsContext` of a handle's file object.
fn fs_context(m: &mut Machine, h: Handle) -> usize {
    m.kernel(|k| {
        let fo = k.user_handle(h).unwrap().fo;
        // SAFETY: the handle's live file object.
        unsafe { (*(fo as *const windows_sys::Wdk::Foundation::FILE_OBJECT)).FsContext as usize }
    })
}

fn delete(m: &mut Machine, c: VolumeId, path: &str) {
    let h = m.open(c, path, CreateOptions::open()).unwrap();
    assert_eq!(m.set_information(h, fi::DISPOSITION, &[1]).status, Status::SUCCESS, "{path}");
    m.close_handle(h);
}

#[test]
fn a_named_stream_is_a_stream_of_its_own_with_the_files_attributes_and_index() {
    // Learn, "File Streams (Local File Systems)": each stream has its own sizes; no stream has
    // file times of its own. MS-FSCC 5.1: `file::$DATA` is the default stream; the type is
    // `$DATA`; names are compared case-insensitively.
    for kind in [FsKind::Ntfs, FsKind::Refs] {
        let (mut m, c) = volume(kind);
        write(&mut m, c, "f.txt:one", b"first stream");
        write(&mut m, c, "f.txt:Two:$DATA", b"second");
        assert_eq!(read(&mut m, c, "f.txt").unwrap(), b"default", "{kind:?}");
        assert_eq!(read(&mut m, c, "F.TXT:ONE").unwrap(), b"first stream", "{kind:?}");
        assert_eq!(read(&mut m, c, "f.txt:one:$data").unwrap(), b"first stream");
        assert_eq!(read(&mut m, c, "f.txt:two").unwrap(), b"second", "{kind:?}");
        assert_eq!(read(&mut m, c, "f.txt::$DATA").unwrap(), b"default", "{kind:?}");
        assert_eq!(m.file_contents(c, "f.txt:two").unwrap(), b"second");
        // Each stream its own FCB and size; the file's index.
        let o = CreateOptions::open().access(access::GENERIC_READ);
        let f = m.open(c, "f.txt", o).unwrap();
        let s = m.open(c, "f.txt:one", o).unwrap();
        let size = |d: &[u8]| i64::from_le_bytes(d[8..16].try_into().unwrap());
        assert_eq!(size(&query(&mut m, f, fi::STANDARD, 24)), 7);
        assert_eq!(size(&query(&mut m, s, fi::STANDARD, 24)), 12);
        assert_eq!(query(&mut m, f, fi::INTERNAL, 8), query(&mut m, s, fi::INTERNAL, 8));
        assert_eq!(query(&mut m, f, fi::BASIC, 40), query(&mut m, s, fi::BASIC, 40));
        assert_ne!(
            fs_context(&mut m, f),
            fs_context(&mut m, s),
            "{kind:?}: one FsContext per stream"
        );
        // FileNameInformation names the stream.
        assert_eq!(name_of(&mut m, s), "\\f.txt:one");
        assert_eq!(name_of(&mut m, f), "\\f.txt");
        m.close_handle(f);
        m.close_handle(s);
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}

#[test]
fn a_missing_stream_is_not_found_and_a_stream_of_a_missing_file_creates_the_file() {
    let (mut m, c) = volume(FsKind::Ntfs);
    assert_eq!(
        m.create(c, "f.txt:nope", CreateOptions::open()).status,
        Status::OBJECT_NAME_NOT_FOUND
    );
    let overwrite = CreateOptions::open().disposition(disposition::OVERWRITE);
    assert_eq!(m.create(c, "f.txt:nope", overwrite).status, Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(
        m.create(c, "new.txt:s", CreateOptions::open()).status,
        Status::OBJECT_NAME_NOT_FOUND
    );
    assert!(m.file_contents(c, "new.txt").is_none());
    let r = m.create(c, "new.txt:s", CreateOptions::create());
    assert_eq!((r.status, r.information), (Status::SUCCESS, cr::CREATED));
    m.close_handle(r.handle.unwrap());
    assert_eq!(m.file_contents(c, "new.txt").unwrap(), b"", "the file was created too");
    assert_eq!(m.file_contents(c, "new.txt:s").unwrap(), b"");
    // FILE_CREATE of an existing stream collides; FILE_OPEN_IF opens it.
    let r = m.create(c, "new.txt:S", CreateOptions::create());
    assert_eq!(r.status, Status::OBJECT_NAME_COLLISION);
    let r = m.create(c, "new.txt:S", CreateOptions::default());
    assert_eq!((r.status, r.information), (Status::SUCCESS, cr::OPENED));
    m.close_handle(r.handle.unwrap());
    // A path through a missing directory.
    assert_eq!(
        m.create(c, "no\\x:s", CreateOptions::default()).status,
        Status::OBJECT_PATH_NOT_FOUND
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn stream_syntax_other_than_data_streams_is_an_invalid_name() {
    let (mut m, c) = volume(FsKind::Ntfs);
    for bad in [
        "f.txt:",
        "f.txt:s:",
        "f.txt:s:$BITMAP",
        "f.txt::$INDEX_ALLOCATION",
        ":s",
        "f.txt:a:$DATA:b",
        "f.txt:a/b",
    ] {
        let r = m.create(c, bad, CreateOptions::default());
        assert_eq!(r.status, Status::OBJECT_NAME_INVALID, "{bad}");
    }
    // Only the last component may name a stream.
    let r = m.create(c, "sub:s\\x.txt", CreateOptions::default());
    assert_eq!(r.status, Status::OBJECT_NAME_INVALID);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_stream_name_may_have_the_wildcards_and_quotes_a_file_name_may_not() {
    // WinBtrfs's test suite (src/tests/streams.cpp, "Create stream with unusual name"), which
    // states NTFS's answers: a stream name may have `<`, `>`, `"`, `|`, `?` and `*`; `/` and
    // `:` are invalid (STATUS_OBJECT_NAME_INVALID), and so is a name of 256 characters.
    let (mut m, c) = volume(FsKind::Ntfs);
    let o = CreateOptions::default().disposition(disposition::CREATE);
    for (i, ch) in ['<', '>', '"', '|', '?', '*'].into_iter().enumerate() {
        let name = format!("f.txt:s{i}{ch}");
        let r = m.create(c, &name, o);
        assert_eq!((r.status, r.information), (Status::SUCCESS, cr::CREATED), "{name}");
        m.close_handle(r.handle.unwrap());
    }
    let long = format!("f.txt:{}", "x".repeat(255));
    let r = m.create(c, &long, o);
    assert_eq!(r.status, Status::SUCCESS);
    m.close_handle(r.handle.unwrap());
    let longer = format!("f.txt:{}", "x".repeat(256));
    assert_eq!(m.create(c, &longer, o).status, Status::OBJECT_NAME_INVALID);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn file_systems_without_named_streams_refuse_the_syntax() {
    // FastFat's FatCommonCreate checks the final name with FatIsNameLongUnicodeValid (the HPFS
    // legal characters, no ':'): STATUS_OBJECT_NAME_INVALID. exFAT, CDFS and UDFS are refused
    // alike (choice for UDFS, whose media may have streams: the simulator's UDFS has none).
    for kind in [FsKind::Fat, FsKind::Exfat, FsKind::Cdfs, FsKind::Udfs] {
        let (mut m, c) = volume(kind);
        let o = CreateOptions::open().access(access::GENERIC_READ);
        for name in ["f.txt:s", "f.txt::$DATA", "sub:s"] {
            assert_eq!(m.create(c, name, o).status, Status::OBJECT_NAME_INVALID, "{kind:?}");
        }
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}

#[test]
fn share_access_is_per_stream_but_delete_access_checks_every_open_stream() {
    // Learn, "File Streams": share modes are maintained per stream; delete access asked on the
    // file is checked against every open stream, and one opened without FILE_SHARE_DELETE
    // refuses it.
    let (mut m, c) = volume(FsKind::Ntfs);
    write(&mut m, c, "f.txt:s", b"x");
    let exclusive = CreateOptions::open().access(access::GENERIC_READ).share(0);
    let f = m.open(c, "f.txt", exclusive).unwrap();
    let s = m.open(c, "f.txt:s", exclusive).unwrap();
    assert_eq!(m.create(c, "f.txt:s", exclusive).status, Status::SHARING_VIOLATION);
    assert_eq!(m.create(c, "f.txt", exclusive).status, Status::SHARING_VIOLATION);
    m.close_handle(f);
    let deleter = CreateOptions::open()
        .access(access::DELETE)
        .share(share::READ | share::WRITE | share::DELETE);
    assert_eq!(m.create(c, "f.txt", deleter).status, Status::SHARING_VIOLATION);
    m.close_handle(s);
    let shared =
        CreateOptions::open().access(access::GENERIC_READ).share(share::READ | share::DELETE);
    let s = m.open(c, "f.txt:s", shared).unwrap();
    let d = m.open(c, "f.txt", deleter).unwrap();
    m.close_handle(d);
    m.close_handle(s);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn deleting_a_named_stream_removes_only_that_stream() {
    let (mut m, c) = volume(FsKind::Ntfs);
    write(&mut m, c, "f.txt:a", b"a");
    write(&mut m, c, "f.txt:b", b"b");
    delete(&mut m, c, "f.txt:a");
    assert!(m.file_contents(c, "f.txt:a").is_none());
    assert_eq!(m.file_contents(c, "f.txt:b").unwrap(), b"b");
    assert_eq!(m.file_contents(c, "f.txt").unwrap(), b"default");
    assert_eq!(m.create(c, "f.txt:a", CreateOptions::open()).status, Status::OBJECT_NAME_NOT_FOUND);
    // A stream may be created again under the name.
    write(&mut m, c, "f.txt:A", b"again");
    assert_eq!(read(&mut m, c, "f.txt:a").unwrap(), b"again");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn deleting_the_file_removes_its_streams_and_waits_for_an_open_one() {
    let (mut m, c) = volume(FsKind::Ntfs);
    write(&mut m, c, "f.txt:a", b"a");
    delete(&mut m, c, "f.txt");
    assert!(m.file_contents(c, "f.txt").is_none());
    assert_eq!(m.create(c, "f.txt:a", CreateOptions::open()).status, Status::OBJECT_NAME_NOT_FOUND);
    // A file deleted with one of its streams open: it stays, pending delete, until that
    // stream's last cleanup; meanwhile no stream of it opens.
    write(&mut m, c, "other.txt:a", b"a");
    let s = m.open(c, "other.txt:a", CreateOptions::open()).unwrap();
    delete(&mut m, c, "other.txt");
    assert_eq!(m.file_contents(c, "other.txt").unwrap(), b"other");
    assert_eq!(m.create(c, "other.txt", CreateOptions::open()).status, Status::DELETE_PENDING);
    assert_eq!(m.create(c, "other.txt:b", CreateOptions::default()).status, Status::DELETE_PENDING);
    assert_eq!(m.read(s, Some(0), 8, IoMode::Cached).data, b"a");
    m.close_handle(s);
    assert!(m.file_contents(c, "other.txt").is_none());
    assert!(m.file_contents(c, "other.txt:a").is_none());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn an_overwrite_of_the_file_removes_its_streams_and_of_a_stream_truncates_only_it() {
    for d in [disposition::OVERWRITE, disposition::OVERWRITE_IF, disposition::SUPERSEDE] {
        let (mut m, c) = volume(FsKind::Ntfs);
        write(&mut m, c, "f.txt:a", b"aaa");
        write(&mut m, c, "f.txt:b", b"bbb");
        let r = m.create(c, "f.txt:a", CreateOptions::open().disposition(d));
        assert_eq!(r.status, Status::SUCCESS, "{d}");
        m.close_handle(r.handle.unwrap());
        assert_eq!(m.file_contents(c, "f.txt:a").unwrap(), b"", "{d}");
        assert_eq!(m.file_contents(c, "f.txt:b").unwrap(), b"bbb", "{d}");
        assert_eq!(m.file_contents(c, "f.txt").unwrap(), b"default", "{d}");
        // The file's overwrite: its named streams go with its data.
        let r = m.create(c, "f.txt", CreateOptions::open().disposition(d));
        assert_eq!(r.status, Status::SUCCESS, "{d}");
        m.close_handle(r.handle.unwrap());
        assert_eq!(m.file_contents(c, "f.txt").unwrap(), b"", "{d}");
        assert!(m.file_contents(c, "f.txt:a").is_none(), "{d}");
        assert!(m.file_contents(c, "f.txt:b").is_none(), "{d}");
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}

#[test]
fn an_overwrite_of_the_file_leaves_an_open_stream_pending_delete_until_its_last_cleanup() {
    // WinFsp's stream_create_overwrite test, which also runs against NTFS: with `file0:bar` open
    // (FILE_READ_ATTRIBUTES, no sharing), CREATE_ALWAYS of `file0` succeeds; `file0:foo` is gone
    // at once (ERROR_FILE_NOT_FOUND), an open of `file0:bar` fails (ERROR_ACCESS_DENIED, the
    // Win32 error of STATUS_DELETE_PENDING) until its handle closes, and then it is gone too.
    let attributes_only = CreateOptions::open().access(access::FILE_READ_ATTRIBUTES).share(0);
    let data = CreateOptions::open()
        .access(access::GENERIC_READ)
        .share(share::READ | share::WRITE | share::DELETE);
    for (d, held) in [
        (disposition::OVERWRITE_IF, attributes_only),
        (disposition::OVERWRITE, data),
        (disposition::SUPERSEDE, data),
    ] {
        let (mut m, c) = volume(FsKind::Ntfs);
        write(&mut m, c, "f.txt:foo", b"foo");
        write(&mut m, c, "f.txt:bar", b"bar");
        let s = m.open(c, "f.txt:bar", held).unwrap();
        let writer = CreateOptions::open()
            .access(access::GENERIC_READ | access::GENERIC_WRITE)
            .share(share::READ | share::WRITE)
            .disposition(d);
        let r = m.create(c, "f.txt", writer);
        assert_eq!(r.status, Status::SUCCESS, "{d}");
        // The stream pending delete is still listed until it goes (choice).
        let w = r.handle.unwrap();
        let e = stream_entries(&query(&mut m, w, fi::STREAM, 1024));
        assert_eq!(names(&e), ["::$DATA", ":bar:$DATA"], "{d}");
        m.close_handle(w);
        assert_eq!(m.file_contents(c, "f.txt").unwrap(), b"", "{d}");
        assert!(m.file_contents(c, "f.txt:foo").is_none(), "{d}");
        let again = CreateOptions::open().access(access::FILE_READ_ATTRIBUTES).share(0);
        assert_eq!(m.create(c, "f.txt:foo", again).status, Status::OBJECT_NAME_NOT_FOUND, "{d}");
        assert_eq!(m.create(c, "f.txt:bar", again).status, Status::DELETE_PENDING, "{d}");
        if held.access & access::GENERIC_READ != 0 {
            // Its handle still reads what it held (choice).
            assert_eq!(m.read(s, Some(0), 8, IoMode::Cached).data, b"bar", "{d}");
        }
        m.close_handle(s);
        assert_eq!(m.create(c, "f.txt:bar", again).status, Status::OBJECT_NAME_NOT_FOUND, "{d}");
        assert!(m.file_contents(c, "f.txt:bar").is_none(), "{d}");
        // A stream of the name may be created again.
        write(&mut m, c, "f.txt:bar", b"new");
        assert_eq!(read(&mut m, c, "f.txt:bar").unwrap(), b"new", "{d}");
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
    // A supersede implies DELETE, which every stream open for data without FILE_SHARE_DELETE
    // refuses (Learn, "File Streams"); an overwrite implies FILE_WRITE_DATA only (choice: the
    // supersede's check across streams; WinFsp makes it on the file's own stream only).
    let (mut m, c) = volume(FsKind::Ntfs);
    write(&mut m, c, "f.txt:bar", b"bar");
    let no_delete =
        CreateOptions::open().access(access::GENERIC_READ).share(share::READ | share::WRITE);
    let s = m.open(c, "f.txt:bar", no_delete).unwrap();
    let writer = CreateOptions::open()
        .access(access::GENERIC_READ | access::GENERIC_WRITE)
        .share(share::READ | share::WRITE | share::DELETE);
    let r = m.create(c, "f.txt", writer.disposition(disposition::SUPERSEDE));
    assert_eq!(r.status, Status::SHARING_VIOLATION);
    let r = m.create(c, "f.txt", writer.disposition(disposition::OVERWRITE));
    assert_eq!(r.status, Status::SUCCESS);
    m.close_handle(r.handle.unwrap());
    m.close_handle(s);
    assert!(m.file_contents(c, "f.txt:bar").is_none());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_directory_has_named_streams_but_no_default_data_stream_and_lists_no_streams() {
    // MS-FSCC 2.1.4: a directory has no default data stream but may have named streams.
    let (mut m, c) = volume(FsKind::Ntfs);
    write(&mut m, c, "sub:notes", b"dir stream");
    assert_eq!(read(&mut m, c, "sub:notes").unwrap(), b"dir stream");
    let r = m.create(c, "sub::$DATA", CreateOptions::open());
    assert_eq!(r.status, Status::FILE_IS_A_DIRECTORY);
    let as_dir = CreateOptions::open().options(co::DIRECTORY_FILE);
    assert_eq!(m.create(c, "sub:notes", as_dir).status, Status::NOT_A_DIRECTORY);
    write(&mut m, c, "f.txt:hidden", b"h");
    // No stream in a listing.
    let d = m.open(c, "\\", as_dir).unwrap();
    let r = m.query_directory(d, fi::NAMES, None, true, 4096);
    assert_eq!(r.status, Status::SUCCESS);
    let text: Vec<u16> = r.data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let text = String::from_utf16_lossy(&text);
    assert!(text.contains("f.txt") && !text.contains("hidden") && !text.contains("notes"));
    m.close_handle(d);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn oplocks_are_per_stream() {
    // Learn, "File Streams": "Opportunistic locks are maintained per stream." A Level 1 oplock on
    // the file is not broken by a stream's create and write; one on the stream breaks to Level 2
    // at another open of that stream, the file's still held.
    use fsfilter_sim::fs::oplock::{
        FILE_COMPLETE_IF_OPLOCKED, FILE_OPLOCK_BROKEN_TO_LEVEL_2, STATUS_OPLOCK_BREAK_IN_PROGRESS,
        code,
    };
    use fsfilter_sim::{EventKind, IoRequest, IoResult, RequestRef};
    let fsctl = |m: &mut Machine, handle: Handle, code: u32| -> IoResult {
        m.io(IoRequest::Fsctl { handle, code, input: &[], output_length: 0 })
    };
    let completed = |m: &Machine, io: Option<RequestRef>| {
        m.events().iter().find_map(|e| match &e.kind {
            EventKind::IoComplete { io: i, status, information, .. } if Some(*i) == io => {
                Some((*status, *information))
            }
            _ => None,
        })
    };
    let (mut m, c) = volume(FsKind::Ntfs);
    let hf = m.open(c, "f.txt", CreateOptions::open().overlapped()).unwrap();
    let on_file = fsctl(&mut m, hf, code::REQUEST_OPLOCK_LEVEL_1);
    assert_eq!(on_file.status, Status::PENDING);
    let s = m.open(c, "f.txt:s", CreateOptions::default()).unwrap();
    assert_eq!(m.write(s, Some(0), b"stream", IoMode::Cached).status, Status::SUCCESS);
    m.close_handle(s);
    assert_eq!(completed(&m, on_file.io), None, "the file's oplock is not broken");
    let hs = m.open(c, "f.txt:s", CreateOptions::open().overlapped()).unwrap();
    let on_stream = fsctl(&mut m, hs, code::REQUEST_OPLOCK_LEVEL_1);
    assert_eq!(on_stream.status, Status::PENDING);
    let r = m.create(c, "f.txt:s", CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED));
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    let broken = completed(&m, on_stream.io);
    assert_eq!(broken, Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)));
    assert_eq!(completed(&m, on_file.io), None, "the file's oplock is still held");
    m.close_handle(r.handle.unwrap());
    m.close_handle(hs);
    m.close_handle(hf);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_streams_overwrite_without_share_delete_breaks_the_files_batch_oplock() {
    // Learn, "Checking the Oplock State of an IRP_MJ_CREATE operation": the file system's own
    // check, where an operation on one stream breaks another's oplock: a supersede, overwrite or
    // overwrite-if of an alternate data stream without FILE_SHARE_DELETE breaks a Batch or
    // Filter oplock on the file's primary data stream. An open of the stream, or its overwrite
    // sharing deletes, leaves it.
    use fsfilter_sim::fs::oplock::{
        FILE_COMPLETE_IF_OPLOCKED, FILE_OPLOCK_BROKEN_TO_NONE, STATUS_OPLOCK_BREAK_IN_PROGRESS,
        code,
    };
    use fsfilter_sim::{EventKind, IoRequest, RequestRef};
    let completed = |m: &Machine, io: Option<RequestRef>| {
        m.events().iter().find_map(|e| match &e.kind {
            EventKind::IoComplete { io: i, status, information, .. } if Some(*i) == io => {
                Some((*status, *information))
            }
            _ => None,
        })
    };
    for d in [disposition::OVERWRITE, disposition::OVERWRITE_IF, disposition::SUPERSEDE] {
        let (mut m, c) = volume(FsKind::Ntfs);
        write(&mut m, c, "f.txt:s", b"stream");
        let hf = m.open(c, "f.txt", CreateOptions::open().overlapped()).unwrap();
        let code = code::REQUEST_BATCH_OPLOCK;
        let batch = m.io(IoRequest::Fsctl { handle: hf, code, input: &[], output_length: 0 });
        assert_eq!(batch.status, Status::PENDING);
        let quiet = CreateOptions::default().options(FILE_COMPLETE_IF_OPLOCKED);
        for o in [quiet.disposition(disposition::OPEN), quiet.disposition(d)] {
            let r = m.create(c, "f.txt:s", o);
            assert_eq!(r.status, Status::SUCCESS, "{d}");
            m.close_handle(r.handle.unwrap());
        }
        assert_eq!(completed(&m, batch.io), None, "{d}: not broken");
        let no_delete = quiet.share(share::READ | share::WRITE).disposition(d);
        let r = m.create(c, "f.txt:s", no_delete);
        assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS, "{d}");
        let broken = completed(&m, batch.io);
        assert_eq!(broken, Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE)), "{d}");
        m.close_handle(r.handle.unwrap());
        m.close_handle(hf);
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}

#[test]
fn a_directory_with_a_stream_open_below_it_cannot_be_renamed() {
    // As with a file open below it (fs_semantics.rs
    // a_directory_with_an_open_file_below_it_cannot_be_renamed): a handle on a named stream of a
    // file below the directory is a handle open below it.
    let mut m = machine(7);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\d\\f.txt", b"f"));
    m.boot();
    let s = m.open(c, "d\\f.txt:s", CreateOptions::default()).unwrap();
    let d = m.open(c, "d", CreateOptions::open().options(co::DIRECTORY_FILE)).unwrap();
    let name: Vec<u8> = "renamed".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut info = vec![0u8; 20];
    info[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
    info.extend_from_slice(&name);
    assert_eq!(m.set_information(d, fi::RENAME, &info).status, Status::ACCESS_DENIED);
    m.close_handle(s);
    assert_eq!(m.set_information(d, fi::RENAME, &info).status, Status::SUCCESS);
    m.close_handle(d);
    assert_eq!(m.file_contents(c, "renamed\\f.txt:s").unwrap(), b"");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The entries of a `FILE_STREAM_INFORMATION` buffer: (offset, name, size, allocation), checking
/// each `NextEntryOffset` (8-byte aligned, 0 on the last) and `StreamNameLength`.
fn stream_entries(data: &[u8]) -> Vec<(usize, String, i64, i64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) as usize;
        let i64_at = |o: usize| i64::from_le_bytes(data[o..o + 8].try_into().unwrap());
        let (next, len) = (u32_at(at), u32_at(at + 4));
        let units: Vec<u16> = data[at + 24..at + 24 + len]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.push((at, String::from_utf16(&units).unwrap(), i64_at(at + 8), i64_at(at + 16)));
        if next == 0 {
            assert_eq!(at + 24 + len, data.len(), "no bytes after the last entry");
            break;
        }
        assert_eq!(next % 8, 0, "entries are 8-byte aligned");
        assert!(next >= 24 + len);
        at += next;
    }
    out
}

fn names(entries: &[(usize, String, i64, i64)]) -> Vec<&str> {
    entries.iter().map(|e| e.1.as_str()).collect()
}

#[test]
fn stream_information_lists_the_default_stream_then_the_named_ones() {
    // MS-FSCC 2.4.43 (layout, 8-byte alignment), MS-FSA 2.1.5.12.29, FILE_STREAM_INFORMATION's
    // reference page ("::$DATA" for the default stream, ":Authors:$DATA" for a named one), the
    // WinBtrfs suite's streams.cpp (NTFS's answers: "::$DATA" then ":stream:$DATA", sizes, and
    // the same list queried through a stream's handle).
    let (mut m, c) = volume(FsKind::Ntfs);
    write(&mut m, c, "f.txt:one", b"abc");
    write(&mut m, c, "f.txt:Two", b"hello");
    let attrs = CreateOptions::open().access(access::FILE_READ_ATTRIBUTES);
    let f = m.open(c, "f.txt", attrs).unwrap();
    let r = m.query_information(f, fi::STREAM, 1024);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(r.information, r.data.len());
    let e = stream_entries(&r.data);
    assert_eq!(names(&e), ["::$DATA", ":one:$DATA", ":Two:$DATA"]);
    let sizes: Vec<(i64, i64)> = e.iter().map(|e| (e.2, e.3)).collect();
    assert_eq!(sizes, [(7, 4096), (3, 4096), (5, 4096)]);
    assert_eq!(e[1].0, 40, "the first entry (38 bytes) padded to 8");
    // Through a stream's handle: the file's streams.
    let s = m.open(c, "f.txt:two", attrs).unwrap();
    assert_eq!(m.query_information(s, fi::STREAM, 1024).data, r.data);
    m.close_handle(s);
    m.close_handle(f);
    // A file without named streams: its default stream alone, empty: sizes 0.
    let h = m.open(c, "new.txt", CreateOptions::create()).unwrap();
    let e = stream_entries(&query(&mut m, h, fi::STREAM, 1024));
    assert_eq!(e.iter().map(|e| (e.1.as_str(), e.2, e.3)).collect::<Vec<_>>(), [("::$DATA", 0, 0)]);
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_directorys_stream_information_has_its_named_streams_only() {
    // A directory has no default data stream (MS-FSCC 2.1.4): with no named stream the list is
    // empty, STATUS_SUCCESS and no byte (MS-FSA 2.1.5.12.29's loop over the file's streams; the
    // WinBtrfs suite, on NTFS, reads one all-zero entry from its zeroed buffer).
    let (mut m, c) = volume(FsKind::Ntfs);
    let dir = CreateOptions::open().access(access::FILE_READ_ATTRIBUTES);
    let d = m.open(c, "sub", dir).unwrap();
    let r = m.query_information(d, fi::STREAM, 1024);
    assert_eq!((r.status, r.information, r.data.len()), (Status::SUCCESS, 0, 0));
    write(&mut m, c, "sub:notes", b"n");
    let e = stream_entries(&query(&mut m, d, fi::STREAM, 1024));
    assert_eq!(names(&e), [":notes:$DATA"]);
    m.close_handle(d);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn stream_information_returns_the_entries_that_fit() {
    // MS-FSA 2.1.5.12.29: a buffer shorter than FILE_STREAM_INFORMATION is
    // STATUS_INFO_LENGTH_MISMATCH (the I/O manager's IopQueryOperationLength has the same size,
    // 32 on x64); an entry that does not fit whole, counting its alignment padding, stops the
    // list with STATUS_BUFFER_OVERFLOW, the entries before it returned.
    let (mut m, c) = volume(FsKind::Ntfs);
    write(&mut m, c, "f.txt:one", b"abc");
    let f = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    let r = m.query_information(f, fi::STREAM, 31);
    assert_eq!((r.status, r.io.is_none()), (Status::INFO_LENGTH_MISMATCH, true));
    // "::$DATA" is 24 + 14 = 38 bytes, ":one:$DATA" 24 + 20 = 44, at 40: 84 in all.
    let r = m.query_information(f, fi::STREAM, 32);
    assert_eq!((r.status, r.information), (Status::BUFFER_OVERFLOW, 0));
    for length in [38, 83] {
        let r = m.query_information(f, fi::STREAM, length);
        assert_eq!((r.status, r.information), (Status::BUFFER_OVERFLOW, 38), "{length}");
        assert_eq!(names(&stream_entries(&r.data[..38])), ["::$DATA"], "{length}");
    }
    let r = m.query_information(f, fi::STREAM, 84);
    assert_eq!((r.status, r.information), (Status::SUCCESS, 84));
    assert_eq!(names(&stream_entries(&r.data)), ["::$DATA", ":one:$DATA"]);
    m.close_handle(f);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn file_systems_without_named_streams_do_not_serve_stream_information() {
    // FastFat's FatCommonQueryInformation answers a class it does not serve with
    // STATUS_INVALID_PARAMETER; FileStreamInformation is not among those it serves.
    for kind in [FsKind::Fat, FsKind::Exfat] {
        let (mut m, c) = volume(kind);
        let f = m.open(c, "f.txt", CreateOptions::open()).unwrap();
        let r = m.query_information(f, fi::STREAM, 1024);
        assert_eq!(r.status, Status::INVALID_PARAMETER, "{kind:?}");
        m.close_handle(f);
    }
}

#[test]
fn a_stream_opens_relative_to_its_files_handle() {
    // WinFsp's stream_create_related test, which also runs against NTFS: NtCreateFile of ":foo"
    // with RootDirectory a handle to file0 creates file0's stream foo (STATUS_SUCCESS).
    let (mut m, c) = volume(FsKind::Ntfs);
    let rw = CreateOptions::open()
        .access(access::GENERIC_READ | access::GENERIC_WRITE)
        .share(share::READ | share::WRITE);
    let f = m.open(c, "f.txt", rw).unwrap();
    let create = CreateOptions::create().access(access::GENERIC_READ | access::GENERIC_WRITE);
    let r = m.create_relative(f, ":foo", create.share(0));
    assert_eq!((r.status, r.information), (Status::SUCCESS, cr::CREATED));
    let s = r.handle.unwrap();
    assert_eq!(m.write(s, Some(0), b"related", IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(name_of(&mut m, s), "\\f.txt:foo");
    assert_ne!(fs_context(&mut m, s), fs_context(&mut m, f));
    m.close_handle(s);
    assert_eq!(m.file_contents(c, "f.txt:foo").unwrap(), b"related");
    // Opened again relative to the file, with its type; the default stream so is the file.
    let r = m.create_relative(f, ":FOO:$DATA", CreateOptions::open().share(share::READ));
    assert_eq!((r.status, r.information), (Status::SUCCESS, cr::OPENED));
    let s = r.handle.unwrap();
    assert_eq!(m.read(s, Some(0), 16, IoMode::Cached).data, b"related");
    m.close_handle(s);
    let attrs = CreateOptions::open().access(access::FILE_READ_ATTRIBUTES);
    let r = m.create_relative(f, "::$DATA", attrs);
    assert_eq!(r.status, Status::SUCCESS);
    let d = r.handle.unwrap();
    assert_eq!(fs_context(&mut m, d), fs_context(&mut m, f));
    m.close_handle(d);
    // A missing stream, FILE_OPEN: not found. A name that is not a stream's, relative to a
    // file: STATUS_INVALID_PARAMETER, as before.
    let r = m.create_relative(f, ":none", CreateOptions::open());
    assert_eq!(r.status, Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(m.create_relative(f, "x.txt", attrs).status, Status::INVALID_PARAMETER);
    // Relative to a stream's own handle: refused (choice).
    let s = m.open(c, "f.txt:foo", attrs).unwrap();
    assert_eq!(m.create_relative(s, ":foo", attrs).status, Status::INVALID_PARAMETER);
    m.close_handle(s);
    m.close_handle(f);
    // Relative to a directory's handle: the directory's stream.
    let d = m.open(c, "sub", attrs).unwrap();
    let r = m.create_relative(d, ":notes", CreateOptions::default());
    assert_eq!((r.status, r.information), (Status::SUCCESS, cr::CREATED));
    m.close_handle(r.handle.unwrap());
    m.close_handle(d);
    assert!(m.file_contents(c, "sub:notes").is_some());
    // The file then deletes (WinFsp's test ends so).
    let delete_on_close =
        CreateOptions::open().options(co::DELETE_ON_CLOSE).share(share::READ | share::WRITE);
    let h = m.open(c, "f.txt", delete_on_close).unwrap();
    m.close_handle(h);
    assert!(m.file_contents(c, "f.txt").is_none());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn an_overwrite_of_the_file_asking_delete_breaks_its_streams_batch_and_filter_oplocks() {
    // Learn, "Checking the Oplock State of an IRP_MJ_CREATE operation", the second check across
    // streams (its full text as WinFsp's create.c quotes it): a supersede, overwrite or
    // overwrite-if of the primary data stream with DELETE access requested breaks the Batch or
    // Filter oplocks of every alternate data stream that has one. Without DELETE asked (an
    // overwrite's implied access has none) they are left; a supersede implies DELETE (choice).
    use fsfilter_sim::fs::oplock::{
        FILE_COMPLETE_IF_OPLOCKED, FILE_OPLOCK_BROKEN_TO_NONE, STATUS_OPLOCK_BREAK_IN_PROGRESS,
        code,
    };
    use fsfilter_sim::{EventKind, IoRequest, RequestRef};
    let completed = |m: &Machine, io: Option<RequestRef>| {
        m.events().iter().find_map(|e| match &e.kind {
            EventKind::IoComplete { io: i, status, information, .. } if Some(*i) == io => {
                Some((*status, *information))
            }
            _ => None,
        })
    };
    let rw = access::GENERIC_READ | access::GENERIC_WRITE;
    let quiet = CreateOptions::default().options(FILE_COMPLETE_IF_OPLOCKED).access(rw);
    for kind in [code::REQUEST_BATCH_OPLOCK, code::REQUEST_FILTER_OPLOCK] {
        for (d, extra, breaks) in [
            (disposition::OVERWRITE, 0, false),
            (disposition::OVERWRITE_IF, 0, false),
            (disposition::OVERWRITE, access::DELETE, true),
            (disposition::OVERWRITE_IF, access::DELETE, true),
            (disposition::SUPERSEDE, access::DELETE, true),
            (disposition::SUPERSEDE, 0, true),
        ] {
            let what = format!("{kind:#x} {d} {extra:#x}");
            let (mut m, c) = volume(FsKind::Ntfs);
            write(&mut m, c, "f.txt:s", b"stream");
            write(&mut m, c, "f.txt:t", b"other");
            let hs = m.open(c, "f.txt:s", CreateOptions::open().overlapped()).unwrap();
            let ht = m.open(c, "f.txt:t", CreateOptions::open().overlapped()).unwrap();
            let io = |m: &mut Machine, handle| {
                m.io(IoRequest::Fsctl { handle, code: kind, input: &[], output_length: 0 })
            };
            let (s, t) = (io(&mut m, hs), io(&mut m, ht));
            assert_eq!((s.status, t.status), (Status::PENDING, Status::PENDING), "{what}");
            let r = m.create(c, "f.txt", quiet.disposition(d).access(rw | extra));
            let broken = Some((Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE));
            if breaks {
                assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS, "{what}");
                assert_eq!((completed(&m, s.io), completed(&m, t.io)), (broken, broken), "{what}");
            } else {
                assert_eq!(r.status, Status::SUCCESS, "{what}");
                assert_eq!((completed(&m, s.io), completed(&m, t.io)), (None, None), "{what}");
            }
            // Either way the open streams are pending delete until their last cleanup.
            let again = m.create(c, "f.txt:s", CreateOptions::open());
            assert_eq!(again.status, Status::DELETE_PENDING, "{what}");
            for h in [r.handle.unwrap(), hs, ht] {
                m.close_handle(h);
            }
            assert!(m.file_contents(c, "f.txt:s").is_none(), "{what}");
            assert!(m.findings().is_empty(), "{what}: {:?}", m.findings());
        }
    }
}

#[test]
fn an_overwrite_asking_delete_waits_for_a_streams_batch_owner_before_the_share_check() {
    // The break comes before the delete check across streams, as a file's own Batch oplock's
    // does (oplocks.rs a_batch_oplock_breaks_before_the_share_check_and_close_pending_waits_for
    // _the_cleanup): the stream's owner shares nothing, acknowledges that it closes, closes,
    // and the overwrite then goes on, the stream gone at once (no handle left on it).
    use fsfilter_sim::fs::oplock::code;
    use fsfilter_sim::{EventKind, IoRequest};
    let (mut m, c) = volume(FsKind::Ntfs);
    write(&mut m, c, "f.txt:s", b"stream");
    let hs = m.open(c, "f.txt:s", CreateOptions::open().overlapped().share(0)).unwrap();
    let code = code::REQUEST_BATCH_OPLOCK;
    let batch = m.io(IoRequest::Fsctl { handle: hs, code, input: &[], output_length: 0 });
    assert_eq!(batch.status, Status::PENDING);
    m.schedule(5, move |m| {
        let ack = fsfilter_sim::fs::oplock::code::OPBATCH_ACK_CLOSE_PENDING;
        let r = m.io(IoRequest::Fsctl { handle: hs, code: ack, input: &[], output_length: 0 });
        assert_eq!(r.status, Status::SUCCESS);
    });
    m.schedule(20, move |m| {
        let _ = m.close_handle(hs);
    });
    let before = m.now_ms();
    let rwd = access::GENERIC_READ | access::GENERIC_WRITE | access::DELETE;
    let r =
        m.create(c, "f.txt", CreateOptions::open().disposition(disposition::OVERWRITE).access(rwd));
    assert_eq!((r.status, r.information), (Status::SUCCESS, cr::OVERWRITTEN));
    assert!(m.now_ms() >= before + 20, "waited for the owner's cleanup");
    let broke = m
        .events()
        .iter()
        .any(|e| matches!(&e.kind, EventKind::IoComplete { io, .. } if Some(*io) == batch.io));
    assert!(broke, "the stream's Batch oplock was broken");
    let gone = m.create(c, "f.txt:s", CreateOptions::open());
    assert_eq!(gone.status, Status::OBJECT_NAME_NOT_FOUND);
    m.close_handle(r.handle.unwrap());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
