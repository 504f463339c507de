//! A filter without an instance-setup callback through the minifilter backend
//! (`sim/testing/no_setup.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/no_setup.rs"]
mod no_setup;

use fsfilter_sim::{Machine, ServiceSpec, StartType};

mod driver {
    fsfilter_minifilter::driver!(super::no_setup::Setupless);
}

fn install(m: &mut Machine, spec: ServiceSpec) {
    let mut mini =
        common::minifilter_spec(no_setup::NAME, spec.entry, StartType::Boot, "370000", 0, &[]);
    mini.parameters = spec.parameters;
    let _ = m.install_filter_manager();
    m.install(mini);
}

#[test]
fn without_an_instance_setup_callback_every_operation_gets_the_default_instance_state() {
    no_setup::check(install, driver::ENTRY);
}
