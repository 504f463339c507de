//! The memory manager's page writers and their FsFilter operations (docs/simulator.md, "FsFilter
//! callbacks"): the modified-page writer's acquire and release around an asynchronous paging
//! write in its own thread, a flush's around a synchronous one in the caller's, the lazy writer's
//! write without either, and what a driver's failure of an acquire or a release does.

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

use std::cell::Cell;
use std::ffi::c_void;

use fltcommon::{Config, Seen, install_legacy, legacy_driver, order, order_clear, rules, start};
use fsfilter::Status;
use fsfilter_sim::{FsKind, Handle, Machine, PageWriter, Rule, StartType, VolumeId, VolumeSpec};
use windows_sys::Wdk::Storage::FileSystem::{
    FS_FILTER_CALLBACK_DATA, FS_FILTER_CALLBACKS, FsRtlRegisterFileSystemFilterCallbacks,
};
use windows_sys::Win32::Foundation::NTSTATUS;

const WRITE: u8 = 0x04;
const ACQUIRE_MOD_WRITE: u8 = 0xFD;
const RELEASE_MOD_WRITE: u8 = 0xFC;
const ACQUIRE_CC_FLUSH: u8 = 0xFB;
const RELEASE_CC_FLUSH: u8 = 0xFA;

const IRP_NOCACHE: u32 = 0x1;
const IRP_PAGING_IO: u32 = 0x2;
const IRP_SYNCHRONOUS_PAGING_IO: u32 = 0x40;

const FILE: &[u8] = b"0123456789abcdef";

