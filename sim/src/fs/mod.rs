//! The native file systems: one in-memory engine, parameterized by kind, behind real driver
//! objects, control devices and volume devices, reached only through IRPs and fast I/O like any
//! file system (facts.md §1.1, §1.4, §1.7). Also the RAW file system and the file-system
//! recognizer ([`fsrec`]).
//!
//! Every kind is a native service whose `DriverEntry` creates its named control device objects
//! and registers them with `IoRegisterFileSystem` (the names and start types are in
//! docs/simulator.md). Volume devices are unnamed, created at mount.

pub mod control;
pub mod create;
pub mod fsrec;
pub mod info;
pub mod media;
pub mod notify;
pub mod oplock;
pub mod reparse;
pub mod rw;
pub mod streams;

use std::ffi::c_void;
use std::ptr::null_mut;

use fsfilter::{Status, device_type};
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, DRIVER_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT, IRP, SECTION_OBJECT_POINTERS, VPB,
};
use windows_sys::Wdk::Storage::FileSystem::FSRTL_ADVANCED_FCB_HEADER;
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use crate::fs::media::NodeId;
use crate::ids::{DeviceId, DriverId, VolumeId};
use crate::irpx;
use crate::kernel::{self, FastMap, Kernel};
use crate::loader::{ServiceSpec, StartType};
use crate::mem::{Block, BlockPool};
use crate::nt::{do_flags, mj};
use crate::volumes::FsKind;

/// `\Device\Mup`.
pub const MUP_DEVICE: &str = r"\Device\Mup";
/// `\Device\NamedPipe`.
pub const NPFS_DEVICE: &str = r"\Device\NamedPipe";
/// `\Device\Mailslot`.
pub const MSFS_DEVICE: &str = r"\Device\Mailslot";

/// The file systems the engine implements: the scenario's kinds plus RAW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FsType {
    /// NTFS.
    Ntfs = 0,
    /// FAT (FastFat).
    Fat = 1,
    /// exFAT.
    Exfat = 2,
    /// ReFS.
    Refs = 3,
    /// CDFS.
    Cdfs = 4,
    /// UDFS.
    Udfs = 5,
    /// The multiple UNC provider with its shares.
    Mup = 6,
    /// Named pipes.
    Npfs = 7,
    /// Mailslots.
    Msfs = 8,
    /// RAW: mounts anything when raw mounts are allowed; only the volume can be opened.
    Raw = 9,
}

/// A control device a file system creates.
#[derive(Clone, Copy, Debug)]
pub struct CdoDesc {
    /// Its name.
    pub name: &'static str,
    /// Its device type.
    pub device_type: u32,
    /// Extra `DO_*` flags (`DO_LOW_PRIORITY_FILESYSTEM`).
    pub flags: u32,
}

/// What the simulator knows about a file system kind.
#[derive(Clone, Copy, Debug)]
pub struct FsDesc {
    /// The service name.
    pub service: &'static str,
    /// `Start`.
    pub start: StartType,
    /// `Group`.
    pub group: &'static str,
    /// Its control devices.
    pub cdos: &'static [CdoDesc],
    /// Registers its devices with `IoRegisterFileSystem`.
    pub register: bool,
    /// `FileFsAttributeInformation.FileSystemName`.
    pub fs_name: &'static str,
    /// `FileFsAttributeInformation.FileSystemAttributes`.
    pub fs_attributes: u32,
    /// Directory listings sorted by name (B-tree directories) rather than in creation order.
    pub sorted: bool,
    /// Read-only media.
    pub read_only: bool,
    /// Revives a dismounted volume whose media comes back (FAT and CDFS, facts.md §1.4).
    pub revives: bool,
}

const fn cdo(name: &'static str, device_type: u32, flags: u32) -> CdoDesc {
    CdoDesc { name, device_type, flags }
}

use crate::nt::fs_attr as fa;
use device_type as dt;

const NTFS_CDOS: &[CdoDesc] = &[cdo(r"\Ntfs", dt::DISK_FILE_SYSTEM, 0)];
const FAT_CDOS: &[CdoDesc] =
    &[cdo(r"\Fat", dt::DISK_FILE_SYSTEM, 0), cdo(r"\FatCdrom", dt::CD_ROM_FILE_SYSTEM, 0)];
const EXFAT_CDOS: &[CdoDesc] = &[cdo(r"\Exfat", dt::DISK_FILE_SYSTEM, 0)];
const REFS_CDOS: &[CdoDesc] = &[cdo(r"\Refs", dt::DISK_FILE_SYSTEM, 0)];
const CDFS_CDOS: &[CdoDesc] =
    &[cdo(r"\Cdfs", dt::CD_ROM_FILE_SYSTEM, do_flags::LOW_PRIORITY_FILESYSTEM)];
const UDFS_CDOS: &[CdoDesc] =
    &[cdo(r"\UdfsCdRom", dt::CD_ROM_FILE_SYSTEM, 0), cdo(r"\UdfsDisk", dt::DISK_FILE_SYSTEM, 0)];
const MUP_CDOS: &[CdoDesc] = &[cdo(MUP_DEVICE, dt::NETWORK_FILE_SYSTEM, 0)];
const NPFS_CDOS: &[CdoDesc] = &[cdo(NPFS_DEVICE, dt::NAMED_PIPE, 0)];
const MSFS_CDOS: &[CdoDesc] = &[cdo(MSFS_DEVICE, dt::MAILSLOT, 0)];
const RAW_CDOS: &[CdoDesc] = &[
    cdo(r"\Device\RawDisk", dt::DISK_FILE_SYSTEM, 0),
    cdo(r"\Device\RawCdRom", dt::CD_ROM_FILE_SYSTEM, 0),
];

