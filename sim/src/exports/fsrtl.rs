//! File-system runtime (FsRtl) exports: `FsRtlCreateSectionForDataScan` (facts.md §6).

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE};

use crate::events::Rule;
use crate::kernel::{self, PASSIVE_LEVEL};

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
    /// while byte-range locks are held. No conflict synchronization: the caller handles that.
    fn FsRtlCreateSectionForDataScan(
        sectionhandle: *mut HANDLE,
        sectionobject: *mut *mut c_void,
        sectionfilesize: *mut i64,
        fileobject: *const FILE_OBJECT,
        _desiredaccess: u32,
        objectattributes: *const OBJECT_ATTRIBUTES,
        _maximumsize: *const i64,
        _sectionpageprotection: u32,
        _allocationattributes: u32,
        _flags: u32,
    ) -> NTSTATUS {
        check_section_attributes("FsRtlCreateSectionForDataScan", objectattributes);
        let r = kernel::with(|k| {
            if !k.check_irql(PASSIVE_LEVEL, "FsRtlCreateSectionForDataScan") {
                return Err(Status::INVALID_DEVICE_STATE);
            }
            k.create_section(fileobject.cast_mut())
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
