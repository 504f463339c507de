//! IRPs: allocation with stack locations, `IofCallDriver`, and `IofCompleteRequest` running
//! completion routines from the lowest location upward (facts.md §1.8), with the verifier's checks
//! on pending, double completion and unloaded code.

use std::collections::VecDeque;
use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, IO_STACK_LOCATION, IRP, KEVENT};
use windows_sys::Win32::Foundation::NTSTATUS;

use crate::events::Rule;
use crate::files::Released;
use crate::ids::{ImageId, RequestId};
use crate::kernel::{self, Entered, FastMap, Kernel, run_entered};
use crate::mem::{Block, obj};

/// `SL_PENDING_RETURNED`.
pub const SL_PENDING_RETURNED: u8 = 0x01;
/// `SL_INVOKE_ON_CANCEL`.
pub const SL_INVOKE_ON_CANCEL: u8 = 0x20;
/// `SL_INVOKE_ON_SUCCESS`.
pub const SL_INVOKE_ON_SUCCESS: u8 = 0x40;
/// `SL_INVOKE_ON_ERROR`.
pub const SL_INVOKE_ON_ERROR: u8 = 0x80;
/// `IO_TYPE_IRP`.
const IO_TYPE_IRP: i16 = 6;
/// Freed IRPs kept before their memory is reused, so a late touch reads a dead IRP.
const QUARANTINE: usize = 64;

/// The real signature of a completion routine.
pub type CompletionRoutine =
    unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP, *mut c_void) -> NTSTATUS;
/// The signature of a dispatch routine.
pub type DispatchRoutine = unsafe extern "system" fn(*const DEVICE_OBJECT, *mut IRP) -> NTSTATUS;

/// What the I/O manager does when an IRP completes past its top location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A driver allocated it (`IoAllocateIrp`) and must stop completion with
    /// `STATUS_MORE_PROCESSING_REQUIRED` and free it.
    DriverOwned,
    /// A user-mode request: record the result, free the IRP.
    Request(RequestId),
    /// An I/O-manager request waited on by kernel code: copy the status to `UserIosb`, signal
    /// `UserEvent`, free the IRP.
    Synchronous,
    /// An overlapped user-mode request on a device handle (`Machine::device_control_then`):
    /// free the IRP, then queue its caller's completion (`syscalls::overlapped_done`, by this
    /// number), as the I/O manager queues a completion packet or sets the `OVERLAPPED` event.
    Overlapped(u64),
}

impl Finish {
    /// The user request of an IRP that finishes this way (none for kernel code's IRPs).
    pub fn request(self) -> Option<RequestId> {
        match self {
            Finish::Request(r) => Some(r),
            Finish::DriverOwned | Finish::Synchronous | Finish::Overlapped(_) => None,
        }
    }
}

/// Where an IRP is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrpState {
    /// Allocated, possibly in flight.
    Active,
    /// Completion ran to the top.
    Completed,
    /// Freed.
    Freed,
}

/// What the simulator knows about an IRP.
pub struct IrpInfo {
    block: Block,
    /// Life state.
    pub state: IrpState,
    /// What happens at the top.
    pub finish: Finish,
    /// The image that allocated it (None: the I/O manager).
    pub allocator: Option<ImageId>,
    /// `SL_PENDING_RETURNED` seen at each location during completion (bit = location number).
    pub marks: u64,
    /// Locations completion has walked past (bit = location number).
    pub walked: u64,
    /// Locations whose dispatch routine has returned, awaiting the walk (bit = location number).
    pub expect: u64,
    /// Of those, the ones that returned `STATUS_PENDING`.
    pub expect_pending: u64,
    /// Completion is under way (between IofCompleteRequest and the top, or halted).
    pub completing: bool,
    /// The completion walk is running now: not halted by a routine, not done. An image that
    /// goes inside the walk (the last reference of `IoSetCompletionRoutineEx` released after its
    /// routine returned) does not leave this IRP halted.
    pub walking: bool,
    /// `IoCompleteRequest` was called for the IRP since the completion walk last stepped: set
    /// inside a completion routine, legal only if the routine then returns
    /// `STATUS_MORE_PROCESSING_REQUIRED`.
    pub completed_in_routine: bool,
    /// A dispatch routine returned another status than `STATUS_PENDING` while the IRP was
    /// neither completed past its location nor pended below it (reported once per IRP).
    pub returned_unfinished: bool,
    /// Completion routines set through `IoSetCompletionRoutineEx`, by location, with the
    /// device they keep referenced.
    pub ex_routines: Vec<ExRoutine>,
    /// A system buffer the I/O manager allocated (freed at completion).
    pub system_buffer: Option<Block>,
    /// Where the system buffer's contents go at completion (caller buffer, length).
    pub copy_back: Option<(usize, usize)>,
    /// A user request still outstanding when its system service returned holds a reference on
    /// its file object (`OriginalFileObject`) until it completes, as the I/O manager's does: the
    /// handle's close cannot send `IRP_MJ_CLOSE` under it ([`Kernel::hold_file_while_pending`]).
    pub holds_file: bool,
    /// What a user request outstanding when its system service returned needs until it
    /// completes (its buffers, a pattern): freed with the IRP ([`Kernel::keep_for_request`]).
    pub kept: Vec<Box<dyn std::any::Any>>,
}

/// A routine set with `IoSetCompletionRoutineEx`: the I/O manager references the device object
/// until the routine has run, so the driver cannot unload under it.
#[derive(Clone, Copy)]
pub struct ExRoutine {
    /// The stack location (1-based) whose routine this is.
    pub location: i8,
    /// The driver's routine.
    pub routine: CompletionRoutine,
    /// Its context.
    pub context: *mut c_void,
    /// The referenced device.
    pub device: *mut DEVICE_OBJECT,
    /// The image of the device's driver, whose code the routine is (None: not a device).
    pub image: Option<ImageId>,
}

/// The IRP table.
#[derive(Default)]
pub struct Irps {
    /// IRPs by address.
    pub map: FastMap<usize, IrpInfo>,
    /// Blocks of freed IRPs out of the quarantine, by stack size.
    free: Vec<Vec<Block>>,
    quarantine: VecDeque<(i8, Block)>,
    /// What completion saw of each IRP address when it was last freed: (walked, marks). A
    /// dispatch routine that completed its IRP synchronously returns after the IRP was freed; its
    /// pending check reads these. Only an address missing from `map` is looked up here, so an
    /// entry is not removed when its address is allocated again (the next free replaces it): IRP
    /// blocks are recycled, never returned, so the addresses are few.
    retired: FastMap<usize, (u64, u64)>,
    /// IRPs allocated so far.
    pub allocated: u64,
    /// Empty routine lists of freed IRPs, for the next ones (most IRPs get one).
    spare_ex: Vec<Vec<ExRoutine>>,
    /// The cancel spin lock is held (`IoAcquireCancelSpinLock`, or `IoCancelIrp` calling a
    /// cancel routine): [`crate::cancel`].
    pub cancel_lock: bool,
    /// The `IoCallDriver` calls whose dispatch routine is running, innermost last. There are no
    /// OS threads (a wait runs other work inside it), so they nest: a call returns before the
    /// calls it was made inside.
    frames: Vec<CallFrame>,
}

