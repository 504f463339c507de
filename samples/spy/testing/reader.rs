//! The spy end to end, shared by `minifilter/tests/spy.rs` and `legacy/tests/spy.rs` (included
//! with `#[path]`): each gives a [`Reader`] for its model's channel (the communication port, or
//! the control device's link) and a machine with the spy installed in its model; the checks are
//! the same. The reader decodes with the sample's own protocol (`spy::wire`).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use fsfilter::{MajorFunction, OperationKind, Status};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, IoMode, Machine, MachineConfig, ServiceSpec,
    StopResult, VolumeSpec,
};
use spy::wire::{Command, LogReply, RECORD_FIXED_SIZE, record_flags};

/// The spy's service name in these tests.
pub const SERVICE: &str = "Spy";

/// A user-mode reader of one model's channel.
pub trait Reader {
    /// The connection.
    type Handle: Copy;
    /// Connects to the channel `name` with `context`.
    fn connect(&self, m: &mut Machine, name: &str, context: &[u8]) -> Result<Self::Handle, Status>;
    /// Sends `input`, with a reply buffer of `capacity` bytes.
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

/// A machine with `C:` (NTFS, `a.txt`) and the spy installed by `install`, started.
pub fn machine(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
) -> Machine {
    let mut m = Machine::new(MachineConfig { seed: 5 });
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"hello, spy"));
    install(&mut m, ServiceSpec::new(SERVICE, entry, model));
    m.boot();
    assert_eq!(m.start(SERVICE), Status::SUCCESS);
    m
}

/// One record, as the checks compare them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub sequence: u64,
    pub major: MajorFunction,
    pub kind: u8,
    pub post: bool,
    pub status: Status,
    pub information: u64,
    pub name: Option<String>,
    pub name_status: Status,
    /// The requesting process's id (0: none).
    pub process: u32,
}

/// Takes the whole log: `GetLog` until nothing is pending; the records and the drops.
pub fn read_all<R: Reader>(r: &R, m: &mut Machine, h: R::Handle) -> (Vec<Seen>, u32) {
    let mut seen = Vec::new();
    let mut dropped = 0;
    for _ in 0..100 {
        let reply = r.send(m, h, &Command::GetLog.message(), 4096).unwrap();
        let log = LogReply::parse(&reply).unwrap();
        dropped += log.header.dropped;
        for rec in log.records() {
            let rec = rec.unwrap();
            let f = rec.fields;
            seen.push(Seen {
                sequence: f.sequence,
                major: MajorFunction::from_code(f.major),
                kind: f.kind,
                post: f.flags & record_flags::POST != 0,
                status: Status(f.status),
                information: f.information,
                name: rec.has_name().then(|| rec.name_chars().collect()),
                name_status: Status(f.name_status),
                process: f.process,
            });
        }
        if log.header.record_count == 0 {
            break;
        }
    }
    (seen, dropped)
}

/// The pre callbacks the spy's logic got since event `from`, as (major, kind) in order: what
/// its log must hold.
fn pre_callbacks(m: &Machine, from: usize) -> Vec<(MajorFunction, u8)> {
    m.events()
        .into_iter()
        .skip(from)
        .filter_map(|e| match e.kind {
            EventKind::Callback { driver, callback: Callback::Pre { major, kind, .. }, .. }
                if driver.as_str() == SERVICE =>
            {
                let kind = match kind {
                    OperationKind::Irp => 0,
                    OperationKind::FastIo => 1,
                    OperationKind::FsFilter => 2,
                };
                Some((major, kind))
            }
            _ => None,
        })
        .collect()
}

