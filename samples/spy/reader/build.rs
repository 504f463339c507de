//! Link arguments for `spy-reader.exe`, a Windows console program.
//!
//! `.cargo/config.toml` gives every `x86_64-pc-windows-msvc` link the kernel driver's arguments
//! (`/SUBSYSTEM:NATIVE`, `/ENTRY:DriverEntry`, `/SECTION:...,P`: docs/building.md). Cargo passes a
//! build script's link arguments after the target's `rustflags`, and lld-link takes the last
//! `/SUBSYSTEM`, `/ENTRY` and `/SECTION` of a name, so these replace them for the binary.
//! `/NODEFAULTLIB` (no C runtime: the library defines the symbols the compiler expects) and
//! `/RELEASE` (a checksum) stay. `/DRIVER` stays too: lld-link only uses it to choose defaults
//! that the arguments here set (`cargo xtask drivers` checks the image is a console program).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "windows" || env != "msvc" {
        return;
    }
    for arg in [
        "/SUBSYSTEM:CONSOLE",
        "/ENTRY:mainCRTStartup",
        // Ordinary user-mode sections: pageable (no P), writable data never executable.
        "/SECTION:.text,ER",
        "/SECTION:.rdata,R",
        "/SECTION:.data,RW",
        "/SECTION:.pdata,R",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
