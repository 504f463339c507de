//! The `seh` check: the structured-exception scopes of a driver image (docs/building.md, "What
//! the PE checks verify"; docs/decisions/0008).
//!
//! fsfilter writes exactly one routine with an exception handler: the guarded copy of
//! `fsfilter_kernel::usercopy`, which a minifilter with a message channel uses to touch the raw
//! user buffers of `MessageNotify`. Its protection is all in data the compiler cannot check, so
//! this module reads it back from the image:
//!
//! - every `.pdata` function whose unwind information has `UNW_FLAG_EHANDLER` or
//!   `UNW_FLAG_UHANDLER` names as its handler a local thunk `jmp [rip+slot]` whose slot is the IAT
//!   slot of `ntoskrnl.exe!__C_specific_handler`;
//! - its handler data is a `SCOPE_TABLE_AMD64` of one record whose `[BeginAddress, EndAddress)`
//!   is exactly one `rep movsb` (`F3 A4`) inside the function, whose `HandlerAddress` is 1
//!   (`EXCEPTION_EXECUTE_HANDLER`) and whose `JumpTarget` lies inside the function, outside the
//!   scope;
//! - a minifilter that imports `FltCreateCommunicationPort` (it declares a channel) has exactly
//!   one such function.
//!
//! The layout (Learn, "x64 exception handling", `UNWIND_INFO`): version and flags (flags in the
//! top five bits), prologue size, count of unwind codes, frame register; the codes (two bytes
//! each, their count rounded up to even); with a handler flag, the handler's RVA, then the
//! handler data, which for `__C_specific_handler` is the scope table: a count, then records of
//! four RVAs (`BeginAddress`, `EndAddress`, `HandlerAddress`, `JumpTarget`).

use object::LittleEndian as LE;
use object::read::pe::PeFile64;

/// `UNW_FLAG_EHANDLER`.
pub const UNW_FLAG_EHANDLER: u8 = 0x1;
/// `UNW_FLAG_UHANDLER`.
pub const UNW_FLAG_UHANDLER: u8 = 0x2;
/// The handler every scope must use.
pub const C_SPECIFIC_HANDLER: &str = "__C_specific_handler";
/// The import that shows a minifilter declares a message channel.
pub const CHANNEL_IMPORT: &str = "FltCreateCommunicationPort";
/// `EXCEPTION_EXECUTE_HANDLER` as a scope record's `HandlerAddress` (a constant filter).
pub const EXECUTE_HANDLER: u32 = 1;
/// `rep movsb`.
pub const REP_MOVSB: [u8; 2] = [0xf3, 0xa4];

/// One record of a `SCOPE_TABLE_AMD64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// `BeginAddress`.
    pub begin: u32,
    /// `EndAddress` (exclusive).
    pub end: u32,
    /// `HandlerAddress`: a filter's RVA, or 1 for `EXCEPTION_EXECUTE_HANDLER`.
    pub handler: u32,
    /// `JumpTarget`: the `__except` block (0 for a `__finally`).
    pub target: u32,
}

/// What the unwind information of one function says about its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The `UNW_FLAG_*` bits.
    pub flags: u8,
    /// The handler's RVA.
    pub handler: u32,
    /// The scope table that follows it.
    pub scopes: Vec<Scope>,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads an `UNWIND_INFO` and, with a handler flag, the handler and its scope table. `None`
/// without a handler; an error when the bytes end early.
pub fn parse_unwind_info(info: &[u8]) -> Result<Option<Handled>, String> {
    let (Some(&version_flags), Some(&codes)) = (info.first(), info.get(2)) else {
        return Err("truncated UNWIND_INFO".into());
    };
    let flags = version_flags >> 3;
    if flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER) == 0 {
        return Ok(None);
    }
    // The codes, two bytes each, their count rounded up to an even number.
    let at = 4 + 2 * ((usize::from(codes) + 1) & !1);
    let handler = u32_at(info, at).ok_or("truncated handler RVA")?;
    let count = u32_at(info, at + 4).ok_or("truncated scope table")?;
    if count > 64 {
        return Err(format!("scope table of {count} records"));
    }
    let mut scopes = Vec::new();
    for i in 0..count as usize {
        let r = at + 8 + 16 * i;
        let field = |k: usize| u32_at(info, r + 4 * k).ok_or("truncated scope record");
        scopes.push(Scope {
            begin: field(0)?,
            end: field(1)?,
            handler: field(2)?,
            target: field(3)?,
        });
    }
    Ok(Some(Handled { flags, handler, scopes }))
}

