//! Stream contexts through a backend (docs/callback-model.md, rule 28): shared by
//! `legacy/tests/contexts.rs` and `minifilter/tests/contexts.rs`, which include this file with
//! `#[path]`, build [`Counter`] and [`Undeclared`] with their backend's `driver!`, and give an
//! [`Install`] that installs a filter in their model. Every assertion here holds in both models.
//!
//! [`Counter`] declares [`WORDS`] words per stream context and works on the files under `\ctx\`
//! of `C:`: it asks for its stream context in every callback it has on them and records the answer
//! ([`Seen::Asked`]). Word [`USES`] counts the successful asks, word [`MARKER`] is set by the ask
//! that attached the context (a number the filter never gives twice), word [`WRITES`] counts the
//! writes. Which request it makes and what else it does:
//!
//! - pre-create (`GetOrCreate`: refused, nothing is open yet) and post-create (`GetOrCreate`,
//!   except for names containing `lazy`); a volume open (stage `volume-open`);
//! - pre-read (`Get`; `GetOrCreate` for names containing `lazy`; for names containing `race` it
//!   then waits [`RACE_WAIT_MS`] holding the context, and counts a use again, stage
//!   `read after wait`; none for names containing `late`); post-read only when it runs above
//!   `APC_LEVEL` (stage `read DISPATCH`) and, for names containing `late`, when it drains
//!   (`GetOrCreate`, stage `read draining`: a minifilter's instance teardown);
//! - pre-write (`GetOrCreate`, and for names containing `delete` it then deletes the context,
//!   [`Seen::Deleted`]);
//! - pre-query-information, pre-cleanup and pre-close (`Get`), post-close (`GetOrCreate`).
//!
//! Added after the first version (additive): instance setup asks too (`GetOrCreate`, stage
//! `instance-setup`: outside any operation); the pre and post of a query open
//! (`IRP_MJ_NETWORK_QUERY_OPEN`, fast I/O) ask both ways (`Get`, then `GetOrCreate`; stages
//! `query-open` and `post-query-open`); pre-close deletes the context it got for names containing
//! `forget` ([`Seen::Deleted`]); the pre and post of an `IRP_MJ_PNP`, on any file object, ask
//! both ways too (`Get`, then `GetOrCreate`; stages `pnp` and `post-pnp`).
//!
//! The stages of reads and writes name fast I/O (`read fast`) and paging I/O (`read paging`).
//! `Filter::stream_context_freed` records [`Seen::Freed`]. [`Undeclared`] is the same filter
//! without the declaration (`STREAM_CONTEXT_WORDS` 0).
//!
//! Stable: the legacy backend's tests include this file too. Changes are additive only (new
//! checks, new names); what exists keeps its meaning.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]
#![allow(
    clippy::indexing_slicing,
    clippy::cloned_ref_to_slice_refs,
    reason = "tests: the words of a context are indexed, expected answers are listed"
)]

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use fsfilter::{
    ContextRequest, Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation,
    OperationHeader, OperationKind, PostFlags, PostOperation, PostOutcome, PreOperation,
    PreOutcome, Registration, Result, ServiceParameters, Services, Status,
};
use fsfilter_sim::fs::reparse::{FILE_OPEN_REPARSE_POINT, FSCTL_SET_REPARSE_POINT};
use fsfilter_sim::nt::{access, create_options as co};
use fsfilter_sim::{
    CreateOptions, FaultKind, FsKind, Handle, IoMode, IoRequest, Machine, MachineConfig, RawBuffer,
    RawIrp, RawOp, ServiceSpec, StopResult, VolumeId, VolumeSpec,
};

/// The service name of the filter with stream contexts.
pub(crate) const COUNTER: &str = "Counter";
/// The service name of the same filter without `Filter::STREAM_CONTEXT_WORDS`.
pub(crate) const UNDECLARED: &str = "Undeclared";

/// The words of [`Counter`]'s stream contexts.
pub(crate) const WORDS: usize = 3;
/// Word: the successful asks on the stream.
pub(crate) const USES: usize = 0;
/// Word: the marker the ask that attached the context gave it (never 0, never twice).
pub(crate) const MARKER: usize = 1;
/// Word: the writes.
pub(crate) const WRITES: usize = 2;

/// How long a read of a `race` file holds its context (virtual milliseconds).
pub(crate) const RACE_WAIT_MS: u32 = 20;

/// Installs a filter (its name and entry in the spec) in one model, above the file systems.
pub(crate) type Install = fn(&mut Machine, ServiceSpec);

/// A context as an ask found or attached it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Got {
    /// `StreamContext::created`.
    pub created: bool,
    /// The words after the ask counted its use.
    pub words: Vec<u64>,
}

/// What a filter saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// An ask: where, on which file, and the context or the refusal.
    Asked {
        filter: &'static str,
        stage: String,
        file: String,
        answer: core::result::Result<Got, Status>,
    },
    /// The filter deleted the context it had just got (with these words).
    Deleted { file: String, words: Vec<u64> },
    /// `Filter::stream_context_freed` with these words.
    Freed { filter: &'static str, words: Vec<u64> },
}

impl Seen {
    /// The stage of an ask.
    pub fn stage(&self) -> Option<&str> {
        match self {
            Seen::Asked { stage, .. } => Some(stage),
            _ => None,
        }
    }

