//! The minifilter backend's capabilities, as data (docs/semantics.md turns every difference from
//! the legacy backend into a row).

use fsfilter::Capabilities;

/// What the minifilter backend can do.
pub const CAPABILITIES: Capabilities = Capabilities {
    model: "minifilter",
    manual_attach: true,
    altitude_ordering: true,
    non_mandatory_unload: true,
    unload_needs_callback: true,
    draining: true,
    filter_manager_data_scan: true,
    named_pipes_and_mailslots: true,
    fs_filter_callbacks: true,
    all_fast_io_callbacks: true,
    volume_flags: true,
};
