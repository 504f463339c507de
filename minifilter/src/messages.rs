//! The message channel in the minifilter model: a Filter Manager communication port
//! (`FltCreateCommunicationPort`), built only for a filter that declares [`Filter::MESSAGES`].
//!
//! - `DriverEntry` opens the server port `\<name>` after `FltRegisterFilter` and before
//!   `FltStartFiltering`, with the default security descriptor (`FltBuildDefaultSecurityDescriptor`
//!   with `FLT_PORT_ALL_ACCESS`: the system and administrators only, freed once the port has it),
//!   `OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE` (Learn, `FltCreateCommunicationPort`: the
//!   attributes must include `OBJ_KERNEL_HANDLE`) and `MaxConnections` = `max_clients`.
//! - Connect: the client port is the client's [`ClientId`] and its connection cookie, kept for
//!   `FltCloseClientPort`. The connection context is the Filter Manager's kernel copy of what
//!   `FilterConnectCommunicationPort` passed.
//! - Disconnect: `client_disconnect`, then `FltCloseClientPort` (Learn, `PFLT_CONNECT_NOTIFY`: the
//!   minifilter must close the client port, "typically from its DisconnectNotifyCallback").
//! - Message: the input and output buffers are the caller's raw user buffers (Learn,
//!   `PFLT_MESSAGE_NOTIFY`): they are copied into and out of kernel buffers from pool with the
//!   guarded copies of `fsfilter_kernel::usercopy`; the filter sees kernel memory only.
//! - Unload and `DriverEntry`'s failure paths close the server port before `FltUnregisterFilter`.

use core::ffi::c_void;

use fsfilter::{ClientId, Error, Filter, MAX_CHANNEL_NAME, MessageChannel, Status};
use fsfilter_kernel::constants::FLT_PORT_ALL_ACCESS;
use fsfilter_kernel::pool::{PoolBytes, pool_tag};
use fsfilter_kernel::{unicode, usercopy};
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort,
    FltCreateCommunicationPort, FltFreeSecurityDescriptor, PFLT_FILTER, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE};

use crate::state::DriverState;

/// Pool tag of message buffers: `FsfP`.
const MESSAGE_TAG: u32 = pool_tag(b"FsfP");

/// Opens the server port of `channel` for the registered filter `filter`; its handle goes to
/// `port`.
///
/// # Safety
/// `filter` is this driver's registered filter, at `PASSIVE_LEVEL`, from `DriverEntry`; the
/// driver state is published (the callbacks may run as soon as the port exists).
pub(crate) unsafe fn open<F: Filter>(
    filter: PFLT_FILTER,
    channel: MessageChannel,
    port: &mut PFLT_PORT,
) -> NTSTATUS {
    // `\<name>`: the name is 1 to 64 printable ASCII characters (checked at compile time).
    let mut units = [0u16; 1 + MAX_CHANNEL_NAME];
    let mut len = 0;
    for u in core::iter::once(u16::from(b'\\')).chain(channel.name.bytes().map(u16::from)) {
        let Some(slot) = units.get_mut(len) else { break };
        *slot = u;
        len += 1;
    }
    let name = unicode::unicode_string(units.get(..len).unwrap_or(&[]));
    let mut descriptor: *mut c_void = core::ptr::null_mut();
    // SAFETY: a valid out pointer; PASSIVE_LEVEL.
    let status = unsafe { FltBuildDefaultSecurityDescriptor(&mut descriptor, FLT_PORT_ALL_ACCESS) };
    if status < 0 {
        return status;
    }
    let attributes = OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: &name,
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: descriptor.cast_const().cast(),
        SecurityQualityOfService: core::ptr::null(),
    };
    let max = i32::try_from(channel.max_clients).unwrap_or(i32::MAX);
    // SAFETY: our registered filter, valid attributes whose name and descriptor outlive the call,
    // and callbacks of this image; the server cookie is unused (one port per driver).
    let status = unsafe {
        FltCreateCommunicationPort(
            filter,
            port,
            &attributes,
            core::ptr::null(),
            Some(connect::<F>),
            Some(disconnect::<F>),
            Some(message::<F>),
            max,
        )
    };
    // SAFETY: the descriptor FltBuildDefaultSecurityDescriptor made; the port keeps its own copy.
    unsafe { FltFreeSecurityDescriptor(descriptor) };
    status
}

/// Closes the server port, if open: no new client can connect; connected ones stay until they
/// close their handle or the filter unregisters.
///
/// # Safety
/// `port` is 0 or the server port [`open`] made, closed once.
pub(crate) unsafe fn close(port: PFLT_PORT) {
    if port != 0 {
        // SAFETY: the caller's contract.
        unsafe { FltCloseCommunicationPort(port) };
    }
}