const NTFS_ATTRS: u32 = fa::CASE_SENSITIVE_SEARCH
    | fa::CASE_PRESERVED_NAMES
    | fa::UNICODE_ON_DISK
    | fa::PERSISTENT_ACLS
    | fa::FILE_COMPRESSION
    | fa::SUPPORTS_SPARSE_FILES
    | fa::SUPPORTS_REPARSE_POINTS
    | fa::SUPPORTS_OBJECT_IDS
    | fa::SUPPORTS_ENCRYPTION
    | fa::NAMED_STREAMS
    | fa::SUPPORTS_TRANSACTIONS
    | fa::SUPPORTS_HARD_LINKS;

impl FsType {
    /// Every type.
    pub const ALL: [FsType; 10] = [
        FsType::Ntfs,
        FsType::Fat,
        FsType::Exfat,
        FsType::Refs,
        FsType::Cdfs,
        FsType::Udfs,
        FsType::Mup,
        FsType::Npfs,
        FsType::Msfs,
        FsType::Raw,
    ];

    /// The engine type of a scenario kind.
    pub const fn of(kind: FsKind) -> FsType {
        match kind {
            FsKind::Ntfs => FsType::Ntfs,
            FsKind::Fat => FsType::Fat,
            FsKind::Exfat => FsType::Exfat,
            FsKind::Refs => FsType::Refs,
            FsKind::Cdfs => FsType::Cdfs,
            FsKind::Udfs => FsType::Udfs,
            FsKind::Mup => FsType::Mup,
            FsKind::Npfs => FsType::Npfs,
            FsKind::Msfs => FsType::Msfs,
        }
    }

    /// From the numeric value kept in device extensions.
    pub const fn from_u8(v: u8) -> Option<FsType> {
        match v {
            0 => Some(FsType::Ntfs),
            1 => Some(FsType::Fat),
            2 => Some(FsType::Exfat),
            3 => Some(FsType::Refs),
            4 => Some(FsType::Cdfs),
            5 => Some(FsType::Udfs),
            6 => Some(FsType::Mup),
            7 => Some(FsType::Npfs),
            8 => Some(FsType::Msfs),
            9 => Some(FsType::Raw),
            _ => None,
        }
    }

    /// The settable attributes (`attr::SETTABLE`) a file keeps on this file system. A FAT
    /// directory entry stores the read-only, hidden, system, directory and archive bits:
    /// FastFat's FatCommonCreate keeps those of a create's attributes and FatSetBasicInfo those
    /// of a set, dropping the others; the temporary bit lives in its FCB
    /// (FCB_STATE_TEMPORARY, reported by FatQueryBasicInfo), kept here with the file. exFAT's
    /// FileAttributes field has the same bits (Microsoft's exFAT specification): treated as
    /// FAT (docs/simulator.md, "Dispositions").
    pub const fn kept_attributes(self) -> u32 {
        use crate::nt::attr;
        match self {
            FsType::Fat | FsType::Exfat => {
                attr::READONLY | attr::HIDDEN | attr::SYSTEM | attr::ARCHIVE | attr::TEMPORARY
            }
            _ => attr::SETTABLE,
        }
    }

    /// What the simulator knows about it.
    pub const fn desc(self) -> FsDesc {
        match self {
            FsType::Ntfs => FsDesc {
                service: "Ntfs",
                start: StartType::Boot,
                group: "Boot File System",
                cdos: NTFS_CDOS,
                register: true,
                fs_name: "NTFS",
                fs_attributes: NTFS_ATTRS,
                sorted: true,
                read_only: false,
                revives: false,
            },
            FsType::Fat => FsDesc {
                service: "fastfat",
                start: StartType::Disabled,
                group: "Boot File System",
                cdos: FAT_CDOS,
                register: true,
                fs_name: "FAT32",
                fs_attributes: fa::CASE_PRESERVED_NAMES | fa::UNICODE_ON_DISK,
                sorted: false,
                read_only: false,
                revives: true,
            },
            FsType::Exfat => FsDesc {
                service: "exfat",
                start: StartType::Disabled,
                group: "Boot File System",
                cdos: EXFAT_CDOS,
                register: true,
                fs_name: "exFAT",
                fs_attributes: fa::CASE_PRESERVED_NAMES | fa::UNICODE_ON_DISK,
                sorted: false,
                read_only: false,
                revives: false,
            },
            FsType::Refs => FsDesc {
                service: "ReFS",
                start: StartType::Disabled,
                group: "Boot File System",
                cdos: REFS_CDOS,
                register: true,
                fs_name: "ReFS",
                fs_attributes: fa::CASE_SENSITIVE_SEARCH
                    | fa::CASE_PRESERVED_NAMES
                    | fa::UNICODE_ON_DISK
                    | fa::PERSISTENT_ACLS
                    | fa::SUPPORTS_SPARSE_FILES
                    | fa::SUPPORTS_REPARSE_POINTS
                    | fa::NAMED_STREAMS
                    | fa::SUPPORTS_INTEGRITY_STREAMS
                    | fa::SUPPORTS_BLOCK_REFCOUNTING,
                sorted: true,
                read_only: false,
                revives: false,
            },
            FsType::Cdfs => FsDesc {
                service: "cdfs",
                start: StartType::Disabled,
                group: "Boot File System",
                cdos: CDFS_CDOS,
                register: true,
                fs_name: "CDFS",
                fs_attributes: fa::CASE_SENSITIVE_SEARCH | fa::READ_ONLY_VOLUME,
                sorted: true,
                read_only: true,
                revives: true,
            },
            FsType::Udfs => FsDesc {
                service: "udfs",
                start: StartType::Disabled,
                group: "Boot File System",
                cdos: UDFS_CDOS,
                register: true,
                fs_name: "UDF",
                fs_attributes: fa::CASE_SENSITIVE_SEARCH
                    | fa::CASE_PRESERVED_NAMES
                    | fa::UNICODE_ON_DISK
                    | fa::READ_ONLY_VOLUME,
                sorted: true,
                read_only: true,
                revives: false,
            },
            FsType::Mup => FsDesc {
                service: "Mup",
                start: StartType::Boot,
                group: "Network",
                cdos: MUP_CDOS,
                register: true,
                fs_name: "NTFS",
                fs_attributes: NTFS_ATTRS,
                sorted: true,
                read_only: false,
                revives: false,
            },
            FsType::Npfs => FsDesc {
                service: "Npfs",
                start: StartType::System,
                group: "File System",
                cdos: NPFS_CDOS,
                register: false,
                fs_name: "NPFS",
                fs_attributes: fa::CASE_PRESERVED_NAMES | fa::UNICODE_ON_DISK,
                sorted: true,
                read_only: false,
                revives: false,
            },
            FsType::Msfs => FsDesc {
                service: "Msfs",
                start: StartType::System,
                group: "File System",
                cdos: MSFS_CDOS,
                register: false,
                fs_name: "MSFS",
                fs_attributes: fa::CASE_PRESERVED_NAMES | fa::UNICODE_ON_DISK,
                sorted: true,
                read_only: false,
                revives: false,
            },
            FsType::Raw => FsDesc {
                service: "RAW",
                start: StartType::Boot,
                group: "Boot File System",
                cdos: RAW_CDOS,
                register: true,
                fs_name: "RAW",
                fs_attributes: 0,
                sorted: true,
                read_only: false,
                revives: false,
            },
        }
    }

