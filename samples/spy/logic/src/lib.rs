//! spy: FileSpy's and MiniSpy's operation log, written once for both models, with a user-mode
//! reader.
//!
//! Every operation the filter sees becomes a record: its sequence number, major and minor
//! function, how it arrived (IRP, fast I/O, FsFilter callback), the IRP's and the callback data's
//! flags, the requestor mode, the requesting process (`Services::requestor_process`, declared by
//! `PROCESS_QUERIES`), the file object, the file's opened name when the name can be had
//! (cut to [`NAME_UNITS`] UTF-16 units), and from the post callback the status and information.
//! The records live in a fixed ring of `MaxRecords` slots ([`DEFAULT_RECORDS`] by default, at
//! most [`MAX_RECORDS`]) in a load buffer the backend allocates once at load, from non-paged pool
//! (`ServiceParameters::allocate`, docs/decisions/0009): nothing is allocated per operation, and
//! the filter value itself stays small. A reader connects to the message channel
//! [`CHANNEL_NAME`] and sends `GetLog` ([`wire`]) to take as many whole records as fit its reply.
//!
//! What the framework does not expose is not recorded: the originating thread and the times
//! (MiniSpy's `ThreadId`, `OriginatingTime`, `CompletionTime`). MiniSpy's `ProcessId` is.
//!
//! # The lock
//! The log is shared by every callback and the reader. Sample logic may not use unsafe code nor
//! `shared/kernel` (whose `SpinLock` raises to `DISPATCH_LEVEL`), so the log is behind the `spin`
//! crate's mutex, which does not raise the IRQL. A holder can then be interrupted by a post
//! callback at `DISPATCH_LEVEL` on its own processor, which must never wait for it: callbacks
//! only *try* the lock, a bounded number of times ([`LOCK_TRIES`], at any IRQL), and never wait.
//! A pre callback that finds it busy counts its operation as dropped. A post callback that finds
//! it busy leaves the operation's identity in one of [`LOST_POSTS`] lock-free slots, and the next
//! holder of the lock completes that record without a result (no `POST` flag, status 0) before
//! anything else: the record does not wait for ever, and no later operation at the same address
//! (a recycled IRP or callback data, whose pre has to take the lock first) can be completed in
//! its place. Only when all those slots are taken does a record stay in flight.

#![no_std]
#![forbid(unsafe_code)]

pub mod wire;

mod ring;

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use fsfilter::{
    ClientId, Error, Filter, Instance, InstanceSetup, Irql, LoadBuffer, MajorFunction,
    MessageChannel, NameKind, OperationKind, PostFlags, PostOperation, PostOutcome, PreOperation,
    PreOutcome, Registration, RequestorMode, Result, ServiceParameters, Status,
};
use spin::mutex::{SpinMutex, SpinMutexGuard};

pub use fsfilter::ParameterDoc;

use ring::{Ring, Slot};
use wire::{Command, RecordFields, record_flags};

/// The longest name a record keeps, in UTF-16 units (longer names are cut, and flagged).
pub const NAME_UNITS: usize = 48;

/// The records the log holds without a `MaxRecords` parameter: MiniSpy's default (mspyKern.h,
/// `DEFAULT_MAX_RECORDS_TO_ALLOCATE`).
pub const DEFAULT_RECORDS: u32 = 500;

/// The most records `MaxRecords` may ask for: 10,000 slots, 1.6 MiB of non-paged pool.
pub const MAX_RECORDS: u32 = 10_000;

/// The bytes of one record's slot in the log's load buffer: the longest record (56 bytes and a
/// name of [`NAME_UNITS`] units) and 16 bytes of bookkeeping.
pub const SLOT_BYTES: usize = ring::SLOT_SIZE;

/// The message channel's name: the minifilter's communication port `\FsFilterSpy`, the legacy
/// control device's symbolic link `\DosDevices\FsFilterSpy`.
pub const CHANNEL_NAME: &str = "FsFilterSpy";

/// How many times a callback (or the reader) tries the lock before it gives up: a few
/// microseconds of spinning, bounded, so that a callback at `DISPATCH_LEVEL` that interrupted the
/// holder on its own processor gives up instead of waiting for ever.
const LOCK_TRIES: u32 = 1000;

/// How many post callbacks that found the log busy wait for the next holder of the lock.
const LOST_POSTS: usize = 4;

