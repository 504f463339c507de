//! Reparse through a backend (docs/callback-model.md, rule 27): shared by
//! `legacy/tests/reparse.rs` and `minifilter/tests/reparse.rs`, which include this file with
//! `#[path]`, build [`Redirector`], [`Undeclared`] and [`Watcher`] with their backend's
//! `driver!`, and give an `install` that puts a filter at a [`Layer`] of the stack (the legacy one
//! by load order, the minifilter one by altitude). Every assertion here holds in both models.
//! The gate's and the scanner's tests include it too, for [`Redirector`] under them.
//!
//! [`Redirector`] declares `Filter::REPARSES` and redirects as Microsoft's SimRep sample does: in
//! its pre-create, a name under `\redir\` on any volume becomes `\Device\HarddiskVolume2\` and the
//! rest (`D:`), one under `\dos\` becomes `\??\D:\` and the rest (`Services::replace_file_name`),
//! and the create completes with `IoStatus::reparse()`. It also tries `replace_file_name` where
//! rule 27 refuses it, and records every try. [`Undeclared`] is the same filter without the
//! declaration. [`Watcher`] records what a post-create above them sees.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    Filter, Instance, InstanceSetup, IoStatus, MajorFunction, NameKind, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Services, Status,
};
use fsfilter_sim::{CreateOptions, FsKind, IoMode, Machine, MachineConfig, ServiceSpec, VolumeId};
use fsfilter_sim::{StopResult, VolumeSpec};

/// The service name of the filter that redirects.
pub(crate) const REDIRECTOR: &str = "Redirector";
/// The service name of the same filter without `Filter::REPARSES`.
pub(crate) const UNDECLARED: &str = "Undeclared";
/// The service name of the filter above that watches post-creates.
pub(crate) const WATCHER: &str = "Watcher";

/// `C:\redir\b.txt`: what an open that was not redirected reads.
pub(crate) const ON_C: &[u8] = b"the file on C:";
/// `D:\b.txt`: what a redirected open reads.
pub(crate) const ON_D: &[u8] = b"the file on D:, redirected";
/// `D:`'s device name (the second disk volume of the machine).
pub(crate) const D_DEVICE: &str = r"\Device\HarddiskVolume2";

/// Where a filter goes in its model's stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layer {
    /// Under the other filters (loaded first; the lower altitude).
    Lower,
    /// Above them (loaded later; the higher altitude).
    Upper,
}

/// Installs a filter at a layer in one model.
pub(crate) type Install = fn(&mut Machine, ServiceSpec, Layer);

/// One try of `replace_file_name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tried {
    /// Which filter tried.
    pub filter: &'static str,
    /// `pre-create`, `post-create`, `pre-read` or `volume-open`.
    pub stage: &'static str,
    /// The file object's name when it tried.
    pub name: String,
    /// What `replace_file_name` answered.
    pub result: core::result::Result<(), Status>,
}

/// One post-create the watcher saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The create's final status and information.
    pub status: Status,
    pub information: usize,
    /// `op.opened()`.
    pub opened: bool,
    /// The file object's name (`FileObject->FileName`), as the header shows it.
    pub file: String,
    /// `file_name(NameKind::Opened)`: the name, or the refusal.
    pub name: core::result::Result<String, Status>,
    /// `cancel_file_open(STATUS_ACCESS_DENIED)` when the create did not open the file.
    pub cancel: Option<core::result::Result<(), Status>>,
}

