//! The PnP manager's removal of a volume through the minifilter backend, with the probe as a
//! minifilter with a default instance: the shared checks of both models
//! (`sim/testing/removal.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/removal.rs"]
mod removal;

use fsfilter_sim::{Machine, StartType};

fn install(m: &mut Machine) {
    common::install_probe(m, removal::PROBE, StartType::Boot, "370000", &[]);
}

removal::shared_tests!(install, true);
