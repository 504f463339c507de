//! The legacy backend's capabilities, as data (`docs/semantics.md` turns the differences from
//! the minifilter backend into rows).

/// The model's name for this backend.
pub const MODEL: &str = "legacy";

/// Manual attach and detach: the legacy model has no such operation.
pub const MANUAL_ATTACH: bool = false;
/// Position in a stack comes from load order, not altitude.
pub const ALTITUDE_ORDERING: bool = false;
/// A filter without an unload callback gets no `DriverUnload` and cannot be stopped.
pub const UNLOAD_NEEDS_CALLBACK: bool = true;
/// Non-mandatory unload (`fltmc unload`) exists only for minifilters.
pub const NON_MANDATORY_UNLOAD: bool = false;
/// Post callbacks are drained (called early with `FLTFL_POST_OPERATION_DRAINING`): no; teardown
/// waits for outstanding operations instead.
pub const DRAINING: bool = false;
/// Data-scan sections come from `FsRtlCreateSectionForDataScan` on every volume.
pub const FILTER_MANAGER_DATA_SCAN: bool = false;
