//! Guarded copies to and from raw user-mode buffers, for the minifilter's `MessageNotify`
//! (docs/decisions/0008).
//!
//! A minifilter's message callback gets the buffers `FilterSendMessage` passed as they are: "a
//! raw, unlocked user-mode buffer ... valid only in the context of the user-mode process and
//! must only be accessed from within a try/except block" (Learn, `PFLT_MESSAGE_NOTIFY`). Another
//! thread of the process may free or protect the pages at any time, even after a probe (Learn,
//! `ProbeForRead`), so every access must be able to fault and recover. Rust has no structured
//! exception handling; on the Windows target the copy is therefore one routine written in
//! assembly with a real x64 SEH scope, as a C compiler emits for `__try` / `__except`:
//!
//! - its `.pdata` entry's unwind information has `UNW_FLAG_EHANDLER`, the handler
//!   `__C_specific_handler` (exported by ntoskrnl.exe, imported here like every other kernel
//!   routine), and the handler data a scope table (`SCOPE_TABLE_AMD64`) of one record: the
//!   `rep movsb` as `[BeginAddress, EndAddress)`, `HandlerAddress` 1
//!   (`EXCEPTION_EXECUTE_HANDLER`, a constant filter) and `JumpTarget` the code that returns
//!   `STATUS_ACCESS_VIOLATION`;
//! - a fault in the copy makes the kernel's dispatcher call `__C_specific_handler`, which finds
//!   the faulting address inside the scope, unwinds to the routine's own frame and resumes at
//!   the jump target.
//!
//! Before copying, the user range is checked as `ProbeForRead` and `ProbeForWrite` check it (WRK
//! ex/probe.c): a non-empty range whose end wraps or lies above `MM_USER_PROBE_ADDRESS` is refused
//! with `STATUS_ACCESS_VIOLATION` without being touched (a kernel address would not fault).
//!
//! On the host (the simulator) the same functions check the range and then copy plainly: the
//! simulator passes buffers that stay valid, and cannot unmap pages under a copy.
//!
//! `cargo xtask drivers` checks the routine's `.pdata`, unwind information and scope table in
//! every driver that has it (xtask `seh` module).

use fsfilter::{Error, Result, Status};

/// `MM_USER_PROBE_ADDRESS` on x64: the end of the user address space the probes accept
/// (`0x7FFF_FFFF_0000`, 64 KiB below the highest user address; WRK `ProbeForRead`).
pub const MM_USER_PROBE_ADDRESS: usize = 0x7FFF_FFFF_0000;

/// Whether `len` bytes at `address` lie in the user address space as the probes see it: an empty
/// range always (they check nothing then), otherwise `address + len` must not wrap and must be at
/// most [`MM_USER_PROBE_ADDRESS`].
pub const fn user_range_ok(address: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    match address.checked_add(len) {
        Some(end) => end <= MM_USER_PROBE_ADDRESS,
        None => false,
    }
}

/// Copies `dst.len()` bytes from the user-mode buffer at `src` into `dst`.
///
/// `Err(STATUS_ACCESS_VIOLATION)` when the range is not a user range, or (on Windows) when the
/// copy faults; `dst` may then hold part of the data.
///
/// # Safety
/// `src` is an address the current process's user mode gave the caller, at `PASSIVE_LEVEL` or
/// `APC_LEVEL` in that process's context. On Windows it may be invalid (a fault is caught); on
/// the host it must be valid for reads of `dst.len()` bytes. It must not overlap `dst`.
pub unsafe fn copy_from_user(dst: &mut [u8], src: *const u8) -> Result<()> {
    if !user_range_ok(src as usize, dst.len()) {
        return Err(Error::ACCESS_VIOLATION);
    }
    if dst.is_empty() {
        return Ok(());
    }
    // SAFETY: `dst` is a writable kernel buffer of that length; `src` is a user range (checked
    // above) whose faults the routine catches (the caller's contract covers the host).
    let status = unsafe { guarded_copy(dst.as_mut_ptr(), src, dst.len()) };
    Status(status).ok().map(|_| ())
}

/// Copies `src` to the user-mode buffer at `dst`.
///
/// `Err(STATUS_ACCESS_VIOLATION)` when the range is not a user range, or (on Windows) when the
/// copy faults; the user buffer may then hold part of the data.
///
/// # Safety
/// As [`copy_from_user`], with `dst` valid for writes of `src.len()` bytes on the host.
pub unsafe fn copy_to_user(dst: *mut u8, src: &[u8]) -> Result<()> {
    if !user_range_ok(dst as usize, src.len()) {
        return Err(Error::ACCESS_VIOLATION);
    }
    if src.is_empty() {
        return Ok(());
    }
    // SAFETY: `src` is a readable kernel buffer; `dst` a user range (checked above) whose faults
    // the routine catches (the caller's contract covers the host).
    let status = unsafe { guarded_copy(dst, src.as_ptr(), src.len()) };
    Status(status).ok().map(|_| ())
}

/// The name of the guarded routine in the image (and in the xtask check's messages).
pub const GUARDED_COPY_SYMBOL: &str = "fsfilter_guarded_copy";

