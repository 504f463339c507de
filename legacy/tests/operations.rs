//! The model on top of the legacy backend: pre and post callbacks around IRPs and fast I/O, the
//! four skip flags emulated from the IRP's flags (facts.md §3), and every pre outcome (facts.md
//! §4), with the probe sample's rules.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

use common::*;
use fsfilter::{MajorFunction as Mj, OperationKind, Status};
use fsfilter_sim::{
    Callback, CreateOptions, FsKind, IoMode, Machine, StartType, VolumeId, VolumeSpec,
};

fn with_probe(params: &[(&str, fsfilter_sim::RegValue)]) -> (Machine, VolumeId) {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[7u8; 2048]));
    install_probe(&mut m, "ProbeA", StartType::Boot, params);
    m.boot();
    (m, c)
}

#[test]
fn skip_flags_follow_the_irp_flags() {
    // facts.md §3: SKIP_CACHED_IO skips cached reads, fast I/O included; SKIP_PAGING_IO skips
    // paging IRPs; SKIP_NON_CACHED_NON_PAGING_IO skips non-cached writes that are not paging.
    let (mut m, c) = with_probe(&[(
        "Operations",
        sz("create,cleanup,close,read:paging|cached,write:noncached"),
    )]);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let reads = |m: &Machine| pres(m, "ProbeA", Mj::Read);
    let writes = |m: &Machine| pres(m, "ProbeA", Mj::Write);

    assert_eq!(m.read(h, Some(0), 512, IoMode::Cached).status, Status::SUCCESS);
    assert!(reads(&m).is_empty(), "cached read skipped, fast I/O and IRP: {:?}", reads(&m));
    assert_eq!(m.read(h, Some(0), 512, IoMode::Paging).status, Status::SUCCESS);
    assert!(reads(&m).is_empty(), "paging read skipped");
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    assert_eq!(reads(&m), [(OperationKind::Irp, "FLT_PREOP_SUCCESS_WITH_CALLBACK")]);

    assert_eq!(m.write(h, Some(0), &[1u8; 512], IoMode::NonCached).status, Status::SUCCESS);
    assert!(writes(&m).is_empty(), "non-cached, non-paging write skipped");
    assert_eq!(m.write(h, Some(0), &[2u8; 512], IoMode::Paging).status, Status::SUCCESS);
    assert_eq!(writes(&m).len(), 1, "paging write seen");
    assert_eq!(m.write(h, Some(0), &[3u8; 16], IoMode::Cached).status, Status::SUCCESS);
    assert!(writes(&m).len() >= 2, "cached write seen: {:?}", writes(&m));
    m.close_handle(h);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn deny_and_complete_end_the_request_in_the_pre_callback() {
    // facts.md §4: FLT_PREOP_COMPLETE completes with the filter's status; no post callback, and
    // lower drivers never see the request.
    let (mut m, c) = with_probe(&[(
        "Rules",
        sz("deny create *secret*; complete:STATUS_OBJECT_NAME_NOT_FOUND create *.tmp"),
    )]);
    let denied = m.create(c, "secret.txt", CreateOptions::create());
    assert_eq!(denied.status, Status::ACCESS_DENIED);
    let missing = m.create(c, "x.tmp", CreateOptions::create());
    assert_eq!(missing.status, Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(m.file_contents(c, "secret.txt"), None, "the file system never saw the create");
    let ok = m.create(c, "plain.txt", CreateOptions::create());
    assert_eq!(ok.status, Status::SUCCESS);
    let creates = pres(&m, "ProbeA", Mj::Create);
    assert_eq!(
        creates.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        ["FLT_PREOP_COMPLETE", "FLT_PREOP_COMPLETE", "FLT_PREOP_SUCCESS_WITH_CALLBACK"]
    );
    let posts = callbacks(&m, "ProbeA")
        .into_iter()
        .filter(|(_, cb)| matches!(cb, Callback::Post { major: Mj::Create, .. }))
        .count();
    assert_eq!(posts, 1, "only the create that went down has a post callback");
    let notes: Vec<String> = callbacks(&m, "ProbeA")
        .into_iter()
        .filter_map(|(_, cb)| match cb {
            Callback::Note { text } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(notes, ["probe: rule 1 matched: deny", "probe: rule 2 matched: complete"]);
}

#[test]
fn pend_holds_the_request_until_resumed() {
    // facts.md §4: FLT_PREOP_PENDING; the filter resumes later (here after 30 ms of virtual
    // time), and the request continues with its post callback.
    let (mut m, c) = with_probe(&[("Rules", sz("pend:30 read"))]);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let before = m.now_ms();
    let r = m.read(h, Some(0), 4, IoMode::NonCached);
    assert_eq!(r.status, Status::INVALID_PARAMETER, "unaligned non-cached read refused below");
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!((r.status, &r.data[..4]), (Status::SUCCESS, &[7u8; 4][..]));
    assert!(m.now_ms() >= before + 30, "{} -> {}", before, m.now_ms());
    let seq: Vec<&'static str> = callbacks(&m, "ProbeA")
        .into_iter()
        .filter_map(|(_, cb)| match cb {
            Callback::Pre { major: Mj::Read, outcome, .. }
            | Callback::Resumed { outcome }
            | Callback::Post { major: Mj::Read, outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(
        seq[seq.len() - 3..],
        ["FLT_PREOP_PENDING", "FLT_PREOP_SUCCESS_WITH_CALLBACK", "FLT_POSTOP_FINISHED_PROCESSING"]
    );
    m.close_handle(h);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn fast_io_can_be_disallowed_and_then_comes_as_an_irp() {
    // facts.md §4: FLT_PREOP_DISALLOW_FASTIO on a fast-I/O operation: the fast-I/O routine
    // returns FALSE and the I/O manager sends an IRP.
    let (mut m, c) = with_probe(&[("Rules", sz("disallow_fastio read"))]);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    // The first cached read initiates caching (an IRP); later ones try fast I/O first.
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

/// A filter without `IRP_MJ_LOCK_CONTROL` or `IRP_MJ_QUERY_INFORMATION` in its constant
/// registration: the legacy backend passes the fast-I/O lock and query routines through to the
/// file system, unless the registration in force adds the operation (parameter `AddLocks`).
struct NoLocks {
    add_locks: bool,
}

impl fsfilter::Filter for NoLocks {
    const REGISTRATION: fsfilter::Registration = fsfilter::Registration::new()
        .operation(fsfilter::Operation::new(Mj::Create).pre())
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn fsfilter::ServiceParameters) -> fsfilter::Result<Self> {
        Ok(NoLocks { add_locks: parameters.dword("AddLocks").is_some_and(|v| v != 0) })
    }

    fn registration(&self) -> Option<fsfilter::Registration> {
        self.add_locks
            .then(|| Self::REGISTRATION.operation(fsfilter::Operation::new(Mj::LockControl).pre()))
    }

    fn instance_setup(&self, _: &fsfilter::InstanceSetup<'_>) -> fsfilter::Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _: &fsfilter::Instance<'_, ()>,
        _: &mut fsfilter::PreOperation<'_, ()>,
    ) -> fsfilter::PreOutcome<()> {
        fsfilter::PreOutcome::NoPost
    }
}

mod no_locks {
    fsfilter_legacy::driver!(super::NoLocks);
}

#[test]
fn locks_and_queries_come_as_irps_to_a_filter_that_registers_them() {
    // docs/semantics.md, operations-delivered: NTFS would serve these locks and this query through
    // fast I/O (NtLockFile and NtUnlockFile try FastIoLock and FastIoUnlockSingle first,
    // NtQueryInformationFile FastIoQueryStandardInfo). The legacy backend declines them for a
    // filter that registers the operation, here the probe with a run-time registration, so the
    // I/O manager sends the IRPs and the filter sees them.
    let operations = "create,cleanup,close,lock,query_information";
    let (mut m, c) = with_probe(&[("Operations", sz(operations))]);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let lock = |handle| fsfilter_sim::IoRequest::Lock {
        handle,
        offset: 8,
        length: 4,
        exclusive: true,
        fail_immediately: true,
    };
    let r = m.io(lock(h));
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, false));
    let r = m.io(fsfilter_sim::IoRequest::Unlock { handle: h, offset: 8, length: 4 });
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, false));
    assert_eq!(
        pres(&m, "ProbeA", Mj::LockControl),
        [
            (OperationKind::Irp, "FLT_PREOP_SUCCESS_WITH_CALLBACK"),
            (OperationKind::Irp, "FLT_PREOP_SUCCESS_WITH_CALLBACK")
        ]
    );
    let q = m.query_information(h, 5, 24);
    assert_eq!((q.status, q.fast_io), (Status::SUCCESS, false));
    assert_eq!(
        pres(&m, "ProbeA", Mj::QueryInformation),
        [(OperationKind::Irp, "FLT_PREOP_SUCCESS_WITH_CALLBACK")]
    );
    m.close_handle(h);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));

    // A filter that does not register the operation passes them through: fast I/O serves them.
    drop(m);
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[7u8; 64]));
    install_legacy(&mut m, fsfilter_sim::ServiceSpec::new("NoLocks", no_locks::ENTRY, "legacy"));
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let r = m.io(lock(h));
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, true));
    let r = m.io(fsfilter_sim::IoRequest::Unlock { handle: h, offset: 8, length: 4 });
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, true));
    let q = m.query_information(h, 5, 24);
    assert_eq!((q.status, q.fast_io), (Status::SUCCESS, true));
    m.close_handle(h);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));

    // The same filter adding IRP_MJ_LOCK_CONTROL at run time: its locks are IRPs again (the
    // decline decided from the registration in force), its queries still fast I/O.
    drop(m);
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[7u8; 64]));
    let mut spec = fsfilter_sim::ServiceSpec::new("NoLocks", no_locks::ENTRY, "legacy");
    spec.parameters = [("AddLocks".to_owned(), fsfilter_sim::RegValue::Dword(1))].into();
    install_legacy(&mut m, spec);
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    let r = m.io(lock(h));
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, false));
    let q = m.query_information(h, 5, 24);
    assert_eq!((q.status, q.fast_io), (Status::SUCCESS, true));
    assert_eq!(
        pres(&m, "NoLocks", Mj::LockControl),
        [(OperationKind::Irp, "FLT_PREOP_SUCCESS_NO_CALLBACK")]
    );
    m.close_handle(h);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn synchronize_and_nopost() {
    // facts.md §4: FLT_PREOP_SYNCHRONIZE gets its post callback in the dispatching thread;
    // FLT_PREOP_SUCCESS_NO_CALLBACK gets none.
    let (mut m, c) = with_probe(&[("Rules", sz("synchronize write; nopost close"))]);
    let h = m.open(c, "data.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.write(h, Some(0), &[1u8; 512], IoMode::NonCached).status, Status::SUCCESS);
    m.close_handle(h);
    let cbs: Vec<(Mj, &'static str)> = callbacks(&m, "ProbeA")
        .into_iter()
        .filter_map(|(_, cb)| match cb {
            Callback::Pre { major, outcome, .. } | Callback::Post { major, outcome, .. }
                if matches!(major, Mj::Write | Mj::Close) =>
            {
                Some((major, outcome))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        cbs,
        [
            (Mj::Write, "FLT_PREOP_SYNCHRONIZE"),
            (Mj::Write, "FLT_POSTOP_FINISHED_PROCESSING"),
            (Mj::Close, "FLT_PREOP_SUCCESS_NO_CALLBACK"),
        ]
    );
    assert_eq!(&m.file_contents(c, "data.bin").unwrap()[..4], &[1u8; 4]);
}

#[test]
fn a_rules_value_longer_than_the_driver_reads_is_taken_for_absent() {
    // The probe's documented limit: the drivers read string values of at most 255 characters
    // (shared/kernel/src/registry.rs); a longer Rules value, or one that is not a REG_SZ, is
    // taken for an absent one and the probe loads with no rules (failing the load instead does
    // not fit probe-legacy.sys's size budget).
    let rules = |len: usize| {
        let mut r = "deny create *.locked;".to_owned();
        while r.len() < len {
            r.push(' ');
        }
        r
    };
    for (value, denied) in [
        (sz(&rules(255)), true),
        (sz(&rules(256)), false),
        (fsfilter_sim::RegValue::Dword(1), false),
    ] {
        let (mut m, c) = with_probe(&[("Rules", value.clone())]);
        let status = m.create(c, "a.locked", CreateOptions::create()).status;
        let expected = if denied { Status::ACCESS_DENIED } else { Status::SUCCESS };
        assert_eq!(status, expected, "{value:?}");
    }
}