/// An `IoCallDriver` whose dispatch routine is running ([`Irps::frames`]): what completion saw
/// of the IRP when it walked past the stack location the routine got, as Driver Verifier's I/O
/// verification keeps for each call (bug check 0xC9's page, WDM DRIVER ERROR 0x224).
#[derive(Clone, Copy)]
struct CallFrame {
    /// The IRP.
    irp: usize,
    /// The stack location the dispatch routine got (shared with the caller's call when the
    /// caller skipped its own location).
    level: i8,
    /// `IoStatus.Status` when completion first walked past `level` while the routine ran: what
    /// the driver (or one below it) completed the IRP with, before the routine the caller set in
    /// that location ran.
    walked: Option<NTSTATUS>,
}

/// How many empty routine lists [`Irps`] keeps.
const SPARE_EX_KEPT: usize = 16;

fn stack_base(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    irp.wrapping_add(1).cast()
}

/// The location numbered `n` (1-based), as the I/O manager numbers them.
fn location(irp: *mut IRP, n: i8) -> *mut IO_STACK_LOCATION {
    stack_base(irp).wrapping_add((n as usize).wrapping_sub(1))
}

impl Kernel {
    /// IRPs whose completion walk a routine halted (`STATUS_MORE_PROCESSING_REQUIRED`) at a
    /// location of a device of `driver`, and that nobody completed again since.
    pub(crate) fn irps_halted_by(&self, driver: crate::ids::DriverId) -> usize {
        self.irps
            .map
            .iter()
            .filter(|(_, info)| info.completing && !info.walking && info.state == IrpState::Active)
            .filter(|&(&irp, _)| {
                let irp = irp as *mut IRP;
                // SAFETY: a live IRP of this machine (it is in the table).
                let i = unsafe { &*irp };
                let at = i.CurrentLocation;
                if at < 1 || at > i.StackCount {
                    return false;
                }
                // SAFETY: a location inside the IRP's stack (checked above).
                let device = unsafe { (*location(irp, at)).DeviceObject };
                self.objects
                    .device_id(device)
                    .is_some_and(|d| self.objects.device(d).driver == driver)
            })
            .count()
    }
}

/// `&mut Irp->Tail.Overlay.CurrentStackLocation`.
///
/// # Safety
/// `irp` must be a live IRP of this machine.
unsafe fn current_slot<'a>(irp: *mut IRP) -> &'a mut *mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees a live IRP.
    let i = unsafe { obj(irp) };
    // SAFETY: `Overlay` is the member the I/O manager uses for IRPs in flight.
    let overlay = unsafe { &mut i.Tail.Overlay };
    // SAFETY: `CurrentStackLocation` is the member in use.
    unsafe { &mut overlay.Anonymous2.Anonymous.CurrentStackLocation }
}

impl Kernel {
    /// Allocates an IRP with `stack_size` locations, initialized as `IoInitializeIrp` does.
    pub fn allocate_irp(
        &mut self,
        stack_size: i8,
        finish: Finish,
        allocator: Option<ImageId>,
    ) -> *mut IRP {
        let stack_size = stack_size.max(1);
        let size = size_of::<IRP>() + stack_size as usize * size_of::<IO_STACK_LOCATION>();
        let block = match self.irps.free.get_mut(stack_size as usize).and_then(Vec::pop) {
            Some(b) => {
                // SAFETY: the block holds `size` bytes; reused blocks are zeroed again.
                unsafe { std::ptr::write_bytes(b.ptr(), 0, b.size()) };
                b
            }
            None => Block::zeroed(size),
        };
        let irp = block.ptr().cast::<IRP>();
        // SAFETY: a zeroed block sized for the IRP and its stack.
        let i = unsafe { obj(irp) };
        i.Type = IO_TYPE_IRP;
        i.Size = size as u16;
        i.StackCount = stack_size;
        i.CurrentLocation = stack_size + 1;
        // The I/O manager's own IRPs (system services, IoBuild*Request, mounts, closes, paging
        // I/O) carry the thread that builds them (WRK: `Irp->Tail.Overlay.Thread =
        // PsGetCurrentThread()`); `IoAllocateIrp` leaves it NULL (docs/simulator.md, "Processes").
        if !matches!(finish, Finish::DriverOwned) {
            i.Tail.Overlay.Thread = crate::process::ethread(self.thread) as _;
        }
        // SAFETY: a live IRP.
        *unsafe { current_slot(irp) } = location(irp, stack_size + 1);
        self.irps.allocated += 1;
        self.irps.map.insert(
            irp as usize,
            IrpInfo {
                block,
                state: IrpState::Active,
                finish,
                allocator,
                marks: 0,
                walked: 0,
                expect: 0,
                expect_pending: 0,
                completing: false,
                walking: false,
                completed_in_routine: false,
                returned_unfinished: false,
                ex_routines: self.irps.spare_ex.pop().unwrap_or_default(),
                system_buffer: None,
                copy_back: None,
                holds_file: false,
                kept: Vec::new(),
            },
        );
        irp
    }

    /// Gives the caller of user request `rid`, which its service returned `STATUS_PENDING` for,
    /// what `read` takes from the caller's buffers once the request completes, given its final
    /// status and information ([`crate::requests::OverlappedResult::data`]): at once when it
    /// completed already, else at its completion (the request's [`CallerView`]; the buffers
    /// `read` owns are freed with the IRP, as [`Kernel::keep_for_request`]'s are).
    pub(crate) fn overlapped_read(&mut self, rid: RequestId, read: OverlappedRead) {
        if let Some(o) = self.requests.overlapped_mut(rid) {
            o.data = read(o.status, o.information);
            return;
        }
        let view = self
            .irps
            .map
            .values_mut()
            .find(|i| i.finish == Finish::Request(rid) && i.state == IrpState::Active)
            .and_then(|i| i.kept.iter_mut().rev().find_map(|b| b.downcast_mut::<CallerView>()));
        if let Some(view) = view {
            view.read = Some(read);
        }
    }

    /// Ties `item` (a buffer the caller passed, a pattern) to the user request `rid`, outstanding
    /// when its system service returned: it is freed with the request's IRP, once the request
    /// completes (or with the machine), where it was leaked before.
    pub(crate) fn keep_for_request(&mut self, rid: RequestId, item: Box<dyn std::any::Any>) {
        let found = self
            .irps
            .map
            .values_mut()
            .find(|i| i.finish == Finish::Request(rid) && i.state == IrpState::Active);
        if let Some(info) = found {
            info.kept.push(item);
        }
    }

    /// A user request outstanding when its system service returns (`STATUS_PENDING`) keeps its
    /// file object referenced until it completes (on Windows every request does; the simulator's
    /// synchronous ones need not, as their caller's handle outlives them). The reference goes at
    /// completion, and when it was the last the close is sent from a worker.
    pub(crate) fn hold_file_while_pending(&mut self, irp: *mut IRP) {
        let Some(info) = self.irps.map.get_mut(&(irp as usize)) else { return };
        if info.state != IrpState::Active || info.holds_file {
            return;
        }
        info.holds_file = true;
        // SAFETY: a live IRP of the table.
        let tail = unsafe { &(*irp).Tail };
        // SAFETY: the I/O manager's member of the tail, set for every user request.
        let fo = unsafe { tail.Overlay }.OriginalFileObject as usize;
        if fo != 0 {
            self.file_reference(fo);
        }
    }

