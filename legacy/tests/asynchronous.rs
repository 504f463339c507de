//! Asynchronous (overlapped) reads through the legacy backend (`sim/testing/asynchronous.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/asynchronous.rs"]
mod asynchronous;

mod driver {
    fsfilter_legacy::driver!(super::asynchronous::Observer);
}

#[test]
fn asynchronous_reads_pend_and_post_at_dispatch_unless_synchronized() {
    asynchronous::check(common::install_legacy, driver::ENTRY);
}
