//! The benchmarks' workloads, run in a process of the lab's build.
//!
//! `cargo bench` compiles a benchmark and every crate it links with `panic = "unwind"`, whatever
//! the profile says (cargo ignores the `panic` setting for benchmarks and tests). The lab ships
//! with `panic = "abort"` (the workspace's release profile), the drivers are built with it, and
//! the unwinding build of the simulator takes a tenth to a fifth longer per request through 4
//! filters: its landing pads, and the spills around them, sit on every path. So the benchmarks
//! time their workloads in a child process, the `stack-worker` binary of this crate, which cargo
//! builds for them with the profile's own `panic = "abort"`: criterion drives it, the worker
//! times the workloads, and the numbers are the lab's. `FSFILTER_BENCH_IN_PROCESS=1` times them
//! in the benchmark's own process instead, to show the difference (docs/performance.md).
//!
//! The worker's protocol, one line each way: it boots what its arguments name ([`Spec`]:
//! `<kind> <depth> [<workload>] [--no-callback-events] [--pin]`, or `lab <demonstration|sweep>`)
//! and answers `ready <callbacks> <operations>` (per mixed workload); then for each line `<n>` it
//! reads, it runs the workload `n` times and answers the nanoseconds they took. End of input
//! ends it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Bench, Driver};

/// The kinds of stack of the throughput benchmark: passthrough minifilters, legacy
/// passthroughs, or both alternating.
pub const KINDS: [&str; 3] = ["minifilter", "legacy", "mixed"];

/// `depth` filters of `kind`: one of [`KINDS`] (`mixed` alternates, a minifilter first), or
/// `resident` (the legacy passthrough without an unload callback), `raw-minifilter` or
/// `raw-legacy` (the baselines); `None` for another kind.
pub fn stack(kind: &str, depth: usize) -> Option<Vec<Driver>> {
    let driver = |i: usize| match kind {
        "minifilter" => Some(Driver::PassthroughMinifilter),
        "legacy" => Some(Driver::PassthroughLegacy),
        "mixed" if i % 2 == 0 => Some(Driver::PassthroughMinifilter),
        "mixed" => Some(Driver::PassthroughLegacy),
        "resident" => Some(Driver::ResidentLegacy),
        "raw-minifilter" => Some(Driver::RawMinifilter),
        "raw-legacy" => Some(Driver::RawLegacy),
        _ => None,
    };
    // Checked once, so that a stack of none of an unknown kind is refused too.
    driver(0)?;
    (0..depth).map(driver).collect()
}

/// A workload: what one request line of the worker runs, `n` times.
pub type Workload = fn(&mut Bench);

/// The workloads by name: `mixed` ([`Bench::mixed`]), and the operations of the overhead
/// benchmark, `create` (create and close), `cached` and `paging` (4 KiB reads).
pub const WORKLOADS: [(&str, Workload); 4] = [
    ("mixed", Bench::mixed),
    ("create", Bench::create_close),
    ("cached", Bench::cached_read),
    ("paging", Bench::paging_read),
];

/// The workload named `name` in [`WORKLOADS`], with its name.
pub fn workload(name: &str) -> Option<(&'static str, Workload)> {
    WORKLOADS.into_iter().find(|(n, _)| *n == name)
}

/// What a worker runs, from its arguments: `<kind> <depth> [<workload>]` ([`stack`],
/// [`workload`], `mixed` by default), or `lab <demonstration|sweep>` (the lab benchmark's
/// workloads: [`crate::lab::demonstration`], and [`crate::lab::sweep`] of 1,000 scenarios);
/// then any of `--no-callback-events` (the trace hook's callback events off, as in the overhead
/// benchmark) and `--pin` (the worker runs on the last processor, for
/// [`crate::paired::paired_timed`]).
#[derive(Debug, Clone)]
pub struct Spec {
    /// What it runs.
    pub job: Job,
    /// Whether the trace hook records callback events ([`Bench::record_callbacks`]).
    pub callback_events: bool,
    /// Whether the worker pins itself to [`crate::paired::last_core`].
    pub pin: bool,
}

