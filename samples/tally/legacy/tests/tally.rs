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

#[test]
fn the_workload_is_tallied_per_stream() {
    let m = tally_test::machine(install, tally_legacy::ENTRY, "legacy", true);
    tally_test::check_the_workload_is_tallied_per_stream(m);
}

#[test]
fn contexts_freed_at_teardown_and_at_unload_are_counted_once() {
    tally_test::check_contexts_freed_at_teardown_and_at_unload_are_counted_once(
        install,
        observed::ENTRY,
        "legacy",
    );
}

#[test]
fn an_overwrite_restarts_the_tally() {
    tally_test::check_an_overwrite_restarts_the_tally(install, observed::ENTRY, "legacy");
}

#[test]
fn a_stream_opened_before_the_filter_is_untracked() {
    tally_test::check_a_stream_opened_before_the_filter_is_untracked(
        install,
        observed::ENTRY,
        "legacy",
    );
}
