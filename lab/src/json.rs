//! `--format json`: the document scenario.md specifies. Every event carries `seq`, `step` and
//! `kind`; the other fields depend on the kind and use the WDK's spellings.

use fsfilter::{DataScanMode, OperationKind, Status, WdkFlags};
use fsfilter_sim::{Callback, Event, EventKind};
use serde_json::{Map, Value, json};

use crate::run::{Run, Snapshot, StackEntry};

fn status(s: Status) -> Value {
    match s.name().or_else(|| crate::text::oplock_status_name(s)) {
        Some(n) => Value::String(n.to_owned()),
        None => Value::String(format!("0x{:08X}", s.bits())),
    }
}

fn flags<F: WdkFlags>(f: F) -> Value {
    let mut names: Vec<Value> = f.wdk_names().map(|n| Value::String(n.to_owned())).collect();
    if f.unknown_bits() != 0 {
        names.push(Value::String(format!("0x{:X}", f.unknown_bits())));
    }
    Value::Array(names)
}

/// The scenario spelling of a data-scan mode.
pub fn data_scan_name(mode: DataScanMode) -> &'static str {
    match mode {
        DataScanMode::NotRequested => "none",
        DataScanMode::FilterManager => "FltCreateSectionForDataScan",
        DataScanMode::FsRtlFallback => "FsRtlCreateSectionForDataScan",
    }
}

fn operation_kind(k: OperationKind) -> &'static str {
    match k {
        OperationKind::Irp => "irp",
        OperationKind::FastIo => "fast_io",
        OperationKind::FsFilter => "fs_filter",
    }
}

/// One event as a JSON object.
pub fn event(e: &Event) -> Value {
    let mut o = Map::new();
    o.insert("seq".into(), json!(e.seq));
    o.insert("step".into(), e.step.map_or(Value::Null, |s| json!(s)));
    o.insert("kind".into(), json!(e.kind_name()));
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_owned(), v);
    };
    match &e.kind {
        EventKind::Load { driver, model, status: s } => {
            put("driver", json!(driver));
            put("model", json!(model));
            put("status", status(*s));
        }
        EventKind::Unload { driver, mandatory, status: s } => {
            put("driver", json!(driver));
            put("mandatory", json!(mandatory));
            put("status", status(*s));
        }
        EventKind::FileSystemRegistered { driver, device } => {
            put("driver", json!(driver));
            put("device", json!(device));
        }
        EventKind::Attached { driver, below, volume } => {
            put("driver", json!(driver));
            put("below", json!(below));
            put("volume", json!(volume));
        }
        EventKind::Detached { driver, volume } => {
            put("driver", json!(driver));
            put("volume", json!(volume));
        }
        EventKind::Mounted { volume, filesystem, status: s } => {
            put("volume", json!(volume));
            put("filesystem", json!(filesystem));
            put("status", status(*s));
        }
        EventKind::Dismounted { volume } => put("volume", json!(volume)),
        EventKind::IoStart { io, volume, major, fast_io } => {
            put("volume", json!(volume.as_str()));
            put("io", json!(io.0));
            put("operation", json!(major.name()));
            put("fast_io", json!(fast_io));
        }
        EventKind::IoComplete { io, volume, status: s, information } => {
            put("volume", json!(volume.as_str()));
            put("io", json!(io.0));
            put("status", status(*s));
            put("information", json!(information));
        }
        EventKind::Callback { driver, volume, io, callback } => {
            put("driver", json!(driver.as_str()));
            put("volume", json!(volume.as_deref()));
            if let Some(io) = io {
                put("io", json!(io.0));
            }
            callback_fields(callback, &mut put);
        }
        EventKind::Verifier { driver, rule, message } => {
            put("driver", json!(driver));
            put("rule", json!(rule.name()));
            put("message", json!(message));
        }
        EventKind::DebugPrint { driver, text } => {
            put("driver", json!(driver));
            put("text", json!(text));
        }
        EventKind::FltMgr { driver, volume, event } => {
            if let Some(d) = driver {
                put("driver", json!(d.as_str()));
            }
            if let Some(v) = volume {
                put("volume", json!(v.as_str()));
            }
            flt_fields(event, &mut put);
        }
        EventKind::System { driver, volume, detail, what } => {
            if let Some(d) = driver {
                put("driver", json!(d));
            }
            if let Some(v) = volume {
                put("volume", json!(v));
            }
            // An event about one user request names it, as pre, post and io_complete do.
            if matches!(*what, "directory_changes" | "fast_io_declined") {
                if let Some((io, _)) = crate::text::request_detail(detail) {
                    put("io", json!(io));
                }
            }
            put("detail", json!(detail));
        }
    }
    Value::Object(o)
}

