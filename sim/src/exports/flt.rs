//! Filter Manager exports (fltmgr.sys): registration, start and unregistration, instances and
//! volumes, objects, work items, callback data, pended operations (facts.md §2 to §5). Contexts
//! and data scan are in [`super::flt_ctx`]. The logic is in `crate::fltmgr`.

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, FILE_OBJECT};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_FILE_NAME_INFORMATION, FLT_POSTOP_CALLBACK_STATUS,
    FLT_PREOP_CALLBACK_STATUS, FLT_REGISTRATION, FLT_RELATED_OBJECTS, FLT_VOLUME_PROPERTIES,
    PFLT_FILTER, PFLT_GENERIC_WORKITEM, PFLT_GENERIC_WORKITEM_ROUTINE, PFLT_INSTANCE,
    PFLT_POST_OPERATION_CALLBACK, PFLT_VOLUME,
};
use windows_sys::Wdk::System::SystemServices::WORK_QUEUE_TYPE;
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};
use windows_sys::Win32::Storage::InstallableFileSystems::FLT_FILESYSTEM_TYPE;

use crate::events::Rule;
use crate::fltmgr::instances::AttachApi;
use crate::fltmgr::{FilterState, FltObject, InstState, WorkItemRec};
use crate::kernel::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::mem::{Block, read_unicode};

