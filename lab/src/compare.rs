//! `fsfilter compare`: one driver as a legacy filter and as a minifilter, everything else
//! unchanged, side by side: where it sat on each volume, what it saw of each request and in which
//! position among the filters, what it missed, how setup and unload went, and the rows of
//! docs/semantics.md that explain each difference.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fsfilter::WdkFlags;
use fsfilter_sim::{Callback, EventKind, RequestRef};

use crate::run::{Run, StackEntry, run};
use crate::scenario::{Model, Scenario};

/// A finished comparison.
#[derive(Debug)]
pub struct Comparison {
    /// The report.
    pub text: String,
    /// True when either run had verifier findings.
    pub findings: bool,
    /// The semantics rows cited, in order of first citation.
    pub rows: Vec<&'static str>,
}

/// Rows of docs/semantics.md the comparison cites.
pub mod rows {
    /// Where a filter sits: legacy filters by load time, minifilters by altitude within frames.
    pub const ATTACH_ORDER: &str = "attach-order";
    /// Which volumes each model attaches to.
    pub const VOLUMES: &str = "volumes";
    /// The instance-setup flags each model reports.
    pub const SETUP_FLAGS: &str = "instance-setup-flags";
    /// Which operations reach the filter (fast I/O and FsFilter callbacks).
    pub const OPERATIONS: &str = "operations-delivered";
    /// Non-mandatory unload.
    pub const UNLOAD: &str = "unload";
    /// Manual attach and detach.
    pub const MANUAL: &str = "manual-attach-detach";
    /// Data scanning.
    pub const DATA_SCAN: &str = "data-scan";
    /// Post callbacks called early, at teardown, by the Filter Manager.
    pub const DRAINING: &str = "draining";
    /// When a dismounted volume's instance is torn down, and what a revived volume keeps.
    pub const DISMOUNT: &str = "dismount";
}

fn position(stack: &[StackEntry], driver: &str) -> String {
    let mut parts = Vec::new();
    let mut found = None;
    for (i, e) in stack.iter().enumerate() {
        match e {
            StackEntry::Legacy { driver: d } if d == driver => {
                found = Some(format!("legacy device #{} from the top", i + 1))
            }
            StackEntry::Frame { frame, instances } => {
                if let Some(pos) = instances.iter().position(|(d, _, _)| d == driver) {
                    let alt = instances.get(pos).map_or("", |(_, _, a)| a.as_str());
                    found = Some(format!(
                        "frame {frame} (stack entry #{}), instance {} of {} at altitude {alt}",
                        i + 1,
                        pos + 1,
                        instances.len()
                    ));
                }
            }
            _ => {}
        }
        parts.push(match e {
            StackEntry::Legacy { driver } => driver.clone(),
            StackEntry::Frame { frame, .. } => format!("frame {frame}"),
            StackEntry::FileSystem { driver } => driver.clone(),
        });
    }
    match found {
        Some(f) => format!("{f}; stack: {}", parts.join(" > ")),
        None if stack.is_empty() => "not mounted".to_owned(),
        None => format!("not attached; stack: {}", parts.join(" > ")),
    }
}

/// The removal minor of an `IRP_MJ_PNP` (` query_remove`, ...), for a pre callback's line; empty
/// for any other operation or minor.
pub(crate) fn pnp_minor(major: fsfilter::MajorFunction, minor: u8) -> &'static str {
    if major != fsfilter::MajorFunction::Pnp {
        return "";
    }
    match minor {
        0x01 => " query_remove",
        0x02 => " remove",
        0x03 => " cancel_remove",
        0x17 => " surprise_removal",
        _ => "",
    }
}

/// What `driver` saw of each request, by request number: its callbacks, and the position of its
/// pre callback among every filter's pre callbacks for the request (1 = first). One pass over the
/// log (a pass per step made a comparison quadratic).
fn seen(run: &Run, driver: &str) -> BTreeMap<u32, (Vec<String>, Option<usize>)> {
    // Per request: what the driver saw, its rank, and the pre callbacks so far.
    let mut by_io: BTreeMap<u32, (Vec<String>, Option<usize>, usize)> = BTreeMap::new();
    for e in &run.events {
        let EventKind::Callback { driver: d, io: Some(i), callback, .. } = &e.kind else {
            continue;
        };
        let (mine, rank, pres) = by_io.entry(i.0).or_default();
        if let Callback::Pre { .. } = callback {
            *pres += 1;
            if d == driver && rank.is_none() {
                *rank = Some(*pres);
            }
        }
        if d != driver {
            continue;
        }
        let item = match callback {
            Callback::Pre { major, minor, kind, outcome, .. } => format!(
                "pre {}{} [{}] {}",
                major.short_name().unwrap_or("?"),
                pnp_minor(*major, *minor),
                match kind {
                    fsfilter::OperationKind::Irp => "irp",
                    fsfilter::OperationKind::FastIo => "fast I/O",
                    fsfilter::OperationKind::FsFilter => "FsFilter",
                },
                outcome
            ),
            Callback::Post { major, outcome, draining, when_safe, .. } => format!(
                "post {} {}{}{}",
                major.short_name().unwrap_or("?"),
                outcome,
                if *draining { " (draining)" } else { "" },
                if *when_safe { " (when safe)" } else { "" }
            ),
            other => other.kind().to_owned(),
        };
        mine.push(item);
    }
    by_io.into_iter().map(|(io, (mine, rank, _))| (io, (mine, rank))).collect()
}

