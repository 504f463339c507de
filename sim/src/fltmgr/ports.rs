//! Communication ports (docs/simulator.md, "Communication ports and control devices"): the
//! server ports minifilters create (`FltCreateCommunicationPort`), the connections user mode
//! makes to them (`FilterConnectCommunicationPort`), the messages it sends
//! (`FilterSendMessage`), the messages filters send (`FltSendMessage`) and the user's gets and
//! replies (`FilterGetMessage`, `FilterReplyMessage`), and the ends of connections
//! (`CloseHandle` on the user's port, `FltCloseClientPort`, the filter's unregistration).
//!
//! On Windows the user-mode library opens the Filter Manager's message device
//! (`\FileSystem\Filters\FltMgrMsg`, ReactOS' Messaging.c names it) with the port's name and the
//! connection context in the create's extended attributes, and the Filter Manager calls the
//! filter's callbacks from that device's dispatch routines, in the caller's thread. No filter
//! sees those requests; the simulator calls the callbacks directly, in the caller's thread at
//! `PASSIVE_LEVEL` with the filter's image running.

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    PFLT_CONNECT_NOTIFY, PFLT_DISCONNECT_NOTIFY, PFLT_MESSAGE_NOTIFY,
};

use super::{FilterId, FilterState};
use crate::events::Rule;
use crate::ids::ImageId;
use crate::kernel::{self, Kernel};
use crate::mem::Block;
use crate::security::Caller;

/// `STATUS_CONNECTION_COUNT_LIMIT`: what a connection beyond the server port's `MaxConnections`
/// gets (docs/simulator.md: the status is the simulator's reading, not confirmed by a page).
pub const CONNECTION_COUNT_LIMIT: Status = Status::CONNECTION_COUNT_LIMIT;
/// `STATUS_PORT_DISCONNECTED`: a message sent on a connection the filter closed its end of
/// (unconfirmed, docs/simulator.md).
pub const PORT_DISCONNECTED: Status = Status::PORT_DISCONNECTED;
/// The tag of the security descriptors `FltBuildDefaultSecurityDescriptor` allocates (the
/// simulator's own: Windows' tag was not checked).
pub const SECURITY_DESCRIPTOR_TAG: u32 = u32::from_le_bytes(*b"FltS");

/// A user-mode handle to a connection (what `FilterConnectCommunicationPort` returns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortHandle(pub u32);

/// A server port (`FltCreateCommunicationPort`).
pub struct ServerPort {
    block: Block,
    /// Its name in the object namespace (`\Name`).
    pub name: String,
    /// The filter that created it.
    pub filter: FilterId,
    /// The filter's image (whose code the callbacks are).
    pub image: ImageId,
    /// `ServerPortCookie`.
    pub cookie: usize,
    /// `ConnectNotifyCallback`.
    pub connect: PFLT_CONNECT_NOTIFY,
    /// `DisconnectNotifyCallback`.
    pub disconnect: PFLT_DISCONNECT_NOTIFY,
    /// `MessageNotifyCallback`.
    pub message: PFLT_MESSAGE_NOTIFY,
    /// `MaxConnections`.
    pub max: u32,
    /// Connections now.
    pub connections: u32,
    /// Not closed yet (`FltCloseCommunicationPort`): its name is in the namespace.
    pub open: bool,
    /// Its descriptor is one `FltBuildDefaultSecurityDescriptor` built: only SYSTEM and
    /// administrators may connect (its reference page). Any other descriptor is not checked.
    pub admin_only: bool,
}

impl ServerPort {
    /// `PFLT_PORT`.
    pub fn handle(&self) -> isize {
        self.block.ptr() as isize
    }
}

/// Where a message `FltSendMessage` sent stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageState {
    /// Waiting for a `FilterGetMessage` (the connection's queue, in sending order).
    Queued,
    /// A get received it; its sender waits for a reply when it gave a reply buffer.
    Delivered,
    /// `FilterReplyMessage` answered it: the reply's bytes after the `FILTER_REPLY_HEADER`.
    Replied(Vec<u8>),
    /// The connection ended before it was delivered or answered.
    Disconnected,
}

/// A message a filter sent with `FltSendMessage`, from the send until its sender stops waiting
/// (then it is gone: a later reply finds no waiter).
#[derive(Clone, Debug)]
pub struct PortMessage {
    /// Its `MessageId` (one counter per connection, from 1: the simulator's choice).
    pub id: u64,
    /// The sender's bytes (copied at the send).
    pub data: Vec<u8>,
    /// The sender's `*ReplyLength` when it gave a `ReplyBuffer` (it waits for a reply).
    pub reply_capacity: Option<usize>,
    /// Where it stands.
    pub state: MessageState,
}

