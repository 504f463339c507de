//! Filter Manager exports for communication ports and their security descriptors (the logic is
//! in `crate::fltmgr::ports`; docs/simulator.md, "Communication ports and control devices").

use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    PFLT_CONNECT_NOTIFY, PFLT_DISCONNECT_NOTIFY, PFLT_FILTER, PFLT_MESSAGE_NOTIFY, PFLT_PORT,
};
use windows_sys::Win32::Foundation::NTSTATUS;
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;

use crate::events::Rule;
use crate::fltmgr::ports;
use crate::kernel::{self, APC_LEVEL};
use crate::mem::read_unicode;

/// The size of the security descriptor `FltBuildDefaultSecurityDescriptor` returns: a
/// self-relative header and room for a DACL (opaque to its callers).
const SECURITY_DESCRIPTOR_SIZE: usize = 64;

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltBuildDefaultSecurityDescriptor =>
    /// `FltBuildDefaultSecurityDescriptor`: a security descriptor from paged pool, charged to the
    /// caller (a leak is a `POOL_LEAKED_AT_UNLOAD` finding); IRQL <= `APC_LEVEL`;
    /// `STATUS_INSUFFICIENT_RESOURCES` on a pool failure (its reference page). Applied to a port,
    /// it admits only SYSTEM and administrators (its reference page): the simulator remembers
    /// the descriptors it built, and a port created with one refuses a standard user
    /// (docs/simulator.md, "Callers' tokens"); `DesiredAccess` is not checked.
    fn FltBuildDefaultSecurityDescriptor(securitydescriptor: *mut PSECURITY_DESCRIPTOR, _desiredaccess: u32) -> NTSTATUS {
        if securitydescriptor.is_null() {
            kernel::with(|k| k.report_current(Rule::Bugcheck, "FltBuildDefaultSecurityDescriptor with a NULL out pointer"));
            return Status::INVALID_PARAMETER.0;
        }
        kernel::with(|k| {
            k.check_irql(APC_LEVEL, "FltBuildDefaultSecurityDescriptor");
            let flags = crate::pool::POOL_FLAG_PAGED;
            let p = k.pool_allocate(flags, SECURITY_DESCRIPTOR_SIZE, ports::SECURITY_DESCRIPTOR_TAG);
            if p.is_null() {
                return Status::INSUFFICIENT_RESOURCES.0;
            }
            // SECURITY_DESCRIPTOR_REVISION, then Control = SE_DACL_PRESENT | SE_SELF_RELATIVE.
            let header: [u8; 4] = [1, 0, 0x04, 0x80];
            // SAFETY: a fresh block of SECURITY_DESCRIPTOR_SIZE bytes.
            unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), p.cast::<u8>(), header.len()) };
            // SAFETY: the caller's out parameter.
            unsafe { *securitydescriptor = p };
            k.fltmgr.ports.default_descriptors.push(p as usize);
            Status::SUCCESS.0
        })
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltFreeSecurityDescriptor =>
    /// `FltFreeSecurityDescriptor`: frees what `FltBuildDefaultSecurityDescriptor` returned
    /// (anything else is `BAD_POOL_FREE`, or `POOL_TAG_MISMATCH` for another pool block).
    fn FltFreeSecurityDescriptor(securitydescriptor: PSECURITY_DESCRIPTOR) {
        kernel::with(|k| {
            k.check_irql(APC_LEVEL, "FltFreeSecurityDescriptor");
            k.fltmgr.ports.default_descriptors.retain(|d| *d != securitydescriptor as usize);
            k.pool_free(securitydescriptor, Some(ports::SECURITY_DESCRIPTOR_TAG));
        });
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCreateCommunicationPort =>
    /// `FltCreateCommunicationPort`: a server port named by `ObjectAttributes` (`\Name`).
    /// `STATUS_INVALID_PARAMETER` without `OBJ_KERNEL_HANDLE`, with `MaxConnections` <= 0 or
    /// without a connect or disconnect callback; `STATUS_OBJECT_NAME_COLLISION` for a name taken;
    /// `STATUS_FLT_DELETING_OBJECT` for a filter being torn down (its reference page).
    fn FltCreateCommunicationPort(filter: PFLT_FILTER, serverport: *mut PFLT_PORT, objectattributes: *const OBJECT_ATTRIBUTES, serverportcookie: *const c_void, connectnotifycallback: PFLT_CONNECT_NOTIFY, disconnectnotifycallback: PFLT_DISCONNECT_NOTIFY, messagenotifycallback: PFLT_MESSAGE_NOTIFY, maxconnections: i32) -> NTSTATUS {
        if serverport.is_null() {
            kernel::with(|k| k.report_current(Rule::Bugcheck, "FltCreateCommunicationPort with a NULL out pointer"));
            return Status::INVALID_PARAMETER.0;
        }
        // SAFETY: null or the caller's OBJECT_ATTRIBUTES.
        let Some(attributes) = (unsafe { objectattributes.as_ref() }) else {
            return Status::INVALID_PARAMETER.0;
        };
        // SAFETY: null or the caller's name.
        let name = (!attributes.ObjectName.is_null()).then(|| unsafe { read_unicode(attributes.ObjectName) });
        let args = ports::CreateArgs {
            filter,
            name,
            attributes: attributes.Attributes,
            cookie: serverportcookie as usize,
            connect: connectnotifycallback,
            disconnect: disconnectnotifycallback,
            message: messagenotifycallback,
            max: maxconnections,
            descriptor: attributes.SecurityDescriptor as usize,
        };
        match kernel::with(|k| ports::create(k, args)) {
            Ok(h) => {
                // SAFETY: the caller's out parameter.
                unsafe { *serverport = h };
                Status::SUCCESS.0
            }
            Err(s) => s.0,
        }
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCloseCommunicationPort =>
    /// `FltCloseCommunicationPort`: no new connection; the existing ones stay.
    fn FltCloseCommunicationPort(serverport: PFLT_PORT) {
        kernel::with(|k| ports::close_server(k, serverport));
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCloseClientPort =>
    /// `FltCloseClientPort`: closes the filter's end of a connection, sets `*ClientPort` to NULL.
    fn FltCloseClientPort(filter: PFLT_FILTER, clientport: *mut PFLT_PORT) {
        // "This parameter is required and cannot be NULL on input" (its reference page).
        if clientport.is_null() {
            kernel::with(|k| k.report_current(Rule::Bugcheck, "FltCloseClientPort with a NULL ClientPort pointer"));
            return;
        }
        // SAFETY: the caller's variable.
        let handle = unsafe { std::mem::replace(&mut *clientport, 0) };
        kernel::with(|k| ports::close_client(k, filter, handle));
    }
}

export! { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltSendMessage =>
    /// `FltSendMessage`: sends `SenderBuffer` on the connection of `*ClientPort` and waits until
    /// user mode gets it and, with a `ReplyBuffer`, replies (`ports::send_to_user`). `Filter`,
    /// `ClientPort`, `SenderBuffer` are required, `ReplyLength` too when `ReplyBuffer` is given
    /// (its reference page): NULL is a `BUGCHECK` finding (Windows dereferences them) and
    /// `STATUS_INVALID_PARAMETER`. On a reply `*ReplyLength` receives its length (at most the
    /// buffer's).
    fn FltSendMessage(filter: PFLT_FILTER, clientport: *const PFLT_PORT, senderbuffer: *const c_void, senderbufferlength: u32, replybuffer: *mut c_void, replylength: *mut u32, timeout: *const i64) -> NTSTATUS {
        let missing = if clientport.is_null() {
            Some("a NULL ClientPort pointer")
        } else if senderbuffer.is_null() && senderbufferlength > 0 {
            Some("a NULL SenderBuffer")
        } else if !replybuffer.is_null() && replylength.is_null() {
            Some("a ReplyBuffer and a NULL ReplyLength")
        } else {
            None
        };
        if let Some(what) = missing {
            kernel::with(|k| k.report_current(Rule::Bugcheck, format!("FltSendMessage with {what}")));
            return Status::INVALID_PARAMETER.0;
        }
        // SAFETY: the caller's variable (checked non-NULL).
        let client = unsafe { *clientport };
        let message = if senderbufferlength == 0 {
            Vec::new()
        } else {
            // SAFETY: the caller's buffer of SenderBufferLength bytes.
            unsafe { std::slice::from_raw_parts(senderbuffer.cast::<u8>(), senderbufferlength as usize) }.to_vec()
        };
        // SAFETY: the caller's ReplyLength when it gave a reply buffer (checked non-NULL).
        let reply_capacity = (!replybuffer.is_null()).then(|| unsafe { *replylength } as usize);
        // SAFETY: NULL or the caller's timeout.
        let timeout = unsafe { timeout.as_ref() }.copied();
        let end = ports::send_to_user(ports::SendArgs { filter, client, message, reply_capacity, timeout });
        if let Some(reply) = end.reply {
            if !reply.is_empty() {
                // SAFETY: the caller's reply buffer holds *ReplyLength >= reply.len() bytes.
                unsafe { std::ptr::copy_nonoverlapping(reply.as_ptr(), replybuffer.cast::<u8>(), reply.len()) };
            }
            // SAFETY: the caller's ReplyLength (non-NULL with a reply buffer).
            unsafe { *replylength = reply.len() as u32 };
        }
        end.status.0
    }
}