/// A worker's job ([`Spec`]).
#[derive(Debug, Clone)]
pub enum Job {
    /// A workload on a stack.
    Stack {
        /// The stack.
        drivers: Vec<Driver>,
        /// The workload's name ([`WORKLOADS`]).
        workload: &'static str,
        /// The workload.
        run: Workload,
    },
    /// One of the lab benchmark's workloads: `demonstration` or `sweep`.
    Lab(&'static str),
}

/// Scenarios in the lab benchmark's sweep.
pub const SWEEP: usize = 1000;

impl Spec {
    /// The spec its arguments name; an error says which argument is wrong.
    pub fn parse(args: &[impl AsRef<str>]) -> Result<Spec, String> {
        let (mut callback_events, mut pin) = (true, false);
        let mut positional = Vec::new();
        for arg in args.iter().map(AsRef::as_ref) {
            match arg {
                "--no-callback-events" => callback_events = false,
                "--pin" => pin = true,
                flag if flag.starts_with("--") => {
                    return Err(format!("unknown option {flag:?}\n{USAGE}"));
                }
                _ => positional.push(arg),
            }
        }
        let job = match positional[..] {
            ["lab", "demonstration"] => Job::Lab("demonstration"),
            ["lab", "sweep"] => Job::Lab("sweep"),
            ["lab", other] => return Err(format!("unknown lab workload {other:?}\n{USAGE}")),
            [kind, depth] => Spec::stack(kind, depth, "mixed")?,
            [kind, depth, name] => Spec::stack(kind, depth, name)?,
            _ => return Err(USAGE.to_owned()),
        };
        Ok(Spec { job, callback_events, pin })
    }

    fn stack(kind: &str, depth: &str, name: &str) -> Result<Job, String> {
        let depth =
            depth.parse().map_err(|_| format!("depth: expected a number, got {depth:?}"))?;
        let drivers =
            stack(kind, depth).ok_or_else(|| format!("unknown kind {kind:?}\n{USAGE}"))?;
        let (workload, run) =
            workload(name).ok_or_else(|| format!("unknown workload {name:?}\n{USAGE}"))?;
        Ok(Job::Stack { drivers, workload, run })
    }

    /// Boots what the spec names, on this thread: its workload, and the callbacks and
    /// operations per mixed workload of its stack (zero for the lab's workloads).
    pub fn boot(&self) -> Running {
        match &self.job {
            Job::Stack { drivers, run, .. } => {
                let mut bench = Bench::new(drivers);
                let counts = (bench.callbacks_per_mixed(), bench.operations_per_mixed());
                bench.record_callbacks(self.callback_events);
                let run = *run;
                Running { run: Box::new(move || run(&mut bench)), counts }
            }
            Job::Lab(name) => {
                let run: Box<dyn FnMut()> = if *name == "sweep" {
                    // Its folder written here, untimed, and removed with the job.
                    let sweep = crate::lab::Sweep::new(SWEEP);
                    Box::new(move || {
                        assert_eq!(sweep.run(), SWEEP);
                    })
                } else {
                    Box::new(|| {
                        assert!(!crate::lab::demonstration().is_empty());
                    })
                };
                Running { run, counts: (0, 0) }
            }
        }
    }
}

/// A booted job ([`Spec::boot`]).
pub struct Running {
    run: Box<dyn FnMut()>,
    /// Callbacks and operations per mixed workload.
    pub counts: (usize, usize),
}

impl Running {
    /// The time `n` runs of the workload take.
    pub fn time(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            (self.run)();
        }
        start.elapsed()
    }
}

/// The worker's usage line.
pub const USAGE: &str = "usage: stack-worker <minifilter|legacy|mixed|resident|raw-minifilter|raw-legacy> \
                         <depth> [mixed|create|cached|paging] [--no-callback-events] [--pin]\n       \
                         stack-worker lab <demonstration|sweep>";

/// The worker's side of the protocol: boots the job of `spec`, answers `ready`, then times
/// the workloads each line of `input` asks for, until its end. An error names the line it was
/// given.
pub fn serve(spec: &Spec, input: impl BufRead, mut output: impl Write) -> Result<(), String> {
    let mut running = spec.boot();
    let (callbacks, operations) = running.counts;
    let io = |e: std::io::Error| format!("stack-worker: {e}");
    writeln!(output, "ready {callbacks} {operations}").map_err(io)?;
    output.flush().map_err(io)?;
    for line in input.lines() {
        let line = line.map_err(io)?;
        let n: u64 = line
            .trim()
            .parse()
            .map_err(|_| format!("stack-worker: expected a number of workloads, got {line:?}"))?;
        let elapsed = running.time(n);
        writeln!(output, "{}", elapsed.as_nanos()).map_err(io)?;
        output.flush().map_err(io)?;
    }
    Ok(())
}

