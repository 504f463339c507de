//! Processes through a backend (docs/callback-model.md, rule 26): shared by
//! `legacy/tests/processes.rs` and `minifilter/tests/processes.rs`, which include this file with
//! `#[path]`, build [`Watcher`], [`Blind`] and [`Lone`] with their backend's `driver!`, and give
//! a `connect` function (the minifilter one connects to the port `\FsfWatch`, the legacy one
//! opens `\??\FsfWatch`). Every assertion here holds in both models.
//!
//! [`Watcher`] declares `PROCESS_QUERIES` and a channel that does not send; it records, for each
//! callback, `Services::requestor_process`, the process of the thread it ran in and, in
//! pre-create, `Services::client_process` of its connected client. [`Blind`] is the same filter
//! without the declaration; [`Lone`] declares it without a channel.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::{Cell, RefCell};

use fsfilter::{
    ClientId, Filter, Instance, InstanceSetup, MajorFunction, MessageChannel, Operation,
    OperationKind, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome, ProcessId,
    Registration, Result, ServiceParameters, Services,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, IoRequest, Machine, MachineConfig, MessageServer, PageWriter,
    ServiceSpec, StopResult, VolumeId, VolumeSpec,
};

/// The service name of the filter that asks for processes.
pub(crate) const WATCHER: &str = "Watcher";
/// The service name of the filter that does not declare `PROCESS_QUERIES`.
pub(crate) const BLIND: &str = "Blind";
/// The service name of the filter that declares it without a channel.
pub(crate) const LONE: &str = "Lone";
/// The channel's name.
pub(crate) const CHANNEL: &str = "FsfWatch";

/// One callback seen: where, and what the services answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    /// `pre` or `post`.
    pub stage: &'static str,
    pub major: MajorFunction,
    pub kind: OperationKind,
    pub paging: bool,
    /// `requestor_process()`.
    pub requestor: Option<ProcessId>,
    /// `client_process(client)` of the last connected client, in pre-create with one.
    pub client: Option<Option<ProcessId>>,
    /// The process of the thread the callback ran in (the simulator's `PsGetCurrentProcessId`).
    pub current: u32,
}

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
    static CLIENT: Cell<Option<ClientId>> = const { Cell::new(None) };
}

/// What the filter saw since the last call.
pub(crate) fn take() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn record(stage: &'static str, h: &fsfilter::OperationHeader<'_>, services: &dyn Services) {
    let client = match (h.major, stage, CLIENT.with(Cell::get)) {
        (MajorFunction::Create, "pre", Some(c)) => Some(services.client_process(c)),
        _ => None,
    };
    let seen = Seen {
        stage,
        major: h.major,
        kind: h.kind,
        paging: h.is_paging(),
        requestor: services.requestor_process(),
        client,
        // SAFETY: no precondition (the simulated kernel's export, at any IRQL).
        current: unsafe { fsfilter_sim::exports::ps::PsGetCurrentProcessId() } as usize as u32,
    };
    SEEN.with(|s| s.borrow_mut().push(seen));
}

/// Creates, reads, writes and directory control with posts, and the modified-page writer's
/// acquire.
const REGISTRATION: Registration = Registration::new()
    .operation(Operation::new(MajorFunction::Create).pre().post())
    .operation(Operation::new(MajorFunction::Read).pre().post())
    .operation(Operation::new(MajorFunction::Write).pre().post())
    .operation(Operation::new(MajorFunction::DirectoryControl).pre().post())
    .operation(Operation::new(MajorFunction::AcquireForModWrite).pre())
    .validated();

