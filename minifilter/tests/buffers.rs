//! Operation buffers through the minifilter backend: mapped only when the filter asks
//! (`sim/testing/buffers.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/buffers.rs"]
mod buffers;

use fsfilter_sim::{Machine, ServiceSpec, StartType};

mod driver {
    fsfilter_minifilter::driver!(super::buffers::Inverter);
}

fn install(m: &mut Machine, spec: ServiceSpec) {
    let mut mini =
        common::minifilter_spec(buffers::NAME, spec.entry, StartType::Boot, "370000", 0, &[]);
    mini.parameters = spec.parameters;
    let _ = m.install_filter_manager();
    m.install(mini);
}

#[test]
fn buffers_are_mapped_only_when_the_filter_asks() {
    buffers::check(install, driver::ENTRY);
}
