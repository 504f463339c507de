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
    use fsfilter_sim::{CreateOptions, FaultKind, FsKind, PageWriter, StartType, StopResult};
    let ops = "write,acquire_for_mod_write,release_for_mod_write,acquire_for_cc_flush,\
               release_for_cc_flush";
    let run = |fault: Option<u64>| {
        let mut m = common::machine();
        let c = m.add_volume(fsfilter_sim::VolumeSpec::new("C:", FsKind::Ntfs).file("a.db", b"0"));
        common::install_probe(
            &mut m,
            "ProbeA",
            StartType::Demand,
            &[("Operations", common::sz(ops)), ("Rules", common::sz("synchronize * *"))],
        );
        m.boot();
        if let Some(nth) = fault {
            m.kernel(|k| k.faults.plan_for_service("ProbeA", FaultKind::Pool, nth));
        }
        let load = m.start("ProbeA");
        let h = m.open(c, "a.db", CreateOptions::open()).expect("open");
        for writer in [PageWriter::ModifiedPageWriter, PageWriter::Flush] {
            let r = m.page_write(h, 0, b"page", writer);
            assert!(
                r.status.is_success() || r.status == fsfilter::Status::INSUFFICIENT_RESOURCES,
                "{fault:?} {writer:?}: {:?}",
                r.status
            );
        }
        m.close_handle(h);
        if load.is_success() {
            assert_eq!(m.stop("ProbeA"), StopResult::Unloaded, "{fault:?}");
        }
        m.settle();
        assert_eq!(m.crashed(), None, "{fault:?}");
        assert!(common::findings(&m).is_empty(), "{fault:?}: {:?}", common::findings(&m));
        m.kernel(|k| k.faults.service_count("ProbeA", FaultKind::Pool))
    };
    let n = run(None);
    assert!(n > 0);
    for nth in 1..=n {
        run(Some(nth));
    }
}
