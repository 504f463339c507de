//! Locks.
//!
//! - `SpinLock<T>`: a kernel spin lock (`KeAcquireSpinLockRaiseToDpc` / `KeReleaseSpinLock`)
//!   around a value. Acquiring raises to `DISPATCH_LEVEL`, so it can be taken from post callbacks
//!   and completion routines; the guarded code must not block or touch pageable memory.
//! - [`initialize_fast_mutex`]: `ExInitializeFastMutex`, an inline of wdm.h, for a `FAST_MUTEX`
//!   taken with `ExAcquireFastMutex` / `ExReleaseFastMutex` (ntoskrnl exports on x64): held at
//!   `APC_LEVEL`, so no normal kernel APC (a suspension) stops its owner while it holds it.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use windows_sys::Wdk::Foundation::FAST_MUTEX;
use windows_sys::Wdk::System::SystemServices::{FM_LOCK_BIT, KeInitializeEvent};
use windows_sys::Win32::System::Kernel::SynchronizationEvent;

use crate::ntos::{KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock};

/// `ExInitializeFastMutex` (a `FORCEINLINE` of wdm.h, so the driver does it): the mutex free
/// (`Count` = `FM_LOCK_BIT`), no owner, no contention, and its gate a synchronization event, not
/// signalled.
///
/// # Safety
/// `mutex` must point to writable storage for a `FAST_MUTEX` in non-paged memory, 8-byte
/// aligned (its reference page), that no thread uses meanwhile.
pub unsafe fn initialize_fast_mutex(mutex: *mut FAST_MUTEX) {
    // SAFETY: the caller's storage, ours alone meanwhile.
    let m = unsafe { &mut *mutex };
    m.Count = FM_LOCK_BIT as i32;
    m.Owner = core::ptr::null_mut();
    m.Contention = 0;
    // SAFETY: the mutex's own event, in the caller's non-paged storage.
    unsafe { KeInitializeEvent(&raw mut m.Event, SynchronizationEvent, false) };
}

/// A value guarded by a `KSPIN_LOCK`. It must live in non-paged memory (a static, or pool).
pub struct SpinLock<T> {
    lock: UnsafeCell<usize>,
    value: UnsafeCell<T>,
}

// SAFETY: the kernel spin lock serializes all access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value; no thread holds it then (it is borrowed while held).
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A lock in the released state (`KeInitializeSpinLock` sets it to zero).
    pub const fn new(value: T) -> SpinLock<T> {
        SpinLock { lock: UnsafeCell::new(0), value: UnsafeCell::new(value) }
    }

    /// Acquires the lock, raising to `DISPATCH_LEVEL` until the guard drops.
    ///
    /// # Context
    /// IRQL ≤ `DISPATCH_LEVEL`.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        // SAFETY: `lock` is a KSPIN_LOCK that lives as long as `self`.
        let old_irql = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        SpinLockGuard { owner: self, old_irql }
    }

    /// The value, through exclusive access (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// Holds a [`SpinLock`]; releases it and restores the IRQL when dropped.
pub struct SpinLockGuard<'a, T> {
    owner: &'a SpinLock<T>,
    old_irql: u8,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the value exists.
        unsafe { &*self.owner.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock and `&mut self` is unique.
        unsafe { &mut *self.owner.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the lock is held by this guard; the IRQL is the one saved at acquisition.
        unsafe { KeReleaseSpinLock(self.owner.lock.get(), self.old_irql) };
    }
}

/// The crate's own unit tests run on the host without the simulator, so they get a real (atomic)
/// spin lock behind the two exports. Integration tests link the simulator's exports instead.
#[cfg(test)]
mod host_exports {
    use core::sync::atomic::{AtomicUsize, Ordering};

    #[unsafe(no_mangle)]
    extern "system" fn KeAcquireSpinLockRaiseToDpc(spinlock: *mut usize) -> u8 {
        // SAFETY: `spinlock` points at a live, aligned KSPIN_LOCK (a usize) owned by a SpinLock.
        let lock = unsafe { AtomicUsize::from_ptr(spinlock) };
        while lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        0
    }

    #[unsafe(no_mangle)]
    extern "system" fn KeReleaseSpinLock(spinlock: *mut usize, _newirql: u8) {
        // SAFETY: as above; the caller holds the lock.
        let lock = unsafe { AtomicUsize::from_ptr(spinlock) };
        lock.store(0, Ordering::Release);
    }

    #[test]
    fn lock_guards_value_and_releases() {
        let lock = super::SpinLock::new(1u32);
        *lock.lock() += 1;
        *lock.lock() += 1;
        assert_eq!(*lock.lock(), 3);
    }
}
