//! Asynchrony (issue 10 item 3) for the minifilter backend: operations the probe pends (rules
//! `pend:N read`, resumed from a timer and a work item) and operations that complete
//! asynchronously (a byte-range lock waiting for a conflicting one) interleaved, by the machine's
//! seeded scheduler, with a service stop (mandatory unload) or a volume dismount. Each seed gives
//! other delays, so another interleaving. Checked: nothing of the driver runs once it unloaded,
//! every pended operation resumes exactly once and every request completes once with a status,
//! draining happens as docs/semantics.md ("draining", "unload") and docs/simulator.md (teardown
//! and unload) say, and the machine is balanced at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use fsfilter::{Status, TeardownFlags};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, IoMode, IoRequest, Machine, MachineConfig,
    RequestRef, StartType, StopResult, VolumeId, VolumeSpec,
};

/// Seeds per disruption: each a different interleaving.
const SEEDS: u64 = 20;

const NAME: &str = "Probe";

/// A small deterministic generator (splitmix64): the delays of one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disruption {
    Stop,
    Dismount,
}

/// What the scheduled callers saw.
#[derive(Default, Debug)]
struct Seen {
    /// (what, status, request) of each request a scheduled caller made.
    results: Vec<(&'static str, Status, Option<RequestRef>)>,
    stop: Option<StopResult>,
    dismount: Option<Status>,
}

fn lock(handle: fsfilter_sim::Handle, wait: bool) -> IoRequest<'static> {
    IoRequest::Lock { handle, offset: 0, length: 16, exclusive: true, fail_immediately: !wait }
}

/// One interleaving: reads of `a.bin` and `b.bin` pended for seed-chosen delays, a lock that waits
/// for a conflicting one, the disruption at a seed-chosen moment, the unlock that lets the waiting
/// lock complete, and a late read.
fn run(seed: u64, disruption: Disruption) -> (Machine, VolumeId, Seen, RequestRef) {
    let mut rng = Rng(seed);
    let (pa, pb) = (rng.range(5, 50), rng.range(5, 50));
    let mut m = Machine::new(MachineConfig { seed });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("a.bin", &[0xA; 4096])
            .file("b.bin", &[0xB; 4096])
            .file("lock.bin", &[0xC; 64]),
    );
    common::install_probe(
        &mut m,
        NAME,
        StartType::Boot,
        "370100",
        &[("Rules", common::sz(&format!("pend:{pa} read *a.bin; pend:{pb} read *b.bin")))],
    );
    m.boot();
    let ha = m.open(c, "a.bin", CreateOptions::open()).unwrap();
    let hb = m.open(c, "b.bin", CreateOptions::open()).unwrap();
    let hl1 = m.open(c, "lock.bin", CreateOptions::open()).unwrap();
    let hl2 = m.open(c, "lock.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.io(lock(hl1, false)).status, Status::SUCCESS);
    let seen = Rc::new(RefCell::new(Seen::default()));
    let record = |seen: &Rc<RefCell<Seen>>, what: &'static str| {
        let seen = seen.clone();
        move |r: fsfilter_sim::IoResult| seen.borrow_mut().results.push((what, r.status, r.io))
    };
    let t_b = rng.range(0, 10);
    let t_lock = rng.range(0, 20);
    let t_disrupt = rng.range(0, 40);
    let t_unlock = rng.range(0, 60);
    let t_late = rng.range(0, 60);
    let done = record(&seen, "read b.bin");
    m.schedule(t_b, move |m| done(m.read(hb, Some(0), 512, IoMode::NonCached)));
    let done = record(&seen, "lock (waits)");
    m.schedule(t_lock, move |m| done(m.io(lock(hl2, true))));
    let s = seen.clone();
    m.schedule(t_disrupt, move |m| match disruption {
        Disruption::Stop => s.borrow_mut().stop = Some(m.stop(NAME)),
        Disruption::Dismount => s.borrow_mut().dismount = Some(m.dismount(c)),
    });
    let done = record(&seen, "unlock");
    m.schedule(t_unlock, move |m| {
        done(m.io(IoRequest::Unlock { handle: hl1, offset: 0, length: 16 }))
    });
    let done = record(&seen, "late read a.bin");
    m.schedule(t_late, move |m| done(m.read(ha, Some(512), 512, IoMode::NonCached)));
    let main = m.read(ha, Some(0), 512, IoMode::NonCached);
    m.settle();
    for h in [ha, hb, hl1, hl2] {
        m.close_handle(h);
    }
    m.settle();
    let seen = Rc::try_unwrap(seen).unwrap().into_inner();
    (m, c, seen, main.io.unwrap())
}

