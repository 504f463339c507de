//! `Synchronize` where it is illegal (facts.md §4: `FLT_PREOP_SYNCHRONIZE` for oplock FSCTLs,
//! `IRP_MN_NOTIFY_CHANGE_DIRECTORY` and `IRP_MN_LOCK`, which may wait below indefinitely for
//! another requester): both backends give those operations a post callback as for `WithPost`
//! (a notification through both since December 6, when the file systems began serving them),
//! and synchronize every other (docs/callback-model.md, rule 11). Shared by
//! `legacy/tests/synchronize.rs` and `minifilter/tests/synchronize.rs`; the simulated Filter
//! Manager reports a minifilter that answers `FLT_PREOP_SYNCHRONIZE` for them
//! (`CALLBACK_STATUS_INVALID_FOR_OPERATION`).

use std::cell::RefCell;

use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, PostFlags, PostOperation,
    PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
};
use fsfilter_sim::{
    Callback, CreateOptions, FsKind, IoMode, IoRequest, Machine, MachineConfig, ServiceSpec,
    VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Synchronizer";

thread_local! {
    /// (major, minor) of each post callback.
    static POSTS: RefCell<Vec<(MajorFunction, u8)>> = const { RefCell::new(Vec::new()) };
}

/// Answers `Synchronize` for every operation it registers.
pub(crate) struct Synchronizer;

impl Filter for Synchronizer {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .operation(Operation::new(MajorFunction::FileSystemControl).pre().post())
        .operation(Operation::new(MajorFunction::LockControl).pre().post())
        .operation(Operation::new(MajorFunction::DirectoryControl).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Synchronizer)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::Synchronize(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let h = op.header();
        POSTS.with(|p| p.borrow_mut().push((h.major, h.minor)));
        PostOutcome::Finished
    }
}

/// `FSCTL_REQUEST_OPLOCK_LEVEL_2`.
const REQUEST_OPLOCK_LEVEL_2: u32 = 0x0009_0004;
/// An FSCTL code no file system knows.
const OTHER_FSCTL: u32 = 0x0009_0FFF;

pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    POSTS.with(|p| p.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 3 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[1; 4096]));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    let first = m.callbacks_of(NAME).len();
    assert!(m.read(h, Some(0), 512, IoMode::NonCached).status.is_success());
    let lock = IoRequest::Lock {
        handle: h,
        offset: 0,
        length: 16,
        exclusive: true,
        fail_immediately: true,
    };
    assert!(m.io(lock).status.is_success());
    assert!(m.io(IoRequest::Unlock { handle: h, offset: 0, length: 16 }).status.is_success());
    for code in [REQUEST_OPLOCK_LEVEL_2, OTHER_FSCTL] {
        let _ = m.io(IoRequest::Fsctl { handle: h, code, input: &[], output_length: 0 });
    }
    m.close_handle(h);
    // A directory-change notification waits below until the directory changes: the caller gets
    // STATUS_PENDING, not a thread blocked in the filter, and the post callback runs when a
    // create completes it.
    let dir = m.open(c, "\\", CreateOptions::directory()).expect("the root");
    let notify = IoRequest::NotifyChangeDirectory {
        handle: dir,
        filter: 0x1,
        watch_tree: false,
        length: 512,
    };
    assert_eq!(m.io(notify).status, fsfilter::Status::PENDING);
    let created = m.open(c, "new.txt", CreateOptions::create()).expect("create");
    m.close_handle(created);
    m.close_handle(dir);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let pre: Vec<(MajorFunction, u8, &str)> = m
        .callbacks_of(NAME)
        .iter()
        .skip(first)
        .filter_map(|(_, cb)| match *cb {
            Callback::Pre { major, minor, outcome, .. } => Some((major, minor, outcome)),
            _ => None,
        })
        .collect();
    use MajorFunction::{
        DirectoryControl as Dir, FileSystemControl as Fsctl, LockControl as Lock, Read,
    };
    assert_eq!(
        pre,
        [
            (Read, 0, "FLT_PREOP_SYNCHRONIZE"),
            (Lock, 1, "FLT_PREOP_SUCCESS_WITH_CALLBACK"),
            (Lock, 2, "FLT_PREOP_SYNCHRONIZE"),
            (Fsctl, 0, "FLT_PREOP_SUCCESS_WITH_CALLBACK"),
            (Fsctl, 0, "FLT_PREOP_SYNCHRONIZE"),
            (Dir, 2, "FLT_PREOP_SUCCESS_WITH_CALLBACK"),
        ],
        "IRP_MN_LOCK, the oplock request and the notification got a post callback without \
         synchronization"
    );
    let posts = POSTS.with(|p| p.borrow().clone());
    assert_eq!(posts, [(Read, 0), (Lock, 1), (Lock, 2), (Fsctl, 0), (Fsctl, 0), (Dir, 2)]);
}
