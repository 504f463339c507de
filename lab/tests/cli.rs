//! The `fsfilter` command line (scenario.md, "Command line"): the demonstration by default, run
//! with each output, compare, check, samples and sweep.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fsfilter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfilter")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name).display().to_string()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fsfilter-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn no_arguments_runs_the_demonstration() {
    let o = fsfilter(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let t = text(&o);
    for expected in [
        "scenario demonstration",
        "Filters (fltmc filters):",
        "EncLegacy            legacy",
        "<Legacy>",
        "FltMgr      frame 1",
        "FltMgr      frame 0",
        "AUTOMATIC_ATTACHMENT|NEWLY_MOUNTED_VOLUME",
        "data scan: FsRtlCreateSectionForDataScan",
        "data scan: FltCreateSectionForDataScan",
        "unload ProbeLate                         STATUS_FLT_DO_NOT_DETACH",
        "compare ProbeLate in scenario demonstration: legacy filter vs minifilter",
        "Verifier: no findings.",
    ] {
        assert!(t.contains(expected), "missing `{expected}` in:\n{t}");
    }
}

#[test]
fn run_prints_one_json_document() {
    let o = fsfilter(&["run", &scenario("frames.toml"), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&text(&o)).unwrap();
    assert_eq!(v["scenario"], "frames");
    let events = v["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["seq"].is_u64() && e["kind"].is_string()));
    let end = v["snapshots"].as_array().unwrap().last().unwrap();
    assert_eq!(end["label"], "end");
    let c = end["volumes"]["C:"].as_array().unwrap();
    assert_eq!(c[0]["type"], "frame");
    assert_eq!(c[0]["frame"], 1);
    assert_eq!(c[1], serde_json::json!({"type": "legacy", "driver": "OldEnc"}));
    assert_eq!(c[3], serde_json::json!({"type": "filesystem", "driver": "Ntfs"}));
}

#[test]
fn run_writes_the_html_report_and_the_chrome_trace() {
    let (html, trace) = (temp("report.html"), temp("trace.json"));
    let o = fsfilter(&[
        "run",
        &scenario("demo.toml"),
        "--report",
        html.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    // Self-contained: no script, no stylesheet or image from elsewhere (the only URL is the SVG
    // namespace).
    assert!(!page.contains("<script") && !page.contains("<link") && !page.contains("src="));
    assert_eq!(page.matches("http").count(), page.matches("http://www.w3.org/2000/svg").count());
    // 4 volumes in 2 snapshots ("after boot" and "end"), and the timeline.
    assert_eq!(page.matches("<svg class=\"stack\"").count(), 8);
    assert_eq!(page.matches("<svg class=\"timeline\"").count(), 1);
    assert!(page.contains("rect class=\"legacy\"") && page.contains("rect class=\"frame\""));
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "X" && e["cat"] == "io"), "request spans");
    assert!(
        events.iter().any(|e| e["ph"] == "M" && e["args"]["name"] == "EncLegacy"),
        "a lane per driver"
    );
}

#[test]
fn compare_reports_both_models_with_semantics_rows() {
    let o = fsfilter(&["compare", &scenario("attach-order.toml"), "--driver", "MiniLate"]);
    assert_eq!(o.status.code(), Some(0));
    let t = text(&o);
    assert!(t.contains("compare MiniLate in scenario attach-order"), "{t}");
    assert!(t.contains("legacy:     legacy device #1 from the top"), "{t}");
    assert!(t.contains("minifilter: frame 0"), "{t}");
    assert!(t.contains("docs/semantics.md#attach-order"), "{t}");
    let missing = fsfilter(&["compare", &scenario("attach-order.toml"), "--driver", "Nobody"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn check_and_samples() {
    let o = fsfilter(&["check", &scenario("unload.toml")]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o).ends_with("unload.toml: ok (1 volumes, 4 drivers, 9 steps)\n"),
        "{}",
        text(&o)
    );
    let o = fsfilter(&["samples"]);
    let t = text(&o);
    for p in ["passthrough", "probe", "scanner", "Rules", "Pattern", "ScanLatency", "Trace"] {
        assert!(t.contains(p), "{p} in {t}");
    }
    for p in ["redirect — ", "FSFilter Virtualization", "OldName", "NewName"] {
        assert!(t.contains(p), "{p} in {t}");
    }
    assert!(t.contains("tally — counts each stream's opens"), "{t}");
    let tally = t.split("tally — ").nth(1).unwrap_or_default();
    assert!(tally.contains("parameters: none"), "{t}");
}

#[test]
fn sweep_runs_a_folder_and_writes_csv() {
    let csv = temp("sweep.csv");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let o =
        fsfilter(&["sweep", dir.to_str().unwrap(), "--csv", csv.to_str().unwrap(), "--jobs", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let table = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "file,scenario,outcome,end_stacks,pre_orderings,findings");
    assert_eq!(lines.len(), 1 + 21);
    assert!(
        lines.iter().any(|l| l.contains(",frames,ok,")
            && l.contains("frame 1[AntiVirus@321300,Compression@169000]")),
        "{table}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("21 scenarios: 21 ok, 0 with verifier findings, 0 bad")
    );
}

#[test]
fn an_output_file_that_cannot_be_written_exits_with_3() {
    // The scenario is good and the JSON on standard output is complete: not 2 (a bad scenario).
    let o = fsfilter(&[
        "run",
        &scenario("frames.toml"),
        "--format",
        "json",
        "--report",
        "/nonexistent-dir/x.html",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot write"));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(doc["events"].is_array());
}

#[test]
fn sweep_quotes_a_carriage_return_in_a_csv_field() {
    // RFC 4180: a field holding CR, LF, a comma or a quote is quoted; an unquoted CR ends the
    // record for CSV readers.
    let dir = temp("sweep-cr");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cr.toml"), "name = \"a\\rb\"\n").unwrap();
    let summary = fsfilter_lab::sweep::sweep(&dir, Some(1), false).unwrap();
    let row = summary.csv.lines().nth(1).unwrap_or_default().to_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(row.contains(",\"a\rb\",ok,"), "{row:?}");
}

#[test]
fn sweep_exits_2_when_any_scenario_is_bad() {
    // README: sweep exits 2 when any file is bad (else 1 when a run has verifier findings), after
    // running the others.
    let dir = temp("sweep-bad");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.toml"), "name = \"good\"\n").unwrap();
    std::fs::write(dir.join("bad.toml"), "name = \"bad\"\n[[step]]\naction = \"teleport\"\n")
        .unwrap();
    let o = fsfilter(&["sweep", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2 scenarios: 1 ok, 0 with verifier findings, 1 bad"), "{stderr}");
}

#[test]
fn sweep_prints_the_warnings_of_the_scenarios_it_runs() {
    // check, run and compare print a scenario's warnings on standard error; sweep ran the
    // scenario (its driver failing to load) and said nothing.
    let dir = temp("sweep-warn");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("w.toml"),
        "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n\
         [driver.parameters]\nRules = \"pend:x read\"\n",
    )
    .unwrap();
    let o = fsfilter(&["sweep", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr
                .contains("w.toml:6: driver[0].parameters.Rules: Rules: pend: needs milliseconds"),
        "{stderr}"
    );
}

#[test]
fn a_scenario_file_over_16_mib_is_refused_and_read_only_that_far() {
    // A scenario file is at most 16 MiB: one byte more is refused, naming the file, by check,
    // run, compare and sweep; an endless file (/dev/zero) is not read into memory.
    let limit = fsfilter_lab::scenario::MAX_FILE_BYTES;
    assert_eq!(limit, 16 << 20);
    let dir = temp("too-large");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'\n'; limit as usize + 1]).unwrap();
    let shown = big.display().to_string();
    for args in [
        vec!["check", shown.as_str()],
        vec!["run", shown.as_str()],
        vec!["compare", shown.as_str(), "--driver", "A"],
    ] {
        let o = fsfilter(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("{shown}: too large")), "{stderr}");
        assert!(stderr.contains("16 MiB"), "{stderr}");
    }
    let summary = fsfilter_lab::sweep::sweep(&dir, Some(1), false).unwrap();
    assert_eq!((summary.bad, summary.rows[0].outcome), (1, "bad"));
    assert!(summary.rows[0].findings.contains("too large"), "{:?}", summary.rows[0]);
    // Exactly the limit is read.
    std::fs::write(&big, vec![b'\n'; limit as usize]).unwrap();
    let o = fsfilter(&["check", &shown]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    if Path::new("/dev/zero").exists() {
        let o = fsfilter(&["check", "/dev/zero"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("/dev/zero: too large"));
    }
}

#[test]
fn an_output_file_that_is_the_scenario_file_is_refused() {
    // `run a.toml --report a.toml` overwrote the scenario with the report. Any spelling of the
    // same file (a `.` component, a symbolic or a hard link) is refused before the run, exit 2, and the
    // scenario is left as it was.
    let dir = temp("self-output");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read_to_string(scenario("frames.toml")).unwrap();
    let file = dir.join("self.toml");
    std::fs::write(&file, &original).unwrap();
    let shown = file.display().to_string();
    let dotted = dir.join(".").join("self.toml").display().to_string();
    let mut spellings = vec![shown.clone(), dotted];
    #[cfg(unix)]
    {
        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        spellings.push(link.display().to_string());
        let hard = dir.join("hard.toml");
        std::fs::hard_link(&file, &hard).unwrap();
        spellings.push(hard.display().to_string());
    }
    for output in &spellings {
        for flag in ["--report", "--trace"] {
            let o = fsfilter(&["run", &shown, flag, output]);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{flag} {output}: {stderr}");
            assert!(stderr.contains(&format!("{flag} {output}: is the scenario file")), "{stderr}");
            assert!(o.stdout.is_empty(), "nothing runs");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
        }
    }
    // The two outputs may not be one file either: one would replace the other.
    let both = dir.join("both.out").display().to_string();
    let o = fsfilter(&["run", &shown, "--report", &both, "--trace", &both]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!Path::new(&both).exists());
    // sweep's CSV may not replace one of the scenarios it reads.
    let o = fsfilter(&["sweep", dir.to_str().unwrap(), "--csv", &shown]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("--csv {shown}: is the scenario file")), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    // A new file beside the scenario is fine.
    let report = dir.join("new.html").display().to_string();
    let o = fsfilter(&["run", &shown, "--report", &report]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
