//! Filter Manager, deliverable 4 — teardown and unload (facts.md §2.5, §4, §5, §9):
//! InstanceQueryTeardown for manual detach only, teardown start/complete with their reasons,
//! draining, TeardownComplete after outstanding operations, `fltmc unload` and service stop.

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
    Config, Seen, install, machine, mj, order, order_clear, order_push, reconfigure, rules, seen,
    seen_clear, start,
};
use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, EventKind, FltEvent, FsKind, IoMode, IoRequest, Machine, Rule, StopResult,
    VolumeId, VolumeSpec,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;

fn setup() -> (Machine, VolumeId) {
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", &[b'a'; 600]));
    m.install_filter_manager();
    m.boot();
    (m, c)
}

fn teardowns(slot: usize) -> Vec<(bool, u32)> {
    seen(slot)
        .into_iter()
        .filter_map(|s| match s {
            Seen::TeardownStart { reason, .. } => Some((false, reason)),
            Seen::TeardownComplete { reason, .. } => Some((true, reason)),
            _ => None,
        })
        .collect()
}

fn creates_seen(slot: usize) -> usize {
    seen(slot).iter().filter(|s| matches!(s, Seen::Pre { major: 0, .. })).count()
}

#[test]
fn query_teardown_decides_a_manual_detach_facts_2_5() {
    // facts.md §2.5: InstanceQueryTeardown is called only for a manual detach; an error or
    // warning vetoes it; a NULL callback means the instance can never be detached manually.
    let (mut m, c) = setup();
    let mut never = Config::new("Never", "300000").op(mj::CREATE, true, false);
    never.query_teardown = false;
    start(&mut m, 0, never);
    let mut veto = Config::new("Veto", "200000").op(mj::CREATE, true, false);
    veto.query_status = Status::FLT_DO_NOT_DETACH;
    start(&mut m, 1, veto);
    start(&mut m, 2, Config::new("Yes", "100000").op(mj::CREATE, true, false));

    assert_eq!(m.filter_detach("Never", c, None), Status::FLT_DO_NOT_DETACH);
    assert_eq!(m.filter_detach("Veto", c, None), Status::FLT_DO_NOT_DETACH);
    assert_eq!(m.filter_detach("Yes", c, None), Status::SUCCESS);
    assert_eq!(m.filter_detach("Yes", c, None), Status::FLT_INSTANCE_NOT_FOUND);
    assert!(teardowns(0).is_empty() && teardowns(1).is_empty());
    assert_eq!(teardowns(2), [(false, 0x1), (true, 0x1)]);
    assert!(seen(1).iter().any(|s| matches!(s, Seen::Query { .. })));
    let q = fltcommon::flt(&m, "flt_instance_query_teardown");
    assert!(matches!(
        q[0].2,
        FltEvent::InstanceQueryTeardown { called: false, status: Status::FLT_DO_NOT_DETACH, .. }
    ));
    // The detached instance sees no more I/O; the others do.
    for s in 0..3 {
        seen_clear(s);
    }
    m.create(c, "a.txt", CreateOptions::open());
    assert_eq!((creates_seen(0), creates_seen(1), creates_seen(2)), (1, 1, 0));
    // FltDetachVolume (kernel) goes through the same veto.
    reconfigure(1, |c| c.query_status = Status::SUCCESS);
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let mut vol = 0;
    let f = fltcommon::filter_handle(1);
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    assert_eq!(unsafe { FltDetachVolume(f, vol, std::ptr::null()) }, 0);
    unsafe { FltObjectDereference(vol as *mut _) };
    assert_eq!(teardowns(1), [(false, 0x1), (true, 0x1)]);
}

