//! A hand-written legacy filter for the file-system tests ("Spy"), in the sfilter pattern
//! (facts.md §1.2, §1.4, §1.7): it attaches to every file system's control device from its
//! `IoRegisterFsRegistrationChange` routine, attaches to new volumes from the mount request's
//! completion, passes everything down, records what it sees, and detaches in
//! `FastIoDetachDevice`.

#![allow(dead_code, reason = "each test file uses part of the helpers")]
#![allow(missing_docs, reason = "test driver")]

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::null_mut;

use fsfilter::Status;
use fsfilter_kernel::irp::{
    IoCallDriver, IoCompleteRequest, IoCopyCurrentIrpStackLocationToNext,
    IoGetCurrentIrpStackLocation, IoMarkIrpPending, IoSetCompletionRoutine,
    IoSkipCurrentIrpStackLocation,
};
use fsfilter_kernel::params::{self, io};
use fsfilter_sim::{Machine, MachineConfig, ServiceSpec, StartType};
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, DRIVER_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT, IRP, KEVENT,
};
use windows_sys::Wdk::Storage::FileSystem::{
    IoGetAttachedDevice, IoIsOperationSynchronous, IoRegisterFsRegistrationChange,
};
use windows_sys::Wdk::System::SystemServices::{
    IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDeleteDevice, IoDetachDevice,
    IoReleaseCancelSpinLock, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

/// One request the spy saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    pub(crate) device: usize,
    pub(crate) major: u8,
    pub(crate) minor: u8,
    pub(crate) irp_flags: u32,
    pub(crate) stack_count: i8,
    pub(crate) mdl: bool,
    pub(crate) user_buffer: bool,
    /// `AssociatedIrp.SystemBuffer` was set.
    pub(crate) system_buffer: bool,
    /// The stack location's `Flags`.
    pub(crate) sl_flags: u8,
    /// The IRP's `RequestorMode` (0 kernel, 1 user).
    pub(crate) requestor_mode: i8,
    pub(crate) fast_io: bool,
    pub(crate) fo: usize,
    pub(crate) fsctl: u32,
    /// The bytes of the stack location's `Parameters` as the spy received them.
    pub(crate) parameters: [u8; 32],
    /// `IoIsOperationSynchronous` of the IRP in the spy's dispatch routine.
    pub(crate) synchronous: bool,
    /// For a create: whether its security context has an `AccessState`, its `DesiredAccess` and
    /// its `FullCreateOptions`.
    pub(crate) create_security: Option<(bool, u32, u32)>,
}

/// What the spy saw of a mount it attached through.
#[derive(Clone, Debug, Default)]
pub(crate) struct MountSeen {
    pub(crate) stack_count: i8,
    pub(crate) irp_flags: u32,
    pub(crate) sl_flags: u8,
    pub(crate) param_vpb: usize,
    pub(crate) param_device: usize,
    pub(crate) real_device: usize,
    pub(crate) status: i32,
    /// `DeviceObject` of the VPB the request carried, after the mount.
    pub(crate) stale_vpb_device: usize,
    /// `RealDevice->Vpb` after the mount.
    pub(crate) real_vpb_after: usize,
    /// `RealDevice->Vpb->DeviceObject` after the mount.
    pub(crate) vdo: usize,
    /// The spy attached a new device to the volume (false: it was attached already).
    pub(crate) attached: bool,
}

