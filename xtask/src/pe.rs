//! The PE checks of a kernel driver image (docs/building.md, "What the PE checks verify").
//!
//! The headers, the section table and the data directories are read here, at their documented
//! offsets, so that every check can name the exact field it looked at and the tests can patch those
//! fields. The import, export and base-relocation tables are walked with the `object` crate, a
//! third-party parser (toolchain.md, "Checking a .sys without Windows").

use std::fmt;

use object::LittleEndian as LE;
use object::read::pe::{ExportTarget, PeFile64};

/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_NT_OPTIONAL_HDR64_MAGIC`: the optional header of a PE32+ image.
pub const PE32_PLUS_MAGIC: u16 = 0x20b;
/// `IMAGE_SUBSYSTEM_NATIVE`: kernel-mode drivers and native applications.
pub const SUBSYSTEM_NATIVE: u16 = 1;
/// `IMAGE_FILE_HEADER.Characteristics` bits a driver image must have (`true`) or must not have
/// (`false`), with the reason: the PE format and the linker's `/DRIVER`, which implies
/// `/FIXED:NO` (relocations kept) and, only as `/DRIVER:UPONLY`, the uniprocessor flag.
pub const FILE_FLAGS: [(u16, &str, bool, &str); 3] = [
    (
        0x0002,
        "IMAGE_FILE_EXECUTABLE_IMAGE",
        true,
        "without it the image is not valid (the linker found errors); the loader refuses it",
    ),
    (
        0x0001,
        "IMAGE_FILE_RELOCS_STRIPPED",
        false,
        "the image must be loaded at its preferred base, and the kernel chooses where a driver \
         goes (/FIXED; /DRIVER implies /FIXED:NO)",
    ),
    (
        0x4000,
        "IMAGE_FILE_UP_SYSTEM_ONLY",
        false,
        "the image may run only on a uniprocessor machine (/DRIVER:UPONLY)",
    ),
];
/// `IMAGE_SCN_CNT_CODE`.
pub const SCN_CNT_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_CNT_UNINITIALIZED_DATA`.
pub const SCN_CNT_UNINITIALIZED_DATA: u32 = 0x0000_0080;
/// `IMAGE_SCN_MEM_DISCARDABLE`: freed once the image is loaded (`INIT`, `.reloc`).
pub const SCN_MEM_DISCARDABLE: u32 = 0x0200_0000;
/// The sections that may be discardable: base relocations, applied while the image is loaded,
/// and `INIT`, the code and data that only `DriverEntry` uses (Learn,
/// kernel/writing-a-driverentry-routine: DriverEntry "should be in an INIT segment so it will be
/// discarded").
pub const DISCARDABLE_SECTIONS: [&str; 2] = [".reloc", "INIT"];
/// `IMAGE_SCN_MEM_NOT_PAGED`.
pub const SCN_MEM_NOT_PAGED: u32 = 0x0800_0000;
/// `IMAGE_SCN_MEM_EXECUTE`.
pub const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
/// `IMAGE_SCN_MEM_WRITE`.
pub const SCN_MEM_WRITE: u32 = 0x8000_0000;
/// The x64 page size: the section alignment must be a multiple of it.
pub const PAGE_SIZE: u32 = 0x1000;
/// `IMAGE_DIRECTORY_ENTRY_BASERELOC`.
pub const DIRECTORY_BASERELOC: usize = 5;
/// `IMAGE_DIRECTORY_ENTRY_TLS`.
pub const DIRECTORY_TLS: usize = 9;
/// The DLLs a driver may import from (compared case-insensitively).
pub const ALLOWED_IMPORTS: [&str; 3] = ["ntoskrnl.exe", "fltmgr.sys", "hal.dll"];
/// The export that must be the image's entry point.
pub const DRIVER_ENTRY: &str = "DriverEntry";

/// Offsets into the optional header of a PE32+ image.
mod opt {
    pub(super) const MAGIC: usize = 0;
    pub(super) const ADDRESS_OF_ENTRY_POINT: usize = 16;
    pub(super) const SECTION_ALIGNMENT: usize = 32;
    pub(super) const FILE_ALIGNMENT: usize = 36;
    pub(super) const CHECKSUM: usize = 64;
    pub(super) const SUBSYSTEM: usize = 68;
    pub(super) const NUMBER_OF_RVA_AND_SIZES: usize = 108;
    pub(super) const DATA_DIRECTORIES: usize = 112;
}

/// Size of a section header (`IMAGE_SIZEOF_SECTION_HEADER`).
const SECTION_HEADER_SIZE: usize = 40;
/// Offset of `Characteristics` in a section header.
const SECTION_CHARACTERISTICS: usize = 36;

