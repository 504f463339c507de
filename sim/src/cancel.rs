//! IRP cancellation: `IoCancelIrp`, the cancel spin lock, `IoSetCancelRoutine`, and the system
//! service that cancels a handle's outstanding requests (`NtCancelIoFileEx`, behind `CancelIoEx`).
//!
//! The rules, from the routines' reference pages and the bug checks they name:
//!
//! - `IoCancelIrp` (IRQL <= `DISPATCH_LEVEL`) takes the cancel spin lock, sets `Irp->Cancel`,
//!   and takes the IRP's cancel routine out of it. With none, it releases the lock and returns
//!   FALSE: the IRP is not cancelable now, and whoever holds it may look at `Cancel` later.
//!   With one, it stores the IRQL to restore in `Irp->CancelIrql` and calls the routine at
//!   `DISPATCH_LEVEL`, with the lock held, with the device of the IRP's current stack location;
//!   the routine must release the lock (`IoReleaseCancelSpinLock(Irp->CancelIrql)`) and complete
//!   the IRP with `STATUS_CANCELLED`. It returns TRUE.
//! - A cancel routine that returns with the lock held is bug check 0x11B,
//!   `DRIVER_RETURNED_HOLDING_CANCEL_LOCK`.
//! - `IoSetCancelRoutine` is an interlocked exchange of `Irp->CancelRoutine`: it returns the
//!   routine it replaced, so NULL when cancellation took the routine first. A driver must take its
//!   routine out before it completes the IRP: completing an IRP with a cancel routine still set is
//!   bug check 0x48, `CANCEL_STATE_IN_COMPLETED_IRP`.
//! - `NtCancelIoFileEx` cancels the caller's outstanding requests on a handle and does not wait
//!   for them (`CancelIoEx`); it answers `STATUS_NOT_FOUND` when there is none.
//!
//! The simulated file systems hold two kinds of requests until something else happens, and both
//! are cancelable as they are on Windows: a directory change notification waiting for a change
//! (FsRtl's notify package) and a byte-range lock waiting for a conflicting range
//! (FsRtl's lock package). docs/simulator.md, "IRP cancellation".

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_CANCEL, FILE_OBJECT, IRP};

use crate::events::Rule;
use crate::irp::{Finish, IrpState};
use crate::kernel::{self, DISPATCH_LEVEL, Kernel};

/// `IoSetCancelRoutine`: sets `routine` (None takes the IRP out of the cancelable state) and
/// returns the routine it replaced. The machine runs on one host thread, so the WDK's
/// interlocked exchange is a plain one.
///
/// # Safety
/// `irp` is a live IRP.
pub unsafe fn set_cancel_routine(irp: *mut IRP, routine: DRIVER_CANCEL) -> DRIVER_CANCEL {
    // SAFETY: a live IRP (the caller's contract).
    std::mem::replace(unsafe { &mut (*irp).CancelRoutine }, routine)
}

impl Kernel {
    /// `IoAcquireCancelSpinLock`: raises to `DISPATCH_LEVEL` and returns the IRQL to restore. The
    /// simulator has one processor and no preemption, so a lock found held means the same code
    /// path took it twice: a deadlock on Windows, reported here.
    pub(crate) fn acquire_cancel_lock(&mut self, what: &str) -> u8 {
        let old = self.irql();
        if old > DISPATCH_LEVEL {
            self.report_current(Rule::IrqlTooHigh, format!("{what} above DISPATCH_LEVEL"));
        }
        if self.irps.cancel_lock {
            self.report_current(
                Rule::Deadlock,
                format!("{what}: the cancel spin lock acquired while already held"),
            );
        }
        self.irps.cancel_lock = true;
        self.set_irql(old.max(DISPATCH_LEVEL));
        old
    }

    /// `IoReleaseCancelSpinLock(irql)`: releases the lock and restores `irql`.
    pub(crate) fn release_cancel_lock(&mut self, irql: u8) {
        if !self.irps.cancel_lock {
            self.report_current(
                Rule::SpinLockMisuse,
                "IoReleaseCancelSpinLock with the cancel spin lock not held",
            );
        }
        self.irps.cancel_lock = false;
        if irql > self.irql() {
            self.report_current(
                Rule::SpinLockMisuse,
                "IoReleaseCancelSpinLock restoring an IRQL above the current one",
            );
        }
        self.set_irql(irql);
    }

