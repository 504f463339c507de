//! scanner: the fsfilter counterpart of the ideas in Microsoft's scanner and avscan minifilter
//! samples, on the data-scan path.
//!
//! On every successful create the scanner maps the file through a data-scan section and looks for
//! a configured byte pattern; a file that contains it is refused: the open is cancelled and the
//! requester gets `STATUS_ACCESS_DENIED`. Writes mark the stream modified; the cleanup of a
//! modified stream scans it again, so that a file that became infected is reported when its
//! handle closes and refused at its next open. A conflicting operation (a write or a size change
//! while a section is open) aborts the scan that holds the section, and the stream is scanned
//! again at cleanup. Volumes where data scanning is unavailable are not attached to, unless the
//! `AttachUnscanned` parameter says so.
//!
//! Mapping to the C samples: `ScannerInstanceSetup` / avscan's `AvInstanceSetup`
//! (FltRegisterForDataScan, refusal without it) → [`Filter::instance_setup`] (the backend
//! registers for data scanning and takes the `FsRtlCreateSectionForDataScan` fallback when the
//! Filter Manager answers `STATUS_NOT_SUPPORTED`); `ScannerPostCreate` / `AvPostCreate` →
//! [`Filter::post_operation`] for `IRP_MJ_CREATE` (scan, then `FltCancelFileOpen`);
//! `ScannerPreCleanup` / avscan's modified-stream rescan → [`Filter::pre_operation`] for
//! `IRP_MJ_CLEANUP`; `ScannerPostWrite` / `AvPostWrite` marking the stream context modified →
//! the post-write callback and a small table of modified streams; `AvSectionNotificationCallback`
//! → [`Filter::section_conflict`]. The scanning engine is the pattern search below rather than a
//! user-mode service; `ScanLatency` models the time a real engine takes.

#![no_std]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use fsfilter::text::copy_prefix;
use fsfilter::{
    DataScanMode, Error, Filter, Instance, InstanceSetup, Irql, MajorFunction, Operation,
    PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome, Registration,
    RegistrationFlags, Result, SectionId, ServiceParameters, Services, Status,
};

pub use fsfilter::ParameterDoc;

/// The scanner's parameters.
pub const PARAMETERS: &[ParameterDoc] = &[
    ParameterDoc {
        name: "Pattern",
        kind: "REG_SZ",
        default: "(required)",
        description: "The bytes that make a file infected: text, or 'hex:' and hexadecimal byte pairs (hex:4D5A90). At most 64 bytes; the driver does not load without it.",
    },
    ParameterDoc {
        name: "ScanLatency",
        kind: "REG_DWORD",
        default: "0",
        description: "Milliseconds each scan takes, as a user-mode scanning engine would: the section stays open meanwhile, so conflicting I/O can arrive and abort the scan.",
    },
    ParameterDoc {
        name: "AttachUnscanned",
        kind: "REG_DWORD",
        default: "0",
        description: "1 attaches to volumes where data scanning is unavailable (nothing is scanned there); 0 refuses them with STATUS_FLT_DO_NOT_ATTACH.",
    },
    ParameterDoc {
        name: "SupportNpfsMsfs",
        kind: "REG_DWORD",
        default: "0",
        description: "1 sets FLTFL_REGISTRATION_SUPPORT_NPFS_MSFS (minifilter only): attach to named-pipe and mailslot volumes, where the Filter Manager cannot data-scan and the FsRtl fallback is used.",
    },
    ParameterDoc {
        name: "Notes",
        kind: "REG_DWORD",
        default: "1",
        description: "1 adds a trace note for every verdict.",
    },
];

/// The longest pattern.
pub const MAX_PATTERN: usize = 64;

/// How many times a scan waits for another scan of the same stream to release its section.
const BUSY_TRIES: u32 = 16;

/// How many modified streams are remembered at once.
const DIRTY_SLOTS: usize = 32;

