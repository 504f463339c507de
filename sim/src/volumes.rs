//! The machine's volumes: a storage device each (or, for the network and pipe file systems, the
//! file system's own device), the media with its files, the file system that mounts it, and what
//! the scenario says about it (Dev Drive, trusted).

use crate::fs::media::Media;
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

    /// The storage a volume of this kind lives on.
    pub const fn media(self) -> MediaKind {
        match self {
            FsKind::Ntfs | FsKind::Fat | FsKind::Exfat | FsKind::Refs => MediaKind::Disk,
            FsKind::Cdfs | FsKind::Udfs => MediaKind::CdRom,
            FsKind::Mup => MediaKind::Network,
            FsKind::Npfs | FsKind::Msfs => MediaKind::None,
        }
    }

    /// True for the file systems that mount volumes on storage devices through a VPB.
    pub const fn uses_vpb(self) -> bool {
        matches!(self.media(), MediaKind::Disk | MediaKind::CdRom)
    }
}

/// What a volume's storage is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// A disk volume (`\Device\HarddiskVolumeN`, `FILE_DEVICE_DISK`).
    Disk,
    /// A CD/DVD (`\Device\CdRomN`, `FILE_DEVICE_CD_ROM`).
    CdRom,
    /// A share behind the multiple UNC provider (`\Device\Mup`).
    Network,
    /// No storage: the file system's own named device (`\Device\NamedPipe`, `\Device\Mailslot`).
    None,
}

/// When a volume mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountWhen {
    /// While booting.
    Boot,
    /// Only by an explicit mount: the media arrives then (before, the drive reports no media).
    Step,
}

/// A volume to add to a machine (scenario.md `[[volume]]`).
#[derive(Clone, Debug)]
pub struct VolumeSpec {
    /// DOS name (`C:`), device path (`\Device\HarddiskVolume7`), or for a network share its UNC
    /// path (`\\server\share`). Unique.
    pub name: String,
    /// The file system.
    pub fs: FsKind,
    /// When it mounts.
    pub mount: MountWhen,
    /// A Dev Drive.
    pub dev_drive: bool,
    /// Trusted by an administrator.
    pub trusted: bool,
    /// Files on the volume: volume-relative paths (a trailing `\` makes a directory) and
    /// contents.
    pub files: Vec<(String, Vec<u8>)>,
    /// The file system that recognizes the volume pends its mount request and completes it
    /// from a worker thread this many milliseconds later, as for slow media (facts.md §1.4
    /// step 3: mounts may complete asynchronously). None: the mount completes in the file
    /// system's dispatch routine.
    pub mount_pends_ms: Option<u64>,
    /// The file system leaves the new volume device `DO_DEVICE_INITIALIZING` when its mount
    /// completes and clears the flag from a worker thread this many milliseconds later, as a file
    /// system that finishes initializing its volume device late (facts.md §1.5: an attach right
    /// after the mount can fail for that reason). None: the flag is cleared during the mount
    /// (facts.md §1.4).
    pub vdo_initializing_ms: Option<u64>,
    /// Unformatted media: no file system recognizes it, and a volume open mounts it with RAW
    /// (facts.md §1.4; docs/simulator.md, "Mounting").
    pub blank: bool,
}

impl VolumeSpec {
    /// A volume mounted at boot, not a Dev Drive, not trusted, empty.
    pub fn new(name: &str, fs: FsKind) -> VolumeSpec {
        VolumeSpec {
            name: name.to_owned(),
            fs,
            mount: MountWhen::Boot,
            dev_drive: false,
            trusted: false,
            files: Vec::new(),
            mount_pends_ms: None,
            vdo_initializing_ms: None,
            blank: false,
        }
    }

    /// Makes the media unformatted ([`VolumeSpec::blank`]).
    pub fn blank(mut self) -> VolumeSpec {
        self.blank = true;
        self
    }

    /// Adds a file.
    pub fn file(mut self, path: &str, bytes: &[u8]) -> VolumeSpec {
        self.files.push((path.to_owned(), bytes.to_vec()));
        self
    }

    /// Sets when it mounts.
    pub fn mount(mut self, when: MountWhen) -> VolumeSpec {
        self.mount = when;
        self
    }

    /// Makes the file system pend the mount request and complete it from a worker thread `ms`
    /// milliseconds later ([`VolumeSpec::mount_pends_ms`]).
    pub fn pend_mount(mut self, ms: u64) -> VolumeSpec {
        self.mount_pends_ms = Some(ms);
        self
    }

    /// Makes the file system leave each new volume device of this volume
    /// `DO_DEVICE_INITIALIZING` for `ms` milliseconds after its mount completes, then clear it
    /// from a worker thread ([`VolumeSpec::vdo_initializing_ms`]).
    pub fn initialize_late(mut self, ms: u64) -> VolumeSpec {
        self.vdo_initializing_ms = Some(ms);
        self
    }
}

