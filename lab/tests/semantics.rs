//! The semantics matrix (docs/semantics.md), row by row: the same scenario with the filter under
//! test as a legacy filter and as a minifilter; where the models agree the test asserts that
//! both runs saw the same, where they differ it asserts the difference, and each difference is
//! also a field of the backends' `CAPABILITIES`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use fsfilter_lab::run::{Run, StackEntry, run};
use fsfilter_lab::scenario::{Model, parse};
use fsfilter_sim::{Callback, EventKind};

const LEGACY: fsfilter::Capabilities = fsfilter_legacy::capabilities::CAPABILITIES;
const MINI: fsfilter::Capabilities = fsfilter_minifilter::capabilities::CAPABILITIES;

/// Runs `text` with `driver` as a legacy filter and as a minifilter.
fn both(text: &str, driver: &str) -> (Run, Run) {
    let s = parse("semantics.toml", text).unwrap();
    (run(&s.with_model(driver, Model::Legacy)), run(&s.with_model(driver, Model::Minifilter)))
}

/// What `driver` saw of each io step: (step, [callback kind, operation, outcome]).
fn seen(r: &Run, driver: &str) -> Vec<(u32, Vec<String>)> {
    r.steps
        .iter()
        .filter_map(|s| {
            let io = s.io?;
            let cbs = r
                .events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Callback { driver: d, io: Some(i), callback, .. }
                        if d == driver && *i == io =>
                    {
                        match callback {
                            Callback::Pre { major, kind, outcome, status, .. } => {
                                Some(format!("pre {major} {kind:?} {outcome} {status:?}"))
                            }
                            Callback::Post { major, outcome, status, .. } => {
                                Some(format!("post {major} {outcome} {status}"))
                            }
                            Callback::Resumed { outcome } => Some(format!("resumed {outcome}")),
                            Callback::Note { text } => Some(format!("note {text}")),
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect();
            Some((s.index, cbs))
        })
        .collect()
}

fn setups(r: &Run, driver: &str) -> Vec<String> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback {
                driver: d,
                volume,
                callback: Callback::InstanceSetup { flags, status, .. },
                ..
            } if d == driver => {
                Some(format!("{} {flags:?} {status}", volume.as_deref().unwrap_or("?")))
            }
            _ => None,
        })
        .collect()
}

fn step_statuses(r: &Run) -> Vec<String> {
    r.steps.iter().map(|s| format!("{}: {}", s.what, s.status)).collect()
}

fn clean(r: &Run) {
    let f: Vec<String> = r.findings().map(|e| format!("{:?}", e.kind)).collect();
    assert!(f.is_empty(), "{f:?}");
}

const C_VOLUME: &str = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "data.bin" = "0123456789abcdef", "secret.txt" = "no", "plain.txt" = "yes" }
"#;

/// The probe sample as driver "P", a boot-start minifilter (the tests run it in both models).
const PROBE_P: &str = r#"
[[driver]]
name = "P"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "370100""#;

#[test]
fn callbacks_and_outcomes_agree() {
    // Rows `callbacks` and `outcomes`: the same pre and post callbacks, outcomes and statuses.
    let text = format!(
        "{C_VOLUME}
[[driver]]
name = \"P\"
sample = \"probe\"
model = \"minifilter\"
start = \"boot\"
altitude = \"370100\"
[driver.parameters]
Rules = \"deny create *secret*; complete:STATUS_OBJECT_NAME_NOT_FOUND create *.tmp; pend:20 read; synchronize write; nopost close; disallow_fastio query_information\"
[[step]]
action = \"io\"
volume = \"C:\"
op = \"create\"
path = \"secret.txt\"
[[step]]
action = \"io\"
volume = \"C:\"
op = \"create\"
path = \"x.tmp\"
[[step]]
action = \"io\"
volume = \"C:\"
op = \"create\"
path = \"plain.txt\"
[[step]]
action = \"io\"
volume = \"C:\"
op = \"read\"
path = \"plain.txt\"
mode = \"noncached\"
offset = 0
length = 512
[[step]]
action = \"io\"
volume = \"C:\"
op = \"write\"
path = \"plain.txt\"
data = \"more\"
[[step]]
action = \"io\"
volume = \"C:\"
op = \"query_information\"
path = \"plain.txt\"
[[step]]
action = \"io\"
volume = \"C:\"
op = \"close\"
path = \"plain.txt\"
"
    );
    let (l, m) = both(&text, "P");
    clean(&l);
    clean(&m);
    assert_eq!(step_statuses(&l), step_statuses(&m));
    // The query of standard information is offered to fast I/O first: the Filter Manager
    // presents that attempt, which the rule disallows, and the legacy backend declines it for a
    // filter that registers the operation (row `operations-delivered`). The IRP that follows,
    // and everything else, agree.
    let irps = |r: &Run| {
        let irps = |v: Vec<String>| {
            // Without the fast-I/O pres, and the rule notes those pres made just before.
            let mut kept: Vec<String> = Vec::new();
            for c in v {
                if c.contains(" FastIo ") {
                    kept.pop_if(|n| n.starts_with("note "));
                } else {
                    kept.push(c);
                }
            }
            kept
        };
        seen(r, "P").into_iter().map(|(s, v)| (s, irps(v))).collect::<Vec<_>>()
    };
    assert_eq!(irps(&l), irps(&m));
    let fast = |r: &Run| {
        seen(r, "P")
            .into_iter()
            .flat_map(|(_, v)| v)
            .filter(|c| c.contains(" FastIo "))
            .collect::<Vec<_>>()
    };
    assert_eq!(fast(&l), Vec::<String>::new());
    assert_eq!(
        fast(&m),
        ["pre IRP_MJ_QUERY_INFORMATION FastIo FLT_PREOP_DISALLOW_FASTIO None".to_owned()]
    );
    let all: Vec<String> = seen(&m, "P").into_iter().flat_map(|(_, v)| v).collect();
    for expected in [
        "FLT_PREOP_COMPLETE",
        "FLT_PREOP_PENDING",
        "resumed",
        "FLT_PREOP_SYNCHRONIZE",
        "FLT_PREOP_SUCCESS_NO_CALLBACK",
        "FLT_PREOP_DISALLOW_FASTIO",
    ] {
        assert!(all.iter().any(|c| c.contains(expected)), "{expected}: {all:?}");
    }
}

#[test]
fn skip_flags_agree() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/skip-flags.toml"))
            .unwrap();
    let (l, m) = both(&text, "MiniSkip");
    assert_eq!(seen(&l, "MiniSkip"), seen(&m, "MiniSkip"));
    // And the legacy filter of the scenario saw what MiniSkip saw.
    assert_eq!(
        seen(&m, "MiniSkip").into_iter().map(|(s, v)| (s, v.len())).collect::<Vec<_>>(),
        seen(&m, "LegacySkip").into_iter().map(|(s, v)| (s, v.len())).collect::<Vec<_>>()
    );
}

