//! `FltRegisterFilter`, `FltStartFiltering`, `FltUnregisterFilter` (facts.md §2.6, §3, §5) and
//! the instance definitions in the registry (§2.5, both layouts).

use fsfilter::{Altitude, InstanceSetupFlags, MajorFunction, Status, TeardownFlags};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_REGISTRATION, FLT_OPERATION_REGISTRATION, FLT_REGISTRATION,
};

use super::contexts::ContextReg;
use super::frames::Placement;
use super::{
    FilterCallbacks, FilterId, FilterRec, FilterState, FltObject, InstanceDef, OpReg, OpTable,
    reg_flags,
};
use crate::events::{FltEvent, Rule};
use crate::faults::FaultKind;
use crate::kernel::{self, APC_LEVEL, Kernel, PASSIVE_LEVEL};
use crate::registry::{RegValue, SERVICES};

/// `IRP_MJ_OPERATION_END`.
const OPERATION_END: u8 = fsfilter::IRP_MJ_OPERATION_END;
/// `FLT_CONTEXT_END`.
const CONTEXT_END: u16 = 0xFFFF;
/// Entries read at most from a table (a table without its end marker is cut there).
const MAX_ENTRIES: usize = 256;

/// The smallest `Size` a registration of `version` can have: the fields its version defines.
fn min_size(minor: u8) -> usize {
    match minor {
        0 => std::mem::offset_of!(FLT_REGISTRATION, TransactionNotificationCallback),
        1 => std::mem::offset_of!(FLT_REGISTRATION, NormalizeNameComponentExCallback),
        2 => std::mem::offset_of!(FLT_REGISTRATION, SectionNotificationCallback),
        _ => size_of::<FLT_REGISTRATION>(),
    }
}

/// A registration as read, before the filter exists.
struct Parsed {
    version: u16,
    flags: u32,
    ops: OpTable,
    callbacks: FilterCallbacks,
    contexts: Vec<ContextReg>,
}

/// Why a registration is refused, with the verifier finding to report.
struct Refusal {
    status: Status,
    finding: Option<(Rule, String)>,
}

fn refuse(status: Status) -> Refusal {
    Refusal { status, finding: None }
}

