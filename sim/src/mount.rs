//! The I/O manager's side of mounting (facts.md §1.4, ReactOS `IopMountVolume` as the reference
//! for the sequence; the code is the simulator's own): the queue chosen by the storage device's
//! type, each candidate file system asked through the top of its control device's attachment
//! chain, `STATUS_FS_DRIVER_REQUIRED` answered by loading the file system through its recognizer,
//! RAW only when a raw mount is allowed.

use fsfilter::{Status, device_type};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, KEVENT};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use crate::events::EventKind;
use crate::fsreg::Segment;
use crate::ids::{DeviceId, VolumeId};
use crate::irp::Finish;
use crate::kernel::{self, Kernel};
use crate::nt::{irp_flags, mj, mn_fsctl, sl, vpb};
use crate::volumes::MediaKind;

/// How often the walk may restart after loading a file system before giving up.
const MAX_RESTARTS: u32 = 16;

/// A mount request the mounting thread waits for: what a synchronized registration needs to
/// finish the mount on that thread's behalf once the request is back (`finish_suspended_mounts`).
#[derive(Clone, Debug)]
pub struct MountWait {
    /// The mounting thread's event, signalled when the request's completion reaches the top.
    event: *mut KEVENT,
    /// The mounting thread's status block, written then.
    iosb: *const IO_STATUS_BLOCK,
    /// The storage device.
    storage: DeviceId,
    /// A RAW mount.
    raw: bool,
    /// The file system's service name.
    fs: String,
    /// The service of the driver the request was sent to (the top of the control device's
    /// attachment chain).
    sent_to: String,
    /// The I/O manager's work after the mount was done by another thread.
    pub finished: bool,
}

/// The mount a request belongs to: the volume, its storage device, RAW or not, the file system,
/// the driver the request was sent to.
type MountOf = (VolumeId, DeviceId, bool, String, String);

/// Sends one file-system control request to the top of `device`'s attachment chain and waits.
/// `stack` is the IRP's stack count; `setup` fills the first stack location. For a mount request
/// (`mount`), a pending wait is recorded in the volume ([`MountWait`]); the second value is true
/// when another thread finished the mount during the wait.
fn send_fsctl(
    device: *mut DEVICE_OBJECT,
    stack: i8,
    flags: u32,
    mount: Option<MountOf>,
    setup: impl FnOnce(&mut windows_sys::Wdk::Foundation::IO_STACK_LOCATION),
) -> (Status, bool) {
    // SAFETY: all-zero is a valid KEVENT and IO_STATUS_BLOCK before use.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: as above.
    let mut iosb: Box<IO_STATUS_BLOCK> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our event storage.
    unsafe { crate::sched::initialize_event(&mut *event, 0, false) };
    let irp = kernel::with(|k| k.allocate_irp(stack, Finish::Synchronous, None));
    // SAFETY: a fresh IRP the I/O manager owns until it calls the driver.
    let i = unsafe { crate::irpx::header(irp) };
    i.Flags = flags;
    i.RequestorMode = 0;
    i.UserEvent = &mut *event;
    i.Anonymous.UserIosb = &mut *iosb;
    i.IoStatus.Anonymous.Status = Status::PENDING.0;
    // SAFETY: the IRP has at least one location below the "no location yet" position.
    let next = unsafe { crate::irpx::next(irp) };
    next.MajorFunction = mj::FILE_SYSTEM_CONTROL;
    setup(next);
    let s = crate::irp::call_driver(device, irp);
    let mut finished = false;
    if s == Status::PENDING.0 {
        let watched = mount.map(|(v, storage, raw, fs, sent_to)| {
            let (event, iosb) = (&raw mut *event, &raw const *iosb);
            let wait = MountWait { event, iosb, storage, raw, fs, sent_to, finished: false };
            kernel::with(|k| k.volume_mut(v).mount_wait = Some(wait));
            v
        });
        // SAFETY: our event, alive during the wait (leaked below if the wait fails).
        let w = unsafe { crate::sched::wait_for_event(&mut *event, None) };
        if let Some(v) = watched {
            let wait = kernel::with(|k| k.volume_mut(v).mount_wait.take());
            finished = wait.is_some_and(|w| w.finished);
        }
        if w != Status::SUCCESS.0 {
            std::mem::forget(event);
            std::mem::forget(iosb);
            return (Status::IO_TIMEOUT, finished);
        }
    }
    // SAFETY: written by the I/O manager at completion (or the call's own status when the
    // dispatch routine returned without completing, which the verifier reports).
    (Status(unsafe { iosb.Anonymous.Status }), finished)
}

