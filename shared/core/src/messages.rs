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

/// A connected user-mode client, as the backend identifies it: the minifilter's client port, the
/// legacy control device's file object. Unique among the clients connected at once; a value may
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
        MessageChannel { name, max_clients: 1, max_message: 4096 }
    }

    /// At most `n` clients connected at once.
    pub const fn max_clients(self, n: u32) -> MessageChannel {
        MessageChannel { max_clients: n, ..self }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_ioctl_is_ctl_code_of_the_first_vendor_function() {
        // devioctl.h: CTL_CODE(FILE_DEVICE_UNKNOWN 0x22, 0x800, METHOD_BUFFERED 0,
        // FILE_ANY_ACCESS 0).
        assert_eq!(IOCTL_FSFILTER_MESSAGE, 0x0022_2000);
        assert_eq!(IOCTL_FSFILTER_MESSAGE & 3, 0, "METHOD_BUFFERED");
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
    }
}
