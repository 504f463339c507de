//! Regression tests for what the randomized stress found, and proof that the checker fails when
//! an invariant is broken (tampered event lists and end states).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use fsfilter::{MajorFunction, Status};
use fsfilter_lab::scenario::{Model, parse};
use fsfilter_sim::{Callback, Event, EventKind, RequestRef, Rule};
use fsfilter_stress::check::{self, DriverEnd, EndState, ImageEnd};
use fsfilter_stress::run_checked;

fn callbacks(events: &[Event], driver: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback { driver: d, callback, .. } if d == driver => match callback {
                Callback::Pre { major, outcome, .. } => Some(format!("pre {major} {outcome}")),
                Callback::Post { major, status, .. } => Some(format!("post {major} {status}")),
                Callback::Resumed { outcome } => Some(format!("resumed {outcome}")),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Runs `scenario` and asserts every invariant but the end-of-run balance (these timelines do
/// not stop their drivers).
fn checked(scenario: &fsfilter_lab::scenario::Scenario, what: &str) -> fsfilter_lab::run::Run {
    let (run, _, violations) = run_checked(scenario);
    let violations: Vec<_> = violations.into_iter().filter(|v| v.invariant != "balance").collect();
    assert!(violations.is_empty(), "{what}: {violations:#?}");
    run
}

fn clean(text: &str, model: Model, driver: &str) -> Vec<String> {
    let s = parse("regression.toml", text).unwrap().with_model(driver, model);
    callbacks(&checked(&s, &format!("{model:?}")).events, driver)
}

#[test]
fn a_post_only_operation_reports_no_pre_callback_in_either_model() {
    // Found by the stress: the legacy backend reported a pre callback (FLT_PREOP_SUCCESS_WITH_
    // CALLBACK) for the scanner's post-only create and write, which the Filter Manager never
    // calls and the filter's logic never saw.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "a.txt" = "alpha" }
[[driver]]
name = "Scan"
sample = "scanner"
model = "minifilter"
start = "boot"
altitude = "328000"
[driver.parameters]
Pattern = "EVILPATTERN"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "a.txt"
[[step]]
action = "io"
volume = "C:"
op = "write"
path = "a.txt"
[[step]]
action = "io"
volume = "C:"
op = "close"
path = "a.txt"
"#;
    let legacy = clean(text, Model::Legacy, "Scan");
    let mini = clean(text, Model::Minifilter, "Scan");
    assert!(!legacy.iter().any(|c| c.starts_with("pre IRP_MJ_CREATE")), "{legacy:?}");
    assert!(!legacy.iter().any(|c| c.starts_with("pre IRP_MJ_WRITE")), "{legacy:?}");
    assert!(legacy.contains(&"post IRP_MJ_CREATE STATUS_SUCCESS".to_owned()), "{legacy:?}");
    assert_eq!(legacy, mini);
}

#[test]
fn a_resume_with_post_gets_none_without_a_registered_post_callback() {
    // Found by the stress: the probe with `Post = 0` and a `pend:` rule resumed its operations
    // with FLT_PREOP_SUCCESS_WITH_CALLBACK; the Filter Manager reported
    // POST_CALLBACK_NOT_REGISTERED and the legacy backend called a post callback the
    // registration does not have. A resume now follows rule 6 like a pre callback's answer.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "evil.com" = "x" }
[[driver]]
name = "P"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "370000"
[driver.parameters]
Post = 0
Rules = "pend:0 * *.com; pend:10 read"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "evil.com"
[[step]]
action = "io"
volume = "C:"
op = "read"
path = "evil.com"
mode = "noncached"
offset = 0
length = 512
[[step]]
action = "io"
volume = "C:"
op = "close"
path = "evil.com"
"#;
    for model in [Model::Legacy, Model::Minifilter] {
        let seen = clean(text, model, "P");
        assert!(seen.iter().all(|c| !c.starts_with("post")), "{model:?}: {seen:?}");
        assert!(
            seen.contains(&"resumed FLT_PREOP_SUCCESS_NO_CALLBACK".to_owned()),
            "{model:?}: {seen:?}"
        );
    }
}

#[test]
fn a_request_after_a_cleanup_step_opens_a_new_handle() {
    // Found by the stress: after an `io cleanup` step the lab kept using the cleaned-up handle
    // for the path, so the next request failed with STATUS_INVALID_HANDLE and an INVALID_HANDLE
    // finding. The caller now closes it and opens a new one.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "a.txt" = "alpha" }
[[step]]
action = "io"
volume = "C:"
op = "cleanup"
path = "a.txt"
[[step]]
action = "io"
volume = "C:"
op = "read"
path = "a.txt"
length = 5
[[step]]
action = "io"
volume = "C:"
op = "cleanup"
path = "a.txt"
[[step]]
action = "io"
volume = "C:"
op = "close"
path = "a.txt"
"#;
    let s = parse("regression.toml", text).unwrap();
    let (run, _, violations) = run_checked(&s);
    assert!(violations.is_empty(), "{violations:#?}");
    let statuses: Vec<Status> = run.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![Status::SUCCESS; 4]);
}

#[test]
fn a_file_a_filter_opened_keeps_the_dismounted_volume_device_until_it_closes() {
    // Found by the stress once the lab closed its handles on a dismounted volume: a create the
    // probe completed with success never reached NTFS, so NTFS deleted its volume device at the
    // dismount, and that file's close went to a deleted device (CALL_TO_DELETED_DEVICE). The file
    // object holds a reference on the VPB like any other: the device now stays until it closes.
    for model in [Model::Minifilter, Model::Legacy] {
        let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
[[driver]]
name = "Probe0"
sample = "probe"
model = "minifilter"
start = "boot"
group = "FSFilter Top"
altitude = "400000"
[driver.parameters]
Rules = "complete:STATUS_SUCCESS create *secret*"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "secret.txt"
[[step]]
action = "dismount"
volume = "C:"
[[step]]
action = "stop"
driver = "Probe0"
"#;
        let s = parse("regression.toml", text).unwrap().with_model("Probe0", model);
        let (run, _, violations) = run_checked(&s);
        assert!(violations.is_empty(), "{model:?}: {violations:#?}");
        let deleted = run.events.iter().position(
            |e| matches!(&e.kind, EventKind::System { what, .. } if *what == "volume_device_deleted"),
        );
        let last_close = run.events.iter().rposition(
            |e| matches!(&e.kind, EventKind::IoStart { major, .. } if *major == MajorFunction::Close),
        );
        assert!(deleted.is_some() && last_close.is_some(), "{model:?}");
        assert!(deleted > last_close, "{model:?}: the device went before the last close");
    }
}

#[test]
fn a_create_a_probe_completes_with_status_reparse_is_parsed_again_and_opens_nothing() {
    // The stress's probes complete some creates with STATUS_REPARSE (plan.rs, probe_parameters),
    // the file object's name unchanged: the I/O manager parses that name (\secret.txt) from the
    // root of the object namespace, where it names nothing (docs/simulator.md, "Reparse"). No
    // handle, no file object left, no finding, in either model; the other files open.
    for model in [Model::Minifilter, Model::Legacy] {
        let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "a.txt" = "alpha", "secret.txt" = "top secret" }
[[driver]]
name = "Probe0"
sample = "probe"
model = "minifilter"
start = "boot"
group = "FSFilter Top"
altitude = "400000"
[driver.parameters]
Rules = "complete:STATUS_REPARSE create *secret*"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "secret.txt"
[[step]]
action = "io"
volume = "C:"
op = "read"
path = "a.txt"
length = 5
[[step]]
action = "io"
volume = "C:"
op = "close"
path = "a.txt"
[[step]]
action = "stop"
driver = "Probe0"
"#;
        let s = parse("regression.toml", text).unwrap().with_model("Probe0", model);
        let (run, _, violations) = run_checked(&s);
        assert!(violations.is_empty(), "{model:?}: {violations:#?}");
        let statuses: Vec<Status> = run.steps.iter().map(|s| s.status).collect();
        assert_eq!(statuses[..2], [Status::OBJECT_NAME_NOT_FOUND, Status::SUCCESS], "{model:?}");
        let creates = run.events.iter().filter(|e| {
            matches!(&e.kind, EventKind::IoComplete { status, .. } if *status == Status::REPARSE)
        });
        assert_eq!(creates.count(), 1, "{model:?}");
    }
}

#[test]
fn a_legacy_stop_held_by_a_frame_survives_the_deletion_of_its_volume_device() {
    // Found by the stress (seed 0x5eed0b03): Passthrough2's stop is pending while a Filter
    // Manager frame sits above its device on C:. The dismount detaches the frame below and
    // Passthrough2 deletes its device there (FastIoDetachDevice). The backend's unload waited
    // for that deletion in progress (DEADLOCK twice), and the deletion ran inline, so the image
    // would have gone under the returning code once the pending DriverUnload ran inside it. The
    // deletion now runs from the device's work item and leaves the counts first. Since every
    // frame is on RAW's control devices (December 6, fifth session), frame 1 also sits above
    // Passthrough2's devices there, which never go: the stop stays pending for good, as a
    // legacy filter's below a frame does (facts.md §1.9, §2.2), and the unload never runs. The
    // run inside that deletion is `sim/tests/fltmgr_frames.rs::a_pending_stop_runs_the_unload_
    // inside_the_deletion_that_frees_the_last_device`'s.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "fat"
mount = "step"

[[driver]]
name = "Passthrough0"
sample = "passthrough"
model = "minifilter"
start = "boot"
group = "FSFilter Top"
altitude = "400000"

[[driver]]
name = "Passthrough1"
sample = "passthrough"
model = "minifilter"
start = "demand"
group = "FSFilter Top"
altitude = "400001"

[[driver]]
name = "Passthrough2"
sample = "passthrough"
model = "legacy"
start = "boot"
group = "FSFilter Activity Monitor"

[[driver]]
name = "Probe3"
sample = "probe"
model = "legacy"
start = "demand"
group = "FSFilter Activity Monitor"
[driver.parameters]
Attach = "cdrom,network"

[[driver]]
name = "Passthrough4"
sample = "passthrough"
model = "legacy"
start = "demand"
group = "FSFilter Top"

[[step]]
action = "load"
driver = "Probe3"

[[step]]
action = "load"
driver = "Passthrough4"

[[step]]
action = "stop"
driver = "Probe3"

[[step]]
action = "mount"
volume = "C:"

[[step]]
action = "load"
driver = "Passthrough1"

[[step]]
action = "stop"
driver = "Passthrough4"

[[step]]
action = "stop"
driver = "Probe3"

[[step]]
action = "stop"
driver = "Passthrough2"

[[step]]
action = "stop"
driver = "Passthrough1"

[[step]]
action = "stop"
driver = "Passthrough0"

[[step]]
action = "dismount"
volume = "C:"
"#;
    let s = parse("0x5eed0b03.toml", text).unwrap();
    let (run, end, violations) = run_checked(&s);
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(run.events.iter().all(|e| !matches!(e.kind, EventKind::Verifier { .. })));
    let unload = run.events.iter().find(|e| {
        matches!(&e.kind, EventKind::Callback { driver, callback: Callback::UnloadCallback { .. }, .. }
            if driver == "Passthrough2")
    });
    assert_eq!(unload, None, "frame 1 above it on RAW's control devices holds the stop");
    let deleted_at_dismount = run.events.iter().any(|e| {
        e.step == Some(10)
            && matches!(&e.kind, EventKind::Detached { driver, volume: Some(v) }
                if driver == "Passthrough2" && v == "C:")
    });
    assert!(deleted_at_dismount, "its C: device went at the dismount");
    let p2 = end.drivers.iter().find(|d| d.name == "Passthrough2").unwrap();
    assert_eq!(p2.state, "stop_pending", "{p2:#?}");
}

/// Whether `driver` has an instance on `volume` in the stack snapshot taken after step `index`
/// ran (`after_step[index + 1]`).
fn has_instance(run: &fsfilter_lab::run::Run, index: usize, volume: &str, driver: &str) -> bool {
    run.after_step[index + 1].volumes.iter().filter(|(v, _)| v == volume).any(|(_, stack)| {
        stack.iter().any(|e| match e {
            fsfilter_lab::run::StackEntry::Frame { instances, .. } => {
                instances.iter().any(|(d, _, _)| d == driver)
            }
            _ => false,
        })
    })
}

#[test]
fn a_filter_whose_frame_is_not_in_a_volume_stack_gets_no_instance_there() {
    // Found by the stress (FSFILTER_STRESS_SEED=0x5eed0601, 200,000 cases): a frame whose attach
    // to a new volume failed has no device in that stack, yet the Filter Manager set up the
    // instance of a filter of that frame loaded later all the same, an instance no request could
    // reach, and a manual attach answered STATUS_FLT_INSTANCE_NAME_COLLISION for it. A frame
    // without a device in a stack has no volume object there: no instance attaches, and a manual
    // attach answers STATUS_FLT_VOLUME_NOT_FOUND.
    //
    // Changed December 7: the seed's timeline, kept until then, had frame 1 refused above a
    // legacy filter whose stop was pending, on a device that filter made for a mount after the
    // stop was asked. Windows marks only the devices a driver has when its stop is asked
    // (IopUnloadDriver), so frame 1 now attaches there (legacy `attach.rs`
    // `a_device_made_while_its_stop_is_pending_takes_a_filter_above_it`). The refusal comes now
    // from C:'s volume device, which NTFS leaves initializing for 8.2 s after the mount
    // (facts.md §1.3, §1.5): frame 0, the lowest, retries for 3.5 s and gives up, the legacy
    // filter between the frames does too, and frame 1 attaches on one of its retries. So the
    // roles of the frames are swapped: Low (frame 0, unloaded first and loaded again after the
    // mount) is the filter without a frame in the stack, and Late (frame 1) shows that the
    // frame that did attach sets its instance up. Low is in the legacy filter's group, below
    // it: since every frame is on RAW's control devices, where a boot legacy filter sits above
    // frame 0, a minifilter above its altitude goes to frame 1.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
mount = "step"
initialize_late_ms = 8200
[[driver]]
name = "Legacy"
sample = "passthrough"
model = "legacy"
start = "boot"
group = "FSFilter Activity Monitor"
[[driver]]
name = "Low"
sample = "passthrough"
model = "minifilter"
start = "boot"
group = "FSFilter Activity Monitor"
altitude = "370000"
[[driver]]
name = "Late"
sample = "passthrough"
model = "minifilter"
start = "system"
group = "FSFilter Top"
altitude = "400001"
[[step]]
action = "unload"
driver = "Low"
[[step]]
action = "mount"
volume = "C:"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "a.txt"
[[step]]
action = "load"
driver = "Low"
[[step]]
action = "attach"
driver = "Low"
volume = "C:"
altitude = "370001"
[[step]]
action = "io"
volume = "C:"
op = "close"
path = "a.txt"
"#;
    let run = checked(&parse("regression.toml", text).unwrap(), "regression");
    assert_eq!(run.steps[1].status, Status::SUCCESS, "C: mounts");
    // Frame 0 and the legacy filter gave up on C:; frame 1 alone is above NTFS.
    use fsfilter_lab::run::StackEntry;
    let late = ("Late".to_owned(), "Late Instance".to_owned(), "400001".to_owned());
    let expected = [
        StackEntry::Frame { frame: 1, instances: vec![late] },
        StackEntry::FileSystem { driver: "Ntfs".to_owned() },
    ];
    let stacks: Vec<_> = run.after_step[2].volumes.iter().filter(|(v, _)| v == "C:").collect();
    assert!(matches!(&stacks[..], [(_, s)] if s[..] == expected), "{stacks:#?}");
    assert_eq!(run.steps[3].status, Status::SUCCESS, "Low loads again");
    assert!(!has_instance(&run, 3, "C:", "Low"), "no instance without its frame in the stack");
    let setups = run.events.iter().filter(|e| {
        e.step == Some(3)
            && matches!(&e.kind, EventKind::FltMgr { driver: Some(d), event: fsfilter_sim::FltEvent::InstanceSetup { .. }, .. } if d == "Low")
    });
    assert_eq!(setups.count(), 0, "the Filter Manager does not try to attach it there");
    assert_eq!(run.steps[4].status, Status::FLT_VOLUME_NOT_FOUND);
    assert!(callbacks(&run.events, "Low").is_empty(), "no request reaches Low");
    assert!(!callbacks(&run.events, "Late").is_empty(), "Late sees C:'s requests");
}

#[test]
fn a_dismount_completed_above_the_file_system_dismounts_only_the_frames_it_went_through() {
    // Found by the stress (FSFILTER_STRESS_SEED=0x5eed0602): a legacy probe completes every
    // request itself, the dismount request included, so frame 0 below it and the file system
    // never see it. The Filter Manager kept one dismounted flag for all frames: frame 1 tore its
    // instances down, as it should, and frame 0's instances stayed, but a filter of frame 0 could
    // no longer attach to the volume. Each frame now has its own view: frame 1's filter gets
    // STATUS_FLT_VOLUME_NOT_FOUND, frame 0's attaches. Low and Low2 are below the probe's
    // altitude, to stay in frame 0 (as in the test above).
    let text = r#"
[[volume]]
name = "D:"
filesystem = "fat"
[[driver]]
name = "Low"
sample = "passthrough"
model = "minifilter"
start = "boot"
group = "FSFilter Activity Monitor"
altitude = "370001"
[[driver]]
name = "Low2"
sample = "passthrough"
model = "minifilter"
start = "boot"
group = "FSFilter Activity Monitor"
altitude = "370002"
[[driver]]
name = "Probe"
sample = "probe"
model = "legacy"
start = "boot"
group = "FSFilter Activity Monitor"
[driver.parameters]
Rules = "complete:STATUS_SUCCESS *"
[[driver]]
name = "High"
sample = "passthrough"
model = "minifilter"
start = "auto"
group = "FSFilter Top"
altitude = "400000"
[[step]]
action = "dismount"
volume = "D:"
[[step]]
action = "attach"
driver = "High"
volume = "D:"
altitude = "400003"
[[step]]
action = "detach"
driver = "Low2"
volume = "D:"
[[step]]
action = "attach"
driver = "Low2"
volume = "D:"
"#;
    let run = checked(&parse("regression.toml", text).unwrap(), "regression");
    assert_eq!(run.steps[0].status, Status::SUCCESS, "the probe completes the dismount");
    assert!(!has_instance(&run, 0, "D:", "High"), "frame 1 saw the dismount");
    assert!(has_instance(&run, 0, "D:", "Low"), "frame 0 did not");
    assert_eq!(run.steps[1].status, Status::FLT_VOLUME_NOT_FOUND);
    assert_eq!(run.steps[2].status, Status::SUCCESS);
    assert_eq!(run.steps[3].status, Status::SUCCESS, "frame 0's view of the volume is live");
    assert!(has_instance(&run, 3, "D:", "Low2"));
}

// The checker fails when it should.

const TWO_FILTERS: &str = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "a.txt" = "alpha" }
[[driver]]
name = "Top"
sample = "passthrough"
model = "minifilter"
start = "boot"
altitude = "380000"
[[driver]]
name = "Low"
sample = "probe"
model = "legacy"
start = "boot"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "a.txt"
[[step]]
action = "io"
volume = "C:"
op = "close"
path = "a.txt"
[[step]]
action = "stop"
driver = "Top"
[[step]]
action = "stop"
driver = "Low"
[[step]]
action = "dismount"
volume = "C:"
"#;

