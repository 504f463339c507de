//! What both scanner drivers' tests read from a machine (each includes this file with `#[path]`):
//! the pattern parameter, the scanner's notes, its data scans, section conflicts and fast-I/O
//! writes.

#![allow(dead_code, reason = "each test file uses part of it")]

use fsfilter::{DataScanMode, MajorFunction, Status};
use fsfilter_sim::{Callback, EventKind, Machine, RegValue};

/// The pattern the scanner looks for.
pub(crate) const PATTERN: &[u8] = b"X5O!P%@AP";

/// The `Pattern` parameter.
pub(crate) fn pattern() -> (&'static str, RegValue) {
    ("Pattern", RegValue::Sz(String::from_utf8_lossy(PATTERN).into_owned()))
}

/// The scanner's notes, in order.
pub(crate) fn notes(m: &Machine) -> Vec<String> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback { driver, callback: Callback::Note { text }, .. }
                if &*driver == "Scanner" =>
            {
                Some(text)
            }
            _ => None,
        })
        .collect()
}

/// The data scans, in order: each one's mode and status.
pub(crate) fn scans(m: &Machine) -> Vec<(DataScanMode, Status)> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback { callback: Callback::DataScan { mode, status }, .. } => {
                Some((mode, status))
            }
            _ => None,
        })
        .collect()
}

/// How many section-conflict notifications the filter got.
pub(crate) fn conflicts(m: &Machine) -> usize {
    m.events()
        .into_iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EventKind::Callback { callback: Callback::SectionConflict { .. }, .. }
            )
        })
        .count()
}

/// How many writes came as fast I/O.
pub(crate) fn fast_writes(m: &Machine) -> usize {
    m.events()
        .into_iter()
        .filter(|e| {
            matches!(&e.kind, EventKind::IoStart { fast_io: true, major: MajorFunction::Write, .. })
        })
        .count()
}
