//! The throughput benchmark's worker process (`fsfilter_bench::worker`): it runs the stack it is
//! named, counts what the in-process machine counts, and times the workloads it is asked for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::Cursor;

use fsfilter_bench::worker::{self, Job, Spec, Worker};
use fsfilter_bench::{Bench, Driver};

const WORKER: &str = env!("CARGO_BIN_EXE_stack-worker");

#[test]
fn stacks_are_named_by_kind_and_depth() {
    use Driver::{PassthroughLegacy as L, PassthroughMinifilter as M};
    assert_eq!(worker::stack("minifilter", 2), Some(vec![M, M]));
    assert_eq!(worker::stack("legacy", 1), Some(vec![L]));
    assert_eq!(worker::stack("mixed", 3), Some(vec![M, L, M]));
    assert_eq!(worker::stack("mixed", 0), Some(vec![]));
    assert_eq!(worker::stack("raw", 1), None);
    assert_eq!(worker::stack("raw", 0), None);
}

#[test]
fn the_worker_process_runs_the_stack_it_is_named() {
    let mut w = Worker::spawn(WORKER, &["mixed", "4"]).unwrap();
    let mut here = Bench::new(&worker::stack("mixed", 4).unwrap());
    assert_eq!(w.callbacks, here.callbacks_per_mixed());
    assert_eq!(w.operations, here.operations_per_mixed());
    assert_eq!(w.operations, 11, "a mixed workload is 11 operations through the stack");
    // It answers each request with a time (nothing about the time is asserted: the clock is the
    // benchmarks' business), and keeps answering.
    for n in [1, 40, 0, 3] {
        let t = w.run(n).unwrap();
        assert!(n == 0 || !t.is_zero(), "{n} workloads took no time at all");
    }
}

#[test]
fn the_worker_refuses_what_it_cannot_run() {
    let e = Worker::spawn(WORKER, &["raw", "4"]).err().unwrap();
    assert!(e.contains("exited before answering: stack-worker: unknown kind \"raw\""), "{e}");
    assert!(e.contains("usage: stack-worker"), "{e}");
    let e = Worker::spawn("/nonexistent/stack-worker", &["mixed", "1"]).err().unwrap();
    assert!(e.starts_with("/nonexistent/stack-worker: "), "{e}");
}

#[test]
fn the_protocol_answers_each_line_and_names_a_bad_one() {
    let mut out = Vec::new();
    let one = spec(&["minifilter", "1"]);
    worker::serve(&one, Cursor::new("2\n0\n"), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // One minifilter: each of the 11 operations has its pre and its post.
    assert_eq!(lines[0], "ready 22 11");
    assert!(lines[1].parse::<u64>().unwrap() > 0, "{out}");
    assert!(lines[2].parse::<u64>().is_ok(), "{out}");
    let e = worker::serve(&spec(&["minifilter", "0"]), Cursor::new("many\n"), Vec::new());
    let e = e.err().unwrap();
    assert!(e.contains("\"many\""), "{e}");
}

fn spec(args: &[&str]) -> Spec {
    Spec::parse(args).unwrap()
}

#[test]
fn a_spec_names_the_stack_the_workload_and_the_options() {
    let stack = |s: &Spec| match &s.job {
        Job::Stack { drivers, workload, .. } => (drivers.clone(), *workload),
        Job::Lab(name) => panic!("lab {name}"),
    };
    let s = spec(&["resident", "2", "cached", "--pin", "--no-callback-events"]);
    assert_eq!(stack(&s), (vec![Driver::ResidentLegacy; 2], "cached"));
    assert!(s.pin && !s.callback_events);
    let s = spec(&["raw-legacy", "1"]);
    assert_eq!(stack(&s), (vec![Driver::RawLegacy], "mixed"));
    assert!(!s.pin && s.callback_events);
    assert!(matches!(spec(&["lab", "sweep"]).job, Job::Lab("sweep")));
    assert!(matches!(spec(&["lab", "demonstration"]).job, Job::Lab("demonstration")));
    let parse = |args: &[&str]| Spec::parse(args).err().unwrap();
    assert!(parse(&["minifilter", "four"]).contains("depth: expected a number, got \"four\""));
    assert!(parse(&["minifilter", "1", "fast"]).contains("unknown workload \"fast\""));
    assert!(parse(&["minifilter", "1", "--fast"]).contains("unknown option \"--fast\""));
    assert!(parse(&["minifilter"]).starts_with("usage: stack-worker"));
    assert!(parse(&["lab", "demo"]).contains("unknown lab workload \"demo\""));
}

#[test]
fn a_worker_without_callback_events_times_its_workload() {
    // The overhead benchmark's kind of worker: one operation, events off, pinned.
    let args = ["minifilter", "1", "paging", "--no-callback-events", "--pin"];
    let mut w = Worker::spawn(WORKER, &args).unwrap();
    // Counted before the events were turned off: one minifilter's 11 operations.
    assert_eq!((w.callbacks, w.operations), (22, 11));
    // A raw filter has no trace hook to count with.
    let raw = Worker::spawn(WORKER, &["raw-minifilter", "1", "paging"]).unwrap();
    assert_eq!((raw.callbacks, raw.operations), (0, 0));
    assert!(!w.run(50).unwrap().is_zero(), "50 paging reads took no time at all");
}

#[test]
fn the_worker_runs_the_lab_demonstration() {
    let mut w = Worker::spawn(WORKER, &["lab", "demonstration"]).unwrap();
    assert_eq!((w.callbacks, w.operations), (0, 0));
    assert!(!w.run(1).unwrap().is_zero(), "the demonstration takes time");
}
