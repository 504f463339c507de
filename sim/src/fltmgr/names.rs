//! File names: `FltGetFileNameInformation`, `FltGetFileNameInformationUnsafe`,
//! `FltParseFileNameInformation`, `FltReferenceFileNameInformation` and
//! `FltReleaseFileNameInformation` (docs/simulator.md, "File names", has every fact with its
//! source and every choice of ours).
//!
//! A name information is a block the Filter Manager owns: the `FLT_FILE_NAME_INFORMATION`
//! followed by the name's UTF-16 text, which every `UNICODE_STRING` of the structure points
//! into. It is reference counted; the last release frees it (the block stays allocated a while,
//! as the operations' blocks do, so that a filter that keeps a released pointer reads a dead
//! structure). No name cache is modelled: `FLT_FILE_NAME_QUERY_CACHE_ONLY` always misses.

use std::collections::VecDeque;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_FILE_NAME_INFORMATION, PFLT_INSTANCE,
};
use windows_sys::Win32::Foundation::UNICODE_STRING;

use super::FilterId;
use super::ops::cbd;
use crate::events::Rule;
use crate::kernel::{self, APC_LEVEL, FastMap, Kernel};
use crate::mem::Block;
use crate::nt::{file_info as fi, irp_flags, mj};

/// `FLT_FILE_NAME_NORMALIZED`.
pub const NORMALIZED: u32 = 1;
/// `FLT_FILE_NAME_OPENED`.
pub const OPENED: u32 = 2;
/// `FLT_FILE_NAME_SHORT`.
pub const SHORT: u32 = 3;
/// `FLT_FILE_NAME_QUERY_DEFAULT`.
pub const QUERY_DEFAULT: u32 = 0x100;
/// `FLT_FILE_NAME_QUERY_CACHE_ONLY`.
pub const QUERY_CACHE_ONLY: u32 = 0x200;
/// `FLT_FILE_NAME_QUERY_FILESYSTEM_ONLY`.
pub const QUERY_FILESYSTEM_ONLY: u32 = 0x300;
/// `FLT_FILE_NAME_QUERY_ALWAYS_ALLOW_CACHE_LOOKUP`.
pub const QUERY_ALWAYS_ALLOW_CACHE_LOOKUP: u32 = 0x400;
/// The flags `FLT_FILE_NAME_OPTIONS` defines (`FLT_FILE_NAME_REQUEST_FROM_CURRENT_PROVIDER`,
/// `FLT_FILE_NAME_DO_NOT_CACHE`, `FLT_FILE_NAME_ALLOW_QUERY_ON_REPARSE`).
pub const KNOWN_FLAGS: u32 = 0x0100_0000 | 0x0200_0000 | 0x0400_0000;
/// Every `FLTFL_FILE_NAME_PARSED_*` flag.
const PARSED_ALL: u16 = 0x1 | 0x2 | 0x4 | 0x8;
/// `SL_OPEN_TARGET_DIRECTORY`.
const OPEN_TARGET_DIRECTORY: u8 = 0x04;
/// How many released name blocks stay allocated.
const DEAD_KEPT: usize = 1024;

/// One name information.
pub struct NameRec {
    block: Block,
    /// References (0: released, the block kept dead).
    pub refs: u32,
    /// The filter whose instance asked for it (the leak report names it).
    pub filter: Option<FilterId>,
    /// The volume's part of the name, in UTF-16 units.
    volume_len: usize,
    /// The share's part after the volume (a network file system's `\server\share`).
    share_len: usize,
}

/// The name informations handed out.
#[derive(Default)]
pub struct Names {
    /// By the structure's address.
    pub list: FastMap<usize, NameRec>,
    dead: VecDeque<usize>,
}

/// What a name query needs: the operation's context, found inside the kernel lock.
struct Plan {
    format: u32,
    volume: String,
    share: bool,
    filter: Option<FilterId>,
    how: How,
}

