//! `MajorFunction`: every IRP major code and the Filter Manager's pseudo-operations, plus the
//! minor codes the model reads.

use core::fmt;

macro_rules! majors {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal => $name:literal, $short:literal, )*) => {
        /// An operation's major function: an `IRP_MJ_*` code, or one of the Filter Manager's
        /// pseudo-operations for fast I/O and FsFilter callbacks (facts.md §3 and §7).
        ///
        /// Codes the model does not know are kept as [`MajorFunction::Unknown`]: a value, never a
        /// transmute.
        ///
        /// The discriminant of each named variant is its code, so converting to and from the
        /// kernel's `UCHAR` and comparing are a byte operation, not a table lookup (it matters in
        /// a driver's hot paths and its size).
        #[repr(u8)]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MajorFunction {
            $( $(#[$doc])* #[doc = concat!("`", $name, "` (", stringify!($value), ").")] $variant = $value, )*
            /// A code that is none of the above (`IRP_MJ_OPERATION_END`'s value, no named code,
            /// is its discriminant).
            Unknown(u8) = IRP_MJ_OPERATION_END,
        }

        impl MajorFunction {
            /// Every named major function, IRP codes first, then the pseudo-operations.
            pub const ALL: &'static [MajorFunction] = &[$(MajorFunction::$variant),*];

            /// The code as the kernel stores it (`UCHAR`).
            #[inline]
            pub const fn code(self) -> u8 {
                match self {
                    $( MajorFunction::$variant => $value, )*
                    MajorFunction::Unknown(code) => code,
                }
            }

            /// The major function for a code.
            #[inline]
            pub const fn from_code(code: u8) -> MajorFunction {
                match code {
                    $( $value => MajorFunction::$variant, )*
                    other => MajorFunction::Unknown(other),
                }
            }

            /// The WDK spelling of every named operation, packed, in the order of `ALL`.
            const NAMES: crate::text::Names = crate::text::Names(concat!($( $name, "\n", )*));

            /// The short name of every named operation, packed, in the order of `ALL`.
            const SHORT_NAMES: crate::text::Names = crate::text::Names(concat!($( $short, "\n", )*));

            /// The position of a named operation in `ALL`.
            fn index_in_all(self) -> Option<usize> {
                MajorFunction::ALL.iter().position(|m| *m == self)
            }

            /// The WDK spelling (`"IRP_MJ_CREATE"`); `None` for an unknown code.
            pub fn name(self) -> Option<&'static str> {
                MajorFunction::NAMES.get(self.index_in_all()?)
            }

            /// The short name the lab's scenarios and the probe's parameters use (`"create"`,
            /// `"fsctl"`, `"lock"`, `"flush"`, ...); `None` for an unknown code.
            pub fn short_name(self) -> Option<&'static str> {
                MajorFunction::SHORT_NAMES.get(self.index_in_all()?)
            }

            /// Compile-time messages for registration errors: (registered twice, registers no
            /// callback). Whole strings, because a const panic can only show a `&'static str`.
            pub(crate) const fn registration_messages(self) -> (&'static str, &'static str) {
                match self {
                    $( MajorFunction::$variant => (
                        concat!("invalid registration: ", $name, " is registered twice"),
                        concat!("invalid registration: ", $name, " registers neither a pre nor a post callback"),
                    ), )*
                    MajorFunction::Unknown(_) => (
                        "invalid registration: an unknown major function is registered twice",
                        "invalid registration: an unknown major function registers no callback",
                    ),
                }
            }

            /// Looks a major function up by its WDK spelling (any ASCII case).
            pub fn from_name(name: &str) -> Option<MajorFunction> {
                MajorFunction::ALL.get(MajorFunction::NAMES.position(name)?).copied()
            }

            /// Looks a major function up by its short name (any ASCII case).
            pub fn from_short_name(name: &str) -> Option<MajorFunction> {
                MajorFunction::ALL.get(MajorFunction::SHORT_NAMES.position(name)?).copied()
            }
        }
    };
}

