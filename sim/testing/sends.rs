//! Messages to user mode through a backend (docs/callback-model.md, rule 25): shared by
//! `legacy/tests/sends.rs` and `minifilter/tests/sends.rs`, which include this file with
//! `#[path]`, build [`Asker`], [`Quiet`] and [`Mute`] with their backend's `driver!`, and
//! give a `connect` function: the minifilter one connects to the port `\FsfAsk`, the legacy one
//! opens `\??\FsfAsk` overlapped. Both then use `fsfilter_sim::MessageServer`, so the client
//! reads and writes the same bytes in both models, and every assertion here holds in both.
//!
//! [`Asker`] sends from its post-create callback what the test planned ([`plan`]): a list of
//! sends, each with its message, reply buffer and timeout, and records each result; a reply
//! `no` makes it cancel the open with `STATUS_ACCESS_DENIED` (an on-access verdict).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use fsfilter::{
    ClientId, Error, Filter, Instance, InstanceSetup, MajorFunction, MessageChannel, MessageSent,
    Operation, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome, Registration,
    Result, ServiceParameters, Status,
};
use fsfilter_sim::{
    CreateOptions, FsKind, Machine, MachineConfig, MessageServer, Received, ServiceSpec,
    StopResult, VolumeId, VolumeSpec,
};

/// The service name of the filter that sends.
pub(crate) const ASKER: &str = "Asker";
/// The service name of the filter with a channel that does not declare sending.
pub(crate) const QUIET: &str = "Quiet";
/// The service name of the filter without a channel.
pub(crate) const MUTE: &str = "Mute";
/// The channel's name.
pub(crate) const CHANNEL: &str = "FsfAsk";
/// The channel's `max_message`.
pub(crate) const MAX: usize = 32;

/// One send the filter makes.
#[derive(Clone, Debug)]
pub(crate) struct Send {
    /// The message.
    pub message: Vec<u8>,
    /// The reply buffer's size, or `None` for a one-way message.
    pub reply: Option<usize>,
    /// The timeout.
    pub timeout_ms: Option<u32>,
    /// Sent while holding a spin lock (at `DISPATCH_LEVEL`).
    pub raised: bool,
}

/// A send of `message` with a reply buffer of `reply` bytes and a timeout of `timeout_ms`.
pub(crate) fn ask(message: &[u8], reply: Option<usize>, timeout_ms: Option<u32>) -> Send {
    Send { message: message.to_vec(), reply, timeout_ms, raised: false }
}

thread_local! {
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static CLIENT: Cell<Option<ClientId>> = const { Cell::new(None) };
    static PLAN: RefCell<Vec<Vec<Send>>> = const { RefCell::new(Vec::new()) };
}

/// Logs a line.
pub(crate) fn log(line: String) {
    SEEN.with(|s| s.borrow_mut().push(line));
}

/// What the filter and the server saw since the last call.
pub(crate) fn take() -> Vec<String> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// The sends a later successful create's post callback makes: each post-create takes the
/// oldest batch planned.
pub(crate) fn plan(sends: Vec<Send>) {
    PLAN.with(|p| p.borrow_mut().push(sends));
}

/// How a send ended, in words.
fn outcome(r: core::result::Result<MessageSent, Error>, reply: &[u8]) -> String {
    match r {
        Ok(MessageSent::Delivered(n)) => {
            let got = reply.get(..n).unwrap_or(&[]);
            format!("delivered {:?}", String::from_utf8_lossy(got))
        }
        Ok(MessageSent::TimedOut) => "timed out".to_owned(),
        Err(e) => format!("{}", e.status()),
    }
}

