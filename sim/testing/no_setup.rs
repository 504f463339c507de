//! A filter whose registration declares no instance-setup callback, through a backend: shared by
//! `legacy/tests/no_setup.rs` and `minifilter/tests/no_setup.rs` (each includes this file with
//! `#[path]` and builds [`Setupless`] with its backend's `driver!`).
//!
//! Without the callback every volume is attached (facts.md §2.5), and each instance gets the
//! state `Filter::default_instance` builds; when it builds none, the volume is refused: no device
//! or instance of the filter is in its stack, and its operations pass by (docs/callback-model.md). The state is there for
//! the first callback whatever it is: a post callback at `DISPATCH_LEVEL` of a post-only
//! registration ([`PostOnly`]); and a filter that scans data is registered for data scan on each
//! volume all the same (facts.md §6). The minifilter backend built the state on first use, which a
//! post callback at `DISPATCH_LEVEL` cannot do, and registered for data scan only from a declared
//! setup callback, before a fix of December 4.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    DataScanMode, Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Status,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, Machine, MachineConfig, ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Setupless";

thread_local! {
    /// The instance state each pre and post callback saw, in order.
    static SEEN: RefCell<Vec<(&'static str, u32)>> = const { RefCell::new(Vec::new()) };
    /// What each of [`PostOnly`]'s post callbacks saw: its IRQL, instance state and data-scan mode.
    static POSTS: RefCell<Vec<(Irql, u32, DataScanMode)>> = const { RefCell::new(Vec::new()) };
}

/// Registers reads (pre and post) and no instance-setup callback; its instance state is the
/// `Default` parameter (0: none).
pub(crate) struct Setupless {
    default: u32,
}

impl Filter for Setupless {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .instance_setup_callback(false)
        .validated();
    type InstanceContext = u32;
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Self> {
        Ok(Setupless { default: parameters.dword("Default").unwrap_or(0) })
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<u32> {
        // Not registered: never called.
        Err(fsfilter::Error::FLT_DO_NOT_ATTACH)
    }

    fn default_instance(&self) -> Option<u32> {
        (self.default != 0).then_some(self.default)
    }

    fn pre_operation(&self, i: &Instance<'_, u32>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        SEEN.with(|s| s.borrow_mut().push(("pre", *i.context)));
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        i: &Instance<'_, u32>,
        _: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        SEEN.with(|s| s.borrow_mut().push(("post", *i.context)));
        PostOutcome::Finished
    }
}

/// Two non-cached reads through the filter with `Default` = `default`: what its callbacks saw,
/// and whether the filter is in the volume's stack (a device or an instance).
pub(crate) fn run(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    default: u32,
) -> (Vec<(&'static str, u32)>, bool) {
    SEEN.with(|s| s.borrow_mut().clear());
    let mut spec = ServiceSpec::new(NAME, entry, "legacy");
    spec.parameters = vec![("Default".into(), fsfilter_sim::RegValue::Dword(default))];
    let attached = two_reads(install, spec, 1, false);
    (SEEN.with(|s| s.borrow().clone()), attached)
}

/// Installs `spec` with `install` on a machine of `volumes` NTFS volumes, and reads a file of
/// the last one twice, non-cached (completed from a DPC when `at_dpc`); no finding. Whether the
/// filter is in that volume's stack, as a legacy device or as an instance of a frame.
fn two_reads(
    install: fn(&mut Machine, ServiceSpec),
    spec: ServiceSpec,
    volumes: usize,
    at_dpc: bool,
) -> bool {
    let name = spec.name.clone();
    let mut m = Machine::new(MachineConfig { seed: 11 });
    for n in 1..volumes {
        m.add_volume(VolumeSpec::new(&format!("V{n}:"), FsKind::Ntfs));
    }
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[3u8; 4096]));
    install(&mut m, spec);
    m.boot();
    m.kernel(|k| k.fs.complete_at_dpc = at_dpc);
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    for offset in [0, 512] {
        let r = m.read(h, Some(offset), 512, IoMode::NonCached);
        assert_eq!((r.status, r.data.first().copied()), (Status::SUCCESS, Some(3)), "read");
    }
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    in_stack(&m, c, &name)
}

/// Whether `driver` is in `v`'s stack, as a legacy device or as an instance of a frame.
fn in_stack(m: &Machine, v: fsfilter_sim::VolumeId, driver: &str) -> bool {
    m.device_stack(v).into_iter().any(|e| match e {
        fsfilter_sim::StackEntry::Legacy { driver: d } => d == driver,
        fsfilter_sim::StackEntry::Frame { instances, .. } => {
            instances.iter().any(|i| i.driver == driver)
        }
        fsfilter_sim::StackEntry::FileSystem { .. } => false,
    })
}

/// The assertions both backends share.
pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    assert_eq!(
        run(install, entry, 7),
        (vec![("pre", 7), ("post", 7), ("pre", 7), ("post", 7)], true),
        "every operation sees the default instance state"
    );
    assert_eq!(
        run(install, entry, 0),
        (vec![], false),
        "without instance state the volume is refused (the minifilter backend attached an \
         instance without state before a fix of December 6)"
    );
}

