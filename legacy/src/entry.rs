//! `DriverEntry` and `DriverUnload` of a legacy filter (facts.md §1.2, §1.9).

use core::sync::atomic::{AtomicU32, Ordering};

use fsfilter::trace::TraceEvent;
use fsfilter::{Filter, ServiceParameters, Status, TeardownFlags, UnloadFlags};
use fsfilter_kernel::loadbuf::{LoadBlocks, LoadParameters};
use fsfilter_kernel::pool::PoolBox;
use fsfilter_kernel::registry::ServiceKey;
use fsfilter_kernel::{image, trace, unicode, wide};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT};
use windows_sys::Wdk::Storage::FileSystem::{
    IoRegisterFsRegistrationChangeMountAware, IoUnregisterFsRegistrationChange,
};
use windows_sys::Wdk::System::SystemServices::{IoCreateDevice, KeWaitForSingleObject};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use crate::attach;
use crate::dispatch::dispatch;
use crate::fastio::FastIoTable;
use crate::state::{DRIVER_TAG, DeviceExt, DeviceKind, DriverState, Image};

/// `FILE_DEVICE_DISK_FILE_SYSTEM`, the type of the filter's control device.
const CONTROL_DEVICE_TYPE: u32 = 0x08;
/// `FILE_DEVICE_SECURE_OPEN`.
const SECURE_OPEN: u32 = 0x100;