fn baseline() -> (fsfilter_lab::scenario::Scenario, fsfilter_lab::run::Run, EndState) {
    let s = parse("tamper.toml", TWO_FILTERS).unwrap();
    let (run, end, violations) = run_checked(&s);
    assert!(violations.is_empty(), "the untampered run is clean: {violations:#?}");
    (s, run, end)
}

fn is_post(e: &Event, major: MajorFunction) -> bool {
    matches!(&e.kind, EventKind::Callback { callback: Callback::Post { major: m, .. }, .. } if *m == major)
}

fn is_pre(e: &Event, major: MajorFunction) -> bool {
    matches!(&e.kind, EventKind::Callback { callback: Callback::Pre { major: m, .. }, .. } if *m == major)
}

#[test]
fn a_missing_post_is_detected() {
    let (s, mut run, end) = baseline();
    let at = run.events.iter().position(|e| is_post(e, MajorFunction::Create)).unwrap();
    run.events.remove(at);
    let v = check::check(&s, &run, &end);
    assert!(v.iter().any(|v| v.invariant == "posts" && v.detail.contains("never came")), "{v:#?}");
}

#[test]
fn a_second_post_is_detected() {
    let (s, mut run, end) = baseline();
    let at = run.events.iter().position(|e| is_post(e, MajorFunction::Create)).unwrap();
    let copy = run.events[at].clone();
    run.events.insert(at + 1, copy);
    let v = check::check(&s, &run, &end);
    assert!(
        v.iter().any(|v| v.invariant == "posts" && v.detail.contains("without a pre")),
        "{v:#?}"
    );
}

