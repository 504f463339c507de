//! The disassembly half of the `panic-free` check (docs/building.md, "What the PE checks verify").
//!
//! The panic handler (shared/kernel's `#[panic_handler]`) is the only code of an fsfilter driver
//! that bugchecks. This module decodes every executable section of an image with `iced-x86` and
//! looks for the code that can get there:
//!
//! 1. **Functions** come from the exception directory (`.pdata`): one `RUNTIME_FUNCTION` per
//!    non-leaf function, a chained entry (`UNW_FLAG_CHAININFO`) being a fragment of its parent.
//!    Bytes outside every entry are leaf code and padding; they are decoded too and split into
//!    leaf functions at call targets, roots and relocated pointers, and after padding that follows
//!    a `ret` or `jmp`.
//! 2. **Bugcheck calls**: the IAT slots of [`BUGCHECK_ROUTINES`] come from the import directory;
//!    every instruction with a RIP-relative operand on such a slot (`call [rip+slot]`,
//!    `jmp [rip+slot]`, a load of it) is a bugcheck site, and so is a direct call to a local thunk
//!    (a function whose first instruction is `jmp [rip+slot]`). The functions holding these sites,
//!    thunks excepted, are the *panic functions*.
//! 3. **Paths**: the functions that reach a panic function through direct calls and jumps
//!    (`call rel32`, `jmp rel32`, `jcc rel`, and a fall-through between leaf functions), found
//!    transitively on the inverted call graph. Every direct call or jump from one function into a
//!    function of that set is a [`PanicPath::Call`]; so is a `lea` of such a function in other code
//!    ([`PanicPath::AddressTaken`]), a base-relocated pointer to one (a vtable or function-pointer
//!    table in `.rdata`: [`PanicPath::Pointer`]), and the entry point or an export in the set
//!    ([`PanicPath::Root`]).
//!
//! Indirect calls and jumps that do not go through the IAT (`call rax`, `call [rbx+8]`, a jump
//! table) cannot be followed; they are listed in [`Analysis::unresolved`], not failed on. Their
//! targets are covered from the data side: any function whose address is taken is reached either
//! by a `lea` or by a relocated pointer, and both are checked.
//!
//! A handler that the linker kept but nothing reaches (no direct caller, no address taken) gives
//! bugcheck sites and no path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};
use object::LittleEndian as LE;
use object::pe::ImageNtHeaders64;
use object::read::pe::{ExportTarget, ImageNtHeaders, ImageOptionalHeader, PeFile64};

use crate::pe::{BUGCHECK_ROUTINES, SCN_CNT_CODE, SCN_MEM_EXECUTE};

/// `IMAGE_DIRECTORY_ENTRY_EXCEPTION`.
pub const DIRECTORY_EXCEPTION: usize = 3;
/// `UNW_FLAG_CHAININFO`: the `RUNTIME_FUNCTION` is a fragment of the one chained after the codes.
const UNW_FLAG_CHAININFO: u8 = 0x4;
/// Size of a `RUNTIME_FUNCTION`.
const RUNTIME_FUNCTION_SIZE: usize = 12;

/// A call or jump to a bugcheck routine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BugcheckCall {
    /// RVA of the instruction.
    pub site: u32,
    /// Start RVA of the function holding it.
    pub function: u32,
    /// The routine (`KeBugCheckEx`, `KeBugCheck`).
    pub routine: String,
    /// The local thunk (`jmp [rip+slot]`) the call goes through, if it does not use the slot.
    pub thunk: Option<u32>,
}

/// A way into the panic functions (module docs, step 3). Every one is a `panic-free` violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PanicPath {
    /// A direct call or jump (or a fall-through) from one function into another that reaches the
    /// bugcheck routine.
    Call {
        /// RVA of the call or jump instruction.
        site: u32,
        /// Start RVA of the function holding it.
        caller: u32,
        /// Start RVA of the function it calls, which reaches the bugcheck routine.
        callee: u32,
    },
    /// A `lea` of a panic-reaching function in other code (a callback handed out).
    AddressTaken {
        /// RVA of the `lea`.
        site: u32,
        /// Start RVA of the function holding it.
        function: u32,
        /// Start RVA of the function whose address is taken.
        callee: u32,
    },
    /// A base-relocated pointer to a panic-reaching function (a vtable, a dispatch table).
    Pointer {
        /// RVA of the pointer.
        at: u32,
        /// Start RVA of the function it points into.
        callee: u32,
    },
    /// The entry point or an exported function reaches the bugcheck routine.
    Root {
        /// Start RVA of the function.
        function: u32,
        /// The export's name, or `entry point`.
        name: String,
    },
}

impl fmt::Display for PanicPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PanicPath::Call { site, caller, callee } => write!(
                f,
                "the call at RVA {site:#x} (in the function at {caller:#x}) reaches the bugcheck \
                 routine through the function at {callee:#x}"
            ),
            PanicPath::AddressTaken { site, function, callee } => write!(
                f,
                "the `lea` at RVA {site:#x} (in the function at {function:#x}) takes the address \
                 of the function at {callee:#x}, which reaches the bugcheck routine"
            ),
            PanicPath::Pointer { at, callee } => write!(
                f,
                "the relocated pointer at RVA {at:#x} points to the function at {callee:#x}, which \
                 reaches the bugcheck routine"
            ),
            PanicPath::Root { function, name } => {
                write!(f, "{name} (the function at {function:#x}) reaches the bugcheck routine")
            }
        }
    }
}

