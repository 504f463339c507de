//! Raw IRPs: a request built by hand, as a kernel-mode caller (another driver, the memory
//! manager, a test) could build it, sent to the top of a volume's stack with the stack
//! location's parameters, the IRP flags and the buffer placement chosen by the caller
//! ([`Machine::send_irp`]). The fuzzers (fuzz/, target `irp`) feed malformed parameters through
//! it to the filters of both models.
//!
//! What stays the caller's to choose: the major function's parameters (lengths, offsets
//! including negative and huge ones, information classes, control codes, lock ranges), the
//! minor function, `Irp->Flags`, the stack location's `Flags`, the requestor mode, the file name
//! of a create (any UTF-16 units: invalid, with NULs, without a leading backslash, with stream
//! names), a directory query's pattern, and where the buffer is: none (`NULL`), `UserBuffer`, an
//! MDL, or `AssociatedIrp.SystemBuffer`.
//!
//! What the simulator still guarantees, because the real I/O manager and memory manager do and
//! the drivers rely on it (their `// SAFETY:` comments say so): a buffer that is there covers
//! every length the parameters claim (an MDL describes the bytes it maps), pointers in the
//! parameters (a create's security context, a lock's length, a query's pattern) are valid or
//! `NULL`, a create goes with a fresh file object and anything else with the file object of an
//! open handle. A buffer larger than [`RAW_BUFFER_LIMIT`] is refused with
//! `STATUS_INSUFFICIENT_RESOURCES` before any IRP is built, as an allocation that large fails;
//! with no buffer, any length goes down.

use fsfilter::{MajorFunction, Status};
use fsfilter_kernel::params::{self, io_mut};
use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::events::RequestRef;
use crate::files::Handle;
use crate::ids::VolumeId;
use crate::irp::Finish;
use crate::kernel::{self, Kernel};
use crate::machine::Machine;
use crate::mem::Block;
use crate::nt::{access, fo, mj};
use crate::syscalls::IoResult;
use crate::volumes::MediaKind;

/// The largest buffer a raw request gets (bytes).
pub const RAW_BUFFER_LIMIT: usize = 1 << 20;

/// `IRP_ASSOCIATED_IRP`: never taken from the caller (it would claim a master IRP in
/// `AssociatedIrp`, where the buffer is).
const IRP_ASSOCIATED_IRP: u32 = 0x8;

/// Where a raw request's buffer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawBuffer {
    /// No buffer: every buffer pointer is `NULL`, whatever the lengths say.
    Null,
    /// `Irp->UserBuffer` (neither I/O; `Type3InputBuffer` too for control requests).
    User,
    /// An MDL (`Irp->MdlAddress`, with `UserBuffer` at the same address, as for direct I/O).
    Mdl,
    /// `Irp->AssociatedIrp.SystemBuffer` (buffered I/O).
    System,
}

