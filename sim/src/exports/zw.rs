//! Zw exports: registry keys and handles. Drivers import these from ntoskrnl.exe through
//! fsfilter-kernel's corrections (windows-sys attributes them to ntdll.dll).

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::System::Memory::SECTION_INHERIT;
use windows_sys::Wdk::System::Registry::KEY_VALUE_INFORMATION_CLASS;
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE, UNICODE_STRING};

use crate::kernel;
use crate::mem::read_unicode;
use crate::registry::HandleObject;

/// `KeyValueBasicInformation`, `KeyValueFullInformation`, `KeyValuePartialInformation`,
/// `KeyValueFullInformationAlign64`, `KeyValuePartialInformationAlign64`.
const KEY_VALUE_BASIC: i32 = 0;
const KEY_VALUE_FULL: i32 = 1;
const KEY_VALUE_PARTIAL: i32 = 2;
const KEY_VALUE_FULL_ALIGN64: i32 = 3;
const KEY_VALUE_PARTIAL_ALIGN64: i32 = 4;
/// `STATUS_DATATYPE_MISALIGNMENT`.
const DATATYPE_MISALIGNMENT: Status = Status(0x8000_0002_u32 as i32);

/// The allocation granularity, to which `ZwMapViewOfSection` rounds a section offset down.
const ALLOCATION_GRANULARITY: u64 = 64 * 1024;

/// A NULL out parameter that the routine is about to write through: a kernel-mode caller's
/// parameters are not probed, so Windows writes through NULL and bugchecks; the simulator reports
/// a `BUGCHECK` finding and the call fails with `STATUS_INVALID_PARAMETER`, as for a NULL wait
/// object.
fn null_out(p: *mut c_void, what: &str) -> bool {
    if !p.is_null() {
        return false;
    }
    kernel::with(|k| k.report_current(crate::events::Rule::Bugcheck, what));
    true
}

/// `STATUS_OBJECT_PATH_SYNTAX_BAD`.
const OBJECT_PATH_SYNTAX_BAD: Status = Status(0xC000_003B_u32 as i32);

export! { fsfilter_kernel::ntos::ZwOpenKey =>
    /// `ZwOpenKey`: absolute names, or names relative to `RootDirectory`;
    /// `STATUS_OBJECT_PATH_SYNTAX_BAD` for a relative name without a root (an empty one
    /// included) or an absolute one with a root.
    fn ZwOpenKey(keyhandle: *mut HANDLE, _desiredaccess: u32, objectattributes: *const OBJECT_ATTRIBUTES) -> NTSTATUS {
        // SAFETY: the caller's attributes.
        let Some(attrs) = (unsafe { objectattributes.as_ref() }) else { return Status::INVALID_PARAMETER.0 };
        if null_out(keyhandle.cast(), "ZwOpenKey with a NULL KeyHandle") {
            return Status::INVALID_PARAMETER.0;
        }
        // SAFETY: the attributes' name.
        let name = unsafe { read_unicode(attrs.ObjectName) };
        kernel::with(|k| {
            // The reference page: IRQL = PASSIVE_LEVEL (reported; the key is still opened).
            k.check_irql(kernel::PASSIVE_LEVEL, "ZwOpenKey");
            // And: "If the caller is not running in a system thread context, it must set the
            // OBJ_KERNEL_HANDLE attribute" (reported; the key is still opened). A user thread is
            // a user process's; the System process's (the boot thread, DriverEntry's, the
            // modified-page writer's, the workers) are system threads ("Processes").
            let user_thread = k.current_process() != crate::process::SYSTEM;
            if user_thread && attrs.Attributes & OBJ_KERNEL_HANDLE == 0 {
                k.report_current(
                    crate::events::Rule::KeyHandleNotKernel,
                    format!(
                        "ZwOpenKey in a user thread with ObjectAttributes.Attributes {:#x}: no \
                         OBJ_KERNEL_HANDLE, so the key handle is a user handle of its process",
                        attrs.Attributes
                    ),
                );
            }
            let root = if attrs.RootDirectory.is_null() {
                None
            } else {
                let key = |o| if let HandleObject::Key(r) = o { Some(r) } else { None };
                match k.handle_object(attrs.RootDirectory, "ZwOpenKey", key) {
                    Ok(r) => Some(r),
                    Err(s) => return s.0,
                }
            };
            // The object manager's lookup (ObpLookupObjectName): without a root, a name must
            // start with a separator; with a root key, it must not (only a file object takes a
            // rooted name relative to it).
            if root.is_some() == name.starts_with('\\') {
                return OBJECT_PATH_SYNTAX_BAD.0;
            }
            match k.registry.find(root, &name) {
                Some(key) => {
                    let h = k.handles.open(HandleObject::Key(key));
                    // SAFETY: the caller's out parameter.
                    unsafe { *keyhandle = h };
                    Status::SUCCESS.0
                }
                None => Status::OBJECT_NAME_NOT_FOUND.0,
            }
        })
    }
}

