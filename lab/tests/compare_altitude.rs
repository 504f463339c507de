//! `fsfilter compare` runs a legacy driver as a minifilter at an altitude of its own: the middle
//! of its load-order group's range (the sample's group when the scenario names none), or the
//! nearest free altitude to it. Before a fix of December 4 it took that middle (or 370000 without
//! a group) whatever the other drivers held, so the minifilter run's driver failed to load next
//! to a minifilter at the same altitude, and the comparison reported the failure as a model
//! difference.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::run;
use fsfilter_lab::scenario::{Model, parse};
use fsfilter_sim::EventKind;

fn scenario(legacy_group: &str, minifilter_altitude: &str) -> String {
    format!(
        "name = \"clash\"\nseed = 1\n\n[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\n\
         [[driver]]\nname = \"M\"\nsample = \"passthrough\"\nmodel = \"minifilter\"\n\
         altitude = \"{minifilter_altitude}\"\nstart = \"boot\"\n\n\
         [[driver]]\nname = \"L\"\nsample = \"passthrough\"\nmodel = \"legacy\"\nstart = \"boot\"\n\
         {legacy_group}\n\
         [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"a.txt\"\n"
    )
}

/// The altitude `L` gets as a minifilter, the status of its load in that run, and whether its
/// logic saw the create (it has an instance on C:).
fn as_minifilter(text: &str) -> (String, fsfilter::Status, bool) {
    let s = parse("clash.toml", text).expect("parses").with_model("L", Model::Minifilter);
    let altitude = s.drivers.iter().find(|d| d.name == "L").unwrap().altitude.clone().unwrap();
    let r = run::run(&s);
    let status = r
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Load { driver, status, .. } if driver == "L" => Some(*status),
            _ => None,
        })
        .expect("L was loaded");
    let saw = r
        .events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Callback { driver, .. } if driver.as_str() == "L"));
    (altitude, status, saw)
}

#[test]
fn a_legacy_driver_compared_as_a_minifilter_takes_a_free_altitude() {
    // The group's middle (374999 for FSFilter Activity Monitor) is held: the next one down.
    let (altitude, status, saw) =
        as_minifilter(&scenario("group = \"FSFilter Activity Monitor\"\n", "374999"));
    assert_eq!((altitude.as_str(), status, saw), ("374998", fsfilter::Status::SUCCESS, true));
    // Without a group in the scenario, the sample's (the passthrough's is FSFilter Activity
    // Monitor), not 370000, which M holds here.
    let (altitude, status, saw) = as_minifilter(&scenario("", "370000"));
    assert_eq!((altitude.as_str(), status, saw), ("374999", fsfilter::Status::SUCCESS, true));
}