/// File offsets of the header fields the checks read; the tests patch bytes at these offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `IMAGE_FILE_HEADER.Machine`.
    pub machine: usize,
    /// `IMAGE_FILE_HEADER.Characteristics`.
    pub file_characteristics: usize,
    /// The optional header (`IMAGE_OPTIONAL_HEADER64`).
    pub optional_header: usize,
    /// `OptionalHeader.Magic`.
    pub magic: usize,
    /// `OptionalHeader.AddressOfEntryPoint`.
    pub entry_point: usize,
    /// `OptionalHeader.SectionAlignment`.
    pub section_alignment: usize,
    /// `OptionalHeader.FileAlignment`.
    pub file_alignment: usize,
    /// `OptionalHeader.CheckSum`.
    pub checksum: usize,
    /// `OptionalHeader.Subsystem`.
    pub subsystem: usize,
    /// The data directories (`OptionalHeader.DataDirectory`), eight bytes each.
    pub data_directories: usize,
    /// How many data directories the header declares.
    pub data_directory_count: usize,
    /// The section table, `SECTION_HEADER_SIZE` bytes per section.
    pub section_table: usize,
    /// How many sections the file header declares.
    pub section_count: usize,
}

impl Layout {
    /// Finds the headers of a PE image: `MZ`, `e_lfanew`, `PE\0\0`, the file header and the
    /// optional header. Fails on anything too short or without those signatures.
    pub fn parse(data: &[u8]) -> Result<Layout, String> {
        if data.get(0..2) != Some(b"MZ") {
            return Err("no MZ signature: not a PE image".into());
        }
        let nt = read_u32(data, 0x3c).ok_or("file too short for e_lfanew")? as usize;
        if data.get(nt..nt + 4) != Some(b"PE\0\0") {
            return Err(format!("no PE signature at e_lfanew ({nt:#x})"));
        }
        let file_header = nt + 4;
        let section_count =
            usize::from(read_u16(data, file_header + 2).ok_or("truncated file header")?);
        let optional_size =
            usize::from(read_u16(data, file_header + 16).ok_or("truncated file header")?);
        let optional_header = file_header + 20;
        if optional_header + optional_size > data.len() {
            return Err("truncated optional header".into());
        }
        let data_directory_count =
            match read_u32(data, optional_header + opt::NUMBER_OF_RVA_AND_SIZES) {
                Some(n) if optional_size >= opt::DATA_DIRECTORIES => {
                    (n as usize).min((optional_size - opt::DATA_DIRECTORIES) / 8)
                }
                _ => 0,
            };
        let section_table = optional_header + optional_size;
        if section_table + section_count * SECTION_HEADER_SIZE > data.len() {
            return Err("truncated section table".into());
        }
        Ok(Layout {
            machine: file_header,
            file_characteristics: file_header + 18,
            optional_header,
            magic: optional_header + opt::MAGIC,
            entry_point: optional_header + opt::ADDRESS_OF_ENTRY_POINT,
            section_alignment: optional_header + opt::SECTION_ALIGNMENT,
            file_alignment: optional_header + opt::FILE_ALIGNMENT,
            checksum: optional_header + opt::CHECKSUM,
            subsystem: optional_header + opt::SUBSYSTEM,
            data_directories: optional_header + opt::DATA_DIRECTORIES,
            data_directory_count,
            section_table,
            section_count,
        })
    }

    /// File offset of the header of section `index`.
    pub fn section_header(&self, index: usize) -> usize {
        self.section_table + index * SECTION_HEADER_SIZE
    }

    /// File offset of the `Characteristics` field of section `index`.
    pub fn section_characteristics(&self, index: usize) -> usize {
        self.section_header(index) + SECTION_CHARACTERISTICS
    }

    /// File offset of data directory `index` (its RVA, followed by its size).
    pub fn data_directory(&self, index: usize) -> usize {
        self.data_directories + index * 8
    }

    /// Data directory `index` as (RVA, size); (0, 0) when the header does not declare it.
    fn directory(&self, data: &[u8], index: usize) -> (u32, u32) {
        if index >= self.data_directory_count {
            return (0, 0);
        }
        let at = self.data_directory(index);
        (read_u32(data, at).unwrap_or(0), read_u32(data, at + 4).unwrap_or(0))
    }
}