/// Registers only a post callback for reads, no instance-setup callback, and data scanning; its
/// instance state is 9.
pub(crate) struct PostOnly;

impl Filter for PostOnly {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).post())
        .instance_setup_callback(false)
        .data_scan(true)
        .validated();
    type InstanceContext = u32;
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(PostOnly)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<u32> {
        // Not registered: never called.
        Err(fsfilter::Error::FLT_DO_NOT_ATTACH)
    }

    fn default_instance(&self) -> Option<u32> {
        Some(9)
    }

    fn pre_operation(&self, _: &Instance<'_, u32>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        i: &Instance<'_, u32>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        POSTS.with(|p| p.borrow_mut().push((op.services().irql(), *i.context, i.data_scan)));
        PostOutcome::Finished
    }
}

/// Two non-cached reads through [`PostOnly`], completed by the file system from a DPC, on the
/// last of `volumes` volumes: what its post callbacks saw. `scan` is the data-scan mode the backend
/// gives a volume it can scan. With more than 64 volumes the filter has more instances than one
/// block of the minifilter backend's instance table holds (whose 65th instance's posts above
/// `APC_LEVEL` were skipped before a fix of December 4).
pub(crate) fn check_post_only(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    scan: DataScanMode,
    volumes: usize,
) {
    POSTS.with(|p| p.borrow_mut().clear());
    // Non-cached transfers complete from a DPC: the post callbacks run at DISPATCH_LEVEL.
    assert!(two_reads(install, ServiceSpec::new("PostOnly", entry, "legacy"), volumes, true));
    assert_eq!(POSTS.with(|p| p.borrow().clone()), [(Irql::DISPATCH, 9, scan); 2]);
}

/// [`PostOnly`] on `volumes` NTFS volumes, each with a file, with each pool allocation its
/// service makes while booting failed in turn: whatever fails, every volume the filter is in the
/// stack of gets both post callbacks of two non-cached reads completed from a DPC, with its
/// state, and every other volume none; no finding. Returns how many volumes were refused over
/// all the runs. (The minifilter backend's instance table grows by a pool block after 64
/// instances; without that block an instance was attached all the same and its post callbacks
/// above `APC_LEVEL` were skipped, before a fix of December 6.)
pub(crate) fn check_post_only_under_pool_failures(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    scan: DataScanMode,
    volumes: usize,
) -> usize {
    let boot = |fail: Option<u64>| {
        let mut m = Machine::new(MachineConfig { seed: 11 });
        let ids: Vec<_> = (0..volumes)
            .map(|n| {
                let spec = VolumeSpec::new(&format!("V{n}:"), FsKind::Ntfs);
                m.add_volume(spec.file("data.bin", &[3u8; 4096]))
            })
            .collect();
        install(&mut m, ServiceSpec::new("PostOnly", entry, "legacy"));
        if let Some(nth) = fail {
            m.kernel(|k| k.faults.plan_for_service("PostOnly", fsfilter_sim::FaultKind::Pool, nth));
        }
        m.boot();
        (m, ids)
    };
    let calls = {
        let (m, _) = boot(None);
        m.kernel(|k| k.faults.service_count("PostOnly", fsfilter_sim::FaultKind::Pool))
    };
    let mut refused = 0;
    for nth in 1..=calls {
        let (mut m, ids) = boot(Some(nth));
        m.kernel(|k| k.fs.complete_at_dpc = true);
        for v in ids {
            let attached = in_stack(&m, v, "PostOnly");
            refused += usize::from(!attached);
            POSTS.with(|p| p.borrow_mut().clear());
            let h = m.open(v, "data.bin", CreateOptions::open()).expect("open");
            for offset in [0, 512] {
                let r = m.read(h, Some(offset), 512, IoMode::NonCached);
                assert_eq!((r.status, r.data.first().copied()), (Status::SUCCESS, Some(3)));
            }
            m.close_handle(h);
            let expected = if attached { vec![(Irql::DISPATCH, 9, scan); 2] } else { vec![] };
            assert_eq!(POSTS.with(|p| p.borrow().clone()), expected, "pool call {nth} failed");
        }
        assert!(m.findings().is_empty(), "pool call {nth} failed: {:?}", m.findings());
    }
    refused
}