/// The `DriverEntry` of a legacy filter built from `F`.
///
/// # Safety
/// Called once per image by the I/O manager (or the simulator's loader) at `PASSIVE_LEVEL` with a
/// valid driver object and registry path.
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
    let registration = match fsfilter::registration_in_force(&filter) {
        Ok(None) => F::REGISTRATION,
        Ok(Some(r)) => r,
        Err(_) => return Status::INVALID_PARAMETER.0,
    };
    let mut name_units = [0u16; 96];
    let name_len = control_name(&parameters, &mut name_units);
    drop(parameters);
    // Built in place in zeroed pool, not on the kernel stack (the tables are kilobytes).
    // SAFETY: every field `init` does not write is valid as zero: null device pointer, zeroed
    // events (initialized right below), zero counters and flags, the pended, deferred-post,
    // section and load-buffer tables (empty when zero, their invariants), and the stream
    // contexts' empty list and lock (a fast mutex, initialized right below for a filter that
    // declares contexts, untouched otherwise).
    let init = |p: *mut Image<F>| {
        // SAFETY: `p` is the fresh, aligned, zeroed allocation; the state is its first field.
        unsafe { init_fields(p.cast::<DriverState<F>>(), filter, registration, driver) }
    };
    // SAFETY: see above; `init` writes the remaining fields.
    let image = unsafe { PoolBox::<Image<F>>::try_new_zeroed_with(DRIVER_TAG, init) };
    let image = match image {
        Ok(s) => s.into_raw(),
        Err(e) => return e.status().0,
    };
    // The state is the image's first field (`repr(C)`): the same address, the whole block's
    // provenance (`discard` casts it back).
    let state = image.cast::<DriverState<F>>();
    // SAFETY: our fresh state in non-paged pool, not shared yet; the events live in it.
    let fresh = unsafe { &mut *state };
    if fsfilter::load_buffers::<F>() {
        // Replaces the zeroed, empty table; dropped with the state, after the filter.
        fresh.load_blocks = blocks;
    }
    attach::init_events(fresh);
    if fsfilter::context_words::<F>() > 0 {
        // SAFETY: our fresh image, not shared yet.
        crate::contexts::init(unsafe { &mut (*image).contexts });
    }
    // The driver's own unit, which unload gives up.
    fresh.live = AtomicU32::new(1);
    image::set(state.cast());

    // The filter's control device (facts.md §1.2, step 1): \FileSystem\Filters\<service>. The
    // directory exists from Windows XP on; there is no fallback name for older systems. The
    // service name is kept to 64 ASCII characters (`ServiceKey`): two services whose names agree
    // that far collide here, and the second fails to load with STATUS_OBJECT_NAME_COLLISION.
    let name = unicode::unicode_string(name_units.get(..name_len).unwrap_or(&[]));
    let mut control: *mut DEVICE_OBJECT = core::ptr::null_mut();
    let ext_size = crate::messages::control_ext_size::<F>();
    // SAFETY: our driver object, a valid name.
    let status = unsafe {
        IoCreateDevice(
            driver,
            ext_size,
            &name,
            CONTROL_DEVICE_TYPE,
            SECURE_OPEN,
            false,
            &mut control,
        )
    };
    if status < 0 {
        // SAFETY: nothing else references the state.
        unsafe { discard::<F>(state) };
        return status;
    }
    // SAFETY: the device we created.
    let slot = unsafe { crate::raw::ext_slot::<F>(control) };
    // SAFETY: its zeroed extension, sized for a DeviceExt<F>, written once.
    unsafe { slot.write(DeviceExt::new(DeviceKind::Control, control)) };
    // SAFETY: our state.
    unsafe { (*state).control = control };
    // The message channel's link (\DosDevices\<name> -> the control device), when declared.
    if let Some(channel) = fsfilter::message_channel::<F>() {
        // SAFETY: our control device, created with the channel's extension, not yet reachable.
        unsafe { crate::messages::init_control::<F>(control) };
        // SAFETY: PASSIVE_LEVEL, the control device created above under `name`.
        let status = unsafe { crate::messages::create_link(channel, &name) };
        if status < 0 {
            // SAFETY: our control device, never attached.
            unsafe { attach::delete_device::<F>(control) };
            // SAFETY: nothing else references the state.
            unsafe { discard::<F>(state) };
            return status;
        }
    }

    // Dispatch table (facts.md §1.2, step 2): every major function, pass-through by default, but
    // IRP_MJ_POWER: it never reaches a file-system stack, and a file-system filter registers no
    // dispatch routine for it (§1.6); its slot keeps the I/O manager's default.
    // SAFETY: our driver object, before any device of ours is attached.
    let d = unsafe { &mut *driver.cast_mut() };
    for (major, slot) in d.MajorFunction.iter_mut().enumerate() {
        if major != usize::from(fsfilter::MajorFunction::Power.code()) {
            *slot = Some(dispatch::<F>);
        }
    }
    // Step 3: the fast-I/O table.
    d.FastIoDispatch = core::ptr::from_ref(FastIoTable::<F>::get()).cast_mut();
    // Without an unload callback the filter cannot be unloaded (docs/semantics.md), nor with
    // DO_NOT_SUPPORT_SERVICE_STOP (`DriverState::unloadable`).
    // SAFETY: our state, initialized above; nothing else writes it yet.
    let unloadable = unsafe { (*state).unloadable() };
    d.DriverUnload = if unloadable { Some(driver_unload::<F>) } else { None };

    // Step 4 (facts.md §1.2): FsFilter callbacks (before any device of ours is in a stack).
    // SAFETY: our driver object, at PASSIVE_LEVEL.
    let status = unsafe { crate::fsfilt::register::<F>(driver) };
    if status < 0 {
        d.DriverUnload = None;
        // SAFETY: the link made above, from DriverEntry.
        unsafe { delete_channel_link::<F>() };
        // SAFETY: our control device, never attached.
        unsafe { attach::delete_device::<F>(control) };
        // SAFETY: nothing else references the state.
        unsafe { discard::<F>(state) };
        return status;
    }
    // Step 5: file-system notifications; already-registered file systems are reported before the
    // call returns. Synchronized with mounts (Windows 7 and later, facts.md §1.1): a mount in
    // progress finishes first and a new one waits, so that no volume mounts between the attach
    // to its file system's control device and the enumeration of its volumes.
    // SAFETY: our driver object and routine.
    let status = unsafe {
        IoRegisterFsRegistrationChangeMountAware(driver, Some(attach::fs_notification::<F>), true)
    };
    if status < 0 {
        // STATUS_NOT_SUPPORTED under the legacy-filter block policy: give everything back and
        // report it, rather than stay loaded attached to nothing.
        d.DriverUnload = None;
        // SAFETY: the link made above, from DriverEntry.
        unsafe { delete_channel_link::<F>() };
        // SAFETY: our control device, never attached.
        unsafe { attach::delete_device::<F>(control) };
        // SAFETY: nothing else references the state.
        unsafe { discard::<F>(state) };
        return status;
    }
    // Step 6: RAW, by name.
    // SAFETY: our published state, alive until unload.
    let state = unsafe { &*state };
    // SAFETY: DriverEntry at PASSIVE_LEVEL.
    unsafe { attach::attach_to_raw::<F>(state) };
    state.started.store(true, Ordering::Release);
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
unsafe fn init_fields<F: Filter>(
    p: *mut DriverState<F>,
    filter: F,
    registration: fsfilter::Registration,
    driver: *const DRIVER_OBJECT,
) {
    // SAFETY: `p` is valid for writes (the caller's contract); each write fills one field.
    unsafe { (&raw mut (*p).filter).write(filter) };
    // SAFETY: as above.
    unsafe { (&raw mut (*p).registration).write(registration) };
    // SAFETY: as above.
    unsafe { (&raw mut (*p).driver).write(driver) };
}

