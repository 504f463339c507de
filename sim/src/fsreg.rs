//! File-system registration (facts.md §1.1): the global file-system queue with its four
//! segments, `IoRegisterFileSystem` / `IoUnregisterFileSystem`, and the
//! `IoRegisterFsRegistrationChange` routines with their documented behaviour: called at once for
//! every file system already registered (before the registration returns), RAW skipped,
//! `STATUS_DEVICE_ALREADY_ATTACHED` for an immediate duplicate, `STATUS_NOT_SUPPORTED` under the
//! legacy-filter block policy.

use std::collections::VecDeque;

use fsfilter::{Status, device_type};
use windows_sys::Wdk::Foundation::DEVICE_OBJECT;

use crate::events::EventKind;
use crate::ids::{DeviceId, DriverId, ImageId, ThreadId};
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
    /// The segment of a control device type; none for a type other than the four file-system
    /// types (ReactOS `IoRegisterFileSystem` queues such a device nowhere).
    pub fn of(device_type: u32) -> Option<Segment> {
        match device_type {
            device_type::CD_ROM_FILE_SYSTEM => Some(Segment::CdRom),
            device_type::DISK_FILE_SYSTEM => Some(Segment::Disk),
            device_type::TAPE_FILE_SYSTEM => Some(Segment::Tape),
            device_type::NETWORK_FILE_SYSTEM => Some(Segment::Network),
            _ => None,
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
    /// Registrations and unregistrations so far (the I/O manager's counter, ReactOS
    /// `IopFsRegistrationOps`): a mount walk that finds it changed after a failed request
    /// starts over at the head of the queue.
    pub generation: u64,
    /// Registrations with `SynchronizeWithMounts` = TRUE under way, oldest first.
    pub synchronized: Vec<SyncRegistration>,
    /// The last id given to one.
    pub last_sync: u64,
    /// Control devices `IoUnregisterFileSystem` took out of their segment: their queue links
    /// are stale until they register again, and a second unlink fails Windows' list check.
    pub unlinked: Vec<DeviceId>,
}

/// A registration with `SynchronizeWithMounts` = TRUE under way: it waits for the mounts its
/// file systems pended, then reports every registered file system to its routine. Its remaining
/// work is done by whichever thread needs it done: the registering thread, or a mount that starts
/// meanwhile (which waits for the registration by doing the rest of it, [`drive`]).
pub struct SyncRegistration {
    id: u64,
    notification: Notification,
    /// Threads doing its work now (the registering thread first). A mount in one of them does
    /// not wait for it: it is a mount made from the registration's own calls.
    drivers: Vec<ThreadId>,
    /// `None` while waiting for mounts; then the control devices not yet reported.
    pending: Option<VecDeque<*const DEVICE_OBJECT>>,
    /// Notification calls begun and not yet returned.
    calling: usize,
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
        for s in [Segment::CdRom, Segment::Disk, Segment::Tape, Segment::Network] {
            k.fsreg.segment_mut(s).retain(|d| *d != id);
        }
        k.fsreg.unlinked.retain(|d| *d != id);
        // A device of another type joins no queue; the counter and the routines as for any.
        if let Some(seg) = seg {
            let list = k.fsreg.segment_mut(seg);
            if is_raw {
                // RAW stays at the tail of its segment whatever registers later.
                list.push(id);
            } else if low {
                // Low-priority file systems go to the tail, but before RAW (ReactOS inserts
                // them before the segment's last entry, facts.md §1.1).
                let at = list.iter().position(|d| raw.contains(d)).unwrap_or(list.len());
                list.insert(at, id);
            } else {
                list.insert(0, id);
            }
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
        let mut queued = false;
        for s in [Segment::CdRom, Segment::Disk, Segment::Tape, Segment::Network] {
            let list = k.fsreg.segment_mut(s);
            queued |= list.contains(&id);
            list.retain(|d| *d != id);
        }
        if queued {
            k.fsreg.unlinked.push(id);
        } else if k.fsreg.unlinked.contains(&id) {
            // Unregistered already: Windows unlinks the entry again, its list check finds the
            // stale links and fails fast (KERNEL_SECURITY_CHECK_FAILURE) before any routine.
            let driver = k.objects.driver(k.objects.device(id).driver).service.clone();
            k.report(
                crate::events::Rule::Bugcheck,
                Some(driver),
                "IoUnregisterFileSystem of a control device unregistered already (its queue \
                 links are stale: KERNEL_SECURITY_CHECK_FAILURE)",
            );
            return Vec::new();
        }
        k.fsreg.generation += 1;
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

/// How a registration goes on once its checks passed.
enum Prepared {
    /// Report these file systems now.
    Now(Notification, Vec<*const DEVICE_OBJECT>),
    /// A synchronized registration (its id) under way.
    Synchronized(u64),
}

/// `IoRegisterFsRegistrationChange` (and the MountAware variant when `mount_aware`, with
/// `synchronize` its `SynchronizeWithMounts`).
pub fn register_change(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    routine: Option<FsNotification>,
    mount_aware: bool,
    synchronize: bool,
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
                || k.fsreg.synchronized.iter().any(|r| r.notification.driver == did)
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
        let n = Notification { driver: did, image, routine, mount_aware };
        if synchronize {
            k.fsreg.last_sync += 1;
            let id = k.fsreg.last_sync;
            let me = k.thread;
            k.fsreg.synchronized.push(SyncRegistration {
                id,
                notification: n,
                drivers: vec![me],
                pending: None,
                calling: 0,
            });
            return Ok(Prepared::Synchronized(id));
        }
        k.fsreg.notifications.push(n);
        Ok(Prepared::Now(n, k.registered_control_devices()))
    });
    match prepared {
        Err(s) => s,
        Ok(Prepared::Now(n, existing)) => {
            // Every file system already registered is reported before the call returns (XP and
            // later).
            for cdo in existing {
                notify(n, cdo, true);
            }
            Status::SUCCESS
        }
        Ok(Prepared::Synchronized(id)) => {
            // Every call above this one on the host stack has returned, so none of its
            // notification calls is still running: the work is done.
            let _ = drive(id);
            kernel::with(|k| k.fsreg.synchronized.retain(|r| r.id != id));
            Status::SUCCESS
        }
    }
}

impl Kernel {
    /// The registered control devices as a new routine hears of them.
    fn registered_control_devices(&self) -> Vec<*const DEVICE_OBJECT> {
        self.fsreg
            .enumeration_order()
            .into_iter()
            .map(|d| self.objects.device(d).ptr.cast_const())
            .collect()
    }

    /// A synchronized registration's step after its wait for mounts: the mounts that came back
    /// meanwhile finished for their suspended threads, the routine added to the list, the file
    /// systems to report taken, at once (a file system registering later calls the routine
    /// itself). Done once, by whichever thread gets here first.
    fn begin_synchronized_calls(&mut self, id: u64) {
        let Some(r) = self.fsreg.synchronized.iter().find(|r| r.id == id) else { return };
        if r.pending.is_some() {
            return;
        }
        let (n, drivers) = (r.notification, r.drivers.clone());
        let found = self.finish_suspended_mounts(&drivers);
        let service = self.objects.driver(n.driver).service.clone();
        for v in found.unfinished {
            let volume = self.volume_display_name(v);
            self.log(EventKind::System {
                what: "registration_not_synchronized",
                driver: Some(service.clone()),
                volume: Some(volume),
                detail: "a mount under way in a thread suspended below the registration: it \
                         goes on only once the registration returns"
                    .into(),
            });
        }
        self.fsreg.notifications.push(n);
        let existing = self.registered_control_devices();
        if let Some(r) = self.fsreg.synchronized.iter_mut().find(|r| r.id == id) {
            r.pending = Some(existing.into());
        }
    }
}

/// One step of a synchronized registration's work.
enum SyncStep {
    /// Wait for the mounts file systems pended in other threads.
    Wait,
    /// Report a file system.
    Call(Notification, *const DEVICE_OBJECT),
    /// Nothing left.
    Done,
    /// Nothing left to begin, but a notification call is still running in a thread suspended
    /// below the caller.
    Busy,
}

/// Does a synchronized registration's remaining work in the current thread, which must be in
/// its `drivers`: waits (running other ready work, [`crate::sched::wait_until`]) until no file
/// system has a mount request of another thread pended, then makes the notification calls not
/// yet begun. False when a call begun by a thread suspended below is still running.
fn drive(id: u64) -> bool {
    loop {
        let step = kernel::with(|k| {
            let Some(r) = k.fsreg.synchronized.iter_mut().find(|r| r.id == id) else {
                return SyncStep::Done;
            };
            match r.pending.as_mut() {
                None => SyncStep::Wait,
                Some(p) => match p.pop_front() {
                    Some(cdo) => {
                        r.calling += 1;
                        SyncStep::Call(r.notification, cdo)
                    }
                    None if r.calling == 0 => SyncStep::Done,
                    None => SyncStep::Busy,
                },
            }
        });
        match step {
            SyncStep::Wait => {
                // The file system completes a pended mount from a worker queued for a set time,
                // so this wait ends; a crash ends it too (the registration then goes on).
                let _ = crate::sched::wait_until(
                    || {
                        kernel::with(|k| {
                            let drivers = k
                                .fsreg
                                .synchronized
                                .iter()
                                .find(|r| r.id == id)
                                .map(|r| r.drivers.clone())
                                .unwrap_or_default();
                            !k.mount_pended_elsewhere(&drivers)
                        })
                    },
                    None,
                );
                kernel::with(|k| k.begin_synchronized_calls(id));
            }
            SyncStep::Call(n, cdo) => {
                notify(n, cdo, true);
                kernel::with(|k| {
                    if let Some(r) = k.fsreg.synchronized.iter_mut().find(|r| r.id == id) {
                        r.calling = r.calling.saturating_sub(1);
                    }
                });
            }
            SyncStep::Done => return true,
            SyncStep::Busy => return false,
        }
    }
}

/// A mount about to start waits for the synchronized registrations under way (facts.md §1.1)
/// by doing their remaining work itself: the registering thread is suspended below it on the
/// host stack and cannot go on until the mount returns. A mount made from a registration's own
/// work (its thread is among the registration's drivers) does not wait for it. False when a
/// registration's notification call is still running in a thread suspended below: the mount
/// cannot wait for it.
pub fn mount_waits_for_registrations() -> bool {
    let (me, ids) = kernel::with(|k| {
        let me = k.thread;
        let ids: Vec<u64> = k
            .fsreg
            .synchronized
            .iter()
            .filter(|r| !r.drivers.contains(&me))
            .map(|r| r.id)
            .collect();
        (me, ids)
    });
    for id in ids {
        kernel::with(|k| {
            if let Some(r) = k.fsreg.synchronized.iter_mut().find(|r| r.id == id) {
                r.drivers.push(me);
            }
        });
        let done = drive(id);
        kernel::with(|k| {
            if let Some(r) = k.fsreg.synchronized.iter_mut().find(|r| r.id == id) {
                r.drivers.retain(|t| *t != me);
            }
        });
        if !done {
            return false;
        }
    }
    true
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
