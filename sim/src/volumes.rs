//! The machine's volumes: a storage device each, the file system that mounts it, and what the
//! scenario says about it (Dev Drive, trusted).

use crate::ids::{DeviceId, VolumeId};
use crate::kernel::Kernel;

/// The file systems of scenario.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsKind {
    /// NTFS.
    Ntfs,
    /// FAT.
    Fat,
    /// exFAT.
    Exfat,
    /// ReFS.
    Refs,
    /// CDFS.
    Cdfs,
    /// UDFS.
    Udfs,
    /// A network share through MUP.
    Mup,
    /// Named pipes.
    Npfs,
    /// Mailslots.
    Msfs,
}

impl FsKind {
    /// Every kind.
    pub const ALL: [FsKind; 9] = [
        FsKind::Ntfs,
        FsKind::Fat,
        FsKind::Exfat,
        FsKind::Refs,
        FsKind::Cdfs,
        FsKind::Udfs,
        FsKind::Mup,
        FsKind::Npfs,
        FsKind::Msfs,
    ];

    /// The scenario spelling.
    pub const fn name(self) -> &'static str {
        match self {
            FsKind::Ntfs => "ntfs",
            FsKind::Fat => "fat",
            FsKind::Exfat => "exfat",
            FsKind::Refs => "refs",
            FsKind::Cdfs => "cdfs",
            FsKind::Udfs => "udfs",
            FsKind::Mup => "mup",
            FsKind::Npfs => "npfs",
            FsKind::Msfs => "msfs",
        }
    }

    /// Parses the scenario spelling.
    pub fn from_name(s: &str) -> Option<FsKind> {
        FsKind::ALL.iter().copied().find(|k| k.name().eq_ignore_ascii_case(s))
    }
}

/// When a volume mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountWhen {
    /// While booting.
    Boot,
    /// Only by an explicit mount.
    Step,
}

/// A volume.
#[derive(Clone, Debug)]
pub struct Volume {
    /// DOS name or device path.
    pub name: String,
    /// The file system.
    pub fs: FsKind,
    /// When it mounts.
    pub mount: MountWhen,
    /// A Dev Drive.
    pub dev_drive: bool,
    /// Trusted by an administrator.
    pub trusted: bool,
    /// The storage device (bottom of its storage stack), once created.
    pub storage: Option<DeviceId>,
    /// The file system's volume device, while mounted.
    pub vdo: Option<DeviceId>,
}

/// The volume table.
#[derive(Default)]
pub struct Volumes {
    /// Volumes by id.
    pub list: Vec<Volume>,
}

impl Kernel {
    /// A volume's name for reports.
    pub fn volume_display_name(&self, v: VolumeId) -> String {
        self.volumes
            .list
            .get(v.index())
            .map_or_else(|| format!("volume#{}", v.0), |vol| vol.name.clone())
    }

    /// The volume with this name (case-insensitive).
    pub fn volume_by_name(&self, name: &str) -> Option<VolumeId> {
        self.volumes
            .list
            .iter()
            .position(|v| v.name.eq_ignore_ascii_case(name))
            .map(|i| VolumeId(i as u32))
    }
}