/// A function with a handler, as found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SehFunction {
    /// `BeginAddress` of its `RUNTIME_FUNCTION`.
    pub begin: u32,
    /// `EndAddress`.
    pub end: u32,
    /// Its handler and scopes.
    pub handled: Handled,
}

/// What the check finds wrong with one function (or with the image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The function's RVA (0 for the image).
    pub function: u32,
    /// What is wrong.
    pub why: String,
}

/// Every function with a handler, the IAT slot of `__C_specific_handler` (if imported), and
/// whether the image imports [`CHANNEL_IMPORT`].
pub fn scan(data: &[u8]) -> Result<(Vec<SehFunction>, Option<u32>, bool), String> {
    let file = PeFile64::parse(data).map_err(|e| e.to_string())?;
    let sections = file.section_table();
    let mut slot = None;
    let mut channel = false;
    if let Some(table) = file.import_table().map_err(|e| format!("import table: {e}"))? {
        for descriptor in table.descriptors().map_err(|e| format!("import table: {e}"))? {
            let descriptor = descriptor.map_err(|e| format!("import table: {e}"))?;
            let dll = table.name(descriptor.name.get(LE)).map_err(|e| e.to_string())?;
            let iat = descriptor.first_thunk.get(LE);
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => iat,
                rva => rva,
            };
            let mut thunks = table.thunks(lookup).map_err(|e| e.to_string())?;
            let mut at = iat;
            while let Some(thunk) =
                thunks.next::<object::pe::ImageNtHeaders64>().map_err(|e| e.to_string())?
            {
                let import = table
                    .import::<object::pe::ImageNtHeaders64>(thunk)
                    .map_err(|e| e.to_string())?;
                if let object::read::pe::Import::Name(_, name) = import {
                    if name == C_SPECIFIC_HANDLER.as_bytes()
                        && dll.eq_ignore_ascii_case(b"ntoskrnl.exe")
                    {
                        slot = Some(at);
                    }
                    channel |= name == CHANNEL_IMPORT.as_bytes();
                }
                at = at.wrapping_add(8);
            }
        }
    }
    let mut functions = Vec::new();
    if let Some(dir) = file.data_directory(crate::disasm::DIRECTORY_EXCEPTION) {
        let (rva, size) = dir.address_range();
        if size != 0 {
            let bytes = sections
                .pe_data_at(data, rva)
                .ok_or_else(|| format!("exception directory at {rva:#x} is outside the file"))?;
            let bytes = bytes.get(..size as usize).unwrap_or(bytes);
            for entry in bytes.chunks_exact(12) {
                let begin = u32_at(entry, 0).unwrap_or(0);
                let end = u32_at(entry, 4).unwrap_or(0);
                let unwind = u32_at(entry, 8).unwrap_or(0);
                if begin == 0 && end == 0 {
                    continue;
                }
                let info = sections
                    .pe_data_at(data, unwind)
                    .ok_or_else(|| format!("unwind info at {unwind:#x} is outside the file"))?;
                if let Some(handled) = parse_unwind_info(info)
                    .map_err(|why| format!("unwind info at {unwind:#x}: {why}"))?
                {
                    functions.push(SehFunction { begin, end, handled });
                }
            }
        }
    }
    Ok((functions, slot, channel))
}

