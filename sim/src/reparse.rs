//! Reparse: what the I/O manager does with a create that ends `STATUS_REPARSE` (docs/simulator.md,
//! "Reparse"). As WRK's `IopParseDevice` and `ObpLookupObjectName` do: the file object opened
//! nothing and is freed without a cleanup or a close; for `IO_REPARSE` its (new) name is parsed
//! again from the root of the object namespace, and the create goes, as a new request with a new
//! file object, to the stack of the volume that name designates; every reparse, a device's or a
//! symbolic link's in the object namespace, uses one of `OBJ_MAX_REPARSE_ATTEMPTS`.
//!
//! [`decide`] is the hook for reparse points: what a `STATUS_REPARSE` create's `Information` (the
//! tag) and its IRP's `Tail.Overlay.AuxiliaryBuffer` lead to.

use std::ffi::c_void;

use fsfilter::Status;

use crate::ids::{RequestId, VolumeId};
use crate::kernel::Kernel;
use crate::volumes::MediaKind;

/// `IO_REPARSE` (ntifs.h): the file object's name was replaced; parse it again from the root.
pub const IO_REPARSE: usize = 0;
/// `IO_REMOUNT` (`IO_REPARSE_TAG_RESERVED_ONE`): the volume was remounted; the same name is
/// parsed again on the same device (WRK `IopParseDevice`'s `reparse_loop`).
pub const IO_REMOUNT: usize = 1;
/// `OBJ_MAX_REPARSE_ATTEMPTS` (WRK ntobapi.h): the reparses one name lookup may follow.
pub const OBJ_MAX_REPARSE_ATTEMPTS: u32 = 32;
/// `IO_MAX_REMOUNT_REPARSE_ATTEMPTS` (WRK parse.c): the remounts one parse may retry.
pub const IO_MAX_REMOUNT_REPARSE_ATTEMPTS: u32 = 32;
/// `STATUS_IO_REPARSE_TAG_NOT_HANDLED` (0xC0000279): a tag the I/O manager does not know.
pub const STATUS_IO_REPARSE_TAG_NOT_HANDLED: Status = Status(0xC000_0279_u32 as i32);
/// `STATUS_BAD_NETWORK_PATH` (0xC00000BE): no share of that server.
pub const STATUS_BAD_NETWORK_PATH: Status = Status(0xC000_00BE_u32 as i32);

/// The reparse state the I/O manager keeps between a create's completion and its parse.
#[derive(Default)]
pub struct State {
    /// The `Tail.Overlay.AuxiliaryBuffer` of each create that completed `STATUS_REPARSE` with
    /// one, by request, until the parse takes it ([`take_buffer`]).
    buffers: Vec<(RequestId, usize)>,
    /// The driver that completed a create request with `STATUS_REPARSE` (its image, or the
    /// minifilter whose `FLT_PREOP_COMPLETE` it was), for the reports against it.
    completer: Option<(RequestId, Option<String>)>,
    /// A query open whose `STATUS_REPARSE` the Filter Manager reported against its minifilter.
    fast_reported: Option<RequestId>,
}

impl State {
    /// Whether the Filter Manager reported query open `rid`'s `STATUS_REPARSE` (and forgets it).
    pub(crate) fn fast_reported_take(&mut self, rid: RequestId) -> bool {
        self.fast_reported.take() == Some(rid)
    }
}

impl Kernel {
    /// A create request's IRP completed `STATUS_REPARSE` with `aux` as its
    /// `Tail.Overlay.AuxiliaryBuffer` (kept for the parse).
    pub(crate) fn reparse_buffer_left(&mut self, rid: RequestId, aux: usize) {
        self.reparse.buffers.push((rid, aux));
    }

    /// Records who completed create request `rid` with `STATUS_REPARSE`, unless a minifilter
    /// was recorded for it already (`driver` None: the running image).
    pub(crate) fn reparse_completed_by(&mut self, rid: RequestId, driver: Option<String>) {
        if matches!(self.reparse.completer, Some((r, _)) if r == rid) {
            return;
        }
        let driver = driver.or_else(|| self.current_image_name());
        self.reparse.completer = Some((rid, driver));
    }

