//! User-mode messages: a channel between a user-mode program and the filter, declared beside the
//! registration ([`crate::Filter::MESSAGES`]) and carried by each model its own way.
//!
//! - Minifilter: a Filter Manager communication port `\<name>` (`FltCreateCommunicationPort`);
//!   user mode calls `FilterConnectCommunicationPort` and `FilterSendMessage`.
//! - Legacy: the symbolic link `\DosDevices\<name>` to the filter's control device; user mode
//!   opens `\\.\<name>` (`CreateFile`, the connection context in an extended attribute) and calls
//!   `DeviceIoControl` with [`IOCTL_FSFILTER_MESSAGE`] (`METHOD_BUFFERED`).
//!
//! `docs/callback-model.md` (the message rules) says in which context each callback runs;
//! `docs/semantics.md` (row `messages`) what differs between the models.

/// A connected user-mode client, as the backend identifies it: the address of the minifilter
/// backend's record of the connection (which holds its client port), the legacy control device's
/// file object. Unique among the clients connected at once; a value may
/// come back for a later client once [`crate::Filter::client_disconnect`] has run for this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(pub usize);

/// The longest channel name, in characters.
pub const MAX_CHANNEL_NAME: usize = 64;

/// The largest `max_message` a channel may declare (bytes): the backends allocate buffers of that
/// size from nonpaged pool for each message.
pub const MAX_MESSAGE: u32 = 64 * 1024;

/// The device control code of a message on the legacy channel:
/// `CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS)`, the first function
/// code of the range left to vendors (0x800..0xFFF). Readers and the lab use this constant.
pub const IOCTL_FSFILTER_MESSAGE: u32 = ctl_code(0x22, 0x800, 0, 0);

/// The device control code with which a legacy channel's client waits for a message the filter
/// sends ([`crate::Services::send_message`]): `CTL_CODE(FILE_DEVICE_UNKNOWN, 0x801,
/// METHOD_BUFFERED, FILE_ANY_ACCESS)`. The output buffer receives a [`MessageHeader`] and the
/// message, as `FilterGetMessage`'s buffer receives `FILTER_MESSAGE_HEADER` and the message; the
/// request stays pending until a message comes (an overlapped `DeviceIoControl`), and a
/// `CancelIo` or the handle's close cancels it.
pub const IOCTL_FSFILTER_GET_MESSAGE: u32 = ctl_code(0x22, 0x801, 0, 0);

/// The device control code with which a legacy channel's client replies to a message: the input
/// buffer holds a [`ReplyHeader`] and the reply, as `FilterReplyMessage`'s buffer holds
/// `FILTER_REPLY_HEADER` and the reply. `CTL_CODE(FILE_DEVICE_UNKNOWN, 0x802, METHOD_BUFFERED,
/// FILE_ANY_ACCESS)`.
pub const IOCTL_FSFILTER_REPLY_MESSAGE: u32 = ctl_code(0x22, 0x802, 0, 0);

/// The header before a message the filter sent, in both models: the layout of fltuser.h's
/// `FILTER_MESSAGE_HEADER` (`ULONG ReplyLength; ULONGLONG MessageId;`, 16 bytes with the padding
/// x64 puts before the 64-bit field), little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// The reply the sender waits for, in bytes, counting the [`ReplyHeader`] before it
    /// (Learn, `FILTER_MESSAGE_HEADER`: "including the FILTER_REPLY_HEADER header"); 0 when it
    /// waits for none.
    pub reply_length: u32,
    /// The message's number, which the reply names.
    pub message_id: u64,
}

/// The header before a reply, in both models: the layout of fltuser.h's `FILTER_REPLY_HEADER`
/// (`NTSTATUS Status; ULONGLONG MessageId;`, 16 bytes), little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    /// The status the client gives with its reply (the Filter Manager does not interpret it).
    pub status: i32,
    /// The number of the message replied to.
    pub message_id: u64,
}

