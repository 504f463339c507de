//! Asynchronous (overlapped) reads through the minifilter backend (`sim/testing/overlapped.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/overlapped.rs"]
mod overlapped;

mod driver {
    fsfilter_minifilter::driver!(super::overlapped::Observer);
}

#[test]
fn asynchronous_reads_pend_and_post_at_dispatch_unless_synchronized() {
    overlapped::check(common::install_minifilter, driver::ENTRY);
}
