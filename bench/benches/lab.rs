//! The lab (issue 9): the built-in demonstration end to end (parse, run both models, render the
//! text report), and a sweep of 1,000 scenarios (the demonstration's attach-order question with
//! the later probe's altitude swept over 1,000 values), as `fsfilter sweep` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use std::time::Instant;

use criterion::Criterion;
use fsfilter_bench::{Timings, ns};

/// The lab binary's allocator, so the numbers are the lab's (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

static TIMINGS: Timings = Timings::new();

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("lab");
    group.bench_function("demonstration", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let text = fsfilter_bench::lab::demonstration();
                assert!(!text.is_empty());
            }
            let elapsed = start.elapsed();
            TIMINGS.record("demonstration", iters, elapsed);
            elapsed
        })
    });
    group.sample_size(10);
    group.bench_function("sweep of 1000 scenarios", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let runs = fsfilter_bench::lab::sweep(1000);
                assert_eq!(runs, 1000);
            }
            let elapsed = start.elapsed();
            TIMINGS.record("sweep", iters, elapsed);
            elapsed
        })
    });
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
