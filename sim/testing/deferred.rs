//! Deferred post callbacks (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`, `PostOperation::defer`)
//! through a backend, shared by `legacy/tests/deferred.rs` and `minifilter/tests/deferred.rs`
//! (each includes this file with `#[path]` and builds [`Deferring`] with its backend's
//! `driver!`).
//!
//! A filter that defers a post callback holds the operation's completion until it completes the
//! [`fsfilter::DeferredPost`], from anywhere: later from another thread, or before its post
//! callback has even returned (completing or dropping the token right away). Either way the
//! operation must complete exactly once, with the status the lower drivers gave it, and the
//! requester must see that status: the backend may not touch the operation after the token
//! completed it, and may not report it pending when it is not.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::{Cell, RefCell};

use fsfilter::{
    DeferredPost, Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Status,
};
use fsfilter_sim::{
    Callback, CreateOptions, FsKind, IoMode, Machine, MachineConfig, ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Deferring";

/// The byte the file holds.
const STORED: u8 = 0x5A;

/// How [`Deferring`] answers its post callbacks, and when it completes a post it deferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Completes the token before its post callback returns.
    Early,
    /// Drops the token before its post callback returns (dropping completes it).
    Dropped,
    /// Keeps the token; the next pre callback of another operation completes it.
    Later,
    /// Does not defer: answers `WhenSafe` when the post callback runs above `APC_LEVEL` (the
    /// read completed from a DPC), and finishes in the second half.
    WhenSafe,
    /// As `WhenSafe`, and the second half defers and completes its token before returning.
    WhenSafeThenEarly,
}

thread_local! {
    /// The mode of the run (the machine runs on the test's thread).
    static WHEN: Cell<Mode> = const { Cell::new(Mode::Early) };
    /// The token a `Later` run keeps.
    static KEPT: RefCell<Option<DeferredPost>> = const { RefCell::new(None) };
    /// Whether `defer` answered a token each time it was asked.
    static DEFERRED: Cell<u32> = const { Cell::new(0) };
    /// Tokens completed from a later callback.
    static COMPLETED_LATER: Cell<u32> = const { Cell::new(0) };
    /// The IRQL of the post-read callback and of its second half, as the filter saw them.
    static IRQLS: RefCell<Vec<(&'static str, Irql)>> = const { RefCell::new(Vec::new()) };
}

/// Defers `op`'s post callback and completes the token as `when` says.
fn defer(op: &mut PostOperation<'_>, when: Mode) -> PostOutcome<()> {
    let Some((token, receipt)) = op.defer() else { return PostOutcome::Finished };
    DEFERRED.with(|d| d.set(d.get() + 1));
    match when {
        Mode::Later => KEPT.with(|k| *k.borrow_mut() = Some(token)),
        Mode::Dropped => drop(token),
        Mode::Early | Mode::WhenSafe | Mode::WhenSafeThenEarly => token.complete(),
    }
    PostOutcome::MoreProcessing(receipt)
}

/// Defers the post callback of every non-paging read, and completes it as [`WHEN`] says.
pub(crate) struct Deferring;

impl Filter for Deferring {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .operation(Operation::new(MajorFunction::QueryInformation).pre())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Deferring)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        if op.major() == MajorFunction::QueryInformation {
            if let Some(token) = KEPT.with(|k| k.borrow_mut().take()) {
                COMPLETED_LATER.with(|c| c.set(c.get() + 1));
                token.complete();
            }
            return PreOutcome::NoPost;
        }
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let irql = op.services().irql();
        IRQLS.with(|i| i.borrow_mut().push(("post", irql)));
        match WHEN.with(Cell::get) {
            Mode::WhenSafe | Mode::WhenSafeThenEarly if irql > Irql::APC => {
                PostOutcome::WhenSafe(())
            }
            Mode::WhenSafe | Mode::WhenSafeThenEarly => PostOutcome::Finished,
            when => defer(op, when),
        }
    }

    fn post_operation_when_safe(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
    ) -> PostOutcome<()> {
        IRQLS.with(|i| i.borrow_mut().push(("when_safe", op.services().irql())));
        match WHEN.with(Cell::get) {
            Mode::WhenSafeThenEarly => defer(op, Mode::WhenSafeThenEarly),
            _ => PostOutcome::Finished,
        }
    }
}