/// Runs the plan: each send, its result logged; a reply `no` cancels the open.
fn run_plan(op: &PostOperation<'_>) {
    let sends = PLAN.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_empty() { Vec::new() } else { p.remove(0) }
    });
    let services = op.services();
    for s in sends {
        let Some(client) = CLIENT.with(Cell::get) else {
            log("no client".to_owned());
            continue;
        };
        let mut buffer = vec![0u8; s.reply.unwrap_or(0)];
        let reply = s.reply.map(|_| buffer.as_mut_slice());
        let r = if s.raised {
            let lock = fsfilter_kernel::sync::SpinLock::new(());
            let _held = lock.lock();
            services.send_message(client, &s.message, reply, s.timeout_ms)
        } else {
            services.send_message(client, &s.message, reply, s.timeout_ms)
        };
        log(format!("sent {}: {}", String::from_utf8_lossy(&s.message), outcome(r, &buffer)));
        if r == Ok(MessageSent::Delivered(2)) && buffer.get(..2) == Some(&b"no"[..]) {
            let cancelled = services.cancel_file_open(Status::ACCESS_DENIED);
            log(format!("cancel open: {cancelled:?}"));
        }
    }
}

/// The create operation with a post callback, for the three filters.
const REGISTRATION: Registration =
    Registration::new().operation(Operation::new(MajorFunction::Create).pre().post()).validated();

/// A filter `$name` whose post-create runs the plan: the part the three filters share; `$channel`
/// is its channel, `$client` the client it knows at load, `$extra` its channel callbacks.
macro_rules! planned_sender {
    ($name:ident, $channel:expr, $client:expr, { $($extra:tt)* }) => {
        impl Filter for $name {
            const REGISTRATION: Registration = REGISTRATION;
            const MESSAGES: Option<MessageChannel> = $channel;
            type InstanceContext = ();
            type CompletionContext = ();

            fn load(_: &dyn ServiceParameters) -> Result<Self> {
                CLIENT.with(|c| c.set($client));
                Ok($name)
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
                if op.result().status.is_success() {
                    run_plan(op);
                }
                PostOutcome::Finished
            }

            $($extra)*
        }
    };
}

/// Records the client that connects, and says so.
fn connected(client: ClientId) -> Result<()> {
    CLIENT.with(|c| c.set(Some(client)));
    log("connect".to_owned());
    Ok(())
}

/// A filter whose post-create sends what the test planned, over a channel of two clients and
/// 32-byte messages declared with `sends_messages()`.
pub(crate) struct Asker;

planned_sender!(
    Asker,
    Some(
        MessageChannel::new(CHANNEL)
            .max_clients(2)
            .max_message(MAX as u32)
            .sends_messages()
            .validated(),
    ),
    None,
    {
        fn client_connect(&self, client: ClientId, _: &[u8]) -> Result<()> {
            connected(client)
        }

        fn client_disconnect(&self, _: ClientId) {
            log("disconnect".to_owned());
        }
    }
);

/// The same filter with a channel that does not declare sending.
pub(crate) struct Quiet;

planned_sender!(
    Quiet,
    Some(MessageChannel::new(CHANNEL).max_message(MAX as u32).validated()),
    None,
    {
        fn client_connect(&self, client: ClientId, _: &[u8]) -> Result<()> {
            connected(client)
        }
    }
);

/// The same filter without a channel (it sends to a made-up client).
pub(crate) struct Mute;

planned_sender!(Mute, None, Some(ClientId(1)), {});

/// How a test file connects a client in its model.
pub(crate) type Connect = fn(&mut Machine) -> core::result::Result<MessageServer, Status>;

/// A booted machine with volume `C:` (`data.bin`) and `service` installed by `install`.
pub(crate) fn machine(
    install: fn(&mut Machine, ServiceSpec),
    service: &str,
    entry: fsfilter_sim::DriverEntry,
) -> (Machine, VolumeId) {
    take();
    PLAN.with(|p| p.borrow_mut().clear());
    let mut m = Machine::new(MachineConfig { seed: 37 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[7u8; 64]));
    install(&mut m, ServiceSpec::new(service, entry, "legacy"));
    m.boot();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    take();
    (m, c)
}

