//! Control devices, mount and dismount (facts.md §1.4), volume FSCTLs, device controls passed to
//! the storage stack, cleanup and close.

use std::ptr::null_mut;

use fsfilter::Status;
use fsfilter_kernel::params;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, KEVENT, VPB};
use windows_sys::Win32::Foundation::NTSTATUS;
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::notify::{self, name_change};
use super::{Call, DEV_EXT_MAGIC, DevExt, FsType, Mount, MountState, Role, VOLUME_NODE};
use crate::events::EventKind;
use crate::ids::VolumeId;
use crate::irpx;
use crate::kernel::{self, FastMap, Kernel};
use crate::nt::{do_flags, fo, fsctl, mj, mn_fsctl, mn_pnp, sl, vpb as vpbf};

/// The oplock work a cleanup leaves ([`super::oplock::finish`]).
type OplockWork = Vec<super::oplock::After>;

/// Requests to a control device (`\Ntfs`, `\Fat`, ...): opens of the control device, mount
/// requests, and nothing else.
pub fn control_device(call: Call, major: u8, minor: u8) -> NTSTATUS {
    match major {
        mj::CREATE => call.done(Status::SUCCESS, crate::nt::create_result::OPENED),
        mj::CLEANUP => {
            let fo = call.fo();
            if !fo.is_null() {
                // SAFETY: the request's live file object.
                unsafe { irpx::file(fo) }.Flags |= fo::CLEANUP_COMPLETE;
            }
            call.done(Status::SUCCESS, 0)
        }
        mj::CLOSE | mj::SHUTDOWN | mj::FLUSH_BUFFERS => call.done(Status::SUCCESS, 0),
        mj::FILE_SYSTEM_CONTROL if minor == mn_fsctl::MOUNT_VOLUME => mount(call),
        _ => call.done(Status::INVALID_DEVICE_REQUEST, 0),
    }
}

