//! The PnP manager's removal of a volume's storage device (`Machine::remove_volume`, scenario
//! step `remove`): the `IRP_MJ_PNP` removal minors it sends to the stack of the file system
//! mounted on the device, and the device's end. docs/simulator.md, "Removal of a volume (PnP)".
//!
//! Sources: Learn, "IRP_MJ_PNP (FS and filter drivers)" (a mounted volume's removal IRPs go to
//! the file system and its filters; a failed query-remove is followed by a cancel-remove);
//! `IRP_MN_QUERY_REMOVE_DEVICE` / `IRP_MN_CANCEL_REMOVE_DEVICE` (the status a sender sets, the
//! veto); ReactOS `IopRemoveDevice` / `IopLockMountedDeviceForRemove` (the IRP goes to the top of
//! the stack over the VPB's volume device when the VPB is mounted, else to the storage device
//! itself, with no file object).

use fsfilter::{MajorFunction, Status};
use windows_sys::Wdk::Foundation::DEVICE_OBJECT;

use crate::ids::VolumeId;
use crate::irp::Finish;
use crate::kernel;
use crate::machine::Machine;
use crate::nt::{mj, mn_pnp, vpb};
use crate::volumes::MediaKind;

impl Machine {
    /// The PnP manager removes the storage device of volume `v`. A safe removal (`surprise`
    /// false) sends `IRP_MN_QUERY_REMOVE_DEVICE`; when a driver fails it, the PnP manager sends
    /// `IRP_MN_CANCEL_REMOVE_DEVICE`, nothing is removed and the query's status comes back;
    /// else `IRP_MN_REMOVE_DEVICE` follows. A surprise removal sends `IRP_MN_SURPRISE_REMOVAL`
    /// (the `IRP_MN_REMOVE_DEVICE` that follows it once every reference is gone reaches only the
    /// storage stack, the volume being dismounted by then, and is not sent). Each goes to the
    /// file system's stack only while a volume is mounted on the device; the removed device's
    /// media is gone afterwards (a later `mount` brings it back, as a device plugged in again).
    /// `STATUS_INVALID_DEVICE_REQUEST` for a volume with no storage device (network, namespace).
    pub fn remove_volume(&mut self, v: VolumeId, surprise: bool) -> Status {
        let kind = kernel::with(|k| k.volume(v).fs.media());
        if !matches!(kind, MediaKind::Disk | MediaKind::CdRom) {
            return Status::INVALID_DEVICE_REQUEST;
        }
        if surprise {
            let _ = send_removal(v, mn_pnp::SURPRISE_REMOVAL);
        } else {
            let query = send_removal(v, mn_pnp::QUERY_REMOVE_DEVICE);
            if !query.is_success() {
                let _ = send_removal(v, mn_pnp::CANCEL_REMOVE_DEVICE);
                crate::sched::run_ready();
                return query;
            }
            let _ = send_removal(v, mn_pnp::REMOVE_DEVICE);
        }
        kernel::with(|k| {
            k.volume_mut(v).media_present = false;
            let volume = Some(k.volume_display_name(v));
            let what = "device_removed";
            let detail = if surprise { "surprise removal" } else { "removed" }.to_owned();
            k.log(crate::events::EventKind::System { what, driver: None, volume, detail });
        });
        crate::sched::run_ready();
        Status::SUCCESS
    }
}

/// The top of the stack over the volume device mounted on `v`'s storage device (what
/// `IopLockMountedDeviceForRemove` finds through the mounted VPB), or None when nothing is
/// mounted there.
fn mounted_stack(v: VolumeId) -> Option<*mut DEVICE_OBJECT> {
    kernel::with(|k| {
        let storage = k.volume(v).storage?;
        let p = k.objects.dobj(storage).Vpb;
        // SAFETY: the storage device's VPB, when set (VPBs live as long as the machine).
        let vp = unsafe { p.as_ref() }?;
        if vp.Flags & vpb::MOUNTED == 0 || vp.DeviceObject.is_null() {
            return None;
        }
        let id = k.objects.device_id(vp.DeviceObject)?;
        Some(k.objects.device(k.objects.top(id)).ptr)
    })
}

/// Sends one removal minor to the file system's stack on `v` and waits for it: its final
/// status. With nothing mounted the IRP would go to the storage stack alone, which the
/// simulator does not model: `STATUS_SUCCESS`, no IRP.
fn send_removal(v: VolumeId, minor: u8) -> Status {
    let Some(target) = mounted_stack(v) else { return Status::SUCCESS };
    // The PnP manager's system thread at PASSIVE_LEVEL, no image.
    let saved = kernel::with(|k| {
        let saved = (k.irql(), k.thread);
        k.set_irql(crate::kernel::PASSIVE_LEVEL);
        k.thread = k.sched.worker();
        saved
    });
    let status = kernel::call_into(None, || {
        let (rid, irp) = kernel::with(|k| {
            let rid = k.start_request(v, MajorFunction::Pnp, false);
            let stack = k.objects.device_id(target).map_or(1, |d| k.objects.dobj(d).StackSize);
            let irp = k.allocate_irp(stack, Finish::Request(rid), None);
            // SAFETY: a fresh IRP the caller owns until it is sent.
            let i = unsafe { crate::irpx::header(irp) };
            i.RequestorMode = 0;
            // Every PnP request's sender sets STATUS_NOT_SUPPORTED: a driver that does not
            // handle the minor passes it on with the status untouched.
            i.IoStatus.Anonymous.Status = Status::NOT_SUPPORTED.0;
            // SAFETY: the first stack location of the fresh IRP.
            let s = unsafe { crate::irpx::next(irp) };
            s.MajorFunction = mj::PNP;
            s.MinorFunction = minor;
            s.FileObject = std::ptr::null_mut();
            (rid, irp)
        });
        let _ = crate::irp::call_driver(target, irp);
        let done = || kernel::with(|k| k.requests.result(rid).is_some());
        let _ = crate::sched::wait_until(done, None);
        kernel::with(|k| k.requests.result(rid)).map_or(Status::PENDING, |(s, _)| s)
    });
    kernel::with(|k| {
        k.set_irql(saved.0);
        k.thread = saved.1;
    });
    status
}
