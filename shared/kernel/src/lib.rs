//! fsfilter-kernel: the one wrapper around windows-sys for kernel mode.
//!
//! - [`sys`] re-exports windows-sys; [`ntos`] corrects what its metadata gets wrong for kernel mode
//!   (exports attributed to ntdll.dll, callback typedefs that lost their parameters) and declares
//!   what it lacks.
//! - [`irp`] supplies the WDK's inline IRP macros as functions; [`irql`] reads the IRQL.
//! - [`crt`] defines the symbols the compiler expects on the Windows target; [`runtime`] the panic
//!   handler that bugchecks with [`runtime::FSFILTER_BUGCHECK`].
//! - [`log`], [`trace`] and [`image`] are the hooks that behave differently on Windows and in the
//!   simulator: `DbgPrintEx` and a per-image global on Windows, the simulator's exports elsewhere.
//! - [`pool`], [`sync`], [`unicode`] and [`registry`] are small safe building blocks for the
//!   backends.
//!
//! On `x86_64-pc-windows-msvc` every kernel function resolves to `ntoskrnl.exe`, `fltmgr.sys` or
//! `hal.dll`. On any other target the same declarations are ordinary external symbols that
//! `fsfilter-sim` defines: the link seam of design.md.

#![no_std]

pub use windows_sys as sys;

pub mod constants;
pub mod context;
pub mod crt;
pub mod datascan;
pub mod image;
pub mod irp;
pub mod irql;
pub mod log;
pub mod mdl;
pub mod ntos;
pub mod pending;
pub mod pool;
pub mod registry;
pub mod runtime;
pub mod sync;
pub mod timer;
pub mod trace;
pub mod unicode;

pub use fsfilter;
