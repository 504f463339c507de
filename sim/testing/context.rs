//! A completion context that is not zero-sized, carried from pre to post through a backend:
//! shared by `legacy/tests/context.rs` and `minifilter/tests/context.rs` (each includes this file
//! with `#[path]` and builds [`Carrier`] with its backend's `driver!`).
//!
//! A passthrough's context is `()`, which travels as NULL; any other context is moved into a pool
//! block between the callbacks (`fsfilter_kernel::context`). Whatever the operation's path (an
//! IRP completed synchronously or asynchronously, fast I/O, paging I/O, a synchronized operation,
//! a `WhenSafe` second half, a pended operation resumed or dropped, no pool left), every context
//! a pre callback hands over reaches the post callback of its own operation intact, or is dropped
//! by the backend when no post will run, and exactly once (docs/callback-model.md, rules 7 and 8);
//! the pool blocks are all given back (the simulator checks the driver's pool at unload).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use fsfilter::{
    Filter, Instance, InstanceSetup, IoStatus, MajorFunction, Operation, PendedOperation,
    PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome, PreResume, Registration,
    Result, ServiceParameters, Status,
};
use fsfilter_sim::{
    CreateOptions, FaultKind, FsKind, IoMode, IoRequest, Machine, MachineConfig, ServiceSpec,
    StopResult, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Carrier";

/// The byte the file holds.
const STORED: u8 = 0x3C;

/// A context of three words and an operation code, counted when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    serial: u64,
    major: MajorFunction,
    /// Derived from `serial`: a context that arrives damaged shows here.
    check: [u64; 2],
}

impl Ticket {
    fn new(major: MajorFunction) -> Ticket {
        let serial = NEXT.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        CREATED.with(|c| c.borrow_mut().insert(serial, major));
        Ticket { serial, major, check: [serial.wrapping_mul(0x9E37_79B9), !serial] }
    }

    /// Records that `callback` of an operation `major` got this ticket, and checks it is the
    /// one its own pre callback made, intact.
    fn arrived(&self, callback: &'static str, major: MajorFunction) {
        assert_eq!(self.major, major, "{callback}: another operation's context");
        assert_eq!(self.check, [self.serial.wrapping_mul(0x9E37_79B9), !self.serial], "damaged");
        ARRIVED.with(|a| a.borrow_mut().push((callback, self.serial, major)));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        DROPPED.with(|d| *d.borrow_mut().entry(self.serial).or_insert(0) += 1);
    }
}

/// What [`Carrier`] does with its contexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every pre callback answers `WithPost(ticket)`; the post callback finishes.
    Carry,
    /// Every pre callback answers `Synchronize(ticket)`.
    Synchronize,
    /// Every pre callback answers `WithPost(ticket)`; the post callback answers
    /// `WhenSafe(ticket)`, and the second half finishes.
    WhenSafe,
    /// Non-cached reads are pended and their token kept; the next query's pre callback releases
    /// it as said, with a fresh ticket for `WithPost`. Other operations carry a ticket.
    PendLater(Release),
    /// As `PendLater`, but the token is released before the pre callback returns.
    PendEarly(Release),
    /// Non-cached reads are pended, the token resumed with a post and a fresh ticket before the
    /// pre callback returns (at once, or 5 ms later with `resume_after`), and the pre callback
    /// then answers `NoPost` all the same: the ticket never reaches a post callback, and is
    /// dropped once.
    ResumedThenNoPost { delayed: bool },
}

/// How a pended read's token is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// `resume(PreResume::WithPost(ticket))`.
    WithPost,
    /// `resume(PreResume::Complete(STATUS_ACCESS_DENIED))`.
    Deny,
    /// Dropped: the read completes with `STATUS_CANCELLED`.
    Drop,
}

impl Release {
    fn release(self, token: PendedOperation<Ticket>) {
        match self {
            Release::WithPost => {
                token.resume(PreResume::WithPost(Ticket::new(MajorFunction::Read)))
            }
            Release::Deny => {
                token.resume(PreResume::Complete(IoStatus::new(Status::ACCESS_DENIED)));
            }
            Release::Drop => drop(token),
        }
    }

