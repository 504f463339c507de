//! The benchmark machines are what the benchmarks say they are: every filter of a configuration
//! sits on the volume's stack and sees the workload's operations, the framework's filters
//! allocate nothing per operation, and the machines boot with no verifier findings. Without this
//! a baseline that failed to attach would look free.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_bench::{Bench, Driver};
use fsfilter_sim::{CreateOptions, EventKind, StopResult};

const ALL: [Driver; 7] = [
    Driver::RawMinifilter,
    Driver::RawLegacy,
    Driver::PassthroughMinifilter,
    Driver::PassthroughLegacy,
    Driver::ResidentLegacy,
    Driver::ProbeMinifilter,
    Driver::ProbeLegacy,
];

/// Pre callbacks the Filter Manager called for `Filter<index>`.
fn minifilter_pres(bench: &Bench, index: usize) -> usize {
    bench.machine.flt_pre_count(&format!("Filter{index}"))
}

/// The raw legacy filter keeps its driver and control device in process-wide statics, as a C
/// driver does (bench/raw-legacy): two machines running it at once in this test binary's threads
/// would share them (one machine's filter then does not recognize its own devices and leaves
/// the volume unattached). The tests of this file therefore run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn each_driver_is_on_the_path_of_the_workload() {
    let _serial = serial();
    for driver in ALL {
        let mut bench = Bench::new(&[driver]);
        let stack = bench.machine.volume_stack_drivers(bench.volume);
        if driver.is_minifilter() {
            assert!(stack.iter().any(|d| d == "FltMgr"), "{driver:?}: {stack:?}");
            bench.create_close();
            bench.cached_read();
            bench.paging_read();
            // create, cleanup, close, the fast-I/O read and the paging read at least.
            let pres = minifilter_pres(&bench, 0);
            assert!(pres >= 5, "{driver:?}: {pres} pre callbacks");
        } else {
            assert_eq!(stack.first().map(String::as_str), Some("Filter0"), "{driver:?}: {stack:?}");
        }
        assert!(bench.machine.findings().is_empty(), "{driver:?}");
    }
}

