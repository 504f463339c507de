//! Frames (facts.md §2.2): the Filter Manager's devices in control-device and volume stacks.
//!
//! Each frame registers its own `IoRegisterFsRegistrationChange` routine when it is created, so
//! a file system that registers later sees the frames and legacy filters attach in the order
//! they registered, as legacy filters do among themselves (§1.1, §1.3). On a mount, each frame's
//! control-device filter waits for the mount to complete (the sfilter pattern, §1.4) and attaches
//! its volume device, so volume stacks mirror control-device stacks; then the frame sets up the
//! instances of its started filters. A minifilter's frame is chosen from where legacy filters sit
//! relative to the existing frames in every stack the Filter Manager is in.

use std::ffi::c_void;

use fsfilter::{Altitude, InstanceSetupFlags, LoadOrderGroup, Status, TeardownFlags};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP, KEVENT};
use windows_sys::Win32::Foundation::NTSTATUS;

use super::{
    CdoRec, DevKind, EXT_MAGIC, FilterId, FilterState, FltExt, Frame, FvId, InstanceDef, MAX_FRAMES,
};
use crate::events::FltEvent;
use crate::fsreg::FsNotification;
use crate::ids::{DeviceId, DriverId};
use crate::kernel::{self, Kernel};
use fsfilter_kernel::constants::do_flags;

/// The notification routine of frame `F`.
///
/// # Safety
/// Called by the I/O manager with a control device and the activity flag.
unsafe extern "system" fn frame_notify<const F: u32>(cdo: *const DEVICE_OBJECT, active: bool) {
    if active {
        fs_arrived(F, cdo.cast_mut());
    } else {
        fs_left(F, cdo.cast_mut());
    }
}

const ROUTINES: [FsNotification; MAX_FRAMES as usize] = [
    frame_notify::<0>,
    frame_notify::<1>,
    frame_notify::<2>,
    frame_notify::<3>,
    frame_notify::<4>,
    frame_notify::<5>,
    frame_notify::<6>,
    frame_notify::<7>,
];

/// Registers frame `frame`'s notification routine (the I/O manager calls it at once for every
/// file system registered already).
pub(crate) fn register_frame_notification(driver: *const DRIVER_OBJECT, frame: u32) -> Status {
    let Some(routine) = ROUTINES.get(frame as usize).copied() else {
        return Status::INSUFFICIENT_RESOURCES;
    };
    // SAFETY: our driver object and one of our routines.
    Status(super::as_fltmgr(|| unsafe {
        crate::exports::io::IoRegisterFsRegistrationChange(driver, Some(routine))
    }))
}

/// The Filter Manager's device of `frame` in the chain above `bottom`, if any.
pub fn frame_device_in_chain(k: &Kernel, bottom: DeviceId, frame: u32) -> Option<DeviceId> {
    let fm = k.fltmgr.driver?;
    let mut cur = Some(bottom);
    while let Some(d) = cur {
        if k.objects.device(d).driver == fm && !k.objects.device(d).deleted {
            // SAFETY: a device of the Filter Manager, created with an FltExt.
            let ext = unsafe { *k.objects.dobj(d).DeviceExtension.cast::<FltExt>() };
            if ext.magic == EXT_MAGIC && ext.frame == frame && ext.kind != DevKind::Control as u8 {
                return Some(d);
            }
        }
        cur = k.objects.above(d);
    }
    None
}

/// How many times a frame tries to attach to a new volume whose device is still initializing,
/// and how long it waits between tries: sfilter's pattern (facts.md §1.5, 8 tries); the real
/// Filter Manager's numbers are not documented (docs/simulator.md, "Frames").
pub(crate) const MOUNT_ATTACH_TRIES: u32 = 8;
/// The wait between two of those tries, in milliseconds.
pub(crate) const MOUNT_ATTACH_DELAY_MS: u64 = 500;

/// True when the top of `target`'s stack still has `DO_DEVICE_INITIALIZING` set.
fn top_initializing(target: *mut DEVICE_OBJECT) -> bool {
    kernel::with(|k| {
        let Some(id) = k.objects.device_id(target) else { return false };
        let top = k.objects.top(id);
        k.objects.dobj(top).Flags & crate::objects::DO_DEVICE_INITIALIZING != 0
    })
}