majors! {
    Create = 0x00 => "IRP_MJ_CREATE", "create",
    CreateNamedPipe = 0x01 => "IRP_MJ_CREATE_NAMED_PIPE", "create_named_pipe",
    Close = 0x02 => "IRP_MJ_CLOSE", "close",
    Read = 0x03 => "IRP_MJ_READ", "read",
    Write = 0x04 => "IRP_MJ_WRITE", "write",
    QueryInformation = 0x05 => "IRP_MJ_QUERY_INFORMATION", "query_information",
    SetInformation = 0x06 => "IRP_MJ_SET_INFORMATION", "set_information",
    QueryEa = 0x07 => "IRP_MJ_QUERY_EA", "query_ea",
    SetEa = 0x08 => "IRP_MJ_SET_EA", "set_ea",
    FlushBuffers = 0x09 => "IRP_MJ_FLUSH_BUFFERS", "flush",
    QueryVolumeInformation = 0x0a => "IRP_MJ_QUERY_VOLUME_INFORMATION", "query_volume_information",
    SetVolumeInformation = 0x0b => "IRP_MJ_SET_VOLUME_INFORMATION", "set_volume_information",
    DirectoryControl = 0x0c => "IRP_MJ_DIRECTORY_CONTROL", "directory_control",
    FileSystemControl = 0x0d => "IRP_MJ_FILE_SYSTEM_CONTROL", "fsctl",
    DeviceControl = 0x0e => "IRP_MJ_DEVICE_CONTROL", "device_control",
    InternalDeviceControl = 0x0f => "IRP_MJ_INTERNAL_DEVICE_CONTROL", "internal_device_control",
    Shutdown = 0x10 => "IRP_MJ_SHUTDOWN", "shutdown",
    LockControl = 0x11 => "IRP_MJ_LOCK_CONTROL", "lock",
    Cleanup = 0x12 => "IRP_MJ_CLEANUP", "cleanup",
    CreateMailslot = 0x13 => "IRP_MJ_CREATE_MAILSLOT", "create_mailslot",
    QuerySecurity = 0x14 => "IRP_MJ_QUERY_SECURITY", "query_security",
    SetSecurity = 0x15 => "IRP_MJ_SET_SECURITY", "set_security",
    Power = 0x16 => "IRP_MJ_POWER", "power",
    SystemControl = 0x17 => "IRP_MJ_SYSTEM_CONTROL", "system_control",
    DeviceChange = 0x18 => "IRP_MJ_DEVICE_CHANGE", "device_change",
    QueryQuota = 0x19 => "IRP_MJ_QUERY_QUOTA", "query_quota",
    SetQuota = 0x1a => "IRP_MJ_SET_QUOTA", "set_quota",
    Pnp = 0x1b => "IRP_MJ_PNP", "pnp",
    AcquireForSectionSynchronization = 0xFF => "IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION", "acquire_for_section_synchronization",
    ReleaseForSectionSynchronization = 0xFE => "IRP_MJ_RELEASE_FOR_SECTION_SYNCHRONIZATION", "release_for_section_synchronization",
    AcquireForModWrite = 0xFD => "IRP_MJ_ACQUIRE_FOR_MOD_WRITE", "acquire_for_mod_write",
    ReleaseForModWrite = 0xFC => "IRP_MJ_RELEASE_FOR_MOD_WRITE", "release_for_mod_write",
    AcquireForCcFlush = 0xFB => "IRP_MJ_ACQUIRE_FOR_CC_FLUSH", "acquire_for_cc_flush",
    ReleaseForCcFlush = 0xFA => "IRP_MJ_RELEASE_FOR_CC_FLUSH", "release_for_cc_flush",
    QueryOpen = 0xF9 => "IRP_MJ_QUERY_OPEN", "query_open",
    FastIoCheckIfPossible = 0xF3 => "IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE", "fast_io_check_if_possible",
    NetworkQueryOpen = 0xF2 => "IRP_MJ_NETWORK_QUERY_OPEN", "network_query_open",
    MdlRead = 0xF1 => "IRP_MJ_MDL_READ", "mdl_read",
    MdlReadComplete = 0xF0 => "IRP_MJ_MDL_READ_COMPLETE", "mdl_read_complete",
    PrepareMdlWrite = 0xEF => "IRP_MJ_PREPARE_MDL_WRITE", "prepare_mdl_write",
    MdlWriteComplete = 0xEE => "IRP_MJ_MDL_WRITE_COMPLETE", "mdl_write_complete",
    VolumeMount = 0xED => "IRP_MJ_VOLUME_MOUNT", "volume_mount",
    VolumeDismount = 0xEC => "IRP_MJ_VOLUME_DISMOUNT", "volume_dismount",
}

