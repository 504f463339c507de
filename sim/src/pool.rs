//! Pool: `ExAllocatePool2` and friends, with every block attributed to the image that allocated it,
//! checked tags, and leak accounting at unload (Driver Verifier's pool tracking).

use std::ffi::c_void;

use crate::events::Rule;
use crate::faults::FaultKind;
use crate::ids::ImageId;
use crate::kernel::{FastMap, Kernel};
use crate::mem::Block;

/// `POOL_FLAG_UNINITIALIZED`.
pub(crate) const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
/// `POOL_FLAG_NON_PAGED`.
pub(crate) const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `POOL_FLAG_NON_PAGED_EXECUTE`.
pub(crate) const POOL_FLAG_NON_PAGED_EXECUTE: u64 = 0x80;
/// `POOL_FLAG_PAGED`.
pub(crate) const POOL_FLAG_PAGED: u64 = 0x100;

/// `POOL_FLAG_CACHE_ALIGNED`.
pub(crate) const POOL_FLAG_CACHE_ALIGNED: u64 = 0x8;
/// `PAGE_SIZE`.
const PAGE_SIZE: usize = 4096;
/// A cache line, to which `POOL_FLAG_CACHE_ALIGNED` aligns.
const CACHE_LINE: usize = 64;

/// The alignment of a pool block (`ExAllocatePool2`'s reference page): page-aligned from
/// `PAGE_SIZE` bytes up; below, within one page (the power of two at or above the size, which
/// divides the page) and 16-byte aligned at least; a cache line at least for
/// `POOL_FLAG_CACHE_ALIGNED`. Until December 6 every block was 16-byte aligned only.
fn pool_alignment(flags: u64, size: usize) -> usize {
    let align = size.max(16).checked_next_power_of_two().unwrap_or(PAGE_SIZE).min(PAGE_SIZE);
    if flags & POOL_FLAG_CACHE_ALIGNED != 0 { align.max(CACHE_LINE) } else { align }
}

/// One pool block.
pub struct PoolBlock {
    block: Block,
    /// Requested size.
    pub size: usize,
    /// Its tag.
    pub tag: u32,
    /// The image that allocated it (None: the kernel).
    pub image: Option<ImageId>,
    /// From paged pool (`POOL_FLAG_PAGED`): freed at `APC_LEVEL` or below.
    pub paged: bool,
}

/// Pool state and counters.
#[derive(Default)]
pub struct Pool {
    /// Live blocks by address.
    pub blocks: FastMap<usize, PoolBlock>,
    /// Allocations so far, per image index (None maps to the last slot).
    pub allocations: FastMap<Option<ImageId>, u64>,
    /// Frees so far, per image.
    pub frees: FastMap<Option<ImageId>, u64>,
    /// MDLs mapped to system space so far (`MmMapLockedPagesSpecifyCache` on an MDL that was not
    /// mapped yet), per image: on Windows each takes system PTEs.
    pub system_mappings: FastMap<Option<ImageId>, u64>,
}

/// A tag as four characters.
pub fn tag_text(tag: u32) -> String {
    tag.to_le_bytes().iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect()
}

impl Kernel {
    /// `ExAllocatePool2`: null on exhaustion (or an injected failure).
    pub fn pool_allocate(&mut self, flags: u64, size: usize, tag: u32) -> *mut c_void {
        let image = self.current_image();
        if self.fault(FaultKind::Pool) {
            return std::ptr::null_mut();
        }
        self.pool_allocate_as(image, flags, size, tag)
    }

    /// A pool block allocated for `image` (None: the kernel's own, as the I/O manager's file
    /// object names), without fault injection (the caller decides).
    pub(crate) fn pool_allocate_as(
        &mut self,
        image: Option<ImageId>,
        flags: u64,
        size: usize,
        tag: u32,
    ) -> *mut c_void {
        let block = Block::zeroed_aligned(size, pool_alignment(flags, size));
        if flags & POOL_FLAG_UNINITIALIZED != 0 {
            // Uninitialized pool is not zero on Windows: fill it so code that relies on zeroes
            // shows up.
            // SAFETY: the block holds `size` bytes.
            unsafe { std::ptr::write_bytes(block.ptr(), 0xCD, size) };
        }
        let ptr = block.ptr();
        self.pool.blocks.insert(
            ptr as usize,
            PoolBlock { block, size, tag, image, paged: flags & POOL_FLAG_PAGED != 0 },
        );
        *self.pool.allocations.entry(image).or_default() += 1;
        ptr.cast()
    }

