//! The fast-I/O routines the I/O manager and the file systems call besides reads and writes,
//! through a backend: shared by `legacy/tests/fast_io.rs` and `minifilter/tests/fast_io.rs`
//! (each includes this file with `#[path]` and builds [`Recorder`] with its backend's `driver!`).
//! Both backends run these through the model, as the Filter Manager presents them
//! (docs/semantics.md, operations-delivered):
//!
//! - An attribute query by name (`NtQueryFullAttributesFile`) is offered to the top device's
//!   `FastIoQueryOpen` with a create IRP set at that device's location (the Windows Research
//!   Kernel's `IopParseDevice`). The filter sees the fast-I/O `IRP_MJ_NETWORK_QUERY_OPEN` (the
//!   Filter Manager's documented equivalent of the routine); the IRP goes down at the same
//!   location naming the device below; a filter that refuses it with `DisallowFastIo` sees the
//!   open, the query and the close the I/O manager sends instead ([`query_open`]).
//! - A cached read of a file with byte-range locks makes the file system's fast path ask the
//!   `FastIoCheckIfPossible` of the top of the stack (`FsRtlCopyRead`). The filter sees the
//!   fast-I/O `IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE` inside the read's own operation, with its post
//!   callback after the file system's answer; refusing it makes the read an IRP ([`fast_check`]).
//!   The fast read declined below gets its post callback with `STATUS_FLT_DISALLOW_FAST_IO`
//!   before the IRP comes (docs/callback-model.md, rule 12).

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
pub(crate) const NAME: &str = "Recorder";

/// A callback seen: pre or post, the operation, its kind, and for a post its status.
type Seen = (&'static str, MajorFunction, OperationKind, Option<Status>);

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
    static DISALLOW: Cell<bool> = const { Cell::new(false) };
}

/// Records the pre callbacks of opens and information queries, and the pre and post callbacks of
/// reads, query opens and fast-I/O checks; refuses the last two while [`DISALLOW`] is set.
pub(crate) struct Recorder;

