//! `Synchronize` where facts.md §4 forbids it, through the legacy backend
//! (`sim/testing/synchronize.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/synchronize.rs"]
mod synchronize;

mod driver {
    fsfilter_legacy::driver!(super::synchronize::Synchronizer);
}

#[test]
fn lock_requests_and_oplock_fsctls_are_never_synchronized() {
    synchronize::check(common::install_legacy, driver::ENTRY);
}
