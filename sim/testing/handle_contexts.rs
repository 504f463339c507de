//! Handle contexts through a backend (docs/callback-model.md, rule 29): shared by
//! `legacy/tests/handle_contexts.rs` and `minifilter/tests/handle_contexts.rs`, which include
//! this file with `#[path]`, build [`Handler`] and [`HandleUndeclared`] with their backend's
//! `driver!`, and give an [`Install`] that installs a filter in their model. Every assertion
//! here holds in both models.
//!
//! [`Handler`] declares [`WORDS`] words per handle context and works on the files under `\ctx\`
//! of `C:`. Word [`USES`] counts the successful asks on the handle, word [`MARKER`] is set by the
//! ask that attached the context (a number never given twice). It asks with
//! `HandleGetOrCreate` in pre-create (refused: nothing is open), post-create, post-close
//! (refused: the handle is gone) and the pre and post of a query open (refused: no handle); with
//! `HandleGet` in pre-read and pre-close; on the files under `\ctx\late`, with
//! `HandleGetOrCreate` in pre-close only (refused: the handle's last operation).
//! `Filter::handle_context_freed` records
//! [`Seen::Freed`]. [`HandleUndeclared`] is the same filter without the declaration.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]
#![allow(clippy::indexing_slicing, reason = "tests: expected answers are listed")]

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use fsfilter::{
    ContextRequest, Filter, Instance, InstanceSetup, MajorFunction, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Services, Status,
};
use fsfilter_sim::nt::access;
use fsfilter_sim::{
    CreateOptions, FsKind, Handle, IoMode, IoRequest, Machine, MachineConfig, ServiceSpec,
    StopResult, VolumeId, VolumeSpec,
};

/// The service name of the filter with handle contexts.
pub(crate) const HANDLER: &str = "Handler";
/// The service name of the same filter without `Filter::HANDLE_CONTEXT_WORDS`.
pub(crate) const HANDLE_UNDECLARED: &str = "HandleUndeclared";

/// The words of [`Handler`]'s handle contexts.
pub(crate) const WORDS: usize = 2;
/// Word: the successful asks on the handle.
pub(crate) const USES: usize = 0;
/// Word: the marker the ask that attached the context gave it.
pub(crate) const MARKER: usize = 1;

/// Installs a filter (its name and entry in the spec) in one model, above the file systems.
pub(crate) type Install = fn(&mut Machine, ServiceSpec);

/// What a filter saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// An ask at `stage`: (created, words) or the refusal.
    Asked { stage: &'static str, answer: core::result::Result<(bool, Vec<u64>), Status> },
    /// `Filter::handle_context_freed` with these words.
    Freed(Vec<u64>),
}

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// What the filters saw since the last call.
pub(crate) fn seen() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn record(seen: Seen) {
    SEEN.with(|s| s.borrow_mut().push(seen));
}

const REGISTRATION: Registration = Registration::new()
    .operation(Operation::new(MajorFunction::Create).pre().post())
    .operation(Operation::new(MajorFunction::Read).pre())
    .operation(Operation::new(MajorFunction::Close).pre().post())
    .operation(Operation::new(MajorFunction::NetworkQueryOpen).pre().post())
    .validated();

fn words(w: &[AtomicU64]) -> Vec<u64> {
    w.iter().map(|w| w.load(Ordering::Relaxed)).collect()
}

