//! Sections for data scanning (facts.md §6): `FsRtlCreateSectionForDataScan` over a file object,
//! views that are the file's bytes, the errors, references on the file object, the conflict hook.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the tests call kernel exports directly, as drivers do"
)]

mod common;

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::null_mut;

use common::machine;
use fsfilter::Status;
use fsfilter_kernel::ntos::{ZwClose, ZwMapViewOfSection, ZwUnmapViewOfSection};
use fsfilter_sim::sections::ConflictOp;
use fsfilter_sim::{
    CreateOptions, EventKind, Fault, FaultKind, FsKind, Handle, IoMode, Machine, VolumeSpec,
};
use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::FsRtlCreateSectionForDataScan;
use windows_sys::Wdk::System::SystemServices::ObfDereferenceObject;
use windows_sys::Win32::Foundation::HANDLE;

const PAGE_READONLY: u32 = 0x02;
const SEC_COMMIT: u32 = 0x0800_0000;
const SECTION_MAP_READ: u32 = 0x4;

fn fo_of(m: &Machine, h: Handle) -> *mut FILE_OBJECT {
    m.kernel(|k| k.user_handle(h).unwrap().fo as *mut FILE_OBJECT)
}

fn section(fo: *mut FILE_OBJECT) -> Result<(HANDLE, *mut c_void, i64), Status> {
    let mut h: HANDLE = null_mut();
    let mut object: *mut c_void = null_mut();
    let mut size = 0i64;
    // SAFETY: valid out pointers and a live file object.
    let s = Status(unsafe {
        FsRtlCreateSectionForDataScan(
            &mut h,
            &mut object,
            &mut size,
            fo,
            SECTION_MAP_READ,
            &fsfilter_kernel::datascan::section_attributes(),
            std::ptr::null(),
            PAGE_READONLY,
            SEC_COMMIT,
            0,
        )
    });
    if s.is_success() { Ok((h, object, size)) } else { Err(s) }
}

fn map(h: HANDLE) -> (*mut c_void, usize) {
    let mut base: *mut c_void = null_mut();
    let mut size = 0usize;
    // SAFETY: a section handle and valid out pointers.
    let s = unsafe {
        ZwMapViewOfSection(
            h,
            -1isize as HANDLE,
            &mut base,
            0,
            0,
            null_mut(),
            &mut size,
            2,
            0,
            PAGE_READONLY,
        )
    };
    assert_eq!(s, 0);
    (base, size)
}

/// Maps a view at a section offset (64 KiB aligned, the allocation granularity).
fn map_at(h: HANDLE, offset: i64) -> (*mut c_void, usize) {
    let mut base: *mut c_void = null_mut();
    let mut size = 0usize;
    let mut at = offset;
    // SAFETY: a section handle and valid in/out pointers.
    let s = unsafe {
        ZwMapViewOfSection(
            h,
            -1isize as HANDLE,
            &mut base,
            0,
            0,
            &mut at,
            &mut size,
            2,
            0,
            PAGE_READONLY,
        )
    };
    assert_eq!(s, 0);
    (base, size)
}

fn view(base: *mut c_void, n: usize) -> Vec<u8> {
    // SAFETY: a mapped view of at least `n` bytes.
    unsafe { std::slice::from_raw_parts(base.cast::<u8>(), n) }.to_vec()
}

fn closes(m: &Machine) -> usize {
    m.events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::IoStart { major, .. } if major.code() == 0x02))
        .count()
}

