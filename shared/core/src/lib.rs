//! fsfilter: the filter model shared by the legacy and minifilter backends.
//!
//! A file-system filter is written once against this crate: a const [`Registration`] and an
//! implementation of [`Filter`], whose callbacks are shaped like the Filter Manager's. The
//! `fsfilter-minifilter` backend runs it as a minifilter; `fsfilter-legacy` runs it as a legacy
//! filter with attached device objects. Operation views ([`PreOperation`], [`PostOperation`]) are
//! the same type under both.
//!
//! The crate is `no_std`, has no unsafe code and no Windows types: it is the vocabulary, not the
//! kernel glue. Its `testing` feature (off by default) adds [`testing`], host-only support for
//! the unit tests of filter logic (a fake [`Services`], operation and instance builders), which
//! uses `std`: a sample enables it as a dev-dependency feature only.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "testing"))]
extern crate std;

mod altitude;
mod capabilities;
mod contexts;
mod filter;
mod flags;
mod loadbuf;
mod major;
mod messages;
mod operation;
mod params;
mod registration;
mod services;
mod slots;
mod status;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod trace;
mod volume;

pub use altitude::{
    ALTITUDE_CAPACITY, Altitude, AltitudeError, GroupSource, LegacyAltitude, LoadOrderGroup,
};
pub use capabilities::Capabilities;
pub use contexts::{
    ContextRequest, MAX_STREAM_CONTEXT_WORDS, StreamContext, StreamContextBackend, StreamContextId,
};
pub use filter::{
    Filter, Instance, InstanceId, InstanceSetup, PostOutcome, PreOutcome, VolumeInfo,
    context_words, handle_context_words, load_buffers, post_only_is_zero_sized, queries_names,
    queries_processes, registration_in_force, reparses, scans_data, stream_context_words,
};
pub use flags::{
    CallbackDataFlags, InstanceSetupFlags, IrpFlags, OperationFlags, PostFlags, RegistrationFlags,
    TeardownFlags, UnloadFlags, WdkFlags,
};
pub use loadbuf::{LoadBuffer, MAX_LOAD_BUFFER, MAX_LOAD_BUFFERS, check_load_buffer_len};
pub use major::{
    FLT_INTERNAL_OPERATION_COUNT, IRP_MJ_MAXIMUM_FUNCTION, IRP_MJ_OPERATION_END, MAX_OPERATIONS,
    MAX_REGISTERED, MajorFunction, OperationKind, directory, fsctl, lock, read_write,
};
pub use messages::{
    ChannelError, ClientId, IOCTL_FSFILTER_GET_MESSAGE, IOCTL_FSFILTER_MESSAGE,
    IOCTL_FSFILTER_REPLY_MESSAGE, MAX_CHANNEL_NAME, MAX_MESSAGE, MESSAGE_HEADER_LEN,
    MessageChannel, MessageHeader, MessageSent, ReplyHeader, ctl_code, message_channel,
    sending_channel,
};
pub use operation::{
    Buffer, BufferSource, ControlParameters, CreateParameters, DirectoryParameters, FileName,
    HeaderSource, InformationParameters, IoStatus, LazyHeader, LockParameters, ModWriteParameters,
    OperationBuffer, OperationHeader, Parameters, PostOperation, PreOperation, ReadWriteParameters,
    RequestorMode, SectionSyncParameters, create, may_synchronize, reparse, section_sync,
};
pub use params::{
    MAX_STRING_UNITS, ParameterDoc, ParameterList, ParameterValue, ServiceParameters,
};
pub use registration::{Callbacks, Operation, Registration, RegistrationError};
pub use services::{
    DataScanMode, DeferredPost, FileNameInformation, Irql, NameBackend, NameId, NameKind,
    NameParts, NameRanges, PendBackend, PendReceipt, PendedOperation, PostBackend, PostReceipt,
    PreResume, ProcessId, ScanSection, SectionBackend, SectionId, Services, defer_post, parse_name,
    pend,
};
pub use status::{Error, Result, Severity, Status};
pub use volume::{FilesystemType, VolumeDeviceType, device_type};
