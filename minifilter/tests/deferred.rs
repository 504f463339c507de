//! Deferred post callbacks through the minifilter backend (`sim/testing/deferred.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/deferred.rs"]
mod deferred;

use fsfilter_sim::{Machine, ServiceSpec, StartType};

mod driver {
    fsfilter_minifilter::driver!(super::deferred::Deferring);
}

fn install(m: &mut Machine, spec: ServiceSpec) {
    let mini =
        common::minifilter_spec(deferred::NAME, spec.entry, StartType::Boot, "370000", 0, &[]);
    let _ = m.install_filter_manager();
    m.install(mini);
}

/// The probe under the filter (a lower altitude), pending reads for 5 ms.
fn pender(m: &mut Machine) {
    let _ = m.install_filter_manager();
    common::install_probe(
        m,
        "Pender",
        StartType::Boot,
        "360000",
        &[("Rules", common::sz("pend:5 read"))],
    );
}

#[test]
fn a_deferred_post_completes_the_operation_once_whenever_its_token_completes() {
    deferred::check(install, driver::ENTRY, pender);
}
