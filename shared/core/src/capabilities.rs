//! What a backend can do, as data (the embassy-style "capabilities, not comments"):
//! docs/semantics.md has a row for every field on which the two backends differ, and the lab's
//! `compare` and the semantics tests read these values.

/// A backend's capabilities. Each field names the docs/semantics.md row that explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `"legacy"` or `"minifilter"`.
    pub model: &'static str,
    /// `fltmc attach` / `fltmc detach` exist (row `manual-attach-detach`).
    pub manual_attach: bool,
    /// Instances are ordered by altitude within frames, whatever the load order; otherwise a
    /// filter sits where it attached, above what was there (row `attach-order`).
    pub altitude_ordering: bool,
    /// A non-mandatory unload (`fltmc unload`) that the unload callback may refuse (row
    /// `unload`).
    pub non_mandatory_unload: bool,
    /// Without an unload callback the filter cannot be unloaded at all (row `unload`).
    pub unload_needs_callback: bool,
    /// At teardown, operations waiting for their post callback get it early with
    /// `PostFlags::DRAINING`; otherwise teardown waits for them (row `draining`).
    pub draining: bool,
    /// Data-scan sections come from `FltCreateSectionForDataScan` where the Filter Manager
    /// supports it; otherwise always from `FsRtlCreateSectionForDataScan` (row `data-scan`).
    pub filter_manager_data_scan: bool,
    /// Named-pipe and mailslot volumes can be attached to (with
    /// `RegistrationFlags::SUPPORT_NPFS_MSFS`) (row `volumes`).
    pub named_pipes_and_mailslots: bool,
    /// FsFilter callbacks (`IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION`, ...) reach the filter
    /// (row `operations-delivered`).
    pub fs_filter_callbacks: bool,
    /// Every fast-I/O routine reaches the filter as a fast-I/O operation; otherwise only
    /// `FastIoRead` and `FastIoWrite` do, the lock and the basic and standard query routines are
    /// declined for a filter that registers `IRP_MJ_LOCK_CONTROL` or `IRP_MJ_QUERY_INFORMATION`
    /// (those come to it as IRPs), and the others pass through (row `operations-delivered`).
    pub all_fast_io_callbacks: bool,
    /// `DEV_VOLUME`, `TRUSTED_VOLUME` and `DETACHED_VOLUME` instance-setup flags (row
    /// `instance-setup-flags`).
    pub volume_flags: bool,
}

impl Capabilities {
    /// The fields on which `self` and `other` differ: (field, self's value, other's value,
    /// the docs/semantics.md row).
    pub fn differences(
        &self,
        other: &Capabilities,
    ) -> impl Iterator<Item = (&'static str, bool, bool, &'static str)> {
        let fields = |c: &Capabilities| {
            [
                ("manual_attach", c.manual_attach, "manual-attach-detach"),
                ("altitude_ordering", c.altitude_ordering, "attach-order"),
                ("non_mandatory_unload", c.non_mandatory_unload, "unload"),
                ("unload_needs_callback", c.unload_needs_callback, "unload"),
                ("draining", c.draining, "draining"),
                ("filter_manager_data_scan", c.filter_manager_data_scan, "data-scan"),
                ("named_pipes_and_mailslots", c.named_pipes_and_mailslots, "volumes"),
                ("fs_filter_callbacks", c.fs_filter_callbacks, "operations-delivered"),
                ("all_fast_io_callbacks", c.all_fast_io_callbacks, "operations-delivered"),
                ("volume_flags", c.volume_flags, "instance-setup-flags"),
            ]
        };
        fields(self)
            .into_iter()
            .zip(fields(other))
            .filter(|((_, a, _), (_, b, _))| a != b)
            .map(|((name, a, row), (_, b, _))| (name, a, b, row))
    }
}
