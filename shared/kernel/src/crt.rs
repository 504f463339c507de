//! The C runtime symbols the compiler expects on the Windows target (toolchain.md, "Symbols the
//! compiler expects"): `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp`, `__chkstk`, `_fltused` and
//! `__CxxFrameHandler3`. `/NODEFAULTLIB` leaves them undefined and `compiler_builtins` provides none
//! for this target.
//!
//! The memory functions are string instructions in inline assembly: a Rust loop named `memcpy`
//! could be turned back into a call to `memcpy` by the optimizer. The same code is compiled on the
//! host under `fsf_*` names, where the tests below run it.

#![cfg(target_arch = "x86_64")]

use core::arch::asm;

/// `memcpy`: copies `n` bytes forward.
///
/// # Safety
/// `dst` and `src` must be valid for `n` bytes and must not overlap.
pub unsafe extern "C" fn fsf_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid; `rep movsb` copies exactly `n` bytes
    // forward with the direction flag clear, as the ABI guarantees on entry.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// `memmove`: copies `n` bytes, correct for overlapping ranges.
///
/// # Safety
/// `dst` and `src` must be valid for `n` bytes.
pub unsafe extern "C" fn fsf_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // No harmful overlap (dst below src, or disjoint): forward copy.
        // SAFETY: forwarded preconditions.
        return unsafe { fsf_memcpy(dst, src, n) };
    }
    // dst overlaps the tail of src: copy backwards from the last byte, then clear the direction
    // flag again as the ABI requires.
    // SAFETY: the caller guarantees both ranges are valid; the pointers start at the last byte of
    // each range and `rep movsb` with DF set walks down exactly `n` bytes.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
            inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
            options(nostack)
        );
    }
    dst
}

/// `memset`: fills `n` bytes with the low byte of `c`.
///
/// # Safety
/// `dst` must be valid for `n` bytes.
pub unsafe extern "C" fn fsf_memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid; `rep stosb` stores `al` `n` times forward.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("al") c as u8,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// `memcmp`: compares `n` bytes; negative, zero or positive as the first differing byte of `a` is
/// below, equal to or above that of `b` (as unsigned bytes).
///
/// # Safety
/// `a` and `b` must be valid for `n` bytes.
pub unsafe extern "C" fn fsf_memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let result: i32;
    // SAFETY: the caller guarantees both ranges are valid; `repe cmpsb` reads at most `n` bytes of
    // each, and on a mismatch the bytes just compared are at rsi-1 and rdi-1.
    unsafe {
        asm!(
            "xor eax, eax",
            "test rcx, rcx",
            "jz 2f",
            "repe cmpsb",
            "je 2f",
            "movzx eax, byte ptr [rsi - 1]",
            "movzx edx, byte ptr [rdi - 1]",
            "sub eax, edx",
            "2:",
            inout("rcx") n => _,
            inout("rsi") a => _,
            inout("rdi") b => _,
            out("eax") result,
            out("edx") _,
            options(nostack, readonly)
        );
    }
    result
}

// `__chkstk` (x64): RAX holds the size of the frame the caller is about to allocate. Touch every
// page from the caller's stack pointer down to the new one, so guard pages are hit in order.
// Preserves every register but R10, R11 and the flags; does not move RSP.
macro_rules! chkstk_asm {
    ($name:literal) => {
        core::arch::global_asm!(
            concat!(".globl ", $name),
            concat!($name, ":"),
            "push rcx",
            "push rax",
            // rcx = the caller's rsp (above our two pushes and the return address)
            "lea rcx, [rsp + 24]",
            // r10 = the lowest address of the new frame
            "mov r10, rcx",
            "sub r10, rax",
            "2:",
            "sub rcx, 0x1000",
            "cmp rcx, r10",
            "jb 3f",
            "test qword ptr [rcx], rcx",
            "jmp 2b",
            "3:",
            "test qword ptr [r10], r10",
            "pop rax",
            "pop rcx",
            "ret",
        );
    };
}

#[cfg(target_os = "windows")]
chkstk_asm!("__chkstk");
#[cfg(not(target_os = "windows"))]
chkstk_asm!("fsf_chkstk");

#[cfg(target_os = "windows")]
pub mod exports {
    //! The symbols themselves, on the driver target only (on the host the C library has them).