#[derive(Default)]
pub(crate) struct SpyState {
    pub(crate) driver: usize,
    pub(crate) seen: Vec<Seen>,
    pub(crate) notified: Vec<(usize, bool)>,
    pub(crate) mounts: Vec<MountSeen>,
    pub(crate) detached: Vec<(usize, usize)>,
    pub(crate) refuse_fast_io: bool,
    /// How the spy passes `FastIoQueryOpen` down (None: it answers FALSE).
    pub(crate) query_open: Option<PassQueryOpen>,
    /// When set, the spy completes every mount request with this status itself, as a file
    /// system that fails the mount would.
    pub(crate) fail_mounts: Option<Status>,
    /// When set, the spy holds every directory change notification on a volume, and sends the
    /// held ones down after the next cleanup it passes down has returned.
    pub(crate) hold_notify: bool,
    /// The notifications held: the device below and the IRP.
    pub(crate) held: Vec<(usize, usize)>,
    /// When set, the spy holds every directory change notification on a volume itself,
    /// cancelable with its own cancel routine, which behaves as this says.
    pub(crate) cancelable: Option<SpyCancel>,
    /// With `cancelable`: at the next cleanup, the spy completes the notifications it still
    /// holds with `STATUS_SUCCESS`, without taking their cancel routine out first.
    pub(crate) complete_held_at_cleanup: bool,
    /// What the spy's cancel routine saw.
    pub(crate) cancels: Vec<CancelSeen>,
    /// When set, the spy completes every cleanup on a volume itself, with `STATUS_SUCCESS`,
    /// without passing it down (the file system never sees the handle's cleanup).
    pub(crate) swallow_cleanup: bool,
    /// When set, the spy sends every read on a volume down with its cancel routine still set
    /// (a queue that made it cancelable and forgot `IoSetCancelRoutine(Irp, NULL)`).
    pub(crate) forward_cancelable_reads: bool,
    /// When set, the spy's dispatch routine waits 1 ms after a request below answered
    /// `STATUS_PENDING` before it returns that status (a DPC may complete the request meanwhile).
    pub(crate) linger_after_pending: bool,
    /// When set, once a read or a control it passed down has returned, the spy allocates this
    /// many MDLs of 256 KiB, page-aligned or not (`IoAllocateMdl`, kept in `mdls`): the
    /// simulator reuses a large block of the same size at once, so the block of a 256 KiB
    /// request's MDL freed meanwhile goes to one of them, which a second free would take.
    pub(crate) mdls_after_call: usize,
    /// The MDLs the spy allocated (`mdls_after_call`), for the test to free.
    pub(crate) mdls: Vec<usize>,
    /// When set, the spy completes every user file-system control on a volume itself with
    /// this status and information, its system buffer (when it has one) filled with 0xAB.
    pub(crate) complete_fsctls: Option<(Status, usize)>,
    /// With `complete_fsctls`: what the dispatch routine returns after completing such a
    /// control (None: the status it completed it with, as a correct driver does;
    /// `STATUS_PENDING`: it marks the IRP pending first, as a correct driver does too).
    pub(crate) fsctl_returns: Option<Status>,
}

/// What the spy's cancel routine does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpyCancel {
    /// Releases the cancel spin lock with `Irp->CancelIrql` and completes the IRP with
    /// `STATUS_CANCELLED`, as a cancel routine must.
    Release,
    /// Completes the IRP without releasing the cancel spin lock.
    KeepLock,
    /// Releases the cancel spin lock to `DISPATCH_LEVEL`, not `Irp->CancelIrql`, and returns
    /// there after completing the IRP.
    ReleaseToDispatch,
}

/// One call of the spy's cancel routine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CancelSeen {
    pub(crate) device: usize,
    pub(crate) irp: usize,
    pub(crate) irql: u8,
    pub(crate) cancel_irql: u8,
    pub(crate) cancel: bool,
    /// `Irp->CancelRoutine` as the routine found it (the I/O manager takes it out first).
    pub(crate) routine_left: bool,
}

/// How the spy passes a `FastIoQueryOpen` IRP to the device below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PassQueryOpen {
    /// At the same location, its `DeviceObject` naming the device below (sfilter).
    SameLocation,
    /// With `IoSkipCurrentIrpStackLocation`, as for `IoCallDriver` (a mistake: the routine is
    /// called directly, so the location moves above the IRP's stack).
    Skipped,
}

thread_local! {
    pub static SPY: RefCell<SpyState> = RefCell::new(SpyState::default());
}

pub(crate) fn spy<R>(f: impl FnOnce(&mut SpyState) -> R) -> R {
    SPY.with(|s| f(&mut s.borrow_mut()))
}

/// The spy's device extension.
#[repr(C)]
struct Ext {
    lower: *mut DEVICE_OBJECT,
    /// 1: attached to a control device; 2: attached to a volume.
    kind: u32,
}

