//! The message channel in the minifilter model: a Filter Manager communication port
//! (`FltCreateCommunicationPort`), built only for a filter that declares [`Filter::MESSAGES`].
//!
//! - `DriverEntry` opens the server port `\<name>` after `FltRegisterFilter` and before
//!   `FltStartFiltering`, with the default security descriptor (`FltBuildDefaultSecurityDescriptor`
//!   with `FLT_PORT_ALL_ACCESS`: the system and administrators only, freed once the port has it),
//!   `OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE` (Learn, `FltCreateCommunicationPort`: the
//!   attributes must include `OBJ_KERNEL_HANDLE`) and `MaxConnections` = `max_clients`.
//! - Connect: for a filter that only answers, the client port is the client's [`ClientId`] and
//!   its connection cookie, kept for `FltCloseClientPort`. For a filter that sends
//!   ([`fsfilter::MessageChannel::sends_messages`]) or asks for processes
//!   ([`Filter::PROCESS_QUERIES`]: the record holds `PsGetCurrentProcessId` of the connecting
//!   thread, rule 26), the backend keeps the client port in a [`Connection`] record (non-paged
//!   pool, the connection cookie, listed in the driver state), whose address is the client's
//!   [`ClientId`] (the message callback needs no access to it) and whose `port` is the variable
//!   `FltSendMessage` and `FltCloseClientPort` are given: the Filter Manager takes the port out
//!   of it under its own lock when it closes, so a send racing with the close sees either the
//!   port or a closed connection (`STATUS_PORT_DISCONNECTED`). The connection context is the
//!   Filter Manager's kernel copy of what `FilterConnectCommunicationPort` passed.
//! - Disconnect: the record stops being found, `client_disconnect`, then `FltCloseClientPort`
//!   (Learn, `PFLT_CONNECT_NOTIFY`: the minifilter must close the client port, "typically from
//!   its DisconnectNotifyCallback"); the record is freed by whoever leaves it last, the
//!   disconnect or a sender still inside `FltSendMessage` (rule 25).
//! - Send ([`send`], `Services::send_message`): `FltSendMessage` with the record's port variable,
//!   a relative timeout (`-ms * 10,000` in 100 ns units) or none, the message and the reply's
//!   space copied into one non-paged pool buffer (never the filter's own buffers).
//! - Message: the input and output buffers are the caller's raw user buffers (Learn,
//!   `PFLT_MESSAGE_NOTIFY`): they are copied into and out of kernel buffers from pool with the
//!   guarded copies of `fsfilter_kernel::usercopy`; the filter sees kernel memory only.
//! - Unload and `DriverEntry`'s failure paths close the server port before `FltUnregisterFilter`.

use core::ffi::c_void;

use fsfilter::{
    ClientId, Error, Filter, Irql, MAX_CHANNEL_NAME, MessageChannel, MessageSent, Status,
};
use fsfilter_kernel::constants::FLT_PORT_ALL_ACCESS;
use fsfilter_kernel::pool::{PoolBox, PoolBytes, pool_tag};
use fsfilter_kernel::{unicode, usercopy};
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort,
    FltCreateCommunicationPort, FltFreeSecurityDescriptor, FltSendMessage, PFLT_FILTER, PFLT_PORT,
};
use windows_sys::Wdk::System::SystemServices::PsGetCurrentProcessId;
use windows_sys::Win32::Foundation::{NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE};

use crate::state::DriverState;

/// Pool tag of message buffers: `FsfP`.
const MESSAGE_TAG: u32 = pool_tag(b"FsfP");
/// Pool tag of connection records: `FsfM`.
const CONNECTION_TAG: u32 = pool_tag(b"FsfM");

/// A connection's record is found by senders.
const OPEN: u8 = 0;
/// Its disconnect runs: no new sender finds it.
const CLOSING: u8 = 1;
/// Its client port is closed: the last sender frees it.
const CLOSED: u8 = 2;

/// One connected client (non-paged pool; the connection cookie).
pub(crate) struct Connection {
    next: *mut Connection,
    /// The variable holding the client port, which the Filter Manager reads in `FltSendMessage`
    /// and clears in `FltCloseClientPort`; this backend never touches it after the connect.
    port: PFLT_PORT,
    /// [`OPEN`], [`CLOSING`] or [`CLOSED`], under the list's lock.
    stage: u8,
    /// Senders inside `FltSendMessage` with this record, under the list's lock.
    senders: u32,
    /// The connecting process (`PsGetCurrentProcessId` in the connect callback, which runs in
    /// the connecting thread); 0 for a filter that does not ask for processes (rule 26).
    process: u32,
}

/// The connected clients, under the driver state's spin lock. All zeroes is the empty list (the
/// driver state is allocated zeroed).
pub(crate) struct Connections {
    head: *mut Connection,
}

