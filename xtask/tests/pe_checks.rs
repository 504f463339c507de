//! The PE checker on deliberately broken images: a freshly built passthrough-minifilter.sys with
//! one field patched. Unless the checksum is what is under test, the checksum is recomputed after
//! the patch, so that each broken image fails exactly one check and the test asserts exactly that
//! violation.

#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap fails the test")]
#![allow(clippy::expect_used, reason = "test helpers: a failed expect fails the test")]
#![allow(clippy::indexing_slicing, reason = "test helpers patch known header offsets")]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use xtask::disasm::PanicPath;
use xtask::drivers::{self, Workspace};
use xtask::pe::{self, Layout, Violation};

/// The target directory the drivers are built in (as in `tests/drivers.rs`).
fn test_target_dir() -> PathBuf {
    let ws = Workspace::discover(&drivers::workspace_root()).unwrap();
    ws.target_dir.join("xtask-test")
}

/// passthrough-minifilter.sys, built once per test binary.
fn minifilter_image() -> Vec<u8> {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let ws = Workspace::discover(&drivers::workspace_root()).unwrap();
            let driver = ws.driver("passthrough-minifilter").expect("passthrough-minifilter");
            let built = drivers::build(&ws, driver, &test_target_dir(), true).unwrap();
            std::fs::read(&built.sys).unwrap()
        })
        .clone()
}

