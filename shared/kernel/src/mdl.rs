//! MDL helpers: `MmGetSystemAddressForMdlSafe`, which the WDK defines as a macro.

use core::ffi::c_void;

use windows_sys::Wdk::Foundation::MDL;
use windows_sys::Wdk::System::SystemServices::MmMapLockedPagesSpecifyCache;

/// `MDL_MAPPED_TO_SYSTEM_VA`.
pub const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// `MDL_SOURCE_IS_NONPAGED_POOL`.
pub const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;
/// `NormalPagePriority`.
const NORMAL_PAGE_PRIORITY: u32 = 16;
/// `MdlMappingNoExecute`.
const MDL_MAPPING_NO_EXECUTE: u32 = 0x4000_0000;
/// `MmCached`.
const MM_CACHED: i32 = 1;

/// [`MmGetSystemAddressForMdlSafe`](https://learn.microsoft.com/windows-hardware/drivers/kernel/mm-bad-pointer):
/// the system address of the buffer an MDL describes, mapping it if needed; null on failure.
///
/// # Safety
/// `mdl` must point to a valid, locked MDL.
///
/// # Context
/// IRQL ≤ `DISPATCH_LEVEL`.
pub unsafe fn system_address(mdl: *mut MDL) -> *mut c_void {
    // SAFETY: the caller guarantees `mdl` is valid.
    let m = unsafe { &*mdl };
    if m.MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
        return m.MappedSystemVa;
    }
    // SAFETY: a valid locked MDL; KernelMode (0), cached, any address, no bugcheck on failure.
    unsafe {
        MmMapLockedPagesSpecifyCache(
            mdl,
            0,
            MM_CACHED,
            core::ptr::null(),
            0,
            NORMAL_PAGE_PRIORITY | MDL_MAPPING_NO_EXECUTE,
        )
    }
}
