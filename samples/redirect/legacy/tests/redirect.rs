//! The redirect sample as a legacy filter end to end (`../testing/redirect.rs`): opens under
//! `OldName` on `C:` reparse to `NewName` on `D:`.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

#[path = "../../testing/redirect.rs"]
mod redirect_test;

use fsfilter_sim::{Machine, ServiceSpec};

fn install(m: &mut Machine, spec: ServiceSpec) {
    m.install(spec);
}

fn machine() -> Machine {
    redirect_test::machine(install, redirect_legacy::ENTRY, "legacy")
}

#[test]
fn an_open_under_the_old_name_opens_the_new_one() {
    redirect_test::check_an_open_under_the_old_name_opens_the_new_one(machine());
}

#[test]
fn names_outside_the_mapping_are_untouched() {
    redirect_test::check_names_outside_the_mapping_are_untouched(machine());
}

#[test]
fn a_query_open_of_a_redirected_name_takes_the_irp_path() {
    redirect_test::check_a_query_open_of_a_redirected_name_takes_the_irp_path(machine());
}

#[test]
fn a_relative_open_is_redirected_by_its_whole_name() {
    redirect_test::check_a_relative_open_is_redirected_by_its_whole_name(machine());
}

#[test]
fn a_looping_mapping_does_not_load() {
    redirect_test::check_a_looping_mapping_does_not_load(install, redirect_legacy::ENTRY, "legacy");
}