/// Writes `\FileSystem\Filters\<service>` into `out`; returns its length.
fn control_name(parameters: &ServiceKey, out: &mut [u16; 96]) -> usize {
    let prefix = wide!("\\FileSystem\\Filters\\");
    // The service name is ASCII (`ServiceKey::open` turns anything else into '?'), so each byte
    // is one UTF-16 unit, and no UTF-8 decoder is linked for it.
    let service = parameters.service_name().bytes().map(u16::from);
    let mut n = 0;
    for u in prefix.iter().copied().chain(service) {
        let Some(slot) = out.get_mut(n) else { break };
        *slot = u;
        n += 1;
    }
    n
}

/// Deletes the message channel's link, when the filter declares a channel.
///
/// # Safety
/// `PASSIVE_LEVEL`; `DriverEntry` made the link.
unsafe fn delete_channel_link<F: Filter>() {
    if let Some(channel) = fsfilter::message_channel::<F>() {
        // SAFETY: the caller's contract.
        unsafe { crate::messages::delete_link(channel) };
    }
}

/// # Safety
/// `state` must be the published state (the image's first field, with the image block's
/// provenance), unreachable by callbacks.
unsafe fn discard<F: Filter>(state: *mut DriverState<F>) {
    image::set(core::ptr::null_mut());
    // SAFETY: the caller guarantees exclusive ownership of the image block the state heads.
    drop(unsafe { PoolBox::from_raw(state.cast::<Image<F>>(), DRIVER_TAG) });
}

