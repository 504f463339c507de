//! The I/O manager's checks across the ways a legacy driver hands an IRP down: an IRP a
//! completion routine reclaimed (`STATUS_MORE_PROCESSING_REQUIRED`) and sends down again, a
//! pass-through that skips its own stack location, a null dispatch slot, and the IRQL a request
//! is sent at.
//!
//! "Bottom" is a native driver with a named device; "Top" a legacy driver that opens it with
//! `IoGetDeviceObjectPointer` and sends it a read IRP (facts.md §1.8).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

#[path = "../testing/bare_irp.rs"]
mod bare_irp;

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr::null_mut;

use fsfilter::Status;
use fsfilter_kernel::irp::{
    IoCallDriver, IoCompleteRequest, IoCopyCurrentIrpStackLocationToNext,
    IoGetCurrentIrpStackLocation, IoMarkIrpPending, IoSetCompletionRoutine,
    IoSkipCurrentIrpStackLocation,
};
use fsfilter_sim::{Machine, MachineConfig, Rule, ServiceSpec};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP, KEVENT};
use windows_sys::Wdk::System::SystemServices::{
    IoCreateDevice, IoGetDeviceObjectPointer, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

const IRP_MJ_READ: u8 = 0x03;
const IRP_PAGING_IO: u32 = 0x2;
const FILE_DEVICE_UNKNOWN: u32 = 0x22;

/// What the two drivers do with the read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Top sends the read down, reclaims it in its completion routine and retries it once when
    /// it failed; Bottom fails the first trip at once and pends the second.
    RetrySyncThenPended,
    /// The same, Bottom pending the first trip and completing the second at once.
    RetryPendedThenSync,
    /// Top skips its location and returns STATUS_SUCCESS whatever Bottom returned; Bottom pends.
    SkipAndReturnSuccess,
    /// Top skips its location and returns what IoCallDriver returned; Bottom pends.
    SkipAndReturnLower,
    /// Bottom has no read dispatch routine at all (its slot is null).
    NullSlot,
    /// Top passes the request down at `irql` (it skips its location), Bottom's device being of
    /// `device_type`; the request is a read unless `request` names another major function and
    /// `IRP_PAGING_IO`.
    At { irql: u8, device_type: u32, request: Option<(u8, bool)> },
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::SkipAndReturnLower) };
    /// How many times Bottom's read dispatch routine ran.
    static TRIPS: Cell<u32> = const { Cell::new(0) };
    static TOP: Cell<usize> = const { Cell::new(0) };
    static LOWER: Cell<usize> = const { Cell::new(0) };
}

fn bottom_name() -> Vec<u16> {
    r"\Device\ResendBottom".encode_utf16().collect()
}

fn unicode(w: &mut [u16]) -> UNICODE_STRING {
    let bytes = (w.len() * 2) as u16;
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: w.as_mut_ptr() }
}

/// Completes `irp` with `status`.
unsafe fn finish(irp: *mut IRP, status: Status) {
    // SAFETY: the caller's live IRP, completed once.
    unsafe {
        (*irp).IoStatus.Anonymous.Status = status.0;
        (*irp).IoStatus.Information = 0;
        IoCompleteRequest(irp, 0);
    }
}

/// Bottom's answer to one trip: complete now, or mark pending and complete from a worker.
unsafe fn answer(irp: *mut IRP, pend: bool, status: Status) -> NTSTATUS {
    if pend {
        // SAFETY: the IRP at our location, in our dispatch routine.
        unsafe { IoMarkIrpPending(irp) };
        let irp = irp as usize;
        fsfilter_sim::sched::queue_work(
            "resend-complete",
            None,
            // SAFETY: the IRP we pended, completed once by this worker.
            Box::new(move || unsafe { finish(irp as *mut IRP, status) }),
        );
        Status::PENDING.0
    } else {
        // SAFETY: as above.
        unsafe { finish(irp, status) };
        status.0
    }
}