    /// The user requests still outstanding on `file`, newest first: what `NtCancelIoFileEx`
    /// cancels (the IRPs the I/O manager issued for the file object, `OriginalFileObject`), in
    /// the order it walks them. The I/O manager queues each request at the head of its thread's
    /// IRP list and the cancel walks the list from the head (docs/simulator.md, "IRP
    /// cancellation": a choice, which facts.md does not settle).
    fn outstanding_requests(&self, file: *mut FILE_OBJECT) -> Vec<usize> {
        let mut found: Vec<(u64, usize)> = self
            .irps
            .map
            .iter()
            .filter(|(_, info)| info.state == IrpState::Active)
            .filter_map(|(&irp, info)| {
                // A volume handle's requests by request number, a device handle's overlapped
                // ones by their own (a file object has only one kind).
                let order = match info.finish {
                    Finish::Request(rid) => u64::from(rid.0),
                    Finish::Overlapped(key) => key,
                    Finish::DriverOwned | Finish::Synchronous => return None,
                };
                // SAFETY: a live IRP of the table.
                let tail = unsafe { &(*(irp as *mut IRP)).Tail };
                // SAFETY: the I/O manager's member of the tail, set for every user request.
                let original = unsafe { tail.Overlay }.OriginalFileObject;
                (original == file).then_some((order, irp))
            })
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.into_iter().map(|(_, irp)| irp).collect()
    }
}

/// What [`cancel_irp`] does once the kernel is no longer borrowed.
enum Next {
    /// Return this.
    Done(bool),
    /// Call the cancel routine (its image entered), then check the lock.
    Call {
        routine: unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP),
        device: *mut DEVICE_OBJECT,
        entered: kernel::Entered,
        driver: Option<String>,
        irql: u8,
    },
}

/// `IoCancelIrp`.
#[allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "the IRP is looked up in the simulator's table before any access; an unknown pointer is reported, not dereferenced"
)]
pub fn cancel_irp(irp: *mut IRP) -> bool {
    let next = kernel::with(|k| {
        match k.irps.map.get(&(irp as usize)).map(|i| i.state) {
            Some(IrpState::Active) => {}
            Some(IrpState::Completed) => {
                // SAFETY: an IRP of the table (completed, not yet freed by its allocator).
                if unsafe { (*irp).CancelRoutine }.is_some() {
                    k.report_current(
                        Rule::CancelStateInCompletedIrp,
                        "IoCancelIrp on a completed IRP that still has a cancel routine",
                    );
                }
                return Next::Done(false);
            }
            _ => {
                k.report_current(
                    Rule::Bugcheck,
                    format!("IoCancelIrp on {irp:p}, which is not a live IRP"),
                );
                return Next::Done(false);
            }
        }
        let irql = k.acquire_cancel_lock("IoCancelIrp");
        // SAFETY: a live IRP (checked).
        unsafe { (*irp).Cancel = true };
        // SAFETY: as above.
        let Some(routine) = (unsafe { set_cancel_routine(irp, None) }) else {
            k.release_cancel_lock(irql);
            return Next::Done(false);
        };
        // SAFETY: as above.
        let i = unsafe { &mut *irp };
        i.CancelIrql = irql;
        // The device of the current location: the driver that holds the IRP set the routine.
        let device = if i.CurrentLocation >= 1 && i.CurrentLocation <= i.StackCount {
            // SAFETY: the current location of a live IRP, inside its stack.
            unsafe { crate::irpx::current(irp) }.DeviceObject
        } else {
            std::ptr::null_mut()
        };
        let image =
            k.objects.device_id(device).map(|d| k.objects.driver(k.objects.device(d).driver).image);
        if !k.code_may_run(
            image,
            "IoCancelIrp would have called the cancel routine of an unloaded driver",
        ) {
            k.release_cancel_lock(irql);
            return Next::Done(true);
        }
        let driver = image.map(|img| k.image_name(img));
        Next::Call { routine, device, entered: k.enter(image), driver, irql }
    });
    let (routine, device, entered, driver, irql) = match next {
        Next::Done(called) => return called,
        Next::Call { routine, device, entered, driver, irql } => {
            (routine, device, entered, driver, irql)
        }
    };
    // SAFETY: the driver's cancel routine, with the device and IRP the I/O manager passes.
    kernel::run_entered(entered, || unsafe { routine(device, irp) });
    kernel::with(|k| {
        k.leave();
        if k.irps.cancel_lock {
            k.report(
                Rule::ReturnedHoldingCancelLock,
                driver,
                "a cancel routine returned holding the cancel spin lock \
                 (DRIVER_RETURNED_HOLDING_CANCEL_LOCK, bug check 0x11B)",
            );
            k.irps.cancel_lock = false;
            k.set_irql(irql);
        } else if k.irql() != irql {
            k.report(
                Rule::SpinLockMisuse,
                driver,
                format!(
                    "a cancel routine returned at IRQL {}, not the Irp->CancelIrql ({irql}) it \
                     must release the cancel spin lock with",
                    k.irql()
                ),
            );
            k.set_irql(irql);
        }
    });
    true
}

