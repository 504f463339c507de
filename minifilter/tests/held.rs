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
    held::check(common::install_minifilter, driver::ENTRY, pender, false);
}
