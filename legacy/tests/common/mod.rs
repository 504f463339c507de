//! Helpers for the legacy backend's tests: machines with the probe sample as a legacy filter
//! (through the real backend, `fsfilter_legacy::driver!`), and views of the event log.

#![allow(dead_code, reason = "each test file uses part of the helpers")]
#![allow(missing_docs, reason = "test helpers")]

use fsfilter::{InstanceSetupFlags, MajorFunction, OperationKind, Status};
use fsfilter_sim::{Callback, EventKind, Machine, MachineConfig, RegValue, ServiceSpec, StartType};

mod probe_driver {
    fsfilter_legacy::driver!(probe::Probe);
}

/// A machine (seeded) with nothing installed.
pub(crate) fn machine() -> Machine {
    Machine::new(MachineConfig { seed: 7 })
}

/// Installs the probe as legacy filter `name`.
pub(crate) fn install_probe(
    m: &mut Machine,
    name: &str,
    start: StartType,
    params: &[(&str, RegValue)],
) {
    let mut spec = ServiceSpec::new(name, probe_driver::ENTRY, "legacy");
    spec.start = start;
    spec.group = Some("FSFilter Activity Monitor".into());
    spec.parameters = params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    m.install(spec);
}

/// Installs a shared test's filter (`sim/testing/*.rs`) as a boot-start legacy filter in
/// "FSFilter Activity Monitor", with the parameters `spec` carries.
pub(crate) fn install_legacy(m: &mut Machine, spec: ServiceSpec) {
    install_legacy_as(m, spec, StartType::Boot);
}

/// Installs a filter as a legacy filter in "FSFilter Activity Monitor" started as `start`.
pub(crate) fn install_legacy_as(m: &mut Machine, mut spec: ServiceSpec, start: StartType) {
    spec.model = "legacy";
    spec.start = start;
    spec.group = Some("FSFilter Activity Monitor".into());
    m.install(spec);
}

/// Installs the probe as `Pender`, loaded before the filter under test and so attached under it,
/// with `rules` (for the shared tests' lower drivers that pend, `sim/testing/*.rs`).
pub(crate) fn install_pender(m: &mut Machine, rules: &str) {
    install_probe(m, "Pender", StartType::Boot, &[("Rules", sz(rules))]);
}

/// A `REG_SZ` value.
pub(crate) fn sz(s: &str) -> RegValue {
    RegValue::Sz(s.to_owned())
}

/// Every callback `driver`'s logic saw, with the volume it was for.
pub(crate) fn callbacks(m: &Machine, driver: &str) -> Vec<(Option<String>, Callback)> {
    m.callbacks_of(driver)
}

/// The instance-setup callbacks of `driver`: (volume, flags, status).
pub(crate) fn setups(
    m: &Machine,
    driver: &str,
) -> Vec<(Option<String>, InstanceSetupFlags, Status)> {
    callbacks(m, driver)
        .into_iter()
        .filter_map(|(v, c)| match c {
            Callback::InstanceSetup { flags, status, .. } => Some((v, flags, status)),
            _ => None,
        })
        .collect()
}

/// Pre callbacks of `driver` for `major`: (kind, outcome).
pub(crate) fn pres(
    m: &Machine,
    driver: &str,
    major: MajorFunction,
) -> Vec<(OperationKind, &'static str)> {
    callbacks(m, driver)
        .into_iter()
        .filter_map(|(_, c)| match c {
            Callback::Pre { major: mj, kind, outcome, .. } if mj == major => Some((kind, outcome)),
            _ => None,
        })
        .collect()
}

/// Which drivers' pre and post callbacks ran for user request `io`, in order:
/// ("ProbeA", "pre"), ...
pub(crate) fn order_for_io(
    m: &Machine,
    io: fsfilter_sim::RequestRef,
) -> Vec<(String, &'static str)> {
    m.callback_order(io)
}

/// Names of the rules the verifier reported.
pub(crate) fn findings(m: &Machine) -> Vec<String> {
    m.findings_text()
}

/// The events' kinds, in order (for ordering assertions).
pub(crate) fn kinds(m: &Machine) -> Vec<String> {
    m.events()
        .into_iter()
        .map(|e| match &e.kind {
            EventKind::Callback { driver, callback, .. } => format!("{driver}:{}", callback.kind()),
            EventKind::Unload { driver, .. } => format!("{driver}:unload"),
            EventKind::IoComplete { io, .. } => format!("io{}:complete", io.0),
            other => format!("{:?}", std::mem::discriminant(other)),
        })
        .collect()
}

/// The probe as legacy filter "ProbeA" (registering `ops`, synchronizing every operation, so
/// every post callback has a completion context) run once without faults, then once with each of
/// its pool allocations failing in turn: the probe loads or fails cleanly, `io` gets a handle to
/// C:'s `file` (holding `contents`, opened with `options`) and answers the statuses of what it
/// did, each a success or `STATUS_INSUFFICIENT_RESOURCES`; then the probe stops, nothing crashes
/// and nothing is reported.
pub(crate) fn every_pool_failure_of_a_probe_is_survived(
    ops: &str,
    (file, contents): (&str, &[u8]),
    options: fsfilter_sim::CreateOptions,
    io: impl Fn(&mut Machine, fsfilter_sim::Handle) -> Vec<Status>,
) {
    use fsfilter_sim::{FaultKind, FsKind, StopResult, VolumeSpec};
    let run = |fault: Option<u64>| {
        let mut m = machine();
        let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file(file, contents));
        let parameters = [("Operations", sz(ops)), ("Rules", sz("synchronize * *"))];
        install_probe(&mut m, "ProbeA", StartType::Demand, &parameters);
        m.boot();
        if let Some(nth) = fault {
            m.kernel(|k| k.faults.plan_for_service("ProbeA", FaultKind::Pool, nth));
        }
        let load = m.start("ProbeA");
        let h = m.open(c, file, options).expect("open");
        for status in io(&mut m, h) {
            let expected = status.is_success() || status == Status::INSUFFICIENT_RESOURCES;
            assert!(expected, "{fault:?}: {status:?}");
        }
        m.close_handle(h);
        if load.is_success() {
            assert_eq!(m.stop("ProbeA"), StopResult::Unloaded, "{fault:?}");
        }
        m.settle();
        assert_eq!(m.crashed(), None, "{fault:?}");
        assert!(findings(&m).is_empty(), "{fault:?}: {:?}", findings(&m));
        m.kernel(|k| k.faults.service_count("ProbeA", FaultKind::Pool))
    };
    let n = run(None);
    assert!(n > 0);
    for nth in 1..=n {
        run(Some(nth));
    }
}
