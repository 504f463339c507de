//! Services called where the model forbids them, through a backend: shared by
//! `legacy/tests/misuse.rs` and `minifilter/tests/misuse.rs` (each includes this file with
//! `#[path]` and builds [`Misuser`] with its backend's `driver!`).
//!
//! `Services::cancel_file_open` only in the post callback of a successful create (not one that
//! ended with a warning status, which the legacy backend let through before a fix of December 6), at
//! `PASSIVE_LEVEL`, with a failing status (docs/callback-model.md, rule 17);
//! `Services::create_scan_section` only with data scanning, at `PASSIVE_LEVEL` (rule 16);
//! `Services::wait` only at `PASSIVE_LEVEL` (rule 18). A misuse answers its documented status and
//! changes nothing: the requester sees the operation's own result, and the simulator's verifier
//! has nothing to report (no `IoCancelFileOpen` or `FltCancelFileOpen` outside a post-create, no
//! wait above `APC_LEVEL`).
//!
//! Added after the first version: [`Scanning`], a filter that scans data, asks for a data-scan
//! section where no file is open (pre-create; the post of a create that failed, ended with a
//! warning, or ended `STATUS_REPARSE`): `STATUS_INVALID_PARAMETER` and no finding (on Windows
//! the memory manager would dereference the missing `SectionObjectPointer`), while the post of
//! the opens that succeed (the reparsed create's included) gets its section ([`check_scanning`]).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    Error, Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Services, Status,
};
use fsfilter_sim::fs::reparse::{FILE_OPEN_REPARSE_POINT, FSCTL_SET_REPARSE_POINT};
use fsfilter_sim::nt::{access, create_options as co};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, IoRequest, Machine, MachineConfig, ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Misuser";

/// (where, service, what it answered).
type Seen = Vec<(String, &'static str, core::result::Result<(), Error>)>;

thread_local! {
    static SEEN: RefCell<Seen> = const { RefCell::new(Vec::new()) };
}

/// Tries every service that `where_` may not use, and records the answers.
fn try_all(where_: String, services: &dyn Services) {
    let cancel = services.cancel_file_open(Status::ACCESS_DENIED);
    let success = services.cancel_file_open(Status::SUCCESS);
    let scan = services.create_scan_section().map(drop);
    let wait = services.wait(1);
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        s.push((where_.clone(), "cancel_file_open", cancel));
        s.push((where_.clone(), "cancel_file_open(success)", success));
        s.push((where_.clone(), "create_scan_section", scan));
        s.push((where_, "wait", wait));
    });
}

/// " DISPATCH" above `APC_LEVEL`.
fn level(services: &dyn Services) -> &'static str {
    if services.irql() > Irql::APC { " DISPATCH" } else { "" }
}

/// A filter without data scanning that calls services where it should not.
pub(crate) struct Misuser;

impl Filter for Misuser {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre().post())
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Misuser)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        try_all(format!("pre {:?}{}", op.major(), level(op.services())), op.services());
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let what =
            format!("post {:?} {:?}{}", op.major(), op.result().status, level(op.services()));
        if op.major() == MajorFunction::Create && op.result().status.is_success() {
            // The one place cancel_file_open is allowed; only the success status is refused.
            let success = op.services().cancel_file_open(Status::SUCCESS);
            let scan = op.services().create_scan_section().map(drop);
            SEEN.with(|s| {
                let mut s = s.borrow_mut();
                s.push((what.clone(), "cancel_file_open(success)", success));
                s.push((what, "create_scan_section", scan));
            });
            return PostOutcome::Finished;
        }
        try_all(what, op.services());
        PostOutcome::Finished
    }
}

