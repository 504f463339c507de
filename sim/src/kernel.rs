//! The kernel's state, one per simulated machine, reached through a thread-local.
//!
//! Every export borrows the state for the duration of its own work and never across a call into
//! driver code: a driver routine may call any export. [`call_into`] records which image's code is
//! running (for the image global and for attributing pool, devices and verifier findings).

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicPtr;

use crate::MachineConfig;
use crate::events::{Event, EventKind, Rule};
use crate::ids::{DeviceId, DriverId, ImageId, ThreadId};

/// A hasher for pointer and small-integer keys: one multiply, no DoS resistance needed.
#[derive(Default, Clone, Copy)]
pub struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 ^ (n as u64 >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

/// A map keyed by addresses or ids.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<PtrHasher>>;

/// How many addresses an [`AddrMemo`] remembers.
const MEMO_SLOTS: usize = 32;

/// A small direct-mapped memo in front of a map from addresses to ids whose entries, once
/// added, never change or go (device objects and Filter Manager handles, which live as long as
/// the machine): the drivers name the same few objects call after call, and a slot compare is
/// cheaper than hashing and probing. Only hits are remembered: an address the map does not know
/// yet may become known.
pub struct AddrMemo<V: Copy> {
    slots: [Cell<(usize, Option<V>)>; MEMO_SLOTS],
}

impl<V: Copy> Default for AddrMemo<V> {
    fn default() -> Self {
        AddrMemo { slots: std::array::from_fn(|_| Cell::new((0, None))) }
    }
}

impl<V: Copy> AddrMemo<V> {
    /// The slot of `addr` (objects are blocks at least 16 bytes apart).
    fn slot(&self, addr: usize) -> &Cell<(usize, Option<V>)> {
        &self.slots[((addr >> 4) ^ (addr >> 9)) % MEMO_SLOTS]
    }

    /// What `addr` maps to: remembered, or `lookup` (the map) remembered when it knows it.
    pub fn get(&self, addr: usize, lookup: impl FnOnce() -> Option<V>) -> Option<V> {
        let slot = self.slot(addr);
        match slot.get() {
            (a, Some(v)) if a == addr => Some(v),
            _ => {
                let found = lookup();
                if found.is_some() {
                    slot.set((addr, found));
                }
                found
            }
        }
    }

    /// What `addr` maps to if remembered (no lookup).
    pub fn peek(&self, addr: usize) -> Option<V> {
        match self.slot(addr).get() {
            (a, Some(v)) if a == addr => Some(v),
            _ => None,
        }
    }
}

/// The IRQLs the simulator distinguishes.
pub const PASSIVE_LEVEL: u8 = 0;
/// `APC_LEVEL`.
pub const APC_LEVEL: u8 = 1;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: u8 = 2;

/// What kind of code an image holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// Part of the simulated kernel (a file system, the Filter Manager, a storage driver).
    Native,
    /// A driver loaded from a service (a backend built into the host binary).
    Loaded,
}

/// A driver image: code plus its one global.
pub struct ImageInfo {
    /// The service or native driver name.
    pub name: crate::name::Name,
    /// Native or loaded.
    pub kind: ImageKind,
    /// The image global (`fsfilter_kernel::image`), at a stable address for the machine's life.
    pub slot: Box<AtomicPtr<c_void>>,
    /// The image's code may run (false after unload).
    pub loaded: bool,
    /// The driver object of the image, once created.
    pub driver: Option<DriverId>,
}

/// The whole simulated kernel.
pub struct Kernel {
    /// The configuration the machine was built with.
    pub config: MachineConfig,
    /// The current IRQL of the (single) simulated processor.

    /// The running thread.
    pub thread: ThreadId,
    /// The user processes, and the one user-mode calls run in (docs/simulator.md, "Processes").
    pub processes: crate::process::Processes,
    /// Every image, native and loaded.
    pub images: Vec<ImageInfo>,
    /// The event log.
    pub events: crate::events::EventLog,
    /// Whether the backends' trace hook records [`crate::EventKind::Callback`] events (true by
    /// default: the lab and the tests read them). A driver built for Windows compiles the hook
    /// out unless built with `dbgprint-trace`; the benchmarks turn recording off so that the
    /// simulator's cost of logging is not counted as the framework's (docs/performance.md).