/// The size of [`MessageHeader`] and of [`ReplyHeader`] on the wire.
pub const MESSAGE_HEADER_LEN: usize = 16;

impl MessageHeader {
    /// The header's 16 bytes.
    pub const fn to_bytes(self) -> [u8; MESSAGE_HEADER_LEN] {
        let r = self.reply_length.to_le_bytes();
        let m = self.message_id.to_le_bytes();
        [r[0], r[1], r[2], r[3], 0, 0, 0, 0, m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]]
    }

    /// The header at the start of `bytes`; `None` when they are shorter than a header.
    pub fn from_bytes(bytes: &[u8]) -> Option<MessageHeader> {
        let (r, m) = split_header(bytes)?;
        Some(MessageHeader {
            reply_length: u32::from_le_bytes(r),
            message_id: u64::from_le_bytes(m),
        })
    }
}

impl ReplyHeader {
    /// The header's 16 bytes.
    pub const fn to_bytes(self) -> [u8; MESSAGE_HEADER_LEN] {
        let s = self.status.to_le_bytes();
        let m = self.message_id.to_le_bytes();
        [s[0], s[1], s[2], s[3], 0, 0, 0, 0, m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]]
    }

    /// The header at the start of `bytes`; `None` when they are shorter than a header.
    pub fn from_bytes(bytes: &[u8]) -> Option<ReplyHeader> {
        let (s, m) = split_header(bytes)?;
        Some(ReplyHeader { status: i32::from_le_bytes(s), message_id: u64::from_le_bytes(m) })
    }
}

/// The first and the 64-bit field of a 16-byte header.
fn split_header(bytes: &[u8]) -> Option<([u8; 4], [u8; 8])> {
    let head: &[u8; MESSAGE_HEADER_LEN] = bytes.get(..MESSAGE_HEADER_LEN)?.try_into().ok()?;
    let [a, b, c, d, _, _, _, _, m @ ..] = *head;
    Some(([a, b, c, d], m))
}

/// How a message the filter sent ([`crate::Services::send_message`]) ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageSent {
    /// The client received the message and, when a reply was asked for, replied: the length of
    /// the reply copied into the reply buffer (0 when none was asked for).
    Delivered(usize),
    /// The timeout passed before the client received the message, or before it replied
    /// (`STATUS_TIMEOUT`, a success status in NT: the send did not fail, it has no answer).
    TimedOut,
}

/// The `CTL_CODE` macro of `devioctl.h`.
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// The filter's message channel, declared beside its registration (like
/// [`crate::Filter::NAME_QUERIES`]). Build it with [`MessageChannel::new`] and end the constant
/// with [`MessageChannel::validated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageChannel {
    /// ASCII name user mode connects to. Minifilter: the communication port `\<name>`.
    /// Legacy: the symbolic link `\DosDevices\<name>` to the filter's control device
    /// (`\FileSystem\Filters\<service>`), as FileSpy names its control device for user mode.
    pub name: &'static str,
    /// Most clients connected at once (`FltCreateCommunicationPort`'s `MaxConnections`; the
    /// legacy backend counts opens of its control device and refuses more).
    pub max_clients: u32,
    /// Largest message, largest reply and largest connection context the backend copies (bytes;
    /// its kernel buffers).
    pub max_message: u32,
    /// The filter sends messages to its clients ([`crate::Services::send_message`], rule 25):
    /// only then do the backends carry that direction's code (the legacy channel's get and reply
    /// requests, the records senders wait on); without it `send_message` answers
    /// `STATUS_NOT_SUPPORTED` and a legacy client's get or reply `STATUS_INVALID_DEVICE_REQUEST`.
    pub sends: bool,
}

/// What is wrong with a channel declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The name is empty, longer than [`MAX_CHANNEL_NAME`], or has a character other than
    /// printable ASCII, or a backslash.
    Name,
    /// `max_clients` is 0.
    NoClients,
    /// `max_message` is 0 or above [`MAX_MESSAGE`].
    MessageSize,
}