    fn status(self) -> Status {
        match self {
            Release::WithPost => Status::SUCCESS,
            Release::Deny => Status::ACCESS_DENIED,
            Release::Drop => Status::CANCELLED,
        }
    }
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Carry) };
    /// A draining post callback answers `WhenSafe` (which the backend must treat as `Finished`,
    /// rule 9) instead of `Finished`.
    static DRAIN_WHEN_SAFE: Cell<bool> = const { Cell::new(false) };
    static NEXT: Cell<u64> = const { Cell::new(0) };
    /// Serial -> the operation whose pre callback made it.
    static CREATED: RefCell<BTreeMap<u64, MajorFunction>> = const { RefCell::new(BTreeMap::new()) };
    /// Serial -> how many times it was dropped.
    static DROPPED: RefCell<BTreeMap<u64, u32>> = const { RefCell::new(BTreeMap::new()) };
    /// (callback, serial, operation) of every ticket a post callback or second half received.
    static ARRIVED: RefCell<Vec<(&'static str, u64, MajorFunction)>> =
        const { RefCell::new(Vec::new()) };
    /// The token a `PendLater` run keeps.
    static KEPT: RefCell<Option<PendedOperation<Ticket>>> = const { RefCell::new(None) };
}

/// Carries a [`Ticket`] from every pre callback to its post callback, as [`MODE`] says.
pub(crate) struct Carrier;

impl Filter for Carrier {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre().post())
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .operation(Operation::new(MajorFunction::Write).pre().post())
        .operation(Operation::new(MajorFunction::QueryInformation).pre().post())
        .operation(Operation::new(MajorFunction::Cleanup).pre().post())
        .operation(Operation::new(MajorFunction::Close).pre().post())
        .instance_setup_callback(true)
        .unload_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = Ticket;

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Carrier)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PreOperation<'_, Ticket>,
    ) -> PreOutcome<Ticket> {
        let major = op.major();
        let mode = MODE.with(Cell::get);
        if major == MajorFunction::QueryInformation {
            if let (Some(token), Mode::PendLater(release)) = (KEPT.with(|k| k.take()), mode) {
                release.release(token);
            }
        }
        match mode {
            Mode::Synchronize => PreOutcome::Synchronize(Ticket::new(major)),
            Mode::PendLater(release) | Mode::PendEarly(release)
                if major == MajorFunction::Read
                    && op.header().is_noncached()
                    && !op.header().is_paging() =>
            {
                let Some((token, receipt)) = op.pend() else {
                    return PreOutcome::WithPost(Ticket::new(major));
                };
                if let Mode::PendLater(_) = mode {
                    KEPT.with(|k| *k.borrow_mut() = Some(token));
                } else {
                    release.release(token);
                }
                PreOutcome::Pending(receipt)
            }
            Mode::ResumedThenNoPost { delayed }
                if major == MajorFunction::Read
                    && op.header().is_noncached()
                    && !op.header().is_paging() =>
            {
                if let Some((token, _receipt)) = op.pend() {
                    let ticket = PreResume::WithPost(Ticket::new(major));
                    if delayed { token.resume_after(5, ticket) } else { token.resume(ticket) }
                }
                PreOutcome::NoPost
            }
            _ => PreOutcome::WithPost(Ticket::new(major)),
        }
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        ticket: Ticket,
        flags: PostFlags,
    ) -> PostOutcome<Ticket> {
        if flags.contains(PostFlags::DRAINING) {
            // Rule 9: a draining post only cleans up: no deferral, and a `WhenSafe` answer is
            // taken as `Finished`, its context dropped.
            ticket.arrived("draining", op.major());
            assert!(op.defer().is_none(), "no deferral while draining");
            if DRAIN_WHEN_SAFE.with(Cell::get) {
                return PostOutcome::WhenSafe(ticket);
            }
            return PostOutcome::Finished;
        }
        ticket.arrived("post", op.major());
        if MODE.with(Cell::get) == Mode::WhenSafe {
            return PostOutcome::WhenSafe(ticket);
        }
        PostOutcome::Finished
    }

    fn post_operation_when_safe(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        ticket: Ticket,
    ) -> PostOutcome<Ticket> {
        ticket.arrived("when_safe", op.major());
        PostOutcome::Finished
    }
}

