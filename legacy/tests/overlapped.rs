//! Asynchronous (overlapped) reads through the legacy backend (`sim/testing/overlapped.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/overlapped.rs"]
mod overlapped;

mod driver {
    fsfilter_legacy::driver!(super::overlapped::Observer);
}

#[test]
fn asynchronous_reads_pend_and_post_at_dispatch_unless_synchronized() {
    overlapped::check(common::install_legacy, driver::ENTRY);
}