/// Runs an open that succeeds, one that fails, one that a driver below ends with a warning
/// status (no success: the I/O manager fails it, and the filter may not cancel it), a cached read
/// (post at `PASSIVE_LEVEL`) and a non-cached read completed from a DPC (post at
/// `DISPATCH_LEVEL`) through the filter installed by `install` above the probe installed by
/// `pender`, and checks every answer.
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    pender: fn(&mut Machine, &str),
    entry: fsfilter_sim::DriverEntry,
) {
    SEEN.with(|s| s.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 17 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[9u8; 4096]));
    pender(&mut m, "complete:0x80000005 create *warn*");
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    SEEN.with(|s| s.borrow_mut().clear());
    assert_eq!(m.open(c, "missing.bin", CreateOptions::open()), Err(Status::OBJECT_NAME_NOT_FOUND));
    assert_eq!(m.open(c, "warn.bin", CreateOptions::open()), Err(Status::BUFFER_OVERFLOW));
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("nothing cancelled the open");
    let r = m.read(h, Some(0), 512, IoMode::Cached);
    assert_eq!((r.status, r.data.first()), (Status::SUCCESS, Some(&9)));
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let r = m.read(h, Some(0), 512, IoMode::NonCached);
    assert_eq!((r.status, r.data.first()), (Status::SUCCESS, Some(&9)));
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let seen = SEEN.with(|s| s.borrow().clone());
    let invalid = Err(Error::INVALID_PARAMETER);
    let state = Err(Error::INVALID_DEVICE_STATE);
    let mut at_dispatch = 0;
    for (where_, service, answer) in &seen {
        let dispatch = where_.ends_with("DISPATCH");
        at_dispatch += usize::from(dispatch);
        let expected = match *service {
            // Refused at DISPATCH_LEVEL for the IRQL, anywhere else for the place.
            "cancel_file_open" | "cancel_file_open(success)" if dispatch => &state,
            "cancel_file_open" | "cancel_file_open(success)" => &invalid,
            // This filter does not scan data: refused wherever it asks.
            "create_scan_section" => &invalid,
            "wait" if dispatch => &state,
            "wait" => &Ok(()),
            other => panic!("{other}"),
        };
        assert_eq!(answer, expected, "{service} in {where_}: {seen:#?}");
    }
    assert!(at_dispatch >= 4, "a post callback ran at DISPATCH_LEVEL: {seen:#?}");
    let places: Vec<&str> = seen.iter().map(|(w, ..)| w.as_str()).collect();
    for place in [
        "pre IRP_MJ_CREATE",
        "post IRP_MJ_CREATE STATUS_OBJECT_NAME_NOT_FOUND",
        "post IRP_MJ_CREATE STATUS_BUFFER_OVERFLOW",
    ] {
        assert!(places.iter().any(|p| p.starts_with(place)), "{place}: {seen:#?}");
    }
}

/// The service name of [`Scanning`].
pub(crate) const SCANNING: &str = "Scanning";

/// A filter that scans data and asks for a section in every pre-create and post-create of a file
/// whose name ends `.bin`, recording where and the answer (`Ok` when it got one, which it drops
/// at once). For a name containing `cancel` it cancels the open first (`STATUS_ACCESS_DENIED`).
pub(crate) struct Scanning;

impl Filter for Scanning {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre().post())
        .data_scan(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Scanning)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let name = op.header().file_name.map(|n| n.to_string()).unwrap_or_default();
        if !name.ends_with(".bin") || op.header().volume_open {
            return PreOutcome::NoPost;
        }
        let scan = op.services().create_scan_section().map(drop);
        SEEN.with(|s| s.borrow_mut().push((format!("pre {name}"), "create_scan_section", scan)));
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let name = op.header().file_name.map(|n| n.to_string()).unwrap_or_default();
        let mut what = format!("post {name} {}", op.result().status);
        if name.contains("cancel") && op.result().status.is_success() {
            // The open is cancelled first: the file object is closed, its status a failure.
            let cancel = op.services().cancel_file_open(Status::ACCESS_DENIED);
            SEEN.with(|s| s.borrow_mut().push((what.clone(), "cancel_file_open", cancel)));
            what = format!("post {name} cancelled");
        }
        let scan = op.services().create_scan_section().map(drop);
        SEEN.with(|s| s.borrow_mut().push((what, "create_scan_section", scan)));
        PostOutcome::Finished
    }
}

