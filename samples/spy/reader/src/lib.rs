//! spy-reader: the spy sample's user-mode reader, `spy-reader.exe`.
//!
//! A Windows console program with no C runtime (`#![no_std]`, its own entry point, linked by
//! rust-lld with raw-dylib imports only: docs/building.md, "The user-mode reader"). It connects to
//! the spy's message channel (the minifilter's communication port, or the legacy filter's control
//! device), checks the protocol version, then sends `GetLog` and prints one line per record and
//! the operations the filter could not record, as MiniSpy's user program prints its log.
//!
//! This library is the part that does not call Windows, tested on the host: the command line
//! ([`args`]), the lines it prints ([`format`]), the output buffer ([`out`]) and the C runtime
//! symbols the compiler expects ([`crt`]). The binary (`src/main.rs`) is the Windows calls.

#![no_std]

pub mod args;
pub mod crt;
pub mod format;
pub mod out;

/// The reply buffer of a `GetLog`, in bytes: the spy channel's `max_message` (the backends copy
/// at most that much back).
pub const REPLY_BYTES: usize = 4096;