/// What the disassembly found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// Functions from `.pdata` (chained fragments merged into their parents).
    pub pdata_functions: usize,
    /// Leaf functions found in the bytes outside every `.pdata` entry.
    pub leaf_functions: usize,
    /// Instructions decoded, over all executable sections.
    pub instructions: usize,
    /// Bytes of the executable sections (the part backed by the file).
    pub code_bytes: u64,
    /// Bytes covered by valid decoded instructions.
    pub decoded_bytes: u64,
    /// RVAs of undecodable bytes inside `.pdata` functions, as (function start, RVA).
    pub invalid: Vec<(u32, u32)>,
    /// Undecodable bytes outside `.pdata` functions (padding that is not code, say).
    pub invalid_outside_functions: usize,
    /// The IAT slots of the bugcheck routines the image imports, as (routine, slot RVA).
    pub bugcheck_slots: Vec<(String, u32)>,
    /// Every call or jump to a bugcheck routine.
    pub bugcheck_calls: Vec<BugcheckCall>,
    /// Start RVAs of the functions holding bugcheck calls (thunks excepted).
    pub panic_functions: Vec<u32>,
    /// Start RVAs of the other functions that reach a panic function by direct calls and jumps.
    pub reaching_functions: Vec<u32>,
    /// The ways into those functions: each is a violation.
    pub paths: Vec<PanicPath>,
    /// RVAs of indirect calls and jumps not through the IAT: not followed.
    pub unresolved: Vec<u32>,
}

impl Analysis {
    /// All functions: `.pdata` ones and leaf ones.
    pub fn functions(&self) -> usize {
        self.pdata_functions + self.leaf_functions
    }

    /// One line for `cargo xtask drivers` and `check-pe`.
    pub fn summary(&self) -> String {
        format!(
            "{} functions ({} from .pdata), {} instructions ({} of {} code bytes), {} bugcheck \
             call sites, {} panic paths, {} unresolved indirect calls/jumps",
            self.functions(),
            self.pdata_functions,
            self.instructions,
            self.decoded_bytes,
            self.code_bytes,
            self.bugcheck_calls.len(),
            self.paths.len(),
            self.unresolved.len()
        )
    }
}

/// A range of code, decoded.
struct Range {
    /// Start RVA of the `.pdata` function it belongs to; `None` for bytes outside `.pdata`.
    pdata: Option<u32>,
    instructions: Vec<Instruction>,
}

/// A function: the ranges it spans, as (start, end) RVAs.
#[derive(Default)]
struct Functions {
    /// (start, end) -> function start, sorted by start; ranges never overlap.
    spans: Vec<(u32, u32, u32)>,
}

impl Functions {
    fn add(&mut self, start: u32, end: u32, function: u32) {
        self.spans.push((start, end, function));
    }

    fn sort(&mut self) {
        self.spans.sort_unstable();
    }

    /// The start of the function holding `rva`.
    fn at(&self, rva: u64) -> Option<u32> {
        let rva = u32::try_from(rva).ok()?;
        let i = self.spans.partition_point(|&(start, _, _)| start <= rva);
        let &(start, end, function) = self.spans.get(i.checked_sub(1)?)?;
        (start <= rva && rva < end).then_some(function)
    }
}

/// Reads a little-endian `u32` from a slice.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether an instruction ends the flow (nothing falls through it).
fn is_terminator(i: &Instruction) -> bool {
    matches!(
        i.flow_control(),
        FlowControl::Return
            | FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch
            | FlowControl::Interrupt
            | FlowControl::Exception
    )
}

/// Whether an instruction is alignment padding.
fn is_padding(i: &Instruction) -> bool {
    matches!(i.mnemonic(), Mnemonic::Int3 | Mnemonic::Nop)
}

/// The target of a direct (relative) branch.
fn direct_target(i: &Instruction) -> Option<u64> {
    match i.flow_control() {
        FlowControl::Call | FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
            if matches!(
                i.op0_kind(),
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
            ) =>
        {
            Some(i.near_branch_target())
        }
        _ => None,
    }
}

/// Decodes `bytes` at `rva` (instruction pointers are RVAs, so RIP-relative operands are RVAs).
fn decode(bytes: &[u8], rva: u32) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(64, bytes, u64::from(rva), DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        out.push(instruction);
    }
    out
}

