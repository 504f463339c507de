//! A user-mode message server for the filter-to-user direction of a channel (rule 25,
//! `fsfilter::Services::send_message`): what a verdict service's process does, in either model,
//! with the same bytes.
//!
//! - Minifilter: a connection to the communication port (`FilterConnectCommunicationPort`),
//!   overlapped `FilterGetMessage` ([`Machine::get_message`]) and `FilterReplyMessage`
//!   ([`Machine::reply_message`]).
//! - Legacy: the control device opened overlapped through its link
//!   ([`Machine::open_device_overlapped`], the context as the first extended attribute), an
//!   overlapped `DeviceIoControl(IOCTL_FSFILTER_GET_MESSAGE)` ([`Machine::device_control_then`])
//!   and `DeviceIoControl(IOCTL_FSFILTER_REPLY_MESSAGE)`.
//!
//! A get's buffer receives a [`MessageHeader`] and the message ([`Received`]); a reply is a
//! [`ReplyHeader`] naming the message, then the reply's bytes. [`MessageServer::serve`] keeps
//! one get pending and answers each message with a closure: how tests and the lab stand in for
//! the user-mode half of an on-access service.

use std::cell::RefCell;
use std::rc::Rc;

use fsfilter::{
    IOCTL_FSFILTER_GET_MESSAGE, IOCTL_FSFILTER_REPLY_MESSAGE, MESSAGE_HEADER_LEN, MessageHeader,
    ReplyHeader, Status,
};

use crate::files::DeviceHandle;
use crate::fltmgr::ports::PortHandle;
use crate::machine::{Machine, full_ea};

/// A connected client of a channel, in either model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageServer {
    /// A connection to a minifilter's communication port.
    Port(PortHandle),
    /// An overlapped handle to a legacy filter's control device.
    Device(DeviceHandle),
}

/// A message a get received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its `FILTER_MESSAGE_HEADER`.
    pub header: MessageHeader,
    /// The bytes after the header: the filter's message.
    pub message: Vec<u8>,
}

impl Received {
    /// The header and message in a get's buffer; `STATUS_INVALID_PARAMETER` for fewer bytes
    /// than a header (no get completes so).
    pub fn parse(bytes: &[u8]) -> Result<Received, Status> {
        let header = MessageHeader::from_bytes(bytes).ok_or(Status::INVALID_PARAMETER)?;
        let message = bytes.get(MESSAGE_HEADER_LEN..).unwrap_or(&[]).to_vec();
        Ok(Received { header, message })
    }

    /// The reply the sender waits for (its buffer's size, without the reply header), or
    /// `None` for a one-way message.
    pub fn reply_capacity(&self) -> Option<usize> {
        (self.header.reply_length as usize).checked_sub(MESSAGE_HEADER_LEN)
    }
}

/// The context in the legacy create's extended attribute (rule 23), named as the spy's reader
/// names it.
const CONTEXT_EA: &str = "FsFilterContext";

impl MessageServer {
    /// Connects to the minifilter channel `name` (the port `\<name>`) with `context`.
    pub fn connect_port(m: &mut Machine, name: &str, context: &[u8]) -> Result<Self, Status> {
        m.connect_communication_port(&format!("\\{name}"), context).map(MessageServer::Port)
    }

    /// Opens the legacy channel `name` (`\\.\<name>`, overlapped) with `context`.
    pub fn connect_device(m: &mut Machine, name: &str, context: &[u8]) -> Result<Self, Status> {
        let ea = (!context.is_empty()).then(|| full_ea(CONTEXT_EA, context));
        m.open_device_overlapped(&format!(r"\??\{name}"), ea.as_deref()).map(MessageServer::Device)
    }

