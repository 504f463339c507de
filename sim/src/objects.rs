//! The object manager's view of drivers and devices: creation and deletion, names, attachment
//! (facts.md §1.3), references, enumeration (§1.5).

use std::collections::HashMap;

use fsfilter::{Status, device_type};
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, DEVOBJ_EXTENSION, DRIVER_EXTENSION, DRIVER_OBJECT, VPB,
};

use crate::events::{EventKind, Rule};
use crate::ids::{DeviceId, DriverId, ImageId, VolumeId};
use crate::kernel::{FastMap, Kernel};
use crate::mem::{Block, align16, obj, wide};

/// `DO_DEVICE_INITIALIZING`.
pub const DO_DEVICE_INITIALIZING: u32 = 0x80;
/// `DO_DEVICE_HAS_NAME`.
pub const DO_DEVICE_HAS_NAME: u32 = 0x40;
/// `DO_EXCLUSIVE`.
pub const DO_EXCLUSIVE: u32 = 0x8;
/// `IO_TYPE_DEVICE`.
const IO_TYPE_DEVICE: i16 = 3;
/// `IO_TYPE_DRIVER`.
const IO_TYPE_DRIVER: i16 = 4;
/// `IO_TYPE_VPB`.
const IO_TYPE_VPB: i16 = 10;
/// `IO_TYPE_DEVICE_OBJECT_EXTENSION`.
const IO_TYPE_DEVOBJ_EXTENSION: i16 = 13;

/// What a device is, as the simulator's own drivers created it (for snapshots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRole {
    /// A device created by a loaded driver (a filter's device, a control device).
    Driver,
    /// A storage device (the bottom of a volume's storage stack).
    Storage,
    /// A file system's control device.
    FsControl,
    /// A file system's volume device.
    FsVolume,
}

/// A driver object and what the simulator knows of it.
pub struct DriverInfo {
    /// Its address, as drivers see it.
    pub ptr: *mut DRIVER_OBJECT,
    /// `\Driver\<service>` or `\FileSystem\<service>`.
    pub name: String,
    /// The service (or native driver) name.
    pub service: String,
    /// Its image.
    pub image: ImageId,
    /// Its devices, oldest first.
    pub devices: Vec<DeviceId>,
    /// `IoAllocateDriverObjectExtension` blocks, by client id.
    pub extensions: Vec<(usize, Block)>,
    /// The driver object is gone (unloaded or failed to load).
    pub deleted: bool,
    /// References taken with `ObReferenceObject` on the driver object: after `DriverUnload`
    /// the image goes with the last of them (docs/simulator.md, pending unload).
    pub refs: u32,
    /// The copy of the table `FsRtlRegisterFileSystemFilterCallbacks` registered (its
    /// `DriverExtension->FsFilterCallbacks`; the last registration wins).
    pub fs_filter: Option<windows_sys::Wdk::Storage::FileSystem::FS_FILTER_CALLBACKS>,
    _block: Block,
    _name_units: Vec<u16>,
    _service_units: Vec<u16>,
}

/// A device object and what the simulator knows of it.
pub struct DeviceInfo {
    /// Its address.
    pub ptr: *mut DEVICE_OBJECT,
    /// Its driver.
    pub driver: DriverId,
    /// Its name, for named devices.
    pub name: Option<String>,
    /// `IoDeleteDevice` was called.
    pub deleted: bool,
    /// Object references taken with `ObReferenceObject` and the Io*Reference calls.
    pub refs: u32,
    /// The device it is attached to (the one below it), if any.
    pub attached_to: Option<DeviceId>,
    /// Who made it.
    pub role: DeviceRole,
    /// The volume whose stack it belongs to, once known.
    pub volume: Option<VolumeId>,
    /// The volume of the last stack it was attached to (kept after detaching, so that events
    /// about a detached filter device still name its volume).
    pub last_volume: Option<VolumeId>,
    /// For a file system's volume device: the VPB it was mounted through (what
    /// `IoGetDiskDeviceObject` follows to the real device).
    pub vpb: *mut VPB,
    /// The verifier reported that its driver left `DO_DEVICE_INITIALIZING` set on it (once per
    /// device: an attacher that retries does not repeat the finding).
    pub left_initializing: bool,
    /// A file system's volume device whose `DO_DEVICE_INITIALIZING` flag its file system's worker
    /// clears later ([`crate::volumes::VolumeSpec::initialize_late`]): attaches above it fail
    /// meanwhile without a finding, as in the window while a driver's code runs.
    pub initialized_by_worker: bool,
    /// Marked unload-pending (`DOE_UNLOAD_PENDING`) by a stop request of its driver: the I/O
    /// manager marks the devices the driver has when the stop is asked (`IopUnloadDriver`), not
    /// those it creates while the stop is pending.
    pub unload_pending: bool,
    _block: Block,
}