unsafe extern "system" fn bottom_dispatch(_: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager's live IRP.
    if unsafe { (*IoGetCurrentIrpStackLocation(irp)).MajorFunction } != IRP_MJ_READ {
        // SAFETY: as above.
        return unsafe { answer(irp, false, Status::SUCCESS) };
    }
    let trip = TRIPS.get() + 1;
    TRIPS.set(trip);
    let (pend, status) = match (MODE.get(), trip) {
        (Mode::RetrySyncThenPended, 1) => (false, Status::UNSUCCESSFUL),
        (Mode::RetrySyncThenPended, _) => (true, Status::SUCCESS),
        (Mode::RetryPendedThenSync, 1) => (true, Status::UNSUCCESSFUL),
        (Mode::RetryPendedThenSync, _) => (false, Status::SUCCESS),
        _ => (true, Status::SUCCESS),
    };
    // SAFETY: as above.
    unsafe { answer(irp, pend, status) }
}

unsafe extern "system" fn bottom_entry(
    driver: *const DRIVER_OBJECT,
    _: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object, during DriverEntry.
    let d = unsafe { &mut *driver.cast_mut() };
    for slot in &mut d.MajorFunction {
        *slot = Some(bottom_dispatch);
    }
    if MODE.get() == Mode::NullSlot {
        d.MajorFunction[usize::from(IRP_MJ_READ)] = None;
    }
    let device_type = match MODE.get() {
        Mode::At { device_type, .. } => device_type,
        _ => FILE_DEVICE_UNKNOWN,
    };
    let mut name = bottom_name();
    let name = unicode(&mut name);
    let mut device = null_mut();
    // SAFETY: our driver object and a named device.
    unsafe { IoCreateDevice(driver, 0, &name, device_type, 0, false, &mut device) }
}

unsafe extern "system" fn signal(
    _: *mut DEVICE_OBJECT,
    _: *mut IRP,
    event: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the event the dispatch routine waits on, alive until it returns.
    unsafe { KeSetEvent(event.cast(), 0, false) };
    Status::MORE_PROCESSING_REQUIRED.0
}

unsafe extern "system" fn top_dispatch(_: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    let lower = LOWER.get() as *mut DEVICE_OBJECT;
    match MODE.get() {
        Mode::RetrySyncThenPended | Mode::RetryPendedThenSync => {
            // SAFETY: a kernel event on our stack, waited for before it goes.
            let mut event: KEVENT = unsafe { std::mem::zeroed() };
            let mut status = 0;
            for _ in 0..2 {
                // SAFETY: our live IRP and event; the routine signals and reclaims the IRP.
                unsafe {
                    KeInitializeEvent(&mut event, 0, false);
                    IoCopyCurrentIrpStackLocationToNext(irp);
                    IoSetCompletionRoutine(irp, signal, (&raw mut event).cast(), true, true, true);
                    if IoCallDriver(lower, irp) == Status::PENDING.0 {
                        KeWaitForSingleObject((&raw const event).cast(), 0, 0, false, null_mut());
                    }
                    status = (*irp).IoStatus.Anonymous.Status;
                }
                if status >= 0 {
                    break;
                }
            }
            // SAFETY: the IRP we reclaimed, completed once.
            unsafe { IoCompleteRequest(irp, 0) };
            status
        }
        Mode::SkipAndReturnSuccess => {
            // SAFETY: our live IRP, passed through.
            let _ = unsafe {
                IoSkipCurrentIrpStackLocation(irp);
                IoCallDriver(lower, irp)
            };
            Status::SUCCESS.0
        }
        Mode::At { irql, .. } => {
            let was = fsfilter_sim::kernel::with(|k| {
                let was = k.irql();
                k.set_irql(irql);
                was
            });
            // SAFETY: our live IRP, passed through.
            let status = unsafe {
                IoSkipCurrentIrpStackLocation(irp);
                IoCallDriver(lower, irp)
            };
            fsfilter_sim::kernel::with(|k| k.set_irql(was));
            status
        }
        Mode::SkipAndReturnLower | Mode::NullSlot => {
            // SAFETY: as above.
            unsafe {
                IoSkipCurrentIrpStackLocation(irp);
                IoCallDriver(lower, irp)
            }
        }
    }
}

