//! The logic of the fuzz targets (fuzz/, cargo-fuzz on nightly) that take plain bytes, here so
//! that the stable replay of their corpora (lab/tests/fuzz_corpus.rs) runs the same checks.
//!
//! Each function panics when a property fails: that is how a fuzz target reports a finding.

use std::cmp::Ordering;
use std::hash::BuildHasher;

use fsfilter::{Altitude, AltitudeError, LoadOrderGroup};

use crate::scenario::{Action, Scenario};

/// The file name the `scenario` target parses under; every error must name it.
pub const SCENARIO_FILE: &str = "fuzz/input.toml";

/// A parsed scenario is run when it is at most this many steps...
pub const MAX_RUN_STEPS: usize = 32;
/// ...this many volumes and drivers...
pub const MAX_RUN_OBJECTS: usize = 8;
/// ...and no I/O step moves more than this many bytes (buffers, new sizes), and no file is larger.
pub const MAX_RUN_BYTES: u64 = 1 << 16;

/// The `scenario` target: parses `data` (invalid UTF-8 is read lossily, as a reader that
/// replaces bad bytes would) with [`crate::scenario::parse`]. An error must name the file and a
/// line of it; a small scenario that parses is run in the simulator and reported (text, JSON,
/// HTML, and `compare` of its first driver).
pub fn scenario(data: &[u8]) {
    // The file as the CLI reads it: bytes that are not UTF-8 are an error at their line.
    if let Err(e) = crate::scenario::parse_bytes(SCENARIO_FILE, data) {
        let lines = data.split(|b| *b == b'\n').count();
        assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}: {e}", e.line);
    }
    let text = String::from_utf8_lossy(data);
    match crate::scenario::parse(SCENARIO_FILE, &text) {
        Err(e) => {
            assert_eq!(e.file, SCENARIO_FILE, "the error names another file: {e}");
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{SCENARIO_FILE}:")),
                "the message must name the file: {shown}"
            );
            let lines = text.split('\n').count();
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}: {shown}", e.line);
        }
        Ok(s) => {
            if small(&s) {
                let run = crate::run::run(&s);
                assert!(
                    run.snapshots.last().is_some_and(|l| l.label == "end"),
                    "a run ends with the `end` snapshot"
                );
                assert_eq!(run.steps.len(), s.steps.len(), "every step has an outcome");
                let _ = crate::text::report(&s, &run);
                let _ = crate::json::document(&run);
                let _ = crate::html::report(&s, &run);
                // `compare` pairs the two models' requests step by step, whatever each issued.
                if let Some(d) = s.drivers.first() {
                    assert!(crate::compare::compare(&s, &d.name).is_ok(), "{} compares", d.name);
                }
            }
        }
    }
}

/// True when a scenario is small enough to run on every fuzz input.
pub fn small(s: &Scenario) -> bool {
    let bytes_ok = |n: Option<u64>| n.is_none_or(|n| n <= MAX_RUN_BYTES);
    s.steps.len() <= MAX_RUN_STEPS
        && s.volumes.len() <= MAX_RUN_OBJECTS
        && s.drivers.len() <= MAX_RUN_OBJECTS
        && s.volumes.iter().all(|v| v.files.iter().all(|(_, d)| d.len() as u64 <= MAX_RUN_BYTES))
        && s.steps.iter().all(|st| match &st.action {
            Action::Io { length, offset, data, .. } => {
                bytes_ok(length.map(u64::from))
                    && bytes_ok(data.as_ref().map(|d| d.len() as u64))
                    // A write far past the end would grow an in-memory file.
                    && bytes_ok(*offset)
            }
            _ => true,
        })
}

