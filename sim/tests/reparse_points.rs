//! Reparse points in the simulated file systems (docs/simulator.md, "Reparse points"):
//! `FSCTL_SET_REPARSE_POINT`, `FSCTL_GET_REPARSE_POINT` and `FSCTL_DELETE_REPARSE_POINT` with
//! MS-FSA's and MS-FSCC's checks and statuses, `FILE_ATTRIBUTE_REPARSE_POINT`, and the create that
//! meets one: `STATUS_REPARSE`, the tag in its information, the `REPARSE_DATA_BUFFER` in the
//! IRP's auxiliary buffer with `Reserved` the length of the name not parsed yet, seen by every
//! filter's completion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    reason = "the test driver pokes kernel structures directly, as C drivers do"
)]

mod fltcommon;

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::null_mut;

use fltcommon::{Config, mj};
use fsfilter::{MajorFunction, Status};
use fsfilter_kernel::irp::{
    IoCallDriver, IoCopyCurrentIrpStackLocationToNext, IoGetCurrentIrpStackLocation,
    IoMarkIrpPending, IoSetCompletionRoutine, IoSkipCurrentIrpStackLocation,
};
use fsfilter_sim::fs::reparse::{
    FILE_ATTRIBUTE_REPARSE_POINT, FILE_OPEN_REPARSE_POINT, FSCTL_DELETE_REPARSE_POINT,
    FSCTL_GET_REPARSE_POINT, FSCTL_SET_REPARSE_POINT, STATUS_IO_REPARSE_DATA_INVALID,
    STATUS_IO_REPARSE_TAG_INVALID, STATUS_IO_REPARSE_TAG_MISMATCH,
    STATUS_IO_REPARSE_TAG_NOT_HANDLED, STATUS_NOT_A_REPARSE_POINT,
    STATUS_REPARSE_ATTRIBUTE_CONFLICT, TAG_MOUNT_POINT, TAG_SYMLINK,
};
use fsfilter_sim::nt::{access, create_options as co, disposition, file_info as fi};
use fsfilter_sim::{
    CreateOptions, EventKind, FsKind, Handle, IoRequest, IoResult, Machine, ServiceSpec, StartType,
    VolumeId, VolumeSpec,
};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, FAST_IO_DISPATCH, IRP};
use windows_sys::Wdk::System::SystemServices::{
    IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDetachDevice, IoGetDeviceObjectPointer,
    ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn header(tag: u32, data: &[u8]) -> Vec<u8> {
    let mut b = tag.to_le_bytes().to_vec();
    b.extend_from_slice(&(data.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(data);
    b
}

/// A mount point's `REPARSE_DATA_BUFFER` (MS-FSCC 2.1.2.5), names NUL-terminated as `mklink /J`
/// writes them.
fn mount_point(substitute: &str, print: &str) -> Vec<u8> {
    let (s, p) = (utf16(substitute), utf16(print));
    let mut data = Vec::new();
    for v in [0, s.len(), s.len() + 2, p.len()] {
        data.extend_from_slice(&(v as u16).to_le_bytes());
    }
    data.extend_from_slice(&s);
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(&p);
    data.extend_from_slice(&[0, 0]);
    header(TAG_MOUNT_POINT, &data)
}

/// A symbolic link's `REPARSE_DATA_BUFFER` (MS-FSCC 2.1.2.4).
fn symlink(substitute: &str, print: &str, flags: u32) -> Vec<u8> {
    let (s, p) = (utf16(substitute), utf16(print));
    let mut data = Vec::new();
    for v in [0, s.len(), s.len(), p.len()] {
        data.extend_from_slice(&(v as u16).to_le_bytes());
    }
    data.extend_from_slice(&flags.to_le_bytes());
    data.extend_from_slice(&s);
    data.extend_from_slice(&p);
    header(TAG_SYMLINK, &data)
}

fn fsctl(m: &mut Machine, handle: Handle, code: u32, input: &[u8], output: usize) -> IoResult {
    m.io(IoRequest::Fsctl { handle, code, input, output_length: output })
}

/// Opens `path` (a directory with `dir`) to set or read a reparse point: read and write access,
/// the reparse point itself.
fn open_link(m: &mut Machine, v: VolumeId, path: &str, dir: bool) -> Handle {
    let kind = if dir { co::DIRECTORY_FILE } else { co::NON_DIRECTORY_FILE };
    let options = CreateOptions::default()
        .access(access::GENERIC_READ | access::GENERIC_WRITE)
        .options(kind | FILE_OPEN_REPARSE_POINT);
    let r = m.create(v, path, options);
    assert!(r.status.is_success(), "open {path}: {}", r.status);
    r.handle.unwrap()
}

/// Makes `path` a link with `buffer` (a directory for a mount point), as `mklink` does.
fn make_link(m: &mut Machine, v: VolumeId, path: &str, dir: bool, buffer: &[u8]) {
    let h = open_link(m, v, path, dir);
    let r = fsctl(m, h, FSCTL_SET_REPARSE_POINT, buffer, 0);
    assert_eq!(r.status, Status::SUCCESS, "set the reparse point of {path}");
    m.close_handle(h);
}

fn volumes() -> (Machine, VolumeId, VolumeId, VolumeId) {
    let mut m = fltcommon::machine(3);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("\\dir\\", b"")
            .file("\\full\\inside.txt", b"x")
            .file("\\target\\file.txt", b"target")
            .file("\\plain.txt", b"plain"),
    );
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs).file("\\data\\x.txt", b"on d"));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Fat).file("\\f.txt", b"fat"));
    m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup).file("r.txt", b"remote"));
    m.install_filter_manager();
    m.boot();
    (m, c, d, e)
}

