//! Load buffers through a backend (docs/callback-model.md, rule 24; docs/decisions/0009): shared
//! by `legacy/tests/load_buffers.rs` and `minifilter/tests/load_buffers.rs`, which include this
//! file with `#[path]` and build [`Buffered`] and [`Unbuffered`] with their backend's `driver!`.
//!
//! The simulator's pool accounting (every block by image and tag, leaks reported at unload and
//! when `DriverEntry` fails) shows each buffer allocated in `DriverEntry` under the driver's own
//! tag, zeroed, and freed after the filter is dropped: at unload, when `load` fails, and when
//! `DriverEntry` fails after `load` succeeded. A fifth buffer, an empty one and one above 16 MiB
//! are refused; a filter that does not declare `Filter::LOAD_BUFFERS` gets
//! `STATUS_NOT_SUPPORTED`.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    Error, Filter, Instance, InstanceSetup, LoadBuffer, MAX_LOAD_BUFFER, MajorFunction, Operation,
    PreOperation, PreOutcome, Registration, Result, ServiceParameters, Status,
};
use fsfilter_sim::{
    CreateOptions, EventKind, FaultKind, FsKind, Machine, MachineConfig, RegValue, Rule,
    ServiceSpec, StopResult, VolumeSpec,
};

/// The service name of the filters under test.
pub(crate) const NAME: &str = "Buffered";
/// The bytes of each buffer [`Buffered`] asks for.
pub(crate) const BYTES: usize = 100_000;

thread_local! {
    /// What `load` and the callbacks saw.
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn log(line: String) {
    SEEN.with(|s| s.borrow_mut().push(line));
}

fn take() -> Vec<String> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn answer(r: &Result<LoadBuffer>) -> String {
    match r {
        Ok(b) => format!("{} bytes", b.len()),
        Err(e) => format!("{}", e.status()),
    }
}

/// Allocates `Buffers` buffers of [`BYTES`] (parameter, 2 by default), checks that each is
/// zeroed and writes its number into it (with `Strict` 1, a refused buffer fails the load with
/// its status); then fails with `STATUS_ACCESS_DENIED` when `Fail` is 1. Its pre-create callback
/// reads the numbers back.
pub(crate) struct Buffered {
    buffers: Vec<LoadBuffer>,
}

impl Filter for Buffered {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .unload_callback(true)
        .validated();
    const LOAD_BUFFERS: bool = true;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Self> {
        let count = parameters.dword("Buffers").unwrap_or(2);
        let strict = parameters.dword("Strict") == Some(1);
        let mut buffers = Vec::new();
        for n in 0..count {
            let r = parameters.allocate(BYTES);
            log(format!("allocate {}: {}", n + 1, answer(&r)));
            match r {
                Ok(mut b) => {
                    log(format!("zeroed: {}", b.iter().all(|&x| x == 0)));
                    b.fill(n as u8 + 1);
                    buffers.push(b);
                }
                Err(e) if strict => return Err(e),
                Err(_) => {}
            }
        }
        if parameters.dword("Fail") == Some(1) {
            return Err(Error::ACCESS_DENIED);
        }
        Ok(Buffered { buffers })
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let kept: Vec<String> = self
            .buffers
            .iter()
            .map(|b| format!("{}x{}", b.first().copied().unwrap_or(0), b.len()))
            .collect();
        log(format!("create sees {}", kept.join(" ")));
        PreOutcome::NoPost
    }
}

impl Drop for Buffered {
    /// Notes how many buffers of [`BYTES`] are still in pool as the filter goes: all of them
    /// (the backend frees them after the filter value is dropped).
    fn drop(&mut self) {
        let live = fsfilter_sim::kernel::with(|k| {
            k.pool.blocks.values().filter(|b| b.size == BYTES).count()
        });
        log(format!("dropped with {live} of {} buffers in pool", self.buffers.len()));
    }
}

/// Does not declare `LOAD_BUFFERS`: its `allocate` is refused, and it loads all the same.
pub(crate) struct Unbuffered;

impl Filter for Unbuffered {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .unload_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Self> {
        log(format!("allocate: {}", answer(&parameters.allocate(16))));
        Ok(Unbuffered)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::NoPost
    }
}

/// A machine with `C:` and the filter installed by `install` with `parameters`, and `fail`, the
/// pool allocation of the service to fail, if any; booted.
fn boot(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    parameters: &[(&str, u32)],
    fail: Option<u64>,
) -> Machine {
    take();
    let mut m = Machine::new(MachineConfig { seed: 9 });
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"load buffers"));
    let mut spec = ServiceSpec::new(NAME, entry, "legacy");
    spec.parameters =
        parameters.iter().map(|(n, v)| ((*n).to_owned(), RegValue::Dword(*v))).collect();
    install(&mut m, spec);
    if let Some(nth) = fail {
        m.kernel(|k| k.faults.plan_for_service(NAME, FaultKind::Pool, nth));
    }
    m.boot();
    m
}