/// The control devices a mount walks, head first, for a storage device type.
fn queue(k: &Kernel, storage_type: u32) -> Vec<DeviceId> {
    let seg = match storage_type {
        device_type::DISK | device_type::VIRTUAL_DISK => Segment::Disk,
        device_type::CD_ROM => Segment::CdRom,
        _ => Segment::Tape,
    };
    k.fsreg.segment(seg).to_vec()
}

/// Mounts a volume on a storage device (facts.md §1.4). `allow_raw`: a raw mount is allowed
/// (volume opens).
pub fn mount_volume(v: VolumeId, allow_raw: bool) -> Status {
    // One mount of a device at a time. Windows makes a second request wait on the device's lock
    // until the first is done; the simulator's threads are cooperative, and a request that
    // waited here for a walk lower on the same host stack (the pended mount it interrupted)
    // would wait forever. So a request from another thread while a mount is under way fails
    // with `STATUS_DEVICE_NOT_READY` (choice, docs/simulator.md "Mounting"). A request of the
    // mounting thread itself (a driver in the mount path opens the volume, whose VPB is not
    // marked mounted before the request is back) waits on Windows for the lock its own thread
    // holds and never returns: a deadlock, reported, and the request fails the same way.
    let held = kernel::with(|k| {
        let me = k.thread;
        match k.volume(v).mounting {
            Some(t) if t != me => false,
            Some(_) => {
                let volume = k.volume_display_name(v);
                k.report_current(
                    crate::events::Rule::Deadlock,
                    format!(
                        "a mount of {volume} from its own mount path: the thread waits for the \
                         device lock it holds (the simulator fails the request with \
                         STATUS_DEVICE_NOT_READY)"
                    ),
                );
                false
            }
            None => {
                k.volume_mut(v).mounting = Some(me);
                true
            }
        }
    });
    if !held {
        return Status::DEVICE_NOT_READY;
    }
    // A new mount waits for synchronized registrations under way (facts.md §1.1); one that
    // cannot be waited for fails like a mount of a device under way (docs/simulator.md).
    if !crate::fsreg::mount_waits_for_registrations() {
        kernel::with(|k| k.volume_mut(v).mounting = None);
        return Status::DEVICE_NOT_READY;
    }
    let status = mount_volume_locked(v, allow_raw);
    kernel::with(|k| k.volume_mut(v).mounting = None);
    status
}