/// Disassembles the executable sections of a PE32+ image and finds the paths to the bugcheck
/// routines (module docs). Fails only on tables that cannot be read.
pub fn analyze(data: &[u8]) -> Result<Analysis, String> {
    let file = PeFile64::parse(data).map_err(|e| e.to_string())?;
    let sections = file.section_table();
    let image_base = file.nt_headers().optional_header().image_base();
    let mut analysis = Analysis::default();

    // Executable sections, as (RVA, bytes backed by the file).
    let mut code = Vec::new();
    for section in sections.iter() {
        let characteristics = section.characteristics.get(LE).0;
        if characteristics & (SCN_CNT_CODE | SCN_MEM_EXECUTE) != 0 {
            let bytes = section.pe_data(data).map_err(|e| format!("code section: {e}"))?;
            code.push((section.virtual_address.get(LE), bytes));
            analysis.code_bytes += bytes.len() as u64;
        }
    }

    // The IAT slots: the bugcheck routines', and every import's (calls through those are resolved).
    let mut import_slots = BTreeSet::new();
    let mut bugcheck_slots = BTreeMap::new();
    if let Some(table) = file.import_table().map_err(|e| format!("import table: {e}"))? {
        for descriptor in table.descriptors().map_err(|e| format!("import table: {e}"))? {
            let descriptor = descriptor.map_err(|e| format!("import table: {e}"))?;
            let iat = descriptor.first_thunk.get(LE);
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => iat,
                rva => rva,
            };
            let mut thunks = table.thunks(lookup).map_err(|e| format!("import table: {e}"))?;
            let mut slot = iat;
            while let Some(thunk) =
                thunks.next::<ImageNtHeaders64>().map_err(|e| format!("import table: {e}"))?
            {
                import_slots.insert(u64::from(slot));
                let import = table
                    .import::<ImageNtHeaders64>(thunk)
                    .map_err(|e| format!("import table: {e}"))?;
                if let object::read::pe::Import::Name(_, name) = import {
                    if let Some(routine) = BUGCHECK_ROUTINES.iter().find(|r| r.as_bytes() == name) {
                        bugcheck_slots.insert(u64::from(slot), (*routine).to_owned());
                        analysis.bugcheck_slots.push(((*routine).to_owned(), slot));
                    }
                }
                slot = slot.wrapping_add(8);
            }
        }
    }

    // Roots: the entry point and the exports.
    let mut roots = BTreeMap::new();
    let entry = file.nt_headers().optional_header().address_of_entry_point();
    if entry != 0 {
        roots.insert(entry, "the entry point".to_owned());
    }
    if let Some(exports) = file.export_table().map_err(|e| format!("export table: {e}"))? {
        for export in exports.exports().map_err(|e| format!("export table: {e}"))? {
            if let ExportTarget::Address(rva) = export.target {
                let name = export.name.map_or_else(
                    || format!("export #{}", export.ordinal),
                    |n| format!("export `{}`", String::from_utf8_lossy(n)),
                );
                roots.entry(rva).or_insert(name);
            }
        }
    }

    // Base-relocated pointers, as (RVA of the pointer, RVA it points to).
    let mut pointers = Vec::new();
    if let Some(blocks) = file
        .data_directories()
        .relocation_blocks(data, &sections)
        .map_err(|e| format!("base relocations: {e}"))?
    {
        for block in blocks {
            for reloc in block.map_err(|e| format!("base relocations: {e}"))? {
                if reloc.typ != object::pe::IMAGE_REL_BASED_DIR64 {
                    continue;
                }
                let at = reloc.virtual_address;
                let Some(bytes) = sections.pe_data_at(data, at) else { continue };
                let Some(value) = bytes.get(..8) else { continue };
                let mut word = [0u8; 8];
                word.copy_from_slice(value);
                if let Some(target) = u64::from_le_bytes(word).checked_sub(image_base) {
                    pointers.push((at, target));
                }
            }
        }
    }

    // .pdata: the functions, chained fragments merged into their parents.
    let mut pdata = Vec::new();
    if let Some(dir) = file.data_directory(DIRECTORY_EXCEPTION) {
        let (rva, size) = dir.address_range();
        if size != 0 {
            let bytes = sections
                .pe_data_at(data, rva)
                .ok_or_else(|| format!("exception directory at {rva:#x} is outside the file"))?;
            let bytes = bytes.get(..size as usize).unwrap_or(bytes);
            for entry in bytes.chunks_exact(RUNTIME_FUNCTION_SIZE) {
                let (begin, end, unwind) = (
                    u32_at(entry, 0).unwrap_or(0),
                    u32_at(entry, 4).unwrap_or(0),
                    u32_at(entry, 8).unwrap_or(0),
                );
                if begin == 0 && end == 0 {
                    continue;
                }
                if end <= begin {
                    return Err(format!("RUNTIME_FUNCTION {begin:#x}..{end:#x} is empty"));
                }
                let parent = chain_parent(data, &sections, unwind, 0)?.unwrap_or(begin);
                pdata.push((begin, end, parent));
            }
        }
    }
    pdata.sort_unstable();
    analysis.pdata_functions =
        pdata.iter().map(|&(_, _, parent)| parent).collect::<BTreeSet<_>>().len();

    // Decode: each .pdata range, and each gap between them (leaf code and padding).
    let mut ranges = Vec::new();
    for &(section_rva, bytes) in &code {
        let section_end = section_rva + bytes.len() as u32;
        let mut cursor = section_rva;
        let decode_gap = |ranges: &mut Vec<Range>, from: u32, to: u32| {
            if from < to {
                let slice = &bytes[(from - section_rva) as usize..(to - section_rva) as usize];
                ranges.push(Range { pdata: None, instructions: decode(slice, from) });
            }
        };
        for &(begin, end, parent) in &pdata {
            if begin < section_rva || begin >= section_end {
                continue;
            }
            let end = end.min(section_end);
            if begin < cursor {
                return Err(format!("RUNTIME_FUNCTION {begin:#x}..{end:#x} overlaps another"));
            }
            decode_gap(&mut ranges, cursor, begin);
            let slice = &bytes[(begin - section_rva) as usize..(end - section_rva) as usize];
            ranges.push(Range { pdata: Some(parent), instructions: decode(slice, begin) });
            cursor = end;
        }
        decode_gap(&mut ranges, cursor, section_end);
    }

    // Where leaf functions start: call targets, tail-call targets, roots, relocated pointers.
    let mut starts: BTreeSet<u64> = roots.keys().map(|&r| u64::from(r)).collect();
    starts.extend(pointers.iter().map(|&(_, target)| target));
    for range in &ranges {
        for i in &range.instructions {
            if let Some(target) = direct_target(i) {
                if i.flow_control() == FlowControl::Call || range.pdata.is_some() {
                    starts.insert(target);
                }
            }
            if i.mnemonic() == Mnemonic::Lea && i.is_ip_rel_memory_operand() {
                starts.insert(i.ip_rel_memory_address());
            }
        }
    }

    // Assign every instruction to a function; count; collect fall-throughs between leaves.
    let mut functions = Functions::default();
    // (instruction, function start)
    let mut owned: Vec<(&Instruction, u32)> = Vec::new();
    let mut edges: Vec<(u32, u32, u32, bool)> = Vec::new(); // (site, caller, callee, is_lea)
    for range in &ranges {
        match range.pdata {
            Some(parent) => {
                let (first, last) = match (range.instructions.first(), range.instructions.last()) {
                    (Some(f), Some(l)) => (f.ip() as u32, l.next_ip() as u32),
                    _ => continue,
                };
                functions.add(first, last, parent);
                for i in &range.instructions {
                    analysis.instructions += 1;
                    if i.is_invalid() {
                        analysis.invalid.push((parent, i.ip() as u32));
                    } else {
                        analysis.decoded_bytes += i.len() as u64;
                    }
                    owned.push((i, parent));
                }
            }
            None => {
                let mut current: Option<(u32, u32)> = None; // (start, end so far)
                let mut previous: Option<&Instruction> = None;
                for i in &range.instructions {
                    analysis.instructions += 1;
                    if i.is_invalid() {
                        analysis.invalid_outside_functions += 1;
                    } else {
                        analysis.decoded_bytes += i.len() as u64;
                    }
                    let ip = i.ip() as u32;
                    let after_end = previous.is_some_and(|p| is_terminator(p) || is_padding(p));
                    let new = if starts.contains(&i.ip()) {
                        true
                    } else {
                        !is_padding(i) && !i.is_invalid() && (current.is_none() || after_end)
                    };
                    if new {
                        if let Some((start, end)) = current.take() {
                            functions.add(start, end, start);
                            if previous.is_some_and(|p| !is_terminator(p) && !is_padding(p)) {
                                // Falls through into the next function.
                                let site = previous.map_or(start, |p| p.ip() as u32);
                                edges.push((site, start, ip, false));
                            }
                        }
                        current = Some((ip, ip));
                        analysis.leaf_functions += 1;
                    } else if current.is_some() && is_padding(i) && after_end {
                        // Padding after the end of a function belongs to no function.
                        if let Some((start, end)) = current.take() {
                            functions.add(start, end, start);
                        }
                    }
                    if let Some((start, end)) = current.as_mut() {
                        *end = i.next_ip() as u32;
                        owned.push((i, *start));
                    }
                    previous = Some(i);
                }
                if let Some((start, end)) = current {
                    functions.add(start, end, start);
                }
            }
        }
    }
    functions.sort();

    // Thunks: functions whose first instruction is `jmp [rip+bugcheck slot]`.
    let mut thunks = BTreeMap::new();
    for &(i, function) in &owned {
        if i.ip() == u64::from(function)
            && i.flow_control() == FlowControl::IndirectBranch
            && i.is_ip_rel_memory_operand()
        {
            if let Some(routine) = bugcheck_slots.get(&i.ip_rel_memory_address()) {
                thunks.insert(function, routine.clone());
            }
        }
    }

    // Bugcheck sites, the call graph, unresolved indirect transfers.
    let mut panic_functions = BTreeSet::new();
    for &(i, function) in &owned {
        let site = i.ip() as u32;
        if i.is_ip_rel_memory_operand() {
            let target = i.ip_rel_memory_address();
            if let Some(routine) = bugcheck_slots.get(&target) {
                if !thunks.contains_key(&function) {
                    panic_functions.insert(function);
                }
                analysis.bugcheck_calls.push(BugcheckCall {
                    site,
                    function,
                    routine: routine.clone(),
                    thunk: None,
                });
                continue;
            }
            if import_slots.contains(&target) {
                continue;
            }
            if i.mnemonic() == Mnemonic::Lea {
                if let Some(callee) = functions.at(target) {
                    if callee != function {
                        edges.push((site, function, callee, true));
                    }
                }
            }
        }
        if let Some(target) = direct_target(i) {
            if let Some(callee) = functions.at(target) {
                if let Some(routine) = thunks.get(&callee) {
                    if callee != function {
                        panic_functions.insert(function);
                        analysis.bugcheck_calls.push(BugcheckCall {
                            site,
                            function,
                            routine: routine.clone(),
                            thunk: Some(callee),
                        });
                    }
                } else if callee != function {
                    edges.push((site, function, callee, false));
                }
            }
        } else if matches!(
            i.flow_control(),
            FlowControl::IndirectCall | FlowControl::IndirectBranch
        ) {
            analysis.unresolved.push(site);
        }
    }

    // The functions reaching a panic function: a fixpoint over the inverted call graph.
    let mut reaching = panic_functions.clone();
    loop {
        let before = reaching.len();
        for &(_, caller, callee, is_lea) in &edges {
            if !is_lea && reaching.contains(&callee) {
                reaching.insert(caller);
            }
        }
        if reaching.len() == before {
            break;
        }
    }

    // The ways in.
    for &(site, caller, callee, is_lea) in &edges {
        if reaching.contains(&callee) {
            analysis.paths.push(if is_lea {
                PanicPath::AddressTaken { site, function: caller, callee }
            } else {
                PanicPath::Call { site, caller, callee }
            });
        }
    }
    for &(at, target) in &pointers {
        if let Some(callee) = functions.at(target) {
            if reaching.contains(&callee) || thunks.contains_key(&callee) {
                analysis.paths.push(PanicPath::Pointer { at, callee });
            }
        }
    }
    for (&rva, name) in &roots {
        if let Some(function) = functions.at(u64::from(rva)) {
            if reaching.contains(&function) || thunks.contains_key(&function) {
                analysis.paths.push(PanicPath::Root { function, name: name.clone() });
            }
        }
    }
    analysis.bugcheck_calls.sort_by_key(|c| c.site);
    analysis.paths.sort_by_key(|p| match p {
        PanicPath::Call { site, .. } | PanicPath::AddressTaken { site, .. } => *site,
        PanicPath::Pointer { at, .. } => *at,
        PanicPath::Root { function, .. } => *function,
    });
    analysis.paths.dedup();
    analysis.reaching_functions = reaching.difference(&panic_functions).copied().collect();
    analysis.panic_functions = panic_functions.into_iter().collect();
    Ok(analysis)
}

