//! The file-system recognizer, `\FileSystem\Fs_Rec` (facts.md §1.4): a system-start driver whose
//! control devices stand for file systems that are not loaded yet. A recognizer that finds its
//! file system's signature answers the mount with `STATUS_FS_DRIVER_REQUIRED`; the I/O manager
//! then sends it `IRP_MN_LOAD_FILE_SYSTEM`, it loads the real driver (which registers its own
//! control devices), unregisters itself, and the I/O manager retries the mount.

use fsfilter::{Status, device_type};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use super::control::{probe, read_media, recognize};
use super::{DEV_EXT_MAGIC, DevExt, FsType, Role, create_named_device, dev_ext};
use crate::ids::DeviceId;
use crate::irpx;
use crate::kernel;
use crate::loader::{ServiceSpec, StartType};
use crate::nt::{mj, mn_fsctl};

/// The recognizer's service name.
pub const SERVICE: &str = "Fs_Rec";

/// A recognizer's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecognizerState {
    /// Recognizes its file system's volumes.
    Active,
    /// Its file system is loaded; it no longer answers.
    Loaded,
    /// Loading its file system failed; it no longer answers.
    Failed,
}

/// One recognizer control device.
#[derive(Clone, Copy, Debug)]
pub struct Recognizer {
    /// Its device.
    pub device: DeviceId,
    /// The file system it loads.
    pub loads: FsType,
    /// Its state.
    pub state: RecognizerState,
}

/// The recognizers Fs_Rec creates: (name, device type, file system).
const RECOGNIZERS: [(&str, u32, FsType); 7] = [
    (r"\FileSystem\CdfsRecognizer", device_type::CD_ROM_FILE_SYSTEM, FsType::Cdfs),
    (r"\FileSystem\UdfsCdRomRecognizer", device_type::CD_ROM_FILE_SYSTEM, FsType::Udfs),
    (r"\FileSystem\UdfsDiskRecognizer", device_type::DISK_FILE_SYSTEM, FsType::Udfs),
    (r"\FileSystem\FatCdRomRecognizer", device_type::CD_ROM_FILE_SYSTEM, FsType::Fat),
    (r"\FileSystem\FatDiskRecognizer", device_type::DISK_FILE_SYSTEM, FsType::Fat),
    (r"\FileSystem\ExFatRecognizer", device_type::DISK_FILE_SYSTEM, FsType::Exfat),
    (r"\FileSystem\ReFsRecognizer", device_type::DISK_FILE_SYSTEM, FsType::Refs),
];

/// Fs_Rec's service: system start, group "Boot File System".
pub fn service_spec() -> ServiceSpec {
    let mut spec = ServiceSpec::new(SERVICE, fsrec_entry, "native");
    spec.start = StartType::System;
    spec.group = Some("Boot File System".to_owned());
    spec.native = true;
    spec
}

/// Fs_Rec's `DriverEntry`: one registered control device per recognizable file system.
///
/// # Safety
/// Called by the loader.
pub unsafe extern "system" fn fsrec_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our own driver object during DriverEntry.
    let d = unsafe { crate::mem::obj(driver) };
    for major in [mj::CREATE, mj::CLEANUP, mj::CLOSE, mj::FILE_SYSTEM_CONTROL] {
        d.MajorFunction[usize::from(major)] = Some(fsrec_dispatch);
    }
    let mut created = Vec::new();
    for (name, dtype, loads) in RECOGNIZERS {
        let ext = DevExt {
            magic: DEV_EXT_MAGIC,
            ty: loads as u8,
            role: Role::Recognizer as u8,
            spare: 0,
            mount: u32::MAX,
        };
        match create_named_device(driver, name, dtype, 0, ext) {
            Ok(dev) => created.push((dev, loads)),
            Err(s) => return s.0,
        }
    }
    kernel::with(|k| {
        for &(dev, loads) in &created {
            if let Some(id) = k.objects.device_id(dev) {
                k.fs.recognizers.push(Recognizer {
                    device: id,
                    loads,
                    state: RecognizerState::Active,
                });
            }
        }
    });
    for (dev, _) in created {
        // SAFETY: our control device.
        unsafe { crate::exports::io::IoRegisterFileSystem(dev) };
    }
    Status::SUCCESS.0
}