    /// The next event's sequence number.
    pub next_seq: u64,
    /// The scenario step running (None during boot).
    pub step: Option<u32>,
    /// Object manager: drivers and devices.
    pub objects: crate::objects::Objects,
    /// IRPs in flight and recently freed.
    pub irps: crate::irp::Irps,
    /// The scheduler and clock.
    pub sched: crate::sched::Scheduler,
    /// Pool accounting.
    pub pool: crate::pool::Pool,
    /// The registry.
    pub registry: crate::registry::Registry,
    /// The kernel handle table.
    pub handles: crate::registry::Handles,
    /// Services and the loader.
    pub loader: crate::loader::Loader,
    /// Fault injection.
    pub faults: crate::faults::Faults,
    /// File-system registration.
    pub fsreg: crate::fsreg::FsRegistry,
    /// Volumes.
    pub volumes: crate::volumes::Volumes,
    /// User-mode requests.
    pub requests: crate::requests::Requests,
    /// The file systems' state.
    pub fs: crate::fs::FsState,
    /// File objects and the user-mode handle table.
    pub files: crate::files::Files,
    /// Section objects.
    pub sections: crate::sections::Sections,
    /// The Filter Manager.
    pub fltmgr: crate::fltmgr::FltMgr,
    /// FsRtl per-stream contexts linked on the file systems' streams.
    pub perstream: crate::perstream::PerStreamContexts,
    /// FsRtl per-file-object contexts (sim/src/perfo.rs).
    pub perfo: crate::perfo::PerFileObjectContexts,
    /// Fast mutexes: the holds kept aside while one is lent (`fastmutex.rs`).
    pub fast_mutexes: crate::fastmutex::FastMutexes,
    /// The kernel mutexes' owners and the threads' disabled normal kernel APCs.
    pub kernel_mutexes: crate::kmutex::KernelMutexes,
    /// MDLs the kernel allocated (`IoAllocateMdl` and the I/O manager's own).
    pub mdls: FastMap<usize, crate::mem::Block>,
    /// The image that allocated each MDL of `IoAllocateMdl` (the I/O manager's own MDLs are not
    /// listed).
    pub mdl_images: FastMap<usize, ImageId>,
    /// The user request being served without an IRP (fast I/O), for attributing callbacks.
    pub current_request: Option<crate::ids::RequestId>,
    /// The dispatch or completion routine the I/O manager called last, for attributing the
    /// callbacks a legacy filter reports from it without looking its device and IRP up.
    pub io_call: Option<IoCall>,
    /// Set once the machine bugchecked; nothing runs afterwards.
    pub crashed: Option<String>,
    /// What the I/O manager keeps of creates that ended `STATUS_REPARSE` until it parses them.
    pub(crate) reparse: crate::reparse::State,
    /// `Machine::boot` ran.
    pub booted: bool,
}

/// A slot returned when the image global is used outside any image (the finding is reported).
static STRAY_SLOT: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    /// This thread's kernel: the box [`install`] leaked (null when none), and whether [`with`]
    /// lends it now. A raw pointer in cells rather than a `RefCell<Option<Box<Kernel>>>`: a
    /// thread-local with a destructor checks its registration on every access, and every export
    /// borrows the kernel (some 50 times per user request through a 4-filter stack). The
    /// [`Machine`](crate::Machine) that installed the kernel takes it back when dropped.
    static KERNEL: KernelSlot = const { KernelSlot { ptr: Cell::new(std::ptr::null_mut()), lent: Cell::new(false) } };
    /// The simulated processor's IRQL ([`Kernel::irql`]): in a thread-local rather than a field
    /// so that `FsfSimGetCurrentIrql`, which every operation view reads, does not borrow the
    /// kernel. Reset to `PASSIVE_LEVEL` when a machine is installed.
    static IRQL: Cell<u8> = const { Cell::new(PASSIVE_LEVEL) };
    /// [`Kernel::record_callbacks`], read by the backends' trace hook before it borrows the
    /// kernel. Reset to true when a machine is installed.
    static RECORD_CALLBACKS: Cell<bool> = const { Cell::new(true) };
    /// The images whose code is running, innermost last ([`Kernel::enter`], [`Kernel::leave`]),
    /// each with its image global: a thread-local rather than a field of the kernel, so that
    /// every driver callback finds its global (`FsfSimImageSlot`) and a driver's direct call
    /// into another driver's code switches images ([`enter_driver_of`]) without borrowing the
    /// kernel. Emptied when a machine is installed or removed.
    static IMAGE_STACK: ImageStack = const { ImageStack::new() };
    /// The devices whose drivers' code [`enter_driver_of`] entered, with the image and its
    /// global: a device object lives as long as the machine and its driver never changes, so a
    /// remembered entry holds until the machine is removed. Direct-mapped, hits only.
    static DIRECT_MEMO: DirectMemo = const { DirectMemo::new() };
}