/// What runs, as a user action, when a `FilterGetMessage` ends: the bytes its buffer received
/// (`FILTER_MESSAGE_HEADER` and the message) or the status it failed with.
pub type GetDone = Box<dyn FnOnce(Result<Vec<u8>, Status>)>;

/// A `FilterGetMessage` waiting for a message.
pub struct PendingGet {
    /// `dwMessageBufferSize`.
    pub capacity: usize,
    /// Its completion.
    pub done: GetDone,
}

/// A connection: the filter's client port and the user's handle to it.
pub struct ClientPort {
    block: Block,
    /// Its server port (index).
    pub server: usize,
    /// The filter.
    pub filter: FilterId,
    /// `ConnectionPortCookie` from the connect callback.
    pub cookie: usize,
    /// The user's handle is open.
    pub user_open: bool,
    /// The filter has not closed it (`FltCloseClientPort`).
    pub kernel_open: bool,
    /// The connection stands (neither end closed yet): it counts against `MaxConnections`.
    pub connected: bool,
    /// The last `MessageId` given.
    pub last_message: u64,
    /// The messages whose senders wait (queued, delivered or answered), by sending order.
    pub messages: Vec<PortMessage>,
    /// The user's `FilterGetMessage` calls waiting for a message, oldest first.
    pub gets: std::collections::VecDeque<PendingGet>,
}

impl ClientPort {
    /// `PFLT_PORT`.
    pub fn handle(&self) -> isize {
        self.block.ptr() as isize
    }
}

/// Every port of the machine.
#[derive(Default)]
pub struct Ports {
    /// Server ports, by creation.
    pub servers: Vec<ServerPort>,
    /// Connections, by creation (the index is the user's [`PortHandle`]).
    pub clients: Vec<ClientPort>,
    /// The descriptors `FltBuildDefaultSecurityDescriptor` built and nobody freed yet.
    pub default_descriptors: Vec<usize>,
}

impl Ports {
    /// The server port behind a `PFLT_PORT`.
    pub fn server_of(&self, handle: isize) -> Option<usize> {
        self.servers.iter().position(|s| s.handle() == handle)
    }

    /// The client port behind a `PFLT_PORT`.
    pub fn client_of(&self, handle: isize) -> Option<usize> {
        self.clients.iter().position(|c| c.handle() == handle)
    }

    /// The open server port named `name` (the object manager compares names without case).
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.open && s.name.eq_ignore_ascii_case(name))
    }
}

/// What `FltCreateCommunicationPort` was given.
pub struct CreateArgs {
    /// `Filter`.
    pub filter: isize,
    /// `ObjectName`, when given.
    pub name: Option<String>,
    /// `ObjectAttributes->Attributes`.
    pub attributes: u32,
    /// `ServerPortCookie`.
    pub cookie: usize,
    /// The callbacks.
    pub connect: PFLT_CONNECT_NOTIFY,
    /// `DisconnectNotifyCallback`.
    pub disconnect: PFLT_DISCONNECT_NOTIFY,
    /// `MessageNotifyCallback`.
    pub message: PFLT_MESSAGE_NOTIFY,
    /// `MaxConnections`.
    pub max: i32,
    /// `ObjectAttributes->SecurityDescriptor`.
    pub descriptor: usize,
}

/// `FltCreateCommunicationPort`: the checks of its reference page (`OBJ_KERNEL_HANDLE`
/// required, `MaxConnections` above zero, both notification callbacks given, a filter being torn
/// down refused, a name taken refused), then a named server port.
pub fn create(k: &mut Kernel, a: CreateArgs) -> Result<isize, Status> {
    use windows_sys::Win32::Foundation::OBJ_KERNEL_HANDLE;
    k.check_irql(crate::kernel::PASSIVE_LEVEL, "FltCreateCommunicationPort");
    let f = k.fltmgr.filter_of(a.filter).ok_or(Status::INVALID_PARAMETER)?;
    if matches!(k.fltmgr.filter(f).state, FilterState::Unregistering | FilterState::Unregistered) {
        return Err(Status::FLT_DELETING_OBJECT);
    }
    if a.attributes & OBJ_KERNEL_HANDLE == 0
        || a.max <= 0
        || a.connect.is_none()
        || a.disconnect.is_none()
    {
        return Err(Status::INVALID_PARAMETER);
    }
    let name = a.name.unwrap_or_default();
    if !name.is_empty() {
        // A name relative to no directory starts at the root (`\Name`).
        if !name.starts_with('\\') {
            return Err(Status::OBJECT_NAME_INVALID);
        }
        if k.object_name_taken(&name) {
            return Err(Status::OBJECT_NAME_COLLISION);
        }
    }
    if k.fault(crate::faults::FaultKind::Pool) {
        return Err(Status::INSUFFICIENT_RESOURCES);
    }
    let image = k.fltmgr.filter(f).image;
    // The object manager captures the descriptor (the filter frees its own at once).
    let admin_only = k.fltmgr.ports.default_descriptors.contains(&a.descriptor);
    let port = ServerPort {
        block: Block::zeroed(16),
        name,
        filter: f,
        image,
        cookie: a.cookie,
        connect: a.connect,
        disconnect: a.disconnect,
        message: a.message,
        max: a.max as u32,
        connections: 0,
        open: true,
        admin_only,
    };
    let h = port.handle();
    k.fltmgr.ports.servers.push(port);
    Ok(h)
}