/// Reads `FLT_REGISTRATION` (facts.md §2.6, §3).
///
/// # Safety
/// `reg` must be null or point to a registration whose tables are readable up to their end
/// markers.
unsafe fn parse(reg: *const FLT_REGISTRATION) -> Result<Parsed, Refusal> {
    // SAFETY: the caller guarantees null or a readable registration.
    let Some(r) = (unsafe { reg.as_ref() }) else { return Err(refuse(Status::INVALID_PARAMETER)) };
    let major = (r.Version >> 8) as u8;
    let minor = (r.Version & 0xFF) as u8;
    // A different major version stops the filter loading; a newer minor one is accepted and
    // read as the newest this Filter Manager knows (0x0203).
    if major != 2 {
        return Err(refuse(Status::INVALID_PARAMETER));
    }
    if usize::from(r.Size) < min_size(minor) {
        return Err(refuse(Status::INVALID_PARAMETER));
    }
    // Name-provider callbacks come together: a generator needs a normalizer and the reverse.
    // NormalizeNameComponentExCallback is a 0x0202 field (Vista RTM, facts.md §2.6): an older
    // registration's Size ends before it (read from 0x0201 before December 6).
    let generate = r.GenerateFileNameCallback.is_some();
    let normalize = r.NormalizeNameComponentCallback.is_some()
        || (minor >= 2 && r.NormalizeNameComponentExCallback.is_some());
    if generate != normalize {
        return Err(refuse(Status::INVALID_PARAMETER));
    }
    let callbacks = FilterCallbacks {
        unload: r.FilterUnloadCallback,
        setup: r.InstanceSetupCallback,
        query_teardown: r.InstanceQueryTeardownCallback,
        teardown_start: r.InstanceTeardownStartCallback,
        teardown_complete: r.InstanceTeardownCompleteCallback,
        section_notification: if minor >= 3 { r.SectionNotificationCallback } else { None },
    };
    let mut ops = OpTable::default();
    let mut p: *const FLT_OPERATION_REGISTRATION = r.OperationRegistration;
    let mut n = 0;
    while !p.is_null() && n < MAX_ENTRIES {
        // SAFETY: inside the caller's table, before its end marker.
        let e = unsafe { &*p };
        if e.MajorFunction == OPERATION_END {
            break;
        }
        let m = MajorFunction::from_code(e.MajorFunction);
        let problem = match m {
            MajorFunction::Power | MajorFunction::DeviceChange => Some(format!(
                "{m} registered: file systems never receive it (facts.md §3); Windows' handling is undocumented, the simulator refuses the registration"
            )),
            MajorFunction::Shutdown if e.PostOperation.is_some() => Some(
                "IRP_MJ_SHUTDOWN registered with a post-operation callback (facts.md §3); the simulator refuses the registration"
                    .to_owned(),
            ),
            MajorFunction::Unknown(code) => Some(format!(
                "operation code {code:#04x} registered: not an IRP major function nor a Filter Manager operation"
            )),
            _ if ops.contains_key(&e.MajorFunction) => Some(format!(
                "{m} registered twice (one entry per major function, facts.md §3)"
            )),
            _ => None,
        };
        if let Some(message) = problem {
            return Err(Refusal {
                status: Status::INVALID_PARAMETER,
                finding: Some((Rule::ForbiddenRegistration, message)),
            });
        }
        ops.insert(
            e.MajorFunction,
            OpReg { flags: e.Flags, pre: e.PreOperation, post: e.PostOperation },
        );
        n += 1;
        p = p.wrapping_add(1);
    }
    let mut contexts = Vec::new();
    let mut c: *const FLT_CONTEXT_REGISTRATION = r.ContextRegistration;
    let mut n = 0;
    while !c.is_null() && n < MAX_ENTRIES {
        // SAFETY: inside the caller's context table, before its end marker.
        let e = unsafe { &*c };
        if e.ContextType == CONTEXT_END {
            break;
        }
        if !super::contexts::is_context_type(e.ContextType) {
            return Err(refuse(Status::FLT_INVALID_CONTEXT_REGISTRATION));
        }
        contexts.push(ContextReg {
            ty: e.ContextType,
            size: e.Size,
            tag: e.PoolTag,
            flags: e.Flags,
            cleanup: e.ContextCleanupCallback,
            allocate: e.ContextAllocateCallback,
            free: e.ContextFreeCallback,
        });
        n += 1;
        c = c.wrapping_add(1);
    }
    let contexts = check_contexts(contexts)?;
    Ok(Parsed { version: r.Version, flags: r.Flags, ops, callbacks, contexts })
}

/// `FLT_CONTEXT_REGISTRATION`'s rules per context type (its remarks): a definition identical to
/// an earlier one is ignored; at most three fixed-size definitions and one variable-sized one; a
/// definition with a `ContextAllocateCallback` is the type's only one. Windows' status for a
/// breach is undocumented: the simulator refuses with `STATUS_FLT_INVALID_CONTEXT_REGISTRATION`
/// and a `FORBIDDEN_CONTEXT_REGISTRATION` finding (docs/simulator.md, "Registration").
fn check_contexts(all: Vec<ContextReg>) -> Result<Vec<ContextReg>, Refusal> {
    let key = |r: &ContextReg| {
        (
            r.ty,
            r.flags,
            r.size,
            r.tag,
            r.cleanup.map(|f| f as usize),
            r.allocate.map(|f| f as usize),
            r.free.map(|f| f as usize),
        )
    };
    let mut kept: Vec<ContextReg> = Vec::new();
    for r in all {
        if !kept.iter().any(|k| key(k) == key(&r)) {
            kept.push(r);
        }
    }
    for (i, r) in kept.iter().enumerate() {
        if kept.iter().take(i).any(|k| k.ty == r.ty) {
            continue;
        }
        let defs: Vec<&ContextReg> = kept.iter().filter(|k| k.ty == r.ty).collect();
        let variable = defs.iter().filter(|d| d.size == super::contexts::VARIABLE_SIZED).count();
        let fixed = defs.len() - variable;
        let name = super::contexts::type_name(r.ty);
        let problem = if defs.len() > 1 && defs.iter().any(|d| d.allocate.is_some()) {
            Some(format!(
                "{name}: a definition with a ContextAllocateCallback among {} definitions (it must be the type's only one)",
                defs.len()
            ))
        } else if variable > 1 {
            Some(format!(
                "{name}: {variable} FLT_VARIABLE_SIZED_CONTEXTS definitions (one at most)"
            ))
        } else if fixed > 3 {
            Some(format!("{name}: {fixed} fixed-size definitions (three at most)"))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(Refusal {
                status: Status::FLT_INVALID_CONTEXT_REGISTRATION,
                finding: Some((
                    Rule::ForbiddenContextRegistration,
                    format!(
                        "{p}, FLT_CONTEXT_REGISTRATION's remarks; Windows' status is undocumented, the simulator refuses the registration"
                    ),
                )),
            });
        }
    }
    Ok(kept)
}

