//! The minifilter backend's capabilities, as data (embassy-style: backends report what they can
//! do; `docs/semantics.md` turns the differences into rows).

/// The model's name for this backend.
pub const MODEL: &str = "minifilter";

/// Manual attach and detach (`fltmc attach` / `fltmc detach`) are available.
pub const MANUAL_ATTACH: bool = true;
/// Instances are ordered by altitude, whatever the load order.
pub const ALTITUDE_ORDERING: bool = true;
/// A filter with no unload callback cannot be unloaded at all.
pub const UNLOAD_NEEDS_CALLBACK: bool = true;
/// Data-scan sections come from the Filter Manager where it supports them.
pub const FILTER_MANAGER_DATA_SCAN: bool = true;
