//! The gate minifilter end to end on the simulated Filter Manager (`../testing/service.rs`): a
//! service on the communication port `\FsFilterGate` (`FilterGetMessage`,
//! `FilterReplyMessage`) decides each open.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

#[path = "../../testing/service.rs"]
mod service;

#[path = "../../../../sim/testing/reparse.rs"]
mod reparse;

mod redirector {
    fsfilter_minifilter::driver!(super::reparse::Redirector);
}

use fsfilter::Status;
use fsfilter_sim::{
    InstanceLayout, InstanceSpec, InstancesSpec, Machine, MessageServer, ServiceSpec, StartType,
};

fn install(m: &mut Machine, mut spec: ServiceSpec) {
    spec.depends_on = vec!["FltMgr".into()];
    spec.instances = Some(InstancesSpec {
        default_instance: "Gate Instance".into(),
        instances: vec![InstanceSpec {
            name: "Gate Instance".into(),
            altitude: "265010".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    });
    m.install(spec);
}

fn machine(parameters: &[(&str, u32)]) -> Machine {
    service::machine(install, gate_minifilter::ENTRY, "minifilter", parameters)
}

/// `FilterConnectCommunicationPort("\\FsFilterGate")`.
fn connect(m: &mut Machine) -> Result<MessageServer, Status> {
    MessageServer::connect_port(m, gate::CHANNEL_NAME, b"")
}

#[test]
fn the_service_allows_and_denies_opens() {
    service::check_allow_and_deny(machine(&[]), connect);
}

#[test]
fn the_services_own_opens_are_not_asked() {
    service::check_the_services_own_opens_are_not_asked(machine(&[]), connect);
}

#[test]
fn without_a_service_opens_go_through_unasked() {
    service::check_no_service(machine(&[]), connect);
}

#[test]
fn timeouts_and_malformed_verdicts_follow_fail_closed() {
    let p = [("TimeoutMs", 250)];
    service::check_timeouts_and_malformed_replies(machine(&p), connect, false);
    let p = [("TimeoutMs", 250), ("FailClosed", 1)];
    service::check_timeouts_and_malformed_replies(machine(&p), connect, true);
}

#[test]
fn a_service_that_does_not_read_times_out() {
    service::check_a_service_that_does_not_read(machine(&[("TimeoutMs", 50)]), connect);
}

/// The redirector as a minifilter at 135000 ("FSFilter Virtualization"), under the gate.
fn install_redirector(m: &mut Machine) {
    let mut spec = ServiceSpec::new(reparse::REDIRECTOR, redirector::ENTRY, "minifilter");
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Virtualization".into());
    spec.depends_on = vec!["FltMgr".into()];
    let _ = m.install_filter_manager();
    spec.instances = Some(InstancesSpec {
        default_instance: "Redirector Instance".into(),
        instances: vec![InstanceSpec {
            name: "Redirector Instance".into(),
            altitude: "135000".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    });
    m.install(spec);
}

#[test]
fn a_redirected_open_is_asked_once_by_its_reparsed_create() {
    let m = service::machine_with_redirector(
        install,
        gate_minifilter::ENTRY,
        "minifilter",
        install_redirector,
    );
    service::check_a_redirected_open_is_asked_once(m, connect);
}
