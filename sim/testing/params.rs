//! The parameters view of every kind of request, through a backend: shared by
//! `legacy/tests/params.rs` and `minifilter/tests/params.rs` (each includes this file with
//! `#[path]` and builds [`Recorder`] with its backend's `driver!`).
//!
//! The legacy backend reads an operation's parameters from the IRP's stack location, the
//! minifilter backend from the callback data's `FLT_PARAMETERS` (docs/semantics.md, callbacks):
//! for the same request both must show the filter the same major and minor function, kind and
//! parameters, which are the caller's. The expected values here are the requests' own, so a
//! backend that reads a wrong union member or field fails against them.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    CallbackDataFlags, ControlParameters, DirectoryParameters, Filter, InformationParameters,
    Instance, InstanceSetup, LockParameters, MajorFunction, Operation, OperationKind, Parameters,
    PreOperation, PreOutcome, ReadWriteParameters, Registration, RequestorMode, Result,
    ServiceParameters,
};
use fsfilter_sim::nt::{create_options as co, file_info as fi, fs_info, ioctl};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, IoRequest, Machine, MachineConfig, ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Recorder";

thread_local! {
    static SEEN: RefCell<Vec<(MajorFunction, u8, OperationKind, Parameters)>> =
        const { RefCell::new(Vec::new()) };
    /// The requestor mode and callback-data flags of each pre callback, in the same order.
    static HOW: RefCell<Vec<(OperationKind, RequestorMode, CallbackDataFlags)>> =
        const { RefCell::new(Vec::new()) };
}

/// Records the header of every pre callback.
pub(crate) struct Recorder;

impl Filter for Recorder {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .operation(Operation::new(MajorFunction::Read).pre())
        .operation(Operation::new(MajorFunction::Write).pre())
        .operation(Operation::new(MajorFunction::QueryInformation).pre())
        .operation(Operation::new(MajorFunction::SetInformation).pre())
        .operation(Operation::new(MajorFunction::QueryVolumeInformation).pre())
        .operation(Operation::new(MajorFunction::DirectoryControl).pre())
        .operation(Operation::new(MajorFunction::FileSystemControl).pre())
        .operation(Operation::new(MajorFunction::DeviceControl).pre())
        .operation(Operation::new(MajorFunction::LockControl).pre())
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
        SEEN.with(|s| s.borrow_mut().push((h.major, h.minor, h.kind, h.parameters)));
        HOW.with(|s| s.borrow_mut().push((h.kind, h.requestor_mode, h.data_flags)));
        PreOutcome::NoPost
    }
}

/// The callback-data flags of each pre callback of the last `check`, in order
/// (docs/semantics.md, header: they differ between the backends).
pub(crate) fn pre_data_flags() -> Vec<CallbackDataFlags> {
    HOW.with(|s| s.borrow().iter().map(|h| h.2).collect())
}

/// `FILE_READ_ATTRIBUTES`.
const FILE_READ_ATTRIBUTES: u32 = 0x80;

/// `IRP_MN_QUERY_DIRECTORY`, `IRP_MN_USER_FS_REQUEST`, `IRP_MN_LOCK`, `IRP_MN_UNLOCK_SINGLE`.
const MN_QUERY_DIRECTORY: u8 = 1;
const MN_USER_FS_REQUEST: u8 = 0;
const MN_LOCK: u8 = 1;
const MN_UNLOCK_SINGLE: u8 = 2;