/// `ConnectNotifyCallback`: a client connects; the filter decides.
unsafe extern "system" fn connect<F: Filter>(
    client_port: PFLT_PORT,
    _server_cookie: *const c_void,
    context: *const c_void,
    context_len: u32,
    connection_cookie: *mut *mut c_void,
) -> NTSTATUS {
    // SAFETY: this image's state: the port is closed before the state goes.
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else {
        return Status::INVALID_DEVICE_STATE.0;
    };
    let Some(channel) = fsfilter::message_channel::<F>() else {
        return Status::INVALID_DEVICE_REQUEST.0;
    };
    let len = context_len as usize;
    if len > channel.max_len() {
        return Status::INVALID_PARAMETER.0;
    }
    let context: &[u8] = if context.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the Filter Manager's kernel copy of the caller's context (it came in the
        // create's EA buffer, which the I/O manager captured), valid for the callback.
        unsafe { core::slice::from_raw_parts(context.cast::<u8>(), len) }
    };
    let client = ClientId(client_port as usize);
    if let Err(e) = driver.filter.client_connect(client, context) {
        return e.status().0;
    }
    // SAFETY: the Filter Manager's out parameter.
    unsafe { *connection_cookie = client_port as *mut c_void };
    Status::SUCCESS.0
}

/// `DisconnectNotifyCallback`: the client's handle closed (or the filter is unregistering).
unsafe extern "system" fn disconnect<F: Filter>(cookie: *const c_void) {
    // SAFETY: this image's state (as in `connect`).
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return };
    driver.filter.client_disconnect(ClientId(cookie as usize));
    let mut port = cookie as PFLT_PORT;
    // SAFETY: the client port `connect` accepted and kept as the cookie, closed once here.
    unsafe { FltCloseClientPort(driver.handle, &mut port) };
}

/// `MessageNotifyCallback`: copies the message in, asks the filter, copies the reply out.
unsafe extern "system" fn message<F: Filter>(
    cookie: *const c_void,
    input: *const c_void,
    input_len: u32,
    output: *mut c_void,
    output_len: u32,
    returned: *mut u32,
) -> NTSTATUS {
    // SAFETY: this image's state (as in `connect`).
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else {
        return Status::INVALID_DEVICE_STATE.0;
    };
    let Some(channel) = fsfilter::message_channel::<F>() else {
        return Status::INVALID_DEVICE_REQUEST.0;
    };
    // SAFETY: the Filter Manager's arguments: user buffers of those lengths.
    match unsafe { exchange(driver, channel, cookie, input, input_len, output, output_len) } {
        Ok(n) => {
            if !returned.is_null() {
                // SAFETY: the Filter Manager's out parameter (kernel memory).
                unsafe { *returned = n };
            }
            Status::SUCCESS.0
        }
        Err(e) => e.status().0,
    }
}

/// The body of [`message`]: the reply's length, or the error for the client.
///
/// # Safety
/// `input` and `output` are the sender's user buffers of `input_len` and `output_len` bytes
/// (possibly invalid: the copies are guarded), in the sender's context.
unsafe fn exchange<F: Filter>(
    driver: &DriverState<F>,
    channel: MessageChannel,
    cookie: *const c_void,
    input: *const c_void,
    input_len: u32,
    output: *mut c_void,
    output_len: u32,
) -> Result<u32, Error> {
    let input_len = input_len as usize;
    if input_len > channel.max_len() || (input.is_null() && input_len != 0) {
        return Err(Error::INVALID_PARAMETER);
    }
    let capacity = if output.is_null() { 0 } else { (output_len as usize).min(channel.max_len()) };
    let mut kernel_in = PoolBytes::try_zeroed(input_len, MESSAGE_TAG)?;
    // SAFETY: the sender's buffer of `input_len` bytes, in its context; faults are caught.
    unsafe { usercopy::copy_from_user(&mut kernel_in, input.cast()) }?;
    let mut reply = PoolBytes::try_zeroed(capacity, MESSAGE_TAG)?;
    let n = driver.filter.message(ClientId(cookie as usize), &kernel_in, &mut reply)?;
    let reply = reply.get(..n.min(capacity)).unwrap_or(&[]);
    // SAFETY: the sender's output buffer, at least `capacity` bytes; faults are caught.
    unsafe { usercopy::copy_to_user(output.cast(), reply) }?;
    Ok(reply.len() as u32)
}
