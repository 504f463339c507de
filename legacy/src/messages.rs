//! The message channel in the legacy model, built only for a filter that declares
//! [`Filter::MESSAGES`]: the filter's control device, reachable from user mode through the
//! symbolic link `\DosDevices\<name>` (as FileSpy names its control device for its reader).
//!
//! - `IRP_MJ_CREATE` on the control device connects a client, the file object being its
//!   [`ClientId`]; the connection context is the value of the first entry of the create's
//!   extended-attribute buffer (`FILE_FULL_EA_INFORMATION`, which the I/O manager captured into
//!   `Irp->AssociatedIrp.SystemBuffer`, `Parameters.Create.EaLength` bytes), empty without one.
//!   Beyond `max_clients` open clients the create fails with `STATUS_CONNECTION_COUNT_LIMIT`, the
//!   status the Filter Manager gives a connection beyond a port's `MaxConnections`.
//! - Only administrators connect, as to the minifilter model's port (whose descriptor,
//!   `FltBuildDefaultSecurityDescriptor`'s, admits only SYSTEM and administrators): a user-mode
//!   create whose token (the one `SeQuerySubjectContextToken` picks from the create's subject
//!   context) does not hold the Administrators group (`SeTokenIsAdmin`) fails with
//!   `STATUS_ACCESS_DENIED` before anything else. SYSTEM's token holds the group. A kernel-mode
//!   create is admitted, as the object manager skips access checks for kernel-mode callers.
//! - `IRP_MJ_CLEANUP` (the client's last handle closed) disconnects it; `IRP_MJ_CLOSE` succeeds.
//!   Whether a file object is a connected client is kept in its `FsContext2` (the control
//!   device completes the create, so the file object's context fields are its own):
//!   [`CONNECTED`] from the accepted create to the cleanup, 0 otherwise.
//! - `IRP_MJ_DEVICE_CONTROL` with [`fsfilter::IOCTL_FSFILTER_MESSAGE`] (`METHOD_BUFFERED`) is a
//!   message: the I/O manager copied the input into the system buffer and copies
//!   `IoStatus.Information` bytes of it back to the caller's output buffer on completion, so no
//!   user address is touched here. Other codes fail with `STATUS_INVALID_DEVICE_REQUEST`. A
//!   message on a file object that is not a connected client fails with
//!   `STATUS_INVALID_DEVICE_STATE` without the filter being asked: a device control can follow
//!   the cleanup on the same file object (an IRP of another thread, or a kernel caller that
//!   keeps the file object of `IoGetDeviceObjectPointer`, whose handle is closed at once), and
//!   `IoBuildDeviceIoControlRequest` sets no file object at all.
//!
//! - A filter that sends or asks for processes ([`Filter::PROCESS_QUERIES`]) keeps a record per
//!   client (`crate::send`): its pending gets and messages, and the connecting process (the
//!   create's `IoGetRequestorProcessId`, rule 26).
//!
//! The channel's count lives after the control device's `DeviceExt` in its extension
//! ([`ControlExt`]), so that a filter without a channel keeps today's extension and state.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use fsfilter::{ClientId, Error, Filter, IoStatus, MAX_CHANNEL_NAME, MessageChannel, Status};
use fsfilter_kernel::params::{self, IoCreate, IoDeviceIoControl};
use fsfilter_kernel::pool::{PoolBytes, pool_tag};
use fsfilter_kernel::sync::SpinLock;
use fsfilter_kernel::{unicode, wide};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, IO_STACK_LOCATION, IRP};
use windows_sys::Wdk::Storage::FileSystem::{IoGetRequestorProcessId, SeTokenIsAdmin};
use windows_sys::Wdk::System::SystemServices::{IoCreateSymbolicLink, IoDeleteSymbolicLink};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use crate::dispatch::complete;
use crate::state::{DeviceExt, DriverState};

/// Pool tag of message buffers: `FsfP`.
const MESSAGE_TAG: u32 = pool_tag(b"FsfP");

/// `\DosDevices\`, the prefix of the link.
const LINK_PREFIX: &[u16] = wide!("\\DosDevices\\");

/// The units of the longest link name.
const LINK_CAPACITY: usize = 12 + MAX_CHANNEL_NAME;

