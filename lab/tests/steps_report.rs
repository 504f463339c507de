//! Every request a step issues is in the reports. Before December 6 the text report, the HTML
//! report and `compare` showed only a step's last request: the cleanup a close issues first (in
//! the demonstration, the scanner's scan that finds the pipe infected) and the open an I/O on a
//! path not yet open issues read "no filter saw request 9" or nothing. A post callback on fast
//! I/O read like a second post of the IRP, a callback for an operation inside the request
//! (`FastIoCheckIfPossible` inside a cached read) like one of the request's own, and long volume
//! names pushed the instance setup columns out of line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::{compare, demo, html, run, scenario, text};

fn demo_run() -> (scenario::Scenario, run::Run) {
    let s = scenario::parse("demo.toml", demo::SCENARIO).expect("the demonstration parses");
    let r = run::run(&s);
    (s, r)
}

/// The lines of the text report's step `index`, its header excluded.
fn step_lines(report: &str, index: u32) -> Vec<String> {
    let header = format!("[{index}]");
    report
        .lines()
        .skip_while(|l| !l.starts_with("Steps:"))
        .skip_while(|l| !l.trim_start().starts_with(&header))
        .skip(1)
        .take_while(|l| l.starts_with("        "))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn a_close_step_shows_the_cleanup_it_issued_first() {
    let (s, r) = demo_run();
    let report = text::report(&s, &r);
    let lines = step_lines(&report, 10);
    let cleanup = lines.iter().position(|l| l.contains("IRP_MJ_CLEANUP")).expect(&report);
    let close = lines.iter().position(|l| l.contains("IRP_MJ_CLOSE")).expect(&report);
    assert!(cleanup < close, "{lines:?}");
    // The scan at cleanup, under the cleanup's header.
    let scan = lines.iter().position(|l| l.starts_with("Scanner data-scan")).expect(&report);
    assert!(cleanup < scan && scan < close, "{lines:?}");
    assert_eq!(lines.get(close + 1).map(String::as_str), Some("no filter saw it"), "{lines:?}");
}

#[test]
fn an_io_on_a_path_not_open_shows_its_open() {
    let (s, r) = demo_run();
    let report = text::report(&s, &r);
    // Step 7 reads \\server\share\report.docx, which no step opened.
    let lines = step_lines(&report, 7);
    let create = lines.iter().position(|l| l.contains("IRP_MJ_CREATE")).expect(&report);
    let read = lines.iter().position(|l| l.contains("IRP_MJ_READ")).expect(&report);
    assert!(create < read, "{lines:?}");
    assert_eq!(
        lines.get(create + 1).map(String::as_str),
        Some("ProbeLate pre SUCCESS_WITH_CALLBACK")
    );
    // A step with one request keeps the one-request form.
    assert_eq!(
        step_lines(&report, 2).first().map(String::as_str),
        Some("Passthrough pre SUCCESS_WITH_CALLBACK")
    );

    let html = html::report(&s, &r);
    let row = html.split("<tr><td>7</td>").nth(1).expect("a row for step 7");
    let row = row.split("</tr>").next().unwrap_or_default();
    assert!(row.contains("IRP_MJ_CREATE: ProbeLate pre"), "{row}");
    assert!(row.contains("; IRP_MJ_READ: ProbeLate pre"), "{row}");

    let c = compare::compare(&s, demo::COMPARED).expect("compares");
    let step7: Vec<&str> = c
        .text
        .lines()
        .skip_while(|l| !l.starts_with("  [7]"))
        .skip(1)
        .take_while(|l| !l.starts_with("  ["))
        .collect();
    assert_eq!(step7.first().map(|l| l.trim()), Some("request IRP_MJ_CREATE:"), "{}", c.text);
    assert!(step7.get(1).is_some_and(|l| l.contains("pre create [irp]")), "{step7:?}");
    assert!(step7.iter().any(|l| l.trim() == "request IRP_MJ_READ:"), "{step7:?}");
}

#[test]
fn a_post_callback_on_fast_io_is_marked_and_the_declined_try_shown() {
    let (s, r) = demo_run();
    let report = text::report(&s, &r);
    // Step 9 writes to the pipe: the scanner's post-only write callback runs on the fast I/O
    // try, which NPFS declines, then on the IRP.
    assert_eq!(
        step_lines(&report, 9),
        [
            "Scanner post (fast I/O) FINISHED_PROCESSING",
            "fast I/O declined: the I/O manager builds an IRP",
            "Scanner post FINISHED_PROCESSING",
            "-> completed STATUS_SUCCESS",
        ],
        "{report}"
    );
}

#[test]
fn instance_setup_columns_line_up_whatever_the_volume_names() {
    let (s, r) = demo_run();
    let report = text::report(&s, &r);
    let rows: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("Instance setup:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(rows.iter().any(|r| r.contains(r"\Device\NamedPipe")), "{rows:?}");
    let flags_at: Vec<usize> = rows.iter().filter_map(|r| r.find("AUTOMATIC_ATTACHMENT")).collect();
    assert_eq!(flags_at.len(), rows.len(), "{rows:?}");
    assert!(flags_at.windows(2).all(|w| w[0] == w[1]), "{rows:?}");
    let status_at: Vec<usize> = rows.iter().filter_map(|r| r.find("STATUS_")).collect();
    assert!(status_at.windows(2).all(|w| w[0] == w[1]), "{rows:?}");
}

#[test]
fn an_operation_inside_another_request_is_named() {
    let text = include_str!("../scenarios/fast-io.toml");
    let s = scenario::parse("fast-io.toml", text).expect("parses");
    let r = run::run(&s);
    let report = text::report(&s, &r);
    // Step 3: a cached read of a locked file, whose fast path asks FastIoCheckIfPossible.
    assert_eq!(
        step_lines(&report, 3),
        [
            "Probe pre (fast I/O) SUCCESS_WITH_CALLBACK",
            "Probe pre IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE (fast I/O) SUCCESS_WITH_CALLBACK",
            "Probe post IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE (fast I/O) FINISHED_PROCESSING",
            "Probe post (fast I/O) FINISHED_PROCESSING",
            "-> completed STATUS_SUCCESS",
        ],
        "{report}"
    );
}

#[test]
fn a_declined_fast_io_try_no_filter_saw_still_says_so() {
    let text = include_str!("../scenarios/skip-flags.toml");
    let s = scenario::parse("skip-flags.toml", text).expect("parses");
    let r = run::run(&s);
    let report = text::report(&s, &r);
    // Step 6 queries standard information: both filters skip it, and the fast I/O try is declined.
    let lines = step_lines(&report, 6);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("fast I/O declined: the I/O manager builds an IRP")
    );
    assert!(lines.get(1).is_some_and(|l| l.starts_with("no filter saw request")), "{lines:?}");
}

#[test]
fn a_request_completed_in_a_later_step_says_when_and_what_it_returned() {
    let text = include_str!("../scenarios/notify.toml");
    let s = scenario::parse("notify.toml", text).expect("parses");
    let r = run::run(&s);
    let report = text::report(&s, &r);
    // Step 0 opens the directory overlapped; step 1 waits for a change; step 2's create
    // completes it; step 3's is completed by the cleanup of step 5 (a write is reported at its
    // handle's cleanup); step 7 returns what was kept at once; step 8's is ended by the
    // directory handle's cleanup, step 9.
    let last = |index| step_lines(&report, index).last().cloned().unwrap_or_default();
    assert_eq!(last(1), "-> completed STATUS_SUCCESS at step 2: added new.txt", "{report}");
    assert_eq!(
        step_lines(&report, 3).last().map(String::as_str),
        Some("-> completed STATUS_SUCCESS at step 5: modified readme.txt")
    );
    assert_eq!(last(7), "-> completed STATUS_SUCCESS: added kept.txt");
    assert_eq!(last(8), "-> completed STATUS_NOTIFY_CLEANUP at step 9");
}

/// A step that completes requests of earlier steps says so: the cancel step the notifications it
/// cancelled, the create the notification its change answered (before December 6, seventh
/// session, only the earlier step's listing said when its request completed).
#[test]
fn a_step_lists_the_earlier_requests_it_completed() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/cancel.toml");
    let s = scenario::parse("cancel.toml", &std::fs::read_to_string(path).unwrap()).unwrap();
    let r = run::run(&s);
    let report = text::report(&s, &r);
    assert_eq!(
        step_lines(&report, 3),
        [
            "-> completed request 2 of step 2: STATUS_CANCELLED",
            "-> completed request 1 of step 1: STATUS_CANCELLED"
        ],
        "{report}"
    );
    assert!(step_lines(&report, 4).is_empty(), "{report}");
    // The HTML report says the same, in the step's cell of callbacks (it said nothing of when
    // or how a request completed before).
    let page = html::report(&s, &r);
    let row = |index: u32| {
        let start = page.find(&format!("<tr><td>{index}</td>")).expect("the step's row");
        let end = start + page[start..].find("</tr>").expect("the row's end");
        page[start..end].to_owned()
    };
    assert!(row(1).contains("completed STATUS_CANCELLED at step 3"), "{}", row(1));
    assert!(
        row(3).contains(
            "completed request 2 of step 2: STATUS_CANCELLED; completed request 1 of step 1: \
             STATUS_CANCELLED"
        ),
        "{}",
        row(3)
    );
    assert!(!row(4).contains("completed"), "{}", row(4));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/notify.toml");
    let s = scenario::parse("notify.toml", &std::fs::read_to_string(path).unwrap()).unwrap();
    let r = run::run(&s);
    let report = text::report(&s, &r);
    let create = step_lines(&report, 2);
    assert_eq!(
        create.last().map(String::as_str),
        Some("-> completed request 1 of step 1: STATUS_SUCCESS: added new.txt"),
        "{report}"
    );
}

