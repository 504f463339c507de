//! Object manager (Ob) exports: references on device objects (and, through the subsystems, file
//! and section objects).

use std::ffi::c_void;

use crate::events::Rule;
use crate::kernel::{self, Kernel};

impl Kernel {
    /// `ObReferenceObject` on an object the simulator knows; returns the new count.
    pub fn reference_object(&mut self, object: *const c_void) -> isize {
        if let Some(d) = self.objects.device_id(object.cast()) {
            let info = self.objects.device_mut(d);
            info.refs += 1;
            return info.refs as isize;
        }
        if let Some(d) = self.objects.driver_id(object.cast()) {
            let info = self.objects.driver_mut(d);
            info.refs += 1;
            return info.refs as isize;
        }
        if self.is_file_object(object as usize) {
            return self.file_reference(object as usize);
        }
        if let Some(n) = self.section_reference(object as usize) {
            return n;
        }
        1
    }

    /// `ObDereferenceObject`; releases deleted devices and unloads drivers whose preconditions
    /// now hold, and releases the image of an unloaded driver whose driver object loses its last
    /// reference.
    pub fn dereference_object(&mut self, object: *const c_void) -> isize {
        if let Some(d) = self.objects.device_id(object.cast()) {
            let info = self.objects.device_mut(d);
            if info.refs == 0 {
                let name = self.objects.driver(self.objects.device(d).driver).service.clone();
                self.report_current(
                    Rule::ObjectOverDereferenced,
                    format!("a device object of {name} dereferenced more than referenced"),
                );
                return 0;
            }
            info.refs -= 1;
            let (refs, deleted, driver) = (info.refs, info.deleted, info.driver);
            if refs == 0 && deleted {
                self.maybe_release_image(driver);
            }
            if refs == 0 {
                self.maybe_finish_unload(driver);
            }
            return refs as isize;
        }
        if let Some(d) = self.objects.driver_id(object.cast()) {
            let info = self.objects.driver_mut(d);
            if info.refs == 0 {
                let name = info.service.clone();
                self.report_current(
                    Rule::ObjectOverDereferenced,
                    format!("the driver object of {name} dereferenced more than referenced"),
                );
                return 0;
            }
            info.refs -= 1;
            let refs = info.refs;
            if refs == 0 {
                // The last reference on a driver whose `DriverUnload` returned: its image goes.
                self.maybe_release_image(d);
            }
            return refs as isize;
        }
        0
    }
}

export! { windows_sys::Wdk::System::SystemServices::ObfReferenceObject =>
    /// `ObfReferenceObject`.
    fn ObfReferenceObject(object: *const c_void) -> isize {
        super::at_most_dispatch("ObfReferenceObject");
        kernel::with(|k| k.reference_object(object))
    }
}

export! { windows_sys::Wdk::System::SystemServices::ObfDereferenceObject =>
    /// `ObfDereferenceObject`: devices; file objects (the last reference sends `IRP_MJ_CLOSE`);
    /// sections (the last reference releases the section's file object). Above `APC_LEVEL` (it is
    /// allowed up to `DISPATCH_LEVEL`) the count drops at once but what the last reference sets
    /// off goes to a worker thread, as `ObDereferenceObjectDeferDelete` does: a close reaches a
    /// file system at `APC_LEVEL` at most (facts.md §1.8). Nor does the ready work run then: the
    /// caller may hold a spin lock, which that work, on another processor on Windows, waits for.
    fn ObfDereferenceObject(object: *const c_void) -> isize {
        super::at_most_dispatch("ObfDereferenceObject");
        let p = object as usize;
        let deferred = kernel::current_irql() > kernel::APC_LEVEL;
        let (is_file, section) = kernel::with(|k| (k.is_file_object(p), k.sections.index_of(p).is_some()));
        if is_file && deferred {
            if kernel::with(|k| k.file_dereference(p)) == crate::files::Released::Close {
                let fo = p as *mut windows_sys::Wdk::Foundation::FILE_OBJECT;
                crate::sched::queue_work("deferred object deletion", None, Box::new(move || {
                    let _ = crate::syscalls::send_close(fo);
                }));
            }
        } else if is_file {
            crate::syscalls::dereference_file(p);
        } else if section {
            let fo = kernel::with(|k| k.section_dereference(p)).flatten();
            if deferred && fo.is_some() {
                crate::sched::queue_work("deferred object deletion", None, Box::new(move || {
                    crate::sections::release_file(fo);
                }));
            } else {
                crate::sections::release_file(fo);
            }
        } else {
            kernel::with(|k| k.dereference_object(object));
        }
        if !deferred {
            crate::sched::run_ready();
        }
        0
    }
}
