//! UTF-16 strings for kernel calls: `wide!` literals built at compile time, and
//! `UNICODE_STRING` conversions.

use windows_sys::Win32::Foundation::UNICODE_STRING;

/// The number of UTF-16 units of `s`.
pub const fn utf16_len(s: &str) -> usize {
    let mut n = 0;
    let mut rest = s.as_bytes();
    while let [b, tail @ ..] = rest {
        // Count lead bytes: one unit per scalar, two for those above U+FFFF (4-byte UTF-8).
        if *b & 0xC0 != 0x80 {
            n += if *b >= 0xF0 { 2 } else { 1 };
        }
        rest = tail;
    }
    n
}

/// `s` as UTF-16, for `wide!`. `N` must be `utf16_len(s)`; extra units stay zero.
pub const fn utf16<const N: usize>(s: &str) -> [u16; N] {
    let mut out = [0u16; N];
    let mut i = 0;
    let mut rest = s.as_bytes();
    while let [b0, tail @ ..] = rest {
        let b0 = *b0 as u32;
        let (scalar, used) = match tail {
            _ if b0 < 0x80 => (b0, 0),
            [b1, ..] if b0 < 0xE0 => (((b0 & 0x1F) << 6) | (*b1 as u32 & 0x3F), 1),
            [b1, b2, ..] if b0 < 0xF0 => {
                (((b0 & 0x0F) << 12) | ((*b1 as u32 & 0x3F) << 6) | (*b2 as u32 & 0x3F), 2)
            }
            [b1, b2, b3, ..] => (
                ((b0 & 0x07) << 18)
                    | ((*b1 as u32 & 0x3F) << 12)
                    | ((*b2 as u32 & 0x3F) << 6)
                    | (*b3 as u32 & 0x3F),
                3,
            ),
            _ => (0xFFFD, 0),
        };
        rest = match tail.split_at_checked(used) {
            Some((_, r)) => r,
            None => &[],
        };
        if scalar >= 0x1_0000 {
            let v = scalar - 0x1_0000;
            put(&mut out, i, (0xD800 + (v >> 10)) as u16);
            put(&mut out, i + 1, (0xDC00 + (v & 0x3FF)) as u16);
            i += 2;
        } else {
            put(&mut out, i, scalar as u16);
            i += 1;
        }
    }
    out
}

const fn put<const N: usize>(out: &mut [u16; N], i: usize, v: u16) {
    if let Some((_, [slot, ..])) = out.split_at_mut_checked(i) {
        *slot = v;
    }
}

/// A `&'static [u16]` literal: `wide!("\\Device\\FsFilterProbe")`.
#[macro_export]
macro_rules! wide {
    ($s:literal) => {{
        const UNITS: [u16; $crate::unicode::utf16_len($s)] =
            $crate::unicode::utf16::<{ $crate::unicode::utf16_len($s) }>($s);
        const SLICE: &[u16] = &UNITS;
        SLICE
    }};
}

/// A `UNICODE_STRING` describing `units` (not NUL-terminated). Lengths are in bytes and cut at
/// `u16::MAX - 1`.
pub fn unicode_string(units: &[u16]) -> UNICODE_STRING {
    let bytes = units.len().saturating_mul(2).min(usize::from(u16::MAX - 1)) as u16;
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: units.as_ptr().cast_mut() }
}

/// The units a `UNICODE_STRING` describes.
///
/// # Safety
/// `s.Buffer` must be valid for `s.Length` bytes for `'a`, or `Length` must be zero.
pub unsafe fn units<'a>(s: &UNICODE_STRING) -> &'a [u16] {
    if s.Buffer.is_null() || s.Length == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees Buffer holds Length bytes; u16 alignment is the kernel's.
    unsafe { core::slice::from_raw_parts(s.Buffer, usize::from(s.Length / 2)) }
}

/// Replaces the name of `file`, a create's file object, with `name` through
/// `IoReplaceFileObjectName`, which allocates the new buffer and frees the old one (the I/O
/// manager owns both): the checks of `Services::replace_file_name` that both backends share
/// (rule 27). `STATUS_INVALID_PARAMETER` for no file object, for one without a name (a volume
/// open: nothing to replace, as the routine's reference page says) and for a name outside 1 to
/// 32,767 units (its length in bytes is a `USHORT`); then the routine's own status.
///
/// # Safety
/// `file` is null or the running create's valid file object; the caller is at `PASSIVE_LEVEL`.
pub unsafe fn replace_file_object_name(
    file: *mut windows_sys::Wdk::Foundation::FILE_OBJECT,
    name: &[u16],
) -> Result<(), fsfilter::Error> {
    // SAFETY: the caller's contract.
    let named = unsafe { file.as_ref() }.is_some_and(|f| f.FileName.Length != 0);
    // 2 to 65,534 bytes: 1 to 32,767 units.
    let bytes = u16::try_from(core::mem::size_of_val(name)).unwrap_or(0);
    if !named || bytes == 0 {
        return Err(fsfilter::Error::INVALID_PARAMETER);
    }
    // SAFETY: a valid file object with a name, `bytes` bytes of `name`, PASSIVE_LEVEL (the
    // caller's contract); the routine copies the name into a buffer of its own.
    let status = unsafe {
        windows_sys::Wdk::Storage::FileSystem::IoReplaceFileObjectName(file, name.as_ptr(), bytes)
    };
    match fsfilter::Error::new(fsfilter::Status(status)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn wide_literals_match_rust_utf16() {
        for s in ["", "\\Device\\Probe", "é€", "a𝄞b", "Ω"] {
            let mine: Vec<u16> = match utf16_len(s) {
                0 => Vec::new(),
                n => {
                    let mut v = std::vec![0u16; n];
                    // Run the const encoder through a runtime wrapper of each needed size.
                    let enc: [u16; 16] = utf16::<16>(s);
                    v.copy_from_slice(&enc[..n]);
                    v
                }
            };
            let expect: Vec<u16> = s.encode_utf16().collect();
            assert_eq!(mine, expect, "{s}");
        }
        const W: &[u16] = wide!("\\FileSystem\\Filters\\Probe");
        assert_eq!(W, "\\FileSystem\\Filters\\Probe".encode_utf16().collect::<Vec<_>>());
    }

    #[test]
    fn unicode_strings_count_bytes() {
        let w: Vec<u16> = "abc".encode_utf16().collect();
        let us = unicode_string(&w);
        assert_eq!((us.Length, us.MaximumLength), (6, 6));
        // SAFETY: `us` describes `w`, which is alive.
        assert_eq!(unsafe { units(&us) }, &w[..]);
        let empty = unicode_string(&[]);
        // SAFETY: a zero length needs no buffer.
        assert!(unsafe { units(&empty) }.is_empty());
    }
}