/// The operations the scanner registers: post-create (scan), post-write (modified), pre-cleanup
/// (rescan), with data scanning.
pub const REGISTRATION: Registration = Registration::new()
    .operation(Operation::new(MajorFunction::Create).post())
    .operation(Operation::new(MajorFunction::Write).post())
    .operation(Operation::new(MajorFunction::Cleanup).pre())
    .data_scan(true)
    .validated();

/// What a scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The pattern is not in the file (or the file is empty, or a directory).
    Clean,
    /// The pattern is in the file.
    Infected,
    /// Conflicting I/O closed the section before the scan finished.
    Aborted,
    /// Another scan of the stream kept its section (one per stream per instance) through every
    /// wait: the stream could not be scanned in time.
    Busy,
    /// No section could be made (the error says why): the file is let through.
    Unscannable(Status),
}

impl Verdict {
    /// The word in trace notes.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Infected => "infected",
            Verdict::Aborted => "aborted",
            Verdict::Busy => "busy",
            Verdict::Unscannable(_) => "unscannable",
        }
    }
}

/// Why the parameters were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// `Pattern` is missing or empty.
    NoPattern,
    /// `Pattern` is longer than 64 bytes.
    PatternTooLong,
    /// `Pattern` starts with `hex:` but is not hexadecimal byte pairs.
    BadHex,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ParseError::NoPattern => "Pattern: required, and not empty",
            ParseError::PatternTooLong => "Pattern: at most 64 bytes",
            ParseError::BadHex => "Pattern: after hex:, pairs of hexadecimal digits",
        })
    }
}

/// The scanner.
#[derive(Debug)]
pub struct Scanner {
    pattern: [u8; MAX_PATTERN],
    pattern_len: usize,
    latency_ms: u32,
    attach_unscanned: bool,
    npfs_msfs: bool,
    notes: bool,
    /// Streams (`FsContext`) written since their last scan; 0 is a free slot.
    dirty: [AtomicUsize; DIRTY_SLOTS],
    /// A modified stream found the table full: from then on every cleanup rescans its stream.
    overflowed: AtomicBool,
}

/// Parses `Pattern`: text, or `hex:` and byte pairs.
fn parse_pattern(
    text: &str,
    out: &mut [u8; MAX_PATTERN],
) -> core::result::Result<usize, ParseError> {
    match text.get(..4) {
        Some(p) if fsfilter::text::eq_ignore_case(p, "hex:") => {
            let hex = text.get(4..).unwrap_or("").as_bytes();
            if hex.is_empty() || hex.len() % 2 != 0 {
                return Err(ParseError::BadHex);
            }
            if hex.len() / 2 > MAX_PATTERN {
                return Err(ParseError::PatternTooLong);
            }
            for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
                let digit = |b: &u8| (*b as char).to_digit(16).ok_or(ParseError::BadHex);
                let (high, low) = match pair {
                    [h, l] => (digit(h)?, digit(l)?),
                    _ => return Err(ParseError::BadHex),
                };
                *slot = (high * 16 + low) as u8;
            }
            Ok(hex.len() / 2)
        }
        _ if text.is_empty() => Err(ParseError::NoPattern),
        _ if text.len() > MAX_PATTERN => Err(ParseError::PatternTooLong),
        _ => Ok(copy_prefix(out, text.as_bytes())),
    }
}

impl Scanner {
    /// Builds a scanner from its parameters.
    pub fn from_parameters(p: &dyn ServiceParameters) -> core::result::Result<Scanner, ParseError> {
        let mut buf = [0u8; 256];
        let text = p.string("Pattern", &mut buf).ok_or(ParseError::NoPattern)?;
        let mut pattern = [0u8; MAX_PATTERN];
        let pattern_len = parse_pattern(text, &mut pattern)?;
        Ok(Scanner {
            pattern,
            pattern_len,
            latency_ms: p.dword("ScanLatency").unwrap_or(0),
            attach_unscanned: p.flag("AttachUnscanned").unwrap_or(false),
            npfs_msfs: p.flag("SupportNpfsMsfs").unwrap_or(false),
            notes: p.flag("Notes").unwrap_or(true),
            dirty: [const { AtomicUsize::new(0) }; DIRTY_SLOTS],
            overflowed: AtomicBool::new(false),
        })
    }