fn position(r: &Run, volume: &str, driver: &str) -> String {
    let end = r.snapshots.last().unwrap();
    let (_, stack) = end.volumes.iter().find(|(v, _)| v == volume).unwrap();
    stack
        .iter()
        .map(|e| match e {
            StackEntry::Legacy { driver: d } => d.clone(),
            StackEntry::Frame { frame, instances } => format!(
                "frame {frame}[{}]",
                instances.iter().map(|(d, _, _)| d.as_str()).collect::<Vec<_>>().join(",")
            ),
            StackEntry::FileSystem { driver } => driver.clone(),
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" > ")
        .replace(driver, &format!("*{driver}*"))
}

#[test]
fn attach_order_differs() {
    // Row `attach-order`: loaded after a legacy filter, a legacy filter goes on top of it; a
    // minifilter goes into its frame by altitude, below the legacy filter.
    const { assert!(MINI.altitude_ordering && !LEGACY.altitude_ordering) };
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/attach-order.toml"
    ))
    .unwrap();
    let (l, m) = both(&text, "MiniLate");
    assert_eq!(
        position(&l, "C:", "MiniLate"),
        "*MiniLate* > LegacyLate > LegacyA > frame 0[MiniA] > Ntfs"
    );
    assert_eq!(
        position(&m, "C:", "MiniLate"),
        "LegacyLate > LegacyA > frame 0[*MiniLate*,MiniA] > Ntfs"
    );
}

#[test]
fn automatic_and_newly_mounted_setup_flags_agree_volume_flags_differ() {
    // Row `instance-setup-flags`.
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
[[volume]]
name = "D:"
filesystem = "ntfs"
dev_drive = true
trusted = true
[[volume]]
name = "F:"
filesystem = "fat"
mount = "step"
[[driver]]
name = "P"
sample = "probe"
model = "minifilter"
start = "demand"
altitude = "370100"
[[step]]
action = "load"
driver = "P"
[[step]]
action = "mount"
volume = "F:"
"#;
    let (l, m) = both(text, "P");
    let (ls, ms) = (setups(&l, "P"), setups(&m, "P"));
    assert!(
        ls.contains(&"C: InstanceSetupFlags(AUTOMATIC_ATTACHMENT) STATUS_SUCCESS".to_owned()),
        "{ls:?}"
    );
    assert!(
        ms.contains(&"C: InstanceSetupFlags(AUTOMATIC_ATTACHMENT) STATUS_SUCCESS".to_owned()),
        "{ms:?}"
    );
    let f = "F: InstanceSetupFlags(AUTOMATIC_ATTACHMENT | NEWLY_MOUNTED_VOLUME) STATUS_SUCCESS"
        .to_owned();
    assert!(ls.contains(&f) && ms.contains(&f), "{ls:?} {ms:?}");
    const { assert!(MINI.volume_flags && !LEGACY.volume_flags) };
    assert!(
        ms.iter().any(|s| s.starts_with("D:")
            && s.contains("DEV_VOLUME")
            && s.contains("TRUSTED_VOLUME")),
        "{ms:?}"
    );
    assert!(ls.iter().any(|s| s.starts_with("D:") && !s.contains("DEV_VOLUME")), "{ls:?}");
}

#[test]
fn refusals_agree() {
    let text = format!(
        "{C_VOLUME}
[[volume]]
name = \"D:\"
filesystem = \"cdfs\"
[[driver]]
name = \"P\"
sample = \"probe\"
model = \"minifilter\"
start = \"boot\"
altitude = \"370100\"
[driver.parameters]
Attach = \"cdrom\"
[[step]]
action = \"io\"
volume = \"C:\"
op = \"create\"
path = \"plain.txt\"
"
    );
    let (l, m) = both(&text, "P");
    for r in [&l, &m] {
        assert!(
            setups(r, "P")
                .iter()
                .any(|s| s.starts_with("C:") && s.ends_with("STATUS_FLT_DO_NOT_ATTACH"))
        );
        assert!(!position(r, "C:", "P").contains("*P*"));
        assert!(position(r, "D:", "P").contains("*P*"));
        assert!(seen(r, "P").iter().all(|(_, v)| v.is_empty()));
    }
}

#[test]
fn byte_range_locks_differ_in_kind() {
    // Row `operations-delivered`: NTFS serves an uncontended lock through fast I/O. The Filter
    // Manager presents it as a fast-I/O IRP_MJ_LOCK_CONTROL; the legacy backend declines the
    // fast-I/O lock routines for a filter that registers the operation, so the I/O manager sends
    // the IRP and the filter sees the same lock as an IRP. Same callbacks and statuses otherwise.
    const { assert!(MINI.all_fast_io_callbacks && !LEGACY.all_fast_io_callbacks) };
    let text = format!(
        "{C_VOLUME}{PROBE_P}
[[step]]
action = \"io\"
volume = \"C:\"
op = \"lock\"
path = \"data.bin\"
offset = 4
length = 8
"
    );
    let (l, m) = both(&text, "P");
    clean(&l);
    clean(&m);
    assert_eq!(step_statuses(&l), step_statuses(&m));
    let lock = |r: &Run| {
        let (_, cbs) = seen(r, "P").into_iter().find(|(s, _)| *s == 0).unwrap();
        cbs.into_iter().filter(|c| c.contains("IRP_MJ_LOCK_CONTROL")).collect::<Vec<_>>()
    };
    assert_eq!(
        lock(&m),
        [
            "pre IRP_MJ_LOCK_CONTROL FastIo FLT_PREOP_SUCCESS_WITH_CALLBACK None",
            "post IRP_MJ_LOCK_CONTROL FLT_POSTOP_FINISHED_PROCESSING STATUS_SUCCESS",
        ]
    );
    assert_eq!(
        lock(&l),
        [
            "pre IRP_MJ_LOCK_CONTROL Irp FLT_PREOP_SUCCESS_WITH_CALLBACK None",
            "post IRP_MJ_LOCK_CONTROL FLT_POSTOP_FINISHED_PROCESSING STATUS_SUCCESS",
        ]
    );
}