unsafe extern "system" fn top_entry(
    driver: *const DRIVER_OBJECT,
    _: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our driver object, during DriverEntry.
    let d = unsafe { &mut *driver.cast_mut() };
    for slot in &mut d.MajorFunction {
        *slot = Some(top_dispatch);
    }
    let mut name = bottom_name();
    let name = unicode(&mut name);
    let (mut file, mut lower) = (null_mut(), null_mut());
    // SAFETY: a named device of a started driver.
    let status = unsafe { IoGetDeviceObjectPointer(&name, 0x1f01ff, &mut file, &mut lower) };
    assert_eq!(status, 0);
    let mut device = null_mut();
    // SAFETY: our driver object.
    assert_eq!(unsafe { IoCreateDevice(driver, 0, null_mut(), 0x22, 0, false, &mut device) }, 0);
    // SAFETY: our new device and the lower one, both live.
    unsafe { (*device).StackSize = (*lower).StackSize + 1 };
    TOP.set(device as usize);
    LOWER.set(lower as usize);
    0
}

/// Boots both drivers in `mode`, sends Top a read, runs the machine dry: (IoCallDriver's
/// return, the final status, Bottom's trips, the findings' rules and drivers).
fn run(mode: Mode) -> (Status, Status, u32, Vec<(Rule, Option<String>)>) {
    MODE.set(mode);
    TRIPS.set(0);
    let mut m = Machine::new(MachineConfig { seed: 1 });
    m.install(ServiceSpec::new("Bottom", bottom_entry, "native"));
    m.install(ServiceSpec::new("Top", top_entry, "legacy"));
    assert_eq!(m.start("Bottom"), Status::SUCCESS);
    assert_eq!(m.start("Top"), Status::SUCCESS);
    let top = TOP.get() as *mut DEVICE_OBJECT;
    let size = m.kernel(|k| k.objects.dobj(k.objects.device_id(top).unwrap()).StackSize);
    let (irp, iosb) = bare_irp::bare_read(size, Status(-1));
    if let Mode::At { request: Some((major, paging)), .. } = mode {
        // SAFETY: the fresh IRP: its first location, not yet sent.
        unsafe {
            (*IoGetCurrentIrpStackLocation(irp).wrapping_sub(1)).MajorFunction = major;
            if paging {
                (*irp).Flags |= IRP_PAGING_IO;
            }
        }
    }
    // SAFETY: Top's device and the IRP sized for its stack.
    let returned = Status(unsafe { IoCallDriver(top, irp) });
    fsfilter_sim::sched::run_all();
    // SAFETY: written by the I/O manager when the IRP finished.
    let finished = Status(unsafe { iosb.Anonymous.Status });
    let findings = m.findings().into_iter().map(|(rule, driver, _)| (rule, driver)).collect();
    (returned, finished, TRIPS.get(), findings)
}

#[test]
fn a_reclaimed_irp_sent_down_again_is_checked_afresh() {
    // The second trip's pending records are not the first trip's: before a fix of December 4,
    // Bottom was reported for marking (or not marking) the IRP as it had on the first trip.
    for mode in [Mode::RetrySyncThenPended, Mode::RetryPendedThenSync] {
        let (returned, finished, trips, findings) = run(mode);
        assert_eq!((returned, finished, trips), (Status::SUCCESS, Status::SUCCESS, 2));
        assert!(findings.is_empty(), "{findings:?}");
    }
}

#[test]
fn a_pass_through_that_skips_returns_what_the_lower_driver_returned() {
    let (returned, finished, _, findings) = run(Mode::SkipAndReturnLower);
    assert_eq!((returned, finished), (Status::PENDING, Status::SUCCESS));
    assert!(findings.is_empty(), "{findings:?}");
    // Returning STATUS_SUCCESS for an IRP the lower driver pended at the shared location is
    // the pass-through bug of facts.md §1.8; it went unreported before a fix of December 4.
    let (returned, _, _, findings) = run(Mode::SkipAndReturnSuccess);
    assert_eq!(returned, Status::SUCCESS);
    assert_eq!(findings, [(Rule::MarkedPendingButNotReturned, Some("Top".to_string()))]);
}

