//! `cargo xtask drivers`: find every sample driver, build it as a .sys, check it.
//!
//! A sample driver is a workspace package whose manifest says
//! `[package.metadata.fsfilter] driver = { sample = "<name>", model = "minifilter" | "legacy" }`.
//! Each is built with `cargo rustc --profile driver --target x86_64-pc-windows-msvc --lib
//! --crate-type cdylib` and copied to `<target>/drivers/<sample>-<model>.sys` (and `.pdb`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::pe;

/// The driver target.
pub const TARGET: &str = "x86_64-pc-windows-msvc";
/// The cargo profile of the drivers (workspace `Cargo.toml`, `[profile.driver]`).
pub const PROFILE: &str = "driver";
/// Every driver must be smaller than this (issue 7).
pub const DEFAULT_SIZE_LIMIT: u64 = 32 * 1024;
/// Tighter limits for single drivers, by `<sample>-<model>`: each .sys must be smaller than its
/// limit.
pub const SIZE_LIMITS: &[(&str, u64)] = &[
    // Issue 2: the passthrough minifilter stays under 16 KiB.
    ("passthrough-minifilter", 16 * 1024),
];
/// Variables removed from the environment of the driver builds. Any of them replaces the
/// target's `rustflags` from `.cargo/config.toml` and silently drops every kernel link argument
/// (toolchain.md, "Target and linker").
pub const REMOVED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
];

/// The size limit of the driver `<sample>-<model>`.
pub fn size_limit(name: &str) -> u64 {
    SIZE_LIMITS.iter().find(|(n, _)| *n == name).map_or(DEFAULT_SIZE_LIMIT, |(_, limit)| *limit)
}

/// The two ways a filter is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Model {
    /// A Filter Manager minifilter.
    Minifilter,
    /// A legacy filter with attached device objects.
    Legacy,
}

impl Model {
    /// The name used in manifests and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Minifilter => "minifilter",
            Model::Legacy => "legacy",
        }
    }

    /// Parses a manifest's `model` value.
    pub fn parse(s: &str) -> Option<Model> {
        match s {
            "minifilter" => Some(Model::Minifilter),
            "legacy" => Some(Model::Legacy),
            _ => None,
        }
    }
}

/// A sample driver package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// The cargo package.
    pub package: String,
    /// The library crate's name (the artifact is `<crate_name>.dll`).
    pub crate_name: String,
    /// The sample it builds.
    pub sample: String,
    /// The model it builds.
    pub model: Model,
}

impl Driver {
    /// `<sample>-<model>`, the stem of the .sys and .pdb files.
    pub fn name(&self) -> String {
        format!("{}-{}", self.sample, self.model.as_str())
    }

    /// `<sample>-<model>.sys`.
    pub fn sys_name(&self) -> String {
        format!("{}.sys", self.name())
    }
}

/// The cargo to run: the one that runs us (`CARGO`), else `cargo` from `PATH`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The workspace as `cargo metadata` describes it, with its sample drivers.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root.
    pub root: PathBuf,
    /// The target directory (`CARGO_TARGET_DIR` and configuration taken into account).
    pub target_dir: PathBuf,
    /// The sample drivers, sorted by sample and model.
    pub drivers: Vec<Driver>,
    /// The raw baselines (`[package.metadata.fsfilter] baseline = { name, model }`): minimal
    /// drivers written directly against windows-sys, built and checked like the samples (no INF)
    /// so that the size table can set each sample beside the raw driver of its model.
    pub baselines: Vec<Driver>,
}