export! { fsfilter_kernel::ntos::ZwQueryValueKey =>
    /// `ZwQueryValueKey` for the basic, full and partial information classes.
    fn ZwQueryValueKey(
        keyhandle: HANDLE,
        valuename: *const UNICODE_STRING,
        keyvalueinformationclass: KEY_VALUE_INFORMATION_CLASS,
        keyvalueinformation: *mut c_void,
        length: u32,
        resultlength: *mut u32,
    ) -> NTSTATUS {
        // SAFETY: the caller's value name.
        let name = unsafe { read_unicode(valuename) };
        let found = kernel::with(|k| -> Result<Option<crate::registry::RegValue>, Status> {
            // The reference page: IRQL = PASSIVE_LEVEL (reported; the value is still read).
            k.check_irql(kernel::PASSIVE_LEVEL, "ZwQueryValueKey");
            let key = |o| if let HandleObject::Key(r) = o { Some(r) } else { None };
            let key = k.handle_object(keyhandle, "ZwQueryValueKey", key)?;
            Ok(k.registry.get(key, &name).cloned())
        });
        let value = match found {
            Ok(Some(v)) => v,
            Ok(None) => return Status::OBJECT_NAME_NOT_FOUND.0,
            Err(s) => return s.0,
        };
        // KEY_VALUE_INFORMATION_CLASS: the Align64 classes want a buffer on an 8-byte boundary
        // (STATUS_DATATYPE_MISALIGNMENT otherwise). Until December 6 they were refused as
        // invalid classes.
        let align64 = matches!(keyvalueinformationclass, KEY_VALUE_FULL_ALIGN64 | KEY_VALUE_PARTIAL_ALIGN64);
        if align64 && keyvalueinformation as usize % 8 != 0 {
            return DATATYPE_MISALIGNMENT.0;
        }
        let data = value.data();
        let name_bytes: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let le = |v: u32| v.to_le_bytes();
        let mut out = Vec::new();
        match keyvalueinformationclass {
            KEY_VALUE_PARTIAL => {
                out.extend(le(0));
                out.extend(le(value.type_code()));
                out.extend(le(data.len() as u32));
                out.extend(&data);
            }
            KEY_VALUE_BASIC => {
                out.extend(le(0));
                out.extend(le(value.type_code()));
                out.extend(le(name_bytes.len() as u32));
                out.extend(&name_bytes);
            }
            KEY_VALUE_PARTIAL_ALIGN64 => {
                // KEY_VALUE_PARTIAL_INFORMATION_ALIGN64: Type, DataLength, Data.
                out.extend(le(value.type_code()));
                out.extend(le(data.len() as u32));
                out.extend(&data);
            }
            KEY_VALUE_FULL | KEY_VALUE_FULL_ALIGN64 => {
                let data_offset = (20 + name_bytes.len()).next_multiple_of(8);
                out.extend(le(0));
                out.extend(le(value.type_code()));
                out.extend(le(data_offset as u32));
                out.extend(le(data.len() as u32));
                out.extend(le(name_bytes.len() as u32));
                out.extend(&name_bytes);
                out.resize(data_offset, 0);
                out.extend(&data);
            }
            _ => return Status::INVALID_PARAMETER.0,
        }
        if !resultlength.is_null() {
            // SAFETY: the caller's out parameter.
            unsafe { *resultlength = out.len() as u32 };
        }
        // The reference page: STATUS_BUFFER_TOO_SMALL when nothing was written (the structure's
        // fixed part does not fit: 20 bytes for the full class, 12 for the others);
        // STATUS_BUFFER_OVERFLOW when "only partial data has been written": what fits, the
        // fixed part first (until December 6 nothing was written and the full class's
        // threshold was 12).
        let fixed = match keyvalueinformationclass {
            KEY_VALUE_FULL | KEY_VALUE_FULL_ALIGN64 => 20,
            KEY_VALUE_PARTIAL_ALIGN64 => 8,
            _ => 12,
        };
        if out.len() > length as usize && (length as usize) < fixed {
            return Status::BUFFER_TOO_SMALL.0;
        }
        if null_out(keyvalueinformation, "ZwQueryValueKey with a NULL buffer of non-zero Length") {
            return Status::INVALID_PARAMETER.0;
        }
        if out.len() > length as usize {
            // SAFETY: the caller's buffer holds `length` bytes, fewer than out.len().
            unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), keyvalueinformation.cast::<u8>(), length as usize) };
            return Status::BUFFER_OVERFLOW.0;
        }
        // SAFETY: the caller's buffer holds `length` >= out.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), keyvalueinformation.cast::<u8>(), out.len()) };
        Status::SUCCESS.0
    }
}

