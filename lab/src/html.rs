//! `--report`: one self-contained HTML page (inline CSS and SVG, no script, no network) with a
//! stack diagram per volume and snapshot, the callback timeline with a lane per driver, the steps
//! with their result (a create step that named its disposition: the create result too, as the
//! text report gives it) and callback order (a `message` step followed by a row with its reply:
//! a spy's version or its log's records), and the verifier findings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fsfilter_sim::{Callback, EventKind};

use crate::run::{MessageOutcome, Run, Snapshot, StackEntry};
use crate::scenario::{MessageBody, Scenario};
use crate::spylog::{Decoded, Record};
use crate::text::status_name;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 2em; color: #1d1d1f; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
.snapshots { display: flex; flex-wrap: wrap; gap: 1.5em; }
.volume { border: 1px solid #ddd; padding: .5em; border-radius: 6px; }
svg text { font: 12px ui-monospace, monospace; }
rect.legacy { fill: #f6c28b; stroke: #b06a18; }
rect.frame { fill: #dbe9fb; stroke: #3a6fb0; }
rect.instance { fill: #ffffff; stroke: #3a6fb0; }
rect.filesystem { fill: #d9d9d9; stroke: #666; }
circle.pre { fill: #3a6fb0; } circle.post { fill: #2e9e5b; } circle.other { fill: #999; }
circle.complete { fill: #c0392b; }
table { border-collapse: collapse; margin-top: .5em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; font: 12px ui-monospace, monospace; }
.finding { color: #c0392b; }
";

/// Added to the style only when the scenario has `message` steps, so that every other page stays
/// as it was.
const MESSAGE_STYLE: &str = "tr.message > td { background: #f7f9fc; }
table.records td { white-space: nowrap; }
table.records td:last-child { white-space: normal; overflow-wrap: anywhere; }
";

/// At most this many bytes of a reply the lab does not decode are shown, in hex.
const RAW_SHOWN: usize = 64;

/// `n record(s)`, `n byte(s)`.
fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// One record of a spy log, as a table row.
fn record_row(r: &Record) -> String {
    // One flag a line: the IRP's, the callback data's, then whether it was synchronous.
    let mut flags: Vec<String> = r.irp_flags.iter().chain(&r.data_flags).map(|f| esc(f)).collect();
    if r.synchronous {
        flags.push("synchronous".to_owned());
    }
    let (status, information) = match r.status {
        Some(s) => (status_name(s), r.information.to_string()),
        None => ("no post".to_owned(), "—".to_owned()),
    };
    let status = if r.draining { format!("{status} (draining)") } else { status };
    let file = r.file.map_or_else(|| "—".to_owned(), |f| format!("file {f}"));
    let name = match (&r.name, r.name_status) {
        (Some(n), _) => format!("{n}{}", if r.name_truncated { "…" } else { "" }),
        (None, Some(s)) => format!("no name: {}", status_name(s)),
        (None, None) => "—".to_owned(),
    };
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        r.sequence,
        esc(&r.operation),
        r.minor,
        r.kind,
        r.requestor_mode,
        r.process.map_or_else(|| "—".to_owned(), |p| p.to_string()),
        flags.join("<br>"),
        esc(&status),
        information,
        file,
        esc(&name)
    )
}

/// The row under a `message` step: who asked which driver what, the status, and the reply (a
/// spy's version, or its log's counts and records).
fn message_row(m: &MessageOutcome, decoded: &Decoded) -> String {
    let what = match &m.body {
        MessageBody::Spy(c) => crate::scenario::spy_command_name(*c).to_owned(),
        MessageBody::GateStats => "get_stats".to_owned(),
        MessageBody::Data(d) => format!("data “{}”", String::from_utf8_lossy(d)),
    };
    let mut out = format!(
        "<tr class=\"message\" data-step=\"{}\"><td></td><td colspan=\"3\">client <b>{}</b> asked {} ({}) {}: {}",
        m.step,
        esc(&m.client),
        esc(&m.driver),
        m.model.name(),
        esc(&what),
        esc(&status_name(m.status))
    );
    if !m.reply.is_empty() {
        let _ = write!(out, ", reply of {}", count(m.reply.len(), "byte"));
    }
    let mut records = String::new();
    match decoded {
        Decoded::Log(log) => {
            let _ = write!(
                out,
                ": {}, {} dropped, {} pending.",
                count(log.records.len(), "record"),
                log.dropped,
                log.pending
            );
            if !log.records.is_empty() {
                records.push_str("<table class=\"records\"><tr><th>#</th><th>Operation</th><th>Minor</th><th>Kind</th><th>Mode</th><th>Process</th><th>Flags</th><th>Status</th><th>Information</th><th>File</th><th>Name</th></tr>");
                for r in &log.records {
                    records.push_str(&record_row(r));
                }
                records.push_str("</table>");
            }
        }
        Decoded::Version(major, minor) => {
            let _ = write!(out, ": protocol version {major}.{minor}.");
        }
        Decoded::Stats(st) => {
            let _ = write!(out, ": {}.", esc(&crate::gatelog::stats_words(st)));
        }
        Decoded::Error(e) => {
            let _ = write!(out, ": the reply does not decode: {}.", esc(e));
        }
        Decoded::Raw if m.reply.is_empty() => out.push('.'),
        Decoded::Raw => {
            let hex: String = m.reply.iter().take(RAW_SHOWN).map(|b| format!("{b:02x}")).collect();
            let more = if m.reply.len() > RAW_SHOWN { "…" } else { "" };
            let _ = write!(out, ": <code>{hex}{more}</code>");
        }
    }
    out.push_str(&records);
    out.push_str("</td></tr>");
    out
}

/// The stack diagram of one volume.
fn stack_svg(volume: &str, stack: &[StackEntry]) -> String {
    const W: i32 = 400;
    const ROW: i32 = 22;
    let mut body = String::new();
    let mut y = 4;
    if stack.is_empty() {
        let _ = write!(body, r#"<text x="8" y="{}">not mounted</text>"#, y + 15);
        y += ROW;
    }
    for e in stack {
        match e {
            StackEntry::Legacy { driver } => {
                let _ = write!(
                    body,
                    r#"<rect class="legacy" x="4" y="{y}" width="{}" height="{}" rx="3"/><text x="12" y="{}">legacy  {}</text>"#,
                    W - 8,
                    ROW - 4,
                    y + 13,
                    esc(driver)
                );
                y += ROW;
            }
            StackEntry::Frame { frame, instances } => {
                let h = ROW * (instances.len().max(1) as i32 + 1);
                let _ = write!(
                    body,
                    r#"<rect class="frame" x="4" y="{y}" width="{}" height="{}" rx="3"/><text x="12" y="{}">FltMgr frame {frame}</text>"#,
                    W - 8,
                    h - 4,
                    y + 13
                );
                let mut iy = y + ROW;
                for (driver, instance, altitude) in instances {
                    let _ = write!(
                        body,
                        r#"<rect class="instance" x="20" y="{iy}" width="{}" height="{}" rx="2"/><text x="26" y="{}">{}  {}</text>"#,
                        W - 32,
                        ROW - 6,
                        iy + 12,
                        esc(altitude),
                        esc(&format!("{instance} ({driver})"))
                    );
                    iy += ROW;
                }
                y += h;
            }
            StackEntry::FileSystem { driver } => {
                let _ = write!(
                    body,
                    r#"<rect class="filesystem" x="4" y="{y}" width="{}" height="{}" rx="3"/><text x="12" y="{}">file system  {}</text>"#,
                    W - 8,
                    ROW - 4,
                    y + 13,
                    esc(driver)
                );
                y += ROW;
            }
        }
    }
    format!(
        r#"<div class="volume"><h3>{}</h3><svg class="stack" data-volume="{}" width="{W}" height="{}" viewBox="0 0 {W} {}" xmlns="http://www.w3.org/2000/svg">{body}</svg></div>"#,
        esc(volume),
        esc(volume),
        y + 4,
        y + 4
    )
}

fn snapshot_section(s: &Snapshot) -> String {
    let when = s.step.map_or_else(|| "after boot".to_owned(), |i| format!("step {i}"));
    let mut out =
        format!("<h2>Stacks at “{}” ({when})</h2><div class=\"snapshots\">", esc(&s.label));
    for (volume, stack) in &s.volumes {
        out.push_str(&stack_svg(volume, stack));
    }
    out.push_str("</div>");
    out
}

/// The timeline: one lane per driver, one dot per callback, left to right in event order.
fn timeline_svg(run: &Run) -> String {
    let callbacks: Vec<(&str, &Callback, Option<u32>)> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback { driver, callback, io, .. } => {
                Some((driver.as_str(), callback, io.map(|i| i.0)))
            }
            _ => None,
        })
        .collect();
    let mut lanes: BTreeMap<&str, usize> = BTreeMap::new();
    for (d, _, _) in &callbacks {
        let n = lanes.len();
        lanes.entry(d).or_insert(n);
    }
    let left = 140;
    let step = 12;
    let lane_h = 26;
    let width = left + step * (callbacks.len() as i32 + 2);
    let height = lane_h * (lanes.len() as i32 + 1);
    let mut body = String::new();
    for (d, i) in &lanes {
        let y = lane_h * (*i as i32) + lane_h / 2 + 4;
        let _ = write!(
            body,
            r##"<text x="4" y="{}">{}</text><line x1="{left}" y1="{y}" x2="{width}" y2="{y}" stroke="#ddd"/>"##,
            y + 4,
            esc(d)
        );
    }
    for (n, (d, c, io)) in callbacks.iter().enumerate() {
        let lane = lanes.get(d).copied().unwrap_or(0) as i32;
        let x = left + step * (n as i32 + 1);
        let y = lane_h * lane + lane_h / 2 + 4;
        let (class, label) = match c {
            Callback::Pre { major, outcome, .. } => (
                if outcome.ends_with("COMPLETE") { "complete" } else { "pre" },
                format!("pre {} {outcome}", major.short_name().unwrap_or("?")),
            ),
            Callback::Post { major, outcome, .. } => {
                ("post", format!("post {} {outcome}", major.short_name().unwrap_or("?")))
            }
            other => ("other", other.kind().to_owned()),
        };
        let io = io.map_or_else(String::new, |i| format!(" (io {i})"));
        let _ = write!(
            body,
            r#"<circle class="{class}" cx="{x}" cy="{y}" r="4"><title>{}{}</title></circle>"#,
            esc(&format!("{d}: {label}")),
            esc(&io)
        );
    }
    format!(
        r#"<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{body}</svg>"#
    )
}

/// The page.
pub fn report(scenario: &Scenario, run: &Run) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>fsfilter lab: {}</title><style>{STYLE}{}</style></head><body>",
        esc(&run.scenario),
        if run.messages.is_empty() { "" } else { MESSAGE_STYLE }
    );
    let _ =
        write!(out, "<h1>fsfilter lab: {}</h1><p>seed {}</p>", esc(&run.scenario), scenario.seed);
    out.push_str("<h2>Filters</h2><table><tr><th>Filter</th><th>Model</th><th>Sample</th><th>Altitude</th><th>Start</th></tr>");
    for d in &scenario.drivers {
        let model = run.models.get(&d.name).copied().unwrap_or(d.model);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.name),
            model.name(),
            esc(&d.sample),
            esc(d.altitude.as_deref().unwrap_or("—")),
            d.start.name()
        );
    }
    out.push_str("</table>");
    for s in &run.snapshots {
        out.push_str(&snapshot_section(s));
    }
    out.push_str("<h2>Callback timeline</h2><p>Blue: pre, green: post, red: completed in pre, grey: other callbacks. Hover for details.</p>");
    out.push_str(&timeline_svg(run));
    out.push_str("<h2>Steps</h2><table><tr><th>#</th><th>Step</th><th>Result</th><th>Callbacks, in order</th></tr>");
    let orders = crate::text::callback_orders(run);
    let requests = crate::text::step_requests(run);
    let volumes = crate::text::request_volumes(run);
    let done = crate::text::Completions::of(run);
    // A create step that named its disposition: its create's result after the status, as the
    // text report gives it (FILE_OVERWRITTEN ...).
    let results: BTreeMap<(u32, u32), &str> =
        run.creates.iter().filter_map(|c| Some(((c.step, c.io?.0), c.result()?))).collect();
    let mut replies: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (m, decoded) in crate::spylog::decode_all(run) {
        replies.entry(m.step).or_default().push(message_row(m, &decoded));
    }
    for s in &run.served {
        replies.entry(s.at_step.unwrap_or(s.step)).or_default().push(format!(
            "<tr class=\"message\" data-step=\"{}\"><td></td><td colspan=\"3\">served: {}</td></tr>",
            s.step,
            esc(&s.line())
        ));
    }
    for s in &run.steps {
        // Every request of the step (a close's cleanup, an I/O's implicit open), each named
        // when there are several, with how it completed when a later step completed it; then
        // the requests of earlier steps this one completed (a change, a cancel).
        let issued = requests.get(&s.index).map_or(&[][..], Vec::as_slice);
        let first = issued.first().map(|(io, _)| *io);
        let order = issued
            .iter()
            .filter_map(|(io, major)| {
                let mut o = orders.get(&io.0)?.join(" → ");
                if let Some(c) = done.of_request(io.0, s.index).filter(|c| c.contains(" at step "))
                {
                    o.push_str(&format!(" → {c}"));
                }
                Some(match major.name() {
                    Some(name) if issued.len() > 1 => {
                        format!("{name}{}: {o}", crate::text::other_volume(&volumes, *io, first))
                    }
                    _ => o,
                })
            })
            .chain(done.in_step(s.index))
            .collect::<Vec<_>>()
            .join("; ");
        let mut result = status_name(s.status);
        if let Some(r) = s.io.and_then(|io| results.get(&(s.index, io.0))) {
            result.push_str(&format!(" ({r})"));
        }
        let mut result = esc(&result);
        // A query_information step of class `stream`: the streams listed, on a line of their own
        // after the status, as the text report's `streams:` line under the step (an extension).
        for line in crate::text::streams_lines(run, s.index) {
            let _ = write!(result, "<br>{}", esc(&line));
        }
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.index,
            esc(&s.what),
            result,
            esc(&order)
        );
        for row in replies.remove(&s.index).into_iter().flatten() {
            out.push_str(&row);
        }
    }
    out.push_str("</table><h2>Verifier</h2>");
    let mut any = false;
    for e in run.findings() {
        if let EventKind::Verifier { driver, rule, message } = &e.kind {
            any = true;
            let _ = write!(
                out,
                "<p class=\"finding\">{} {}: {}</p>",
                rule.name(),
                esc(driver.as_deref().unwrap_or("(kernel)")),
                esc(message)
            );
        }
    }
    if !any {
        out.push_str("<p>No findings.</p>");
    }
    out.push_str("</body></html>\n");
    out
}
