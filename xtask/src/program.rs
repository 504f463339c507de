//! The user-mode programs of the samples (`spy-reader.exe`): built for `x86_64-pc-windows-msvc`
//! beside the drivers and checked as Windows console programs.
//!
//! A program is a workspace package whose manifest says
//! `[package.metadata.fsfilter] program = { bin = "<name>" }`. It is built with `cargo rustc
//! --profile driver --target x86_64-pc-windows-msvc -p <package> --bin <name>` (the same
//! environment as the drivers: no `RUSTFLAGS`) and copied to `<target>/drivers/<name>.exe` (and
//! `.pdb`). The package's build script replaces the kernel link arguments of
//! `.cargo/config.toml` with a console program's; these checks confirm that it did.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use object::read::pe::PeFile64;
use serde_json::Value;

use crate::drivers::{self, PROFILE, REMOVED_ENV, TARGET, Workspace, cargo};
use crate::pe::{self, ImportedDll, Layout, Section};

/// `IMAGE_SUBSYSTEM_WINDOWS_CUI`: a console program.
pub const SUBSYSTEM_CONSOLE: u16 = 3;
/// The DLLs a program may import from (compared case-insensitively): the Win32 base, the Filter
/// Manager's user-mode library, the native API.
pub const ALLOWED_IMPORTS: [&str; 3] = ["kernel32.dll", "fltlib.dll", "ntdll.dll"];
/// Every program must be smaller than this.
pub const SIZE_LIMIT: u64 = 64 * 1024;
/// `IMAGE_FILE_DLL`.
pub const FILE_DLL: u16 = 0x2000;
/// `IMAGE_FILE_EXECUTABLE_IMAGE`.
pub const FILE_EXECUTABLE_IMAGE: u16 = 0x0002;
/// `IMAGE_FILE_RELOCS_STRIPPED`.
pub const FILE_RELOCS_STRIPPED: u16 = 0x0001;
/// `IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE`: the loader may place it anywhere (ASLR).
pub const DLL_DYNAMIC_BASE: u16 = 0x0040;
/// `IMAGE_DLLCHARACTERISTICS_NX_COMPAT`: data is not executable (DEP).
pub const DLL_NX_COMPAT: u16 = 0x0100;
/// `IMAGE_DLLCHARACTERISTICS_WDM_DRIVER`: a kernel driver's flag (`/DRIVER:WDM`).
pub const DLL_WDM_DRIVER: u16 = 0x2000;
/// Offset of `DllCharacteristics` in the optional header (just after `Subsystem`).
const DLL_CHARACTERISTICS: usize = 70;

/// A user-mode program package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The cargo package.
    pub package: String,
    /// The binary target's name (the image is `<bin>.exe`).
    pub bin: String,
}

impl Program {
    /// `<bin>.exe`.
    pub fn exe_name(&self) -> String {
        format!("{}.exe", self.bin)
    }
}

/// The programs among the packages of a `cargo metadata` document.
pub fn programs_from_metadata(metadata: &Value) -> Result<Vec<Program>> {
    let packages = metadata["packages"]
        .as_array()
        .ok_or_else(|| anyhow!("`cargo metadata` output has no packages"))?;
    let mut programs = vec![];
    for package in packages {
        let name = package["name"].as_str().unwrap_or("<unnamed>");
        let spec = &package["metadata"]["fsfilter"]["program"];
        if spec.is_null() {
            continue;
        }
        let bin = spec["bin"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
            anyhow!("package `{name}`: [package.metadata.fsfilter] program has no `bin`")
        })?;
        let has_bin = package["targets"].as_array().into_iter().flatten().any(|t| {
            t["name"].as_str() == Some(bin)
                && t["kind"].as_array().into_iter().flatten().any(|k| k.as_str() == Some("bin"))
        });
        if !has_bin {
            bail!("package `{name}`: [package.metadata.fsfilter] program names no binary `{bin}`");
        }
        programs.push(Program { package: name.to_string(), bin: bin.to_string() });
    }
    programs.sort_by(|a, b| a.bin.cmp(&b.bin));
    Ok(programs)
}