    /// True for the kinds whose device is itself the volume (no mount, no VPB).
    pub const fn is_namespace(self) -> bool {
        matches!(self, FsType::Mup | FsType::Npfs | FsType::Msfs)
    }

    /// True for pipes and mailslots, whose files are streams each file object reads from its
    /// own place in (docs/simulator.md, "Pipes and mailslots").
    pub const fn is_stream(self) -> bool {
        matches!(self, FsType::Npfs | FsType::Msfs)
    }

    /// True for the file systems whose first cached transfer of a file object initiates caching
    /// (`CcInitializeCacheMap`: its `PrivateCacheMap`, after which the I/O manager offers cached
    /// transfers to fast I/O). MSFS does not cache; NPFS marks its file objects itself at create.
    pub const fn initiates_caching(self) -> bool {
        !matches!(self, FsType::Msfs | FsType::Npfs)
    }

    /// True for the local disk and CD file systems, which want sector-aligned non-cached I/O.
    pub const fn sector_aligned(self) -> bool {
        !self.is_namespace()
    }

    /// The `FLT_FILESYSTEM_TYPE` value (facts.md §7).
    pub const fn flt_type(self) -> u32 {
        match self {
            FsType::Raw => 1,
            FsType::Ntfs => 2,
            FsType::Fat => 3,
            FsType::Cdfs => 4,
            FsType::Udfs => 5,
            FsType::Mup => 13,
            FsType::Exfat => 22,
            FsType::Npfs => 25,
            FsType::Msfs => 26,
            FsType::Refs => 28,
        }
    }
}

/// The service spec of a file system kind.
pub fn service_spec(ty: FsType) -> ServiceSpec {
    let d = ty.desc();
    let mut spec = ServiceSpec::new(d.service, entry_for(ty), "native");
    spec.start = d.start;
    spec.group = Some(d.group.to_owned());
    spec.native = true;
    spec
}

fn entry_for(ty: FsType) -> crate::loader::DriverEntry {
    match ty {
        FsType::Ntfs => fs_entry::<0>,
        FsType::Fat => fs_entry::<1>,
        FsType::Exfat => fs_entry::<2>,
        FsType::Refs => fs_entry::<3>,
        FsType::Cdfs => fs_entry::<4>,
        FsType::Udfs => fs_entry::<5>,
        FsType::Mup => fs_entry::<6>,
        FsType::Npfs => fs_entry::<7>,
        FsType::Msfs => fs_entry::<8>,
        FsType::Raw => fs_entry::<9>,
    }
}

/// What a device of the file systems is (kept in its device extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// A control device (`\Ntfs`).
    Control = 1,
    /// A volume device (unnamed, created at mount).
    Volume = 2,
    /// A device that is both (`\Device\Mup`, `\Device\NamedPipe`, `\Device\Mailslot`).
    Namespace = 3,
    /// A recognizer's control device.
    Recognizer = 4,
}

/// The device extension of the file systems' devices.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct DevExt {
    /// [`DEV_EXT_MAGIC`].
    pub magic: u32,
    /// The [`FsType`] (or for recognizers, the type it loads).
    pub ty: u8,
    /// The [`Role`].
    pub role: u8,
    /// Padding.
    pub spare: u16,
    /// The mount, for volume devices (and namespace devices).
    pub mount: u32,
}

/// Marks the extension as one of ours.
pub const DEV_EXT_MAGIC: u32 = 0x5346_4953; // "SIFS"