/// A job in a `stack-worker` process ([`Spec`]).
pub struct Worker {
    child: Child,
    /// `None` once dropped (the worker's end of input).
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    /// Pre and post callbacks per mixed workload.
    pub callbacks: usize,
    /// Operations per mixed workload.
    pub operations: usize,
}

impl Worker {
    /// Starts `program` (the `stack-worker` binary) with `args` ([`Spec::parse`]), and waits
    /// for it to boot.
    pub fn spawn(program: &str, args: &[&str]) -> Result<Worker, String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{program}: {e}"))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(format!("{program}: no pipes"));
        };
        let mut worker = Worker {
            child,
            input: Some(input),
            output: BufReader::new(output),
            callbacks: 0,
            operations: 0,
        };
        let ready = worker.answer()?;
        let counts: Vec<usize> = ready
            .strip_prefix("ready ")
            .unwrap_or("")
            .split(' ')
            .filter_map(|n| n.parse().ok())
            .collect();
        let [callbacks, operations] = counts[..] else {
            return Err(format!(
                "{program}: expected `ready <callbacks> <operations>`, got {ready:?}"
            ));
        };
        (worker.callbacks, worker.operations) = (callbacks, operations);
        Ok(worker)
    }

    /// Runs the workload `n` times in the worker: the time they took there.
    pub fn run(&mut self, n: u64) -> Result<Duration, String> {
        let input = self.input.as_mut().ok_or("stack-worker: input closed")?;
        writeln!(input, "{n}").map_err(|e| format!("stack-worker: {e}"))?;
        let answer = self.answer()?;
        let nanos: u64 = answer
            .parse()
            .map_err(|_| format!("stack-worker: expected nanoseconds, got {answer:?}"))?;
        Ok(Duration::from_nanos(nanos))
    }

    fn answer(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.output.read_line(&mut line) {
            Ok(0) => {
                // Its error message, if it wrote one (it has exited: this cannot block).
                let mut message = String::new();
                if let Some(mut stderr) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut message);
                }
                Err(format!("stack-worker: exited before answering: {}", message.trim_end()))
            }
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(format!("stack-worker: {e}")),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // End of input ends the worker; wait, so that no process outlives the benchmark.
        drop(self.input.take());
        let _ = self.child.wait();
    }
}

/// A job timed by a benchmark: in a worker process (the lab's build), or in the benchmark's
/// own process when `FSFILTER_BENCH_IN_PROCESS=1` is set ([`Timed::in_process`]).
pub enum Timed {
    /// In a `stack-worker` process.
    Worker(Worker),
    /// Here.
    InProcess(Running),
}

impl Timed {
    /// Whether `FSFILTER_BENCH_IN_PROCESS=1` asks for timing in the benchmark's process.
    pub fn in_process() -> bool {
        std::env::var_os("FSFILTER_BENCH_IN_PROCESS").is_some_and(|v| v == "1")
    }

    /// The job that `args` name ([`Spec::parse`]), booted in `program` (the `stack-worker`
    /// binary), or here when [`Timed::in_process`].
    pub fn start(program: &str, args: &[&str]) -> Result<Timed, String> {
        if !Timed::in_process() {
            return Worker::spawn(program, args).map(Timed::Worker);
        }
        Ok(Timed::InProcess(Spec::parse(args)?.boot()))
    }

    /// Callbacks and operations per mixed workload.
    pub fn counts(&self) -> (usize, usize) {
        match self {
            Timed::Worker(w) => (w.callbacks, w.operations),
            Timed::InProcess(r) => r.counts,
        }
    }

    /// The time `n` runs of the workload take.
    pub fn run(&mut self, n: u64) -> Result<Duration, String> {
        match self {
            Timed::Worker(w) => w.run(n),
            Timed::InProcess(r) => Ok(r.time(n)),
        }
    }
}
