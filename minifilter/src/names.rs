//! File names in the minifilter model (rule 22): `FltGetFileNameInformation`,
//! `FltParseFileNameInformation` and `FltReleaseFileNameInformation`, with the framework's
//! own refusals checked first so that both models refuse alike (docs/semantics.md, names).
//!
//! Compiled into a driver only when its constant registration declares name queries
//! (`fsfilter::queries_names`).

use fsfilter::{
    Error, FileNameInformation, Irql, NameBackend, NameId, NameKind, NameParts, NameRanges, Status,
};
use fsfilter_kernel::constants::fltfl_callback_data;
use fsfilter_kernel::irql;
use fsfilter_kernel::unicode::units;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_FILE_NAME_INFORMATION, FLT_FILE_NAME_NORMALIZED, FLT_FILE_NAME_OPENED,
    FLT_FILE_NAME_QUERY_DEFAULT, FltGetFileNameInformation, FltParseFileNameInformation,
    FltReleaseFileNameInformation,
};
use windows_sys::Win32::Foundation::UNICODE_STRING;

/// The Filter Manager's names.
struct FltNames;

static NAMES: FltNames = FltNames;

impl NameBackend for FltNames {
    fn parts(&self, id: NameId) -> Option<NameParts<'_>> {
        // SAFETY: a structure `get` obtained and parsed, not released yet (the guard's contract).
        let info = unsafe { (id.0 as *const FLT_FILE_NAME_INFORMATION).as_ref() }?;
        // SAFETY: the Filter Manager's name, valid until the release.
        let name = unsafe { units(&info.Name) };
        // Each part points into the name (FLT_FILE_NAME_INFORMATION: one buffer).
        let range = |s: &UNICODE_STRING| -> (usize, usize) {
            // SAFETY: a part of the same name, or empty.
            let part = unsafe { units(s) };
            if part.is_empty() {
                return (0, 0);
            }
            let start = (part.as_ptr() as usize).wrapping_sub(name.as_ptr() as usize) / 2;
            (start, part.len())
        };
        let ranges = NameRanges {
            volume: range(&info.Volume),
            share: range(&info.Share),
            parent_dir: range(&info.ParentDir),
            final_component: range(&info.FinalComponent),
            extension: range(&info.Extension),
            stream: range(&info.Stream),
        };
        Some(NameParts::from_ranges(name, &ranges))
    }

    fn release(&self, id: NameId) {
        // SAFETY: a structure `get` obtained, released once (its guard's drop).
        unsafe { FltReleaseFileNameInformation(id.0 as *const FLT_FILE_NAME_INFORMATION) };
    }
}

/// The operation's file's name (rule 22).
///
/// # Safety
/// `data` is null or the running callback's valid callback data.
pub(crate) unsafe fn get(
    data: *mut FLT_CALLBACK_DATA,
    kind: NameKind,
) -> Result<FileNameInformation, Error> {
    if irql::current() != Irql::PASSIVE {
        return Err(Error::INVALID_DEVICE_STATE);
    }
    // SAFETY: the caller's contract.
    let Some(d) = (unsafe { data.as_ref() }) else { return Err(Error::INVALID_PARAMETER) };
    if d.Flags & fltfl_callback_data::FS_FILTER_OPERATION != 0 {
        return Err(Error::FLT_INVALID_NAME_REQUEST);
    }
    // SAFETY: a valid callback data points to its parameter block.
    let Some(iopb) = (unsafe { d.Iopb.as_ref() }) else { return Err(Error::INVALID_PARAMETER) };
    if iopb.TargetFileObject.is_null() {
        return Err(Error::INVALID_PARAMETER);
    }
    let post = d.Flags & fltfl_callback_data::POST_OPERATION != 0;
    // The framework's own rules: normalized names once the file is open (both models); none
    // in the post of a create that ended STATUS_REPARSE, which opened nothing (rule 27), as
    // for a failed create, answered here as the legacy backend does, not left to the Filter
    // Manager.
    // SAFETY: the status member.
    let reparsed = post && unsafe { d.IoStatus.Anonymous.Status } == Status::REPARSE.0;
    if iopb.MajorFunction == 0 && (reparsed || (kind == NameKind::Normalized && !post)) {
        return Err(Error::FLT_INVALID_NAME_REQUEST);
    }
    let format = match kind {
        NameKind::Opened => FLT_FILE_NAME_OPENED,
        NameKind::Normalized => FLT_FILE_NAME_NORMALIZED,
    };
    let mut info: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
    // SAFETY: the running callback's data, a valid out pointer, PASSIVE_LEVEL.
    let status = Status(unsafe {
        FltGetFileNameInformation(data, format | FLT_FILE_NAME_QUERY_DEFAULT, &mut info)
    });
    if let Some(e) = Error::new(status) {
        return Err(e);
    }
    let name = FileNameInformation::new(NameId(info as usize), &NAMES, kind);
    // SAFETY: the structure just obtained (released by `name`'s drop on failure).
    let status = Status(unsafe { FltParseFileNameInformation(info) });
    if let Some(e) = Error::new(status) {
        return Err(e);
    }
    Ok(name)
}
