//! The gate end to end, shared by `minifilter/tests/gate.rs` and `legacy/tests/gate.rs`
//! (included with `#[path]`): each gives a machine with the gate installed in its model and a
//! `connect` for its channel; the service is `fsfilter_sim::MessageServer` in both, decoding with
//! the sample's own protocol (`gate::wire`), so every check holds in both models.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;
use std::rc::Rc;

use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, FsKind, Machine, MachineConfig, MessageServer, RegValue, ServiceSpec, VolumeSpec,
};
use gate::wire::{Question, Stats, Verdict};

/// The gate's service name in these tests.
pub const SERVICE: &str = "Gate";

/// Connects a service to the gate's channel in one model.
pub type Connect = fn(&mut Machine) -> Result<MessageServer, Status>;

/// The name of the service's process: the opens the tests make run in the default user
/// process, which the gate asks about; the service's own are not asked (rule 26).
pub const SERVICE_PROCESS: &str = "service";

/// Connects the service from its own process.
pub fn connect_service(m: &mut Machine, connect: Connect) -> MessageServer {
    let p = m.process(SERVICE_PROCESS).unwrap();
    m.as_process(p, connect).unwrap()
}

/// Closes the service's connection from its process.
pub fn close_service(m: &mut Machine, server: MessageServer) -> Status {
    let p = m.process(SERVICE_PROCESS).unwrap();
    m.as_process(p, |m| server.close(m))
}

/// A machine with `C:` (NTFS, `a.txt`, `secret.txt`, directory `d`) and the gate installed by
/// `install` with `parameters`, started.
pub fn machine(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
    parameters: &[(&str, u32)],
) -> Machine {
    machine_with(install, entry, model, parameters, |_| {})
}

/// A machine as [`machine`]'s, `C:` also holding `redir\b.txt`, with `D:` (`b.txt`, the second
/// disk volume: `\Device\HarddiskVolume2`) and, installed by `redirector` before the gate and so
/// under it, a filter that redirects `C:\redir\*` to `D:` (`sim/testing/reparse.rs`, rule 27).
pub fn machine_with_redirector(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
    redirector: fn(&mut Machine),
) -> Machine {
    machine_with(install, entry, model, &[], |m| {
        m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs).file("b.txt", b"on D"));
        redirector(m);
    })
}

fn machine_with(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
    parameters: &[(&str, u32)],
    before: impl FnOnce(&mut Machine),
) -> Machine {
    let mut m = Machine::new(MachineConfig { seed: 7 });
    m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("a.txt", b"plain")
            .file("secret.txt", b"hidden")
            .file(r"d\b.txt", b"inside")
            .file(r"redir\b.txt", b"on C"),
    );
    before(&mut m);
    let mut spec = ServiceSpec::new(SERVICE, entry, model);
    for (name, value) in parameters {
        spec.parameters.push(((*name).into(), RegValue::Dword(*value)));
    }
    install(&mut m, spec);
    m.boot();
    assert_eq!(m.start(SERVICE), Status::SUCCESS);
    m.new_process(SERVICE_PROCESS).unwrap();
    m
}

/// Opens `path` on `C:` and closes it: the open's status.
pub fn open(m: &mut Machine, path: &str, options: CreateOptions) -> Status {
    let c = m.volume("C:").unwrap();
    match m.open(c, path, options) {
        Ok(h) => {
            m.close_handle(h);
            Status::SUCCESS
        }
        Err(s) => s,
    }
}

/// The names the service was asked about, shared with its closure.
pub type Asked = Rc<RefCell<Vec<String>>>;

/// Serves the gate: each question's name is recorded, and `answer` gives the reply's bytes
/// (`None`: no reply, the sender times out).
pub fn serve(
    m: &mut Machine,
    server: MessageServer,
    answer: impl Fn(&str) -> Option<Vec<u8>> + 'static,
) -> Asked {
    let asked: Asked = Rc::default();
    let seen = asked.clone();
    let status = server.serve(m, 16 + gate::wire::MAX_QUESTION, move |_, msg| {
        let q = Question::parse(&msg.message).unwrap();
        let name: String = q.name_chars().collect();
        let reply = answer(&name);
        seen.borrow_mut().push(name);
        reply
    });
    assert_eq!(status, Status::PENDING);
    asked
}

/// The counters, by `GetStats` on the serving connection (the channel has one client).
pub fn stats(m: &mut Machine, server: MessageServer) -> Stats {
    let reply = match server {
        MessageServer::Port(p) => m.send_message(p, &gate::wire::get_stats(), 64).unwrap(),
        MessageServer::Device(h) => {
            let r =
                m.device_control(h, fsfilter::IOCTL_FSFILTER_MESSAGE, &gate::wire::get_stats(), 64);
            assert_eq!(r.status, Status::SUCCESS);
            r.data
        }
    };
    Stats::decode(&reply).unwrap()
}

