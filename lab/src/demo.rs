//! The built-in demonstration (`fsfilter` with no arguments): `lab/scenarios/demo.toml`, then the
//! late probe compared under both models.

use crate::{compare, html, run, scenario, text};

/// The demonstration scenario's text.
pub const SCENARIO: &str = include_str!("../scenarios/demo.toml");

/// The driver the demonstration compares under both models.
pub const COMPARED: &str = "ProbeLate";

/// What the demonstration printed.
#[derive(Debug)]
pub struct Demo {
    /// The text report, then the comparison.
    pub text: String,
    /// The HTML report of the scenario.
    pub html: String,
    /// True when a run had verifier findings.
    pub findings: bool,
}

/// Runs the demonstration.
pub fn run() -> Demo {
    let s = match scenario::parse("demo.toml", SCENARIO) {
        Ok(s) => s,
        Err(e) => {
            return Demo {
                text: format!("the built-in scenario is invalid: {e}\n"),
                html: String::new(),
                findings: true,
            };
        }
    };
    let r = run::run(&s);
    let mut out = text::report(&s, &r);
    out.push('\n');
    let mut findings = r.has_findings();
    match compare::compare(&s, COMPARED) {
        Ok(c) => {
            out.push_str(&c.text);
            findings |= c.findings;
        }
        Err(e) => out.push_str(&format!("comparison failed: {e}\n")),
    }
    Demo { text: out, html: html::report(&s, &r), findings }
}