/// `FltCloseCommunicationPort`: the name leaves the namespace, no new connection is accepted;
/// the connections made stay (its reference page).
pub fn close_server(k: &mut Kernel, handle: isize) {
    k.check_irql(crate::kernel::PASSIVE_LEVEL, "FltCloseCommunicationPort");
    match k.fltmgr.ports.server_of(handle) {
        Some(i) if k.fltmgr.ports.servers[i].open => k.fltmgr.ports.servers[i].open = false,
        Some(_) => k.report_current(
            Rule::InvalidFltObject,
            "FltCloseCommunicationPort on a server port closed already",
        ),
        None => k.report_current(
            Rule::InvalidFltObject,
            "FltCloseCommunicationPort with a handle that is no server port",
        ),
    }
}

/// `FltCloseClientPort` on client port `handle` (the caller's variable, which the export sets
/// to NULL): the filter's end of a connection closes, which ends the connection when the
/// user's end is still open. A NULL handle closes nothing.
pub fn close_client(k: &mut Kernel, filter: isize, handle: isize) {
    k.check_irql(crate::kernel::PASSIVE_LEVEL, "FltCloseClientPort");
    if handle == 0 {
        return;
    }
    let Some(i) = k.fltmgr.ports.client_of(handle) else {
        k.report_current(Rule::InvalidFltObject, "FltCloseClientPort with an unknown client port");
        return;
    };
    if k.fltmgr.filter_of(filter) != Some(k.fltmgr.ports.clients[i].filter) {
        k.report_current(
            Rule::InvalidFltObject,
            "FltCloseClientPort with a filter that is not the client port's",
        );
    }
    if !k.fltmgr.ports.clients[i].kernel_open {
        k.report_current(
            Rule::InvalidFltObject,
            "FltCloseClientPort on a client port closed already",
        );
        return;
    }
    k.fltmgr.ports.clients[i].kernel_open = false;
    disconnect(k, i, PORT_DISCONNECTED);
}

/// A connection ends (its first end closed): it no longer counts against `MaxConnections`; the
/// senders waiting on it wake with `STATUS_PORT_DISCONNECTED` (their messages are not delivered
/// or no longer answerable) and the user's waiting gets end with `gets` (the handle's close
/// cancels them, `STATUS_CANCELLED`; the filter's end closing fails them with
/// `STATUS_PORT_DISCONNECTED`).
fn disconnect(k: &mut Kernel, client: usize, gets: Status) {
    let c = &mut k.fltmgr.ports.clients[client];
    if !c.connected {
        return;
    }
    c.connected = false;
    for m in &mut c.messages {
        if matches!(m.state, MessageState::Queued | MessageState::Delivered) {
            m.state = MessageState::Disconnected;
        }
    }
    let waiting: Vec<PendingGet> = c.gets.drain(..).collect();
    let server = c.server;
    let s = &mut k.fltmgr.ports.servers[server];
    s.connections = s.connections.saturating_sub(1);
    for g in waiting {
        complete_get(k, g.done, Err(gets));
    }
}

/// Queues a get's completion as a user action (a completion-port thread picking up the
/// packet): at `PASSIVE_LEVEL`, in a thread of its own, outside any driver image.
fn complete_get(k: &mut Kernel, done: GetDone, result: Result<Vec<u8>, Status>) {
    let thread = k.sched.worker();
    k.sched.push(crate::sched::Task {
        name: "FilterGetMessage completion",
        image: None,
        irql: crate::kernel::PASSIVE_LEVEL,
        thread,
        run: Box::new(move || done(result)),
    });
}