macro_rules! watcher {
    ($name:ident, $processes:expr, $messages:expr) => {
        pub(crate) struct $name;

        impl Filter for $name {
            const REGISTRATION: Registration = REGISTRATION;
            const PROCESS_QUERIES: bool = $processes;
            const MESSAGES: Option<MessageChannel> = $messages;
            type InstanceContext = ();
            type CompletionContext = ();

            fn load(_: &dyn ServiceParameters) -> Result<Self> {
                CLIENT.with(|c| c.set(None));
                Ok($name)
            }

            fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<()> {
                // No operation: no requestor.
                assert_eq!(setup.services.requestor_process(), None);
                Ok(())
            }

            fn pre_operation(
                &self,
                _: &Instance<'_, ()>,
                op: &mut PreOperation<'_, ()>,
            ) -> PreOutcome<()> {
                record("pre", op.header(), op.services());
                if op.header().major == MajorFunction::AcquireForModWrite {
                    PreOutcome::NoPost
                } else {
                    PreOutcome::WithPost(())
                }
            }

            fn post_operation(
                &self,
                _: &Instance<'_, ()>,
                op: &mut PostOperation<'_>,
                _: (),
                _: PostFlags,
            ) -> PostOutcome<()> {
                record("post", op.header(), op.services());
                PostOutcome::Finished
            }

            fn client_connect(&self, client: ClientId, _: &[u8]) -> Result<()> {
                CLIENT.with(|c| c.set(Some(client)));
                Ok(())
            }

            fn client_disconnect(&self, _: ClientId) {}
        }
    };
}

/// A channel of two clients that does not send.
const CHANNEL_DECL: Option<MessageChannel> =
    Some(MessageChannel::new(CHANNEL).max_clients(2).max_message(32).validated());

watcher!(Watcher, true, CHANNEL_DECL);
watcher!(Blind, false, CHANNEL_DECL);
watcher!(Lone, true, None);

/// How a test file connects a client in its model.
pub(crate) type Connect = fn(&mut Machine) -> core::result::Result<MessageServer, fsfilter::Status>;

/// A booted machine with volume `C:` (`data.bin`, 512 bytes) and `service` installed.
pub(crate) fn machine(
    install: fn(&mut Machine, ServiceSpec),
    service: &str,
    entry: fsfilter_sim::DriverEntry,
) -> (Machine, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 41 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[7u8; 512]));
    install(&mut m, ServiceSpec::new(service, entry, "legacy"));
    m.boot();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    take();
    (m, c)
}