/// The status of the filter's load.
fn load_status(m: &Machine) -> Option<Status> {
    m.events().into_iter().find_map(|e| match e.kind {
        EventKind::Load { driver, status, .. } if &*driver == NAME => Some(status),
        _ => None,
    })
}

/// The live pool blocks of the filter's loaded image: (size, tag) of each, sorted.
fn live_blocks(m: &Machine) -> Vec<(usize, String)> {
    m.kernel(|k| {
        let Some(image) =
            k.images.iter().position(|i| i.loaded && i.name.eq_ignore_ascii_case(NAME))
        else {
            return Vec::new();
        };
        let image = fsfilter_sim::ids::ImageId(image as u32);
        let mut blocks: Vec<(usize, String)> = k
            .pool
            .blocks
            .values()
            .filter(|b| b.image == Some(image))
            .map(|b| (b.size, fsfilter_sim::pool::tag_text(b.tag)))
            .collect();
        blocks.sort();
        blocks
    })
}

/// The allocations and frees the service's image made (over its loads).
fn pool_counts(m: &Machine) -> (u64, u64) {
    m.kernel(|k| {
        let mut counts = (0, 0);
        for (n, _) in k.images.iter().enumerate().filter(|(_, i)| i.name.eq_ignore_ascii_case(NAME))
        {
            let image = Some(fsfilter_sim::ids::ImageId(n as u32));
            counts.0 += k.pool.allocations.get(&image).copied().unwrap_or(0);
            counts.1 += k.pool.frees.get(&image).copied().unwrap_or(0);
        }
        counts
    })
}

