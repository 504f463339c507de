//! The table of operations a driver holds pended, shared by both backends: a token's handle is
//! only acted on when the table knows it, so a stale or forged handle does nothing.

use crate::sync::SpinLock;

/// How many operations one driver can hold pended at once; a pend beyond that is refused.
pub const MAX_PENDED: usize = 64;

/// A pended operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendedEntry {
    /// The backend's handle (the IRP or callback data address).
    pub handle: usize,
    /// The pre callback has not returned yet.
    pub in_pre: bool,
    /// A decision made while still in the pre callback: (backend status code, encoded context).
    pub early: Option<(i32, usize)>,
    /// A deferred decision: (backend status code, encoded context, delay in ms).
    pub deferred: Option<(i32, usize, u32)>,
    /// Backend data (the legacy backend keeps the device here).
    pub extra: usize,
}

/// The table.
pub struct PendedTable {
    entries: SpinLock<[Option<PendedEntry>; MAX_PENDED]>,
}

impl PendedTable {
    /// An empty table.
    pub const fn new() -> PendedTable {
        PendedTable { entries: SpinLock::new([None; MAX_PENDED]) }
    }

    /// Records `handle` as pended (still in its pre callback). False when full or present.
    pub fn add(&self, handle: usize, extra: usize) -> bool {
        let mut t = self.entries.lock();
        if t.iter().flatten().any(|e| e.handle == handle) {
            return false;
        }
        match t.iter_mut().find(|e| e.is_none()) {
            Some(slot) => {
                *slot =
                    Some(PendedEntry { handle, in_pre: true, early: None, deferred: None, extra });
                true
            }
            None => false,
        }
    }

    /// Applies `f` to the slot of `handle`; `None` when the table does not hold it.
    pub fn with<R>(
        &self,
        handle: usize,
        f: impl FnOnce(&mut Option<PendedEntry>) -> R,
    ) -> Option<R> {
        let mut t = self.entries.lock();
        let slot = t.iter_mut().find(|e| matches!(e, Some(x) if x.handle == handle))?;
        Some(f(slot))
    }

    /// Removes and returns the entry of `handle`.
    pub fn take(&self, handle: usize) -> Option<PendedEntry> {
        self.with(handle, Option::take).flatten()
    }

    /// How many operations are pended.
    pub fn len(&self) -> usize {
        self.entries.lock().iter().flatten().count()
    }

    /// True when nothing is pended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for PendedTable {
    fn default() -> Self {
        PendedTable::new()
    }
}