thread_local! {
    static TRIED: RefCell<Vec<Tried>> = const { RefCell::new(Vec::new()) };
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// The redirectors' tries since the last call.
pub(crate) fn tried() -> Vec<Tried> {
    TRIED.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

/// The watcher's post-creates since the last call.
pub(crate) fn seen() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// The name a redirector gives `name`, the file object's: `\redir\x` to `D:`'s device path,
/// `\dos\x` to `\??\D:\x`; for the names that try a refusal, the name tried.
fn target(name: &str) -> Option<Vec<u16>> {
    let lower = name.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix(r"\redir\") {
        return Some(units(&format!(r"{D_DEVICE}\{}", name.get(name.len() - rest.len()..)?)));
    }
    if let Some(rest) = lower.strip_prefix(r"\dos\") {
        return Some(units(&format!(r"\??\D:\{}", name.get(name.len() - rest.len()..)?)));
    }
    match lower.as_str() {
        // A name of no unit, and one of 32,768 units (its length in bytes is no USHORT).
        r"\empty.txt" => Some(Vec::new()),
        r"\long.txt" => Some(vec![u16::from(b'x'); 32_768]),
        _ => None,
    }
}

/// The create's path on its volume, from its opened name without the volume's device name (as
/// SimRep finds it with `FltGetFileNameInformation`, a relative open's included); `name`, the file
/// object's, when there is none.
fn opened_path(services: &dyn Services, name: &str) -> String {
    let Ok(info) = services.file_name(NameKind::Opened) else { return name.to_owned() };
    let (full, volume) = (info.name().to_string(), info.volume().to_string());
    full.get(volume.len()..).map_or_else(|| name.to_owned(), str::to_owned)
}

fn try_replace(
    filter: &'static str,
    stage: &'static str,
    name: String,
    services: &dyn Services,
    new: &[u16],
) -> bool {
    let result = services.replace_file_name(new).map_err(|e| e.status());
    let ok = result.is_ok();
    TRIED.with(|t| t.borrow_mut().push(Tried { filter, stage, name, result }));
    ok
}

/// Creates with pre and post callbacks, reads with a pre callback.
const REDIRECTING: Registration = Registration::new()
    .operation(Operation::new(MajorFunction::Create).pre().post())
    .operation(Operation::new(MajorFunction::Read).pre())
    .validated();

macro_rules! redirector {
    ($name:ident, $service:expr, $reparses:expr) => {
        pub(crate) struct $name;

        impl Filter for $name {
            const REGISTRATION: Registration = REDIRECTING;
            const REPARSES: bool = $reparses;
            const NAME_QUERIES: bool = true;
            type InstanceContext = ();
            type CompletionContext = ();

            fn load(_: &dyn ServiceParameters) -> Result<Self> {
                Ok($name)
            }

            fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
                Ok(())
            }

            fn pre_operation(
                &self,
                _: &Instance<'_, ()>,
                op: &mut PreOperation<'_, ()>,
            ) -> PreOutcome<()> {
                let h = op.header();
                let name = h.file_name.map(|n| n.to_string()).unwrap_or_default();
                let services = op.services();
                match h.major {
                    MajorFunction::Create if h.volume_open => {
                        // No name to replace: refused, and the volume opens.
                        let new = units(&format!(r"{D_DEVICE}\b.txt"));
                        try_replace($service, "volume-open", name, services, &new);
                        PreOutcome::NoPost
                    }
                    MajorFunction::Create => match target(&opened_path(services, &name)) {
                        Some(new) if try_replace($service, "pre-create", name, services, &new) => {
                            // Nothing below sees the create; the I/O manager opens the new name.
                            PreOutcome::Complete(IoStatus::reparse())
                        }
                        _ => PreOutcome::WithPost(()),
                    },
                    MajorFunction::Read
                        if !h.is_paging() && name.eq_ignore_ascii_case(r"\read.txt") =>
                    {
                        let new = units(&format!(r"{D_DEVICE}\b.txt"));
                        try_replace($service, "pre-read", name, services, &new);
                        PreOutcome::NoPost
                    }
                    _ => PreOutcome::NoPost,
                }
            }

            fn post_operation(
                &self,
                _: &Instance<'_, ()>,
                op: &mut PostOperation<'_>,
                _: (),
                _: PostFlags,
            ) -> PostOutcome<()> {
                let name = op.file_name().map(|n| n.to_string()).unwrap_or_default();
                if name.eq_ignore_ascii_case(r"\post.txt") {
                    let new = units(&format!(r"{D_DEVICE}\b.txt"));
                    try_replace($service, "post-create", name, op.services(), &new);
                }
                PostOutcome::Finished
            }
        }
    };
}

redirector!(Redirector, REDIRECTOR, true);
redirector!(Undeclared, UNDECLARED, false);

/// Post-creates only.
const WATCHING: Registration =
    Registration::new().operation(Operation::new(MajorFunction::Create).post()).validated();

/// Records each post-create: its result, `opened()`, its name and, when nothing was opened,
/// whether `cancel_file_open` is refused.
pub(crate) struct Watcher;

impl Filter for Watcher {
    const REGISTRATION: Registration = WATCHING;
    const NAME_QUERIES: bool = true;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Watcher)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        // Post only: the backends call no pre callback.
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        flags: PostFlags,
    ) -> PostOutcome<()> {
        if op.header().volume_open || flags.contains(PostFlags::DRAINING) {
            return PostOutcome::Finished;
        }
        let result = op.result();
        let services = op.services();
        let name = services
            .file_name(NameKind::Opened)
            .map(|n| n.name().to_string())
            .map_err(|e| e.status());
        let opened = op.opened();
        let cancel = (!opened)
            .then(|| services.cancel_file_open(Status::ACCESS_DENIED).map_err(|e| e.status()));
        let file = op.file_name().map(|n| n.to_string()).unwrap_or_default();
        let seen = Seen {
            status: result.status,
            information: result.information,
            opened,
            file,
            name,
            cancel,
        };
        SEEN.with(|s| s.borrow_mut().push(seen));
        PostOutcome::Finished
    }
}