fn put_u16(data: &mut [u8], offset: usize, value: u16) {
    data[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(data: &mut [u8], offset: usize, value: u32) {
    data[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// Applies `patch` to a fresh image, recomputes the checksum and runs the checks.
fn violations_after(patch: impl FnOnce(&mut Vec<u8>, &Layout)) -> Vec<Violation> {
    let mut data = minifilter_image();
    let layout = Layout::parse(&data).unwrap();
    patch(&mut data, &layout);
    pe::fix_checksum(&mut data).unwrap();
    pe::check(&data).violations
}

/// The index of the section called `name`.
fn section_index(data: &[u8], name: &str) -> usize {
    pe::check(data).image.sections.iter().position(|s| s.name == name).unwrap()
}

#[test]
fn the_unpatched_image_passes_every_check() {
    let data = minifilter_image();
    let report = pe::check(&data);
    assert_eq!(report.violations, []);
    let layout = Layout::parse(&data).unwrap();
    // The linker's checksum (/RELEASE) is the one computed here.
    assert_ne!(report.image.checksum, 0);
    assert_eq!(report.image.checksum, pe::pe_checksum(&data, layout.checksum));
    assert_eq!(report.image.driver_entry, Some(report.image.entry_point));
    assert!(report.image.relocations > 0);
    // Recomputing the checksum of a good image changes nothing.
    let mut copy = data.clone();
    pe::fix_checksum(&mut copy).unwrap();
    assert_eq!(copy, data);
}

#[test]
fn subsystem_windows_gui_is_rejected() {
    let violations = violations_after(|data, layout| put_u16(data, layout.subsystem, 2));
    assert_eq!(violations, [Violation::Subsystem { found: 2 }]);
    assert_eq!(violations[0].check(), "subsystem");
}

#[test]
fn an_altered_checksum_is_rejected() {
    let mut data = minifilter_image();
    let layout = Layout::parse(&data).unwrap();
    let good = pe::read_u32(&data, layout.checksum).unwrap();
    put_u32(&mut data, layout.checksum, good ^ 0x10);
    assert_eq!(
        pe::check(&data).violations,
        [Violation::Checksum { header: good ^ 0x10, computed: good }]
    );
}

#[test]
fn a_zero_checksum_is_rejected() {
    let mut data = minifilter_image();
    let layout = Layout::parse(&data).unwrap();
    let good = pe::read_u32(&data, layout.checksum).unwrap();
    put_u32(&mut data, layout.checksum, 0);
    assert_eq!(pe::check(&data).violations, [Violation::ChecksumZero { computed: good }]);
}

#[test]
fn a_changed_byte_anywhere_breaks_the_checksum() {
    let mut data = minifilter_image();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    let violations = pe::check(&data).violations;
    assert!(matches!(violations.as_slice(), [Violation::Checksum { .. }]), "{violations:?}");
}

#[test]
fn a_writable_and_executable_text_section_is_rejected() {
    let violations = violations_after(|data, layout| {
        let at = layout.section_characteristics(section_index(data, ".text"));
        let characteristics = pe::read_u32(data, at).unwrap();
        put_u32(data, at, characteristics | pe::SCN_MEM_WRITE);
    });
    assert_eq!(violations, [Violation::WritableExecutable { section: ".text".into() }]);
}

#[test]
fn an_executable_data_section_is_rejected() {
    let violations = violations_after(|data, layout| {
        let at = layout.section_characteristics(section_index(data, ".data"));
        let characteristics = pe::read_u32(data, at).unwrap();
        put_u32(data, at, characteristics | pe::SCN_MEM_EXECUTE);
    });
    assert_eq!(violations, [Violation::WritableExecutable { section: ".data".into() }]);
}

#[test]
fn a_pageable_code_or_data_section_is_rejected() {
    for name in [".text", ".rdata", ".data", ".pdata"] {
        let violations = violations_after(|data, layout| {
            let at = layout.section_characteristics(section_index(data, name));
            let characteristics = pe::read_u32(data, at).unwrap();
            put_u32(data, at, characteristics & !pe::SCN_MEM_NOT_PAGED);
        });
        assert!(
            matches!(violations.as_slice(), [Violation::Paged { section, .. }] if section == name),
            "{name}: {violations:?}"
        );
    }
}

#[test]
fn an_import_renamed_to_ntdll_is_rejected() {
    let data = minifilter_image();
    let imports = pe::check(&data).image.imports;
    assert!(imports.len() >= 2, "{imports:?}");
    for dll in imports {
        let violations = violations_after(|data, _| {
            // The DLL name, with its terminating NUL, occurs once: in the import table.
            let needle = format!("{}\0", dll.name).into_bytes();
            let at: Vec<usize> = data
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == needle.as_slice())
                .map(|(i, _)| i)
                .collect();
            assert_eq!(at.len(), 1, "{} occurs {} times", dll.name, at.len());
            let mut renamed = b"ntdll.dll".to_vec();
            renamed.resize(needle.len(), 0);
            data[at[0]..at[0] + needle.len()].copy_from_slice(&renamed);
        });
        assert_eq!(violations, [Violation::Import { dll: "ntdll.dll".into() }], "{}", dll.name);
    }
}

/// `FltRegisterFilter` renamed to `KeBugCheckEx` in the import's hint/name entry: the real code
/// that registers the filter now "calls the bugcheck routine", so the disassembly must find those
/// call sites and the paths to them from `DriverEntry`.
fn image_with_filter_registration_as_bugcheck() -> Vec<u8> {
    let mut data = minifilter_image();
    let needle = b"FltRegisterFilter\0";
    let at: Vec<usize> = data
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "FltRegisterFilter occurs {} times", at.len());
    let mut renamed = b"KeBugCheckEx".to_vec();
    renamed.resize(needle.len(), 0);
    data[at[0]..at[0] + needle.len()].copy_from_slice(&renamed);
    pe::fix_checksum(&mut data).unwrap();
    data
}

#[test]
fn a_bugcheck_import_in_real_code_is_traced_to_its_call_sites_and_paths() {
    let good = pe::check(&minifilter_image());
    let good = good.disasm.unwrap();
    assert_eq!((good.bugcheck_calls.len(), good.paths.len()), (0, 0));

    let report = pe::check(&image_with_filter_registration_as_bugcheck());
    let a = report.disasm.as_ref().unwrap();
    // The same code, decoded the same way: only the import's name changed.
    assert_eq!((a.instructions, a.functions()), (good.instructions, good.functions()));
    assert_eq!(a.bugcheck_slots.len(), 1);
    assert!(!a.bugcheck_calls.is_empty(), "{a:?}");
    assert!(!a.panic_functions.is_empty());
    // DriverEntry registers the filter, so it reaches the "bugcheck": a root path.
    let entry = report.image.entry_point;
    assert!(
        a.paths.contains(&PanicPath::Root { function: entry, name: "the entry point".into() }),
        "{:?}",
        a.paths
    );
    // Every path leads into a function that calls the routine or reaches one that does.
    let reaching: Vec<u32> =
        a.panic_functions.iter().chain(&a.reaching_functions).copied().collect();
    for path in &a.paths {
        let callee = match path {
            PanicPath::Call { callee, .. }
            | PanicPath::AddressTaken { callee, .. }
            | PanicPath::Pointer { callee, .. } => *callee,
            PanicPath::Root { function, .. } => *function,
        };
        assert!(reaching.contains(&callee), "{path:?} leads to {callee:#x}, not in {reaching:x?}");
    }
    // The violations: the import, naming the call sites, and one per path; nothing else.
    let sites: Vec<(u32, u32)> = a.bugcheck_calls.iter().map(|c| (c.site, c.function)).collect();
    let mut expected = vec![Violation::PanicPath {
        function: "KeBugCheckEx".into(),
        call_sites: sites,
        paths: a.paths.len(),
    }];
    expected.extend(a.paths.iter().cloned().map(Violation::PanicReach));
    assert_eq!(report.violations, expected);
}

#[test]
fn import_names_are_compared_case_insensitively() {
    let violations = violations_after(|data, _| {
        for name in ["ntoskrnl.exe", "fltmgr.sys"] {
            let needle = format!("{name}\0").into_bytes();
            if let Some(at) = data.windows(needle.len()).position(|w| w == needle.as_slice()) {
                data[at..at + name.len()].make_ascii_uppercase();
            }
        }
    });
    assert_eq!(violations, []);
}

#[test]
fn an_entry_point_other_than_driver_entry_is_rejected() {
    let data = minifilter_image();
    let entry = pe::check(&data).image.entry_point;
    let violations = violations_after(|data, layout| put_u32(data, layout.entry_point, entry + 16));
    assert_eq!(violations, [Violation::EntryPoint { entry: entry + 16, driver_entry: entry }]);
}

#[test]
fn a_missing_relocation_directory_is_rejected() {
    let violations = violations_after(|data, layout| {
        let at = layout.data_directory(pe::DIRECTORY_BASERELOC);
        put_u32(data, at, 0);
        put_u32(data, at + 4, 0);
    });
    assert_eq!(violations, [Violation::NoRelocations]);
}

#[test]
fn a_tls_directory_is_rejected() {
    let violations = violations_after(|data, layout| {
        let at = layout.data_directory(pe::DIRECTORY_TLS);
        put_u32(data, at, 0x1000);
        put_u32(data, at + 4, 40);
    });
    assert_eq!(violations, [Violation::Tls { rva: 0x1000, size: 40 }]);
}

#[test]
fn a_machine_other_than_amd64_is_rejected() {
    let violations = violations_after(|data, layout| put_u16(data, layout.machine, 0xaa64));
    assert_eq!(violations, [Violation::Machine { found: 0xaa64 }]);
}

#[test]
fn a_pe32_optional_header_is_rejected() {
    let violations = violations_after(|data, layout| put_u16(data, layout.magic, 0x10b));
    assert_eq!(violations, [Violation::Magic { found: 0x10b }]);
}

#[test]
fn a_truncated_file_is_malformed() {
    let data = minifilter_image();
    let violations = pe::check(&data[..0x100]).violations;
    assert!(matches!(violations.as_slice(), [Violation::Malformed(_)]), "{violations:?}");
    let violations = pe::check(b"not a PE image").violations;
    assert!(matches!(violations.as_slice(), [Violation::Malformed(_)]), "{violations:?}");
}

#[test]
fn check_pe_exits_non_zero_and_names_the_violated_check() {
    let dir = test_target_dir().join("pe-checks");
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.sys");
    std::fs::write(&good, minifilter_image()).unwrap();
    let mut bad_image = minifilter_image();
    let subsystem = Layout::parse(&bad_image).unwrap().subsystem;
    put_u16(&mut bad_image, subsystem, 2);
    pe::fix_checksum(&mut bad_image).unwrap();
    let bad = dir.join("bad.sys");
    std::fs::write(&bad, bad_image).unwrap();

    let xtask = env!("CARGO_BIN_EXE_xtask");
    let output = Command::new(xtask).arg("check-pe").arg(&good).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("0 bugcheck call sites, 0 panic paths"), "{stdout}");

    let output = Command::new(xtask).arg("check-pe").arg(&good).arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.sys: [subsystem] subsystem is 2"), "{stderr}");
    assert!(!stderr.contains("good.sys"), "{stderr}");

    // A reachable "bugcheck": the failure names the call sites and the paths.
    let panicking = dir.join("panicking.sys");
    std::fs::write(&panicking, image_with_filter_registration_as_bugcheck()).unwrap();
    let output = Command::new(xtask).arg("check-pe").arg(&panicking).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[panic-free] imports `KeBugCheckEx`"), "{stderr}");
    assert!(stderr.contains("called at RVA 0x"), "{stderr}");
    assert!(stderr.contains("[panic-free] panic path: the entry point"), "{stderr}");
}

/// The names of the checks that failed, and the messages, for tests that name the check.
fn failed_checks(violations: &[Violation]) -> (Vec<&'static str>, String) {
    let names = violations.iter().map(Violation::check).collect();
    let text = violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    (names, text)
}

#[test]
fn file_header_flags_a_driver_cannot_load_with_are_rejected() {
    // (bit, set it or clear it, the flag's name in the message)
    let cases = [
        (0x0001u16, true, "IMAGE_FILE_RELOCS_STRIPPED"),
        (0x0002, false, "IMAGE_FILE_EXECUTABLE_IMAGE"),
        (0x4000, true, "IMAGE_FILE_UP_SYSTEM_ONLY"),
    ];
    for (bit, set, name) in cases {
        let violations = violations_after(|data, layout| {
            let at = layout.file_characteristics;
            let flags = pe::read_u16(data, at).unwrap();
            put_u16(data, at, if set { flags | bit } else { flags & !bit });
        });
        let (checks, text) = failed_checks(&violations);
        assert_eq!(checks, ["file-flags"], "{name}: {text}");
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn a_section_alignment_below_the_page_size_is_rejected() {
    // SectionAlignment equal to FileAlignment (0x200) is a valid PE image, but memory integrity
    // (HVCI) requires section alignment to be a multiple of 0x1000.
    let violations = violations_after(|data, layout| {
        put_u32(data, layout.optional_header + 32, 0x200);
    });
    let (checks, text) = failed_checks(&violations);
    assert_eq!(checks, ["alignment"], "{text}");
    assert!(text.contains("SectionAlignment is 0x200"), "{text}");
    // A FileAlignment that is not a power of two between 512 and 64 KiB (the PE format).
    let violations = violations_after(|data, layout| {
        put_u32(data, layout.optional_header + 36, 0x300);
    });
    let (checks, text) = failed_checks(&violations);
    assert_eq!(checks, ["alignment"], "{text}");
    assert!(text.contains("FileAlignment is 0x300"), "{text}");
}

#[test]
fn a_discardable_code_or_data_section_is_rejected() {
    // The kernel frees discardable sections once DriverEntry has returned: code or data there
    // is gone when a callback runs. Only `.reloc` (and an `INIT` section) may be discardable.
    for name in [".text", ".rdata", ".data", ".pdata"] {
        let violations = violations_after(|data, layout| {
            let at = layout.section_characteristics(section_index(data, name));
            let characteristics = pe::read_u32(data, at).unwrap();
            put_u32(data, at, characteristics | pe::SCN_MEM_DISCARDABLE);
        });
        let (checks, text) = failed_checks(&violations);
        assert_eq!(checks, ["discardable"], "{name}: {text}");
        assert!(text.contains(&format!("section `{name}`")), "{text}");
    }
}

#[test]
fn an_executable_section_without_the_code_flag_is_still_checked() {
    // IMAGE_SCN_MEM_EXECUTE is what makes the pages executable; IMAGE_SCN_CNT_CODE only
    // describes the contents. A pageable executable section without the flag must still fail.
    let violations = violations_after(|data, layout| {
        let at = layout.section_characteristics(section_index(data, ".text"));
        let characteristics = pe::read_u32(data, at).unwrap();
        put_u32(data, at, characteristics & !(pe::SCN_CNT_CODE | pe::SCN_MEM_NOT_PAGED));
    });
    let (checks, text) = failed_checks(&violations);
    assert_eq!(checks, ["non-paged"], "{text}");
    assert!(text.contains("section `.text`"), "{text}");
}
