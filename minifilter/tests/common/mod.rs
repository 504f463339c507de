//! Helpers for the minifilter backend's tests: machines with the Filter Manager and the probe
//! sample as a minifilter (through the real backend, `fsfilter_minifilter::driver!`), and views of
//! the event log.

#![allow(dead_code, reason = "each test file uses part of the helpers")]
#![allow(missing_docs, reason = "test helpers")]

use fsfilter::{InstanceSetupFlags, MajorFunction, OperationKind, Status};
use fsfilter_sim::{
    Callback, InstanceLayout, InstanceSpec, InstancesSpec, Machine, MachineConfig, RegValue,
    ServiceSpec, StartType,
};

mod probe_driver {
    fsfilter_minifilter::driver!(probe::Probe);
}

/// A machine (seeded) with the Filter Manager installed.
pub(crate) fn machine() -> Machine {
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let _ = m.install_filter_manager();
    m
}

/// The service of a minifilter with one default instance.
pub(crate) fn minifilter_spec(
    name: &str,
    entry: fsfilter_sim::DriverEntry,
    start: StartType,
    altitude: &str,
    flags: u32,
    params: &[(&str, RegValue)],
) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, entry, "minifilter");
    spec.start = start;
    spec.group = Some("FSFilter Activity Monitor".into());
    spec.depends_on = vec!["FltMgr".into()];
    spec.parameters = params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let instance = format!("{name} Instance");
    spec.instances = Some(InstancesSpec {
        default_instance: instance.clone(),
        instances: vec![InstanceSpec { name: instance, altitude: altitude.into(), flags }],
        layout: InstanceLayout::Both,
    });
    spec
}

/// Installs a shared test's filter (`sim/testing/*.rs`) as a boot-start minifilter with one
/// instance at 370000 and the parameters `spec` carries, with the Filter Manager.
pub(crate) fn install_minifilter(m: &mut Machine, spec: ServiceSpec) {
    let mut mini = minifilter_spec(&spec.name, spec.entry, StartType::Boot, "370000", 0, &[]);
    mini.parameters = spec.parameters;
    let _ = m.install_filter_manager();
    m.install(mini);
}

/// Installs the probe as `Pender` at 360000, under the filter under test, with `rules` (for the
/// shared tests' lower drivers that pend, `sim/testing/*.rs`), and the Filter Manager.
pub(crate) fn install_pender(m: &mut Machine, rules: &str) {
    let _ = m.install_filter_manager();
    install_probe(m, "Pender", StartType::Boot, "360000", &[("Rules", sz(rules))]);
}

/// Installs the probe as minifilter `name` at `altitude`.
pub(crate) fn install_probe(
    m: &mut Machine,
    name: &str,
    start: StartType,
    altitude: &str,
    params: &[(&str, RegValue)],
) {
    m.install(minifilter_spec(name, probe_driver::ENTRY, start, altitude, 0, params));
}

/// Installs the probe with its default instance's `Flags`.
pub(crate) fn install_probe_flags(
    m: &mut Machine,
    name: &str,
    start: StartType,
    altitude: &str,
    flags: u32,
) {
    m.install(minifilter_spec(name, probe_driver::ENTRY, start, altitude, flags, &[]));
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

/// Which drivers' pre and post callbacks ran for user request `io`, in order.
pub(crate) fn order_for_io(
    m: &Machine,
    io: fsfilter_sim::RequestRef,
) -> Vec<(String, &'static str)> {
    m.callback_order(io)
}

/// The verifier's findings, as text.
pub(crate) fn findings(m: &Machine) -> Vec<String> {
    m.findings_text()
}

/// The drivers of a volume's stack, with each frame's instances: `["ProbeB", "ProbeA",
/// "FltMgr#0", "Ntfs"]`-like, from `Machine::device_stack`.
pub(crate) fn instances_top_down(m: &Machine, v: fsfilter_sim::VolumeId) -> Vec<String> {
    m.device_stack(v)
        .into_iter()
        .flat_map(|e| match e {
            fsfilter_sim::StackEntry::Legacy { driver } => vec![driver],
            fsfilter_sim::StackEntry::Frame { instances, .. } => {
                instances.into_iter().map(|i| i.driver).collect()
            }
            fsfilter_sim::StackEntry::FileSystem { driver } => vec![driver],
        })
        .collect()
}
