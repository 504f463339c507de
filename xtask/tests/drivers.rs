//! Every sample driver builds for Windows, and its .sys passes the PE checks and its size limit.
//!
//! This is what makes `cargo test --workspace` fail when a driver stops building or its image
//! goes wrong. The drivers are built in `target/xtask-test`, a target directory of their own, so
//! that the nested cargo never waits on the build lock of the cargo running the tests.

#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap fails the test")]
#![allow(clippy::expect_used, reason = "test helpers: a failed expect fails the test")]
#![allow(clippy::indexing_slicing, reason = "test helpers patch known header offsets")]

use std::path::PathBuf;

use xtask::drivers::{self, Options, Workspace};

fn test_target_dir() -> PathBuf {
    let ws = Workspace::discover(&drivers::workspace_root()).unwrap();
    ws.target_dir.join("xtask-test")
}

#[test]
fn every_sample_driver_builds_and_passes_the_pe_checks_and_size_limits() {
    let options = Options { target_dir: Some(test_target_dir()), capture_output: true };
    let reports = drivers::build_and_check(&options).unwrap();
    let baselines = drivers::build_and_check_baselines(&options).unwrap();
    let table = drivers::size_table(&reports, &baselines);
    println!("{table}");
    // Each sample beside the raw windows-sys driver of its model (issue 9).
    for raw in ["raw-minifilter.sys", "raw-legacy.sys"] {
        let b = baselines.iter().find(|b| b.driver.sys_name() == raw);
        let b = b.unwrap_or_else(|| panic!("{raw} not built"));
        assert!(b.passed(), "{raw}: {:?}", b.report.violations);
    }
    let passthrough_row = table.lines().find(|l| l.starts_with("passthrough-minifilter.sys"));
    let raw_size = baselines
        .iter()
        .find(|b| b.driver.sys_name() == "raw-minifilter.sys")
        .map(|b| b.report.image.size.to_string())
        .unwrap();
    assert!(
        passthrough_row.is_some_and(|l| l.split_whitespace().nth(3) == Some(raw_size.as_str())),
        "{table}"
    );

    let names: Vec<String> = reports.iter().map(|r| r.driver.sys_name()).collect();
    for expected in ["passthrough-minifilter.sys", "passthrough-legacy.sys"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not built; built {names:?}");
    }
    let failures: Vec<String> = reports
        .iter()
        .flat_map(|r| r.report.violations.iter().map(move |v| format!("{}: {v}", r.sys.display())))
        .collect();
    assert!(failures.is_empty(), "PE checks failed:\n{}", failures.join("\n"));

    for r in &reports {
        let pdb = r.sys.with_extension("pdb");
        assert!(pdb.is_file(), "{} has no PDB beside it", r.sys.display());
        assert_eq!(std::fs::metadata(&r.sys).unwrap().len(), r.report.image.size);
        assert!(r.report.image.size < r.limit);
    }
}

#[test]
fn the_passthrough_minifilter_imports_from_fltmgr_and_ntoskrnl_only() {
    let ws = Workspace::discover(&drivers::workspace_root()).unwrap();
    let driver = ws.driver("passthrough-minifilter").unwrap();
    let built = drivers::build(&ws, driver, &test_target_dir(), true).unwrap();
    let report = drivers::check(&built).unwrap();
    assert!(report.passed(), "{:?}", report.report.violations);
    assert_eq!(report.limit, 16 * 1024);
    let dlls: Vec<String> =
        report.report.image.imports.iter().map(|d| d.name.to_ascii_lowercase()).collect();
    assert!(dlls.iter().any(|d| d == "fltmgr.sys"), "no fltmgr.sys import in {dlls:?}");
    let functions: Vec<&String> =
        report.report.image.imports.iter().flat_map(|d| &d.functions).collect();
    for needed in ["FltRegisterFilter", "FltStartFiltering"] {
        assert!(functions.iter().any(|f| *f == needed), "{needed} not imported: {functions:?}");
    }
}

/// The `panic-free` check's disassembly (xtask/src/disasm.rs) on every built driver: it decodes
/// every byte of the code sections as whole instructions, finds the functions, and finds no call
/// of a bugcheck routine and no path into one.
#[test]
fn every_driver_disassembles_completely_and_has_no_panic_path() {
    let options = Options { target_dir: Some(test_target_dir()), capture_output: true };
    let reports = drivers::build_and_check(&options).unwrap();
    let baselines = drivers::build_and_check_baselines(&options).unwrap();
    println!("{}", drivers::disassembly_table(&reports, &baselines));
    assert!(!reports.is_empty() && !baselines.is_empty());
    for r in reports.iter().chain(&baselines) {
        let name = r.driver.sys_name();
        let a = r.report.disasm.as_ref().unwrap_or_else(|| panic!("{name}: not disassembled"));
        assert!(a.pdata_functions > 0 && a.instructions > a.functions(), "{name}: {a:?}");
        assert!(a.code_bytes > 0, "{name}");
        // The whole of .text decodes, with no undecodable byte, inside a .pdata function or not.
        assert_eq!(a.decoded_bytes, a.code_bytes, "{name}: {}", a.summary());
        assert_eq!(a.invalid, [], "{name}");
        assert_eq!(a.invalid_outside_functions, 0, "{name}");
        assert_eq!(a.bugcheck_slots, [], "{name}: imports a bugcheck routine");
        assert_eq!(a.bugcheck_calls, [], "{name}");
        assert_eq!(a.paths, [], "{name}");
        let panic_free: Vec<_> =
            r.report.violations.iter().filter(|v| v.check() == "panic-free").collect();
        assert_eq!(panic_free, Vec::<&xtask::pe::Violation>::new(), "{name}");
    }
}
