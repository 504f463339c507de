//! Corrections to windows-sys for kernel mode (toolchain.md, "Imports").
//!
//! - Exports that the metadata attributes to `ntdll.dll` are declared again against
//!   `ntoskrnl.exe`. A driver that imports ntdll.dll is not a driver; because this crate depends on
//!   windows-sys it comes first on the link line, and lld takes its `__imp_` symbols. Backends call
//!   these, never the windows-sys ones (the PE check in `cargo xtask drivers` rejects any import
//!   outside ntoskrnl.exe, fltmgr.sys and hal.dll).
//! - Exports the metadata lacks (`DbgPrintEx`, `KeAcquireSpinLockRaiseToDpc`, `KeReleaseSpinLock`).
//! - Callback types whose metadata lost every parameter (`PIO_COMPLETION_ROUTINE` is
//!   `fn() -> NTSTATUS` in windows-sys) get their real signatures here, with conversions to the
//!   field types of the structures that store them.

use core::ffi::c_void;

use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IRP, OBJECT_ATTRIBUTES, PIO_COMPLETION_ROUTINE};
use windows_sys::Wdk::System::Memory::SECTION_INHERIT;
use windows_sys::Wdk::System::Registry::KEY_VALUE_INFORMATION_CLASS;
use windows_sys::Wdk::System::SystemServices::PIO_WORKITEM_ROUTINE;
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS, UNICODE_STRING};