/// The extension of the control device of a filter with a channel: the `DeviceExt` every device
/// of the backend has, first, then the channel's count.
#[repr(C)]
pub(crate) struct ControlExt<F: Filter> {
    pub(crate) ext: DeviceExt<F>,
    /// Clients connected (creates accepted and not cleaned up).
    clients: AtomicU32,
    /// The clients' pending gets and the messages sent to them (`crate::send`).
    pub(crate) records: SpinLock<crate::send::Clients>,
}

/// Whether the control device keeps a record per client (`crate::send::Clients`): for a filter
/// that sends, or that asks for its clients' processes (rule 26).
pub(crate) fn keeps_records<F: Filter>() -> bool {
    fsfilter::sending_channel::<F>().is_some() || fsfilter::queries_processes::<F>()
}

/// `FsContext2` of a control-device file object that is a connected client.
const CONNECTED: usize = 1;

/// The connection state of a control-device file object (its `FsContext2`), `None` for no file
/// object.
///
/// # Safety
/// `file` is null or a live file object opened on this driver's control device (whose create
/// this driver completed), alive for `'a`.
unsafe fn connection<'a>(file: *mut FILE_OBJECT) -> Option<&'a AtomicUsize> {
    if file.is_null() {
        return None;
    }
    // SAFETY: a live file object (the caller's contract): the projection stays in it.
    let field = unsafe { &raw mut (*file).FsContext2 }.cast::<usize>();
    // SAFETY: FsContext2 is a pointer-sized, pointer-aligned field that only this driver uses
    // for its own device's file objects, accessed only atomically here, alive for 'a.
    Some(unsafe { AtomicUsize::from_ptr(field) })
}

/// The size of the control device's extension: a [`ControlExt`] with a channel, a `DeviceExt`
/// without.
pub(crate) const fn control_ext_size<F: Filter>() -> u32 {
    match F::MESSAGES {
        Some(_) => core::mem::size_of::<ControlExt<F>>() as u32,
        None => core::mem::size_of::<DeviceExt<F>>() as u32,
    }
}

/// Writes `\DosDevices\<name>` into `out`; returns its length.
fn link_name(channel: MessageChannel, out: &mut [u16; LINK_CAPACITY]) -> usize {
    let mut n = 0;
    for u in LINK_PREFIX.iter().copied().chain(channel.name.bytes().map(u16::from)) {
        let Some(slot) = out.get_mut(n) else { break };
        *slot = u;
        n += 1;
    }
    n
}

/// Links `\DosDevices\<name>` to the control device `control_name`.
///
/// # Safety
/// `PASSIVE_LEVEL`, from `DriverEntry`, after the control device was created.
pub(crate) unsafe fn create_link(
    channel: MessageChannel,
    control_name: &UNICODE_STRING,
) -> NTSTATUS {
    let mut units = [0u16; LINK_CAPACITY];
    let len = link_name(channel, &mut units);
    let link = unicode::unicode_string(units.get(..len).unwrap_or(&[]));
    // SAFETY: two valid names; the object manager copies them.
    unsafe { IoCreateSymbolicLink(&link, control_name) }
}

/// Deletes the link [`create_link`] made.
///
/// # Safety
/// `PASSIVE_LEVEL`; the link exists (made by this driver's `DriverEntry`).
pub(crate) unsafe fn delete_link(channel: MessageChannel) {
    let mut units = [0u16; LINK_CAPACITY];
    let len = link_name(channel, &mut units);
    let link = unicode::unicode_string(units.get(..len).unwrap_or(&[]));
    // SAFETY: a valid name. A failure (the link already gone) leaves nothing to undo.
    let _ = unsafe { IoDeleteSymbolicLink(&link) };
}

/// Initializes the channel part of the control device's extension.
///
/// # Safety
/// `control` is this driver's control device, created with [`control_ext_size`], for a filter
/// with a channel; called once, before the device can receive requests.
#[expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "a raw field projection and its write are one operation"
)]
pub(crate) unsafe fn init_control<F: Filter>(control: *mut DEVICE_OBJECT) {
    // SAFETY: a live device of ours (the caller's contract).
    let ext = unsafe { crate::raw::device(control) }.DeviceExtension.cast::<ControlExt<F>>();
    // SAFETY: the extension is large enough for a ControlExt<F> (created with that size).
    unsafe { (&raw mut (*ext).clients).write(AtomicU32::new(0)) };
    if keeps_records::<F>() {
        // SAFETY: as above.
        unsafe { (&raw mut (*ext).records).write(SpinLock::new(crate::send::Clients::new())) };
    }
}