/// `IRP_MJ_MAXIMUM_FUNCTION`: the highest IRP major code (facts.md §7).
pub const IRP_MJ_MAXIMUM_FUNCTION: u8 = 0x1b;

/// `IRP_MJ_OPERATION_END`: the sentinel that ends a minifilter's operation table (facts.md §3).
/// shared/core depends on nothing (windows-sys 0.61 defines it as a `u16` in `Minifilters`; the
/// kernel crate's tests compare the two).
pub const IRP_MJ_OPERATION_END: u8 = 0x80;

/// `FLT_INTERNAL_OPERATION_COUNT`: the number of Filter Manager pseudo-operations (facts.md §3).
pub const FLT_INTERNAL_OPERATION_COUNT: usize = 22;

/// The size of the dense operation index ([`MajorFunction::index`]): one slot per IRP code plus
/// one per pseudo-operation slot, used or not.
pub const MAX_OPERATIONS: usize =
    IRP_MJ_MAXIMUM_FUNCTION as usize + 1 + FLT_INTERNAL_OPERATION_COUNT;

/// How many entries a registration can hold: every major function that may be registered
/// (forbidden and unknown codes are refused, duplicates too, so no registration has more). A
/// minifilter's operation table is this long plus the `IRP_MJ_OPERATION_END` sentinel.
pub const MAX_REGISTERED: usize = {
    let mut n = 0;
    let mut rest = MajorFunction::ALL;
    while let [major, tail @ ..] = rest {
        if major.forbidden_reason().is_none() {
            n += 1;
        }
        rest = tail;
    }
    n
};

/// How an operation reaches a filter (the `FLTFL_CALLBACK_DATA_*_OPERATION` kinds, facts.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// An IRP (`FLTFL_CALLBACK_DATA_IRP_OPERATION`).
    Irp,
    /// A fast-I/O call (`FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`).
    FastIo,
    /// An FsFilter callback (`FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION`).
    FsFilter,
}

impl MajorFunction {
    /// True for a real IRP code (`0x00..=IRP_MJ_MAXIMUM_FUNCTION`).
    pub const fn is_irp(self) -> bool {
        self.code() <= IRP_MJ_MAXIMUM_FUNCTION && !matches!(self, MajorFunction::Unknown(_))
    }

    /// True for one of the Filter Manager's pseudo-operations (negative `UCHAR` codes).
    pub const fn is_pseudo(self) -> bool {
        !self.is_irp() && !matches!(self, MajorFunction::Unknown(_))
    }

    /// True for the FsFilter callback operations (`-1` to `-7`, equal to the ntifs
    /// `FS_FILTER_*` codes).
    pub const fn is_fs_filter(self) -> bool {
        matches!(
            self,
            MajorFunction::AcquireForSectionSynchronization
                | MajorFunction::ReleaseForSectionSynchronization
                | MajorFunction::AcquireForModWrite
                | MajorFunction::ReleaseForModWrite
                | MajorFunction::AcquireForCcFlush
                | MajorFunction::ReleaseForCcFlush
                | MajorFunction::QueryOpen
        )
    }