/// What one run showed.
#[derive(Debug)]
pub(crate) struct Seen {
    /// The statuses of the requests, in order: open, cached read (an IRP: it initiates
    /// caching), cached read (fast I/O), non-cached read, paging read, non-cached write, query,
    /// close.
    pub statuses: Vec<(&'static str, Status)>,
    /// Tickets made by pre callbacks (and resumptions), by operation.
    pub created: BTreeMap<u64, MajorFunction>,
    /// (callback, serial, operation) of each ticket that arrived.
    pub arrived: Vec<(&'static str, u64, MajorFunction)>,
    /// How the driver's stop went.
    pub stop: StopResult,
}

impl Seen {
    /// The status of request `what`.
    pub fn status(&self, what: &str) -> Status {
        self.statuses.iter().find(|(w, _)| *w == what).map(|(_, s)| *s).expect("request")
    }

    /// How many tickets `callback` received for `major`.
    pub fn arrivals(&self, callback: &str, major: MajorFunction) -> usize {
        self.arrived.iter().filter(|(c, _, m)| *c == callback && *m == major).count()
    }
}

/// Runs every kind of request through the filter installed by `install` in `mode`; with
/// `below`, that filter is installed first, under the filter (it pends reads, so their posts run
/// in completion routines of IRPs completed asynchronously). `starve` names the request during
/// which the driver's next pool allocation fails. Then stops the driver. Checks, whatever the
/// mode: no finding (the pool is checked at unload), every ticket dropped exactly once, every
/// arrival distinct and its own operation's.
pub(crate) fn run(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    mode: Mode,
    below: Option<fn(&mut Machine)>,
    starve: Option<&'static str>,
) -> Seen {
    MODE.with(|m| m.set(mode));
    NEXT.with(|n| n.set(0));
    CREATED.with(|c| c.borrow_mut().clear());
    DROPPED.with(|d| d.borrow_mut().clear());
    ARRIVED.with(|a| a.borrow_mut().clear());
    KEPT.with(|k| *k.borrow_mut() = None);
    let mut m = Machine::new(MachineConfig { seed: 11 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 8192]));
    if let Some(below) = below {
        below(&mut m);
    }
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let mut statuses = Vec::new();
    let starving = |m: &mut Machine, what: &str| {
        if starve == Some(what) {
            m.kernel(|k| {
                let n = k.faults.service_count(NAME, FaultKind::Pool);
                k.faults.plan_for_service(NAME, FaultKind::Pool, n + 1);
            });
        }
    };
    starving(&mut m, "open");
    let h = match m.open(c, "data.bin", CreateOptions::open()) {
        Ok(h) => {
            statuses.push(("open", Status::SUCCESS));
            Some(h)
        }
        Err(status) => {
            statuses.push(("open", status));
            None
        }
    };
    if let Some(h) = h {
        for (what, io, offset) in [
            ("cached read", IoMode::Cached, 0),
            ("fast read", IoMode::Cached, 512),
            ("non-cached read", IoMode::NonCached, 0),
            ("paging read", IoMode::Paging, 4096),
        ] {
            if matches!(mode, Mode::PendLater(_)) && io == IoMode::NonCached {
                // The query's pre callback releases the pended read. Through a handle of its
                // own: on the read's synchronous handle the query would wait for the read (the
                // file object's lock), which waits for it.
                let other = m.open(c, "data.bin", CreateOptions::open()).expect("open");
                m.schedule(10, move |m| {
                    let _ = m.query_information(other, 6, 8);
                    m.close_handle(other);
                });
            }
            starving(&mut m, what);
            let r = m.read(h, Some(offset), 512, io);
            statuses.push((what, r.status));
            if r.status == Status::SUCCESS {
                assert_eq!(r.data.first(), Some(&STORED), "{what}");
            }
        }
        m.settle();
        starving(&mut m, "write");
        statuses.push(("write", m.write(h, Some(0), &[7; 512], IoMode::NonCached).status));
        starving(&mut m, "query");
        statuses.push(("query", m.query_information(h, 6, 8).status));
        starving(&mut m, "close");
        // The cleanup on its own, so that its status shows (a close reports the close's).
        statuses.push(("cleanup", m.io(IoRequest::Cleanup { handle: h }).status));
        statuses.push(("close", m.close_handle(h)));
    }
    m.settle();
    let stop = m.stop(NAME);
    m.settle();
    assert!(m.findings().is_empty(), "{mode:?} {starve:?}: {:?}", m.findings());
    assert!(m.crashed().is_none(), "{mode:?} {starve:?}: {:?}", m.crashed());
    let created = CREATED.with(|c| c.borrow().clone());
    let dropped = DROPPED.with(|d| d.borrow().clone());
    let arrived = ARRIVED.with(|a| a.borrow().clone());
    assert_eq!(
        dropped.keys().copied().collect::<Vec<_>>(),
        created.keys().copied().collect::<Vec<_>>(),
        "{mode:?} {starve:?}: every context made is dropped"
    );
    assert!(dropped.values().all(|&n| n == 1), "{mode:?} {starve:?}: dropped once: {dropped:?}");
    for half in ["post", "when_safe"] {
        let mut serials: Vec<u64> =
            arrived.iter().filter(|(c, ..)| *c == half).map(|&(_, s, _)| s).collect();
        let n = serials.len();
        serials.dedup();
        assert_eq!(serials.len(), n, "{mode:?}: a context reached {half} twice: {arrived:?}");
    }
    Seen { statuses, created, arrived, stop }
}

/// Registers the read with a post callback and no pre callback, with a context that is not
/// zero-sized: nobody would make the context its post callback gets, so the driver fails to load
/// (docs/callback-model.md, rule 6), in both models.
pub(crate) struct PostOnly;

impl Filter for PostOnly {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = Ticket;

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(PostOnly)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &Instance<'_, ()>,
        _: &mut PreOperation<'_, Ticket>,
    ) -> PreOutcome<Ticket> {
        PreOutcome::NoPost
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        ticket: Ticket,
        _: PostFlags,
    ) -> PostOutcome<Ticket> {
        ticket.arrived("post", op.major());
        PostOutcome::Finished
    }
}

