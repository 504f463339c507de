//! Query opens and the fast-I/O check of a locked file through the minifilter backend
//! (`sim/testing/fast_io.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/fast_io.rs"]
mod fast_io;

mod driver {
    fsfilter_minifilter::driver!(super::fast_io::Recorder);
}

#[test]
fn a_query_open_is_a_fast_io_network_query_open_the_filter_may_refuse() {
    fast_io::query_open(common::install_minifilter, driver::ENTRY, fsfilter::OperationKind::FastIo);
}

#[test]
fn a_fast_io_check_is_an_operation_inside_the_read_the_filter_may_refuse() {
    fast_io::fast_check(common::install_minifilter, driver::ENTRY);
}
