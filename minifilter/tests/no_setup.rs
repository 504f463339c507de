//! A filter without an instance-setup callback through the minifilter backend
//! (`sim/testing/no_setup.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/no_setup.rs"]
mod no_setup;

mod driver {
    fsfilter_minifilter::driver!(super::no_setup::Setupless);
}

mod post_only {
    fsfilter_minifilter::driver!(super::no_setup::PostOnly);
}

#[test]
fn without_an_instance_setup_callback_every_operation_gets_the_default_instance_state() {
    no_setup::check(common::install_minifilter, driver::ENTRY);
}

#[test]
fn without_an_instance_setup_callback_a_first_post_callback_at_dispatch_level_has_its_state() {
    no_setup::check_post_only(
        common::install_minifilter,
        post_only::ENTRY,
        fsfilter::DataScanMode::FilterManager,
        1,
    );
}

#[test]
fn a_post_callback_at_dispatch_level_has_its_state_on_the_seventieth_volume() {
    no_setup::check_post_only(
        common::install_minifilter,
        post_only::ENTRY,
        fsfilter::DataScanMode::FilterManager,
        70,
    );
}

#[test]
fn whatever_pool_allocation_fails_at_boot_every_attached_volume_gets_its_post_callbacks() {
    let refused = no_setup::check_post_only_under_pool_failures(
        common::install_minifilter,
        post_only::ENTRY,
        fsfilter::DataScanMode::FilterManager,
        70,
    );
    assert!(refused >= 1, "the seventy volumes' instance table needed a second block");
}
