//! A filter without an instance-setup callback through the legacy backend
//! (`sim/testing/no_setup.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/no_setup.rs"]
mod no_setup;

mod driver {
    fsfilter_legacy::driver!(super::no_setup::Setupless);
}

#[test]
fn without_an_instance_setup_callback_every_operation_gets_the_default_instance_state() {
    no_setup::check(common::install_legacy, driver::ENTRY);
}