/// The standard PE image checksum (the algorithm of `CheckSumMappedFile`): the file summed as
/// little-endian 16-bit words with the carry folded back in after every addition, skipping the
/// four bytes of the `CheckSum` field itself, then the file length added.
pub fn pe_checksum(data: &[u8], checksum_offset: usize) -> u32 {
    let field = checksum_offset..checksum_offset.saturating_add(4);
    let byte =
        |i: usize| if field.contains(&i) { 0 } else { data.get(i).map_or(0, |b| u32::from(*b)) };
    let mut sum: u32 = 0;
    for offset in (0..data.len()).step_by(2) {
        sum += byte(offset) | (byte(offset + 1) << 8);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    // The length of a PE image fits in 32 bits; the checksum is defined modulo 2^32.
    sum.wrapping_add(data.len() as u32)
}

/// Recomputes the checksum of `data` and writes it into the header (what `/RELEASE` does).
pub fn fix_checksum(data: &mut [u8]) -> Result<u32, String> {
    let layout = Layout::parse(data)?;
    let sum = pe_checksum(data, layout.checksum);
    data[layout.checksum..layout.checksum + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(sum)
}

/// One failed check. [`Violation::check`] names the check; `Display` explains the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The file is not a PE image that can be read (no signature, truncated, bad tables).
    Malformed(String),
    /// `Machine` is not AMD64.
    Machine {
        /// The value found.
        found: u16,
    },
    /// A file-header characteristic ([`FILE_FLAGS`]) is set where it must not be, or missing.
    FileFlag {
        /// The flag's name.
        flag: &'static str,
        /// Whether a driver image must have it.
        required: bool,
    },
    /// The optional header is not PE32+.
    Magic {
        /// The value found.
        found: u16,
    },
    /// `Subsystem` is not NATIVE.
    Subsystem {
        /// The value found.
        found: u16,
    },
    /// `SectionAlignment` or `FileAlignment` breaks its rule.
    Alignment {
        /// `SectionAlignment` or `FileAlignment`.
        field: &'static str,
        /// The value found.
        value: u32,
        /// What the value must be.
        rule: &'static str,
    },
    /// No export named `DriverEntry`.
    NoDriverEntry,
    /// `AddressOfEntryPoint` is not the RVA of the exported `DriverEntry`.
    EntryPoint {
        /// `AddressOfEntryPoint`.
        entry: u32,
        /// The RVA of the `DriverEntry` export.
        driver_entry: u32,
    },
    /// An import from a DLL outside [`ALLOWED_IMPORTS`].
    Import {
        /// The DLL's name as written in the image.
        dll: String,
    },
    /// The `CheckSum` field is zero.
    ChecksumZero {
        /// The checksum computed from the file.
        computed: u32,
    },
    /// The `CheckSum` field differs from the checksum of the file.
    Checksum {
        /// The value in the header.
        header: u32,
        /// The checksum computed from the file.
        computed: u32,
    },
    /// A section with code or data that is not marked `IMAGE_SCN_MEM_NOT_PAGED`.
    Paged {
        /// The section's name.
        section: String,
        /// Its characteristics.
        characteristics: u32,
    },
    /// A discardable section with code or data other than [`DISCARDABLE_SECTIONS`].
    Discardable {
        /// The section's name.
        section: String,
    },
    /// A section both writable and executable.
    WritableExecutable {
        /// The section's name.
        section: String,
    },
    /// No base-relocation directory, or one without a relocation in it.
    NoRelocations,
    /// A TLS directory, which the kernel loader does not support.
    Tls {
        /// Its RVA.
        rva: u32,
        /// Its size.
        size: u32,
    },
    /// The image imports the bugcheck routine: the panic handler (the only caller of
    /// `KeBugCheckEx` in fsfilter drivers) survived LTO, so some path can panic. With LTO an
    /// unreachable panic handler is removed with its import, so the import is the witness. It
    /// fails even when the disassembly finds no path in (the handler is then present but
    /// unreachable: the message says so); the paths it finds are [`Violation::PanicReach`].
    PanicPath {
        /// The function imported.
        function: String,
        /// The instructions that call it, as (call site RVA, function start RVA), from the
        /// disassembly ([`crate::disasm`]); empty when no instruction calls it.
        call_sites: Vec<(u32, u32)>,
        /// How many panic paths the disassembly found (each is also a [`Violation::PanicReach`]).
        paths: usize,
    },
    /// The disassembly found a way into a function that reaches the bugcheck routine: a direct
    /// call or jump, a `lea` of it, a relocated pointer to it, or the entry point or an export.
    PanicReach(crate::disasm::PanicPath),
    /// Bytes inside a `.pdata` function that do not decode as an instruction: the disassembly
    /// of that function, and so the `panic-free` check, is incomplete.
    Undecodable {
        /// Start RVA of the function.
        function: u32,
        /// RVA of the first undecodable byte in it.
        rva: u32,
    },
    /// A function's exception handler or scope table is not the guarded copy's
    /// (`crate::seh`), or a minifilter with a message channel lacks that copy.
    Seh {
        /// The function's RVA (0 for the image as a whole).
        function: u32,
        /// What is wrong.
        why: String,
    },
    /// The .sys file is over its size limit (not a PE check: `cargo xtask drivers` adds it).
    TooLarge {
        /// The file's size in bytes.
        size: u64,
        /// The limit: the file must be smaller than this.
        limit: u64,
    },
}

impl Violation {
    /// The short name of the check that failed.
    pub fn check(&self) -> &'static str {
        match self {
            Violation::Malformed(_) => "pe-format",
            Violation::Machine { .. } => "machine",
            Violation::Magic { .. } => "pe32+",
            Violation::FileFlag { .. } => "file-flags",
            Violation::Subsystem { .. } => "subsystem",
            Violation::Alignment { .. } => "alignment",
            Violation::NoDriverEntry | Violation::EntryPoint { .. } => "entry-point",
            Violation::Import { .. } => "imports",
            Violation::ChecksumZero { .. } | Violation::Checksum { .. } => "checksum",
            Violation::Paged { .. } => "non-paged",
            Violation::Discardable { .. } => "discardable",
            Violation::WritableExecutable { .. } => "w^x",
            Violation::NoRelocations => "relocations",
            Violation::Tls { .. } => "tls",
            Violation::PanicPath { .. }
            | Violation::PanicReach(_)
            | Violation::Undecodable { .. } => "panic-free",
            Violation::Seh { .. } => "seh",
            Violation::TooLarge { .. } => "size",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.check())?;
        match self {
            Violation::Malformed(why) => write!(f, "not a readable PE image: {why}"),
            Violation::Machine { found } => {
                write!(f, "machine is {found:#06x}, expected AMD64 ({MACHINE_AMD64:#06x})")
            }
            Violation::FileFlag { flag, required } => {
                let why = FILE_FLAGS.iter().find(|f| f.1 == *flag).map_or("", |f| f.3);
                let state = if *required { "missing" } else { "set" };
                write!(f, "file header characteristic {flag} is {state}: {why}")
            }
            Violation::Magic { found } => write!(
                f,
                "optional header magic is {found:#05x}, expected PE32+ ({PE32_PLUS_MAGIC:#05x})"
            ),
            Violation::Subsystem { found } => write!(
                f,
                "subsystem is {found}, expected NATIVE ({SUBSYSTEM_NATIVE}): \
                 link with /SUBSYSTEM:NATIVE (is RUSTFLAGS set?)"
            ),
            Violation::Alignment { field, value, rule } => {
                write!(f, "{field} is {value:#x}; it must be {rule}")
            }
            Violation::NoDriverEntry => {
                write!(
                    f,
                    "no `{DRIVER_ENTRY}` export (build as a cdylib with `--crate-type cdylib`)"
                )
            }
            Violation::EntryPoint { entry, driver_entry } => write!(
                f,
                "entry point RVA {entry:#x} is not `{DRIVER_ENTRY}` ({driver_entry:#x}): \
                 link with /ENTRY:DriverEntry"
            ),
            Violation::Import { dll } => write!(
                f,
                "imports from `{dll}`; a driver may import only from {} \
                 (declare the function in shared/kernel's ntos module)",
                ALLOWED_IMPORTS.join(", ")
            ),
            Violation::ChecksumZero { computed } => write!(
                f,
                "checksum field is 0 (the file's checksum is {computed:#010x}): link with /RELEASE"
            ),
            Violation::Checksum { header, computed } => write!(
                f,
                "checksum field is {header:#010x} but the file's checksum is {computed:#010x}"
            ),
            Violation::Paged { section, characteristics } => write!(
                f,
                "section `{section}` (characteristics {characteristics:#010x}) is pageable: \
                 it needs IMAGE_SCN_MEM_NOT_PAGED (a /SECTION:{section},...P link argument)"
            ),
            Violation::Discardable { section } => write!(
                f,
                "section `{section}` is discardable (IMAGE_SCN_MEM_DISCARDABLE): the kernel frees \
                 such sections once the driver is initialized, so its code or data is gone when \
                 a callback runs; only {} may be discardable",
                DISCARDABLE_SECTIONS.join(" and ")
            ),
            Violation::WritableExecutable { section } => {
                write!(f, "section `{section}` is both writable and executable")
            }
            Violation::NoRelocations => {
                write!(f, "no base-relocation directory, or no relocation in it")
            }
            Violation::Tls { rva, size } => write!(
                f,
                "has a TLS directory (RVA {rva:#x}, {size} bytes); drivers cannot use \
                 thread-local storage"
            ),
            Violation::PanicPath { function, call_sites, paths } => {
                write!(f, "imports `{function}`: the panic handler survived LTO")?;
                if call_sites.is_empty() {
                    write!(f, "; no instruction calls it")?;
                } else {
                    let sites: Vec<String> = call_sites
                        .iter()
                        .map(|(site, function)| format!("{site:#x} (function {function:#x})"))
                        .collect();
                    write!(f, "; called at RVA {}", sites.join(", "))?;
                    if *paths == 0 {
                        write!(
                            f,
                            "; the disassembly finds no path into those functions (the handler \
                             is present but unreachable)"
                        )?;
                    } else {
                        write!(
                            f,
                            "; {paths} panic path(s) into them, listed as [panic-free] errors"
                        )?;
                    }
                }
                write!(
                    f,
                    " (the PDB names the functions; or `cargo rustc --profile driver ... -- \
                     --emit=asm` and look for calls to `rust_begin_unwind`)"
                )
            }
            Violation::PanicReach(path) => write!(f, "panic path: {path}"),
            Violation::Undecodable { function, rva } => write!(
                f,
                "the bytes at RVA {rva:#x} in the function at {function:#x} do not decode: the \
                 panic-path analysis of that function is incomplete"
            ),
            Violation::Seh { function: 0, why } => write!(f, "the image {why}"),
            Violation::Seh { function, why } => {
                write!(f, "the function at {function:#x} has an exception handler: {why}")
            }
            Violation::TooLarge { size, limit } => {
                write!(f, "the .sys is {size} bytes; it must be under {limit} bytes")
            }
        }
    }
}

