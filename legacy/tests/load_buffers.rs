//! Load buffers through the legacy backend (`sim/testing/load_buffers.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

#[path = "../../sim/testing/load_buffers.rs"]
mod load_buffers;

mod buffered {
    fsfilter_legacy::driver!(super::load_buffers::Buffered);
}

mod bounds {
    fsfilter_legacy::driver!(super::load_buffers::Bounds);
}

mod unbuffered {
    fsfilter_legacy::driver!(super::load_buffers::Unbuffered);
}

#[test]
fn load_buffers_are_allocated_at_load_and_freed_at_unload() {
    load_buffers::check_allocated_at_load_and_freed_at_unload(
        common::install_legacy,
        buffered::ENTRY,
        "FsfL",
    );
}

#[test]
fn load_buffers_are_freed_when_load_fails() {
    load_buffers::check_freed_when_load_fails(common::install_legacy, buffered::ENTRY);
}

#[test]
fn a_fifth_load_buffer_is_refused() {
    load_buffers::check_a_fifth_buffer_is_refused(common::install_legacy, buffered::ENTRY);
}

#[test]
fn whatever_pool_allocation_fails_at_load_no_load_buffer_leaks() {
    let failed =
        load_buffers::check_every_pool_failure_at_load(common::install_legacy, buffered::ENTRY);
    assert!(failed >= 3, "the two buffers and the driver state: {failed}");
}

#[test]
fn empty_oversized_and_undeclared_load_buffers_are_refused() {
    load_buffers::check_refusals(common::install_legacy, bounds::ENTRY, unbuffered::ENTRY);
}
