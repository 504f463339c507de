//! Messages to user mode through the legacy backend (`sim/testing/sends.rs`, rule 25): the
//! inverted call on the control device, opened overlapped through its link `\DosDevices\<name>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/sends.rs"]
mod sends;

use fsfilter::Status;
use fsfilter_sim::{Machine, MessageServer};

mod asker {
    fsfilter_legacy::driver!(super::sends::Asker);
}

mod quiet {
    fsfilter_legacy::driver!(super::sends::Quiet);
}

mod mute {
    fsfilter_legacy::driver!(super::sends::Mute);
}

/// `CreateFile("\\.\FsfAsk", FILE_FLAG_OVERLAPPED)`.
fn connect(m: &mut Machine) -> Result<MessageServer, Status> {
    MessageServer::connect_device(m, sends::CHANNEL, b"")
}

#[test]
fn a_filter_asks_its_client_from_post_create_and_reads_the_reply_in_both_models() {
    sends::check_ask_and_reply(common::install_legacy, asker::ENTRY, connect);
}

#[test]
fn sends_copy_through_the_backends_pool_in_both_models() {
    sends::check_sends_copy_through_pool(common::install_legacy, asker::ENTRY, connect);
}

#[test]
fn one_way_messages_and_queued_messages_in_both_models() {
    sends::check_one_way_and_queued(common::install_legacy, asker::ENTRY, connect);
}

#[test]
fn timeouts_before_delivery_and_before_the_reply_in_both_models() {
    sends::check_timeouts(common::install_legacy, asker::ENTRY, connect);
}

#[test]
fn a_client_closing_while_a_sender_waits_disconnects_it_in_both_models() {
    sends::check_disconnect_while_waiting(common::install_legacy, asker::ENTRY, connect);
}

#[test]
fn two_senders_wait_at_once_and_each_gets_its_reply_in_both_models() {
    sends::check_two_senders(common::install_legacy, asker::ENTRY, connect);
}

#[test]
fn wrong_sizes_and_the_irql_are_refused_in_both_models() {
    sends::check_sizes_and_irql(common::install_legacy, asker::ENTRY, connect);
}

#[test]
fn cancelled_gets_complete_with_status_cancelled_in_both_models() {
    sends::check_cancelled_gets(common::install_legacy, asker::ENTRY, connect);
}

#[test]
fn a_filter_that_does_not_declare_sending_gets_not_supported_in_both_models() {
    sends::check_not_declared(common::install_legacy, quiet::ENTRY, mute::ENTRY, connect);
}

/// A get or a reply on the control device of a channel that does not send is refused like any
/// other unknown code (rule 25: the filter carries none of that code).
#[test]
fn gets_and_replies_are_invalid_device_requests_without_sending_in_the_legacy_model() {
    let (mut m, _) = sends::machine(common::install_legacy, sends::QUIET, quiet::ENTRY);
    let h = m.open_device(&format!(r"\??\{}", sends::CHANNEL), None).expect("connects");
    for code in [fsfilter::IOCTL_FSFILTER_GET_MESSAGE, fsfilter::IOCTL_FSFILTER_REPLY_MESSAGE] {
        let r = m.device_control(h, code, &[0u8; 16], 64);
        assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST);
    }
    assert_eq!(m.close_device(h), Status::SUCCESS);
    sends::finish(&mut m, sends::QUIET, None);
}

/// A get or a reply from a file object that is not a connected client (a kernel caller's
/// request without a file object is covered by the messages tests) is refused; a reply
/// shorter than its header is `STATUS_INVALID_PARAMETER`.
#[test]
fn malformed_replies_are_refused_in_the_legacy_model() {
    let (mut m, _) = sends::machine(common::install_legacy, sends::ASKER, asker::ENTRY);
    let h = m.open_device(&format!(r"\??\{}", sends::CHANNEL), None).expect("connects");
    let r = m.device_control(h, fsfilter::IOCTL_FSFILTER_REPLY_MESSAGE, &[0u8; 15], 0);
    assert_eq!(r.status, Status::INVALID_PARAMETER);
    let r = m.device_control(h, fsfilter::IOCTL_FSFILTER_REPLY_MESSAGE, &[0u8; 16], 0);
    assert_eq!(r.status, Status::FLT_NO_WAITER_FOR_REPLY);
    assert_eq!(m.close_device(h), Status::SUCCESS);
    sends::finish(&mut m, sends::ASKER, None);
}

#[test]
fn a_get_refused_at_once_ends_there_in_both_models() {
    sends::check_a_get_refused_at_once_ends_there(common::install_legacy, asker::ENTRY, connect);
}
