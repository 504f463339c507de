//! Filter Manager exports for contexts and data scan (facts.md §5, §6). The logic is in
//! `crate::fltmgr::contexts` and `crate::fltmgr::datascan`.

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES, POOL_TYPE};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_SET_CONTEXT_OPERATION, PFLT_CONTEXT, PFLT_FILTER, PFLT_INSTANCE,
};
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS};

use crate::events::Rule;
use crate::fltmgr::contexts::{Allocation, Link, run_cleanups};
use crate::kernel::{self, APC_LEVEL, DISPATCH_LEVEL};
use crate::mem::Block;

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltAllocateContext =>
    /// `FltAllocateContext`: a context of a registered type and size
    /// (`STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND` otherwise; a size of 0 or above `MAXUSHORT`
    /// is `STATUS_INVALID_PARAMETER`), one reference; its contents are not zeroed (filled
    /// with 0xCD).
    fn FltAllocateContext(filter: PFLT_FILTER, contexttype: u16, contextsize: usize, pooltype: POOL_TYPE, returnedcontext: *mut PFLT_CONTEXT) -> NTSTATUS {
        if null_out(returnedcontext, "FltAllocateContext") {
            return Status::INVALID_PARAMETER.0;
        }
        let r = kernel::with(|k| {
            k.check_irql(APC_LEVEL, "FltAllocateContext");
            let f = k.fltmgr.filter_of(filter).ok_or(Status::INVALID_PARAMETER)?;
            k.flt_context_allocation(f, contexttype, contextsize).map(|a| (f, a))
        });
        let (f, alloc) = match r {
            Ok(x) => x,
            Err(s) => {
                if !returnedcontext.is_null() {
                    // SAFETY: the caller's out parameter.
                    unsafe { *returnedcontext = std::ptr::null_mut() };
                }
                return s.0;
            }
        };
        let (ptr, block, reg, image) = match alloc {
            Allocation::Pool(reg, image) => {
                // A fixed-size definition's element, which may be larger than asked.
                let variable = reg.size == crate::fltmgr::contexts::VARIABLE_SIZED;
                let fixed = if variable { 0 } else { reg.size };
                let size = contextsize.max(fixed).max(1);
                let block = Block::zeroed(size);
                // "The contents of the returned context are not zeroed" (the reference page):
                // filled as ExAllocatePoolWithTag's blocks are, so that code relying on zeroes
                // shows up.
                // SAFETY: the block holds `size` bytes.
                unsafe { std::ptr::write_bytes(block.ptr(), 0xCD, size) };
                (block.ptr() as usize, Some(block), reg, image)
            }
            Allocation::Callback(reg, image) => {
                let Some(cb) = reg.allocate else { return Status::INSUFFICIENT_RESOURCES.0 };
                // SAFETY: the filter's allocate callback with the pool type, size and type.
                let p = crate::fltmgr::call_filter(image, "ContextAllocateCallback", || unsafe { cb(pooltype, contextsize, contexttype) })
                    .unwrap_or(std::ptr::null_mut());
                if p.is_null() {
                    return Status::INSUFFICIENT_RESOURCES.0;
                }
                (p as usize, None, reg, image)
            }
        };
        // Paged pool types are the odd ones (PagedPool, PagedPoolCacheAligned, ...).
        let paged = pooltype % 2 == 1;
        kernel::with(|k| k.flt_context_add(f, reg, image, block, ptr, paged));
        // SAFETY: the caller's out parameter.
        unsafe { *returnedcontext = ptr as PFLT_CONTEXT };
        Status::SUCCESS.0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltReleaseContext =>
    /// `FltReleaseContext`: the last reference runs the cleanup callback, at once at
    /// `APC_LEVEL` or below, from a work item at `DISPATCH_LEVEL` (its reference page), which
    /// holds the filter's rundown until it has run.
    fn FltReleaseContext(context: PFLT_CONTEXT) {
        let c = kernel::with(|k| {
            k.check_irql(DISPATCH_LEVEL, "FltReleaseContext");
            let c = k.flt_context_release(context as usize);
            // "If the context was allocated from paged pool, callers must be running at IRQL
            // <= APC_LEVEL" (the reference page).
            if c.as_ref().is_some_and(|c| c.paged) {
                k.check_irql(APC_LEVEL, "FltReleaseContext of a paged-pool context");
            }
            let deferred = k.irql() > APC_LEVEL;
            if let (Some(c), true) = (&c, deferred) {
                k.fltmgr.filter_mut(c.filter).rundown += 1;
            }
            (c, deferred)
        });
        match c {
            (Some(c), true) => {
                let filter = c.filter;
                crate::sched::queue_work("context cleanup", None, Box::new(move || {
                    crate::fltmgr::as_fltmgr(|| run_cleanups(vec![c]));
                    kernel::with(|k| {
                        let r = k.fltmgr.filter_mut(filter);
                        r.rundown = r.rundown.saturating_sub(1);
                    });
                }));
            }
            (Some(c), false) => run_cleanups(vec![c]),
            (None, _) => {}
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltReferenceContext =>
    /// `FltReferenceContext` (IRQL <= `DISPATCH_LEVEL`).
    fn FltReferenceContext(context: PFLT_CONTEXT) {
        kernel::with(|k| {
            // The reference page: IRQL <= DISPATCH_LEVEL (unchecked before December 6).
            k.check_irql(DISPATCH_LEVEL, "FltReferenceContext");
            k.flt_context_reference(context as usize);
        });
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltDeleteContext =>
    /// `FltDeleteContext`: unlinks a context from its object (not a section context).
    fn FltDeleteContext(context: PFLT_CONTEXT) {
        let c = kernel::with(|k| {
            k.check_irql(APC_LEVEL, "FltDeleteContext");
            k.flt_context_delete(context as usize)
        });
        if let Some(c) = c {
            run_cleanups(vec![c]);
        }
    }
}

/// A NULL required out pointer passed to `what` ("cannot be NULL", its reference page):
/// Windows writes through it and bugchecks; the simulator reports a `BUGCHECK` finding and the
/// call does nothing.
fn null_out(out: *mut PFLT_CONTEXT, what: &str) -> bool {
    if !out.is_null() {
        return false;
    }
    kernel::with(|k| {
        k.report_current(Rule::Bugcheck, format!("{what} with a NULL context out pointer"))
    });
    true
}

/// The link of an instance's (stream, stream-handle) context.
fn link_of(
    k: &mut crate::kernel::Kernel,
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    ty: u16,
) -> Result<Link, Status> {
    let i = k.fltmgr.instance_of(instance).ok_or(Status::INVALID_PARAMETER)?;
    if ty == crate::fltmgr::contexts::INSTANCE {
        return Ok(Link::Instance(i));
    }
    let handle = ty == crate::fltmgr::contexts::STREAMHANDLE;
    // SAFETY: null or the caller's live file object.
    let Some(f) = (unsafe { fo.as_ref() }) else {
        // FltSetStreamHandleContext's page: STATUS_NOT_SUPPORTED for a NULL FileObject.
        return Err(if handle { Status::NOT_SUPPORTED } else { Status::INVALID_PARAMETER });
    };
    // Stream and stream-handle contexts need the file system's advanced FCB header supporting
    // filter contexts ("File System Support for Contexts"): not on a file object the file
    // system has not opened (pre-create) or has closed.
    let header =
        f.FsContext.cast::<windows_sys::Wdk::Storage::FileSystem::FSRTL_ADVANCED_FCB_HEADER>();
    // SAFETY: a file system's FsContext starts with its FCB header when it is one of ours.
    let supports = !header.is_null()
        && k.fs.fcbs.contains_key(&(header as usize))
        && unsafe { (*header).Base.Flags2 } & 0x02 != 0;
    if !supports {
        return Err(Status::NOT_SUPPORTED);
    }
    if handle {
        return Ok(Link::StreamHandle(i, fo as usize));
    }
    Ok(Link::Stream(i, header as usize))
}

fn set(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    ty: u16,
    operation: FLT_SET_CONTEXT_OPERATION,
    new: PFLT_CONTEXT,
    old: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    let (r, prev, cleanup) = kernel::with(|k| {
        k.check_irql(APC_LEVEL, "FltSet*Context");
        match link_of(k, instance, fo, ty) {
            Ok(link) => {
                let r = k.flt_context_set(link, operation, new as usize, !old.is_null());
                // Its stream contexts hang off a per-stream context of its own on the stream's
                // FilterContexts list (docs/simulator.md, "Per-stream contexts (FsRtl)").
                if let (Ok(()), Link::Stream(_, stream)) = (&r.0, link) {
                    k.flt_stream_list(stream);
                }
                r
            }
            Err(s) => (Err(s), 0, None),
        }
    });
    if !old.is_null() {
        // SAFETY: the caller's out parameter.
        unsafe { *old = prev as PFLT_CONTEXT };
    }
    if let Some(c) = cleanup {
        run_cleanups(vec![c]);
    }
    match r {
        Ok(()) => Status::SUCCESS.0,
        Err(s) => s.0,
    }
}

fn get(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    ty: u16,
    context: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    if null_out(context, "FltGet*Context") {
        return Status::INVALID_PARAMETER.0;
    }
    let r = kernel::with(|k| {
        if k.irql() > APC_LEVEL {
            k.report_current(Rule::IrqlTooHigh, format!("FltGet*Context at IRQL {} (contexts cannot be got at DISPATCH_LEVEL, facts.md §4, §9)", k.irql()));
        }
        link_of(k, instance, fo, ty).and_then(|l| k.flt_context_get(l))
    });
    match r {
        Ok(p) => {
            // SAFETY: the caller's out parameter.
            unsafe { *context = p as PFLT_CONTEXT };
            Status::SUCCESS.0
        }
        Err(s) => {
            if !context.is_null() {
                // SAFETY: the caller's out parameter.
                unsafe { *context = std::ptr::null_mut() };
            }
            s.0
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltSetInstanceContext =>
    /// `FltSetInstanceContext`.
    fn FltSetInstanceContext(instance: PFLT_INSTANCE, operation: FLT_SET_CONTEXT_OPERATION, newcontext: PFLT_CONTEXT, oldcontext: *mut PFLT_CONTEXT) -> NTSTATUS {
        set(instance, std::ptr::null(), crate::fltmgr::contexts::INSTANCE, operation, newcontext, oldcontext)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetInstanceContext =>
    /// `FltGetInstanceContext`: referenced; `STATUS_NOT_FOUND` when none is set.
    fn FltGetInstanceContext(instance: PFLT_INSTANCE, context: *mut PFLT_CONTEXT) -> NTSTATUS {
        get(instance, std::ptr::null(), crate::fltmgr::contexts::INSTANCE, context)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltSetStreamContext =>
    /// `FltSetStreamContext`: on the file's stream (`FsContext`); `STATUS_NOT_SUPPORTED` when the
    /// file system does not support filter contexts there.
    fn FltSetStreamContext(instance: PFLT_INSTANCE, fileobject: *const FILE_OBJECT, operation: FLT_SET_CONTEXT_OPERATION, newcontext: PFLT_CONTEXT, oldcontext: *mut PFLT_CONTEXT) -> NTSTATUS {
        set(instance, fileobject, crate::fltmgr::contexts::STREAM, operation, newcontext, oldcontext)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetStreamContext =>
    /// `FltGetStreamContext`.
    fn FltGetStreamContext(instance: PFLT_INSTANCE, fileobject: *const FILE_OBJECT, context: *mut PFLT_CONTEXT) -> NTSTATUS {
        get(instance, fileobject, crate::fltmgr::contexts::STREAM, context)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltSetStreamHandleContext =>
    /// `FltSetStreamHandleContext`: on the file object, once the file system opened it
    /// (`STATUS_NOT_SUPPORTED` before, and for a NULL file object).
    fn FltSetStreamHandleContext(instance: PFLT_INSTANCE, fileobject: *const FILE_OBJECT, operation: FLT_SET_CONTEXT_OPERATION, newcontext: PFLT_CONTEXT, oldcontext: *mut PFLT_CONTEXT) -> NTSTATUS {
        set(instance, fileobject, crate::fltmgr::contexts::STREAMHANDLE, operation, newcontext, oldcontext)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetStreamHandleContext =>
    /// `FltGetStreamHandleContext`.
    fn FltGetStreamHandleContext(instance: PFLT_INSTANCE, fileobject: *const FILE_OBJECT, context: *mut PFLT_CONTEXT) -> NTSTATUS {
        get(instance, fileobject, crate::fltmgr::contexts::STREAMHANDLE, context)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltRegisterForDataScan =>
    /// `FltRegisterForDataScan`: `STATUS_NOT_SUPPORTED` on named-pipe and mailslot volumes.
    fn FltRegisterForDataScan(instance: PFLT_INSTANCE) -> NTSTATUS {
        crate::fltmgr::datascan::register(instance).0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCreateSectionForDataScan =>
    /// `FltCreateSectionForDataScan` (facts.md §6). A handle requested with a null
    /// `ObjectAttributes`, or one without `OBJ_KERNEL_HANDLE`, would be a user handle on Windows:
    /// reported as `SECTION_HANDLE_WITHOUT_OBJ_KERNEL_HANDLE` (the call goes on).
    fn FltCreateSectionForDataScan(
        instance: PFLT_INSTANCE,
        fileobject: *const FILE_OBJECT,
        sectioncontext: PFLT_CONTEXT,
        _desiredaccess: u32,
        objectattributes: *const OBJECT_ATTRIBUTES,
        _maximumsize: *const i64,
        sectionpageprotection: u32,
        allocationattributes: u32,
        _flags: u32,
        sectionhandle: *mut HANDLE,
        sectionobject: *mut *mut c_void,
        sectionfilesize: *mut i64,
    ) -> NTSTATUS {
        if !sectionhandle.is_null() {
            crate::exports::fsrtl::check_section_attributes("FltCreateSectionForDataScan", objectattributes);
        }
        let args = crate::fltmgr::datascan::CreateArgs {
            instance,
            fo: fileobject,
            context: sectioncontext as usize,
            protection: sectionpageprotection,
            attributes: allocationattributes,
        };
        match crate::fltmgr::datascan::create(args) {
            Ok((h, object, size)) => {
                if !sectionhandle.is_null() {
                    // SAFETY: the caller's out parameter.
                    unsafe { *sectionhandle = h };
                }
                if sectionobject.is_null() {
                    // No pointer wanted: drop the reference taken for it.
                    let fo = kernel::with(|k| k.section_dereference(object as usize)).flatten();
                    crate::sections::release_file(fo);
                } else {
                    // SAFETY: the caller's out parameter.
                    unsafe { *sectionobject = object };
                }
                if !sectionfilesize.is_null() {
                    // SAFETY: the caller's out parameter.
                    unsafe { *sectionfilesize = size };
                }
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCloseSectionForDataScan =>
    /// `FltCloseSectionForDataScan`.
    fn FltCloseSectionForDataScan(sectioncontext: PFLT_CONTEXT) -> NTSTATUS {
        crate::fltmgr::datascan::close(sectioncontext as usize).0
    }
}