/// The start of the function a `RUNTIME_FUNCTION` with unwind info at `unwind` belongs to: `None`
/// if it is not chained, else the parent's (following chains of chains).
fn chain_parent(
    data: &[u8],
    sections: &object::read::pe::SectionTable<'_>,
    unwind: u32,
    depth: u32,
) -> Result<Option<u32>, String> {
    if depth > 32 {
        return Err(format!("unwind info at {unwind:#x}: chain too long"));
    }
    let info = sections
        .pe_data_at(data, unwind)
        .ok_or_else(|| format!("unwind info at {unwind:#x} is outside the file"))?;
    let (Some(&version_flags), Some(&codes)) = (info.first(), info.get(2)) else {
        return Err(format!("unwind info at {unwind:#x} is truncated"));
    };
    if (version_flags >> 3) & UNW_FLAG_CHAININFO == 0 {
        return Ok(None);
    }
    // The unwind codes are two bytes each, their count rounded up to an even number.
    let chained = 4 + 2 * (usize::from(codes) + usize::from(codes) % 2);
    let (Some(begin), Some(parent_unwind)) = (u32_at(info, chained), u32_at(info, chained + 8))
    else {
        return Err(format!("unwind info at {unwind:#x}: truncated chained RUNTIME_FUNCTION"));
    };
    Ok(Some(chain_parent(data, sections, parent_unwind, depth + 1)?.unwrap_or(begin)))
}