    /// `memcpy`.
    ///
    /// # Safety
    /// See [`super::fsf_memcpy`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: forwarded preconditions.
        unsafe { super::fsf_memcpy(dst, src, n) }
    }

    /// `memmove`.
    ///
    /// # Safety
    /// See [`super::fsf_memmove`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: forwarded preconditions.
        unsafe { super::fsf_memmove(dst, src, n) }
    }

    /// `memset`.
    ///
    /// # Safety
    /// See [`super::fsf_memset`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: forwarded preconditions.
        unsafe { super::fsf_memset(dst, c, n) }
    }

    /// `memcmp`.
    ///
    /// # Safety
    /// See [`super::fsf_memcmp`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: forwarded preconditions.
        unsafe { super::fsf_memcmp(a, b, n) }
    }

    /// `bcmp`: zero when equal (LLVM emits it for equality-only comparisons).
    ///
    /// # Safety
    /// See [`super::fsf_memcmp`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: forwarded preconditions.
        unsafe { super::fsf_memcmp(a, b, n) }
    }

    /// `_fltused`: the marker the compiler references when a function uses floating point.
    #[unsafe(no_mangle)]
    #[used]
    pub static _fltused: i32 = 0;

    /// `__CxxFrameHandler3`: referenced by the precompiled libcore, which is built with unwinding.
    /// Kernel code compiled here never unwinds (panic = "abort"), so the handler is only ever
    /// consulted for a foreign exception passing through a libcore frame: it declines, as a frame
    /// with no handler does (`ExceptionContinueSearch`).
    #[unsafe(no_mangle)]
    pub extern "C" fn __CxxFrameHandler3(
        _record: *mut core::ffi::c_void,
        _frame: *mut core::ffi::c_void,
        _context: *mut core::ffi::c_void,
        _dispatcher: *mut core::ffi::c_void,
    ) -> i32 {
        const EXCEPTION_CONTINUE_SEARCH: i32 = 1;
        EXCEPTION_CONTINUE_SEARCH
    }
}

#[cfg(all(test, not(target_os = "windows")))]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    unsafe extern "C" {
        fn fsf_chkstk();
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn memcpy_copies_every_length() {
        for n in [0, 1, 7, 8, 15, 16, 63, 64, 4095, 4097] {
            let src = pattern(n);
            let mut dst = std::vec![0xEEu8; n + 2];
            // SAFETY: both buffers hold at least n bytes and do not overlap.
            let r = unsafe { fsf_memcpy(dst.as_mut_ptr().wrapping_add(1), src.as_ptr(), n) };
            assert_eq!(r, dst.as_mut_ptr().wrapping_add(1));
            assert_eq!(&dst[1..=n], &src[..]);
            assert_eq!((dst[0], dst[n + 1]), (0xEE, 0xEE), "no byte outside the range is touched");
        }
    }

    #[test]
    fn memmove_handles_both_overlaps() {
        for shift in [1usize, 3, 8, 100] {
            let n = 300;
            let mut buf = pattern(n + shift);
            let expect: Vec<u8> = buf[..n].to_vec();
            // Forward overlap: dst above src.
            // SAFETY: both ranges are inside `buf`.
            unsafe { fsf_memmove(buf.as_mut_ptr().wrapping_add(shift), buf.as_ptr(), n) };
            assert_eq!(&buf[shift..shift + n], &expect[..]);
            // Backward overlap: dst below src.
            let mut buf = pattern(n + shift);
            let expect: Vec<u8> = buf[shift..].to_vec();
            // SAFETY: both ranges are inside `buf`.
            unsafe { fsf_memmove(buf.as_mut_ptr(), buf.as_ptr().wrapping_add(shift), n) };
            assert_eq!(&buf[..n], &expect[..]);
        }
        // The direction flag is clear again: a forward copy after a backward one still works.
        let src = pattern(32);
        let mut dst = [0u8; 32];
        // SAFETY: both hold 32 bytes.
        unsafe { fsf_memcpy(dst.as_mut_ptr(), src.as_ptr(), 32) };
        assert_eq!(&dst[..], &src[..]);
    }

    #[test]
    fn memset_fills_with_the_low_byte() {
        let mut buf = [0u8; 40];
        // SAFETY: 30 bytes starting at 5 are inside the buffer.
        unsafe { fsf_memset(buf.as_mut_ptr().wrapping_add(5), 0x1AB, 30) };
        assert!(buf[5..35].iter().all(|&b| b == 0xAB));
        assert!(buf[..5].iter().chain(&buf[35..]).all(|&b| b == 0));
    }

    #[test]
    fn memcmp_orders_as_unsigned_bytes() {
        let cmp = |a: &[u8], b: &[u8]| {
            // SAFETY: both slices have at least min(len) bytes.
            unsafe { fsf_memcmp(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
        };
        assert_eq!(cmp(b"abc", b"abc"), 0);
        assert_eq!(cmp(b"", b""), 0);
        assert!(cmp(b"abc", b"abd") < 0);
        assert!(cmp(b"abd", b"abc") > 0);
        assert!(cmp(&[0x80], &[0x7F]) > 0, "bytes compare unsigned");
        assert_eq!(cmp(&[1, 2, 0xFF], &[1, 2, 0x00]), 0xFF);
    }

    #[test]
    fn chkstk_probes_and_preserves_registers() {
        for size in [8u64, 0x1000, 0x3008, 0x10000] {
            let (rax_out, rcx_out): (u64, u64);
            // SAFETY: fsf_chkstk only reads the stack below rsp within `size` bytes, which the
            // test thread's stack (2 MiB) holds; it preserves rax and rcx, which the asm checks.
            unsafe {
                core::arch::asm!(
                    "sub rsp, 8",
                    "call {f}",
                    "add rsp, 8",
                    f = sym fsf_chkstk,
                    inout("rax") size => rax_out,
                    inout("rcx") 0x5555u64 => rcx_out,
                    out("r10") _,
                    out("r11") _,
                );
            }
            assert_eq!((rax_out, rcx_out), (size, 0x5555));
        }
    }
}