/// Creates a frame device and attaches it on top of `target`'s stack (facts.md §1.2: unnamed,
/// the target's type, buffering flags copied before attaching, initializing flag cleared). An
/// attach refused because the top of the stack is still initializing is tried again, up to
/// `tries` times in all, [`MOUNT_ATTACH_DELAY_MS`] apart (facts.md §1.5); any other refusal, or
/// the last one, gives up.
pub(crate) fn attach_frame_device(
    frame: u32,
    target: *mut DEVICE_OBJECT,
    kind: DevKind,
    volume: u32,
    tries: u32,
) -> Option<*mut DEVICE_OBJECT> {
    let driver = kernel::with(|k| k.fltmgr.driver.map(|d| k.objects.driver(d).ptr))?;
    super::as_fltmgr(|| {
        let mut dev: *mut DEVICE_OBJECT = std::ptr::null_mut();
        // SAFETY: the target is a live device of the machine.
        let t = unsafe { &*target };
        let (dtype, flags, chars) = (t.DeviceType, t.Flags, t.Characteristics);
        // SAFETY: our driver object; an unnamed device with an FltExt.
        let s = unsafe {
            crate::exports::io::IoCreateDevice(
                driver,
                size_of::<FltExt>() as u32,
                std::ptr::null(),
                dtype,
                chars & fsfilter_kernel::constants::characteristics::DEVICE_SECURE_OPEN,
                false,
                &mut dev,
            )
        };
        if s < 0 || dev.is_null() {
            return None;
        }
        let copy = do_flags::BUFFERED_IO | do_flags::DIRECT_IO | do_flags::SUPPORTS_TRANSACTIONS;
        // SAFETY: the device we just created.
        unsafe { (*dev).Flags |= flags & copy };
        let mut lower: *mut DEVICE_OBJECT = std::ptr::null_mut();
        let mut tried = 0;
        let s = loop {
            // SAFETY: two live devices and an out pointer.
            let s = unsafe {
                crate::exports::io::IoAttachDeviceToDeviceStackSafe(dev, target, &mut lower)
            };
            tried += 1;
            if s >= 0 || tried >= tries || !top_initializing(target) {
                break s;
            }
            let _ = crate::sched::delay(-((MOUNT_ATTACH_DELAY_MS * 10_000) as i64));
        };
        if s < 0 {
            // SAFETY: our device, never attached.
            unsafe { crate::exports::io::IoDeleteDevice(dev) };
            return None;
        }
        // SAFETY: the device we created, alive until we delete it.
        let d = unsafe { &mut *dev };
        let ext = FltExt { magic: EXT_MAGIC, kind: kind as u8, frame, volume, lower };
        // SAFETY: our device's FltExt-sized extension.
        unsafe { d.DeviceExtension.cast::<FltExt>().write(ext) };
        d.Flags &= !crate::objects::DO_DEVICE_INITIALIZING;
        Some(dev)
    })
}

/// Detaches and deletes one of our devices.
fn detach_and_delete(dev: *mut DEVICE_OBJECT, lower: *mut DEVICE_OBJECT) {
    super::as_fltmgr(|| {
        // SAFETY: our device attached to `lower`.
        unsafe { crate::exports::io::IoDetachDevice(lower) };
        // SAFETY: our device.
        unsafe { crate::exports::io::IoDeleteDevice(dev) };
    });
}

/// True for the recognizer's control devices, which the Filter Manager skips (as sfilter does,
/// facts.md §1.2; the real file system registers once loaded).
fn is_recognizer(k: &Kernel, cdo: DeviceId) -> bool {
    let driver = k.objects.device(cdo).driver;
    k.objects.driver(driver).service.eq_ignore_ascii_case(crate::fs::fsrec::SERVICE)
}

/// The volume device a namespace file system's device is (MUP): the control device is the
/// volume.
fn is_namespace(cdo: *mut DEVICE_OBJECT) -> bool {
    crate::fs::dev_ext(cdo).is_some_and(|e| e.role == crate::fs::Role::Namespace as u8)
}

