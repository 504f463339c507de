//! Reparse (docs/simulator.md, "Reparse"): a create that ends `STATUS_REPARSE` with `IO_REPARSE`
//! is parsed again from the root of the object namespace (WRK `IopParseDevice`,
//! `ObpLookupObjectName`): its file object is freed without a cleanup or a close, and a new create,
//! a new request with a new file object, goes to the stack of the volume its new name designates.
//! `IoReplaceFileObjectName`, the limit of `OBJ_MAX_REPARSE_ATTEMPTS`, bug check 0xF9 for a volume
//! open, the names that lead nowhere, the Filter Manager's post-create with `STATUS_REPARSE`, the
//! query open's reparse, tags the I/O manager does not know.

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
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod fltcommon;

use std::cell::RefCell;
use std::rc::Rc;

use fltcommon::{Config, PostCall, PreCall, install_legacy, legacy_completes, machine, mj, rules};
use fsfilter::Status;
use fsfilter_kernel::irp::{IoCompleteRequest, IoGetCurrentIrpStackLocation};
use fsfilter_sim::mem::read_unicode;
use fsfilter_sim::{
    CreateOptions, EventKind, FsKind, IoMode, IoRequest, Machine, Rule, StartType, VolumeId,
    VolumeSpec,
};
use windows_sys::Wdk::Foundation::{FILE_OBJECT, IRP, NonPagedPoolNx};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_FILE_NAME_INFORMATION, FLT_FILE_NAME_NORMALIZED, FLT_FILE_NAME_QUERY_DEFAULT,
    FLT_PREOP_COMPLETE, FLT_PREOP_SUCCESS_NO_CALLBACK, FltAllocateContext, FltCancelFileOpen,
    FltGetFileNameInformation, FltReleaseContext, FltReleaseFileNameInformation,
    FltSetStreamContext, PFLT_CONTEXT,
};
use windows_sys::Wdk::Storage::FileSystem::{IoGetLowerDeviceObject, IoReplaceFileObjectName};
use windows_sys::Wdk::System::SystemServices::{
    ExAllocatePool2, ExFreePool, IoCancelFileOpen, ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::NTSTATUS;

type Log = Rc<RefCell<Vec<String>>>;

const A: &[u8] = b"from C";
const B: &[u8] = b"from D, longer";
/// `FLT_STREAM_CONTEXT`.
const STREAM: u16 = 0x8;
/// `POOL_FLAG_PAGED`.
const PAGED: u64 = 0x100;

/// A machine with the Filter Manager, `C:` (`\Device\HarddiskVolume1`) holding `a.txt` and `D:`
/// (`\Device\HarddiskVolume2`) holding `b.txt`, not booted; `c_name` names the first volume.
fn two_volumes(c_name: &str) -> (Machine, VolumeId, VolumeId) {
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new(c_name, FsKind::Ntfs).file("a.txt", A));
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs).file("b.txt", B));
    m.install_filter_manager();
    (m, c, d)
}

/// A file object's name.
fn name_of(fo: *const FILE_OBJECT) -> String {
    unsafe { read_unicode(&(*fo).FileName) }
}

/// `IoReplaceFileObjectName(fo, name)`.
fn replace(fo: *mut FILE_OBJECT, name: &str) -> NTSTATUS {
    let units: Vec<u16> = name.encode_utf16().collect();
    unsafe { IoReplaceFileObjectName(fo, units.as_ptr(), (units.len() * 2) as u16) }
}

/// Completes `irp` with `status` and `information`, as a dispatch routine that completes it.
/// A minifilter at 370000 that redirects `\a.txt` to `to` (`FLT_PREOP_COMPLETE` with
/// `STATUS_REPARSE` and `IO_REPARSE` after `IoReplaceFileObjectName`) and lets every other create
/// pass; with `order`, each pre-create's name goes to the order log first.
fn mini_redirect(to: &'static str, order: bool) -> Config {
    Config::new("Redirect", "370000").op(mj::CREATE, true, false).with_pre(move |p: &PreCall| {
        let fo = p.iopb().TargetFileObject;
        if order {
            fltcommon::order_push(format!("pre {}", name_of(fo)));
        }
        if name_of(fo) != r"\a.txt" {
            return (FLT_PREOP_SUCCESS_NO_CALLBACK, 0);
        }
        assert_eq!(replace(fo, to), 0);
        p.set_status(Status::REPARSE, 0);
        (FLT_PREOP_COMPLETE, 0)
    })
}

