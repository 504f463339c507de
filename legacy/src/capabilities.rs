//! The legacy backend's capabilities, as data (docs/semantics.md turns every difference from the
//! minifilter backend into a row).

use fsfilter::Capabilities;

/// What the legacy backend can do.
pub const CAPABILITIES: Capabilities = Capabilities {
    model: "legacy",
    // No Filter Manager: nothing to ask for an attach or a detach.
    manual_attach: false,
    // A device is attached at the top of the stack as it is when the filter attaches.
    altitude_ordering: false,
    // Every unload is a service stop, hence mandatory.
    non_mandatory_unload: false,
    // Without an unload callback there is no DriverUnload, so the service cannot stop.
    unload_needs_callback: true,
    // Teardown waits for outstanding completions instead of draining post callbacks.
    draining: false,
    filter_manager_data_scan: false,
    // NPFS and MSFS register no file system: a legacy filter finds them only by name.
    named_pipes_and_mailslots: false,
    // The section-synchronization FsFilter callbacks come through
    // FsRtlRegisterFileSystemFilterCallbacks (`fsfilt`).
    fs_filter_callbacks: true,
    // FastIoRead, FastIoWrite, FastIoCheckIfPossible and FastIoQueryOpen go through the model;
    // the lock and the basic, standard and network-open query routines decline for a filter that
    // registers their operation (the IRP comes instead); the other routines pass through.
    all_fast_io_callbacks: false,
    volume_flags: false,
};
