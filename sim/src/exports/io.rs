//! I/O manager exports: devices, attachment, IRPs, completion, file-system registration,
//! driver-object extensions, work items.

use std::ffi::c_void;

use fsfilter::Status;
use fsfilter_kernel::params::{self, io_mut};
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, DRIVER_FS_NOTIFICATION, DRIVER_OBJECT, FILE_OBJECT, IRP, PIO_COMPLETION_ROUTINE,
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
    /// `IoDeleteDevice`. When a device is attached above the deleted one, the I/O manager calls
    /// that device's driver's `FastIoDetachDevice(attached, deleted)` (facts.md §1.7), after
    /// checking that its fast-I/O table is large enough to hold the entry.
    fn IoDeleteDevice(deviceobject: *const DEVICE_OBJECT) {
        let detach = kernel::with(|k| match k.objects.device_id(deviceobject) {
            Some(id) => {
                // IoDeleteDevice runs at APC_LEVEL at most (its reference page; docs/simulator.md).
                k.check_irql(crate::kernel::APC_LEVEL, "IoDeleteDevice");
                if k.objects.device(id).deleted {
                    // Its reference page: once per device object. The first call dropped the
                    // object's creation reference (freeing it when nothing else held it).
                    let name = k.objects.driver(k.objects.device(id).driver).service.clone();
                    k.report_current(
                        Rule::ObjectOverDereferenced,
                        format!(
                            "IoDeleteDevice on a device of {name} deleted already (a driver may \
                             call it only once per device object: the first call dropped the \
                             object's creation reference)"
                        ),
                    );
                    return None;
                }
                if let Some(below) = k.objects.device(id).attached_to {
                    // Driver Verifier's I/O verification (DCERROR_DELETE_WHILE_ATTACHED). The
                    // device is deleted all the same, still listed above `below`.
                    let name = k.objects.driver(k.objects.device(below).driver).service.clone();
                    k.report_current(
                        Rule::DeleteWhileAttached,
                        format!(
                            "IoDeleteDevice on a device still attached to a device of {name} \
                             (IoDetachDevice first)"
                        ),
                    );
                }
                let above = k.objects.above(id);
                if above.is_some() {
                    // `IopCompleteUnloadOrDelete` holds the device across the attached driver's
                    // FastIoDetachDevice: its IoDetachDevice there does not finish the deletion.
                    k.objects.dobj(id).ReferenceCount += 1;
                }
                k.delete_device(id);
                above.map(|a| (k.fast_io_detach_of(a), id))
            }
            None => {
                k.report_current(Rule::Bugcheck, format!("IoDeleteDevice({deviceobject:p}): not a device object"));
                None
            }
        });
        if let Some((routine, id)) = detach {
            if let Some((routine, image, attached)) = routine {
                // SAFETY: the attached driver's FastIoDetachDevice with (its device, the
                // deleted one).
                kernel::call_into(Some(image), || unsafe { routine(attached, deviceobject) });
            }
            kernel::with(|k| {
                let o = k.objects.dobj(id);
                o.ReferenceCount = o.ReferenceCount.saturating_sub(1);
                // Gone once detached and unreferenced; otherwise it stays delete-pending.
                k.device_released(id);
            });
        }
        crate::sched::run_ready();
    }
}

/// A driver's `FastIoDetachDevice`.
pub type FastIoDetach = unsafe extern "system" fn(*const DEVICE_OBJECT, *const DEVICE_OBJECT);

impl crate::kernel::Kernel {
    /// What `image` allocated through the I/O manager and the Filter Manager and has not freed:
    /// (IRPs of `IoAllocateIrp`, MDLs of `IoAllocateMdl`, work items of `IoAllocateWorkItem` and
    /// `FltAllocateGenericWorkItem`). Each comes from nonpaged pool for the driver, which must
    /// free it (`IoFreeIrp`, `IoFreeMdl`, `IoFreeWorkItem`, `FltFreeGenericWorkItem`).
    pub fn io_objects_outstanding(&self, image: crate::ids::ImageId) -> (usize, usize, usize) {
        let irps = self
            .irps
            .map
            .values()
            .filter(|i| {
                i.allocator == Some(image)
                    && matches!(i.finish, crate::irp::Finish::DriverOwned)
                    && i.state != crate::irp::IrpState::Freed
            })
            .count();
        let mdls = self.mdl_images.values().filter(|&&i| i == image).count();
        let items = self.sched.work_items.values().filter(|w| w.image == Some(image)).count()
            + self.fltmgr.work_items.values().filter(|w| w.image == Some(image)).count();
        (irps, mdls, items)
    }

