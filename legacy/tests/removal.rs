//! The PnP manager's removal of a volume through the legacy backend, with the probe attached to
//! the volumes' stacks: the shared checks of both models (`sim/testing/removal.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/removal.rs"]
mod removal;

use fsfilter_sim::{Machine, StartType};

fn install(m: &mut Machine) {
    common::install_probe(m, removal::PROBE, StartType::Boot, &[]);
}

removal::shared_tests!(install, false);
