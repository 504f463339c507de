//! The minifilter backend on the simulated Filter Manager, with the probe sample: callback order
//! by altitude, each pre outcome, skip flags, instance-setup flags (existing, newly mounted and
//! manually attached volumes), refusals, unload refused, allowed and impossible, manual detach.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

use common::*;
use fsfilter::{
    InstanceSetupFlags as F, MajorFunction as Mj, OperationKind, Status, TeardownFlags,
};
use fsfilter_sim::{
    Callback, CreateOptions, FsKind, IoMode, MountWhen, StartType, StopResult, VolumeSpec,
};

#[test]
fn callbacks_run_by_altitude_pre_down_post_up() {
    // facts.md §2: pre callbacks from the highest altitude down, post callbacks back up.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Demand, "370100", &[]);
    install_probe(&mut m, "ProbeB", StartType::Demand, "370200", &[]);
    install_probe(&mut m, "ProbeC", StartType::Demand, "320000", &[]);
    m.boot();
    // Load order is not altitude order.
    for p in ["ProbeC", "ProbeA", "ProbeB"] {
        assert_eq!(m.fltmc_load(p), Status::SUCCESS, "{p}");
    }
    assert_eq!(instances_top_down(&m, c), ["ProbeB", "ProbeA", "ProbeC", "Ntfs"]);
    let r = m.create(c, "a.txt", CreateOptions::create());
    let order = order_for_io(&m, r.io.unwrap());
    let order: Vec<(&str, &str)> = order.iter().map(|(d, k)| (d.as_str(), *k)).collect();
    assert_eq!(
        order,
        [
            ("ProbeB", "pre"),
            ("ProbeA", "pre"),
            ("ProbeC", "pre"),
            ("ProbeC", "post"),
            ("ProbeA", "post"),
            ("ProbeB", "post")
        ]
    );
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn instance_setup_flags_for_existing_new_and_manual_volumes() {
    // facts.md §2.5: AUTOMATIC_ATTACHMENT for volumes found at load, with NEWLY_MOUNTED_VOLUME
    // for new mounts, MANUAL_ATTACHMENT for fltmc attach; Flags 1 suppresses automatic ones.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat).mount(MountWhen::Step));
    install_probe(&mut m, "ProbeA", StartType::Demand, "370100", &[]);
    install_probe_flags(&mut m, "Manual", StartType::Demand, "370300", 1);
    m.boot();
    assert_eq!(m.fltmc_load("ProbeA"), Status::SUCCESS);
    assert_eq!(m.fltmc_load("Manual"), Status::SUCCESS);
    assert_eq!(m.mount(f), Status::SUCCESS);
    assert_eq!(
        setups(&m, "ProbeA"),
        [
            (Some("C:".into()), F::AUTOMATIC_ATTACHMENT, Status::SUCCESS),
            (Some("F:".into()), F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME, Status::SUCCESS),
        ]
    );
    assert!(setups(&m, "Manual").is_empty(), "Flags 1: no automatic attachment");
    assert_eq!(m.filter_attach("Manual", c, None), Status::SUCCESS);
    assert_eq!(setups(&m, "Manual"), [(Some("C:".into()), F::MANUAL_ATTACHMENT, Status::SUCCESS)]);
    assert_eq!(instances_top_down(&m, c), ["Manual", "ProbeA", "Ntfs"]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_refusal_attaches_no_instance() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, "370100", &[("Attach", sz("cdrom"))]);
    m.boot();
    let s = setups(&m, "ProbeA");
    assert!(
        s.iter().any(|(v, _, st)| v.as_deref() == Some("C:") && *st == Status::FLT_DO_NOT_ATTACH),
        "{s:?}"
    );
    assert!(
        s.iter().any(|(v, _, st)| v.as_deref() == Some("D:") && *st == Status::SUCCESS),
        "{s:?}"
    );
    assert_eq!(instances_top_down(&m, c), ["Ntfs"]);
    assert_eq!(instances_top_down(&m, d), ["ProbeA", "cdfs"]);
    let h = m.create(c, "a.txt", CreateOptions::create()).handle.unwrap();
    m.close_handle(h);
    assert!(pres(&m, "ProbeA", Mj::Create).is_empty());
}

#[test]
fn every_pre_outcome_has_its_documented_effect() {
    // facts.md §4, docs/callback-model.md rules 10 to 13.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[7u8; 2048]));
    install_probe(
        &mut m,
        "ProbeA",
        StartType::Boot,
        "370100",
        &[(
            "Rules",
            sz("deny create *secret*; complete:STATUS_OBJECT_NAME_NOT_FOUND create *.tmp; \
                pend:30 read; synchronize write; nopost close"),
        )],
    );
    m.boot();
    assert_eq!(m.create(c, "secret.txt", CreateOptions::create()).status, Status::ACCESS_DENIED);
    assert_eq!(m.create(c, "x.tmp", CreateOptions::create()).status, Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(m.file_contents(c, "secret.txt"), None);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let before = m.now_ms();
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!((r.status, r.data[0]), (Status::SUCCESS, 7));
    assert!(m.now_ms() >= before + 30);
    assert_eq!(m.write(h, Some(0), &[1u8; 512], IoMode::NonCached).status, Status::SUCCESS);
    m.close_handle(h);
    let cbs: Vec<(Mj, &'static str)> = callbacks(&m, "ProbeA")
        .into_iter()
        .filter_map(|(_, cb)| match cb {
            Callback::Pre { major, outcome, .. } | Callback::Post { major, outcome, .. } => {
                Some((major, outcome))
            }
            Callback::Resumed { outcome } => Some((Mj::Unknown(0xff), outcome)),
            _ => None,
        })
        .filter(|(mj, _)| !matches!(mj, Mj::Create | Mj::Cleanup | Mj::QueryInformation))
        .collect();
    assert_eq!(
        cbs,
        [
            (Mj::Read, "FLT_PREOP_PENDING"),
            (Mj::Unknown(0xff), "FLT_PREOP_SUCCESS_WITH_CALLBACK"),
            (Mj::Read, "FLT_POSTOP_FINISHED_PROCESSING"),
            (Mj::Write, "FLT_PREOP_SYNCHRONIZE"),
            (Mj::Write, "FLT_POSTOP_FINISHED_PROCESSING"),
            (Mj::Close, "FLT_PREOP_SUCCESS_NO_CALLBACK"),
        ]
    );
    let creates: Vec<&str> = pres(&m, "ProbeA", Mj::Create).into_iter().map(|(_, o)| o).collect();
    assert_eq!(&creates[..2], ["FLT_PREOP_COMPLETE", "FLT_PREOP_COMPLETE"]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn fast_io_disallowed_comes_again_as_an_irp() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[7u8; 64]));
    install_probe(
        &mut m,
        "ProbeA",
        StartType::Boot,
        "370100",
        &[("Rules", sz("disallow_fastio read"))],
    );
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 8, IoMode::Cached).status, Status::SUCCESS);
    let r = m.read(h, Some(0), 8, IoMode::Cached);
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, false));
    let reads = pres(&m, "ProbeA", Mj::Read);
    assert!(
        reads.ends_with(&[
            (OperationKind::FastIo, "FLT_PREOP_DISALLOW_FASTIO"),
            (OperationKind::Irp, "FLT_PREOP_SUCCESS_WITH_CALLBACK")
        ]),
        "{reads:?}"
    );
    m.close_handle(h);
}

