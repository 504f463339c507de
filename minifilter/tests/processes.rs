//! Processes through the minifilter backend (`sim/testing/processes.rs`, rule 26).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/processes.rs"]
mod processes;

use fsfilter::Status;
use fsfilter_sim::{Machine, MessageServer};

mod watcher {
    fsfilter_minifilter::driver!(super::processes::Watcher);
}

mod blind {
    fsfilter_minifilter::driver!(super::processes::Blind);
}

mod lone {
    fsfilter_minifilter::driver!(super::processes::Lone);
}

/// `FilterConnectCommunicationPort("\\FsfWatch")`.
fn connect(m: &mut Machine) -> Result<MessageServer, Status> {
    MessageServer::connect_port(m, processes::CHANNEL, b"")
}

#[test]
fn creates_reads_and_writes_have_the_requesting_process_in_both_models() {
    processes::check_irps(common::install_minifilter, watcher::ENTRY);
}

#[test]
fn fast_io_has_the_requesting_process_in_both_models() {
    processes::check_fast_io(common::install_minifilter, watcher::ENTRY);
}

#[test]
fn the_page_writers_are_the_system_process_in_both_models() {
    processes::check_paging(common::install_minifilter, watcher::ENTRY);
}

#[test]
fn a_post_in_another_processs_thread_has_the_requesting_process_in_both_models() {
    processes::check_post_in_another_thread(common::install_minifilter, watcher::ENTRY);
}

#[test]
fn a_client_has_the_process_that_connected_it_in_both_models() {
    processes::check_client_process(common::install_minifilter, watcher::ENTRY, connect);
}

#[test]
fn undeclared_filters_and_filters_without_a_channel_get_none_in_both_models() {
    processes::check_undeclared_and_no_channel(
        common::install_minifilter,
        blind::ENTRY,
        lone::ENTRY,
        connect,
    );
}
