//! Query and set information, directory enumeration and volume information: the structures
//! are written byte by byte at the offsets of the windows-sys declarations (checked by the unit
//! tests below).

use fsfilter::Status;
use fsfilter_kernel::params;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, IRP};
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_BASIC_INFORMATION, FILE_NETWORK_OPEN_INFORMATION, FILE_STANDARD_INFORMATION,
};
use windows_sys::Win32::Foundation::NTSTATUS;
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::media::{Media, Node, NodeId, ROOT, name_matches};
use super::notify;
use super::oplock::Want;
use super::{Call, FsType, MountState, VOLUME_NODE, allocation};
use crate::irpx;
use crate::kernel::{self, Kernel};
use crate::nt::{access as acc, attr, characteristics, file_info as fi, fo, fs_info, mn_dir, sl};

/// A little-endian structure writer.
#[derive(Default)]
pub struct Out(pub Vec<u8>);

impl Out {
    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends an `i64`.
    pub fn i64(&mut self, v: i64) -> &mut Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Out {
        self.0.push(v);
        self
    }

    /// Appends UTF-16LE text.
    pub fn text(&mut self, units: &[u16]) -> &mut Out {
        for u in units {
            self.0.extend_from_slice(&u.to_le_bytes());
        }
        self
    }

    /// Pads with zeros to `len` bytes.
    pub fn pad_to(&mut self, len: usize) -> &mut Out {
        if self.0.len() < len {
            self.0.resize(len, 0);
        }
        self
    }
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// An answer: the bytes, and the fixed part a buffer must hold at least. A list of entries
/// (`FileStreamInformation`) has them in `entries` instead, laid out by [`lay_out`].
struct Answer {
    bytes: Vec<u8>,
    fixed: usize,
    entries: Option<Vec<Vec<u8>>>,
}

/// Lays out `entries` (each starting with its `NextEntryOffset`) in a buffer of `length` bytes,
/// as MS-FSA 2.1.5.12.29 (`FileStreamInformation`) does: each entry 8-byte aligned, the padding
/// before it counted, `NextEntryOffset` of the previous entry set to it, none after the last;
/// an entry that does not fit whole stops the list with `STATUS_BUFFER_OVERFLOW`, the entries
/// before it returned.
fn lay_out(entries: &[Vec<u8>], length: usize) -> (Vec<u8>, Status) {
    let mut out: Vec<u8> = Vec::new();
    let mut last: Option<usize> = None;
    for e in entries {
        let start = if last.is_some() { out.len().next_multiple_of(8) } else { 0 };
        if start + e.len() > length {
            return (out, Status::BUFFER_OVERFLOW);
        }
        if let Some(field) = last.and_then(|l| out.get_mut(l..l + 4)) {
            field.copy_from_slice(&(start as u32 - last.unwrap_or(0) as u32).to_le_bytes());
        }
        out.resize(start, 0);
        out.extend_from_slice(e);
        last = Some(start);
    }
    (out, Status::SUCCESS)
}

fn answer(call: Call, r: Result<Answer, Status>, length: usize, buffer: *mut u8) -> NTSTATUS {
    match r {
        Err(s) => call.done(s, 0),
        Ok(a) if length < a.fixed => call.done(Status::INFO_LENGTH_MISMATCH, 0),
        Ok(Answer { entries: Some(entries), .. }) => {
            let (bytes, status) = lay_out(&entries, length);
            // SAFETY: the request's buffer of `length` bytes (the entries fit it).
            let n = unsafe { irpx::copy_out(buffer, length, &bytes) };
            call.done(status, n)
        }
        Ok(a) => {
            // SAFETY: the request's buffer of `length` bytes.
            let n = unsafe { irpx::copy_out(buffer, length, &a.bytes) };
            let status = if n < a.bytes.len() { Status::BUFFER_OVERFLOW } else { Status::SUCCESS };
            call.done(status, n)
        }
    }
}

/// `sizeof(FILE_STREAM_INFORMATION)`: a buffer shorter is `STATUS_INFO_LENGTH_MISMATCH` (MS-FSA
/// 2.1.5.12.29); an entry is `StreamName`'s offset (24) and the name.
const STREAM_ENTRY: usize = 32;

/// `IRP_MJ_QUERY_INFORMATION`.
pub fn query_information(call: Call) -> NTSTATUS {
    let sl = call.sl();
    // SAFETY: `QueryFile` is the member in use.
    let p = *unsafe { params::io::<params::IoFileInformation>(&sl.Parameters) };
    let fo = sl.FileObject;
    let r = kernel::with(|k| k.fs_query_info(fo, p.FileInformationClass as u32));
    // SAFETY: the live IRP.
    answer(call, r, p.Length as usize, unsafe { irpx::system_buffer(call.irp) })
}

/// `FastIoQueryBasicInfo` of the disk file systems: the answer the IRP would give for a file or
/// directory of a mounted volume; FALSE otherwise (a volume open, a namespace file system, an
/// error), so the I/O manager builds the IRP, which answers.
///
/// # Safety
/// Called by the I/O manager (or a filter passing fast I/O down) with valid arguments: `buffer`
/// holds a `FILE_BASIC_INFORMATION`.
pub unsafe extern "system" fn fast_io_query_basic_info(
    fileobject: *const FILE_OBJECT,
    _wait: bool,
    buffer: *mut FILE_BASIC_INFORMATION,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    fast_query(fileobject, fi::BASIC, buffer.cast(), iostatus)
}

/// `FastIoQueryStandardInfo` of the disk file systems, as [`fast_io_query_basic_info`].
///
/// # Safety
/// As [`fast_io_query_basic_info`]; `buffer` holds a `FILE_STANDARD_INFORMATION`.
pub unsafe extern "system" fn fast_io_query_standard_info(
    fileobject: *const FILE_OBJECT,
    _wait: bool,
    buffer: *mut FILE_STANDARD_INFORMATION,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    fast_query(fileobject, fi::STANDARD, buffer.cast(), iostatus)
}

/// `FastIoQueryOpen` of the disk file systems (`NtQueryAttributesFile` and
/// `NtQueryFullAttributesFile` without a file object): the IRP is a create IRP the I/O manager
/// built and set at the top device's location, which each filter passes down with its location's
/// `DeviceObject` set to the device below (never completed, freed by the I/O manager). When the
/// name resolves to a file or directory of a mounted volume, its `FILE_NETWORK_OPEN_INFORMATION`
/// is written, the IRP's status block says `STATUS_SUCCESS`, and the answer is TRUE; anything
/// else (a missing name, a volume open, a file being deleted, a namespace file system) answers
/// FALSE, and the I/O manager opens the file with the IRP, which reports the error
/// (docs/simulator.md, "User-mode I/O", attribute queries by name). An IRP whose current location is not a create
/// location of this device (a filter above moved the location, or did not name our device in
/// it) is a `BUGCHECK`: the routine would read a stack location that is not its own.
///
/// # Safety
/// Called by the I/O manager (or a filter passing fast I/O down) with valid arguments: `irp` a
/// live IRP, `info` a `FILE_NETWORK_OPEN_INFORMATION`.
pub unsafe extern "system" fn fast_io_query_open(
    irp: *mut IRP,
    info: *mut FILE_NETWORK_OPEN_INFORMATION,
    device: *const DEVICE_OBJECT,
) -> bool {
    let Some(ext) = super::dev_ext(device) else { return false };
    // SAFETY: the caller's live IRP.
    let header = unsafe { irpx::header(irp) };
    let (location, count) = (header.CurrentLocation, header.StackCount);
    let in_stack = location >= 1 && location <= count;
    // SAFETY: the current location of the live IRP, read only when it lies in its stack.
    let sl = in_stack.then(|| unsafe { irpx::current(irp) });
    let ours = sl.as_ref().is_some_and(|sl| {
        sl.MajorFunction == crate::nt::mj::CREATE && std::ptr::eq(sl.DeviceObject, device)
    });
    if !ours {
        kernel::with(|k| {
            // The driver that called us: the running image, or the one below ours when the
            // caller made ours the running one (as the backends do for a lower driver's
            // routine).
            let own = k.objects.image_of(device);
            let mut images = crate::kernel::running_images().into_iter();
            let running = images.next().flatten();
            let caller =
                if running.is_some() && running == own { images.next().flatten() } else { running };
            let caller = caller.map(|i| k.image_name(i));
            let message = format!(
                "FastIoQueryOpen reached the file system with an IRP whose current stack \
                 location is not its own create location (location {location} of {count}{}): \
                 a filter above must pass the IRP down at the same location, with the \
                 location's DeviceObject set to the device below",
                if in_stack { ", naming another device" } else { ", outside the IRP's stack" }
            );
            k.report(crate::events::Rule::Bugcheck, caller, message);
        });
        return false;
    }
    let Some(sl) = sl else { return false };
    let fo = sl.FileObject;
    if fo.is_null() || ext.role != super::Role::Volume as u8 {
        return false;
    }
    // SAFETY: the create's file object (the I/O manager's stack-based one), valid for the call.
    let f = unsafe { irpx::file(fo) };
    if !f.RelatedFileObject.is_null() {
        return false;
    }
    // SAFETY: the file object's name, valid while the call runs.
    let name = String::from_utf16_lossy(unsafe { irpx::units(&f.FileName) });
    let answer = kernel::with(|k| {
        let m = k.fs.mounts.get(ext.mount as usize)?;
        if m.state != MountState::Mounted || m.ty.is_namespace() {
            return None;
        }
        let comps: Vec<&str> = name.split('\\').filter(|c| !c.is_empty()).collect();
        if comps.is_empty() {
            return None;
        }
        let media = k.media_of(ext.mount);
        // A reparse point on the path: the create IRP meets it and the I/O manager follows it.
        if media.reparse_on_path(ROOT, &comps, true).is_some() {
            return None;
        }
        let node = media.lookup(ROOT, &comps).ok()?;
        let pending = m.fcbs_by_node.get(&node).is_some_and(|p| k.fs.fcbs[p].delete_pending);
        if pending {
            return None;
        }
        let mut o = Out::default();
        network_open(&mut o, media.node(node));
        Some(o.0)
    });
    let Some(bytes) = answer else { return false };
    // SAFETY: the caller's buffer holds a FILE_NETWORK_OPEN_INFORMATION.
    unsafe { irpx::copy_out(info.cast(), NETWORK_OPEN_SIZE, &bytes) };
    // SAFETY: the live IRP's status block (read by the I/O manager when TRUE is answered).
    unsafe { fsfilter_kernel::irp::set_irp_status(irp, Status::SUCCESS.0, OPENED) };
    true
}

/// The size of `FILE_NETWORK_OPEN_INFORMATION`.
const NETWORK_OPEN_SIZE: usize = 56;

/// `FILE_OPENED`, the information of a create that opened an existing file.
const OPENED: usize = 1;

/// `FILE_NETWORK_OPEN_INFORMATION` of a node.
fn network_open(o: &mut Out, n: &Node) {
    o.i64(n.times[0]).i64(n.times[1]).i64(n.times[2]).i64(n.times[3]);
    o.i64(allocation(n.size()) as i64).i64(n.size() as i64).u32(reported_attributes(n));
    o.pad_to(56);
}

/// `FastIoQueryNetworkOpenInfo` of the disk file systems, as [`fast_io_query_basic_info`].
///
/// # Safety
/// As [`fast_io_query_basic_info`]; `buffer` holds a `FILE_NETWORK_OPEN_INFORMATION`.
pub unsafe extern "system" fn fast_io_query_network_open_info(
    fileobject: *const FILE_OBJECT,
    _wait: bool,
    buffer: *mut FILE_NETWORK_OPEN_INFORMATION,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    fast_query(fileobject, fi::NETWORK_OPEN, buffer.cast(), iostatus)
}

/// Serves a fast query of `class` into `buffer` (the class's fixed size), or answers FALSE.
fn fast_query(
    fo: *const FILE_OBJECT,
    class: u32,
    buffer: *mut u8,
    iostatus: *mut IO_STATUS_BLOCK,
) -> bool {
    let r = kernel::with(|k| {
        let fcb = k.fcb_of(fo)?;
        if k.fs.mounts.get(fcb.mount as usize)?.ty.is_namespace() {
            return None;
        }
        k.fs_query_info(fo.cast_mut(), class).ok()
    });
    let Some(a) = r else { return false };
    // SAFETY: the caller's buffer of the class's fixed size.
    let n = unsafe { irpx::copy_out(buffer, a.fixed, &a.bytes) };
    // SAFETY: the caller's status block.
    if let Some(iosb) = unsafe { iostatus.as_mut() } {
        iosb.Anonymous.Status = Status::SUCCESS.0;
        iosb.Information = n;
    }
    true
}

/// `IRP_MJ_QUERY_VOLUME_INFORMATION`.
pub fn query_volume_information(call: Call) -> NTSTATUS {
    let sl = call.sl();
    // SAFETY: `QueryVolume` is the member in use.
    let p = *unsafe { params::io::<params::IoVolumeInformation>(&sl.Parameters) };
    let fo = sl.FileObject;
    let r = kernel::with(|k| k.fs_query_volume(fo, p.FsInformationClass as u32));
    // SAFETY: the live IRP.
    answer(call, r, p.Length as usize, unsafe { irpx::system_buffer(call.irp) })
}

/// `IRP_MJ_SET_INFORMATION`.
pub fn set_information(call: Call) -> NTSTATUS {
    let sl = call.sl();
    // SAFETY: `SetFile` is the member in use.
    let p = *unsafe { params::io::<params::IoSetFile>(&sl.Parameters) };
    let fo = sl.FileObject;
    let class = p.FileInformationClass as u32;
    // SAFETY: the live IRP.
    let sysbuf = unsafe { irpx::system_buffer(call.irp) };
    // SAFETY: the system buffer holds `Length` bytes of input.
    let input = unsafe { irpx::bytes(sysbuf, p.Length as usize) }.to_vec();
    // SAFETY: `AdvanceOnly` is the member of an end-of-file set (read for that class only).
    let advance_only = class == fi::END_OF_FILE && unsafe { p.Anonymous.Anonymous.AdvanceOnly };
    // FsRtlCheckOplock: a new end of file (not the lazy writer's advance) or allocation size
    // breaks oplocks of other file objects to none; a rename, link or short-name change breaks a
    // Batch or Filter oplock to none.
    // A rename, link or short-name set, or a delete, breaks the RH oplocks of other file objects
    // to R, waiting for the acknowledgement (Learn, "Checking the oplock state of an
    // IRP_MJ_SET_INFORMATION operation"; until December 7 they broke nothing).
    let delete = class == fi::DISPOSITION && input.first().is_some_and(|&b| b != 0);
    let want = |o: &super::oplock::Oplock| match class {
        fi::END_OF_FILE if advance_only => Want::Nothing,
        fi::END_OF_FILE | fi::ALLOCATION => Want::None,
        fi::RENAME | FILE_LINK_INFORMATION | FILE_SHORT_NAME_INFORMATION if o.batch_or_filter() => {
            Want::None
        }
        fi::RENAME | FILE_LINK_INFORMATION | FILE_SHORT_NAME_INFORMATION => Want::HandleCaching,
        fi::DISPOSITION if delete => Want::HandleCaching,
        _ => Want::Nothing,
    };
    if let Some(s) = super::oplock::check_irp(call, want) {
        return s;
    }
    if matches!(class, fi::END_OF_FILE | fi::ALLOCATION) {
        crate::sections::notify_conflicts(fo, crate::sections::ConflictOp::SetEndOfFile);
    }
    let r = kernel::with(|k| k.fs_set_info(fo, class, &input));
    call.done(r.err().unwrap_or(Status::SUCCESS), 0)
}

/// `FileLinkInformation`.
const FILE_LINK_INFORMATION: u32 = 11;
/// `FileShortNameInformation`.
const FILE_SHORT_NAME_INFORMATION: u32 = 40;

/// `IRP_MJ_DIRECTORY_CONTROL`.
pub fn directory_control(call: Call, minor: u8) -> NTSTATUS {
    if minor == mn_dir::NOTIFY_CHANGE_DIRECTORY {
        return notify_change_directory(call);
    }
    if minor != mn_dir::QUERY_DIRECTORY {
        return call.done(Status::INVALID_DEVICE_REQUEST, 0);
    }
    let sl = call.sl();
    // SAFETY: `QueryDirectory` is the member in use.
    let p = *unsafe { params::io::<params::IoQueryDirectory>(&sl.Parameters) };
    // SAFETY: the pattern the caller passed, or null.
    let pattern: Option<Vec<char>> = (!p.FileName.is_null())
        .then(|| String::from_utf16_lossy(unsafe { irpx::units(p.FileName) }).chars().collect());
    let q = DirQuery {
        fo: sl.FileObject,
        class: p.FileInformationClass as u32,
        pattern,
        restart: sl.Flags & sl::RESTART_SCAN != 0,
        single: sl.Flags & sl::RETURN_SINGLE_ENTRY != 0,
        index: (sl.Flags & sl::INDEX_SPECIFIED != 0).then_some(p.FileIndex as usize),
        length: p.Length as usize,
    };
    // SAFETY: the live IRP.
    let buffer = unsafe { irpx::data_buffer(call.irp) };
    let length = q.length;
    match kernel::with(|k| k.fs_query_directory(q)) {
        Ok((bytes, status)) => {
            // SAFETY: the request's buffer of `length` bytes.
            let n = unsafe { irpx::copy_out(buffer, length, &bytes) };
            call.done(status, n)
        }
        Err(s) => call.done(s, 0),
    }
}

/// `IRP_MN_NOTIFY_CHANGE_DIRECTORY` ([`notify`]): the handle's directory must be one on a disk or
/// CD file system, the completion filter must select something valid.
fn notify_change_directory(call: Call) -> NTSTATUS {
    let sl = call.sl();
    // SAFETY: `NotifyDirectory` is the member in use.
    let p = *unsafe { params::io::<params::IoNotifyDirectory>(&sl.Parameters) };
    let (fo, tree) = (sl.FileObject, sl.Flags & notify::SL_WATCH_TREE != 0);
    let irp = (call.irp as usize, p.Length as usize);
    let answer = kernel::with(|k| {
        let (mount, node, _) = k.node_of(fo)?;
        let m = &k.fs.mounts[mount as usize];
        if m.ty.is_namespace() || m.ty == FsType::Raw {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        if node == VOLUME_NODE || !k.media_of(mount).node(node).is_dir() {
            return Err(Status::INVALID_PARAMETER);
        }
        let filter = p.CompletionFilter;
        if !notify::valid_filter(filter) {
            return Err(Status::INVALID_PARAMETER);
        }
        // SAFETY: the request's live file object.
        let file = unsafe { &*fo };
        let (ccb, flags) = (file.FsContext2 as usize, file.Flags);
        // A file object through cleanup has no watch to wait on (FsRtl answers at once, even
        // when its handle never set one up).
        if flags & fo::CLEANUP_COMPLETE != 0 {
            return Ok(Some((Status::NOTIFY_CLEANUP, Vec::new())));
        }
        Ok(k.notify_request(ccb, (mount, node), filter, tree, irp))
    });
    match answer {
        Err(s) => call.done(s, 0),
        Ok(None) => Status::PENDING.0,
        Ok(Some((status, bytes))) => {
            notify::log_changes(irp.0, &bytes);
            // SAFETY: the live IRP.
            let buffer = unsafe { irpx::data_buffer(call.irp) };
            // SAFETY: the request's buffer of `Length` bytes, which the answer fits.
            let n = unsafe { irpx::copy_out(buffer, irp.1, &bytes) };
            call.done(status, n)
        }
    }
}

/// A directory query.
#[derive(Clone)]
pub struct DirQuery {
    fo: *mut FILE_OBJECT,
    class: u32,
    pattern: Option<Vec<char>>,
    restart: bool,
    single: bool,
    index: Option<usize>,
    length: usize,
}

/// The fixed part of a directory entry of `class` (up to `FileName`), or None if unsupported.
fn dir_header(class: u32) -> Option<usize> {
    match class {
        fi::DIRECTORY => Some(64),
        fi::FULL_DIRECTORY => Some(68),
        fi::BOTH_DIRECTORY => Some(94),
        fi::ID_BOTH_DIRECTORY => Some(104),
        fi::NAMES => Some(12),
        _ => None,
    }
}

/// One directory entry.
fn dir_entry(class: u32, index: u32, name: &[u16], n: &Node) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(0).u32(index);
    if class != fi::NAMES {
        o.i64(n.times[0]).i64(n.times[1]).i64(n.times[2]).i64(n.times[3]);
        o.i64(n.size() as i64).i64(allocation(n.size()) as i64);
        o.u32(reported_attributes(n)).u32((name.len() * 2) as u32);
        match class {
            fi::FULL_DIRECTORY => {
                o.u32(0);
            }
            fi::BOTH_DIRECTORY | fi::ID_BOTH_DIRECTORY => {
                o.u32(0).u8(0).pad_to(94);
                if class == fi::ID_BOTH_DIRECTORY {
                    o.pad_to(96).i64(n.id as i64);
                }
            }
            _ => {}
        }
    } else {
        o.u32((name.len() * 2) as u32);
    }
    o.text(name);
    o.0
}

/// The attributes a query reports: a file with none set reports `FILE_ATTRIBUTE_NORMAL` (MS-FSA
/// 2.1.5.6.3 for directory entries; FastFat's queries, which report its dirent's flags or
/// `FILE_ATTRIBUTE_NORMAL` when they are zero). Setting `FILE_ATTRIBUTE_NORMAL` alone clears
/// them.
fn reported_attributes(n: &Node) -> u32 {
    if n.attributes == 0 { attr::NORMAL } else { n.attributes }
}

fn basic(o: &mut Out, n: &Node) {
    o.i64(n.times[0]).i64(n.times[1]).i64(n.times[2]).i64(n.times[3]);
    o.u32(reported_attributes(n)).pad_to(40);
}

fn standard(o: &mut Out, n: &Node, delete_pending: bool) {
    let start = o.0.len();
    o.i64(allocation(n.size()) as i64).i64(n.size() as i64).u32(1);
    o.u8(u8::from(delete_pending)).u8(u8::from(n.is_dir())).pad_to(start + 24);
}

impl Kernel {
    /// The node, mount and type of a file object's FCB (None: not a file of the file systems).
    fn node_of(&self, fo: *const FILE_OBJECT) -> Result<(u32, NodeId, usize), Status> {
        let fcb = self.fcb_of(fo).ok_or(Status::INVALID_DEVICE_REQUEST)?;
        let m = &self.fs.mounts[fcb.mount as usize];
        if m.state != MountState::Mounted {
            return Err(Status::VOLUME_DISMOUNTED);
        }
        Ok((fcb.mount, fcb.node, fcb.ptr()))
    }

