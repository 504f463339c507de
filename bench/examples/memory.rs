//! The simulator's memory per request (issue 9): runs the mixed workload through a 4-filter
//! stack (two passthrough minifilters, two legacy passthroughs) and prints the resident set
//! size every 200,000 user requests, and the growth per request between the first and the last
//! reading (Linux: `/proc/self/statm`).
//!
//! `cargo run --release -p fsfilter-bench --example memory`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "example")]

use fsfilter_bench::{Bench, Driver, MIXED_REQUESTS};

/// The lab binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages = statm.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok());
    pages.unwrap_or(0) * 4096
}

fn main() {
    let mut bench = Bench::new(&[
        Driver::PassthroughMinifilter,
        Driver::PassthroughLegacy,
        Driver::PassthroughMinifilter,
        Driver::PassthroughLegacy,
    ]);
    let rounds = 5;
    let per_round = 200_000 / MIXED_REQUESTS;
    let start = std::time::Instant::now();
    let mut first = None;
    let mut last = 0;
    for round in 1..=rounds {
        for _ in 0..per_round {
            bench.mixed();
        }
        last = rss_bytes();
        first.get_or_insert(last);
        println!(
            "{:>9} requests: {:>8} KiB resident, {:.2?}",
            round * per_round * MIXED_REQUESTS,
            last / 1024,
            start.elapsed()
        );
    }
    let requests = (rounds - 1) * per_round * MIXED_REQUESTS;
    let growth = last.saturating_sub(first.unwrap_or(last)) as f64 / requests as f64;
    println!("growth: {growth:.1} bytes per request after the first 200,000");
}