/// The spy's parameters.
pub const PARAMETERS: &[ParameterDoc] = &[
    ParameterDoc {
        name: "MaxRecords",
        kind: "REG_DWORD",
        default: "500",
        description: "Records held until a reader takes them, 1 to 10000, in a buffer of 168 bytes a record allocated once at load from non-paged pool (MiniSpy and FileSpy read a MaxRecords value too, 500 by default in MiniSpy); operations seen while the log is full are counted as dropped.",
    },
    ParameterDoc {
        name: "Names",
        kind: "REG_DWORD",
        default: "1",
        description: "1 asks for each operation's opened file name (FLT_FILE_NAME_OPENED) in the pre callback; 0 records no names. Read as a DWORD only: a value of another type is ignored (names are asked for).",
    },
];

/// Why the parameters could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// `MaxRecords` is 0 or above [`MAX_RECORDS`].
    MaxRecords,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParseError::MaxRecords => write!(f, "MaxRecords: 1 to {MAX_RECORDS}"),
        }
    }
}

/// What the parameters ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The records the log holds (`MaxRecords`).
    pub max_records: u32,
    /// Whether records carry names (`Names`).
    pub names: bool,
}

impl Settings {
    /// Reads the parameters.
    pub fn from_parameters(
        p: &dyn ServiceParameters,
    ) -> core::result::Result<Settings, ParseError> {
        let max_records = p.dword("MaxRecords").unwrap_or(DEFAULT_RECORDS);
        if max_records == 0 || max_records > MAX_RECORDS {
            return Err(ParseError::MaxRecords);
        }
        // A DWORD only, as `MaxRecords`: `ServiceParameters::flag` would also read the words of
        // a REG_SZ, and with them the backend's string reading, which spy-legacy.sys has no
        // room for beside the process queries (README.md, "Parameters").
        Ok(Settings { max_records, names: p.dword("Names").is_none_or(|v| v != 0) })
    }

    /// The bytes of the log's buffer.
    pub const fn buffer_bytes(&self) -> usize {
        self.max_records as usize * SLOT_BYTES
    }
}

/// The log.
struct Log {
    ring: Ring<LoadBuffer>,
}

/// The spy.
pub struct Spy {
    log: SpinMutex<Log>,
    /// The last sequence number given.
    sequence: AtomicU64,
    /// Operations dropped because the log was busy, not yet reported.
    busy: AtomicU32,
    /// The identities of operations whose post callback found the log busy (0: a free slot),
    /// completed without a result by the next holder of the lock.
    lost: [AtomicUsize; LOST_POSTS],
    names: bool,
}

impl core::fmt::Debug for Spy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Spy").field("names", &self.names).finish_non_exhaustive()
    }
}

impl Spy {
    /// The spy of `settings`, its log in `buffer` (as many records as `settings` asks for and
    /// the buffer holds).
    pub fn new(settings: Settings, buffer: LoadBuffer) -> Spy {
        let ring = Ring::new(buffer, settings.max_records as usize);
        Spy {
            log: SpinMutex::new(Log { ring }),
            sequence: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            lost: [const { AtomicUsize::new(0) }; LOST_POSTS],
            names: settings.names,
        }
    }

    /// The most records held at once.
    pub fn max_records(&self) -> usize {
        self.lock().map_or(0, |l| l.ring.capacity())
    }