    /// Gives an IRP a system buffer the I/O manager frees at completion, copying it to
    /// `copy_back` (address, length) first when set.
    pub fn irp_system_buffer(
        &mut self,
        irp: *mut IRP,
        block: Block,
        copy_back: Option<(usize, usize)>,
    ) {
        if let Some(info) = self.irps.map.get_mut(&(irp as usize)) {
            info.system_buffer = Some(block);
            info.copy_back = copy_back;
        }
    }

    /// `IoFreeIrp`.
    #[allow(
        clippy::not_unsafe_ptr_arg_deref,
        reason = "the IRP and device are looked up in the simulator's tables before any access; unknown pointers are reported, not dereferenced"
    )]
    pub fn free_irp(&mut self, irp: *mut IRP) {
        let Some(info) = self.irps.map.get_mut(&(irp as usize)) else {
            self.report_current(
                Rule::BadPoolFree,
                format!("IoFreeIrp on {irp:p}, which is not an IRP"),
            );
            return;
        };
        if info.state == IrpState::Freed {
            self.report_current(Rule::BadPoolFree, "IoFreeIrp on an IRP freed before");
            return;
        }
        info.state = IrpState::Freed;
        let Some(info) = self.irps.map.remove(&(irp as usize)) else { return };
        self.release_irp(irp, info);
    }

    /// Stage two's end for an IRP the I/O manager frees itself, with one lookup of the IRP: a
    /// buffered request's output copied back to the caller, the system buffer and the IRP's
    /// MDLs freed, then the IRP (`IoFreeIrp`).
    fn retire_irp(&mut self, irp: *mut IRP) {
        let Some(mut info) = self.irps.map.remove(&(irp as usize)) else { return };
        // SAFETY: a live IRP at the end of its completion.
        let i = unsafe { obj(irp) };
        if let (Some(b), Some((dst, len))) = (info.system_buffer.take(), info.copy_back.take()) {
            // SAFETY: reading the status member.
            let status = unsafe { i.IoStatus.Anonymous.Status };
            if copies_system_buffer(Status(status)) {
                let n = i.IoStatus.Information.min(len).min(b.size());
                if dst != 0 && n > 0 {
                    // SAFETY: the caller's buffer holds `len` >= n bytes; the block `size`.
                    unsafe { std::ptr::copy_nonoverlapping(b.ptr(), dst as *mut u8, n) };
                }
            }
        }
        if let Finish::Request(rid) = info.finish {
            self.caller_finds(rid, i, &mut info.kept);
        }
        let mut m = i.MdlAddress;
        while !m.is_null() {
            // SAFETY: an MDL of the IRP's chain.
            let next = unsafe { (*m).Next };
            self.free_mdl(m);
            m = next;
        }
        i.MdlAddress = std::ptr::null_mut();
        self.release_irp(irp, info);
    }

    /// Records what the caller of user request `rid` finds ([`crate::requests::OverlappedResult`])
    /// when its IRP `i` completes, if its service returned before ([`CallerView`]): after the
    /// system buffer was copied back.
    fn caller_finds(&mut self, rid: RequestId, i: &IRP, kept: &mut Vec<Box<dyn std::any::Any>>) {
        let Some(at) = kept.iter().rposition(|b| b.is::<CallerView>()) else { return };
        let Ok(view) = kept.swap_remove(at).downcast::<CallerView>() else { return };
        // SAFETY: reading the status member.
        let status = Status(unsafe { i.IoStatus.Anonymous.Status });
        let information = i.IoStatus.Information;
        let data = view.read.map(|read| read(status, information)).unwrap_or_default();
        // IopCompleteRequest leaves the caller's status block alone for an error of a
        // synchronous request.
        let written = !(status.is_error() && view.synchronous);
        let iosb = written.then_some(crate::syscalls::IoStatusBlock { status, information });
        let result = crate::requests::OverlappedResult { status, information, iosb, data };
        self.requests.set_overlapped(rid, result);
    }

    /// The end of `IoFreeIrp` once the IRP left the table: what completion saw of it is kept
    /// for a late pending check, its memory waits in the quarantine.
    fn release_irp(&mut self, irp: *mut IRP, mut info: IrpInfo) {
        if self.io_call.is_some_and(|c| c.irp == irp as usize) {
            self.io_call = None;
        }
        self.irps.retired.insert(irp as usize, (info.walked, info.marks));
        if self.irps.spare_ex.len() < SPARE_EX_KEPT {
            let mut routines = std::mem::take(&mut info.ex_routines);
            routines.clear();
            self.irps.spare_ex.push(routines);
        }
        // SAFETY: the IRP's block is still allocated.
        let count = unsafe { (*irp).StackCount };
        self.irps.quarantine.push_back((count, info.block));
        if self.irps.quarantine.len() > QUARANTINE {
            if let Some((n, b)) = self.irps.quarantine.pop_front() {
                // A stack count no IRP is allocated with (a driver wrote it) files the block
                // where it is never reused, as the count is all that says how large it is.
                let n = usize::try_from(n).unwrap_or(0);
                if self.irps.free.len() <= n {
                    self.irps.free.resize_with(n + 1, Vec::new);
                }
                self.irps.free[n].push(b);
            }
        }
    }

    fn irp_known(&mut self, irp: *mut IRP, what: &str) -> bool {
        match self.irps.map.get(&(irp as usize)) {
            Some(i) if i.state != IrpState::Freed => true,
            _ => {
                self.report_current(
                    Rule::Bugcheck,
                    format!("{what} on {irp:p}, which is not a live IRP"),
                );
                false
            }
        }
    }
}

/// `STATUS_VERIFY_REQUIRED`.
const STATUS_VERIFY_REQUIRED: Status = Status::from_bits(0x8000_0016);

/// Whether completion copies a buffered input operation's system buffer to the caller's buffer
/// for a request that ended with `status`: not for an error, nor for `STATUS_VERIFY_REQUIRED`
/// (WRK `IopCompleteRequest`), a warning otherwise included.
pub(crate) fn copies_system_buffer(status: Status) -> bool {
    !status.is_error() && status != STATUS_VERIFY_REQUIRED
}

