//! Scratch: a fixed mixed workload for instruction-count profiling (not committed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "example")]
use fsfilter_bench::{Bench, Driver};
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut bench = Bench::new(&[
        Driver::PassthroughMinifilter,
        Driver::PassthroughLegacy,
        Driver::PassthroughMinifilter,
        Driver::PassthroughLegacy,
    ]);
    for _ in 0..200 {
        bench.mixed();
    }
    let t = std::time::Instant::now();
    for _ in 0..n {
        bench.mixed();
    }
    eprintln!("{:.0} ns/request", t.elapsed().as_nanos() as f64 / (n * 10) as f64);
}
