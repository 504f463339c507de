//! The current IRQL: `CR8` on Windows (`KeGetCurrentIrql` is an intrinsic on x64), the
//! simulator's export elsewhere.

use fsfilter::Irql;

#[cfg(not(target_os = "windows"))]
unsafe extern "C" {
    /// Defined by `fsfilter-sim`: the IRQL of the simulated processor.
    fn FsfSimGetCurrentIrql() -> u8;
}

/// `KeGetCurrentIrql`.
pub fn current() -> Irql {
    #[cfg(target_os = "windows")]
    {
        let value: u64;
        // SAFETY: reading CR8 is the documented way to get the IRQL on x64 and is allowed at any
        // IRQL in kernel mode; it touches no memory and no flags.
        unsafe {
            core::arch::asm!("mov {}, cr8", out(reg) value, options(nomem, nostack, preserves_flags))
        };
        Irql(value as u8)
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: the simulator's export takes no arguments and only reads its processor state.
        Irql(unsafe { FsfSimGetCurrentIrql() })
    }
}

/// True at `PASSIVE_LEVEL`.
pub fn is_passive() -> bool {
    current() == Irql::PASSIVE
}