/// How the name is found.
enum How {
    /// Built from the file object (and, for a normalized name in pre-create, the volume's
    /// directories): nothing to send.
    Ready(String),
    /// Asked of the file system with a `FileNameInformation` query sent to this device.
    Query(usize, usize),
}

/// The context of a name query.
struct Context {
    fo: *mut FILE_OBJECT,
    instance: PFLT_INSTANCE,
    pre_create: bool,
    /// The operation is the create (pre or post): a relative open's related file object is
    /// still the I/O manager's.
    create: bool,
    open_target_directory: bool,
    /// A context where the file system must not be asked (paging I/O, FsFilter callbacks).
    unsafe_for_fs: bool,
    /// A context where no name may be asked at all (post-close, the post of a failed create).
    invalid: bool,
}

/// The refusals every name query makes, in the reference page's order; `None`: go on.
fn refusal(format: u32, method: u32, c: &Context) -> Option<Status> {
    if c.invalid || (format == SHORT && c.pre_create) {
        return Some(Status::FLT_INVALID_NAME_REQUEST);
    }
    if method == QUERY_CACHE_ONLY {
        return Some(Status::FLT_NAME_CACHE_MISS);
    }
    if c.unsafe_for_fs {
        return Some(if method == QUERY_ALWAYS_ALLOW_CACHE_LOOKUP {
            Status::FLT_NAME_CACHE_MISS
        } else {
            Status::FLT_INVALID_NAME_REQUEST
        });
    }
    if format == SHORT {
        // The simulator's file systems keep no short names (NTFS with 8.3 generation off).
        return Some(Status::OBJECT_NAME_NOT_FOUND);
    }
    None
}

/// Checks the options: one format, one method, only documented flags.
fn check_options(options: u32) -> Result<(u32, u32), Status> {
    let format = options & 0xFF;
    let method = options & 0xFF00;
    let flags = options & 0xFF00_0000;
    let others = options & 0x00FF_0000;
    if !(NORMALIZED..=SHORT).contains(&format)
        || !matches!(
            method,
            QUERY_DEFAULT
                | QUERY_CACHE_ONLY
                | QUERY_FILESYSTEM_ONLY
                | QUERY_ALWAYS_ALLOW_CACHE_LOOKUP
        )
        || flags & !KNOWN_FLAGS != 0
        || others != 0
    {
        return Err(Status::INVALID_PARAMETER);
    }
    Ok((format, method))
}

/// The name a file object was opened with, from the volume's root: its `FileName`, after its
/// related file object's name for a relative open. Empty for a volume open.
/// Whether `fo` was opened relative to another file object (`RelatedFileObject` set, its
/// `FileName` not starting with `\`): its opened name needs the related file object's, which
/// is safe to read only while the create runs.
///
/// # Safety
/// `fo` is a live file object (or null).
pub(crate) unsafe fn relative_open(fo: *const FILE_OBJECT) -> bool {
    // SAFETY: the caller's live file object.
    unsafe { fo.as_ref() }.is_some_and(|f| {
        // SAFETY: its name, valid while it lives.
        let first = unsafe { crate::irpx::units(&f.FileName) }.first().copied();
        !f.RelatedFileObject.is_null() && first != Some(u16::from(b'\\'))
    })
}

///
/// # Safety
/// `fo` is a live file object (or null).
pub(crate) unsafe fn opened_path(fo: *const FILE_OBJECT) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = fo;
    // A chain of relative opens, each naming its related file object (bounded: a cycle is a
    // corrupt object).
    for _ in 0..64 {
        // SAFETY: the caller's live file object, or a related one it holds a reference on.
        let Some(f) = (unsafe { cur.as_ref() }) else { break };
        // SAFETY: its name, valid while it lives.
        let name = String::from_utf16_lossy(unsafe { crate::irpx::units(&f.FileName) });
        let absolute = name.starts_with('\\');
        parts.push(name);
        if absolute {
            break;
        }
        cur = f.RelatedFileObject;
    }
    let mut out = String::new();
    for p in parts.iter().rev() {
        if p.is_empty() {
            continue;
        }
        // A stream opened relative to its file (`:s`) follows the file's name directly.
        if !p.starts_with('\\') && !p.starts_with(':') && !out.ends_with('\\') {
            out.push('\\');
        }
        out.push_str(p);
    }
    out
}

