//! The page writers' FsFilter operations (docs/semantics.md, operations-delivered): the
//! modified-page writer's paging write reaches the filter between `IRP_MJ_ACQUIRE_FOR_MOD_WRITE`
//! (with the write's ending offset) and `IRP_MJ_RELEASE_FOR_MOD_WRITE`, and is asynchronous; a
//! flush's, between `IRP_MJ_ACQUIRE_FOR_CC_FLUSH` and `IRP_MJ_RELEASE_FOR_CC_FLUSH`, and is
//! synchronous; the lazy writer's alone. A filter that completes an acquire with an error keeps
//! the write from being sent (here: the modified-page writer's writes past 64 bytes). Shared by
//! `legacy/tests/page_writers.rs` (FsFilter callbacks registered with
//! `FsRtlRegisterFileSystemFilterCallbacks`) and `minifilter/tests/page_writers.rs` (the Filter
//! Manager's).

use std::cell::RefCell;

use fsfilter::{
    CallbackDataFlags, Filter, Instance, InstanceSetup, IoStatus, IrpFlags, Irql, MajorFunction,
    ModWriteParameters, Operation, OperationKind, Parameters, PostFlags, PostOperation,
    PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters, Status,
};
use fsfilter_sim::{
    CreateOptions, FsKind, Machine, MachineConfig, PageWriter, ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Writer";

/// The end past which the filter refuses the modified-page writer's writes.
const LIMIT: i64 = 64;

/// What one callback saw: the operation, pre or post, its parameters, the post's status, and
/// for the paging write whether it is synchronous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    major: MajorFunction,
    post: bool,
    parameters: Parameters,
    status: Option<Status>,
    synchronous: bool,
}

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// Records the page writers' callbacks, checks what every one of them must say, and refuses the
/// modified-page writer's writes that end past [`LIMIT`] with `STATUS_FILE_LOCK_CONFLICT`.
pub(crate) struct Writer;

impl Filter for Writer {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Write).pre().post())
        .operation(Operation::new(MajorFunction::AcquireForModWrite).pre().post())
        .operation(Operation::new(MajorFunction::ReleaseForModWrite).pre().post())
        .operation(Operation::new(MajorFunction::AcquireForCcFlush).pre().post())
        .operation(Operation::new(MajorFunction::ReleaseForCcFlush).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = u32;

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Writer)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PreOperation<'_, u32>,
    ) -> PreOutcome<u32> {
        let h = op.header();
        if h.major == MajorFunction::Write {
            assert_eq!(h.kind, OperationKind::Irp);
            assert!(h.irp_flags.contains(IrpFlags::PAGING_IO | IrpFlags::NOCACHE));
        } else {
            assert_eq!(h.kind, OperationKind::FsFilter);
            assert!(h.data_flags.contains(CallbackDataFlags::FS_FILTER_OPERATION));
            // The modified-page writer releases the file in its write's completion, a special
            // kernel APC (WRK `IopCompletePageWrite`, `MiWriteComplete`).
            let irql = if h.major == MajorFunction::ReleaseForModWrite {
                Irql::APC
            } else {
                Irql::PASSIVE
            };
            assert!(h.synchronous && h.irql == irql && h.irp_flags.is_empty());
        }
        assert!(op.file_name().is_some_and(|n| n.ends_with_ignore_case(".db")));
        let (major, parameters, synchronous) = (h.major, h.parameters, h.synchronous);
        let seen = Seen { major, post: false, parameters, status: None, synchronous };
        SEEN.with(|s| s.borrow_mut().push(seen));
        match h.parameters {
            Parameters::AcquireForModWrite(p) if p.ending_offset > LIMIT => {
                PreOutcome::Complete(IoStatus::new(Status::FILE_LOCK_CONFLICT))
            }
            // The context travels to the post callback.
            _ => PreOutcome::WithPost(0x5EC7),
        }
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        context: u32,
        _: PostFlags,
    ) -> PostOutcome<u32> {
        assert_eq!(context, 0x5EC7);
        let h = op.header();
        let status = Some(op.result().status);
        let (major, parameters, synchronous) = (h.major, h.parameters, h.synchronous);
        let seen = Seen { major, post: true, parameters, status, synchronous };
        SEEN.with(|s| s.borrow_mut().push(seen));
        PostOutcome::Finished
    }
}

fn take() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// The pre (`status` None) or post of an FsFilter operation.
fn fs_filter(major: MajorFunction, parameters: Parameters, status: Option<Status>) -> Seen {
    Seen { major, post: status.is_some(), parameters, status, synchronous: true }
}

/// The pre and post of the paging write of `length` bytes at `offset`.
fn write(offset: i64, length: u32, synchronous: bool) -> [Seen; 2] {
    let rw = fsfilter::ReadWriteParameters { offset, length, key: 0 };
    let pre = Seen {
        major: MajorFunction::Write,
        post: false,
        parameters: Parameters::Write(rw),
        status: None,
        synchronous,
    };
    [pre, Seen { post: true, status: Some(Status::SUCCESS), ..pre }]
}

pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    take();
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.db", &[b'.'; 100]));
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let h = m.open(c, "data.db", CreateOptions::open()).expect("open");
    take();
    let ok = Some(Status::SUCCESS);
    use MajorFunction as Mj;

    // The modified-page writer: its acquire with the ending offset, an asynchronous paging
    // write, its release.
    let r = m.page_write(h, 16, b"0123456789", PageWriter::ModifiedPageWriter);
    assert_eq!(r.status, Status::SUCCESS);
    let end = Parameters::AcquireForModWrite(ModWriteParameters { ending_offset: 26 });
    let [w, wp] = write(16, 10, false);
    assert_eq!(
        take(),
        [
            fs_filter(Mj::AcquireForModWrite, end, None),
            fs_filter(Mj::AcquireForModWrite, end, ok),
            w,
            wp,
            fs_filter(Mj::ReleaseForModWrite, Parameters::None, None),
            fs_filter(Mj::ReleaseForModWrite, Parameters::None, ok),
        ]
    );

    // A flush: its pair around a synchronous paging write.
    let r = m.page_write(h, 0, b"flushed", PageWriter::Flush);
    assert_eq!(r.status, Status::SUCCESS);
    let [w, wp] = write(0, 7, true);
    assert_eq!(
        take(),
        [
            fs_filter(Mj::AcquireForCcFlush, Parameters::None, None),
            fs_filter(Mj::AcquireForCcFlush, Parameters::None, ok),
            w,
            wp,
            fs_filter(Mj::ReleaseForCcFlush, Parameters::None, None),
            fs_filter(Mj::ReleaseForCcFlush, Parameters::None, ok),
        ]
    );

    // The lazy writer: the write alone.
    let r = m.page_write(h, 0, b"lazy", PageWriter::LazyWriter);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(take(), write(0, 4, true));

    // Refused: the filter completes the acquire with an error and gets no post; no write, no
    // release, and the file keeps its bytes.
    let r = m.page_write(h, 60, b"past the limit", PageWriter::ModifiedPageWriter);
    assert_eq!(r.status, Status::FILE_LOCK_CONFLICT);
    let end = Parameters::AcquireForModWrite(ModWriteParameters { ending_offset: 74 });
    assert_eq!(take(), [fs_filter(Mj::AcquireForModWrite, end, None)]);
    let data = m.file_contents(c, "data.db").expect("the file");
    let mut expected = b"lazyhed.........0123456789".to_vec();
    expected.resize(100, b'.');
    assert_eq!(data, expected);

    m.close_handle(h);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
