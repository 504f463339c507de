//! The lab as the spy's reader (lab/scenarios/spy.toml): the spy as a minifilter and as a legacy
//! filter on one volume, each read through its own model's channel. Each log holds one record
//! for every operation its spy's callbacks saw, in order, with the results the requests got;
//! the two logs agree on the requests and differ where the models do (docs/semantics.md, row
//! `spy`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::run::{Run, run};
use fsfilter_lab::scenario::{Model, parse};
use fsfilter_lab::spylog::{Decoded, Log, decode_all};
use fsfilter_sim::{Callback, EventKind};

fn spy_run() -> Run {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/spy.toml");
    let s = parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    run(&s)
}

/// The operations `driver`'s pre callbacks saw, as (WDK name, kind), in order.
fn pre_callbacks(r: &Run, driver: &str) -> Vec<(String, &'static str)> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback {
                driver: d, callback: Callback::Pre { major, kind, .. }, ..
            } if d.as_str() == driver => {
                let kind = match kind {
                    fsfilter::OperationKind::Irp => "irp",
                    fsfilter::OperationKind::FastIo => "fast_io",
                    fsfilter::OperationKind::FsFilter => "fs_filter",
                };
                Some((major.name().unwrap().to_owned(), kind))
            }
            _ => None,
        })
        .collect()
}

/// The logs the run's get_log steps read, by driver.
fn logs(r: &Run) -> Vec<(String, Model, Log)> {
    decode_all(r)
        .into_iter()
        .filter_map(|(m, d)| match d {
            Decoded::Log(log) => Some((m.driver.clone(), m.model, log)),
            _ => None,
        })
        .collect()
}

#[test]
fn each_spy_logs_every_operation_its_callbacks_saw_in_both_models() {
    let r = spy_run();
    assert!(!r.has_findings());
    let logs = logs(&r);
    assert_eq!(logs.len(), 2);
    for (driver, model, log) in &logs {
        assert_eq!((log.dropped, log.pending), (0, 0), "{driver}");
        let got: Vec<(String, &str)> =
            log.records.iter().map(|x| (x.operation.clone(), x.kind)).collect();
        assert_eq!(got, pre_callbacks(&r, driver), "{driver} ({model:?})");
        let sequences: Vec<u64> = log.records.iter().map(|x| x.sequence).collect();
        assert_eq!(sequences, (1..=log.records.len() as u64).collect::<Vec<_>>());
        // The requests the scenario made, in its order.
        let irps: Vec<(&str, &str)> = log
            .records
            .iter()
            .filter(|x| x.kind != "fs_filter")
            .map(|x| (x.operation.as_str(), x.kind))
            .collect();
        assert_eq!(
            irps,
            [
                ("IRP_MJ_CREATE", "irp"),
                ("IRP_MJ_READ", "irp"),
                ("IRP_MJ_READ", "fast_io"),
                ("IRP_MJ_WRITE", "fast_io"),
                ("IRP_MJ_QUERY_INFORMATION", "irp"),
                ("IRP_MJ_LOCK_CONTROL", "irp"),
                ("IRP_MJ_CLEANUP", "irp"),
                ("IRP_MJ_CLOSE", "irp"),
                // The viewer's open, read and close.
                ("IRP_MJ_CREATE", "irp"),
                ("IRP_MJ_READ", "irp"),
                ("IRP_MJ_CLEANUP", "irp"),
                ("IRP_MJ_CLOSE", "irp"),
            ],
            "{driver}"
        );
        // Each record's requesting process: the default process `user` (0x1000) up to its
        // close, then the viewer (0x1004, the first process a step names); the FsFilter
        // callbacks of the mapping run in the mapping thread, the default process's.
        let processes: Vec<Option<u32>> = log.records.iter().map(|x| x.process).collect();
        let viewer = log.records.len() - 4;
        let mut expected = vec![Some(0x1000); viewer];
        expected.extend([Some(0x1004); 4]);
        assert_eq!(processes, expected, "{driver}");
        for x in &log.records {
            assert!(x.post, "{driver}: {x:?}");
            assert_eq!(x.status, Some(fsfilter::Status::SUCCESS), "{driver}: {x:?}");
            // One file object for the default process's handle, one for the viewer's.
            let file = if x.process == Some(0x1004) { 2 } else { 1 };
            assert_eq!(x.file, Some(file), "{x:?}");
            match x.kind {
                // FsFilter callbacks have no name (rule 22): the refusal is recorded.
                "fs_filter" => assert_eq!(
                    x.name_status,
                    Some(fsfilter::Status::FLT_INVALID_NAME_REQUEST),
                    "{driver}: {x:?}"
                ),
                _ => assert_eq!(
                    x.name.as_deref(),
                    Some(r"\Device\HarddiskVolume1\report.txt"),
                    "{driver}: {x:?}"
                ),
            }
        }
        let read = &log.records[1];
        assert_eq!(read.information, 9, "the first read's nine bytes");
    }
}

