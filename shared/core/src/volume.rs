//! What a filter learns about a volume: its device type and its file-system type (facts.md §2.5, §7).

use core::fmt;

/// `FILE_DEVICE_*` values the model names (facts.md §7).
pub mod device_type {
    /// `FILE_DEVICE_CD_ROM`.
    pub const CD_ROM: u32 = 0x02;
    /// `FILE_DEVICE_CD_ROM_FILE_SYSTEM` (0x3; the InstanceSetup page's 0x2 is wrong, facts.md §10.1).
    pub const CD_ROM_FILE_SYSTEM: u32 = 0x03;
    /// `FILE_DEVICE_DFS`.
    pub const DFS: u32 = 0x06;
    /// `FILE_DEVICE_DISK`.
    pub const DISK: u32 = 0x07;
    /// `FILE_DEVICE_DISK_FILE_SYSTEM`.
    pub const DISK_FILE_SYSTEM: u32 = 0x08;
    /// `FILE_DEVICE_FILE_SYSTEM`: only for FSCTL codes, never a device's type.
    pub const FILE_SYSTEM: u32 = 0x09;
    /// `FILE_DEVICE_MAILSLOT`.
    pub const MAILSLOT: u32 = 0x0c;
    /// `FILE_DEVICE_MULTI_UNC_PROVIDER`.
    pub const MULTI_UNC_PROVIDER: u32 = 0x10;
    /// `FILE_DEVICE_NAMED_PIPE`.
    pub const NAMED_PIPE: u32 = 0x11;
    /// `FILE_DEVICE_NETWORK`.
    pub const NETWORK: u32 = 0x12;
    /// `FILE_DEVICE_NETWORK_FILE_SYSTEM`.
    pub const NETWORK_FILE_SYSTEM: u32 = 0x14;
    /// `FILE_DEVICE_TAPE`.
    pub const TAPE: u32 = 0x1f;
    /// `FILE_DEVICE_TAPE_FILE_SYSTEM`.
    pub const TAPE_FILE_SYSTEM: u32 = 0x20;
    /// `FILE_DEVICE_UNKNOWN`.
    pub const UNKNOWN: u32 = 0x22;
    /// `FILE_DEVICE_VIRTUAL_DISK`.
    pub const VIRTUAL_DISK: u32 = 0x24;
    /// `FILE_DEVICE_NETWORK_REDIRECTOR`.
    pub const NETWORK_REDIRECTOR: u32 = 0x28;
    /// `FILE_DEVICE_DFS_FILE_SYSTEM`.
    pub const DFS_FILE_SYSTEM: u32 = 0x35;
    /// `FILE_DEVICE_DFS_VOLUME`.
    pub const DFS_VOLUME: u32 = 0x36;
}

/// The `VolumeDeviceType` an instance-setup callback receives: the device type of the file
/// system's volume device (facts.md §2.5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeDeviceType {
    /// `FILE_DEVICE_DISK_FILE_SYSTEM`.
    DiskFileSystem,
    /// `FILE_DEVICE_CD_ROM_FILE_SYSTEM`.
    CdRomFileSystem,
    /// `FILE_DEVICE_NETWORK_FILE_SYSTEM`.
    NetworkFileSystem,
    /// Any other device type, kept as its value.
    Other(u32),
}

impl VolumeDeviceType {
    /// From a `DEVICE_TYPE` value.
    pub const fn from_raw(value: u32) -> VolumeDeviceType {
        match value {
            device_type::DISK_FILE_SYSTEM => VolumeDeviceType::DiskFileSystem,
            device_type::CD_ROM_FILE_SYSTEM => VolumeDeviceType::CdRomFileSystem,
            device_type::NETWORK_FILE_SYSTEM => VolumeDeviceType::NetworkFileSystem,
            other => VolumeDeviceType::Other(other),
        }
    }

    /// The `DEVICE_TYPE` value.
    pub const fn raw(self) -> u32 {
        match self {
            VolumeDeviceType::DiskFileSystem => device_type::DISK_FILE_SYSTEM,
            VolumeDeviceType::CdRomFileSystem => device_type::CD_ROM_FILE_SYSTEM,
            VolumeDeviceType::NetworkFileSystem => device_type::NETWORK_FILE_SYSTEM,
            VolumeDeviceType::Other(v) => v,
        }
    }

    /// The WDK spelling (`"FILE_DEVICE_DISK_FILE_SYSTEM"`); `None` for other values.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            VolumeDeviceType::DiskFileSystem => Some("FILE_DEVICE_DISK_FILE_SYSTEM"),
            VolumeDeviceType::CdRomFileSystem => Some("FILE_DEVICE_CD_ROM_FILE_SYSTEM"),
            VolumeDeviceType::NetworkFileSystem => Some("FILE_DEVICE_NETWORK_FILE_SYSTEM"),
            VolumeDeviceType::Other(_) => None,
        }
    }
}

impl fmt::Debug for VolumeDeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "DEVICE_TYPE(0x{:x})", self.raw()),
        }
    }
}

