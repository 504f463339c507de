//! The WDK's inline IRP macros as functions, with the same names (they are bindings).
//!
//! Each works on the IRP layout the I/O manager builds: the `IRP` header followed by
//! `StackCount` `IO_STACK_LOCATION`s, `CurrentLocation` counting from `StackCount + 1` (no location
//! yet) down to 1, and `Tail.Overlay.CurrentStackLocation` pointing at the current one. The next
//! lower driver's location is the one *below* the current in memory.

#![allow(non_snake_case, reason = "WDK names, kept for porting and reading alongside C")]

use core::ffi::c_void;
use core::ptr;

use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IO_STACK_LOCATION, IRP};
use windows_sys::Win32::Foundation::NTSTATUS;

use crate::constants::{
    SL_INVOKE_ON_CANCEL, SL_INVOKE_ON_ERROR, SL_INVOKE_ON_SUCCESS, SL_PENDING_RETURNED,
};
use crate::ntos::{IoCompletionRoutine, completion_routine_field};

/// [`IoGetCurrentIrpStackLocation`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iogetcurrentirpstacklocation).
///
/// # Safety
/// `irp` must point to a valid IRP owned by the caller's driver for the duration of the call.
pub unsafe fn IoGetCurrentIrpStackLocation(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` is valid.
    let slot = unsafe { current_location_slot(irp) };
    *slot
}

/// `&mut Irp->Tail.Overlay.CurrentStackLocation`.
///
/// # Safety
/// `irp` must be valid and not otherwise borrowed for `'a`.
unsafe fn current_location_slot<'a>(irp: *mut IRP) -> &'a mut *mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` is valid and unaliased.
    let irp = unsafe { &mut *irp };
    // SAFETY: for an IRP in flight the I/O manager keeps `Tail.Overlay` as the active member of
    // the `Tail` union.
    let overlay = unsafe { &mut irp.Tail.Overlay };
    // SAFETY: likewise `CurrentStackLocation` is the active member of its union (PacketType is
    // only used for IRPs queued to completion ports).
    unsafe { &mut overlay.Anonymous2.Anonymous.CurrentStackLocation }
}

/// [`IoGetNextIrpStackLocation`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iogetnextirpstacklocation):
/// the location of the next lower driver.
///
/// # Safety
/// As [`IoGetCurrentIrpStackLocation`]; the caller must not use the result unless
/// `CurrentLocation > 1` (a lower location exists).
pub unsafe fn IoGetNextIrpStackLocation(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` is valid.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    current.wrapping_sub(1)
}

/// [`IoSkipCurrentIrpStackLocation`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioskipcurrentirpstacklocation):
/// the next driver reuses the current location (no completion routine possible).
///
/// # Safety
/// `irp` must be valid and the caller must be about to pass it down with `IoCallDriver`.
pub unsafe fn IoSkipCurrentIrpStackLocation(irp: *mut IRP) {
    // SAFETY: the caller guarantees `irp` is valid and exclusively ours to modify.
    unsafe {
        (*irp).CurrentLocation += 1;
    }
    // SAFETY: as above; IoCallDriver moves the pointer back down before the next driver runs.
    let slot = unsafe { current_location_slot(irp) };
    *slot = slot.wrapping_add(1);
}

/// [`IoSetNextIrpStackLocation`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetnextirpstacklocation):
/// makes the next lower location the current one, as `IoCallDriver` does before it calls the
/// driver. The I/O manager uses it to present a create IRP to a `FastIoQueryOpen` routine, which
/// is called directly rather than through `IoCallDriver`.
///
/// # Safety
/// `irp` must be valid, owned by the caller, and have a location below the current one.
pub unsafe fn IoSetNextIrpStackLocation(irp: *mut IRP) {
    // SAFETY: the caller guarantees `irp` is valid and ours.
    unsafe {
        (*irp).CurrentLocation -= 1;
    }
    // SAFETY: as above.
    let slot = unsafe { current_location_slot(irp) };
    *slot = slot.wrapping_sub(1);
}

