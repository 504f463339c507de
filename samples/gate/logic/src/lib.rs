//! gate: an on-access verdict filter whose user-mode service decides, the pattern of Microsoft's
//! scanner and avscan minifilter samples (a kernel component asks, a user-mode service answers),
//! written once for both models.
//!
//! After each successful create of a file by a user-mode requestor (not a directory open, not a
//! volume open) while a service is connected to the channel [`CHANNEL_NAME`], the post-create
//! callback sends the service a question ([`wire`]: the opened name, the desired access, the
//! create's result) with `Services::send_message` (rule 25) and waits for a 4-byte verdict, at
//! most `TimeoutMs` milliseconds; the service's own opens (its process is the create's requestor,
//! rule 26) are not asked. `DENY` cancels the open (`cancel_file_open`, the requester gets
//! `STATUS_ACCESS_DENIED`); `ALLOW` lets it through. A timeout, a service that disconnects, a
//! failed send or a malformed verdict follow `FailClosed`: 0 (the default) lets the open
//! through, 1 cancels it. The service reads the counters ([`wire::Stats`]) with `GetStats`.
//!
//! Mapping to the C samples: `ScannerPortConnect` / `ScannerPortDisconnect` (one client, the
//! port kept in the global data) → [`Filter::client_connect`] / [`Filter::client_disconnect`]
//! (one client, its id in an atomic); `ScannerpScanFileInUserMode`'s `FltSendMessage` with a
//! timeout and `SCANNER_REPLY.SafeToOpen` → [`Gate::ask`] with a [`wire::Verdict`];
//! `ScannerPostCreate`'s `FltCancelFileOpen` → `cancel_file_open(STATUS_ACCESS_DENIED)`. The
//! question carries the name, not the file's contents: the service decides on what it is told.

#![no_std]
#![forbid(unsafe_code)]

pub mod wire;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use fsfilter::{
    ClientId, Error, Filter, Instance, InstanceSetup, Irql, MajorFunction, MessageChannel,
    MessageSent, NameKind, Operation, Parameters, PostFlags, PostOperation, PostOutcome,
    PreOperation, PreOutcome, Registration, RequestorMode, Result, ServiceParameters, Status,
    create,
};

pub use fsfilter::ParameterDoc;

use wire::{QuestionFields, Stats, Verdict, question_flags};

/// The channel's name: the minifilter's communication port `\FsFilterGate`, the legacy control
/// device's symbolic link `\DosDevices\FsFilterGate`.
pub const CHANNEL_NAME: &str = "FsFilterGate";

/// The timeout without a `TimeoutMs` parameter, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;

/// The longest `TimeoutMs`: one minute.
pub const MAX_TIMEOUT_MS: u32 = 60_000;

/// The gate's parameters.
pub const PARAMETERS: &[ParameterDoc] = &[
    ParameterDoc {
        name: "TimeoutMs",
        kind: "REG_DWORD",
        default: "1000",
        description: "Milliseconds an open waits for the service's verdict, 1 to 60000: the time to deliver the question and to receive the answer (FltSendMessage's timeout). The requester's thread is blocked meanwhile.",
    },
    ParameterDoc {
        name: "FailClosed",
        kind: "REG_DWORD",
        default: "0",
        description: "What an open becomes when no verdict comes (timeout, service gone, malformed reply): 0 lets it through, 1 refuses it with STATUS_ACCESS_DENIED.",
    },
];

/// Why the parameters could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// `TimeoutMs` is 0 or above [`MAX_TIMEOUT_MS`].
    TimeoutMs,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParseError::TimeoutMs => write!(f, "TimeoutMs: 1 to {MAX_TIMEOUT_MS}"),
        }
    }
}

/// What the parameters ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `TimeoutMs`.
    pub timeout_ms: u32,
    /// `FailClosed`.
    pub fail_closed: bool,
}

