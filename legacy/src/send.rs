//! The filter-to-user direction of the legacy channel ([`fsfilter::Services::send_message`],
//! rule 25): an inverted call on the control device, built only for a filter that declares
//! [`Filter::MESSAGES`].
//!
//! - A client waits for a message with [`fsfilter::IOCTL_FSFILTER_GET_MESSAGE`]: the request stays
//!   pending in its client's queue, with a cancel routine, until a message comes (the output
//!   buffer then holds a [`MessageHeader`] and the message), until it is cancelled (`CancelIoEx`,
//!   the thread's end) or until the client's cleanup, which completes it with `STATUS_CANCELLED`.
//! - A sender copies its message into non-paged pool (the copies into a request's buffer happen
//!   under a spin lock), links a wait record (in its own frame, with a `KEVENT`) into the client's
//!   list, hands the message to the oldest pending get if there is one, and waits on the event
//!   with its timeout. A get that comes later takes the oldest queued message.
//! - [`fsfilter::IOCTL_FSFILTER_REPLY_MESSAGE`] finds the delivered message its [`ReplyHeader`]
//!   names among the client's, copies at most the sender's capacity into the sender's pool
//!   buffer, and wakes it; an unknown number, or a message whose sender stopped waiting, is
//!   `STATUS_FLT_NO_WAITER_FOR_REPLY`, as a minifilter's client gets.
//! - A timeout unlinks the record (a message not yet taken is never delivered); the cleanup of
//!   the client wakes every sender with `STATUS_PORT_DISCONNECTED` and cancels its gets. The
//!   client's record stays in the channel until the last sender holding it left, so a sender
//!   never touches freed memory, whenever the handle closes.
//!
//! Choices (no Windows rule applies, the transport is this framework's): a get whose buffer
//! cannot hold the header and the message fails with `STATUS_BUFFER_TOO_SMALL` and the message
//! stays for the next get (as the simulated Filter Manager chose for `FilterGetMessage`); message
//! numbers count from 1 per client.

use core::cell::UnsafeCell;
use core::ptr;

use fsfilter::{
    ClientId, Error, Filter, IoStatus, Irql, MESSAGE_HEADER_LEN, MessageChannel, MessageHeader,
    MessageSent, ReplyHeader, Status,
};
use fsfilter_kernel::irp::{IoMarkIrpPending, IoSetCancelRoutine, set_irp_status};
use fsfilter_kernel::params::{self, IoDeviceIoControl};
use fsfilter_kernel::pool::{PoolBox, PoolBytes, pool_tag};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IO_STACK_LOCATION, IRP, KEVENT};
use windows_sys::Wdk::System::SystemServices::{
    IoReleaseCancelSpinLock, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject,
};
use windows_sys::Win32::Foundation::NTSTATUS;
use windows_sys::Win32::System::Kernel::NotificationEvent;

use crate::dispatch::complete;
use crate::messages::ControlExt;
use crate::state::DriverState;

/// Pool tag of client records and message copies: `FsfM`.
const SEND_TAG: u32 = pool_tag(b"FsfM");

/// The channel's clients, under the control device's spin lock.
pub(crate) struct Clients {
    /// Connected clients, and disconnected ones a sender still holds.
    head: *mut ClientRecord,
}

// SAFETY: the records are pool memory reached only under the lock that guards this value.
unsafe impl Send for Clients {}

impl Clients {
    pub(crate) const fn new() -> Clients {
        Clients { head: ptr::null_mut() }
    }

    /// The record of `id`; a disconnected one (kept for its senders) only if `connected_only`
    /// is false.
    fn find(&self, id: usize, connected_only: bool) -> *mut ClientRecord {
        let mut r = self.head;
        // SAFETY: every record of the list is live pool memory (under the lock).
        while let Some(rec) = unsafe { r.as_ref() } {
            if rec.id == id && (rec.connected || !connected_only) {
                return r;
            }
            r = rec.next;
        }
        ptr::null_mut()
    }