/// The service denies names containing "secret": the open of `secret.txt` is refused with
/// `STATUS_ACCESS_DENIED`, `a.txt` opens; directories are not asked about; the counters say so.
pub fn check_allow_and_deny(mut m: Machine, connect: Connect) {
    let server = connect_service(&mut m, connect);
    let asked = serve(&mut m, server, |name| {
        let v = if name.contains("secret") { Verdict::Deny } else { Verdict::Allow };
        Some(v.bytes().to_vec())
    });
    assert_eq!(open(&mut m, "a.txt", CreateOptions::open()), Status::SUCCESS);
    assert_eq!(open(&mut m, "secret.txt", CreateOptions::open()), Status::ACCESS_DENIED);
    assert_eq!(open(&mut m, "d", CreateOptions::directory()), Status::SUCCESS);
    assert_eq!(open(&mut m, r"d\b.txt", CreateOptions::open()), Status::SUCCESS);
    let names = asked.borrow().clone();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names[0].ends_with(r"\a.txt") && names[0].starts_with(r"\Device\"), "{names:?}");
    assert!(names[1].ends_with(r"\secret.txt"), "{names:?}");
    assert!(names[2].ends_with(r"\d\b.txt"), "{names:?}");
    let s = stats(&mut m, server);
    assert_eq!((s.asked, s.allowed, s.denied, s.timed_out, s.failed), (3, 2, 1, 0, 0));
    // The denied file was opened and closed again: a second open is refused again.
    assert_eq!(open(&mut m, "secret.txt", CreateOptions::open()), Status::ACCESS_DENIED);
    assert_eq!(close_service(&mut m, server), Status::SUCCESS);
    m.settle();
}

/// Without a service every open goes through, counted as unasked; after the service leaves, the
/// same.
pub fn check_no_service(mut m: Machine, connect: Connect) {
    assert_eq!(open(&mut m, "secret.txt", CreateOptions::open()), Status::SUCCESS);
    let server = connect_service(&mut m, connect);
    let s = stats(&mut m, server);
    assert_eq!((s.asked, s.unasked), (0, 1));
    assert_eq!(close_service(&mut m, server), Status::SUCCESS);
    m.settle();
    assert_eq!(open(&mut m, "secret.txt", CreateOptions::open()), Status::SUCCESS);
    let server = connect_service(&mut m, connect);
    let s = stats(&mut m, server);
    assert_eq!((s.asked, s.unasked), (0, 2));
    assert_eq!(close_service(&mut m, server), Status::SUCCESS);
}

/// A service that never answers: each open waits `TimeoutMs` (virtual time), then goes through
/// (`FailClosed` 0) or is refused (1); a malformed verdict is a failure, treated the same.
pub fn check_timeouts_and_malformed_replies(mut m: Machine, connect: Connect, fail_closed: bool) {
    let expected = if fail_closed { Status::ACCESS_DENIED } else { Status::SUCCESS };
    let server = connect_service(&mut m, connect);
    let _asked =
        serve(
            &mut m,
            server,
            |name| {
                if name.ends_with("a.txt") { None } else { Some(vec![7, 0, 0, 0]) }
            },
        );
    let before = m.now_ms();
    assert_eq!(open(&mut m, "a.txt", CreateOptions::open()), expected);
    let waited = m.now_ms() - before;
    assert!((250..400).contains(&waited), "waited {waited} ms for a 250 ms timeout");
    assert_eq!(open(&mut m, "secret.txt", CreateOptions::open()), expected);
    let s = stats(&mut m, server);
    assert_eq!((s.asked, s.allowed, s.denied, s.timed_out, s.failed), (2, 0, 0, 1, 1));
    assert_eq!(close_service(&mut m, server), Status::SUCCESS);
    m.settle();
}

/// A service connected but with no get pending: the question is not delivered, the open waits
/// its timeout and goes through; the question is never delivered later.
pub fn check_a_service_that_does_not_read(mut m: Machine, connect: Connect) {
    let server = connect_service(&mut m, connect);
    assert_eq!(open(&mut m, "a.txt", CreateOptions::open()), Status::SUCCESS);
    let asked = serve(&mut m, server, |_| Some(Verdict::Allow.bytes().to_vec()));
    m.settle();
    assert!(asked.borrow().is_empty(), "a timed-out question is never delivered");
    let s = stats(&mut m, server);
    assert_eq!((s.asked, s.timed_out), (1, 1));
    assert_eq!(close_service(&mut m, server), Status::SUCCESS);
    m.settle();
}

/// The service's own opens (its process connected it) are not asked, whatever the service would
/// answer, and are counted as unasked; the same file opened by another process is asked (rule
/// 26, as Microsoft's scanner exempts its service's process).
pub fn check_the_services_own_opens_are_not_asked(mut m: Machine, connect: Connect) {
    let server = connect_service(&mut m, connect);
    let asked = serve(&mut m, server, |_| Some(Verdict::Deny.bytes().to_vec()));
    let service = m.process(SERVICE_PROCESS).unwrap();
    let own = m.as_process(service, |m| open(m, "secret.txt", CreateOptions::open()));
    assert_eq!(own, Status::SUCCESS);
    assert!(asked.borrow().is_empty(), "the service's open is not asked");
    assert_eq!(open(&mut m, "secret.txt", CreateOptions::open()), Status::ACCESS_DENIED);
    assert_eq!(asked.borrow().len(), 1);
    let s = stats(&mut m, server);
    assert_eq!((s.asked, s.denied, s.unasked), (1, 1, 1));
    assert_eq!(close_service(&mut m, server), Status::SUCCESS);
    m.settle();
}

/// A create that a filter under the gate redirects ends `STATUS_REPARSE` (rule 27): nothing is
/// open, so the gate does not ask; the reparsed create that opens `D:\b.txt` is asked once, by
/// its name on `D:`, and its verdict holds (a deny cancels the open).
pub fn check_a_redirected_open_is_asked_once(mut m: Machine, connect: Connect) {
    let server = connect_service(&mut m, connect);
    let asked = serve(&mut m, server, |_| Some(Verdict::Deny.bytes().to_vec()));
    assert_eq!(open(&mut m, r"redir\b.txt", CreateOptions::open()), Status::ACCESS_DENIED);
    assert_eq!(asked.borrow()[..], [r"\Device\HarddiskVolume2\b.txt"]);
    let s = stats(&mut m, server);
    assert_eq!((s.asked, s.denied, s.failed, s.unasked), (1, 1, 0, 0));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(close_service(&mut m, server), Status::SUCCESS);
    m.settle();
}
