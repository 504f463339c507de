//! The file system's fast-I/O check on a file with byte-range locks, through a backend: shared by
//! `legacy/tests/fast_check.rs` and `minifilter/tests/fast_check.rs` (each includes this file
//! with `#[path]` and builds [`Checker`] with its backend's `driver!`).
//!
//! A cached read of a file with byte-range locks makes the file system's fast path ask the
//! `FastIoCheckIfPossible` of the top of the stack (the Windows Research Kernel's
//! `FsRtlCopyRead`). Both backends show it to a filter that registers
//! `IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE` as that fast-I/O operation, inside the read's own
//! fast-I/O operation, with its post callback after the file system's answer, and a filter that
//! disallows it makes the read an IRP (docs/semantics.md, operations-delivered).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::{Cell, RefCell};

use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, OperationKind, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Status,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, IoRequest, Machine, MachineConfig, ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Checker";

/// A callback seen: pre or post, the operation, its kind, and for a post its status.
type Seen = (&'static str, MajorFunction, OperationKind, Option<Status>);

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
    static DISALLOW: Cell<bool> = const { Cell::new(false) };
}

/// Records reads and fast-I/O checks; refuses the checks while [`DISALLOW`] is set.
pub(crate) struct Checker;

impl Filter for Checker {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).pre())
        .operation(Operation::new(MajorFunction::FastIoCheckIfPossible).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Checker)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let h = op.header();
        SEEN.with(|s| s.borrow_mut().push(("pre", h.major, h.kind, None)));
        match h.major {
            MajorFunction::FastIoCheckIfPossible if DISALLOW.with(Cell::get) => {
                PreOutcome::DisallowFastIo
            }
            MajorFunction::FastIoCheckIfPossible => PreOutcome::WithPost(()),
            _ => PreOutcome::NoPost,
        }
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let h = op.header();
        let status = op.result().status;
        SEEN.with(|s| s.borrow_mut().push(("post", h.major, h.kind, Some(status))));
        PostOutcome::Finished
    }
}

/// Reads a file another handle locked a range of, through the filter installed by `install`.
pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    let mut m = Machine::new(MachineConfig { seed: 29 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"0123456789abcdef"));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    DISALLOW.with(|d| d.set(false));
    let a = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let b = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert!(!m.read(b, Some(0), 4, IoMode::Cached).fast_io, "caching starts with an IRP");
    let lock = IoRequest::Lock {
        handle: a,
        offset: 8,
        length: 4,
        exclusive: true,
        fail_immediately: true,
    };
    assert_eq!(m.io(lock).status, Status::SUCCESS);
    let (fast, irp) = (OperationKind::FastIo, OperationKind::Irp);
    let (read, check) = (MajorFunction::Read, MajorFunction::FastIoCheckIfPossible);
    SEEN.with(|s| s.borrow_mut().clear());
    let r = m.read(b, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, true, &b"0123"[..]));
    // The locked range: the file system's check says no, the read comes again as an IRP.
    let r = m.read(b, Some(8), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io), (Status::FILE_LOCK_CONFLICT, false));
    let seen = SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()));
    assert_eq!(
        seen,
        [
            ("pre", read, fast, None),
            ("pre", check, fast, None),
            ("post", check, fast, Some(Status::SUCCESS)),
            ("pre", read, fast, None),
            ("pre", check, fast, None),
            ("post", check, fast, Some(Status::FLT_DISALLOW_FAST_IO)),
            ("pre", read, irp, None),
        ],
    );
    // Disallowed by the filter: the read is an IRP, which the lock allows.
    DISALLOW.with(|d| d.set(true));
    let r = m.read(b, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, false, &b"0123"[..]));
    let seen = SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()));
    assert_eq!(
        seen,
        [("pre", read, fast, None), ("pre", check, fast, None), ("pre", read, irp, None)]
    );
    DISALLOW.with(|d| d.set(false));
    assert_eq!(m.findings(), [], "no finding");
}
