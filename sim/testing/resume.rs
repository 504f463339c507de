//! A pended cleanup resumed with a post callback when there is no room for the completion
//! context. Shared by `legacy/tests/resume.rs` and `minifilter/tests/resume.rs` (each includes
//! this file with `#[path]` and builds [`Resumer`] with its backend's `driver!`).
//!
//! Rule 7 of docs/callback-model.md: without room for a completion context an operation fails
//! closed, but a cleanup or close goes on without its post callback; it must reach the file
//! system, which carries out the handle's delete-on-close there. Both backends decide a resume
//! from the major function recorded when the operation was pended, not by reading an operation
//! that may be gone (`fsfilter_kernel::pending::Asked`); before that the resume of a cleanup with
//! a post and no pool completed it with success in the filter, and the file was never deleted.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::{Cell, RefCell};

use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, PendedOperation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, PreResume, Registration, Result,
    ServiceParameters, Status,
};
use fsfilter_sim::faults::FaultKind;
use fsfilter_sim::{CreateOptions, FsKind, Machine, MachineConfig, ServiceSpec, VolumeSpec};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Resumer";

thread_local! {
    /// The cleanup's token, kept until the query releases it.
    static KEPT: RefCell<Option<PendedOperation<u64>>> = const { RefCell::new(None) };
    /// Whether the first cleanup was pended already.
    static HELD_ONE: Cell<bool> = const { Cell::new(false) };
    /// Whether the query starves the filter's pool before it resumes the cleanup.
    static STARVE: Cell<bool> = const { Cell::new(false) };
    /// The contexts of the post-cleanup callbacks of resumed cleanups (7; other cleanups carry 1).
    static POSTS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Pends the first cleanup of `held.txt`; the next query releases it with a post callback, whose
/// context (a `u64`: it takes pool) may find no room.
pub struct Resumer;

impl Filter for Resumer {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Cleanup).pre().post())
        .operation(Operation::new(MajorFunction::QueryInformation).pre())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = u64;

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Resumer)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PreOperation<'_, u64>,
    ) -> PreOutcome<u64> {
        if op.major() == MajorFunction::QueryInformation {
            if let Some(token) = KEPT.with(|k| k.borrow_mut().take()) {
                if STARVE.with(Cell::get) {
                    // The next pool allocation of the filter (the resume's context) fails.
                    fsfilter_sim::kernel::with(|k| {
                        let next = k.faults.service_count(NAME, FaultKind::Pool) + 1;
                        k.faults.plan_for_service(NAME, FaultKind::Pool, next);
                    });
                }
                token.resume(PreResume::WithPost(7));
            }
            return PreOutcome::NoPost;
        }
        if HELD_ONE.with(|h| h.replace(true)) {
            return PreOutcome::WithPost(1);
        }
        let Some((token, receipt)) = op.pend() else { return PreOutcome::WithPost(1) };
        KEPT.with(|k| *k.borrow_mut() = Some(token));
        PreOutcome::Pending(receipt)
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        _: &mut PostOperation<'_>,
        context: u64,
        _: PostFlags,
    ) -> PostOutcome<u64> {
        if context == 7 {
            POSTS.with(|p| p.borrow_mut().push(context));
        }
        PostOutcome::Finished
    }
}

/// What one run showed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The status of the handle's close (its cleanup, pended, then resumed by the query).
    pub close: Status,
    /// Whether the file, opened with `FILE_DELETE_ON_CLOSE`, is gone after the close.
    pub deleted: bool,
    /// The contexts of the resumed cleanup's post callbacks.
    pub posts: Vec<u64>,
    /// Whether the planned pool failure was hit.
    pub starved: bool,
}

/// Opens `held.txt` with `FILE_DELETE_ON_CLOSE`, closes it (its cleanup pended), and has a second
/// caller query another file 5 ms later, which resumes the cleanup with a post (starving the
/// filter's pool first when `starve`).
pub(crate) fn run(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    starve: bool,
) -> Seen {
    KEPT.with(|k| *k.borrow_mut() = None);
    HELD_ONE.with(|h| h.set(false));
    STARVE.with(|s| s.set(starve));
    POSTS.with(|p| p.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 3 });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("held.txt", b"held").file("other.txt", b"x"),
    );
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let delete_on_close = CreateOptions::open()
        .access(fsfilter_sim::nt::access::DELETE | fsfilter_sim::nt::access::GENERIC_READ)
        .options(fsfilter_sim::nt::create_options::DELETE_ON_CLOSE);
    let h = m.open(c, "held.txt", delete_on_close).expect("open");
    let other = m.open(c, "other.txt", CreateOptions::open()).expect("open other");
    m.schedule(5, move |m| {
        // FileInternalInformation (an IRP: standard information would be offered to fast I/O
        // first).
        let _ = m.query_information(other, 6, 8);
    });
    let close = m.close_handle(h);
    m.settle();
    let deleted = m.file_contents(c, "held.txt").is_none();
    m.close_handle(other);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert!(m.crashed().is_none(), "{:?}", m.crashed());
    let starved = m.kernel(|k| !k.faults.injected.is_empty());
    Seen { close, deleted, posts: POSTS.with(|p| p.borrow().clone()), starved }
}

/// The assertions both backends share.
pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    // With room for the context, the cleanup goes on with its post callback and its context.
    let fed = run(install, entry, false);
    assert_eq!(fed, Seen { close: Status::SUCCESS, deleted: true, posts: vec![7], starved: false });
    // Without: it goes on all the same, without a post callback, and reaches the file system.
    let starved = run(install, entry, true);
    assert_eq!(
        starved,
        Seen { close: Status::SUCCESS, deleted: true, posts: vec![], starved: true }
    );
}