#[test]
fn a_section_maps_the_files_bytes_and_follows_writes() {
    let mut m = machine(21);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("scan.me", b"EICAR-ish content"));
    m.boot();
    let h = m.open(c, "scan.me", CreateOptions::open()).unwrap();
    let fo = fo_of(&m, h);
    let (sh, object, size) = section(fo).unwrap();
    assert_eq!(size, 17);
    assert!(!object.is_null());
    // SAFETY: the file object's section object pointers.
    let dso = unsafe { (*(*fo).SectionObjectPointer).DataSectionObject };
    assert_eq!(dso, object, "the stream has a data section now");
    let (base, vsize) = map(sh);
    assert_eq!(vsize, 4096, "page-rounded");
    assert_eq!(view(base, 17), b"EICAR-ish content");
    assert_eq!(view(base, 18)[17], 0, "zero past the end");
    // Writes show through the view.
    m.write(h, Some(0), b"eicar", IoMode::Cached);
    assert_eq!(view(base, 17), b"eicar-ish content");
    // Closing the user handle: cleanup now, but the close waits for the section's reference.
    m.close_handle(h);
    assert_eq!(closes(&m), 0);
    // SAFETY: our view, handle and object reference.
    unsafe {
        assert_eq!(ZwUnmapViewOfSection(-1isize as HANDLE, base), 0);
        assert_eq!(ZwClose(sh), 0);
    }
    assert_eq!(closes(&m), 0, "the pointer reference still holds the section");
    // SAFETY: the reference FsRtlCreateSectionForDataScan returned.
    unsafe { ObfDereferenceObject(object) };
    assert_eq!(closes(&m), 1, "the section went, and with it the file object's last reference");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_view_at_a_section_offset_follows_the_writes_to_the_bytes_it_shows() {
    // docs/simulator.md: writes to the file are copied into mapped views, as mapped views of
    // the cache are coherent. A view mapped at a section offset shows the file from there: a
    // write lands in it at its file offset less the view's, and a write before it does not.
    let mut m = machine(21);
    let mut contents = vec![b'.'; 70_000];
    contents[65_536..65_540].copy_from_slice(b"tail");
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("big.bin", &contents));
    m.boot();
    let h = m.open(c, "big.bin", CreateOptions::open()).unwrap();
    let (sh, object, _) = section(fo_of(&m, h)).unwrap();
    let (base, _) = map_at(sh, 65_536);
    assert_eq!(view(base, 4), b"tail");
    m.write(h, Some(0), b"HEAD", IoMode::Cached);
    assert_eq!(view(base, 4), b"tail", "a write before the view is not in it");
    m.write(h, Some(65_534), b"xxTAIL", IoMode::Cached);
    assert_eq!(view(base, 6), b"TAIL..", "a write across the view's start lands at its start");
    m.write(h, Some(69_998), b"zz", IoMode::Cached);
    assert_eq!(view(base, 70_000 - 65_536)[4_462..], *b"zz", "the last bytes of the file");
    m.close_handle(h);
    // SAFETY: our view, handle and object reference.
    unsafe {
        assert_eq!(ZwUnmapViewOfSection(-1isize as HANDLE, base), 0);
        assert_eq!(ZwClose(sh), 0);
        ObfDereferenceObject(object);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_section_offset_is_rounded_down_to_the_allocation_granularity() {
    // ZwMapViewOfSection's reference page: a SectionOffset that is not NULL is rounded down to
    // the allocation granularity (64 KiB), and the variable receives the offset of the view.
    let mut m = machine(21);
    let mut contents = vec![b'.'; 70_000];
    contents[65_536..65_540].copy_from_slice(b"tail");
    contents[65_636..65_640].copy_from_slice(b"mark");
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("big.bin", &contents));
    m.boot();
    let h = m.open(c, "big.bin", CreateOptions::open()).unwrap();
    let (sh, object, _) = section(fo_of(&m, h)).unwrap();
    let mut base: *mut c_void = null_mut();
    let mut size = 8usize;
    let mut at = 65_636i64;
    // SAFETY: a section handle and valid in/out pointers.
    let s = unsafe {
        ZwMapViewOfSection(
            sh,
            -1isize as HANDLE,
            &mut base,
            0,
            0,
            &mut at,
            &mut size,
            2,
            0,
            PAGE_READONLY,
        )
    };
    assert_eq!(s, 0);
    assert_eq!(at, 65_536, "the offset the view starts at");
    assert_eq!(view(base, 4), b"tail");
    assert_eq!(view(base, 104)[100..], *b"mark", "the bytes asked for are in the view");
    m.close_handle(h);
    // SAFETY: our view, handle and object reference.
    unsafe {
        assert_eq!(ZwUnmapViewOfSection(-1isize as HANDLE, base), 0);
        assert_eq!(ZwClose(sh), 0);
        ObfDereferenceObject(object);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_view_unmapped_or_a_handle_closed_above_passive_level_is_reported() {
    // ZwUnmapViewOfSection and ZwClose: IRQL = PASSIVE_LEVEL (their reference pages). A scan
    // section a filter drops in a post callback at DISPATCH_LEVEL would do both there
    // (docs/callback-model.md rule 16); both still happen.
    let mut m = machine(23);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("scan.me", b"content"));
    m.boot();
    let h = m.open(c, "scan.me", CreateOptions::open()).unwrap();
    let fo = fo_of(&m, h);
    let (sh, object, _) = section(fo).unwrap();
    let (base, _) = map(sh);
    m.kernel(|k| k.set_irql(2));
    // SAFETY: our view, handle and object reference.
    unsafe {
        assert_eq!(ZwUnmapViewOfSection(-1isize as HANDLE, base), 0);
        assert_eq!(ZwClose(sh), 0);
    }
    m.kernel(|k| k.set_irql(0));
    // SAFETY: the reference FsRtlCreateSectionForDataScan returned.
    unsafe { ObfDereferenceObject(object) };
    m.close_handle(h);
    let found: Vec<(fsfilter_sim::Rule, String)> =
        m.findings().into_iter().map(|(r, _, msg)| (r, msg)).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|(r, _)| *r == fsfilter_sim::Rule::IrqlTooHigh), "{found:?}");
    assert!(found[0].1.starts_with("ZwUnmapViewOfSection") && found[1].1.starts_with("ZwClose"));
}