fn fs_arrived(frame: u32, cdo: *mut DEVICE_OBJECT) {
    let target = kernel::with(|k| {
        let id = k.objects.device_id(cdo)?;
        if is_recognizer(k, id) || frame_device_in_chain(k, id, frame).is_some() {
            return None;
        }
        Some(id)
    });
    let Some(cdo_id) = target else { return };
    if is_namespace(cdo) {
        let v = volume_record(cdo_id);
        if let Some(dev) = attach_frame_device(frame, cdo, DevKind::Volume, v.0, 1) {
            let new_volume = kernel::with(|k| {
                let d = k.objects.device_id(dev)?;
                let rec = k.fltmgr.vol_mut(v);
                let first = rec.frames.is_empty();
                rec.frames.push((frame, d));
                Some(first)
            });
            if new_volume == Some(true) || new_volume == Some(false) {
                let flags = InstanceSetupFlags::AUTOMATIC_ATTACHMENT.bits()
                    | InstanceSetupFlags::NEWLY_MOUNTED_VOLUME.bits();
                setup_frame_filters(frame, v, flags);
            }
        }
        return;
    }
    if let Some(dev) = attach_frame_device(frame, cdo, DevKind::Cdo, u32::MAX, 1) {
        kernel::with(|k| {
            let Some(d) = k.objects.device_id(dev) else { return };
            match k.fltmgr.cdos.iter_mut().find(|c| c.cdo == cdo_id) {
                Some(c) => c.frames.push((frame, d)),
                None => k.fltmgr.cdos.push(CdoRec { cdo: cdo_id, frames: vec![(frame, d)] }),
            }
        });
    }
}

fn fs_left(frame: u32, cdo: *mut DEVICE_OBJECT) {
    let found = kernel::with(|k| {
        let id = k.objects.device_id(cdo)?;
        let dev = frame_device_in_chain(k, id, frame)?;
        if let Some(c) = k.fltmgr.cdos.iter_mut().find(|c| c.cdo == id) {
            c.frames.retain(|(_, d)| *d != dev);
        }
        let v = k.fltmgr.volume_by_bottom(id);
        if let Some(v) = v {
            k.fltmgr.vol_mut(v).frames.retain(|(_, d)| *d != dev);
        }
        Some((k.objects.device(dev).ptr, v))
    });
    let Some((dev, v)) = found else { return };
    if let Some(v) = v {
        super::instances::teardown_volume(v, Some(frame), TeardownFlags::VOLUME_DISMOUNT.bits());
    }
    if let Some(ext) = super::ext_of(dev) {
        detach_and_delete(dev, ext.lower);
    }
}

/// The volume record of a bottom device, created if needed.
pub fn volume_record(bottom: DeviceId) -> FvId {
    kernel::with(|k| {
        if let Some(v) = k.fltmgr.volume_by_bottom(bottom) {
            return v;
        }
        let dev = k.objects.dobj(bottom);
        let fs = crate::fs::dev_ext(dev).and_then(|e| crate::fs::FsType::from_u8(e.ty));
        let device_type = dev.DeviceType;
        // The name fltmc shows: the real device's for mounted volumes, the device's own for
        // the namespace file systems.
        let vpb = k.objects.device(bottom).vpb;
        // SAFETY: the VPB the volume device mounted through (VPBs live as long as the machine).
        let real = unsafe { vpb.as_ref() }.map(|v| v.RealDevice);
        let name = real
            .and_then(|r| k.objects.device_id(r))
            .and_then(|r| k.objects.device(r).name.clone())
            .or_else(|| k.objects.device(bottom).name.clone())
            .unwrap_or_default();
        k.fltmgr.add_volume(bottom, name, fs, device_type)
    })
}