/// The event log, one line per event of interest.
fn trace(m: &Machine) -> Vec<String> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback { driver, callback, io, .. } if driver == NAME => {
                let io = io.map_or(String::new(), |i| format!(" io{}", i.0));
                Some(match callback {
                    Callback::Pre { major, outcome, .. } => format!("pre {major:?} {outcome}{io}"),
                    Callback::Post { major, draining, .. } => {
                        format!("post {major:?}{}{io}", if draining { " draining" } else { "" })
                    }
                    other => format!("{}{io}", other.kind()),
                })
            }
            EventKind::Unload { driver, .. } if driver == NAME => Some("UNLOAD".into()),
            EventKind::IoStart { io, major, .. } => Some(format!("start io{} {major:?}", io.0)),
            EventKind::IoComplete { io, status, .. } => {
                Some(format!("complete io{} {status:?}", io.0))
            }
            EventKind::Dismounted { .. } => Some("DISMOUNTED".into()),
            _ => None,
        })
        .collect()
}

/// The probe's events and the requests' lives, by position in the event log.
#[derive(Default)]
struct Log {
    /// (position, io, outcome) of each pre.
    pres: Vec<(usize, Option<RequestRef>, &'static str)>,
    /// (position, io, outcome) of each resumption.
    resumed: Vec<(usize, Option<RequestRef>, &'static str)>,
    /// (position, io, draining) of each post.
    posts: Vec<(usize, Option<RequestRef>, bool)>,
    teardown_start: Vec<(usize, TeardownFlags)>,
    teardown_complete: Vec<(usize, TeardownFlags)>,
    unload_callback: Vec<usize>,
    /// Positions of the driver's unload.
    unload: Vec<usize>,
    dismounted: Vec<usize>,
    /// Position of the last event of the driver's logic.
    last_callback: Option<usize>,
    /// (position, io) of each request start and completion, and the completion's status.
    starts: Vec<(usize, RequestRef)>,
    completions: Vec<(usize, RequestRef, Status)>,
}

fn log(m: &Machine) -> Log {
    let mut l = Log::default();
    for (p, e) in m.events().into_iter().enumerate() {
        match e.kind {
            EventKind::Callback { driver, callback, io, .. } if driver == NAME => {
                l.last_callback = Some(p);
                match callback {
                    Callback::Pre { outcome, .. } => l.pres.push((p, io, outcome)),
                    Callback::Resumed { outcome } => l.resumed.push((p, io, outcome)),
                    Callback::Post { draining, .. } => l.posts.push((p, io, draining)),
                    Callback::TeardownStart { reason } => l.teardown_start.push((p, reason)),
                    Callback::TeardownComplete { reason } => l.teardown_complete.push((p, reason)),
                    Callback::UnloadCallback { .. } => l.unload_callback.push(p),
                    _ => {}
                }
            }
            EventKind::Unload { driver, .. } if driver == NAME => l.unload.push(p),
            EventKind::Dismounted { .. } => l.dismounted.push(p),
            EventKind::IoStart { io, .. } => l.starts.push((p, io)),
            EventKind::IoComplete { io, status, .. } => l.completions.push((p, io, status)),
            _ => {}
        }
    }
    l
}

impl Log {
    fn completion(&self, io: RequestRef) -> (usize, Status) {
        let c: Vec<_> = self.completions.iter().filter(|(_, i, _)| *i == io).collect();
        assert_eq!(c.len(), 1, "io{} completes exactly once", io.0);
        (c[0].0, c[0].2)
    }
}

/// Prints a run's trace when one of its assertions fails.
struct TraceOnPanic(Vec<String>);

impl Drop for TraceOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("trace:\n  {}", self.0.join("\n  "));
        }
    }
}

/// What one run showed, for the totals.
#[derive(Default)]
struct Tally {
    /// Pended reads still pended when the stop or the dismount came.
    pended_at_disruption: usize,
    /// Pended reads still pended when the teardown started.
    pended_at_teardown: usize,
    /// Operations drained (post with DRAINING).
    drained: usize,
    /// Pended reads in total.
    pended: usize,
}