    /// Takes `record` out of the list (it is then the caller's to free).
    fn unlink(&mut self, record: *mut ClientRecord) {
        // SAFETY: the list's records are live (under the lock); `next` is their link.
        unsafe { remove(&mut self.head, record, client_link) };
    }
}

/// `&raw mut (*record).next`.
///
/// # Safety
/// `record` is live.
unsafe fn client_link(record: *mut ClientRecord) -> *mut *mut ClientRecord {
    // SAFETY: the caller's live record: the projection stays in it.
    unsafe { &raw mut (*record).next }
}

/// `&raw mut (*waiter).next`.
///
/// # Safety
/// `waiter` is live.
unsafe fn waiter_link(waiter: *mut Waiter) -> *mut *mut Waiter {
    // SAFETY: the caller's live record: the projection stays in it.
    unsafe { &raw mut (*waiter).next }
}

/// The queue link of a get, `Tail.Overlay.DriverContext[0]`, which the driver holding an IRP
/// may use (wdm.h).
///
/// # Safety
/// `irp` is a live IRP this driver holds.
unsafe fn get_link(irp: *mut IRP) -> *mut *mut IRP {
    // SAFETY: a live IRP: the projection stays in it.
    unsafe { (&raw mut (*irp).Tail.Overlay.Anonymous1.Anonymous.DriverContext).cast() }
}

/// Removes `item` from the list at `head` whose links `link` gives; false when absent.
///
/// # Safety
/// Every node of the list is live, and `link` gives a live node's own link field.
unsafe fn remove<T>(
    head: &mut *mut T,
    item: *mut T,
    link: unsafe fn(*mut T) -> *mut *mut T,
) -> bool {
    let mut at: *mut *mut T = head;
    loop {
        // SAFETY: `at` is the head or a live node's link.
        let node = unsafe { *at };
        if node.is_null() {
            return false;
        }
        // SAFETY: a live node of the list.
        let next = unsafe { link(node) };
        if node == item {
            // SAFETY: as above.
            let after = unsafe { *next };
            // SAFETY: the head or a live node's link.
            unsafe { *at = after };
            return true;
        }
        at = next;
    }
}

/// Appends `item` to the list at `head` whose links `link` gives.
///
/// # Safety
/// As [`remove`]; `item` is live and in no list.
unsafe fn append<T>(head: &mut *mut T, item: *mut T, link: unsafe fn(*mut T) -> *mut *mut T) {
    // SAFETY: the caller's live item.
    let own = unsafe { link(item) };
    // SAFETY: as above.
    unsafe { *own = ptr::null_mut() };
    let mut at: *mut *mut T = head;
    loop {
        // SAFETY: `at` is the head or a live node's link.
        let node = unsafe { *at };
        if node.is_null() {
            break;
        }
        // SAFETY: a live node of the list.
        at = unsafe { link(node) };
    }
    // SAFETY: the last link.
    unsafe { *at = item };
}

/// Pushes `irp` on a chain of gets to complete.
///
/// # Safety
/// `irp` is a live get this driver holds, in no queue.
unsafe fn push(chain: &mut *mut IRP, irp: *mut IRP) {
    // SAFETY: the caller's get.
    let own = unsafe { get_link(irp) };
    // SAFETY: as above.
    unsafe { *own = *chain };
    *chain = irp;
}

/// One client of the channel.
struct ClientRecord {
    next: *mut ClientRecord,
    /// The client's file object.
    id: usize,
    /// From the accepted create to the cleanup.
    connected: bool,
    /// Senders inside `send` holding this record: the last one frees a disconnected record.
    senders: u32,
    /// The last message number given (numbers count from 1 per client, as the simulated Filter
    /// Manager's per connection).
    last_id: u64,
    /// Pending gets, oldest first, linked through `Tail.Overlay.DriverContext[0]`.
    gets: *mut IRP,
    /// Messages sent and not finished (queued, or delivered and waiting for a reply), oldest
    /// first.
    messages: *mut Waiter,
    /// The connecting process (the create's `IoGetRequestorProcessId`); 0 for a filter that
    /// does not ask for processes (rule 26).
    process: u32,
}