/// The dispatch routine of the control device of a filter with a channel.
///
/// # Safety
/// `device` is this driver's control device (its extension a [`ControlExt`]) and `irp` a live IRP
/// sent to it, which this routine completes.
pub(crate) unsafe fn dispatch<F: Filter>(
    state: &DriverState<F>,
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
    channel: MessageChannel,
) -> NTSTATUS {
    // SAFETY: our live control device (the caller's contract).
    let ext = unsafe { crate::raw::device(device) }.DeviceExtension.cast::<ControlExt<F>>();
    // SAFETY: created for a ControlExt<F>, initialized in DriverEntry (the caller's contract).
    let control = unsafe { &*ext };
    // SAFETY: the I/O manager's live IRP.
    let sl = unsafe { crate::raw::location(irp) };
    let client = ClientId(sl.FileObject as usize);
    let io = match fsfilter::MajorFunction::from_code(sl.MajorFunction) {
        fsfilter::MajorFunction::Create => {
            // SAFETY: a create at our control device.
            IoStatus::new(match unsafe { connect(state, control, irp, sl, client, channel) } {
                Ok(()) => Status::SUCCESS,
                Err(e) => e.status(),
            })
        }
        fsfilter::MajorFunction::Cleanup => {
            // SAFETY: the cleanup's file object, opened on our control device.
            let state_of = unsafe { connection(sl.FileObject) };
            // Only a connected client disconnects, once.
            if state_of.is_some_and(|c| c.swap(0, Ordering::AcqRel) == CONNECTED) {
                if keeps_records::<F>() {
                    // Its senders woken and its gets cancelled before the filter hears of it.
                    crate::send::disconnect(control, client);
                }
                state.filter.client_disconnect(client);
                control.clients.fetch_sub(1, Ordering::AcqRel);
            }
            IoStatus::new(Status::SUCCESS)
        }
        fsfilter::MajorFunction::Close => IoStatus::new(Status::SUCCESS),
        fsfilter::MajorFunction::DeviceControl => {
            // SAFETY: the DeviceIoControl member, the one a device control selects.
            let code = unsafe { params::io::<IoDeviceIoControl>(&sl.Parameters) }.IoControlCode;
            if fsfilter::sending_channel::<F>().is_some()
                && (code == fsfilter::IOCTL_FSFILTER_GET_MESSAGE
                    || code == fsfilter::IOCTL_FSFILTER_REPLY_MESSAGE)
            {
                // SAFETY: the request's file object (or null), on our control device.
                let connected = unsafe { connection(sl.FileObject) }
                    .is_some_and(|c| c.load(Ordering::Acquire) == CONNECTED);
                if !connected {
                    // SAFETY: a live IRP we own, completed once.
                    return unsafe { complete(irp, IoStatus::new(Status::INVALID_DEVICE_STATE)) };
                }
                if code == fsfilter::IOCTL_FSFILTER_GET_MESSAGE {
                    // SAFETY: a device control at our control device from a connected client;
                    // completed or queued there.
                    return unsafe { crate::send::get(control, irp, client) };
                }
                // SAFETY: as above.
                let status = unsafe { crate::send::reply(control, irp, sl, client) };
                // SAFETY: a live IRP we own, completed once.
                return unsafe { complete(irp, IoStatus::new(status)) };
            }
            // SAFETY: a device control at our control device.
            match unsafe { message(state, irp, sl, client, channel) } {
                Ok(n) => IoStatus { status: Status::SUCCESS, information: n },
                Err(e) => IoStatus::new(e.status()),
            }
        }
        _ => IoStatus::new(Status::INVALID_DEVICE_REQUEST),
    };
    // SAFETY: a live IRP we own, completed once.
    unsafe { complete(irp, io) }
}