/// `IofCallDriver`: moves to the next stack location and calls the device's dispatch routine.
#[allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "the IRP and device are looked up in the simulator's tables before any access; unknown pointers are reported, not dereferenced"
)]
pub fn call_driver(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    type Prepared = (DispatchRoutine, ImageId, i8, Entered, u8);
    let prepared = kernel::with(|k| -> Result<Prepared, NTSTATUS> {
        if k.crashed.is_some() {
            return Err(Status::INVALID_DEVICE_STATE.0);
        }
        let request = match k.irps.map.get_mut(&(irp as usize)) {
            Some(info) if info.state != IrpState::Freed => {
                // A trip down starts clean at the location it enters and below: an IRP a
                // completion routine reclaimed (STATUS_MORE_PROCESSING_REQUIRED) and sends down
                // again, to retry it or for the next part of a transfer, carries the last trip's
                // walk and pending records there.
                // SAFETY: a live IRP.
                let level = unsafe { (*irp).CurrentLocation }.wrapping_sub(1);
                let here_and_below = (1u64 << (level as u32 & 63)).wrapping_mul(2).wrapping_sub(1);
                if (info.walked | info.expect) & here_and_below != 0 {
                    info.walked &= !here_and_below;
                    info.marks &= !here_and_below;
                    info.expect &= !here_and_below;
                    info.expect_pending &= !here_and_below;
                }
                info.finish.request()
            }
            _ => {
                k.irp_known(irp, "IoCallDriver");
                return Err(Status::INVALID_DEVICE_STATE.0);
            }
        };
        let Some(dev) = k.objects.device_id(device) else {
            k.report_current(
                Rule::Bugcheck,
                format!("IoCallDriver to {device:p}, which is not a device object"),
            );
            return Err(Status::INVALID_PARAMETER.0);
        };
        let info = k.objects.device(dev);
        let driver = info.driver;
        let image = k.objects.driver(driver).image;
        // SAFETY: a live IRP (checked above).
        let closing = unsafe { (*irp).Flags } & crate::nt::irp_flags::CLOSE_OPERATION != 0;
        if info.deleted && !closing {
            // Not the I/O manager's cleanup or close of a file object still open on a device
            // deleted meanwhile (delete-pending), which is how that device's last reference goes.
            let name = k.objects.driver(driver).service.clone();
            k.report_current(
                Rule::CallToDeletedDevice,
                format!("IoCallDriver to a deleted device of {name}"),
            );
        }
        if !k.image_loaded(image) {
            let name = k.image_name(image);
            k.report(
                Rule::UnloadedDriverCodeRan,
                Some(name),
                "IoCallDriver to a device of an unloaded driver",
            );
            return Err(Status::NO_SUCH_DEVICE.0);
        }
        // SAFETY: a live IRP (checked).
        let i = unsafe { obj(irp) };
        if i.CurrentLocation <= 1 {
            k.report_current(
                Rule::NoMoreStackLocations,
                "IoCallDriver with no stack location left (NO_MORE_IRP_STACK_LOCATIONS)",
            );
            k.crashed = Some("NO_MORE_IRP_STACK_LOCATIONS".into());
            return Err(Status::INVALID_DEVICE_STATE.0);
        }
        if i.CancelRoutine.is_some() {
            // Driver Verifier halts here; the simulator reports the sender, takes the routine out
            // (so that a cancellation cannot call it for an IRP its driver no longer holds, nor
            // the driver that completes the IRP be blamed for it) and sends the IRP on.
            k.report_current(
                Rule::CancelRoutineAtCallDriver,
                "IoCallDriver with the IRP's cancel routine still set (the sender must call \
                 IoSetCancelRoutine(Irp, NULL) first: Driver Verifier's WDM DRIVER ERROR 0x203)",
            );
            i.CancelRoutine = None;
        }
        i.CurrentLocation -= 1;
        let level = i.CurrentLocation;
        let loc = location(irp, level);
        // SAFETY: a live IRP.
        *unsafe { current_slot(irp) } = loc;
        // SAFETY: a location inside the IRP's stack (1 <= level <= StackCount).
        let sl = unsafe { obj(loc) };
        sl.DeviceObject = device.cast_mut();
        let major = usize::from(sl.MajorFunction);
        // SAFETY: driver objects live as long as the machine.
        let drv = unsafe { obj(k.objects.driver(driver).ptr) };
        let routine = drv.MajorFunction.get(major).copied().flatten();
        let Some(routine) = routine else {
            // Windows calls through the slot: a null one is a bugcheck (the I/O manager fills
            // every slot a driver leaves alone with its invalid-request routine).
            let name = k.objects.driver(driver).service.clone();
            k.report_current(
                Rule::Bugcheck,
                format!(
                    "IoCallDriver to {name}, whose dispatch routine for major {major:#x} is null"
                ),
            );
            return Err(Status::INVALID_DEVICE_REQUEST.0);
        };
        let irql = k.irql();
        if irql > crate::kernel::PASSIVE_LEVEL {
            // SAFETY: a live IRP (checked).
            let paging = unsafe { (*irp).Flags } & IRP_PAGING_IO != 0;
            // SAFETY: device objects live as long as the machine.
            let device_type = unsafe { (*device).DeviceType };
            let limit = dispatch_irql_limit(device_type, sl.MajorFunction, paging);
            if irql > limit {
                k.report_current(
                    Rule::IrqlTooHigh,
                    format!(
                        "IoCallDriver of major {:#x} to a device of type {device_type:#x} at IRQL {irql}, above {limit}",
                        sl.MajorFunction,
                    ),
                );
            }
        }
        let entered = k.enter(Some(image));
        k.note_io_call(device, Some(dev), irp, request);
        k.irps.frames.push(CallFrame { irp: irp as usize, level, walked: None });
        Ok((routine, image, level, entered, irql))
    });
    let (routine, image, level, entered, irql) = match prepared {
        Ok(p) => p,
        Err(status) => return status,
    };
    // SAFETY: the driver's own dispatch routine with the device and IRP it was registered for.
    let status = run_entered(entered, || unsafe { routine(device, irp) });
    kernel::with(|k| {
        k.check_returned_irql(
            irql,
            "a dispatch routine (DRIVER_VERIFIER_IOMANAGER_VIOLATION 0x05)",
        );
        k.leave();
        let walked = k.irps.pop_frame(irp, level);
        k.after_dispatch(irp, level, status, image);
        if let Some(walked) = walked {
            k.check_dispatch_status(irp, status, walked, image);
        }
    });
    status
}

impl Irps {
    /// Takes the innermost running call of `irp` at `level` off [`Irps::frames`] and says what
    /// completion saw when it walked past `level` during the call (None: it did not).
    fn pop_frame(&mut self, irp: *mut IRP, level: i8) -> Option<NTSTATUS> {
        let at = self.frames.iter().rposition(|f| f.irp == irp as usize && f.level == level)?;
        self.frames.remove(at).walked
    }

    /// Completion walks past `level` of `irp`, whose `IoStatus.Status` is `status`: the calls
    /// running with that location that completion had not passed yet take it.
    fn walked_past(&mut self, irp: *mut IRP, level: i8, status: NTSTATUS) {
        for f in &mut self.frames {
            if f.irp == irp as usize && f.level == level && f.walked.is_none() {
                f.walked = Some(status);
            }
        }
    }
}

/// `IRP_PAGING_IO`.
const IRP_PAGING_IO: u32 = 0x2;