/// Reads a device's extension (None when it is not a file system device of the simulator).
pub(crate) fn dev_ext(device: *const DEVICE_OBJECT) -> Option<DevExt> {
    if device.is_null() {
        return None;
    }
    // SAFETY: a device object the I/O manager passed to our dispatch routine.
    let ext = unsafe { (*device).DeviceExtension }.cast::<DevExt>();
    if ext.is_null() {
        return None;
    }
    // SAFETY: our devices are created with a DevExt-sized extension.
    let e = unsafe { *ext };
    (e.magic == DEV_EXT_MAGIC).then_some(e)
}

/// Writes a device's extension.
pub(crate) fn set_dev_ext(device: *mut DEVICE_OBJECT, ext: DevExt) {
    // SAFETY: our device, created with a DevExt-sized extension.
    let p = unsafe { (*device).DeviceExtension }.cast::<DevExt>();
    // SAFETY: as above.
    unsafe { p.write(ext) };
}

/// A mount's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountState {
    /// Mounted: the real device's VPB points to this mount's volume device.
    Mounted,
    /// Dismounted with files still open: the volume device lives until they close.
    Dismounted,
    /// Torn down: the volume device is deleted.
    Gone,
}

/// One mount of a volume (or, for the namespace file systems, a volume's presence on the
/// file system's device).
pub struct Mount {
    /// The file system.
    pub ty: FsType,
    /// The volume.
    pub volume: VolumeId,
    /// The volume device.
    pub vdo: DeviceId,
    /// The VPB it mounted through (null for namespace volumes).
    pub vpb: *mut VPB,
    /// The real (storage) device.
    pub real: Option<DeviceId>,
    /// The top of the storage stack at mount (where the file system sends storage requests).
    pub target: *mut DEVICE_OBJECT,
    /// Mounted, dismounted, gone.
    pub state: MountState,
    /// File objects opened on it and not yet closed.
    pub open_files: u32,
    /// The file object that locked the volume (`FSCTL_LOCK_VOLUME`).
    pub locked_by: Option<usize>,
    /// The FCB of each open node.
    pub fcbs_by_node: FastMap<NodeId, usize>,
    /// The volume's own FCB (for volume opens).
    pub volume_fcb: usize,
    /// For a network share: `SERVER\SHARE` upper-cased.
    pub share: Option<String>,
}

/// A byte-range lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeLock {
    /// The owner.
    pub fo: usize,
    /// The key.
    pub key: u32,
    /// Start.
    pub offset: u64,
    /// Length.
    pub length: u64,
    /// Exclusive (else shared).
    pub exclusive: bool,
}

impl RangeLock {
    /// True when the ranges overlap (zero-length ranges overlap nothing). Ranges are compared
    /// by their last bytes, so a range that ends at the last 64-bit offset, `u64::MAX`, overlaps.
    pub fn overlaps(&self, offset: u64, length: u64) -> bool {
        length > 0
            && self.length > 0
            && offset <= self.offset.saturating_add(self.length - 1)
            && self.offset <= offset.saturating_add(length - 1)
    }
}

/// Share-access counts (`SHARE_ACCESS`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ShareAccess {
    /// Opens counted.
    pub open: u32,
    /// With read access.
    pub readers: u32,
    /// With write access.
    pub writers: u32,
    /// With delete access.
    pub deleters: u32,
    /// Sharing read.
    pub shared_read: u32,
    /// Sharing write.
    pub shared_write: u32,
    /// Sharing delete.
    pub shared_delete: u32,
}

/// What one open asked for, for share access: (read, write, delete, share read, share write,
/// share delete).
pub type ShareRequest = [bool; 6];

impl ShareAccess {
    /// `IoCheckShareAccess`: true when the open is compatible.
    pub fn check(&self, r: ShareRequest) -> bool {
        let [read, write, delete, sr, sw, sd] = r;
        if !(read || write || delete) {
            return true;
        }
        let conflict = (read && self.shared_read < self.open)
            || (write && self.shared_write < self.open)
            || (delete && self.shared_delete < self.open)
            || (self.readers > 0 && !sr)
            || (self.writers > 0 && !sw)
            || (self.deleters > 0 && !sd);
        !conflict
    }

    /// `IoSetShareAccess` / `IoUpdateShareAccess`.
    pub fn add(&mut self, r: ShareRequest) {
        let [read, write, delete, sr, sw, sd] = r;
        if !(read || write || delete) {
            return;
        }
        self.open += 1;
        self.readers += u32::from(read);
        self.writers += u32::from(write);
        self.deleters += u32::from(delete);
        self.shared_read += u32::from(sr);
        self.shared_write += u32::from(sw);
        self.shared_delete += u32::from(sd);
    }

    /// `IoRemoveShareAccess`.
    pub fn remove(&mut self, r: ShareRequest) {
        let [read, write, delete, sr, sw, sd] = r;
        if !(read || write || delete) {
            return;
        }
        self.open = self.open.saturating_sub(1);
        self.readers = self.readers.saturating_sub(u32::from(read));
        self.writers = self.writers.saturating_sub(u32::from(write));
        self.deleters = self.deleters.saturating_sub(u32::from(delete));
        self.shared_read = self.shared_read.saturating_sub(u32::from(sr));
        self.shared_write = self.shared_write.saturating_sub(u32::from(sw));
        self.shared_delete = self.shared_delete.saturating_sub(u32::from(sd));
    }
}

/// The node of the volume FCB.
pub const VOLUME_NODE: NodeId = NodeId::MAX;

/// A file control block: one per open stream per mount; its block is what `FsContext` points to
/// (an `FSRTL_ADVANCED_FCB_HEADER` followed by the `SECTION_OBJECT_POINTERS`).
pub struct Fcb {
    block: Block,
    /// The mount.
    pub mount: u32,
    /// The node ([`VOLUME_NODE`] for the volume).
    pub node: NodeId,
    /// File objects referring to it (closes pending).
    pub refs: u32,
    /// Handles (cleanups pending).
    pub handles: u32,
    /// Share access.
    pub share: ShareAccess,
    /// Byte-range locks.
    pub locks: Vec<RangeLock>,
    /// Lock requests waiting for a conflicting lock to go.
    pub waiting_locks: Vec<usize>,
    /// Delete on last cleanup.
    pub delete_pending: bool,
}

