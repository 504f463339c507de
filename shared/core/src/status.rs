//! `Status`: the NTSTATUS newtype, its named constants, and the model's error type.

use core::fmt;

/// An NTSTATUS value.
///
/// The layout is exactly the 32-bit signed NTSTATUS of the kernel, so a `Status` crosses the
/// driver boundary unchanged. Logic names statuses through the associated constants; it never
/// writes bare hex.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub i32);

/// The severity field of an NTSTATUS (its top two bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// `STATUS_SEVERITY_SUCCESS` (0).
    Success,
    /// `STATUS_SEVERITY_INFORMATIONAL` (1).
    Informational,
    /// `STATUS_SEVERITY_WARNING` (2).
    Warning,
    /// `STATUS_SEVERITY_ERROR` (3).
    Error,
}

/// Defines one group of named statuses: the constants, the group's packed names and values.
macro_rules! statuses {
    ($names:ident, $bare:ident, $values:ident, $all:ident; $( $(#[$doc:meta])* $name:ident = $value:literal, )*) => {
        impl Status {
            $(
                $(#[$doc])*
                #[doc = concat!("`STATUS_", stringify!($name), "` (", stringify!($value), ").")]
                pub const $name: Status = Status(($value as u32) as i32);
            )*

            /// The WDK spellings of the group, packed, in the order of the values: a driver that
            /// names statuses pays a few bytes per name and no code per status.
            const $names: crate::text::Names =
                crate::text::Names(concat!($( "STATUS_", stringify!($name), "\n", )*));

            /// The same names without the `STATUS_` prefix, for lookups by name: what a driver
            /// that parses names carries (the prefixed table is for display, on the host).
            const $bare: crate::text::Names =
                crate::text::Names(concat!($( stringify!($name), "\n", )*));

            /// The values of the group.
            const $values: &'static [u32] = &[$( $value, )*];

            /// The named statuses of the group, in the order of facts.md §7.
            pub const $all: &'static [Status] = &[$(Status::$name),*];
        }
    };
}

/// `name` without its `STATUS_` prefix (any ASCII case); `None` without one.
fn strip_prefix(name: &str) -> Option<&str> {
    const PREFIX: &str = "STATUS_";
    match name.get(..PREFIX.len()) {
        Some(p) if crate::text::eq_ignore_case(p, PREFIX) => name.get(PREFIX.len()..),
        _ => None,
    }
}

impl Status {
    /// The WDK spelling of this status (`"STATUS_SUCCESS"`), if it is one the model names.
    pub fn name(self) -> Option<&'static str> {
        let find = |names: crate::text::Names, values: &[u32]| {
            names.get(values.iter().position(|v| *v == self.bits())?)
        };
        find(Status::IO_NAMES, Status::IO_VALUES)
            .or_else(|| find(Status::MM_NAMES, Status::MM_VALUES))
            .or_else(|| find(Status::MSG_NAMES, Status::MSG_VALUES))
            .or_else(|| find(Status::FLT_NAMES, Status::FLT_VALUES))
    }

    /// Looks a status up by its WDK spelling (`"STATUS_ACCESS_DENIED"`, any ASCII case).
    pub fn from_name(name: &str) -> Option<Status> {
        let bare = strip_prefix(name)?;
        Status::from_io_name(name)
            .or_else(|| {
                let index = Status::MM_BARE_NAMES.position(bare)?;
                Status::MM_VALUES.get(index).map(|v| Status::from_bits(*v))
            })
            .or_else(|| {
                let index = Status::MSG_BARE_NAMES.position(bare)?;
                Status::MSG_VALUES.get(index).map(|v| Status::from_bits(*v))
            })
            .or_else(|| {
                let index = Status::FLT_BARE_NAMES.position(bare)?;
                Status::FLT_VALUES.get(index).map(|v| Status::from_bits(*v))
            })
    }

    /// Looks up a status an operation can complete with, by its WDK spelling: every named status
    /// except the Filter Manager's own (facility 0x1C, [`Status::FLT_NAMED`]), which are answers
    /// to the Filter Manager, never an I/O result, and the memory manager's section statuses and
    /// FsRtl's ([`Status::MM_NAMED`]) and the message channel's ([`Status::MSG_NAMED`]), named
    /// for display only (a driver completes with them by value). Drivers that parse names use
    /// this one and carry only these names.
    pub fn from_io_name(name: &str) -> Option<Status> {
        let index = Status::IO_BARE_NAMES.position(strip_prefix(name)?)?;
        Status::IO_VALUES.get(index).map(|v| Status::from_bits(*v))
    }

    /// Every named status: [`Status::IO_NAMED`], [`Status::MM_NAMED`], [`Status::MSG_NAMED`],
    /// then [`Status::FLT_NAMED`].
    pub fn all_named() -> impl Iterator<Item = Status> {
        Status::IO_NAMED
            .iter()
            .chain(Status::MM_NAMED)
            .chain(Status::MSG_NAMED)
            .chain(Status::FLT_NAMED)
            .copied()
    }
}

statuses! {
    IO_NAMES, IO_BARE_NAMES, IO_VALUES, IO_NAMED;
    SUCCESS = 0x0000_0000,
    /// Returned by a dispatch routine that marked the IRP pending.
    PENDING = 0x0000_0103,
    TIMEOUT = 0x0000_0102,
    REPARSE = 0x0000_0104,
    /// A directory-change notification ended by its handle's cleanup.
    NOTIFY_CLEANUP = 0x0000_010B,
    /// A directory-change notification whose changes did not fit: enumerate again.
    NOTIFY_ENUM_DIR = 0x0000_010C,
    OBJECT_NAME_EXISTS = 0x4000_0000,
    BUFFER_OVERFLOW = 0x8000_0005,
    NO_MORE_FILES = 0x8000_0006,
    UNSUCCESSFUL = 0xC000_0001,
    NOT_IMPLEMENTED = 0xC000_0002,
    INVALID_INFO_CLASS = 0xC000_0003,
    INFO_LENGTH_MISMATCH = 0xC000_0004,
    INVALID_HANDLE = 0xC000_0008,
    INVALID_PARAMETER = 0xC000_000D,
    NO_SUCH_DEVICE = 0xC000_000E,
    NO_SUCH_FILE = 0xC000_000F,
    INVALID_DEVICE_REQUEST = 0xC000_0010,
    END_OF_FILE = 0xC000_0011,
    WRONG_VOLUME = 0xC000_0012,
    NO_MEDIA_IN_DEVICE = 0xC000_0013,
    MORE_PROCESSING_REQUIRED = 0xC000_0016,
    NOT_MAPPED_VIEW = 0xC000_0019,
    INVALID_VIEW_SIZE = 0xC000_001F,
    INVALID_FILE_FOR_SECTION = 0xC000_0020,
    ACCESS_DENIED = 0xC000_0022,
    BUFFER_TOO_SMALL = 0xC000_0023,
    NOT_LOCKED = 0xC000_002A,
    OBJECT_NAME_INVALID = 0xC000_0033,
    OBJECT_NAME_NOT_FOUND = 0xC000_0034,
    OBJECT_NAME_COLLISION = 0xC000_0035,
    OBJECT_PATH_NOT_FOUND = 0xC000_003A,
    DEVICE_ALREADY_ATTACHED = 0xC000_0038,
    SHARING_VIOLATION = 0xC000_0043,
    FILE_LOCK_CONFLICT = 0xC000_0054,
    LOCK_NOT_GRANTED = 0xC000_0055,
    DELETE_PENDING = 0xC000_0056,
    PRIVILEGE_NOT_HELD = 0xC000_0061,
    RANGE_NOT_LOCKED = 0xC000_007E,
    DISK_FULL = 0xC000_007F,
    INSUFFICIENT_RESOURCES = 0xC000_009A,
    MEDIA_WRITE_PROTECTED = 0xC000_00A2,
    DEVICE_NOT_READY = 0xC000_00A3,
    FILE_IS_A_DIRECTORY = 0xC000_00BA,
    IO_TIMEOUT = 0xC000_00B5,
    NOT_SUPPORTED = 0xC000_00BB,
    BAD_NETWORK_NAME = 0xC000_00CC,
    OPLOCK_NOT_GRANTED = 0xC000_00E2,
    INVALID_PARAMETER_8 = 0xC000_00F6,
    INVALID_PARAMETER_9 = 0xC000_00F7,
    DIRECTORY_NOT_EMPTY = 0xC000_0101,
    NOT_A_DIRECTORY = 0xC000_0103,
    IMAGE_ALREADY_LOADED = 0xC000_010E,
    CANCELLED = 0xC000_0120,
    CANNOT_DELETE = 0xC000_0121,
    FILE_CLOSED = 0xC000_0128,
    UNRECOGNIZED_VOLUME = 0xC000_014F,
    INVALID_DEVICE_STATE = 0xC000_0184,
    FS_DRIVER_REQUIRED = 0xC000_019C,
    NOT_FOUND = 0xC000_0225,
    USER_MAPPED_FILE = 0xC000_0243,
    VOLUME_DISMOUNTED = 0xC000_026E,
    DRIVER_BLOCKED = 0xC000_036C,
}

statuses! {
    MM_NAMES, MM_BARE_NAMES, MM_VALUES, MM_NAMED;
    /// A pre-operation FsFilter callback completed the operation itself.
    FSFILTER_OP_COMPLETED_SUCCESSFULLY = 0x0000_0126,
    INVALID_PAGE_PROTECTION = 0xC000_0045,
    MAPPED_FILE_SIZE_ZERO = 0xC000_011E,
}

statuses! {
    MSG_NAMES, MSG_BARE_NAMES, MSG_VALUES, MSG_NAMED;
    /// A user buffer outside the user address space, or one that faulted while copied
    /// (`fsfilter_kernel::usercopy`).
    ACCESS_VIOLATION = 0xC000_0005,
    /// A message channel has its most clients connected (`MaxConnections`).
    CONNECTION_COUNT_LIMIT = 0xC000_0246,
    /// A message on a connection whose other end was closed (the filter's `FltCloseClientPort`).
    PORT_DISCONNECTED = 0xC000_0037,
}

statuses! {
    FLT_NAMES, FLT_BARE_NAMES, FLT_VALUES, FLT_NAMED;
    FLT_IO_COMPLETE = 0x001C_0001,
    FLT_BUFFER_TOO_SMALL = 0x801C_0001,
    FLT_NO_HANDLER_DEFINED = 0xC01C_0001,
    FLT_CONTEXT_ALREADY_DEFINED = 0xC01C_0002,
    FLT_INVALID_ASYNCHRONOUS_REQUEST = 0xC01C_0003,
    FLT_DISALLOW_FAST_IO = 0xC01C_0004,
    FLT_INVALID_NAME_REQUEST = 0xC01C_0005,
    FLT_NOT_SAFE_TO_POST_OPERATION = 0xC01C_0006,
    FLT_NOT_INITIALIZED = 0xC01C_0007,
    FLT_FILTER_NOT_READY = 0xC01C_0008,
    FLT_POST_OPERATION_CLEANUP = 0xC01C_0009,
    FLT_INTERNAL_ERROR = 0xC01C_000A,
    FLT_DELETING_OBJECT = 0xC01C_000B,
    FLT_MUST_BE_NONPAGED_POOL = 0xC01C_000C,
    FLT_DUPLICATE_ENTRY = 0xC01C_000D,
    FLT_CBDQ_DISABLED = 0xC01C_000E,
    FLT_DO_NOT_ATTACH = 0xC01C_000F,
    FLT_DO_NOT_DETACH = 0xC01C_0010,
    FLT_INSTANCE_ALTITUDE_COLLISION = 0xC01C_0011,
    FLT_INSTANCE_NAME_COLLISION = 0xC01C_0012,
    FLT_FILTER_NOT_FOUND = 0xC01C_0013,
    FLT_VOLUME_NOT_FOUND = 0xC01C_0014,
    FLT_INSTANCE_NOT_FOUND = 0xC01C_0015,
    FLT_CONTEXT_ALLOCATION_NOT_FOUND = 0xC01C_0016,
    FLT_INVALID_CONTEXT_REGISTRATION = 0xC01C_0017,
    FLT_NAME_CACHE_MISS = 0xC01C_0018,
    FLT_NO_DEVICE_OBJECT = 0xC01C_0019,
    FLT_VOLUME_ALREADY_MOUNTED = 0xC01C_001A,
    FLT_ALREADY_ENLISTED = 0xC01C_001B,
    FLT_CONTEXT_ALREADY_LINKED = 0xC01C_001C,
    FLT_NO_WAITER_FOR_REPLY = 0xC01C_0020,
    FLT_REGISTRATION_BUSY = 0xC01C_0023,
    FLT_WCOS_NOT_SUPPORTED = 0xC01C_0024,
}

impl Status {
    /// The raw NTSTATUS bits, as `ntstatus.h` writes them.
    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// Builds a status from its `ntstatus.h` spelling (`0xC0000022`).
    pub const fn from_bits(bits: u32) -> Status {
        Status(bits as i32)
    }

    /// `NT_SUCCESS`: success or informational severity.
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// `NT_ERROR`: error severity.
    pub const fn is_error(self) -> bool {
        matches!(self.severity(), Severity::Error)
    }

    /// `NT_WARNING`: warning severity.
    pub const fn is_warning(self) -> bool {
        matches!(self.severity(), Severity::Warning)
    }

    /// The severity field.
    pub const fn severity(self) -> Severity {
        match self.bits() >> 30 {
            0 => Severity::Success,
            1 => Severity::Informational,
            2 => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// The facility field (0x1C for the Filter Manager).
    pub const fn facility(self) -> u16 {
        ((self.bits() >> 16) & 0x0FFF) as u16
    }

    /// `Ok(self)` when `NT_SUCCESS`, otherwise the failure as an [`Error`].
    pub const fn ok(self) -> Result<Status> {
        if self.is_success() { Ok(self) } else { Err(Error(self)) }
    }

    /// The user-mode HRESULT that `FilterXxx` functions and `fltmc` report for a Filter Manager
    /// status (facts.md §7: `0xC01C00nn` is reported as `0x801F00nn`); other statuses map through
    /// `HRESULT_FROM_NT`.
    pub const fn to_hresult(self) -> u32 {
        if self.facility() == 0x1C && self.is_error() {
            0x801F_0000 | (self.bits() & 0xFFFF)
        } else {
            self.bits() | 0x1000_0000
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "0x{:08X}", self.bits()),
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X})", self.bits()),
            None => write!(f, "Status(0x{:08X})", self.bits()),
        }
    }
}

/// A failing status: anything `NT_SUCCESS` rejects (warnings and errors).
///
/// # Invariants
/// The wrapped status is never `NT_SUCCESS`; [`Error::new`] is the only way to build one from an
/// arbitrary status, and the associated constants are all failures.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error(Status);

impl Error {
    /// Wraps `status` when it is a failure; `None` for success and informational statuses.
    pub const fn new(status: Status) -> Option<Error> {
        if status.is_success() { None } else { Some(Error(status)) }
    }

    /// The failing status.
    pub const fn status(self) -> Status {
        self.0
    }

    /// `STATUS_UNSUCCESSFUL`.
    pub const UNSUCCESSFUL: Error = Error(Status::UNSUCCESSFUL);
    /// `STATUS_ACCESS_DENIED`.
    pub const ACCESS_DENIED: Error = Error(Status::ACCESS_DENIED);
    /// `STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: Error = Error(Status::INVALID_PARAMETER);
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub const INSUFFICIENT_RESOURCES: Error = Error(Status::INSUFFICIENT_RESOURCES);
    /// `STATUS_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: Error = Error(Status::NOT_SUPPORTED);
    /// `STATUS_INVALID_DEVICE_REQUEST`.
    pub const INVALID_DEVICE_REQUEST: Error = Error(Status::INVALID_DEVICE_REQUEST);
    /// `STATUS_ACCESS_VIOLATION`.
    pub const ACCESS_VIOLATION: Error = Error(Status::ACCESS_VIOLATION);
    /// `STATUS_CONNECTION_COUNT_LIMIT`.
    pub const CONNECTION_COUNT_LIMIT: Error = Error(Status::CONNECTION_COUNT_LIMIT);
    /// `STATUS_INVALID_DEVICE_STATE`.
    pub const INVALID_DEVICE_STATE: Error = Error(Status::INVALID_DEVICE_STATE);
    /// `STATUS_NOT_FOUND`.
    pub const NOT_FOUND: Error = Error(Status::NOT_FOUND);
    /// `STATUS_PORT_DISCONNECTED`: a message to a client that is not (or no longer) connected.
    pub const PORT_DISCONNECTED: Error = Error(Status::PORT_DISCONNECTED);
    /// `STATUS_OBJECT_NAME_NOT_FOUND`.
    pub const OBJECT_NAME_NOT_FOUND: Error = Error(Status::OBJECT_NAME_NOT_FOUND);
    /// `STATUS_FLT_INVALID_NAME_REQUEST`: a file name asked where none may be (rule 22).
    pub const FLT_INVALID_NAME_REQUEST: Error = Error(Status::FLT_INVALID_NAME_REQUEST);
    /// `STATUS_FLT_DO_NOT_ATTACH`: refuse an instance in `instance_setup`.
    pub const FLT_DO_NOT_ATTACH: Error = Error(Status::FLT_DO_NOT_ATTACH);
    /// `STATUS_FLT_DO_NOT_DETACH`: refuse a detach or a non-mandatory unload.
    pub const FLT_DO_NOT_DETACH: Error = Error(Status::FLT_DO_NOT_DETACH);
    /// `STATUS_FLT_DELETING_OBJECT`: no new stream context once the instance's teardown started
    /// (rule 28).
    pub const FLT_DELETING_OBJECT: Error = Error(Status::FLT_DELETING_OBJECT);
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        e.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.0)
    }
}