fn recognizer_state(device: *const DEVICE_OBJECT) -> Option<RecognizerState> {
    kernel::with(|k| {
        let id = k.objects.device_id(device)?;
        k.fs.recognizers.iter().find(|r| r.device == id).map(|r| r.state)
    })
}

/// Fs_Rec's dispatch routine.
///
/// # Safety
/// Called by the I/O manager with one of our devices and a live IRP.
unsafe extern "system" fn fsrec_dispatch(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the live IRP in our dispatch routine.
    let sl = unsafe { irpx::current(irp) };
    let (major, minor) = (sl.MajorFunction, sl.MinorFunction);
    let loads = dev_ext(device).and_then(|e| FsType::from_u8(e.ty));
    let (status, info) = match (major, minor, loads) {
        (mj::CREATE, _, _) => (Status::SUCCESS, crate::nt::create_result::OPENED),
        (mj::CLEANUP | mj::CLOSE, _, _) => (Status::SUCCESS, 0),
        (mj::FILE_SYSTEM_CONTROL, mn_fsctl::MOUNT_VOLUME, Some(ty)) => {
            (recognize_volume(device, sl, ty), 0)
        }
        (mj::FILE_SYSTEM_CONTROL, mn_fsctl::LOAD_FILE_SYSTEM, Some(ty)) => (load(ty), 0),
        _ => (Status::INVALID_DEVICE_REQUEST, 0),
    };
    // SAFETY: the live IRP, completed once.
    unsafe { irpx::complete(irp, status, info) }
}

fn recognize_volume(
    device: *const DEVICE_OBJECT,
    sl: &windows_sys::Wdk::Foundation::IO_STACK_LOCATION,
    ty: FsType,
) -> Status {
    if recognizer_state(device) != Some(RecognizerState::Active) {
        return Status::UNRECOGNIZED_VOLUME;
    }
    // SAFETY: `MountVolume` is the member in use for a mount request.
    let target = unsafe { sl.Parameters.MountVolume.DeviceObject };
    let Some((offset, len)) = probe(ty) else { return Status::UNRECOGNIZED_VOLUME };
    match read_media(target, offset, len) {
        Ok(bytes) if recognize(ty, &bytes) => Status::FS_DRIVER_REQUIRED,
        _ => Status::UNRECOGNIZED_VOLUME,
    }
}

/// `IRP_MN_LOAD_FILE_SYSTEM`: loads the file system (`ZwLoadDriver`), then takes every
/// recognizer of it out of the file-system queue.
fn load(ty: FsType) -> Status {
    let service = ty.desc().service;
    let s = crate::loader::load_service(service);
    let ok = s.is_success() || s == Status::IMAGE_ALREADY_LOADED;
    let devices: Vec<*mut DEVICE_OBJECT> = kernel::with(|k| {
        let mut out = Vec::new();
        for r in k.fs.recognizers.iter_mut().filter(|r| r.loads == ty) {
            r.state = if ok {
                crate::fs::fsrec::RecognizerState::Loaded
            } else {
                RecognizerState::Failed
            };
            out.push(r.device);
        }
        out.into_iter().map(|d| k.objects.device(d).ptr).collect()
    });
    if ok {
        for dev in devices {
            // SAFETY: our registered control device.
            unsafe { crate::exports::io::IoUnregisterFileSystem(dev) };
            let alone = kernel::with(|k| {
                k.objects.device_id(dev).is_some_and(|d| k.objects.above(d).is_none())
            });
            if alone {
                // SAFETY: our device, nothing attached above it.
                unsafe { crate::exports::io::IoDeleteDevice(dev) };
            }
        }
    }
    if ok { Status::SUCCESS } else { s }
}