#[test]
fn pre_callbacks_out_of_stack_order_are_detected() {
    let (s, mut run, end) = baseline();
    let pres: Vec<usize> = run
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| is_pre(e, MajorFunction::Create) && e.step == Some(0))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(pres.len(), 2, "both filters see the create");
    run.events.swap(pres[0], pres[1]);
    let v = check::check(&s, &run, &end);
    assert!(v.iter().any(|v| v.invariant == "order" && v.detail.contains("top down")), "{v:#?}");
}

#[test]
fn post_callbacks_out_of_stack_order_are_detected() {
    let (s, mut run, end) = baseline();
    let posts: Vec<usize> = run
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| is_post(e, MajorFunction::Create) && e.step == Some(0))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(posts.len(), 2, "both filters get the post");
    run.events.swap(posts[0], posts[1]);
    let v = check::check(&s, &run, &end);
    assert!(v.iter().any(|v| v.invariant == "order" && v.detail.contains("bottom up")), "{v:#?}");
}

fn is_teardown(e: &Event, complete: bool) -> bool {
    matches!(
        &e.kind,
        EventKind::Callback { callback: Callback::TeardownComplete { .. }, .. } if complete
    ) || matches!(
        &e.kind,
        EventKind::Callback { callback: Callback::TeardownStart { .. }, .. } if !complete
    )
}