#[test]
fn a_named_handle_is_a_second_handle_on_the_path() {
    // The `handle` extension: step 1 opens a second handle on a.txt and leaves the path's own
    // open (no cleanup or close of it), a close of the named one leaves the own one too, and
    // each step names the handle it used.
    let text = "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\nfiles = { \"a.txt\" = \"abc\" }\n\
        [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"a.txt\"\n\
        [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"a.txt\"\nhandle = \"second\"\n\
        [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"close\"\npath = \"a.txt\"\nhandle = \"second\"\n\
        [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"read\"\npath = \"A.TXT\"\n";
    let s = scenario::parse("handles.toml", text).unwrap();
    let r = run::run(&s);
    let completed = |step: u32| {
        r.events
            .iter()
            .filter(|e| e.step == Some(step))
            .filter(|e| matches!(e.kind, fsfilter_sim::EventKind::IoComplete { .. }))
            .count()
    };
    let what: Vec<&str> = r.steps.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "io create C:\\a.txt",
            "io create C:\\a.txt (handle second)",
            "io close C:\\a.txt (handle second)",
            "io read C:\\A.TXT",
        ]
    );
    assert!(r.steps.iter().all(|s| s.status == fsfilter::Status::SUCCESS), "{:?}", r.steps);
    // The second open closes nothing; the close is the named handle's cleanup and close; the
    // read uses the path's own handle, still open, with no create of its own.
    assert_eq!([completed(1), completed(2), completed(3)], [1, 2, 1], "{:?}", r.events);
}

