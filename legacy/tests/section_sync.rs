//! Sections and FsFilter callbacks through the legacy backend (`sim/testing/section_sync.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/section_sync.rs"]
mod section_sync;

mod driver {
    fsfilter_legacy::driver!(super::section_sync::Mapper);
}

#[test]
fn a_section_is_an_acquire_and_a_release_the_filter_may_refuse() {
    section_sync::check(common::install_legacy, driver::ENTRY);
}

#[test]
fn every_outcome_of_an_acquire_leaves_no_hold_behind_and_the_filter_stops() {
    // Each pre outcome of the acquire and release (with a post, none, synchronize, a success
    // completion, a refusal): every hold the FsFilter routines take for a post is given back,
    // so the stop unloads at once and nothing of the filter is left.
    use fsfilter_sim::nt::access;
    use fsfilter_sim::{CreateOptions, FsKind, StartType, StopResult, VolumeSpec};
    let mut m = common::machine();
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("a.dll", b"MZ")
            .file("b.sys", b"MZ")
            .file("c.bin", b"data")
            .file("d.exe", b"MZ")
            .file("e.txt", b"text"),
    );
    let ops = "acquire_for_section_synchronization,release_for_section_synchronization";
    let rules = "synchronize * *.dll;nopost * *.sys;complete:STATUS_SUCCESS * *.bin;\
                 deny acquire_for_section_synchronization *.exe";
    common::install_probe(
        &mut m,
        "ProbeA",
        StartType::Boot,
        &[("Operations", common::sz(ops)), ("Rules", common::sz(rules))],
    );
    m.boot();
    let rx = CreateOptions::open().access(access::GENERIC_READ | access::GENERIC_EXECUTE);
    for (name, status) in [
        ("a.dll", fsfilter::Status::SUCCESS),
        ("b.sys", fsfilter::Status::SUCCESS),
        ("c.bin", fsfilter::Status::SUCCESS),
        ("d.exe", fsfilter::Status::ACCESS_DENIED),
        ("e.txt", fsfilter::Status::SUCCESS),
    ] {
        let h = m.open(c, name, rx).expect("open");
        let r = m.create_section(h, fsfilter::section_sync::PAGE_EXECUTE_READ);
        assert_eq!(r.status, status, "{name}");
        m.close_handle(h);
    }
    m.settle();
    assert_eq!(m.stop("ProbeA"), StopResult::Unloaded);
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    assert!(common::findings(&m).is_empty(), "{:?}", common::findings(&m));
}