/// [`IoCopyCurrentIrpStackLocationToNext`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocopycurrentirpstacklocationtonext):
/// copies everything up to (not including) `CompletionRoutine`, and clears the next `Control`.
///
/// # Safety
/// `irp` must be valid and have a location below the current one.
pub unsafe fn IoCopyCurrentIrpStackLocationToNext(irp: *mut IRP) {
    // SAFETY: the caller guarantees `irp` is valid.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: the caller guarantees a next location exists.
    let next = unsafe { IoGetNextIrpStackLocation(irp) };
    let count = core::mem::offset_of!(IO_STACK_LOCATION, CompletionRoutine);
    // SAFETY: both locations are valid, distinct elements of the IRP's stack array; `count` is
    // within the structure.
    unsafe { ptr::copy_nonoverlapping(current.cast::<u8>(), next.cast::<u8>(), count) };
    // SAFETY: `next` is valid (above).
    unsafe { (*next).Control = 0 };
}

/// [`IoSetCompletionRoutine`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetcompletionroutine):
/// sets the routine in the next lower driver's location. Prefer the I/O manager's
/// `IoSetCompletionRoutineEx` in filters that can unload (the backends use it).
///
/// # Safety
/// `irp` must be valid with a location below the current one; `routine` must stay loaded until it
/// has run.
pub unsafe fn IoSetCompletionRoutine(
    irp: *mut IRP,
    routine: IoCompletionRoutine,
    context: *mut c_void,
    on_success: bool,
    on_error: bool,
    on_cancel: bool,
) {
    // SAFETY: the caller guarantees a next location exists.
    let next = unsafe { IoGetNextIrpStackLocation(irp) };
    let mut control = 0;
    if on_success {
        control |= SL_INVOKE_ON_SUCCESS;
    }
    if on_error {
        control |= SL_INVOKE_ON_ERROR;
    }
    if on_cancel {
        control |= SL_INVOKE_ON_CANCEL;
    }
    // SAFETY: `next` is a valid location of this IRP (above) and ours to set up.
    let next = unsafe { &mut *next };
    next.CompletionRoutine = completion_routine_field(routine);
    next.Context = context;
    next.Control = control;
}

/// [`IoMarkIrpPending`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iomarkirppending).
///
/// # Safety
/// `irp` must be valid and the current location the caller's.
pub unsafe fn IoMarkIrpPending(irp: *mut IRP) {
    // SAFETY: the caller guarantees `irp` is valid.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: the current location of a valid IRP.
    unsafe { (*current).Control |= SL_PENDING_RETURNED };
}

/// Clears the mark [`IoMarkIrpPending`] set on the caller's own location, for an IRP it marked
/// and then kept: not passed down, not completed, and reachable by nobody else since (a pre
/// callback's pend that a token answered before the callback returned). The dispatch routine then
/// returns the lower driver's status, as for an IRP it never marked.
///
/// # Safety
/// `irp` must be valid, the current location the caller's, and the IRP not handed to anyone since
/// it was marked.
pub unsafe fn unmark_irp_pending(irp: *mut IRP) {
    // SAFETY: the caller guarantees `irp` is valid.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: the current location of a valid IRP.
    unsafe { (*current).Control &= !SL_PENDING_RETURNED };
}

/// `IoCallDriver`, which the WDK defines as `IofCallDriver`.
///
/// # Safety
/// `device` and `irp` must be valid; the IRP's next location must be set up for `device`'s driver.
pub unsafe fn IoCallDriver(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: forwarded preconditions.
    unsafe { windows_sys::Wdk::System::SystemServices::IofCallDriver(device, irp) }
}

/// `IoCompleteRequest`, which the WDK defines as `IofCompleteRequest`.
///
/// # Safety
/// `irp` must be valid, owned by the caller, and not completed before.
pub unsafe fn IoCompleteRequest(irp: *mut IRP, boost: i8) {
    // SAFETY: forwarded preconditions.
    unsafe { windows_sys::Wdk::System::SystemServices::IofCompleteRequest(irp, boost) }
}

/// `IO_NO_INCREMENT`.
pub const IO_NO_INCREMENT: i8 = 0;

/// `IoStatus.Status` of an IRP.
///
/// # Safety
/// `irp` must be valid.
pub unsafe fn irp_status(irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the caller guarantees `irp` is valid.
    let irp = unsafe { &*irp };
    // SAFETY: `Status` is the member drivers use (`Pointer` is reserved).
    unsafe { irp.IoStatus.Anonymous.Status }
}

