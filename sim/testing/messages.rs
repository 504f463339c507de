//! User-mode messages through a backend (docs/callback-model.md, rule 23): shared by
//! `legacy/tests/messages.rs` and `minifilter/tests/messages.rs`, which include this file with
//! `#[path]`, build [`Echo`] and [`Silent`] with their backend's `driver!`, and give a
//! [`Client`]: the minifilter one connects to the communication port `\FsfEcho`
//! (`FilterConnectCommunicationPort`, `FilterSendMessage`), the legacy one opens
//! `\??\FsfEcho`, the link to the control device (`CreateFile` with the context in an extended
//! attribute, `DeviceIoControl` with `IOCTL_FSFILTER_MESSAGE`).
//!
//! Both models: the context reaches `client_connect`, replies come back whole or cut to the
//! caller's capacity, the filter's errors come back as the call's status, a refused connection
//! never disconnects, `max_clients` is enforced with `STATUS_CONNECTION_COUNT_LIMIT`, a close
//! disconnects, no finding and no pool left at stop. A filter without a channel has no name to
//! connect to. Only administrators connect (the port's default descriptor; the control
//! device's check of the caller's token): a standard user is refused with
//! `STATUS_ACCESS_DENIED` before the filter or the client count sees it. What differs is the
//! unload with a client connected (docs/semantics.md, row `messages`): each test file checks
//! its own model.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    ClientId, Error, Filter, Instance, InstanceSetup, MajorFunction, MessageChannel, Operation,
    PreOperation, PreOutcome, Registration, Result, ServiceParameters, Status,
};
use fsfilter_sim::{Caller, Machine, MachineConfig, ServiceSpec, StopResult};

/// The service name of the filter with a channel.
pub(crate) const ECHO: &str = "Echo";
/// The service name of the filter without one.
pub(crate) const SILENT: &str = "Silent";
/// The channel's name.
pub(crate) const CHANNEL: &str = "FsfEcho";

thread_local! {
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static CLIENTS: RefCell<Vec<ClientId>> = const { RefCell::new(Vec::new()) };
}

fn log(line: String) {
    SEEN.with(|s| s.borrow_mut().push(line));
}

/// What the filters saw since the last call.
pub(crate) fn take() -> Vec<String> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// A client's number: the order in which its id was first seen (ids differ between models).
fn number(client: ClientId) -> usize {
    CLIENTS.with(|c| {
        let mut c = c.borrow_mut();
        match c.iter().position(|x| *x == client) {
            Some(i) => i + 1,
            None => {
                c.push(client);
                c.len()
            }
        }
    })
}

/// A filter with a channel of two clients and 16-byte messages. It refuses the context
/// `refuse`, answers `fail` with `STATUS_NOT_FOUND`, `long` with a length beyond its reply
/// buffer (the backend cuts it), and anything else with `<client>:<input>`.
pub(crate) struct Echo;

impl Filter for Echo {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre())
        .unload_callback(true)
        .validated();
    const MESSAGES: Option<MessageChannel> =
        Some(MessageChannel::new(CHANNEL).max_clients(2).max_message(16).validated());
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        CLIENTS.with(|c| c.borrow_mut().clear());
        Ok(Echo)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::NoPost
    }

    fn client_connect(&self, client: ClientId, context: &[u8]) -> Result<()> {
        let n = number(client);
        log(format!("connect {n} {}", String::from_utf8_lossy(context)));
        if context == b"refuse" {
            CLIENTS.with(|c| c.borrow_mut().retain(|x| *x != client));
            return Err(Error::ACCESS_DENIED);
        }
        Ok(())
    }

    fn client_disconnect(&self, client: ClientId) {
        log(format!("disconnect {}", number(client)));
        CLIENTS.with(|c| {
            if let Some(slot) = c.borrow_mut().iter_mut().find(|x| **x == client) {
                // Keep the number taken, but let a later client reuse the id.
                *slot = ClientId(usize::MAX);
            }
        });
    }

    fn message(&self, client: ClientId, input: &[u8], reply: &mut [u8]) -> Result<usize> {
        let n = number(client);
        log(format!(
            "message {n} {} ({} reply bytes)",
            String::from_utf8_lossy(input),
            reply.len()
        ));
        match input {
            b"fail" => Err(Error::NOT_FOUND),
            b"long" => {
                reply.fill(b'L');
                Ok(reply.len() + 10)
            }
            _ => {
                let answer = format!("{n}:{}", String::from_utf8_lossy(input));
                let len = answer.len().min(reply.len());
                reply.iter_mut().zip(answer.bytes()).for_each(|(r, a)| *r = a);
                Ok(len)
            }
        }
    }

    fn unload(&self, _: fsfilter::UnloadFlags) -> Result<()> {
        log("unload".to_owned());
        Ok(())
    }
}