macro_rules! fstypes {
    ($( $variant:ident = $value:literal => $name:literal, )*) => {
        /// `FLT_FILESYSTEM_TYPE` (facts.md §7); file systems the header does not know report
        /// `Unknown`, and values beyond the header are kept as `Other`.
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FilesystemType {
            $( #[doc = concat!("`", $name, "` (", stringify!($value), ").")] $variant, )*
            /// A value the model does not name.
            Other(u32),
        }

        impl FilesystemType {
            /// From an `FLT_FILESYSTEM_TYPE` value.
            pub const fn from_raw(value: u32) -> FilesystemType {
                match value {
                    $( $value => FilesystemType::$variant, )*
                    other => FilesystemType::Other(other),
                }
            }

            /// The `FLT_FILESYSTEM_TYPE` value.
            pub const fn raw(self) -> u32 {
                match self {
                    $( FilesystemType::$variant => $value, )*
                    FilesystemType::Other(v) => v,
                }
            }

            /// The WDK spelling (`"FLT_FSTYPE_NTFS"`).
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $( FilesystemType::$variant => Some($name), )*
                    FilesystemType::Other(_) => None,
                }
            }

            /// Every named type.
            pub const ALL: &'static [FilesystemType] = &[$(FilesystemType::$variant),*];
        }
    };
}

fstypes! {
    Unknown = 0 => "FLT_FSTYPE_UNKNOWN",
    Raw = 1 => "FLT_FSTYPE_RAW",
    Ntfs = 2 => "FLT_FSTYPE_NTFS",
    Fat = 3 => "FLT_FSTYPE_FAT",
    Cdfs = 4 => "FLT_FSTYPE_CDFS",
    Udfs = 5 => "FLT_FSTYPE_UDFS",
    Lanman = 6 => "FLT_FSTYPE_LANMAN",
    Webdav = 7 => "FLT_FSTYPE_WEBDAV",
    Rdpdr = 8 => "FLT_FSTYPE_RDPDR",
    Nfs = 9 => "FLT_FSTYPE_NFS",
    MsNetware = 10 => "FLT_FSTYPE_MS_NETWARE",
    Netware = 11 => "FLT_FSTYPE_NETWARE",
    Bsudf = 12 => "FLT_FSTYPE_BSUDF",
    Mup = 13 => "FLT_FSTYPE_MUP",
    Rsfx = 14 => "FLT_FSTYPE_RSFX",
    RoxioUdf1 = 15 => "FLT_FSTYPE_ROXIO_UDF1",
    RoxioUdf2 = 16 => "FLT_FSTYPE_ROXIO_UDF2",
    RoxioUdf3 = 17 => "FLT_FSTYPE_ROXIO_UDF3",
    Tacit = 18 => "FLT_FSTYPE_TACIT",
    FsRec = 19 => "FLT_FSTYPE_FS_REC",
    Incd = 20 => "FLT_FSTYPE_INCD",
    IncdFat = 21 => "FLT_FSTYPE_INCD_FAT",
    Exfat = 22 => "FLT_FSTYPE_EXFAT",
    Psfs = 23 => "FLT_FSTYPE_PSFS",
    Gpfs = 24 => "FLT_FSTYPE_GPFS",
    Npfs = 25 => "FLT_FSTYPE_NPFS",
    Msfs = 26 => "FLT_FSTYPE_MSFS",
    Csvfs = 27 => "FLT_FSTYPE_CSVFS",
    Refs = 28 => "FLT_FSTYPE_REFS",
    Openafs = 29 => "FLT_FSTYPE_OPENAFS",
    Cimfs = 30 => "FLT_FSTYPE_CIMFS",
}

impl fmt::Debug for FilesystemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "FLT_FILESYSTEM_TYPE({})", self.raw()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_types_match_the_header() {
        // facts.md §7 and §10.1: CD_ROM_FILE_SYSTEM is 0x3.
        assert_eq!(VolumeDeviceType::CdRomFileSystem.raw(), 0x3);
        assert_eq!(VolumeDeviceType::from_raw(0x8), VolumeDeviceType::DiskFileSystem);
        assert_eq!(VolumeDeviceType::from_raw(0x14), VolumeDeviceType::NetworkFileSystem);
        assert_eq!(VolumeDeviceType::from_raw(0x2), VolumeDeviceType::Other(device_type::CD_ROM));
    }

    #[test]
    fn filesystem_types_round_trip() {
        for (i, t) in FilesystemType::ALL.iter().enumerate() {
            assert_eq!(t.raw() as usize, i);
            assert_eq!(FilesystemType::from_raw(t.raw()), *t);
        }
        assert_eq!(FilesystemType::Npfs.raw(), 25);
        assert_eq!(FilesystemType::Refs.raw(), 28);
        assert_eq!(FilesystemType::from_raw(99), FilesystemType::Other(99));
        assert_eq!(FilesystemType::Ntfs.name(), Some("FLT_FSTYPE_NTFS"));
    }
}
