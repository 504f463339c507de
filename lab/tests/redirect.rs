//! The redirect sample in the lab (lab/scenarios/redirect.toml): a minifilter and a legacy
//! redirect send opens on C: to D: by `STATUS_REPARSE`; who sees the first create (on C:, above
//! the redirecting filter only) and who sees the second (on D:, everybody); the text report's
//! `(on D:)`, the JSON's `reparses`; and the same redirection with the filter under either model
//! (`Run::with_model`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter::{MajorFunction, Status};
use fsfilter_lab::run::{ReparseOutcome, Run, run};
use fsfilter_lab::scenario::{Model, Scenario, parse};
use fsfilter_sim::{Callback, EventKind, RequestRef};

fn scenario() -> Scenario {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/redirect.toml");
    parse(path, &std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The requests of step `step`: (request, volume, operation).
fn requests(r: &Run, step: u32) -> Vec<(RequestRef, String, MajorFunction)> {
    r.events
        .iter()
        .filter(|e| e.step == Some(step))
        .filter_map(|e| match &e.kind {
            EventKind::IoStart { io, volume, major, .. } => {
                Some((*io, volume.as_str().to_owned(), *major))
            }
            _ => None,
        })
        .collect()
}

/// How request `io` completed.
fn completed(r: &Run, io: RequestRef) -> Status {
    r.events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::IoComplete { io: i, status, .. } if *i == io => Some(*status),
            _ => None,
        })
        .unwrap()
}

/// Who ran a pre callback for request `io` (and its create, for a query's long way), in order,
/// with the outcome's short name when it is not a pass.
fn pres(r: &Run, io: RequestRef, major: MajorFunction) -> Vec<String> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback {
                driver,
                io: Some(i),
                callback: Callback::Pre { major: m, outcome, .. },
                ..
            } if *i == io && *m == major => Some(match *outcome {
                "FLT_PREOP_COMPLETE" => format!("{driver} completes"),
                "FLT_PREOP_DISALLOW_FASTIO" => format!("{driver} disallows"),
                _ => driver.as_str().to_owned(),
            }),
            _ => None,
        })
        .collect()
}

/// The statuses the post callbacks of request `io`'s creates saw, by driver.
fn posts(r: &Run, io: RequestRef) -> Vec<(String, Status)> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback {
                driver,
                io: Some(i),
                callback: Callback::Post { major: MajorFunction::Create, status, .. },
                ..
            } if *i == io => Some((driver.as_str().to_owned(), *status)),
            _ => None,
        })
        .collect()
}

fn notes(r: &Run, driver: &str) -> Vec<(u32, String)> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback { driver: d, callback: Callback::Note { text }, .. }
                if d.as_str() == driver =>
            {
                Some((e.step.unwrap(), text.clone()))
            }
            _ => None,
        })
        .collect()
}

const REDIRECTED: &str = redirect::notes::REDIRECTED;