/// The `altitude` target: `data` is up to three candidate strings separated by `\n` (invalid
/// UTF-8 read lossily). Parsing never panics and accepts exactly the documented language; the
/// ordering is a total order equal to an independent reference on the decimal values, with
/// equality, hashing, the integer part and the group lookup consistent with it.
pub fn altitude(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parts: Vec<&str> = text.splitn(3, '\n').collect();
    let mut parsed = Vec::new();
    for s in &parts {
        let r = Altitude::parse(s);
        assert_eq!(r.err(), reference_error(s), "parse({s:?})");
        if let Ok(a) = r {
            assert_eq!(a.as_str(), *s, "the string is kept as given");
            assert_eq!(a.to_string(), *s);
            check_one(&a, s);
            parsed.push((a, *s));
        }
    }
    for (a, sa) in &parsed {
        for (b, sb) in &parsed {
            let ord = a.cmp(b);
            assert_eq!(ord, reference_cmp(sa, sb), "cmp({sa:?}, {sb:?})");
            assert_eq!(ord.reverse(), b.cmp(a), "antisymmetry of {sa:?}, {sb:?}");
            assert_eq!(a == b, ord == Ordering::Equal);
            assert_eq!(a.partial_cmp(b), Some(ord));
            if a == b {
                assert_eq!(hash(a), hash(b), "equal altitudes {sa:?}, {sb:?} hash alike");
            }
        }
    }
    for (a, _) in &parsed {
        for (b, _) in &parsed {
            for (c, _) in &parsed {
                if a <= b && b <= c {
                    assert!(a <= c, "transitivity: {a:?} <= {b:?} <= {c:?}");
                }
            }
        }
    }
}

/// The parse error the documented language gives (shared/core/src/altitude.rs): ASCII digits
/// with at most one `.`, at least one digit, at most [`fsfilter::ALTITUDE_CAPACITY`] bytes.
fn reference_error(s: &str) -> Option<AltitudeError> {
    if s.len() > fsfilter::ALTITUDE_CAPACITY {
        return Some(AltitudeError::TooLong);
    }
    let mut point = false;
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'.' if point => return Some(AltitudeError::SecondDecimalPoint(i)),
            b'.' => point = true,
            b'0'..=b'9' => {}
            _ => return Some(AltitudeError::InvalidCharacter(i)),
        }
    }
    if !s.bytes().any(|c| c.is_ascii_digit()) {
        return Some(AltitudeError::Empty);
    }
    None
}

/// Windows compares altitudes as decimal numbers of unbounded precision (facts.md §2.3):
/// padding both to the same number of integer digits (zeros on the left) and fraction digits
/// (zeros on the right) makes the byte-wise comparison the numeric one.
fn reference_cmp(a: &str, b: &str) -> Ordering {
    let (ai, af) = a.split_once('.').unwrap_or((a, ""));
    let (bi, bf) = b.split_once('.').unwrap_or((b, ""));
    let wi = ai.len().max(bi.len());
    let wf = af.len().max(bf.len());
    let pad = |i: &str, f: &str| format!("{i:0>wi$}{f:0<wf$}");
    pad(ai, af).cmp(&pad(bi, bf))
}

fn check_one(a: &Altitude, s: &str) {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    // The integer part's value when it fits a u64 (all zeros, or none, is 0).
    let digits = int.trim_start_matches('0');
    let int_value: Option<u64> = if digits.is_empty() { Some(0) } else { digits.parse().ok() };
    assert_eq!(a.integer_part(), int_value, "integer_part of {s:?}");
    assert_eq!(a.is_fractional(), frac.bytes().any(|c| c != b'0'), "is_fractional of {s:?}");
    if let (Some(v), false) = (int_value, a.is_fractional()) {
        if let Ok(v) = u32::try_from(v) {
            assert_eq!(*a, Altitude::from_integer(v), "{s:?} is the integer {v}");
        }
    }
    // A group's range is [low, high + 1) on the decimal value.
    for g in LoadOrderGroup::ALL {
        let inside = int_value.is_some_and(|v| v >= u64::from(g.low) && v <= u64::from(g.high));
        assert_eq!(g.contains(a), inside, "{s:?} in {}", g.name);
    }
}

fn hash(a: &Altitude) -> u64 {
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(a)
}