/// The instance definitions of a service: `Parameters\Instances` (Windows 11 24H2) when
/// present, else `Instances` (facts.md §2.5). `STATUS_OBJECT_NAME_NOT_FOUND` without a key, a
/// `DefaultInstance`, or the default instance's `Altitude`.
pub fn read_instances(k: &Kernel, service: &str) -> Result<(String, Vec<InstanceDef>), Status> {
    let base = format!("{SERVICES}\\{service}");
    let key = k
        .registry
        .find(None, &format!("{base}\\Parameters\\Instances"))
        .or_else(|| k.registry.find(None, &format!("{base}\\Instances")))
        .ok_or(Status::OBJECT_NAME_NOT_FOUND)?;
    let text = |v: Option<&RegValue>| match v {
        Some(RegValue::Sz(s) | RegValue::ExpandSz(s)) => Some(s.clone()),
        _ => None,
    };
    let default =
        text(k.registry.get(key, "DefaultInstance")).ok_or(Status::OBJECT_NAME_NOT_FOUND)?;
    let mut defs = Vec::new();
    let children: Vec<usize> = k.registry.keys[key].children.clone();
    for child in children {
        let name = k.registry.keys[child].name.clone();
        let Some(alt_text) = text(k.registry.get(child, "Altitude")) else { continue };
        let Ok(altitude) = Altitude::parse(alt_text.trim()) else { continue };
        let flags = match k.registry.get(child, "Flags") {
            Some(RegValue::Dword(d)) => *d,
            _ => 0,
        };
        defs.push(InstanceDef { name, altitude, altitude_text: alt_text, flags });
    }
    if !defs.iter().any(|d| d.name.eq_ignore_ascii_case(&default)) {
        return Err(Status::OBJECT_NAME_NOT_FOUND);
    }
    Ok((default, defs))
}

