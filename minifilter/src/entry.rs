//! `DriverEntry` and unload: register the filter, start filtering, and undo both on every failure
//! path (facts.md §2.6: on failure after `FltRegisterFilter` the driver must unregister).

use fsfilter::{Filter, Status, trace::TraceEvent};
use fsfilter_kernel::loadbuf::{LoadBlocks, LoadParameters};
use fsfilter_kernel::pool::PoolBox;
use fsfilter_kernel::registry::ServiceKey;
use fsfilter_kernel::{image, trace};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_REGISTRATION, FltRegisterFilter, FltStartFiltering, FltUnregisterFilter,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use crate::state::{DRIVER_TAG, DriverState, Registered};
use crate::tables::{RuntimeTables, StaticTables};

/// The `DriverEntry` of a minifilter built from `F`: reads the service's `Parameters` key, builds
/// the filter, registers it with the Filter Manager (the static tables of `F::REGISTRATION`, or
/// tables built for the registration `F::registration` returns), and starts filtering.
///
/// # Safety
/// Called by the I/O manager (or the simulator's loader) as a driver's entry point, once per
/// image, at `PASSIVE_LEVEL`, with a valid driver object and registry path.
pub unsafe fn driver_entry<F: Filter>(
    driver: *const DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the caller guarantees a valid registry path.
    let parameters = unsafe { ServiceKey::open(registry_path) };
    // The load buffers' table, declared before the filter: on a return before it is in the
    // state, the filter (or whatever holds it) is dropped first, then the table frees the blocks.
    let blocks = LoadBlocks::<F>::new(DRIVER_TAG);
    let loaded = if fsfilter::load_buffers::<F>() {
        // SAFETY: `blocks` is dropped after the filter value on every path: here, as a local
        // declared before it (and after `load` returned, when it fails); then as the state's
        // field declared after `filter`.
        F::load(&unsafe { LoadParameters::new(&parameters, &blocks) })
    } else {
        F::load(&parameters)
    };
    let filter = match loaded {
        Ok(f) => f,
        Err(e) => return e.status().0,
    };
    drop(parameters);
    // `None`: the constant, validated at compile time, registered from static tables. A
    // run-time registration gets tables of its own unless it equals the constant.
    // The constant's summary is computed at compile time: the image keeps no copy of it.
    let (registered, runtime) = match fsfilter::registration_in_force(&filter) {
        Ok(None) => (const { Registered::of::<F>(&F::REGISTRATION) }, None),
        Ok(Some(r)) if r == F::REGISTRATION => (Registered::of::<F>(&r), None),
        Ok(Some(r)) => (Registered::of::<F>(&r), Some(r)),
        Err(_) => return Status::INVALID_PARAMETER.0,
    };
    // Built in place in zeroed pool, not on the kernel stack (the tables are kilobytes).
    // SAFETY: every field `init` does not write is valid as zero: the filter handle (0 until
    // registered), the pended, deferred-post, section and load-buffer tables (empty when zero,
    // their invariants), which leaves `filter`, `registered` and `runtime_tables`, written here.
    let init = |p: *mut DriverState<F>| {
        // SAFETY: `p` is the fresh, aligned, zeroed allocation.
        unsafe { init_fields(p, filter, registered) }
    };
    // SAFETY: see above; `init` writes the remaining fields.
    let state = unsafe { PoolBox::<DriverState<F>>::try_new_zeroed_with(DRIVER_TAG, init) };
    let mut state = match state {
        Ok(s) => s,
        Err(e) => return e.status().0,
    };
    if fsfilter::load_buffers::<F>() {
        // Replaces the zeroed, empty table; dropped with the state, after the filter.
        state.load_blocks = blocks;
    }
    let table: *const FLT_REGISTRATION = match runtime {
        None => StaticTables::<F>::registration(),
        Some(registration) => {
            match PoolBox::try_new(RuntimeTables::new::<F>(&registration), DRIVER_TAG) {
                Ok(mut tables) => {
                    let linked = tables.link::<F>();
                    state.runtime_tables = Some(tables);
                    linked
                }
                Err(e) => return e.status().0,
            }
        }
    };
    // Callbacks can arrive before FltStartFiltering returns (facts.md §2.6): publish the state
    // first.
    let raw = state.into_raw();
    image::set(raw.cast());
    let mut handle = 0;
    // SAFETY: a valid driver object and a registration whose tables live as long as the filter
    // (static data, or the pool block owned by the driver state).
    let status = unsafe { FltRegisterFilter(driver, table, &mut handle) };
    if status < 0 {
        // SAFETY: nothing else references the state: registration failed.
        unsafe { discard_state::<F>(raw) };
        return status;
    }
    // SAFETY: `raw` is the live state published above; nothing else writes the handle.
    unsafe { (*raw).handle = handle };
    // The message channel, when the filter declares one: after registering (the port belongs to
    // the filter) and before filtering starts (Learn, FltCreateCommunicationPort's remarks).
    if let Some(channel) = fsfilter::message_channel::<F>() {
        let mut port = 0;
        // SAFETY: the registered filter, from DriverEntry; the state is published.
        let status = unsafe { crate::messages::open::<F>(handle, channel, &mut port) };
        // SAFETY: the live state; only DriverEntry and unload write the port (the callbacks
        // never read it).
        unsafe { (*raw).port = port };
        if status < 0 {
            // SAFETY: the filter registered above.
            unsafe { FltUnregisterFilter(handle) };
            // SAFETY: unregistered: no callback can run any more.
            unsafe { discard_state::<F>(raw) };
            return status;
        }
    }
    // SAFETY: a registered filter.
    let status = unsafe { FltStartFiltering(handle) };
    if status < 0 {
        if fsfilter::message_channel::<F>().is_some() {
            // SAFETY: the live state.
            let port = unsafe { (*raw).port };
            // SAFETY: the port opened above (or 0), closed once, before unregistering.
            unsafe { crate::messages::close(port) };
        }
        // SAFETY: the filter registered above; unregistering tears down what starting made.
        unsafe { FltUnregisterFilter(handle) };
        // SAFETY: unregistered: no callback can run any more.
        unsafe { discard_state::<F>(raw) };
        return status;
    }
    Status::SUCCESS.0
}