/// Sets `IoStatus` of an IRP.
///
/// # Safety
/// `irp` must be valid and owned by the caller.
pub unsafe fn set_irp_status(irp: *mut IRP, status: NTSTATUS, information: usize) {
    // SAFETY: the caller guarantees `irp` is valid and ours.
    let irp = unsafe { &mut *irp };
    irp.IoStatus.Anonymous.Status = status;
    irp.IoStatus.Information = information;
}

/// [`IoSetCancelRoutine`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetcancelroutine):
/// an interlocked exchange of `Irp->CancelRoutine` (a macro in wdm.h). It returns the routine it
/// replaced: `None` when setting `None` means `IoCancelIrp` took the routine first (the cancel
/// routine runs, or will, and completes the IRP).
///
/// # Safety
/// `irp` must be a live IRP the caller's driver holds (queued or being queued by it).
pub unsafe fn IoSetCancelRoutine(
    irp: *mut IRP,
    routine: windows_sys::Wdk::Foundation::DRIVER_CANCEL,
) -> windows_sys::Wdk::Foundation::DRIVER_CANCEL {
    // SAFETY: a live IRP (the caller's contract): the projection stays in it.
    let raw = unsafe { &raw mut (*irp).CancelRoutine }.cast::<usize>();
    // SAFETY: the field is a pointer-sized, pointer-aligned function pointer (or NULL) that the
    // I/O manager and drivers only change interlocked, alive as long as the IRP.
    let field = unsafe { core::sync::atomic::AtomicUsize::from_ptr(raw) };
    let new = routine.map_or(0, |f| f as usize);
    let old = field.swap(new, core::sync::atomic::Ordering::AcqRel);
    if old == 0 {
        return None;
    }
    // SAFETY: a non-zero value of the field is a cancel routine someone stored through this
    // function or the I/O manager: a valid function pointer of that type.
    Some(unsafe {
        core::mem::transmute::<usize, unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP)>(old)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// An IRP with `N` stack locations laid out as the I/O manager lays them out.
    #[repr(C)]
    struct Packet<const N: usize> {
        irp: IRP,
        stack: [IO_STACK_LOCATION; N],
    }

    fn packet<const N: usize>() -> Packet<N> {
        // SAFETY: IRP and IO_STACK_LOCATION are plain C structures; all-zero is a valid value.
        let mut p: Packet<N> = unsafe { core::mem::zeroed() };
        p.irp.StackCount = N as i8;
        p.irp.CurrentLocation = N as i8 + 1;
        p
    }

    /// What IoCallDriver does before calling the driver: move to the next location.
    fn descend<const N: usize>(p: &mut Packet<N>) {
        p.irp.CurrentLocation -= 1;
        let idx = (p.irp.CurrentLocation - 1) as usize;
        let loc: *mut IO_STACK_LOCATION = &mut p.stack[idx];
        // SAFETY: `p.irp` is valid and unaliased here.
        let slot = unsafe { current_location_slot(&mut p.irp) };
        *slot = loc;
    }

    /// The macros above rely on the x64 kernel's layout (ntoskrnl's public symbols; wdm.h):
    /// `IRP` is 0xD0 bytes with `StackCount` at 0x42, `CurrentLocation` at 0x43 and
    /// `Tail.Overlay.CurrentStackLocation` at 0xB8; an `IO_STACK_LOCATION` is 0x48 bytes with
    /// `Control` at 3, `Parameters` at 8, `CompletionRoutine` at 0x38 and `Context` at 0x40.
    #[test]
    fn irp_and_stack_location_have_the_x64_layout() {
        use core::mem::offset_of;
        assert_eq!(size_of::<IRP>(), 0xD0);
        assert_eq!((offset_of!(IRP, StackCount), offset_of!(IRP, CurrentLocation)), (0x42, 0x43));
        // SAFETY: all-zero is a valid IRP.
        let irp: IRP = unsafe { core::mem::zeroed() };
        let base = core::ptr::from_ref(&irp) as usize;
        // SAFETY: taking the address of a union member reads nothing.
        let slot = unsafe { &raw const irp.Tail.Overlay.Anonymous2.Anonymous.CurrentStackLocation };
        assert_eq!(slot as usize - base, 0xB8);
        assert_eq!(size_of::<IO_STACK_LOCATION>(), 0x48);
        let sl = [
            offset_of!(IO_STACK_LOCATION, Control),
            offset_of!(IO_STACK_LOCATION, Parameters),
            offset_of!(IO_STACK_LOCATION, CompletionRoutine),
            offset_of!(IO_STACK_LOCATION, Context),
        ];
        assert_eq!(sl, [3, 8, 0x38, 0x40]);
    }

    #[test]
    fn stack_locations_move_down_in_memory() {
        let mut p = packet::<3>();
        descend(&mut p);
        let irp: *mut IRP = &mut p.irp;
        // SAFETY: `irp` points into `p`, which is alive and laid out as the kernel's.
        let cur = unsafe { IoGetCurrentIrpStackLocation(irp) };
        // SAFETY: as above; a lower location exists.
        let next = unsafe { IoGetNextIrpStackLocation(irp) };
        assert_eq!(cur, &mut p.stack[2] as *mut _);
        assert_eq!(next as usize, cur as usize - size_of::<IO_STACK_LOCATION>());
    }

    #[test]
    fn copy_to_next_copies_parameters_but_not_the_completion_routine() {
        unsafe extern "system" fn done(
            _: *mut DEVICE_OBJECT,
            _: *mut IRP,
            _: *mut c_void,
        ) -> NTSTATUS {
            0
        }
        let mut p = packet::<2>();
        descend(&mut p);
        p.stack[1].MajorFunction = 3;
        p.stack[1].MinorFunction = 1;
        p.stack[1].Flags = 7;
        p.stack[1].Control = SL_PENDING_RETURNED;
        p.stack[1].Parameters.Read.Length = 512;
        let irp: *mut IRP = &mut p.irp;
        // SAFETY: `p` is alive and has a location below the current one.
        unsafe { IoSetCompletionRoutine(irp, done, 0x1234 as *mut c_void, true, true, false) };
        // SAFETY: as above.
        unsafe { IoCopyCurrentIrpStackLocationToNext(irp) };
        let next = &p.stack[0];
        assert_eq!((next.MajorFunction, next.MinorFunction, next.Flags), (3, 1, 7));
        // SAFETY: a read union member, set above.
        assert_eq!(unsafe { next.Parameters.Read.Length }, 512);
        assert_eq!(next.Control, 0, "Control is cleared, not copied");
        assert!(next.CompletionRoutine.is_some(), "the routine set before the copy survives");
        assert_eq!(next.Context as usize, 0x1234);
    }

    #[test]
    fn completion_routine_flags() {
        unsafe extern "system" fn done(
            _: *mut DEVICE_OBJECT,
            _: *mut IRP,
            _: *mut c_void,
        ) -> NTSTATUS {
            0x42
        }
        let mut p = packet::<2>();
        descend(&mut p);
        let irp: *mut IRP = &mut p.irp;
        // SAFETY: `p` is alive with a next location.
        unsafe { IoSetCompletionRoutine(irp, done, core::ptr::null_mut(), true, false, true) };
        assert_eq!(p.stack[0].Control, SL_INVOKE_ON_SUCCESS | SL_INVOKE_ON_CANCEL);
        let routine =
            crate::ntos::completion_routine_from_field(p.stack[0].CompletionRoutine).unwrap();
        // SAFETY: `done` ignores its arguments.
        assert_eq!(unsafe { routine(core::ptr::null_mut(), irp, core::ptr::null_mut()) }, 0x42);
    }

    #[test]
    fn skip_and_mark_pending() {
        let mut p = packet::<2>();
        descend(&mut p);
        let irp: *mut IRP = &mut p.irp;
        // SAFETY: `p` is alive.
        unsafe { IoMarkIrpPending(irp) };
        assert_eq!(p.stack[1].Control & SL_PENDING_RETURNED, SL_PENDING_RETURNED);
        // SAFETY: `p` is alive.
        unsafe { IoSkipCurrentIrpStackLocation(irp) };
        assert_eq!(p.irp.CurrentLocation, 3);
        // SAFETY: `p.irp` is valid.
        let cur = unsafe { IoGetCurrentIrpStackLocation(&mut p.irp) };
        assert_eq!(cur as usize, &p.stack[1] as *const _ as usize + size_of::<IO_STACK_LOCATION>());
    }
}