fn setups(run: &Run, driver: &str) -> Vec<String> {
    run.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Callback {
                driver: d,
                volume,
                callback: Callback::InstanceSetup { flags, status, data_scan, .. },
                ..
            } if d == driver => {
                let f: Vec<&str> = flags
                    .wdk_names()
                    .map(|n| n.trim_start_matches("FLTFL_INSTANCE_SETUP_"))
                    .collect();
                Some(format!(
                    "{}: {} -> {}, data scan {}",
                    volume.as_deref().unwrap_or("?"),
                    f.join("|"),
                    crate::text::status_name(*status),
                    crate::json::data_scan_name(*data_scan)
                ))
            }
            _ => None,
        })
        .collect()
}

/// `driver`'s teardown callbacks: `[step] start REASON` (`[boot]` before the first step).
fn teardowns(run: &Run, driver: &str) -> Vec<String> {
    run.events
        .iter()
        .filter_map(|e| {
            let EventKind::Callback { driver: d, volume, callback, .. } = &e.kind else {
                return None;
            };
            let (what, reason) = match callback {
                Callback::TeardownStart { reason } => ("start", reason),
                Callback::TeardownComplete { reason } => ("complete", reason),
                _ => return None,
            };
            if d != driver {
                return None;
            }
            let reasons: Vec<&str> = reason
                .wdk_names()
                .map(|n| n.trim_start_matches("FLTFL_INSTANCE_TEARDOWN_"))
                .collect();
            let step = e.step.map_or_else(|| "boot".to_owned(), |s| s.to_string());
            Some(format!(
                "[{step}] {} {what} {}",
                volume.as_deref().unwrap_or("?"),
                reasons.join("|")
            ))
        })
        .collect()
}

fn unloads(run: &Run, driver: &str) -> Vec<String> {
    run.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Unload { driver: d, mandatory, status } if d == driver => Some(format!(
                "{} -> {}",
                if *mandatory { "sc stop" } else { "fltmc unload" },
                crate::text::status_name(*status)
            )),
            EventKind::System { what: "not_a_minifilter", driver: Some(d), detail, .. }
                if d == driver =>
            {
                Some(detail.clone())
            }
            _ => None,
        })
        .collect()
}