#[test]
fn information_queries_by_class() {
    // Row `operations-delivered`, and docs/simulator.md ("User-mode I/O"): the I/O manager
    // answers a position query itself (no filter sees it, in either model); a basic-information
    // query goes to fast I/O first (the minifilter sees fast I/O, the legacy filter the IRP it
    // declines to); a name query is an IRP in both. The lab's `class` field picks the class.
    let step = |class: &str| {
        format!(
            "
[[step]]
action = \"io\"
volume = \"C:\"
op = \"query_information\"
path = \"data.bin\"
class = \"{class}\"
"
        )
    };
    let text = format!("{C_VOLUME}{PROBE_P}{}{}{}", step("position"), step("basic"), step("name"));
    let (l, m) = both(&text, "P");
    clean(&l);
    clean(&m);
    assert_eq!(step_statuses(&l), step_statuses(&m));
    assert!(
        step_statuses(&m)[0].ends_with("(position): STATUS_SUCCESS"),
        "{:?}",
        step_statuses(&m)
    );
    let pres = |r: &Run, step: u32| -> Vec<String> {
        seen(r, "P")
            .into_iter()
            .filter(|(s, _)| *s == step)
            .flat_map(|(_, v)| v)
            .filter(|c| c.starts_with("pre IRP_MJ_QUERY_INFORMATION"))
            .collect()
    };
    for r in [&l, &m] {
        assert_eq!(pres(r, 0), Vec::<String>::new(), "no filter sees the position query");
        assert_eq!(
            pres(r, 2),
            ["pre IRP_MJ_QUERY_INFORMATION Irp FLT_PREOP_SUCCESS_WITH_CALLBACK None"]
        );
    }
    assert_eq!(
        pres(&m, 1),
        ["pre IRP_MJ_QUERY_INFORMATION FastIo FLT_PREOP_SUCCESS_WITH_CALLBACK None"]
    );
    assert_eq!(
        pres(&l, 1),
        ["pre IRP_MJ_QUERY_INFORMATION Irp FLT_PREOP_SUCCESS_WITH_CALLBACK None"]
    );
}

#[test]
fn network_shares_agree_named_pipes_differ() {
    // Row `volumes`.
    const { assert!(MINI.named_pipes_and_mailslots && !LEGACY.named_pipes_and_mailslots) };
    let text = r#"
[[volume]]
name = "\\\\server\\share"
filesystem = "mup"
files = { "a.txt" = "remote" }
[[volume]]
name = "\\Device\\NamedPipe"
filesystem = "npfs"
[[driver]]
name = "P"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "370100"
[driver.parameters]
SupportNpfsMsfs = 1
[[step]]
action = "io"
volume = "\\\\server\\share"
op = "read"
path = "a.txt"
[[step]]
action = "io"
volume = "\\Device\\NamedPipe"
op = "create"
path = "p1"
"#;
    let (l, m) = both(text, "P");
    let share = |r: &Run| seen(r, "P").into_iter().find(|(s, _)| *s == 0).unwrap().1;
    assert!(!share(&l).is_empty());
    assert_eq!(share(&l), share(&m));
    let pipe = |r: &Run| seen(r, "P").into_iter().find(|(s, _)| *s == 1).unwrap().1;
    assert!(pipe(&l).is_empty(), "the legacy model never attaches to NPFS");
    assert!(!pipe(&m).is_empty(), "the minifilter does, with SUPPORT_NPFS_MSFS");
}

#[test]
fn a_network_file_system_registered_after_the_filter_loads_is_newly_mounted_in_both() {
    // Row `instance-setup-flags`: a network file system found when the filter loads gives
    // AUTOMATIC_ATTACHMENT; one registered afterwards (MUP, in the Network group, registers
    // after a boot-start filter of an FSFilter group) AUTOMATIC | NEWLY_MOUNTED_VOLUME, in both
    // models.
    let text = |start: &str, load: &str| {
        format!(
            r#"[[volume]]
name = '\\server\share'
filesystem = "mup"
[[driver]]
name = "P"
sample = "probe"
model = "minifilter"
start = "{start}"
altitude = "370100"
{load}"#
        )
    };
    let share = |r: &Run| {
        setups(r, "P").into_iter().filter(|s| s.starts_with(r"\\server")).collect::<Vec<_>>()
    };
    let (l, m) = both(&text("boot", ""), "P");
    clean(&l);
    clean(&m);
    let newly = concat!(
        r"\\server\share InstanceSetupFlags(AUTOMATIC_ATTACHMENT | NEWLY_MOUNTED_VOLUME)",
        " STATUS_SUCCESS"
    );
    assert_eq!(share(&l), [newly.to_owned()]);
    assert_eq!(share(&m), share(&l));
    let (l, m) = both(&text("demand", "[[step]]\naction = \"load\"\ndriver = \"P\"\n"), "P");
    clean(&l);
    clean(&m);
    let found = r"\\server\share InstanceSetupFlags(AUTOMATIC_ATTACHMENT) STATUS_SUCCESS";
    assert_eq!(share(&l), [found.to_owned()]);
    assert_eq!(share(&m), share(&l));
}

#[test]
fn raw_volumes_agree() {
    // Row `volumes`: RAW's control devices are attached by name, by the legacy filter in its
    // DriverEntry and by each Filter Manager frame, so the volume RAW mounts on a volume open of
    // unformatted media has the filter in both models, told FLT_FSTYPE_RAW; one that refuses RAW
    // sees nothing there in either.
    let text = |file_systems: &str| {
        format!(
            r#"
[[volume]]
name = "X:"
filesystem = "ntfs"
blank = true
mount = "step"
[[driver]]
name = "P"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "370100"
[driver.parameters]
FileSystems = "{file_systems}"
[[step]]
action = "mount"
volume = "X:"
[[step]]
action = "io"
volume = "X:"
op = "create"
[[step]]
action = "io"
volume = "X:"
op = "close"
"#
        )
    };
    let told = |r: &Run| -> Vec<String> {
        r.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Callback {
                    driver,
                    callback: Callback::InstanceSetup { volume, status, .. },
                    ..
                } if driver == "P" => Some(format!("{:?} {status}", volume.filesystem)),
                _ => None,
            })
            .collect()
    };
    let (l, m) = both(&text("any"), "P");
    for r in [&l, &m] {
        clean(r);
        assert_eq!(told(r), ["FLT_FSTYPE_RAW STATUS_SUCCESS"]);
        assert_eq!(step_statuses(r)[0], "mount X:: STATUS_UNRECOGNIZED_VOLUME");
    }
    assert_eq!(setups(&l, "P"), setups(&m, "P"));
    assert!(!seen(&l, "P")[1].1.is_empty(), "the volume open reaches the filter");
    assert_eq!(seen(&l, "P"), seen(&m, "P"));
    let (l, m) = both(&text("ntfs"), "P");
    for r in [&l, &m] {
        clean(r);
        assert_eq!(told(r), ["FLT_FSTYPE_RAW STATUS_FLT_DO_NOT_ATTACH"]);
        assert!(seen(r, "P").iter().all(|(_, cbs)| cbs.is_empty()), "{:?}", seen(r, "P"));
    }
}

