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

tally_test::tests!(install, tally_minifilter::ENTRY, observed::ENTRY, "minifilter");