/// Where a message is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for a get.
    Queued,
    /// In a get's buffer; the sender waits for the reply.
    Delivered,
    /// Finished with `status`; the sender is woken (or will be).
    Done,
}

/// A sender's wait record, in the sender's frame (a kernel-mode wait keeps the stack resident).
struct Waiter {
    next: *mut Waiter,
    id: u64,
    stage: Stage,
    status: Status,
    /// The header and the message (non-paged pool), what a get receives.
    packet: *mut u8,
    packet_len: usize,
    /// The reply's space (non-paged pool, after the packet); `None` for a one-way message.
    reply: Option<(*mut u8, usize)>,
    reply_len: usize,
    event: UnsafeCell<KEVENT>,
}

/// The control device's extension of a filter with a channel.
///
/// # Safety
/// `state.control` is null or the control device, created with the channel's extension.
pub(crate) unsafe fn control_of<F: Filter>(state: &DriverState<F>) -> Option<&ControlExt<F>> {
    // SAFETY: the caller's contract: null or our live control device.
    let device = unsafe { state.control.as_ref() }?;
    // SAFETY: its extension is a ControlExt<F>, initialized in DriverEntry.
    unsafe { device.DeviceExtension.cast::<ControlExt<F>>().as_ref() }
}

/// Copies `w`'s packet into a get's buffer and sets the get's status (the caller completes it
/// outside the lock). True when delivered; false when the buffer is too small (the get then
/// carries `STATUS_BUFFER_TOO_SMALL` and the message stays queued).
///
/// # Safety
/// Under the channel's lock; `w` a live queued record of the get's client, `irp` a get taken
/// out of its queue (its cancel routine cleared).
unsafe fn deliver(w: &mut Waiter, irp: *mut IRP) -> bool {
    // SAFETY: the caller's live IRP.
    let sl = unsafe { crate::raw::location(irp) };
    // SAFETY: a device control's parameters.
    let capacity = unsafe { params::io::<IoDeviceIoControl>(&sl.Parameters) }.OutputBufferLength;
    // SAFETY: the IRP's system buffer (METHOD_BUFFERED): `capacity` bytes at least.
    let buffer = unsafe { crate::messages::system_buffer(irp) };
    if buffer.is_null() || (capacity as usize) < w.packet_len {
        // SAFETY: ours until completed.
        unsafe { set_irp_status(irp, Status::BUFFER_TOO_SMALL.0, 0) };
        return false;
    }
    // SAFETY: the packet is non-paged pool of `packet_len` bytes; the buffer holds as many.
    unsafe { ptr::copy_nonoverlapping(w.packet, buffer, w.packet_len) };
    // SAFETY: ours until completed.
    unsafe { set_irp_status(irp, Status::SUCCESS.0, w.packet_len) };
    if w.reply.is_some() {
        w.stage = Stage::Delivered;
    } else {
        finish(w, Status::SUCCESS);
    }
    true
}

/// Marks `w` done with `status` and wakes its sender (under the channel's lock, which the sender
/// takes before it reads the record again). The caller unlinks it.
fn finish(w: &mut Waiter, status: Status) {
    w.stage = Stage::Done;
    w.status = status;
    // SAFETY: an initialized event in a live record; at DISPATCH_LEVEL with Wait FALSE.
    unsafe { KeSetEvent(w.event.get(), 0, false) };
}

/// Takes the oldest pending get of `record` that is not being cancelled; gets being cancelled
/// leave the queue (their cancel routine completes them).
fn take_get(record: &mut ClientRecord) -> *mut IRP {
    loop {
        let irp = record.gets;
        if irp.is_null() {
            return irp;
        }
        // SAFETY: a queued get: live, ours.
        let link = unsafe { get_link(irp) };
        // SAFETY: as above.
        record.gets = unsafe { *link };
        // SAFETY: as above.
        if unsafe { IoSetCancelRoutine(irp, None) }.is_some() {
            return irp;
        }
    }
}