    /// The answer of an ask.
    pub fn answer(&self) -> Option<&core::result::Result<Got, Status>> {
        match self {
            Seen::Asked { answer, .. } => Some(answer),
            _ => None,
        }
    }
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

/// Creates, reads (with a post), writes, queries, cleanups and closes (with a post).
const COUNTING: Registration = Registration::new()
    .operation(Operation::new(MajorFunction::Create).pre().post())
    .operation(Operation::new(MajorFunction::Read).pre().post())
    .operation(Operation::new(MajorFunction::Write).pre())
    .operation(Operation::new(MajorFunction::QueryInformation).pre())
    .operation(Operation::new(MajorFunction::Cleanup).pre())
    .operation(Operation::new(MajorFunction::Close).pre().post())
    .operation(Operation::new(MajorFunction::NetworkQueryOpen).pre().post())
    .operation(Operation::new(MajorFunction::Pnp).pre().post())
    .validated();

/// The file object's name, lower case.
fn name_of(h: &OperationHeader<'_>) -> String {
    h.file_name.map(|n| n.to_string()).unwrap_or_default().to_ascii_lowercase()
}

/// True for a file the filters work on.
fn tracked(name: &str) -> bool {
    name.starts_with(r"\ctx\")
}

/// The stage of a read or write: `what`, then `fast` or `paging` for those kinds.
fn transfer_stage(what: &str, h: &OperationHeader<'_>) -> String {
    if h.kind == OperationKind::FastIo {
        format!("{what} fast")
    } else if h.is_paging() {
        format!("{what} paging")
    } else {
        what.to_owned()
    }
}

/// Asks for the context; on success counts a use (and a write), sets the marker of a context this
/// ask attached, and records the words. The guard is returned for the caller to hold or delete.
fn ask(
    filter: &'static str,
    next: &AtomicU64,
    services: &dyn Services,
    request: ContextRequest,
    stage: String,
    file: &str,
    write: bool,
) -> Option<fsfilter::StreamContext> {
    match services.stream_context(request) {
        Ok(context) => {
            if context.created() {
                if let Some(w) = context.word(MARKER) {
                    w.store(next.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                }
            }
            if let Some(w) = context.word(USES) {
                w.fetch_add(1, Ordering::Relaxed);
            }
            if write {
                if let Some(w) = context.word(WRITES) {
                    w.fetch_add(1, Ordering::Relaxed);
                }
            }
            let got = Got { created: context.created(), words: words(context.words()) };
            record(Seen::Asked { filter, stage, file: file.to_owned(), answer: Ok(got) });
            Some(context)
        }
        Err(e) => {
            let answer = Err(e.status());
            record(Seen::Asked { filter, stage, file: file.to_owned(), answer });
            None
        }
    }
}

fn words(w: &[AtomicU64]) -> Vec<u64> {
    w.iter().map(|w| w.load(Ordering::Relaxed)).collect()
}

macro_rules! counter {
    ($name:ident, $service:expr, $words:expr) => {
        /// A stream-context counter (see the module's documentation).
        pub(crate) struct $name {
            /// The next marker.
            next: AtomicU64,
        }

        impl Filter for $name {
            const REGISTRATION: Registration = COUNTING;
            const STREAM_CONTEXT_WORDS: usize = $words;
            type InstanceContext = ();
            /// The file's name, from the pre callback.
            type CompletionContext = String;

            fn load(_: &dyn ServiceParameters) -> Result<Self> {
                Ok($name { next: AtomicU64::new(1) })
            }

            fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<()> {
                let request = ContextRequest::GetOrCreate;
                let stage = "instance-setup".to_owned();
                drop(ask($service, &self.next, setup.services, request, stage, "", false));
                Ok(())
            }

            fn pre_operation(
                &self,
                _: &Instance<'_, ()>,
                op: &mut PreOperation<'_, String>,
            ) -> PreOutcome<String> {
                let h = op.header();
                let name = name_of(h);
                let services = op.services();
                let get = |request, stage: String, write| {
                    ask($service, &self.next, services, request, stage, &name, write)
                };
                if h.major == MajorFunction::Create && h.volume_open {
                    drop(get(ContextRequest::GetOrCreate, "pre-create".into(), false));
                    return PreOutcome::WithPost(String::new());
                }
                if h.major == MajorFunction::Pnp {
                    drop(get(ContextRequest::Get, "pnp".into(), false));
                    drop(get(ContextRequest::GetOrCreate, "pnp".into(), false));
                    return PreOutcome::WithPost(name.clone());
                }
                if !tracked(&name) {
                    return PreOutcome::NoPost;
                }
                match h.major {
                    MajorFunction::Create => {
                        drop(get(ContextRequest::GetOrCreate, "pre-create".into(), false));
                        PreOutcome::WithPost(name.clone())
                    }
                    MajorFunction::Read => {
                        let stage = transfer_stage("read", h);
                        if name.contains("late") {
                            return PreOutcome::WithPost(name.clone());
                        }
                        let request = if name.contains("lazy") {
                            ContextRequest::GetOrCreate
                        } else {
                            ContextRequest::Get
                        };
                        let context = get(request, stage, false);
                        if let (true, Some(context)) = (name.contains("race"), &context) {
                            let _ = services.wait(RACE_WAIT_MS);
                            if let Some(w) = context.word(USES) {
                                w.fetch_add(1, Ordering::Relaxed);
                            }
                            let got = Got { created: false, words: words(context.words()) };
                            record(Seen::Asked {
                                filter: $service,
                                stage: "read after wait".into(),
                                file: name.clone(),
                                answer: Ok(got),
                            });
                        }
                        drop(context);
                        PreOutcome::WithPost(name.clone())
                    }
                    MajorFunction::Write => {
                        let stage = transfer_stage("write", h);
                        let context = get(ContextRequest::GetOrCreate, stage, true);
                        if let (true, Some(context)) = (name.contains("delete"), context) {
                            let words = words(context.words());
                            record(Seen::Deleted { file: name.clone(), words });
                            context.delete();
                        }
                        PreOutcome::NoPost
                    }
                    MajorFunction::QueryInformation => {
                        drop(get(ContextRequest::Get, "query".into(), false));
                        PreOutcome::NoPost
                    }
                    MajorFunction::Cleanup => {
                        drop(get(ContextRequest::Get, "cleanup".into(), false));
                        PreOutcome::NoPost
                    }
                    MajorFunction::Close => {
                        let context = get(ContextRequest::Get, "close".into(), false);
                        if let (true, Some(context)) = (name.contains("forget"), context) {
                            let words = words(context.words());
                            record(Seen::Deleted { file: name.clone(), words });
                            context.delete();
                        }
                        PreOutcome::WithPost(name.clone())
                    }
                    MajorFunction::NetworkQueryOpen => {
                        drop(get(ContextRequest::Get, "query-open".into(), false));
                        drop(get(ContextRequest::GetOrCreate, "query-open".into(), false));
                        PreOutcome::WithPost(name.clone())
                    }
                    _ => PreOutcome::NoPost,
                }
            }

            fn post_operation(
                &self,
                _: &Instance<'_, ()>,
                op: &mut PostOperation<'_>,
                name: String,
                flags: PostFlags,
            ) -> PostOutcome<String> {
                let services = op.services();
                let get = |request, stage: &str| {
                    let stage = stage.to_owned();
                    drop(ask($service, &self.next, services, request, stage, &name, false));
                };
                if flags.contains(PostFlags::DRAINING) {
                    if op.major() == MajorFunction::Read && name.contains("late") {
                        get(ContextRequest::GetOrCreate, "read draining");
                    }
                    return PostOutcome::Finished;
                }
                match op.major() {
                    MajorFunction::Create if op.header().volume_open => {
                        get(ContextRequest::GetOrCreate, "volume-open");
                    }
                    MajorFunction::Create if !name.contains("lazy") => {
                        get(ContextRequest::GetOrCreate, "post-create");
                    }
                    MajorFunction::Read if services.irql() > Irql::APC => {
                        get(ContextRequest::GetOrCreate, "read DISPATCH");
                    }
                    MajorFunction::Close => get(ContextRequest::GetOrCreate, "post-close"),
                    MajorFunction::NetworkQueryOpen => {
                        get(ContextRequest::Get, "post-query-open");
                        get(ContextRequest::GetOrCreate, "post-query-open");
                    }
                    MajorFunction::Pnp => {
                        get(ContextRequest::Get, "post-pnp");
                        get(ContextRequest::GetOrCreate, "post-pnp");
                    }
                    _ => {}
                }
                PostOutcome::Finished
            }

            fn stream_context_freed(&self, words: &[AtomicU64]) {
                record(Seen::Freed { filter: $service, words: self::words(words) });
            }
        }
    };
}

counter!(Counter, COUNTER, WORDS);
counter!(Undeclared, UNDECLARED, 0);

/// `C:` (NTFS) with `\ctx\` files (`a.txt`, `b.txt`, `delete.txt`, `lazy.txt`,
/// `lazy-race.txt`, `lazy-late.txt`, `link.txt`, `target.txt`, `forget.txt`, 4 KiB each) and
/// `\other.txt`.
pub(crate) fn machine(
    install: Install,
    filters: &[(&str, fsfilter_sim::DriverEntry)],
) -> (Machine, VolumeId) {
    machine_with(install, filters, |_| {})
}

/// [`machine`], with what `before_boot` installs too (a lower filter, say).
pub(crate) fn machine_with(
    install: Install,
    filters: &[(&str, fsfilter_sim::DriverEntry)],
    before_boot: impl FnOnce(&mut Machine),
) -> (Machine, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 28 });
    let mut spec = VolumeSpec::new("C:", FsKind::Ntfs).file("other.txt", &[1; 4096]);
    for name in ["a", "b", "delete", "lazy", "lazy-race", "lazy-late", "link", "target", "forget"] {
        spec = spec.file(&format!(r"ctx\{name}.txt"), &[7; 4096]);
    }
    let c = m.add_volume(spec);
    for (name, entry) in filters {
        install(&mut m, ServiceSpec::new(name, *entry, "contexts"));
    }
    before_boot(&mut m);
    m.boot();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    seen();
    (m, c)
}

/// Opens `path` on `volume` (read and write data).
pub(crate) fn open(m: &mut Machine, volume: VolumeId, path: &str) -> Handle {
    let options = CreateOptions::open()
        .access(access::FILE_READ_DATA | access::FILE_WRITE_DATA | access::SYNCHRONIZE);
    let r = m.create(volume, path, options);
    assert_eq!(r.status, Status::SUCCESS, "open {path}: {:?}", m.findings());
    r.handle.expect("opened")
}

/// A non-cached read of the first sector.
pub(crate) fn read(m: &mut Machine, h: Handle) {
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
}

/// A non-cached write of the first sector.
pub(crate) fn write(m: &mut Machine, h: Handle) {
    assert_eq!(m.write(h, Some(0), &[9; 512], IoMode::NonCached).status, Status::SUCCESS);
}

/// `FileStandardInformation`.
pub(crate) fn query(m: &mut Machine, h: Handle) {
    assert_eq!(m.query_information(h, 5, 24).status, Status::SUCCESS);
}

/// Closes `h`, and lets the system finish what the close started (the file system's teardown
/// of the stream).
pub(crate) fn close(m: &mut Machine, h: Handle) {
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    m.settle();
}

/// Stops `services` (top first) with no finding (no context leaked, none freed twice).
pub(crate) fn finish(mut m: Machine, services: &[&str]) {
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    for s in services {
        assert_eq!(m.stop(s), StopResult::Unloaded, "{s}");
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The answers of the asks at `stage`.
pub(crate) fn answers(seen: &[Seen], stage: &str) -> Vec<core::result::Result<Got, Status>> {
    seen.iter().filter(|s| s.stage() == Some(stage)).filter_map(|s| s.answer().cloned()).collect()
}

/// The words of every freed context, in order.
pub(crate) fn freed(seen: &[Seen]) -> Vec<Vec<u64>> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Freed { words, .. } => Some(words.clone()),
            _ => None,
        })
        .collect()
}