#[test]
fn unload_differs_stop_agrees() {
    // Row `unload`.
    const { assert!(MINI.non_mandatory_unload && !LEGACY.non_mandatory_unload) };
    const { assert!(MINI.unload_needs_callback == LEGACY.unload_needs_callback) };
    let text = format!(
        "{C_VOLUME}
[[driver]]
name = \"Q\"
sample = \"probe\"
model = \"minifilter\"
start = \"boot\"
altitude = \"370200\"
[driver.parameters]
Unload = \"none\"
[[driver]]
name = \"P\"
sample = \"probe\"
model = \"minifilter\"
start = \"boot\"
altitude = \"370100\"
[driver.parameters]
Unload = \"refuse\"
[[step]]
action = \"unload\"
driver = \"P\"
[[step]]
action = \"stop\"
driver = \"Q\"
[[step]]
action = \"stop\"
driver = \"P\"
"
    );
    let s = parse("u.toml", &text).unwrap();
    let legacy = run(&s.with_model("P", Model::Legacy).with_model("Q", Model::Legacy));
    let mini = run(&s);
    assert_eq!(legacy.steps[0].status, fsfilter::Status::FLT_FILTER_NOT_FOUND);
    assert_eq!(mini.steps[0].status, fsfilter::Status::FLT_DO_NOT_DETACH);
    // No unload callback: neither model can stop it.
    assert!(!legacy.steps[1].status.is_success() && !mini.steps[1].status.is_success());
    // A service stop is mandatory in both, and the callback is told so. (Q, which cannot stop,
    // loaded first: as a legacy filter it sits below P, so P's stop is not held up by it.)
    assert!(legacy.steps[2].status.is_success() && mini.steps[2].status.is_success());
    for r in [&legacy, &mini] {
        assert!(r.events.iter().any(|e| matches!(&e.kind,
            EventKind::Callback { driver, callback: Callback::UnloadCallback { flags, .. }, .. }
                if driver == "P" && flags.contains(fsfilter::UnloadFlags::MANDATORY))));
    }
}

#[test]
fn manual_attach_and_detach_differ() {
    // Row `manual-attach-detach`.
    const { assert!(MINI.manual_attach && !LEGACY.manual_attach) };
    let text = format!(
        "{C_VOLUME}
[[driver]]
name = \"P\"
sample = \"probe\"
model = \"minifilter\"
start = \"boot\"
altitude = \"370100\"
instance_flags = 1
[[step]]
action = \"attach\"
driver = \"P\"
volume = \"C:\"
[[step]]
action = \"detach\"
driver = \"P\"
volume = \"C:\"
"
    );
    let s = parse("m.toml", &text).unwrap();
    let mini = run(&s);
    assert_eq!(
        step_statuses(&mini),
        ["attach P C:: STATUS_SUCCESS", "detach P C:: STATUS_SUCCESS"]
    );
    assert!(setups(&mini, "P").iter().any(|x| x.contains("MANUAL_ATTACHMENT")));
    let mut legacy_s = s.clone();
    for d in &mut legacy_s.drivers {
        d.model = Model::Legacy;
        d.altitude = None;
        d.instance_flags = 0;
    }
    let legacy = run(&legacy_s);
    assert_eq!(
        step_statuses(&legacy),
        ["attach P C:: STATUS_FLT_FILTER_NOT_FOUND", "detach P C:: STATUS_FLT_FILTER_NOT_FOUND"]
    );
}

#[test]
fn data_scan_differs_verdicts_agree() {
    // Row `data-scan`: the Filter Manager's sections under the minifilter, FsRtl's under the
    // legacy filter; the same files are refused.
    const { assert!(MINI.filter_manager_data_scan && !LEGACY.filter_manager_data_scan) };
    let text = r#"
[[volume]]
name = "C:"
filesystem = "ntfs"
files = { "bad.exe" = "..X5O!P%@AP..", "good.txt" = "fine" }
[[driver]]
name = "S"
sample = "scanner"
model = "minifilter"
start = "boot"
altitude = "323050"
[driver.parameters]
Pattern = "X5O!P%@AP"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "bad.exe"
[[step]]
action = "io"
volume = "C:"
op = "create"
path = "good.txt"
"#;
    let (l, m) = both(text, "S");
    assert_eq!(step_statuses(&l), step_statuses(&m));
    assert_eq!(step_statuses(&m)[0], "io create C:\\bad.exe: STATUS_ACCESS_DENIED");
    let modes = |r: &Run| -> Vec<fsfilter::DataScanMode> {
        r.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Callback { callback: Callback::DataScan { mode, .. }, .. } => {
                    Some(*mode)
                }
                _ => None,
            })
            .collect()
    };
    assert!(!modes(&l).is_empty(), "the legacy filter scanned nothing");
    assert!(modes(&l).iter().all(|m| *m == fsfilter::DataScanMode::FsRtlFallback));
    assert!(modes(&m).iter().all(|m| *m == fsfilter::DataScanMode::FilterManager));
    assert_eq!(modes(&l).len(), modes(&m).len());
}

/// Row `dismount`: the probe on a FAT volume that is dismounted with a file open on it.
const DISMOUNT: &str = r#"
[[volume]]
name = "F:"
filesystem = "fat"
files = { "a.txt" = "x" }
[[driver]]
name = "P"
sample = "probe"
model = "minifilter"
start = "boot"
altitude = "370100"
[[step]]
action = "io"
volume = "F:"
op = "read"
path = "a.txt"
[[step]]
action = "dismount"
volume = "F:"
"#;

#[test]
fn dismount_agrees() {
    // Row `dismount`: the instance is torn down with VOLUME_DISMOUNT in both models.
    let text = DISMOUNT;
    let (l, m) = both(text, "P");
    let teardowns = |r: &Run| -> Vec<String> {
        r.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Callback {
                    driver,
                    callback:
                        Callback::TeardownStart { reason } | Callback::TeardownComplete { reason },
                    ..
                } if driver == "P" => Some(format!("{reason:?}")),
                _ => None,
            })
            .collect()
    };
    assert_eq!(teardowns(&l), teardowns(&m));
    assert_eq!(teardowns(&m), ["TeardownFlags(VOLUME_DISMOUNT)", "TeardownFlags(VOLUME_DISMOUNT)"]);
    clean(&l);
    clean(&m);
}

