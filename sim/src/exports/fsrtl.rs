//! File-system runtime (FsRtl) exports: `FsRtlCreateSectionForDataScan` (facts.md §6).

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS};

use crate::kernel::{self, PASSIVE_LEVEL};

export! { windows_sys::Wdk::Storage::FileSystem::FsRtlCreateSectionForDataScan =>
    /// `FsRtlCreateSectionForDataScan`: a section over the file object's stream, for scanning:
    /// a kernel handle, a referenced section object, the file's size. `STATUS_END_OF_FILE` for an
    /// empty file, `STATUS_FILE_IS_A_DIRECTORY`, `STATUS_INVALID_FILE_FOR_SECTION` for a file
    /// object that is not a file's (a volume or control-device open), `STATUS_FILE_LOCK_CONFLICT`
    /// while byte-range locks are held. No conflict synchronization: the caller handles that.
    fn FsRtlCreateSectionForDataScan(
        sectionhandle: *mut HANDLE,
        sectionobject: *mut *mut c_void,
        sectionfilesize: *mut i64,
        fileobject: *const FILE_OBJECT,
        _desiredaccess: u32,
        _objectattributes: *const OBJECT_ATTRIBUTES,
        _maximumsize: *const i64,
        _sectionpageprotection: u32,
        _allocationattributes: u32,
        _flags: u32,
    ) -> NTSTATUS {
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
