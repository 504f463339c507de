//! The framework's per-operation path allocates nothing (issue 9): with the passthrough and probe
//! samples as legacy filters, hundreds of operations of every kind make no pool call from the
//! driver (the simulator's pool accounting counts every `ExAllocatePool2` and free by image).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, DriverEntry, FsKind, IoMode, Machine, MachineConfig, ServiceSpec, StartType,
    VolumeSpec,
};

mod drivers {
    pub(crate) mod passthrough {
        fsfilter_legacy::driver!(passthrough::Passthrough);
    }
    pub(crate) mod probe {
        fsfilter_legacy::driver!(probe::Probe);
    }
}

fn pool_calls_per_operation(entry: DriverEntry) -> (u64, u64) {
    let mut m = Machine::new(MachineConfig { seed: 2 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[3u8; 4096]));
    let mut spec = ServiceSpec::new("Filter", entry, "legacy");
    spec.start = StartType::Boot;
    m.install(spec);
    m.boot();
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
