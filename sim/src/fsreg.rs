//! File-system registration (facts.md §1.1): the global file-system queue with its four
//! segments, `IoRegisterFileSystem` / `IoUnregisterFileSystem`, and the
//! `IoRegisterFsRegistrationChange` routines with their documented behaviour: called at once for
//! every file system already registered (before the registration returns), RAW skipped,
//! `STATUS_DEVICE_ALREADY_ATTACHED` for an immediate duplicate, `STATUS_NOT_SUPPORTED` under the
//! legacy-filter block policy.

use fsfilter::{Status, device_type};
use windows_sys::Wdk::Foundation::DEVICE_OBJECT;

use crate::events::EventKind;
use crate::ids::{DeviceId, DriverId, ImageId};
use crate::kernel::{self, Kernel, call_into};
use crate::objects::DO_DEVICE_INITIALIZING;

/// `DO_LOW_PRIORITY_FILESYSTEM`.
pub const DO_LOW_PRIORITY_FILESYSTEM: u32 = 0x1_0000;

/// The registry key and value of the legacy-filter block policy (facts.md §1.1).
pub const BLOCK_POLICY_KEY: &str =
    r"\Registry\Machine\System\CurrentControlSet\Control\Session Manager\I/O System";
/// The value name.
pub const BLOCK_POLICY_VALUE: &str = "IoBlockLegacyFsFilters";

/// A notification routine's signature.
pub type FsNotification = unsafe extern "system" fn(*const DEVICE_OBJECT, bool);

/// The queue segment a control device belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// `FILE_DEVICE_CD_ROM_FILE_SYSTEM`.
    CdRom,
    /// `FILE_DEVICE_DISK_FILE_SYSTEM`.
    Disk,
    /// `FILE_DEVICE_TAPE_FILE_SYSTEM`.
    Tape,
    /// `FILE_DEVICE_NETWORK_FILE_SYSTEM`.
    Network,
}

impl Segment {
    /// The segment of a control device type.
    pub fn of(device_type: u32) -> Segment {
        match device_type {
            device_type::CD_ROM_FILE_SYSTEM => Segment::CdRom,
            device_type::TAPE_FILE_SYSTEM => Segment::Tape,
            device_type::NETWORK_FILE_SYSTEM => Segment::Network,
            _ => Segment::Disk,
        }
    }
}

/// A registered notification routine.
#[derive(Clone, Copy)]
pub struct Notification {
    /// The registering driver.
    pub driver: DriverId,
    /// Its image.
    pub image: ImageId,
    /// The routine.
    pub routine: FsNotification,
    /// Registered with the MountAware variant.
    pub mount_aware: bool,
}

/// The file-system queue and the notification list.
#[derive(Default)]
pub struct FsRegistry {
    /// CD-ROM segment, head first.
    pub cdrom: Vec<DeviceId>,
    /// Disk segment.
    pub disk: Vec<DeviceId>,
    /// Tape segment.
    pub tape: Vec<DeviceId>,
    /// Network segment.
    pub network: Vec<DeviceId>,
    /// Control devices of the RAW file system (never reported to notification routines).
    pub raw: Vec<DeviceId>,
    /// Notification routines in registration order.
    pub notifications: Vec<Notification>,
    /// Registrations so far (the I/O manager's counter).
    pub generation: u64,
}

impl FsRegistry {
    fn segment_mut(&mut self, s: Segment) -> &mut Vec<DeviceId> {
        match s {
            Segment::CdRom => &mut self.cdrom,
            Segment::Disk => &mut self.disk,
            Segment::Tape => &mut self.tape,
            Segment::Network => &mut self.network,
        }
    }

    /// The segment's control devices, head first.
    pub fn segment(&self, s: Segment) -> &[DeviceId] {
        match s {
            Segment::CdRom => &self.cdrom,
            Segment::Disk => &self.disk,
            Segment::Tape => &self.tape,
            Segment::Network => &self.network,
        }
    }

    /// Every registered control device in the order a new notification routine hears of them:
    /// network, CD-ROM, disk, tape (the ReactOS order; Windows' is unconfirmed, facts.md §1.1),
    /// each segment head first, RAW left out.
    pub fn enumeration_order(&self) -> Vec<DeviceId> {
        [Segment::Network, Segment::CdRom, Segment::Disk, Segment::Tape]
            .iter()
            .flat_map(|s| self.segment(*s).iter().copied())
            .filter(|d| !self.raw.contains(d))
            .collect()
    }
}

impl Kernel {
    /// Notification routines a driver still has registered.
    pub fn fs_notifications_of(&self, driver: DriverId) -> usize {
        self.fsreg.notifications.iter().filter(|n| n.driver == driver).count()
    }

    /// True when the legacy-filter block policy is on.
    pub fn legacy_filters_blocked(&self) -> bool {
        matches!(
            self.registry.value(BLOCK_POLICY_KEY, BLOCK_POLICY_VALUE),
            Some(crate::registry::RegValue::Dword(1))
        )
    }

    /// Marks a control device as the RAW file system's.
    pub fn mark_raw(&mut self, cdo: DeviceId) {
        if !self.fsreg.raw.contains(&cdo) {
            self.fsreg.raw.push(cdo);
        }
    }
}