/// Asks; on success counts a use and marks a context this ask attached; records the answer.
fn ask(next: &AtomicU64, services: &dyn Services, request: ContextRequest, stage: &'static str) {
    let answer = match services.stream_context(request) {
        Ok(c) => {
            if c.created() {
                if let Some(w) = c.word(MARKER) {
                    w.store(next.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                }
            }
            if let Some(w) = c.word(USES) {
                w.fetch_add(1, Ordering::Relaxed);
            }
            Ok((c.created(), words(c.words())))
        }
        Err(e) => Err(e.status()),
    };
    record(Seen::Asked { stage, answer });
}

macro_rules! handler {
    ($name:ident, $words:expr) => {
        /// A handle-context counter (see the module's documentation).
        pub(crate) struct $name {
            next: AtomicU64,
        }

        impl Filter for $name {
            const REGISTRATION: Registration = REGISTRATION;
            const HANDLE_CONTEXT_WORDS: usize = $words;
            type InstanceContext = ();
            type CompletionContext = ();

            fn load(_: &dyn ServiceParameters) -> Result<Self> {
                Ok($name { next: AtomicU64::new(1) })
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
                let name = name.to_ascii_lowercase();
                let query_open = h.major == MajorFunction::NetworkQueryOpen;
                if !name.starts_with(r"\ctx\") && !query_open {
                    return PreOutcome::NoPost;
                }
                let services = op.services();
                let (request, stage) = match h.major {
                    MajorFunction::Create => (ContextRequest::HandleGetOrCreate, "pre-create"),
                    MajorFunction::Read => (ContextRequest::HandleGet, "read"),
                    MajorFunction::Close if name.starts_with(r"\ctx\late") => {
                        (ContextRequest::HandleGetOrCreate, "close-create")
                    }
                    MajorFunction::Close => (ContextRequest::HandleGet, "close"),
                    _ => (ContextRequest::HandleGetOrCreate, "query-open"),
                };
                ask(&self.next, services, request, stage);
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
                let name = h.file_name.map(|n| n.to_string()).unwrap_or_default();
                let late = name.to_ascii_lowercase().starts_with(r"\ctx\late");
                let stage = match h.major {
                    MajorFunction::Create if late => return PostOutcome::Finished,
                    MajorFunction::Create => "post-create",
                    MajorFunction::Close => "post-close",
                    _ => "post-query-open",
                };
                ask(&self.next, op.services(), ContextRequest::HandleGetOrCreate, stage);
                PostOutcome::Finished
            }

            fn handle_context_freed(&self, w: &[AtomicU64]) {
                record(Seen::Freed(words(w)));
            }
        }
    };
}

handler!(Handler, WORDS);
handler!(HandleUndeclared, 0);

/// A machine with C: (`\ctx\a.txt`) and `filters` installed.
pub(crate) fn machine(
    install: Install,
    filters: &[(&str, fsfilter_sim::DriverEntry)],
) -> (Machine, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 29 });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file(r"ctx\a.txt", &[7; 4096])
            .file(r"ctx\late.txt", &[7; 16]),
    );
    for (name, entry) in filters {
        install(&mut m, ServiceSpec::new(name, *entry, "contexts"));
    }
    m.boot();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    seen();
    (m, c)
}

fn open(m: &mut Machine, volume: VolumeId, path: &str) -> Handle {
    let options = CreateOptions::open()
        .access(access::FILE_READ_DATA | access::FILE_WRITE_DATA | access::SYNCHRONIZE);
    let r = m.create(volume, path, options);
    assert_eq!(r.status, Status::SUCCESS, "open {path}: {:?}", m.findings());
    r.handle.expect("opened")
}

fn read(m: &mut Machine, h: Handle) {
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
}

fn close(m: &mut Machine, h: Handle) {
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
}

fn asked(stage: &'static str, answer: core::result::Result<(bool, Vec<u64>), Status>) -> Seen {
    Seen::Asked { stage, answer }
}

fn got(created: bool, uses: u64, marker: u64) -> core::result::Result<(bool, Vec<u64>), Status> {
    Ok((created, vec![uses, marker]))
}

const REFUSED: core::result::Result<(bool, Vec<u64>), Status> = Err(Status::NOT_SUPPORTED);

/// The asks in order, and the frees in order: when a handle's context is freed against its
/// close's callbacks differs between the models (the legacy backend frees it after the
/// pre-close, before the close goes down; the Filter Manager after the close).
fn asks_and_frees(seen: Vec<Seen>) -> (Vec<Seen>, Vec<Vec<u64>>) {
    let (frees, asks): (Vec<Seen>, Vec<Seen>) =
        seen.into_iter().partition(|s| matches!(s, Seen::Freed(_)));
    let frees = frees
        .into_iter()
        .filter_map(|s| match s {
            Seen::Freed(w) => Some(w),
            Seen::Asked { .. } => None,
        })
        .collect();
    (asks, frees)
}

/// A context per handle: two handles on one stream have two contexts (each `created` by its own
/// post-create); a later operation on a handle finds its own; each is freed once, at its own
/// handle's close, after the pre-close that found it (the handle's last operation: post-close
/// is refused), not at the other handle's close. Pre-create is refused. (Where the free falls
/// against the post-close differs: `asks_and_frees`.)
pub(crate) fn check_per_handle(install: Install, handler: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(HANDLER, handler)]);
    let a = r"\ctx\a.txt";
    let h1 = open(&mut m, c, a);
    let h2 = open(&mut m, c, a);
    read(&mut m, h2);
    read(&mut m, h1);
    assert_eq!(
        seen(),
        [
            asked("pre-create", REFUSED),
            asked("post-create", got(true, 1, 1)),
            asked("pre-create", REFUSED),
            asked("post-create", got(true, 1, 2)),
            asked("read", got(false, 2, 2)),
            asked("read", got(false, 2, 1)),
        ]
    );
    close(&mut m, h1);
    assert_eq!(
        asks_and_frees(seen()),
        (vec![asked("close", got(false, 3, 1)), asked("post-close", REFUSED)], vec![vec![3, 1]])
    );
    read(&mut m, h2);
    close(&mut m, h2);
    assert_eq!(
        asks_and_frees(seen()),
        (
            vec![
                asked("read", got(false, 3, 2)),
                asked("close", got(false, 4, 2)),
                asked("post-close", REFUSED),
            ],
            vec![vec![4, 2]]
        )
    );
    finish(m, &[HANDLER]);
}