/// The markers of the contexts the asks in `seen` attached.
pub(crate) fn created(seen: &[Seen]) -> Vec<u64> {
    seen.iter()
        .filter_map(|s| match s.answer() {
            Some(Ok(Got { created: true, words })) => words.get(MARKER).copied(),
            _ => None,
        })
        .collect()
}

fn got(created: bool, uses: u64, marker: u64, writes: u64) -> core::result::Result<Got, Status> {
    Ok(Got { created, words: vec![uses, marker, writes] })
}

fn asked(stage: &str, file: &str, answer: core::result::Result<Got, Status>) -> Seen {
    Seen::Asked { filter: COUNTER, stage: stage.to_owned(), file: file.to_owned(), answer }
}

/// One context per stream, found from every handle and every kind of operation: the first
/// post-create attaches it (zeroed, `created`), a second handle's post-create finds it, a read
/// through that handle (`Get`), a write through the first, a query, the cleanups and closes see
/// the same words; the first handle's close frees nothing, the last one's does, once, with the
/// final words (the file system tore the stream down). A second file has a context of its own.
pub(crate) fn check_one_context_per_stream(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let a = r"\ctx\a.txt";
    let h1 = open(&mut m, c, a);
    let h2 = open(&mut m, c, a);
    read(&mut m, h2);
    write(&mut m, h1);
    let refused = Err(Status::NOT_SUPPORTED);
    assert_eq!(
        seen(),
        [
            asked("pre-create", a, refused.clone()),
            asked("post-create", a, got(true, 1, 1, 0)),
            asked("pre-create", a, refused.clone()),
            asked("post-create", a, got(false, 2, 1, 0)),
            asked("read", a, got(false, 3, 1, 0)),
            asked("write", a, got(false, 4, 1, 1)),
        ]
    );
    query(&mut m, h2);
    let queries = answers(&seen(), "query");
    assert!(!queries.is_empty());
    assert!(queries.iter().all(|q| q.as_ref().is_ok_and(|g| !g.created && g.words[MARKER] == 1)));

    // Another stream: its own context.
    let b = r"\ctx\b.txt";
    let hb = open(&mut m, c, b);
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 2, 0)]);
    close(&mut m, hb);
    let s = seen();
    assert_eq!(answers(&s, "cleanup"), [got(false, 2, 2, 0)]);
    assert_eq!(answers(&s, "close"), [got(false, 3, 2, 0)]);
    assert_eq!(answers(&s, "post-close"), [refused.clone()]);
    assert_eq!(freed(&s), [vec![3, 2, 0]], "b.txt's context, at its last close: {s:#?}");

    // The first close of a.txt frees nothing: the stream is still open.
    close(&mut m, h1);
    let s = seen();
    assert!(freed(&s).is_empty(), "{s:#?}");
    let uses = match answers(&s, "close").as_slice() {
        [Ok(g)] if !g.created && g.words[MARKER] == 1 => g.words[USES],
        other => panic!("the close of the first handle: {other:?}"),
    };
    close(&mut m, h2);
    let s = seen();
    assert_eq!(answers(&s, "cleanup"), [got(false, uses + 1, 1, 1)]);
    assert_eq!(answers(&s, "close"), [got(false, uses + 2, 1, 1)]);
    assert_eq!(freed(&s), [vec![uses + 2, 1, 1]], "a.txt's context, at its last close: {s:#?}");
    finish(m, &[COUNTER]);
}

