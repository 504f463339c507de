//! Systematic fault injection (issue 10): for each sample as a legacy filter, every pool
//! allocation, device creation and attach the driver makes in a scenario is failed in turn, one
//! run per call. Whatever fails, the driver must not crash the machine, must report a failure
//! status when it cannot load, must leave nothing behind (pool, devices, attachments), and must keep
//! the volumes working when it stays loaded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, DriverEntry, FaultKind, FsKind, IoMode, Machine, MachineConfig, MountWhen,
    RegValue, ServiceSpec, StopResult, VolumeId, VolumeSpec,
};

mod drivers {
    pub(crate) mod passthrough {
        fsfilter_legacy::driver!(passthrough::Passthrough);
    }
    pub(crate) mod probe {
        fsfilter_legacy::driver!(probe::Probe);
    }
    pub(crate) mod scanner {
        fsfilter_legacy::driver!(scanner::Scanner);
    }
}

const NAME: &str = "Victim";

struct Sample {
    entry: DriverEntry,
    params: Vec<(String, RegValue)>,
}

fn samples() -> Vec<(&'static str, Sample)> {
    vec![
        ("passthrough", Sample { entry: drivers::passthrough::ENTRY, params: vec![] }),
        (
            "probe",
            Sample {
                entry: drivers::probe::ENTRY,
                params: vec![(
                    "Rules".into(),
                    RegValue::Sz("pend:5 read; complete:STATUS_ACCESS_DENIED create *.tmp".into()),
                )],
            },
        ),
        (
            "scanner",
            Sample {
                entry: drivers::scanner::ENTRY,
                params: vec![("Pattern".into(), RegValue::Sz("BAD".into()))],
            },
        ),
    ]
}

/// What a run left: whether the driver loaded, the I/O results, the verifier's findings.
struct Outcome {
    load: Status,
    io_ok: bool,
    findings: Vec<String>,
    crashed: Option<String>,
    stacks_clean: bool,
}

fn scenario(sample: &Sample, fault: Option<(FaultKind, u64)>) -> (Outcome, Machine) {
    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[1u8; 1024]));
    let f = m.add_volume(
        VolumeSpec::new("F:", FsKind::Fat).mount(MountWhen::Step).file("x.txt", b"fat"),
    );
    let mut spec = ServiceSpec::new(NAME, sample.entry, "legacy");
    spec.group = Some("FSFilter Activity Monitor".into());
    spec.parameters = sample.params.clone();
    m.install(spec);
    m.boot();
    if let Some((kind, nth)) = fault {
        m.kernel(|k| k.faults.plan_for_service(NAME, kind, nth));
    }
    let load = m.start(NAME);
    let mut io_ok = true;
    let mut check = |ok: bool| io_ok &= ok;
    let work = |m: &mut Machine, v: VolumeId, path: &str, check: &mut dyn FnMut(bool)| {
        match m.open(v, path, CreateOptions::open()) {
            Ok(h) => {
                let r = m.read(h, Some(0), 512, IoMode::NonCached);
                // A filter that could not get memory for an operation fails it closed (rule 7).
                check(r.status.is_success() || r.status == Status::INSUFFICIENT_RESOURCES);
                let w = m.write(h, Some(0), b"abc", IoMode::Cached);
                check(w.status.is_success() || w.status == Status::INSUFFICIENT_RESOURCES);
                check(m.close_handle(h).is_success());
            }
            Err(s) => check(s == Status::INSUFFICIENT_RESOURCES),
        }
    };
    work(&mut m, c, "data.bin", &mut check);
    check(m.mount(f).is_success());
    work(&mut m, f, "x.txt", &mut check);
    if load.is_success() {
        let stopped = m.stop(NAME);
        check(stopped == StopResult::Unloaded);
    }
    m.settle();
    let stacks_clean = [c, f].iter().all(|v| !m.volume_stack_drivers(*v).iter().any(|d| d == NAME))
        && !m.device_stack_drivers(r"\Ntfs").iter().any(|d| d == NAME)
        && !m.device_stack_drivers(r"\Fat").iter().any(|d| d == NAME);
    let findings =
        m.findings().into_iter().map(|(r, d, msg)| format!("{} {d:?}: {msg}", r.name())).collect();
    let crashed = m.crashed();
    (Outcome { load, io_ok, findings, crashed, stacks_clean }, m)
}

#[test]
fn every_failed_call_of_every_legacy_sample_is_survived() {
    let mut injected = 0;
    let mut load_failures = 0;
    for (name, sample) in samples() {
        let (clean, m) = scenario(&sample, None);
        assert!(clean.load.is_success(), "{name}: {:?}", clean.load);
        assert!(
            clean.io_ok && clean.stacks_clean && clean.findings.is_empty(),
            "{name}: {:?}",
            clean.findings
        );
        let counts: Vec<(FaultKind, u64)> =
            [FaultKind::Pool, FaultKind::CreateDevice, FaultKind::Attach]
                .into_iter()
                .map(|k| (k, m.kernel(|kernel| kernel.faults.service_count(NAME, k))))
                .collect();
        drop(m);
        assert!(
            counts.iter().any(|(k, n)| *k == FaultKind::CreateDevice && *n > 0),
            "{name}: {counts:?}"
        );
        for (kind, n) in counts {
            for nth in 1..=n {
                let (o, m) = scenario(&sample, Some((kind, nth)));
                let hit = m.kernel(|k| !k.faults.injected.is_empty());
                drop(m);
                let what = format!("{name}: {} #{nth}", kind.name());
                assert!(hit, "{what}: the fault was not reached");
                injected += 1;
                assert_eq!(o.crashed, None, "{what}");
                assert!(o.findings.is_empty(), "{what}: {:?}", o.findings);
                assert!(o.stacks_clean, "{what}: a device of the driver was left in a stack");
                assert!(o.io_ok, "{what}: the volumes stopped working");
                if !o.load.is_success() {
                    load_failures += 1;
                    assert!(
                        matches!(o.load, Status::INSUFFICIENT_RESOURCES | Status::NO_SUCH_DEVICE),
                        "{what}: DriverEntry failed with {:?}",
                        o.load
                    );
                }
            }
        }
    }
    eprintln!("{injected} faults injected, {load_failures} of them failed the load");
    assert!(injected > 30, "only {injected} faults injected");
    assert!(load_failures > 0 && load_failures < injected, "{load_failures} of {injected}");
}