    /// The pattern.
    pub fn pattern(&self) -> &[u8] {
        self.pattern.get(..self.pattern_len).unwrap_or(&[])
    }

    /// True when `data` contains the pattern.
    pub fn matches(&self, data: &[u8]) -> bool {
        let pattern = self.pattern();
        !pattern.is_empty() && data.windows(pattern.len()).any(|w| w == pattern)
    }

    /// Scans the operation's file through a data-scan section.
    fn scan(&self, services: &dyn Services) -> Verdict {
        let mut busy = 0;
        let section = loop {
            match services.create_scan_section() {
                Ok(s) => break s,
                // An empty file or a directory has nothing to scan.
                Err(e)
                    if matches!(e.status(), Status::END_OF_FILE | Status::FILE_IS_A_DIRECTORY) =>
                {
                    return Verdict::Clean;
                }
                // One section per stream per instance (facts.md §6): another scan of this stream
                // holds it. Wait for that scan to end; never let the file through unscanned.
                Err(e) if e.status() == Status::FLT_CONTEXT_ALREADY_DEFINED => {
                    if busy == BUSY_TRIES {
                        return Verdict::Busy;
                    }
                    busy += 1;
                    let _ = services.wait(self.latency_ms.saturating_add(1));
                }
                Err(e) => return Verdict::Unscannable(e.status()),
            }
        };
        if self.latency_ms > 0 {
            // The engine's time: other threads run, and may conflict with the section.
            let _ = services.wait(self.latency_ms);
        }
        if section.conflicted() {
            return Verdict::Aborted;
        }
        let infected = self.matches(section.data());
        // The section closes when `section` drops, here.
        if section.conflicted() {
            Verdict::Aborted
        } else if infected {
            Verdict::Infected
        } else {
            Verdict::Clean
        }
    }

    fn note(&self, services: &dyn Services, what: &'static str, verdict: Verdict) {
        if self.notes {
            let mut text = [0u8; 48];
            let mut n = copy_prefix(&mut text, b"scanner: ");
            n += copy_prefix(text.get_mut(n..).unwrap_or(&mut []), what.as_bytes());
            n += copy_prefix(text.get_mut(n..).unwrap_or(&mut []), b" ");
            n += copy_prefix(text.get_mut(n..).unwrap_or(&mut []), verdict.name().as_bytes());
            if let Ok(s) = core::str::from_utf8(text.get(..n).unwrap_or(&[])) {
                services.note(s);
            }
        }
    }

    /// Marks `stream` modified. Lock-free: post-write callbacks may run at `DISPATCH_LEVEL`.
    fn mark_dirty(&self, stream: usize) {
        if stream == 0 || self.dirty.iter().any(|s| s.load(Ordering::Acquire) == stream) {
            return;
        }
        for slot in &self.dirty {
            if slot.compare_exchange(0, stream, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return;
            }
        }
        // The table is full. The stream must not be forgotten, and which cleanup is its own
        // cannot be told any more: every cleanup rescans from now on.
        self.overflowed.store(true, Ordering::Release);
    }

    /// Forgets `stream`; true when it was marked modified.
    fn take_dirty(&self, stream: usize) -> bool {
        stream != 0
            && self
                .dirty
                .iter()
                .any(|s| s.compare_exchange(stream, 0, Ordering::AcqRel, Ordering::Acquire).is_ok())
    }

    /// True when `stream` is marked modified, or may be (the table overflowed).
    pub fn is_dirty(&self, stream: usize) -> bool {
        stream != 0
            && (self.overflowed.load(Ordering::Acquire)
                || self.dirty.iter().any(|s| s.load(Ordering::Acquire) == stream))
    }