impl Settings {
    /// Reads the parameters.
    pub fn from_parameters(
        p: &dyn ServiceParameters,
    ) -> core::result::Result<Settings, ParseError> {
        let timeout_ms = p.dword("TimeoutMs").unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(ParseError::TimeoutMs);
        }
        Ok(Settings { timeout_ms, fail_closed: p.flag("FailClosed").unwrap_or(false) })
    }
}

/// How one question ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No service was connected, or the open was the connected service's own.
    Unasked,
    /// The service answered.
    Answered(Verdict),
    /// No answer within the timeout.
    TimedOut,
    /// The send failed (the service disconnected) or the verdict was malformed.
    Failed,
}

/// The registration: post-create only.
pub const REGISTRATION: Registration =
    Registration::new().operation(Operation::new(MajorFunction::Create).post()).validated();

/// No client: the value the client slot holds then (a `ClientId` is never 0 in either backend:
/// a port or a pool address).
const NO_CLIENT: usize = 0;

/// The gate.
#[derive(Debug)]
pub struct Gate {
    settings: Settings,
    /// The connected service's id, or [`NO_CLIENT`].
    client: AtomicUsize,
    counters: [AtomicU64; 6],
}

/// Indices into `Gate::counters`, in [`Stats`]' order.
mod counter {
    pub(crate) const ASKED: usize = 0;
    pub(crate) const ALLOWED: usize = 1;
    pub(crate) const DENIED: usize = 2;
    pub(crate) const TIMED_OUT: usize = 3;
    pub(crate) const FAILED: usize = 4;
    pub(crate) const UNASKED: usize = 5;
}

impl Gate {
    /// The gate of `settings`.
    pub const fn new(settings: Settings) -> Gate {
        Gate {
            settings,
            client: AtomicUsize::new(NO_CLIENT),
            counters: [const { AtomicU64::new(0) }; 6],
        }
    }

    /// The settings.
    pub const fn settings(&self) -> Settings {
        self.settings
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let v = |i: usize| self.counters.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        Stats {
            asked: v(counter::ASKED),
            allowed: v(counter::ALLOWED),
            denied: v(counter::DENIED),
            timed_out: v(counter::TIMED_OUT),
            failed: v(counter::FAILED),
            unasked: v(counter::UNASKED),
        }
    }