/// Drivers and devices of the machine.
#[derive(Default)]
pub struct Objects {
    /// Drivers by id.
    pub drivers: Vec<DriverInfo>,
    /// Devices by id.
    pub devices: Vec<DeviceInfo>,
    /// Device address to id. Private and insert-only: `device_memo` relies on entries never
    /// changing or going (lookups go through [`Objects::device_id`]).
    device_index: FastMap<usize, DeviceId>,
    /// Driver address to id.
    pub driver_index: FastMap<usize, DriverId>,
    /// Named devices (upper-case name to id).
    pub names: HashMap<String, DeviceId>,
    /// Symbolic links of `\??` (`\DosDevices`), by upper-case name without the directory: the
    /// name they stand for (`IoCreateSymbolicLink`).
    pub links: HashMap<String, String>,
    /// VPBs the simulator allocated.
    pub vpbs: Vec<Block>,
    /// Recent answers of `device_index` (its entries are never removed: device objects stay
    /// allocated while the machine lives).
    device_memo: crate::kernel::AddrMemo<DeviceId>,
}

/// The name of a symbolic link in `\??` without its directory: `\??\X` and `\DosDevices\X` (the
/// same directory for the simulator) give `X`, upper-case; None for a name in another directory.
pub fn dos_link_name(name: &str) -> Option<String> {
    let upper = name.to_uppercase();
    let rest = upper.strip_prefix(r"\??\").or_else(|| upper.strip_prefix(r"\DOSDEVICES\"))?;
    (!rest.is_empty() && !rest.contains('\\')).then(|| rest.to_owned())
}

impl Objects {
    /// The name the symbolic link `\??\link` stands for.
    pub fn symbolic_link(&self, link: &str) -> Option<String> {
        self.links.get(&link.to_uppercase()).cloned()
    }

    /// The device at `ptr`.
    pub fn device_id(&self, ptr: *const DEVICE_OBJECT) -> Option<DeviceId> {
        self.device_memo.get(ptr as usize, || self.device_index.get(&(ptr as usize)).copied())
    }

    /// The image of the driver that owns the device at `ptr`.
    pub fn image_of(&self, ptr: *const DEVICE_OBJECT) -> Option<ImageId> {
        let d = self.device_id(ptr)?;
        Some(self.driver(self.device(d).driver).image)
    }

    /// The driver at `ptr`.
    pub fn driver_id(&self, ptr: *const DRIVER_OBJECT) -> Option<DriverId> {
        self.driver_index.get(&(ptr as usize)).copied()
    }

    /// A device's record.
    pub fn device(&self, id: DeviceId) -> &DeviceInfo {
        &self.devices[id.index()]
    }

    /// A device's record, mutably.
    pub fn device_mut(&mut self, id: DeviceId) -> &mut DeviceInfo {
        &mut self.devices[id.index()]
    }

    /// A driver's record.
    pub fn driver(&self, id: DriverId) -> &DriverInfo {
        &self.drivers[id.index()]
    }

    /// A driver's record, mutably.
    pub fn driver_mut(&mut self, id: DriverId) -> &mut DriverInfo {
        &mut self.drivers[id.index()]
    }

    /// The `DEVICE_OBJECT` of a device.
    pub fn dobj(&self, id: DeviceId) -> &'static mut DEVICE_OBJECT {
        // SAFETY: device objects live until the machine drops; the simulator does not hold other
        // references to them across calls.
        unsafe { obj(self.devices[id.index()].ptr) }
    }

    /// The device above `id` (`AttachedDevice`).
    pub fn above(&self, id: DeviceId) -> Option<DeviceId> {
        let up = self.dobj(id).AttachedDevice;
        if up.is_null() { None } else { self.device_id(up) }
    }

    /// The top of `id`'s attachment chain (`IoGetAttachedDevice`).
    pub fn top(&self, id: DeviceId) -> DeviceId {
        let mut cur = id;
        while let Some(up) = self.above(cur) {
            cur = up;
        }
        cur
    }

    /// The bottom of `id`'s attachment chain (`IoGetDeviceAttachmentBaseRef`).
    pub fn bottom(&self, id: DeviceId) -> DeviceId {
        let mut cur = id;
        while let Some(down) = self.device(cur).attached_to {
            cur = down;
        }
        cur
    }

    /// The stack of `id`, from its top down to its bottom.
    pub fn stack_from_top(&self, id: DeviceId) -> Vec<DeviceId> {
        let mut out = Vec::new();
        let mut cur = Some(self.top(id));
        while let Some(d) = cur {
            out.push(d);
            cur = self.device(d).attached_to;
        }
        out
    }
}

