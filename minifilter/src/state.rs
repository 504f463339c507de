//! The backend's state: one `DriverState` per loaded driver image (reached through the image
//! global, `fsfilter_kernel::image`), one `InstanceState` per instance (in the instance context),
//! and the bookkeeping of pended operations and data-scan sections.

use fsfilter::{DataScanMode, Filter, Registration, VolumeInfo};
use fsfilter_kernel::datascan::SectionTable;
use fsfilter_kernel::image;
use fsfilter_kernel::pending::{MAX_PENDED, PendedTable};
use fsfilter_kernel::pool::{PoolBox, pool_tag};
use fsfilter_kernel::sync::SpinLock;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_FILTER;

use crate::tables::RuntimeTables;

/// Pool tag of the driver state.
pub(crate) const DRIVER_TAG: u32 = pool_tag(b"FsfM");
/// Pool tag of instance contexts.
pub(crate) const INSTANCE_CONTEXT_TAG: u32 = pool_tag(b"FsfI");
/// Pool tag of section contexts.
pub(crate) const SECTION_CONTEXT_TAG: u32 = pool_tag(b"FsfX");

/// Everything the backend keeps for one loaded driver.
pub(crate) struct DriverState<F: Filter> {
    pub(crate) filter: F,
    pub(crate) handle: PFLT_FILTER,
    pub(crate) registration: Registration,
    /// Tables for a run-time registration (None when the static tables are used).
    pub(crate) runtime_tables: Option<PoolBox<RuntimeTables>>,
    pub(crate) pended: PendedTable,
    pub(crate) deferred_posts: SpinLock<[usize; MAX_PENDED]>,
    pub(crate) sections: SectionTable,
    /// The instance contexts of attached instances, for callbacks that may run above
    /// `APC_LEVEL` (post callbacks), where `FltGetInstanceContext` may not be called.
    pub(crate) instances: InstanceTable,
}

/// How many instances one filter can have on the fast path; more still work, through
/// `FltGetInstanceContext`, in callbacks at `APC_LEVEL` or below.
pub(crate) const MAX_INSTANCES: usize = 64;

/// `(PFLT_INSTANCE, instance context)` pairs of attached instances, 0 for a free slot.
///
/// # Invariants
/// All-zero bytes are an empty table, so it can live in zeroed pool. A context in the table is the
/// instance's context, which the Filter Manager keeps alive until its last reference goes after
/// the instance's teardown completed; its cleanup callback removes it from the table first.
pub(crate) struct InstanceTable {
    entries: SpinLock<[(usize, usize); MAX_INSTANCES]>,
}

impl InstanceTable {
    /// Records `instance`'s context. False when the table is full.
    pub(crate) fn insert(&self, instance: usize, context: usize) -> bool {
        let mut t = self.entries.lock();
        if let Some(e) = t.iter_mut().find(|(i, _)| *i == instance) {
            e.1 = context;
            return true;
        }
        match t.iter_mut().find(|(i, _)| *i == 0) {
            Some(slot) => {
                *slot = (instance, context);
                true
            }
            None => false,
        }
    }

    /// The context of `instance`, if recorded. Callable at `DISPATCH_LEVEL`.
    pub(crate) fn get(&self, instance: usize) -> Option<usize> {
        self.entries.lock().iter().find(|(i, _)| *i == instance && instance != 0).map(|(_, c)| *c)
    }

    /// Forgets the instance whose context is `context`.
    pub(crate) fn remove_context(&self, context: usize) {
        if let Some(e) = self.entries.lock().iter_mut().find(|(_, c)| *c == context) {
            *e = (0, 0);
        }
    }
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
}

/// The per-instance state, stored in the instance context.
pub(crate) struct InstanceState<F: Filter> {
    pub(crate) context: F::InstanceContext,
    pub(crate) volume: VolumeInfo,
    pub(crate) data_scan: DataScanMode,
}
