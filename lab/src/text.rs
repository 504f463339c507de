//! The text report: what a filter engineer reads at a glance. Stacks in the style of `!devstack`
//! and `fltmc instances`, a `fltmc filters` table, the order of callbacks for each request,
//! instance setups, unloads and verifier findings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fsfilter::{LoadOrderGroup, OperationKind, WdkFlags};
use fsfilter_sim::{Callback, Event, EventKind, RequestRef};

use crate::run::{Run, Snapshot, StackEntry};
use crate::scenario::{Model, Scenario};

/// The report for `run` of `scenario`.
pub fn report(scenario: &Scenario, run: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario {} (seed {})", run.scenario, scenario.seed);
    out.push('\n');
    filters(&mut out, scenario, run);
    for s in &run.snapshots {
        stacks(&mut out, s);
    }
    setups(&mut out, run);
    steps(&mut out, run);
    unloads(&mut out, run);
    findings(&mut out, run);
    out
}

fn filters(out: &mut String, scenario: &Scenario, run: &Run) {
    let _ = writeln!(out, "Filters (fltmc filters):");
    let _ = writeln!(
        out,
        "  {:<20} {:<10} {:>9} {:>12} {:>8}  Loaded",
        "Filter Name", "Model", "Instances", "Altitude", "Frame"
    );
    let _ = writeln!(
        out,
        "  {:<20} {:<10} {:>9} {:>12} {:>8}  {}",
        "-".repeat(20),
        "-".repeat(10),
        "-".repeat(9),
        "-".repeat(12),
        "-".repeat(8),
        "-".repeat(6)
    );
    let end = run.snapshots.last();
    for d in &scenario.drivers {
        let model = run.models.get(&d.name).copied().unwrap_or(d.model);
        let state = load_state(run, &d.name);
        let (instances, frame) = end.map_or((0, String::new()), |s| instances_of(s, &d.name));
        let (altitude, frame) = match model {
            Model::Minifilter => (d.altitude.clone().unwrap_or_default(), frame),
            Model::Legacy => {
                let shown = d
                    .group
                    .as_deref()
                    .and_then(LoadOrderGroup::by_name)
                    .map_or_else(String::new, |g| g.legacy_display_altitude().to_string());
                (shown, "<Legacy>".to_owned())
            }
        };
        let _ = writeln!(
            out,
            "  {:<20} {:<10} {:>9} {:>12} {:>8}  {}",
            d.name,
            model.name(),
            instances,
            altitude,
            frame,
            state
        );
    }
    out.push('\n');
}

/// How many volumes a driver is on in a snapshot, and its frame(s).
fn instances_of(s: &Snapshot, driver: &str) -> (usize, String) {
    let mut count = 0;
    let mut frames: Vec<u32> = Vec::new();
    for (_, stack) in &s.volumes {
        for e in stack {
            match e {
                StackEntry::Legacy { driver: d } if d == driver => count += 1,
                StackEntry::Frame { frame, instances } => {
                    let n = instances.iter().filter(|(d, _, _)| d == driver).count();
                    if n > 0 && !frames.contains(frame) {
                        frames.push(*frame);
                    }
                    count += n;
                }
                _ => {}
            }
        }
    }
    frames.sort_unstable();
    let frames: Vec<String> = frames.iter().map(u32::to_string).collect();
    (count, frames.join(","))
}

fn stacks(out: &mut String, s: &Snapshot) {
    let when = match s.step {
        None => "after boot".to_owned(),
        Some(i) => format!("step {i}"),
    };
    let _ = writeln!(
        out,
        "Stacks at \"{}\" ({when}), top down (!devstack / fltmc instances):",
        s.label
    );
    for (volume, stack) in &s.volumes {
        let _ = writeln!(out, "  {volume}");
        if stack.is_empty() {
            let _ = writeln!(out, "    (not mounted)");
        }
        for e in stack {
            match e {
                StackEntry::Legacy { driver } => {
                    let _ = writeln!(out, "    legacy      {driver}");
                }
                StackEntry::Frame { frame, instances } => {
                    let _ = writeln!(out, "    FltMgr      frame {frame}");
                    if instances.is_empty() {
                        let _ = writeln!(out, "                  (no instances)");
                    }
                    for (driver, instance, altitude) in instances {
                        let _ = writeln!(
                            out,
                            "                  {altitude:>10}  {instance:<24} ({driver})"
                        );
                    }
                }
                StackEntry::FileSystem { driver } => {
                    let _ = writeln!(out, "    filesystem  {driver}");
                }
            }
        }
    }
    out.push('\n');
}

