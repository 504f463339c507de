//! The parameters view of every kind of request through the legacy backend
//! (`sim/testing/params.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/params.rs"]
mod params;

mod driver {
    fsfilter_legacy::driver!(super::params::Recorder);
}

#[test]
fn every_request_shows_its_own_parameters() {
    params::check(common::install_legacy, driver::ENTRY, fsfilter::OperationKind::Irp);
    // docs/semantics.md, header: the legacy backend sets only IRP_OPERATION or
    // FAST_IO_OPERATION, never the Filter Manager's other flags.
    use fsfilter::CallbackDataFlags as F;
    let flags = params::pre_data_flags();
    assert!(!flags.is_empty());
    for f in flags {
        assert!(f == F::IRP_OPERATION || f == F::FAST_IO_OPERATION, "{f:?}");
    }
}
