//! A deferred post (`PostOperation::defer`, `FLT_POSTOP_MORE_PROCESSING_REQUIRED`) meets its
//! instance's teardown, through the minifilter backend (docs/callback-model.md rules 9, 15 and
//! 20; facts.md §2.5, §4): the post callback ran once and is not drained; the operation keeps the
//! instance until its token completes it, so teardown complete comes after that; the
//! completion context (not zero-sized) reaches one post callback and is dropped once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::cell::{Cell, RefCell};

use fsfilter::{
    DeferredPost, Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Status, TeardownFlags, UnloadFlags,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, Machine, MachineConfig, StartType, StopResult, VolumeSpec,
};

const NAME: &str = "Keeper";

/// A completion context that is not zero-sized, counted when dropped.
#[derive(Debug)]
struct Ticket {
    serial: u64,
    check: [u64; 2],
}

impl Ticket {
    fn new() -> Ticket {
        let serial = CREATED.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        Ticket { serial, check: [serial.wrapping_mul(0x9E37_79B9), !serial] }
    }

    fn intact(&self) -> bool {
        self.check == [self.serial.wrapping_mul(0x9E37_79B9), !self.serial]
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        DROPPED.with(|d| d.borrow_mut().push(self.serial));
    }
}

/// Who completes the deferred read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Completer {
    /// The pre callback of a read another caller sends 10 ms after the teardown began, on
    /// another volume (no new operation reaches the instance being torn down).
    Later,
    /// The filter's teardown-start callback (completing what it holds, facts.md §2.5).
    TeardownStart,
}

thread_local! {
    static COMPLETER: Cell<Completer> = const { Cell::new(Completer::Later) };
    static CREATED: Cell<u64> = const { Cell::new(0) };
    static DROPPED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// (draining, IRQL, ticket serial, ticket intact) of every read post callback.
    static POSTS: RefCell<Vec<(bool, Irql, u64, bool)>> = const { RefCell::new(Vec::new()) };
    static KEPT: RefCell<Option<DeferredPost>> = const { RefCell::new(None) };
    static ORDER: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn order(s: impl Into<String>) {
    ORDER.with(|o| o.borrow_mut().push(s.into()));
}

fn complete_kept() {
    if let Some(token) = KEPT.with(|k| k.borrow_mut().take()) {
        order("completed");
        token.complete();
    }
}

/// Defers the post callback of every non-cached read and keeps the token.
struct Keeper;

impl Filter for Keeper {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .instance_setup_callback(true)
        .query_teardown_callback(true)
        .teardown_callbacks(true, true)
        .unload_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = Ticket;

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Keeper)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn instance_teardown_start(&self, _: &Instance<'_, ()>, reason: TeardownFlags) {
        order(format!("teardown_start {:#x}", reason.bits()));
        if COMPLETER.with(Cell::get) == Completer::TeardownStart {
            complete_kept();
        }
    }

    fn instance_teardown_complete(&self, _: &Instance<'_, ()>, reason: TeardownFlags) {
        order(format!("teardown_complete {:#x}", reason.bits()));
    }

    fn unload(&self, _: UnloadFlags) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PreOperation<'_, Ticket>,
    ) -> PreOutcome<Ticket> {
        if COMPLETER.with(Cell::get) == Completer::Later {
            complete_kept();
        }
        if op.header().is_noncached() && !op.header().is_paging() {
            PreOutcome::WithPost(Ticket::new())
        } else {
            PreOutcome::NoPost
        }
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        ticket: Ticket,
        flags: PostFlags,
    ) -> PostOutcome<Ticket> {
        let draining = flags.contains(PostFlags::DRAINING);
        let irql = op.services().irql();
        POSTS.with(|p| p.borrow_mut().push((draining, irql, ticket.serial, ticket.intact())));
        if draining {
            return PostOutcome::Finished;
        }
        let Some((token, receipt)) = op.defer() else { return PostOutcome::Finished };
        KEPT.with(|k| *k.borrow_mut() = Some(token));
        PostOutcome::MoreProcessing(receipt)
    }
}