fn setups(out: &mut String, run: &Run) {
    // The volume column is as wide as the longest name (`\\server\share`, `\Device\NamedPipe`).
    let width = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback { volume, callback: Callback::InstanceSetup { .. }, .. } => {
                volume.as_deref().map(|v| v.chars().count())
            }
            _ => None,
        })
        .fold(12, usize::max);
    let rows: Vec<String> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback {
                driver,
                volume,
                callback: Callback::InstanceSetup { flags, status, data_scan, .. },
                ..
            } => {
                let flags: Vec<&str> = flags
                    .wdk_names()
                    .map(|n| n.trim_start_matches("FLTFL_INSTANCE_SETUP_"))
                    .collect();
                let scan = match data_scan {
                    fsfilter::DataScanMode::NotRequested => String::new(),
                    m => format!("  data scan: {}", crate::json::data_scan_name(*m)),
                };
                Some(format!(
                    "  {:<8} {:<14} {:<width$} {:<48} {}{scan}",
                    step_label(e),
                    driver,
                    volume.as_deref().unwrap_or("?"),
                    flags.join("|"),
                    status_name(*status)
                ))
            }
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "Instance setup:");
    for r in rows {
        let _ = writeln!(out, "{r}");
    }
    out.push('\n');
}

fn step_label(e: &Event) -> String {
    e.step.map_or_else(|| "boot".to_owned(), |s| format!("step {s}"))
}

/// The driver's state at the end of the run, from its load and unload events in order: a
/// reload after a stop is loaded again; a second load of a loaded driver
/// (`STATUS_IMAGE_ALREADY_LOADED`) leaves it loaded; a stop that stayed pending (a legacy filter
/// with a driver attached above it) is "stop pending" until its unload callback runs.
fn load_state(run: &Run, name: &str) -> String {
    #[derive(Clone, Copy)]
    enum State {
        Loaded,
        StopPending,
        Unloaded,
        Failed(fsfilter::Status),
    }
    let mut state: Option<State> = None;
    for e in &run.events {
        match &e.kind {
            EventKind::Load { driver, status, .. } if driver == name => {
                let loaded = matches!(state, Some(State::Loaded | State::StopPending));
                if status.is_success() {
                    state = Some(State::Loaded);
                } else if !loaded {
                    // A failed second load of a loaded driver (STATUS_IMAGE_ALREADY_LOADED)
                    // leaves it loaded.
                    state = Some(State::Failed(*status));
                }
            }
            EventKind::Unload { driver, status, .. } if driver == name => {
                if *status == fsfilter::Status::SUCCESS {
                    state = Some(State::Unloaded);
                } else if *status == fsfilter::Status::PENDING {
                    state = Some(State::StopPending);
                }
            }
            EventKind::Callback { driver, callback: Callback::UnloadCallback { .. }, .. }
                if driver.as_str() == name && matches!(state, Some(State::StopPending)) =>
            {
                state = Some(State::Unloaded);
            }
            _ => {}
        }
    }
    match state {
        None => "not loaded".to_owned(),
        Some(State::Loaded) => "yes".to_owned(),
        Some(State::StopPending) => "stop pending".to_owned(),
        Some(State::Unloaded) => "unloaded".to_owned(),
        Some(State::Failed(s)) => format!("failed: {}", status_name(s)),
    }
}

/// A status as the WDK spells it, or its number when it has no name.
pub fn status_name(s: fsfilter::Status) -> String {
    s.name()
        .or_else(|| oplock_status_name(s))
        .map_or_else(|| format!("0x{:08X}", s.bits()), str::to_owned)
}

/// The names of the oplock statuses the simulated file systems answer, and of their
/// reparse-point statuses, which the filters' shared status table does not carry (its size is
/// the drivers').
pub fn oplock_status_name(s: fsfilter::Status) -> Option<&'static str> {
    match s.bits() {
        0x0000_0108 => Some("STATUS_OPLOCK_BREAK_IN_PROGRESS"),
        0xC000_00E3 => Some("STATUS_INVALID_OPLOCK_PROTOCOL"),
        _ => reparse_status_name(s),
    }
}