    fn count(&self, i: usize) {
        if let Some(c) = self.counters.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the create `op` is one the service is asked about: it opened the file, a user-mode
    /// requestor, not a volume open, not a directory asked for as one (`FILE_DIRECTORY_FILE`).
    pub fn qualifies(op: &PostOperation<'_>) -> bool {
        let h = op.header();
        let directory = match h.parameters {
            Parameters::Create(c) => c.create_options() & create::FILE_DIRECTORY_FILE != 0,
            _ => true,
        };
        // `opened`: a create, neither failed nor ended STATUS_REPARSE (a redirection or a
        // reparse point: nothing is open, the reparsed create comes again, rule 27).
        op.opened() && h.requestor_mode == RequestorMode::User && !h.volume_open && !directory
    }

    /// Asks the connected service about the create `op` (at `PASSIVE_LEVEL`).
    /// The connected service's own opens are not asked (rule 26: its process, recorded at its
    /// connection, is the open's requestor), as `ScannerPreCreate` exempts its service.
    pub fn ask(&self, op: &PostOperation<'_>) -> Outcome {
        let client = self.client.load(Ordering::Acquire);
        let services = op.services();
        let own = client != NO_CLIENT
            && services
                .requestor_process()
                .is_some_and(|p| services.client_process(ClientId(client)) == Some(p));
        if client == NO_CLIENT || own {
            self.count(counter::UNASKED);
            return Outcome::Unasked;
        }
        let h = op.header();
        let mut fields = QuestionFields {
            flags: 0,
            desired_access: match h.parameters {
                Parameters::Create(c) => c.desired_access,
                _ => 0,
            },
            information: op.result().information as u32,
        };
        let mut question = [0u8; wire::MAX_QUESTION];
        let len = match services.file_name(NameKind::Opened) {
            Ok(info) => wire::encode_question(fields, info.name().units(), &mut question),
            Err(_) => {
                fields.flags |= question_flags::NAME_AS_REQUESTED;
                let units = h.file_name.map_or(&[][..], |n| n.units());
                wire::encode_question(fields, units, &mut question)
            }
        };
        self.count(counter::ASKED);
        let mut reply = [0u8; wire::VERDICT_SIZE];
        let sent = services.send_message(
            ClientId(client),
            question.get(..len).unwrap_or(&[]),
            Some(&mut reply),
            Some(self.settings.timeout_ms),
        );
        let outcome = match sent {
            Ok(MessageSent::Delivered(n)) => {
                reply.get(..n).and_then(Verdict::parse).map_or(Outcome::Failed, Outcome::Answered)
            }
            Ok(MessageSent::TimedOut) => Outcome::TimedOut,
            Err(_) => Outcome::Failed,
        };
        self.count(match outcome {
            Outcome::Answered(Verdict::Allow) => counter::ALLOWED,
            Outcome::Answered(Verdict::Deny) => counter::DENIED,
            Outcome::TimedOut => counter::TIMED_OUT,
            Outcome::Failed | Outcome::Unasked => counter::FAILED,
        });
        outcome
    }

    /// Whether an open that ended so is refused.
    pub const fn refuses(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Unasked | Outcome::Answered(Verdict::Allow) => false,
            Outcome::Answered(Verdict::Deny) => true,
            Outcome::TimedOut | Outcome::Failed => self.settings.fail_closed,
        }
    }

    /// The post-create work at `PASSIVE_LEVEL`.
    fn after_create(&self, op: &mut PostOperation<'_>) {
        if !Gate::qualifies(op) {
            return;
        }
        let outcome = self.ask(op);
        if self.refuses(outcome) {
            // FltCancelFileOpen / IoCancelFileOpen: the file system closes the file, the
            // requester gets STATUS_ACCESS_DENIED.
            let _ = op.services().cancel_file_open(Status::ACCESS_DENIED);
        }
    }

    /// Answers the service's command: `GetStats`; anything else is `STATUS_INVALID_PARAMETER`.
    pub fn answer(&self, input: &[u8], reply: &mut [u8]) -> Result<usize> {
        match input.get(..4) {
            Some(c) if c == wire::get_stats() => self.stats().encode(reply),
            _ => Err(Error::INVALID_PARAMETER),
        }
    }
}

impl Filter for Gate {
    const REGISTRATION: Registration = REGISTRATION;
    const NAME_QUERIES: bool = true;
    const PROCESS_QUERIES: bool = true;
    const MESSAGES: Option<MessageChannel> = Some(
        MessageChannel::new(CHANNEL_NAME)
            .max_clients(1)
            .max_message(1024)
            .sends_messages()
            .validated(),
    );
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Gate> {
        Settings::from_parameters(parameters).map(Gate::new).map_err(|_| Error::INVALID_PARAMETER)
    }

    fn instance_setup(&self, _setup: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _instance: &Instance<'_, ()>,
        _op: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _context: (),
        flags: PostFlags,
    ) -> PostOutcome<()> {
        if flags.contains(PostFlags::DRAINING) || !Gate::qualifies(op) {
            return PostOutcome::Finished;
        }
        // Names and sends need PASSIVE_LEVEL; a post-create above it (legacy completion at
        // DISPATCH_LEVEL) continues in a worker.
        if op.services().irql() == Irql::PASSIVE {
            self.after_create(op);
            PostOutcome::Finished
        } else {
            PostOutcome::WhenSafe(())
        }
    }

    fn post_operation_when_safe(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _context: (),
    ) -> PostOutcome<()> {
        self.after_create(op);
        PostOutcome::Finished
    }