/// Refused where rule 29 says: a query open has no handle (pre and post); a filter that does
/// not declare handle contexts gets `STATUS_NOT_SUPPORTED` everywhere and frees nothing.
pub(crate) fn check_refusals(
    install: Install,
    handler: fsfilter_sim::DriverEntry,
    undeclared: fsfilter_sim::DriverEntry,
) {
    let (mut m, c) = machine(install, &[(HANDLER, handler)]);
    let q = m.io(IoRequest::QueryAttributes { volume: c, path: r"ctx\a.txt" });
    assert_eq!((q.status, q.fast_io), (Status::SUCCESS, true));
    assert_eq!(seen(), [asked("query-open", REFUSED), asked("post-query-open", REFUSED)]);
    finish(m, &[HANDLER]);

    let (mut m, c) = machine(install, &[(HANDLE_UNDECLARED, undeclared)]);
    let h = open(&mut m, c, r"\ctx\a.txt");
    read(&mut m, h);
    close(&mut m, h);
    let s = seen();
    assert!(!s.is_empty());
    assert!(s.iter().all(|e| matches!(e, Seen::Asked { answer: Err(Status::NOT_SUPPORTED), .. })));
    finish(m, &[HANDLE_UNDECLARED]);
}

/// Pre-close is a handle's last operation: a context is found there but not created (rule 29),
/// in both models, so none is attached that nothing would find (and that a legacy pre-close
/// that pends would leave on the file object); nothing is freed, no finding.
pub(crate) fn check_no_create_in_pre_close(install: Install, handler: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(HANDLER, handler)]);
    let h = open(&mut m, c, r"\ctx\late.txt");
    read(&mut m, h);
    close(&mut m, h);
    assert_eq!(
        seen(),
        [
            asked("pre-create", REFUSED),
            asked("read", Err(Status::NOT_FOUND)),
            asked("close-create", REFUSED),
            asked("post-close", REFUSED),
        ]
    );
    finish(m, &[HANDLER]);
}

/// Contexts still attached when the filter unloads are freed, once, before the unload returns,
/// with nothing leaked (no finding: `POOL_LEAKED_AT_UNLOAD`, a context left on a file object);
/// the handles then close without the filter and nothing more is freed.
pub(crate) fn check_unload(install: Install, handler: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(HANDLER, handler)]);
    let h1 = open(&mut m, c, r"\ctx\a.txt");
    let h2 = open(&mut m, c, r"\ctx\a.txt");
    seen();
    assert_eq!(m.stop(HANDLER), StopResult::Unloaded);
    let mut freed: Vec<Seen> = seen();
    freed.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(freed, [Seen::Freed(vec![1, 1]), Seen::Freed(vec![1, 2])]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    read(&mut m, h1);
    close(&mut m, h1);
    close(&mut m, h2);
    assert_eq!(seen(), []);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A volume dismounted under an open handle (the instance's teardown): its context is freed
/// once, by the time the handle is closed, with nothing left on the file object; the filter's
/// later unload frees nothing more.
pub(crate) fn check_dismount(install: Install, handler: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(HANDLER, handler)]);
    let h = open(&mut m, c, r"\ctx\a.txt");
    seen();
    assert_eq!(m.dismount(c), Status::SUCCESS);
    let _ = m.close_handle(h);
    m.settle();
    // The uses differ: the legacy instance's teardown completes at that close, after its
    // pre-close counted a use; the Filter Manager's at the dismount.
    let s = seen();
    let freed: Vec<&Seen> = s.iter().filter(|s| matches!(s, Seen::Freed(_))).collect();
    assert!(matches!(freed.as_slice(), [Seen::Freed(w)] if w[MARKER] == 1), "{s:#?}");
    finish(m, &[HANDLER]);
    assert_eq!(seen(), []);
}

fn finish(mut m: Machine, services: &[&str]) {
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    for s in services {
        assert_eq!(m.stop(s), StopResult::Unloaded, "{s}");
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

macro_rules! shared_handle_tests {
    ($install:expr, $handler:expr, $undeclared:expr $(,)?) => {
        #[test]
        fn each_handle_has_its_own_context_freed_at_its_own_close_in_both_models() {
            $crate::handle_contexts::check_per_handle($install, $handler);
        }

        #[test]
        fn handle_contexts_are_refused_where_rule_29_says_in_both_models() {
            $crate::handle_contexts::check_refusals($install, $handler, $undeclared);
        }

        #[test]
        fn a_handle_context_is_not_created_in_pre_close_in_both_models() {
            $crate::handle_contexts::check_no_create_in_pre_close($install, $handler);
        }

        #[test]
        fn a_dismount_frees_the_handle_context_once_in_both_models() {
            $crate::handle_contexts::check_dismount($install, $handler);
        }

        #[test]
        fn handle_contexts_still_attached_are_freed_before_the_unload_returns_in_both_models() {
            $crate::handle_contexts::check_unload($install, $handler);
        }
    };
}
pub(crate) use shared_handle_tests;
