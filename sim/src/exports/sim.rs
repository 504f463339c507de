//! The simulator's own exports: what fsfilter-kernel asks of it where Windows uses an intrinsic
//! or a per-image global, the trace hook, and `DbgPrintEx`.

use std::ffi::c_void;
use std::sync::atomic::AtomicPtr;

use fsfilter::trace::TraceEvent;
use fsfilter::{MajorFunction, OperationKind, Status};

use crate::events::{Callback, EventKind, RequestRef};
use crate::kernel;

/// `KeGetCurrentIrql` on the simulated processor (CR8 on Windows).
#[unsafe(no_mangle)]
pub extern "C" fn FsfSimGetCurrentIrql() -> u8 {
    kernel::current_irql()
}

/// The global slot of the running driver image (a static on Windows).
#[unsafe(no_mangle)]
pub extern "C" fn FsfSimImageSlot() -> *const AtomicPtr<c_void> {
    // The running image's slot without borrowing the kernel; outside any image, the kernel
    // reports the use and answers its stray slot.
    kernel::running_image_slot().unwrap_or_else(|| kernel::with(|k| k.current_slot()))
}

/// `fsfilter_kernel::image::call_as_driver_of`, first half: the driver that owns `device`
/// becomes the running image (its image global, its unload state), as the I/O manager makes a
/// dispatch routine's driver for the call. Answers what [`fsfilter_sim_leave_driver`] restores,
/// or None when `device` is no device (the call then runs as the caller's code).
#[unsafe(no_mangle)]
pub fn fsfilter_sim_enter_driver_of(device: usize) -> Option<usize> {
    kernel::enter_driver_of(device)
}

/// `fsfilter_kernel::image::call_as_driver_of`, second half: the image that ran before
/// [`fsfilter_sim_enter_driver_of`] runs again.
#[unsafe(no_mangle)]
pub fn fsfilter_sim_leave_driver(previous: usize) {
    kernel::leave_driver(previous);
}

/// Whether the trace hook records anything now ([`fsfilter_sim_trace`] drops every event
/// otherwise): the backends build the events of their hot paths only when it does, as a Windows
/// build without `DbgPrintEx` tracing builds none.
#[unsafe(no_mangle)]
pub fn fsfilter_sim_trace_wanted() -> bool {
    kernel::recording_callbacks()
}

/// The backends' trace hook: records a callback into filter logic, attributed to the running
/// image, with the instance resolved to a volume and the operation to a user request. Pre and
/// post callbacks, nearly every event of a run, come by value instead
/// ([`fsfilter_sim_trace_pre`], [`fsfilter_sim_trace_post`]: `fsfilter_kernel::trace::emit`
/// sends them there); one that comes here is recorded alike.
#[unsafe(no_mangle)]
pub fn fsfilter_sim_trace(event: &TraceEvent<'_>) {
    if kernel::recording_callbacks() {
        trace_other(event);
    }
}

/// [`fsfilter_sim_trace`] for a pre callback, its fields by value: what the backends call
/// (`fsfilter_kernel::trace::emit`), so that the event is not read back from memory.
#[unsafe(no_mangle)]
pub fn fsfilter_sim_trace_pre(
    instance: usize,
    operation: usize,
    major: MajorFunction,
    minor: u8,
    kind: OperationKind,
    outcome: &'static str,
    status: Option<Status>,
) {
    trace_callback(instance, operation, || Callback::Pre { major, minor, kind, outcome, status });
}

/// [`fsfilter_sim_trace`] for a post callback, its fields by value (as
/// [`fsfilter_sim_trace_pre`]).
#[unsafe(no_mangle)]
pub fn fsfilter_sim_trace_post(
    instance: usize,
    operation: usize,
    major: MajorFunction,
    draining: bool,
    when_safe: bool,
    outcome: &'static str,
    status: Status,
) {
    trace_callback(instance, operation, || Callback::Post {
        major,
        draining,
        when_safe,
        outcome,
        status,
    });
}

/// Records a pre or post callback, nearly every event of a run: the short way, with the
/// callback built from the fields at hand and no instance callback to check. The callback is
/// built where the event is, last: built first and carried into the kernel's borrow, it went
/// through memory and was read back at once with wider loads than wrote it, the store-forwarding
/// stall that passing the fields by value removes (`fsfilter_kernel::trace::emit`).
#[inline(always)]
fn trace_callback(instance: usize, operation: usize, callback: impl FnOnce() -> Callback) {
    if !kernel::recording_callbacks() {
        return;
    }
    kernel::with(|k| {
        let driver = running_driver(k);
        let (volume, io) = attribute(k, Some(instance), Some(operation));
        k.log(EventKind::Callback { driver, volume, io, callback: callback() });
    });
}

