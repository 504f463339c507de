//! Services called where the model forbids them, through the legacy backend
//! (`sim/testing/misuse.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/misuse.rs"]
mod misuse;

mod driver {
    fsfilter_legacy::driver!(super::misuse::Misuser);
}

mod scanning {
    fsfilter_legacy::driver!(super::misuse::Scanning);
}

#[test]
fn a_service_used_where_it_is_forbidden_answers_its_status_and_changes_nothing() {
    misuse::check(common::install_legacy, common::install_pender, driver::ENTRY);
}

#[test]
fn a_scan_section_where_no_file_is_open_is_refused_without_a_finding() {
    misuse::check_scanning(common::install_legacy, common::install_pender, scanning::ENTRY);
}
