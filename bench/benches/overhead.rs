//! Per-operation overhead (issue 9): no filter, the raw windows-sys filter and the fsfilter
//! passthrough, for create+close, a cached read and a paging read, under each model.
//!
//! Each configuration runs in a `stack-worker` process, the lab's build, as in the throughput
//! benchmark ([`fsfilter_bench::worker`]): `cargo bench` builds this benchmark with
//! `panic = "unwind"`, and the drivers are built with `panic = "abort"`.
//! `FSFILTER_BENCH_IN_PROCESS=1` times them in this process instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use criterion::Criterion;
use fsfilter_bench::paired::{Paired, paired, paired_timed};
use fsfilter_bench::worker::Timed;
use fsfilter_bench::{Bench, Driver, Timings, ns};

/// The lab binary's allocator, so the numbers are the lab's (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

static TIMINGS: Timings = Timings::new();

type Op = fn(&mut Bench);

/// Each operation: its name in the tables, the worker's name for it, and the operation.
const OPS: [(&str, &str, Op); 3] = [
    ("create+close", "create", Bench::create_close),
    ("cached read", "cached", Bench::cached_read),
    ("paging read", "paging", Bench::paging_read),
];

/// The `stack-worker` binary, built by cargo for this benchmark.
const WORKER: &str = env!("CARGO_BIN_EXE_stack-worker");

/// Operations per batch of the paired measurement, by operation (a few milliseconds each).
const PAIRED_ITERS: [u64; 3] = [2_000, 10_000, 5_000];

/// Rounds of the paired measurement unless `FSFILTER_PAIRED_ROUNDS` says otherwise (0 skips it).
const PAIRED_ROUNDS: usize = 105;

/// Pairs of worker processes each comparison's rounds are shared among. Two processes of one
/// stack differ by a few percent in where their memory landed (the floor column), and one
/// pair's difference would stay in every round it runs: rounds pooled from fresh pairs average
/// it out.
const PROCESS_PAIRS: usize = 5;

/// The framework's filters against their raw baselines for the paired measurement, and the raw
/// legacy filter against itself (two machines of the same stack: the measurement's own bias).
/// One side of a pair: the driver, and its kind for the worker
/// ([`fsfilter_bench::worker::stack`]).
type Side = (Driver, &'static str);

const PAIRS: [(Side, Side); 4] = [
    ((Driver::RawMinifilter, "raw-minifilter"), (Driver::PassthroughMinifilter, "minifilter")),
    ((Driver::RawLegacy, "raw-legacy"), (Driver::PassthroughLegacy, "legacy")),
    ((Driver::RawLegacy, "raw-legacy"), (Driver::ResidentLegacy, "resident")),
    ((Driver::RawLegacy, "raw-legacy"), (Driver::RawLegacy, "raw-legacy")),
];

/// `kind` and `depth` of the worker ([`fsfilter_bench::worker::stack`]) timing `op`, with the
/// trace hook's callback events off: as on Windows, where the hook is compiled out (see
/// `Bench::record_callbacks`).
fn start(kind: &str, depth: &str, op: &str, extra: &[&str]) -> Timed {
    let args = [&[kind, depth, op, "--no-callback-events"][..], extra].concat();
    Timed::start(WORKER, &args).unwrap_or_else(|e| panic!("{kind} {op}: {e}"))
}

fn measure(c: &mut Criterion, config: &str, (kind, depth): (&str, &str)) {
    let mut group = c.benchmark_group(format!("overhead/{config}"));
    for (name, op, _) in OPS {
        let id = format!("{config}/{name}");
        let mut timed = start(kind, depth, op, &[]);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let elapsed = timed.run(iters).unwrap_or_else(|e| panic!("{e}"));
                TIMINGS.record(&id, iters, elapsed);
                elapsed
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    if Timed::in_process() {
        println!("timing in the benchmark's process (its unwinding build), not the lab's build");
    }
    // Each configuration as the worker's kind and depth.
    let configs = [
        ("none", ("minifilter", "0")),
        ("raw minifilter", ("raw-minifilter", "1")),
        ("fsfilter minifilter", ("minifilter", "1")),
        ("raw legacy", ("raw-legacy", "1")),
        ("fsfilter legacy", ("legacy", "1")),
        ("fsfilter legacy, no unload", ("resident", "1")),
    ];
    for (config, stack) in configs {
        measure(&mut c, config, stack);
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
    for (name, _, _) in OPS {
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
        "\nfsfilter against raw, alternating batches on one processor ({rounds} rounds each, from \
         {PROCESS_PAIRS} pairs of worker processes): the \
         median of the rounds' ratios [first and third quartiles]; the last column, the raw \
         legacy filter against itself, is the measurement's own floor"
    );
    println!(
        "{:<14} {:>24} {:>24} {:>24} {:>24}",
        "operation", "minifilter", "legacy", "legacy no-unload", "raw legacy vs itself"
    );
    for ((name, op_name, op), iters) in OPS.into_iter().zip(PAIRED_ITERS) {
        let [mini, legacy, resident, floor] = PAIRS.map(|((raw, raw_kind), (fsf, fsf_kind))| {
            let pair = |kind| start(kind, "1", op_name, &["--pin"]);
            let p: Paired = if Timed::in_process() {
                paired(&[raw], &[fsf], op, iters, rounds)
            } else {
                let mut pooled = Paired::default();
                for _ in 0..PROCESS_PAIRS {
                    let share = rounds.div_ceil(PROCESS_PAIRS);
                    let p = paired_timed(&mut pair(raw_kind), &mut pair(fsf_kind), iters, share)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    pooled.a.extend(p.a);
                    pooled.b.extend(p.b);
                }
                pooled
            };
            let (q1, median, q3) = p.ratio_quartiles();
            format!("{median:.3}x [{q1:.3}-{q3:.3}]")
        });
        println!("{name:<14} {mini:>24} {legacy:>24} {resident:>24} {floor:>24}");
    }
}
