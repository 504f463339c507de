//! What `fsfilter compare` reports beyond positions and callbacks: each request's status where
//! the two models end it differently, and the driver's teardowns by step, each with the
//! docs/semantics.md row that explains the difference.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::compare::compare;
use fsfilter_lab::scenario::parse;

/// The probe as driver P, a boot-start minifilter (compared under both models).
const PROBE_P: &str = r#"[[driver]]
name = "P"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "370100"
"#;

#[test]
fn a_request_ended_differently_shows_both_statuses() {
    // The probe refuses every create, and reaches a named pipe only as a minifilter (row
    // `volumes`): the pipe's create fails under the Filter Manager alone.
    let text = format!(
        "{}{PROBE_P}{}",
        r#"
[[volume]]
name = "\\Device\\NamedPipe"
filesystem = "npfs"
"#,
        r#"[driver.parameters]
SupportNpfsMsfs = 1
Rules = "deny create"
[[step]]
action = "io"
volume = "\\Device\\NamedPipe"
op = "create"
path = "p1"
"#
    );
    let c = compare(&parse("pipes.toml", &text).unwrap(), "P").unwrap();
    assert!(
        c.text.contains("    status:    legacy STATUS_SUCCESS, minifilter STATUS_ACCESS_DENIED"),
        "{}",
        c.text
    );
    assert!(c.text.contains("      missed by the legacy filter"), "{}", c.text);
    assert_eq!(c.rows, ["volumes"], "{}", c.text);
}

#[test]
fn teardowns_are_listed_by_step_with_their_reasons() {
    // A non-mandatory unload (step 1) tears the minifilter down there; the legacy filter has no
    // such unload and is torn down by the stop (step 2).
    let text = format!(
        "{}{PROBE_P}{}",
        r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
"#,
        r#"[[step]]
action = "io"
volume = "C:"
op = "create"
path = "a.txt"
[[step]]
action = "unload"
driver = "P"
[[step]]
action = "stop"
driver = "P"
"#
    );
    let c = compare(&parse("teardown.toml", &text).unwrap(), "P").unwrap();
    let lines: Vec<&str> = c.text.lines().collect();
    let at = lines.iter().position(|l| *l == "Teardown (by step):").expect(&c.text);
    assert_eq!(
        lines.get(at + 1..at + 4).unwrap(),
        [
            "  legacy:     [2] C: start MANDATORY_FILTER_UNLOAD; [2] C: complete MANDATORY_FILTER_UNLOAD",
            "  minifilter: [1] C: start FILTER_UNLOAD; [1] C: complete FILTER_UNLOAD",
            "      see docs/semantics.md#unload",
        ],
        "{}",
        c.text
    );
    assert!(!c.findings, "{}", c.text);
}

#[test]
fn the_same_teardowns_in_another_order_are_no_difference() {
    // A stop tears the filter down on a disk volume and a share in both models, in another order
    // (the legacy backend walks its devices, the Filter Manager its volumes): no row is cited.
    // The legacy device on the redirector names its share at teardown complete too (it named
    // none, `?`, once detached, before a fix of December 6).
    let text = format!(
        "{}{PROBE_P}{}",
        r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
[[volume]]
name = "\\\\server\\share"
filesystem = "mup"
"#,
        r#"[[step]]
action = "stop"
driver = "P"
"#
    );
    let c = compare(&parse("stop.toml", &text).unwrap(), "P").unwrap();
    let legacy = c.text.lines().find(|l| l.starts_with("  legacy:     [0]")).expect(&c.text);
    let share = r"[0] \\server\share complete MANDATORY_FILTER_UNLOAD";
    assert!(legacy.contains(share), "{}", c.text);
    assert!(!legacy.contains('?'), "{}", c.text);
    assert!(!c.rows.contains(&"unload"), "{:?}\n{}", c.rows, c.text);
}

#[test]
fn the_same_callbacks_in_another_order_cite_attach_order() {
    // A data-scan section a scanner below creates in its post-create is acquired through the
    // stack (an FsFilter operation every filter above sees): as a legacy filter above the
    // scanner's frame, EncLegacy sees the acquire between its pre and post create; as a
    // minifilter below the scanner in the same frame, after its post create. The same
    // callbacks in another order, which the report puts down to the position (row
    // `attach-order`), not to what is delivered.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/demo.toml"),
    )
    .unwrap();
    let s = parse("demo.toml", &text).unwrap();
    let c = compare(&s, "EncLegacy").unwrap();
    let request = c.text.split("  [1] io create C:\\readme.txt\n").nth(1).unwrap();
    let request = request.split("\n  [").next().unwrap();
    assert!(request.contains("pre acquire_for_section_synchronization [FsFilter]"), "{request}");
    assert!(request.contains("the same callbacks, in another order"), "{request}");
    assert!(request.contains("see docs/semantics.md#attach-order"), "{request}");
    assert!(!request.contains("operations-delivered"), "{request}");
}