/// Opens `data.bin`: the handle closed at once, or the failing status.
pub(crate) fn open(m: &mut Machine, c: VolumeId) -> core::result::Result<(), Status> {
    let h = m.open(c, "data.bin", CreateOptions::open())?;
    m.close_handle(h);
    Ok(())
}

/// Serves with `answer`, logging each message as `got <message> #<id> reply <capacity>`.
pub(crate) fn serve(
    m: &mut Machine,
    server: MessageServer,
    capacity: usize,
    mut answer: impl FnMut(&Received) -> Option<Vec<u8>> + 'static,
) {
    let status = server.serve(m, capacity, move |_, msg| {
        log(format!(
            "got {} #{} reply {:?}",
            String::from_utf8_lossy(&msg.message),
            msg.header.message_id,
            msg.reply_capacity()
        ));
        answer(msg)
    });
    // Pending, or a queued message taken at once (`then` runs all the same).
    assert!(matches!(status, Status::PENDING | Status::SUCCESS), "{status}");
}

/// Stops the filter with no finding; `client` closed first.
pub(crate) fn finish(m: &mut Machine, service: &str, client: Option<MessageServer>) {
    if let Some(c) = client {
        assert_eq!(c.close(m), Status::SUCCESS);
    }
    m.settle();
    assert_eq!(m.stop(service), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Post-create asks the client, which answers `yes` or `no`; `no` cancels the open. The
/// client reads the same header and bytes in both models.
pub(crate) fn check_ask_and_reply(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    let answers = Rc::new(RefCell::new(vec![b"yes".to_vec(), b"no".to_vec()]));
    let queue = answers.clone();
    serve(&mut m, server, 64, move |_| Some(queue.borrow_mut().remove(0)));
    plan(vec![ask(b"may I open data.bin?", Some(8), Some(1000))]);
    assert_eq!(open(&mut m, c), Ok(()));
    plan(vec![ask(b"and now?", Some(8), None)]);
    assert_eq!(open(&mut m, c), Err(Status::ACCESS_DENIED));
    assert_eq!(
        take(),
        [
            "connect",
            "got may I open data.bin? #1 reply Some(8)",
            "sent may I open data.bin?: delivered \"yes\"",
            "got and now? #2 reply Some(8)",
            "sent and now?: delivered \"no\"",
            "cancel open: Ok(())",
        ]
    );
    assert!(answers.borrow().is_empty());
    finish(&mut m, ASKER, Some(server));
    assert_eq!(take(), ["disconnect"]);
}

/// The message and the reply's space go through the backend's own non-paged pool, never the
/// filter's buffers, which may be on its stack (rule 25): one allocation per send, freed
/// before `send_message` returns.
pub(crate) fn check_sends_copy_through_pool(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    serve(&mut m, server, 64, |_| Some(b"ok".to_vec()));
    let calls = |m: &Machine| m.kernel(|k| k.pool_calls_of_service(ASKER));
    // An open that sends nothing, then one that sends once: the difference is the send's.
    let before = calls(&m);
    assert_eq!(open(&mut m, c), Ok(()));
    let quiet = calls(&m) - before;
    plan(vec![ask(b"ask", Some(4), Some(1000))]);
    let before = calls(&m);
    assert_eq!(open(&mut m, c), Ok(()));
    let sending = calls(&m) - before;
    assert_eq!(sending - quiet, 2, "one pool buffer allocated and freed for the send");
    assert_eq!(take(), ["connect", "got ask #1 reply Some(4)", "sent ask: delivered \"ok\""]);
    finish(&mut m, ASKER, Some(server));
    assert_eq!(take(), ["disconnect"]);
}

/// A one-way message is delivered without a reply; a message sent while no get waits is queued
/// and taken by the next get; an empty reply buffer still waits for the reply.
pub(crate) fn check_one_way_and_queued(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    // No get yet: the first message waits in the queue until the server starts, 10 ms later.
    m.schedule(10, move |m| serve(m, server, 64, |_| Some(b"ok".to_vec())));
    plan(vec![
        ask(b"note", None, Some(1000)),
        ask(b"ack?", Some(0), Some(1000)),
        ask(b"ask", Some(4), Some(1000)),
    ]);
    let before = m.now_ms();
    assert_eq!(open(&mut m, c), Ok(()));
    assert!(m.now_ms() - before >= 10, "the first send waited for the server");
    // A one-way sender and the server's completion both go on after the delivery: their lines
    // may come in either order.
    let mut seen = take();
    seen.sort();
    assert_eq!(
        seen,
        [
            "connect",
            "got ack? #2 reply Some(0)",
            "got ask #3 reply Some(4)",
            "got note #1 reply None",
            "sent ack?: delivered \"\"",
            "sent ask: delivered \"ok\"",
            "sent note: delivered \"\"",
        ]
    );
    finish(&mut m, ASKER, Some(server));
    assert_eq!(take(), ["disconnect"]);
}

/// A timeout before any get: the message is never delivered (a later get waits on). A timeout
/// before the reply: the late reply finds no waiter. Waits take virtual time.
pub(crate) fn check_timeouts(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    plan(vec![ask(b"anyone?", Some(4), Some(50))]);
    let before = m.now_ms();
    assert_eq!(open(&mut m, c), Ok(()));
    assert!(m.now_ms() - before >= 50, "the sender waited its timeout");
    assert_eq!(take(), ["connect", "sent anyone?: timed out"]);
    // The timed-out message is gone: a get now waits, and a cancel ends it.
    let status = server.get(&mut m, 64, |_, r| log(format!("get: {:?}", r.map(|x| x.message))));
    assert_eq!(status, Status::PENDING);
    m.settle();
    assert_eq!(take(), Vec::<String>::new());
    assert_eq!(server.cancel(&mut m), Status::SUCCESS);
    m.settle();
    assert_eq!(take(), [format!("get: Err({:?})", Status::CANCELLED)]);
    // Received but not answered in time.
    let ids = Rc::new(RefCell::new(Vec::new()));
    let seen = ids.clone();
    serve(&mut m, server, 64, move |msg| {
        seen.borrow_mut().push(msg.header.message_id);
        None
    });
    plan(vec![ask(b"slow?", Some(4), Some(30))]);
    assert_eq!(open(&mut m, c), Ok(()));
    assert_eq!(take(), ["got slow? #2 reply Some(4)", "sent slow?: timed out"]);
    let id = *ids.borrow().first().expect("the server saw the message");
    assert_eq!(server.reply(&mut m, id, b"late"), Status::FLT_NO_WAITER_FOR_REPLY);
    assert_eq!(server.reply(&mut m, 99, b"what"), Status::FLT_NO_WAITER_FOR_REPLY);
    finish(&mut m, ASKER, Some(server));
    assert_eq!(take(), ["disconnect"]);
}

/// A client that closes while a sender waits for its reply: the sender gets
/// `STATUS_PORT_DISCONNECTED`; a later send to the same id too, with nothing left behind.
pub(crate) fn check_disconnect_while_waiting(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    serve(&mut m, server, 64, move |_| None);
    m.schedule(20, move |m| {
        log("close".to_owned());
        assert_eq!(server.close(m), Status::SUCCESS);
    });
    plan(vec![ask(b"wait", Some(4), None), ask(b"again", None, None)]);
    assert_eq!(open(&mut m, c), Ok(()));
    let seen = take();
    assert_eq!(seen.first().map(String::as_str), Some("connect"));
    assert_eq!(seen.get(1).map(String::as_str), Some("got wait #1 reply Some(4)"));
    assert_eq!(seen.get(2).map(String::as_str), Some("close"));
    let mut rest = seen.get(3..).unwrap_or(&[]).to_vec();
    rest.sort();
    let expected = [
        "disconnect".to_owned(),
        format!("sent again: {}", Status::PORT_DISCONNECTED),
        format!("sent wait: {}", Status::PORT_DISCONNECTED),
    ];
    assert_eq!(rest, expected);
    finish(&mut m, ASKER, None);
}

/// Sizes and IRQL: an empty or too long message, a too large reply buffer and a zero timeout
/// are refused, as is a send at `DISPATCH_LEVEL`; a get too small for a message fails with
/// `STATUS_BUFFER_TOO_SMALL` and the message waits for the next get; a reply longer than the
/// sender's buffer is cut to it.
pub(crate) fn check_sizes_and_irql(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    let mut raised = ask(b"high", None, Some(100));
    raised.raised = true;
    plan(vec![
        ask(b"", None, Some(100)),
        ask(&[b'x'; MAX + 1], None, Some(100)),
        ask(b"big reply", Some(MAX + 1), Some(100)),
        ask(b"no time", None, Some(0)),
        raised,
    ]);
    assert_eq!(open(&mut m, c), Ok(()));
    let invalid = Status::INVALID_PARAMETER;
    assert_eq!(
        take(),
        [
            "connect".to_owned(),
            format!("sent : {invalid}"),
            format!("sent {}: {invalid}", "x".repeat(MAX + 1)),
            format!("sent big reply: {invalid}"),
            format!("sent no time: {invalid}"),
            format!("sent high: {}", Status::INVALID_DEVICE_STATE),
        ]
    );
    // A get of 16 + 3 bytes cannot hold "a longer one" (12): it fails, the message stays and
    // the server's next get (64 bytes) takes it. The reply (10 bytes) is cut to 4.
    let status = server.get(&mut m, 19, move |m, r| {
        log(format!("small get: {:?}", r.map(|x| x.message)));
        serve(m, server, 64, |_| Some(b"0123456789".to_vec()));
    });
    assert_eq!(status, Status::PENDING);
    plan(vec![ask(b"a longer one", Some(4), Some(1000)), ask(&[b'm'; MAX], Some(MAX), Some(1000))]);
    assert_eq!(open(&mut m, c), Ok(()));
    assert_eq!(
        take(),
        [
            format!("small get: Err({:?})", Status::BUFFER_TOO_SMALL),
            "got a longer one #1 reply Some(4)".to_owned(),
            "sent a longer one: delivered \"0123\"".to_owned(),
            format!("got {} #2 reply Some({MAX})", "m".repeat(MAX)),
            format!("sent {}: delivered \"0123456789\"", "m".repeat(MAX)),
        ]
    );
    finish(&mut m, ASKER, Some(server));
    assert_eq!(take(), ["disconnect"]);
}

/// A pending get ends with `STATUS_CANCELLED` when cancelled (`CancelIoEx`) and when its
/// handle closes; a message sent after the cancel is not given to it.
pub(crate) fn check_cancelled_gets(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    let get = |m: &mut Machine, tag: &'static str| {
        let status =
            server.get(m, 64, move |_, r| log(format!("{tag}: {:?}", r.map(|x| x.message))));
        assert_eq!(status, Status::PENDING);
    };
    get(&mut m, "first");
    get(&mut m, "second");
    assert_eq!(server.cancel(&mut m), Status::SUCCESS);
    m.settle();
    let mut seen = take();
    seen.sort();
    let cancelled = Status::CANCELLED;
    assert_eq!(
        seen,
        [
            "connect".to_owned(),
            format!("first: Err({cancelled:?})"),
            format!("second: Err({cancelled:?})")
        ]
    );
    plan(vec![ask(b"anyone?", None, Some(20))]);
    assert_eq!(open(&mut m, c), Ok(()));
    assert_eq!(take(), ["sent anyone?: timed out"]);
    get(&mut m, "third");
    assert_eq!(server.close(&mut m), Status::SUCCESS);
    m.settle();
    let mut seen = take();
    seen.sort();
    assert_eq!(seen, ["disconnect".to_owned(), format!("third: Err({cancelled:?})")]);
    finish(&mut m, ASKER, None);
}

/// A channel without `sends_messages()`, and a filter without a channel: `STATUS_NOT_SUPPORTED`.
pub(crate) fn check_not_declared(
    install: fn(&mut Machine, ServiceSpec),
    quiet: fsfilter_sim::DriverEntry,
    mute: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, QUIET, quiet);
    let server = connect(&mut m).expect("connects");
    plan(vec![ask(b"hello", Some(4), Some(100))]);
    assert_eq!(open(&mut m, c), Ok(()));
    assert_eq!(take(), ["connect".to_owned(), format!("sent hello: {}", Status::NOT_SUPPORTED)]);
    finish(&mut m, QUIET, Some(server));
    drop(m);
    let (mut m, c) = machine(install, MUTE, mute);
    plan(vec![ask(b"hello", None, None)]);
    assert_eq!(open(&mut m, c), Ok(()));
    assert_eq!(take(), [format!("sent hello: {}", Status::NOT_SUPPORTED)]);
    finish(&mut m, MUTE, None);
}