/// Every kind of operation may ask: an IRP read, a paging read, a cached read (an IRP that
/// initiates caching, then fast I/O), each finds the context the open attached.
pub(crate) fn check_every_kind_finds_it(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let a = r"\ctx\a.txt";
    let h = open(&mut m, c, a);
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 1, 0)]);
    read(&mut m, h);
    assert_eq!(m.read(h, Some(0), 512, IoMode::Paging).status, Status::SUCCESS);
    for _ in 0..2 {
        assert_eq!(m.read(h, Some(0), 512, IoMode::Cached).status, Status::SUCCESS);
    }
    let s = seen();
    let mut stages: Vec<&str> = s.iter().filter_map(Seen::stage).collect();
    stages.dedup();
    for kind in ["read", "read paging", "read fast"] {
        assert!(stages.contains(&kind), "{kind}: {s:#?}");
        let found = answers(&s, kind);
        assert!(
            found.iter().all(|g| g.as_ref().is_ok_and(|g| !g.created && g.words[MARKER] == 1)),
            "{kind}: {s:#?}"
        );
    }
    assert!(created(&s).is_empty(), "{s:#?}");
    close(&mut m, h);
    let s = seen();
    finish(m, &[COUNTER]);
    // Freed once: at the last close, or when the cache manager let the stream go, or at the
    // unload at the latest.
    let mut all = s;
    all.extend(seen());
    assert_eq!(freed(&all).len(), 1, "{all:#?}");
    assert_eq!(freed(&all)[0][MARKER], 1);
}

/// A deleted context is gone from the stream: a `Get` finds nothing (`STATUS_NOT_FOUND`), the
/// next `GetOrCreate` attaches a new one; the deleted one is freed once its last reference goes
/// (at once here), with its final words, and the new one at the last close.
pub(crate) fn check_delete(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let f = r"\ctx\delete.txt";
    let h = open(&mut m, c, f);
    write(&mut m, h);
    let s = seen();
    assert_eq!(answers(&s, "write"), [got(false, 2, 1, 1)]);
    let deleted = Seen::Deleted { file: f.to_owned(), words: vec![2, 1, 1] };
    let freed_words = Seen::Freed { filter: COUNTER, words: vec![2, 1, 1] };
    let tail = s.iter().skip_while(|e| **e != deleted).cloned().collect::<Vec<_>>();
    assert_eq!(tail, [deleted, freed_words], "deleted, then freed: {s:#?}");
    read(&mut m, h);
    assert_eq!(answers(&seen(), "read"), [Err(Status::NOT_FOUND)]);
    query(&mut m, h);
    let queries = answers(&seen(), "query");
    assert!(!queries.is_empty() && queries.iter().all(|q| *q == Err(Status::NOT_FOUND)));
    // The next write attaches a new context, and deletes it again.
    write(&mut m, h);
    let s = seen();
    assert_eq!(answers(&s, "write"), [got(true, 1, 2, 1)]);
    assert_eq!(freed(&s), [vec![1, 2, 1]]);
    // A new open attaches another one, freed at the last close.
    let h2 = open(&mut m, c, f);
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 3, 0)]);
    close(&mut m, h2);
    close(&mut m, h);
    let s = seen();
    assert_eq!(answers(&s, "close"), [got(false, 3, 3, 0), got(false, 5, 3, 0)]);
    assert_eq!(freed(&s), [vec![5, 3, 0]]);
    finish(m, &[COUNTER]);
}