/// The WDK spellings of the reparse-point statuses the simulator's file systems and I/O manager
/// answer (`fsfilter_sim::fs::reparse`), which `fsfilter::Status` does not name.
fn reparse_status_name(s: fsfilter::Status) -> Option<&'static str> {
    use fsfilter_sim::fs::reparse as rp;
    [
        (rp::STATUS_NOT_A_REPARSE_POINT, "STATUS_NOT_A_REPARSE_POINT"),
        (rp::STATUS_IO_REPARSE_TAG_INVALID, "STATUS_IO_REPARSE_TAG_INVALID"),
        (rp::STATUS_IO_REPARSE_TAG_MISMATCH, "STATUS_IO_REPARSE_TAG_MISMATCH"),
        (rp::STATUS_IO_REPARSE_DATA_INVALID, "STATUS_IO_REPARSE_DATA_INVALID"),
        (rp::STATUS_IO_REPARSE_TAG_NOT_HANDLED, "STATUS_IO_REPARSE_TAG_NOT_HANDLED"),
        (rp::STATUS_REPARSE_ATTRIBUTE_CONFLICT, "STATUS_REPARSE_ATTRIBUTE_CONFLICT"),
    ]
    .into_iter()
    .find(|(status, _)| *status == s)
    .map(|(_, name)| name)
}

/// The callbacks of one user request, in order, as `driver:pre`, ... with outcomes.
pub fn callback_order(run: &Run, io: RequestRef) -> Vec<String> {
    callback_orders(run).remove(&io.0).unwrap_or_default()
}

/// [`callback_order`] of every user request, by request number, in one pass over the log (a
/// report looking each step's request up in the whole log took time steps x events).
/// A post callback is marked `(fast I/O)` while its request is still the fast I/O try (until
/// the I/O manager's `fast_io_declined`), and the declined try is a line of its own.
pub fn callback_orders(run: &Run) -> BTreeMap<u32, Vec<String>> {
    let mut orders: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut fast = std::collections::BTreeSet::new();
    let mut majors = BTreeMap::new();
    for e in &run.events {
        let (driver, io, callback) = match &e.kind {
            EventKind::Callback { driver, io: Some(io), callback, .. } => (driver, io, callback),
            EventKind::IoStart { io, major, fast_io, .. } => {
                majors.insert(io.0, *major);
                if *fast_io {
                    fast.insert(io.0);
                }
                continue;
            }
            EventKind::System { what: "fast_io_declined", detail, .. } => {
                if let Some((io, _)) = request_detail(detail) {
                    fast.remove(&io);
                    orders.entry(io).or_default().push(DECLINED.to_owned());
                }
                continue;
            }
            _ => continue,
        };
        // An operation other than the request's own (FastIoCheckIfPossible inside a cached
        // read, a paging read under a cached one) is named.
        let other = |major: &fsfilter::MajorFunction| match majors.get(&io.0) {
            Some(own) if own != major => format!(" {}", major.name().unwrap_or("?")),
            _ => String::new(),
        };
        let item = match callback {
            Callback::Pre { major, minor, kind, outcome, .. } => {
                let via = if *kind == OperationKind::FastIo { " (fast I/O)" } else { "" };
                // A removal's IRP_MJ_PNP names its minor (` query_remove`), as `compare` does.
                let pnp = crate::compare::pnp_minor(*major, *minor);
                format!("{driver} pre{}{pnp}{via} {}", other(major), short_outcome(outcome))
            }
            Callback::Post { major, outcome, draining, .. } => {
                let via = if fast.contains(&io.0) { " (fast I/O)" } else { "" };
                let d = if *draining { " draining" } else { "" };
                format!("{driver} post{}{via}{d} {}", other(major), short_outcome(outcome))
            }
            Callback::Resumed { outcome } => format!("{driver} resumed {}", short_outcome(outcome)),
            Callback::DataScan { status, .. } => {
                format!("{driver} data-scan {}", status_name(*status))
            }
            _ => continue,
        };
        orders.entry(io.0).or_default().push(item);
    }
    orders
}

/// The volume of each user request, by request number (its `io_start`).
pub(crate) fn request_volumes(run: &Run) -> BTreeMap<u32, &str> {
    run.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::IoStart { io, volume, .. } => Some((io.0, volume.as_str())),
            _ => None,
        })
        .collect()
}