/// The highest IRQL at which a request may be sent to a device (`IoCallDriver` runs the dispatch
/// routine at the caller's IRQL). A file system's dispatch routines (and those of the filters
/// above it, which take its device type) take creates, cleanups, queries and sets, flushes, lock
/// requests and non-paging transfers at `PASSIVE_LEVEL`, closes, directory requests and paging
/// I/O at `APC_LEVEL` at most (facts.md §1.8). Below the file systems, reads, writes and device
/// controls may be sent at `DISPATCH_LEVEL` (a completion routine that sends the next part of a
/// transfer), anything else at `APC_LEVEL` at most.
fn dispatch_irql_limit(device_type: u32, major: u8, paging: bool) -> u8 {
    use crate::kernel::{APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
    use fsfilter::device_type as t;
    let file_system = matches!(
        device_type,
        t::DISK_FILE_SYSTEM
            | t::CD_ROM_FILE_SYSTEM
            | t::NETWORK_FILE_SYSTEM
            | t::TAPE_FILE_SYSTEM
            | t::MULTI_UNC_PROVIDER
            | t::NAMED_PIPE
            | t::MAILSLOT
            | t::DFS
            | t::DFS_FILE_SYSTEM
            | t::DFS_VOLUME
    );
    match major {
        // Read, write, device control, file-system control.
        0x03 | 0x04 | 0x0e | 0x0d if file_system => {
            if paging {
                APC_LEVEL
            } else {
                PASSIVE_LEVEL
            }
        }
        // Close, directory control.
        0x02 | 0x0c if file_system => APC_LEVEL,
        _ if file_system => PASSIVE_LEVEL,
        // Read, write, device and internal device control below the file systems.
        0x03 | 0x04 | 0x0e | 0x0f => DISPATCH_LEVEL,
        _ => APC_LEVEL,
    }
}

impl Kernel {
    /// A dispatch routine returned. Whether the IRP must be marked pending at its location is
    /// only known once completion walks past that location: a driver that returns the lower
    /// driver's `STATUS_PENDING` marks the IRP from its completion routine, after its dispatch
    /// routine returned (facts.md §1.8). The check runs now if the walk already passed, otherwise
    /// when it does.
    fn after_dispatch(&mut self, irp: *mut IRP, level: i8, status: NTSTATUS, image: ImageId) {
        if status == Status::MORE_PROCESSING_REQUIRED.0 {
            let name = self.image_name(image);
            self.report(
                Rule::UnknownDispatchResult,
                Some(name),
                "a dispatch routine returned STATUS_MORE_PROCESSING_REQUIRED",
            );
        }
        let bit = 1u64 << (level as u32 & 63);
        let pending = status == Status::PENDING.0;
        let Some(info) = self.irps.map.get_mut(&(irp as usize)) else {
            // Completed and freed already: the walk passed every location, and recorded whether
            // this one was marked.
            if let Some(&(walked, marks)) = self.irps.retired.get(&(irp as usize)) {
                if walked & bit != 0 {
                    self.check_pending(marks & bit != 0, pending, Some(image), status);
                }
            }
            return;
        };
        if info.walked & bit != 0 {
            let marked = info.marks & bit != 0;
            self.check_pending(marked, pending, Some(image), status);
            return;
        }
        if info.expect & bit != 0 && info.expect_pending & bit != 0 && !pending {
            // A driver that skipped its own location shares it with the driver it called, which
            // returned STATUS_PENDING and marked it: a pass-through returns what IoCallDriver
            // returned (facts.md §1.8).
            self.check_pending(true, false, Some(image), status);
            return;
        }
        let below = bit - 1;
        let lower_pended = info.expect_pending & below != 0;
        if !pending
            && !lower_pended
            && info.state == IrpState::Active
            && !info.returned_unfinished
            && self.crashed.is_none()
        {
            // Not completed past this location, not pended below it, and this driver says it is
            // done: nothing will complete the IRP (Driver Verifier's
            // DCERROR_IRP_RETURNED_WITHOUT_COMPLETION). Its requester waits for good. (Once the
            // machine has crashed, nothing completes anything.)
            info.returned_unfinished = true;
            let name = self.image_name(image);
            self.report(
                Rule::IrpReturnedWithoutCompletion,
                Some(name),
                format!(
                    "a dispatch routine returned {} without completing the IRP or passing it \
                     to a driver that did",
                    Status(status)
                ),
            );
            return;
        }
        info.expect |= bit;
        if pending {
            info.expect_pending |= bit;
        }
        if pending && !lower_pended && info.state == IrpState::Active {
            // The IRP is still outstanding and no lower driver pended it: this driver did, and
            // must have marked its own location before returning.
            // SAFETY: a live IRP; `level` is one of its locations.
            let marked = (1..=level)
                .any(|l| unsafe { (*location(irp, l)).Control } & SL_PENDING_RETURNED != 0);
            if !marked {
                if let Some(info) = self.irps.map.get_mut(&(irp as usize)) {
                    info.expect &= !bit;
                }
                self.check_pending(false, true, Some(image), status);
            }
        }
    }

    /// A dispatch or completion routine (`what`), whose image is still the running one, returned
    /// at another IRQL than the `irql` it was called at (a spin lock kept, a raise not lowered):
    /// reported against its driver, and the caller goes on at its own IRQL.
    fn check_returned_irql(&mut self, irql: u8, what: &str) {
        let now = self.irql();
        if now != irql {
            self.report_current(
                Rule::SpinLockMisuse,
                format!("{what} returned at IRQL {now}, called at {irql}"),
            );
            self.set_irql(irql);
        }
    }

    fn check_pending(
        &mut self,
        marked: bool,
        pending: bool,
        image: Option<ImageId>,
        status: NTSTATUS,
    ) {
        // The name only when there is a finding (this runs for every IRP).
        let name = || image.map(|i| self.image_name(i));
        if pending && !marked {
            let name = name();
            self.report(Rule::PendingWithoutMark, name, "a dispatch routine returned STATUS_PENDING but the IRP was not marked pending (IoMarkIrpPending in the dispatch routine, or from the completion routine when PendingReturned)");
        } else if !pending && marked {
            let name = name();
            self.report(
                Rule::MarkedPendingButNotReturned,
                name,
                format!(
                    "the IRP was marked pending but the dispatch routine returned {}",
                    Status(status)
                ),
            );
        }
    }
}

impl Kernel {
    /// A dispatch routine (of `image`) returned `status` for `irp` after completion walked past
    /// its stack location, where the IRP's status was `walked`. Anything but `STATUS_PENDING` must
    /// be that status (Driver Verifier's WDM DRIVER ERROR 0x224): the I/O manager's system
    /// service returns what the top routine returned (WRK `IopSynchronousServiceTail`) and writes
    /// the IRP's status to the caller's status block (`IopCompleteRequest`), and a driver above
    /// returns it as its own. Reported once per IRP, against the innermost routine (WRK
    /// `trackirp.h`'s `SESSIONFLAG_UNWOUND_INCONSISTANT`: a pass-through above that returns the
    /// same status repeats the mistake).
    fn check_dispatch_status(
        &mut self,
        irp: *mut IRP,
        status: NTSTATUS,
        walked: NTSTATUS,
        image: ImageId,
    ) {
        if status == walked
            || status == Status::PENDING.0
            // Reported as UNKNOWN_DISPATCH_RESULT: no dispatch routine may return it.
            || status == Status::MORE_PROCESSING_REQUIRED.0
            || self.crashed.is_some()
        {
            return;
        }
        for f in &mut self.irps.frames {
            if f.irp == irp as usize {
                f.walked = None;
            }
        }
        let name = self.image_name(image);
        self.report(
            Rule::DispatchStatusDiffersFromIrpStatus,
            Some(name),
            format!(
                "a dispatch routine returned {} for an IRP whose IoStatus.Status was {} when \
                 completion passed its stack location: its caller gets two answers, the first \
                 from IoCallDriver (what a system service returns), the second in the IRP (what \
                 the caller's I/O status block gets when written); Driver Verifier's WDM DRIVER \
                 ERROR 0x224",
                Status(status),
                Status(walked),
            ),
        );
    }
}

/// One step of completion processing.
enum Step {
    Call {
        routine: CompletionRoutine,
        device: *mut DEVICE_OBJECT,
        context: *mut c_void,
        image: Option<ImageId>,
        ex: Option<ExRoutine>,
        /// `device`'s record.
        dev: Option<crate::ids::DeviceId>,
        /// The IRP's user request.
        request: Option<RequestId>,
    },
    Continue,
    Top,
    Skip,
}

/// `IofCompleteRequest`.
#[allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "the IRP and device are looked up in the simulator's tables before any access; unknown pointers are reported, not dereferenced"
)]
pub fn complete_request(irp: *mut IRP) {
    let ok = kernel::with(|k| {
        // One lookup of the IRP: live, whether its completion began already, and marked as
        // completing unless this call is refused below (the reports only log).
        let (twice, status) = match k.irps.map.get_mut(&(irp as usize)) {
            Some(info) if info.state != IrpState::Freed => {
                let completed = info.state == IrpState::Completed || info.completing;
                // A halted completion resumes with IoCompleteRequest: that is legal.
                let halted = info.completing && info.state == IrpState::Active;
                // SAFETY: a live IRP.
                let i = unsafe { obj(irp) };
                // SAFETY: `Status` is the member in use.
                let status = unsafe { i.IoStatus.Anonymous.Status };
                let twice = completed && (!halted || i.CurrentLocation > i.StackCount + 1);
                if !twice && status != Status::PENDING.0 {
                    info.completing = true;
                    info.walking = true;
                }
                info.completed_in_routine = true;
                (twice, status)
            }
            _ => {
                // Reports the unknown IRP.
                k.irp_known(irp, "IoCompleteRequest");
                return false;
            }
        };
        if twice {
            k.report_current(
                Rule::IrpCompletedTwice,
                "IoCompleteRequest on an IRP already completed",
            );
            return false;
        }
        if status == Status::PENDING.0 {
            k.report_current(
                Rule::CompletedWithStatusPending,
                "IoCompleteRequest with IoStatus.Status == STATUS_PENDING",
            );
            return false;
        }
        if status == Status::REPARSE.0 {
            k.note_reparse_completion(irp);
        }
        if k.irql() > crate::kernel::DISPATCH_LEVEL {
            k.report_current(Rule::IrqlTooHigh, "IoCompleteRequest above DISPATCH_LEVEL");
        }
        // SAFETY: a live IRP (checked above).
        if unsafe { (*irp).CancelRoutine }.is_some() {
            // Windows stops here; the simulator reports, takes the routine out so that a later
            // cancellation cannot call it on a completed IRP, and goes on completing.
            k.report_current(
                Rule::CancelStateInCompletedIrp,
                "IoCompleteRequest on an IRP whose cancel routine is still set (the driver must \
                 call IoSetCancelRoutine(Irp, NULL) first: CANCEL_STATE_IN_COMPLETED_IRP, bug \
                 check 0x48)",
            );
            // SAFETY: as above.
            unsafe { crate::cancel::clear_cancel_routine(irp) };
        }
        true
    });
    if !ok {
        return;
    }
    // One borrow of the kernel per location: it leaves the routine that ran last, releases its
    // device (`IoSetCompletionRoutineEx`), walks to the next routine and enters its image, or
    // finishes the IRP at the top.
    let mut ran: Option<Option<ExRoutine>> = None;
    loop {
        let step = kernel::with(|k| {
            if let Some(ex) = ran.take() {
                let twice = k.completed_in_routine(irp);
                if twice {
                    // Completed inside the routine, which did not halt completion: Windows walks
                    // on over an IRP already completed (and perhaps freed). Reported against
                    // the routine's driver, whose image is still the running one.
                    k.report_current(
                        Rule::IrpCompletedTwice,
                        "an IRP completed (or freed) inside a completion routine that then \
                         returned STATUS_SUCCESS, not STATUS_MORE_PROCESSING_REQUIRED: the I/O \
                         manager goes on completing it",
                    );
                }
                k.leave();
                if let Some(ex) = ex {
                    k.release_ex_routine(ex);
                }
                if twice {
                    return Walk::Finished(Finished::default());
                }
            }
            match k.completion_step(irp) {
                Step::Call { routine, device, dev, context, image, ex, request } => {
                    let entered = k.enter(image);
                    k.note_io_call(device, dev, irp, request);
                    Walk::Call { routine, device, context, ex, entered }
                }
                Step::Continue | Step::Skip => Walk::Next,
                Step::Top => Walk::Finished(k.finish_irp(irp)),
            }
        });
        match step {
            Walk::Call { routine, device, context, ex, entered } => {
                // The IRQL is a thread-local: no kernel borrow on this path unless it changed.
                let irql = kernel::current_irql();
                // SAFETY: a completion routine with the arguments the I/O manager passes.
                let r = run_entered(entered, || unsafe { routine(device, irp, context) });
                if kernel::current_irql() != irql {
                    kernel::with(|k| k.check_returned_irql(irql, "a completion routine"));
                }
                if r == Status::MORE_PROCESSING_REQUIRED.0 {
                    kernel::with(|k| {
                        if let Some(info) = k.irps.map.get_mut(&(irp as usize)) {
                            info.walking = false;
                        }
                        k.leave();
                        if let Some(ex) = ex {
                            k.release_ex_routine(ex);
                        }
                    });
                    return;
                }
                ran = Some(ex);
            }
            Walk::Next => {}
            Walk::Finished(Finished { event, close, release, overlapped }) => {
                if let Some(ev) = event.filter(|e| !e.is_null()) {
                    // SAFETY: `UserEvent` of a synchronous request is the waiter's live event.
                    unsafe { crate::sched::set_event(ev.cast::<KEVENT>()) };
                }
                if let Some((key, status, information, pended)) = overlapped {
                    crate::syscalls::overlapped_done(key, status, information, pended);
                }
                // Queued before the close below, which the release precedes.
                if let Some((file, rid)) = release {
                    crate::syscalls::release_mod_write_later(file, rid);
                }
                if let Some(file) = close {
                    // The handle was closed while the request was outstanding: its close comes
                    // now, from a worker (completion may run at DISPATCH_LEVEL).
                    crate::sched::queue_work(
                        "deferred object deletion",
                        None,
                        Box::new(move || {
                            let _ = crate::syscalls::send_close(file as *mut FILE_OBJECT);
                        }),
                    );
                }
                return;
            }
        }
    }
}