/// Two threads on one stream, each through its own handle: the first read attaches the context
/// and holds it while it waits; the second read, meanwhile, finds the same one (not `created`);
/// both count their uses in the same words. Freed once, after both closes.
pub(crate) fn check_two_threads(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let f = r"\ctx\lazy-race.txt";
    let h1 = open(&mut m, c, f);
    let h2 = open(&mut m, c, f);
    assert_eq!(answers(&seen(), "post-create"), []);
    m.schedule(5, move |m| read(m, h2));
    read(&mut m, h1);
    m.settle();
    let s = seen();
    // The first read at 0 ms, the second at 5 ms while the first waits; the first resumes at
    // 20 ms, the second at 25 ms.
    assert_eq!(
        answers(&s, "read"),
        [got(true, 1, 1, 0), got(false, 2, 1, 0)],
        "the second thread finds the context the first attached: {s:#?}"
    );
    assert_eq!(answers(&s, "read after wait"), [got(false, 3, 1, 0), got(false, 4, 1, 0)]);
    close(&mut m, h1);
    assert!(freed(&seen()).is_empty());
    close(&mut m, h2);
    let s = seen();
    assert_eq!(freed(&s), [vec![8, 1, 0]], "{s:#?}");
    finish(m, &[COUNTER]);
}

/// The contexts still attached when the filter unloads are freed before its unload returns,
/// each once, with its final words. The handles opened before work on afterwards (the filter is
/// gone; nothing is freed twice).
pub(crate) fn check_unload(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let ha = open(&mut m, c, r"\ctx\a.txt");
    let hb = open(&mut m, c, r"\ctx\b.txt");
    write(&mut m, hb);
    assert_eq!(created(&seen()), [1, 2]);
    assert_eq!(m.stop(COUNTER), StopResult::Unloaded);
    let s = seen();
    let mut f = freed(&s);
    f.sort_unstable();
    assert_eq!(f, [vec![1, 1, 0], vec![2, 2, 1]], "{s:#?}");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // Without the filter, the handles still work and close; nothing more is freed.
    read(&mut m, ha);
    close(&mut m, ha);
    close(&mut m, hb);
    assert_eq!(seen(), []);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A volume dismounted under an open handle: its context is freed once, by the time the handle
/// is closed (the instance's teardown, or the file system's teardown of the stream), and the
/// filter's later unload frees nothing more.
pub(crate) fn check_dismount(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let h = open(&mut m, c, r"\ctx\a.txt");
    write(&mut m, h);
    assert_eq!(created(&seen()), [1]);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    let _ = m.close_handle(h);
    m.settle();
    let s = seen();
    let f = freed(&s);
    assert!(matches!(f.as_slice(), [w] if w[MARKER] == 1 && w[WRITES] == 1), "{s:#?}");
    finish(m, &[COUNTER]);
    assert!(freed(&seen()).is_empty());
}

/// Where rule 28 refuses: pre-create and a volume open (`STATUS_NOT_SUPPORTED`), the post of a
/// create that failed or ended `STATUS_REPARSE` (the reparsed create's post attaches), post-close,
/// above `APC_LEVEL` (`STATUS_INVALID_DEVICE_STATE`), a `Get` where there is none
/// (`STATUS_NOT_FOUND`), a filter that declared no words (`STATUS_NOT_SUPPORTED` everywhere, and
/// nothing freed).
pub(crate) fn check_refusals(
    install: Install,
    counter: fsfilter_sim::DriverEntry,
    undeclared: fsfilter_sim::DriverEntry,
) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let unsupported = Err(Status::NOT_SUPPORTED);
    // A link: \ctx\link.txt -> \ctx\target.txt (set through a handle to the link itself).
    let options = CreateOptions::default()
        .access(access::GENERIC_READ | access::GENERIC_WRITE)
        .options(co::NON_DIRECTORY_FILE | FILE_OPEN_REPARSE_POINT);
    let link = m.create(c, r"ctx\link.txt", options).handle.expect("the link opens");
    let buffer = fsfilter_sim::fs::reparse::symlink_buffer(
        r"\??\C:\ctx\target.txt",
        r"C:\ctx\target.txt",
        false,
    );
    let set = IoRequest::Fsctl {
        handle: link,
        code: FSCTL_SET_REPARSE_POINT,
        input: &buffer,
        output_length: 0,
    };
    assert_eq!(m.io(set).status, Status::SUCCESS);
    close(&mut m, link);
    seen();

    // A create that fails.
    let missing = m.create(c, r"ctx\missing.txt", CreateOptions::open());
    assert_eq!(missing.status, Status::OBJECT_NAME_NOT_FOUND);
    let f = r"\ctx\missing.txt";
    assert_eq!(
        seen(),
        [asked("pre-create", f, unsupported.clone()), asked("post-create", f, unsupported.clone())]
    );
    // A create that ends STATUS_REPARSE: refused in its post; the reparsed create's post
    // attaches.
    let h = open(&mut m, c, r"ctx\link.txt");
    let s = seen();
    assert_eq!(answers(&s, "pre-create"), [unsupported.clone(), unsupported.clone()]);
    // (Marker 1 went to the link's own open, above.)
    assert_eq!(answers(&s, "post-create"), [unsupported.clone(), got(true, 1, 2, 0)], "{s:#?}");
    // A volume open.
    let volume = m.open(c, "", CreateOptions::open()).expect("the volume opens");
    let s = seen();
    assert_eq!(answers(&s, "pre-create"), [unsupported.clone()]);
    assert_eq!(answers(&s, "volume-open"), [unsupported.clone()]);
    close(&mut m, volume);
    seen();
    // A post above APC_LEVEL.
    m.kernel(|k| k.fs.complete_at_dpc = true);
    read(&mut m, h);
    m.settle();
    m.kernel(|k| k.fs.complete_at_dpc = false);
    let s = seen();
    assert_eq!(answers(&s, "read"), [got(false, 2, 2, 0)]);
    assert_eq!(answers(&s, "read DISPATCH"), [Err(Status::INVALID_DEVICE_STATE)], "{s:#?}");
    // A Get where there is no context (the open did not ask for one).
    let lazy = open(&mut m, c, r"ctx\lazy-late.txt");
    query(&mut m, lazy);
    let queries = answers(&seen(), "query");
    assert!(!queries.is_empty() && queries.iter().all(|q| *q == Err(Status::NOT_FOUND)));
    close(&mut m, lazy);
    seen();
    // Post-close.
    close(&mut m, h);
    let s = seen();
    assert_eq!(answers(&s, "close"), [got(false, 4, 2, 0)]);
    assert_eq!(answers(&s, "post-close"), [unsupported.clone()]);
    assert_eq!(freed(&s), [vec![4, 2, 0]]);
    finish(m, &[COUNTER]);

    // A filter that declared no words: refused everywhere, nothing freed.
    let (mut m, c) = machine(install, &[(UNDECLARED, undeclared)]);
    let h = open(&mut m, c, r"ctx\a.txt");
    read(&mut m, h);
    write(&mut m, h);
    close(&mut m, h);
    let s = seen();
    for stage in ["pre-create", "post-create", "read", "write", "cleanup", "close", "post-close"] {
        assert_eq!(answers(&s, stage), [unsupported.clone()], "{stage}: {s:#?}");
    }
    assert!(freed(&s).is_empty());
    finish(m, &[UNDECLARED]);
}