/// The parent of a path (`\a\b` -> `\a`; `\b` -> `\`).
fn parent_of(path: &str) -> String {
    let trimmed = path.trim_end_matches('\\');
    match trimmed.rfind('\\') {
        Some(0) | None => "\\".to_owned(),
        Some(i) => trimmed[..i].to_owned(),
    }
}

impl Kernel {
    /// The normalized name of a path that a create is about to open on the disk volume whose
    /// volume device is `bottom`: each existing component as the file system stores it, the
    /// final one as given when it does not exist yet. `Err` when a directory on the way is
    /// missing.
    fn pre_create_normalized(
        &self,
        bottom: crate::ids::DeviceId,
        path: &str,
    ) -> Result<String, Status> {
        let Some(vol) = self.volumes.list.iter().find(|v| v.vdo == Some(bottom)) else {
            // A namespace file system (MUP, pipes, mailslots): the path as opened.
            return Ok(path.to_owned());
        };
        let media = &vol.media;
        let mut comps: Vec<&str> = path.split('\\').filter(|c| !c.is_empty()).collect();
        // A named stream (`file:stream`, docs/simulator.md "Named data streams"): the file's
        // part is normalized, the stream's kept as the create gives it.
        let stream = crate::fs::streams::stream_suffix(crate::fs::FsType::of(vol.fs), &mut comps);
        let mut cur = crate::fs::media::ROOT;
        let mut out = String::new();
        for (i, c) in comps.iter().enumerate() {
            match media.child(cur, c) {
                Some(n) => {
                    out.push('\\');
                    out.push_str(&media.node(n).name);
                    cur = n;
                }
                None if i + 1 == comps.len() => {
                    out.push('\\');
                    out.push_str(c);
                }
                None => return Err(Status::OBJECT_PATH_NOT_FOUND),
            }
            if i + 1 < comps.len() && !media.node(cur).is_dir() {
                return Err(Status::OBJECT_PATH_NOT_FOUND);
            }
        }
        if out.is_empty() {
            out.push('\\');
        }
        out.push_str(stream);
        Ok(out)
    }

    /// The device below an instance's frame on its volume.
    fn below_instance(&self, i: super::InstId) -> Option<*mut DEVICE_OBJECT> {
        let r = self.fltmgr.inst(i);
        let dev = self.fltmgr.vol(r.volume).frames.iter().find(|(f, _)| *f == r.frame)?.1;
        Some(self.objects.device(dev).ptr)
    }