// The guarded copy: `(rcx = dst, rdx = src, r8 = len) -> eax NTSTATUS`, the x64 calling
// convention. rsi and rdi are nonvolatile, so the prologue saves them (unwind codes describe the
// pushes: the unwinder restores them for frames above when it unwinds through this one). The
// scope covers the `rep movsb` alone: the fault is raised by that instruction, whose address is
// the control PC `__C_specific_handler` compares with `[BeginAddress, EndAddress)`. (Clang writes
// `EndAddress` as the end label + 1 because its scopes end at a call's return address, which must
// be inside; here the end label follows the faulting instruction, so it is exact.) On a fault the
// handler unwinds to this frame with the registers of the fault and resumes at `.Lfsf_except`
// with rsp as after the prologue, so the same epilogue restores rdi and rsi.
//
// The routine lives in a COMDAT section of its own (`one_only`): lld discards a COMDAT that
// nothing references, with its associated .xdata and .pdata, so a driver that never copies from
// user memory (no message channel, or the legacy model) carries none of it, nor the import of
// `__C_specific_handler` its unwind information refers to.
#[cfg(all(target_os = "windows", target_arch = "x86_64"))]
core::arch::global_asm!(
    ".def fsfilter_guarded_copy",
    ".scl 2",
    ".type 32",
    ".endef",
    ".section .text$fsfilter_guarded_copy,\"xr\",one_only,fsfilter_guarded_copy",
    ".globl fsfilter_guarded_copy",
    ".p2align 4",
    "fsfilter_guarded_copy:",
    ".seh_proc fsfilter_guarded_copy",
    "push rsi",
    ".seh_pushreg rsi",
    "push rdi",
    ".seh_pushreg rdi",
    ".seh_endprologue",
    "mov rdi, rcx",
    "mov rsi, rdx",
    "mov rcx, r8",
    ".Lfsf_try_begin:",
    "rep movsb",
    ".Lfsf_try_end:",
    "xor eax, eax",
    ".Lfsf_return:",
    "pop rdi",
    "pop rsi",
    "ret",
    ".Lfsf_except:",
    // STATUS_ACCESS_VIOLATION
    "mov eax, 0xC0000005",
    "jmp .Lfsf_return",
    ".seh_handler __C_specific_handler, @except",
    ".seh_handlerdata",
    // SCOPE_TABLE_AMD64: Count, then one record.
    ".long 1",
    ".long .Lfsf_try_begin@IMGREL",
    ".long .Lfsf_try_end@IMGREL",
    // HandlerAddress: EXCEPTION_EXECUTE_HANDLER, a constant filter.
    ".long 1",
    ".long .Lfsf_except@IMGREL",
    ".section .text$fsfilter_guarded_copy,\"xr\",one_only,fsfilter_guarded_copy",
    ".seh_endproc",
    ".text",
);

#[cfg(all(target_os = "windows", target_arch = "x86_64"))]
unsafe extern "C" {
    /// The routine above.
    fn fsfilter_guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> i32;
}

/// The copy under the SEH scope (Windows).
///
/// # Safety
/// `dst` and `src` are `len`-byte ranges, one a kernel buffer valid for the access and the other
/// a checked user range; they do not overlap.
#[cfg(all(target_os = "windows", target_arch = "x86_64"))]
unsafe fn guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> i32 {
    // SAFETY: the routine faults only inside its scope, where the handler catches it; the
    // caller guarantees the kernel side.
    unsafe { fsfilter_guarded_copy(dst, src, len) }
}

/// The plain copy (host).
///
/// # Safety
/// `dst` and `src` are valid, non-overlapping `len`-byte ranges.
#[cfg(not(all(target_os = "windows", target_arch = "x86_64")))]
unsafe fn guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::copy_nonoverlapping(src, dst, len) };
    Status::SUCCESS.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ranges_are_checked_as_the_probes_check_them() {
        // WRK ex/probe.c: an empty range is never checked; otherwise address + length must not
        // wrap and must be at most MM_USER_PROBE_ADDRESS.
        assert!(user_range_ok(0, 0));
        assert!(user_range_ok(usize::MAX, 0));
        assert!(user_range_ok(0x1_0000, 16));
        assert!(user_range_ok(MM_USER_PROBE_ADDRESS - 16, 16));
        assert!(!user_range_ok(MM_USER_PROBE_ADDRESS - 16, 17));
        assert!(!user_range_ok(MM_USER_PROBE_ADDRESS, 1));
        assert!(!user_range_ok(0xFFFF_8000_0000_0000, 8), "a kernel address");
        assert!(!user_range_ok(usize::MAX - 3, 8), "wraps");
    }

    #[test]
    fn copies_go_both_ways_and_refuse_kernel_addresses_untouched() {
        let user = *b"hello, kernel";
        let mut kernel = [0u8; 13];
        // SAFETY: valid host buffers.
        assert_eq!(unsafe { copy_from_user(&mut kernel, user.as_ptr()) }, Ok(()));
        assert_eq!(&kernel, b"hello, kernel");
        let mut out = [0u8; 5];
        // SAFETY: as above.
        assert_eq!(unsafe { copy_to_user(out.as_mut_ptr(), b"reply") }, Ok(()));
        assert_eq!(&out, b"reply");
        // Never dereferenced: refused by the range check first.
        let kernel_address = 0xFFFF_F800_0000_0000usize as *const u8;
        // SAFETY: refused before any access.
        let r = unsafe { copy_from_user(&mut kernel, kernel_address) };
        assert_eq!(r, Err(Error::ACCESS_VIOLATION));
        // SAFETY: as above.
        let r = unsafe { copy_to_user(kernel_address.cast_mut(), b"x") };
        assert_eq!(r, Err(Error::ACCESS_VIOLATION));
        // An empty copy touches nothing, wherever it points.
        // SAFETY: nothing is accessed.
        assert_eq!(unsafe { copy_from_user(&mut [], kernel_address) }, Ok(()));
    }
}
