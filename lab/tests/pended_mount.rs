//! The volume key `mount_pends_ms` (an extension of scenario.md): the file system pends the
//! volume's mount requests and completes each that many milliseconds later from a worker thread
//! (facts.md §1.4: mounts may complete asynchronously).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::run::run;
use fsfilter_lab::scenario::{Model, parse};
use fsfilter_sim::EventKind;

/// The scenario both tests run: E: (of `filesystem`, with the volume key line `key`, line 6),
/// mounted by the first step, then read through the probe P.
fn scenario(filesystem: &str, key: &str) -> String {
    format!(
        "
[[volume]]
name = \"E:\"
filesystem = \"{filesystem}\"
mount = \"step\"
{key}
files = {{ \"a.txt\" = \"x\" }}
[[driver]]
name = \"P\"
sample = \"probe\"
model = \"minifilter\"
start = \"boot\"
altitude = \"370100\"
[[step]]
action = \"mount\"
volume = \"E:\"
[[step]]
action = \"io\"
volume = \"E:\"
op = \"read\"
path = \"a.txt\"
"
    )
}

#[test]
fn a_pended_mount_ends_later_and_the_filter_attaches_in_both_models() {
    let s = parse("pended.toml", &scenario("fat", "mount_pends_ms = 40")).unwrap();
    assert_eq!(s.volumes[0].mount_pends_ms, Some(40));
    for model in [Model::Legacy, Model::Minifilter] {
        let r = run(&s.with_model("P", model));
        assert!(!r.has_findings(), "{model:?}");
        let mounted = r
            .events
            .iter()
            .find(|e| matches!(&e.kind, EventKind::Mounted { volume, .. } if volume == "E:"))
            .expect("mounted");
        // Virtual time is in 100 ns units.
        assert!(mounted.time >= 40 * 10_000, "{model:?}: mounted at {}", mounted.time);
        let read = r.steps.get(1).unwrap();
        assert!(read.status.is_success(), "{model:?}: {read:?}");
        let saw_read = r.events.iter().any(|e| {
            matches!(&e.kind, EventKind::Callback { driver, io: Some(i), .. }
                if driver == "P" && Some(*i) == read.io)
        });
        assert!(saw_read, "{model:?}: the filter saw the read on the pended volume");
    }
    let plain = parse("plain.toml", &scenario("fat", "")).unwrap();
    assert_eq!(plain.volumes[0].mount_pends_ms, None);
}

#[test]
fn a_mount_pended_too_long_is_refused_at_its_line() {
    let text = scenario("fat", "mount_pends_ms = 60001");
    assert_eq!(
        parse("bad.toml", &text).unwrap_err().to_string(),
        "bad.toml:6: volume[0].mount_pends_ms: must be at most 60000 (ms)"
    );
    let text = scenario("fat", "mount_pends_ms = \"soon\"");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(e.starts_with("bad.toml:6: volume[0].mount_pends_ms:"), "{e}");
}

#[test]
fn a_volume_initialized_too_late_is_refused_at_its_line() {
    // README: `initialize_late_ms = N`, at most 60000, like `mount_pends_ms`.
    let ok = parse("ok.toml", &scenario("fat", "initialize_late_ms = 60000")).unwrap();
    assert_eq!(ok.volumes[0].initialize_late_ms, Some(60000));
    let text = scenario("fat", "initialize_late_ms = 60001");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(
        e.starts_with("bad.toml:6: volume[0].initialize_late_ms: must be at most 60000"),
        "{e}"
    );
}

/// What P's callbacks on E: were, by kind.
fn callbacks_on_e(r: &fsfilter_lab::run::Run) -> Vec<&'static str> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback { driver, volume: Some(v), callback, .. }
                if driver == "P" && v == "E:" =>
            {
                Some(callback.kind())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_volume_device_initialized_late_is_attached_by_retrying_or_given_up_in_both_models() {
    // The volume key `initialize_late_ms`: the new volume device stays initializing that long
    // after its mount. The legacy backend and the Filter Manager's frame retry their attach (8
    // tries, 500 ms apart); past the last try the legacy backend tears down the instance it had
    // set up (INTERNAL_ERROR), and the frame sets none up (docs/semantics.md, refusal).
    for (ms, attached) in [(1200, true), (10_000, false)] {
        let s =
            parse("late.toml", &scenario("ntfs", &format!("initialize_late_ms = {ms}"))).unwrap();
        assert_eq!(s.volumes[0].initialize_late_ms, Some(ms));
        for model in [Model::Legacy, Model::Minifilter] {
            let r = run(&s.with_model("P", model));
            assert!(!r.has_findings(), "{ms} {model:?}");
            assert!(r.steps[1].status.is_success(), "{ms} {model:?}: the volume serves I/O");
            let seen = callbacks_on_e(&r);
            let setups = seen.iter().filter(|k| **k == "instance_setup").count();
            let pres = seen.iter().filter(|k| **k == "pre").count();
            let teardowns = seen.iter().filter(|k| k.starts_with("teardown")).count();
            let expected = match (attached, model) {
                (true, _) => (1, true, 0),
                (false, Model::Legacy) => (1, false, 2),
                (false, Model::Minifilter) => (0, false, 0),
            };
            assert_eq!((setups, pres > 0, teardowns), expected, "{ms} {model:?}: {seen:?}");
        }
    }
}