#[test]
fn dismount_timing_differs() {
    // Row `dismount`, "when": a file is open on the volume when it is dismounted. The Filter
    // Manager tears the instance down at the dismount, before the caller closes the file; the
    // legacy backend sees the file's cleanup first and tears down when the volume's device goes.
    let text = DISMOUNT;
    let (l, m) = both(text, "P");
    // What P saw after the dismount, in order: "cleanup" for its cleanup pre callback,
    // "teardown" for its teardown start.
    let after_dismount = |r: &Run| -> Vec<&'static str> {
        let start = r
            .events
            .iter()
            .position(|e| matches!(e.kind, EventKind::Dismounted { .. }))
            .expect("dismounted");
        r.events[start..]
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Callback { driver, callback: Callback::Pre { major, .. }, .. }
                    if driver == "P" && *major == fsfilter::MajorFunction::Cleanup =>
                {
                    Some("cleanup")
                }
                EventKind::Callback {
                    driver, callback: Callback::TeardownStart { .. }, ..
                } if driver == "P" => Some("teardown"),
                _ => None,
            })
            .collect()
    };
    assert_eq!(after_dismount(&m), ["teardown"]);
    // The dismount's own volume handle, then the caller's file.
    assert_eq!(after_dismount(&l), ["cleanup", "cleanup", "teardown"]);
    clean(&l);
    clean(&m);
}

#[test]
fn every_capability_difference_has_a_row() {
    let rows =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/semantics.md"))
            .unwrap();
    let differences: Vec<_> = MINI.differences(&LEGACY).collect();
    assert!(differences.len() >= 8, "{differences:?}");
    for (field, _, _, row) in differences {
        assert!(
            rows.contains(&format!("<a id=\"{row}\"></a>")),
            "row {row} (for {field}) missing from docs/semantics.md"
        );
        assert!(
            rows.contains(&format!("`{field}`")),
            "capability `{field}` not named in docs/semantics.md"
        );
    }
}

/// Row `draining`, with the operation that shows it most: a directory-change notification the
/// file system holds until the directory changes, outstanding when the filter is stopped. The
/// Filter Manager drains it (its post callback runs at once, draining) and the stop finishes; the
/// legacy unload waits for it, a wait nothing in the run satisfies (`DEADLOCK`, the stop stays
/// pending). The change that comes later completes it under both, with no post callback.
#[test]
fn a_directory_notification_outstanding_at_a_stop_is_drained_or_waited_for() {
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n\n[[step]]\naction = \"io\"\nvolume = \"C:\"\n\
         op = \"directory_control\"\npath = \"\\\\\"\nnotify = \"file_name\"\n\n\
         [[step]]\naction = \"stop\"\ndriver = \"P\"\n\n\
         [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"new.txt\"\n"
    );
    let (legacy, mini) = both(&text, "P");
    const { assert!(MINI.draining && !LEGACY.draining) };
    let notification = |r: &Run| r.steps[0].io.unwrap();
    let posts = |r: &Run| -> Vec<bool> {
        let io = notification(r);
        r.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Callback {
                    io: Some(i),
                    callback: Callback::Post { draining, .. },
                    ..
                } if *i == io => Some(*draining),
                _ => None,
            })
            .collect()
    };
    let completed_at = |r: &Run| {
        let io = notification(r);
        r.events.iter().find_map(|e| match &e.kind {
            EventKind::IoComplete { io: i, status, .. } if *i == io => Some((e.step, *status)),
            _ => None,
        })
    };
    // The minifilter: drained at the stop, which finishes; completed by the create, step 2.
    assert_eq!(posts(&mini), [true]);
    assert_eq!(step_statuses(&mini)[1], "stop P: STATUS_SUCCESS");
    assert_eq!(completed_at(&mini), Some((Some(2), fsfilter::Status::SUCCESS)));
    clean(&mini);
    // The legacy filter: no post callback, a stop that waits for good.
    assert_eq!(posts(&legacy), Vec::<bool>::new());
    assert_eq!(step_statuses(&legacy)[1], "stop P: STATUS_PENDING");
    assert_eq!(completed_at(&legacy), Some((Some(2), fsfilter::Status::SUCCESS)));
    let rules: Vec<&str> = legacy
        .findings()
        .filter_map(|e| match &e.kind {
            EventKind::Verifier { rule, .. } => Some(rule.name()),
            _ => None,
        })
        .collect();
    // Past the deadlock the simulator goes on where Windows would still wait (what follows is
    // its consequence, docs/semantics.md): the wait is the finding.
    assert_eq!(rules.first(), Some(&"DEADLOCK"), "{rules:?}");
}

/// A directory change notification cancelled (`CancelIoEx`, the io op `cancel`) before the
/// stop: the file system's cancel routine completes it with `STATUS_CANCELLED`, which both
/// models' post callbacks see, in the cancel step and not draining; nothing is left outstanding,
/// so the legacy unload has nothing to wait for and both stops finish. The same scenario without
/// the cancel is the test above.
#[test]
fn a_directory_notification_cancelled_before_a_stop_reaches_both_post_callbacks_cancelled() {
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n\n[[step]]\naction = \"io\"\nvolume = \"C:\"\n\
         op = \"directory_control\"\npath = \"\\\\\"\nnotify = \"file_name\"\n\n\
         [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"cancel\"\npath = \"\\\\\"\n\n\
         [[step]]\naction = \"stop\"\ndriver = \"P\"\n"
    );
    let (legacy, mini) = both(&text, "P");
    for r in [&legacy, &mini] {
        let io = r.steps[0].io.unwrap();
        let posts: Vec<(Option<u32>, bool, fsfilter::Status)> = r
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Callback {
                    io: Some(i),
                    callback: Callback::Post { draining, status, .. },
                    ..
                } if *i == io => Some((e.step, *draining, *status)),
                _ => None,
            })
            .collect();
        assert_eq!(posts, [(Some(1), false, fsfilter::Status::CANCELLED)]);
        assert_eq!(
            step_statuses(r)[1..],
            ["io cancel C:\\: STATUS_SUCCESS", "stop P: STATUS_SUCCESS"]
        );
        clean(r);
    }
}

/// A `cancel` on a path whose handle a `cleanup` step closed: the handle is gone (its cleanup
/// ended every request on it), so nothing is outstanding, and no handle is looked up or opened
/// (found by the stress test: the closed handle was passed on, an `INVALID_HANDLE` finding).
/// The handle is overlapped: a synchronous one's cleanup would wait for the notification (the
/// file object's lock, docs/simulator.md, "Asynchronous I/O").
#[test]
fn a_cancel_after_the_handles_cleanup_finds_nothing() {
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n\n[[step]]\naction = \"io\"\nvolume = \"C:\"\n\
         op = \"create\"\npath = \"\\\\\"\noverlapped = true\n\n\
         [[step]]\naction = \"io\"\nvolume = \"C:\"\n\
         op = \"directory_control\"\npath = \"\\\\\"\nnotify = \"file_name\"\n\n\
         [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"cleanup\"\npath = \"\\\\\"\n\n\
         [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"cancel\"\npath = \"\\\\\"\n"
    );
    let (legacy, mini) = both(&text, "P");
    for r in [&legacy, &mini] {
        assert_eq!(
            step_statuses(r)[2..],
            ["io cleanup C:\\: STATUS_SUCCESS", "io cancel C:\\: STATUS_NOT_FOUND"]
        );
        clean(r);
    }
}