#[test]
fn fltmc_unload_is_a_non_mandatory_unload_facts_5() {
    // facts.md §5: without an unload callback the filter can never be unloaded; an error or
    // warning (STATUS_FLT_DO_NOT_DETACH) from a non-mandatory unload keeps it loaded; success
    // unloads it, its instances torn down with FILTER_UNLOAD, and it is not asked whether to
    // detach (query teardown is for manual detach only).
    let (mut m, c) = setup();
    let mut stuck = Config::new("Stuck", "300000").op(mj::CREATE, true, false);
    stuck.unload = false;
    start(&mut m, 0, stuck);
    let mut refuse = Config::new("Refuse", "200000").op(mj::CREATE, true, false);
    refuse.unload_status = Status::FLT_DO_NOT_DETACH;
    start(&mut m, 1, refuse);
    start(&mut m, 2, Config::new("Goes", "100000").op(mj::CREATE, true, false));

    assert_eq!(m.fltmc_unload("Stuck"), Status::FLT_DO_NOT_DETACH);
    assert_eq!(m.fltmc_unload("Refuse"), Status::FLT_DO_NOT_DETACH);
    assert!(seen(1).contains(&Seen::Unload { flags: 0 }));
    assert_eq!(m.fltmc_unload("Goes"), Status::SUCCESS);
    assert_eq!(m.fltmc_unload("Nobody"), Status::FLT_FILTER_NOT_FOUND);
    assert_eq!(teardowns(2), [(false, 0x2), (true, 0x2)]);
    assert!(!seen(2).iter().any(|s| matches!(s, Seen::Query { .. })));
    let unloads: Vec<(String, bool, Status)> = m
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Unload { driver, mandatory, status } => Some((driver, mandatory, status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        unloads,
        [
            ("Stuck".into(), false, Status::FLT_DO_NOT_DETACH),
            ("Refuse".into(), false, Status::FLT_DO_NOT_DETACH),
            ("Goes".into(), false, Status::SUCCESS),
            ("Nobody".into(), false, Status::FLT_FILTER_NOT_FOUND),
        ]
    );
    for s in 0..3 {
        seen_clear(s);
    }
    m.create(c, "a.txt", CreateOptions::open());
    assert_eq!((creates_seen(0), creates_seen(1), creates_seen(2)), (1, 1, 0));
    // It can be loaded again.
    assert_eq!(m.fltmc_load("Goes"), Status::SUCCESS);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn service_stop_is_a_mandatory_unload_whose_answer_is_ignored_facts_5() {
    // facts.md §5: `sc stop`: FLTFL_FILTER_UNLOAD_MANDATORY, the return value is ignored;
    // teardown reason MANDATORY_FILTER_UNLOAD.
    let (mut m, _) = setup();
    let mut c = Config::new("Stopped", "300000");
    c.unload_status = Status::FLT_DO_NOT_DETACH;
    start(&mut m, 0, c);
    assert_eq!(m.stop("Stopped"), StopResult::Unloaded);
    assert!(seen(0).contains(&Seen::Unload { flags: 1 }));
    assert_eq!(teardowns(0), [(false, 0x4), (true, 0x4)]);
    let cb = fltcommon::flt(&m, "flt_unload_callback");
    assert!(matches!(
        cb[0].2,
        FltEvent::UnloadCallback { mandatory: true, status: Status::FLT_DO_NOT_DETACH }
    ));
}

#[test]
fn a_filter_that_does_not_unregister_in_its_unload_is_reported_facts_5() {
    // facts.md §5: the unload callback should call FltUnregisterFilter; the Filter Manager
    // reports FILTER_NOT_UNREGISTERED_AT_UNLOAD and unregisters it itself.
    let (mut m, _) = setup();
    let mut c = Config::new("Lazy", "300000");
    c.unregister_in_unload = false;
    start(&mut m, 0, c);
    assert_eq!(m.stop("Lazy"), StopResult::Unloaded);
    assert!(rules(&m).contains(&Rule::FilterNotUnregistered));
    assert_eq!(teardowns(0), [(false, 0x4), (true, 0x4)]);
}

#[test]
fn teardown_drains_operations_waiting_for_their_post_facts_2_5_and_4() {
    // facts.md §2.5/§4: at teardown, operations awaiting post callbacks are drained: the post
    // callback runs with FLTFL_POST_OPERATION_DRAINING on a copy of the callback data; the
    // completion comes later without a post for the torn-down instance.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Locks", "300000").op(mj::LOCK_CONTROL, true, true).with_pre(|_| (0, 0x42)),
    );
    let h1 = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let h2 = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let lock = |h, fail| IoRequest::Lock {
        handle: h,
        offset: 0,
        length: 10,
        exclusive: true,
        fail_immediately: fail,
    };
    assert_eq!(m.io(lock(h1, true)).status, Status::SUCCESS);
    let waiting = m.io(lock(h2, false));
    assert_eq!(waiting.status, Status::PENDING, "the second lock waits for the first");
    order_clear();
    assert_eq!(m.filter_detach("Locks", c, None), Status::SUCCESS);
    assert_eq!(order(), ["Locks:teardown_start", "Locks:post:17", "Locks:teardown_complete"]);
    let pre_data = seen(0)
        .iter()
        .filter_map(|s| match s {
            Seen::Pre { data, .. } => Some(*data),
            _ => None,
        })
        .next_back()
        .unwrap();
    let Some(Seen::Post { flags, data_flags, context, data, .. }) =
        seen(0).into_iter().rfind(|s| matches!(s, Seen::Post { .. }))
    else {
        panic!()
    };
    assert_eq!(flags, 1, "FLTFL_POST_OPERATION_DRAINING");
    assert_eq!(data_flags & 0x4_0000, 0x4_0000, "FLTFL_CALLBACK_DATA_DRAINING_IO");
    assert_eq!(context, 0x42);
    assert_ne!(data, pre_data, "a copy of the callback data");
    order_clear();
    assert_eq!(
        m.io(IoRequest::Unlock { handle: h1, offset: 0, length: 10 }).status,
        Status::SUCCESS
    );
    let io = waiting.io.unwrap();
    let result = m.kernel(|k| k.requests.result(fsfilter_sim::ids::RequestId(io.0)));
    assert_eq!(result.map(|r| r.0), Some(Status::SUCCESS), "the waiting lock completed");
    assert!(order().is_empty(), "no post for the torn-down instance: {:?}", order());
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

thread_local! {
    static PENDED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn teardown_complete_waits_for_pended_operations_facts_2_5() {
    // facts.md §2.5: InstanceTeardownStart completes pended operations (here from a work item);
    // InstanceTeardownComplete runs only once no operation of the instance is outstanding.
    PENDED.with(|p| p.borrow_mut().clear());
    let (mut m, c) = setup();
    let mut cfg = Config::new("Holder", "300000").op(mj::WRITE, true, false).with_pre(|p| {
        PENDED.with(|x| x.borrow_mut().push(p.data as usize));
        (2, 0)
    });
    unsafe extern "system" fn never(
        _: PFLT_GENERIC_WORKITEM,
        _f: *const c_void,
        _c: *const c_void,
    ) {
    }
    cfg.on_teardown_start = Some(std::rc::Rc::new(|instance, _| {
        let item = unsafe { FltAllocateGenericWorkItem() };
        let s = unsafe {
            FltQueueGenericWorkItem(
                item,
                instance as *const c_void,
                Some(never),
                1,
                std::ptr::null(),
            )
        };
        // The instance is tearing down: no new work item.
        assert_eq!(Status(s), Status::FLT_DELETING_OBJECT);
        unsafe { FltFreeGenericWorkItem(item) };
        crate::fltcommon::order_push("teardown start returns".into());
    }));
    start(&mut m, 0, cfg);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let w = m.write(h, Some(0), &[b'w'; 512], IoMode::NonCached);
    assert_eq!(w.status, Status::PENDING);
    // Another driver's worker completes the held write later (a queued "user-mode answer").
    order_clear();
    fsfilter_sim::sched::queue_work(
        "answer",
        None,
        Box::new(|| {
            for data in PENDED.with(|p| std::mem::take(&mut *p.borrow_mut())) {
                fltcommon::order_push("completed pended".into());
                unsafe { FltCompletePendedPreOperation(data as *const _, 1, std::ptr::null()) };
            }
        }),
    );
    assert_eq!(m.filter_detach("Holder", c, None), Status::SUCCESS);
    assert_eq!(
        order(),
        [
            "Holder:teardown_start",
            "teardown start returns",
            "completed pended",
            "Holder:teardown_complete"
        ]
    );
    let io = w.io.unwrap();
    assert_eq!(
        m.kernel(|k| k.requests.result(fsfilter_sim::ids::RequestId(io.0))).map(|r| r.0),
        Some(Status::SUCCESS)
    );
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_dismount_tears_instances_down_without_asking_facts_2_5() {
    // facts.md §2.5: teardown on volume dismount (VOLUME_DISMOUNT); query teardown is not called.
    let (mut m, c) = setup();
    start(&mut m, 0, Config::new("Dis", "300000"));
    assert_eq!(m.dismount(c), Status::SUCCESS);
    assert_eq!(teardowns(0), [(false, 0x8), (true, 0x8)]);
    assert!(!seen(0).iter().any(|s| matches!(s, Seen::Query { .. })));
    // The next open mounts NTFS anew: a new volume, set up as newly mounted.
    m.create(c, "a.txt", CreateOptions::open());
    let flags: Vec<u32> = seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Setup { flags, .. } => Some(flags),
            _ => None,
        })
        .collect();
    assert_eq!(flags, [0x1, 0x5]);
}

#[test]
fn an_instance_keeps_naming_its_volume_as_its_device_does_through_dismount_and_remount() {
    // The events of an instance's callbacks name the machine volume it serves, which the
    // instance remembers once its volume's device named it. The device goes on naming the same
    // volume after a dismount, and the next mount is a new Filter Manager volume with new
    // instances: what the instances remember is what the lookup answers, at every point.
    let (mut m, c) = setup();
    start(&mut m, 0, Config::new("Names", "300000").op(mj::CREATE, true, true));
    let agree = |m: &Machine| {
        m.kernel(|k| {
            let n = k.fltmgr.instances.len();
            assert!(n > 0);
            for i in (0..n as u32).map(fsfilter_sim::fltmgr::InstId) {
                let looked_up = k
                    .flt_sim_volume(k.fltmgr.inst(i).volume)
                    .map(|v| k.volume_shared_name(v).to_string());
                let remembered = k.flt_inst_sim_volume_name(i).map(|n| n.to_string());
                assert_eq!(remembered, looked_up, "instance {i:?}");
            }
            n
        })
    };
    let h = m.open(c, "a.txt", CreateOptions::open()).expect("open");
    m.close_handle(h);
    assert_eq!(agree(&m), 1);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    assert_eq!(agree(&m), 1);
    // The next open mounts the volume anew, with a new instance.
    let h = m.open(c, "a.txt", CreateOptions::open()).expect("open after the remount");
    m.close_handle(h);
    assert_eq!(agree(&m), 2);
    // Every Filter Manager operation event, before the dismount and after the remount, names
    // the volume.
    let volumes: Vec<Option<String>> = m
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FltMgr { volume, event: FltEvent::Operation { .. }, .. } => {
                Some(volume.as_ref().map(|v| v.to_string()))
            }
            _ => None,
        })
        .collect();
    assert!(volumes.len() >= 4, "{volumes:?}");
    assert!(volumes.iter().all(|v| v.as_deref() == Some("C:")), "{volumes:?}");
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

thread_local! {
    /// The callback data of reads whose post callback answered MORE_PROCESSING_REQUIRED.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// How a held post meets its instance's teardown.
#[derive(Clone, Copy, Debug)]
enum HeldEnd {
    /// `fltmc detach`.
    Detach,
    /// `fltmc unload`.
    Unload,
    /// `sc stop`.
    Stop,
}

/// A filter whose read post callback (run at DISPATCH_LEVEL: the file system completes from a
/// DPC) answers FLT_POSTOP_MORE_PROCESSING_REQUIRED and keeps the callback data; a non-cached
/// read through it, held. Returns the machine, the volume and the read.
fn held_read() -> (Machine, VolumeId, IoResultOf) {
    HELD.with(|h| h.borrow_mut().clear());
    let (mut m, c) = setup();
    let cfg = Config::new("Holder", "300000")
        .op(mj::READ, true, true)
        .with_pre(|_| (0, 0x77))
        .with_post(|p| {
            if p.flags & 1 != 0 {
                return 0;
            }
            HELD.with(|h| h.borrow_mut().push(p.data as usize));
            1
        });
    start(&mut m, 0, cfg);
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING);
    // The DPC completes the read; the post callback holds it.
    m.settle();
    assert_eq!(HELD.with(|h| h.borrow().len()), 1, "the read's post callback held it");
    let posts = read_posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0], (0, 2), "an ordinary post at DISPATCH_LEVEL");
    (m, c, r)
}

