//! The parameters view of every kind of request through the legacy backend
//! (`sim/testing/params.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/params.rs"]
mod params;

mod driver {
    fsfilter_legacy::driver!(super::params::Recorder);
}

#[test]
fn every_request_shows_its_own_parameters() {
    params::check(common::install_legacy, driver::ENTRY, fsfilter::OperationKind::Irp);
}