/// The major function of a raw request and its stack location's parameters.
#[derive(Clone, Copy, Debug)]
pub enum RawOp<'a> {
    /// `IRP_MJ_CREATE` on a new file object of `volume` named `name` (relative to the volume).
    Create {
        /// The volume.
        volume: VolumeId,
        /// The name: any UTF-16 units.
        name: &'a [u16],
        /// `Parameters.Create.Options` (disposition in the high byte).
        options: u32,
        /// `Parameters.Create.ShareAccess`.
        share: u16,
        /// `Parameters.Create.FileAttributes`.
        attributes: u16,
        /// The security context's desired access (generic rights mapped).
        access: u32,
        /// `Parameters.Create.EaLength`.
        ea_length: u32,
    },
    /// `IRP_MJ_READ`.
    Read {
        /// `Length`.
        length: u32,
        /// `ByteOffset`.
        offset: i64,
        /// `Key`.
        key: u32,
    },
    /// `IRP_MJ_WRITE`.
    Write {
        /// `Length`.
        length: u32,
        /// `ByteOffset`.
        offset: i64,
        /// `Key`.
        key: u32,
    },
    /// `IRP_MJ_QUERY_INFORMATION`.
    QueryInformation {
        /// `Length`.
        length: u32,
        /// `FileInformationClass`.
        class: u32,
    },
    /// `IRP_MJ_SET_INFORMATION`.
    SetInformation {
        /// `Length`.
        length: u32,
        /// `FileInformationClass`.
        class: u32,
    },
    /// `IRP_MJ_QUERY_VOLUME_INFORMATION`.
    QueryVolumeInformation {
        /// `Length`.
        length: u32,
        /// `FsInformationClass`.
        class: u32,
    },
    /// `IRP_MJ_DIRECTORY_CONTROL` / `IRP_MN_NOTIFY_CHANGE_DIRECTORY` (the request's `minor` is not
    /// used: read as a query, the completion filter would be the low half of the pattern's
    /// pointer), with `Length` and `CompletionFilter`. A notification the file system holds comes
    /// back `STATUS_PENDING` (docs/simulator.md, "Directory change notifications"); the
    /// handle's cleanup, a change or a cancel ends it.
    NotifyChangeDirectory {
        /// `Length`.
        length: u32,
        /// `CompletionFilter`.
        filter: u32,
    },
    /// `IRP_MJ_DIRECTORY_CONTROL` (the query-directory layout, whatever the minor).
    DirectoryControl {
        /// `Length`.
        length: u32,
        /// `FileInformationClass`.
        class: u32,
        /// `FileName` (`None`: `NULL`).
        pattern: Option<&'a [u16]>,
        /// `FileIndex`.
        index: u32,
    },
    /// `IRP_MJ_FILE_SYSTEM_CONTROL`.
    FileSystemControl {
        /// `FsControlCode`.
        code: u32,
        /// `InputBufferLength`.
        input_length: u32,
        /// `OutputBufferLength`.
        output_length: u32,
    },
    /// `IRP_MJ_DEVICE_CONTROL`.
    DeviceControl {
        /// `IoControlCode`.
        code: u32,
        /// `InputBufferLength`.
        input_length: u32,
        /// `OutputBufferLength`.
        output_length: u32,
    },
    /// `IRP_MJ_LOCK_CONTROL`.
    LockControl {
        /// `ByteOffset`.
        offset: i64,
        /// `*Length` (`None`: `Length` is `NULL`).
        length: Option<i64>,
        /// `Key`.
        key: u32,
    },
    /// `IRP_MJ_FLUSH_BUFFERS`.
    Flush,
    /// `IRP_MJ_QUERY_EA` (`EaList` is `NULL`, `EaListLength` 0).
    QueryEa {
        /// `Length`.
        length: u32,
        /// `EaIndex`.
        index: u32,
    },
    /// `IRP_MJ_SET_EA`.
    SetEa {
        /// `Length`.
        length: u32,
    },
    /// `IRP_MJ_SET_VOLUME_INFORMATION`.
    SetVolumeInformation {
        /// `Length`.
        length: u32,
        /// `FsInformationClass`.
        class: u32,
    },
    /// `IRP_MJ_INTERNAL_DEVICE_CONTROL`.
    InternalDeviceControl {
        /// `IoControlCode`.
        code: u32,
        /// `InputBufferLength`.
        input_length: u32,
        /// `OutputBufferLength`.
        output_length: u32,
    },
    /// `IRP_MJ_QUERY_SECURITY`.
    QuerySecurity {
        /// `SecurityInformation`.
        information: u32,
        /// `Length`.
        length: u32,
    },
    /// `IRP_MJ_SET_SECURITY`; `SecurityDescriptor` is an empty self-relative descriptor (the I/O
    /// manager passes the one it captured, never a caller's pointer).
    SetSecurity {
        /// `SecurityInformation`.
        information: u32,
    },
    /// `IRP_MJ_QUERY_QUOTA` (`StartSid` and `SidList` are `NULL`, `SidListLength` 0).
    QueryQuota {
        /// `Length`.
        length: u32,
    },
    /// `IRP_MJ_SET_QUOTA`.
    SetQuota {
        /// `Length`.
        length: u32,
    },
    /// `IRP_MJ_PNP` with `Parameters.QueryDeviceRelations.Type` (the minor is the request's), on
    /// the file object of an open handle: as a kernel component sends
    /// `IRP_MN_QUERY_DEVICE_RELATIONS` / `TargetDeviceRelation` with a volume open's file object
    /// to find the volume's device (a target-device-change notification's registration). The
    /// IRP starts `STATUS_NOT_SUPPORTED`; no storage PnP stack is modelled, so nobody handles it
    /// and it completes with that status (docs/simulator.md, "Raw IRPs").
    Pnp {
        /// `Parameters.QueryDeviceRelations.Type` (`TargetDeviceRelation` is 4).
        relation: u32,
    },
}

