//! Every scenario under `lab/scenarios/` (the classic questions, and the demonstration) runs, and
//! its JSON document (scenario.md) matches the snapshot in `lab/tests/snapshots/<name>.json`.
//! A changed behaviour shows as a diff here; to accept it, run with `FSFILTER_BLESS=1` and review
//! the snapshot's diff like code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::path::{Path, PathBuf};

use fsfilter_lab::{json, run, scenario};

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn check(path: &Path) -> Result<(), String> {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let s = scenario::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    let r = run::run(&s);
    if r.has_findings() {
        return Err(format!("{name}: verifier findings in an example scenario"));
    }
    let document = serde_json::to_string_pretty(&json::document(&r)).unwrap() + "\n";
    let snapshot =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.json"));
    if std::env::var_os("FSFILTER_BLESS").is_some() {
        std::fs::write(&snapshot, &document).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&snapshot).map_err(|e| {
        format!("{name}: no snapshot at {} ({e}); run with FSFILTER_BLESS=1", snapshot.display())
    })?;
    if expected != document {
        let (line, (want, got)) = expected
            .lines()
            .zip(document.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map_or((0, ("(length)", "(length)")), |(i, p)| (i + 1, p));
        return Err(format!(
            "{name}: JSON differs from the snapshot at line {line}:\n  want {want}\n  got  {got}"
        ));
    }
    Ok(())
}

#[test]
fn every_example_scenario_matches_its_snapshot() {
    let files = scenarios();
    assert!(files.len() >= 5, "{files:?}");
    let failures: Vec<String> = files.iter().filter_map(|p| check(p).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn runs_are_deterministic() {
    for path in scenarios() {
        let text = std::fs::read_to_string(&path).unwrap();
        let s = scenario::parse("x.toml", &text).unwrap();
        let a = serde_json::to_string(&json::document(&run::run(&s))).unwrap();
        let b = serde_json::to_string(&json::document(&run::run(&s))).unwrap();
        assert_eq!(a, b, "{}", path.display());
    }
}

#[test]
fn the_example_scenarios_answer_their_questions() {
    let load = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
        let s = scenario::parse(name, &std::fs::read_to_string(path).unwrap()).unwrap();
        let r = run::run(&s);
        (s, r)
    };
    let stack = |r: &run::Run, volume: &str| -> Vec<String> {
        let end = r.snapshots.last().unwrap();
        let (_, st) = end.volumes.iter().find(|(v, _)| v == volume).unwrap();
        st.iter()
            .map(|e| match e {
                run::StackEntry::Legacy { driver } => driver.clone(),
                run::StackEntry::Frame { frame, instances } => {
                    let i: Vec<&str> = instances.iter().map(|(d, _, _)| d.as_str()).collect();
                    format!("frame {frame}[{}]", i.join(","))
                }
                run::StackEntry::FileSystem { driver } => driver.clone(),
            })
            .collect()
    };
    // Load order is stack order for legacy filters; altitude order inside a frame for
    // minifilters, even for one loaded after a legacy filter it outranks (no frame above it).
    let (_, r) = load("attach-order.toml");
    assert_eq!(stack(&r, "C:"), ["LegacyLate", "LegacyA", "frame 0[MiniLate,MiniA]", "Ntfs"]);
    assert_eq!(
        stack(&r, "F:"),
        stack(&r, "C:").iter().map(|s| s.replace("Ntfs", "fastfat")).collect::<Vec<_>>()
    );
    // The demonstration: the scanner registered while Frame 0 was the only frame, so it stays
    // below the legacy filter that loaded after it, whose range the passthrough is above.
    let (_, r) = load("demo.toml");
    let c = stack(&r, "C:");
    let at = |s: &str| c.iter().position(|e| e.contains(s)).unwrap();
    assert!(c[at("Scanner")].starts_with("frame 0["), "{c:?}");
    assert!(c[at("Passthrough")].starts_with("frame 1["), "{c:?}");
    assert!(at("Passthrough") < at("EncLegacy") && at("EncLegacy") < at("Scanner"), "{c:?}");
    // RAW: the volume a volume open of blank media mounts has both models' filters, the
    // legacy filter below Frame 1, whose stop then stays pending; the NTFS-only probe refused it.
    let (_, r) = load("raw-volume.toml");
    assert_eq!(stack(&r, "X:"), ["frame 1[AntiVirus]", "Activity", "frame 0[]", "RAW"]);
    let statuses: Vec<String> =
        r.steps.iter().map(|s| format!("{} {}", s.what, s.status.name().unwrap_or("?"))).collect();
    assert_eq!(statuses[0], "mount X: STATUS_UNRECOGNIZED_VOLUME");
    assert_eq!(statuses[3], "stop Activity STATUS_PENDING");
    // facts.md §2.2: Frame 1 appears above the legacy filter; the anti-virus joins it.
    let (_, r) = load("frames.toml");
    assert_eq!(
        stack(&r, "C:"),
        ["frame 1[AntiVirus,Compression]", "OldEnc", "frame 0[Backup]", "Ntfs"]
    );
    // Unload semantics.
    let (_, r) = load("unload.toml");
    let statuses: Vec<String> =
        r.steps.iter().map(|s| format!("{} {}", s.what, s.status.name().unwrap_or("?"))).collect();
    assert_eq!(
        statuses[..7],
        [
            "unload Refuser STATUS_FLT_DO_NOT_DETACH",
            "unload Stuck STATUS_FLT_DO_NOT_DETACH",
            "stop Stuck STATUS_INVALID_DEVICE_REQUEST",
            "unload OldLegacy STATUS_FLT_FILTER_NOT_FOUND",
            "load NewLegacy STATUS_SUCCESS",
            "stop OldLegacy STATUS_PENDING",
            "stop Refuser STATUS_SUCCESS",
        ]
    );
    assert_eq!(stack(&r, "C:"), ["frame 0[Stuck]", "Ntfs"]);
    // Fast I/O per model: the second cached read is fast I/O in both; the lock and the query
    // are fast I/O to the minifilter, IRPs to the legacy filter; the cached read of the locked
    // file asks the stack's FastIoCheckIfPossible inside it, in both; the attribute query by name is
    // the fast-I/O IRP_MJ_NETWORK_QUERY_OPEN in both, served by NTFS, so no create follows it
    // (docs/semantics.md, operations-delivered).
    let (s, mini) = load("fast-io.toml");
    let legacy = run::run(&s.with_model("Probe", scenario::Model::Legacy));
    let kinds = |r: &run::Run| -> Vec<String> {
        r.events
            .iter()
            .filter_map(|e| match &e.kind {
                fsfilter_sim::EventKind::Callback {
                    callback: fsfilter_sim::Callback::Pre { major, kind, .. },
                    ..
                } if e.step.is_some() => {
                    Some(format!("{} {kind:?}", major.short_name().unwrap_or("?")))
                }
                _ => None,
            })
            .collect()
    };
    let expected = |lock_and_query: &str| {
        [
            "create Irp".to_owned(),
            "read Irp".to_owned(),
            "read FastIo".to_owned(),
            format!("lock {lock_and_query}"),
            "read FastIo".to_owned(),
            "fast_io_check_if_possible FastIo".to_owned(),
            format!("query_information {lock_and_query}"),
            "network_query_open FastIo".to_owned(),
            "cleanup Irp".to_owned(),
            "close Irp".to_owned(),
        ]
    };
    assert_eq!(kinds(&mini), expected("FastIo"));
    assert_eq!(kinds(&legacy), expected("Irp"));

    // Oplocks: granted by pending the request, completed by the step that breaks it; refused
    // with two handles; an unacknowledged break ends after the simulator's 35 s bound.
    let (_, r) = load("oplocks.toml");
    let statuses: Vec<u32> = r.steps.iter().map(|s| s.status.bits()).collect();
    assert_eq!(
        statuses,
        [0, 0x103, 0x108, 0x103, 0, 0xC000_00E2, 0, 0x103, 0, 0xC000_00E3],
        "{:?}",
        r.steps.iter().map(|s| &s.what).collect::<Vec<_>>()
    );
    let completed_in = |step: usize| {
        let io = r.steps[step].io;
        r.events.iter().find_map(|e| match &e.kind {
            fsfilter_sim::EventKind::IoComplete { io: i, information, .. } if Some(*i) == io => {
                Some((e.step, *information))
            }
            _ => None,
        })
    };
    assert_eq!(completed_in(1), Some((Some(2), 7)), "broken to Level 2 by step 2's open");
    assert_eq!(completed_in(3), Some((Some(4), 8)), "the Level 2 oplock broken by the write");
    assert_eq!(completed_in(7), Some((Some(8), 7)), "broken by step 8's open, which waited");
    let last = r.events.iter().rev().find(|e| e.step == Some(8)).unwrap();
    assert!(last.time >= 35_000 * 10_000, "the bound: {} ", last.time);

    // The Windows 7 oplocks: RWH granted, broken to RH by a second handle's open (the request's
    // information the output buffer's 24 bytes), RH kept by the acknowledgement and broken to
    // none by a write; RW refused with two handles; R and RH on one handle each; no Level 2
    // beside RH; the owner's write breaks the other's RH only.
    let (_, r) = load("win7-oplocks.toml");
    let statuses: Vec<u32> = r.steps.iter().map(|s| s.status.bits()).collect();
    assert_eq!(
        statuses,
        [0, 0x103, 0x108, 0x103, 0, 0, 0xC000_00E2, 0x103, 0x103, 0xC000_00E2, 0, 0, 0],
        "{:?}",
        r.steps.iter().map(|s| &s.what).collect::<Vec<_>>()
    );
    let completed_in = |step: usize| {
        let io = r.steps[step].io;
        r.events.iter().find_map(|e| match &e.kind {
            fsfilter_sim::EventKind::IoComplete { io: i, information, .. } if Some(*i) == io => {
                Some((e.step, *information))
            }
            _ => None,
        })
    };
    assert_eq!(completed_in(1), Some((Some(2), 24)), "RWH broken to RH by step 2's open");
    assert_eq!(completed_in(3), Some((Some(4), 24)), "RH broken to none by the write");
    assert_eq!(completed_in(8), Some((Some(10), 24)), "the other's RH broken by the owner");
    assert_eq!(completed_in(7), Some((Some(12), 24)), "the owner's R ended by its close");
    let said: Vec<&str> = r
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            fsfilter_sim::EventKind::System { what: "oplock_output", detail, .. } => {
                Some(detail.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        [
            "RWH -> RH, acknowledgement required",
            "RH -> none, acknowledgement required",
            "RH -> none, acknowledgement required"
        ]
    );
}

/// Each example scenario with the events of its JSON document.
fn example_events() -> Vec<(PathBuf, Vec<serde_json::Value>)> {
    scenarios()
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let s = scenario::parse("x.toml", &text).unwrap();
            let doc = json::document(&run::run(&s));
            let events = doc.get("events").and_then(|e| e.as_array()).unwrap().clone();
            (path, events)
        })
        .collect()
}

#[test]
fn outcomes_and_statuses_are_wdk_names() {
    // scenario.md: "Status, flag, operation and outcome names are the WDK's spellings." The
    // Filter Manager's flt_pre and flt_post events carried their outcome as a number before a fix
    // of December 4.
    for (path, events) in example_events() {
        let mut seen = 0;
        for e in &events {
            for key in ["outcome", "status"] {
                if let Some(v) = e.get(key) {
                    let name = v
                        .as_str()
                        .unwrap_or_else(|| panic!("{}: {key} {v} in {e}", path.display()));
                    assert!(
                        name.starts_with("FLT_") || name.starts_with("STATUS_"),
                        "{}: {key} {name} in {e}",
                        path.display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen > 0, "{}", path.display());
    }
}

#[test]
fn every_callback_event_names_its_volume() {
    // scenario.md's instance_setup, pre and post events carry their volume, under both models. A
    // legacy filter on a namespace file system (the demonstration's EncLegacy on \\server\share)
    // had `"volume": null` before a fix of December 4.
    for (path, events) in example_events() {
        for e in &events {
            let kind = e.get("kind").and_then(|k| k.as_str());
            if matches!(kind, Some("instance_setup" | "pre" | "post")) {
                let volume = e.get("volume");
                assert!(volume.is_some_and(|v| v.is_string()), "{}: {e}", path.display());
            }
        }
    }
}

#[test]
fn every_event_about_a_request_names_it() {
    // scenario.md's pre, post and io_complete events name their request in an `io` field; the
    // newer events about one request (`directory_changes`, the changes a notification returned;
    // `fast_io_declined`) do too, so that a script joins them without parsing their detail.
    let mut seen = 0;
    for (path, events) in example_events() {
        let started: Vec<u64> = events
            .iter()
            .filter(|e| e.get("kind").and_then(|k| k.as_str()) == Some("io_start"))
            .filter_map(|e| e.get("io").and_then(serde_json::Value::as_u64))
            .collect();
        for e in &events {
            let kind = e.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            if !matches!(kind, "directory_changes" | "fast_io_declined") {
                continue;
            }
            seen += 1;
            let io = e.get("io").and_then(serde_json::Value::as_u64);
            let io = io.unwrap_or_else(|| panic!("{}: no io in {e}", path.display()));
            assert!(started.contains(&io), "{}: {e}", path.display());
            let detail = e.get("detail").and_then(|d| d.as_str()).unwrap_or_default();
            assert!(detail.starts_with(&format!("io {io}: ")), "{}: {e}", path.display());
        }
    }
    assert!(seen >= 3, "the examples have such events: {seen}");
}
