//! `spy-reader.exe`: prints the spy filter's log (the library's docs say what and how).
//!
//! On Windows this is a program without the C runtime: `mainCRTStartup` is its entry point
//! (`build.rs` names it), it calls only kernel32.dll and fltlib.dll (windows-sys declares them with
//! raw-dylib imports, so no import library is needed), and it ends with `ExitProcess`. On any
//! other system it only says that it runs on Windows.

#![cfg_attr(windows, no_std)]
#![cfg_attr(windows, no_main)]

#[cfg(windows)]
mod windows;

#[cfg(not(windows))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "spy-reader reads the spy filter's log on Windows; build it with `cargo xtask drivers` \
         (target/drivers/spy-reader.exe). In the simulator the lab is the reader: \
         `fsfilter run lab/scenarios/spy.toml`."
    );
    std::process::ExitCode::FAILURE
}