/// `FltRegisterFilter`.
pub(crate) fn register(
    driver: *const DRIVER_OBJECT,
    reg: *const FLT_REGISTRATION,
) -> Result<isize, Status> {
    let pre = kernel::with(|k| {
        k.check_irql(PASSIVE_LEVEL, "FltRegisterFilter");
        if k.fault(FaultKind::RegisterFilter) {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        if !k.fltmgr_loaded() {
            return Err(Status::FLT_NOT_INITIALIZED);
        }
        let did = k.objects.driver_id(driver).ok_or(Status::INVALID_PARAMETER)?;
        // A driver can only register itself (facts.md §2.6).
        let image = k.objects.driver(did).image;
        if k.current_image() != Some(image) {
            return Err(Status::INVALID_PARAMETER);
        }
        if k.fltmgr.filter_of_driver(did).is_some() {
            return Err(Status::OBJECT_NAME_COLLISION);
        }
        let service = k.objects.driver(did).service.clone();
        if k.objects.driver(did).fs_filter.is_some() {
            let message = crate::exports::fsrtl::minifilter_message();
            k.report(Rule::MinifilterFsFilterRegistration, Some(service.clone()), message);
        }
        Ok((did, image, service))
    });
    let (did, image, service) = pre?;
    // SAFETY: the driver's registration, readable up to its end markers (its contract).
    let parsed = match unsafe { parse(reg) } {
        Ok(p) => p,
        Err(r) => {
            kernel::with(|k| {
                if let Some((rule, message)) = r.finding {
                    k.report(rule, Some(service.clone()), message);
                }
                k.flt_log(
                    Some(service.as_str().into()),
                    None,
                    FltEvent::FilterRegistered {
                        frame: 0,
                        altitude: String::new(),
                        status: r.status,
                    },
                );
            });
            return Err(r.status);
        }
    };
    let instances = kernel::with(|k| read_instances(k, &service));
    let (default_instance, defs) = match instances {
        Ok(x) => x,
        Err(s) => {
            kernel::with(|k| {
                k.flt_log(
                    Some(service.as_str().into()),
                    None,
                    FltEvent::FilterRegistered { frame: 0, altitude: String::new(), status: s },
                )
            });
            return Err(s);
        }
    };
    let altitude = defs
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(&default_instance))
        .map(|d| d.altitude)
        .unwrap_or(Altitude::from_integer(0));
    let placement = kernel::with(|k| super::frames::place(k, &service, altitude));
    let frame = match placement {
        Placement::Existing(f) => f,
        Placement::New { above, ceiling } => super::frames::create_frame(above, ceiling, altitude),
    };
    let handle = kernel::with(|k| {
        if let Some(fr) = k.fltmgr.frames.get_mut(frame as usize) {
            if fr.lo.is_none_or(|lo| altitude < lo) {
                fr.lo = Some(altitude);
            }
            if fr.hi.is_none_or(|hi| altitude > hi) {
                fr.hi = Some(altitude);
            }
        }
        k.fltmgr.placements.insert(service.to_uppercase(), frame);
        let id = FilterId(k.fltmgr.filters.len() as u32);
        let block = k.fltmgr.new_handle(FltObject::Filter(id));
        let unload = parsed.callbacks.unload.is_some();
        k.fltmgr.filters.push(FilterRec {
            block,
            name: service.as_str().into(),
            driver: did,
            image,
            state: FilterState::Registered,
            version: parsed.version,
            flags: parsed.flags,
            ops: parsed.ops,
            callbacks: parsed.callbacks,
            context_types: parsed.contexts,
            instances: defs,
            default_instance,
            frame,
            rundown: 0,
            unload_reason: TeardownFlags::FILTER_UNLOAD.bits(),
            unloading: false,
        });
        // The Filter Manager takes over DriverUnload: a service stop calls the unload callback
        // (mandatory). Without an unload callback, or with DO_NOT_SUPPORT_SERVICE_STOP, the
        // driver cannot be stopped (facts.md §5, ReactOS' behaviour).
        let stoppable = unload && parsed.flags & reg_flags::DO_NOT_SUPPORT_SERVICE_STOP == 0;
        // SAFETY: the driver's live driver object.
        unsafe {
            (*k.objects.driver(did).ptr).DriverUnload =
                if stoppable { Some(super::manage::filter_driver_unload) } else { None };
        }
        k.flt_log(
            Some(service.as_str().into()),
            None,
            FltEvent::FilterRegistered {
                frame,
                altitude: altitude.to_string(),
                status: Status::SUCCESS,
            },
        );
        k.fltmgr.filter(id).handle()
    });
    Ok(handle)
}

