//! Per-operation overhead (issue 9): no filter, the raw windows-sys filter and the fsfilter
//! passthrough, for create+close, a cached read and a paging read, under each model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use std::time::Instant;

use criterion::Criterion;
use fsfilter_bench::{Bench, Driver, Timings, ns};

/// The lab binary's allocator, so the numbers are the lab's (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

static TIMINGS: Timings = Timings::new();

type Op = fn(&mut Bench);

const OPS: [(&str, Op); 3] = [
    ("create+close", Bench::create_close),
    ("cached read", Bench::cached_read),
    ("paging read", Bench::paging_read),
];

fn measure(c: &mut Criterion, config: &str, drivers: &[Driver]) {
    let mut bench = Bench::new(drivers);
    // As on Windows: the trace hook compiled out (see Bench::record_callbacks).
    bench.record_callbacks(false);
    let mut group = c.benchmark_group(format!("overhead/{config}"));
    for (name, op) in OPS {
        let id = format!("{config}/{name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    op(&mut bench);
                }
                let elapsed = start.elapsed();
                TIMINGS.record(&id, iters, elapsed);
                elapsed
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let configs: [(&str, &[Driver]); 6] = [
        ("none", &[]),
        ("raw minifilter", &[Driver::RawMinifilter]),
        ("fsfilter minifilter", &[Driver::PassthroughMinifilter]),
        ("raw legacy", &[Driver::RawLegacy]),
        ("fsfilter legacy", &[Driver::PassthroughLegacy]),
        ("fsfilter legacy, no unload", &[Driver::ResidentLegacy]),
    ];
    for (config, drivers) in configs {
        measure(&mut c, config, drivers);
    }
    c.final_summary();
    println!("\nper-operation time (median of criterion's samples, this run):");
    println!(
        "{:<14} {:>8} {:>12} {:>19} {:>14} {:>19} {:>24}",
        "operation",
        "none ns",
        "raw mini ns",
        "fsf mini ns",
        "raw legacy ns",
        "fsf legacy ns",
        "fsf legacy no-unload ns"
    );
    for (name, _) in OPS {
        let t = |config: &str| TIMINGS.median(&format!("{config}/{name}")).map_or(f64::NAN, ns);
        let vs = |config: &str, raw: &str| format!("{:.0} ({:.2}x)", t(config), t(config) / t(raw));
        println!(
            "{:<14} {:>8.0} {:>12.0} {:>19} {:>14.0} {:>19} {:>24}",
            name,
            t("none"),
            t("raw minifilter"),
            vs("fsfilter minifilter", "raw minifilter"),
            t("raw legacy"),
            vs("fsfilter legacy", "raw legacy"),
            vs("fsfilter legacy, no unload", "raw legacy")
        );
    }
}
