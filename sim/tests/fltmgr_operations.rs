//! Filter Manager, deliverable 3 — operations (facts.md §2.4, §3, §4): callback data built from
//! IRPs and fast I/O, pre callbacks from the highest altitude down and post callbacks back up,
//! the skip flags, every FLT_PREOP_* / FLT_POSTOP_* status with its effect, callback IRQLs.

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

use fltcommon::{
    Config, PreCall, Seen, hold_post_to_worker, mj, ntfs_machine, order, order_clear, posts, pres,
    reconfigure, seen, seen_clear, start,
};
use fsfilter::Status;
use fsfilter_kernel::params::{self, flt, flt_mut};
use fsfilter_sim::{CreateOptions, FaultKind, IoMode, Machine, Rule, VolumeId};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;

const IRP_OPERATION: u32 = 0x1;
const FAST_IO_OPERATION: u32 = 0x2;
const POST_OPERATION: u32 = 0x8_0000;

#[test]
fn pre_callbacks_run_from_the_highest_altitude_posts_back_up_facts_2_4() {
    // facts.md §2.4: pre-operation callbacks highest altitude -> lowest, post callbacks lowest ->
    // highest.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(&mut m, 0, Config::new("Mid", "200000").op(mj::READ, true, true));
    start(&mut m, 1, Config::new("Low", "100000").op(mj::READ, true, true));
    start(&mut m, 2, Config::new("High", "300000").op(mj::READ, true, true));
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    m.read(h, Some(0), 5, IoMode::Cached);
    order_clear();
    let r = m.read(h, Some(0), 5, IoMode::Cached);
    assert_eq!(r.data, b"hello");
    assert!(r.fast_io);
    assert_eq!(
        order(),
        ["High:pre:3", "Mid:pre:3", "Low:pre:3", "Low:post:3", "Mid:post:3", "High:post:3"]
    );
}

#[test]
fn callback_data_is_built_from_the_irp_facts_3() {
    // facts.md §3: FLT_CALLBACK_DATA with IRP_OPERATION, the IRP's flags, its parameters and
    // buffers in the parameter block; POST_OPERATION in the post; post-create at PASSIVE_LEVEL.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    let got: std::rc::Rc<RefCell<Vec<String>>> = Default::default();
    let g = got.clone();
    let cfg = Config::new("Look", "370000")
        .op(mj::READ, true, true)
        .op(mj::CREATE, true, true)
        .with_pre(move |p: &PreCall| {
            if p.major() == mj::READ {
                let i = p.iopb();
                let r = *unsafe { flt::<params::FltRead>(&i.Parameters) };
                g.borrow_mut().push(format!(
                    "len={} off={} mdl={} fo={} inst={} mode={}",
                    r.Length,
                    { r.ByteOffset },
                    !r.MdlAddress.is_null(),
                    !i.TargetFileObject.is_null(),
                    i.TargetInstance == p.instance(),
                    p.data().RequestorMode
                ));
            }
            (0, 0x55)
        });
    start(&mut m, 0, cfg);
    let h = m.open(c, "a.txt", CreateOptions::open().options(0x8)).unwrap();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(got.borrow().as_slice(), ["len=512 off=0 mdl=true fo=true inst=true mode=1"]);
    let p = pres(0);
    let Seen::Pre { data_flags, irp_flags, .. } = p[1].clone() else { panic!() };
    assert_eq!(data_flags & IRP_OPERATION, IRP_OPERATION);
    assert_eq!(irp_flags & 0x1, 0x1, "IRP_NOCACHE");
    let q = posts(0);
    let Seen::Post { data_flags, information, context, status, irql, .. } = q[1].clone() else {
        panic!()
    };
    assert_eq!(data_flags & POST_OPERATION, POST_OPERATION);
    assert_eq!((status, information, context), (0, 5, 0x55));
    assert_eq!(irql, 0);
    // Post-create ran at PASSIVE_LEVEL in the thread of its pre (creates are synchronized).
    let (Seen::Pre { thread: t1, .. }, Seen::Post { thread: t2, irql, .. }) =
        (p[0].clone(), q[0].clone())
    else {
        panic!()
    };
    assert_eq!((irql, t1), (0, t2));
}

#[test]
fn fast_io_reads_are_operations_with_the_fast_io_flag_facts_1_7_and_3() {
    // facts.md §3: FLTFL_CALLBACK_DATA_FAST_IO_OPERATION; §4: fast-I/O posts at PASSIVE_LEVEL in
    // the same thread.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(&mut m, 0, Config::new("Fast", "370000").op(mj::READ, true, true));
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert!(!m.read(h, Some(0), 5, IoMode::Cached).fast_io, "the first read sets up caching");
    seen_clear(0);
    let r = m.read(h, Some(1), 3, IoMode::Cached);
    assert!(r.fast_io);
    assert_eq!(r.data, b"ell");
    let (
        Seen::Pre { data_flags, irp_flags, thread: t1, .. },
        Seen::Post { irql, thread: t2, information, .. },
    ) = (pres(0)[0].clone(), posts(0)[0].clone())
    else {
        panic!()
    };
    assert_eq!((data_flags & FAST_IO_OPERATION, irp_flags), (FAST_IO_OPERATION, 0));
    assert_eq!((irql, t1, information), (0, t2, 3));
}

