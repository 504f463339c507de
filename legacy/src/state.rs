//! The backend's state: one `DriverState` per loaded image (through the image global), one
//! `DeviceExt` per device object the backend creates.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use fsfilter::{DataScanMode, Filter, Registration, VolumeInfo};
use fsfilter_kernel::datascan::SectionTable;
use fsfilter_kernel::deferred::DeferredPosts;
use fsfilter_kernel::image;
use fsfilter_kernel::loadbuf::LoadBlocks;
use fsfilter_kernel::pending::PendedTable;
use fsfilter_kernel::pool::pool_tag;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, KEVENT, KMUTANT};

/// Pool tag of the driver state.
pub(crate) const DRIVER_TAG: u32 = pool_tag(b"FsfL");
/// Pool tag of completion contexts and deferred-work records.
pub(crate) const WORK_TAG: u32 = pool_tag(b"FsfW");

/// What one of the backend's device objects is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    /// The filter's own named control device (attached to nothing).
    Control,
    /// Attached to a file system's control device: sees mounts.
    FileSystem,
    /// Attached to a volume: the instance.
    Volume,
}

/// The per-volume instance: the filter's state and what it knows of the volume.
pub(crate) struct InstanceState<F: Filter> {
    pub(crate) context: F::InstanceContext,
    pub(crate) volume: VolumeInfo,
    pub(crate) data_scan: DataScanMode,
}

/// The extension of every device the backend creates.
pub(crate) struct DeviceExt<F: Filter> {
    pub(crate) kind: DeviceKind,
    /// The device this extension belongs to.
    pub(crate) this: *mut DEVICE_OBJECT,
    /// The device this one is attached to (the stack's top when it attached).
    pub(crate) lower: *mut DEVICE_OBJECT,
    /// The storage device of the volume (volumes only).
    pub(crate) real_device: *mut DEVICE_OBJECT,
    /// The instance (volumes only, once instance setup accepted the volume).
    pub(crate) instance: Option<InstanceState<F>>,
    /// Zero while the device is attached. Set once, by whoever detaches it (the I/O manager's
    /// `FastIoDetachDevice`, its file system's unregistration, or unload: `attach::detach`), to the
    /// reason its teardown starts with, which its completion repeats; from then on no new
    /// operation reaches the instance.
    pub(crate) torn_down: AtomicU32,
    /// What keeps the device: one for its attachment, given up when it detaches, and one for each
    /// operation whose post callback or resumption is outstanding. Whoever drops the last one
    /// retires the device (`attach::retire`): its teardown completes and it is deleted.
    pub(crate) holds: AtomicU32,
    /// The work item the device's retirement runs in (at `PASSIVE_LEVEL`, with the device
    /// referenced until it returns), allocated before the device attaches (`attach::attach`) so
    /// that the retirement cannot fail for want of memory, and freed by the retirement
    /// (`attach::retire_worker`), which every attached device goes through once.
    pub(crate) retire_item: isize,
}

impl<F: Filter> DeviceExt<F> {
    /// Teardown started: no new operation reaches the instance.
    #[inline]
    pub(crate) fn is_torn_down(&self) -> bool {
        self.torn_down.load(Ordering::Acquire) != 0
    }

    pub(crate) const fn new(kind: DeviceKind, this: *mut DEVICE_OBJECT) -> DeviceExt<F> {
        DeviceExt {
            kind,
            this,
            lower: core::ptr::null_mut(),
            real_device: core::ptr::null_mut(),
            instance: None,
            torn_down: AtomicU32::new(0),
            holds: AtomicU32::new(1),
            retire_item: 0,
        }
    }
}

/// Everything the backend keeps for one loaded driver.
pub(crate) struct DriverState<F: Filter> {
    pub(crate) filter: F,
    pub(crate) registration: Registration,
    pub(crate) driver: *const DRIVER_OBJECT,
    /// The filter's named control device.
    pub(crate) control: *mut DEVICE_OBJECT,
    /// Serializes attachment: a kernel mutex (`KMUTEX`, windows-sys's `KMUTANT`), so instance
    /// setup runs at `PASSIVE_LEVEL` while it is held, with normal kernel APCs disabled (the
    /// holder cannot be suspended). The kernel writes this and the events through the shared
    /// state, hence the cells: a pointer taken from a plain `&KEVENT` would promise the compiler
    /// that nothing changes it (a function taking `&KEVENT` is compiled as only reading it, which
    /// was seen to turn the lock into a deadlock in the simulator).
    pub(crate) attach_lock: UnsafeCell<KMUTANT>,
    /// One for each attached device not retired yet, and one for the driver until unload gives it
    /// up: whoever drops the last one sets `drained`, once, and touches the state no more.
    pub(crate) live: AtomicU32,
    /// Set when `live` falls to zero, which only unload waits for.
    pub(crate) drained: UnsafeCell<KEVENT>,
    /// Devices being deleted outside unload (`attach::delete_outside_unload`), which unload waits
    /// for before it walks the driver's device list.
    pub(crate) retiring: AtomicU32,
    /// Set when the last such deletion ends after unload began.
    pub(crate) quiet: UnsafeCell<KEVENT>,
    /// Unload has begun.
    pub(crate) unloading: AtomicBool,
    /// `DriverEntry` finished: file systems reported from now on registered after the load.
    pub(crate) started: AtomicBool,
    pub(crate) pended: PendedTable,
    pub(crate) deferred_posts: DeferredPosts,
    pub(crate) sections: SectionTable,
    /// The filter's load buffers (`Filter::LOAD_BUFFERS`). Declared after `filter`, so dropped
    /// after it (fields drop in declaration order): the buffers are freed once the filter is gone.
    pub(crate) load_blocks: LoadBlocks<F>,
}

