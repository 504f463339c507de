//! FsRtl per-file-object contexts (docs/simulator.md, "Per-file-object contexts (FsRtl)"): the
//! exports `FsRtlInsertPerFileObjectContext`, `FsRtlLookupPerFileObjectContext` and
//! `FsRtlRemovePerFileObjectContext` (WRK `fsrtl/filtrctx.c`), called by "Ctx", a raw legacy
//! driver written here against windows-sys, on the file objects of handles the test opens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(missing_docs, reason = "test driver")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod fltcommon;

use std::cell::RefCell;
use std::ffi::c_void;

use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, FsKind, Handle, Machine, Rule, ServiceSpec, StopResult, VolumeId, VolumeSpec,
};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::{
    FSRTL_PER_FILEOBJECT_CONTEXT, FsRtlInsertPerFileObjectContext, FsRtlLookupPerFileObjectContext,
    FsRtlRemovePerFileObjectContext,
};
use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

/// `POOL_FLAG_NON_PAGED`.
const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// Ctx's pool tag.
const TAG: u32 = u32::from_le_bytes(*b"FoCx");

const OWNER_1: usize = 0x1000;
const OWNER_2: usize = 0x2000;
const INST_1: usize = 0x10;

thread_local! {
    /// What Ctx's `DriverUnload` removes and frees (file object, owner).
    static UNLOAD_REMOVES: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "system" fn ctx_unload(_driver: *const DRIVER_OBJECT) {
    for (fo, o) in UNLOAD_REMOVES.with(|u| std::mem::take(&mut *u.borrow_mut())) {
        // SAFETY: a file object the test keeps open, and Ctx's owner id.
        let r = unsafe { FsRtlRemovePerFileObjectContext(fo as *const _, o as *const _, 0 as _) };
        assert!(!r.is_null(), "Ctx's context is still there");
        // SAFETY: Ctx's pool block, unlinked.
        unsafe { ExFreePoolWithTag(r.cast(), TAG) };
    }
}

unsafe extern "system" fn ctx_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the loader's driver object, ours during DriverEntry.
    unsafe { (*driver.cast_mut()).DriverUnload = Some(ctx_unload) };
    Status::SUCCESS.0
}

/// A machine with C: (NTFS: `a.txt`) and Ctx running.
fn machine() -> (Machine, VolumeId) {
    UNLOAD_REMOVES.with(|u| u.borrow_mut().clear());
    let mut m = fltcommon::machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"a"));
    m.install(ServiceSpec::new("Ctx", ctx_entry, "legacy"));
    m.boot();
    assert_eq!(m.start("Ctx"), Status::SUCCESS);
    (m, c)
}

fn as_ctx<R>(m: &Machine, f: impl FnOnce() -> R) -> R {
    let image = m.kernel(|k| k.service_index("Ctx").and_then(|i| k.loader.services[i].image));
    assert!(image.is_some(), "Ctx is loaded");
    fsfilter_sim::kernel::call_into(image, f)
}

/// The file object of a handle.
fn fo(m: &Machine, h: Handle) -> usize {
    m.kernel(|k| k.user_handle(h).unwrap().fo)
}

/// A context in Ctx's pool, initialized as `FsRtlInitPerFileObjectContext` does.
fn new_ctx(m: &Machine, owner: usize, instance: usize) -> usize {
    as_ctx(m, || {
        let size = size_of::<FSRTL_PER_FILEOBJECT_CONTEXT>();
        // SAFETY: a plain pool allocation for Ctx.
        let p = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, size, TAG) };
        assert!(!p.is_null());
        let c = p.cast::<FSRTL_PER_FILEOBJECT_CONTEXT>();
        unsafe {
            (*c).OwnerId = owner as *mut c_void;
            (*c).InstanceId = instance as *mut c_void;
        }
        p as usize
    })
}

fn insert(m: &Machine, fo: usize, ctx: usize) -> Status {
    Status(as_ctx(m, || unsafe {
        FsRtlInsertPerFileObjectContext(fo as *const _, ctx as *const _)
    }))
}

fn lookup(m: &Machine, fo: usize, owner: usize, instance: usize) -> usize {
    as_ctx(m, || unsafe {
        FsRtlLookupPerFileObjectContext(fo as *const _, owner as *const _, instance as *const _)
    }) as usize
}

