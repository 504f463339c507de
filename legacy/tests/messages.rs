//! User-mode messages through the legacy backend (`sim/testing/messages.rs`, rule 23): the
//! control device, opened through its link `\DosDevices\<name>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/messages.rs"]
mod messages;

use fsfilter::{IOCTL_FSFILTER_MESSAGE, Status};
use fsfilter_sim::{DeviceHandle, Machine, StopResult, full_ea};
use messages::{CHANNEL, Client, ECHO};

mod echo {
    fsfilter_legacy::driver!(super::messages::Echo);
}

mod silent {
    fsfilter_legacy::driver!(super::messages::Silent);
}

/// `CreateFile("\\.\<name>")` (the context, if any, as an extended attribute),
/// `DeviceIoControl(IOCTL_FSFILTER_MESSAGE)`, `CloseHandle`.
struct Device;

impl Client for Device {
    type Handle = DeviceHandle;

    fn connect(&self, m: &mut Machine, name: &str, context: &[u8]) -> Result<DeviceHandle, Status> {
        let ea = (!context.is_empty()).then(|| full_ea("FsFilterContext", context));
        m.open_device(&format!(r"\??\{name}"), ea.as_deref())
    }

    fn send(
        &self,
        m: &mut Machine,
        h: DeviceHandle,
        input: &[u8],
        capacity: usize,
    ) -> Result<Vec<u8>, Status> {
        let r = m.device_control(h, IOCTL_FSFILTER_MESSAGE, input, capacity);
        if r.status.is_success() { Ok(r.data) } else { Err(r.status) }
    }

    fn close(&self, m: &mut Machine, h: DeviceHandle) {
        assert_eq!(m.close_device(h), Status::SUCCESS);
    }
}

#[test]
fn a_client_connects_exchanges_messages_and_disconnects_in_both_models() {
    messages::check_exchange(common::install_legacy, echo::ENTRY, &Device);
}

#[test]
fn max_clients_and_refused_connections_are_the_same_in_both_models() {
    messages::check_clients(common::install_legacy, echo::ENTRY, &Device);
}

#[test]
fn a_second_driver_with_the_same_channel_name_fails_to_load_cleanly_in_both_models() {
    messages::check_name_taken(common::install_legacy, echo::ENTRY, &Device);
}

#[test]
fn a_filter_without_a_channel_has_nothing_to_connect_to_in_both_models() {
    messages::check_no_channel(common::install_legacy, silent::ENTRY, &Device);
}

/// An open handle to the control device keeps the I/O manager from calling `DriverUnload` (WRK
/// loadunld.c `IopCheckUnloadDriver`): the stop is pending, messages still work, and the close
/// disconnects the client, after which the unload runs and the link is gone.
#[test]
fn an_unload_waits_for_the_clients_to_close_in_the_legacy_model() {
    let mut m = messages::machine(common::install_legacy, ECHO, echo::ENTRY);
    let h = Device.connect(&mut m, CHANNEL, b"stay").expect("connects");
    assert_eq!(m.stop(ECHO), StopResult::Pending);
    assert_eq!(Device.send(&mut m, h, b"hi", 8), Ok(b"1:hi".to_vec()));
    assert_eq!(messages::take(), ["connect 1 stay", "message 1 hi (8 reply bytes)"]);
    Device.close(&mut m, h);
    assert_eq!(messages::take(), ["disconnect 1", "unload"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(Device.connect(&mut m, CHANNEL, b"late").err(), Some(Status::OBJECT_NAME_NOT_FOUND));
}

/// Other device controls on the control device are refused as before the channel.
#[test]
fn other_control_codes_are_invalid_device_requests_in_the_legacy_model() {
    let mut m = messages::machine(common::install_legacy, ECHO, echo::ENTRY);
    let h = Device.connect(&mut m, CHANNEL, b"").expect("connects");
    let r = m.device_control(h, fsfilter::ctl_code(0x22, 0x801, 0, 0), b"x", 8);
    assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST);
    Device.close(&mut m, h);
    assert_eq!(messages::take(), ["connect 1 ", "disconnect 1"]);
    assert_eq!(m.stop(ECHO), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
