//! Asynchrony (issue 10 item 3) for the legacy backend: operations the probe pends (rules
//! `pend:N read`: the IRP is marked pending and resumed from a timer and a work item) and operations that complete
//! asynchronously (a byte-range lock waiting for a conflicting one) interleaved, by the machine's
//! seeded scheduler, with a service stop (mandatory unload) or a volume dismount. Each seed gives
//! other delays, so another interleaving. Checked: nothing of the driver runs once it unloaded,
//! every pended operation resumes exactly once and every request completes once with a status,
//! the legacy model's "draining" of docs/semantics.md holds (no early post: the teardown detaches,
//! waits until every outstanding operation completed and ran its post callback, then the driver
//! unloads), and the machine is balanced at the end.

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
    /// Pended reads in total.
    pended: usize,
    /// Pended reads still pended when the stop or the dismount came.
    pended_at_disruption: usize,
    /// Pended reads still pended when the teardown started.
    pended_at_teardown: usize,
    /// Operations sent down and not complete when the teardown started (waited for).
    in_flight_at_teardown: usize,
    /// Of those, the lock that waits.
    waiting_lock_at_teardown: usize,
}

fn check(seed: u64, disruption: Disruption) -> Tally {
    let (mut m, c, seen, main) = run(seed, disruption, |m: &mut Machine, rules: &str| {
        common::install_probe(m, NAME, StartType::Boot, &[("Rules", common::sz(rules))])
    });
    let l = log(&m);
    let what = format!("seed {seed}, {disruption:?}");
    let _trace = TraceOnPanic(trace(&m));
    assert_eq!(m.crashed(), None, "{what}");
    // Nothing ran in the unloaded driver, no completion routine after unload, no leak, no hang.
    assert!(common::findings(&m).is_empty(), "{what}: {:?}", common::findings(&m));
    // Every request completed, once, after it started, with a status.
    let results = m.kernel(|k| k.requests.iter().map(|r| r.result).collect::<Vec<_>>());
    assert!(results.iter().all(Option::is_some), "{what}: a request never completed");
    for (p, io, _) in &l.starts {
        let (cp, status) = l.completion(*io);
        assert!(cp > *p && status != Status::PENDING, "{what}: io{}", io.0);
    }
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
    // The teardown detaches first: no new operation reaches the filter once it started.
    assert!(l.pres.iter().all(|(p, _, _)| *p < ts), "{what}: a pre after teardown start");
    // Nothing of the filter runs after its teardown completed.
    assert!(l.last_callback.unwrap() <= tc, "{what}: a callback after teardown complete");
    match disruption {
        Disruption::Stop => {
            assert_eq!(seen.stop, Some(StopResult::Unloaded), "{what}");
            // docs/semantics.md "unload": the stop is mandatory; the unload callback, the
            // teardown, and only then the driver goes (DriverUnload deletes the devices after
            // the outstanding operations drained).
            assert_eq!(l.unload_callback.len(), 1, "{what}");
            assert_eq!(l.unload.len(), 1, "{what}");
            assert!(l.unload_callback[0] < ts && tc < l.unload[0], "{what}");
        }
        Disruption::Dismount => {
            assert_eq!(seen.dismount, Some(Status::SUCCESS), "{what}");
            assert_eq!(l.dismounted.len(), 1, "{what}");
            // docs/semantics.md "dismount": the legacy backend tears the instance down from
            // FastIoDetachDevice, when the dismounted volume's device goes, which is when its
            // last file closes: after every request on it, the handles' cleanups and closes
            // included (the minifilter's teardown comes with the FSCTL itself).
            assert!(l.dismounted[0] < ts, "{what}");
            assert!(l.completions.iter().all(|(p, _, _)| *p < ts), "{what}");
        }
    }
    let mut tally = Tally::default();
    for &(p, io, outcome) in &l.pres {
        let io = io.expect("operations resolve to their request");
        let (done, status) = l.completion(io);
        let (resumed, posts) = l.after_pre(p, io);
        let mut sent = p;
        if outcome == "FLT_PREOP_PENDING" {
            tally.pended += 1;
            // A pended IRP resumes exactly once, from its timer, before it completes.
            assert_eq!(resumed.len(), 1, "{what}: io{} resumed {resumed:?}", io.0);
            let r = resumed[0];
            assert!(p < r.0 && r.0 < done, "{what}: io{}", io.0);
            assert_eq!(r.2, "FLT_PREOP_SUCCESS_WITH_CALLBACK", "{what}");
            sent = r.0;
            let disrupted = l.unload_callback.first().or(l.dismounted.first()).copied();
            if disrupted.is_some_and(|d| p < d && d < r.0) {
                tally.pended_at_disruption += 1;
            }
            if r.0 > ts {
                // Still pended when the teardown started: the teardown waited for it.
                tally.pended_at_teardown += 1;
            }
            let expected = if l.dismounted.first().is_some_and(|d| *d < r.0) {
                Status::VOLUME_DISMOUNTED
            } else {
                Status::SUCCESS
            };
            assert_eq!(status, expected, "{what}: io{}", io.0);
        } else {
            assert!(resumed.is_empty(), "{what}");
            assert_eq!(outcome, "FLT_PREOP_SUCCESS_WITH_CALLBACK", "{what}");
        }
        // Exactly one post per pre, never early: the legacy model cannot drain (docs/semantics.md
        // "draining"); it comes with the completion, before the request completes and before
        // the teardown completes.
        assert_eq!(posts.len(), 1, "{what}: io{} posts {posts:?}", io.0);
        let (q, _, draining) = *posts[0];
        assert!(!draining, "{what}: io{}", io.0);
        assert!(sent < q && q < done && q < tc, "{what}: io{}", io.0);
        if sent < ts && done > ts && outcome != "FLT_PREOP_PENDING" {
            tally.in_flight_at_teardown += 1;
            let lock_io = seen.results.iter().find(|r| r.0 == "lock (waits)").and_then(|r| r.2);
            if lock_io == Some(io) {
                tally.waiting_lock_at_teardown += 1;
            }
        }
    }
    assert_eq!(seen.results.len(), 4, "{what}");
    let lock_io = seen.results.iter().find(|r| r.0 == "lock (waits)").unwrap().2.unwrap();
    let (_, lock_status) = l.completion(lock_io);
    assert!(
        matches!(lock_status, Status::SUCCESS | Status::VOLUME_DISMOUNTED),
        "{what}: {lock_status:?}"
    );
    let main = l.completion(main).1;
    assert!(matches!(main, Status::SUCCESS | Status::VOLUME_DISMOUNTED), "{what}: {main:?}");
    if disruption == Disruption::Dismount {
        // The driver of a dismounted volume can still be stopped, leaving nothing.
        assert_eq!(m.stop(NAME), StopResult::Unloaded, "{what}");
        m.settle();
        assert!(common::findings(&m).is_empty(), "{what}: {:?}", common::findings(&m));
    }
    // Balanced: no IRP, no open handle, no device or pool of the driver.
    m.kernel(|k| {
        assert!(k.irps.map.is_empty(), "{what}: {} IRPs left", k.irps.map.len());
        assert!(k.files.handles.iter().flatten().all(|h| !h.open), "{what}: handles left");
        assert!(
            k.objects
                .devices
                .iter()
                .all(|d| d.deleted || k.objects.driver(d.driver).service != NAME),
            "{what}: a device of the driver is left"
        );
        let images: Vec<_> = (0..k.images.len())
            .filter(|&i| k.images[i].name == NAME)
            .map(|i| fsfilter_sim::ids::ImageId(i as u32))
            .collect();
        assert!(images.iter().all(|&i| k.pool_outstanding(i).0 == 0), "{what}: pool left");
    });
    assert!(m.volume_stack_drivers(c).iter().all(|d| d != NAME), "{what}");
    tally
}

fn check_seeds(disruption: Disruption) {
    let mut totals = Tally::default();
    for seed in 0..SEEDS {
        let t = check(seed, disruption);
        totals.pended += t.pended;
        totals.pended_at_teardown += t.pended_at_teardown;
        totals.pended_at_disruption += t.pended_at_disruption;
        totals.in_flight_at_teardown += t.in_flight_at_teardown;
        totals.waiting_lock_at_teardown += t.waiting_lock_at_teardown;
    }
    eprintln!(
        "{disruption:?}: {SEEDS} seeds, {} pended reads, {} still pended at the {disruption:?}, \
         {} at teardown, {} \
         operations in flight at teardown ({} of them the waiting lock)",
        totals.pended,
        totals.pended_at_disruption,
        totals.pended_at_teardown,
        totals.in_flight_at_teardown,
        totals.waiting_lock_at_teardown
    );
    if disruption == Disruption::Stop {
        // The seeds cover operations pended across the teardown and an asynchronously completed
        // one (the waiting lock) that the unload waited for.
        assert!(totals.pended_at_teardown >= 5, "{}", totals.pended_at_teardown);
        assert!(totals.waiting_lock_at_teardown >= 3, "{}", totals.waiting_lock_at_teardown);
    }
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
