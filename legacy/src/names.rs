//! File names in the legacy model (rule 22): the backend's own provider, which gives what the
//! Filter Manager gives a minifilter, with the same refusals (docs/simulator.md, "File names").
//! The opened name is the volume's device name (`ObQueryNameString` of the file object's
//! device) and the name the file was opened with (after its related file object's); the
//! normalized name asks the file system below with a `FileNameInformation` query.
//!
//! Compiled into a driver only when its constant registration declares name queries
//! (`fsfilter::queries_names`).

use core::ffi::c_void;

use fsfilter::{
    Error, FileNameInformation, Irql, MajorFunction, NameBackend, NameId, NameKind, NameParts,
    NameRanges, Status, device_type, parse_name,
};
use fsfilter_kernel::constants::{POOL_FLAG_NON_PAGED, irp_flags};
use fsfilter_kernel::irp::{IoCallDriver, IoGetNextIrpStackLocation, IoSetCompletionRoutine};
use fsfilter_kernel::{irql, params};
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, FILE_OBJECT, IRP, KEVENT, OBJECT_NAME_INFORMATION,
};
use windows_sys::Wdk::Storage::FileSystem::ObQueryNameString;
use windows_sys::Wdk::System::SystemServices::{
    ExAllocatePool2, ExFreePoolWithTag, IoAllocateIrp, IoFreeIrp, IoGetTopLevelIrp,
    KeInitializeEvent, KeWaitForSingleObject,
};
use windows_sys::Win32::System::Kernel::NotificationEvent;

/// Pool tag of names and their buffers: `FsfN`.
const TAG: u32 = u32::from_le_bytes(*b"FsfN");
/// `\`.
const SEP: u16 = b'\\' as u16;
const COLON: u16 = b':' as u16;
/// How many related file objects a relative open's name follows at most.
const MAX_RELATED: usize = 16;
/// `FileNameInformation`.
const FILE_NAME_INFORMATION_CLASS: i32 = 9;
/// `IRP_MJ_QUERY_INFORMATION`.
const IRP_MJ_QUERY_INFORMATION: u8 = 0x05;
/// `SL_OPEN_TARGET_DIRECTORY`.
const SL_OPEN_TARGET_DIRECTORY: u8 = 0x04;
/// A first `FILE_NAME_INFORMATION` buffer: a `MAX_PATH` name.
const FIRST_QUERY_BYTES: usize = 4 + 260 * 2;

/// Where a name is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// A pre callback of an IRP (or no operation).
    Pre,
    /// A post callback of an IRP.
    Post,
    /// The post callback of a create.
    PostCreate,
    /// A fast-I/O operation.
    FastIo,
    /// An FsFilter callback.
    FsFilter,
}

/// What a name query needs of the operation.
pub(crate) struct Query {
    /// The operation's file object (null for none).
    pub(crate) file: *mut FILE_OBJECT,
    /// The IRP, at our location (null for fast I/O and FsFilter callbacks).
    pub(crate) irp: *mut IRP,
    /// Where it is asked.
    pub(crate) stage: Stage,
    /// The device below ours.
    pub(crate) lower: *mut DEVICE_OBJECT,
}

/// A name in pool: this header, then the name's units.
#[repr(C)]
struct Record {
    len: usize,
    ranges: NameRanges,
}

/// The legacy backend's names.
struct LegacyNames;

static NAMES: LegacyNames = LegacyNames;

impl NameBackend for LegacyNames {
    fn parts(&self, id: NameId) -> Option<NameParts<'_>> {
        let record = id.0 as *const Record;
        // SAFETY: a record `get` made and `release` has not freed (the guard's contract).
        let r = unsafe { record.as_ref() }?;
        let text = record.wrapping_add(1).cast::<u16>();
        // SAFETY: the record's `len` units follow its header, in the same block.
        let units = unsafe { core::slice::from_raw_parts(text, r.len) };
        Some(NameParts::from_ranges(units, &r.ranges))
    }

    fn release(&self, id: NameId) {
        if id.0 != 0 {
            // SAFETY: a record `get` allocated with TAG, released once (its guard's drop).
            unsafe { ExFreePoolWithTag(id.0 as *mut c_void, TAG) };
        }
    }
}