    /// An operation that cannot fail, whose completion with an error the backends turn into
    /// `STATUS_SUCCESS` (docs/callback-model.md, rule 5): cleanup and close (facts.md §4), and the
    /// FsFilter releases (the reference page of `FsRtlRegisterFileSystemFilterCallbacks`; an
    /// acquire with `SyncTypeOther` must not fail either, which FsRtl enforces itself: it takes
    /// such a failure for success).
    pub const fn cannot_fail(self) -> bool {
        matches!(
            self,
            MajorFunction::Cleanup
                | MajorFunction::Close
                | MajorFunction::ReleaseForSectionSynchronization
                | MajorFunction::ReleaseForModWrite
                | MajorFunction::ReleaseForCcFlush
        )
    }

    /// True where the skip flags for cached and non-cached I/O apply (read and write, facts.md §3).
    pub const fn is_read_or_write(self) -> bool {
        matches!(self, MajorFunction::Read | MajorFunction::Write)
    }

    /// Why a minifilter may not register this operation, or `None` when it may (facts.md §3):
    /// file systems never receive `IRP_MJ_POWER` or `IRP_MJ_DEVICE_CHANGE`.
    pub const fn forbidden_reason(self) -> Option<&'static str> {
        match self {
            MajorFunction::Power => {
                Some("IRP_MJ_POWER never reaches a file-system stack and cannot be registered")
            }
            MajorFunction::DeviceChange => Some(
                "IRP_MJ_DEVICE_CHANGE never reaches a file-system stack and cannot be registered",
            ),
            MajorFunction::Unknown(_) => Some("an unknown major function cannot be registered"),
            _ => None,
        }
    }

    /// Dense index of this operation in `0..MAX_OPERATIONS`, for per-operation tables: IRP codes
    /// keep their value, pseudo-operations `-1..=-22` map after them. `None` for unknown codes.
    #[inline]
    pub const fn index(self) -> Option<usize> {
        let code = self.code();
        if matches!(self, MajorFunction::Unknown(_)) {
            None
        } else if code <= IRP_MJ_MAXIMUM_FUNCTION {
            Some(code as usize)
        } else {
            // 0xFF -> 0, 0xFE -> 1, ... 0xEA -> 21.
            Some(IRP_MJ_MAXIMUM_FUNCTION as usize + 1 + (0xFF - code) as usize)
        }
    }
}

impl fmt::Debug for MajorFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "IRP_MJ_0x{:02X}", self.code()),
        }
    }
}

impl fmt::Display for MajorFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `IRP_MN_*` minor codes of `IRP_MJ_FILE_SYSTEM_CONTROL` (facts.md §7).
pub mod fsctl {
    /// `IRP_MN_USER_FS_REQUEST`.
    pub const USER_FS_REQUEST: u8 = 0x00;
    /// `IRP_MN_MOUNT_VOLUME`.
    pub const MOUNT_VOLUME: u8 = 0x01;
    /// `IRP_MN_VERIFY_VOLUME`.
    pub const VERIFY_VOLUME: u8 = 0x02;
    /// `IRP_MN_LOAD_FILE_SYSTEM`.
    pub const LOAD_FILE_SYSTEM: u8 = 0x03;
    /// `IRP_MN_KERNEL_CALL` (the old `IRP_MN_TRACK_LINK`).
    pub const KERNEL_CALL: u8 = 0x04;

    /// The oplock requests and acknowledgments (`FSCTL_REQUEST_OPLOCK_LEVEL_1`, `_LEVEL_2`,
    /// `FSCTL_REQUEST_BATCH_OPLOCK`, `FSCTL_OPLOCK_BREAK_ACKNOWLEDGE`,
    /// `FSCTL_OPBATCH_ACK_CLOSE_PENDING`, `FSCTL_OPLOCK_BREAK_NOTIFY`,
    /// `FSCTL_OPLOCK_BREAK_ACK_NO_2`, `FSCTL_REQUEST_FILTER_OPLOCK`, `FSCTL_REQUEST_OPLOCK`):
    /// `FLT_PREOP_SYNCHRONIZE` is illegal for them (facts.md §4).
    pub const OPLOCK_REQUESTS: [u32; 9] = [
        0x0009_0000,
        0x0009_0004,
        0x0009_0008,
        0x0009_000C,
        0x0009_0010,
        0x0009_0014,
        0x0009_0050,
        0x0009_005C,
        0x0009_0240,
    ];

