//! Filter Manager, deliverable 5 — data scan and contexts (facts.md §5, §6): FltRegisterForDataScan,
//! FltCreateSectionForDataScan / FltCloseSectionForDataScan with their documented errors,
//! section-conflict notifications (also before the create returns), and instance, stream and
//! stream-handle contexts with reference counts, cleanup callbacks and leak accounting.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod fltcommon;

use std::cell::RefCell;
use std::ffi::c_void;
use std::rc::Rc;

use fltcommon::{Config, PostCall, Seen, install, machine, mj, order, order_clear, rules, seen};
use fsfilter::Status;
use fsfilter_kernel::datascan::section_attributes;
use fsfilter_sim::{CreateOptions, FltEvent, FsKind, IoMode, Machine, Rule, VolumeId, VolumeSpec};
use windows_sys::Wdk::Foundation::{NonPagedPoolNx, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
use windows_sys::Win32::Foundation::HANDLE;

const SECTION: u16 = 0x40;
const INSTANCE: u16 = 0x2;
const STREAM: u16 = 0x8;
const STREAMHANDLE: u16 = 0x10;
const SECTION_MAP_READ: u32 = 0x4;
const PAGE_READONLY: u32 = 0x2;
const SEC_COMMIT: u32 = 0x0800_0000;

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static KEPT: RefCell<Vec<(usize, usize, usize)>> = const { RefCell::new(Vec::new()) };
    static CONFLICTED: RefCell<bool> = const { RefCell::new(false) };
}

fn log(s: String) {
    LOG.with(|l| l.borrow_mut().push(s));
}

fn logged() -> Vec<String> {
    LOG.with(|l| l.borrow().clone())
}

fn setup(files: &[(&str, &[u8])]) -> (Machine, VolumeId) {
    LOG.with(|l| l.borrow_mut().clear());
    KEPT.with(|k| k.borrow_mut().clear());
    CONFLICTED.with(|c| *c.borrow_mut() = false);
    let mut m = machine(1);
    let mut spec = VolumeSpec::new("C:", FsKind::Ntfs);
    for (p, b) in files {
        spec = spec.file(p, b);
    }
    let c = m.add_volume(spec);
    m.install_filter_manager();
    m.boot();
    (m, c)
}

fn file_name(p: &PostCall) -> String {
    let fo = unsafe { (*p.data().Iopb).TargetFileObject };
    unsafe { fsfilter_sim::mem::read_unicode(&(*fo).FileName) }
}

fn section_context(slot: usize) -> PFLT_CONTEXT {
    let mut ctx: PFLT_CONTEXT = std::ptr::null_mut();
    let s = unsafe {
        FltAllocateContext(fltcommon::filter_handle(slot), SECTION, 16, NonPagedPoolNx, &mut ctx)
    };
    assert_eq!(s, 0);
    ctx
}

/// `FltCreateSectionForDataScan` on the operation's file, for a kernel handle.
fn create_section(
    p: &PostCall,
    ctx: PFLT_CONTEXT,
    protection: u32,
    attributes: u32,
) -> (Status, HANDLE, *mut c_void, i64) {
    create_section_with(p, ctx, protection, attributes, &section_attributes())
}

/// `FltCreateSectionForDataScan` on the operation's file with the caller's `ObjectAttributes`.
fn create_section_with(
    p: &PostCall,
    ctx: PFLT_CONTEXT,
    protection: u32,
    attributes: u32,
    object_attributes: *const OBJECT_ATTRIBUTES,
) -> (Status, HANDLE, *mut c_void, i64) {
    let fo = unsafe { (*p.data().Iopb).TargetFileObject };
    let mut h: HANDLE = std::ptr::null_mut();
    let mut obj: *mut c_void = std::ptr::null_mut();
    let mut size = 0i64;
    let s = unsafe {
        FltCreateSectionForDataScan(
            p.instance(),
            fo,
            ctx,
            SECTION_MAP_READ,
            object_attributes,
            std::ptr::null(),
            protection,
            attributes,
            0,
            &mut h,
            &mut obj,
            &mut size,
        )
    };
    (Status(s), h, obj, size)
}

/// Closes a section the way the documentation asks: FltCloseSectionForDataScan, then the
/// handle and the object reference, then the context.
fn close_all(ctx: PFLT_CONTEXT, h: HANDLE, obj: *mut c_void) -> Status {
    let s = Status(unsafe { FltCloseSectionForDataScan(ctx) });
    unsafe { fsfilter_kernel::ntos::ZwClose(h) };
    unsafe { windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(obj) };
    unsafe { FltReleaseContext(ctx) };
    s
}

fn scanner(
    name: &str,
    altitude: &str,
    register: bool,
    post: impl Fn(&PostCall) -> i32 + 'static,
) -> Config {
    let mut c = Config::new(name, altitude).op(mj::CREATE, false, true).with_post(post);
    c.contexts = vec![(SECTION, 16)];
    c.section_notification = true;
    if register {
        c.on_setup = Some(Rc::new(|instance, _| {
            assert_eq!(unsafe { FltRegisterForDataScan(instance) }, 0);
        }));
    }
    c
}

#[test]
fn sections_for_data_scan_and_their_errors_facts_6() {
    // facts.md §6: FltCreateSectionForDataScan needs FltRegisterForDataScan first; errors
    // STATUS_END_OF_FILE, STATUS_FILE_IS_A_DIRECTORY, _PARAMETER_8 (protection), _PARAMETER_9
    // (allocation attributes), STATUS_FLT_CONTEXT_ALREADY_DEFINED (one section per stream per
    // instance); FltCloseSectionForDataScan: STATUS_NOT_FOUND once closed,
    // STATUS_INVALID_PARAMETER for a context never used.
    let (mut m, c) = setup(&[("a.txt", b"scan me"), ("empty.txt", b""), ("dir\\", b"")]);
    let post = |p: &PostCall| {
        if !p.status().is_success() {
            return 0;
        }
        let name = file_name(p);
        let ctx = section_context(p.slot);
        match name.as_str() {
            "\\a.txt" => {
                let (s, h, obj, size) = create_section(p, ctx, PAGE_READONLY, SEC_COMMIT);
                log(format!("create {s} size {size}"));
                let mut base: *mut c_void = std::ptr::null_mut();
                let mut view = 0usize;
                let s2 = unsafe {
                    fsfilter_kernel::ntos::ZwMapViewOfSection(
                        h,
                        -1isize as HANDLE,
                        &mut base,
                        0,
                        0,
                        std::ptr::null_mut(),
                        &mut view,
                        2,
                        0,
                        PAGE_READONLY,
                    )
                };
                assert_eq!(s2, 0);
                let bytes = unsafe { std::slice::from_raw_parts(base.cast::<u8>(), 7) }.to_vec();
                log(format!("view {}", String::from_utf8_lossy(&bytes)));
                unsafe { fsfilter_kernel::ntos::ZwUnmapViewOfSection(-1isize as HANDLE, base) };
                let ctx2 = section_context(p.slot);
                let (s3, ..) = create_section(p, ctx2, PAGE_READONLY, SEC_COMMIT);
                log(format!("second {s3}"));
                log(format!(
                    "close never created {}",
                    Status(unsafe { FltCloseSectionForDataScan(ctx2) })
                ));
                unsafe { FltReleaseContext(ctx2) };
                let s4 = Status(unsafe { FltCloseSectionForDataScan(ctx) });
                log(format!("close {s4}"));
                log(format!("close again {}", Status(unsafe { FltCloseSectionForDataScan(ctx) })));
                unsafe { fsfilter_kernel::ntos::ZwClose(h) };
                unsafe { windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(obj) };
                unsafe { FltReleaseContext(ctx) };
                return 0;
            }
            "\\empty.txt" => {
                log(format!("empty {}", create_section(p, ctx, PAGE_READONLY, SEC_COMMIT).0))
            }
            "\\dir" => log(format!("dir {}", create_section(p, ctx, PAGE_READONLY, SEC_COMMIT).0)),
            "\\protection.txt" => {
                log(format!("protection {}", create_section(p, ctx, 0x40, SEC_COMMIT).0))
            }
            "\\attributes.txt" => {
                log(format!("attributes {}", create_section(p, ctx, PAGE_READONLY, 0).0))
            }
            _ => {}
        }
        unsafe { FltReleaseContext(ctx) };
        0
    };
    install(&mut m, 0, scanner("Scan", "265000", true, post));
    assert_eq!(m.start("Scan"), Status::SUCCESS);
    for f in ["a.txt", "empty.txt", "dir", "protection.txt", "attributes.txt"] {
        m.create(c, f, CreateOptions::default());
    }
    assert_eq!(
        logged(),
        [
            "create STATUS_SUCCESS size 7",
            "view scan me",
            "second STATUS_FLT_CONTEXT_ALREADY_DEFINED",
            "close never created STATUS_INVALID_PARAMETER",
            "close STATUS_SUCCESS",
            "close again STATUS_NOT_FOUND",
            "empty STATUS_END_OF_FILE",
            "dir STATUS_FILE_IS_A_DIRECTORY",
            "protection STATUS_INVALID_PARAMETER_8",
            "attributes STATUS_INVALID_PARAMETER_9",
        ]
    );
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
    drop(m);
    // Without FltRegisterForDataScan: STATUS_INVALID_PARAMETER.
    let (mut m, c) = setup(&[("a.txt", b"scan me")]);
    install(
        &mut m,
        0,
        scanner("NoReg", "265000", false, |p| {
            if p.status().is_success() {
                let ctx = section_context(p.slot);
                log(format!(
                    "unregistered {}",
                    create_section(p, ctx, PAGE_READONLY, SEC_COMMIT).0
                ));
                unsafe { FltReleaseContext(ctx) };
            }
            0
        }),
    );
    assert_eq!(m.start("NoReg"), Status::SUCCESS);
    m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(logged(), ["unregistered STATUS_INVALID_PARAMETER"]);
}