/// The bugcheck routines: only the panic handler of an fsfilter driver calls one.
pub const BUGCHECK_ROUTINES: [&str; 2] = ["KeBugCheckEx", "KeBugCheck"];

/// What is wrong with an image's imports: DLLs outside [`ALLOWED_IMPORTS`], and a reachable panic
/// handler (an import of a [`BUGCHECK_ROUTINES`] routine).
pub fn import_violations(image: &Image) -> Vec<Violation> {
    let mut v = Vec::new();
    for dll in &image.imports {
        if !ALLOWED_IMPORTS.iter().any(|allowed| dll.name.eq_ignore_ascii_case(allowed)) {
            v.push(Violation::Import { dll: dll.name.clone() });
        }
        for f in &dll.functions {
            if BUGCHECK_ROUTINES.contains(&f.as_str()) {
                v.push(Violation::PanicPath { function: f.clone(), call_sites: vec![], paths: 0 });
            }
        }
    }
    v
}

/// A section, as the size table and the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its name (at most eight bytes, lossily decoded).
    pub name: String,
    /// Its characteristics.
    pub characteristics: u32,
}

/// A DLL the image imports from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportedDll {
    /// The DLL's name as written in the image.
    pub name: String,
    /// The functions imported from it (`#n` for an import by ordinal).
    pub functions: Vec<String>,
    /// From the delay-load import table rather than the import table.
    pub delay_load: bool,
}