/// The devices [`DIRECT_MEMO`] remembers (0: none), each with its driver's image and the
/// image's global, in three arrays for the reason [`ImageStack`] keeps two.
struct DirectMemo {
    devices: [Cell<usize>; DIRECT_SLOTS],
    images: [Cell<ImageId>; DIRECT_SLOTS],
    slots: [Cell<*const AtomicPtr<c_void>>; DIRECT_SLOTS],
}

impl DirectMemo {
    const fn new() -> DirectMemo {
        DirectMemo {
            devices: [const { Cell::new(0) }; DIRECT_SLOTS],
            images: [const { Cell::new(ImageId(0)) }; DIRECT_SLOTS],
            slots: [const { Cell::new(std::ptr::null()) }; DIRECT_SLOTS],
        }
    }

    /// The image and global remembered for `device` at `at`, if it is the device there.
    #[inline(always)]
    fn get(&self, at: usize, device: usize) -> Option<(ImageId, *const AtomicPtr<c_void>)> {
        let (d, image, slot) = (self.devices.get(at)?, self.images.get(at)?, self.slots.get(at)?);
        (d.get() == device && device != 0).then(|| (image.get(), slot.get()))
    }

    fn set(&self, at: usize, device: usize, image: ImageId, slot: *const AtomicPtr<c_void>) {
        if let (Some(d), Some(i), Some(s)) =
            (self.devices.get(at), self.images.get(at), self.slots.get(at))
        {
            d.set(device);
            i.set(image);
            s.set(slot);
        }
    }

    fn clear(&self) {
        (0..DIRECT_SLOTS).for_each(|at| self.set(at, 0, ImageId(0), std::ptr::null()));
    }
}

/// How many devices [`DIRECT_MEMO`] remembers.
const DIRECT_SLOTS: usize = 16;

/// How deep driver calls may nest ([`IMAGE_STACK`]). Far beyond what Windows allows: its 24 KiB
/// kernel stack overflows long before (a driver's frames take hundreds of bytes).
const IMAGE_STACK_DEPTH: usize = 512;

/// The length of [`ImageStack`]'s globals: one more than [`IMAGE_STACK_DEPTH`] (a null first
/// entry, below the outermost image), rounded up to a power of two so that the depth, masked,
/// indexes it with no bounds check.
const IMAGE_SLOTS: usize = (IMAGE_STACK_DEPTH + 1).next_power_of_two();

/// The images whose code is running, innermost last, with their globals, in cells (no
/// destructor, so the thread-local needs no registration check on each access): image
/// `u32::MAX` and a null global for kernel code outside any image. The images and the globals
/// are two arrays rather than one of pairs: an entry of either is then addressed straight off the
/// thread pointer with a scaled index (a pair's 16 bytes is no scale an address can take), which
/// takes a few instructions off every push and every read of the running image's global. The
/// globals are one entry up, after a null that stands for no code running, so that the running
/// image's global is read at the depth itself: what `FsfSimImageSlot` answers on every callback.
struct ImageStack {
    depth: Cell<usize>,
    images: [Cell<u32>; IMAGE_STACK_DEPTH],
    slots: [Cell<*const AtomicPtr<c_void>>; IMAGE_SLOTS],
}