fn complete(irp: *mut IRP, status: Status, information: usize) -> NTSTATUS {
    unsafe {
        (*irp).IoStatus.Anonymous.Status = status.0;
        (*irp).IoStatus.Information = information;
        IoCompleteRequest(irp, 0);
    }
    status.0
}

/// The create IRP's file object, when `irp` is a create.
fn create_file(irp: *mut IRP) -> Option<*mut FILE_OBJECT> {
    let sl = unsafe { &*IoGetCurrentIrpStackLocation(irp) };
    (sl.MajorFunction == mj::CREATE).then_some(sl.FileObject)
}

/// Installs fltcommon's legacy filter of slot 0 as `Redirector` (boot start) and makes its
/// dispatch routine redirect every create of `from`, as SimRep does: the file object's name
/// replaced with what `to` holds then (`IoReplaceFileObjectName`), the create completed with
/// `STATUS_REPARSE` and `IO_REPARSE`. The log gets the name read back from the file object after
/// each replacement, and whether its buffer is the driver's own.
fn legacy_redirector(m: &mut Machine, from: &'static str, to: Rc<RefCell<String>>) -> Log {
    install_legacy(m, 0, "Redirector", "FSFilter Activity Monitor", StartType::Boot);
    let log: Log = Rc::default();
    let l = log.clone();
    legacy_completes(move |irp| {
        let fo = create_file(irp)?;
        if name_of(fo) != from {
            return None;
        }
        let units: Vec<u16> = to.borrow().encode_utf16().collect();
        let s = unsafe { IoReplaceFileObjectName(fo, units.as_ptr(), (units.len() * 2) as u16) };
        assert_eq!(s, 0);
        let kept = unsafe { (*fo).FileName.Buffer } == units.as_ptr().cast_mut();
        l.borrow_mut().push(format!("{} kept={kept}", name_of(fo)));
        Some(complete(irp, Status::REPARSE, 0))
    });
    log
}

/// The user requests of the event log from `since` on: starts and completions.
fn requests(m: &Machine, since: usize) -> Vec<String> {
    m.events()[since..]
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::IoStart { major, volume, .. } => Some(format!("{major:?} {volume}")),
            EventKind::IoComplete { volume, status, .. } => Some(format!("{volume} {status}")),
            _ => None,
        })
        .collect()
}

/// Live file objects.
fn file_objects(m: &Machine) -> usize {
    m.kernel(|k| k.files.map.len())
}

/// The kernel's own pool blocks (the I/O manager's file object names among them).
fn kernel_pool(m: &Machine) -> usize {
    m.kernel(|k| k.pool.blocks.values().filter(|b| b.image.is_none()).count())
}

/// The pool blocks of the loaded image of service `name` still allocated.
fn pool_of(m: &Machine, name: &str) -> usize {
    m.kernel(|k| {
        let i = k.images.iter().position(|i| i.name.eq_ignore_ascii_case(name)).unwrap();
        k.pool_outstanding(fsfilter_sim::ids::ImageId(i as u32)).0
    })
}