fn keep_section(p: &PostCall) -> i32 {
    if p.status().is_success()
        && file_name(p) == "\\keep.txt"
        && KEPT.with(|k| k.borrow().is_empty())
    {
        let ctx = section_context(p.slot);
        let (s, h, obj, _) = create_section(p, ctx, PAGE_READONLY, SEC_COMMIT);
        log(format!("create returned {s}"));
        if s.is_success() && CONFLICTED.with(|c| std::mem::take(&mut *c.borrow_mut())) {
            // The notification came before the handle and object were known: close now.
            log(format!("closed {}", close_all(ctx, h, obj)));
        } else if s.is_success() {
            KEPT.with(|k| k.borrow_mut().push((ctx as usize, h as usize, obj as usize)));
        } else {
            unsafe { FltReleaseContext(ctx) };
        }
    }
    0
}

fn close_on_conflict(_i: PFLT_INSTANCE, ctx: PFLT_CONTEXT, data: *const FLT_CALLBACK_DATA) {
    log(format!("conflict data={}", !data.is_null()));
    match KEPT.with(|k| k.borrow_mut().pop()) {
        Some((c, h, o)) => {
            assert_eq!(c, ctx as usize);
            log(format!("closed {}", close_all(c as PFLT_CONTEXT, h as HANDLE, o as *mut c_void)));
        }
        None => CONFLICTED.with(|c| *c.borrow_mut() = true),
    }
}

