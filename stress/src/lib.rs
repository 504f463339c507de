//! fsfilter-stress: random machines and timelines for issue 10's randomized stress.
//!
//! A [`plan::Plan`] (volumes of every kind, the samples under both models at random altitudes and
//! start types, a random timeline of loads, unloads, stops, mounts, dismounts and PnP removals,
//! manual attaches and detaches and I/O in every mode) renders to scenario TOML, the lab's parser reads it back,
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

/// What a clean case did, for the totals the stress test prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Steps run (the random ones and the tail).
    pub steps: u64,
    /// Events logged.
    pub events: u64,
    /// Pre and post callbacks.
    pub callbacks: u64,
    /// User requests.
    pub requests: u64,
    /// Steps that failed (a refused load, an open of a missing file, ...).
    pub failed_steps: u64,
}

impl Stats {
    /// Adds another case's numbers.
    pub fn add(&mut self, other: Stats) {
        self.steps += other.steps;
        self.events += other.events;
        self.callbacks += other.callbacks;
        self.requests += other.requests;
        self.failed_steps += other.failed_steps;
    }

    fn of(run: &Run) -> Stats {
        use fsfilter_sim::{Callback, EventKind};
        let count = |f: &dyn Fn(&EventKind) -> bool| {
            run.events.iter().filter(|e| f(&e.kind)).count() as u64
        };
        Stats {
            steps: run.steps.len() as u64,
            events: run.events.len() as u64,
            callbacks: count(&|k| {
                matches!(
                    k,
                    EventKind::Callback {
                        callback: Callback::Pre { .. } | Callback::Post { .. },
                        ..
                    }
                )
            }),
            requests: count(&|k| matches!(k, EventKind::IoStart { .. })),
            failed_steps: run.steps.iter().filter(|s| s.status.is_error()).count() as u64,
        }
    }
}

/// What one case found.
#[derive(Debug)]
pub enum Outcome {
    /// The scenario ran and every invariant held.
    Clean(Stats),
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
    let (run, _, violations) = run_checked(&scenario);
    if violations.is_empty() {
        Outcome::Clean(Stats::of(&run))
    } else {
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        Outcome::Failed(list.join("\n"))
    }
}