/// The frame devices of `frame` in a control device stack's mount path: called from the
/// Filter Manager's dispatch routine for `IRP_MN_MOUNT_VOLUME` on a control device. Waits for
/// the mount below to finish (facts.md §1.4), then attaches to the new volume device and sets
/// up the frame's instances there.
pub(crate) fn mount(device: *const DEVICE_OBJECT, irp: *mut IRP, ext: FltExt) -> NTSTATUS {
    // SAFETY: our dispatch routine's live IRP.
    let sl = unsafe { crate::irpx::current(irp) };
    // SAFETY: the mount request's parameters.
    let vpb = unsafe { sl.Parameters.MountVolume.Vpb };
    // SAFETY: the VPB the I/O manager passed is live.
    let real = unsafe { (*vpb).RealDevice };
    // SAFETY: all-zero is a valid KEVENT before initialization.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: our event storage.
    unsafe { crate::sched::initialize_event(&mut *event, 0, false) };
    // SAFETY: the live IRP in our dispatch routine, with a lower location.
    unsafe { fsfilter_kernel::irp::IoCopyCurrentIrpStackLocationToNext(irp) };
    let ev = (&raw mut *event).cast();
    // SAFETY: as above; our routine and event, alive until the routine ran.
    unsafe { fsfilter_kernel::irp::IoSetCompletionRoutine(irp, mount_done, ev, true, true, true) };
    let s = crate::irp::call_driver(ext.lower, irp);
    if s == Status::PENDING.0 {
        // SAFETY: our event, alive during the wait.
        let w = unsafe { crate::sched::wait_for_event(&mut *event, None) };
        if w != Status::SUCCESS.0 {
            std::mem::forget(event);
            return Status::PENDING.0;
        }
    }
    // SAFETY: the IRP is ours again (our routine stopped its completion).
    let iosb = unsafe { (*irp).IoStatus };
    // SAFETY: the status member.
    let status = unsafe { iosb.Anonymous.Status };
    if status >= 0 && !real.is_null() {
        // SAFETY: the real device (re-read its VPB: the file system may have revived another
        // one, §1.4 step 4).
        let now = unsafe { (*real).Vpb };
        // SAFETY: its current VPB (VPBs live as long as the machine).
        let vdo = unsafe { (*now).DeviceObject };
        if !vdo.is_null() {
            frame_mounted(ext.frame, vdo);
        }
    }
    let _ = device;
    crate::irp::complete_request(irp);
    status
}

unsafe extern "system" fn mount_done(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: the waiting dispatch routine's event.
    unsafe { crate::sched::set_event(context.cast()) };
    Status::MORE_PROCESSING_REQUIRED.0
}

/// A volume device appeared under frame `frame` (a mount completed): attach unless the frame is
/// there already (a revived volume, §1.4), then set up the frame's instances.
pub(crate) fn frame_mounted(frame: u32, vdo: *mut DEVICE_OBJECT) {
    let Some(vdo_id) = kernel::with(|k| k.objects.device_id(vdo)) else { return };
    let v = volume_record(vdo_id);
    let already = kernel::with(|k| frame_device_in_chain(k, vdo_id, frame).is_some());
    let flags = if already {
        kernel::with(|k| k.fltmgr.vol_mut(v).dismounted.retain(|f| *f != frame));
        InstanceSetupFlags::AUTOMATIC_ATTACHMENT.bits() | InstanceSetupFlags::DETACHED_VOLUME.bits()
    } else {
        let Some(dev) = attach_frame_device(frame, vdo, DevKind::Volume, v.0, MOUNT_ATTACH_TRIES)
        else {
            return;
        };
        kernel::with(|k| {
            if let Some(d) = k.objects.device_id(dev) {
                let rec = k.fltmgr.vol_mut(v);
                rec.frames.push((frame, d));
                rec.dismounted.retain(|f| *f != frame);
                rec.gone = false;
            }
        });
        InstanceSetupFlags::AUTOMATIC_ATTACHMENT.bits()
            | InstanceSetupFlags::NEWLY_MOUNTED_VOLUME.bits()
    };
    setup_frame_filters(frame, v, flags);
}

