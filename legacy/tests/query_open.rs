//! Attribute queries by name through the legacy backend (`sim/testing/query_open.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/query_open.rs"]
mod query_open;

mod driver {
    fsfilter_legacy::driver!(super::query_open::Opener);
}

#[test]
fn a_query_open_is_a_fast_io_network_query_open_the_filter_may_refuse() {
    query_open::check(common::install_legacy, driver::ENTRY, fsfilter::OperationKind::Irp);
}