/// A byte-range lock waiting for a range (`wait = true`) and cancelled: the file system's cancel
/// routine completes it with `STATUS_CANCELLED`, which both models' post callbacks see in the
/// cancel step; the range is never granted to it, so the first handle's unlock and a new lock of
/// the same range through it succeed.
#[test]
fn a_waiting_lock_cancelled_reaches_both_post_callbacks_cancelled() {
    let lock = |path: &str, extra: &str| {
        format!(
            "\n[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"lock\"\npath = \"{path}\"\n\
             offset = 0\nlength = 4\n{extra}"
        )
    };
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n{}{}\n[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"cancel\"\n\
         path = \"\\\\data.bin\"\n{}",
        lock("data.bin", ""),
        lock("\\\\data.bin", "wait = true\n"),
        lock("data.bin", ""),
    );
    let (legacy, mini) = both(&text, "P");
    // The minifilter also sees the fast-I/O try the file system declined (its post says so,
    // rule 12); fast-I/O locks reach a legacy filter as IRPs only (operations-delivered).
    let declined = (Some(1), fsfilter::Status::FLT_DISALLOW_FAST_IO);
    let cancelled = (Some(2), fsfilter::Status::CANCELLED);
    for (r, expected) in [(&legacy, vec![cancelled]), (&mini, vec![declined, cancelled])] {
        let waiting = r.steps[1].io.unwrap();
        let posts: Vec<(Option<u32>, fsfilter::Status)> = r
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Callback {
                    io: Some(i),
                    callback:
                        Callback::Post { major: fsfilter::MajorFunction::LockControl, status, .. },
                    ..
                } if *i == waiting => Some((e.step, *status)),
                _ => None,
            })
            .collect();
        assert_eq!(posts, expected);
        let statuses = step_statuses(r);
        assert_eq!(statuses[1], "io lock C:\\data.bin (wait): STATUS_PENDING", "{statuses:?}");
        assert_eq!(statuses[2], "io cancel C:\\data.bin: STATUS_SUCCESS", "{statuses:?}");
        // The same handle locks the range again: its own lock is still there, nothing was
        // granted to the cancelled request.
        assert_eq!(statuses[3], "io lock C:\\data.bin: STATUS_LOCK_NOT_GRANTED", "{statuses:?}");
        clean(r);
    }
}

/// Asynchronous (overlapped) reads (see docs/semantics.md, asynchronous-io): a non-cached read
/// on a handle opened with `overlapped = true` answers `STATUS_PENDING` and completes from the
/// storage's DPC within the step, the filter's post callback seeing the read's success, under
/// both models; a read without an offset is refused before any filter sees it; a filter that
/// synchronizes the read makes the caller wait, under both models alike.
#[test]
fn an_overlapped_read_pends_under_both_models_unless_the_filter_synchronizes_it() {
    let step = |op: &str, path: &str, extra: &str| {
        format!(
            "\n[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"{path}\"\n{extra}"
        )
    };
    let read = "offset = 0\nlength = 512\nmode = \"noncached\"\n";
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n[driver.parameters]\nRules = \"synchronize read *secret.txt\"\n\
         {}{}{}{}{}",
        step("create", "data.bin", "overlapped = true\n"),
        step("read", "data.bin", read),
        step("read", "data.bin", "length = 4\n"),
        step("create", "secret.txt", "overlapped = true\n"),
        step("read", "secret.txt", read),
    );
    let (legacy, mini) = both(&text, "P");
    for r in [&legacy, &mini] {
        assert_eq!(
            step_statuses(r),
            [
                "io create C:\\data.bin (overlapped): STATUS_SUCCESS",
                "io read C:\\data.bin: STATUS_PENDING",
                "io read C:\\data.bin: STATUS_INVALID_PARAMETER",
                "io create C:\\secret.txt (overlapped): STATUS_SUCCESS",
                "io read C:\\secret.txt: STATUS_SUCCESS",
            ]
        );
        assert_eq!(r.steps[2].io, None, "refused before any request");
        let pending = r.steps[1].io;
        let completed = r.events.iter().find_map(|e| match &e.kind {
            EventKind::IoComplete { io, status, information, .. } if Some(*io) == pending => {
                Some((e.step, *status, *information))
            }
            _ => None,
        });
        assert_eq!(completed, Some((Some(1), fsfilter::Status::SUCCESS, 16)));
        clean(r);
    }
    let s = seen(&legacy, "P");
    assert_eq!(s, seen(&mini, "P"));
    let reads: Vec<&Vec<String>> =
        s.iter().filter(|(i, _)| [1, 4].contains(i)).map(|(_, c)| c).collect();
    assert_eq!(
        reads,
        [
            &vec![
                "pre IRP_MJ_READ Irp FLT_PREOP_SUCCESS_WITH_CALLBACK None".to_owned(),
                "post IRP_MJ_READ FLT_POSTOP_FINISHED_PROCESSING STATUS_SUCCESS".to_owned(),
            ],
            &vec![
                "note probe: rule 1 matched: synchronize".to_owned(),
                "pre IRP_MJ_READ Irp FLT_PREOP_SYNCHRONIZE None".to_owned(),
                "post IRP_MJ_READ FLT_POSTOP_FINISHED_PROCESSING STATUS_SUCCESS".to_owned(),
            ],
        ]
    );
}

/// Asynchronous requests other than reads and writes (docs/semantics.md, asynchronous-io): on a
/// handle opened with `overlapped = true`, a lock a filter pends answers `STATUS_PENDING` and
/// completes later, in the same step, as WRK's `NtLockFile` leaves it (the caller does not wait);
/// a flush is a synchronous API there (`NtFlushBuffersFile` waits on an event of its own), and
/// the same lock on a synchronous handle is waited for: both answer the final status, under both
/// models alike. Until December 7 the overlapped lock was waited for too.
#[test]
fn an_overlapped_lock_a_filter_pends_answers_pending_and_a_flush_waits() {
    let step = |op: &str, path: &str, extra: &str| {
        let head = "\n[[step]]\naction = \"io\"\nvolume = \"C:\"";
        format!("{head}\nop = \"{op}\"\npath = \"{path}\"\n{extra}")
    };
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n[driver.parameters]\nRules = \"pend:20 lock; pend:20 flush\"\n\
         {}{}{}{}",
        step("create", "data.bin", "overlapped = true\n"),
        step("lock", "data.bin", "offset = 0\nlength = 4\n"),
        step("flush", "data.bin", ""),
        step("lock", "plain.txt", "offset = 0\nlength = 4\n"),
    );
    let (legacy, mini) = both(&text, "P");
    for r in [&legacy, &mini] {
        assert_eq!(
            step_statuses(r),
            [
                "io create C:\\data.bin (overlapped): STATUS_SUCCESS",
                "io lock C:\\data.bin: STATUS_PENDING",
                "io flush C:\\data.bin: STATUS_SUCCESS",
                "io lock C:\\plain.txt: STATUS_SUCCESS",
            ]
        );
        let pending = r.steps[1].io;
        let completed = r.events.iter().find_map(|e| match &e.kind {
            EventKind::IoComplete { io, status, .. } if Some(*io) == pending => {
                Some((e.step, *status))
            }
            _ => None,
        });
        assert_eq!(completed, Some((Some(1), fsfilter::Status::SUCCESS)));
        clean(r);
        // The lock's IRP was pended by the filter and resumed after the call returned.
        let lock = &seen(r, "P")[1].1;
        assert!(lock.iter().any(|c| c.ends_with("Irp FLT_PREOP_PENDING None")), "{lock:?}");
    }
}