/// What one run showed.
#[derive(Debug)]
pub(crate) struct Seen {
    /// The non-cached read's status and first byte.
    pub read: (Status, Option<u8>),
    /// The query's status (a `Later` run's query completes the deferred read).
    pub query: Option<Status>,
    /// Posts the filter deferred.
    pub deferred: u32,
    /// Tokens completed from a later callback.
    pub completed_later: u32,
    /// The outcomes of the filter's post-read callbacks, as the trace recorded them.
    pub post_outcomes: Vec<&'static str>,
    /// Virtual time the read took, in ms.
    pub read_ms: u64,
    /// The IRQLs of the post-read callback and its second half.
    pub irqls: Vec<(&'static str, Irql)>,
}

/// Runs a non-cached read through the filter installed by `install`, deferring its post
/// callback as `when` says; a `Later` run has a second caller query the file 10 ms later, and
/// that query's pre callback completes the deferred read. With `below`, that filter is installed
/// first, under the filter: it pends reads for a few milliseconds, so the read's post callback
/// runs in a completion routine of an IRP completed asynchronously rather than in the thread
/// that sent it.
pub(crate) fn run(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    when: Mode,
    below: Option<fn(&mut Machine)>,
) -> Seen {
    WHEN.with(|w| w.set(when));
    KEPT.with(|k| *k.borrow_mut() = None);
    DEFERRED.with(|d| d.set(0));
    COMPLETED_LATER.with(|c| c.set(0));
    IRQLS.with(|i| i.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 4096]));
    if let Some(below) = below {
        below(&mut m);
    }
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    if matches!(when, Mode::WhenSafe | Mode::WhenSafeThenEarly) {
        // Non-cached transfers complete from a DPC: the post callback runs at DISPATCH_LEVEL.
        m.kernel(|k| k.fs.complete_at_dpc = true);
    }
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    let query = std::rc::Rc::new(Cell::new(None));
    if when == Mode::Later {
        let seen = query.clone();
        m.schedule(10, move |m| {
            // FileStandardInformation.
            seen.set(Some(m.query_information(h, 5, 24).status));
        });
    }
    let before = m.now_ms();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    let read_ms = m.now_ms() - before;
    m.settle();
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{when:?}: {:?}", m.findings());
    assert!(m.crashed().is_none(), "{when:?}: {:?}", m.crashed());
    let post_outcomes = m
        .callbacks_of(NAME)
        .into_iter()
        .filter_map(|(_, cb)| match cb {
            Callback::Post { major: MajorFunction::Read, outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    Seen {
        read: (r.status, r.data.first().copied()),
        query: query.get(),
        deferred: DEFERRED.with(Cell::get),
        completed_later: COMPLETED_LATER.with(Cell::get),
        post_outcomes,
        read_ms,
        irqls: IRQLS.with(|i| i.borrow().clone()),
    }
}

/// The assertions both backends share; `pender` installs a filter that pends reads, for the
/// runs where the lower drivers complete the read asynchronously.
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    pender: fn(&mut Machine),
) {
    for below in [None, Some(pender)] {
        check_with(install, entry, below);
    }
    check_when_safe(install, entry);
}

/// A post callback at `DISPATCH_LEVEL` that asks for `WhenSafe` gets its second half at
/// `PASSIVE_LEVEL` (a worker: `FltDoCompletionProcessingWhenSafe`, or the legacy backend's held
/// IRP and work item), and the read completes once; so does one whose second half defers and
/// completes its token before returning.
fn check_when_safe(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    for when in [Mode::WhenSafe, Mode::WhenSafeThenEarly] {
        let seen = run(install, entry, when, None);
        assert_eq!(
            seen.irqls,
            [("post", Irql::DISPATCH), ("when_safe", Irql::PASSIVE)],
            "{when:?}: {seen:?}"
        );
        assert_eq!(seen.read, (Status::SUCCESS, Some(STORED)), "{when:?}: {seen:?}");
        assert_eq!(seen.deferred, u32::from(when == Mode::WhenSafeThenEarly), "{when:?}");
        assert_eq!(
            seen.post_outcomes,
            ["FLT_POSTOP_MORE_PROCESSING_REQUIRED", "FLT_POSTOP_FINISHED_PROCESSING"],
            "{when:?}: the first half held the operation for the second, which finished it"
        );
    }
}

fn check_with(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    below: Option<fn(&mut Machine)>,
) {
    let pended = below.is_some();
    for when in [Mode::Early, Mode::Dropped] {
        let seen = run(install, entry, when, below);
        assert_eq!(seen.deferred, 1, "{when:?}: the post was deferred: {seen:?}");
        assert_eq!(seen.read_ms > 0, pended, "{when:?}: pended below or not: {seen:?}");
        assert_eq!(
            seen.read,
            (Status::SUCCESS, Some(STORED)),
            "{when:?}: completing the token inside the post callback completes the read once, \
             with the file system's status: {seen:?}"
        );
        // Nothing held the operation when the callback returned: the backend answered
        // FLT_POSTOP_FINISHED_PROCESSING for it.
        assert_eq!(seen.post_outcomes, ["FLT_POSTOP_FINISHED_PROCESSING"], "{when:?}");
    }
    let later = run(install, entry, Mode::Later, below);
    assert_eq!(later.deferred, 1, "{later:?}");
    assert_eq!(later.completed_later, 1, "the query's pre callback completed the token: {later:?}");
    assert_eq!(later.query, Some(Status::SUCCESS), "{later:?}");
    assert_eq!(
        later.read,
        (Status::SUCCESS, Some(STORED)),
        "the read completes when the token does: {later:?}"
    );
    assert!(later.read_ms >= 10, "the read waited for the token: {later:?}");
    assert_eq!(later.post_outcomes, ["FLT_POSTOP_MORE_PROCESSING_REQUIRED"], "{later:?}");
}