/// Why a volume could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeError {
    /// Another volume has this name.
    DuplicateName(String),
    /// The pipe and mailslot file systems have one namespace each: one volume at most.
    SecondNamespace(FsKind),
    /// A network share's name must be `\\server\share`.
    BadShareName(String),
    /// The storage device's name (the first) is another volume's (the second): a volume named
    /// by its device path and a volume the machine gives that name.
    DeviceInUse(String, String),
}

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VolumeError::DuplicateName(n) => write!(f, "a volume named {n} exists already"),
            VolumeError::SecondNamespace(k) => {
                write!(f, "only one {} volume can exist (one namespace per machine)", k.name())
            }
            VolumeError::BadShareName(n) => {
                write!(f, "a mup volume is named \\\\server\\share, not {n}")
            }
            VolumeError::DeviceInUse(d, v) => {
                write!(f, "the storage device {d} is volume {v}'s already")
            }
        }
    }
}

/// A volume.
#[derive(Clone, Debug)]
pub struct Volume {
    /// DOS name or device path.
    pub name: crate::name::Name,
    /// The file system.
    pub fs: FsKind,
    /// When it mounts.
    pub mount: MountWhen,
    /// A Dev Drive.
    pub dev_drive: bool,
    /// Trusted by an administrator.
    pub trusted: bool,
    /// The storage device's name (`\Device\HarddiskVolume1`, `\Device\CdRom0`), or the file
    /// system device's for volumes without storage (`\Device\Mup`, `\Device\NamedPipe`).
    pub device_name: String,
    /// For a network share: `server\share`.
    pub share: Option<String>,
    /// The storage device (bottom of its storage stack), once created.
    pub storage: Option<DeviceId>,
    /// The file system's volume device, while mounted (for volumes without storage: the file
    /// system's named device).
    pub vdo: Option<DeviceId>,
    /// The files.
    pub media: Media,
    /// The media is in the drive (false for a `Step` volume until its first mount).
    pub media_present: bool,
    /// Unformatted media: no file system recognizes it (only RAW mounts it).
    pub blank: bool,
    /// The file system pends the mount request and completes it from a worker thread this
    /// many milliseconds later ([`VolumeSpec::mount_pends_ms`]).
    pub mount_pends_ms: Option<u64>,
    /// The file system clears `DO_DEVICE_INITIALIZING` on a new volume device from a worker
    /// thread this many milliseconds after the mount completes
    /// ([`VolumeSpec::vdo_initializing_ms`]).
    pub vdo_initializing_ms: Option<u64>,
    /// The thread whose mount request is under way, if one is (`crate::mount::mount_volume`).
    pub mounting: Option<crate::ids::ThreadId>,
    /// The file system pended the mount request and has not completed it yet (its worker will).
    pub mount_pended_by_fs: bool,
    /// The mount request waited on by the mounting thread (`crate::mount::mount_volume`), for a
    /// synchronized registration that finishes the mount on that thread's behalf.
    pub mount_wait: Option<crate::mount::MountWait>,
}

/// The volume table.
#[derive(Default)]
pub struct Volumes {
    /// Volumes by id.
    pub list: Vec<Volume>,
    disks: u32,
    cdroms: u32,
}

impl Volume {
    /// The bytes a read of the raw media returns: zeros, except the file system's signature where
    /// its recognizer looks (boot sector for disk file systems, the volume descriptors at byte
    /// 32768 for CD and UDF media).
    pub fn media_image(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        if self.blank {
            return out;
        }
        let mut put = |at: u64, bytes: &[u8]| {
            for (i, b) in bytes.iter().enumerate() {
                let pos = at + i as u64;
                if pos >= offset && pos < offset + len as u64 {
                    out[(pos - offset) as usize] = *b;
                }
            }
        };
        match self.fs {
            FsKind::Ntfs => put(3, b"NTFS    "),
            FsKind::Fat => {
                put(3, b"MSDOS5.0");
                put(0x52, b"FAT32   ");
            }
            FsKind::Exfat => put(3, b"EXFAT   "),
            FsKind::Refs => put(3, b"ReFS\0\0\0\0"),
            FsKind::Cdfs => put(32768, b"\x01CD001\x01"),
            FsKind::Udfs => {
                put(32768, b"\0BEA01\x01");
                put(34816, b"\0NSR03\x01");
                put(36864, b"\0TEA01\x01");
            }
            FsKind::Mup | FsKind::Npfs | FsKind::Msfs => {}
        }
        if offset < 512 && offset + len as u64 >= 512 && self.fs.media() == MediaKind::Disk {
            put(510, &[0x55, 0xAA]);
        }
        out
    }

