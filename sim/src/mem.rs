//! Raw memory for kernel objects. Objects the simulator hands to drivers (driver and device
//! objects, VPBs, file objects, IRPs) are zeroed heap blocks that stay allocated until the machine
//! is dropped, so a driver that keeps a stale pointer reads a dead object instead of freed memory;
//! the verifier reports the use where it can see it.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};

/// A zeroed heap block owned by the machine.
pub struct Block {
    ptr: *mut u8,
    layout: Layout,
}

impl Block {
    /// Allocates `size` zeroed bytes aligned to 16.
    pub fn zeroed(size: usize) -> Block {
        Block::zeroed_aligned(size, 16)
    }

    /// Allocates `size` zeroed bytes aligned to `align` (a power of two; 16 if it is not).
    pub fn zeroed_aligned(size: usize, align: usize) -> Block {
        let layout = Layout::from_size_align(size.max(1), align)
            .or_else(|_| Layout::from_size_align(size.max(1), 16))
            .unwrap_or_else(|_| Layout::new::<u128>());
        if let Some(ptr) = reuse(layout) {
            // SAFETY: a block of this layout, ours alone since it left the cache.
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
            return Block { ptr, layout };
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Block { ptr, layout }
    }

    /// Allocates `size` bytes aligned to 16 holding `data` (at most `size` bytes of it) and zeros
    /// after it: what [`Block::zeroed`] and a copy would leave, without clearing the bytes the
    /// copy overwrites (a write request's buffer is filled whole).
    pub fn with_contents(size: usize, data: &[u8]) -> Block {
        let layout =
            Layout::from_size_align(size.max(1), 16).unwrap_or_else(|_| Layout::new::<u128>());
        let ptr = match reuse(layout) {
            Some(ptr) => ptr,
            None => {
                // SAFETY: the layout has a non-zero size.
                let ptr = unsafe { alloc(layout) };
                if ptr.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                ptr
            }
        };
        let n = data.len().min(layout.size());
        // SAFETY: the block holds `layout.size()` >= n bytes, ours alone; `data` holds n bytes
        // and is not inside the block, which nobody else has seen yet.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, n) };
        let rest = ptr.wrapping_add(n);
        // SAFETY: the block's `layout.size() - n` bytes after the copied ones.
        unsafe { std::ptr::write_bytes(rest, 0, layout.size() - n) };
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

/// Blocks at least this large are kept for reuse when dropped.
const REUSE_FROM: usize = 512;
/// How many freed blocks a thread keeps.
const REUSE_MAX: usize = 32;

std::thread_local! {
    /// Freed large blocks (user buffers, IRPs of deep stacks), reused by the next allocation of
    /// the same layout: a request's buffers cost a `memset`, not a trip through the system
    /// allocator, whose large requests consolidate every small free chunk first (issue 9: this was
    /// most of the simulator's time per request).
    static FREED: std::cell::RefCell<Freed> = const { std::cell::RefCell::new(Freed(Vec::new())) };
}

/// A freed block of `layout`, if the thread kept one.
fn reuse(layout: Layout) -> Option<*mut u8> {
    if layout.size() < REUSE_FROM {
        return None;
    }
    FREED
        .try_with(|f| {
            let mut f = f.try_borrow_mut().ok()?;
            let i = f.0.iter().rposition(|(l, _)| *l == layout)?;
            Some(f.0.swap_remove(i).1)
        })
        .ok()
        .flatten()
}

/// Keeps a block for reuse; false when it must be freed now.
fn keep(layout: Layout, ptr: *mut u8) -> bool {
    if layout.size() < REUSE_FROM {
        return false;
    }
    FREED
        .try_with(|f| {
            let Ok(mut f) = f.try_borrow_mut() else { return false };
            if f.0.len() >= REUSE_MAX {
                return false;
            }
            f.0.push((layout, ptr));
            true
        })
        .unwrap_or(false)
}

/// The blocks a thread kept, freed when the thread exits.
struct Freed(Vec<(Layout, *mut u8)>);

impl Drop for Freed {
    fn drop(&mut self) {
        for (layout, ptr) in self.0.drain(..) {
            // SAFETY: allocated in `Block::zeroed` with this layout; kept instead of freed once.
            unsafe { dealloc(ptr, layout) };
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if keep(self.layout, self.ptr) {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_reused_zeroed_small_ones_are_not_kept() {
        let a = Block::zeroed(4096);
        // SAFETY: the block holds 4096 bytes.
        unsafe { std::ptr::write_bytes(a.ptr(), 0xAB, 4096) };
        let address = a.ptr();
        drop(a);
        let b = Block::zeroed(4096);
        assert_eq!(b.ptr(), address, "the freed block of the same layout is reused");
        // SAFETY: the block holds 4096 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(b.ptr(), 4096) };
        assert!(bytes.iter().all(|&x| x == 0), "a reused block is zeroed");
        assert!(!keep(Layout::from_size_align(64, 16).unwrap_or(Layout::new::<u128>()), b.ptr()));
    }

    #[test]
    fn a_block_with_contents_holds_them_then_zeros_also_when_reused() {
        let a = Block::zeroed(4096);
        // SAFETY: the block holds 4096 bytes.
        unsafe { std::ptr::write_bytes(a.ptr(), 0xAB, 4096) };
        drop(a);
        let b = Block::with_contents(4096, &[1, 2, 3]);
        // SAFETY: the block holds 4096 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(b.ptr(), 4096) };
        assert_eq!(&bytes[..3], &[1, 2, 3]);
        assert!(bytes[3..].iter().all(|&x| x == 0), "the rest is zeroed");
        let full: Vec<u8> = (0..600).map(|i| i as u8).collect();
        let c = Block::with_contents(512, &full);
        // SAFETY: the block holds 512 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(c.ptr(), 512) };
        assert_eq!(bytes, &full[..512], "data longer than the block is cut");
    }
}
