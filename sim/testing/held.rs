//! Operations a filter holds, through a backend: deferred post callbacks
//! (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`, `PostOperation::defer`), pended pre callbacks
//! (`FLT_PREOP_PENDING`, `PreOperation::pend`) and `WhenSafe` second halves. Shared by
//! `legacy/tests/held.rs` and `minifilter/tests/held.rs` (each includes this file with
//! `#[path]` and builds [`Deferring`] with its backend's `driver!`).
//!
//! A filter that holds an operation releases it with its token, from anywhere: later from another
//! thread, or before the callback that took the token has even returned (resuming, completing or
//! dropping it right away). Either way the operation must go on exactly once, as the token says,
//! and the requester must see the result: the backend may not touch the operation after the
//! token released it, and may not report it pending when it is not.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::{Cell, RefCell};

use fsfilter::{
    DeferredPost, Filter, Instance, InstanceSetup, IoStatus, Irql, MajorFunction, Operation,
    PendedOperation, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome, PreResume,
    Registration, Result, ServiceParameters, Status,
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
    /// Pends the read's pre callback and releases the token as said before the pre callback
    /// returns.
    PendEarly(Release),
    /// Pends the read's pre callback and keeps the token; the next pre callback of another
    /// operation releases it as said.
    PendLater(Release),
    /// Pends the query's pre callback and keeps the token; the post callback of a read that
    /// completes from a DPC resumes it, at `DISPATCH_LEVEL`.
    PendQueryResumedAtDispatch,
    /// Answers `WhenSafe` from every post callback, at any IRQL.
    AlwaysWhenSafe,
    /// Pends the read's pre callback and asks, before returning, for it to go on with a post
    /// callback 5 ms later (`resume_after`).
    PendDelayed,
    /// Takes a pend token for every read, keeps it, and answers `WithPost` all the same.
    PendIgnored,
}

/// How a pended operation's token is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// `resume(PreResume::WithPost(Ctx))`.
    WithPost,
    /// `resume(PreResume::NoPost)`.
    NoPost,
    /// `resume(PreResume::Complete(STATUS_ACCESS_DENIED))`.
    Deny,
    /// Dropped: completes the operation with `STATUS_CANCELLED`.
    Drop,
}

impl Release {
    fn release(self, token: PendedOperation<Ctx>) {
        match self {
            Release::WithPost => token.resume(PreResume::WithPost(Ctx)),
            Release::NoPost => token.resume(PreResume::NoPost),
            Release::Deny => {
                token.resume(PreResume::Complete(IoStatus::new(Status::ACCESS_DENIED)))
            }
            Release::Drop => drop(token),
        }
    }

    /// What the reader gets.
    fn status(self) -> Status {
        match self {
            Release::WithPost | Release::NoPost => Status::SUCCESS,
            Release::Deny => Status::ACCESS_DENIED,
            Release::Drop => Status::CANCELLED,
        }
    }

    /// The `FLT_PREOP_*` the operation goes on with.
    fn outcome(self) -> &'static str {
        match self {
            Release::WithPost => "FLT_PREOP_SUCCESS_WITH_CALLBACK",
            Release::NoPost => "FLT_PREOP_SUCCESS_NO_CALLBACK",
            Release::Deny | Release::Drop => "FLT_PREOP_COMPLETE",
        }
    }
}

