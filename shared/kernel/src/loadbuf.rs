//! The backends' side of load buffers (`fsfilter::LoadBuffer`, docs/decisions/0009): the table of
//! pool blocks a filter allocated in `Filter::load`, and the parameters that allocate them.
//!
//! `DriverEntry` makes a [`LoadBlocks`] before it calls `Filter::load`, hands the filter a
//! [`LoadParameters`] over it, and moves the table into its driver state after the filter value:
//! the table frees every block when it is dropped, and it is dropped after the filter value on
//! every path (a local declared before the filter, while `DriverEntry` has not built the state;
//! then a field of the state declared after the filter, dropped after it, at unload or when
//! `DriverEntry` fails later). A filter that does not declare `Filter::LOAD_BUFFERS` gets the
//! plain `ServiceKey` instead, and the table's drop is empty for it: none of this code is in its
//! driver.

use core::cell::Cell;
use core::marker::PhantomData;

use fsfilter::{
    Error, Filter, LoadBuffer, MAX_LOAD_BUFFERS, Result, ServiceParameters, check_load_buffer_len,
};
use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};

use crate::constants::POOL_FLAG_NON_PAGED;
use crate::registry::ServiceKey;

/// The pool blocks of a driver's load buffers, freed when the table is dropped.
///
/// All-zero bytes are a valid, empty table (null blocks, tag 0): the backends keep one in their
/// zeroed driver state.
///
/// # Invariants
/// Each non-null block is a live non-paged pool block allocated with `tag`, owned by the table.
pub struct LoadBlocks<F: Filter> {
    blocks: [Cell<*mut u8>; MAX_LOAD_BUFFERS],
    tag: u32,
    _filter: PhantomData<fn() -> F>,
}

impl<F: Filter> LoadBlocks<F> {
    /// An empty table whose blocks will be allocated (and freed) with `tag`.
    pub const fn new(tag: u32) -> LoadBlocks<F> {
        LoadBlocks {
            blocks: [const { Cell::new(core::ptr::null_mut()) }; MAX_LOAD_BUFFERS],
            tag,
            _filter: PhantomData,
        }
    }
}

impl<F: Filter> Drop for LoadBlocks<F> {
    fn drop(&mut self) {
        // Nothing to free, and no code, for a filter that never allocates.
        if !fsfilter::load_buffers::<F>() {
            return;
        }
        for block in &self.blocks {
            let p = block.replace(core::ptr::null_mut());
            if !p.is_null() {
                // SAFETY: the invariant: a live block allocated with `self.tag`, owned by the
                // table, freed once (the slot is null now). No `LoadBuffer` over it is used any
                // more: the table is dropped only after the filter value and `load`'s locals
                // (`LoadParameters::new`'s contract).
                unsafe { ExFreePoolWithTag(p.cast(), self.tag) };
            }
        }
    }
}

/// The service's parameters as `Filter::load` sees them when the filter declares
/// `Filter::LOAD_BUFFERS`: the registry key's values, and [`ServiceParameters::allocate`].
pub struct LoadParameters<'a, F: Filter> {
    key: &'a ServiceKey,
    blocks: &'a LoadBlocks<F>,
}

impl<'a, F: Filter> LoadParameters<'a, F> {
    /// The parameters of `key`, whose buffers `blocks` records.
    ///
    /// # Safety
    /// `blocks` must not be dropped while a `LoadBuffer` allocated through these parameters can
    /// still be used: the caller drops it only after the filter value `load` returns (and, when
    /// `load` fails, after it returned, which dropped its locals). The buffers' `'static`
    /// lifetime rests on this.
    pub unsafe fn new(key: &'a ServiceKey, blocks: &'a LoadBlocks<F>) -> LoadParameters<'a, F> {
        LoadParameters { key, blocks }
    }
}

impl<F: Filter> ServiceParameters for LoadParameters<'_, F> {
    fn service_name(&self) -> &str {
        self.key.service_name()
    }

    fn string<'b>(&self, name: &str, buffer: &'b mut [u8]) -> Option<&'b str> {
        self.key.string(name, buffer)
    }

    fn dword(&self, name: &str) -> Option<u32> {
        self.key.dword(name)
    }

    fn allocate(&self, len: usize) -> Result<LoadBuffer> {
        let len = check_load_buffer_len(len)?;
        let slot = self.blocks.blocks.iter().find(|b| b.get().is_null());
        let slot = slot.ok_or(Error::INSUFFICIENT_RESOURCES)?;
        // SAFETY: ExAllocatePool2 with a valid flag combination, a non-zero size and a tag;
        // without POOL_FLAG_UNINITIALIZED the block is zeroed.
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, len, self.blocks.tag) };
        let raw = raw.cast::<u8>();
        if raw.is_null() {
            return Err(Error::INSUFFICIENT_RESOURCES);
        }
        slot.set(raw);
        // SAFETY: a fresh block of `len` zeroed (initialized) bytes that nothing else refers to,
        // owned by the table from now on. The table frees it only when dropped, which `new`'s
        // contract puts after every use of the buffer: the `'static` lifetime is never relied on
        // beyond the filter value.
        let bytes = unsafe { core::slice::from_raw_parts_mut(raw, len) };
        Ok(LoadBuffer::new(bytes))
    }
}
