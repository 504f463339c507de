//! Oplock FSCTLs through the minifilter backend (`sim/testing/oplocks.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/oplocks.rs"]
mod oplocks;

mod driver {
    fsfilter_minifilter::driver!(super::oplocks::OplockObserver);
}

#[test]
fn an_oplock_request_posts_at_its_break_and_the_acknowledgement_at_once() {
    oplocks::check(common::install_minifilter, driver::ENTRY);
}