/// A booted machine with `C:` (`redir\b.txt`, `dos\b.txt`, `read.txt`, `post.txt`,
/// `empty.txt`, `long.txt`) and `D:` (`b.txt`), and `filters` installed, each at its layer.
pub(crate) fn machine(
    install: Install,
    filters: &[(&str, fsfilter_sim::DriverEntry, Layer)],
) -> (Machine, VolumeId, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 27 });
    let mut c_spec = VolumeSpec::new("C:", FsKind::Ntfs).file(r"redir\b.txt", ON_C);
    for name in [r"dos\b.txt", "read.txt", "post.txt", "empty.txt", "long.txt"] {
        c_spec = c_spec.file(name, ON_C);
    }
    let c = m.add_volume(c_spec);
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs).file("b.txt", ON_D));
    for (name, entry, layer) in filters {
        install(&mut m, ServiceSpec::new(name, *entry, "legacy"), *layer);
    }
    m.boot();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    tried();
    seen();
    (m, c, d)
}

/// Opens `path` on `volume`, reads what it holds and closes it: the contents, or the failure.
pub(crate) fn contents(
    m: &mut Machine,
    volume: VolumeId,
    path: &str,
) -> core::result::Result<Vec<u8>, Status> {
    let h = m.open(volume, path, CreateOptions::open())?;
    let r = m.read(h, Some(0), 64, IoMode::Cached);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    if r.status.is_success() { Ok(r.data) } else { Err(r.status) }
}

