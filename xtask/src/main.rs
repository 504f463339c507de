//! `cargo xtask`: build the sample drivers, check their PE images and INFs (see the library's docs).

#![allow(clippy::unwrap_used, reason = "host build tool: a failed unwrap is a clear failure")]
#![allow(clippy::expect_used, reason = "host build tool: a failed expect is a clear failure")]
#![allow(clippy::panic, reason = "host build tool, not kernel code")]
#![allow(clippy::indexing_slicing, reason = "host build tool, not kernel code")]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use xtask::drivers::Workspace;
use xtask::{drivers, inf, pe, program};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  drivers                 build every sample driver for x86_64-pc-windows-msvc into
                          target/drivers/<sample>-<model>.sys (+ .pdb), check the PE images
                          and the size limits, print a size table; check each driver's INF
                          and copy it beside the .sys; build the samples' user-mode
                          programs (spy-reader.exe) beside them and check them as
                          Windows console programs
  check-pe <file.sys>...  run the PE checks on the given files
  check-inf [<file.inf>...]
                          check the sample drivers' INFs, or the given files (named
                          *-minifilter.inf or *-legacy.inf, which says the model)
  help                    show this text

Never set RUSTFLAGS for a driver build: it replaces the kernel link arguments of
.cargo/config.toml. `drivers` removes it from the build's environment.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("drivers") if args.len() == 1 => drivers(),
        Some("check-pe") if args.len() > 1 => check_pe(args[1..].iter().map(PathBuf::from)),
        Some("check-inf") => check_inf(&args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(true)
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask drivers`. `Ok(false)` when a check failed.
fn drivers() -> Result<bool> {
    for var in drivers::REMOVED_ENV {
        if std::env::var_os(var).is_some() {
            eprintln!(
                "note: {var} is set; removing it from the driver builds (it would replace the \
                 kernel link arguments, toolchain.md)"
            );
        }
    }
    let reports = drivers::build_and_check(&drivers::Options::default())?;
    let baselines = drivers::build_and_check_baselines(&drivers::Options::default())?;
    let programs = program::build_and_check(&drivers::Options::default())?;
    let Some(first) = reports.first() else { return Ok(true) };
    let out = first.sys.parent().map(|p| p.display().to_string()).unwrap_or_default();
    println!("\ndrivers in {out}:\n");
    print!("{}", drivers::size_table(&reports, &baselines));
    println!("\npanic-free, from the disassembly of the code sections:\n");
    print!("{}", drivers::disassembly_table(&reports, &baselines));
    println!("\nuser-mode programs, checked as Windows console programs:\n");
    print!("{}", program::table(&programs));
    let mut passed = true;
    for report in reports.iter().chain(&baselines) {
        for violation in &report.report.violations {
            eprintln!("error: {}: {violation}", report.driver.sys_name());
            passed = false;
        }
    }
    for p in &programs {
        for violation in &p.report.violations {
            eprintln!("error: {}: {violation}", p.built.program.exe_name());
            passed = false;
        }
    }
    // The INF of each driver, checked and copied beside its .sys.
    let root = drivers::workspace_root();
    for report in &reports {
        let out = report.sys.parent().unwrap_or(&report.sys);
        let (inf_report, _) = inf::package(&root, &report.driver, out)?;
        for violation in &inf_report.violations {
            eprintln!("error: {violation}");
            passed = false;
        }
    }
    if passed {
        println!(
            "\nall {} drivers and {} raw baselines passed the PE checks and their size limits; \
             the drivers' INFs passed the INF checks and are beside them; {} user-mode \
             program(s) passed the console-program checks",
            reports.len(),
            baselines.len(),
            programs.len()
        );
    }
    Ok(passed)
}

/// `cargo xtask check-inf [<file.inf>...]`. `Ok(false)` when a check failed.
fn check_inf(files: &[String]) -> Result<bool> {
    let reports = if files.is_empty() {
        let root = drivers::workspace_root();
        let ws = Workspace::discover(&root)?;
        ws.drivers.iter().map(|d| inf::check_driver(&root, d)).collect::<Result<Vec<_>>>()?
    } else {
        let mut reports = Vec::new();
        for file in files.iter().map(PathBuf::from) {
            let model = inf::model_from_file_name(&file).with_context(|| {
                format!(
                    "{}: name it *-minifilter.inf or *-legacy.inf so that the model is known",
                    file.display()
                )
            })?;
            reports.push(inf::check_file(&file, model, None)?);
        }
        reports
    };
    let mut passed = true;
    for report in &reports {
        if report.passed() {
            let package = &report.package;
            let instances = package
                .instances(inf::Layout::Parameters)
                .map(|i| format!(", {} instance(s)", i.instances.len()))
                .unwrap_or_default();
            println!(
                "{}: ok (service {}, class {}{instances})",
                report.file,
                package.service_name().unwrap_or("?"),
                package.class
            );
        }
        for violation in &report.violations {
            eprintln!("error: {violation}");
            passed = false;
        }
    }
    Ok(passed)
}

/// `cargo xtask check-pe <file>...`. `Ok(false)` when a check failed.
fn check_pe(files: impl Iterator<Item = PathBuf>) -> Result<bool> {
    let mut passed = true;
    for file in files {
        let data = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let report = pe::check(&data);
        if report.passed() {
            println!(
                "{}: ok ({} bytes, {} imports, {} sections)",
                file.display(),
                report.image.size,
                report.image.import_count(),
                report.image.sections.len()
            );
        }
        if let Some(analysis) = &report.disasm {
            println!("{}: disassembly: {}", file.display(), analysis.summary());
        }
        for violation in &report.violations {
            eprintln!("error: {}: {violation}", file.display());
            passed = false;
        }
    }
    Ok(passed)
}
