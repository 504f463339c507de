//! A filter without an instance-setup callback through the legacy backend
//! (`sim/testing/no_setup.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[path = "../../sim/testing/no_setup.rs"]
mod no_setup;

use fsfilter_sim::{Machine, ServiceSpec, StartType};

mod driver {
    fsfilter_legacy::driver!(super::no_setup::Setupless);
}

fn install(m: &mut Machine, mut spec: ServiceSpec) {
    spec.model = "legacy";
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Activity Monitor".into());
    m.install(spec);
}

#[test]
fn without_an_instance_setup_callback_every_operation_gets_the_default_instance_state() {
    no_setup::check(install, driver::ENTRY);
}
