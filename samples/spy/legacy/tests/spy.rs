//! The spy as a legacy filter end to end (`../testing/reader.rs`): a reader opens
//! `\??\FsFilterSpy`, the link to the spy's control device (`CreateFile`, the connection
//! context in an extended attribute), and asks with `DeviceIoControl(IOCTL_FSFILTER_MESSAGE)`.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

#[path = "../../testing/reader.rs"]
mod reader;

use fsfilter::Status;
use fsfilter_sim::{DeviceHandle, Machine, ServiceSpec};
use reader::Reader;

/// `CreateFile(\\.\<name>)`, `DeviceIoControl`, `CloseHandle`.
struct ControlDevice;

impl Reader for ControlDevice {
    type Handle = DeviceHandle;

    fn connect(&self, m: &mut Machine, name: &str, context: &[u8]) -> Result<DeviceHandle, Status> {
        let ea = (!context.is_empty()).then(|| fsfilter_sim::full_ea("Context", context));
        m.open_device(&format!("\\??\\{name}"), ea.as_deref())
    }

    fn send(
        &self,
        m: &mut Machine,
        h: DeviceHandle,
        input: &[u8],
        capacity: usize,
    ) -> Result<Vec<u8>, Status> {
        let r = m.device_control(h, fsfilter::IOCTL_FSFILTER_MESSAGE, input, capacity);
        if r.status.is_success() { Ok(r.data) } else { Err(r.status) }
    }

    fn close(&self, m: &mut Machine, h: DeviceHandle) {
        assert_eq!(m.close_device(h), Status::SUCCESS);
    }
}

fn install(m: &mut Machine, spec: ServiceSpec) {
    m.install(spec);
}

fn machine() -> Machine {
    reader::machine(install, spy_legacy::ENTRY, "legacy")
}

#[test]
fn the_reader_gets_a_record_of_every_operation() {
    reader::check_log_matches_the_operations(machine(), &ControlDevice);
}

#[test]
fn replies_hold_whole_records_and_bad_requests_fail() {
    reader::check_replies(machine(), &ControlDevice);
}

#[test]
fn the_log_holds_more_than_32_records() {
    reader::check_a_long_log(machine(), &ControlDevice);
}

#[test]
fn records_carry_the_requesting_process() {
    reader::check_records_carry_the_requesting_process(machine(), &ControlDevice);
}