fn ext(device: *const DEVICE_OBJECT) -> &'static mut Ext {
    // SAFETY: one of the spy's devices, created with an Ext.
    unsafe { &mut *(*device).DeviceExtension.cast::<Ext>() }
}

/// True when `device`'s chain (from `device` up) holds a spy device.
fn spy_in_chain(mut device: *mut DEVICE_OBJECT) -> bool {
    let me = spy(|s| s.driver);
    while !device.is_null() {
        // SAFETY: a live device.
        unsafe {
            if (*device).DriverObject as usize == me {
                return true;
            }
            device = (*device).AttachedDevice;
        }
    }
    false
}

fn attach_new(target: *mut DEVICE_OBJECT, kind: u32) -> bool {
    let driver = spy(|s| s.driver) as *const DRIVER_OBJECT;
    let mut me = null_mut();
    // SAFETY: our driver; an unnamed device of the target's type.
    let s = unsafe {
        IoCreateDevice(
            driver,
            size_of::<Ext>() as u32,
            std::ptr::null(),
            (*target).DeviceType,
            0,
            false,
            &mut me,
        )
    };
    if s != 0 {
        return false;
    }
    let mut lower = null_mut();
    // SAFETY: two live devices.
    let s = unsafe { IoAttachDeviceToDeviceStackSafe(me, target, &mut lower) };
    if s != 0 {
        // SAFETY: our device.
        unsafe { IoDeleteDevice(me) };
        return false;
    }
    let e = ext(me);
    e.lower = lower;
    e.kind = kind;
    // SAFETY: our device.
    unsafe { (*me).Flags &= !0x80 };
    true
}

unsafe extern "system" fn spy_notify(cdo: *const DEVICE_OBJECT, active: bool) {
    spy(|s| s.notified.push((cdo as usize, active)));
    if active {
        attach_new(cdo.cast_mut(), 1);
        return;
    }
    let me = spy(|s| s.driver);
    // SAFETY: walking the control device's attachment chain.
    let mut cur = unsafe { (*cdo).AttachedDevice };
    while !cur.is_null() {
        // SAFETY: a live device of the chain.
        unsafe {
            if (*cur).DriverObject as usize == me {
                IoDetachDevice(ext(cur).lower);
                IoDeleteDevice(cur);
                return;
            }
            cur = (*cur).AttachedDevice;
        }
    }
}

unsafe extern "system" fn mount_done(
    _d: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    ctx: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the event of the waiting dispatch routine.
    unsafe { KeSetEvent(ctx.cast(), 0, false) };
    Status::MORE_PROCESSING_REQUIRED.0
}