    fn media_of(&self, mount: u32) -> &Media {
        &self.volumes.list[self.fs.mounts[mount as usize].volume.index()].media
    }

    /// The name a file reports (`FileNameInformation`): volume-relative, or for a share
    /// `\server\share\...`.
    fn reported_name(&self, mount: u32, node: NodeId) -> String {
        let path = self.media_of(mount).path_of(node);
        let m = &self.fs.mounts[mount as usize];
        match (&m.share, m.ty) {
            (Some(_), FsType::Mup) => {
                let share = self.volumes.list[m.volume.index()].share.clone().unwrap_or_default();
                if node == ROOT { format!("\\{share}") } else { format!("\\{share}{path}") }
            }
            _ => path,
        }
    }

    fn ccb_of(&self, fo: *const FILE_OBJECT) -> Option<&super::Ccb> {
        // SAFETY: a live file object from an IRP.
        let p = unsafe { (*fo).FsContext2 } as usize;
        self.fs.ccbs.get(&p)
    }

    fn fs_query_info(&self, fo: *mut FILE_OBJECT, class: u32) -> Result<Answer, Status> {
        let (mount, node, fcb) = self.node_of(fo)?;
        if node == VOLUME_NODE {
            return Err(Status::INVALID_PARAMETER);
        }
        // A named stream reports its file's attributes, times and index, and its own size.
        let view = self.media_of(mount).stream_view(node);
        let n = &*view;
        let delete_pending = self.fs.fcbs[&fcb].delete_pending;
        // SAFETY: the request's live file object.
        let file = unsafe { irpx::file(fo) };
        let access = self.ccb_of(fo).map_or(0, |c| c.access);
        let mode = if file.Flags & fo::SYNCHRONOUS_IO != 0 { 0x20 } else { 0 };
        let mut o = Out::default();
        let fixed = match class {
            fi::BASIC => {
                basic(&mut o, n);
                40
            }
            fi::STANDARD => {
                standard(&mut o, n, delete_pending);
                24
            }
            fi::INTERNAL => {
                o.i64(n.id as i64);
                8
            }
            fi::EA => {
                o.u32(0);
                4
            }
            fi::ACCESS => {
                o.u32(access);
                4
            }
            fi::POSITION => {
                o.i64(file.CurrentByteOffset);
                8
            }
            fi::MODE => {
                o.u32(mode);
                4
            }
            fi::ALIGNMENT => {
                o.u32(0);
                4
            }
            fi::NAME => {
                let name = utf16(&self.reported_name(mount, node));
                o.u32((name.len() * 2) as u32).text(&name);
                4
            }
            fi::ALL => {
                basic(&mut o, n);
                standard(&mut o, n, delete_pending);
                o.i64(n.id as i64).u32(0).u32(access).i64(file.CurrentByteOffset).u32(mode).u32(0);
                let name = utf16(&self.reported_name(mount, node));
                o.u32((name.len() * 2) as u32).text(&name);
                100
            }
            fi::NETWORK_OPEN => {
                network_open(&mut o, n);
                NETWORK_OPEN_SIZE
            }
            fi::ATTRIBUTE_TAG => {
                // The reparse tag when the file has a reparse point (MS-FSCC 2.4.6).
                o.u32(reported_attributes(n)).u32(n.reparse.as_ref().map_or(0, |p| p.tag));
                8
            }
            fi::STREAM if super::streams::supported(self.fs.mounts[mount as usize].ty) => {
                let entries = self.stream_entries(mount, node);
                return Ok(Answer {
                    bytes: Vec::new(),
                    fixed: STREAM_ENTRY,
                    entries: Some(entries),
                });
            }
            // FastFat's FatCommonQueryInformation answers a class it does not serve (streams
            // among them) so: as the simulator's FAT, exFAT, CDFS and UDFS do.
            _ => return Err(Status::INVALID_PARAMETER),
        };
        Ok(Answer { bytes: o.0, fixed, entries: None })
    }

