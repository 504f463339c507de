//! The driver image's one global: a pointer to the backend's driver state.
//!
//! A few kernel callbacks carry no context at all: `FilterUnloadCallback(Flags)` and the
//! `IoRegisterFsRegistrationChange` routine `(DeviceObject, FsActive)`. Windows drivers keep a
//! global for them, and one image is one driver. The simulator loads the same code several times
//! in one process (two probes at different altitudes), so the global is per *image*: a static on
//! Windows, the simulator's per-image slot elsewhere, which it switches as it calls into each
//! loaded driver. Backends keep everything else in device extensions and contexts.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

#[cfg(target_os = "windows")]
static IMAGE_STATE: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());

#[cfg(not(target_os = "windows"))]
unsafe extern "C" {
    /// Defined by `fsfilter-sim`: the global slot of the driver image whose code is running.
    fn FsfSimImageSlot() -> *const AtomicPtr<c_void>;
}

#[cfg(not(target_os = "windows"))]
unsafe extern "Rust" {
    /// Defined by `fsfilter-sim`: the driver that owns `device` becomes the running image;
    /// answers what [`fsfilter_sim_leave_driver`] restores, None when `device` is no device.
    fn fsfilter_sim_enter_driver_of(device: usize) -> Option<usize>;
    /// Defined by `fsfilter-sim`: the image that ran before the matching enter runs again.
    fn fsfilter_sim_leave_driver(previous: usize);
}

/// Calls a lower driver's fast-I/O routine: code of another driver, called directly rather than
/// through the I/O manager. On Windows that is just the call (each image has its own global).
/// The simulator loads several drivers from one crate, so the image whose global [`get`] reads
/// must become the lower driver's for the call, as `IofCallDriver` does for IRPs. Fast-I/O
/// routines answer a `BOOLEAN`; a call that could not be made answers FALSE (not handled).
pub fn call_as_driver_of(
    device: *const windows_sys::Wdk::Foundation::DEVICE_OBJECT,
    f: impl FnOnce() -> bool,
) -> bool {
    #[cfg(target_os = "windows")]
    {
        let _ = device;
        f()
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: the simulator defines this Rust-ABI function with exactly this signature.
        let entered = unsafe { fsfilter_sim_enter_driver_of(device as usize) };
        let handled = f();
        if let Some(previous) = entered {
            // SAFETY: as above; once, for the enter that answered `previous`.
            unsafe { fsfilter_sim_leave_driver(previous) };
        }
        handled
    }
}

fn slot() -> &'static AtomicPtr<c_void> {
    #[cfg(target_os = "windows")]
    {
        &IMAGE_STATE
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: the simulator's export takes no arguments.
        let slot = unsafe { FsfSimImageSlot() };
        // SAFETY: the simulator returns a slot that lives as long as the image is loaded, and the
        // image's code only runs while it is loaded; callers do not keep the reference.
        unsafe { &*slot }
    }
}

/// The image's state pointer (null before [`set`]).
pub fn get() -> *mut c_void {
    slot().load(Ordering::Acquire)
}

/// Sets the image's state pointer (in `DriverEntry`; null again at unload).
pub fn set(state: *mut c_void) {
    slot().store(state, Ordering::Release);
}
