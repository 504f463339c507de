//! Data scan (facts.md §6): `FltRegisterForDataScan`, `FltCreateSectionForDataScan` over the
//! simulator's sections (docs/simulator.md, "Sections for data scan"), one section per stream
//! per instance, `FltCloseSectionForDataScan`, and section-conflict notifications — from the
//! file system's conflict hook when conflicting I/O arrives, and before
//! `FltCreateSectionForDataScan` returns when such I/O is already in flight.

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA;
use windows_sys::Win32::Foundation::HANDLE;

use super::{FilterId, FilterState, InstId, InstState};
use crate::events::{FltEvent, Rule};
use crate::kernel::{self, APC_LEVEL, Kernel};
use crate::sections::ConflictOp;

/// A section created through `FltCreateSectionForDataScan`.
pub struct FltSection {
    /// The filter.
    pub filter: FilterId,
    /// The instance.
    pub inst: InstId,
    /// The stream.
    pub stream: usize,
    /// The section context.
    pub context: usize,
    /// The section object.
    pub section: usize,
    /// Not closed with `FltCloseSectionForDataScan` yet.
    pub open: bool,
}

/// The Filter Manager's sections.
#[derive(Default)]
pub struct FltSections {
    /// Every section, open or closed.
    pub list: Vec<FltSection>,
}

fn log(k: &mut Kernel, inst: InstId, what: &'static str, status: Status) {
    let name = k.fltmgr.inst(inst).name.clone();
    let (driver, volume) = k.flt_inst_names(inst);
    k.flt_log(driver, volume, FltEvent::DataScan { instance: name.to_string(), what, status });
}

/// `FltRegisterForDataScan`: `STATUS_NOT_SUPPORTED` on named-pipe and mailslot volumes.
pub fn register(instance: isize) -> Status {
    kernel::with(|k| {
        // The reference page: IRQL <= APC_LEVEL.
        k.check_irql(APC_LEVEL, "FltRegisterForDataScan");
        let Some(i) = k.fltmgr.instance_of(instance) else {
            k.report_current(
                Rule::InvalidFltObject,
                "FltRegisterForDataScan with an unknown instance",
            );
            return Status::INVALID_PARAMETER;
        };
        let v = k.fltmgr.inst(i).volume;
        let status = if k.fltmgr.vol(v).is_npfs_msfs() {
            Status::NOT_SUPPORTED
        } else {
            k.fltmgr.inst_mut(i).data_scan = true;
            Status::SUCCESS
        };
        log(k, i, "register", status);
        status
    })
}

/// The arguments of `FltCreateSectionForDataScan` the model reads.
pub struct CreateArgs {
    /// `Instance`.
    pub instance: isize,
    /// `FileObject`.
    pub fo: *const FILE_OBJECT,
    /// `SectionContext`.
    pub context: usize,
    /// `SectionPageProtection`.
    pub protection: u32,
    /// `AllocationAttributes`.
    pub attributes: u32,
}

/// `FltCreateSectionForDataScan` (facts.md §6).
pub fn create(a: CreateArgs) -> Result<(HANDLE, *mut c_void, i64), Status> {
    let pre = kernel::with(|k| -> Result<(InstId, usize), Status> {
        k.check_irql(APC_LEVEL, "FltCreateSectionForDataScan");
        let i = k.fltmgr.instance_of(a.instance).ok_or(Status::INVALID_PARAMETER)?;
        let ir = k.fltmgr.inst(i);
        let f = ir.filter;
        if !matches!(k.fltmgr.filter(f).state, FilterState::Started | FilterState::Registered)
            || ir.state == InstState::Gone
        {
            return Err(Status::INVALID_PARAMETER);
        }
        // The volume's reason before the instance's: FltRegisterForDataScan can never succeed
        // on a pipe or mailslot volume, so checked after `data_scan` this status could never be
        // returned (docs/simulator.md, "Data scan").
        if k.fltmgr.vol(ir.volume).is_npfs_msfs() {
            return Err(Status::NOT_SUPPORTED);
        }
        if !ir.data_scan {
            return Err(Status::INVALID_PARAMETER);
        }
        match k.flt_context_info(a.context) {
            Some((cf, super::contexts::SECTION)) if cf == f => {}
            _ => return Err(Status::INVALID_PARAMETER),
        }
        // A context links to one object at a time: the context of a section still open cannot
        // serve a second one (status undocumented; the FltSet*Context routines' for a linked
        // context, docs/simulator.md "Data scan").
        if k.flt_context_linked(a.context) {
            return Err(Status::FLT_CONTEXT_ALREADY_LINKED);
        }
        crate::sections::check_data_scan_arguments(a.protection, a.attributes)?;
        if a.fo.is_null() {
            return Err(Status::INVALID_PARAMETER);
        }
        // A file object the file system never opened: a bug check on Windows (the memory
        // manager's), reported before the acquire (docs/simulator.md, "Data scan").
        if k.section_on_unopened_file("FltCreateSectionForDataScan", a.fo) {
            return Err(Status::INVALID_FILE_FOR_SECTION);
        }
        // SAFETY: a live file object the caller passed.
        let stream = unsafe { (*a.fo).FsContext } as usize;
        if k.fltmgr.sections.list.iter().any(|s| s.open && s.inst == i && s.stream == stream) {
            return Err(Status::FLT_CONTEXT_ALREADY_DEFINED);
        }
        Ok((i, stream))
    });
    let (i, stream) = match pre {
        Ok(x) => x,
        Err(s) => {
            kernel::with(|k| {
                if let Some(i) = k.fltmgr.instance_of(a.instance) {
                    log(k, i, "create_section", s);
                }
            });
            return Err(s);
        }
    };
    // The memory manager acquires the file for the section first, as for
    // FsRtlCreateSectionForDataScan (WRK; a choice for this routine, docs/simulator.md "FsFilter
    // callbacks"): every driver of the stack sees the acquire, the caller's own instance too.
    let mut created = false;
    let made = crate::fsfilters::with_section_sync(a.fo.cast_mut(), a.protection, || {
        created = true;
        kernel::with(|k| {
            let r = k.create_section(a.fo.cast_mut());
            match r {
                Ok((h, object, size)) => {
                    k.flt_context_link_section(a.context);
                    let f = k.fltmgr.inst(i).filter;
                    k.fltmgr.sections.list.push(FltSection {
                        filter: f,
                        inst: i,
                        stream,
                        context: a.context,
                        section: object as usize,
                        open: true,
                    });
                    log(k, i, "create_section", Status::SUCCESS);
                    Ok((h, object, size, k.fltmgr.ops.conflicting_on(stream)))
                }
                Err(s) => {
                    log(k, i, "create_section", s);
                    Err(s)
                }
            }
        })
    });
    if let (Err(s), false) = (&made, created) {
        // Refused by a driver's acquire (the creation logs its own outcome).
        kernel::with(|k| log(k, i, "create_section", *s));
    }
    let (h, object, size, in_flight) = made?;
    // Conflicting I/O already in flight: the notification comes before the create returns.
    if let Some(data) = in_flight {
        notify(stream, &[object as usize], data, true);
    }
    Ok((h, object, size))
}