/// A minimal PE32+ driver image with hand-assembled code, for the tests of this module and of
/// `pe`: `.text` at RVA 0x1000 and `.rdata` at 0x2000 holding the IAT, the import directory,
/// `.pdata`, a pointer table and its base relocations.
#[cfg(test)]
pub(crate) mod synthetic {
    /// The image base of the synthetic images.
    pub(crate) const IMAGE_BASE: u64 = 0x1_4000_0000;
    /// RVA of `.text`.
    pub(crate) const TEXT: u32 = 0x1000;
    /// RVA of `.rdata`.
    pub(crate) const RDATA: u32 = 0x2000;
    /// RVA of the pointer table in `.rdata`.
    pub(crate) const POINTERS: u32 = RDATA + 0x600;

    /// The IAT slot of import `index` (imports are in the order given to [`image`]).
    pub(crate) fn slot(index: usize) -> u32 {
        RDATA + 8 * index as u32
    }

    /// Machine code at known RVAs.
    pub(crate) struct Code {
        pub(crate) bytes: Vec<u8>,
    }

    impl Code {
        pub(crate) fn new() -> Code {
            Code { bytes: vec![] }
        }

        /// The RVA of the next byte.
        pub(crate) fn here(&self) -> u32 {
            TEXT + self.bytes.len() as u32
        }

        /// Pads with `int3` up to `rva`.
        pub(crate) fn at(&mut self, rva: u32) -> &mut Code {
            assert!(rva >= self.here(), "code at {rva:#x} overlaps");
            self.bytes.resize((rva - TEXT) as usize, 0xcc);
            self
        }

        pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Code {
            self.bytes.extend_from_slice(bytes);
            self
        }

        fn rel32(&mut self, opcode: &[u8], target: u32) -> &mut Code {
            let next = self.here() + opcode.len() as u32 + 4;
            let rel = target.wrapping_sub(next);
            self.raw(opcode).raw(&rel.to_le_bytes())
        }

        /// `sub rsp, 0x28`: a prologue.
        pub(crate) fn prologue(&mut self) -> &mut Code {
            self.raw(&[0x48, 0x83, 0xec, 0x28])
        }

        /// `add rsp, 0x28; ret`.
        pub(crate) fn epilogue(&mut self) -> &mut Code {
            self.raw(&[0x48, 0x83, 0xc4, 0x28, 0xc3])
        }

        /// `call rel32`.
        pub(crate) fn call(&mut self, target: u32) -> &mut Code {
            self.rel32(&[0xe8], target)
        }

        /// `jmp rel32`.
        pub(crate) fn jmp(&mut self, target: u32) -> &mut Code {
            self.rel32(&[0xe9], target)
        }

        /// `call qword ptr [rip+disp]`.
        pub(crate) fn call_slot(&mut self, slot: u32) -> &mut Code {
            self.rel32(&[0xff, 0x15], slot)
        }