/// The programs of the workspace at `root`.
pub fn discover(root: &Path) -> Result<Vec<Program>> {
    let output = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .output()
        .context("running `cargo metadata`")?;
    if !output.status.success() {
        bail!("`cargo metadata` failed ({})", output.status);
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("parsing `cargo metadata` output")?;
    programs_from_metadata(&metadata)
}

/// The `cargo rustc` command that builds `program`, with every variable of [`REMOVED_ENV`]
/// removed from its environment.
pub fn build_command(root: &Path, program: &Program, target_dir: &Path) -> Command {
    let mut command = Command::new(cargo());
    command
        .args(["rustc", "--profile", PROFILE, "--target", TARGET, "-p", &program.package])
        .args(["--bin", &program.bin, "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(root);
    for var in REMOVED_ENV {
        command.env_remove(var);
    }
    command
}

/// A program built and copied to `<target>/drivers/`.
#[derive(Debug, Clone)]
pub struct Built {
    /// Which program.
    pub program: Program,
    /// `<target>/drivers/<bin>.exe`.
    pub exe: PathBuf,
}

/// Builds one program and copies its image and PDB to `<target_dir>/drivers/`.
pub fn build(root: &Path, program: &Program, target_dir: &Path, capture: bool) -> Result<Built> {
    let mut command = build_command(root, program, target_dir);
    let (status, stderr) = if capture {
        let output = command.output().with_context(|| format!("running {command:?}"))?;
        (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
    } else {
        (command.status().with_context(|| format!("running {command:?}"))?, String::new())
    };
    if !status.success() {
        bail!(
            "{}: building package `{}` failed ({status}):\n{stderr}",
            program.exe_name(),
            program.package
        );
    }
    let artifacts = target_dir.join(TARGET).join(PROFILE);
    let out = target_dir.join("drivers");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let exe = out.join(program.exe_name());
    // rustc names the PDB after the crate (dashes as underscores).
    let pdb_from = artifacts.join(format!("{}.pdb", program.bin.replace('-', "_")));
    for (from, to) in [
        (artifacts.join(program.exe_name()), exe.clone()),
        (pdb_from, out.join(format!("{}.pdb", program.bin))),
    ] {
        // Copy, then rename: a reader of `to` never sees half a file.
        let partial = to.with_extension(format!("partial-{}", std::process::id()));
        fs::copy(&from, &partial).and_then(|_| fs::rename(&partial, &to)).with_context(|| {
            format!("{}: copying {} to {}", program.exe_name(), from.display(), to.display())
        })?;
    }
    Ok(Built { program: program.clone(), exe })
}

/// One failed check of a program image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Not a PE image that can be read.
    Malformed(String),
    /// `Machine` is not AMD64.
    Machine(u16),
    /// The optional header is not PE32+.
    Magic(u16),
    /// `Subsystem` is not CONSOLE.
    Subsystem(u16),
    /// A file-header flag wrong: (name, whether a program must have it).
    FileFlag(&'static str, bool),
    /// A DLL characteristic wrong: (name, whether a program must have it).
    DllFlag(&'static str, bool),
    /// `AddressOfEntryPoint` is 0 or outside every executable section.
    EntryPoint(u32),
    /// An import from a DLL outside [`ALLOWED_IMPORTS`] (or delay-loaded).
    Import(String),
    /// A TLS directory: (RVA, size).
    Tls(u32, u32),
    /// A section both writable and executable.
    WritableExecutable(String),
    /// Relocatable (`DYNAMIC_BASE`) without a relocation.
    NoRelocations,
    /// Over [`SIZE_LIMIT`]: (size, limit).
    TooLarge(u64, u64),
}

impl Violation {
    /// The short name of the check that failed.
    pub fn check(&self) -> &'static str {
        match self {
            Violation::Malformed(_) => "pe-format",
            Violation::Machine(_) => "machine",
            Violation::Magic(_) => "pe32+",
            Violation::Subsystem(_) => "subsystem",
            Violation::FileFlag(..) => "file-flags",
            Violation::DllFlag(..) => "dll-flags",
            Violation::EntryPoint(_) => "entry-point",
            Violation::Import(_) => "imports",
            Violation::Tls(..) => "tls",
            Violation::WritableExecutable(_) => "w^x",
            Violation::NoRelocations => "relocations",
            Violation::TooLarge(..) => "size",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.check())?;
        match self {
            Violation::Malformed(why) => write!(f, "not a readable PE image: {why}"),
            Violation::Machine(m) => write!(f, "machine is {m:#06x}, expected AMD64 (0x8664)"),
            Violation::Magic(m) => write!(f, "optional header magic is {m:#05x}, expected PE32+"),
            Violation::Subsystem(s) => write!(
                f,
                "subsystem is {s}, expected CONSOLE ({SUBSYSTEM_CONSOLE}): the package's build \
                 script must pass /SUBSYSTEM:CONSOLE after the kernel link arguments"
            ),
            Violation::FileFlag(flag, true) | Violation::DllFlag(flag, true) => {
                write!(f, "{flag} is missing")
            }
            Violation::FileFlag(flag, false) | Violation::DllFlag(flag, false) => {
                write!(f, "{flag} is set: not a console program's")
            }
            Violation::EntryPoint(rva) => write!(
                f,
                "entry point RVA {rva:#x} is not in an executable section (/ENTRY:mainCRTStartup)"
            ),
            Violation::Import(dll) => write!(
                f,
                "imports from `{dll}`; the program may import only from {} (not delay-loaded)",
                ALLOWED_IMPORTS.join(", ")
            ),
            Violation::Tls(rva, size) => {
                write!(f, "has a TLS directory (RVA {rva:#x}, {size} bytes): no CRT to run it")
            }
            Violation::WritableExecutable(s) => {
                write!(f, "section `{s}` is both writable and executable")
            }
            Violation::NoRelocations => {
                write!(f, "DYNAMIC_BASE without a base relocation: the loader cannot move it")
            }
            Violation::TooLarge(size, limit) => {
                write!(f, "the .exe is {size} bytes; it must be under {limit} bytes")
            }
        }
    }
}

/// What the checks read from a program image, and what failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The file's size in bytes.
    pub size: u64,
    /// `Subsystem`.
    pub subsystem: u16,
    /// `AddressOfEntryPoint`.
    pub entry_point: u32,
    /// The sections, in table order.
    pub sections: Vec<Section>,
    /// The imported DLLs and functions, in table order.
    pub imports: Vec<ImportedDll>,
    /// The failed checks; empty if the image passed.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The imports as `dll: f, g; dll2: h`.
    pub fn import_list(&self) -> String {
        let dlls: Vec<String> = self
            .imports
            .iter()
            .map(|d| format!("{}: {}", d.name, d.functions.join(", ")))
            .collect();
        dlls.join("; ")
    }
}

/// Runs the console-program checks (and the size limit) on the bytes of an .exe.
pub fn check(data: &[u8]) -> Report {
    let mut report = Report { size: data.len() as u64, ..Report::default() };
    let layout = match Layout::parse(data) {
        Ok(layout) => layout,
        Err(why) => {
            report.violations.push(Violation::Malformed(why));
            return report;
        }
    };
    let v = &mut report.violations;
    let machine = pe::read_u16(data, layout.machine).unwrap_or(0);
    if machine != pe::MACHINE_AMD64 {
        v.push(Violation::Machine(machine));
    }
    let magic = pe::read_u16(data, layout.magic).unwrap_or(0);
    if magic != pe::PE32_PLUS_MAGIC {
        v.push(Violation::Magic(magic));
        return report;
    }
    let file_flags = pe::read_u16(data, layout.file_characteristics).unwrap_or(0);
    for (bit, name, required) in [
        (FILE_EXECUTABLE_IMAGE, "IMAGE_FILE_EXECUTABLE_IMAGE", true),
        (FILE_DLL, "IMAGE_FILE_DLL", false),
        (FILE_RELOCS_STRIPPED, "IMAGE_FILE_RELOCS_STRIPPED", false),
    ] {
        if (file_flags & bit != 0) != required {
            v.push(Violation::FileFlag(name, required));
        }
    }
    report.subsystem = pe::read_u16(data, layout.subsystem).unwrap_or(0);
    if report.subsystem != SUBSYSTEM_CONSOLE {
        v.push(Violation::Subsystem(report.subsystem));
    }
    let dll_flags = pe::read_u16(data, layout.optional_header + DLL_CHARACTERISTICS).unwrap_or(0);
    for (bit, name, required) in [
        (DLL_DYNAMIC_BASE, "IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE", true),
        (DLL_NX_COMPAT, "IMAGE_DLLCHARACTERISTICS_NX_COMPAT", true),
        (DLL_WDM_DRIVER, "IMAGE_DLLCHARACTERISTICS_WDM_DRIVER", false),
    ] {
        if (dll_flags & bit != 0) != required {
            v.push(Violation::DllFlag(name, required));
        }
    }

    // Sections: W^X; the entry point inside an executable one.
    report.entry_point = pe::read_u32(data, layout.entry_point).unwrap_or(0);
    let mut entry_in_code = false;
    for index in 0..layout.section_count {
        let header = layout.section_header(index);
        let raw = data.get(header..header + 8).unwrap_or(&[]);
        let name_len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(&raw[..name_len]).into_owned();
        let characteristics =
            pe::read_u32(data, layout.section_characteristics(index)).unwrap_or(0);
        if characteristics & pe::SCN_MEM_WRITE != 0 && characteristics & pe::SCN_MEM_EXECUTE != 0 {
            v.push(Violation::WritableExecutable(name.clone()));
        }
        let rva = pe::read_u32(data, header + 12).unwrap_or(0);
        let size = pe::read_u32(data, header + 8).unwrap_or(0);
        if characteristics & pe::SCN_MEM_EXECUTE != 0
            && report.entry_point != 0
            && (rva..rva.saturating_add(size)).contains(&report.entry_point)
        {
            entry_in_code = true;
        }
        report.sections.push(Section { name, characteristics });
    }
    if !entry_in_code {
        v.push(Violation::EntryPoint(report.entry_point));
    }

    // TLS: none (the loader would run callbacks nobody wrote).
    let tls = layout.data_directory(pe::DIRECTORY_TLS);
    let (tls_rva, tls_size) = if pe::DIRECTORY_TLS < layout.data_directory_count {
        (pe::read_u32(data, tls).unwrap_or(0), pe::read_u32(data, tls + 4).unwrap_or(0))
    } else {
        (0, 0)
    };
    if tls_rva != 0 || tls_size != 0 {
        v.push(Violation::Tls(tls_rva, tls_size));
    }

    if let Err(why) = read_imports_and_relocations(data, &layout, &mut report) {
        report.violations.push(Violation::Malformed(why));
    }
    if report.size >= SIZE_LIMIT {
        report.violations.push(Violation::TooLarge(report.size, SIZE_LIMIT));
    }
    report
}

/// The import table (names, and the DLLs' check), the delay-load table (refused) and the
/// base relocations (at least one).
fn read_imports_and_relocations(
    data: &[u8],
    layout: &Layout,
    report: &mut Report,
) -> Result<(), String> {
    let file = PeFile64::parse(data).map_err(|e| e.to_string())?;
    report.imports.extend(pe::read_imports(&file)?);
    for dll in &report.imports {
        let allowed = ALLOWED_IMPORTS.iter().any(|a| dll.name.eq_ignore_ascii_case(a));
        if !allowed || dll.delay_load {
            report.violations.push(Violation::Import(dll.name.clone()));
        }
    }

    let dll_flags = pe::read_u16(data, layout.optional_header + DLL_CHARACTERISTICS).unwrap_or(0);
    if dll_flags & DLL_DYNAMIC_BASE != 0 {
        let reloc = layout.data_directory(pe::DIRECTORY_BASERELOC);
        let size = if pe::DIRECTORY_BASERELOC < layout.data_directory_count {
            pe::read_u32(data, reloc + 4).unwrap_or(0)
        } else {
            0
        };
        let mut relocations = 0;
        if size != 0 {
            if let Some(blocks) = file
                .data_directories()
                .relocation_blocks(data, &file.section_table())
                .map_err(|e| format!("base relocations: {e}"))?
            {
                for block in blocks {
                    let block = block.map_err(|e| format!("base relocations: {e}"))?;
                    relocations +=
                        block.filter(|r| r.typ != object::pe::IMAGE_REL_BASED_ABSOLUTE).count();
                }
            }
        }
        if relocations == 0 {
            report.violations.push(Violation::NoRelocations);
        }
    }
    Ok(())
}

/// A program's build and check.
#[derive(Debug, Clone)]
pub struct ProgramReport {
    /// The program and where it is.
    pub built: Built,
    /// The checks.
    pub report: Report,
}

/// Builds and checks every program of the workspace.
pub fn build_and_check(options: &drivers::Options) -> Result<Vec<ProgramReport>> {
    let root = drivers::workspace_root();
    let ws = Workspace::discover(&root)?;
    let target_dir = options.target_dir.clone().unwrap_or_else(|| ws.target_dir.clone());
    let mut reports = vec![];
    for program in discover(&root)? {
        let built = build(&root, &program, &target_dir, options.capture_output)?;
        let data =
            fs::read(&built.exe).with_context(|| format!("reading {}", built.exe.display()))?;
        reports.push(ProgramReport { built, report: check(&data) });
    }
    Ok(reports)
}

/// The programs' table: program, bytes, limit, subsystem, entry point, imports, verdict,
/// sections; then each program's imports by DLL.
pub fn table(reports: &[ProgramReport]) -> String {
    use std::fmt::Write as _;
    let width = reports.iter().map(|r| r.built.program.exe_name().len()).max().unwrap_or(0).max(7);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<width$}  {:>6}  {:>6}  {:<9}  {:>8}  {:>7}  {:<6}  sections",
        "program", "bytes", "limit", "subsystem", "entry", "imports", "checks"
    );
    for r in reports {
        let sections: Vec<&str> = r.report.sections.iter().map(|s| s.name.as_str()).collect();
        let subsystem = match r.report.subsystem {
            SUBSYSTEM_CONSOLE => "console".to_owned(),
            other => other.to_string(),
        };
        let _ = writeln!(
            table,
            "{:<width$}  {:>6}  {:>6}  {:<9}  {:>#8x}  {:>7}  {:<6}  {} ({})",
            r.built.program.exe_name(),
            r.report.size,
            SIZE_LIMIT,
            subsystem,
            r.report.entry_point,
            r.report.imports.iter().map(|d| d.functions.len()).sum::<usize>(),
            if r.report.passed() { "ok" } else { "FAILED" },
            sections.len(),
            sections.join(" "),
        );
    }
    for r in reports {
        for dll in &r.report.imports {
            let _ = writeln!(
                table,
                "  {} imports from {}: {}",
                r.built.program.exe_name(),
                dll.name,
                dll.functions.join(", ")
            );
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_by_metadata() {
        let m = serde_json::json!({ "packages": [
            { "name": "r", "metadata": { "fsfilter": { "program": { "bin": "r-exe" } } },
              "targets": [{ "name": "r", "kind": ["lib"] }, { "name": "r-exe", "kind": ["bin"] }] },
            { "name": "d", "metadata": { "fsfilter": { "driver": { "sample": "d" } } },
              "targets": [] },
        ]});
        let programs = programs_from_metadata(&m).unwrap();
        assert_eq!(programs, [Program { package: "r".into(), bin: "r-exe".into() }]);
        assert_eq!(programs[0].exe_name(), "r-exe.exe");
        let m = serde_json::json!({ "packages": [
            { "name": "r", "metadata": { "fsfilter": { "program": { "bin": "nope" } } },
              "targets": [{ "name": "r", "kind": ["bin"] }] },
        ]});
        let e = programs_from_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("no binary `nope`"), "{e}");
    }

    #[test]
    fn the_build_command_names_the_binary_and_drops_rustflags() {
        let p = Program { package: "p".into(), bin: "b".into() };
        let command = build_command(Path::new("/ws"), &p, Path::new("/ws/target"));
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        for expected in ["rustc", "--profile", PROFILE, "--target", TARGET, "--bin", "b"] {
            assert!(args.iter().any(|a| a == expected), "{expected} missing from {args:?}");
        }
        assert!(!args.iter().any(|a| a == "--crate-type"));
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