    /// The post-create work at `PASSIVE_LEVEL`: scan, and refuse an infected file.
    fn after_create(&self, op: &mut PostOperation<'_>) {
        // Only a create that opened the file: not a failed one, nor one that ended
        // STATUS_REPARSE, whose file object is not open (the reparsed create comes again).
        if !op.opened() || op.header().volume_open {
            return;
        }
        let services = op.services();
        match self.scan(services) {
            // An infected file, or one another scan kept busy (it could not be scanned).
            v @ (Verdict::Infected | Verdict::Busy) => {
                self.note(services, "open", v);
                // FltCancelFileOpen / IoCancelFileOpen: the file system closes it, the requester
                // is refused.
                let _ = services.cancel_file_open(Status::ACCESS_DENIED);
            }
            Verdict::Aborted => {
                self.note(services, "open", Verdict::Aborted);
                self.mark_dirty(op.header().stream);
            }
            v => self.note(services, "open", v),
        }
    }
}

impl Filter for Scanner {
    const REGISTRATION: Registration = REGISTRATION;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Scanner> {
        Scanner::from_parameters(parameters).map_err(|_| Error::INVALID_PARAMETER)
    }

    fn registration(&self) -> Option<Registration> {
        self.npfs_msfs.then(|| REGISTRATION.flags(RegistrationFlags::SUPPORT_NPFS_MSFS))
    }

    fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<()> {
        match setup.data_scan {
            DataScanMode::NotRequested if !self.attach_unscanned => Err(Error::FLT_DO_NOT_ATTACH),
            _ => Ok(()),
        }
    }

