//! The framework's per-operation path allocates nothing (issue 9): with the passthrough and probe
//! samples as minifilters on the simulated Filter Manager, hundreds of operations of every kind
//! (create, cleanup, close, cached reads through fast I/O, non-cached and paging reads, writes,
//! queries) make no pool call from the driver's image. The simulator's pool accounting counts
//! every `ExAllocatePool2` and free by the image that made it (`FltAllocateContext` and the
//! other allocating calls are counted by the fault injector, which
//! `bench/tests/machines.rs` also checks); the Filter Manager's own allocations for callback
//! data are its own, as on Windows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use fsfilter::Status;
use fsfilter_sim::{CreateOptions, DriverEntry, FsKind, IoMode, StartType, VolumeSpec};

mod drivers {
    pub(crate) mod passthrough {
        fsfilter_minifilter::driver!(passthrough::Passthrough);
    }
    pub(crate) mod probe {
        fsfilter_minifilter::driver!(probe::Probe);
    }
}

/// Pool calls made by the driver over the workload, the workload's operations, and the pre
/// callbacks the filter got.
fn pool_calls_per_operation(entry: DriverEntry) -> (u64, u64, usize) {
    let mut m = common::machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[3u8; 4096]));
    m.install(common::minifilter_spec("Filter", entry, StartType::Boot, "370000", 0, &[]));
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 16, IoMode::Cached).status, Status::SUCCESS);
    let before = m.kernel(|k| k.pool_calls_of_service("Filter"));
    assert!(before > 0, "the accounting sees the driver's own allocations (its state, at load)");
    let pres_before = m.flt_pre_count("Filter");
    let mut operations = 0;
    for i in 0..50u64 {
        let g = m.open(c, "data.bin", CreateOptions::open()).unwrap();
        m.close_handle(g);
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
    let pres = m.flt_pre_count("Filter") - pres_before;
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    (after - before, operations, pres)
}

#[test]
fn passthrough_and_probe_make_no_pool_call_per_operation() {
    for (name, entry) in
        [("passthrough", drivers::passthrough::ENTRY), ("probe", drivers::probe::ENTRY)]
    {
        let (calls, operations, pres) = pool_calls_per_operation(entry);
        assert!(operations >= 400, "{name}: {operations}");
        // The filter really was on the path of every operation (and of the paging and cache
        // operations they caused).
        assert!(pres as u64 >= operations, "{name}: {pres} pre callbacks for {operations}");
        assert_eq!(calls, 0, "{name}: {calls} pool calls over {operations} operations");
    }
}
