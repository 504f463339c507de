//! Sections and FsFilter callbacks through the minifilter backend (`sim/testing/section_sync.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/section_sync.rs"]
mod section_sync;

mod driver {
    fsfilter_minifilter::driver!(super::section_sync::Mapper);
}

#[test]
fn a_section_is_an_acquire_and_a_release_the_filter_may_refuse() {
    section_sync::check(common::install_minifilter, driver::ENTRY);
}