/// An empty self-relative security descriptor (`SECURITY_DESCRIPTOR_RELATIVE`: revision 1,
/// `SE_SELF_RELATIVE`, no owner, group, SACL or DACL).
const EMPTY_SELF_RELATIVE_SD: [u8; 20] =
    [1, 0, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A raw request.
#[derive(Clone, Copy, Debug)]
pub struct RawIrp<'a> {
    /// The open handle whose file object the request is for (ignored by a create).
    pub handle: Handle,
    /// The major function and its parameters.
    pub op: RawOp<'a>,
    /// The minor function.
    pub minor: u8,
    /// `Irp->Flags` (`IRP_ASSOCIATED_IRP` is masked out).
    pub irp_flags: u32,
    /// The stack location's `Flags`.
    pub sl_flags: u8,
    /// `Irp->RequestorMode` is `UserMode` (else `KernelMode`).
    pub user_mode: bool,
    /// Where the buffer goes.
    pub buffer: RawBuffer,
    /// The buffer's first bytes (the rest is zero).
    pub data: &'a [u8],
}

impl RawOp<'_> {
    fn major(&self) -> u8 {
        match self {
            RawOp::Create { .. } => mj::CREATE,
            RawOp::Read { .. } => mj::READ,
            RawOp::Write { .. } => mj::WRITE,
            RawOp::QueryInformation { .. } => mj::QUERY_INFORMATION,
            RawOp::SetInformation { .. } => mj::SET_INFORMATION,
            RawOp::QueryVolumeInformation { .. } => mj::QUERY_VOLUME_INFORMATION,
            RawOp::DirectoryControl { .. } | RawOp::NotifyChangeDirectory { .. } => {
                mj::DIRECTORY_CONTROL
            }
            RawOp::FileSystemControl { .. } => mj::FILE_SYSTEM_CONTROL,
            RawOp::DeviceControl { .. } => mj::DEVICE_CONTROL,
            RawOp::LockControl { .. } => mj::LOCK_CONTROL,
            RawOp::Flush => mj::FLUSH_BUFFERS,
            RawOp::QueryEa { .. } => mj::QUERY_EA,
            RawOp::SetEa { .. } => mj::SET_EA,
            RawOp::SetVolumeInformation { .. } => mj::SET_VOLUME_INFORMATION,
            RawOp::InternalDeviceControl { .. } => mj::INTERNAL_DEVICE_CONTROL,
            RawOp::QuerySecurity { .. } => mj::QUERY_SECURITY,
            RawOp::SetSecurity { .. } => mj::SET_SECURITY,
            RawOp::QueryQuota { .. } => mj::QUERY_QUOTA,
            RawOp::SetQuota { .. } => mj::SET_QUOTA,
            RawOp::Pnp { .. } => mj::PNP,
        }
    }

    /// The largest length the parameters claim for the buffer.
    fn claimed(&self) -> usize {
        let n = match *self {
            RawOp::Read { length, .. }
            | RawOp::Write { length, .. }
            | RawOp::QueryInformation { length, .. }
            | RawOp::SetInformation { length, .. }
            | RawOp::QueryVolumeInformation { length, .. }
            | RawOp::DirectoryControl { length, .. }
            | RawOp::NotifyChangeDirectory { length, .. }
            | RawOp::QueryEa { length, .. }
            | RawOp::SetEa { length }
            | RawOp::SetVolumeInformation { length, .. }
            | RawOp::QuerySecurity { length, .. }
            | RawOp::QueryQuota { length }
            | RawOp::SetQuota { length } => length,
            RawOp::FileSystemControl { input_length, output_length, .. }
            | RawOp::DeviceControl { input_length, output_length, .. }
            | RawOp::InternalDeviceControl { input_length, output_length, .. } => {
                input_length.max(output_length)
            }
            RawOp::Create { ea_length, .. } => ea_length,
            RawOp::LockControl { .. }
            | RawOp::Flush
            | RawOp::SetSecurity { .. }
            | RawOp::Pnp { .. } => 0,
        };
        n as usize
    }
}

