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

export! { windows_sys::Wdk::Storage::FileSystem::ObQueryNameString =>
    /// `ObQueryNameString` (its reference page): a device object's name, NUL-terminated, after
    /// the `OBJECT_NAME_INFORMATION` (`Name.Length` without the NUL, `MaximumLength` with it);
    /// `STATUS_INFO_LENGTH_MISMATCH` with the size needed in `ReturnLength` when the buffer is
    /// too small (a zero `Length` included); an unnamed object gets a NULL `Buffer` and zero
    /// lengths. Only device objects are named here (ours: any other object is unnamed).
    /// `PASSIVE_LEVEL`.
    fn ObQueryNameString(object: *const c_void, objectnameinfo: *mut windows_sys::Wdk::Foundation::OBJECT_NAME_INFORMATION, length: u32, returnlength: *mut u32) -> windows_sys::Win32::Foundation::NTSTATUS {
        use windows_sys::Wdk::Foundation::OBJECT_NAME_INFORMATION;
        let name = kernel::with(|k| {
            k.check_irql(kernel::PASSIVE_LEVEL, "ObQueryNameString");
            k.objects.device_id(object.cast()).and_then(|d| k.objects.device(d).name.clone())
        });
        let units: Vec<u16> = name.as_deref().unwrap_or("").encode_utf16().collect();
        let header = std::mem::size_of::<OBJECT_NAME_INFORMATION>();
        let needed = if units.is_empty() { header } else { header + (units.len() + 1) * 2 };
        if !returnlength.is_null() {
            // SAFETY: the caller's out parameter.
            unsafe { *returnlength = needed as u32 };
        }
        if (length as usize) < needed || objectnameinfo.is_null() {
            return fsfilter::Status::INFO_LENGTH_MISMATCH.0;
        }
        // SAFETY: the caller's buffer of `length` >= `needed` bytes.
        let info = unsafe { &mut *objectnameinfo };
        if units.is_empty() {
            info.Name = windows_sys::Win32::Foundation::UNICODE_STRING { Length: 0, MaximumLength: 0, Buffer: std::ptr::null_mut() };
            return fsfilter::Status::SUCCESS.0;
        }
        let text = objectnameinfo.cast::<u8>().wrapping_add(header).cast::<u16>();
        // SAFETY: the buffer holds the name and its NUL after the header.
        unsafe { std::ptr::copy_nonoverlapping(units.as_ptr(), text, units.len()) };
        // SAFETY: as above: the NUL's place.
        unsafe { text.wrapping_add(units.len()).write(0) };
        let bytes = (units.len() * 2) as u16;
        info.Name = windows_sys::Win32::Foundation::UNICODE_STRING { Length: bytes, MaximumLength: bytes + 2, Buffer: text };
        fsfilter::Status::SUCCESS.0
    }
}