fn flt_fields(e: &fsfilter_sim::FltEvent, put: &mut impl FnMut(&str, Value)) {
    use fsfilter_sim::FltEvent as F;
    match e {
        F::FrameCreated { frame, above, altitude } => {
            put("frame", json!(frame));
            put("above", json!(above));
            put("altitude", json!(altitude));
        }
        F::FilterRegistered { frame, altitude, status: s } => {
            put("frame", json!(frame));
            put("altitude", json!(altitude));
            put("status", status(*s));
        }
        F::FilterStarted { status: s } => put("status", status(*s)),
        F::FilterUnregistered => {}
        F::InstanceSetup { instance, altitude, frame, flags: f, called, status: s, .. } => {
            put("instance", json!(instance));
            put("altitude", json!(altitude));
            put("frame", json!(frame));
            put("flags", flags(*f));
            put("called", json!(called));
            put("status", status(*s));
        }
        F::InstanceQueryTeardown { instance, called, status: s } => {
            put("instance", json!(instance));
            put("called", json!(called));
            put("status", status(*s));
        }
        F::TeardownStart { instance, reason } | F::TeardownComplete { instance, reason } => {
            put("instance", json!(instance));
            put("reason", flags(*reason));
        }
        F::UnloadCallback { mandatory, status: s } => {
            put("mandatory", json!(mandatory));
            put("status", status(*s));
        }
        F::Operation { instance, altitude, phase, major, kind, io, draining, outcome } => {
            put("instance", json!(instance.as_str()));
            put("altitude", json!(altitude.as_str()));
            put("operation", json!(major.name()));
            put("operation_kind", json!(operation_kind(*kind)));
            if let Some(io) = io {
                put("io", json!(io.0));
            }
            put("draining", json!(draining));
            // The WDK's spelling (scenario.md); a status that is none keeps its number, as text.
            let pre = matches!(phase, fsfilter_sim::events::Phase::Pre);
            let name = fsfilter_sim::fltmgr::ops::status_name(pre, *outcome);
            let outcome = if name == "unknown" { outcome.to_string() } else { name.to_owned() };
            put("outcome", json!(outcome));
        }
        F::DataScan { instance, what, status: s } => {
            put("instance", json!(instance));
            put("what", json!(what));
            put("status", status(*s));
        }
        F::SectionConflict { instance, during_create, .. } => {
            put("instance", json!(instance));
            put("during_create", json!(during_create));
        }
    }
}

fn callback_fields(c: &Callback, put: &mut impl FnMut(&str, Value)) {
    match c {
        Callback::InstanceSetup { flags: f, volume, data_scan, status: s } => {
            put("flags", flags(*f));
            put("volume_device_type", json!(volume.device_type.name().unwrap_or("?")));
            put("filesystem", json!(volume.filesystem.name().unwrap_or("?")));
            put("data_scan", json!(data_scan_name(*data_scan)));
            put("status", status(*s));
        }
        Callback::InstanceQueryTeardown { status: s } => put("status", status(*s)),
        Callback::TeardownStart { reason } | Callback::TeardownComplete { reason } => {
            put("reason", flags(*reason))
        }
        Callback::Pre { major, minor, kind, outcome, status: s } => {
            put("operation", json!(major.name()));
            put("minor", json!(minor));
            put("operation_kind", json!(operation_kind(*kind)));
            put("outcome", json!(outcome));
            if let Some(s) = s {
                put("status", status(*s));
            }
        }
        Callback::Post { major, draining, when_safe, outcome, status: s } => {
            put("operation", json!(major.name()));
            put("draining", json!(draining));
            put("when_safe", json!(when_safe));
            put("outcome", json!(outcome));
            put("status", status(*s));
        }
        Callback::Resumed { outcome } => put("outcome", json!(outcome)),
        Callback::UnloadCallback { flags: f, status: s } => {
            put("flags", flags(*f));
            put("status", status(*s));
        }
        Callback::DataScan { mode, status: s } => {
            put("mode", json!(data_scan_name(*mode)));
            put("status", status(*s));
        }
        Callback::SectionConflict { .. } => {}
        Callback::Note { text } => put("text", json!(text)),
    }
}