/// What a get's buffer receives for `m`: the `FILTER_MESSAGE_HEADER` (`ReplyLength` the reply
/// the sender expects including the `FILTER_REPLY_HEADER`, 0 for none; `MessageId`) and the
/// message.
fn message_bytes(m: &PortMessage) -> Vec<u8> {
    let reply = m.reply_capacity.map_or(0, |n| (n + HEADER_LEN) as u32);
    let header = fsfilter::MessageHeader { reply_length: reply, message_id: m.id };
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(&m.data);
    bytes
}

/// The size of `FILTER_MESSAGE_HEADER` and of `FILTER_REPLY_HEADER` (x64).
pub const HEADER_LEN: usize = fsfilter::MESSAGE_HEADER_LEN;

/// Hands the connection's queued messages to its waiting gets, in order: a get whose buffer
/// cannot hold the header and the message fails with `STATUS_BUFFER_TOO_SMALL` and the message
/// waits for the next one (the simulator's choice, docs/simulator.md).
fn deliver(k: &mut Kernel, client: usize) {
    loop {
        let c = &mut k.fltmgr.ports.clients[client];
        let Some(m) = c.messages.iter_mut().find(|m| m.state == MessageState::Queued) else {
            return;
        };
        let Some(get) = c.gets.pop_front() else { return };
        if get.capacity < HEADER_LEN + m.data.len() {
            complete_get(k, get.done, Err(Status::BUFFER_TOO_SMALL));
            continue;
        }
        m.state = MessageState::Delivered;
        let bytes = message_bytes(m);
        complete_get(k, get.done, Ok(bytes));
    }
}

/// A copy of `bytes` in a block the simulator owns for a call (NULL for nothing), with its
/// address.
fn host_buffer(bytes: &[u8]) -> (Option<Block>, *mut c_void) {
    if bytes.is_empty() {
        return (None, std::ptr::null_mut());
    }
    let b = Block::zeroed(bytes.len());
    // SAFETY: the block holds bytes.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.ptr(), bytes.len()) };
    let p = b.ptr().cast();
    (Some(b), p)
}

/// `FilterConnectCommunicationPort`, from the user's thread: the open server port named `name`
/// (`STATUS_OBJECT_NAME_NOT_FOUND` without one), which `caller` may open
/// (`STATUS_ACCESS_DENIED` for a standard user when the port's descriptor is the default one:
/// user mode sees `E_ACCESSDENIED`, docs/simulator.md), a connection within its `MaxConnections`
/// ([`CONNECTION_COUNT_LIMIT`] beyond), then the filter's `ConnectNotifyCallback` with the new
/// client port, the server port's cookie and a kernel copy of `context`; its failure refuses
/// the connection with its status.
pub fn connect(name: &str, context: &[u8], caller: Caller) -> Result<PortHandle, Status> {
    if context.len() > usize::from(u16::MAX) {
        // wSizeOfContext is a WORD.
        return Err(Status::INVALID_PARAMETER);
    }
    let found = kernel::with(|k| {
        let s = k.fltmgr.ports.by_name(name).ok_or(Status::OBJECT_NAME_NOT_FOUND)?;
        let server = &k.fltmgr.ports.servers[s];
        // The object manager's access check on the port comes before the connection.
        if server.admin_only && caller == Caller::StandardUser {
            return Err(Status::ACCESS_DENIED);
        }
        if server.connections >= server.max {
            return Err(CONNECTION_COUNT_LIMIT);
        }
        let (filter, image, cookie, callback) =
            (server.filter, server.image, server.cookie, server.connect);
        k.fltmgr.ports.servers[s].connections += 1;
        let client = ClientPort {
            block: Block::zeroed(16),
            server: s,
            filter,
            cookie: 0,
            user_open: false,
            kernel_open: true,
            connected: true,
            last_message: 0,
            messages: Vec::new(),
            gets: std::collections::VecDeque::new(),
        };
        let h = client.handle();
        k.fltmgr.ports.clients.push(client);
        Ok((k.fltmgr.ports.clients.len() - 1, h, image, cookie, callback))
    });
    let (index, handle, image, cookie, callback) = found?;
    let Some(callback) = callback else { return Err(Status::INVALID_PARAMETER) };
    let (_kept, ctx) = host_buffer(context);
    let mut port_cookie: *mut c_void = std::ptr::null_mut();
    let out: *mut *mut c_void = &mut port_cookie;
    // SAFETY: the filter's ConnectNotifyCallback with the new client port, its server port's
    // cookie, the context copy (or NULL) and its length, and a variable for its cookie.
    let status = super::call_filter(image, "ConnectNotifyCallback", || unsafe {
        callback(handle, cookie as *const c_void, ctx, context.len() as u32, out)
    })
    .map_or(Status::FLT_DELETING_OBJECT, Status);
    kernel::with(|k| {
        let c = &mut k.fltmgr.ports.clients[index];
        if status.is_success() {
            c.cookie = port_cookie as usize;
            c.user_open = true;
            Ok(PortHandle(index as u32))
        } else {
            // Refused: the Filter Manager deletes the client port it made.
            c.kernel_open = false;
            disconnect(k, index, PORT_DISCONNECTED);
            Err(status)
        }
    })
}