    /// Plans a name query in `c`'s context for the volume `v`.
    fn name_plan(
        &mut self,
        options: u32,
        c: &Context,
        v: super::FvId,
        lower: Option<*mut DEVICE_OBJECT>,
    ) -> Result<Plan, Status> {
        let (format, method) = check_options(options)?;
        if let Some(s) = refusal(format, method, c) {
            return Err(s);
        }
        if self.fault(crate::faults::FaultKind::Pool) {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        let rec = self.fltmgr.vol(v);
        let volume = rec.name.clone();
        let share = rec.fs == Some(crate::fs::FsType::Mup);
        let bottom = rec.bottom;
        let filter = self.fltmgr.instance_of(c.instance).map(|i| self.fltmgr.inst(i).filter);
        // A relative open's related file object is the I/O manager's only while the create runs
        // (WRK `IopParseDevice` takes it from the open's root handle, and nothing holds it
        // after): after the create, a relatively opened file's opened name is the file
        // system's, asked as a normalized one is (the chain is not followed).
        // SAFETY: the operation's live file object.
        let chain = c.create || !unsafe { relative_open(c.fo) };
        // SAFETY: the operation's live file object, and its related ones during the create.
        let mut opened = if chain { unsafe { opened_path(c.fo) } } else { String::new() };
        if c.pre_create && c.open_target_directory {
            opened = parent_of(&opened);
        }
        let how = if format == OPENED && chain {
            How::Ready(opened)
        } else if c.pre_create {
            How::Ready(self.pre_create_normalized(bottom, &opened)?)
        } else {
            let lower = lower.ok_or(Status::INVALID_PARAMETER)?;
            How::Query(lower as usize, c.fo as usize)
        };
        Ok(Plan { format, volume, share, filter, how })
    }
}

/// Sends a `FileNameInformation` query for `fo` to `device` and waits for it: the file system's
/// volume-relative name (a share's `\server\share\...`).
fn query_name(device: *mut DEVICE_OBJECT, fo: *mut FILE_OBJECT) -> Result<String, Status> {
    const LENGTH: usize = 4 + 65_536;
    let buffer = Block::zeroed(LENGTH);
    let image = kernel::with(|k| k.fltmgr.image);
    let flags = irp_flags::SYNCHRONOUS_API;
    let query = mj::QUERY_INFORMATION;
    let sent = crate::syscalls::send_kernel_irp_to(device, fo, query, flags, image, |i, s| {
        i.AssociatedIrp.SystemBuffer = buffer.ptr().cast();
        // SAFETY: `QueryFile` is the member a query uses.
        let p = unsafe {
            fsfilter_kernel::params::io_mut::<fsfilter_kernel::params::IoFileInformation>(
                &mut s.Parameters,
            )
        };
        p.Length = LENGTH as u32;
        p.FileInformationClass = fi::NAME as _;
    });
    let status = sent.0;
    if status == Status::PENDING {
        // The IRP may still complete into the buffer: leave it.
        std::mem::forget(buffer);
        return Err(Status::UNSUCCESSFUL);
    }
    if status.is_error() {
        return Err(status);
    }
    // SAFETY: the buffer holds LENGTH bytes; the file system wrote a FILE_NAME_INFORMATION.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr(), LENGTH) };
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let units: Vec<u16> = bytes[4..4 + len.min(LENGTH - 4)]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok(String::from_utf16_lossy(&units))
}

/// Carries a plan out: the name, in a new referenced block. Called outside the kernel lock.
fn build(plan: Plan) -> Result<*mut FLT_FILE_NAME_INFORMATION, Status> {
    let path = match plan.how {
        How::Ready(p) => p,
        How::Query(device, fo) => crate::fltmgr::as_fltmgr(|| {
            query_name(device as *mut DEVICE_OBJECT, fo as *mut FILE_OBJECT)
        })?,
    };
    let text: Vec<u16> = plan.volume.encode_utf16().chain(path.encode_utf16()).collect();
    let volume_len = plan.volume.encode_utf16().count();
    let share_len = if plan.share {
        // `\server\share` after the volume: up to the third separator of the path.
        let rest = text.get(volume_len..).unwrap_or(&[]);
        let sep = u16::from(b'\\');
        rest.iter()
            .enumerate()
            .filter(|(_, c)| **c == sep)
            .map(|(i, _)| i)
            .nth(2)
            .unwrap_or(rest.len())
    } else {
        0
    };
    let header = std::mem::size_of::<FLT_FILE_NAME_INFORMATION>();
    let block = Block::zeroed(header + text.len() * 2);
    let info = block.ptr().cast::<FLT_FILE_NAME_INFORMATION>();
    let buf = block.ptr().wrapping_add(header).cast::<u16>();
    // SAFETY: the block holds the text after the header; it is ours alone.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len()) };
    // SAFETY: the block's header, zeroed and ours.
    let r = unsafe { &mut *info };
    r.Size = header as u16;
    r.Format = plan.format;
    r.Name = ustr(buf, 0, text.len());
    r.Volume = ustr(buf, 0, volume_len);
    r.Share = ustr(buf, volume_len, share_len);
    kernel::with(|k| {
        let rec = NameRec { block, refs: 1, filter: plan.filter, volume_len, share_len };
        k.fltmgr.names.list.insert(info as usize, rec);
    });
    Ok(info)
}

/// A `UNICODE_STRING` of `len` units of `buf` from `start` (an empty one with a null buffer
/// when `len` is 0, as the reference pages describe a component not found).
fn ustr(buf: *mut u16, start: usize, len: usize) -> UNICODE_STRING {
    if len == 0 {
        return UNICODE_STRING { Length: 0, MaximumLength: 0, Buffer: std::ptr::null_mut() };
    }
    let bytes = (len * 2).min(0xFFFE) as u16;
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: buf.wrapping_add(start) }
}

