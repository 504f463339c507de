//! The tally sample as a legacy filter end to end (`../testing/tally.rs`): each stream's tally in
//! an `FSRTL_PER_STREAM_CONTEXT` on its FCB header, the same as the minifilter's.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]
#![allow(clippy::expect_used, reason = "tests")]

#[path = "../../testing/tally.rs"]
mod tally_test;

/// The watched tally filter as a legacy driver.
mod observed {
    fsfilter_legacy::driver!(crate::tally_test::Observed);
}

use fsfilter_sim::{Machine, ServiceSpec};

fn install(m: &mut Machine, spec: ServiceSpec) {
    m.install(spec);
}

tally_test::tests!(install, tally_legacy::ENTRY, observed::ENTRY, "legacy");