impl ImageStack {
    const KERNEL_CODE: u32 = u32::MAX;

    const fn new() -> ImageStack {
        ImageStack {
            depth: Cell::new(0),
            images: [const { Cell::new(ImageStack::KERNEL_CODE) }; IMAGE_STACK_DEPTH],
            slots: [const { Cell::new(std::ptr::null()) }; IMAGE_SLOTS],
        }
    }

    /// # Panics
    /// When calls nest deeper than [`IMAGE_STACK_DEPTH`] images (a runaway recursion in the
    /// simulator or a driver; Windows would have overflowed its kernel stack long before).
    #[inline(always)]
    fn push(&self, image: Option<ImageId>, slot: *const AtomicPtr<c_void>) {
        let depth = self.depth.get();
        let (Some(image_cell), Some(slot_cell)) =
            (self.images.get(depth), self.slots.get(depth + 1))
        else {
            panic!(
                "driver calls nested deeper than {IMAGE_STACK_DEPTH} images (a runaway recursion)"
            )
        };
        image_cell.set(image.map_or(ImageStack::KERNEL_CODE, |i| i.0));
        slot_cell.set(slot);
        self.depth.set(depth + 1);
    }

    #[inline(always)]
    fn pop(&self) {
        self.depth.set(self.depth.get().saturating_sub(1));
    }

    #[inline(always)]
    fn decode(raw: u32) -> Option<ImageId> {
        (raw != ImageStack::KERNEL_CODE).then_some(ImageId(raw))
    }

    /// The running images, innermost first.
    fn iter(&self) -> impl Iterator<Item = Option<ImageId>> + '_ {
        let depth = self.depth.get().min(IMAGE_STACK_DEPTH);
        self.images[..depth].iter().rev().map(|c| ImageStack::decode(c.get()))
    }

    /// The innermost image (`KERNEL_CODE` for kernel code), None when no code runs.
    #[inline(always)]
    fn top_image(&self) -> Option<u32> {
        let depth = self.depth.get();
        Some(self.images.get(depth.checked_sub(1)?)?.get())
    }

    /// The innermost image's global: null for kernel code and when no code runs. The depth is
    /// never above [`IMAGE_STACK_DEPTH`] (`push` refuses, `leave_driver` bounds it), so the mask
    /// changes nothing but the bounds check.
    #[inline(always)]
    fn top_slot(&self) -> *const AtomicPtr<c_void> {
        self.slots.get(self.depth.get() & (IMAGE_SLOTS - 1)).map_or(std::ptr::null(), Cell::get)
    }
}

/// A dispatch or completion routine the I/O manager runs ([`Kernel::io_call`]): the device and
/// IRP it was called with, the device's record and the IRP's user request. A callback reported
/// for that device and IRP belongs to that device's volume and that request: what the trace hook
/// would otherwise find by looking both up (`Kernel::resolve_instance`,
/// `Kernel::resolve_operation`). A routine called later replaces it; the IRP's release forgets
/// it, so it never outlives the IRP, and while the IRP lives its request does not change (the
/// volume is read from the device's record when the callback is reported). Recorded only while
/// the trace hook records callbacks.
#[derive(Clone, Copy)]
pub struct IoCall {
    /// The device it was called with.
    pub device: usize,
    /// Its record.
    pub dev: DeviceId,
    /// The IRP.
    pub irp: usize,
    /// The IRP's user request (`None` for an IRP of kernel code).
    pub request: Option<crate::ids::RequestId>,
}

/// Empties the image stack and forgets the direct-call memo (a machine comes or goes).
fn reset_images() {
    IMAGE_STACK.with(|s| s.depth.set(0));
    DIRECT_MEMO.with(DirectMemo::clear);
}

/// The image whose code is running, innermost first, and the ones it was called from.
pub(crate) fn running_images() -> Vec<Option<ImageId>> {
    IMAGE_STACK.with(|s| s.iter().collect())
}

/// Whether `image`'s code is running on this thread (anywhere in the call chain).
pub(crate) fn image_running(image: ImageId) -> bool {
    IMAGE_STACK.with(|s| s.iter().any(|i| i == Some(image)))
}