fn check(seed: u64, disruption: Disruption) -> Tally {
    let (mut m, c, seen, main) = run(seed, disruption);
    let l = log(&m);
    let what = format!("seed {seed}, {disruption:?}");
    let _trace = TraceOnPanic(trace(&m));
    assert_eq!(m.crashed(), None, "{what}");
    // Nothing ran in the unloaded driver, no callback after unload, no leak, no hang.
    assert!(common::findings(&m).is_empty(), "{what}: {:?}", common::findings(&m));
    // Every request completed, once, after it started, with a status.
    let results = m.kernel(|k| k.requests.iter().map(|r| r.result).collect::<Vec<_>>());
    assert!(results.iter().all(Option::is_some), "{what}: a request never completed");
    for (p, io) in &l.starts {
        let (cp, status) = l.completion(*io);
        assert!(cp > *p && status != Status::PENDING, "{what}: io{}", io.0);
    }
    // One teardown of the instance on C:, for the disruption's reason.
    let reason = match disruption {
        Disruption::Stop => TeardownFlags::MANDATORY_FILTER_UNLOAD,
        Disruption::Dismount => TeardownFlags::VOLUME_DISMOUNT,
    };
    assert_eq!(l.teardown_start.len(), 1, "{what}");
    assert_eq!(l.teardown_complete.len(), 1, "{what}");
    let (ts, tc) = (l.teardown_start[0], l.teardown_complete[0]);
    assert_eq!((ts.1, tc.1), (reason, reason), "{what}");
    let (ts, tc) = (ts.0, tc.0);
    assert!(ts < tc, "{what}");
    match disruption {
        Disruption::Stop => {
            assert_eq!(seen.stop, Some(StopResult::Unloaded), "{what}");
            // docs/simulator.md, teardown and unload: the unload callback, the teardown, then
            // the driver goes; nothing of it runs afterwards.
            assert_eq!(l.unload_callback.len(), 1, "{what}");
            assert_eq!(l.unload.len(), 1, "{what}");
            assert!(l.unload_callback[0] < ts && tc < l.unload[0], "{what}");
            assert!(l.last_callback.unwrap() < l.unload[0], "{what}: driver code after unload");
        }
        Disruption::Dismount => {
            assert_eq!(seen.dismount, Some(Status::SUCCESS), "{what}");
            assert_eq!(l.dismounted.len(), 1, "{what}");
            assert!(l.dismounted[0] < ts, "{what}");
            assert!(l.last_callback.unwrap() <= tc, "{what}: the instance saw I/O after it went");
        }
    }
    // No new operation reaches the instance once its teardown started (docs/simulator.md).
    assert!(l.pres.iter().all(|(p, _, _)| *p < ts), "{what}: a pre after teardown start");
    let mut tally = Tally::default();
    for &(p, io, outcome) in &l.pres {
        let io = io.expect("operations resolve to their request");
        let (done, status) = l.completion(io);
        let resumed: Vec<_> = l.resumed.iter().filter(|r| r.1 == Some(io)).collect();
        let posts: Vec<_> = l.posts.iter().filter(|q| q.1 == Some(io)).collect();
        let owes_post = if outcome == "FLT_PREOP_PENDING" {
            tally.pended += 1;
            // A pended operation resumes exactly once, from its timer, before it completes.
            assert_eq!(resumed.len(), 1, "{what}: io{} resumed {resumed:?}", io.0);
            let r = resumed[0];
            assert!(p < r.0 && r.0 < done, "{what}: io{}", io.0);
            assert_eq!(r.2, "FLT_PREOP_SUCCESS_WITH_CALLBACK", "{what}");
            let disrupted = l.unload_callback.first().or(l.dismounted.first()).copied();
            if disrupted.is_some_and(|d| p < d && d < r.0) {
                tally.pended_at_disruption += 1;
            }
            if r.0 > ts {
                // Still pended when the teardown started: teardown completion waited for it
                // (InstanceTeardownComplete once no pended operation is left).
                tally.pended_at_teardown += 1;
                assert!(r.0 < tc, "{what}: io{} resumed after teardown complete", io.0);
            }
            // A read resumed after the volume went fails; before, it succeeds.
            let expected = if l.dismounted.first().is_some_and(|d| *d < r.0) {
                Status::VOLUME_DISMOUNTED
            } else {
                Status::SUCCESS
            };
            assert_eq!(status, expected, "{what}: io{}", io.0);
            true
        } else {
            assert!(resumed.is_empty(), "{what}");
            outcome == "FLT_PREOP_SUCCESS_WITH_CALLBACK"
        };
        if !owes_post {
            assert!(posts.is_empty(), "{what}: io{}", io.0);
            continue;
        }
        // Exactly one post per pre that asked for one.
        assert_eq!(posts.len(), 1, "{what}: io{} posts {posts:?}", io.0);
        let (q, _, draining) = *posts[0];
        if draining {
            // Drained (facts.md §2.5, docs/semantics.md "draining"): the post comes early, at
            // teardown, for an operation sent down and not complete; the completion comes
            // later without a post.
            tally.drained += 1;
            assert!(ts < q && q < tc && q < done, "{what}: io{}", io.0);
            assert!(resumed.first().is_none_or(|r| r.0 < ts), "{what}");
        } else {
            // A normal post, before the request completes and before the teardown completes.
            assert!(q < done && q < tc, "{what}: io{}", io.0);
        }
        // Sent down before the teardown and not complete when it started: drained.
        let sent_before = resumed.first().map_or(p, |r| r.0) < ts;
        assert_eq!(draining, sent_before && done > ts && q > ts, "{what}: io{}", io.0);
    }
    // The scheduled callers all got an answer (a waiting lock says STATUS_PENDING and completes
    // later).
    assert_eq!(seen.results.len(), 4, "{what}");
    // The lock that waited completed: granted, or refused on a dismounted volume.
    let lock_io = seen.results.iter().find(|r| r.0 == "lock (waits)").unwrap().2.unwrap();
    let (_, lock_status) = l.completion(lock_io);
    assert!(
        matches!(lock_status, Status::SUCCESS | Status::VOLUME_DISMOUNTED),
        "{what}: {lock_status:?}"
    );
    assert!(l.completion(main).1.is_success() || l.completion(main).1 == Status::VOLUME_DISMOUNTED);
    // A dismounted volume's driver can still be stopped, leaving nothing.
    if disruption == Disruption::Dismount {
        assert_eq!(m.stop(NAME), StopResult::Unloaded, "{what}");
        m.settle();
        assert!(common::findings(&m).is_empty(), "{what}: {:?}", common::findings(&m));
    }
    // Balanced: no IRP, no Filter Manager operation, no open handle, nothing of the driver.
    m.kernel(|k| {
        assert!(k.irps.map.is_empty(), "{what}: {} IRPs left", k.irps.map.len());
        assert!(k.fltmgr.ops.map.is_empty(), "{what}: operations left");
        assert!(k.files.handles.iter().flatten().all(|h| !h.open), "{what}: handles left");
        assert!(k.fltmgr.filter_by_name(NAME).is_none(), "{what}");
        assert!(
            k.fltmgr.contexts.list.iter().all(|c| !c.live),
            "{what}: a context is still referenced"
        );
        let images: Vec<_> = (0..k.images.len())
            .filter(|&i| k.images[i].name == NAME)
            .map(|i| fsfilter_sim::ids::ImageId(i as u32))
            .collect();
        assert!(images.iter().all(|&i| k.pool_outstanding(i).0 == 0), "{what}: pool left");
    });
    assert!(common::instances_top_down(&m, c).iter().all(|d| d != NAME), "{what}");
    tally
}