/// Completes a chain of gets ([`push`]), each with the status it carries.
///
/// # Safety
/// Outside the lock; each IRP of the chain is ours, its cancel routine cleared.
unsafe fn complete_chain(mut irp: *mut IRP) {
    while !irp.is_null() {
        // SAFETY: a live get of the chain.
        let link = unsafe { get_link(irp) };
        // SAFETY: as above.
        let next = unsafe { *link };
        // SAFETY: as above; its status was set.
        let io = unsafe { crate::view::io_status(irp) };
        // SAFETY: ours, completed once.
        unsafe { complete(irp, io) };
        irp = next;
    }
}

/// Registers an accepted client (before the filter's `client_connect`), connected by `process`.
pub(crate) fn connect<F: Filter>(
    control: &ControlExt<F>,
    client: ClientId,
    process: u32,
) -> Result<(), Error> {
    let record = ClientRecord {
        next: ptr::null_mut(),
        id: client.0,
        connected: true,
        senders: 0,
        last_id: 0,
        gets: ptr::null_mut(),
        messages: ptr::null_mut(),
        process,
    };
    let mut record = PoolBox::try_new(record, SEND_TAG)?;
    let mut clients = control.records.lock();
    record.next = clients.head;
    clients.head = record.into_raw();
    Ok(())
}

/// The process that connected `client`, while it is connected (rule 26).
pub(crate) fn client_process<F: Filter>(
    control: &ControlExt<F>,
    client: ClientId,
) -> Option<fsfilter::ProcessId> {
    let clients = control.records.lock();
    // SAFETY: a live record (under the lock), or null.
    let process = unsafe { clients.find(client.0, true).as_ref() }.map_or(0, |r| r.process);
    (process != 0).then_some(fsfilter::ProcessId(process))
}

/// The client's cleanup (or a refused connection): wakes its senders with
/// `STATUS_PORT_DISCONNECTED`, cancels its gets, frees its record unless a sender holds it.
pub(crate) fn disconnect<F: Filter>(control: &ControlExt<F>, client: ClientId) {
    let mut cancelled: *mut IRP = ptr::null_mut();
    let mut free: *mut ClientRecord = ptr::null_mut();
    {
        let mut clients = control.records.lock();
        let record = clients.find(client.0, true);
        // SAFETY: a live record of the list (under the lock).
        let Some(rec) = (unsafe { record.as_mut() }) else { return };
        rec.connected = false;
        loop {
            let irp = take_get(rec);
            if irp.is_null() {
                break;
            }
            // SAFETY: ours now.
            unsafe { set_irp_status(irp, Status::CANCELLED.0, 0) };
            // SAFETY: as above, in no queue.
            unsafe { push(&mut cancelled, irp) };
        }
        let mut w = core::mem::replace(&mut rec.messages, ptr::null_mut());
        // SAFETY: live records: their senders wait for the lock or the event.
        while let Some(x) = unsafe { w.as_mut() } {
            w = x.next;
            finish(x, Status::PORT_DISCONNECTED);
        }
        if rec.senders == 0 {
            clients.unlink(record);
            free = record;
        }
    }
    // SAFETY: unlinked, nobody holds it (or null).
    drop(unsafe { PoolBox::from_raw(free, SEND_TAG) });
    // SAFETY: outside the lock; ours.
    unsafe { complete_chain(cancelled) };
}

/// The cancel routine of a pending get: called by `IoCancelIrp` with the cancel spin lock held.
unsafe extern "system" fn cancel_get<F: Filter>(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: the I/O manager's live IRP.
    let cancel_irql = unsafe { (*irp).CancelIrql };
    // SAFETY: the lock IoCancelIrp holds for us, released at once.
    unsafe { IoReleaseCancelSpinLock(cancel_irql) };
    // SAFETY: our control device (the get was queued there).
    let extension = unsafe { device.as_ref() }.map(|d| d.DeviceExtension.cast::<ControlExt<F>>());
    // SAFETY: created with a ControlExt<F>, initialized in DriverEntry.
    if let Some(control) = extension.and_then(|e| unsafe { e.as_ref() }) {
        // SAFETY: the live IRP's current location (ours).
        let id = unsafe { crate::raw::location(irp) }.FileObject as usize;
        let clients = control.records.lock();
        // SAFETY: a live record (under the lock), or null.
        if let Some(rec) = unsafe { clients.find(id, false).as_mut() } {
            // SAFETY: the queued gets are live; still queued unless taken since.
            unsafe { remove(&mut rec.gets, irp, get_link) };
        }
    }
    // SAFETY: the cancel routine owns the IRP it was called for; completed once.
    unsafe { complete(irp, IoStatus::new(Status::CANCELLED)) };
}

