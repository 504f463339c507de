//! Mounts a file system pends, through the minifilter backend with the probe sample
//! (`sim/testing/pended_mount.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/pended_mount.rs"]
mod pended_mount;

use common::*;
use fsfilter_sim::StartType;
use pended_mount::Backend;

const MINIFILTER: Backend = Backend {
    machine,
    // ProbeA above ProbeB, as the other backend's load order puts them.
    install: |m, name| {
        let altitude = if name == "ProbeA" { "370000" } else { "360000" };
        install_probe(m, name, StartType::Boot, altitude, &[]);
    },
    stack: instances_top_down,
};

#[test]
fn an_instance_is_set_up_on_a_volume_whose_mount_was_pended() {
    pended_mount::check_mount_step(&MINIFILTER);
}

#[test]
fn a_pended_mount_at_boot_and_again_after_a_dismount() {
    pended_mount::check_boot_and_remount(&MINIFILTER);
}
