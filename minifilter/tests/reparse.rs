//! Reparse through the minifilter backend (`sim/testing/reparse.rs`, rule 27).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/reparse.rs"]
mod reparse;

use fsfilter_sim::{Machine, ServiceSpec, StartType};
use reparse::Layer;

mod redirector {
    fsfilter_minifilter::driver!(super::reparse::Redirector);
}

mod undeclared {
    fsfilter_minifilter::driver!(super::reparse::Undeclared);
}

mod watcher {
    fsfilter_minifilter::driver!(super::reparse::Watcher);
}

/// Minifilters stack by altitude: the lower layer at 365000, the upper at 385000.
fn install(m: &mut Machine, spec: ServiceSpec, layer: Layer) {
    let altitude = match layer {
        Layer::Lower => "365000",
        Layer::Upper => "385000",
    };
    let _ = m.install_filter_manager();
    m.install(common::minifilter_spec(&spec.name, spec.entry, StartType::Boot, altitude, 0, &[]));
}

#[test]
fn a_declared_filter_redirects_a_prefix_to_another_volume_in_both_models() {
    reparse::check_redirect(install, redirector::ENTRY);
}

#[test]
fn replace_file_name_is_refused_where_rule_27_says_in_both_models() {
    reparse::check_refusals(install, redirector::ENTRY, undeclared::ENTRY);
}

#[test]
fn a_post_create_above_a_redirect_sees_status_reparse_and_nothing_open_in_both_models() {
    reparse::check_post_above(install, redirector::ENTRY, watcher::ENTRY);
}