/// `IOCTL_FSFILTER_GET_MESSAGE`: completes `irp` with the oldest queued message, or queues it.
/// Returns the dispatch routine's status.
///
/// # Safety
/// `irp` is a live device control at our control device, from the connected client `client`.
pub(crate) unsafe fn get<F: Filter>(
    control: &ControlExt<F>,
    irp: *mut IRP,
    client: ClientId,
) -> NTSTATUS {
    let clients = control.records.lock();
    // SAFETY: a live record (under the lock), or null.
    let Some(rec) = (unsafe { clients.find(client.0, true).as_mut() }) else {
        drop(clients);
        // SAFETY: the caller's live IRP, completed once.
        return unsafe { complete(irp, IoStatus::new(Status::INVALID_DEVICE_STATE)) };
    };
    // The oldest message not taken yet.
    let mut w = rec.messages;
    // SAFETY: live records of the list.
    while let Some(x) = unsafe { w.as_mut() } {
        if x.stage == Stage::Queued {
            // SAFETY: under the lock: a queued record and the caller's IRP, in no queue.
            if unsafe { deliver(x, irp) } && x.stage == Stage::Done {
                // A one-way message leaves the list once delivered.
                // SAFETY: the list's records are live.
                unsafe { remove(&mut rec.messages, w, waiter_link) };
            }
            drop(clients);
            // SAFETY: the caller's IRP; its status was set by `deliver`.
            let io = unsafe { crate::view::io_status(irp) };
            // SAFETY: completed once.
            return unsafe { complete(irp, io) };
        }
        w = x.next;
    }
    // Queue it, cancelable. From here the cancel routine may complete it.
    // SAFETY: the caller's live IRP.
    unsafe { IoMarkIrpPending(irp) };
    // SAFETY: as above.
    unsafe { IoSetCancelRoutine(irp, Some(cancel_get::<F>)) };
    // SAFETY: as above.
    if unsafe { (*irp).Cancel } {
        // Cancelled before the routine was set: complete it here, unless `IoCancelIrp` took the
        // routine just now (which then completes it).
        // SAFETY: as above.
        if unsafe { IoSetCancelRoutine(irp, None) }.is_some() {
            drop(clients);
            // SAFETY: ours, completed once.
            unsafe { complete(irp, IoStatus::new(Status::CANCELLED)) };
        }
        return Status::PENDING.0;
    }
    // SAFETY: the queued gets are live; the IRP is ours and in no queue.
    unsafe { append(&mut rec.gets, irp, get_link) };
    Status::PENDING.0
}

