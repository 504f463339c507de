//! Raw memory for kernel objects. Objects the simulator hands to drivers (driver and device
//! objects, VPBs, file objects, IRPs) are zeroed heap blocks that stay allocated until the machine
//! is dropped, so a driver that keeps a stale pointer reads a dead object instead of freed memory;
//! the verifier reports the use where it can see it.

use std::alloc::{Layout, alloc_zeroed, dealloc};

/// A zeroed heap block owned by the machine.
pub struct Block {
    ptr: *mut u8,
    layout: Layout,
}

impl Block {
    /// Allocates `size` zeroed bytes aligned to 16.
    pub fn zeroed(size: usize) -> Block {
        let layout =
            Layout::from_size_align(size.max(1), 16).unwrap_or_else(|_| Layout::new::<u128>());
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Block { ptr, layout }
    }

    /// The start of the block.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The block's size.
    pub fn size(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

/// Rounds `n` up to a multiple of 16.
pub const fn align16(n: usize) -> usize {
    (n + 15) & !15
}

/// A mutable reference to a simulator-owned kernel object.
///
/// # Safety
/// `p` must point to an object the simulator allocated for this machine (alive until the machine
/// drops), and no other reference to it may be used while the result is.
pub unsafe fn obj<'a, T>(p: *const T) -> &'a mut T {
    // SAFETY: the caller's guarantees.
    unsafe { &mut *p.cast_mut() }
}

/// UTF-16 of a string, for names the simulator keeps alive.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// A `UNICODE_STRING` describing `units` (which must outlive its use).
pub fn unicode(units: &[u16]) -> windows_sys::Win32::Foundation::UNICODE_STRING {
    let bytes = (units.len() * 2).min(usize::from(u16::MAX - 1)) as u16;
    windows_sys::Win32::Foundation::UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: units.as_ptr().cast_mut(),
    }
}

/// The string a `UNICODE_STRING` describes.
///
/// # Safety
/// `s` must be null or point to a valid `UNICODE_STRING` whose buffer holds `Length` bytes.
pub unsafe fn read_unicode(s: *const windows_sys::Win32::Foundation::UNICODE_STRING) -> String {
    // SAFETY: the caller guarantees validity or null.
    let Some(s) = (unsafe { s.as_ref() }) else { return String::new() };
    if s.Buffer.is_null() || s.Length == 0 {
        return String::new();
    }
    // SAFETY: the caller guarantees the buffer holds Length bytes.
    let units = unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length / 2)) };
    String::from_utf16_lossy(units)
}

/// Recycles equally sized blocks for objects the simulator creates per operation (file objects,
/// FCBs, CCBs): a freed block waits in a quarantine before reuse, so a driver that keeps a stale
/// pointer for a little while still reads a dead object rather than a new one.
pub struct BlockPool {
    size: usize,
    free: Vec<Block>,
    quarantine: std::collections::VecDeque<Block>,
}

/// Freed blocks kept before reuse.
const POOL_QUARANTINE: usize = 256;

impl BlockPool {
    /// A pool of zeroed blocks of `size` bytes.
    pub const fn new(size: usize) -> BlockPool {
        BlockPool { size, free: Vec::new(), quarantine: std::collections::VecDeque::new() }
    }

    /// A zeroed block.
    pub fn take(&mut self) -> Block {
        match self.free.pop() {
            Some(b) => {
                // SAFETY: the block holds `b.size()` bytes.
                unsafe { std::ptr::write_bytes(b.ptr(), 0, b.size()) };
                b
            }
            None => Block::zeroed(self.size),
        }
    }

    /// Returns a block (it is reused only after the quarantine).
    pub fn give(&mut self, block: Block) {
        self.quarantine.push_back(block);
        if self.quarantine.len() > POOL_QUARANTINE {
            if let Some(b) = self.quarantine.pop_front() {
                self.free.push(b);
            }
        }
    }
}
