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

#[path = "../../sim/testing/interleaving.rs"]
mod interleaving;

use fsfilter::{Status, TeardownFlags};
use fsfilter_sim::{Machine, StartType, StopResult};
use interleaving::{Disruption, NAME, SEEDS, TraceOnPanic, log, run, trace};

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
    /// Pended reads whose timer fired once the filter was unregistering, failed closed.
    failed_closed: usize,
}

fn check(seed: u64, disruption: Disruption) -> Tally {
    let (mut m, c, seen, main) = run(seed, disruption, |m: &mut Machine, rules: &str| {
        common::install_probe(m, NAME, StartType::Boot, "370100", &[("Rules", common::sz(rules))])
    });
    let l = log(&m);
    let what = format!("seed {seed}, {disruption:?}");
    let _trace = TraceOnPanic(trace(&m));
    assert_eq!(m.crashed(), None, "{what}");
    // Nothing ran in the unloaded driver, no callback after unload, no leak, no hang.
    assert!(common::findings(&m).is_empty(), "{what}: {:?}", common::findings(&m));
    // Every request completed, once, after it started, with a status.
    let results = m.kernel(|k| k.requests.iter().map(|r| r.result).collect::<Vec<_>>());
    assert!(results.iter().all(Option::is_some), "{what}: a request never completed");
    for (p, io, _) in &l.starts {
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
        let (resumed, posts) = l.after_pre(p, io);
        let owes_post = if outcome == "FLT_PREOP_PENDING" {
            tally.pended += 1;
            // A pended operation resumes exactly once, from its timer, before it completes.
            assert_eq!(resumed.len(), 1, "{what}: io{} resumed {resumed:?}", io.0);
            let r = resumed[0];
            assert!(p < r.0 && r.0 < done, "{what}: io{}", io.0);
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
            // A timer that fires once the filter is unregistering gets no work item
            // (FltQueueGenericWorkItem: STATUS_FLT_DELETING_OBJECT), and its DPC may not send
            // the read on (FltCompletePendedPreOperation takes that at APC_LEVEL at most): the
            // read fails closed there (docs/callback-model.md rules 7 and 10), without a post.
            let unregistering = l.unload_callback.first().is_some_and(|u| *u < r.0);
            if unregistering && r.2 == "FLT_PREOP_COMPLETE" {
                assert_eq!(status, Status::INSUFFICIENT_RESOURCES, "{what}: io{}", io.0);
                assert!(posts.is_empty(), "{what}: io{}", io.0);
                tally.failed_closed += 1;
                continue;
            }
            assert_eq!(r.2, "FLT_PREOP_SUCCESS_WITH_CALLBACK", "{what}");
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
    // The main read: read, refused on a dismounted volume, or (pended and its timer fired once
    // the filter was unregistering, above) failed closed.
    let main_status = l.completion(main).1;
    assert!(
        main_status.is_success()
            || main_status == Status::VOLUME_DISMOUNTED
            || (disruption == Disruption::Stop && main_status == Status::INSUFFICIENT_RESOURCES),
        "{what}: {main_status:?}"
    );
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
        totals.failed_closed += t.failed_closed;
    }
    eprintln!(
        "{disruption:?}: {SEEDS} seeds, {} pended reads, {} still pended at the {disruption:?}, \
         {} at teardown, {} operations drained, {} failed closed",
        totals.pended,
        totals.pended_at_disruption,
        totals.pended_at_teardown,
        totals.drained,
        totals.failed_closed
    );
    // The seeds cover both cases: operations pended across the teardown, and operations sent
    // down and drained.
    assert!(totals.pended_at_teardown >= 5, "{}", totals.pended_at_teardown);
    assert!(totals.drained >= 3, "{}", totals.drained);
    // Every disruption found reads pended in some seeds.
    assert!(totals.pended_at_disruption >= 5, "{}", totals.pended_at_disruption);
    // A stop unregisters the filter under reads still pended, whose timers then fail them
    // closed (docs/semantics.md, unload); a dismount unregisters nothing.
    if matches!(disruption, Disruption::Stop) {
        assert!(totals.failed_closed >= 5, "{}", totals.failed_closed);
    } else {
        assert_eq!(totals.failed_closed, 0);
    }
}

#[test]
fn a_service_stop_interleaved_with_pended_and_waiting_operations() {
    check_seeds(Disruption::Stop);
}

#[test]
fn a_dismount_interleaved_with_pended_and_waiting_operations() {
    check_seeds(Disruption::Dismount);
}