/// Sets up, on volume `v`, every automatic instance of the started filters of `frame`, lowest
/// altitude first.
pub fn setup_frame_filters(frame: u32, v: FvId, flags: u32) {
    if !kernel::with(|k| k.fltmgr.vol(v).attachable(frame)) {
        return;
    }
    let todo: Vec<(FilterId, InstanceDef)> = kernel::with(|k| {
        let mut filters: Vec<FilterId> = (0..k.fltmgr.filters.len() as u32)
            .map(FilterId)
            .filter(|&f| {
                let r = k.fltmgr.filter(f);
                r.frame == frame && r.state == FilterState::Started
            })
            .collect();
        filters.sort_by_key(|f| k.fltmgr.filter(*f).altitude());
        filters.into_iter().flat_map(|f| super::instances::automatic_defs(k, f)).collect()
    });
    for (f, def) in todo {
        let _ = super::instances::setup_instance(f, v, &def, flags);
    }
}

/// Attaches frame `frame` to every volume stack already there that lacks it (a late load of the
/// Filter Manager, or a new frame): volumes the Filter Manager knows, and mounted disk and CD
/// volumes it has not seen yet. Dismounted volume devices are left alone.
pub fn attach_existing_volumes(frame: u32) {
    let targets: Vec<DeviceId> = kernel::with(|k| {
        let mut out: Vec<DeviceId> = k
            .fltmgr
            .volumes
            .iter()
            .filter(|v| !v.gone && v.live() && !v.frames.iter().any(|(f, _)| *f == frame))
            .map(|v| v.bottom)
            .collect();
        for (i, vol) in k.volumes.list.iter().enumerate() {
            let Some(vdo) = vol.vdo else { continue };
            if !vol.fs.uses_vpb()
                || !crate::mount::is_mounted(k, crate::ids::VolumeId(i as u32))
                || k.fltmgr.volume_by_bottom(vdo).is_some()
                || k.objects.device(vdo).deleted
            {
                continue;
            }
            if !out.contains(&vdo) {
                out.push(vdo);
            }
        }
        out
    });
    for bottom in targets {
        let v = volume_record(bottom);
        let top = kernel::with(|k| k.objects.device(k.objects.top(bottom)).ptr);
        if let Some(dev) = attach_frame_device(frame, top, DevKind::Volume, v.0, 1) {
            kernel::with(|k| {
                if let Some(d) = k.objects.device_id(dev) {
                    k.fltmgr.vol_mut(v).frames.push((frame, d));
                }
            });
        }
    }
}

/// Attaches frame `frame` to RAW's control devices by name. `IoRegisterFsRegistrationChange`
/// never reports RAW (facts.md §1.1), so the Filter Manager, a legacy filter, finds them as one
/// must (§1.2 step 6), and the volumes RAW mounts get the frame and its instances, whose setup
/// is told `FLT_FSTYPE_RAW` (docs/simulator.md, Filter Manager "Volumes").
pub(crate) fn attach_raw(frame: u32) {
    let names: Vec<(DeviceId, String)> = kernel::with(|k| {
        k.fsreg
            .raw
            .iter()
            .filter(|&&d| {
                !k.objects.device(d).deleted && frame_device_in_chain(k, d, frame).is_none()
            })
            .filter_map(|&d| k.objects.device(d).name.clone().map(|n| (d, n)))
            .collect()
    });
    for (cdo_id, name) in names {
        let _ = with_device_named(&name, |top| {
            let Some(dev) = attach_frame_device(frame, top, DevKind::Cdo, u32::MAX, 1) else {
                return;
            };
            kernel::with(|k| {
                let Some(d) = k.objects.device_id(dev) else { return };
                match k.fltmgr.cdos.iter_mut().find(|c| c.cdo == cdo_id) {
                    Some(c) => c.frames.push((frame, d)),
                    None => k.fltmgr.cdos.push(CdoRec { cdo: cdo_id, frames: vec![(frame, d)] }),
                }
            });
        });
    }
}