#[test]
fn a_teardown_complete_never_called_is_detected() {
    // A backend that skipped `instance_teardown_complete` (legacy/src/attach.rs
    // `teardown_complete`) passed the stress before the instances invariant: nothing leaked and
    // no verifier rule covers the filter's own callbacks.
    let (s, mut run, end) = baseline();
    let at = run.events.iter().position(|e| is_teardown(e, true)).unwrap();
    run.events.remove(at);
    let v = check::check(&s, &run, &end);
    assert!(
        v.iter().any(|v| v.invariant == "instances" && v.detail.contains("never completed")),
        "{v:#?}"
    );
}

#[test]
fn a_teardown_without_its_start_or_twice_is_detected() {
    let (s, run, end) = baseline();
    let mut no_start = run.clone();
    let at = no_start.events.iter().position(|e| is_teardown(e, false)).unwrap();
    no_start.events.remove(at);
    let v = check::check(&s, &no_start, &end);
    assert!(
        v.iter().any(|v| v.invariant == "instances" && v.detail.contains("no teardown started")),
        "{v:#?}"
    );
    let mut twice = run;
    let at = twice.events.iter().position(|e| is_teardown(e, false)).unwrap();
    let copy = twice.events[at].clone();
    twice.events.insert(at + 1, copy);
    let v = check::check(&s, &twice, &end);
    assert!(
        v.iter().any(|v| v.invariant == "instances" && v.detail.contains("no instance set up")),
        "{v:#?}"
    );
}

#[test]
fn an_instance_of_a_stopped_driver_never_torn_down_is_detected() {
    let (s, mut run, end) = baseline();
    run.events.retain(|e| !is_teardown(e, false) && !is_teardown(e, true));
    let v = check::check(&s, &run, &end);
    assert!(
        v.iter().any(|v| v.invariant == "instances" && v.detail.contains("never torn down")),
        "{v:#?}"
    );
}

#[test]
fn a_resume_without_a_pended_pre_is_detected() {
    let mut v = Vec::new();
    let event = Event {
        seq: 0,
        step: Some(0),
        time: 0,
        kind: EventKind::Callback {
            driver: "P".into(),
            volume: Some("C:".into()),
            io: Some(RequestRef(1)),
            callback: Callback::Resumed { outcome: "FLT_PREOP_SUCCESS_WITH_CALLBACK" },
        },
    };
    check::posts(&[event], |_, _| false, &mut v);
    assert!(v.iter().any(|v| v.detail.contains("no pended pre")), "{v:#?}");
}

#[test]
fn a_verifier_finding_is_detected() {
    let (s, mut run, end) = baseline();
    run.events.push(Event {
        seq: 1_000_000,
        step: Some(1),
        time: 0,
        kind: EventKind::Verifier {
            driver: Some("Low".into()),
            rule: Rule::PoolLeaked,
            message: "tampered".into(),
        },
    });
    let v = check::check(&s, &run, &end);
    assert!(v.iter().any(|v| v.invariant == "findings" && v.step == Some(1)), "{v:#?}");
}

#[test]
fn leaks_and_drivers_left_running_are_detected() {
    let (s, run, mut end) = baseline();
    assert!(end.drivers.iter().all(|d| d.state == "stopped"), "{end:#?}");
    assert!(end.drivers.iter().all(|d| d.images.iter().all(|i| !i.loaded)), "{end:#?}");
    end.drivers[0].images[0] = ImageEnd {
        loaded: false,
        pool_blocks: 1,
        pool_bytes: 64,
        live_devices: 0,
        device_refs: 0,
        linked_contexts: 0,
    };
    end.drivers[1].images[0].live_devices = 1;
    end.drivers.push(DriverEnd {
        name: "Low".into(),
        state: "stop_pending",
        images: Vec::new(),
        attached_above: false,
    });
    end.drivers.push(DriverEnd {
        name: "Top".into(),
        state: "running",
        images: Vec::new(),
        attached_above: false,
    });
    let v = check::check(&s, &run, &end);
    let balance: Vec<&str> =
        v.iter().filter(|v| v.invariant == "balance").map(|v| v.detail.as_str()).collect();
    assert_eq!(balance.len(), 4, "{balance:#?}");
    assert!(balance[0].contains("1 pool block(s)"), "{balance:#?}");
    assert!(balance[1].contains("1 device object(s)"), "{balance:#?}");
    assert!(balance[2].contains("pending with nothing attached"), "{balance:#?}");
    assert!(balance[3].contains("still running"), "{balance:#?}");
}

#[test]
fn a_reference_left_on_another_drivers_device_is_detected() {
    // A legacy backend that never dropped the reference `IoGetDiskDeviceObject` took on a
    // volume's storage device (legacy/src/attach.rs, the enumeration at start) passed the stress
    // before this part of the balance: the device is the storage driver's, so neither the leak
    // check of the filter's unload nor the image's own device references saw it.
    let (s, run, mut end) = baseline();
    assert!(end.foreign_refs.is_empty(), "{end:#?}");
    end.foreign_refs.push(("\\Device\\HarddiskVolume1".into(), "Storage".into(), 1));
    let v = check::check(&s, &run, &end);
    assert!(
        v.iter().any(|v| v.invariant == "balance"
            && v.detail.contains("1 reference(s) left on \\Device\\HarddiskVolume1")),
        "{v:#?}"
    );
    // Not while a driver still runs: it may hold the reference for as long as it runs.
    end.drivers[0].state = "running";
    let v = check::check(&s, &run, &end);
    assert!(!v.iter().any(|v| v.detail.contains("reference(s) left on")), "{v:#?}");
}