/// Reads the raw media through the storage stack, as a file system reads its boot sector:
/// `IoBuildSynchronousFsdRequest`, `IoCallDriver`, wait.
pub(crate) fn read_media(
    target: *mut DEVICE_OBJECT,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, Status> {
    let mut buf = vec![0u8; len];
    // SAFETY: all-zero is a valid KEVENT before initialization.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: all-zero is a valid IO_STATUS_BLOCK.
    let mut iosb: Box<IO_STATUS_BLOCK> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our event storage.
    unsafe { crate::sched::initialize_event(&mut *event, 0, false) };
    let start = offset as i64;
    // SAFETY: a live device, our buffer of `len` bytes, event and status block.
    let irp = unsafe {
        crate::exports::io::IoBuildSynchronousFsdRequest(
            u32::from(mj::READ),
            target,
            buf.as_mut_ptr().cast(),
            len as u32,
            &start,
            &*event,
            &mut *iosb,
        )
    };
    if irp.is_null() {
        return Err(Status::INSUFFICIENT_RESOURCES);
    }
    let s = crate::irp::call_driver(target, irp);
    if s == Status::PENDING.0 {
        // SAFETY: our event, alive until the wait ends (leaked below if it never does).
        let w = unsafe { crate::sched::wait_for_event(&mut *event, None) };
        if w != Status::SUCCESS.0 {
            // The request never completed: its buffers must outlive it.
            std::mem::forget(buf);
            std::mem::forget(event);
            std::mem::forget(iosb);
            return Err(Status::IO_TIMEOUT);
        }
    }
    // SAFETY: the status member, written at completion.
    let status = Status(unsafe { iosb.Anonymous.Status });
    if !status.is_success() {
        return Err(status);
    }
    buf.truncate(iosb.Information.min(len));
    Ok(buf)
}

/// Where a file system (or its recognizer) looks for its signature, and what it reads.
pub fn probe(ty: FsType) -> Option<(u64, usize)> {
    match ty {
        FsType::Ntfs | FsType::Fat | FsType::Exfat | FsType::Refs => Some((0, 512)),
        FsType::Cdfs | FsType::Udfs => Some((32768, 6144)),
        _ => None,
    }
}

/// True when the bytes read at [`probe`] carry the file system's signature.
pub fn recognize(ty: FsType, b: &[u8]) -> bool {
    let at = |i: usize, s: &[u8]| b.get(i..i + s.len()) == Some(s);
    match ty {
        FsType::Ntfs => at(3, b"NTFS    "),
        FsType::Fat => at(3, b"MSDOS5.0") || at(0x52, b"FAT32   "),
        FsType::Exfat => at(3, b"EXFAT   "),
        FsType::Refs => at(3, b"ReFS"),
        FsType::Cdfs => at(1, b"CD001"),
        FsType::Udfs => at(1, b"BEA01") && (at(2049, b"NSR02") || at(2049, b"NSR03")),
        FsType::Raw => true,
        FsType::Mup | FsType::Npfs | FsType::Msfs => false,
    }
}

/// `IRP_MN_MOUNT_VOLUME` on a control device: recognize the media, then create a volume device
/// (or, for FAT and CDFS, revive the dismounted volume device of the same media).
fn mount(call: Call) -> NTSTATUS {
    let sl = call.sl();
    // SAFETY: `MountVolume` is the member in use for a mount request.
    let mv = unsafe { sl.Parameters.MountVolume };
    let allow_raw = sl.Flags & sl::ALLOW_RAW_MOUNT != 0;
    let (vpb, target) = (mv.Vpb, mv.DeviceObject);
    if vpb.is_null() || target.is_null() {
        return call.done(Status::INVALID_PARAMETER, 0);
    }
    if call.ty == FsType::Raw {
        if !allow_raw {
            return call.done(Status::UNRECOGNIZED_VOLUME, 0);
        }
    } else {
        let Some((offset, len)) = probe(call.ty) else {
            return call.done(Status::UNRECOGNIZED_VOLUME, 0);
        };
        match read_media(target, offset, len) {
            Ok(bytes) if recognize(call.ty, &bytes) => {}
            Ok(_) => return call.done(Status::UNRECOGNIZED_VOLUME, 0),
            Err(s) => return call.done(s, 0),
        }
    }
    // SAFETY: the VPB the I/O manager passed.
    let real = unsafe { (*vpb).RealDevice };
    if let Some((volume, ms)) = kernel::with(|k| k.mount_pends(real)) {
        // A slow medium (facts.md §1.4 step 3): the volume is recognized, and the rest of the
        // mount is done from a worker thread later; the request is pending until then.
        // SAFETY: the live IRP in our dispatch routine, completed once by the worker.
        unsafe { fsfilter_kernel::irp::IoMarkIrpPending(call.irp) };
        let image = kernel::with(|k| {
            k.volume_mut(volume).mount_pended_by_fs = true;
            k.current_image()
        });
        crate::sched::queue_work_after(
            "file system mount",
            image,
            ms.saturating_mul(10_000),
            Box::new(move || {
                let _ = mount_recognized(call, vpb, target, real);
                kernel::with(|k| k.volume_mut(volume).mount_pended_by_fs = false);
            }),
        );
        return crate::irpx::STATUS_PENDING;
    }
    mount_recognized(call, vpb, target, real)
}

/// The rest of a mount once the file system recognized the media: revive a dismounted volume of
/// the same media (FAT, CDFS) or create the volume device; completes the request.
fn mount_recognized(
    call: Call,
    vpb: *mut VPB,
    target: *mut DEVICE_OBJECT,
    real: *mut DEVICE_OBJECT,
) -> NTSTATUS {
    if call.ty.desc().revives && kernel::with(|k| k.revive(call.ty, real)) {
        return call.done(Status::SUCCESS, 0);
    }
    // SAFETY: the control device we were called on.
    let cdo = unsafe { irpx::device(call.device) };
    let (driver, dtype) = (cdo.DriverObject, cdo.DeviceType);
    let mut vdo: *mut DEVICE_OBJECT = null_mut();
    // SAFETY: our driver object; an unnamed device of the control device's type.
    let s = Status(unsafe {
        crate::exports::io::IoCreateDevice(
            driver,
            size_of::<DevExt>() as u32,
            std::ptr::null(),
            dtype,
            0,
            false,
            &mut vdo,
        )
    });
    if !s.is_success() {
        return call.done(s, 0);
    }
    let r = kernel::with(|k| k.mounted(call.ty, vdo, vpb, target));
    if let Ok(Some((vdo_id, ms))) = r {
        // A file system that finishes initializing its volume device late (facts.md §1.5): its
        // worker clears `DO_DEVICE_INITIALIZING` `ms` milliseconds after the mount completes.
        let image = kernel::with(|k| k.current_image());
        crate::sched::queue_work_after(
            "volume device initialized",
            image,
            ms.saturating_mul(10_000),
            Box::new(move || kernel::with(|k| k.volume_device_initialized(vdo_id))),
        );
    }
    call.done(r.err().unwrap_or(Status::SUCCESS), 0)
}

/// `IRP_MJ_FILE_SYSTEM_CONTROL` on a volume.
pub fn fsctl(call: Call, minor: u8) -> NTSTATUS {
    if minor != mn_fsctl::USER_FS_REQUEST {
        return call.done(Status::INVALID_DEVICE_REQUEST, 0);
    }
    let sl = call.sl();
    // SAFETY: `FileSystemControl` is the member in use.
    let code = unsafe { params::io::<params::IoFileSystemControl>(&sl.Parameters) }.FsControlCode;
    let fo = sl.FileObject;
    if super::oplock::code::is_oplock(code) {
        return oplock_fsctl(call, code);
    }
    if super::reparse::is_reparse_code(code) && super::reparse::supported(call.ty) {
        return super::reparse::fsctl(call, code);
    }
    let s = kernel::with(|k| k.fs_user_fsctl(call, fo, code));
    call.done(s, 0)
}

/// An oplock FSCTL on a disk file system's file ([`super::oplock`]): completed now, or pended
/// (a granted oplock until its break, a Level 2 acknowledgement, a break notification). RAW and
/// the namespace file systems grant none.
fn oplock_fsctl(call: Call, code: u32) -> NTSTATUS {
    let r = kernel::with(|k| {
        let mut after = Vec::new();
        let fcb = k.fcb_of(call.fo());
        let state = fcb.map(|f| k.fs.mounts[f.mount as usize].state);
        // Every disk and CD file system (FastFat, NTFS, CDFS and UDFS each have an
        // `XxxOplockRequest`); not RAW or the namespace file systems.
        let served = !call.ty.is_namespace() && call.ty != FsType::Raw;
        let r = match state {
            None if call.ext.role == Role::Namespace as u8 => {
                Some((Status::INVALID_DEVICE_REQUEST, 0))
            }
            None => Some((Status::INVALID_PARAMETER, 0)),
            Some(s) if s != MountState::Mounted => Some((Status::VOLUME_DISMOUNTED, 0)),
            Some(_) if !served => Some((Status::INVALID_DEVICE_REQUEST, 0)),
            Some(_) => k.oplock_fsctl(call, code, &mut after),
        };
        (r, after)
    });
    let (r, after) = r;
    let s = match r {
        Some((status, info)) => call.done(status, info),
        None => crate::irpx::STATUS_PENDING,
    };
    super::oplock::finish(after);
    s
}

/// `IRP_MJ_DEVICE_CONTROL` on a volume: passed to the storage stack below the file system.
pub fn device_control(call: Call) -> NTSTATUS {
    let target = kernel::with(|k| {
        let fcb = k.fcb_of(call.fo())?;
        let m = &k.fs.mounts[fcb.mount as usize];
        (m.state == MountState::Mounted && !m.target.is_null()).then_some(m.target)
    });
    // SAFETY: the live IRP.
    let room = unsafe { (*call.irp).CurrentLocation } > 1;
    match target {
        Some(t) if room => {
            // SAFETY: the live IRP with a lower location.
            unsafe { fsfilter_kernel::irp::IoCopyCurrentIrpStackLocationToNext(call.irp) };
            crate::irp::call_driver(t, call.irp)
        }
        _ => call.done(Status::INVALID_DEVICE_REQUEST, 0),
    }
}

/// `IRP_MJ_CLEANUP`: the handle is gone: share access, locks, delete on close, volume lock.
pub fn cleanup(call: Call) -> NTSTATUS {
    let fo = call.fo();
    let (granted, dropped, oplock) = kernel::with(|k| k.fs_cleanup(fo));
    let s = call.done(Status::SUCCESS, 0);
    super::rw::complete_dropped(dropped);
    super::rw::complete_granted(granted);
    if !oplock.is_empty() {
        super::oplock::finish(oplock);
    }
    s
}

/// `IRP_MJ_CLOSE`: the last reference is gone. A dismounted volume's device is torn down once its
/// last file closes (posted to a worker, after the close completes).
pub fn close(call: Call) -> NTSTATUS {
    let fo = call.fo();
    let teardown = kernel::with(|k| k.fs_close(fo));
    super::teardown_retired();
    let s = call.done(Status::SUCCESS, 0);
    if let Some(mount) = teardown {
        let image = kernel::with(|k| k.current_image());
        crate::sched::queue_work("volume teardown", image, Box::new(move || tear_down(mount)));
    }
    s
}

/// `locked_by` of a volume the file system locked for a PnP query-remove (FastFat's
/// `FatLockVolumeInternal` with no file object: a system lock). No file object lives at 1.
const SYSTEM_LOCK: usize = 1;

/// `IRP_MJ_PNP` on a volume device. The four minors of a removal are the file system's (Learn,
/// "IRP_MJ_PNP (FS and filter drivers)"; FastFat pnp.c, `FatPnpQueryRemove` and siblings); any
/// other minor passes on ([`super::pnp_pass_on`]). No storage PnP stack is modelled below: what
/// the file system "sends down" is answered `STATUS_SUCCESS`, as a storage driver with nothing
/// open does.
///
/// - Query-remove: fails `STATUS_ACCESS_DENIED` while files are open or the volume is locked
///   (`FatLockVolumeInternal`), else locks the volume (a system lock: creates are refused in the
///   parse). FAT then dismounts at once (`FatCheckForDismount`, forced): the volume device goes
///   from a worker after the IRP completes, so a filter above sees its post and then its
///   detach; the other file systems keep the volume locked until the remove (Learn: NTFS does
///   not dismount on a query-remove).
/// - Remove: unlocks the system lock and dismounts what is still mounted.
/// - Surprise removal: dismounts whatever is open; the volume device goes at its last close.
/// - Cancel-remove: unlocks the system lock (harmless when there is none).
///
/// docs/simulator.md, "Removal of a volume (PnP)".
pub fn pnp(call: Call, minor: u8) -> NTSTATUS {
    let mount = call.ext.mount;
    let handled = matches!(
        minor,
        mn_pnp::QUERY_REMOVE_DEVICE
            | mn_pnp::REMOVE_DEVICE
            | mn_pnp::CANCEL_REMOVE_DEVICE
            | mn_pnp::SURPRISE_REMOVAL
    );
    let known = kernel::with(|k| k.fs.mounts.get(mount as usize).is_some());
    if !handled || !known {
        return super::pnp_pass_on(call);
    }
    let (status, teardown) = kernel::with(|k| k.fs_pnp(mount, minor));
    let s = call.done(status, 0);
    if teardown {
        let image = kernel::with(|k| k.current_image());
        crate::sched::queue_work("volume teardown", image, Box::new(move || tear_down(mount)));
    }
    s
}

impl Kernel {
    /// The file system's side of a removal minor ([`pnp`]): the status, and whether the volume
    /// device is to go now (dismounted with nothing open).
    fn fs_pnp(&mut self, mount: u32, minor: u8) -> (Status, bool) {
        let m = &self.fs.mounts[mount as usize];
        let (ty, state, open, locked_by) = (m.ty, m.state, m.open_files, m.locked_by);
        // SAFETY: the mount's VPB (VPBs live as long as the machine).
        let refs = if m.vpb.is_null() { 0 } else { unsafe { (*m.vpb).ReferenceCount } };
        let mounted = state == MountState::Mounted;
        let dismount = match minor {
            mn_pnp::QUERY_REMOVE_DEVICE => {
                if !mounted {
                    return (Status::SUCCESS, false);
                }
                if open != 0 || refs != 0 || locked_by.is_some() {
                    return (Status::ACCESS_DENIED, false);
                }
                let m = &mut self.fs.mounts[mount as usize];
                m.locked_by = Some(SYSTEM_LOCK);
                // SAFETY: the mount's VPB.
                unsafe { (*m.vpb).Flags |= vpbf::LOCKED };
                // FastFat dismounts at once; NTFS and the others wait for the remove.
                ty == FsType::Fat
            }
            mn_pnp::CANCEL_REMOVE_DEVICE => {
                if locked_by == Some(SYSTEM_LOCK) {
                    self.unlock_volume(mount);
                }
                return (Status::SUCCESS, false);
            }
            // REMOVE_DEVICE, SURPRISE_REMOVAL
            _ => {
                if locked_by == Some(SYSTEM_LOCK) {
                    self.unlock_volume(mount);
                }
                mounted
            }
        };
        if !dismount {
            return (Status::SUCCESS, false);
        }
        if self.fs.mounts[mount as usize].locked_by == Some(SYSTEM_LOCK) {
            self.unlock_volume(mount);
        }
        self.fs_dismount(mount);
        self.volume_dismounted(mount);
        let m = &mut self.fs.mounts[mount as usize];
        let gone = m.open_files == 0 && refs == 0;
        if gone {
            m.state = MountState::Gone;
        }
        (Status::SUCCESS, gone)
    }
}

impl Kernel {
    /// The I/O manager dropped the VPB reference of a create that failed (the parse's,
    /// `IopCheckVpbMounted`): when that create was all that still held a dismounted volume whose
    /// last file closed meanwhile, its device goes now, from the file system's worker as after
    /// a last close.
    pub(crate) fn create_released_vpb(&mut self, vpb: *mut VPB) {
        let Some(mount) = self.fs.mounts.iter().position(|m| m.vpb == vpb) else { return };
        let m = &mut self.fs.mounts[mount];
        // SAFETY: the mount's VPB (VPBs live as long as the machine).
        let refs = unsafe { (*vpb).ReferenceCount };
        if m.state != MountState::Dismounted || m.open_files != 0 || refs != 0 {
            return;
        }
        m.state = MountState::Gone;
        let image = Some(self.objects.driver(self.objects.device(m.vdo).driver).image);
        let thread = self.sched.worker();
        let run: Box<dyn FnOnce()> = Box::new(move || tear_down(mount as u32));
        let name = "volume teardown";
        let irql = crate::kernel::PASSIVE_LEVEL;
        self.sched.push(crate::sched::Task { name, image, irql, thread, run });
    }
}

/// Deletes a dismounted volume's device (the I/O manager then calls `FastIoDetachDevice` of what
/// is attached above it, facts.md §1.7).
fn tear_down(mount: u32) {
    let vdo = kernel::with(|k| {
        let m = k.fs.mounts.get(mount as usize)?;
        let (vdo_id, vfcb, volume) = (m.vdo, m.volume_fcb, m.volume);
        let vdo = k.objects.device(vdo_id).ptr;
        k.retire_fcb(vfcb);
        let name = k.volume_display_name(volume);
        k.log(EventKind::System {
            what: "volume_device_deleted",
            driver: Some(k.objects.driver(k.objects.device(vdo_id).driver).service.clone()),
            volume: Some(name),
            detail: "the dismounted volume's last file closed".into(),
        });
        Some(vdo)
    });
    super::teardown_retired();
    if let Some(vdo) = vdo {
        // SAFETY: our volume device.
        unsafe { crate::exports::io::IoDeleteDevice(vdo) };
    }
}

impl Kernel {
    /// The volume on `real` and how many milliseconds later the file system completes its
    /// mount, if it pends it ([`crate::volumes::VolumeSpec::mount_pends_ms`]).
    fn mount_pends(&self, real: *mut DEVICE_OBJECT) -> Option<(VolumeId, u64)> {
        let volume = self.objects.device(self.objects.device_id(real)?).volume?;
        Some((volume, self.volumes.list.get(volume.index())?.mount_pends_ms?))
    }

    /// Revives a dismounted volume of the same media (FAT, CDFS): its VPB goes back on the real
    /// device and its volume device serves again. The VPB the mount request carried is left
    /// unused, so a filter that kept that pointer sees it unmounted (facts.md §1.4).
    fn revive(&mut self, ty: FsType, real: *mut DEVICE_OBJECT) -> bool {
        let Some(real_id) = self.objects.device_id(real) else { return false };
        let Some(i) = self.fs.mounts.iter().rposition(|m| {
            m.ty == ty && m.real == Some(real_id) && m.state == MountState::Dismounted
        }) else {
            return false;
        };
        let m = &mut self.fs.mounts[i];
        m.state = MountState::Mounted;
        let (vpb, vdo, volume) = (m.vpb, m.vdo, m.volume);
        // The VPB goes back unmarked: the I/O manager marks the real device's VPB mounted once the
        // request is back (`after_mount`), as for a new mount.
        self.objects.dobj(real_id).Vpb = vpb;
        self.volumes.list[volume.index()].vdo = Some(vdo);
        let name = self.volume_display_name(volume);
        self.log(EventKind::System {
            what: "volume_revived",
            driver: Some(ty.desc().service.to_owned()),
            volume: Some(name),
            detail: "the file system swapped the dismounted volume's VPB back onto the real device"
                .into(),
        });
        true
    }

    /// Records a new mount: the volume device's fields, the VPB, the mount, the volume FCB.
    /// Answers the volume device and the milliseconds after which the file system's worker is to
    /// clear its `DO_DEVICE_INITIALIZING` flag, for a volume that initializes late
    /// ([`crate::volumes::VolumeSpec::initialize_late`]); the flag is cleared here otherwise.
    fn mounted(
        &mut self,
        ty: FsType,
        vdo: *mut DEVICE_OBJECT,
        vpb: *mut VPB,
        target: *mut DEVICE_OBJECT,
    ) -> Result<Option<(crate::ids::DeviceId, u64)>, Status> {
        let vdo_id = self.objects.device_id(vdo).ok_or(Status::INVALID_PARAMETER)?;
        // SAFETY: the VPB the I/O manager passed.
        let real = unsafe { (*vpb).RealDevice };
        let real_id = self.objects.device_id(real);
        let volume: VolumeId = real_id
            .and_then(|r| self.objects.device(r).volume)
            .ok_or(Status::UNRECOGNIZED_VOLUME)?;
        let mount = self.fs.mounts.len() as u32;
        let t = self.objects.dobj(self.objects.device_id(target).ok_or(Status::INVALID_PARAMETER)?);
        let (stack, sector) = (t.StackSize, t.SectorSize);
        let d = self.objects.dobj(vdo_id);
        d.StackSize = stack.saturating_add(1);
        d.SectorSize = sector;
        let late = self.volumes.list[volume.index()].vdo_initializing_ms;
        if late.is_none() {
            d.Flags &= !do_flags::DEVICE_INITIALIZING;
        }
        super::set_dev_ext(
            vdo,
            DevExt {
                magic: DEV_EXT_MAGIC,
                ty: ty as u8,
                role: Role::Volume as u8,
                spare: 0,
                mount,
            },
        );
        let info = self.objects.device_mut(vdo_id);
        info.role = crate::objects::DeviceRole::FsVolume;
        info.volume = Some(volume);
        info.vpb = vpb;
        info.initialized_by_worker = late.is_some();
        let media = &self.volumes.list[volume.index()].media;
        let label: Vec<u16> = media.label.encode_utf16().take(32).collect();
        // SAFETY: the VPB the I/O manager passed, ours to fill during the mount.
        let v = unsafe { crate::mem::obj(vpb) };
        // `VPB_MOUNTED` is the I/O manager's to set, once the request is back (`after_mount`):
        // Microsoft's FastFat and NTFS set only `Vpb->DeviceObject` (docs/simulator.md).
        v.DeviceObject = vdo;
        v.SerialNumber = media.serial;
        v.VolumeLabelLength = (label.len() * 2) as u16;
        v.VolumeLabel[..label.len()].copy_from_slice(&label);
        self.volumes.list[volume.index()].vdo = Some(vdo_id);
        self.fs.mounts.push(Mount {
            ty,
            volume,
            vdo: vdo_id,
            vpb,
            real: real_id,
            target,
            state: MountState::Mounted,
            open_files: 0,
            locked_by: None,
            fcbs_by_node: FastMap::default(),
            volume_fcb: 0,
            share: None,
        });
        let vfcb = self.fcb_for(mount, VOLUME_NODE);
        self.fs.mounts[mount as usize].volume_fcb = vfcb;
        Ok(late.map(|ms| (vdo_id, ms)))
    }

    /// The file system's worker clears `DO_DEVICE_INITIALIZING` on a volume device it left
    /// initializing after the mount ([`crate::volumes::VolumeSpec::initialize_late`]), unless the
    /// device is gone already (a dismount in between).
    fn volume_device_initialized(&mut self, vdo: crate::ids::DeviceId) {
        let info = self.objects.device_mut(vdo);
        info.initialized_by_worker = false;
        if info.deleted {
            return;
        }
        let (driver, volume) = (info.driver, info.volume);
        self.objects.dobj(vdo).Flags &= !do_flags::DEVICE_INITIALIZING;
        let volume = volume.map(|v| self.volume_display_name(v));
        self.log(EventKind::System {
            what: "volume_device_initialized",
            driver: Some(self.objects.driver(driver).service.clone()),
            volume,
            detail: "the file system's worker cleared DO_DEVICE_INITIALIZING on the volume device"
                .into(),
        });
    }

    /// Makes a volume of a namespace file system (a share, the pipe or mailslot namespace)
    /// available on the file system's device.
    pub fn namespace_mount(&mut self, volume: VolumeId) -> Result<(), Status> {
        let vol = &self.volumes.list[volume.index()];
        let ty = FsType::of(vol.fs);
        let share = vol.share.as_ref().map(|s| s.to_uppercase());
        let device = self.namespace_device(ty).ok_or(Status::NO_SUCH_DEVICE)?;
        if self.fs.mounts.iter().any(|m| m.volume == volume && m.state == MountState::Mounted) {
            return Ok(());
        }
        let mount = self.fs.mounts.len() as u32;
        self.fs.mounts.push(Mount {
            ty,
            volume,
            vdo: device,
            vpb: null_mut(),
            real: None,
            target: null_mut(),
            state: MountState::Mounted,
            open_files: 0,
            locked_by: None,
            fcbs_by_node: FastMap::default(),
            volume_fcb: 0,
            share,
        });
        let vfcb = self.fcb_for(mount, VOLUME_NODE);
        self.fs.mounts[mount as usize].volume_fcb = vfcb;
        self.volumes.list[volume.index()].vdo = Some(device);
        let info = self.objects.device_mut(device);
        if info.volume.is_none() {
            info.volume = Some(volume);
        }
        Ok(())
    }

    fn fs_user_fsctl(&mut self, call: Call, fo: *mut FILE_OBJECT, code: u32) -> Status {
        let Some(fcb) = self.fcb_of(fo) else {
            return if call.ext.role == Role::Namespace as u8 {
                Status::INVALID_DEVICE_REQUEST
            } else {
                Status::INVALID_PARAMETER
            };
        };
        let (mount, volume_open) = (fcb.mount, fcb.node == VOLUME_NODE);
        let m = &self.fs.mounts[mount as usize];
        let volume_code =
            matches!(code, fsctl::LOCK_VOLUME | fsctl::UNLOCK_VOLUME | fsctl::DISMOUNT_VOLUME);
        if volume_code && m.ty.is_namespace() {
            return Status::INVALID_DEVICE_REQUEST;
        }
        if m.state != MountState::Mounted && code != fsctl::UNLOCK_VOLUME {
            return Status::VOLUME_DISMOUNTED;
        }
        if volume_code && !volume_open {
            return Status::INVALID_PARAMETER;
        }
        let fo = fo as usize;
        match code {
            fsctl::LOCK_VOLUME => {
                if m.locked_by.is_some() || m.open_files > 1 {
                    return Status::ACCESS_DENIED;
                }
                let m = &mut self.fs.mounts[mount as usize];
                m.locked_by = Some(fo);
                // SAFETY: the mount's VPB.
                unsafe { (*m.vpb).Flags |= vpbf::LOCKED };
                Status::SUCCESS
            }
            fsctl::UNLOCK_VOLUME => {
                if m.locked_by != Some(fo) {
                    return Status::NOT_LOCKED;
                }
                self.unlock_volume(mount);
                Status::SUCCESS
            }
            fsctl::DISMOUNT_VOLUME => {
                self.fs_dismount(mount);
                self.volume_dismounted(mount);
                Status::SUCCESS
            }
            fsctl::IS_VOLUME_MOUNTED => Status::SUCCESS,
            _ => Status::INVALID_DEVICE_REQUEST,
        }
    }

    fn unlock_volume(&mut self, mount: u32) {
        let m = &mut self.fs.mounts[mount as usize];
        m.locked_by = None;
        if !m.vpb.is_null() {
            // SAFETY: the mount's VPB.
            unsafe { (*m.vpb).Flags &= !vpbf::LOCKED };
        }
    }

    /// Dismounts: the volume stops serving (except cleanup and close) and the real device gets a
    /// fresh VPB, so the next open mounts again; the volume device lives until its last file
    /// closes.
    fn fs_dismount(&mut self, mount: u32) {
        let m = &mut self.fs.mounts[mount as usize];
        m.state = MountState::Dismounted;
        let (real, vpb, volume, vdo) = (m.real, m.vpb, m.volume, m.vdo);
        if let Some(real) = real {
            let rptr = self.objects.device(real).ptr;
            let fresh = self.new_vpb(rptr);
            self.objects.dobj(real).Vpb = fresh;
        }
        if !vpb.is_null() {
            // SAFETY: the mount's VPB.
            unsafe { (*vpb).Flags &= !vpbf::MOUNTED };
        }
        let vol = &mut self.volumes.list[volume.index()];
        if vol.vdo == Some(vdo) {
            vol.vdo = None;
        }
        let name = self.volume_display_name(volume);
        self.log(EventKind::Dismounted { volume: name });
    }

    /// The file system's cleanup; returns the lock requests granted (they waited for a lock of
    /// this handle), the handle's own waiting lock requests, given up, and the work its oplock's
    /// end leaves.
    fn fs_cleanup(&mut self, fo: *mut FILE_OBJECT) -> (Vec<usize>, Vec<usize>, OplockWork) {
        if fo.is_null() {
            return (Vec::new(), Vec::new(), Vec::new());
        }
        // SAFETY: the request's live file object.
        let file = unsafe { irpx::file(fo) };
        file.Flags |= fo::CLEANUP_COMPLETE;
        let (fcb_ptr, ccb_ptr) = (file.FsContext as usize, file.FsContext2 as usize);
        let Some(ccb) = self.fs.ccbs.get_mut(&ccb_ptr) else {
            return (Vec::new(), Vec::new(), Vec::new());
        };
        if ccb.cleaned {
            return (Vec::new(), Vec::new(), Vec::new());
        }
        ccb.cleaned = true;
        let (share, delete_on_close) = (ccb.share, ccb.delete_on_close);
        self.handle_cleaned(ccb_ptr);
        let dropped = self.drop_waiting_locks(fcb_ptr, fo as usize);
        // FsRtlOplockCleanup: the handle's oplock ends.
        let mut oplock = Vec::new();
        if !self.fs.oplocks.is_empty() {
            self.oplock_cleanup(fcb_ptr, fo as usize, &mut oplock);
        }
        let Some(fcb) = self.fs.fcbs.get_mut(&fcb_ptr) else {
            return (Vec::new(), dropped, oplock);
        };
        fcb.share.remove(share);
        fcb.handles = fcb.handles.saturating_sub(1);
        fcb.locks.retain(|l| l.fo != fo as usize);
        if delete_on_close {
            fcb.delete_pending = true;
        }
        let (mount, node, last) = (fcb.mount, fcb.node, fcb.handles == 0);
        // A named stream its file's overwrite doomed goes at its last cleanup (`super::streams`).
        let delete = last && (fcb.delete_pending || self.doomed_stream(mount, node));
        if let Some(filter) = notify::modification(file.Flags).filter(|_| node != VOLUME_NODE) {
            self.report_change(mount, node, notify::action::MODIFIED, filter);
        }
        // A file whose named streams are still open waits for them (`super::streams`).
        if delete && node != VOLUME_NODE && !self.defer_file_delete(mount, node) {
            let vidx = self.fs.mounts[mount as usize].volume.index();
            let media = &self.volumes.list[vidx].media;
            if media.node(node).live && (!media.node(node).is_dir() || media.is_empty_dir(node)) {
                let is_dir = media.node(node).is_dir();
                self.report_change(mount, node, notify::action::REMOVED, name_change(is_dir));
                if is_dir {
                    self.watched_dir_deleted(mount, node);
                }
                self.volumes.list[vidx].media.remove(node);
            }
            if let Some(f) = self.fs.fcbs.get_mut(&fcb_ptr) {
                f.delete_pending = false;
            }
        }
        self.finish_deferred_delete(mount, node);
        if self.fs.mounts[mount as usize].locked_by == Some(fo as usize) {
            self.unlock_volume(mount);
        }
        (self.grant_waiting_locks(fcb_ptr), dropped, oplock)
    }

    /// Returns the mount to tear down when this close was a dismounted volume's last.
    fn fs_close(&mut self, fo: *mut FILE_OBJECT) -> Option<u32> {
        if fo.is_null() {
            return None;
        }
        // SAFETY: the request's live file object.
        let file = unsafe { irpx::file(fo) };
        let (fcb_ptr, ccb_ptr) = (file.FsContext as usize, file.FsContext2 as usize);
        let vpb = file.Vpb;
        self.retire_ccb(ccb_ptr);
        let mount = match self.fs.fcbs.get_mut(&fcb_ptr) {
            Some(fcb) => {
                fcb.refs = fcb.refs.saturating_sub(1);
                let (mount, node, last) = (fcb.mount, fcb.node, fcb.refs == 0);
                if last && node != VOLUME_NODE {
                    self.retire_fcb(fcb_ptr);
                }
                let m = &mut self.fs.mounts[mount as usize];
                m.open_files = m.open_files.saturating_sub(1);
                mount
            }
            // A file object this file system never opened (a filter completed its create): its
            // close still comes down to the volume device it names through its VPB.
            None if !vpb.is_null() => self.fs.mounts.iter().position(|m| m.vpb == vpb)? as u32,
            None => return None,
        };
        let m = &mut self.fs.mounts[mount as usize];
        // The I/O manager's references on the VPB count too, as a file system's dismount check
        // reads the VPB's ReferenceCount: every file object opened through the volume holds one
        // (the closing one's goes after this close completes), whether or not the file system
        // saw its create. Deleting the device before would send a later close to a deleted device.
        // SAFETY: the mount's VPB (VPBs live as long as the machine).
        let vpb_refs = if m.vpb.is_null() { 0 } else { unsafe { (*m.vpb).ReferenceCount } };
        if m.state == MountState::Dismounted && m.open_files == 0 && vpb_refs <= 1 {
            m.state = MountState::Gone;
            return Some(mount);
        }
        None
    }
}