/// A pool block freed on drop.
struct PoolBlock(*mut c_void);

impl PoolBlock {
    fn new(bytes: usize) -> Result<PoolBlock, Error> {
        // SAFETY: a valid flag, a non-zero size, a tag; zeroed and aligned for usize.
        let p = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, bytes.max(1), TAG) };
        if p.is_null() { Err(Error::INSUFFICIENT_RESOURCES) } else { Ok(PoolBlock(p)) }
    }
}

impl Drop for PoolBlock {
    fn drop(&mut self) {
        // SAFETY: allocated with TAG by `new`, freed once.
        unsafe { ExFreePoolWithTag(self.0, TAG) };
    }
}

/// The refusals the Filter Manager makes (and the framework's own: a normalized name in
/// pre-create), from the IRP at our location.
///
/// # Safety
/// `irp` is the running operation's live IRP, at our location.
unsafe fn refused(irp: *mut IRP, stage: Stage, kind: NameKind) -> bool {
    // SAFETY: the caller's live IRP.
    let (major, _) = unsafe { crate::view::codes(irp) };
    // SAFETY: as above.
    let flags = unsafe { (*irp).Flags };
    let paging = flags & (irp_flags::PAGING_IO | irp_flags::SYNCHRONOUS_PAGING_IO) != 0
        && matches!(major, MajorFunction::Read | MajorFunction::Write);
    let post = matches!(stage, Stage::Post | Stage::PostCreate);
    // SAFETY: as above.
    let status = unsafe { crate::view::io_status(irp) }.status;
    // A create that failed, or ended STATUS_REPARSE (rule 27): no file was opened to name.
    let failed = post && (status.is_error() || status == Status::REPARSE);
    paging
        || (post && major == MajorFunction::Close)
        || (failed && major == MajorFunction::Create)
        || (!post && major == MajorFunction::Create && kind == NameKind::Normalized)
}