/// The connection behind a user handle that is open; `INVALID_HANDLE` reported otherwise.
fn user_port(k: &mut Kernel, port: PortHandle) -> Result<usize, Status> {
    let i = port.0 as usize;
    match k.fltmgr.ports.clients.get(i) {
        Some(c) if c.user_open => Ok(i),
        _ => {
            k.report(
                Rule::InvalidHandle,
                None,
                format!("communication port handle {} is not open", port.0),
            );
            Err(Status::INVALID_HANDLE)
        }
    }
}

/// `FilterSendMessage`: the filter's `MessageNotifyCallback` with the connection's cookie, the
/// caller's input and an output buffer of `reply_capacity` bytes (NULL and 0 for none), in the
/// caller's thread. Its status is the call's; on success the reply is the first
/// `ReturnOutputBufferLength` bytes of the output buffer. A length beyond the buffer is a
/// `MESSAGE_REPLY_LENGTH_BEYOND_BUFFER` finding and is cut to the buffer.
pub fn send(port: PortHandle, input: &[u8], reply_capacity: usize) -> Result<Vec<u8>, Status> {
    let found = kernel::with(|k| {
        let i = user_port(k, port)?;
        let c = &k.fltmgr.ports.clients[i];
        if !c.connected {
            return Err(PORT_DISCONNECTED);
        }
        let s = &k.fltmgr.ports.servers[c.server];
        // "If it is NULL, any request made from user mode to send data to the port will
        // receive an error" (FltCreateCommunicationPort): the status is the simulator's.
        let callback = s.message.ok_or(Status::INVALID_DEVICE_REQUEST)?;
        Ok((c.cookie, s.image, callback))
    });
    let (cookie, image, callback) = found?;
    let (_input, in_ptr) = host_buffer(input);
    let out = (reply_capacity > 0).then(|| Block::zeroed(reply_capacity));
    let out_ptr = out.as_ref().map_or(std::ptr::null_mut(), |b| b.ptr().cast::<c_void>());
    let mut returned: u32 = 0;
    let ret: *mut u32 = &mut returned;
    let (in_len, out_len) = (input.len() as u32, reply_capacity as u32);
    // SAFETY: the filter's MessageNotifyCallback with the connection's cookie, the buffers the
    // simulator owns for the call (their lengths) and a variable for the reply's length.
    let status = super::call_filter(image, "MessageNotifyCallback", || unsafe {
        callback(cookie as *const c_void, in_ptr, in_len, out_ptr, out_len, ret)
    })
    .map_or(Status::FLT_DELETING_OBJECT, Status);
    let mut n = returned as usize;
    if n > reply_capacity {
        kernel::with(|k| {
            let name = k.image_name(image);
            k.report(
                Rule::MessageReplyBeyondBuffer,
                Some(name),
                format!(
                    "MessageNotifyCallback returned ReturnOutputBufferLength {n} for an output \
                     buffer of {reply_capacity} bytes"
                ),
            );
        });
        n = reply_capacity;
    }
    if !status.is_success() {
        return Err(status);
    }
    Ok(out.map_or_else(Vec::new, |b| {
        // SAFETY: the block holds reply_capacity >= n bytes.
        unsafe { std::slice::from_raw_parts(b.ptr(), n) }.to_vec()
    }))
}

/// What `FltSendMessage` was given (its buffers read by the export).
pub struct SendArgs {
    /// `Filter`.
    pub filter: isize,
    /// `*ClientPort`: the value of the caller's variable when it called.
    pub client: isize,
    /// The message (`SenderBuffer`, `SenderBufferLength` bytes).
    pub message: Vec<u8>,
    /// `*ReplyLength` when `ReplyBuffer` is given: the sender waits for a reply.
    pub reply_capacity: Option<usize>,
    /// `*Timeout` (100 ns units: negative relative, positive an absolute system time), None
    /// for NULL.
    pub timeout: Option<i64>,
}

/// How `FltSendMessage` ended: its status and, after a reply, the reply's bytes (at most the
/// sender's `ReplyLength`) for its `ReplyBuffer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendEnd {
    /// The call's status.
    pub status: Status,
    /// The reply, when one came (cut to the sender's buffer).
    pub reply: Option<Vec<u8>>,
}

