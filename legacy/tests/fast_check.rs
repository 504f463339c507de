//! The file system's fast-I/O check on a locked file through the legacy backend
//! (`sim/testing/fast_check.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/fast_check.rs"]
mod fast_check;

mod driver {
    fsfilter_legacy::driver!(super::fast_check::Checker);
}

#[test]
fn a_fast_io_check_is_an_operation_inside_the_read_the_filter_may_refuse() {
    fast_check::check(common::install_legacy, driver::ENTRY);
}