/// [`mount_volume`], the device held.
fn mount_volume_locked(v: VolumeId, allow_raw: bool) -> Status {
    let prepared = kernel::with(|k| {
        let vol = k.volume(v);
        if !vol.fs.uses_vpb() {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        let Some(storage) = vol.storage else { return Err(Status::NO_SUCH_DEVICE) };
        if !vol.media_present {
            return Err(Status::NO_MEDIA_IN_DEVICE);
        }
        let real = k.objects.dobj(storage);
        // SAFETY: the storage device's VPB (allocated by IoCreateDevice, alive for the machine).
        if unsafe { (*real.Vpb).Flags } & vpb::MOUNTED != 0 {
            return Err(Status::SUCCESS);
        }
        Ok(storage)
    });
    let storage = match prepared {
        Ok(s) => s,
        Err(s) => return s,
    };
    let mut restarts = 0;
    'walk: loop {
        let (candidates, real_ptr, storage_top) = kernel::with(|k| {
            let real = k.objects.dobj(storage);
            let top = k.objects.top(storage);
            let ty = real.DeviceType;
            (queue(k, ty), k.objects.device(storage).ptr, k.objects.device(top).ptr)
        });
        for cdo in candidates {
            let (raw, top, stack, name, sent_to) = kernel::with(|k| {
                let raw = k.fsreg.raw.contains(&cdo);
                let mut count: i8 = 1;
                let mut cur = cdo;
                while let Some(up) = k.objects.above(cur) {
                    count = count.saturating_add(1);
                    cur = up;
                }
                // SAFETY: the storage stack's top device.
                let storage_stack = unsafe { (*storage_top).StackSize };
                let name = k.objects.driver(k.objects.device(cdo).driver).service.clone();
                let sent_to = k.objects.driver(k.objects.device(cur).driver).service.clone();
                let stack = storage_stack.saturating_add(count);
                (raw, k.objects.device(cur).ptr, stack, name, sent_to)
            });
            if raw && !allow_raw {
                continue;
            }
            // SAFETY: the real device's current VPB.
            let the_vpb = unsafe { (*real_ptr).Vpb };
            // The registration counter before the request (ReactOS `IopFsRegistrationOps`): a
            // file system that registers or unregisters while the request is out changes the
            // queue this walk read.
            let ops = kernel::with(|k| k.fsreg.generation);
            let (status, finished) = send_fsctl(
                top,
                stack,
                irp_flags::MOUNT_COMPLETION | irp_flags::SYNCHRONOUS_PAGING_IO,
                Some((v, storage, raw, name.clone(), sent_to.clone())),
                |s| {
                    s.MinorFunction = mn_fsctl::MOUNT_VOLUME;
                    s.Flags = if allow_raw { sl::ALLOW_RAW_MOUNT } else { 0 };
                    s.Parameters.MountVolume.Vpb = the_vpb;
                    s.Parameters.MountVolume.DeviceObject = storage_top;
                },
            );
            match status {
                Status::SUCCESS => {
                    let mounted = if finished {
                        kernel::with(|k| is_mounted(k, v))
                    } else {
                        kernel::with(|k| k.after_mount(v, storage, raw, &name, &sent_to))
                    };
                    return if mounted { Status::SUCCESS } else { Status::UNSUCCESSFUL };
                }
                Status::FS_DRIVER_REQUIRED => {
                    load_file_system(cdo);
                    restarts += 1;
                    if restarts > MAX_RESTARTS {
                        break 'walk;
                    }
                    continue 'walk;
                }
                _ if kernel::with(|k| k.fsreg.generation) != ops => {
                    // The request failed and the queue changed meanwhile: start over at its
                    // head, as ReactOS does, rather than walk entries that may be gone (a
                    // recognizer unregistered and deleted) past ones that came (facts.md §1.4).
                    restarts += 1;
                    if restarts > MAX_RESTARTS {
                        break 'walk;
                    }
                    continue 'walk;
                }
                Status::UNRECOGNIZED_VOLUME => {}
                other => {
                    kernel::with(|k| {
                        let volume = k.volume_display_name(v);
                        k.log(EventKind::Mounted { volume, filesystem: name, status: other });
                    });
                    return other;
                }
            }
        }
        break;
    }
    kernel::with(|k| {
        let volume = k.volume_display_name(v);
        k.log(EventKind::Mounted {
            volume,
            filesystem: String::new(),
            status: Status::UNRECOGNIZED_VOLUME,
        });
    });
    Status::UNRECOGNIZED_VOLUME
}