/// ` (on D:)` when request `io` went to another volume than the step's `first` request: the
/// requests a reparse sends to the volume the new name designates (rule 27) and those on the
/// handle it opened. Empty otherwise.
pub(crate) fn other_volume(
    volumes: &BTreeMap<u32, &str>,
    io: RequestRef,
    first: Option<RequestRef>,
) -> String {
    match (volumes.get(&io.0), first.and_then(|f| volumes.get(&f.0))) {
        (Some(v), Some(f)) if v != f => format!(" (on {v})"),
        _ => String::new(),
    }
}

/// The line of [`callback_orders`] that says the I/O manager declined a fast I/O try.
const DECLINED: &str = "fast I/O declined: the I/O manager builds an IRP";

/// The request a simulator event about one request names, and the rest of its detail: the
/// detail of `fast_io_declined` and `directory_changes` begins `io N: `.
pub(crate) fn request_detail(detail: &str) -> Option<(u32, &str)> {
    let (io, rest) = detail.strip_prefix("io ")?.split_once(": ")?;
    Some((io.parse().ok()?, rest))
}

/// The user requests each step issued, by step index, in order, with their operation: a close
/// of a handle not yet cleaned up issues a cleanup first, an I/O on a path not open an open.
pub fn step_requests(run: &Run) -> BTreeMap<u32, Vec<(RequestRef, fsfilter::MajorFunction)>> {
    let mut by_step: BTreeMap<u32, Vec<(RequestRef, fsfilter::MajorFunction)>> = BTreeMap::new();
    for e in &run.events {
        if let (Some(step), EventKind::IoStart { io, major, .. }) = (e.step, &e.kind) {
            by_step.entry(step).or_default().push((*io, *major));
        }
    }
    by_step
}

/// How each user request completed and in which step: a request the file system held (a
/// directory change notification, a waiting lock) completes in a later step than its own, by a
/// change, a cancel or a cleanup.
pub struct Completions<'r> {
    /// Each request's status and the step it completed in.
    status: BTreeMap<u32, (fsfilter::Status, Option<u32>)>,
    /// The changes a directory change notification returned (`directory_changes`).
    changes: BTreeMap<u32, &'r str>,
    /// By step, the requests of earlier steps it completed, in the order they completed, with
    /// the step that issued each.
    later: BTreeMap<u32, Vec<(u32, u32)>>,
}

