//! A filter without an instance-setup callback through the legacy backend
//! (`sim/testing/no_setup.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/no_setup.rs"]
mod no_setup;

mod driver {
    fsfilter_legacy::driver!(super::no_setup::Setupless);
}

mod post_only {
    fsfilter_legacy::driver!(super::no_setup::PostOnly);
}

#[test]
fn without_an_instance_setup_callback_every_operation_gets_the_default_instance_state() {
    no_setup::check(common::install_legacy, driver::ENTRY);
}

#[test]
fn without_an_instance_setup_callback_a_first_post_callback_at_dispatch_level_has_its_state() {
    no_setup::check_post_only(
        common::install_legacy,
        post_only::ENTRY,
        fsfilter::DataScanMode::FsRtlFallback,
        1,
    );
}

#[test]
fn a_post_callback_at_dispatch_level_has_its_state_on_the_seventieth_volume() {
    no_setup::check_post_only(
        common::install_legacy,
        post_only::ENTRY,
        fsfilter::DataScanMode::FsRtlFallback,
        70,
    );
}

#[test]
fn whatever_pool_allocation_fails_at_boot_every_attached_volume_gets_its_post_callbacks() {
    // The invariant is asserted run by run; a failed allocation of the driver's state fails the
    // load, and every volume is refused then.
    no_setup::check_post_only_under_pool_failures(
        common::install_legacy,
        post_only::ENTRY,
        fsfilter::DataScanMode::FsRtlFallback,
        70,
    );
}