    /// One service at a time (`max_clients(1)`): its id is where the callbacks find it.
    fn client_connect(&self, client: ClientId, _context: &[u8]) -> Result<()> {
        self.client.store(client.0, Ordering::Release);
        Ok(())
    }

    fn client_disconnect(&self, client: ClientId) {
        let _ =
            self.client.compare_exchange(client.0, NO_CLIENT, Ordering::AcqRel, Ordering::Relaxed);
    }

    fn message(&self, _client: ClientId, input: &[u8], reply: &mut [u8]) -> Result<usize> {
        self.answer(input, reply)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    extern crate std;

    use super::*;
    use fsfilter::testing::{self, FakeServices, Sent};
    use fsfilter::{
        CreateParameters, FileName, IoStatus, OperationHeader, ParameterList, ParameterValue as V,
        ProcessId,
    };
    use std::string::String;
    use std::vec::Vec;
    use wire::Question;

    const NAME: &str = r"\Device\HarddiskVolume1\dir\report.txt";

    /// What the service answers: a reply, none in time (`Ok(None)`), or an error.
    type Reply = core::result::Result<Option<Vec<u8>>, Error>;

    /// Services whose service answers `reply`, recording the question and the cancellation;
    /// the open's requestor is process 0x1000 and client 0x77's is 0x1004 (rule 26).
    fn fake(reply: Reply) -> FakeServices<'static> {
        fake_of(reply, (Some(0x1000), Some(0x1004)))
    }