/// `FltGetFileNameInformation`.
pub(crate) fn get(
    data: *const FLT_CALLBACK_DATA,
    options: u32,
) -> Result<*mut FLT_FILE_NAME_INFORMATION, Status> {
    // SAFETY: the caller's callback data, or null.
    let Some(d) = (unsafe { data.as_ref() }) else { return Err(Status::INVALID_PARAMETER) };
    let plan = kernel::with(|k| {
        if !k.check_irql(APC_LEVEL, "FltGetFileNameInformation") {
            return Err(Status::FLT_INVALID_NAME_REQUEST);
        }
        let key = k.fltmgr.ops.key_of(data as usize).ok_or(Status::INVALID_PARAMETER)?;
        let op = k.fltmgr.ops.op(key).ok_or(Status::INVALID_PARAMETER)?;
        let (volume, lower) = (op.volume, op.lower);
        // SAFETY: the callback data's parameter block, live with the operation.
        let iopb = unsafe { &*d.Iopb };
        let post = d.Flags & cbd::POST_OPERATION != 0;
        let irp = d.Flags & cbd::IRP_OPERATION != 0;
        let major = iopb.MajorFunction;
        let paging = irp
            && iopb.IrpFlags & (irp_flags::PAGING_IO | irp_flags::SYNCHRONOUS_PAGING_IO) != 0
            && matches!(major, mj::READ | mj::WRITE);
        // SAFETY: the status member.
        let status = Status(unsafe { d.IoStatus.Anonymous.Status });
        // A create that ended STATUS_REPARSE opened nothing, as a failed one (docs/simulator.md,
        // "Reparse"; rule 27 of docs/callback-model.md).
        let failed = status.is_error() || status == Status::REPARSE;
        let c = Context {
            fo: iopb.TargetFileObject,
            instance: iopb.TargetInstance,
            pre_create: major == mj::CREATE && !post,
            create: irp && major == mj::CREATE,
            open_target_directory: iopb.OperationFlags & OPEN_TARGET_DIRECTORY != 0,
            unsafe_for_fs: paging || d.Flags & cbd::FS_FILTER_OPERATION != 0,
            invalid: post && (major == mj::CLOSE || (major == mj::CREATE && failed)),
        };
        k.name_plan(options, &c, volume, Some(lower))
    })?;
    build(plan)
}

/// `FltGetFileNameInformationUnsafe`: a file object outside an operation. With an instance
/// the query goes below its frame; without one, to the top of the file object's stack.
pub(crate) fn get_unsafe(
    fo: *const FILE_OBJECT,
    instance: PFLT_INSTANCE,
    options: u32,
) -> Result<*mut FLT_FILE_NAME_INFORMATION, Status> {
    if fo.is_null() {
        return Err(Status::INVALID_PARAMETER);
    }
    // The device below the instance's frame (ext_of takes the kernel lock itself).
    let frame = kernel::with(|k| {
        let i = k.fltmgr.instance_of(instance)?;
        k.below_instance(i).map(|d| d as usize)
    });
    let below = frame.and_then(|d| super::ext_of(d as *mut DEVICE_OBJECT)).map(|e| e.lower);
    let plan = kernel::with(|k| {
        if !k.check_irql(APC_LEVEL, "FltGetFileNameInformationUnsafe") {
            return Err(Status::FLT_INVALID_NAME_REQUEST);
        }
        // The file object's volume: the file system's volume device its VPB names (a namespace
        // file system's device when it has none), as IoGetRelatedDeviceObject finds it.
        // SAFETY: the caller's live file object.
        let f = unsafe { &*fo };
        // SAFETY: a file object's VPB, live while the file is open.
        let dev = unsafe { f.Vpb.as_ref() }.map_or(f.DeviceObject, |v| v.DeviceObject);
        let bottom = k.objects.device_id(dev).ok_or(Status::INVALID_PARAMETER)?;
        let (v, lower) = match k.fltmgr.instance_of(instance) {
            Some(i) => (k.fltmgr.inst(i).volume, below),
            None if instance == 0 => {
                let v = k.fltmgr.volume_by_bottom(bottom).ok_or(Status::INVALID_PARAMETER)?;
                (v, Some(k.objects.device(k.objects.top(bottom)).ptr))
            }
            None => return Err(Status::INVALID_PARAMETER),
        };
        let c = Context {
            fo: fo.cast_mut(),
            instance,
            pre_create: false,
            create: false,
            open_target_directory: false,
            unsafe_for_fs: false,
            invalid: false,
        };
        k.name_plan(options, &c, v, lower)
    })?;
    build(plan)
}