/// What the checks read from an image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// The file's size in bytes.
    pub size: u64,
    /// The sections, in table order.
    pub sections: Vec<Section>,
    /// The imported DLLs, in table order.
    pub imports: Vec<ImportedDll>,
    /// `AddressOfEntryPoint`.
    pub entry_point: u32,
    /// The RVA of the `DriverEntry` export, if there is one.
    pub driver_entry: Option<u32>,
    /// The `CheckSum` field.
    pub checksum: u32,
    /// The number of base relocations (padding entries excluded).
    pub relocations: usize,
}

impl Image {
    /// The number of imported functions, over all DLLs.
    pub fn import_count(&self) -> usize {
        self.imports.iter().map(|dll| dll.functions.len()).sum()
    }
}

/// The outcome of [`check`]: what could be read, and every check that failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// What the checks read (as far as they got).
    pub image: Image,
    /// The failed checks, in the order they were run; empty if the image passed.
    pub violations: Vec<Violation>,
    /// What the disassembly found ([`crate::disasm`]); `None` if the image could not be read
    /// that far.
    pub disasm: Option<crate::disasm::Analysis>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs every PE check on the bytes of a .sys file and reports all failures, not just the first.
pub fn check(data: &[u8]) -> Report {
    let mut report = Report {
        image: Image { size: data.len() as u64, ..Image::default() },
        ..Report::default()
    };
    let layout = match Layout::parse(data) {
        Ok(layout) => layout,
        Err(why) => {
            report.violations.push(Violation::Malformed(why));
            return report;
        }
    };
    let v = &mut report.violations;
    let image = &mut report.image;

    // Machine and PE32+: read before anything else; the rest only means something for PE32+.
    let machine = read_u16(data, layout.machine).unwrap_or(0);
    if machine != MACHINE_AMD64 {
        v.push(Violation::Machine { found: machine });
    }
    let file_flags = read_u16(data, layout.file_characteristics).unwrap_or(0);
    for (bit, flag, required, _) in FILE_FLAGS {
        if (file_flags & bit != 0) != required {
            v.push(Violation::FileFlag { flag, required });
        }
    }
    let magic = read_u16(data, layout.magic).unwrap_or(0);
    if magic != PE32_PLUS_MAGIC {
        v.push(Violation::Magic { found: magic });
        return report;
    }

    let subsystem = read_u16(data, layout.subsystem).unwrap_or(0);
    if subsystem != SUBSYSTEM_NATIVE {
        v.push(Violation::Subsystem { found: subsystem });
    }

    // Alignment: sections page-aligned (memory integrity), file alignment as the format says.
    let section_alignment = read_u32(data, layout.section_alignment).unwrap_or(0);
    let file_alignment = read_u32(data, layout.file_alignment).unwrap_or(0);
    if section_alignment == 0 || section_alignment % PAGE_SIZE != 0 {
        v.push(Violation::Alignment {
            field: "SectionAlignment",
            value: section_alignment,
            rule: "a multiple of 0x1000 (PAGE_SIZE): memory integrity (HVCI) requires it of \
                   drivers (driversecurity/implement-hvci-compatible-code)",
        });
    }
    if !file_alignment.is_power_of_two()
        || !(512..=0x1_0000).contains(&file_alignment)
        || file_alignment > section_alignment
    {
        v.push(Violation::Alignment {
            field: "FileAlignment",
            value: file_alignment,
            rule: "a power of two from 512 to 64 KiB and at most SectionAlignment (PE format)",
        });
    }

    // Checksum: non-zero and equal to the file's.
    image.checksum = read_u32(data, layout.checksum).unwrap_or(0);
    let computed = pe_checksum(data, layout.checksum);
    if image.checksum == 0 {
        v.push(Violation::ChecksumZero { computed });
    } else if image.checksum != computed {
        v.push(Violation::Checksum { header: image.checksum, computed });
    }

    // Sections: code and data not paged (discardable ones are freed after load), only the
    // sections meant for it discardable, and W^X.
    for index in 0..layout.section_count {
        let header = layout.section_header(index);
        let raw_name = &data[header..header + 8];
        let name_len = raw_name.iter().position(|b| *b == 0).unwrap_or(8);
        let name = String::from_utf8_lossy(&raw_name[..name_len]).into_owned();
        let characteristics = read_u32(data, layout.section_characteristics(index)).unwrap_or(0);
        // Executable pages hold code whatever the content flags say.
        let contents =
            SCN_CNT_CODE | SCN_CNT_INITIALIZED_DATA | SCN_CNT_UNINITIALIZED_DATA | SCN_MEM_EXECUTE;
        if characteristics & contents != 0
            && characteristics & SCN_MEM_DISCARDABLE == 0
            && characteristics & SCN_MEM_NOT_PAGED == 0
        {
            v.push(Violation::Paged { section: name.clone(), characteristics });
        }
        if characteristics & contents != 0
            && characteristics & SCN_MEM_DISCARDABLE != 0
            && !DISCARDABLE_SECTIONS.contains(&name.as_str())
        {
            v.push(Violation::Discardable { section: name.clone() });
        }
        if characteristics & SCN_MEM_WRITE != 0 && characteristics & SCN_MEM_EXECUTE != 0 {
            v.push(Violation::WritableExecutable { section: name.clone() });
        }
        image.sections.push(Section { name, characteristics });
    }

    // TLS: none.
    let (tls_rva, tls_size) = layout.directory(data, DIRECTORY_TLS);
    if tls_rva != 0 || tls_size != 0 {
        v.push(Violation::Tls { rva: tls_rva, size: tls_size });
    }

    // The tables: entry point, imports, relocations.
    image.entry_point = read_u32(data, layout.entry_point).unwrap_or(0);
    let file = match PeFile64::parse(data) {
        Ok(file) => file,
        Err(e) => {
            v.push(Violation::Malformed(e.to_string()));
            return report;
        }
    };
    if let Err(why) = read_tables(&file, data, &layout, image, v) {
        v.push(Violation::Malformed(why));
    }

    // SEH: the guarded copy's scope, the only exception handler a driver may have (crate::seh).
    match crate::seh::check(data) {
        Ok(problems) => v.extend(
            problems.into_iter().map(|p| Violation::Seh { function: p.function, why: p.why }),
        ),
        Err(why) => v.push(Violation::Malformed(format!("exception data: {why}"))),
    }

    // Panic-free, from the code: the paths into the bugcheck calls (crate::disasm).
    match crate::disasm::analyze(data) {
        Ok(analysis) => {
            disassembly_violations(&analysis, v);
            report.disasm = Some(analysis);
        }
        Err(why) => v.push(Violation::Malformed(format!("disassembly: {why}"))),
    }
    report
}