fn attributes(m: &mut Machine, h: Handle) -> (u32, u32) {
    let r = m.query_information(h, fi::ATTRIBUTE_TAG, 8);
    assert_eq!(r.status, Status::SUCCESS);
    let a = u32::from_le_bytes(r.data[0..4].try_into().unwrap());
    let t = u32::from_le_bytes(r.data[4..8].try_into().unwrap());
    (a, t)
}

#[test]
fn set_get_and_delete_a_mount_point_ms_fsa_2_1_5_10() {
    let (mut m, c, _, _) = volumes();
    let h = open_link(&mut m, c, "\\dir\\j", true);
    let buffer = mount_point("\\??\\D:\\data", "D:\\data");
    // Before: no reparse point (MS-FSA 2.1.5.10.14 phase 1).
    assert_eq!(
        fsctl(&mut m, h, FSCTL_GET_REPARSE_POINT, &[], 1024).status,
        STATUS_NOT_A_REPARSE_POINT
    );
    assert_eq!(fsctl(&mut m, h, FSCTL_SET_REPARSE_POINT, &buffer, 0).status, Status::SUCCESS);
    // FILE_ATTRIBUTE_REPARSE_POINT and the tag (MS-FSCC 2.4.6).
    let (a, t) = attributes(&mut m, h);
    assert_eq!(a & FILE_ATTRIBUTE_REPARSE_POINT, FILE_ATTRIBUTE_REPARSE_POINT, "{a:#x}");
    assert_eq!(t, TAG_MOUNT_POINT);
    // The whole buffer back, Reserved zero; Information its length.
    let got = fsctl(&mut m, h, FSCTL_GET_REPARSE_POINT, &[], 1024);
    assert_eq!((got.status, got.information), (Status::SUCCESS, buffer.len()));
    assert_eq!(got.data, buffer);
    // A buffer that holds the structure but not the names: what fits, STATUS_BUFFER_OVERFLOW.
    let part = fsctl(&mut m, h, FSCTL_GET_REPARSE_POINT, &[], 24);
    assert_eq!((part.status, part.information), (Status::BUFFER_OVERFLOW, 24));
    assert_eq!(part.data, buffer[..24]);
    // Smaller than sizeof(REPARSE_DATA_BUFFER): STATUS_BUFFER_TOO_SMALL.
    assert_eq!(fsctl(&mut m, h, FSCTL_GET_REPARSE_POINT, &[], 23).status, Status::BUFFER_TOO_SMALL);
    // Delete: the tag must match, the buffer be a bare header (MS-FSCC 2.3.6).
    let bare = |tag: u32| header(tag, &[]);
    let mismatch = fsctl(&mut m, h, FSCTL_DELETE_REPARSE_POINT, &bare(TAG_SYMLINK), 0);
    assert_eq!(mismatch.status, STATUS_IO_REPARSE_TAG_MISMATCH);
    let with_data = fsctl(&mut m, h, FSCTL_DELETE_REPARSE_POINT, &buffer, 0);
    assert_eq!(with_data.status, STATUS_IO_REPARSE_DATA_INVALID);
    let reserved = fsctl(&mut m, h, FSCTL_DELETE_REPARSE_POINT, &bare(1), 0);
    assert_eq!(reserved.status, STATUS_IO_REPARSE_DATA_INVALID, "tag 1 takes a GUID header");
    let reserved = fsctl(&mut m, h, FSCTL_DELETE_REPARSE_POINT, &[0u8; 24], 0);
    assert_eq!(reserved.status, STATUS_IO_REPARSE_TAG_INVALID);
    let out = fsctl(&mut m, h, FSCTL_DELETE_REPARSE_POINT, &bare(TAG_MOUNT_POINT), 4);
    assert_eq!(out.status, Status::INVALID_PARAMETER, "an output buffer");
    let del = fsctl(&mut m, h, FSCTL_DELETE_REPARSE_POINT, &bare(TAG_MOUNT_POINT), 0);
    assert_eq!(del.status, Status::SUCCESS);
    assert_eq!(attributes(&mut m, h), (0x10, 0), "a plain directory again");
    let again = fsctl(&mut m, h, FSCTL_DELETE_REPARSE_POINT, &bare(TAG_MOUNT_POINT), 0);
    assert_eq!(again.status, STATUS_NOT_A_REPARSE_POINT);
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn set_reparse_point_checks_its_caller_and_its_buffer_ms_fsa_2_1_5_10_37() {
    let (mut m, c, _, _) = volumes();
    let dir = open_link(&mut m, c, "\\dir\\j", true);
    let file = open_link(&mut m, c, "\\plain.txt", false);
    let full = open_link(&mut m, c, "\\full", true);
    let mp = mount_point("\\??\\D:\\data", "D:\\data");
    let set = |m: &mut Machine, h, b: &[u8]| fsctl(m, h, FSCTL_SET_REPARSE_POINT, b, 0).status;
    // Sizes: at least a header, at most 16 KiB, and ReparseDataLength consistent.
    assert_eq!(set(&mut m, dir, &mp[..4]), STATUS_IO_REPARSE_DATA_INVALID);
    let mut big = header(TAG_SYMLINK, &vec![0u8; 16 * 1024 - 8]);
    big.push(0);
    assert_eq!(set(&mut m, dir, &big), STATUS_IO_REPARSE_DATA_INVALID, "16 KiB + 1");
    let mut short = mp.clone();
    short.pop();
    assert_eq!(set(&mut m, dir, &short), STATUS_IO_REPARSE_DATA_INVALID, "length mismatch");
    // The reserved tags, and a third party's tag without its GUID.
    assert_eq!(set(&mut m, dir, &header(1, &[0; 16])), STATUS_IO_REPARSE_DATA_INVALID);
    assert_eq!(set(&mut m, dir, &header(0x0000_1234, &[1, 2])), STATUS_IO_REPARSE_DATA_INVALID);
    // An output buffer, a volume handle.
    assert_eq!(
        fsctl(&mut m, dir, FSCTL_SET_REPARSE_POINT, &mp, 8).status,
        Status::INVALID_PARAMETER
    );
    let volume = m.create(c, "", CreateOptions::open()).handle.unwrap();
    assert_eq!(set(&mut m, volume, &mp), Status::INVALID_PARAMETER);
    m.close_handle(volume);
    // A mount point on a file; any reparse point on a non-empty directory.
    assert_eq!(set(&mut m, file, &mp), Status::NOT_A_DIRECTORY);
    assert_eq!(set(&mut m, full, &mp), Status::DIRECTORY_NOT_EMPTY);
    // Access: FILE_WRITE_DATA or FILE_WRITE_ATTRIBUTES.
    let read_only = m
        .create(
            c,
            "\\dir\\j",
            CreateOptions::open()
                .access(access::FILE_READ_ATTRIBUTES)
                .options(co::DIRECTORY_FILE | FILE_OPEN_REPARSE_POINT),
        )
        .handle
        .unwrap();
    assert_eq!(set(&mut m, read_only, &mp), Status::ACCESS_DENIED);
    m.close_handle(read_only);
    // A symbolic link on the file; then a mount point over it: the tag does not match.
    let link = symlink("\\??\\C:\\target\\file.txt", "C:\\target\\file.txt", 0);
    assert_eq!(set(&mut m, file, &link), Status::SUCCESS);
    let other = symlink("..\\target\\file.txt", "..\\target\\file.txt", 1);
    assert_eq!(set(&mut m, file, &other), Status::SUCCESS, "the same tag replaces the data");
    let got = fsctl(&mut m, file, FSCTL_GET_REPARSE_POINT, &[], 1024);
    assert_eq!(got.data, other);
    assert_eq!(set(&mut m, dir, &mp), Status::SUCCESS);
    assert_eq!(set(&mut m, dir, &link), STATUS_IO_REPARSE_TAG_MISMATCH);
    // A third party's reparse point carries its GUID: another GUID is a conflict.
    let guid = |g: u8| {
        let mut b = 0x0000_1234u32.to_le_bytes().to_vec();
        b.extend_from_slice(&[2, 0, 0, 0]);
        b.extend_from_slice(&[g; 16]);
        b.extend_from_slice(&[7, 7]);
        b
    };
    let third = open_link(&mut m, c, "\\target\\file.txt", false);
    assert_eq!(set(&mut m, third, &guid(1)), Status::SUCCESS);
    assert_eq!(set(&mut m, third, &guid(2)), STATUS_REPARSE_ATTRIBUTE_CONFLICT);
    let got = fsctl(&mut m, third, FSCTL_GET_REPARSE_POINT, &[], 27);
    assert_eq!(got.status, Status::BUFFER_TOO_SMALL, "a GUID buffer needs 28 bytes");
    for h in [dir, file, full, third] {
        m.close_handle(h);
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_file_system_without_reparse_points_refuses_the_controls() {
    let (mut m, _, _, e) = volumes();
    let h = m.create(e, "\\f.txt", CreateOptions::open()).handle.unwrap();
    let mp = symlink("\\??\\C:\\plain.txt", "C:\\plain.txt", 0);
    for (code, input, out) in [
        (FSCTL_SET_REPARSE_POINT, mp.clone(), 0),
        (FSCTL_GET_REPARSE_POINT, Vec::new(), 1024),
        (FSCTL_DELETE_REPARSE_POINT, header(TAG_SYMLINK, &[]), 0),
    ] {
        let r = fsctl(&mut m, h, code, &input, out);
        assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST, "{code:#x} on FAT");
    }
    m.close_handle(h);
}

#[test]
fn reparse_points_show_in_directory_listings_and_no_create_sets_the_attribute() {
    let (mut m, c, _, _) = volumes();
    make_link(&mut m, c, "\\dir\\j", true, &mount_point("\\??\\D:\\data", "D:\\data"));
    let d = m.open(c, "\\dir", CreateOptions::open().options(co::DIRECTORY_FILE)).unwrap();
    let r = m.query_directory(d, fi::FULL_DIRECTORY, Some("j"), false, 4096);
    assert_eq!(r.status, Status::SUCCESS);
    let a = u32::from_le_bytes(r.data[56..60].try_into().unwrap());
    assert_eq!(a, 0x10 | FILE_ATTRIBUTE_REPARSE_POINT, "{a:#x}");
    m.close_handle(d);
    // A create's attributes never carry FILE_ATTRIBUTE_REPARSE_POINT (it comes with a reparse
    // point only), neither for a new file nor for an overwrite.
    let options = CreateOptions::create().disposition(disposition::CREATE);
    let mut options = options;
    options.attributes = FILE_ATTRIBUTE_REPARSE_POINT | 0x20;
    let h = m.create(c, "\\new.txt", options).handle.unwrap();
    assert_eq!(attributes(&mut m, h), (0x20, 0));
    m.close_handle(h);
    let mut over = CreateOptions::open().disposition(disposition::OVERWRITE);
    over.attributes = FILE_ATTRIBUTE_REPARSE_POINT | 0x2;
    let h = m.create(c, "\\plain.txt", over).handle.unwrap();
    assert_eq!(attributes(&mut m, h), (0x22, 0));
    m.close_handle(h);
}

// ---------------------------------------------------------------------------------------------
// "Tap": a legacy filter attached to C:'s stack that watches every create complete (status,
// information and the auxiliary buffer, from its completion routine, where Windows' filters see
// them: WRK's IopfCompleteRequest frees or keeps the buffer only after every routine ran).

/// One create Tap saw complete.
#[derive(Clone, Debug)]
struct Completed {
    name: String,
    status: Status,
    information: usize,
    /// The auxiliary buffer's REPARSE_DATA_BUFFER (header and data).
    aux: Option<Vec<u8>>,
}

#[derive(Default)]
struct TapState {
    lower: usize,
    creates: Vec<Completed>,
}

thread_local! {
    static TAP: RefCell<TapState> = RefCell::new(TapState::default());
}

unsafe extern "system" fn tap_done(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    let i = unsafe { &mut *irp };
    let status = Status(unsafe { i.IoStatus.Anonymous.Status });
    let aux = unsafe { i.Tail.Overlay.AuxiliaryBuffer }.cast::<u8>();
    let aux = (!aux.is_null()).then(|| {
        let len = u16::from_le_bytes(unsafe { [*aux.add(4), *aux.add(5)] }) as usize;
        unsafe { std::slice::from_raw_parts(aux, 8 + len) }.to_vec()
    });
    let index = context as usize;
    TAP.with(|t| {
        let c = &mut t.borrow_mut().creates[index];
        c.status = status;
        c.information = i.IoStatus.Information;
        c.aux = aux;
    });
    if i.PendingReturned {
        unsafe { IoMarkIrpPending(irp) };
    }
    0
}

unsafe extern "system" fn tap_dispatch(_device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    let lower = TAP.with(|t| t.borrow().lower) as *mut DEVICE_OBJECT;
    let sl = unsafe { &*IoGetCurrentIrpStackLocation(irp) };
    if sl.MajorFunction == mj::CREATE && !sl.FileObject.is_null() {
        let name = unsafe { fsfilter_sim::mem::read_unicode(&(*sl.FileObject).FileName) };
        let index = TAP.with(|t| {
            let mut t = t.borrow_mut();
            t.creates.push(Completed { name, status: Status::PENDING, information: 0, aux: None });
            t.creates.len() - 1
        });
        unsafe {
            IoCopyCurrentIrpStackLocationToNext(irp);
            IoSetCompletionRoutine(irp, tap_done, index as *mut c_void, true, true, true);
            return IoCallDriver(lower, irp);
        }
    }
    unsafe {
        IoSkipCurrentIrpStackLocation(irp);
        IoCallDriver(lower, irp)
    }
}

unsafe extern "system" fn tap_detach(_source: *const DEVICE_OBJECT, target: *const DEVICE_OBJECT) {
    unsafe { IoDetachDevice(target.cast_mut()) };
}

static TAP_FAST_IO: FAST_IO_DISPATCH = {
    let mut t: FAST_IO_DISPATCH = unsafe { std::mem::zeroed() };
    t.SizeOfFastIoDispatch = size_of::<FAST_IO_DISPATCH>() as u32;
    t.FastIoDetachDevice = Some(tap_detach);
    t
};

unsafe extern "system" fn tap_entry(
    driver: *const DRIVER_OBJECT,
    _: *const UNICODE_STRING,
) -> NTSTATUS {
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(tap_dispatch);
    }
    d.FastIoDispatch = (&raw const TAP_FAST_IO).cast_mut();
    let units: Vec<u16> = "\\Device\\HarddiskVolume1".encode_utf16().collect();
    let name = fltcommon::us(&units);
    let (mut fo, mut top) = (null_mut(), null_mut());
    let s = unsafe { IoGetDeviceObjectPointer(&name, 0x80, &mut fo, &mut top) };
    if s != 0 {
        return s;
    }
    let mut me = null_mut();
    let s = unsafe {
        IoCreateDevice(driver, 0, std::ptr::null(), (*top).DeviceType, 0, false, &mut me)
    };
    if s != 0 {
        return s;
    }
    let mut lower = null_mut();
    let s = unsafe { IoAttachDeviceToDeviceStackSafe(me, top, &mut lower) };
    if s != 0 {
        return s;
    }
    TAP.with(|t| t.borrow_mut().lower = lower as usize);
    unsafe {
        (*me).Flags &= !0x80;
        ObfDereferenceObject(fo.cast());
    }
    0
}

/// Starts Tap on C: and a minifilter ("Mini") that records its post-create statuses.
fn with_filters(m: &mut Machine) {
    TAP.with(|t| *t.borrow_mut() = TapState::default());
    let mut spec = ServiceSpec::new("Tap", tap_entry, "legacy");
    spec.start = StartType::Demand;
    spec.group = Some("FSFilter Activity Monitor".into());
    m.install(spec);
    assert_eq!(m.start("Tap"), Status::SUCCESS);
    MINI_POSTS.with(|p| p.borrow_mut().clear());
    let config = Config::new("Mini", "370000").op(mj::CREATE, false, true).with_post(|p| {
        let info = p.data().IoStatus.Information;
        MINI_POSTS.with(|posts| posts.borrow_mut().push((p.status(), info)));
        0
    });
    fltcommon::start(m, 0, config);
}

thread_local! {
    static MINI_POSTS: RefCell<Vec<(Status, usize)>> = const { RefCell::new(Vec::new()) };
}

fn tapped(name: &str) -> Completed {
    TAP.with(|t| t.borrow().creates.iter().find(|c| c.name == name).cloned())
        .unwrap_or_else(|| panic!("Tap saw no create of {name}"))
}

#[test]
fn a_create_through_a_mount_point_ends_status_reparse_with_the_buffer_and_the_unparsed_length() {
    let (mut m, c, _, _) = volumes();
    let mp = mount_point("\\??\\D:\\data", "D:\\data");
    make_link(&mut m, c, "\\dir\\j", true, &mp);
    with_filters(&mut m);
    let _ = m.create(c, "\\dir\\j\\sub\\x.txt", CreateOptions::open());
    // The file system met the mount point as an intermediate component: STATUS_REPARSE, the
    // tag, and the buffer with Reserved = the bytes of "\sub\x.txt", the part not parsed yet.
    let seen = tapped("\\dir\\j\\sub\\x.txt");
    assert_eq!((seen.status, seen.information), (Status::REPARSE, TAG_MOUNT_POINT as usize));
    let aux = seen.aux.expect("the REPARSE_DATA_BUFFER in Tail.Overlay.AuxiliaryBuffer");
    let reserved = u16::from_le_bytes([aux[6], aux[7]]) as usize;
    assert_eq!(reserved, "\\sub\\x.txt".len() * 2);
    assert_eq!((&aux[..6], &aux[8..]), (&mp[..6], &mp[8..]), "the buffer as it was set");
    // Every filter's post-create sees it, a minifilter's too.
    let posts = MINI_POSTS.with(|p| p.borrow().clone());
    assert_eq!(posts.first(), Some(&(Status::REPARSE, TAG_MOUNT_POINT as usize)), "{posts:?}");
    // As the last component, with nothing left to parse.
    let _ = m.create(c, "\\dir\\j", CreateOptions::open().options(co::DIRECTORY_FILE));
    let seen = tapped("\\dir\\j");
    assert_eq!(seen.status, Status::REPARSE);
    assert_eq!(u16::from_le_bytes([seen.aux.as_ref().unwrap()[6], seen.aux.unwrap()[7]]), 0);
}

#[test]
fn file_open_reparse_point_opens_the_link_itself_and_file_create_finds_the_name_taken() {
    let (mut m, c, _, _) = volumes();
    let link = symlink("\\??\\C:\\target\\file.txt", "C:\\target\\file.txt", 0);
    make_link(&mut m, c, "\\plain.txt", false, &link);
    with_filters(&mut m);
    // The reparse point itself: the create opens it, and its tag and data are there.
    let h = m
        .create(c, "\\plain.txt", CreateOptions::open().options(FILE_OPEN_REPARSE_POINT))
        .handle
        .unwrap();
    assert_eq!(tapped("\\plain.txt").status, Status::SUCCESS);
    assert_eq!(attributes(&mut m, h).1, TAG_SYMLINK);
    assert_eq!(fsctl(&mut m, h, FSCTL_GET_REPARSE_POINT, &[], 1024).data, link);
    m.close_handle(h);
    // FILE_OPEN_REPARSE_POINT on an intermediate component changes nothing.
    make_link(&mut m, c, "\\dir\\j", true, &mount_point("\\??\\C:\\target", "C:\\target"));
    let through = CreateOptions::open().options(FILE_OPEN_REPARSE_POINT);
    let _ = m.create(c, "\\dir\\j\\file.txt", through);
    assert_eq!(tapped("\\dir\\j\\file.txt").status, Status::REPARSE);
    // FILE_CREATE of a name that is a link: the name exists.
    let r = m.create(c, "\\plain.txt", CreateOptions::create());
    assert_eq!(r.status, Status::OBJECT_NAME_COLLISION);
}

#[test]
fn a_query_open_answers_a_final_link_itself_and_follows_an_intermediate_one() {
    let (mut m, c, d, _) = volumes();
    make_link(&mut m, c, "\\plain.txt", false, &symlink("\\??\\D:\\data\\x.txt", "D:\\x", 0));
    // NtQueryFullAttributesFile opens with FILE_OPEN_REPARSE_POINT (WRK): a link that is the
    // name's last component answers with its own attributes, as GetFileAttributesW's reference
    // page says of a symbolic link. Nothing is followed.
    let r = m.io(IoRequest::QueryAttributes { volume: c, path: "\\plain.txt" });
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(r.reparsed, None);
    let attributes = u32::from_le_bytes(r.data[48..52].try_into().unwrap());
    assert_ne!(attributes & 0x400, 0, "FILE_ATTRIBUTE_REPARSE_POINT: {attributes:#x}");
    // A link on the way (a junction to D:\data) is followed: C:'s FastIoQueryOpen declined (it
    // would have answered for a name it cannot reach), the create IRP met the junction, the
    // I/O manager parsed again on D:, whose file answered.
    make_link(&mut m, c, "\\dir\\j", true, &mount_point("\\??\\D:\\data", "D:\\data"));
    let r = m.io(IoRequest::QueryAttributes { volume: c, path: "\\dir\\j\\x.txt" });
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(r.reparsed.map(|r| r.volume), Some(d));
    assert_eq!(u64::from_le_bytes(r.data[40..48].try_into().unwrap()), 4, "x.txt's size");
    let attributes = u32::from_le_bytes(r.data[48..52].try_into().unwrap());
    assert_eq!(attributes & 0x400, 0, "x.txt is no link: {attributes:#x}");
}

// ---------------------------------------------------------------------------------------------
// The I/O manager follows mount points and symbolic links (docs/simulator.md, "Reparse").

/// The volumes, in order, the creates of the log went to.
fn create_volumes(m: &Machine) -> Vec<String> {
    m.events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::IoStart { major: MajorFunction::Create, volume, .. } => {
                Some(volume.to_string())
            }
            _ => None,
        })
        .collect()
}