impl Machine {
    /// Sends a raw request (module docs) to the top of the stack and waits for it. A create that
    /// succeeds returns a handle. Refused without an IRP: a handle that is not open, a volume
    /// with no device to open (`STATUS_INVALID_HANDLE`, `STATUS_NO_SUCH_DEVICE`), a buffer over
    /// [`RAW_BUFFER_LIMIT`] (`STATUS_INSUFFICIENT_RESOURCES`).
    pub fn send_irp(&mut self, raw: RawIrp<'_>) -> IoResult {
        as_user(|| send(raw))
    }
}

/// Runs the request as the simulated user-mode caller does its system services: its thread,
/// `PASSIVE_LEVEL`, no image (as `syscalls::io`).
fn as_user<R>(f: impl FnOnce() -> R) -> R {
    let saved = kernel::with(|k| {
        let saved = (k.irql(), k.thread);
        k.set_irql(crate::kernel::PASSIVE_LEVEL);
        k.thread = k.processes.acting;
        saved
    });
    let r = kernel::call_into(None, f);
    kernel::with(|k| {
        k.set_irql(saved.0);
        k.thread = saved.1;
    });
    crate::sched::run_ready();
    r
}

fn failed(status: Status) -> IoResult {
    IoResult::without_request(status)
}

/// The file object and volume a create opens: a fresh file object on the device the name
/// resolves to (mounting a disk volume first), as `NtCreateFile` does; synchronous (and
/// alertable) as the create's options ask, as `IopParseDevice` makes it: without
/// `FILE_SYNCHRONOUS_IO_ALERT` or `_NONALERT` it is asynchronous (docs/simulator.md,
/// "Asynchronous I/O").
fn new_file(volume: VolumeId, name: &[u16], options: u32) -> Result<*mut FILE_OBJECT, Status> {
    let (kind, mounted) =
        kernel::with(|k| (k.volume(volume).fs.media(), crate::mount::is_mounted(k, volume)));
    if matches!(kind, MediaKind::Disk | MediaKind::CdRom) && !mounted {
        let s = crate::mount::mount_volume(volume, name.is_empty());
        if !s.is_success() {
            return Err(s);
        }
    }
    // A locked volume is refused in the parse (ReactOS `IopCheckVpbMounted`).
    if kernel::with(|k| crate::mount::is_locked(k, volume)) {
        return Err(Status::ACCESS_DENIED);
    }
    kernel::with(|k| {
        let vol = k.volume(volume);
        let (device, vpb, full) = match kind {
            MediaKind::Disk | MediaKind::CdRom => {
                let storage = vol.storage.ok_or(Status::NO_SUCH_DEVICE)?;
                (k.objects.device(storage).ptr, k.objects.dobj(storage).Vpb, name.to_vec())
            }
            MediaKind::Network => {
                let d = k.namespace_device(crate::fs::FsType::Mup).ok_or(Status::NO_SUCH_DEVICE)?;
                let share = vol.share.clone().unwrap_or_default();
                let mut full: Vec<u16> = format!("\\{share}").encode_utf16().collect();
                full.extend_from_slice(name);
                (k.objects.device(d).ptr, std::ptr::null_mut(), full)
            }
            MediaKind::None => {
                let d = k
                    .namespace_device(crate::fs::FsType::of(vol.fs))
                    .ok_or(Status::NO_SUCH_DEVICE)?;
                (k.objects.device(d).ptr, std::ptr::null_mut(), name.to_vec())
            }
        };
        let mut flags = crate::syscalls::synchronous_flags(options);
        if name.is_empty() && matches!(kind, MediaKind::Disk | MediaKind::CdRom) {
            flags |= fo::VOLUME_OPEN;
        }
        Ok(k.new_file_object_units(device, vpb, full, flags, Some(volume)))
    })
}