    /// Whether `code` is one of [`OPLOCK_REQUESTS`]: they are
    /// `CTL_CODE(FILE_DEVICE_FILE_SYSTEM, function, METHOD_BUFFERED, FILE_ANY_ACCESS)` with
    /// functions 0 to 5, 20, 23 and 144, tested without a search (the legacy drivers are small).
    pub const fn is_oplock_request(code: u32) -> bool {
        if code & 0xFFFF_0003 != 0x0009_0000 {
            return false;
        }
        let function = (code >> 2) & 0x3FFF;
        function == 144 || (function < 32 && (0x0090_003F >> function) & 1 == 1)
    }
}

/// `IRP_MN_*` minor codes of `IRP_MJ_DIRECTORY_CONTROL`.
pub mod directory {
    /// `IRP_MN_QUERY_DIRECTORY`.
    pub const QUERY_DIRECTORY: u8 = 0x01;
    /// `IRP_MN_NOTIFY_CHANGE_DIRECTORY`.
    pub const NOTIFY_CHANGE_DIRECTORY: u8 = 0x02;
}

/// `IRP_MN_*` minor codes of `IRP_MJ_LOCK_CONTROL`.
pub mod lock {
    /// `IRP_MN_LOCK`.
    pub const LOCK: u8 = 0x01;
    /// `IRP_MN_UNLOCK_SINGLE`.
    pub const UNLOCK_SINGLE: u8 = 0x02;
    /// `IRP_MN_UNLOCK_ALL`.
    pub const UNLOCK_ALL: u8 = 0x03;
    /// `IRP_MN_UNLOCK_ALL_BY_KEY`.
    pub const UNLOCK_ALL_BY_KEY: u8 = 0x04;
}

/// `IRP_MN_*` minor codes of `IRP_MJ_READ` and `IRP_MJ_WRITE` (bit flags).
pub mod read_write {
    /// `IRP_MN_NORMAL`.
    pub const NORMAL: u8 = 0x00;
    /// `IRP_MN_DPC`.
    pub const DPC: u8 = 0x01;
    /// `IRP_MN_MDL`.
    pub const MDL: u8 = 0x02;
    /// `IRP_MN_COMPLETE`.
    pub const COMPLETE: u8 = 0x04;
    /// `IRP_MN_COMPRESSED`.
    pub const COMPRESSED: u8 = 0x08;
}

#[cfg(test)]
mod tests {

    #[test]
    fn what_cannot_fail_is_cleanup_close_and_the_fs_filter_releases() {
        let cannot: [MajorFunction; 5] = [
            MajorFunction::Cleanup,
            MajorFunction::Close,
            MajorFunction::ReleaseForSectionSynchronization,
            MajorFunction::ReleaseForModWrite,
            MajorFunction::ReleaseForCcFlush,
        ];
        for m in MajorFunction::ALL {
            assert_eq!(m.cannot_fail(), cannot.contains(m), "{m}");
        }
    }

    use super::*;

    #[test]
    fn codes_match_wdm_h() {
        // facts.md §7 and §3.
        assert_eq!(MajorFunction::Create.code(), 0x00);
        assert_eq!(MajorFunction::Cleanup.code(), 0x12);
        assert_eq!(MajorFunction::Power.code(), 0x16);
        assert_eq!(MajorFunction::SystemControl.code(), 0x17);
        assert_eq!(MajorFunction::DeviceChange.code(), 0x18);
        assert_eq!(MajorFunction::Pnp.code(), IRP_MJ_MAXIMUM_FUNCTION);
        assert_eq!(MajorFunction::AcquireForSectionSynchronization.code(), (-1i8) as u8);
        assert_eq!(MajorFunction::QueryOpen.code(), (-7i8) as u8);
        assert_eq!(MajorFunction::FastIoCheckIfPossible.code(), (-13i8) as u8);
        assert_eq!(MajorFunction::VolumeDismount.code(), (-20i8) as u8);
    }