unsafe extern "system" fn spy_dispatch(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    let e = ext(device);
    // SAFETY: the live IRP in our dispatch routine.
    let (sl, i) = unsafe { (&mut *IoGetCurrentIrpStackLocation(irp), &mut *irp) };
    let fsctl = if sl.MajorFunction == 0x0d && sl.MinorFunction == 0 {
        // SAFETY: the member in use.
        unsafe { io::<params::IoFileSystemControl>(&sl.Parameters) }.FsControlCode
    } else {
        0
    };
    // SAFETY: the union's 32 bytes, read as bytes.
    let parameters = unsafe { std::ptr::from_ref(&sl.Parameters).cast::<[u8; 32]>().read() };
    // SAFETY: the live IRP at the spy's location.
    let synchronous = unsafe { IoIsOperationSynchronous(irp) };
    let create_security = if sl.MajorFunction == 0 {
        // SAFETY: the member of a create.
        let sc = unsafe { io::<params::IoCreate>(&sl.Parameters) }.SecurityContext;
        // SAFETY: the create's security context, live during the create.
        unsafe { sc.as_ref() }
            .map(|c| (!c.AccessState.is_null(), c.DesiredAccess, c.FullCreateOptions))
    } else {
        None
    };
    spy(|s| {
        s.seen.push(Seen {
            device: device as usize,
            major: sl.MajorFunction,
            minor: sl.MinorFunction,
            irp_flags: i.Flags,
            stack_count: i.StackCount,
            mdl: !i.MdlAddress.is_null(),
            user_buffer: !i.UserBuffer.is_null(),
            // SAFETY: the pointer member of the IRP's union.
            system_buffer: !unsafe { i.AssociatedIrp.SystemBuffer }.is_null(),
            sl_flags: sl.Flags,
            requestor_mode: i.RequestorMode,
            fast_io: false,
            fo: sl.FileObject as usize,
            fsctl,
            parameters,
            synchronous,
            create_security,
        })
    });
    let failed = spy(|s| s.fail_mounts);
    if let Some(status) = failed.filter(|_| sl.MajorFunction == 0x0d && sl.MinorFunction == 0x01) {
        i.IoStatus.Anonymous.Status = status.0;
        i.IoStatus.Information = 0;
        // SAFETY: the live IRP, ours to complete.
        unsafe { IoCompleteRequest(irp, 0) };
        return status.0;
    }
    if e.kind == 1 && sl.MajorFunction == 0x0d && sl.MinorFunction == 0x01 {
        // SAFETY: the mount request's parameters.
        let (vpb, target) =
            unsafe { (sl.Parameters.MountVolume.Vpb, sl.Parameters.MountVolume.DeviceObject) };
        // Save the real device before the request goes down: the VPB may be swapped (facts.md
        // §1.4, step 1).
        // SAFETY: the VPB the I/O manager passed.
        let real = unsafe { (*vpb).RealDevice };
        let mut seen = MountSeen {
            stack_count: i.StackCount,
            irp_flags: i.Flags,
            sl_flags: sl.Flags,
            param_vpb: vpb as usize,
            param_device: target as usize,
            real_device: real as usize,
            ..MountSeen::default()
        };
        // SAFETY: zeroed storage for an event, alive until the wait ends.
        let mut event: KEVENT = unsafe { std::mem::zeroed() };
        // SAFETY: our event.
        unsafe { KeInitializeEvent(&mut event, 0, false) };
        // SAFETY: the live IRP with a lower location; our routine and event.
        unsafe {
            IoCopyCurrentIrpStackLocationToNext(irp);
            IoSetCompletionRoutine(
                irp,
                mount_done,
                (&mut event as *mut KEVENT).cast(),
                true,
                true,
                true,
            );
        }
        // SAFETY: our lower device.
        let s = unsafe { IoCallDriver(e.lower, irp) };
        if s == Status::PENDING.0 {
            // SAFETY: our event.
            unsafe {
                KeWaitForSingleObject(
                    (&event as *const KEVENT).cast(),
                    0,
                    0,
                    false,
                    std::ptr::null(),
                )
            };
        }
        // SAFETY: the IRP is ours again (the routine stopped completion).
        let status = unsafe { (*irp).IoStatus.Anonymous.Status };
        seen.status = status;
        // SAFETY: the VPBs and devices involved.
        unsafe {
            seen.stale_vpb_device = (*vpb).DeviceObject as usize;
            let now = (*real).Vpb;
            seen.real_vpb_after = now as usize;
            seen.vdo = (*now).DeviceObject as usize;
            if status >= 0 && !spy_in_chain((*now).DeviceObject) {
                seen.attached = attach_new((*now).DeviceObject, 2);
            }
        }
        spy(|s| s.mounts.push(seen));
        // SAFETY: completing the IRP our routine held.
        unsafe { IoCompleteRequest(irp, 0) };
        return status;
    }
    let user_fsctl = sl.MajorFunction == 0x0d && sl.MinorFunction == 0;
    if let Some((status, information)) = spy(|s| s.complete_fsctls).filter(|_| e.kind == 2) {
        if user_fsctl {
            // SAFETY: the pointer member of the IRP's union.
            let sysbuf = unsafe { i.AssociatedIrp.SystemBuffer }.cast::<u8>();
            // SAFETY: the member of a file-system control.
            let out = unsafe { io::<params::IoFileSystemControl>(&sl.Parameters) }
                .OutputBufferLength as usize;
            if !sysbuf.is_null() {
                // SAFETY: a buffered request's system buffer holds the output length.
                unsafe { std::ptr::write_bytes(sysbuf, 0xAB, out) };
            }
            i.IoStatus.Anonymous.Status = status.0;
            i.IoStatus.Information = information;
            let returns = spy(|s| s.fsctl_returns).unwrap_or(status);
            if returns == Status::PENDING {
                // SAFETY: the live IRP at the spy's location, in its dispatch routine.
                unsafe { IoMarkIrpPending(irp) };
            }
            // SAFETY: the live IRP, ours to complete.
            unsafe { IoCompleteRequest(irp, 0) };
            return returns.0;
        }
    }
    let hold = spy(|s| s.hold_notify) && e.kind == 2;
    let cleanup = sl.MajorFunction == 0x12;
    let notification = sl.MajorFunction == 0x0c && sl.MinorFunction == 0x02;
    if e.kind == 2 && notification && spy(|s| s.cancelable.is_some()) {
        // SAFETY: the live IRP, kept pending and cancelable (`IoSetCancelRoutine`, an
        // interlocked exchange of the field in the WDK).
        unsafe {
            IoMarkIrpPending(irp);
            (*irp).CancelRoutine = Some(spy_cancel);
        }
        spy(|s| s.held.push((e.lower as usize, irp as usize)));
        return Status::PENDING.0;
    }
    if e.kind == 2 && cleanup && spy(|s| s.swallow_cleanup) {
        i.IoStatus.Anonymous.Status = Status::SUCCESS.0;
        i.IoStatus.Information = 0;
        // SAFETY: the live IRP, ours to complete.
        unsafe { IoCompleteRequest(irp, 0) };
        return Status::SUCCESS.0;
    }
    if e.kind == 2 && cleanup && spy(|s| s.complete_held_at_cleanup) {
        for (_, held) in spy(|s| std::mem::take(&mut s.held)) {
            // SAFETY: a notification the spy holds, completed with its cancel routine still
            // set (the mistake under test).
            unsafe {
                (*(held as *mut IRP)).IoStatus.Anonymous.Status = Status::SUCCESS.0;
                IoCompleteRequest(held as *mut IRP, 0);
            }
        }
    }
    if e.kind == 2 && sl.MajorFunction == 0x03 && spy(|s| s.forward_cancelable_reads) {
        // SAFETY: the live IRP; the mistake under test: its cancel routine stays set.
        unsafe { (*irp).CancelRoutine = Some(spy_cancel) };
    }
    if hold && sl.MajorFunction == 0x0c && sl.MinorFunction == 0x02 {
        // SAFETY: the live IRP, kept pending until the next cleanup has gone down.
        unsafe { IoMarkIrpPending(irp) };
        spy(|s| s.held.push((e.lower as usize, irp as usize)));
        return Status::PENDING.0;
    }
    let sl_major = sl.MajorFunction;
    // SAFETY: the live IRP; our lower device.
    let status = unsafe {
        IoSkipCurrentIrpStackLocation(irp);
        IoCallDriver(e.lower, irp)
    };
    let wants_mdls = matches!(sl_major, 0x03 | 0x0d | 0x0e) && e.kind == 2;
    for n in 0..if wants_mdls { spy(|s| s.mdls_after_call) } else { 0 } {
        // 64 pages for even n, 65 for odd (a buffer that does not start a page).
        let len = 0x4_0000;
        let va = if n % 2 == 0 { 0x100_0000usize } else { 0x100_0f00 };
        // SAFETY: an MDL the spy frees later; the address is only recorded.
        let m = unsafe {
            windows_sys::Wdk::System::SystemServices::IoAllocateMdl(
                va as *const c_void,
                len,
                false,
                false,
                null_mut(),
            )
        };
        spy(|s| s.mdls.push(m as usize));
    }
    if status == Status::PENDING.0 && spy(|s| s.linger_after_pending) {
        let interval: i64 = -10_000;
        // SAFETY: a relative interval on our stack.
        unsafe {
            windows_sys::Wdk::System::SystemServices::KeDelayExecutionThread(0, false, &interval)
        };
    }
    if hold && cleanup {
        for (lower, held) in spy(|s| std::mem::take(&mut s.held)) {
            // SAFETY: a notification the spy held pending (a location of its own below, so
            // the one it marked pending stays its own); its lower device.
            unsafe {
                IoCopyCurrentIrpStackLocationToNext(held as *mut IRP);
                IoCallDriver(lower as *mut DEVICE_OBJECT, held as *mut IRP);
            }
        }
    }
    status
}