/// `FltStartFiltering`: instances on every volume there now, before it returns (facts.md §2.5,
/// §2.6).
pub fn start(handle: isize) -> Status {
    let r = kernel::with(|k| {
        // The reference page: IRQL <= APC_LEVEL.
        k.check_irql(APC_LEVEL, "FltStartFiltering");
        let Some(f) = k.fltmgr.filter_of(handle) else { return Err(Status::INVALID_PARAMETER) };
        if k.fltmgr.filter(f).state != FilterState::Registered {
            return Err(Status::INVALID_PARAMETER);
        }
        if k.fault(FaultKind::StartFiltering) {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        k.fltmgr.filter_mut(f).state = FilterState::Started;
        Ok(f)
    });
    let f = match r {
        Ok(f) => f,
        Err(s) => {
            kernel::with(|k| {
                let driver = k.fltmgr.filter_of(handle).map(|f| k.fltmgr.filter(f).name.clone());
                k.flt_log(driver, None, FltEvent::FilterStarted { status: s });
            });
            return s;
        }
    };
    super::frames::attach_npfs_msfs();
    // The volumes the filter's frame is attached to (its volume objects on Windows).
    let volumes: Vec<super::FvId> = kernel::with(|k| {
        let frame = k.fltmgr.filter(f).frame;
        (0..k.fltmgr.volumes.len() as u32)
            .map(super::FvId)
            .filter(|&v| k.fltmgr.vol(v).attachable(frame))
            .collect()
    });
    let flags = InstanceSetupFlags::AUTOMATIC_ATTACHMENT.bits();
    for v in volumes {
        let defs = kernel::with(|k| super::instances::automatic_defs(k, f));
        for (f, def) in defs {
            let _ = super::instances::setup_instance(f, v, &def, flags);
        }
    }
    kernel::with(|k| {
        let name = k.fltmgr.filter(f).name.clone();
        k.flt_log(Some(name), None, FltEvent::FilterStarted { status: Status::SUCCESS });
    });
    Status::SUCCESS
}

/// `FltUnregisterFilter`: tears every instance down, waits for rundown (outstanding operations,
/// queued work items, object references), reports contexts and sections left behind and closes
/// those sections (facts.md §5).
pub fn unregister(handle: isize) {
    let r = kernel::with(|k| {
        // The reference page: IRQL <= APC_LEVEL.
        k.check_irql(APC_LEVEL, "FltUnregisterFilter");
        let f = k.fltmgr.filter_of(handle)?;
        // "A minifilter driver can only call FltUnregisterFilter to unregister itself" (its
        // reference page); the Filter Manager's own call, for a filter that did not, runs as
        // the Filter Manager.
        let caller = k.current_image();
        if caller != Some(k.fltmgr.filter(f).image) && caller != k.fltmgr.image {
            k.report_current(
                Rule::InvalidFltObject,
                "FltUnregisterFilter on another driver's filter (a filter can only unregister itself)",
            );
            return None;
        }
        let state = k.fltmgr.filter(f).state;
        if matches!(state, FilterState::Unregistering | FilterState::Unregistered) {
            k.flt_report(
                Some(f),
                Rule::InvalidFltObject,
                "FltUnregisterFilter on a filter already unregistered",
            );
            return None;
        }
        k.fltmgr.filter_mut(f).state = FilterState::Unregistering;
        Some((f, k.fltmgr.filter(f).unload_reason))
    });
    let Some((f, reason)) = r else {
        if kernel::with(|k| k.fltmgr.filter_of(handle).is_none()) {
            kernel::with(|k| {
                k.report_current(
                    Rule::InvalidFltObject,
                    "FltUnregisterFilter with an unknown filter",
                )
            });
        }
        return;
    };
    // Its server ports and connections first: the unload is when the Filter Manager ends the
    // connections left (docs/simulator.md, "Communication ports and control devices").
    super::ports::unregistering(f);
    let instances = kernel::with(|k| k.fltmgr.filter_instances(f));
    for i in instances {
        super::instances::teardown_and_wait(i, reason);
    }
    let done = || {
        kernel::with(|k| {
            let rec = k.fltmgr.filter(f);
            rec.rundown == 0
                && k.fltmgr.filter_instances(f).is_empty()
                && !k.fltmgr.ops.involves_filter(k, f)
        })
    };
    if crate::sched::wait_until(done, None) == crate::sched::WaitEnd::Deadlock {
        kernel::with(|k| {
            let rec = k.fltmgr.filter(f);
            let msg = format!(
                "FltUnregisterFilter waits for rundown that never comes ({} work item or object reference(s), {} instance(s) not torn down): the unload hangs on Windows (facts.md §9)",
                rec.rundown,
                k.fltmgr.filter_instances(f).len()
            );
            k.flt_report(Some(f), Rule::Deadlock, msg);
        });
    }
    let cleanups = kernel::with(|k| {
        super::datascan::report_leaks(k, f);
        // Closing the leaked sections first drops the Filter Manager's own references on their
        // contexts: a context only a leaked section held is that section's leak, not the
        // filter's.
        let cleanups = super::datascan::close_leaked(k, f);
        super::contexts::report_leaks(k, f);
        super::names::report_leaks(k, f);
        cleanups
    });
    // The filter's code is still there: FltUnregisterFilter has not returned.
    super::contexts::run_cleanups(cleanups);
    kernel::with(|k| {
        k.fltmgr.filter_mut(f).state = FilterState::Unregistered;
        let name = k.fltmgr.filter(f).name.clone();
        k.flt_log(Some(name), None, FltEvent::FilterUnregistered);
        // A service stop that arrived meanwhile waited for this (`Kernel::unload_ready`).
        let driver = k.fltmgr.filter(f).driver;
        k.maybe_finish_unload(driver);
    });
}