// SAFETY: the records are pool memory reached only under the lock that guards this value.
unsafe impl Send for Connections {}

impl Connections {
    /// Takes `record` out of the list.
    fn unlink(&mut self, record: *mut Connection) {
        if self.head == record {
            // SAFETY: a live record of the list (under the lock).
            self.head = unsafe { (*record).next };
            return;
        }
        let mut r = self.head;
        // SAFETY: live records of the list (under the lock).
        while let Some(x) = unsafe { r.as_mut() } {
            if x.next == record {
                // SAFETY: as above.
                x.next = unsafe { (*record).next };
                return;
            }
            r = x.next;
        }
    }
}

/// Whether the backend keeps a [`Connection`] record per client: for a filter that sends (the
/// port `FltSendMessage` is given) or that asks for its clients' processes (rule 26).
fn keeps_records<F: Filter>() -> bool {
    fsfilter::sending_channel::<F>().is_some() || fsfilter::queries_processes::<F>()
}

/// [`fsfilter::Services::client_process`] in the minifilter model: the process its record holds.
pub(crate) fn client_process<F: Filter>(
    driver: &DriverState<F>,
    client: ClientId,
) -> Option<fsfilter::ProcessId> {
    if !keeps_records::<F>() {
        return None;
    }
    let list = driver.connections.lock();
    let mut r = list.head;
    // SAFETY: live records of the list (under the lock).
    while let Some(x) = unsafe { r.as_ref() } {
        if core::ptr::from_ref(x) as usize == client.0 && x.stage == OPEN {
            return (x.process != 0).then_some(fsfilter::ProcessId(x.process));
        }
        r = x.next;
    }
    None
}

/// Drops a sender's hold on `record`, freeing it when the port is closed and no sender is left.
fn release<F: Filter>(driver: &DriverState<F>, record: *mut Connection) {
    let mut list = driver.connections.lock();
    // SAFETY: a live record the caller holds (under the lock).
    let r = unsafe { &mut *record };
    r.senders = r.senders.saturating_sub(1);
    let free = r.senders == 0 && r.stage == CLOSED;
    if free {
        list.unlink(record);
    }
    drop(list);
    if free {
        // SAFETY: unlinked, held by nobody: freed once.
        drop(unsafe { PoolBox::from_raw(record, CONNECTION_TAG) });
    }
}

/// [`fsfilter::Services::send_message`] in the minifilter model: `FltSendMessage`.
pub(crate) fn send<F: Filter>(
    driver: &DriverState<F>,
    channel: MessageChannel,
    client: ClientId,
    message: &[u8],
    reply: Option<&mut [u8]>,
    timeout_ms: Option<u32>,
) -> Result<MessageSent, Error> {
    if fsfilter_kernel::irql::current() > Irql::APC {
        return Err(Error::INVALID_DEVICE_STATE);
    }
    let capacity = reply.as_ref().map(|r| r.len());
    channel.check_send(message.len(), capacity, timeout_ms)?;
    // The message and the reply's space in non-paged pool, never the caller's buffers: the
    // filter's may be on its stack, and a sender waiting in FltSendMessage can be interrupted
    // (Learn lists STATUS_THREAD_IS_TERMINATING), so its wait is not one that pins the kernel
    // stack, while the replier's thread writes the reply (rule 25: the filter's buffers may be
    // anywhere). Microsoft's scanner sample sends from pool too.
    let cap = capacity.unwrap_or(0);
    let mut space = PoolBytes::try_zeroed(message.len() + cap, MESSAGE_TAG)?;
    let Some((sent, answer)) = space.split_at_mut_checked(message.len()) else {
        return Err(Error::INSUFFICIENT_RESOURCES);
    };
    sent.iter_mut().zip(message).for_each(|(d, s)| *d = *s);
    let record = {
        let list = driver.connections.lock();
        let mut r = list.head;
        // SAFETY: live records of the list (under the lock).
        while let Some(x) = unsafe { r.as_mut() } {
            if core::ptr::from_mut(x) as usize == client.0 && x.stage == OPEN {
                x.senders += 1;
                break;
            }
            r = x.next;
        }
        r
    };
    if record.is_null() {
        return Err(Error::PORT_DISCONNECTED);
    }
    let timeout = timeout_ms.map(|ms| -i64::from(ms) * 10_000);
    let timeout_ptr = timeout.as_ref().map_or(core::ptr::null(), |t| t as *const i64);
    let mut reply_len = cap as u32;
    let (reply_ptr, reply_len_ptr) = match capacity {
        Some(_) => (answer.as_mut_ptr().cast::<c_void>(), &raw mut reply_len),
        None => (core::ptr::null_mut(), core::ptr::null_mut()),
    };
    // SAFETY: the record we hold: the projection stays in it.
    let port = unsafe { &raw const (*record).port };
    // SAFETY: our registered filter; the record's port variable, alive while we hold it; the
    // pool message and reply space of those lengths; IRQL at most APC_LEVEL (checked above).
    let status = Status(unsafe {
        FltSendMessage(
            driver.handle,
            port,
            sent.as_ptr().cast(),
            sent.len() as u32,
            reply_ptr,
            reply_len_ptr,
            timeout_ptr,
        )
    });
    release(driver, record);
    let got = match status {
        Status::TIMEOUT => return Ok(MessageSent::TimedOut),
        // A reply longer than the buffer: the buffer holds its start (rule 25).
        Status::BUFFER_OVERFLOW => cap,
        s => match Error::new(s) {
            Some(e) => return Err(e),
            None => (reply_len as usize).min(cap),
        },
    };
    if let Some(reply) = reply {
        reply.iter_mut().zip(answer.iter()).take(got).for_each(|(d, s)| *d = *s);
    }
    Ok(MessageSent::Delivered(got))
}

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
    if !keeps_records::<F>() {
        // A filter that only answers: the client port is the id and the cookie.
        let client = ClientId(client_port as usize);
        if let Err(e) = driver.filter.client_connect(client, context) {
            return e.status().0;
        }
        // SAFETY: the Filter Manager's out parameter.
        unsafe { *connection_cookie = client_port as *mut c_void };
        return Status::SUCCESS.0;
    }
    let process = if fsfilter::queries_processes::<F>() {
        // SAFETY: no precondition; the connect callback runs in the connecting thread (Learn,
        // `PFLT_CONNECT_NOTIFY`), so the current process is the client's.
        (unsafe { PsGetCurrentProcessId() }) as usize as u32
    } else {
        0
    };
    let next = core::ptr::null_mut();
    let record = Connection { next, port: client_port, stage: OPEN, senders: 0, process };
    let record = match PoolBox::try_new(record, CONNECTION_TAG) {
        Ok(r) => r,
        Err(e) => return e.status().0,
    };
    let client = ClientId(record.as_ptr() as usize);
    if let Err(e) = driver.filter.client_connect(client, context) {
        return e.status().0;
    }
    let record = record.into_raw();
    let mut list = driver.connections.lock();
    // SAFETY: our fresh record, linked at the head.
    unsafe { (*record).next = list.head };
    list.head = record;
    drop(list);
    // SAFETY: the Filter Manager's out parameter.
    unsafe { *connection_cookie = record.cast() };
    Status::SUCCESS.0
}