impl Workspace {
    /// Runs `cargo metadata --format-version 1 --no-deps` on the workspace at `root`.
    pub fn discover(root: &Path) -> Result<Workspace> {
        let output = Command::new(cargo())
            .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .output()
            .context("running `cargo metadata`")?;
        if !output.status.success() {
            bail!(
                "`cargo metadata` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let metadata: Value =
            serde_json::from_slice(&output.stdout).context("parsing `cargo metadata` output")?;
        let target_dir = metadata["target_directory"]
            .as_str()
            .ok_or_else(|| anyhow!("`cargo metadata` reported no target_directory"))?;
        Ok(Workspace {
            root: root.to_path_buf(),
            target_dir: PathBuf::from(target_dir),
            drivers: drivers_from_metadata(&metadata)?,
            baselines: packages_marked(&metadata, "baseline")?,
        })
    }

    /// The driver built from `package`, if it is one.
    pub fn driver(&self, package: &str) -> Option<&Driver> {
        self.drivers.iter().find(|d| d.package == package)
    }
}

/// The sample drivers among the packages of a `cargo metadata` document.
pub fn drivers_from_metadata(metadata: &Value) -> Result<Vec<Driver>> {
    packages_marked(metadata, "driver")
}

/// The packages whose `[package.metadata.fsfilter]` has `key` (`driver`: a sample, with a
/// `sample` name; `baseline`: a raw driver, with a `name`) and a `model`.
fn packages_marked(metadata: &Value, key: &str) -> Result<Vec<Driver>> {
    let packages = metadata["packages"]
        .as_array()
        .ok_or_else(|| anyhow!("`cargo metadata` output has no packages"))?;
    let name_key = if key == "driver" { "sample" } else { "name" };
    let mut drivers = vec![];
    for package in packages {
        let name = package["name"].as_str().unwrap_or("<unnamed>");
        let spec = &package["metadata"]["fsfilter"][key];
        if spec.is_null() {
            continue;
        }
        let sample = spec[name_key].as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
            anyhow!("package `{name}`: [package.metadata.fsfilter] {key} has no `{name_key}`")
        })?;
        let model = spec["model"].as_str().and_then(Model::parse).ok_or_else(|| {
            anyhow!(
                "package `{name}`: [package.metadata.fsfilter] {key} `model` must be \
                 \"minifilter\" or \"legacy\", found {}",
                spec["model"]
            )
        })?;
        let lib = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| {
                t["kind"].as_array().into_iter().flatten().any(|k| {
                    matches!(k.as_str(), Some("lib" | "rlib" | "cdylib" | "dylib" | "staticlib"))
                })
            })
            .and_then(|t| t["name"].as_str())
            .ok_or_else(|| anyhow!("package `{name}` is marked as a driver but has no library"))?;
        drivers.push(Driver {
            package: name.to_string(),
            crate_name: lib.replace('-', "_"),
            sample: sample.to_string(),
            model,
        });
    }
    drivers.sort_by(|a, b| (&a.sample, a.model).cmp(&(&b.sample, b.model)));
    if let Some(pair) = drivers.windows(2).find(|w| w[0].name() == w[1].name()) {
        bail!(
            "packages `{}` and `{}` both build {}",
            pair[0].package,
            pair[1].package,
            pair[0].sys_name()
        );
    }
    Ok(drivers)
}

/// How to build.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The target directory; `None` for the workspace's.
    pub target_dir: Option<PathBuf>,
    /// Capture cargo's output (shown only if a build fails) instead of passing it through.
    pub capture_output: bool,
}

/// A driver built and copied to `<target>/drivers/`.
#[derive(Debug, Clone)]
pub struct Built {
    /// Which driver.
    pub driver: Driver,
    /// `<target>/drivers/<sample>-<model>.sys`.
    pub sys: PathBuf,
    /// `<target>/drivers/<sample>-<model>.pdb`.
    pub pdb: PathBuf,
}

