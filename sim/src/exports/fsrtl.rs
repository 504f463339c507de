//! File-system runtime (FsRtl) exports: `FsRtlCreateSectionForDataScan` (facts.md §6) and
//! `FsRtlRegisterFileSystemFilterCallbacks` (docs/simulator.md, "FsFilter callbacks"); the
//! per-stream context routines (docs/simulator.md, "Per-stream contexts (FsRtl)"; the logic is
//! in `crate::perstream`).

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::{
    FS_FILTER_CALLBACKS, FSRTL_ADVANCED_FCB_HEADER, FSRTL_PER_FILEOBJECT_CONTEXT,
    FSRTL_PER_STREAM_CONTEXT,
};
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE};

use crate::events::Rule;
use crate::kernel::{self, APC_LEVEL, PASSIVE_LEVEL};

/// Reports [`Rule::SectionHandleNotKernel`] against the running image when a data-scan section
/// handle is requested with `attributes` null or without `OBJ_KERNEL_HANDLE` (facts.md §6: the
/// handle is a user handle unless `OBJ_KERNEL_HANDLE`). The call goes on: Windows would return a
/// user handle.
pub(crate) fn check_section_attributes(routine: &str, attributes: *const OBJECT_ATTRIBUTES) {
    // SAFETY: null or the caller's OBJECT_ATTRIBUTES, valid for the call.
    let flags = unsafe { attributes.as_ref() }.map(|a| a.Attributes);
    if flags.is_some_and(|f| f & OBJ_KERNEL_HANDLE != 0) {
        return;
    }
    let what = match flags {
        None => "a null ObjectAttributes".to_owned(),
        Some(f) => format!("ObjectAttributes.Attributes {f:#x}"),
    };
    kernel::with(|k| {
        k.report_current(
            Rule::SectionHandleNotKernel,
            format!(
                "{routine} with {what}: no OBJ_KERNEL_HANDLE, so the section handle is a user \
                 handle of the current process (facts.md §6)"
            ),
        );
    });
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlCreateSectionForDataScan =>
    /// `FsRtlCreateSectionForDataScan`: a section over the file object's stream, for scanning:
    /// a section handle, a referenced section object, the file's size. The handle is a kernel
    /// handle only when `ObjectAttributes` has `OBJ_KERNEL_HANDLE` (facts.md §6); a null
    /// `ObjectAttributes` or one without the flag is reported as
    /// `SECTION_HANDLE_WITHOUT_OBJ_KERNEL_HANDLE` (the call still succeeds). `STATUS_END_OF_FILE` for an
    /// empty file, `STATUS_FILE_IS_A_DIRECTORY`, `STATUS_INVALID_FILE_FOR_SECTION` for a file
    /// object that is not a file's (a volume or control-device open), `STATUS_FILE_LOCK_CONFLICT`
    /// while byte-range locks are held; `STATUS_INVALID_PARAMETER_8` for a protection other than
    /// `PAGE_READONLY` or `PAGE_READWRITE`, `_9` without `SEC_COMMIT`, before the acquire (WRK).
    /// No conflict synchronization: the caller handles that. A file object the file system
    /// never opened (no `FsContext`, no `SectionObjectPointer`) is
    /// `DATA_SCAN_SECTION_ON_UNOPENED_FILE` (a bug check on Windows) and
    /// `STATUS_INVALID_FILE_FOR_SECTION`, before the acquire.
    /// The file is acquired for section synchronization around the creation (the FsFilter
    /// callbacks of the stack's drivers, docs/simulator.md "FsFilter callbacks"); a driver that
    /// fails the acquire fails the call with its status.
    fn FsRtlCreateSectionForDataScan(
        sectionhandle: *mut HANDLE,
        sectionobject: *mut *mut c_void,
        sectionfilesize: *mut i64,
        fileobject: *const FILE_OBJECT,
        _desiredaccess: u32,
        objectattributes: *const OBJECT_ATTRIBUTES,
        _maximumsize: *const i64,
        sectionpageprotection: u32,
        allocationattributes: u32,
        _flags: u32,
    ) -> NTSTATUS {
        check_section_attributes("FsRtlCreateSectionForDataScan", objectattributes);
        if !kernel::with(|k| k.check_irql(PASSIVE_LEVEL, "FsRtlCreateSectionForDataScan")) {
            return Status::INVALID_DEVICE_STATE.0;
        }
        // The arguments before the acquire (WRK).
        let checked = crate::sections::check_data_scan_arguments(
            sectionpageprotection,
            allocationattributes,
        );
        if let Err(s) = checked {
            return s.0;
        }
        // A file object the file system never opened: a bug check on Windows, reported before
        // any driver sees the acquire (docs/simulator.md, "Sections for data scan").
        let routine = "FsRtlCreateSectionForDataScan";
        if kernel::with(|k| k.section_on_unopened_file(routine, fileobject)) {
            return Status::INVALID_FILE_FOR_SECTION.0;
        }
        // The file is acquired for section synchronization around the creation (WRK): every
        // driver of the stack sees the acquire, the caller's own devices too, and one may fail
        // it.
        let fo = fileobject.cast_mut();
        let r = crate::fsfilters::with_section_sync(fo, sectionpageprotection, || {
            kernel::with(|k| k.create_section(fo))
        });
        match r {
            Ok((h, object, size)) => {
                // SAFETY: the caller's out parameters.
                unsafe { *sectionhandle = h };
                if sectionobject.is_null() {
                    // No pointer wanted: drop the reference taken for it.
                    let fo = kernel::with(|k| k.section_dereference(object as usize)).flatten();
                    crate::sections::release_file(fo);
                } else {
                    // SAFETY: as above.
                    unsafe { *sectionobject = object };
                }
                if !sectionfilesize.is_null() {
                    // SAFETY: as above.
                    unsafe { *sectionfilesize = size };
                }
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

/// What [`Rule::MinifilterFsFilterRegistration`] says, whichever of the two calls comes second.
pub(crate) fn minifilter_message() -> String {
    "a minifilter (FltRegisterFilter) called FsRtlRegisterFileSystemFilterCallbacks, which \
     minifilters must never call (FLT_IS_FS_FILTER_OPERATION's reference page: the Filter \
     Manager presents FsFilter operations as IRP_MJ_ACQUIRE_FOR_* operations); registered all \
     the same"
        .to_owned()
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlRegisterFileSystemFilterCallbacks =>
    /// `FsRtlRegisterFileSystemFilterCallbacks`: copies the first `SizeOfFsFilterCallbacks`
    /// bytes of the table (at most the structure) to the driver object; a routine the size does
    /// not cover is never called, and a second registration replaces the first (WRK).
    /// `STATUS_INVALID_PARAMETER` for a NULL driver object or table, or a zero size (the
    /// reference page: it must not be zero); `STATUS_INSUFFICIENT_RESOURCES` when the pool for
    /// the copy fails (the `pool` fault). `PASSIVE_LEVEL`. A minifilter's call is
    /// `MINIFILTER_FS_FILTER_REGISTRATION` (so is a registration of a driver that called it).
    fn FsRtlRegisterFileSystemFilterCallbacks(
        filterdriverobject: *const DRIVER_OBJECT,
        callbacks: *const FS_FILTER_CALLBACKS,
    ) -> NTSTATUS {
        if filterdriverobject.is_null() || callbacks.is_null() {
            return Status::INVALID_PARAMETER.0;
        }
        // SAFETY: the caller's table: at least its size field is readable.
        let size = unsafe { (*callbacks).SizeOfFsFilterCallbacks } as usize;
        if size == 0 {
            return Status::INVALID_PARAMETER.0;
        }
        // SAFETY: all-zero is a valid table (no routines).
        let mut copy: FS_FILTER_CALLBACKS = unsafe { std::mem::zeroed() };
        let n = size.min(size_of::<FS_FILTER_CALLBACKS>());
        // SAFETY: the caller's table holds `size` >= `n` bytes; the copy holds `n`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                callbacks.cast::<u8>(),
                (&raw mut copy).cast::<u8>(),
                n,
            )
        };
        copy.SizeOfFsFilterCallbacks = n as u32;
        kernel::with(|k| {
            if !k.check_irql(PASSIVE_LEVEL, "FsRtlRegisterFileSystemFilterCallbacks") {
                return Status::INVALID_DEVICE_STATE.0;
            }
            if k.fault(crate::faults::FaultKind::Pool) {
                return Status::INSUFFICIENT_RESOURCES.0;
            }
            let Some(d) = k.objects.driver_id(filterdriverobject) else {
                return Status::INVALID_PARAMETER.0;
            };
            k.objects.driver_mut(d).fs_filter = Some(copy);
            if k.fltmgr.filter_of_driver(d).is_some() {
                let service = k.objects.driver(d).service.clone();
                k.report(Rule::MinifilterFsFilterRegistration, Some(service), minifilter_message());
            }
            Status::SUCCESS.0
        })
    }
}

/// Reports a NULL argument that Windows dereferences (a bugcheck there) as a `BUGCHECK`
/// finding against the running image.
fn null_argument(routine: &str, what: &str) {
    kernel::with(|k| {
        k.report_current(
            Rule::Bugcheck,
            format!("{routine} with a NULL {what}, which Windows dereferences"),
        )
    });
}

/// The search of `FsRtlLookupPerStreamContextInternal` and `FsRtlRemovePerStreamContext`
/// (`routine`): the IRQL and the ids checked, then `search` with the header, owner and instance.
fn search(
    routine: &str,
    header: *const FSRTL_ADVANCED_FCB_HEADER,
    owner: *const c_void,
    instance: *const c_void,
    search: impl FnOnce(&mut kernel::Kernel, usize, usize, usize) -> usize,
) -> *mut FSRTL_PER_STREAM_CONTEXT {
    kernel::with(|k| {
        k.check_irql(APC_LEVEL, routine);
        let (owner, instance) = (owner as usize, instance as usize);
        k.per_stream_check_ids(routine, owner, instance);
        search(k, header as usize, owner, instance)
    }) as *mut FSRTL_PER_STREAM_CONTEXT
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlInsertPerStreamContext =>
    /// `FsRtlInsertPerStreamContext` (WRK `fsrtl/filtrctx.c`): links the caller's
    /// `FSRTL_PER_STREAM_CONTEXT` at the head of the stream's `FilterContexts` list, with no
    /// search for duplicates; `STATUS_INVALID_DEVICE_REQUEST` for a NULL header or one without
    /// `FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS` (docs/simulator.md, "Per-stream contexts (FsRtl)").
    /// The context's `FreeCallback` is taken to be the inserting image's. A NULL context (with a
    /// header that supports them) is a `BUGCHECK` finding and `STATUS_INVALID_PARAMETER`.
    fn FsRtlInsertPerStreamContext(
        perstreamcontext: *const FSRTL_ADVANCED_FCB_HEADER,
        ptr: *const FSRTL_PER_STREAM_CONTEXT,
    ) -> NTSTATUS {
        kernel::with(|k| {
            k.check_irql(APC_LEVEL, "FsRtlInsertPerStreamContext");
            k.per_stream_insert(perstreamcontext as usize, ptr as usize)
        })
        .0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlLookupPerStreamContextInternal =>
    /// `FsRtlLookupPerStreamContextInternal`, which the `FsRtlLookupPerStreamContext` macro calls
    /// once it has seen the flag and a non-empty list (WRK): with an `InstanceId`, the first
    /// context whose `OwnerId` and `InstanceId` both match; with an `OwnerId` only, the first of
    /// that owner; with neither, the first. NULL when none matches. A header without the flag
    /// (the macro's test, which this routine only asserts) answers NULL; a NULL header is a
    /// `BUGCHECK` finding.
    fn FsRtlLookupPerStreamContextInternal(
        streamcontext: *const FSRTL_ADVANCED_FCB_HEADER,
        ownerid: *const c_void,
        instanceid: *const c_void,
    ) -> *mut FSRTL_PER_STREAM_CONTEXT {
        if streamcontext.is_null() {
            null_argument("FsRtlLookupPerStreamContextInternal", "header");
            return std::ptr::null_mut();
        }
        let routine = "FsRtlLookupPerStreamContextInternal";
        let find = |k: &mut kernel::Kernel, h, o, i| k.per_stream_find(h, o, i);
        search(routine, streamcontext, ownerid, instanceid, find)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlRemovePerStreamContext =>
    /// `FsRtlRemovePerStreamContext` (WRK): unlinks and returns the first context that
    /// `FsRtlLookupPerStreamContextInternal` would answer; NULL when none matches, for a NULL
    /// header, or one without filter contexts. The context is the caller's again.
    fn FsRtlRemovePerStreamContext(
        streamcontext: *const FSRTL_ADVANCED_FCB_HEADER,
        ownerid: *const c_void,
        instanceid: *const c_void,
    ) -> *mut FSRTL_PER_STREAM_CONTEXT {
        let routine = "FsRtlRemovePerStreamContext";
        let remove = |k: &mut kernel::Kernel, h, o, i| k.per_stream_remove(h, o, i);
        search(routine, streamcontext, ownerid, instanceid, remove)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlTeardownPerStreamContexts =>
    /// `FsRtlTeardownPerStreamContexts`, which a file system calls as it frees a stream's FCB
    /// (WRK): unlinks the head of the list and calls its `FreeCallback` with the context, the
    /// list's lock released, until the list is empty, so a `FreeCallback` may remove other
    /// contexts meanwhile. Each routine runs in the image that inserted its context, at the
    /// caller's IRQL; one of an unloaded image is not called (`UNLOADED_DRIVER_CODE_RAN`).
    fn FsRtlTeardownPerStreamContexts(advancedheader: *const FSRTL_ADVANCED_FCB_HEADER) {
        if advancedheader.is_null() {
            null_argument("FsRtlTeardownPerStreamContexts", "header");
            return;
        }
        kernel::with(|k| k.check_irql(APC_LEVEL, "FsRtlTeardownPerStreamContexts"));
        while let Some(u) = kernel::with(|k| k.per_stream_take_first(advancedheader as usize)) {
            crate::perstream::call_free_callback(u);
        }
    }
}

/// The search of `FsRtlLookupPerFileObjectContext` and `FsRtlRemovePerFileObjectContext`
/// (`routine`): the IRQL and the ids checked, then `search` with the file object, owner and
/// instance. A NULL file object answers NULL (WRK); one that is not a live file object (deleted
/// by the I/O manager) is reported as a bug check and answers NULL.
fn search_fo(
    routine: &str,
    fo: *const FILE_OBJECT,
    owner: *const c_void,
    instance: *const c_void,
    search: impl FnOnce(&mut kernel::Kernel, usize, usize, usize) -> usize,
) -> *mut FSRTL_PER_FILEOBJECT_CONTEXT {
    kernel::with(|k| {
        k.check_irql(APC_LEVEL, routine);
        let (owner, instance) = (owner as usize, instance as usize);
        k.per_fo_check_ids(routine, owner, instance);
        if !fo.is_null() && !k.files.map.contains_key(&(fo as usize)) {
            // Windows reads the file object's flags and extension: freed memory once the I/O
            // manager deleted it (a filter that kept a pointer past the close).
            k.report_current(
                Rule::Bugcheck,
                format!("{routine} of something that is no live file object"),
            );
            return 0;
        }
        search(k, fo as usize, owner, instance)
    }) as *mut FSRTL_PER_FILEOBJECT_CONTEXT
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlInsertPerFileObjectContext =>
    /// `FsRtlInsertPerFileObjectContext` (WRK `fsrtl/filtrctx.c`; Learn): associates the
    /// caller's `FSRTL_PER_FILEOBJECT_CONTEXT` with the file object, at the head of its list, with
    /// no search for duplicates; `STATUS_INVALID_PARAMETER` for a NULL file object
    /// (docs/simulator.md, "Per-file-object contexts (FsRtl)"). At IRQL ≤ `APC_LEVEL`.
    fn FsRtlInsertPerFileObjectContext(
        fileobject: *const FILE_OBJECT,
        ptr: *const FSRTL_PER_FILEOBJECT_CONTEXT,
    ) -> NTSTATUS {
        kernel::with(|k| {
            k.check_irql(APC_LEVEL, "FsRtlInsertPerFileObjectContext");
            k.per_fo_insert(fileobject as usize, ptr as usize)
        })
        .0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlLookupPerFileObjectContext =>
    /// `FsRtlLookupPerFileObjectContext` (WRK): with an `InstanceId`, the first context of the
    /// file object whose `OwnerId` and `InstanceId` both match; with an `OwnerId` only, the first
    /// of that owner; with neither, the first. NULL when none matches or for a NULL file object.
    fn FsRtlLookupPerFileObjectContext(
        fileobject: *const FILE_OBJECT,
        ownerid: *const c_void,
        instanceid: *const c_void,
    ) -> *mut FSRTL_PER_FILEOBJECT_CONTEXT {
        let routine = "FsRtlLookupPerFileObjectContext";
        let find = |k: &mut kernel::Kernel, f, o, i| k.per_fo_find(f, o, i);
        search_fo(routine, fileobject, ownerid, instanceid, find)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlRemovePerFileObjectContext =>
    /// `FsRtlRemovePerFileObjectContext` (WRK): unlinks and returns the first context that
    /// `FsRtlLookupPerFileObjectContext` would answer; NULL when none matches. The context is the
    /// caller's again; the filter frees it (there is no `FreeCallback`).
    fn FsRtlRemovePerFileObjectContext(
        fileobject: *const FILE_OBJECT,
        ownerid: *const c_void,
        instanceid: *const c_void,
    ) -> *mut FSRTL_PER_FILEOBJECT_CONTEXT {
        let routine = "FsRtlRemovePerFileObjectContext";
        let remove = |k: &mut kernel::Kernel, f, o, i| k.per_fo_remove(f, o, i);
        search_fo(routine, fileobject, ownerid, instanceid, remove)
    }
}