fn check_seeds(disruption: Disruption) {
    let mut totals = Tally::default();
    for seed in 0..SEEDS {
        let t = check(seed, disruption);
        totals.pended += t.pended;
        totals.pended_at_teardown += t.pended_at_teardown;
        totals.pended_at_disruption += t.pended_at_disruption;
        totals.drained += t.drained;
    }
    eprintln!(
        "{disruption:?}: {SEEDS} seeds, {} pended reads, {} still pended at the {disruption:?}, \
         {} at teardown, {} \
         operations drained",
        totals.pended, totals.pended_at_disruption, totals.pended_at_teardown, totals.drained
    );
    // The seeds cover both cases: operations pended across the teardown, and operations sent
    // down and drained.
    assert!(totals.pended_at_teardown >= 5, "{}", totals.pended_at_teardown);
    assert!(totals.drained >= 3, "{}", totals.drained);
    // Every disruption found reads pended in some seeds.
    assert!(totals.pended_at_disruption >= 5, "{}", totals.pended_at_disruption);
}

#[test]
fn a_service_stop_interleaved_with_pended_and_waiting_operations() {
    check_seeds(Disruption::Stop);
}

#[test]
fn a_dismount_interleaved_with_pended_and_waiting_operations() {
    check_seeds(Disruption::Dismount);
}