/// A request on a synchronous handle that waits for the request outstanding on it (the file
/// object's lock, docs/simulator.md, "Asynchronous I/O") is listed under the step it went down
/// in; its own step says so. A close that waits for a lock never released says it waits, and the
/// run ends without a finding.
#[test]
fn a_request_that_waited_for_its_file_object_shows_where_it_went_down() {
    let step = |op: &str, path: &str, extra: &str| {
        format!(
            "\n[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"{path}\"\n\
             {extra}"
        )
    };
    let notify = step("directory_control", "docs", "notify = \"file_name\"\n");
    let text = format!(
        "name = \"lock\"\nseed = 1\n\n[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\
         files = {{ \"docs\\\\readme.txt\" = \"read me\" }}\n\n[[driver]]\nname = \"Watcher\"\n\
         sample = \"probe\"\nmodel = \"minifilter\"\nstart = \"boot\"\naltitude = \"370100\"\n\
         {notify}{notify}{}{}",
        step("create", "docs\\\\new.txt", ""),
        step("close", "docs", "")
    );
    let s = scenario::parse("lock.toml", &text).expect("parses");
    let r = run::run(&s);
    let report = text::report(&s, &r);
    assert_eq!(
        step_lines(&report, 1),
        ["-> request 2 waits for its file object: goes down at step 2"],
        "{report}"
    );
    let create = step_lines(&report, 2);
    assert!(create.contains(&"request 2 IRP_MJ_DIRECTORY_CONTROL:".to_owned()), "{report}");
    assert_eq!(step_lines(&report, 3), ["-> request 4 waits for its file object"], "{report}");
    assert!(r.findings().next().is_none(), "{report}");
}