    /// `IoCompleteRequest` of `irp` with `STATUS_REPARSE`: when it is a create request's, the
    /// running image is the one that completed it.
    pub(crate) fn note_reparse_completion(&mut self, irp: *mut windows_sys::Wdk::Foundation::IRP) {
        let Some(info) = self.irps.map.get(&(irp as usize)) else { return };
        let crate::irp::Finish::Request(rid) = info.finish else { return };
        // SAFETY: a live IRP at the completing driver's location.
        let major = unsafe { crate::irpx::current(irp) }.MajorFunction;
        if major == crate::nt::mj::CREATE {
            self.reparse_completed_by(rid, None);
        }
    }

    /// The driver that completed create request `rid` with `STATUS_REPARSE`, if known.
    fn reparse_completer(&mut self, rid: RequestId) -> Option<String> {
        match self.reparse.completer.take() {
            Some((r, driver)) if r == rid => driver,
            other => {
                self.reparse.completer = other;
                None
            }
        }
    }

    /// The Filter Manager reported query open `rid`'s `STATUS_REPARSE` against its minifilter.
    pub(crate) fn reparse_fast_reported(&mut self, rid: Option<RequestId>) {
        self.reparse.fast_reported = rid;
    }

    /// The auxiliary buffer create request `rid` left, if any.
    fn take_buffer(&mut self, rid: RequestId) -> *mut c_void {
        match self.reparse.buffers.iter().position(|(r, _)| *r == rid) {
            Some(i) => self.reparse.buffers.swap_remove(i).1 as *mut c_void,
            None => std::ptr::null_mut(),
        }
    }
}

/// What the I/O manager does with a create that ended `STATUS_REPARSE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Parse this name from the root of the object namespace (`IO_REPARSE`).
    Reparse(Vec<u16>),
    /// Parse this name from the root of the object namespace (a mount point's or a symbolic
    /// link's, [`crate::fs::reparse::followed_name`]); `mount_point`: it was a mount point's
    /// (WRK `IopParseDevice`'s `TraversedMountPoint`).
    Link {
        /// The name.
        name: Vec<u16>,
        /// A mount point's.
        mount_point: bool,
    },
    /// Parse the same name on the same device again (`IO_REMOUNT`).
    Remount,
    /// Fail the open with this status.
    Fail(Status),
}