/// What stage two of completion leaves to do once the kernel is no longer borrowed.
#[derive(Default)]
struct Finished {
    /// A synchronous request's event, to signal.
    event: Option<*mut KEVENT>,
    /// A file object whose last reference the request held, to close.
    close: Option<usize>,
    /// The modified-page writer's write that completed after its request returned: the file
    /// object to release, and the request ([`ReleaseOnCompletion`]).
    release: Option<(usize, RequestId)>,
    /// An overlapped device request's number, final status, information and `PendingReturned`,
    /// for its caller.
    overlapped: Option<(u64, Status, usize, bool)>,
}

/// Kept with a modified-page writer's write that is still outstanding when its request returns
/// (`IoRequest::PageWrite`): its completion releases the file (WRK `MiWriteComplete`).
pub(crate) struct ReleaseOnCompletion {
    /// The file object the write is on.
    pub(crate) file: usize,
}

/// What [`complete_request`] does after one step of the walk.
enum Walk {
    /// Run a completion routine (its image entered).
    Call {
        routine: CompletionRoutine,
        device: *mut DEVICE_OBJECT,
        context: *mut c_void,
        ex: Option<ExRoutine>,
        entered: Entered,
    },
    /// Go on with the next location.
    Next,
    /// Completion reached the top and stage two ran: signal this event (a synchronous
    /// request's) when set.
    Finished(Finished),
}

