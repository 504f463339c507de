//! Operation buffers through the legacy backend: mapped only when the filter asks
//! (`sim/testing/buffers.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[path = "../../sim/testing/buffers.rs"]
mod buffers;

use fsfilter_sim::{Machine, ServiceSpec, StartType};

mod driver {
    fsfilter_legacy::driver!(super::buffers::Inverter);
}

fn install(m: &mut Machine, mut spec: ServiceSpec) {
    spec.model = "legacy";
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Activity Monitor".into());
    m.install(spec);
}

#[test]
fn buffers_are_mapped_only_when_the_filter_asks() {
    buffers::check(install, driver::ENTRY);
}
