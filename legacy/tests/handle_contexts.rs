//! Handle contexts through the legacy backend (`sim/testing/handle_contexts.rs`, rule 29).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/handle_contexts.rs"]
mod handle_contexts;

use fsfilter_sim::{Machine, ServiceSpec};

mod handler {
    fsfilter_legacy::driver!(super::handle_contexts::Handler);
}

mod undeclared {
    fsfilter_legacy::driver!(super::handle_contexts::HandleUndeclared);
}

fn install(m: &mut Machine, spec: ServiceSpec) {
    common::install_legacy(m, spec);
}

handle_contexts::shared_handle_tests!(install, handler::ENTRY, undeclared::ENTRY);

/// Attaches a handle context in every successful post-create and counts the frees; reads have
/// a post callback, so that the legacy unload waits for one in flight.
struct Closer;

static CLOSER_FREED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl fsfilter::Filter for Closer {
    const REGISTRATION: fsfilter::Registration = fsfilter::Registration::new()
        .operation(fsfilter::Operation::new(fsfilter::MajorFunction::Create).post())
        .operation(fsfilter::Operation::new(fsfilter::MajorFunction::Read).pre().post())
        .validated();
    const HANDLE_CONTEXT_WORDS: usize = 1;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn fsfilter::ServiceParameters) -> fsfilter::Result<Self> {
        Ok(Closer)
    }

    fn instance_setup(&self, _: &fsfilter::InstanceSetup<'_>) -> fsfilter::Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &fsfilter::Instance<'_, ()>,
        _: &mut fsfilter::PreOperation<'_, ()>,
    ) -> fsfilter::PreOutcome<()> {
        fsfilter::PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &fsfilter::Instance<'_, ()>,
        op: &mut fsfilter::PostOperation<'_>,
        _: (),
        _: fsfilter::PostFlags,
    ) -> fsfilter::PostOutcome<()> {
        if op.header().major == fsfilter::MajorFunction::Create {
            let c = op.services().stream_context(fsfilter::ContextRequest::HandleGetOrCreate);
            assert!(c.is_ok(), "{:?}", c.err());
        }
        fsfilter::PostOutcome::Finished
    }

    fn handle_context_freed(&self, _: &[core::sync::atomic::AtomicU64]) {
        CLOSER_FREED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

mod closer {
    fsfilter_legacy::driver!(super::Closer);
}

/// A stop of the filter detaches its volume devices before it waits for the operations it sent
/// down with a post callback (here a read a driver below pends for 5 ms); a handle closed in
/// that wait no longer passes through the filter, so no `IRP_MJ_CLOSE` of ours removes its
/// handle context and the I/O manager deletes the file object with the context still linked
/// (on Windows `FsRtlPTeardownPerFileObjectContexts`' assertion, and a file object in freed
/// memory that the teardown's sweep then passes to `FsRtlRemovePerFileObjectContext`). The
/// backend unlinks its handle contexts as the teardown starts, before `IoDetachDevice`, while
/// every file object that has one is alive (its close would come through the filter).
#[test]
fn a_handle_closed_while_the_unload_drains_leaves_no_context_on_its_file_object() {
    use fsfilter_sim::{CreateOptions, FsKind, IoMode, MachineConfig, StopResult, VolumeSpec};
    let mut m = Machine::new(MachineConfig { seed: 29 });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", &[7; 512]).file("b.txt", &[7; 512]),
    );
    common::install_pender(&mut m, "pend:5 read");
    install(&mut m, ServiceSpec::new("Closer", closer::ENTRY, "contexts"));
    m.boot();
    let a = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let b = m.open(c, "b.txt", CreateOptions::open()).unwrap();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // A read of b through the filter, pended below until 5 ms; at 1 the stop, which detaches
    // and waits for the read; at 2 the close of a, which bypasses the filter.
    m.schedule(1, |m| assert_eq!(m.stop("Closer"), StopResult::Unloaded));
    m.schedule(2, move |m| assert_eq!(m.close_handle(a), fsfilter::Status::SUCCESS));
    assert_eq!(m.read(b, Some(0), 512, IoMode::NonCached).status, fsfilter::Status::SUCCESS);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(CLOSER_FREED.load(core::sync::atomic::Ordering::Relaxed), 2, "each freed once");
    assert_eq!(m.close_handle(b), fsfilter::Status::SUCCESS);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(CLOSER_FREED.load(core::sync::atomic::Ordering::Relaxed), 2);
}

/// The legacy backend takes a handle's context off its file object, and frees it, once its
/// pre-close is over and before the close goes down (rule 29): a legacy filter below sees the
/// close after the free, and nothing of the upper driver runs for the close once it went on
/// (until December 8 the removal ran as the close returned from below, after the lower
/// filter's pre- and post-close, touching the driver's state after the request it passed on).
/// The Filter Manager frees a stream-handle context after the close instead (docs/semantics.md,
/// row handle-contexts).
#[test]
fn a_handle_context_is_freed_before_the_close_goes_down_to_a_legacy_filter_below() {
    use fsfilter::Status;
    use handle_contexts::{HANDLE_UNDECLARED, HANDLER, Seen};
    let (mut m, c) = handle_contexts::machine(
        install,
        &[(HANDLE_UNDECLARED, undeclared::ENTRY), (HANDLER, handler::ENTRY)],
    );
    let options = fsfilter_sim::CreateOptions::open()
        .access(fsfilter_sim::nt::access::FILE_READ_DATA | fsfilter_sim::nt::access::SYNCHRONIZE);
    let h = m.create(c, r"\ctx\a.txt", options).handle.expect("opened");
    handle_contexts::seen();
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    let refused = Err(Status::NOT_SUPPORTED);
    assert_eq!(
        handle_contexts::seen(),
        [
            Seen::Asked { stage: "close", answer: Ok((false, vec![2, 1])) },
            Seen::Freed(vec![2, 1]),
            Seen::Asked { stage: "close", answer: refused.clone() },
            Seen::Asked { stage: "post-close", answer: refused.clone() },
            Seen::Asked { stage: "post-close", answer: refused },
        ]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