    /// [`fake`] with the open's requestor and the process of client 0x77 `processes`.
    fn fake_of(reply: Reply, processes: (Option<u32>, Option<u32>)) -> FakeServices<'static> {
        let f = FakeServices::new().named(NAME).requestor(processes.0.map(ProcessId));
        let f = match processes.1 {
            Some(p) => f.client(ClientId(0x77), ProcessId(p)),
            None => f,
        };
        match reply {
            Ok(Some(r)) => f.replying(&r),
            Ok(None) => f.timing_out(),
            Err(e) => f.refusing_send(e),
        }
    }

    const REQUESTED: [u16; 5] = [b'a' as u16, b'.' as u16, b't' as u16, b'x' as u16, b't' as u16];

    fn header(options: u32, mode: RequestorMode, volume_open: bool) -> OperationHeader<'static> {
        OperationHeader {
            requestor_mode: mode,
            file_name: Some(FileName::new(&REQUESTED)),
            volume_open,
            stream: 0x6000,
            parameters: Parameters::Create(CreateParameters {
                desired_access: 0x12_0089,
                options,
                ..CreateParameters::default()
            }),
            ..testing::irp(MajorFunction::Create)
        }
    }

    fn gate(values: &[(&str, V<'_>)]) -> Gate {
        <Gate as Filter>::load(&ParameterList { service: "Gate", values }).unwrap()
    }

    /// A create through the gate's post callback with `status`.
    fn post(gate: &Gate, h: OperationHeader<'static>, status: Status, services: &FakeServices<'_>) {
        post_result(gate, h, IoStatus { status, information: create::FILE_OPENED }, services);
    }

    /// A create through the gate's post callback that ended with `result`.
    fn post_result(
        gate: &Gate,
        h: OperationHeader<'static>,
        result: IoStatus,
        services: &FakeServices<'_>,
    ) {
        let instance = testing::instance();
        let _ = testing::post(gate, &instance, (h, result), services, (), PostFlags::empty());
    }

    fn open(gate: &Gate, services: &FakeServices<'_>) {
        post(gate, header(0, RequestorMode::User, false), Status::SUCCESS, services);
    }

    #[test]
    fn a_deny_cancels_the_open_and_an_allow_does_not() {
        let g = gate(&[]);
        g.client_connect(ClientId(0x77), b"").unwrap();
        let deny = fake(Ok(Some(Verdict::Deny.bytes().to_vec())));
        open(&g, &deny);
        assert_eq!(deny.cancelled(), Some(Status::ACCESS_DENIED));
        let asked = deny.sent();
        let Sent { client, message, timeout_ms: timeout } = &asked[0];
        assert_eq!((client.0, *timeout), (0x77, Some(DEFAULT_TIMEOUT_MS)));
        let q = Question::parse(message).unwrap();
        assert_eq!(q.name_chars().collect::<String>(), NAME);
        assert_eq!(
            (q.fields.desired_access, q.fields.information, q.fields.flags),
            (0x12_0089, 1, 0)
        );
        let allow = fake(Ok(Some(Verdict::Allow.bytes().to_vec())));
        open(&g, &allow);
        assert_eq!(allow.cancelled(), None);
        let s = g.stats();
        assert_eq!(
            (s.asked, s.allowed, s.denied, s.timed_out, s.failed, s.unasked),
            (2, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn the_services_own_opens_are_unasked() {
        let g = gate(&[]);
        g.client_connect(ClientId(0x77), b"").unwrap();
        // The connected service's process opens: not asked, counted as unasked.
        let own = fake_of(Ok(Some(Verdict::Deny.bytes().to_vec())), (Some(0x1004), Some(0x1004)));
        open(&g, &own);
        assert!(own.sent().is_empty());
        assert_eq!(own.cancelled(), None);
        // No requesting thread, or a client whose process is unknown: asked.
        for processes in [(None, None), (None, Some(0x1004)), (Some(0x1004), None)] {
            let other = fake_of(Ok(Some(Verdict::Allow.bytes().to_vec())), processes);
            open(&g, &other);
            assert_eq!(other.sent().len(), 1, "{processes:?}");
        }
        let s = g.stats();
        assert_eq!((s.asked, s.allowed, s.unasked), (3, 3, 1));
    }

    #[test]
    fn only_successful_user_mode_file_opens_are_asked() {
        let g = gate(&[]);
        g.client_connect(ClientId(1), b"").unwrap();
        let f = fake(Ok(Some(Verdict::Deny.bytes().to_vec())));
        post(&g, header(0, RequestorMode::User, false), Status::OBJECT_NAME_NOT_FOUND, &f);
        post(&g, header(0, RequestorMode::Kernel, false), Status::SUCCESS, &f);
        post(&g, header(0, RequestorMode::User, true), Status::SUCCESS, &f);
        post(
            &g,
            header(create::FILE_DIRECTORY_FILE, RequestorMode::User, false),
            Status::SUCCESS,
            &f,
        );
        assert!(f.sent().is_empty());
        assert_eq!(f.cancelled(), None);
        assert_eq!(g.stats(), Stats::default());
    }

    #[test]
    fn a_create_that_ended_status_reparse_is_not_asked() {
        // A redirection (or a reparse point) ends the create with STATUS_REPARSE, a success
        // status on a file object that is not open: the reparsed create is the one to ask about,
        // and there is no open to cancel (rule 27).
        let g = gate(&[]);
        g.client_connect(ClientId(1), b"").unwrap();
        let f = fake(Ok(Some(Verdict::Deny.bytes().to_vec())));
        post_result(&g, header(0, RequestorMode::User, false), IoStatus::reparse(), &f);
        let tagged = IoStatus { status: Status::REPARSE, information: 0xA000_000C };
        post_result(&g, header(0, RequestorMode::User, false), tagged, &f);
        assert!(f.sent().is_empty());
        assert_eq!(f.cancelled(), None);
        assert_eq!(g.stats(), Stats::default());
        // The reparsed create that opens the file is asked.
        open(&g, &f);
        assert_eq!((f.sent().len(), f.cancelled()), (1, Some(Status::ACCESS_DENIED)));
    }

    #[test]
    fn without_a_client_opens_are_unasked_and_a_disconnect_forgets_the_client() {
        let g = gate(&[]);
        let f = fake(Ok(Some(Verdict::Deny.bytes().to_vec())));
        open(&g, &f);
        g.client_connect(ClientId(5), b"").unwrap();
        g.client_disconnect(ClientId(6));
        open(&g, &f);
        g.client_disconnect(ClientId(5));
        open(&g, &f);
        assert_eq!(f.sent().len(), 1, "asked only while 5 was connected");
        let s = g.stats();
        assert_eq!((s.asked, s.denied, s.unasked), (1, 1, 2));
    }

    #[test]
    fn no_verdict_follows_fail_closed() {
        let bad: [Reply; 4] = [
            Ok(None),
            Err(Error::new(Status::PORT_DISCONNECTED).unwrap()),
            Ok(Some(std::vec![2, 0, 0, 0])),
            Ok(Some(std::vec![1, 0])),
        ];
        for fail_closed in [0, 1] {
            let g = gate(&[("FailClosed", V::Dword(fail_closed)), ("TimeoutMs", V::Dword(30))]);
            g.client_connect(ClientId(1), b"").unwrap();
            for reply in bad.clone() {
                let f = fake(reply);
                open(&g, &f);
                assert_eq!(f.sent()[0].timeout_ms, Some(30));
                let refused = (fail_closed == 1).then_some(Status::ACCESS_DENIED);
                assert_eq!(f.cancelled(), refused);
            }
            let s = g.stats();
            assert_eq!((s.asked, s.timed_out, s.failed), (4, 1, 3));
        }
    }

    #[test]
    fn without_an_opened_name_the_requested_one_is_sent_and_flagged() {
        let g = gate(&[]);
        g.client_connect(ClientId(1), b"").unwrap();
        let f = fake(Ok(Some(Verdict::Allow.bytes().to_vec())))
            .refusing_names(Error::FLT_INVALID_NAME_REQUEST);
        open(&g, &f);
        let asked = f.sent();
        let q = Question::parse(&asked[0].message).unwrap();
        assert_eq!(q.name_chars().collect::<String>(), "a.txt");
        assert_eq!(q.fields.flags, question_flags::NAME_AS_REQUESTED);
    }

    #[test]
    fn get_stats_and_parameters() {
        let g = gate(&[]);
        let mut reply = [0u8; 64];
        let n = g.message(ClientId(1), &wire::get_stats(), &mut reply).unwrap();
        assert_eq!(Stats::decode(&reply[..n]), Ok(Stats::default()));
        assert_eq!(
            g.message(ClientId(1), &[2, 0, 0, 0], &mut reply),
            Err(Error::INVALID_PARAMETER)
        );
        assert_eq!(g.message(ClientId(1), &[1], &mut reply), Err(Error::INVALID_PARAMETER));
        assert!(g.message(ClientId(1), &wire::get_stats(), &mut reply[..8]).is_err());
        let p = |values: &[(&str, V<'_>)]| {
            Settings::from_parameters(&ParameterList { service: "Gate", values })
        };
        assert_eq!(p(&[]), Ok(Settings { timeout_ms: 1000, fail_closed: false }));
        assert_eq!(p(&[("TimeoutMs", V::Dword(0))]), Err(ParseError::TimeoutMs));
        assert_eq!(p(&[("TimeoutMs", V::Dword(60_001))]), Err(ParseError::TimeoutMs));
        assert_eq!(p(&[("TimeoutMs", V::Dword(60_000))]).map(|s| s.timeout_ms), Ok(60_000));
        assert_eq!(p(&[("FailClosed", V::Dword(1))]).map(|s| s.fail_closed), Ok(true));
        let names: Vec<_> = PARAMETERS.iter().map(|d| d.name).collect();
        assert_eq!(names, ["TimeoutMs", "FailClosed"]);
        assert!(<Gate as Filter>::MESSAGES.unwrap().sends);
    }
}