/// A NULL required out pointer passed to `what` ("This parameter is required and cannot be
/// NULL", its reference page): Windows writes through it and bugchecks; the simulator reports a
/// `BUGCHECK` finding and the call does nothing (until December 6 it wrote through the NULL
/// pointer and aborted the simulator's process), as for the context routines.
fn null_out<T>(out: *mut T, what: &str) -> bool {
    if !out.is_null() {
        return false;
    }
    kernel::with(|k| k.report_current(Rule::Bugcheck, format!("{what} with a NULL out pointer")));
    true
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltRegisterFilter =>
    /// `FltRegisterFilter` (facts.md §2.6): reads the registration, the service's instance
    /// definitions, places the filter in a frame.
    fn FltRegisterFilter(driver: *const DRIVER_OBJECT, registration: *const FLT_REGISTRATION, retfilter: *mut PFLT_FILTER) -> NTSTATUS {
        if null_out(retfilter, "FltRegisterFilter") {
            return Status::INVALID_PARAMETER.0;
        }
        match crate::fltmgr::registration::register(driver, registration) {
            Ok(h) => {
                // SAFETY: the caller's out parameter.
                unsafe { *retfilter = h };
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltStartFiltering =>
    /// `FltStartFiltering`: instances on every volume before it returns.
    fn FltStartFiltering(filter: PFLT_FILTER) -> NTSTATUS {
        crate::fltmgr::registration::start(filter).0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltUnregisterFilter =>
    /// `FltUnregisterFilter`: tears every instance down and waits for rundown.
    fn FltUnregisterFilter(filter: PFLT_FILTER) {
        crate::fltmgr::registration::unregister(filter);
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetVolumeFromInstance =>
    /// `FltGetVolumeFromInstance`: the instance's volume, referenced; IRQL <= `APC_LEVEL`;
    /// `STATUS_FLT_DELETING_OBJECT` once the volume is gone (its reference page: "being torn
    /// down"; until December 6 a dismounted volume was referenced and returned).
    fn FltGetVolumeFromInstance(instance: PFLT_INSTANCE, retvolume: *mut PFLT_VOLUME) -> NTSTATUS {
        if null_out(retvolume, "FltGetVolumeFromInstance") {
            return Status::INVALID_PARAMETER.0;
        }
        kernel::with(|k| {
            k.check_irql(APC_LEVEL, "FltGetVolumeFromInstance");
            let Some(i) = k.fltmgr.instance_of(instance) else { return Status::INVALID_PARAMETER.0 };
            let v = k.fltmgr.inst(i).volume;
            if k.fltmgr.vol(v).gone {
                return Status::FLT_DELETING_OBJECT.0;
            }
            k.fltmgr.vol_mut(v).refs += 1;
            // SAFETY: the caller's out parameter.
            unsafe { *retvolume = k.fltmgr.vol(v).handle() };
            Status::SUCCESS.0
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetFilterFromInstance =>
    /// `FltGetFilterFromInstance`: the instance's filter, referenced (a rundown reference).
    fn FltGetFilterFromInstance(instance: PFLT_INSTANCE, retfilter: *mut PFLT_FILTER) -> NTSTATUS {
        if null_out(retfilter, "FltGetFilterFromInstance") {
            return Status::INVALID_PARAMETER.0;
        }
        kernel::with(|k| {
            let Some(i) = k.fltmgr.instance_of(instance) else { return Status::INVALID_PARAMETER.0 };
            let f = k.fltmgr.inst(i).filter;
            // "The minifilter driver is being torn down" (the reference page): from
            // FltUnregisterFilter on, no rundown reference (until December 6 one was taken).
            if matches!(k.fltmgr.filter(f).state, FilterState::Unregistering | FilterState::Unregistered) {
                return Status::FLT_DELETING_OBJECT.0;
            }
            k.fltmgr.filter_mut(f).rundown += 1;
            // SAFETY: the caller's out parameter.
            unsafe { *retfilter = k.fltmgr.filter(f).handle() };
            Status::SUCCESS.0
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetVolumeFromName =>
    /// `FltGetVolumeFromName`: a machine volume's name (`C:`) or a device name
    /// (`\Device\HarddiskVolume1`), referenced.
    fn FltGetVolumeFromName(filter: PFLT_FILTER, volumename: *const UNICODE_STRING, retvolume: *mut PFLT_VOLUME) -> NTSTATUS {
        if null_out(retvolume, "FltGetVolumeFromName") {
            return Status::INVALID_PARAMETER.0;
        }
        // SAFETY: the caller's name.
        let name = unsafe { read_unicode(volumename) };
        kernel::with(|k| {
            // The reference page: PASSIVE_LEVEL (unchecked before December 6).
            k.check_irql(PASSIVE_LEVEL, "FltGetVolumeFromName");
            if k.fltmgr.filter_of(filter).is_none() {
                return Status::INVALID_PARAMETER.0;
            }
            let by_sim = k.volume_by_name(&name).and_then(|v| k.flt_volume_of(v));
            let by_device = k.fltmgr.volumes.iter().position(|v| !v.gone && v.name.eq_ignore_ascii_case(&name)).map(|i| crate::fltmgr::FvId(i as u32));
            let Some(v) = by_sim.or(by_device) else { return Status::FLT_VOLUME_NOT_FOUND.0 };
            k.fltmgr.vol_mut(v).refs += 1;
            // SAFETY: the caller's out parameter.
            unsafe { *retvolume = k.fltmgr.vol(v).handle() };
            Status::SUCCESS.0
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltObjectReference =>
    /// `FltObjectReference`: a rundown reference on a filter, instance or volume.
    fn FltObjectReference(fltobject: *mut c_void) -> NTSTATUS {
        // The reference page: IRQL <= DISPATCH_LEVEL (unchecked before December 6).
        kernel::with(|k| k.check_irql(DISPATCH_LEVEL, "FltObjectReference"));
        kernel::with(|k| match k.fltmgr.object_of(fltobject as isize) {
            Some(FltObject::Filter(f)) => {
                if matches!(k.fltmgr.filter(f).state, FilterState::Unregistering | FilterState::Unregistered) {
                    return Status::FLT_DELETING_OBJECT.0;
                }
                k.fltmgr.filter_mut(f).rundown += 1;
                Status::SUCCESS.0
            }
            Some(FltObject::Instance(i)) => {
                // "The minifilter driver, instance, or volume is being torn down" (the reference
                // page): an instance from the start of its teardown, as for FltSet*Context
                // (until December 6 a torn-down instance was referenced).
                let f = k.fltmgr.inst(i).filter;
                let torn = matches!(k.fltmgr.inst(i).state(), InstState::TearingDown | InstState::Gone);
                if torn || matches!(k.fltmgr.filter(f).state, FilterState::Unregistering | FilterState::Unregistered) {
                    return Status::FLT_DELETING_OBJECT.0;
                }
                k.fltmgr.inst_mut(i).refs += 1;
                k.fltmgr.filter_mut(f).rundown += 1;
                Status::SUCCESS.0
            }
            Some(FltObject::Volume(v)) => {
                // A volume whose device is deleted, as FltGetVolumeFromInstance judges it.
                if k.fltmgr.vol(v).gone {
                    return Status::FLT_DELETING_OBJECT.0;
                }
                k.fltmgr.vol_mut(v).refs += 1;
                Status::SUCCESS.0
            }
            None => Status::INVALID_PARAMETER.0,
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltObjectDereference =>
    /// `FltObjectDereference`.
    fn FltObjectDereference(fltobject: *mut c_void) {
        // The reference page: IRQL <= DISPATCH_LEVEL (unchecked before December 6).
        kernel::with(|k| k.check_irql(DISPATCH_LEVEL, "FltObjectDereference"));
        kernel::with(|k| match k.fltmgr.object_of(fltobject as isize) {
            // One more than was taken releases a rundown protection nobody holds: reported,
            // as for a volume (until December 6 filters and instances saturated silently).
            Some(FltObject::Filter(f)) => {
                let r = k.fltmgr.filter_mut(f);
                if r.rundown == 0 {
                    k.report_current(Rule::ObjectOverDereferenced, "FltObjectDereference on a filter with no reference");
                } else {
                    r.rundown -= 1;
                }
            }
            Some(FltObject::Instance(i)) => {
                let r = k.fltmgr.inst_mut(i);
                if r.refs == 0 {
                    k.report_current(Rule::ObjectOverDereferenced, "FltObjectDereference on an instance with no reference");
                    return;
                }
                r.refs -= 1;
                let f = r.filter;
                let fr = k.fltmgr.filter_mut(f);
                fr.rundown = fr.rundown.saturating_sub(1);
            }
            Some(FltObject::Volume(v)) => {
                let r = k.fltmgr.vol_mut(v);
                if r.refs == 0 {
                    k.report_current(Rule::ObjectOverDereferenced, "FltObjectDereference on a volume with no reference");
                } else {
                    r.refs -= 1;
                }
            }
            None => k.report_current(Rule::InvalidFltObject, "FltObjectDereference on an unknown object"),
        });
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetFileSystemType =>
    /// `FltGetFileSystemType` for an instance or a volume (`FLT_FILESYSTEM_TYPE`, facts.md §7).
    fn FltGetFileSystemType(fltobject: *const c_void, filesystemtype: *mut FLT_FILESYSTEM_TYPE) -> NTSTATUS {
        if null_out(filesystemtype, "FltGetFileSystemType") {
            return Status::INVALID_PARAMETER.0;
        }
        kernel::with(|k| {
            let v = match k.fltmgr.object_of(fltobject as isize) {
                Some(FltObject::Instance(i)) => k.fltmgr.inst(i).volume,
                Some(FltObject::Volume(v)) => v,
                _ => return Status::INVALID_PARAMETER.0,
            };
            // SAFETY: the caller's out parameter.
            unsafe { *filesystemtype = k.fltmgr.vol(v).flt_type() as FLT_FILESYSTEM_TYPE };
            Status::SUCCESS.0
        })
    }
}

/// The names `FltGetVolumeProperties` returns: the file system's driver, its control device,
/// the real device.
fn volume_names(k: &crate::kernel::Kernel, v: crate::fltmgr::FvId) -> [String; 3] {
    let rec = k.fltmgr.vol(v);
    let dev = k.objects.device(rec.bottom);
    let driver = k.objects.driver(dev.driver).name.clone();
    let cdo = rec
        .fs
        .and_then(|t| k.fs.cdos.iter().find(|(ty, _)| *ty == t))
        .and_then(|(_, d)| k.objects.device(*d).name.clone())
        .unwrap_or_default();
    [driver, cdo, rec.name.clone()]
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetVolumeProperties =>
    /// `FltGetVolumeProperties`: the fixed part (`STATUS_BUFFER_TOO_SMALL` when even it does not
    /// fit), then the three names after it (`STATUS_BUFFER_OVERFLOW` with the fixed part filled
    /// when they do not).
    fn FltGetVolumeProperties(volume: PFLT_VOLUME, volumeproperties: *mut FLT_VOLUME_PROPERTIES, volumepropertieslength: u32, lengthreturned: *mut u32) -> NTSTATUS {
        kernel::with(|k| {
            let Some(v) = k.fltmgr.volume_of(volume) else { return Status::INVALID_PARAMETER.0 };
            let names = volume_names(k, v);
            let units: Vec<Vec<u16>> = names.iter().map(|n| crate::mem::wide(n)).collect();
            let fixed = size_of::<FLT_VOLUME_PROPERTIES>();
            let needed = fixed + units.iter().map(|u| u.len() * 2).sum::<usize>();
            if !lengthreturned.is_null() {
                // SAFETY: the caller's out parameter.
                unsafe { *lengthreturned = needed as u32 };
            }
            if (volumepropertieslength as usize) < fixed || volumeproperties.is_null() {
                return Status::BUFFER_TOO_SMALL.0;
            }
            let o = k.objects.dobj(k.fltmgr.vol(v).bottom);
            // SAFETY: the caller's buffer holds at least the fixed part.
            let p = unsafe { &mut *volumeproperties };
            p.DeviceType = o.DeviceType;
            p.DeviceCharacteristics = o.Characteristics;
            p.DeviceObjectFlags = o.Flags;
            p.AlignmentRequirement = o.AlignmentRequirement;
            p.SectorSize = o.SectorSize;
            p.Flags = 0;
            if (volumepropertieslength as usize) < needed {
                return Status::BUFFER_OVERFLOW.0;
            }
            let mut at = volumeproperties.cast::<u8>().wrapping_add(fixed).cast::<u16>();
            let mut strings = [UNICODE_STRING { Length: 0, MaximumLength: 0, Buffer: std::ptr::null_mut() }; 3];
            for (s, u) in strings.iter_mut().zip(&units) {
                // SAFETY: `needed` bytes fit in the caller's buffer: the names go after the fixed part.
                unsafe { std::ptr::copy_nonoverlapping(u.as_ptr(), at, u.len()) };
                *s = UNICODE_STRING { Length: (u.len() * 2) as u16, MaximumLength: (u.len() * 2) as u16, Buffer: at };
                at = at.wrapping_add(u.len());
            }
            let [a, b, c] = strings;
            p.FileSystemDriverName = a;
            p.FileSystemDeviceName = b;
            p.RealDeviceName = c;
            Status::SUCCESS.0
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltAttachVolume =>
    /// `FltAttachVolume`: a manual attachment of the named instance (the default one without a
    /// name); an altitude taken is `STATUS_OBJECT_NAME_COLLISION` (its page, facts.md §10.2).
    fn FltAttachVolume(filter: PFLT_FILTER, volume: PFLT_VOLUME, instancename: *const UNICODE_STRING, retinstance: *mut PFLT_INSTANCE) -> NTSTATUS {
        // SAFETY: null or the caller's name.
        let name = (!instancename.is_null()).then(|| unsafe { read_unicode(instancename) });
        attach(filter, volume, name.as_deref(), None, AttachApi::AttachVolume, retinstance)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltAttachVolumeAtAltitude =>
    /// `FltAttachVolumeAtAltitude`: an instance at an altitude (testing only); an altitude taken
    /// is `STATUS_FLT_INSTANCE_ALTITUDE_COLLISION`.
    fn FltAttachVolumeAtAltitude(filter: PFLT_FILTER, volume: PFLT_VOLUME, altitude: *const UNICODE_STRING, instancename: *const UNICODE_STRING, retinstance: *mut PFLT_INSTANCE) -> NTSTATUS {
        // SAFETY: the caller's altitude.
        let alt = unsafe { read_unicode(altitude) };
        // SAFETY: null or the caller's name.
        let name = (!instancename.is_null()).then(|| unsafe { read_unicode(instancename) });
        attach(filter, volume, name.as_deref(), Some(&alt), AttachApi::AtAltitude, retinstance)
    }
}

fn attach(
    filter: PFLT_FILTER,
    volume: PFLT_VOLUME,
    name: Option<&str>,
    altitude: Option<&str>,
    api: AttachApi,
    ret: *mut PFLT_INSTANCE,
) -> NTSTATUS {
    let ids = kernel::with(|k| {
        k.check_irql(PASSIVE_LEVEL, "FltAttachVolume");
        Some((k.fltmgr.filter_of(filter)?, k.fltmgr.volume_of(volume)?))
    });
    let Some((f, v)) = ids else { return Status::INVALID_PARAMETER.0 };
    match crate::fltmgr::instances::attach(f, v, name, altitude, api) {
        Ok(i) => {
            if !ret.is_null() {
                kernel::with(|k| {
                    k.fltmgr.inst_mut(i).refs += 1;
                    k.fltmgr.filter_mut(f).rundown += 1;
                    // SAFETY: the caller's out parameter.
                    unsafe { *ret = k.fltmgr.inst(i).handle() };
                });
            }
            Status::SUCCESS.0
        }
        Err(s) => s.0,
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltDetachVolume =>
    /// `FltDetachVolume`: a manual detach (the query-teardown callback decides), IRQL <=
    /// `APC_LEVEL`.
    fn FltDetachVolume(filter: PFLT_FILTER, volume: PFLT_VOLUME, instancename: *const UNICODE_STRING) -> NTSTATUS {
        // SAFETY: null or the caller's name.
        let name = (!instancename.is_null()).then(|| unsafe { read_unicode(instancename) });
        let ids = kernel::with(|k| {
            // The reference page: IRQL <= APC_LEVEL (PASSIVE_LEVEL before December 6).
            k.check_irql(APC_LEVEL, "FltDetachVolume");
            Some((k.fltmgr.filter_of(filter)?, k.fltmgr.volume_of(volume)?))
        });
        let Some((f, v)) = ids else { return Status::INVALID_PARAMETER.0 };
        crate::fltmgr::instances::detach(f, v, name.as_deref()).0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltAllocateGenericWorkItem =>
    /// `FltAllocateGenericWorkItem` (IRQL <= `DISPATCH_LEVEL`).
    fn FltAllocateGenericWorkItem() -> PFLT_GENERIC_WORKITEM {
        kernel::with(|k| {
            k.check_irql(DISPATCH_LEVEL, "FltAllocateGenericWorkItem");
            if k.fault(crate::faults::FaultKind::Pool) {
                return 0;
            }
            let block = Block::zeroed(32);
            let h = block.ptr() as usize;
            let image = k.current_image();
            k.fltmgr.work_items.insert(h, WorkItemRec { _block: block, image, queued: false });
            h as PFLT_GENERIC_WORKITEM
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltFreeGenericWorkItem =>
    /// `FltFreeGenericWorkItem` (IRQL <= `DISPATCH_LEVEL`). Freeing an item still queued frees
    /// an active worker item: a `BUGCHECK` finding (WORKER_INVALID, 0xE4, parameter 0x1), as for
    /// `IoFreeWorkItem`; the routine still runs (until December 6 this went unreported).
    fn FltFreeGenericWorkItem(fltworkitem: PFLT_GENERIC_WORKITEM) {
        kernel::with(|k| {
            k.check_irql(DISPATCH_LEVEL, "FltFreeGenericWorkItem");
            match k.fltmgr.work_items.remove(&(fltworkitem as usize)) {
                None => k.report_current(Rule::BadPoolFree, "FltFreeGenericWorkItem on a work item that does not exist"),
                Some(item) if item.queued => k.report_current(
                    Rule::Bugcheck,
                    "FltFreeGenericWorkItem on a work item still queued (WORKER_INVALID, 0xE4: an active worker item was freed)",
                ),
                Some(_) => {}
            }
        });
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltQueueGenericWorkItem =>
    /// `FltQueueGenericWorkItem`: runs the routine on a worker at `PASSIVE_LEVEL` holding a rundown
    /// reference on the filter (`FltUnregisterFilter` waits for it, facts.md §5);
    /// `STATUS_FLT_DELETING_OBJECT` once the filter is unregistering or the instance's teardown
    /// has started.
    fn FltQueueGenericWorkItem(fltworkitem: PFLT_GENERIC_WORKITEM, fltobject: *const c_void, workerroutine: PFLT_GENERIC_WORKITEM_ROUTINE, _queuetype: WORK_QUEUE_TYPE, context: *const c_void) -> NTSTATUS {
        let Some(routine) = workerroutine else { return Status::INVALID_PARAMETER.0 };
        let r = kernel::with(|k| {
            k.check_irql(DISPATCH_LEVEL, "FltQueueGenericWorkItem");
            let Some(item) = k.fltmgr.work_items.get(&(fltworkitem as usize)) else { return Err(Status::INVALID_PARAMETER) };
            if item.queued {
                return Err(Status::INVALID_PARAMETER);
            }
            let f = match k.fltmgr.object_of(fltobject as isize) {
                Some(FltObject::Filter(f)) => f,
                Some(FltObject::Instance(i)) => {
                    // "Being torn down" (the reference page): from the start of its teardown,
                    // not while its setup callback runs (refused before December 6).
                    if matches!(k.fltmgr.inst(i).state(), InstState::TearingDown | InstState::Gone) {
                        return Err(Status::FLT_DELETING_OBJECT);
                    }
                    k.fltmgr.inst(i).filter
                }
                _ => return Err(Status::INVALID_PARAMETER),
            };
            if matches!(k.fltmgr.filter(f).state, FilterState::Unregistering | FilterState::Unregistered) {
                return Err(Status::FLT_DELETING_OBJECT);
            }
            k.fltmgr.filter_mut(f).rundown += 1;
            if let Some(item) = k.fltmgr.work_items.get_mut(&(fltworkitem as usize)) {
                item.queued = true;
            }
            Ok((f, k.fltmgr.filter(f).image))
        });
        let (f, image) = match r {
            Ok(x) => x,
            Err(s) => return s.0,
        };
        let (item, object, context) = (fltworkitem as usize, fltobject as usize, context as usize);
        crate::sched::queue_work("FltQueueGenericWorkItem", Some(image), Box::new(move || {
            kernel::with(|k| {
                if let Some(i) = k.fltmgr.work_items.get_mut(&item) {
                    i.queued = false;
                }
            });
            // SAFETY: the filter's work routine with its item, object and context.
            crate::fltmgr::call_filter(image, "generic work item routine", || unsafe {
                routine(item as PFLT_GENERIC_WORKITEM, object as *const c_void, context as *const c_void)
            });
            kernel::with(|k| {
                let r = k.fltmgr.filter_mut(f);
                r.rundown = r.rundown.saturating_sub(1);
            });
        }));
        Status::SUCCESS.0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltSetCallbackDataDirty =>
    /// `FltSetCallbackDataDirty`: the changed parameters go down with the operation.
    fn FltSetCallbackDataDirty(data: *mut FLT_CALLBACK_DATA) {
        // SAFETY: the caller's callback data.
        if let Some(d) = unsafe { data.as_mut() } {
            d.Flags |= crate::fltmgr::dispatch::cbd::DIRTY;
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltClearCallbackDataDirty =>
    /// `FltClearCallbackDataDirty`.
    fn FltClearCallbackDataDirty(data: *mut FLT_CALLBACK_DATA) {
        // SAFETY: the caller's callback data.
        if let Some(d) = unsafe { data.as_mut() } {
            d.Flags &= !crate::fltmgr::dispatch::cbd::DIRTY;
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltIsCallbackDataDirty =>
    /// `FltIsCallbackDataDirty`.
    fn FltIsCallbackDataDirty(data: *const FLT_CALLBACK_DATA) -> bool {
        // SAFETY: the caller's callback data.
        unsafe { data.as_ref() }.is_some_and(|d| d.Flags & crate::fltmgr::dispatch::cbd::DIRTY != 0)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltIsOperationSynchronous =>
    /// `FltIsOperationSynchronous`: TRUE for fast I/O and FsFilter callbacks; for an IRP-based
    /// operation what `IoIsOperationSynchronous` says of its IRP (the reference page's list,
    /// `irpx::synchronous`), read from the callback data's parameter block. Any IRQL.
    fn FltIsOperationSynchronous(callbackdata: *const FLT_CALLBACK_DATA) -> bool {
        // SAFETY: the caller's callback data.
        unsafe { callbackdata.as_ref() }.is_some_and(crate::fltmgr::ops::synchronous)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCompletePendedPreOperation =>
    /// `FltCompletePendedPreOperation`: resumes a pended operation with
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK`, `_NO_CALLBACK` or `_COMPLETE`.
    fn FltCompletePendedPreOperation(callbackdata: *const FLT_CALLBACK_DATA, callbackstatus: FLT_PREOP_CALLBACK_STATUS, context: *const c_void) {
        use crate::fltmgr::ops::preop;
        kernel::with(|k| {
            // The reference page: at IRQL <= DISPATCH_LEVEL to complete the operation, at
            // IRQL <= APC_LEVEL to send it on (the drivers below are called from here).
            if callbackstatus == preop::COMPLETE {
                k.check_irql(DISPATCH_LEVEL, "FltCompletePendedPreOperation(FLT_PREOP_COMPLETE)");
            } else {
                k.check_irql(APC_LEVEL, "FltCompletePendedPreOperation, not completing the operation,");
            }
            if callbackstatus == preop::SYNCHRONIZE {
                k.report_current(
                    Rule::StatusInvalidForOperation,
                    "FltCompletePendedPreOperation with FLT_PREOP_SYNCHRONIZE (the reference page: it \
                     cannot be FLT_PREOP_PENDING, FLT_PREOP_SYNCHRONIZE or FLT_PREOP_DISALLOW_FASTIO)",
                );
            }
        });
        crate::fltmgr::dispatch::complete_pended_pre(callbackdata, callbackstatus, context.cast_mut());
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCompletePendedPostOperation =>
    /// `FltCompletePendedPostOperation`: resumes a held post-operation.
    fn FltCompletePendedPostOperation(callbackdata: *const FLT_CALLBACK_DATA) {
        kernel::with(|k| k.check_irql(DISPATCH_LEVEL, "FltCompletePendedPostOperation"));
        crate::fltmgr::dispatch::complete_pended_post(callbackdata);
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetSwappedBufferMdlAddress =>
    /// `FltGetSwappedBufferMdlAddress`: the MDL the calling instance's pre callback swapped in,
    /// from its post callback; NULL otherwise.
    fn FltGetSwappedBufferMdlAddress(callbackdata: *const FLT_CALLBACK_DATA) -> *mut windows_sys::Wdk::Foundation::MDL {
        crate::fltmgr::post::swapped_mdl(callbackdata, false)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltRetainSwappedBufferMdlAddress =>
    /// `FltRetainSwappedBufferMdlAddress`: the Filter Manager does not free the MDL the calling
    /// instance swapped in; the minifilter frees it.
    fn FltRetainSwappedBufferMdlAddress(callbackdata: *const FLT_CALLBACK_DATA) {
        let _ = crate::fltmgr::post::swapped_mdl(callbackdata, true);
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltDoCompletionProcessingWhenSafe =>
    /// `FltDoCompletionProcessingWhenSafe` (facts.md §4).
    fn FltDoCompletionProcessingWhenSafe(data: *const FLT_CALLBACK_DATA, fltobjects: *const FLT_RELATED_OBJECTS, completioncontext: *const c_void, flags: u32, safepostcallback: PFLT_POST_OPERATION_CALLBACK, retpostoperationstatus: *mut FLT_POSTOP_CALLBACK_STATUS) -> bool {
        crate::fltmgr::dispatch::when_safe(data, fltobjects, completioncontext, flags, safepostcallback, retpostoperationstatus)
    }
}

/// Sends one synchronous request (`major`) for a file object to `device`.
fn file_request(
    device: *mut windows_sys::Wdk::Foundation::DEVICE_OBJECT,
    fo: *mut FILE_OBJECT,
    major: u8,
) {
    let close =
        if major == crate::nt::mj::CLOSE { crate::nt::irp_flags::CLOSE_OPERATION } else { 0 };
    let flags = crate::nt::irp_flags::SYNCHRONOUS_API | close;
    let image = kernel::with(|k| k.fltmgr.image);
    let _ = crate::syscalls::send_kernel_irp_to(device, fo, major, flags, image, |_, _| {});
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCancelFileOpen =>
    /// `FltCancelFileOpen`: from a post-create, sends `IRP_MJ_CLEANUP` and `IRP_MJ_CLOSE` for the
    /// file object below the instance's frame (the instances of lower frames, legacy filters
    /// between and the file system see them; docs/simulator.md).
    fn FltCancelFileOpen(instance: PFLT_INSTANCE, fileobject: *const FILE_OBJECT) {
        let fo = fileobject.cast_mut();
        let target = kernel::with(|k| {
            let Some(i) = k.fltmgr.instance_of(instance) else {
                k.report_current(Rule::InvalidFltObject, "FltCancelFileOpen with an unknown instance");
                return None;
            };
            // The same checks as IoCancelFileOpen, which FltCancelFileOpen calls on Windows.
            if !k.cancel_file_open_allowed(fo, "FltCancelFileOpen") {
                return None;
            }
            let r = k.fltmgr.inst(i);
            let dev = k.fltmgr.vol(r.volume).frames.iter().find(|(f, _)| *f == r.frame).map(|(_, d)| *d)?;
            Some(k.objects.device(dev).ptr)
        });
        let Some(lower) = target.and_then(|d| crate::fltmgr::ext_of(d)).map(|e| e.lower) else { return };
        crate::fltmgr::as_fltmgr(|| {
            file_request(lower, fo, crate::nt::mj::CLEANUP);
            file_request(lower, fo, crate::nt::mj::CLOSE);
        });
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetFileNameInformation =>
    /// `FltGetFileNameInformation`: the opened or normalized name of the operation's file, in a
    /// referenced structure the Filter Manager owns (docs/simulator.md, "File names").
    fn FltGetFileNameInformation(callbackdata: *const FLT_CALLBACK_DATA, nameoptions: u32, filenameinformation: *mut *mut FLT_FILE_NAME_INFORMATION) -> NTSTATUS {
        // The reference page: STATUS_INVALID_PARAMETER for a NULL out parameter.
        if filenameinformation.is_null() {
            return Status::INVALID_PARAMETER.0;
        }
        match crate::fltmgr::names::get(callbackdata, nameoptions) {
            Ok(info) => {
                // SAFETY: the caller's out parameter.
                unsafe { *filenameinformation = info };
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetFileNameInformationUnsafe =>
    /// `FltGetFileNameInformationUnsafe`: the name of an open file outside an operation.
    fn FltGetFileNameInformationUnsafe(fileobject: *const FILE_OBJECT, instance: PFLT_INSTANCE, nameoptions: u32, filenameinformation: *mut *mut FLT_FILE_NAME_INFORMATION) -> NTSTATUS {
        if filenameinformation.is_null() {
            return Status::INVALID_PARAMETER.0;
        }
        match crate::fltmgr::names::get_unsafe(fileobject, instance, nameoptions) {
            Ok(info) => {
                // SAFETY: the caller's out parameter.
                unsafe { *filenameinformation = info };
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltParseFileNameInformation =>
    /// `FltParseFileNameInformation`.
    fn FltParseFileNameInformation(filenameinformation: *mut FLT_FILE_NAME_INFORMATION) -> NTSTATUS {
        crate::fltmgr::names::parse(filenameinformation).0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltReferenceFileNameInformation =>
    /// `FltReferenceFileNameInformation`.
    fn FltReferenceFileNameInformation(filenameinformation: *const FLT_FILE_NAME_INFORMATION) {
        crate::fltmgr::names::reference(filenameinformation);
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltReleaseFileNameInformation =>
    /// `FltReleaseFileNameInformation`.
    fn FltReleaseFileNameInformation(filenameinformation: *const FLT_FILE_NAME_INFORMATION) {
        crate::fltmgr::names::release(filenameinformation);
    }
}
