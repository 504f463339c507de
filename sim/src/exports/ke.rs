//! Kernel (Ke) exports: events, kernel mutexes, waits, time, spin locks and IRQL, bugchecks.

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{KDPC, KEVENT, KMUTANT, PKDEFERRED_ROUTINE};
use windows_sys::Wdk::System::SystemServices::{KTIMER, KWAIT_REASON};
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS};
use windows_sys::Win32::System::Diagnostics::Debug::BUGCHECK_ERROR;
use windows_sys::Win32::System::Kernel::EVENT_TYPE;

use crate::events::Rule;
use crate::kernel::{self, DISPATCH_LEVEL};

/// A NULL dispatcher object (or spin lock, or out parameter) passed to `what`: Windows
/// dereferences it and bugchecks; the simulator reports a `BUGCHECK` finding and the call does
/// nothing.
fn null_object<T>(object: *const T, what: &str) -> bool {
    if !object.is_null() {
        return false;
    }
    kernel::with(|k| k.report_current(Rule::Bugcheck, format!("{what} on a NULL object")));
    true
}

export! { windows_sys::Wdk::System::SystemServices::KeInitializeEvent =>
    /// `KeInitializeEvent`.
    fn KeInitializeEvent(event: *mut KEVENT, r#type: EVENT_TYPE, state: bool) {
        if null_object(event, "KeInitializeEvent") {
            return;
        }
        // SAFETY: the caller's event storage.
        unsafe { crate::sched::initialize_event(event, r#type, state) };
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeSetEvent =>
    /// `KeSetEvent`: callers run at IRQL <= DISPATCH_LEVEL, or <= APC_LEVEL with `Wait` TRUE
    /// (its reference page); a break is reported and the event still signalled.
    fn KeSetEvent(event: *mut KEVENT, _increment: i32, wait: bool) -> i32 {
        let max = if wait { crate::kernel::APC_LEVEL } else { DISPATCH_LEVEL };
        let what = if wait { "KeSetEvent with Wait TRUE" } else { "KeSetEvent" };
        if kernel::current_irql() > max {
            kernel::with(|k| k.check_irql(max, what));
        }
        if null_object(event, "KeSetEvent") {
            return 0;
        }
        // SAFETY: the caller's initialized event.
        unsafe { crate::sched::set_event(event) }
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeResetEvent =>
    /// `KeResetEvent`.
    fn KeResetEvent(event: *mut KEVENT) -> i32 {
        super::at_most_dispatch("KeResetEvent");
        if null_object(event, "KeResetEvent") {
            return 0;
        }
        // SAFETY: the caller's initialized event.
        unsafe { crate::sched::reset_event(event) }
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeClearEvent =>
    /// `KeClearEvent`.
    fn KeClearEvent(event: *mut KEVENT) {
        super::at_most_dispatch("KeClearEvent");
        if null_object(event, "KeClearEvent") {
            return;
        }
        // SAFETY: the caller's initialized event.
        unsafe { crate::sched::reset_event(event) };
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeReadStateEvent =>
    /// `KeReadStateEvent`.
    fn KeReadStateEvent(event: *const KEVENT) -> i32 {
        if null_object(event, "KeReadStateEvent") {
            return 0;
        }
        // SAFETY: the caller's initialized event.
        unsafe { crate::sched::read_event(event.cast_mut()) }
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeWaitForSingleObject =>
    /// `KeWaitForSingleObject` on an event or a timer: other ready work runs until it signals;
    /// on a kernel mutex: acquires it (`crate::kmutex::wait`).
    fn KeWaitForSingleObject(object: *const c_void, _waitreason: KWAIT_REASON, _waitmode: i8, _alertable: bool, timeout: *const i64) -> NTSTATUS {
        // SAFETY: NULL (wait forever) or the caller's timeout value.
        let timeout = unsafe { timeout.as_ref() }.copied();
        if null_object(object, "KeWaitForSingleObject") {
            return Status::INVALID_PARAMETER.0;
        }
        // SAFETY: the caller's initialized dispatcher object.
        if unsafe { crate::kmutex::is_mutex(object.cast()) } {
            // SAFETY: the caller's initialized mutex, alive during the wait.
            return unsafe { crate::kmutex::wait(object.cast_mut().cast(), timeout) };
        }
        // SAFETY: the caller waits on its own initialized event, alive during the wait.
        unsafe { crate::sched::wait_for_event(object.cast_mut().cast(), timeout) }
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeInitializeMutex =>
    /// `KeInitializeMutex` (IRQL: any level): a free mutex (`crate::kmutex::initialize`).
    fn KeInitializeMutex(mutex: *mut KMUTANT, _level: u32) {
        if null_object(mutex, "KeInitializeMutex") {
            return;
        }
        // SAFETY: the caller's mutex storage.
        unsafe { crate::kmutex::initialize(mutex) };
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeReleaseMutex =>
    /// `KeReleaseMutex` (IRQL <= DISPATCH_LEVEL): `crate::kmutex::release`. `Wait` TRUE (the
    /// release followed at once by a wait, without lowering the IRQL between) changes nothing
    /// here: the simulator runs nothing between the two calls anyway.
    fn KeReleaseMutex(mutex: *mut KMUTANT, _wait: bool) -> i32 {
        super::at_most_dispatch("KeReleaseMutex");
        if null_object(mutex, "KeReleaseMutex") {
            return 0;
        }
        // SAFETY: the caller's initialized mutex.
        unsafe { crate::kmutex::release(mutex) }
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeDelayExecutionThread =>
    /// `KeDelayExecutionThread`.
    fn KeDelayExecutionThread(_waitmode: i8, _alertable: bool, interval: *const i64) -> NTSTATUS {
        // SAFETY: the caller's interval.
        let interval = unsafe { interval.as_ref() }.copied().unwrap_or(0);
        crate::sched::delay(interval)
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeQuerySystemTimePrecise =>
    /// `KeQuerySystemTimePrecise`: the virtual clock, from 1 January 2026 (in 100 ns units since
    /// 1601, like the system time).
    fn KeQuerySystemTimePrecise(currenttime: *mut i64) {
        if null_object(currenttime, "KeQuerySystemTimePrecise") {
            return;
        }
        let now = kernel::with(|k| k.sched.now) as i64;
        // SAFETY: the caller's out parameter.
        unsafe { *currenttime = crate::fs::media::EPOCH_2026 + now };
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeQueryTimeIncrement =>
    /// `KeQueryTimeIncrement`: 15.625 ms, the usual clock interval.
    fn KeQueryTimeIncrement() -> u32 {
        156_250
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeInitializeSpinLock =>
    /// `KeInitializeSpinLock`.
    fn KeInitializeSpinLock(spinlock: *mut usize) {
        if null_object(spinlock, "KeInitializeSpinLock") {
            return;
        }
        // SAFETY: the caller's lock storage.
        unsafe { *spinlock = 0 };
    }
}

export! { fsfilter_kernel::ntos::KeAcquireSpinLockRaiseToDpc =>
    /// `KeAcquireSpinLockRaiseToDpc`: raises to `DISPATCH_LEVEL`. The simulator has one
    /// processor and no preemption, so a lock found held means the same code path took it twice:
    /// a deadlock on Windows, reported here.
    fn KeAcquireSpinLockRaiseToDpc(spinlock: *mut usize) -> u8 {
        kernel::with(|k| {
            let old = k.irql();
            if old > DISPATCH_LEVEL {
                k.report_current(Rule::IrqlTooHigh, "KeAcquireSpinLock above DISPATCH_LEVEL");
            }
            // SAFETY: NULL (reported) or the caller's lock storage.
            match unsafe { spinlock.as_mut() } {
                None => k.report_current(Rule::Bugcheck, "KeAcquireSpinLock on a NULL lock"),
                Some(lock) => {
                    if *lock != 0 {
                        k.report_current(Rule::Deadlock, "a spin lock acquired while already held (recursive acquisition deadlocks on Windows)");
                    }
                    *lock = 1;
                }
            }
            k.set_irql(k.irql().max(DISPATCH_LEVEL));
            old
        })
    }
}

export! { fsfilter_kernel::ntos::KeReleaseSpinLock =>
    /// `KeReleaseSpinLock`: releases and restores the IRQL.
    fn KeReleaseSpinLock(spinlock: *mut usize, newirql: u8) {
        kernel::with(|k| {
            // SAFETY: NULL (reported) or the caller's lock storage.
            match unsafe { spinlock.as_mut() } {
                None => k.report_current(Rule::Bugcheck, "KeReleaseSpinLock on a NULL lock"),
                Some(lock) => {
                    if *lock == 0 {
                        k.report_current(Rule::SpinLockMisuse, "KeReleaseSpinLock on a lock that is not held");
                    }
                    *lock = 0;
                }
            }
            if newirql > k.irql() {
                k.report_current(Rule::SpinLockMisuse, "KeReleaseSpinLock restoring an IRQL above the current one");
            }
            k.set_irql(newirql);
        });
    }
}

export! { windows_sys::Wdk::System::SystemServices::PsGetCurrentThreadId =>
    /// `PsGetCurrentThreadId`.
    fn PsGetCurrentThreadId() -> HANDLE {
        kernel::with(|k| (k.thread.0 as usize * 4) as HANDLE)
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeBugCheckEx =>
    /// `KeBugCheckEx`: the machine stops; the event names the code and parameters. (On Windows it
    /// does not return; in the simulator it returns, and every later kernel call fails.)
    fn KeBugCheckEx(bugcheckcode: BUGCHECK_ERROR, p1: usize, p2: usize, p3: usize, p4: usize) {
        kernel::with(|k| {
            let text = format!("KeBugCheckEx(0x{bugcheckcode:08X}, 0x{p1:x}, 0x{p2:x}, 0x{p3:x}, 0x{p4:x})");
            k.report_current(Rule::Bugcheck, text.clone());
            k.crashed = Some(text);
        });
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeStallExecutionProcessor =>
    /// `KeStallExecutionProcessor`: busy-waits; the virtual clock advances.
    fn KeStallExecutionProcessor(microseconds: u32) {
        kernel::with(|k| k.sched.now += u64::from(microseconds) * 10);
    }
}

/// `STATUS_*` used by the wait functions.
pub const WAIT_TIMEOUT: NTSTATUS = Status::TIMEOUT.0;

export! { windows_sys::Wdk::System::SystemServices::KeInitializeDpc =>
    /// `KeInitializeDpc`: records the routine and context in the DPC object.
    fn KeInitializeDpc(dpc: *mut KDPC, deferredroutine: PKDEFERRED_ROUTINE, deferredcontext: *const c_void) {
        // SAFETY: the caller's DPC object, valid for writes.
        if let Some(d) = unsafe { dpc.as_mut() } {
            d.DeferredRoutine = deferredroutine;
            d.DeferredContext = deferredcontext.cast_mut();
        }
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeInitializeTimer =>
    /// `KeInitializeTimer`: a notification timer, not armed and not signalled. On an armed timer
    /// it is a `BUGCHECK` finding (choice): Windows rewrites the header of a timer still linked
    /// in its timer table, which a later `KeSetTimer` links a second time (list corruption); the
    /// simulator disarms it.
    fn KeInitializeTimer(timer: *mut KTIMER) {
        // SAFETY: the caller's timer storage, valid for writes.
        if let Some(t) = unsafe { timer.as_mut() } {
            // SAFETY: the type byte of the header's leading union (TimerNotificationObject).
            unsafe { *timer.cast::<u8>() = 8 };
            t.Header.SignalState = 0;
        }
        kernel::with(|k| {
            if k.sched.armed_timers.remove(&(timer as usize)).is_some() {
                k.report_current(
                    Rule::Bugcheck,
                    "KeInitializeTimer on an armed timer: it stays in the timer table, and the \
                     next KeSetTimer links it twice (the timer is disarmed)",
                );
            }
        });
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeSetTimer =>
    /// `KeSetTimer`: arms (or re-arms) the timer; when it expires its DPC, if any, runs at
    /// `DISPATCH_LEVEL` as code of the image that armed it. TRUE when it was armed already.
    fn KeSetTimer(timer: *mut KTIMER, duetime: i64, dpc: *const KDPC) -> bool {
        let armed = kernel::with(|k| {
            if !k.check_irql(DISPATCH_LEVEL, "KeSetTimer") {
                return None;
            }
            k.sched.timer_generation += 1;
            let generation = k.sched.timer_generation;
            let armed = (generation, dpc as usize);
            let was = k.sched.armed_timers.insert(timer as usize, armed).is_some();
            let delay = if duetime < 0 {
                duetime.unsigned_abs()
            } else {
                u64::try_from(duetime - crate::fs::media::EPOCH_2026).unwrap_or(0).saturating_sub(k.sched.now)
            };
            Some((was, generation, delay, k.current_image()))
        });
        let Some((was, generation, delay, image)) = armed else { return false };
        // Setting a timer makes it not signalled; its expiry signals it, which satisfies waits
        // on the timer itself.
        // SAFETY: the caller's initialized timer.
        if let Some(t) = unsafe { timer.as_mut() } {
            t.Header.SignalState = 0;
        }
        let (timer, dpc) = (timer as usize, dpc as usize);
        crate::sched::queue_dpc("timer DPC", image, delay, Box::new(move || {
            let current = kernel::with(|k| {
                if k.sched.armed_timers.get(&timer).is_some_and(|a| a.0 == generation) {
                    k.sched.armed_timers.remove(&timer);
                    true
                } else {
                    false
                }
            });
            if !current {
                return;
            }
            // A driver that unloaded with its timer armed: the DPC is code of the unloaded image
            // (Windows crashes there), the timer its freed memory. Reported; neither is touched.
            let loaded = kernel::with(|k| {
                k.code_may_run(
                    image,
                    "a timer expired after its driver unloaded with the timer armed (its DPC \
                     would run)",
                )
            });
            if !loaded {
                return;
            }
            // SAFETY: the armed timer, valid until it expires or is cancelled (the driver's
            // contract).
            if let Some(t) = unsafe { (timer as *mut KTIMER).as_mut() } {
                t.Header.SignalState = 1;
            }
            if dpc == 0 {
                return;
            }
            // SAFETY: the DPC object the driver armed the timer with, valid until it runs (the
            // driver's contract).
            let d = unsafe { &*(dpc as *const KDPC) };
            if let Some(routine) = fsfilter_kernel::ntos::deferred_routine_from_field(d.DeferredRoutine) {
                // SAFETY: the driver's DPC routine with its DPC and context.
                unsafe { routine(dpc as *const KDPC, d.DeferredContext, std::ptr::null(), std::ptr::null()) };
            }
        }));
        was
    }
}

export! { windows_sys::Wdk::System::SystemServices::KeCancelTimer =>
    /// `KeCancelTimer`: disarms the timer; TRUE when it was armed (its DPC will not run).
    fn KeCancelTimer(param0: *mut KTIMER) -> bool {
        super::at_most_dispatch("KeCancelTimer");
        kernel::with(|k| k.sched.armed_timers.remove(&(param0 as usize)).is_some())
    }
}
