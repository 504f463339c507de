//! I/O manager exports: devices, attachment, IRPs, completion, file-system registration,
//! driver-object extensions, work items.

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, DRIVER_FS_NOTIFICATION, DRIVER_OBJECT, IRP, PEPROCESS, PIO_COMPLETION_ROUTINE,
    PIO_WORKITEM,
};
use windows_sys::Wdk::System::SystemServices::{PIO_WORKITEM_ROUTINE, WORK_QUEUE_TYPE};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use crate::events::Rule;
use crate::faults::FaultKind;
use crate::irp::CompletionRoutine;
use crate::kernel::{self, PASSIVE_LEVEL};
use crate::mem::{Block, read_unicode};
use crate::objects::DeviceRole;

export! { windows_sys::Wdk::System::SystemServices::IoCreateDevice =>
    /// `IoCreateDevice`.
    fn IoCreateDevice(
        driverobject: *const DRIVER_OBJECT,
        deviceextensionsize: u32,
        devicename: *const UNICODE_STRING,
        devicetype: u32,
        devicecharacteristics: u32,
        exclusive: bool,
        deviceobject: *mut *mut DEVICE_OBJECT,
    ) -> NTSTATUS {
        // SAFETY: null or a valid name from the caller.
        let name = (!devicename.is_null()).then(|| unsafe { read_unicode(devicename) });
        let result = kernel::with(|k| {
            k.check_irql(PASSIVE_LEVEL, "IoCreateDevice");
            let Some(driver) = k.objects.driver_id(driverobject) else { return Err(Status::INVALID_PARAMETER) };
            if k.fault(FaultKind::CreateDevice) {
                return Err(Status::INSUFFICIENT_RESOURCES);
            }
            let id = k.create_device(
                driver,
                deviceextensionsize as usize,
                name.as_deref(),
                devicetype,
                devicecharacteristics,
                exclusive,
                DeviceRole::Driver,
            )?;
            Ok(k.objects.device(id).ptr)
        });
        match result {
            Ok(p) => {
                // SAFETY: the caller's out parameter.
                unsafe { *deviceobject = p };
                Status::SUCCESS.0
            }
            Err(s) => {
                if !deviceobject.is_null() {
                    // SAFETY: the caller's out parameter.
                    unsafe { *deviceobject = std::ptr::null_mut() };
                }
                s.0
            }
        }
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoDeleteDevice =>
    /// `IoDeleteDevice`.
    fn IoDeleteDevice(deviceobject: *const DEVICE_OBJECT) {
        kernel::with(|k| match k.objects.device_id(deviceobject) {
            Some(id) => {
                if k.objects.above(id).is_some() {
                    k.report_current(Rule::Bugcheck, "IoDeleteDevice on a device that still has a device attached above it");
                }
                k.delete_device(id);
            }
            None => k.report_current(Rule::Bugcheck, format!("IoDeleteDevice({deviceobject:p}): not a device object")),
        });
        crate::sched::run_ready();
    }
}

fn attach(
    source: *const DEVICE_OBJECT,
    target: *const DEVICE_OBJECT,
) -> Result<*mut DEVICE_OBJECT, Status> {
    kernel::with(|k| {
        let (Some(s), Some(t)) = (k.objects.device_id(source), k.objects.device_id(target)) else {
            return Err(Status::INVALID_PARAMETER);
        };
        if k.fault(FaultKind::Attach) {
            return Err(Status::NO_SUCH_DEVICE);
        }
        let top = k.attach_device(s, t)?;
        Ok(k.objects.device(top).ptr)
    })
}

export! { windows_sys::Wdk::System::SystemServices::IoAttachDeviceToDeviceStack =>
    /// `IoAttachDeviceToDeviceStack`: NULL on failure.
    fn IoAttachDeviceToDeviceStack(sourcedevice: *const DEVICE_OBJECT, targetdevice: *const DEVICE_OBJECT) -> *mut DEVICE_OBJECT {
        attach(sourcedevice, targetdevice).unwrap_or(std::ptr::null_mut())
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoAttachDeviceToDeviceStackSafe =>
    /// `IoAttachDeviceToDeviceStackSafe`: `STATUS_NO_SUCH_DEVICE` on failure.
    fn IoAttachDeviceToDeviceStackSafe(
        sourcedevice: *const DEVICE_OBJECT,
        targetdevice: *const DEVICE_OBJECT,
        attachedtodeviceobject: *mut *mut DEVICE_OBJECT,
    ) -> NTSTATUS {
        match attach(sourcedevice, targetdevice) {
            Ok(top) => {
                // SAFETY: the caller's out parameter (set under the I/O database lock on Windows).
                unsafe { *attachedtodeviceobject = top };
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoDetachDevice =>
    /// `IoDetachDevice`.
    fn IoDetachDevice(targetdevice: *mut DEVICE_OBJECT) {
        kernel::with(|k| match k.objects.device_id(targetdevice) {
            Some(t) => k.detach_device(t),
            None => k.report_current(Rule::Bugcheck, "IoDetachDevice on a pointer that is not a device object"),
        });
        crate::sched::run_ready();
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoGetAttachedDevice =>
    /// `IoGetAttachedDevice`.
    fn IoGetAttachedDevice(deviceobject: *const DEVICE_OBJECT) -> *mut DEVICE_OBJECT {
        kernel::with(|k| match k.objects.device_id(deviceobject) {
            Some(d) => k.objects.device(k.objects.top(d)).ptr,
            None => std::ptr::null_mut(),
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoGetAttachedDeviceReference =>
    /// `IoGetAttachedDeviceReference`.
    fn IoGetAttachedDeviceReference(deviceobject: *const DEVICE_OBJECT) -> *mut DEVICE_OBJECT {
        kernel::with(|k| match k.objects.device_id(deviceobject) {
            Some(d) => {
                let top = k.objects.top(d);
                k.objects.device_mut(top).refs += 1;
                k.objects.device(top).ptr
            }
            None => std::ptr::null_mut(),
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoGetLowerDeviceObject =>
    /// `IoGetLowerDeviceObject`: referenced, or NULL at the bottom.
    fn IoGetLowerDeviceObject(deviceobject: *const DEVICE_OBJECT) -> *mut DEVICE_OBJECT {
        kernel::with(|k| {
            let Some(d) = k.objects.device_id(deviceobject) else { return std::ptr::null_mut() };
            match k.objects.device(d).attached_to {
                Some(low) => {
                    k.objects.device_mut(low).refs += 1;
                    k.objects.device(low).ptr
                }
                None => std::ptr::null_mut(),
            }
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoGetDeviceAttachmentBaseRef =>
    /// `IoGetDeviceAttachmentBaseRef`.
    fn IoGetDeviceAttachmentBaseRef(deviceobject: *const DEVICE_OBJECT) -> *mut DEVICE_OBJECT {
        kernel::with(|k| match k.objects.device_id(deviceobject) {
            Some(d) => {
                let b = k.objects.bottom(d);
                k.objects.device_mut(b).refs += 1;
                k.objects.device(b).ptr
            }
            None => std::ptr::null_mut(),
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoEnumerateDeviceObjectList =>
    /// `IoEnumerateDeviceObjectList` (facts.md §1.5): every device of the driver, each
    /// referenced; `STATUS_BUFFER_TOO_SMALL` with the count when the list is too small.
    fn IoEnumerateDeviceObjectList(
        driverobject: *const DRIVER_OBJECT,
        deviceobjectlist: *mut *mut DEVICE_OBJECT,
        deviceobjectlistsize: u32,
        actualnumberdeviceobjects: *mut u32,
    ) -> NTSTATUS {
        kernel::with(|k| {
            let Some(driver) = k.objects.driver_id(driverobject) else { return Status::INVALID_PARAMETER.0 };
            // The driver's list is newest first, as DriverObject->DeviceObject links it.
            let devices: Vec<_> = k.objects.driver(driver).devices.iter().rev().copied().collect();
            // SAFETY: the caller's out parameter.
            unsafe { *actualnumberdeviceobjects = devices.len() as u32 };
            let room = deviceobjectlistsize as usize / size_of::<*mut DEVICE_OBJECT>();
            if devices.len() > room || deviceobjectlist.is_null() {
                return Status::BUFFER_TOO_SMALL.0;
            }
            for (i, d) in devices.iter().enumerate() {
                k.objects.device_mut(*d).refs += 1;
                // SAFETY: the caller's array holds `room` entries and i < devices.len() <= room.
                unsafe { *deviceobjectlist.wrapping_add(i) = k.objects.device(*d).ptr };
            }
            Status::SUCCESS.0
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoAllocateIrp =>
    /// `IoAllocateIrp`: an IRP owned by the calling driver.
    fn IoAllocateIrp(stacksize: i8, _chargequota: bool) -> *mut IRP {
        kernel::with(|k| {
            if k.fault(FaultKind::Pool) {
                return std::ptr::null_mut();
            }
            let me = k.current_image();
            k.allocate_irp(stacksize, crate::irp::Finish::DriverOwned, me)
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoFreeIrp =>
    /// `IoFreeIrp`.
    fn IoFreeIrp(irp: *const IRP) {
        kernel::with(|k| k.free_irp(irp.cast_mut()));
    }
}

export! { windows_sys::Wdk::System::SystemServices::IofCallDriver =>
    /// `IofCallDriver`.
    fn IofCallDriver(deviceobject: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
        crate::irp::call_driver(deviceobject, irp)
    }
}

export! { windows_sys::Wdk::System::SystemServices::IofCompleteRequest =>
    /// `IofCompleteRequest`.
    fn IofCompleteRequest(irp: *const IRP, _priorityboost: i8) {
        crate::irp::complete_request(irp.cast_mut());
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoSetCompletionRoutineEx =>
    /// `IoSetCompletionRoutineEx`.
    fn IoSetCompletionRoutineEx(
        deviceobject: *const DEVICE_OBJECT,
        irp: *const IRP,
        completionroutine: PIO_COMPLETION_ROUTINE,
        context: *const c_void,
        invokeonsuccess: bool,
        invokeonerror: bool,
        invokeoncancel: bool,
    ) -> NTSTATUS {
        let Some(r) = completionroutine else { return Status::INVALID_PARAMETER.0 };
        // SAFETY: the parameter's metadata type lost its parameters; callers pass a completion
        // routine (fsfilter-kernel's `completion_routine_field`).
        let routine: CompletionRoutine = unsafe { std::mem::transmute::<unsafe extern "system" fn() -> NTSTATUS, CompletionRoutine>(r) };
        crate::irp::set_completion_routine_ex(
            deviceobject,
            irp.cast_mut(),
            routine,
            context.cast_mut(),
            invokeonsuccess,
            invokeonerror,
            invokeoncancel,
        )
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoAllocateDriverObjectExtension =>
    /// `IoAllocateDriverObjectExtension`: one zeroed block per client id, freed with the driver
    /// object; `STATUS_OBJECT_NAME_COLLISION` for a second allocation with the same id.
    fn IoAllocateDriverObjectExtension(
        driverobject: *const DRIVER_OBJECT,
        clientidentificationaddress: *const c_void,
        driverobjectextensionsize: u32,
        driverobjectextension: *mut *mut c_void,
    ) -> NTSTATUS {
        kernel::with(|k| {
            let Some(d) = k.objects.driver_id(driverobject) else { return Status::INVALID_PARAMETER.0 };
            let key = clientidentificationaddress as usize;
            if k.objects.driver(d).extensions.iter().any(|(c, _)| *c == key) {
                // SAFETY: the caller's out parameter.
                unsafe { *driverobjectextension = std::ptr::null_mut() };
                return Status::OBJECT_NAME_COLLISION.0;
            }
            if k.fault(FaultKind::Pool) {
                // SAFETY: the caller's out parameter.
                unsafe { *driverobjectextension = std::ptr::null_mut() };
                return Status::INSUFFICIENT_RESOURCES.0;
            }
            let block = Block::zeroed(driverobjectextensionsize as usize);
            // SAFETY: the caller's out parameter.
            unsafe { *driverobjectextension = block.ptr().cast() };
            k.objects.driver_mut(d).extensions.push((key, block));
            Status::SUCCESS.0
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoGetDriverObjectExtension =>
    /// `IoGetDriverObjectExtension`.
    fn IoGetDriverObjectExtension(driverobject: *const DRIVER_OBJECT, clientidentificationaddress: *const c_void) -> *mut c_void {
        kernel::with(|k| {
            let Some(d) = k.objects.driver_id(driverobject) else { return std::ptr::null_mut() };
            let key = clientidentificationaddress as usize;
            k.objects.driver(d).extensions.iter().find(|(c, _)| *c == key).map_or(std::ptr::null_mut(), |(_, b)| b.ptr().cast())
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoRegisterFileSystem =>
    /// `IoRegisterFileSystem`.
    fn IoRegisterFileSystem(deviceobject: *const DEVICE_OBJECT) {
        crate::fsreg::register_file_system(deviceobject);
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoUnregisterFileSystem =>
    /// `IoUnregisterFileSystem`.
    fn IoUnregisterFileSystem(deviceobject: *const DEVICE_OBJECT) {
        crate::fsreg::unregister_file_system(deviceobject);
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChange =>
    /// `IoRegisterFsRegistrationChange`.
    fn IoRegisterFsRegistrationChange(driverobject: *const DRIVER_OBJECT, drivernotificationroutine: DRIVER_FS_NOTIFICATION) -> NTSTATUS {
        crate::fsreg::register_change(driverobject, drivernotificationroutine, false).0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChangeMountAware =>
    /// `IoRegisterFsRegistrationChangeMountAware`. Mounts in the simulator never race a
    /// registration (one processor, no preemption), so `SynchronizeWithMounts` has nothing left
    /// to close; the registration otherwise behaves as the plain routine, except that any earlier
    /// registration by the same driver is a duplicate.
    fn IoRegisterFsRegistrationChangeMountAware(
        driverobject: *const DRIVER_OBJECT,
        drivernotificationroutine: DRIVER_FS_NOTIFICATION,
        _synchronizewithmounts: bool,
    ) -> NTSTATUS {
        crate::fsreg::register_change(driverobject, drivernotificationroutine, true).0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoUnregisterFsRegistrationChange =>
    /// `IoUnregisterFsRegistrationChange`.
    fn IoUnregisterFsRegistrationChange(driverobject: *const DRIVER_OBJECT, drivernotificationroutine: DRIVER_FS_NOTIFICATION) {
        crate::fsreg::unregister_change(driverobject, drivernotificationroutine);
    }
}

/// An `IO_WORKITEM`: the device it keeps referenced while queued.
pub struct WorkItem {
    device: *mut DEVICE_OBJECT,
    _block: Block,
}

export! { windows_sys::Wdk::System::SystemServices::IoAllocateWorkItem =>
    /// `IoAllocateWorkItem`.
    fn IoAllocateWorkItem(deviceobject: *const DEVICE_OBJECT) -> PIO_WORKITEM {
        kernel::with(|k| {
            if k.objects.device_id(deviceobject).is_none() || k.fault(FaultKind::Pool) {
                return 0;
            }
            let block = Block::zeroed(64);
            let handle = block.ptr() as isize;
            k.sched.work_items.insert(handle as usize, WorkItem { device: deviceobject.cast_mut(), _block: block });
            handle
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoFreeWorkItem =>
    /// `IoFreeWorkItem`.
    fn IoFreeWorkItem(ioworkitem: PIO_WORKITEM) {
        kernel::with(|k| {
            if k.sched.work_items.remove(&(ioworkitem as usize)).is_none() {
                k.report_current(Rule::BadPoolFree, "IoFreeWorkItem on a work item that does not exist");
            }
        });
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoQueueWorkItem =>
    /// `IoQueueWorkItem`: runs the routine on a system worker thread at `PASSIVE_LEVEL`, the
    /// device referenced until it returns.
    fn IoQueueWorkItem(ioworkitem: PIO_WORKITEM, workerroutine: PIO_WORKITEM_ROUTINE, _queuetype: WORK_QUEUE_TYPE, context: *const c_void) {
        let Some(routine) = fsfilter_kernel::ntos::work_item_routine_from_field(workerroutine) else { return };
        let target = kernel::with(|k| {
            let device = k.sched.work_items.get(&(ioworkitem as usize))?.device;
            let d = k.objects.device_id(device)?;
            k.objects.device_mut(d).refs += 1;
            Some((device, k.objects.driver(k.objects.device(d).driver).image))
        });
        let Some((device, image)) = target else {
            kernel::with(|k| k.report_current(Rule::Bugcheck, "IoQueueWorkItem with an unknown work item"));
            return;
        };
        let context = context as usize;
        crate::sched::queue_work(
            "IoQueueWorkItem",
            Some(image),
            Box::new(move || {
                let loaded = kernel::with(|k| k.image_loaded(image));
                if loaded {
                    // SAFETY: the driver's work routine with the device and context it queued.
                    unsafe { routine(device, context as *mut c_void) };
                }
                kernel::with(|k| k.dereference_object(device.cast()));
            }),
        );
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoGetCurrentProcess =>
    /// `IoGetCurrentProcess`: the simulator has one process, the System process.
    fn IoGetCurrentProcess() -> PEPROCESS {
        SYSTEM_PROCESS
    }
}

/// The address the simulator gives the System process.
pub const SYSTEM_PROCESS: PEPROCESS = 0x4000;