impl<'r> Completions<'r> {
    /// Reads them from a run's events.
    pub fn of(run: &'r Run) -> Completions<'r> {
        let mut status = BTreeMap::new();
        let mut changes = BTreeMap::new();
        let mut started = BTreeMap::new();
        let mut later: BTreeMap<u32, Vec<(u32, u32)>> = BTreeMap::new();
        for e in &run.events {
            match (&e.kind, e.step) {
                (EventKind::IoStart { io, .. }, Some(step)) => {
                    started.insert(io.0, step);
                }
                (EventKind::IoComplete { io, status: st, .. }, step) => {
                    status.insert(io.0, (*st, step));
                    if let (Some(step), Some(&from)) = (step, started.get(&io.0)) {
                        if from != step {
                            later.entry(step).or_default().push((io.0, from));
                        }
                    }
                }
                (EventKind::System { what: "directory_changes", detail, .. }, _) => {
                    if let Some((io, c)) = request_detail(detail) {
                        changes.insert(io, c);
                    }
                }
                _ => {}
            }
        }
        Completions { status, changes, later }
    }

    fn what(&self, io: u32) -> String {
        self.changes.get(&io).map_or_else(String::new, |c| format!(": {c}"))
    }

    /// How request `io` of step `step` completed: `completed STATUS_X`, with ` at step N` when
    /// a later step completed it and the changes it returned; None while it is outstanding.
    pub fn of_request(&self, io: u32, step: u32) -> Option<String> {
        let (st, at) = self.status.get(&io)?;
        let later = match at {
            Some(at) if *at != step => format!(" at step {at}"),
            _ => String::new(),
        };
        Some(format!("completed {}{later}{}", status_name(*st), self.what(io)))
    }

    /// The requests of earlier steps step `step` completed: `completed request N of step M:
    /// STATUS_X`, with the changes it returned.
    pub fn in_step(&self, step: u32) -> Vec<String> {
        let list = self.later.get(&step).map_or(&[][..], Vec::as_slice);
        list.iter()
            .map(|&(io, from)| {
                let st = self.status.get(&io).map_or_else(|| "?".to_owned(), |s| status_name(s.0));
                format!("completed request {io} of step {from}: {st}{}", self.what(io))
            })
            .collect()
    }
}

fn short_outcome(outcome: &str) -> &str {
    outcome.trim_start_matches("FLT_PREOP_").trim_start_matches("FLT_POSTOP_")
}

fn steps(out: &mut String, run: &Run) {
    if run.steps.is_empty() {
        return;
    }
    let _ = writeln!(out, "Steps:");
    let done = Completions::of(run);
    let mut orders = callback_orders(run);
    let mut notes: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for e in &run.events {
        if let (Some(step), EventKind::System { what: "not_a_minifilter", detail, .. }) =
            (e.step, &e.kind)
        {
            notes.entry(step).or_default().push(detail);
        }
    }
    let volumes = request_volumes(run);
    // A create step that named its disposition: its create's result (FILE_OVERWRITTEN ...).
    let results: BTreeMap<(u32, u32), &str> =
        run.creates.iter().filter_map(|c| Some(((c.step, c.io?.0), c.result()?))).collect();
    let mut requests = step_requests(run);
    let mut replies: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (m, decoded) in crate::spylog::decode_all(run) {
        replies.entry(m.step).or_default().extend(reply_lines(m, &decoded));
    }
    for s in &run.served {
        replies
            .entry(s.at_step.unwrap_or(s.step))
            .or_default()
            .push(format!("served: {}", s.line()));
    }
    // `[7] ` and `[12] ` line their descriptions up.
    let width = run.steps.iter().map(|s| s.index.to_string().len() + 2).max().unwrap_or(3);
    for s in &run.steps {
        let label = format!("[{}]", s.index);
        let _ = writeln!(out, "  {label:<width$} {:<40} {}", s.what, status_name(s.status));
        let mut issued: Vec<(RequestRef, Option<fsfilter::MajorFunction>)> = requests
            .remove(&s.index)
            .unwrap_or_default()
            .into_iter()
            .map(|(io, major)| (io, Some(major)))
            .collect();
        // A request that waited for its synchronous file object's lock (docs/simulator.md,
        // "Asynchronous I/O") is listed under the step it went down in, if any.
        let waited =
            s.io.filter(|_| issued.is_empty() && s.status == fsfilter::Status::PENDING).map(|io| {
                let at = requests.iter().find(|(_, r)| r.iter().any(|(i, _)| *i == io));
                (io, at.map(|(step, _)| *step))
            });
        match waited {
            Some((io, Some(at))) => {
                let _ = writeln!(
                    out,
                    "        -> request {} waits for its file object: goes down at step {at}",
                    io.0
                );
            }
            Some((io, None)) => {
                let _ = writeln!(out, "        -> request {} waits for its file object", io.0);
            }
            // A step whose request never started (refused before the I/O manager saw it).
            None if issued.is_empty() => issued.extend(s.io.map(|io| (io, None))),
            None => {}
        }
        let several = issued.len() > 1;
        let first = issued.first().map(|(io, _)| *io);
        for (io, major) in issued {
            let order = orders.remove(&io.0).unwrap_or_default();
            let indent = if several { "          " } else { "        " };
            if several {
                let name = major.and_then(fsfilter::MajorFunction::name).unwrap_or("?");
                let on = other_volume(&volumes, io, first);
                let _ = writeln!(out, "        request {} {name}{on}:", io.0);
            }
            let seen = order.iter().any(|l| l != DECLINED);
            for line in order {
                let _ = writeln!(out, "{indent}{line}");
            }
            if !seen && several {
                let _ = writeln!(out, "{indent}no filter saw it");
            } else if !seen {
                let _ = writeln!(out, "{indent}no filter saw request {}", io.0);
            }
            if let Some(line) = done.of_request(io.0, s.index) {
                let result =
                    results.get(&(s.index, io.0)).map_or_else(String::new, |r| format!(" ({r})"));
                let _ = writeln!(out, "{indent}-> {line}{result}");
            }
        }
        for line in done.in_step(s.index) {
            let _ = writeln!(out, "        -> {line}");
        }
        for detail in notes.get(&s.index).into_iter().flatten() {
            let _ = writeln!(out, "        {detail}");
        }
        for line in replies.remove(&s.index).into_iter().flatten() {
            let _ = writeln!(out, "        {line}");
        }
        // A query_information step of class `stream`: the streams listed (an extension).
        for line in streams_lines(run, s.index) {
            let _ = writeln!(out, "        {line}");
        }
    }
    out.push('\n');
}

/// The `streams:` line of each query_information step of class `stream` that step `step` made
/// and that listed streams (none for any other step): the text report's line under the step,
/// the HTML report's line in the step's Result cell.
pub fn streams_lines(run: &Run, step: u32) -> Vec<String> {
    run.streams
        .iter()
        .filter(|q| q.step == step && !q.entries.is_empty())
        .map(|q| {
            let listed: Vec<String> = q
                .entries
                .iter()
                .map(|e| format!("{} ({} bytes, {} allocated)", e.name, e.size, e.allocation))
                .collect();
            format!("streams: {}", listed.join(", "))
        })
        .collect()
}

/// The lines under a `message` step: the reply, a spy log one record a line.
fn reply_lines(m: &crate::run::MessageOutcome, decoded: &crate::spylog::Decoded) -> Vec<String> {
    use crate::spylog::Decoded;
    match decoded {
        Decoded::Log(log) => {
            let mut lines = vec![format!(
                "{} saw ({}): {} record(s), {} dropped, {} pending",
                m.driver,
                m.model.name(),
                log.records.len(),
                log.dropped,
                log.pending
            )];
            for r in &log.records {
                let pid = r.process.map_or_else(|| "pid -".to_owned(), |p| format!("pid {p}"));
                let mut line =
                    format!("  #{:<3} {:<42} {:<9} {:<9}", r.sequence, r.operation, r.kind, pid);
                match r.status {
                    Some(s) => line.push_str(&format!(" {} ({})", status_name(s), r.information)),
                    None => line.push_str(" (no post)"),
                }
                if let Some(f) = r.file {
                    line.push_str(&format!(" file {f}"));
                }
                match (&r.name, r.name_status) {
                    (Some(n), _) => {
                        line.push_str(&format!(" {n}{}", if r.name_truncated { "..." } else { "" }))
                    }
                    (None, Some(s)) => line.push_str(&format!(" [no name: {}]", status_name(s))),
                    (None, None) => {}
                }
                if r.draining {
                    line.push_str(" (draining)");
                }
                lines.push(line.trim_end().to_owned());
            }
            lines
        }
        Decoded::Version(major, minor) => {
            vec![format!("{} answers protocol version {major}.{minor}", m.driver)]
        }
        Decoded::Stats(st) => {
            vec![format!("{} ({}): {}", m.driver, m.model.name(), crate::gatelog::stats_words(st))]
        }
        Decoded::Error(e) => vec![format!("reply does not decode: {e}")],
        Decoded::Raw if m.reply.is_empty() => Vec::new(),
        Decoded::Raw => vec![format!("reply: {} byte(s)", m.reply.len())],
    }
}

fn unloads(out: &mut String, run: &Run) {
    let mut rows = Vec::new();
    for e in &run.events {
        match &e.kind {
            EventKind::Unload { driver, mandatory, status } => rows.push(format!(
                "  {:<8} {:<14} {:<13} {}",
                step_label(e),
                driver,
                if *mandatory { "sc stop" } else { "fltmc unload" },
                status_name(*status)
            )),
            EventKind::Callback {
                driver,
                callback: Callback::UnloadCallback { flags, status },
                ..
            } => {
                let f: Vec<&str> = flags.wdk_names().collect();
                rows.push(format!(
                    "  {:<8} {:<14} {:<13} unload callback [{}] answered {}",
                    step_label(e),
                    driver,
                    "",
                    f.join("|"),
                    status_name(*status)
                ));
            }
            _ => {}
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "Unloads:");
    for r in rows {
        let _ = writeln!(out, "{r}");
    }
    out.push('\n');
}

fn findings(out: &mut String, run: &Run) {
    let rows: Vec<String> = run
        .findings()
        .filter_map(|e| match &e.kind {
            EventKind::Verifier { driver, rule, message } => Some(format!(
                "  {:<8} {} {}: {message}",
                step_label(e),
                rule.name(),
                driver.as_deref().unwrap_or("(kernel)")
            )),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        let _ = writeln!(out, "Verifier: no findings.");
    } else {
        let _ = writeln!(out, "Verifier findings:");
        for r in rows {
            let _ = writeln!(out, "{r}");
        }
    }
}