export! { fsfilter_kernel::ntos::ZwClose =>
    /// `ZwClose`: a key handle; a section handle (the section goes when nothing else holds it,
    /// releasing its file object); a file handle (cleanup, then the handle's reference).
    fn ZwClose(handle: HANDLE) -> NTSTATUS {
        // The reference page: IRQL = PASSIVE_LEVEL (reported; the handle is still closed).
        kernel::with(|k| k.check_irql(kernel::PASSIVE_LEVEL, "ZwClose"));
        match kernel::with(|k| k.take_handle(handle)) {
            Ok(HandleObject::Key(_)) => Status::SUCCESS.0,
            Ok(HandleObject::Section(s)) => {
                let fo = kernel::with(|k| k.section_handle_closed(s));
                crate::sections::release_file(fo);
                Status::SUCCESS.0
            }
            Ok(HandleObject::File(f)) => {
                crate::syscalls::close_kernel_file_handle(f);
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { fsfilter_kernel::ntos::ZwMapViewOfSection =>
    /// `ZwMapViewOfSection`: a read-only view whose bytes are the file's (page-rounded, zero
    /// filled past the end), kept coherent with writes while mapped.
    fn ZwMapViewOfSection(
        sectionhandle: HANDLE,
        _processhandle: HANDLE,
        baseaddress: *mut *mut c_void,
        _zerobits: usize,
        _commitsize: usize,
        sectionoffset: *mut i64,
        viewsize: *mut usize,
        _inheritdisposition: SECTION_INHERIT,
        _allocationtype: u32,
        _win32protect: u32,
    ) -> NTSTATUS {
        if baseaddress.is_null() || viewsize.is_null() {
            return Status::INVALID_PARAMETER.0;
        }
        // SAFETY: null or the caller's offset.
        let asked = unsafe { sectionoffset.as_ref() }.copied().unwrap_or(0).max(0) as u64;
        // The reference page: the offset is rounded down to the allocation granularity (64 KiB)
        // and written back. A view of a given size grows by what the rounding added, so that it
        // still covers the bytes asked for (choice: the page does not say).
        let offset = asked & !(ALLOCATION_GRANULARITY - 1);
        // SAFETY: the caller's in/out size.
        let mut want = unsafe { *viewsize };
        if want != 0 {
            want = want.saturating_add((asked - offset) as usize);
        }
        // SAFETY: null or the caller's in/out offset.
        if let Some(at) = unsafe { sectionoffset.as_mut() } {
            *at = offset as i64;
        }
        let r = kernel::with(|k| {
            k.check_irql(crate::kernel::PASSIVE_LEVEL, "ZwMapViewOfSection");
            let section = |o| if let HandleObject::Section(s) = o { Some(s) } else { None };
            let s = k.handle_object(sectionhandle, "ZwMapViewOfSection", section)?;
            k.map_view(s, offset, want)
        });
        match r {
            Ok((base, size)) => {
                // SAFETY: the caller's out parameters (checked non-null above).
                unsafe { *baseaddress = base as *mut c_void };
                // SAFETY: as above.
                unsafe { *viewsize = size };
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { fsfilter_kernel::ntos::ZwUnmapViewOfSection =>
    /// `ZwUnmapViewOfSection`.
    fn ZwUnmapViewOfSection(_processhandle: HANDLE, baseaddress: *const c_void) -> NTSTATUS {
        // The reference page: IRQL = PASSIVE_LEVEL (reported; the view is still unmapped).
        kernel::with(|k| k.check_irql(kernel::PASSIVE_LEVEL, "ZwUnmapViewOfSection"));
        match kernel::with(|k| k.unmap_view(baseaddress as usize)) {
            Ok(fo) => {
                crate::sections::release_file(fo);
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}