/// The layout of an FCB block.
#[repr(C)]
pub struct FcbBlock {
    /// What FsRtl and filters read (sizes, filter contexts).
    pub header: FSRTL_ADVANCED_FCB_HEADER,
    /// `FileObject->SectionObjectPointer`.
    pub sop: SECTION_OBJECT_POINTERS,
    /// Stands in for the cache manager's maps (`PrivateCacheMap`, `SharedCacheMap` point here).
    pub cache: [u64; 8],
}

use crate::perstream::FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS;

impl Fcb {
    /// The FCB block's address (`FsContext`).
    pub fn ptr(&self) -> usize {
        self.block.ptr() as usize
    }

    fn fcb_block(&self) -> &'static mut FcbBlock {
        // SAFETY: the block is sized for an FcbBlock and lives while the FCB does.
        unsafe { crate::mem::obj(self.block.ptr().cast::<FcbBlock>()) }
    }

    /// Updates the header's sizes.
    pub fn set_size(&self, size: u64) {
        let h = &mut self.fcb_block().header.Base;
        h.FileSize = size as i64;
        h.ValidDataLength = size as i64;
        h.AllocationSize = allocation(size) as i64;
    }

    /// `SectionObjectPointer`.
    pub fn sop(&self) -> *mut SECTION_OBJECT_POINTERS {
        &mut self.fcb_block().sop
    }

    /// The stand-in cache map.
    pub fn cache_map(&self) -> *mut c_void {
        self.fcb_block().cache.as_mut_ptr().cast()
    }
}

/// The services every simulated machine has of its own (the file systems, RAW, the recognizer,
/// the storage driver, the Filter Manager): a scenario's driver cannot take one of these names.
pub fn builtin_services() -> impl Iterator<Item = &'static str> {
    FsType::ALL.into_iter().map(|t| t.desc().service).chain([
        fsrec::SERVICE,
        crate::storage::SERVICE,
        crate::fltmgr::SERVICE,
    ])
}

/// The allocation size of a file of `size` bytes (4 KiB clusters).
pub fn allocation(size: u64) -> u64 {
    size.div_ceil(4096) * 4096
}

/// A context control block: one per file object (`FsContext2`).
pub struct Ccb {
    block: Block,
    /// The FCB (`FsContext`).
    pub fcb: usize,
    /// The file object.
    pub fo: usize,
    /// The access granted.
    pub access: u32,
    /// What it counted in the FCB's share access.
    pub share: ShareRequest,
    /// `FILE_DELETE_ON_CLOSE`.
    pub delete_on_close: bool,
    /// Cleanup came.
    pub cleaned: bool,
    /// Directory enumeration: the pattern (None before the first query).
    pub pattern: Option<Vec<char>>,
    /// Directory enumeration: the next entry's position.
    pub position: usize,
}

impl Ccb {
    /// `FsContext2`.
    pub fn ptr(&self) -> usize {
        self.block.ptr() as usize
    }
}

/// The file systems' state.
pub struct FsState {
    /// Mounts, by index.
    pub mounts: Vec<Mount>,
    /// FCBs by `FsContext`.
    pub fcbs: FastMap<usize, Fcb>,
    /// CCBs by `FsContext2`.
    pub ccbs: FastMap<usize, Ccb>,
    /// Each type's driver, once loaded.
    pub drivers: [Option<DriverId>; 10],
    /// Control devices by type.
    pub cdos: Vec<(FsType, DeviceId)>,
    /// Recognizers.
    pub recognizers: Vec<fsrec::Recognizer>,
    /// Lock requests waiting, by IRP.
    pub waiting: FastMap<usize, RangeLock>,
    /// Directory-change watches, by CCB, in the order they were set up ([`notify`]).
    pub watches: Vec<(usize, notify::Watch)>,
    /// Non-cached and paging transfers complete from a DPC at `DISPATCH_LEVEL` (off by
    /// default: they complete in the dispatch routine).
    pub complete_at_dpc: bool,
    /// The oplock of each FCB that had one requested, by FCB ([`oplock`]): kept until the FCB
    /// goes, and empty on volumes nobody asks an oplock of (each operation's check is then one
    /// test of this map).
    pub oplocks: FastMap<usize, oplock::Oplock>,
    /// Oplock breaks started so far: each break's number, which its acknowledgement timeout
    /// names ([`oplock`]).
    pub oplock_breaks: u64,
    /// The acknowledgement timeouts armed for the break under way of each FCB, by their timed
    /// work's number, taken back when the break ends ([`oplock`]).
    pub oplock_timers: FastMap<usize, Vec<u64>>,
    /// FCBs retired with filter contexts still linked, whose teardown
    /// ([`teardown_retired`]) calls the contexts' `FreeCallback`s outside the kernel's borrow.
    retiring: Vec<Block>,
    fcb_pool: BlockPool,
    ccb_pool: BlockPool,
}

impl Default for FsState {
    fn default() -> Self {
        FsState {
            mounts: Vec::new(),
            fcbs: FastMap::default(),
            ccbs: FastMap::default(),
            drivers: [None; 10],
            cdos: Vec::new(),
            recognizers: Vec::new(),
            waiting: FastMap::default(),
            watches: Vec::new(),
            complete_at_dpc: false,
            oplocks: FastMap::default(),
            oplock_breaks: 0,
            oplock_timers: FastMap::default(),
            retiring: Vec::new(),
            fcb_pool: BlockPool::new(size_of::<FcbBlock>()),
            ccb_pool: BlockPool::new(64),
        }
    }
}