#[test]
fn skip_flags_are_applied_by_the_filter_manager() {
    // facts.md §3.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[1u8; 1024]));
    install_probe(
        &mut m,
        "ProbeA",
        StartType::Boot,
        "370100",
        &[("Operations", sz("create,cleanup,close,read:paging|cached,write:noncached"))],
    );
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 512, IoMode::Cached).status, Status::SUCCESS);
    assert_eq!(m.read(h, Some(0), 512, IoMode::Paging).status, Status::SUCCESS);
    assert!(pres(&m, "ProbeA", Mj::Read).is_empty());
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    assert_eq!(
        pres(&m, "ProbeA", Mj::Read),
        [(OperationKind::Irp, "FLT_PREOP_SUCCESS_WITH_CALLBACK")]
    );
    assert_eq!(m.write(h, Some(0), &[1u8; 512], IoMode::NonCached).status, Status::SUCCESS);
    assert!(pres(&m, "ProbeA", Mj::Write).is_empty());
    assert_eq!(m.write(h, Some(0), &[2u8; 512], IoMode::Paging).status, Status::SUCCESS);
    assert_eq!(pres(&m, "ProbeA", Mj::Write).len(), 1);
    m.close_handle(h);
}

#[test]
fn unload_refused_allowed_and_impossible() {
    // facts.md §5 and §2.6: fltmc unload asks the unload callback; sc stop is mandatory; without
    // an unload callback the filter cannot be unloaded.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "Refuser", StartType::Boot, "370100", &[("Unload", sz("refuse"))]);
    install_probe(&mut m, "Allower", StartType::Boot, "370200", &[]);
    install_probe(&mut m, "Stuck", StartType::Boot, "370300", &[("Unload", sz("none"))]);
    m.boot();
    assert_eq!(m.fltmc_unload("Refuser"), Status::FLT_DO_NOT_DETACH);
    assert_eq!(instances_top_down(&m, c), ["Stuck", "Allower", "Refuser", "Ntfs"]);
    assert_eq!(m.fltmc_unload("Allower"), Status::SUCCESS);
    assert_eq!(instances_top_down(&m, c), ["Stuck", "Refuser", "Ntfs"]);
    assert_ne!(m.fltmc_unload("Stuck"), Status::SUCCESS);
    assert_ne!(m.stop("Stuck"), StopResult::Unloaded);
    // The mandatory unload of the refuser goes through (the probe refuses only non-mandatory
    // ones; the Filter Manager would ignore a refusal anyway).
    assert_eq!(m.stop("Refuser"), StopResult::Unloaded);
    let unloads: Vec<Callback> = callbacks(&m, "Refuser")
        .into_iter()
        .filter(|(_, c)| matches!(c, Callback::UnloadCallback { .. }))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        unloads,
        [
            Callback::UnloadCallback {
                flags: fsfilter::UnloadFlags::empty(),
                status: Status::FLT_DO_NOT_DETACH
            },
            Callback::UnloadCallback {
                flags: fsfilter::UnloadFlags::MANDATORY,
                status: Status::SUCCESS
            },
        ]
    );
    assert!(callbacks(&m, "Refuser").iter().any(|(v, c)| v.as_deref() == Some("C:")
        && *c == Callback::TeardownComplete { reason: TeardownFlags::MANDATORY_FILTER_UNLOAD }));
    assert_eq!(instances_top_down(&m, c), ["Stuck", "Ntfs"]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn manual_detach_asks_query_teardown() {
    // facts.md §2.5: only manual detach asks; STATUS_FLT_DO_NOT_DETACH vetoes it; without the
    // callback the instance cannot be detached manually.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "Free", StartType::Boot, "370100", &[]);
    install_probe(&mut m, "Clingy", StartType::Boot, "370200", &[("Detach", sz("refuse"))]);
    install_probe(&mut m, "Glued", StartType::Boot, "370300", &[("Detach", sz("none"))]);
    m.boot();
    assert_eq!(m.filter_detach("Clingy", c, None), Status::FLT_DO_NOT_DETACH);
    assert_ne!(m.filter_detach("Glued", c, None), Status::SUCCESS);
    assert_eq!(m.filter_detach("Free", c, None), Status::SUCCESS);
    assert_eq!(instances_top_down(&m, c), ["Glued", "Clingy", "Ntfs"]);
    assert!(
        callbacks(&m, "Free")
            .iter()
            .any(|(_, c)| *c == Callback::TeardownComplete { reason: TeardownFlags::MANUAL })
    );
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_revived_volume_is_torn_down_and_set_up_again_as_detached() {
    // docs/semantics.md, dismount: FastFat dismounts F: with a file open and revives the same
    // volume device at the next mount (facts.md §1.4). The Filter Manager tears the instance down
    // at the dismount and, its frame still attached to that device, sets a new one up with
    // DETACHED_VOLUME (facts.md §2.5). (The legacy filter keeps its device and its instance:
    // legacy `attach::a_revived_volume_keeps_its_device_and_its_instance`.)
    let mut m = machine();
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat).file("a.txt", b"abc"));
    install_probe(&mut m, "ProbeA", StartType::Boot, "370100", &[]);
    m.boot();
    let h = m.open(f, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.dismount(f), Status::SUCCESS);
    let h2 = m.open(f, "a.txt", CreateOptions::open()).unwrap();
    m.close_handle(h2);
    m.close_handle(h);
    let flags: Vec<F> = setups(&m, "ProbeA").into_iter().map(|(_, f, _)| f).collect();
    let boot = F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME;
    assert_eq!(flags, [boot, F::AUTOMATIC_ATTACHMENT | F::DETACHED_VOLUME]);
    let teardowns: Vec<Callback> = callbacks(&m, "ProbeA")
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| matches!(c, Callback::TeardownStart { .. } | Callback::TeardownComplete { .. }))
        .collect();
    assert_eq!(
        teardowns,
        [
            Callback::TeardownStart { reason: TeardownFlags::VOLUME_DISMOUNT },
            Callback::TeardownComplete { reason: TeardownFlags::VOLUME_DISMOUNT }
        ]
    );
    assert_eq!(instances_top_down(&m, f), ["ProbeA", "fastfat"]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

/// docs/callback-model.md rule 17: the header is read from the callback data the first time the
/// filter asks for it. Cancels every successful open of `*.bad`; reads the header before the
/// cancel when `READ_FIRST` is set, after it otherwise, and records its callback-data flags.
mod late_header {
    use std::cell::{Cell, RefCell};

    use fsfilter::{
        CallbackDataFlags, Filter, Instance, InstanceSetup, MajorFunction, Operation, PostFlags,
        PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result,
        ServiceParameters, Status,
    };

    thread_local! {
        pub(crate) static READ_FIRST: Cell<bool> = const { Cell::new(false) };
        pub(crate) static FLAGS: RefCell<Vec<CallbackDataFlags>> =
            const { RefCell::new(Vec::new()) };
    }

    pub(crate) struct Canceller;

    impl Filter for Canceller {
        const REGISTRATION: Registration = Registration::new()
            .operation(Operation::new(MajorFunction::Create).post())
            .instance_setup_callback(true)
            .validated();
        type InstanceContext = ();
        type CompletionContext = ();

        fn load(_: &dyn ServiceParameters) -> Result<Self> {
            Ok(Canceller)
        }

        fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
            Ok(())
        }

        fn pre_operation(
            &self,
            _: &Instance<'_, ()>,
            _: &mut PreOperation<'_, ()>,
        ) -> PreOutcome<()> {
            PreOutcome::WithPost(())
        }

        fn post_operation(
            &self,
            _: &Instance<'_, ()>,
            op: &mut PostOperation<'_>,
            _: (),
            _: PostFlags,
        ) -> PostOutcome<()> {
            if !op.result().status.is_success() {
                return PostOutcome::Finished;
            }
            let first = READ_FIRST.with(Cell::get).then(|| op.header().data_flags);
            let _ = op.services().cancel_file_open(Status::ACCESS_DENIED);
            let flags = first.unwrap_or_else(|| op.header().data_flags);
            FLAGS.with(|f| f.borrow_mut().push(flags));
            PostOutcome::Finished
        }
    }

    pub(crate) mod driver {
        fsfilter_minifilter::driver!(super::Canceller);
    }
}

#[test]
fn a_header_read_after_cancel_file_open_shows_the_dirty_callback_data() {
    // docs/callback-model.md rule 17: a filter that cancels the open and only then reads the
    // header sees the callback data's flags with FLTFL_CALLBACK_DATA_DIRTY; one that reads the
    // header first sees the create as it arrived.
    use fsfilter::CallbackDataFlags as D;
    for read_first in [false, true] {
        let mut m = machine();
        let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"a"));
        install_minifilter(
            &mut m,
            fsfilter_sim::ServiceSpec::new("Canceller", late_header::driver::ENTRY, "mini"),
        );
        m.boot();
        late_header::READ_FIRST.with(|r| r.set(read_first));
        late_header::FLAGS.with(|f| f.borrow_mut().clear());
        assert_eq!(m.create(c, "a.txt", CreateOptions::open()).status, Status::ACCESS_DENIED);
        let flags = late_header::FLAGS.with(|f| f.borrow().clone());
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert!(flags[0].contains(D::IRP_OPERATION | D::POST_OPERATION), "{flags:?}");
        assert_eq!(flags[0].contains(D::DIRTY), !read_first, "read first: {read_first}");
        assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    }
}
