//! Handle contexts through the legacy backend (`sim/testing/handle_contexts.rs`, rule 29).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/handle_contexts.rs"]
mod handle_contexts;

use fsfilter_sim::{Machine, ServiceSpec};

mod handler {
    fsfilter_legacy::driver!(super::handle_contexts::Handler);
}

mod undeclared {
    fsfilter_legacy::driver!(super::handle_contexts::HandleUndeclared);
}

fn install(m: &mut Machine, spec: ServiceSpec) {
    common::install_legacy(m, spec);
}

handle_contexts::shared_handle_tests!(install, handler::ENTRY, undeclared::ENTRY);
