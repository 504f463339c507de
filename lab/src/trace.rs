//! `--trace`: Chrome trace events (the JSON Perfetto and chrome://tracing open). One lane per
//! driver for its callbacks, one for user requests (a span from start to completion) and one
//! for the kernel's own events. Timestamps are the event's sequence number in microseconds, so
//! that synchronous work, which takes no virtual time, still reads left to right; the virtual
//! time is in each event's arguments.

use std::collections::BTreeMap;

use fsfilter_sim::{Callback, EventKind};
use serde_json::{Value, json};

use crate::run::Run;

/// The trace document.
pub fn chrome(run: &Run) -> String {
    // Lanes 1 and 2 are the requests' and the kernel's; each driver's from 3 on (a driver may
    // be named `kernel`).
    let mut lanes: BTreeMap<String, u64> = BTreeMap::new();
    let mut lane = |name: &str| -> u64 {
        let next = lanes.len() as u64 + 3;
        *lanes.entry(name.to_owned()).or_insert(next)
    };
    let mut events: Vec<Value> = Vec::new();
    let mut open: BTreeMap<u32, (u64, String)> = BTreeMap::new();
    for e in &run.events {
        let ts = e.seq;
        let args = crate::json::event(e);
        match &e.kind {
            EventKind::IoStart { io, volume, major, .. } => {
                open.insert(
                    io.0,
                    (ts, format!("{} {volume} (io {})", major.short_name().unwrap_or("?"), io.0)),
                );
            }
            EventKind::IoComplete { io, .. } => {
                if let Some((start, name)) = open.remove(&io.0) {
                    events.push(json!({
                        "name": name, "cat": "io", "ph": "X", "ts": start, "dur": (ts - start).max(1),
                        "pid": 1, "tid": 1, "args": args,
                    }));
                }
            }
            EventKind::Callback { driver, callback, .. } => {
                let tid = lane(driver);
                let name = match callback {
                    Callback::Pre { major, .. } => {
                        format!("pre {}", major.short_name().unwrap_or("?"))
                    }
                    Callback::Post { major, .. } => {
                        format!("post {}", major.short_name().unwrap_or("?"))
                    }
                    other => other.kind().to_owned(),
                };
                events.push(json!({
                    "name": name, "cat": "callback", "ph": "i", "s": "t", "ts": ts,
                    "pid": 1, "tid": tid, "args": args,
                }));
            }
            _ => {
                events.push(json!({
                    "name": e.kind_name(), "cat": "kernel", "ph": "i", "s": "t", "ts": ts,
                    "pid": 1, "tid": 2, "args": args,
                }));
            }
        }
    }
    let fixed = [("requests", 1), ("kernel", 2)];
    for (name, tid) in fixed.into_iter().chain(lanes.iter().map(|(n, t)| (n.as_str(), *t))) {
        events.push(
            json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}}),
        );
    }
    events.push(json!({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": format!("fsfilter lab: {}", run.scenario)}}));
    serde_json::to_string(&json!({"traceEvents": events, "displayTimeUnit": "ns"}))
        .unwrap_or_default()
}