/// One stack entry as scenario.md spells it.
pub fn stack_entry(e: &StackEntry) -> Value {
    match e {
        StackEntry::Legacy { driver } => json!({"type": "legacy", "driver": driver}),
        StackEntry::Frame { frame, instances } => json!({
            "type": "frame",
            "frame": frame,
            "instances": instances
                .iter()
                .map(|(d, i, a)| json!({"driver": d, "instance": i, "altitude": a}))
                .collect::<Vec<_>>(),
        }),
        StackEntry::FileSystem { driver } => json!({"type": "filesystem", "driver": driver}),
    }
}

fn snapshot(s: &Snapshot) -> Value {
    let mut volumes = Map::new();
    for (name, stack) in &s.volumes {
        volumes.insert(name.clone(), Value::Array(stack.iter().map(stack_entry).collect()));
    }
    json!({"label": s.label, "step": s.step, "volumes": Value::Object(volumes)})
}

/// One spy record (an extension of scenario.md; field names are stable).
fn spy_record(r: &crate::spylog::Record) -> Value {
    json!({
        "sequence": r.sequence,
        "operation": r.operation,
        "minor": r.minor,
        "operation_kind": r.kind,
        "requestor_mode": r.requestor_mode,
        "process": r.process,
        "irp_flags": r.irp_flags,
        "data_flags": r.data_flags,
        "synchronous": r.synchronous,
        "post": r.post,
        "draining": r.draining,
        "status": r.status.map_or(Value::Null, status),
        "information": r.information,
        "file": r.file,
        "name": r.name,
        "name_truncated": r.name_truncated,
        "name_status": r.name_status.map_or(Value::Null, status),
    })
}

/// One `message` step's outcome, with the spy's reply decoded (an extension of scenario.md).
fn message(m: &crate::run::MessageOutcome, decoded: &crate::spylog::Decoded) -> Value {
    use crate::scenario::MessageBody;
    use crate::spylog::Decoded;
    let mut o = Map::new();
    o.insert("step".into(), json!(m.step));
    o.insert("client".into(), json!(m.client));
    o.insert("driver".into(), json!(m.driver));
    o.insert("model".into(), json!(m.model.name()));
    match &m.body {
        MessageBody::Spy(c) => {
            o.insert("command".into(), json!(crate::scenario::spy_command_name(*c)));
        }
        MessageBody::GateStats => {
            o.insert("command".into(), json!("get_stats"));
        }
        MessageBody::Data(d) => {
            o.insert("data".into(), json!(String::from_utf8_lossy(d)));
        }
    }
    o.insert("status".into(), status(m.status));
    o.insert("reply_bytes".into(), json!(m.reply.len()));
    match decoded {
        Decoded::Log(log) => {
            o.insert(
                "log".into(),
                json!({
                    "dropped": log.dropped,
                    "pending": log.pending,
                    "records": log.records.iter().map(spy_record).collect::<Vec<_>>(),
                }),
            );
        }
        Decoded::Version(major, minor) => {
            o.insert("version".into(), json!({"major": major, "minor": minor}));
        }
        Decoded::Stats(st) => {
            o.insert(
                "stats".into(),
                json!({
                    "asked": st.asked,
                    "allowed": st.allowed,
                    "denied": st.denied,
                    "timed_out": st.timed_out,
                    "failed": st.failed,
                    "unasked": st.unasked,
                }),
            );
        }
        Decoded::Error(e) => {
            o.insert("decode_error".into(), json!(e));
        }
        Decoded::Raw => {
            let hex: String = m.reply.iter().map(|b| format!("{b:02x}")).collect();
            o.insert("reply".into(), json!(hex));
        }
    }
    Value::Object(o)
}