/// Sends one request of each kind through the filter installed by `install` and checks what its
/// pre callbacks saw. `fast`: how the backend's filter sees a byte-range lock or a standard
/// information query, which the file system serves through fast I/O (docs/semantics.md,
/// operations-delivered): fast I/O through the Filter Manager, an IRP through the legacy backend,
/// which declines those fast-I/O routines for a filter that registers the operation.
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    fast: OperationKind,
) {
    let mut m = Machine::new(MachineConfig { seed: 19 });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("docs\\a.txt", &[1; 8192])
            .file("docs\\b.txt", b"b"),
    );
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    SEEN.with(|s| s.borrow_mut().clear());
    HOW.with(|s| s.borrow_mut().clear());
    let options = CreateOptions {
        access: FILE_READ_ATTRIBUTES,
        share: 1,
        disposition: 1,
        options: co::NON_DIRECTORY_FILE,
        attributes: 0x80,
        overlapped: false,
    };
    let b = m.open(c, "docs\\b.txt", options).expect("open");
    m.close_handle(b);
    let create = SEEN.with(|s| s.borrow().first().copied());
    let Some((MajorFunction::Create, 0, OperationKind::Irp, Parameters::Create(p))) = create else {
        panic!("{create:?}");
    };
    // FILE_OPEN, FILE_SHARE_READ, FILE_NON_DIRECTORY_FILE (and the synchronous I/O the simulated
    // NtCreateFile always asks for), FILE_ATTRIBUTE_NORMAL, the access asked for.
    assert_eq!((p.disposition(), p.share_access, p.file_attributes), (1, 1, 0x80), "{p:?}");
    assert_eq!(p.create_options() & co::NON_DIRECTORY_FILE, co::NON_DIRECTORY_FILE, "{p:?}");
    assert_eq!(p.create_options() & co::DIRECTORY_FILE, 0, "{p:?}");
    assert_eq!(p.desired_access & FILE_READ_ATTRIBUTES, FILE_READ_ATTRIBUTES, "{p:?}");
    assert_eq!(p.allocation_size, 0, "{p:?}");
    let h = m.open(c, "docs\\a.txt", CreateOptions::open()).expect("open");
    let d = m.open(c, "docs", CreateOptions::open().options(co::DIRECTORY_FILE)).expect("dir");
    SEEN.with(|s| s.borrow_mut().clear());
    HOW.with(|s| s.borrow_mut().clear());
    let expected = RefCell::new(Vec::new());
    let irp = OperationKind::Irp;
    let expect =
        |major, minor, parameters| expected.borrow_mut().push((major, minor, irp, parameters));

    assert!(m.read(h, Some(4096), 1024, IoMode::NonCached).status.is_success());
    let rw = ReadWriteParameters { offset: 4096, length: 1024, key: 0 };
    expect(MajorFunction::Read, 0, Parameters::Read(rw));
    // The first cached read is an IRP: the I/O manager offers fast I/O only once the IRP has
    // initiated caching on the file object. The next one is fast I/O.
    assert!(m.read(h, Some(0), 512, IoMode::Cached).status.is_success());
    let rw = ReadWriteParameters { offset: 0, length: 512, key: 0 };
    expect(MajorFunction::Read, 0, Parameters::Read(rw));
    assert!(m.read(h, Some(1024), 256, IoMode::Cached).status.is_success());
    let rw = ReadWriteParameters { offset: 1024, length: 256, key: 0 };
    expected.borrow_mut().push((
        MajorFunction::Read,
        0,
        OperationKind::FastIo,
        Parameters::Read(rw),
    ));
    assert!(m.write(h, Some(512), &[2; 512], IoMode::NonCached).status.is_success());
    let rw = ReadWriteParameters { offset: 512, length: 512, key: 0 };
    expect(MajorFunction::Write, 0, Parameters::Write(rw));
    let r = m.query_information(h, fi::STANDARD, 24);
    assert!(r.status.is_success());
    assert_eq!(r.fast_io, fast == OperationKind::FastIo, "{r:?}");
    let info = InformationParameters { class: fi::STANDARD, length: 24 };
    let query = Parameters::QueryInformation(info);
    expected.borrow_mut().push((MajorFunction::QueryInformation, 0, fast, query));
    assert!(m.set_information(h, fi::END_OF_FILE, &8192u64.to_le_bytes()).status.is_success());
    let info = InformationParameters { class: fi::END_OF_FILE, length: 8 };
    expect(MajorFunction::SetInformation, 0, Parameters::SetInformation(info));
    assert!(m.query_volume_information(h, fs_info::SIZE, 24).status.is_success());
    let info = InformationParameters { class: fs_info::SIZE, length: 24 };
    expect(MajorFunction::QueryVolumeInformation, 0, Parameters::QueryVolumeInformation(info));
    assert!(m.query_directory(d, fi::NAMES, Some("*.txt"), true, 4096).status.is_success());
    let dir = DirectoryParameters { class: fi::NAMES, length: 4096 };
    expect(MajorFunction::DirectoryControl, MN_QUERY_DIRECTORY, Parameters::DirectoryControl(dir));
    let code = 0x0009_0FFF;
    let _ = m.io(IoRequest::Fsctl { handle: h, code, input: &[0; 16], output_length: 32 });
    let control = ControlParameters { code, input_length: 16, output_length: 32 };
    expect(
        MajorFunction::FileSystemControl,
        MN_USER_FS_REQUEST,
        Parameters::FileSystemControl(control),
    );
    let code = ioctl::DISK_GET_LENGTH_INFO;
    assert!(
        m.io(IoRequest::DeviceControl { handle: h, code, input: &[], output_length: 8 })
            .status
            .is_success()
    );
    let control = ControlParameters { code, input_length: 0, output_length: 8 };
    expect(MajorFunction::DeviceControl, 0, Parameters::DeviceControl(control));
    let lock = IoRequest::Lock {
        handle: h,
        offset: 100,
        length: 50,
        exclusive: true,
        fail_immediately: true,
    };
    let r = m.io(lock);
    assert!(r.status.is_success());
    assert_eq!(r.fast_io, fast == OperationKind::FastIo, "{r:?}");
    let range = LockParameters { offset: 100, length: 50, key: 0 };
    let lock_control = Parameters::LockControl(range);
    expected.borrow_mut().push((MajorFunction::LockControl, MN_LOCK, fast, lock_control));
    let r = m.io(IoRequest::Unlock { handle: h, offset: 100, length: 50 });
    assert!(r.status.is_success());
    assert_eq!(r.fast_io, fast == OperationKind::FastIo, "{r:?}");
    expected.borrow_mut().push((MajorFunction::LockControl, MN_UNLOCK_SINGLE, fast, lock_control));
    m.close_handle(d);
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());

    let expected = expected.into_inner();
    let seen = SEEN.with(|s| s.borrow().clone());
    // The cache manager may add paging I/O of its own; the requests' IRPs come in order.
    let requested: Vec<_> = seen
        .iter()
        .copied()
        .filter(|&(major, _, _, p)| {
            !matches!(major, MajorFunction::Read | MajorFunction::Write)
                || expected.iter().any(|e| e.3 == p)
        })
        .collect();
    assert_eq!(requested, expected, "all seen: {seen:#?}");
    // Every request came from user mode (the cache manager's paging I/O from kernel mode), and
    // says how it came: an IRP or fast I/O (docs/semantics.md, header: the other flags come only
    // from the Filter Manager).
    let how = HOW.with(|s| s.borrow().clone());
    for ((major, _, kind, _), (k, mode, flags)) in seen.iter().zip(&how) {
        assert_eq!(kind, k);
        let origin = match kind {
            OperationKind::Irp => CallbackDataFlags::IRP_OPERATION,
            _ => CallbackDataFlags::FAST_IO_OPERATION,
        };
        let both = CallbackDataFlags::IRP_OPERATION | CallbackDataFlags::FAST_IO_OPERATION;
        assert_eq!(flags.intersection(both), origin, "{major:?} {kind:?}: {flags:?}");
        if expected.iter().any(|e| e.0 == *major && e.2 == *kind) {
            assert_eq!(*mode, RequestorMode::User, "{major:?} {kind:?}");
        }
    }
}