#[test]
fn a_legacy_filter_answering_fltmc_is_detected() {
    let (s, mut run, end) = baseline();
    let mut s = s;
    s.steps.push(fsfilter_lab::scenario::Step {
        action: fsfilter_lab::scenario::Action::Unload { driver: "Low".into() },
        line: 0,
    });
    let mut outcome = run.steps[0].clone();
    outcome.what = "unload Low".into();
    outcome.status = Status::SUCCESS;
    outcome.io = None;
    run.steps.push(outcome);
    let v = check::check(&s, &run, &end);
    assert!(v.iter().any(|v| v.invariant == "statuses"), "{v:#?}");
}

#[test]
fn a_post_finished_when_safe_pairs_with_the_post_that_deferred_it_in_both_models() {
    // FSFILTER_STRESS_SEED=0x5eed161a, the first case once the tally sample came into the plans:
    // an overlapped non-cached read completes from the storage's DPC, the tally's post runs at
    // DISPATCH_LEVEL and answers WhenSafe (FLT_POSTOP_MORE_PROCESSING_REQUIRED), and its second
    // half (`when_safe`) runs from a worker. The checker took that second post for one without a
    // pre, and for one out of the stack order.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "evil.com" = "xxEVILPATTERNxx" }
[[driver]]
name = "Tally0"
sample = "tally"
model = "legacy"
start = "boot"
group = "FSFilter Top"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "evil.com"
overlapped = true
[[step]]
action = "io"
volume = "C:"
op = "read"
path = "evil.com"
mode = "noncached"
offset = 0
[[step]]
action = "io"
volume = "C:"
op = "close"
path = "evil.com"
[[step]]
action = "stop"
driver = "Tally0"
"#;
    for model in [Model::Legacy, Model::Minifilter] {
        let s = parse("regression.toml", text).unwrap().with_model("Tally0", model);
        let (run, end, violations) = run_checked(&s);
        assert!(violations.is_empty(), "{model:?}: {violations:#?}");
        let read = callbacks(&run.events, "Tally0")
            .into_iter()
            .filter(|c| c.contains("IRP_MJ_READ"))
            .collect::<Vec<_>>();
        assert_eq!(
            read,
            [
                "pre IRP_MJ_READ FLT_PREOP_SUCCESS_WITH_CALLBACK",
                "post IRP_MJ_READ STATUS_SUCCESS",
                "post IRP_MJ_READ STATUS_SUCCESS",
            ],
            "{model:?}"
        );
        // Without the post that deferred it, the second half is one too many.
        let mut tampered = run.clone();
        let at = tampered.events.iter().position(|e| is_post(e, MajorFunction::Read)).unwrap();
        tampered.events.remove(at);
        let v = check::check(&s, &tampered, &end);
        assert!(
            v.iter().any(|v| v.invariant == "posts" && v.detail.contains("finished when safe")),
            "{model:?}: {v:#?}"
        );
    }
}

#[test]
fn a_stream_context_an_unloaded_driver_left_linked_is_detected() {
    // Rule 28: a legacy filter removes every FSRTL_PER_STREAM_CONTEXT it inserted before it
    // unloads; one left linked is a FreeCallback into freed code when the stream goes.
    let (s, run, mut end) = baseline();
    assert!(end.drivers.iter().all(|d| d.images.iter().all(|i| i.linked_contexts == 0)));
    end.drivers[0].images[0].linked_contexts = 2;
    let v = check::check(&s, &run, &end);
    assert!(
        v.iter().any(|v| v.invariant == "contexts"
            && v.detail.contains("2 FSRTL_PER_STREAM_CONTEXT(s) it inserted still linked")),
        "{v:#?}"
    );
    // Not while its image is loaded: a running filter keeps its contexts.
    end.drivers[0].images[0].loaded = true;
    let v = check::check(&s, &run, &end);
    assert!(!v.iter().any(|v| v.invariant == "contexts"), "{v:#?}");
}

#[test]
fn a_tally_note_with_more_contexts_freed_than_attached_is_detected() {
    // Rule 28: `stream_context_freed` comes once per context; the tally sample counts both.
    let note = |text: &str| Event {
        seq: 1_000_000,
        step: Some(1),
        time: 0,
        kind: EventKind::Callback {
            driver: "Tally0".into(),
            volume: Some("C:".into()),
            io: Some(RequestRef(1)),
            callback: Callback::Note { text: text.into() },
        },
    };
    let (s, run, end) = baseline();
    for (text, bad) in [
        ("tally: freed 3 of 2 contexts, 0 untracked: opens 2; reads 0", true),
        ("tally: freed 2 of 2 contexts, 1 untracked: opens 2; reads 0", false),
        ("tally: last handle of stream 3: opens 1; reads 0", false),
    ] {
        let mut run = run.clone();
        run.events.push(note(text));
        let v = check::check(&s, &run, &end);
        assert_eq!(
            v.iter().any(|v| v.invariant == "contexts" && v.detail.contains("freed twice")),
            bad,
            "{text}: {v:#?}"
        );
    }
    assert_eq!(
        check::tally_totals("tally: freed 12 of 40 contexts, 3 untracked: x"),
        Some((12, 40))
    );
}

#[test]
fn generated_timelines_load_the_tally_sample_under_both_models() {
    // The generator's reach into stream contexts (rule 28): some plans load the tally sample
    // (a passthrough drawn with `attach_unscanned`, which a passthrough does not read, is a tally:
    // no draw was added) as a legacy filter and as a minifilter, whose notes show streams tallied
    // at their last handle and contexts freed, while every invariant holds.
    let (mut legacy, mut mini, mut last_handle, mut totals) = (0, 0, 0, 0);
    for (s, run) in clean_runs(16, 400, 30) {
        let tallies: Vec<_> = s.drivers.iter().filter(|d| d.sample == "tally").collect();
        legacy += usize::from(tallies.iter().any(|d| d.model == Model::Legacy));
        mini += usize::from(tallies.iter().any(|d| d.model == Model::Minifilter));
        let notes: Vec<&str> = run
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Callback { callback: Callback::Note { text }, .. } => {
                    Some(text.as_str())
                }
                _ => None,
            })
            .collect();
        last_handle += usize::from(notes.iter().any(|n| n.starts_with(tally::notes::LAST_HANDLE)));
        totals += usize::from(notes.iter().any(|n| check::tally_totals(n).is_some()));
    }
    assert!(
        legacy > 0 && mini > 0 && last_handle > 0 && totals > 0,
        "tally as a legacy filter in {legacy} plans, as a minifilter in {mini}; a last handle \
         noted in {last_handle}, totals in {totals}"
    );
}