impl SendEnd {
    fn status(status: Status) -> SendEnd {
        SendEnd { status, reply: None }
    }
}

/// `FltSendMessage` (its reference page; docs/simulator.md, "Communication ports and control
/// devices"): IRQL <= `APC_LEVEL`; the connection of `*ClientPort` (NULL, or a connection
/// ended: `STATUS_PORT_DISCONNECTED`); the message delivered at once to a waiting
/// `FilterGetMessage`, else queued until one comes; then, with a reply buffer, the wait for
/// `FilterReplyMessage`. Both waits share one deadline (the timeout is the whole exchange's); a
/// timeout that passes first is `STATUS_TIMEOUT` (a success code): before the delivery the
/// message is taken back, after it a later reply finds no waiter. A connection that ends while
/// the sender waits is `STATUS_PORT_DISCONNECTED`. A reply longer than the sender's buffer is
/// `STATUS_BUFFER_OVERFLOW` with the buffer filled (FilterReplyMessage's page names the
/// status; the filled buffer is the simulator's choice).
pub fn send_to_user(a: SendArgs) -> SendEnd {
    let deadline = crate::sched::deadline(a.timeout);
    let queued = kernel::with(|k| -> Result<(usize, u64), Status> {
        if !k.check_irql(crate::kernel::APC_LEVEL, "FltSendMessage") {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        let Some(f) = k.fltmgr.filter_of(a.filter) else {
            k.report_current(Rule::InvalidFltObject, "FltSendMessage with an unknown filter");
            return Err(Status::INVALID_PARAMETER);
        };
        // The variable FltCloseClientPort set to NULL: the connection is gone (the Filter
        // Manager reads the variable under the lock FltCloseClientPort takes, which is why the
        // port is passed by address).
        if a.client == 0 {
            return Err(PORT_DISCONNECTED);
        }
        let Some(i) = k.fltmgr.ports.client_of(a.client) else {
            k.report_current(
                Rule::InvalidFltObject,
                "FltSendMessage with a ClientPort that is no client port",
            );
            return Err(Status::INVALID_PARAMETER);
        };
        let c = &k.fltmgr.ports.clients[i];
        if c.filter != f {
            k.report_current(
                Rule::InvalidFltObject,
                "FltSendMessage with a client port of another filter",
            );
            return Err(Status::INVALID_PARAMETER);
        }
        if !c.kernel_open {
            k.report_current(
                Rule::InvalidFltObject,
                "FltSendMessage on a client port closed with FltCloseClientPort (a copy of the \
                 variable it set to NULL)",
            );
            return Err(PORT_DISCONNECTED);
        }
        if !c.connected {
            return Err(PORT_DISCONNECTED);
        }
        if k.fault(crate::faults::FaultKind::Pool) {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        let c = &mut k.fltmgr.ports.clients[i];
        c.last_message += 1;
        let id = c.last_message;
        c.messages.push(PortMessage {
            id,
            data: a.message,
            reply_capacity: a.reply_capacity,
            state: MessageState::Queued,
        });
        deliver(k, i);
        Ok((i, id))
    });
    let (client, id) = match queued {
        Ok(q) => q,
        Err(s) => return SendEnd::status(s),
    };
    let state = || {
        kernel::with(|k| {
            k.fltmgr.ports.clients[client]
                .messages
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.state.clone())
        })
    };
    let take = || {
        kernel::with(|k| {
            let c = &mut k.fltmgr.ports.clients[client];
            let at = c.messages.iter().position(|m| m.id == id)?;
            Some(c.messages.remove(at))
        })
    };
    let delivered = |s: &Option<MessageState>| !matches!(s, Some(MessageState::Queued));
    if let Err(end) = wait_for(|| delivered(&state()), deadline, "to be received") {
        take();
        return SendEnd::status(end);
    }
    let reply_capacity = a.reply_capacity;
    if reply_capacity.is_some() {
        let answered = |s: &Option<MessageState>| !matches!(s, Some(MessageState::Delivered));
        if let Err(end) = wait_for(|| answered(&state()), deadline, "to be answered") {
            take();
            return SendEnd::status(end);
        }
    }
    match take().map(|m| m.state) {
        Some(MessageState::Replied(mut data)) => {
            let capacity = reply_capacity.unwrap_or(0);
            let status = if data.len() > capacity {
                data.truncate(capacity);
                Status::BUFFER_OVERFLOW
            } else {
                Status::SUCCESS
            };
            SendEnd { status, reply: Some(data) }
        }
        Some(MessageState::Delivered) => SendEnd::status(Status::SUCCESS),
        _ => SendEnd::status(PORT_DISCONNECTED),
    }
}

/// A sender's wait until `done` holds or `deadline` passes (`STATUS_TIMEOUT`). A deadline
/// already past tests and never waits (no other work runs: a kernel wait with a zero timeout).
/// A wait nothing can end (no work left, no deadline) is a `DEADLOCK` finding: on Windows the
/// sender hangs; the simulator answers `STATUS_TIMEOUT` (as for `KeWaitForSingleObject`).
fn wait_for(done: impl Fn() -> bool, deadline: Option<u64>, what: &str) -> Result<(), Status> {
    if done() {
        return Ok(());
    }
    if deadline.is_some_and(|d| d <= kernel::with(|k| k.sched.now)) {
        return Err(Status::TIMEOUT);
    }
    match crate::sched::wait_until(&done, deadline) {
        crate::sched::WaitEnd::Satisfied => Ok(()),
        crate::sched::WaitEnd::TimedOut | crate::sched::WaitEnd::Crashed => Err(Status::TIMEOUT),
        crate::sched::WaitEnd::Deadlock => {
            kernel::with(|k| {
                k.report_current(
                    Rule::Deadlock,
                    format!(
                        "FltSendMessage without a timeout waits for its message {what}, and \
                         nothing left to run can (the simulator returns STATUS_TIMEOUT)"
                    ),
                )
            });
            Err(Status::TIMEOUT)
        }
    }
}

/// `FilterGetMessage` with an `OVERLAPPED` from the user's thread: `STATUS_INVALID_HANDLE` for
/// a handle that is not open, `STATUS_PORT_DISCONNECTED` for a connection that ended; a queued
/// message the buffer holds is taken at once (`STATUS_SUCCESS`), one it cannot hold fails the
/// call with `STATUS_BUFFER_TOO_SMALL` and stays queued; otherwise the get waits
/// (`STATUS_PENDING`). `done` runs, as a user action, for every get that did not fail at once.
pub fn get_message(port: PortHandle, capacity: usize, done: GetDone) -> Status {
    kernel::with(|k| {
        let i = match user_port(k, port) {
            Ok(i) => i,
            Err(s) => return s,
        };
        let c = &mut k.fltmgr.ports.clients[i];
        if !c.connected {
            return PORT_DISCONNECTED;
        }
        match c.messages.iter_mut().find(|m| m.state == MessageState::Queued) {
            Some(m) if capacity < HEADER_LEN + m.data.len() => Status::BUFFER_TOO_SMALL,
            Some(m) => {
                m.state = MessageState::Delivered;
                let bytes = message_bytes(m);
                complete_get(k, done, Ok(bytes));
                Status::SUCCESS
            }
            None => {
                c.gets.push_back(PendingGet { capacity, done });
                Status::PENDING
            }
        }
    })
}

/// `FilterReplyMessage`: `reply` is a `FILTER_REPLY_HEADER` and the reply. The message it names
/// (`MessageId`) must have been received and its sender must still wait for a reply: otherwise
/// `STATUS_FLT_NO_WAITER_FOR_REPLY` (a timeout ended the wait, the message wanted no reply, it
/// was answered already, or no such message). The header's `Status` is not interpreted. A
/// buffer shorter than the header is `STATUS_INVALID_PARAMETER` (the simulator's choice).
pub fn reply_message(port: PortHandle, reply: &[u8]) -> Status {
    kernel::with(|k| {
        let i = match user_port(k, port) {
            Ok(i) => i,
            Err(s) => return s,
        };
        let Some(header) = fsfilter::ReplyHeader::from_bytes(reply) else {
            return Status::INVALID_PARAMETER;
        };
        let c = &mut k.fltmgr.ports.clients[i];
        if !c.connected {
            return PORT_DISCONNECTED;
        }
        let waiting = c.messages.iter_mut().find(|m| {
            m.id == header.message_id
                && m.state == MessageState::Delivered
                && m.reply_capacity.is_some()
        });
        match waiting {
            Some(m) => {
                m.state = MessageState::Replied(reply.get(HEADER_LEN..).unwrap_or(&[]).to_vec());
                Status::SUCCESS
            }
            None => Status::FLT_NO_WAITER_FOR_REPLY,
        }
    })
}

/// `CancelIoEx` on the user's port: its waiting gets end with `STATUS_CANCELLED` (as user
/// actions); `STATUS_NOT_FOUND` when none waits.
pub fn cancel_gets(port: PortHandle) -> Status {
    kernel::with(|k| {
        let i = match user_port(k, port) {
            Ok(i) => i,
            Err(s) => return s,
        };
        let gets: Vec<PendingGet> = k.fltmgr.ports.clients[i].gets.drain(..).collect();
        if gets.is_empty() {
            return Status::NOT_FOUND;
        }
        for g in gets {
            complete_get(k, g.done, Err(Status::CANCELLED));
        }
        Status::SUCCESS
    })
}

/// `CloseHandle` on the user's port: the handle goes; if the connection still stands it ends
/// and the filter's `DisconnectNotifyCallback` runs with its cookie, in the caller's thread.
pub fn close_user(port: PortHandle) -> Status {
    let found = kernel::with(|k| {
        let i = user_port(k, port)?;
        k.fltmgr.ports.clients[i].user_open = false;
        let c = &k.fltmgr.ports.clients[i];
        if !c.connected {
            // The filter closed its end first: the connection is gone already.
            return Ok(None);
        }
        let s = &k.fltmgr.ports.servers[c.server];
        let call = (c.cookie, s.image, s.disconnect);
        // The handle's cleanup cancels its waiting gets.
        disconnect(k, i, Status::CANCELLED);
        Ok(Some(call))
    });
    match found {
        Err(s) => s,
        Ok(None) => Status::SUCCESS,
        Ok(Some((cookie, image, callback))) => {
            notify_disconnect(cookie, image, callback);
            Status::SUCCESS
        }
    }
}

/// Calls a `DisconnectNotifyCallback`.
fn notify_disconnect(cookie: usize, image: ImageId, callback: PFLT_DISCONNECT_NOTIFY) {
    let Some(callback) = callback else { return };
    // SAFETY: the filter's DisconnectNotifyCallback with the connection's cookie.
    let _ = super::call_filter(image, "DisconnectNotifyCallback", || unsafe {
        callback(cookie as *const c_void)
    });
}

/// At `FltUnregisterFilter`: a server port the filter did not close is a
/// `COMMUNICATION_PORT_OPEN_AT_UNREGISTER` finding (Windows hangs there: the unload must close
/// it first) and is closed; the connections still standing are ended, each with the filter's
/// `DisconnectNotifyCallback` (the Filter Manager closes client ports when the minifilter
/// unloads); a client port the filter then still did not close with `FltCloseClientPort` is a
/// `CLIENT_PORT_LEAKED_AT_UNLOAD` finding, and is closed.
pub fn unregistering(f: FilterId) {
    let calls = kernel::with(|k| {
        let open: Vec<String> = k
            .fltmgr
            .ports
            .servers
            .iter_mut()
            .filter(|s| s.filter == f && s.open)
            .map(|s| {
                s.open = false;
                s.name.clone()
            })
            .collect();
        if !open.is_empty() {
            k.flt_report(
                Some(f),
                Rule::CommunicationPortOpenAtUnregister,
                format!(
                    "FltUnregisterFilter with {} communication server port(s) not closed with \
                     FltCloseCommunicationPort ({}): the unload hangs on Windows (Closing the \
                     Communication Server Port)",
                    open.len(),
                    open.join(", ")
                ),
            );
        }
        let standing: Vec<usize> = (0..k.fltmgr.ports.clients.len())
            .filter(|&i| {
                let c = &k.fltmgr.ports.clients[i];
                c.filter == f && c.connected
            })
            .collect();
        let mut calls = Vec::new();
        for i in standing {
            let c = &k.fltmgr.ports.clients[i];
            let s = &k.fltmgr.ports.servers[c.server];
            calls.push((c.cookie, s.image, s.disconnect));
            disconnect(k, i, PORT_DISCONNECTED);
        }
        calls
    });
    for (cookie, image, callback) in calls {
        notify_disconnect(cookie, image, callback);
    }
    kernel::with(|k| {
        let mut leaked = 0;
        for c in k.fltmgr.ports.clients.iter_mut().filter(|c| c.filter == f && c.kernel_open) {
            c.kernel_open = false;
            leaked += 1;
        }
        if leaked > 0 {
            k.flt_report(
                Some(f),
                Rule::ClientPortLeaked,
                format!(
                    "{leaked} client port(s) never closed with FltCloseClientPort (its \
                     DisconnectNotifyCallback should close it) when the filter unregistered"
                ),
            );
        }
    });
}

impl Kernel {
    /// Whether a name is taken in the object namespace: a device's, a symbolic link's or an
    /// open communication port's (compared without case, as the object manager does with
    /// `OBJ_CASE_INSENSITIVE`, which Windows applies to every lookup by default).
    pub fn object_name_taken(&self, name: &str) -> bool {
        self.objects.names.contains_key(&name.to_uppercase())
            || self.fltmgr.ports.by_name(name).is_some()
    }
}