/// The operation's file's name (rule 22).
pub(crate) fn get(q: &Query, kind: NameKind) -> Result<FileNameInformation, Error> {
    if irql::current() != Irql::PASSIVE {
        return Err(Error::INVALID_DEVICE_STATE);
    }
    if q.stage == Stage::FsFilter {
        return Err(Error::FLT_INVALID_NAME_REQUEST);
    }
    if q.file.is_null() {
        return Err(Error::INVALID_PARAMETER);
    }
    // A file system at work in this thread (its top-level IRP set: a post callback run inside
    // its completion, a request it sent itself) must not be asked again: the Filter Manager
    // refuses then too (FltGetFileNameInformation's reference page).
    // SAFETY: reads the current thread's top-level IRP; any IRQL.
    if !unsafe { IoGetTopLevelIrp() }.is_null() {
        return Err(Error::FLT_INVALID_NAME_REQUEST);
    }
    // SAFETY: the running operation's IRP at our location, or null.
    if !q.irp.is_null() && unsafe { refused(q.irp, q.stage, kind) } {
        return Err(Error::FLT_INVALID_NAME_REQUEST);
    }
    // SAFETY: the running operation's live file object.
    let file = unsafe { &*q.file };
    // SAFETY: a device object the I/O manager set in the file object; PASSIVE_LEVEL.
    let volume = unsafe { device_name(file.DeviceObject) }?;
    // A network name has a share: MUP's device is a network file system's (the simulator's
    // `\Device\Mup` is one, as the Filter Manager's MUP volume), a redirector's too.
    // SAFETY: as above.
    let network = unsafe { file.DeviceObject.as_ref() }.is_some_and(|d| {
        matches!(d.DeviceType, device_type::NETWORK_FILE_SYSTEM | device_type::MULTI_UNC_PROVIDER)
    });
    // SAFETY: the IRP at our location, when there is one.
    let create =
        !q.irp.is_null() && unsafe { crate::view::codes(q.irp) }.0 == MajorFunction::Create;
    // A relative open's related file object is the I/O manager's only while the create runs
    // (WRK IopParseDevice takes it from the open's root handle, and nothing holds it after), so
    // after the create a relatively opened file's opened name is the file system's.
    // SAFETY: the running operation's live file object.
    let from_fs = kind == NameKind::Normalized || (!create && unsafe { relative_open(file) });
    let record = if !from_fs {
        let mut parts: [&[u16]; MAX_RELATED] = [&[]; MAX_RELATED];
        // SAFETY: the live file object and the related ones it holds.
        let n = unsafe { opened_parts(q.file, &mut parts) };
        let parts = parts.get(..n).unwrap_or(&[]);
        let mut len = compose(parts, None);
        // SL_OPEN_TARGET_DIRECTORY is a create's flag: the same bit is another major's
        // (SL_WRITE_THROUGH, SL_INDEX_SPECIFIED, SL_WRITE_ACCESS_GRANTED).
        let target = create
                && q.stage == Stage::Pre
                // SAFETY: the IRP at our location.
                && unsafe { crate::raw::location(q.irp) }.Flags & SL_OPEN_TARGET_DIRECTORY != 0;
        build(volume.units(), len, network, |out| {
            compose(parts, Some(out));
            if target {
                // The parent directory's name, as the Filter Manager gives in pre-create
                // (trailing separators first left out: `\a\b\` names `b`, parent `\a`).
                let cut = out.get(..len).and_then(|p| {
                    let end = p.iter().rposition(|c| *c != SEP).map_or(0, |i| i + 1);
                    p.get(..end)?.iter().rposition(|c| *c == SEP)
                });
                len = cut.map_or(len, |i| i.max(1));
            }
            len
        })?
    } else {
        // SAFETY: our lower device and the operation's live file object, PASSIVE_LEVEL.
        let (buffer, units) = unsafe { query_name(q.lower, q.file) }?;
        let text = buffer.0.cast::<u8>().wrapping_add(4).cast::<u16>();
        // SAFETY: the FILE_NAME_INFORMATION's `units` units after its length.
        let name = unsafe { core::slice::from_raw_parts(text, units) };
        build(volume.units(), name.len(), network, |out| {
            for (o, c) in out.iter_mut().zip(name) {
                *o = *c;
            }
            name.len()
        })?
    };
    Ok(FileNameInformation::new(NameId(record as usize), &NAMES, kind))
}

/// Whether `file` was opened relative to another file object (`RelatedFileObject` set, its
/// `FileName` not starting with `\`): its opened name needs the related file object's, which
/// is safe to read only while the create runs.
///
/// # Safety
/// `file` is a live file object.
unsafe fn relative_open(file: &FILE_OBJECT) -> bool {
    // SAFETY: the live file object's name.
    let name = unsafe { fsfilter_kernel::unicode::units(&file.FileName) };
    !file.RelatedFileObject.is_null() && name.first() != Some(&SEP)
}

/// A device's name from `ObQueryNameString`, in pool.
struct DeviceName {
    block: PoolBlock,
    len: usize,
}

impl DeviceName {
    fn units(&self) -> &[u16] {
        // SAFETY: the OBJECT_NAME_INFORMATION at the block's start, its buffer in the block.
        let info = unsafe { &*self.block.0.cast::<OBJECT_NAME_INFORMATION>() };
        if info.Name.Buffer.is_null() {
            return &[];
        }
        // SAFETY: ObQueryNameString's name of `len` units, in the block.
        unsafe { core::slice::from_raw_parts(info.Name.Buffer, self.len) }
    }
}