#[test]
fn each_redirect_sends_its_names_to_d_and_only_the_filters_above_it_see_the_first_create() {
    let r = run(&scenario());
    assert!(!r.has_findings());
    assert!(r.steps.iter().all(|s| s.status == Status::SUCCESS), "{:?}", r.steps);
    let create = MajorFunction::Create;
    let everyone = ["Watcher", "Monitor", "RedirectLegacy", "RedirectMini", "Below"];

    // C:\old\a.txt: the minifilter redirect, in frame 0; Below, under it, never sees C:'s create.
    let q = requests(&r, 2);
    assert_eq!(
        q.iter().map(|(_, v, m)| (v.as_str(), *m)).collect::<Vec<_>>(),
        [("C:", create), ("D:", create), ("D:", MajorFunction::Read)]
    );
    let (first, second) = (q[0].0, q[1].0);
    assert_eq!(completed(&r, first), Status::REPARSE);
    assert_eq!(
        pres(&r, first, create),
        ["Watcher", "Monitor", "RedirectLegacy", "RedirectMini completes"]
    );
    // The posts above the redirect see STATUS_REPARSE: a create that opened nothing.
    let reparse = |d: &str| (d.to_owned(), Status::REPARSE);
    assert_eq!(posts(&r, first), [reparse("Monitor"), reparse("Watcher")]);
    assert_eq!(pres(&r, second, create), everyone);
    assert_eq!(completed(&r, second), Status::SUCCESS);

    // C:\docs\plan.txt: the legacy redirect, between the frames; Monitor (frame 1) sees C:'s
    // create, RedirectMini and Below (frame 0) only D:'s.
    let q = requests(&r, 3);
    assert_eq!(q.iter().map(|(_, v, _)| v.as_str()).collect::<Vec<_>>(), ["C:", "D:", "D:"]);
    assert_eq!(pres(&r, q[0].0, create), ["Watcher", "Monitor", "RedirectLegacy completes"]);
    assert_eq!(posts(&r, q[0].0), [reparse("Monitor"), reparse("Watcher")]);
    assert_eq!(pres(&r, q[1].0, create), everyone);

    // C:\older\x.txt only shares a prefix: one create, on C:, through everyone.
    let q = requests(&r, 4);
    assert_eq!(q.iter().map(|(_, v, _)| v.as_str()).collect::<Vec<_>>(), ["C:", "C:"]);
    assert_eq!(pres(&r, q[0].0, create), everyone);

    // The query: C:'s fast query open disallowed, its create IRP redirected, D:'s fast query
    // open answers.
    let q = requests(&r, 5);
    let query = MajorFunction::NetworkQueryOpen;
    assert_eq!(
        q.iter().map(|(_, v, m)| (v.as_str(), *m)).collect::<Vec<_>>(),
        [("C:", query), ("D:", query)]
    );
    assert_eq!(
        pres(&r, q[0].0, query),
        ["Watcher", "Monitor", "RedirectLegacy", "RedirectMini disallows"]
    );
    assert_eq!(
        pres(&r, q[0].0, create),
        ["Watcher", "Monitor", "RedirectLegacy", "RedirectMini completes"]
    );
    assert_eq!(pres(&r, q[1].0, query), everyone);
    assert_eq!(pres(&r, q[1].0, create), Vec::<String>::new());

    // Each redirection left its filter's note; the reparsed opens, in the JSON's `reparses`.
    let fast = redirect::notes::FAST_IO_REFUSED;
    assert_eq!(
        notes(&r, "RedirectMini"),
        [(2, REDIRECTED.into()), (5, fast.into()), (5, REDIRECTED.into())]
    );
    assert_eq!(notes(&r, "RedirectLegacy"), [(3, REDIRECTED.into())]);
    let steps: Vec<(u32, u32)> = r.reparses.iter().map(|p| (p.step, p.count)).collect();
    assert_eq!(steps, [(2, 1), (3, 1), (5, 1)]);
    let document = fsfilter_lab::json::document(&r);
    let reparses = document["reparses"].as_array().unwrap();
    assert_eq!(reparses.len(), 3);
    assert!(reparses.iter().all(|p| p["volume"] == "D:" && p["count"] == 1), "{reparses:?}");
    assert_eq!(reparses[0]["io"], second.0);
}

#[test]
fn the_text_report_names_the_volume_of_each_reparsed_request() {
    let r = run(&scenario());
    let text = fsfilter_lab::text::report(&scenario(), &r);
    let step = text.split("  [2] ").nth(1).unwrap().split("  [3] ").next().unwrap();
    assert!(step.contains("request 0 IRP_MJ_CREATE:\n"), "{step}");
    assert!(step.contains("-> completed STATUS_REPARSE\n"), "{step}");
    assert!(step.contains("request 1 IRP_MJ_CREATE (on D:):\n"), "{step}");
    assert!(step.contains("request 2 IRP_MJ_READ (on D:):\n"), "{step}");
    // A step whose requests all went to its own volume reads as before.
    let older = text.split("  [4] ").nth(1).unwrap().split("  [5] ").next().unwrap();
    assert!(!older.contains("(on "), "{older}");
}

#[test]
fn the_redirection_is_the_same_with_the_filter_under_either_model() {
    // RedirectMini as a legacy filter, RedirectLegacy as a minifilter: each still redirects its
    // names to D:, only who sits above it on C: changes.
    let s = scenario();
    for (driver, step) in [("RedirectMini", 2), ("RedirectLegacy", 3)] {
        for model in [Model::Legacy, Model::Minifilter] {
            let r = run(&s.with_model(driver, model));
            assert!(!r.has_findings(), "{driver} {model:?}");
            let outcome = r.reparses.iter().find(|p| p.step == step);
            assert!(
                matches!(outcome, Some(ReparseOutcome { count: 1, .. })),
                "{driver} {model:?}: {:?}",
                r.reparses
            );
            let q = requests(&r, step);
            assert_eq!(q[0].1, "C:");
            assert_eq!(completed(&r, q[0].0), Status::REPARSE, "{driver} {model:?}");
            assert_eq!(q[1].1, "D:");
            assert_eq!(completed(&r, q[1].0), Status::SUCCESS, "{driver} {model:?}");
            let done = pres(&r, q[0].0, MajorFunction::Create);
            assert_eq!(done.last().unwrap(), &format!("{driver} completes"), "{model:?}");
            assert_eq!(notes(&r, driver)[0], (step, REDIRECTED.into()));
        }
    }
}
