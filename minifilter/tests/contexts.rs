//! Stream contexts through the minifilter backend (`sim/testing/contexts.rs`, rule 28): Filter
//! Manager stream contexts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/contexts.rs"]
mod contexts;

use fsfilter::Status;
use fsfilter_sim::{FaultKind, IoMode, Machine, ServiceSpec, StopResult};

mod counter {
    fsfilter_minifilter::driver!(super::contexts::Counter);
}

mod undeclared {
    fsfilter_minifilter::driver!(super::contexts::Undeclared);
}

fn install(m: &mut Machine, spec: ServiceSpec) {
    common::install_minifilter(m, spec);
}

#[test]
fn one_context_per_stream_found_from_every_handle_and_freed_at_the_last_close_in_both_models() {
    contexts::check_one_context_per_stream(install, counter::ENTRY);
}

#[test]
fn irp_paging_and_fast_io_operations_find_the_context_in_both_models() {
    contexts::check_every_kind_finds_it(install, counter::ENTRY);
}

#[test]
fn a_deleted_context_is_not_found_and_a_new_one_is_attached_in_both_models() {
    contexts::check_delete(install, counter::ENTRY);
}

#[test]
fn two_threads_on_one_stream_share_one_context_in_both_models() {
    contexts::check_two_threads(install, counter::ENTRY);
}

#[test]
fn contexts_still_attached_are_freed_before_the_unload_returns_in_both_models() {
    contexts::check_unload(install, counter::ENTRY);
}

#[test]
fn stream_context_is_refused_where_rule_28_says_in_both_models() {
    contexts::check_refusals(install, counter::ENTRY, undeclared::ENTRY);
}

#[test]
fn instance_setup_outside_any_operation_is_refused_in_both_models() {
    contexts::check_outside_an_operation(install, counter::ENTRY);
}

#[test]
fn a_context_that_cannot_be_allocated_is_refused_and_nothing_attached_in_both_models() {
    // The Filter Manager's FltAllocateContext is the minifilter backend's allocation.
    contexts::check_allocation_failure(install, counter::ENTRY, FaultKind::AllocateContext);
}

#[test]
fn a_dismount_frees_the_context_once_in_both_models() {
    contexts::check_dismount(install, counter::ENTRY);
}

/// Minifilter model only (the legacy model drains no post): a post the Filter Manager drains at
/// the instance's teardown cannot attach a context, `STATUS_FLT_DELETING_OBJECT` (the reference
/// pages of `FltAllocateContext`, for a filter being unregistered, and `FltSetStreamContext`, for
/// an instance being torn down: a dismount, where the backend's new context is released and never
/// reported freed). The read of `lazy-late.txt` is pended 50 ms by a probe below; the stop or the
/// dismount comes at 5 ms.
#[test]
fn a_post_drained_by_the_teardown_cannot_attach_a_context() {
    for stop in [true, false] {
        let (mut m, c) =
            contexts::machine_with(install, &[(contexts::COUNTER, counter::ENTRY)], |m| {
                common::install_pender(m, "pend:50 read *lazy-late.txt");
            });
        let h = contexts::open(&mut m, c, r"ctx\lazy-late.txt");
        contexts::seen();
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let result = done.clone();
        m.schedule(5, move |m| {
            if stop {
                assert_eq!(m.stop(contexts::COUNTER), StopResult::Unloaded);
            } else {
                assert_eq!(m.dismount(c), Status::SUCCESS);
            }
            result.set(true);
        });
        let _ = m.read(h, Some(0), 512, IoMode::NonCached);
        m.settle();
        assert!(done.get());
        let s = contexts::seen();
        assert_eq!(
            contexts::answers(&s, "read draining"),
            [Err(Status::FLT_DELETING_OBJECT)],
            "stop {stop}: {s:#?}"
        );
        assert!(contexts::freed(&s).is_empty(), "stop {stop}: {s:#?}");
        let _ = m.close_handle(h);
        m.settle();
        assert!(m.findings().is_empty(), "stop {stop}: {:?}", m.findings());
        if !stop {
            assert_eq!(m.stop(contexts::COUNTER), StopResult::Unloaded);
            assert!(m.findings().is_empty(), "{:?}", m.findings());
        }
        assert!(contexts::freed(&contexts::seen()).is_empty());
    }
}
