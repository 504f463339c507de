//! The tally minifilter end to end on the simulated Filter Manager (`../testing/tally.rs`): each
//! stream's tally in a Filter Manager stream context, the same as the legacy filter's.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]
#![allow(clippy::expect_used, reason = "tests")]

#[path = "../../testing/tally.rs"]
mod tally_test;

/// The watched tally filter as a minifilter driver.
mod observed {
    fsfilter_minifilter::driver!(crate::tally_test::Observed);
}

use fsfilter_sim::{InstanceLayout, InstanceSpec, InstancesSpec, Machine, ServiceSpec};

fn install(m: &mut Machine, mut spec: ServiceSpec) {
    spec.depends_on = vec!["FltMgr".into()];
    spec.instances = Some(InstancesSpec {
        default_instance: "Tally Instance".into(),
        instances: vec![InstanceSpec {
            name: "Tally Instance".into(),
            altitude: "370530".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    });
    m.install(spec);
}

#[test]
fn the_workload_is_tallied_per_stream() {
    let m = tally_test::machine(install, tally_minifilter::ENTRY, "minifilter", true);
    tally_test::check_the_workload_is_tallied_per_stream(m);
}

#[test]
fn contexts_freed_at_teardown_and_at_unload_are_counted_once() {
    tally_test::check_contexts_freed_at_teardown_and_at_unload_are_counted_once(
        install,
        observed::ENTRY,
        "minifilter",
    );
}

#[test]
fn an_overwrite_restarts_the_tally() {
    tally_test::check_an_overwrite_restarts_the_tally(install, observed::ENTRY, "minifilter");
}

#[test]
fn a_stream_opened_before_the_filter_is_untracked() {
    tally_test::check_a_stream_opened_before_the_filter_is_untracked(
        install,
        observed::ENTRY,
        "minifilter",
    );
}
