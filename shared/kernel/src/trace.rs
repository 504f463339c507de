//! The trace hook: every callback a backend makes into filter logic is reported here.
//!
//! In the simulator the event goes to the event log the lab prints. On Windows every event is
//! written with `DbgPrintEx` when the crate's `dbgprint-trace` feature is on and [`set_enabled`]
//! turned it on; otherwise only notes from filter logic are ([`note`]), and the other events cost
//! nothing (the optimizer removes their construction).

use fsfilter::trace::TraceEvent;
#[cfg(not(target_os = "windows"))]
use fsfilter::{MajorFunction, OperationKind, Status};

#[cfg(not(target_os = "windows"))]
unsafe extern "Rust" {
    /// Defined by `fsfilter-sim`: appends the event to the running simulation's log, attributed
    /// to the driver image that is running.
    fn fsfilter_sim_trace(event: &TraceEvent<'_>);
    /// Defined by `fsfilter-sim`: [`fsfilter_sim_trace`] for a [`TraceEvent::Pre`], its fields
    /// passed by value.
    fn fsfilter_sim_trace_pre(
        instance: usize,
        operation: usize,
        major: MajorFunction,
        minor: u8,
        kind: OperationKind,
        outcome: &'static str,
        status: Option<Status>,
    );
    /// Defined by `fsfilter-sim`: [`fsfilter_sim_trace`] for a [`TraceEvent::Post`], its fields
    /// passed by value.
    fn fsfilter_sim_trace_post(
        instance: usize,
        operation: usize,
        major: MajorFunction,
        draining: bool,
        when_safe: bool,
        outcome: &'static str,
        status: Status,
    );
    /// Defined by `fsfilter-sim`: whether [`fsfilter_sim_trace`] records events now.
    fn fsfilter_sim_trace_wanted() -> bool;
}

#[cfg(target_os = "windows")]
static ENABLED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Turns `DbgPrintEx` tracing on or off (Windows; the simulator always records).
pub fn set_enabled(on: bool) {
    #[cfg(target_os = "windows")]
    ENABLED.store(on, core::sync::atomic::Ordering::Relaxed);
    #[cfg(not(target_os = "windows"))]
    let _ = on;
}

/// Whether an event reported now would go anywhere: in the simulator, while it records
/// callbacks; on Windows, only with the `dbgprint-trace` feature and tracing turned on (otherwise
/// a constant `false`, so everything built for [`emit_with`] is compiled out).
#[inline]
pub fn wanted() -> bool {
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: the simulator defines this Rust-ABI function with exactly this signature; it
        // only reads a flag.
        unsafe { fsfilter_sim_trace_wanted() }
    }
    #[cfg(all(target_os = "windows", feature = "dbgprint-trace"))]
    {
        ENABLED.load(core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(all(target_os = "windows", not(feature = "dbgprint-trace")))]
    {
        false
    }
}

/// Reports the event `build` makes, building it only when it is [`wanted`]: for the per-operation
/// paths, where assembling an event nobody records is a cost the driver on Windows never pays.
#[inline]
pub fn emit_with<'e>(build: impl FnOnce() -> TraceEvent<'e>) {
    if wanted() {
        emit(&build());
    }
}

/// Reports one event.
///
/// In the simulator, a pre or post callback's event (nearly every event of a run) goes to the
/// simulator by value, field by field, and the function is inlined where the event is built, so
/// the event never goes through memory: the simulator reading the event back, with loads wider
/// than the stores that wrote it, stalled on store forwarding for about a third of the trace
/// hook's time (docs/performance-history.md). On Windows the function stays out of line: its print is
/// not repeated at each call site of a size-budgeted driver.
#[cfg_attr(not(target_os = "windows"), inline)]
pub fn emit(event: &TraceEvent<'_>) {
    #[cfg(not(target_os = "windows"))]
    match *event {
        TraceEvent::Pre { instance, operation, major, minor, kind, outcome, status } => {
            // SAFETY: the simulator defines this Rust-ABI function with exactly this signature
            // (it depends on the same `fsfilter` crate for the types).
            unsafe {
                fsfilter_sim_trace_pre(instance.0, operation, major, minor, kind, outcome, status)
            }
        }
        TraceEvent::Post { instance, operation, major, draining, when_safe, outcome, status } => {
            // SAFETY: as above.
            unsafe {
                fsfilter_sim_trace_post(
                    instance.0, operation, major, draining, when_safe, outcome, status,
                )
            }
        }
        // SAFETY: the simulator defines this Rust-ABI function with exactly this signature (it
        // depends on the same `fsfilter` crate for the type); it only reads the event.
        _ => unsafe { fsfilter_sim_trace(event) },
    }
    #[cfg(all(target_os = "windows", feature = "dbgprint-trace"))]
    {
        if ENABLED.load(core::sync::atomic::Ordering::Relaxed) {
            crate::log::print(
                crate::constants::DPFLTR_TRACE_LEVEL,
                format_args!("fsfilter: {event:?}\n"),
            );
        }
    }
    #[cfg(all(target_os = "windows", not(feature = "dbgprint-trace")))]
    {
        let _ = event;
    }
}

/// Reports a note from filter logic (`Services::note`). In the simulator it is a `note` event; on
/// Windows it is always a `DbgPrintEx` line at trace level, without `core::fmt` (the samples gate
/// their notes with their own parameters: passthrough's `Trace`, the probe's and scanner's
/// `Notes`), or the full event with the `dbgprint-trace` feature.
pub fn note(instance: Option<fsfilter::InstanceId>, operation: Option<usize>, text: &str) {
    #[cfg(any(not(target_os = "windows"), feature = "dbgprint-trace"))]
    emit(&TraceEvent::Note { instance, operation, text });
    #[cfg(all(target_os = "windows", not(feature = "dbgprint-trace")))]
    {
        let _ = (instance, operation);
        crate::log::print_parts(crate::constants::DPFLTR_TRACE_LEVEL, "fsfilter: ", text);
    }
}