impl Kernel {
    /// Creates a driver object for `image` (`\Driver\name` or `\FileSystem\name`).
    pub fn create_driver_object(
        &mut self,
        image: ImageId,
        object_name: &str,
        service: &str,
    ) -> DriverId {
        let block =
            Block::zeroed(align16(size_of::<DRIVER_OBJECT>()) + size_of::<DRIVER_EXTENSION>());
        let ptr = block.ptr().cast::<DRIVER_OBJECT>();
        let name_units = wide(object_name);
        let service_units = wide(service);
        // SAFETY: a fresh block sized for a DRIVER_OBJECT followed by its DRIVER_EXTENSION.
        let d = unsafe { obj(ptr) };
        // SAFETY: as above; the extension follows the object at a 16-byte boundary.
        let ext = unsafe {
            obj(block
                .ptr()
                .wrapping_add(align16(size_of::<DRIVER_OBJECT>()))
                .cast::<DRIVER_EXTENSION>())
        };
        d.Type = IO_TYPE_DRIVER;
        d.Size = size_of::<DRIVER_OBJECT>() as i16;
        d.DriverExtension = ext;
        d.DriverName = crate::mem::unicode(&name_units);
        ext.DriverObject = ptr;
        ext.ServiceKeyName = crate::mem::unicode(&service_units);
        let id = DriverId(self.objects.drivers.len() as u32);
        self.objects.driver_index.insert(ptr as usize, id);
        self.objects.drivers.push(DriverInfo {
            ptr,
            name: object_name.to_owned(),
            service: service.to_owned(),
            image,
            devices: Vec::new(),
            extensions: Vec::new(),
            deleted: false,
            refs: 0,
            fs_filter: None,
            _block: block,
            _name_units: name_units,
            _service_units: service_units,
        });
        if let Some(i) = self.images.get_mut(image.index()) {
            i.driver = Some(id);
        }
        id
    }