    /// The `FILE_STREAM_INFORMATION` entries of the file `node` belongs to (MS-FSCC 2.4.43,
    /// MS-FSA 2.1.5.12.29): its default data stream `::$DATA` first (none for a directory, which
    /// has none: MS-FSCC 2.1.4), then its named streams `:name:$DATA` by upper-cased name
    /// (choice: the order NTFS gives is not checked), each with its size and its allocation, the
    /// name as created. A named stream an overwrite left pending delete is listed until it goes
    /// (choice). Each entry is unpadded; `NextEntryOffset` is set as they are laid out.
    fn stream_entries(&self, mount: u32, node: NodeId) -> Vec<Vec<u8>> {
        let media = self.media_of(mount);
        let file = media.file_of(node);
        let mut streams: Vec<(String, u64)> = Vec::new();
        if !media.node(file).is_dir() {
            streams.push((String::new(), media.node(file).size()));
        }
        for s in media.named_streams(file) {
            streams.push((media.node(s).name.clone(), media.node(s).size()));
        }
        streams
            .into_iter()
            .map(|(name, size)| {
                let name = utf16(&format!(":{name}:$DATA"));
                let mut o = Out::default();
                o.u32(0).u32((name.len() * 2) as u32).i64(size as i64);
                o.i64(allocation(size) as i64).text(&name);
                o.0
            })
            .collect()
    }

