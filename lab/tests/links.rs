//! The `link` step and the create's `open_reparse_point` key (extensions of scenario.md, README):
//! a link is made as `mklink` makes it, an open, `FSCTL_SET_REPARSE_POINT` and a close, each a
//! request the filters see; `open_reparse_point = true` opens a link itself
//! (docs/simulator.md, "Reparse points").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter::{MajorFunction, Status};
use fsfilter_lab::run::run_inspect;
use fsfilter_lab::scenario::parse;
use fsfilter_sim::EventKind;
use fsfilter_sim::fs::media::ReparsePoint;
use fsfilter_sim::fs::reparse::{TAG_MOUNT_POINT, TAG_SYMLINK, mount_point_buffer, symlink_buffer};

const SCENARIO: &str = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "a.txt" = "a", "sub\\" = "" }

[[volume]]
name = "D:"
filesystem = "ntfs"
files = { "data\\x.txt" = "x" }

[[volume]]
name = "E:"
filesystem = "fat"

[[step]]
action = "link"
volume = "C:"
path = "j"
target = "D:\\data"
kind = "junction"

[[step]]
action = "link"
volume = "C:"
path = "sub\\l.txt"
target = "..\\a.txt"

[[step]]
action = "link"
volume = "C:"
path = "ld"
target = "\\??\\D:\\data"
directory = true

[[step]]
action = "io"
volume = "C:"
op = "create"
path = "j"
open_reparse_point = true

[[step]]
action = "link"
volume = "E:"
path = "l.txt"
target = "C:\\a.txt"
"#;

#[test]
fn a_link_step_sets_the_reparse_point_through_the_file_system_control() {
    let s = parse("links.toml", SCENARIO).unwrap();
    let (r, points) = run_inspect(&s, |m| {
        let c = m.volume("C:").unwrap();
        let e = m.volume("E:").unwrap();
        m.kernel(|k| {
            let media = &k.volume(c).media;
            let point = |p: &str| {
                let comps: Vec<&str> = p.split('\\').collect();
                let node = media.lookup(fsfilter_sim::fs::media::ROOT, &comps).unwrap();
                media.node(node).reparse.clone()
            };
            let fat = &k.volume(e).media;
            let on_fat = fat.nodes.iter().any(|n| n.live && n.reparse.is_some());
            ([point("j"), point("sub\\l.txt"), point("ld")], on_fat)
        })
    });
    let what: Vec<&str> = r.steps.iter().map(|o| o.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "link C:\\j -> D:\\data (junction)",
            "link C:\\sub\\l.txt -> ..\\a.txt (symlink)",
            "link C:\\ld -> \\??\\D:\\data (symlink)",
            "io create C:\\j (open_reparse_point)",
            "link E:\\l.txt -> C:\\a.txt (symlink)",
        ]
    );
    let statuses: Vec<Status> = r.steps.iter().map(|o| o.status).collect();
    let fat_refuses = Status::INVALID_DEVICE_REQUEST;
    assert_eq!(
        statuses,
        [Status::SUCCESS, Status::SUCCESS, Status::SUCCESS, Status::SUCCESS, fat_refuses]
    );
    // The buffers mklink writes: `\??\` names for absolute targets, SYMLINK_FLAG_RELATIVE for
    // a relative one.
    let ([j, l, ld], on_fat) = points;
    let expected = |tag, buffer| Some(ReparsePoint { tag, buffer });
    assert_eq!(j, expected(TAG_MOUNT_POINT, mount_point_buffer("\\??\\D:\\data", "D:\\data")));
    assert_eq!(l, expected(TAG_SYMLINK, symlink_buffer("..\\a.txt", "..\\a.txt", true)));
    let ld_buffer = symlink_buffer("\\??\\D:\\data", "\\??\\D:\\data", false);
    assert_eq!(ld, expected(TAG_SYMLINK, ld_buffer));
    assert!(!on_fat, "FAT keeps no reparse point");
    // Each link step is three requests: the open, the control (the step's own) and the close.
    for (i, step) in r.steps.iter().enumerate().filter(|(i, _)| [0, 1, 2, 4].contains(i)) {
        let majors: Vec<MajorFunction> = r
            .events
            .iter()
            .filter(|e| e.step == Some(i as u32))
            .filter_map(|e| match e.kind {
                EventKind::IoStart { major, .. } => Some(major),
                _ => None,
            })
            .collect();
        assert_eq!(
            majors,
            [
                MajorFunction::Create,
                MajorFunction::FileSystemControl,
                MajorFunction::Cleanup,
                MajorFunction::Close
            ],
            "step {i}"
        );
        let own = r.events.iter().find_map(|e| match e.kind {
            EventKind::IoStart { io, major, .. } if Some(io) == step.io => Some(major),
            _ => None,
        });
        assert_eq!(own, Some(MajorFunction::FileSystemControl), "step {i}");
    }
    assert!(!r.has_findings(), "{:?}", r.findings().collect::<Vec<_>>());
}
