//! The throughput benchmark's stacks, run in a process of the lab's build.
//!
//! `cargo bench` compiles a benchmark and every crate it links with `panic = "unwind"`, whatever
//! the profile says (cargo ignores the `panic` setting for benchmarks and tests). The lab ships
//! with `panic = "abort"` (the workspace's release profile), and the unwinding build of the
//! simulator takes a tenth to a fifth longer per request (4-filter stacks): its landing pads and
//! the spills around them sit on every path. So the throughput benchmark times its stacks in a child process, the
//! `stack-worker` binary of this crate, which cargo builds for the benchmark with the profile's
//! own `panic = "abort"`: criterion drives it, the worker times the workloads, and the numbers
//! are the lab's. `FSFILTER_BENCH_IN_PROCESS=1` times them in the benchmark's own process
//! instead, to show the difference (docs/performance.md).
//!
//! The worker's protocol, one line each way: it boots the stack named by its arguments
//! (`<kind> <depth>`, [`stack`]) and answers `ready <callbacks> <operations>` (per mixed
//! workload); then for each line `<n>` it reads, it runs `n` mixed workloads and answers the
//! nanoseconds they took. End of input ends it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Bench, Driver};

/// The kinds of stack: passthrough minifilters, legacy passthroughs, or both alternating.
pub const KINDS: [&str; 3] = ["minifilter", "legacy", "mixed"];

/// `depth` filters of `kind` ([`KINDS`]; `mixed` alternates, a minifilter first); `None` for
/// another kind.
pub fn stack(kind: &str, depth: usize) -> Option<Vec<Driver>> {
    let driver = |i: usize| match kind {
        "minifilter" => Some(Driver::PassthroughMinifilter),
        "legacy" => Some(Driver::PassthroughLegacy),
        "mixed" if i % 2 == 0 => Some(Driver::PassthroughMinifilter),
        "mixed" => Some(Driver::PassthroughLegacy),
        _ => None,
    };
    if !KINDS.contains(&kind) {
        return None;
    }
    (0..depth).map(driver).collect()
}

/// The worker's side of the protocol: boots `drivers`, answers `ready`, then times the
/// workloads each line of `input` asks for, until its end. An error names the line it was
/// given.
pub fn serve(
    drivers: &[Driver],
    input: impl BufRead,
    mut output: impl Write,
) -> Result<(), String> {
    let mut bench = Bench::new(drivers);
    let (callbacks, operations) = (bench.callbacks_per_mixed(), bench.operations_per_mixed());
    let io = |e: std::io::Error| format!("stack-worker: {e}");
    writeln!(output, "ready {callbacks} {operations}").map_err(io)?;
    output.flush().map_err(io)?;
    for line in input.lines() {
        let line = line.map_err(io)?;
        let n: u64 = line
            .trim()
            .parse()
            .map_err(|_| format!("stack-worker: expected a number of workloads, got {line:?}"))?;
        let start = Instant::now();
        for _ in 0..n {
            bench.mixed();
        }
        let elapsed = start.elapsed();
        writeln!(output, "{}", elapsed.as_nanos()).map_err(io)?;
        output.flush().map_err(io)?;
    }
    Ok(())
}

/// A stack in a `stack-worker` process.
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
    /// Starts `program` (the `stack-worker` binary) on a stack of `depth` filters of `kind`,
    /// and waits for it to boot.
    pub fn spawn(program: &str, kind: &str, depth: usize) -> Result<Worker, String> {
        let mut child = Command::new(program)
            .args([kind, &depth.to_string()])
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

    /// Runs `n` mixed workloads in the worker: the time they took there.
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