macro_rules! ntoskrnl {
    ($( $(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
        #[cfg(target_os = "windows")]
        #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
        unsafe extern "system" {
            $( $(#[$meta])* pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }
        #[cfg(not(target_os = "windows"))]
        unsafe extern "system" {
            $( $(#[$meta])* pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }
    };
}

ntoskrnl! {
    /// [`ZwClose`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwclose).
    pub fn ZwClose(handle: HANDLE) -> NTSTATUS;
    /// [`ZwOpenKey`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwopenkey).
    pub fn ZwOpenKey(
        keyhandle: *mut HANDLE,
        desiredaccess: u32,
        objectattributes: *const OBJECT_ATTRIBUTES,
    ) -> NTSTATUS;
    /// [`ZwQueryValueKey`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwqueryvaluekey).
    pub fn ZwQueryValueKey(
        keyhandle: HANDLE,
        valuename: *const UNICODE_STRING,
        keyvalueinformationclass: KEY_VALUE_INFORMATION_CLASS,
        keyvalueinformation: *mut c_void,
        length: u32,
        resultlength: *mut u32,
    ) -> NTSTATUS;
    /// [`ZwMapViewOfSection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwmapviewofsection).
    pub fn ZwMapViewOfSection(
        sectionhandle: HANDLE,
        processhandle: HANDLE,
        baseaddress: *mut *mut c_void,
        zerobits: usize,
        commitsize: usize,
        sectionoffset: *mut i64,
        viewsize: *mut usize,
        inheritdisposition: SECTION_INHERIT,
        allocationtype: u32,
        win32protect: u32,
    ) -> NTSTATUS;
    /// [`ZwUnmapViewOfSection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwunmapviewofsection).
    pub fn ZwUnmapViewOfSection(processhandle: HANDLE, baseaddress: *const c_void) -> NTSTATUS;
    /// [`KeAcquireSpinLockRaiseToDpc`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keacquirespinlockraisetodpc):
    /// what `KeAcquireSpinLock` expands to on x64.
    pub fn KeAcquireSpinLockRaiseToDpc(spinlock: *mut usize) -> u8;
    /// [`KeReleaseSpinLock`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kereleasespinlock).
    pub fn KeReleaseSpinLock(spinlock: *mut usize, newirql: u8);
}

#[cfg(target_os = "windows")]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// [`__C_specific_handler`](https://learn.microsoft.com/windows/win32/devnotes/--c-specific-handler2),
    /// the language-specific handler of C's `__try`: named only by the unwind information of
    /// the guarded copy (`usercopy`), never called from Rust. Its parameters are left out.
    pub fn __C_specific_handler();
}

#[cfg(target_os = "windows")]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// [`DbgPrintEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-dbgprintex).
    pub fn DbgPrintEx(componentid: u32, level: u32, format: *const u8, ...) -> u32;
}

#[cfg(not(target_os = "windows"))]
unsafe extern "C" {
    /// `DbgPrintEx` as this crate calls it: always with the format `"%.*s"` and those two
    /// arguments. The simulator defines it with exactly these parameters (defining a variadic
    /// function needs nightly; on x86-64 the calls are identical).
    pub fn DbgPrintEx(
        componentid: u32,
        level: u32,
        format: *const u8,
        len: i32,
        text: *const u8,
    ) -> u32;
}

/// `PIO_COMPLETION_ROUTINE` with its real parameters: `(DeviceObject, Irp, Context)`.
pub type IoCompletionRoutine = unsafe extern "system" fn(
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS;

/// `PIO_WORKITEM_ROUTINE` with its real parameters: `(DeviceObject, Context)`.
pub type IoWorkItemRoutine =
    unsafe extern "system" fn(device: *mut DEVICE_OBJECT, context: *mut c_void);

/// `PKDEFERRED_ROUTINE` with its real parameters: `(Dpc, DeferredContext, SystemArgument1,
/// SystemArgument2)` (windows-sys declares it without parameters).
pub type DeferredRoutine = unsafe extern "system" fn(
    dpc: *const windows_sys::Wdk::Foundation::KDPC,
    context: *const c_void,
    argument1: *const c_void,
    argument2: *const c_void,
);

/// Converts a DPC routine to windows-sys's `PKDEFERRED_ROUTINE`.
pub fn deferred_routine_field(
    routine: DeferredRoutine,
) -> windows_sys::Wdk::Foundation::PKDEFERRED_ROUTINE {
    // SAFETY: as for `completion_routine_field`: same-size function pointers; whoever calls the
    // field uses the real signature.
    Some(unsafe { core::mem::transmute::<DeferredRoutine, unsafe extern "system" fn()>(routine) })
}

/// The routine in a `PKDEFERRED_ROUTINE`, with its real signature.
pub fn deferred_routine_from_field(
    field: windows_sys::Wdk::Foundation::PKDEFERRED_ROUTINE,
) -> Option<DeferredRoutine> {
    // SAFETY: see `deferred_routine_field`.
    field
        .map(|f| unsafe { core::mem::transmute::<unsafe extern "system" fn(), DeferredRoutine>(f) })
}

/// Converts a completion routine to the type the `IO_STACK_LOCATION.CompletionRoutine` field and
/// `IoSetCompletionRoutineEx` declare.
pub fn completion_routine_field(routine: IoCompletionRoutine) -> PIO_COMPLETION_ROUTINE {
    // SAFETY: both are `unsafe extern "system"` function pointers of the same size; the field's
    // metadata type merely lost the parameters. Whoever calls through the field (the I/O manager,
    // or the simulator through `completion_routine_from_field`) uses the real signature.
    Some(unsafe {
        core::mem::transmute::<IoCompletionRoutine, unsafe extern "system" fn() -> NTSTATUS>(
            routine,
        )
    })
}

/// The routine stored in a `CompletionRoutine` field, with its real signature.
pub fn completion_routine_from_field(field: PIO_COMPLETION_ROUTINE) -> Option<IoCompletionRoutine> {
    // SAFETY: the field only ever holds completion routines (see `completion_routine_field`);
    // reinterpreting the pointer restores the signature the metadata dropped.
    field.map(|f| unsafe {
        core::mem::transmute::<unsafe extern "system" fn() -> NTSTATUS, IoCompletionRoutine>(f)
    })
}

/// Converts a work-item routine to windows-sys's `PIO_WORKITEM_ROUTINE`.
pub fn work_item_routine_field(routine: IoWorkItemRoutine) -> PIO_WORKITEM_ROUTINE {
    // SAFETY: as for `completion_routine_field`: same-size function pointers; callers of the
    // field use the real signature.
    Some(unsafe { core::mem::transmute::<IoWorkItemRoutine, unsafe extern "system" fn()>(routine) })
}

/// The routine in a `PIO_WORKITEM_ROUTINE`, with its real signature.
pub fn work_item_routine_from_field(field: PIO_WORKITEM_ROUTINE) -> Option<IoWorkItemRoutine> {
    // SAFETY: see `work_item_routine_field`.
    field.map(|f| unsafe {
        core::mem::transmute::<unsafe extern "system" fn(), IoWorkItemRoutine>(f)
    })
}

/// `PFREE_FUNCTION` with its real parameter: `(Buffer)`, the `FSRTL_PER_STREAM_CONTEXT` that
/// `FsRtlTeardownPerStreamContexts` frees (windows-sys declares it without parameters).
pub type FreeFunction = unsafe extern "system" fn(buffer: *mut c_void);

/// Converts a free routine to windows-sys's `PFREE_FUNCTION` (the `FreeCallback` field of
/// `FSRTL_PER_STREAM_CONTEXT`).
pub fn free_function_field(routine: FreeFunction) -> windows_sys::Wdk::Foundation::PFREE_FUNCTION {
    // SAFETY: as for `completion_routine_field`: same-size function pointers; whoever calls the
    // field uses the real signature.
    Some(unsafe { core::mem::transmute::<FreeFunction, unsafe extern "system" fn()>(routine) })
}

/// The routine in a `PFREE_FUNCTION`, with its real signature.
pub fn free_function_from_field(
    field: windows_sys::Wdk::Foundation::PFREE_FUNCTION,
) -> Option<FreeFunction> {
    // SAFETY: see `free_function_field`.
    field.map(|f| unsafe { core::mem::transmute::<unsafe extern "system" fn(), FreeFunction>(f) })
}
