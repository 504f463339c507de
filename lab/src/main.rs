//! `fsfilter`: the lab. Runs attach-ordering scenarios in the simulated NT kernel, with every
//! sample built against both filter models, and reports what each filter saw.
//!
//! Exit status (scenario.md): 0 on success; 2 for a bad scenario (the message names file, line and
//! key) or a usage error (clap's, or an output file that is the scenario file); 1 when the run
//! found verifier violations (the report still prints); 3 when an output file (`--report`,
//! `--trace`) could not be written (what went to standard output is complete).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use fsfilter_lab::{compare, demo, html, json, run, samples, scenario, sweep, text, trace};

/// The simulator allocates and frees many small records per request (event-log strings, request
/// records); mimalloc serves them about twice as fast as glibc's allocator in the lab's
/// workloads (docs/performance-history.md, "Simulator throughput").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The fsfilter lab: attach-ordering experiments under both filter models.
#[derive(Parser, Debug)]
#[command(name = "fsfilter", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// The text report.
    Text,
    /// The JSON document of scenario.md.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a scenario.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Output format on standard output.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Also write a self-contained HTML report.
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
        /// Also write Chrome trace events (Perfetto, chrome://tracing).
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
    /// Runs a scenario with one driver as a legacy filter and as a minifilter, side by side.
    Compare {
        /// The scenario file.
        scenario: PathBuf,
        /// The driver to compare.
        #[arg(long)]
        driver: String,
    },
    /// Validates a scenario without running it.
    Check {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// Lists the samples and the parameters each reads.
    Samples,
    /// Runs every scenario of a folder in parallel and writes a CSV summary.
    Sweep {
        /// The folder.
        dir: PathBuf,
        /// Where the CSV goes (standard output when absent).
        #[arg(long, value_name = "FILE.csv")]
        csv: Option<PathBuf>,
        /// Worker threads (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Runs the built-in demonstration (the default).
    Demo {
        /// Also write the demonstration's HTML report.
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
    },
}

fn load(path: &std::path::Path) -> Result<scenario::Scenario, ExitCode> {
    let shown = path.display().to_string();
    let bytes = scenario::read_file(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    let s = scenario::parse_bytes(&shown, &bytes).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    Ok(s)
}

/// `path` made absolute with every link resolved; for a file not made yet, its folder's.
fn canonical(path: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(path) {
        return Some(c);
    }
    let name = path.file_name()?;
    let folder = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(folder).ok()?.join(name))
}

/// True when `a` and `b` name one file: on Unix the same device and inode when both exist (hard
/// links too), else the same canonical path.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    matches!((canonical(a), canonical(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses, before anything runs, an output file (`--report`, `--trace`, `--csv`) that is one of
/// the scenario files read or another output: writing it would destroy the scenario or the other
/// output. A usage error: exit 2.
fn distinct_outputs(
    inputs: &[PathBuf],
    outputs: &[(&str, Option<&PathBuf>)],
) -> Result<(), ExitCode> {
    let outputs: Vec<(&str, &PathBuf)> =
        outputs.iter().filter_map(|(f, p)| Some((*f, (*p)?))).collect();
    for (i, (flag, out)) in outputs.iter().enumerate() {
        let shown = out.display();
        if let Some(input) = inputs.iter().find(|input| same_file(out, input)) {
            eprintln!(
                "{flag} {shown}: is the scenario file {}; refusing to overwrite it",
                input.display()
            );
            return Err(ExitCode::from(2));
        }
        if let Some((other, _)) = outputs.iter().take(i).find(|(_, o)| same_file(out, o)) {
            eprintln!("{flag} {shown}: is the file {other} writes; give each output its own file");
            return Err(ExitCode::from(2));
        }
    }
    Ok(())
}

fn write(path: &std::path::Path, contents: &str) -> Result<(), ExitCode> {
    std::fs::write(path, contents).map_err(|e| {
        eprintln!("{}: cannot write: {e}", path.display());
        // Not 2: the scenario was good and its run is complete.
        ExitCode::from(3)
    })
}

/// Writes to standard output; a closed pipe (`fsfilter ... | head`) ends the output quietly.
fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

fn verdict(r: &run::Run) -> ExitCode {
    if r.has_findings() { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Demo { report: None }) {
        Command::Run { scenario, format, report, trace: trace_file } => (|| {
            let outputs = [("--report", report.as_ref()), ("--trace", trace_file.as_ref())];
            distinct_outputs(std::slice::from_ref(&scenario), &outputs)?;
            let s = load(&scenario)?;
            let r = run::run(&s);
            match format {
                Format::Text => out(&text::report(&s, &r)),
                Format::Json => out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&json::document(&r)).unwrap_or_default()
                )),
            }
            if let Some(p) = report {
                write(&p, &html::report(&s, &r))?;
            }
            if let Some(p) = trace_file {
                write(&p, &trace::chrome(&r))?;
            }
            Ok(verdict(&r))
        })(),
        Command::Compare { scenario, driver } => (|| {
            let s = load(&scenario)?;
            match compare::compare(&s, &driver) {
                Ok(c) => {
                    out(&c.text);
                    Ok(if c.findings { ExitCode::from(1) } else { ExitCode::SUCCESS })
                }
                Err(message) => {
                    eprintln!("{}: {message}", scenario.display());
                    Err(ExitCode::from(2))
                }
            }
        })(),
        Command::Check { scenario } => load(&scenario).map(|s| {
            out(&format!(
                "{}: ok ({} volumes, {} drivers, {} steps)\n",
                scenario.display(),
                s.volumes.len(),
                s.drivers.len(),
                s.steps.len()
            ));
            ExitCode::SUCCESS
        }),
        Command::Samples => {
            out(&samples::listing());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep { dir, csv, jobs } => (|| {
            let files = sweep::scenario_files(&dir).map_err(|e| {
                eprintln!("{}: {e}", dir.display());
                ExitCode::from(2)
            })?;
            distinct_outputs(&files, &[("--csv", csv.as_ref())])?;
            // The files checked above, not a second listing of the folder.
            let summary = sweep::sweep_files(&files, jobs, true).map_err(|e| {
                eprintln!("{}: {e}", dir.display());
                ExitCode::from(2)
            })?;
            match csv {
                Some(p) => write(&p, &summary.csv)?,
                None => out(&summary.csv),
            }
            for w in summary.rows.iter().flat_map(|r| &r.warnings) {
                eprintln!("warning: {w}");
            }
            eprintln!("{}", summary.totals());
            Ok(if summary.bad > 0 {
                ExitCode::from(2)
            } else if summary.with_findings > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        })(),
        Command::Demo { report } => (|| {
            let d = demo::run();
            out(&d.text);
            if let Some(p) = report {
                write(&p, &d.html)?;
            }
            Ok(if d.findings { ExitCode::from(1) } else { ExitCode::SUCCESS })
        })(),
    };
    result.unwrap_or_else(|code| code)
}