#[test]
fn conflicting_io_notifies_the_section_owner_facts_6() {
    // facts.md §6: I/O that needs a cache purge conflicts with an open section: FltMgr calls the
    // SectionNotificationCallback (instance, section context, data) so the filter can close it.
    let (mut m, c) = setup(&[("keep.txt", b"0123456789")]);
    let mut cfg = scanner("Scan", "265000", true, keep_section);
    cfg.on_conflict = Some(Rc::new(close_on_conflict));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Scan"), Status::SUCCESS);
    let h = m.open(c, "keep.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.write(h, Some(0), &[b'X'; 512], IoMode::NonCached).status, Status::SUCCESS);
    assert_eq!(
        logged(),
        ["create returned STATUS_SUCCESS", "conflict data=true", "closed STATUS_SUCCESS"]
    );
    assert_eq!(m.file_contents(c, "keep.txt").unwrap()[0], b'X');
    let ev = fltcommon::flt(&m, "flt_section_conflict");
    assert!(matches!(ev[0].2, FltEvent::SectionConflict { during_create: false, .. }));
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_conflict_can_arrive_before_the_create_returns_facts_6() {
    // facts.md §6: the notification may arrive before FltCreateSectionForDataScan returns: here
    // a non-cached write to the stream is in flight (a filter above pended it) when the section
    // is created.
    let (mut m, c) = setup(&[("keep.txt", b"0123456789")]);
    let held: Rc<RefCell<usize>> = Rc::default();
    let hh = held.clone();
    install(
        &mut m,
        0,
        Config::new("Holder", "300000").op(mj::WRITE, true, false).with_pre(move |p| {
            if p.data().Flags & 1 != 0 {
                *hh.borrow_mut() = p.data as usize;
                return (2, 0);
            }
            (1, 0)
        }),
    );
    let mut cfg = scanner("Scan", "265000", true, keep_section);
    cfg.on_conflict = Some(Rc::new(close_on_conflict));
    install(&mut m, 1, cfg);
    assert_eq!(m.start("Holder"), Status::SUCCESS);
    assert_eq!(m.start("Scan"), Status::SUCCESS);
    // The writer's handle is opened first (the scanner only scans keep.txt once).
    KEPT.with(|k| k.borrow_mut().push((0, 0, 0)));
    let w = m.open(c, "keep.txt", CreateOptions::open()).unwrap();
    KEPT.with(|k| k.borrow_mut().clear());
    let pending = m.write(w, Some(0), &[b'Y'; 512], IoMode::NonCached);
    assert_eq!(pending.status, Status::PENDING);
    let r = m.create(c, "keep.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(
        logged(),
        ["conflict data=true", "create returned STATUS_SUCCESS", "closed STATUS_SUCCESS"]
    );
    let ev = fltcommon::flt(&m, "flt_section_conflict");
    assert!(matches!(ev[0].2, FltEvent::SectionConflict { during_create: true, .. }));
    // The held write goes on and completes.
    let data = *held.borrow();
    unsafe { FltCompletePendedPreOperation(data as *const _, 1, std::ptr::null()) };
    m.settle();
    let io = pending.io.unwrap();
    assert_eq!(
        m.kernel(|k| k.requests.result(fsfilter_sim::ids::RequestId(io.0))).map(|r| r.0),
        Some(Status::SUCCESS)
    );
    assert_eq!(m.file_contents(c, "keep.txt").unwrap()[0], b'Y');
}

#[test]
fn contexts_are_counted_set_got_and_cleaned_up_facts_5() {
    // FltAllocateContext against the registered types (STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND
    // otherwise); KEEP_IF_EXISTS (STATUS_FLT_CONTEXT_ALREADY_DEFINED with the existing one) and
    // REPLACE_IF_EXISTS; the cleanup callback when the last reference goes: stream-handle contexts
    // with their file object, stream contexts with the stream, instance contexts with the instance
    // (facts.md §5: contexts deleted after the last reference is released).
    let (mut m, c) = setup(&[("s.txt", b"stream")]);
    let mut cfg = Config::new("Ctx", "300000").op(mj::CREATE, false, true).with_post(|p| {
        if !p.status().is_success() || file_name(p) != "\\s.txt" {
            return 0;
        }
        let f = fltcommon::filter_handle(p.slot);
        let fo = unsafe { (*p.data().Iopb).TargetFileObject };
        let i = p.instance();
        let mut sc: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltAllocateContext(f, STREAM, 24, NonPagedPoolNx, &mut sc) }, 0);
        assert_eq!(unsafe { FltSetStreamContext(i, fo, 1, sc, std::ptr::null_mut()) }, 0);
        unsafe { FltReleaseContext(sc) };
        let mut hc: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltAllocateContext(f, STREAMHANDLE, 24, NonPagedPoolNx, &mut hc) }, 0);
        assert_eq!(unsafe { FltSetStreamHandleContext(i, fo, 1, hc, std::ptr::null_mut()) }, 0);
        unsafe { FltReleaseContext(hc) };
        let mut got: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltGetStreamContext(i, fo, &mut got) }, 0);
        assert_eq!(got, sc);
        unsafe { FltReleaseContext(got) };
        log(format!("stream {:#x} handle {:#x}", sc as usize, hc as usize));
        0
    });
    cfg.contexts = vec![(INSTANCE, 24), (STREAM, 24), (STREAMHANDLE, 24)];
    cfg.on_setup = Some(Rc::new(|i, _| {
        let f = fltcommon::filter_handle(0);
        let mut none: PFLT_CONTEXT = std::ptr::null_mut();
        let s = unsafe { FltAllocateContext(f, 0x1, 24, NonPagedPoolNx, &mut none) };
        log(format!("volume type {}", Status(s)));
        let s = unsafe { FltAllocateContext(f, INSTANCE, 25, NonPagedPoolNx, &mut none) };
        log(format!("wrong size {}", Status(s)));
        let mut a: PFLT_CONTEXT = std::ptr::null_mut();
        let mut b: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, &mut a) }, 0);
        assert_eq!(unsafe { FltSetInstanceContext(i, 1, a, std::ptr::null_mut()) }, 0);
        unsafe { FltReleaseContext(a) };
        assert_eq!(unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, &mut b) }, 0);
        let mut old: PFLT_CONTEXT = std::ptr::null_mut();
        let s = unsafe { FltSetInstanceContext(i, 1, b, &mut old) };
        log(format!("keep {} old is first {}", Status(s), old == a));
        unsafe { FltReleaseContext(old) };
        let s = unsafe { FltSetInstanceContext(i, 0, b, &mut old) };
        log(format!("replace {} old is first {}", Status(s), old == a));
        // The replaced context goes when the caller releases what it got back.
        unsafe { FltReleaseContext(old) };
        unsafe { FltReleaseContext(b) };
        let mut got: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltGetInstanceContext(i, &mut got) }, 0);
        log(format!("instance is second {}", got == b));
        unsafe { FltReleaseContext(got) };
        log(format!("first {:#x} second {:#x}", a as usize, b as usize));
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Ctx"), Status::SUCCESS);
    let h = m.open(c, "s.txt", CreateOptions::open()).unwrap();
    let cleanups = || -> Vec<(u16, usize)> {
        seen(0)
            .into_iter()
            .filter_map(|s| match s {
                Seen::Cleanup { ty, context, .. } => Some((ty, context)),
                _ => None,
            })
            .collect()
    };
    let l = logged();
    assert_eq!(l[0], "volume type STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND");
    assert_eq!(l[1], "wrong size STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND");
    assert_eq!(l[2], "keep STATUS_FLT_CONTEXT_ALREADY_DEFINED old is first true");
    assert_eq!(l[3], "replace STATUS_SUCCESS old is first true");
    assert_eq!(l[4], "instance is second true");
    let addr = |s: &str, key: &str| -> usize {
        let v = s.split(key).nth(1).unwrap().split_whitespace().next().unwrap();
        usize::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
    };
    let (first, second) = (addr(&l[5], "first "), addr(&l[5], "second "));
    let (stream, handle) = (addr(&l[6], "stream "), addr(&l[6], "handle "));
    assert_eq!(cleanups(), [(INSTANCE, first)], "the replaced instance context went at once");
    m.close_handle(h);
    assert_eq!(cleanups(), [(INSTANCE, first), (STREAMHANDLE, handle), (STREAM, stream)]);
    assert_eq!(m.fltmc_unload("Ctx"), Status::SUCCESS);
    assert_eq!(cleanups().last(), Some(&(INSTANCE, second)));
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn leaked_contexts_and_sections_are_reported_at_unload_facts_5_and_6() {
    // Leak accounting (Filter Verifier spirit): a context still referenced and a data-scan section
    // never closed when the filter unregisters are CONTEXT_LEAKED_AT_UNLOAD and
    // SECTION_LEAKED_AT_UNLOAD.
    let (mut m, c) = setup(&[("keep.txt", b"leak")]);
    let mut cfg = scanner("Leaky", "265000", true, keep_section);
    cfg.contexts.push((INSTANCE, 8));
    cfg.on_setup = Some(Rc::new(|i, _| {
        assert_eq!(unsafe { FltRegisterForDataScan(i) }, 0);
        let mut a: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(
            unsafe {
                FltAllocateContext(fltcommon::filter_handle(0), INSTANCE, 8, NonPagedPoolNx, &mut a)
            },
            0
        );
        // Never released.
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Leaky"), Status::SUCCESS);
    m.create(c, "keep.txt", CreateOptions::open());
    order_clear();
    assert_eq!(m.fltmc_unload("Leaky"), Status::SUCCESS);
    let f = m.findings();
    let leaked: Vec<(Rule, String)> = f
        .iter()
        .filter(|(_, d, _)| d.as_deref() == Some("Leaky"))
        .map(|(r, _, msg)| (*r, msg.clone()))
        .collect();
    assert!(
        leaked.iter().any(|(r, msg)| *r == Rule::ContextLeaked
            && msg.contains("1 FLT_INSTANCE_CONTEXT")
            && msg.contains("1 FLT_SECTION_CONTEXT")),
        "{leaked:?}"
    );
    assert!(leaked.iter().any(|(r, msg)| *r == Rule::SectionLeaked && msg.contains("FltCloseSectionForDataScan")), "{leaked:?}");
    assert!(
        leaked.iter().any(|(r, msg)| *r == Rule::SectionLeaked && msg.contains("still open")),
        "{leaked:?}"
    );
    let _ = order();
}

#[test]
fn section_handle_without_obj_kernel_handle_facts_6() {
    // facts.md §6: the section handle is a user handle unless ObjectAttributes has
    // OBJ_KERNEL_HANDLE. A raw caller passing no attributes, or attributes without the flag, to
    // FltCreateSectionForDataScan or FsRtlCreateSectionForDataScan is reported (the call still
    // succeeds, as on Windows); the same calls with OBJ_KERNEL_HANDLE are not.
    let files: [(&str, &[u8]); 4] =
        [("null.txt", b"x"), ("case.txt", b"x"), ("fsrtl.txt", b"x"), ("kernel.txt", b"x")];
    let (mut m, c) = setup(&files);
    let post = |p: &PostCall| {
        if !p.status().is_success() {
            return 0;
        }
        let kernel = section_attributes();
        let mut case_only = section_attributes();
        case_only.Attributes = 0x40; // OBJ_CASE_INSENSITIVE alone
        let name = file_name(p);
        if name == "\\fsrtl.txt" {
            let fo = unsafe { (*p.data().Iopb).TargetFileObject };
            for (label, oa) in
                [("fsrtl null", std::ptr::null()), ("fsrtl kernel", &raw const kernel)]
            {
                let mut h: HANDLE = std::ptr::null_mut();
                let mut obj: *mut c_void = std::ptr::null_mut();
                let mut size = 0i64;
                let s = Status(unsafe {
                    windows_sys::Wdk::Storage::FileSystem::FsRtlCreateSectionForDataScan(
                        &mut h,
                        &mut obj,
                        &mut size,
                        fo,
                        SECTION_MAP_READ,
                        oa,
                        std::ptr::null(),
                        PAGE_READONLY,
                        SEC_COMMIT,
                        0,
                    )
                });
                log(format!("{label} {s}"));
                unsafe { fsfilter_kernel::ntos::ZwClose(h) };
                unsafe { windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(obj) };
            }
            return 0;
        }
        let oa: *const OBJECT_ATTRIBUTES = match name.as_str() {
            "\\null.txt" => std::ptr::null(),
            "\\case.txt" => &raw const case_only,
            _ => &raw const kernel,
        };
        let ctx = section_context(p.slot);
        let (s, h, obj, _) = create_section_with(p, ctx, PAGE_READONLY, SEC_COMMIT, oa);
        log(format!("{name} {s}"));
        assert_eq!(close_all(ctx, h, obj), Status::SUCCESS);
        0
    };
    install(&mut m, 0, scanner("UserHandle", "265000", true, post));
    assert_eq!(m.start("UserHandle"), Status::SUCCESS);
    for (f, _) in files {
        m.create(c, f, CreateOptions::open());
    }
    assert_eq!(
        logged(),
        [
            "\\null.txt STATUS_SUCCESS",
            "\\case.txt STATUS_SUCCESS",
            "fsrtl null STATUS_SUCCESS",
            "fsrtl kernel STATUS_SUCCESS",
            "\\kernel.txt STATUS_SUCCESS",
        ]
    );
    let found: Vec<(Rule, Option<String>, String)> = m.findings();
    assert_eq!(found.len(), 3, "{found:?}");
    for (rule, driver, _) in &found {
        assert_eq!(*rule, Rule::SectionHandleNotKernel);
        assert_eq!(driver.as_deref(), Some("UserHandle"));
    }
    assert!(
        found[0].2.starts_with("FltCreateSectionForDataScan with a null ObjectAttributes"),
        "{found:?}"
    );
    assert!(
        found[1].2.starts_with("FltCreateSectionForDataScan with ObjectAttributes.Attributes 0x40"),
        "{found:?}"
    );
    assert!(
        found[2].2.starts_with("FsRtlCreateSectionForDataScan with a null ObjectAttributes"),
        "{found:?}"
    );
    assert_eq!(Rule::SectionHandleNotKernel.name(), "SECTION_HANDLE_WITHOUT_OBJ_KERNEL_HANDLE");
}

#[test]
fn registering_for_data_scan_and_closing_a_section_take_apc_level_at_most() {
    // FltRegisterForDataScan and FltCloseSectionForDataScan: IRQL <= APC_LEVEL (their reference
    // pages). Registering at DISPATCH_LEVEL is reported; the close of a context never used is
    // still answered (STATUS_INVALID_PARAMETER) after the report.
    let (mut m, _c) = setup(&[("a.txt", b"scan me")]);
    let mut cfg = scanner("Raised", "370000", false, |_| 0);
    cfg.on_setup = Some(Rc::new(|instance, _| {
        let was = fsfilter_sim::kernel::with(|k| {
            let was = k.irql();
            k.set_irql(2);
            was
        });
        let _ = unsafe { FltRegisterForDataScan(instance) };
        let s = unsafe { FltCloseSectionForDataScan(0x1234 as PFLT_CONTEXT) };
        fsfilter_sim::kernel::with(|k| k.set_irql(was));
        log(format!("close {}", Status(s)));
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Raised"), Status::SUCCESS);
    let messages: Vec<String> = m
        .findings()
        .into_iter()
        .filter(|(rule, _, _)| *rule == Rule::IrqlTooHigh)
        .map(|(_, _, message)| message)
        .collect();
    assert!(messages.iter().any(|m| m.starts_with("FltRegisterForDataScan")), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("FltCloseSectionForDataScan")), "{messages:?}");
    assert!(logged().iter().any(|l| l == "close STATUS_INVALID_PARAMETER"), "{:?}", logged());
}

#[test]
fn a_context_released_at_dispatch_level_is_cleaned_up_by_a_worker() {
    // The FltReleaseContext page: the context is freed at once at IRQL <= APC_LEVEL; at
    // DISPATCH_LEVEL "a work item is scheduled to free the context"; and a context from paged
    // pool may be released at IRQL <= APC_LEVEL only.
    for (pool, finding) in [(NonPagedPoolNx, None), (1, Some(Rule::IrqlTooHigh))] {
        let (mut m, c) = setup(&[("a.txt", b"hello")]);
        let mut cfg = Config::new("Ctx", "370000").op(mj::READ, true, true);
        cfg.contexts = vec![(INSTANCE, 24)];
        let cfg = cfg
            .with_pre(move |p| {
                // FLTFL_CALLBACK_DATA_IRP_OPERATION: not the fast-I/O attempt.
                if p.data().Flags & 0x1 == 0 {
                    return (1, 0);
                }
                let mut ctx: PFLT_CONTEXT = std::ptr::null_mut();
                let f = fltcommon::filter_handle(0);
                assert_eq!(unsafe { FltAllocateContext(f, INSTANCE, 24, pool, &mut ctx) }, 0);
                (0, ctx as usize)
            })
            .with_post(|p| {
                let irql = fsfilter_sim::kernel::current_irql();
                log(format!("post at {irql}"));
                unsafe { FltReleaseContext(p.context as PFLT_CONTEXT) };
                0
            });
        install(&mut m, 0, cfg);
        assert_eq!(m.start("Ctx"), Status::SUCCESS);
        m.kernel(|k| k.fs.complete_at_dpc = true);
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let r = m.read(h, Some(0), 512, IoMode::NonCached);
        assert_eq!(r.status, Status::SUCCESS);
        m.settle();
        assert_eq!(logged(), ["post at 2"]);
        let cleanups: Vec<u8> = seen(0)
            .into_iter()
            .filter_map(|s| match s {
                Seen::Cleanup { irql, .. } => Some(irql),
                _ => None,
            })
            .collect();
        assert_eq!(cleanups, [0], "pool {pool}: cleaned up once, by a worker");
        assert_eq!(rules(&m), finding.into_iter().collect::<Vec<_>>(), "pool {pool}");
    }
}

#[test]
fn context_routines_above_apc_level_are_reported_facts_4_and_9() {
    // facts.md §4, §9: a post callback at DISPATCH_LEVEL cannot get, set, delete (or allocate)
    // contexts; it may release them. Each call is an IRQL_TOO_HIGH finding naming the routine;
    // FltReleaseContext at DISPATCH_LEVEL is not.
    let (mut m, c) = setup(&[("a.txt", &[1u8; 512])]);
    let mut cfg = Config::new("Raised", "370000").op(mj::READ, true, true);
    cfg.contexts = vec![(INSTANCE, 24)];
    cfg.on_setup = Some(Rc::new(|i, _| {
        let mut a: PFLT_CONTEXT = std::ptr::null_mut();
        let f = fltcommon::filter_handle(0);
        assert_eq!(unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, &mut a) }, 0);
        assert_eq!(unsafe { FltSetInstanceContext(i, 1, a, std::ptr::null_mut()) }, 0);
        unsafe { FltReleaseContext(a) };
    }));
    let cfg = cfg
        .with_pre(|p| {
            // FLTFL_CALLBACK_DATA_IRP_OPERATION only: the fast-I/O attempt gets no post.
            if p.data().Flags & 0x1 == 0 { (1, 0) } else { (0, 0) }
        })
        .with_post(|p| {
            let irql = fsfilter_sim::kernel::current_irql();
            log(format!("post at {irql}"));
            let f = fltcommon::filter_handle(p.slot);
            let i = p.instance();
            let mut fresh: PFLT_CONTEXT = std::ptr::null_mut();
            let s = unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, &mut fresh) };
            log(format!("allocate {}", Status(s)));
            let s = unsafe { FltSetInstanceContext(i, 1, fresh, std::ptr::null_mut()) };
            log(format!("set {}", Status(s)));
            let mut got: PFLT_CONTEXT = std::ptr::null_mut();
            let s = unsafe { FltGetInstanceContext(i, &mut got) };
            log(format!("get {}", Status(s)));
            unsafe { FltDeleteContext(got) };
            unsafe { FltReleaseContext(got) };
            unsafe { FltReleaseContext(fresh) };
            0
        });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Raised"), Status::SUCCESS);
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    m.settle();
    assert_eq!(
        logged(),
        [
            "post at 2",
            "allocate STATUS_SUCCESS",
            "set STATUS_FLT_CONTEXT_ALREADY_DEFINED",
            "get STATUS_SUCCESS"
        ]
    );
    let found: Vec<(Rule, Option<String>, String)> = m.findings();
    let routines: Vec<&str> = found
        .iter()
        .map(|(rule, driver, message)| {
            assert_eq!((*rule, driver.as_deref()), (Rule::IrqlTooHigh, Some("Raised")));
            message.split_whitespace().next().unwrap()
        })
        .collect();
    assert_eq!(
        routines,
        ["FltAllocateContext", "FltSet*Context", "FltGet*Context", "FltDeleteContext"]
    );
}

#[test]
fn deleting_a_section_context_is_reported_facts_6() {
    // facts.md §6: never FltDeleteContext a section context; close it with
    // FltCloseSectionForDataScan. The delete is refused (the section stays open and closes
    // normally) and reported against the filter.
    let (mut m, c) = setup(&[("a.txt", b"scan me")]);
    let post = |p: &PostCall| {
        if !p.status().is_success() || file_name(p) != "\\a.txt" {
            return 0;
        }
        let ctx = section_context(p.slot);
        let (s, h, obj, _) = create_section(p, ctx, PAGE_READONLY, SEC_COMMIT);
        assert_eq!(s, Status::SUCCESS);
        unsafe { FltDeleteContext(ctx) };
        log(format!("close {}", close_all(ctx, h, obj)));
        0
    };
    install(&mut m, 0, scanner("Deleter", "265000", true, post));
    assert_eq!(m.start("Deleter"), Status::SUCCESS);
    m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(logged(), ["close STATUS_SUCCESS"]);
    let found = m.findings();
    assert_eq!(found.len(), 1, "{found:?}");
    let (rule, driver, message) = &found[0];
    assert_eq!((*rule, driver.as_deref()), (Rule::InvalidFltObject, Some("Deleter")));
    assert!(message.starts_with("FltDeleteContext on a section context"), "{message}");
    let cleaned = seen(0).iter().filter(|s| matches!(s, Seen::Cleanup { ty: SECTION, .. })).count();
    assert_eq!(cleaned, 1, "the context went once, after the close");
}

/// Creates a section on keep.txt and closes it with FltCloseSectionForDataScan at once, keeping
/// the section handle and object (the section itself stays) in `KEPT`.
fn create_then_close(p: &PostCall) -> i32 {
    if p.status().is_success()
        && file_name(p) == "\\keep.txt"
        && KEPT.with(|k| k.borrow().is_empty())
    {
        let ctx = section_context(p.slot);
        let (s, h, obj, _) = create_section(p, ctx, PAGE_READONLY, SEC_COMMIT);
        log(format!("create {s}"));
        log(format!("close {}", Status(unsafe { FltCloseSectionForDataScan(ctx) })));
        KEPT.with(|k| k.borrow_mut().push((ctx as usize, h as usize, obj as usize)));
    }
    0
}

#[test]
fn a_closed_section_is_no_longer_synchronized_facts_6() {
    // facts.md §6: after FltCloseSectionForDataScan the Filter Manager no longer synchronizes
    // conflicting I/O with the section: a non-cached write to the stream brings no
    // SectionNotificationCallback, though the section object is still there (its handle and
    // reference are held) and the file system reports the conflict to the Filter Manager.
    let (mut m, c) = setup(&[("keep.txt", b"0123456789")]);
    let mut cfg = scanner("Scan", "265000", true, create_then_close);
    cfg.on_conflict = Some(Rc::new(|_, _, _| log("conflict".into())));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Scan"), Status::SUCCESS);
    let h = m.open(c, "keep.txt", CreateOptions::open()).unwrap();
    let (ctx, sh, obj) = KEPT.with(|k| k.borrow()[0]);
    let stream = m.kernel(|k| {
        let fo = k.user_handle(h).unwrap().fo;
        unsafe { (*(fo as *const windows_sys::Wdk::Foundation::FILE_OBJECT)).FsContext as usize }
    });
    assert_eq!(m.kernel(|k| k.sections.open_on(stream).len()), 1, "the section is still open");
    assert_eq!(m.write(h, Some(0), &[b'X'; 512], IoMode::NonCached).status, Status::SUCCESS);
    assert_eq!(logged(), ["create STATUS_SUCCESS", "close STATUS_SUCCESS"]);
    assert!(fltcommon::flt(&m, "flt_section_conflict").is_empty());
    assert_eq!(m.file_contents(c, "keep.txt").unwrap()[0], b'X');
    // The handle, the reference and the context are the caller's to let go.
    let image = m.kernel(|k| k.service_index("Scan").and_then(|i| k.loader.services[i].image));
    fsfilter_sim::kernel::call_into(image, || unsafe {
        fsfilter_kernel::ntos::ZwClose(sh as HANDLE);
        windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(obj as *mut c_void);
        FltReleaseContext(ctx as PFLT_CONTEXT);
    });
    assert!(m.kernel(|k| k.sections.open_on(stream).is_empty()));
    m.close_handle(h);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_section_on_a_pipe_volume_is_not_supported_facts_6() {
    // facts.md §6: FltRegisterForDataScan is STATUS_NOT_SUPPORTED on named-pipe and mailslot
    // volumes; FltCreateSectionForDataScan there is STATUS_NOT_SUPPORTED too (the volume's
    // reason), not the STATUS_INVALID_PARAMETER of an instance that did not register, which an
    // instance on such a volume never can (docs/simulator.md, "Data scan").
    LOG.with(|l| l.borrow_mut().clear());
    let mut m = machine(1);
    let pipes = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    m.install_filter_manager();
    m.boot();
    let post = |p: &PostCall| {
        if p.status().is_success() {
            let ctx = section_context(p.slot);
            log(format!("section {}", create_section(p, ctx, PAGE_READONLY, SEC_COMMIT).0));
            unsafe { FltReleaseContext(ctx) };
        }
        0
    };
    let mut cfg = Config::new("PipeScan", "265000").op(mj::CREATE, false, true).with_post(post);
    cfg.flags = 0x2; // FLTFL_REGISTRATION_SUPPORT_NPFS_MSFS
    cfg.contexts = vec![(SECTION, 16)];
    cfg.section_notification = true;
    cfg.on_setup = Some(Rc::new(|instance, _| {
        log(format!("register {}", Status(unsafe { FltRegisterForDataScan(instance) })));
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("PipeScan"), Status::SUCCESS);
    let h = m.open(pipes, "scanned", CreateOptions::default()).unwrap();
    assert_eq!(logged(), ["register STATUS_NOT_SUPPORTED", "section STATUS_NOT_SUPPORTED"]);
    m.close_handle(h);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_fixed_size_registration_without_exact_size_match_takes_smaller_contexts() {
    // The "Registering context types" page and FLT_CONTEXT_REGISTRATION's: with
    // FLTFL_CONTEXT_REGISTRATION_NO_EXACT_SIZE_MATCH a fixed-size definition serves any
    // requested size up to its own; without it the sizes must be equal
    // (STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND otherwise, "Creating contexts").
    const NO_EXACT_SIZE_MATCH: u16 = 0x1;
    let (mut m, _c) = setup(&[]);
    for (slot, name, altitude, flags) in
        [(0, "Loose", "300000", NO_EXACT_SIZE_MATCH), (1, "Exact", "200000", 0)]
    {
        let mut cfg = Config::new(name, altitude).op(mj::CREATE, true, false);
        cfg.contexts = vec![(INSTANCE, 64)];
        cfg.context_flags = flags;
        cfg.on_setup = Some(Rc::new(move |_i, _| {
            let f = fltcommon::filter_handle(slot);
            for size in [16, 64, 65] {
                let mut ctx: PFLT_CONTEXT = std::ptr::null_mut();
                let s = unsafe { FltAllocateContext(f, INSTANCE, size, NonPagedPoolNx, &mut ctx) };
                log(format!("{slot} {size} {}", Status(s)));
                if s == 0 {
                    // The memory covers what was asked.
                    unsafe { std::ptr::write_bytes(ctx.cast::<u8>(), 0xAB, size) };
                    unsafe { FltReleaseContext(ctx) };
                }
            }
        }));
        install(&mut m, slot, cfg);
        assert_eq!(m.start(name), Status::SUCCESS);
    }
    assert_eq!(
        logged(),
        [
            "0 16 STATUS_SUCCESS",
            "0 64 STATUS_SUCCESS",
            "0 65 STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND",
            "1 16 STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND",
            "1 64 STATUS_SUCCESS",
            "1 65 STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND",
        ]
    );
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_context_size_of_zero_or_above_maxushort_is_invalid_parameter() {
    // FltAllocateContext's reference page: ContextSize "must be greater than zero and less than
    // or equal to MAXUSHORT"; its return table gives STATUS_INVALID_PARAMETER for "an invalid
    // value ... for the ContextType or the ContextSize parameter". A variable-sized definition
    // accepted both (and allocated them).
    let (mut m, _c) = setup(&[]);
    let mut cfg = Config::new("Var", "300000").op(mj::CREATE, true, false);
    cfg.contexts = vec![(INSTANCE, usize::MAX), (STREAM, 64)];
    cfg.on_setup = Some(Rc::new(move |_i, _| {
        let f = fltcommon::filter_handle(0);
        for (ty, size) in [(INSTANCE, 0), (INSTANCE, 1), (INSTANCE, 0xFFFF), (INSTANCE, 0x1_0000)]
            .into_iter()
            .chain([(STREAM, 0), (STREAM, usize::MAX - 1)])
        {
            let mut ctx: PFLT_CONTEXT = 1 as PFLT_CONTEXT;
            let s = unsafe { FltAllocateContext(f, ty, size, NonPagedPoolNx, &mut ctx) };
            log(format!("{ty} {size:#x} {} {}", Status(s), ctx.is_null()));
            if s == 0 {
                unsafe { FltReleaseContext(ctx) };
            }
        }
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Var"), Status::SUCCESS);
    assert_eq!(
        logged(),
        [
            "2 0x0 STATUS_INVALID_PARAMETER true",
            "2 0x1 STATUS_SUCCESS false",
            "2 0xffff STATUS_SUCCESS false",
            "2 0x10000 STATUS_INVALID_PARAMETER true",
            "8 0x0 STATUS_INVALID_PARAMETER true",
            "8 0xfffffffffffffffe STATUS_INVALID_PARAMETER true",
        ]
    );
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn setting_a_context_on_an_instance_being_torn_down_is_flt_deleting_object() {
    // FltSetInstanceContext's and FltSetStreamContext's reference pages: STATUS_FLT_DELETING_OBJECT
    // when "the specified Instance is being torn down" (FltDeleteInstanceContext's too). Only a
    // torn-down instance was refused: a context set from InstanceTeardownStartCallback was
    // linked. Getting the instance context still works there (filters read it to clean up).
    thread_local! {
        static FO: RefCell<usize> = const { RefCell::new(0) };
    }
    let (mut m, c) = setup(&[("s.txt", b"stream")]);
    let mut cfg = Config::new("Late", "300000").op(mj::CREATE, false, true).with_post(|p| {
        if p.status().is_success() && file_name(p) == "\\s.txt" {
            FO.with(|f| *f.borrow_mut() = unsafe { (*p.data().Iopb).TargetFileObject } as usize);
        }
        0
    });
    cfg.contexts = vec![(INSTANCE, 24), (STREAM, 24), (STREAMHANDLE, 24)];
    cfg.on_setup = Some(Rc::new(|i, _| {
        let f = fltcommon::filter_handle(0);
        let mut ic: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, &mut ic) }, 0);
        assert_eq!(unsafe { FltSetInstanceContext(i, 1, ic, std::ptr::null_mut()) }, 0);
        unsafe { FltReleaseContext(ic) };
    }));
    cfg.on_teardown_start = Some(Rc::new(|i, _| {
        let f = fltcommon::filter_handle(0);
        let fo = FO.with(|f| *f.borrow()) as *const windows_sys::Wdk::Foundation::FILE_OBJECT;
        let mut got: PFLT_CONTEXT = std::ptr::null_mut();
        log(format!("get instance {}", Status(unsafe { FltGetInstanceContext(i, &mut got) })));
        if !got.is_null() {
            unsafe { FltReleaseContext(got) };
        }
        for (ty, what) in [(INSTANCE, "instance"), (STREAM, "stream"), (STREAMHANDLE, "handle")] {
            let mut ctx: PFLT_CONTEXT = std::ptr::null_mut();
            assert_eq!(unsafe { FltAllocateContext(f, ty, 24, NonPagedPoolNx, &mut ctx) }, 0);
            let mut old: PFLT_CONTEXT = std::ptr::null_mut();
            let s = unsafe {
                match ty {
                    INSTANCE => FltSetInstanceContext(i, 0, ctx, &mut old),
                    STREAM => FltSetStreamContext(i, fo, 0, ctx, &mut old),
                    _ => FltSetStreamHandleContext(i, fo, 0, ctx, &mut old),
                }
            };
            log(format!("set {what} {} old={}", Status(s), !old.is_null()));
            if !old.is_null() {
                unsafe { FltReleaseContext(old) };
            }
            unsafe { FltReleaseContext(ctx) };
        }
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Late"), Status::SUCCESS);
    let h = m.open(c, "s.txt", CreateOptions::open()).unwrap();
    // A detach: the instance is torn down, the filter is not (its allocations still succeed).
    assert_eq!(m.filter_detach("Late", c, None), Status::SUCCESS);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(m.fltmc_unload("Late"), Status::SUCCESS);
    assert_eq!(
        logged(),
        [
            "get instance STATUS_SUCCESS",
            "set instance STATUS_FLT_DELETING_OBJECT old=false",
            "set stream STATUS_FLT_DELETING_OBJECT old=false",
            "set handle STATUS_FLT_DELETING_OBJECT old=false",
        ]
    );
    // Every context went: the refused ones at their release, the instance's with the instance.
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_section_left_open_at_unregistration_gets_no_more_notifications_facts_5_and_6() {
    // A filter that unregisters with a data-scan section still open is reported
    // (SECTION_LEAKED_AT_UNLOAD); no callback of it may run once FltUnregisterFilter has
    // returned (facts.md §5: the unregistration deletes the filter's contexts, the section
    // context among them). A later conflicting write called the unloaded filter's
    // SectionNotificationCallback (CALLBACK_AFTER_UNLOAD).
    let (mut m, c) = setup(&[("keep.txt", b"0123456789")]);
    let mut cfg = scanner("Forget", "265000", true, keep_section);
    cfg.on_conflict = Some(Rc::new(|_, _, _| log("conflict".to_owned())));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Forget"), Status::SUCCESS);
    let h = m.open(c, "keep.txt", CreateOptions::open()).unwrap();
    assert_eq!(logged(), ["create returned STATUS_SUCCESS"]);
    assert_eq!(m.fltmc_unload("Forget"), Status::SUCCESS);
    assert_eq!(m.write(h, Some(0), &[b'X'; 512], IoMode::NonCached).status, Status::SUCCESS);
    assert_eq!(m.file_contents(c, "keep.txt").unwrap()[0], b'X');
    assert_eq!(logged(), ["create returned STATUS_SUCCESS"]);
    assert!(!seen(0).iter().any(|s| matches!(s, Seen::Conflict { .. })));
    let mut found = rules(&m);
    found.sort();
    found.dedup();
    assert_eq!(found, [Rule::ContextLeaked, Rule::SectionLeaked], "{:?}", m.findings());
}

#[test]
fn a_detached_instances_section_gets_no_notification() {
    // Choice (docs/simulator.md, "Data scan"): once the instance that created a section is torn
    // down, a conflict no longer calls its filter with the stale instance; the section stays
    // the filter's leak until it unregisters.
    let (mut m, c) = setup(&[("keep.txt", b"0123456789")]);
    let mut cfg = scanner("Detach", "265000", true, keep_section);
    cfg.on_conflict = Some(Rc::new(|_, _, _| log("conflict".to_owned())));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Detach"), Status::SUCCESS);
    let h = m.open(c, "keep.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.filter_detach("Detach", c, None), Status::SUCCESS);
    assert_eq!(m.write(h, Some(0), &[b'X'; 512], IoMode::NonCached).status, Status::SUCCESS);
    assert_eq!(logged(), ["create returned STATUS_SUCCESS"]);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn allocating_a_context_for_a_filter_being_torn_down_is_flt_deleting_object() {
    // FltAllocateContext's reference page: STATUS_FLT_DELETING_OBJECT when "the minifilter driver
    // that is specified in the Filter parameter is being torn down": from FltUnregisterFilter on,
    // as FltObjectReference and FltQueueGenericWorkItem here. A detach tears an instance down,
    // not the filter: allocation still succeeds there.
    let (mut m, c) = setup(&[]);
    let mut cfg = Config::new("Going", "300000").op(mj::CREATE, true, false);
    cfg.contexts = vec![(INSTANCE, 24)];
    cfg.on_teardown_start = Some(Rc::new(|_i, reason| {
        let f = fltcommon::filter_handle(0);
        let mut ctx: PFLT_CONTEXT = 1 as PFLT_CONTEXT;
        let s = unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, &mut ctx) };
        log(format!("{reason:#x} {} {}", Status(s), ctx.is_null()));
        if s == 0 {
            unsafe { FltReleaseContext(ctx) };
        }
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Going"), Status::SUCCESS);
    assert_eq!(m.filter_detach("Going", c, None), Status::SUCCESS);
    assert_eq!(m.filter_attach("Going", c, None), Status::SUCCESS);
    assert_eq!(m.fltmc_unload("Going"), Status::SUCCESS);
    assert_eq!(logged(), ["0x1 STATUS_SUCCESS false", "0x2 STATUS_FLT_DELETING_OBJECT true"]);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_new_context_is_not_zeroed() {
    // FltAllocateContext's reference page: "The contents of the returned context are not
    // zeroed" (and it "does not initialize the contents"). The simulator fills the filter's
    // part as it fills ExAllocatePoolWithTag's blocks (0xCD), so a filter that reads a field it
    // never wrote does not see a convenient zero; a fixed-size definition's larger element too.
    const NO_EXACT_SIZE_MATCH: u16 = 0x1;
    let (mut m, _c) = setup(&[]);
    let mut cfg = Config::new("Fresh", "300000").op(mj::CREATE, true, false);
    cfg.contexts = vec![(INSTANCE, 64), (STREAM, usize::MAX)];
    cfg.context_flags = NO_EXACT_SIZE_MATCH;
    cfg.on_setup = Some(Rc::new(|_i, _| {
        let f = fltcommon::filter_handle(0);
        for (ty, size) in [(INSTANCE, 16), (INSTANCE, 64), (STREAM, 40)] {
            let mut ctx: PFLT_CONTEXT = std::ptr::null_mut();
            assert_eq!(unsafe { FltAllocateContext(f, ty, size, NonPagedPoolNx, &mut ctx) }, 0);
            let bytes = unsafe { std::slice::from_raw_parts(ctx.cast::<u8>(), size) };
            log(format!("{ty} {size} zeroed {}", bytes.iter().all(|&b| b == 0)));
            unsafe { FltReleaseContext(ctx) };
        }
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Fresh"), Status::SUCCESS);
    assert_eq!(logged(), ["2 16 zeroed false", "2 64 zeroed false", "8 40 zeroed false"]);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_stream_handle_context_needs_an_opened_file_object() {
    // FltSetStreamHandleContext's reference page: it "cannot be called on an unopened
    // FileObject", so not from a pre-create callback; its return table (current page):
    // STATUS_NOT_SUPPORTED when the file system does not support the context for the stream
    // "or the caller provided a NULL FileObject". "File System Support for Contexts": file
    // object (stream handle) contexts, like stream contexts, need the file system's
    // FSRTL_ADVANCED_FCB_HEADER, and are not supported in the pre-create path. The simulator
    // linked a stream-handle context to any file object, even before the file system opened it.
    let (mut m, c) = setup(&[("h.txt", b"handle")]);
    let mut cfg = Config::new("Early", "300000").op(mj::CREATE, true, true).with_pre(|p| {
        let fo = p.iopb().TargetFileObject;
        let name = unsafe { fsfilter_sim::mem::read_unicode(&(*fo).FileName) };
        if name != "\\h.txt" {
            return (1, 0);
        }
        let f = fltcommon::filter_handle(p.slot);
        let i = p.instance();
        let mut ctx: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltAllocateContext(f, STREAMHANDLE, 24, NonPagedPoolNx, &mut ctx) }, 0);
        let s = unsafe { FltSetStreamHandleContext(i, fo, 1, ctx, std::ptr::null_mut()) };
        log(format!("pre-create set {}", Status(s)));
        let mut got: PFLT_CONTEXT = 1 as PFLT_CONTEXT;
        let s = unsafe { FltGetStreamHandleContext(i, fo, &mut got) };
        log(format!("pre-create get {} {}", Status(s), got.is_null()));
        let s =
            unsafe { FltSetStreamHandleContext(i, std::ptr::null(), 1, ctx, std::ptr::null_mut()) };
        log(format!("null file object set {}", Status(s)));
        // Set up here, set in the post-create callback (the page's advice).
        (0, ctx as usize)
    });
    cfg = cfg.with_post(|p| {
        let ctx = p.context as PFLT_CONTEXT;
        if ctx.is_null() {
            return 0;
        }
        let fo = unsafe { (*p.data().Iopb).TargetFileObject };
        let s =
            unsafe { FltSetStreamHandleContext(p.instance(), fo, 1, ctx, std::ptr::null_mut()) };
        log(format!("post-create set {}", Status(s)));
        unsafe { FltReleaseContext(ctx) };
        0
    });
    cfg.contexts = vec![(STREAMHANDLE, 24)];
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Early"), Status::SUCCESS);
    let h = m.open(c, "h.txt", CreateOptions::open()).unwrap();
    m.close_handle(h);
    assert_eq!(
        logged(),
        [
            "pre-create set STATUS_NOT_SUPPORTED",
            "pre-create get STATUS_NOT_SUPPORTED true",
            "null file object set STATUS_NOT_SUPPORTED",
            "post-create set STATUS_SUCCESS",
        ]
    );
    let cleanups = seen(0).iter().filter(|s| matches!(s, Seen::Cleanup { .. })).count();
    assert_eq!(cleanups, 1, "the context went with its file object");
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_section_context_already_linked_to_an_open_section_is_refused() {
    // A context is linked to one object at a time (the FltSet*Context pages'
    // STATUS_FLT_CONTEXT_ALREADY_LINKED: "already in use due to a successful prior call"); a
    // section context is linked to its section by FltCreateSectionForDataScan until
    // FltCloseSectionForDataScan. Giving the context of an open section to a second
    // FltCreateSectionForDataScan was accepted without linking it: the two sections shared one
    // context, and closing the second made the first one's close answer STATUS_NOT_FOUND while
    // it stayed open. The status Windows gives is undocumented: the simulator refuses the
    // second section with STATUS_FLT_CONTEXT_ALREADY_LINKED (choice).
    let (mut m, c) = setup(&[("keep.txt", b"first"), ("other.txt", b"second")]);
    let cfg = scanner("Reuse", "265000", true, |p| {
        if !p.status().is_success() {
            return 0;
        }
        match file_name(p).as_str() {
            "\\keep.txt" => {
                keep_section(p);
            }
            "\\other.txt" => {
                let (ctx, ..) = KEPT.with(|k| k.borrow()[0]);
                let (s, h, obj, _) =
                    create_section(p, ctx as PFLT_CONTEXT, PAGE_READONLY, SEC_COMMIT);
                log(format!("second create {s}"));
                if s.is_success() {
                    log(format!("second close {}", close_all(ctx as PFLT_CONTEXT, h, obj)));
                }
            }
            _ => {}
        }
        0
    });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Reuse"), Status::SUCCESS);
    m.create(c, "keep.txt", CreateOptions::open());
    m.create(c, "other.txt", CreateOptions::open());
    let (ctx, h, obj) = KEPT.with(|k| k.borrow_mut().pop()).unwrap();
    log(format!("first close {}", close_all(ctx as PFLT_CONTEXT, h as HANDLE, obj as *mut c_void)));
    assert_eq!(
        logged(),
        [
            "create returned STATUS_SUCCESS",
            "second create STATUS_FLT_CONTEXT_ALREADY_LINKED",
            "first close STATUS_SUCCESS",
        ]
    );
    assert_eq!(seen(0).iter().filter(|s| matches!(s, Seen::Cleanup { .. })).count(), 1);
    assert_eq!(m.fltmc_unload("Reuse"), Status::SUCCESS);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn releasing_the_reference_a_linked_context_holds_is_reported_and_cleans_up_once() {
    // FltAllocateContext gives one reference, FltSetInstanceContext adds the instance's
    // (its page: "increments the reference count"); the filter releases its own once
    // (FltReleaseContext's page: each reference released once). A filter that releases twice
    // drops the reference the instance holds: the simulator ran the cleanup callback with the
    // context still set (FltGetInstanceContext then handed out the dead context) and ran it a
    // second time when the instance went, with no finding. The extra release is now an
    // INVALID_FLT_OBJECT finding and is ignored; the context goes once, with its instance.
    let (mut m, _c) = setup(&[]);
    let mut cfg = Config::new("Twice", "300000").op(mj::CREATE, true, false);
    cfg.contexts = vec![(INSTANCE, 24)];
    cfg.on_setup = Some(Rc::new(|i, _| {
        let f = fltcommon::filter_handle(0);
        let mut a: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, &mut a) }, 0);
        assert_eq!(unsafe { FltSetInstanceContext(i, 1, a, std::ptr::null_mut()) }, 0);
        unsafe { FltReleaseContext(a) };
        unsafe { FltReleaseContext(a) };
        let cleaned = seen(0).iter().any(|s| matches!(s, Seen::Cleanup { .. }));
        log(format!("cleaned up while set {cleaned}"));
        let mut got: PFLT_CONTEXT = std::ptr::null_mut();
        let s = unsafe { FltGetInstanceContext(i, &mut got) };
        log(format!("get {} same {}", Status(s), got == a));
        if s == 0 {
            unsafe { FltReleaseContext(got) };
        }
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Twice"), Status::SUCCESS);
    assert_eq!(m.fltmc_unload("Twice"), Status::SUCCESS);
    assert_eq!(logged(), ["cleaned up while set false", "get STATUS_SUCCESS same true"]);
    let cleanups = seen(0).iter().filter(|s| matches!(s, Seen::Cleanup { .. })).count();
    assert_eq!(cleanups, 1, "cleaned up once");
    assert_eq!(rules(&m), [Rule::InvalidFltObject], "{:?}", m.findings());
}

#[test]
fn a_null_out_pointer_to_the_context_routines_is_a_bugcheck_finding() {
    // FltAllocateContext's ReturnedContext and FltGet*Context's Context are required ("cannot
    // be NULL", their reference pages): Windows writes through them and bugchecks. The
    // simulator wrote through the NULL pointer on success and aborted its own process; now a
    // BUGCHECK finding, the call does nothing and answers STATUS_INVALID_PARAMETER (as for a
    // NULL dispatcher object).
    let (mut m, _c) = setup(&[]);
    let mut cfg = Config::new("Null", "300000").op(mj::CREATE, true, false);
    cfg.contexts = vec![(INSTANCE, 24)];
    cfg.on_setup = Some(Rc::new(|i, _| {
        let f = fltcommon::filter_handle(0);
        let s =
            unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, std::ptr::null_mut()) };
        log(format!("allocate {}", Status(s)));
        let mut a: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltAllocateContext(f, INSTANCE, 24, NonPagedPoolNx, &mut a) }, 0);
        assert_eq!(unsafe { FltSetInstanceContext(i, 1, a, std::ptr::null_mut()) }, 0);
        unsafe { FltReleaseContext(a) };
        let s = unsafe { FltGetInstanceContext(i, std::ptr::null_mut()) };
        log(format!("get {}", Status(s)));
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Null"), Status::SUCCESS);
    assert_eq!(m.fltmc_unload("Null"), Status::SUCCESS);
    assert_eq!(logged(), ["allocate STATUS_INVALID_PARAMETER", "get STATUS_INVALID_PARAMETER"]);
    // Nothing was allocated or referenced for the failed calls: the instance context goes
    // with its instance, and no context is left behind.
    assert_eq!(seen(0).iter().filter(|s| matches!(s, Seen::Cleanup { .. })).count(), 1);
    assert_eq!(rules(&m), [Rule::Bugcheck, Rule::Bugcheck], "{:?}", m.findings());
}

#[test]
fn an_unknown_context_type_is_invalid_parameter_not_allocation_not_found() {
    // FltAllocateContext's return table: STATUS_INVALID_PARAMETER for "an invalid value ... for
    // the ContextType" (one of the seven FLT_*_CONTEXT types, its ContextType parameter);
    // STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND when the type is valid but the filter registered
    // no allocation information for it. An invalid type answered the second.
    let (mut m, _c) = setup(&[]);
    let mut cfg = Config::new("Types", "300000").op(mj::CREATE, true, false);
    cfg.contexts = vec![(INSTANCE, 24)];
    cfg.on_setup = Some(Rc::new(|_i, _| {
        let f = fltcommon::filter_handle(0);
        for ty in [0x80u16, INSTANCE | STREAM, 0, STREAM] {
            let mut ctx: PFLT_CONTEXT = 1 as PFLT_CONTEXT;
            let s = unsafe { FltAllocateContext(f, ty, 24, NonPagedPoolNx, &mut ctx) };
            log(format!("{ty:#x} {} {}", Status(s), ctx.is_null()));
        }
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Types"), Status::SUCCESS);
    assert_eq!(
        logged(),
        [
            "0x80 STATUS_INVALID_PARAMETER true",
            "0xa STATUS_INVALID_PARAMETER true",
            "0x0 STATUS_INVALID_PARAMETER true",
            "0x8 STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND true",
        ]
    );
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_leaked_section_is_not_also_a_leaked_context_when_only_the_section_holds_it_facts_5_and_6() {
    // A scanner that created a section and released its own reference on the section context
    // (the usual pattern: the section holds the Filter Manager's), then never closed the
    // section, leaked a section, not a context: the context's last reference is the section's,
    // which the Filter Manager drops when it closes the leaked section at the unregistration
    // (its cleanup runs before FltUnregisterFilter returns). The simulator also reported
    // CONTEXT_LEAKED_AT_UNLOAD for that reference, counting the Filter Manager's own.
    let (mut m, c) = setup(&[("keep.txt", b"leak")]);
    let cfg = scanner("OneLeak", "265000", true, |p| {
        let r = keep_section(p);
        if let Some((ctx, ..)) = KEPT.with(|k| k.borrow().first().copied()) {
            if file_name(p) == "\\keep.txt" {
                unsafe { FltReleaseContext(ctx as PFLT_CONTEXT) };
            }
        }
        r
    });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("OneLeak"), Status::SUCCESS);
    m.create(c, "keep.txt", CreateOptions::open());
    assert_eq!(m.fltmc_unload("OneLeak"), Status::SUCCESS);
    // Two SECTION_LEAKED: the Filter Manager's section never closed with
    // FltCloseSectionForDataScan, and its handle and object never closed either.
    assert_eq!(rules(&m), [Rule::SectionLeaked, Rule::SectionLeaked], "{:?}", m.findings());
    assert_eq!(seen(0).iter().filter(|s| matches!(s, Seen::Cleanup { .. })).count(), 1);
}

/// Choice: the contexts of a torn-down instance are cleaned up in a fixed order, the instance's
/// first, then its stream contexts and its stream-handle contexts, each in the order they were
/// allocated. The stream and stream-handle tables are keyed by host addresses (the FCB, the file
/// object), so the order used to follow the host's heap: different from one run to another.
/// Here the contexts are allocated in the reverse order of their streams' addresses.
#[test]
fn an_instance_teardown_cleans_up_stream_contexts_in_allocation_order() {
    let names = ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt"];
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, &b"data"[..])).collect();
    let (mut m, c) = setup(&files);
    let mut cfg = Config::new("Order", "300000").op(mj::READ, true, false).with_pre(|p| {
        let f = fltcommon::filter_handle(p.slot);
        let fo = p.iopb().TargetFileObject;
        let mut sc: PFLT_CONTEXT = std::ptr::null_mut();
        assert_eq!(unsafe { FltAllocateContext(f, STREAM, 24, NonPagedPoolNx, &mut sc) }, 0);
        assert_eq!(
            unsafe { FltSetStreamContext(p.instance(), fo, 1, sc, std::ptr::null_mut()) },
            0
        );
        unsafe { FltReleaseContext(sc) };
        log(format!("{:#x}", sc as usize));
        (1, 0)
    });
    cfg.contexts = vec![(STREAM, 24)];
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Order"), Status::SUCCESS);
    let mut handles: Vec<_> = names
        .iter()
        .map(|n| {
            let h = m.open(c, n, CreateOptions::open()).unwrap();
            let fo = m.kernel(|k| k.user_handle(h).unwrap().fo);
            // SAFETY: the live file object behind the handle.
            let fcb =
                unsafe { (*(fo as *const windows_sys::Wdk::Foundation::FILE_OBJECT)).FsContext };
            (fcb as usize, h)
        })
        .collect();
    // Allocation order: the streams from the highest address down.
    handles.sort_by_key(|h| std::cmp::Reverse(h.0));
    for (_, h) in &handles {
        assert_eq!(m.read(*h, Some(0), 4, IoMode::Cached).status, Status::SUCCESS);
    }
    let allocated: Vec<usize> =
        logged().iter().map(|s| usize::from_str_radix(&s[2..], 16).unwrap()).collect();
    assert_eq!(allocated.len(), names.len());
    assert_eq!(m.fltmc_unload("Order"), Status::SUCCESS);
    let cleaned: Vec<usize> = seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Cleanup { context, .. } => Some(context),
            _ => None,
        })
        .collect();
    assert_eq!(cleaned, allocated, "cleaned up in allocation order");
    for (_, h) in handles {
        m.close_handle(h);
    }
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

/// `FltCreateSectionForDataScan` acquires the file for section synchronization first, as
/// `FsRtlCreateSectionForDataScan` does (docs/simulator.md, "FsFilter callbacks"): every
/// instance of the stack that registers `IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION` sees it, the
/// scanner's own too, and one that fails it fails the section with its status.
#[test]
fn a_data_scan_section_is_acquired_through_the_stack_and_may_be_refused() {
    const ACQUIRE: u8 = 0xFF;
    let (mut m, c) = setup(&[("keep.txt", b"0123456789"), ("deny.txt", b"0123456789")]);
    let scan = |p: &PostCall| -> i32 {
        let name = file_name(p);
        // The post callbacks of the acquire come here too: only the create scans.
        if p.major() == mj::CREATE && p.status().is_success() && name.ends_with(".txt") {
            let ctx = section_context(p.slot);
            let (s, h, obj, _) = create_section(p, ctx, PAGE_READONLY, SEC_COMMIT);
            log(format!("create {name} {s}"));
            if s.is_success() {
                assert_eq!(close_all(ctx, h, obj), Status::SUCCESS);
            } else {
                unsafe { FltReleaseContext(ctx) };
            }
        }
        0
    };
    install(&mut m, 0, scanner("Scan", "265000", true, scan).op(ACQUIRE, true, true));
    assert_eq!(m.start("Scan"), Status::SUCCESS);
    let deny = Config::new("Av", "328000").op(ACQUIRE, true, false).with_pre(|p| {
        let fo = p.iopb().TargetFileObject;
        let name = unsafe { fsfilter_kernel::unicode::units(&(*fo).FileName) };
        if String::from_utf16_lossy(name).ends_with("deny.txt") {
            p.set_status(Status::ACCESS_DENIED, 0);
            return (4, 0); // FLT_PREOP_COMPLETE
        }
        (1, 0)
    });
    install(&mut m, 1, deny);
    assert_eq!(m.start("Av"), Status::SUCCESS);
    let acquires =
        || -> Vec<String> { order().into_iter().filter(|o| o.ends_with(":255")).collect() };
    order_clear();
    let h = m.open(c, "keep.txt", CreateOptions::open()).unwrap();
    assert_eq!(acquires(), ["Av:pre:255", "Scan:pre:255", "Scan:post:255"]);
    order_clear();
    let d = m.open(c, "deny.txt", CreateOptions::open()).unwrap();
    assert_eq!(acquires(), ["Av:pre:255"], "completed above the scanner: it sees nothing");
    assert_eq!(
        logged(),
        ["create \\keep.txt STATUS_SUCCESS", "create \\deny.txt STATUS_ACCESS_DENIED"]
    );
    m.close_handle(h);
    m.close_handle(d);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_data_scan_section_in_the_post_of_a_failed_create_is_reported_before_the_acquire() {
    // WRK mm/creasect.c MmCreateSection: the file-object path dereferences
    // FileObject->SectionObjectPointer without a test, so FltCreateSectionForDataScan on the
    // file object of a create that opened nothing is a bug check on Windows. The simulator
    // reports DATA_SCAN_SECTION_ON_UNOPENED_FILE before any instance sees the acquire, and
    // answers STATUS_INVALID_FILE_FOR_SECTION; an opened file is scanned as before.
    const ACQUIRE: u8 = 0xFF;
    let (mut m, c) = setup(&[("keep.txt", b"0123456789")]);
    let scan = |p: &PostCall| -> i32 {
        let name = file_name(p);
        if p.major() == mj::CREATE && name.ends_with(".txt") {
            let ctx = section_context(p.slot);
            let (s, h, obj, _) = create_section(p, ctx, PAGE_READONLY, SEC_COMMIT);
            log(format!("create {name} {} {s}", p.status()));
            if s.is_success() {
                assert_eq!(close_all(ctx, h, obj), Status::SUCCESS);
            } else {
                unsafe { FltReleaseContext(ctx) };
            }
        }
        0
    };
    install(&mut m, 0, scanner("Scan", "265000", true, scan).op(ACQUIRE, true, true));
    assert_eq!(m.start("Scan"), Status::SUCCESS);
    let above = Config::new("Av", "328000").op(ACQUIRE, true, false).with_pre(|_| (1, 0));
    install(&mut m, 1, above);
    assert_eq!(m.start("Av"), Status::SUCCESS);
    let acquires =
        || -> Vec<String> { order().into_iter().filter(|o| o.ends_with(":255")).collect() };
    order_clear();
    let r = m.create(c, "missing.txt", CreateOptions::open());
    assert_eq!(r.status, Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(acquires(), Vec::<String>::new(), "no instance sees the acquire");
    assert_eq!(rules(&m), [Rule::SectionOnUnopenedFile], "{:?}", m.findings());
    let h = m.open(c, "keep.txt", CreateOptions::open()).unwrap();
    assert_eq!(acquires(), ["Av:pre:255", "Scan:pre:255", "Scan:post:255"]);
    assert_eq!(
        logged(),
        [
            "create \\missing.txt STATUS_OBJECT_NAME_NOT_FOUND STATUS_INVALID_FILE_FOR_SECTION",
            "create \\keep.txt STATUS_SUCCESS STATUS_SUCCESS",
        ]
    );
    m.close_handle(h);
    assert_eq!(rules(&m), [Rule::SectionOnUnopenedFile], "{:?}", m.findings());
}

#[test]
fn a_data_scan_section_after_the_filter_cancelled_the_open_is_reported_before_the_acquire() {
    // IoCancelFileOpen (which FltCancelFileOpen calls) sends the cleanup and the close below and
    // marks the file object FO_FILE_OPEN_CANCELLED: the file system freed what its FsContext and
    // SectionObjectPointer point at, which MmCreateSection's file-object path dereferences (WRK
    // mm/creasect.c). The simulator reports DATA_SCAN_SECTION_ON_UNOPENED_FILE before any
    // instance sees the acquire, as for a file object never opened.
    const ACQUIRE: u8 = 0xFF;
    let (mut m, c) = setup(&[("keep.txt", b"0123456789")]);
    let scan = |p: &PostCall| -> i32 {
        if p.major() == mj::CREATE && p.status().is_success() && file_name(p).ends_with(".txt") {
            let fo = unsafe { (*p.data().Iopb).TargetFileObject };
            unsafe { FltCancelFileOpen(p.instance(), fo) };
            let ctx = section_context(p.slot);
            let (s, _, _, _) = create_section(p, ctx, PAGE_READONLY, SEC_COMMIT);
            unsafe { FltReleaseContext(ctx) };
            log(format!("cancelled {}", s));
            p.data().IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0;
            p.data().IoStatus.Information = 0;
            unsafe { FltSetCallbackDataDirty(p.data) };
        }
        0
    };
    install(&mut m, 0, scanner("Scan", "265000", true, scan).op(ACQUIRE, true, true));
    assert_eq!(m.start("Scan"), Status::SUCCESS);
    order_clear();
    let r = m.create(c, "keep.txt", CreateOptions::open());
    assert_eq!(r.status, Status::ACCESS_DENIED);
    let acquires: Vec<String> = order().into_iter().filter(|o| o.ends_with(":255")).collect();
    assert_eq!(acquires, Vec::<String>::new(), "no instance sees the acquire");
    assert_eq!(logged(), ["cancelled STATUS_INVALID_FILE_FOR_SECTION"]);
    assert_eq!(rules(&m), [Rule::SectionOnUnopenedFile], "{:?}", m.findings());
}

#[test]
fn a_data_scan_section_created_from_an_acquire_callback_is_acquired_inside_it() {
    // A scanner creating its section from the pre or post callback of a user's mapping: the
    // nested acquire and release walk the stack inside the outer operation, whose own post
    // then runs with its status; nothing is left over.
    const ACQUIRE: u8 = 0xFF;
    const RELEASE: u8 = 0xFE;
    thread_local! {
        static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let (mut m, c) = setup(&[("a.bin", b"0123456789"), ("b.bin", b"0123456789")]);
    let nested = |slot: usize,
                  instance: PFLT_INSTANCE,
                  fo: *mut windows_sys::Wdk::Foundation::FILE_OBJECT,
                  when: &str| {
        if DEPTH.get() > 0 {
            return;
        }
        DEPTH.set(1);
        let ctx = section_context(slot);
        let mut h: HANDLE = std::ptr::null_mut();
        let mut obj: *mut c_void = std::ptr::null_mut();
        let mut size = 0i64;
        let s = Status(unsafe {
            FltCreateSectionForDataScan(
                instance,
                fo,
                ctx,
                SECTION_MAP_READ,
                &section_attributes(),
                std::ptr::null(),
                PAGE_READONLY,
                SEC_COMMIT,
                0,
                &mut h,
                &mut obj,
                &mut size,
            )
        });
        log(format!("{when} {s}"));
        if s.is_success() {
            assert_eq!(close_all(ctx, h, obj), Status::SUCCESS);
        } else {
            unsafe { FltReleaseContext(ctx) };
        }
        DEPTH.set(0);
    };
    let mut cfg = scanner("Scan", "265000", true, move |p: &PostCall| {
        if p.major() == ACQUIRE {
            let fo = unsafe { (*p.data().Iopb).TargetFileObject };
            if file_name(p).ends_with("b.bin") {
                nested(p.slot, p.instance(), fo, "post");
            }
        }
        0
    })
    .op(ACQUIRE, true, true)
    .op(RELEASE, true, true);
    cfg = cfg.with_pre(move |p: &fltcommon::PreCall| {
        if p.major() == ACQUIRE {
            let fo = p.iopb().TargetFileObject;
            let name = unsafe { fsfilter_sim::mem::read_unicode(&(*fo).FileName) };
            if name.ends_with("a.bin") {
                nested(p.slot, p.instance(), fo, "pre");
            }
        }
        (0, 0)
    });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Scan"), Status::SUCCESS);
    let rx = CreateOptions::open();
    for name in ["a.bin", "b.bin"] {
        let h = m.open(c, name, rx).unwrap();
        order_clear();
        let r = m.create_section(h, PAGE_READONLY);
        assert_eq!(r.status, Status::SUCCESS, "{name}");
        m.close_handle(h);
    }
    assert_eq!(logged(), ["pre STATUS_SUCCESS", "post STATUS_SUCCESS"]);
    m.settle();
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}