    /// One overlapped get with a buffer of `capacity` bytes. Returns what the call returns
    /// (`STATUS_PENDING` while it waits; a failure at once, after which `then` does not run);
    /// `then` runs as a user action with the message or the status the get ended with
    /// (`STATUS_CANCELLED`, `STATUS_BUFFER_TOO_SMALL`, `STATUS_PORT_DISCONNECTED`).
    pub fn get(
        self,
        m: &mut Machine,
        capacity: usize,
        then: impl FnOnce(&mut Machine, Result<Received, Status>) + 'static,
    ) -> Status {
        match self {
            MessageServer::Port(p) => m.get_message(p, capacity, move |m, r| {
                then(m, r.and_then(|bytes| Received::parse(&bytes)));
            }),
            MessageServer::Device(h) => {
                // A get the driver failed at once ends there, as `FilterGetMessage` does: the
                // I/O manager queues no completion for it, so `then` runs in neither model then
                // (the slot only guards against a completion that would come regardless).
                let slot = Rc::new(RefCell::new(Some(then)));
                let later = slot.clone();
                let status = m.device_control_then(
                    h,
                    IOCTL_FSFILTER_GET_MESSAGE,
                    &[],
                    capacity,
                    move |m, r| {
                        let Some(then) = later.borrow_mut().take() else { return };
                        let got = if r.status.is_success() {
                            Received::parse(&r.data)
                        } else {
                            Err(r.status)
                        };
                        then(m, got);
                    },
                );
                if !status.is_success() {
                    slot.borrow_mut().take();
                }
                status
            }
        }
    }

    /// Replies `data` to message `message_id` (`FilterReplyMessage`, or the reply control
    /// code): the call's status (`STATUS_FLT_NO_WAITER_FOR_REPLY` when nobody waits for it).
    pub fn reply(self, m: &mut Machine, message_id: u64, data: &[u8]) -> Status {
        let mut bytes = ReplyHeader { status: 0, message_id }.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        match self {
            MessageServer::Port(p) => m.reply_message(p, &bytes),
            MessageServer::Device(h) => {
                m.device_control(h, IOCTL_FSFILTER_REPLY_MESSAGE, &bytes, 0).status
            }
        }
    }

    /// `CancelIoEx` on the connection: its pending gets end with `STATUS_CANCELLED`.
    pub fn cancel(self, m: &mut Machine) -> Status {
        match self {
            MessageServer::Port(p) => m.cancel_port_io(p),
            MessageServer::Device(h) => m.cancel_io(h),
        }
    }

    /// `CloseHandle`: the client disconnects.
    pub fn close(self, m: &mut Machine) -> Status {
        match self {
            MessageServer::Port(p) => m.close_port(p),
            MessageServer::Device(h) => m.close_device(h),
        }
    }

    /// Serves the channel: keeps one get of `capacity` bytes pending; each message goes to
    /// `answer`, whose `Some(reply)` is sent when the sender waits for one (`None` leaves the
    /// sender to its timeout); then the next get. It stops at the first get that fails (the
    /// connection closed, a cancel, a message too large for `capacity`). Returns the first
    /// get's status.
    pub fn serve(
        self,
        m: &mut Machine,
        capacity: usize,
        answer: impl FnMut(&mut Machine, &Received) -> Option<Vec<u8>> + 'static,
    ) -> Status {
        let answer: Answer = Rc::new(RefCell::new(answer));
        self.arm(m, capacity, answer)
    }

    fn arm(self, m: &mut Machine, capacity: usize, answer: Answer) -> Status {
        self.get(m, capacity, move |m, got| {
            let Ok(msg) = got else { return };
            let reply = (answer.borrow_mut())(m, &msg);
            if let (Some(_), Some(reply)) = (msg.reply_capacity(), reply) {
                let _ = self.reply(m, msg.header.message_id, &reply);
            }
            let _ = self.arm(m, capacity, answer);
        })
    }
}

/// [`MessageServer::serve`]'s closure, shared by its successive gets.
type Answer = Rc<RefCell<dyn FnMut(&mut Machine, &Received) -> Option<Vec<u8>>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_message_is_its_header_and_bytes() {
        let mut bytes = MessageHeader { reply_length: 24, message_id: 3 }.to_bytes().to_vec();
        bytes.extend_from_slice(b"ask");
        let r = Received::parse(&bytes).unwrap();
        assert_eq!(r.header.message_id, 3);
        assert_eq!(r.message, b"ask");
        assert_eq!(r.reply_capacity(), Some(8));
        let one_way = MessageHeader { reply_length: 0, message_id: 4 }.to_bytes();
        assert_eq!(Received::parse(&one_way).unwrap().reply_capacity(), None);
        assert_eq!(Received::parse(&one_way[..15]), Err(Status::INVALID_PARAMETER));
    }
}