/// Two senders wait at once (two opens in two threads); the client answers the second first;
/// each gets its own reply.
pub(crate) fn check_two_senders(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    let ids = Rc::new(RefCell::new(Vec::new()));
    let status = server.serve(&mut m, 64, move |m, msg| {
        log(format!("got {}", String::from_utf8_lossy(&msg.message)));
        let mut ids = ids.borrow_mut();
        ids.push(msg.header.message_id);
        if let [first, second] = ids[..] {
            assert_eq!(server.reply(m, second, b"two"), Status::SUCCESS);
            assert_eq!(server.reply(m, first, b"one"), Status::SUCCESS);
        }
        None
    });
    assert_eq!(status, Status::PENDING);
    plan(vec![ask(b"first", Some(8), Some(1000))]);
    plan(vec![ask(b"second", Some(8), Some(1000))]);
    m.schedule(0, move |m| assert_eq!(open(m, c), Ok(())));
    m.schedule(1, move |m| assert_eq!(open(m, c), Ok(())));
    m.settle();
    let seen = take();
    assert_eq!(
        seen.get(..3),
        Some(&["connect".to_owned(), "got first".to_owned(), "got second".to_owned()][..])
    );
    let mut rest = seen.get(3..).unwrap_or(&[]).to_vec();
    rest.sort();
    assert_eq!(rest, ["sent first: delivered \"one\"", "sent second: delivered \"two\""]);
    finish(&mut m, ASKER, Some(server));
    assert_eq!(take(), ["disconnect"]);
}