/// A driver's direct call into the code of the driver that owns `device` (a lower driver's
/// fast-I/O routine): that driver's image becomes the running one, as [`call_into`] makes it
/// for the I/O manager's calls, without borrowing the kernel once the device is remembered.
/// Answers the depth of the image stack [`leave_driver`] takes back, or None when `device` is
/// no device (nothing is entered then).
pub(crate) fn enter_driver_of(device: usize) -> Option<usize> {
    let at = ((device >> 4) ^ (device >> 9)) % DIRECT_SLOTS;
    let remembered = DIRECT_MEMO.with(|m| m.get(at, device));
    let (image, slot) = match remembered {
        Some(found) => found,
        None => {
            let (image, slot) = with(|k| {
                let image = k.objects.image_of(device as *const _)?;
                Some((image, k.images.get(image.index()).map(|i| &*i.slot as *const _)?))
            })?;
            DIRECT_MEMO.with(|m| m.set(at, device, image, slot));
            (image, slot)
        }
    };
    Some(IMAGE_STACK.with(|s| {
        let depth = s.depth.get();
        s.push(Some(image), slot);
        depth
    }))
}

/// Ends the call [`enter_driver_of`] entered (`depth` is what it answered): the caller's image
/// runs again.
pub(crate) fn leave_driver(depth: usize) {
    IMAGE_STACK.with(|s| s.depth.set(depth.min(IMAGE_STACK_DEPTH)));
}

/// The image global of the running image, when an image's code is running; None otherwise
/// (where [`Kernel::current_slot`] reports the use).
#[inline]
pub(crate) fn running_image_slot() -> Option<*const AtomicPtr<c_void>> {
    let slot = IMAGE_STACK.with(ImageStack::top_slot);
    (!slot.is_null()).then_some(slot)
}

/// Whether the backends' trace hook records callbacks on this thread's machine.
pub fn recording_callbacks() -> bool {
    RECORD_CALLBACKS.with(Cell::get)
}

/// The current IRQL of this thread's machine.
pub fn current_irql() -> u8 {
    IRQL.with(Cell::get)
}

/// This thread's kernel ([`KERNEL`]).
struct KernelSlot {
    ptr: Cell<*mut Kernel>,
    lent: Cell<bool>,
}

/// Gives the kernel back when [`with`] returns or unwinds.
struct Lent<'a>(&'a Cell<bool>);

impl Drop for Lent<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// True when a machine is installed on this thread.
pub fn installed() -> bool {
    KERNEL.with(|k| !k.ptr.get().is_null())
}

/// Installs a kernel on this thread.
///
/// # Panics
/// When this thread already has a machine: one machine per thread.
pub(crate) fn install(kernel: Kernel) {
    KERNEL.with(|k| {
        assert!(
            k.ptr.get().is_null(),
            "one simulated machine per thread: drop the previous Machine first"
        );
        k.ptr.set(Box::into_raw(Box::new(kernel)));
    });
    reset_images();
    IRQL.with(|i| i.set(PASSIVE_LEVEL));
    RECORD_CALLBACKS.with(|r| r.set(true));
}

/// Removes this thread's kernel.
pub(crate) fn uninstall() -> Option<Box<Kernel>> {
    reset_images();
    KERNEL.with(|k| {
        assert!(!k.lent.get(), "a machine removed while its kernel is borrowed (a simulator bug)");
        let ptr = k.ptr.replace(std::ptr::null_mut());
        // SAFETY: a non-null pointer is the box `install` leaked, not lent (checked) and taken
        // back once (the slot is emptied).
        (!ptr.is_null()).then(|| unsafe { Box::from_raw(ptr) })
    })
}

