//! Executive (Ex) exports: pool, system work items, fast mutexes.

use std::ffi::c_void;

use windows_sys::Wdk::Foundation::{FAST_MUTEX, POOL_TYPE, WORK_QUEUE_ITEM};
use windows_sys::Wdk::System::SystemServices::WORK_QUEUE_TYPE;

use crate::events::Rule;
use crate::fastmutex::Acquire;
use crate::kernel::{self, DISPATCH_LEVEL};

use crate::pool::{
    POOL_FLAG_CACHE_ALIGNED, POOL_FLAG_NON_PAGED, POOL_FLAG_NON_PAGED_EXECUTE, POOL_FLAG_PAGED,
    POOL_FLAG_UNINITIALIZED,
};

/// The pool types: exactly one of them.
const POOL_TYPE_FLAGS: [u64; 3] =
    [POOL_FLAG_NON_PAGED, POOL_FLAG_NON_PAGED_EXECUTE, POOL_FLAG_PAGED];
/// The required (low 32-bit) flags `POOL_FLAGS` defines but the reserved ones: the pool types,
/// and `USE_QUOTA` (0x1), `UNINITIALIZED`, `SESSION` (0x4), `CACHE_ALIGNED` (0x8),
/// `RAISE_ON_FAILURE` (0x20).
const POOL_FLAGS_KNOWN: u64 = 0x1
    | POOL_FLAG_UNINITIALIZED
    | 0x4
    | POOL_FLAG_CACHE_ALIGNED
    | 0x20
    | POOL_FLAG_NON_PAGED
    | POOL_FLAG_NON_PAGED_EXECUTE
    | POOL_FLAG_PAGED;

/// Whether `ExAllocatePool2` accepts `flags`: `POOL_FLAGS` says the low 32 bits are required
/// (the allocation fails if one cannot be satisfied: a reserved or unknown one), the high 32
/// bits optional; exactly one pool type.
fn pool_flags_valid(flags: u64) -> bool {
    let required = flags & 0xFFFF_FFFF;
    let types = POOL_TYPE_FLAGS.iter().filter(|&&t| flags & t != 0).count();
    required & !POOL_FLAGS_KNOWN == 0 && types == 1
}

/// A zero-byte request: `ExAllocatePool2`'s reference page wants "a non-zero number of bytes",
/// and Driver Verifier stops it (bug check 0xC4, parameter 0x00). Reported; the call goes on.
fn zero_bytes(k: &mut kernel::Kernel, size: usize, what: &str) {
    if size == 0 {
        k.report_current(
            Rule::Bugcheck,
            format!(
                "{what} of zero bytes (DRIVER_VERIFIER_DETECTED_VIOLATION 0xC4, 0x0: a \
                 zero-byte pool allocation)"
            ),
        );
    }
}

/// `PagedPool` (and odd values, which are paged types).
const PAGED_POOL: i32 = 1;
/// The bit of the `...CacheAligned` pool types (`NonPagedPoolCacheAligned` is 4).
const CACHE_ALIGNED_POOL: i32 = 4;

