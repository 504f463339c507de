//! The storage driver: one device per disk or CD volume (`\Device\HarddiskVolumeN`,
//! `\Device\CdRomN`), each with the VPB `IoCreateDevice` gives disk and CD devices. It serves
//! reads of the raw media (where file systems and recognizers find their signatures) and a few
//! device controls.

use fsfilter::{Status, device_type};
use fsfilter_kernel::params;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use crate::ids::VolumeId;
use crate::irpx;
use crate::kernel::{self, Kernel};
use crate::loader::{ServiceSpec, StartType};
use crate::nt::{characteristics, do_flags, ioctl, mj};
use crate::volumes::MediaKind;

/// The storage driver's service name (`\Driver\Storage`).
pub const SERVICE: &str = "Storage";

/// Its service: a boot-start kernel driver in "SCSI Class".
pub fn service_spec() -> ServiceSpec {
    let mut spec = ServiceSpec::new(SERVICE, storage_entry, "native");
    spec.service_type = 1;
    spec.start = StartType::Boot;
    spec.group = Some("SCSI Class".to_owned());
    spec.native = true;
    spec
}

/// The extension of a storage device: its volume.
#[derive(Clone, Copy)]
#[repr(C)]
struct StorageExt {
    volume: u32,
}

/// `DriverEntry`: the dispatch table, then a device for every volume known now.
///
/// # Safety
/// Called by the loader.
unsafe extern "system" fn storage_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our own driver object during DriverEntry.
    let d = unsafe { crate::mem::obj(driver) };
    for major in [
        mj::CREATE,
        mj::CLOSE,
        mj::READ,
        mj::WRITE,
        mj::FLUSH_BUFFERS,
        mj::DEVICE_CONTROL,
        mj::CLEANUP,
    ] {
        d.MajorFunction[usize::from(major)] = Some(storage_dispatch);
    }
    let volumes: Vec<VolumeId> = kernel::with(|k| {
        (0..k.volumes.list.len() as u32).map(VolumeId).filter(|v| k.needs_storage(*v)).collect()
    });
    for v in volumes {
        if let Err(s) = add_device(driver, v) {
            return s.0;
        }
    }
    Status::SUCCESS.0
}

impl Kernel {
    fn needs_storage(&self, v: VolumeId) -> bool {
        let vol = &self.volumes.list[v.index()];
        vol.storage.is_none() && matches!(vol.fs.media(), MediaKind::Disk | MediaKind::CdRom)
    }
}

/// Creates the storage device of a volume (as the storage driver's code: call it inside the
/// driver's image).
pub(crate) fn add_device(driver: *const DRIVER_OBJECT, v: VolumeId) -> Result<(), Status> {
    let (name, kind) = kernel::with(|k| {
        let vol = k.volume(v);
        (vol.device_name.clone(), vol.fs.media())
    });
    let (dtype, chars) = match kind {
        MediaKind::CdRom => (
            device_type::CD_ROM,
            characteristics::REMOVABLE_MEDIA | characteristics::READ_ONLY_DEVICE,
        ),
        _ => (device_type::DISK, 0),
    };
    let units = crate::mem::wide(&name);
    let us = crate::mem::unicode(&units);
    let mut dev: *mut DEVICE_OBJECT = std::ptr::null_mut();
    // SAFETY: our driver object, a valid name and out pointer.
    let s = Status(unsafe {
        crate::exports::io::IoCreateDevice(
            driver,
            size_of::<StorageExt>() as u32,
            &us,
            dtype,
            chars,
            false,
            &mut dev,
        )
    });
    if !s.is_success() {
        return Err(s);
    }
    // SAFETY: the device we just created, with a StorageExt-sized extension.
    let ext = unsafe { (*dev).DeviceExtension }.cast::<StorageExt>();
    // SAFETY: as above.
    unsafe { ext.write(StorageExt { volume: v.0 }) };
    // SAFETY: the device we just created.
    let d = unsafe { irpx::device(dev) };
    d.Flags |= do_flags::DIRECT_IO;
    d.Flags &= !do_flags::DEVICE_INITIALIZING;
    kernel::with(|k| {
        if let Some(id) = k.objects.device_id(dev) {
            let info = k.objects.device_mut(id);
            info.role = crate::objects::DeviceRole::Storage;
            info.volume = Some(v);
            k.volume_mut(v).storage = Some(id);
        }
    });
    Ok(())
}

fn volume_of(device: *const DEVICE_OBJECT) -> Option<VolumeId> {
    // SAFETY: one of our devices, created with a StorageExt.
    let ext = unsafe { (*device).DeviceExtension }.cast::<StorageExt>();
    if ext.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(VolumeId(unsafe { (*ext).volume }))
}