/// Writes the fields of a zeroed `DriverState` that are not valid as zero.
///
/// # Safety
/// `p` points at an aligned, writable, zeroed `DriverState<F>` nobody else uses yet.
#[expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "a raw field projection and its write are one operation"
)]
unsafe fn init_fields<F: Filter>(p: *mut DriverState<F>, filter: F, registered: Registered) {
    // SAFETY: `p` is valid for writes (the caller's contract); each write fills one field.
    unsafe { (&raw mut (*p).filter).write(filter) };
    // SAFETY: as above.
    unsafe { (&raw mut (*p).registered).write(registered) };
    // SAFETY: as above.
    unsafe { (&raw mut (*p).runtime_tables).write(None) };
}

/// # Safety
/// `raw` must be the state published by `driver_entry`, no longer reachable by callbacks.
unsafe fn discard_state<F: Filter>(raw: *mut DriverState<F>) {
    image::set(core::ptr::null_mut());
    // SAFETY: the caller guarantees exclusive ownership of the pool block.
    drop(unsafe { PoolBox::from_raw(raw, DRIVER_TAG) });
}

/// Unregisters the filter (tearing down every instance and waiting for rundown) and frees the
/// driver state.
///
/// # Safety
/// Called once, from the filter's unload callback, in this image.
pub(crate) unsafe fn unregister_and_free<F: Filter>() {
    let raw = image::get().cast::<DriverState<F>>();
    if raw.is_null() {
        return;
    }
    // SAFETY: the live state of this image.
    let handle = unsafe { (*raw).handle };
    if fsfilter::message_channel::<F>().is_some() {
        // No new client after this; those connected are disconnected by the unregistration.
        // SAFETY: the live state of this image.
        let port = unsafe { core::mem::take(&mut (*raw).port) };
        // SAFETY: the port DriverEntry opened (or 0), closed once, before FltUnregisterFilter.
        unsafe { crate::messages::close(port) };
    }
    // SAFETY: the registered filter; returns once every instance is torn down and every
    // rundown reference is released, after which no callback of this filter runs.
    unsafe { FltUnregisterFilter(handle) };
    // SAFETY: unregistered: the state is no longer reachable.
    unsafe { discard_state::<F>(raw) };
    trace::emit(&TraceEvent::Note { instance: None, operation: None, text: "filter unregistered" });
}