/// Runs `f` with the kernel state borrowed.
///
/// # Panics
/// When no machine is installed on this thread (a driver export was called outside a
/// simulation), or when the simulator re-entered itself while borrowed (a simulator bug).
pub fn with<R>(f: impl FnOnce(&mut Kernel) -> R) -> R {
    KERNEL.with(|slot| {
        let ptr = slot.ptr.get();
        // Null only outside `install`..`uninstall`, and never while lent (`uninstall` refuses).
        if ptr.is_null() {
            panic!("a kernel export was called with no simulated machine on this thread")
        }
        if slot.lent.replace(true) {
            panic!("simulator re-entered while its state is borrowed (a simulator bug)")
        }
        let _lent = Lent(&slot.lent);
        // SAFETY: the box `install` leaked, alive until `uninstall`, which refuses while it is
        // lent; lent once at a time (the flag, cleared when `f` returns or unwinds), so this is
        // the only reference to it.
        f(unsafe { &mut *ptr })
    })
}

/// Runs driver code of `image` (None: kernel code outside any image) and restores the image
/// stack afterwards.
pub fn call_into<R>(image: Option<ImageId>, f: impl FnOnce() -> R) -> R {
    let entered = with(|k| k.enter(image));
    let result = run_entered(entered, f);
    with(Kernel::leave);
    result
}

/// An image [`Kernel::enter`]ed inside a borrow of the kernel, whose code [`run_entered`] runs:
/// [`call_into`] in three parts, so that a caller which borrows the kernel right before and right
/// after the call anyway (the I/O manager around a dispatch or completion routine, the Filter
/// Manager around a callback) does not borrow it twice more. The image is the running one (its
/// global is the one `FsfSimImageSlot` answers) from [`Kernel::enter`] to [`Kernel::leave`].
#[must_use = "run the image's code with run_entered, then leave it"]
pub(crate) struct Entered(());

/// Runs `f` as the code of the image `entered` names. The caller's next borrow of the kernel
/// must begin with [`Kernel::leave`], before anything asks which image is running.
#[inline(always)]
pub(crate) fn run_entered<R>(entered: Entered, f: impl FnOnce() -> R) -> R {
    let Entered(()) = entered;
    f()
}

impl Kernel {
    pub(crate) fn new(config: MachineConfig) -> Kernel {
        let seed = config.seed;
        Kernel {
            config,
            thread: ThreadId(0),
            processes: crate::process::Processes::default(),
            images: Vec::new(),
            events: crate::events::EventLog::default(),
            next_seq: 0,
            step: None,
            objects: crate::objects::Objects::default(),
            irps: crate::irp::Irps::default(),
            sched: crate::sched::Scheduler::new(seed),
            pool: crate::pool::Pool::default(),
            registry: crate::registry::Registry::new(),
            handles: crate::registry::Handles::default(),
            loader: crate::loader::Loader::default(),
            faults: crate::faults::Faults::default(),
            fsreg: crate::fsreg::FsRegistry::default(),
            volumes: crate::volumes::Volumes::default(),
            requests: crate::requests::Requests::default(),
            fs: crate::fs::FsState::default(),
            files: crate::files::Files::default(),
            sections: crate::sections::Sections::default(),
            fltmgr: crate::fltmgr::FltMgr::default(),
            perstream: crate::perstream::PerStreamContexts::default(),
            perfo: crate::perfo::PerFileObjectContexts::default(),
            fast_mutexes: crate::fastmutex::FastMutexes::default(),
            kernel_mutexes: crate::kmutex::KernelMutexes::default(),
            mdls: FastMap::default(),
            mdl_images: FastMap::default(),
            current_request: None,
            io_call: None,
            crashed: None,
            reparse: Default::default(),
            booted: false,
        }
    }

    /// Appends an event.
    pub fn log(&mut self, kind: EventKind) {
        let event = Event { seq: self.next_seq, step: self.step, time: self.sched.now, kind };
        self.next_seq += 1;
        self.events.push(event);
    }

    /// Reports a verifier finding against `driver` (by name).
    pub fn report(&mut self, rule: Rule, driver: Option<String>, message: impl Into<String>) {
        self.log(EventKind::Verifier { driver, rule, message: message.into() });
    }

    /// Reports a finding against the image whose code is running.
    pub fn report_current(&mut self, rule: Rule, message: impl Into<String>) {
        let driver = self.current_image_name();
        self.report(rule, driver, message);
    }