#[test]
fn sections_are_refused_where_facts_say() {
    let mut m = machine(22);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("empty", b"").file("dir\\", b"").file("f", b"x"),
    );
    m.boot();
    let e = m.open(c, "empty", CreateOptions::open()).unwrap();
    assert_eq!(section(fo_of(&m, e)).unwrap_err(), Status::END_OF_FILE);
    let d = m.open(c, "dir", CreateOptions::open()).unwrap();
    assert_eq!(section(fo_of(&m, d)).unwrap_err(), Status::FILE_IS_A_DIRECTORY);
    let v = m.open(c, "", CreateOptions::open()).unwrap();
    assert_eq!(section(fo_of(&m, v)).unwrap_err(), Status::INVALID_FILE_FOR_SECTION);
    let f = m.open(c, "f", CreateOptions::open()).unwrap();
    // The fourth section request of the run fails (the three above were counted).
    m.kernel(|k| k.faults.plan(Fault { kind: FaultKind::CreateSection, nth: 4, image: None }));
    assert_eq!(section(fo_of(&m, f)).unwrap_err(), Status::INSUFFICIENT_RESOURCES);
    let l = m.io(fsfilter_sim::IoRequest::Lock {
        handle: f,
        offset: 0,
        length: 1,
        exclusive: true,
        fail_immediately: true,
    });
    assert_eq!(l.status, Status::SUCCESS);
    assert_eq!(section(fo_of(&m, f)).unwrap_err(), Status::FILE_LOCK_CONFLICT);
}

thread_local! {
    static CONFLICTS: RefCell<Vec<(usize, usize, ConflictOp)>> = const { RefCell::new(Vec::new()) };
}

fn hook(stream: usize, sections: &[usize], op: ConflictOp) {
    CONFLICTS.with(|c| c.borrow_mut().extend(sections.iter().map(|s| (stream, *s, op))));
}

#[test]
fn the_conflict_hook_hears_of_writes_and_size_changes_on_a_stream_with_a_section() {
    let mut m = machine(23);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f", b"0123456789"));
    m.boot();
    m.kernel(|k| k.sections.conflict_hook = Some(hook));
    let h = m.open(c, "f", CreateOptions::open()).unwrap();
    let fo = fo_of(&m, h);
    let (sh, object, _) = section(fo).unwrap();
    // SAFETY: a live file object.
    let stream = unsafe { (*fo).FsContext } as usize;
    m.write(h, Some(0), b"ab", IoMode::Cached);
    m.set_information(h, fsfilter_sim::nt::file_info::END_OF_FILE, &20i64.to_le_bytes());
    m.read(h, Some(0), 2, IoMode::Cached);
    let seen = CONFLICTS.with(|c| c.borrow().clone());
    assert_eq!(
        seen,
        vec![
            (stream, object as usize, ConflictOp::Write),
            (stream, object as usize, ConflictOp::SetEndOfFile)
        ]
    );
    // A mapped view stops truncation.
    let (base, _) = map(sh);
    let r = m.set_information(h, fsfilter_sim::nt::file_info::END_OF_FILE, &2i64.to_le_bytes());
    assert_eq!(r.status, Status::USER_MAPPED_FILE);
    // SAFETY: ours.
    unsafe {
        ZwUnmapViewOfSection(-1isize as HANDLE, base);
        ZwClose(sh);
        ObfDereferenceObject(object);
    }
    CONFLICTS.with(|c| c.borrow_mut().clear());
    m.write(h, Some(0), b"cd", IoMode::Cached);
    assert!(CONFLICTS.with(|c| c.borrow().is_empty()), "no section, no conflict");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn pipes_and_mailslots_are_readable_through_sections() {
    let mut m = machine(24);
    let p = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    m.boot();
    let h = m.open(p, "pipe", CreateOptions::default()).unwrap();
    m.write(h, None, b"pipe data", IoMode::Cached);
    let (sh, object, size) = section(fo_of(&m, h)).unwrap();
    assert_eq!(size, 9);
    let (base, _) = map(sh);
    assert_eq!(view(base, 9), b"pipe data");
    // SAFETY: ours.
    unsafe {
        ZwUnmapViewOfSection(-1isize as HANDLE, base);
        ZwClose(sh);
        ObfDereferenceObject(object);
    }
}