#[test]
fn generated_timelines_open_named_streams_where_the_file_system_has_them() {
    // The generator's reach into named data streams (docs/simulator.md, "Named data streams"):
    // on the volumes whose file system reports FILE_NAMED_STREAMS (NTFS, ReFS, shares), some io
    // steps name a stream of their file (`a.txt:s`, `a.txt:s:$DATA`, `a.txt::$DATA`), drawn from
    // the step's volume index (taken modulo the volumes), so that no draw was added; on the other
    // file systems no step names one. Opens of streams succeed and requests on them complete.
    use fsfilter_lab::scenario::{Action, FileSystem};
    let (mut opened, mut requests, mut elsewhere) = (0, 0, 0);
    for (s, run) in clean_runs(16, 400, 30) {
        for (step, outcome) in s.steps.iter().zip(&run.steps) {
            let Action::Io { volume, op, path: Some(path), .. } = &step.action else { continue };
            if !path.contains(':') {
                continue;
            }
            let fs = s.volumes.iter().find(|v| &v.name == volume).unwrap().filesystem;
            if !matches!(fs, FileSystem::Ntfs | FileSystem::Refs | FileSystem::Mup) {
                elsewhere += 1;
            } else if outcome.status.is_success() {
                if *op == MajorFunction::Create {
                    opened += 1;
                } else {
                    requests += 1;
                }
            }
        }
    }
    assert!(
        opened > 0 && requests > 0 && elsewhere == 0,
        "streams opened by {opened} creates, {requests} other requests on streams succeeded, \
         {elsewhere} steps named a stream on a file system without them"
    );
}

/// Draws `cases` plans of at most `max_steps` random steps ([`plans`] with `seed`), leaves out
/// those that give two minifilters one altitude, runs each, and checks that every invariant held:
/// the scenarios and their runs, for the tests of the generator's reach.
fn clean_runs(
    seed: u8,
    cases: usize,
    max_steps: usize,
) -> impl Iterator<Item = (fsfilter_lab::scenario::Scenario, fsfilter_lab::run::Run)> {
    let mut draw = plans(seed);
    (0..cases).map(move |_| draw(max_steps)).filter(|p| !p.has_collision()).map(|plan| {
        let s = plan.scenario().unwrap();
        let (run, _, violations) = run_checked(&s);
        assert!(violations.is_empty(), "{violations:#?}");
        (s, run)
    })
}

/// Draws plans of at most `max_steps` random steps, the same ones for the same `seed` on every
/// run (the stress test's own strategy, with a fixed random source).
fn plans(seed: u8) -> impl FnMut(usize) -> fsfilter_stress::plan::Plan {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    move |max_steps| fsfilter_stress::plan::plan(max_steps).new_tree(&mut runner).unwrap().current()
}

#[test]
fn generated_scenarios_parse_and_replay_identically() {
    let mut draw = plans(7);
    for _ in 0..8 {
        let plan = draw(20);
        if plan.has_collision() {
            continue;
        }
        let s = plan.scenario().unwrap();
        assert_eq!(s.steps.len() - plan.tail_len() - plan.opens_len(), plan.steps.len());
        // Same seed, same run: the printed scenario replays the failure.
        let (a, _, _) = run_checked(&s);
        let (b, _, _) = run_checked(&s);
        assert_eq!(a.events, b.events);
    }
}

#[test]
fn a_pended_irp_resumed_without_a_post_is_passed_down_through_a_copied_location() {
    // Found by the stress: a legacy filter that pended an IRP (IoMarkIrpPending, STATUS_PENDING)
    // and resumed it without a post callback passed it down with IoSkipCurrentIrpStackLocation,
    // so the lower driver got the filter's location with SL_PENDING_RETURNED set and the
    // verifier reported IO_MARK_IRP_PENDING_WITHOUT_STATUS_PENDING against the Filter Manager
    // and NTFS. The WDK's IoSkipCurrentIrpStackLocation page: a driver that pended an IRP copies
    // its location instead.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
mount = "step"
[[driver]]
name = "Probe0"
sample = "probe"
model = "legacy"
start = "boot"
group = "FSFilter Anti-Virus"
[driver.parameters]
Post = 0
Rules = "pend:0 *"
[[driver]]
name = "Passthrough1"
sample = "passthrough"
model = "minifilter"
start = "system"
group = "FSFilter Top"
altitude = "400000"
[[step]]
action = "mount"
volume = "C:"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "a.txt"
[[step]]
action = "io"
volume = "C:"
op = "close"
path = "a.txt"
[[step]]
action = "stop"
driver = "Passthrough1"
[[step]]
action = "stop"
driver = "Probe0"
[[step]]
action = "dismount"
volume = "C:"
"#;
    let s = parse("regression.toml", text).unwrap();
    let (run, _, violations) = run_checked(&s);
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        callbacks(&run.events, "Probe0")
            .contains(&"resumed FLT_PREOP_SUCCESS_NO_CALLBACK".to_owned())
    );
    assert_eq!(run.steps[1].status, Status::SUCCESS);
}

#[test]
fn scenarios_the_simulator_cannot_build_are_refused_by_the_parser() {
    // Found while writing the generator: the parser accepted a second named-pipe (or mailslot)
    // volume and a network share not named \\server\share, and the run then panicked in
    // Machine::add_volume. The parser now refuses them with the file, line and key.
    let two_pipes = r#"
[[volume]]
name = "\\Device\\NamedPipe"
filesystem = "npfs"
[[volume]]
name = "\\Device\\OtherPipe"
filesystem = "npfs"
"#;
    let e = parse("pipes.toml", two_pipes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pipes.toml:5: volume[1].filesystem: only one npfs volume can exist (one namespace per machine)"
    );
    let share = r#"
[[volume]]
name = "share"
filesystem = "mup"
"#;
    let e = parse("share.toml", share).unwrap_err();
    assert_eq!(
        e.to_string(),
        "share.toml:3: volume[0].name: a mup volume is named \\\\server\\share, not `share`"
    );
    let fine = r#"
[[volume]]
name = "\\\\server\\share"
filesystem = "mup"
[[volume]]
name = "\\Device\\Mailslot"
filesystem = "msfs"
"#;
    let s = parse("fine.toml", fine).unwrap();
    assert!(run_checked(&s).2.is_empty());
}

/// Two filters, one of each model, and a change notification that waits across steps until a
/// create completes it, then one that a cancel ends.
const NOTIFY_ACROSS_STEPS: &str = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "dir\\c.log" = "log" }
[[driver]]
name = "Legacy"
sample = "probe"
model = "legacy"
start = "boot"
[[driver]]
name = "Mini"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "370100"
[[step]]
action = "io"
volume = "C:"
op = "directory_control"
path = "dir"
notify = "file_name"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "dir\\new.txt"
[[step]]
action = "io"
volume = "C:"
op = "directory_control"
path = "dir"
notify = "file_name"
[[step]]
action = "io"
volume = "C:"
op = "cancel"
path = "dir"
"#;