/// The `panic-free` violations from the disassembly: each path into the bugcheck calls, each
/// `.pdata` function that does not decode, and the call sites added to the import's violation.
pub fn disassembly_violations(analysis: &crate::disasm::Analysis, v: &mut Vec<Violation>) {
    for violation in v.iter_mut() {
        if let Violation::PanicPath { function, call_sites, paths } = violation {
            *call_sites = analysis
                .bugcheck_calls
                .iter()
                .filter(|c| c.routine == *function)
                .map(|c| (c.site, c.function))
                .collect();
            *paths = analysis.paths.len();
        }
    }
    v.extend(analysis.paths.iter().cloned().map(Violation::PanicReach));
    let mut seen = std::collections::BTreeSet::new();
    for &(function, rva) in &analysis.invalid {
        if seen.insert(function) {
            v.push(Violation::Undecodable { function, rva });
        }
    }
}

/// The checks that walk the export, import and base-relocation tables.
fn read_tables(
    file: &PeFile64<'_>,
    data: &[u8],
    layout: &Layout,
    image: &mut Image,
    v: &mut Vec<Violation>,
) -> Result<(), String> {
    // Entry point: the exported DriverEntry.
    if let Some(exports) = file.export_table().map_err(|e| format!("export table: {e}"))? {
        for export in exports.exports().map_err(|e| format!("export table: {e}"))? {
            if let (Some(name), ExportTarget::Address(rva)) = (export.name, export.target) {
                if name == DRIVER_ENTRY.as_bytes() {
                    image.driver_entry = Some(rva);
                }
            }
        }
    }
    match image.driver_entry {
        None => v.push(Violation::NoDriverEntry),
        Some(rva) if rva != image.entry_point => {
            v.push(Violation::EntryPoint { entry: image.entry_point, driver_entry: rva });
        }
        Some(_) => {}
    }

    // Imports: only from the kernel's own modules.
    image.imports.extend(read_imports(file)?);
    v.extend(import_violations(image));

    // Base relocations: a directory with at least one real relocation (toolchain.md: an image
    // whose code is all RIP-relative may have none while DYNAMIC_BASE is set).
    let (_, reloc_size) = layout.directory(data, DIRECTORY_BASERELOC);
    let blocks = if reloc_size == 0 {
        None
    } else {
        file.data_directories()
            .relocation_blocks(data, &file.section_table())
            .map_err(|e| format!("base relocations: {e}"))?
    };
    if let Some(blocks) = blocks {
        for block in blocks {
            let block = block.map_err(|e| format!("base relocations: {e}"))?;
            image.relocations +=
                block.filter(|r| r.typ != object::pe::IMAGE_REL_BASED_ABSOLUTE).count();
        }
    }
    if image.relocations == 0 {
        v.push(Violation::NoRelocations);
    }
    Ok(())
}