/// Opens the device named `name` as the Filter Manager (`IoGetDeviceObjectPointer`), runs `f`
/// with the top of its stack, then drops the file object's reference; None when the open failed.
fn with_device_named<R>(name: &str, f: impl FnOnce(*mut DEVICE_OBJECT) -> R) -> Option<R> {
    let units = crate::mem::wide(name);
    let us = crate::mem::unicode(&units);
    let mut fo = std::ptr::null_mut();
    let mut top = std::ptr::null_mut();
    // SAFETY: a valid name and out pointers; the reference is dropped below.
    let s = super::as_fltmgr(|| unsafe {
        crate::exports::io::IoGetDeviceObjectPointer(&us, 0, &mut fo, &mut top)
    });
    if s < 0 {
        return None;
    }
    let r = f(top);
    // SAFETY: the file object IoGetDeviceObjectPointer referenced.
    super::as_fltmgr(|| unsafe { crate::exports::ob::ObfDereferenceObject(fo.cast()) });
    Some(r)
}

/// Attaches the Filter Manager to the named-pipe and mailslot file systems by name (they do not
/// register, docs/simulator.md) if a started filter opted in (`SUPPORT_NPFS_MSFS`) and they are
/// loaded; returns the volumes attached now.
pub fn attach_npfs_msfs() -> Vec<FvId> {
    let wanted = kernel::with(|k| {
        if !k.fltmgr_loaded() {
            return Vec::new();
        }
        let opted = k.fltmgr.filters.iter().any(|f| {
            matches!(f.state, FilterState::Started | FilterState::Registered)
                && f.flags & super::reg_flags::SUPPORT_NPFS_MSFS != 0
        });
        if !opted {
            return Vec::new();
        }
        [crate::fs::FsType::Npfs, crate::fs::FsType::Msfs]
            .into_iter()
            .filter(|t| !k.fltmgr.npfs_msfs_attached.contains(t))
            .filter_map(|t| k.namespace_device(t).map(|d| (t, d)))
            .collect::<Vec<_>>()
    });
    let mut out = Vec::new();
    for (ty, device) in wanted {
        let name = if ty == crate::fs::FsType::Npfs {
            crate::fs::NPFS_DEVICE
        } else {
            crate::fs::MSFS_DEVICE
        };
        let attached = with_device_named(name, |_| {
            kernel::with(|k| k.fltmgr.npfs_msfs_attached.push(ty));
            let v = volume_record(device);
            let frames = kernel::with(|k| k.fltmgr.frames.len() as u32);
            for frame in 0..frames {
                let top = kernel::with(|k| k.objects.device(k.objects.top(device)).ptr);
                if let Some(dev) = attach_frame_device(frame, top, DevKind::Volume, v.0, 1) {
                    kernel::with(|k| {
                        if let Some(d) = k.objects.device_id(dev) {
                            k.fltmgr.vol_mut(v).frames.push((frame, d));
                        }
                    });
                }
            }
            v
        });
        out.extend(attached);
    }
    out
}

/// A service finished loading: when it is the pipe or mailslot file system and a started filter
/// opted in, the Filter Manager attaches and sets those filters' instances up there.
pub fn service_loaded(name: &str) {
    let relevant = name.eq_ignore_ascii_case(crate::fs::FsType::Npfs.desc().service)
        || name.eq_ignore_ascii_case(crate::fs::FsType::Msfs.desc().service);
    if !relevant || !kernel::with(|k| k.fltmgr_loaded()) {
        return;
    }
    let flags = InstanceSetupFlags::AUTOMATIC_ATTACHMENT.bits()
        | InstanceSetupFlags::NEWLY_MOUNTED_VOLUME.bits();
    for v in attach_npfs_msfs() {
        let frames = kernel::with(|k| k.fltmgr.frames.len() as u32);
        for frame in 0..frames {
            setup_frame_filters(frame, v, flags);
        }
    }
}

