//! Per-operation overhead (issue 9): no filter, the raw windows-sys filter and the fsfilter
//! passthrough, for create+close, a cached read and a paging read, under each model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use std::time::Instant;

use criterion::Criterion;
use fsfilter_bench::paired::paired;
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

/// Operations per batch of the paired measurement, by operation (a few milliseconds each).
const PAIRED_ITERS: [u64; 3] = [2_000, 10_000, 5_000];

/// Rounds of the paired measurement unless `FSFILTER_PAIRED_ROUNDS` says otherwise (0 skips it).
const PAIRED_ROUNDS: usize = 101;

/// The framework's filters against their raw baselines for the paired measurement, and the raw
/// legacy filter against itself (two machines of the same stack: the measurement's own bias).
const PAIRS: [(Driver, Driver); 4] = [
    (Driver::RawMinifilter, Driver::PassthroughMinifilter),
    (Driver::RawLegacy, Driver::PassthroughLegacy),
    (Driver::RawLegacy, Driver::ResidentLegacy),
    (Driver::RawLegacy, Driver::RawLegacy),
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
    print_paired();
}

/// The ratios again, from alternating batches of each framework filter and its raw baseline
/// (`fsfilter_bench::paired`): criterion times one configuration after another, so a burst of
/// load during one moves its ratio; alternating rounds share their bursts.
fn print_paired() {
    let rounds = std::env::var("FSFILTER_PAIRED_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(PAIRED_ROUNDS);
    if rounds == 0 {
        return;
    }
    println!(
        "\nfsfilter against raw, alternating batches on one processor ({rounds} rounds each): the \
         median of the rounds' ratios [first and third quartiles]; the last column, the raw \
         legacy filter against itself, is the measurement's own floor"
    );
    println!(
        "{:<14} {:>24} {:>24} {:>24} {:>24}",
        "operation", "minifilter", "legacy", "legacy no-unload", "raw legacy vs itself"
    );
    for ((name, op), iters) in OPS.into_iter().zip(PAIRED_ITERS) {
        let [mini, legacy, resident, floor] = PAIRS.map(|(raw, fsf)| {
            let (q1, median, q3) = paired(&[raw], &[fsf], op, iters, rounds).ratio_quartiles();
            format!("{median:.3}x [{q1:.3}-{q3:.3}]")
        });
        println!("{name:<14} {mini:>24} {legacy:>24} {resident:>24} {floor:>24}");
    }
}