/// Opens through [`Scanning`] installed by `install` (above the probe `pender` installs, which
/// ends creates of `*warn*` with `STATUS_BUFFER_OVERFLOW`): a missing file, a warning, a link
/// (`link.bin` to `target.bin`, whose create ends `STATUS_REPARSE` and is reparsed), an open the
/// filter cancels in its post (the file object closed, its `FsContext` left as the file system
/// left it, the status a failure), and a plain file. Where no file is open the section is refused
/// `STATUS_INVALID_PARAMETER`; the posts of
/// the opens that succeed get it; the simulator's verifier has nothing to report (no
/// `DATA_SCAN_SECTION_ON_UNOPENED_FILE`).
pub(crate) fn check_scanning(
    install: fn(&mut Machine, ServiceSpec),
    pender: fn(&mut Machine, &str),
    entry: fsfilter_sim::DriverEntry,
) {
    SEEN.with(|s| s.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 16 });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("data.bin", &[9u8; 4096])
            .file("link.bin", &[1u8; 16])
            .file("target.bin", &[2u8; 4096])
            .file("cancel.bin", &[3u8; 4096]),
    );
    pender(&mut m, "complete:0x80000005 create *warn*");
    install(&mut m, ServiceSpec::new(SCANNING, entry, "legacy"));
    m.boot();
    // The link, set through a handle to the link itself (its opens are scanned too: cleared
    // below).
    let options = CreateOptions::default()
        .access(access::GENERIC_READ | access::GENERIC_WRITE)
        .options(co::NON_DIRECTORY_FILE | FILE_OPEN_REPARSE_POINT);
    let link = m.create(c, "link.bin", options).handle.expect("the link opens");
    let buffer =
        fsfilter_sim::fs::reparse::symlink_buffer(r"\??\C:\target.bin", r"C:\target.bin", false);
    let set = IoRequest::Fsctl {
        handle: link,
        code: FSCTL_SET_REPARSE_POINT,
        input: &buffer,
        output_length: 0,
    };
    assert_eq!(m.io(set).status, Status::SUCCESS);
    m.close_handle(link);
    m.settle();
    SEEN.with(|s| s.borrow_mut().clear());

    assert_eq!(m.open(c, "missing.bin", CreateOptions::open()), Err(Status::OBJECT_NAME_NOT_FOUND));
    assert_eq!(m.open(c, "warn.bin", CreateOptions::open()), Err(Status::BUFFER_OVERFLOW));
    let l = m.open(c, "link.bin", CreateOptions::open()).expect("the link is followed");
    assert_eq!(m.open(c, "cancel.bin", CreateOptions::open()), Err(Status::ACCESS_DENIED));
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("opens");
    m.close_handle(l);
    m.close_handle(h);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let seen = SEEN.with(|s| s.borrow().clone());
    let refused = Err(Error::INVALID_PARAMETER);
    let answers: Vec<(&str, &core::result::Result<(), Error>)> =
        seen.iter().map(|(w, _, a)| (w.as_str(), a)).collect();
    assert_eq!(
        answers,
        [
            (r"pre \missing.bin", &refused),
            (r"post \missing.bin STATUS_OBJECT_NAME_NOT_FOUND", &refused),
            (r"pre \warn.bin", &refused),
            (r"post \warn.bin STATUS_BUFFER_OVERFLOW", &refused),
            (r"pre \link.bin", &refused),
            (r"post \link.bin STATUS_REPARSE", &refused),
            (r"pre \target.bin", &refused),
            (r"post \target.bin STATUS_SUCCESS", &Ok(())),
            (r"pre \cancel.bin", &refused),
            (r"post \cancel.bin STATUS_SUCCESS", &Ok(())),
            (r"post \cancel.bin cancelled", &refused),
            (r"pre \data.bin", &refused),
            (r"post \data.bin STATUS_SUCCESS", &Ok(())),
        ],
        "{seen:#?}"
    );
}
