//! Operation buffers through the minifilter backend: mapped only when the filter asks
//! (`sim/testing/buffers.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/buffers.rs"]
mod buffers;

mod driver {
    fsfilter_minifilter::driver!(super::buffers::Inverter);
}

#[test]
fn buffers_are_mapped_only_when_the_filter_asks() {
    buffers::check(common::install_minifilter, driver::ENTRY);
}