mod driver {
    fsfilter_minifilter::driver!(super::Keeper);
}

/// How the instance is torn down while the read is held.
#[derive(Clone, Copy, Debug)]
enum End {
    /// `fltmc detach`.
    Detach,
    /// `fltmc unload`.
    Unload,
    /// `sc stop`.
    Stop,
}

fn run(end: End, completer: Completer) {
    COMPLETER.with(|c| c.set(completer));
    CREATED.with(|c| c.set(0));
    DROPPED.with(|d| d.borrow_mut().clear());
    POSTS.with(|p| p.borrow_mut().clear());
    KEPT.with(|k| *k.borrow_mut() = None);
    ORDER.with(|o| o.borrow_mut().clear());
    let what = format!("{end:?} {completer:?}");
    // A token still kept when an assertion fails is forgotten, not completed as the thread's
    // locals are destroyed (after the machine): the failure shows rather than an abort.
    struct Forget;
    impl Drop for Forget {
        fn drop(&mut self) {
            std::mem::forget(KEPT.with(|k| k.borrow_mut().take()));
        }
    }
    let _forget = Forget;

    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[0x3C; 4096]));
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs).file("other.bin", &[0x3D; 512]));
    let _ = m.install_filter_manager();
    m.install(common::minifilter_spec(NAME, driver::ENTRY, StartType::Boot, "370000", 0, &[]));
    m.boot();
    // The file system completes non-cached transfers from a DPC: the post runs at DISPATCH_LEVEL.
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING, "{what}");
    m.settle();
    assert!(KEPT.with(|k| k.borrow().is_some()), "{what}: the read's post deferred it");
    assert_eq!(POSTS.with(|p| p.borrow().clone()), [(false, Irql::DISPATCH, 1, true)], "{what}");

    if completer == Completer::Later {
        m.schedule(10, move |m| {
            let h = m.open(d, "other.bin", CreateOptions::open()).unwrap();
            assert_eq!(m.read(h, Some(0), 16, IoMode::Cached).status, Status::SUCCESS);
            m.close_handle(h);
        });
    }
    let before = m.now_ms();
    let reason = match end {
        End::Detach => {
            assert_eq!(m.filter_detach(NAME, c, None), Status::SUCCESS, "{what}");
            0x1
        }
        End::Unload => {
            assert_eq!(m.fltmc_unload(NAME), Status::SUCCESS, "{what}");
            0x2
        }
        End::Stop => {
            assert_eq!(m.stop(NAME), StopResult::Unloaded, "{what}");
            0x4
        }
    };
    // C:'s instance first; an unload then tears D:'s down.
    let mut want = vec![
        format!("teardown_start {reason:#x}"),
        "completed".to_owned(),
        format!("teardown_complete {reason:#x}"),
    ];
    if !matches!(end, End::Detach) {
        want.push(format!("teardown_start {reason:#x}"));
        want.push(format!("teardown_complete {reason:#x}"));
    }
    assert_eq!(
        ORDER.with(|o| o.borrow().clone()),
        want,
        "{what}: teardown complete comes after the token completed the read"
    );
    if completer == Completer::Later {
        assert!(m.now_ms() >= before + 10, "{what}: the teardown waited for the token");
    }
    m.settle();
    assert_eq!(
        POSTS.with(|p| p.borrow().clone()),
        [(false, Irql::DISPATCH, 1, true)],
        "{what}: the post callback ran once, never drained"
    );
    assert_eq!(DROPPED.with(|d| d.borrow().clone()), [1], "{what}: the context dropped once");
    assert_eq!(
        m.completions_of(r.io.unwrap()),
        [Status::SUCCESS],
        "{what}: the read completed once, successfully"
    );
    assert!(m.findings().is_empty(), "{what}: {:?}", m.findings());
    assert!(m.crashed().is_none(), "{what}: {:?}", m.crashed());
}

#[test]
fn a_deferred_post_is_not_drained_and_holds_its_instance_until_completed() {
    for end in [End::Detach, End::Unload, End::Stop] {
        for completer in [Completer::Later, Completer::TeardownStart] {
            run(end, completer);
        }
    }
}