    fn pre_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        // Registered for IRP_MJ_CLEANUP only: rescan a stream written since its last scan.
        let stream = op.header().stream;
        if op.major() == MajorFunction::Cleanup
            && op.services().irql() == Irql::PASSIVE
            && op.services().data_scan_mode() != DataScanMode::NotRequested
            && (self.take_dirty(stream) || self.overflowed.load(Ordering::Acquire))
        {
            let verdict = self.scan(op.services());
            self.note(op.services(), "cleanup", verdict);
            if matches!(verdict, Verdict::Aborted | Verdict::Busy) {
                self.mark_dirty(stream);
            }
        }
        PreOutcome::NoPost
    }

    fn post_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _context: (),
        flags: PostFlags,
    ) -> PostOutcome<()> {
        if flags.contains(PostFlags::DRAINING) {
            return PostOutcome::Finished;
        }
        // Where nothing is scanned (AttachUnscanned), nothing is rescanned at cleanup either:
        // a write there is not remembered, or it would hold a slot of the table for good.
        let scanned = op.services().data_scan_mode() != DataScanMode::NotRequested;
        match op.major() {
            MajorFunction::Write if scanned && op.result().status.is_success() => {
                self.mark_dirty(op.header().stream);
                PostOutcome::Finished
            }
            MajorFunction::Create if scanned => {
                if op.services().irql() == Irql::PASSIVE {
                    self.after_create(op);
                    PostOutcome::Finished
                } else {
                    PostOutcome::WhenSafe(())
                }
            }
            _ => PostOutcome::Finished,
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

    fn section_conflict(&self, _instance: &Instance<'_, ()>, _section: SectionId) {
        // The scan holding the section sees `conflicted()` and gives up; the backend closes the
        // section handle so that the conflicting I/O can proceed; the stream is scanned again at
        // cleanup.
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;
    use fsfilter::testing::{self, FakeServices};
    use fsfilter::{OperationHeader, ParameterList, ParameterValue as V};

    fn scanner(values: &[(&str, V<'_>)]) -> core::result::Result<Scanner, ParseError> {
        Scanner::from_parameters(&ParameterList { service: "Scanner", values })
    }

    #[test]
    fn patterns_are_text_or_hex() {
        let s = scanner(&[("Pattern", V::String("EICAR"))]).unwrap();
        assert_eq!(s.pattern(), b"EICAR");
        assert!(s.matches(b"xxEICARyy"));
        assert!(!s.matches(b"EICA"));
        let s = scanner(&[("Pattern", V::String("hex:4d5A00ff"))]).unwrap();
        assert_eq!(s.pattern(), [0x4D, 0x5A, 0x00, 0xFF]);
        assert!(s.matches(&[1, 0x4D, 0x5A, 0, 0xFF]));
        assert_eq!(scanner(&[]).unwrap_err(), ParseError::NoPattern);
        assert_eq!(scanner(&[("Pattern", V::String(""))]).unwrap_err(), ParseError::NoPattern);
        assert_eq!(scanner(&[("Pattern", V::String("hex:4"))]).unwrap_err(), ParseError::BadHex);
        assert_eq!(scanner(&[("Pattern", V::String("hex:zz"))]).unwrap_err(), ParseError::BadHex);
        assert_eq!(scanner(&[("Pattern", V::String("hex:"))]).unwrap_err(), ParseError::BadHex);
        let long = [b'a'; 65];
        let long = core::str::from_utf8(&long).unwrap();
        assert_eq!(
            scanner(&[("Pattern", V::String(long))]).unwrap_err(),
            ParseError::PatternTooLong
        );
        let long_hex = [b'0'; 4 + 130];
        let mut long_hex = long_hex;
        long_hex[..4].copy_from_slice(b"hex:");
        let long_hex = core::str::from_utf8(&long_hex).unwrap();
        assert_eq!(
            scanner(&[("Pattern", V::String(long_hex))]).unwrap_err(),
            ParseError::PatternTooLong
        );
    }

    #[test]
    fn dirty_streams_are_remembered_once_and_forgotten() {
        let s = scanner(&[("Pattern", V::String("x"))]).unwrap();
        s.mark_dirty(0x1000);
        s.mark_dirty(0x1000);
        s.mark_dirty(0x2000);
        s.mark_dirty(0);
        assert_eq!(s.dirty.iter().filter(|d| d.load(Ordering::Relaxed) != 0).count(), 2);
        assert!(s.take_dirty(0x1000));
        assert!(!s.take_dirty(0x1000));
        assert!(!s.is_dirty(0x1000));
        assert!(s.is_dirty(0x2000));
        // A full table does not fail, nor forget the streams it has no room for: from then on
        // every stream counts as modified.
        assert!(!s.is_dirty(0x5000));
        for i in 1..=40 {
            s.mark_dirty(i * 0x10);
        }
        assert_eq!(s.dirty.iter().filter(|d| d.load(Ordering::Relaxed) != 0).count(), DIRTY_SLOTS);
        assert!(s.is_dirty(40 * 0x10) && s.is_dirty(0x5000));
    }

    #[test]
    fn named_pipes_and_mailslots_only_when_asked() {
        let plain = scanner(&[("Pattern", V::String("x"))]).unwrap();
        // The constant, which has no such flag.
        assert_eq!(plain.registration(), None);
        assert!(!REGISTRATION.registration_flags().contains(RegistrationFlags::SUPPORT_NPFS_MSFS));
        let pipes =
            scanner(&[("Pattern", V::String("x")), ("SupportNpfsMsfs", V::Dword(1))]).unwrap();
        let r = pipes.registration().unwrap();
        assert!(r.registration_flags().contains(RegistrationFlags::SUPPORT_NPFS_MSFS));
        assert!(r.scans_data(), "the flag keeps the rest of the registration");
    }

    /// Services for a callback without an operation: nothing but the IRQL.
    fn no_services() -> FakeServices<'static> {
        FakeServices::new().refusing_cancel(Error::INVALID_PARAMETER)
    }

    #[test]
    fn volumes_it_cannot_scan_are_refused_unless_told() {
        let services = no_services();
        let setup = |data_scan| testing::instance_setup(&services, data_scan);
        let strict = scanner(&[("Pattern", V::String("x"))]).unwrap();
        let lax =
            scanner(&[("Pattern", V::String("x")), ("AttachUnscanned", V::Dword(1))]).unwrap();
        let unscannable = setup(DataScanMode::NotRequested);
        assert_eq!(strict.instance_setup(&unscannable), Err(Error::FLT_DO_NOT_ATTACH));
        assert_eq!(lax.instance_setup(&unscannable), Ok(()));
        for mode in [DataScanMode::FilterManager, DataScanMode::FsRtlFallback] {
            assert_eq!(strict.instance_setup(&setup(mode)), Ok(()), "{mode:?}");
        }
    }

    #[test]
    fn writes_where_nothing_is_scanned_are_not_remembered() {
        // With AttachUnscanned = 1 the scanner sits on volumes without data scanning, whose
        // cleanups never rescan: a write there must not take a slot of the table for good.
        let s = scanner(&[("Pattern", V::String("x")), ("AttachUnscanned", V::Dword(1))]).unwrap();
        let header = OperationHeader {
            irp_flags: fsfilter::IrpFlags::empty(),
            file: 0x10,
            stream: 0x20,
            parameters: fsfilter::Parameters::Write(fsfilter::ReadWriteParameters {
                offset: 0,
                length: 4,
                key: 0,
            }),
            id: 0x1000,
            ..testing::irp(MajorFunction::Write)
        };
        let result = fsfilter::IoStatus::new(Status::SUCCESS);
        let instance = testing::instance();
        let services = no_services();
        let outcome =
            testing::post(&s, &instance, (header, result), &services, (), PostFlags::empty());
        assert!(matches!(outcome, PostOutcome::Finished));
        assert!(!s.is_dirty(0x20));
    }

    /// Services of a post-create on a scanned volume, counting the scans and cancellations:
    /// an empty file (clean, nothing to cancel).
    fn counting() -> FakeServices<'static> {
        FakeServices::new()
            .data_scan(DataScanMode::FilterManager)
            .refusing_sections(Error::new(Status::END_OF_FILE).unwrap())
    }

    #[test]
    fn a_create_that_ended_status_reparse_is_not_scanned() {
        // STATUS_REPARSE is a success status on a file object that is not open: the reparsed
        // create is the one to scan (rule 27).
        let s = scanner(&[("Pattern", V::String("x"))]).unwrap();
        let services: [FakeServices<'_>; 4] = core::array::from_fn(|_| counting());
        let header = OperationHeader {
            file: 0x10,
            parameters: fsfilter::Parameters::Create(fsfilter::CreateParameters::default()),
            id: 0x1000,
            ..testing::irp(MajorFunction::Create)
        };
        let instance = Instance { data_scan: DataScanMode::FilterManager, ..testing::instance() };
        let tagged = fsfilter::IoStatus { status: Status::REPARSE, information: 0xA000_0003 };
        let results = [
            (fsfilter::IoStatus::reparse(), 0),
            (tagged, 0),
            (fsfilter::IoStatus::new(Status::OBJECT_NAME_NOT_FOUND), 0),
            (fsfilter::IoStatus::new(Status::SUCCESS), 1),
        ];
        for ((result, scans), services) in results.into_iter().zip(&services) {
            let outcome =
                testing::post(&s, &instance, (header, result), services, (), PostFlags::empty());
            assert!(matches!(outcome, PostOutcome::Finished));
            let counts = (services.sections_asked(), services.cancels().len());
            assert_eq!(counts, (scans, 0), "{result:?}");
        }
    }

    #[test]
    fn registration_scans_data_and_is_valid() {
        assert!(REGISTRATION.scans_data());
        assert!(REGISTRATION.check().is_ok());
        assert!(REGISTRATION.get(MajorFunction::Create).unwrap().post);
        assert!(!REGISTRATION.get(MajorFunction::Create).unwrap().pre);
    }
}
