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

/// A filter that registers the cache-flush and modified-page-writer FsFilter operations.
struct Flusher;

impl fsfilter::Filter for Flusher {
    const REGISTRATION: fsfilter::Registration = fsfilter::Registration::new()
        .operation(
            fsfilter::Operation::new(fsfilter::MajorFunction::AcquireForCcFlush).pre().post(),
        )
        .operation(fsfilter::Operation::new(fsfilter::MajorFunction::AcquireForModWrite).pre())
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn fsfilter::ServiceParameters) -> fsfilter::Result<Self> {
        Ok(Flusher)
    }

    fn instance_setup(&self, _: &fsfilter::InstanceSetup<'_>) -> fsfilter::Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &fsfilter::Instance<'_, ()>,
        _: &mut fsfilter::PreOperation<'_, ()>,
    ) -> fsfilter::PreOutcome<()> {
        fsfilter::PreOutcome::WithPost(())
    }
}

mod flusher {
    fsfilter_legacy::driver!(super::Flusher);
}

#[test]
fn the_cache_flush_and_mod_write_operations_are_registered_with_fsrtl() {
    // docs/architecture.md and semantics.md (operations-delivered): the legacy backend registers
    // FsFilter callbacks when the filter registers one of the six FsFilter operations, "the
    // section-synchronization, modified-page-writer and cache-flush acquires and releases". A
    // filter that registers only IRP_MJ_ACQUIRE_FOR_CC_FLUSH and IRP_MJ_ACQUIRE_FOR_MOD_WRITE
    // needs their FsRtl routines in its table (a flush and the modified-page writer raise them,
    // `legacy/tests/page_writers.rs`). Until December 6 only the
    // section-synchronization routines were registered (audit-fsfilter report).
    let mut m = common::machine();
    m.add_volume(fsfilter_sim::VolumeSpec::new("C:", fsfilter_sim::FsKind::Ntfs));
    let spec = fsfilter_sim::ServiceSpec::new("Flusher", flusher::ENTRY, "legacy");
    common::install_legacy(&mut m, spec);
    m.boot();
    let table = m.kernel(|k| {
        k.objects.drivers.iter().find(|d| d.service == "Flusher").and_then(|d| d.fs_filter)
    });
    let table = table.expect("FsRtlRegisterFileSystemFilterCallbacks was called");
    assert!(table.PreAcquireForCcFlush.is_some() && table.PostAcquireForCcFlush.is_some());
    assert!(table.PreAcquireForModifiedPageWriter.is_some());
}

#[test]
fn every_failed_allocation_of_a_probe_with_fs_filter_callbacks_is_survived() {
    // The FsFilter registration in DriverEntry (the pool copy of its table among them) and the
    // mappings: each pool allocation failing in turn, the probe loads or fails cleanly, maps,
    // stops, and leaves no finding.
    use fsfilter_sim::CreateOptions;
    use fsfilter_sim::nt::access;
    let ops = "acquire_for_section_synchronization,release_for_section_synchronization";
    let rx = CreateOptions::open().access(access::GENERIC_READ | access::GENERIC_EXECUTE);
    common::every_pool_failure_of_a_probe_is_survived(ops, ("a.exe", b"MZ"), rx, |m, h| {
        vec![m.create_section(h, fsfilter::section_sync::PAGE_EXECUTE_READ).status]
    });
}