    #[test]
    fn every_code_round_trips_and_unknown_is_a_value() {
        for code in 0..=u8::MAX {
            let m = MajorFunction::from_code(code);
            assert_eq!(m.code(), code);
            if m.name().is_none() {
                assert_eq!(m, MajorFunction::Unknown(code));
            }
        }
        assert_eq!(MajorFunction::from_code(0x80), MajorFunction::Unknown(IRP_MJ_OPERATION_END));
        assert_eq!(MajorFunction::ALL.len(), 28 + 15);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(MajorFunction::NAMES.len(), MajorFunction::ALL.len());
        assert_eq!(MajorFunction::SHORT_NAMES.len(), MajorFunction::ALL.len());
        for &m in MajorFunction::ALL {
            assert_eq!(MajorFunction::from_name(m.name().unwrap()), Some(m));
            assert_eq!(MajorFunction::from_short_name(m.short_name().unwrap()), Some(m));
        }
        assert_eq!(MajorFunction::Unknown(0x42).short_name(), None);
    }

    #[test]
    fn short_names_are_the_lab_io_ops() {
        // scenario.md: the `op` of an io step.
        for (short, wdk) in [
            ("create", "IRP_MJ_CREATE"),
            ("fsctl", "IRP_MJ_FILE_SYSTEM_CONTROL"),
            ("lock", "IRP_MJ_LOCK_CONTROL"),
            ("flush", "IRP_MJ_FLUSH_BUFFERS"),
            ("query_volume_information", "IRP_MJ_QUERY_VOLUME_INFORMATION"),
            ("FsCtl", "IRP_MJ_FILE_SYSTEM_CONTROL"),
        ] {
            let m = MajorFunction::from_short_name(short).unwrap();
            assert_eq!(m.name(), Some(wdk));
        }
        assert_eq!(MajorFunction::from_short_name("file_system_control"), None);
        assert_eq!(MajorFunction::from_name("irp_mj_read"), Some(MajorFunction::Read));
    }

    #[test]
    fn a_registration_holds_every_registrable_major_once() {
        // The 28 IRP codes less POWER and DEVICE_CHANGE, and the Filter Manager's pseudo-operations
        // that have a code (facts.md §3): 26 + 15.
        let registrable = || MajorFunction::ALL.iter().filter(|m| m.forbidden_reason().is_none());
        assert_eq!(registrable().count(), MAX_REGISTERED);
        assert_eq!(MAX_REGISTERED, 41);
        assert_eq!(registrable().filter(|m| m.is_irp()).count(), 26);
        assert_eq!(registrable().filter(|m| m.is_pseudo()).count(), 15);
        // And a registration of all of them fits.
        let mut all = crate::Registration::new();
        for &m in registrable() {
            all = all.operation(crate::Operation::new(m).pre());
        }
        assert_eq!(all.check().map(|r| r.operations().len()), Ok(MAX_REGISTERED));
    }

    #[test]
    fn dense_indices_are_distinct_and_in_range() {
        let mut seen = [false; MAX_OPERATIONS];
        for &m in MajorFunction::ALL {
            let i = m.index().unwrap();
            assert!(!seen[i], "{m:?} shares index {i}");
            seen[i] = true;
        }
        assert_eq!(MajorFunction::Unknown(0x50).index(), None);
    }

    #[test]
    fn classification() {
        assert!(MajorFunction::Read.is_irp());
        assert!(!MajorFunction::Read.is_pseudo());
        assert!(MajorFunction::MdlRead.is_pseudo());
        assert!(MajorFunction::QueryOpen.is_fs_filter());
        assert!(!MajorFunction::MdlRead.is_fs_filter());
        assert!(!MajorFunction::Unknown(0x40).is_irp());
        assert!(!MajorFunction::Unknown(0x40).is_pseudo());
        assert!(MajorFunction::Power.forbidden_reason().is_some());
        assert!(MajorFunction::DeviceChange.forbidden_reason().is_some());
        assert!(MajorFunction::SystemControl.forbidden_reason().is_none());
        assert!(MajorFunction::Shutdown.forbidden_reason().is_none());
    }
}