#[test]
fn a_null_dispatch_slot_is_a_bugcheck() {
    let (returned, _, trips, findings) = run(Mode::NullSlot);
    assert_eq!((returned, trips), (Status::INVALID_DEVICE_REQUEST, 0));
    assert_eq!(findings.first().map(|f| f.0), Some(Rule::Bugcheck), "{findings:?}");
}

#[test]
fn the_irql_a_request_may_be_sent_at_depends_on_the_device_and_the_request() {
    use fsfilter::device_type::DISK_FILE_SYSTEM;
    let irql_findings = |irql, device_type| {
        let (_, finished, _, findings) = run(Mode::At { irql, device_type, request: None });
        assert_eq!(finished, Status::SUCCESS);
        findings.into_iter().filter(|f| f.0 == Rule::IrqlTooHigh).collect::<Vec<_>>()
    };
    // Below the file systems a read may go down at DISPATCH_LEVEL (reported before a fix of
    // December 4), not above it.
    assert!(irql_findings(2, FILE_DEVICE_UNKNOWN).is_empty());
    assert_eq!(irql_findings(3, FILE_DEVICE_UNKNOWN), [(Rule::IrqlTooHigh, Some("Top".into()))]);
    // A file system takes a non-paging read at PASSIVE_LEVEL only (facts.md 1.8; APC_LEVEL was
    // accepted before the same fix).
    assert!(irql_findings(0, DISK_FILE_SYSTEM).is_empty());
    assert_eq!(irql_findings(1, DISK_FILE_SYSTEM), [(Rule::IrqlTooHigh, Some("Top".into()))]);
}

#[test]
fn a_file_system_takes_closes_directory_requests_and_paging_io_at_apc_level_at_most() {
    // facts.md §1.8, the dispatch IRQL table: close, directory control and the paging-path
    // read/write/device control/FSCTL run at APC_LEVEL at most; create, set information, flush
    // (and the non-paging transfers, above) at PASSIVE_LEVEL only.
    use fsfilter::device_type::DISK_FILE_SYSTEM;
    const CREATE: u8 = 0x00;
    const CLOSE: u8 = 0x02;
    const WRITE: u8 = 0x04;
    const SET_INFORMATION: u8 = 0x06;
    const FLUSH_BUFFERS: u8 = 0x09;
    const DIRECTORY_CONTROL: u8 = 0x0c;
    const FILE_SYSTEM_CONTROL: u8 = 0x0d;
    let too_high = |irql, major, paging| {
        let request = Some((major, paging));
        let (_, finished, _, findings) =
            run(Mode::At { irql, device_type: DISK_FILE_SYSTEM, request });
        assert_eq!(finished, Status::SUCCESS);
        let found: Vec<_> = findings.into_iter().filter(|f| f.0 == Rule::IrqlTooHigh).collect();
        match found.as_slice() {
            [] => false,
            [(_, driver)] if driver.as_deref() == Some("Top") => true,
            other => panic!("major {major:#x} at {irql}: {other:?}"),
        }
    };
    for major in [CLOSE, DIRECTORY_CONTROL] {
        assert!(!too_high(1, major, false), "major {major:#x} at APC_LEVEL");
        assert!(too_high(2, major, false), "major {major:#x} at DISPATCH_LEVEL");
    }
    for major in [IRP_MJ_READ, WRITE, FILE_SYSTEM_CONTROL] {
        assert!(!too_high(1, major, true), "paging major {major:#x} at APC_LEVEL");
        assert!(too_high(2, major, true), "paging major {major:#x} at DISPATCH_LEVEL");
        assert!(too_high(1, major, false), "non-paging major {major:#x} at APC_LEVEL");
    }
    for major in [CREATE, SET_INFORMATION, FLUSH_BUFFERS] {
        assert!(!too_high(0, major, false), "major {major:#x} at PASSIVE_LEVEL");
        assert!(too_high(1, major, false), "major {major:#x} at APC_LEVEL");
    }
}