type IoResultOf = fsfilter_sim::IoResult;

/// The read post callbacks slot 0 saw: (flags, IRQL).
fn read_posts() -> Vec<(u32, u8)> {
    seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Post { major: mj::READ, flags, irql, .. } => Some((flags, irql)),
            _ => None,
        })
        .collect()
}

/// Completes the held reads (FltCompletePendedPostOperation).
fn complete_held() {
    for data in HELD.with(|h| std::mem::take(&mut *h.borrow_mut())) {
        fltcommon::order_push("completed held".into());
        unsafe { FltCompletePendedPostOperation(data as *const _) };
    }
}

#[test]
fn a_held_post_is_not_drained_and_teardown_waits_for_it_facts_2_5_and_4() {
    // facts.md §2.5/§4: draining is for operations still waiting for their post callback. An
    // operation whose post callback answered FLT_POSTOP_MORE_PROCESSING_REQUIRED has had its
    // post: it keeps the instance until FltCompletePendedPostOperation, and
    // InstanceTeardownComplete waits for it; the post callback is never called again.
    for end in [HeldEnd::Detach, HeldEnd::Unload, HeldEnd::Stop] {
        let (mut m, c, r) = held_read();
        order_clear();
        // Another caller completes the held read 10 ms later.
        m.schedule(10, |_| complete_held());
        let before = m.now_ms();
        let (reason, status) = match end {
            HeldEnd::Detach => (0x1, m.filter_detach("Holder", c, None)),
            HeldEnd::Unload => (0x2, m.fltmc_unload("Holder")),
            HeldEnd::Stop => {
                assert_eq!(m.stop("Holder"), StopResult::Unloaded);
                (0x4, Status::SUCCESS)
            }
        };
        assert_eq!(status, Status::SUCCESS, "{end:?}");
        let mut want = vec!["Holder:teardown_start", "completed held", "Holder:teardown_complete"];
        if !matches!(end, HeldEnd::Detach) {
            want.push("Holder:unregistered");
        }
        assert_eq!(order(), want, "{end:?}");
        assert!(m.now_ms() >= before + 10, "{end:?}: teardown waited for the held read");
        assert_eq!(teardowns(0), [(false, reason), (true, reason)], "{end:?}");
        m.settle();
        assert_eq!(read_posts(), [(0, 2)], "{end:?}: the read's post callback ran once");
        assert_eq!(
            m.completions_of(r.io.unwrap()),
            [Status::SUCCESS],
            "{end:?}: the read completed once"
        );
        assert!(rules(&m).is_empty(), "{end:?}: {:?}", m.findings());
    }
}