/// The hook for reparse tags: a `STATUS_REPARSE` create's `information` (`IO_REPARSE`,
/// `IO_REMOUNT` or a reparse tag), its IRP's `Tail.Overlay.AuxiliaryBuffer` (`aux`, null when
/// none; the I/O manager frees it with `ExFreePool`, as WRK's `IoCompleteRequest` frees it for
/// any tag but a mount point) and the file object's name when the create ended, which went to
/// `at`. The I/O manager knows `IO_REPARSE`, `IO_REMOUNT` and two tags, a mount point's
/// (`IO_REPARSE_TAG_MOUNT_POINT`, WRK `IopDoNameTransmogrify`) and a symbolic link's
/// (`IO_REPARSE_TAG_SYMLINK`, since Windows Vista), whose buffer gives the next name
/// ([`crate::fs::reparse::followed_name`]; `STATUS_IO_REPARSE_DATA_INVALID` without a buffer
/// of that tag, or with one whose lengths do not hold together). Any other tag:
/// `STATUS_IO_REPARSE_TAG_NOT_HANDLED` ("If the tag is unknown to IO manager then the create is
/// failed", Microsoft's SimRep sample).
pub(crate) fn decide(
    k: &mut Kernel,
    information: usize,
    aux: *mut c_void,
    name: &[u16],
    at: &Target,
) -> Decision {
    // The buffer's bytes before it is freed: its header and data, within its pool block.
    let buffer = k.pool.blocks.get(&(aux as usize)).map(|b| {
        // SAFETY: a live pool block of `size` bytes.
        let all = unsafe { std::slice::from_raw_parts(aux.cast::<u8>(), b.size) };
        let data = all.get(4..6).map_or(0, |l| usize::from(u16::from_le_bytes([l[0], l[1]])));
        all.get(..8 + data).unwrap_or(all).to_vec()
    });
    free_buffer(k, aux);
    use crate::fs::reparse::{STATUS_IO_REPARSE_DATA_INVALID, TAG_MOUNT_POINT, TAG_SYMLINK};
    match information {
        IO_REPARSE => Decision::Reparse(name.to_vec()),
        IO_REMOUNT => Decision::Remount,
        tag if tag == TAG_MOUNT_POINT as usize || tag == TAG_SYMLINK as usize => {
            let Some(buffer) = buffer.filter(|b| b.get(..4) == Some(&(tag as u32).to_le_bytes()))
            else {
                return Decision::Fail(STATUS_IO_REPARSE_DATA_INVALID);
            };
            let related = if at.related == 0 {
                Vec::new()
            } else {
                let related = at.related as *const windows_sys::Wdk::Foundation::FILE_OBJECT;
                // SAFETY: the related handle's file object, alive while the caller's call runs.
                let name = unsafe { &(*related).FileName };
                // SAFETY: its name, valid while the file object lives.
                unsafe { crate::irpx::units(name) }.to_vec()
            };
            let device = k.volume(at.volume).device_name.clone();
            match crate::fs::reparse::followed_name(&buffer, name, &related, &device) {
                Ok(name) => Decision::Link { name, mount_point: tag == TAG_MOUNT_POINT as usize },
                Err(s) => Decision::Fail(s),
            }
        }
        _ => Decision::Fail(STATUS_IO_REPARSE_TAG_NOT_HANDLED),
    }
}

/// The I/O manager frees a `STATUS_REPARSE` create's `Tail.Overlay.AuxiliaryBuffer` with
/// `ExFreePool` (WRK `IopfCompleteRequest`, and `IopDoNameTransmogrify` for a mount point's): a
/// buffer that is no pool block is a `BAD_POOL_FREE`.
pub(crate) fn free_buffer(k: &mut Kernel, aux: *mut c_void) {
    if !aux.is_null() && !k.pool_free_kernel(aux) {
        k.report(
            crate::events::Rule::BadPoolFree,
            None,
            format!(
                "the I/O manager frees a STATUS_REPARSE create's Tail.Overlay.AuxiliaryBuffer \
                 ({aux:p}) with ExFreePool, and it is no live pool block"
            ),
        );
    }
}

/// Where a name parsed from the root leads: a volume and the name on it (`\dir\file`, `\` for
/// its root directory, empty for the volume itself; on a share, the name below the share).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The volume.
    pub volume: VolumeId,
    /// The name on it, as [`crate::syscalls`] normalizes a user's path (relative to `related`
    /// when that is set).
    pub rel: String,
    /// The file object a relative open names its file from (`ObjectAttributes.RootDirectory`,
    /// the create's `RelatedFileObject`; 0 for an open from the root).
    pub related: usize,
}

/// The reparses one name lookup may still follow (`ObpLookupObjectName`'s `MaxReparse`).
#[derive(Clone, Copy, Debug)]
pub struct Attempts {
    left: u32,
    /// Reparses a device answered and the I/O manager followed.
    pub followed: u32,
    /// `IopParseDevice`'s remount retries (`IO_REMOUNT`), counted apart.
    remounts: u32,
    /// The caller's own name was counted ([`Attempts::begin`]).
    begun: bool,
    /// A mount point was traversed (WRK `IopParseDevice`'s `op->TraversedMountPoint`).
    mount_point: bool,
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts {
            left: OBJ_MAX_REPARSE_ATTEMPTS,
            followed: 0,
            remounts: 0,
            begun: false,
            mount_point: false,
        }
    }
}

impl Attempts {
    /// At the first reparse: the symbolic link the caller's own name went through, if its
    /// volume `volume` has one ([`initial_links`]), counted then rather than at every open.
    fn begin(&mut self, k: &Kernel, volume: VolumeId) {
        if !self.begun {
            self.begun = true;
            for _ in 0..initial_links(k, volume) {
                let _ = self.spend();
            }
        }
    }