/// Every DLL the image imports from, with the functions by name (or `#ordinal`), then every DLL of
/// the delay-load table (functions not listed): what both the drivers' and the programs' import
/// checks read.
pub fn read_imports(file: &PeFile64<'_>) -> Result<Vec<ImportedDll>, String> {
    let mut imports = vec![];
    if let Some(table) = file.import_table().map_err(|e| format!("import table: {e}"))? {
        for descriptor in table.descriptors().map_err(|e| format!("import table: {e}"))? {
            let descriptor = descriptor.map_err(|e| format!("import table: {e}"))?;
            let name =
                table.name(descriptor.name.get(LE)).map_err(|e| format!("import table: {e}"))?;
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => descriptor.first_thunk.get(LE),
                rva => rva,
            };
            let mut thunks = table.thunks(lookup).map_err(|e| format!("import table: {e}"))?;
            let mut functions = vec![];
            while let Some(thunk) =
                thunks.next::<object::pe::ImageNtHeaders64>().map_err(|e| e.to_string())?
            {
                let import = table
                    .import::<object::pe::ImageNtHeaders64>(thunk)
                    .map_err(|e| format!("import table: {e}"))?;
                functions.push(match import {
                    object::read::pe::Import::Name(_, name) => {
                        String::from_utf8_lossy(name).into_owned()
                    }
                    object::read::pe::Import::Ordinal(n) => format!("#{n}"),
                });
            }
            imports.push(ImportedDll {
                name: String::from_utf8_lossy(name).into_owned(),
                functions,
                delay_load: false,
            });
        }
    }
    if let Some(table) =
        file.delay_load_import_table().map_err(|e| format!("delay-load import table: {e}"))?
    {
        for descriptor in table.descriptors().map_err(|e| format!("delay-load imports: {e}"))? {
            let descriptor = descriptor.map_err(|e| format!("delay-load imports: {e}"))?;
            let name = table
                .name(descriptor.dll_name_rva.get(LE))
                .map_err(|e| format!("delay-load imports: {e}"))?;
            imports.push(ImportedDll {
                name: String::from_utf8_lossy(name).into_owned(),
                functions: vec![],
                delay_load: true,
            });
        }
    }
    Ok(imports)
}

