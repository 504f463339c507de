//! The framework's per-operation path allocates nothing (issue 9): with the passthrough and probe
//! samples as legacy filters, hundreds of operations of every kind make no pool call from the
//! driver (the simulator's pool accounting counts every `ExAllocatePool2` and free by image).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, DriverEntry, FsKind, IoMode, Machine, MachineConfig, ServiceSpec, StartType,
    StopResult, VolumeId, VolumeSpec,
};

mod drivers {
    pub(crate) mod passthrough {
        fsfilter_legacy::driver!(passthrough::Passthrough);
    }
    pub(crate) mod probe {
        fsfilter_legacy::driver!(probe::Probe);
    }
}

/// A booted machine with `entry` as legacy filter `Filter` and a volume `C:` holding `data.bin`.
fn machine_with(entry: DriverEntry) -> (Machine, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 2 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[3u8; 4096]));
    let mut spec = ServiceSpec::new("Filter", entry, "legacy");
    spec.start = StartType::Boot;
    m.install(spec);
    m.boot();
    (m, c)
}

fn pool_calls_per_operation(entry: DriverEntry) -> (u64, u64) {
    let (mut m, c) = machine_with(entry);
    // Warm up: the first open initiates caching.
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 16, IoMode::Cached).status, Status::SUCCESS);
    let before = m.kernel(|k| k.pool_calls_of_service("Filter"));
    assert!(before > 0, "the accounting sees the driver's own allocations (its state, at load)");
    let mut operations = 0;
    for i in 0..50u64 {
        let g = m.open(c, "data.bin", CreateOptions::open()).unwrap();
        m.close_handle(g); // create, cleanup, close
        operations += 3;
        for mode in [IoMode::Cached, IoMode::NonCached, IoMode::Paging] {
            assert_eq!(m.read(h, Some(512 * (i % 4)), 512, mode).status, Status::SUCCESS);
            operations += 1;
        }
        assert_eq!(m.write(h, Some(0), &[4u8; 512], IoMode::NonCached).status, Status::SUCCESS);
        assert_eq!(m.query_information(h, 5, 24).status, Status::SUCCESS);
        operations += 2;
    }
    let after = m.kernel(|k| k.pool_calls_of_service("Filter"));
    m.close_handle(h);
    (after - before, operations)
}

#[test]
fn passthrough_and_probe_make_no_pool_call_per_operation() {
    for (name, entry) in
        [("passthrough", drivers::passthrough::ENTRY), ("probe", drivers::probe::ENTRY)]
    {
        let (calls, operations) = pool_calls_per_operation(entry);
        assert!(operations >= 400, "{name}: {operations}");
        assert_eq!(calls, 0, "{name}: {calls} pool calls over {operations} operations");
    }
}

/// Passthrough without an unload callback: a legacy filter that can never be unloaded.
mod resident {
    fsfilter_legacy::driver!(passthrough::Resident);
}

/// `IoSetCompletionRoutineEx` calls (the I/O manager's per-IRP allocation, counted as a pool call
/// of the calling service by the fault injector) and post callbacks over 20 non-cached reads, and
/// whether a service stop unloads the driver.
fn completion_contexts(entry: DriverEntry) -> (u64, usize, bool) {
    let (mut m, c) = machine_with(entry);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let pool = |m: &mut Machine| {
        m.kernel(|k| k.faults.service_count("Filter", fsfilter_sim::FaultKind::Pool))
    };
    let posts = |m: &Machine| {
        m.callbacks_of("Filter")
            .iter()
            .filter(|(_, c)| matches!(c, fsfilter_sim::Callback::Post { .. }))
            .count()
    };
    let (pool_before, posts_before) = (pool(&mut m), posts(&m));
    for _ in 0..20 {
        assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    }
    let ex_calls = pool(&mut m) - pool_before;
    let post_callbacks = posts(&m) - posts_before;
    m.close_handle(h);
    let unloaded = match m.stop("Filter") {
        StopResult::Unloaded => true,
        StopResult::NotStoppable => false,
        other => panic!("{other:?}"),
    };
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    (ex_calls, post_callbacks, unloaded)
}

#[test]
fn only_an_unloadable_filter_pays_for_io_set_completion_routine_ex() {
    // Passthrough can unload: each IRP's routine holds a device reference (one I/O manager
    // allocation per IRP), so no completion routine can run in an unloaded image.
    let (ex, posts, unloaded) = completion_contexts(drivers::passthrough::ENTRY);
    assert!(unloaded);
    assert_eq!(posts, 20);
    assert_eq!(ex, 20, "one IoSetCompletionRoutineEx per read");
    // Without an unload callback the image stays: plain IoSetCompletionRoutine, no allocation,
    // and the post callbacks still run.
    let (ex, posts, unloaded) = completion_contexts(resident::ENTRY);
    assert!(!unloaded, "a filter without an unload callback cannot be stopped");
    assert_eq!(posts, 20);
    assert_eq!(ex, 0, "no IoSetCompletionRoutineEx");
}
