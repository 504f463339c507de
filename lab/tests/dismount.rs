//! A dismount step: the caller lets go of its handles on the volume, so the cleanups and closes
//! reach the dismounted stack and its devices go with the last file object (facts.md §1.7);
//! before, the lab forgot the handles and the dismounted volume's devices stayed forever.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::{run, scenario};
use fsfilter_sim::EventKind;

const SCENARIO: &str = r#"
name = "dismount-with-open-files"
seed = 1

[[volume]]
name = "F:"
filesystem = "fat"
files = { "f.txt" = "fat" }

[[driver]]
name = "Legacy"
sample = "probe"
model = "legacy"
start = "boot"
group = "FSFilter Activity Monitor"

[[step]]
action = "io"
volume = "F:"
op = "read"
path = "f.txt"

[[step]]
action = "dismount"
volume = "F:"
"#;

#[test]
fn a_dismount_closes_the_callers_handles_on_the_volume() {
    let s = scenario::parse("dismount.toml", SCENARIO).unwrap();
    let (r, (open_handles, events)) = run::run_inspect(&s, |m| {
        let open = m.kernel(|k| k.files.handles.iter().filter(|h| h.is_some()).count());
        (open, m.events())
    });
    assert!(!r.has_findings());
    let dismounted = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::Dismounted { .. }))
        .expect("the dismount happened");
    let after: Vec<fsfilter::MajorFunction> = events[dismounted..]
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::IoStart { major, .. } => Some(*major),
            _ => None,
        })
        .collect();
    assert!(after.contains(&fsfilter::MajorFunction::Cleanup), "{after:?}");
    // Two cleanups after the dismount: the dismount's own volume handle, and the caller's file.
    let cleanups = after.iter().filter(|m| **m == fsfilter::MajorFunction::Cleanup).count();
    assert_eq!(cleanups, 2, "{after:?}");
    assert_eq!(open_handles, 0, "a handle of the caller was forgotten, never closed");
}