#[test]
fn a_legacy_filter_redirects_c_a_to_d_b_and_the_create_lands_on_ds_stack() {
    // WRK IopParseDevice: STATUS_REPARSE with IO_REPARSE: the file object's name replaces the
    // complete name, the file object is freed (its name freed, DeviceObject cleared, so
    // IopDeleteFile sends neither cleanup nor close) and ObpLookupObjectName parses the name
    // from the root: \??\D: leads to D:'s device, whose stack gets a new create.
    let (mut m, c, d) = two_volumes("C:");
    let to = Rc::new(RefCell::new(r"\??\D:\b.txt".to_owned()));
    let log = legacy_redirector(&mut m, r"\a.txt", to);
    m.boot();
    let (objects, since) = (file_objects(&m), m.events().len());
    let names = kernel_pool(&m);
    fltcommon::order_clear();
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "{:?}", m.findings());
    // The name IoReplaceFileObjectName allocated went with the first file object.
    assert_eq!(kernel_pool(&m), names);
    // A driver reading FileObject->FileName after the call sees the new name, in the I/O
    // manager's buffer (the driver's is copied, never kept).
    assert_eq!(log.borrow()[..], [r"\??\D:\b.txt kept=false"]);
    assert_eq!(
        requests(&m, since),
        ["IRP_MJ_CREATE C:", "C: STATUS_REPARSE", "IRP_MJ_CREATE D:", "D: STATUS_SUCCESS"]
    );
    // No cleanup (0x12) or close (0x2) for the first file object: two creates, nothing else.
    assert_eq!(fltcommon::order(), ["Redirector:irp:0", "Redirector:irp:0"]);
    assert_eq!(file_objects(&m), objects + 1, "the first file object is freed");
    assert_eq!(r.reparsed, Some(fsfilter_sim::syscalls::Reparsed { count: 1, volume: d }));
    let h = r.handle.unwrap();
    let read = m.read(h, Some(0), 64, IoMode::Cached);
    assert_eq!((read.status, &read.data[..]), (Status::SUCCESS, B));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(file_objects(&m), objects);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_minifilter_redirects_and_the_filters_above_see_status_reparse_in_their_post_create() {
    // FLT_PREOP_COMPLETE with Data->IoStatus STATUS_REPARSE / IO_REPARSE completes the create with
    // exactly that; the filter above runs its post with it, where FltGetFileNameInformation
    // answers STATUS_FLT_INVALID_NAME_REQUEST, as for a failed create, and a stream context
    // cannot be set (nothing opened the stream: no FsContext, STATUS_NOT_SUPPORTED).
    let (mut m, c, d) = two_volumes("C:");
    m.boot();
    let redirect = mini_redirect(r"\Device\HarddiskVolume2\b.txt", false);
    fltcommon::start(&mut m, 0, redirect);
    let log: Log = Rc::default();
    let l = log.clone();
    let mut watcher = Config::new("Watcher", "380000").op(mj::CREATE, false, true).with_post(
        move |p: &PostCall| {
            let fo = unsafe { (*p.data().Iopb).TargetFileObject };
            let mut info: *mut FLT_FILE_NAME_INFORMATION = std::ptr::null_mut();
            let options = FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT;
            let named = Status(unsafe { FltGetFileNameInformation(p.data, options, &mut info) });
            let name = if named.is_success() {
                let n = unsafe { read_unicode(&(*info).Name) };
                unsafe { FltReleaseFileNameInformation(info) };
                n
            } else {
                named.to_string()
            };
            let f = fltcommon::filter_handle(p.slot);
            let mut sc: PFLT_CONTEXT = std::ptr::null_mut();
            assert_eq!(unsafe { FltAllocateContext(f, STREAM, 24, NonPagedPoolNx, &mut sc) }, 0);
            let set = unsafe { FltSetStreamContext(p.instance(), fo, 1, sc, std::ptr::null_mut()) };
            unsafe { FltReleaseContext(sc) };
            let info = p.data().IoStatus.Information;
            l.borrow_mut().push(format!("{} {info} {name} {}", p.status(), Status(set)));
            0
        },
    );
    watcher.contexts = vec![(STREAM, 24)];
    fltcommon::start(&mut m, 1, watcher);
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "{:?}", m.findings());
    assert_eq!(
        log.borrow()[..],
        [
            "STATUS_REPARSE 0 STATUS_FLT_INVALID_NAME_REQUEST STATUS_NOT_SUPPORTED",
            r"STATUS_SUCCESS 1 \Device\HarddiskVolume2\b.txt STATUS_SUCCESS",
        ]
    );
    assert_eq!(r.reparsed.map(|r| (r.count, r.volume)), Some((1, d)));
    let read = m.read(r.handle.unwrap(), Some(0), 64, IoMode::Cached);
    assert_eq!(&read.data[..], B);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn reparses_stop_at_obj_max_reparse_attempts_with_status_object_name_not_found() {
    // ObpLookupObjectName (WRK obdir.c): MaxReparse starts at OBJ_MAX_REPARSE_ATTEMPTS (32);
    // every STATUS_REPARSE of a parse routine, a device's or a symbolic link's (\??\C: is one),
    // takes one, and the one that takes the last ends the lookup: STATUS_OBJECT_NAME_NOT_FOUND.
    for (volume, target, creates) in [
        // The caller's C:\a.txt goes through \??\C: (1), then one per create: 31 creates.
        ("C:", r"\Device\HarddiskVolume1\a.txt", 31),
        // The caller's link, then the create's reparse and the link of \??\C: each time: 16.
        ("C:", r"\??\C:\a.txt", 16),
        // A volume named by its device path: no link at all: 32 creates.
        (r"\Device\HarddiskVolume7", r"\Device\HarddiskVolume7\a.txt", 32),
    ] {
        let (mut m, c, _) = two_volumes(volume);
        let log = legacy_redirector(&mut m, r"\a.txt", Rc::new(RefCell::new(target.to_owned())));
        m.boot();
        let (objects, since) = (file_objects(&m), m.events().len());
        let r = m.create(c, "a.txt", CreateOptions::open());
        assert_eq!((r.status, r.handle), (Status::OBJECT_NAME_NOT_FOUND, None), "{target}");
        assert_eq!(log.borrow().len(), creates, "{target}");
        let trace = requests(&m, since);
        assert_eq!(trace.iter().filter(|t| t.starts_with("IRP_MJ_CREATE")).count(), creates);
        assert!(
            trace.iter().all(|t| t.starts_with("IRP_MJ_CREATE") || t.ends_with("STATUS_REPARSE"))
        );
        // The last create's reparse was not followed.
        assert_eq!(r.reparsed.map(|r| r.count), Some(creates as u32 - 1));
        assert_eq!(r.iosb, None);
        assert_eq!(file_objects(&m), objects);
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}

#[test]
fn status_reparse_for_a_volume_open_is_bug_check_0xf9() {
    // Bug check 0xF9, DRIVER_RETURNED_STATUS_REPARSE_FOR_VOLUME_OPEN (Learn: STATUS_REPARSE for
    // an IRP_MJ_CREATE with no trailing name); WRK IopParseDevice bugchecks when the parse opened
    // the device itself (op->Override). The simulator reports it and fails the open.
    let (mut m, c, _) = two_volumes("C:");
    install_legacy(&mut m, 0, "Redirector", "FSFilter Activity Monitor", StartType::Boot);
    legacy_completes(|irp| {
        let fo = create_file(irp)?;
        name_of(fo).is_empty().then(|| complete(irp, Status::REPARSE, 0))
    });
    m.boot();
    let objects = file_objects(&m);
    let r = m.create(c, "", CreateOptions::open());
    assert_eq!((r.status, r.handle), (Status::INVALID_DEVICE_STATE, None));
    assert_eq!(rules(&m), [Rule::ReparseForVolumeOpen]);
    assert_eq!(m.findings()[0].1.as_deref(), Some("Redirector"));
    assert_eq!(Rule::ReparseForVolumeOpen.name(), "DRIVER_RETURNED_STATUS_REPARSE_FOR_VOLUME_OPEN");
    assert_eq!(file_objects(&m), objects);
    // A file on the volume still opens.
    assert!(m.open(c, "a.txt", CreateOptions::open()).is_ok());
}

#[test]
fn a_reparse_name_that_leads_nowhere_fails_the_open_as_the_object_manager_does() {
    // ObpLookupObjectName: a component that is not in its directory with a name left after it:
    // STATUS_OBJECT_PATH_NOT_FOUND; the last one: STATUS_OBJECT_NAME_NOT_FOUND; a reparse name
    // that is not absolute: STATUS_OBJECT_NAME_NOT_FOUND; an empty component:
    // STATUS_OBJECT_NAME_INVALID. A name that reaches a volume gets its file system's answer.
    let (mut m, c, _) = two_volumes("C:");
    let to = Rc::new(RefCell::new(String::new()));
    let _log = legacy_redirector(&mut m, r"\a.txt", to.clone());
    m.boot();
    let objects = file_objects(&m);
    for (target, status) in [
        (r"\??\Q:\x.txt", Status::OBJECT_PATH_NOT_FOUND),
        (r"\Device\HarddiskVolume9\x.txt", Status::OBJECT_PATH_NOT_FOUND),
        (r"\Device\HarddiskVolume9", Status::OBJECT_NAME_NOT_FOUND),
        (r"\Nowhere\x.txt", Status::OBJECT_PATH_NOT_FOUND),
        ("b.txt", Status::OBJECT_NAME_NOT_FOUND),
        (r"\Device\\b.txt", Status::OBJECT_NAME_INVALID),
        (r"\DosDevices\D:\nothing.txt", Status::OBJECT_NAME_NOT_FOUND),
        (r"\GLOBAL??\D:\no\b.txt", Status::OBJECT_PATH_NOT_FOUND),
    ] {
        *to.borrow_mut() = target.to_owned();
        let r = m.create(c, "a.txt", CreateOptions::open());
        assert_eq!((r.status, r.handle), (status, None), "{target}");
        assert_eq!(r.iosb, None, "{target}");
        assert_eq!(file_objects(&m), objects, "{target}");
    }
    // And one that leads somewhere, through \DosDevices (a link to \??).
    *to.borrow_mut() = r"\DosDevices\D:\b.txt".to_owned();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(&m.read(h, Some(0), 64, IoMode::Cached).data[..], B);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn io_replace_file_object_name_refuses_a_file_object_without_a_name() {
    // IoReplaceFileObjectName's reference page: STATUS_INVALID_PARAMETER, "the provided file
    // object doesn't have a name to replace" (a volume open's file object); nothing changes.
    let (mut m, c, _) = two_volumes("C:");
    install_legacy(&mut m, 0, "Renamer", "FSFilter Activity Monitor", StartType::Boot);
    let log: Log = Rc::default();
    let l = log.clone();
    legacy_completes(move |irp| {
        let fo = create_file(irp)?;
        if name_of(fo).is_empty() {
            let s = Status(replace(fo, r"\??\D:\b.txt"));
            l.borrow_mut().push(format!("{s} {:?}", name_of(fo)));
        }
        None
    });
    m.boot();
    let r = m.create(c, "", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(log.borrow()[..], [r#"STATUS_INVALID_PARAMETER """#]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn cancelling_a_create_that_ended_status_reparse_is_a_misuse() {
    // IoCancelFileOpen's and FltCancelFileOpen's reference pages: STATUS_REPARSE says the file
    // was not opened, so it is not to be cancelled; the simulator reports the call and sends
    // nothing below. The reparse is followed all the same.
    let (mut m, c, d) = two_volumes("C:");
    m.boot();
    let redirect = mini_redirect(r"\??\D:\b.txt", false);
    fltcommon::start(&mut m, 0, redirect);
    let canceller =
        Config::new("Canceller", "380000").op(mj::CREATE, false, true).with_post(|p: &PostCall| {
            if p.status() == Status::REPARSE {
                let fo = unsafe { (*p.data().Iopb).TargetFileObject };
                unsafe { FltCancelFileOpen(p.instance(), fo) };
            }
            0
        });
    fltcommon::start(&mut m, 1, canceller);
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(r.reparsed.map(|r| r.volume), Some(d));
    assert_eq!(rules(&m), [Rule::CancelFileOpenMisuse]);
    assert_eq!(m.findings()[0].1.as_deref(), Some("Canceller"));

    // A legacy filter's IoCancelFileOpen on its create IRP once it holds STATUS_REPARSE.
    drop(m);
    let (mut m, c, _) = two_volumes("C:");
    install_legacy(&mut m, 0, "Legacy", "FSFilter Activity Monitor", StartType::Boot);
    legacy_completes(|irp| {
        let fo = create_file(irp)?;
        if name_of(fo) != r"\a.txt" {
            return None;
        }
        assert_eq!(replace(fo, r"\??\D:\b.txt"), 0);
        unsafe {
            (*irp).IoStatus.Anonymous.Status = Status::REPARSE.0;
            let device = (*IoGetCurrentIrpStackLocation(irp)).DeviceObject;
            let lower = IoGetLowerDeviceObject(device);
            IoCancelFileOpen(lower, fo);
            ObfDereferenceObject(lower.cast());
        }
        Some(complete(irp, Status::REPARSE, 0))
    });
    m.boot();
    fltcommon::order_clear();
    assert!(m.open(c, "a.txt", CreateOptions::open()).is_ok());
    assert_eq!(rules(&m), [Rule::CancelFileOpenMisuse]);
    assert_eq!(m.findings()[0].1.as_deref(), Some("Legacy"));
}

#[test]
fn a_name_replaced_by_hand_is_freed_by_the_io_manager_with_ex_free_pool() {
    // Before IoReplaceFileObjectName (Windows 7), SimRep freed FileObject->FileName.Buffer and put
    // a pool buffer of its own there; the I/O manager frees whatever buffer the name has
    // (IopParseDevice: ExFreePool(FileName.Buffer) when FileName.Length is not 0).
    let (mut m, c, d) = two_volumes("C:");
    install_legacy(&mut m, 0, "OldStyle", "FSFilter Activity Monitor", StartType::Boot);
    let use_pool = Rc::new(RefCell::new(true));
    let pool = use_pool.clone();
    legacy_completes(move |irp| {
        let fo = create_file(irp)?;
        if name_of(fo) != r"\a.txt" {
            return None;
        }
        let units: Vec<u16> = r"\??\D:\b.txt".encode_utf16().collect();
        let bytes = units.len() * 2;
        unsafe {
            let f = &mut *fo;
            if *pool.borrow() {
                ExFreePool(f.FileName.Buffer.cast());
                let buffer = ExAllocatePool2(PAGED, bytes, u32::from_le_bytes(*b"OldS"));
                std::ptr::copy_nonoverlapping(units.as_ptr(), buffer.cast::<u16>(), units.len());
                f.FileName.Buffer = buffer.cast();
            } else {
                // Memory that is not pool, the I/O manager's buffer left behind.
                f.FileName.Buffer = Box::leak(units.into_boxed_slice()).as_mut_ptr();
            }
            f.FileName.Length = bytes as u16;
            f.FileName.MaximumLength = bytes as u16;
        }
        Some(complete(irp, Status::REPARSE, 0))
    });
    m.boot();
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!((r.status, r.reparsed.map(|r| r.volume)), (Status::SUCCESS, Some(d)));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(pool_of(&m, "OldStyle"), 0, "the I/O manager freed the driver's block");
    *use_pool.borrow_mut() = false;
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(rules(&m), [Rule::BadPoolFree]);
}

#[test]
fn the_long_way_of_nt_query_full_attributes_file_reparses_too() {
    // NtQueryFullAttributesFile opens the file through the same parse (WRK IopParseDevice with a
    // query-only open packet): the reparsed open goes to D:, whose file answers the query.
    let (mut m, c, d) = two_volumes("C:");
    let _log = legacy_redirector(&mut m, r"\a.txt", Rc::new(RefCell::new(r"\??\D:\b.txt".into())));
    m.boot();
    let r = m.io(IoRequest::QueryAttributes { volume: c, path: "a.txt" });
    assert_eq!(r.status, Status::SUCCESS, "{:?}", m.findings());
    // FILE_NETWORK_OPEN_INFORMATION.EndOfFile, at byte 40.
    let eof = u64::from_le_bytes(r.data[40..48].try_into().unwrap());
    assert_eq!(eof, B.len() as u64);
    assert_eq!(r.reparsed.map(|r| (r.count, r.volume)), Some((1, d)));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_query_open_completed_with_status_reparse_is_not_followed_and_is_reported() {
    // Reparse works on IRP-based creates only (SimRep: "Fast IO cannot be redirected with Status
    // Reparse"): WRK IopParseDevice returns a FastIoQueryOpen's STATUS_REPARSE to the caller
    // without parsing anything. REPARSE_ON_FAST_IO, against the minifilter.
    let (mut m, c, _) = two_volumes("C:");
    m.boot();
    let network_query_open = fsfilter::MajorFunction::NetworkQueryOpen.code();
    let quick = Config::new("Quick", "370000").op(network_query_open, true, false).with_pre(
        |p: &PreCall| {
            p.set_status(Status::REPARSE, 0);
            (FLT_PREOP_COMPLETE, 0)
        },
    );
    fltcommon::start(&mut m, 0, quick);
    let r = m.io(IoRequest::QueryAttributes { volume: c, path: "a.txt" });
    assert!(r.fast_io);
    assert_eq!((r.status, r.data.len(), r.reparsed), (Status::REPARSE, 0, None));
    assert_eq!(rules(&m), [Rule::ReparseOnFastIo]);
    assert_eq!(m.findings()[0].1.as_deref(), Some("Quick"));
}

#[test]
fn a_tag_the_io_manager_does_not_know_fails_the_open_and_io_remount_retries_32_times() {
    // Reparse points in a file system filter driver (Learn, SimRep): a tag unknown to the I/O
    // manager fails the create with STATUS_IO_REPARSE_TAG_NOT_HANDLED; the reparse buffer
    // (Irp->Tail.Overlay.AuxiliaryBuffer) is freed by the I/O manager. IO_REMOUNT parses the same
    // name again, 32 times at most (WRK IO_MAX_REMOUNT_REPARSE_ATTEMPTS), then
    // STATUS_UNSUCCESSFUL.
    let (mut m, c, _) = two_volumes("C:");
    install_legacy(&mut m, 0, "Tagger", "FSFilter Activity Monitor", StartType::Boot);
    let information = Rc::new(RefCell::new(0x8000_0017_usize));
    let info = information.clone();
    legacy_completes(move |irp| {
        let fo = create_file(irp)?;
        if name_of(fo) != r"\a.txt" {
            return None;
        }
        let tag = *info.borrow();
        if tag != 1 {
            let aux = unsafe { ExAllocatePool2(PAGED, 64, u32::from_le_bytes(*b"RpBf")) };
            unsafe { (*irp).Tail.Overlay.AuxiliaryBuffer = aux.cast() };
        }
        Some(complete(irp, Status::REPARSE, tag))
    });
    m.boot();
    let since = m.events().len();
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status(0xC000_0279_u32 as i32));
    assert_eq!(requests(&m, since), ["IRP_MJ_CREATE C:", "C: STATUS_REPARSE"]);
    assert_eq!(pool_of(&m, "Tagger"), 0, "the I/O manager freed the reparse buffer");
    *information.borrow_mut() = 1;
    let since = m.events().len();
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!((r.status, r.reparsed), (Status::UNSUCCESSFUL, None));
    let creates = requests(&m, since).iter().filter(|t| t.starts_with("IRP_MJ_CREATE C:")).count();
    assert_eq!(creates, 33);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// What the legacy filter of slot 0 (`Recorder`) saw of each create: its name, whether it had a
/// `RelatedFileObject` (and whether it is `dir`'s), and the requestor's process id; it completes
/// `STATUS_REPARSE` with the name `rename` gives for a name, when it gives one.
fn recording_redirector(
    m: &mut Machine,
    dir: Rc<RefCell<usize>>,
    rename: impl Fn(&str) -> Option<String> + 'static,
) -> Log {
    install_legacy(m, 0, "Recorder", "FSFilter Activity Monitor", StartType::Boot);
    let log: Log = Rc::default();
    let l = log.clone();
    legacy_completes(move |irp| {
        let fo = create_file(irp)?;
        let name = name_of(fo);
        let related = unsafe { (*fo).RelatedFileObject } as usize;
        let pid = unsafe { fsfilter_sim::exports::ps::IoGetRequestorProcessId(irp) };
        let rel = match related {
            0 => "none",
            r if r == *dir.borrow() => "dir",
            _ => "other",
        };
        l.borrow_mut().push(format!("{name} related={rel} pid={pid:#x}"));
        let to = rename(&name)?;
        assert_eq!(replace(fo, &to), 0);
        Some(complete(irp, Status::REPARSE, 0))
    });
    log
}

/// `C:` with `dir\a.txt` besides `a.txt`, `D:` with `b.txt`, booted, with the recording
/// redirector; the handle of `C:\dir` and its file object.
fn relative_machine(
    rename: impl Fn(&str) -> Option<String> + 'static,
) -> (Machine, VolumeId, fsfilter_sim::Handle, Log) {
    let mut m = machine(1);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", A).file("dir\\a.txt", b"dir's a"),
    );
    m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs).file("b.txt", B));
    m.install_filter_manager();
    let dir = Rc::new(RefCell::new(0usize));
    let log = recording_redirector(&mut m, dir.clone(), rename);
    m.boot();
    let h = m.open(c, "dir", CreateOptions::open()).unwrap();
    *dir.borrow_mut() = m.kernel(|k| k.user_handle(h).unwrap().fo);
    log.borrow_mut().clear();
    (m, c, h, log)
}

#[test]
fn a_relative_open_reparsed_to_an_absolute_name_loses_its_related_file_object() {
    // WRK IopParseDevice clears op->RelatedFileObject before it returns STATUS_REPARSE (all but
    // IO_REMOUNT), and ObpLookupObjectName parses an absolute name from the root: the second
    // create has no RelatedFileObject.
    let (mut m, _c, dir, log) =
        relative_machine(|n| (n == "x.txt").then(|| r"\??\D:\b.txt".to_owned()));
    let r = m.create_relative(dir, "x.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "{:?}", m.findings());
    assert_eq!(
        log.borrow()[..],
        ["x.txt related=dir pid=0x1000", r"\b.txt related=none pid=0x1000"]
    );
    assert_eq!(&m.read(r.handle.unwrap(), Some(0), 64, IoMode::Cached).data[..], B);
    // Without a reparse, a relative open is the related directory's file.
    let r = m.create_relative(dir, "a.txt", CreateOptions::open());
    assert_eq!(&m.read(r.handle.unwrap(), Some(0), 64, IoMode::Cached).data[..], b"dir's a");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_relative_reparse_name_is_parsed_relative_to_the_same_file_object_again() {
    // ObpLookupObjectName with a RootDirectory that is a file object: a reparse name that does
    // not start with \ is parsed by the same parse routine (IopParseFile, which names the file
    // object the RelatedFileObject again), using one of the 32 attempts.
    let (mut m, _c, dir, log) = relative_machine(|n| (n == "x.txt").then(|| "a.txt".to_owned()));
    let r = m.create_relative(dir, "x.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "{:?}", m.findings());
    assert_eq!(log.borrow()[..], ["x.txt related=dir pid=0x1000", "a.txt related=dir pid=0x1000"]);
    assert_eq!(&m.read(r.handle.unwrap(), Some(0), 64, IoMode::Cached).data[..], b"dir's a");
}

#[test]
fn a_relative_open_counts_its_reparses_from_the_root_anew() {
    // ObpLookupObjectName: the relative lookup's reparse to an absolute name goes to ParseFromRoot
    // without taking an attempt, and the lookup from the root sets MaxReparse to 32 again (but
    // after \??\, whose shortcut skips that): 1 relative create and 32 from the root.
    let (mut m, _c, dir, log) = relative_machine(|n| {
        (n == "x.txt" || n == r"\a.txt").then(|| r"\Device\HarddiskVolume1\a.txt".to_owned())
    });
    let r = m.create_relative(dir, "x.txt", CreateOptions::open());
    assert_eq!(r.status, Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(log.borrow().len(), 33);
    assert_eq!(r.reparsed.map(|r| r.count), Some(32));
}

#[test]
fn the_reparsed_create_is_the_callers_in_its_thread_and_process() {
    // The parse loop runs in the caller's NtCreateFile: every create's IRP carries the caller's
    // thread (IoGetRequestorProcessId: the editor's process).
    let (mut m, c, _dir, log) =
        relative_machine(|n| (n == r"\a.txt").then(|| r"\??\D:\b.txt".to_owned()));
    let editor = m.new_process("editor").unwrap();
    let h = m.as_process(editor, |m| m.open(c, "a.txt", CreateOptions::open())).unwrap();
    assert_eq!(
        log.borrow()[..],
        [r"\a.txt related=none pid=0x1004", r"\b.txt related=none pid=0x1004"]
    );
    assert_eq!(&m.read(h, Some(0), 64, IoMode::Cached).data[..], B);
}

#[test]
fn the_posts_of_the_filters_above_run_before_the_reparsed_create_starts() {
    // The I/O manager sees STATUS_REPARSE once the create IRP completed, its completion routines
    // (the Filter Manager's, which runs the minifilters' posts) run: the posts of the first
    // create come before the second create's pre callbacks.
    let (mut m, c, _) = two_volumes("C:");
    m.boot();
    let redirect = mini_redirect(r"\??\D:\b.txt", true);
    fltcommon::start(&mut m, 0, redirect);
    let watcher =
        Config::new("Watcher", "380000").op(mj::CREATE, false, true).with_post(|p: &PostCall| {
            fltcommon::order_push(format!("post {}", p.status()));
            0
        });
    fltcommon::start(&mut m, 1, watcher);
    fltcommon::order_clear();
    assert!(m.open(c, "a.txt", CreateOptions::open()).is_ok());
    let order: Vec<String> =
        fltcommon::order().into_iter().filter(|o| o.starts_with("p")).collect();
    assert_eq!(order, [r"pre \a.txt", "post STATUS_REPARSE", r"pre \b.txt", "post STATUS_SUCCESS"]);
}