    /// Records the dispatch or completion routine the I/O manager is about to run
    /// ([`Kernel::io_call`]; none for a device it has no record of). Only the trace hook reads
    /// it, so nothing is recorded while it records no callbacks.
    pub(crate) fn note_io_call(
        &mut self,
        device: *const windows_sys::Wdk::Foundation::DEVICE_OBJECT,
        dev: Option<DeviceId>,
        irp: *const windows_sys::Wdk::Foundation::IRP,
        request: Option<crate::ids::RequestId>,
    ) {
        if recording_callbacks() {
            self.io_call =
                dev.map(|dev| IoCall { device: device as usize, dev, irp: irp as usize, request });
        }
    }

    /// Whether the backends' trace hook records [`crate::EventKind::Callback`] events (true by
    /// default: the lab and the tests read them). A driver built for Windows compiles the hook
    /// out unless built with `dbgprint-trace`; the benchmarks turn recording off so that the
    /// simulator's cost of logging is not counted as the framework's (docs/performance.md).
    pub fn record_callbacks(&self) -> bool {
        recording_callbacks()
    }

    /// Turns the recording of callbacks on or off ([`Kernel::record_callbacks`]).
    pub fn set_record_callbacks(&mut self, on: bool) {
        RECORD_CALLBACKS.with(|r| r.set(on));
    }

    /// The current IRQL of the simulated processor.
    pub fn irql(&self) -> u8 {
        current_irql()
    }

    /// Sets the current IRQL.
    pub fn set_irql(&mut self, irql: u8) {
        IRQL.with(|i| i.set(irql));
    }

    /// The first part of [`call_into`]: `image` (None: kernel code outside any image) becomes the
    /// running image, for the code [`run_entered`] runs next.
    pub(crate) fn enter(&mut self, image: Option<ImageId>) -> Entered {
        // The image's global lives in a Box of the image table, which only grows: its address
        // holds for the machine's life, which outlasts the call.
        let slot = image
            .and_then(|i| self.images.get(i.index()))
            .map_or(std::ptr::null(), |i| &*i.slot as *const _);
        IMAGE_STACK.with(|s| s.push(image, slot));
        Entered(())
    }

    /// The last part of [`call_into`]: the image [`Kernel::enter`] made the running image is
    /// left, once [`run_entered`] returned.
    pub(crate) fn leave(&mut self) {
        IMAGE_STACK.with(ImageStack::pop);
    }

    /// The image whose code is running.
    pub fn current_image(&self) -> Option<ImageId> {
        IMAGE_STACK.with(|s| ImageStack::decode(s.top_image()?))
    }

    /// The name of the image whose code is running.
    pub fn current_image_name(&self) -> Option<String> {
        self.current_image().map(|i| self.image_name(i))
    }

    /// An image's name.
    pub fn image_name(&self, image: ImageId) -> String {
        self.images
            .get(image.index())
            .map_or_else(|| format!("image#{}", image.0), |i| i.name.to_string())
    }

    /// An image's name, shared (for events).
    #[inline]
    pub fn image_shared_name(&self, image: ImageId) -> crate::name::Name {
        self.images
            .get(image.index())
            .map_or_else(|| format!("image#{}", image.0).into(), |i| i.name.clone())
    }

    /// Registers an image.
    pub fn add_image(&mut self, name: &str, kind: ImageKind) -> ImageId {
        let id = ImageId(self.images.len() as u32);
        self.images.push(ImageInfo {
            name: name.into(),
            kind,
            slot: Box::new(AtomicPtr::new(std::ptr::null_mut())),
            loaded: true,
            driver: None,
        });
        id
    }

    /// The image global of the running image.
    pub fn current_slot(&mut self) -> *const AtomicPtr<c_void> {
        match self.current_image().and_then(|i| self.images.get(i.index())) {
            Some(image) => &*image.slot,
            None => {
                self.report(
                    Rule::ImageGlobalOutsideImage,
                    None,
                    "the image global was used outside any driver image",
                );
                &STRAY_SLOT
            }
        }
    }

    /// True when the image's code may still run.
    pub fn image_loaded(&self, image: ImageId) -> bool {
        self.images.get(image.index()).is_some_and(|i| i.loaded)
    }