thread_local! {
    /// What the legacy filter's pre routine answers, for an acquire and for a release.
    static ACQUIRE_STATUS: Cell<Status> = const { Cell::new(Status::SUCCESS) };
    static RELEASE_STATUS: Cell<Status> = const { Cell::new(Status::SUCCESS) };
    /// The ending offset the legacy filter's pre routine saw for the modified-page writer's
    /// acquire, and whether it was given somewhere to find the resource to release.
    static ENDING: Cell<Option<(i64, bool)>> = const { Cell::new(None) };
    /// The IRQL of each call of the legacy filter's pre routine: (operation, IRQL).
    static LEG_IRQLS: std::cell::RefCell<Vec<(u8, u8)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "system" fn leg_pre(
    data: *const FS_FILTER_CALLBACK_DATA,
    context: *mut *mut c_void,
) -> NTSTATUS {
    let d = unsafe { &*data };
    assert_eq!(unsafe { (*d.DeviceObject).DriverObject }.cast_const(), legacy_driver(0));
    if d.Operation == ACQUIRE_MOD_WRITE {
        let a = unsafe { d.Parameters.AcquireForModifiedPageWriter };
        let ending = unsafe { a.EndingOffset.as_ref() }.copied().unwrap_or(-1);
        ENDING.set(Some((ending, !a.ResourceToRelease.is_null())));
    }
    order_push(format!("Leg:fs_pre:{}", d.Operation));
    let irql = fsfilter_sim::kernel::current_irql();
    LEG_IRQLS.with(|l| l.borrow_mut().push((d.Operation, irql)));
    if !context.is_null() {
        unsafe { *context = 0x5EC7 as *mut c_void };
    }
    // The acquires' codes are odd.
    let status = if d.Operation & 1 == 1 { ACQUIRE_STATUS.get() } else { RELEASE_STATUS.get() };
    status.0
}

unsafe extern "system" fn leg_post(
    data: *const FS_FILTER_CALLBACK_DATA,
    status: NTSTATUS,
    context: *const c_void,
) {
    let d = unsafe { &*data };
    assert_eq!(context as usize, 0x5EC7, "the context of the driver's own pre routine");
    order_push(format!("Leg:fs_post:{}:{}", d.Operation, Status(status)));
}

fn order_push(s: String) {
    fltcommon::order_push(s);
}

/// A booted machine: C: with a file, the Filter Manager, a legacy Encryption filter "Leg"
/// (slot 0) above its frame 0 with FsFilter routines for the flush's and the modified-page
/// writer's operations, and minifilter "Av" (slot 0) in frame 0 registering them and the write.
/// The stack: Leg, frame 0 (Av), Ntfs. Answers the machine, the volume and a handle to the file.
fn machine_with(av: Config) -> (Machine, VolumeId, Handle) {
    ACQUIRE_STATUS.set(Status::SUCCESS);
    RELEASE_STATUS.set(Status::SUCCESS);
    ENDING.set(None);
    let mut m = fltcommon::machine(5);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.db", FILE));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "Leg", "FSFilter Encryption", StartType::Boot);
    m.boot();
    let mut t: FS_FILTER_CALLBACKS = unsafe { std::mem::zeroed() };
    t.SizeOfFsFilterCallbacks = size_of::<FS_FILTER_CALLBACKS>() as u32;
    t.PreAcquireForCcFlush = Some(leg_pre);
    t.PostAcquireForCcFlush = Some(leg_post);
    t.PreReleaseForCcFlush = Some(leg_pre);
    t.PostReleaseForCcFlush = Some(leg_post);
    t.PreAcquireForModifiedPageWriter = Some(leg_pre);
    t.PostAcquireForModifiedPageWriter = Some(leg_post);
    t.PreReleaseForModifiedPageWriter = Some(leg_pre);
    t.PostReleaseForModifiedPageWriter = Some(leg_post);
    let s = unsafe { FsRtlRegisterFileSystemFilterCallbacks(legacy_driver(0), &t) };
    assert_eq!(Status(s), Status::SUCCESS);
    let av = [ACQUIRE_MOD_WRITE, RELEASE_MOD_WRITE, ACQUIRE_CC_FLUSH, RELEASE_CC_FLUSH, WRITE]
        .into_iter()
        .fold(av, |c, major| c.op(major, true, true));
    start(&mut m, 0, av);
    let h = m.open(c, "data.db", fsfilter_sim::CreateOptions::open()).expect("open");
    order_clear();
    fltcommon::seen_clear(0);
    (m, c, h)
}

/// The minifilter's pre callbacks of the write: (IRP flags, thread).
fn write_pres() -> Vec<(u32, u32)> {
    fltcommon::pres(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Pre { major: WRITE, irp_flags, thread, .. } => Some((irp_flags, thread)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_modified_page_writer_brackets_an_asynchronous_paging_write_with_its_pair() {
    // The minifilter reads the ending offset the Filter Manager copied from FsRtl's data.
    let seen_end = std::rc::Rc::new(Cell::new(None));
    let s = seen_end.clone();
    let av = Config::new("Av", "100000").with_pre(move |p| {
        if p.major() == ACQUIRE_MOD_WRITE {
            let a = unsafe { p.iopb().Parameters.AcquireForModifiedPageWriter };
            s.set(unsafe { a.EndingOffset.as_ref() }.copied());
        }
        (0, 0) // FLT_PREOP_SUCCESS_WITH_CALLBACK
    });
    let (mut m, c, h) = machine_with(av);
    let r = m.page_write(h, 4, b"WXYZ", PageWriter::ModifiedPageWriter);
    assert_eq!((r.status, r.information), (Status::SUCCESS, 4));
    assert_eq!(
        order(),
        [
            "Leg:fs_pre:253",
            "Av:pre:253",
            "Av:post:253",
            "Leg:fs_post:253:STATUS_SUCCESS",
            "Leg:irp:4",
            "Av:pre:4",
            "Av:post:4",
            "Leg:fs_pre:252",
            "Av:pre:252",
            "Av:post:252",
            "Leg:fs_post:252:STATUS_SUCCESS",
        ]
    );
    // EndingOffset: the end of the write; a place for the resource to release.
    assert_eq!(ENDING.get(), Some((8, true)));
    assert_eq!(seen_end.get(), Some(8));
    // IoAsynchronousPageWrite: paging, non-cached, not synchronous paging I/O; and not the
    // caller's thread.
    let writes = write_pres();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let (flags, mpw_thread) = writes[0];
    assert_eq!(flags & (IRP_PAGING_IO | IRP_NOCACHE), IRP_PAGING_IO | IRP_NOCACHE);
    assert_eq!(flags & IRP_SYNCHRONOUS_PAGING_IO, 0, "{flags:#x}");
    fltcommon::seen_clear(0);
    let r = m.write(h, Some(0), b"0", fsfilter_sim::IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    let user_thread = write_pres()[0].1;
    assert_ne!(mpw_thread, user_thread, "the modified-page writer runs in a thread of its own");
    assert_eq!(m.file_contents(c, "data.db").unwrap(), b"0123WXYZ89abcdef");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_flush_brackets_a_synchronous_paging_write_in_the_callers_thread() {
    let (mut m, c, h) = machine_with(Config::new("Av", "100000"));
    let r = m.page_write(h, 0, b"ABCD", PageWriter::Flush);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(
        order(),
        [
            "Leg:fs_pre:251",
            "Av:pre:251",
            "Av:post:251",
            "Leg:fs_post:251:STATUS_SUCCESS",
            "Leg:irp:4",
            "Av:pre:4",
            "Av:post:4",
            "Leg:fs_pre:250",
            "Av:pre:250",
            "Av:post:250",
            "Leg:fs_post:250:STATUS_SUCCESS",
        ]
    );
    let (flags, flush_thread) = write_pres()[0];
    let paging = IRP_PAGING_IO | IRP_NOCACHE | IRP_SYNCHRONOUS_PAGING_IO;
    assert_eq!(flags & paging, paging, "IoSynchronousPageWrite: {flags:#x}");
    fltcommon::seen_clear(0);
    assert_eq!(m.write(h, Some(0), b"A", fsfilter_sim::IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(write_pres()[0].1, flush_thread, "a flush runs in the caller's thread");
    assert_eq!(m.file_contents(c, "data.db").unwrap(), b"ABCD456789abcdef");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_lazy_writer_raises_no_fs_filter_operation() {
    // Its acquire goes to the file system's own cache-manager callbacks, which no filter sees.
    let (mut m, _, h) = machine_with(Config::new("Av", "100000"));
    let r = m.page_write(h, 0, b"lazy", PageWriter::LazyWriter);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(order(), ["Leg:irp:4", "Av:pre:4", "Av:post:4"]);
    let (flags, _) = write_pres()[0];
    assert_ne!(flags & IRP_SYNCHRONOUS_PAGING_IO, 0, "{flags:#x}");
}

#[test]
fn a_minifilter_that_fails_the_mod_write_acquire_keeps_the_write_from_being_sent() {
    let deny = Config::new("Av", "100000").with_pre(|p| {
        if p.major() == ACQUIRE_MOD_WRITE {
            p.set_status(Status::FILE_LOCK_CONFLICT, 0);
            return (4, 0); // FLT_PREOP_COMPLETE
        }
        (0, 0)
    });
    let (mut m, c, h) = machine_with(deny);
    let r = m.page_write(h, 0, b"gone", PageWriter::ModifiedPageWriter);
    assert_eq!(r.status, Status::FILE_LOCK_CONFLICT);
    // No write, no release; the legacy filter above hears the failure in its post.
    assert_eq!(
        order(),
        ["Leg:fs_pre:253", "Av:pre:253", "Leg:fs_post:253:STATUS_FILE_LOCK_CONFLICT"]
    );
    assert_eq!(m.file_contents(c, "data.db").unwrap(), FILE);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_legacy_filter_that_fails_the_flush_acquire_is_the_last_called() {
    let (mut m, c, h) = machine_with(Config::new("Av", "100000"));
    ACQUIRE_STATUS.set(Status::INSUFFICIENT_RESOURCES);
    let r = m.page_write(h, 0, b"gone", PageWriter::Flush);
    assert_eq!(r.status, Status::INSUFFICIENT_RESOURCES);
    assert_eq!(order(), ["Leg:fs_pre:251"]);
    assert_eq!(m.file_contents(c, "data.db").unwrap(), FILE);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_failed_release_is_reported_and_taken_for_success() {
    for writer in [PageWriter::ModifiedPageWriter, PageWriter::Flush] {
        let (mut m, _, h) = machine_with(Config::new("Av", "100000"));
        RELEASE_STATUS.set(Status::UNSUCCESSFUL);
        let r = m.page_write(h, 0, b"kept", writer);
        assert_eq!(r.status, Status::SUCCESS, "{writer:?}");
        // The walk goes on below the failing driver.
        assert_eq!(order().len(), 11, "{writer:?}: {:?}", order());
        assert_eq!(rules(&m), [Rule::StatusInvalidForOperation], "{writer:?}");
        assert!(m.findings()[0].2.contains("RELEASE_FOR"), "{:?}", m.findings());
    }
}

#[test]
fn a_minifilter_failure_of_a_release_is_completed_with_success() {
    // Rule 5: a release cannot fail. The Filter Manager reports the minifilter and FsRtl hears
    // a success.
    let cfg = Config::new("Av", "100000").with_pre(|p| {
        if p.major() == RELEASE_MOD_WRITE {
            p.set_status(Status::UNSUCCESSFUL, 0);
            return (4, 0); // FLT_PREOP_COMPLETE
        }
        (0, 0)
    });
    let (mut m, _, h) = machine_with(cfg);
    let r = m.page_write(h, 0, b"kept", PageWriter::ModifiedPageWriter);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(rules(&m), [Rule::StatusInvalidForOperation], "{:?}", m.findings());
    assert_eq!(m.findings()[0].1.as_deref(), Some("Av"));
    assert!(order().contains(&"Leg:fs_post:252:STATUS_SUCCESS".to_owned()), "{:?}", order());
}

#[test]
fn a_page_write_on_a_closed_handle_is_refused() {
    let (mut m, _, h) = machine_with(Config::new("Av", "100000"));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    let r = m.page_write(h, 0, b"late", PageWriter::Flush);
    assert_eq!(r.status, Status::INVALID_HANDLE);
    assert!(order().iter().all(|o| !o.contains("fs_pre")), "{:?}", order());
}

#[test]
fn a_write_nothing_completes_leaves_the_file_acquired() {
    // The writer waits for its write: a minifilter that pends it and never completes it holds
    // the writer, and the release never comes.
    let hold = Config::new("Av", "100000").with_pre(|p| {
        if p.major() == WRITE {
            return (2, 0); // FLT_PREOP_PENDING
        }
        (0, 0)
    });
    let (mut m, _, h) = machine_with(hold);
    let r = m.page_write(h, 0, b"held", PageWriter::ModifiedPageWriter);
    assert_eq!(r.status, Status::PENDING);
    let o = order();
    assert!(o.contains(&"Av:pre:4".to_owned()), "{o:?}");
    assert!(!o.iter().any(|e| e.contains(":252")), "no release: {o:?}");
}

/// The IRQL of each pre callback of the minifilter in slot 0: (operation, IRQL).
fn mini_irqls() -> Vec<(u8, u8)> {
    fltcommon::pres(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Pre { major, irql, .. } => Some((major, irql)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_modified_page_writers_release_runs_at_apc_level() {
    // WRK: the asynchronous page write completes through a special kernel APC in the
    // modified-page writer's thread (IopCompletePageWrite), which calls MiWriteComplete, which
    // releases the file (FsRtlReleaseFileForModWrite): the release's callbacks run at
    // APC_LEVEL. Its acquire, and a flush's pair, run at PASSIVE_LEVEL.
    let (mut m, _, h) = machine_with(Config::new("Av", "100000"));
    LEG_IRQLS.with(|l| l.borrow_mut().clear());
    let r = m.page_write(h, 0, b"abcd", PageWriter::ModifiedPageWriter);
    assert_eq!(r.status, Status::SUCCESS);
    let (passive, apc) = (0, 1);
    let fs_filter = [(ACQUIRE_MOD_WRITE, passive), (RELEASE_MOD_WRITE, apc)];
    assert_eq!(LEG_IRQLS.with(|l| l.borrow().clone()), fs_filter);
    let mini: Vec<_> = mini_irqls().into_iter().filter(|(major, _)| *major != WRITE).collect();
    assert_eq!(mini, fs_filter);
    LEG_IRQLS.with(|l| l.borrow_mut().clear());
    fltcommon::seen_clear(0);
    let r = m.page_write(h, 0, b"abcd", PageWriter::Flush);
    assert_eq!(r.status, Status::SUCCESS);
    let fs_filter = [(ACQUIRE_CC_FLUSH, passive), (RELEASE_CC_FLUSH, passive)];
    assert_eq!(LEG_IRQLS.with(|l| l.borrow().clone()), fs_filter);
    let mini: Vec<_> = mini_irqls().into_iter().filter(|(major, _)| *major != WRITE).collect();
    assert_eq!(mini, fs_filter);
    // And the IRQL is the caller's again.
    assert_eq!(fsfilter_sim::kernel::current_irql(), passive);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

thread_local! {
    /// The callback data of the write the minifilter holds (FLT_PREOP_PENDING), or 0.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

#[test]
fn a_write_completed_after_its_request_returned_releases_the_file_then() {
    // The minifilter pends the modified-page writer's write and completes it from the pre
    // callback of a later write. The release comes with the completion (WRK: MiWriteComplete,
    // in the write's completion APC), in the writer's thread, at APC_LEVEL.
    let cfg = Config::new("Av", "100000").with_pre(|p| {
        if p.major() == WRITE {
            let held = HELD.get();
            if held == 0 {
                HELD.set(p.data as usize);
                return (2, 0); // FLT_PREOP_PENDING
            }
            HELD.set(0);
            // SAFETY: the callback data of the write held above, FLT_PREOP_SUCCESS_NO_CALLBACK.
            unsafe {
                windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCompletePendedPreOperation(
                    held as *mut _,
                    1,
                    std::ptr::null(),
                )
            };
        }
        (0, 0)
    });
    HELD.set(0);
    let (mut m, c, h) = machine_with(cfg);
    let r = m.page_write(h, 0, b"held", PageWriter::ModifiedPageWriter);
    assert_eq!(r.status, Status::PENDING);
    assert!(!order().iter().any(|e| e.contains(":252")), "no release yet: {:?}", order());
    order_clear();
    fltcommon::seen_clear(0);
    let r = m.write(h, Some(8), b"next", fsfilter_sim::IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    m.settle();
    assert_eq!(m.file_contents(c, "data.db").unwrap(), b"held4567nextcdef");
    let o = order();
    assert_eq!(
        o.iter().filter(|e| e.contains(":252")).collect::<Vec<_>>(),
        ["Leg:fs_pre:252", "Av:pre:252", "Av:post:252", "Leg:fs_post:252:STATUS_SUCCESS"],
        "{o:?}"
    );
    let release: Vec<_> = fltcommon::pres(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Pre { major: RELEASE_MOD_WRITE, irql, thread, .. } => Some((irql, thread)),
            _ => None,
        })
        .collect();
    let user_thread = write_pres()[0].1;
    assert_eq!(release.len(), 1, "{release:?}");
    assert_eq!(release[0].0, 1, "APC_LEVEL");
    assert_ne!(release[0].1, user_thread, "the writer's thread");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_page_writers_write_no_file_that_cannot_be_mapped() {
    // A volume open and a directory cannot be mapped (NtCreateSection answers
    // STATUS_INVALID_FILE_FOR_SECTION), so they have no pages for the modified-page writer or a
    // flush to write: no FsFilter operation, no write. The lazy writer's paging write is the
    // user API's, as before.
    let (mut m, c, _) = machine_with(Config::new("Av", "100000"));
    let volume = m.open(c, "", fsfilter_sim::CreateOptions::open().options(0)).expect("volume");
    let dir = m.open(c, "dir", fsfilter_sim::CreateOptions::directory()).expect("directory");
    for h in [volume, dir] {
        let r = m.create_section(h, fsfilter::section_sync::PAGE_READONLY);
        assert_eq!(r.status, Status::INVALID_FILE_FOR_SECTION);
        for writer in [PageWriter::ModifiedPageWriter, PageWriter::Flush] {
            order_clear();
            let r = m.page_write(h, 0, b"page", writer);
            assert_eq!((r.status, r.information), (Status::INVALID_FILE_FOR_SECTION, 0));
            assert_eq!(order(), Vec::<String>::new(), "{writer:?}");
        }
    }
    order_clear();
    let r = m.page_write(dir, 0, b"page", PageWriter::LazyWriter);
    assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST);
    assert_eq!(order(), ["Leg:irp:4", "Av:pre:4", "Av:post:4"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