#[test]
fn a_notification_completed_in_a_later_step_gets_its_posts_there() {
    let s = parse("notify.toml", NOTIFY_ACROSS_STEPS).unwrap();
    let run = checked(&s, "notify");
    // Each filter's post of each notification comes in the step that completed it.
    let posts: Vec<(Option<u32>, Status)> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback {
                callback: Callback::Post { major: MajorFunction::DirectoryControl, status, .. },
                ..
            } => Some((e.step, *status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        posts,
        [
            (Some(1), Status::SUCCESS),
            (Some(1), Status::SUCCESS),
            (Some(3), Status::CANCELLED),
            (Some(3), Status::CANCELLED)
        ]
    );
}

#[test]
fn a_post_that_never_comes_for_a_request_still_held_is_detected_at_the_end() {
    let s = parse("notify.toml", NOTIFY_ACROSS_STEPS).unwrap();
    let (mut run, end, violations) = run_checked(&s);
    assert!(violations.iter().all(|v| v.invariant == "balance"), "{violations:#?}");
    // Drop the cancelled notification's completion and its posts: the request stays held to the
    // end, and its pres asked for posts that never came.
    run.events.retain(|e| {
        !(e.step == Some(3)
            && matches!(
                e.kind,
                EventKind::IoComplete { .. }
                    | EventKind::Callback { callback: Callback::Post { .. }, .. }
            ))
    });
    let v = check::check(&s, &run, &end);
    let never: Vec<&check::Violation> =
        v.iter().filter(|v| v.invariant == "posts" && v.detail.contains("never came")).collect();
    assert_eq!(never.len(), 2, "{v:#?}");
}

#[test]
fn generated_timelines_wait_for_changes_and_cancel() {
    // The generator's reach into notifications and cancellation: some plans wait for changes in
    // a directory (and the requests really wait), and some cancel what a handle has outstanding.
    let (mut waited, mut cancelled) = (0, 0);
    for (s, run) in clean_runs(9, 1000, 20) {
        waited += usize::from(s.steps.iter().zip(&run.steps).any(|(step, out)| {
            matches!(&step.action, fsfilter_lab::scenario::Action::Io { notify: Some(_), .. })
                && out.status == Status::PENDING
        }));
        cancelled += usize::from(
            run.steps
                .iter()
                .any(|out| out.what.starts_with("io cancel") && out.status == Status::SUCCESS),
        );
    }
    assert!(waited > 0 && cancelled > 0, "waited in {waited} plans, cancelled in {cancelled}");
}

#[test]
fn posts_out_of_stack_order_in_a_cancel_step_are_detected() {
    // The posts of a cancelled request come in the cancel step (the io op `cancel`): the order
    // invariant covers them as it covers those of any other io step.
    let s = parse("notify.toml", NOTIFY_ACROSS_STEPS).unwrap();
    let (mut run, end, violations) = run_checked(&s);
    assert!(violations.iter().all(|v| v.invariant == "balance"), "{violations:#?}");
    let posts: Vec<usize> = run
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| is_post(e, MajorFunction::DirectoryControl) && e.step == Some(3))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(posts.len(), 2, "both filters get the cancelled notification's post");
    run.events.swap(posts[0], posts[1]);
    let v = check::check(&s, &run, &end);
    assert!(v.iter().any(|v| v.invariant == "order" && v.detail.contains("bottom up")), "{v:#?}");
}

#[test]
fn no_notification_waits_in_a_plan_whose_probe_may_complete_a_cleanup_itself() {
    // Seed 0x5eed1504: a probe with `deny cleanup` kept the file system from ever ending a
    // waiting notification, and the tail's legacy stop waited for it (a DEADLOCK, by design:
    // docs/semantics.md, draining). Such plans list the directory instead.
    use fsfilter_stress::plan::{IoPlan, RulePlan, StepPlan};
    let mut draw = plans(11);
    let mut plan = draw(4);
    plan.steps = vec![StepPlan::Io(IoPlan {
        volume: 0,
        op: 5,
        path: 0,
        mode: 2,
        offset: None,
        length: None,
        infected: false,
    })];
    for d in &mut plan.drivers {
        d.sample = 1;
        d.probe.malformed = false;
        d.probe.rules.clear();
    }
    assert_eq!(fsfilter_stress::plan::SAMPLES[1], "probe");
    assert!(plan.to_toml().contains("notify = "), "{}", plan.to_toml());
    // `deny cleanup` (every file), then `complete:STATUS_SUCCESS *`: no notification.
    for (action, op) in [(0, 7), (2, 0)] {
        plan.drivers[0].probe.rules = vec![RulePlan { action, op, pattern: 0 }];
        let text = plan.to_toml();
        assert!(!text.contains("notify = "), "{text}");
        assert!(text.contains("op = \"directory_control\""), "{text}");
    }
    // A rule for another file's cleanup (`*secret*`) leaves the directory's alone.
    plan.drivers[0].probe.rules = vec![RulePlan { action: 0, op: 7, pattern: 1 }];
    assert!(plan.to_toml().contains("notify = "));
}

#[test]
fn generated_timelines_open_overlapped_handles_whose_transfers_pend() {
    // The generator's reach into asynchronous I/O: some plans open a path's handle with
    // `overlapped = true`, and some of their non-cached reads or writes on it really pend (the
    // step answers STATUS_PENDING) while every invariant still holds.
    let (mut overlapped, mut pended) = (0, 0);
    for (_, run) in clean_runs(12, 1000, 40) {
        overlapped += usize::from(
            run.steps.iter().any(|o| o.what.ends_with("(overlapped)") && o.status.is_success()),
        );
        pended += usize::from(run.steps.iter().any(|o| {
            (o.what.starts_with("io read") || o.what.starts_with("io write"))
                && o.status == Status::PENDING
        }));
    }
    assert!(overlapped > 0 && pended > 0, "overlapped in {overlapped} plans, pended in {pended}");
}

#[test]
fn generated_timelines_map_files_and_filters_see_the_fs_filter_operations() {
    // The generator's reach into sections: some plans map a file (`map`, NtCreateSection), and
    // in some a filter sees the acquire for section synchronization, as an FsFilter callback,
    // while every invariant still holds; executable mappings of the handles create steps opened
    // are refused by the I/O manager, and some mappings succeed.
    let (mut mapped, mut seen, mut refused) = (0, 0, 0);
    for (_, run) in clean_runs(13, 1000, 40) {
        let maps = || run.steps.iter().filter(|o| o.what.starts_with("io map"));
        mapped += usize::from(maps().any(|o| o.status.is_success()));
        refused += usize::from(maps().any(|o| o.status == Status::ACCESS_DENIED));
        seen += usize::from(run.events.iter().any(|e| {
            matches!(&e.kind, EventKind::Callback { callback: Callback::Pre { kind, .. }, .. }
                if *kind == fsfilter::OperationKind::FsFilter)
        }));
    }
    assert!(
        mapped > 0 && seen > 0 && refused > 0,
        "mapped in {mapped} plans, FsFilter callbacks in {seen}, refused in {refused}"
    );
}