/// A create: counts the client, reads the context, asks the filter.
///
/// # Safety
/// `irp` is a live create at our control device and `sl` its current location.
unsafe fn connect<F: Filter>(
    state: &DriverState<F>,
    control: &ControlExt<F>,
    irp: *mut IRP,
    sl: &IO_STACK_LOCATION,
    client: ClientId,
    channel: MessageChannel,
) -> Result<(), Error> {
    // SAFETY: the Create member, the one a create selects.
    let create = unsafe { params::io::<IoCreate>(&sl.Parameters) };
    // SAFETY: a create's live IRP and its parameters.
    if !unsafe { caller_is_admin(irp, create) } {
        return Err(Error::ACCESS_DENIED);
    }
    let ea_len = create.EaLength as usize;
    // SAFETY: the I/O manager's live IRP; for a create, SystemBuffer holds the captured EA
    // buffer (`ea_len` bytes) when there is one.
    let buffer = unsafe { system_buffer(irp) };
    let eas: &[u8] = if buffer.is_null() || ea_len == 0 {
        &[]
    } else {
        // SAFETY: as above: a kernel buffer of `ea_len` bytes for the create's duration.
        unsafe { core::slice::from_raw_parts(buffer, ea_len) }
    };
    let context = first_ea_value(eas).ok_or(Error::INVALID_PARAMETER)?;
    if context.len() > channel.max_len() {
        return Err(Error::INVALID_PARAMETER);
    }
    let max = channel.max_clients;
    let counted = control
        .clients
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
    if counted.is_err() {
        return Err(Error::CONNECTION_COUNT_LIMIT);
    }
    let sends = keeps_records::<F>();
    let process = if fsfilter::queries_processes::<F>() {
        // SAFETY: the create's live IRP: its thread is the connecting one.
        unsafe { IoGetRequestorProcessId(irp) }
    } else {
        0
    };
    if sends && let Err(e) = crate::send::connect(control, client, process) {
        control.clients.fetch_sub(1, Ordering::AcqRel);
        return Err(e);
    }
    if let Err(e) = state.filter.client_connect(client, context) {
        // Refused: no cleanup will come for this file object.
        if sends {
            crate::send::disconnect(control, client);
        }
        control.clients.fetch_sub(1, Ordering::AcqRel);
        return Err(e);
    }
    // SAFETY: the create's file object, opened on our control device.
    if let Some(c) = unsafe { connection(sl.FileObject) } {
        c.store(CONNECTED, Ordering::Release);
    }
    Ok(())
}

/// Whether a create comes from kernel mode or from a caller whose token holds the
/// Administrators group: `SeTokenIsAdmin` on the token `SeQuerySubjectContextToken` would pick
/// (a macro: the subject context's `ClientToken` when there is one, else its `PrimaryToken`).
///
/// # Safety
/// `irp` is a live create at `PASSIVE_LEVEL` and `create` its parameters.
unsafe fn caller_is_admin(irp: *mut IRP, create: &IoCreate) -> bool {
    // SAFETY: the caller's live IRP.
    if unsafe { (*irp).RequestorMode } == 0 {
        return true;
    }
    // SAFETY: null or the create's IO_SECURITY_CONTEXT, alive for the create.
    let Some(security) = (unsafe { create.SecurityContext.as_ref() }) else { return false };
    // SAFETY: null or the create's ACCESS_STATE, alive for the create.
    let Some(state) = (unsafe { security.AccessState.as_ref() }) else { return false };
    let subject = &state.SubjectSecurityContext;
    let token =
        if subject.ClientToken.is_null() { subject.PrimaryToken } else { subject.ClientToken };
    if token.is_null() {
        return false;
    }
    // SAFETY: a token of the create's subject context, referenced for the create; a create's
    // dispatch runs at PASSIVE_LEVEL.
    unsafe { SeTokenIsAdmin(token) }
}

/// `Irp->AssociatedIrp.SystemBuffer`.
///
/// # Safety
/// `irp` is a live IRP.
pub(crate) unsafe fn system_buffer(irp: *mut IRP) -> *mut u8 {
    // SAFETY: the caller's live IRP.
    let associated = unsafe { &(*irp).AssociatedIrp };
    // SAFETY: every member of the union is a pointer; SystemBuffer is the one buffered I/O and
    // creates with extended attributes use.
    unsafe { associated.SystemBuffer }.cast()
}