/// `DisconnectNotifyCallback`: the client's handle closed (or the filter is unregistering).
unsafe extern "system" fn disconnect<F: Filter>(cookie: *const c_void) {
    // SAFETY: this image's state (as in `connect`).
    let Some(driver) = (unsafe { DriverState::<F>::current() }) else { return };
    if !keeps_records::<F>() {
        driver.filter.client_disconnect(ClientId(cookie as usize));
        let mut port = cookie as PFLT_PORT;
        // SAFETY: the client port `connect` accepted and kept as the cookie, closed once here.
        unsafe { FltCloseClientPort(driver.handle, &mut port) };
        return;
    }
    let record = cookie.cast_mut().cast::<Connection>();
    {
        let _list = driver.connections.lock();
        // SAFETY: as above, under the lock.
        unsafe { (*record).stage = CLOSING };
    }
    driver.filter.client_disconnect(ClientId(record as usize));
    // SAFETY: the live record: the projection stays in it.
    let port = unsafe { &raw mut (*record).port };
    // SAFETY: the record's port variable, holding the client port `connect` accepted, closed
    // once here; senders inside FltSendMessage with it are ended by the Filter Manager.
    unsafe { FltCloseClientPort(driver.handle, port) };
    let free = {
        let mut list = driver.connections.lock();
        // SAFETY: as above, under the lock.
        let r = unsafe { &mut *record };
        r.stage = CLOSED;
        let free = r.senders == 0;
        if free {
            list.unlink(record);
        }
        free
    };
    if free {
        // SAFETY: unlinked, held by nobody: freed once.
        drop(unsafe { PoolBox::from_raw(record, CONNECTION_TAG) });
    }
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
    // The cookie is the client's id: the connection's record (a filter that sends) or the
    // client port.
    let id = cookie as usize;
    // SAFETY: the Filter Manager's arguments: user buffers of those lengths.
    match unsafe { exchange(driver, channel, id, input, input_len, output, output_len) } {
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
    id: usize,
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
    let n = driver.filter.message(ClientId(id), &kernel_in, &mut reply)?;
    let reply = reply.get(..n.min(capacity)).unwrap_or(&[]);
    // SAFETY: the sender's output buffer, at least `capacity` bytes; faults are caught.
    unsafe { usercopy::copy_to_user(output.cast(), reply) }?;
    Ok(reply.len() as u32)
}