thread_local! {
    /// The mode of the run (the machine runs on the test's thread).
    static WHEN: Cell<Mode> = const { Cell::new(Mode::Early) };
    /// The token a `Later` run keeps.
    static KEPT: RefCell<Option<DeferredPost>> = const { RefCell::new(None) };
    /// The token a `PendLater` run keeps.
    static KEPT_PEND: RefCell<Option<(PendedOperation<Ctx>, Release)>> = const { RefCell::new(None) };
    /// Whether `defer` answered a token each time it was asked.
    static DEFERRED: Cell<u32> = const { Cell::new(0) };
    /// Tokens completed from a later callback.
    static COMPLETED_LATER: Cell<u32> = const { Cell::new(0) };
    /// Completion contexts ([`Ctx`]) dropped.
    static CTX_DROPS: Cell<u32> = const { Cell::new(0) };
    /// The IRQL of the post-read callback and of its second half, as the filter saw them.
    static IRQLS: RefCell<Vec<(&'static str, Irql)>> = const { RefCell::new(Vec::new()) };
    /// The tokens a `PendIgnored` run took, and whether each read got one.
    static IGNORED: RefCell<(Vec<PendedOperation<Ctx>>, Vec<bool>)> =
        const { RefCell::new((Vec::new(), Vec::new())) };
}

/// [`Deferring`]'s completion context: it holds nothing (no allocation to carry it, so a run
/// starved of pool still gets it to `WhenSafe`), and counts its drops in [`CTX_DROPS`], so a test
/// can see that a context is dropped exactly once whichever way its operation ends.
pub(crate) struct Ctx;

impl Drop for Ctx {
    fn drop(&mut self) {
        CTX_DROPS.with(|d| d.set(d.get() + 1));
    }
}

/// Defers `op`'s post callback and completes the token as `when` says.
fn defer(op: &mut PostOperation<'_>, when: Mode) -> PostOutcome<Ctx> {
    let Some((token, receipt)) = op.defer() else { return PostOutcome::Finished };
    DEFERRED.with(|d| d.set(d.get() + 1));
    match when {
        Mode::Later => KEPT.with(|k| *k.borrow_mut() = Some(token)),
        Mode::Dropped => drop(token),
        _ => token.complete(),
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
    type CompletionContext = Ctx;

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Deferring)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PreOperation<'_, Ctx>,
    ) -> PreOutcome<Ctx> {
        let mode = WHEN.with(Cell::get);
        if op.major() == MajorFunction::QueryInformation {
            if mode == Mode::PendQueryResumedAtDispatch {
                let Some((token, receipt)) = op.pend() else { return PreOutcome::NoPost };
                KEPT_PEND.with(|k| *k.borrow_mut() = Some((token, Release::WithPost)));
                return PreOutcome::Pending(receipt);
            }
            if let Some(token) = KEPT.with(|k| k.borrow_mut().take()) {
                COMPLETED_LATER.with(|c| c.set(c.get() + 1));
                token.complete();
            }
            if let Some((token, release)) = KEPT_PEND.with(|k| k.borrow_mut().take()) {
                COMPLETED_LATER.with(|c| c.set(c.get() + 1));
                release.release(token);
            }
            // Released late, denying: they hold nothing, so nothing happens.
            for token in IGNORED.with(|i| std::mem::take(&mut i.borrow_mut().0)) {
                token.resume(PreResume::Complete(IoStatus::new(Status::ACCESS_DENIED)));
            }
            return PreOutcome::NoPost;
        }
        if mode == Mode::PendIgnored {
            let token = op.pend().map(|(token, _receipt)| token);
            IGNORED.with(|i| {
                let mut i = i.borrow_mut();
                i.1.push(token.is_some());
                i.0.extend(token);
            });
            return PreOutcome::WithPost(Ctx);
        }
        if mode == Mode::PendDelayed {
            let Some((token, receipt)) = op.pend() else { return PreOutcome::WithPost(Ctx) };
            token.resume_after(5, PreResume::WithPost(Ctx));
            return PreOutcome::Pending(receipt);
        }
        let (Mode::PendEarly(release) | Mode::PendLater(release)) = mode else {
            return PreOutcome::WithPost(Ctx);
        };
        let Some((token, receipt)) = op.pend() else { return PreOutcome::WithPost(Ctx) };
        if let Mode::PendLater(_) = mode {
            KEPT_PEND.with(|k| *k.borrow_mut() = Some((token, release)));
        } else {
            release.release(token);
        }
        PreOutcome::Pending(receipt)
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        ctx: Ctx,
        _: PostFlags,
    ) -> PostOutcome<Ctx> {
        let irql = op.services().irql();
        IRQLS.with(|i| i.borrow_mut().push(("post", irql)));
        match WHEN.with(Cell::get) {
            Mode::WhenSafe | Mode::WhenSafeThenEarly if irql > Irql::APC => {
                PostOutcome::WhenSafe(ctx)
            }
            Mode::AlwaysWhenSafe => PostOutcome::WhenSafe(ctx),
            Mode::WhenSafe | Mode::WhenSafeThenEarly => PostOutcome::Finished,
            Mode::PendEarly(_) | Mode::PendLater(_) | Mode::PendDelayed => PostOutcome::Finished,
            Mode::PendQueryResumedAtDispatch => {
                if let Some((token, release)) = KEPT_PEND.with(|k| k.borrow_mut().take()) {
                    COMPLETED_LATER.with(|c| c.set(c.get() + 1));
                    release.release(token);
                }
                PostOutcome::Finished
            }
            when => defer(op, when),
        }
    }

    fn post_operation_when_safe(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: Ctx,
    ) -> PostOutcome<Ctx> {
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
    /// The outcomes of its pre-read callbacks, and of their resumptions, as the trace recorded
    /// them.
    pub pre_outcomes: Vec<&'static str>,
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
    KEPT_PEND.with(|k| *k.borrow_mut() = None);
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
    if matches!(when, Mode::Later | Mode::PendLater(_)) {
        // Through a handle of its own: on the read's synchronous handle the query would wait
        // for the read (the file object's lock), which waits for it.
        let other = m.open(c, "data.bin", CreateOptions::open()).expect("open");
        let seen = query.clone();
        m.schedule(10, move |m| {
            // FileInternalInformation (an IRP: standard information would be offered to fast
            // I/O first).
            seen.set(Some(m.query_information(other, 6, 8).status));
            m.close_handle(other);
        });
    }
    let before = m.now_ms();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    let read_ms = m.now_ms() - before;
    m.settle();
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{when:?}: {:?}", m.findings());
    assert!(m.crashed().is_none(), "{when:?}: {:?}", m.crashed());
    let callbacks = m.callbacks_of(NAME);
    let post_outcomes = callbacks
        .iter()
        .filter_map(|(_, cb)| match *cb {
            Callback::Post { major: MajorFunction::Read, outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    let pre_outcomes = callbacks
        .iter()
        .filter_map(|(_, cb)| match *cb {
            Callback::Pre { major: MajorFunction::Read, outcome, .. }
            | Callback::Resumed { outcome } => Some(outcome),
            _ => None,
        })
        .collect();
    Seen {
        read: (r.status, r.data.first().copied()),
        query: query.get(),
        deferred: DEFERRED.with(Cell::get),
        completed_later: COMPLETED_LATER.with(Cell::get),
        post_outcomes,
        pre_outcomes,
        read_ms,
        irqls: IRQLS.with(|i| i.borrow().clone()),
    }
}

/// The assertions both backends share; `pender` installs a filter that pends reads, for the
/// runs where the lower drivers complete the read asynchronously; `resume_allocates` says
/// whether a resumption at `DISPATCH_LEVEL` takes an allocation of the filter's own (both
/// backends' work items: `FltCompletePendedPreOperation` sends an operation on at `APC_LEVEL` at
/// most, which the minifilter backend broke before a fix of December 4).
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    pender: fn(&mut Machine),
    resume_allocates: bool,
) {
    for below in [None, Some(pender)] {
        check_with(install, entry, below);
    }
    check_when_safe(install, entry);
    check_pended(install, entry);
    check_resumed_at_dispatch(install, entry, resume_allocates);
    check_when_safe_kinds(install, entry);
    check_delayed_without_memory(install, entry);
}

/// A pended read asked to go on 5 ms later (`resume_after`, set before its pre callback
/// returned) waits out the delay on a timer and a worker; when nothing can be allocated for them
/// the delay is dropped and the read goes on at once, with its post callback (the legacy
/// backend resumes the IRP it pended right away; the minifilter backend answers the decision
/// from the pre callback instead of `FLT_PREOP_PENDING`). Either way it completes once, with
/// the file's data.
fn check_delayed_without_memory(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
) {
    for starve in [false, true] {
        WHEN.with(|w| w.set(Mode::PendDelayed));
        let mut m = Machine::new(MachineConfig { seed: 5 });
        let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 4096]));
        install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
        m.boot();
        let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
        if starve {
            // The next allocation of the filter's own, for the delayed resumption's worker, fails
            // (a later one, the read's completion routine, may not: rule 7 would fail the read).
            m.kernel(|k| {
                let n = k.faults.service_count(NAME, fsfilter_sim::FaultKind::Pool);
                k.faults.plan_for_service(NAME, fsfilter_sim::FaultKind::Pool, n + 1);
            });
        }
        let before = m.now_ms();
        let r = m.read(h, Some(0), 512, IoMode::NonCached);
        let took = m.now_ms() - before;
        m.settle();
        m.close_handle(h);
        assert!(m.findings().is_empty(), "starve {starve}: {:?}", m.findings());
        assert_eq!((r.status, r.data.first()), (Status::SUCCESS, Some(&STORED)), "{starve}");
        assert_eq!(took >= 5, !starve, "starve {starve}: the delay ({took} ms)");
        assert_eq!(m.kernel(|k| !k.faults.injected.is_empty()), starve);
        let posts = m
            .callbacks_of(NAME)
            .into_iter()
            .filter(|(_, cb)| matches!(cb, Callback::Post { major: MajorFunction::Read, .. }))
            .count();
        assert_eq!(posts, 1, "starve {starve}");
    }
}

