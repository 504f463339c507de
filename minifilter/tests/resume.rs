//! A pended cleanup resumed with a post callback and no room for its context, through the
//! minifilter backend (`sim/testing/resume.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/resume.rs"]
mod resume;

mod driver {
    fsfilter_minifilter::driver!(super::resume::Resumer);
}

#[test]
fn a_cleanup_resumed_without_room_for_its_context_still_reaches_the_file_system() {
    resume::check(common::install_minifilter, driver::ENTRY);
}