/// A context that cannot be allocated (the next call of `kind` the filter makes fails: the
/// backend's allocation of the context) is refused `STATUS_INSUFFICIENT_RESOURCES`, and nothing
/// is attached: the next ask attaches one.
pub(crate) fn check_allocation_failure(
    install: Install,
    counter: fsfilter_sim::DriverEntry,
    kind: FaultKind,
) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let h = open(&mut m, c, r"ctx\lazy.txt");
    seen();
    m.kernel(|k| {
        let next = k.faults.service_count(COUNTER, kind) + 1;
        k.faults.plan_for_service(COUNTER, kind, next);
    });
    write(&mut m, h);
    assert!(m.kernel(|k| !k.faults.injected.is_empty()), "the allocation was not reached");
    assert_eq!(answers(&seen(), "write"), [Err(Status::INSUFFICIENT_RESOURCES)]);
    read(&mut m, h);
    assert_eq!(answers(&seen(), "read"), [got(true, 1, 1, 0)]);
    close(&mut m, h);
    assert_eq!(freed(&seen()), [vec![3, 1, 0]]);
    finish(m, &[COUNTER]);
}

/// Outside an operation: the services of an instance setup belong to no operation and have no
/// stream (`STATUS_NOT_SUPPORTED`). (Added after the first version.)
pub(crate) fn check_outside_an_operation(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, _) = machine_with(install, &[(COUNTER, counter)], |m| {
        m.add_volume(
            VolumeSpec::new("D:", FsKind::Fat)
                .mount(fsfilter_sim::MountWhen::Step)
                .file("x.txt", b"x"),
        );
    });
    let d = m.volume("D:").expect("D:");
    assert_eq!(m.mount(d), Status::SUCCESS);
    let h = open(&mut m, d, "x.txt");
    close(&mut m, h);
    let s = seen();
    assert_eq!(answers(&s, "instance-setup"), [Err(Status::NOT_SUPPORTED)], "{s:#?}");
    assert!(freed(&s).is_empty());
    finish(m, &[COUNTER]);
}

/// A query open (`IRP_MJ_NETWORK_QUERY_OPEN`: an attribute query by name, fast I/O) has no
/// stream: its file object is the I/O manager's, which the file system never opens (no
/// `FsContext`), so rule 28 refuses both requests in its pre and its post
/// (`STATUS_NOT_SUPPORTED`), even while another handle holds the stream's context; the query
/// attaches nothing (the next open attaches marker 1), leaks nothing and is no finding. A
/// missing name, declined below (the post sees `STATUS_FLT_DISALLOW_FAST_IO`), is refused the
/// same way. (Added after the first version.)
pub(crate) fn check_query_open(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let a = r"\ctx\a.txt";
    let unsupported = Err(Status::NOT_SUPPORTED);
    let refused = |s: &[Seen], stage| {
        let got = answers(s, stage);
        assert_eq!(got, [unsupported.clone(), unsupported.clone()], "{stage}: {s:#?}");
    };
    let query = |m: &mut Machine, path| {
        let q = m.io(IoRequest::QueryAttributes { volume: c, path });
        (q.status, q.fast_io)
    };
    // No handle open.
    assert_eq!(query(&mut m, r"ctx\a.txt"), (Status::SUCCESS, true));
    let s = seen();
    refused(&s, "query-open");
    refused(&s, "post-query-open");
    assert!(freed(&s).is_empty() && created(&s).is_empty(), "{s:#?}");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // A handle holds the stream's context: the query open's own file object still has none.
    let h = open(&mut m, c, a);
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 1, 0)]);
    assert_eq!(query(&mut m, r"ctx\a.txt"), (Status::SUCCESS, true));
    let s = seen();
    refused(&s, "query-open");
    refused(&s, "post-query-open");
    assert!(freed(&s).is_empty() && created(&s).is_empty(), "{s:#?}");
    // A missing name: declined below, then opened with an IRP, which fails.
    let missing = query(&mut m, r"ctx\missing.txt");
    assert_eq!(missing, (Status::OBJECT_NAME_NOT_FOUND, false));
    let s = seen();
    refused(&s, "query-open");
    refused(&s, "post-query-open");
    assert_eq!(answers(&s, "post-create"), [unsupported.clone()], "{s:#?}");
    assert!(freed(&s).is_empty() && created(&s).is_empty(), "{s:#?}");
    // The handle's context is the only one, freed at its close.
    close(&mut m, h);
    let s = seen();
    assert_eq!(answers(&s, "close"), [got(false, 3, 1, 0)]);
    assert_eq!(freed(&s), [vec![3, 1, 0]], "{s:#?}");
    finish(m, &[COUNTER]);
}