/// `WhenSafe` from a post callback at `PASSIVE_LEVEL`: the second half runs right away for an
/// IRP that is not paging I/O; fast I/O and paging I/O cannot be deferred, and their `WhenSafe`
/// is treated as `Finished`, the context dropped (docs/callback-model.md, rule 9).
fn check_when_safe_kinds(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    WHEN.with(|w| w.set(Mode::AlwaysWhenSafe));
    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 4096]));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    // The first cached read initiates caching (an IRP); the second is fast I/O.
    assert_eq!(m.read(h, Some(0), 512, IoMode::Cached).status, Status::SUCCESS);
    let mut halves = Vec::new();
    for (what, mode) in [
        ("fast I/O", IoMode::Cached),
        ("paging", IoMode::Paging),
        ("non-cached", IoMode::NonCached),
    ] {
        IRQLS.with(|i| i.borrow_mut().clear());
        let r = m.read(h, Some(0), 512, mode);
        assert_eq!(r.status, Status::SUCCESS, "{what}");
        let seen = IRQLS.with(|i| i.borrow().clone());
        halves.push((what, seen.iter().filter(|(half, _)| *half == "when_safe").count()));
    }
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(halves, [("fast I/O", 0), ("paging", 0), ("non-cached", 1)]);
}

/// A pend token taken but not answered with `Pending` holds nothing: the operation goes on as the
/// callback answered, the next operation (often at the same address) can pend again, however
/// many tokens were left unused, and a late release of such a token touches nothing (as the
/// Filter Manager backend always did; the legacy backend kept their entries before a fix of December 4).
pub(crate) fn check_unused_pend_tokens(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
) {
    WHEN.with(|w| w.set(Mode::PendIgnored));
    IGNORED.with(|i| *i.borrow_mut() = (Vec::new(), Vec::new()));
    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 4096]));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    let reads = 80;
    for n in 0..reads {
        let r = m.read(h, Some(0), 512, IoMode::NonCached);
        assert_eq!((r.status, r.data.first().copied()), (Status::SUCCESS, Some(STORED)), "{n}");
    }
    // The query's pre callback releases the tokens late, denying: they hold nothing, so nothing
    // happens to the read that follows (an IRP at the same address, often).
    assert_eq!(m.query_information(h, 6, 8).status, Status::SUCCESS);
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!((r.status, r.data.first().copied()), (Status::SUCCESS, Some(STORED)));
    assert_eq!(m.query_information(h, 6, 8).status, Status::SUCCESS);
    let got = IGNORED.with(|i| std::mem::take(&mut i.borrow_mut().1));
    assert_eq!(got, vec![true; reads + 1], "every read could pend");
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert!(m.crashed().is_none(), "{:?}", m.crashed());
    let posts = m
        .callbacks_of(NAME)
        .iter()
        .filter(|(_, cb)| matches!(cb, Callback::Post { major: MajorFunction::Read, .. }))
        .count();
    assert_eq!(posts, reads + 1, "every read got its post callback");
}