/// What the image global points to: the driver state first (so that the global is also a
/// `DriverState<F>` pointer), then what only some filters use. Kept out of `DriverState`, whose
/// field order the compiler chooses: a field added there moved the others and grew every legacy
/// driver's code by up to 11 bytes, where this costs nothing to a filter that does not use it.
#[repr(C)]
pub(crate) struct Image<F: Filter> {
    pub(crate) state: DriverState<F>,
    /// The stream contexts' lock and list (rule 28): all zero, and untouched, in a filter that
    /// declares no `Filter::STREAM_CONTEXT_WORDS`.
    pub(crate) contexts: crate::contexts::Contexts,
}

impl<F: Filter> DriverState<F> {
    /// The state of the running image.
    ///
    /// # Safety
    /// Must be called from code of an image whose backend is this one with this `F`, and the
    /// reference must not outlive the callback that asked.
    pub(crate) unsafe fn current<'a>() -> Option<&'a DriverState<F>> {
        let p = image::get().cast::<DriverState<F>>();
        // SAFETY: the caller guarantees the global holds a live `DriverState<F>` or null.
        unsafe { p.as_ref() }
    }

    /// True when `device` is one of this driver's devices.
    ///
    /// # Safety
    /// `device` must be null or a live device object (of any driver): its header is read.
    pub(crate) unsafe fn owns(&self, device: *const DEVICE_OBJECT) -> bool {
        // SAFETY: null is checked first; otherwise the caller guarantees a live device object.
        !device.is_null() && unsafe { (*device).DriverObject }.cast_const() == self.driver
    }

    /// The extension of `device` when it is one of this driver's devices.
    ///
    /// # Safety
    /// `device` must be null or a live device object. The caller chooses `'a`, which nothing
    /// here bounds: the reference must not be used after the device is deleted (in practice, it
    /// lives only as long as the dispatch, completion or callback routine that holds the device).
    pub(crate) unsafe fn ext<'a>(&self, device: *const DEVICE_OBJECT) -> Option<&'a DeviceExt<F>> {
        // SAFETY: the caller's contract.
        if !unsafe { self.owns(device) } {
            return None;
        }
        // SAFETY: a live device (the caller's contract) of ours (checked above).
        let slot = unsafe { crate::raw::ext_slot::<F>(device) };
        // SAFETY: ours carry an initialized DeviceExt<F>.
        unsafe { slot.as_ref() }
    }

    /// Counts an operation whose post callback (or resumption) will run later. Relaxed, as a
    /// reference count's increment: the operation reached the device through its attachment,
    /// whose hold keeps the count above zero until the operation's own hold is counted.
    pub(crate) fn begin(&self, ext: &DeviceExt<F>) {
        ext.holds.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the driver can be unloaded: the filter has an unload callback and does not
    /// register `DO_NOT_SUPPORT_SERVICE_STOP` (a service stop, the legacy model's only unload,
    /// then fails without calling the callback, facts.md §5), so `DriverEntry` set
    /// `DriverUnload`. Only then are completion routines set with `IoSetCompletionRoutineEx`
    /// (`dispatch::set_completion`), whose device reference keeps the image loaded until the
    /// routine has returned.
    #[inline]
    pub(crate) fn unloadable(&self) -> bool {
        let stop = fsfilter::RegistrationFlags::DO_NOT_SUPPORT_SERVICE_STOP;
        self.registration.callbacks().filter_unload
            && !self.registration.registration_flags().contains(stop)
    }

    /// Drops one of the device's holds: an operation's post callback (or resumption) finished,
    /// or the device was detached. The last one retires the device (`attach::retire`); for an
    /// operation, every `end` is its last use of the device (a resumption ends after forwarding,
    /// `dispatch::resume_now`), and nothing of the device is read after the decrement but by the
    /// one that retires it.
    pub(crate) fn end(&self, ext: &DeviceExt<F>) {
        if ext.holds.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The device is this caller's alone now: read after the decrement, and only here.
            // SAFETY: our device, whose last hold this was: detached, nothing in flight on it.
            unsafe { crate::attach::retire::<F>(ext.this) };
        }
    }

    /// Counts an attached device (before its attachment can be seen).
    pub(crate) fn device_attached(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// A device was retired, or its attachment failed. When unload gave up the driver's unit
    /// and this was the last, the waiting unload goes on: the event is the last thing of the
    /// driver's state this touches.
    pub(crate) fn device_retired(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            let drained = self.drained.get();
            // SAFETY: the driver state's event, initialized in DriverEntry, in non-paged pool.
            unsafe { windows_sys::Wdk::System::SystemServices::KeSetEvent(drained, 0, false) };
        }
    }
}