/// The `cargo rustc` command that builds `driver` as a .sys-shaped cdylib, with every variable
/// of [`REMOVED_ENV`] removed from its environment.
pub fn build_command(root: &Path, driver: &Driver, target_dir: &Path) -> Command {
    let mut command = Command::new(cargo());
    command
        .args(["rustc", "--profile", PROFILE, "--target", TARGET, "-p", &driver.package])
        .args(["--lib", "--crate-type", "cdylib", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(root);
    for var in REMOVED_ENV {
        command.env_remove(var);
    }
    command
}

/// Builds one driver and copies its image and PDB to `<target_dir>/drivers/`.
pub fn build(ws: &Workspace, driver: &Driver, target_dir: &Path, capture: bool) -> Result<Built> {
    let mut command = build_command(&ws.root, driver, target_dir);
    let status = if capture {
        let output = command.output().with_context(|| format!("running {command:?}"))?;
        if !output.status.success() {
            bail!(
                "{}: building package `{}` failed ({}):\n{}",
                driver.sys_name(),
                driver.package,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output.status
    } else {
        command.status().with_context(|| format!("running {command:?}"))?
    };
    if !status.success() {
        bail!("{}: building package `{}` failed ({status})", driver.sys_name(), driver.package);
    }

    let artifacts = target_dir.join(TARGET).join(PROFILE);
    let out = target_dir.join("drivers");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let built = Built {
        driver: driver.clone(),
        sys: out.join(driver.sys_name()),
        pdb: out.join(format!("{}.pdb", driver.name())),
    };
    for (from, to) in [
        (artifacts.join(format!("{}.dll", driver.crate_name)), &built.sys),
        (artifacts.join(format!("{}.pdb", driver.crate_name)), &built.pdb),
    ] {
        // Copy, then rename: a reader of `to` (another test) never sees half a file.
        static COPIES: AtomicUsize = AtomicUsize::new(0);
        let copy = COPIES.fetch_add(1, Ordering::Relaxed);
        let partial = to.with_extension(format!("partial-{}-{copy}", std::process::id()));
        fs::copy(&from, &partial).and_then(|_| fs::rename(&partial, to)).with_context(|| {
            format!("{}: copying {} to {}", driver.sys_name(), from.display(), to.display())
        })?;
    }
    Ok(built)
}

/// The checks of one driver.
#[derive(Debug, Clone)]
pub struct DriverReport {
    /// Which driver.
    pub driver: Driver,
    /// The .sys checked.
    pub sys: PathBuf,
    /// Its size limit.
    pub limit: u64,
    /// The PE checks, plus [`pe::Violation::TooLarge`] if the file is over its limit.
    pub report: pe::Report,
}

impl DriverReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.report.passed()
    }
}

/// Runs the PE checks and the size limit on a built driver.
pub fn check(built: &Built) -> Result<DriverReport> {
    let data = fs::read(&built.sys).with_context(|| format!("reading {}", built.sys.display()))?;
    let mut report = pe::check(&data);
    let limit = size_limit(&built.driver.name());
    if report.image.size >= limit {
        report.violations.push(pe::Violation::TooLarge { size: report.image.size, limit });
    }
    Ok(DriverReport { driver: built.driver.clone(), sys: built.sys.clone(), limit, report })
}

/// Builds and checks every sample driver of the workspace; fails only if discovery or a build
/// fails (a failed check is in its report).
pub fn build_and_check(options: &Options) -> Result<Vec<DriverReport>> {
    let ws = Workspace::discover(&workspace_root())?;
    if ws.drivers.is_empty() {
        bail!("no sample drivers found: no package has [package.metadata.fsfilter] driver");
    }
    let target_dir = options.target_dir.clone().unwrap_or_else(|| ws.target_dir.clone());
    let mut reports = vec![];
    for driver in &ws.drivers {
        let built = build(&ws, driver, &target_dir, options.capture_output)?;
        reports.push(check(&built)?);
    }
    Ok(reports)
}

/// Builds and checks every raw baseline driver of the workspace (see [`Workspace::baselines`]).
pub fn build_and_check_baselines(options: &Options) -> Result<Vec<DriverReport>> {
    let ws = Workspace::discover(&workspace_root())?;
    let target_dir = options.target_dir.clone().unwrap_or_else(|| ws.target_dir.clone());
    let mut reports = vec![];
    for driver in &ws.baselines {
        let built = build(&ws, driver, &target_dir, options.capture_output)?;
        reports.push(check(&built)?);
    }
    Ok(reports)
}

/// The size table: driver, model, bytes, the raw baseline of its model and the ratio to it,
/// limit, imports, sections, verdict; the baselines' own rows follow, marked `raw`.
pub fn size_table(reports: &[DriverReport], baselines: &[DriverReport]) -> String {
    let width = reports
        .iter()
        .chain(baselines)
        .map(|r| r.driver.sys_name().len())
        .max()
        .unwrap_or(0)
        .max(6);
    let raw_of = |model: Model| {
        baselines.iter().find(|b| b.driver.model == model).map(|b| b.report.image.size)
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<width$}  {:<10}  {:>6}  {:>6}  {:>6}  {:>6}  {:>7}  {:<6}  sections",
        "driver", "model", "bytes", "raw", "x raw", "limit", "imports", "checks"
    );
    for (r, is_raw) in reports.iter().map(|r| (r, false)).chain(baselines.iter().map(|r| (r, true)))
    {
        let image = &r.report.image;
        let sections: Vec<&str> = image.sections.iter().map(|s| s.name.as_str()).collect();
        let (raw, ratio) = match raw_of(r.driver.model) {
            _ if is_raw => ("(raw)".to_owned(), "1.00".to_owned()),
            Some(raw) if raw > 0 => {
                (raw.to_string(), format!("{:.2}", image.size as f64 / raw as f64))
            }
            _ => ("-".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            table,
            "{:<width$}  {:<10}  {:>6}  {:>6}  {:>6}  {:>6}  {:>7}  {:<6}  {} ({})",
            r.driver.sys_name(),
            r.driver.model.as_str(),
            image.size,
            raw,
            ratio,
            r.limit,
            image.import_count(),
            if r.passed() { "ok" } else { "FAILED" },
            sections.len(),
            sections.join(" "),
        );
    }
    table
}

/// The disassembly behind the `panic-free` check (crate::disasm), a row per driver: functions
/// (from `.pdata` and leaf), instructions decoded and the code bytes they cover, bugcheck call
/// sites, panic paths, and indirect calls and jumps that cannot be followed.
pub fn disassembly_table(reports: &[DriverReport], baselines: &[DriverReport]) -> String {
    let width = reports
        .iter()
        .chain(baselines)
        .map(|r| r.driver.sys_name().len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<width$}  {:>9}  {:>6}  {:>12}  {:>13}  {:>14}  {:>11}  {:>10}",
        "driver",
        "functions",
        "pdata",
        "instructions",
        "decoded bytes",
        "bugcheck calls",
        "panic paths",
        "unresolved"
    );
    for r in reports.iter().chain(baselines) {
        let Some(a) = &r.report.disasm else {
            let _ = writeln!(table, "{:<width$}  (not disassembled)", r.driver.sys_name());
            continue;
        };
        let _ = writeln!(
            table,
            "{:<width$}  {:>9}  {:>6}  {:>12}  {:>13}  {:>14}  {:>11}  {:>10}",
            r.driver.sys_name(),
            a.functions(),
            a.pdata_functions,
            a.instructions,
            format!("{}/{}", a.decoded_bytes, a.code_bytes),
            a.bugcheck_calls.len(),
            a.paths.len(),
            a.unresolved.len()
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(packages: Value) -> Value {
        serde_json::json!({ "packages": packages, "target_directory": "/t" })
    }

    fn package(name: &str, driver: Value) -> Value {
        serde_json::json!({
            "name": name,
            "metadata": { "fsfilter": { "driver": driver } },
            "targets": [{ "name": name.replace('-', "_"), "kind": ["rlib"] }],
        })
    }

    #[test]
    fn drivers_are_found_by_metadata_and_sorted() {
        let m = metadata(serde_json::json!([
            package("b-legacy", serde_json::json!({ "sample": "b", "model": "legacy" })),
            { "name": "plain", "metadata": null, "targets": [] },
            package("b-mini", serde_json::json!({ "sample": "b", "model": "minifilter" })),
            package("a-legacy", serde_json::json!({ "sample": "a", "model": "legacy" })),
        ]));
        let drivers = drivers_from_metadata(&m).unwrap();
        let names: Vec<String> = drivers.iter().map(Driver::sys_name).collect();
        assert_eq!(names, ["a-legacy.sys", "b-minifilter.sys", "b-legacy.sys"]);
        assert_eq!(drivers[1].crate_name, "b_mini");
    }

    #[test]
    fn a_bad_model_names_the_package() {
        let m = metadata(serde_json::json!([package(
            "x",
            serde_json::json!({ "sample": "x", "model": "wdf" })
        )]));
        let error = drivers_from_metadata(&m).unwrap_err().to_string();
        assert!(error.contains("package `x`") && error.contains("\"wdf\""), "{error}");
    }

    #[test]
    fn two_packages_building_the_same_sys_are_refused() {
        let spec = serde_json::json!({ "sample": "x", "model": "legacy" });
        let m = metadata(serde_json::json!([package("x1", spec.clone()), package("x2", spec)]));
        let error = drivers_from_metadata(&m).unwrap_err().to_string();
        assert!(error.contains("x-legacy.sys"), "{error}");
    }

    #[test]
    fn size_limits() {
        assert_eq!(size_limit("passthrough-minifilter"), 16 * 1024);
        assert_eq!(size_limit("passthrough-legacy"), 32 * 1024);
    }

    #[test]
    fn the_build_command_drops_rustflags() {
        let driver = Driver {
            package: "p".into(),
            crate_name: "p".into(),
            sample: "s".into(),
            model: Model::Legacy,
        };
        let command = build_command(Path::new("/ws"), &driver, Path::new("/ws/target"));
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        for expected in ["rustc", "--profile", "driver", "--target", TARGET, "--lib", "cdylib"] {
            assert!(args.iter().any(|a| a == expected), "{expected} missing from {args:?}");
        }
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| key.to_string_lossy().into_owned())
            .collect();
        for var in REMOVED_ENV {
            assert!(removed.iter().any(|r| r == var), "{var} not removed");
        }
    }
}