/// A device below one of ours was deleted (`FastIoDetachDevice`, facts.md §1.7): tear the frame's
/// instances on that volume down, then detach and delete our device.
pub(crate) fn lower_deleted(source: *const DEVICE_OBJECT, target: *const DEVICE_OBJECT) {
    let Some(ext) = super::ext_of(source) else { return };
    if ext.kind == DevKind::Volume as u8 {
        let v = FvId(ext.volume);
        super::instances::teardown_volume(
            v,
            Some(ext.frame),
            TeardownFlags::VOLUME_DISMOUNT.bits(),
        );
        kernel::with(|k| {
            let src = k.objects.device_id(source);
            let tgt = k.objects.device_id(target);
            let rec = k.fltmgr.vol_mut(v);
            rec.frames.retain(|(_, d)| Some(*d) != src);
            if tgt == Some(rec.bottom) || rec.frames.is_empty() {
                rec.gone = true;
            }
        });
    } else if ext.kind == DevKind::Cdo as u8 {
        kernel::with(|k| {
            let src = k.objects.device_id(source);
            for c in &mut k.fltmgr.cdos {
                c.frames.retain(|(_, d)| Some(*d) != src);
            }
        });
    }
    detach_and_delete(source.cast_mut(), target.cast_mut());
}

/// Where a new minifilter goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// An existing frame.
    Existing(u32),
    /// A new frame above the legacy filter named.
    New {
        /// The legacy filter it goes above.
        above: Option<String>,
        /// That legacy filter's altitude.
        ceiling: Option<Altitude>,
    },
}

/// The altitude the Filter Manager gives a legacy filter: its load-order group's upper bound
/// minus 0.01 (what `fltmc` shows, facts.md §8); None for a driver without a known group, which
/// loads after every grouped driver and counts as above every altitude.
pub fn legacy_altitude(k: &Kernel, driver: DriverId) -> Option<Altitude> {
    let si = k.service_of_driver(driver)?;
    let group = k.loader.services[si].spec.group.as_deref()?;
    let g = LoadOrderGroup::by_name(group)?;
    Altitude::parse(&g.legacy_display_altitude().to_string()).ok()
}

/// One layer of a stack, bottom up.
enum Layer {
    Frame(u32),
    Legacy(Option<Altitude>, String),
}

fn layers(k: &Kernel, bottom: DeviceId) -> Vec<Layer> {
    let fm = k.fltmgr.driver;
    let fs_driver = k.objects.device(bottom).driver;
    let mut out = Vec::new();
    let mut cur = k.objects.above(bottom);
    while let Some(d) = cur {
        let driver = k.objects.device(d).driver;
        if Some(driver) == fm {
            // SAFETY: a Filter Manager device with its FltExt.
            let ext = unsafe { *k.objects.dobj(d).DeviceExtension.cast::<FltExt>() };
            if ext.magic == EXT_MAGIC {
                out.push(Layer::Frame(ext.frame));
            }
        } else if driver != fs_driver {
            let name = k.objects.driver(driver).service.clone();
            out.push(Layer::Legacy(legacy_altitude(k, driver), name));
        }
        cur = k.objects.above(d);
    }
    out
}

/// Where the legacy filters sit relative to one frame, in every stack the Filter Manager is in.
struct Bounds {
    /// The highest legacy filter below the frame (None: none).
    floor: Option<Altitude>,
    /// The lowest legacy filter above it (None: none, or only filters of unknown altitude).
    ceiling: Option<Altitude>,
    /// That filter's name (or an unknown-altitude filter's).
    _ceiling_name: Option<String>,
    /// The highest legacy filter above it (its altitude, None when unknown, and its name).
    top: Option<(Option<Altitude>, String)>,
}