#[test]
fn a_held_post_never_completed_hangs_teardown_facts_2_5() {
    // facts.md §2.5/§9: TeardownComplete is not called while an operation the filter holds is
    // outstanding; one never completed hangs the detach, which the simulator reports as
    // DEADLOCK instead of draining it.
    let (mut m, c, _r) = held_read();
    order_clear();
    assert_eq!(m.filter_detach("Holder", c, None), Status::SUCCESS);
    assert_eq!(order(), ["Holder:teardown_start"], "no drain, no teardown complete");
    assert_eq!(read_posts(), [(0, 2)]);
    assert_eq!(rules(&m), [Rule::Deadlock], "{:?}", m.findings());
    // Completed at last, the read goes on and the teardown completes.
    complete_held();
    m.settle();
    assert_eq!(order(), ["Holder:teardown_start", "completed held", "Holder:teardown_complete"]);
    assert_eq!(read_posts(), [(0, 2)]);
    assert_eq!(rules(&m), [Rule::Deadlock], "{:?}", m.findings());
}

#[test]
fn an_instance_above_a_held_post_is_still_drained_facts_2_5_and_4() {
    // facts.md §2.5/§4: while a lower instance's post holds a read, the instance above it still
    // waits for its post callback: its teardown drains it (once), and completes at once; the
    // held read then completes without calling it again.
    HELD.with(|h| h.borrow_mut().clear());
    let (mut m, c) = setup();
    start(&mut m, 0, Config::new("Upper", "300000").op(mj::READ, true, true));
    start(
        &mut m,
        1,
        Config::new("Lower", "200000").op(mj::READ, true, true).with_post(|p| {
            if p.flags & 1 != 0 {
                return 0;
            }
            HELD.with(|h| h.borrow_mut().push(p.data as usize));
            1
        }),
    );
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    order_clear();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING);
    m.settle();
    assert_eq!(order(), ["Upper:pre:3", "Lower:pre:3", "Lower:post:3"]);
    order_clear();
    assert_eq!(m.filter_detach("Upper", c, None), Status::SUCCESS);
    assert_eq!(order(), ["Upper:teardown_start", "Upper:post:3", "Upper:teardown_complete"]);
    let upper: Vec<u32> = seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Post { major: mj::READ, flags, .. } => Some(flags),
            _ => None,
        })
        .collect();
    assert_eq!(upper, [1], "drained once");
    order_clear();
    complete_held();
    m.settle();
    assert_eq!(order(), ["completed held"], "no second post for Upper, none again for Lower");
    let io = r.io.unwrap();
    assert_eq!(
        m.kernel(|k| k.requests.result(fsfilter_sim::ids::RequestId(io.0))).map(|r| r.0),
        Some(Status::SUCCESS)
    );
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_file_system_that_unregisters_tears_its_instances_down_as_a_dismount_facts_2_5() {
    // facts.md §2.5: VOLUME_DISMOUNT is also the reason when a file system unregisters. MUP's
    // control device is its volume: when it unregisters (IoUnregisterFileSystem), the Filter
    // Manager's frame leaves it and tears its instances on it down with VOLUME_DISMOUNT,
    // without asking; the instance on C: stays.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup));
    m.install_filter_manager();
    m.boot();
    start(&mut m, 0, Config::new("Net", "300000"));
    let instances: Vec<(u32, isize)> = seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Setup { device_type, instance, .. } => Some((device_type, instance)),
            _ => None,
        })
        .collect();
    // FILE_DEVICE_NETWORK_FILE_SYSTEM.
    let mup_instance = instances.iter().find(|(t, _)| *t == 0x14).expect("an instance on MUP").1;
    assert_eq!(instances.len(), 2, "{instances:?}");
    let mup = m.kernel(|k| {
        let id = k.objects.names.get(r"\DEVICE\MUP").copied().expect(r"\Device\Mup");
        k.objects.device(id).ptr as usize
    });
    unsafe {
        windows_sys::Wdk::Storage::FileSystem::IoUnregisterFileSystem(
            mup as *const windows_sys::Wdk::Foundation::DEVICE_OBJECT,
        )
    };
    let torn: Vec<(bool, u32, isize)> = seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::TeardownStart { reason, instance } => Some((false, reason, instance)),
            Seen::TeardownComplete { reason, instance } => Some((true, reason, instance)),
            _ => None,
        })
        .collect();
    assert_eq!(torn, [(false, 0x8, mup_instance), (true, 0x8, mup_instance)]);
    assert!(!seen(0).iter().any(|s| matches!(s, Seen::Query { .. })));
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn no_new_io_reaches_an_instance_between_teardown_start_and_complete_facts_2_5() {
    // facts.md §2.5: no new I/O reaches the instance after InstanceTeardownStart. Holder pends a
    // write, so its teardown complete waits; a create issued in between (another caller, while
    // the detach waits) goes down without Holder's pre and succeeds; then the write is
    // completed and the teardown completes.
    PENDED.with(|p| p.borrow_mut().clear());
    let (mut m, c) = setup();
    let cfg = Config::new("Holder", "300000")
        .op(mj::CREATE, true, false)
        .op(mj::WRITE, true, false)
        .with_pre(|p| {
            if p.major() != mj::WRITE {
                return (1, 0);
            }
            PENDED.with(|x| x.borrow_mut().push(p.data as usize));
            (2, 0)
        });
    start(&mut m, 0, cfg);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let w = m.write(h, Some(0), &[b'w'; 512], IoMode::NonCached);
    assert_eq!(w.status, Status::PENDING);
    let creates = creates_seen(0);
    m.schedule(10, move |m| {
        let r = m.create(c, "a.txt", CreateOptions::open());
        fltcommon::order_push(format!("create in between {}", r.status));
    });
    m.schedule(20, |_| {
        for data in PENDED.with(|p| std::mem::take(&mut *p.borrow_mut())) {
            fltcommon::order_push("completed pended".into());
            unsafe { FltCompletePendedPreOperation(data as *const _, 1, std::ptr::null()) };
        }
    });
    order_clear();
    assert_eq!(m.filter_detach("Holder", c, None), Status::SUCCESS);
    assert_eq!(
        order(),
        [
            "Holder:teardown_start",
            "create in between STATUS_SUCCESS",
            "completed pended",
            "Holder:teardown_complete"
        ]
    );
    assert_eq!(creates_seen(0), creates, "Holder's pre never saw the create");
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_dismount_during_instance_setup_tears_the_instance_down_after_its_setup_facts_2_5() {
    // facts.md §2.5: an instance exists once its InstanceSetupCallback answered success; its
    // teardown (start, then complete) follows. A volume dismounted while the setup callback is
    // still running (it waits, as a filter opening a file there would) must not tear the
    // instance down under the callback, nor leave it attached to the dismounted volume after.
    let (mut m, c) = setup();
    let mut slow = Config::new("Slow", "300000").op(mj::CREATE, true, false);
    slow.on_setup = Some(std::rc::Rc::new(|_instance, _flags| {
        order_push("Slow:setup waits".into());
        let ten_ms: i64 = -100_000;
        // SAFETY: a relative interval, at PASSIVE_LEVEL in the setup callback.
        let _ = unsafe {
            windows_sys::Wdk::System::SystemServices::KeDelayExecutionThread(0, false, &ten_ms)
        };
        order_push("Slow:setup returns".into());
    }));
    install(&mut m, 0, slow);
    m.schedule(1, move |m| {
        order_push("dismount".into());
        assert_eq!(m.dismount(c), Status::SUCCESS);
    });
    assert_eq!(m.start("Slow"), Status::SUCCESS);
    m.settle();
    let log: Vec<String> = order().into_iter().filter(|s| s.starts_with("Slow:")).collect();
    assert_eq!(
        log,
        [
            "Slow:setup",
            "Slow:setup waits",
            "Slow:setup returns",
            "Slow:teardown_start",
            "Slow:teardown_complete"
        ],
        "teardown only after the setup answered, once"
    );
    // No instance of the filter is left attached to the dismounted volume.
    let attached = m.kernel(|k| {
        (0..k.fltmgr.instances.len() as u32)
            .map(fsfilter_sim::fltmgr::InstId)
            .filter(|&i| k.fltmgr.inst(i).state() == fsfilter_sim::fltmgr::InstState::Attached)
            .count()
    });
    assert_eq!(attached, 0);
    // Unloading it later tears nothing down twice.
    order_clear();
    assert_eq!(m.fltmc_unload("Slow"), Status::SUCCESS);
    assert!(!order().iter().any(|s| s.contains("teardown")), "{:?}", order());
}

#[test]
fn fltmc_unload_of_a_filter_already_unloading_is_flt_deleting_object_facts_5() {
    // facts.md §5: FltUnloadFilter / `fltmc unload` fail with STATUS_FLT_DELETING_OBJECT when
    // the filter is found but is already being torn down. A second unload request that arrives
    // while the first one waits for the filter's rundown must not call its unload callback
    // again (nor unload its image under the first request).
    let (mut m, _c) = setup();
    start(&mut m, 0, Config::new("Busy", "300000").op(mj::CREATE, true, false));
    let filter = fltcommon::filter_handle(0);
    // A rundown reference the filter's own worker would hold, released 20 ms on.
    assert_eq!(unsafe { FltObjectReference(filter as *mut c_void) }, Status::SUCCESS.0);
    let second: std::rc::Rc<RefCell<Option<Status>>> = std::rc::Rc::default();
    let s = second.clone();
    m.schedule(10, move |m| *s.borrow_mut() = Some(m.fltmc_unload("Busy")));
    m.schedule(20, move |_| unsafe { FltObjectDereference(filter as *mut c_void) });
    assert_eq!(m.fltmc_unload("Busy"), Status::SUCCESS);
    m.settle();
    assert_eq!(*second.borrow(), Some(Status::FLT_DELETING_OBJECT));
    let unloads = seen(0).iter().filter(|s| matches!(s, Seen::Unload { .. })).count();
    assert_eq!(unloads, 1, "the unload callback runs once");
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_service_stop_during_a_fltmc_unload_waits_for_it_facts_5() {
    // facts.md §5: `fltmc unload` calls the unload callback (non-mandatory) and the filter
    // unregisters, waiting for its rundown. A service stop arriving meanwhile must not call the
    // callback a second time (the filter's own FltUnregisterFilter would then be refused as a
    // second unregistration) nor unload the image under the first request: the stop stays
    // pending until that unload is done.
    let (mut m, _c) = setup();
    start(&mut m, 0, Config::new("Busy", "300000").op(mj::CREATE, true, false));
    let filter = fltcommon::filter_handle(0);
    assert_eq!(unsafe { FltObjectReference(filter as *mut c_void) }, Status::SUCCESS.0);
    m.schedule(10, move |m| order_push(format!("stop {:?}", m.stop("Busy"))));
    m.schedule(20, move |_| unsafe { FltObjectDereference(filter as *mut c_void) });
    assert_eq!(m.fltmc_unload("Busy"), Status::SUCCESS);
    m.settle();
    assert_eq!(
        order().into_iter().filter(|s| !s.contains("setup")).collect::<Vec<_>>(),
        ["Busy:teardown_start", "Busy:teardown_complete", "stop Pending", "Busy:unregistered"]
    );
    let unloads: Vec<u32> = seen(0)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Unload { flags } => Some(flags),
            _ => None,
        })
        .collect();
    assert_eq!(unloads, [0], "one non-mandatory unload callback");
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
    assert!(m.kernel(|k| k.fltmgr.filter_by_name("Busy").is_none()));
}