/// The same filter without a channel.
pub(crate) struct Silent;

impl Filter for Silent {
    const REGISTRATION: Registration = Echo::REGISTRATION;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Silent)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::NoPost
    }
}

/// How user mode reaches a channel in one model.
pub(crate) trait Client {
    /// A connection.
    type Handle: Copy;
    /// Connects to the channel `name` with `context` as `caller`.
    fn connect_as(
        &self,
        m: &mut Machine,
        caller: Caller,
        name: &str,
        context: &[u8],
    ) -> Result<Self::Handle, Status>;
    /// Connects to the channel `name` with `context` as an administrator.
    fn connect(&self, m: &mut Machine, name: &str, context: &[u8]) -> Result<Self::Handle, Status> {
        self.connect_as(m, Caller::Administrator, name, context)
    }
    /// Sends `input`; the reply, at most `capacity` bytes.
    fn send(
        &self,
        m: &mut Machine,
        h: Self::Handle,
        input: &[u8],
        capacity: usize,
    ) -> Result<Vec<u8>, Status>;
    /// Closes the connection.
    fn close(&self, m: &mut Machine, h: Self::Handle);
}

/// A booted machine with `service` installed by `install`.
pub(crate) fn machine(
    install: fn(&mut Machine, ServiceSpec),
    service: &str,
    entry: fsfilter_sim::DriverEntry,
) -> Machine {
    take();
    let mut m = Machine::new(MachineConfig { seed: 31 });
    install(&mut m, ServiceSpec::new(service, entry, "legacy"));
    m.boot();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    take();
    m
}