#[test]
fn the_two_logs_differ_where_the_models_do() {
    let r = spy_run();
    let logs = logs(&r);
    let (_, _, mini) = logs.iter().find(|(_, m, _)| *m == Model::Minifilter).unwrap();
    let (_, _, legacy) = logs.iter().find(|(_, m, _)| *m == Model::Legacy).unwrap();
    let same = |x: &fsfilter_lab::spylog::Record| {
        (x.operation.clone(), x.kind, x.status, x.information, x.name.clone(), x.process)
    };
    assert_eq!(
        mini.records.iter().map(same).collect::<Vec<_>>(),
        legacy.records.iter().map(same).collect::<Vec<_>>(),
        "one stack, the same requests"
    );
    // The callback data's flags: the Filter Manager's own under the minifilter, the kind of
    // operation only under the legacy backend (docs/semantics.md, header).
    let query = |log: &Log| {
        log.records.iter().find(|x| x.operation == "IRP_MJ_QUERY_INFORMATION").unwrap().clone()
    };
    assert!(query(mini).data_flags.contains(&"FLTFL_CALLBACK_DATA_SYSTEM_BUFFER".to_owned()));
    assert_eq!(query(legacy).data_flags, ["FLTFL_CALLBACK_DATA_IRP_OPERATION"]);
}

#[test]
fn the_reports_show_the_records() {
    let r = spy_run();
    let doc = fsfilter_lab::json::document(&r);
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0]["command"], "get_version");
    assert_eq!(messages[0]["version"]["major"], 1);
    let record = &messages[1]["log"]["records"][0];
    assert_eq!(record["operation"], "IRP_MJ_CREATE");
    assert_eq!(record["operation_kind"], "irp");
    assert_eq!(record["status"], "STATUS_SUCCESS");
    assert_eq!(record["information"], 1);
    assert_eq!(record["name"], r"\Device\HarddiskVolume1\report.txt");
    assert_eq!(record["name_status"], serde_json::Value::Null);
    assert_eq!(record["process"], 0x1000, "the default process, user");
    assert_eq!(messages[1]["log"]["records"][10]["process"], 0x1004, "the viewer's create");
    for key in ["sequence", "minor", "requestor_mode", "irp_flags", "data_flags", "synchronous"] {
        assert!(record.get(key).is_some(), "{key}");
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/spy.toml");
    let s = parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    let text = fsfilter_lab::text::report(&s, &r);
    assert!(
        text.contains("SpyMini saw (minifilter): 14 record(s), 0 dropped, 0 pending"),
        "{text}"
    );
    assert!(text.contains("SpyLegacy saw (legacy): 14 record(s), 0 dropped, 0 pending"));
    assert!(text.contains("irp       pid 4100  STATUS_SUCCESS (1) file 2"), "{text}");
    assert!(text.contains(r"IRP_MJ_CREATE"));
    assert!(text.contains("[no name: STATUS_FLT_INVALID_NAME_REQUEST]"));
    assert!(text.contains("SpyMini answers protocol version 1.1"));
}

#[test]
fn scenarios_without_messages_keep_their_document() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/fast-io.toml");
    let s = parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    let doc = fsfilter_lab::json::document(&run(&s));
    assert!(doc.get("messages").is_none());
}

#[test]
fn a_standard_user_reader_is_refused_by_both_spies() {
    // `user = "standard"` on a connect step: the minifilter spy's port has the default
    // descriptor (SYSTEM and administrators only), the legacy spy's control device checks the
    // caller's token (SeTokenIsAdmin): both refuse with STATUS_ACCESS_DENIED; the same reader as
    // an administrator (the default) connects (docs/semantics.md, row `messages`).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/spy.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let head = &text[..text.find("[[step]]").unwrap()];
    let mut steps = String::new();
    for driver in ["SpyMini", "SpyLegacy"] {
        steps.push_str(&format!("[[step]]\naction = \"load\"\ndriver = \"{driver}\"\n\n"));
        steps.push_str(&format!(
            "[[step]]\naction = \"connect\"\ndriver = \"{driver}\"\nclient = \"u{driver}\"\n\
             user = \"standard\"\n\n"
        ));
        steps.push_str(&format!(
            "[[step]]\naction = \"connect\"\ndriver = \"{driver}\"\nclient = \"a{driver}\"\n\
             user = \"administrator\"\n\n\
             [[step]]\naction = \"disconnect\"\nclient = \"a{driver}\"\n\n"
        ));
    }
    let s = parse("standard.toml", &format!("{head}{steps}")).unwrap();
    let r = run(&s);
    assert!(!r.has_findings());
    let got: Vec<(&str, fsfilter::Status)> =
        r.steps.iter().map(|x| (x.what.as_str(), x.status)).collect();
    let denied = fsfilter::Status::ACCESS_DENIED;
    let ok = fsfilter::Status::SUCCESS;
    assert_eq!(
        got,
        [
            ("load SpyMini", ok),
            ("connect SpyMini (client uSpyMini) as a standard user", denied),
            ("connect SpyMini (client aSpyMini)", ok),
            ("disconnect aSpyMini", ok),
            ("load SpyLegacy", ok),
            ("connect SpyLegacy (client uSpyLegacy) as a standard user", denied),
            ("connect SpyLegacy (client aSpyLegacy)", ok),
            ("disconnect aSpyLegacy", ok),
        ]
    );
}