fn remove(m: &Machine, fo: usize, owner: usize, instance: usize) -> usize {
    as_ctx(m, || unsafe {
        FsRtlRemovePerFileObjectContext(fo as *const _, owner as *const _, instance as *const _)
    }) as usize
}

fn free(m: &Machine, ctx: usize) {
    as_ctx(m, || unsafe { ExFreePoolWithTag(ctx as *mut c_void, TAG) });
}

fn rules(m: &Machine) -> Vec<Rule> {
    m.findings().into_iter().map(|f| f.0).collect()
}

#[test]
fn each_file_object_has_its_own_contexts() {
    // Two handles on one file: a context per file object, found again by owner (and
    // instance), removed from its own file object only. A NULL file object: insert
    // STATUS_INVALID_PARAMETER (WRK, Learn), lookup and removal NULL.
    let (mut m, c) = machine();
    let (h1, h2) = (
        m.open(c, "a.txt", CreateOptions::open()).unwrap(),
        m.open(c, "a.txt", CreateOptions::open()).unwrap(),
    );
    let (f1, f2) = (fo(&m, h1), fo(&m, h2));
    assert_ne!(f1, f2);
    let (x1, x2, y1) =
        (new_ctx(&m, OWNER_1, 0), new_ctx(&m, OWNER_1, 0), new_ctx(&m, OWNER_2, INST_1));
    assert_eq!(lookup(&m, f1, OWNER_1, 0), 0);
    assert_eq!(insert(&m, f1, x1), Status::SUCCESS);
    assert_eq!(insert(&m, f2, x2), Status::SUCCESS);
    assert_eq!(insert(&m, f1, y1), Status::SUCCESS);
    assert_eq!(lookup(&m, f1, OWNER_1, 0), x1);
    assert_eq!(lookup(&m, f2, OWNER_1, 0), x2);
    assert_eq!(lookup(&m, f2, OWNER_2, 0), 0);
    assert_eq!(lookup(&m, f1, OWNER_2, INST_1), y1);
    assert_eq!(lookup(&m, f1, OWNER_2, INST_1 + 1), 0);
    // Neither id: the head of the list, the last inserted.
    assert_eq!(lookup(&m, f1, 0, 0), y1);
    assert_eq!(insert(&m, 0, x1), Status::INVALID_PARAMETER);
    assert_eq!(lookup(&m, 0, OWNER_1, 0), 0);
    assert_eq!(remove(&m, 0, OWNER_1, 0), 0);
    assert_eq!(remove(&m, f1, OWNER_1, 0), x1);
    assert_eq!(lookup(&m, f1, OWNER_1, 0), 0);
    assert_eq!(lookup(&m, f2, OWNER_1, 0), x2);
    assert_eq!(remove(&m, f1, OWNER_2, INST_1), y1);
    assert_eq!(remove(&m, f2, OWNER_1, 0), x2);
    for x in [x1, x2, y1] {
        free(&m, x);
    }
    m.close_handle(h1);
    m.close_handle(h2);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_context_left_on_a_file_object_at_its_deletion_is_reported() {
    // PER_FILE_OBJECT_CONTEXT_LINKED_AT_CLOSE: "Filter drivers must explicitly remove all context
    // they associate with a file object (otherwise the underlying filesystem will BugCheck at
    // close). This should be done at IRP_CLOSE time" (WRK FsRtlRemovePerFileObjectContext). The
    // context removed before the close: no finding.
    for broken in [true, false] {
        let (mut m, c) = machine();
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let f = fo(&m, h);
        let x = new_ctx(&m, OWNER_1, 0);
        assert_eq!(insert(&m, f, x), Status::SUCCESS);
        if !broken {
            assert_eq!(remove(&m, f, OWNER_1, 0), x);
        }
        m.close_handle(h);
        if broken {
            assert_eq!(rules(&m), [Rule::PerFileObjectContextLinkedAtClose]);
            let f = &m.findings()[0];
            assert_eq!(f.1.as_deref(), Some("Ctx"));
            // Dropped with the file object: freeing it later is no second finding.
            free(&m, x);
            assert_eq!(rules(&m), [Rule::PerFileObjectContextLinkedAtClose]);
        } else {
            free(&m, x);
            assert!(m.findings().is_empty(), "{:?}", m.findings());
        }
    }
}

#[test]
fn a_driver_that_unloads_with_a_context_linked_is_reported() {
    // PER_FILE_OBJECT_CONTEXT_LINKED_AT_UNLOAD; removing them in DriverUnload: no finding.
    for broken in [true, false] {
        let (mut m, c) = machine();
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let f = fo(&m, h);
        let x = new_ctx(&m, OWNER_1, 0);
        assert_eq!(insert(&m, f, x), Status::SUCCESS);
        if !broken {
            UNLOAD_REMOVES.with(|u| u.borrow_mut().push((f, OWNER_1)));
        }
        assert_eq!(m.stop("Ctx"), StopResult::Unloaded);
        m.close_handle(h);
        if broken {
            let r = rules(&m);
            assert!(r.contains(&Rule::PerFileObjectContextLinkedAtUnload), "{r:?}");
            assert!(r.contains(&Rule::PoolLeaked), "{r:?}");
            let text = m
                .findings()
                .into_iter()
                .find(|f| f.0 == Rule::PerFileObjectContextLinkedAtUnload)
                .unwrap();
            assert_eq!(text.1.as_deref(), Some("Ctx"));
            assert!(text.2.contains("1 FSRTL_PER_FILEOBJECT_CONTEXT(s)"), "{}", text.2);
        } else {
            assert!(m.findings().is_empty(), "{:?}", m.findings());
        }
    }
}

#[test]
fn freeing_a_context_still_linked_is_reported_and_unlinks_it() {
    // PER_FILE_OBJECT_CONTEXT_FREED_WHILE_LINKED: the simulator unlinks it, so the close finds
    // nothing left (no second finding).
    let (mut m, c) = machine();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let f = fo(&m, h);
    let x = new_ctx(&m, OWNER_1, 0);
    assert_eq!(insert(&m, f, x), Status::SUCCESS);
    free(&m, x);
    assert_eq!(lookup(&m, f, OWNER_1, 0), 0);
    m.close_handle(h);
    assert_eq!(rules(&m), [Rule::PerFileObjectContextFreedWhileLinked]);
}

#[test]
fn misuses_are_reported() {
    // PER_FILE_OBJECT_CONTEXT_MISUSE: a NULL OwnerId (linked all the same), a context linked
    // twice (left where it is), a lookup with an InstanceId and no OwnerId.
    let (mut m, c) = machine();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let f = fo(&m, h);
    let (x, y) = (new_ctx(&m, 0, 0), new_ctx(&m, OWNER_1, 0));
    assert_eq!(insert(&m, f, x), Status::SUCCESS);
    assert_eq!(insert(&m, f, y), Status::SUCCESS);
    assert_eq!(insert(&m, f, y), Status::SUCCESS);
    assert_eq!(lookup(&m, f, 0, INST_1), 0);
    assert_eq!(rules(&m), [Rule::PerFileObjectContextMisuse; 3]);
    assert_eq!(remove(&m, f, OWNER_1, 0), y);
    assert_eq!(remove(&m, f, 0, 0), x);
    free(&m, x);
    free(&m, y);
    m.close_handle(h);
    assert_eq!(rules(&m), [Rule::PerFileObjectContextMisuse; 3]);
}

#[test]
fn a_lookup_or_removal_on_a_deleted_file_object_is_reported() {
    // The routines read the file object (its flags, its extension's control block, WRK
    // FsRtlLookupPerFileObjectContext): one the I/O manager deleted is freed memory. Reported as
    // the insert of one is (BUGCHECK), and answered NULL; a live one: no finding.
    let (mut m, c) = machine();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let f = fo(&m, h);
    assert_eq!(lookup(&m, f, OWNER_1, 0), 0);
    assert_eq!(remove(&m, f, OWNER_1, 0), 0);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    m.close_handle(h);
    assert_eq!(lookup(&m, f, OWNER_1, 0), 0);
    assert_eq!(rules(&m), [Rule::Bugcheck]);
    assert_eq!(remove(&m, f, OWNER_1, 0), 0);
    assert_eq!(rules(&m), [Rule::Bugcheck, Rule::Bugcheck]);
}