fn read_all(m: &mut Machine, h: Handle) -> Vec<u8> {
    let r = m.read(h, Some(0), 64, fsfilter_sim::IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    r.data
}

#[test]
fn a_create_through_a_junction_is_parsed_again_and_lands_on_the_target_volume() {
    let (mut m, c, d, _) = volumes();
    make_link(&mut m, c, "\\dir\\j", true, &mount_point("\\??\\D:\\data", "D:\\data"));
    with_filters(&mut m);
    let before = create_volumes(&m).len();
    let r = m.create(c, "\\dir\\j\\x.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "{r:?}");
    // The first create on C:'s stack ended STATUS_REPARSE with the tag (every filter saw it),
    // then the I/O manager parsed \??\D:\data\x.txt: a create on D:'s stack opened the file.
    let seen = tapped("\\dir\\j\\x.txt");
    assert_eq!((seen.status, seen.information), (Status::REPARSE, TAG_MOUNT_POINT as usize));
    assert_eq!(create_volumes(&m)[before..], ["C:".to_owned(), "D:".to_owned()]);
    assert_eq!(r.reparsed, Some(fsfilter_sim::Reparsed { count: 1, volume: d }));
    let h = r.handle.unwrap();
    assert_eq!(read_all(&mut m, h), b"on d");
    m.close_handle(h);
    // The junction itself, as the last component: D:\data, a directory.
    let dir = m.create(c, "\\dir\\j", CreateOptions::open().options(co::DIRECTORY_FILE));
    assert_eq!(dir.status, Status::SUCCESS);
    assert_eq!(dir.reparsed.map(|r| r.volume), Some(d));
    m.close_handle(dir.handle.unwrap());
    // No buffer left behind: the I/O manager freed each with ExFreePool.
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn symbolic_links_absolute_across_volumes_and_relative_to_their_directory() {
    let (mut m, c, d, _) = volumes();
    make_link(
        &mut m,
        c,
        "\\plain.txt",
        false,
        &symlink("\\??\\D:\\data\\x.txt", "D:\\data\\x.txt", 0),
    );
    make_link(
        &mut m,
        c,
        "\\dir\\rel.txt",
        false,
        &symlink("..\\target\\file.txt", "..\\target\\file.txt", 1),
    );
    let abs = m.create(c, "\\plain.txt", CreateOptions::open());
    assert_eq!(abs.status, Status::SUCCESS, "{abs:?}");
    assert_eq!(abs.reparsed.map(|r| r.volume), Some(d));
    let h = abs.handle.unwrap();
    assert_eq!(read_all(&mut m, h), b"on d");
    m.close_handle(h);
    // `..\target\file.txt` from \dir: \target\file.txt on C:, the link's volume.
    let rel = m.create(c, "\\dir\\rel.txt", CreateOptions::open());
    assert_eq!(rel.status, Status::SUCCESS, "{rel:?}");
    assert_eq!(rel.reparsed, Some(fsfilter_sim::Reparsed { count: 1, volume: c }));
    let h = rel.handle.unwrap();
    assert_eq!(read_all(&mut m, h), b"target");
    m.close_handle(h);
    // A directory symbolic link in the middle of a path, relative: the unparsed part follows.
    let dlink = open_link(&mut m, c, "\\dl", true);
    let buffer = symlink("target", "target", 1);
    assert_eq!(fsctl(&mut m, dlink, FSCTL_SET_REPARSE_POINT, &buffer, 0).status, Status::SUCCESS);
    m.close_handle(dlink);
    let through = m.create(c, "\\dl\\file.txt", CreateOptions::open());
    assert_eq!(through.status, Status::SUCCESS, "{through:?}");
    let h = through.handle.unwrap();
    assert_eq!(read_all(&mut m, h), b"target");
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_tag_the_io_manager_does_not_know_fails_the_create_with_status_io_reparse_tag_not_handled() {
    let (mut m, c, _, _) = volumes();
    // A Microsoft tag no one handles (IO_REPARSE_TAG_DEDUP) and a third party's with its GUID.
    make_link(&mut m, c, "\\plain.txt", false, &header(0x8000_0013, &[1, 2, 3, 4]));
    let mut third = 0x0000_1234u32.to_le_bytes().to_vec();
    third.extend_from_slice(&[2, 0, 0, 0]);
    third.extend_from_slice(&[9; 16]);
    third.extend_from_slice(&[7, 7]);
    make_link(&mut m, c, "\\target\\file.txt", false, &third);
    for path in ["\\plain.txt", "\\target\\file.txt"] {
        let r = m.create(c, path, CreateOptions::open());
        assert_eq!(r.status, STATUS_IO_REPARSE_TAG_NOT_HANDLED, "{path}");
        assert!(r.handle.is_none());
    }
    // The file itself still opens with FILE_OPEN_REPARSE_POINT.
    let own = m.create(c, "\\plain.txt", CreateOptions::open().options(FILE_OPEN_REPARSE_POINT));
    assert_eq!(own.status, Status::SUCCESS);
    assert_eq!(own.reparsed, None);
    m.close_handle(own.handle.unwrap());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_link_loop_ends_at_the_reparse_limit() {
    let (mut m, c, _, _) = volumes();
    make_link(&mut m, c, "\\loop", false, &symlink("\\??\\C:\\loop", "C:\\loop", 0));
    let before = create_volumes(&m).len();
    let r = m.create(c, "\\loop", CreateOptions::open());
    // OBJ_MAX_REPARSE_ATTEMPTS (32): the caller's C: and each reparse's \??\C: are links too,
    // two attempts a pass, so the 16th create's STATUS_REPARSE is the one refused.
    assert_eq!(r.status, Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(r.reparsed.map(|r| r.count), Some(15));
    assert_eq!(create_volumes(&m).len() - before, 16);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_junction_to_a_share_is_refused_once_parsed_and_a_bad_buffer_is_invalid_data() {
    let (mut m, c, _, _) = volumes();
    make_link(&mut m, c, "\\dir\\j", true, &mount_point("\\??\\UNC\\server\\share", "x"));
    let r = m.create(c, "\\dir\\j\\r.txt", CreateOptions::open());
    assert_eq!(r.status, STATUS_IO_REPARSE_DATA_INVALID, "{r:?}");
    // A symbolic link to the share is followed (WRK's check is for mount points only).
    make_link(&mut m, c, "\\plain.txt", false, &symlink("\\??\\UNC\\server\\share\\r.txt", "x", 0));
    let r = m.create(c, "\\plain.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "{r:?}");
    m.close_handle(r.handle.unwrap());
    // A symbolic link whose substitute name lies outside its buffer.
    let mut bad = symlink("\\??\\D:\\data", "D:\\data", 0);
    bad[10..12].copy_from_slice(&0x400u16.to_le_bytes());
    make_link(&mut m, c, "\\full\\inside.txt", false, &bad);
    let r = m.create(c, "\\full\\inside.txt", CreateOptions::open());
    assert_eq!(r.status, STATUS_IO_REPARSE_DATA_INVALID);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