/// `IOCTL_FSFILTER_REPLY_MESSAGE`: hands the reply to the waiting sender.
///
/// # Safety
/// `irp` is a live device control at our control device, `sl` its location.
pub(crate) unsafe fn reply<F: Filter>(
    control: &ControlExt<F>,
    irp: *mut IRP,
    sl: &IO_STACK_LOCATION,
    client: ClientId,
) -> Status {
    // SAFETY: the DeviceIoControl member, the one a device control selects.
    let input_len = unsafe { params::io::<IoDeviceIoControl>(&sl.Parameters) }.InputBufferLength;
    // SAFETY: the I/O manager's live IRP: METHOD_BUFFERED.
    let buffer = unsafe { crate::messages::system_buffer(irp) };
    let input: &[u8] = if buffer.is_null() || input_len == 0 {
        &[]
    } else {
        // SAFETY: the system buffer holds the input's `input_len` bytes until completion.
        unsafe { core::slice::from_raw_parts(buffer, input_len as usize) }
    };
    let Some(header) = ReplyHeader::from_bytes(input) else { return Status::INVALID_PARAMETER };
    let data = input.get(MESSAGE_HEADER_LEN..).unwrap_or(&[]);
    let clients = control.records.lock();
    // SAFETY: a live record (under the lock), or null.
    let Some(rec) = (unsafe { clients.find(client.0, true).as_mut() }) else {
        return Status::INVALID_DEVICE_STATE;
    };
    let mut w = rec.messages;
    // SAFETY: live records of the list.
    while let Some(x) = unsafe { w.as_mut() } {
        if x.id == header.message_id && x.stage == Stage::Delivered {
            if let Some((space, capacity)) = x.reply {
                let n = data.len().min(capacity);
                // SAFETY: the sender's non-paged reply space of `capacity` bytes, and the
                // system buffer's data.
                unsafe { ptr::copy_nonoverlapping(data.as_ptr(), space, n) };
                x.reply_len = n;
            }
            // SAFETY: the list's records are live.
            unsafe { remove(&mut rec.messages, w, waiter_link) };
            finish(x, Status::SUCCESS);
            return Status::SUCCESS;
        }
        w = x.next;
    }
    Status::FLT_NO_WAITER_FOR_REPLY
}

