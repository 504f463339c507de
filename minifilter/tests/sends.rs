//! Messages to user mode through the minifilter backend (`sim/testing/sends.rs`, rule 25): a
//! communication port, `FltSendMessage` and `FilterGetMessage` / `FilterReplyMessage`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/sends.rs"]
mod sends;

use fsfilter::Status;
use fsfilter_sim::{Machine, MessageServer};

mod asker {
    fsfilter_minifilter::driver!(super::sends::Asker);
}

mod quiet {
    fsfilter_minifilter::driver!(super::sends::Quiet);
}

mod mute {
    fsfilter_minifilter::driver!(super::sends::Mute);
}

/// `FilterConnectCommunicationPort("\\FsfAsk")`.
fn connect(m: &mut Machine) -> Result<MessageServer, Status> {
    MessageServer::connect_port(m, sends::CHANNEL, b"")
}

#[test]
fn a_filter_asks_its_client_from_post_create_and_reads_the_reply_in_both_models() {
    sends::check_ask_and_reply(common::install_minifilter, asker::ENTRY, connect);
}

#[test]
fn sends_copy_through_the_backends_pool_in_both_models() {
    sends::check_sends_copy_through_pool(common::install_minifilter, asker::ENTRY, connect);
}

#[test]
fn one_way_messages_and_queued_messages_in_both_models() {
    sends::check_one_way_and_queued(common::install_minifilter, asker::ENTRY, connect);
}

#[test]
fn timeouts_before_delivery_and_before_the_reply_in_both_models() {
    sends::check_timeouts(common::install_minifilter, asker::ENTRY, connect);
}

#[test]
fn a_client_closing_while_a_sender_waits_disconnects_it_in_both_models() {
    sends::check_disconnect_while_waiting(common::install_minifilter, asker::ENTRY, connect);
}

#[test]
fn two_senders_wait_at_once_and_each_gets_its_reply_in_both_models() {
    sends::check_two_senders(common::install_minifilter, asker::ENTRY, connect);
}

#[test]
fn wrong_sizes_and_the_irql_are_refused_in_both_models() {
    sends::check_sizes_and_irql(common::install_minifilter, asker::ENTRY, connect);
}

#[test]
fn cancelled_gets_complete_with_status_cancelled_in_both_models() {
    sends::check_cancelled_gets(common::install_minifilter, asker::ENTRY, connect);
}

#[test]
fn a_filter_that_does_not_declare_sending_gets_not_supported_in_both_models() {
    sends::check_not_declared(common::install_minifilter, quiet::ENTRY, mute::ENTRY, connect);
}

#[test]
fn a_get_refused_at_once_ends_there_in_both_models() {
    sends::check_a_get_refused_at_once_ends_there(
        common::install_minifilter,
        asker::ENTRY,
        connect,
    );
}