/// `FltParseFileNameInformation`: Extension, Stream, FinalComponent and ParentDir (and again
/// Volume and Share) from the name, each pointing into it; `NamesParsed` says all four.
pub(crate) fn parse(info: *mut FLT_FILE_NAME_INFORMATION) -> Status {
    kernel::with(|k| {
        k.check_irql(APC_LEVEL, "FltParseFileNameInformation");
        let Some(rec) = k.fltmgr.names.list.get(&(info as usize)) else {
            k.report_current(
                Rule::InvalidFltObject,
                "FltParseFileNameInformation of no name information",
            );
            return Status::INVALID_PARAMETER;
        };
        if rec.refs == 0 {
            let _ = rec;
            k.report_current(
                Rule::FileNameReleasedTwice,
                "FltParseFileNameInformation of a released name information",
            );
            return Status::INVALID_PARAMETER;
        }
        let (volume_len, share_len) = (rec.volume_len, rec.share_len);
        // SAFETY: a live name block of ours.
        let r = unsafe { &mut *info };
        let buf = rec
            .block
            .ptr()
            .wrapping_add(std::mem::size_of::<FLT_FILE_NAME_INFORMATION>())
            .cast::<u16>();
        let total = usize::from(r.Name.Length) / 2;
        // SAFETY: the block's text of `total` units.
        let text = unsafe { std::slice::from_raw_parts(buf, total) };
        // The framework's parser, the same rules (docs/simulator.md, "File names").
        let p = fsfilter::parse_name(text, volume_len, share_len);
        r.Volume = ustr(buf, 0, volume_len);
        r.Share = ustr(buf, volume_len, share_len);
        r.ParentDir = ustr(buf, p.parent_dir.0, p.parent_dir.1);
        r.FinalComponent = ustr(buf, p.final_component.0, p.final_component.1);
        r.Stream = ustr(buf, p.stream.0, p.stream.1);
        r.Extension = ustr(buf, p.extension.0, p.extension.1);
        r.NamesParsed = PARSED_ALL;
        Status::SUCCESS
    })
}

/// `FltReferenceFileNameInformation`.
pub(crate) fn reference(info: *const FLT_FILE_NAME_INFORMATION) {
    kernel::with(|k| {
        k.check_irql(APC_LEVEL, "FltReferenceFileNameInformation");
        match k.fltmgr.names.list.get_mut(&(info as usize)) {
            Some(r) if r.refs > 0 => r.refs += 1,
            Some(_) => k.report_current(
                Rule::FileNameReleasedTwice,
                "FltReferenceFileNameInformation of a released name information",
            ),
            None => k.report_current(
                Rule::InvalidFltObject,
                "FltReferenceFileNameInformation of no name information",
            ),
        }
    });
}

