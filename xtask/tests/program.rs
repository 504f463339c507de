//! The user-mode programs (spy-reader.exe) build for Windows and pass the console-program checks;
//! the checks reject images patched to break each rule. Built in `target/xtask-test`, as the
//! drivers' tests do.

#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap fails the test")]
#![allow(clippy::expect_used, reason = "test helpers: a failed expect fails the test")]
#![allow(clippy::indexing_slicing, reason = "test helpers patch known header offsets")]

use std::path::PathBuf;
use std::sync::OnceLock;

use xtask::drivers::{self, Workspace};
use xtask::pe::{self, Layout};
use xtask::program::{self, Violation};

fn test_target_dir() -> PathBuf {
    let ws = Workspace::discover(&drivers::workspace_root()).unwrap();
    ws.target_dir.join("xtask-test")
}

/// spy-reader.exe, built once per test binary.
fn reader_image() -> Vec<u8> {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let root = drivers::workspace_root();
            let programs = program::discover(&root).unwrap();
            let reader = programs.iter().find(|p| p.bin == "spy-reader").expect("spy-reader");
            let built = program::build(&root, reader, &test_target_dir(), true).unwrap();
            assert!(built.exe.with_extension("pdb").is_file(), "no PDB beside the .exe");
            std::fs::read(&built.exe).unwrap()
        })
        .clone()
}

fn patched(patch: impl FnOnce(&mut Vec<u8>, &Layout)) -> Vec<Violation> {
    let mut data = reader_image();
    let layout = Layout::parse(&data).unwrap();
    patch(&mut data, &layout);
    program::check(&data).violations
}

fn put_u16(data: &mut [u8], offset: usize, value: u16) {
    data[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(data: &mut [u8], offset: usize, value: u32) {
    data[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn the_reader_is_a_console_program_importing_only_kernel32_and_fltlib() {
    let report = program::check(&reader_image());
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.subsystem, program::SUBSYSTEM_CONSOLE);
    let dlls: Vec<&str> = report.imports.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(dlls, ["kernel32.dll", "fltlib.dll"], "{}", report.import_list());
    let fltlib = &report.imports[1].functions;
    assert_eq!(fltlib, &["FilterConnectCommunicationPort", "FilterSendMessage"]);
    for f in ["CreateFileW", "DeviceIoControl", "CloseHandle", "WriteFile", "ExitProcess"] {
        assert!(report.imports[0].functions.iter().any(|g| g == f), "{f} not imported");
    }
    // No kernel-driver leftovers: the sections are pageable, the data not executable.
    for s in &report.sections {
        assert_eq!(s.characteristics & pe::SCN_MEM_NOT_PAGED, 0, "{} not paged", s.name);
    }
    let text = report.sections.iter().find(|s| s.name == ".text").unwrap();
    assert_ne!(text.characteristics & pe::SCN_MEM_EXECUTE, 0);
    assert!(report.size < program::SIZE_LIMIT);
}

#[test]
fn a_native_or_gui_subsystem_is_rejected() {
    for subsystem in [pe::SUBSYSTEM_NATIVE, 2] {
        let v = patched(|d, l| put_u16(d, l.subsystem, subsystem));
        assert_eq!(v, [Violation::Subsystem(subsystem)]);
    }
}

#[test]
fn a_dll_or_a_wdm_driver_is_rejected() {
    let v = patched(|d, l| {
        let flags = pe::read_u16(d, l.file_characteristics).unwrap();
        put_u16(d, l.file_characteristics, flags | program::FILE_DLL);
    });
    assert_eq!(v, [Violation::FileFlag("IMAGE_FILE_DLL", false)]);
    let v = patched(|d, l| {
        let at = l.optional_header + 70;
        let flags = pe::read_u16(d, at).unwrap();
        put_u16(d, at, (flags | program::DLL_WDM_DRIVER) & !program::DLL_NX_COMPAT);
    });
    assert_eq!(
        v,
        [
            Violation::DllFlag("IMAGE_DLLCHARACTERISTICS_NX_COMPAT", true),
            Violation::DllFlag("IMAGE_DLLCHARACTERISTICS_WDM_DRIVER", false),
        ]
    );
}

#[test]
fn an_entry_point_outside_the_code_is_rejected() {
    for entry in [0, 0x10_0000] {
        let v = patched(|d, l| put_u32(d, l.entry_point, entry));
        assert_eq!(v, [Violation::EntryPoint(entry)]);
    }
}

#[test]
fn an_import_from_another_dll_is_rejected() {
    // The DLL name in the import table, renamed in place (same length).
    let v = patched(|d, _| {
        let at = d.windows(10).position(|w| w == b"fltlib.dll").unwrap();
        d[at..at + 10].copy_from_slice(b"user32.dll");
    });
    assert_eq!(v, [Violation::Import("user32.dll".into())]);
    // Case does not matter.
    let v = patched(|d, _| {
        let at = d.windows(12).position(|w| w == b"kernel32.dll").unwrap();
        d[at..at + 12].copy_from_slice(b"KERNEL32.DLL");
    });
    assert_eq!(v, []);
}

#[test]
fn a_tls_directory_or_a_writable_code_section_is_rejected() {
    let v = patched(|d, l| {
        let at = l.data_directory(pe::DIRECTORY_TLS);
        put_u32(d, at, 0x1000);
        put_u32(d, at + 4, 0x28);
    });
    assert_eq!(v, [Violation::Tls(0x1000, 0x28)]);
    let v = patched(|d, l| {
        let at = l.section_characteristics(0);
        let c = pe::read_u32(d, at).unwrap();
        put_u32(d, at, c | pe::SCN_MEM_WRITE);
    });
    assert_eq!(v, [Violation::WritableExecutable(".text".into())]);
}