/// # Safety
/// `device` is a live device object; `PASSIVE_LEVEL`.
unsafe fn device_name(device: *mut DEVICE_OBJECT) -> Result<DeviceName, Error> {
    let mut needed: u32 = 0;
    // SAFETY: a live object; no buffer, so only the size comes back.
    let _ = unsafe { ObQueryNameString(device.cast(), core::ptr::null_mut(), 0, &mut needed) };
    let bytes = (needed as usize).max(core::mem::size_of::<OBJECT_NAME_INFORMATION>());
    let block = PoolBlock::new(bytes)?;
    // SAFETY: a live object, our buffer of `bytes` bytes.
    let status = Status(unsafe {
        ObQueryNameString(device.cast(), block.0.cast(), bytes as u32, &mut needed)
    });
    if let Some(e) = Error::new(status) {
        return Err(e);
    }
    // SAFETY: the OBJECT_NAME_INFORMATION ObQueryNameString wrote.
    let len = usize::from(unsafe { (*block.0.cast::<OBJECT_NAME_INFORMATION>()).Name.Length }) / 2;
    Ok(DeviceName { block, len })
}

/// Allocates a record of `volume` and `len` more units that `fill` writes (and may shorten:
/// it returns the length it kept), parses it, and returns it.
fn build(
    volume: &[u16],
    len: usize,
    network: bool,
    fill: impl FnOnce(&mut [u16]) -> usize,
) -> Result<*mut Record, Error> {
    let total = volume.len().checked_add(len).ok_or(Error::INSUFFICIENT_RESOURCES)?;
    let bytes = core::mem::size_of::<Record>()
        .checked_add(total.checked_mul(2).ok_or(Error::INSUFFICIENT_RESOURCES)?)
        .ok_or(Error::INSUFFICIENT_RESOURCES)?;
    let block = PoolBlock::new(bytes)?;
    let record = block.0.cast::<Record>();
    let text = record.wrapping_add(1).cast::<u16>();
    // SAFETY: the block holds the header and `total` units after it, ours alone.
    let units = unsafe { core::slice::from_raw_parts_mut(text, total) };
    for (o, c) in units.iter_mut().zip(volume) {
        *o = *c;
    }
    let kept = fill(units.get_mut(volume.len()..).unwrap_or(&mut [])).min(len);
    let total = volume.len() + kept;
    let text = units.get(..total).unwrap_or(&[]);
    let share = if network { share_len(text.get(volume.len()..).unwrap_or(&[])) } else { 0 };
    let ranges = parse_name(text, volume.len(), share);
    // SAFETY: the block's header, ours.
    unsafe { record.write(Record { len: total, ranges }) };
    core::mem::forget(block);
    Ok(record)
}

/// A network name's `\server\share` after the volume: up to its third separator.
fn share_len(rest: &[u16]) -> usize {
    rest.iter().enumerate().filter(|(_, c)| **c == SEP).map(|(i, _)| i).nth(2).unwrap_or(rest.len())
}

/// The names of a relative open's chain, the file's first: each file object's `FileName`, up
/// to the first absolute one. Returns how many.
///
/// # Safety
/// `file` is a live file object whose related file objects are live.
unsafe fn opened_parts<'a>(
    file: *const FILE_OBJECT,
    parts: &mut [&'a [u16]; MAX_RELATED],
) -> usize {
    let mut cur = file;
    let mut n = 0;
    for slot in parts.iter_mut() {
        // SAFETY: the caller's live file object or a related one it holds.
        let Some(f) = (unsafe { cur.as_ref() }) else { break };
        // SAFETY: its name, valid while it lives.
        let name: &'a [u16] = unsafe { fsfilter_kernel::unicode::units(&f.FileName) };
        *slot = name;
        n += 1;
        if name.first() == Some(&SEP) {
            break;
        }
        cur = f.RelatedFileObject;
    }
    n
}

