//! Panic-free text helpers for kernel-side parsing (service parameters).
//!
//! `str::split` with a `char` pattern and `copy_from_slice` carry panic paths that the optimizer
//! cannot remove, and a driver must not contain any (docs/reliability.md). These split on an ASCII
//! byte, which is always a character boundary, and slice with `get`.

/// Pieces of `s` between occurrences of the ASCII byte `sep`, trimmed of ASCII whitespace, empty
/// pieces skipped.
pub fn split(s: &str, sep: u8) -> Split<'_> {
    Split { rest: Some(s), sep }
}

/// The iterator of [`split`].
#[derive(Clone, Debug)]
pub struct Split<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let rest = self.rest?;
            let (piece, tail) = match rest.bytes().position(|b| b == self.sep) {
                Some(at) => (rest.get(..at).unwrap_or(""), rest.get(at + 1..)),
                None => (rest, None),
            };
            self.rest = tail;
            let piece = trim(piece);
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }
}

/// `s` without leading and trailing ASCII whitespace.
pub fn trim(s: &str) -> &str {
    // `u8::is_ascii_whitespace` at both ends, without `str` slicing's boundary checks.
    s.trim_ascii()
}

/// `s` split at the first ASCII `sep`: (before, after); `None` when absent.
pub fn split_once(s: &str, sep: u8) -> Option<(&str, &str)> {
    let at = s.bytes().position(|b| b == sep)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// Copies as much of `src` as fits into `dst`; returns how much.
pub fn copy_prefix(dst: &mut [u8], src: &[u8]) -> usize {
    let mut n = 0;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
        n += 1;
    }
    n
}

/// Parses a `u32`: decimal, or hexadecimal after `0x` (no sign, no spaces, no overflow).
pub fn parse_u32(s: &str) -> Option<u32> {
    // Bytes, not `str` slicing: no character-boundary checks to link into the drivers.
    let (digits, radix) = match s.as_bytes() {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        all => (all, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value = 0u32;
    for &b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            // ASCII letters differ from their lower case in bit 5 only.
            _ => match b | 0x20 {
                c @ b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            },
        };
        if u32::from(d) >= radix {
            return None;
        }
        value = value.checked_mul(radix)?.checked_add(u32::from(d))?;
    }
    Some(value)
}

/// Converts a registry string (UTF-16LE bytes) to UTF-8 in `out` and returns its length, or
/// `None` when it does not fit. Trailing NULs end the text; inner NULs (the separators of a
/// `REG_MULTI_SZ`) become `,`; an unpaired surrogate becomes U+FFFD. What it writes is always
/// valid UTF-8: the kernel crate relies on it to skip validation.
pub fn utf16le_to_utf8(data: &[u8], out: &mut [u8]) -> Option<usize> {
    let unit = |i: usize| match data.get(2 * i..2 * i + 2) {
        Some(&[lo, hi]) => Some(u32::from(u16::from_le_bytes([lo, hi]))),
        _ => None,
    };
    let mut units = data.len() / 2;
    while units > 0 && unit(units - 1) == Some(0) {
        units -= 1;
    }
    let (mut i, mut len) = (0, 0);
    while i < units {
        let u = unit(i)?;
        i += 1;
        let c = match u {
            0 => u32::from(b','),
            0xD800..=0xDBFF => match unit(i).filter(|l| (0xDC00..=0xDFFF).contains(l)) {
                Some(low) if i < units => {
                    i += 1;
                    0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                }
                _ => 0xFFFD,
            },
            0xDC00..=0xDFFF => 0xFFFD,
            _ => u,
        };
        let (n, prefix) = match c {
            0..=0x7F => (1, 0),
            0x80..=0x7FF => (2, 0xC0),
            0x800..=0xFFFF => (3, 0xE0),
            _ => (4, 0xF0),
        };
        let dst = out.get_mut(len..len + n)?;
        for (k, slot) in dst.iter_mut().enumerate() {
            let bits = (c >> (6 * (n - 1 - k))) as u8;
            *slot = if k == 0 { prefix | bits } else { 0x80 | (bits & 0x3F) };
        }
        len += n;
    }
    Some(len)
}

/// NTFS's upper case of one character, as [`crate::FileName`] compares names: the volume's upcase
/// table (Windows Vista's) for ASCII, Latin-1, Latin Extended-A, Greek and Coptic, Cyrillic and its
/// supplement, and full-width Latin; any other character is returned unchanged. Dotless i, long s
/// and the micro sign stay as they are, where Unicode upper-cases them.
pub const fn upcase_char(c: char) -> char {
    crate::operation::fold(c)
}

/// ASCII case-insensitive equality, in one small loop (`str::eq_ignore_ascii_case` unrolls into
/// much more code, and a driver pays for every copy).
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x.eq_ignore_ascii_case(&y))
}