        /// `jmp qword ptr [rip+disp]`.
        pub(crate) fn jmp_slot(&mut self, slot: u32) -> &mut Code {
            self.rel32(&[0xff, 0x25], slot)
        }

        /// `mov rsi, qword ptr [rip+disp]` then `call rsi`.
        pub(crate) fn load_and_call(&mut self, slot: u32) -> &mut Code {
            self.rel32(&[0x48, 0x8b, 0x35], slot).raw(&[0xff, 0xd6])
        }

        /// `lea rcx, [rip+disp]`.
        pub(crate) fn lea_rcx(&mut self, target: u32) -> &mut Code {
            self.rel32(&[0x48, 0x8d, 0x0d], target)
        }

        /// `call rax`.
        pub(crate) fn call_rax(&mut self) -> &mut Code {
            self.raw(&[0xff, 0xd0])
        }
    }

    fn put(data: &mut [u8], at: usize, bytes: &[u8]) {
        data[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// A PE32+ image: `code` in `.text`, `imports` from ntoskrnl.exe, `pdata` as (begin, end)
    /// RVAs, `pointers` as RVAs stored (relocated) at [`POINTERS`], and the entry point.
    pub(crate) fn image(
        code: &Code,
        imports: &[&str],
        pdata: &[(u32, u32)],
        pointers: &[u32],
        entry: u32,
    ) -> Vec<u8> {
        const HEADERS: usize = 0x200;
        let text_raw = code.bytes.len().div_ceil(0x200) * 0x200;
        let rdata_file = HEADERS + text_raw;
        let mut data = vec![0u8; rdata_file + 0x800];
        // DOS header, PE signature, file header.
        put(&mut data, 0, b"MZ");
        put(&mut data, 0x3c, &0x40u32.to_le_bytes());
        put(&mut data, 0x40, b"PE\0\0");
        let fh = 0x44;
        put(&mut data, fh, &0x8664u16.to_le_bytes());
        put(&mut data, fh + 2, &2u16.to_le_bytes());
        put(&mut data, fh + 16, &240u16.to_le_bytes());
        put(&mut data, fh + 18, &0x22u16.to_le_bytes());
        // Optional header.
        let oh = fh + 20;
        put(&mut data, oh, &0x20bu16.to_le_bytes());
        put(&mut data, oh + 16, &entry.to_le_bytes());
        put(&mut data, oh + 20, &TEXT.to_le_bytes());
        put(&mut data, oh + 24, &IMAGE_BASE.to_le_bytes());
        put(&mut data, oh + 32, &0x1000u32.to_le_bytes());
        put(&mut data, oh + 36, &0x200u32.to_le_bytes());
        put(&mut data, oh + 40, &10u16.to_le_bytes());
        put(&mut data, oh + 48, &10u16.to_le_bytes());
        put(&mut data, oh + 56, &0x3000u32.to_le_bytes());
        put(&mut data, oh + 60, &(HEADERS as u32).to_le_bytes());
        put(&mut data, oh + 68, &1u16.to_le_bytes());
        put(&mut data, oh + 70, &0x160u16.to_le_bytes());
        put(&mut data, oh + 108, &16u32.to_le_bytes());
        let dir = |data: &mut Vec<u8>, index: usize, rva: u32, size: u32| {
            put(data, oh + 112 + 8 * index, &rva.to_le_bytes());
            put(data, oh + 112 + 8 * index + 4, &size.to_le_bytes());
        };
        // Section table.
        let st = oh + 240;
        let section = |data: &mut Vec<u8>,
                       i: usize,
                       name: &[u8],
                       rva: u32,
                       size: usize,
                       raw: usize,
                       file: usize,
                       flags: u32| {
            let at = st + 40 * i;
            put(data, at, name);
            put(data, at + 8, &(size as u32).to_le_bytes());
            put(data, at + 12, &rva.to_le_bytes());
            put(data, at + 16, &(raw as u32).to_le_bytes());
            put(data, at + 20, &(file as u32).to_le_bytes());
            put(data, at + 36, &flags.to_le_bytes());
        };
        section(&mut data, 0, b".text", TEXT, code.bytes.len(), text_raw, HEADERS, 0x6800_0020);
        section(&mut data, 1, b".rdata", RDATA, 0x800, 0x800, rdata_file, 0x4800_0040);
        put(&mut data, HEADERS, &code.bytes);

        // .rdata: IAT at 0, lookup table at 0x100, descriptors at 0x200, names from 0x240.
        let r = |offset: u32| rdata_file + offset as usize;
        let mut name_at = 0x260u32;
        for (i, import) in imports.iter().enumerate() {
            let hint_name = u64::from(RDATA + name_at);
            put(&mut data, r(8 * i as u32), &hint_name.to_le_bytes());
            put(&mut data, r(0x100 + 8 * i as u32), &hint_name.to_le_bytes());
            put(&mut data, r(name_at + 2), import.as_bytes());
            name_at += (2 + import.len() as u32 + 1).next_multiple_of(2);
        }
        assert!(name_at <= 0x400, "too many imports");
        put(&mut data, r(0x240), b"ntoskrnl.exe\0");
        if !imports.is_empty() {
            put(&mut data, r(0x200), &(RDATA + 0x100).to_le_bytes());
            put(&mut data, r(0x200 + 12), &(RDATA + 0x240).to_le_bytes());
            put(&mut data, r(0x200 + 16), &RDATA.to_le_bytes());
            dir(&mut data, 1, RDATA + 0x200, 40);
            dir(&mut data, 12, RDATA, 8 * (imports.len() as u32 + 1));
        }
        // Unwind info (version 1, no codes) at 0x400, .pdata at 0x410.
        put(&mut data, r(0x400), &[1, 0, 0, 0]);
        for (i, &(begin, end)) in pdata.iter().enumerate() {
            let at = r(0x410 + 12 * i as u32);
            put(&mut data, at, &begin.to_le_bytes());
            put(&mut data, at + 4, &end.to_le_bytes());
            put(&mut data, at + 8, &(RDATA + 0x400).to_le_bytes());
        }
        if !pdata.is_empty() {
            dir(&mut data, 3, RDATA + 0x410, 12 * pdata.len() as u32);
        }
        // Pointers at 0x600, one DIR64 relocation each in the block at 0x700.
        for (i, &target) in pointers.iter().enumerate() {
            let pointer = IMAGE_BASE + u64::from(target);
            put(&mut data, r(0x600 + 8 * i as u32), &pointer.to_le_bytes());
        }
        let mut reloc = RDATA.to_le_bytes().to_vec();
        let count = pointers.len().next_multiple_of(2).max(2);
        reloc.extend_from_slice(&(8 + 2 * count as u32).to_le_bytes());
        for i in 0..count {
            let entry: u16 = if i < pointers.len() { 0xa000 | (0x600 + 8 * i as u16) } else { 0 };
            reloc.extend_from_slice(&entry.to_le_bytes());
        }
        put(&mut data, r(0x700), &reloc);
        dir(&mut data, 5, RDATA + 0x700, reloc.len() as u32);
        data
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{Code, POINTERS, image, slot};
    use super::*;

    const ENTRY: u32 = 0x1000;
    const HELPER: u32 = 0x1040;
    const HANDLER: u32 = 0x1080;
    const THUNK: u32 = 0x10c0;
    const LEAF: u32 = 0x10d0;

    /// `DriverEntry` at 0x1000, then whatever `body` puts after its prologue.
    fn entry(code: &mut Code, body: impl FnOnce(&mut Code)) {
        code.at(ENTRY).prologue();
        body(code);
        code.epilogue();
    }

    /// The panic handler at [`HANDLER`]: `call [rip+KeBugCheckEx slot]` (import 1), then `int3`.
    /// Returns the RVA of the call.
    fn handler(code: &mut Code) -> u32 {
        code.at(HANDLER).prologue().raw(&[0xb9, 0x0e, 0x01, 0, 0]); // mov ecx, 0x10e
        let site = code.here();
        code.call_slot(slot(1)).raw(&[0xcc]);
        site
    }

    fn analyze_image(code: &Code, pdata: &[(u32, u32)], pointers: &[u32]) -> Analysis {
        let data = image(code, &["IoCreateDevice", "KeBugCheckEx"], pdata, pointers, ENTRY);
        let analysis = analyze(&data).unwrap();
        // Whatever the code, every byte of .text decodes, as whole instructions.
        assert_eq!(analysis.decoded_bytes, code.bytes.len() as u64);
        assert_eq!(analysis.code_bytes, code.bytes.len() as u64);
        assert_eq!(analysis.invalid, []);
        assert_eq!(analysis.bugcheck_slots, [("KeBugCheckEx".to_owned(), slot(1))]);
        analysis
    }

    const PDATA: [(u32, u32); 3] = [(ENTRY, 0x1020), (HELPER, 0x1060), (HANDLER, 0x10a0)];

    #[test]
    fn a_call_chain_to_the_bugcheck_is_reported_at_each_call_site() {
        let mut code = Code::new();
        let mut entry_call = 0;
        entry(&mut code, |c| {
            entry_call = c.here();
            c.call(HELPER);
        });
        code.at(HELPER).prologue().call_slot(slot(0));
        let helper_call = code.here();
        code.call(HANDLER).epilogue();
        let bugcheck = handler(&mut code);
        code.at(0x10b0);

        let a = analyze_image(&code, &PDATA, &[]);
        assert_eq!(a.pdata_functions, 3);
        assert_eq!(
            a.bugcheck_calls,
            [BugcheckCall {
                site: bugcheck,
                function: HANDLER,
                routine: "KeBugCheckEx".into(),
                thunk: None
            }]
        );
        assert_eq!(a.panic_functions, [HANDLER]);
        assert_eq!(a.reaching_functions, [ENTRY, HELPER]);
        assert_eq!(
            a.paths,
            [
                PanicPath::Root { function: ENTRY, name: "the entry point".into() },
                PanicPath::Call { site: entry_call, caller: ENTRY, callee: HELPER },
                PanicPath::Call { site: helper_call, caller: HELPER, callee: HANDLER },
            ]
        );
        // The call through the IoCreateDevice slot is an import call, not an unresolved one.
        assert!(a.unresolved.is_empty(), "{:?}", a.unresolved);
        assert!(a.paths[2].to_string().contains(&format!("{helper_call:#x}")));
    }

    #[test]
    fn a_handler_nothing_reaches_gives_call_sites_and_no_path() {
        let mut code = Code::new();
        entry(&mut code, |c| {
            c.call_slot(slot(0));
        });
        code.at(HELPER).prologue().epilogue();
        let bugcheck = handler(&mut code);
        code.at(0x10b0);

        let a = analyze_image(&code, &PDATA, &[]);
        assert_eq!(a.bugcheck_calls.len(), 1);
        assert_eq!(a.bugcheck_calls[0].site, bugcheck);
        assert_eq!(a.panic_functions, [HANDLER]);
        assert!(a.reaching_functions.is_empty(), "{:?}", a.reaching_functions);
        assert_eq!(a.paths, []);
    }

    #[test]
    fn a_relocated_pointer_to_the_handler_is_a_path() {
        let mut code = Code::new();
        entry(&mut code, |_| {});
        code.at(HELPER).prologue().epilogue();
        handler(&mut code);
        code.at(0x10b0);

        // A vtable in .rdata: [helper, handler]. Only the second entry is a path.
        let a = analyze_image(&code, &PDATA, &[HELPER, HANDLER]);
        assert_eq!(a.paths, [PanicPath::Pointer { at: POINTERS + 8, callee: HANDLER }]);
    }

    #[test]
    fn a_local_thunk_and_a_taken_address_are_followed() {
        let mut code = Code::new();
        let mut lea = 0;
        entry(&mut code, |c| {
            lea = c.here();
            c.lea_rcx(HELPER).call_rax();
        });
        // The helper calls the bugcheck through a local thunk `jmp [rip+slot]` (a leaf, no .pdata).
        code.at(HELPER).prologue();
        let via_thunk = code.here();
        code.call(THUNK).epilogue();
        code.at(THUNK).jmp_slot(slot(1));
        // A leaf function after the thunk, nothing to do with it.
        code.at(LEAF).raw(&[0x31, 0xc0, 0xc3]);
        code.at(0x10e0);

        let pdata = [(ENTRY, 0x1020), (HELPER, 0x1060)];
        let a = analyze_image(&code, &pdata, &[]);
        assert_eq!(a.pdata_functions, 2);
        // The thunk and the leaf, split at the padding after the thunk's jmp.
        assert_eq!(a.leaf_functions, 2);
        assert_eq!(
            a.bugcheck_calls,
            [
                BugcheckCall {
                    site: via_thunk,
                    function: HELPER,
                    routine: "KeBugCheckEx".into(),
                    thunk: Some(THUNK)
                },
                BugcheckCall {
                    site: THUNK,
                    function: THUNK,
                    routine: "KeBugCheckEx".into(),
                    thunk: None
                },
            ]
        );
        // The thunk is not a panic function itself: the helper, which calls it, is.
        assert_eq!(a.panic_functions, [HELPER]);
        assert_eq!(
            a.paths,
            [PanicPath::AddressTaken { site: lea, function: ENTRY, callee: HELPER }]
        );
        // `call rax` cannot be followed: listed, not failed on.
        assert_eq!(a.unresolved, [lea + 7]);
    }

    #[test]
    fn a_load_of_the_slot_counts_as_a_bugcheck_call_and_tail_jumps_are_edges() {
        let mut code = Code::new();
        let mut tail = 0;
        entry(&mut code, |c| {
            tail = c.here();
            c.jmp(HANDLER);
        });
        code.at(HANDLER).prologue();
        let load = code.here();
        code.load_and_call(slot(1)).raw(&[0xcc]);
        code.at(0x10b0);

        let pdata = [(ENTRY, 0x1020), (HANDLER, 0x10a0)];
        let a = analyze_image(&code, &pdata, &[]);
        assert_eq!(a.bugcheck_calls.len(), 1);
        assert_eq!(a.bugcheck_calls[0].site, load);
        assert_eq!(a.panic_functions, [HANDLER]);
        assert_eq!(
            a.paths,
            [
                PanicPath::Root { function: ENTRY, name: "the entry point".into() },
                PanicPath::Call { site: tail, caller: ENTRY, callee: HANDLER },
            ]
        );
        // `call rsi` after the load of the slot is unresolved (the load is what counts).
        assert_eq!(a.unresolved, [load + 7]);
    }

    #[test]
    fn an_image_without_the_import_has_no_sites_and_every_byte_decoded() {
        let mut code = Code::new();
        entry(&mut code, |c| {
            c.call(LEAF);
        });
        code.at(LEAF).raw(&[0x31, 0xc0, 0xc3]);
        let data = image(&code, &["IoCreateDevice"], &[(ENTRY, 0x1020)], &[LEAF], ENTRY);
        let a = analyze(&data).unwrap();
        assert_eq!(a.bugcheck_slots, []);
        assert_eq!(a.bugcheck_calls, []);
        assert_eq!(a.paths, []);
        assert_eq!((a.pdata_functions, a.leaf_functions), (1, 1));
        assert_eq!(a.decoded_bytes, code.bytes.len() as u64);
        // prologue, call, epilogue (2), then int3 padding up to LEAF, then xor and ret.
        let padding = (LEAF - 0x1000) as usize - (4 + 5 + 5);
        assert_eq!(a.instructions, 4 + padding + 2);
    }

    #[test]
    fn undecodable_bytes_inside_a_pdata_function_are_reported() {
        let mut code = Code::new();
        // 0x06 (push es) does not exist in 64-bit mode.
        code.at(ENTRY).prologue().raw(&[0x06]).epilogue();
        let data = image(&code, &[], &[(ENTRY, 0x100a)], &[], ENTRY);
        let a = analyze(&data).unwrap();
        assert_eq!(a.invalid, [(ENTRY, ENTRY + 4)]);
        // The decoder skips the bad byte (and what it took as its operands): fewer bytes decoded.
        assert!(a.decoded_bytes < code.bytes.len() as u64);
    }
}
