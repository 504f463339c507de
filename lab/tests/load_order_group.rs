//! `group = ""` in a driver block: CreateService's `lpLoadOrderGroup` documents that an empty
//! string, like NULL, puts the service in no group, and a service in no group starts after every
//! grouped one of its start type. The lab keeps that meaning (README, scenario extensions): an
//! empty group is "no group", not the sample's default group, which leaving `group` out gives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::run;
use fsfilter_lab::scenario::{Model, parse};
use fsfilter_sim::EventKind;

/// A boot-start legacy `A` (installed first, with `a_group`) and `B` in the sample's group.
fn scenario(a_group: &str) -> String {
    format!(
        "name = \"groups\"\nseed = 1\n\n[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\n\
         [[driver]]\nname = \"A\"\nsample = \"passthrough\"\nmodel = \"legacy\"\nstart = \"boot\"\n\
         {a_group}\n\
         [[driver]]\nname = \"B\"\nsample = \"passthrough\"\nmodel = \"legacy\"\nstart = \"boot\"\n"
    )
}

/// The drivers `A` and `B` in the order they were loaded.
fn load_order(text: &str) -> Vec<String> {
    let r = run::run(&parse("groups.toml", text).expect("parses"));
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Load { driver, .. } if driver == "A" || driver == "B" => {
                Some(driver.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_empty_group_is_no_group_and_loads_after_the_grouped_drivers() {
    // Without `group`, A is in the sample's group with B and loads first (installation order).
    assert_eq!(load_order(&scenario("")), ["A", "B"]);
    // `group = ""`: no group, so after B (CreateService: an empty string is no group).
    let text = scenario("group = \"\"\n");
    assert_eq!(parse("groups.toml", &text).unwrap().drivers[0].group.as_deref(), Some(""));
    assert_eq!(load_order(&text), ["B", "A"]);
    // As a minifilter (compare), a driver in no group gets the middle of 360000-389999, the
    // default range, not its sample's group's middle (324999 for the scanner, FSFilter
    // Anti-Virus).
    let scanner = |text: String| {
        let text = text.replacen("sample = \"passthrough\"", "sample = \"scanner\"", 1);
        let s = parse("groups.toml", &text).unwrap().with_model("A", Model::Minifilter);
        s.drivers[0].altitude.clone().unwrap()
    };
    assert_eq!(scanner(scenario("")), "324999");
    assert_eq!(scanner(scenario("group = \"\"\n")), "374999");
}
