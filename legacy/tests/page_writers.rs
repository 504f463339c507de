//! Page writers and FsFilter callbacks through the legacy backend (`sim/testing/page_writers.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/page_writers.rs"]
mod page_writers;

mod driver {
    fsfilter_legacy::driver!(super::page_writers::Writer);
}

#[test]
fn the_page_writers_bracket_their_writes_and_the_filter_may_refuse_an_acquire() {
    page_writers::check(common::install_legacy, driver::ENTRY);
}