    /// One more reparse (a symbolic link's, or a device's `STATUS_REPARSE`): WRK's
    /// `if (--MaxReparse) ... else Status = STATUS_OBJECT_NAME_NOT_FOUND`.
    pub fn spend(&mut self) -> Result<(), Status> {
        self.left = self.left.saturating_sub(1);
        if self.left == 0 { Err(Status::OBJECT_NAME_NOT_FOUND) } else { Ok(()) }
    }
}

/// The symbolic links of `\??` (`\GLOBAL??`) the simulator has besides drive letters: `UNC`,
/// `PIPE` and `MAILSLOT`, to the devices of the network, pipe and mailslot file systems.
const DOS_DEVICE_LINKS: [(&str, &str); 3] = [
    ("UNC", crate::fs::MUP_DEVICE),
    ("PIPE", crate::fs::NPFS_DEVICE),
    ("MAILSLOT", crate::fs::MSFS_DEVICE),
];

/// How many symbolic links the name of `volume`'s own opens goes through: a volume named by its
/// device path (`\Device\HarddiskVolume7`) none; one named by a drive letter (`C:`, opened as
/// `\??\C:\...`) or a share (`\\server\share`, opened as `\??\UNC\server\share\...`) one.
pub(crate) fn initial_links(k: &Kernel, volume: VolumeId) -> u32 {
    const DEVICE: &str = "\\Device\\";
    let name = k.volume(volume).name.as_str();
    let device_path = name.get(..DEVICE.len()).is_some_and(|p| p.eq_ignore_ascii_case(DEVICE));
    u32::from(!device_path)
}

/// Parses `name` from the root of the object namespace, as `ObpLookupObjectName` and the
/// device's parse routine do: the volume it designates and the name on it, and the symbolic
/// links it went through (each a reparse, [`Attempts::spend`]), counted also when it then
/// fails. Understood: `\??\X:\...`, `\GLOBAL??\...` and `\DosDevices\...` (itself a link to
/// `\??`), with drive letters, `UNC`, `PIPE`, `MAILSLOT` and drivers' links
/// (`IoCreateSymbolicLink`); `\Device\HarddiskVolumeN\...` (any disk or CD volume's storage
/// device), `\Device\Mup\server\share\...`, `\Device\NamedPipe\...`, `\Device\Mailslot\...`.
/// A name not starting with `\`: `STATUS_OBJECT_NAME_NOT_FOUND` (the reparse name is not
/// absolute); an empty component in the namespace, or a name that ends at a directory of it
/// (`\??`, `\Device`; `STATUS_OBJECT_TYPE_MISMATCH` on Windows): `STATUS_OBJECT_NAME_INVALID`;
/// a directory
/// or device that does not exist: `STATUS_OBJECT_PATH_NOT_FOUND` with a name left after it,
/// `STATUS_OBJECT_NAME_NOT_FOUND` without; a share that does not exist:
/// `STATUS_BAD_NETWORK_NAME` (a share of another server exists) or `STATUS_BAD_NETWORK_PATH`
/// (unconfirmed: MUP's answer); a device that is no volume's (a driver's control device):
/// `STATUS_NOT_SUPPORTED`, not modelled (docs/simulator.md, "Reparse").
pub(crate) fn resolve(k: &Kernel, name: &[u16]) -> (u32, Result<Target, Status>) {
    let text = String::from_utf16_lossy(name);
    let mut links = 0;
    let r = resolve_text(k, &text, &mut links, 0);
    (links, r)
}

