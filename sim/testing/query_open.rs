//! Attribute queries by name (`NtQueryFullAttributesFile`) through a backend: shared by
//! `legacy/tests/query_open.rs` and `minifilter/tests/query_open.rs` (each includes this file
//! with `#[path]` and builds [`Opener`] with its backend's `driver!`).
//!
//! The I/O manager offers the query to the top device's `FastIoQueryOpen` with a create IRP set
//! at that device's location (the Windows Research Kernel's `IopParseDevice`). Both backends
//! present it to the filter as the fast-I/O operation `IRP_MJ_NETWORK_QUERY_OPEN` (the Filter
//! Manager's documented equivalent of `FastIoQueryOpen`), pass the IRP down at the same location
//! with its `DeviceObject` naming the device below, and let the filter refuse it with
//! `DisallowFastIo`, after which the I/O manager opens, queries and closes the file with IRPs
//! (docs/semantics.md, operations-delivered).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::{Cell, RefCell};

use fsfilter::{
    Filter, Instance, InstanceSetup, IoStatus, MajorFunction, Operation, OperationKind, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Status,
};
use fsfilter_sim::{FsKind, IoRequest, Machine, MachineConfig, ServiceSpec, VolumeSpec};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Opener";

/// A callback seen: pre or post, the operation, its kind, and for a post its status.
type Seen = (&'static str, MajorFunction, OperationKind, Option<Status>);

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
    static DISALLOW: Cell<bool> = const { Cell::new(false) };
}

/// Records pre and post callbacks of query opens, creates and information queries; refuses
/// query opens' fast I/O
/// while [`DISALLOW`] is set.
pub(crate) struct Opener;

impl Filter for Opener {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .operation(Operation::new(MajorFunction::NetworkQueryOpen).pre().post())
        .operation(Operation::new(MajorFunction::QueryInformation).pre())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Opener)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let h = op.header();
        SEEN.with(|s| s.borrow_mut().push(("pre", h.major, h.kind, None)));
        if h.major == MajorFunction::NetworkQueryOpen && DISALLOW.with(Cell::get) {
            PreOutcome::DisallowFastIo
        } else if h.major == MajorFunction::NetworkQueryOpen {
            PreOutcome::WithPost(())
        } else {
            PreOutcome::NoPost
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
        let status: IoStatus = op.result();
        SEEN.with(|s| s.borrow_mut().push(("post", h.major, h.kind, Some(status.status))));
        PostOutcome::Finished
    }
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
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    query: OperationKind,
) {
    let mut m = Machine::new(MachineConfig { seed: 23 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", b"0123456789"));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    SEEN.with(|s| s.borrow_mut().clear());
    DISALLOW.with(|d| d.set(false));
    let fast = OperationKind::FastIo;
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: "f.txt" });
    assert_eq!((q.status, q.fast_io, q.data.len()), (Status::SUCCESS, true, 56), "{q:?}");
    assert_eq!(end_of_file(&q.data), 10);
    let seen = SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()));
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
    let seen = SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()));
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
    let seen = SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()));
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