/// A little-endian `u16` at `offset`, if the file is long enough.
pub fn read_u16(data: &[u8], offset: usize) -> Option<u16> {
    let bytes = data.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

/// A little-endian `u32` at `offset`, if the file is long enough.
pub fn read_u32(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_sums_words_folds_carries_and_adds_the_length() {
        // 0x0201 + 0x0003 (odd length: the last byte is padded with zero) + length 3.
        assert_eq!(pe_checksum(&[0x01, 0x02, 0x03], 100), 0x0207);
        // 0xffff + 0xffff = 0x1fffe, folded to 0xffff; plus length 4.
        assert_eq!(pe_checksum(&[0xff; 4], 100), 0x1_0003);
    }

    #[test]
    fn checksum_folds_a_carry_out_of_the_low_word() {
        // 0xffff + 0x0001 = 0x10000: the carry folds back in, giving 0x0001; plus length 4.
        assert_eq!(pe_checksum(&[0xff, 0xff, 0x01, 0x00], 100), 5);
        // 0xfffe + 0x0003 = 0x10001, folded to 0x0002; plus length 4.
        assert_eq!(pe_checksum(&[0xfe, 0xff, 0x03, 0x00], 100), 6);
    }

    /// The same checksum formulated another way: 32-bit little-endian dwords summed into 64 bits
    /// (the field zeroed, a short tail zero-padded), then folded to 16 bits with end-around
    /// carries, plus the length.
    fn checksum_by_dwords(data: &[u8], field: usize) -> u32 {
        let mut copy = data.to_vec();
        copy[field..field + 4].fill(0);
        copy.resize(data.len().next_multiple_of(4), 0);
        let mut sum: u64 = copy
            .chunks_exact(4)
            .map(|d| u64::from(u32::from_le_bytes([d[0], d[1], d[2], d[3]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u32 + data.len() as u32
    }

    #[test]
    fn checksum_agrees_with_a_dword_formulation() {
        // A deterministic byte stream (xorshift), lengths odd and even, the field anywhere.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..4099)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        for len in [8, 9, 10, 11, 64, 511, 512, 4097, 4099] {
            for field in [0, 4, len / 2 / 4 * 4, len - 4 - len % 4] {
                let bytes = &data[..len];
                assert_eq!(
                    pe_checksum(bytes, field),
                    checksum_by_dwords(bytes, field),
                    "length {len}, field at {field}"
                );
            }
        }
    }

    #[test]
    fn checksum_skips_its_own_field() {
        let mut data = [0x11u8; 12];
        let before = pe_checksum(&data, 4);
        data[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(pe_checksum(&data, 4), before);
        // Four 0x1111 words outside the field, plus the length.
        assert_eq!(before, 4 * 0x1111 + 12);
    }

    #[test]
    fn violations_name_their_check() {
        let v = Violation::Import { dll: "ntdll.dll".into() };
        assert_eq!(v.check(), "imports");
        assert!(v.to_string().starts_with("[imports] imports from `ntdll.dll`"));
        assert_eq!(Violation::Tls { rva: 1, size: 2 }.check(), "tls");
        assert_eq!(Violation::TooLarge { size: 2, limit: 1 }.check(), "size");
    }

    #[test]
    fn a_reachable_panic_handler_shows_as_a_bugcheck_import() {
        let dll = |name: &str, functions: &[&str]| ImportedDll {
            name: name.into(),
            functions: functions.iter().map(|f| (*f).to_owned()).collect(),
            ..ImportedDll::default()
        };
        let clean = Image {
            imports: vec![dll("ntoskrnl.exe", &["IoCreateDevice", "KeSetEvent"])],
            ..Image::default()
        };
        assert!(import_violations(&clean).is_empty());
        let panicking = Image {
            imports: vec![dll("ntoskrnl.exe", &["IoCreateDevice", "KeBugCheckEx"])],
            ..Image::default()
        };
        let v = import_violations(&panicking);
        assert_eq!(
            v,
            [Violation::PanicPath {
                function: "KeBugCheckEx".into(),
                call_sites: vec![],
                paths: 0
            }]
        );
        assert_eq!(v[0].check(), "panic-free");
        let foreign =
            Image { imports: vec![dll("ntdll.dll", &["RtlZeroMemory"])], ..Image::default() };
        assert_eq!(import_violations(&foreign), [Violation::Import { dll: "ntdll.dll".into() }]);
    }

    /// A synthetic image (crate::disasm::synthetic): `DriverEntry` at 0x1000, a panic handler
    /// at 0x1080 calling `KeBugCheckEx`; `DriverEntry` calls the handler if `reachable`.
    fn synthetic_driver(reachable: bool) -> (Vec<u8>, u32, u32) {
        use crate::disasm::synthetic::{Code, image, slot};
        let mut code = Code::new();
        code.at(0x1000).prologue();
        let call = code.here();
        if reachable {
            code.call(0x1080);
        }
        code.epilogue();
        code.at(0x1080).prologue();
        let bugcheck = code.here();
        code.call_slot(slot(0)).raw(&[0xcc]);
        let pdata = [(0x1000, 0x1020), (0x1080, 0x10a0)];
        (image(&code, &["KeBugCheckEx"], &pdata, &[0x1000], 0x1000), call, bugcheck)
    }

    fn panic_free(report: &Report) -> Vec<&Violation> {
        report.violations.iter().filter(|v| v.check() == "panic-free").collect()
    }

    #[test]
    fn a_reachable_handler_fails_with_its_call_sites_and_paths() {
        let (data, call, bugcheck) = synthetic_driver(true);
        let report = check(&data);
        let analysis = report.disasm.as_ref().unwrap();
        // The entry point, its call of the handler, and the pointer to it (the image has one
        // relocated pointer, to DriverEntry, for the `relocations` check).
        assert_eq!(analysis.paths.len(), 3, "{:?}", analysis.paths);
        let import = Violation::PanicPath {
            function: "KeBugCheckEx".into(),
            call_sites: vec![(bugcheck, 0x1080)],
            paths: 3,
        };
        assert_eq!(
            panic_free(&report),
            [
                &import,
                &Violation::PanicReach(crate::disasm::PanicPath::Root {
                    function: 0x1000,
                    name: "the entry point".into()
                }),
                &Violation::PanicReach(crate::disasm::PanicPath::Call {
                    site: call,
                    caller: 0x1000,
                    callee: 0x1080
                }),
                &Violation::PanicReach(crate::disasm::PanicPath::Pointer {
                    at: crate::disasm::synthetic::POINTERS,
                    callee: 0x1000
                }),
            ]
        );
        let message = report.violations.iter().map(ToString::to_string).collect::<Vec<_>>();
        let message = message.join("\n");
        assert!(message.contains(&format!("called at RVA {bugcheck:#x} (function 0x1080)")));
        assert!(message.contains(&format!("the call at RVA {call:#x}")), "{message}");
    }

    #[test]
    fn an_unreachable_handler_still_fails_on_the_import_and_says_so() {
        let (data, _, bugcheck) = synthetic_driver(false);
        let report = check(&data);
        let import = Violation::PanicPath {
            function: "KeBugCheckEx".into(),
            call_sites: vec![(bugcheck, 0x1080)],
            paths: 0,
        };
        assert_eq!(panic_free(&report), [&import]);
        assert!(import.to_string().contains("present but unreachable"), "{import}");
    }

    #[test]
    fn layout_rejects_non_pe_files() {
        assert!(Layout::parse(b"").is_err());
        assert!(Layout::parse(b"MZ").is_err());
        let mut data = vec![0u8; 0x100];
        data[0..2].copy_from_slice(b"MZ");
        data[0x3c] = 0x80;
        assert!(Layout::parse(&data).unwrap_err().contains("no PE signature"));
    }
}