#[test]
fn a_create_with_a_disposition_says_what_it_did() {
    // A create step's `disposition` (an extension): its description names it, and its request's
    // completion line the create result (FILE_OVERWRITTEN ...) when it succeeded; the JSON gains
    // a `creates` array, one entry for each such step. A create without the key is shown as
    // before, and a run without one has no `creates`.
    let text_of = |steps: &str| {
        format!(
            "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\
             files = {{ \"a.txt\" = \"abc\" }}\n{steps}"
        )
    };
    let step = |path: &str, handle: &str, extra: &str| {
        format!(
            "[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"{path}\"\n\
             handle = \"{handle}\"\n{extra}"
        )
    };
    let steps = [
        step("a.txt", "o", "disposition = \"overwrite\"\n"),
        step("b.txt", "x", "disposition = \"open\"\n"),
        step("b.txt", "y", "disposition = \"overwrite_if\"\n"),
        step("b.txt", "z", "disposition = \"create\"\n"),
        step("a.txt", "s", "disposition = \"supersede\"\n"),
        step("a.txt", "i", "disposition = \"open_if\"\n"),
        step("a.txt", "p", ""),
    ]
    .concat();
    let s = scenario::parse("dispositions.toml", &text_of(&steps)).unwrap();
    let r = run::run(&s);
    let report = text::report(&s, &r);
    let results = [
        ("overwrite", "STATUS_SUCCESS", Some("FILE_OVERWRITTEN")),
        ("open", "STATUS_OBJECT_NAME_NOT_FOUND", None),
        ("overwrite_if", "STATUS_SUCCESS", Some("FILE_CREATED")),
        ("create", "STATUS_OBJECT_NAME_COLLISION", None),
        ("supersede", "STATUS_SUCCESS", Some("FILE_SUPERSEDED")),
        ("open_if", "STATUS_SUCCESS", Some("FILE_OPENED")),
    ];
    for (i, (d, status, result)) in results.iter().enumerate() {
        let what = &r.steps[i].what;
        assert!(what.contains(&format!("(disposition {d})")), "{what}");
        let lines = step_lines(&report, i as u32);
        let done = match result {
            Some(x) => format!("-> completed {status} ({x})"),
            None => format!("-> completed {status}"),
        };
        assert_eq!(lines.last(), Some(&done), "{report}");
    }
    // The step without the key: as before.
    assert!(!r.steps[6].what.contains("disposition"), "{}", r.steps[6].what);
    assert_eq!(step_lines(&report, 6).last().unwrap(), "-> completed STATUS_SUCCESS");
    let doc = fsfilter_lab::json::document(&r);
    let creates = doc["creates"].as_array().unwrap();
    assert_eq!(creates.len(), 6, "{doc}");
    for (c, (i, (d, status, result))) in creates.iter().zip(results.iter().enumerate()) {
        assert_eq!(c["step"], i, "{c}");
        assert_eq!(c["disposition"], *d, "{c}");
        assert_eq!(c["status"], *status, "{c}");
        assert_eq!(c["result"], result.map_or(serde_json::Value::Null, Into::into), "{c}");
        assert_eq!(c["io"], r.steps[i].io.unwrap().0, "{c}");
    }
    assert_eq!(creates[0]["information"], 3);
    // Without the key anywhere, the document has no `creates`.
    let (_, demo) = demo_run();
    assert!(fsfilter_lab::json::document(&demo).get("creates").is_none());
}

#[test]
fn the_html_report_shows_what_a_create_with_a_disposition_did() {
    // The HTML report's Result cell of a create step that named its disposition gives the create
    // result after the status (`STATUS_SUCCESS (FILE_OVERWRITTEN)`), as the text report's
    // completion line does, and only when the create succeeded; a create without the key is
    // shown as before. Until December 7 the HTML report showed the status alone.
    let step = |path: &str, handle: &str, extra: &str| {
        format!(
            "[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"{path}\"\n\
             handle = \"{handle}\"\n{extra}"
        )
    };
    let steps = [
        step("a.txt", "o", "disposition = \"overwrite\"\n"),
        step("b.txt", "x", "disposition = \"open\"\n"),
        step("b.txt", "y", "disposition = \"overwrite_if\"\n"),
        step("a.txt", "p", ""),
    ]
    .concat();
    let text = format!(
        "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\
         files = {{ \"a.txt\" = \"abc\" }}\n{steps}"
    );
    let s = scenario::parse("dispositions.toml", &text).unwrap();
    let r = run::run(&s);
    let page = html::report(&s, &r);
    let result = |index: u32| {
        let start = page.find(&format!("<tr><td>{index}</td>")).expect("the step's row");
        let row = &page[start..];
        let row = &row[..row.find("</tr>").expect("the row's end")];
        row.split("<td>").nth(3).and_then(|c| c.split("</td>").next()).unwrap().to_owned()
    };
    assert_eq!(result(0), "STATUS_SUCCESS (FILE_OVERWRITTEN)", "{page}");
    assert_eq!(result(1), "STATUS_OBJECT_NAME_NOT_FOUND", "{page}");
    assert_eq!(result(2), "STATUS_SUCCESS (FILE_CREATED)", "{page}");
    assert_eq!(result(3), "STATUS_SUCCESS", "{page}");
}
