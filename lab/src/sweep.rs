//! `fsfilter sweep DIR`: every scenario of a folder, run in parallel (each worker thread has its
//! own simulated machine), with a progress bar, summarised as CSV: the end stacks, the order of
//! filters for each request, and the verifier findings.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use fsfilter_sim::EventKind;

use crate::run::{Run, StackEntry, run};
use crate::scenario;

/// One scenario's line.
#[derive(Clone, Debug)]
pub struct Row {
    /// The file.
    pub file: String,
    /// The scenario name (empty for a bad file).
    pub scenario: String,
    /// `ok`, `findings` or `bad`.
    pub outcome: &'static str,
    /// The end stacks, `C:=A>frame 0[B@370000,C@320000]>Ntfs; D:=...`.
    pub stacks: String,
    /// For each io step, the drivers' pre callbacks in order: `[2] B>A; [3] ...`.
    pub orderings: String,
    /// The verifier rules that fired, or the scenario error.
    pub findings: String,
    /// The scenario's warnings (`file:line: key: message`), which `fsfilter sweep` prints on
    /// standard error as `check` and `run` do; not in the CSV.
    pub warnings: Vec<String>,
}

/// A finished sweep.
#[derive(Debug)]
pub struct Summary {
    /// The rows, in file order.
    pub rows: Vec<Row>,
    /// The CSV text.
    pub csv: String,
    /// Scenarios that could not be loaded.
    pub bad: usize,
    /// Scenarios whose run had verifier findings.
    pub with_findings: usize,
}

impl Summary {
    /// One line of totals.
    pub fn totals(&self) -> String {
        format!(
            "{} scenarios: {} ok, {} with verifier findings, {} bad",
            self.rows.len(),
            self.rows.len() - self.bad - self.with_findings,
            self.with_findings,
            self.bad
        )
    }
}

fn stacks(r: &Run) -> String {
    let Some(end) = r.snapshots.last() else { return String::new() };
    end.volumes
        .iter()
        .map(|(v, stack)| {
            let parts: Vec<String> = stack
                .iter()
                .map(|e| match e {
                    StackEntry::Legacy { driver } => driver.clone(),
                    StackEntry::Frame { frame, instances } => {
                        let i: Vec<String> =
                            instances.iter().map(|(d, _, a)| format!("{d}@{a}")).collect();
                        format!("frame {frame}[{}]", i.join(","))
                    }
                    StackEntry::FileSystem { driver } => driver.clone(),
                })
                .collect();
            format!("{v}={}", parts.join(">"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn orderings(r: &Run) -> String {
    // Every request's pre callbacks in one pass over the log (not one pass per io step).
    let mut pres: std::collections::BTreeMap<u32, Vec<&str>> = std::collections::BTreeMap::new();
    for e in &r.events {
        if let EventKind::Callback {
            driver,
            io: Some(io),
            callback: fsfilter_sim::Callback::Pre { .. },
            ..
        } = &e.kind
        {
            pres.entry(io.0).or_default().push(driver);
        }
    }
    r.steps
        .iter()
        .filter_map(|s| {
            let io = s.io?;
            let order = pres.get(&io.0).map(|p| p.join(">")).unwrap_or_default();
            Some(format!("[{}] {order}", s.index))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn row_for(path: &Path) -> Row {
    let file = path.display().to_string();
    let parsed = scenario::read_file(path)
        .and_then(|b| scenario::parse_bytes(&file, &b).map_err(|e| e.to_string()));
    match parsed {
        Err(message) => Row {
            file,
            scenario: String::new(),
            outcome: "bad",
            stacks: String::new(),
            orderings: String::new(),
            findings: message,
            warnings: Vec::new(),
        },
        Ok(s) => {
            let r = run(&s);
            let rules: Vec<&str> = r
                .findings()
                .filter_map(|e| match &e.kind {
                    EventKind::Verifier { rule, .. } => Some(rule.name()),
                    _ => None,
                })
                .collect();
            Row {
                file,
                scenario: s.name.clone(),
                outcome: if rules.is_empty() { "ok" } else { "findings" },
                stacks: stacks(&r),
                orderings: orderings(&r),
                findings: rules.join(" "),
                warnings: s.warnings.iter().map(ToString::to_string).collect(),
            }
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn draw(done: usize, total: usize) {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r[{}{}] {done}/{total}", "#".repeat(filled), " ".repeat(width - filled));
    if done == total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

/// The scenarios a sweep of `dir` reads: its `*.toml` files, sorted.
pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the folder: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs every `*.toml` in `dir` with `jobs` workers (default: the CPUs).
pub fn sweep(dir: &Path, jobs: Option<usize>, progress: bool) -> Result<Summary, String> {
    sweep_files(&scenario_files(dir)?, jobs, progress)
}

/// Runs the scenario `files` ([`scenario_files`]) with `jobs` workers (default: the CPUs).
pub fn sweep_files(
    files: &[PathBuf],
    jobs: Option<usize>,
    progress: bool,
) -> Result<Summary, String> {
    let total = files.len();
    let workers = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, total.max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<Row>>> = Mutex::new(vec![None; total]);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let row = row_for(path);
                    if let Ok(mut rows) = rows.lock() {
                        if let Some(slot) = rows.get_mut(i) {
                            *slot = Some(row);
                        }
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if progress {
                        draw(n, total);
                    }
                }
            });
        }
    });
    let rows: Vec<Row> = rows
        .into_inner()
        .map_err(|_| "a worker failed".to_owned())?
        .into_iter()
        .flatten()
        .collect();
    let mut csv = String::from("file,scenario,outcome,end_stacks,pre_orderings,findings\n");
    for r in &rows {
        let fields = [&r.file, &r.scenario, r.outcome, &r.stacks, &r.orderings, &r.findings];
        csv.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        csv.push('\n');
    }
    let bad = rows.iter().filter(|r| r.outcome == "bad").count();
    let with_findings = rows.iter().filter(|r| r.outcome == "findings").count();
    Ok(Summary { rows, csv, bad, with_findings })
}