    /// The `FastIoDetachDevice` of the driver of `attached` (checked against the table's size),
    /// or a verifier finding when it has none.
    pub fn fast_io_detach_of(
        &mut self,
        attached: crate::ids::DeviceId,
    ) -> Option<(FastIoDetach, crate::ids::ImageId, *const DEVICE_OBJECT)> {
        let info = self.objects.device(attached);
        let driver = info.driver;
        let ptr = info.ptr.cast_const();
        let image = self.objects.driver(driver).image;
        // SAFETY: a live driver object.
        let table = unsafe { (*self.objects.driver(driver).ptr).FastIoDispatch };
        // SAFETY: the driver's table, when set.
        let routine = unsafe { table.as_ref() }.and_then(|t| {
            let need = std::mem::offset_of!(
                windows_sys::Wdk::Foundation::FAST_IO_DISPATCH,
                FastIoDetachDevice
            ) + size_of::<usize>();
            if (t.SizeOfFastIoDispatch as usize) < need { None } else { t.FastIoDetachDevice }
        });
        match routine {
            Some(r) => Some((r, image, ptr)),
            None => {
                let name = self.objects.driver(driver).service.clone();
                self.report(
                    Rule::FastIoDetachMissing,
                    Some(name),
                    "a device attached above a deleted device has no FastIoDetachDevice: it stays attached to a dead device",
                );
                None
            }
        }
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
                // Requests may reach the new device the instant it is attached (another
                // processor's): what is ready runs now, before the caller goes on. That is why
                // the out parameter must be the device extension's field, which the lock fills
                // before anyone can send to the device (docs/simulator.md).
                crate::sched::run_ready();
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoDetachDevice =>
    /// `IoDetachDevice`: above `APC_LEVEL` is a finding, and the detach still happens (its
    /// reference page says `PASSIVE_LEVEL`, but `FastIoDetachDevice` detaches from inside the
    /// `IoDeleteDevice` of the device below, which may run at `APC_LEVEL`; docs/simulator.md).
    fn IoDetachDevice(targetdevice: *mut DEVICE_OBJECT) {
        kernel::with(|k| match k.objects.device_id(targetdevice) {
            Some(t) => {
                k.check_irql(crate::kernel::APC_LEVEL, "IoDetachDevice");
                k.detach_device(t);
            }
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
    /// referenced; when the list is too small, `STATUS_BUFFER_TOO_SMALL` with the count, and as
    /// many devices as fit copied, each referenced too (the routine's reference page).
    fn IoEnumerateDeviceObjectList(
        driverobject: *const DRIVER_OBJECT,
        deviceobjectlist: *mut *mut DEVICE_OBJECT,
        deviceobjectlistsize: u32,
        actualnumberdeviceobjects: *mut u32,
    ) -> NTSTATUS {
        kernel::with(|k| {
            let Some(driver) = k.objects.driver_id(driverobject) else { return Status::INVALID_PARAMETER.0 };
            // The driver's list is newest first, as DriverObject->DeviceObject links it.
            // Not one deleted while a file object is open on it (delete-pending, still listed).
            let devices: Vec<_> = k.objects.driver(driver).devices.iter().rev().copied()
                .filter(|&d| !k.objects.device(d).deleted).collect();
            // SAFETY: the caller's out parameter.
            unsafe { *actualnumberdeviceobjects = devices.len() as u32 };
            let room = if deviceobjectlist.is_null() {
                0
            } else {
                deviceobjectlistsize as usize / size_of::<*mut DEVICE_OBJECT>()
            };
            for (i, d) in devices.iter().take(room).enumerate() {
                k.objects.device_mut(*d).refs += 1;
                // SAFETY: the caller's array holds `room` entries and i < room.
                unsafe { *deviceobjectlist.wrapping_add(i) = k.objects.device(*d).ptr };
            }
            if devices.len() > room { Status::BUFFER_TOO_SMALL.0 } else { Status::SUCCESS.0 }
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
        crate::fsreg::register_change(driverobject, drivernotificationroutine, false, false).0
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChangeMountAware =>
    /// `IoRegisterFsRegistrationChangeMountAware`: as the plain routine, except that any earlier
    /// registration by the same driver is a duplicate. With `SynchronizeWithMounts` TRUE the
    /// registration first waits (running other ready work) until no file system has a mount
    /// request of another thread pended, finishes the mounts whose request came back while their
    /// thread is suspended below it, then makes its notification calls; a mount that starts
    /// meanwhile in another thread does the rest of the registration's work before its request
    /// goes out. Mounts held by a filter in a suspended thread are not waited for, and a mount or
    /// registration in the registering thread does not wait for itself (docs/simulator.md
    /// "File-system registration").
    fn IoRegisterFsRegistrationChangeMountAware(
        driverobject: *const DRIVER_OBJECT,
        drivernotificationroutine: DRIVER_FS_NOTIFICATION,
        synchronizewithmounts: bool,
    ) -> NTSTATUS {
        crate::fsreg::register_change(driverobject, drivernotificationroutine, true, synchronizewithmounts).0
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
    /// The image that allocated it (which must free it).
    image: Option<crate::ids::ImageId>,
    /// Queued and not yet dequeued by the worker (which dequeues it before the routine runs).
    queued: bool,
    _block: Block,
}

export! { windows_sys::Wdk::System::SystemServices::IoAllocateWorkItem =>
    /// `IoAllocateWorkItem`.
    fn IoAllocateWorkItem(deviceobject: *const DEVICE_OBJECT) -> PIO_WORKITEM {
        super::at_most_dispatch("IoAllocateWorkItem");
        kernel::with(|k| {
            if k.objects.device_id(deviceobject).is_none() || k.fault(FaultKind::Pool) {
                return 0;
            }
            let block = Block::zeroed(64);
            let handle = block.ptr() as isize;
            let image = k.current_image();
            k.sched.work_items.insert(handle as usize, WorkItem { device: deviceobject.cast_mut(), image, queued: false, _block: block });
            handle
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoFreeWorkItem =>
    /// `IoFreeWorkItem`.
    fn IoFreeWorkItem(ioworkitem: PIO_WORKITEM) {
        kernel::with(|k| {
            match k.sched.work_items.remove(&(ioworkitem as usize)) {
                None => k.report_current(Rule::BadPoolFree, "IoFreeWorkItem on a work item that does not exist"),
                // Its reference page: only free a work item that is not queued. The routine
                // still runs (the queue holds what it needs).
                Some(item) if item.queued => k.report_current(
                    Rule::Bugcheck,
                    "IoFreeWorkItem on a work item still queued (WORKER_INVALID, 0xE4: a queued I/O work item was freed)",
                ),
                Some(_) => {}
            }
        });
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoQueueWorkItem =>
    /// `IoQueueWorkItem`: runs the routine on a system worker thread at `PASSIVE_LEVEL`, the
    /// device referenced until it returns.
    fn IoQueueWorkItem(ioworkitem: PIO_WORKITEM, workerroutine: PIO_WORKITEM_ROUTINE, _queuetype: WORK_QUEUE_TYPE, context: *const c_void) {
        super::at_most_dispatch("IoQueueWorkItem");
        let Some(routine) = fsfilter_kernel::ntos::work_item_routine_from_field(workerroutine) else { return };
        let handle = ioworkitem as usize;
        let target = kernel::with(|k| {
            let (device, queued) = k.sched.work_items.get(&handle).map(|i| (i.device, i.queued))?;
            if queued {
                k.report_current(
                    Rule::Bugcheck,
                    "IoQueueWorkItem on a work item queued already and not run yet (WORKER_INVALID, 0xE4: an active work item was queued)",
                );
                return Some(None);
            }
            let d = k.objects.device_id(device)?;
            if let Some(item) = k.sched.work_items.get_mut(&handle) {
                item.queued = true;
            }
            k.objects.device_mut(d).refs += 1;
            Some(Some((device, k.objects.driver(k.objects.device(d).driver).image)))
        });
        let Some(target) = target else {
            kernel::with(|k| k.report_current(Rule::Bugcheck, "IoQueueWorkItem with an unknown work item"));
            return;
        };
        // Refused: queued already.
        let Some((device, image)) = target else { return };
        let context = context as usize;
        // The I/O manager's worker runs the routine, then drops the device reference in its own
        // code, once the driver's has returned.
        crate::sched::queue_work(
            "IoQueueWorkItem",
            None,
            Box::new(move || {
                // Dequeued before the routine runs: it may queue or free its item.
                let loaded = kernel::with(|k| {
                    if let Some(item) = k.sched.work_items.get_mut(&handle) {
                        item.queued = false;
                    }
                    k.image_loaded(image)
                });
                if loaded {
                    // SAFETY: the driver's work routine with the device and context it queued.
                    kernel::call_into(Some(image), || unsafe { routine(device, context as *mut c_void) });
                    kernel::with(|k| crate::sched::returned_at(k, PASSIVE_LEVEL, Some(image), "IoQueueWorkItem"));
                }
                kernel::with(|k| k.dereference_object(device.cast()));
            }),
        );
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoGetDeviceObjectPointer =>
    /// `IoGetDeviceObjectPointer`: opens the named device (a create request, and for an unmounted
    /// storage device a mount), closes the handle (a cleanup request), and returns the referenced
    /// file object and the top of the stack the file object's requests go to.
    fn IoGetDeviceObjectPointer(
        objectname: *const UNICODE_STRING,
        desiredaccess: u32,
        fileobject: *mut *mut FILE_OBJECT,
        deviceobject: *mut *mut DEVICE_OBJECT,
    ) -> NTSTATUS {
        // SAFETY: the caller's name.
        let name = unsafe { read_unicode(objectname) };
        let allowed = kernel::with(|k| k.check_irql(PASSIVE_LEVEL, "IoGetDeviceObjectPointer"));
        if !allowed {
            return Status::INVALID_DEVICE_STATE.0;
        }
        match crate::syscalls::open_device_by_name(&name, desiredaccess) {
            Ok((fo, dev)) => {
                // SAFETY: the caller's out parameters.
                unsafe { *fileobject = fo };
                // SAFETY: as above.
                unsafe { *deviceobject = dev };
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoIsOperationSynchronous =>
    /// `IoIsOperationSynchronous`: whether the I/O manager's caller waits for the IRP, as its
    /// reference page decides it (`irpx::synchronous`). Any IRQL.
    fn IoIsOperationSynchronous(irp: *const IRP) -> bool {
        if irp.is_null() {
            return false;
        }
        // SAFETY: the caller's live IRP, at its current stack location.
        unsafe { crate::irpx::is_operation_synchronous(irp.cast_mut()) }
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoGetRelatedDeviceObject =>
    /// `IoGetRelatedDeviceObject`: the top of the stack a file object's requests go to (its VPB's
    /// volume device, else the device it was opened on).
    fn IoGetRelatedDeviceObject(fileobject: *const FILE_OBJECT) -> *mut DEVICE_OBJECT {
        if fileobject.is_null() {
            return std::ptr::null_mut();
        }
        kernel::with(|k| k.related_device(fileobject))
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoGetDiskDeviceObject =>
    /// `IoGetDiskDeviceObject`: a file system volume device's real (storage) device through the
    /// VPB it mounted, referenced. `STATUS_INVALID_PARAMETER` for a device with no VPB (a control
    /// device), `STATUS_VOLUME_DISMOUNTED` once the volume is not mounted.
    fn IoGetDiskDeviceObject(filesystemdeviceobject: *const DEVICE_OBJECT, diskdeviceobject: *mut *mut DEVICE_OBJECT) -> NTSTATUS {
        kernel::with(|k| {
            let Some(id) = k.objects.device_id(filesystemdeviceobject) else { return Status::INVALID_PARAMETER.0 };
            let vpb = k.objects.device(id).vpb;
            // SAFETY: the VPB the device was mounted through (VPBs live as long as the machine).
            let Some(v) = (unsafe { vpb.as_ref() }) else { return Status::INVALID_PARAMETER.0 };
            if v.Flags & crate::nt::vpb::MOUNTED == 0 || v.DeviceObject != filesystemdeviceobject.cast_mut() {
                return Status::VOLUME_DISMOUNTED.0;
            }
            let real = v.RealDevice;
            k.reference_object(real.cast());
            // SAFETY: the caller's out parameter.
            unsafe { *diskdeviceobject = real };
            Status::SUCCESS.0
        })
    }
}

/// Fills the IRP's buffer for a transfer to `device` the way its flags ask: an MDL for direct
/// I/O, a system buffer (copied back at completion for reads) for buffered I/O, else the caller's
/// buffer.
fn attach_buffer(
    k: &mut crate::kernel::Kernel,
    irp: *mut IRP,
    device: crate::ids::DeviceId,
    buffer: *mut c_void,
    length: usize,
    copy_back: bool,
) {
    let flags = k.objects.dobj(device).Flags;
    // SAFETY: a fresh IRP the I/O manager owns.
    let i = unsafe { crate::irpx::header(irp) };
    if flags & crate::nt::do_flags::DIRECT_IO != 0 {
        i.MdlAddress = k.allocate_mdl(buffer, length);
        i.UserBuffer = buffer;
    } else if flags & crate::nt::do_flags::BUFFERED_IO != 0 {
        let block = Block::zeroed(length.max(1));
        if !copy_back && !buffer.is_null() {
            // SAFETY: the caller's buffer holds `length` bytes; the block as many.
            unsafe { std::ptr::copy_nonoverlapping(buffer.cast::<u8>(), block.ptr(), length) };
        }
        i.AssociatedIrp.SystemBuffer = block.ptr().cast();
        i.UserBuffer = buffer;
        i.Flags |= crate::nt::irp_flags::BUFFERED_IO | crate::nt::irp_flags::DEALLOCATE_BUFFER;
        if copy_back {
            i.Flags |= crate::nt::irp_flags::INPUT_OPERATION;
        }
        k.irp_system_buffer(irp, block, copy_back.then_some((buffer as usize, length)));
    } else {
        i.UserBuffer = buffer;
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoBuildSynchronousFsdRequest =>
    /// `IoBuildSynchronousFsdRequest` for reads, writes, flushes and shutdowns: the I/O manager
    /// completes it (status block, event, free).
    fn IoBuildSynchronousFsdRequest(
        majorfunction: u32,
        deviceobject: *const DEVICE_OBJECT,
        buffer: *mut c_void,
        length: u32,
        startingoffset: *const i64,
        event: *const windows_sys::Wdk::Foundation::KEVENT,
        iostatusblock: *mut windows_sys::Win32::System::IO::IO_STATUS_BLOCK,
    ) -> *mut IRP {
        let major = majorfunction as u8;
        if !matches!(major, crate::nt::mj::READ | crate::nt::mj::WRITE | crate::nt::mj::FLUSH_BUFFERS | crate::nt::mj::SHUTDOWN) {
            return std::ptr::null_mut();
        }
        // SAFETY: null or the caller's offset.
        let offset = unsafe { startingoffset.as_ref() }.copied().unwrap_or(0);
        kernel::with(|k| {
            let Some(dev) = k.objects.device_id(deviceobject) else { return std::ptr::null_mut() };
            if k.fault(FaultKind::Pool) {
                return std::ptr::null_mut();
            }
            let me = k.current_image();
            let stack = k.objects.dobj(dev).StackSize;
            let irp = k.allocate_irp(stack, crate::irp::Finish::Synchronous, me);
            // SAFETY: a fresh IRP.
            let i = unsafe { crate::irpx::header(irp) };
            i.UserEvent = event.cast_mut();
            i.Anonymous.UserIosb = iostatusblock;
            i.IoStatus.Anonymous.Status = Status::PENDING.0;
            i.Flags = crate::nt::irp_flags::SYNCHRONOUS_API;
            // SAFETY: the fresh IRP's first location.
            let s = unsafe { crate::irpx::next(irp) };
            s.MajorFunction = major;
            if major == crate::nt::mj::READ || major == crate::nt::mj::WRITE {
                // SAFETY: the member of a read or write.
                let r = unsafe { io_mut::<params::IoReadWrite>(&mut s.Parameters) };
                r.Length = length;
                r.ByteOffset = offset;
                attach_buffer(k, irp, dev, buffer, length as usize, major == crate::nt::mj::READ);
            }
            irp
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoBuildDeviceIoControlRequest =>
    /// `IoBuildDeviceIoControlRequest`: buffers by the code's transfer method; the I/O manager
    /// completes it (output copied back, status block, event, free).
    fn IoBuildDeviceIoControlRequest(
        iocontrolcode: u32,
        deviceobject: *const DEVICE_OBJECT,
        inputbuffer: *const c_void,
        inputbufferlength: u32,
        outputbuffer: *mut c_void,
        outputbufferlength: u32,
        internaldeviceiocontrol: bool,
        event: *const windows_sys::Wdk::Foundation::KEVENT,
        iostatusblock: *mut windows_sys::Win32::System::IO::IO_STATUS_BLOCK,
    ) -> *mut IRP {
        kernel::with(|k| {
            let Some(dev) = k.objects.device_id(deviceobject) else { return std::ptr::null_mut() };
            if k.fault(FaultKind::Pool) {
                return std::ptr::null_mut();
            }
            let me = k.current_image();
            let stack = k.objects.dobj(dev).StackSize;
            let irp = k.allocate_irp(stack, crate::irp::Finish::Synchronous, me);
            // SAFETY: a fresh IRP.
            let i = unsafe { crate::irpx::header(irp) };
            i.UserEvent = event.cast_mut();
            i.Anonymous.UserIosb = iostatusblock;
            i.IoStatus.Anonymous.Status = Status::PENDING.0;
            i.Flags = crate::nt::irp_flags::SYNCHRONOUS_API;
            let (inl, outl) = (inputbufferlength as usize, outputbufferlength as usize);
            match iocontrolcode & 3 {
                crate::nt::method::BUFFERED => {
                    let block = Block::zeroed(inl.max(outl).max(1));
                    if inl > 0 && !inputbuffer.is_null() {
                        // SAFETY: the caller's input of `inl` bytes; the block holds as many.
                        unsafe { std::ptr::copy_nonoverlapping(inputbuffer.cast::<u8>(), block.ptr(), inl) };
                    }
                    i.AssociatedIrp.SystemBuffer = block.ptr().cast();
                    i.Flags |= crate::nt::irp_flags::BUFFERED_IO | crate::nt::irp_flags::DEALLOCATE_BUFFER;
                    if outl > 0 {
                        i.Flags |= crate::nt::irp_flags::INPUT_OPERATION;
                    }
                    i.UserBuffer = outputbuffer;
                    k.irp_system_buffer(irp, block, (outl > 0).then_some((outputbuffer as usize, outl)));
                }
                crate::nt::method::NEITHER => {
                    i.UserBuffer = outputbuffer;
                }
                _ => {
                    if inl > 0 {
                        let block = Block::zeroed(inl);
                        // SAFETY: the caller's input of `inl` bytes.
                        unsafe { std::ptr::copy_nonoverlapping(inputbuffer.cast::<u8>(), block.ptr(), inl) };
                        i.AssociatedIrp.SystemBuffer = block.ptr().cast();
                        k.irp_system_buffer(irp, block, None);
                    }
                    if outl > 0 {
                        i.MdlAddress = k.allocate_mdl(outputbuffer, outl);
                    }
                    i.UserBuffer = outputbuffer;
                }
            }
            // SAFETY: the fresh IRP's first location.
            let s = unsafe { crate::irpx::next(irp) };
            s.MajorFunction = if internaldeviceiocontrol { crate::nt::mj::INTERNAL_DEVICE_CONTROL } else { crate::nt::mj::DEVICE_CONTROL };
            // SAFETY: the member of a device control.
            let c = unsafe { io_mut::<params::IoDeviceIoControl>(&mut s.Parameters) };
            c.IoControlCode = iocontrolcode;
            c.InputBufferLength = inputbufferlength;
            c.OutputBufferLength = outputbufferlength;
            c.Type3InputBuffer = inputbuffer.cast_mut();
            irp
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoCancelFileOpen =>
    /// `IoCancelFileOpen`: cleanup and close for a file the create's lower drivers opened.
    fn IoCancelFileOpen(deviceobject: *const DEVICE_OBJECT, fileobject: *const FILE_OBJECT) {
        crate::syscalls::cancel_file_open(deviceobject.cast_mut(), fileobject.cast_mut());
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoReplaceFileObjectName =>
    /// `IoReplaceFileObjectName`: the file object's name becomes the caller's (copied into the
    /// I/O manager's buffer), as a redirecting filter does before it completes a create with
    /// `STATUS_REPARSE` (docs/simulator.md, "Reparse").
    fn IoReplaceFileObjectName(fileobject: *const FILE_OBJECT, newfilename: windows_sys::core::PCWSTR, filenamelength: u16) -> NTSTATUS {
        kernel::with(|k| k.replace_file_object_name(fileobject.cast_mut(), newfilename, filenamelength)).0
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoCancelIrp =>
    /// `IoCancelIrp`: sets the IRP's cancel bit and calls its cancel routine, if it has one
    /// ([`crate::cancel`]).
    fn IoCancelIrp(irp: *const IRP) -> bool {
        crate::cancel::cancel_irp(irp.cast_mut())
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoAcquireCancelSpinLock =>
    /// `IoAcquireCancelSpinLock`: raises to `DISPATCH_LEVEL`; the IRQL to restore goes to `irql`.
    fn IoAcquireCancelSpinLock(irql: *mut u8) {
        let old = kernel::with(|k| k.acquire_cancel_lock("IoAcquireCancelSpinLock"));
        // SAFETY: when set, the caller's KIRQL.
        if let Some(out) = unsafe { irql.as_mut() } {
            *out = old;
        }
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoReleaseCancelSpinLock =>
    /// `IoReleaseCancelSpinLock`: releases the lock and restores `irql`.
    fn IoReleaseCancelSpinLock(irql: u8) {
        kernel::with(|k| k.release_cancel_lock(irql));
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoGetTopLevelIrp =>
    /// `IoGetTopLevelIrp`: the IRP a file system marked its thread's top-level one while it
    /// works on it (`IoSetTopLevelIrp`), or NULL. The simulator's file systems and FsRtl set
    /// none (docs/simulator.md, "FsFilter callbacks"): always NULL.
    fn IoGetTopLevelIrp() -> *mut windows_sys::Wdk::Foundation::IRP {
        std::ptr::null_mut()
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoCreateSymbolicLink =>
    /// `IoCreateSymbolicLink` (PASSIVE_LEVEL, its reference page): a permanent, case-insensitive
    /// link (ReactOS' `OBJ_PERMANENT | OBJ_CASE_INSENSITIVE`) in `\??` (`\DosDevices` is the same
    /// directory for the simulator) to `DeviceName`, resolved when it is opened;
    /// `STATUS_OBJECT_NAME_COLLISION` for a link that exists. Links elsewhere in the namespace
    /// are not modelled (`STATUS_OBJECT_PATH_NOT_FOUND`).
    fn IoCreateSymbolicLink(symboliclinkname: *const UNICODE_STRING, devicename: *const UNICODE_STRING) -> NTSTATUS {
        // SAFETY: the caller's name.
        let link = unsafe { read_unicode(symboliclinkname) };
        // SAFETY: as above.
        let target = unsafe { read_unicode(devicename) };
        kernel::with(|k| {
            k.check_irql(PASSIVE_LEVEL, "IoCreateSymbolicLink");
            let Some(key) = crate::objects::dos_link_name(&link) else {
                return Status::OBJECT_PATH_NOT_FOUND.0;
            };
            if k.objects.links.contains_key(&key) {
                return Status::OBJECT_NAME_COLLISION.0;
            }
            k.objects.links.insert(key, target);
            Status::SUCCESS.0
        })
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoDeleteSymbolicLink =>
    /// `IoDeleteSymbolicLink` (PASSIVE_LEVEL): the link goes; `STATUS_OBJECT_NAME_NOT_FOUND` for
    /// none (the open of the link fails, as ReactOS' `ZwOpenSymbolicLinkObject`).
    fn IoDeleteSymbolicLink(symboliclinkname: *const UNICODE_STRING) -> NTSTATUS {
        // SAFETY: the caller's name.
        let link = unsafe { read_unicode(symboliclinkname) };
        kernel::with(|k| {
            k.check_irql(PASSIVE_LEVEL, "IoDeleteSymbolicLink");
            let removed = crate::objects::dos_link_name(&link).and_then(|key| k.objects.links.remove(&key));
            if removed.is_some() { Status::SUCCESS.0 } else { Status::OBJECT_NAME_NOT_FOUND.0 }
        })
    }
}
