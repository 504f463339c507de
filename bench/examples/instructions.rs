//! A fixed workload for instruction counts (issue 9): builds a 4-filter mixed stack (as
//! `throughput/mixed/4`), runs `WARM` mixed workloads, then the number of mixed workloads given
//! as the first argument (default 1,000). Run it under callgrind twice, with 0 and with N, and
//! divide the difference by N for the instructions per [`Bench::mixed`]:
//!
//! `valgrind --tool=callgrind target/release/examples/instructions 1000`
//!
//! The second argument picks the stack: `mixed` (the default), `minifilter` or `legacy` (the
//! passthrough sample), `resident` (passthrough on the legacy backend without an unload
//! callback), or the raw baselines `raw-minifilter` and `raw-legacy`; the third its depth
//! (default 4); the fourth the measured workload: `mixed` (the default), or one operation of the
//! overhead benchmark, `create` (create and close), `cached` or `paging` (4 KiB reads).
//! Comparing `minifilter 1` with `raw-minifilter 1` gives the framework's overhead in
//! instructions, free of the clock's noise (set `NO_CALLBACK_EVENTS` in the environment to turn
//! the trace hook off, as the overhead benchmark does). With `DUMP_EVENTS` set in the environment,
//! it prints every event of `n` mixed workloads instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "example")]

use fsfilter_bench::Bench;

/// The lab binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mixed workloads run before the measured ones (one trim of the event log and more).
const WARM: u64 = 500;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let kind = args.next().unwrap_or_else(|| "mixed".to_owned());
    let depth: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let workload = args.next().unwrap_or_else(|| "mixed".to_owned());
    let (_, run) = fsfilter_bench::worker::workload(&workload)
        .unwrap_or_else(|| panic!("unknown workload {workload:?}"));
    let stack = fsfilter_bench::worker::stack(&kind, depth)
        .unwrap_or_else(|| panic!("unknown stack {kind:?}"));
    let mut bench = Bench::new(&stack);
    if std::env::var_os("NO_CALLBACK_EVENTS").is_some() {
        // As the overhead benchmark: the trace hook off, as on Windows (the raw filters have none).
        bench.record_callbacks(false);
    }
    if std::env::var_os("DUMP_EVENTS").is_some() {
        // Behaviour check: every event of a few workloads, for a diff before and after a change.
        bench.trim();
        for _ in 0..n {
            bench.mixed();
        }
        for e in bench.machine.events() {
            println!("{e:?}");
        }
        println!("{:?}", bench.machine.findings());
        return;
    }
    for _ in 0..WARM {
        bench.mixed();
    }
    for _ in 0..n {
        run(&mut bench);
    }
    println!("{kind}/{depth}: {n} {workload} workloads after {WARM} mixed");
}