/// A post callback at `DISPATCH_LEVEL` asks for `WhenSafe` while the filter can allocate nothing
/// (every pool allocation of its own fails from the read on): the second half never runs above
/// `APC_LEVEL`, and here it does not run at all. The legacy backend has no work item to post it
/// with; the Filter Manager has none either (`FltDoCompletionProcessingWhenSafe` answers FALSE
/// with `FLT_POSTOP_FINISHED_PROCESSING`, facts.md §4, and the minifilter backend drops the
/// context it encoded). Both backends agree: the context is dropped once, the post callback's
/// answer is `FINISHED_PROCESSING`, and the read completes once, with its data
/// (docs/callback-model.md, rule 14). Until December 6 the simulated Filter Manager never failed
/// to post, so the minifilter backend's side of this ran only against the legacy backend's.
///
/// `read_allocates`: the backend takes a pool allocation of the filter's for the read itself
/// before its post callback runs (the legacy backend's `IoSetCompletionRoutineEx`), which must
/// not fail (rule 7 would fail the read); every allocation after it fails.
pub(crate) fn check_when_safe_without_memory(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    read_allocates: bool,
) {
    WHEN.with(|w| w.set(Mode::WhenSafe));
    IRQLS.with(|i| i.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 4096]));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    // The read's own IoSetCompletionRoutineEx (legacy) is the next allocation; every one after
    // it, for posting the second half, fails.
    m.kernel(|k| {
        let n = k.faults.service_count(NAME, fsfilter_sim::FaultKind::Pool);
        let first = n + 1 + u64::from(read_allocates);
        for nth in first..first + 8 {
            k.faults.plan_for_service(NAME, fsfilter_sim::FaultKind::Pool, nth);
        }
    });
    CTX_DROPS.with(|d| d.set(0));
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    m.settle();
    let drops = CTX_DROPS.with(Cell::get);
    let starved = m.kernel(|k| !k.faults.injected.is_empty());
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert!(m.crashed().is_none(), "{:?}", m.crashed());
    assert_eq!((r.status, r.data.first().copied()), (Status::SUCCESS, Some(STORED)));
    let io = r.io.expect("the read was an IRP");
    assert_eq!(m.completions_of(io), [Status::SUCCESS], "the read completed once");
    assert!(starved, "posting the second half took the filter's pool, and failed");
    assert_eq!(drops, 1, "the read's completion context was dropped once");
    let irqls = IRQLS.with(|i| i.borrow().clone());
    assert_eq!(irqls, [("post", Irql::DISPATCH)], "no second half without a worker");
    let outcomes: Vec<&str> = m
        .callbacks_of(NAME)
        .iter()
        .filter_map(|(_, cb)| match *cb {
            Callback::Post { major: MajorFunction::Read, outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, ["FLT_POSTOP_FINISHED_PROCESSING"], "the read finished at once");
}

/// A pended operation resumed at `DISPATCH_LEVEL` (from a post callback of a read completed by a
/// DPC) goes on to the file system at `PASSIVE_LEVEL`, as dispatch routines must be called
/// (`IoCallDriver` above `APC_LEVEL` is reported): the resumption is handed to a worker. When
/// nothing can be allocated for the worker, the operation fails instead of reaching the file
/// system at `DISPATCH_LEVEL` (either backend).
fn check_resumed_at_dispatch(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    resume_allocates: bool,
) {
    let (query, read, starved) = resumed_at_dispatch(install, entry, false);
    assert_eq!((query, read, starved), (Status::SUCCESS, Some(Status::SUCCESS), false));
    let (query, read, starved) = resumed_at_dispatch(install, entry, true);
    assert_eq!(read, Some(Status::SUCCESS));
    assert_eq!(starved, resume_allocates, "the resumption allocated (or not) as expected");
    if resume_allocates {
        assert_eq!(query, Status::INSUFFICIENT_RESOURCES, "no worker: the query fails");
    } else {
        assert_eq!(query, Status::SUCCESS, "resumed without allocating");
    }
}

/// One run of [`check_resumed_at_dispatch`]: the query's and the read's statuses, and whether a
/// planned pool failure was hit (`starve`: every pool allocation of the filter after the read's
/// own completion routine fails).
fn resumed_at_dispatch(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    starve: bool,
) -> (Status, Option<Status>, bool) {
    WHEN.with(|w| w.set(Mode::PendQueryResumedAtDispatch));
    KEPT_PEND.with(|k| *k.borrow_mut() = None);
    COMPLETED_LATER.with(|c| c.set(0));
    IRQLS.with(|i| i.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 4096]));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    // The read goes through a handle of its own: on the query's synchronous handle it would wait
    // for the query (the file object's lock), which waits for it.
    let other = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    let read = std::rc::Rc::new(Cell::new(None));
    let seen = read.clone();
    m.schedule(10, move |m| {
        if starve {
            // The read's IoSetCompletionRoutineEx is the next allocation; the ones after it, for
            // the resumption's worker, fail.
            m.kernel(|k| {
                let n = k.faults.service_count(NAME, fsfilter_sim::FaultKind::Pool);
                for nth in n + 2..n + 10 {
                    k.faults.plan_for_service(NAME, fsfilter_sim::FaultKind::Pool, nth);
                }
            });
        }
        seen.set(Some(m.read(other, Some(0), 512, IoMode::NonCached).status));
        m.close_handle(other);
    });
    // FileInternalInformation (an IRP; standard information would be offered to fast I/O, which
    // cannot be pended): pended until the read's post callback resumes it.
    let query = m.query_information(h, 6, 8);
    m.settle();
    m.close_handle(h);
    assert!(m.findings().is_empty(), "starve {starve}: {:?}", m.findings());
    assert_eq!(COMPLETED_LATER.with(Cell::get), 1, "the read's post resumed the query");
    assert_eq!(IRQLS.with(|i| i.borrow().clone()), [("post", Irql::DISPATCH)]);
    let starved = m.kernel(|k| !k.faults.injected.is_empty());
    (query.status, read.get(), starved)
}

