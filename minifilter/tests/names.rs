//! File names through the minifilter backend (`sim/testing/names.rs`, rule 22).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/names.rs"]
mod names;

mod driver {
    fsfilter_minifilter::driver!(super::names::Namer);
}

mod plain {
    fsfilter_minifilter::driver!(super::names::Plain);
}

#[test]
fn names_and_their_refusals_are_the_same_in_both_models() {
    names::check(common::install_minifilter, driver::ENTRY, plain::ENTRY);
}

#[test]
fn a_network_names_share_is_its_own_part_in_both_models() {
    names::check_network(common::install_minifilter, driver::ENTRY);
}

#[test]
fn a_target_directory_open_is_named_after_the_parent_in_both_models() {
    names::check_target_directory(common::install_minifilter, driver::ENTRY);
}

#[test]
fn a_name_longer_than_max_path_comes_whole_in_both_models() {
    names::check_long_name(common::install_minifilter, driver::ENTRY);
}

#[test]
fn a_stream_opened_relative_to_its_file_is_named_after_it_in_both_models() {
    names::check_relative_stream(common::install_minifilter, driver::ENTRY);
}