fn reads_seen(m: &mut Machine, c: VolumeId, flags: u32) -> Vec<String> {
    let _ = &m;
    let _ = (c, flags);
    pres(0)
        .into_iter()
        .map(|s| match s {
            Seen::Pre { data_flags, irp_flags, .. } => {
                if data_flags & FAST_IO_OPERATION != 0 {
                    "fast".into()
                } else if irp_flags & 0x2 != 0 {
                    "paging".into()
                } else if irp_flags & 0x1 != 0 {
                    "noncached".into()
                } else {
                    "cached".into()
                }
            }
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn the_four_skip_flags_facts_3() {
    // facts.md §3: SKIP_PAGING_IO (IRP paging I/O), SKIP_CACHED_IO (cached reads and writes,
    // every fast-I/O one included), SKIP_NON_CACHED_NON_PAGING_IO, SKIP_NON_DASD_IO.
    // The first cached read is an IRP (the I/O manager tries fast I/O only once caching is
    // initiated, which that IRP does); the second is fast I/O.
    let cases = [
        (0x1, vec!["cached", "fast", "noncached"]),
        (0x2, vec!["noncached", "paging"]),
        (0x8, vec!["cached", "fast", "paging"]),
        (0x0, vec!["cached", "fast", "noncached", "paging"]),
    ];
    for (flags, expected) in cases {
        let (mut m, c) = ntfs_machine(&[("a.txt", &[7u8; 600])]);
        start(&mut m, 0, Config::new("Skip", "370000").op_flags(mj::READ, flags, true, false));
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        m.read(h, Some(0), 10, IoMode::Cached);
        m.read(h, Some(0), 10, IoMode::Cached);
        m.read(h, Some(0), 512, IoMode::NonCached);
        m.read(h, Some(0), 512, IoMode::Paging);
        assert_eq!(reads_seen(&mut m, c, flags), expected, "flags {flags:#x}");
    }
    // SKIP_NON_DASD_IO: only volume (DASD) opens.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"x")]);
    start(&mut m, 0, Config::new("Dasd", "370000").op_flags(mj::CREATE, 0x4, true, false));
    m.create(c, "a.txt", CreateOptions::open());
    assert!(pres(0).is_empty());
    m.create(c, "", CreateOptions::open().options(0));
    assert_eq!(pres(0).len(), 1);
}

#[test]
fn complete_stops_the_operation_and_runs_only_the_posts_above_facts_2_4_and_4() {
    // facts.md §2.4/§4: FLT_PREOP_COMPLETE: nothing below sees the operation, the completing
    // filter's post is not called, only the posts of the filters above run.
    let (mut m, c) = ntfs_machine(&[]);
    start(&mut m, 0, Config::new("High", "300000").op(mj::CREATE, true, true));
    start(
        &mut m,
        1,
        Config::new("Deny", "200000").op(mj::CREATE, true, true).with_pre(|p| {
            p.set_status(Status::ACCESS_DENIED, 0);
            (4, 0)
        }),
    );
    start(&mut m, 2, Config::new("Low", "100000").op(mj::CREATE, true, true));
    order_clear();
    let r = m.create(c, "new.txt", CreateOptions::default());
    assert_eq!(r.status, Status::ACCESS_DENIED);
    assert_eq!(order(), ["High:pre:0", "Deny:pre:0", "High:post:0"]);
    let Seen::Post { status, .. } = posts(0)[0].clone() else { panic!() };
    assert_eq!(Status(status), Status::ACCESS_DENIED);
    assert!(m.file_contents(c, "new.txt").is_none(), "the file system never saw the create");
}

#[test]
fn disallow_fastio_sends_the_caller_to_the_irp_path_facts_4() {
    // facts.md §4: FLT_PREOP_DISALLOW_FASTIO (fast I/O only): STATUS_FLT_DISALLOW_FAST_IO, the I/O
    // manager reissues the request as an IRP.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(&mut m, 0, Config::new("Above", "300000").op(mj::READ, true, true));
    start(
        &mut m,
        1,
        Config::new("NoFast", "200000")
            .op(mj::READ, true, false)
            .with_pre(|p| if p.data().Flags & FAST_IO_OPERATION != 0 { (3, 0) } else { (1, 0) }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    m.read(h, Some(0), 5, IoMode::Cached);
    seen_clear(0);
    let r = m.read(h, Some(0), 5, IoMode::Cached);
    assert!(!r.fast_io);
    assert_eq!(r.data, b"hello");
    let p = posts(0);
    let Seen::Post { data_flags, status, .. } = p[0].clone() else { panic!() };
    assert_eq!(
        (data_flags & FAST_IO_OPERATION, Status(status)),
        (FAST_IO_OPERATION, Status::FLT_DISALLOW_FAST_IO)
    );
    let Seen::Post { data_flags, status, .. } = p[1].clone() else { panic!() };
    assert_eq!((data_flags & IRP_OPERATION, status), (IRP_OPERATION, 0));
}

/// facts.md §1.7, §3: the I/O manager offers `NtLockFile`/`NtUnlockFile` to the top driver's
/// fast-I/O lock routines first; the Filter Manager turns them into `IRP_MJ_LOCK_CONTROL`
/// operations with `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`, the minor code and the fast-I/O-only
/// parameters (`ProcessId`, `FailImmediately`, `ExclusiveLock`) filled. A pre may complete one
/// (`FLT_PREOP_COMPLETE`: the caller gets its status, nothing below runs) or disallow it (the
/// same request comes back as the IRP, whose parameters carry the flags in the stack location).
#[test]
fn fast_io_locks_are_lock_control_operations_with_the_fast_io_flag() {
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello world")]);
    let got: std::rc::Rc<RefCell<Vec<String>>> = Default::default();
    let g = got.clone();
    let look = Config::new("Look", "370000").op(mj::LOCK_CONTROL, true, true).with_pre(move |p| {
        let i = p.iopb();
        let l = *unsafe { flt::<params::FltLockControl>(&i.Parameters) };
        let fast = p.data().Flags & FAST_IO_OPERATION != 0;
        let length = unsafe { l.Length.as_ref() }.copied();
        g.borrow_mut().push(format!(
            "fast={fast} minor={} off={} len={length:?} key={} fail={} excl={} process={}",
            i.MinorFunction,
            { l.ByteOffset },
            l.Key,
            l.FailImmediately,
            l.ExclusiveLock,
            l.ProcessId != 0,
        ));
        (0, 0)
    });
    start(&mut m, 0, look);
    // Below it: completes a lock of offset 100 with STATUS_ACCESS_DENIED, disallows fast I/O
    // for one of offset 200.
    let gate = Config::new("Gate", "200000").op(mj::LOCK_CONTROL, true, false).with_pre(|p| {
        let l = *unsafe { flt::<params::FltLockControl>(&p.iopb().Parameters) };
        let fast = p.data().Flags & FAST_IO_OPERATION != 0;
        match l.ByteOffset {
            100 => {
                p.data().IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0;
                (4, 0)
            }
            200 if fast => (3, 0),
            _ => (1, 0),
        }
    });
    start(&mut m, 1, gate);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let lock = |offset| fsfilter_sim::IoRequest::Lock {
        handle: h,
        offset,
        length: 4,
        exclusive: true,
        fail_immediately: true,
    };
    let r = m.io(lock(0));
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, true));
    let r = m.io(fsfilter_sim::IoRequest::Unlock { handle: h, offset: 0, length: 4 });
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, true));
    let r = m.io(lock(100));
    assert_eq!((r.status, r.fast_io), (Status::ACCESS_DENIED, true));
    let r = m.io(lock(200));
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, false));
    assert_eq!(
        got.borrow().as_slice(),
        [
            "fast=true minor=1 off=0 len=Some(4) key=0 fail=true excl=true process=true",
            "fast=true minor=2 off=0 len=Some(4) key=0 fail=false excl=false process=true",
            "fast=true minor=1 off=100 len=Some(4) key=0 fail=true excl=true process=true",
            "fast=true minor=1 off=200 len=Some(4) key=0 fail=true excl=true process=true",
            // The IRP after the disallowed fast I/O: the flags come from the stack location.
            "fast=false minor=1 off=200 len=Some(4) key=0 fail=true excl=true process=false",
        ]
    );
    // Look's posts: the completed lock's status, the disallowed attempt's, then the IRP's.
    let statuses: Vec<_> = posts(0)
        .into_iter()
        .map(|s| match s {
            Seen::Post { data_flags, status, .. } => {
                (data_flags & FAST_IO_OPERATION, Status(status))
            }
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (FAST_IO_OPERATION, Status::SUCCESS),
            (FAST_IO_OPERATION, Status::SUCCESS),
            (FAST_IO_OPERATION, Status::ACCESS_DENIED),
            (FAST_IO_OPERATION, Status::FLT_DISALLOW_FAST_IO),
            (0, Status::SUCCESS),
        ]
    );
    // The completed lock took nothing: another handle locks a range overlapping it.
    let other = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let r = m.io(fsfilter_sim::IoRequest::Lock {
        handle: other,
        offset: 98,
        length: 4,
        exclusive: true,
        fail_immediately: true,
    });
    assert_eq!(r.status, Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The Filter Manager presents `FastIoQueryBasicInfo` / `FastIoQueryStandardInfo` as fast-I/O
/// `IRP_MJ_QUERY_INFORMATION` operations: the class, the class's size and the caller's buffer in
/// the parameter block, the file system's answer in the post. Disallowed, the query comes back
/// as the IRP.
#[test]
fn fast_io_queries_are_query_information_operations_with_the_fast_io_flag() {
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello world")]);
    let got: std::rc::Rc<RefCell<Vec<String>>> = Default::default();
    let g = got.clone();
    let look =
        Config::new("Look", "370000").op(mj::QUERY_INFORMATION, true, true).with_pre(move |p| {
            let q = *unsafe { flt::<params::FltFileInformation>(&p.iopb().Parameters) };
            let fast = p.data().Flags & FAST_IO_OPERATION != 0;
            g.borrow_mut().push(format!(
                "fast={fast} class={} length={} buffer={}",
                q.FileInformationClass,
                q.Length,
                !q.InfoBuffer.is_null()
            ));
            // FileBasicInformation: fast I/O disallowed.
            if fast && q.FileInformationClass == 4 { (3, 0) } else { (0, 0) }
        });
    start(&mut m, 0, look);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let r = m.query_information(h, 5, 24);
    assert_eq!((r.status, r.fast_io, r.information), (Status::SUCCESS, true, 24));
    assert_eq!(u64::from_le_bytes(r.data[8..16].try_into().unwrap()), 11, "EndOfFile");
    let r = m.query_information(h, 4, 40);
    assert_eq!((r.status, r.fast_io, r.information), (Status::SUCCESS, false, 40));
    assert_eq!(
        got.borrow().as_slice(),
        [
            "fast=true class=5 length=24 buffer=true",
            "fast=true class=4 length=40 buffer=true",
            "fast=false class=4 length=40 buffer=true",
        ]
    );
    let statuses: Vec<_> = posts(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Post { major: 0x05, data_flags, information, .. } => {
                Some((data_flags & FAST_IO_OPERATION, information))
            }
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [(FAST_IO_OPERATION, 24), (0, 40)]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

unsafe extern "system" fn resume_write(
    item: PFLT_GENERIC_WORKITEM,
    _f: *const c_void,
    ctx: *const c_void,
) {
    fltcommon::order_push("resumed".into());
    unsafe { FltCompletePendedPreOperation(ctx.cast(), 0, 0x77 as *const c_void) };
    unsafe { FltFreeGenericWorkItem(item) };
}

/// A pre callback that pends an IRP-based write and hands its callback data to `routine` on a
/// generic work item (the fast-I/O attempt goes on without a post).
fn pend_to_worker(
    p: &fltcommon::PreCall,
    routine: unsafe extern "system" fn(PFLT_GENERIC_WORKITEM, *const c_void, *const c_void),
) -> (i32, usize) {
    if p.data().Flags & IRP_OPERATION == 0 {
        return (0, 0);
    }
    fltcommon::queue_work(p.slot, routine, p.data);
    (2, 0)
}

/// How [`resume_misused`] resumes the write it is given: the `FLT_PREOP_*` status, and whether at
/// `DISPATCH_LEVEL` (as from a DPC).
static MISUSE: std::sync::Mutex<(i32, bool)> = std::sync::Mutex::new((0, false));

unsafe extern "system" fn resume_misused(
    item: PFLT_GENERIC_WORKITEM,
    _f: *const c_void,
    ctx: *const c_void,
) {
    let (status, raised) = *MISUSE.lock().unwrap();
    let was = fsfilter_sim::kernel::with(|k| {
        let was = k.irql();
        if raised {
            k.set_irql(2);
        }
        was
    });
    unsafe { FltCompletePendedPreOperation(ctx.cast(), status, std::ptr::null()) };
    fsfilter_sim::kernel::with(|k| k.set_irql(was));
    unsafe { FltFreeGenericWorkItem(item) };
}

#[test]
fn flt_complete_pended_pre_operation_sends_on_at_apc_level_at_most_and_never_synchronizes() {
    // The FltCompletePendedPreOperation page: callable at IRQL <= DISPATCH_LEVEL to complete the
    // operation, at IRQL <= APC_LEVEL otherwise; the status cannot be FLT_PREOP_PENDING,
    // FLT_PREOP_SYNCHRONIZE or FLT_PREOP_DISALLOW_FASTIO.
    for (status, raised, rule) in [
        (1, true, Some(Rule::IrqlTooHigh)),
        (0, true, Some(Rule::IrqlTooHigh)),
        (4, true, None),
        (1, false, None),
        (5, false, Some(Rule::StatusInvalidForOperation)),
    ] {
        *MISUSE.lock().unwrap() = (status, raised);
        let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
        start(
            &mut m,
            0,
            Config::new("Pender", "300000")
                .op(mj::WRITE, true, true)
                .with_pre(|p| pend_to_worker(p, resume_misused)),
        );
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let _ = m.write(h, Some(0), &[b'H'; 512], IoMode::NonCached);
        let rules: Vec<Rule> = m.findings().iter().map(|f| f.0).collect();
        assert_eq!(rules, rule.into_iter().collect::<Vec<_>>(), "status {status}, raised {raised}");
    }
}

#[test]
fn a_pended_pre_operation_resumes_with_flt_complete_pended_pre_operation_facts_4() {
    // facts.md §4: FLT_PREOP_PENDING keeps the operation until FltCompletePendedPreOperation;
    // the filters below then see it in the resuming (worker) thread; the resumed status's
    // completion context goes to the post.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(
        &mut m,
        0,
        Config::new("Pender", "300000")
            .op(mj::WRITE, true, true)
            .with_pre(|p| pend_to_worker(p, resume_write)),
    );
    start(&mut m, 1, Config::new("Below", "100000").op(mj::WRITE, true, true));
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    order_clear();
    // A non-cached write (no fast-I/O attempt).
    let r = m.write(h, Some(0), &[b'H'; 512], IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(&m.file_contents(c, "a.txt").unwrap()[..3], b"HHH");
    assert_eq!(
        order(),
        ["Pender:pre:4", "resumed", "Below:pre:4", "Below:post:4", "Pender:post:4"]
    );
    let (Seen::Pre { thread: t_pender, .. }, Seen::Pre { thread: t_below, .. }) =
        (pres(0)[0].clone(), pres(1)[0].clone())
    else {
        panic!()
    };
    assert_ne!(t_pender, t_below, "the resumed walk runs in the worker");
    let Seen::Post { context, .. } = posts(0)[0].clone() else { panic!() };
    assert_eq!(context, 0x77);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn posts_run_at_dispatch_level_unless_synchronized_facts_4() {
    // facts.md §4: post callbacks may run at DISPATCH_LEVEL in an arbitrary thread when the lower
    // driver completes from a DPC; after FLT_PREOP_SYNCHRONIZE the post runs at IRQL <= APC_LEVEL
    // in the pre's thread.
    let (mut m, c) = ntfs_machine(&[("a.txt", &[1u8; 512])]);
    m.kernel(|k| k.fs.complete_at_dpc = true);
    start(&mut m, 0, Config::new("Async", "300000").op(mj::READ, true, true));
    start(&mut m, 1, Config::new("Sync", "200000").op(mj::READ, true, true).with_pre(|_| (1, 0)));
    let h = m.open(c, "a.txt", CreateOptions::open().options(0x8)).unwrap();
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    let Seen::Post { irql, .. } = posts(0)[0].clone() else { panic!() };
    assert_eq!(irql, 2, "completed from the DPC: DISPATCH_LEVEL");
    reconfigure(1, |c| c.pre = Some(std::rc::Rc::new(|_| (5, 0))));
    seen_clear(0);
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    let (Seen::Pre { thread: t1, .. }, Seen::Post { thread: t2, irql, .. }) =
        (pres(1).last().cloned().unwrap(), posts(1)[0].clone())
    else {
        panic!()
    };
    assert_eq!((irql, t1), (0, t2));
    let Seen::Post { irql, .. } = posts(0)[0].clone() else { panic!() };
    assert_eq!(irql, 0, "the posts above a synchronized one run in the same thread");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn more_processing_required_holds_the_operation_facts_4() {
    // facts.md §4: FLT_POSTOP_MORE_PROCESSING_REQUIRED stops completion until
    // FltCompletePendedPostOperation.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(&mut m, 0, Config::new("Top", "300000").op(mj::WRITE, true, true));
    start(
        &mut m,
        1,
        Config::new("Holder", "100000").op(mj::WRITE, true, true).with_post(|p| {
            if p.data().Flags & IRP_OPERATION == 0 {
                return 0;
            }
            hold_post_to_worker(p)
        }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    order_clear();
    let r = m.write(h, Some(0), &[b'J'; 512], IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(order(), ["Top:pre:4", "Holder:pre:4", "Holder:post:4", "finish", "Top:post:4"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_held_lower_post_keeps_a_synchronized_post_in_the_originating_thread_facts_4() {
    // facts.md §4: post-create (and a SYNCHRONIZE post) runs in the thread that originated the
    // operation, at IRQL <= APC_LEVEL. A lower filter holding its post-create and releasing it
    // from a worker does not move the upper post-create to that worker.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(&mut m, 0, Config::new("Sync", "300000").op(mj::CREATE, true, true));
    start(
        &mut m,
        1,
        Config::new("Holder", "100000").op(mj::CREATE, false, true).with_post(hold_post_to_worker),
    );
    order_clear();
    assert!(m.open(c, "a.txt", CreateOptions::open()).is_ok());
    assert_eq!(order(), ["Sync:pre:0", "Holder:post:0", "finish", "Sync:post:0"]);
    let Seen::Pre { thread: pre_thread, .. } = pres(0)[0].clone() else { panic!() };
    let Seen::Post { thread: post_thread, irql, .. } = posts(0)[0].clone() else { panic!() };
    let Seen::Post { thread: holder_thread, .. } = posts(1)[0].clone() else { panic!() };
    assert_eq!((post_thread, irql), (pre_thread, 0), "the post-create runs where the create began");
    assert_eq!(holder_thread, pre_thread, "the held post-create ran there too");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn completing_a_pended_post_before_its_callback_returned_is_reported() {
    // docs/simulator.md (choice): FltCompletePendedPostOperation is for an operation whose post
    // callback returned FLT_POSTOP_MORE_PROCESSING_REQUIRED; called from inside that callback,
    // the operation is not pended yet, and the call is refused and reported. The answer the
    // callback then gives still holds the operation, which no one completes: the request stays
    // pending.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(
        &mut m,
        0,
        Config::new("Early", "100000").op(mj::WRITE, true, true).with_post(|p| {
            if p.data().Flags & IRP_OPERATION == 0 {
                return 0;
            }
            unsafe { FltCompletePendedPostOperation(p.data) };
            1
        }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let r = m.write(h, Some(0), &[b'K'; 512], IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING, "held, and never completed");
    let findings = m.findings();
    assert!(
        findings.iter().any(|(rule, driver, message)| *rule == Rule::InvalidFltObject
            && driver.as_deref() == Some("Early")
            && message.contains("whose post is not held")),
        "{findings:?}"
    );
}

thread_local! {
    static SAFE: RefCell<Vec<(u8, u32)>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "system" fn safe_post(
    _d: *mut FLT_CALLBACK_DATA,
    _o: *const FLT_RELATED_OBJECTS,
    _c: *const c_void,
    _f: u32,
) -> i32 {
    SAFE.with(|s| s.borrow_mut().push(fltcommon::where_now()));
    0
}

#[test]
fn completion_processing_when_safe_facts_4() {
    // facts.md §4: FltDoCompletionProcessingWhenSafe runs the safe callback inline below
    // DISPATCH_LEVEL; at DISPATCH_LEVEL it posts it to a worker (TRUE, MORE_PROCESSING_REQUIRED)
    // and the worker's FINISHED_PROCESSING finishes the operation.
    for dpc in [false, true] {
        SAFE.with(|s| s.borrow_mut().clear());
        let (mut m, c) = ntfs_machine(&[("a.txt", &[1u8; 512])]);
        m.kernel(|k| k.fs.complete_at_dpc = dpc);
        let results: std::rc::Rc<RefCell<Vec<(bool, i32)>>> = Default::default();
        let r2 = results.clone();
        start(
            &mut m,
            0,
            Config::new("Safe", "300000").op(mj::READ, true, true).with_post(move |p| {
                let mut status = -1;
                let ok = unsafe {
                    FltDoCompletionProcessingWhenSafe(
                        p.data,
                        p.objects,
                        p.context,
                        p.flags,
                        Some(safe_post),
                        &mut status,
                    )
                };
                r2.borrow_mut().push((ok, status));
                status
            }),
        );
        let h = m.open(c, "a.txt", CreateOptions::open().options(0x8)).unwrap();
        let r = m.read(h, Some(0), 512, IoMode::NonCached);
        assert_eq!(r.status, Status::SUCCESS);
        assert_eq!(r.data.len(), 512);
        let safe = SAFE.with(|s| s.borrow().clone());
        assert_eq!(safe.len(), 1);
        assert_eq!(safe[0].0, 0, "the safe callback runs at PASSIVE_LEVEL");
        if dpc {
            assert_eq!(results.borrow().as_slice(), [(true, 1)]);
        } else {
            assert_eq!(results.borrow().as_slice(), [(true, 0)]);
        }
        assert!(m.findings().is_empty(), "{:?}", m.findings());
    }
}

#[test]
fn completion_processing_when_safe_misuse_is_reported() {
    // The FltDoCompletionProcessingWhenSafe page: for IRP-based operations only, from a
    // post-operation callback only; facts.md §4: never with FLTFL_POST_OPERATION_DRAINING. Each
    // misuse is reported and the call answers FALSE without running the safe callback.
    SAFE.with(|s| s.borrow_mut().clear());
    let (mut m, c) = ntfs_machine(&[("a.txt", &[1u8; 512])]);
    let answers: std::rc::Rc<RefCell<Vec<bool>>> = Default::default();
    let (pre_answers, post_answers) = (answers.clone(), answers.clone());
    let when_safe = |data, objects, context, flags| {
        let mut status = -1;
        // SAFETY: the running callback's data and objects.
        unsafe {
            FltDoCompletionProcessingWhenSafe(
                data,
                objects,
                context,
                flags,
                Some(safe_post),
                &mut status,
            )
        }
    };
    start(
        &mut m,
        0,
        Config::new("Misuse", "300000")
            .op(mj::READ, true, true)
            .op(mj::QUERY_INFORMATION, true, false)
            .with_pre(move |p| {
                if p.major() == mj::QUERY_INFORMATION {
                    // From a pre-operation callback.
                    let ok = when_safe(p.data, p.objects, std::ptr::null(), 0);
                    pre_answers.borrow_mut().push(ok);
                    return (1, 0);
                }
                (0, 0)
            })
            .with_post(move |p| {
                // FLTFL_CALLBACK_DATA_FAST_IO_OPERATION: the fast read's post.
                if p.data().Flags & 0x2 != 0 {
                    let ok = when_safe(p.data, p.objects, p.context, p.flags);
                    post_answers.borrow_mut().push(ok);
                }
                0
            }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let _ = m.read(h, Some(0), 4, IoMode::Cached);
    let _ = m.read(h, Some(0), 4, IoMode::Cached);
    // FileInternalInformation: an IRP (standard information would be offered to fast I/O).
    let _ = m.query_information(h, 6, 8);
    assert_eq!(answers.borrow().as_slice(), [false, false]);
    assert!(SAFE.with(|s| s.borrow().is_empty()), "no safe callback ran");
    let messages: Vec<String> = m.findings().into_iter().map(|(_, _, msg)| msg).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().filter(|m| m.contains("fast I/O")).count() == 1, "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("outside a post-operation callback")));
}

thread_local! {
    /// The callback data of operations a safe callback held.
    static SAFE_HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// A safe callback that holds its operation (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`) for the test
/// to complete with `FltCompletePendedPostOperation`.
unsafe extern "system" fn safe_post_holding(
    d: *mut FLT_CALLBACK_DATA,
    _o: *const FLT_RELATED_OBJECTS,
    _c: *const c_void,
    _f: u32,
) -> i32 {
    SAFE.with(|s| s.borrow_mut().push(fltcommon::where_now()));
    SAFE_HELD.with(|h| h.borrow_mut().push(d as usize));
    1
}

/// What each `FltDoCompletionProcessingWhenSafe` call answered: (return value, status).
type Answers = std::rc::Rc<RefCell<Vec<(bool, i32)>>>;

/// A filter whose read post callback calls `FltDoCompletionProcessingWhenSafe` with `safe`,
/// answering what the call put in its status; the call's (answer, status) pairs go to the
/// returned list. Reads complete from a DPC, so the post callbacks run at `DISPATCH_LEVEL`.
fn when_safe_reader(safe: PFLT_POST_OPERATION_CALLBACK) -> (Machine, VolumeId, Answers) {
    SAFE.with(|s| s.borrow_mut().clear());
    SAFE_HELD.with(|h| h.borrow_mut().clear());
    let (mut m, c) = ntfs_machine(&[("a.txt", &[7u8; 512])]);
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let results: Answers = Default::default();
    let r2 = results.clone();
    start(
        &mut m,
        0,
        Config::new("Safe", "300000").op(mj::READ, true, true).with_post(move |p| {
            let mut status = -1;
            let ok = unsafe {
                FltDoCompletionProcessingWhenSafe(
                    p.data,
                    p.objects,
                    p.context,
                    p.flags,
                    safe,
                    &mut status,
                )
            };
            r2.borrow_mut().push((ok, status));
            status
        }),
    );
    (m, c, results)
}

#[test]
fn completion_processing_when_safe_fails_when_it_cannot_post_facts_4() {
    // The FltDoCompletionProcessingWhenSafe page (facts.md §4): at DISPATCH_LEVEL the Filter
    // Manager tries to post the operation to a worker; if it cannot, the call answers FALSE with
    // FLT_POSTOP_FINISHED_PROCESSING and the safe callback never runs. The simulator's work item
    // is a pool allocation charged to the caller (docs/simulator.md): under a pool fault the
    // call fails, and the operation finishes with the post callback's answer.
    let (mut m, c, results) = when_safe_reader(Some(safe_post));
    let h = m.open(c, "a.txt", CreateOptions::open().options(0x8)).unwrap();
    m.kernel(|k| {
        let n = k.faults.service_count("Safe", FaultKind::Pool);
        for nth in n + 1..n + 10 {
            k.faults.plan_for_service("Safe", FaultKind::Pool, nth);
        }
    });
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    m.settle();
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &[7u8; 512][..]));
    assert_eq!(m.completions_of(r.io.unwrap()), [Status::SUCCESS], "completed once");
    assert_eq!(results.borrow().as_slice(), [(false, 0)], "FALSE, FINISHED_PROCESSING");
    assert!(SAFE.with(|s| s.borrow().is_empty()), "the safe callback never ran");
    let injected = m.kernel(|k| k.faults.injected.clone());
    assert_eq!(injected.len(), 1, "one work item asked for: {injected:?}");
    assert_eq!(injected[0].kind, FaultKind::Pool);
    let Seen::Post { irql, .. } = posts(0)[0].clone() else { panic!() };
    assert_eq!(irql, 2, "the post ran at DISPATCH_LEVEL, where the call must post");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // Below DISPATCH_LEVEL nothing is posted: a fault planned for the next allocation is not
    // consumed, and the safe callback runs inline.
    m.kernel(|k| k.fs.complete_at_dpc = false);
    results.borrow_mut().clear();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(results.borrow().as_slice(), [(true, 0)]);
    assert_eq!(SAFE.with(|s| s.borrow().len()), 1);
    assert_eq!(m.kernel(|k| k.faults.injected.len()), 1, "no allocation to fail inline");
}

#[test]
fn a_posted_safe_callback_that_holds_needs_flt_complete_pended_post_operation_facts_4() {
    // The FltDoCompletionProcessingWhenSafe page (facts.md §4): a safe callback run from the
    // worker that answers FLT_POSTOP_MORE_PROCESSING_REQUIRED keeps the operation until
    // FltCompletePendedPostOperation. Without that call the request never completes and the
    // instance cannot finish its teardown (reported as DEADLOCK); with it, the request
    // completes once.
    let (mut m, c, results) = when_safe_reader(Some(safe_post_holding));
    let h = m.open(c, "a.txt", CreateOptions::open().options(0x8)).unwrap();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    m.settle();
    assert_eq!(results.borrow().as_slice(), [(true, 1)], "posted: MORE_PROCESSING_REQUIRED");
    let safe = SAFE.with(|s| s.borrow().clone());
    assert_eq!(safe.len(), 1);
    assert_eq!(safe[0].0, 0, "the safe callback ran at PASSIVE_LEVEL");
    assert_eq!(r.status, Status::PENDING, "held by the safe callback");
    let io = r.io.unwrap();
    assert!(m.completions_of(io).is_empty(), "not completed");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // The missing call: the detach's teardown waits for the held read forever.
    assert_eq!(m.filter_detach("Safe", c, None), Status::SUCCESS);
    let findings = m.findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].0, Rule::Deadlock);
    assert!(findings[0].2.contains("never complete"), "{findings:?}");
    // Made at last, the call completes the read once.
    for data in SAFE_HELD.with(|h| std::mem::take(&mut *h.borrow_mut())) {
        unsafe { FltCompletePendedPostOperation(data as *const FLT_CALLBACK_DATA) };
    }
    m.settle();
    assert_eq!(m.completions_of(io), [Status::SUCCESS]);
    assert_eq!(m.findings().len(), 1, "{:?}", m.findings());
}

#[test]
fn dirty_callback_data_propagates_changed_parameters_down_facts_4() {
    // FltSetCallbackDataDirty: a filter's changed parameters go down with the IRP; filters below
    // it in the frame see the change in any case (one callback data per frame).
    for dirty in [true, false] {
        let (mut m, c) = ntfs_machine(&[("d.txt", b"0123456789")]);
        start(
            &mut m,
            0,
            Config::new("Shift", "300000").op(mj::READ, true, false).with_pre(move |p| {
                unsafe { flt_mut::<params::FltRead>(&mut p.iopb().Parameters) }.ByteOffset = 5;
                if dirty {
                    unsafe { FltSetCallbackDataDirty(p.data) };
                }
                (1, 0)
            }),
        );
        let offsets: std::rc::Rc<RefCell<Vec<i64>>> = Default::default();
        let o = offsets.clone();
        start(
            &mut m,
            1,
            Config::new("Below", "200000").op(mj::READ, true, false).with_pre(move |p| {
                o.borrow_mut()
                    .push(unsafe { flt::<params::FltRead>(&p.iopb().Parameters) }.ByteOffset);
                (1, 0)
            }),
        );
        let h = m.open(c, "d.txt", CreateOptions::open()).unwrap();
        let first = m.read(h, Some(0), 5, IoMode::Cached);
        let second = m.read(h, Some(0), 5, IoMode::Cached);
        assert!(!first.fast_io && second.fast_io);
        let want: &[u8] = if dirty { b"56789" } else { b"01234" };
        assert_eq!((first.data.as_slice(), second.data.as_slice()), (want, want), "dirty={dirty}");
        // Two pre calls: the IRP (which initiates caching), then the fast I/O.
        assert_eq!(offsets.borrow().as_slice(), [5, 5]);
    }
}

#[test]
fn each_post_sees_the_parameters_its_own_pre_received() {
    // "Modifying the Parameters for an I/O Operation" (the IFS guide): the parameters a pre
    // callback changes reach the minifilters below it, in their pre and post callbacks, but not
    // its own post callback nor those above (SwapBuffers' post-read finds the caller's buffer
    // there). Until December 6 each post saw the parameters its own pre returned with.
    let (mut m, c) = ntfs_machine(&[("d.txt", b"0123456789")]);
    let offsets: std::rc::Rc<RefCell<Vec<(&'static str, i64)>>> = Default::default();
    let (upper, lower) = (offsets.clone(), offsets.clone());
    start(
        &mut m,
        0,
        Config::new("Upper", "300000")
            .op(mj::READ, true, true)
            .with_pre(|p| {
                unsafe { flt_mut::<params::FltRead>(&mut p.iopb().Parameters) }.ByteOffset = 2;
                unsafe { FltSetCallbackDataDirty(p.data) };
                (0, 0)
            })
            .with_post(move |p| {
                let iopb = unsafe { &*p.data().Iopb };
                let offset = unsafe { flt::<params::FltRead>(&iopb.Parameters) }.ByteOffset;
                upper.borrow_mut().push(("Upper", offset));
                0
            }),
    );
    start(
        &mut m,
        1,
        Config::new("Lower", "200000")
            .op(mj::READ, true, true)
            .with_pre(|p| {
                unsafe { flt_mut::<params::FltRead>(&mut p.iopb().Parameters) }.ByteOffset = 5;
                unsafe { FltSetCallbackDataDirty(p.data) };
                (0, 0)
            })
            .with_post(move |p| {
                let iopb = unsafe { &*p.data().Iopb };
                let offset = unsafe { flt::<params::FltRead>(&iopb.Parameters) }.ByteOffset;
                lower.borrow_mut().push(("Lower", offset));
                0
            }),
    );
    let h = m.open(c, "d.txt", CreateOptions::open()).unwrap();
    // The first cached read of the file object is an IRP (docs/simulator.md, User-mode I/O).
    let r = m.read(h, Some(0), 5, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, false, &b"56789"[..]));
    assert_eq!(offsets.borrow().as_slice(), [("Lower", 2), ("Upper", 0)]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_post_only_registration_gets_its_post_facts_3() {
    // facts.md §3: pre without post and post without pre are both allowed.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"x")]);
    start(&mut m, 0, Config::new("PostOnly", "370000").op(mj::CREATE, false, true));
    m.create(c, "a.txt", CreateOptions::open());
    assert!(pres(0).is_empty());
    let Seen::Post { context, status, .. } = posts(0)[0].clone() else { panic!() };
    assert_eq!((context, status), (0, 0));
}

#[test]
fn cancel_file_open_closes_the_file_below_facts_4() {
    // FltCancelFileOpen from a post-create: the file is cleaned up and closed below the instance
    // and the create fails with the filter's status.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"x")]);
    start(
        &mut m,
        0,
        Config::new("Cancel", "370000").op(mj::CREATE, false, true).with_post(|p| {
            let fo = unsafe { (*p.data().Iopb).TargetFileObject };
            if p.status().is_success() {
                unsafe { FltCancelFileOpen(p.instance(), fo) };
                p.data().IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0;
                unsafe { FltSetCallbackDataDirty(p.data) };
            }
            0
        }),
    );
    let r = m.create(c, "a.txt", CreateOptions::open().share(0));
    assert_eq!(r.status, Status::ACCESS_DENIED);
    assert!(m.kernel(|k| k.fs.ccbs.is_empty()), "the file system closed the file object");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_cancelled_open_is_cleaned_up_and_closed_below_the_frame_not_by_lower_instances() {
    // docs/simulator.md (Operations), a choice: FltCancelFileOpen sends the cleanup and close to
    // the device below the instance's frame, so instances below the cancelling one in the same
    // frame do not see them; the file system does.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"x")]);
    start(
        &mut m,
        0,
        Config::new("Below", "200000").op(mj::CREATE, true, false).op(mj::CLEANUP, true, false).op(
            mj::CLOSE,
            true,
            false,
        ),
    );
    start(
        &mut m,
        1,
        Config::new("Cancel", "370000").op(mj::CREATE, false, true).with_post(|p| {
            let fo = unsafe { (*p.data().Iopb).TargetFileObject };
            if p.status().is_success() {
                unsafe { FltCancelFileOpen(p.instance(), fo) };
                p.data().IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0;
                unsafe { FltSetCallbackDataDirty(p.data) };
            }
            0
        }),
    );
    seen_clear(0);
    let r = m.create(c, "a.txt", CreateOptions::open().share(0));
    assert_eq!(r.status, Status::ACCESS_DENIED);
    assert!(m.kernel(|k| k.fs.ccbs.is_empty()), "the file system closed the file object");
    let majors: Vec<u8> = seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Pre { major, .. } => Some(major),
            _ => None,
        })
        .collect();
    assert_eq!(majors, [mj::CREATE], "the lower instance saw the create only");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

unsafe extern "system" fn deny_held(
    item: PFLT_GENERIC_WORKITEM,
    _f: *const c_void,
    ctx: *const c_void,
) {
    let data = ctx as *mut FLT_CALLBACK_DATA;
    unsafe { (*data).IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0 };
    unsafe { FltCompletePendedPreOperation(data, 4, std::ptr::null()) };
    unsafe { FltFreeGenericWorkItem(item) };
}

#[test]
fn a_pended_create_can_be_completed_by_its_filter_facts_4() {
    // facts.md §4: FltCompletePendedPreOperation with FLT_PREOP_COMPLETE: the filters below never
    // see the operation, the ones above get their post with the filter's status.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"x")]);
    start(&mut m, 0, Config::new("Above", "300000").op(mj::CREATE, true, true));
    start(
        &mut m,
        1,
        Config::new("Judge", "200000").op(mj::CREATE, true, false).with_pre(|p| {
            fltcommon::queue_work(p.slot, deny_held, p.data);
            (2, 0)
        }),
    );
    start(&mut m, 2, Config::new("Below", "100000").op(mj::CREATE, true, false));
    order_clear();
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::ACCESS_DENIED);
    assert_eq!(order(), ["Above:pre:0", "Judge:pre:0", "Above:post:0"]);
    let Seen::Post { status, irql, .. } = posts(0)[0].clone() else { panic!() };
    assert_eq!((Status(status), irql), (Status::ACCESS_DENIED, 0));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A cached read of a file with byte-range locks: the file system asks the top of the stack
/// (the Filter Manager's frame) whether fast I/O is possible, which the Filter Manager presents
/// as the fast-I/O `IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE` with the transfer's parameters, inside
/// the read's own fast-I/O operation; a filter that disallows it makes the read an IRP.
#[test]
fn the_fast_io_check_of_a_locked_file_is_an_operation_inside_the_read() {
    let (mut m, c) = ntfs_machine(&[("a.txt", b"0123456789abcdef")]);
    let got: std::rc::Rc<RefCell<Vec<String>>> = Default::default();
    let g = got.clone();
    let refuse = std::rc::Rc::new(std::cell::Cell::new(false));
    let r = refuse.clone();
    const CHECK: u8 = 0xF3;
    let look = Config::new("Look", "370000")
        .op(mj::READ, true, false)
        .op(CHECK, true, false)
        .with_pre(move |p| {
            let i = p.iopb();
            let fast = p.data().Flags & FAST_IO_OPERATION != 0;
            if i.MajorFunction == CHECK {
                let c = *unsafe { flt::<params::FltFastIoCheckIfPossible>(&i.Parameters) };
                g.borrow_mut().push(format!(
                    "check fast={fast} off={} len={} read={}",
                    { c.FileOffset },
                    c.Length,
                    c.CheckForReadOperation
                ));
                return if r.get() { (3, 0) } else { (1, 0) };
            }
            g.borrow_mut().push(format!("read fast={fast}"));
            (1, 0)
        });
    start(&mut m, 0, look);
    let a = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let b = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert!(!m.read(b, Some(0), 4, IoMode::Cached).fast_io, "caching starts with an IRP");
    let lock = fsfilter_sim::IoRequest::Lock {
        handle: a,
        offset: 8,
        length: 4,
        exclusive: true,
        fail_immediately: true,
    };
    assert_eq!(m.io(lock).status, Status::SUCCESS);
    got.borrow_mut().clear();
    let read = m.read(b, Some(0), 4, IoMode::Cached);
    assert_eq!(
        (read.status, read.fast_io, read.data.as_slice()),
        (Status::SUCCESS, true, &b"0123"[..])
    );
    refuse.set(true);
    let read = m.read(b, Some(4), 4, IoMode::Cached);
    assert_eq!(
        (read.status, read.fast_io, read.data.as_slice()),
        (Status::SUCCESS, false, &b"4567"[..])
    );
    assert_eq!(
        got.borrow().as_slice(),
        [
            "read fast=true",
            "check fast=true off=0 len=4 read=true",
            "read fast=true",
            "check fast=true off=4 len=4 read=true",
            // Refused: the read comes again as an IRP.
            "read fast=false",
        ]
    );
    assert_eq!(m.findings(), []);
}

/// A query open (`IRP_MJ_NETWORK_QUERY_OPEN`) reaches minifilters with the I/O manager's
/// stack-based file object, which its `FLT_PARAMETERS` page forbids them to reference: a filter
/// that does is a `STACK_FILE_OBJECT_REFERENCED` finding; one that only reads it is not.
#[test]
fn a_reference_to_a_query_opens_file_object_is_reported() {
    const NETWORK_QUERY_OPEN: u8 = 0xF2;
    for keeps in [false, true] {
        let (mut m, c) = ntfs_machine(&[("a.txt", b"0123456789abcdef")]);
        let seen: std::rc::Rc<RefCell<Vec<String>>> = Default::default();
        let g = seen.clone();
        let look =
            Config::new("Look", "370000").op(NETWORK_QUERY_OPEN, true, false).with_pre(move |p| {
                let i = p.iopb();
                let fo = i.TargetFileObject;
                let irp = unsafe { i.Parameters.NetworkQueryOpen.Irp };
                g.borrow_mut().push(format!(
                    "fast={} irp={} fo={}",
                    p.data().Flags & FAST_IO_OPERATION != 0,
                    !irp.is_null(),
                    !fo.is_null()
                ));
                if keeps {
                    unsafe {
                        windows_sys::Wdk::System::SystemServices::ObfReferenceObject(fo.cast());
                        windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(fo.cast());
                    }
                }
                (1, 0)
            });
        start(&mut m, 0, look);
        let q = m.io(fsfilter_sim::IoRequest::QueryAttributes { volume: c, path: "a.txt" });
        assert_eq!((q.status, q.fast_io), (Status::SUCCESS, true));
        assert_eq!(seen.borrow().as_slice(), ["fast=true irp=true fo=true"]);
        let found: Vec<_> = m.findings().into_iter().map(|(r, d, _)| (r, d)).collect();
        if keeps {
            assert_eq!(found, [(Rule::StackFileObjectReferenced, Some("Look".to_owned()))]);
        } else {
            assert_eq!(found, []);
        }
    }
}

#[test]
fn a_post_callbacks_io_status_reaches_the_fast_io_caller() {
    // FLT_CALLBACK_DATA's reference page: a minifilter may modify IoStatus in a post callback
    // that returns FLT_POSTOP_FINISHED_PROCESSING (no FltSetCallbackDataDirty needed); the
    // operation then ends with it. The IRP path carried it back; a fast-I/O call returned the
    // status block of the routine below (passed down) or of the completing filter (completed
    // above the file system), as if no post had changed it.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    start(
        &mut m,
        0,
        Config::new("Rewrite", "300000").op(mj::READ, true, true).with_post(|p| {
            if p.data().Flags & FAST_IO_OPERATION != 0 {
                p.data().IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0;
                p.data().IoStatus.Information = 0;
            }
            0
        }),
    );
    start(
        &mut m,
        1,
        Config::new("Done", "200000").op(mj::READ, true, false).with_pre(|p| {
            let offset = unsafe { flt::<params::FltRead>(&p.iopb().Parameters) }.ByteOffset;
            if p.data().Flags & FAST_IO_OPERATION != 0 && offset == 1 {
                p.set_status(Status::SUCCESS, 0);
                return (4, 0);
            }
            (1, 0)
        }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert!(!m.read(h, Some(0), 5, IoMode::Cached).fast_io, "the first read sets up caching");
    let down = m.read(h, Some(0), 5, IoMode::Cached);
    let completed = m.read(h, Some(1), 3, IoMode::Cached);
    assert_eq!((down.fast_io, down.status, down.information), (true, Status::ACCESS_DENIED, 0));
    assert_eq!(
        (completed.fast_io, completed.status, completed.information),
        (true, Status::ACCESS_DENIED, 0)
    );
}

#[test]
fn a_post_that_fails_a_read_in_the_completion_routine_is_what_the_service_returns() {
    // "Failing an I/O Operation in a Postoperation Callback Routine": a post callback may fail
    // a successful operation by setting the callback data's IoStatus.Status. For a read the
    // file system completed inside the Filter Manager's IoCallDriver, that post runs in the
    // Filter Manager's completion routine, before IoCallDriver returns the file system's
    // success; the Filter Manager's dispatch routine returns the final status, not the file
    // system's (Driver Verifier's WDM DRIVER ERROR 0x224, DISPATCH_STATUS_DIFFERS_FROM_IRP_STATUS
    // otherwise). Until December 7 it returned the file system's status: the system service
    // answered STATUS_SUCCESS while the request's final status was STATUS_ACCESS_DENIED.
    let (mut m, c) = ntfs_machine(&[("a.txt", &[7u8; 512])]);
    start(
        &mut m,
        0,
        Config::new("Deny", "300000").op(mj::READ, true, true).with_post(|p| {
            if p.data().Flags & FAST_IO_OPERATION == 0 {
                p.data().IoStatus.Anonymous.Status = Status::ACCESS_DENIED.0;
                p.data().IoStatus.Information = 0;
            }
            0
        }),
    );
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!((r.status, r.fast_io, r.iosb), (Status::ACCESS_DENIED, false, None));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