    /// The media's size in bytes, as the storage driver reports it.
    pub fn media_size(&self) -> u64 {
        match self.fs.media() {
            MediaKind::CdRom => 700 * 1024 * 1024,
            _ => 64 * 1024 * 1024 * 1024,
        }
    }
}

impl Kernel {
    /// A volume's name for reports.
    pub fn volume_display_name(&self, v: VolumeId) -> String {
        self.volumes
            .list
            .get(v.index())
            .map_or_else(|| format!("volume#{}", v.0), |vol| vol.name.to_string())
    }

    /// A volume's name for events, shared.
    #[inline]
    pub fn volume_shared_name(&self, v: VolumeId) -> crate::name::Name {
        self.volumes
            .list
            .get(v.index())
            .map_or_else(|| format!("volume#{}", v.0).into(), |vol| vol.name.clone())
    }

    /// The volume with this name (case-insensitive).
    pub fn volume_by_name(&self, name: &str) -> Option<VolumeId> {
        self.volumes
            .list
            .iter()
            .position(|v| v.name.eq_ignore_ascii_case(name))
            .map(|i| VolumeId(i as u32))
    }

    /// A volume's record.
    pub fn volume(&self, v: VolumeId) -> &Volume {
        &self.volumes.list[v.index()]
    }

    /// A volume's record, mutably.
    pub fn volume_mut(&mut self, v: VolumeId) -> &mut Volume {
        &mut self.volumes.list[v.index()]
    }

    /// Adds a volume's record (the machine installs and starts what it needs).
    pub fn add_volume_record(&mut self, spec: VolumeSpec) -> Result<VolumeId, VolumeError> {
        if self.volume_by_name(&spec.name).is_some() {
            return Err(VolumeError::DuplicateName(spec.name));
        }
        if matches!(spec.fs, FsKind::Npfs | FsKind::Msfs)
            && self.volumes.list.iter().any(|v| v.fs == spec.fs)
        {
            return Err(VolumeError::SecondNamespace(spec.fs));
        }
        let share = if spec.fs == FsKind::Mup {
            let trimmed = spec.name.trim_start_matches('\\');
            let parts: Vec<&str> = trimmed.split('\\').filter(|p| !p.is_empty()).collect();
            if parts.len() != 2 || !spec.name.starts_with("\\\\") {
                return Err(VolumeError::BadShareName(spec.name));
            }
            Some(format!("{}\\{}", parts[0], parts[1]))
        } else {
            None
        };
        let explicit = spec.name.to_ascii_lowercase().starts_with("\\device\\");
        let device_name = match spec.fs.media() {
            MediaKind::Disk | MediaKind::CdRom if explicit => spec.name.clone(),
            MediaKind::Disk => format!("\\Device\\HarddiskVolume{}", self.volumes.disks + 1),
            MediaKind::CdRom => format!("\\Device\\CdRom{}", self.volumes.cdroms),
            MediaKind::Network => crate::fs::MUP_DEVICE.to_owned(),
            MediaKind::None => match spec.fs {
                FsKind::Npfs => crate::fs::NPFS_DEVICE.to_owned(),
                _ => crate::fs::MSFS_DEVICE.to_owned(),
            },
        };
        // Two storage devices cannot have one name: a volume named by its device path and one
        // the machine gives that name collide, in either order (docs/simulator.md, "Volumes and
        // media").
        if spec.fs.uses_vpb() {
            let owner = self
                .volumes
                .list
                .iter()
                .find(|v| v.fs.uses_vpb() && v.device_name.eq_ignore_ascii_case(&device_name));
            if let Some(owner) = owner {
                return Err(VolumeError::DeviceInUse(device_name, owner.name.to_string()));
            }
        }
        match spec.fs.media() {
            MediaKind::Disk if !explicit => self.volumes.disks += 1,
            MediaKind::CdRom if !explicit => self.volumes.cdroms += 1,
            _ => {}
        }
        let id = VolumeId(self.volumes.list.len() as u32);
        let now = crate::fs::media::EPOCH_2026 + self.sched.now as i64;
        let serial = 0x5EED_0000 ^ (id.0.wrapping_mul(0x9E37_79B9)) ^ (self.config.seed as u32);
        let mut media = crate::fs::media::Media::new(serial, "", now);
        for (path, bytes) in &spec.files {
            media.add_file(path, bytes, now);
        }
        self.volumes.list.push(Volume {
            name: spec.name.into(),
            fs: spec.fs,
            mount: spec.mount,
            dev_drive: spec.dev_drive,
            trusted: spec.trusted,
            device_name,
            share,
            storage: None,
            vdo: None,
            media,
            media_present: spec.mount == MountWhen::Boot,
            blank: spec.blank,
            mount_pends_ms: spec.mount_pends_ms,
            vdo_initializing_ms: spec.vdo_initializing_ms,
            mounting: None,
            mount_pended_by_fs: false,
            mount_wait: None,
        });
        Ok(id)
    }
}