/// `IoRegisterFileSystem`.
pub fn register_file_system(cdo: *const DEVICE_OBJECT) {
    let calls = kernel::with(|k| {
        let Some(id) = k.objects.device_id(cdo) else { return Vec::new() };
        let o = k.objects.dobj(id);
        let seg = Segment::of(o.DeviceType);
        let low = o.Flags & DO_LOW_PRIORITY_FILESYSTEM != 0;
        o.Flags &= !DO_DEVICE_INITIALIZING;
        let is_raw = k.fsreg.raw.contains(&id);
        let raw = k.fsreg.raw.clone();
        let list = k.fsreg.segment_mut(seg);
        list.retain(|d| *d != id);
        if is_raw {
            // RAW stays at the tail of its segment whatever registers later.
            list.push(id);
        } else if low {
            // Low-priority file systems go to the tail, but before RAW (ReactOS inserts them
            // before the segment's last entry, facts.md §1.1).
            let at = list.iter().position(|d| raw.contains(d)).unwrap_or(list.len());
            list.insert(at, id);
        } else {
            list.insert(0, id);
        }
        k.fsreg.generation += 1;
        k.objects.device_mut(id).role = crate::objects::DeviceRole::FsControl;
        let driver = k.objects.driver(k.objects.device(id).driver).service.clone();
        let device = k.objects.device(id).name.clone().unwrap_or_default();
        k.log(EventKind::FileSystemRegistered { driver, device });
        if k.fsreg.raw.contains(&id) {
            return Vec::new();
        }
        k.fsreg.notifications.clone()
    });
    for n in calls {
        notify(n, cdo, true);
    }
}

/// `IoUnregisterFileSystem`.
pub fn unregister_file_system(cdo: *const DEVICE_OBJECT) {
    let calls = kernel::with(|k| {
        let Some(id) = k.objects.device_id(cdo) else { return Vec::new() };
        for s in [Segment::CdRom, Segment::Disk, Segment::Tape, Segment::Network] {
            k.fsreg.segment_mut(s).retain(|d| *d != id);
        }
        if k.fsreg.raw.contains(&id) {
            return Vec::new();
        }
        k.fsreg.notifications.clone()
    });
    for n in calls {
        notify(n, cdo, false);
    }
}

fn notify(n: Notification, cdo: *const DEVICE_OBJECT, active: bool) {
    let loaded = kernel::with(|k| k.image_loaded(n.image));
    if !loaded {
        kernel::with(|k| {
            let name = k.image_name(n.image);
            k.report(
                crate::events::Rule::UnloadedDriverCodeRan,
                Some(name),
                "a file-system notification routine of an unloaded driver",
            );
        });
        return;
    }
    // SAFETY: the driver's registered routine with a control device and the activity flag.
    call_into(Some(n.image), || unsafe { (n.routine)(cdo, active) });
}

/// `IoRegisterFsRegistrationChange` (and the MountAware variant when `mount_aware`).
pub fn register_change(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    routine: Option<FsNotification>,
    mount_aware: bool,
) -> Status {
    let Some(routine) = routine else { return Status::INVALID_PARAMETER };
    let prepared = kernel::with(|k| {
        let Some(did) = k.objects.driver_id(driver) else { return Err(Status::INVALID_PARAMETER) };
        let native = k
            .images
            .get(k.objects.driver(did).image.index())
            .is_some_and(|i| i.kind == crate::kernel::ImageKind::Native);
        if k.legacy_filters_blocked() && !native {
            let name = k.objects.driver(did).service.clone();
            k.log(EventKind::System {
                what: "legacy_filter_blocked",
                driver: Some(name),
                volume: None,
                detail:
                    "IoBlockLegacyFsFilters is set: Event ID 1205 (Microsoft-Windows-Kernel-IO)"
                        .into(),
            });
            return Err(Status::NOT_SUPPORTED);
        }
        let duplicate = if mount_aware {
            k.fsreg.notifications.iter().any(|n| n.driver == did)
        } else {
            k.fsreg
                .notifications
                .last()
                .is_some_and(|n| n.driver == did && n.routine as usize == routine as usize)
        };
        if duplicate {
            return Err(Status::DEVICE_ALREADY_ATTACHED);
        }
        let image = k.objects.driver(did).image;
        k.fsreg.notifications.push(Notification { driver: did, image, routine, mount_aware });
        let existing: Vec<*const DEVICE_OBJECT> = k
            .fsreg
            .enumeration_order()
            .into_iter()
            .map(|d| k.objects.device(d).ptr.cast_const())
            .collect();
        Ok((Notification { driver: did, image, routine, mount_aware }, existing))
    });
    let (n, existing) = match prepared {
        Ok(p) => p,
        Err(s) => return s,
    };
    // Every file system already registered is reported before the call returns (XP and later).
    for cdo in existing {
        notify(n, cdo, true);
    }
    Status::SUCCESS
}

/// `IoUnregisterFsRegistrationChange`.
pub fn unregister_change(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    routine: Option<FsNotification>,
) {
    kernel::with(|k| {
        let Some(did) = k.objects.driver_id(driver) else { return };
        let r = routine.map(|r| r as usize);
        let mine: Vec<usize> = (0..k.fsreg.notifications.len())
            .filter(|&i| k.fsreg.notifications.get(i).is_some_and(|n| n.driver == did))
            .collect();
        // Windows matches driver and routine. Rust does not promise one address per function
        // (a generic routine can be instantiated twice in a host build), so a driver's only
        // registration also matches by driver (docs/simulator.md).
        let pos = mine
            .iter()
            .copied()
            .find(|&i| k.fsreg.notifications.get(i).is_some_and(|n| Some(n.routine as usize) == r))
            .or_else(|| (mine.len() == 1).then(|| mine.first().copied()).flatten());
        if let Some(pos) = pos {
            k.fsreg.notifications.remove(pos);
        }
    });
}
