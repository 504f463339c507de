//! Memory manager (Mm) and MDL exports: MDLs that describe resident buffers already mapped in
//! system space (the simulator has one address space).

use std::ffi::c_void;

use windows_sys::Wdk::Foundation::{IRP, MDL};
use windows_sys::Wdk::System::SystemServices::MEMORY_CACHING_TYPE;

use crate::events::Rule;
use crate::kernel::{self, Kernel};
use crate::mem::{Block, obj};
use crate::nt::{PAGE_SIZE, mdl};

impl Kernel {
    /// An MDL for `length` bytes at `va`, locked and mapped (`MDL_MAPPED_TO_SYSTEM_VA |
    /// MDL_SOURCE_IS_NONPAGED_POOL`, so `MmGetSystemAddressForMdlSafe` returns `va`).
    pub fn allocate_mdl(&mut self, va: *mut c_void, length: usize) -> *mut MDL {
        let start = va as usize & !(PAGE_SIZE - 1);
        let offset = va as usize - start;
        let pages = (offset + length).div_ceil(PAGE_SIZE);
        let size = size_of::<MDL>() + pages * size_of::<usize>();
        let block = Block::zeroed(size);
        let p = block.ptr().cast::<MDL>();
        // SAFETY: a fresh block sized for the MDL and its page array.
        let m = unsafe { obj(p) };
        m.Size = size as i16;
        m.MdlFlags = mdl::MAPPED_TO_SYSTEM_VA | mdl::SOURCE_IS_NONPAGED_POOL | mdl::PAGES_LOCKED;
        m.StartVa = start as *mut c_void;
        m.ByteOffset = offset as u32;
        m.ByteCount = length as u32;
        m.MappedSystemVa = va;
        self.mdls.insert(p as usize, block);
        p
    }

    /// An MDL for `length` bytes at `va`, locked but not mapped to system space
    /// (`MDL_PAGES_LOCKED` only), as the MDL of a paging I/O that Mm builds, or of a user buffer
    /// a file system probed and locked, is: a driver that wants the bytes maps it with
    /// `MmGetSystemAddressForMdlSafe`, which the simulator counts per image
    /// (`Kernel::mdl_mappings_of_service`). `MappedSystemVa` is `va` already, since the
    /// simulator has one address space, but nothing may rely on it before mapping.
    pub fn allocate_locked_mdl(&mut self, va: *mut c_void, length: usize) -> *mut MDL {
        let p = self.allocate_mdl(va, length);
        // SAFETY: the MDL just allocated.
        let m = unsafe { obj(p) };
        m.MdlFlags = mdl::PAGES_LOCKED;
        p
    }

    /// Frees an MDL the kernel allocated (a no-op for anything else).
    pub fn free_mdl(&mut self, m: *mut MDL) {
        self.mdls.remove(&(m as usize));
        self.mdl_images.remove(&(m as usize));
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoAllocateMdl =>
    /// `IoAllocateMdl`: the buffer is resident and mapped in the simulator, so the MDL is usable
    /// at once; with an IRP it becomes its `MdlAddress` (or is chained when secondary).
    fn IoAllocateMdl(virtualaddress: *const c_void, length: u32, secondarybuffer: bool, _chargequota: bool, irp: *mut IRP) -> *mut MDL {
        kernel::with(|k| {
            if k.fault(crate::faults::FaultKind::Pool) {
                return std::ptr::null_mut();
            }
            let m = k.allocate_mdl(virtualaddress.cast_mut(), length as usize);
            if let Some(image) = k.current_image() {
                k.mdl_images.insert(m as usize, image);
            }
            // SAFETY: null or the caller's IRP.
            if let Some(i) = unsafe { irp.as_mut() } {
                if secondarybuffer && !i.MdlAddress.is_null() {
                    let mut last = i.MdlAddress;
                    // SAFETY: MDLs of the IRP's chain.
                    while !unsafe { (*last).Next }.is_null() {
                        // SAFETY: as above.
                        last = unsafe { (*last).Next };
                    }
                    // SAFETY: the chain's last MDL.
                    unsafe { (*last).Next = m };
                } else {
                    i.MdlAddress = m;
                }
            }
            m
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoFreeMdl =>
    /// `IoFreeMdl`.
    fn IoFreeMdl(mdl: *mut MDL) {
        kernel::with(|k| {
            if !k.mdls.contains_key(&(mdl as usize)) {
                // Freed already, or never an MDL: a double free of its pool on Windows.
                k.report_current(Rule::BadPoolFree, format!("IoFreeMdl on {mdl:p}, which is not a live MDL"));
                return;
            }
            k.free_mdl(mdl);
        });
    }
}

export! { windows_sys::Wdk::System::SystemServices::MmMapLockedPagesSpecifyCache =>
    /// `MmMapLockedPagesSpecifyCache`: the buffer's own address (one address space).
    fn MmMapLockedPagesSpecifyCache(
        memorydescriptorlist: *mut MDL,
        _accessmode: i8,
        _cachetype: MEMORY_CACHING_TYPE,
        _requestedaddress: *const c_void,
        _bugcheckonfailure: u32,
        _priority: u32,
    ) -> *mut c_void {
        // SAFETY: the caller's MDL.
        let Some(m) = (unsafe { memorydescriptorlist.as_mut() }) else { return std::ptr::null_mut() };
        if m.MdlFlags & mdl::MAPPED_TO_SYSTEM_VA == 0 {
            m.MappedSystemVa = (m.StartVa as usize + m.ByteOffset as usize) as *mut c_void;
            m.MdlFlags |= mdl::MAPPED_TO_SYSTEM_VA;
            kernel::with(|k| {
                let image = k.current_image();
                *k.pool.system_mappings.entry(image).or_default() += 1;
            });
        }
        m.MappedSystemVa
    }
}
