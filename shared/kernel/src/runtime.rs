//! The panic handler of the drivers: a panic bugchecks with [`FSFILTER_BUGCHECK`] and the panic's
//! location. Kernel-side code is written so that no panic path remains (clippy denies every
//! panicking construct in it); this is the backstop, as `wdk-panic` is for windows-drivers-rs.

/// The bugcheck code of a panic in an fsfilter driver: "FSFP" in ASCII. Parameters: the address
/// and length of the source file name, the line, and the column.
pub const FSFILTER_BUGCHECK: u32 = 0x4653_4650;

#[cfg(all(target_os = "windows", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (file, line, column) = match info.location() {
        Some(l) => (l.file(), l.line(), l.column()),
        None => ("", 0, 0),
    };
    // SAFETY: DbgPrintEx accepts a format with `%.*s` and `%u` and the matching arguments; the
    // file name is valid for its length.
    unsafe {
        crate::ntos::DbgPrintEx(
            crate::constants::DPFLTR_IHVDRIVER_ID,
            crate::constants::DPFLTR_ERROR_LEVEL,
            c"fsfilter: panic at %.*s:%u:%u\n".as_ptr().cast(),
            file.len() as i32,
            file.as_ptr(),
            line,
            column,
        );
    }
    // SAFETY: KeBugCheckEx takes a code and four pointer-sized parameters and never returns.
    unsafe {
        windows_sys::Wdk::System::SystemServices::KeBugCheckEx(
            FSFILTER_BUGCHECK,
            file.as_ptr() as usize,
            file.len(),
            line as usize,
            column as usize,
        );
    }
    // KeBugCheckEx does not return; the loop satisfies the `!` type without a panic path.
    loop {
        core::hint::spin_loop();
    }
}