#[test]
fn stacks_of_sixteen_mixed_filters_are_ordered() {
    let _serial = serial();
    let drivers: Vec<Driver> = (0..16)
        .map(|i| if i % 2 == 0 { Driver::PassthroughMinifilter } else { Driver::PassthroughLegacy })
        .collect();
    let mut bench = Bench::new(&drivers);
    let stack = bench.machine.volume_stack_drivers(bench.volume);
    // The eight legacy filters, each attached above what was there when it loaded (the Filter
    // Manager, which loads first, at the bottom), from the last loaded down.
    let legacy: Vec<String> = (1..16).step_by(2).rev().map(|i| format!("Filter{i}")).collect();
    let expected: Vec<String> =
        legacy.iter().cloned().chain(["FltMgr".to_owned(), "Ntfs".to_owned()]).collect();
    assert_eq!(stack, expected);
    // The eight minifilters in the Filter Manager's frame, by altitude from the highest.
    let minifilters: Vec<String> = (0..16).step_by(2).rev().map(|i| format!("Filter{i}")).collect();
    let frame: Vec<String> = bench
        .machine
        .device_stack(bench.volume)
        .into_iter()
        .flat_map(|e| match e {
            fsfilter_sim::StackEntry::Frame { instances, .. } => {
                instances.into_iter().map(|i| i.driver).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(frame, minifilters);
    // A create reaches them in that order: the legacy filters, then the frame's instances.
    bench.trim();
    let h = bench.machine.open(bench.volume, fsfilter_bench::FILE, CreateOptions::open()).unwrap();
    bench.machine.close_handle(h);
    let creates: Vec<String> =
        bench
            .machine
            .events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Callback {
                    driver,
                    callback:
                        fsfilter_sim::Callback::Pre { major: fsfilter::MajorFunction::Create, .. },
                    ..
                } => Some(driver.to_string()),
                _ => None,
            })
            .collect();
    let order: Vec<String> = legacy.into_iter().chain(minifilters).collect();
    assert_eq!(creates, order);
    bench.mixed();
    for i in (0..16).step_by(2) {
        assert!(minifilter_pres(&bench, i) > 0, "Filter{i}");
    }
    assert!(bench.machine.findings().is_empty());
}

#[test]
fn the_framework_allocates_nothing_per_operation() {
    let _serial = serial();
    use fsfilter::{MajorFunction as Major, OperationKind as Kind};
    use fsfilter_sim::{Callback, FaultKind};
    // Every allocating call a driver can make counts, not only ExAllocatePool2 and its frees
    // (`pool_calls`): the fault injector counts by service each call that allocates on the
    // driver's behalf (IoAllocateIrp, IoAllocateMdl, IoAllocateWorkItem,
    // FltAllocateGenericWorkItem, IoSetCompletionRoutineEx's context) and FltAllocateContext.
    let counts = |b: &Bench| {
        let faults = |kind| b.machine.kernel(|k| k.faults.service_count("Filter0", kind));
        (b.pool_calls(0), faults(FaultKind::Pool), faults(FaultKind::AllocateContext))
    };
    for driver in [
        Driver::PassthroughMinifilter,
        Driver::PassthroughLegacy,
        Driver::ResidentLegacy,
        Driver::ProbeMinifilter,
        Driver::ProbeLegacy,
    ] {
        let mut bench = Bench::new(&[driver]);
        bench.trim();
        let before = counts(&bench);
        for _ in 0..100 {
            bench.mixed();
        }
        let (pool, other, contexts) = counts(&bench);
        // The window holds every path the claim names: create, cleanup and close, reads as IRPs
        // and through fast I/O, paging and non-cached reads, a write, a query.
        let pres: Vec<(Major, Kind)> = bench
            .machine
            .callbacks_of("Filter0")
            .into_iter()
            .filter_map(|(_, c)| match c {
                Callback::Pre { major, kind, .. } => Some((major, kind)),
                _ => None,
            })
            .collect();
        let seen = |path: (Major, Kind)| pres.iter().filter(|&&p| p == path).count();
        for path in [
            (Major::Create, Kind::Irp),
            (Major::Cleanup, Kind::Irp),
            (Major::Close, Kind::Irp),
            (Major::Read, Kind::Irp),
            (Major::Read, Kind::FastIo),
            (Major::Write, Kind::Irp),
        ] {
            assert!(seen(path) >= 100, "{driver:?}: {path:?} {} times", seen(path));
        }
        assert!(pres.iter().any(|(m, _)| *m == Major::QueryInformation), "{driver:?}");
        assert_eq!(pool, before.0, "{driver:?}: ExAllocatePool2 or a free per operation");
        assert_eq!(contexts, before.2, "{driver:?}: FltAllocateContext per operation");
        // The one allocation documented on the path (docs/performance.md): an unloadable legacy
        // filter's IoSetCompletionRoutineEx, the I/O manager's, one per IRP with a post.
        let ex = match driver {
            Driver::PassthroughLegacy | Driver::ProbeLegacy => {
                pres.iter().filter(|(_, kind)| *kind == Kind::Irp).count() as u64
            }
            _ => 0,
        };
        assert_eq!(other - before.1, ex, "{driver:?}: allocations on the driver's behalf");
    }
}

#[test]
fn the_lab_workloads_run_cleanly() {
    let _serial = serial();
    let text = fsfilter_bench::lab::demonstration();
    assert!(text.contains("ProbeLate"), "{text}");
    // The sweep's scenarios differ only by the late minifilter's altitude, and all run.
    assert_eq!(fsfilter_bench::lab::sweep(20), 20);
    // Its folder of scenarios is not left behind in the temporary folder.
    let prefix = format!("fsfilter-bench-sweep-{}", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_raw_and_fsfilter_minifilters_get_the_same_callbacks() {
    let _serial = serial();
    // A fair comparison: the same registrations, so the same operations reach each filter.
    let counts: Vec<usize> = [Driver::RawMinifilter, Driver::PassthroughMinifilter]
        .into_iter()
        .map(|driver| {
            let mut bench = Bench::new(&[driver]);
            for _ in 0..10 {
                bench.create_close();
                bench.cached_read();
                bench.paging_read();
            }
            minifilter_pres(&bench, 0)
        })
        .collect();
    assert!(counts[0] >= 50, "{counts:?}");
    assert_eq!(counts[0], counts[1], "raw vs fsfilter pre callbacks");
}

#[test]
fn callback_recording_can_be_turned_off_for_the_overhead_benchmark() {
    let _serial = serial();
    let callbacks = |bench: &Bench| {
        bench
            .machine
            .events()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Callback { .. }))
            .count()
    };
    let mut bench = Bench::new(&[Driver::PassthroughLegacy]);
    bench.create_close();
    let on = callbacks(&bench);
    assert!(on > 0, "the passthrough reports its callbacks through the trace hook");
    bench.trim();
    bench.record_callbacks(false);
    bench.create_close();
    bench.cached_read();
    assert_eq!(callbacks(&bench), 0);
    drop(bench);
    // The Filter Manager's own events are not the trace hook's.
    let mut mini = Bench::new(&[Driver::PassthroughMinifilter]);
    mini.record_callbacks(false);
    mini.create_close();
    assert!(minifilter_pres(&mini, 0) > 0);
}

#[test]
fn callbacks_per_mixed_workload_grow_with_the_stack() {
    let _serial = serial();
    let one = Bench::new(&[Driver::PassthroughLegacy]).callbacks_per_mixed();
    let four = Bench::new(&[Driver::PassthroughLegacy; 4]).callbacks_per_mixed();
    assert!(one >= 2 * 10, "a pre and a post for each of the 10 requests at least: {one}");
    assert_eq!(four, 4 * one);
}

#[test]
fn every_filter_of_any_stack_sees_the_same_operations_of_a_mixed_workload() {
    let _serial = serial();
    // The operations the throughput benchmark counts per mixed workload: the same whatever the
    // stack's depth and models, since each passthrough sees every operation once.
    let ops = |stack: &[Driver]| Bench::new(stack).operations_per_mixed();
    let one = ops(&[Driver::PassthroughLegacy]);
    // Create, four reads, a paging and a non-cached read, a write, a query, cleanup and close.
    assert!(one >= 11, "at least the workload's 11 operations: {one}");
    assert_eq!(ops(&[Driver::PassthroughMinifilter]), one, "a minifilter sees the same");
    assert_eq!(ops(&[Driver::PassthroughLegacy; 4]), one, "as many through four filters");
    let mixed = [
        Driver::PassthroughMinifilter,
        Driver::PassthroughLegacy,
        Driver::PassthroughMinifilter,
        Driver::PassthroughLegacy,
    ];
    let mut bench = Bench::new(&mixed);
    assert_eq!(bench.operations_per_mixed(), one, "and through a mixed stack");
    // Each of the four filters ran a pre (and a post) for each operation.
    assert_eq!(bench.callbacks_per_mixed(), 4 * 2 * one);
    drop(bench);
    assert_eq!(ops(&[]), 0, "no filter, no operation counted");
}

#[test]
fn the_legacy_passthrough_without_unload_runs_its_callbacks_without_completion_contexts() {
    let _serial = serial();
    // The no-unload variant of the overhead benchmark differs from passthrough only by the
    // registration's unload callback: the same callbacks, and no IoSetCompletionRoutineEx (which
    // the fault injector counts as a pool call of the service).
    let run = |driver: Driver| {
        let mut bench = Bench::new(&[driver]);
        let ex = |b: &Bench| {
            b.machine.kernel(|k| k.faults.service_count("Filter0", fsfilter_sim::FaultKind::Pool))
        };
        let before = ex(&bench);
        let callbacks = bench.callbacks_per_mixed();
        (callbacks, ex(&bench) - before)
    };
    let (with_unload, ex_with) = run(Driver::PassthroughLegacy);
    let (without, ex_without) = run(Driver::ResidentLegacy);
    assert!(with_unload > 0);
    assert_eq!(with_unload, without, "the same callbacks");
    assert!(ex_with > 0, "the unloadable filter pays for completion contexts");
    assert_eq!(ex_without, 0, "the resident one does not");
}

/// Runs of [`counted_read`] so far (the paired test's workers call it from their threads).
static COUNTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn counted_read(bench: &mut Bench) {
    COUNTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    bench.cached_read();
}

#[test]
fn the_paired_measurement_times_every_round_of_both_stacks() {
    let _serial = serial();
    use fsfilter_bench::paired::paired;
    let before = COUNTED.load(std::sync::atomic::Ordering::Relaxed);
    let p = paired(&[Driver::RawLegacy], &[Driver::ResidentLegacy], counted_read, 20, 5);
    assert_eq!((p.a.len(), p.b.len()), (5, 5), "a batch of each stack per round");
    assert!(p.a.iter().chain(&p.b).all(|d| !d.is_zero()), "every batch timed: {p:?}");
    assert_eq!(p.ratios().len(), 5);
    // Each stack: one untimed warm-up batch, then its five timed ones, 20 reads each.
    let runs = COUNTED.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_eq!(runs, 2 * 6 * 20);
}

#[test]
fn quartiles_are_values_at_their_ranks() {
    let _serial = serial();
    use fsfilter_bench::paired::quartiles;
    assert_eq!(quartiles(vec![5.0, 1.0, 3.0, 2.0, 4.0]), (2.0, 3.0, 4.0));
    // An even count takes the lower of the two middle values, never their mean.
    assert_eq!(quartiles(vec![4.0, 1.0, 3.0, 2.0]), (1.0, 2.0, 3.0));
    assert_eq!(quartiles(vec![7.0]), (7.0, 7.0, 7.0));
    let (q1, m, q3) = quartiles(Vec::new());
    assert!(q1.is_nan() && m.is_nan() && q3.is_nan());
}

#[test]
fn the_raw_legacy_filter_unloads_yet_pays_per_irp_what_the_resident_passthrough_pays() {
    let _serial = serial();
    // docs/performance.md, "The baselines": the raw legacy filter has sfilter's debug-build
    // DriverUnload (detach, wait five seconds, delete), so `sc stop` unloads it, while its
    // completion routines are plain IoSetCompletionRoutine, with nothing allocated per IRP: per
    // operation it pays what the passthrough without an unload callback pays, which cannot be
    // stopped at all.
    for (driver, unloads) in [(Driver::RawLegacy, true), (Driver::ResidentLegacy, false)] {
        let mut bench = Bench::new(&[driver]);
        let allocations = |b: &Bench| {
            b.machine.kernel(|k| k.faults.service_count("Filter0", fsfilter_sim::FaultKind::Pool))
        };
        let before = allocations(&bench);
        for _ in 0..10 {
            bench.mixed();
        }
        assert_eq!(allocations(&bench), before, "{driver:?}: no IoSetCompletionRoutineEx");
        let stopped = bench.machine.stop("Filter0");
        let expected = if unloads { StopResult::Unloaded } else { StopResult::NotStoppable };
        assert_eq!(stopped, expected, "{driver:?}");
        assert!(bench.machine.findings().is_empty(), "{driver:?}: {:?}", bench.machine.findings());
    }
}

#[test]
fn every_driver_serves_the_cached_read_by_fast_io_and_the_paging_read_by_an_irp() {
    let _serial = serial();
    // The overhead benchmark's "cached read" and "paging read" take the same path under every
    // configuration: a raw filter whose fast-I/O routine declined would send its cached reads
    // down as IRPs and be measured on another path than the framework's.
    for driver in ALL {
        let mut bench = Bench::new(&[driver]);
        let read = |b: &mut Bench, mode| {
            let r = b.machine.read(b.handle, Some(0), fsfilter_bench::READ_LENGTH, mode);
            assert_eq!(r.status, fsfilter::Status::SUCCESS, "{driver:?} {mode:?}");
            r.fast_io
        };
        assert!(read(&mut bench, fsfilter_sim::IoMode::Cached), "{driver:?}: cached read");
        assert!(!read(&mut bench, fsfilter_sim::IoMode::Paging), "{driver:?}: paging read");
    }
}

#[test]
fn the_raw_and_fsfilter_minifilters_see_the_same_operations_in_the_same_phases() {
    let _serial = serial();
    // Beyond the pre callbacks' count: the same operations, pre and post, IRP or fast I/O, in the
    // same order, for the overhead benchmark's operations and the mixed workload.
    let seen = |driver: Driver| {
        let mut bench = Bench::new(&[driver]);
        bench.trim();
        bench.create_close();
        bench.cached_read();
        bench.paging_read();
        bench.mixed();
        let name = "Filter0";
        bench
            .machine
            .events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::FltMgr {
                    driver: Some(d),
                    event: fsfilter_sim::FltEvent::Operation { phase, major, kind, outcome, .. },
                    ..
                } if d == name => Some(format!("{phase:?} {major:?} {kind:?} {outcome}")),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let raw = seen(Driver::RawMinifilter);
    assert!(raw.len() >= 2 * 15, "{raw:?}");
    assert_eq!(raw, seen(Driver::PassthroughMinifilter));
}
