//! FsFilter callbacks (docs/simulator.md, "FsFilter callbacks"): `FsRtlRegisterFileSystemFilterCallbacks`,
//! the walk of a file's stack when a section is created on it (pre routines from the top down,
//! posts from the bottom up, the Filter Manager's frame presenting the operation to its
//! minifilters), what a failure and a completion do, and the verifier's findings.

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
use fsfilter::section_sync::{PAGE_EXECUTE_READ, PAGE_READONLY};
use fsfilter_sim::nt::access;
use fsfilter_sim::{CreateOptions, FsKind, Handle, Machine, Rule, StartType, VolumeId, VolumeSpec};
use windows_sys::Wdk::Storage::FileSystem::{
    FS_FILTER_CALLBACK_DATA, FS_FILTER_CALLBACKS, FsRtlRegisterFileSystemFilterCallbacks,
};
use windows_sys::Win32::Foundation::NTSTATUS;

const ACQUIRE: u8 = 0xFF;
const RELEASE: u8 = 0xFE;

thread_local! {
    /// What the legacy filter's pre routine answers, for an acquire and for a release.
    static ACQUIRE_STATUS: Cell<Status> = const { Cell::new(Status::SUCCESS) };
    static RELEASE_STATUS: Cell<Status> = const { Cell::new(Status::SUCCESS) };
    /// The page protection and sync type the legacy filter's pre routine saw last.
    static SAW: Cell<(i32, u32)> = const { Cell::new((-1, 0)) };
    /// The legacy filter's pre routine was given no completion-context pointer, last time.
    static NULL_CONTEXT: Cell<bool> = const { Cell::new(false) };
    /// Run by the legacy filter's pre routine of an acquire, once.
    static LEG_HOOK: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

unsafe extern "system" fn leg_pre(
    data: *const FS_FILTER_CALLBACK_DATA,
    context: *mut *mut c_void,
) -> NTSTATUS {
    let d = unsafe { &*data };
    assert_eq!(d.SizeOfFsFilterCallbackData as usize, size_of::<FS_FILTER_CALLBACK_DATA>());
    // Our own device: the walk names each device it calls.
    assert_eq!(unsafe { (*d.DeviceObject).DriverObject }.cast_const(), legacy_driver(0));
    if d.Operation == ACQUIRE {
        let a = unsafe { d.Parameters.AcquireForSectionSynchronization };
        SAW.set((a.SyncType, a.PageProtection));
    }
    order_push(format!("Leg:fs_pre:{}", d.Operation));
    if d.Operation == ACQUIRE
        && let Some(hook) = LEG_HOOK.with(|h| h.borrow_mut().take())
    {
        hook();
    }
    // NULL when the registered table has no post routine for the operation (WRK).
    if !context.is_null() {
        unsafe { *context = 0x5EC7 as *mut c_void };
    }
    NULL_CONTEXT.set(context.is_null());
    let status = if d.Operation == ACQUIRE { ACQUIRE_STATUS.get() } else { RELEASE_STATUS.get() };
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

fn table(size: u32) -> FS_FILTER_CALLBACKS {
    let mut t: FS_FILTER_CALLBACKS = unsafe { std::mem::zeroed() };
    t.SizeOfFsFilterCallbacks = size;
    t.PreAcquireForSectionSynchronization = Some(leg_pre);
    t.PostAcquireForSectionSynchronization = Some(leg_post);
    t.PreReleaseForSectionSynchronization = Some(leg_pre);
    t.PostReleaseForSectionSynchronization = Some(leg_post);
    t
}

/// A booted machine: C: with a file, the Filter Manager, and a legacy Encryption filter "Leg"
/// (slot 0) above its frame 0, with FsFilter routines that answer success.
fn legacy_machine() -> (Machine, VolumeId) {
    ACQUIRE_STATUS.set(Status::SUCCESS);
    RELEASE_STATUS.set(Status::SUCCESS);
    let mut m = fltcommon::machine(3);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.exe", b"MZ"));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "Leg", "FSFilter Encryption", StartType::Boot);
    m.boot();
    let t = table(size_of::<FS_FILTER_CALLBACKS>() as u32);
    let s = unsafe { FsRtlRegisterFileSystemFilterCallbacks(legacy_driver(0), &t) };
    assert_eq!(Status(s), Status::SUCCESS);
    (m, c)
}

/// A booted machine: C: with a file, the Filter Manager, a legacy Encryption filter (slot 0)
/// above its frame 0 with FsFilter routines, and minifilter "Av" (slot 0) in frame 0 registering
/// both section-synchronization operations. The stack: Leg, frame 0 (Av), Ntfs.
fn machine_with(av: Config) -> (Machine, Handle) {
    let (mut m, c) = legacy_machine();
    start(&mut m, 0, av.op(ACQUIRE, true, true).op(RELEASE, true, true));
    let read_execute = CreateOptions::open().access(access::GENERIC_READ | access::GENERIC_EXECUTE);
    let h = m.open(c, "a.exe", read_execute).expect("open");
    order_clear();
    (m, h)
}

#[test]
fn a_section_walks_the_stack_pre_top_down_and_post_bottom_up() {
    let (mut m, h) = machine_with(Config::new("Av", "100000"));
    let r = m.create_section(h, PAGE_EXECUTE_READ);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(
        order(),
        [
            "Leg:fs_pre:255",
            "Av:pre:255",
            "Av:post:255",
            "Leg:fs_post:255:STATUS_SUCCESS",
            "Leg:fs_pre:254",
            "Av:pre:254",
            "Av:post:254",
            "Leg:fs_post:254:STATUS_SUCCESS",
        ]
    );
    assert_eq!(SAW.get(), (1, PAGE_EXECUTE_READ), "SyncTypeCreateSection, the protection");
    assert!(!NULL_CONTEXT.get());
    // The minifilter saw an FsFilter operation with the protection, and its post the status.
    let pre = fltcommon::pres(0);
    assert!(
        matches!(pre[0], Seen::Pre { major: ACQUIRE, data_flags, irp_flags: 0, irql: 0, .. }
            if data_flags == 0x4),
        "{pre:?}"
    );
    let post = fltcommon::posts(0);
    assert!(matches!(post[0], Seen::Post { major: ACQUIRE, status: 0, .. }), "{post:?}");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_minifilter_that_fails_the_acquire_fails_the_section_and_the_drivers_above_hear_it() {
    let deny = Config::new("Av", "100000").with_pre(|p| {
        p.set_status(Status::ACCESS_DENIED, 0);
        (4, 0) // FLT_PREOP_COMPLETE
    });
    let (mut m, h) = machine_with(deny);
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::ACCESS_DENIED);
    // No post for the minifilter that completed it, none of the release.
    assert_eq!(order(), ["Leg:fs_pre:255", "Av:pre:255", "Leg:fs_post:255:STATUS_ACCESS_DENIED"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_legacy_filter_that_fails_the_acquire_is_the_last_called_and_gets_no_post() {
    let (mut m, h) = machine_with(Config::new("Av", "100000"));
    ACQUIRE_STATUS.set(Status::INSUFFICIENT_RESOURCES);
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::INSUFFICIENT_RESOURCES);
    assert_eq!(order(), ["Leg:fs_pre:255"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn completed_successfully_ends_the_walk_as_a_success() {
    let (mut m, h) = machine_with(Config::new("Av", "100000"));
    ACQUIRE_STATUS.set(Status::FSFILTER_OP_COMPLETED_SUCCESSFULLY);
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::SUCCESS);
    // Nothing below it for the acquire; its own post with STATUS_SUCCESS; the release as usual.
    assert_eq!(
        order(),
        [
            "Leg:fs_pre:255",
            "Leg:fs_post:255:STATUS_SUCCESS",
            "Leg:fs_pre:254",
            "Av:pre:254",
            "Av:post:254",
            "Leg:fs_post:254:STATUS_SUCCESS",
        ]
    );
}

#[test]
fn a_release_cannot_fail_a_failure_is_reported_and_taken_for_success() {
    let (mut m, h) = machine_with(Config::new("Av", "100000"));
    RELEASE_STATUS.set(Status::UNSUCCESSFUL);
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(order().len(), 8, "the walk goes on: {:?}", order());
    assert_eq!(rules(&m), [Rule::StatusInvalidForOperation]);
    // Reported against the driver by its name, as every other finding (until December 6, by
    // its driver object's name, `\FileSystem\Leg`).
    assert_eq!(m.findings()[0].1.as_deref(), Some("Leg"), "{:?}", m.findings());
}

#[test]
fn a_minifilter_may_not_pend_or_fail_a_release() {
    let cfg = Config::new("Av", "100000").with_pre(|p| {
        if p.major() == ACQUIRE {
            return (2, 0); // FLT_PREOP_PENDING
        }
        p.set_status(Status::UNSUCCESSFUL, 0);
        (4, 0)
    });
    let (mut m, h) = machine_with(cfg);
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(rules(&m), [Rule::PendingOnFastIo, Rule::StatusInvalidForOperation]);
    // The pend was taken for SUCCESS_NO_CALLBACK, the failed release for success.
    assert_eq!(
        order(),
        [
            "Leg:fs_pre:255",
            "Av:pre:255",
            "Leg:fs_post:255:STATUS_SUCCESS",
            "Leg:fs_pre:254",
            "Av:pre:254",
            "Leg:fs_post:254:STATUS_SUCCESS",
        ]
    );
}

#[test]
fn registration_checks_its_arguments_and_honours_the_table_size() {
    let (mut m, h) = machine_with(Config::new("Av", "100000"));
    let t = table(0);
    let s = unsafe { FsRtlRegisterFileSystemFilterCallbacks(legacy_driver(0), &t) };
    assert_eq!(Status(s), Status::INVALID_PARAMETER, "a zero size");
    let s = unsafe { FsRtlRegisterFileSystemFilterCallbacks(std::ptr::null(), &t) };
    assert_eq!(Status(s), Status::INVALID_PARAMETER);
    let s = unsafe { FsRtlRegisterFileSystemFilterCallbacks(legacy_driver(0), std::ptr::null()) };
    assert_eq!(Status(s), Status::INVALID_PARAMETER);
    // A table whose size covers only the pre-acquire routine replaces the first: its post and
    // the release routines are never called.
    let pre_only = std::mem::offset_of!(FS_FILTER_CALLBACKS, PreAcquireForSectionSynchronization)
        + size_of::<usize>();
    let t = table(pre_only as u32);
    let s = unsafe { FsRtlRegisterFileSystemFilterCallbacks(legacy_driver(0), &t) };
    assert_eq!(Status(s), Status::SUCCESS);
    assert_eq!(m.create_section(h, PAGE_READONLY).status, Status::SUCCESS);
    assert_eq!(
        order(),
        ["Leg:fs_pre:255", "Av:pre:255", "Av:post:255", "Av:pre:254", "Av:post:254"]
    );
    assert!(NULL_CONTEXT.get(), "no post routine: no completion-context pointer (WRK)");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn an_fsrtl_data_scan_section_on_a_file_object_never_opened_is_reported_before_the_acquire() {
    // WRK mm/creasect.c MmCreateSection: the file-object path reads
    // FileObject->SectionObjectPointer->DataSectionObject without a test (only the file-handle
    // path answers STATUS_INVALID_FILE_FOR_SECTION for a NULL one), so a data-scan section on a
    // file object the file system never opened (a failed or reparsed create's) is a bug check.
    // The simulator reports it before any driver sees the acquire, and answers
    // STATUS_INVALID_FILE_FOR_SECTION.
    let (mut m, h) = machine_with(Config::new("Av", "100000"));
    let c = m.volume("C:").expect("C:");
    let fo = m.kernel(|k| {
        let opened = k.user_handle(h).unwrap().fo as *mut windows_sys::Wdk::Foundation::FILE_OBJECT;
        let (device, vpb) = unsafe { ((*opened).DeviceObject, (*opened).Vpb) };
        k.new_file_object(device, vpb, "a.exe", 0, Some(c))
    });
    let attributes = fsfilter_kernel::datascan::section_attributes();
    let mut section: windows_sys::Win32::Foundation::HANDLE = std::ptr::null_mut();
    let mut object: *mut c_void = std::ptr::null_mut();
    let s = Status(unsafe {
        windows_sys::Wdk::Storage::FileSystem::FsRtlCreateSectionForDataScan(
            &mut section,
            &mut object,
            std::ptr::null_mut(),
            fo,
            0x4,
            &attributes,
            std::ptr::null(),
            PAGE_READONLY,
            0x0800_0000,
            0,
        )
    });
    assert_eq!(s, Status::INVALID_FILE_FOR_SECTION);
    assert!(order().is_empty(), "no driver sees the acquire: {:?}", order());
    assert_eq!(rules(&m), [Rule::SectionOnUnopenedFile], "{:?}", m.findings());
    m.kernel(|k| k.free_file_object(fo as usize));
    // An opened file object still gets its section, with no other finding.
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(rules(&m), [Rule::SectionOnUnopenedFile], "{:?}", m.findings());
}

#[test]
fn an_execute_only_mapping_needs_only_file_execute() {
    // WRK's MmMakeFileAccess: PAGE_EXECUTE asks the handle for FILE_EXECUTE alone (no
    // FILE_READ_DATA); PAGE_EXECUTE_READ asks for both.
    let (mut m, _) = machine_with(Config::new("Av", "100000"));
    let c = m.volume("C:").expect("C:");
    let execute = CreateOptions::open().access(access::FILE_EXECUTE | access::SYNCHRONIZE);
    let h = m.open(c, "a.exe", execute).expect("open");
    order_clear();
    let r = m.create_section(h, fsfilter::section_sync::PAGE_EXECUTE);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(order()[0], "Leg:fs_pre:255");
    let r = m.create_section(h, PAGE_EXECUTE_READ);
    assert_eq!(r.status, Status::ACCESS_DENIED);
}

#[test]
fn an_fsrtl_data_scan_section_checks_its_protection_before_the_acquire() {
    // WRK FsRtlCreateSectionForDataScan: PAGE_READONLY or PAGE_READWRITE, else
    // STATUS_INVALID_PARAMETER_8; SEC_COMMIT, else _9; both before the file is acquired.
    let (m, h) = machine_with(Config::new("Av", "100000"));
    let fo = m.kernel(|k| k.user_handle(h).unwrap().fo)
        as *const windows_sys::Wdk::Foundation::FILE_OBJECT;
    let attributes = fsfilter_kernel::datascan::section_attributes();
    let create = |protection: u32, allocation: u32| {
        let mut h: windows_sys::Win32::Foundation::HANDLE = std::ptr::null_mut();
        let mut object: *mut c_void = std::ptr::null_mut();
        Status(unsafe {
            windows_sys::Wdk::Storage::FileSystem::FsRtlCreateSectionForDataScan(
                &mut h,
                &mut object,
                std::ptr::null_mut(),
                fo,
                0x4,
                &attributes,
                std::ptr::null(),
                protection,
                allocation,
                0,
            )
        })
    };
    let sec_commit = 0x0800_0000;
    assert_eq!(create(PAGE_EXECUTE_READ, sec_commit), Status::INVALID_PARAMETER_8);
    assert_eq!(create(PAGE_READONLY, 0), Status::INVALID_PARAMETER_9);
    assert!(order().is_empty(), "no acquire for a refused section: {:?}", order());
}

#[test]
fn a_section_on_a_dismounted_volume_a_directory_or_the_volume_is_refused() {
    let (mut m, h) = machine_with(Config::new("Av", "100000"));
    let c = m.volume("C:").expect("C:");
    let dir = m.open(c, "", CreateOptions::open()).expect("root");
    order_clear();
    let r = m.create_section(dir, PAGE_READONLY);
    assert_eq!(r.status, Status::INVALID_FILE_FOR_SECTION);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    order_clear();
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::VOLUME_DISMOUNTED, "{:?}", order());
    m.close_handle(h);
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::INVALID_HANDLE);
}

#[test]
fn an_instance_detached_between_the_pre_and_the_post_of_an_acquire_gets_one_post() {
    // A frame above the legacy filter (a minifilter above its range, frame 1): the legacy
    // filter's pre routine runs between the frame's pre and post routines, and detaches the
    // minifilter's instance there. The instance's post comes once (drained), the frame's post
    // routine finds nothing more to do, and nothing leaks or is reported.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
        FltDetachVolume, FltGetVolumeFromName, FltObjectDereference,
    };
    let (mut m, c) = legacy_machine();
    start(&mut m, 1, Config::new("Av", "321300").op(ACQUIRE, true, true).op(RELEASE, true, true));
    let h = m.open(c, "a.exe", CreateOptions::open()).expect("open");
    order_clear();
    LEG_HOOK.with(|hk| {
        *hk.borrow_mut() = Some(Box::new(|| {
            let name: Vec<u16> = "C:".encode_utf16().collect();
            let f = fltcommon::filter_handle(1);
            let mut vol = 0;
            assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
            let inst: Vec<u16> = "Av Instance".encode_utf16().collect();
            let s = unsafe { FltDetachVolume(f, vol, &fltcommon::us(&inst)) };
            order_push(format!("detach {}", Status(s)));
            unsafe { FltObjectDereference(vol as *mut _) };
        }))
    });
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(
        order(),
        [
            "Av:pre:255",
            "Leg:fs_pre:255",
            "Av:teardown_start",
            "Av:post:255",
            "Av:teardown_complete",
            "detach STATUS_SUCCESS",
            "Leg:fs_post:255:STATUS_SUCCESS",
            "Leg:fs_pre:254",
            "Leg:fs_post:254:STATUS_SUCCESS",
        ]
    );
    let posts = fltcommon::posts(1);
    assert!(
        matches!(posts[..], [Seen::Post { major: ACQUIRE, flags: 1, .. }]),
        "one post, FLTFL_POST_OPERATION_DRAINING: {posts:?}"
    );
    m.close_handle(h);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_release_completed_with_pending_is_one_finding_against_the_minifilter() {
    // FLT_PREOP_COMPLETE with STATUS_PENDING is the minifilter's fault, reported once against
    // it; the status the Filter Manager answers FsRtl for the release must not make FsRtl
    // report the Filter Manager for failing a release.
    let cfg = Config::new("Av", "100000").with_pre(|p| {
        if p.major() == RELEASE {
            p.set_status(Status::PENDING, 0);
            return (4, 0); // FLT_PREOP_COMPLETE
        }
        (0, 0)
    });
    let (mut m, h) = machine_with(cfg);
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::SUCCESS);
    let findings = m.findings();
    assert_eq!(rules(&m), [Rule::CompleteWithPending], "{findings:?}");
    assert_eq!(findings[0].1.as_deref(), Some("Av"), "{findings:?}");
}

#[test]
fn more_processing_from_an_fs_filter_post_is_reported_as_such() {
    // FLT_POSTOP_MORE_PROCESSING_REQUIRED is for IRP-based operations: from the post callback
    // of an FsFilter operation it is reported, naming the operation's kind, and taken for
    // finished.
    let cfg = Config::new("Av", "100000").with_post(|_| 1); // FLT_POSTOP_MORE_PROCESSING_REQUIRED
    let (mut m, h) = machine_with(cfg);
    let r = m.create_section(h, PAGE_READONLY);
    assert_eq!(r.status, Status::SUCCESS);
    let findings = m.findings();
    assert_eq!(rules(&m), [Rule::StatusInvalidForOperation; 2], "{findings:?}");
    for (_, driver, message) in &findings {
        assert_eq!(driver.as_deref(), Some("Av"));
        assert!(message.contains("an FsFilter operation"), "{message}");
        assert!(!message.contains("fast-I/O"), "{message}");
    }
}

#[test]
fn synchronize_is_with_callback_and_the_fast_io_and_query_open_answers_are_reported() {
    // FLT_PREOP_SYNCHRONIZE for an operation that is not IRP-based is
    // FLT_PREOP_SUCCESS_WITH_CALLBACK (the reference page); FLT_PREOP_DISALLOW_FASTIO (fast I/O
    // only) and FLT_PREOP_DISALLOW_FSFILTER_IO (IRP_MJ_QUERY_OPEN only) are reported and taken
    // for FLT_PREOP_SUCCESS_NO_CALLBACK.
    let cfg = Config::new("Av", "100000").with_pre(|p| {
        if p.major() == ACQUIRE {
            return (5, 0); // FLT_PREOP_SYNCHRONIZE
        }
        (3, 0) // FLT_PREOP_DISALLOW_FASTIO
    });
    let (mut m, h) = machine_with(cfg);
    assert_eq!(m.create_section(h, PAGE_READONLY).status, Status::SUCCESS);
    assert_eq!(
        order(),
        [
            "Leg:fs_pre:255",
            "Av:pre:255",
            "Av:post:255",
            "Leg:fs_post:255:STATUS_SUCCESS",
            "Leg:fs_pre:254",
            "Av:pre:254",
            "Leg:fs_post:254:STATUS_SUCCESS",
        ]
    );
    assert_eq!(rules(&m), [Rule::StatusInvalidForOperation]);
    drop(m);
    let cfg = Config::new("Av", "100000").with_pre(|_| (6, 0)); // FLT_PREOP_DISALLOW_FSFILTER_IO
    let (mut m, h) = machine_with(cfg);
    assert_eq!(m.create_section(h, PAGE_READONLY).status, Status::SUCCESS);
    assert_eq!(rules(&m), [Rule::StatusInvalidForOperation; 2]);
    assert!(!order().iter().any(|o| o.starts_with("Av:post")), "{:?}", order());
}

thread_local! {
    /// Whether the test minifilter registers its FsFilter callbacks before `FltRegisterFilter`.
    static FS_FILTER_FIRST: Cell<bool> = const { Cell::new(true) };
}

/// A minifilter that also calls `FsRtlRegisterFileSystemFilterCallbacks`, which minifilters must
/// never call: before or after `FltRegisterFilter` ([`FS_FILTER_FIRST`]).
unsafe extern "system" fn misusing_minifilter(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> NTSTATUS {
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
        FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, FltRegisterFilter, PFLT_FILTER,
    };
    let t = table(size_of::<FS_FILTER_CALLBACKS>() as u32);
    let fs_filter = || Status(unsafe { FsRtlRegisterFileSystemFilterCallbacks(driver, &t) });
    let mut end: FLT_OPERATION_REGISTRATION = unsafe { std::mem::zeroed() };
    end.MajorFunction = 0x80; // IRP_MJ_OPERATION_END
    let ops = [end];
    let mut reg: FLT_REGISTRATION = unsafe { std::mem::zeroed() };
    reg.Size = size_of::<FLT_REGISTRATION>() as u16;
    reg.Version = 0x0203;
    reg.OperationRegistration = ops.as_ptr();
    if FS_FILTER_FIRST.get() {
        assert_eq!(fs_filter(), Status::SUCCESS);
    }
    let mut filter: PFLT_FILTER = 0;
    let s = unsafe { FltRegisterFilter(driver, &reg, &mut filter) };
    assert_eq!(Status(s), Status::SUCCESS);
    if !FS_FILTER_FIRST.get() {
        assert_eq!(fs_filter(), Status::SUCCESS, "registered all the same");
    }
    0
}

#[test]
fn a_minifilter_that_registers_fs_filter_callbacks_is_reported_whichever_call_comes_first() {
    // FLT_IS_FS_FILTER_OPERATION's reference page: minifilters must never call
    // FsRtlRegisterFileSystemFilterCallbacks (the Filter Manager registers for them).
    for first in [true, false] {
        FS_FILTER_FIRST.set(first);
        let mut m = fltcommon::machine(3);
        m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
        m.install_filter_manager();
        let mut spec = fsfilter_sim::ServiceSpec::new("Mixed", misusing_minifilter, "minifilter");
        spec.start = StartType::Boot;
        spec.group = Some("FSFilter Activity Monitor".into());
        let instance = fsfilter_sim::InstanceSpec {
            name: "Mixed Instance".into(),
            altitude: "370000".into(),
            flags: 0,
        };
        spec.instances = Some(fsfilter_sim::InstancesSpec {
            default_instance: instance.name.clone(),
            instances: vec![instance],
            layout: fsfilter_sim::InstanceLayout::Both,
        });
        m.install(spec);
        m.boot();
        let findings = m.findings();
        assert_eq!(rules(&m), [Rule::MinifilterFsFilterRegistration], "{first}: {findings:?}");
        assert_eq!(findings[0].1.as_deref(), Some("Mixed"));
        assert_eq!(
            Rule::MinifilterFsFilterRegistration.name(),
            "MINIFILTER_FS_FILTER_REGISTRATION"
        );
    }
    // A legacy filter's registration is what the routine is for.
    let (m, _) = legacy_machine();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
