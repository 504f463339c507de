//! `cargo xtask`: build the sample drivers and check their PE images (see the library's docs).

#![allow(clippy::unwrap_used, reason = "host build tool: a failed unwrap is a clear failure")]
#![allow(clippy::expect_used, reason = "host build tool: a failed expect is a clear failure")]
#![allow(clippy::panic, reason = "host build tool, not kernel code")]
#![allow(clippy::indexing_slicing, reason = "host build tool, not kernel code")]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use xtask::{drivers, pe};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  drivers                 build every sample driver for x86_64-pc-windows-msvc into
                          target/drivers/<sample>-<model>.sys (+ .pdb), check the PE images
                          and the size limits, print a size table
  check-pe <file.sys>...  run the PE checks on the given files
  help                    show this text

Never set RUSTFLAGS for a driver build: it replaces the kernel link arguments of
.cargo/config.toml. `drivers` removes it from the build's environment.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("drivers") if args.len() == 1 => drivers(),
        Some("check-pe") if args.len() > 1 => check_pe(args[1..].iter().map(PathBuf::from)),
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
    let Some(first) = reports.first() else { return Ok(true) };
    let out = first.sys.parent().map(|p| p.display().to_string()).unwrap_or_default();
    println!("\ndrivers in {out}:\n");
    print!("{}", drivers::size_table(&reports));
    let mut passed = true;
    for report in &reports {
        for violation in &report.report.violations {
            eprintln!("error: {}: {violation}", report.driver.sys_name());
            passed = false;
        }
    }
    if passed {
        println!("\nall {} drivers passed the PE checks and their size limits", reports.len());
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
        for violation in &report.violations {
            eprintln!("error: {}: {violation}", file.display());
            passed = false;
        }
    }
    Ok(passed)
}