/// Compares `driver` under both models.
pub fn compare(scenario: &Scenario, driver: &str) -> Result<Comparison, String> {
    let Some(d) = scenario.driver(driver) else {
        return Err(format!("no driver named `{driver}` in the scenario"));
    };
    let name = d.name.clone();
    let legacy = run(&scenario.with_model(&name, Model::Legacy));
    let mini = run(&scenario.with_model(&name, Model::Minifilter));
    let mut out = String::new();
    let mut cited: Vec<&'static str> = Vec::new();
    let mut cite = |row: &'static str, out: &mut String| {
        if !cited.contains(&row) {
            cited.push(row);
        }
        let _ = writeln!(out, "      see docs/semantics.md#{row}");
    };
    let _ = writeln!(
        out,
        "compare {name} in scenario {}: legacy filter vs minifilter\n",
        scenario.name
    );

    // Where it sat: the last moment it was attached anywhere (it may be unloaded by the end).
    fn last_seen<'r>(r: &'r Run, name: &str) -> Option<&'r crate::run::Snapshot> {
        r.after_step
            .iter()
            .rev()
            .find(|s| s.volumes.iter().any(|(_, st)| !position(st, name).starts_with("not ")))
            .or(r.snapshots.last())
    }
    let (ls, ms) = (last_seen(&legacy, &name), last_seen(&mini, &name));
    let when = |s: Option<&crate::run::Snapshot>| {
        s.map_or_else(|| "never".to_owned(), |s| s.label.clone())
    };
    let _ = writeln!(
        out,
        "Where it sat (the last time it was attached: legacy {}, minifilter {}):",
        when(ls),
        when(ms)
    );
    for v in &scenario.volumes {
        let stack_of = |r: Option<&crate::run::Snapshot>| {
            r.and_then(|s| s.volumes.iter().find(|(n, _)| n == &v.name))
                .map_or_else(Vec::new, |(_, s)| s.clone())
        };
        let (l, m) = (position(&stack_of(ls), &name), position(&stack_of(ms), &name));
        let _ = writeln!(out, "  {}", v.name);
        let _ = writeln!(out, "    legacy:     {l}");
        let _ = writeln!(out, "    minifilter: {m}");
        let attached = |p: &str| !p.starts_with("not ");
        if attached(&l) != attached(&m) {
            cite(rows::VOLUMES, &mut out);
        } else if l != m {
            cite(rows::ATTACH_ORDER, &mut out);
        }
    }
    out.push('\n');

    let _ = writeln!(out, "Instance setup:");
    let (lset, mset) = (setups(&legacy, &name), setups(&mini, &name));
    let _ = writeln!(
        out,
        "  legacy:     {}",
        if lset.is_empty() { "none".into() } else { lset.join("; ") }
    );
    let _ = writeln!(
        out,
        "  minifilter: {}",
        if mset.is_empty() { "none".into() } else { mset.join("; ") }
    );
    if lset != mset {
        let scan_differs = lset
            .iter()
            .zip(&mset)
            .any(|(a, b)| a.split("data scan").nth(1) != b.split("data scan").nth(1));
        // Set up on no volume at all in one model: where it attaches, not how.
        if lset.is_empty() != mset.is_empty() {
            cite(rows::VOLUMES, &mut out);
        } else {
            cite(rows::SETUP_FLAGS, &mut out);
        }
        if scan_differs {
            cite(rows::DATA_SCAN, &mut out);
        }
    }
    out.push('\n');

    let _ = writeln!(out, "Requests:");
    let (lall, mall) = (seen(&legacy, &name), seen(&mini, &name));
    let first_dismount = scenario.steps.iter().position(|s| {
        matches!(
            s.action,
            crate::scenario::Action::Dismount { .. } | crate::scenario::Action::Remove { .. }
        )
    });
    let (mut lreq, mut mreq) =
        (crate::text::step_requests(&legacy), crate::text::step_requests(&mini));
    for (ls, ms) in legacy.steps.iter().zip(&mini.steps) {
        // A removal's requests (its IRP_MJ_PNP minors) are the filters' too, though no user
        // request is the step's.
        let removal = scenario
            .steps
            .get(ls.index as usize)
            .is_some_and(|s| matches!(s.action, crate::scenario::Action::Remove { .. }));
        if (ls.io.is_none() || ms.io.is_none()) && !removal {
            continue;
        }
        let _ = writeln!(out, "  [{}] {}", ls.index, ls.what);
        // Every request the step issued (a close's cleanup, an I/O's implicit open), paired in
        // order; a model that issued fewer (an open refused) shows nothing for the rest.
        let (l, m) = (
            lreq.remove(&ls.index).unwrap_or_default(),
            mreq.remove(&ms.index).unwrap_or_default(),
        );
        let count = l.len().max(m.len());
        let several = count > 1;
        let dismounted = first_dismount.is_some_and(|d| d < ls.index as usize);
        for i in 0..count {
            let (lio, mio) = (l.get(i).copied(), m.get(i).copied());
            if several {
                let major = lio.or(mio).and_then(|(_, major)| major.name()).unwrap_or("?");
                let _ = writeln!(out, "    request {major}:");
            }
            let lookup =
                |all: &BTreeMap<u32, (Vec<String>, Option<usize>)>,
                 io: Option<(RequestRef, fsfilter::MajorFunction)>| {
                    io.and_then(|(io, _)| all.get(&io.0).cloned()).unwrap_or_default()
                };
            let (lseen, lrank) = lookup(&lall, lio);
            let (mseen, mrank) = lookup(&mall, mio);
            let statuses = (i + 1 == count).then_some((ls.status, ms.status));
            request_lines(
                &mut out,
                statuses,
                (&lseen, lrank),
                (&mseen, mrank),
                dismounted,
                &mut cite,
            );
        }
    }
    out.push('\n');
    let (lt, mt) = (teardowns(&legacy, &name), teardowns(&mini, &name));
    if !lt.is_empty() || !mt.is_empty() {
        let _ = writeln!(out, "Teardown (by step):");
        let _ = writeln!(
            out,
            "  legacy:     {}",
            if lt.is_empty() { "none".into() } else { lt.join("; ") }
        );
        let _ = writeln!(
            out,
            "  minifilter: {}",
            if mt.is_empty() { "none".into() } else { mt.join("; ") }
        );
        // The same teardowns in another order (volume by volume, or all starts first) are no
        // difference.
        let sorted = |t: &[String]| {
            let mut t = t.to_vec();
            t.sort();
            t
        };
        if sorted(&lt) != sorted(&mt) {
            let by = |t: &[String], reason: &str| t.iter().any(|e| e.ends_with(reason));
            if by(&lt, "VOLUME_DISMOUNT") || by(&mt, "VOLUME_DISMOUNT") {
                cite(rows::DISMOUNT, &mut out);
            }
            if by(&lt, "FILTER_UNLOAD") || by(&mt, "FILTER_UNLOAD") {
                cite(rows::UNLOAD, &mut out);
            }
        }
        out.push('\n');
    }

    let (lu, mu) = (unloads(&legacy, &name), unloads(&mini, &name));
    if !lu.is_empty() || !mu.is_empty() {
        let _ = writeln!(out, "Unload:");
        let _ = writeln!(
            out,
            "  legacy:     {}",
            if lu.is_empty() { "none".into() } else { lu.join("; ") }
        );
        let _ = writeln!(
            out,
            "  minifilter: {}",
            if mu.is_empty() { "none".into() } else { mu.join("; ") }
        );
        if lu != mu {
            cite(rows::UNLOAD, &mut out);
        }
        out.push('\n');
    }
    let manual = scenario.steps.iter().any(|s| {
        matches!(&s.action, crate::scenario::Action::Attach { driver, .. } | crate::scenario::Action::Detach { driver, .. } if crate::scenario::same_name(driver, &name))
    });
    if manual {
        let _ = writeln!(
            out,
            "Manual attach/detach steps name {name}: only the Filter Manager has them."
        );
        cite(rows::MANUAL, &mut out);
        out.push('\n');
    }
    let findings = legacy.has_findings() || mini.has_findings();
    for (label, r) in [("legacy", &legacy), ("minifilter", &mini)] {
        let n = r.findings().count();
        let _ = writeln!(
            out,
            "Verifier ({label} run): {}",
            if n == 0 { "no findings".to_owned() } else { format!("{n} finding(s)") }
        );
    }
    Ok(Comparison { text: out, findings, rows: cited })
}