/// The model's result type: a value or a failing status.
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_ntstatus_h() {
        // facts.md §7.
        assert_eq!(Status::ACCESS_DENIED.bits(), 0xC000_0022);
        assert_eq!(Status::FLT_DO_NOT_ATTACH.bits(), 0xC01C_000F);
        assert_eq!(Status::FLT_DO_NOT_DETACH.bits(), 0xC01C_0010);
        assert_eq!(Status::FLT_INSTANCE_ALTITUDE_COLLISION.bits(), 0xC01C_0011);
        assert_eq!(Status::FLT_BUFFER_TOO_SMALL.bits(), 0x801C_0001);
        assert_eq!(Status::FLT_IO_COMPLETE.bits(), 0x001C_0001);
        assert_eq!(Status::PENDING.0, 0x103);
        assert_eq!(Status::FLT_WCOS_NOT_SUPPORTED.bits(), 0xC01C_0024);
    }

    #[test]
    fn severity_and_success() {
        assert!(Status::SUCCESS.is_success());
        assert!(Status::PENDING.is_success());
        assert!(Status::FLT_IO_COMPLETE.is_success());
        assert!(!Status::FLT_BUFFER_TOO_SMALL.is_success());
        assert!(Status::FLT_BUFFER_TOO_SMALL.is_warning());
        assert!(!Status::FLT_BUFFER_TOO_SMALL.is_error());
        assert!(Status::ACCESS_DENIED.is_error());
        assert_eq!(Status::OBJECT_NAME_EXISTS.severity(), Severity::Informational);
        assert_eq!(Status::FLT_DO_NOT_ATTACH.facility(), 0x1C);
    }

    #[test]
    fn names_round_trip() {
        for s in Status::all_named() {
            let name = s.name().expect("named");
            assert!(name.starts_with("STATUS_"));
            assert_eq!(Status::from_name(name), Some(s));
        }
        assert_eq!(Status(0x1234_5678).name(), None);
        extern crate std;
        use std::format;
        assert_eq!(format!("{}", Status::FLT_DO_NOT_DETACH), "STATUS_FLT_DO_NOT_DETACH");
        assert_eq!(format!("{}", Status::from_bits(0xC0DE_0001)), "0xC0DE0001");
    }

    #[test]
    fn io_names_leave_out_the_filter_managers_own() {
        assert!(Status::IO_NAMED.iter().all(|s| s.facility() != 0x1C));
        assert!(Status::FLT_NAMED.iter().all(|s| s.facility() == 0x1C));
        assert_eq!(Status::from_io_name("status_access_denied"), Some(Status::ACCESS_DENIED));
        assert_eq!(Status::from_io_name("STATUS_FLT_DO_NOT_DETACH"), None);
        assert_eq!(Status::from_name("STATUS_FLT_DO_NOT_DETACH"), Some(Status::FLT_DO_NOT_DETACH));
        // The section statuses are named for display, not parsed by drivers.
        assert_eq!(Status::from_io_name("STATUS_MAPPED_FILE_SIZE_ZERO"), None);
        let zero = Some(Status::MAPPED_FILE_SIZE_ZERO);
        assert_eq!(Status::from_name("STATUS_MAPPED_FILE_SIZE_ZERO"), zero);
        assert_eq!(Status::MAPPED_FILE_SIZE_ZERO.name(), Some("STATUS_MAPPED_FILE_SIZE_ZERO"));
        // So are the message channel's: no driver parses them, and none carries their names.
        assert_eq!(Status::from_io_name("STATUS_ACCESS_VIOLATION"), None);
        let limit = Some(Status::CONNECTION_COUNT_LIMIT);
        assert_eq!(Status::from_name("STATUS_CONNECTION_COUNT_LIMIT"), limit);
        assert_eq!(Status::ACCESS_VIOLATION.name(), Some("STATUS_ACCESS_VIOLATION"));
        assert_eq!(Status(0xC000_0037_u32 as i32).name(), Some("STATUS_PORT_DISCONNECTED"));
    }

    #[test]
    fn names_are_unique() {
        extern crate std;
        use std::vec::Vec;
        let all: Vec<Status> = Status::all_named().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b, "duplicate value for {a:?}");
            }
        }
    }

    #[test]
    fn errors_are_failures_only() {
        assert!(Error::new(Status::SUCCESS).is_none());
        assert!(Error::new(Status::REPARSE).is_none());
        assert_eq!(
            Error::new(Status::FLT_BUFFER_TOO_SMALL).map(Error::status),
            Some(Status::FLT_BUFFER_TOO_SMALL)
        );
        assert_eq!(Status::ACCESS_DENIED.ok(), Err(Error::ACCESS_DENIED));
        assert_eq!(Status::SUCCESS.ok(), Ok(Status::SUCCESS));
        assert_eq!(Status::from(Error::FLT_DO_NOT_DETACH), Status::FLT_DO_NOT_DETACH);
    }

    #[test]
    fn hresults_of_filter_manager_errors() {
        // facts.md §7: 0xC01C00nn <-> 0x801F00nn (filter not found = 0x801F0013).
        assert_eq!(Status::FLT_FILTER_NOT_FOUND.to_hresult(), 0x801F_0013);
        assert_eq!(Status::ACCESS_DENIED.to_hresult(), 0xD000_0022);
    }
}
