//! The kernel exports: `#[no_mangle] extern "system"` definitions that the backends' imports
//! resolve to on a non-Windows target (the link seam of design.md).
//!
//! Each definition is checked at compile time against the declaration it stands in for (the
//! windows-sys one, or fsfilter-kernel's correction): both are coerced to one function-pointer
//! type, so a parameter or return type that differs fails to build instead of corrupting a call.

/// Defines an export and checks it against `$decl`.
macro_rules! export {
    ($decl:path => $(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// Called by driver code with the arguments the WDK documents for this routine.
        #[unsafe(no_mangle)]
        pub unsafe extern "system" fn $name($($arg: $ty),*) $(-> $ret)? $body

        const _: () = {
            let _same_signature: [unsafe extern "system" fn($($ty),*) $(-> $ret)?; 2] = [$decl, $name];
        };
    };
}

/// Reports `what` called above `DISPATCH_LEVEL`, the ceiling of most routines that take no lock
/// of their own (events, timers, object references, I/O work items). The IRQL is a thread-local:
/// the kernel is borrowed only to report.
pub(crate) fn at_most_dispatch(what: &str) {
    if crate::kernel::current_irql() > crate::kernel::DISPATCH_LEVEL {
        crate::kernel::with(|k| k.check_irql(crate::kernel::DISPATCH_LEVEL, what));
    }
}

pub mod ex;
pub mod flt;
pub mod flt_ctx;
pub mod flt_port;
pub mod fsrtl;
pub mod io;
pub mod ke;
pub mod mm;
pub mod ob;
pub mod ps;
pub mod se;
pub mod sim;
pub mod zw;
