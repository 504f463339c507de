//! Asynchronous (overlapped) reads through a filter (docs/semantics.md, asynchronous-io): the
//! header's `synchronous` is what `IoIsOperationSynchronous` (legacy) and
//! `FltIsOperationSynchronous` (minifilter) answer; a non-cached read the caller does not wait
//! for returns `STATUS_PENDING` and its post callback runs later, from the storage's DPC, at
//! `DISPATCH_LEVEL`; a `Synchronize` makes the same read complete before the system service
//! returns, its post callback at `PASSIVE_LEVEL` (the reference page tells filters not to do that
//! for asynchronous reads and writes, and to ask `FltIsOperationSynchronous` first). A directory
//! query on an overlapped handle is asynchronous too, a flush a synchronous API (docs/simulator.md,
//! "Asynchronous I/O"). Shared by
//! `legacy/tests/overlapped.rs` and `minifilter/tests/overlapped.rs`.

use std::cell::RefCell;

use fsfilter::{
    Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation, PostFlags, PostOperation,
    PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters, Status,
};
use fsfilter_sim::{
    CreateOptions, EventKind, FsKind, IoMode, IoRequest, Machine, MachineConfig, RequestRef,
    ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Observer";

/// What one callback saw: pre or post, `synchronous`, the IRQL, and the status (post).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    post: bool,
    synchronous: bool,
    irql: Irql,
    status: Option<Status>,
}

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// Records its read callbacks, and synchronizes reads of files whose name ends in `sync.bin`.
pub(crate) struct Observer;

impl Filter for Observer {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .operation(Operation::new(MajorFunction::DirectoryControl).pre().post())
        .operation(Operation::new(MajorFunction::FlushBuffers).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Observer)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let h = op.header();
        let seen = Seen { post: false, synchronous: h.synchronous, irql: h.irql, status: None };
        SEEN.with(|s| s.borrow_mut().push(seen));
        let sync = op.file_name().is_some_and(|n| n.ends_with_ignore_case("sync.bin"));
        if sync { PreOutcome::Synchronize(()) } else { PreOutcome::WithPost(()) }
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let h = op.header();
        let seen = Seen {
            post: true,
            synchronous: h.synchronous,
            irql: h.irql,
            status: Some(op.result().status),
        };
        SEEN.with(|s| s.borrow_mut().push(seen));
        PostOutcome::Finished
    }
}

fn take() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn pre(synchronous: bool) -> Seen {
    Seen { post: false, synchronous, irql: Irql::PASSIVE, status: None }
}

fn post(synchronous: bool, irql: Irql) -> Seen {
    Seen { post: true, synchronous, irql, status: Some(Status::SUCCESS) }
}

/// The final status of request `io`, if it completed.
fn completed(m: &Machine, io: Option<RequestRef>) -> Option<Status> {
    m.events().iter().find_map(|e| match &e.kind {
        EventKind::IoComplete { io: i, status, .. } if Some(*i) == io => Some(*status),
        _ => None,
    })
}

pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    take();
    let mut m = Machine::new(MachineConfig { seed: 5 });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("data.bin", &[1; 4096])
            .file("sync.bin", &[2; 4096])
            .file("dir\\a.txt", b"a"),
    );
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let overlapped = CreateOptions::open().overlapped();
    let a = m.open(c, "data.bin", overlapped).expect("open");
    let s = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    take();

    // Non-cached on the overlapped handle: pending, the post from the DPC.
    let r = m.read(a, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING);
    assert_eq!(take(), [pre(false)], "no post before the storage completes it");
    m.settle();
    assert_eq!(completed(&m, r.io), Some(Status::SUCCESS));
    assert_eq!(take(), [post(false, Irql::DISPATCH)]);

    // The same read on the synchronous handle: the file system waits for the storage.
    let r = m.read(s, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(take(), [pre(true), post(true, Irql::PASSIVE)]);

    // A cached read on the overlapped handle: an IRP (never fast I/O), served from the cache
    // in the dispatch routine, but still asynchronous to the filter.
    let r = m.read(a, Some(0), 16, IoMode::Cached);
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, false));
    assert_eq!(take(), [pre(false), post(false, Irql::PASSIVE)]);

    // Synchronized: the read completes before the call returns, the post in the pre's thread.
    let b = m.open(c, "sync.bin", overlapped).expect("open");
    take();
    let r = m.read(b, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS, "the filter made the caller wait");
    assert_eq!(take(), [pre(false), post(false, Irql::PASSIVE)]);

    // The other services (docs/simulator.md, "Asynchronous I/O"): a directory query is
    // asynchronous on the overlapped handle, a flush a synchronous API (IRP_SYNCHRONOUS_API).
    let d = m.open(c, "dir", CreateOptions::directory().overlapped()).expect("open");
    take();
    let q = m.io(IoRequest::DirectoryControl {
        handle: d,
        class: 1,
        pattern: None,
        restart: true,
        single: false,
        length: 4096,
    });
    assert_eq!(q.status, Status::SUCCESS);
    assert_eq!(take(), [pre(false), post(false, Irql::PASSIVE)]);
    assert_eq!(m.io(IoRequest::Flush { handle: a }).status, Status::SUCCESS);
    assert_eq!(take(), [pre(true), post(true, Irql::PASSIVE)]);

    for h in [a, s, b, d] {
        m.close_handle(h);
    }
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