/// The spy's cancel routine for the notifications it holds cancelable.
unsafe extern "system" fn spy_cancel(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: the IRP being cancelled, as IoCancelIrp passes it.
    let i = unsafe { &mut *irp };
    let seen = CancelSeen {
        device: device as usize,
        irp: irp as usize,
        irql: fsfilter_kernel::irql::current().0,
        cancel_irql: i.CancelIrql,
        cancel: i.Cancel,
        routine_left: i.CancelRoutine.is_some(),
    };
    let mode = spy(|s| {
        s.cancels.push(seen);
        s.held.retain(|h| h.1 != irp as usize);
        s.cancelable
    });
    match mode {
        // SAFETY: the lock IoCancelIrp acquired, with the IRQL it saved.
        Some(SpyCancel::Release) => unsafe { IoReleaseCancelSpinLock(i.CancelIrql) },
        // SAFETY: the lock IoCancelIrp acquired; the wrong IRQL is the mistake under test.
        Some(SpyCancel::ReleaseToDispatch) => unsafe { IoReleaseCancelSpinLock(2) },
        _ => {}
    }
    i.IoStatus.Anonymous.Status = Status::CANCELLED.0;
    i.IoStatus.Information = 0;
    // SAFETY: the IRP the spy held, completed once.
    unsafe { IoCompleteRequest(irp, 0) };
}