/// Joins a chain of names (the file's first) from the outermost, with one separator between
/// relative parts (none before a stream's `:s`); writes into `out` when given. Returns the
/// length.
fn compose(parts: &[&[u16]], mut out: Option<&mut [u16]>) -> usize {
    let mut len = 0;
    let mut last = 0u16;
    let mut put = |c: u16, len: &mut usize| {
        if let Some(slot) = out.as_deref_mut().and_then(|o| o.get_mut(*len)) {
            *slot = c;
        }
        *len += 1;
    };
    for p in parts.iter().rev() {
        if p.is_empty() {
            continue;
        }
        // A stream opened relative to its file (`:s`) follows the file's name directly.
        let first = p.first().copied();
        if first != Some(SEP) && first != Some(COLON) && last != SEP {
            put(SEP, &mut len);
        }
        for c in p.iter() {
            put(*c, &mut len);
        }
        last = p.last().copied().unwrap_or(last);
    }
    len
}

/// Asks the file system below for the file's name (`FileNameInformation`), once more with the
/// length it needs when the first buffer is too small. The buffer and the name's units.
///
/// # Safety
/// `lower` is the device below ours; `file` the live file object of an open file;
/// `PASSIVE_LEVEL`.
unsafe fn query_name(
    lower: *mut DEVICE_OBJECT,
    file: *mut FILE_OBJECT,
) -> Result<(PoolBlock, usize), Error> {
    let mut bytes = FIRST_QUERY_BYTES;
    for _ in 0..2 {
        let block = PoolBlock::new(bytes)?;
        // SAFETY: forwarded; our buffer of `bytes` bytes.
        let status = unsafe { send_query(lower, file, block.0, bytes) };
        // SAFETY: the FILE_NAME_INFORMATION's length, written by the file system (zeroed else).
        let name_bytes = unsafe { *block.0.cast::<u32>() } as usize;
        if status == Status::BUFFER_OVERFLOW && name_bytes + 4 > bytes {
            bytes = name_bytes + 4;
            continue;
        }
        if let Some(e) = Error::new(status) {
            return Err(e);
        }
        if status != Status::SUCCESS {
            return Err(Error::UNSUCCESSFUL);
        }
        let units = name_bytes.min(bytes - 4) / 2;
        return Ok((block, units));
    }
    Err(Error::UNSUCCESSFUL)
}