/// `FltReleaseFileNameInformation`: the last release frees the structure.
pub(crate) fn release(info: *const FLT_FILE_NAME_INFORMATION) {
    kernel::with(|k| {
        k.check_irql(APC_LEVEL, "FltReleaseFileNameInformation");
        let key = info as usize;
        match k.fltmgr.names.list.get_mut(&key) {
            Some(r) if r.refs > 1 => r.refs -= 1,
            Some(r) if r.refs == 1 => {
                r.refs = 0;
                let names = &mut k.fltmgr.names;
                names.dead.push_back(key);
                if names.dead.len() > DEAD_KEPT {
                    if let Some(old) = names.dead.pop_front() {
                        names.list.remove(&old);
                    }
                }
            }
            Some(_) => k.report_current(
                Rule::FileNameReleasedTwice,
                "FltReleaseFileNameInformation of a name information released already",
            ),
            None => k.report_current(
                Rule::InvalidFltObject,
                "FltReleaseFileNameInformation of no name information",
            ),
        }
    });
}

/// Reports the name informations a filter still held when it unregistered
/// (`FILE_NAME_LEAKED_AT_UNLOAD`); they stay allocated.
pub fn report_leaks(k: &mut Kernel, f: FilterId) {
    let n = k.fltmgr.names.list.values().filter(|r| r.refs > 0 && r.filter == Some(f)).count();
    if n > 0 {
        k.flt_report(
            Some(f),
            Rule::FileNameLeaked,
            format!("{n} file name information(s) never released with FltReleaseFileNameInformation when the filter unregistered"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_opens_name_follows_its_related_file_object() {
        // SAFETY: all-zero is a valid FILE_OBJECT.
        let mut dir: FILE_OBJECT = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut file: FILE_OBJECT = unsafe { std::mem::zeroed() };
        let d: Vec<u16> = r"\Dir\Sub".encode_utf16().collect();
        let f: Vec<u16> = "x.txt".encode_utf16().collect();
        dir.FileName = crate::mem::unicode(&d);
        file.FileName = crate::mem::unicode(&f);
        file.RelatedFileObject = &mut dir;
        // SAFETY: live file objects.
        assert_eq!(unsafe { opened_path(&file) }, r"\Dir\Sub\x.txt");
        // SAFETY: as above.
        assert_eq!(unsafe { opened_path(&dir) }, r"\Dir\Sub");
        // SAFETY: null.
        assert_eq!(unsafe { opened_path(std::ptr::null()) }, "");
        // Only `file` needs its related file object, which outside its create the opened name
        // does not follow (name_plan asks the file system instead).
        // SAFETY: live file objects.
        assert!(unsafe { relative_open(&file) });
        // SAFETY: as above.
        assert!(!unsafe { relative_open(&dir) });
        // SAFETY: null.
        assert!(!unsafe { relative_open(std::ptr::null()) });
        let g: Vec<u16> = r"\Other\y.txt".encode_utf16().collect();
        file.FileName = crate::mem::unicode(&g);
        // SAFETY: a live file object whose name is absolute though it has a related one.
        assert!(!unsafe { relative_open(&file) });
    }

    #[test]
    fn options_need_one_format_and_one_method() {
        assert_eq!(check_options(NORMALIZED | QUERY_DEFAULT), Ok((NORMALIZED, QUERY_DEFAULT)));
        assert_eq!(
            check_options(OPENED | QUERY_DEFAULT | 0x0200_0000),
            Ok((OPENED, QUERY_DEFAULT))
        );
        assert_eq!(check_options(OPENED), Err(Status::INVALID_PARAMETER));
        assert_eq!(check_options(QUERY_DEFAULT), Err(Status::INVALID_PARAMETER));
        assert_eq!(check_options(4 | QUERY_DEFAULT), Err(Status::INVALID_PARAMETER));
        assert_eq!(
            check_options(OPENED | QUERY_DEFAULT | 0x0800_0000),
            Err(Status::INVALID_PARAMETER)
        );
        assert_eq!(parent_of(r"\a\b"), r"\a");
        assert_eq!(parent_of(r"\b"), r"\");
    }
}
