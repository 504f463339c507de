//! Callers' access tokens (docs/simulator.md, "Callers' tokens"): the one fact the simulator
//! models about who makes a request, whether its token holds the local Administrators group.
//!
//! A user-mode caller is an administrator (the default: every `Machine` call without a
//! [`Caller`]) or a standard user, chosen per call (`Machine::open_device_as`,
//! `Machine::connect_communication_port_as`). Kernel-mode opens (`IoGetDeviceObjectPointer`)
//! run in a system thread with the System process's token, which holds the Administrators
//! group. A create's `IO_SECURITY_CONTEXT` carries the token in
//! `AccessState->SubjectSecurityContext` as `NtCreateFile` captures it for a thread that does
//! not impersonate (`SeCaptureSubjectContext`): `ClientToken` NULL, `PrimaryToken` the
//! process's token. `SeTokenIsAdmin` answers for these tokens. No privilege, no other group, no
//! impersonation and no access check against a descriptor are modelled.

use std::ffi::c_void;

/// Who makes a user-mode request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A process whose token holds the Administrators group (elevated, or SYSTEM).
    #[default]
    Administrator,
    /// A process whose token does not (a standard user, or an administrator's filtered token).
    StandardUser,
}

impl Caller {
    /// The caller's primary token.
    pub(crate) fn token(self) -> *mut c_void {
        match self {
            Caller::Administrator => token_ptr(&ADMINISTRATOR),
            Caller::StandardUser => token_ptr(&STANDARD_USER),
        }
    }
}

/// A token object: opaque to drivers (`PACCESS_TOKEN`), never written.
#[repr(C)]
struct Token {
    /// Holds the Administrators group.
    admin: bool,
}

static SYSTEM: Token = Token { admin: true };
static ADMINISTRATOR: Token = Token { admin: true };
static STANDARD_USER: Token = Token { admin: false };

fn token_ptr(t: &'static Token) -> *mut c_void {
    std::ptr::from_ref(t).cast_mut().cast()
}

/// The System process's token, the primary token of kernel-mode opens in system threads.
pub(crate) fn system_token() -> *mut c_void {
    token_ptr(&SYSTEM)
}

/// Whether `token` holds the Administrators group; `None` for anything that is not a token.
pub(crate) fn is_admin(token: *const c_void) -> Option<bool> {
    [&SYSTEM, &ADMINISTRATOR, &STANDARD_USER]
        .into_iter()
        .find(|t| std::ptr::eq(token_ptr(t).cast_const(), token))
        .map(|t| t.admin)
}