impl FsState {
    /// True while the FCB block at `header` is retired and its filter contexts are being torn
    /// down (a `FreeCallback` may still remove contexts from its list).
    pub fn is_retiring(&self, header: usize) -> bool {
        self.retiring.iter().any(|b| b.ptr() as usize == header)
    }

    /// Finds the mount of a network share (`SERVER\SHARE` upper-cased).
    pub fn share_mount(&self, share: &str) -> Option<u32> {
        self.mounts
            .iter()
            .position(|m| m.state == MountState::Mounted && m.share.as_deref() == Some(share))
            .map(|i| i as u32)
    }
}

impl Kernel {
    /// The FCB a file object refers to.
    pub(crate) fn fcb_of(&self, fo: *const FILE_OBJECT) -> Option<&Fcb> {
        if fo.is_null() {
            return None;
        }
        // SAFETY: a file object the caller got from an IRP or the I/O manager.
        let ctx = unsafe { (*fo).FsContext } as usize;
        self.fs.fcbs.get(&ctx)
    }

    /// Creates the FCB of a node on a mount (or returns the existing one).
    pub fn fcb_for(&mut self, mount: u32, node: NodeId) -> usize {
        if let Some(p) = self.fs.mounts[mount as usize].fcbs_by_node.get(&node) {
            return *p;
        }
        let block = self.fs.fcb_pool.take();
        let fcb = Fcb {
            block,
            mount,
            node,
            refs: 0,
            handles: 0,
            share: ShareAccess::default(),
            locks: Vec::new(),
            waiting_locks: Vec::new(),
            delete_pending: false,
        };
        let b = fcb.fcb_block();
        b.header.Base.NodeTypeCode = 0x0502;
        b.header.Base.NodeByteSize = size_of::<FcbBlock>() as i16;
        b.header.Base.Flags2 = FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS;
        let list = std::ptr::addr_of_mut!(b.header.FilterContexts);
        b.header.FilterContexts.Flink = list;
        b.header.FilterContexts.Blink = list;
        let m = &self.fs.mounts[mount as usize];
        let size = if node == VOLUME_NODE {
            0
        } else {
            self.volumes.list[m.volume.index()].media.node(node).size()
        };
        fcb.set_size(size);
        let p = fcb.ptr();
        self.fs.fcbs.insert(p, fcb);
        self.fs.mounts[mount as usize].fcbs_by_node.insert(node, p);
        p
    }

    /// Drops an FCB no file object refers to any more.
    pub fn retire_fcb(&mut self, p: usize) {
        let Some(fcb) = self.fs.fcbs.remove(&p) else { return };
        if !self.fs.oplocks.is_empty() {
            self.fs.oplocks.remove(&p);
        }
        if let Some(m) = self.fs.mounts.get_mut(fcb.mount as usize) {
            if m.fcbs_by_node.get(&fcb.node) == Some(&p) {
                m.fcbs_by_node.remove(&fcb.node);
            }
        }
        // FsRtlTeardownPerStreamContexts: filters' contexts go with the stream. With contexts
        // linked, the FCB waits for `teardown_retired`, which calls their FreeCallbacks (driver
        // code) once the kernel's borrow has ended.
        let head = std::ptr::addr_of_mut!(fcb.fcb_block().header.FilterContexts);
        // SAFETY: the FCB's live block.
        if unsafe { (*head).Flink } != head {
            self.fs.retiring.push(fcb.block);
            return;
        }
        // The Filter Manager's stream contexts hang off its own context on that list (see
        // `perstream`); any left when it is empty (a driver removed that context) go now.
        self.flt_stream_gone(p);
        self.flt_stream_list_gone(p);
        self.fs.fcb_pool.give(fcb.block);
    }

    /// A new CCB.
    pub fn new_ccb(&mut self, fcb: usize, fo: usize, access: u32, share: ShareRequest) -> usize {
        let block = self.fs.ccb_pool.take();
        let ccb = Ccb {
            block,
            fcb,
            fo,
            access,
            share,
            delete_on_close: false,
            cleaned: false,
            pattern: None,
            position: 0,
        };
        let p = ccb.ptr();
        self.fs.ccbs.insert(p, ccb);
        p
    }

    /// Drops a CCB.
    pub fn retire_ccb(&mut self, p: usize) {
        if let Some(ccb) = self.fs.ccbs.remove(&p) {
            self.fs.ccb_pool.give(ccb.block);
        }
        self.drop_watch(p);
    }

    /// The bytes of the stream an `FsContext` designates (for sections), if it is a file.
    pub fn stream_bytes(&self, fs_context: usize) -> Option<&[u8]> {
        let fcb = self.fs.fcbs.get(&fs_context)?;
        if fcb.node == VOLUME_NODE {
            return None;
        }
        let m = self.fs.mounts.get(fcb.mount as usize)?;
        let node = self.volumes.list.get(m.volume.index())?.media.node(fcb.node);
        (!node.is_dir()).then(|| node.data())
    }

    /// The file system type and volume of a mount.
    pub fn mount_info(&self, mount: u32) -> Option<(FsType, VolumeId, MountState)> {
        self.fs.mounts.get(mount as usize).map(|m| (m.ty, m.volume, m.state))
    }