export! { windows_sys::Wdk::System::SystemServices::ExAllocatePool2 =>
    /// `ExAllocatePool2`. Paged pool above `APC_LEVEL` is an IRQL violation. The reference
    /// page: NULL when "Tag is set to 0 or invalid POOL_FLAGS are specified".
    fn ExAllocatePool2(flags: u64, numberofbytes: usize, tag: u32) -> *mut c_void {
        kernel::with(|k| {
            zero_bytes(k, numberofbytes, "ExAllocatePool2");
            if tag == 0 || !pool_flags_valid(flags) {
                return std::ptr::null_mut();
            }
            if flags & POOL_FLAG_PAGED != 0 {
                k.check_irql(crate::kernel::APC_LEVEL, "ExAllocatePool2 (paged)");
            } else {
                k.check_irql(DISPATCH_LEVEL, "ExAllocatePool2");
            }
            k.pool_allocate(flags, numberofbytes, tag)
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::ExAllocatePoolWithTag =>
    /// `ExAllocatePoolWithTag` (deprecated; zeroes nothing on Windows, and the simulator fills
    /// the block with 0xCD to show it).
    fn ExAllocatePoolWithTag(pooltype: POOL_TYPE, numberofbytes: usize, tag: u32) -> *mut c_void {
        kernel::with(|k| {
            zero_bytes(k, numberofbytes, "ExAllocatePoolWithTag");
            let paged = pooltype & PAGED_POOL != 0;
            if paged {
                k.check_irql(crate::kernel::APC_LEVEL, "ExAllocatePoolWithTag (paged)");
            } else {
                k.check_irql(DISPATCH_LEVEL, "ExAllocatePoolWithTag");
            }
            let pool = if paged { POOL_FLAG_PAGED } else { POOL_FLAG_NON_PAGED };
            // NonPagedPoolCacheAligned (4), PagedPoolCacheAligned (5) and their variants.
            let aligned = if pooltype & CACHE_ALIGNED_POOL != 0 { POOL_FLAG_CACHE_ALIGNED } else { 0 };
            k.pool_allocate(POOL_FLAG_UNINITIALIZED | pool | aligned, numberofbytes, tag)
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::ExFreePoolWithTag =>
    /// `ExFreePoolWithTag`.
    fn ExFreePoolWithTag(p: *mut c_void, tag: u32) {
        kernel::with(|k| k.pool_free(p, Some(tag)));
    }
}

export! { windows_sys::Wdk::System::SystemServices::ExFreePool =>
    /// `ExFreePool`.
    fn ExFreePool(p: *mut c_void) {
        kernel::with(|k| k.pool_free(p, None));
    }
}

export! { windows_sys::Wdk::System::SystemServices::ExQueueWorkItem =>
    /// `ExQueueWorkItem`: runs `WorkerRoutine(Parameter)` on a system worker thread, as the
    /// queuing image's code; an `UNLOADED_DRIVER_CODE_RAN` finding instead once that image is
    /// gone.
    fn ExQueueWorkItem(workitem: *mut WORK_QUEUE_ITEM, _queuetype: WORK_QUEUE_TYPE) {
        // The reference page: IRQL <= DISPATCH_LEVEL (reported; the item is still queued).
        super::at_most_dispatch("ExQueueWorkItem");
        // SAFETY: the caller's initialized work item.
        let Some(item) = (unsafe { workitem.as_ref() }) else { return };
        let Some(routine) = item.WorkerRoutine else { return };
        // SAFETY: the metadata lost the routine's parameter; it is `VOID (*)(PVOID)`.
        let routine: unsafe extern "system" fn(*mut c_void) = unsafe { std::mem::transmute::<unsafe extern "system" fn(), unsafe extern "system" fn(*mut c_void)>(routine) };
        let parameter = item.Parameter as usize;
        let image = kernel::with(|k| k.current_image());
        crate::sched::queue_work(
            "ExQueueWorkItem",
            image,
            Box::new(move || {
                // A driver that unloaded before its item ran: the routine is code of the
                // unloaded image (Windows crashes there; `IoQueueWorkItem` holds a device
                // reference against this). Reported; the routine does not run.
                let loaded = kernel::with(|k| {
                    k.code_may_run(image, "an ExQueueWorkItem routine ran after its driver unloaded")
                });
                if loaded {
                    // SAFETY: the routine the driver queued with its parameter.
                    unsafe { routine(parameter as *mut c_void) };
                }
            }),
        );
    }
}

export! { windows_sys::Wdk::System::SystemServices::ExAcquireFastMutex =>
    /// `ExAcquireFastMutex` (an x64 ntoskrnl export): at IRQL <= `APC_LEVEL`, raises to
    /// `APC_LEVEL` and saves the caller's IRQL in `OldIrql`; waits while another thread owns the
    /// mutex. Not recursive. docs/simulator.md, "Fast mutexes"; `fastmutex.rs`.
    fn ExAcquireFastMutex(fastmutex: *mut FAST_MUTEX) {
        // SAFETY: NULL (reported) or the caller's initialized fast mutex.
        let _ = unsafe { crate::fastmutex::acquire(fastmutex, Acquire::Wait) };
    }
}

export! { windows_sys::Wdk::System::SystemServices::ExTryToAcquireFastMutex =>
    /// `ExTryToAcquireFastMutex`: as `ExAcquireFastMutex` when the mutex is free (TRUE); FALSE,
    /// at the caller's IRQL, when any thread owns it.
    fn ExTryToAcquireFastMutex(fastmutex: *mut FAST_MUTEX) -> bool {
        // SAFETY: NULL (reported) or the caller's initialized fast mutex.
        unsafe { crate::fastmutex::acquire(fastmutex, Acquire::Try) }
    }
}

export! { windows_sys::Wdk::System::SystemServices::ExReleaseFastMutex =>
    /// `ExReleaseFastMutex`: by the owner, at `APC_LEVEL`; restores the IRQL saved at the
    /// acquisition.
    fn ExReleaseFastMutex(fastmutex: *mut FAST_MUTEX) {
        // SAFETY: NULL (reported) or the caller's initialized fast mutex.
        unsafe { crate::fastmutex::release(fastmutex) };
    }
}
