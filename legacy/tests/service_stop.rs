//! A filter that does not support service stop through the legacy backend
//! (`sim/testing/service_stop.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/service_stop.rs"]
mod service_stop;

mod driver {
    fsfilter_legacy::driver!(super::service_stop::Unstoppable);
}

#[test]
fn a_filter_that_does_not_support_service_stop_cannot_be_stopped() {
    service_stop::check(common::install_legacy, driver::ENTRY);
}
