//! Asynchronous (overlapped) reads through the minifilter backend (`sim/testing/asynchronous.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/asynchronous.rs"]
mod asynchronous;

mod driver {
    fsfilter_minifilter::driver!(super::asynchronous::Observer);
}

#[test]
fn asynchronous_reads_pend_and_post_at_dispatch_unless_synchronized() {
    asynchronous::check(common::install_minifilter, driver::ENTRY);
}