/// A get that finds a queued message too large for its buffer fails at once with
/// `STATUS_BUFFER_TOO_SMALL` and ends there in both models: its completion never runs (for the
/// legacy one, the I/O manager queues none for a request failed without being pended); the
/// message stays for the next get.
pub(crate) fn check_a_get_refused_at_once_ends_there(
    install: fn(&mut Machine, ServiceSpec),
    asker: fsfilter_sim::DriverEntry,
    connect: Connect,
) {
    let (mut m, c) = machine(install, ASKER, asker);
    let server = connect(&mut m).expect("connects");
    m.schedule(10, move |m| {
        let status =
            server.get(m, 19, |_, r| log(format!("small get: {:?}", r.map(|x| x.message))));
        log(format!("small get returned {status}"));
        serve(m, server, 64, |_| Some(b"ok".to_vec()));
    });
    plan(vec![ask(b"a longer one", Some(4), Some(1000))]);
    assert_eq!(open(&mut m, c), Ok(()));
    m.settle();
    assert_eq!(
        take(),
        [
            "connect".to_owned(),
            format!("small get returned {}", Status::BUFFER_TOO_SMALL),
            "got a longer one #1 reply Some(4)".to_owned(),
            "sent a longer one: delivered \"ok\"".to_owned(),
        ]
    );
    finish(&mut m, ASKER, Some(server));
    assert_eq!(take(), ["disconnect"]);
}