impl Kernel {
    /// The I/O manager's work after a successful mount: the real device's VPB (re-read: the file
    /// system may have swapped in another one) marked mounted, the volume device's stack size
    /// forced to the storage stack's plus one. False, and a `BUGCHECK` finding against `sent_to`
    /// (the driver the request was sent to), when the VPB names no volume device: a filter
    /// completed the request with success without the file system, and Windows dereferences
    /// the NULL `Vpb->DeviceObject` (ReactOS `IopMountInitializeVpb`); the VPB stays unmounted.
    fn after_mount(
        &mut self,
        v: VolumeId,
        storage: DeviceId,
        raw: bool,
        fs: &str,
        sent_to: &str,
    ) -> bool {
        let real = self.objects.dobj(storage);
        let the_vpb = real.Vpb;
        let top = self.objects.top(storage);
        let stack = self.objects.dobj(top).StackSize;
        // SAFETY: the real device's VPB.
        let vp = unsafe { crate::mem::obj(the_vpb) };
        let volume = self.volume_display_name(v);
        if self.objects.device_id(vp.DeviceObject).is_none() {
            self.report(
                crate::events::Rule::Bugcheck,
                Some(sent_to.to_owned()),
                format!(
                    "the mount request of {volume} completed with STATUS_SUCCESS and no volume \
                     device in the VPB: the I/O manager dereferences Vpb->DeviceObject"
                ),
            );
            let status = Status::UNSUCCESSFUL;
            self.log(EventKind::Mounted { volume, filesystem: fs.to_owned(), status });
            return false;
        }
        vp.Flags |= vpb::MOUNTED;
        if raw {
            vp.Flags |= vpb::RAW_MOUNT;
        }
        if let Some(vdo) = self.objects.device_id(vp.DeviceObject) {
            self.objects.dobj(vdo).StackSize = stack.saturating_add(1);
            let info = self.objects.device_mut(vdo);
            info.vpb = the_vpb;
            info.volume = Some(v);
            self.volume_mut(v).vdo = Some(vdo);
        }
        self.log(EventKind::Mounted { volume, filesystem: fs.to_owned(), status: Status::SUCCESS });
        true
    }
}

/// What a synchronized registration found of the mounts under way in other threads, once it
/// waited for the ones their file system pended.
pub struct SuspendedMounts {
    /// Mounts whose request was back: the registration did the I/O manager's work after a
    /// successful one (VPB marked mounted, volume device's stack size) for the mounting thread.
    pub finished: Vec<VolumeId>,
    /// Mounts still under way: their thread is suspended below the registration on the host
    /// stack and goes on only once the registration returns (a filter holds the request, or
    /// delays it).
    pub unfinished: Vec<VolumeId>,
}

impl Kernel {
    /// True when a file system pended a mount request of a thread not in `skip` and has not
    /// completed it yet.
    pub fn mount_pended_elsewhere(&self, skip: &[crate::ids::ThreadId]) -> bool {
        self.volumes
            .list
            .iter()
            .any(|vol| vol.mount_pended_by_fs && vol.mounting.is_some_and(|t| !skip.contains(&t)))
    }