/// Two buffers of [`BYTES`], zeroed, under the driver's own `tag`, live while the filter is
/// loaded (its callbacks read what `load` wrote), freed at unload: no finding, no pool left.
pub(crate) fn check_allocated_at_load_and_freed_at_unload(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    tag: &str,
) {
    let mut m = boot(install, entry, &[], None);
    assert_eq!(load_status(&m), Some(Status::SUCCESS));
    let buffers: Vec<_> = live_blocks(&m).into_iter().filter(|(size, _)| *size == BYTES).collect();
    assert_eq!(buffers, [(BYTES, tag.to_owned()), (BYTES, tag.to_owned())]);
    let c = m.volume("C:").unwrap();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    m.close_handle(h);
    assert_eq!(
        take(),
        [
            "allocate 1: 100000 bytes",
            "zeroed: true",
            "allocate 2: 100000 bytes",
            "zeroed: true",
            "create sees 1x100000 2x100000",
        ]
    );
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert_eq!(take(), ["dropped with 2 of 2 buffers in pool"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let (allocations, frees) = pool_counts(&m);
    assert_eq!(allocations, frees, "every block the driver allocated is freed");
}

/// `load` fails after allocating two buffers: the load fails with its status, and both are freed
/// before the image goes (no `POOL_LEAKED_AT_UNLOAD`).
pub(crate) fn check_freed_when_load_fails(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
) {
    let m = boot(install, entry, &[("Fail", 1)], None);
    assert_eq!(load_status(&m), Some(Status::ACCESS_DENIED));
    assert_eq!(
        take(),
        ["allocate 1: 100000 bytes", "zeroed: true", "allocate 2: 100000 bytes", "zeroed: true"]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(pool_counts(&m), (2, 2), "the two buffers, allocated and freed");
}

/// Five buffers asked for: the fifth is refused with `STATUS_INSUFFICIENT_RESOURCES` and the
/// filter loads with four, all freed at unload. An empty buffer and one above 16 MiB are refused
/// with `STATUS_INVALID_PARAMETER`, and take no place in the table.
pub(crate) fn check_a_fifth_buffer_is_refused(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
) {
    let mut m = boot(install, entry, &[("Buffers", 5)], None);
    assert_eq!(load_status(&m), Some(Status::SUCCESS));
    let seen = take();
    let answers: Vec<&str> =
        seen.iter().filter(|l| l.starts_with("allocate")).map(String::as_str).collect();
    assert_eq!(
        answers,
        [
            "allocate 1: 100000 bytes",
            "allocate 2: 100000 bytes",
            "allocate 3: 100000 bytes",
            "allocate 4: 100000 bytes",
            "allocate 5: STATUS_INSUFFICIENT_RESOURCES",
        ]
    );
    assert_eq!(live_blocks(&m).iter().filter(|(size, _)| *size == BYTES).count(), 4);
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let (allocations, frees) = pool_counts(&m);
    assert_eq!(allocations, frees);
}

/// Every pool allocation the service makes while loading, failed in turn (the buffers', the
/// driver state's and the rest of `DriverEntry`'s): the load either fails with
/// `STATUS_INSUFFICIENT_RESOURCES` (the filter passes a refused buffer's status on) or succeeds,
/// and nothing leaks either way, at once or at unload. Returns how many loads failed.
pub(crate) fn check_every_pool_failure_at_load(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
) -> u64 {
    let calls = {
        let m = boot(install, entry, &[("Strict", 1)], None);
        m.kernel(|k| k.faults.service_count(NAME, FaultKind::Pool))
    };
    assert!(calls >= 3, "two buffers and the driver state at least: {calls}");
    let mut failed = 0;
    for nth in 1..=calls {
        let mut m = boot(install, entry, &[("Strict", 1)], Some(nth));
        let status = load_status(&m);
        if status == Some(Status::SUCCESS) {
            assert_eq!(m.stop(NAME), StopResult::Unloaded, "pool call {nth} failed");
        } else {
            assert_eq!(status, Some(Status::INSUFFICIENT_RESOURCES), "pool call {nth} failed");
            failed += 1;
        }
        for line in take().iter().filter(|l| l.starts_with("dropped")) {
            let n: Vec<&str> = line.split(' ').collect();
            assert_eq!(n[2], n[4], "pool call {nth} failed: freed before the filter: {line}");
        }
        let leaks: Vec<_> = m.findings().into_iter().filter(|f| f.0 == Rule::PoolLeaked).collect();
        assert!(leaks.is_empty(), "pool call {nth} failed: {leaks:?}");
        let (allocations, frees) = pool_counts(&m);
        assert_eq!(allocations, frees, "pool call {nth} failed");
    }
    failed
}

/// An empty buffer and one above [`MAX_LOAD_BUFFER`] are refused with
/// `STATUS_INVALID_PARAMETER`; a filter without `LOAD_BUFFERS` gets `STATUS_NOT_SUPPORTED`.
pub(crate) fn check_refusals(
    install: fn(&mut Machine, ServiceSpec),
    bounds: fsfilter_sim::DriverEntry,
    unbuffered: fsfilter_sim::DriverEntry,
) {
    let mut m = boot(install, bounds, &[], None);
    assert_eq!(load_status(&m), Some(Status::SUCCESS));
    assert_eq!(
        take(),
        [
            "0: STATUS_INVALID_PARAMETER",
            "16777217: STATUS_INVALID_PARAMETER",
            "16777216: 16777216 bytes",
            "1: 1 bytes",
        ]
    );
    assert_eq!(m.stop(NAME), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(pool_counts(&m).0, pool_counts(&m).1);
    drop(m);
    let m = boot(install, unbuffered, &[], None);
    assert_eq!(load_status(&m), Some(Status::SUCCESS));
    assert_eq!(take(), ["allocate: STATUS_NOT_SUPPORTED"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Asks for the lengths at the bounds; keeps what it gets.
pub(crate) struct Bounds {
    kept: Vec<LoadBuffer>,
}

impl Filter for Bounds {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .unload_callback(true)
        .validated();
    const LOAD_BUFFERS: bool = true;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Self> {
        let mut kept = Vec::new();
        for len in [0, MAX_LOAD_BUFFER + 1, MAX_LOAD_BUFFER, 1] {
            let r = parameters.allocate(len);
            log(format!("{len}: {}", answer(&r)));
            kept.extend(r.ok());
        }
        Ok(Bounds { kept })
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::NoPost
    }
}
