//! The backend's state: one `DriverState` per loaded driver image (reached through the image
//! global, `fsfilter_kernel::image`), one `InstanceState` per instance (in the instance context),
//! and the bookkeeping of pended operations and data-scan sections.

use core::ffi::c_void;

use fsfilter::{DataScanMode, Filter, Registration, VolumeInfo};
use fsfilter_kernel::image;
use fsfilter_kernel::pool::{PoolBox, pool_tag};
use fsfilter_kernel::sync::SpinLock;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_FILTER;

use crate::tables::RuntimeTables;

/// Pool tag of the driver state.
pub(crate) const DRIVER_TAG: u32 = pool_tag(b"FsfM");
/// Pool tag of instance contexts.
pub(crate) const INSTANCE_CONTEXT_TAG: u32 = pool_tag(b"FsfI");
/// Pool tag of section contexts.
pub(crate) const SECTION_CONTEXT_TAG: u32 = pool_tag(b"FsfS");
/// Pool tag of completion contexts too large to travel in the pointer itself.
pub(crate) const COMPLETION_TAG: u32 = pool_tag(b"FsfC");

/// How many operations a driver can hold pended at once; a pend beyond that is refused.
pub(crate) const MAX_PENDED: usize = 64;

/// A pended pre-operation.
#[derive(Clone, Copy)]
pub(crate) struct PendedEntry {
    /// The `FLT_CALLBACK_DATA` address.
    pub(crate) data: usize,
    /// The pre callback has not returned yet.
    pub(crate) in_pre: bool,
    /// A decision made while still in the pre callback: (`FLT_PREOP_*`, encoded context).
    pub(crate) early: Option<(i32, usize)>,
    /// Decision for a deferred resume: (`FLT_PREOP_*`, encoded context, delay in ms).
    pub(crate) deferred: Option<(i32, usize, u32)>,
}

/// Everything the backend keeps for one loaded driver.
pub(crate) struct DriverState<F: Filter> {
    pub(crate) filter: F,
    pub(crate) handle: PFLT_FILTER,
    pub(crate) registration: Registration,
    /// Tables for a run-time registration (None when the static tables are used).
    pub(crate) runtime_tables: Option<PoolBox<RuntimeTables>>,
    pub(crate) pended: SpinLock<[Option<PendedEntry>; MAX_PENDED]>,
    pub(crate) deferred_posts: SpinLock<[usize; MAX_PENDED]>,
    pub(crate) sections: crate::services::SectionTable,
}

impl<F: Filter> DriverState<F> {
    /// The state of the running image, if its `DriverEntry` completed.
    ///
    /// # Safety
    /// Must be called from code of an image whose backend is this one with this `F` (the image
    /// global only ever holds a `DriverState<F>` of the image's own `F`), and the reference must
    /// not outlive the callback that asked (unload frees the state).
    pub(crate) unsafe fn current<'a>() -> Option<&'a DriverState<F>> {
        let p = image::get().cast::<DriverState<F>>();
        // SAFETY: the caller guarantees the global holds a live `DriverState<F>` or null.
        unsafe { p.as_ref() }
    }

    /// Records `data` as pended (still inside its pre callback). False when full or present.
    pub(crate) fn add_pended(&self, data: usize) -> bool {
        let mut table = self.pended.lock();
        if table.iter().flatten().any(|e| e.data == data) {
            return false;
        }
        match table.iter_mut().find(|e| e.is_none()) {
            Some(slot) => {
                *slot = Some(PendedEntry { data, in_pre: true, early: None, deferred: None });
                true
            }
            None => false,
        }
    }

    /// Applies `f` to the entry for `data`; `None` if there is none.
    pub(crate) fn with_pended<R>(
        &self,
        data: usize,
        f: impl FnOnce(&mut Option<PendedEntry>) -> R,
    ) -> Option<R> {
        let mut table = self.pended.lock();
        let slot = table.iter_mut().find(|e| matches!(e, Some(x) if x.data == data))?;
        Some(f(slot))
    }
}

/// The per-instance state, stored in the instance context.
pub(crate) struct InstanceState<F: Filter> {
    pub(crate) context: F::InstanceContext,
    pub(crate) volume: VolumeInfo,
    pub(crate) data_scan: DataScanMode,
}

/// A data-scan section's record, stored in the section context.
pub(crate) struct SectionState {
    /// `ZwMapViewOfSection`'s base address.
    pub(crate) base: *mut c_void,
    /// The view size in bytes.
    pub(crate) size: usize,
    /// The section handle.
    pub(crate) handle: *mut c_void,
    /// The section object (referenced).
    pub(crate) object: *mut c_void,
    /// Conflicting I/O asked for the section to be closed.
    pub(crate) conflicted: bool,
    /// Closed already (by a conflict).
    pub(crate) closed: bool,
    /// Created with `FsRtlCreateSectionForDataScan` (the fallback).
    pub(crate) fallback: bool,
}
