//! The fuzz corpora on stable (issue 10): the checks of the `scenario` and `altitude` fuzz
//! targets (`fsfilter_lab::fuzzing`) on every seed in fuzz/corpus/<target>/ and every crash input
//! kept in fuzz/artifacts-regressions/<target>/, so `cargo test` replays them without nightly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in [root.join("corpus").join(target), root.join("artifacts-regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(target);
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let name = f.display().to_string();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("fuzz input {name} fails the `{target}` target's checks");
        }
    }
    files.len()
}

#[test]
fn scenario_corpus() {
    let n = replay("scenario", fsfilter_lab::fuzzing::scenario);
    assert!(n >= 30, "the seeds (lab/scenarios and the bad scenarios of errors.rs) are there: {n}");
}

#[test]
fn altitude_corpus() {
    let n = replay("altitude", fsfilter_lab::fuzzing::altitude);
    assert!(n >= 5, "{n} altitude seeds");
}

#[test]
fn the_checks_catch_what_they_claim() {
    // The reference order agrees on the documented examples (facts.md §2.3).
    fsfilter_lab::fuzzing::altitude(b"03333\n100.123456\n370000.0");
    // Errors name the file; an invalid byte is read lossily.
    fsfilter_lab::fuzzing::scenario(b"[[volume]]\nname = \"C:\xff\"\nfilesystem = \"hpfs\"\n");
    let e = fsfilter_lab::scenario::parse(fsfilter_lab::fuzzing::SCENARIO_FILE, "[[").unwrap_err();
    assert!(e.to_string().starts_with("fuzz/input.toml:1:"), "{e}");
}