    /// The log, unless it stays busy for [`LOCK_TRIES`] tries; the records whose post callback
    /// found it busy are completed (without a result) first.
    fn lock(&self) -> Option<SpinMutexGuard<'_, Log>> {
        for _ in 0..LOCK_TRIES {
            if let Some(mut guard) = self.log.try_lock() {
                for lost in &self.lost {
                    if lost.load(Ordering::Relaxed) != 0 {
                        let op = lost.swap(0, Ordering::Acquire);
                        guard.ring.complete(op, None, 0, 0, 0);
                    }
                }
                return Some(guard);
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Answers a reader's message: `GetLog` fills `reply` with whole records, `GetVersion` with
    /// the protocol version; anything else is `STATUS_INVALID_PARAMETER`.
    pub fn answer(&self, input: &[u8], reply: &mut [u8]) -> Result<usize> {
        match Command::parse(input)? {
            Command::GetVersion => wire::encode_version(reply),
            Command::GetLog => {
                let Some(mut log) = self.lock() else {
                    return Err(Error::new(Status::DEVICE_NOT_READY).unwrap_or(Error::UNSUCCESSFUL));
                };
                log.ring.count_drops(self.busy.swap(0, Ordering::Relaxed));
                log.ring.take(reply).ok_or_else(wire::buffer_too_small)
            }
        }
    }

    /// Records the pre phase of `op`; `post` when a post callback will complete the record.
    fn record_pre(&self, op: &PreOperation<'_, ()>, post: bool) {
        let h = op.header();
        let mut flags = 0;
        if h.synchronous {
            flags |= record_flags::SYNCHRONOUS;
        }
        let fields = RecordFields {
            major: h.major.code(),
            minor: h.minor,
            kind: match h.kind {
                OperationKind::Irp => 0,
                OperationKind::FastIo => 1,
                OperationKind::FsFilter => 2,
            },
            requestor_mode: match h.requestor_mode {
                RequestorMode::Kernel => 0,
                RequestorMode::User => 1,
            },
            flags,
            irp_flags: h.irp_flags.bits(),
            data_flags: h.data_flags.bits(),
            file: h.file as u64,
            // 0 when the operation has no requesting thread (rule 26).
            process: op.services().requestor_process().map_or(0, |p| p.0),
            ..RecordFields::default()
        };
        let mut slot = Slot::new(fields, h.id, post);
        // The name is asked for before the lock is taken: the query may send a request down.
        if !self.names {
            slot.fields.name_status = Status::NOT_SUPPORTED.0;
        } else if h.irql > Irql::PASSIVE {
            // Names are only at PASSIVE_LEVEL (rule 22): do not even ask.
            slot.fields.name_status = Status::INVALID_DEVICE_STATE.0;
        } else {
            match op.services().file_name(NameKind::Opened) {
                Ok(info) => {
                    slot.fields.flags |= record_flags::NAME;
                    if slot.set_name(info.name().units()) {
                        slot.fields.flags |= record_flags::NAME_TRUNCATED;
                    }
                }
                Err(e) => slot.fields.name_status = e.status().0,
            }
        }
        // Numbered when recorded, under the lock: the ring's order is the numbers' order, even
        // when another operation was recorded while this one waited for its name. A dropped
        // operation takes its number too (the gap shows it).
        let next = || self.sequence.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        match self.lock() {
            Some(mut log) => {
                slot.fields.sequence = next();
                log.ring.push(&slot);
            }
            None => {
                next();
                self.busy.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Filter for Spy {
    /// Every operation passThrough registers, pre and post, as MiniSpy records them all; a
    /// constant, so that the drivers carry no run-time registration code.
    const REGISTRATION: Registration = Registration::new().every_operation(true, true).validated();
    const NAME_QUERIES: bool = true;
    const LOAD_BUFFERS: bool = true;
    /// Each record's requesting process (MiniSpy's `ProcessId`; decision 0011).
    const PROCESS_QUERIES: bool = true;
    const MESSAGES: Option<MessageChannel> =
        Some(MessageChannel::new(CHANNEL_NAME).max_clients(1).max_message(4096).validated());
    type InstanceContext = ();
    type CompletionContext = ();

    /// Reads the parameters, then asks for the log's buffer: a refusal fails the load with its
    /// status.
    fn load(parameters: &dyn ServiceParameters) -> Result<Spy> {
        let settings =
            Settings::from_parameters(parameters).map_err(|_| Error::INVALID_PARAMETER)?;
        let buffer = parameters.allocate(settings.buffer_bytes())?;
        Ok(Spy::new(settings, buffer))
    }

    fn instance_setup(&self, _setup: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        // Every operation has a post callback but the shutdown (the registration).
        self.record_pre(op, op.major() != MajorFunction::Shutdown);
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _context: (),
        flags: PostFlags,
    ) -> PostOutcome<()> {
        let h = op.header();
        let result = op.result();
        let mut add = record_flags::POST;
        if flags.contains(PostFlags::DRAINING) {
            add |= record_flags::DRAINING;
        }
        if let Some(mut log) = self.lock() {
            let information = result.information as u64;
            log.ring.complete(h.id, Some(h.major.code()), add, result.status.0, information);
        } else {
            // Left to the next holder of the lock (the module's documentation); when every slot
            // is taken the record stays in flight.
            let free =
                |l: &AtomicUsize| l.compare_exchange(0, h.id, Ordering::Release, Ordering::Relaxed);
            let _ = self.lost.iter().any(|l| free(l).is_ok());
        }
        PostOutcome::Finished
    }

    fn client_connect(&self, _client: ClientId, _context: &[u8]) -> Result<()> {
        Ok(())
    }

    fn message(&self, _client: ClientId, input: &[u8], reply: &mut [u8]) -> Result<usize> {
        self.answer(input, reply)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use fsfilter::testing::{self, FakeParameters, FakeServices};
    use fsfilter::{
        CallbackDataFlags, IoStatus, IrpFlags, OperationHeader, ParameterList, ParameterValue as V,
        ProcessId, Services,
    };
    use std::string::String;
    use std::vec::Vec;
    use wire::LogReply;

    /// The name every query answers.
    const NAME: &str = r"\Device\HarddiskVolume1\dir\report.txt";

    /// Services that answer names at PASSIVE_LEVEL.
    fn passive() -> FakeServices<'static> {
        FakeServices::new().named(NAME)
    }

    fn header(major: MajorFunction, id: usize, irql: Irql) -> OperationHeader<'static> {
        OperationHeader { irql, id, ..testing::irp(major) }
    }

    fn allocating<'a>(values: &'a [(&'a str, V<'a>)]) -> FakeParameters<'a> {
        FakeParameters::new("Spy", values)
    }

    fn spy(values: &[(&str, V<'_>)]) -> Spy {
        <Spy as Filter>::load(&allocating(values)).unwrap()
    }

    /// One operation through the spy: pre, then post with `result` (unless `None`).
    fn operate(
        spy: &Spy,
        h: OperationHeader<'static>,
        services: &dyn Services,
        result: Option<IoStatus>,
    ) {
        let instance = testing::instance();
        assert!(matches!(testing::pre(spy, &instance, h, services), PreOutcome::WithPost(())));
        if let Some(result) = result {
            let _ = testing::post(spy, &instance, (h, result), services, (), PostFlags::empty());
        }
    }

    fn get_log(spy: &Spy, capacity: usize) -> Vec<u8> {
        let mut reply = std::vec![0u8; capacity];
        let n = spy.message(ClientId(1), &Command::GetLog.message(), &mut reply).unwrap();
        reply.truncate(n);
        reply
    }

    #[test]
    fn records_what_pre_and_post_saw() {
        let spy = spy(&[]);
        let ok = IoStatus { status: Status::SUCCESS, information: 5 };
        operate(&spy, header(MajorFunction::Create, 0x100, Irql::PASSIVE), &passive(), Some(ok));
        let eof = IoStatus::new(Status::END_OF_FILE);
        operate(&spy, header(MajorFunction::Read, 0x200, Irql::PASSIVE), &passive(), Some(eof));
        let refused = passive().refusing_names(Error::FLT_INVALID_NAME_REQUEST);
        operate(&spy, header(MajorFunction::Close, 0x300, Irql::PASSIVE), &refused, Some(ok));
        let reply = get_log(&spy, 4096);
        let log = LogReply::parse(&reply).unwrap();
        assert_eq!((log.header.record_count, log.header.dropped, log.header.pending), (3, 0, 0));
        let records: Vec<_> = log.records().map(Result::unwrap).collect();
        let create = records[0];
        assert_eq!(create.fields.sequence, 1);
        assert_eq!(create.fields.major, MajorFunction::Create.code());
        assert_eq!(create.fields.requestor_mode, 1);
        assert_eq!(create.fields.irp_flags, IrpFlags::SYNCHRONOUS_API.bits());
        assert_eq!(create.fields.data_flags, CallbackDataFlags::IRP_OPERATION.bits());
        assert_eq!((create.fields.status, create.fields.information), (0, 5));
        assert_eq!(create.fields.file, 0x5000);
        assert_eq!(
            create.fields.flags,
            record_flags::POST | record_flags::NAME | record_flags::SYNCHRONOUS
        );
        assert_eq!(create.name_chars().collect::<String>(), &NAME[..NAME.len().min(NAME_UNITS)]);
        assert_eq!(records[1].fields.status, Status::END_OF_FILE.0);
        // Refused: recorded without a name, the refusal's status kept.
        let close = records[2];
        assert!(!close.has_name());
        assert_eq!(close.fields.name_status, Status::FLT_INVALID_NAME_REQUEST.0);
        assert_eq!(close.name_units().count(), 0);
        assert_eq!(get_log(&spy, 4096).len(), wire::LOG_HEADER_SIZE, "taken once");
    }

    #[test]
    fn records_carry_the_requesting_process() {
        // MiniSpy's records carry the ProcessId: the spy records `requestor_process`, 0 for an
        // operation without a requesting thread.
        // Declared, or the backends answer None (decision 0011).
        const { assert!(Spy::PROCESS_QUERIES) };
        let spy = spy(&[]);
        let ok = Some(IoStatus::new(Status::SUCCESS));
        let editor = passive().requestor(Some(ProcessId(0x1004)));
        operate(&spy, header(MajorFunction::Create, 0x100, Irql::PASSIVE), &editor, ok);
        let system = passive().at_irql(Irql::APC).requestor(Some(ProcessId::SYSTEM));
        operate(&spy, header(MajorFunction::Write, 0x200, Irql::APC), &system, ok);
        operate(&spy, header(MajorFunction::Read, 0x300, Irql::PASSIVE), &passive(), ok);
        let reply = get_log(&spy, 4096);
        let log = LogReply::parse(&reply).unwrap();
        let got: Vec<u32> = log.records().map(|r| r.unwrap().fields.process).collect();
        assert_eq!(got, [0x1004, 4, 0]);
        let mut v = [0u8; wire::VERSION_REPLY_SIZE];
        assert_eq!(spy.message(ClientId(1), &Command::GetVersion.message(), &mut v), Ok(4));
        assert_eq!(wire::decode_version(&v), Ok((1, 1)), "1.1: the process field");
    }

    #[test]
    fn long_names_are_cut_and_flagged() {
        assert!(NAME.len() < NAME_UNITS, "the fake name fits");
        let mut s = Slot::EMPTY;
        let long: Vec<u16> = NAME.repeat(2).encode_utf16().collect();
        assert!(s.set_name(&long));
        assert_eq!(s.name().len(), NAME_UNITS);
    }

    #[test]
    fn no_name_above_passive_and_none_when_names_are_off() {
        let spy_ = spy(&[]);
        let apc = passive().at_irql(Irql::APC);
        let h = header(MajorFunction::Write, 0x100, Irql::APC);
        operate(&spy_, h, &apc, Some(IoStatus::new(Status::SUCCESS)));
        let off = spy(&[("Names", V::Dword(0))]);
        operate(&off, header(MajorFunction::Write, 0x100, Irql::PASSIVE), &passive(), None);
        let reply = get_log(&spy_, 4096);
        let r = LogReply::parse(&reply).unwrap().records().next().unwrap().unwrap();
        assert_eq!((r.has_name(), r.fields.name_status), (false, Status::INVALID_DEVICE_STATE.0));
        // Without its post the record waits.
        let reply = get_log(&off, 4096);
        assert_eq!(LogReply::parse(&reply).unwrap().header.pending, 1);
    }

    #[test]
    fn a_full_log_drops_and_sequence_numbers_show_the_gap() {
        let spy = spy(&[("MaxRecords", V::Dword(2))]);
        let ok = Some(IoStatus::new(Status::SUCCESS));
        for id in 1..=4 {
            operate(&spy, header(MajorFunction::Read, id, Irql::PASSIVE), &passive(), ok);
        }
        let reply = get_log(&spy, 4096);
        let log = LogReply::parse(&reply).unwrap();
        assert_eq!(log.header.dropped, 2);
        let seq: Vec<u64> = log.records().map(|r| r.unwrap().fields.sequence).collect();
        assert_eq!(seq, [1, 2]);
        operate(&spy, header(MajorFunction::Read, 9, Irql::PASSIVE), &passive(), ok);
        let reply = get_log(&spy, 4096);
        let r = LogReply::parse(&reply).unwrap().records().next().unwrap().unwrap();
        assert_eq!(r.fields.sequence, 5, "dropped operations took numbers 3 and 4");
    }

    #[test]
    fn a_shutdown_has_no_post_and_is_complete_at_once() {
        let spy = spy(&[]);
        operate(&spy, header(MajorFunction::Shutdown, 1, Irql::PASSIVE), &passive(), None);
        let reply = get_log(&spy, 4096);
        let r = LogReply::parse(&reply).unwrap().records().next().unwrap().unwrap();
        assert_eq!(r.fields.flags & record_flags::POST, 0);
        assert_eq!(r.fields.major, MajorFunction::Shutdown.code());
    }

    #[test]
    fn replies_hold_whole_records_and_the_rest_waits() {
        let spy = spy(&[]);
        let ok = Some(IoStatus::new(Status::SUCCESS));
        for id in 1..=3 {
            operate(&spy, header(MajorFunction::Read, id, Irql::PASSIVE), &passive(), ok);
        }
        let one = wire::RECORD_FIXED_SIZE + 2 * NAME.len();
        let reply = get_log(&spy, wire::LOG_HEADER_SIZE + 2 * one + one / 2);
        let log = LogReply::parse(&reply).unwrap();
        assert_eq!((log.header.record_count, log.header.pending), (2, 1));
        assert_eq!(reply.len(), wire::LOG_HEADER_SIZE + 2 * one);
        let mut small = [0u8; wire::LOG_HEADER_SIZE - 1];
        let e = spy.message(ClientId(1), &Command::GetLog.message(), &mut small).unwrap_err();
        assert_eq!(e.status(), Status::BUFFER_TOO_SMALL);
        let reply = get_log(&spy, 4096);
        assert_eq!(
            LogReply::parse(&reply).unwrap().records().next().unwrap().unwrap().fields.sequence,
            3
        );
    }

    #[test]
    fn version_and_unknown_commands() {
        let spy = spy(&[]);
        let mut reply = [0u8; 16];
        let n = spy.message(ClientId(1), &Command::GetVersion.message(), &mut reply).unwrap();
        assert_eq!(
            wire::decode_version(&reply[..n]),
            Ok((wire::VERSION_MAJOR, wire::VERSION_MINOR))
        );
        for bad in [&[7u8, 0, 0, 0][..], &[0, 0], &[]] {
            assert_eq!(spy.message(ClientId(1), bad, &mut reply), Err(Error::INVALID_PARAMETER));
        }
        assert_eq!(spy.client_connect(ClientId(1), b""), Ok(()));
    }

    #[test]
    fn parameters() {
        assert_eq!(spy(&[]).max_records(), DEFAULT_RECORDS as usize);
        assert_eq!(spy(&[("MaxRecords", V::Dword(5))]).max_records(), 5);
        let p = |values: &[(&str, V<'_>)]| {
            Settings::from_parameters(&ParameterList { service: "Spy", values })
        };
        assert_eq!(p(&[]), Ok(Settings { max_records: 500, names: true }));
        assert_eq!(p(&[("Names", V::Dword(0))]), Ok(Settings { max_records: 500, names: false }));
        // Names is a DWORD: a string is ignored, as a MaxRecords string is (the default).
        for word in ["no", "false", "0", "yes"] {
            assert_eq!(p(&[("Names", V::String(word))]).map(|s| s.names), Ok(true), "{word}");
        }
        assert_eq!(p(&[("MaxRecords", V::String("5"))]).map(|s| s.max_records), Ok(500));
        assert_eq!(p(&[("MaxRecords", V::Dword(0))]), Err(ParseError::MaxRecords));
        assert_eq!(p(&[("MaxRecords", V::Dword(33))]).map(|s| s.max_records), Ok(33));
        assert_eq!(p(&[("MaxRecords", V::Dword(10_001))]), Err(ParseError::MaxRecords));
        // The constant registration: every operation with a post callback but the shutdown.
        assert_eq!(spy(&[]).registration(), None);
        let r = Spy::REGISTRATION;
        assert!(!r.get(MajorFunction::Shutdown).unwrap().post);
        assert!(r.get(MajorFunction::Create).unwrap().post);
        let names = ["MaxRecords", "Names"];
        assert_eq!(PARAMETERS.iter().map(|d| d.name).collect::<Vec<_>>(), names);
    }

    #[test]
    fn the_log_holds_more_than_32_records_and_gives_them_back() {
        let spy = spy(&[]);
        assert_eq!(spy.max_records(), 500, "MiniSpy's default");
        let ok = Some(IoStatus::new(Status::SUCCESS));
        for id in 1..=120 {
            operate(&spy, header(MajorFunction::Read, id, Irql::PASSIVE), &passive(), ok);
        }
        let mut seq = Vec::new();
        for _ in 0..10 {
            let reply = get_log(&spy, 4096);
            let log = LogReply::parse(&reply).unwrap();
            assert_eq!(log.header.dropped, 0);
            seq.extend(log.records().map(|r| r.unwrap().fields.sequence));
            if log.header.pending == 0 {
                break;
            }
        }
        assert_eq!(seq, (1..=120).collect::<Vec<u64>>());
    }

    #[test]
    fn max_records_is_bounded_and_sizes_the_buffer() {
        let p = |values: &[(&str, V<'_>)]| {
            let params = allocating(values);
            let max = <Spy as Filter>::load(&params).map(|s| s.max_records());
            (max, params.asked())
        };
        let slot = SLOT_BYTES;
        assert_eq!(p(&[]), (Ok(500), 500 * slot));
        assert_eq!(p(&[("MaxRecords", V::Dword(1))]), (Ok(1), slot));
        assert_eq!(p(&[("MaxRecords", V::Dword(10_000))]), (Ok(10_000), 10_000 * slot));
        assert_eq!(p(&[("MaxRecords", V::Dword(0))]), (Err(Error::INVALID_PARAMETER), 0));
        assert_eq!(p(&[("MaxRecords", V::Dword(10_001))]), (Err(Error::INVALID_PARAMETER), 0));
        assert!(10_000 * slot <= fsfilter::MAX_LOAD_BUFFER);
    }

    #[test]
    fn a_refused_buffer_fails_the_load_with_its_status() {
        let values = [("MaxRecords", V::Dword(64))];
        for refusal in [Error::INSUFFICIENT_RESOURCES, Error::NOT_SUPPORTED] {
            let params = allocating(&values).refusing(refusal);
            assert_eq!(<Spy as Filter>::load(&params).map(drop), Err(refusal));
            assert_eq!(params.asked(), 64 * SLOT_BYTES);
        }
        // Parameter lists allocate nothing.
        let list = ParameterList { service: "Spy", values: &values };
        assert_eq!(<Spy as Filter>::load(&list).map(drop), Err(Error::NOT_SUPPORTED));
    }

    #[test]
    fn the_filter_state_stays_small() {
        // Built in DriverEntry and moved through the kernel stack (24 KiB on x64): the log's
        // records are in the load buffer, not in the value.
        assert!(core::mem::size_of::<Spy>() <= 128, "{}", core::mem::size_of::<Spy>());
    }
    /// The pre callback of `h` alone.
    fn pre(spy: &Spy, h: OperationHeader<'static>) {
        let outcome = testing::pre(spy, &testing::instance(), h, &passive());
        assert!(matches!(outcome, PreOutcome::WithPost(())));
    }

    /// The post callback of `h` alone, with `result`.
    fn post(spy: &Spy, h: OperationHeader<'static>, result: IoStatus) {
        let instance = testing::instance();
        let _ = testing::post(spy, &instance, (h, result), &passive(), (), PostFlags::empty());
    }

    #[test]
    fn a_post_that_finds_the_log_busy_does_not_leave_its_record_waiting() {
        // The post callback gives up on a busy log (a holder it interrupted on its processor):
        // its record must not stay in flight for ever, holding a slot and `pending`.
        let spy = spy(&[("MaxRecords", V::Dword(2))]);
        let h = header(MajorFunction::Read, 0x100, Irql::PASSIVE);
        pre(&spy, h);
        {
            let _holder = spy.log.lock();
            post(&spy, h, IoStatus::new(Status::END_OF_FILE));
        }
        let reply = get_log(&spy, 4096);
        let log = LogReply::parse(&reply).unwrap();
        assert_eq!((log.header.record_count, log.header.pending), (1, 0));
        let r = log.records().next().unwrap().unwrap();
        // Its result is unknown: no POST flag, no status.
        assert_eq!((r.fields.sequence, r.fields.flags & record_flags::POST), (1, 0));
        assert_eq!(r.fields.status, 0);
        // The slot is free again: two operations fit, none dropped.
        let ok = Some(IoStatus::new(Status::SUCCESS));
        for id in [0x200, 0x300] {
            operate(&spy, header(MajorFunction::Read, id, Irql::PASSIVE), &passive(), ok);
        }
        let reply = get_log(&spy, 4096);
        let log = LogReply::parse(&reply).unwrap();
        assert_eq!((log.header.record_count, log.header.dropped), (2, 0));
    }

    #[test]
    fn a_post_whose_pre_was_dropped_completes_no_other_record() {
        // Operation 1 (id 0x100) loses its post to a busy log; operation 2 reuses the address
        // (a recycled IRP or callback data) and its pre finds the log busy: its post must not
        // complete operation 1's record with operation 2's result.
        let spy = spy(&[]);
        let h = header(MajorFunction::Read, 0x100, Irql::PASSIVE);
        pre(&spy, h);
        {
            let _holder = spy.log.lock();
            post(&spy, h, IoStatus::new(Status::SUCCESS));
            pre(&spy, h);
        }
        post(&spy, h, IoStatus::new(Status::END_OF_FILE));
        let reply = get_log(&spy, 4096);
        let log = LogReply::parse(&reply).unwrap();
        assert_eq!((log.header.record_count, log.header.dropped, log.header.pending), (1, 1, 0));
        let r = log.records().next().unwrap().unwrap();
        assert_eq!(r.fields.sequence, 1);
        assert_ne!(r.fields.status, Status::END_OF_FILE.0, "operation 2's result");
    }

    #[test]
    fn records_come_in_sequence_order_when_a_name_query_is_overtaken() {
        // Operation A asks for its name; operation B (another processor) is recorded meanwhile.
        // The log gives records in the order they were recorded: their sequence numbers must
        // follow that order, or a reader sees a gap where nothing was lost.
        let spy = spy(&[]);
        let ok = Some(IoStatus::new(Status::SUCCESS));
        // The name query runs another operation through the spy first: what another processor
        // does while this one waits for the name (the query may send a request down).
        let other =
            || operate(&spy, header(MajorFunction::Write, 0x900, Irql::PASSIVE), &passive(), ok);
        let nested = passive().on_name_query(&other);
        operate(&spy, header(MajorFunction::Read, 0x100, Irql::PASSIVE), &nested, ok);
        let reply = get_log(&spy, 4096);
        let log = LogReply::parse(&reply).unwrap();
        let records: Vec<_> = log.records().map(Result::unwrap).collect();
        let got: Vec<_> = records.iter().map(|r| (r.fields.sequence, r.fields.major)).collect();
        let (write, read) = (MajorFunction::Write.code(), MajorFunction::Read.code());
        assert_eq!(got, [(1, write), (2, read)]);
    }

    #[test]
    fn callbacks_and_a_reader_on_several_threads_account_for_every_operation() {
        // Four threads run operations (addresses reused as recycled IRPs are) while a reader
        // takes the log: whatever the lock's contention, every sequence number given is taken
        // once (in order within a reply), or counted as dropped, or still pending; none twice,
        // none lost. (A property, not a reproduction: on two processors the lock is rarely busy
        // long enough.)
        let spy = spy(&[("MaxRecords", V::Dword(40))]);
        let done = std::sync::atomic::AtomicBool::new(false);
        let (mut taken, mut dropped, mut pending) = (Vec::new(), 0u64, 0u32);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4usize)
                .map(|t| {
                    let spy = &spy;
                    scope.spawn(move || {
                        for i in 0..3000usize {
                            let h = header(MajorFunction::Read, 1 + t * 16 + i % 16, Irql::APC);
                            let result = Some(IoStatus::new(Status::SUCCESS));
                            operate(spy, h, &passive().at_irql(Irql::APC), result);
                        }
                    })
                })
                .collect();
            let reader = scope.spawn(|| {
                let read = |taken: &mut Vec<u64>, dropped: &mut u64, pending: &mut u32| {
                    let mut reply = std::vec![0u8; 4096];
                    let Ok(n) = spy.message(ClientId(1), &Command::GetLog.message(), &mut reply)
                    else {
                        return;
                    };
                    let log = LogReply::parse(&reply[..n]).unwrap();
                    let batch: Vec<u64> =
                        log.records().map(|r| r.unwrap().fields.sequence).collect();
                    // Oldest first within a reply; a record still in flight is passed over, so
                    // a later reply may hold an older number (its post came after the read).
                    assert!(batch.windows(2).all(|p| p[0] < p[1]), "in order within a reply");
                    taken.extend(batch);
                    *dropped += u64::from(log.header.dropped);
                    *pending = log.header.pending;
                };
                let (mut taken, mut dropped, mut pending) = (Vec::new(), 0u64, 0u32);
                while !done.load(Ordering::Acquire) {
                    read(&mut taken, &mut dropped, &mut pending);
                }
                for _ in 0..200 {
                    read(&mut taken, &mut dropped, &mut pending);
                }
                (taken, dropped, pending)
            });
            for w in workers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Release);
            (taken, dropped, pending) = reader.join().unwrap();
        });
        let mut once = taken.clone();
        once.sort_unstable();
        once.dedup();
        assert_eq!(once.len(), taken.len(), "each number taken once");
        let total = spy.sequence.load(Ordering::Relaxed);
        assert_eq!(total, 4 * 3000);
        // A record still pending is one whose post was lost with every lost-post slot taken
        // (a holder preempted for long): counted, not lost.
        assert_eq!(taken.len() as u64 + dropped + u64::from(pending), total);
    }
}
