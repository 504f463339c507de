//! lab/scenarios/removal.toml: the PnP manager removes volumes under the spy in both models
//! (docs/simulator.md, "Removal of a volume (PnP)"; docs/semantics.md, row removal).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter::{MajorFunction, Status, TeardownFlags};
use fsfilter_lab::{run, scenario};
use fsfilter_sim::{Callback, EventKind};

fn removal() -> run::Run {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/removal.toml");
    let s = scenario::parse("removal.toml", &std::fs::read_to_string(path).unwrap()).unwrap();
    run::run(&s)
}

/// What `driver` saw of removals, by volume: each PnP pre's minor, each teardown start's reason,
/// and whether it was asked to let its instance go (query-teardown).
fn seen(r: &run::Run, driver: &str, volume: &str) -> Vec<String> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback { driver: d, volume: Some(v), callback, .. }
                if d == driver && v.as_str() == volume =>
            {
                match callback {
                    Callback::Pre { major: MajorFunction::Pnp, minor, .. } => {
                        Some(format!("pnp {minor:#04x}"))
                    }
                    Callback::InstanceQueryTeardown { .. } => Some("query teardown".into()),
                    Callback::TeardownStart { reason } => Some(format!("teardown {reason:?}")),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[test]
fn both_spies_see_the_same_removal_minors_and_teardowns() {
    let r = removal();
    let status = |i: usize| r.steps[i].status;
    // F:: refused while report.txt is open, then removed; E:: surprise-removed.
    assert_eq!(status(5), Status::ACCESS_DENIED);
    assert_eq!(status(6), Status::SUCCESS, "the file still reads after the refusal");
    assert_eq!(status(8), Status::SUCCESS);
    assert_eq!(status(12), Status::SUCCESS);
    let dismount = format!("teardown {:?}", TeardownFlags::VOLUME_DISMOUNT);
    for spy in ["SpyMini", "SpyLegacy"] {
        assert_eq!(
            seen(&r, spy, "F:"),
            ["pnp 0x01", "pnp 0x03", "pnp 0x01", dismount.as_str()],
            "{spy}"
        );
        assert_eq!(seen(&r, spy, "E:"), ["pnp 0x17", dismount.as_str()], "{spy}");
    }
    let removed = r
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::System { what: "device_removed", .. }))
        .count();
    assert_eq!(removed, 2);
    assert!(!r.has_findings());
}

/// The text report names each removal IRP's minor in the pre lines, as `compare` does: a
/// refused query-remove and its cancel, then the query-remove that went through.
#[test]
fn the_text_report_names_the_removal_minors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/removal.toml");
    let s = scenario::parse("removal.toml", &std::fs::read_to_string(path).unwrap()).unwrap();
    let r = run::run(&s);
    let report = fsfilter_lab::text::report(&s, &r);
    let lines: Vec<&str> = report.lines().filter(|l| l.contains("SpyLegacy pre ")).collect();
    let minors: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            ["query_remove", "cancel_remove", "surprise_removal"]
                .into_iter()
                .find(|m| l.contains(&format!("pre {m} ")))
        })
        .collect();
    assert_eq!(
        minors,
        ["query_remove", "cancel_remove", "query_remove", "surprise_removal"],
        "{report}"
    );
    // Other operations' pre lines carry no minor.
    assert!(lines.iter().any(|l| l.trim() == "SpyLegacy pre SUCCESS_WITH_CALLBACK"), "{report}");
}
