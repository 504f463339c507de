//! Services called where the model forbids them, through a backend: shared by
//! `legacy/tests/misuse.rs` and `minifilter/tests/misuse.rs` (each includes this file with
//! `#[path]` and builds [`Misuser`] with its backend's `driver!`).
//!
//! `Services::cancel_file_open` only in the post callback of a successful create (not one that
//! ended with a warning status, which the legacy backend let through before a fix of December 6), at
//! `PASSIVE_LEVEL`, with a failing status (docs/callback-model.md, rule 17);
//! `Services::create_scan_section` only with data scanning, at `PASSIVE_LEVEL` (rule 16);
//! `Services::wait` only at `PASSIVE_LEVEL` (rule 18). A misuse answers its documented status and
//! changes nothing: the requester sees the operation's own result, and the simulator's verifier
//! has nothing to report (no `IoCancelFileOpen` or `FltCancelFileOpen` outside a post-create, no
//! wait above `APC_LEVEL`).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    Error, Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Services, Status,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, Machine, MachineConfig, ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Misuser";

/// (where, service, what it answered).
type Seen = Vec<(String, &'static str, core::result::Result<(), Error>)>;

thread_local! {
    static SEEN: RefCell<Seen> = const { RefCell::new(Vec::new()) };
}

/// Tries every service that `where_` may not use, and records the answers.
fn try_all(where_: String, services: &dyn Services) {
    let cancel = services.cancel_file_open(Status::ACCESS_DENIED);
    let success = services.cancel_file_open(Status::SUCCESS);
    let scan = services.create_scan_section().map(drop);
    let wait = services.wait(1);
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        s.push((where_.clone(), "cancel_file_open", cancel));
        s.push((where_.clone(), "cancel_file_open(success)", success));
        s.push((where_.clone(), "create_scan_section", scan));
        s.push((where_, "wait", wait));
    });
}

/// " DISPATCH" above `APC_LEVEL`.
fn level(services: &dyn Services) -> &'static str {
    if services.irql() > Irql::APC { " DISPATCH" } else { "" }
}

/// A filter without data scanning that calls services where it should not.
pub(crate) struct Misuser;

impl Filter for Misuser {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre().post())
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Misuser)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        try_all(format!("pre {:?}{}", op.major(), level(op.services())), op.services());
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let what =
            format!("post {:?} {:?}{}", op.major(), op.result().status, level(op.services()));
        if op.major() == MajorFunction::Create && op.result().status.is_success() {
            // The one place cancel_file_open is allowed; only the success status is refused.
            let success = op.services().cancel_file_open(Status::SUCCESS);
            let scan = op.services().create_scan_section().map(drop);
            SEEN.with(|s| {
                let mut s = s.borrow_mut();
                s.push((what.clone(), "cancel_file_open(success)", success));
                s.push((what, "create_scan_section", scan));
            });
            return PostOutcome::Finished;
        }
        try_all(what, op.services());
        PostOutcome::Finished
    }
}

/// Runs an open that succeeds, one that fails, one that a driver below ends with a warning
/// status (no success: the I/O manager fails it, and the filter may not cancel it), a cached read
/// (post at `PASSIVE_LEVEL`) and a non-cached read completed from a DPC (post at
/// `DISPATCH_LEVEL`) through the filter installed by `install` above the probe installed by
/// `pender`, and checks every answer.
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    pender: fn(&mut Machine, &str),
    entry: fsfilter_sim::DriverEntry,
) {
    SEEN.with(|s| s.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 17 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[9u8; 4096]));
    pender(&mut m, "complete:0x80000005 create *warn*");
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    SEEN.with(|s| s.borrow_mut().clear());
    assert_eq!(m.open(c, "missing.bin", CreateOptions::open()), Err(Status::OBJECT_NAME_NOT_FOUND));
    assert_eq!(m.open(c, "warn.bin", CreateOptions::open()), Err(Status::BUFFER_OVERFLOW));
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("nothing cancelled the open");
    let r = m.read(h, Some(0), 512, IoMode::Cached);
    assert_eq!((r.status, r.data.first()), (Status::SUCCESS, Some(&9)));
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!((r.status, r.data.first()), (Status::SUCCESS, Some(&9)));
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let seen = SEEN.with(|s| s.borrow().clone());
    let invalid = Err(Error::INVALID_PARAMETER);
    let state = Err(Error::INVALID_DEVICE_STATE);
    let mut at_dispatch = 0;
    for (where_, service, answer) in &seen {
        let dispatch = where_.ends_with("DISPATCH");
        at_dispatch += usize::from(dispatch);
        let expected = match *service {
            // Refused at DISPATCH_LEVEL for the IRQL, anywhere else for the place.
            "cancel_file_open" | "cancel_file_open(success)" if dispatch => &state,
            "cancel_file_open" | "cancel_file_open(success)" => &invalid,
            // This filter does not scan data: refused wherever it asks.
            "create_scan_section" => &invalid,
            "wait" if dispatch => &state,
            "wait" => &Ok(()),
            other => panic!("{other}"),
        };
        assert_eq!(answer, expected, "{service} in {where_}: {seen:#?}");
    }
    assert!(at_dispatch >= 4, "a post callback ran at DISPATCH_LEVEL: {seen:#?}");
    let places: Vec<&str> = seen.iter().map(|(w, ..)| w.as_str()).collect();
    for place in [
        "pre IRP_MJ_CREATE",
        "post IRP_MJ_CREATE STATUS_OBJECT_NAME_NOT_FOUND",
        "post IRP_MJ_CREATE STATUS_BUFFER_OVERFLOW",
    ] {
        assert!(places.iter().any(|p| p.starts_with(place)), "{place}: {seen:#?}");
    }
}
