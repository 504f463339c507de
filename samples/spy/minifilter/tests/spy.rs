//! The spy minifilter end to end on the simulated Filter Manager (`../testing/reader.rs`): a
//! reader on the communication port `\FsFilterSpy` (`FilterConnectCommunicationPort`,
//! `FilterSendMessage`) gets a record of every operation the spy saw.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

#[path = "../../testing/reader.rs"]
mod reader;

use fsfilter::Status;
use fsfilter_sim::{InstanceLayout, InstanceSpec, InstancesSpec, Machine, PortHandle, ServiceSpec};
use reader::Reader;

/// `FilterConnectCommunicationPort` on `\<name>`, `FilterSendMessage`, `CloseHandle`.
struct Port;

impl Reader for Port {
    type Handle = PortHandle;

    fn connect(&self, m: &mut Machine, name: &str, context: &[u8]) -> Result<PortHandle, Status> {
        m.connect_communication_port(&format!("\\{name}"), context)
    }

    fn send(
        &self,
        m: &mut Machine,
        h: PortHandle,
        input: &[u8],
        capacity: usize,
    ) -> Result<Vec<u8>, Status> {
        m.send_message(h, input, capacity)
    }

    fn close(&self, m: &mut Machine, h: PortHandle) {
        assert_eq!(m.close_port(h), Status::SUCCESS);
    }
}

fn install(m: &mut Machine, mut spec: ServiceSpec) {
    spec.depends_on = vec!["FltMgr".into()];
    spec.instances = Some(InstancesSpec {
        default_instance: "Spy Instance".into(),
        instances: vec![InstanceSpec {
            name: "Spy Instance".into(),
            altitude: "370520".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    });
    m.install(spec);
}

fn machine() -> Machine {
    reader::machine(install, spy_minifilter::ENTRY, "minifilter")
}

#[test]
fn the_reader_gets_a_record_of_every_operation() {
    reader::check_log_matches_the_operations(machine(), &Port);
}

#[test]
fn replies_hold_whole_records_and_bad_requests_fail() {
    reader::check_replies(machine(), &Port);
}

#[test]
fn the_log_holds_more_than_32_records() {
    reader::check_a_long_log(machine(), &Port);
}

#[test]
fn records_carry_the_requesting_process() {
    reader::check_records_carry_the_requesting_process(machine(), &Port);
}
