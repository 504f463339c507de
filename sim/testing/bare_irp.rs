//! A read IRP a test sends by hand, as a driver would with `IoAllocateIrp`: shared by
//! `sim/tests/io_resend.rs` and `legacy/tests/unload_race.rs` (each includes this file with
//! `#[path]`).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use fsfilter::Status;
use fsfilter_kernel::irp::IoGetCurrentIrpStackLocation;
use fsfilter_sim::irp::Finish;
use windows_sys::Wdk::Foundation::IRP;
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

/// `IRP_MJ_READ`.
const IRP_MJ_READ: u8 = 0x03;

/// A fresh IRP of `stack` locations whose first location is a read, not yet sent (`IoStatus`
/// `STATUS_PENDING`), with a caller's status block that outlives the test (leaked), preset to
/// `preset` so a test can see whether completion wrote it.
pub fn bare_read(stack: i8, preset: Status) -> (*mut IRP, &'static mut IO_STATUS_BLOCK) {
    let irp = fsfilter_sim::kernel::with(|k| k.allocate_irp(stack, Finish::Synchronous, None));
    let iosb: &'static mut IO_STATUS_BLOCK = Box::leak(Box::new(
        // SAFETY: plain data.
        unsafe { std::mem::zeroed() },
    ));
    // SAFETY: the fresh IRP: its first location (below the "none yet" position) and its
    // caller's status block.
    unsafe {
        let first = IoGetCurrentIrpStackLocation(irp).wrapping_sub(1);
        (*first).MajorFunction = IRP_MJ_READ;
        (*irp).IoStatus.Anonymous.Status = Status::PENDING.0;
        iosb.Anonymous.Status = preset.0;
        (*irp).Anonymous.UserIosb = &raw mut *iosb;
    }
    (irp, iosb)
}
