//! The tally sample in the lab (lab/scenarios/tally.toml): a legacy and a minifilter tally count
//! the same workload, each in its own stream contexts, and note the same tallies at the same
//! cleanups, the reset of a tally by a create that overwrites its stream included; the same with
//! either filter under the other model (`Scenario::with_model`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter::Status;
use fsfilter_lab::run::{Run, run};
use fsfilter_lab::scenario::{Model, Scenario, parse};
use fsfilter_sim::{Callback, EventKind};

fn scenario() -> Scenario {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/tally.toml");
    parse(path, &std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `driver`'s notes: (step, text).
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

/// What each filter notes: `report.txt`'s tally at its second handle's cleanup (step 12); at the
/// overwrite of `notes.txt` (step 13, a create with `disposition = "overwrite"` while its
/// overlapped handle is open), the tally it restarts; then, at the cleanup of the overwriting
/// handle (step 16, the last: the first handle's, step 15, is not), the new tally of `notes.txt`
/// (its open and a cached write), with the totals of the two contexts freed so far:
/// `report.txt`'s, freed when its stream was torn down at the close of step 12, and the one the
/// overwrite deleted.
const NOTES: [(u32, &str); 4] = [
    (
        12,
        "tally: last handle of stream 1: opens 2; reads 4 (fast 1, noncached 1) 105 B; writes 1 \
         (fast 1, noncached 0) 9 B; paging reads 0 (0 B), writes 1 (512 B); fast I/O declined 0",
    ),
    (
        13,
        "tally: overwritten, restarting stream 2: opens 1; reads 2 (fast 0, noncached 1) 21 B; \
         writes 0 (fast 0, noncached 0) 0 B; paging reads 0 (0 B), writes 0 (0 B); fast I/O \
         declined 0",
    ),
    (
        16,
        "tally: last handle of stream 3: opens 1; reads 0 (fast 0, noncached 0) 0 B; writes 1 \
         (fast 0, noncached 0) 13 B; paging reads 0 (0 B), writes 0 (0 B); fast I/O declined 0",
    ),
    (
        16,
        "tally: freed 2 of 3 contexts, 0 untracked: opens 3; reads 6 (fast 1, noncached 2) 126 B; \
         writes 1 (fast 1, noncached 0) 9 B; paging reads 0 (0 B), writes 1 (512 B); fast I/O \
         declined 0",
    ),
];

fn expected() -> Vec<(u32, String)> {
    NOTES.iter().map(|(step, text)| (*step, (*text).to_owned())).collect()
}

#[test]
fn both_models_note_the_same_tallies_of_the_same_workload() {
    let r = run(&scenario());
    assert!(!r.has_findings());
    assert!(
        r.steps.iter().all(|s| matches!(s.status, Status::SUCCESS | Status::PENDING)),
        "{:?}",
        r.steps
    );
    assert_eq!(notes(&r, "TallyLegacy"), expected());
    assert_eq!(notes(&r, "TallyMini"), expected());
    // The overwrite's create says what it did: the JSON's `creates`, the text's result.
    assert_eq!(r.creates.len(), 1, "{:?}", r.creates);
    assert_eq!((r.creates[0].step, r.creates[0].result()), (13, Some("FILE_OVERWRITTEN")));
}

#[test]
fn the_tallies_are_the_same_with_either_filter_under_either_model() {
    let s = scenario();
    for (driver, model) in [("TallyLegacy", Model::Minifilter), ("TallyMini", Model::Legacy)] {
        let r = run(&s.with_model(driver, model));
        assert!(!r.has_findings(), "{driver} {model:?}");
        for d in ["TallyLegacy", "TallyMini"] {
            assert_eq!(notes(&r, d), expected(), "{d}, with {driver} as {model:?}");
        }
    }
}

/// lab/scenarios/streams.toml: `doc.txt` and two of its named streams are three streams, each
/// tallied in its own context and noted at its own last cleanup, alike under both models; the
/// deleted stream (`delete_on_close`) is noted at its cleanup, its context freed with it, and
/// an open of it afterwards finds no such stream.
#[test]
fn a_file_and_its_named_streams_are_tallied_apart_under_both_models() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/streams.toml");
    let s = parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    let r = run(&s);
    assert!(!r.has_findings());
    let legacy = notes(&r, "TallyLegacy");
    assert_eq!(legacy, notes(&r, "TallyMini"));
    let last: Vec<(u32, &str)> = legacy
        .iter()
        .filter(|(_, t)| t.starts_with("tally: last handle"))
        .map(|(step, t)| (*step, t.split(':').nth(1).unwrap_or_default()))
        .collect();
    // summary (stream 3) at its close, its second open (stream 4, deleted) at its own, author
    // (stream 2), then the file (stream 1).
    assert_eq!(
        last,
        [
            (9, " last handle of stream 3"),
            (11, " last handle of stream 4"),
            (15, " last handle of stream 2"),
            (16, " last handle of stream 1"),
        ]
    );
    assert!(legacy.iter().any(|(step, t)| *step == 15 && t.contains("freed 2 of 4 contexts")));
    assert_eq!(r.steps[12].status, Status::OBJECT_NAME_NOT_FOUND);
    assert!(r.steps.iter().enumerate().all(|(i, s)| i == 12 || s.status == Status::SUCCESS));
    // The file's streams, listed (`class = "stream"`, the document's `streams`): all three, then
    // the two left once summary is deleted; each with its size.
    let listed: Vec<(u32, Vec<(&str, i64)>)> = r
        .streams
        .iter()
        .map(|q| (q.step, q.entries.iter().map(|e| (e.name.as_str(), e.size)).collect()))
        .collect();
    let (file, author) = (("::$DATA", 46), (":author:$DATA", 27));
    assert_eq!(listed, [(8, vec![file, author, (":summary:$DATA", 23)]), (14, vec![file, author])]);
}