#[test]
fn a_second_unload_while_the_unload_callback_waits_is_flt_deleting_object_facts_5() {
    // facts.md §5: a non-mandatory unload calls FilterUnloadCallback once. An unload callback
    // commonly waits (for its worker thread to exit, a port to close) before it calls
    // FltUnregisterFilter. A second `fltmc unload` arriving during that wait finds the filter
    // being unloaded: STATUS_FLT_DELETING_OBJECT (FltUnloadFilter's page), not a second,
    // nested call of the unload callback that unloads the image under the first.
    let (mut m, _c) = setup();
    let mut cfg = Config::new("Slow", "300000").op(mj::CREATE, true, false);
    cfg.on_unload = Some(std::rc::Rc::new(|_| {
        // Waits 30 ms (its worker thread winding down).
        let interval: i64 = -300_000;
        unsafe { fsfilter_sim::exports::ke::KeDelayExecutionThread(0, false, &interval) };
    }));
    start(&mut m, 0, cfg);
    let second: std::rc::Rc<RefCell<Option<Status>>> = std::rc::Rc::default();
    let s = second.clone();
    m.schedule(10, move |m| *s.borrow_mut() = Some(m.fltmc_unload("Slow")));
    assert_eq!(m.fltmc_unload("Slow"), Status::SUCCESS);
    m.settle();
    assert_eq!(*second.borrow(), Some(Status::FLT_DELETING_OBJECT));
    let unloads = seen(0).iter().filter(|s| matches!(s, Seen::Unload { .. })).count();
    assert_eq!(unloads, 1, "the unload callback runs once");
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_service_stop_while_a_refused_unload_callback_waits_runs_after_it_facts_5() {
    // facts.md §5: a non-mandatory unload's error keeps the filter; a service stop is a
    // mandatory unload. A stop arriving while the non-mandatory callback waits (before its
    // answer) stays pending; once the callback has refused, the stop goes on: one
    // non-mandatory call, then one mandatory call, never nested.
    let (mut m, _c) = setup();
    let mut cfg = Config::new("Stubborn", "300000").op(mj::CREATE, true, false);
    cfg.unload_status = Status::FLT_DO_NOT_DETACH;
    cfg.on_unload = Some(std::rc::Rc::new(|flags| {
        order_push(format!("unload {flags} in"));
        let interval: i64 = -300_000;
        unsafe { fsfilter_sim::exports::ke::KeDelayExecutionThread(0, false, &interval) };
        order_push(format!("unload {flags} out"));
    }));
    start(&mut m, 0, cfg);
    m.schedule(10, move |m| order_push(format!("stop {:?}", m.stop("Stubborn"))));
    assert_eq!(m.fltmc_unload("Stubborn"), Status::FLT_DO_NOT_DETACH);
    m.settle();
    let got: Vec<String> = order().into_iter().filter(|s| !s.contains("Stubborn:")).collect();
    assert_eq!(got, ["unload 0 in", "stop Pending", "unload 0 out", "unload 1 in", "unload 1 out"]);
    assert!(m.kernel(|k| k.fltmgr.filter_by_name("Stubborn").is_none()));
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

#[test]
fn a_service_stop_while_an_unload_callback_that_forgets_to_unregister_waits_facts_5() {
    // facts.md §5: after a successful non-mandatory unload the filter is gone. One whose unload
    // callback returns success without FltUnregisterFilter is reported and unregistered by the
    // Filter Manager; a service stop that arrived while that callback waited must not run the
    // unload callback again (mandatory, nested in that unregistration).
    let (mut m, _c) = setup();
    let mut cfg = Config::new("Forgets", "300000").op(mj::CREATE, true, false);
    cfg.unregister_in_unload = false;
    cfg.on_unload = Some(std::rc::Rc::new(|flags| {
        order_push(format!("unload {flags} in"));
        let interval: i64 = -300_000;
        unsafe { fsfilter_sim::exports::ke::KeDelayExecutionThread(0, false, &interval) };
        order_push(format!("unload {flags} out"));
    }));
    start(&mut m, 0, cfg);
    // A rundown reference (its worker's) released 50 ms on: the unregistration waits for it.
    let filter = fltcommon::filter_handle(0);
    assert_eq!(unsafe { FltObjectReference(filter as *mut c_void) }, Status::SUCCESS.0);
    m.schedule(10, move |m| order_push(format!("stop {:?}", m.stop("Forgets"))));
    m.schedule(50, move |_| unsafe { FltObjectDereference(filter as *mut c_void) });
    assert_eq!(m.fltmc_unload("Forgets"), Status::SUCCESS);
    m.settle();
    let got: Vec<String> = order().into_iter().filter(|s| !s.contains("Forgets:")).collect();
    assert_eq!(got, ["unload 0 in", "stop Pending", "unload 0 out"]);
    assert_eq!(rules(&m), [Rule::FilterNotUnregistered], "{:?}", m.findings());
}