    fn fs_query_volume(&self, fo: *mut FILE_OBJECT, class: u32) -> Result<Answer, Status> {
        let (mount, _, _) = self.node_of(fo)?;
        let m = &self.fs.mounts[mount as usize];
        let ty = m.ty;
        let volume = &self.volumes.list[m.volume.index()];
        let media = &volume.media;
        let mut o = Out::default();
        let cluster = 4096u64;
        let total = volume.media_size() / cluster;
        let used: u64 =
            media.nodes.iter().filter(|n| n.live).map(|n| allocation(n.size()) / cluster).sum();
        let sector: u32 = if matches!(ty, FsType::Cdfs | FsType::Udfs) { 2048 } else { 512 };
        let fixed = match class {
            fs_info::VOLUME => {
                let label = utf16(&media.label);
                o.i64(media.created).u32(media.serial).u32((label.len() * 2) as u32);
                o.u8(u8::from(ty == FsType::Ntfs)).u8(0).text(&label);
                18
            }
            fs_info::SIZE => {
                o.i64(total as i64).i64(total.saturating_sub(used) as i64);
                o.u32((cluster / u64::from(sector)) as u32).u32(sector);
                24
            }
            fs_info::FULL_SIZE => {
                let free = total.saturating_sub(used) as i64;
                o.i64(total as i64).i64(free).i64(free);
                o.u32((cluster / u64::from(sector)) as u32).u32(sector);
                32
            }
            fs_info::DEVICE => {
                let (dtype, chars) = match volume.storage {
                    Some(s) => {
                        let d = self.objects.dobj(s);
                        (d.DeviceType, d.Characteristics | characteristics::DEVICE_IS_MOUNTED)
                    }
                    None => {
                        let d = self.objects.dobj(m.vdo);
                        let remote =
                            if ty == FsType::Mup { characteristics::REMOTE_DEVICE } else { 0 };
                        (d.DeviceType, d.Characteristics | remote)
                    }
                };
                o.u32(dtype).u32(chars);
                8
            }
            fs_info::ATTRIBUTE => {
                let desc = ty.desc();
                let name = utf16(desc.fs_name);
                o.u32(desc.fs_attributes).u32(255).u32((name.len() * 2) as u32).text(&name);
                12
            }
            _ => return Err(Status::INVALID_PARAMETER),
        };
        Ok(Answer { bytes: o.0, fixed, entries: None })
    }