/// [`fsfilter_sim_trace`]: any event, off the path of the pre and post callbacks.
#[cold]
#[inline(never)]
fn trace_other(event: &TraceEvent<'_>) {
    kernel::with(|k| {
        let driver = running_driver(k);
        let (instance, operation) = match *event {
            TraceEvent::InstanceSetup { instance, volume_object, .. } => {
                // Not attached yet (legacy): the volume object resolves when the instance does
                // not. The device remembers it, so that the events of an instance whose attach
                // then fails (its teardown) still name the volume.
                let i = if k.resolve_instance(instance.0).is_some() {
                    instance.0
                } else {
                    let served = k.resolve_instance(volume_object);
                    if let Some(d) = k.objects.device_id(instance.0 as *const _) {
                        let info = k.objects.device_mut(d);
                        info.last_volume = info.last_volume.or(served);
                    }
                    volume_object
                };
                (Some(i), None)
            }
            TraceEvent::InstanceQueryTeardown { instance, .. }
            | TraceEvent::TeardownStart { instance, .. }
            | TraceEvent::TeardownComplete { instance, .. }
            | TraceEvent::SectionConflict { instance, .. } => (Some(instance.0), None),
            TraceEvent::Pre { instance, operation, .. }
            | TraceEvent::Post { instance, operation, .. }
            | TraceEvent::Resumed { instance, operation, .. }
            | TraceEvent::DataScan { instance, operation, .. } => {
                (Some(instance.0), Some(operation))
            }
            TraceEvent::Note { instance, operation, .. } => (instance.map(|i| i.0), operation),
            TraceEvent::Unload { .. } => (None, None),
        };
        // The instance callbacks run at PASSIVE_LEVEL (facts.md §2.5), whichever backend calls
        // them: a legacy backend calls them itself, so the verifier checks it here.
        if let Some(what) = instance_callback_name(event) {
            k.check_irql(kernel::PASSIVE_LEVEL, what);
        }
        let (volume, io) = attribute(k, instance, operation);
        k.log(EventKind::Callback { driver, volume, io, callback: Callback::from_trace(event) });
    });
}

/// The service name of the image whose code reports the event (`kernel` outside any).
#[inline(always)]
fn running_driver(k: &crate::kernel::Kernel) -> crate::name::Name {
    k.current_image().map_or_else(|| "kernel".into(), |i| k.image_shared_name(i))
}

/// The volume of `instance` and the user request of `operation`, as the event shows them.
#[inline(always)]
fn attribute(
    k: &crate::kernel::Kernel,
    instance: Option<usize>,
    operation: Option<usize>,
) -> (Option<crate::name::Name>, Option<RequestRef>) {
    // A callback of the operation the Filter Manager is calling into now: its instance and
    // request are at hand (the same answers as the lookups, see `Running`), and the instance
    // remembers its volume's name.
    let running =
        k.fltmgr.ops.running.filter(|r| instance == Some(r.handle) && operation == Some(r.data));
    if let Some(r) = running {
        return (k.flt_inst_sim_volume_name(r.inst), r.request.map(|r| RequestRef(r.0)));
    }
    // A callback a legacy filter reports from the dispatch or completion routine the I/O
    // manager is running for this device and IRP: both are at hand too (`IoCall`).
    let (volume, io) =
        match k.io_call.filter(|c| instance == Some(c.device) && operation == Some(c.irp)) {
            Some(c) => (k.device_volume(c.dev), c.request),
            None => (
                instance.and_then(|i| k.resolve_instance(i)),
                operation.and_then(|o| k.resolve_operation(o)),
            ),
        };
    (volume.map(|v| k.volume_shared_name(v)), io.map(|r| RequestRef(r.0)))
}

/// The name of an instance callback facts.md §2.5 gives `PASSIVE_LEVEL` (setup, teardown start and
/// complete); `None` for the others.
fn instance_callback_name(event: &TraceEvent<'_>) -> Option<&'static str> {
    match event {
        TraceEvent::InstanceSetup { .. } => Some("InstanceSetupCallback"),
        TraceEvent::TeardownStart { .. } => Some("InstanceTeardownStartCallback"),
        TraceEvent::TeardownComplete { .. } => Some("InstanceTeardownCompleteCallback"),
        _ => None,
    }
}

/// `DbgPrintEx` as fsfilter-kernel calls it (`"%.*s"` and its two arguments).
///
/// # Safety
/// `text` must hold `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn DbgPrintEx(
    _component: u32,
    _level: u32,
    _format: *const u8,
    len: i32,
    text: *const u8,
) -> u32 {
    let bytes = if text.is_null() || len <= 0 {
        &[][..]
    } else {
        // SAFETY: the caller guarantees `len` bytes at `text`.
        unsafe { std::slice::from_raw_parts(text, len as usize) }
    };
    let text = String::from_utf8_lossy(bytes).trim_end().to_owned();
    kernel::with(|k| {
        let driver = k.current_image_name();
        k.log(EventKind::DebugPrint { driver, text });
    });
    0
}

const _: () = {
    let _same: [unsafe extern "C" fn(u32, u32, *const u8, i32, *const u8) -> u32; 2] =
        [fsfilter_kernel::ntos::DbgPrintEx, DbgPrintEx];
};
