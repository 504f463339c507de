//! Processes and threads (docs/simulator.md, "Processes"): the current process, an IRP's or a
//! callback data's requestor, a thread's process. `PEPROCESS` and `PETHREAD` are addresses the
//! simulator gives its processes and threads ([`crate::process`]); drivers never dereference
//! them.

use windows_sys::Wdk::Foundation::{IRP, PEPROCESS, PETHREAD};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA;
use windows_sys::Win32::Foundation::HANDLE;

use crate::kernel;
use crate::process::{self, ProcessId};

/// A process id as a `HANDLE` (`PsGetCurrentProcessId`, `PsGetProcessId`).
fn id_handle(id: ProcessId) -> HANDLE {
    id.0 as usize as HANDLE
}

/// The process of the thread whose `ETHREAD` is `thread`: `None` for NULL (an IRP without a
/// thread) and for what is not a thread (on Windows a crash or garbage; not reported).
fn process_of_thread(thread: usize) -> Option<ProcessId> {
    if thread == 0 {
        return None;
    }
    kernel::with(|k| k.thread_process(thread))
}

/// `Irp->Tail.Overlay.Thread`, 0 for a NULL IRP.
fn irp_thread(irp: *const IRP) -> usize {
    // SAFETY: a live IRP of the caller's, or NULL.
    unsafe { irp.as_ref() }.map_or(0, |i| unsafe { i.Tail.Overlay }.Thread as usize)
}

/// `Data->Thread`, 0 for NULL callback data.
fn data_thread(data: *const FLT_CALLBACK_DATA) -> usize {
    // SAFETY: callback data the Filter Manager gave the caller, or NULL.
    unsafe { data.as_ref() }.map_or(0, |d| d.Thread as usize)
}

export! { windows_sys::Wdk::System::SystemServices::PsGetCurrentProcessId =>
    /// `PsGetCurrentProcessId`: the id of the running thread's process (4 in system threads).
    fn PsGetCurrentProcessId() -> HANDLE {
        id_handle(kernel::with(|k| k.current_process()))
    }
}

export! { windows_sys::Wdk::System::SystemServices::IoGetCurrentProcess =>
    /// `IoGetCurrentProcess` (`PsGetCurrentProcess`): the running thread's process.
    fn IoGetCurrentProcess() -> PEPROCESS {
        process::eprocess(kernel::with(|k| k.current_process())) as PEPROCESS
    }
}

export! { windows_sys::Wdk::System::SystemServices::PsGetProcessId =>
    /// `PsGetProcessId`: the id of a process of the machine (NULL for anything else).
    fn PsGetProcessId(process: PEPROCESS) -> HANDLE {
        kernel::with(|k| process::from_eprocess(k, process as usize))
            .map_or(std::ptr::null_mut(), id_handle)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoThreadToProcess =>
    /// `IoThreadToProcess`: the thread's process.
    fn IoThreadToProcess(thread: PETHREAD) -> PEPROCESS {
        process_of_thread(thread as usize).map_or(0, process::eprocess) as PEPROCESS
    }
}

export! { windows_sys::Wdk::System::SystemServices::PsGetThreadProcessId =>
    /// `PsGetThreadProcessId`: the id of the thread's process.
    fn PsGetThreadProcessId(thread: PETHREAD) -> HANDLE {
        process_of_thread(thread as usize).map_or(std::ptr::null_mut(), id_handle)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoGetRequestorProcess =>
    /// `IoGetRequestorProcess`: the process of the IRP's thread; NULL when it has none.
    fn IoGetRequestorProcess(irp: *const IRP) -> PEPROCESS {
        process_of_thread(irp_thread(irp)).map_or(0, process::eprocess) as PEPROCESS
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::IoGetRequestorProcessId =>
    /// `IoGetRequestorProcessId`: the id of the process of the IRP's thread (valid in a
    /// completion routine: it reads the IRP); 0 when the IRP has no thread.
    fn IoGetRequestorProcessId(irp: *const IRP) -> u32 {
        process_of_thread(irp_thread(irp)).map_or(0, |p| p.0)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetRequestorProcess =>
    /// `FltGetRequestorProcess`: the process of the operation's thread; NULL when it has none.
    fn FltGetRequestorProcess(callbackdata: *const FLT_CALLBACK_DATA) -> PEPROCESS {
        process_of_thread(data_thread(callbackdata)).map_or(0, process::eprocess) as PEPROCESS
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetRequestorProcessId =>
    /// `FltGetRequestorProcessId`: the id of the process of the operation's thread; 0 when it
    /// has none.
    fn FltGetRequestorProcessId(callbackdata: *const FLT_CALLBACK_DATA) -> u32 {
        process_of_thread(data_thread(callbackdata)).map_or(0, |p| p.0)
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltGetRequestorProcessIdEx =>
    /// `FltGetRequestorProcessIdEx`: [`FltGetRequestorProcessId`] as a `HANDLE`; NULL when the
    /// operation has no thread.
    fn FltGetRequestorProcessIdEx(callbackdata: *const FLT_CALLBACK_DATA) -> HANDLE {
        process_of_thread(data_thread(callbackdata)).map_or(std::ptr::null_mut(), id_handle)
    }
}
