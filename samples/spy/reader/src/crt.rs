//! The C runtime symbols the compiler expects of a Windows program linked with `/NODEFAULTLIB`:
//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp`, `__chkstk`, `_fltused` and
//! `__CxxFrameHandler3` (toolchain.md, "Symbols the compiler expects"; the drivers get theirs
//! from `shared/kernel`, which a user-mode program cannot link: it brings the kernel's panic
//! handler and imports).
//!
//! The same approach: the memory functions are x86-64 string instructions in inline assembly (a
//! Rust loop named `memcpy` could be compiled back into a call to `memcpy`), tested on the host
//! under their `sr_*` names; the Windows build exports them under the C names.

#![cfg(target_arch = "x86_64")]

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst`, forward.
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes; the ranges must not overlap.
pub unsafe extern "C" fn sr_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the ranges; the ABI guarantees the direction flag is clear,
    // so `rep movsb` copies `rcx` bytes upwards from `rsi` to `rdi`.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the ranges may overlap.
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes.
pub unsafe extern "C" fn sr_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // `dst` at or above `src` and inside the source: copy downwards from the last byte.
    let overlaps_above = (dst as usize).wrapping_sub(src as usize) < n;
    if !overlaps_above {
        // SAFETY: the caller's guarantee; a forward copy reads each source byte before any write
        // reaches it when `dst` is below `src` or the ranges are apart.
        return unsafe { sr_memcpy(dst, src, n) };
    }
    // SAFETY: the caller guarantees the ranges; `rsi` and `rdi` start on the last byte of each
    // and, with the direction flag set, `rep movsb` walks `rcx` bytes down; `cld` restores the
    // clear flag the ABI requires.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _,
             inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
             inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
             options(nostack));
    }
    dst
}

/// Sets `n` bytes at `dst` to the low byte of `c`.
///
/// # Safety
/// `dst` must be writable for `n` bytes.
pub unsafe extern "C" fn sr_memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; `rep stosb` stores `al` `rcx` times upwards.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// Compares `n` bytes as unsigned: negative, zero or positive as `a`'s first differing byte is
/// below, equal to or above `b`'s.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
pub unsafe extern "C" fn sr_memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let diff: i32;
    // SAFETY: the caller guarantees the ranges; `repe cmpsb` reads at most `rcx` bytes of each
    // and stops after the first difference, leaving `rsi` and `rdi` one past it.
    unsafe {
        asm!(
            "xor eax, eax",
            "jrcxz 2f",
            "repe cmpsb",
            "je 2f",
            "movzx eax, byte ptr [rsi - 1]",
            "movzx ecx, byte ptr [rdi - 1]",
            "sub eax, ecx",
            "2:",
            inout("rcx") n => _,
            inout("rsi") a => _,
            inout("rdi") b => _,
            out("eax") diff,
            options(nostack, readonly)
        );
    }
    diff
}

// `__chkstk`: `rax` is the size of the frame the caller is about to make. Probes one byte per
// page from the caller's stack pointer down to the frame's end, in order, so that each access hits
// the guard page just below the committed stack. Changes only `r10`, `r11` and the flags.
macro_rules! chkstk {
    ($name:literal) => {
        core::arch::global_asm!(
            concat!(".globl ", $name),
            concat!($name, ":"),
            "mov r10, rsp",
            // r10 = the caller's rsp (above the return address), r11 = the frame's lowest byte.
            "add r10, 8",
            "mov r11, r10",
            "sub r11, rax",
            "3:",
            "sub r10, 0x1000",
            "cmp r10, r11",
            "jb 4f",
            "test byte ptr [r10], 0",
            "jmp 3b",
            "4:",
            "test byte ptr [r11], 0",
            "ret",
        );
    };
}

#[cfg(windows)]
chkstk!("__chkstk");
#[cfg(not(windows))]
chkstk!("sr_chkstk");

#[cfg(windows)]
pub mod exports {
    //! The C names, on Windows only (on the host the C library has them).

    /// `memcpy`.
    ///
    /// # Safety
    /// See [`super::sr_memcpy`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { super::sr_memcpy(dst, src, n) }
    }

    /// `memmove`.
    ///
    /// # Safety
    /// See [`super::sr_memmove`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { super::sr_memmove(dst, src, n) }
    }

    /// `memset`.
    ///
    /// # Safety
    /// See [`super::sr_memset`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { super::sr_memset(dst, c, n) }
    }

    /// `memcmp`.
    ///
    /// # Safety
    /// See [`super::sr_memcmp`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { super::sr_memcmp(a, b, n) }
    }

    /// `bcmp`: zero when the bytes are equal (LLVM's equality-only comparison).
    ///
    /// # Safety
    /// See [`super::sr_memcmp`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { super::sr_memcmp(a, b, n) }
    }

    /// `_fltused`: the marker the compiler references from code that uses floating point.
    #[unsafe(no_mangle)]
    #[used]
    pub static _fltused: i32 = 0;

    /// `__CxxFrameHandler3`: named by the precompiled libcore (built with unwinding). The
    /// program aborts on panic and never unwinds; asked about an exception, it declines
    /// (`ExceptionContinueSearch`), as a frame without a handler does.
    #[unsafe(no_mangle)]
    pub extern "C" fn __CxxFrameHandler3(
        _record: *mut core::ffi::c_void,
        _frame: *mut core::ffi::c_void,
        _context: *mut core::ffi::c_void,
        _dispatcher: *mut core::ffi::c_void,
    ) -> i32 {
        1
    }
}

#[cfg(all(test, not(windows)))]
mod tests {
    extern crate std;

    use super::*;
    use std::vec;
    use std::vec::Vec;

    unsafe extern "C" {
        fn sr_chkstk();
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 13 + 1) as u8).collect()
    }

    #[test]
    fn copies_and_fills_touch_exactly_their_range() {
        for n in [0usize, 1, 5, 16, 33, 4096, 5000] {
            let src = bytes(n);
            let mut dst = vec![0x55u8; n + 2];
            // SAFETY: `dst` has n bytes from index 1, `src` has n; they are apart.
            let r = unsafe { sr_memcpy(dst.as_mut_ptr().wrapping_add(1), src.as_ptr(), n) };
            assert_eq!(r, dst.as_mut_ptr().wrapping_add(1));
            assert_eq!(&dst[1..=n], &src[..]);
            assert_eq!((dst[0], dst[n + 1]), (0x55, 0x55));
            // SAFETY: as above.
            unsafe { sr_memset(dst.as_mut_ptr().wrapping_add(1), 0x3A7, n) };
            assert!(dst[1..=n].iter().all(|b| *b == 0xA7));
            assert_eq!((dst[0], dst[n + 1]), (0x55, 0x55));
        }
    }

    #[test]
    fn moves_overlap_both_ways() {
        for shift in [1usize, 2, 9, 64] {
            let n = 200;
            let mut up = bytes(n + shift);
            let want: Vec<u8> = up[..n].to_vec();
            // SAFETY: both ranges lie in `up`.
            unsafe { sr_memmove(up.as_mut_ptr().wrapping_add(shift), up.as_ptr(), n) };
            assert_eq!(&up[shift..], &want[..]);
            let mut down = bytes(n + shift);
            let want: Vec<u8> = down[shift..].to_vec();
            // SAFETY: both ranges lie in `down`.
            unsafe { sr_memmove(down.as_mut_ptr(), down.as_ptr().wrapping_add(shift), n) };
            assert_eq!(&down[..n], &want[..]);
        }
        // The direction flag is clear again: a forward copy works.
        let src = bytes(40);
        let mut dst = [0u8; 40];
        // SAFETY: 40 bytes each.
        unsafe { sr_memcpy(dst.as_mut_ptr(), src.as_ptr(), 40) };
        assert_eq!(&dst[..], &src[..]);
    }

    #[test]
    fn compares_as_unsigned_bytes() {
        let cmp = |a: &[u8], b: &[u8]| {
            assert_eq!(a.len(), b.len());
            // SAFETY: both slices have a.len() bytes.
            unsafe { sr_memcmp(a.as_ptr(), b.as_ptr(), a.len()) }
        };
        assert_eq!(cmp(b"", b""), 0);
        assert_eq!(cmp(b"spy", b"spy"), 0);
        assert!(cmp(b"spa", b"spy") < 0);
        assert!(cmp(b"spy", b"spa") > 0);
        assert_eq!(cmp(&[0, 0xF0], &[0, 0x10]), 0xE0);
        assert!(cmp(&[0x01], &[0xFF]) < 0, "unsigned");
    }

    #[test]
    fn chkstk_probes_without_changing_rax_or_rsp() {
        for size in [16u64, 0xFF8, 0x1000, 0x2010, 0x9000] {
            let (rax, rsp_before, rsp_after): (u64, u64, u64);
            // SAFETY: sr_chkstk reads one byte per page of the `size` bytes below the stack
            // pointer, inside the test thread's stack (2 MiB); it changes r10, r11 and flags.
            unsafe {
                asm!(
                    "mov {before}, rsp",
                    "sub rsp, 8",
                    "call {f}",
                    "add rsp, 8",
                    "mov {after}, rsp",
                    f = sym sr_chkstk,
                    before = out(reg) rsp_before,
                    after = out(reg) rsp_after,
                    inout("rax") size => rax,
                    out("r10") _,
                    out("r11") _,
                );
            }
            assert_eq!(rax, size);
            assert_eq!(rsp_before, rsp_after);
        }
    }
}
