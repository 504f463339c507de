//! The text report's Filters table says where each driver ended: its load and unload events in
//! order. Before a fix of December 4 a driver stopped and loaded again read "unloaded", whatever
//! the JSON and the report's own end stack said, and a second load of a loaded driver read
//! "failed".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::{run, scenario, text};

/// The Loaded column of `driver`'s row in the report's Filters table.
fn loaded(report: &str, driver: &str) -> String {
    let row = report
        .lines()
        .skip_while(|l| !l.starts_with("Filters"))
        .find(|l| l.split_whitespace().next() == Some(driver))
        .unwrap_or_else(|| panic!("no row for {driver} in:\n{report}"));
    // The columns are fixed-width: name 20, model 10, instances 9, altitude 12, frame 8.
    row.get(2 + 21 + 11 + 10 + 13 + 10..).unwrap_or_default().trim().to_owned()
}

fn report_of(steps: &str) -> String {
    let text = format!(
        "name = \"reload\"\nseed = 1\n\n[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\n\
         [[driver]]\nname = \"A\"\nsample = \"passthrough\"\nmodel = \"minifilter\"\n\
         altitude = \"370000\"\n\n\
         [[driver]]\nname = \"L\"\nsample = \"passthrough\"\nmodel = \"legacy\"\n\
         group = \"FSFilter Activity Monitor\"\n\n{steps}"
    );
    let s = scenario::parse("reload.toml", &text).expect("parses");
    let r = run::run(&s);
    text::report(&s, &r)
}

#[test]
fn a_driver_stopped_and_loaded_again_is_loaded() {
    let steps = ["load", "stop", "load"]
        .iter()
        .flat_map(|a| {
            ["A", "L"].map(|d| format!("[[step]]\naction = \"{a}\"\ndriver = \"{d}\"\n\n"))
        })
        .collect::<String>();
    let report = report_of(&steps);
    assert_eq!(loaded(&report, "A"), "yes", "{report}");
    assert_eq!(loaded(&report, "L"), "yes", "{report}");
}

#[test]
fn a_stopped_driver_is_unloaded_and_a_second_load_does_not_fail_it() {
    let stopped = report_of(
        "[[step]]\naction = \"load\"\ndriver = \"A\"\n\n[[step]]\naction = \"stop\"\ndriver = \"A\"\n",
    );
    assert_eq!(loaded(&stopped, "A"), "unloaded", "{stopped}");
    assert_eq!(loaded(&stopped, "L"), "not loaded", "{stopped}");
    let twice = report_of(
        "[[step]]\naction = \"load\"\ndriver = \"A\"\n\n[[step]]\naction = \"load\"\ndriver = \"A\"\n",
    );
    assert_eq!(loaded(&twice, "A"), "yes", "{twice}");
}

#[test]
fn a_stop_that_stays_pending_is_shown_until_the_unload_runs() {
    // A legacy filter's stop stays pending while another driver is attached above its devices
    // (facts.md §1.9): "stop pending", then "unloaded" once that driver goes and the unload runs.
    let text = |stop_upper: bool| {
        format!(
            "name = \"pending\"\nseed = 1\n\n[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\n\
             [[driver]]\nname = \"Old\"\nsample = \"probe\"\nmodel = \"legacy\"\nstart = \"boot\"\n\n\
             [[driver]]\nname = \"New\"\nsample = \"passthrough\"\nmodel = \"legacy\"\n\
             start = \"demand\"\n\n\
             [[step]]\naction = \"load\"\ndriver = \"New\"\n\n\
             [[step]]\naction = \"stop\"\ndriver = \"Old\"\n\n{}",
            if stop_upper { "[[step]]\naction = \"stop\"\ndriver = \"New\"\n" } else { "" }
        )
    };
    let report = |t: String| {
        let s = scenario::parse("pending.toml", &t).expect("parses");
        text::report(&s, &run::run(&s))
    };
    let pending = report(text(false));
    assert_eq!(loaded(&pending, "Old"), "stop pending", "{pending}");
    let done = report(text(true));
    assert_eq!(loaded(&done, "Old"), "unloaded", "{done}");
    assert_eq!(loaded(&done, "New"), "unloaded", "{done}");
}

#[test]
fn the_html_report_keeps_a_status_without_a_name_as_its_number() {
    // A probe rule completes a read with a status the WDK has no name for: the text report and
    // the JSON give its number; the HTML report's step table gave "?".
    let text = "name = \"odd\"\n\n[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\n\
                [[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"minifilter\"\n\
                altitude = \"370000\"\nstart = \"boot\"\n[driver.parameters]\n\
                Rules = \"complete:0xC0DE1234 read\"\n\n\
                [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"read\"\npath = \"x\"\n";
    let s = scenario::parse("odd.toml", text).expect("parses");
    let r = run::run(&s);
    assert!(text::report(&s, &r).contains("[0] io read C:\\x"), "the step ran");
    let page = fsfilter_lab::html::report(&s, &r);
    assert!(page.contains("<td>io read C:\\x</td><td>0xC0DE1234</td>"), "{page}");
}

#[test]
fn a_driver_named_like_a_trace_lane_of_the_kernel_gets_a_lane_of_its_own() {
    // The Chrome trace has a lane for requests, one for the kernel and one per driver; a driver
    // named `kernel` or `requests` shared the kernel's or the requests' lane.
    let text = "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\n\
                [[driver]]\nname = \"kernel\"\nsample = \"passthrough\"\nmodel = \"minifilter\"\n\
                altitude = \"370000\"\nstart = \"boot\"\n\n\
                [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"x\"\n";
    let s = scenario::parse("lanes.toml", text).expect("parses");
    let r = run::run(&s);
    let t: serde_json::Value =
        serde_json::from_str(&fsfilter_lab::trace::chrome(&r)).expect("valid JSON");
    let events = t["traceEvents"].as_array().expect("events");
    let tid_of = |cat: &str| {
        events.iter().find(|e| e["cat"] == cat).map(|e| e["tid"].clone()).expect("an event")
    };
    assert_ne!(tid_of("callback"), tid_of("kernel"), "the driver's callbacks have their own lane");
    let lanes: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["name"] == "thread_name").map(|e| &e["args"]["name"]).collect();
    assert_eq!(lanes.len(), 3, "requests, kernel and the driver: {lanes:?}");
}