impl ChannelError {
    /// What went wrong, in words.
    pub const fn message(self) -> &'static str {
        match self {
            ChannelError::Name => {
                "a channel name is 1 to 64 printable ASCII characters, without a backslash"
            }
            ChannelError::NoClients => "a channel admits at least one client",
            ChannelError::MessageSize => "a channel's max_message is 1 to 65536 bytes",
        }
    }
}

impl MessageChannel {
    /// A channel named `name` for one client and messages of up to 4 KiB.
    pub const fn new(name: &'static str) -> MessageChannel {
        MessageChannel { name, max_clients: 1, max_message: 4096, sends: false }
    }

    /// At most `n` clients connected at once.
    pub const fn max_clients(self, n: u32) -> MessageChannel {
        MessageChannel { max_clients: n, ..self }
    }

    /// The filter also sends messages to its clients ([`crate::Services::send_message`]).
    pub const fn sends_messages(self) -> MessageChannel {
        MessageChannel { sends: true, ..self }
    }

    /// Messages, replies and connection contexts of at most `bytes` bytes.
    pub const fn max_message(self, bytes: u32) -> MessageChannel {
        MessageChannel { max_message: bytes, ..self }
    }

    /// The channel, or what is wrong with it.
    pub const fn check(self) -> Result<MessageChannel, ChannelError> {
        let name = self.name.as_bytes();
        if name.is_empty() || name.len() > MAX_CHANNEL_NAME {
            return Err(ChannelError::Name);
        }
        let mut rest = name;
        while let [c, tail @ ..] = rest {
            if *c <= b' ' || *c > b'~' || *c == b'\\' {
                return Err(ChannelError::Name);
            }
            rest = tail;
        }
        if self.max_clients == 0 {
            return Err(ChannelError::NoClients);
        }
        if self.max_message == 0 || self.max_message > MAX_MESSAGE {
            return Err(ChannelError::MessageSize);
        }
        Ok(self)
    }

    /// The channel, or a compile error naming the mistake when evaluated in a `const`.
    ///
    /// Use it only in constants: at run time it would panic.
    #[expect(clippy::panic, reason = "const-evaluated: the panic is a compile error")]
    pub const fn validated(self) -> MessageChannel {
        match self.check() {
            Ok(c) => c,
            Err(e) => panic!("{}", e.message()),
        }
    }

    /// `max_message` as a length.
    pub const fn max_len(&self) -> usize {
        self.max_message as usize
    }

    /// The arguments of a [`crate::Services::send_message`] on this channel, as both backends
    /// check them before anything is sent (rule 25): a message of 1 to `max_message` bytes, a
    /// reply buffer (`reply_capacity`, `None` for a one-way message) of at most `max_message`
    /// bytes, and a timeout of at least 1 ms (`None`: without limit); otherwise
    /// `STATUS_INVALID_PARAMETER`.
    pub const fn check_send(
        &self,
        message_len: usize,
        reply_capacity: Option<usize>,
        timeout_ms: Option<u32>,
    ) -> Result<(), crate::Error> {
        let reply_too_long = match reply_capacity {
            Some(c) => c > self.max_len(),
            None => false,
        };
        if message_len == 0
            || message_len > self.max_len()
            || reply_too_long
            || matches!(timeout_ms, Some(0))
        {
            return Err(crate::Error::INVALID_PARAMETER);
        }
        Ok(())
    }
}

/// The channel of filter type `F` ([`crate::Filter::MESSAGES`]), checked at compile time (a
/// mistake in it does not compile): the backends test this constant first, so a filter without a
/// channel carries none of its code.
#[inline(always)]
pub fn message_channel<F: crate::Filter>() -> Option<MessageChannel> {
    const {
        match F::MESSAGES {
            Some(c) => Some(c.validated()),
            None => None,
        }
    }
}