/// The whole document. `messages` (an extension of scenario.md) is there only when the scenario
/// has `message` steps, so that other scenarios' documents are as before; so are `served`,
/// `reparses`, `creates` (create steps with a `disposition`) and `streams` (query_information
/// steps of class `stream`).
pub fn document(run: &Run) -> Value {
    let mut doc = json!({
        "scenario": run.scenario,
        "events": run.events.iter().map(event).collect::<Vec<_>>(),
        "snapshots": run.snapshots.iter().map(snapshot).collect::<Vec<_>>(),
    });
    if !run.messages.is_empty() {
        let messages: Vec<Value> =
            crate::spylog::decode_all(run).iter().map(|(m, d)| message(m, d)).collect();
        if let Value::Object(o) = &mut doc {
            o.insert("messages".into(), Value::Array(messages));
        }
    }
    if !run.served.is_empty() {
        let served: Vec<Value> = run.served.iter().map(served).collect();
        if let Value::Object(o) = &mut doc {
            o.insert("served".into(), Value::Array(served));
        }
    }
    if !run.reparses.is_empty() {
        // `volume`: the volume of request `io` (its `io_start`), where the open ended.
        let volumes = crate::text::request_volumes(run);
        let reparses: Vec<Value> = run
            .reparses
            .iter()
            .map(|r| {
                let volume = r.io.and_then(|io| volumes.get(&io.0));
                json!({
                    "step": r.step,
                    "io": r.io.map(|io| io.0),
                    "count": r.count,
                    "volume": volume,
                })
            })
            .collect();
        if let Value::Object(o) = &mut doc {
            o.insert("reparses".into(), Value::Array(reparses));
        }
    }
    if !run.creates.is_empty() {
        // The create steps that named their disposition (an extension): what each did.
        let creates: Vec<Value> = run
            .creates
            .iter()
            .map(|c| {
                json!({
                    "step": c.step,
                    "io": c.io.map(|io| io.0),
                    "disposition": crate::scenario::disposition_name(c.disposition),
                    "status": status(c.status),
                    "information": c.information,
                    "result": c.result(),
                })
            })
            .collect();
        if let Value::Object(o) = &mut doc {
            o.insert("creates".into(), Value::Array(creates));
        }
    }
    if !run.streams.is_empty() {
        // The query_information steps of class `stream` (an extension): the streams listed.
        let streams: Vec<Value> = run
            .streams
            .iter()
            .map(|s| {
                let entries: Vec<Value> = s
                    .entries
                    .iter()
                    .map(|e| json!({"name": e.name, "size": e.size, "allocation": e.allocation}))
                    .collect();
                json!({
                    "step": s.step,
                    "io": s.io.map(|io| io.0),
                    "status": status(s.status),
                    "entries": entries,
                })
            })
            .collect();
        if let Value::Object(o) = &mut doc {
            o.insert("streams".into(), Value::Array(streams));
        }
    }
    doc
}

/// What a `serve` step's connection received and answered (an extension of scenario.md).
fn served(s: &crate::gatelog::Served) -> Value {
    let mut o = Map::new();
    o.insert("step".into(), json!(s.step));
    o.insert("at_step".into(), json!(s.at_step));
    o.insert("at_ms".into(), json!(s.at_ms));
    o.insert("client".into(), json!(s.client));
    o.insert("driver".into(), json!(s.driver));
    o.insert("model".into(), json!(s.model.name()));
    o.insert("get_status".into(), status(s.get_status));
    if s.get_status == fsfilter::Status::SUCCESS {
        o.insert("message_id".into(), json!(s.message_id));
        o.insert("message".into(), json!(crate::gatelog::hex(&s.message)));
        match s.question() {
            Some(Ok(q)) => {
                o.insert(
                    "question".into(),
                    json!({
                        "name": q.name,
                        "flags": q.flags,
                        "desired_access": format!("0x{:08X}", q.desired_access),
                        "information": q.information,
                    }),
                );
            }
            Some(Err(e)) => {
                o.insert("decode_error".into(), json!(e));
            }
            None => {}
        }
        o.insert("reply_capacity".into(), json!(s.reply_capacity));
        o.insert("rule".into(), json!(s.rule));
        o.insert("reply".into(), json!(s.reply.as_ref().map(|_| s.reply_words())));
        o.insert("reply_status".into(), s.reply_status.map_or(Value::Null, status));
        o.insert("replied_ms".into(), json!(s.replied_ms));
    }
    Value::Object(o)
}