fn lower_fast_io(device: *const DEVICE_OBJECT) -> (*mut DEVICE_OBJECT, &'static FAST_IO_DISPATCH) {
    let lower = ext(device).lower;
    // SAFETY: the lower device's driver and its table (the native file systems have one).
    unsafe { (lower, &*(*(*lower).DriverObject).FastIoDispatch) }
}

unsafe extern "system" fn spy_fast_read(
    fo: *const FILE_OBJECT,
    off: *const i64,
    len: u32,
    wait: bool,
    key: u32,
    buf: *mut c_void,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    spy(|s| {
        s.seen.push(Seen {
            device: device as usize,
            major: 3,
            fast_io: true,
            fo: fo as usize,
            ..Seen::default()
        })
    });
    if spy(|s| s.refuse_fast_io) {
        return false;
    }
    let (lower, t) = lower_fast_io(device);
    match t.FastIoRead {
        // SAFETY: passing the call down with the lower device.
        Some(f) => unsafe { f(fo, off, len, wait, key, buf, iosb, lower) },
        None => false,
    }
}

unsafe extern "system" fn spy_fast_write(
    fo: *const FILE_OBJECT,
    off: *const i64,
    len: u32,
    wait: bool,
    key: u32,
    buf: *const c_void,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    spy(|s| {
        s.seen.push(Seen {
            device: device as usize,
            major: 4,
            fast_io: true,
            fo: fo as usize,
            ..Seen::default()
        })
    });
    if spy(|s| s.refuse_fast_io) {
        return false;
    }
    let (lower, t) = lower_fast_io(device);
    match t.FastIoWrite {
        // SAFETY: passing the call down with the lower device.
        Some(f) => unsafe { f(fo, off, len, wait, key, buf, iosb, lower) },
        None => false,
    }
}

unsafe extern "system" fn spy_check_if_possible(
    fo: *const FILE_OBJECT,
    off: *const i64,
    len: u32,
    wait: bool,
    key: u32,
    read: bool,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    spy(|s| {
        s.seen.push(Seen {
            device: device as usize,
            major: 0xF3,
            fast_io: true,
            fo: fo as usize,
            ..Seen::default()
        })
    });
    let (lower, t) = lower_fast_io(device);
    match t.FastIoCheckIfPossible {
        // SAFETY: passing the call down with the lower device.
        Some(f) => unsafe { f(fo, off, len, wait, key, read, iosb, lower) },
        None => false,
    }
}