/// Row `operations-delivered`, the FsFilter callbacks: a `map` step (`NtCreateSection`) is the
/// FsFilter operation `IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION`, then
/// `IRP_MJ_RELEASE_FOR_SECTION_SYNCHRONIZATION`, under both models alike; a filter that denies the
/// acquire refuses the section with its status and gets no post callback (and no release comes).
#[test]
fn a_mapping_is_an_fs_filter_operation_under_both_models() {
    let step = |path: &str, extra: &str| {
        format!(
            "\n[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"map\"\npath = \"{path}\"\n{extra}"
        )
    };
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n[driver.parameters]\n\
         Operations = \"acquire_for_section_synchronization,release_for_section_synchronization\"\n\
         Rules = \"deny acquire_for_section_synchronization *secret.txt\"\n{}{}",
        step("data.bin", ""),
        step("secret.txt", "protection = \"execute_read\"\n"),
    );
    let (legacy, mini) = both(&text, "P");
    for r in [&legacy, &mini] {
        assert_eq!(
            step_statuses(r),
            [
                "io map C:\\data.bin (readonly): STATUS_SUCCESS",
                "io map C:\\secret.txt (execute_read): STATUS_ACCESS_DENIED",
            ]
        );
        clean(r);
    }
    let s = seen(&legacy, "P");
    assert_eq!(s, seen(&mini, "P"));
    let acquire = "IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION";
    let release = "IRP_MJ_RELEASE_FOR_SECTION_SYNCHRONIZATION";
    assert_eq!(
        s,
        [
            (
                0,
                vec![
                    format!("pre {acquire} FsFilter FLT_PREOP_SUCCESS_WITH_CALLBACK None"),
                    format!("post {acquire} FLT_POSTOP_FINISHED_PROCESSING STATUS_SUCCESS"),
                    format!("pre {release} FsFilter FLT_PREOP_SUCCESS_WITH_CALLBACK None"),
                    format!("post {release} FLT_POSTOP_FINISHED_PROCESSING STATUS_SUCCESS"),
                ]
            ),
            (
                1,
                vec![
                    "note probe: rule 1 matched: deny".to_owned(),
                    format!(
                        "pre {acquire} FsFilter FLT_PREOP_COMPLETE Some(STATUS_ACCESS_DENIED (0xC0000022))"
                    ),
                ]
            ),
        ]
    );
    const { assert!(LEGACY.fs_filter_callbacks && MINI.fs_filter_callbacks) };
}

/// A `map` step that opens its path itself asks for execute access on top of the default
/// access (README, the tenth extension), so every protection can reach the filters: a writable
/// mapping, and an executable and writable one, are not refused by the I/O manager.
#[test]
fn a_map_step_of_its_own_handle_can_map_writable_and_executable() {
    let step = |path: &str, protection: &str| {
        format!(
            "\n[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"map\"\npath = \"{path}\"\n\
             protection = \"{protection}\"\n"
        )
    };
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n[driver.parameters]\n\
         Operations = \"acquire_for_section_synchronization\"\n{}{}",
        step("data.bin", "readwrite"),
        step("plain.txt", "execute_readwrite"),
    );
    let (legacy, mini) = both(&text, "P");
    for r in [&legacy, &mini] {
        assert_eq!(
            step_statuses(r),
            [
                "io map C:\\data.bin (readwrite): STATUS_SUCCESS",
                "io map C:\\plain.txt (execute_readwrite): STATUS_SUCCESS",
            ]
        );
        clean(r);
    }
    assert_eq!(seen(&legacy, "P"), seen(&mini, "P"));
    assert_eq!(seen(&legacy, "P").len(), 2, "both acquires reached the filter");
}

/// The page writers (README, the eleventh extension): the modified-page writer's and a flush's
/// paging writes come between their FsFilter acquire and release in both models, the lazy
/// writer's alone; a filter that refuses the modified-page writer's acquire keeps the write
/// from being sent, and no release follows.
#[test]
fn page_writers_agree_under_both_models() {
    let step = |path: &str, writer: &str| {
        format!(
            "\n[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"write\"\npath = \"{path}\"\n\
             mode = \"paging\"\noffset = 0\ndata = \"page\"\n{writer}"
        )
    };
    let text = format!(
        "{C_VOLUME}{PROBE_P}\n[driver.parameters]\n\
         Operations = \"write,acquire_for_mod_write,release_for_mod_write,acquire_for_cc_flush,\
         release_for_cc_flush\"\n\
         Rules = \"deny acquire_for_mod_write *secret.txt\"\n{}{}{}{}",
        step("data.bin", "writer = \"modified-page-writer\"\n"),
        step("data.bin", "writer = \"flush\"\n"),
        step("data.bin", ""),
        step("secret.txt", "writer = \"modified-page-writer\"\n"),
    );
    let (legacy, mini) = both(&text, "P");
    for r in [&legacy, &mini] {
        assert_eq!(
            step_statuses(r),
            [
                "io write C:\\data.bin (modified-page-writer): STATUS_SUCCESS",
                "io write C:\\data.bin (flush): STATUS_SUCCESS",
                "io write C:\\data.bin: STATUS_SUCCESS",
                "io write C:\\secret.txt (modified-page-writer): STATUS_ACCESS_DENIED",
            ]
        );
        clean(r);
    }
    let s = seen(&legacy, "P");
    assert_eq!(s, seen(&mini, "P"));
    let bracket = |acquire: &str, release: &str| {
        let ok = "FLT_PREOP_SUCCESS_WITH_CALLBACK None";
        let done = "FLT_POSTOP_FINISHED_PROCESSING STATUS_SUCCESS";
        vec![
            format!("pre IRP_MJ_ACQUIRE_FOR_{acquire} FsFilter {ok}"),
            format!("post IRP_MJ_ACQUIRE_FOR_{acquire} {done}"),
            format!("pre IRP_MJ_WRITE Irp {ok}"),
            format!("post IRP_MJ_WRITE {done}"),
            format!("pre IRP_MJ_RELEASE_FOR_{release} FsFilter {ok}"),
            format!("post IRP_MJ_RELEASE_FOR_{release} {done}"),
        ]
    };
    let lazy = vec![
        "pre IRP_MJ_WRITE Irp FLT_PREOP_SUCCESS_WITH_CALLBACK None".to_owned(),
        "post IRP_MJ_WRITE FLT_POSTOP_FINISHED_PROCESSING STATUS_SUCCESS".to_owned(),
    ];
    let refused = vec![
        "note probe: rule 1 matched: deny".to_owned(),
        "pre IRP_MJ_ACQUIRE_FOR_MOD_WRITE FsFilter FLT_PREOP_COMPLETE \
         Some(STATUS_ACCESS_DENIED (0xC0000022))"
            .to_owned(),
    ];
    assert_eq!(
        s,
        [
            (0, bracket("MOD_WRITE", "MOD_WRITE")),
            (1, bracket("CC_FLUSH", "CC_FLUSH")),
            (2, lazy),
            (3, refused),
        ]
    );
}

