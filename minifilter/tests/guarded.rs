//! A minifilter that scans data gets the backend's pre callback for every write and
//! set-information, registered or not and without skip flags, so that the backend sees the
//! FsRtl fallback's conflicts (docs/callback-model.md, rule 16). The filter's own registration
//! of those operations must still apply exactly: its skip flags, its pre and post callbacks, none
//! when it registered none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::cell::RefCell;

use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, OperationFlags, OperationKind,
    PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result,
    ServiceParameters, Status,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, Machine, MachineConfig, ServiceSpec, VolumeSpec,
};

thread_local! {
    static SEEN: RefCell<Vec<(&'static str, MajorFunction, OperationKind, bool)>> =
        const { RefCell::new(Vec::new()) };
}

/// Scans data; registers cached writes only (pre and post), and no set-information.
struct CachedWrites;

impl Filter for CachedWrites {
    const REGISTRATION: Registration = Registration::new()
        .operation(
            Operation::new(MajorFunction::Write)
                .pre()
                .post()
                .skip(OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO)
                .skip(OperationFlags::SKIP_PAGING_IO),
        )
        .data_scan(true)
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(CachedWrites)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let h = op.header();
        SEEN.with(|s| s.borrow_mut().push(("pre", h.major, h.kind, h.is_noncached())));
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let h = op.header();
        SEEN.with(|s| s.borrow_mut().push(("post", h.major, h.kind, h.is_noncached())));
        PostOutcome::Finished
    }
}

mod driver {
    fsfilter_minifilter::driver!(super::CachedWrites);
}

#[test]
fn a_scanning_filter_sees_only_what_it_registered() {
    let mut m = Machine::new(MachineConfig { seed: 23 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("f.bin", &[1; 8192]));
    common::install_minifilter(&mut m, ServiceSpec::new("CachedWrites", driver::ENTRY, "mini"));
    m.boot();
    let h = m.open(c, "f.bin", CreateOptions::open()).unwrap();
    SEEN.with(|s| s.borrow_mut().clear());
    // Skipped by the filter's SKIP_NON_CACHED_NON_PAGING_IO: no callback.
    assert_eq!(m.write(h, Some(0), &[2; 512], IoMode::NonCached).status, Status::SUCCESS);
    // Not registered: no callback.
    assert!(m.set_information(h, 20, &8192u64.to_le_bytes()).status.is_success());
    assert_eq!(SEEN.with(|s| s.borrow().len()), 0, "{:?}", SEEN.with(|s| s.borrow().clone()));
    // Cached: pre and post (an IRP: the file object's caching is not initiated yet, so no fast
    // I/O is tried; the cache manager's paging write later is skipped by SKIP_PAGING_IO).
    assert_eq!(m.write(h, Some(0), &[3; 512], IoMode::Cached).status, Status::SUCCESS);
    m.close_handle(h);
    m.settle();
    let seen = SEEN.with(|s| s.borrow().clone());
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|&(_, major, _, noncached)| major == MajorFunction::Write && !noncached),
        "{seen:?}"
    );
    let pres = seen.iter().filter(|s| s.0 == "pre").count();
    let posts = seen.iter().filter(|s| s.0 == "post").count();
    assert_eq!(pres, posts, "every pre that asked got its post: {seen:?}");
    assert!(common::findings(&m).is_empty(), "{:?}", common::findings(&m));
}