unsafe extern "system" fn spy_query_open(
    irp: *mut IRP,
    info: *mut windows_sys::Wdk::Storage::FileSystem::FILE_NETWORK_OPEN_INFORMATION,
    device: *const DEVICE_OBJECT,
) -> bool {
    spy(|s| {
        s.seen.push(Seen { device: device as usize, major: 0xF2, fast_io: true, ..Seen::default() })
    });
    let Some(how) = spy(|s| s.query_open) else { return false };
    let (lower, t) = lower_fast_io(device);
    let Some(f) = t.FastIoQueryOpen else { return false };
    match how {
        PassQueryOpen::SameLocation => {
            // SAFETY: the I/O manager's IRP at our location; the lower device's routine.
            unsafe {
                let location = IoGetCurrentIrpStackLocation(irp);
                (*location).DeviceObject = lower;
                let r = f(irp, info, lower);
                (*location).DeviceObject = device.cast_mut();
                r
            }
        }
        // SAFETY: as above, with the location moved (the mistake under test) and moved back.
        PassQueryOpen::Skipped => unsafe {
            IoSkipCurrentIrpStackLocation(irp);
            let r = f(irp, info, lower);
            fsfilter_kernel::irp::IoSetNextIrpStackLocation(irp);
            r
        },
    }
}

unsafe extern "system" fn spy_detach(source: *const DEVICE_OBJECT, target: *const DEVICE_OBJECT) {
    spy(|s| s.detached.push((source as usize, target as usize)));
    // SAFETY: our device attached to `target` (facts.md §1.7: detach, then delete).
    unsafe {
        IoDetachDevice(target.cast_mut());
        IoDeleteDevice(source);
    }
}

static SPY_FAST_IO: FAST_IO_DISPATCH = FAST_IO_DISPATCH {
    SizeOfFastIoDispatch: size_of::<FAST_IO_DISPATCH>() as u32,
    FastIoCheckIfPossible: Some(spy_check_if_possible),
    FastIoRead: Some(spy_fast_read),
    FastIoWrite: Some(spy_fast_write),
    FastIoQueryBasicInfo: None,
    FastIoQueryStandardInfo: None,
    FastIoLock: None,
    FastIoUnlockSingle: None,
    FastIoUnlockAll: None,
    FastIoUnlockAllByKey: None,
    FastIoDeviceControl: None,
    AcquireFileForNtCreateSection: None,
    ReleaseFileForNtCreateSection: None,
    FastIoDetachDevice: Some(spy_detach),
    FastIoQueryNetworkOpenInfo: None,
    AcquireForModWrite: None,
    MdlRead: None,
    MdlReadComplete: None,
    PrepareMdlWrite: None,
    MdlWriteComplete: None,
    FastIoReadCompressed: None,
    FastIoWriteCompressed: None,
    MdlReadCompleteCompressed: None,
    MdlWriteCompleteCompressed: None,
    FastIoQueryOpen: Some(spy_query_open),
    ReleaseForModWrite: None,
    AcquireForCcFlush: None,
    ReleaseForCcFlush: None,
};

unsafe extern "system" fn spy_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    spy(|s| s.driver = driver as usize);
    // SAFETY: our driver object during DriverEntry.
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(spy_dispatch);
    }
    d.FastIoDispatch = (&raw const SPY_FAST_IO).cast_mut();
    // SAFETY: our driver and routine.
    unsafe { IoRegisterFsRegistrationChange(driver, Some(spy_notify)) }
}

/// A machine with the spy installed boot-start in FSFilter Activity Monitor (it loads before
/// the boot file systems register, so it sees every control device).
pub(crate) fn machine_with_spy(seed: u64) -> Machine {
    SPY.with(|s| *s.borrow_mut() = SpyState::default());
    let mut m = Machine::new(MachineConfig { seed });
    let mut spec = ServiceSpec::new("Spy", spy_entry, "legacy");
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Activity Monitor".into());
    m.install(spec);
    m
}

/// A plain machine.
pub(crate) fn machine(seed: u64) -> Machine {
    SPY.with(|s| *s.borrow_mut() = SpyState::default());
    Machine::new(MachineConfig { seed })
}

/// The top of a device's stack.
pub(crate) fn top(d: *mut DEVICE_OBJECT) -> *mut DEVICE_OBJECT {
    // SAFETY: a live device.
    unsafe { IoGetAttachedDevice(d) }
}