/// `NtCancelIoFileEx(handle, NULL)` for the file object of a handle: cancels every request of
/// the caller still outstanding on it, newest first, and does not wait for them;
/// `STATUS_NOT_FOUND` when there is none.
pub(crate) fn cancel_file_requests(file: *mut FILE_OBJECT) -> Status {
    let irps = kernel::with(|k| k.outstanding_requests(file));
    if irps.is_empty() {
        return Status::NOT_FOUND;
    }
    for irp in irps {
        // A cancel routine may have completed a later request of the list too.
        let live =
            kernel::with(|k| k.irps.map.get(&irp).is_some_and(|i| i.state == IrpState::Active));
        if live {
            cancel_irp(irp as *mut IRP);
        }
    }
    Status::SUCCESS
}

/// Makes a request a file system is about to hold cancelable with `routine`, as FsRtl's notify
/// and lock packages do: true when it may wait; false when it was cancelled on its way down (a
/// filter held it, not cancelable), which its holder then answers `STATUS_CANCELLED` at once.
///
/// # Safety
/// `irp` is the live IRP in the holder's dispatch routine.
pub(crate) unsafe fn make_cancelable(irp: *mut IRP, routine: DRIVER_CANCEL) -> bool {
    // SAFETY: the caller's contract.
    unsafe { set_cancel_routine(irp, routine) };
    // SAFETY: as above.
    if unsafe { (*irp).Cancel } {
        // SAFETY: as above.
        unsafe { clear_cancel_routine(irp) };
        return false;
    }
    true
}

/// The body of the file systems' cancel routines: releases the cancel spin lock it is called
/// with (`Irp->CancelIrql`), takes the request out of its holder's queue (`leave`), and completes
/// it with `STATUS_CANCELLED`.
///
/// # Safety
/// `irp` is the live IRP being cancelled, held in the queue `leave` takes it out of.
pub(crate) unsafe fn complete_cancelled(irp: *mut IRP, leave: impl FnOnce(&mut Kernel)) {
    // SAFETY: the IRP being cancelled (the caller's contract).
    let irql = unsafe { (*irp).CancelIrql };
    kernel::with(|k| {
        k.release_cancel_lock(irql);
        leave(k);
    });
    // SAFETY: a held IRP, live until completed here, once (it left its queue).
    unsafe { crate::irpx::complete(irp, Status::CANCELLED, 0) };
}

/// Takes a held request out of the cancelable state (`IoSetCancelRoutine(Irp, NULL)`) before its
/// holder completes it. On Windows a NULL answer means a cancellation took the routine first and
/// the holder must leave the IRP to the cancel routine; the machine runs on one host thread, and a
/// cancel routine takes its IRP out of the holder's queue before anything else can look at it, so
/// a request still queued always has its routine here.
///
/// # Safety
/// `irp` is a live IRP the caller holds.
pub(crate) unsafe fn clear_cancel_routine(irp: *mut IRP) {
    // SAFETY: the caller's contract.
    let _ = unsafe { set_cancel_routine(irp, None) };
}
