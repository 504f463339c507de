//! Security reference monitor exports (docs/simulator.md, "Callers' tokens").

use std::ffi::c_void;

use crate::events::Rule;
use crate::kernel::{self, PASSIVE_LEVEL};

export! { windows_sys::Wdk::Storage::FileSystem::SeTokenIsAdmin =>
    /// `SeTokenIsAdmin`: TRUE when the token holds the local Administrators group (its
    /// reference page), at `PASSIVE_LEVEL`. Anything that is not a token (NULL included) is
    /// reported as a bug check (Windows reads the token's flags through the pointer) and
    /// answers FALSE.
    fn SeTokenIsAdmin(token: *const c_void) -> bool {
        kernel::with(|k| k.check_irql(PASSIVE_LEVEL, "SeTokenIsAdmin"));
        match crate::security::is_admin(token) {
            Some(admin) => admin,
            None => {
                let what = format!("SeTokenIsAdmin on {token:p}, not a token");
                kernel::with(|k| k.report_current(Rule::Bugcheck, what));
                false
            }
        }
    }
}