#[test]
fn a_probe_that_denies_a_release_completes_it_with_success_in_both_models() {
    // Seed 0x5eed1605: a probe completing the acquire for section synchronization and denying
    // everything else denied the release, which cannot fail: the Filter Manager reported it.
    // Both backends now complete a failed FsFilter release with success (docs/callback-model.md,
    // rule 5, as for cleanup and close), so the map step succeeds without a finding.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "a.txt" = "mapped" }

[[driver]]
name = "Probe0"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "400000"
[driver.parameters]
Rules = "complete:STATUS_SUCCESS acquire_for_section_synchronization; deny release_for_section_synchronization"

[[step]]
action = "io"
volume = "C:"
op = "map"
path = "a.txt"
"#;
    let release = "IRP_MJ_RELEASE_FOR_SECTION_SYNCHRONIZATION";
    for model in [Model::Legacy, Model::Minifilter] {
        let s = parse("regression.toml", text).unwrap().with_model("Probe0", model);
        let run = checked(&s, &format!("{model:?}"));
        assert_eq!(run.steps[0].status, Status::SUCCESS, "{model:?}");
        let seen = callbacks(&run.events, "Probe0");
        let maps: Vec<&String> =
            seen.iter().filter(|c| c.contains("SECTION_SYNCHRONIZATION")).collect();
        assert_eq!(
            maps,
            [
                "pre IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION FLT_PREOP_COMPLETE",
                &format!("pre {release} FLT_PREOP_COMPLETE"),
            ],
            "{model:?}"
        );
    }
}

#[test]
fn generated_timelines_send_windows_7_oplock_controls() {
    // The generator's reach into the Windows 7 oplocks (FSCTL_REQUEST_OPLOCK, the lab's twelfth
    // extension since December 7): some plans send a request or an acknowledgement that NTFS
    // answers (granted, not granted, no break to acknowledge), while every invariant holds.
    let mut sent = 0;
    let statuses = [0x0000_0103, 0xC000_00E2, 0xC000_00E3];
    for (_, run) in clean_runs(15, 3000, 12) {
        sent += usize::from(run.steps.iter().any(|o| {
            o.what.starts_with("io fsctl")
                && (o.what.contains("(request_oplock_r") || o.what.contains("(acknowledge_oplock"))
                && statuses.contains(&o.status.bits())
        }));
    }
    assert!(sent > 0, "Windows 7 oplock controls answered in {sent} plans");
}

#[test]
fn generated_timelines_send_oplock_controls_and_use_second_handles() {
    // The generator's reach into the oplock controls and named handles (the lab's twelfth and
    // thirteenth extensions): some plans send an oplock request or acknowledgement that NTFS
    // answers (granted, not granted, or an acknowledgement with no break under way), some open
    // with FILE_COMPLETE_IF_OPLOCKED, and some steps use a path's second handle, while every
    // invariant still holds.
    let (mut controls, mut complete_if, mut second) = (0, 0, 0);
    let oplock_statuses = [0x0000_0103, 0xC000_00E2, 0xC000_00E3];
    // Short plans: the oplock controls come only in plans that stop or unload no driver
    // before their tail (see `IoPlan::oplock`).
    for (_, run) in clean_runs(14, 3000, 12) {
        controls += usize::from(run.steps.iter().any(|o| {
            o.what.starts_with("io fsctl")
                && o.what.contains("oplock")
                && oplock_statuses.contains(&o.status.bits())
        }));
        complete_if += usize::from(run.steps.iter().any(|o| {
            o.what.starts_with("io create")
                && o.what.contains("(complete_if_oplocked)")
                && o.status.is_success()
        }));
        second += usize::from(
            run.steps.iter().any(|o| o.what.ends_with("(handle other)") && o.status.is_success()),
        );
    }
    assert!(
        controls > 0 && complete_if > 0 && second > 0,
        "oplock controls answered in {controls} plans, complete_if_oplocked opens in \
         {complete_if}, a second handle used in {second}"
    );
}

#[test]
fn generated_timelines_remove_volumes_safely_and_by_surprise() {
    // The generator's reach into PnP removals (docs/simulator.md, "Removal of a volume (PnP)"):
    // some dismount draws are removals instead (`plan::removal_of`: no new draw), safe ones that
    // go through, safe ones refused while a file is open (STATUS_ACCESS_DENIED, then the cancel)
    // and surprise ones, and a filter sees the IRP_MJ_PNP, while every invariant still holds.
    use fsfilter_stress::plan::removal_of;
    assert_eq!(
        (removal_of(1, 1), removal_of(3, 1), removal_of(2, 1)),
        (Some(false), Some(true), None)
    );
    assert_eq!(
        (removal_of(4, 4), removal_of(5, 4), removal_of(3, 4)),
        (Some(false), Some(false), None)
    );
    let (mut removed, mut refused, mut surprised, mut seen) = (0, 0, 0, 0);
    for (_, run) in clean_runs(14, 600, 40) {
        let steps = |w: &'static str| run.steps.iter().filter(move |o| o.what.starts_with(w));
        removed += usize::from(steps("remove").any(|o| o.status.is_success()));
        refused += usize::from(steps("remove").any(|o| o.status == Status::ACCESS_DENIED));
        surprised += usize::from(steps("surprise-remove").any(|o| o.status.is_success()));
        seen += usize::from(run.events.iter().any(|e| is_pre(e, MajorFunction::Pnp)));
    }
    assert!(
        removed > 0 && refused > 0 && surprised > 0 && seen > 0,
        "removed in {removed} plans, refused in {refused}, surprise in {surprised}, seen in {seen}"
    );
}

#[test]
fn an_attach_to_a_volume_removed_since_its_last_mount_finds_no_volume() {
    // A manual attach after a removal that went through finds no volume, as after a dismount
    // (the frame's device went with the volume device); after the volume comes back (`mount`)
    // the default instance is there again. Every invariant holds (coverage: the checker needed
    // no change for removals).
    let text = r#"
[[volume]]
name = "F:"
filesystem = "fat"
files = { "a.txt" = "x" }
[[driver]]
name = "Probe0"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "370000"
[[step]]
action = "remove"
volume = "F:"
[[step]]
action = "attach"
driver = "Probe0"
volume = "F:"
[[step]]
action = "mount"
volume = "F:"
[[step]]
action = "attach"
driver = "Probe0"
volume = "F:"
[[step]]
action = "stop"
driver = "Probe0"
"#;
    let s = parse("regression.toml", text).unwrap();
    let (run, _, violations) = run_checked(&s);
    assert!(violations.is_empty(), "{violations:#?}");
    let statuses: Vec<Status> = run.steps.iter().take(4).map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [
            Status::SUCCESS,
            Status::FLT_VOLUME_NOT_FOUND,
            Status::SUCCESS,
            Status::FLT_INSTANCE_NAME_COLLISION
        ]
    );
}