/// Stops the filter with no finding.
pub(crate) fn finish(mut m: Machine, service: &str) {
    m.settle();
    assert_eq!(m.stop(service), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The requestors the callbacks of `major` saw, in order, as `(stage, kind, paging, process)`.
fn requestors(
    seen: &[Seen],
    major: MajorFunction,
) -> Vec<(&'static str, OperationKind, bool, Option<u32>)> {
    seen.iter()
        .filter(|s| s.major == major)
        .map(|s| (s.stage, s.kind, s.paging, s.requestor.map(|p| p.0)))
        .collect()
}

/// A create, a non-cached read and a cached write made by process `app` have `app` as their
/// requestor in their pre and post callbacks; the default process's create has the default
/// process's id.
pub(crate) fn check_irps(
    install: fn(&mut Machine, ServiceSpec),
    watcher: fsfilter_sim::DriverEntry,
) {
    let (mut m, c) = machine(install, WATCHER, watcher);
    let app = m.new_process("app").expect("a new process");
    let user = m.acting_process();
    assert_ne!(app, user);
    m.as_process(app, |m| {
        let h = m.open(c, "data.bin", CreateOptions::open()).expect("opens");
        assert!(m.read(h, Some(0), 512, IoMode::NonCached).status.is_success());
        assert!(m.write(h, Some(0), &[1u8; 512], IoMode::NonCached).status.is_success());
        m.close_handle(h);
    });
    let seen = take();
    let a = Some(app.0);
    for major in [MajorFunction::Create, MajorFunction::Read, MajorFunction::Write] {
        assert_eq!(
            requestors(&seen, major),
            [("pre", OperationKind::Irp, false, a), ("post", OperationKind::Irp, false, a)],
            "{major:?}"
        );
    }
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("opens");
    m.close_handle(h);
    let seen = take();
    let u = Some(user.0);
    assert_eq!(
        requestors(&seen, MajorFunction::Create),
        [("pre", OperationKind::Irp, false, u), ("post", OperationKind::Irp, false, u)]
    );
    finish(m, WATCHER);
}

/// A cached read served by fast I/O (the second read, once caching is initiated) runs in the
/// requesting thread: its requestor is the reading process.
pub(crate) fn check_fast_io(
    install: fn(&mut Machine, ServiceSpec),
    watcher: fsfilter_sim::DriverEntry,
) {
    let (mut m, c) = machine(install, WATCHER, watcher);
    let app = m.new_process("app").expect("a new process");
    m.as_process(app, |m| {
        let h = m.open(c, "data.bin", CreateOptions::open()).expect("opens");
        assert!(m.read(h, Some(0), 16, IoMode::Cached).status.is_success());
        assert!(m.read(h, Some(16), 16, IoMode::Cached).status.is_success());
        m.close_handle(h);
    });
    let seen = take();
    let fast: Vec<_> = requestors(&seen, MajorFunction::Read)
        .into_iter()
        .filter(|r| r.1 == OperationKind::FastIo)
        .collect();
    assert!(!fast.is_empty(), "a fast read: {seen:?}");
    assert!(fast.iter().all(|r| r.3 == Some(app.0)), "{fast:?}");
    // Every read the process asked for, fast or IRP, non-paging, is the process's.
    let own: Vec<_> = requestors(&seen, MajorFunction::Read).into_iter().filter(|r| !r.2).collect();
    assert!(own.iter().all(|r| r.3 == Some(app.0)), "{own:?}");
    finish(m, WATCHER);
}

/// The modified-page writer's paging write, and its FsFilter acquire, and the lazy writer's
/// paging write come from the System process, whoever made the pages dirty.
pub(crate) fn check_paging(
    install: fn(&mut Machine, ServiceSpec),
    watcher: fsfilter_sim::DriverEntry,
) {
    let (mut m, c) = machine(install, WATCHER, watcher);
    let app = m.new_process("app").expect("a new process");
    let h = m.as_process(app, |m| m.open(c, "data.bin", CreateOptions::open()).expect("opens"));
    take();
    let r = m.page_write(h, 0, b"dirty", PageWriter::ModifiedPageWriter);
    assert!(r.status.is_success(), "{}", r.status);
    let seen = take();
    let system = Some(ProcessId::SYSTEM.0);
    let writes = requestors(&seen, MajorFunction::Write);
    assert!(!writes.is_empty(), "{seen:?}");
    assert!(writes.iter().all(|w| w.2 && w.3 == system), "{writes:?}");
    let acquires = requestors(&seen, MajorFunction::AcquireForModWrite);
    assert_eq!(acquires, [("pre", OperationKind::FsFilter, false, system)]);
    // The lazy writer writes from a system worker too, even when the process that dirtied the
    // pages is the one acting.
    let r = m.as_process(app, |m| m.page_write(h, 0, b"lazy", PageWriter::LazyWriter));
    assert!(r.status.is_success(), "{}", r.status);
    let seen = take();
    let writes = requestors(&seen, MajorFunction::Write);
    assert_eq!(
        writes,
        [("pre", OperationKind::Irp, true, system), ("post", OperationKind::Irp, true, system)]
    );
    m.as_process(app, |m| m.close_handle(h));
    finish(m, WATCHER);
}

/// A post callback that runs in another process's thread still has the requester's process.
/// Process `reader` waits for a change in a directory (`NtNotifyChangeDirectoryFile` on an
/// overlapped handle: the file system keeps the IRP pending); process `writer` then creates a
/// file there, and the file system completes the notification in the writer's thread, inside
/// the writer's create (sim/src/fs/notify.rs, FsRtl's notify package), so the legacy completion
/// routine and the minifilter's post callback run there. Both callbacks of the notification
/// answer the reader (the IRP's thread, `Tail.Overlay.Thread` / `Data->Thread`); the thread's
/// own process (`PsGetCurrentProcessId`) is the reader's in pre and the writer's in post.
pub(crate) fn check_post_in_another_thread(
    install: fn(&mut Machine, ServiceSpec),
    watcher: fsfilter_sim::DriverEntry,
) {
    let (mut m, c) = machine(install, WATCHER, watcher);
    let reader = m.new_process("reader").expect("a new process");
    let writer = m.new_process("writer").expect("a new process");
    let dir = m.as_process(reader, |m| {
        m.open(c, "docs", CreateOptions::directory().overlapped()).expect("opens")
    });
    let io = m.as_process(reader, |m| {
        let r = m.io(IoRequest::NotifyChangeDirectory {
            handle: dir,
            filter: 0x1, // FILE_NOTIFY_CHANGE_FILE_NAME
            watch_tree: false,
            length: 4096,
        });
        assert_eq!(r.status, fsfilter::Status::PENDING, "{r:?}");
        r.io.expect("a request")
    });
    let directory = |seen: &[Seen]| -> Vec<(&'static str, Option<u32>, u32)> {
        seen.iter()
            .filter(|s| s.major == MajorFunction::DirectoryControl)
            .map(|s| (s.stage, s.requestor.map(|p| p.0), s.current))
            .collect()
    };
    let (r, w) = (reader.0, writer.0);
    assert_eq!(directory(&take()), [("pre", Some(r), r)], "pended: no post yet");
    assert!(m.overlapped_result(io).is_none(), "outstanding");
    m.as_process(writer, |m| {
        let h = m.open(c, "docs\\new.txt", CreateOptions::create()).expect("creates");
        m.close_handle(h);
    });
    let seen = take();
    // The post ran in the writer's thread, and still names the reader.
    assert_eq!(directory(&seen), [("post", Some(r), w)], "{seen:?}");
    // The writer's own create is the writer's.
    let creates = requestors(&seen, MajorFunction::Create);
    assert!(!creates.is_empty() && creates.iter().all(|c| c.3 == Some(w)), "{creates:?}");
    let done = m.overlapped_result(io).expect("completed");
    assert!(done.status.is_success(), "{done:?}");
    m.as_process(reader, |m| m.close_handle(dir));
    finish(m, WATCHER);
}

/// `client_process` is the process that connected the client, from its connection to its
/// disconnection, for a channel that does not send.
pub(crate) fn check_client_process(
    install: fn(&mut Machine, ServiceSpec),
    watcher: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, WATCHER, watcher);
    let svc = m.new_process("svc").expect("a new process");
    let app = m.new_process("app").expect("a new process");
    let server = m.as_process(svc, |m| connect(m).expect("connects"));
    // The service's own open and another process's: the filter tells them apart.
    for p in [svc, app] {
        m.as_process(p, |m| {
            let h = m.open(c, "data.bin", CreateOptions::open()).expect("opens");
            m.close_handle(h);
        });
        let pre: Vec<_> = take()
            .into_iter()
            .filter(|s| s.major == MajorFunction::Create && s.stage == "pre")
            .map(|s| (s.requestor, s.client))
            .collect();
        assert_eq!(pre, [(Some(p), Some(Some(svc)))]);
    }
    assert_eq!(m.as_process(svc, |m| server.close(m)), fsfilter::Status::SUCCESS);
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("opens");
    m.close_handle(h);
    let pre: Vec<_> = take()
        .into_iter()
        .filter(|s| s.major == MajorFunction::Create && s.stage == "pre")
        .map(|s| s.client)
        .collect();
    assert_eq!(pre, [Some(None)], "a disconnected client has no process");
    finish(m, WATCHER);
}

/// A filter that does not declare `PROCESS_QUERIES` gets `None` from both services, connected
/// or not; one that declares it without a channel gets requestors but no client's process.
pub(crate) fn check_undeclared_and_no_channel(
    install: fn(&mut Machine, ServiceSpec),
    blind: fsfilter_sim::DriverEntry,
    lone: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, BLIND, blind);
    let svc = m.new_process("svc").expect("a new process");
    let server = m.as_process(svc, |m| connect(m).expect("connects"));
    m.as_process(svc, |m| {
        let h = m.open(c, "data.bin", CreateOptions::open()).expect("opens");
        m.close_handle(h);
    });
    let seen = take();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|s| s.requestor.is_none()), "{seen:?}");
    assert!(seen.iter().all(|s| s.client.is_none() || s.client == Some(None)), "{seen:?}");
    assert_eq!(m.as_process(svc, |m| server.close(m)), fsfilter::Status::SUCCESS);
    finish(m, BLIND);

    let (mut m, c) = machine(install, LONE, lone);
    CLIENT.with(|k| k.set(Some(ClientId(1))));
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("opens");
    m.close_handle(h);
    let user = m.acting_process();
    let pre: Vec<_> = take()
        .into_iter()
        .filter(|s| s.major == MajorFunction::Create && s.stage == "pre")
        .map(|s| (s.requestor, s.client))
        .collect();
    assert_eq!(pre, [(Some(user), Some(None))]);
    finish(m, LONE);
}