impl Kernel {
    /// Whether `irp` was completed (`IoCompleteRequest`, or freed) while the completion routine
    /// that just returned ran.
    fn completed_in_routine(&self, irp: *mut IRP) -> bool {
        match self.irps.map.get(&(irp as usize)) {
            Some(info) if info.state == IrpState::Active => info.completed_in_routine,
            _ => true,
        }
    }

    fn completion_step(&mut self, irp: *mut IRP) -> Step {
        // SAFETY: a live IRP (checked by the caller's first step; completion keeps it alive).
        let i = unsafe { obj(irp) };
        if i.CurrentLocation > i.StackCount {
            return Step::Top;
        }
        let level = i.CurrentLocation;
        // SAFETY: a location inside the stack.
        let sl = unsafe { obj(location(irp, level)) };
        let pending = sl.Control & SL_PENDING_RETURNED != 0;
        i.PendingReturned = pending;
        // SAFETY: reading the status member.
        let status = unsafe { i.IoStatus.Anonymous.Status };
        let invoke = (status >= 0 && sl.Control & SL_INVOKE_ON_SUCCESS != 0)
            || (status < 0 && sl.Control & SL_INVOKE_ON_ERROR != 0)
            || (i.Cancel && sl.Control & SL_INVOKE_ON_CANCEL != 0);
        let routine = sl.CompletionRoutine;
        let context = sl.Context;
        self.irps.walked_past(irp, level, status);
        // One lookup of the IRP for the walk's records, the routine `IoSetCompletionRoutineEx`
        // set here (when it runs) and the IRP's allocator.
        let takes_ex = routine.is_some() && invoke && context == ex_marker();
        let bit = 1u64 << (level as u32 & 63);
        let mut expectation = None;
        let mut ex = None;
        let mut allocator = None;
        let mut request = None;
        if let Some(info) = self.irps.map.get_mut(&(irp as usize)) {
            request = info.finish.request();
            info.walked |= bit;
            if pending {
                info.marks |= bit;
            }
            if info.expect & bit != 0 {
                info.expect &= !bit;
                expectation = Some(info.expect_pending & bit != 0);
            }
            if takes_ex {
                if let Some(pos) = info.ex_routines.iter().position(|e| e.location == level) {
                    ex = Some(info.ex_routines.remove(pos));
                }
            }
            allocator = info.allocator;
            // Whether the routine about to run completes the IRP itself is checked when it
            // returns.
            info.completed_in_routine = false;
        }
        if let Some(returned_pending) = expectation {
            let image = self
                .objects
                .device_id(sl.DeviceObject)
                .map(|d| self.objects.driver(self.objects.device(d).driver).image);
            let status = if returned_pending { Status::PENDING.0 } else { Status::SUCCESS.0 };
            self.check_pending(pending, returned_pending, image, status);
        }
        // Move up and clear the location just left.
        i.CurrentLocation += 1;
        // SAFETY: a live IRP.
        *unsafe { current_slot(irp) } = location(irp, i.CurrentLocation);
        sl.MinorFunction = 0;
        sl.Flags = 0;
        sl.Control = 0;
        sl.CompletionRoutine = None;
        sl.Context = std::ptr::null_mut();
        let upper_device = if i.CurrentLocation <= i.StackCount {
            // SAFETY: a location inside the stack.
            unsafe { (*location(irp, i.CurrentLocation)).DeviceObject }
        } else {
            std::ptr::null_mut()
        };
        match (routine, invoke) {
            (Some(r), true) => {
                // SAFETY: the field only ever holds completion routines.
                let routine: CompletionRoutine = unsafe {
                    std::mem::transmute::<unsafe extern "system" fn() -> NTSTATUS, CompletionRoutine>(
                        r,
                    )
                };
                // A plain routine belongs to the driver of the location above (which set it),
                // or to the IRP's allocator when it was set above the first location.
                let dev = self.objects.device_id(upper_device);
                let image = match ex {
                    Some(e) => e.image,
                    None => match dev {
                        Some(d) => Some(self.objects.driver(self.objects.device(d).driver).image),
                        None => allocator,
                    },
                };
                if let Some(img) = image {
                    if !self.image_loaded(img) {
                        let name = self.image_name(img);
                        self.report(
                            Rule::UnloadedDriverCodeRan,
                            Some(name),
                            "a completion routine of an unloaded driver would have run",
                        );
                        if let Some(e) = ex {
                            self.release_ex_routine(e);
                        }
                        return Step::Skip;
                    }
                }
                let (routine, context) = match ex {
                    Some(e) => (e.routine, e.context),
                    None => (routine, context),
                };
                Step::Call { routine, device: upper_device, dev, context, image, ex, request }
            }
            _ => {
                if pending && i.CurrentLocation <= i.StackCount {
                    // The I/O manager propagates the pending mark for a driver that set no
                    // routine (facts.md §1.8).
                    // SAFETY: a location inside the stack.
                    unsafe { (*location(irp, i.CurrentLocation)).Control |= SL_PENDING_RETURNED };
                }
                Step::Continue
            }
        }
    }

    fn release_ex_routine(&mut self, ex: ExRoutine) {
        self.dereference_object(ex.device.cast());
    }
}

/// The routine `IoSetCompletionRoutineEx` stores in the stack location; the simulator calls the
/// driver's routine in its place (and never this one).
///
/// # Safety
/// Never called; any arguments are accepted.
pub unsafe extern "system" fn ex_trampoline(
    _d: *mut DEVICE_OBJECT,
    _i: *mut IRP,
    _c: *mut c_void,
) -> NTSTATUS {
    // A body no other function has: the simulator recognizes this routine by its address, so
    // the optimizer must not merge it with another routine that also just returns success.
    std::hint::black_box(EX_TRAMPOLINE_MARK)
}

/// How the caller's output is read from its buffers once a request completes, given the final
/// status and information ([`Kernel::overlapped_read`]).
pub(crate) type OverlappedRead = Box<dyn FnOnce(Status, usize) -> Vec<u8>>;

