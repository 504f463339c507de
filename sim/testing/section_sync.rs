//! FsFilter callbacks (docs/semantics.md, operations-delivered): a section created on a file
//! (`NtCreateSection`) reaches the filter as `IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION`, an
//! FsFilter operation with the section's page protection, before the memory manager looks at the
//! file, and as `IRP_MJ_RELEASE_FOR_SECTION_SYNCHRONIZATION` after; a filter that completes the
//! acquire with an error refuses the section with that status (here: executable mappings), and
//! gets no post callback. Shared by `legacy/tests/section_sync.rs` (FsFilter callbacks registered
//! with `FsRtlRegisterFileSystemFilterCallbacks`) and `minifilter/tests/section_sync.rs` (the
//! Filter Manager's).

use std::cell::RefCell;

use fsfilter::{
    CallbackDataFlags, Filter, Instance, InstanceSetup, IoStatus, Irql, MajorFunction, Operation,
    OperationKind, Parameters, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome,
    Registration, Result, SectionSyncParameters, ServiceParameters, Status, section_sync,
};
use fsfilter_sim::nt::access;
use fsfilter_sim::{CreateOptions, FsKind, Machine, MachineConfig, ServiceSpec, VolumeSpec};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Mapper";

/// What one callback saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    major: MajorFunction,
    post: bool,
    parameters: Parameters,
    status: Option<Status>,
}

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// Records the section-synchronization callbacks, checks what every one of them must say, and
/// refuses executable mappings with `STATUS_ACCESS_DENIED`.
pub(crate) struct Mapper;

impl Filter for Mapper {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::AcquireForSectionSynchronization).pre().post())
        .operation(Operation::new(MajorFunction::ReleaseForSectionSynchronization).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = u32;

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Mapper)
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
        assert_eq!(h.kind, OperationKind::FsFilter);
        assert!(h.data_flags.contains(CallbackDataFlags::FS_FILTER_OPERATION));
        assert!(h.synchronous && h.irql == Irql::PASSIVE && h.irp_flags.is_empty());
        assert!(op.file_name().is_some_and(|n| n.ends_with_ignore_case(".bin")));
        let seen = Seen { major: h.major, post: false, parameters: h.parameters, status: None };
        SEEN.with(|s| s.borrow_mut().push(seen));
        match h.parameters {
            Parameters::AcquireForSectionSynchronization(p) if p.executable() => {
                PreOutcome::Complete(IoStatus::new(Status::ACCESS_DENIED))
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
        assert_eq!(h.kind, OperationKind::FsFilter);
        let status = Some(op.result().status);
        let seen = Seen { major: h.major, post: true, parameters: h.parameters, status };
        SEEN.with(|s| s.borrow_mut().push(seen));
        PostOutcome::Finished
    }
}

fn take() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn acquire(protection: u32, status: Option<Status>) -> Seen {
    let p = SectionSyncParameters {
        sync_type: section_sync::SYNC_TYPE_CREATE_SECTION,
        page_protection: protection,
    };
    Seen {
        major: MajorFunction::AcquireForSectionSynchronization,
        post: status.is_some(),
        parameters: Parameters::AcquireForSectionSynchronization(p),
        status,
    }
}

fn release(status: Option<Status>) -> Seen {
    Seen {
        major: MajorFunction::ReleaseForSectionSynchronization,
        post: status.is_some(),
        parameters: Parameters::None,
        status,
    }
}

pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    take();
    let mut m = Machine::new(MachineConfig { seed: 7 });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[1; 100]).file("empty.bin", &[]),
    );
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let read_execute = CreateOptions::open().access(access::GENERIC_READ | access::GENERIC_EXECUTE);
    let h = m.open(c, "data.bin", read_execute).expect("open");
    take();
    let ok = Some(Status::SUCCESS);

    // A read-only mapping: acquire (pre, post), then release (pre, post); a request of its own
    // in the log, without an IRP.
    let r = m.create_section(h, section_sync::PAGE_READONLY);
    assert_eq!(r.status, Status::SUCCESS);
    assert!(r.io.is_some());
    let ro = section_sync::PAGE_READONLY;
    assert_eq!(take(), [acquire(ro, None), acquire(ro, ok), release(None), release(ok)]);

    // An executable one: refused by the filter's pre callback, which gets no post; no release.
    let r = m.create_section(h, section_sync::PAGE_EXECUTE_READ);
    assert_eq!(r.status, Status::ACCESS_DENIED);
    assert_eq!(take(), [acquire(section_sync::PAGE_EXECUTE_READ, None)]);

    // An empty file: the acquire comes before the memory manager looks at the file.
    let e = m.open(c, "empty.bin", CreateOptions::open()).expect("open");
    take();
    let r = m.create_section(e, section_sync::PAGE_READONLY);
    assert_eq!(r.status, Status::MAPPED_FILE_SIZE_ZERO);
    assert_eq!(take(), [acquire(ro, None), acquire(ro, ok), release(None), release(ok)]);

    // What the I/O manager refuses never reaches a filter: a writable mapping of a file opened
    // without write access, and a protection that is not one.
    let r = m.create_section(h, section_sync::PAGE_READWRITE);
    assert_eq!(r.status, Status::ACCESS_DENIED);
    let r = m.create_section(h, 0x3);
    assert_eq!((r.status, r.io), (Status::INVALID_PAGE_PROTECTION, None));
    assert_eq!(take(), []);

    for h in [h, e] {
        m.close_handle(h);
    }
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
