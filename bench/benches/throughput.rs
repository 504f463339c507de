//! Simulator throughput (issue 9): user requests per second through stacks of 0, 1, 4 and 16
//! filters, minifilters, legacy filters and both mixed, with the mixed workload of
//! [`Bench::mixed`]; then how the time per request grows with the depth of the stack.
//!
//! Each stack runs in a `stack-worker` process, the lab's build (`panic = "abort"`), which cargo
//! builds for this benchmark; criterion drives it and it times the workloads
//! ([`fsfilter_bench::worker`] says why). `FSFILTER_BENCH_IN_PROCESS=1` times them in this
//! process instead, the unwinding build `cargo bench` makes of every benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use criterion::Criterion;
use fsfilter_bench::worker::{KINDS, Timed};
use fsfilter_bench::{MIXED_REQUESTS, Timings, ns};

/// The lab binary's allocator, so the numbers are the lab's (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

static TIMINGS: Timings = Timings::new();

/// Pre and post callbacks of the filters, and operations through the stack, per mixed
/// workload, by configuration.
static CALLBACKS: std::sync::Mutex<std::collections::BTreeMap<String, (usize, usize)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

const DEPTHS: [usize; 4] = [0, 1, 4, 16];

/// The `stack-worker` binary, built by cargo for this benchmark.
const WORKER: &str = env!("CARGO_BIN_EXE_stack-worker");

fn main() {
    let mut c = Criterion::default().configure_from_args();
    if Timed::in_process() {
        println!("timing in the benchmark's process (its unwinding build), not the lab's build");
    }
    for kind in KINDS {
        for depth in DEPTHS {
            if depth == 0 && kind != "minifilter" {
                continue;
            }
            let id = format!("{kind}/{depth}");
            let mut stack = Timed::start(WORKER, &[kind, &depth.to_string()])
                .unwrap_or_else(|e| panic!("{kind}/{depth}: {e}"));
            let counts = stack.counts();
            CALLBACKS.lock().unwrap().insert(id.clone(), counts);
            let mut group = c.benchmark_group("throughput");
            group.throughput(criterion::Throughput::Elements(MIXED_REQUESTS));
            group.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let elapsed = stack.run(iters).unwrap_or_else(|e| panic!("{e}"));
                    TIMINGS.record(&id, iters, elapsed);
                    elapsed
                })
            });
            group.finish();
            drop(stack);
        }
    }
    c.final_summary();
    let per_request = |id: &str| TIMINGS.median(id).map(|s| s / MIXED_REQUESTS as f64);
    println!("\nthroughput (mixed workload, median of this run):");
    println!(
        "{:<12} {:>6} {:>14} {:>16} {:>18} {:>14} {:>14}",
        "stack",
        "depth",
        "ns/request",
        "requests/s",
        "ns per added filter",
        "callbacks/s",
        "operations/s"
    );
    let base = per_request("minifilter/0");
    for kind in KINDS {
        for depth in DEPTHS {
            let id = if depth == 0 { "minifilter/0".to_owned() } else { format!("{kind}/{depth}") };
            let Some(t) = per_request(&id) else { continue };
            let slope = match (base, depth) {
                (Some(b), d) if d > 0 => format!("{:.0}", ns(t - b) / d as f64),
                _ => "-".to_owned(),
            };
            let (callbacks, operations) =
                CALLBACKS.lock().unwrap().get(&id).copied().unwrap_or((0, 0));
            // Per second: the workload's count over its time (MIXED_REQUESTS requests of `t`).
            let per_second = |n: usize| n as f64 / MIXED_REQUESTS as f64 / t;
            let operations = match operations {
                0 => "-".to_owned(),
                n => format!("{:.0}", per_second(n)),
            };
            println!(
                "{kind:<12} {depth:>6} {:>14.0} {:>16.0} {slope:>18} {:>14.0} {operations:>14}",
                ns(t),
                1.0 / t,
                per_second(callbacks)
            );
        }
    }
}
