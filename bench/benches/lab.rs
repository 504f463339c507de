//! The lab (issue 9): the built-in demonstration end to end (parse, run, render the text and
//! HTML reports, compare `ProbeLate` under both models), and a sweep of 1,000 scenarios (the demonstration's attach-order question with
//! the later probe's altitude swept over 1,000 values), as `fsfilter sweep` runs it. Each in a
//! `stack-worker` process, the lab's build (`fsfilter_bench::worker`);
//! `FSFILTER_BENCH_IN_PROCESS=1` times them in this process instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use criterion::Criterion;
use criterion::measurement::WallTime;
use fsfilter_bench::worker::Timed;
use fsfilter_bench::{Timings, ns};

/// The lab binary's allocator, so the numbers are the lab's (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

static TIMINGS: Timings = Timings::new();

/// The `stack-worker` binary, built by cargo for this benchmark.
const WORKER: &str = env!("CARGO_BIN_EXE_stack-worker");

/// Times the lab workload `name` under criterion as `id`.
fn bench(group: &mut criterion::BenchmarkGroup<'_, WallTime>, id: &str, name: &str) {
    let mut timed = Timed::start(WORKER, &["lab", name]).unwrap_or_else(|e| panic!("{name}: {e}"));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let elapsed = timed.run(iters).unwrap_or_else(|e| panic!("{name}: {e}"));
            TIMINGS.record(name, iters, elapsed);
            elapsed
        })
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    if Timed::in_process() {
        println!("timing in the benchmark's process (its unwinding build), not the lab's build");
    }
    let mut group = c.benchmark_group("lab");
    bench(&mut group, "demonstration", "demonstration");
    group.sample_size(10);
    bench(&mut group, "sweep of 1000 scenarios", "sweep");
    group.finish();
    c.final_summary();
    println!("\nlab (median of this run):");
    if let Some(t) = TIMINGS.median("demonstration") {
        println!("demonstration end to end: {:.2} ms", ns(t) / 1e6);
    }
    if let Some(t) = TIMINGS.median("sweep") {
        println!("1,000-scenario sweep: {:.1} ms ({:.0} scenarios/s)", ns(t) / 1e6, 1000.0 / t);
    }
}