    /// The mount a volume device belongs to.
    pub fn mount_of_device(&self, device: DeviceId) -> Option<u32> {
        let ext = dev_ext(self.objects.device(device).ptr)?;
        (ext.role == Role::Volume as u8).then_some(ext.mount)
    }

    /// The namespace device (`\Device\Mup`, ...) of a loaded namespace file system.
    pub fn namespace_device(&self, ty: FsType) -> Option<DeviceId> {
        self.fs
            .cdos
            .iter()
            .find(|(t, d)| *t == ty && !self.objects.device(*d).deleted)
            .map(|(_, d)| *d)
    }
}

/// Tears down the FCBs retired with filter contexts linked, as a file system does as it frees a
/// stream's control block: `FsRtlTeardownPerStreamContexts` (each context's `FreeCallback`, in
/// its driver's image), then the Filter Manager's stream contexts left (if a driver removed its
/// list's context), then the block. Called by the file system after the borrow that retired
/// them, before the request that did completes.
pub(crate) fn teardown_retired() {
    while let Some(header) = kernel::with(|k| k.fs.retiring.first().map(|b| b.ptr() as usize)) {
        // SAFETY: the retired FCB block, alive until it is given back below.
        unsafe { crate::exports::fsrtl::FsRtlTeardownPerStreamContexts(header as *const _) };
        kernel::with(|k| {
            k.flt_stream_gone(header);
            k.flt_stream_list_gone(header);
            let block = k.fs.retiring.remove(0);
            k.fs.fcb_pool.give(block);
        });
    }
}

/// The fast-I/O table of every native file system (facts.md §1.7): real cached reads and writes,
/// the check of a transfer on a file with byte-range locks (`FastIoCheckIfPossible`, which
/// `FsRtlCopyRead` asks of the top of the stack), and on disk file systems byte-range locks
/// (`FsRtlFastLock` and the fast unlocks), basic, standard and network-open information queries,
/// and query opens (`FastIoQueryOpen`); FALSE for the rest, so the I/O manager builds an IRP.
pub static FAST_IO: FAST_IO_DISPATCH = FAST_IO_DISPATCH {
    SizeOfFastIoDispatch: size_of::<FAST_IO_DISPATCH>() as u32,
    FastIoCheckIfPossible: Some(rw::fast_io_check_if_possible),
    FastIoRead: Some(rw::fast_io_read),
    FastIoWrite: Some(rw::fast_io_write),
    FastIoQueryBasicInfo: Some(info::fast_io_query_basic_info),
    FastIoQueryStandardInfo: Some(info::fast_io_query_standard_info),
    FastIoLock: Some(rw::fast_io_lock),
    FastIoUnlockSingle: Some(rw::fast_io_unlock_single),
    FastIoUnlockAll: Some(rw::fast_io_unlock_all),
    FastIoUnlockAllByKey: Some(rw::fast_io_unlock_all_by_key),
    FastIoDeviceControl: None,
    AcquireFileForNtCreateSection: None,
    ReleaseFileForNtCreateSection: None,
    FastIoDetachDevice: None,
    FastIoQueryNetworkOpenInfo: Some(info::fast_io_query_network_open_info),
    AcquireForModWrite: None,
    MdlRead: None,
    MdlReadComplete: None,
    PrepareMdlWrite: None,
    MdlWriteComplete: None,
    FastIoReadCompressed: None,
    FastIoWriteCompressed: None,
    MdlReadCompleteCompressed: None,
    MdlWriteCompleteCompressed: None,
    FastIoQueryOpen: Some(info::fast_io_query_open),
    ReleaseForModWrite: None,
    AcquireForCcFlush: None,
    ReleaseForCcFlush: None,
};

/// Creates a named device of a native driver with a [`DevExt`], as its `DriverEntry` would.
pub(crate) fn create_named_device(
    driver: *const DRIVER_OBJECT,
    name: &str,
    device_type: u32,
    characteristics: u32,
    ext: DevExt,
) -> Result<*mut DEVICE_OBJECT, Status> {
    let units = crate::mem::wide(name);
    let us = crate::mem::unicode(&units);
    let mut dev: *mut DEVICE_OBJECT = null_mut();
    // SAFETY: our driver object, a valid name, an out pointer.
    let s = Status(unsafe {
        crate::exports::io::IoCreateDevice(
            driver,
            size_of::<DevExt>() as u32,
            &us,
            device_type,
            characteristics,
            false,
            &mut dev,
        )
    });
    if !s.is_success() {
        return Err(s);
    }
    set_dev_ext(dev, ext);
    Ok(dev)
}

/// The `DriverEntry` of file system type `T`: dispatch table, fast-I/O table, control devices,
/// registration.
///
/// # Safety
/// Called by the loader with the driver object and registry path.
pub unsafe extern "system" fn fs_entry<const T: u8>(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    let Some(ty) = FsType::from_u8(T) else { return Status::INVALID_PARAMETER.0 };
    // SAFETY: our own driver object during DriverEntry.
    let d = unsafe { crate::mem::obj(driver) };
    for (major, slot) in d.MajorFunction.iter_mut().enumerate() {
        if (major <= usize::from(mj::CLEANUP) && major != 0x01) || major == usize::from(mj::PNP) {
            *slot = Some(fs_dispatch);
        }
    }
    d.FastIoDispatch = std::ptr::addr_of!(FAST_IO).cast_mut();
    let desc = ty.desc();
    let role = if ty.is_namespace() { Role::Namespace } else { Role::Control };
    let mut created = Vec::new();
    for c in desc.cdos {
        let ext = DevExt {
            magic: DEV_EXT_MAGIC,
            ty: ty as u8,
            role: role as u8,
            spare: 0,
            mount: u32::MAX,
        };
        let dev = match create_named_device(driver, c.name, c.device_type, 0, ext) {
            Ok(d) => d,
            Err(s) => return s.0,
        };
        // SAFETY: the device we just created.
        unsafe { (*dev).Flags |= c.flags };
        created.push(dev);
    }
    kernel::with(|k| {
        let did = k.objects.driver_id(driver);
        k.fs.drivers[ty as usize] = did;
        for &dev in &created {
            let Some(id) = k.objects.device_id(dev) else { continue };
            k.fs.cdos.push((ty, id));
            k.objects.device_mut(id).role = crate::objects::DeviceRole::FsControl;
            if ty == FsType::Raw {
                k.mark_raw(id);
            }
        }
    });
    if desc.register {
        for &dev in &created {
            // SAFETY: our control device.
            unsafe { crate::exports::io::IoRegisterFileSystem(dev) };
        }
    }
    Status::SUCCESS.0
}