/// An `IRP_MJ_PNP` (`IRP_MN_QUERY_DEVICE_RELATIONS` / `TargetDeviceRelation`, as a kernel
/// component sends it with the file object of a handle it opened, to find the device behind it)
/// goes with that file object. On a volume handle (a volume open: no stream) rule 28 refuses
/// both requests in its pre and its post (`STATUS_NOT_SUPPORTED`), even while a file's handle
/// holds its stream's context; nothing is attached, leaked or a finding. On a file's handle it
/// is an operation on the open stream like any other: both find the stream's context (the
/// `GetOrCreate` does not attach a second one). Nobody below handles the request: it completes
/// with the status its sender set (`STATUS_NOT_SUPPORTED`). (Added after the first version.)
pub(crate) fn check_pnp(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let unsupported = Err(Status::NOT_SUPPORTED);
    let pnp = |m: &mut Machine, handle| {
        let raw = RawIrp {
            handle,
            op: RawOp::Pnp { relation: TARGET_DEVICE_RELATION },
            minor: IRP_MN_QUERY_DEVICE_RELATIONS,
            irp_flags: 0,
            sl_flags: 0,
            user_mode: false,
            buffer: RawBuffer::Null,
            data: &[],
        };
        assert_eq!(m.send_irp(raw).status, Status::NOT_SUPPORTED);
    };
    let h = open(&mut m, c, r"ctx\a.txt");
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 1, 0)]);
    let volume = m.open(c, "", CreateOptions::open()).expect("the volume opens");
    seen();
    // On the volume handle: refused in the pre and the post, nothing attached.
    pnp(&mut m, volume);
    let s = seen();
    for stage in ["pnp", "post-pnp"] {
        let answers = answers(&s, stage);
        assert_eq!(answers, [unsupported.clone(), unsupported.clone()], "{stage}: {s:#?}");
    }
    assert!(freed(&s).is_empty() && created(&s).is_empty(), "{s:#?}");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    close(&mut m, volume);
    seen();
    // On the file's handle: the stream's context, found by both requests.
    pnp(&mut m, h);
    let s = seen();
    assert_eq!(answers(&s, "pnp"), [got(false, 2, 1, 0), got(false, 3, 1, 0)], "{s:#?}");
    assert_eq!(answers(&s, "post-pnp"), [got(false, 4, 1, 0), got(false, 5, 1, 0)], "{s:#?}");
    assert!(freed(&s).is_empty() && created(&s).is_empty(), "{s:#?}");
    // The file's context is the only one, freed once at its close.
    close(&mut m, h);
    let s = seen();
    assert_eq!(answers(&s, "close"), [got(false, 7, 1, 0)], "{s:#?}");
    assert_eq!(freed(&s), [vec![7, 1, 0]], "{s:#?}");
    finish(m, &[COUNTER]);
}

/// `IRP_MN_QUERY_DEVICE_RELATIONS`.
const IRP_MN_QUERY_DEVICE_RELATIONS: u8 = 0x07;
/// `TargetDeviceRelation` (`DEVICE_RELATION_TYPE`).
const TARGET_DEVICE_RELATION: u32 = 4;

/// A delete in pre-close (the close of one handle while another stays open, then the last
/// close) does what it does elsewhere, in both models: the context is detached before the close
/// goes down and freed at once, once, with its final words; the handle still open finds none
/// (`STATUS_NOT_FOUND`); the file system's teardown at the last close frees nothing more (the
/// legacy model's `FreeCallback` is not called for it), and nothing is a finding. Rule 28,
/// "Deleting in pre-close". (Added after the first version.)
pub(crate) fn check_delete_in_pre_close(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let f = r"\ctx\forget.txt";
    let h1 = open(&mut m, c, f);
    let h2 = open(&mut m, c, f);
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 1, 0), got(false, 2, 1, 0)]);
    // The first close deletes the context while h2 keeps the stream open.
    close(&mut m, h1);
    let s = seen();
    assert_eq!(answers(&s, "cleanup"), [got(false, 3, 1, 0)]);
    assert_eq!(answers(&s, "close"), [got(false, 4, 1, 0)]);
    let deleted = Seen::Deleted { file: f.to_owned(), words: vec![4, 1, 0] };
    let freed_words = Seen::Freed { filter: COUNTER, words: vec![4, 1, 0] };
    let tail = s.iter().skip_while(|e| **e != deleted).cloned().collect::<Vec<_>>();
    assert_eq!(tail[..2], [deleted, freed_words], "deleted, then freed: {s:#?}");
    assert_eq!(freed(&s).len(), 1, "{s:#?}");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // The other handle finds none.
    read(&mut m, h2);
    assert_eq!(answers(&seen(), "read"), [Err(Status::NOT_FOUND)]);
    // A third handle attaches a new one; the last two closes: h2's finds it and deletes it
    // while h3 is open, h3's finds none.
    let h3 = open(&mut m, c, f);
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 2, 0)]);
    close(&mut m, h2);
    let s = seen();
    assert_eq!(answers(&s, "close"), [got(false, 3, 2, 0)]);
    assert_eq!(freed(&s), [vec![3, 2, 0]], "{s:#?}");
    // The last close: a context attached by a write, deleted in pre-close before the file
    // system tears the stream down; freed once, by the delete.
    write(&mut m, h3);
    assert_eq!(answers(&seen(), "write"), [got(true, 1, 3, 1)]);
    close(&mut m, h3);
    let s = seen();
    assert_eq!(answers(&s, "cleanup"), [got(false, 2, 3, 1)]);
    assert_eq!(answers(&s, "close"), [got(false, 3, 3, 1)]);
    assert_eq!(answers(&s, "post-close"), [Err(Status::NOT_SUPPORTED)]);
    assert_eq!(freed(&s), [vec![3, 3, 1]], "{s:#?}");
    finish(m, &[COUNTER]);
    assert!(freed(&seen()).is_empty(), "nothing left for the unload to free");
}

