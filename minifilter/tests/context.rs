//! A completion context that is not zero-sized, through the minifilter backend
//! (`sim/testing/context.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/context.rs"]
mod context;

use fsfilter_sim::Machine;

mod driver {
    fsfilter_minifilter::driver!(super::context::Carrier);
}

mod post_only {
    fsfilter_minifilter::driver!(super::context::PostOnly);
}

/// The probe under the filter (a lower altitude), pending reads for 5 ms.
fn pender(m: &mut Machine) {
    common::install_pender(m, "pend:5 read");
}

#[test]
fn every_completion_context_reaches_its_post_callback_or_is_dropped_once() {
    context::check(common::install_minifilter, driver::ENTRY, pender, true);
}

#[test]
fn a_post_only_registration_with_a_context_that_is_not_zero_sized_fails_to_load() {
    context::check_post_only(common::install_minifilter, post_only::ENTRY);
}