/// `DriverUnload`: the filter's unload callback is told the unload is mandatory (a service stop
/// cannot be refused); every device is detached; outstanding operations drain; instances are torn
/// down; devices are deleted; nothing of the driver runs after it returns.
///
/// The walk of the driver's device list takes no references: it is safe because nothing else
/// deletes our devices once it can begin. Deletions elsewhere (a device retired by its last
/// operation or by `FastIoDetachDevice`, an attach given up) go through
/// `attach::delete_outside_unload`, which leaves them to the last loop here once unload began, and
/// which the walk waits for when they began before; attaches take the attach lock and give up
/// once unload began, and the walk begins after taking that lock once. The one deletion not
/// waited for is that of a device with another still attached above it, which may be what calls
/// this routine, from inside its `IoDeleteDevice`, with the device off the list already
/// (`attach::retire_worker`).
unsafe extern "system" fn driver_unload<F: Filter>(driver: *const DRIVER_OBJECT) {
    let raw = image::get().cast::<DriverState<F>>();
    // SAFETY: this image's state, or null.
    let Some(state) = (unsafe { raw.as_ref() }) else { return };
    let answer = state.filter.unload(UnloadFlags::MANDATORY);
    trace::emit(&TraceEvent::Unload {
        flags: UnloadFlags::MANDATORY,
        status: answer.err().map_or(Status::SUCCESS, fsfilter::Error::status),
    });
    // Sequentially consistent, with the count's increment and this flag's load in
    // `attach::delete_outside_unload`: unload reads the count after storing the flag, a deletion
    // reads the flag after counting itself, and one of the two must see the other.
    state.unloading.store(true, Ordering::SeqCst);
    // SAFETY: our registration.
    unsafe { IoUnregisterFsRegistrationChange(driver, Some(attach::fs_notification::<F>)) };
    // No client is connected: the I/O manager calls DriverUnload only once no handle to the
    // control device is left (WRK loadunld.c IopCheckUnloadDriver), and each close cleaned up.
    // SAFETY: DriverUnload, PASSIVE_LEVEL; DriverEntry made the link.
    unsafe { delete_channel_link::<F>() };
    // Deletions that began before. The event is set when the count falls to zero after the flag
    // was stored: every deletion counted before the flag is over then (those counted after it
    // leave their device to the last loop here), so one wait is enough, even when the count rose
    // again before it was read.
    if state.retiring.load(Ordering::SeqCst) != 0 {
        // SAFETY: the state's synchronization event (an untimed wait, as below).
        let _ = unsafe {
            KeWaitForSingleObject(state.quiet.get().cast(), 0, 0, false, core::ptr::null())
        };
    }
    // An attach in progress finishes; the next ones find unload began.
    attach::lock(state);
    attach::unlock(state);
    // Every device of ours, however many (one per volume and file system), from the driver
    // object's list; it changes only as we create devices (at its head) from now on.
    // SAFETY: our live driver object.
    let mut cur = unsafe { (*driver).DeviceObject };
    while !cur.is_null() {
        // SAFETY: our device.
        if let Some(ext) = unsafe { state.ext(cur) } {
            // Not one never attached. One detached already (`FastIoDetachDevice`) is left as it
            // is: its teardown started, and its retirement goes to the last loop.
            if !ext.lower.is_null() {
                let reason = TeardownFlags::MANDATORY_FILTER_UNLOAD;
                // SAFETY: our device and the device it is attached to.
                unsafe { attach::detach(state, cur, ext.lower, reason) };
            }
        }
        // SAFETY: a live device of ours.
        cur = unsafe { (*cur).NextDevice };
    }
    // The driver's own unit: the last device retired sets the event, once, and then touches
    // the state no more.
    if state.live.fetch_sub(1, Ordering::AcqRel) != 1 {
        let drained = state.drained.get();
        // SAFETY: the state's synchronization event. An untimed wait only ends satisfied on
        // Windows; the simulator ends one that nothing can satisfy (a DEADLOCK finding) rather
        // than hang, and unload goes on.
        let _ = unsafe { KeWaitForSingleObject(drained.cast(), 0, 0, false, core::ptr::null()) };
    }
    // Every device left is retired or was never attached: none is in use.
    // SAFETY: our live driver object.
    let mut cur = unsafe { (*driver).DeviceObject };
    while !cur.is_null() {
        // Read before the device goes.
        // SAFETY: a live device of ours.
        let next = unsafe { (*cur).NextDevice };
        // Not one that its retirement's worker deletes (`attach::retire_worker`).
        // SAFETY: a live device of ours.
        let slot = unsafe { crate::raw::ext_slot::<F>(cur) };
        // SAFETY: its extension.
        let deleting = unsafe { (*slot).torn_down.load(Ordering::Relaxed) };
        if deleting != attach::DELETING {
            // Only a device whose teardown started (a detach stored its reason): one never
            // attached had its instance torn down where its attach failed, and a second
            // complete, with no reason, would break rules 20 and 21 (an attach retrying for a
            // volume still initializing when a stop comes; the simulator's threads cannot
            // interleave it, docs/simulator.md, "What the threads cannot do").
            if deleting != 0 {
                // SAFETY: our device (a teardown only for a volume device with an instance).
                unsafe { attach::teardown_complete(state, cur) };
            }
            // SAFETY: ours, detached.
            unsafe { attach::delete_device::<F>(cur) };
        }
        cur = next;
    }
    // SAFETY: nothing of the driver runs any more.
    unsafe { discard::<F>(raw) };
}
