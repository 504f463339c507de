//! Operations a filter holds (deferred posts, pended pre callbacks, when-safe second halves)
//! through the minifilter backend (`sim/testing/held.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/held.rs"]
mod held;

use fsfilter_sim::Machine;

mod driver {
    fsfilter_minifilter::driver!(super::held::Deferring);
}

/// The probe under the filter (a lower altitude), pending reads for 5 ms.
fn pender(m: &mut Machine) {
    common::install_pender(m, "pend:5 read");
}

#[test]
fn a_held_operation_goes_on_once_whenever_its_token_releases_it() {
    held::check(common::install_minifilter, driver::ENTRY, pender, true);
}

#[test]
fn a_when_safe_half_never_runs_above_apc_level_even_without_memory() {
    held::check_when_safe_without_memory(common::install_minifilter, driver::ENTRY, false);
}

#[test]
fn a_pend_token_not_answered_with_pending_holds_nothing() {
    held::check_unused_pend_tokens(common::install_minifilter, driver::ENTRY);
}
