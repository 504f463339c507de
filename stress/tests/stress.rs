//! Issue 10, randomized stress: random machines and timelines, every invariant after every step.
//!
//! `FSFILTER_STRESS_CASES` sets the number of cases (default 256), `FSFILTER_STRESS_SEED` the
//! RNG seed (a number; default: a fixed one, so that every run of the suite is the same). A
//! failing case is shrunk, then its scenario is written to
//! `target/stress-failures/<seed>.toml` and printed, so that `cargo run -- run FILE` replays it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_stress::plan::plan;
use fsfilter_stress::{Outcome, Stats, run_plan};
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};

const DEFAULT_CASES: u32 = 256;
const DEFAULT_SEED: u64 = 0x0f5f_1173_0010_0002;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let word =
            seed.rotate_left(i as u32 * 16) ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1));
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

fn failure_dir() -> std::path::PathBuf {
    // CARGO_TARGET_DIR when set, else the workspace's target/.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("stress-failures")
}

#[test]
fn random_machines_and_timelines_keep_every_invariant() {
    let cases = env_u64("FSFILTER_STRESS_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    let seed = env_u64("FSFILTER_STRESS_SEED").unwrap_or(DEFAULT_SEED);
    println!("stress: {cases} cases, FSFILTER_STRESS_SEED={seed:#x}");
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed)),
    );
    let refused = std::cell::Cell::new(0u32);
    let totals = std::cell::Cell::new(Stats::default());
    let result = runner.run(&plan(60), |p| match run_plan(&p) {
        Outcome::Clean(stats) => {
            let mut t = totals.get();
            t.add(stats);
            totals.set(t);
            Ok(())
        }
        Outcome::Refused => {
            refused.set(refused.get() + 1);
            Ok(())
        }
        Outcome::Failed(why) => Err(TestCaseError::fail(why)),
    });
    if let Err(e) = result {
        let detail = match &e {
            proptest::test_runner::TestError::Fail(why, p) => {
                let text = p.to_toml();
                let dir = failure_dir();
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("{seed:#x}.toml"));
                let _ = std::fs::write(&file, &text);
                format!(
                    "{why}\n\nminimal failing scenario (FSFILTER_STRESS_SEED={seed:#x}), written to {}; replay with `cargo run -- run {}`:\n\n{text}",
                    file.display(),
                    file.display()
                )
            }
            other => format!("{other}"),
        };
        panic!("stress failed: {detail}");
    }
    let t = totals.get();
    println!(
        "stress: {cases} cases clean ({} refused colliding altitudes as documented): {} steps \
         ({} failed as the scenario asked), {} requests, {} pre/post callbacks, {} events",
        refused.get(),
        t.steps,
        t.failed_steps,
        t.requests,
        t.callbacks,
        t.events
    );
    assert!(cases < 16 || t.callbacks > u64::from(cases), "the cases exercise the filters: {t:?}");
}