/// Kept with a user request whose service returned `STATUS_PENDING` (its caller did not wait,
/// or stopped waiting): what the caller will find once it completes
/// ([`crate::requests::OverlappedResult`]).
pub(crate) struct CallerView {
    /// A synchronous request (`FO_SYNCHRONOUS_IO`, `IRP_SYNCHRONOUS_API`), whose error
    /// `IopCompleteRequest` does not write to the caller's status block.
    pub synchronous: bool,
    /// How the caller's output is read, once a service that has one said so.
    pub read: Option<OverlappedRead>,
}

/// What [`ex_trampoline`] returns (it is never called).
const EX_TRAMPOLINE_MARK: NTSTATUS = 0x4558_5452;

/// The context of a stack location whose routine `IoSetCompletionRoutineEx` set: a static's
/// address, which unlike a function's is unique.
static EX_MARKER: u8 = 0;

fn ex_marker() -> *mut c_void {
    std::ptr::from_ref(&EX_MARKER).cast_mut().cast()
}

impl Kernel {
    /// Stage two of completion: the I/O manager's work once every location completed. Returns
    /// what to do after the kernel's borrow ends: the event to signal for a synchronous request,
    /// the close of a file object whose last reference an outstanding request held.
    fn finish_irp(&mut self, irp: *mut IRP) -> Finished {
        let k = self;
        let Some(info) = k.irps.map.get_mut(&(irp as usize)) else { return Finished::default() };
        info.state = IrpState::Completed;
        info.completing = false;
        info.walking = false;
        let (finish, held) = (info.finish, info.holds_file);
        let release = info.kept.iter().find_map(|b| b.downcast_ref::<ReleaseOnCompletion>());
        let release = release.map(|r| r.file);
        // SAFETY: a live IRP.
        let i = unsafe { obj(irp) };
        match finish {
            Finish::DriverOwned => {
                let who = info.allocator.map(|a| k.image_name(a));
                k.report(
                    Rule::Bugcheck,
                    who,
                    "an IRP the driver allocated completed to the I/O manager (its completion routine must return STATUS_MORE_PROCESSING_REQUIRED and free it)",
                );
                Finished::default()
            }
            Finish::Request(rid) => {
                // SAFETY: reading the status member.
                let status = unsafe { i.IoStatus.Anonymous.Status };
                if status == Status::REPARSE.0 {
                    // SAFETY: the I/O manager's member of the tail; a create's reparse buffer.
                    let aux = unsafe { i.Tail.Overlay }.AuxiliaryBuffer;
                    if !aux.is_null() {
                        k.reparse_buffer_left(rid, aux as usize);
                    }
                }
                k.request_completed(rid, Status(status), i.IoStatus.Information);
                // SAFETY: the I/O manager's member of the tail, set for every user request.
                let fo = unsafe { i.Tail.Overlay }.OriginalFileObject as usize;
                k.retire_irp(irp);
                let last = held && fo != 0 && k.file_dereference(fo) == Released::Close;
                let release = release.map(|file| (file, rid));
                Finished { event: None, close: last.then_some(fo), release, overlapped: None }
            }
            Finish::Overlapped(key) => {
                // SAFETY: reading the status member.
                let status = Status(unsafe { i.IoStatus.Anonymous.Status });
                let information = i.IoStatus.Information;
                // The top location's SL_PENDING_RETURNED (`completion_step`).
                let pended = i.PendingReturned;
                // SAFETY: the I/O manager's member of the tail, set for every user request.
                let fo = unsafe { i.Tail.Overlay }.OriginalFileObject as usize;
                k.retire_irp(irp);
                let last = held && fo != 0 && k.file_dereference(fo) == Released::Close;
                let overlapped = Some((key, status, information, pended));
                Finished { event: None, close: last.then_some(fo), release: None, overlapped }
            }
            Finish::Synchronous => {
                // SAFETY: `UserIosb` is the member the I/O manager's synchronous requests use.
                let iosb = unsafe { i.Anonymous.UserIosb };
                // SAFETY: when set, it points to the waiter's status block.
                if let Some(iosb) = unsafe { iosb.as_mut() } {
                    iosb.Anonymous = i.IoStatus.Anonymous;
                    iosb.Information = i.IoStatus.Information;
                }
                let ev = i.UserEvent;
                k.retire_irp(irp);
                Finished { event: Some(ev), close: None, release: None, overlapped: None }
            }
        }
    }
}

/// `IoSetCompletionRoutineEx`: sets the routine in the next location through the I/O manager,
/// which references `device` until the routine has run.
#[allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "the IRP and device are looked up in the simulator's tables before any access; unknown pointers are reported, not dereferenced"
)]
pub fn set_completion_routine_ex(
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
    routine: CompletionRoutine,
    context: *mut c_void,
    on_success: bool,
    on_error: bool,
    on_cancel: bool,
) -> NTSTATUS {
    kernel::with(|k| {
        if k.fault(crate::faults::FaultKind::Pool) {
            return Status::INSUFFICIENT_RESOURCES.0;
        }
        // One lookup of the IRP: it is known, and its routine list takes the entry (the
        // device's reference and the stack location follow; none of them logs anything).
        // The device's driver's image, found once with the device's reference.
        let dev = k.objects.device_id(device);
        let image = dev.map(|d| k.objects.driver(k.objects.device(d).driver).image);
        let ex = ExRoutine { location: 0, routine, context, device: device.cast_mut(), image };
        let level = match k.irps.map.get_mut(&(irp as usize)) {
            Some(info) if info.state != IrpState::Freed => {
                // SAFETY: a live IRP.
                let level = unsafe { (*irp).CurrentLocation } - 1;
                if level >= 1 {
                    info.ex_routines.retain(|e| e.location != level);
                    info.ex_routines.push(ExRoutine { location: level, ..ex });
                }
                level
            }
            _ => {
                // Reports the unknown IRP.
                k.irp_known(irp, "IoSetCompletionRoutineEx");
                return Status::INVALID_PARAMETER.0;
            }
        };
        if level < 1 {
            k.report_current(
                Rule::NoMoreStackLocations,
                "IoSetCompletionRoutineEx with no next stack location",
            );
            return Status::INVALID_PARAMETER.0;
        }
        match dev {
            // `ObReferenceObject` of a device (the device looked up above).
            Some(d) => k.objects.device_mut(d).refs += 1,
            None => {
                k.reference_object(device.cast());
            }
        }
        // SAFETY: the next location is inside the stack (level >= 1).
        let sl = unsafe { obj(location(irp, level)) };
        // SAFETY: the field's type lost its parameters; the simulator restores them when calling.
        sl.CompletionRoutine = Some(unsafe {
            std::mem::transmute::<CompletionRoutine, unsafe extern "system" fn() -> NTSTATUS>(
                ex_trampoline,
            )
        });
        // The location is recognized by this context, not by the routine's address: Rust does not
        // promise one address per function (release builds showed two for `ex_trampoline`).
        sl.Context = ex_marker();
        sl.Control = (if on_success { SL_INVOKE_ON_SUCCESS } else { 0 })
            | (if on_error { SL_INVOKE_ON_ERROR } else { 0 })
            | (if on_cancel { SL_INVOKE_ON_CANCEL } else { 0 });
        Status::SUCCESS.0
    })
}