/// [`PostOnly`] installed by `install` fails to load with `STATUS_INVALID_PARAMETER`.
pub(crate) fn check_post_only(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
) {
    let mut m = Machine::new(MachineConfig { seed: 11 });
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 512]));
    install(&mut m, ServiceSpec::new("PostOnly", entry, "legacy"));
    m.boot();
    let loads: Vec<Status> = m
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            fsfilter_sim::EventKind::Load { driver, status, .. } if &*driver == "PostOnly" => {
                Some(status)
            }
            _ => None,
        })
        .collect();
    assert_eq!(loads, [Status::INVALID_PARAMETER]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The driver stopped while a read it passed down is held by the driver below (`pender`, for 5
/// ms): with the Filter Manager the read's context reaches a draining post callback at teardown;
/// the legacy backend's unload waits for the read, whose post callback gets it
/// (docs/semantics.md, draining). Either way it is dropped once and the pool is clean at unload;
/// with `when_safe` the draining post answers `WhenSafe`, and no second half runs (rule 9).
fn check_draining(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    pender: fn(&mut Machine),
    drains: bool,
    when_safe: bool,
) {
    MODE.with(|m| m.set(Mode::Carry));
    DRAIN_WHEN_SAFE.with(|d| d.set(when_safe));
    CREATED.with(|c| c.borrow_mut().clear());
    DROPPED.with(|d| d.borrow_mut().clear());
    ARRIVED.with(|a| a.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 11 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 8192]));
    pender(&mut m);
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    let stop = std::rc::Rc::new(Cell::new(None));
    let seen = stop.clone();
    m.schedule(1, move |m| seen.set(Some(m.stop(NAME))));
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!((r.status, r.data.first()), (Status::SUCCESS, Some(&STORED)));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
    assert!(stop.get().is_some(), "the stop ran while the read was held");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let created = CREATED.with(|c| c.borrow().clone());
    let dropped = DROPPED.with(|d| d.borrow().clone());
    let arrived = ARRIVED.with(|a| a.borrow().clone());
    assert_eq!(dropped.keys().collect::<Vec<_>>(), created.keys().collect::<Vec<_>>());
    assert!(dropped.values().all(|&n| n == 1), "{dropped:?}");
    let read = created.iter().find(|(_, m)| **m == MajorFunction::Read).map(|(s, _)| *s);
    let read_arrival = arrived.iter().find(|(_, s, _)| Some(*s) == read).map(|(c, ..)| *c);
    assert_eq!(read_arrival, Some(if drains { "draining" } else { "post" }), "{arrived:?}");
    let read_arrivals = arrived.iter().filter(|(_, s, _)| Some(*s) == read).count();
    assert_eq!(read_arrivals, 1, "one post callback, no second half: {arrived:?}");
    DRAIN_WHEN_SAFE.with(|d| d.set(false));
}

