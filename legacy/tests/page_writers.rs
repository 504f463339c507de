//! Page writers and FsFilter callbacks through the legacy backend (`sim/testing/page_writers.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/page_writers.rs"]
mod page_writers;

mod driver {
    fsfilter_legacy::driver!(super::page_writers::Writer);
}

#[test]
fn the_page_writers_bracket_their_writes_and_the_filter_may_refuse_an_acquire() {
    page_writers::check(common::install_legacy, driver::ENTRY);
}

#[test]
fn every_failed_allocation_of_a_probe_around_the_page_writers_is_survived() {
    // The FsFilter routines of the page writers with a completion context (the probe's rule
    // synchronizes everything): each pool allocation failing in turn, the probe loads or fails
    // cleanly, the page writes succeed or fail their acquire with STATUS_INSUFFICIENT_RESOURCES
    // (never a release), and nothing is reported.
    use fsfilter_sim::{CreateOptions, PageWriter};
    let ops = "write,acquire_for_mod_write,release_for_mod_write,acquire_for_cc_flush,\
               release_for_cc_flush";
    common::every_pool_failure_of_a_probe_is_survived(
        ops,
        ("a.db", b"0"),
        CreateOptions::open(),
        |m, h| {
            [PageWriter::ModifiedPageWriter, PageWriter::Flush]
                .map(|writer| m.page_write(h, 0, b"page", writer).status)
                .to_vec()
        },
    );
}