    /// Finishes, on their threads' behalf, the mounts of threads not in `skip` whose request
    /// came back while they are suspended, and lists the others under way.
    pub fn finish_suspended_mounts(&mut self, skip: &[crate::ids::ThreadId]) -> SuspendedMounts {
        let mut found = SuspendedMounts { finished: Vec::new(), unfinished: Vec::new() };
        let under_way: Vec<VolumeId> = (0..self.volumes.list.len())
            .map(|i| VolumeId(i as u32))
            .filter(|v| self.volume(*v).mounting.is_some_and(|t| !skip.contains(&t)))
            .collect();
        for v in under_way {
            let back = self.volume(v).mount_wait.as_ref().and_then(|w| {
                // SAFETY: the mounting thread's event and status block live in its frame,
                // suspended below us, until its wait returns and takes `mount_wait` back.
                let signalled = unsafe { crate::sched::read_event(w.event) } != 0;
                // SAFETY: as above.
                let iosb = unsafe { &*w.iosb };
                // SAFETY: `Status` is the member the I/O manager wrote.
                let status = unsafe { iosb.Anonymous.Status };
                (signalled && !w.finished)
                    .then(|| (Status(status), w.storage, w.raw, w.fs.clone(), w.sent_to.clone()))
            });
            match back {
                Some((Status::SUCCESS, storage, raw, fs, sent_to)) => {
                    // The mounting thread reads the outcome from the VPB once it runs.
                    let _ = self.after_mount(v, storage, raw, &fs, &sent_to);
                    if let Some(w) = self.volume_mut(v).mount_wait.as_mut() {
                        w.finished = true;
                    }
                    found.finished.push(v);
                }
                // Another answer: the mounting thread walks on to the next file system once it
                // runs, and its next request goes through what is attached by then.
                Some(_) => {}
                None => {
                    if !self.volume(v).mount_wait.as_ref().is_some_and(|w| w.finished) {
                        found.unfinished.push(v);
                    }
                }
            }
        }
        found
    }
}

/// `IRP_MN_LOAD_FILE_SYSTEM` to a recognizer, through the top of its attachment chain.
pub fn load_file_system(cdo: DeviceId) {
    let (top, stack) = kernel::with(|k| {
        let top = k.objects.top(cdo);
        (k.objects.device(top).ptr, k.objects.dobj(top).StackSize)
    });
    let _ = send_fsctl(top, stack, irp_flags::SYNCHRONOUS_API, None, |s| {
        s.MinorFunction = mn_fsctl::LOAD_FILE_SYSTEM;
    });
}

/// Makes a namespace volume (share, pipes, mailslots) available: no mount request exists for
/// these; the volume is served by the file system's own device.
pub fn namespace_mount(v: VolumeId) -> Status {
    kernel::with(|k| {
        let r = k.namespace_mount(v);
        let volume = k.volume_display_name(v);
        let fs = crate::fs::FsType::of(k.volume(v).fs).desc().service.to_owned();
        let status = r.err().unwrap_or(Status::SUCCESS);
        k.log(EventKind::Mounted { volume, filesystem: fs, status });
        status
    })
}

/// Mounts a volume however its kind mounts: `Machine::mount`. The media of a `Step` volume
/// arrives now.
pub fn mount(v: VolumeId) -> Status {
    let kind = kernel::with(|k| {
        let vol = k.volume_mut(v);
        vol.media_present = true;
        vol.fs.media()
    });
    match kind {
        MediaKind::Disk | MediaKind::CdRom => mount_volume(v, false),
        MediaKind::Network | MediaKind::None => namespace_mount(v),
    }
}

/// True when the volume's VPB is marked `VPB_LOCKED` (`FSCTL_LOCK_VOLUME`): the I/O manager's
/// parse then refuses an open through it with `STATUS_ACCESS_DENIED` before any request is
/// built, so no driver sees it (ReactOS `IopCheckVpbMounted`).
pub fn is_locked(k: &Kernel, v: VolumeId) -> bool {
    let Some(s) = k.volume(v).storage else { return false };
    let real = k.objects.dobj(s);
    // SAFETY: the storage device's VPB, when set.
    unsafe { real.Vpb.as_ref() }.is_some_and(|vp| vp.Flags & vpb::LOCKED != 0)
}

/// True when the volume is mounted now.
pub fn is_mounted(k: &Kernel, v: VolumeId) -> bool {
    let vol = k.volume(v);
    match vol.storage {
        Some(s) => {
            let real = k.objects.dobj(s);
            // SAFETY: the storage device's VPB.
            !real.Vpb.is_null() && unsafe { (*real.Vpb).Flags } & vpb::MOUNTED != 0
        }
        None => vol.vdo.is_some(),
    }
}