/// A list of names packed into one string, each followed by `\n`: a few bytes per name where a
/// table of `&str` costs sixteen, and no code per name. Built with `concat!`; looked up by
/// position.
#[derive(Clone, Copy, Debug)]
pub struct Names(pub &'static str);

impl Names {
    /// The names, in order.
    pub fn iter(self) -> Split<'static> {
        split(self.0, b'\n')
    }

    /// The name at `index`.
    #[inline(never)] // one copy, however many tables a driver looks names up in
    pub fn get(self, index: usize) -> Option<&'static str> {
        self.iter().nth(index)
    }

    /// The index of `word`, compared without regard to ASCII case.
    #[inline(never)] // as above
    pub fn position(self, word: &str) -> Option<usize> {
        self.iter().position(|n| eq_ignore_case(n, word))
    }

    /// How many names.
    pub fn len(self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn packed_names() {
        let names = Names("disk\ncdrom\nnetwork\n");
        assert_eq!(names.len(), 3);
        assert_eq!(names.get(1), Some("cdrom"));
        assert_eq!(names.get(3), None);
        assert_eq!(names.position("CdRom"), Some(1));
        assert_eq!(names.position("cd"), None);
        assert_eq!(names.position(""), None);
        assert!(Names("").is_empty());
    }

    fn utf16le(units: &[u16]) -> std::vec::Vec<u8> {
        units.iter().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn registry_strings_become_utf8() {
        use std::string::String;
        let mut out = [0u8; 64];
        let cases: [(&[u16], &str); 6] = [
            (&[0x61, 0x62, 0, 0], "ab"),
            (&[0x61, 0, 0x62, 0, 0], "a,b"),
            (&[0xE9, 0x4E2D, 0xD83D, 0xDE00], "é中😀"),
            (&[0xD83D, 0x61], "\u{FFFD}a"),
            (&[0xDE00, 0xD83D], "\u{FFFD}\u{FFFD}"),
            (&[], ""),
        ];
        for (units, expected) in cases {
            let n = utf16le_to_utf8(&utf16le(units), &mut out).unwrap();
            assert_eq!(core::str::from_utf8(&out[..n]), Ok(expected), "{units:x?}");
        }
        // Every BMP scalar and a spread of supplementary ones agree with the standard library.
        let mut big = [0u8; 8];
        for c in (0..0x11_0000u32).step_by(7).filter_map(char::from_u32) {
            let mut units = [0u16; 2];
            let units = c.encode_utf16(&mut units);
            let n = utf16le_to_utf8(&utf16le(units), &mut big).unwrap();
            let expected: String = [if c == '\0' { ',' } else { c }].iter().collect();
            if c != '\0' {
                assert_eq!(&big[..n], expected.as_bytes(), "U+{:04X}", c as u32);
            }
        }
        // Too long for the buffer: refused, not cut inside a character.
        assert_eq!(utf16le_to_utf8(&utf16le(&[0x4E2D, 0x4E2D]), &mut out[..4]), None);
        // Whatever the units, surrogates paired or not, the output is UTF-8 (the kernel crate's
        // registry reader relies on it and skips validation): every unit alone, then every unit
        // before and after each kind of surrogate and an odd byte count.
        let mut out = [0u8; 16];
        for u in 0..=0xFFFFu16 {
            for units in [&[u][..], &[0xD800, u], &[u, 0xDC00], &[u, 0xD800, u]] {
                let mut bytes = utf16le(units);
                for odd in [false, true] {
                    if odd {
                        bytes.push(0x41);
                    }
                    let n = utf16le_to_utf8(&bytes, &mut out).unwrap();
                    assert!(core::str::from_utf8(&out[..n]).is_ok(), "{units:x?} odd={odd}");
                }
            }
        }
    }

    #[test]
    fn numbers_in_both_radixes() {
        assert_eq!(parse_u32("250"), Some(250));
        assert_eq!(parse_u32("0xC0000022"), Some(0xC000_0022));
        assert_eq!(parse_u32("0XfF"), Some(255));
        assert_eq!(parse_u32("0x"), None);
        assert_eq!(parse_u32("12a"), None);
        assert_eq!(parse_u32("\u{10}"), None, "a control byte is no digit");
        assert_eq!(parse_u32("0xG"), None);
        assert_eq!(parse_u32("0xa@"), None);
        assert_eq!(parse_u32("0x1_0000_0000"), None);
        assert_eq!(parse_u32("0x100000000"), None);
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32(""), None);
    }

    #[test]
    fn splitting() {
        let v: [Option<&str>; 4] = {
            let mut it = split(" a, b ,,c ", b',');
            [it.next(), it.next(), it.next(), it.next()]
        };
        assert_eq!(v, [Some("a"), Some("b"), Some("c"), None]);
        assert_eq!(split("", b',').next(), None);
        assert_eq!(split("é;ü", b';').collect_two(), (Some("é"), Some("ü")));
        assert_eq!(split_once("read:paging", b':'), Some(("read", "paging")));
        assert_eq!(split_once("read", b':'), None);
        assert_eq!(trim("  x y \t"), "x y");
        assert_eq!(trim("   "), "");
    }

    #[test]
    fn numbers_and_copies() {
        assert_eq!(parse_u32("0"), Some(0));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("12a"), None);
        assert_eq!(parse_u32("\u{10}"), None, "a control byte is no digit");
        assert_eq!(parse_u32("0xG"), None);
        assert_eq!(parse_u32("0xa@"), None);
        assert_eq!(parse_u32(""), None);
        let mut dst = [0u8; 3];
        assert_eq!(copy_prefix(&mut dst, b"abcdef"), 3);
        assert_eq!(&dst, b"abc");
        assert_eq!(copy_prefix(&mut dst, b"z"), 1);
        assert_eq!(&dst, b"zbc");
    }

    trait CollectTwo<'a> {
        fn collect_two(self) -> (Option<&'a str>, Option<&'a str>);
    }

    impl<'a, I: Iterator<Item = &'a str>> CollectTwo<'a> for I {
        fn collect_two(mut self) -> (Option<&'a str>, Option<&'a str>) {
            (self.next(), self.next())
        }
    }
}