fn bounds(k: &Kernel) -> Vec<Bounds> {
    let n = k.fltmgr.frames.len();
    let mut floor: Vec<Option<Altitude>> = vec![None; n];
    let mut ceil: Vec<Option<(Altitude, String)>> = vec![None; n];
    let mut ceil_inf: Vec<Option<String>> = vec![None; n];
    let mut top: Vec<Option<(Option<Altitude>, String)>> = vec![None; n];
    let mut bottoms: Vec<DeviceId> = k.fltmgr.cdos.iter().map(|c| c.cdo).collect();
    bottoms.extend(k.fltmgr.volumes.iter().filter(|v| !v.gone).map(|v| v.bottom));
    for b in bottoms {
        let ls = layers(k, b);
        for (p, l) in ls.iter().enumerate() {
            let Layer::Legacy(alt, name) = l else { continue };
            for (q, other) in ls.iter().enumerate() {
                let Layer::Frame(f) = other else { continue };
                let f = *f as usize;
                if f >= n {
                    continue;
                }
                if q < p {
                    let higher = match (&top[f], alt) {
                        (None, _) => true,
                        (Some((None, _)), _) => false,
                        (Some((Some(_), _)), None) => true,
                        (Some((Some(t), _)), Some(a)) => a > t,
                    };
                    if higher {
                        top[f] = Some((*alt, name.clone()));
                    }
                    match alt {
                        Some(a) => {
                            if ceil[f].as_ref().is_none_or(|(c, _)| a < c) {
                                ceil[f] = Some((*a, name.clone()));
                            }
                        }
                        None => {
                            if ceil_inf[f].is_none() {
                                ceil_inf[f] = Some(name.clone());
                            }
                        }
                    }
                } else {
                    // A legacy filter below the frame; unknown altitude counts as above all.
                    let a = alt.unwrap_or(Altitude::from_integer(u32::MAX));
                    if floor[f].is_none_or(|c| a > c) {
                        floor[f] = Some(a);
                    }
                }
            }
        }
    }
    (0..n)
        .map(|f| {
            let (ceiling, ceiling_name) = match &ceil[f] {
                Some((a, name)) => (Some(*a), Some(name.clone())),
                None => (None, ceil_inf[f].clone()),
            };
            Bounds { floor: floor[f], ceiling, _ceiling_name: ceiling_name, top: top[f].clone() }
        })
        .collect()
}

/// Chooses the frame of a minifilter of altitude `a` (facts.md §2.2): a remembered frame for a
/// reloaded filter; else the lowest frame whose range between the legacy filters below and
/// above it holds `a`; else a new frame on top when `a` is above every legacy filter that sits
/// above the top frame (the new frame is then right); else the highest frame whose floor is
/// below `a` (no frame can be made between two legacy filters, so the minifilter lands below
/// the one it should be above).
pub fn place(k: &Kernel, name: &str, a: Altitude) -> Placement {
    let n = k.fltmgr.frames.len() as u32;
    if let Some(&f) = k.fltmgr.placements.get(&name.to_uppercase()) {
        if f < n {
            return Placement::Existing(f);
        }
    }
    let b = bounds(k);
    let fits = |f: usize| {
        let x = &b[f];
        x.floor.is_none_or(|lo| lo < a) && x.ceiling.is_none_or(|c| a < c)
    };
    if let Some(f) = (0..b.len()).find(|&f| fits(f)) {
        return Placement::Existing(f as u32);
    }
    let t = &b[b.len() - 1];
    if let (Some(c), Some((Some(highest), name))) = (t.ceiling, &t.top) {
        if a > *highest && n < MAX_FRAMES {
            return Placement::New { above: Some(name.clone()), ceiling: Some(c) };
        }
    }
    let f = (0..b.len()).rev().find(|&f| b[f].floor.is_none_or(|x| x < a)).unwrap_or(0);
    Placement::Existing(f as u32)
}

/// Creates frame number `frames.len()` above everything attached now: its notification
/// routine attaches it to every control device (and MUP), it attaches to RAW's by name, then
/// it attaches to every volume.
pub fn create_frame(above: Option<String>, ceiling: Option<Altitude>, a: Altitude) -> u32 {
    let (number, driver) = kernel::with(|k| {
        let number = k.fltmgr.frames.len() as u32;
        if let Some(prev) = k.fltmgr.frames.last_mut() {
            // The frame below grows up to the legacy filter (facts.md §2.2).
            if let Some(c) = ceiling {
                prev.hi = Some(c);
            }
        }
        k.fltmgr.frames.push(Frame { number, lo: Some(a), hi: Some(a), above: above.clone() });
        k.flt_log(
            None,
            None,
            FltEvent::FrameCreated { frame: number, above: above.clone(), altitude: a.to_string() },
        );
        (number, k.fltmgr.driver.map(|d| k.objects.driver(d).ptr))
    });
    if let Some(d) = driver {
        let _ = register_frame_notification(d, number);
    }
    attach_raw(number);
    attach_existing_volumes(number);
    number
}
