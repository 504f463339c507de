//! fsfilter-stress: random machines and timelines for issue 10's randomized stress.
//!
//! A [`plan::Plan`] (volumes of every kind, the samples under both models at random altitudes and
//! start types, a random timeline of loads, unloads, stops, mounts, dismounts, manual attaches
//! and detaches and I/O in every mode) renders to scenario TOML, the lab's parser reads it back,
//! the lab runs it in the simulator, and [`check`] checks the invariants on the run's events,
//! its per-step snapshots and the machine at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "host-side test crate: a broken invariant should stop the test"
)]
#![forbid(unsafe_code)]

pub mod check;
pub mod plan;

use fsfilter_lab::run::{Run, run_inspect};
use fsfilter_lab::scenario::Scenario;

pub use check::{EndState, Violation};
pub use plan::Plan;

/// Runs a scenario and checks every invariant.
pub fn run_checked(scenario: &Scenario) -> (Run, EndState, Vec<Violation>) {
    let (run, end) = run_inspect(scenario, |m| check::end_state(m, scenario));
    let violations = check::check(scenario, &run, &end);
    (run, end, violations)
}

/// What one case found.
#[derive(Debug)]
pub enum Outcome {
    /// The scenario ran and every invariant held.
    Clean,
    /// The plan gave two minifilters one altitude and the parser refused it, as documented.
    Refused,
    /// Something is wrong: the message says what, with the scenario's TOML.
    Failed(String),
}

/// Renders, parses, runs and checks one plan.
pub fn run_plan(plan: &Plan) -> Outcome {
    let text = plan.to_toml();
    let parsed = fsfilter_lab::scenario::parse("stress.toml", &text);
    if plan.has_collision() {
        return match parsed {
            Err(e) if e.message.contains("two instances cannot share an altitude") => {
                Outcome::Refused
            }
            Err(e) => Outcome::Failed(format!("refused for another reason: {e}")),
            Ok(_) => Outcome::Failed("two minifilters at one altitude were accepted".into()),
        };
    }
    let scenario = match parsed {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("the generated scenario does not parse: {e}")),
    };
    let (_, _, violations) = run_checked(&scenario);
    if violations.is_empty() {
        Outcome::Clean
    } else {
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        Outcome::Failed(list.join("\n"))
    }
}