/// Stops `services` (top first) with no finding.
pub(crate) fn finish(mut m: Machine, services: &[&str]) {
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    for s in services {
        assert_eq!(m.stop(s), StopResult::Unloaded, "{s}");
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

fn pre_create(filter: &'static str, name: &str) -> Tried {
    Tried { filter, stage: "pre-create", name: name.to_owned(), result: Ok(()) }
}

/// A filter that declares `REPARSES` redirects `C:\redir\b.txt` to `D:`'s device path and
/// `C:\dos\b.txt` to `\??\D:\b.txt`: each open reads `D:\b.txt`, the create reparsed once onto
/// `D:`'s stack, where the same filter sees the new create with the rest of the name (and lets it
/// through); so does `b.txt` opened relative to a handle of `C:\redir` (its opened name is the
/// whole path). An open outside the prefixes is not touched.
pub(crate) fn check_redirect(install: Install, redirector: fsfilter_sim::DriverEntry) {
    let (mut m, c, d) = machine(install, &[(REDIRECTOR, redirector, Layer::Lower)]);
    let dir = m.open(c, "redir", CreateOptions::directory()).expect("the directory opens");
    assert_eq!(tried(), []);
    let r = m.create_relative(dir, "b.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "{:?}", m.findings());
    assert_eq!(r.reparsed.map(|r| (r.count, r.volume)), Some((1, d)));
    let h = r.handle.expect("the redirected open");
    let read = m.read(h, Some(0), 64, IoMode::Cached);
    assert_eq!((read.status, &read.data[..]), (Status::SUCCESS, ON_D));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(m.close_handle(dir), Status::SUCCESS);
    assert_eq!(tried(), [pre_create(REDIRECTOR, "b.txt")]);
    for path in [r"redir\b.txt", r"dos\b.txt"] {
        let r = m.create(c, path, CreateOptions::open());
        assert_eq!(r.status, Status::SUCCESS, "{path}: {:?}", m.findings());
        assert_eq!(r.reparsed.map(|r| (r.count, r.volume)), Some((1, d)), "{path}");
        let h = r.handle.expect("the redirected open");
        let read = m.read(h, Some(0), 64, IoMode::Cached);
        assert_eq!((read.status, &read.data[..]), (Status::SUCCESS, ON_D), "{path}");
        assert_eq!(m.close_handle(h), Status::SUCCESS);
        assert_eq!(tried(), [pre_create(REDIRECTOR, &format!(r"\{path}"))], "{path}");
    }
    assert_eq!(contents(&mut m, c, "read.txt").as_deref(), Ok(ON_C));
    assert_eq!(contents(&mut m, d, "b.txt").as_deref(), Ok(ON_D));
    finish(m, &[REDIRECTOR]);
}

/// `replace_file_name` is refused where rule 27 says, and nothing changes: without
/// `Filter::REPARSES` (`STATUS_NOT_SUPPORTED`: the open goes on to `C:`'s own file), in a volume
/// open, with an empty name or one of 32,768 units, in a post-create and in a pre-read
/// (`STATUS_INVALID_PARAMETER`).
pub(crate) fn check_refusals(
    install: Install,
    redirector: fsfilter_sim::DriverEntry,
    undeclared: fsfilter_sim::DriverEntry,
) {
    let (mut m, c, _) = machine(install, &[(UNDECLARED, undeclared, Layer::Lower)]);
    let r = m.create(c, r"redir\b.txt", CreateOptions::open());
    assert_eq!((r.status, r.reparsed), (Status::SUCCESS, None));
    m.close_handle(r.handle.expect("opens"));
    let refused = |filter, stage, name: &str, status| Tried {
        filter,
        stage,
        name: name.to_owned(),
        result: Err(status),
    };
    assert_eq!(
        tried(),
        [refused(UNDECLARED, "pre-create", r"\redir\b.txt", Status::NOT_SUPPORTED)]
    );
    assert_eq!(contents(&mut m, c, r"redir\b.txt").as_deref(), Ok(ON_C));
    tried();
    finish(m, &[UNDECLARED]);

    let (mut m, c, _) = machine(install, &[(REDIRECTOR, redirector, Layer::Lower)]);
    let volume = m.open(c, "", CreateOptions::open()).expect("the volume opens");
    m.close_handle(volume);
    for path in ["empty.txt", "long.txt", "post.txt", "read.txt"] {
        assert_eq!(contents(&mut m, c, path).as_deref(), Ok(ON_C), "{path}");
    }
    let invalid = Status::INVALID_PARAMETER;
    assert_eq!(
        tried(),
        [
            refused(REDIRECTOR, "volume-open", "", invalid),
            refused(REDIRECTOR, "pre-create", r"\empty.txt", invalid),
            refused(REDIRECTOR, "pre-create", r"\long.txt", invalid),
            refused(REDIRECTOR, "post-create", r"\post.txt", invalid),
            refused(REDIRECTOR, "pre-read", r"\read.txt", invalid),
        ]
    );
    finish(m, &[REDIRECTOR]);
}

/// A post-create above the redirecting filter sees the create end `STATUS_REPARSE` with
/// `IO_REPARSE` (0), `opened()` false, the file object's new name, and no name to ask
/// (`STATUS_FLT_INVALID_NAME_REQUEST`) and no open to cancel (`STATUS_INVALID_PARAMETER`: no
/// `FltCancelFileOpen` / `IoCancelFileOpen` reaches the kernel); then the reparsed create on
/// `D:` opens the file, which it names, and the open reads `D:\b.txt`.
pub(crate) fn check_post_above(
    install: Install,
    redirector: fsfilter_sim::DriverEntry,
    watcher: fsfilter_sim::DriverEntry,
) {
    let (mut m, c, _) = machine(
        install,
        &[(REDIRECTOR, redirector, Layer::Lower), (WATCHER, watcher, Layer::Upper)],
    );
    assert_eq!(contents(&mut m, c, r"redir\b.txt").as_deref(), Ok(ON_D), "{:?}", m.findings());
    let new = format!(r"{D_DEVICE}\b.txt");
    assert_eq!(
        seen(),
        [
            Seen {
                status: Status::REPARSE,
                information: fsfilter::reparse::IO_REPARSE,
                opened: false,
                file: new.clone(),
                name: Err(Status::FLT_INVALID_NAME_REQUEST),
                cancel: Some(Err(Status::INVALID_PARAMETER)),
            },
            Seen {
                status: Status::SUCCESS,
                information: fsfilter::create::FILE_OPENED,
                opened: true,
                file: r"\b.txt".to_owned(),
                name: Ok(new),
                cancel: None,
            },
        ]
    );
    finish(m, &[WATCHER, REDIRECTOR]);
}