/// Sends one `IRP_MJ_QUERY_INFORMATION` for `FileNameInformation` down and waits for it.
///
/// # Safety
/// As [`query_name`]; `buffer` holds `bytes` bytes.
unsafe fn send_query(
    lower: *mut DEVICE_OBJECT,
    file: *mut FILE_OBJECT,
    buffer: *mut c_void,
    bytes: usize,
) -> Status {
    // SAFETY: the device below ours, live while we are attached.
    let stack = unsafe { (*lower).StackSize };
    // SAFETY: allocates an IRP with as many locations as the stack below needs.
    let irp = unsafe { IoAllocateIrp(stack, false) };
    if irp.is_null() {
        return Status::INSUFFICIENT_RESOURCES;
    }
    // SAFETY: the fresh IRP, ours.
    let i = unsafe { &mut *irp };
    i.AssociatedIrp.SystemBuffer = buffer;
    i.Tail.Overlay.OriginalFileObject = file;
    i.IoStatus.Anonymous.Status = Status::NOT_SUPPORTED.0;
    // SAFETY: the fresh IRP's first location.
    let next = unsafe { IoGetNextIrpStackLocation(irp) };
    // SAFETY: a valid location of our IRP.
    let sl = unsafe { &mut *next };
    sl.MajorFunction = IRP_MJ_QUERY_INFORMATION;
    sl.FileObject = file;
    // SAFETY: `QueryFile` is the member a query uses.
    let p = unsafe { params::io_mut::<params::IoFileInformation>(&mut sl.Parameters) };
    p.Length = bytes as u32;
    p.FileInformationClass = FILE_NAME_INFORMATION_CLASS;
    // SAFETY: all-zero is a valid KEVENT before initialization.
    let mut event: KEVENT = unsafe { core::mem::zeroed() };
    // SAFETY: our stack event, initialized before use.
    unsafe { KeInitializeEvent(&mut event, NotificationEvent, false) };
    // SAFETY: the IRP's next location; the routine keeps the IRP ours and signals the event,
    // which outlives the wait; we wait in place, so the image cannot go under the routine.
    unsafe {
        IoSetCompletionRoutine(
            irp,
            crate::dispatch::signal_if_pended,
            (&raw mut event).cast(),
            true,
            true,
            true,
        )
    };
    // SAFETY: the device below ours and our IRP.
    if unsafe { IoCallDriver(lower, irp) } == Status::PENDING.0 {
        // SAFETY: our event, signalled by the completion routine.
        let _ = unsafe {
            KeWaitForSingleObject((&raw const event).cast(), 0, 0, false, core::ptr::null())
        };
    }
    // Read through the pointer: `i` ended before `IoCallDriver`, which lower drivers and the
    // completion wrote the IRP through (a `&mut` kept across the call would be an aliasing
    // violation).
    // SAFETY: the IRP, halted by our routine: ours again.
    let status = unsafe { crate::view::io_status(irp) }.status;
    // SAFETY: our IRP, freed once.
    unsafe { IoFreeIrp(irp) };
    status
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn u(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn a_relative_chain_joins_with_one_separator() {
        let (a, b, c) = (u(r"\Dir"), u("Sub"), u("x.txt"));
        let parts: [&[u16]; 3] = [&c, &b, &a];
        let mut out = [0u16; 32];
        let n = compose(&parts, Some(&mut out));
        assert_eq!(n, compose(&parts, None));
        assert_eq!(std::string::String::from_utf16_lossy(&out[..n]), r"\Dir\Sub\x.txt");
        let (root, file) = (u(r"\"), u("y"));
        let parts: [&[u16]; 2] = [&file, &root];
        let n = compose(&parts, Some(&mut out));
        assert_eq!(std::string::String::from_utf16_lossy(&out[..n]), r"\y");
        assert_eq!(share_len(&u(r"\srv\share\dir\f")), r"\srv\share".len());
    }

    #[test]
    fn a_stream_opened_relative_to_its_file_follows_the_files_name() {
        // A relative stream open (`:Meta` relative to the file's handle; docs/simulator.md,
        // "Named data streams"): no separator between the file's name and the stream.
        let (file, stream) = (u(r"\Dir\x.txt"), u(":Meta"));
        let parts: [&[u16]; 2] = [&stream, &file];
        let mut out = [0u16; 32];
        let n = compose(&parts, Some(&mut out));
        assert_eq!(n, compose(&parts, None));
        assert_eq!(std::string::String::from_utf16_lossy(&out[..n]), r"\Dir\x.txt:Meta");
    }

    #[test]
    fn only_a_relative_open_needs_its_related_file_object() {
        let (dir_name, file_name, other) = (u(r"\Dir"), u("x.txt"), u(r"\Other\y.txt"));
        // SAFETY: all-zero is a valid FILE_OBJECT.
        let mut dir: FILE_OBJECT = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        let mut file: FILE_OBJECT = unsafe { core::mem::zeroed() };
        dir.FileName = fsfilter_kernel::unicode::unicode_string(&dir_name);
        file.FileName = fsfilter_kernel::unicode::unicode_string(&file_name);
        file.RelatedFileObject = &mut dir;
        // SAFETY: live file objects whose names outlive them.
        assert!(unsafe { relative_open(&file) });
        // SAFETY: as above.
        assert!(!unsafe { relative_open(&dir) });
        file.FileName = fsfilter_kernel::unicode::unicode_string(&other);
        // SAFETY: as above: an absolute name with a related file object needs none.
        assert!(!unsafe { relative_open(&file) });
    }
}
