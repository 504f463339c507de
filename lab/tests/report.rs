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

/// The page `html::report` writes for the scenario in `lab/scenarios/<name>.toml`.
fn html_of_example(name: &str) -> (run::Run, String) {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let s = scenario::parse(&path, &std::fs::read_to_string(&path).unwrap()).expect("parses");
    let r = run::run(&s);
    let page = fsfilter_lab::html::report(&s, &r);
    (r, page)
}

/// The row the HTML report's steps table gives message step `step`, after the step's own row.
fn message_row(page: &str, step: u32) -> &str {
    let start = format!("<tr class=\"message\" data-step=\"{step}\">");
    let row = page.split(&start).nth(1).unwrap_or_else(|| panic!("no {start} in:\n{page}"));
    // The row ends with its cell, after the records' table when it has one.
    let cell_end = row.find("</td></tr>").unwrap_or(row.len());
    let end = match row.find("<table") {
        Some(t) if t < cell_end => row.find("</table></td></tr>").map_or(row.len(), |e| e + 18),
        _ => cell_end + "</td></tr>".len(),
    };
    row.get(..end).unwrap_or(row)
}

#[test]
fn the_html_report_shows_each_message_step_and_the_records_of_both_spies() {
    // lab/scenarios/spy.toml: the text report and the JSON gave each spy's log; the HTML report
    // gave only the steps' `message mini get_log` and status (spy.md, "Not done").
    let (r, page) = html_of_example("spy");
    let version = message_row(&page, 4);
    assert!(version.contains("<b>mini</b> asked SpyMini (minifilter)"), "{version}");
    assert!(version.contains("get_version: STATUS_SUCCESS"), "{version}");
    assert!(version.contains("protocol version 1.1"), "{version}");
    let logs: Vec<_> = fsfilter_lab::spylog::decode_all(&r)
        .into_iter()
        .filter_map(|(m, d)| match d {
            fsfilter_lab::spylog::Decoded::Log(log) => Some((m.step, m.driver.clone(), log)),
            _ => None,
        })
        .collect();
    assert_eq!(logs.len(), 2, "both spies' logs");
    for (step, driver, log) in logs {
        let row = message_row(&page, step);
        assert!(row.contains(&format!("asked {driver} (")), "{row}");
        assert!(row.contains("get_log: STATUS_SUCCESS"), "{row}");
        assert!(row.contains("14 records, 0 dropped, 0 pending"), "{row}");
        assert_eq!(row.matches("<tr><td>").count(), 14, "one table row a record: {row}");
        for x in &log.records {
            let name = x.name.as_deref().map_or_else(
                || format!("no name: {}", text::status_name(x.name_status.unwrap())),
                |n| n.to_owned(),
            );
            let cells = format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                x.sequence,
                x.operation,
                x.minor,
                x.kind,
                x.requestor_mode,
                x.process.unwrap()
            );
            let record = row.split(&cells).nth(1).unwrap_or_else(|| panic!("{cells} in {row}"));
            let record = record.split("</tr>").next().unwrap_or_default();
            let status = text::status_name(x.status.unwrap());
            assert!(record.contains(&format!("<td>{status}</td><td>{}</td>", x.information)));
            assert!(record.contains(&format!("<td>file {}</td>", x.file.unwrap())), "{record}");
            assert!(record.ends_with(&format!("<td>{}</td>", name.replace('&', "&amp;"))));
            for flag in x.irp_flags.iter().chain(&x.data_flags) {
                assert!(record.contains(flag.as_str()), "{flag} in {record}");
            }
        }
    }
    // The FsFilter callbacks have no names, and the report says why.
    assert!(page.contains("<td>no name: STATUS_FLT_INVALID_NAME_REQUEST</td>"), "{page}");
}

#[test]
fn the_html_report_escapes_what_a_message_step_shows() {
    // A client named `<r&d>` and a file named `R&D <plan>.txt` (which NTFS refuses, after the
    // spy recorded the opened name).
    let text = "name = \"esc\"\n\n[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\
                files = { \"R&D 'plan'.txt\" = \"y\" }\n\n\
                [[driver]]\nname = \"Spy\"\nsample = \"spy\"\nmodel = \"minifilter\"\n\
                altitude = \"370520\"\nstart = \"boot\"\n\n\
                [[step]]\naction = \"connect\"\ndriver = \"Spy\"\nclient = \"<r&d>\"\n\n\
                [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"read\"\npath = \"R&D <plan>.txt\"\n\n\
                [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"read\"\npath = \"R&D 'plan'.txt\"\n\n\
                [[step]]\naction = \"message\"\nclient = \"<r&d>\"\ncommand = \"get_log\"\n\n\
                [[step]]\naction = \"message\"\nclient = \"<r&d>\"\ndata = \"<hi & bye>\"\n";
    let s = scenario::parse("esc.toml", text).expect("parses");
    let r = run::run(&s);
    let page = fsfilter_lab::html::report(&s, &r);
    assert!(!page.contains("<r&d>") && !page.contains("<plan>") && !page.contains("<hi"), "{page}");
    let log = message_row(&page, 3);
    assert!(log.contains("<b>&lt;r&amp;d&gt;</b> asked Spy (minifilter) get_log"), "{log}");
    assert!(log.contains("<td>\\Device\\HarddiskVolume1\\R&amp;D &lt;plan&gt;.txt</td>"), "{log}");
    assert!(log.contains("<td>\\Device\\HarddiskVolume1\\R&amp;D 'plan'.txt</td>"), "{log}");
    assert_eq!(log.matches("<tr><td>").count(), 3, "{log}");
    let data = message_row(&page, 4);
    assert!(data.contains("asked Spy (minifilter) data “&lt;hi &amp; bye&gt;”"), "{data}");
    assert!(data.contains("STATUS_INVALID_PARAMETER"), "{data}");
}

#[test]
fn a_report_without_message_steps_is_unchanged() {
    // The demonstration's page (the one .ci/run renders in Chromium) byte for byte as before the
    // message steps were shown; `FSFILTER_BLESS=1` accepts a change, to review like code.
    let (r, page) = html_of_example("demo");
    assert!(r.messages.is_empty());
    let snapshot = format!("{}/tests/snapshots/demo.html", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("FSFILTER_BLESS").is_some() {
        std::fs::write(&snapshot, &page).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).expect("the snapshot");
    assert!(expected == page, "the demonstration's HTML report differs from {snapshot}");
}

#[test]
fn the_html_report_lists_the_streams_a_stream_query_step_got() {
    // A query_information step of class `stream`: its row's Result cell gives the streams listed
    // after the status, on a line of its own, as the text report's `streams:` line does.
    let (r, page) = html_of_example("streams");
    assert_eq!(r.streams.len(), 2, "the scenario's two stream queries");
    for q in &r.streams {
        assert!(!q.entries.is_empty(), "step {}", q.step);
        let listed: Vec<String> = q
            .entries
            .iter()
            .map(|e| format!("{} ({} bytes, {} allocated)", e.name, e.size, e.allocation))
            .collect();
        let start = format!("<tr><td>{}</td>", q.step);
        let row = page.split(&start).nth(1).unwrap_or_else(|| panic!("no {start}"));
        let row = &row[..row.find("</tr>").unwrap()];
        let cells: Vec<&str> = row.split("<td>").collect();
        let result = cells[2].trim_end_matches("</td>");
        let expected = format!("STATUS_SUCCESS<br>streams: {}", listed.join(", "));
        assert_eq!(result, expected, "step {}", q.step);
        assert!(result.contains("::$DATA ("), "the default stream first: {result}");
    }
}