/// The channel of filter type `F` when it declares that the filter sends messages
/// ([`MessageChannel::sends_messages`]): the backends test this constant before every path of
/// that direction, so a filter that only answers carries none of it.
#[inline(always)]
pub fn sending_channel<F: crate::Filter>() -> Option<MessageChannel> {
    const {
        match F::MESSAGES {
            Some(c) if c.sends => Some(c.validated()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_ioctl_is_ctl_code_of_the_first_vendor_function() {
        // devioctl.h: CTL_CODE(FILE_DEVICE_UNKNOWN 0x22, 0x800, METHOD_BUFFERED 0,
        // FILE_ANY_ACCESS 0).
        assert_eq!(IOCTL_FSFILTER_MESSAGE, 0x0022_2000);
        assert_eq!(IOCTL_FSFILTER_MESSAGE & 3, 0, "METHOD_BUFFERED");
        assert_eq!(IOCTL_FSFILTER_GET_MESSAGE, 0x0022_2004);
        assert_eq!(IOCTL_FSFILTER_REPLY_MESSAGE, 0x0022_2008);
    }

    #[test]
    fn sends_are_checked_against_the_channel() {
        let c = MessageChannel::new("FsfAsk").max_message(32).sends_messages();
        assert_eq!(c.check_send(1, None, None), Ok(()));
        assert_eq!(c.check_send(32, Some(32), Some(1)), Ok(()));
        assert_eq!(c.check_send(8, Some(0), Some(1000)), Ok(()), "an empty reply buffer");
        let bad = Err(crate::Error::INVALID_PARAMETER);
        assert_eq!(c.check_send(0, None, None), bad, "an empty message");
        assert_eq!(c.check_send(33, None, None), bad, "beyond max_message");
        assert_eq!(c.check_send(8, Some(33), None), bad, "a reply buffer beyond max_message");
        assert_eq!(c.check_send(8, None, Some(0)), bad, "a zero timeout");
    }

    #[test]
    fn headers_have_the_fltuser_layout() {
        let m = MessageHeader { reply_length: 0x0102_0304, message_id: 0x1122_3344_5566_7788 };
        let b = m.to_bytes();
        assert_eq!(b[..4], [4, 3, 2, 1]);
        assert_eq!(b[4..8], [0, 0, 0, 0], "padding before the 64-bit MessageId");
        assert_eq!(b[8..], [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(MessageHeader::from_bytes(&b), Some(m));
        let r = ReplyHeader { status: -1_073_741_790, message_id: 7 };
        let mut long = r.to_bytes().to_vec();
        long.extend_from_slice(b"reply");
        assert_eq!(ReplyHeader::from_bytes(&long), Some(r));
        assert_eq!(ReplyHeader::from_bytes(&long[..15]), None);
        assert_eq!(MessageHeader::from_bytes(&[]), None);
    }

    #[test]
    fn channels_are_checked() {
        let c = MessageChannel::new("FsFilterSpy").max_clients(2).max_message(512);
        assert_eq!(c.check(), Ok(c));
        assert_eq!(c.max_len(), 512);
        assert_eq!(MessageChannel::new("").check(), Err(ChannelError::Name));
        assert_eq!(MessageChannel::new("a\\b").check(), Err(ChannelError::Name));
        assert_eq!(MessageChannel::new("a b").check(), Err(ChannelError::Name));
        assert_eq!(MessageChannel::new("é").check(), Err(ChannelError::Name));
        let long = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        assert_eq!(long.len(), MAX_CHANNEL_NAME + 1);
        assert_eq!(MessageChannel::new(long).check(), Err(ChannelError::Name));
        assert_eq!(c.max_clients(0).check(), Err(ChannelError::NoClients));
        assert_eq!(c.max_message(0).check(), Err(ChannelError::MessageSize));
        assert_eq!(c.max_message(MAX_MESSAGE + 1).check(), Err(ChannelError::MessageSize));
        assert!(c.max_message(MAX_MESSAGE).check().is_ok());
        assert!(ChannelError::Name.message().contains("backslash"));
        assert!(!c.sends && c.sends_messages().sends);
    }
}