/// `FltCloseSectionForDataScan`: `STATUS_INVALID_PARAMETER` for a context never used to create
/// a section, `STATUS_NOT_FOUND` once closed. The section context's link goes; the handle and
/// the object reference the create returned stay the caller's to close (docs/simulator.md).
pub fn close(context: usize) -> Status {
    let r = kernel::with(|k| {
        // The reference page: IRQL <= APC_LEVEL.
        k.check_irql(APC_LEVEL, "FltCloseSectionForDataScan");
        let Some(pos) = k.fltmgr.sections.list.iter().rposition(|s| s.context == context) else {
            return (Status::INVALID_PARAMETER, None);
        };
        let s = &mut k.fltmgr.sections.list[pos];
        if !s.open {
            let i = s.inst;
            log(k, i, "close_section", Status::NOT_FOUND);
            return (Status::NOT_FOUND, None);
        }
        s.open = false;
        let i = s.inst;
        let cleanup = k.flt_context_unlink_section(context);
        log(k, i, "close_section", Status::SUCCESS);
        (Status::SUCCESS, cleanup)
    });
    if let Some(c) = r.1 {
        super::contexts::run_cleanups(vec![c]);
    }
    r.0
}

/// The file system's conflict hook: I/O that needs a purge arrived on a stream with open
/// sections.
pub fn on_conflict(stream: usize, sections: &[usize], _op: ConflictOp) {
    let data =
        kernel::with(|k| k.fltmgr.ops.conflicting_on(stream)).unwrap_or(std::ptr::null_mut());
    notify(stream, sections, data, false);
}

fn notify(stream: usize, sections: &[usize], data: *mut FLT_CALLBACK_DATA, during_create: bool) {
    let calls: Vec<_> = kernel::with(|k| {
        k.fltmgr
            .sections
            .list
            .iter()
            .filter(|s| s.open && s.stream == stream && sections.contains(&s.section))
            // Not to a torn-down instance (its filter may be gone; docs/simulator.md).
            .filter(|s| k.fltmgr.inst(s.inst).state != InstState::Gone)
            .filter_map(|s| {
                let fr = k.fltmgr.filter(s.filter);
                let cb = fr.callbacks.section_notification?;
                Some((cb, fr.image, k.fltmgr.inst(s.inst).handle(), s.context, s.inst))
            })
            .collect()
    });
    for (cb, image, instance, context, inst) in calls {
        kernel::with(|k| {
            let name = k.fltmgr.inst(inst).name.clone();
            let (driver, volume) = k.flt_inst_names(inst);
            k.flt_log(
                driver,
                volume,
                FltEvent::SectionConflict { instance: name.to_string(), context, during_create },
            );
        });
        // SAFETY: the filter's section-notification callback with its instance, section context
        // and the conflicting operation's data (or NULL).
        super::call_filter(image, "SectionNotificationCallback", || unsafe {
            cb(instance, context as *mut c_void, data)
        });
    }
}

/// Reports data-scan sections a filter never closed (`SECTION_LEAKED_AT_UNLOAD`).
pub fn report_leaks(k: &mut Kernel, f: FilterId) {
    let n = k.fltmgr.sections.list.iter().filter(|s| s.open && s.filter == f).count();
    if n > 0 {
        k.flt_report(
            Some(f),
            Rule::SectionLeaked,
            format!("{n} data-scan section(s) never closed with FltCloseSectionForDataScan when the filter unregistered"),
        );
    }
}

/// Closes the data-scan sections a filter left open when it unregistered, after
/// [`report_leaks`]: the Filter Manager no longer synchronizes them nor calls the filter's
/// `SectionNotificationCallback`, and its reference on each section context goes (facts.md §5:
/// the unregistration deletes the filter's contexts). The cleanups to run are returned.
pub fn close_leaked(k: &mut Kernel, f: FilterId) -> Vec<super::contexts::Cleanup> {
    let contexts: Vec<usize> = k
        .fltmgr
        .sections
        .list
        .iter_mut()
        .filter(|s| s.open && s.filter == f)
        .map(|s| {
            s.open = false;
            s.context
        })
        .collect();
    contexts.into_iter().filter_map(|c| k.flt_context_unlink_section(c)).collect()
}
