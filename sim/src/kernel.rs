//! The kernel's state, one per simulated machine, reached through a thread-local.
//!
//! Every export borrows the state for the duration of its own work and never across a call into
//! driver code: a driver routine may call any export. [`call_into`] records which image's code is
//! running (for the image global and for attributing pool, devices and verifier findings).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicPtr;

use crate::MachineConfig;
use crate::events::{Event, EventKind, Rule};
use crate::ids::{DriverId, ImageId, ThreadId};

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
    /// Every image, native and loaded.
    pub images: Vec<ImageInfo>,
    /// The images whose code is running, innermost last.
    pub image_stack: Vec<Option<ImageId>>,
    /// The event log.
    pub events: Vec<Event>,
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
    /// MDLs the kernel allocated (`IoAllocateMdl` and the I/O manager's own).
    pub mdls: FastMap<usize, crate::mem::Block>,
    /// The user request being served without an IRP (fast I/O), for attributing callbacks.
    pub current_request: Option<crate::ids::RequestId>,
    /// Set once the machine bugchecked; nothing runs afterwards.
    pub crashed: Option<String>,
    /// `Machine::boot` ran.
    pub booted: bool,
}

/// A slot returned when the image global is used outside any image (the finding is reported).
static STRAY_SLOT: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    static KERNEL: RefCell<Option<Box<Kernel>>> = const { RefCell::new(None) };
    /// The simulated processor's IRQL ([`Kernel::irql`]): in a thread-local rather than a field
    /// so that `FsfSimGetCurrentIrql`, which every operation view reads, does not borrow the
    /// kernel. Reset to `PASSIVE_LEVEL` when a machine is installed.
    static IRQL: Cell<u8> = const { Cell::new(PASSIVE_LEVEL) };
    /// [`Kernel::record_callbacks`], read by the backends' trace hook before it borrows the
    /// kernel. Reset to true when a machine is installed.
    static RECORD_CALLBACKS: Cell<bool> = const { Cell::new(true) };
    /// The image global of the image whose code is running ([`call_into`]'s innermost image),
    /// null when none is: every driver callback asks for it (`FsfSimImageSlot`), and this
    /// answers without borrowing the kernel. It mirrors the top of [`Kernel::image_stack`],
    /// which only [`call_into`] changes.
    static CURRENT_SLOT: Cell<*const AtomicPtr<c_void>> = const { Cell::new(std::ptr::null()) };
}

/// The image global of the running image, when an image's code is running; None otherwise
/// (where [`Kernel::current_slot`] reports the use).
pub(crate) fn running_image_slot() -> Option<*const AtomicPtr<c_void>> {
    let slot = CURRENT_SLOT.with(Cell::get);
    (!slot.is_null()).then_some(slot)
}

/// Restores [`CURRENT_SLOT`] when [`call_into`] returns.
struct SlotRestore(*const AtomicPtr<c_void>);

impl Drop for SlotRestore {
    fn drop(&mut self) {
        restore_slot(self.0);
    }
}

/// Whether the backends' trace hook records callbacks on this thread's machine.
pub fn recording_callbacks() -> bool {
    RECORD_CALLBACKS.with(Cell::get)
}

/// The current IRQL of this thread's machine.
pub fn current_irql() -> u8 {
    IRQL.with(Cell::get)
}

/// True when a machine is installed on this thread.
pub fn installed() -> bool {
    KERNEL.with(|k| k.try_borrow().map(|k| k.is_some()).unwrap_or(true))
}

/// Installs a kernel on this thread.
///
/// # Panics
/// When this thread already has a machine: one machine per thread.
pub(crate) fn install(kernel: Kernel) {
    KERNEL.with(|k| {
        let mut slot = k.borrow_mut();
        assert!(
            slot.is_none(),
            "one simulated machine per thread: drop the previous Machine first"
        );
        *slot = Some(Box::new(kernel));
    });
    CURRENT_SLOT.with(|s| s.set(std::ptr::null()));
    IRQL.with(|i| i.set(PASSIVE_LEVEL));
    RECORD_CALLBACKS.with(|r| r.set(true));
}

/// Removes this thread's kernel.
pub(crate) fn uninstall() -> Option<Box<Kernel>> {
    CURRENT_SLOT.with(|s| s.set(std::ptr::null()));
    KERNEL.with(|k| k.borrow_mut().take())
}

/// Runs `f` with the kernel state borrowed.
///
/// # Panics
/// When no machine is installed on this thread (a driver export was called outside a
/// simulation), or when the simulator re-entered itself while borrowed (a simulator bug).
pub fn with<R>(f: impl FnOnce(&mut Kernel) -> R) -> R {
    KERNEL.with(|cell| {
        let mut guard = cell.try_borrow_mut().unwrap_or_else(|_| {
            panic!("simulator re-entered while its state is borrowed (a simulator bug)")
        });
        let kernel = guard.as_mut().unwrap_or_else(|| {
            panic!("a kernel export was called with no simulated machine on this thread")
        });
        f(kernel)
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
/// Manager around a callback) does not borrow it twice more.
#[must_use = "run the image's code with run_entered, then leave it"]
pub(crate) struct Entered(*const AtomicPtr<c_void>);

/// Makes the image `entered` names the running one without a closure (a driver's direct call
/// into another driver's code, `fsfilter_sim_enter_driver_of`); answers the slot
/// [`restore_slot`] puts back once the caller has [`Kernel::leave`]n.
pub(crate) fn switch_slot(entered: Entered) -> *const AtomicPtr<c_void> {
    CURRENT_SLOT.with(|c| c.replace(entered.0))
}

/// Puts back the running image's slot [`switch_slot`] answered.
pub(crate) fn restore_slot(previous: *const AtomicPtr<c_void>) {
    CURRENT_SLOT.with(|c| c.set(previous));
}

/// Runs `f` as the code of the image `entered` names. The caller's next borrow of the kernel
/// must begin with [`Kernel::leave`], before anything asks which image is running.
pub(crate) fn run_entered<R>(entered: Entered, f: impl FnOnce() -> R) -> R {
    let _restore = SlotRestore(switch_slot(entered));
    f()
}

impl Kernel {
    pub(crate) fn new(config: MachineConfig) -> Kernel {
        let seed = config.seed;
        Kernel {
            config,
            thread: ThreadId(0),
            images: Vec::new(),
            image_stack: Vec::new(),
            events: Vec::new(),
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
            mdls: FastMap::default(),
            current_request: None,
            crashed: None,
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
        self.image_stack.push(image);
        // The image's global lives in a Box of the image table, which only grows: its address
        // holds for the machine's life, which outlasts the call.
        Entered(
            image
                .and_then(|i| self.images.get(i.index()))
                .map_or(std::ptr::null(), |i| &*i.slot as *const _),
        )
    }

    /// The last part of [`call_into`]: the image [`Kernel::enter`] made the running image is
    /// left, once [`run_entered`] returned.
    pub(crate) fn leave(&mut self) {
        self.image_stack.pop();
    }

    /// The image whose code is running.
    pub fn current_image(&self) -> Option<ImageId> {
        self.image_stack.last().copied().flatten()
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