fn resolve_text(k: &Kernel, text: &str, links: &mut u32, depth: u32) -> Result<Target, Status> {
    let Some(rest) = text.strip_prefix('\\') else {
        return Err(Status::OBJECT_NAME_NOT_FOUND);
    };
    // Directory components of the object namespace; what a device is given is the rest.
    let (first, after) = split_component(rest);
    let missing = |after: &str| {
        if after.is_empty() { Status::OBJECT_NAME_NOT_FOUND } else { Status::OBJECT_PATH_NOT_FOUND }
    };
    if first.is_empty() {
        return Err(Status::OBJECT_NAME_INVALID);
    }
    if first.eq_ignore_ascii_case("DosDevices") {
        // A symbolic link in the root directory to `\??`.
        *links += 1;
        return resolve_text(k, &format!("\\??{after}"), links, depth + 1);
    }
    if first == "??" || first.eq_ignore_ascii_case("GLOBAL??") {
        let (link, after) = split_component(after.strip_prefix('\\').unwrap_or(after));
        if link.is_empty() {
            return Err(Status::OBJECT_NAME_INVALID);
        }
        let Some(target) = dos_link_target(k, link) else { return Err(missing(after)) };
        *links += 1;
        if depth > OBJ_MAX_REPARSE_ATTEMPTS {
            return Err(Status::OBJECT_NAME_NOT_FOUND);
        }
        return match target {
            LinkTarget::Volume(volume) => Ok(Target { volume, rel: normalize(after), related: 0 }),
            LinkTarget::Name(name) => resolve_text(k, &format!("{name}{after}"), links, depth + 1),
        };
    }
    if first.eq_ignore_ascii_case("Device") {
        let (device, after) = split_component(after.strip_prefix('\\').unwrap_or(after));
        if device.is_empty() {
            return Err(Status::OBJECT_NAME_INVALID);
        }
        return device_target(k, &format!("\\Device\\{device}"), after);
    }
    Err(missing(after))
}

/// The first component of `rest` (a name without its leading `\`) and what follows it (from
/// its `\`, or empty).
fn split_component(rest: &str) -> (&str, &str) {
    match rest.find('\\') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

/// What a symbolic link of `\??` stands for.
enum LinkTarget {
    /// A volume's drive letter.
    Volume(VolumeId),
    /// Another name, parsed from the root.
    Name(String),
}

/// The target of the `\??` link `link` (`C:`, `UNC`, a driver's link), if it exists.
fn dos_link_target(k: &Kernel, link: &str) -> Option<LinkTarget> {
    let lettered = k.volumes.list.iter().position(|v| {
        let n = v.name.as_str();
        !n.starts_with('\\') && n.eq_ignore_ascii_case(link)
    });
    if let Some(i) = lettered {
        return Some(LinkTarget::Volume(VolumeId(i as u32)));
    }
    if let Some((_, device)) = DOS_DEVICE_LINKS.iter().find(|(l, _)| l.eq_ignore_ascii_case(link)) {
        return Some(LinkTarget::Name((*device).to_owned()));
    }
    k.objects.symbolic_link(link).map(LinkTarget::Name)
}

/// The volume a device name (`\Device\X`) and the name after it (`after`, from its `\` or
/// empty) designate.
fn device_target(k: &Kernel, device: &str, after: &str) -> Result<Target, Status> {
    let missing = if after.is_empty() {
        Status::OBJECT_NAME_NOT_FOUND
    } else {
        Status::OBJECT_PATH_NOT_FOUND
    };
    let vols = &k.volumes.list;
    let named = |v: &&crate::volumes::Volume| v.device_name.eq_ignore_ascii_case(device);
    let storage = vols
        .iter()
        .position(|v| v.fs.uses_vpb() && named(&v) && v.storage.is_some())
        .map(|i| Target { volume: VolumeId(i as u32), rel: normalize(after), related: 0 });
    if let Some(t) = storage {
        return Ok(t);
    }
    if !k.objects.names.contains_key(&device.to_uppercase()) {
        return Err(missing);
    }
    if device.eq_ignore_ascii_case(crate::fs::MUP_DEVICE) {
        // `\server\share\...`: the share's volume, the name below it.
        let rest = after.trim_start_matches('\\');
        let mut parts = rest.splitn(3, '\\');
        let (server, share) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let below = parts.next().map_or_else(String::new, |p| format!("\\{p}"));
        let wanted = format!("{server}\\{share}");
        let found = vols.iter().position(|v| {
            v.fs.media() == MediaKind::Network
                && v.share.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&wanted))
        });
        return match found {
            Some(i) => {
                Ok(Target { volume: VolumeId(i as u32), rel: normalize(&below), related: 0 })
            }
            None => {
                let server_known = vols.iter().any(|v| {
                    v.share
                        .as_deref()
                        .and_then(|s| s.split('\\').next())
                        .is_some_and(|s| s.eq_ignore_ascii_case(server))
                });
                Err(if server_known { Status::BAD_NETWORK_NAME } else { STATUS_BAD_NETWORK_PATH })
            }
        };
    }
    let namespace = vols
        .iter()
        .position(|v| v.fs.media() == MediaKind::None && named(&v))
        .map(|i| Target { volume: VolumeId(i as u32), rel: normalize(after), related: 0 });
    // A device that is no volume's (a driver's, a file system's control device): not modelled.
    namespace.ok_or(Status::NOT_SUPPORTED)
}

