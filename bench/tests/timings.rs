//! The tables the benchmarks print come from the samples criterion measured in the same run
//! ([`fsfilter_bench::Timings`]), not from its warm-up: criterion calls an `iter_custom` routine
//! for its warm-up too (batches of 1, 2, 4, ... iterations until the warm-up time is spent),
//! then once per sample.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::Duration;

use criterion::Criterion;
use fsfilter_bench::Timings;

/// A criterion with `samples` samples, short warm-up and measurement times, and its files in a
/// folder of its own.
fn criterion(samples: usize) -> Criterion {
    let dir = std::env::temp_dir().join(format!("fsfilter-bench-timings-{}", std::process::id()));
    Criterion::default()
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(40))
        .measurement_time(Duration::from_millis(60))
        .nresamples(1001)
        .without_plots()
        .output_directory(&dir)
}

#[test]
fn the_medians_are_of_the_measured_samples_only() {
    static TIMINGS: Timings = Timings::new();
    let mut c = criterion(10);
    let mut calls = 0u64;
    let mut first = true;
    c.bench_function("timed", |b| {
        b.iter_custom(|iters| {
            calls += 1;
            // A cold first batch, as the lab's sweep writes its scenario folder in its first
            // run: the first warm-up batch reads 50 times slower than every later one.
            let per_iteration = if first { 50 } else { 1 };
            first = false;
            let elapsed = Duration::from_micros(per_iteration * iters);
            std::thread::sleep(elapsed);
            TIMINGS.record("timed", iters, elapsed);
            elapsed
        })
    });
    assert!(calls > 10, "criterion ran its warm-up through the routine: {calls} calls");
    assert_eq!(TIMINGS.samples("timed"), 10, "the ten samples criterion measured");
    let median = TIMINGS.median("timed").unwrap();
    assert!((median - 1e-6).abs() < 1e-9, "{median}");
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("fsfilter-bench-timings-{}", std::process::id())),
    );
}

#[test]
fn the_measured_samples_follow_criterions_sampling_modes() {
    use fsfilter_bench::measured;
    let calls = |iters: &[u64]| iters.iter().map(|&n| (n, n as f64)).collect::<Vec<_>>();
    let kept = |iters: &[u64]| measured(&calls(iters)).iter().map(|&(n, _)| n).collect::<Vec<_>>();
    // Warm-up 1, 2, 4, 8, then linear samples of 3, 6, ... 30 iterations.
    let linear: Vec<u64> = (1..=10).map(|i| 3 * i).collect();
    assert_eq!(kept(&[[1, 2, 4, 8].as_slice(), &linear].concat()), linear);
    // Linear samples that go on doubling from the warm-up's last batch: 16 then 32, 48, ...
    let doubling: Vec<u64> = (1..=10).map(|i| 16 * i).collect();
    assert_eq!(kept(&[[1, 2, 4, 8].as_slice(), &doubling].concat()), doubling);
    // Flat samples of 5 iterations.
    assert_eq!(kept(&[1, 2, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]), [5; 10]);
    // A warm-up of one batch, one iteration long, then flat samples of one iteration each.
    assert_eq!(kept(&[1; 11]), [1; 10]);
    // `--quick`: batches doubling until stable; its samples are the last two.
    assert_eq!(kept(&[1, 2, 4, 8, 16]), [8, 16]);
    // `--test`: one call.
    assert_eq!(kept(&[1]), [1]);
    assert_eq!(kept(&[]), Vec::<u64>::new());
}