/// The value of the first `FILE_FULL_EA_INFORMATION` entry of `eas`: empty for no buffer, `None`
/// for an entry that does not fit (`NextEntryOffset` u32, `Flags` u8, `EaNameLength` u8,
/// `EaValueLength` u16, then the name, its NUL, and the value).
fn first_ea_value(eas: &[u8]) -> Option<&[u8]> {
    if eas.is_empty() {
        return Some(&[]);
    }
    let name_len = usize::from(*eas.get(5)?);
    let value_len = usize::from(u16::from_le_bytes([*eas.get(6)?, *eas.get(7)?]));
    let start = 8 + name_len + 1;
    eas.get(start..start.checked_add(value_len)?)
}

/// A message: copies the input out of the system buffer, lets the filter write its reply there.
/// The reply's length on success (the I/O manager copies that many bytes to the caller).
///
/// # Safety
/// `irp` is a live device control at our control device and `sl` its current location.
unsafe fn message<F: Filter>(
    state: &DriverState<F>,
    irp: *mut IRP,
    sl: &IO_STACK_LOCATION,
    client: ClientId,
    channel: MessageChannel,
) -> Result<usize, Error> {
    // SAFETY: the DeviceIoControl member, the one a device control selects.
    let p = unsafe { params::io::<IoDeviceIoControl>(&sl.Parameters) };
    if p.IoControlCode != fsfilter::IOCTL_FSFILTER_MESSAGE {
        return Err(Error::INVALID_DEVICE_REQUEST);
    }
    // SAFETY: the request's file object (or null), on our control device.
    let connected = unsafe { connection(sl.FileObject) }
        .is_some_and(|c| c.load(Ordering::Acquire) == CONNECTED);
    if !connected {
        return Err(Error::INVALID_DEVICE_STATE);
    }
    let input_len = p.InputBufferLength as usize;
    let output_len = p.OutputBufferLength as usize;
    if input_len > channel.max_len() {
        return Err(Error::INVALID_PARAMETER);
    }
    let capacity = output_len.min(channel.max_len());
    // SAFETY: the I/O manager's live IRP; METHOD_BUFFERED: SystemBuffer is a kernel buffer of
    // max(input, output) bytes, null when both are zero.
    let buffer = unsafe { system_buffer(irp) };
    let size = input_len.max(output_len);
    let system: &mut [u8] = if buffer.is_null() || size == 0 {
        &mut []
    } else {
        // SAFETY: as above, ours until the IRP completes.
        unsafe { core::slice::from_raw_parts_mut(buffer, size) }
    };
    let mut input = PoolBytes::try_zeroed(input_len, MESSAGE_TAG)?;
    let sent = system.get(..input_len).ok_or(Error::INVALID_PARAMETER)?;
    // Element by element: `copy_from_slice` would keep a length-mismatch panic the compiler
    // cannot rule out (the pool buffer's length is not visible to it).
    input.iter_mut().zip(sent).for_each(|(d, s)| *d = *s);
    let reply = system.get_mut(..capacity).ok_or(Error::INVALID_PARAMETER)?;
    // The reply starts empty, as the minifilter model's does (the input is in the same buffer).
    reply.fill(0);
    let n = state.filter.message(client, &input, reply)?;
    Ok(n.min(capacity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_the_first_extended_attributes_value() {
        assert_eq!(first_ea_value(&[]), Some(&[][..]));
        // NextEntryOffset 0, Flags 0, EaNameLength 3, EaValueLength 4, "CTX\0", "abcd".
        let ea = [0, 0, 0, 0, 0, 3, 4, 0, b'C', b'T', b'X', 0, b'a', b'b', b'c', b'd'];
        assert_eq!(first_ea_value(&ea), Some(&b"abcd"[..]));
        assert_eq!(first_ea_value(&ea[..15]), None, "a value cut short");
        assert_eq!(first_ea_value(&ea[..6]), None, "a header cut short");
    }

    #[test]
    fn links_are_named_under_dos_devices() {
        let mut units = [0u16; LINK_CAPACITY];
        let len = link_name(MessageChannel::new("FsFilterSpy"), &mut units);
        assert!(units[..len].iter().copied().eq("\\DosDevices\\FsFilterSpy".encode_utf16()));
        assert_eq!(LINK_PREFIX.len(), 12);
    }
}