/// The name a volume's file object gets for `after` (the name after the device or drive
/// letter), as [`crate::syscalls`] normalizes a user's path: `\dir\file`, `\` for the root
/// directory, empty for the volume itself.
fn normalize(after: &str) -> String {
    let trimmed = after.trim_matches('\\');
    if !trimmed.is_empty() {
        format!("\\{trimmed}")
    } else if after.is_empty() {
        String::new()
    } else {
        "\\".to_owned()
    }
}

/// The end of one create that came back `STATUS_REPARSE`.
pub(crate) enum Next {
    /// Open this, as a new create.
    Open(Target),
    /// The open ends with this status.
    Ended(Status),
}

/// What the I/O manager does once create request `rid` on `volume` ended `STATUS_REPARSE` with
/// `information`, its file object `file` (which opened nothing) had the name `rel` on the
/// volume: the file object's name is read, then the file object freed without a cleanup or a
/// close (WRK `IopParseDevice`: the name buffer freed, `DeviceObject` cleared, the object
/// dereferenced, so `IopDeleteFile` sends nothing), and the name parsed (`ObpLookupObjectName`).
/// `device_open`: the file object had no name (a user-mode open of the volume itself, the
/// parse's `Override`), for which `STATUS_REPARSE` is bug check 0xF9.
pub(crate) fn after_reparse(
    k: &mut Kernel,
    file: *mut windows_sys::Wdk::Foundation::FILE_OBJECT,
    at: &Target,
    rid: RequestId,
    information: usize,
    device_open: bool,
    attempts: &mut Attempts,
) -> Next {
    let aux = k.take_buffer(rid);
    // SAFETY: the create's file object, alive until freed below.
    let f = unsafe { &*file };
    // SAFETY: its name as the create ended, valid while the file object lives.
    let name = unsafe { crate::irpx::units(&f.FileName) }.to_vec();
    let flags = f.Flags;
    let completer = k.reparse_completer(rid);
    // The tag's decision first: it frees the auxiliary buffer whatever follows.
    let decision = decide(k, information, aux, &name, at);
    if flags & crate::nt::fo::FILE_OPEN_CANCELLED != 0 {
        // IoCancelFileOpen's page: once cancelled, the create cannot return STATUS_REPARSE.
        k.report(
            crate::events::Rule::CancelFileOpenMisuse,
            completer.clone(),
            "a create cancelled with IoCancelFileOpen / FltCancelFileOpen then completed with \
             STATUS_REPARSE (a cancelled create cannot be reissued)",
        );
    }
    k.free_file_object(file as usize);
    if device_open && information != IO_REMOUNT {
        // WRK IopParseDevice: KeBugCheckEx(DRIVER_RETURNED_STATUS_REPARSE_FOR_VOLUME_OPEN, ...)
        // when the parse opened the device itself (op->Override). The simulator reports it and
        // fails the open (it does not follow the name).
        let volume = k.volume_display_name(at.volume);
        k.report(
            crate::events::Rule::ReparseForVolumeOpen,
            completer,
            format!(
                "STATUS_REPARSE (information {information:#x}) for an IRP_MJ_CREATE of volume \
                 {volume} with no trailing name (bug check 0xF9, \
                 DRIVER_RETURNED_STATUS_REPARSE_FOR_VOLUME_OPEN); the simulator fails the open \
                 with STATUS_INVALID_DEVICE_STATE"
            ),
        );
        return Next::Ended(Status::INVALID_DEVICE_STATE);
    }
    let next = match decision {
        Decision::Fail(s) => Next::Ended(s),
        Decision::Remount => {
            attempts.remounts += 1;
            if attempts.remounts > IO_MAX_REMOUNT_REPARSE_ATTEMPTS {
                return Next::Ended(Status::UNSUCCESSFUL);
            }
            Next::Open(at.clone())
        }
        Decision::Reparse(name) => reparse_to(k, at, name, attempts),
        Decision::Link { name, mount_point } => {
            // A mount point, once traversed, leaves the open on local storage only: WRK's
            // `IopParseDevice` fails every later parse to another kind of device
            // (`op->TraversedMountPoint`: a disk, CD-ROM, virtual disk or tape).
            attempts.mount_point |= mount_point;
            reparse_to(k, at, name, attempts)
        }
    };
    match next {
        Next::Open(t) if attempts.mount_point => {
            let media = k.volume(t.volume).fs.media();
            if matches!(media, MediaKind::Disk | MediaKind::CdRom) {
                Next::Open(t)
            } else {
                Next::Ended(crate::fs::reparse::STATUS_IO_REPARSE_DATA_INVALID)
            }
        }
        next => next,
    }
}

