//! User-mode messages through the minifilter backend (`sim/testing/messages.rs`, rule 23): a
//! Filter Manager communication port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/messages.rs"]
mod messages;

use fsfilter::Status;
use fsfilter_sim::{Caller, Machine, PortHandle, StopResult};
use messages::{CHANNEL, Client, ECHO};

mod echo {
    fsfilter_minifilter::driver!(super::messages::Echo);
}

mod silent {
    fsfilter_minifilter::driver!(super::messages::Silent);
}

/// `FilterConnectCommunicationPort` on `\<name>`, `FilterSendMessage`, `CloseHandle`.
struct Port;

impl Client for Port {
    type Handle = PortHandle;

    fn connect_as(
        &self,
        m: &mut Machine,
        caller: Caller,
        name: &str,
        context: &[u8],
    ) -> Result<PortHandle, Status> {
        m.connect_communication_port_as(caller, &format!("\\{name}"), context)
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

#[test]
fn a_client_connects_exchanges_messages_and_disconnects_in_both_models() {
    messages::check_exchange(common::install_minifilter, echo::ENTRY, &Port);
}

#[test]
fn max_clients_and_refused_connections_are_the_same_in_both_models() {
    messages::check_clients(common::install_minifilter, echo::ENTRY, &Port);
}

#[test]
fn a_standard_user_is_refused_and_an_administrator_connects_in_both_models() {
    messages::check_standard_user_refused(common::install_minifilter, echo::ENTRY, &Port);
}

#[test]
fn a_second_driver_with_the_same_channel_name_fails_to_load_cleanly_in_both_models() {
    messages::check_name_taken(common::install_minifilter, echo::ENTRY, &Port);
}

#[test]
fn a_filter_without_a_channel_has_nothing_to_connect_to_in_both_models() {
    messages::check_no_channel(common::install_minifilter, silent::ENTRY, &Port);
}

/// The Filter Manager ends the connections left when the filter unregisters: the filter's
/// unload callback runs first, then `client_disconnect` (DisconnectNotifyCallback) for each, and
/// the client's later messages fail (Learn, FltCloseClientPort: DisconnectNotifyCallback runs
/// "when the minifilter driver is about to be unloaded").
#[test]
fn an_unload_disconnects_the_clients_left_in_the_minifilter_model() {
    let mut m = messages::machine(common::install_minifilter, ECHO, echo::ENTRY);
    let h = Port.connect(&mut m, CHANNEL, b"stay").expect("connects");
    assert_eq!(Port.send(&mut m, h, b"hi", 8), Ok(b"1:hi".to_vec()));
    assert_eq!(m.stop(ECHO), StopResult::Unloaded);
    assert_eq!(
        messages::take(),
        ["connect 1 stay", "message 1 hi (8 reply bytes)", "unload", "disconnect 1"]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert!(Port.send(&mut m, h, b"late", 8).is_err(), "the connection is gone");
    assert!(messages::take().is_empty());
    Port.close(&mut m, h);
    assert!(messages::take().is_empty(), "no second disconnect");
}
