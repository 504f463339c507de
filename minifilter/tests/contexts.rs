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

contexts::shared_tests!(
    install,
    counter::ENTRY,
    undeclared::ENTRY,
    // The Filter Manager's FltAllocateContext is the minifilter backend's allocation.
    FaultKind::AllocateContext,
);

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
