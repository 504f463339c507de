//! One-shot delays that park no thread: a `KTIMER` whose DPC runs a routine at
//! `DISPATCH_LEVEL` when the time is up. A backend's routine hands the work to a work item when it
//! needs `PASSIVE_LEVEL` (resuming a pended operation does). A system worker thread sleeping in
//! `KeDelayExecutionThread` for each delay would hold one of a small pool of threads for the
//! whole delay.

use core::ffi::c_void;

use windows_sys::Wdk::Foundation::KDPC;
use windows_sys::Wdk::System::SystemServices::{
    KTIMER, KeDelayExecutionThread, KeInitializeDpc, KeInitializeTimer, KeSetTimer,
};

use crate::ntos::{DeferredRoutine, deferred_routine_field};

/// A timer and its DPC. Lives in non-paged memory that stays valid until the DPC has run (a pool
/// record the DPC routine owns). All-zero is a valid, unarmed value.
#[repr(C)]
pub struct Delay {
    timer: KTIMER,
    dpc: KDPC,
}

impl Delay {
    /// An unarmed delay.
    // SAFETY: KTIMER and KDPC are plain C structures (integers, pointers, unions of them) for
    // which all-zero is a valid value; the kernel initializes them in `start`.
    pub const ZERO: Delay = unsafe { core::mem::zeroed() };
}

/// Arms `delay`: after `ms` milliseconds `routine(dpc, context, null, null)` runs as a DPC.
///
/// # Safety
/// `delay` points at a `Delay` in non-paged memory that stays valid, and is not armed again,
/// until `routine` has run; `routine` is code of this image that stays loaded until then; IRQL
/// at most `DISPATCH_LEVEL`.
pub unsafe fn start(delay: *mut Delay, ms: u32, routine: DeferredRoutine, context: *mut c_void) {
    // SAFETY: the caller's valid, non-paged Delay; the DPC belongs to it.
    let dpc = unsafe { &raw mut (*delay).dpc };
    // SAFETY: as above.
    let timer = unsafe { &raw mut (*delay).timer };
    // SAFETY: initializes the DPC in place with our routine and context.
    unsafe { KeInitializeDpc(dpc, deferred_routine_field(routine), context) };
    // SAFETY: initializes the timer in place.
    unsafe { KeInitializeTimer(timer) };
    // Negative: relative, in 100 ns units.
    let due = -i64::from(ms) * 10_000;
    // SAFETY: both initialized and valid until the DPC runs (the caller's contract).
    let _ = unsafe { KeSetTimer(timer, due, dpc) };
}

/// Blocks the calling thread for `ms` milliseconds (`KeDelayExecutionThread`, kernel mode, not
/// alertable). Only at `PASSIVE_LEVEL`; `STATUS_INVALID_DEVICE_STATE` otherwise.
pub fn sleep(ms: u32) -> Result<(), fsfilter::Error> {
    if crate::irql::current() != fsfilter::Irql::PASSIVE {
        return Err(fsfilter::Error::INVALID_DEVICE_STATE);
    }
    let interval = -i64::from(ms) * 10_000;
    // SAFETY: PASSIVE_LEVEL; a relative interval on our stack.
    let _ = unsafe { KeDelayExecutionThread(0, false, &interval) };
    Ok(())
}