/// A pended pre callback goes on as its token says, once, whether the token is released before
/// the pre callback returns (the operation is never pended: the pre callback's answer becomes the
/// release's) or from another operation's callback 10 ms later.
fn check_pended(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    for release in [Release::WithPost, Release::NoPost, Release::Deny, Release::Drop] {
        let posts: &[&str] =
            if release == Release::WithPost { &["FLT_POSTOP_FINISHED_PROCESSING"] } else { &[] };
        let early = run(install, entry, Mode::PendEarly(release), None);
        assert_eq!(early.read.0, release.status(), "{release:?} early: {early:?}");
        assert_eq!(early.pre_outcomes, [release.outcome()], "{release:?} early: {early:?}");
        assert_eq!(early.post_outcomes, posts, "{release:?} early: {early:?}");
        assert_eq!(early.read_ms, 0, "{release:?} early: {early:?}");

        let later = run(install, entry, Mode::PendLater(release), None);
        assert_eq!(later.read.0, release.status(), "{release:?} later: {later:?}");
        assert_eq!(later.completed_later, 1, "{release:?} later: {later:?}");
        assert_eq!(later.query, Some(Status::SUCCESS), "{release:?} later: {later:?}");
        assert_eq!(
            later.pre_outcomes,
            ["FLT_PREOP_PENDING", release.outcome()],
            "{release:?} later: {later:?}"
        );
        assert_eq!(later.post_outcomes, posts, "{release:?} later: {later:?}");
        assert!(later.read_ms >= 10, "{release:?} later: {later:?}");
        if release == Release::WithPost {
            assert_eq!(later.read.1, Some(STORED), "{later:?}");
        }
    }
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