    fn fs_set_info(
        &mut self,
        fo: *mut FILE_OBJECT,
        class: u32,
        input: &[u8],
    ) -> Result<(), Status> {
        let (mount, node, fcb) = self.node_of(fo)?;
        if node == VOLUME_NODE {
            return Err(Status::INVALID_PARAMETER);
        }
        let ty = self.fs.mounts[mount as usize].ty;
        let access = self.ccb_of(fo).map_or(0, |c| c.access);
        let now = crate::fs::media::EPOCH_2026 + self.sched.now as i64;
        let read_only = ty.desc().read_only;
        let need =
            |len: usize| if input.len() < len { Err(Status::INFO_LENGTH_MISMATCH) } else { Ok(()) };
        let i64_at = |at: usize| i64::from_le_bytes(input[at..at + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |at: usize| u32::from_le_bytes(input[at..at + 4].try_into().unwrap_or([0; 4]));
        if read_only && class != fi::POSITION {
            return Err(Status::MEDIA_WRITE_PROTECTED);
        }
        let vidx = self.fs.mounts[mount as usize].volume.index();
        match class {
            fi::POSITION => {
                need(8)?;
                let pos = i64_at(0);
                if pos < 0 {
                    return Err(Status::INVALID_PARAMETER);
                }
                // SAFETY: the request's live file object.
                unsafe { irpx::file(fo) }.CurrentByteOffset = pos;
                Ok(())
            }
            fi::BASIC => {
                need(36)?;
                if access & acc::FILE_WRITE_ATTRIBUTES == 0 {
                    return Err(Status::ACCESS_DENIED);
                }
                let media = &mut self.volumes.list[vidx].media;
                let n = media.node_mut(media.file_of(node));
                let a = u32_at(32);
                // MS-FSA 2.1.5.15.2: a time below -2, the directory attribute on a file and the
                // temporary attribute on a directory are invalid; only the settable attributes
                // change (not the hidden and system attributes of the root).
                if (0..4).any(|i| i64_at(i * 8) < -2)
                    || (a & attr::DIRECTORY != 0 && !n.is_dir())
                    || (a & attr::TEMPORARY != 0 && n.is_dir())
                {
                    return Err(Status::INVALID_PARAMETER);
                }
                // The filters of what changed (FastFat's FatSetBasicInfo reports them at once);
                // the change time has no filter of its own.
                const TIME_FILTERS: [u32; 4] = [
                    notify::change::CREATION,
                    notify::change::LAST_ACCESS,
                    notify::change::LAST_WRITE,
                    0,
                ];
                let mut changed = 0;
                for (i, filter) in TIME_FILTERS.into_iter().enumerate() {
                    let t = i64_at(i * 8);
                    if t > 0 {
                        n.times[i] = t;
                        changed |= filter;
                    }
                }
                if a != 0 {
                    // FAT and exFAT drop what their directory entries do not store.
                    let mut settable = self.fs.mounts[mount as usize].ty.kept_attributes();
                    if node == ROOT {
                        settable &= !(attr::HIDDEN | attr::SYSTEM);
                    }
                    let before = n.attributes;
                    n.attributes = (n.attributes & !settable) | (a & settable);
                    if n.attributes != before {
                        changed |= notify::change::ATTRIBUTES;
                    }
                }
                if changed != 0 && node != ROOT {
                    self.report_change(mount, node, notify::action::MODIFIED, changed);
                }
                Ok(())
            }
            fi::DISPOSITION | fi::DISPOSITION_EX => {
                need(1)?;
                if access & acc::DELETE == 0 {
                    return Err(Status::ACCESS_DENIED);
                }
                let delete =
                    if class == fi::DISPOSITION { input[0] != 0 } else { input[0] & 1 != 0 };
                // FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE: a read-only file may be deleted.
                let ignore_read_only = class == fi::DISPOSITION_EX && input[0] & 0x10 != 0;
                let media = &self.volumes.list[vidx].media;
                let n = media.node(node);
                if delete {
                    let attributes = media.node(media.file_of(node)).attributes;
                    let read_only = attributes & attr::READONLY != 0 && !ignore_read_only;
                    if node == ROOT || read_only {
                        return Err(Status::CANNOT_DELETE);
                    }
                    if n.is_dir() && !media.is_empty_dir(node) {
                        return Err(Status::DIRECTORY_NOT_EMPTY);
                    }
                    if self.sections.has_views(fcb) {
                        return Err(Status::CANNOT_DELETE);
                    }
                }
                if let Some(f) = self.fs.fcbs.get_mut(&fcb) {
                    f.delete_pending = delete;
                }
                if delete && self.volumes.list[vidx].media.node(node).is_dir() {
                    // FastFat tells FsRtl at once that the directory goes: its watches end.
                    self.watched_dir_deleted(mount, node);
                }
                // SAFETY: the request's live file object.
                unsafe { irpx::file(fo) }.DeletePending = delete;
                Ok(())
            }
            fi::END_OF_FILE | fi::ALLOCATION => {
                need(8)?;
                if access & acc::FILE_WRITE_DATA == 0 {
                    return Err(Status::ACCESS_DENIED);
                }
                let want = i64_at(0);
                if want < 0 {
                    return Err(Status::INVALID_PARAMETER);
                }
                let n = self.volumes.list[vidx].media.node(node);
                if n.is_dir() {
                    return Err(Status::INVALID_PARAMETER);
                }
                let size = n.size();
                let new = if class == fi::ALLOCATION { size.min(want as u64) } else { want as u64 };
                if new > super::rw::MAX_FILE_SIZE {
                    return Err(super::rw::STATUS_DISK_FULL);
                }
                if new < size && self.sections.has_views(fcb) {
                    return Err(Status::USER_MAPPED_FILE);
                }
                let n = self.volumes.list[vidx].media.node_mut(node);
                if let super::media::NodeKind::File { data } = &mut n.kind {
                    data.resize(new as usize, 0);
                }
                n.times[2] = now;
                n.times[3] = now;
                if let Some(f) = self.fs.fcbs.get(&fcb) {
                    f.set_size(new);
                }
                // SAFETY: the request's live file object.
                notify::mark_modified(unsafe { irpx::file(fo) }, new != size);
                Ok(())
            }
            fi::RENAME => {
                need(20)?;
                if access & acc::DELETE == 0 {
                    return Err(Status::ACCESS_DENIED);
                }
                let replace = input[0] != 0;
                let len = u32_at(16) as usize;
                need(20 + len)?;
                let units: Vec<u16> = input[20..20 + len]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let target = String::from_utf16_lossy(&units);
                // A stream's rename (`:new`, MS-FSA 2.1.5.15.11.1) is not modelled.
                if self.volumes.list[vidx].media.node(node).host.is_some() {
                    return Err(Status::INVALID_PARAMETER);
                }
                self.rename(mount, node, &target, replace, now)
            }
            _ => Err(Status::INVALID_PARAMETER),
        }
    }

    fn rename(
        &mut self,
        mount: u32,
        node: NodeId,
        target: &str,
        replace: bool,
        now: i64,
    ) -> Result<(), Status> {
        if node == ROOT {
            return Err(Status::INVALID_PARAMETER);
        }
        let m = &self.fs.mounts[mount as usize];
        let vidx = m.volume.index();
        let share_prefix = m.share.is_some();
        let media = &self.volumes.list[vidx].media;
        // A directory with a handle open on anything below it cannot be renamed (FastFat's
        // FatSetRenameInfo: an FCB of its subtree with a non-zero UncleanCount).
        if media.node(node).is_dir() && self.handle_open_below(mount, node) {
            return Err(Status::ACCESS_DENIED);
        }
        let parent = media.node(node).parent.unwrap_or(ROOT);
        let mut comps: Vec<&str> = target.split('\\').filter(|c| !c.is_empty()).collect();
        let (dir, leaf) = if target.starts_with('\\') {
            if share_prefix && comps.len() >= 2 {
                comps.drain(..2);
            }
            let Some(leaf) = comps.pop() else { return Err(Status::OBJECT_NAME_INVALID) };
            let dir = media.lookup(ROOT, &comps).map_err(|_| Status::OBJECT_PATH_NOT_FOUND)?;
            if !media.node(dir).is_dir() {
                return Err(Status::OBJECT_PATH_NOT_FOUND);
            }
            (dir, leaf)
        } else {
            if comps.len() != 1 {
                return Err(Status::OBJECT_NAME_INVALID);
            }
            (parent, comps[0])
        };
        if !super::create::valid_component(leaf) {
            return Err(Status::OBJECT_NAME_INVALID);
        }
        // A directory cannot move into itself.
        let mut cur = Some(dir);
        while let Some(c) = cur {
            if c == node {
                return Err(Status::INVALID_PARAMETER);
            }
            cur = media.node(c).parent;
        }
        if let Some(existing) = media.child(dir, leaf) {
            if existing != node {
                if !replace {
                    return Err(Status::OBJECT_NAME_COLLISION);
                }
                // A directory or a read-only file is never replaced: FastFat answers
                // STATUS_OBJECT_NAME_COLLISION (FatSetRenameInfo), NTFS STATUS_ACCESS_DENIED (a
                // read-only target is replaced only with FILE_RENAME_IGNORE_READONLY_ATTRIBUTE).
                let target = media.node(existing);
                if target.is_dir() || target.attributes & attr::READONLY != 0 {
                    return Err(if self.fs.mounts[mount as usize].ty == FsType::Fat {
                        Status::OBJECT_NAME_COLLISION
                    } else {
                        Status::ACCESS_DENIED
                    });
                }
                if self.fs.mounts[mount as usize].fcbs_by_node.contains_key(&existing) {
                    return Err(Status::ACCESS_DENIED);
                }
                self.report_change(
                    mount,
                    existing,
                    notify::action::REMOVED,
                    notify::change::FILE_NAME,
                );
                self.volumes.list[vidx].media.remove(existing);
            }
        }
        let media = &self.volumes.list[vidx].media;
        let (from, names) =
            (media.node(node).parent, notify::name_change(media.node(node).is_dir()));
        // Within its directory a rename is an old and a new name; to another directory, a
        // removal where it was and an addition where it went (docs/simulator.md).
        let within = from == Some(dir);
        let old = if within { notify::action::RENAMED_OLD_NAME } else { notify::action::REMOVED };
        self.report_change(mount, node, old, names);
        self.volumes.list[vidx].media.rename(node, dir, leaf, now);
        let new = if within { notify::action::RENAMED_NEW_NAME } else { notify::action::ADDED };
        self.report_change(mount, node, new, names);
        Ok(())
    }

    /// True when a file or directory below `dir` (at any depth) has an open handle (an FCB
    /// whose cleanup has not come for every handle).
    fn handle_open_below(&self, mount: u32, dir: NodeId) -> bool {
        let media = self.media_of(mount);
        self.fs.mounts[mount as usize].fcbs_by_node.iter().any(|(&n, fcb)| {
            if n == VOLUME_NODE || n == dir || self.fs.fcbs.get(fcb).is_none_or(|f| f.handles == 0)
            {
                return false;
            }
            // A named stream is below what its file is below.
            let mut cur = media.node(media.file_of(n)).parent;
            while let Some(c) = cur {
                if c == dir {
                    return true;
                }
                cur = media.node(c).parent;
            }
            false
        })
    }

    fn fs_query_directory(&mut self, q: DirQuery) -> Result<(Vec<u8>, Status), Status> {
        let (mount, node, _) = self.node_of(q.fo)?;
        if node == VOLUME_NODE || !self.media_of(mount).node(node).is_dir() {
            return Err(Status::INVALID_PARAMETER);
        }
        let header = dir_header(q.class).ok_or(Status::INVALID_INFO_CLASS)?;
        if q.length < header {
            return Err(Status::INFO_LENGTH_MISMATCH);
        }
        let ty = self.fs.mounts[mount as usize].ty;
        // SAFETY: the request's live file object.
        let ccb_ptr = unsafe { (*q.fo).FsContext2 } as usize;
        let ccb = self.fs.ccbs.get_mut(&ccb_ptr).ok_or(Status::INVALID_PARAMETER)?;
        // The handle's first query (MS-FSA 2.1.5.6.3 FirstQuery, FastFat's InitialQuery): it has
        // no pattern yet. Only such a query answers STATUS_NO_SUCH_FILE when nothing matches; a
        // later one, a restart with a new pattern included, answers STATUS_NO_MORE_FILES.
        let first = ccb.pattern.is_none();
        if first || q.restart {
            ccb.pattern =
                Some(q.pattern.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| vec!['*']));
            ccb.position = 0;
        }
        if let Some(i) = q.index {
            ccb.position = i;
        }
        let pattern = ccb.pattern.clone().unwrap_or_default();
        let mut position = ccb.position;
        let media = &self.volumes.list[self.fs.mounts[mount as usize].volume.index()].media;
        // The listing: "." and ".." (except at the root), then the children.
        let mut listing: Vec<(String, NodeId)> = Vec::new();
        if node != ROOT {
            listing.push((".".into(), node));
            listing.push(("..".into(), media.node(node).parent.unwrap_or(ROOT)));
        }
        for c in media.children(node, ty.desc().sorted) {
            listing.push((media.node(c).name.clone(), c));
        }
        let mut out: Vec<u8> = Vec::new();
        let mut last_entry: Option<usize> = None;
        let mut status = Status::SUCCESS;
        while position < listing.len() {
            let (name, id) = &listing[position];
            let chars: Vec<char> = name.chars().collect();
            if !name_matches(&pattern, &chars) {
                position += 1;
                continue;
            }
            let units = utf16(name);
            let entry = dir_entry(q.class, position as u32, &units, media.node(*id));
            let start = out.len().next_multiple_of(8);
            if start + entry.len() > q.length {
                if last_entry.is_none() {
                    // Not even one whole entry fits: return what fits of it. The entry is not
                    // consumed: the next query starts with it again (FastFat's
                    // FatQueryDirectory leaves its search offset at the entry that overflowed).
                    out = entry;
                    out.truncate(q.length);
                    status = Status::BUFFER_OVERFLOW;
                }
                break;
            }
            if let Some(prev) = last_entry {
                let off = (start - prev) as u32;
                out[prev..prev + 4].copy_from_slice(&off.to_le_bytes());
            }
            out.resize(start, 0);
            out.extend_from_slice(&entry);
            last_entry = Some(start);
            position += 1;
            if q.single {
                break;
            }
        }
        let ccb = self.fs.ccbs.get_mut(&ccb_ptr).ok_or(Status::INVALID_PARAMETER)?;
        ccb.position = position;
        if out.is_empty() {
            return Err(if first { Status::NO_SUCH_FILE } else { Status::NO_MORE_FILES });
        }
        Ok((out, status))
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use windows_sys::Wdk::Storage::FileSystem::{
        FILE_BOTH_DIR_INFORMATION, FILE_DIRECTORY_INFORMATION, FILE_FS_ATTRIBUTE_INFORMATION,
        FILE_NAMES_INFORMATION, FILE_RENAME_INFORMATION, FILE_STANDARD_INFORMATION,
    };
    use windows_sys::Wdk::System::SystemServices::FILE_FS_VOLUME_INFORMATION;

    use super::*;

    #[test]
    fn layouts_match_the_declarations() {
        assert_eq!(
            dir_header(fi::DIRECTORY),
            Some(offset_of!(FILE_DIRECTORY_INFORMATION, FileName))
        );
        assert_eq!(
            dir_header(fi::BOTH_DIRECTORY),
            Some(offset_of!(FILE_BOTH_DIR_INFORMATION, FileName))
        );
        assert_eq!(dir_header(fi::NAMES), Some(offset_of!(FILE_NAMES_INFORMATION, FileName)));
        assert_eq!(offset_of!(FILE_BOTH_DIR_INFORMATION, ShortNameLength), 68);
        assert_eq!(offset_of!(FILE_BOTH_DIR_INFORMATION, EaSize), 64);
        assert_eq!(size_of::<FILE_STANDARD_INFORMATION>(), 24);
        assert_eq!(offset_of!(FILE_FS_VOLUME_INFORMATION, VolumeLabel), 18);
        assert_eq!(offset_of!(FILE_FS_ATTRIBUTE_INFORMATION, FileSystemName), 12);
        assert_eq!(offset_of!(FILE_RENAME_INFORMATION, FileNameLength), 16);
        assert_eq!(offset_of!(FILE_RENAME_INFORMATION, FileName), 20);
        let n = super::super::media::Media::new(1, "", 0);
        let e = dir_entry(fi::BOTH_DIRECTORY, 0, &[0x41], n.node(ROOT));
        assert_eq!(e.len(), 94 + 2);
        let e = dir_entry(fi::DIRECTORY, 0, &[0x41], n.node(ROOT));
        assert_eq!(e.len(), 64 + 2);
    }
}