/// The storage driver's dispatch routine.
///
/// # Safety
/// Called by the I/O manager with one of our devices and a live IRP.
unsafe extern "system" fn storage_dispatch(
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the live IRP in our dispatch routine.
    let sl = unsafe { irpx::current(irp) };
    let Some(v) = volume_of(device) else {
        // SAFETY: the live IRP.
        return unsafe { irpx::complete(irp, Status::INVALID_DEVICE_REQUEST, 0) };
    };
    let (status, info) = match sl.MajorFunction {
        mj::CREATE => (Status::SUCCESS, crate::nt::create_result::OPENED),
        mj::CLOSE | mj::CLEANUP | mj::FLUSH_BUFFERS => (Status::SUCCESS, 0),
        mj::READ => {
            // SAFETY: `Read` is the member in use.
            let p = *unsafe { params::io::<params::IoReadWrite>(&sl.Parameters) };
            // SAFETY: the live IRP.
            let buffer = unsafe { irpx::data_buffer(irp) };
            kernel::with(|k| {
                let vol = k.volume(v);
                if !vol.media_present {
                    return (Status::NO_MEDIA_IN_DEVICE, 0);
                }
                if p.ByteOffset < 0 {
                    return (Status::INVALID_PARAMETER, 0);
                }
                let bytes = vol.media_image(p.ByteOffset as u64, p.Length as usize);
                // SAFETY: the request's buffer of `Length` bytes.
                let n = unsafe { irpx::copy_out(buffer, p.Length as usize, &bytes) };
                (Status::SUCCESS, n)
            })
        }
        mj::WRITE => {
            // SAFETY: `Write` is the member in use.
            let p = *unsafe { params::io::<params::IoReadWrite>(&sl.Parameters) };
            kernel::with(|k| {
                let vol = k.volume(v);
                if !vol.media_present {
                    (Status::NO_MEDIA_IN_DEVICE, 0)
                } else if vol.fs.media() == MediaKind::CdRom {
                    (Status::MEDIA_WRITE_PROTECTED, 0)
                } else {
                    (Status::SUCCESS, p.Length as usize)
                }
            })
        }
        mj::DEVICE_CONTROL => {
            // SAFETY: `DeviceIoControl` is the member in use.
            let p = *unsafe { params::io::<params::IoDeviceIoControl>(&sl.Parameters) };
            // SAFETY: the live IRP (buffered device controls).
            let out = unsafe { irpx::system_buffer(irp) };
            device_control(v, p.IoControlCode, out, p.OutputBufferLength as usize)
        }
        _ => (Status::INVALID_DEVICE_REQUEST, 0),
    };
    // SAFETY: the live IRP, completed once.
    unsafe { irpx::complete(irp, status, info) }
}

fn device_control(v: VolumeId, code: u32, out: *mut u8, len: usize) -> (Status, usize) {
    kernel::with(|k| {
        let vol = k.volume(v);
        let reply = |bytes: &[u8]| -> (Status, usize) {
            if len < bytes.len() {
                return (Status::BUFFER_TOO_SMALL, 0);
            }
            // SAFETY: the request's output buffer of `len` bytes.
            (Status::SUCCESS, unsafe { irpx::copy_out(out, len, bytes) })
        };
        match code {
            ioctl::DISK_GET_LENGTH_INFO => reply(&(vol.media_size() as i64).to_le_bytes()),
            ioctl::STORAGE_GET_DEVICE_NUMBER => {
                let dtype = if vol.fs.media() == MediaKind::CdRom {
                    device_type::CD_ROM
                } else {
                    device_type::DISK
                };
                let mut b = Vec::new();
                b.extend_from_slice(&dtype.to_le_bytes());
                b.extend_from_slice(&v.0.to_le_bytes());
                b.extend_from_slice(&1u32.to_le_bytes());
                reply(&b)
            }
            ioctl::DISK_IS_WRITABLE => {
                if vol.fs.media() == MediaKind::CdRom {
                    (Status::MEDIA_WRITE_PROTECTED, 0)
                } else {
                    (Status::SUCCESS, 0)
                }
            }
            ioctl::MOUNTDEV_QUERY_DEVICE_NAME => {
                let name: Vec<u16> = vol.device_name.encode_utf16().collect();
                let mut b = Vec::new();
                b.extend_from_slice(&((name.len() * 2) as u16).to_le_bytes());
                for u in &name {
                    b.extend_from_slice(&u.to_le_bytes());
                }
                if len < 2 {
                    return (Status::INVALID_PARAMETER, 0);
                }
                if len < b.len() {
                    // SAFETY: the output buffer holds at least the length field.
                    let n = unsafe { irpx::copy_out(out, 2, &b) };
                    return (Status::BUFFER_OVERFLOW, n);
                }
                reply(&b)
            }
            _ => (Status::INVALID_DEVICE_REQUEST, 0),
        }
    })
}