/// The reader gets one record for every operation the spy's callbacks saw, in order, with the
/// results the requester got and the opened name where names can be had.
pub fn check_log_matches_the_operations<R: Reader>(mut m: Machine, r: &R) {
    let h = r.connect(&mut m, spy::CHANNEL_NAME, b"").unwrap();
    let reply = r.send(&mut m, h, &Command::GetVersion.message(), 16).unwrap();
    assert_eq!(spy::wire::decode_version(&reply), Ok((1, 1)));
    // What loading and attaching showed the spy (if anything) goes first.
    let _ = read_all(r, &mut m, h);
    let from = m.events().len();
    let c = m.volume("C:").unwrap();
    let file = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let first = m.read(file, Some(0), 5, IoMode::Cached);
    assert_eq!(first.data, b"hello");
    let fast = m.read(file, Some(7), 3, IoMode::Cached);
    assert!(fast.fast_io, "the second cached read is fast I/O");
    let past = m.read(file, Some(4096), 512, IoMode::NonCached);
    assert_eq!(past.status, Status::END_OF_FILE);
    assert_eq!(m.write(file, Some(0), b"HELLO", IoMode::Cached).status, Status::SUCCESS);
    m.close_handle(file);
    m.settle();
    let expected = pre_callbacks(&m, from);
    let (seen, dropped) = read_all(r, &mut m, h);
    assert_eq!(dropped, 0);
    let got: Vec<(MajorFunction, u8)> = seen.iter().map(|s| (s.major, s.kind)).collect();
    assert_eq!(got, expected, "the log is what the callbacks saw, in order");
    // Consecutive sequence numbers: nothing lost.
    for pair in seen.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
    }
    let irps: Vec<&Seen> = seen.iter().filter(|s| s.major.is_irp()).collect();
    let majors: Vec<MajorFunction> = irps.iter().map(|s| s.major).collect();
    for needed in [
        MajorFunction::Create,
        MajorFunction::Read,
        MajorFunction::Write,
        MajorFunction::Cleanup,
        MajorFunction::Close,
    ] {
        assert!(majors.contains(&needed), "{needed:?} in {majors:?}");
    }
    let create = irps.iter().find(|s| s.major == MajorFunction::Create).unwrap();
    assert!(create.post);
    assert_eq!(create.status, Status::SUCCESS);
    assert_eq!(create.information, 1, "FILE_OPENED");
    let name = create.name.as_deref().unwrap();
    assert!(name.ends_with("\\a.txt"), "{name}");
    assert!(name.starts_with("\\Device\\"), "{name}");
    let reads: Vec<&&Seen> = irps.iter().filter(|s| s.major == MajorFunction::Read).collect();
    assert_eq!((reads[0].kind, reads[0].status, reads[0].information), (0, Status::SUCCESS, 5));
    assert_eq!((reads[1].kind, reads[1].status, reads[1].information), (1, Status::SUCCESS, 3));
    assert!(reads.iter().any(|s| s.status == Status::END_OF_FILE));
    // Every operation that has a post callback got one.
    for s in &seen {
        assert_eq!(s.post, s.major != MajorFunction::Shutdown, "{s:?}");
        assert_eq!(s.name.is_some(), s.name_status == Status::SUCCESS, "{s:?}");
    }
    r.close(&mut m, h);
    assert_eq!(m.stop(SERVICE), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Replies hold whole records; what does not fit waits for the next; a buffer without room for
/// the header and an unknown command fail.
pub fn check_replies<R: Reader>(mut m: Machine, r: &R) {
    let h = r.connect(&mut m, spy::CHANNEL_NAME, b"").unwrap();
    let _ = read_all(r, &mut m, h);
    let c = m.volume("C:").unwrap();
    let file = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    m.close_handle(file);
    let small = spy::wire::LOG_HEADER_SIZE + RECORD_FIXED_SIZE + 200;
    let reply = r.send(&mut m, h, &Command::GetLog.message(), small).unwrap();
    let log = LogReply::parse(&reply).unwrap();
    assert!(log.header.record_count >= 1);
    assert!(log.header.pending >= 1, "the rest waits");
    assert!(reply.len() <= small);
    assert_eq!(log.records().filter(Result::is_ok).count() as u32, log.header.record_count);
    let e = r.send(&mut m, h, &Command::GetLog.message(), 8).unwrap_err();
    assert_eq!(e, Status::BUFFER_TOO_SMALL);
    let e = r.send(&mut m, h, &[9, 0, 0, 0, 0, 0, 0, 0], 64).unwrap_err();
    assert_eq!(e, Status::INVALID_PARAMETER);
    let (rest, _) = read_all(r, &mut m, h);
    assert!(!rest.is_empty());
    // One client at a time (max_clients = 1).
    let second = r.connect(&mut m, spy::CHANNEL_NAME, b"");
    assert!(second.is_err(), "a second reader is refused");
    r.close(&mut m, h);
    assert_eq!(m.stop(SERVICE), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A long log: 60 opens and closes (180 operations and more) with no reader until the end: the
/// log holds them all (500 records by default, in its load buffer), the reader gets every one in
/// order, and nothing is dropped.
pub fn check_a_long_log<R: Reader>(mut m: Machine, r: &R) {
    // The log's buffer: one pool block of 500 slots, from the spy's image.
    let bytes = spy::DEFAULT_RECORDS as usize * spy::SLOT_BYTES;
    let buffers = |m: &Machine| {
        m.kernel(|k| {
            let spy =
                k.images.iter().position(|i| i.loaded && i.name.eq_ignore_ascii_case(SERVICE));
            let image = spy.map(|i| fsfilter_sim::ids::ImageId(i as u32));
            k.pool.blocks.values().filter(|b| b.size == bytes && b.image == image).count()
        })
    };
    assert_eq!(buffers(&m), 1, "the ring's load buffer");
    let h = r.connect(&mut m, spy::CHANNEL_NAME, b"").unwrap();
    let _ = read_all(r, &mut m, h);
    let from = m.events().len();
    let c = m.volume("C:").unwrap();
    for _ in 0..60 {
        let file = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        m.close_handle(file);
    }
    m.settle();
    let expected = pre_callbacks(&m, from);
    assert!(expected.len() >= 180, "{}", expected.len());
    let (seen, dropped) = read_all(r, &mut m, h);
    assert_eq!(dropped, 0, "no record dropped");
    let got: Vec<(MajorFunction, u8)> = seen.iter().map(|s| (s.major, s.kind)).collect();
    assert_eq!(got, expected, "the log is what the callbacks saw, in order");
    for pair in seen.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
    }
    r.close(&mut m, h);
    assert_eq!(m.stop(SERVICE), StopResult::Unloaded);
    // No POOL_LEAKED_AT_UNLOAD: the buffer went with the driver.
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let left = m.kernel(|k| k.pool.blocks.values().filter(|b| b.size == bytes).count());
    assert_eq!(left, 0, "the ring's load buffer is freed");
}

/// Each record carries the process that requested the operation (MiniSpy's `ProcessId`; rule 26):
/// an editor's open, reads (by IRP and by fast I/O), write, cleanup and close have the editor's
/// id, the default process's open has its own, and no operation of the two goes without one.
pub fn check_records_carry_the_requesting_process<R: Reader>(mut m: Machine, r: &R) {
    let h = r.connect(&mut m, spy::CHANNEL_NAME, b"").unwrap();
    let _ = read_all(r, &mut m, h);
    let c = m.volume("C:").unwrap();
    let editor = m.new_process("editor").unwrap();
    m.as_process(editor, |m| {
        let file = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        assert_eq!(m.read(file, Some(0), 5, IoMode::Cached).status, Status::SUCCESS);
        assert!(m.read(file, Some(7), 3, IoMode::Cached).fast_io, "fast I/O");
        assert_eq!(m.write(file, Some(0), b"HELLO", IoMode::Cached).status, Status::SUCCESS);
        m.close_handle(file);
    });
    let (editors, _) = read_all(r, &mut m, h);
    let file = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    m.close_handle(file);
    let (users, _) = read_all(r, &mut m, h);
    let irps = |seen: &[Seen]| -> Vec<(MajorFunction, u8, u32)> {
        seen.iter().filter(|s| s.major.is_irp()).map(|s| (s.major, s.kind, s.process)).collect()
    };
    let e = editor.0;
    assert_eq!(
        irps(&editors),
        [
            (MajorFunction::Create, 0, e),
            (MajorFunction::Read, 0, e),
            (MajorFunction::Read, 1, e),
            (MajorFunction::Write, 1, e),
            (MajorFunction::Cleanup, 0, e),
            (MajorFunction::Close, 0, e),
        ]
    );
    let user = fsfilter_sim::process::FIRST_USER.0;
    let opened: Vec<(MajorFunction, u32)> =
        irps(&users).into_iter().map(|(major, _, p)| (major, p)).collect();
    assert_eq!(
        opened,
        [
            (MajorFunction::Create, user),
            (MajorFunction::Cleanup, user),
            (MajorFunction::Close, user)
        ]
    );
    // The FsFilter callbacks run in the requesting thread: the same processes.
    for s in editors.iter().chain(&users) {
        assert!(s.process == e || s.process == user, "{s:?}");
    }
    r.close(&mut m, h);
    assert_eq!(m.stop(SERVICE), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