#[test]
fn oplock_requests_breaks_and_acknowledgements_agree() {
    // Row `oplocks` (docs/semantics.md): NTFS pends a granted oplock request until its break, so
    // both models see the request's pre callback when it is sent and its post callback only in
    // the step whose open breaks the oplock, with the same statuses; the acknowledgement's
    // callbacks run in its own step (and, keeping a Level 2 oplock, its post at that break).
    let text = format!(
        "{C_VOLUME}{PROBE_P}
[[step]]
action = \"io\"
volume = \"C:\"
op = \"create\"
path = \"data.bin\"
overlapped = true

[[step]]
action = \"io\"
volume = \"C:\"
op = \"fsctl\"
path = \"data.bin\"
control = \"request_oplock_level_1\"

[[step]]
action = \"io\"
volume = \"C:\"
op = \"create\"
path = \"\\\\data.bin\"
complete_if_oplocked = true

[[step]]
action = \"io\"
volume = \"C:\"
op = \"fsctl\"
path = \"data.bin\"
control = \"oplock_break_acknowledge\"

[[step]]
action = \"io\"
volume = \"C:\"
op = \"write\"
path = \"\\\\data.bin\"
offset = 0
data = \"x\"
"
    );
    let (l, m) = both(&text, "P");
    clean(&l);
    clean(&m);
    assert_eq!(step_statuses(&l), step_statuses(&m));
    let statuses: Vec<fsfilter::Status> = l.steps.iter().map(|s| s.status).collect();
    let in_progress = fsfilter_sim::fs::oplock::STATUS_OPLOCK_BREAK_IN_PROGRESS;
    let pending = fsfilter::Status::PENDING;
    assert_eq!(statuses[1..4], [pending, in_progress, pending], "{statuses:?}");
    let strip = |r: &Run| {
        seen(r, "P")
            .into_iter()
            .map(|(s, cbs)| {
                let cbs: Vec<String> = cbs
                    .into_iter()
                    .filter(|c| c.contains("IRP_MJ_FILE_SYSTEM_CONTROL"))
                    .map(|c| c.replace(" Irp ", " ").replace(" FastIo ", " "))
                    .collect();
                (s, cbs)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&l), strip(&m));
    // When each FSCTL's post ran: the request's at the breaking open (step 2), the
    // acknowledgement's at the write that broke its Level 2 oplock (step 4).
    let post_steps = |r: &Run| -> Vec<(u32, Option<u32>)> {
        r.steps
            .iter()
            .filter(|s| s.what.contains("fsctl"))
            .filter_map(|s| {
                let io = s.io?;
                r.events.iter().find_map(|e| match &e.kind {
                    EventKind::Callback {
                        driver,
                        io: Some(i),
                        callback: Callback::Post { .. },
                        ..
                    } if driver == "P" && *i == io => Some((s.index, e.step)),
                    _ => None,
                })
            })
            .collect()
    };
    assert_eq!(post_steps(&l), [(1, Some(2)), (3, Some(4))]);
    assert_eq!(post_steps(&m), post_steps(&l));
}

#[test]
fn an_overlapped_step_waiting_for_a_break_ends_within_its_step_by_the_bound() {
    // Each step runs until nothing is left to do (the lab settles the machine after it), the
    // oplock bound's timer included: an overlapped write that waits for an unacknowledged break
    // answers STATUS_PENDING, and the break is taken as acknowledged to none before its step
    // ends, so the owner's acknowledgement in the next step finds no break (README, twelfth
    // extension). Both models alike.
    let text = format!(
        "{C_VOLUME}{PROBE_P}
[[step]]
action = \"io\"
volume = \"C:\"
op = \"create\"
path = \"data.bin\"
overlapped = true

[[step]]
action = \"io\"
volume = \"C:\"
op = \"fsctl\"
path = \"data.bin\"
control = \"request_batch_oplock\"

[[step]]
action = \"io\"
volume = \"C:\"
op = \"create\"
path = \"\\\\data.bin\"
overlapped = true
complete_if_oplocked = true

[[step]]
action = \"io\"
volume = \"C:\"
op = \"write\"
path = \"\\\\data.bin\"
offset = 0
data = \"x\"

[[step]]
action = \"io\"
volume = \"C:\"
op = \"fsctl\"
path = \"data.bin\"
control = \"oplock_break_acknowledge\"
"
    );
    let (l, m) = both(&text, "P");
    clean(&l);
    clean(&m);
    assert_eq!(step_statuses(&l), step_statuses(&m));
    let statuses: Vec<fsfilter::Status> = l.steps.iter().map(|s| s.status).collect();
    let pending = fsfilter::Status::PENDING;
    let protocol = fsfilter_sim::fs::oplock::STATUS_INVALID_OPLOCK_PROTOCOL;
    assert_eq!(statuses[3..], [pending, protocol], "{statuses:?}");
    for r in [&l, &m] {
        let timed_out = r.events.iter().find_map(|e| match &e.kind {
            EventKind::System { what: "oplock_break_timed_out", .. } => Some(e.step),
            _ => None,
        });
        assert_eq!(timed_out, Some(Some(3)), "the write's own step");
        let write = r.steps[3].io;
        let done = r.events.iter().find_map(|e| match &e.kind {
            EventKind::IoComplete { io, status, .. } if Some(*io) == write => {
                Some((e.step, *status))
            }
            _ => None,
        });
        assert_eq!(done, Some((Some(3), fsfilter::Status::SUCCESS)));
    }
}
