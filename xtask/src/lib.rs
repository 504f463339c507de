//! xtask: the project's build tasks, run as `cargo xtask <task>` (docs/building.md).
//!
//! - `cargo xtask drivers`: build every sample driver for `x86_64-pc-windows-msvc`, copy the images
//!   to `target/drivers/<sample>-<model>.sys` (and `.pdb`), run the PE checks and the size limits.
//!   It also builds the samples' user-mode programs (`spy-reader.exe`) beside them and checks them
//!   as console programs ([`program`]).
//! - `cargo xtask check-pe <file.sys>...`: run the PE checks on any files.
//! - `cargo xtask check-inf [<file.inf>...]`: check the sample drivers' INFs (or the given ones).
//!
//! The library part is what the tests in `xtask/tests/` call.

#![allow(clippy::unwrap_used, reason = "host build tool: a failed unwrap is a clear failure")]
#![allow(clippy::expect_used, reason = "host build tool: a failed expect is a clear failure")]
#![allow(clippy::panic, reason = "host build tool, not kernel code")]
#![allow(clippy::indexing_slicing, reason = "host build tool; offsets are bounds-checked first")]

pub mod disasm;
pub mod drivers;
pub mod inf;
pub mod pe;
pub mod program;
pub mod seh;