/// What the driver saw of one request under each model, and the semantics.md row that explains
/// a difference.
/// `statuses` are the step's under each model, given with its last request (the step's own: a
/// read after its open, a close after its cleanup); `dismounted` says a dismount step came before.
fn request_lines(
    out: &mut String,
    statuses: Option<(fsfilter::Status, fsfilter::Status)>,
    (lseen, lrank): (&[String], Option<usize>),
    (mseen, mrank): (&[String], Option<usize>),
    dismounted: bool,
    cite: &mut dyn FnMut(&'static str, &mut String),
) {
    let rank = |r: Option<usize>| r.map_or_else(|| "-".to_owned(), |r| format!("#{r}"));
    let _ = writeln!(
        out,
        "    legacy     (pre position {}): {}",
        rank(lrank),
        if lseen.is_empty() { "nothing".into() } else { lseen.join(", ") }
    );
    let _ = writeln!(
        out,
        "    minifilter (pre position {}): {}",
        rank(mrank),
        if mseen.is_empty() { "nothing".into() } else { mseen.join(", ") }
    );
    let differ = statuses.is_some_and(|(l, m)| l != m);
    if let Some((l, m)) = statuses.filter(|_| differ) {
        let _ = writeln!(
            out,
            "    status:    legacy {}, minifilter {}",
            crate::text::status_name(l),
            crate::text::status_name(m)
        );
    }
    let drained = |seen: &[String]| seen.iter().any(|s| s.ends_with("(draining)"));
    if drained(lseen) || drained(mseen) {
        cite(rows::DRAINING, out);
    } else if differ && dismounted {
        cite(rows::DISMOUNT, out);
    }
    if lseen.is_empty() != mseen.is_empty() {
        let _ = writeln!(
            out,
            "      missed by the {}",
            if lseen.is_empty() { "legacy filter" } else { "minifilter" }
        );
        cite(rows::VOLUMES, out);
    } else if lseen != mseen {
        // The same callbacks in another order: operations of other filters nested in this one's
        // (a data-scan section's acquire in a lower filter's post-create) come before or after
        // its own post as its position in the stack says.
        let sorted = |s: &[String]| {
            let mut v = s.to_vec();
            v.sort();
            v
        };
        if sorted(lseen) == sorted(mseen) {
            let _ = writeln!(out, "      the same callbacks, in another order");
            cite(rows::ATTACH_ORDER, out);
        } else {
            cite(rows::OPERATIONS, out);
        }
    } else if lrank != mrank {
        cite(rows::ATTACH_ORDER, out);
    }
}
