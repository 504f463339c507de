//! The `process` key of io and connect steps (scenario.md's extension, docs/simulator.md
//! "Processes"): the step runs in that user process (made at its first naming, 0x1004 onwards),
//! its text says so, and the connection's later steps run in it too; `user` is the default.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter::Status;
use fsfilter_lab::run::{run, run_inspect};
use fsfilter_lab::scenario::parse;
use fsfilter_sim::ProcessId;

/// A gate minifilter served by a connection of `svc` that denies every open it is asked about,
/// and opens by `editor`, by `svc` (not asked: rule 26) and by the default process.
const SCENARIO: &str = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "a.txt" = "a", "b.txt" = "b" }

[[driver]]
name = "Gate"
sample = "gate"
model = "minifilter"
start = "demand"
group = "FSFilter Anti-Virus"
altitude = "323060"

[[step]]
action = "load"
driver = "Gate"

[[step]]
action = "connect"
driver = "Gate"
client = "svc"
process = "svc"

[[step]]
action = "serve"
client = "svc"
reply = "deny"

[[step]]
action = "io"
volume = "C:"
op = "create"
path = "a.txt"
process = "editor"

[[step]]
action = "io"
volume = "C:"
op = "create"
path = "b.txt"
process = "svc"

[[step]]
action = "io"
volume = "C:"
op = "create"
path = "b.txt"
handle = "second"
process = "user"
"#;

#[test]
fn steps_run_in_the_processes_they_name_made_in_order_of_first_naming() {
    let s = parse("processes.toml", SCENARIO).unwrap();
    let (r, ids) =
        run_inspect(&s, |m| ["user", "svc", "editor", "nobody"].map(|name| m.process(name)));
    assert!(!r.has_findings());
    assert_eq!(
        ids,
        [Some(ProcessId(0x1000)), Some(ProcessId(0x1004)), Some(ProcessId(0x1008)), None]
    );
    let what: Vec<&str> = r.steps.iter().map(|o| o.what.as_str()).collect();
    assert!(what[1].ends_with(" in process svc"), "{what:?}");
    assert!(what[3].ends_with(" in process editor"), "{what:?}");
    assert!(what[4].ends_with(" in process svc"), "{what:?}");
    assert!(!what[5].contains("in process"), "`user` is the default process: {what:?}");
    assert!(!what[2].contains("in process"), "a serve step names no process: {what:?}");
    // The gate asks about every open but the service's own, which it can tell only if the step
    // ran in the service's process: editor's and the default process's are denied.
    let statuses: Vec<Status> = r.steps.iter().skip(3).map(|o| o.status).collect();
    assert_eq!(statuses, [Status::ACCESS_DENIED, Status::SUCCESS, Status::ACCESS_DENIED]);
}

#[test]
fn naming_the_default_process_changes_nothing() {
    let with = parse("p.toml", SCENARIO).unwrap();
    let without = parse("p.toml", &SCENARIO.replace("process = \"user\"\n", "")).unwrap();
    let doc = |s| serde_json::to_string(&fsfilter_lab::json::document(&run(s))).unwrap();
    assert_eq!(doc(&with), doc(&without));
}