    /// `IoCreateDevice`: a device object with a zeroed extension, `DO_DEVICE_INITIALIZING` set,
    /// inserted at the head of the driver's device list; a VPB for disk, CD-ROM, tape and virtual
    /// disk devices.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors IoCreateDevice's parameters, plus the simulator's role"
    )]
    pub fn create_device(
        &mut self,
        driver: DriverId,
        extension_size: usize,
        name: Option<&str>,
        dtype: u32,
        characteristics: u32,
        exclusive: bool,
        role: DeviceRole,
    ) -> Result<DeviceId, Status> {
        if let Some(n) = name {
            if self.objects.names.contains_key(&n.to_uppercase()) {
                return Err(Status::OBJECT_NAME_COLLISION);
            }
        }
        let ext_off = align16(size_of::<DEVICE_OBJECT>());
        let devext_off = align16(ext_off + extension_size);
        let block = Block::zeroed(devext_off + size_of::<DEVOBJ_EXTENSION>());
        let ptr = block.ptr().cast::<DEVICE_OBJECT>();
        // SAFETY: a fresh block laid out as DEVICE_OBJECT, extension, DEVOBJ_EXTENSION.
        let d = unsafe { obj(ptr) };
        // SAFETY: as above.
        let devext =
            unsafe { obj(block.ptr().wrapping_add(devext_off).cast::<DEVOBJ_EXTENSION>()) };
        let driver_ptr = self.objects.driver(driver).ptr;
        // SAFETY: driver objects live as long as the machine.
        let drv = unsafe { obj(driver_ptr) };
        d.Type = IO_TYPE_DEVICE;
        d.Size = (ext_off + extension_size) as u16;
        d.DriverObject = driver_ptr;
        d.NextDevice = drv.DeviceObject;
        drv.DeviceObject = ptr;
        d.Flags = DO_DEVICE_INITIALIZING
            | if name.is_some() { DO_DEVICE_HAS_NAME } else { 0 }
            | if exclusive { DO_EXCLUSIVE } else { 0 };
        d.Characteristics = characteristics;
        d.DeviceType = dtype;
        d.StackSize = 1;
        d.SectorSize = match dtype {
            device_type::CD_ROM | device_type::CD_ROM_FILE_SYSTEM => 2048,
            device_type::DISK | device_type::DISK_FILE_SYSTEM | device_type::VIRTUAL_DISK => 512,
            _ => 0,
        };
        d.DeviceExtension = if extension_size > 0 {
            block.ptr().wrapping_add(ext_off).cast()
        } else {
            std::ptr::null_mut()
        };
        d.DeviceObjectExtension = devext;
        devext.Type = IO_TYPE_DEVOBJ_EXTENSION;
        devext.Size = size_of::<DEVOBJ_EXTENSION>() as u16;
        devext.DeviceObject = ptr;
        if matches!(
            dtype,
            device_type::DISK | device_type::CD_ROM | device_type::TAPE | device_type::VIRTUAL_DISK
        ) {
            d.Vpb = self.new_vpb(ptr);
        }
        let id = DeviceId(self.objects.devices.len() as u32);
        self.objects.device_index.insert(ptr as usize, id);
        if let Some(n) = name {
            self.objects.names.insert(n.to_uppercase(), id);
        }
        self.objects.devices.push(DeviceInfo {
            ptr,
            driver,
            name: name.map(str::to_owned),
            deleted: false,
            refs: 0,
            attached_to: None,
            role,
            volume: None,
            last_volume: None,
            vpb: std::ptr::null_mut(),
            left_initializing: false,
            initialized_by_worker: false,
            unload_pending: false,
            _block: block,
        });
        self.objects.driver_mut(driver).devices.push(id);
        Ok(id)
    }

    /// A fresh VPB whose real device is `real`.
    pub fn new_vpb(&mut self, real: *mut DEVICE_OBJECT) -> *mut VPB {
        let block = Block::zeroed(size_of::<VPB>());
        let vpb = block.ptr().cast::<VPB>();
        // SAFETY: a fresh block sized for a VPB.
        let v = unsafe { obj(vpb) };
        v.Type = IO_TYPE_VPB;
        v.Size = size_of::<VPB>() as i16;
        v.RealDevice = real;
        self.objects.vpbs.push(block);
        vpb
    }

    /// `IoAttachDeviceToDeviceStackSafe`: attaches `source` on top of `target`'s stack.
    pub fn attach_device(
        &mut self,
        source: DeviceId,
        target: DeviceId,
    ) -> Result<DeviceId, Status> {
        let src_driver = self.objects.device(source).driver;
        if self.objects.device(source).attached_to.is_some()
            || self.objects.bottom(target) == source
        {
            // Windows links the source above the top whatever it is: into a second stack when
            // the source is attached already, or above itself (a cycle, in which the next
            // IoGetAttachedDevice never returns) when the target's stack is the source's own.
            let name = self.objects.driver(src_driver).service.clone();
            self.report_current(
                crate::events::Rule::Bugcheck,
                format!(
                    "IoAttachDeviceToDeviceStack(Safe) of a device of {name} that is attached \
                     already, or onto its own stack: the attachment chains would be corrupted"
                ),
            );
            return Err(Status::INVALID_PARAMETER);
        }
        let top = self.objects.top(target);
        let top_info = self.objects.device(top);
        if top_info.deleted
            || self.objects.driver(top_info.driver).deleted
            || (top_info.unload_pending && self.unload_pending(top_info.driver))
        {
            // Deleted, or marked unload-pending by its driver's stop request (the device's own
            // mark, as `IopAttachDeviceToDeviceStackSafe` checks it: a device created while the
            // stop is pending takes attaches).
            return Err(Status::NO_SUCH_DEVICE);
        }
        let top_obj = self.objects.dobj(top);
        if top_obj.Flags & DO_DEVICE_INITIALIZING != 0 {
            // The top is still being initialized: the attach fails (facts.md §1.3), as it does
            // in the short window between a driver's own attach and its clearing of the flag.
            // Only a flag left set after its driver's code returned is that driver's mistake.
            self.report_left_initializing(top, Some(src_driver));
            return Err(Status::NO_SUCH_DEVICE);
        }
        let src_obj = self.objects.dobj(source);
        src_obj.StackSize = top_obj.StackSize.saturating_add(1);
        src_obj.AlignmentRequirement = top_obj.AlignmentRequirement;
        src_obj.SectorSize = top_obj.SectorSize;
        top_obj.AttachedDevice = src_obj;
        // SAFETY: the source's device-object extension lives in its block.
        if let Some(ext) = unsafe { src_obj.DeviceObjectExtension.as_mut() } {
            ext.AttachedTo = top_obj;
        }
        let volume = self.objects.device(top).volume;
        // A namespace file system's device (MUP, NPFS, MSFS) names no volume: remember the one
        // it serves, so that events about the detached device still name it.
        let served = volume.or_else(|| self.flt_sim_volume_unnamed(self.objects.bottom(top)));
        let info = self.objects.device_mut(source);
        info.attached_to = Some(top);
        info.volume = volume;
        if served.is_some() {
            info.last_volume = served;
        }
        let below = self.objects.driver(self.objects.device(top).driver).service.clone();
        let driver = self.objects.driver(src_driver).service.clone();
        let volume = volume.map(|v| self.volume_name(v));
        self.log(EventKind::Attached { driver, below, volume });
        Ok(top)
    }

    /// A request could not reach `device` (an attach above it, an open of it by name) because
    /// it still has `DO_DEVICE_INITIALIZING` set. While its driver's code is running (on this
    /// thread, or below the ready work an attach runs) that is the normal window before the
    /// driver clears the flag; once its code has returned, the driver left the flag set, which
    /// facts.md §1.2 forbids for a device created outside `DriverEntry`: reported once per
    /// device, against the device's driver. A file system's volume device that its worker clears
    /// later ([`DeviceInfo::initialized_by_worker`], facts.md §1.5) is in that window too until
    /// the worker ran. `blocked`: the driver that could not attach.
    pub(crate) fn report_left_initializing(&mut self, device: DeviceId, blocked: Option<DriverId>) {
        let owner = self.objects.device(device).driver;
        let image = self.objects.driver(owner).image;
        let info = self.objects.device(device);
        if info.left_initializing
            || info.initialized_by_worker
            || crate::kernel::image_running(image)
        {
            return;
        }
        self.objects.device_mut(device).left_initializing = true;
        let name = self.objects.driver(owner).service.clone();
        let what = match blocked {
            Some(d) => format!("{} could not attach above it", self.objects.driver(d).service),
            None => "it could not be opened".to_owned(),
        };
        self.report(
            Rule::AttachToInitializingDevice,
            Some(name),
            format!(
                "a device left with DO_DEVICE_INITIALIZING set after its driver's code returned: {what} (STATUS_NO_SUCH_DEVICE)"
            ),
        );
    }

    /// `IoDetachDevice(target)`: detaches whatever is attached directly above `target`.
    pub fn detach_device(&mut self, target: DeviceId) {
        let Some(above) = self.objects.above(target) else {
            let name = self.objects.driver(self.objects.device(target).driver).service.clone();
            self.report_current(
                crate::events::Rule::DetachNotAttached,
                format!(
                    "IoDetachDevice on a device of {name} with nothing attached above it (a \
                     second detach, or the filter's own device instead of the one it attached \
                     to): Windows dereferences the NULL AttachedDevice"
                ),
            );
            return;
        };
        self.objects.dobj(target).AttachedDevice = std::ptr::null_mut();
        let above_obj = self.objects.dobj(above);
        // SAFETY: the device-object extension lives in its block.
        if let Some(ext) = unsafe { above_obj.DeviceObjectExtension.as_mut() } {
            ext.AttachedTo = std::ptr::null_mut();
        }
        let info = self.objects.device_mut(above);
        info.attached_to = None;
        let volume = info.volume.take();
        let driver = self.objects.driver(self.objects.device(above).driver).service.clone();
        let volume = volume.map(|v| self.volume_name(v));
        self.log(EventKind::Detached { driver, volume });
        // A deleted target held only by this attachment goes now (`IoDetachDevice`).
        self.device_released(target);
    }

    /// `IoDeleteDevice`.
    pub fn delete_device(&mut self, id: DeviceId) {
        let info = self.objects.device(id);
        if info.deleted {
            return;
        }
        if let Some(n) = info.name.clone() {
            self.objects.names.remove(&n.to_uppercase());
        }
        self.objects.device_mut(id).deleted = true;
        self.device_released(id);
    }

    /// Something that held `id` went: the last file object open on it, the device attached
    /// above it, or `IoDeleteDevice` itself. A deleted device stays delete-pending
    /// (`DOE_DELETE_PENDING`) on its driver's list, holding a pending unload, while a file object
    /// is open on it or a device is still attached above it; once neither is, it leaves the list
    /// (WRK `IoDeleteDevice`, `IoDetachDevice`, `IopCompleteUnloadOrDelete`). Then, or for a
    /// device not deleted, a pending unload of its driver is checked again.
    pub fn device_released(&mut self, id: DeviceId) {
        let driver = self.objects.device(id).driver;
        let o = self.objects.dobj(id);
        let free = o.ReferenceCount == 0 && o.AttachedDevice.is_null();
        if free
            && self.objects.device(id).deleted
            && self.objects.driver(driver).devices.contains(&id)
        {
            self.unlink_device(id);
        } else {
            self.maybe_finish_unload(driver);
        }
    }

    /// Takes a deleted device off its driver's device list.
    fn unlink_device(&mut self, id: DeviceId) {
        let (driver, ptr) = (self.objects.device(id).driver, self.objects.device(id).ptr);
        // Unlink from the driver's device list.
        let drv_ptr = self.objects.driver(driver).ptr;
        // SAFETY: driver objects live as long as the machine.
        let drv = unsafe { obj(drv_ptr) };
        if drv.DeviceObject == ptr {
            drv.DeviceObject = self.objects.dobj(id).NextDevice;
        } else {
            let mut cur = drv.DeviceObject;
            while let Some(c) = self.objects.device_id(cur) {
                let o = self.objects.dobj(c);
                if o.NextDevice == ptr {
                    o.NextDevice = self.objects.dobj(id).NextDevice;
                    break;
                }
                cur = o.NextDevice;
            }
        }
        self.objects.driver_mut(driver).devices.retain(|d| *d != id);
        self.maybe_finish_unload(driver);
    }

    /// A volume's display name (filled in by the volume subsystem).
    pub fn volume_name(&self, v: VolumeId) -> String {
        self.volume_display_name(v)
    }
}