fn send(raw: RawIrp<'_>) -> IoResult {
    // With no buffer, nothing is allocated, whatever the lengths claim.
    let size = match raw.buffer {
        RawBuffer::Null => 0,
        _ => raw.op.claimed().max(raw.data.len()),
    };
    if size > RAW_BUFFER_LIMIT {
        return failed(Status::INSUFFICIENT_RESOURCES);
    }
    let major = raw.op.major();
    let create = matches!(raw.op, RawOp::Create { .. });
    let (file, volume) = match raw.op {
        RawOp::Create { volume, name, options, .. } => match new_file(volume, name, options) {
            Ok(f) => (f, volume),
            Err(s) => return failed(s),
        },
        _ => match kernel::with(|k| k.user_handle(raw.handle)) {
            Some(u) if u.open => (u.fo as *mut FILE_OBJECT, u.volume),
            _ => return failed(Status::INVALID_HANDLE),
        },
    };
    // Everything the IRP points to, kept until it completes (forgotten if it never does).
    let buf = Block::zeroed(size.max(1));
    let n = raw.data.len().min(size);
    if n > 0 {
        // SAFETY: the block holds `size` >= n bytes; the source `n`.
        unsafe { std::ptr::copy_nonoverlapping(raw.data.as_ptr(), buf.ptr(), n) };
    }
    let mut keep: Vec<Block> = Vec::new();
    let mut pattern_units: Option<Box<(Vec<u16>, UNICODE_STRING)>> = None;
    let (rid, irp, target) = kernel::with(|k: &mut Kernel| {
        let target = k.related_device(file);
        let rid = k.start_request(volume, MajorFunction::from_code(major), false);
        let stack = k.objects.device_id(target).map_or(1, |d| k.objects.dobj(d).StackSize);
        let irp = k.allocate_irp(stack, Finish::Request(rid), None);
        // SAFETY: a fresh IRP the caller owns until it is sent.
        let i = unsafe { crate::irpx::header(irp) };
        i.Flags = raw.irp_flags & !IRP_ASSOCIATED_IRP;
        i.RequestorMode = i8::from(raw.user_mode);
        // A PnP IRP starts STATUS_NOT_SUPPORTED, as every PnP request's sender must set it: a
        // driver that does not handle the request passes it on with the status untouched.
        i.IoStatus.Anonymous.Status =
            if major == mj::PNP { Status::NOT_SUPPORTED.0 } else { Status::PENDING.0 };
        i.Tail.Overlay.OriginalFileObject = file;
        let ptr = buf.ptr();
        match raw.buffer {
            RawBuffer::Null => {}
            RawBuffer::User => i.UserBuffer = ptr.cast(),
            RawBuffer::Mdl => {
                i.MdlAddress = k.allocate_mdl(ptr.cast(), size);
                i.UserBuffer = ptr.cast();
            }
            RawBuffer::System => i.AssociatedIrp.SystemBuffer = ptr.cast(),
        }
        // SAFETY: the first stack location of the fresh IRP.
        let s = unsafe { crate::irpx::next(irp) };
        s.MajorFunction = major;
        s.MinorFunction = match raw.op {
            // The notification layout makes sense with its own minor only: read as a query, its
            // completion filter would be the low half of the pattern's pointer.
            RawOp::NotifyChangeDirectory { .. } => crate::nt::mn_dir::NOTIFY_CHANGE_DIRECTORY,
            _ => raw.minor,
        };
        s.Flags = raw.sl_flags;
        s.FileObject = file;
        let user_buffer =
            if raw.buffer == RawBuffer::User { ptr.cast() } else { std::ptr::null_mut() };
        match raw.op {
            RawOp::Create { options, share, attributes, access: desired, ea_length, .. } => {
                let (sc, blocks) =
                    crate::syscalls::security_context(desired, options & 0x00FF_FFFF);
                // SAFETY: the member of a create.
                let c = unsafe { io_mut::<params::IoCreate>(&mut s.Parameters) };
                c.SecurityContext = sc;
                c.Options = options;
                c.FileAttributes = attributes;
                c.ShareAccess = share;
                c.EaLength = ea_length;
                keep.extend(blocks);
            }
            RawOp::Read { length, offset, key } | RawOp::Write { length, offset, key } => {
                // SAFETY: the member of a read or write.
                let r = unsafe { io_mut::<params::IoReadWrite>(&mut s.Parameters) };
                r.Length = length;
                r.ByteOffset = offset;
                r.Key = key;
            }
            RawOp::QueryInformation { length, class } | RawOp::SetInformation { length, class } => {
                // SAFETY: the member of an information query or set.
                let q = unsafe { io_mut::<params::IoFileInformation>(&mut s.Parameters) };
                q.Length = length;
                q.FileInformationClass = class as _;
            }
            RawOp::QueryVolumeInformation { length, class }
            | RawOp::SetVolumeInformation { length, class } => {
                // SAFETY: the member of a volume information query or set.
                let q = unsafe { io_mut::<params::IoVolumeInformation>(&mut s.Parameters) };
                q.Length = length;
                q.FsInformationClass = class as _;
            }
            RawOp::DirectoryControl { length, class, pattern, index } => {
                // SAFETY: the member of a directory query.
                let d = unsafe { io_mut::<params::IoQueryDirectory>(&mut s.Parameters) };
                d.Length = length;
                d.FileInformationClass = class as _;
                d.FileIndex = index;
                if let Some(p) = pattern {
                    let mut units = p.to_vec();
                    units.truncate(usize::from(u16::MAX / 2));
                    let mut b = Box::new((units, crate::mem::unicode(&[])));
                    b.1 = crate::mem::unicode(&b.0);
                    d.FileName = std::ptr::addr_of_mut!(b.1);
                    pattern_units = Some(b);
                }
            }
            RawOp::NotifyChangeDirectory { length, filter } => {
                // SAFETY: the member of a change notification.
                let d = unsafe { io_mut::<params::IoNotifyDirectory>(&mut s.Parameters) };
                d.Length = length;
                d.CompletionFilter = filter;
            }
            RawOp::FileSystemControl { code, input_length, output_length } => {
                // SAFETY: the member of a file-system control.
                let c = unsafe { io_mut::<params::IoFileSystemControl>(&mut s.Parameters) };
                c.FsControlCode = code;
                c.InputBufferLength = input_length;
                c.OutputBufferLength = output_length;
                c.Type3InputBuffer = user_buffer;
            }
            RawOp::DeviceControl { code, input_length, output_length }
            | RawOp::InternalDeviceControl { code, input_length, output_length } => {
                // SAFETY: the member of a device control.
                let c = unsafe { io_mut::<params::IoDeviceIoControl>(&mut s.Parameters) };
                c.IoControlCode = code;
                c.InputBufferLength = input_length;
                c.OutputBufferLength = output_length;
                c.Type3InputBuffer = user_buffer;
            }
            RawOp::LockControl { offset, length, key } => {
                // SAFETY: the member of a lock control.
                let lock = unsafe { io_mut::<params::IoLockControl>(&mut s.Parameters) };
                lock.ByteOffset = offset;
                lock.Key = key;
                if let Some(l) = length {
                    let b = Block::zeroed(8);
                    // SAFETY: the block holds 8 bytes.
                    unsafe { b.ptr().cast::<i64>().write_unaligned(l) };
                    lock.Length = b.ptr().cast();
                    keep.push(b);
                }
            }
            RawOp::Flush => {}
            RawOp::QueryEa { length, index } => {
                // SAFETY: the member of an EA query.
                let e = unsafe { io_mut::<params::IoQueryEa>(&mut s.Parameters) };
                e.Length = length;
                e.EaIndex = index;
            }
            // `Length` first: windows-sys's member has the documented layout.
            RawOp::SetEa { length } => s.Parameters.SetEa.Length = length,
            RawOp::QuerySecurity { information, length } => {
                // SAFETY: the member of a security query.
                let q = unsafe { io_mut::<params::IoQuerySecurity>(&mut s.Parameters) };
                q.SecurityInformation = information;
                q.Length = length;
            }
            RawOp::SetSecurity { information } => {
                let b = Block::zeroed(EMPTY_SELF_RELATIVE_SD.len());
                // SAFETY: the block holds as many bytes as the descriptor.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        EMPTY_SELF_RELATIVE_SD.as_ptr(),
                        b.ptr(),
                        EMPTY_SELF_RELATIVE_SD.len(),
                    )
                };
                s.Parameters.SetSecurity.SecurityInformation = information;
                s.Parameters.SetSecurity.SecurityDescriptor = b.ptr().cast();
                keep.push(b);
            }
            RawOp::QueryQuota { length } => s.Parameters.QueryQuota.Length = length,
            RawOp::SetQuota { length } => s.Parameters.SetQuota.Length = length,
            RawOp::Pnp { relation } => s.Parameters.QueryDeviceRelations.Type = relation as _,
        }
        (rid, irp, target)
    });
    let _ = crate::irp::call_driver(target, irp);
    let done = || kernel::with(|k| k.requests.result(rid).is_some());
    let _ = crate::sched::wait_until(done, None);
    let result = kernel::with(|k| k.requests.result(rid));
    let Some((status, information)) = result else {
        // Still pending (a driver holds it): everything it points to, and its file object, must
        // outlive it; they go with its IRP when it completes.
        kernel::with(|k| {
            k.hold_file_while_pending(irp);
            k.keep_for_request(rid, Box::new(buf));
            k.keep_for_request(rid, Box::new(keep));
            k.keep_for_request(rid, Box::new(pattern_units));
        });
        return IoResult { io: Some(RequestRef(rid.0)), ..failed(Status::PENDING) };
    };
    // Completed: stage two freed the IRP's MDL with the IRP.
    let shown = information.min(size);
    // SAFETY: the block holds `size` >= shown bytes.
    let data = unsafe { std::slice::from_raw_parts(buf.ptr(), shown) }.to_vec();
    let handle = if create {
        kernel::with(|k| {
            if status.is_success() {
                k.file_opened(file, 1);
                // SAFETY: the live file object.
                unsafe { (*file).Flags |= fo::HANDLE_CREATED };
                let granted = match raw.op {
                    RawOp::Create { access: a, .. } => access::map_generic(a) | access::SYNCHRONIZE,
                    _ => 0,
                };
                Some(k.add_handle(file as usize, volume, granted))
            } else {
                k.free_file_object(file as usize);
                None
            }
        })
    } else {
        None
    };
    drop(keep);
    drop(pattern_units);
    // A raw IRP has no caller's status block: its status is the request's final one.
    let (io, fast_io, iosb) = (Some(RequestRef(rid.0)), false, None);
    IoResult { status, information, data, io, fast_io, handle, iosb, reparsed: None }
}