/// The target slot of the `jmp [rip+disp32]` (`FF 25`) at `rva`, if that is what is there.
fn thunk_slot(data: &[u8], file: &PeFile64<'_>, rva: u32) -> Option<u32> {
    let bytes = file.section_table().pe_data_at(data, rva)?;
    match bytes.get(..6)? {
        [0xff, 0x25, d @ ..] => {
            let disp = i32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            Some(rva.wrapping_add(6).wrapping_add_signed(disp))
        }
        _ => None,
    }
}

/// Runs the check; every problem found.
pub fn check(data: &[u8]) -> Result<Vec<Problem>, String> {
    let (functions, slot, channel) = scan(data)?;
    let file = PeFile64::parse(data).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    for f in &functions {
        let mut bad = |why: String| problems.push(Problem { function: f.begin, why });
        let h = &f.handled;
        match (slot, thunk_slot(data, &file, h.handler)) {
            (Some(s), Some(t)) if s == t => {}
            _ => bad(format!(
                "its handler at {:#x} is not a jump through ntoskrnl.exe!{C_SPECIFIC_HANDLER}'s \
                 import slot",
                h.handler
            )),
        }
        if h.flags & UNW_FLAG_EHANDLER == 0 {
            bad("its unwind information lacks UNW_FLAG_EHANDLER".into());
        }
        let [scope] = h.scopes.as_slice() else {
            bad(format!("its scope table has {} records, expected 1", h.scopes.len()));
            continue;
        };
        let inside = |rva: u32| f.begin <= rva && rva < f.end;
        if !(inside(scope.begin) && scope.begin < scope.end && scope.end <= f.end) {
            bad(format!(
                "its scope {:#x}..{:#x} is not inside the function {:#x}..{:#x}",
                scope.begin, scope.end, f.begin, f.end
            ));
        }
        let code = file.section_table().pe_data_at(data, scope.begin);
        let covered = code.and_then(|c| c.get(..(scope.end.wrapping_sub(scope.begin)) as usize));
        if covered != Some(&REP_MOVSB[..]) {
            bad(format!(
                "its scope {:#x}..{:#x} is not exactly a `rep movsb`",
                scope.begin, scope.end
            ));
        }
        if scope.handler != EXECUTE_HANDLER {
            bad(format!(
                "its scope's HandlerAddress is {:#x}, expected 1 (EXCEPTION_EXECUTE_HANDLER)",
                scope.handler
            ));
        }
        if !inside(scope.target) || (scope.begin <= scope.target && scope.target < scope.end) {
            let target = scope.target;
            bad(format!("its scope's JumpTarget {target:#x} is not in the function, out of scope"));
        }
    }
    if channel && functions.len() != 1 {
        problems.push(Problem {
            function: 0,
            why: format!(
                "imports {CHANNEL_IMPORT} (a message channel) but has {} functions with an \
                 exception handler, expected 1: the guarded copy of MessageNotify's user buffers",
                functions.len()
            ),
        });
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unwind information clang and the guarded copy emit: version 1 with
    /// `UNW_FLAG_EHANDLER`, a 2-byte prologue of two pushes (two codes), the handler's RVA, and a
    /// one-record scope table.
    fn guarded_copy_info() -> Vec<u8> {
        let mut info = vec![0x09, 0x02, 0x02, 0x00];
        // UWOP_PUSH_NONVOL rdi at offset 2, rsi at offset 1.
        info.extend_from_slice(&[0x02, 0x70, 0x01, 0x60]);
        for v in [0x20c0u32, 1, 0x20ab, 0x20ad, 1, 0x20b2] {
            info.extend_from_slice(&v.to_le_bytes());
        }
        info
    }

    use crate::disasm::synthetic::{Code, RDATA, image, slot};

    /// The guarded copy at 0x1000 (as the assembler lays it out), its handler thunk at 0x1020,
    /// and its unwind information at RDATA + 0x500 with the handler RVA and scope fields
    /// `fields` (handler, count, begin, end, filter, target); `None` keeps the shared unwind
    /// information without a handler.
    fn copy_image(fields: Option<[u32; 6]>) -> Vec<u8> {
        let mut code = Code::new();
        code.at(0x1000).raw(&[0x56, 0x57, 0x48, 0x89, 0xcf, 0x48, 0x89, 0xd6, 0x4c, 0x89, 0xc1]);
        code.raw(&REP_MOVSB).raw(&[0x31, 0xc0, 0x5f, 0x5e, 0xc3]);
        code.raw(&[0xb8, 0x05, 0x00, 0x00, 0xc0, 0xeb, 0xf6]);
        code.at(0x1020).jmp_slot(slot(0));
        let imports = [C_SPECIFIC_HANDLER, CHANNEL_IMPORT];
        let mut data = image(&code, &imports, &[(0x1000, 0x1019)], &[], 0x1000);
        if let Some(fields) = fields {
            let mut info = vec![0x09, 0x02, 0x02, 0x00, 0x02, 0x70, 0x01, 0x60];
            for v in fields {
                info.extend_from_slice(&v.to_le_bytes());
            }
            let at = file_offset(&data, RDATA + 0x500);
            data[at..at + info.len()].copy_from_slice(&info);
            let entry = file_offset(&data, RDATA + 0x410);
            data[entry + 8..entry + 12].copy_from_slice(&(RDATA + 0x500).to_le_bytes());
        }
        data
    }

    fn file_offset(data: &[u8], rva: u32) -> usize {
        let file = PeFile64::parse(data).unwrap();
        let (offset, _) = file.section_table().pe_file_range_at(rva).unwrap();
        offset as usize
    }

    const GOOD: [u32; 6] = [0x1020, 1, 0x100b, 0x100d, 1, 0x1012];

    fn whys(fields: Option<[u32; 6]>) -> Vec<String> {
        check(&copy_image(fields)).unwrap().into_iter().map(|p| p.why).collect()
    }

    #[test]
    fn the_guarded_copys_scope_passes_and_each_mistake_is_named() {
        let (functions, slot0, channel) = scan(&copy_image(Some(GOOD))).unwrap();
        assert_eq!((functions.len(), slot0, channel), (1, Some(slot(0)), true));
        assert_eq!(whys(Some(GOOD)), Vec::<String>::new());
        let with = |i: usize, v: u32| {
            let mut f = GOOD;
            f[i] = v;
            whys(Some(f))
        };
        let one = |got: Vec<String>, want: &str| {
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(got[0].contains(want), "{got:?}");
        };
        one(with(0, 0x1000), "is not a jump through ntoskrnl.exe!__C_specific_handler");
        one(with(3, 0x100e), "is not exactly a `rep movsb`");
        one(with(4, 0), "expected 1 (EXCEPTION_EXECUTE_HANDLER)");
        one(with(5, 0x100b), "JumpTarget 0x100b");
        one(with(1, 2), "has 2 records");
        // A channel's import without the guarded copy.
        one(whys(None), "but has 0 functions with an exception handler");
    }

    #[test]
    fn the_scope_table_follows_the_handler_after_the_even_count_of_codes() {
        let h = parse_unwind_info(&guarded_copy_info()).unwrap().unwrap();
        assert_eq!(h.flags, UNW_FLAG_EHANDLER);
        assert_eq!(h.handler, 0x20c0);
        assert_eq!(h.scopes, [Scope { begin: 0x20ab, end: 0x20ad, handler: 1, target: 0x20b2 }]);
        // An odd count of codes is padded to even: three codes take eight bytes.
        let mut odd = vec![0x09, 0x04, 0x03, 0x00, 1, 2, 3, 4, 5, 6, 0, 0];
        for v in [0x3000u32, 1, 0x10, 0x20, 1, 0x30] {
            odd.extend_from_slice(&v.to_le_bytes());
        }
        let h = parse_unwind_info(&odd).unwrap().unwrap();
        assert_eq!((h.handler, h.scopes[0].begin), (0x3000, 0x10));
        // No handler flag: nothing to read.
        assert_eq!(parse_unwind_info(&[0x01, 0x04, 0x01, 0x00, 0x04, 0x42]).unwrap(), None);
        // Cut short.
        assert!(parse_unwind_info(&guarded_copy_info()[..20]).is_err());
    }
}
