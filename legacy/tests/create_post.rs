//! Where a post-create callback runs, through the legacy backend (`sim/testing/create_post.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/create_post.rs"]
mod create_post;

use fsfilter_sim::Machine;

mod driver {
    fsfilter_legacy::driver!(super::create_post::CreateWatcher);
}

/// The probe under the filter (loaded first, so attached first), pending creates for 5 ms.
fn pender(m: &mut Machine) {
    common::install_pender(m, "pend:5 create");
}

#[test]
fn a_post_create_callback_runs_in_the_openers_thread_even_when_pended_below() {
    create_post::check(common::install_legacy, driver::ENTRY, pender, false);
}

#[test]
fn a_post_create_callback_of_a_create_pended_by_the_filter_and_below_runs_at_passive_level() {
    create_post::check_own_pend_over_a_pend_below(
        common::install_legacy,
        driver::ENTRY,
        pender,
        false,
    );
}