/// The one dispatch routine of every native file system: routes by device role and major.
///
/// # Safety
/// Called by the I/O manager with a device of ours and a live IRP.
pub unsafe extern "system" fn fs_dispatch(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    let Some(ext) = dev_ext(device) else {
        // SAFETY: the I/O manager's live IRP.
        return unsafe { irpx::complete(irp, Status::INVALID_DEVICE_REQUEST, 0) };
    };
    let Some(ty) = FsType::from_u8(ext.ty) else {
        // SAFETY: as above.
        return unsafe { irpx::complete(irp, Status::INVALID_DEVICE_REQUEST, 0) };
    };
    // SAFETY: the I/O manager's live IRP, in our dispatch routine.
    let sl = unsafe { irpx::current(irp) };
    let major = sl.MajorFunction;
    let minor = sl.MinorFunction;
    let role = ext.role;
    let call = Call { device: device.cast_mut(), irp, ty, ext };
    if role == Role::Control as u8 {
        return control::control_device(call, major, minor);
    }
    match major {
        mj::CREATE => create::create(call),
        mj::READ => rw::read(call),
        mj::WRITE => rw::write(call),
        mj::QUERY_INFORMATION => info::query_information(call),
        mj::SET_INFORMATION => info::set_information(call),
        mj::DIRECTORY_CONTROL => info::directory_control(call, minor),
        mj::QUERY_VOLUME_INFORMATION => info::query_volume_information(call),
        mj::FILE_SYSTEM_CONTROL => control::fsctl(call, minor),
        mj::DEVICE_CONTROL => control::device_control(call),
        mj::LOCK_CONTROL => rw::lock_control(call, minor),
        mj::CLEANUP => control::cleanup(call),
        mj::CLOSE => control::close(call),
        mj::FLUSH_BUFFERS | mj::SHUTDOWN => call.done(Status::SUCCESS, 0),
        mj::PNP => control::pnp(call, minor),
        _ => call.done(Status::INVALID_DEVICE_REQUEST, 0),
    }
}

/// An `IRP_MJ_PNP` the file system does not handle (any minor but the four of a removal,
/// [`control::pnp`]): nobody below handles it either (no storage PnP stack is modelled), so it
/// completes with the status and information it came with, as a PnP IRP no driver handles does
/// (the sender set `STATUS_NOT_SUPPORTED`). docs/simulator.md, "Raw IRPs".
pub(crate) fn pnp_pass_on(call: Call) -> NTSTATUS {
    // SAFETY: the live IRP in our dispatch routine.
    let i = unsafe { irpx::header(call.irp) };
    // SAFETY: the status member of the IRP's status block.
    let status = Status(unsafe { i.IoStatus.Anonymous.Status });
    let information = i.IoStatus.Information;
    call.done(status, information)
}

/// One request in a file system's dispatch routine.
#[derive(Clone, Copy)]
pub struct Call {
    /// The device it was sent to.
    pub device: *mut DEVICE_OBJECT,
    /// The IRP.
    pub irp: *mut IRP,
    /// The file system.
    pub ty: FsType,
    /// The device's extension.
    pub ext: DevExt,
}

impl Call {
    /// Completes the IRP.
    pub fn done(self, status: Status, information: usize) -> NTSTATUS {
        // Change notifications the request made due complete first, as FsRtl completes them
        // inside the report.
        notify::flush();
        // SAFETY: our dispatch routine owns the live IRP and completes it once.
        unsafe { irpx::complete(self.irp, status, information) }
    }

    /// The current stack location.
    pub fn sl(self) -> &'static mut windows_sys::Wdk::Foundation::IO_STACK_LOCATION {
        // SAFETY: the live IRP in our dispatch routine.
        unsafe { irpx::current(self.irp) }
    }

    /// The file object of the request.
    pub fn fo(self) -> *mut FILE_OBJECT {
        self.sl().FileObject
    }

    /// `Irp->Flags`.
    pub fn irp_flags(self) -> u32 {
        // SAFETY: the live IRP.
        unsafe { (*self.irp).Flags }
    }
}

/// Installs the services a volume of `kind` needs (its file system, RAW and the recognizer for
/// storage volumes, the storage driver).
pub fn install_for(k: &mut Kernel, kind: FsKind) -> Vec<String> {
    let mut wanted = vec![service_spec(FsType::of(kind))];
    if kind.uses_vpb() {
        wanted.push(crate::storage::service_spec());
        wanted.push(service_spec(FsType::Raw));
        wanted.push(fsrec::service_spec());
    }
    let mut installed = Vec::new();
    for spec in wanted {
        if k.service_index(&spec.name).is_none() {
            installed.push(spec.name.clone());
            k.install_service(spec);
        }
    }
    installed
}