/// A reparse to `name`: relative to the related file object of `at` for a relative open
/// ([`relative_reparse`]), otherwise parsed from the root.
fn reparse_to(k: &Kernel, at: &Target, name: Vec<u16>, attempts: &mut Attempts) -> Next {
    if at.related != 0 {
        return relative_reparse(k, at, name, attempts);
    }
    attempts.begin(k, at.volume);
    if let Err(s) = attempts.spend() {
        return Next::Ended(s);
    }
    attempts.followed += 1;
    let (links, target) = resolve(k, &name);
    for _ in 0..links {
        if let Err(s) = attempts.spend() {
            return Next::Ended(s);
        }
    }
    match target {
        Ok(t) => Next::Open(t),
        Err(s) => Next::Ended(s),
    }
}

/// The reparse of an open relative to a file object (WRK `ObpLookupObjectName` with a
/// `RootDirectory` that is a file object, whose parse routine `IopParseFile` names it the
/// create's `RelatedFileObject` at every call): a new name that does not start with `\` is
/// parsed relative to the same file object again, using one of the lookup's reparse attempts; an
/// absolute one is parsed from the root (`IopParseDevice` cleared `RelatedFileObject` before
/// returning `STATUS_REPARSE`), without using one: the lookup from the root counts its own 32
/// (`MaxReparse` set again), unless the name starts with `\??\`, whose shortcut (`quickStart`)
/// keeps the count so far. An empty name: `STATUS_OBJECT_NAME_INVALID` (its first component, from
/// the root, is empty).
fn relative_reparse(k: &Kernel, at: &Target, name: Vec<u16>, attempts: &mut Attempts) -> Next {
    attempts.begun = true;
    let text = String::from_utf16_lossy(&name);
    if text.is_empty() {
        return Next::Ended(Status::OBJECT_NAME_INVALID);
    }
    if !text.starts_with('\\') {
        if let Err(s) = attempts.spend() {
            return Next::Ended(s);
        }
        attempts.followed += 1;
        return Next::Open(Target { volume: at.volume, rel: text, related: at.related });
    }
    attempts.followed += 1;
    if !text.starts_with("\\??\\") {
        attempts.left = OBJ_MAX_REPARSE_ATTEMPTS;
    }
    let (links, target) = resolve(k, &name);
    for _ in 0..links {
        if let Err(s) = attempts.spend() {
            return Next::Ended(s);
        }
    }
    match target {
        Ok(t) => Next::Open(t),
        Err(s) => Next::Ended(s),
    }
}