    /// Whether code of `image` (None: the kernel's own) may run: false, with an
    /// `UNLOADED_DRIVER_CODE_RAN` finding saying `what` against it, when the image unloaded
    /// (Windows would run freed code there; the simulator does not call it).
    pub(crate) fn code_may_run(&mut self, image: Option<ImageId>, what: &str) -> bool {
        let Some(gone) = image.filter(|&i| !self.image_loaded(i)) else { return true };
        let name = self.image_name(gone);
        self.report(Rule::UnloadedDriverCodeRan, Some(name), what);
        false
    }

    /// Counts a call of `kind` by the running image and says whether fault injection fails it.
    pub fn fault(&mut self, kind: crate::faults::FaultKind) -> bool {
        let image = self.current_image();
        let service = image.and_then(|i| self.images.get(i.index())).map(|i| i.name.as_str());
        self.faults.fail(kind, image, service)
    }

    /// Checks that the IRQL is at most `max` for `what`, reporting otherwise.
    pub fn check_irql(&mut self, max: u8, what: &str) -> bool {
        if self.irql() > max {
            let irql = self.irql();
            self.report_current(
                Rule::IrqlTooHigh,
                format!("{what} called at IRQL {irql}, above {max}"),
            );
            false
        } else {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;
    use crate::{Machine, MachineConfig};

    #[test]
    fn the_image_stack_answers_the_innermost_image_and_its_global() {
        let machine = Machine::new(MachineConfig { seed: 1 });
        let (a, b) = machine
            .kernel(|k| (k.add_image("a", ImageKind::Loaded), k.add_image("b", ImageKind::Loaded)));
        let slot_b = machine.kernel(|k| &*k.images[b.index()].slot as *const AtomicPtr<c_void>);
        assert_eq!(machine.kernel(|k| k.current_image()), None);
        assert!(running_image_slot().is_none());
        let outer = machine.kernel(|k| k.enter(Some(a)));
        run_entered(outer, || {
            let inner = with(|k| k.enter(Some(b)));
            run_entered(inner, || {
                assert_eq!(with(|k| k.current_image()), Some(b));
                assert_eq!(running_image_slot(), Some(slot_b));
                assert_eq!(running_images(), vec![Some(b), Some(a)]);
                assert!(image_running(a) && image_running(b));
                // Kernel code called from driver code: no image, no global.
                let kernel_code = with(|k| k.enter(None));
                run_entered(kernel_code, || {
                    assert_eq!(with(|k| k.current_image()), None);
                    assert!(running_image_slot().is_none());
                });
                with(Kernel::leave);
            });
            with(Kernel::leave);
            assert_eq!(with(|k| k.current_image()), Some(a));
            assert!(!image_running(b));
        });
        machine.kernel(Kernel::leave);
        assert_eq!(running_images(), Vec::<Option<ImageId>>::new());
    }

    #[test]
    #[should_panic(expected = "driver calls nested deeper than 512 images")]
    fn the_image_stack_is_bounded() {
        let stack = ImageStack::new();
        for _ in 0..=IMAGE_STACK_DEPTH {
            stack.push(None, std::ptr::null());
        }
    }

    #[test]
    fn a_new_machine_runs_no_image_and_remembers_no_device() {
        let first = Machine::new(MachineConfig { seed: 1 });
        let image = first.kernel(|k| k.add_image("a", ImageKind::Loaded));
        // As if a direct call had remembered a device and never returned (a panic in driver
        // code, say): none of it may reach the next machine on this thread.
        DIRECT_MEMO.with(|m| m.set(3, 0x1230, image, std::ptr::null()));
        IMAGE_STACK.with(|s| s.push(Some(image), std::ptr::null()));
        drop(first);
        let second = Machine::new(MachineConfig { seed: 1 });
        assert_eq!(second.kernel(|k| k.current_image()), None);
        assert!(DIRECT_MEMO.with(|m| m.devices.iter().all(|c| c.get() == 0)));
        // An address no device has is no device, remembered or not.
        assert_eq!(enter_driver_of(0x1230), None);
        assert_eq!(running_images(), Vec::<Option<ImageId>>::new());
    }
}