/// Connect with a context, messages with replies and errors, disconnect on close; nothing left.
pub(crate) fn check_exchange<C: Client>(
    install: fn(&mut Machine, ServiceSpec),
    echo: fsfilter_sim::DriverEntry,
    client: &C,
) {
    let mut m = machine(install, ECHO, echo);
    let h = client.connect(&mut m, CHANNEL, b"hello").expect("connects");
    assert_eq!(take(), ["connect 1 hello"]);
    assert_eq!(client.send(&mut m, h, b"ping", 16), Ok(b"1:ping".to_vec()));
    // A reply cut to the caller's capacity, and one larger than the filter's buffer.
    assert_eq!(client.send(&mut m, h, b"pong", 3), Ok(b"1:p".to_vec()));
    assert_eq!(client.send(&mut m, h, b"long", 4), Ok(b"LLLL".to_vec()));
    // No reply wanted, no input given.
    assert_eq!(client.send(&mut m, h, b"quiet", 0), Ok(Vec::new()));
    assert_eq!(client.send(&mut m, h, b"", 8), Ok(b"1:".to_vec()));
    // The reply buffer is bounded by max_message (16), whatever the caller offers.
    assert_eq!(client.send(&mut m, h, b"wide", 64), Ok(b"1:wide".to_vec()));
    // The filter's error is the call's status.
    assert_eq!(client.send(&mut m, h, b"fail", 8), Err(Status::NOT_FOUND));
    // Input beyond max_message never reaches the filter.
    assert_eq!(client.send(&mut m, h, &[b'x'; 17], 8), Err(Status::INVALID_PARAMETER));
    assert_eq!(
        take(),
        [
            "message 1 ping (16 reply bytes)",
            "message 1 pong (3 reply bytes)",
            "message 1 long (4 reply bytes)",
            "message 1 quiet (0 reply bytes)",
            "message 1  (8 reply bytes)",
            "message 1 wide (16 reply bytes)",
            "message 1 fail (8 reply bytes)",
        ]
    );
    client.close(&mut m, h);
    assert_eq!(take(), ["disconnect 1"]);
    assert_eq!(m.stop(ECHO), StopResult::Unloaded);
    assert_eq!(take(), ["unload"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Two clients at most; a refused connection never disconnects; a third waits for a close.
pub(crate) fn check_clients<C: Client>(
    install: fn(&mut Machine, ServiceSpec),
    echo: fsfilter_sim::DriverEntry,
    client: &C,
) {
    let mut m = machine(install, ECHO, echo);
    assert_eq!(client.connect(&mut m, CHANNEL, b"refuse").err(), Some(Status::ACCESS_DENIED));
    assert_eq!(take(), ["connect 1 refuse"]);
    let a = client.connect(&mut m, CHANNEL, b"a").expect("first");
    let b = client.connect(&mut m, CHANNEL, b"").expect("second, without a context");
    assert_eq!(take(), ["connect 1 a", "connect 2 "]);
    assert_eq!(
        client.connect(&mut m, CHANNEL, b"c").err(),
        Some(Status::CONNECTION_COUNT_LIMIT),
        "max_clients is 2"
    );
    assert!(take().is_empty(), "the filter never sees a connection beyond the limit");
    // A context beyond max_message is refused before the filter sees it.
    let refused = client.connect(&mut m, CHANNEL, &[b'x'; 17]).err();
    assert!(refused.is_some(), "a 17-byte context");
    assert!(take().is_empty());
    assert_eq!(client.send(&mut m, b, b"hi", 8), Ok(b"2:hi".to_vec()));
    client.close(&mut m, a);
    let c = client.connect(&mut m, CHANNEL, b"c").expect("room again");
    assert_eq!(take(), ["message 2 hi (8 reply bytes)", "disconnect 1", "connect 3 c"]);
    client.close(&mut m, b);
    client.close(&mut m, c);
    assert_eq!(take(), ["disconnect 2", "disconnect 3"]);
    assert_eq!(m.stop(ECHO), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A standard user is refused with `STATUS_ACCESS_DENIED` before the filter hears of it and
/// without taking a client's place; an administrator connects; the model's restriction is the
/// same in both (docs/semantics.md, row `messages`).
pub(crate) fn check_standard_user_refused<C: Client>(
    install: fn(&mut Machine, ServiceSpec),
    echo: fsfilter_sim::DriverEntry,
    client: &C,
) {
    let mut m = machine(install, ECHO, echo);
    let a = client.connect_as(&mut m, Caller::Administrator, CHANNEL, b"a").expect("admin");
    for context in [&b"user"[..], b""] {
        assert_eq!(
            client.connect_as(&mut m, Caller::StandardUser, CHANNEL, context).err(),
            Some(Status::ACCESS_DENIED)
        );
    }
    assert_eq!(take(), ["connect 1 a"], "the filter never sees a refused standard user");
    // The refusals took no place: the second of two clients still connects.
    let b = client.connect(&mut m, CHANNEL, b"b").expect("second administrator");
    assert_eq!(client.send(&mut m, b, b"hi", 8), Ok(b"2:hi".to_vec()));
    client.close(&mut m, a);
    client.close(&mut m, b);
    assert_eq!(
        take(),
        ["connect 2 b", "message 2 hi (8 reply bytes)", "disconnect 1", "disconnect 2"]
    );
    assert_eq!(m.stop(ECHO), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A filter without a channel: nothing to connect to.
pub(crate) fn check_no_channel<C: Client>(
    install: fn(&mut Machine, ServiceSpec),
    silent: fsfilter_sim::DriverEntry,
    client: &C,
) {
    let mut m = machine(install, SILENT, silent);
    assert_eq!(
        client.connect(&mut m, CHANNEL, b"hello").err(),
        Some(Status::OBJECT_NAME_NOT_FOUND)
    );
    assert_eq!(m.stop(SILENT), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A second driver whose channel has the same name fails to load with
/// `STATUS_OBJECT_NAME_COLLISION` and gives everything back (`DriverEntry`'s failure path);
/// the first keeps its channel.
pub(crate) fn check_name_taken<C: Client>(
    install: fn(&mut Machine, ServiceSpec),
    echo: fsfilter_sim::DriverEntry,
    client: &C,
) {
    let mut m = machine(install, ECHO, echo);
    install(&mut m, ServiceSpec::new("Echo2", echo, "legacy"));
    assert_eq!(m.start("Echo2"), Status::OBJECT_NAME_COLLISION);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let h = client.connect(&mut m, CHANNEL, b"first").expect("the first driver's channel");
    assert_eq!(client.send(&mut m, h, b"hi", 8), Ok(b"1:hi".to_vec()));
    client.close(&mut m, h);
    assert_eq!(m.stop(ECHO), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