/// [`fsfilter::Services::send_message`] in the legacy model.
pub(crate) fn send<F: Filter>(
    state: &DriverState<F>,
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
    // SAFETY: the driver's control device, created with the channel's extension.
    let Some(control) = (unsafe { control_of(state) }) else {
        return Err(Error::PORT_DISCONNECTED);
    };
    let packet_len = MESSAGE_HEADER_LEN + message.len();
    let total = packet_len + capacity.unwrap_or(0);
    let mut space = PoolBytes::try_zeroed(total, SEND_TAG)?;
    // A checked range: a plain one keeps a panic path the compiler cannot rule out (the pool
    // buffer's length is not visible to it).
    let Some(body) = space.get_mut(MESSAGE_HEADER_LEN..packet_len) else {
        return Err(Error::INSUFFICIENT_RESOURCES);
    };
    body.iter_mut().zip(message).for_each(|(d, s)| *d = *s);
    if space.len() < total {
        return Err(Error::INSUFFICIENT_RESOURCES);
    }
    // One pointer to the whole buffer, from a unique borrow, taken after the last access through
    // `space` until the exchange ends: the packet (header and message, written and read through
    // it) and the reply space derive from it. A pointer taken from a sub-slice may reach only
    // that sub-slice, and one taken from a shared borrow may not write.
    let base = space.as_mut_ptr();
    let mut waiter = Waiter {
        next: ptr::null_mut(),
        id: 0,
        stage: Stage::Queued,
        status: Status::SUCCESS,
        packet: base,
        packet_len,
        reply: capacity.map(|c| (base.wrapping_add(packet_len), c)),
        reply_len: 0,
        event: UnsafeCell::new(KEVENT::default()),
    };
    // SAFETY: the record's event, ours, initialized before anyone can see it.
    unsafe { KeInitializeEvent(waiter.event.get(), NotificationEvent, false) };
    let w: *mut Waiter = &mut waiter;
    let mut taken: *mut IRP = ptr::null_mut();
    let record;
    {
        let clients = control.records.lock();
        record = clients.find(client.0, true);
        // SAFETY: a live record (under the lock), or null.
        let Some(rec) = (unsafe { record.as_mut() }) else {
            return Err(Error::PORT_DISCONNECTED);
        };
        rec.last_id = rec.last_id.wrapping_add(1);
        let id = rec.last_id;
        // FILTER_MESSAGE_HEADER's ReplyLength counts the FILTER_REPLY_HEADER (its Learn page).
        let reply_length = capacity.map_or(0, |c| (c + MESSAGE_HEADER_LEN) as u32);
        let header = MessageHeader { reply_length, message_id: id }.to_bytes();
        // SAFETY: our live record.
        let packet = unsafe { waiter_packet(w) };
        // SAFETY: the header's 16 bytes at the start of the packet, through the pointer to the
        // whole buffer (no reference to it is alive: the record holds the raw pointer).
        unsafe { ptr::copy_nonoverlapping(header.as_ptr(), packet, MESSAGE_HEADER_LEN) };
        // SAFETY: our record, not yet visible to anyone.
        unsafe { (*w).id = id };
        rec.senders += 1;
        // SAFETY: the list's records are live; ours is in no list.
        unsafe { append(&mut rec.messages, w, waiter_link) };
        // Hand it to the oldest pending get that can hold it.
        loop {
            let irp = take_get(rec);
            if irp.is_null() {
                break;
            }
            // SAFETY: our record, under the lock.
            let x = unsafe { &mut *w };
            // SAFETY: our queued record (under the lock) and a get taken from the queue.
            let delivered = unsafe { deliver(x, irp) };
            let one_way_done = x.stage == Stage::Done;
            // SAFETY: ours until completed, in no queue.
            unsafe { push(&mut taken, irp) };
            if delivered {
                if one_way_done {
                    // SAFETY: the list's records are live.
                    unsafe { remove(&mut rec.messages, w, waiter_link) };
                }
                break;
            }
        }
    }
    // SAFETY: outside the lock; the gets taken, their statuses set.
    unsafe { complete_chain(taken) };
    let timeout = timeout_ms.map(|ms| -i64::from(ms) * 10_000);
    let timeout_ptr = timeout.as_ref().map_or(ptr::null(), ptr::from_ref);
    // SAFETY: our live record.
    let event = unsafe { event_of(w) };
    // SAFETY: our initialized event, in our frame (a kernel-mode wait keeps it resident); IRQL at
    // most APC_LEVEL (checked above). Success or STATUS_TIMEOUT: the record tells which.
    let _ = unsafe { KeWaitForSingleObject(event, 0, 0, false, timeout_ptr) };
    let mut free: *mut ClientRecord = ptr::null_mut();
    let (stage, status, reply_len) = {
        let mut clients = control.records.lock();
        // SAFETY: the record we hold (senders > 0), under the lock.
        let rec = unsafe { &mut *record };
        // SAFETY: our record; nobody else touches it under the lock we hold.
        let x = unsafe { &*w };
        let done = (x.stage, x.status, x.reply_len);
        if x.stage != Stage::Done {
            // SAFETY: the list's records are live.
            unsafe { remove(&mut rec.messages, w, waiter_link) };
        }
        rec.senders -= 1;
        if rec.senders == 0 && !rec.connected {
            clients.unlink(record);
            free = record;
        }
        done
    };
    // SAFETY: unlinked, nobody holds it (or null).
    drop(unsafe { PoolBox::from_raw(free, SEND_TAG) });
    if stage != Stage::Done {
        return Ok(MessageSent::TimedOut);
    }
    if let Some(e) = Error::new(status) {
        return Err(e);
    }
    let Some(reply) = reply else { return Ok(MessageSent::Delivered(0)) };
    let got = space.get(packet_len..).unwrap_or(&[]);
    let n = reply_len.min(reply.len()).min(got.len());
    reply.iter_mut().zip(got).take(n).for_each(|(d, s)| *d = *s);
    Ok(MessageSent::Delivered(n))
}

/// The packet's start of a live record.
///
/// # Safety
/// `w` is live.
unsafe fn waiter_packet(w: *mut Waiter) -> *mut u8 {
    // SAFETY: the caller's live record.
    unsafe { (*w).packet }
}

/// The event of a live record, as the dispatcher object `KeWaitForSingleObject` takes.
///
/// # Safety
/// `w` is live.
unsafe fn event_of(w: *mut Waiter) -> *const core::ffi::c_void {
    // SAFETY: the caller's live record.
    unsafe { (*w).event.get() }.cast_const().cast()
}