    /// `ExFreePoolWithTag` (`tag` None for `ExFreePool`). The reference pages: IRQL <=
    /// `DISPATCH_LEVEL`, and <= `APC_LEVEL` for paged pool (an `IRQL_TOO_HIGH` finding; the
    /// block is still freed).
    pub fn pool_free(&mut self, ptr: *mut c_void, tag: Option<u32>) {
        let image = self.current_image();
        let block = self.pool.blocks.remove(&(ptr as usize));
        if block.as_ref().is_some_and(|b| b.paged) {
            self.check_irql(crate::kernel::APC_LEVEL, "ExFreePoolWithTag (paged pool)");
        } else {
            self.check_irql(crate::kernel::DISPATCH_LEVEL, "ExFreePoolWithTag");
        }
        let Some(block) = block else {
            // The name buffer the I/O manager gave a file object is pool on Windows ('IoNm'),
            // which a driver that replaces the name by hand frees (docs/simulator.md, "Reparse").
            if self.free_initial_file_name(ptr as usize, tag) {
                *self.pool.frees.entry(image).or_default() += 1;
                return;
            }
            self.report_current(
                Rule::BadPoolFree,
                format!("freeing {ptr:p}, which is not a live pool block"),
            );
            return;
        };
        if let Some(t) = tag {
            if t != block.tag {
                let (a, b) = (tag_text(block.tag), tag_text(t));
                self.report_current(
                    Rule::PoolTagMismatch,
                    format!("a block allocated with tag '{a}' freed with tag '{b}'"),
                );
            }
        }
        self.disarm_timers_in(ptr as usize, block.size);
        if !self.perstream.linked.is_empty() {
            self.per_stream_pool_freed(ptr as usize, block.size);
        }
        if !self.perfo.linked.is_empty() {
            self.per_fo_pool_freed(ptr as usize, block.size);
        }
        *self.pool.frees.entry(image).or_default() += 1;
        drop(block.block);
    }

    /// The kernel's own `ExFreePool` of `ptr` (the I/O manager freeing a file object's name, a
    /// create's reparse buffer): counted as the kernel's, not the running image's. False when
    /// `ptr` is no live pool block (the caller reports it).
    pub(crate) fn pool_free_kernel(&mut self, ptr: *mut c_void) -> bool {
        let Some(block) = self.pool.blocks.remove(&(ptr as usize)) else { return false };
        self.disarm_timers_in(ptr as usize, block.size);
        *self.pool.frees.entry(None).or_default() += 1;
        drop(block.block);
        true
    }

    /// A block of `size` bytes at `start` is being freed: an armed timer in it, or the DPC an
    /// armed timer queues, is Windows' bug check `TIMER_OR_DPC_INVALID` (0xC7, "a driver failing
    /// to cancel a timer or DPC before freeing the memory where it resides"). Reported; the timer
    /// is disarmed so that its expiry does not write into (or run a routine from) the freed
    /// memory, which it did until December 6.
    fn disarm_timers_in(&mut self, start: usize, size: usize) {
        let inside = |a: usize| a >= start && a - start < size.max(1);
        let caught: Vec<usize> = self
            .sched
            .armed_timers
            .iter()
            .filter(|(t, (_, dpc))| inside(**t) || inside(*dpc))
            .map(|(t, _)| *t)
            .collect();
        if caught.is_empty() {
            return;
        }
        for t in &caught {
            self.sched.armed_timers.remove(t);
        }
        self.report_current(
            Rule::Bugcheck,
            format!(
                "TIMER_OR_DPC_INVALID (0xC7): pool freed while it holds {} armed timer(s) or \
                 their DPC (the timer is disarmed)",
                caught.len()
            ),
        );
    }

    /// Live blocks of an image: (count, bytes, tags).
    pub fn pool_outstanding(&self, image: ImageId) -> (usize, usize, Vec<u32>) {
        let mut tags: Vec<u32> = Vec::new();
        let mut bytes = 0;
        let mut count = 0;
        for b in self.pool.blocks.values().filter(|b| b.image == Some(image)) {
            count += 1;
            bytes += b.size;
            if !tags.contains(&b.tag) {
                tags.push(b.tag);
            }
        }
        tags.sort_unstable();
        (count, bytes, tags)
    }

    /// Pool calls (allocations + frees) made so far by the loaded image of service `service`.
    pub fn pool_calls_of_service(&self, service: &str) -> u64 {
        self.images
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name.eq_ignore_ascii_case(service))
            .map(|(n, _)| self.pool_calls(ImageId(n as u32)))
            .sum()
    }

    /// MDLs the loaded image of service `service` mapped to system space so far.
    pub fn mdl_mappings_of_service(&self, service: &str) -> u64 {
        self.images
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name.eq_ignore_ascii_case(service))
            .map(|(n, _)| {
                self.pool.system_mappings.get(&Some(ImageId(n as u32))).copied().unwrap_or(0)
            })
            .sum()
    }

    /// Pool calls (allocations + frees) made by an image so far.
    pub fn pool_calls(&self, image: ImageId) -> u64 {
        self.pool.allocations.get(&Some(image)).copied().unwrap_or(0)
            + self.pool.frees.get(&Some(image)).copied().unwrap_or(0)
    }
}
