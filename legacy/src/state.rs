//! The backend's state: one `DriverState` per loaded image (through the image global), one
//! `DeviceExt` per device object the backend creates.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use fsfilter::{DataScanMode, Filter, Registration, VolumeInfo};
use fsfilter_kernel::datascan::SectionTable;
use fsfilter_kernel::deferred::DeferredPosts;
use fsfilter_kernel::image;
use fsfilter_kernel::pending::PendedTable;
use fsfilter_kernel::pool::pool_tag;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, KEVENT};

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
    /// The device this one is attached to (the stack's top when it attached).
    pub(crate) lower: *mut DEVICE_OBJECT,
    /// The storage device of the volume (volumes only).
    pub(crate) real_device: *mut DEVICE_OBJECT,
    /// The instance (volumes only, once instance setup accepted the volume).
    pub(crate) instance: Option<InstanceState<F>>,
    /// Teardown started: no new operation reaches the instance.
    pub(crate) torn_down: AtomicBool,
    /// Operations of this device whose post callback or resumption is outstanding.
    pub(crate) in_flight: AtomicU32,
    /// The device itself once detached (`FastIoDetachDevice`, or its file system unregistered):
    /// whoever takes it, the detach or the end of the device's last operation, completes the
    /// teardown and deletes the device (`attach::detach_from_deleted`).
    pub(crate) detached: AtomicPtr<DEVICE_OBJECT>,
}

impl<F: Filter> DeviceExt<F> {
    pub(crate) const fn new(kind: DeviceKind) -> DeviceExt<F> {
        DeviceExt {
            kind,
            lower: core::ptr::null_mut(),
            real_device: core::ptr::null_mut(),
            instance: None,
            torn_down: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            detached: AtomicPtr::new(core::ptr::null_mut()),
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
    /// Serializes attachment (a synchronization event used as a mutex, so instance setup runs at
    /// `PASSIVE_LEVEL` while it is held).
    pub(crate) attach_lock: KEVENT,
    /// Operations whose post callback or resumption is outstanding, across the driver; kept only
    /// for a driver that can unload ([`DriverState::unloadable`]), whose unload drains it.
    pub(crate) in_flight: AtomicU32,
    /// Set when the last in-flight operation finishes during unload.
    pub(crate) drained: KEVENT,
    /// Unload has begun.
    pub(crate) unloading: AtomicBool,
    /// `DriverEntry` finished: file systems reported from now on registered after the load.
    pub(crate) started: AtomicBool,
    pub(crate) pended: PendedTable,
    pub(crate) deferred_posts: DeferredPosts,
    pub(crate) sections: SectionTable,
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

    /// Counts an operation whose post callback (or resumption) will run later.
    pub(crate) fn begin(&self, ext: &DeviceExt<F>) {
        if self.unloadable() {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        ext.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether the driver can be unloaded: the filter has an unload callback, so `DriverEntry`
    /// set `DriverUnload`. Only then does the driver-wide count of operations in flight, which
    /// unload drains, need keeping (two interlocked operations per IRP less otherwise); fixed
    /// once the driver is loaded, so that every [`DriverState::begin`] and its
    /// [`DriverState::end`] agree.
    #[inline]
    pub(crate) fn unloadable(&self) -> bool {
        self.registration.callbacks().filter_unload
    }

    /// The operation's post callback (or resumption) finished. The last one of a device detached
    /// meanwhile completes its teardown and deletes it (`attach::detach_from_deleted`, which then
    /// ends the operation for the driver) before the driver's count can let an unload go on.
    pub(crate) fn end(&self, ext: &DeviceExt<F>) {
        if ext.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let device = ext.detached.load(Ordering::SeqCst);
            if !device.is_null() {
                // SAFETY: our volume device, detached, its last operation ended: every `end` is
                // its operation's last use of the device (a resumption ends after forwarding,
                // `dispatch::resume_now`).
                return unsafe {
                    crate::attach::detach_from_deleted(self, device, core::ptr::null(), 0)
                };
            }
        }
        self.end_for_driver();
    }

    /// The driver-wide half of [`DriverState::end`]: the last operation lets a waiting unload
    /// go on.
    pub(crate) fn end_for_driver(&self) {
        if !self.unloadable() {
            return;
        }
        // Sequentially consistent: see `driver_unload`, which stores the flag, then reads this.
        let left = self.in_flight.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        if left == 0 && self.unloading.load(Ordering::SeqCst) {
            let drained = core::ptr::from_ref(&self.drained).cast_mut();
            // SAFETY: the driver state's event, initialized in DriverEntry, in non-paged pool.
            unsafe { windows_sys::Wdk::System::SystemServices::KeSetEvent(drained, 0, false) };
        }
    }
}