impl Filter for Recorder {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .operation(Operation::new(MajorFunction::QueryInformation).pre())
        .operation(Operation::new(MajorFunction::NetworkQueryOpen).pre().post())
        .operation(Operation::new(MajorFunction::FastIoCheckIfPossible).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Recorder)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let h = op.header();
        SEEN.with(|s| s.borrow_mut().push(("pre", h.major, h.kind, None)));
        match h.major {
            MajorFunction::NetworkQueryOpen | MajorFunction::FastIoCheckIfPossible
                if DISALLOW.with(Cell::get) =>
            {
                PreOutcome::DisallowFastIo
            }
            MajorFunction::NetworkQueryOpen
            | MajorFunction::FastIoCheckIfPossible
            | MajorFunction::Read => PreOutcome::WithPost(()),
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

/// The callbacks seen since the last call.
fn take_seen() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// A machine with one NTFS volume holding `file` and the filter installed by `install`, booted.
fn machine(
    seed: u64,
    file: (&str, &[u8]),
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
) -> (Machine, fsfilter_sim::VolumeId) {
    let mut m = Machine::new(MachineConfig { seed });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file(file.0, file.1));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    DISALLOW.with(|d| d.set(false));
    let _ = take_seen();
    (m, c)
}

/// The `EndOfFile` of a `FILE_NETWORK_OPEN_INFORMATION`.
fn end_of_file(data: &[u8]) -> u64 {
    u64::from_le_bytes(data.get(40..48).unwrap().try_into().unwrap())
}

/// Queries a file's attributes by name through the filter installed by `install`: the filter
/// sees a fast-I/O `IRP_MJ_NETWORK_QUERY_OPEN` served below it, then, when it refuses fast I/O,
/// the open that the I/O manager sends instead; no finding either way.
///
/// `query`: how the filter sees the query of the long way, which the I/O manager offers to
/// `FastIoQueryNetworkOpenInfo` first and NTFS serves: fast I/O through the Filter Manager, the
/// IRP through the legacy backend, which declines that routine for a filter that registers
/// `IRP_MJ_QUERY_INFORMATION` (docs/semantics.md, operations-delivered).
pub(crate) fn query_open(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    query: OperationKind,
) {
    let (mut m, c) = machine(23, ("f.txt", b"0123456789"), install, entry);
    let fast = OperationKind::FastIo;
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: "f.txt" });
    assert_eq!((q.status, q.fast_io, q.data.len()), (Status::SUCCESS, true, 56), "{q:?}");
    assert_eq!(end_of_file(&q.data), 10);
    let seen = take_seen();
    assert_eq!(
        seen,
        [
            ("pre", MajorFunction::NetworkQueryOpen, fast, None),
            ("post", MajorFunction::NetworkQueryOpen, fast, Some(Status::SUCCESS)),
        ],
    );

    // Refused: the I/O manager opens the file with a create IRP, which the filter sees, then
    // queries it.
    DISALLOW.with(|d| d.set(true));
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: "f.txt" });
    assert_eq!((q.status, q.fast_io, q.data.len()), (Status::SUCCESS, false, 56), "{q:?}");
    assert_eq!(end_of_file(&q.data), 10);
    let seen = take_seen();
    assert_eq!(
        seen,
        [
            ("pre", MajorFunction::NetworkQueryOpen, fast, None),
            ("pre", MajorFunction::Create, OperationKind::Irp, None),
            ("pre", MajorFunction::QueryInformation, query, None),
        ],
    );
    DISALLOW.with(|d| d.set(false));

    // A missing name: declined below, so the post callback sees STATUS_FLT_DISALLOW_FAST_IO,
    // and the open reports the error.
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: "missing.txt" });
    assert_eq!((q.status, q.fast_io), (Status::OBJECT_NAME_NOT_FOUND, false), "{q:?}");
    let seen = take_seen();
    assert_eq!(
        seen,
        [
            ("pre", MajorFunction::NetworkQueryOpen, fast, None),
            ("post", MajorFunction::NetworkQueryOpen, fast, Some(Status::FLT_DISALLOW_FAST_IO)),
            ("pre", MajorFunction::Create, OperationKind::Irp, None),
        ],
    );
    assert_eq!(m.findings(), [], "no finding");
}

/// Reads a file another handle locked a range of, through the filter installed by `install`.
pub(crate) fn fast_check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(29, ("a.txt", b"0123456789abcdef"), install, entry);
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
    let _ = take_seen();
    let r = m.read(b, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, true, &b"0123"[..]));
    // The locked range: the file system's check says no, the read comes again as an IRP.
    let r = m.read(b, Some(8), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io), (Status::FILE_LOCK_CONFLICT, false));
    // Declined below, the fast read still gets the post callback its pre asked for, with
    // STATUS_FLT_DISALLOW_FAST_IO, before the IRP comes (docs/callback-model.md, rule 12).
    let seen = take_seen();
    let disallowed = Some(Status::FLT_DISALLOW_FAST_IO);
    assert_eq!(
        seen,
        [
            ("pre", read, fast, None),
            ("pre", check, fast, None),
            ("post", check, fast, Some(Status::SUCCESS)),
            ("post", read, fast, Some(Status::SUCCESS)),
            ("pre", read, fast, None),
            ("pre", check, fast, None),
            ("post", check, fast, disallowed),
            ("post", read, fast, disallowed),
            ("pre", read, irp, None),
            ("post", read, irp, Some(Status::FILE_LOCK_CONFLICT)),
        ],
    );
    // Disallowed by the filter: the read is an IRP, which the lock allows.
    DISALLOW.with(|d| d.set(true));
    let r = m.read(b, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, false, &b"0123"[..]));
    let seen = take_seen();
    assert_eq!(
        seen,
        [
            ("pre", read, fast, None),
            ("pre", check, fast, None),
            ("post", read, fast, disallowed),
            ("pre", read, irp, None),
            ("post", read, irp, Some(Status::SUCCESS)),
        ]
    );
    DISALLOW.with(|d| d.set(false));
    assert_eq!(m.findings(), [], "no finding");
}