/// Named data streams (docs/simulator.md, "Named data streams"): `a.txt` and `a.txt:s` are two
/// streams, each with its own context (its own marker), each freed at its own stream's last
/// close, the other's still attached; a second open of the stream after its close attaches a new
/// context. (Added after the first version.)
pub(crate) fn check_named_streams(install: Install, counter: fsfilter_sim::DriverEntry) {
    let (mut m, c) = machine(install, &[(COUNTER, counter)]);
    let (file, stream) = (r"\ctx\a.txt", r"\ctx\a.txt:s");
    let hf = open(&mut m, c, file);
    let options = CreateOptions::default()
        .access(access::FILE_READ_DATA | access::FILE_WRITE_DATA | access::SYNCHRONIZE);
    let r = m.create(c, stream, options);
    assert_eq!(r.status, Status::SUCCESS, "{:?}", m.findings());
    let hs = r.handle.expect("opened");
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 1, 0), got(true, 1, 2, 0)]);
    write(&mut m, hs);
    read(&mut m, hf);
    let s = seen();
    assert_eq!(answers(&s, "write"), [got(false, 2, 2, 1)], "{s:#?}");
    assert_eq!(answers(&s, "read"), [got(false, 2, 1, 0)], "{s:#?}");
    // The stream's last close frees its context only.
    close(&mut m, hs);
    let s = seen();
    assert_eq!(answers(&s, "cleanup"), [got(false, 3, 2, 1)]);
    assert_eq!(answers(&s, "close"), [got(false, 4, 2, 1)]);
    assert_eq!(freed(&s), [vec![4, 2, 1]], "the stream's context: {s:#?}");
    // Opened again: a new context; the file's is still the first.
    let hs = open(&mut m, c, stream);
    assert_eq!(answers(&seen(), "post-create"), [got(true, 1, 3, 0)]);
    read(&mut m, hs);
    assert_eq!(answers(&seen(), "read"), [got(false, 2, 3, 0)]);
    close(&mut m, hs);
    assert_eq!(freed(&seen()), [vec![4, 3, 0]]);
    close(&mut m, hf);
    let s = seen();
    assert_eq!(answers(&s, "close"), [got(false, 4, 1, 0)]);
    assert_eq!(freed(&s), [vec![4, 1, 0]], "the file's context, at its last close: {s:#?}");
    finish(m, &[COUNTER]);
}

/// The checks above as the tests of one model's crate, named as docs/semantics.md (row
/// `stream-contexts`) lists them: `install`, the entries of [`Counter`] and [`Undeclared`] built
/// with the model's `driver!`, and the fault kind of the backend's context allocation. Expanded
/// at the crate root of a crate that includes this file as `mod contexts`. (Added after the first
/// version; each model's crate wrote the same nine tests before.)
macro_rules! shared_tests {
    ($install:expr, $counter:expr, $undeclared:expr, $allocation:expr $(,)?) => {
    #[test]
    fn one_context_per_stream_found_from_every_handle_and_freed_at_the_last_close_in_both_models() {
        $crate::contexts::check_one_context_per_stream($install, $counter);
    }

    #[test]
    fn irp_paging_and_fast_io_operations_find_the_context_in_both_models() {
        $crate::contexts::check_every_kind_finds_it($install, $counter);
    }

    #[test]
    fn a_deleted_context_is_not_found_and_a_new_one_is_attached_in_both_models() {
        $crate::contexts::check_delete($install, $counter);
    }

    #[test]
    fn two_threads_on_one_stream_share_one_context_in_both_models() {
        $crate::contexts::check_two_threads($install, $counter);
    }

    #[test]
    fn contexts_still_attached_are_freed_before_the_unload_returns_in_both_models() {
        $crate::contexts::check_unload($install, $counter);
    }

    #[test]
    fn stream_context_is_refused_where_rule_28_says_in_both_models() {
        $crate::contexts::check_refusals($install, $counter, $undeclared);
    }

    #[test]
    fn instance_setup_outside_any_operation_is_refused_in_both_models() {
        $crate::contexts::check_outside_an_operation($install, $counter);
    }

    #[test]
    fn a_context_that_cannot_be_allocated_is_refused_and_nothing_attached_in_both_models() {
        $crate::contexts::check_allocation_failure($install, $counter, $allocation);
    }

    #[test]
    fn a_query_open_has_no_stream_and_is_refused_a_context_in_both_models() {
        $crate::contexts::check_query_open($install, $counter);
    }

    #[test]
    fn a_delete_in_pre_close_detaches_and_frees_the_context_once_in_both_models() {
        $crate::contexts::check_delete_in_pre_close($install, $counter);
    }

    #[test]
    fn a_dismount_frees_the_context_once_in_both_models() {
        $crate::contexts::check_dismount($install, $counter);
    }

    #[test]
    fn a_pnp_irp_on_a_volume_handle_is_refused_a_context_in_both_models() {
        $crate::contexts::check_pnp($install, $counter);
    }

    #[test]
    fn a_file_and_its_named_stream_have_their_own_contexts_in_both_models() {
        $crate::contexts::check_named_streams($install, $counter);
    }
    };
}
pub(crate) use shared_tests;
