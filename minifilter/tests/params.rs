//! The parameters view of every kind of request through the minifilter backend
//! (`sim/testing/params.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/params.rs"]
mod params;

mod driver {
    fsfilter_minifilter::driver!(super::params::Recorder);
}

#[test]
fn every_request_shows_its_own_parameters() {
    params::check(common::install_minifilter, driver::ENTRY, fsfilter::OperationKind::FastIo);
    // docs/semantics.md, header: the minifilter backend passes the Filter Manager's flags,
    // which add SYSTEM_BUFFER for the requests the I/O manager buffered.
    use fsfilter::CallbackDataFlags as F;
    let flags = params::pre_data_flags();
    assert!(flags.iter().any(|f| f.contains(F::IRP_OPERATION | F::SYSTEM_BUFFER)), "{flags:?}");
}