/// The assertions both backends share. `pender` installs a filter that pends reads for a few
/// milliseconds, under the filter under test. `drains` says whether teardown calls the post
/// callbacks of operations in flight early (the Filter Manager) or waits for them (legacy).
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    pender: fn(&mut Machine),
    drains: bool,
) {
    for when_safe in [false, true] {
        check_draining(install, entry, pender, drains, when_safe);
    }
    use MajorFunction::{Cleanup, Close, Create, QueryInformation, Read, Write};
    // Every ticket reaches its own post callback, whether the lower drivers complete the reads
    // synchronously or asynchronously, and for synchronized operations alike.
    let mut reads = None;
    for (mode, below) in
        [(Mode::Carry, None), (Mode::Carry, Some(pender)), (Mode::Synchronize, None)]
    {
        let seen = run(install, entry, mode, below, None);
        assert!(seen.statuses.iter().all(|(_, s)| *s == Status::SUCCESS), "{mode:?}: {seen:?}");
        assert_eq!(seen.stop, StopResult::Unloaded, "{mode:?}");
        assert_eq!(seen.arrived.len(), seen.created.len(), "{mode:?}: {seen:?}");
        for major in [Create, Write, QueryInformation, Cleanup, Close] {
            assert_eq!(seen.arrivals("post", major), 1, "{mode:?} {major:?}: {seen:?}");
        }
        // The cached read that initiates caching, the fast I/O read, the non-cached and the
        // paging read (and the cache manager's paging read behind the first, if any).
        let n = seen.arrivals("post", Read);
        assert!(n >= 4, "{mode:?}: {seen:?}");
        if below.is_none() {
            assert_eq!(*reads.get_or_insert(n), n, "{mode:?}: as many read posts in every run");
        }
    }
    let reads = reads.expect("runs");

    // WhenSafe: the second half gets the ticket of an IRP that is not paging I/O; fast I/O and
    // paging I/O cannot be deferred (rule 9), so the backend drops their tickets.
    let seen = run(install, entry, Mode::WhenSafe, None, None);
    assert!(seen.statuses.iter().all(|(_, s)| *s == Status::SUCCESS), "{seen:?}");
    assert_eq!(seen.arrived.iter().filter(|(c, ..)| *c == "post").count(), seen.created.len());
    for major in [Create, Write, QueryInformation, Cleanup, Close] {
        assert_eq!(seen.arrivals("when_safe", major), 1, "{major:?}: {seen:?}");
    }
    assert_eq!(seen.arrivals("post", Read), reads, "{seen:?}");
    let halves = seen.arrivals("when_safe", Read);
    assert!(halves >= 2 && halves < reads, "no second half for fast I/O or paging: {seen:?}");

    // Pended reads: a ticket given at resumption reaches the post; none is made for a denial or
    // a dropped token, and nothing leaks either way.
    for release in [Release::WithPost, Release::Deny, Release::Drop] {
        for mode in [Mode::PendEarly(release), Mode::PendLater(release)] {
            let seen = run(install, entry, mode, None, None);
            assert_eq!(seen.status("non-cached read"), release.status(), "{mode:?}: {seen:?}");
            assert_eq!(seen.status("close"), Status::SUCCESS, "{mode:?}");
            assert_eq!(seen.stop, StopResult::Unloaded, "{mode:?}");
            let expected = if release == Release::WithPost { reads } else { reads - 1 };
            assert_eq!(seen.arrivals("post", Read), expected, "{mode:?}: {seen:?}");
        }
    }

    // A token resumed with a post before the pre callback returns, and then not used (the pre
    // callback answers NoPost): its ticket is dropped once, never delivered.
    for delayed in [false, true] {
        let mode = Mode::ResumedThenNoPost { delayed };
        let seen = run(install, entry, mode, None, None);
        assert!(seen.statuses.iter().all(|(_, s)| *s == Status::SUCCESS), "{mode:?}: {seen:?}");
        assert_eq!(seen.arrivals("post", Read), reads - 1, "{mode:?}: {seen:?}");
        assert_eq!(seen.created.len(), seen.arrived.len() + 1, "{mode:?}: {seen:?}");
    }

    // No pool for the context (rule 7): the operation fails with
    // STATUS_INSUFFICIENT_RESOURCES rather than lose its post callback; cleanup and close cannot
    // fail (rule 5), so they go on without one. The ticket is dropped either way.
    for what in ["open", "non-cached read", "write", "query"] {
        let seen = run(install, entry, Mode::Carry, None, Some(what));
        assert_eq!(seen.status(what), Status::INSUFFICIENT_RESOURCES, "{what}: {seen:?}");
        assert!(
            seen.statuses.iter().filter(|(w, _)| *w != what).all(|(_, s)| *s == Status::SUCCESS),
            "{what}: only the starved request fails: {seen:?}"
        );
        assert_eq!(seen.arrived.len() + 1, seen.created.len(), "{what}: {seen:?}");
    }
    let seen = run(install, entry, Mode::Carry, None, Some("close"));
    assert_eq!(seen.status("cleanup"), Status::SUCCESS, "{seen:?}");
    assert_eq!(seen.status("close"), Status::SUCCESS, "{seen:?}");
    let missing = seen.created.len() - seen.arrived.len();
    assert_eq!(missing, 1, "the cleanup passed without its post callback: {seen:?}");
    assert_eq!(seen.arrivals("post", Cleanup), 0, "{seen:?}");
    assert_eq!(seen.arrivals("post", Close), 1, "{seen:?}");
    // The same when the cleanup is synchronized: whatever allocation fails (the legacy backend's
    // IoSetCompletionRoutineEx, the minifilter's context), the cleanup reaches the file system
    // without its post callback instead of failing.
    let seen = run(install, entry, Mode::Synchronize, None, Some("close"));
    assert_eq!(seen.status("cleanup"), Status::SUCCESS, "{seen:?}");
    assert_eq!(seen.status("close"), Status::SUCCESS, "{seen:?}");
    assert_eq!(seen.created.len() - seen.arrived.len(), 1, "{seen:?}");
    assert_eq!(seen.arrivals("post", Cleanup), 0, "{seen:?}");
    assert_eq!(seen.arrivals("post", Close), 1, "{seen:?}");
}
